//! The aggregate accumulators (count, sum, min, max, avg, distinctCount, first, last,
//! collect) of every operator that aggregates: `window`, `aggregate` (whose retractions are a
//! layer over these, [`super::retraction`]) and `accumulate`; `splice` sums with [`Number`].
//! Serialisable into state and mergeable (session windows).
//!
//! # The value rule (the same in every operator)
//!
//! Each aggregate's `of` is evaluated on the record; then:
//!
//! - `count` counts records, whatever its `of` holds (as SQL's `COUNT(*)`).
//! - `null`, or an `of` that refers to a field the record does not have, is *skipped* by every
//!   other aggregate, as SQL and Flink skip nulls: it changes neither `sum`, `avg` (nor its
//!   divisor), `min`, `max`, `distinctCount`, `first`, `last` nor `collect`.
//! - A value of the wrong type — not a number in `sum`/`avg`, not a number or string in
//!   `min`/`max`, `NaN` in any of those four — or an `of` that fails to evaluate otherwise
//!   sends the record to `<op>.deadLetter` with an error naming the aggregate and the value.
//!   Every input of a record is checked before any aggregate changes, so such a record
//!   changes no aggregate (not even `count`).
//! - `sum` stays an exact integer while every value is an integer; the first float, or an
//!   integer overflow, turns it into a float sum for good (unsigned integers above `i64::MAX`
//!   count as floats). `avg` is computed in floating point.
//! - `min`/`max` compare ints and floats by numeric value (ints with ints exactly) and strings
//!   lexicographically; numbers order before strings. Of equal values the first one kept stays.
//! - `distinctCount` counts distinct key strings: a string is its text, anything else its
//!   JSON (so `"1"` and `1` are one value, `1` and `1.0` two).
//! - `first`/`last` take the value of the smallest/largest event time; on a tie `first` keeps
//!   the earlier arrival and `last` takes the later. `collect` lists values in event-time order
//!   (ties in arrival order).
//! - Empty results: `count`, `sum` and `distinctCount` are 0, `collect` is `[]`, `avg`, `min`,
//!   `max`, `first` and `last` are `null`.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;
use weir_crds::pipeline::AggregateOp;
use weir_expr::{EvalError, Expr, Value};

/// The op's name as specs spell it.
pub fn op_name(op: AggregateOp) -> &'static str {
    match op {
        AggregateOp::Count => "count",
        AggregateOp::Sum => "sum",
        AggregateOp::Min => "min",
        AggregateOp::Max => "max",
        AggregateOp::Avg => "avg",
        AggregateOp::DistinctCount => "distinctCount",
        AggregateOp::First => "first",
        AggregateOp::Last => "last",
        AggregateOp::Collect => "collect",
    }
}

/// An exact integer that turns into a float on the first float or on overflow.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Number {
    /// Integer.
    Int(i64),
    /// Floating point.
    Float(f64),
}

impl Default for Number {
    fn default() -> Self {
        Number::Int(0)
    }
}

impl Number {
    /// `v` as a number: `None` if it is not one, or is NaN.
    pub fn of(v: &Value) -> Option<Number> {
        match v {
            Value::Int(i) => Some(Number::Int(*i)),
            Value::UInt(u) => Some(i64::try_from(*u).map_or(Number::Float(*u as f64), Number::Int)),
            Value::Float(f) if !f.is_nan() => Some(Number::Float(*f)),
            _ => None,
        }
    }

    /// `self + x`.
    pub fn plus(self, x: Number) -> Number {
        match (self, x) {
            (Number::Int(a), Number::Int(b)) => a
                .checked_add(b)
                .map_or(Number::Float(a as f64 + b as f64), Number::Int),
            (a, b) => Number::Float(a.as_f64() + b.as_f64()),
        }
    }

    /// `self - x` (a retraction).
    pub fn minus(self, x: Number) -> Number {
        match (self, x) {
            (Number::Int(a), Number::Int(b)) => a
                .checked_sub(b)
                .map_or(Number::Float(a as f64 - b as f64), Number::Int),
            (a, b) => Number::Float(a.as_f64() - b.as_f64()),
        }
    }

    /// As a float.
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }

    /// As a record value.
    pub fn to_value(self) -> Value {
        match self {
            Number::Int(i) => Value::Int(i),
            Number::Float(f) => Value::Float(f),
        }
    }
}

/// A [`Number`] in the layout sums are stored in (`{int, float, is_float}`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Total {
    int: i64,
    float: f64,
    is_float: bool,
}

impl Total {
    /// The number.
    pub fn get(self) -> Number {
        if self.is_float {
            Number::Float(self.float)
        } else {
            Number::Int(self.int)
        }
    }

    /// Stores `n`.
    pub fn set(&mut self, n: Number) {
        *self = Total::from(n);
    }
}

impl From<Number> for Total {
    fn from(n: Number) -> Total {
        match n {
            Number::Int(int) => Total {
                int,
                float: 0.0,
                is_float: false,
            },
            Number::Float(float) => Total {
                int: 0,
                float,
                is_float: true,
            },
        }
    }
}

/// The order of min and max: numbers by value (ints with ints exactly), then strings.
pub fn order(a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Str(_), _) => Ordering::Greater,
        (_, Value::Str(_)) => Ordering::Less,
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        _ => {
            let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
            f(a).total_cmp(&f(b))
        }
    }
}

/// Checks `v` as an input of `op` (`null` always passes: it is skipped). `Err` says why not.
pub fn check(op: AggregateOp, v: &Value) -> Result<(), String> {
    let nan = matches!(v, Value::Float(f) if f.is_nan());
    let ok = match op {
        _ if *v == Value::Null => true,
        AggregateOp::Sum | AggregateOp::Avg => Number::of(v).is_some(),
        AggregateOp::Min | AggregateOp::Max => {
            matches!(v, Value::Str(_)) || Number::of(v).is_some()
        }
        _ => true,
    };
    match (ok, nan) {
        (true, _) => Ok(()),
        (false, true) => Err("NaN is not a valid input".into()),
        (false, false) if matches!(op, AggregateOp::Sum | AggregateOp::Avg) => {
            Err(format!("expected a number, got {}", v.to_json()))
        }
        (false, false) => Err(format!(
            "expected a number or a string, got {}",
            v.to_json()
        )),
    }
}

/// Whether `e` only says that a field is missing (the `of` value is then `null`).
fn is_missing_field(e: &EvalError) -> bool {
    e.message.to_ascii_lowercase().contains("no such key")
}

/// One aggregate of an operator: output name, op and compiled `of`.
#[derive(Debug)]
pub struct AggregateDef {
    /// Output field.
    pub name: Arc<str>,
    /// The aggregate function.
    pub op: AggregateOp,
    /// Its input (`None`: `null`, for count).
    pub of: Option<Expr>,
}

impl AggregateDef {
    /// This aggregate's checked input from `record`; `Err` is the dead-letter message.
    pub fn input(&self, record: &Value) -> Result<Value, String> {
        let v = match &self.of {
            Some(x) => match x.eval(&[record]) {
                Ok(v) => v,
                Err(e) if is_missing_field(&e) => Value::Null,
                Err(e) => return Err(format!("aggregate '{}': {e}", self.name)),
            },
            None => Value::Null,
        };
        check(self.op, &v)
            .map_err(|e| format!("aggregate '{}' ({}): {e}", self.name, op_name(self.op)))?;
        Ok(v)
    }
}

/// Every aggregate's checked input from `record` (all checked before any aggregate changes).
pub fn inputs(defs: &[AggregateDef], record: &Value) -> Result<Vec<Value>, String> {
    defs.iter().map(|d| d.input(record)).collect()
}

/// Empty accumulators, one per aggregate.
pub fn fresh(defs: &[AggregateDef]) -> Vec<Acc> {
    defs.iter().map(|d| Acc::new(d.op)).collect()
}

/// Adds one record's checked inputs (from [`inputs`]) at event time `ts`.
pub fn add_all(accs: &mut [Acc], ts: i64, inputs: &[Value]) {
    for (a, v) in accs.iter_mut().zip(inputs) {
        a.add(ts, v);
    }
}

/// The results as `name -> value` entries.
pub fn results(defs: &[AggregateDef], accs: &[Acc]) -> Vec<(Arc<str>, Value)> {
    defs.iter()
        .zip(accs)
        .map(|(d, a)| (d.name.clone(), a.result()))
        .collect()
}

/// The running state of one aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Acc {
    /// Number of records.
    Count {
        /// Count so far.
        n: u64,
    },
    /// Sum (stored as `{op: sum, int, float, is_float}`).
    Sum(Total),
    /// Minimum.
    Min {
        /// Smallest value.
        v: Option<Value>,
    },
    /// Maximum.
    Max {
        /// Largest value.
        v: Option<Value>,
    },
    /// Mean.
    Avg {
        /// Sum.
        sum: f64,
        /// Number of values.
        n: u64,
    },
    /// Distinct values (by key string).
    Distinct {
        /// The values seen.
        seen: BTreeSet<String>,
    },
    /// Value of the earliest record.
    First {
        /// (event time, value).
        v: Option<(i64, Value)>,
    },
    /// Value of the latest record.
    Last {
        /// (event time, value).
        v: Option<(i64, Value)>,
    },
    /// All values with their event times.
    Collect {
        /// (event time, value), in arrival order.
        items: Vec<(i64, Value)>,
    },
}

/// Whether `new` replaces `cur` in first (`earliest`) or last.
fn takes_place(earliest: bool, new: i64, cur: Option<&(i64, Value)>) -> bool {
    cur.is_none_or(|(t, _)| if earliest { new < *t } else { new >= *t })
}

impl Acc {
    /// An empty accumulator for `op`.
    pub fn new(op: AggregateOp) -> Acc {
        match op {
            AggregateOp::Count => Acc::Count { n: 0 },
            AggregateOp::Sum => Acc::Sum(Total::default()),
            AggregateOp::Min => Acc::Min { v: None },
            AggregateOp::Max => Acc::Max { v: None },
            AggregateOp::Avg => Acc::Avg { sum: 0.0, n: 0 },
            AggregateOp::DistinctCount => Acc::Distinct {
                seen: BTreeSet::new(),
            },
            AggregateOp::First => Acc::First { v: None },
            AggregateOp::Last => Acc::Last { v: None },
            AggregateOp::Collect => Acc::Collect { items: vec![] },
        }
    }

    /// Adds one input at event time `ts`, checked with [`check`] (a value that fails the
    /// check is ignored; `null` is skipped by all but count).
    pub fn add(&mut self, ts: i64, v: &Value) {
        if let Acc::Count { n } = self {
            *n += 1;
            return;
        }
        if *v == Value::Null {
            return;
        }
        match self {
            Acc::Count { .. } => {}
            Acc::Sum(t) => {
                if let Some(x) = Number::of(v) {
                    t.set(t.get().plus(x));
                }
            }
            Acc::Min { v: cur } => keep_extreme(cur, v, Ordering::Less),
            Acc::Max { v: cur } => keep_extreme(cur, v, Ordering::Greater),
            Acc::Avg { sum, n } => {
                if let Some(x) = Number::of(v) {
                    *sum += x.as_f64();
                    *n += 1;
                }
            }
            Acc::Distinct { seen } => {
                seen.insert(v.key_string());
            }
            Acc::First { v: cur } => {
                if takes_place(true, ts, cur.as_ref()) {
                    *cur = Some((ts, v.clone()));
                }
            }
            Acc::Last { v: cur } => {
                if takes_place(false, ts, cur.as_ref()) {
                    *cur = Some((ts, v.clone()));
                }
            }
            Acc::Collect { items } => items.push((ts, v.clone())),
        }
    }

    /// Merges `other` (same op) into `self`, as if its inputs had been added to `self`.
    pub fn merge(&mut self, other: Acc) {
        match (self, other) {
            (Acc::Count { n }, Acc::Count { n: m }) => *n += m,
            (Acc::Sum(t), Acc::Sum(o)) => t.set(t.get().plus(o.get())),
            (Acc::Min { v }, Acc::Min { v: Some(o) }) => keep_extreme(v, &o, Ordering::Less),
            (Acc::Max { v }, Acc::Max { v: Some(o) }) => keep_extreme(v, &o, Ordering::Greater),
            (Acc::Avg { sum, n }, Acc::Avg { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Acc::Distinct { seen }, Acc::Distinct { seen: s2 }) => seen.extend(s2),
            (Acc::First { v }, Acc::First { v: Some((t, x)) })
                if takes_place(true, t, v.as_ref()) =>
            {
                *v = Some((t, x));
            }
            (Acc::Last { v }, Acc::Last { v: Some((t, x)) })
                if takes_place(false, t, v.as_ref()) =>
            {
                *v = Some((t, x));
            }
            (Acc::Collect { items }, Acc::Collect { items: i2 }) => items.extend(i2),
            _ => {}
        }
    }

    /// The aggregate's result.
    pub fn result(&self) -> Value {
        match self {
            Acc::Count { n } => Value::Int(i64::try_from(*n).unwrap_or(i64::MAX)),
            Acc::Sum(t) => t.get().to_value(),
            Acc::Min { v } | Acc::Max { v } => v.clone().unwrap_or(Value::Null),
            Acc::Avg { sum, n } => {
                if *n == 0 {
                    Value::Null
                } else {
                    Value::Float(*sum / *n as f64)
                }
            }
            Acc::Distinct { seen } => Value::Int(i64::try_from(seen.len()).unwrap_or(i64::MAX)),
            Acc::First { v } | Acc::Last { v } => {
                v.as_ref().map(|(_, x)| x.clone()).unwrap_or(Value::Null)
            }
            Acc::Collect { items } => {
                let mut sorted: Vec<&(i64, Value)> = items.iter().collect();
                sorted.sort_by_key(|(t, _)| *t);
                Value::List(Arc::new(
                    sorted.into_iter().map(|(_, v)| v.clone()).collect(),
                ))
            }
        }
    }
}

/// Replaces `cur` by `new` if `new` orders `want` of it (or `cur` is empty); ignores a value
/// min and max do not take.
fn keep_extreme(cur: &mut Option<Value>, new: &Value, want: Ordering) {
    let valid = matches!(new, Value::Str(_)) || Number::of(new).is_some();
    if valid && cur.as_ref().is_none_or(|c| order(new, c) == want) {
        *cur = Some(new.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(name: &str, op: AggregateOp, of: &str) -> AggregateDef {
        AggregateDef {
            name: Arc::from(name),
            op,
            of: Some(Expr::compile(of, &["e"]).unwrap()),
        }
    }

    fn folded(op: AggregateOp, vals: &[Value]) -> Acc {
        let mut acc = Acc::new(op);
        for (ts, v) in vals.iter().enumerate() {
            check(op, v).unwrap();
            acc.add(ts as i64, v);
        }
        acc
    }

    #[test]
    fn aggregates_compute_and_merge() {
        let mut sum = folded(AggregateOp::Sum, &[Value::Int(2), Value::Int(3)]);
        assert_eq!(sum.result(), Value::Int(5));
        sum.add(0, &Value::Float(0.5));
        assert_eq!(sum.result(), Value::Float(5.5));
        assert!(check(AggregateOp::Sum, &Value::str("x")).is_err());

        let mut min = folded(AggregateOp::Min, &[Value::Int(7)]);
        min.merge(folded(AggregateOp::Min, &[Value::Int(3)]));
        assert_eq!(min.result(), Value::Int(3));

        let mut first = Acc::new(AggregateOp::First);
        first.add(20, &Value::str("b"));
        first.add(10, &Value::str("a"));
        assert_eq!(first.result(), Value::str("a"));

        let mut col = Acc::new(AggregateOp::Collect);
        col.add(20, &Value::Int(2));
        col.add(10, &Value::Int(1));
        assert_eq!(col.result().to_json(), "[1,2]");

        let vals: Vec<Value> = [1, 2, 2, 3].into_iter().map(Value::Int).collect();
        assert_eq!(
            folded(AggregateOp::DistinctCount, &vals).result(),
            Value::Int(3)
        );
        let avg = folded(AggregateOp::Avg, &[Value::Int(1), Value::Int(2)]);
        assert_eq!(avg.result(), Value::Float(1.5));
    }

    #[test]
    fn nulls_are_skipped_by_all_but_count() {
        let vals = [Value::Null, Value::Int(4), Value::Null];
        let results: Vec<String> = [
            AggregateOp::Count,
            AggregateOp::Sum,
            AggregateOp::Avg,
            AggregateOp::Min,
            AggregateOp::Max,
            AggregateOp::DistinctCount,
            AggregateOp::First,
            AggregateOp::Last,
            AggregateOp::Collect,
        ]
        .into_iter()
        .map(|op| folded(op, &vals).result().to_json())
        .collect();
        assert_eq!(results, ["3", "4", "4.0", "4", "4", "1", "4", "4", "[4]"]);
        let empty: Vec<String> = [
            AggregateOp::Sum,
            AggregateOp::Avg,
            AggregateOp::Min,
            AggregateOp::First,
            AggregateOp::DistinctCount,
            AggregateOp::Collect,
        ]
        .into_iter()
        .map(|op| folded(op, &[Value::Null]).result().to_json())
        .collect();
        assert_eq!(empty, ["0", "null", "null", "null", "0", "[]"]);
    }

    #[test]
    fn wrong_types_and_nan_are_refused_with_the_aggregate_and_value_named() {
        let nan = Value::Float(f64::NAN);
        for op in [AggregateOp::Sum, AggregateOp::Avg, AggregateOp::Min] {
            assert!(check(op, &nan).is_err(), "{op:?}");
            assert!(check(op, &Value::Bool(true)).is_err(), "{op:?}");
        }
        assert!(check(AggregateOp::Max, &Value::str("x")).is_ok());
        assert!(check(AggregateOp::Collect, &Value::Bool(true)).is_ok());
        let d = def("total", AggregateOp::Sum, "e.v");
        let err = d.input(&Value::from_json(r#"{"v":"x"}"#).unwrap());
        assert_eq!(
            err,
            Err(r#"aggregate 'total' (sum): expected a number, got "x""#.to_string())
        );
        assert_eq!(d.input(&Value::from_json("{}").unwrap()), Ok(Value::Null));
        let bad = def("total", AggregateOp::Sum, "e.v + 1");
        let err = bad.input(&Value::from_json(r#"{"v":"x"}"#).unwrap());
        assert!(err.is_err_and(|e| e.starts_with("aggregate 'total': ")));
    }

    #[test]
    fn sums_turn_float_on_overflow_and_min_max_order_mixed_values() {
        let sum = folded(AggregateOp::Sum, &[Value::Int(i64::MAX), Value::Int(1)]);
        assert_eq!(sum.result(), Value::Float(i64::MAX as f64 + 1.0));
        let big = folded(AggregateOp::Sum, &[Value::UInt(u64::MAX)]);
        assert_eq!(big.result(), Value::Float(u64::MAX as f64));
        let mut merged = folded(AggregateOp::Sum, &[Value::Int(i64::MAX)]);
        merged.merge(folded(AggregateOp::Sum, &[Value::Int(1)]));
        assert_eq!(merged.result(), sum.result());

        let mixed = [
            Value::Int(3),
            Value::Float(3.0),
            Value::Float(2.5),
            Value::Int(7),
        ];
        assert_eq!(folded(AggregateOp::Min, &mixed).result(), Value::Float(2.5));
        assert_eq!(folded(AggregateOp::Max, &mixed).result(), Value::Int(7));
        let tie = folded(AggregateOp::Max, &[Value::Int(3), Value::Float(3.0)]);
        assert_eq!(
            tie.result(),
            Value::Int(3),
            "the first of equal values stays"
        );
        let strings = [Value::str("b"), Value::Int(9), Value::str("a")];
        assert_eq!(folded(AggregateOp::Min, &strings).result(), Value::Int(9));
        assert_eq!(folded(AggregateOp::Max, &strings).result(), Value::str("b"));
    }

    #[test]
    fn first_and_last_break_ties_by_arrival() {
        let mut first = Acc::new(AggregateOp::First);
        let mut last = Acc::new(AggregateOp::Last);
        for v in ["a", "b"] {
            first.add(5, &Value::str(v));
            last.add(5, &Value::str(v));
        }
        assert_eq!(first.result(), Value::str("a"));
        assert_eq!(last.result(), Value::str("b"));
    }

    fn fold(defs: &[AggregateDef], accs: &mut [Acc], ts: i64, json: &str) -> Result<(), String> {
        let vals = inputs(defs, &Value::from_json(json).unwrap())?;
        add_all(accs, ts, &vals);
        Ok(())
    }

    #[test]
    fn folds_every_aggregate_and_skips_nulls() {
        let of = |name: &str, op| def(name, op, "e.x");
        let defs = [
            AggregateDef {
                name: Arc::from("n"),
                op: AggregateOp::Count,
                of: None,
            },
            of("sum", AggregateOp::Sum),
            of("min", AggregateOp::Min),
            of("max", AggregateOp::Max),
            of("avg", AggregateOp::Avg),
            of("distinct", AggregateOp::DistinctCount),
            of("first", AggregateOp::First),
            of("last", AggregateOp::Last),
            of("all", AggregateOp::Collect),
        ];
        let mut accs = fresh(&defs);
        for (ts, x) in ["3", "1", "null", "3", "5"].into_iter().enumerate() {
            fold(&defs, &mut accs, ts as i64, &format!(r#"{{"x":{x}}}"#)).unwrap();
        }
        assert_eq!(
            Value::map(results(&defs, &accs)).to_json(),
            r#"{"n":5,"sum":12,"min":1,"max":5,"avg":3.0,"distinct":3,"first":3,"last":5,"all":[3,1,3,5]}"#
        );
    }

    #[test]
    fn a_failing_value_changes_nothing() {
        let defs = [
            AggregateDef {
                name: Arc::from("n"),
                op: AggregateOp::Count,
                of: None,
            },
            def("sum", AggregateOp::Sum, "e.x"),
        ];
        let mut accs = fresh(&defs);
        assert!(fold(&defs, &mut accs, 0, r#"{"x":"abc"}"#).is_err());
        assert_eq!(
            Value::map(results(&defs, &accs)).to_json(),
            r#"{"n":0,"sum":0}"#
        );
    }
}
