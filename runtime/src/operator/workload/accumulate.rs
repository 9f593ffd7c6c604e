//! `accumulate`: open a per-key session on a record of the `open` input, fold records of the
//! `accumulate` input into it, and emit once when `emitWhen` holds; a session that never
//! qualifies expires after `ttl` to `<op>.expired`.
//!
//! Semantics:
//! - Each key's records are buffered until the watermark passes their timestamp and then
//!   handled in `(ts, open before accumulate, arrival)` order, so the result does not depend on
//!   arrival order; a record at the same millisecond as the opening record counts. A record
//!   that arrives late (`ts <= watermark`) is applied at once, in arrival order.
//! - One session per key at a time: an `open` record while a session is live is ignored (the
//!   first open wins). `accumulate` records without a live session are ignored.
//! - Aggregates see records with `opened <= ts <= opened + ttl` (inclusive), are available to
//!   `emitWhen` and `emit` as `agg.<name>`, and the opening record as `open`. Their inputs
//!   follow the value rule of [`crate::operator::support::accumulators`]: `null` and missing
//!   fields are skipped by all but `count`; a value of the wrong type sends the record to
//!   `<op>.deadLetter` and changes no aggregate. `first`, `last` and `collect` go by event
//!   time (a late record applied at once still takes its event-time place).
//! - When `emitWhen` first holds, `emit` (default: the opening record plus an `agg` field) is
//!   emitted with the triggering record's event time. The session then stays closed until
//!   `opened + ttl` so that duplicates do not emit again, and is then dropped silently.
//! - A session that reaches `opened + ttl` without emitting goes to `<op>.expired` as the
//!   opening record plus `agg`, with event time `opened + ttl`.

use super::event_order::{hold, input_ranks, released, Buffered, Buffering, OrderedBuffer};
use super::{
    compile, dead_letter, input_index, millis, put, state_key, take, Ctx, Event, Output, Timer,
    WorkloadError, WorkloadOperator,
};
use crate::operator::support::accumulators::{self, Acc, AggregateDef};
use crate::operator::support::legacy::{self, AggState};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use weir_crds::pipeline::{AccumulateSpec, AggregateOp, AggregateSpec, TimeDomain};
use weir_expr::{Expr, Value};

/// An open session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "StoredSession")]
pub struct Session {
    open: Value,
    opened: i64,
    /// Where earlier builds kept the aggregates; always empty now (see [`legacy`]).
    #[serde(rename = "aggs")]
    legacy: Vec<AggState>,
    emitted: bool,
    /// The aggregates.
    accs: Vec<Acc>,
}

/// A session as this build or an earlier one (with `aggs` and no `accs`) stored it.
#[derive(Deserialize)]
struct StoredSession {
    open: Value,
    opened: i64,
    #[serde(default)]
    aggs: Vec<AggState>,
    emitted: bool,
    #[serde(default)]
    accs: Vec<Acc>,
}

impl From<StoredSession> for Session {
    fn from(s: StoredSession) -> Session {
        let accs = if s.aggs.is_empty() {
            s.accs
        } else {
            legacy::upgrade(s.aggs)
        };
        Session {
            open: s.open,
            opened: s.opened,
            legacy: Vec::new(),
            emitted: s.emitted,
            accs,
        }
    }
}

/// A key's buffered records and its session.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AccumulateState {
    buffer: OrderedBuffer,
    session: Option<Session>,
}

impl Buffering for AccumulateState {
    fn buffer(&mut self) -> &mut OrderedBuffer {
        &mut self.buffer
    }
}

/// The accumulate operator.
pub struct Accumulate {
    name: String,
    key: Expr,
    open: usize,
    accumulate: usize,
    ranks: Vec<u32>,
    aggs: Vec<AggregateDef>,
    emit_when: Expr,
    emit: Option<Expr>,
    ttl: i64,
}

impl Accumulate {
    /// Compiles `spec` for an operator named `name` reading `inputs`.
    pub fn new(
        name: String,
        inputs: Vec<String>,
        spec: &AccumulateSpec,
    ) -> Result<Self, WorkloadError> {
        let emit = match &spec.emit {
            Some(src) => Some(compile(&name, "accumulate.emit", src, &["open", "agg"])?),
            None => None,
        };
        Ok(Accumulate {
            key: compile(&name, "accumulate.key", &spec.key, &["e"])?,
            open: input_index(&name, "accumulate.open", &inputs, &spec.open)?,
            accumulate: input_index(&name, "accumulate.accumulate", &inputs, &spec.accumulate)?,
            ranks: input_ranks(&inputs, &[spec.open.clone(), spec.accumulate.clone()]),
            aggs: compile_aggregates(&name, "accumulate.aggregates", &spec.aggregates)?,
            emit_when: compile(
                &name,
                "accumulate.emitWhen",
                &spec.emit_when,
                &["open", "agg"],
            )?,
            emit,
            ttl: millis(spec.ttl),
            name,
        })
    }

    /// The aggregates' results as a map `name -> value`.
    fn result(&self, accs: &[Acc]) -> Value {
        Value::map(accumulators::results(&self.aggs, accs))
    }

    /// The opening record with an `agg` field (or `{open, agg}` if it is not a map).
    fn default_output(open: &Value, agg: Value) -> Value {
        match open {
            Value::Map(m) => {
                let mut m = (**m).clone();
                m.insert("agg", agg);
                Value::Map(Arc::new(m))
            }
            other => Value::map([("open", other.clone()), ("agg", agg)]),
        }
    }

    /// Closes a session that reached its TTL: `.expired` unless it already emitted.
    fn expire(&self, session: Session, ctx: &mut Ctx<'_, AccumulateState>) {
        if !session.emitted {
            let agg = self.result(&session.accs);
            let value = Self::default_output(&session.open, agg);
            let ts = session.opened.saturating_add(self.ttl);
            ctx.out.emit(Output::Side("expired"), Event::new(ts, value));
        }
    }

    fn on_event(
        &self,
        st: &mut AccumulateState,
        b: Buffered,
        key: &str,
        ctx: &mut Ctx<'_, AccumulateState>,
    ) {
        let ts = b.event.ts;
        if let Some(s) = st.session.take() {
            if s.opened.saturating_add(self.ttl) < ts {
                self.expire(s, ctx);
            } else {
                st.session = Some(s);
            }
        }
        let input = b.input as usize;
        if input == self.open && st.session.is_none() {
            let expires = ts.saturating_add(self.ttl);
            ctx.timers.register(TimeDomain::EventTime, key, expires);
            st.session = Some(Session {
                open: b.event.value,
                opened: ts,
                legacy: Vec::new(),
                emitted: false,
                accs: accumulators::fresh(&self.aggs),
            });
            return;
        }
        if input != self.accumulate {
            return;
        }
        let Some(s) = st.session.as_mut().filter(|s| !s.emitted && ts >= s.opened) else {
            return;
        };
        let inputs = match accumulators::inputs(&self.aggs, &b.event.value) {
            Ok(inputs) => inputs,
            Err(err) => return dead_letter(ctx, b.event, &err),
        };
        accumulators::add_all(&mut s.accs, ts, &inputs);
        let agg = self.result(&s.accs);
        match self.emit_when.eval_bool(&[&s.open, &agg]) {
            Ok(false) => {}
            Ok(true) => {
                let out = match &self.emit {
                    None => Ok(Self::default_output(&s.open, agg)),
                    Some(x) => x.eval(&[&s.open, &agg]),
                };
                s.emitted = true;
                s.accs.clear();
                match out {
                    Ok(v) => ctx.out.emit(Output::Main, Event::new(ts, v)),
                    Err(err) => dead_letter(ctx, b.event, &err.to_string()),
                }
            }
            Err(err) => dead_letter(ctx, b.event, &err.to_string()),
        }
    }

    /// Expires the session if `now` reached its TTL, then stores or clears the key's state.
    fn finish(
        &self,
        mut st: AccumulateState,
        key: &str,
        now: i64,
        ctx: &mut Ctx<'_, AccumulateState>,
    ) -> Result<(), WorkloadError> {
        if let Some(s) = st.session.take() {
            if s.opened.saturating_add(self.ttl) <= now {
                self.expire(s, ctx);
            } else {
                st.session = Some(s);
            }
        }
        if st.buffer.is_empty() && st.session.is_none() {
            Ok(())
        } else {
            put(ctx, &self.name, key, st)
        }
    }
}

/// Compiles `specs`; `field` is the spec path used in errors (e.g. `accumulate.aggregates`).
fn compile_aggregates(
    operator: &str,
    field: &str,
    specs: &[AggregateSpec],
) -> Result<Vec<AggregateDef>, WorkloadError> {
    let mut defs = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        let of = match (&s.of, s.op) {
            (Some(src), _) => Some(compile(operator, &format!("{field}[{i}].of"), src, &["e"])?),
            (None, AggregateOp::Count) => None,
            (None, _) => {
                return Err(WorkloadError::InvalidSpec {
                    operator: operator.to_string(),
                    field: format!("{field}[{i}].of"),
                    message: "required unless op is count".to_string(),
                })
            }
        };
        defs.push(AggregateDef {
            name: Arc::from(s.name.as_str()),
            op: s.op,
            of,
        });
    }
    Ok(defs)
}

impl WorkloadOperator for Accumulate {
    type State = AccumulateState;

    fn name(&self) -> &str {
        &self.name
    }

    fn process(
        &mut self,
        input: usize,
        event: Event,
        ctx: &mut Ctx<'_, AccumulateState>,
    ) -> Result<(), WorkloadError> {
        if input != self.open && input != self.accumulate {
            return Ok(());
        }
        let Some(sk) = state_key(&self.key, &event, ctx) else {
            return Ok(());
        };
        let mut st = take(ctx, &self.name, &sk)?.unwrap_or_default();
        let ts = event.ts;
        let input32 = u32::try_from(input).unwrap_or(u32::MAX);
        let rank = self.ranks.get(input).copied().unwrap_or(u32::MAX);
        if ts <= ctx.watermark {
            let b = Buffered {
                rank,
                seq: 0,
                input: input32,
                event,
            };
            self.on_event(&mut st, b, &sk, ctx);
            let watermark = ctx.watermark;
            return self.finish(st, &sk, watermark, ctx);
        }
        hold(&self.name, &sk, st, (input, rank), event, ctx)
    }

    fn on_timer(
        &mut self,
        timer: &Timer,
        ctx: &mut Ctx<'_, AccumulateState>,
    ) -> Result<(), WorkloadError> {
        let Some((mut st, events)) = released(&self.name, timer, ctx)? else {
            return Ok(());
        };
        for b in events {
            self.on_event(&mut st, b, &timer.key, ctx);
        }
        self.finish(st, &timer.key, timer.ts, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::workload::memory::MemoryDriver;
    use weir_crds::Dur;

    const CLICK: usize = 0;
    const HEARTBEAT: usize = 1;
    const HOUR: i64 = 3_600_000;

    fn effective_click() -> Accumulate {
        let spec = AccumulateSpec {
            key: "e.clickId".into(),
            open: "clicks".into(),
            accumulate: "heartbeats".into(),
            aggregates: vec![
                AggregateSpec {
                    name: "heartbeats".into(),
                    op: AggregateOp::Count,
                    of: None,
                },
                AggregateSpec {
                    name: "lastPos".into(),
                    op: AggregateOp::Max,
                    of: Some("e.pos".into()),
                },
            ],
            emit_when: "agg.heartbeats >= 120".into(),
            emit: Some(
                "{'clickId': open.clickId, 'heartbeats': agg.heartbeats, 'pos': agg.lastPos}"
                    .into(),
            ),
            ttl: Dur::secs(3 * 3600),
        };
        Accumulate::new(
            "effective".into(),
            vec!["clicks".into(), "heartbeats".into()],
            &spec,
        )
        .unwrap()
    }

    fn click(ts: i64, id: &str) -> (usize, Event) {
        let v = Value::from_json(&format!(r#"{{"clickId":"{id}","ts":{ts}}}"#)).unwrap();
        (CLICK, Event::new(ts, v))
    }

    fn beat(ts: i64, id: &str, pos: i64) -> (usize, Event) {
        let v = Value::from_json(&format!(r#"{{"clickId":"{id}","pos":{pos}}}"#)).unwrap();
        (HEARTBEAT, Event::new(ts, v))
    }

    /// A click at `t0` and `n` heartbeats every 3 s, the first at the click's millisecond
    /// but arriving before it.
    fn session(id: &str, t0: i64, n: i64) -> Vec<(usize, Event)> {
        let mut v = vec![beat(t0, id, 0), click(t0, id)];
        v.extend((1..n).map(|i| beat(t0 + 3_000 * i, id, i)));
        v
    }

    fn run(
        op: &mut Accumulate,
        events: &[(usize, Event)],
    ) -> (Vec<(Output, Event)>, MemoryDriver<AccumulateState>) {
        let mut d = MemoryDriver::new();
        for (i, e) in events {
            d.process(op, *i, e.clone()).unwrap();
            d.advance_watermark(op, e.ts - 1_000).unwrap();
        }
        d.advance_watermark(op, i64::MAX).unwrap();
        (d.take_output(), d)
    }

    #[test]
    fn exactly_120_heartbeats_emit_once() {
        let (out, d) = run(&mut effective_click(), &session("c1", 1_000, 120));
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, Output::Main);
        assert_eq!(out[0].1.ts, 1_000 + 119 * 3_000);
        assert_eq!(
            out[0].1.value.to_json(),
            r#"{"clickId":"c1","heartbeats":120,"pos":119}"#
        );
        assert_eq!(d.state_len(), 0);
    }

    #[test]
    fn more_heartbeats_still_emit_only_once() {
        let (out, _) = run(&mut effective_click(), &session("c1", 1_000, 200));
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn heartbeat_119_does_not_emit_and_the_session_expires_at_three_hours() {
        let mut op = effective_click();
        let mut d = MemoryDriver::new();
        for (i, e) in session("c1", 1_000, 119) {
            d.process(&mut op, i, e).unwrap();
        }
        d.advance_watermark(&mut op, 1_000 + 3 * HOUR - 1).unwrap();
        assert!(d.take_output().is_empty());
        d.advance_watermark(&mut op, 1_000 + 3 * HOUR).unwrap();
        let out = d.take_output();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Output::Side("expired"));
        assert_eq!(out[0].1.ts, 1_000 + 3 * HOUR);
        assert_eq!(
            out[0].1.value.get("agg").get("heartbeats"),
            &Value::Int(119)
        );
        assert_eq!(out[0].1.value.get("clickId").as_str(), Some("c1"));
        assert_eq!(d.state_len(), 0);
    }

    #[test]
    fn heartbeats_after_the_ttl_or_without_a_click_do_not_count() {
        let mut events = vec![beat(0, "c1", 0), click(1_000, "c1")];
        events.extend((1..120).map(|i| beat(1_000 + 3_000 * i, "c1", i)));
        events.push(beat(1_001 + 3 * HOUR, "c1", 999));
        events.push(beat(5_000, "c2", 1));
        let (out, _) = run(&mut effective_click(), &events);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, Output::Side("expired"));
        assert_eq!(
            out[0].1.value.get("agg").get("heartbeats"),
            &Value::Int(119)
        );
    }

    #[test]
    fn a_second_click_during_a_live_session_is_ignored() {
        let mut events = session("c1", 0, 60);
        events.push(click(200_000, "c1"));
        events.extend((60..120).map(|i| beat(3_000 * i, "c1", i)));
        events.sort_by_key(|(_, e)| e.ts);
        let (out, _) = run(&mut effective_click(), &events);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Output::Main);
    }

    #[test]
    fn restart_from_a_mid_stream_snapshot_gives_identical_output() {
        let mut events = session("a", 0, 120);
        events.extend(session("b", 10_000, 119));
        events.extend(session("c", 20_000, 130));
        events.sort_by_key(|(_, e)| e.ts);
        let run = |cut: Option<usize>| {
            let mut op = effective_click();
            let mut d = MemoryDriver::new();
            let mut out = Vec::new();
            for (n, (i, e)) in events.iter().enumerate() {
                if Some(n) == cut {
                    out.extend(d.take_output());
                    d = d.checkpoint_and_restore().unwrap();
                    op = effective_click();
                    d.start(&mut op).unwrap();
                }
                d.process(&mut op, *i, e.clone()).unwrap();
                d.advance_watermark(&mut op, e.ts - 4_000).unwrap();
            }
            d.advance_watermark(&mut op, i64::MAX).unwrap();
            out.extend(d.take_output());
            out
        };
        let uninterrupted = run(None);
        let outputs: Vec<Output> = uninterrupted.iter().map(|(o, _)| *o).collect();
        assert_eq!(
            outputs,
            vec![Output::Main, Output::Main, Output::Side("expired")]
        );
        for cut in (1..events.len()).step_by(7) {
            assert_eq!(run(Some(cut)), uninterrupted, "restart before record {cut}");
        }
    }

    /// A session written by the previous build (commit 4f8157f; aggregates count, sum, max
    /// and first in its `AggState` form), binary state codec and JSON.
    const OLD_SESSION_BIN: &str =
        "b10a040b010807636c69636b49640802633105d00f0a040c00820c010c00870c0302840c060208016103";
    const OLD_SESSION_JSON: &str = r#"{"open":{"clickId":"c1"},"opened":1000,"aggs":[{"Count":2},{"Sum":{"Int":7}},{"Max":4},{"First":"a"}],"emitted":false}"#;

    #[test]
    fn a_session_of_the_previous_build_restores() {
        let bytes: Vec<u8> = (0..OLD_SESSION_BIN.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&OLD_SESSION_BIN[i..i + 2], 16).unwrap())
            .collect();
        let from_bin: Session = crate::state::codec::decode(&bytes).unwrap();
        let from_json: Session = crate::state::codec::decode(OLD_SESSION_JSON.as_bytes()).unwrap();
        assert_eq!(from_bin, from_json);
        assert_eq!(from_bin.opened, 1000);
        assert!(from_bin.legacy.is_empty() && !from_bin.emitted);
        let results: Vec<String> = from_bin.accs.iter().map(|a| a.result().to_json()).collect();
        assert_eq!(results, ["2", "7", "4", r#""a""#]);
        // and today's form round-trips
        let mut again = Vec::new();
        crate::state::codec::encode_into(&from_bin, &mut again).unwrap();
        let back: Session = crate::state::codec::decode(&again).unwrap();
        assert_eq!(back, from_bin);
    }
}
