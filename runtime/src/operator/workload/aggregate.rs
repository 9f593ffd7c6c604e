//! Incremental aggregates (`count`, `sum`, `min`, `max`, `avg`, `distinctCount`, `first`,
//! `last`, `collect`) with serialisable state, for accumulate (and any operator that folds
//! records one at a time in event-time order).
//!
//! `null` values of `of` are skipped by every aggregate except `count`, which counts records.
//! An empty `sum` is 0; an empty `min`/`max`/`avg`/`first`/`last` is `null`.

use super::{compile, WorkloadError};
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::sync::Arc;
use weir_crds::pipeline::{AggregateOp, AggregateSpec};
use weir_expr::{Expr, Map, Value};

/// An exact integer sum that turns into a float sum on the first float or on overflow.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Number {
    /// Integer.
    Int(i64),
    /// Floating point.
    Float(f64),
}

impl Number {
    /// `self + v`, or an error if `v` is not a number.
    pub fn plus(self, v: &Value) -> Result<Number, String> {
        let bad = || format!("cannot add {} (not a number)", v.to_json());
        Ok(match (self, v) {
            (Number::Int(a), Value::Int(b)) => match a.checked_add(*b) {
                Some(s) => Number::Int(s),
                None => Number::Float(a as f64 + *b as f64),
            },
            (Number::Int(a), other) => Number::Float(a as f64 + other.as_f64().ok_or_else(bad)?),
            (Number::Float(a), other) => Number::Float(a + other.as_f64().ok_or_else(bad)?),
        })
    }

    /// As a record value.
    pub fn to_value(self) -> Value {
        match self {
            Number::Int(i) => Value::Int(i),
            Number::Float(f) => Value::Float(f),
        }
    }
}

/// Orders two values of the same kind (numbers with numbers, strings with strings, bools).
pub fn compare(a: &Value, b: &Value) -> Result<Ordering, String> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(x.cmp(y)),
        (Value::Str(x), Value::Str(y)) => Ok(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Ok(x.cmp(y)),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x
                .partial_cmp(&y)
                .ok_or_else(|| "cannot order NaN".to_string()),
            _ => Err(format!(
                "cannot compare {} with {}",
                a.to_json(),
                b.to_json()
            )),
        },
    }
}

/// The running state of one aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AggState {
    /// Records so far.
    Count(i64),
    /// Sum so far.
    Sum(Number),
    /// Smallest so far.
    Min(Option<Value>),
    /// Largest so far.
    Max(Option<Value>),
    /// Sum and count.
    Avg(f64, u64),
    /// The distinct values' key strings.
    DistinctCount(BTreeSet<String>),
    /// The first value.
    First(Option<Value>),
    /// The last value.
    Last(Option<Value>),
    /// All values in order.
    Collect(Vec<Value>),
}

/// A set of compiled aggregates over `e`.
pub struct Aggregates {
    names: Vec<Arc<str>>,
    ops: Vec<AggregateOp>,
    of: Vec<Option<Expr>>,
}

impl Aggregates {
    /// Compiles `specs`; `field` is the spec path used in errors (e.g. `accumulate.aggregates`).
    pub fn new(
        operator: &str,
        field: &str,
        specs: &[AggregateSpec],
    ) -> Result<Self, WorkloadError> {
        let mut of = Vec::with_capacity(specs.len());
        for (i, s) in specs.iter().enumerate() {
            of.push(match (&s.of, s.op) {
                (Some(src), _) => {
                    Some(compile(operator, &format!("{field}[{i}].of"), src, &["e"])?)
                }
                (None, AggregateOp::Count) => None,
                (None, _) => {
                    return Err(WorkloadError::InvalidSpec {
                        operator: operator.to_string(),
                        field: format!("{field}[{i}].of"),
                        message: "required unless op is count".to_string(),
                    })
                }
            });
        }
        Ok(Aggregates {
            names: specs.iter().map(|s| Arc::from(s.name.as_str())).collect(),
            ops: specs.iter().map(|s| s.op).collect(),
            of,
        })
    }

    /// Fresh states, one per aggregate.
    pub fn init(&self) -> Vec<AggState> {
        self.ops
            .iter()
            .map(|op| match op {
                AggregateOp::Count => AggState::Count(0),
                AggregateOp::Sum => AggState::Sum(Number::Int(0)),
                AggregateOp::Min => AggState::Min(None),
                AggregateOp::Max => AggState::Max(None),
                AggregateOp::Avg => AggState::Avg(0.0, 0),
                AggregateOp::DistinctCount => AggState::DistinctCount(BTreeSet::new()),
                AggregateOp::First => AggState::First(None),
                AggregateOp::Last => AggState::Last(None),
                AggregateOp::Collect => AggState::Collect(Vec::new()),
            })
            .collect()
    }

    /// Folds record `e` into `states`. On error nothing is changed.
    pub fn update(&self, states: &mut [AggState], e: &Value) -> Result<(), String> {
        let mut values = Vec::with_capacity(self.of.len());
        for x in &self.of {
            values.push(match x {
                Some(x) => x.eval(&[e]).map_err(|err| err.to_string())?,
                None => Value::Null,
            });
        }
        let mut next: Vec<AggState> = states.to_vec();
        for (st, v) in next.iter_mut().zip(values) {
            if let AggState::Count(n) = st {
                *n += 1;
                continue;
            }
            if v == Value::Null {
                continue;
            }
            match st {
                AggState::Count(_) => {}
                AggState::Sum(s) => *s = s.plus(&v)?,
                AggState::Min(m) => match m {
                    Some(cur) if compare(&v, cur)? != Ordering::Less => {}
                    _ => *m = Some(v),
                },
                AggState::Max(m) => match m {
                    Some(cur) if compare(&v, cur)? != Ordering::Greater => {}
                    _ => *m = Some(v),
                },
                AggState::Avg(sum, n) => {
                    *sum += v
                        .as_f64()
                        .ok_or_else(|| format!("cannot average {}", v.to_json()))?;
                    *n += 1;
                }
                AggState::DistinctCount(set) => {
                    set.insert(v.key_string());
                }
                AggState::First(f) => {
                    if f.is_none() {
                        *f = Some(v);
                    }
                }
                AggState::Last(l) => *l = Some(v),
                AggState::Collect(c) => c.push(v),
            }
        }
        states.clone_from_slice(&next);
        Ok(())
    }

    /// The aggregates' current values as a map `name -> value`.
    pub fn result(&self, states: &[AggState]) -> Value {
        let mut m = Map::with_capacity(states.len());
        for (name, st) in self.names.iter().zip(states) {
            let v = match st {
                AggState::Count(n) => Value::Int(*n),
                AggState::Sum(s) => s.to_value(),
                AggState::Min(v) | AggState::Max(v) | AggState::First(v) | AggState::Last(v) => {
                    v.clone().unwrap_or(Value::Null)
                }
                AggState::Avg(sum, n) => {
                    if *n == 0 {
                        Value::Null
                    } else {
                        Value::Float(sum / *n as f64)
                    }
                }
                AggState::DistinctCount(s) => {
                    Value::Int(i64::try_from(s.len()).unwrap_or(i64::MAX))
                }
                AggState::Collect(c) => Value::List(Arc::new(c.clone())),
            };
            m.insert(name.clone(), v);
        }
        Value::Map(Arc::new(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, op: AggregateOp, of: Option<&str>) -> AggregateSpec {
        AggregateSpec {
            name: name.into(),
            op,
            of: of.map(String::from),
        }
    }

    #[test]
    fn folds_every_aggregate_and_skips_nulls() {
        let aggs = Aggregates::new(
            "op",
            "aggregates",
            &[
                spec("n", AggregateOp::Count, None),
                spec("sum", AggregateOp::Sum, Some("e.x")),
                spec("min", AggregateOp::Min, Some("e.x")),
                spec("max", AggregateOp::Max, Some("e.x")),
                spec("avg", AggregateOp::Avg, Some("e.x")),
                spec("distinct", AggregateOp::DistinctCount, Some("e.x")),
                spec("first", AggregateOp::First, Some("e.x")),
                spec("last", AggregateOp::Last, Some("e.x")),
                spec("all", AggregateOp::Collect, Some("e.x")),
            ],
        )
        .unwrap();
        let mut st = aggs.init();
        for x in ["3", "1", "null", "3", "5"] {
            let e = Value::from_json(&format!(r#"{{"x":{x}}}"#)).unwrap();
            aggs.update(&mut st, &e).unwrap();
        }
        assert_eq!(
            aggs.result(&st).to_json(),
            r#"{"n":5,"sum":12,"min":1,"max":5,"avg":3.0,"distinct":3,"first":3,"last":5,"all":[3,1,3,5]}"#
        );
    }

    #[test]
    fn a_failing_value_changes_nothing() {
        let aggs = Aggregates::new(
            "op",
            "aggregates",
            &[
                spec("n", AggregateOp::Count, None),
                spec("sum", AggregateOp::Sum, Some("e.x")),
            ],
        )
        .unwrap();
        let mut st = aggs.init();
        let e = Value::from_json(r#"{"x":"abc"}"#).unwrap();
        assert!(aggs.update(&mut st, &e).is_err());
        assert_eq!(aggs.result(&st).to_json(), r#"{"n":0,"sum":0}"#);
    }
}
