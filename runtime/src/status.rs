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
    /// `Restoring`, `Running`, `Finished` (bounded input done), `Stopped` (after a final checkpoint), `Failed`.
    pub phase: String,
    /// Why the job failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Pod ordinal and replica count.
    pub ordinal: u32,
    /// Replica count.
    pub replicas: u32,
    /// The checkpoint restored from at start.
    pub restored_from: Option<u64>,
    /// Tasks of this pod.
    pub tasks: Vec<TaskStatus>,
    /// Min watermark over this pod's tasks.
    pub watermark_ms: Option<i64>,
    /// The newest completed checkpoint.
    pub last_checkpoint: Option<CheckpointInfo>,
    /// Checkpoint failures in a row.
    pub consecutive_checkpoint_failures: u64,
    /// Retained completed checkpoints, oldest first.
    #[serde(skip)]
    pub checkpoints: Vec<CheckpointInfo>,
}

/// Shared status.
pub type SharedStatus = Arc<Mutex<JobStatus>>;
