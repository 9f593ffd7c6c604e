//! Retractions over the accumulators of [`super::accumulators`], for the `aggregate`
//! operator's `retractWhen`: count, sum, avg, min, max and distinctCount can take a value back
//! out again. Values follow the same rule as when they are added (checked with
//! [`check`](super::accumulators::check); `null` is skipped by all but count).
//!
//! min and max keep every value with its multiplicity (retracting the current maximum must
//! reveal the next one), distinctCount a count per distinct value; count, sum and avg keep
//! only their totals. Sums stay integral while every value is an integer, so adding and
//! retracting integers is exact. The serialised form is the one earlier builds wrote.

use super::accumulators::{order, Acc, Number, Total};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use weir_crds::pipeline::AggregateOp;
use weir_expr::Value;

/// One aggregate's running state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Agg {
    /// Append-only (no `retractWhen`): the accumulator itself.
    Append(Acc),
    /// Net number of records.
    Count(i64),
    /// Net sum.
    Sum(Total),
    /// Net sum and number of values.
    Avg(Total, i64),
    /// Every value with its multiplicity, ascending by [`order`]; `true` for max.
    Extreme(bool, Vec<(Value, u64)>),
    /// Multiplicity per distinct value (by its key string).
    Distinct(BTreeMap<String, u64>),
}

impl Agg {
    /// An empty aggregate for `op`; `retractable` selects the forms that take retractions
    /// (`first`, `last` and `collect` have none: validation rejects them with `retractWhen`).
    pub fn new(op: AggregateOp, retractable: bool) -> Agg {
        if !retractable {
            return Agg::Append(Acc::new(op));
        }
        match op {
            AggregateOp::Count => Agg::Count(0),
            AggregateOp::Sum => Agg::Sum(Total::default()),
            AggregateOp::Avg => Agg::Avg(Total::default(), 0),
            AggregateOp::Min => Agg::Extreme(false, Vec::new()),
            AggregateOp::Max => Agg::Extreme(true, Vec::new()),
            AggregateOp::DistinctCount => Agg::Distinct(BTreeMap::new()),
            AggregateOp::First | AggregateOp::Last | AggregateOp::Collect => {
                Agg::Append(Acc::new(op))
            }
        }
    }

    /// Adds a checked input at event time `ts`.
    pub fn add(&mut self, ts: i64, v: &Value) {
        if let Agg::Append(acc) = self {
            acc.add(ts, v);
            return;
        }
        if let Agg::Count(n) = self {
            *n += 1;
            return;
        }
        if *v == Value::Null {
            return;
        }
        match self {
            Agg::Append(_) | Agg::Count(_) => {}
            Agg::Sum(t) => {
                if let Some(x) = Number::of(v) {
                    t.set(t.get().plus(x));
                }
            }
            Agg::Avg(t, n) => {
                if let Some(x) = Number::of(v) {
                    t.set(t.get().plus(x));
                    *n += 1;
                }
            }
            Agg::Extreme(_, values) => {
                if !matches!(v, Value::Str(_)) && Number::of(v).is_none() {
                    return;
                }
                match values.binary_search_by(|(x, _)| order(x, v)) {
                    Ok(i) => values[i].1 += 1,
                    Err(i) => values.insert(i, (v.clone(), 1)),
                }
            }
            Agg::Distinct(seen) => *seen.entry(v.key_string()).or_insert(0) += 1,
        }
    }

    /// Whether checked input `v` can be retracted: the aggregate must take retractions, and a
    /// min, max or distinctCount value must have been added (`null` is skipped, as when added).
    pub fn check_retract(&self, v: &Value) -> Result<(), String> {
        let present = match self {
            Agg::Append(_) => return Err("this aggregate cannot take retractions".into()),
            Agg::Count(_) | Agg::Sum(_) | Agg::Avg(..) => true,
            _ if *v == Value::Null => true,
            Agg::Extreme(_, values) => values.binary_search_by(|(x, _)| order(x, v)).is_ok(),
            Agg::Distinct(seen) => seen.contains_key(&v.key_string()),
        };
        if present {
            Ok(())
        } else {
            Err(format!("retracts {} which was never added", v.to_json()))
        }
    }

    /// Takes `v` back out (checked with [`Agg::check_retract`] before).
    pub fn retract(&mut self, v: &Value) {
        if let Agg::Count(n) = self {
            *n -= 1;
            return;
        }
        if *v == Value::Null {
            return;
        }
        match self {
            Agg::Append(_) | Agg::Count(_) => {}
            Agg::Sum(t) => {
                if let Some(x) = Number::of(v) {
                    t.set(t.get().minus(x));
                }
            }
            Agg::Avg(t, n) => {
                if let Some(x) = Number::of(v) {
                    t.set(t.get().minus(x));
                    *n -= 1;
                }
            }
            Agg::Extreme(_, values) => {
                if let Ok(i) = values.binary_search_by(|(x, _)| order(x, v)) {
                    values[i].1 -= 1;
                    if values[i].1 == 0 {
                        values.remove(i);
                    }
                }
            }
            Agg::Distinct(seen) => {
                let key = v.key_string();
                if let Some(n) = seen.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        seen.remove(&key);
                    }
                }
            }
        }
    }

    /// The aggregate's current result (the same as the accumulator's over the net values).
    pub fn result(&self) -> Value {
        match self {
            Agg::Append(acc) => acc.result(),
            Agg::Count(n) => Value::Int(*n),
            Agg::Sum(t) => t.get().to_value(),
            Agg::Avg(t, n) => {
                if *n <= 0 {
                    Value::Null
                } else {
                    Value::Float(t.get().as_f64() / *n as f64)
                }
            }
            Agg::Extreme(max, values) => {
                let end = if *max { values.last() } else { values.first() };
                end.map(|(v, _)| v.clone()).unwrap_or(Value::Null)
            }
            Agg::Distinct(seen) => Value::Int(i64::try_from(seen.len()).unwrap_or(i64::MAX)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::support::accumulators::check;

    fn added(op: AggregateOp, vals: &[Value]) -> Agg {
        let mut a = Agg::new(op, true);
        for v in vals {
            check(op, v).unwrap();
            a.add(0, v);
        }
        a
    }

    #[test]
    fn max_and_min_fall_back_to_the_next_value_when_the_extreme_is_retracted() {
        let vals = [
            Value::Int(5),
            Value::Int(9),
            Value::Int(9),
            Value::Float(2.5),
        ];
        let mut max = added(AggregateOp::Max, &vals);
        let mut min = added(AggregateOp::Min, &vals);
        assert_eq!(max.result(), Value::Int(9));
        assert_eq!(min.result(), Value::Float(2.5));
        max.retract(&Value::Int(9));
        assert_eq!(max.result(), Value::Int(9), "9 was added twice");
        max.retract(&Value::Int(9));
        assert_eq!(max.result(), Value::Int(5));
        min.retract(&Value::Float(2.5));
        assert_eq!(min.result(), Value::Int(5));
        assert!(max.check_retract(&Value::Int(9)).is_err());
        assert!(max.check_retract(&Value::Int(5)).is_ok());
    }

    #[test]
    fn sums_stay_exact_integers_and_avg_and_count_follow_retractions() {
        let big = Value::Int(i64::MAX - 1);
        let mut sum = added(AggregateOp::Sum, &[Value::Int(3), Value::Int(4)]);
        sum.retract(&Value::Int(3));
        assert_eq!(sum.result(), Value::Int(4));
        sum.add(0, &big);
        assert!(
            matches!(sum.result(), Value::Float(_)),
            "overflow turns float"
        );
        let mut avg = added(
            AggregateOp::Avg,
            &[Value::Int(1), Value::Int(2), Value::Int(6)],
        );
        assert_eq!(avg.result(), Value::Float(3.0));
        avg.retract(&Value::Int(6));
        assert_eq!(avg.result(), Value::Float(1.5));
        avg.retract(&Value::Int(1));
        avg.retract(&Value::Int(2));
        assert_eq!(avg.result(), Value::Null);
        let mut n = added(AggregateOp::Count, &[Value::Null, Value::Null]);
        n.retract(&Value::Null);
        assert_eq!(n.result(), Value::Int(1));
    }

    #[test]
    fn distinct_count_counts_multiplicities_and_append_only_refuses_retractions() {
        let a = Value::str("a");
        let mut d = added(
            AggregateOp::DistinctCount,
            &[a.clone(), a.clone(), Value::str("b")],
        );
        assert_eq!(d.result(), Value::Int(2));
        d.retract(&a);
        assert_eq!(d.result(), Value::Int(2));
        d.retract(&a);
        assert_eq!(d.result(), Value::Int(1));
        assert!(d.check_retract(&a).is_err());

        let mut last = Agg::new(AggregateOp::Last, false);
        last.add(10, &Value::Int(1));
        last.add(5, &Value::Int(2));
        assert_eq!(last.result(), Value::Int(1), "last by event time");
        assert!(last.check_retract(&Value::Int(1)).is_err());
        assert!(check(AggregateOp::Sum, &Value::str("x")).is_err());
    }

    #[test]
    fn nulls_are_skipped_when_added_and_when_retracted() {
        let mut avg = added(AggregateOp::Avg, &[Value::Int(4), Value::Null]);
        assert_eq!(
            avg.result(),
            Value::Float(4.0),
            "null is not in the divisor"
        );
        assert!(avg.check_retract(&Value::Null).is_ok());
        avg.retract(&Value::Null);
        assert_eq!(avg.result(), Value::Float(4.0));
        let mut max = added(AggregateOp::Max, &[Value::Int(4), Value::Null]);
        assert!(max.check_retract(&Value::Null).is_ok());
        max.retract(&Value::Null);
        assert_eq!(max.result(), Value::Int(4));
        let d = added(AggregateOp::DistinctCount, &[Value::Null, Value::Int(1)]);
        assert_eq!(d.result(), Value::Int(1));
    }
}
