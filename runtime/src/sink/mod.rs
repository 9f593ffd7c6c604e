//! Sinks: where a task's records leave the job. File sinks are two-phase (exactly-once).

pub mod file;
pub mod stdout;
pub mod throttle;

use crate::record::Record;
use std::time::Duration;

/// A sink operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// File I/O failed.
    #[error("sink '{sink}': {action} {path}: {source}")]
    Io {
        /// Sink name.
        sink: String,
        /// What was done.
        action: &'static str,
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A Kafka sink operation failed (the message starts with `sink '<name>'` and names
    /// brokers and topic).
    #[error("{message}")]
    Kafka {
        /// Sink name.
        sink: String,
        /// What failed.
        message: String,
    },
}

/// A task's writer for one sink.
pub trait Sink: Send {
    /// Called once at start with the checkpoint the task restored from (if any) and what this
    /// sink stored in it ([`Sink::position`]), before any write.
    fn on_restore(
        &mut self,
        _restored: Option<u64>,
        _position: Option<&serde_json::Value>,
    ) -> Result<(), SinkError> {
        Ok(())
    }
    /// Writes one record.
    fn write(&mut self, record: &Record) -> Result<(), SinkError>;
    /// Flushes buffered output (called after each batch).
    fn flush(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
    /// Pre-commits everything written so far as part of checkpoint `id` (phase one).
    fn prepare(&mut self, _id: u64) -> Result<(), SinkError> {
        Ok(())
    }
    /// What the sink keeps in the checkpoint just prepared (given back to `on_restore`).
    fn position(&self) -> Option<serde_json::Value> {
        None
    }
    /// Checkpoint `id` completed: make its output visible (phase two).
    fn commit(&mut self, _id: u64) -> Result<(), SinkError> {
        Ok(())
    }
    /// How long the task should stop reading before it writes to this sink again (a sink
    /// ahead of its `maxRecordsPerSecond`); zero when it takes records now. The task waits
    /// this long (answering commands meanwhile) and counts it as backpressured time.
    fn backoff(&self) -> Duration {
        Duration::ZERO
    }
}
