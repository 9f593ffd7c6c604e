//! One task: a partition of every source, the operator chain and the sinks, run on one thread
//! with its own RocksDB. Checkpoint barriers are handled between batches, so snapshots are
//! aligned by construction.

use crate::checkpoint::{SourcePosition, TaskManifest};
use crate::metrics::TaskMetrics;
use crate::operator::{self, Context, OperatorError};
use crate::plan::{JobPlan, SourceKind};
use crate::record::{now_ms, Record};
use crate::sink::file::FileSink;
use crate::sink::stdout::StdoutSink;
use crate::sink::{Sink, SinkError};
use crate::source::file::FileReader;
use crate::source::generator::GeneratorReader;
use crate::source::{PartitionReader, ReadStatus, SourceError};
use crate::state::{operator_cf, StateError, StateHandle, StateStore};
use crate::time::{task_watermark, PartitionWatermark, TimeDomain, TimerService};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_crds::pipeline::SOURCE_DEAD_LETTER;
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
}

struct Input {
    source: String,
    partition: u32,
    reader: Box<dyn PartitionReader>,
    wm: PartitionWatermark,
    time_field: Option<String>,
    stream: usize,
    /// The `<source>.deadLetter` stream.
    dead_letter_stream: usize,
    malformed_reported: u64,
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

#[derive(Clone, Copy)]
enum Consumer {
    Op { op: usize, input: usize },
    Sink(usize),
}

/// Per stream, the top-level fields its consumers need of its records (`None`: whole
/// records): the union over its consumers, a sink needing whole records and an operator what
/// [`operator::Operator::fields_needed`] says given what its own outputs' consumers need.
/// Computed to a fixed point from "nothing" (needs only grow), so it does not depend on the
/// order of the operators.
fn stream_field_needs(ops: &[OpSlot], consumers: &[Vec<Consumer>]) -> Vec<Option<Vec<Arc<str>>>> {
    let mut needs: Vec<Option<Vec<Arc<str>>>> = vec![Some(vec![]); consumers.len()];
    loop {
        let mut changed = false;
        for s in 0..consumers.len() {
            let mut need = Some(vec![]);
            for c in &consumers[s] {
                let n = match *c {
                    Consumer::Sink(_) => None,
                    Consumer::Op { op, input } => {
                        let slot = &ops[op];
                        let outputs = operator::FieldNeeds {
                            side_outputs: slot.side_outputs,
                            outputs: slot.ports.iter().map(|p| needs[*p].clone()).collect(),
                        };
                        slot.op.fields_needed(input, &outputs)
                    }
                };
                need = operator::union_fields(need, n.as_deref());
            }
            if need != needs[s] {
                needs[s] = need;
                changed = true;
            }
        }
        if !changed {
            return needs;
        }
    }
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

        // streams: sources, then per operator its main output and side outputs
        let mut streams: Vec<String> = plan.sources.iter().map(|s| s.name.clone()).collect();
        let mut ops = vec![];
        for o in &plan.operators {
            let op = operator::build(&o.field, &o.spec).map_err(spec_errs)?;
            let side_outputs = o.spec.side_outputs();
            let mut ports = vec![streams.len()];
            streams.push(o.spec.name.clone());
            for s in side_outputs {
                ports.push(streams.len());
                streams.push(format!("{}.{s}", o.spec.name));
            }
            let handle = store.handle(&operator_cf(&o.spec.name));
            let timers = TimerService::load(&handle)
                .map_err(|source| TaskError::State { task: id, source })?;
            ops.push(OpSlot {
                op,
                timers,
                handle,
                ports,
                side_outputs,
                dead_letters: 0,
                watermark: i64::MIN,
            });
        }
        // per source, its dead letters (malformed records): `<source>.deadLetter`
        let mut dead_letter_streams = vec![];
        for src in &plan.sources {
            dead_letter_streams.push(streams.len());
            streams.push(format!("{}.{SOURCE_DEAD_LETTER}", src.name));
        }
        let stream_of = |name: &str| streams.iter().position(|s| s == name);
        let mut consumers: Vec<Vec<Consumer>> = vec![vec![]; streams.len()];
        for (i, o) in plan.operators.iter().enumerate() {
            for (input, name) in o.spec.all_inputs().iter().enumerate() {
                let s = stream_of(name).ok_or_else(|| build(format!("unknown input '{name}'")))?;
                consumers[s].push(Consumer::Op { op: i, input });
            }
        }
        let mut sinks: Vec<Box<dyn Sink>> = vec![];
        for (k, s) in plan.pipeline.sinks.iter().enumerate() {
            let stream = stream_of(&s.input)
                .ok_or_else(|| build(format!("unknown sink input '{}'", s.input)))?;
            consumers[stream].push(Consumer::Sink(k));
            let mut sink: Box<dyn Sink> = if let Some(f) = &s.file {
                Box::new(FileSink::new(
                    &s.name,
                    Path::new(&f.path),
                    id,
                    start.next_checkpoint_id,
                ))
            } else if let Some(k) = &s.kafka {
                let info = crate::kafka::sink::SinkTaskInfo {
                    namespace: plan.namespace.clone(),
                    job: plan.job.clone(),
                    task: id,
                };
                Box::new(
                    crate::kafka::sink::KafkaSink::new(&s.name, k, &info)
                        .map_err(|source| TaskError::Sink { task: id, source })?,
                )
            } else {
                Box::new(StdoutSink::new(&s.name))
            };
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
            let reader: Box<dyn PartitionReader> = match &src.kind {
                SourceKind::File { files, follow } => {
                    let path = files.get(id as usize).cloned().unwrap_or_default();
                    Box::new(FileReader::new(&src.name, id, path, *follow))
                }
                SourceKind::Generator(g) => Box::new(
                    GeneratorReader::new(&src.name, g, id, src.partitions)
                        .map_err(|source| TaskError::Source { task: id, source })?,
                ),
                SourceKind::Kafka(k) => Box::new(
                    crate::kafka::source::KafkaPartitionReader::new(&src.name, k, id)
                        .map_err(|source| TaskError::Source { task: id, source })?,
                ),
            };
            inputs.push(Input {
                source: src.name.clone(),
                partition: id,
                reader,
                wm: PartitionWatermark::new(src.out_of_orderness_ms, src.idle_timeout_ms, now),
                time_field: src.time_field.clone(),
                stream: si,
                dead_letter_stream: dead_letter_streams[si],
                malformed_reported: 0,
            });
        }
        // a source whose consumers read only some fields builds only those (and its time field)
        let needs = stream_field_needs(&ops, &consumers);
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
                    inp.wm.last_active_ms = now;
                }
            }
            metrics.restarts.inc();
        }
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
            consumers,
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
        };
        for slot in task.ops.iter_mut() {
            slot.watermark = watermark;
            slot.op
                .on_start(&slot.handle)
                .map_err(|source| TaskError::Operator { task: id, source })?;
        }
        Ok(task)
    }

    fn op_err(&self) -> impl Fn(OperatorError) -> TaskError {
        let task = self.id;
        move |source| TaskError::Operator { task, source }
    }

    fn sink_err(&self) -> impl Fn(SinkError) -> TaskError {
        let task = self.id;
        move |source| TaskError::Sink { task, source }
    }

    /// Pushes `rec` on `stream` through every consumer, depth first.
    fn dispatch(&mut self, stream: usize, rec: Record) -> Result<(), TaskError> {
        let mut stack = std::mem::take(&mut self.stack);
        stack.push((stream, rec));
        let res = self.drain(&mut stack);
        stack.clear();
        self.stack = stack;
        res
    }

    fn drain(&mut self, stack: &mut Vec<(usize, Record)>) -> Result<(), TaskError> {
        while let Some((s, rec)) = stack.pop() {
            let n = self.consumers[s].len();
            let mut rec = Some(rec);
            for ci in 0..n {
                let c = self.consumers[s][ci];
                let r = if ci + 1 == n { rec.take() } else { rec.clone() };
                let Some(r) = r else { continue };
                match c {
                    Consumer::Op { op, input } => {
                        let slot = &mut self.ops[op];
                        let mut ctx = Context::new(
                            slot.watermark,
                            self.now,
                            slot.side_outputs,
                            &mut self.out_buf,
                            &mut slot.timers,
                            &mut slot.dead_letters,
                        );
                        let task = self.id;
                        slot.op
                            .process(input, r, &mut ctx)
                            .map_err(|source| TaskError::Operator { task, source })?;
                        for (port, out) in self.out_buf.drain(..).rev() {
                            stack.push((slot.ports[port], out));
                        }
                    }
                    Consumer::Sink(k) => {
                        self.sinks[k].write(&r).map_err(self.sink_err())?;
                        self.pending_out += 1;
                        let lat = (self.now - r.ingest_ms).max(0) as f64 / 1000.0;
                        self.metrics.latency.observe(lat);
                    }
                }
            }
        }
        Ok(())
    }

    /// Calls a hook of operator `idx` and dispatches what it emitted.
    fn call_op(
        &mut self,
        idx: usize,
        f: impl FnOnce(&mut dyn operator::Operator, &mut Context<'_>) -> operator::OpResult,
    ) -> Result<(), TaskError> {
        let slot = &mut self.ops[idx];
        let mut ctx = Context::new(
            slot.watermark,
            self.now,
            slot.side_outputs,
            &mut self.out_buf,
            &mut slot.timers,
            &mut slot.dead_letters,
        );
        f(slot.op.as_mut(), &mut ctx).map_err(self.op_err())?;
        let outs: Vec<(usize, Record)> = self
            .out_buf
            .drain(..)
            .map(|(p, r)| (self.ops[idx].ports[p], r))
            .collect();
        for (s, r) in outs {
            self.dispatch(s, r)?;
        }
        Ok(())
    }

    fn advance_watermark(&mut self, wm: i64) -> Result<(), TaskError> {
        if wm <= self.watermark {
            return Ok(());
        }
        self.watermark = wm;
        // Operators are in topological order: each one sees the new watermark only after
        // everything its upstream operators emitted for it has been processed.
        for idx in 0..self.ops.len() {
            self.ops[idx].watermark = wm;
            self.call_op(idx, |op, ctx| op.on_watermark(ctx))?;
            while self.ops[idx].op.watermark_work_left(wm) {
                self.call_op(idx, |op, ctx| op.on_watermark(ctx))?;
            }
            while let Some(t) = self.ops[idx].timers.pop_due(TimeDomain::EventTime, wm) {
                self.call_op(idx, |op, ctx| op.on_timer(t, ctx))?;
            }
        }
        Ok(())
    }

    fn fire_processing_timers(&mut self) -> Result<(), TaskError> {
        let now = self.now;
        for idx in 0..self.ops.len() {
            while let Some(t) = self.ops[idx]
                .timers
                .pop_due(TimeDomain::ProcessingTime, now)
            {
                self.call_op(idx, |op, ctx| op.on_timer(t, ctx))?;
            }
        }
        Ok(())
    }

    /// Reads one batch from every input; returns how many records were read.
    fn poll_inputs(&mut self) -> Result<usize, TaskError> {
        let mut total = 0;
        for ii in 0..self.inputs.len() {
            if self.inputs[ii].wm.exhausted {
                continue;
            }
            let mut buf = std::mem::take(&mut self.read_buf);
            buf.clear();
            let status = self.inputs[ii]
                .reader
                .read(self.read_batch, &mut buf)
                .map_err(|source| TaskError::Source {
                    task: self.id,
                    source,
                })?;
            let n = buf.len();
            total += n;
            for (ts, value) in buf.drain(..) {
                let inp = &mut self.inputs[ii];
                let ts = ts
                    .or_else(|| {
                        inp.time_field
                            .as_deref()
                            .and_then(|f| value.get(f).as_i64())
                    })
                    .unwrap_or(self.now);
                let moved = inp.wm.observe(ts, self.now);
                let stream = inp.stream;
                let candidate = inp.wm.current();
                self.dispatch(stream, Record::new(ts, value, self.now))?;
                if moved && candidate > self.watermark {
                    let wm = if self.inputs.len() == 1 {
                        candidate
                    } else {
                        task_watermark(self.inputs.iter().map(|i| &i.wm), self.watermark, self.now)
                    };
                    self.advance_watermark(wm)?;
                }
            }
            self.read_buf = buf;
            let inp = &mut self.inputs[ii];
            let malformed = inp.reader.malformed();
            if malformed > inp.malformed_reported {
                self.metrics
                    .malformed
                    .inc_by(malformed - inp.malformed_reported);
                inp.malformed_reported = malformed;
            }
            if status == ReadStatus::Exhausted {
                inp.wm.exhausted = true;
            }
            let letters = inp.reader.take_dead_letters();
            let stream = inp.dead_letter_stream;
            for value in letters {
                self.dispatch(stream, Record::new(self.now, value, self.now))?;
            }
            self.metrics.records_in.inc_by(n as u64);
        }
        Ok(total)
    }

    fn all_exhausted(&self) -> bool {
        self.inputs.iter().all(|i| i.wm.exhausted)
    }

    fn update_watermark_from_inputs(&mut self) -> Result<(), TaskError> {
        let wm = task_watermark(self.inputs.iter().map(|i| &i.wm), self.watermark, self.now);
        self.advance_watermark(wm)
    }

    fn flush_sinks(&mut self) -> Result<(), TaskError> {
        let started = Instant::now();
        for s in self.sinks.iter_mut() {
            let task = self.id;
            s.flush()
                .map_err(|source| TaskError::Sink { task, source })?;
        }
        self.metrics
            .backpressured_ms
            .inc_by(started.elapsed().as_millis() as u64);
        self.metrics.records_out.inc_by(self.pending_out);
        self.pending_out = 0;
        let dead: u64 = self.ops.iter().map(|o| o.dead_letters).sum();
        if dead > self.dead_reported {
            self.metrics.dead_letters.inc_by(dead - self.dead_reported);
            self.dead_reported = dead;
        }
        if self.watermark > i64::MIN && self.watermark < i64::MAX {
            self.metrics.watermark.set(self.watermark);
            self.metrics.lag.set((self.now - self.watermark).max(0));
        }
        Ok(())
    }

    /// Takes this task's part of checkpoint `id`.
    fn snapshot(&mut self, id: u64) -> Result<(PathBuf, TaskManifest), TaskError> {
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

    fn commit(&mut self, id: u64) -> Result<(), TaskError> {
        for s in self.sinks.iter_mut() {
            let task = self.id;
            s.commit(id)
                .map_err(|source| TaskError::Sink { task, source })?;
        }
        for slot in self.ops.iter_mut() {
            let task = self.id;
            slot.op
                .on_commit(id)
                .map_err(|source| TaskError::Operator { task, source })?;
        }
        Ok(())
    }

    /// Handles one command; returns false on Stop.
    fn handle(&mut self, cmd: TaskCommand, events: &Sender<TaskEvent>) -> Result<bool, TaskError> {
        match cmd {
            TaskCommand::Checkpoint(id) => match self.snapshot(id) {
                Ok((dir, manifest)) => {
                    let _ = events.send(TaskEvent::Snapshot {
                        task: self.id,
                        dir,
                        manifest,
                    });
                }
                Err(e) => {
                    let _ = events.send(TaskEvent::SnapshotFailed {
                        task: self.id,
                        id,
                        error: e.to_string(),
                    });
                }
            },
            TaskCommand::Commit(id) => self.commit(id)?,
            TaskCommand::Pause => self.paused = true,
            TaskCommand::Stop => return Ok(false),
        }
        Ok(true)
    }

    /// The task loop: runs until Stop (or a failure, reported as [`TaskEvent::Failed`]).
    pub fn run(mut self, commands: Receiver<TaskCommand>, events: Sender<TaskEvent>) {
        let id = self.id;
        if let Err(e) = self.run_inner(&commands, &events) {
            tracing::error!(task = id, "task failed: {e}");
            let _ = events.send(TaskEvent::Failed {
                task: id,
                error: e.to_string(),
            });
        }
        for slot in self.ops.iter_mut() {
            let _ = slot.op.on_close();
        }
    }

    fn run_inner(
        &mut self,
        commands: &Receiver<TaskCommand>,
        events: &Sender<TaskEvent>,
    ) -> Result<(), TaskError> {
        let has_idle = self.inputs.iter().any(|i| i.wm.idle_timeout_ms.is_some());
        loop {
            loop {
                match commands.try_recv() {
                    Ok(cmd) => {
                        if !self.handle(cmd, events)? {
                            return Ok(());
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Ok(()),
                }
            }
            if self.finished || self.paused {
                match commands.recv_timeout(Duration::from_millis(200)) {
                    Ok(cmd) => {
                        if !self.handle(cmd, events)? {
                            return Ok(());
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                }
                continue;
            }
            let backoff = self.sinks.iter().map(|s| s.backoff()).max();
            if let Some(backoff) = backoff.filter(|b| !b.is_zero()) {
                // A rate-limited sink is ahead of its budget: read nothing until it caught up.
                let blocked = Instant::now();
                let command = commands.recv_timeout(backoff.min(SINK_BACKOFF_SLICE));
                self.count_blocked(blocked.elapsed());
                match command {
                    Ok(cmd) => {
                        if !self.handle(cmd, events)? {
                            return Ok(());
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                }
                continue;
            }
            let started = Instant::now();
            self.now = now_ms();
            let n = self.poll_inputs()?;
            self.fire_processing_timers()?;
            if has_idle || self.all_exhausted() {
                self.update_watermark_from_inputs()?;
            }
            self.flush_sinks()?;
            self.busy_us += started.elapsed().as_micros();
            if self.busy_us >= 1000 {
                self.metrics.busy_ms.inc_by((self.busy_us / 1000) as u64);
                self.busy_us %= 1000;
            }
            if self.all_exhausted() {
                self.finished = true;
                let _ = events.send(TaskEvent::Finished { task: self.id });
                continue;
            }
            if n == 0 {
                let idle = Instant::now();
                match commands.recv_timeout(Duration::from_millis(5)) {
                    Ok(cmd) => {
                        if !self.handle(cmd, events)? {
                            return Ok(());
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return Ok(()),
                }
                self.idle_us += idle.elapsed().as_micros();
                if self.idle_us >= 1000 {
                    self.metrics.idle_ms.inc_by((self.idle_us / 1000) as u64);
                    self.idle_us %= 1000;
                }
            }
        }
    }

    /// Time spent waiting for a rate-limited sink: backpressured, and busy (as time blocked in
    /// a sink flush is).
    fn count_blocked(&mut self, blocked: Duration) {
        let us = blocked.as_micros();
        self.metrics
            .backpressured_ms
            .inc_by(((us + 500) / 1000) as u64);
        self.busy_us += us;
        if self.busy_us >= 1000 {
            self.metrics.busy_ms.inc_by((self.busy_us / 1000) as u64);
            self.busy_us %= 1000;
        }
    }

    /// The task's current watermark.
    pub fn watermark(&self) -> i64 {
        self.watermark
    }
}
