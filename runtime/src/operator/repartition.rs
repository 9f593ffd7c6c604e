//! The `repartition` operator's two halves, writer and reader: re-keys a stream through a Kafka topic so that the next stage's tasks are
//! co-partitioned by the new key.
//!
//! A `repartition` operator `R` is expanded at plan time (`plan::repartition::expand`) into three pieces that
//! the engine already knows how to run and checkpoint:
//!
//! 1. an operator `R@write` on `R`'s input: evaluates the key expression and wraps each record
//!    in an envelope `{"k": key, "s": seq, "t": ts, "v": record}`, where `seq` counts the
//!    task's records (kept in its state, so a restore resumes the count of the checkpoint);
//! 2. a Kafka sink `R@kafka` writing the envelopes to the topic, keyed by `k` with the Java
//!    client's murmur2 partitioner, and adding `"w": <task>` (the writer); with `exactlyOnce`
//!    in transactions committed when the checkpoint completes, exactly like the Kafka sink;
//! 3. a Kafka source `R@read` reading the topic, partition `p` in task `p` (offsets in the
//!    task's checkpoint, event time from the envelope, watermarks per partition like any
//!    source), and the operator `R` after it: drops every envelope whose sequence number is
//!    not above the highest one seen from its writer (replays after a restore), and emits the
//!    record with its original event time as stream `R`.
//!
//! So records with the same key reach the same downstream task, and a crash and restore in
//! the middle doubles nothing: the reader's offsets and highest sequence numbers are restored
//! with the same checkpoint as the writer's count, and the writer replays the same records
//! with the same numbers. That last point assumes the stage before the repartition is
//! deterministic given its input (every Weir operator is, except lookupJoin against a
//! changing store); with `exactlyOnce: true` on a broker with transactions, replays never
//! become visible at all. The topic is created at start if missing (`kafka::repartition::ensure_topics`).

use crate::operator::{state_err, Context, OpResult, Operator, OperatorError};
use crate::record::Record;
use crate::state::{KeyedState, StateError, StateHandle};
use crate::time::{TimeDomain, Timer};
use weir_crds::pipeline::{OperatorSpec, RepartitionSpec};
use weir_crds::validate::SpecError;
use weir_expr::{Expr, Value};

/// Suffix of the writing operator's name (`R@write`); `@` cannot occur in user names.
pub const WRITE_SUFFIX: &str = "@write";
/// Suffix of the source reading the topic (`R@read`).
pub const READ_SUFFIX: &str = "@read";
/// Suffix of the sink writing the topic (`R@kafka`).
pub const SINK_SUFFIX: &str = "@kafka";
/// The envelope field holding the event time (the reading source's `eventTime.field`).
pub const TS_FIELD: &str = "t";
/// The name of the operators' state inside their column family.
const STATE_NAME: &str = "repartition";

/// Builds the writer (`R@write`) or the reader (`R`, input `R@read`) of an expanded
/// repartition operator. `field` is the operator's spec path.
pub fn build(
    field: &str,
    spec: &OperatorSpec,
    r: &RepartitionSpec,
) -> Result<Box<dyn Operator>, Vec<SpecError>> {
    if spec
        .input
        .as_deref()
        .is_some_and(|i| i.ends_with(READ_SUFFIX))
    {
        return Ok(Box::new(Reader::new(&spec.name)));
    }
    let key = Expr::compile(&r.key, &["e"]).map_err(|e| {
        vec![SpecError {
            field: format!("{field}.repartition.key"),
            message: e.to_string(),
        }]
    })?;
    let name = spec
        .name
        .strip_suffix(WRITE_SUFFIX)
        .unwrap_or(&spec.name)
        .to_string();
    Ok(Box::new(Writer::new(name, key, r.partitions.unwrap_or(0))))
}

/// Wraps `value` for the topic: key, sequence number, event time and the record (the sink
/// adds the writer, see [`stamp_writer`]).
pub fn envelope(key: String, seq: u64, ts: i64, value: Value) -> Value {
    Value::map([
        ("k", Value::Str(key.into())),
        ("s", Value::Int(i64::try_from(seq).unwrap_or(i64::MAX))),
        (TS_FIELD, Value::Int(ts)),
        ("v", value),
    ])
}

/// Adds `"w": task` to an envelope's JSON text (the sink knows the task, the writing operator
/// does not).
pub fn stamp_writer(json: &str, task: u32) -> String {
    match json.strip_prefix('{') {
        Some(rest) => format!("{{\"w\":{task},{rest}"),
        None => json.to_string(),
    }
}

/// An envelope read back from the topic.
#[derive(Debug, PartialEq)]
pub struct Opened {
    /// The writing task.
    pub writer: String,
    /// The writer's sequence number of this record.
    pub seq: u64,
    /// The record.
    pub value: Value,
}

/// Unwraps an envelope; `None` if `value` is not one (written by something else).
pub fn open(value: &Value) -> Option<Opened> {
    let writer = value.get("w").as_i64()?.to_string();
    let seq = u64::try_from(value.get("s").as_i64()?).ok()?;
    Some(Opened {
        writer,
        seq,
        value: value.get("v").clone(),
    })
}

/// How often, at most, a writer announces its watermark (wall clock, ms); its end (watermark
/// `i64::MAX`) is announced at once.
pub const ANNOUNCE_EVERY_MS: i64 = 100;
/// The envelope field of a watermark announcement (`{"k": .., "m": watermark}`; the sink adds
/// `"w"`). The task reading the topic takes these out of the stream (`time::watermark`).
pub const ANNOUNCE_FIELD: &str = "m";
const ANNOUNCE_TIMER: &str = "announce";

/// `R@write`: keys each record and wraps it in a numbered envelope for the Kafka sink, and
/// announces its watermark to every partition of the topic, so that the reading stage's
/// watermark is the minimum over the writing tasks, and ends when they all have ended.
pub struct Writer {
    name: String,
    key: Expr,
    state: Option<KeyedState<u64>>,
    /// The sequence number of the last record written.
    seq: u64,
    /// Per topic partition, a key the topic's partitioner places in it (empty: the partition
    /// count is not known, nothing is announced).
    partition_keys: Vec<String>,
    announced: i64,
    announced_at_ms: i64,
    timer_set: bool,
}

/// Per partition of a topic with `partitions` partitions, a key the Java client's
/// partitioner places in it.
pub fn partition_keys(partitions: u32) -> Vec<String> {
    let mut keys: Vec<Option<String>> = vec![None; partitions as usize];
    let mut missing = keys.len();
    let mut i = 0u64;
    while missing > 0 {
        let k = format!("~{i}");
        let p = crate::kafka::partitioner::partition_for_key(k.as_bytes(), partitions);
        if let Some(slot) = usize::try_from(p).ok().and_then(|p| keys.get_mut(p)) {
            if slot.is_none() {
                *slot = Some(k);
                missing -= 1;
            }
        }
        i += 1;
    }
    keys.into_iter().flatten().collect()
}

impl Writer {
    /// A writer for repartition operator `name`, keying by `key`, announcing its watermark
    /// to the `partitions` partitions of its topic (0: not announced).
    pub fn new(name: String, key: Expr, partitions: u32) -> Self {
        Writer {
            name,
            key,
            state: None,
            seq: 0,
            partition_keys: partition_keys(partitions),
            announced: i64::MIN,
            announced_at_ms: i64::MIN,
            timer_set: false,
        }
    }

    fn err(&self) -> impl Fn(StateError) -> OperatorError + '_ {
        state_err(&self.name)
    }

    /// Announces `ctx.watermark` to every partition if it moved, at most every
    /// [`ANNOUNCE_EVERY_MS`] (the end at once); otherwise makes sure a timer announces it later.
    fn announce(&mut self, ctx: &mut Context<'_>) {
        let wm = ctx.watermark;
        if self.partition_keys.is_empty() || wm <= self.announced {
            return;
        }
        let due = self.announced_at_ms.saturating_add(ANNOUNCE_EVERY_MS);
        if wm != i64::MAX && ctx.now_ms < due {
            if !self.timer_set {
                ctx.register_timer(TimeDomain::ProcessingTime, due, ANNOUNCE_TIMER);
                self.timer_set = true;
            }
            return;
        }
        for key in &self.partition_keys {
            let value = Value::map([("k", Value::str(key)), (ANNOUNCE_FIELD, Value::Int(wm))]);
            ctx.emit(Record::new(wm, value, ctx.now_ms));
        }
        self.announced = wm;
        self.announced_at_ms = ctx.now_ms;
    }
}

impl Operator for Writer {
    fn on_start(&mut self, state: &StateHandle) -> OpResult {
        let mut s = KeyedState::new(state.clone(), STATE_NAME, 16);
        // without state (a first start, or a restart before any checkpoint) counting starts
        // at zero again, so the replayed records get the numbers they had
        self.seq = s.get("seq").map_err(self.err())?.copied().unwrap_or(0);
        self.state = Some(s);
        Ok(())
    }

    fn process(&mut self, _input: usize, record: Record, ctx: &mut Context<'_>) -> OpResult {
        let key = match self.key.eval(&[&record.value]) {
            Ok(k) => k.key_string(),
            Err(e) => {
                ctx.dead_letter(&record, &format!("repartition key: {e}"));
                return Ok(());
            }
        };
        self.seq += 1;
        let value = envelope(key, self.seq, record.ts, record.value);
        ctx.emit(Record::new(record.ts, value, record.ingest_ms));
        Ok(())
    }

    fn on_watermark(&mut self, ctx: &mut Context<'_>) -> OpResult {
        self.announce(ctx);
        Ok(())
    }

    fn on_timer(&mut self, _timer: Timer, ctx: &mut Context<'_>) -> OpResult {
        self.timer_set = false;
        self.announce(ctx);
        Ok(())
    }

    fn snapshot(&mut self, _checkpoint_id: u64) -> OpResult {
        let seq = self.seq;
        let name = self.name.clone();
        let Some(s) = self.state.as_mut() else {
            return Ok(());
        };
        s.put("seq", seq)
            .and_then(|()| s.flush())
            .map_err(state_err(&name))
    }
}

/// `R`: drops replayed envelopes and emits the records with their original event time.
pub struct Reader {
    name: String,
    /// The highest sequence number seen per writer.
    seen: Option<KeyedState<u64>>,
}

impl Reader {
    /// The reader of repartition operator `name`.
    pub fn new(name: &str) -> Self {
        Reader {
            name: name.to_string(),
            seen: None,
        }
    }
}

impl Operator for Reader {
    fn on_start(&mut self, state: &StateHandle) -> OpResult {
        self.seen = Some(KeyedState::new(state.clone(), STATE_NAME, 4096));
        Ok(())
    }

    fn process(&mut self, _input: usize, record: Record, ctx: &mut Context<'_>) -> OpResult {
        let Some(opened) = open(&record.value) else {
            ctx.dead_letter(&record, "not a repartition envelope (w, s, v)");
            return Ok(());
        };
        let err = state_err(&self.name);
        let Some(seen) = self.seen.as_mut() else {
            return Ok(());
        };
        match seen.get_mut(&opened.writer).map_err(&err)? {
            Some(last) if *last >= opened.seq => return Ok(()), // a replay
            Some(last) => *last = opened.seq,
            None => seen.put(&opened.writer, opened.seq).map_err(&err)?,
        }
        ctx.emit(Record::new(record.ts, opened.value, record.ingest_ms));
        Ok(())
    }

    fn snapshot(&mut self, _checkpoint_id: u64) -> OpResult {
        match self.seen.as_mut() {
            Some(s) => s.flush().map_err(state_err(&self.name)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{operator_cf, StateStore};
    use crate::time::TimerService;

    fn run(op: &mut dyn Operator, timers: &mut TimerService, records: Vec<Record>) -> Vec<Record> {
        let mut out = Vec::new();
        let mut dead = 0;
        for r in records {
            let mut ctx = Context::new(i64::MIN, 0, &["deadLetter"], &mut out, timers, &mut dead);
            op.process(0, r, &mut ctx).unwrap();
        }
        out.into_iter().map(|(_, r)| r).collect()
    }

    #[test]
    fn writer_numbers_survive_a_restore_and_the_reader_drops_replays() {
        let dir = tempfile::tempdir().unwrap();
        let cfs = [operator_cf("w"), operator_cf("r")];
        let (store, _) = StateStore::open(dir.path(), &cfs).unwrap();
        let mut timers = TimerService::default();
        let rec = |i: i64| {
            Record::new(
                i,
                Value::map([("id", Value::Int(i)), ("u", Value::Int(i % 3))]),
                0,
            )
        };
        let key = || Expr::compile("e.u", &["e"]).unwrap();

        let mut writer = Writer::new("p".into(), key(), 0);
        writer.on_start(&store.handle(&cfs[0])).unwrap();
        let first = run(&mut writer, &mut timers, (0..3).map(rec).collect());
        writer.snapshot(1).unwrap();
        let after_checkpoint = run(&mut writer, &mut timers, (3..5).map(rec).collect());

        // a restarted writer (same state) numbers the replayed records as before
        let mut again = Writer::new("p".into(), key(), 0);
        again.on_start(&store.handle(&cfs[0])).unwrap();
        let replayed = run(&mut again, &mut timers, (3..6).map(rec).collect());
        assert_eq!(
            replayed[..2],
            after_checkpoint[..],
            "replays are identical envelopes"
        );
        assert_eq!(first[0].value.get("v"), &rec(0).value);
        assert_eq!(first[1].value.get("k").as_str(), Some("1"));

        let mut reader = Reader::new("p");
        reader.on_start(&store.handle(&cfs[1])).unwrap();
        // what the sink of task 3 writes and the source reads back
        let through_kafka = |r: &Record| {
            let json = stamp_writer(&r.value.to_json(), 3);
            Record::new(r.ts, Value::from_json(&json).unwrap(), 0)
        };
        let topic: Vec<Record> = first
            .iter()
            .chain(&after_checkpoint)
            .chain(&replayed)
            .map(through_kafka)
            .collect();
        assert_eq!(open(&topic[0].value).unwrap().writer, "3");
        let ids: Vec<i64> = run(&mut reader, &mut timers, topic)
            .iter()
            .map(|r| r.value.get("id").as_i64().unwrap())
            .collect();
        assert_eq!(ids, vec![0, 1, 2, 3, 4, 5], "each record once");
    }
}
