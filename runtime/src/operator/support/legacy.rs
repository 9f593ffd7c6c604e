//! Accumulator state in the forms earlier builds wrote, and how it is read today.
//!
//! - `window` stored `Acc` and `aggregate` stored `Agg` (JSON, in keyed state): today's
//!   [`Acc`] and [`Agg`](super::retraction::Agg) keep those forms byte for byte.
//! - `accumulate` stored the workload `AggState` (binary state codec, JSON before it) in its
//!   session's `aggs`: [`AggState`] reads it and converts into [`Acc`]. It had no event times
//!   for `first`, `last` and `collect`; the converted values get `i64::MIN`, so they stay the
//!   first (and are replaced by any later `last`), as the session saw them in event-time order.
//! - `splice` stores [`Number`](super::accumulators::Number), whose form is unchanged.

use super::accumulators::{Acc, Number, Total};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use weir_expr::Value;

/// The state of one `accumulate` aggregate as earlier builds wrote it.
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

impl From<AggState> for Acc {
    fn from(s: AggState) -> Acc {
        let at_start = |v: Option<Value>| v.map(|v| (i64::MIN, v));
        match s {
            AggState::Count(n) => Acc::Count {
                n: u64::try_from(n).unwrap_or(0),
            },
            AggState::Sum(n) => Acc::Sum(Total::from(n)),
            AggState::Min(v) => Acc::Min { v },
            AggState::Max(v) => Acc::Max { v },
            AggState::Avg(sum, n) => Acc::Avg { sum, n },
            AggState::DistinctCount(seen) => Acc::Distinct { seen },
            AggState::First(v) => Acc::First { v: at_start(v) },
            AggState::Last(v) => Acc::Last { v: at_start(v) },
            AggState::Collect(items) => Acc::Collect {
                items: items.into_iter().map(|v| (i64::MIN, v)).collect(),
            },
        }
    }
}

/// Converts the aggregates of a session written by an earlier build.
pub fn upgrade(old: Vec<AggState>) -> Vec<Acc> {
    old.into_iter().map(Acc::from).collect()
}
