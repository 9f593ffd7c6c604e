//! Exactly-once Kafka output without transactions (`transactions: false`, for brokers such as
//! tansu that lack `EndTxn`): every record carries a `weir-writer` header naming its sink task,
//! each checkpoint stores, per partition, the offset from which that task's later records can
//! be found ([`SinkPositions`]), and after a restore the sink reads back what it wrote past
//! those offsets ([`read_own_records`]) and does not write those records again
//! ([`ReplayFilter`]).
//!
//! Records are matched by content (key and payload), not by position, so a replay that emits
//! the same records in another order across partitions still matches. A record the replay does
//! not produce again (a pipeline that is not deterministic, such as a lookupJoin against a
//! changing store) stays in the topic, and its replacement is written too: never a loss, at
//! worst a duplicate, and the sink logs how many were left unmatched.

use super::{client_config, retry_startup, Endpoint, KafkaError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// The header that names the sink task that wrote a record.
pub const WRITER_HEADER: &str = "weir-writer";

/// How long reading back may take before the restore fails (it is retried by the job restart).
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(120);

/// How long no record must arrive, once past the high watermarks, to call the read done.
const QUIET_AT_END: Duration = Duration::from_secs(1);

/// Per partition, an offset at or before this task's first record after the checkpoint that
/// stores it: the offset after this task's last delivered record, which is where the next
/// record batch in the partition starts. Partitions this task has not written yet are absent
/// and are read back from their start. Kept in the task's checkpoint manifest.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkPositions {
    /// Partition → offset.
    pub partitions: BTreeMap<i32, i64>,
}

impl SinkPositions {
    /// Moves partition `partition`'s position to `next_offset` if that is further (positions
    /// only grow).
    pub fn advance(&mut self, partition: i32, next_offset: i64) {
        let e = self.partitions.entry(partition).or_insert(next_offset);
        *e = (*e).max(next_offset);
    }

    /// The stored form, or `None` if it cannot be read (logged by the caller).
    pub fn from_value(v: &serde_json::Value) -> Result<Self, String> {
        serde_json::from_value(v.clone()).map_err(|e| format!("sink position {v}: {e}"))
    }
}

/// A record's identity for matching: its key and payload bytes.
pub type RecordIdentity = (Option<Vec<u8>>, Vec<u8>);

/// What a restored sink task found of its own output after the restored checkpoint.
#[derive(Debug, Default)]
pub struct ReadBack {
    /// The records, in no particular order.
    pub records: Vec<RecordIdentity>,
    /// Per partition, the offset after the last of them.
    pub next_offsets: BTreeMap<i32, i64>,
}

/// Skips the records a restored task wrote before it crashed, as the replay produces them again.
#[derive(Debug, Default)]
pub struct ReplayFilter {
    pending: HashMap<RecordIdentity, u32>,
    read_back: u64,
    matched: u64,
    seen: u64,
}

/// How the filter ended.
#[derive(Debug, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Records found in the topic after the restored checkpoint.
    pub read_back: u64,
    /// Replayed records that were not written again.
    pub skipped: u64,
    /// Read-back records the replay never produced (possible duplicates downstream).
    pub unmatched: u64,
}

impl ReplayFilter {
    /// A filter for the records found in the topic.
    pub fn new(records: impl IntoIterator<Item = RecordIdentity>) -> Self {
        let mut f = ReplayFilter::default();
        for r in records {
            *f.pending.entry(r).or_default() += 1;
            f.read_back += 1;
        }
        f
    }

    /// Whether a replayed record is already in the topic (and so must not be written).
    pub fn already_written(&mut self, key: Option<&[u8]>, payload: &[u8]) -> bool {
        self.seen += 1;
        let id = (key.map(<[u8]>::to_vec), payload.to_vec());
        match self.pending.get_mut(&id) {
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    self.pending.remove(&id);
                }
                self.matched += 1;
                true
            }
            None => false,
        }
    }

    /// Done: everything read back was matched, or the replay has gone twice as far as the
    /// crashed run had (what is left was not produced again; keeping it longer would risk
    /// skipping a new record that happens to look the same).
    pub fn finished(&self) -> Option<ReplaySummary> {
        (self.pending.is_empty() || self.seen >= 2 * self.read_back).then(|| ReplaySummary {
            read_back: self.read_back,
            skipped: self.matched,
            unmatched: self.read_back - self.matched,
        })
    }
}

/// Reads every record with `WRITER_HEADER == writer` from `positions` (partitions not in it:
/// from their start) to the end of each of `partitions` partitions.
///
/// The end is where the broker's high watermark says, and then no record for
/// [`QUIET_AT_END`]: tansu reports the high watermark of a multi-record batch as its base
/// offset + 1, so the watermark alone would stop inside the last batch.
pub fn read_own_records(
    endpoint: &Endpoint,
    properties: &BTreeMap<String, String>,
    partitions: u32,
    positions: &SinkPositions,
    writer: &str,
) -> Result<ReadBack, KafkaError> {
    let mut config = client_config(endpoint, properties)?;
    config
        .set("group.id", format!("{writer}-readback"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_uncommitted");
    let consumer: BaseConsumer = config
        .create()
        .map_err(|e| endpoint.client_error(format!("reading back own records: {e}")))?;
    let topic = endpoint.topic.as_str();
    let highs = retry_startup(endpoint, "reading partition ends", |t| {
        watermarks(&consumer, topic, partitions, t)
    })?;
    let mut tpl = TopicPartitionList::new();
    // partitions not yet read up to their high watermark
    let mut behind: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, (_, high)) in highs {
        let from = positions.partitions.get(&p).copied();
        let offset = from.map_or(Offset::Beginning, Offset::Offset);
        tpl.add_partition_offset(topic, p, offset)
            .map_err(|e| endpoint.client_error(e))?;
        if from.is_none_or(|f| f < high) {
            behind.insert(p, high);
        }
    }
    tracing::debug!(writer, ?positions, ?behind, "reading back own records");
    consumer
        .assign(&tpl)
        .map_err(|e| endpoint.client_error(format!("assigning partitions to read back: {e}")))?;
    let mut own = ReadBack::default();
    let started = Instant::now();
    let mut last_record = Instant::now();
    loop {
        if started.elapsed() > READ_BACK_TIMEOUT {
            return Err(endpoint.client_error(format!(
                "reading back own records: partitions {:?} not read to their end in {}s",
                behind.keys().collect::<Vec<_>>(),
                READ_BACK_TIMEOUT.as_secs()
            )));
        }
        let Some(msg) = consumer.poll(Duration::from_millis(100)) else {
            if behind.is_empty() && last_record.elapsed() >= QUIET_AT_END {
                return Ok(own);
            }
            continue;
        };
        let msg = msg.map_err(|e| endpoint.client_error(format!("reading back: {e}")))?;
        last_record = Instant::now();
        if behind
            .get(&msg.partition())
            .is_some_and(|&high| msg.offset() + 1 >= high)
        {
            behind.remove(&msg.partition());
        }
        let is_own = msg.headers().is_some_and(|hs| {
            hs.iter()
                .any(|h| h.key == WRITER_HEADER && h.value == Some(writer.as_bytes()))
        });
        if is_own {
            own.records.push((
                msg.key().map(<[u8]>::to_vec),
                msg.payload().unwrap_or_default().to_vec(),
            ));
            let next = own.next_offsets.entry(msg.partition()).or_default();
            *next = (*next).max(msg.offset() + 1);
        }
    }
}

/// (low, high) watermark of every partition.
fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: u32,
    timeout: Duration,
) -> Result<BTreeMap<i32, (i64, i64)>, String> {
    (0..partitions as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, timeout)
                .map(|w| (p, w))
                .map_err(|e| format!("partition {p}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(k: Option<&str>, v: &str) -> RecordIdentity {
        (k.map(|k| k.as_bytes().to_vec()), v.as_bytes().to_vec())
    }

    #[test]
    fn replayed_records_are_skipped_once_each_in_any_order() {
        let mut f = ReplayFilter::new([rec(Some("a"), "1"), rec(None, "2"), rec(None, "2")]);
        assert!(f.finished().is_none());
        assert!(f.already_written(None, b"2"));
        assert!(f.already_written(Some(b"a"), b"1"));
        assert!(!f.already_written(Some(b"b"), b"1"), "another key is new");
        assert!(f.already_written(None, b"2"), "both copies were written");
        assert_eq!(
            f.finished(),
            Some(ReplaySummary {
                read_back: 3,
                skipped: 3,
                unmatched: 0
            })
        );
        assert!(!f.already_written(None, b"2"), "a third copy is new");
    }

    #[test]
    fn a_record_never_replayed_is_given_up_after_twice_the_crashed_output() {
        let mut f = ReplayFilter::new([rec(None, "x"), rec(None, "y")]);
        assert!(f.already_written(None, b"x"));
        for v in ["p", "q", "r"] {
            assert!(f.finished().is_none());
            assert!(!f.already_written(None, v.as_bytes()));
        }
        assert_eq!(
            f.finished(),
            Some(ReplaySummary {
                read_back: 2,
                skipped: 1,
                unmatched: 1
            })
        );
    }

    #[test]
    fn nothing_read_back_means_nothing_to_filter() {
        assert_eq!(
            ReplayFilter::new([]).finished(),
            Some(ReplaySummary {
                read_back: 0,
                skipped: 0,
                unmatched: 0
            })
        );
    }

    #[test]
    fn positions_only_grow_and_round_trip_through_the_manifest() {
        let mut p = SinkPositions::default();
        p.advance(0, 10);
        p.advance(0, 7);
        p.advance(2, 3);
        assert_eq!(p.partitions, BTreeMap::from([(0, 10), (2, 3)]));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(SinkPositions::from_value(&v).unwrap(), p);
        assert!(
            SinkPositions::from_value(&serde_json::json!({"partitions": 3}))
                .unwrap_err()
                .contains("sink position")
        );
    }
}
