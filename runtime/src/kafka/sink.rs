//! Kafka sink. Every record's partition is chosen by [`SinkPartitioner`] (keyed: murmur2 like
//! the Java client; keyless: round-robin over all partitions), so every partition of the topic
//! gets data whatever the number of sink tasks.
//!
//! With `exactlyOnce` (the default) each sink task owns a transactional producer with
//! `transactional.id = <namespace>-<job>-<sink>-<task>`:
//! - at start, `init_transactions` fences any older producer with that id and aborts its
//!   open transaction (output of checkpoints that never completed), then a transaction begins;
//! - `prepare(c)` flushes: every record of checkpoint `c` is in the open transaction, and
//!   records written after the barrier are held in memory, not sent;
//! - `commit(c)` (checkpoint `c` completed) commits the transaction, begins the next one and
//!   sends the held records into it. If checkpoint `c` fails instead, its records stay in the
//!   open transaction and are committed with the next completed checkpoint.
//!
//! Read-committed consumers therefore see exactly the output of completed checkpoints.
//! librdkafka cannot resume a prepared transaction from a new producer, so a crash after
//! checkpoint `c` completed but before `commit(c)` reached the broker loses `c`'s output
//! (the restart aborts it and resumes after `c`); see runtime/README.md.
//!
//! With `exactlyOnce` and `transactions: false` (brokers without transactions, such as tansu):
//! an idempotent producer flushed at `prepare`, every record stamped with a `weir-writer`
//! header, and per-partition read-back positions in each checkpoint; after a restore the sink
//! reads back what it wrote past them and does not write those records again
//! ([`super::readback`]). Any consumer then sees each record once, provided the pipeline
//! replays the same records; output before the first completed checkpoint is at-least-once.
//!
//! Without `exactlyOnce`: an idempotent producer, flushed at `prepare` (at-least-once).

use super::partitioner::SinkPartitioner;
use super::readback::{self, ReplayFilter, SinkPositions, WRITER_HEADER};
use super::{client_config, partition_count, Endpoint, LastClientError};
use crate::record::Record;
use crate::sink::{Sink, SinkError};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_crds::pipeline::KafkaSinkSpec;
use weir_expr::Expr;

/// How long a flush, a transaction commit or `init_transactions` may take.
const TXN_TIMEOUT: Duration = Duration::from_secs(60);

/// Records the first delivery failure so that `prepare` fails instead of losing data, and
/// per partition the offset after the last delivered record.
#[derive(Clone, Default)]
pub struct DeliveryErrors {
    /// librdkafka's last client error (why brokers cannot be reached).
    last: LastClientError,
    first_error: Arc<Mutex<Option<String>>>,
    next_offsets: Arc<Mutex<BTreeMap<i32, i64>>>,
}

impl DeliveryErrors {
    fn take(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|mut g| g.take())
    }

    fn next_offsets(&self) -> BTreeMap<i32, i64> {
        self.next_offsets
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }
}

impl ClientContext for DeliveryErrors {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.last.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!("librdkafka: {error}: {reason}");
        self.last.record(reason);
    }
}

impl ProducerContext for DeliveryErrors {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Err((e, _)) => {
                if let Ok(mut g) = self.first_error.lock() {
                    g.get_or_insert_with(|| e.to_string());
                }
            }
            Ok(m) => {
                if let Ok(mut g) = self.next_offsets.lock() {
                    let next = g.entry(m.partition()).or_default();
                    *next = (*next).max(m.offset() + 1);
                }
            }
        }
    }
}

/// Exactly-once without transactions: the writer stamp, read-back positions and the filter
/// of replayed records.
struct ReadBackDedup {
    /// The `weir-writer` header value (the task's transactional id).
    writer: String,
    headers: OwnedHeaders,
    positions: SinkPositions,
    /// Active after a restore until the replay has produced what was read back.
    filter: Option<ReplayFilter>,
    /// Where the read-back records end, per partition (positions move there once the filter
    /// is done).
    read_back_ends: BTreeMap<i32, i64>,
    properties: BTreeMap<String, String>,
    partitions: u32,
}

/// A record held back between a checkpoint's barrier and its completion.
struct Held {
    partition: i32,
    key: Option<Vec<u8>>,
    payload: String,
    ts: i64,
}

/// What the sink needs to know about the job and its task.
#[derive(Clone, Debug)]
pub struct SinkTaskInfo {
    /// Namespace (or `local`).
    pub namespace: String,
    /// Job name.
    pub job: String,
    /// Task index.
    pub task: u32,
}

/// One task's writer to a Kafka topic.
pub struct KafkaSink {
    name: String,
    endpoint: Endpoint,
    producer: ThreadedProducer<DeliveryErrors>,
    errors: DeliveryErrors,
    partitioner: SinkPartitioner,
    key: Option<Expr>,
    transactional: bool,
    /// `Some(c)`: the open transaction holds checkpoint `c`'s records and waits for `commit(c)`.
    sealed: Option<u64>,
    /// A transaction is open.
    in_txn: bool,
    held: Vec<Held>,
    /// Records whose key expression failed (written without a key).
    key_errors: u64,
    /// The sink of a repartition topic: the task index stamped into every envelope.
    writer: Option<u32>,
    /// `exactlyOnce` with `transactions: false`.
    dedup: Option<ReadBackDedup>,
    /// How often the topic's partition count is read again (at a checkpoint barrier);
    /// `None` for repartition topics, whose partitions are the reading tasks.
    refresh_every: Option<Duration>,
    last_refresh: Instant,
}

/// How often a sink reads its topic's partition count again (`weir.partitions.refresh.ms`).
pub const PARTITIONS_REFRESH_PROPERTY: &str = "weir.partitions.refresh.ms";

const DEFAULT_PARTITIONS_REFRESH: Duration = Duration::from_secs(60);

/// How long a partition count refresh may take before the barrier goes on without it.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// `weir.partitions.refresh.ms` of sink `name` (default 60 s, 0 = never); repartition
/// sinks never refresh: a partition added to their topic would have no reading task.
fn refresh_every(
    name: &str,
    properties: &BTreeMap<String, String>,
) -> Result<Option<Duration>, super::KafkaError> {
    if name.ends_with(crate::operator::repartition::SINK_SUFFIX) {
        return Ok(None);
    }
    match properties.get(PARTITIONS_REFRESH_PROPERTY) {
        None => Ok(Some(DEFAULT_PARTITIONS_REFRESH)),
        Some(v) => match v.parse::<u64>() {
            Ok(0) => Ok(None),
            Ok(ms) => Ok(Some(Duration::from_millis(ms))),
            Err(e) => Err(super::KafkaError::Property {
                owner: format!("sink '{name}'"),
                property: PARTITIONS_REFRESH_PROPERTY.into(),
                message: format!("'{v}' is not a number of milliseconds: {e}"),
            }),
        },
    }
}

/// The transactional id of a sink task: `<namespace>-<job>-<sink>-<task>`.
pub fn transactional_id(info: &SinkTaskInfo, sink: &str) -> String {
    format!("{}-{}-{sink}-{}", info.namespace, info.job, info.task)
}

impl KafkaSink {
    /// Creates the producer of sink `name` for task `info.task` and reads the topic's
    /// partition count (retrying at start). Transactions are initialised by `on_restore`.
    pub fn new(name: &str, spec: &KafkaSinkSpec, info: &SinkTaskInfo) -> Result<Self, SinkError> {
        let kafka_err = |e: super::KafkaError| SinkError::Kafka {
            sink: name.to_string(),
            message: e.to_string(),
        };
        let endpoint = Endpoint::new(
            format!("sink '{name}'"),
            &spec.brokers,
            &spec.topic,
            &spec.properties,
            spec.security.as_deref(),
        )
        .map_err(kafka_err)?;
        let key = match &spec.key {
            Some(src) => Some(Expr::compile(src, &["e"]).map_err(|e| SinkError::Kafka {
                sink: name.to_string(),
                message: format!("sink '{name}': key expression '{src}': {e}"),
            })?),
            None => None,
        };
        let mut config = client_config(&endpoint, &spec.properties).map_err(kafka_err)?;
        config.set("enable.idempotence", "true");
        let transactional = spec.exactly_once && spec.transactions;
        if transactional {
            config.set("transactional.id", transactional_id(info, name));
        }
        let errors = DeliveryErrors::default();
        let producer = create_producer(&config, errors.clone())
            .map_err(|e| kafka_err(endpoint.client_error(e)))?;
        let partitions = partition_count(&endpoint, &errors.last, |t| {
            producer.client().fetch_metadata(Some(&endpoint.topic), t)
        })
        .map_err(kafka_err)?;
        Ok(KafkaSink {
            name: name.to_string(),
            endpoint,
            producer,
            errors,
            partitioner: SinkPartitioner::new(partitions, info.task),
            key,
            transactional,
            sealed: None,
            in_txn: false,
            held: vec![],
            key_errors: 0,
            writer: name
                .ends_with(crate::operator::repartition::SINK_SUFFIX)
                .then_some(info.task),
            refresh_every: refresh_every(name, &spec.properties).map_err(kafka_err)?,
            last_refresh: Instant::now(),
            dedup: (spec.exactly_once && !spec.transactions).then(|| {
                let writer = transactional_id(info, name);
                ReadBackDedup {
                    headers: OwnedHeaders::new().insert(Header {
                        key: WRITER_HEADER,
                        value: Some(writer.as_bytes()),
                    }),
                    writer,
                    positions: SinkPositions::default(),
                    filter: None,
                    read_back_ends: BTreeMap::new(),
                    properties: spec.properties.clone(),
                    partitions,
                }
            }),
        })
    }

    /// Reads the topic's partition count again when due, so that partitions added while the
    /// job runs get records from the next checkpoint on. A failure is logged and retried at
    /// the next due barrier; it never fails the checkpoint.
    fn refresh_partitions(&mut self) {
        let Some(every) = self.refresh_every else {
            return;
        };
        if self.last_refresh.elapsed() < every {
            return;
        }
        self.last_refresh = Instant::now();
        let topic = self.endpoint.topic.as_str();
        let count = self
            .producer
            .client()
            .fetch_metadata(Some(topic), REFRESH_TIMEOUT)
            .map_err(|e| self.errors.last.explain(e))
            .and_then(|md| {
                md.topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .and_then(|t| u32::try_from(t.partitions().len()).ok())
                    .ok_or_else(|| "no metadata for the topic".to_string())
            });
        match count {
            Ok(n) => {
                let before = self.partitioner.partitions();
                if self.partitioner.grow_to(n) {
                    if let Some(d) = self.dedup.as_mut() {
                        d.partitions = n;
                    }
                    tracing::info!(
                        "{}: topic '{topic}' grew from {before} to {n} partitions; writing to all of them",
                        self.endpoint.owner
                    );
                }
            }
            Err(e) => tracing::warn!(
                "{}: reading the partition count of topic '{topic}' from brokers '{}' failed (writing on with {}): {e}",
                self.endpoint.owner,
                self.endpoint.brokers,
                self.partitioner.partitions()
            ),
        }
    }

    fn fail(&self, action: &str, e: impl std::fmt::Display) -> SinkError {
        SinkError::Kafka {
            sink: self.name.clone(),
            message: format!(
                "{}: {action} (topic '{}', brokers '{}'): {e}",
                self.endpoint.owner, self.endpoint.topic, self.endpoint.brokers
            ),
        }
    }

    /// Enqueues one record, waiting while librdkafka's queue is full.
    fn send(
        &self,
        partition: i32,
        key: Option<&[u8]>,
        payload: &str,
        ts: i64,
    ) -> Result<(), SinkError> {
        loop {
            let mut rec: BaseRecord<'_, [u8], str> = BaseRecord::to(&self.endpoint.topic)
                .partition(partition)
                .payload(payload)
                .timestamp(ts);
            if let Some(k) = key {
                rec = rec.key(k);
            }
            if let Some(d) = &self.dedup {
                rec = rec.headers(d.headers.clone());
            }
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    _,
                )) => self.producer.poll(Duration::from_millis(50)),
                Err((e, _)) => return Err(self.fail("sending a record", e)),
            }
        }
    }

    fn flush_all(&self, action: &str) -> Result<(), SinkError> {
        self.producer
            .flush(TXN_TIMEOUT)
            .map_err(|e| self.fail(action, e))?;
        match self.errors.take() {
            Some(e) => Err(self.fail(&format!("{action}: a record was not delivered"), e)),
            None => Ok(()),
        }
    }

    fn begin(&mut self) -> Result<(), SinkError> {
        self.producer
            .begin_transaction()
            .map_err(|e| self.fail("beginning a transaction", e))?;
        self.in_txn = true;
        Ok(())
    }

    /// Commits the open transaction, retrying retriable errors.
    fn commit_txn(&mut self, id: u64) -> Result<(), SinkError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.producer.commit_transaction(TXN_TIMEOUT) {
                Ok(()) => {
                    self.in_txn = false;
                    return Ok(());
                }
                Err(rdkafka::error::KafkaError::Transaction(e))
                    if e.is_retriable() && attempt < 5 =>
                {
                    tracing::warn!(sink = %self.name, "committing the transaction of checkpoint {id} (attempt {attempt}): {e}; retrying");
                    std::thread::sleep(super::backoff(attempt));
                }
                Err(e) => {
                    return Err(
                        self.fail(&format!("committing the transaction of checkpoint {id}"), e)
                    )
                }
            }
        }
    }
}

fn create_producer(
    config: &ClientConfig,
    errors: DeliveryErrors,
) -> rdkafka::error::KafkaResult<ThreadedProducer<DeliveryErrors>> {
    config.create_with_context(errors)
}

impl KafkaSink {
    /// `transactions: false`: finds this task's records written after the restored checkpoint.
    fn restore_read_back(
        &mut self,
        restored: Option<u64>,
        position: Option<&serde_json::Value>,
    ) -> Result<(), SinkError> {
        let Some(d) = self.dedup.as_mut() else {
            return Ok(());
        };
        let err = |message: String| SinkError::Kafka {
            sink: self.name.clone(),
            message,
        };
        let start = match (restored, position) {
            (Some(_), Some(v)) => SinkPositions::from_value(v)
                .map_err(|e| err(format!("sink '{}': {e}", self.name)))?,
            (Some(id), None) => {
                tracing::warn!(sink = %self.name, "checkpoint {id} has no read-back positions for this sink (taken with transactions or by an older version): its output since then may be written twice");
                return Ok(());
            }
            // nothing to read back; positions start with the first delivered records
            (None, _) => return Ok(()),
        };
        let found = readback::read_own_records(
            &self.endpoint,
            &d.properties,
            d.partitions,
            &start,
            &d.writer,
        )
        .map_err(|e| err(e.to_string()))?;
        tracing::info!(sink = %self.name, restored = ?restored, "read back {} record(s) this task wrote after the restored checkpoint; they will not be written again", found.records.len());
        d.positions = start;
        d.read_back_ends = found.next_offsets;
        d.filter = Some(ReplayFilter::new(found.records));
        self.end_filter_if_done();
        Ok(())
    }

    /// Drops the replay filter once it is done, logging what it did.
    fn end_filter_if_done(&mut self) {
        let Some(d) = self.dedup.as_mut() else {
            return;
        };
        let Some(summary) = d.filter.as_ref().and_then(ReplayFilter::finished) else {
            return;
        };
        d.filter = None;
        for (&p, &next) in &d.read_back_ends {
            d.positions.advance(p, next);
        }
        if summary.unmatched > 0 {
            tracing::warn!(sink = %self.name, "{} of {} record(s) read back were not produced again by the replay (the pipeline is not deterministic here); they stay in the topic, and what replaced them was written too", summary.unmatched, summary.read_back);
        } else {
            tracing::info!(sink = %self.name, "skipped {} replayed record(s) already in the topic", summary.skipped);
        }
    }
}

impl Sink for KafkaSink {
    fn on_restore(
        &mut self,
        restored: Option<u64>,
        position: Option<&serde_json::Value>,
    ) -> Result<(), SinkError> {
        self.restore_read_back(restored, position)?;
        if !self.transactional {
            return Ok(());
        }
        // fences the previous incarnation of this task and aborts its open transaction:
        // its records belong to checkpoints after `restored` and will be produced again
        let endpoint = self.endpoint.clone();
        super::retry_startup(&endpoint, "initialising transactions", |t| {
            self.producer
                .init_transactions(t.max(Duration::from_secs(5)))
                .map_err(|e| e.to_string())
        })
        .map_err(|e| SinkError::Kafka {
            sink: self.name.clone(),
            message: e.to_string(),
        })?;
        tracing::info!(sink = %self.name, restored = ?restored, "transactions initialised");
        self.begin()
    }

    fn write(&mut self, record: &Record) -> Result<(), SinkError> {
        let key = match &self.key {
            Some(k) => match k.eval(&[&record.value]) {
                Ok(v) => Some(v.key_string().into_bytes()),
                Err(e) => {
                    // one bad record must not stop the job: write it without a key
                    self.key_errors += 1;
                    if self.key_errors <= 5 {
                        tracing::warn!(sink = %self.name, "key expression failed on {}: {e}; writing the record without a key", record.value.to_json());
                    }
                    None
                }
            },
            None => None,
        };
        let partition = self.partitioner.partition(key.as_deref());
        let payload = match self.writer {
            Some(task) => crate::operator::repartition::stamp_writer(&record.value.to_json(), task),
            None => record.value.to_json(),
        };
        if let Some(filter) = self.dedup.as_mut().and_then(|d| d.filter.as_mut()) {
            let skip = filter.already_written(key.as_deref(), payload.as_bytes());
            self.end_filter_if_done();
            if skip {
                return Ok(());
            }
        }
        if self.sealed.is_some() {
            self.held.push(Held {
                partition,
                key,
                payload,
                ts: record.ts,
            });
            return Ok(());
        }
        self.send(partition, key.as_deref(), &payload, record.ts)
    }

    fn prepare(&mut self, id: u64) -> Result<(), SinkError> {
        if self.transactional {
            // an earlier checkpoint that never completed: its records join this one
            for h in std::mem::take(&mut self.held) {
                self.send(h.partition, h.key.as_deref(), &h.payload, h.ts)?;
            }
        }
        self.flush_all(&format!("flushing for checkpoint {id}"))?;
        if self.transactional {
            self.sealed = Some(id);
        }
        // while replayed records are still being matched, the positions stay before them
        if let Some(d) = self.dedup.as_mut().filter(|d| d.filter.is_none()) {
            for (p, next) in self.errors.next_offsets() {
                d.positions.advance(p, next);
            }
        }
        // records after this barrier spread over partitions added meanwhile
        self.refresh_partitions();
        Ok(())
    }

    fn position(&self) -> Option<serde_json::Value> {
        let d = self.dedup.as_ref()?;
        serde_json::to_value(&d.positions).ok()
    }

    fn commit(&mut self, id: u64) -> Result<(), SinkError> {
        let Some(sealed) = self.sealed else {
            return Ok(());
        };
        if id < sealed {
            return Ok(()); // committed together with `sealed`
        }
        if self.in_txn {
            self.commit_txn(id)?;
        }
        self.sealed = None;
        self.begin()?;
        for h in std::mem::take(&mut self.held) {
            self.send(h.partition, h.key.as_deref(), &h.payload, h.ts)?;
        }
        Ok(())
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        if self.transactional && self.in_txn {
            // records after the last completed checkpoint: they will be produced again
            let _ = self.producer.abort_transaction(Duration::from_secs(5));
        } else if !self.transactional {
            let _ = self.producer.flush(Duration::from_secs(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_sinks_refresh_their_partition_count_and_repartition_sinks_never() {
        let none = BTreeMap::new();
        assert_eq!(
            refresh_every("out", &none).ok(),
            Some(Some(DEFAULT_PARTITIONS_REFRESH))
        );
        let repartition = format!("by-user{}", crate::operator::repartition::SINK_SUFFIX);
        assert_eq!(refresh_every(&repartition, &none).ok(), Some(None));
        let prop = |v: &str| -> BTreeMap<String, String> {
            [(PARTITIONS_REFRESH_PROPERTY.to_string(), v.to_string())].into()
        };
        assert_eq!(refresh_every("out", &prop("0")).ok(), Some(None));
        assert_eq!(
            refresh_every("out", &prop("5000")).ok(),
            Some(Some(Duration::from_secs(5)))
        );
        let err = refresh_every("out", &prop("often"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("sink 'out'") && err.contains(PARTITIONS_REFRESH_PROPERTY),
            "{err}"
        );
    }
}
