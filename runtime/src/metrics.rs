//! Per-task Prometheus metrics, exposed as text on the admin port's `/metrics`.
//!
//! Every series has the labels `job` and `task` (the task index). The operator scrapes and
//! aggregates them; rates are computed from the counters.
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `weir_task_records_in_total` | counter | records read from sources |
//! | `weir_task_records_out_total` | counter | records written to sinks |
//! | `weir_task_dead_letters_total` | counter | records sent to an operator's `deadLetter` |
//! | `weir_task_malformed_records_total` | counter | source lines that were not JSON |
//! | `weir_task_busy_ms_total` | counter | ms spent processing (rate = busy ms per second) |
//! | `weir_task_idle_ms_total` | counter | ms spent waiting for input |
//! | `weir_task_backpressured_ms_total` | counter | ms spent blocked writing to sinks |
//! | `weir_task_watermark_ms` | gauge | task watermark, epoch ms |
//! | `weir_task_input_delay_ms` | gauge | processing-time delay behind the input's head, ms: a rate-limited generator's delay behind its schedule (0 for an unbounded one), a Kafka task's 0 when caught up else the event-time lag; absent for file replays (see `task::input_lag`) |
//! | `weir_task_event_time_lag_ms` | gauge | wall clock − watermark, ms; only for tasks whose every input's event time follows the wall clock (Kafka), absent for generators and file replays (synthetic or historical event time) |
//! | `weir_task_latency_seconds` | histogram | source read → sink write, seconds |
//! | `weir_task_checkpoint_duration_seconds` | gauge | duration of the last completed checkpoint |
//! | `weir_task_checkpoint_size_bytes` | gauge | bytes the task's last checkpoint references |
//! | `weir_task_checkpoint_uploaded_bytes` | gauge | bytes uploaded by the last checkpoint (incremental) |
//! | `weir_task_checkpoint_failures_total` | counter | failed checkpoints |
//! | `weir_task_last_checkpoint_id` | gauge | id of the last completed checkpoint |
//! | `weir_task_last_checkpoint_completed_timestamp_seconds` | gauge | when it completed, epoch s |
//! | `weir_task_restarts_total` | counter | task starts that restored from a checkpoint |
//! | `weir_task_kafka_lag_records` | gauge | the largest lag of the task's Kafka partitions, records |
//! | `weir_source_kafka_lag_records` | gauge | per Kafka partition read (labels `source`, `partition` too): records between the task's position and the partition's end (last stable offset) |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

/// The labels of every task series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    /// Job name.
    pub job: String,
    /// Task index.
    pub task: String,
}

/// The labels of a source partition's series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourcePartitionLabels {
    /// Job name.
    pub job: String,
    /// Task index.
    pub task: String,
    /// Source name.
    pub source: String,
    /// Partition.
    pub partition: String,
}

type FGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// All metric families, registered once per process.
pub struct Metrics {
    registry: Registry,
    records_in: Family<TaskLabels, Counter>,
    records_out: Family<TaskLabels, Counter>,
    dead_letters: Family<TaskLabels, Counter>,
    malformed: Family<TaskLabels, Counter>,
    busy_ms: Family<TaskLabels, Counter>,
    idle_ms: Family<TaskLabels, Counter>,
    backpressured_ms: Family<TaskLabels, Counter>,
    watermark: Family<TaskLabels, Gauge>,
    lag: Family<TaskLabels, Gauge>,
    input_delay: Family<TaskLabels, Gauge>,
    latency: Family<TaskLabels, Histogram>,
    ckpt_duration: Family<TaskLabels, FGauge>,
    ckpt_size: Family<TaskLabels, Gauge>,
    ckpt_uploaded: Family<TaskLabels, Gauge>,
    ckpt_failures: Family<TaskLabels, Counter>,
    ckpt_last_id: Family<TaskLabels, Gauge>,
    ckpt_last_ts: Family<TaskLabels, FGauge>,
    restarts: Family<TaskLabels, Counter>,
    kafka_lag: Family<TaskLabels, Gauge>,
    source_lag: Family<SourcePartitionLabels, Gauge>,
}

/// One task's metric handles (cheap clones of shared atomics).
#[derive(Clone)]
pub struct TaskMetrics {
    /// Records read.
    pub records_in: Counter,
    /// Records written to sinks.
    pub records_out: Counter,
    /// Dead letters.
    pub dead_letters: Counter,
    /// Malformed source records.
    pub malformed: Counter,
    /// Busy ms.
    pub busy_ms: Counter,
    /// Idle ms.
    pub idle_ms: Counter,
    /// Backpressured ms.
    pub backpressured_ms: Counter,
    /// Watermark.
    pub watermark: Gauge,
    /// End-to-end latency.
    pub latency: Histogram,
    /// Last checkpoint duration.
    pub ckpt_duration: FGauge,
    /// Last checkpoint size.
    pub ckpt_size: Gauge,
    /// Last checkpoint upload size.
    pub ckpt_uploaded: Gauge,
    /// Checkpoint failures.
    pub ckpt_failures: Counter,
    /// Last checkpoint id.
    pub ckpt_last_id: Gauge,
    /// Last checkpoint completion time.
    pub ckpt_last_ts: FGauge,
    /// Restores.
    pub restarts: Counter,
    lag: Family<TaskLabels, Gauge>,
    input_delay: Family<TaskLabels, Gauge>,
    kafka_lag: Family<TaskLabels, Gauge>,
    source_lag: Family<SourcePartitionLabels, Gauge>,
    labels: TaskLabels,
}

/// Sets `family`'s series of `labels` to `value`, or removes it (`None`).
fn set_or_remove(family: &Family<TaskLabels, Gauge>, labels: &TaskLabels, value: Option<i64>) {
    match value {
        Some(v) => {
            family.get_or_create(labels).set(v);
        }
        None => {
            family.remove(labels);
        }
    }
}

impl TaskMetrics {
    /// Sets the event-time lag (ms), or removes the series when the task's event time does not
    /// follow the wall clock.
    pub fn set_event_time_lag(&self, lag_ms: Option<i64>) {
        set_or_remove(&self.lag, &self.labels, lag_ms);
    }

    /// Sets the input delay (ms), or removes the series when no input knows its delay.
    pub fn set_input_delay(&self, delay_ms: Option<i64>) {
        set_or_remove(&self.input_delay, &self.labels, delay_ms);
    }

    /// The exported event-time lag, input delay and Kafka lag (for the progress line).
    pub fn lags(&self) -> (Option<i64>, Option<i64>, Option<i64>) {
        let get = |f: &Family<TaskLabels, Gauge>| f.get(&self.labels).map(|g| g.get());
        (get(&self.lag), get(&self.input_delay), get(&self.kafka_lag))
    }

    /// Sets the largest lag of the task's Kafka partitions (records). The series exists only
    /// once set, so jobs without Kafka sources have none.
    pub fn set_kafka_lag(&self, lag: u64) {
        self.kafka_lag
            .get_or_create(&self.labels)
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }

    /// Sets the lag (records) of partition `partition` of source `source`.
    pub fn set_source_lag(&self, source: &str, partition: u32, lag: u64) {
        let l = SourcePartitionLabels {
            job: self.labels.job.clone(),
            task: self.labels.task.clone(),
            source: source.to_string(),
            partition: partition.to_string(),
        };
        self.source_lag
            .get_or_create(&l)
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            records_in: Family::default(),
            records_out: Family::default(),
            dead_letters: Family::default(),
            malformed: Family::default(),
            busy_ms: Family::default(),
            idle_ms: Family::default(),
            backpressured_ms: Family::default(),
            watermark: Family::default(),
            lag: Family::default(),
            input_delay: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            ckpt_duration: Family::default(),
            ckpt_size: Family::default(),
            ckpt_uploaded: Family::default(),
            ckpt_failures: Family::default(),
            ckpt_last_id: Family::default(),
            ckpt_last_ts: Family::default(),
            restarts: Family::default(),
            kafka_lag: Family::default(),
            source_lag: Family::default(),
        };
        registry.register(
            "weir_task_records_in",
            "Records read from sources",
            m.records_in.clone(),
        );
        registry.register(
            "weir_task_records_out",
            "Records written to sinks",
            m.records_out.clone(),
        );
        registry.register(
            "weir_task_dead_letters",
            "Records sent to a deadLetter side output",
            m.dead_letters.clone(),
        );
        registry.register(
            "weir_task_malformed_records",
            "Source records that could not be parsed",
            m.malformed.clone(),
        );
        registry.register(
            "weir_task_busy_ms",
            "Milliseconds spent processing",
            m.busy_ms.clone(),
        );
        registry.register(
            "weir_task_idle_ms",
            "Milliseconds spent waiting for input",
            m.idle_ms.clone(),
        );
        registry.register(
            "weir_task_backpressured_ms",
            "Milliseconds spent blocked on sinks",
            m.backpressured_ms.clone(),
        );
        registry.register(
            "weir_task_watermark_ms",
            "Task watermark, epoch ms",
            m.watermark.clone(),
        );
        registry.register(
            "weir_task_event_time_lag_ms",
            "Wall clock minus watermark, ms; only for tasks whose inputs' event time follows the wall clock (Kafka), not for generators or file replays",
            m.lag.clone(),
        );
        registry.register(
            "weir_task_input_delay_ms",
            "Processing-time delay behind the input's head, ms: a rate-limited generator's delay behind its schedule, a Kafka task's 0 when caught up else its event-time lag; absent for file replays",
            m.input_delay.clone(),
        );
        registry.register(
            "weir_task_latency_seconds",
            "End-to-end latency from source read to sink write",
            m.latency.clone(),
        );
        registry.register(
            "weir_task_checkpoint_duration_seconds",
            "Duration of the last completed checkpoint",
            m.ckpt_duration.clone(),
        );
        registry.register(
            "weir_task_checkpoint_size_bytes",
            "Bytes referenced by the task's last checkpoint",
            m.ckpt_size.clone(),
        );
        registry.register(
            "weir_task_checkpoint_uploaded_bytes",
            "Bytes uploaded by the task's last checkpoint",
            m.ckpt_uploaded.clone(),
        );
        registry.register(
            "weir_task_checkpoint_failures",
            "Failed checkpoints",
            m.ckpt_failures.clone(),
        );
        registry.register(
            "weir_task_last_checkpoint_id",
            "Id of the last completed checkpoint",
            m.ckpt_last_id.clone(),
        );
        registry.register(
            "weir_task_last_checkpoint_completed_timestamp_seconds",
            "Completion time of the last checkpoint, epoch seconds",
            m.ckpt_last_ts.clone(),
        );
        registry.register(
            "weir_task_restarts",
            "Task starts that restored from a checkpoint",
            m.restarts.clone(),
        );
        registry.register(
            "weir_task_kafka_lag_records",
            "Largest lag of the task's Kafka partitions, records",
            m.kafka_lag.clone(),
        );
        registry.register(
            "weir_source_kafka_lag_records",
            "Records between the task's position in a Kafka partition and the partition's end",
            m.source_lag.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The handles of one task.
    pub fn task(&self, job: &str, task: u32) -> TaskMetrics {
        let l = TaskLabels {
            job: job.to_string(),
            task: task.to_string(),
        };
        TaskMetrics {
            records_in: self.records_in.get_or_create(&l).clone(),
            records_out: self.records_out.get_or_create(&l).clone(),
            dead_letters: self.dead_letters.get_or_create(&l).clone(),
            malformed: self.malformed.get_or_create(&l).clone(),
            busy_ms: self.busy_ms.get_or_create(&l).clone(),
            idle_ms: self.idle_ms.get_or_create(&l).clone(),
            backpressured_ms: self.backpressured_ms.get_or_create(&l).clone(),
            watermark: self.watermark.get_or_create(&l).clone(),
            latency: self.latency.get_or_create(&l).clone(),
            ckpt_duration: self.ckpt_duration.get_or_create(&l).clone(),
            ckpt_size: self.ckpt_size.get_or_create(&l).clone(),
            ckpt_uploaded: self.ckpt_uploaded.get_or_create(&l).clone(),
            ckpt_failures: self.ckpt_failures.get_or_create(&l).clone(),
            ckpt_last_id: self.ckpt_last_id.get_or_create(&l).clone(),
            ckpt_last_ts: self.ckpt_last_ts.get_or_create(&l).clone(),
            restarts: self.restarts.get_or_create(&l).clone(),
            lag: self.lag.clone(),
            input_delay: self.input_delay.clone(),
            kafka_lag: self.kafka_lag.clone(),
            source_lag: self.source_lag.clone(),
            labels: l,
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

/// Shared metrics.
pub type SharedMetrics = Arc<Metrics>;
