//! The job status shared between the coordinator and the admin API (`/status`, `/checkpoints`).

use serde::Serialize;
use std::sync::{Arc, Mutex};

/// One completed checkpoint, as listed on `/checkpoints`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointInfo {
    /// Id.
    pub id: u64,
    /// Completion time.
    pub completed_at: chrono::DateTime<chrono::Utc>,
    /// Total bytes referenced.
    pub size: u64,
    /// Storage path of the checkpoint directory.
    pub path: String,
}

/// What a checkpoint failure was, so that readers can tell storage trouble from slowness.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CheckpointFailureKind {
    /// Reading or writing checkpoint storage failed.
    Storage,
    /// The checkpoint did not complete within `checkpoint.timeout`.
    Timeout,
    /// A task could not snapshot its state.
    Task,
}

/// The newest failed checkpoint, while failures are consecutive.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointFailureInfo {
    /// Id of the failed checkpoint.
    pub id: u64,
    /// When it failed.
    pub at: chrono::DateTime<chrono::Utc>,
    /// What kind of failure.
    pub kind: CheckpointFailureKind,
    /// The error.
    pub reason: String,
}

/// A checkpoint passed over at restore, and why.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedCheckpoint {
    /// Its id.
    pub checkpoint_id: u64,
    /// Why it was not used (no marker, corrupt file, too old, ...).
    pub reason: String,
}

/// What this process restored from at start (`/status` field `restore`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreInfo {
    /// The checkpoint restored from; `null` when the job started without state.
    pub checkpoint_id: Option<u64>,
    /// Storage path of that checkpoint's directory.
    pub path: Option<String>,
    /// When that checkpoint completed.
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Newer checkpoints passed over, newest first.
    pub skipped: Vec<SkippedCheckpoint>,
}

/// A task's view in `/status`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStatus {
    /// Task index.
    pub task: u32,
    /// Watermark, epoch ms (absent before the first record).
    pub watermark_ms: Option<i64>,
    /// All inputs exhausted.
    pub finished: bool,
    /// Records read.
    pub records_in: u64,
    /// Records written.
    pub records_out: u64,
}

/// What `/status` returns.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// Job name.
    pub job: String,
    /// `Restoring`, `Running`, `Finished` (bounded input done), `Stopping` (after SIGTERM, until
    /// the final checkpoint), `Stopped` (after a final checkpoint), `Failed`.
    pub phase: String,
    /// Why the job failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Pod ordinal and replica count.
    pub ordinal: u32,
    /// Replica count.
    pub replicas: u32,
    /// The checkpoint restored from at start (the same id as `restore.checkpointId`).
    pub restored_from: Option<u64>,
    /// What was restored at start, with the checkpoints skipped; absent while restoring.
    pub restore: Option<RestoreInfo>,
    /// The job's plan: tasks, key groups, stages, exchanges (`status.plan` of the StreamJob).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<weir_crds::stream_job::PlanStatus>,
    /// Tasks of this pod.
    pub tasks: Vec<TaskStatus>,
    /// Min watermark over this pod's tasks.
    pub watermark_ms: Option<i64>,
    /// The newest completed checkpoint.
    pub last_checkpoint: Option<CheckpointInfo>,
    /// Checkpoint failures in a row.
    pub consecutive_checkpoint_failures: u64,
    /// Why the newest checkpoint failed; cleared when one completes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_failure: Option<CheckpointFailureInfo>,
    /// Retained completed checkpoints, oldest first.
    #[serde(skip)]
    pub checkpoints: Vec<CheckpointInfo>,
}

/// Shared status.
pub type SharedStatus = Arc<Mutex<JobStatus>>;
