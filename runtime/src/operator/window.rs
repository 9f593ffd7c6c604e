//! `window`: keyed tumbling, sliding and session windows with aggregates and allowed lateness.
//!
//! A window fires when the watermark reaches its last millisecond (`end − 1`), emitting
//! `{key, windowStart, windowEnd, <aggregates>}` with event time `end − 1`. With allowed
//! lateness its state is kept until `end − 1 + allowedLateness`, and every late-but-allowed
//! record re-emits the updated result. Records for windows past that go to `<op>.late`.
//! Aggregates follow the value rule of [`super::support::accumulators`]: `null` and missing
//! fields are skipped by all but `count`, a value of the wrong type is a dead letter.

use super::support::accumulators::{self, Acc, AggregateDef};
use super::window_assign::{assign, is_late, overlapping, WindowBounds};
use super::{compile, state_err, Context, KeyedState, OpResult, Operator};
use crate::record::Record;
use crate::state::StateHandle;
use crate::time::{TimeDomain, Timer};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use weir_crds::pipeline::{WindowSpec, WindowType};
use weir_crds::validate::SpecError;
use weir_expr::{Expr, Value};

/// One window's state.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct WinState {
    start: i64,
    end: i64,
    key: Value,
    accs: Vec<Acc>,
    fired: bool,
}

enum Shape {
    Fixed { size: i64, slide: i64 },
    Session { gap: i64 },
}

/// The window operator.
pub struct Window {
    name: String,
    key: Option<Expr>,
    shape: Shape,
    lateness: i64,
    aggs: Vec<AggregateDef>,
    fixed: Option<KeyedState<WinState>>,
    sessions: Option<KeyedState<Vec<WinState>>>,
}

fn ms(d: weir_crds::Dur) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

const SEP: char = '\u{1}';

/// The timers of window `b`: when it fires, and when its allowed lateness ends.
fn register_window_timers(ctx: &mut Context<'_>, lateness: i64, b: WindowBounds, key: &str) {
    ctx.register_timer(TimeDomain::EventTime, b.max_timestamp(), key);
    if lateness > 0 {
        ctx.register_timer(
            TimeDomain::EventTime,
            b.max_timestamp().saturating_add(lateness),
            key,
        );
    }
}

/// Appends `n` in decimal (what `format!("{n}")` writes).
fn push_decimal(out: &mut String, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut u = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if n < 0 {
        out.push('-');
    }
    if let Ok(text) = std::str::from_utf8(&digits[i..]) {
        out.push_str(text);
    }
}

impl Window {
    /// Compiles key and aggregate expressions; `field` is `spec.pipeline.operators[i].window`.
    pub fn new(field: &str, name: &str, spec: &WindowSpec) -> Result<Self, Vec<SpecError>> {
        let mut errors = vec![];
        let key = match &spec.key {
            Some(k) => compile(&format!("{field}.key"), k)
                .map_err(|e| errors.push(e))
                .ok(),
            None => None,
        };
        let mut aggs = vec![];
        for (i, a) in spec.aggregates.iter().enumerate() {
            let of = match &a.of {
                Some(src) => compile(&format!("{field}.aggregates[{i}].of"), src)
                    .map_err(|e| errors.push(e))
                    .ok(),
                None => None,
            };
            aggs.push(AggregateDef {
                name: Arc::from(a.name.as_str()),
                op: a.op,
                of,
            });
        }
        let shape = match spec.window_type {
            WindowType::Tumbling => {
                let size = spec.size.map(ms).unwrap_or(0);
                Shape::Fixed { size, slide: size }
            }
            WindowType::Sliding => Shape::Fixed {
                size: spec.size.map(ms).unwrap_or(0),
                slide: spec.slide.map(ms).unwrap_or(0),
            },
            WindowType::Session => Shape::Session {
                gap: spec.gap.map(ms).unwrap_or(0),
            },
        };
        match &shape {
            Shape::Fixed { size, slide } if *size <= 0 || *slide <= 0 => errors.push(SpecError {
                field: format!("{field}.size"),
                message: "size (and slide for sliding windows) must be greater than 0".into(),
            }),
            Shape::Session { gap } if *gap <= 0 => errors.push(SpecError {
                field: format!("{field}.gap"),
                message: "session windows need a gap greater than 0".into(),
            }),
            _ => {}
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Window {
            name: name.to_string(),
            key,
            shape,
            lateness: ms(spec.allowed_lateness),
            aggs,
            fixed: None,
            sessions: None,
        })
    }

    fn result(&self, w: &WinState) -> Record {
        let mut fields: Vec<(Arc<str>, Value)> = Vec::with_capacity(self.aggs.len() + 3);
        if self.key.is_some() {
            fields.push(("key".into(), w.key.clone()));
        }
        fields.push(("windowStart".into(), Value::Int(w.start)));
        fields.push(("windowEnd".into(), Value::Int(w.end)));
        fields.extend(accumulators::results(&self.aggs, &w.accs));
        Record {
            ts: w.end - 1,
            value: Value::map(fields),
            ingest_ms: crate::record::now_ms(),
        }
    }

    fn new_state(&self, b: WindowBounds, key: &Value) -> WinState {
        WinState {
            start: b.start,
            end: b.end,
            key: key.clone(),
            accs: accumulators::fresh(&self.aggs),
            fired: false,
        }
    }

    fn register(&self, ctx: &mut Context<'_>, b: WindowBounds, timer_key: &str) {
        register_window_timers(ctx, self.lateness, b, timer_key);
    }

    fn delete_timers(&self, ctx: &mut Context<'_>, b: WindowBounds, timer_key: &str) {
        ctx.delete_timer(TimeDomain::EventTime, b.max_timestamp(), timer_key);
        if self.lateness > 0 {
            ctx.delete_timer(
                TimeDomain::EventTime,
                b.max_timestamp().saturating_add(self.lateness),
                timer_key,
            );
        }
    }

    /// Evaluates the key and the aggregates' checked inputs; `Err` is the dead-letter message.
    fn inputs(&self, record: &Record) -> Result<(Value, Vec<Value>), String> {
        let key = match &self.key {
            Some(k) => k.eval(&[&record.value]).map_err(|e| e.to_string())?,
            None => Value::Null,
        };
        Ok((key, accumulators::inputs(&self.aggs, &record.value)?))
    }

    fn process_fixed(
        &mut self,
        size: i64,
        slide: i64,
        record: Record,
        key: Value,
        vals: Vec<Value>,
        ctx: &mut Context<'_>,
    ) -> OpResult {
        let live: Vec<WindowBounds> = assign(record.ts, size, slide)
            .into_iter()
            .filter(|w| !is_late(w, self.lateness, ctx.watermark))
            .collect();
        if live.is_empty() {
            ctx.emit_side("late", record);
            return Ok(());
        }
        let key_str = key.key_string();
        let err = state_err(&self.name);
        let mut skey = String::with_capacity(key_str.len() + 42);
        for b in live {
            // `{key}\u{1}{start}\u{1}{end}`
            skey.clear();
            skey.push_str(&key_str);
            skey.push(SEP);
            push_decimal(&mut skey, b.start);
            skey.push(SEP);
            push_decimal(&mut skey, b.end);
            let aggs = &self.aggs;
            let fresh = || WinState {
                start: b.start,
                end: b.end,
                key: key.clone(),
                accs: accumulators::fresh(aggs),
                fired: false,
            };
            let Some(states) = self.fixed.as_mut() else {
                return Ok(());
            };
            let (st, made) = states.get_or_insert_with(&skey, fresh).map_err(&err)?;
            if made {
                register_window_timers(ctx, self.lateness, b, &skey);
            }
            accumulators::add_all(&mut st.accs, record.ts, &vals);
            if ctx.watermark >= b.max_timestamp() {
                st.fired = true;
                let snapshot = st.clone();
                let out = self.result(&snapshot);
                ctx.emit(out);
            }
        }
        Ok(())
    }

    fn process_session(
        &mut self,
        gap: i64,
        record: Record,
        key: Value,
        vals: Vec<Value>,
        ctx: &mut Context<'_>,
    ) -> OpResult {
        let b = WindowBounds {
            start: record.ts,
            end: record.ts.saturating_add(gap),
        };
        if is_late(&b, self.lateness, ctx.watermark) {
            ctx.emit_side("late", record);
            return Ok(());
        }
        let key_str = key.key_string();
        let err = state_err(&self.name);
        let Some(states) = self.sessions.as_mut() else {
            return Ok(());
        };
        let mut list = states.remove(&key_str).map_err(&err)?.unwrap_or_default();
        let bounds: Vec<WindowBounds> = list
            .iter()
            .map(|s| WindowBounds {
                start: s.start,
                end: s.end,
            })
            .collect();
        let hits = overlapping(&bounds, b);
        let mut merged = self.new_state(b, &key);
        for &i in hits.iter().rev() {
            let old = list.remove(i);
            self.delete_timers(
                ctx,
                WindowBounds {
                    start: old.start,
                    end: old.end,
                },
                &key_str,
            );
            merged.start = merged.start.min(old.start);
            merged.end = merged.end.max(old.end);
            for (a, o) in merged.accs.iter_mut().zip(old.accs) {
                a.merge(o);
            }
        }
        accumulators::add_all(&mut merged.accs, record.ts, &vals);
        let mb = WindowBounds {
            start: merged.start,
            end: merged.end,
        };
        self.register(ctx, mb, &key_str);
        if ctx.watermark >= mb.max_timestamp() {
            merged.fired = true;
            let out = self.result(&merged);
            ctx.emit(out);
        }
        list.push(merged);
        list.sort_by_key(|s| s.start);
        let Some(states) = self.sessions.as_mut() else {
            return Ok(());
        };
        states.put(&key_str, list).map_err(&err)
    }
}

impl Operator for Window {
    fn on_start(&mut self, state: &StateHandle) -> OpResult {
        match self.shape {
            Shape::Fixed { .. } => self.fixed = Some(KeyedState::new(state.clone(), "w", 100_000)),
            Shape::Session { .. } => {
                self.sessions = Some(KeyedState::new(state.clone(), "s", 100_000))
            }
        }
        Ok(())
    }

    fn process(&mut self, _input: usize, record: Record, ctx: &mut Context<'_>) -> OpResult {
        let (key, vals) = match self.inputs(&record) {
            Ok(kv) => kv,
            Err(e) => {
                ctx.dead_letter(&record, &e);
                return Ok(());
            }
        };
        match self.shape {
            Shape::Fixed { size, slide } => self.process_fixed(size, slide, record, key, vals, ctx),
            Shape::Session { gap } => self.process_session(gap, record, key, vals, ctx),
        }
    }

    fn on_timer(&mut self, timer: Timer, ctx: &mut Context<'_>) -> OpResult {
        let err = state_err(&self.name);
        let lateness = self.lateness;
        match self.shape {
            Shape::Fixed { .. } => {
                let mut parts = timer.key.rsplitn(3, SEP);
                let end: i64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                let Some(states) = self.fixed.as_mut() else {
                    return Ok(());
                };
                if timer.time == end - 1 {
                    let fired = match states.get_mut(&timer.key).map_err(&err)? {
                        Some(st) => {
                            st.fired = true;
                            Some(st.clone())
                        }
                        None => None,
                    };
                    if lateness == 0 {
                        states.remove(&timer.key).map_err(&err)?;
                    }
                    if let Some(st) = fired {
                        let out = self.result(&st);
                        ctx.emit(out);
                    }
                } else {
                    // the cleanup timer after allowed lateness: nothing to read
                    states.delete(&timer.key).map_err(&err)?;
                }
            }
            Shape::Session { .. } => {
                let Some(states) = self.sessions.as_mut() else {
                    return Ok(());
                };
                let Some(mut list) = states.remove(&timer.key).map_err(&err)? else {
                    return Ok(());
                };
                let mut outs = vec![];
                for s in list.iter_mut() {
                    if !s.fired && s.end - 1 <= timer.time {
                        s.fired = true;
                        outs.push(s.clone());
                    }
                }
                list.retain(|s| !(s.fired && (s.end - 1).saturating_add(lateness) <= timer.time));
                if !list.is_empty() {
                    states.put(&timer.key, list).map_err(&err)?;
                }
                for s in outs {
                    let out = self.result(&s);
                    ctx.emit(out);
                }
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, _checkpoint_id: u64) -> OpResult {
        let err = state_err(&self.name);
        if let Some(s) = self.fixed.as_mut() {
            s.flush().map_err(&err)?;
        }
        if let Some(s) = self.sessions.as_mut() {
            s.flush().map_err(&err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn push_decimal_writes_what_format_writes() {
        for n in [
            0,
            7,
            -7,
            10,
            1_700_000_000_000,
            -1_700_000_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            let mut s = String::from("k");
            push_decimal(&mut s, n);
            assert_eq!(s, format!("k{n}"));
        }
    }

    use super::*;
    use crate::state::{operator_cf, StateStore};
    use crate::time::TimerService;

    struct Harness {
        op: Window,
        timers: TimerService,
        out: Vec<(usize, Record)>,
        dead: u64,
        wm: i64,
        _dir: tempfile::TempDir,
    }

    const SIDES: &[&str] = &["late", "deadLetter"];

    impl Harness {
        fn new(yaml: &str) -> Harness {
            let spec: WindowSpec = serde_yaml::from_str(yaml).unwrap();
            let mut op = Window::new("w", "w", &spec).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let cf = operator_cf("w");
            let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
            op.on_start(&store.handle(&cf)).unwrap();
            Harness {
                op,
                timers: TimerService::default(),
                out: vec![],
                dead: 0,
                wm: i64::MIN,
                _dir: dir,
            }
        }

        fn record(&mut self, ts: i64, json: &str) {
            let rec = Record::new(ts, Value::from_json(json).unwrap(), 0);
            let mut ctx = Context::new(
                self.wm,
                0,
                SIDES,
                &mut self.out,
                &mut self.timers,
                &mut self.dead,
            );
            self.op.process(0, rec, &mut ctx).unwrap();
        }

        fn watermark(&mut self, wm: i64) {
            self.wm = wm;
            while let Some(t) = self.timers.pop_due(TimeDomain::EventTime, wm) {
                let mut ctx = Context::new(
                    wm,
                    0,
                    SIDES,
                    &mut self.out,
                    &mut self.timers,
                    &mut self.dead,
                );
                self.op.on_timer(t, &mut ctx).unwrap();
            }
        }

        fn take(&mut self) -> Vec<(usize, String)> {
            self.out
                .drain(..)
                .map(|(p, r)| (p, r.value.to_json()))
                .collect()
        }
    }

    #[test]
    fn tumbling_fires_at_end_refires_on_allowed_late_and_sends_late_to_side_output() {
        let mut h = Harness::new(
            "{type: tumbling, size: 1s, allowedLateness: 500ms, key: e.k, aggregates: [{name: n, op: count}, {name: s, op: sum, of: e.v}]}",
        );
        h.record(100, r#"{"k":"a","v":1}"#);
        h.record(900, r#"{"k":"a","v":2}"#);
        h.record(1100, r#"{"k":"a","v":5}"#);
        h.watermark(998);
        assert!(
            h.take().is_empty(),
            "not before the window's last millisecond"
        );
        h.watermark(999);
        assert_eq!(
            h.take(),
            vec![(
                0,
                r#"{"key":"a","windowStart":0,"windowEnd":1000,"n":2,"s":3}"#.to_string()
            )]
        );
        // late but within allowed lateness: updated result right away
        h.watermark(1200);
        h.record(950, r#"{"k":"a","v":10}"#);
        assert_eq!(
            h.take(),
            vec![(
                0,
                r#"{"key":"a","windowStart":0,"windowEnd":1000,"n":3,"s":13}"#.to_string()
            )]
        );
        // past end + lateness: state gone, record goes to the late side output
        h.watermark(1499);
        h.take();
        h.record(10, r#"{"k":"a","v":1}"#);
        let out = h.take();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 1, "port 1 is the late side output");
        // a bad aggregate input is a dead letter, not a crash
        h.record(1500, r#"{"k":"a","v":"x"}"#);
        assert_eq!(h.dead, 1);
        assert_eq!(h.take()[0].0, 2);
    }

    #[test]
    fn sliding_and_session_windows() {
        let mut h = Harness::new(
            "{type: sliding, size: 2s, slide: 1s, aggregates: [{name: n, op: count}]}",
        );
        h.record(1500, "{}");
        h.watermark(i64::MAX);
        let got: Vec<String> = h.take().into_iter().map(|(_, j)| j).collect();
        assert_eq!(
            got,
            vec![
                r#"{"windowStart":0,"windowEnd":2000,"n":1}"#,
                r#"{"windowStart":1000,"windowEnd":3000,"n":1}"#
            ]
        );

        let mut h = Harness::new(
            "{type: session, gap: 1s, key: e.u, aggregates: [{name: n, op: count}, {name: xs, op: collect, of: e.x}]}",
        );
        h.record(0, r#"{"u":"a","x":1}"#);
        h.record(1600, r#"{"u":"a","x":3}"#);
        h.record(800, r#"{"u":"a","x":2}"#); // [800, 1800) bridges [0, 1000) and [1600, 2600)
        h.record(9000, r#"{"u":"a","x":4}"#);
        h.watermark(i64::MAX);
        let got: Vec<String> = h.take().into_iter().map(|(_, j)| j).collect();
        assert_eq!(
            got,
            vec![
                r#"{"key":"a","windowStart":0,"windowEnd":2600,"n":3,"xs":[1,2,3]}"#,
                r#"{"key":"a","windowStart":9000,"windowEnd":10000,"n":1,"xs":[4]}"#
            ]
        );
    }
}
