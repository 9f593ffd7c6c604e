//! `intervalJoin`: join two keyed streams where
//! `left.ts - before <= right.ts <= left.ts + after` (both bounds inclusive).
//!
//! Each side's records are kept per key until no record of the other side can still join
//! them: a left record until the watermark reaches `left.ts + after`, a right record until it
//! reaches `right.ts + before`. Each pair is emitted once, when its second record arrives, as
//! `emit` over `l` and `r`, with event time `max(l.ts, r.ts)`. A record that arrives late
//! (`ts <= watermark`) goes to `<op>.late`: the records it should have met may be gone.

use super::{
    compile, dead_letter, input_index, millis, put, state_key, take, Ctx, Event, Output, Timer,
    WorkloadError, WorkloadOperator,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use weir_crds::pipeline::{IntervalJoinSpec, TimeDomain};
use weir_expr::{Expr, Value};

/// A key's buffered records of both sides, each in arrival order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JoinState {
    left: Vec<Event>,
    right: Vec<Event>,
}

/// The interval join operator.
pub struct IntervalJoin {
    name: String,
    left: usize,
    right: usize,
    left_key: Expr,
    right_key: Expr,
    before: i64,
    after: i64,
    emit: Expr,
    /// The fields of a left record `emit` reads (`None`: it uses the record whole); a
    /// buffered left record keeps only these.
    left_fields: Option<Vec<Arc<str>>>,
    /// The same for right records.
    right_fields: Option<Vec<Arc<str>>>,
}

/// Pushes `event`, allocating room for just one when `side` has none (most keys of a join
/// hold one record per side; a first push would otherwise allocate room for four).
fn push_compact(side: &mut Vec<Event>, event: Event) {
    if side.capacity() == 0 {
        side.reserve_exact(1);
    }
    side.push(event);
}

impl IntervalJoin {
    /// Compiles `spec` for an operator named `name` reading `inputs`.
    pub fn new(
        name: String,
        inputs: Vec<String>,
        spec: &IntervalJoinSpec,
    ) -> Result<Self, WorkloadError> {
        let emit = compile(&name, "intervalJoin.emit", &spec.emit, &["l", "r"])?;
        Ok(IntervalJoin {
            left_fields: emit.fields_read("l"),
            right_fields: emit.fields_read("r"),
            emit,
            left: input_index(&name, "intervalJoin.left", &inputs, &spec.left)?,
            right: input_index(&name, "intervalJoin.right", &inputs, &spec.right)?,
            left_key: compile(&name, "intervalJoin.leftKey", &spec.left_key, &["e"])?,
            right_key: compile(&name, "intervalJoin.rightKey", &spec.right_key, &["e"])?,
            before: millis(spec.before),
            after: millis(spec.after),
            name,
        })
    }

    fn joins(&self, l: &Event, r: &Event) -> bool {
        l.ts.saturating_sub(self.before) <= r.ts && r.ts <= l.ts.saturating_add(self.after)
    }

    fn emit_pair(&self, l: &Event, r: &Event, ctx: &mut Ctx<'_, JoinState>) {
        let ts = l.ts.max(r.ts);
        match self.emit.eval(&[&l.value, &r.value]) {
            Ok(v) => ctx.out.emit(Output::Main, Event::new(ts, v)),
            Err(err) => {
                let pair = Value::map([("l", l.value.clone()), ("r", r.value.clone())]);
                dead_letter(ctx, Event::new(ts, pair), &err.to_string());
            }
        }
    }
}

impl WorkloadOperator for IntervalJoin {
    type State = JoinState;

    fn name(&self) -> &str {
        &self.name
    }

    fn process(
        &mut self,
        input: usize,
        event: Event,
        ctx: &mut Ctx<'_, JoinState>,
    ) -> Result<(), WorkloadError> {
        let is_left = input == self.left;
        if !is_left && input != self.right {
            return Ok(());
        }
        if event.ts <= ctx.watermark {
            ctx.out.emit(Output::Side("late"), event);
            return Ok(());
        }
        let key_expr = if is_left {
            &self.left_key
        } else {
            &self.right_key
        };
        let Some(sk) = state_key(key_expr, &event, ctx) else {
            return Ok(());
        };
        let fields = if is_left {
            &self.left_fields
        } else {
            &self.right_fields
        };
        let value = match fields {
            Some(fields) => event.value.keeping(fields),
            None => event.value,
        };
        let event = Event::new(event.ts, value);
        let mut st = take(ctx, &self.name, &sk)?.unwrap_or_default();
        let keep_until = if is_left {
            for r in st.right.iter().filter(|r| self.joins(&event, r)) {
                self.emit_pair(&event, r, ctx);
            }
            let until = event.ts.saturating_add(self.after);
            push_compact(&mut st.left, event);
            until
        } else {
            for l in st.left.iter().filter(|l| self.joins(l, &event)) {
                self.emit_pair(l, &event, ctx);
            }
            let until = event.ts.saturating_add(self.before);
            push_compact(&mut st.right, event);
            until
        };
        put(ctx, &self.name, &sk, st)?;
        ctx.timers.register(TimeDomain::EventTime, &sk, keep_until);
        Ok(())
    }

    fn fields_needed(
        &self,
        input: usize,
        outputs: &crate::operator::FieldNeeds<'_>,
    ) -> Option<Vec<Arc<str>>> {
        // a late record and a key's dead letter go out whole
        if !(outputs.side_unread("late") && outputs.side_unread("deadLetter")) {
            return None;
        }
        let (key, fields) = if input == self.left {
            (&self.left_key, &self.left_fields)
        } else if input == self.right {
            (&self.right_key, &self.right_fields)
        } else {
            return Some(vec![]);
        };
        crate::operator::union_fields(key.fields_read("e"), fields.as_deref())
    }

    fn on_timer(
        &mut self,
        timer: &Timer,
        ctx: &mut Ctx<'_, JoinState>,
    ) -> Result<(), WorkloadError> {
        let Some(mut st) = take(ctx, &self.name, &timer.key)? else {
            return Ok(());
        };
        let now = timer.ts;
        st.left.retain(|l| l.ts.saturating_add(self.after) > now);
        st.right.retain(|r| r.ts.saturating_add(self.before) > now);
        if st.left.is_empty() && st.right.is_empty() {
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
    use weir_crds::Dur;

    const LEFT: usize = 0;
    const RIGHT: usize = 1;

    fn join() -> IntervalJoin {
        let spec = IntervalJoinSpec {
            left: "impressions".into(),
            right: "clicks".into(),
            left_key: "e.id".into(),
            right_key: "e.impressionId".into(),
            before: Dur::secs(2),
            after: Dur::secs(5),
            emit: "{'id': l.id, 'l': l.ts, 'r': r.ts}".into(),
        };
        IntervalJoin::new(
            "joined".into(),
            vec!["impressions".into(), "clicks".into()],
            &spec,
        )
        .unwrap()
    }

    fn l(ts: i64, id: &str) -> (usize, Event) {
        let v = Value::from_json(&format!(r#"{{"id":"{id}","ts":{ts}}}"#)).unwrap();
        (LEFT, Event::new(ts, v))
    }

    fn r(ts: i64, id: &str) -> (usize, Event) {
        let v = Value::from_json(&format!(r#"{{"impressionId":"{id}","ts":{ts}}}"#)).unwrap();
        (RIGHT, Event::new(ts, v))
    }

    fn pairs(out: &[(Output, Event)]) -> Vec<(i64, i64)> {
        let mut v: Vec<(i64, i64)> = out
            .iter()
            .filter(|(o, _)| *o == Output::Main)
            .map(|(_, e)| {
                (
                    e.value.get("l").as_i64().unwrap_or(-1),
                    e.value.get("r").as_i64().unwrap_or(-1),
                )
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn joins_within_inclusive_bounds_in_either_arrival_order() {
        let mut op = join();
        let mut d = MemoryDriver::new();
        for (i, e) in [
            r(7_999, "a"),
            r(8_000, "a"),
            l(10_000, "a"),
            r(15_000, "a"),
            r(15_001, "a"),
            r(12_000, "b"),
        ] {
            d.process(&mut op, i, e).unwrap();
        }
        let out = d.take_output();
        assert_eq!(pairs(&out), vec![(10_000, 8_000), (10_000, 15_000)]);
        let ts: Vec<i64> = out.iter().map(|(_, e)| e.ts).collect();
        assert_eq!(ts, vec![10_000, 15_000], "event time is the later record's");
    }

    #[test]
    fn state_is_cleaned_once_the_watermark_passes_the_bounds() {
        let mut op = join();
        let mut d = MemoryDriver::new();
        d.process(&mut op, LEFT, l(10_000, "a").1).unwrap();
        d.process(&mut op, RIGHT, r(11_000, "a").1).unwrap();
        d.process(&mut op, RIGHT, r(30_000, "b").1).unwrap();
        assert_eq!(d.state_len(), 2);
        d.advance_watermark(&mut op, 14_999).unwrap();
        d.process(&mut op, RIGHT, r(15_000, "a").1).unwrap();
        assert_eq!(
            pairs(&d.take_output()),
            vec![(10_000, 11_000), (10_000, 15_000)]
        );
        d.advance_watermark(&mut op, 17_000).unwrap();
        assert_eq!(d.state_len(), 1, "key a is gone, b remains");
        d.advance_watermark(&mut op, 32_000).unwrap();
        assert_eq!(d.state_len(), 0);
        assert_eq!(d.timer_len(), 0);
    }

    #[test]
    fn late_records_go_to_the_late_output() {
        let mut op = join();
        let mut d = MemoryDriver::new();
        d.advance_watermark(&mut op, 10_000).unwrap();
        d.process(&mut op, LEFT, l(10_000, "a").1).unwrap();
        let out = d.take_output();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Output::Side("late"));
        assert_eq!(d.state_len(), 0);
    }

    #[test]
    fn restart_from_a_mid_stream_snapshot_gives_identical_output() {
        let mut events = Vec::new();
        for k in 0..5 {
            let id = format!("k{k}");
            let t = k * 3_000;
            events.push(l(t + 2_500, &id));
            events.push(r(t + 500, &id));
            events.push(r(t + 4_000, &id));
            events.push(r(t + 7_500, &id));
            events.push(l(t + 6_000, &id));
        }
        events.sort_by_key(|(_, e)| e.ts);
        let run = |cut: Option<usize>| {
            let mut op = join();
            let mut d = MemoryDriver::new();
            let mut out = Vec::new();
            for (n, (i, e)) in events.iter().enumerate() {
                if Some(n) == cut {
                    out.extend(d.take_output());
                    d = d.checkpoint_and_restore().unwrap();
                    op = join();
                    d.start(&mut op).unwrap();
                }
                d.process(&mut op, *i, e.clone()).unwrap();
                d.advance_watermark(&mut op, e.ts - 1).unwrap();
            }
            d.advance_watermark(&mut op, i64::MAX).unwrap();
            out.extend(d.take_output());
            (out, d.state_len())
        };
        let (uninterrupted, left_over) = run(None);
        assert_eq!(left_over, 0);
        assert!(pairs(&uninterrupted).len() > 10);
        for cut in 1..events.len() {
            assert_eq!(
                run(Some(cut)).0,
                uninterrupted,
                "restart before record {cut}"
            );
        }
    }
}
