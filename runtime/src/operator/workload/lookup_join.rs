//! `lookupJoin`: enrich records from an external key-value store, with an in-flight cap and a
//! multi-level retry queue for keys the store does not have yet.
//!
//! This is the queueing logic only; the store client lives at the edge. The operator asks for
//! lookups through [`Collector::request_lookup`](super::Collector::request_lookup) and is told
//! the answers through [`WorkloadOperator::on_lookup_result`]. Every queued, waiting and
//! in-flight record is in the keyed state, so after a restore [`WorkloadOperator::on_start`]
//! re-issues the lookups that were in flight and the queue resumes where it was.
//!
//! Semantics:
//! - At most `maxInFlight` lookups are outstanding; further records (and due retries) wait in
//!   a FIFO queue and are issued as answers come back.
//! - A hit emits `emit` over `e` (the record) and `f` (the stored value) with the record's
//!   event time. Answers may come back in any order, so outputs are unordered.
//! - After the n-th miss the record is retried `retry.backoff[n-1]` later (processing time).
//!   When the levels run out, the last gap repeats until `retry.maxAge` (counted from the
//!   record's first lookup); the last retry happens exactly at `first lookup + maxAge`, and a
//!   miss then sends the original record to `<op>.expired`. Without `maxAge` a record expires
//!   after a miss on the last level; with no levels at all, on its first miss.
//! - Retry timers run on processing time (a feature that lands in the store late is a
//!   wall-clock matter); the operator never reads a clock, the caller passes it in.
//! - Records keep their event time; the operator does not hold back the watermark, so a record
//!   that waited for a retry may be late for a downstream event-time operator.

use super::{
    compile, dead_letter, millis, put, state_key, take, Ctx, Event, LookupRequest, Output, Timer,
    WorkloadError, WorkloadOperator,
};
use serde::{Deserialize, Serialize};
use weir_crds::pipeline::{LookupJoinSpec, TimeDomain};
use weir_expr::{Expr, Value};

const META: &str = "m";

fn record_key(id: u64) -> String {
    format!("r{id:016x}")
}

fn waiting_key(seq: u64) -> String {
    format!("w{seq:016x}")
}

fn id_of(key: &str) -> Option<u64> {
    key.strip_prefix('r')
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
}

/// The task-wide queue bookkeeping.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// The next record id.
    next_id: u64,
    /// Ids with a lookup outstanding, in issue order.
    in_flight: Vec<u64>,
    /// The waiting FIFO is `waiting_key(seq)` for `seq` in `waiting_head..waiting_tail`.
    waiting_head: u64,
    waiting_tail: u64,
}

/// A record being enriched.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Queued {
    event: Event,
    /// The store key.
    key: String,
    /// Processing time of the first lookup.
    first_lookup: Option<i64>,
    /// Misses so far.
    misses: u32,
}

/// One entry of the operator's state: the bookkeeping (`m`), a record (`r<id>`), or a place
/// in the waiting FIFO (`w<seq>`, holding a record id).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LookupEntry {
    /// Queue bookkeeping.
    Meta(Meta),
    /// A record in flight, waiting, or scheduled for a retry.
    Record(Queued),
    /// A waiting record's id.
    Waiting(u64),
}

/// The lookup join operator.
pub struct LookupJoin {
    name: String,
    key: Expr,
    key_prefix: String,
    max_in_flight: usize,
    backoff: Vec<i64>,
    max_age: Option<i64>,
    emit: Expr,
}

type LCtx<'a, 'b> = &'a mut Ctx<'b, LookupEntry>;

impl LookupJoin {
    /// Compiles `spec` for an operator named `name`.
    pub fn new(name: String, spec: &LookupJoinSpec) -> Result<Self, WorkloadError> {
        if spec.max_in_flight == 0 {
            return Err(WorkloadError::InvalidSpec {
                operator: name,
                field: "lookupJoin.maxInFlight".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(LookupJoin {
            key: compile(&name, "lookupJoin.key", &spec.key, &["e"])?,
            emit: compile(&name, "lookupJoin.emit", &spec.emit, &["e", "f"])?,
            key_prefix: spec.store.key_prefix.clone(),
            max_in_flight: usize::try_from(spec.max_in_flight).unwrap_or(usize::MAX),
            backoff: spec.retry.backoff.iter().map(|d| millis(*d)).collect(),
            max_age: spec.retry.max_age.map(millis),
            name,
        })
    }

    /// The most lookups outstanding at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    fn take_meta(&self, ctx: LCtx<'_, '_>) -> Result<Meta, WorkloadError> {
        Ok(match take(ctx, &self.name, META)? {
            Some(LookupEntry::Meta(m)) => m,
            _ => Meta::default(),
        })
    }

    fn take_record(&self, ctx: LCtx<'_, '_>, key: &str) -> Result<Option<Queued>, WorkloadError> {
        Ok(match take(ctx, &self.name, key)? {
            Some(LookupEntry::Record(q)) => Some(q),
            _ => None,
        })
    }

    /// Issues a lookup for `id` now, or queues it if the cap is reached; stores the record.
    fn issue_or_wait(
        &self,
        meta: &mut Meta,
        id: u64,
        mut q: Queued,
        ctx: LCtx<'_, '_>,
    ) -> Result<(), WorkloadError> {
        if meta.in_flight.len() < self.max_in_flight {
            if q.first_lookup.is_none() {
                q.first_lookup = Some(ctx.processing_time);
            }
            meta.in_flight.push(id);
            ctx.out.request_lookup(LookupRequest {
                id,
                key: q.key.clone(),
            });
        } else {
            let seq = meta.waiting_tail;
            meta.waiting_tail += 1;
            put(ctx, &self.name, &waiting_key(seq), LookupEntry::Waiting(id))?;
        }
        put(ctx, &self.name, &record_key(id), LookupEntry::Record(q))
    }

    /// Issues waiting lookups while there is room.
    fn drain_waiting(&self, meta: &mut Meta, ctx: LCtx<'_, '_>) -> Result<(), WorkloadError> {
        while meta.in_flight.len() < self.max_in_flight && meta.waiting_head < meta.waiting_tail {
            let wk = waiting_key(meta.waiting_head);
            meta.waiting_head += 1;
            let Some(LookupEntry::Waiting(id)) = take(ctx, &self.name, &wk)? else {
                continue;
            };
            if let Some(q) = self.take_record(ctx, &record_key(id))? {
                self.issue_or_wait(meta, id, q, ctx)?;
            }
        }
        Ok(())
    }

    /// After a miss at `now`: when to retry, or `None` to expire.
    fn next_retry(&self, q: &Queued, now: i64) -> Option<i64> {
        let first = q.first_lookup.unwrap_or(now);
        let level = usize::try_from(q.misses.saturating_sub(1)).unwrap_or(usize::MAX);
        match self.max_age {
            None => self.backoff.get(level).map(|gap| now.saturating_add(*gap)),
            Some(age) => {
                let deadline = first.saturating_add(age);
                if now >= deadline {
                    return None;
                }
                let gap = self.backoff.get(level).or(self.backoff.last())?;
                Some(now.saturating_add(*gap).min(deadline))
            }
        }
    }

    /// Handles the answer for a record that was in flight.
    fn answered(
        &self,
        mut q: Queued,
        id: u64,
        result: Option<Value>,
        ctx: LCtx<'_, '_>,
    ) -> Result<(), WorkloadError> {
        if let Some(f) = result {
            match self.emit.eval(&[&q.event.value, &f]) {
                Ok(v) => ctx.out.emit(Output::Main, Event::new(q.event.ts, v)),
                Err(err) => dead_letter(ctx, q.event, &err.to_string()),
            }
            return Ok(());
        }
        q.misses += 1;
        match self.next_retry(&q, ctx.processing_time) {
            Some(at) => {
                let rk = record_key(id);
                ctx.timers.register(TimeDomain::ProcessingTime, &rk, at);
                put(ctx, &self.name, &rk, LookupEntry::Record(q))
            }
            None => {
                ctx.out.emit(Output::Side("expired"), q.event);
                Ok(())
            }
        }
    }
}

impl WorkloadOperator for LookupJoin {
    type State = LookupEntry;

    fn name(&self) -> &str {
        &self.name
    }

    fn on_start(&mut self, ctx: &mut Ctx<'_, LookupEntry>) -> Result<(), WorkloadError> {
        let meta = self.take_meta(ctx)?;
        for id in &meta.in_flight {
            let rk = record_key(*id);
            if let Some(q) = self.take_record(ctx, &rk)? {
                ctx.out.request_lookup(LookupRequest {
                    id: *id,
                    key: q.key.clone(),
                });
                put(ctx, &self.name, &rk, LookupEntry::Record(q))?;
            }
        }
        put(ctx, &self.name, META, LookupEntry::Meta(meta))
    }

    fn process(
        &mut self,
        _input: usize,
        event: Event,
        ctx: &mut Ctx<'_, LookupEntry>,
    ) -> Result<(), WorkloadError> {
        let Some(key) = state_key(&self.key, &event, ctx) else {
            return Ok(());
        };
        let mut meta = self.take_meta(ctx)?;
        let id = meta.next_id;
        meta.next_id += 1;
        let q = Queued {
            event,
            key: format!("{}{key}", self.key_prefix),
            first_lookup: None,
            misses: 0,
        };
        self.issue_or_wait(&mut meta, id, q, ctx)?;
        put(ctx, &self.name, META, LookupEntry::Meta(meta))
    }

    fn on_lookup_result(
        &mut self,
        id: u64,
        result: Option<Value>,
        ctx: &mut Ctx<'_, LookupEntry>,
    ) -> Result<(), WorkloadError> {
        let mut meta = self.take_meta(ctx)?;
        // An id not in flight is a duplicate or stale answer: ignore it.
        if let Some(pos) = meta.in_flight.iter().position(|x| *x == id) {
            meta.in_flight.remove(pos);
            if let Some(q) = self.take_record(ctx, &record_key(id))? {
                self.answered(q, id, result, ctx)?;
            }
            self.drain_waiting(&mut meta, ctx)?;
        }
        put(ctx, &self.name, META, LookupEntry::Meta(meta))
    }

    fn on_timer(
        &mut self,
        timer: &Timer,
        ctx: &mut Ctx<'_, LookupEntry>,
    ) -> Result<(), WorkloadError> {
        let Some(id) = id_of(&timer.key) else {
            return Ok(());
        };
        let Some(q) = self.take_record(ctx, &timer.key)? else {
            return Ok(());
        };
        let mut meta = self.take_meta(ctx)?;
        self.issue_or_wait(&mut meta, id, q, ctx)?;
        put(ctx, &self.name, META, LookupEntry::Meta(meta))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::workload::memory::MemoryDriver;
    use std::collections::BTreeMap;
    use weir_crds::pipeline::{LookupStoreSpec, RetrySpec};
    use weir_crds::Dur;

    const S: i64 = 1_000;
    const M: i64 = 60_000;

    fn lookup(max_in_flight: u32, max_age: Option<Dur>) -> LookupJoin {
        let spec = LookupJoinSpec {
            key: "e.user".into(),
            store: LookupStoreSpec {
                redis: Some("redis://127.0.0.1:6379".into()),
                redis_url_secret: None,
                key_prefix: "feat:".into(),
            },
            max_in_flight,
            retry: RetrySpec {
                backoff: vec![Dur::secs(10), Dur::secs(60), Dur::secs(600)],
                max_age,
            },
            emit: "{'user': e.user, 'age': f.age}".into(),
        };
        LookupJoin::new("enrich".into(), &spec).unwrap()
    }

    /// A fake store: key -> (processing time from which it has the value, value).
    struct FakeStore(BTreeMap<String, (i64, Value)>);

    impl FakeStore {
        fn new(entries: &[(&str, i64, i64)]) -> Self {
            FakeStore(
                entries
                    .iter()
                    .map(|(k, from, age)| {
                        (
                            k.to_string(),
                            (*from, Value::map([("age", Value::Int(*age))])),
                        )
                    })
                    .collect(),
            )
        }

        /// Answers every outstanding request (and those the answers trigger) at `now`;
        /// returns `(time, key)` of each lookup served and the largest number outstanding.
        fn serve(
            &self,
            d: &mut MemoryDriver<LookupEntry>,
            op: &mut LookupJoin,
            now: i64,
        ) -> (Vec<(i64, String)>, usize) {
            let mut served = Vec::new();
            let mut peak = 0;
            loop {
                let reqs = d.take_lookups();
                if reqs.is_empty() {
                    return (served, peak);
                }
                peak = peak.max(reqs.len());
                for r in reqs {
                    let hit = self
                        .0
                        .get(&r.key)
                        .filter(|(from, _)| *from <= now)
                        .map(|(_, v)| v.clone());
                    served.push((now, r.key.clone()));
                    d.lookup_result(op, r.id, hit).unwrap();
                }
            }
        }
    }

    fn rec(user: &str) -> Event {
        Event::new(7, Value::map([("user", Value::str(user))]))
    }

    /// Moves processing time in `step` increments to `until`, serving lookups on the way.
    fn run_until(
        d: &mut MemoryDriver<LookupEntry>,
        op: &mut LookupJoin,
        store: &FakeStore,
        until: i64,
        step: i64,
    ) -> Vec<(i64, String)> {
        let mut served = store.serve(d, op, d.processing_time()).0;
        let mut t = d.processing_time();
        while t < until {
            t = (t + step).min(until);
            d.advance_processing_time(op, t).unwrap();
            served.extend(store.serve(d, op, t).0);
        }
        served
    }

    #[test]
    fn a_feature_that_arrives_late_is_joined_on_a_retry() {
        let store = FakeStore::new(&[("feat:u1", 30 * S, 42)]);
        let mut op = lookup(4, Some(Dur::secs(1800)));
        let mut d = MemoryDriver::new();
        d.process(&mut op, 0, rec("u1")).unwrap();
        let served = run_until(&mut d, &mut op, &store, 5 * M, S);
        let times: Vec<i64> = served.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            times,
            vec![0, 10 * S, 10 * S + M],
            "retries at 10s, then 1m later"
        );
        let out = d.take_output();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, Output::Main);
        assert_eq!(out[0].1.ts, 7);
        assert_eq!(out[0].1.value.get("age"), &Value::Int(42));
        assert_eq!(out[0].1.value.get("user").as_str(), Some("u1"));
        assert_eq!(d.state_len(), 1, "only the queue bookkeeping remains");
        assert_eq!(d.timer_len(), 0);
    }

    #[test]
    fn a_feature_that_never_arrives_expires_at_max_age() {
        let store = FakeStore::new(&[]);
        let mut op = lookup(4, Some(Dur::secs(1800)));
        let mut d = MemoryDriver::new();
        d.process(&mut op, 0, rec("u1")).unwrap();
        let served = run_until(&mut d, &mut op, &store, 3_600 * S, S);
        let times: Vec<i64> = served.iter().map(|(t, _)| *t).collect();
        assert_eq!(
            times,
            vec![0, 10 * S, 70 * S, 670 * S, 1_270 * S, 1_800 * S],
            "levels 10s, 1m, 10m, then 10m repeated, the last retry at maxAge"
        );
        let out = d.take_output();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0], (Output::Side("expired"), rec("u1")));
    }

    #[test]
    fn without_max_age_a_record_expires_after_the_last_level() {
        let store = FakeStore::new(&[]);
        let mut op = lookup(4, None);
        let mut d = MemoryDriver::new();
        d.process(&mut op, 0, rec("u1")).unwrap();
        let served = run_until(&mut d, &mut op, &store, 3_600 * S, S);
        assert_eq!(served.len(), 4);
        assert_eq!(d.take_output()[0].0, Output::Side("expired"));
    }

    #[test]
    fn the_in_flight_cap_is_respected_and_waiting_records_are_issued_in_order() {
        let store = FakeStore::new(&[
            ("feat:a", 0, 1),
            ("feat:b", 0, 2),
            ("feat:c", 0, 3),
            ("feat:d", 0, 4),
            ("feat:e", 0, 5),
        ]);
        let mut op = lookup(2, None);
        let mut d = MemoryDriver::new();
        for u in ["a", "b", "c", "d", "e"] {
            d.process(&mut op, 0, rec(u)).unwrap();
        }
        let reqs = d.take_lookups();
        assert_eq!(reqs.len(), 2, "only maxInFlight lookups are issued");
        for r in reqs {
            d.lookup_result(&mut op, r.id, store.0.get(&r.key).map(|(_, v)| v.clone()))
                .unwrap();
        }
        let (served, peak) = store.serve(&mut d, &mut op, 0);
        assert!(peak <= 2, "at most 2 outstanding, saw {peak}");
        assert_eq!(served.len(), 3);
        let ages: Vec<i64> = d
            .take_output()
            .iter()
            .map(|(_, e)| e.value.get("age").as_i64().unwrap_or(-1))
            .collect();
        assert_eq!(ages, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn restart_from_a_mid_stream_snapshot_gives_identical_output() {
        let store = FakeStore::new(&[
            ("feat:u0", 0, 10),
            ("feat:u1", 15 * S, 11),
            ("feat:u3", 2 * M, 13),
            ("feat:u4", 0, 14),
        ]);
        // (processing time, user) arrivals; u2 never gets a feature.
        let arrivals: Vec<(i64, String)> = (0..5).map(|i| (i * 4 * S, format!("u{i}"))).collect();
        let horizon = 40 * M;
        let run = |cut: Option<i64>| {
            let mut op = lookup(2, Some(Dur::secs(1200)));
            let mut d = MemoryDriver::new();
            let mut out = Vec::new();
            let mut t = 0;
            while t <= horizon {
                d.advance_processing_time(&mut op, t).unwrap();
                for (_, u) in arrivals.iter().filter(|(at, _)| *at == t) {
                    d.process(&mut op, 0, rec(u)).unwrap();
                }
                if Some(t) == cut {
                    // Crash with lookups in flight: their answers are lost.
                    out.extend(d.take_output());
                    d = d.checkpoint_and_restore().unwrap();
                    op = lookup(2, Some(Dur::secs(1200)));
                    d.start(&mut op).unwrap();
                }
                store.serve(&mut d, &mut op, t);
                t += S;
            }
            out.extend(d.take_output());
            out
        };
        let uninterrupted = run(None);
        let mut users: Vec<(Output, String)> = uninterrupted
            .iter()
            .map(|(o, e)| (*o, e.value.get("user").as_str().unwrap_or("?").to_string()))
            .collect();
        users.sort();
        assert_eq!(
            users,
            vec![
                (Output::Main, "u0".into()),
                (Output::Main, "u1".into()),
                (Output::Main, "u3".into()),
                (Output::Main, "u4".into()),
                (Output::Side("expired"), "u2".into()),
            ]
        );
        for cut in [0, 4 * S, 8 * S, 10 * S, 16 * S, 70 * S, 20 * M] {
            assert_eq!(run(Some(cut)), uninterrupted, "restart at {cut} ms");
        }
    }
}
