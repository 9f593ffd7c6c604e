//! The same records through `window` (one tumbling window), `aggregate` (append-only and
//! retractable) and `accumulate` give the same aggregate values and the same dead letters.

use crate::operator::keyed_aggregate::KeyedAggregate;
use crate::operator::window::Window;
use crate::operator::workload::accumulate::Accumulate;
use crate::operator::workload::memory::MemoryDriver;
use crate::operator::workload::{Event, Output};
use crate::operator::{Context, Operator};
use crate::record::Record;
use crate::state::{operator_cf, StateStore};
use crate::time::{TimeDomain, TimerService};
use weir_crds::pipeline::{AccumulateSpec, KeyedAggregateSpec, WindowSpec};
use weir_expr::Value;

const RECORDS: &[&str] = &[
    r#"{"k":"a","v":9223372036854775807}"#,
    r#"{"k":"a","v":1}"#,
    r#"{"k":"a","v":null}"#,
    r#"{"k":"a"}"#,
    r#"{"k":"a","v":"x"}"#,
    r#"{"k":"a","v":{}}"#,
    r#"{"k":"a","v":2.5}"#,
    r#"{"k":"a","v":-3}"#,
];

const AGGS: &str = "[{name: n, op: count}, {name: s, op: sum, of: e.v}, {name: a, op: avg, of: e.v}, \
    {name: lo, op: min, of: e.v}, {name: hi, op: max, of: e.v}, {name: d, op: distinctCount, of: e.v}, \
    {name: f, op: first, of: e.v}, {name: l, op: last, of: e.v}, {name: c, op: collect, of: e.v}]";

/// Retractable forms exist for these only.
const RETRACTABLE_AGGS: &str = "[{name: n, op: count}, {name: s, op: sum, of: e.v}, {name: a, op: avg, of: e.v}, \
    {name: lo, op: min, of: e.v}, {name: hi, op: max, of: e.v}, {name: d, op: distinctCount, of: e.v}]";

const NAMES: &[&str] = &["n", "s", "a", "lo", "hi", "d", "f", "l", "c"];

fn ts(i: usize) -> i64 {
    1_000 + 10 * i as i64
}

fn record(json: &str) -> Value {
    Value::from_json(json).unwrap()
}

/// `(aggregate results by name, dead-letter errors)` of one operator.
type Outcome = (Vec<(String, Value)>, Vec<String>);

fn pick(result: &Value, names: &[&str]) -> Vec<(String, Value)> {
    names
        .iter()
        .map(|n| (n.to_string(), result.get(n).clone()))
        .collect()
}

fn error_of(dead: &Value) -> String {
    dead.get("error").as_str().unwrap_or_default().to_string()
}

/// Runs a classic operator with side outputs `sides` (`deadLetter` among them) over `RECORDS`
/// and then a watermark at the end of time; returns its main and dead-letter outputs.
fn run_classic(
    mut op: Box<dyn Operator>,
    sides: &'static [&'static str],
) -> (Vec<Value>, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let cf = operator_cf("op");
    let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
    op.on_start(&store.handle(&cf)).unwrap();
    let (mut out, mut timers, mut dead) = (vec![], TimerService::default(), 0u64);
    for (i, json) in RECORDS.iter().enumerate() {
        let mut ctx = Context::new(0, 0, sides, &mut out, &mut timers, &mut dead);
        op.process(0, Record::new(ts(i), record(json), 0), &mut ctx)
            .unwrap();
    }
    while let Some(t) = timers.pop_due(TimeDomain::EventTime, i64::MAX) {
        let mut ctx = Context::new(i64::MAX, 0, sides, &mut out, &mut timers, &mut dead);
        op.on_timer(t, &mut ctx).unwrap();
    }
    let dead_port = 1 + sides.iter().position(|s| *s == "deadLetter").unwrap();
    let main = out
        .iter()
        .filter(|(p, _)| *p == 0)
        .map(|(_, r)| r.value.clone());
    let dl = out
        .iter()
        .filter(|(p, _)| *p == dead_port)
        .map(|(_, r)| r.value.clone());
    let (main, dl) = (main.collect(), dl.collect::<Vec<_>>());
    assert_eq!(dead as usize, dl.len());
    (main, dl)
}

fn window() -> Outcome {
    let yaml = format!("{{type: tumbling, size: 1h, key: e.k, aggregates: {AGGS}}}");
    let spec: WindowSpec = serde_yaml::from_str(&yaml).unwrap();
    let op = Window::new("w", "w", &spec).unwrap();
    let (main, dead) = run_classic(Box::new(op), &["late", "deadLetter"]);
    assert_eq!(main.len(), 1, "one window fires: {main:?}");
    (pick(&main[0], NAMES), dead.iter().map(error_of).collect())
}

fn aggregate(aggs: &str, retract_when: &str, names: &[&str]) -> Outcome {
    let yaml = format!("{{key: e.k, {retract_when} aggregates: {aggs}}}");
    let spec: KeyedAggregateSpec = serde_yaml::from_str(&yaml).unwrap();
    let op = KeyedAggregate::new("agg", "agg", &spec).unwrap();
    let (main, dead) = run_classic(Box::new(op), &["deadLetter"]);
    let last = main.last().cloned().unwrap_or_default();
    (pick(&last, names), dead.iter().map(error_of).collect())
}

fn accumulate() -> Outcome {
    let yaml = format!(
        "{{key: e.k, open: opens, accumulate: recs, ttl: 1h, emitWhen: 'false', aggregates: {AGGS}}}"
    );
    let spec: AccumulateSpec = serde_yaml::from_str(&yaml).unwrap();
    let mut op = Accumulate::new("acc".into(), vec!["opens".into(), "recs".into()], &spec).unwrap();
    let mut d = MemoryDriver::new();
    d.process(&mut op, 0, Event::new(0, record(r#"{"k":"a"}"#)))
        .unwrap();
    for (i, json) in RECORDS.iter().enumerate() {
        d.process(&mut op, 1, Event::new(ts(i), record(json)))
            .unwrap();
    }
    d.advance_watermark(&mut op, i64::MAX).unwrap();
    let out = d.take_output();
    let expired: Vec<&Event> = out
        .iter()
        .filter(|(o, _)| *o == Output::Side("expired"))
        .map(|(_, e)| e)
        .collect();
    assert_eq!(expired.len(), 1, "{out:?}");
    let dead = out
        .iter()
        .filter(|(o, _)| *o == Output::Side("deadLetter"))
        .map(|(_, e)| error_of(&e.value))
        .collect();
    (pick(expired[0].value.get("agg"), NAMES), dead)
}

#[test]
fn window_aggregate_and_accumulate_agree_on_values_and_dead_letters() {
    let (w, w_dead) = window();
    let expected = [
        ("n", "6"),
        ("s", "9.223372036854776e+18"),
        ("a", "2.305843009213694e+18"),
        ("lo", "-3"),
        ("hi", "9223372036854775807"),
        ("d", "4"),
        ("f", "9223372036854775807"),
        ("l", "-3"),
        ("c", "[9223372036854775807,1,2.5,-3]"),
    ];
    let shown: Vec<(String, String)> = w.iter().map(|(n, v)| (n.clone(), v.to_json())).collect();
    let want: Vec<(String, String)> = expected
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(shown, want, "window");
    assert_eq!(
        w_dead,
        vec![
            r#"aggregate 's' (sum): expected a number, got "x""#.to_string(),
            "aggregate 's' (sum): expected a number, got {}".to_string(),
        ]
    );

    assert_eq!(
        aggregate(AGGS, "", NAMES),
        (w.clone(), w_dead.clone()),
        "aggregate"
    );
    assert_eq!(accumulate(), (w.clone(), w_dead.clone()), "accumulate");
    let retractable = aggregate(RETRACTABLE_AGGS, "retractWhen: 'false',", &NAMES[..6]);
    assert_eq!(
        retractable,
        (w[..6].to_vec(), w_dead),
        "aggregate with retractWhen"
    );
}
