//! The unit of data flowing through a task: a value with its event time.

use weir_expr::Value;

/// One record: a JSON-like value, its event time and when it entered the job.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    /// Event time, epoch milliseconds.
    pub ts: i64,
    /// The record's fields.
    pub value: Value,
    /// Wall-clock time (epoch ms) at which the source read it; for end-to-end latency.
    pub ingest_ms: i64,
}

impl Record {
    /// A record with the given event time and value, ingested now.
    pub fn new(ts: i64, value: Value, ingest_ms: i64) -> Self {
        Record {
            ts,
            value,
            ingest_ms,
        }
    }
}

/// Wall-clock time in epoch milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
