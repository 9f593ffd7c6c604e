//! `splice`: union N keyed streams into one sample per key, emitted once when a timer set on
//! the key's first record fires.
//!
//! - The timer is `timeout` after the first record: its event time (`timeDomain: eventTime`,
//!   fires when the watermark reaches it) or the processing time it arrived (`processingTime`).
//! - Event time: records with `ts <= first.ts + timeout` are merged; a record of the key with
//!   a later timestamp that arrives before the timer fires is held and starts the key's next
//!   sample, so a sample's content does not depend on how far the watermark had moved when a
//!   record arrived. Processing time: every record that arrives before the timer fires is
//!   merged.
//! - Merging is field by field:
//!   `first`/`last` keep the value with the smallest/largest event time (ties: arrival order),
//!   `collect` lists values in event-time order, `sum` adds numbers (0 when nothing was added),
//!   `count` counts contributing records. `null` values are skipped by all but `count`; a
//!   `sum` value that is not a number (or is NaN) sends the record to `<op>.deadLetter`, as in
//!   [`crate::operator::support::accumulators`].
//!   A field with `from` only takes records of that input.
//! - On firing, the sample `{field: value, ...}` is emitted with event time = the timer's time
//!   (event time) or the largest record time in the sample (processing time), and the key's
//!   state is cleared; a later record for the key starts a new sample.

use super::{
    compile, dead_letter, input_index, millis, put, state_key, take, Ctx, Event, Output, Timer,
    WorkloadError, WorkloadOperator,
};
use crate::operator::support::accumulators::{check, Number};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use weir_crds::pipeline::{AggregateOp, MergeRule, SpliceSpec, TimeDomain};
use weir_expr::{Expr, Map, Value};

struct Field {
    name: Arc<str>,
    from: Option<usize>,
    value: Option<Expr>,
    rule: MergeRule,
}

/// One field's merged value so far.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum FieldState {
    /// The value with the smallest event time so far.
    First(Option<(i64, Value)>),
    /// The value with the largest event time so far.
    Last(Option<(i64, Value)>),
    /// The sum so far.
    Sum(Number),
    /// Contributing records so far.
    Count(u64),
    /// Values with their event times, in event-time order.
    Collect(Vec<(i64, Value)>),
}

/// A key's open sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// When its timer fires.
    deadline: i64,
    /// The largest event time merged.
    max_ts: i64,
    fields: Vec<FieldState>,
    /// Event time only: records of the key later than `deadline` that arrived before the
    /// timer fired; they start the key's next sample.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<(usize, Event)>,
}

/// The splice operator.
pub struct Splice {
    name: String,
    key: Expr,
    timeout: i64,
    domain: TimeDomain,
    fields: Vec<Field>,
}

impl Splice {
    /// Compiles `spec` for an operator named `name` reading `inputs`.
    pub fn new(
        name: String,
        inputs: Vec<String>,
        spec: &SpliceSpec,
    ) -> Result<Self, WorkloadError> {
        let mut fields = Vec::with_capacity(spec.fields.len());
        for (i, f) in spec.fields.iter().enumerate() {
            let field = format!("splice.fields[{i}]");
            let from = match &f.from {
                Some(n) => Some(input_index(&name, &format!("{field}.from"), &inputs, n)?),
                None => None,
            };
            let value = match (&f.value, f.rule) {
                (Some(src), _) => Some(compile(&name, &format!("{field}.value"), src, &["e"])?),
                (None, MergeRule::Count) => None,
                (None, _) => {
                    return Err(WorkloadError::InvalidSpec {
                        operator: name,
                        field: format!("{field}.value"),
                        message: "required unless rule is count".to_string(),
                    })
                }
            };
            fields.push(Field {
                name: Arc::from(f.name.as_str()),
                from,
                value,
                rule: f.rule,
            });
        }
        Ok(Splice {
            key: compile(&name, "splice.key", &spec.key, &["e"])?,
            timeout: millis(spec.timeout),
            domain: spec.time_domain,
            fields,
            name,
        })
    }

    fn empty_fields(&self) -> Vec<FieldState> {
        self.fields
            .iter()
            .map(|f| match f.rule {
                MergeRule::First => FieldState::First(None),
                MergeRule::Last => FieldState::Last(None),
                MergeRule::Sum => FieldState::Sum(Number::Int(0)),
                MergeRule::Count => FieldState::Count(0),
                MergeRule::Collect => FieldState::Collect(Vec::new()),
            })
            .collect()
    }

    /// The values `e` contributes, per field (`None`: the field does not take this input).
    fn contributions(&self, input: usize, e: &Value) -> Result<Vec<Option<Value>>, String> {
        self.fields
            .iter()
            .map(|f| {
                if f.from.is_some_and(|i| i != input) {
                    return Ok(None);
                }
                match &f.value {
                    Some(x) => x.eval(&[e]).map(Some).map_err(|err| err.to_string()),
                    None => Ok(Some(Value::Null)),
                }
            })
            .collect()
    }

    fn sample_value(&self, sample: &Sample) -> Value {
        let mut m = Map::with_capacity(self.fields.len());
        for (f, st) in self.fields.iter().zip(&sample.fields) {
            let v = match st {
                FieldState::First(v) | FieldState::Last(v) => {
                    v.as_ref().map_or(Value::Null, |(_, v)| v.clone())
                }
                FieldState::Sum(n) => n.to_value(),
                FieldState::Count(n) => Value::Int(i64::try_from(*n).unwrap_or(i64::MAX)),
                FieldState::Collect(c) => {
                    Value::List(Arc::new(c.iter().map(|(_, v)| v.clone()).collect()))
                }
            };
            m.insert(f.name.clone(), v);
        }
        Value::Map(Arc::new(m))
    }
}

/// Merges `v` (at event time `ts`) into one field (`sum` values are known to be numbers).
fn merge(st: &mut FieldState, ts: i64, v: Value) {
    if let FieldState::Count(n) = st {
        *n += 1;
        return;
    }
    if v == Value::Null {
        return;
    }
    match st {
        FieldState::First(cur) => {
            if cur.as_ref().is_none_or(|(t, _)| ts < *t) {
                *cur = Some((ts, v));
            }
        }
        FieldState::Last(cur) => {
            if cur.as_ref().is_none_or(|(t, _)| ts >= *t) {
                *cur = Some((ts, v));
            }
        }
        FieldState::Sum(n) => {
            if let Some(x) = Number::of(&v) {
                *n = n.plus(x);
            }
        }
        FieldState::Count(_) => {}
        FieldState::Collect(c) => {
            let at = c.partition_point(|(t, _)| *t <= ts);
            c.insert(at, (ts, v));
        }
    }
}

impl WorkloadOperator for Splice {
    type State = Sample;

    fn name(&self) -> &str {
        &self.name
    }

    fn process(
        &mut self,
        input: usize,
        event: Event,
        ctx: &mut Ctx<'_, Sample>,
    ) -> Result<(), WorkloadError> {
        let Some(sk) = state_key(&self.key, &event, ctx) else {
            return Ok(());
        };
        let mut sample = match take(ctx, &self.name, &sk)? {
            Some(s) => s,
            None => {
                let start = match self.domain {
                    TimeDomain::EventTime => event.ts,
                    TimeDomain::ProcessingTime => ctx.processing_time,
                };
                self.open(&sk, start, event.ts, ctx)
            }
        };
        if self.domain == TimeDomain::EventTime && event.ts > sample.deadline {
            sample.pending.push((input, event));
        } else {
            self.absorb(&mut sample, input, event, ctx);
        }
        put(ctx, &self.name, &sk, sample)
    }

    fn on_timer(&mut self, timer: &Timer, ctx: &mut Ctx<'_, Sample>) -> Result<(), WorkloadError> {
        let Some(mut sample) = take(ctx, &self.name, &timer.key)? else {
            return Ok(());
        };
        let ts = match self.domain {
            TimeDomain::EventTime => sample.deadline,
            TimeDomain::ProcessingTime => sample.max_ts,
        };
        let mut pending = std::mem::take(&mut sample.pending);
        let value = self.sample_value(&sample);
        ctx.out.emit(Output::Main, Event::new(ts, value));
        if pending.is_empty() {
            return Ok(());
        }
        // The records that came too late for this sample start the next one, in event-time order.
        pending.sort_by_key(|(_, e)| e.ts);
        let first = pending[0].1.ts;
        let mut next = self.open(&timer.key, first, first, ctx);
        for (input, event) in pending {
            if event.ts > next.deadline {
                next.pending.push((input, event));
            } else {
                self.absorb(&mut next, input, event, ctx);
            }
        }
        put(ctx, &self.name, &timer.key, next)
    }
}

impl Splice {
    /// A new sample for `key` whose clock started at `start`; registers its timer.
    fn open(&self, key: &str, start: i64, first_ts: i64, ctx: &mut Ctx<'_, Sample>) -> Sample {
        let deadline = start.saturating_add(self.timeout);
        ctx.timers.register(self.domain, key, deadline);
        Sample {
            deadline,
            max_ts: first_ts,
            fields: self.empty_fields(),
            pending: Vec::new(),
        }
    }

    /// Merges one record into `sample`, or sends it to the dead-letter output (leaving the
    /// sample unchanged) if one of its values cannot be computed or merged.
    fn absorb(&self, sample: &mut Sample, input: usize, event: Event, ctx: &mut Ctx<'_, Sample>) {
        let values = match self.contributions(input, &event.value) {
            Ok(v) => v,
            Err(err) => return dead_letter(ctx, event, &err),
        };
        let not_a_number = self.fields.iter().zip(&values).find_map(|(f, v)| {
            let v = v.as_ref().filter(|_| f.rule == MergeRule::Sum)?;
            check(AggregateOp::Sum, v).err().map(|e| (f, e))
        });
        if let Some((f, e)) = not_a_number {
            let err = format!("field '{}' (sum): {e}", f.name);
            return dead_letter(ctx, event, &err);
        }
        for (st, v) in sample.fields.iter_mut().zip(values) {
            if let Some(v) = v {
                merge(st, event.ts, v);
            }
        }
        sample.max_ts = sample.max_ts.max(event.ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::workload::memory::MemoryDriver;
    use weir_crds::pipeline::SpliceField;
    use weir_crds::Dur;

    fn field(name: &str, from: Option<&str>, value: Option<&str>, rule: MergeRule) -> SpliceField {
        SpliceField {
            name: name.into(),
            from: from.map(String::from),
            value: value.map(String::from),
            rule,
        }
    }

    fn splice(domain: TimeDomain) -> Splice {
        let spec = SpliceSpec {
            key: "e.sampleId".into(),
            timeout: Dur::secs(10),
            time_domain: domain,
            fields: vec![
                field("sampleId", None, Some("e.sampleId"), MergeRule::First),
                field("firstTs", None, Some("e.ts"), MergeRule::First),
                field("lastTs", None, Some("e.ts"), MergeRule::Last),
                field("cost", Some("impressions"), Some("e.cost"), MergeRule::Sum),
                field("clicks", Some("clicks"), None, MergeRule::Count),
                field(
                    "features",
                    Some("features"),
                    Some("e.f"),
                    MergeRule::Collect,
                ),
            ],
        };
        let inputs = vec!["impressions".into(), "clicks".into(), "features".into()];
        Splice::new("samples".into(), inputs, &spec).unwrap()
    }

    fn ev(ts: i64, json: &str) -> Event {
        let mut v = Value::from_json(json).unwrap();
        if let Value::Map(m) = &mut v {
            Arc::make_mut(m).insert("ts", Value::Int(ts));
        }
        Event::new(ts, v)
    }

    /// Feeds a fixed stream of three inputs for samples "a" and "b".
    fn stream() -> Vec<(usize, Event)> {
        vec![
            (0, ev(1_000, r#"{"sampleId":"a","cost":2}"#)),
            (2, ev(1_500, r#"{"sampleId":"a","f":"x"}"#)),
            (1, ev(3_000, r#"{"sampleId":"a"}"#)),
            (0, ev(4_000, r#"{"sampleId":"b","cost":1.5}"#)),
            (2, ev(900, r#"{"sampleId":"a","f":"w"}"#)),
            (0, ev(5_000, r#"{"sampleId":"a","cost":3}"#)),
            (1, ev(6_000, r#"{"sampleId":"a"}"#)),
            (2, ev(7_000, r#"{"sampleId":"b","f":"y"}"#)),
        ]
    }

    #[test]
    fn emits_one_merged_sample_per_key_after_the_timer_and_clears_state() {
        let mut op = splice(TimeDomain::EventTime);
        let mut d = MemoryDriver::new();
        for (i, e) in stream() {
            d.process(&mut op, i, e).unwrap();
        }
        d.advance_watermark(&mut op, 10_999).unwrap();
        assert!(d.take_output().is_empty(), "nothing before the first timer");
        d.advance_watermark(&mut op, 11_000).unwrap();
        let out = d.take_output();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Output::Main);
        assert_eq!(out[0].1.ts, 11_000);
        assert_eq!(
            out[0].1.value.to_json(),
            r#"{"sampleId":"a","firstTs":900,"lastTs":6000,"cost":5,"clicks":2,"features":["w","x"]}"#
        );
        assert_eq!(d.state_len(), 1, "only b is still open");
        d.advance_watermark(&mut op, 20_000).unwrap();
        let out = d.take_output();
        assert_eq!(
            out[0].1.value.to_json(),
            r#"{"sampleId":"b","firstTs":4000,"lastTs":7000,"cost":1.5,"clicks":0,"features":["y"]}"#
        );
        assert_eq!(out[0].1.ts, 14_000);
        assert_eq!(d.state_len(), 0);
        assert_eq!(d.timer_len(), 0);
        d.advance_watermark(&mut op, 100_000).unwrap();
        assert!(d.take_output().is_empty(), "exactly one output per key");
    }

    #[test]
    fn a_record_after_the_sample_fired_starts_a_new_one() {
        let mut op = splice(TimeDomain::EventTime);
        let mut d = MemoryDriver::new();
        d.process(&mut op, 1, ev(0, r#"{"sampleId":"a"}"#)).unwrap();
        d.advance_watermark(&mut op, 10_000).unwrap();
        d.process(&mut op, 1, ev(10_500, r#"{"sampleId":"a"}"#))
            .unwrap();
        d.advance_watermark(&mut op, 20_500).unwrap();
        let out = d.take_output();
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].1.ts, 20_500);
    }

    #[test]
    fn a_record_past_the_deadline_waits_for_the_next_sample() {
        let mut op = splice(TimeDomain::EventTime);
        let mut d = MemoryDriver::new();
        d.process(&mut op, 1, ev(0, r#"{"sampleId":"a"}"#)).unwrap();
        d.process(&mut op, 1, ev(10_001, r#"{"sampleId":"a"}"#))
            .unwrap();
        d.process(&mut op, 1, ev(10_000, r#"{"sampleId":"a"}"#))
            .unwrap();
        d.process(&mut op, 1, ev(25_000, r#"{"sampleId":"a"}"#))
            .unwrap();
        d.advance_watermark(&mut op, i64::MAX).unwrap();
        let out: Vec<(i64, i64, i64)> = d
            .take_output()
            .iter()
            .map(|(_, e)| {
                let v = &e.value;
                (
                    e.ts,
                    v.get("clicks").as_i64().unwrap_or(-1),
                    v.get("firstTs").as_i64().unwrap_or(-1),
                )
            })
            .collect();
        assert_eq!(
            out,
            vec![(10_000, 2, 0), (20_001, 1, 10_001), (35_000, 1, 25_000)]
        );
        assert_eq!(d.state_len(), 0);
    }

    #[test]
    fn processing_time_timer_runs_on_the_given_clock() {
        let mut op = splice(TimeDomain::ProcessingTime);
        let mut d = MemoryDriver::new();
        d.advance_processing_time(&mut op, 50_000).unwrap();
        d.process(&mut op, 1, ev(1_000, r#"{"sampleId":"a"}"#))
            .unwrap();
        d.process(&mut op, 1, ev(2_000, r#"{"sampleId":"a"}"#))
            .unwrap();
        d.advance_watermark(&mut op, i64::MAX).unwrap();
        assert!(
            d.take_output().is_empty(),
            "the watermark does not fire processing-time timers"
        );
        d.advance_processing_time(&mut op, 60_000).unwrap();
        let out = d.take_output();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.ts, 2_000, "stamped with the latest record time");
        assert_eq!(out[0].1.value.get("clicks"), &Value::Int(2));
    }

    #[test]
    fn a_bad_record_goes_to_dead_letter_and_changes_nothing() {
        let mut op = splice(TimeDomain::EventTime);
        let mut d = MemoryDriver::new();
        d.process(&mut op, 0, ev(0, r#"{"sampleId":"a","cost":1}"#))
            .unwrap();
        d.process(&mut op, 0, ev(1, r#"{"sampleId":"a","cost":"x"}"#))
            .unwrap();
        d.process(&mut op, 0, ev(2, r#"{"cost":1}"#)).unwrap();
        let dead = d.take_output();
        assert_eq!(dead.len(), 2);
        assert!(dead.iter().all(|(o, _)| *o == Output::Side("deadLetter")));
        d.advance_watermark(&mut op, 10_000).unwrap();
        let out = d.take_output();
        assert_eq!(out[0].1.value.get("cost"), &Value::Int(1));
        assert_eq!(out[0].1.value.get("lastTs"), &Value::Int(0));
    }

    #[test]
    fn restart_from_a_mid_stream_snapshot_gives_identical_output() {
        let events = stream();
        let run = |cut: Option<usize>| {
            let mut op = splice(TimeDomain::EventTime);
            let mut d = MemoryDriver::new();
            let mut out = Vec::new();
            for (n, (i, e)) in events.iter().enumerate() {
                if Some(n) == cut {
                    out.extend(d.take_output());
                    d = d.checkpoint_and_restore().unwrap();
                    op = splice(TimeDomain::EventTime);
                    d.start(&mut op).unwrap();
                }
                d.process(&mut op, *i, e.clone()).unwrap();
                d.advance_watermark(&mut op, e.ts - 5_000).unwrap();
            }
            d.advance_watermark(&mut op, i64::MAX).unwrap();
            out.extend(d.take_output());
            out
        };
        let uninterrupted = run(None);
        assert_eq!(uninterrupted.len(), 2);
        for cut in 1..events.len() {
            assert_eq!(run(Some(cut)), uninterrupted, "restart before record {cut}");
        }
    }
}
