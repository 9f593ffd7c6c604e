//! `pattern`: complex event processing — a sequence of steps matched per key within a time
//! bound, deterministic for equal timestamps.
//!
//! Semantics (what a user can rely on):
//! - **Ordering.** Each key's events are buffered until the watermark passes their timestamp,
//!   then processed sorted by `(ts, sameTimestampOrder position, arrival)`; inputs missing from
//!   `sameTimestampOrder` come after the listed ones in input order. So an impression and a
//!   click with the same millisecond match whichever arrived first.
//! - **Late events.** An event arriving with `ts <= watermark` is still matched when its key
//!   has not handled anything at or after its time: the key has buffered or partial state, and
//!   every event and time-out the key has handled is earlier than the late event (the key
//!   remembers how far it has handled, `handled_to`). It is then handled at once, exactly where
//!   it would have been in `(ts, ...)` order, so the result is the one an in-order arrival
//!   gives (e.g. a click that came 3 s before its impression, which is 2 s older than the
//!   watermark). Otherwise — no state for the key, or the key has moved past the event — it
//!   goes to `<op>.late`. A match completed by a late event carries its (late) event time.
//! - **`within` is inclusive.** A match may use events with `ts <= first.ts + within`: a click
//!   exactly 5 minutes after its impression matches, one 5 minutes + 1 ms after does not.
//! - **Steps.** Each event that matches step 0 starts a new partial match (so does an event
//!   already used by another partial match). An event extends the current step if it comes
//!   from the step's input, its `where` holds and the step is not full; otherwise, once the
//!   current step has its minimum count, it may start the next step. Matching is greedy and
//!   does not branch. `followedBy: false` (`next`) makes the *first* event of a step strict:
//!   the key's very next event must be it, or the partial match is dropped. Repetitions within
//!   a step always skip non-matching events.
//! - **Emission.** A match whose last step has a fixed count is emitted as soon as that count
//!   is reached. A match whose last step can still grow (`oneOrMore`, `2..`, `2..5`) is emitted
//!   once `first.ts + within` has passed, with all events it collected (e.g. `size(click)`).
//!   The record is `emit` evaluated with each step's name bound to its event (steps with a
//!   count of exactly 1) or to the list of its events (other steps); its event time is the
//!   time of its last event.
//! - **Time-outs.** A partial match still short of its steps' minimum counts at
//!   `first.ts + within` goes to `<op>.timedOut` as `{step: event-or-list-or-null, ...}` with
//!   event time `first.ts + within` (for impression→click: the impressions never clicked).
//!   Events that match no partial match and start none (a click without an impression, or one
//!   after the bound) are dropped.

use super::event_order::{hold, input_ranks, released, Buffered, Buffering, OrderedBuffer};
use super::{
    compile, dead_letter, input_index, millis, put, state_key, take, Ctx, Event, Output, Timer,
    WorkloadError, WorkloadOperator,
};
use crate::operator::union_fields;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use weir_crds::pipeline::{PatternSpec, TimeDomain};
use weir_expr::{Expr, Map, Value};

struct Step {
    as_: Arc<str>,
    from: usize,
    where_: Option<Expr>,
    strict: bool,
    min: u32,
    max: Option<u32>,
}

/// A partial match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    /// Event time of its first event.
    start: i64,
    /// Event time of its latest event.
    last_ts: i64,
    /// The step being filled.
    step: usize,
    /// Events bound to that step so far.
    count: u32,
    /// Events bound to each step.
    bound: Vec<Vec<Value>>,
}

/// A key's buffered events and partial matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PatternState {
    buffer: OrderedBuffer,
    partials: Vec<Partial>,
    /// Every event and time-out of this key at or before this time has been handled (a
    /// late event after it can still be handled in order). State written before this field
    /// existed reads as `i64::MAX`: nothing late is accepted for it.
    #[serde(default = "handled_to_unknown")]
    handled_to: i64,
}

fn handled_to_unknown() -> i64 {
    i64::MAX
}

impl PatternState {
    /// A key's first state at watermark `watermark`: nothing after the watermark can have been
    /// handled for it yet.
    fn new(watermark: i64) -> Self {
        PatternState {
            buffer: OrderedBuffer::default(),
            partials: Vec::new(),
            handled_to: watermark,
        }
    }
}

impl Buffering for PatternState {
    fn buffer(&mut self) -> &mut OrderedBuffer {
        &mut self.buffer
    }
}

enum Advance {
    Took,
    Completed,
    Dead,
    Ignored,
}

/// The pattern operator.
pub struct Pattern {
    name: String,
    key: Expr,
    steps: Vec<Step>,
    within: i64,
    ranks: Vec<u32>,
    emit: Expr,
}

impl Pattern {
    /// Compiles `spec` for an operator named `name` reading `inputs`.
    pub fn new(
        name: String,
        inputs: Vec<String>,
        spec: &PatternSpec,
    ) -> Result<Self, WorkloadError> {
        if spec.sequence.is_empty() {
            return Err(WorkloadError::InvalidSpec {
                operator: name,
                field: "pattern.sequence".into(),
                message: "at least one step is required".into(),
            });
        }
        let mut steps = Vec::with_capacity(spec.sequence.len());
        let mut names: Vec<&str> = vec!["e"];
        for (i, s) in spec.sequence.iter().enumerate() {
            let field = format!("pattern.sequence[{i}]");
            let q = s
                .quantifier()
                .map_err(|message| WorkloadError::InvalidSpec {
                    operator: name.clone(),
                    field: format!("{field}.times"),
                    message,
                })?;
            let where_ = match &s.where_ {
                Some(src) => Some(compile(&name, &format!("{field}.where"), src, &names)?),
                None => None,
            };
            steps.push(Step {
                as_: Arc::from(s.as_.as_str()),
                from: input_index(&name, &format!("{field}.from"), &inputs, &s.from)?,
                where_,
                strict: !s.followed_by,
                min: q.min,
                max: q.max,
            });
            names.push(&s.as_);
        }
        let emit = compile(&name, "pattern.emit", &spec.emit, &names[1..])?;
        Ok(Pattern {
            key: compile(&name, "pattern.key", &spec.key, &["e"])?,
            ranks: input_ranks(&inputs, &spec.same_timestamp_order),
            within: millis(spec.within),
            steps,
            emit,
            name,
        })
    }

    /// What step `i`'s name is bound to: its event (count exactly 1) or its events' list.
    fn binding(&self, p: &Partial, i: usize) -> Value {
        if self.steps[i].max == Some(1) {
            p.bound[i].first().cloned().unwrap_or(Value::Null)
        } else {
            Value::List(Arc::new(p.bound[i].clone()))
        }
    }

    fn matches(&self, i: usize, p: &Partial, b: &Buffered) -> Result<bool, String> {
        let step = &self.steps[i];
        if step.from != b.input as usize {
            return Ok(false);
        }
        let Some(cond) = &step.where_ else {
            return Ok(true);
        };
        let earlier: Vec<Value> = (0..i).map(|j| self.binding(p, j)).collect();
        let mut args: Vec<&Value> = Vec::with_capacity(i + 1);
        args.push(&b.event.value);
        args.extend(earlier.iter());
        cond.eval_bool(&args).map_err(|e| e.to_string())
    }

    /// Binds `event` to the partial match's current step; true when the match is complete
    /// and cannot grow.
    fn bind(&self, p: &mut Partial, event: &Event) -> bool {
        p.bound[p.step].push(event.value.clone());
        p.count += 1;
        p.last_ts = event.ts;
        if Some(p.count) == self.steps[p.step].max {
            if p.step + 1 == self.steps.len() {
                return true;
            }
            p.step += 1;
            p.count = 0;
        }
        false
    }

    fn advance(&self, p: &mut Partial, b: &Buffered, errors: &mut Vec<String>) -> Advance {
        let step = &self.steps[p.step];
        match self.matches(p.step, p, b) {
            Ok(true) => {
                return if self.bind(p, &b.event) {
                    Advance::Completed
                } else {
                    Advance::Took
                };
            }
            Ok(false) => {}
            Err(e) => errors.push(e),
        }
        if p.count >= step.min && p.count > 0 && p.step + 1 < self.steps.len() {
            match self.matches(p.step + 1, p, b) {
                Ok(true) => {
                    p.step += 1;
                    p.count = 0;
                    return if self.bind(p, &b.event) {
                        Advance::Completed
                    } else {
                        Advance::Took
                    };
                }
                Ok(false) => {}
                Err(e) => errors.push(e),
            }
        }
        if p.count == 0 && p.step > 0 && step.strict {
            Advance::Dead
        } else {
            Advance::Ignored
        }
    }

    fn emit_match(&self, p: &Partial, ctx: &mut Ctx<'_, PatternState>) {
        let bindings: Vec<Value> = (0..self.steps.len()).map(|i| self.binding(p, i)).collect();
        let args: Vec<&Value> = bindings.iter().collect();
        match self.emit.eval(&args) {
            Ok(v) => ctx.out.emit(Output::Main, Event::new(p.last_ts, v)),
            Err(e) => {
                let record = self.bindings_map(p);
                dead_letter(ctx, Event::new(p.last_ts, record), &e.to_string());
            }
        }
    }

    fn bindings_map(&self, p: &Partial) -> Value {
        let mut m = Map::with_capacity(self.steps.len());
        for (i, s) in self.steps.iter().enumerate() {
            m.insert(s.as_.clone(), self.binding(p, i));
        }
        Value::Map(Arc::new(m))
    }

    /// Finishes every partial match whose bound ends before `now` (`inclusive`: at or before).
    fn expire(
        &self,
        st: &mut PatternState,
        now: i64,
        inclusive: bool,
        ctx: &mut Ctx<'_, PatternState>,
    ) {
        let last = self.steps.len() - 1;
        let min_last = self.steps[last].min;
        st.partials.retain(|p| {
            let end = p.start.saturating_add(self.within);
            if end > now || (end == now && !inclusive) {
                return true;
            }
            if p.step == last && p.count >= min_last {
                self.emit_match(p, ctx);
            } else {
                let v = self.bindings_map(p);
                ctx.out.emit(Output::Side("timedOut"), Event::new(end, v));
            }
            false
        });
    }

    fn on_event(
        &self,
        st: &mut PatternState,
        b: Buffered,
        key: &str,
        ctx: &mut Ctx<'_, PatternState>,
    ) {
        self.expire(st, b.event.ts, false, ctx);
        let mut errors = Vec::new();
        let mut kept = Vec::with_capacity(st.partials.len() + 1);
        for mut p in std::mem::take(&mut st.partials) {
            match self.advance(&mut p, &b, &mut errors) {
                Advance::Completed => self.emit_match(&p, ctx),
                Advance::Dead => {}
                Advance::Took | Advance::Ignored => kept.push(p),
            }
        }
        let mut fresh = Partial {
            start: b.event.ts,
            last_ts: b.event.ts,
            step: 0,
            count: 0,
            bound: vec![Vec::new(); self.steps.len()],
        };
        match self.matches(0, &fresh, &b) {
            Ok(true) => {
                if self.bind(&mut fresh, &b.event) {
                    self.emit_match(&fresh, ctx);
                } else {
                    let end = fresh.start.saturating_add(self.within);
                    ctx.timers.register(TimeDomain::EventTime, key, end);
                    kept.push(fresh);
                }
            }
            Ok(false) => {}
            Err(e) => errors.push(e),
        }
        st.partials = kept;
        if !errors.is_empty() {
            dead_letter(ctx, b.event, &errors.join("; "));
        }
    }
}

impl Pattern {
    /// An event with `ts <= watermark`: handled at once when its key has state and has handled
    /// nothing at or after its time (every buffered event is after the watermark, so it comes
    /// first), otherwise sent to `<op>.late`.
    fn process_late(
        &self,
        input: usize,
        rank: u32,
        event: Event,
        ctx: &mut Ctx<'_, PatternState>,
    ) -> Result<(), WorkloadError> {
        let Some(sk) = state_key(&self.key, &event, ctx) else {
            return Ok(());
        };
        let Some(mut st) = take(ctx, &self.name, &sk)? else {
            ctx.out.emit(Output::Side("late"), event);
            return Ok(());
        };
        if event.ts <= st.handled_to {
            ctx.out.emit(Output::Side("late"), event);
            return put(ctx, &self.name, &sk, st);
        }
        let seq = st.buffer.next_seq;
        st.buffer.next_seq += 1;
        let b = Buffered {
            rank,
            seq,
            input: u32::try_from(input).unwrap_or(u32::MAX),
            event,
        };
        let ts = b.event.ts;
        self.on_event(&mut st, b, &sk, ctx);
        st.handled_to = st.handled_to.max(ts);
        if st.buffer.is_empty() && st.partials.is_empty() {
            Ok(())
        } else {
            put(ctx, &self.name, &sk, st)
        }
    }
}

impl WorkloadOperator for Pattern {
    type State = PatternState;

    fn name(&self) -> &str {
        &self.name
    }

    fn hot_cache_share(&self) -> usize {
        // partial matches live for `within` and hold whole events: a hundred thousand of them
        // decoded took 60 MiB; encoded they take a fifth of that
        128
    }

    fn fields_needed(
        &self,
        input: usize,
        outputs: &crate::operator::FieldNeeds<'_>,
    ) -> Option<Vec<Arc<str>>> {
        // time-outs, late events and dead letters carry whole events
        if !(outputs.side_unread("timedOut")
            && outputs.side_unread("late")
            && outputs.side_unread("deadLetter"))
        {
            return None;
        }
        // the key of every event; for the steps this input feeds, what their own condition,
        // later steps' conditions and `emit` read of the events they bind
        let mut need = self.key.fields_read("e");
        for (i, s) in self.steps.iter().enumerate() {
            if s.from != input {
                continue;
            }
            if let Some(w) = &s.where_ {
                need = union_fields(need, w.fields_read("e").as_deref());
            }
            for later in self.steps[i + 1..].iter().filter_map(|l| l.where_.as_ref()) {
                need = union_fields(need, later.fields_read(&s.as_).as_deref());
            }
            need = union_fields(need, self.emit.fields_read(&s.as_).as_deref());
        }
        need
    }

    fn process(
        &mut self,
        input: usize,
        event: Event,
        ctx: &mut Ctx<'_, PatternState>,
    ) -> Result<(), WorkloadError> {
        let rank = self.ranks.get(input).copied().unwrap_or(u32::MAX);
        if event.ts <= ctx.watermark {
            return self.process_late(input, rank, event, ctx);
        }
        let Some(sk) = state_key(&self.key, &event, ctx) else {
            return Ok(());
        };
        let st = match take(ctx, &self.name, &sk)? {
            Some(st) => st,
            None => PatternState::new(ctx.watermark),
        };
        hold(&self.name, &sk, st, (input, rank), event, ctx)
    }

    fn on_timer(
        &mut self,
        timer: &Timer,
        ctx: &mut Ctx<'_, PatternState>,
    ) -> Result<(), WorkloadError> {
        let Some((mut st, events)) = released(&self.name, timer, ctx)? else {
            return Ok(());
        };
        st.handled_to = st.handled_to.max(timer.ts);
        for b in events {
            self.on_event(&mut st, b, &timer.key, ctx);
        }
        self.expire(&mut st, timer.ts, true, ctx);
        if st.buffer.is_empty() && st.partials.is_empty() {
            Ok(())
        } else {
            put(ctx, &self.name, &timer.key, st)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::workload::memory::MemoryDriver;
    use weir_crds::pipeline::PatternStep;
    use weir_crds::Dur;

    const IMP: usize = 0;
    const CLICK: usize = 1;
    const MIN5: i64 = 300_000;

    fn step(as_: &str, from: &str, followed_by: bool, times: Option<&str>) -> PatternStep {
        PatternStep {
            as_: as_.into(),
            from: from.into(),
            where_: None,
            followed_by,
            times: times.map(String::from),
        }
    }

    fn impression_click(times: &str) -> Pattern {
        let spec = PatternSpec {
            key: "e.requestId + ':' + string(e.adId)".into(),
            sequence: vec![
                step("imp", "impressions", false, None),
                step("click", "clicks", true, Some(times)),
            ],
            within: Dur::secs(300),
            same_timestamp_order: vec!["impressions".into(), "clicks".into()],
            emit: "{'requestId': imp.requestId, 'adId': imp.adId, 'clicks': size(click)}".into(),
        };
        Pattern::new(
            "sessions".into(),
            vec!["impressions".into(), "clicks".into()],
            &spec,
        )
        .unwrap()
    }

    #[test]
    fn events_keep_the_fields_key_and_emit_read_when_no_output_carries_them_whole() {
        use crate::operator::FieldNeeds;
        let op = impression_click("oneOrMore");
        let sides = &["timedOut", "late", "deadLetter"];
        let unread = FieldNeeds {
            side_outputs: sides,
            outputs: vec![None, Some(vec![]), Some(vec![]), Some(vec![])],
        };
        let names = |f: Option<Vec<Arc<str>>>| {
            f.map(|f| f.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(
            names(op.fields_needed(IMP, &unread)),
            Some(vec!["requestId".to_string(), "adId".to_string()])
        );
        // size(click) uses the clicks whole
        assert_eq!(op.fields_needed(CLICK, &unread), None);
        let timed_out_read = FieldNeeds {
            side_outputs: sides,
            outputs: vec![None, None, Some(vec![]), Some(vec![])],
        };
        assert_eq!(op.fields_needed(IMP, &timed_out_read), None);
    }

    fn ev(ts: i64, req: &str) -> Event {
        Event::new(
            ts,
            Value::from_json(&format!(r#"{{"requestId":"{req}","adId":7,"ts":{ts}}}"#)).unwrap(),
        )
    }

    fn run(op: &mut Pattern, events: &[(usize, Event)], final_wm: i64) -> Vec<(Output, Event)> {
        let mut d: MemoryDriver<PatternState> = MemoryDriver::new();
        for (i, e) in events {
            d.process(op, *i, e.clone()).unwrap();
        }
        d.advance_watermark(op, final_wm).unwrap();
        d.take_output()
    }

    #[test]
    fn equal_millisecond_impression_and_click_match_in_both_arrival_orders() {
        for events in [
            vec![(IMP, ev(1_000, "r1")), (CLICK, ev(1_000, "r1"))],
            vec![(CLICK, ev(1_000, "r1")), (IMP, ev(1_000, "r1"))],
        ] {
            let out = run(&mut impression_click("oneOrMore"), &events, 1_000 + MIN5);
            assert_eq!(out.len(), 1, "{out:?}");
            assert_eq!(out[0].0, Output::Main);
            assert_eq!(out[0].1.ts, 1_000);
            let v = &out[0].1.value;
            assert_eq!(v.get("requestId").as_str(), Some("r1"));
            assert_eq!(v.get("adId"), &Value::Int(7));
            assert_eq!(v.get("clicks"), &Value::Int(1));
        }
    }

    #[test]
    fn within_is_inclusive_a_click_at_exactly_five_minutes_matches() {
        let events = [(IMP, ev(1_000, "r1")), (CLICK, ev(1_000 + MIN5, "r1"))];
        let out = run(&mut impression_click("oneOrMore"), &events, i64::MAX);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Output::Main);
        assert_eq!(out[0].1.ts, 1_000 + MIN5);
    }

    #[test]
    fn a_click_one_millisecond_after_five_minutes_times_the_impression_out() {
        let events = [(IMP, ev(1_000, "r1")), (CLICK, ev(1_001 + MIN5, "r1"))];
        let out = run(&mut impression_click("oneOrMore"), &events, i64::MAX);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, Output::Side("timedOut"));
        assert_eq!(out[0].1.ts, 1_000 + MIN5);
        assert_eq!(
            out[0].1.value.get("imp").get("requestId").as_str(),
            Some("r1")
        );
        assert_eq!(out[0].1.value.get("click"), &Value::List(Arc::new(vec![])));
    }

    #[test]
    fn one_or_more_clicks_are_collected_into_one_match_at_the_bound() {
        let mut op = impression_click("oneOrMore");
        let mut d = MemoryDriver::new();
        d.process(&mut op, IMP, ev(0, "r1")).unwrap();
        d.process(&mut op, CLICK, ev(10, "r1")).unwrap();
        d.process(&mut op, CLICK, ev(20, "r2")).unwrap();
        d.process(&mut op, CLICK, ev(MIN5 - 5, "r1")).unwrap();
        d.process(&mut op, CLICK, ev(30, "r1")).unwrap();
        d.advance_watermark(&mut op, MIN5 - 1).unwrap();
        assert!(d.take_output().is_empty(), "the match can still grow");
        d.advance_watermark(&mut op, MIN5).unwrap();
        let out = d.take_output();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.value.get("clicks"), &Value::Int(3));
        assert_eq!(out[0].1.ts, MIN5 - 5);
        assert_eq!(d.state_len(), 0, "state is cleared");
    }

    #[test]
    fn a_fixed_count_last_step_emits_as_soon_as_it_is_reached() {
        let mut op = impression_click("2");
        let mut d = MemoryDriver::new();
        for (i, e) in [
            (IMP, ev(0, "r1")),
            (CLICK, ev(10, "r1")),
            (CLICK, ev(20, "r1")),
            (CLICK, ev(30, "r1")),
        ] {
            d.process(&mut op, i, e).unwrap();
        }
        d.advance_watermark(&mut op, 20).unwrap();
        let out = d.take_output();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.value.get("clicks"), &Value::Int(2));
        assert_eq!(out[0].1.ts, 20);
        d.advance_watermark(&mut op, i64::MAX).unwrap();
        assert!(d.take_output().is_empty(), "the third click starts nothing");
    }

    #[test]
    fn strict_next_step_requires_the_very_next_event() {
        let spec = PatternSpec {
            key: "e.k".into(),
            sequence: vec![
                {
                    let mut s = step("a", "in", false, None);
                    s.where_ = Some("e.t == 'a'".into());
                    s
                },
                {
                    let mut s = step("b", "in", false, None);
                    s.where_ = Some("e.t == 'b' && a.t == 'a'".into());
                    s
                },
            ],
            within: Dur::secs(60),
            same_timestamp_order: vec![],
            emit: "{'a': a.n, 'b': b.n}".into(),
        };
        let mut op = Pattern::new("p".into(), vec!["in".into()], &spec).unwrap();
        let e = |ts: i64, t: &str| {
            Event::new(
                ts,
                Value::from_json(&format!(r#"{{"k":1,"t":"{t}","n":{ts}}}"#)).unwrap(),
            )
        };
        let out = run(
            &mut op,
            &[
                (0, e(1, "a")),
                (0, e(2, "x")),
                (0, e(3, "b")),
                (0, e(4, "a")),
                (0, e(5, "b")),
            ],
            i64::MAX,
        );
        let main: Vec<String> = out
            .iter()
            .filter(|(o, _)| *o == Output::Main)
            .map(|(_, e)| e.value.to_json())
            .collect();
        assert_eq!(main, vec![r#"{"a":4,"b":5}"#.to_string()]);
    }

    #[test]
    fn a_late_event_goes_to_the_late_output() {
        let mut op = impression_click("oneOrMore");
        let mut d = MemoryDriver::new();
        d.advance_watermark(&mut op, 5_000).unwrap();
        d.process(&mut op, CLICK, ev(5_000, "r1")).unwrap();
        let out = d.take_output();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Output::Side("late"));
    }

    #[test]
    fn a_late_impression_still_matches_its_click_that_arrived_first() {
        // The benchmark's missed match: the click arrives first (ts 4_310), then the watermark
        // passes 2_481, then the impression arrives with ts 2_433 — late, but its key has
        // handled nothing yet, so it is matched as an in-order arrival would be.
        let mut op = impression_click("oneOrMore");
        let mut d = MemoryDriver::new();
        d.process(&mut op, CLICK, ev(4_310, "r1")).unwrap();
        d.advance_watermark(&mut op, 2_481).unwrap();
        d.process(&mut op, IMP, ev(2_433, "r1")).unwrap();
        d.advance_watermark(&mut op, i64::MAX).unwrap();
        let out = d.take_output();
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].0, Output::Main);
        assert_eq!(out[0].1.ts, 4_310);
        assert_eq!(out[0].1.value.get("clicks"), &Value::Int(1));
        assert_eq!(d.state_len(), 0, "state is cleared");
    }

    #[test]
    fn a_late_click_joins_only_if_its_key_has_not_moved_past_it() {
        let mut op = impression_click("oneOrMore");
        let mut d = MemoryDriver::new();
        d.process(&mut op, IMP, ev(1_000, "r1")).unwrap();
        d.process(&mut op, CLICK, ev(3_000, "r1")).unwrap();
        d.advance_watermark(&mut op, 3_500).unwrap();
        // The key has handled up to 3_000: a click at 2_000 can no longer be put in order.
        d.process(&mut op, CLICK, ev(2_000, "r1")).unwrap();
        // One at 3_200 can: it joins the open match.
        d.process(&mut op, CLICK, ev(3_200, "r1")).unwrap();
        // No state for r2: late.
        d.process(&mut op, CLICK, ev(3_300, "r2")).unwrap();
        d.advance_watermark(&mut op, i64::MAX).unwrap();
        let out = d.take_output();
        let late: Vec<i64> = out
            .iter()
            .filter(|(o, _)| *o == Output::Side("late"))
            .map(|(_, e)| e.ts)
            .collect();
        assert_eq!(late, vec![2_000, 3_300], "{out:?}");
        let main: Vec<&Event> = out
            .iter()
            .filter(|(o, _)| *o == Output::Main)
            .map(|(_, e)| e)
            .collect();
        assert_eq!(main.len(), 1, "{out:?}");
        assert_eq!(main[0].value.get("clicks"), &Value::Int(2));
        assert_eq!(main[0].ts, 3_200);
    }

    #[test]
    fn state_written_before_handled_to_existed_accepts_nothing_late() {
        let st: PatternState =
            serde_json::from_str(r#"{"buffer":{"pending":[],"next_seq":0},"partials":[]}"#)
                .unwrap();
        assert_eq!(st.handled_to, i64::MAX);
    }

    fn stream() -> Vec<(usize, Event)> {
        let mut v = Vec::new();
        for r in 0..6 {
            let req = format!("r{r}");
            let t = r * 60_000;
            v.push((CLICK, ev(t, &req)));
            v.push((IMP, ev(t, &req)));
            v.push((CLICK, ev(t + 1_000 * r, &req)));
            v.push((CLICK, ev(t + MIN5 + r % 2, &req)));
        }
        v.sort_by_key(|(_, e)| e.ts);
        v
    }

    #[test]
    fn restart_from_a_mid_stream_snapshot_gives_identical_output() {
        let events = stream();
        let run = |cut: Option<usize>| {
            let mut op = impression_click("oneOrMore");
            let mut d = MemoryDriver::new();
            let mut out = Vec::new();
            for (n, (i, e)) in events.iter().enumerate() {
                if Some(n) == cut {
                    out.extend(d.take_output());
                    d = d.checkpoint_and_restore().unwrap();
                    op = impression_click("oneOrMore");
                    d.start(&mut op).unwrap();
                }
                d.process(&mut op, *i, e.clone()).unwrap();
                d.advance_watermark(&mut op, e.ts - 2_000).unwrap();
            }
            d.advance_watermark(&mut op, i64::MAX).unwrap();
            out.extend(d.take_output());
            out
        };
        let uninterrupted = run(None);
        let matched = uninterrupted
            .iter()
            .filter(|(o, _)| *o == Output::Main)
            .count();
        let timed_out = uninterrupted
            .iter()
            .filter(|(o, _)| *o == Output::Side("timedOut"))
            .count();
        assert_eq!((matched, timed_out), (6, 0), "{uninterrupted:?}");
        for cut in 1..events.len() {
            assert_eq!(run(Some(cut)), uninterrupted, "restart before record {cut}");
        }
    }
}
