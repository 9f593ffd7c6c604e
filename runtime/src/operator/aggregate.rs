//! Aggregate accumulators (count, sum, min, max, avg, distinctCount, first, last, collect),
//! serialisable into state and mergeable (for session windows).

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeSet;
use weir_crds::pipeline::AggregateOp;
use weir_expr::Value;

/// The running state of one aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Acc {
    /// Number of records.
    Count {
        /// Count so far.
        n: u64,
    },
    /// Sum, integral while every input is an integer.
    Sum {
        /// Integer sum.
        int: i64,
        /// Float sum.
        float: f64,
        /// Whether a non-integer was seen.
        is_float: bool,
    },
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
        /// Count.
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

fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
    }
}

impl Acc {
    /// An empty accumulator for `op`.
    pub fn new(op: AggregateOp) -> Acc {
        match op {
            AggregateOp::Count => Acc::Count { n: 0 },
            AggregateOp::Sum => Acc::Sum {
                int: 0,
                float: 0.0,
                is_float: false,
            },
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

    /// Adds one input (`v` is the `of` value; Null for count). Errors describe a wrong type.
    pub fn add(&mut self, ts: i64, v: &Value) -> Result<(), String> {
        let need_number = |v: &Value| {
            v.as_f64()
                .ok_or_else(|| format!("expected a number, got {}", v.to_json()))
        };
        let want = if matches!(self, Acc::Min { .. }) {
            Ordering::Less
        } else {
            Ordering::Greater
        };
        match self {
            Acc::Count { n } => *n += 1,
            Acc::Sum {
                int,
                float,
                is_float,
            } => match v {
                Value::Int(i) if !*is_float => match int.checked_add(*i) {
                    Some(s) => *int = s,
                    None => {
                        *is_float = true;
                        *float = *int as f64 + *i as f64;
                    }
                },
                other => {
                    let x = need_number(other)?;
                    if !*is_float {
                        *is_float = true;
                        *float = *int as f64;
                    }
                    *float += x;
                }
            },
            Acc::Min { v: cur } | Acc::Max { v: cur } => {
                if compare(v, v).is_none() {
                    return Err(format!("expected a number or string, got {}", v.to_json()));
                }
                let replace = match cur {
                    None => true,
                    Some(c) => compare(v, c) == Some(want),
                };
                if replace {
                    *cur = Some(v.clone());
                }
            }
            Acc::Avg { sum, n } => {
                *sum += need_number(v)?;
                *n += 1;
            }
            Acc::Distinct { seen } => {
                seen.insert(v.key_string());
            }
            Acc::First { v: cur } => {
                if cur.as_ref().is_none_or(|(t, _)| ts < *t) {
                    *cur = Some((ts, v.clone()));
                }
            }
            Acc::Last { v: cur } => {
                if cur.as_ref().is_none_or(|(t, _)| ts >= *t) {
                    *cur = Some((ts, v.clone()));
                }
            }
            Acc::Collect { items } => items.push((ts, v.clone())),
        }
        Ok(())
    }

    /// Merges `other` (same op) into `self`.
    pub fn merge(&mut self, other: Acc) {
        match (self, other) {
            (Acc::Count { n }, Acc::Count { n: m }) => *n += m,
            (
                Acc::Sum {
                    int,
                    float,
                    is_float,
                },
                Acc::Sum {
                    int: i2,
                    float: f2,
                    is_float: fl2,
                },
            ) => {
                if !*is_float && !fl2 {
                    match int.checked_add(i2) {
                        Some(s) => *int = s,
                        None => {
                            *is_float = true;
                            *float = *int as f64 + i2 as f64;
                        }
                    }
                } else {
                    let a = if *is_float { *float } else { *int as f64 };
                    let b = if fl2 { f2 } else { i2 as f64 };
                    *is_float = true;
                    *float = a + b;
                }
            }
            (Acc::Min { v }, Acc::Min { v: Some(o) })
                if v.as_ref()
                    .is_none_or(|c| compare(&o, c) == Some(Ordering::Less)) =>
            {
                *v = Some(o);
            }
            (Acc::Max { v }, Acc::Max { v: Some(o) })
                if v.as_ref()
                    .is_none_or(|c| compare(&o, c) == Some(Ordering::Greater)) =>
            {
                *v = Some(o);
            }
            (Acc::Avg { sum, n }, Acc::Avg { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (Acc::Distinct { seen }, Acc::Distinct { seen: s2 }) => seen.extend(s2),
            (Acc::First { v }, Acc::First { v: Some((t, x)) })
                if v.as_ref().is_none_or(|(c, _)| t < *c) =>
            {
                *v = Some((t, x));
            }
            (Acc::Last { v }, Acc::Last { v: Some((t, x)) })
                if v.as_ref().is_none_or(|(c, _)| t >= *c) =>
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
            Acc::Sum {
                int,
                float,
                is_float,
            } => {
                if *is_float {
                    Value::Float(*float)
                } else {
                    Value::Int(*int)
                }
            }
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
                Value::List(std::sync::Arc::new(
                    sorted.into_iter().map(|(_, v)| v.clone()).collect(),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_compute_and_merge() {
        let mut sum = Acc::new(AggregateOp::Sum);
        sum.add(0, &Value::Int(2)).unwrap();
        sum.add(0, &Value::Int(3)).unwrap();
        assert_eq!(sum.result(), Value::Int(5));
        sum.add(0, &Value::Float(0.5)).unwrap();
        assert_eq!(sum.result(), Value::Float(5.5));
        assert!(sum.add(0, &Value::str("x")).is_err());

        let mut min = Acc::new(AggregateOp::Min);
        min.add(0, &Value::Int(7)).unwrap();
        let mut min2 = Acc::new(AggregateOp::Min);
        min2.add(0, &Value::Int(3)).unwrap();
        min.merge(min2);
        assert_eq!(min.result(), Value::Int(3));

        let mut first = Acc::new(AggregateOp::First);
        first.add(20, &Value::str("b")).unwrap();
        first.add(10, &Value::str("a")).unwrap();
        assert_eq!(first.result(), Value::str("a"));

        let mut col = Acc::new(AggregateOp::Collect);
        col.add(20, &Value::Int(2)).unwrap();
        col.add(10, &Value::Int(1)).unwrap();
        assert_eq!(col.result().to_json(), "[1,2]");

        let mut d = Acc::new(AggregateOp::DistinctCount);
        for x in [1, 2, 2, 3] {
            d.add(0, &Value::Int(x)).unwrap();
        }
        assert_eq!(d.result(), Value::Int(3));
        let mut avg = Acc::new(AggregateOp::Avg);
        avg.add(0, &Value::Int(1)).unwrap();
        avg.add(0, &Value::Int(2)).unwrap();
        assert_eq!(avg.result(), Value::Float(1.5));
    }
}
