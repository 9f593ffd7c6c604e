//! `aggregate`: a running aggregation per key over the whole stream (no window), with its
//! output as a changelog.
//!
//! Semantics:
//!
//! - Each record is evaluated for its key and its aggregates' inputs and updates that key's
//!   aggregates, which live in the task's RocksDB (behind the write-back cache) and so survive
//!   a restore. Nothing waits for watermarks: results are emitted when a record changes them,
//!   with the record's event time.
//! - An update is `{key, <aggregates>, retract: false}` and replaces the key's previous
//!   result (an upsert). A record that leaves every result unchanged emits nothing.
//! - With `emitRetractions`, every update of a key that already had a result is preceded by
//!   that previous result with `retract: true`, so the output can feed another `aggregate`
//!   whose `retractWhen` is `e.retract` (a retract stream, as Flink's updating aggregations
//!   produce): the highest bid per auction, then the average of those per category.
//! - A record for which `retractWhen` holds is taken out of its key's aggregates instead of
//!   added. When a key's last record is retracted the key is forgotten and its last result
//!   is emitted with `retract: true` (a delete). A retraction that does not match anything
//!   added (a key with no records, a min/max/distinctCount value never added) changes nothing
//!   and goes to `<op>.deadLetter`, as do records whose key, `retractWhen` (not a bool) or
//!   aggregate input cannot be evaluated.
//! - Aggregate inputs follow the value rule of [`super::support::accumulators`] (`null` and
//!   missing fields are skipped by all but `count`, a value of the wrong type is a dead
//!   letter), for retractions as for additions.
//! - State grows with the number of keys (and with distinct values for min/max/distinctCount
//!   under retractions); there is no TTL.

use super::support::accumulators::{self, AggregateDef};
use super::support::retraction::Agg;
use super::{compile, state_err, Context, KeyedState, OpResult, Operator};
use crate::record::Record;
use crate::state::StateHandle;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use weir_crds::pipeline::{AggregateOp, KeyedAggregateSpec};
use weir_crds::validate::SpecError;
use weir_expr::{Expr, Value};

/// One key's running aggregates and how many records they hold net of retractions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct KeyAggregates {
    rows: u64,
    aggs: Vec<Agg>,
}

/// The `aggregate` operator.
pub struct KeyedAggregate {
    name: String,
    key: Expr,
    retract_when: Option<Expr>,
    emit_retractions: bool,
    aggs: Vec<AggregateDef>,
    state: Option<KeyedState<KeyAggregates>>,
}

impl KeyedAggregate {
    /// Compiles the expressions; `field` is `spec.pipeline.operators[i].aggregate`.
    pub fn new(field: &str, name: &str, spec: &KeyedAggregateSpec) -> Result<Self, Vec<SpecError>> {
        let mut errors = vec![];
        let key = compile(&format!("{field}.key"), &spec.key).map_err(|e| errors.push(e));
        let retract_when = match &spec.retract_when {
            Some(src) => compile(&format!("{field}.retractWhen"), src)
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
            if retract_when.is_some()
                && matches!(
                    a.op,
                    AggregateOp::First | AggregateOp::Last | AggregateOp::Collect
                )
            {
                errors.push(SpecError {
                    field: format!("{field}.aggregates[{i}].op"),
                    message: "first, last and collect cannot take retractions".into(),
                });
            }
            aggs.push(AggregateDef {
                name: Arc::from(a.name.as_str()),
                op: a.op,
                of,
            });
        }
        match key {
            Ok(key) if errors.is_empty() => Ok(KeyedAggregate {
                name: name.to_string(),
                key,
                retract_when,
                emit_retractions: spec.emit_retractions,
                aggs,
                state: None,
            }),
            _ => Err(errors),
        }
    }

    /// Key, whether the record retracts, and the aggregates' inputs; `Err` is the dead-letter
    /// message.
    fn inputs(&self, record: &Record) -> Result<(Value, bool, Vec<Value>), String> {
        let key = self
            .key
            .eval(&[&record.value])
            .map_err(|e| format!("key: {e}"))?;
        let retract = match &self.retract_when {
            Some(cond) => match cond.eval(&[&record.value]).map_err(|e| e.to_string())? {
                Value::Bool(b) => b,
                other => {
                    return Err(format!(
                        "retractWhen: expected a bool, got {}",
                        other.to_json()
                    ))
                }
            },
            None => false,
        };
        Ok((
            key,
            retract,
            accumulators::inputs(&self.aggs, &record.value)?,
        ))
    }

    fn output(&self, key: &Value, results: Vec<Value>, retract: bool, from: &Record) -> Record {
        let mut fields: Vec<(Arc<str>, Value)> = Vec::with_capacity(self.aggs.len() + 2);
        fields.push((Arc::from("key"), key.clone()));
        for (a, v) in self.aggs.iter().zip(results) {
            fields.push((a.name.clone(), v));
        }
        fields.push((Arc::from("retract"), Value::Bool(retract)));
        Record {
            ts: from.ts,
            value: Value::map(fields),
            ingest_ms: from.ingest_ms,
        }
    }
}

fn results(k: &KeyAggregates) -> Vec<Value> {
    k.aggs.iter().map(Agg::result).collect()
}

impl Operator for KeyedAggregate {
    fn on_start(&mut self, state: &StateHandle) -> OpResult {
        self.state = Some(KeyedState::new(state.clone(), "agg", 100_000));
        Ok(())
    }

    fn process(&mut self, _input: usize, record: Record, ctx: &mut Context<'_>) -> OpResult {
        let (key, retract, vals) = match self.inputs(&record) {
            Ok(x) => x,
            Err(e) => {
                ctx.dead_letter(&record, &e);
                return Ok(());
            }
        };
        let key_str = key.key_string();
        let retractable = self.retract_when.is_some();
        let err = state_err(&self.name);
        let Some(state) = self.state.as_mut() else {
            return Ok(());
        };
        let existing = state.get_mut(&key_str).map_err(&err)?;
        let (before, after) = match (existing, retract) {
            (None, true) => {
                let msg = format!("retraction for key {} which has no records", key.to_json());
                ctx.dead_letter(&record, &msg);
                return Ok(());
            }
            (Some(st), true) => {
                if let Some(e) = st
                    .aggs
                    .iter()
                    .zip(&vals)
                    .find_map(|(a, v)| a.check_retract(v).err())
                {
                    ctx.dead_letter(&record, &e);
                    return Ok(());
                }
                let before = results(st);
                for (a, v) in st.aggs.iter_mut().zip(&vals) {
                    a.retract(v);
                }
                st.rows -= 1;
                let after = (st.rows > 0).then(|| results(st));
                if after.is_none() {
                    state.delete(&key_str).map_err(&err)?;
                }
                (Some(before), after)
            }
            (Some(st), false) => {
                let before = results(st);
                for (a, v) in st.aggs.iter_mut().zip(&vals) {
                    a.add(record.ts, v);
                }
                st.rows += 1;
                (Some(before), Some(results(st)))
            }
            (None, false) => {
                let mut aggs: Vec<Agg> = self
                    .aggs
                    .iter()
                    .map(|a| Agg::new(a.op, retractable))
                    .collect();
                for (a, v) in aggs.iter_mut().zip(&vals) {
                    a.add(record.ts, v);
                }
                let st = KeyAggregates { rows: 1, aggs };
                let after = results(&st);
                state.put(&key_str, st).map_err(&err)?;
                (None, Some(after))
            }
        };
        match (before, after) {
            (Some(b), Some(a)) if b == a => {}
            (Some(b), Some(a)) => {
                if self.emit_retractions {
                    ctx.emit(self.output(&key, b, true, &record));
                }
                ctx.emit(self.output(&key, a, false, &record));
            }
            (None, Some(a)) => ctx.emit(self.output(&key, a, false, &record)),
            (Some(b), None) => ctx.emit(self.output(&key, b, true, &record)),
            (None, None) => {}
        }
        Ok(())
    }

    fn snapshot(&mut self, _checkpoint_id: u64) -> OpResult {
        if let Some(s) = self.state.as_mut() {
            s.flush().map_err(state_err(&self.name))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{operator_cf, StateStore};
    use crate::time::TimerService;

    const SIDES: &[&str] = &["deadLetter"];

    struct Harness {
        op: KeyedAggregate,
        store: StateStore,
        cf: String,
        timers: TimerService,
        out: Vec<(usize, Record)>,
        dead: u64,
        _dir: tempfile::TempDir,
    }

    impl Harness {
        fn new(yaml: &str) -> Harness {
            let dir = tempfile::tempdir().unwrap();
            let cf = operator_cf("a");
            let (store, _) = StateStore::open(dir.path(), std::slice::from_ref(&cf)).unwrap();
            let mut h = Harness {
                op: build(yaml),
                store,
                cf,
                timers: TimerService::default(),
                out: vec![],
                dead: 0,
                _dir: dir,
            };
            h.op.on_start(&h.store.handle(&h.cf)).unwrap();
            h
        }

        fn feed(&mut self, json: &str) -> Vec<(usize, String)> {
            let rec = Record::new(7, Value::from_json(json).unwrap(), 0);
            let mut ctx =
                Context::new(0, 0, SIDES, &mut self.out, &mut self.timers, &mut self.dead);
            self.op.process(0, rec, &mut ctx).unwrap();
            self.out
                .drain(..)
                .map(|(p, r)| (p, r.value.to_json()))
                .collect()
        }

        fn main(&mut self, json: &str) -> Vec<String> {
            let out = self.feed(json);
            assert!(out.iter().all(|(p, _)| *p == 0), "{out:?}");
            out.into_iter().map(|(_, j)| j).collect()
        }
    }

    fn build(yaml: &str) -> KeyedAggregate {
        let spec: KeyedAggregateSpec = serde_yaml::from_str(yaml).unwrap();
        KeyedAggregate::new("agg", "a", &spec).unwrap()
    }

    #[test]
    fn emits_an_upsert_only_when_the_result_changes() {
        let mut h = Harness::new("{key: e.a, aggregates: [{name: top, op: max, of: e.p}]}");
        assert_eq!(
            h.main(r#"{"a":1,"p":10}"#),
            vec![r#"{"key":1,"top":10,"retract":false}"#]
        );
        assert!(h.main(r#"{"a":1,"p":3}"#).is_empty(), "max unchanged");
        assert_eq!(
            h.main(r#"{"a":1,"p":12}"#),
            vec![r#"{"key":1,"top":12,"retract":false}"#],
            "no retraction without emitRetractions"
        );
        assert_eq!(
            h.main(r#"{"a":2,"p":1}"#),
            vec![r#"{"key":2,"top":1,"retract":false}"#]
        );
    }

    #[test]
    fn retractions_feed_a_downstream_aggregate_correctly() {
        // max bid per auction (with retractions) -> average of those maxima per category
        let mut per_auction = Harness::new(
            "{key: e.auction, emitRetractions: true, aggregates: [{name: top, op: max, of: e.price}, {name: category, op: last, of: e.category}]}",
        );
        let mut per_category = Harness::new(
            "{key: e.category, retractWhen: e.retract, aggregates: [{name: avg, op: avg, of: e.top}, {name: n, op: count}, {name: best, op: max, of: e.top}]}",
        );
        let bids = [
            (1, 100, 10),
            (2, 300, 10),
            (1, 200, 10), // auction 1's max 100 -> 200
            (3, 50, 20),
            (2, 100, 10), // no change
            (2, 500, 10), // auction 2's max 300 -> 500
        ];
        let mut category_out = vec![];
        for (auction, price, category) in bids {
            let ups = per_auction.main(&format!(
                r#"{{"auction":{auction},"price":{price},"category":{category}}}"#
            ));
            for u in ups {
                category_out.extend(per_category.main(&u));
            }
        }
        assert_eq!(
            category_out,
            vec![
                r#"{"key":10,"avg":100.0,"n":1,"best":100,"retract":false}"#,
                r#"{"key":10,"avg":200.0,"n":2,"best":300,"retract":false}"#,
                // retraction of auction 1's 100: avg of {300}
                r#"{"key":10,"avg":300.0,"n":1,"best":300,"retract":false}"#,
                r#"{"key":10,"avg":250.0,"n":2,"best":300,"retract":false}"#,
                r#"{"key":20,"avg":50.0,"n":1,"best":50,"retract":false}"#,
                r#"{"key":10,"avg":200.0,"n":1,"best":200,"retract":false}"#,
                r#"{"key":10,"avg":350.0,"n":2,"best":500,"retract":false}"#,
            ]
        );
    }

    #[test]
    fn a_key_whose_records_are_all_retracted_is_deleted_with_a_retraction() {
        let mut h = Harness::new(
            "{key: e.k, retractWhen: e.retract, emitRetractions: true, aggregates: [{name: s, op: sum, of: e.v}]}",
        );
        h.main(r#"{"k":"x","v":2,"retract":false}"#);
        assert_eq!(
            h.main(r#"{"k":"x","v":3,"retract":false}"#),
            vec![
                r#"{"key":"x","s":2,"retract":true}"#,
                r#"{"key":"x","s":5,"retract":false}"#
            ]
        );
        h.main(r#"{"k":"x","v":2,"retract":true}"#);
        assert_eq!(
            h.main(r#"{"k":"x","v":3,"retract":true}"#),
            vec![r#"{"key":"x","s":3,"retract":true}"#],
            "the last retraction deletes the key"
        );
        // the key is gone: retracting again is a dead letter, adding starts afresh
        let out = h.feed(r#"{"k":"x","v":3,"retract":true}"#);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 1, "dead letter");
        assert!(out[0].1.contains("no records"), "{out:?}");
        assert_eq!(
            h.main(r#"{"k":"x","v":4,"retract":false}"#),
            vec![r#"{"key":"x","s":4,"retract":false}"#]
        );
    }

    #[test]
    fn bad_records_are_dead_letters_and_change_nothing() {
        let mut h = Harness::new(
            "{key: e.k, retractWhen: e.retract, aggregates: [{name: n, op: count}, {name: top, op: max, of: e.v}]}",
        );
        h.main(r#"{"k":"x","v":5,"retract":false}"#);
        for bad in [
            r#"{"k":"x","v":5,"retract":"yes"}"#,  // retractWhen not a bool
            r#"{"k":"x","v":7,"retract":true}"#,   // 7 was never added
            r#"{"k":"x","v":{},"retract":false}"#, // a map has no order for max
            r#"{"v":5,"retract":true}"#,           // key x has one record, key null none
        ] {
            let out = h.feed(bad);
            assert_eq!(out.len(), 1, "{bad}: {out:?}");
            assert_eq!(out[0].0, 1, "{bad}: dead letter");
        }
        assert_eq!(h.dead, 4);
        assert_eq!(
            h.main(r#"{"k":"x","v":6,"retract":false}"#),
            vec![r#"{"key":"x","n":2,"top":6,"retract":false}"#],
            "the dead letters left the aggregates as they were"
        );
    }

    #[test]
    fn state_survives_a_flush_and_a_new_operator_instance() {
        let yaml = "{key: e.k, aggregates: [{name: s, op: sum, of: e.v}]}";
        let mut h = Harness::new(yaml);
        h.main(r#"{"k":"x","v":2}"#);
        h.op.snapshot(1).unwrap();
        let mut again = build(yaml);
        again.on_start(&h.store.handle(&h.cf)).unwrap();
        h.op = again;
        assert_eq!(
            h.main(r#"{"k":"x","v":3}"#),
            vec![r#"{"key":"x","s":5,"retract":false}"#]
        );
    }

    #[test]
    fn first_last_and_collect_are_refused_with_retractions() {
        let spec: KeyedAggregateSpec = serde_yaml::from_str(
            "{key: e.k, retractWhen: e.r, aggregates: [{name: xs, op: collect, of: e.v}]}",
        )
        .unwrap();
        let errs = KeyedAggregate::new("f", "a", &spec).err().unwrap();
        assert_eq!(errs[0].field, "f.aggregates[0].op");
    }
}
