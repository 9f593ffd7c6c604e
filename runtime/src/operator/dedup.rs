//! `dedup`: drop records whose key was already seen within a TTL of event time.

use super::{compile, state_err, Context, KeyedState, OpResult, Operator};
use crate::record::Record;
use crate::state::StateHandle;
use crate::time::{TimeDomain, Timer};
use weir_crds::pipeline::DedupSpec;
use weir_crds::validate::SpecError;
use weir_expr::Expr;

/// Emits the first record per key; the key is forgotten `ttl` after it was first seen
/// (an event-time timer at first-seen + ttl clears it).
pub struct Dedup {
    name: String,
    key: Expr,
    ttl_ms: i64,
    seen: Option<KeyedState<i64>>,
}

impl Dedup {
    /// Compiles the key expression.
    pub fn new(field: &str, name: &str, spec: &DedupSpec) -> Result<Self, SpecError> {
        Ok(Dedup {
            name: name.to_string(),
            key: compile(&format!("{field}.key"), &spec.key)?,
            ttl_ms: i64::try_from(spec.ttl.as_millis()).unwrap_or(i64::MAX),
            seen: None,
        })
    }
}

impl Operator for Dedup {
    fn on_start(&mut self, state: &StateHandle) -> OpResult {
        self.seen = Some(KeyedState::new(state.clone(), "seen", 200_000));
        Ok(())
    }

    fn process(&mut self, _input: usize, record: Record, ctx: &mut Context<'_>) -> OpResult {
        let key = match self.key.eval(&[&record.value]) {
            Ok(k) => k.key_string(),
            Err(e) => {
                ctx.dead_letter(&record, &e.to_string());
                return Ok(());
            }
        };
        let Some(seen) = self.seen.as_mut() else {
            return Ok(());
        };
        let err = state_err(&self.name);
        if seen.get(&key).map_err(&err)?.is_some() {
            return Ok(());
        }
        seen.put(&key, record.ts).map_err(&err)?;
        ctx.register_timer(
            TimeDomain::EventTime,
            record.ts.saturating_add(self.ttl_ms),
            &key,
        );
        ctx.emit(record);
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, _ctx: &mut Context<'_>) -> OpResult {
        let Some(seen) = self.seen.as_mut() else {
            return Ok(());
        };
        // A key has exactly one timer while it is stored: registered with its first-seen time
        // and firing is the only way it is removed (after which a new record stores it again
        // with a new timer). So the timer's key can be deleted without reading it first,
        // which matters when a million timers fire at the end of the input.
        seen.delete(&timer.key).map_err(state_err(&self.name))?;
        Ok(())
    }

    fn snapshot(&mut self, _checkpoint_id: u64) -> OpResult {
        if let Some(s) = self.seen.as_mut() {
            s.flush().map_err(state_err(&self.name))?;
        }
        Ok(())
    }
}
