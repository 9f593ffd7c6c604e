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

#[cfg(test)]
mod tests {
    //! The literals were written by the previous build (commit 4f8157f): its persisted types,
    //! copied verbatim, serialised with `serde_json` (keyed state) and its `state::codec`.
    use super::*;
    use crate::operator::support::retraction::Agg;
    use crate::state::codec;

    /// `window` accumulators (`Vec<Acc>`) as JSON, as keyed state stores them.
    const ACC_JSON: &str = r#"[{"op":"count","n":3},{"op":"sum","int":5,"float":0.0,"is_float":false},{"op":"sum","int":0,"float":2.5,"is_float":true},{"op":"min","v":1},{"op":"max","v":"z"},{"op":"avg","sum":3.5,"n":2},{"op":"distinct","seen":["1","a"]},{"op":"first","v":[10,"a"]},{"op":"last","v":[20,2.5]},{"op":"collect","items":[[1,1],[2,null]]},{"op":"min","v":null}]"#;
    /// The same in the binary state codec.
    const ACC_BIN: &str = "b10a0b0a020805636f756e74830a04080373756d85070000000000000000030a040d0180070000000000000440040a0208036d696e02810a0208036d61780208017a0a030803617667070000000000000c40820a02080864697374696e63740a020801310801610a0208056669727374020a028a0801610a0208046c617374020a02940700000000000004400a020807636f6c6c6563740a020a0281810a0282000a020d0201";
    /// `aggregate` accumulators (`Vec<Agg>`) as JSON, as keyed state stores them.
    const AGG_JSON: &str = r#"[{"Append":{"op":"last","v":[5,4]}},{"Count":2},{"Sum":{"int":7,"float":0.0,"is_float":false}},{"Avg":[{"int":0,"float":1.5,"is_float":true},2]},{"Extreme":[true,[[5,1],["x",2]]]},{"Distinct":{"a":2}}]"#;
    /// The same in the binary state codec.
    const AGG_BIN: &str = "b10a060c000a0208046c617374020a0285840c01820c020a0387070000000000000000030c030a020a038007000000000000f83f04820c040a02040a020a0285810a02080178820c050b0108016182";
    /// `accumulate` aggregates (`Vec<AggState>`) in the binary state codec.
    const STATE_BIN: &str = "b10a0a0c00830c010c00850c010c010700000000000004400c0202810c03010c040a02070000000000000c40820c050a010801610c06020801610c0702890c080a0281080162";
    /// The same as JSON (the workload state of builds before the binary codec).
    const STATE_JSON: &str = r#"[{"Count":3},{"Sum":{"Int":5}},{"Sum":{"Float":2.5}},{"Min":1},{"Max":null},{"Avg":[3.5,2]},{"DistinctCount":["a"]},{"First":"a"},{"Last":9},{"Collect":[1,"b"]}]"#;
    /// `splice`'s `[Number::Int(5), Number::Float(2.5)]` in the binary state codec.
    const NUMBER_BIN: &str = "b10a020c00850c01070000000000000440";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn bin<T: Serialize>(v: &T) -> String {
        let mut b = vec![];
        codec::encode_into(v, &mut b).unwrap();
        hex(&b)
    }

    fn shown(results: impl Iterator<Item = Value>) -> Vec<String> {
        results.map(|v| v.to_json()).collect()
    }

    #[test]
    fn window_accumulators_of_the_previous_build_restore_and_keep_their_form() {
        let accs: Vec<Acc> = serde_json::from_str(ACC_JSON).unwrap();
        let want = [
            "3", "5", "2.5", "1", r#""z""#, "1.75", "2", r#""a""#, "2.5", "[1,null]", "null",
        ];
        assert_eq!(shown(accs.iter().map(Acc::result)), want);
        assert_eq!(serde_json::to_string(&accs).unwrap(), ACC_JSON);
        let from_bin: Vec<Acc> = codec::decode(&unhex(ACC_BIN)).unwrap();
        assert_eq!(from_bin, accs);
        assert_eq!(bin(&accs), ACC_BIN);
    }

    #[test]
    fn aggregate_accumulators_of_the_previous_build_restore_and_keep_their_form() {
        let aggs: Vec<Agg> = serde_json::from_str(AGG_JSON).unwrap();
        let want = ["4", "2", "7", "0.75", r#""x""#, "1"];
        assert_eq!(shown(aggs.iter().map(Agg::result)), want);
        assert_eq!(serde_json::to_string(&aggs).unwrap(), AGG_JSON);
        let from_bin: Vec<Agg> = codec::decode(&unhex(AGG_BIN)).unwrap();
        assert_eq!(from_bin, aggs);
        assert_eq!(bin(&aggs), AGG_BIN);
    }

    #[test]
    fn accumulate_aggregates_of_the_previous_build_convert() {
        let want = [
            "3",
            "5",
            "2.5",
            "1",
            "null",
            "1.75",
            "1",
            r#""a""#,
            "9",
            r#"[1,"b"]"#,
        ];
        let from_bin: Vec<AggState> = codec::decode(&unhex(STATE_BIN)).unwrap();
        let from_json: Vec<AggState> = codec::decode(STATE_JSON.as_bytes()).unwrap();
        assert_eq!(from_bin, from_json);
        let mut accs = upgrade(from_bin);
        assert_eq!(shown(accs.iter().map(Acc::result)), want);
        // later records take their event-time place after the converted values
        accs[7].add(0, &Value::str("z"));
        accs[8].add(0, &Value::Int(10));
        accs[9].add(0, &Value::Int(2));
        assert_eq!(accs[7].result(), Value::str("a"), "first stays");
        assert_eq!(accs[8].result(), Value::Int(10), "last moves on");
        assert_eq!(accs[9].result().to_json(), r#"[1,"b",2]"#);
    }

    #[test]
    fn splice_numbers_keep_their_form() {
        let nums: Vec<Number> = codec::decode(&unhex(NUMBER_BIN)).unwrap();
        assert_eq!(nums, [Number::Int(5), Number::Float(2.5)]);
        assert_eq!(bin(&nums), NUMBER_BIN);
    }
}
