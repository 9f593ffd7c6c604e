//! Kafka source: one reader per assigned partition. The partition is `assign`ed explicitly
//! (no group membership, no rebalancing); the offset to resume from lives in the task's
//! checkpoint manifest ([`PartitionReader::offset`] / [`PartitionReader::seek`]). Without a
//! checkpoint the reader starts at the partition's low watermark (`startFrom: earliest`) or
//! high watermark (`latest`), resolved once at start so that the first checkpoint already
//! holds a concrete offset.
//!
//! When a checkpoint completes, the offset it holds is committed to the consumer group
//! (`group.id`, default `weir-<namespace>-<job>-<source>`, set by
//! [`super::resolve_partitions`]), as Flink does: standard tools (`kafka-consumer-groups`,
//! Burrow, lag exporters) then see the job's progress and lag. Weir never reads those
//! commits back; restores use the checkpoint. The reader's lag (end of the partition − next
//! offset, from librdkafka's statistics every `statistics.interval.ms`, default 5 s) is
//! [`PartitionReader::lag`].
//!
//! Records are JSON values; event time is read from the source's `eventTime.field` by the
//! task, as for the other sources. Consumers read with `isolation.level=read_committed`
//! (librdkafka's default), so records of aborted or open transactions are never seen, and
//! lag is measured to the last stable offset.

use super::{client_config, Endpoint, KafkaError, LastClientError};
use crate::source::{PartitionReader, ReadStatus, SourceError};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::message::Message;
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_crds::pipeline::{KafkaSourceSpec, StartFrom};
use weir_expr::Value;

/// How often librdkafka reports statistics (the partition's end, for lag) unless the source's
/// properties set `statistics.interval.ms`.
const DEFAULT_STATISTICS_INTERVAL_MS: &str = "5000";

/// The consumer's callbacks: the partition's end from statistics, and offset commit results.
struct SourceContext {
    owner: String,
    brokers: String,
    topic: String,
    partition: i32,
    /// The last stable offset (read_committed) or high watermark; -1 until known.
    end: Arc<AtomicI64>,
    /// librdkafka's last client error.
    last: LastClientError,
    /// When a failed offset commit was last logged (at most once a minute).
    commit_failure_logged: std::sync::Mutex<Option<Instant>>,
}

impl ClientContext for SourceContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.last.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!("librdkafka: {error}: {reason}");
        self.last.record(reason);
    }

    fn stats(&self, statistics: Statistics) {
        let Some(p) = statistics
            .topics
            .get(&self.topic)
            .and_then(|t| t.partitions.get(&self.partition))
        else {
            return;
        };
        let end = if p.ls_offset >= 0 {
            p.ls_offset
        } else {
            p.hi_offset
        };
        if end >= 0 {
            self.end.store(end, Ordering::Relaxed);
        }
    }
}

impl ConsumerContext for SourceContext {
    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        offsets: &TopicPartitionList,
    ) {
        match result {
            Ok(()) => tracing::debug!(
                "{}: committed offsets {:?} of topic '{}' to the consumer group",
                self.owner,
                offsets.to_topic_map(),
                self.topic
            ),
            // the checkpoint holds the offsets; a failed commit only delays what tools show
            Err(e) if self.commit_failure_due() => tracing::warn!(
                "{}: committing the checkpoint's offset of partition {} of topic '{}' to the consumer group on brokers '{}' failed (the checkpoint is unaffected; every checkpoint commits again; logged once a minute): {e}",
                self.owner,
                self.partition,
                self.topic,
                self.brokers
            ),
            Err(_) => {}
        }
    }
}

impl SourceContext {
    /// Whether a failed commit should be logged now (once a minute: a group the credentials
    /// may not commit to fails at every checkpoint).
    fn commit_failure_due(&self) -> bool {
        let Ok(mut last) = self.commit_failure_logged.lock() else {
            return true;
        };
        let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

/// Reads one Kafka partition.
pub struct KafkaPartitionReader {
    source_name: String,
    endpoint: Endpoint,
    partition: i32,
    consumer: BaseConsumer<SourceContext>,
    /// The partition's end as last reported by librdkafka's statistics (-1: not yet).
    end: Arc<AtomicI64>,
    /// Offsets held by checkpoints taken and not yet completed, oldest first.
    checkpointed: VecDeque<(u64, i64)>,
    /// The next offset to read.
    next: i64,
    assigned: bool,
    malformed: u64,
    /// Malformed records not yet taken by the task.
    dead_letters: Vec<Value>,
    errors_logged: u64,
    last_error_log: Option<Instant>,
}

impl KafkaPartitionReader {
    /// A reader of partition `partition` of `spec.topic`, positioned by `spec.startFrom`
    /// (a checkpoint's offset replaces that through [`PartitionReader::seek`]).
    pub fn new(
        source_name: &str,
        spec: &KafkaSourceSpec,
        partition: u32,
    ) -> Result<Self, SourceError> {
        let err = |e: KafkaError| SourceError::Kafka {
            source_name: source_name.to_string(),
            message: e.to_string(),
        };
        let endpoint = Endpoint::new(
            format!("source '{source_name}'"),
            &spec.brokers,
            &spec.topic,
            &spec.properties,
            spec.security.as_deref(),
        )
        .map_err(err)?;
        let mut config = client_config(&endpoint, &spec.properties).map_err(err)?;
        // offsets live in checkpoints: never commit them to a group
        config.set("enable.auto.commit", "false");
        config.set("enable.auto.offset.store", "false");
        if config.get("auto.offset.reset").is_none() {
            // a checkpointed offset below the retained range resumes at the oldest record
            config.set("auto.offset.reset", "earliest");
        }
        if config.get("group.id").is_none() {
            // the group completed checkpoints' offsets are committed to (the job's plan sets
            // a per-job default; this one is for readers made without it)
            config.set("group.id", format!("weir-{source_name}"));
        }
        if config.get("statistics.interval.ms").is_none() {
            config.set("statistics.interval.ms", DEFAULT_STATISTICS_INTERVAL_MS);
        }
        let partition = i32::try_from(partition).map_err(|_| {
            err(endpoint.client_error(format!("partition {partition} out of range")))
        })?;
        let end = Arc::new(AtomicI64::new(-1));
        let context = SourceContext {
            owner: endpoint.owner.clone(),
            brokers: endpoint.brokers.clone(),
            topic: endpoint.topic.clone(),
            partition,
            end: end.clone(),
            last: LastClientError::default(),
            commit_failure_logged: std::sync::Mutex::new(None),
        };
        let last = context.last.clone();
        let consumer: BaseConsumer<SourceContext> = config
            .create_with_context(context)
            .map_err(|e| err(endpoint.client_error(e)))?;
        let (low, high) = super::retry_startup(&endpoint, "reading partition offsets", |t| {
            let w = consumer.fetch_watermarks(&endpoint.topic, partition, t);
            super::serve_events(&consumer);
            w.map_err(|e| format!("partition {partition}: {}", last.explain(e)))
        })
        .map_err(err)?;
        let next = match spec.start_from {
            StartFrom::Earliest => low,
            StartFrom::Latest => high,
        };
        Ok(KafkaPartitionReader {
            source_name: source_name.to_string(),
            endpoint,
            partition,
            consumer,
            end,
            checkpointed: VecDeque::new(),
            next,
            assigned: false,
            malformed: 0,
            dead_letters: vec![],
            errors_logged: 0,
            last_error_log: None,
        })
    }

    fn assign(&mut self) -> Result<(), SourceError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.endpoint.topic,
            self.partition,
            Offset::Offset(self.next),
        )
        .and_then(|_| self.consumer.assign(&tpl))
        .map_err(|e| SourceError::Kafka {
            source_name: self.source_name.clone(),
            message: format!(
                "{}: assigning partition {} of topic '{}' (brokers '{}') at offset {}: {e}",
                self.endpoint.owner,
                self.partition,
                self.endpoint.topic,
                self.endpoint.brokers,
                self.next
            ),
        })?;
        self.assigned = true;
        Ok(())
    }

    /// Logs a consumer error (at most every 10 s): librdkafka keeps reconnecting by itself,
    /// and the offset only moves with records read, so nothing is lost while it retries.
    fn log_error(&mut self, e: &rdkafka::error::KafkaError) {
        self.errors_logged += 1;
        let due = self
            .last_error_log
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10));
        if due {
            self.last_error_log = Some(Instant::now());
            tracing::warn!(
                "{}: reading partition {} of topic '{}' from brokers '{}' at offset {}: {e} ({} error(s) so far; retrying)",
                self.endpoint.owner,
                self.partition,
                self.endpoint.topic,
                self.endpoint.brokers,
                self.next,
                self.errors_logged
            );
        }
    }
}

impl PartitionReader for KafkaPartitionReader {
    fn read(
        &mut self,
        max: usize,
        out: &mut Vec<(Option<i64>, Value)>,
    ) -> Result<ReadStatus, SourceError> {
        if !self.assigned {
            self.assign()?;
        }
        let mut n = 0;
        while n < max {
            let msg = match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => {
                    self.log_error(&e);
                    break;
                }
                Some(Ok(m)) => m,
            };
            if msg.partition() != self.partition || msg.topic() != self.endpoint.topic {
                continue;
            }
            self.next = msg.offset() + 1;
            let Some(payload) = msg.payload() else {
                continue; // a tombstone
            };
            let parsed = std::str::from_utf8(payload)
                .map_err(|e| e.to_string())
                .and_then(|s| Value::from_json(s).map_err(|e| e.to_string()));
            match parsed {
                Ok(v) => {
                    out.push((None, v));
                    n += 1;
                }
                Err(e) => {
                    self.malformed += 1;
                    self.dead_letters.push(crate::source::dead_letter(
                        &format!("malformed JSON: {e}"),
                        payload,
                        self.partition as u32,
                        u64::try_from(msg.offset()).unwrap_or(0),
                    ));
                    if self.malformed <= 5 {
                        tracing::warn!(
                            source = %self.source_name,
                            topic = %self.endpoint.topic,
                            partition = self.partition,
                            offset = msg.offset(),
                            "skipping malformed JSON record: {e}"
                        );
                    }
                }
            }
        }
        Ok(if n > 0 {
            ReadStatus::Data
        } else {
            ReadStatus::Waiting
        })
    }

    fn offset(&self) -> u64 {
        u64::try_from(self.next).unwrap_or(0)
    }

    fn seek(&mut self, offset: u64) -> Result<(), SourceError> {
        self.next = i64::try_from(offset).unwrap_or(i64::MAX);
        self.assigned = false;
        self.checkpointed.clear();
        Ok(())
    }

    fn checkpointed(&mut self, id: u64) {
        self.checkpointed.push_back((id, self.next));
    }

    /// Commits the offset checkpoint `id` holds (asynchronously; a failure is logged by the
    /// context and the next completed checkpoint commits again).
    fn checkpoint_completed(&mut self, id: u64) {
        let mut offset = None;
        while self.checkpointed.front().is_some_and(|(c, _)| *c <= id) {
            offset = self.checkpointed.pop_front().map(|(_, o)| o);
        }
        let Some(offset) = offset else {
            return;
        };
        let mut tpl = TopicPartitionList::new();
        let added =
            tpl.add_partition_offset(&self.endpoint.topic, self.partition, Offset::Offset(offset));
        if let Err(e) = added.and_then(|_| self.consumer.commit(&tpl, CommitMode::Async)) {
            tracing::warn!(
                "{}: committing offset {offset} of partition {} of topic '{}' (checkpoint {id}) to the consumer group on brokers '{}': {e}",
                self.endpoint.owner,
                self.partition,
                self.endpoint.topic,
                self.endpoint.brokers
            );
        }
    }

    fn lag(&self) -> Option<u64> {
        let end = self.end.load(Ordering::Relaxed);
        (end >= 0).then(|| u64::try_from(end - self.next).unwrap_or(0))
    }

    fn event_time_follows_wall_clock(&self) -> bool {
        true
    }

    fn malformed(&self) -> u64 {
        self.malformed
    }

    fn take_dead_letters(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.dead_letters)
    }
}
