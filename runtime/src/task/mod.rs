//! One task: a partition of every source, the operator chain and the sinks, run on one thread
//! with its own RocksDB. Checkpoint barriers are handled between batches, so snapshots are
//! aligned by construction.
//!
//! Built here ([`Task::new`]: state, operators, connectors, restored positions) from the pure
//! [`graph`] wiring and the [`connectors`] factory; records flow through it in `dataflow`, and
//! `run_loop` is the thread's loop of reading, commands and idling.

pub mod connectors;
mod dataflow;
mod exchange_io;
pub mod graph;
pub mod input_lag;
mod run_loop;

use crate::checkpoint::{SourcePosition, TaskManifest};
use crate::metrics::TaskMetrics;
use crate::operator::{self, OperatorError};
use crate::plan::JobPlan;
use crate::record::{now_ms, Record};
use crate::sink::{Sink, SinkError};
use crate::source::{PartitionReader, SourceError};
use crate::state::{operator_cf, StateError, StateHandle, StateStore};
use crate::time::{PartitionWatermark, TimerService};
use graph::Consumer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use weir_crds::validate::SpecError;
use weir_expr::Value;

/// Records read from one partition per batch.
const BATCH: usize = 1024;
/// Longest single wait for a rate-limited sink before the task checks its commands again.
const SINK_BACKOFF_SLICE: Duration = Duration::from_millis(100);

/// A task failure.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// State access failed.
    #[error("task {task}: {source}")]
    State {
        /// Task index.
        task: u32,
        /// The state error.
        source: StateError,
    },
    /// An operator failed.
    #[error("task {task}: {source}")]
    Operator {
        /// Task index.
        task: u32,
        /// The operator error.
        source: OperatorError,
    },
    /// A source failed.
    #[error("task {task}: {source}")]
    Source {
        /// Task index.
        task: u32,
        /// The source error.
        source: SourceError,
    },
    /// A sink failed.
    #[error("task {task}: {source}")]
    Sink {
        /// Task index.
        task: u32,
        /// The sink error.
        source: SinkError,
    },
    /// The graph could not be built (should have been caught at plan time).
    #[error("task {task}: {message}")]
    Build {
        /// Task index.
        task: u32,
        /// What failed.
        message: String,
    },
    /// Restored state does not map onto the graph.
    #[error("task {task}: restored state has column families {orphans:?} that no operator of this job owns (an operator was removed or renamed); set spec.restore.allowNonRestoredState: true to drop that state")]
    NonRestoredState {
        /// Task index.
        task: u32,
        /// The column families.
        orphans: Vec<String>,
    },
}

/// A command from the coordinator.
#[derive(Debug)]
pub enum TaskCommand {
    /// Take checkpoint `id` now.
    Checkpoint(u64),
    /// Checkpoint `id` completed: commit sinks.
    Commit(u64),
    /// Stop reading input (after a final checkpoint) but keep handling commands.
    Pause,
    /// Stop after the current batch.
    Stop,
}

/// A report to the coordinator.
#[derive(Debug)]
pub enum TaskEvent {
    /// The task took its snapshot for a checkpoint; `dir` holds the RocksDB checkpoint.
    Snapshot {
        /// Task index.
        task: u32,
        /// Local checkpoint directory.
        dir: PathBuf,
        /// The manifest without files.
        manifest: TaskManifest,
    },
    /// A snapshot failed.
    SnapshotFailed {
        /// Task index.
        task: u32,
        /// Checkpoint id.
        id: u64,
        /// Why.
        error: String,
    },
    /// All inputs are exhausted and every window flushed.
    Finished {
        /// Task index.
        task: u32,
    },
    /// The task failed and stopped.
    Failed {
        /// Task index.
        task: u32,
        /// Why.
        error: String,
    },
}

/// What a task starts from.
pub struct TaskStart {
    /// Task index.
    pub task: u32,
    /// The task's local directory (`db/` and `local-checkpoints/` inside).
    pub dir: PathBuf,
    /// The checkpoint restored, with its manifest; the database is already in `dir/db`.
    pub restored: Option<TaskManifest>,
    /// The id the next checkpoint will have (file sinks name pending files with it).
    pub next_checkpoint_id: u64,
    /// Drop state of operators no longer in the graph instead of failing.
    pub allow_non_restored_state: bool,
    /// This task's end of the pod's keyed exchanges, if the plan has any.
    pub exchange: Option<crate::exchange::TaskChannels>,
}

struct Input {
    source: String,
    partition: u32,
    reader: Box<dyn PartitionReader>,
    wm: PartitionWatermark,
    time_field: Option<String>,
    stream: usize,
    /// The stage its records enter (see `graph::Wiring::source_stages`).
    stage: usize,
    /// The `<source>.deadLetter` stream.
    dead_letter_stream: usize,
    malformed_reported: u64,
    /// The reader's lag last exported as a metric.
    lag_reported: Option<u64>,
}

struct OpSlot {
    op: Box<dyn operator::Operator>,
    timers: TimerService,
    handle: StateHandle,
    ports: Vec<usize>,
    side_outputs: &'static [&'static str],
    dead_letters: u64,
    /// The watermark this operator has been told about. It trails the task watermark while
    /// an advance walks the chain, so records that an upstream operator emits for watermark W
    /// reach this operator before W does and are not late here (Flink's ordering).
    watermark: i64,
}

/// A running task.
pub struct Task {
    id: u32,
    job: String,
    dir: PathBuf,
    store: StateStore,
    cf_names: Vec<String>,
    inputs: Vec<Input>,
    ops: Vec<OpSlot>,
    sinks: Vec<Box<dyn Sink>>,
    /// `sinks[k]`'s name.
    sink_names: Vec<String>,
    consumers: Vec<Vec<Consumer>>,
    watermark: i64,
    now: i64,
    out_buf: Vec<(usize, Record)>,
    stack: Vec<(usize, Record)>,
    read_buf: Vec<(Option<i64>, Value)>,
    metrics: TaskMetrics,
    pending_out: u64,
    dead_reported: u64,
    finished: bool,
    busy_us: u128,
    idle_us: u128,
    /// Records read per input per round (smaller than `BATCH` behind a rate-limited sink).
    read_batch: usize,
    paused: bool,
    /// Per operator, its stage (see `graph::Wiring::op_stages`).
    op_stages: Vec<usize>,
    /// Per stage, the watermark its repartition readers' announcements gave it (stages
    /// without such readers stay at `i64::MIN`).
    stage_watermarks: Vec<i64>,
    /// Whether some input is a repartition topic whose writers announce its watermark.
    announced_inputs: bool,
    /// The keyed exchanges, if the plan has any.
    exchange: Option<exchange_io::TaskExchange>,
}

impl Task {
    /// Builds task `start.task` of `plan`: opens its state, positions its sources and restores sinks.
    pub fn new(plan: &JobPlan, start: TaskStart, metrics: TaskMetrics) -> Result<Task, TaskError> {
        let id = start.task;
        let build = |m: String| TaskError::Build {
            task: id,
            message: m,
        };
        let spec_errs = |es: Vec<SpecError>| {
            build(
                es.iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        };
        let cf_names: Vec<String> = plan
            .operators
            .iter()
            .map(|o| operator_cf(&o.spec.name))
            .collect();
        std::fs::create_dir_all(&start.dir)
            .map_err(|e| build(format!("creating {}: {e}", start.dir.display())))?;
        let (store, orphans) = StateStore::open(&start.dir.join("db"), &cf_names)
            .map_err(|source| TaskError::State { task: id, source })?;
        if !orphans.is_empty() && !start.allow_non_restored_state {
            return Err(TaskError::NonRestoredState { task: id, orphans });
        }

        let wiring = graph::wire(plan).map_err(build)?;
        let mut ops = vec![];
        for (o, ports) in plan.operators.iter().zip(&wiring.op_ports) {
            let op = operator::build(&o.field, &o.spec).map_err(spec_errs)?;
            let handle = store.handle(&operator_cf(&o.spec.name));
            let timers = TimerService::load(&handle)
                .map_err(|source| TaskError::State { task: id, source })?;
            ops.push(OpSlot {
                op,
                timers,
                handle,
                ports: ports.clone(),
                side_outputs: o.spec.side_outputs(),
                dead_letters: 0,
                watermark: i64::MIN,
            });
        }
        let mut sinks: Vec<Box<dyn Sink>> = vec![];
        for s in &plan.pipeline.sinks {
            let mut sink = connectors::open_sink(plan, s, id, start.next_checkpoint_id)
                .map_err(|source| TaskError::Sink { task: id, source })?;
            let restored = start.restored.as_ref();
            sink.on_restore(
                restored.map(|m| m.checkpoint_id),
                restored.and_then(|m| m.sinks.get(&s.name)),
            )
            .map_err(|source| TaskError::Sink { task: id, source })?;
            sinks.push(crate::sink::throttle::limit(sink, s.max_records_per_second));
        }

        let now = now_ms();
        let mut inputs = vec![];
        for (si, src) in plan.sources.iter().enumerate() {
            if id >= src.partitions {
                continue;
            }
            let reader = connectors::open_reader(src, id)
                .map_err(|source| TaskError::Source { task: id, source })?;
            let wm = if src.name.ends_with(operator::repartition::READ_SUFFIX) {
                // every task of the job writes the topic and announces its watermark
                PartitionWatermark::announced_by(plan.tasks, now)
            } else {
                PartitionWatermark::new(src.out_of_orderness_ms, src.idle_timeout_ms, now)
            };
            inputs.push(Input {
                source: src.name.clone(),
                partition: id,
                reader,
                wm,
                time_field: src.time_field.clone(),
                stream: si,
                stage: wiring.source_stages[si],
                dead_letter_stream: wiring.source_dead_letters[si],
                malformed_reported: 0,
                lag_reported: None,
            });
        }
        // a source whose consumers read only some fields builds only those (and its time field)
        let needs =
            wiring.field_needs(|op, input, outputs| ops[op].op.fields_needed(input, outputs));
        for inp in inputs.iter_mut() {
            if let Some(mut fields) = needs[inp.stream].clone() {
                if let Some(t) = inp.time_field.as_deref() {
                    if !fields.iter().any(|f| &**f == t) {
                        fields.push(Arc::from(t));
                    }
                }
                inp.reader.keep_fields(fields);
            }
        }
        let mut watermark = i64::MIN;
        if let Some(m) = &start.restored {
            watermark = m.watermark;
            for pos in &m.sources {
                if let Some(inp) = inputs
                    .iter_mut()
                    .find(|i| i.source == pos.source && i.partition == pos.partition)
                {
                    inp.reader
                        .seek(pos.offset)
                        .map_err(|source| TaskError::Source { task: id, source })?;
                    inp.wm.max_ts = pos.watermark.max_ts;
                    inp.wm.exhausted = false;
                    inp.wm.restore_announced(pos.watermark.announced.clone());
                    inp.wm.last_active_ms = now;
                }
            }
            metrics.restarts.inc();
        }
        let exchange = match (wiring.exchanges.is_empty(), start.exchange) {
            (true, _) => None,
            (false, Some(channels)) => Some(
                exchange_io::TaskExchange::new(
                    wiring.exchanges.clone(),
                    channels,
                    id,
                    plan.key_groups,
                )
                .map_err(build)?,
            ),
            (false, None) => {
                return Err(build(
                    "the plan has keyed exchanges but the task got no exchange channels".into(),
                ))
            }
        };
        let stages = 1 + wiring
            .op_stages
            .iter()
            .chain(&wiring.source_stages)
            .copied()
            .max()
            .unwrap_or(0);
        let announced_inputs = inputs.iter().any(|i| i.wm.writers > 0);
        let mut task = Task {
            id,
            job: plan.job.clone(),
            dir: start.dir,
            store,
            cf_names,
            sink_names: plan.pipeline.sinks.iter().map(|s| s.name.clone()).collect(),
            inputs,
            ops,
            sinks,
            consumers: wiring.consumers,
            watermark,
            now,
            out_buf: Vec::with_capacity(64),
            stack: Vec::with_capacity(64),
            read_buf: Vec::with_capacity(BATCH),
            metrics,
            pending_out: 0,
            dead_reported: 0,
            finished: false,
            busy_us: 0,
            read_batch: crate::sink::throttle::read_batch(
                plan.pipeline.sinks.iter().map(|s| s.max_records_per_second),
                BATCH,
            ),
            idle_us: 0,
            paused: false,
            op_stages: wiring.op_stages.clone(),
            stage_watermarks: vec![i64::MIN; stages],
            announced_inputs,
            exchange,
        };
        for (slot, stage) in task.ops.iter_mut().zip(&wiring.op_stages) {
            // behind an exchange the watermark comes from the senders again after a restore
            slot.watermark = if *stage == 0 { watermark } else { i64::MIN };
            slot.op
                .on_start(&slot.handle)
                .map_err(|source| TaskError::Operator { task: id, source })?;
        }
        Ok(task)
    }

    pub(super) fn op_err(&self) -> impl Fn(OperatorError) -> TaskError {
        let task = self.id;
        move |source| TaskError::Operator { task, source }
    }

    pub(super) fn sink_err(&self) -> impl Fn(SinkError) -> TaskError {
        let task = self.id;
        move |source| TaskError::Sink { task, source }
    }

    /// Takes this task's part of checkpoint `id`.
    pub(super) fn snapshot(&mut self, id: u64) -> Result<(PathBuf, TaskManifest), TaskError> {
        for slot in self.ops.iter_mut() {
            let task = self.id;
            slot.op
                .snapshot(id)
                .map_err(|source| TaskError::Operator { task, source })?;
            slot.timers
                .flush(&slot.handle)
                .map_err(|source| TaskError::State { task, source })?;
        }
        self.flush_sinks()?;
        for i in self.inputs.iter_mut() {
            i.reader.checkpointed(id);
        }
        for s in self.sinks.iter_mut() {
            let task = self.id;
            s.prepare(id)
                .map_err(|source| TaskError::Sink { task, source })?;
        }
        let dir = self.dir.join("local-checkpoints").join(format!("chk-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        if let Some(parent) = dir.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        self.store
            .checkpoint_to(&dir)
            .map_err(|source| TaskError::State {
                task: self.id,
                source,
            })?;
        let manifest = TaskManifest {
            checkpoint_id: id,
            task: self.id,
            job: self.job.clone(),
            created_at: chrono::Utc::now(),
            sources: self
                .inputs
                .iter()
                .map(|i| SourcePosition {
                    source: i.source.clone(),
                    partition: i.partition,
                    offset: i.reader.offset(),
                    watermark: i.wm.clone(),
                })
                .collect(),
            watermark: self.watermark,
            finished: self.finished,
            files: vec![],
            operators: self.cf_names.clone(),
            sinks: self
                .sink_names
                .iter()
                .zip(&self.sinks)
                .filter_map(|(name, s)| Some((name.clone(), s.position()?)))
                .collect(),
        };
        Ok((dir, manifest))
    }

    pub(super) fn commit(&mut self, id: u64) -> Result<(), TaskError> {
        for s in self.sinks.iter_mut() {
            let task = self.id;
            s.commit(id)
                .map_err(|source| TaskError::Sink { task, source })?;
        }
        for i in self.inputs.iter_mut() {
            i.reader.checkpoint_completed(id);
        }
        for slot in self.ops.iter_mut() {
            let task = self.id;
            slot.op
                .on_commit(id)
                .map_err(|source| TaskError::Operator { task, source })?;
        }
        Ok(())
    }

    /// The task's current watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }
}
