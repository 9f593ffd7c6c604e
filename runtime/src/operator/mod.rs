//! The operator trait and the operators of this runtime (one file each).
//!
//! # Writing an operator
//!
//! An operator is a struct implementing [`Operator`]. The task that owns it calls its hooks on
//! one thread, in this order:
//!
//! 1. [`Operator::on_start`] once, with its [`StateHandle`] (its own RocksDB column family,
//!    already holding the restored state, if any). Create [`KeyedState`]s here.
//! 2. [`Operator::process`] for every record on any of its inputs; `input` is the index into
//!    the operator's `input`/`inputs` list (see `OperatorSpec::all_inputs`). Emit with
//!    [`Context::emit`] (main output, stream `<op>`) or [`Context::emit_side`] (stream
//!    `<op>.<side>`, e.g. `late`; the names must be listed by `OperatorSpec::side_outputs`).
//!    A per-record failure goes to [`Context::dead_letter`], never an `Err`: `Err` stops the task.
//! 3. [`Operator::on_watermark`] when the task watermark advances, then [`Operator::on_timer`]
//!    for each event-time timer due at it (register them with [`Context::register_timer`]).
//!    Processing-time timers fire from the task loop on the wall clock.
//! 4. [`Operator::snapshot`] at each checkpoint barrier: write everything held in memory into
//!    the column family (e.g. [`KeyedState::flush`]). Timers are flushed by the task.
//! 5. [`Operator::on_commit`] when a checkpoint the operator took part in has completed.
//! 6. [`Operator::on_close`] when the task stops.
//!
//! Expressions are compiled once in the operator's constructor; a compile error is returned as
//! a [`SpecError`] naming the field (e.g. `spec.pipeline.operators[2].filter`). Register a new
//! kind in [`build`]; kinds not listed there are rejected at plan time.

pub mod dedup;
pub mod filter;
pub mod keyed_aggregate;
pub mod map;
pub mod repartition;
pub mod support;
pub mod window;
pub mod window_assign;
// splice, pattern, intervalJoin, accumulate, lookupJoin: see workload/ (added by the
// workload-operators engineer; build() delegates those kinds to workload::engine::build).
pub mod workload;

use crate::record::Record;
use crate::state::{StateError, StateHandle};
use crate::time::{TimeDomain, Timer, TimerService};
use std::sync::Arc;
use weir_crds::pipeline::{OperatorKind, OperatorSpec};
use weir_crds::validate::SpecError;
use weir_expr::{Expr, Value};

pub use crate::state::KeyedState;

/// An operator failure that stops the task (state access, not bad records).
#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// Reading or writing state failed.
    #[error("operator '{operator}': {source}")]
    State {
        /// Operator name.
        operator: String,
        /// The state error.
        source: StateError,
    },
}

/// Shorthand for hook results.
pub type OpResult = Result<(), OperatorError>;

/// What an operator hook can do besides its own logic: emit, set timers, report bad records.
pub struct Context<'a> {
    /// The task watermark (event time, epoch ms).
    pub watermark: i64,
    /// Wall-clock time, epoch ms.
    pub now_ms: i64,
    side_outputs: &'static [&'static str],
    out: &'a mut Vec<(usize, Record)>,
    timers: &'a mut TimerService,
    dead_letters: &'a mut u64,
}

impl<'a> Context<'a> {
    /// A context writing into `out` (port 0 = main, port i = side output i-1).
    pub fn new(
        watermark: i64,
        now_ms: i64,
        side_outputs: &'static [&'static str],
        out: &'a mut Vec<(usize, Record)>,
        timers: &'a mut TimerService,
        dead_letters: &'a mut u64,
    ) -> Self {
        Context {
            watermark,
            now_ms,
            side_outputs,
            out,
            timers,
            dead_letters,
        }
    }

    /// Records emitted through this context and not yet handed downstream.
    pub fn pending_outputs(&self) -> usize {
        self.out.len()
    }

    /// Emits to the main output.
    pub fn emit(&mut self, record: Record) {
        self.out.push((0, record));
    }

    /// Emits to side output `name` (e.g. `late`); unknown names are dropped.
    pub fn emit_side(&mut self, name: &str, record: Record) {
        if let Some(i) = self.side_outputs.iter().position(|s| *s == name) {
            self.out.push((i + 1, record));
        } else {
            debug_assert!(false, "unknown side output {name}");
        }
    }

    /// Sends `record` with `error` to `<op>.deadLetter` and counts it.
    pub fn dead_letter(&mut self, record: &Record, error: &str) {
        *self.dead_letters += 1;
        let value = Value::map([
            ("error", Value::str(error)),
            ("record", record.value.clone()),
        ]);
        self.emit_side(
            "deadLetter",
            Record {
                ts: record.ts,
                value,
                ingest_ms: record.ingest_ms,
            },
        );
    }

    /// Registers a timer for `key` at `time` on `domain`.
    pub fn register_timer(&mut self, domain: TimeDomain, time: i64, key: &str) {
        self.timers.register(domain, time, key);
    }

    /// Deletes a timer.
    pub fn delete_timer(&mut self, domain: TimeDomain, time: i64, key: &str) {
        self.timers.delete(domain, time, key);
    }
}

/// A stream operator. See the module documentation for the hook order.
pub trait Operator: Send {
    /// Called once before any record, with the operator's state (restored, if any).
    fn on_start(&mut self, _state: &StateHandle) -> OpResult {
        Ok(())
    }
    /// Handles one record from input `input`.
    fn process(&mut self, input: usize, record: Record, ctx: &mut Context<'_>) -> OpResult;
    /// The task watermark advanced to `ctx.watermark` (before due timers fire).
    fn on_watermark(&mut self, _ctx: &mut Context<'_>) -> OpResult {
        Ok(())
    }
    /// Whether [`Operator::on_watermark`] returned with work still due at `watermark` (it
    /// may stop once it has emitted a batch, so that timers firing at once, such as every
    /// time-out at the end of the input, go downstream a bounded batch at a time); the task
    /// then calls `on_watermark` again.
    fn watermark_work_left(&self, _watermark: i64) -> bool {
        false
    }
    /// A timer registered by this operator is due.
    fn on_timer(&mut self, _timer: Timer, _ctx: &mut Context<'_>) -> OpResult {
        Ok(())
    }
    /// Writes in-memory state into the state store before a checkpoint.
    fn snapshot(&mut self, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
    /// A checkpoint this operator took part in completed.
    fn on_commit(&mut self, _checkpoint_id: u64) -> OpResult {
        Ok(())
    }
    /// The task is stopping.
    fn on_close(&mut self) -> OpResult {
        Ok(())
    }
    /// The top-level fields of input `input`'s records this operator reads or passes on,
    /// given what the consumers of its outputs need (`outputs`); `None`: whole records. A
    /// source whose consumers all name their fields builds only those (see
    /// `source::PartitionReader::keep_fields`), so the answer must cover every field whose
    /// absence could change anything this operator emits or keeps, dead letters included.
    fn fields_needed(&self, _input: usize, _outputs: &FieldNeeds<'_>) -> Option<Vec<Arc<str>>> {
        None
    }
}

/// What the consumers of one operator's output streams need of their records: per output
/// (main, then the side outputs in `OperatorSpec::side_outputs` order) the top-level fields,
/// `None` for whole records.
pub struct FieldNeeds<'a> {
    /// The side outputs' names.
    pub side_outputs: &'a [&'a str],
    /// Per output: main first, then the side outputs.
    pub outputs: Vec<Option<Vec<Arc<str>>>>,
}

impl FieldNeeds<'_> {
    /// What the main output's consumers need.
    pub fn main(&self) -> Option<&[Arc<str>]> {
        self.outputs.first().and_then(|o| o.as_deref())
    }
    /// Whether nothing reads anything of side output `name`'s records (no consumers, or
    /// consumers that read no field), so whatever it would carry cannot be observed.
    pub fn side_unread(&self, name: &str) -> bool {
        match self.side_outputs.iter().position(|s| *s == name) {
            Some(i) => matches!(self.outputs.get(i + 1), Some(Some(f)) if f.is_empty()),
            None => true,
        }
    }
}

/// The union of two field lists (`None`, whole records, absorbs everything).
pub fn union_fields(a: Option<Vec<Arc<str>>>, b: Option<&[Arc<str>]>) -> Option<Vec<Arc<str>>> {
    let (mut a, b) = (a?, b?);
    for f in b {
        if !a.contains(f) {
            a.push(f.clone());
        }
    }
    Some(a)
}

/// Compiles `src` over `e`, naming `field` on error.
pub fn compile(field: &str, src: &str) -> Result<Expr, SpecError> {
    Expr::compile(src, &["e"]).map_err(|e| SpecError {
        field: field.to_string(),
        message: e.to_string(),
    })
}

/// Wraps a state error with the operator's name.
pub fn state_err(operator: &str) -> impl Fn(StateError) -> OperatorError + '_ {
    move |source| OperatorError::State {
        operator: operator.to_string(),
        source,
    }
}

/// The operator kinds this runtime implements.
pub const SUPPORTED_KINDS: &[&str] = &[
    "filter",
    "map",
    "window",
    "aggregate",
    "dedup",
    "splice",
    "pattern",
    "intervalJoin",
    "accumulate",
    "lookupJoin",
    "repartition",
];

/// Builds the operator for `spec`; `field` is its path (`spec.pipeline.operators[i]`).
pub fn build(field: &str, spec: &OperatorSpec) -> Result<Box<dyn Operator>, Vec<SpecError>> {
    let one = |e: SpecError| vec![e];
    match spec.kind() {
        Some(OperatorKind::Filter(src)) => Ok(Box::new(
            filter::Filter::new(&format!("{field}.filter"), src).map_err(one)?,
        )),
        Some(OperatorKind::Map(src)) => Ok(Box::new(
            map::MapOp::new(&format!("{field}.map"), src).map_err(one)?,
        )),
        Some(OperatorKind::Window(w)) => Ok(Box::new(window::Window::new(
            &format!("{field}.window"),
            &spec.name,
            w,
        )?)),
        Some(OperatorKind::Aggregate(a)) => Ok(Box::new(keyed_aggregate::KeyedAggregate::new(
            &format!("{field}.aggregate"),
            &spec.name,
            a,
        )?)),
        Some(OperatorKind::Dedup(d)) => Ok(Box::new(
            dedup::Dedup::new(&format!("{field}.dedup"), &spec.name, d).map_err(one)?,
        )),
        Some(_) | None => {
            if let Some(op) = workload::engine::build(field, spec) {
                return op;
            }
            let kinds = spec.kinds();
            let kind = kinds.first().map(|(k, _)| *k).unwrap_or("(none)");
            Err(vec![SpecError {
                field: format!("{field}.{kind}"),
                message: format!(
                    "operator kind {kind} is not supported by this runtime yet (supported: {})",
                    SUPPORTED_KINDS.join(", ")
                ),
            }])
        }
    }
}
