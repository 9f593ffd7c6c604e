//! `repartition`: re-keys a stream through a Kafka topic so that the next stage's tasks are
//! co-partitioned by the new key.
//!
//! A `repartition` operator `R` is expanded at plan time ([`expand`]) into three pieces that
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
//! become visible at all. The topic is created at start if missing ([`ensure_topics`]).

use super::{client_config, partition_count, Endpoint, KafkaError};
use crate::operator::{state_err, Context, OpResult, Operator, OperatorError};
use crate::plan::{JobPlan, OperatorPlan, SourceKind, SourcePlan};
use crate::record::Record;
use crate::state::{KeyedState, StateError, StateHandle};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::time::Duration;
use weir_crds::pipeline::{
    KafkaSinkSpec, KafkaSourceSpec, OperatorSpec, RepartitionSpec, SinkSpec, StartFrom,
};
use weir_crds::validate::SpecError;
use weir_expr::{Expr, Value};

/// Suffix of the writing operator's name (`R@write`); `@` cannot occur in user names.
pub const WRITE_SUFFIX: &str = "@write";
/// Suffix of the source reading the topic (`R@read`).
pub const READ_SUFFIX: &str = "@read";
/// Suffix of the sink writing the topic (`R@kafka`).
pub const SINK_SUFFIX: &str = "@kafka";
/// The envelope field holding the event time (the reading source's `eventTime.field`).
const TS_FIELD: &str = "t";
/// The name of the operators' state inside their column family.
const STATE_NAME: &str = "repartition";

/// The topic of repartition operator `operator` of `job`: `spec.topic`, else
/// `<job>-<operator>-repartition`.
pub fn topic_name(job: &str, operator: &str, spec: &RepartitionSpec) -> String {
    spec.topic
        .clone()
        .unwrap_or_else(|| format!("{job}-{operator}-repartition"))
}

/// Replaces every `repartition` operator of `plan` by its writer, sink, source and reader (see
/// the module documentation). Validation guarantees brokers are known (set, or borrowed from
/// the first Kafka source).
pub fn expand(plan: &mut JobPlan) {
    let default_brokers = plan
        .pipeline
        .sources
        .iter()
        .find_map(|s| s.kafka.as_ref().map(|k| k.brokers.clone()))
        .unwrap_or_default();
    // the topic interleaves the writers of every upstream task: allow the job's largest
    // out-of-orderness, and release a partition after the job's idle timeout, if any
    let out_of_orderness_ms = plan
        .sources
        .iter()
        .map(|s| s.out_of_orderness_ms)
        .max()
        .unwrap_or(0);
    let idle_timeout_ms = plan.sources.iter().filter_map(|s| s.idle_timeout_ms).min();
    let mut operators = Vec::with_capacity(plan.operators.len());
    for o in std::mem::take(&mut plan.operators) {
        let Some(r) = o.spec.repartition.clone() else {
            operators.push(o);
            continue;
        };
        let name = o.spec.name.clone();
        let brokers = r.brokers.clone().unwrap_or_else(|| default_brokers.clone());
        let topic = topic_name(&plan.job, &name, &r);
        let write = format!("{name}{WRITE_SUFFIX}");
        let read = format!("{name}{READ_SUFFIX}");
        operators.push(OperatorPlan {
            spec: OperatorSpec {
                name: write.clone(),
                input: o.spec.input.clone(),
                inputs: o.spec.inputs.clone(),
                repartition: Some(r.clone()),
                ..Default::default()
            },
            field: o.field.clone(),
            kind: o.kind,
        });
        operators.push(OperatorPlan {
            spec: OperatorSpec {
                name: name.clone(),
                input: Some(read.clone()),
                repartition: Some(r.clone()),
                ..Default::default()
            },
            field: o.field,
            kind: o.kind,
        });
        plan.sources.push(SourcePlan {
            name: read,
            kind: SourceKind::Kafka(KafkaSourceSpec {
                brokers: brokers.clone(),
                topic: topic.clone(),
                start_from: StartFrom::Earliest,
                properties: r.properties.clone(),
            }),
            partitions: 0,
            time_field: Some(TS_FIELD.to_string()),
            out_of_orderness_ms,
            idle_timeout_ms,
        });
        plan.pipeline.sinks.push(SinkSpec {
            name: format!("{name}{SINK_SUFFIX}"),
            input: write,
            kafka: Some(KafkaSinkSpec {
                brokers,
                topic,
                key: Some("e.k".to_string()),
                exactly_once: r.exactly_once,
                // the reader drops replays by sequence number; no read-back needed
                transactions: true,
                properties: r.properties.clone(),
            }),
            ..Default::default()
        });
    }
    plan.operators = operators;
}

/// The repartition spec behind source `source` (`R@read`) of `plan`, if it is one.
fn spec_of_source<'a>(plan: &'a JobPlan, source: &str) -> Option<&'a RepartitionSpec> {
    plan.operators
        .iter()
        .find(|o| o.spec.input.as_deref() == Some(source))
        .and_then(|o| o.spec.repartition.as_ref())
}

/// Sets the partition count of every repartition source of `plan`, creating its topic first
/// if it does not exist (with `partitions`, else as many partitions as the job's other
/// sources have tasks). Call after the other Kafka sources are resolved.
pub fn ensure_topics(plan: &mut JobPlan) -> Result<(), KafkaError> {
    let others = plan
        .sources
        .iter()
        .filter(|s| !s.name.ends_with(READ_SUFFIX))
        .map(|s| s.partitions)
        .max()
        .unwrap_or(1)
        .max(1);
    let mut counts = Vec::new();
    for src in plan
        .sources
        .iter()
        .filter(|s| s.name.ends_with(READ_SUFFIX))
    {
        let SourceKind::Kafka(k) = &src.kind else {
            continue;
        };
        let wanted = spec_of_source(plan, &src.name)
            .and_then(|r| r.partitions)
            .unwrap_or(others)
            .max(1);
        counts.push((src.name.clone(), ensure_topic(&src.name, k, wanted)?));
    }
    for (name, n) in counts {
        if let Some(s) = plan.sources.iter_mut().find(|s| s.name == name) {
            s.partitions = n;
        }
    }
    Ok(())
}

/// Creates `spec.topic` with `wanted` partitions unless it exists; returns its partition count.
fn ensure_topic(source: &str, spec: &KafkaSourceSpec, wanted: u32) -> Result<u32, KafkaError> {
    let operator = source.trim_end_matches(READ_SUFFIX);
    let endpoint = Endpoint::new(
        format!("repartition '{operator}'"),
        &spec.brokers,
        &spec.topic,
        &spec.properties,
    )?;
    let config = client_config(&spec.brokers, &spec.properties);
    let consumer: BaseConsumer = config.create().map_err(|e| endpoint.client_error(e))?;
    let exists = consumer
        .fetch_metadata(Some(&spec.topic), Duration::from_secs(5))
        .ok()
        .and_then(|md| {
            md.topics()
                .iter()
                .find(|t| t.name() == spec.topic)
                .map(|t| t.error().is_none() && !t.partitions().is_empty())
        })
        .unwrap_or(false);
    if !exists {
        let create_error = |e: &dyn std::fmt::Display| KafkaError::CreateTopic {
            owner: endpoint.owner.clone(),
            brokers: spec.brokers.clone(),
            topic: spec.topic.clone(),
            partitions: wanted,
            message: format!("{e} (create it yourself, or allow this client to create topics)"),
        };
        let admin: AdminClient<DefaultClientContext> =
            config.create().map_err(|e| endpoint.client_error(e))?;
        let partitions = i32::try_from(wanted).unwrap_or(i32::MAX);
        let topic = NewTopic::new(&spec.topic, partitions, TopicReplication::Fixed(1));
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let created = futures::executor::block_on(admin.create_topics([&topic], &options));
        match created {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(_) => tracing::info!(
                            "{}: created topic '{}' with {wanted} partition(s)",
                            endpoint.owner,
                            spec.topic
                        ),
                        // another pod created it first
                        Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
                        Err((_, e)) => return Err(create_error(&e)),
                    }
                }
            }
            Err(e) => return Err(create_error(&e)),
        }
    }
    partition_count(&endpoint, |t| {
        consumer.fetch_metadata(Some(&endpoint.topic), t)
    })
}

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
    Ok(Box::new(Writer::new(name, key)))
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

/// `R@write`: keys each record and wraps it in a numbered envelope for the Kafka sink.
pub struct Writer {
    name: String,
    key: Expr,
    state: Option<KeyedState<u64>>,
    /// The sequence number of the last record written.
    seq: u64,
}

impl Writer {
    /// A writer for repartition operator `name`, keying by `key`.
    pub fn new(name: String, key: Expr) -> Self {
        Writer {
            name,
            key,
            state: None,
            seq: 0,
        }
    }

    fn err(&self) -> impl Fn(StateError) -> OperatorError + '_ {
        state_err(&self.name)
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

    fn job_plan(yaml: &str) -> JobPlan {
        let job: weir_crds::StreamJob = serde_yaml::from_str(yaml).unwrap();
        crate::plan::plan_job(&job).unwrap()
    }

    const JOB: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {name: rj}
spec:
  image: x
  pipeline:
    sources:
      - {name: ev, generator: {kind: adEvents, partitions: 2, count: 10}, eventTime: {field: ts, maxOutOfOrderness: 5s}}
    operators:
      - {name: by-user, input: ev, repartition: {key: "e.userId", brokers: "b:9092", exactlyOnce: false}}
      - {name: clicks, input: by-user, filter: "e.type == 'click'"}
    sinks:
      - {name: out, input: clicks, stdout: {}}
"#;

    #[test]
    fn expansion_routes_the_stream_through_the_topic() {
        let plan = job_plan(JOB);
        let ops: Vec<(&str, Vec<&str>)> = plan
            .operators
            .iter()
            .map(|o| (o.spec.name.as_str(), o.spec.all_inputs()))
            .collect();
        assert_eq!(
            ops,
            vec![
                ("by-user@write", vec!["ev"]),
                ("by-user", vec!["by-user@read"]),
                ("clicks", vec!["by-user"]),
            ]
        );
        let src = plan.sources.iter().find(|s| s.name == "by-user@read");
        let src = src.expect("a source reads the topic");
        match &src.kind {
            SourceKind::Kafka(k) => {
                assert_eq!(
                    (k.brokers.as_str(), k.topic.as_str()),
                    ("b:9092", "rj-by-user-repartition")
                );
            }
            other => panic!("not a Kafka source: {other:?}"),
        }
        assert_eq!(src.time_field.as_deref(), Some(TS_FIELD));
        assert_eq!(src.out_of_orderness_ms, 5_000);
        let sink = plan
            .pipeline
            .sinks
            .iter()
            .find(|s| s.name == "by-user@kafka");
        let k = sink
            .and_then(|s| s.kafka.clone())
            .expect("a sink writes the topic");
        assert_eq!(sink.map(|s| s.input.as_str()), Some("by-user@write"));
        assert_eq!(k.key.as_deref(), Some("e.k"));
        assert!(!k.exactly_once);
    }

    #[test]
    fn a_bad_key_expression_names_the_field() {
        let job: weir_crds::StreamJob =
            serde_yaml::from_str(&JOB.replace("e.userId", "e.userId +")).unwrap();
        let errs = crate::plan::plan_job(&job).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.field == "spec.pipeline.operators[0].repartition.key"),
            "{errs:?}"
        );
    }

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

        let mut writer = Writer::new("p".into(), key());
        writer.on_start(&store.handle(&cfs[0])).unwrap();
        let first = run(&mut writer, &mut timers, (0..3).map(rec).collect());
        writer.snapshot(1).unwrap();
        let after_checkpoint = run(&mut writer, &mut timers, (3..5).map(rec).collect());

        // a restarted writer (same state) numbers the replayed records as before
        let mut again = Writer::new("p".into(), key());
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
