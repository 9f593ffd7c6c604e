//! Sources: readers of one input partition each, resumable from an offset.

pub mod file;
pub mod generator;

use std::sync::Arc;
use weir_expr::Value;

/// A source read that failed.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// File I/O failed.
    #[error("source '{source_name}' partition {partition} ({path}): {message}")]
    File {
        /// Source name.
        source_name: String,
        /// Partition index.
        partition: u32,
        /// The file.
        path: String,
        /// What failed.
        message: String,
    },
    /// A Kafka source could not be created or read (the message starts with
    /// `source '<name>'` and names brokers and topic).
    #[error("{message}")]
    Kafka {
        /// Source name.
        source_name: String,
        /// What failed.
        message: String,
    },
    /// The generator could not be created.
    #[error("source '{source_name}': {message}")]
    Generator {
        /// Source name.
        source_name: String,
        /// What failed.
        message: String,
    },
}

/// What a read produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadStatus {
    /// Records were appended (maybe fewer than asked).
    Data,
    /// Nothing available right now (rate limit, or following a file).
    Waiting,
    /// The partition has ended and will produce nothing more.
    Exhausted,
}

/// A reader of one input partition.
pub trait PartitionReader: Send {
    /// Appends up to `max` records as (event time if the source knows it, value).
    fn read(
        &mut self,
        max: usize,
        out: &mut Vec<(Option<i64>, Value)>,
    ) -> Result<ReadStatus, SourceError>;
    /// The offset to resume from after the records read so far.
    fn offset(&self) -> u64;
    /// Resumes at `offset` (from a checkpoint).
    fn seek(&mut self, offset: u64) -> Result<(), SourceError>;
    /// Checkpoint `id` took [`PartitionReader::offset`] as this partition's position.
    fn checkpointed(&mut self, _id: u64) {}
    /// Checkpoint `id` completed: a reader may publish the position it took (the Kafka source
    /// commits it to the consumer group, so that standard tools see the job's lag).
    fn checkpoint_completed(&mut self, _id: u64) {}
    /// Records between the reader's position and the end of its partition, when it knows.
    fn lag(&self) -> Option<u64> {
        None
    }
    /// How far behind its schedule the reader is, ms, when it has one (a rate-limited
    /// generator; an unbounded one is never behind). See [`crate::task::input_lag`].
    fn schedule_delay_ms(&self) -> Option<u64> {
        None
    }
    /// Whether the reader's event times follow the wall clock (Kafka record times), so that
    /// wall clock − watermark is a lag. Synthetic and replayed inputs say no.
    fn event_time_follows_wall_clock(&self) -> bool {
        false
    }
    /// Records skipped because they could not be parsed.
    fn malformed(&self) -> u64 {
        0
    }
    /// The malformed records since the last call, as dead letters for `<source>.deadLetter`.
    fn take_dead_letters(&mut self) -> Vec<Value> {
        vec![]
    }
    /// Nothing downstream reads other top-level fields of a record than `fields`: a reader may
    /// leave the others out of the records it builds (malformed records are still found and
    /// reported exactly as before). Readers may ignore this.
    fn keep_fields(&mut self, _fields: Vec<Arc<str>>) {}
}

/// Longest raw text kept in a dead letter (longer records are cut, and say so).
pub const DEAD_LETTER_RAW_MAX: usize = 64 * 1024;

/// A source's dead letter: `{error, raw, partition, offset}` (`raw` cut at
/// [`DEAD_LETTER_RAW_MAX`] bytes, with `rawTruncated: true`).
pub fn dead_letter(error: &str, raw: &[u8], partition: u32, offset: u64) -> Value {
    let cut = raw.len() > DEAD_LETTER_RAW_MAX;
    let text = String::from_utf8_lossy(&raw[..raw.len().min(DEAD_LETTER_RAW_MAX)]);
    let mut fields = vec![
        ("error", Value::str(error)),
        ("raw", Value::str(&text)),
        ("partition", Value::Int(i64::from(partition))),
        (
            "offset",
            Value::Int(i64::try_from(offset).unwrap_or(i64::MAX)),
        ),
    ];
    if cut {
        fields.push(("rawTruncated", Value::Bool(true)));
    }
    Value::map(fields)
}
