//! Runs the workload operators inside the engine: an [`Operator`] adapter that keeps the
//! operator's state in the task's RocksDB (through the write-back [`WorkloadState`] cache),
//! keeps its event-time timers in an [`EventTimers`] store fired from `on_watermark`
//! (processing-time timers go to the task's timer service), forwards outputs to the task's
//! [`Context`], and performs lookupJoin's lookups through a [`LookupStore`] (the store
//! clients are in [`crate::lookup`]).
//!
//! Lookups are batched: requests collect until `maxInFlight` are pending, or the watermark
//! moves, or a timer fires, or a short processing-time flush timer fires; then they go to
//! the store as one round trip. If the store cannot be reached the requests stay in flight
//! (they are in the operator's state) and are retried at the next flush.

use super::{
    accumulate::Accumulate, interval_join::IntervalJoin, lookup_join::LookupJoin, pattern::Pattern,
    splice::Splice, state_cache::WorkloadState, timer_store::EventTimers, Collector, Ctx, Event,
    LookupRequest, Output, StateBackendError, Timer, TimerService, WorkloadError, WorkloadOperator,
};
use crate::lookup::{self, LookupStore};
use crate::operator::{Context, OpResult, Operator, OperatorError};
use crate::record::Record;
use crate::state::{StateError, StateHandle};
use crate::time::{TimeDomain as EngineDomain, Timer as EngineTimer};
use weir_crds::pipeline::{OperatorKind, OperatorSpec, TimeDomain};
use weir_crds::validate::SpecError;

/// MiB of keys and encoded values the write-back cache holds per operator and task unless
/// [`CACHE_MIB_ENV`] says otherwise (about 1.3 million splice samples of four fields).
pub const CACHE_MIB: usize = 128;
/// Environment variable overriding [`CACHE_MIB`] (e.g. through the pod template's `env`).
pub const CACHE_MIB_ENV: &str = "WEIR_WORKLOAD_CACHE_MIB";

/// The cache size in bytes: [`CACHE_MIB_ENV`] if set to a number, else [`CACHE_MIB`].
fn cache_bytes() -> usize {
    std::env::var(CACHE_MIB_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(CACHE_MIB)
        .saturating_mul(1 << 20)
}
/// Environment variable setting the MiB of decoded new keys the cache keeps (its hot table,
/// estimated from their encoded size; default: pattern 1/128 of the cache, 1 MiB, the
/// other operators up to 262,144 keys, `WorkloadOperator::hot_cache_share`): more keeps
/// long-lived keys such as pattern's partial matches decoded (less CPU, more memory).
pub const HOT_MIB_ENV: &str = "WEIR_WORKLOAD_HOT_MIB";

/// The hot table's budget in bytes if [`HOT_MIB_ENV`] is set to a number.
fn hot_bytes() -> Option<usize> {
    std::env::var(HOT_MIB_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map(|m| m.saturating_mul(1 << 20))
}

/// The name of the state inside the operator's column family.
const STATE_NAME: &str = "workload";
/// Timer key reserved for the lookup flush timer (operator keys never start with NUL).
const FLUSH_TIMER: &str = "\u{0}flush";
/// How long requested lookups may wait for a batch to fill.
const FLUSH_AFTER_MS: i64 = 5;
/// Outputs after which `on_watermark` stops firing due timers and lets the task send them on
/// (so that a watermark with a hundred thousand due time-outs does not hold all their outputs).
const WATERMARK_BATCH_OUTPUTS: usize = 1024;

/// Builds the engine operator for a workload kind, or `None` if `spec` is not one.
/// `field` is the operator's spec path (`spec.pipeline.operators[i]`).
pub fn build(
    field: &str,
    spec: &OperatorSpec,
) -> Option<Result<Box<dyn Operator>, Vec<SpecError>>> {
    let inputs: Vec<String> = spec.all_inputs().into_iter().map(String::from).collect();
    let name = spec.name.clone();
    let err = |e: WorkloadError| vec![spec_error(field, e)];
    Some(match spec.kind()? {
        OperatorKind::Splice(s) => Splice::new(name, inputs, s)
            .map(|o| Box::new(Adapter::new(o, None)) as Box<dyn Operator>)
            .map_err(err),
        OperatorKind::Pattern(p) => Pattern::new(name, inputs, p)
            .map(|o| Box::new(Adapter::new(o, None)) as Box<dyn Operator>)
            .map_err(err),
        OperatorKind::IntervalJoin(j) => IntervalJoin::new(name, inputs, j)
            .map(|o| Box::new(Adapter::new(o, None)) as Box<dyn Operator>)
            .map_err(err),
        OperatorKind::Accumulate(a) => Accumulate::new(name, inputs, a)
            .map(|o| Box::new(Adapter::new(o, None)) as Box<dyn Operator>)
            .map_err(err),
        OperatorKind::LookupJoin(l) => LookupJoin::new(name, l).map_err(err).and_then(|o| {
            let cap = o.max_in_flight();
            let store = lookup::open(&spec.name, &l.store).map_err(|(sub, e)| {
                vec![SpecError {
                    field: format!("{field}.lookupJoin.{sub}"),
                    message: e.to_string(),
                }]
            })?;
            Ok(Box::new(Adapter::new(o, Some((store, cap)))) as Box<dyn Operator>)
        }),
        OperatorKind::Repartition(r) => crate::operator::repartition::build(field, spec, r),
        _ => return None,
    })
}

fn spec_error(field: &str, e: WorkloadError) -> SpecError {
    let (sub, message) = match &e {
        WorkloadError::InvalidSpec { field, message, .. } => (field.clone(), message.clone()),
        WorkloadError::CompileExpr { field, source, .. } => (field.clone(), source.to_string()),
        WorkloadError::State { .. } => (String::new(), e.to_string()),
    };
    SpecError {
        field: if sub.is_empty() {
            field.to_string()
        } else {
            format!("{field}.{sub}")
        },
        message,
    }
}

fn operator_error(e: WorkloadError) -> OperatorError {
    match e {
        WorkloadError::State { operator, source } => OperatorError::State {
            operator,
            source: StateError::Access {
                action: "access",
                cf: STATE_NAME.to_string(),
                message: source.0,
            },
        },
        other => OperatorError::State {
            operator: String::new(),
            source: StateError::Access {
                action: "run",
                cf: STATE_NAME.to_string(),
                message: other.to_string(),
            },
        },
    }
}

/// The operator's timers: event-time ones in its own store, processing-time ones collected
/// during a call and handed to the engine's timer service afterwards.
#[derive(Default)]
struct Timers {
    event: EventTimers,
    processing: Vec<(String, i64)>,
}

impl TimerService for Timers {
    fn register(&mut self, domain: TimeDomain, key: &str, ts: i64) {
        match domain {
            TimeDomain::EventTime => self.event.register(ts, key),
            TimeDomain::ProcessingTime => self.processing.push((key.to_string(), ts)),
        }
    }
}

/// Outputs and lookup requests of one call.
#[derive(Default)]
struct OutputBuffer {
    records: Vec<(Output, Event)>,
    lookups: Vec<LookupRequest>,
}

impl Collector for OutputBuffer {
    fn emit(&mut self, output: Output, event: Event) {
        self.records.push((output, event));
    }
    fn request_lookup(&mut self, request: LookupRequest) {
        self.lookups.push(request);
    }
}

/// Adapts a [`WorkloadOperator`] to the engine's [`Operator`].
pub struct Adapter<O: WorkloadOperator> {
    op: O,
    state: Option<WorkloadState<O::State>>,
    timers: Timers,
    out: OutputBuffer,
    /// The store and the batch size for lookupJoin.
    store: Option<(Box<dyn LookupStore>, usize)>,
    /// Lookups requested and not yet sent.
    pending: Vec<LookupRequest>,
    flush_timer_at: Option<i64>,
    ingest_ms: i64,
}

impl<O: WorkloadOperator> Adapter<O> {
    /// Wraps `op`; `store` is the lookup store and batch size, for lookupJoin.
    pub fn new(op: O, store: Option<(Box<dyn LookupStore>, usize)>) -> Self {
        Adapter {
            op,
            state: None,
            timers: Timers::default(),
            out: OutputBuffer::default(),
            store,
            pending: Vec::new(),
            flush_timer_at: None,
            ingest_ms: 0,
        }
    }

    /// Runs `f` on the operator with a [`Ctx`] over the engine's state, then hands what it
    /// emitted and registered to the engine.
    fn call(
        &mut self,
        ctx: &mut Context<'_>,
        f: impl FnOnce(&mut O, &mut Ctx<'_, O::State>) -> Result<(), WorkloadError>,
    ) -> OpResult {
        let Some(state) = self.state.as_mut() else {
            return Err(operator_error(WorkloadError::State {
                operator: self.op.name().to_string(),
                source: StateBackendError("operator used before on_start".into()),
            }));
        };
        let mut wctx = Ctx {
            state,
            timers: &mut self.timers,
            out: &mut self.out,
            watermark: ctx.watermark,
            processing_time: ctx.now_ms,
        };
        let res = f(&mut self.op, &mut wctx);
        self.forward(ctx);
        res.map_err(operator_error)
    }

    fn forward(&mut self, ctx: &mut Context<'_>) {
        for (key, ts) in self.timers.processing.drain(..) {
            ctx.register_timer(EngineDomain::ProcessingTime, ts, &key);
        }
        for (output, event) in self.out.records.drain(..) {
            let rec = Record::new(event.ts, event.value, self.ingest_ms);
            match output {
                Output::Main => ctx.emit(rec),
                Output::Side("deadLetter") => {
                    let error = rec.value.get("error").as_str().unwrap_or("").to_string();
                    let inner = Record::new(rec.ts, rec.value.get("record").clone(), rec.ingest_ms);
                    ctx.dead_letter(&inner, &error);
                }
                Output::Side(name) => ctx.emit_side(name, rec),
            }
        }
        self.pending.append(&mut self.out.lookups);
    }

    /// Sends pending lookups to the store until none are left (answers may release waiting
    /// records, which request more).
    fn flush_lookups(&mut self, ctx: &mut Context<'_>) -> OpResult {
        while !self.pending.is_empty() {
            let Some((store, _)) = self.store.as_mut() else {
                self.pending.clear();
                return Ok(());
            };
            let batch = std::mem::take(&mut self.pending);
            let keys: Vec<String> = batch.iter().map(|r| r.key.clone()).collect();
            let values = match store.get_many(&keys) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(
                        operator = self.op.name(),
                        "lookup store unavailable, will retry: {e}"
                    );
                    self.pending = batch;
                    self.schedule_flush(ctx, 1_000);
                    return Ok(());
                }
            };
            for (req, value) in batch.into_iter().zip(values) {
                self.call(ctx, |op, c| op.on_lookup_result(req.id, value, c))?;
            }
        }
        Ok(())
    }

    fn schedule_flush(&mut self, ctx: &mut Context<'_>, after_ms: i64) {
        if self.flush_timer_at.is_none() {
            let at = ctx.now_ms.saturating_add(after_ms);
            ctx.register_timer(EngineDomain::ProcessingTime, at, FLUSH_TIMER);
            self.flush_timer_at = Some(at);
        }
    }

    /// After a call: flush a full batch now, or make sure a flush timer is set.
    fn after_call(&mut self, ctx: &mut Context<'_>) -> OpResult {
        match &self.store {
            Some((_, cap)) if self.pending.len() >= *cap => self.flush_lookups(ctx),
            Some(_) if !self.pending.is_empty() => {
                self.schedule_flush(ctx, FLUSH_AFTER_MS);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl<O: WorkloadOperator> Operator for Adapter<O> {
    fn on_start(&mut self, state: &StateHandle) -> OpResult {
        self.timers.event = EventTimers::load(state).map_err(|source| OperatorError::State {
            operator: self.op.name().to_string(),
            source,
        })?;
        let cache = cache_bytes();
        let hot = hot_bytes().unwrap_or(cache / self.op.hot_cache_share().max(1));
        self.state = Some(WorkloadState::with_hot_bytes(
            state.clone(),
            STATE_NAME,
            cache,
            hot,
        ));
        // No engine context yet: collect what on_start emits (re-issued lookups) and send it
        // with the first call that has one.
        let Some(st) = self.state.as_mut() else {
            return Ok(());
        };
        let mut wctx = Ctx {
            state: st,
            timers: &mut self.timers,
            out: &mut self.out,
            watermark: i64::MIN,
            processing_time: crate::record::now_ms(),
        };
        self.op.on_start(&mut wctx).map_err(operator_error)?;
        self.pending.append(&mut self.out.lookups);
        Ok(())
    }

    fn fields_needed(
        &self,
        input: usize,
        outputs: &crate::operator::FieldNeeds<'_>,
    ) -> Option<Vec<std::sync::Arc<str>>> {
        self.op.fields_needed(input, outputs)
    }

    fn process(&mut self, input: usize, record: Record, ctx: &mut Context<'_>) -> OpResult {
        self.ingest_ms = record.ingest_ms;
        let event = Event::new(record.ts, record.value);
        self.call(ctx, |op, c| op.process(input, event, c))?;
        self.after_call(ctx)
    }

    fn on_watermark(&mut self, ctx: &mut Context<'_>) -> OpResult {
        self.ingest_ms = ctx.now_ms;
        self.forward(ctx);
        // due event-time timers in (time, key) order, including ones registered while firing;
        // after a batch of outputs the task takes them and calls again (`watermark_work_left`)
        while ctx.pending_outputs() < WATERMARK_BATCH_OUTPUTS {
            let Some((ts, key)) = self.timers.event.pop_due(ctx.watermark) else {
                break;
            };
            let t = Timer {
                domain: TimeDomain::EventTime,
                key,
                ts,
            };
            self.call(ctx, |op, c| op.on_timer(&t, c))?;
            self.after_call(ctx)?;
        }
        self.flush_lookups(ctx)
    }

    fn watermark_work_left(&self, watermark: i64) -> bool {
        self.timers.event.has_due(watermark)
    }

    fn on_timer(&mut self, timer: EngineTimer, ctx: &mut Context<'_>) -> OpResult {
        self.ingest_ms = ctx.now_ms;
        if timer.key == FLUSH_TIMER {
            self.flush_timer_at = None;
            return self.flush_lookups(ctx);
        }
        let t = Timer {
            domain: match timer.domain {
                EngineDomain::EventTime => TimeDomain::EventTime,
                EngineDomain::ProcessingTime => TimeDomain::ProcessingTime,
            },
            key: timer.key,
            ts: timer.time,
        };
        self.call(ctx, |op, c| op.on_timer(&t, c))?;
        self.after_call(ctx)
    }

    fn snapshot(&mut self, _checkpoint_id: u64) -> OpResult {
        let name = self.op.name().to_string();
        if let Some(s) = self.state.as_mut() {
            s.flush().map_err(|e| {
                operator_error(WorkloadError::State {
                    operator: name.clone(),
                    source: e,
                })
            })?;
        }
        if let Some(s) = self.state.as_ref() {
            self.timers
                .event
                .flush(s.handle())
                .map_err(|source| OperatorError::State {
                    operator: name,
                    source,
                })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_expr::Value;

    #[test]
    fn due_timers_go_downstream_a_bounded_batch_per_watermark_call() {
        use crate::state::{operator_cf, StateStore};
        use crate::time::TimerService;
        const SIDES: &[&str] = &["timedOut", "late", "deadLetter"];
        let spec: weir_crds::pipeline::PatternSpec = serde_yaml::from_str(
            "{key: e.k, sequence: [{as: a, from: in}, {as: b, from: in, followedBy: true}], \
              within: 1s, emit: '{}'}",
        )
        .unwrap();
        let op = Pattern::new("p".into(), vec!["in".into()], &spec).unwrap();
        let mut adapter = Adapter::new(op, None);
        let dir = tempfile::tempdir().unwrap();
        let cf = operator_cf("p");
        let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
        adapter.on_start(&store.handle(&cf)).unwrap();
        let (mut out, mut timers, mut dead) = (Vec::new(), TimerService::default(), 0);
        let keys = WATERMARK_BATCH_OUTPUTS * 2 + 10;
        for k in 0..keys {
            let value = Value::from_json(&format!("{{\"k\":{k}}}")).unwrap();
            let mut ctx = Context::new(0, 0, SIDES, &mut out, &mut timers, &mut dead);
            adapter
                .process(0, Record::new(1_000, value, 0), &mut ctx)
                .unwrap();
        }
        assert!(out.is_empty());
        // every key times out at this watermark: at most a batch of outputs per call
        let (wm, mut calls, mut timed_out) = (i64::MAX - 1, 0, 0);
        loop {
            let mut ctx = Context::new(wm, 0, SIDES, &mut out, &mut timers, &mut dead);
            adapter.on_watermark(&mut ctx).unwrap();
            assert!(out.len() <= WATERMARK_BATCH_OUTPUTS, "{}", out.len());
            timed_out += out.drain(..).filter(|(port, _)| *port == 1).count();
            calls += 1;
            if !adapter.watermark_work_left(wm) {
                break;
            }
        }
        assert_eq!(timed_out, keys);
        assert_eq!(calls, 3);
    }
}
