//! The workload operators (splice, pattern, intervalJoin, accumulate, lookupJoin) as pure,
//! deterministic state machines driven by explicit time, and their adapter to the engine.
//!
//! Each operator keeps *all* of its state — buffered events, partial matches, open sessions,
//! queued and in-flight lookups — in a [`StateMap`], registers per-key timers with a
//! [`TimerService`], and writes records to a [`Collector`]. Nothing reads the wall clock or
//! sleeps: event time comes from record timestamps and watermarks, processing time is passed
//! in by the caller. So the state map plus the timers is a complete checkpoint, and tests drive
//! time exactly (see [`memory::MemoryDriver`]); [`engine`] runs the same code in a task.
//!
//! Conventions shared by all operators:
//! - A watermark `W` promises that no record with `ts <= W` is still to come; a record that
//!   arrives with `ts <= W` is *late*.
//! - Inputs are numbered in the order of `OperatorSpec::all_inputs`.
//! - A record whose key or value expression fails to evaluate goes to `<op>.deadLetter` as
//!   `{"error": ..., "record": ...}` and changes no state.

pub mod accumulate;
pub mod engine;
pub mod event_order;
pub mod hot_budget;
pub mod interval_join;
pub mod lookup_join;
pub mod memory;
pub mod pattern;
pub mod splice;
pub mod state_cache;
pub mod timer_store;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weir_crds::pipeline::TimeDomain;
use weir_expr::{Expr, ExprError, Value};

/// A record with its event time (epoch milliseconds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Event time in epoch milliseconds.
    pub ts: i64,
    /// The record.
    pub value: Value,
}

impl Event {
    /// A record at event time `ts`.
    pub fn new(ts: i64, value: Value) -> Self {
        Event { ts, value }
    }
}

/// A fired timer: the key it was registered for and its time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    /// The clock it ran on.
    pub domain: TimeDomain,
    /// The key it was registered with.
    pub key: String,
    /// When it fired (event time: the watermark reached it; processing time: the clock did).
    pub ts: i64,
}

/// Where an operator's record goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Output {
    /// The operator's main output, referenced by the operator's name.
    Main,
    /// A side output, referenced as `<operator>.<name>`.
    Side(&'static str),
}

/// A lookup the operator wants performed against the external store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupRequest {
    /// Identifies the queued record; pass it back with the result.
    pub id: u64,
    /// The store key (the spec's key prefix already applied).
    pub key: String,
}

/// The state backend could not read or write (disk, RocksDB, ...).
#[derive(Debug, thiserror::Error)]
#[error("state backend: {0}")]
pub struct StateBackendError(pub String);

/// One operator's keyed state: values of the operator's state type by string key.
///
/// The in-memory map of the tests ([`memory::MemoryDriver`]) and the engine's RocksDB-backed
/// write-back cache both implement it. Operators take a key's value out, change it and put it
/// back (or leave it out, to delete it), so no value is cloned on the hot path.
pub trait StateMap<V> {
    /// Removes and returns the value of `key`.
    fn take(&mut self, key: &str) -> Result<Option<V>, StateBackendError>;
    /// Stores `value` under `key`, replacing what was there.
    fn put(&mut self, key: &str, value: V) -> Result<(), StateBackendError>;
}

/// Per-key timers, persisted with the state. Registering the same `(domain, key, ts)` twice
/// yields one firing.
pub trait TimerService {
    /// Fires [`WorkloadOperator::on_timer`] once `domain`'s clock reaches `ts`.
    fn register(&mut self, domain: TimeDomain, key: &str, ts: i64);
}

/// Receives an operator's records and its requests to the outside world.
pub trait Collector {
    /// A record on the main output or a side output.
    fn emit(&mut self, output: Output, event: Event);
    /// A lookup to perform; the answer comes back through
    /// [`WorkloadOperator::on_lookup_result`].
    fn request_lookup(&mut self, request: LookupRequest);
}

/// What an operator sees of the runtime while handling one call.
pub struct Ctx<'a, V> {
    /// The operator's keyed state.
    pub state: &'a mut dyn StateMap<V>,
    /// Its timers.
    pub timers: &'a mut dyn TimerService,
    /// Its outputs.
    pub out: &'a mut dyn Collector,
    /// The current event-time watermark (`i64::MIN` before the first one).
    pub watermark: i64,
    /// The current processing time in epoch milliseconds, as given by the caller.
    pub processing_time: i64,
}

/// An operator built from one workload spec.
pub trait WorkloadOperator: Send + 'static {
    /// The per-key state this operator keeps.
    type State: Serialize + DeserializeOwned + Send + 'static;

    /// The operator's name in the pipeline.
    fn name(&self) -> &str;

    /// Called once before the first record, also after a restore (re-issues in-flight work).
    fn on_start(&mut self, _ctx: &mut Ctx<'_, Self::State>) -> Result<(), WorkloadError> {
        Ok(())
    }

    /// One record from input number `input` (see `OperatorSpec::all_inputs`).
    fn process(
        &mut self,
        input: usize,
        event: Event,
        ctx: &mut Ctx<'_, Self::State>,
    ) -> Result<(), WorkloadError>;

    /// A timer this operator registered has fired.
    fn on_timer(
        &mut self,
        timer: &Timer,
        ctx: &mut Ctx<'_, Self::State>,
    ) -> Result<(), WorkloadError>;

    /// The answer to a [`LookupRequest`] (`None` when the store has no value). Only lookupJoin
    /// issues lookups; the others ignore this.
    fn on_lookup_result(
        &mut self,
        _id: u64,
        _result: Option<Value>,
        _ctx: &mut Ctx<'_, Self::State>,
    ) -> Result<(), WorkloadError> {
        Ok(())
    }

    /// The share of the state cache its hot table of decoded keys may take (its budget is the
    /// cache's capacity over this): 1, as good as unbounded (at most 262,144 keys), for state
    /// whose keys are small or short-lived; pattern's long-lived partial matches take 128.
    fn hot_cache_share(&self) -> usize {
        1
    }

    /// See [`crate::operator::Operator::fields_needed`] (default: whole records).
    fn fields_needed(
        &self,
        _input: usize,
        _outputs: &crate::operator::FieldNeeds<'_>,
    ) -> Option<Vec<std::sync::Arc<str>>> {
        None
    }
}

/// Building or running a workload operator failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// A spec field is unusable (the validator normally catches this first).
    #[error("operator '{operator}': invalid {field}: {message}")]
    InvalidSpec {
        /// Operator name.
        operator: String,
        /// The spec field, e.g. `pattern.sequence[1].times`.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A CEL expression in the spec does not compile.
    #[error("operator '{operator}': compiling {field}: {source}")]
    CompileExpr {
        /// Operator name.
        operator: String,
        /// The spec field holding the expression.
        field: String,
        /// The compile error.
        source: ExprError,
    },
    /// The state backend failed.
    #[error("operator '{operator}': accessing its state: {source}")]
    State {
        /// Operator name.
        operator: String,
        /// The backend error.
        source: StateBackendError,
    },
}

impl WorkloadError {
    /// Whether retrying (e.g. restarting from the last checkpoint) might help: true for
    /// backend failures, false for spec mistakes.
    pub fn is_retryable(&self) -> bool {
        matches!(self, WorkloadError::State { .. })
    }
}

/// Compiles `source` over `vars`, naming the operator and field on error.
pub(crate) fn compile(
    operator: &str,
    field: &str,
    source: &str,
    vars: &[&str],
) -> Result<Expr, WorkloadError> {
    Expr::compile(source, vars).map_err(|source| WorkloadError::CompileExpr {
        operator: operator.to_string(),
        field: field.to_string(),
        source,
    })
}

/// Takes `key`'s value out of the state, naming the operator on error.
pub(crate) fn take<V>(
    ctx: &mut Ctx<'_, V>,
    operator: &str,
    key: &str,
) -> Result<Option<V>, WorkloadError> {
    ctx.state.take(key).map_err(|source| WorkloadError::State {
        operator: operator.to_string(),
        source,
    })
}

/// Puts `value` under `key`, naming the operator on error.
pub(crate) fn put<V>(
    ctx: &mut Ctx<'_, V>,
    operator: &str,
    key: &str,
    value: V,
) -> Result<(), WorkloadError> {
    ctx.state
        .put(key, value)
        .map_err(|source| WorkloadError::State {
            operator: operator.to_string(),
            source,
        })
}

/// The state key of `event` under `key`; if the expression fails, sends the record to
/// `<operator>.deadLetter` and returns `None` (the caller then leaves its state alone).
pub(crate) fn state_key<V>(key: &Expr, event: &Event, ctx: &mut Ctx<'_, V>) -> Option<String> {
    match key.eval(&[&event.value]) {
        Ok(k) => Some(k.key_string()),
        Err(err) => {
            dead_letter(ctx, event.clone(), &err.to_string());
            None
        }
    }
}

/// Sends `event` to `<operator>.deadLetter` wrapped as `{"error": ..., "record": ...}`.
pub(crate) fn dead_letter<V>(ctx: &mut Ctx<'_, V>, event: Event, error: &str) {
    let value = Value::map([("error", Value::str(error)), ("record", event.value)]);
    ctx.out
        .emit(Output::Side("deadLetter"), Event::new(event.ts, value));
}

/// The index of input `name` among `inputs`, or an `InvalidSpec` error naming `field`.
pub(crate) fn input_index(
    operator: &str,
    field: &str,
    inputs: &[String],
    name: &str,
) -> Result<usize, WorkloadError> {
    inputs
        .iter()
        .position(|i| i == name)
        .ok_or_else(|| WorkloadError::InvalidSpec {
            operator: operator.to_string(),
            field: field.to_string(),
            message: format!(
                "'{name}' is not one of this operator's inputs ({})",
                inputs.join(", ")
            ),
        })
}

/// A duration in milliseconds as i64 (saturating).
pub(crate) fn millis(d: weir_crds::Dur) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
