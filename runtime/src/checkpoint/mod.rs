//! Checkpoints: what is stored, where, and how the runtime and the operator read it back.
//!
//! # Layout in storage
//!
//! ```text
//! <storage>/<namespace or "local">/<job>/
//!   chk-<id>/task-<n>/manifest.json   task manifest: source offsets, watermarks, files
//!   chk-<id>/task-<n>/files/<name>    small RocksDB files of that checkpoint (MANIFEST, OPTIONS, CURRENT)
//!   chk-<id>/_COMPLETED               job-level completion marker, written LAST
//!   sst/task-<n>/<sha256>.sst         SST files, shared by every checkpoint that references them
//!   pods/pod-<i>.stopped              pod i exited after a final checkpoint (several pods only)
//! ```
//!
//! A checkpoint exists only once `_COMPLETED` exists: a `chk-<id>` directory without it is in
//! progress or failed and is never restored from. Every file a task manifest references is
//! listed with its size and sha256, and restore verifies all three (presence, size, hash).
//! SST files are immutable, so a checkpoint uploads only SSTs not already in `sst/task-<n>/`
//! (incremental checkpoints); the manifest references them by name, size and sha256.
//!
//! # Several pods
//!
//! Tasks are input partitions; pod `i` of `N` runs the tasks `p` with `p % N == i`. Each pod
//! uploads its tasks' manifests. Pod ordinal 0 writes `_COMPLETED` once it sees a manifest of
//! that id for **every** task of the job (it polls storage until the checkpoint timeout);
//! every pod commits its sinks when it sees the marker. So that all pods use the same ids
//! without talking to each other, with `N > 1` checkpoint ids are wall-clock ticks
//! (`epoch ms / interval ms`) and checkpoints start on those tick boundaries. With one pod,
//! ids are sequential (1, 2, ...), continuing after the newest id found in storage.
//!
//! A pod that exits after its final checkpoint (SIGTERM, then nothing read since) leaves
//! `pods/pod-<i>.stopped` naming that checkpoint, and deletes it when it starts again. A pod
//! still stopping whose own final checkpoint needs a pod that left such a note cannot complete
//! it: it exits at once instead of waiting out its deadline, and the next start restores from
//! the newest completed checkpoint (the one the stopped pod ended with, or a later one).
//!
//! Retention keeps `spec.checkpoint.retain` completed checkpoints, deletes incomplete ones
//! older than the newest completed one, and never deletes the checkpoint this process restored
//! from; only ordinal 0 deletes checkpoint directories, and each pod deletes the SSTs of its own
//! tasks that no remaining manifest references.
//!
//! [`catalog`] and [`retention`] are pure; [`storage`] and [`transfer`] do the I/O.

pub mod catalog;
pub mod retention;
pub mod storage;
pub mod transfer;

use crate::time::PartitionWatermark;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Name of the job-level completion marker inside `chk-<id>/`.
pub const COMPLETED_MARKER: &str = "_COMPLETED";

/// The directory of checkpoint `id`, relative to the job root.
pub fn checkpoint_dir(id: u64) -> String {
    format!("chk-{id}")
}

/// Parses `chk-<id>` back to the id.
pub fn parse_checkpoint_dir(name: &str) -> Option<u64> {
    name.strip_prefix("chk-")?.parse().ok()
}

/// The manifest path of task `task` in checkpoint `id`, relative to the job root.
pub fn task_manifest_path(id: u64, task: u32) -> String {
    format!("chk-{id}/task-{task}/manifest.json")
}

/// The note pod `ordinal` leaves when it exits after a final checkpoint.
pub fn stopped_note_path(ordinal: u32) -> String {
    format!("pods/pod-{ordinal}.stopped")
}

/// The marker path of checkpoint `id`, relative to the job root.
pub fn marker_path(id: u64) -> String {
    format!("chk-{id}/{COMPLETED_MARKER}")
}

/// One stored file referenced by a task manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileRef {
    /// The file name inside the RocksDB checkpoint directory.
    pub name: String,
    /// Object path relative to the job root.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Hex sha256 of the content.
    pub sha256: String,
}

/// Where one input partition of a task was at the checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourcePosition {
    /// Source name.
    pub source: String,
    /// Partition index within the source.
    pub partition: u32,
    /// Offset to resume from (byte position for files, event index for generators).
    pub offset: u64,
    /// The partition's watermark state.
    pub watermark: PartitionWatermark,
}

/// What one task stored for one checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskManifest {
    /// Checkpoint id.
    pub checkpoint_id: u64,
    /// Task index (= partition index).
    pub task: u32,
    /// Job name.
    pub job: String,
    /// When the task took its snapshot.
    pub created_at: DateTime<Utc>,
    /// Source positions.
    pub sources: Vec<SourcePosition>,
    /// The task watermark.
    pub watermark: i64,
    /// All bounded inputs were exhausted and every window flushed.
    #[serde(default)]
    pub finished: bool,
    /// RocksDB checkpoint files.
    pub files: Vec<FileRef>,
    /// Operator column families present in the state.
    #[serde(default)]
    pub operators: Vec<String>,
    /// What sinks keep in the checkpoint, by sink name (Kafka read-back positions).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sinks: BTreeMap<String, serde_json::Value>,
}

impl TaskManifest {
    /// Total bytes referenced.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// `pods/pod-<i>.stopped`: pod `ordinal` exited after a final checkpoint and takes part in no
/// checkpoint after `checkpoint_id` until it starts again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoppedNote {
    /// The pod's ordinal.
    pub ordinal: u32,
    /// The last checkpoint the pod completed (nothing was read after it).
    pub checkpoint_id: u64,
    /// When it exited.
    pub stopped_at: DateTime<Utc>,
}

/// The job-level completion marker, written last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompletedMarker {
    /// Checkpoint id.
    pub checkpoint_id: u64,
    /// When the checkpoint started.
    pub started_at: DateTime<Utc>,
    /// When it completed (marker written).
    pub completed_at: DateTime<Utc>,
    /// The tasks it holds.
    pub tasks: Vec<u32>,
    /// Bytes referenced by all task manifests (shared SSTs counted in full).
    pub total_size_bytes: u64,
    /// Bytes uploaded for this checkpoint (new files only).
    #[serde(default)]
    pub uploaded_bytes: u64,
    /// Number of pods that took it.
    pub replicas: u32,
    /// Taken on request to stop (`POST /checkpoint?final=true`) or at end of input.
    #[serde(default)]
    pub is_final: bool,
    /// The explicit restore point (`restore.from`) the run that took it was started with. A
    /// restart pinned to the same id continues from the newest such checkpoint instead of
    /// going back to the pin (which would replay input whose output is already committed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_from: Option<u64>,
    /// The job's key groups (`spec.maxParallelism`) when it was taken; absent in checkpoints
    /// from before the setting, which used the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_groups: Option<u32>,
}
