//! Kafka source: one reader per assigned partition. The partition is `assign`ed explicitly
//! (no consumer group, no rebalancing); the offset to resume from lives in the task's
//! checkpoint manifest ([`PartitionReader::offset`] / [`PartitionReader::seek`]), so group
//! offset commits are neither made nor relied on. Without a checkpoint the reader starts at
//! the partition's low watermark (`startFrom: earliest`) or high watermark (`latest`), resolved
//! once at start so that the first checkpoint already holds a concrete offset.
//!
//! Records are JSON values; event time is read from the source's `eventTime.field` by the
//! task, as for the other sources. Consumers read with `isolation.level=read_committed`
//! (librdkafka's default), so records of aborted or open transactions are never seen.

use super::{client_config, Endpoint, KafkaError};
use crate::source::{PartitionReader, ReadStatus, SourceError};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use weir_crds::pipeline::{KafkaSourceSpec, StartFrom};
use weir_expr::Value;

/// Reads one Kafka partition.
pub struct KafkaPartitionReader {
    source_name: String,
    endpoint: Endpoint,
    partition: i32,
    consumer: BaseConsumer,
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
            // required by librdkafka's consumer API even without group membership
            config.set("group.id", format!("weir-{source_name}"));
        }
        let consumer: BaseConsumer = config.create().map_err(|e| err(endpoint.client_error(e)))?;
        let partition = i32::try_from(partition).map_err(|_| {
            err(endpoint.client_error(format!("partition {partition} out of range")))
        })?;
        let (low, high) = super::retry_startup(&endpoint, "reading partition offsets", |t| {
            consumer
                .fetch_watermarks(&endpoint.topic, partition, t)
                .map_err(|e| format!("partition {partition}: {e}"))
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
        Ok(())
    }

    fn malformed(&self) -> u64 {
        self.malformed
    }

    fn take_dead_letters(&mut self) -> Vec<Value> {
        std::mem::take(&mut self.dead_letters)
    }
}
