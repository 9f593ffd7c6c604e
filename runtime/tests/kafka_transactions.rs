//! The exactly-once Kafka sink's transactions.
//!
//! tansu (the broker the other Kafka tests use) does not implement EndTxn; the first test pins
//! that limitation. The sink's two-phase logic is tested against librdkafka's mock cluster,
//! which speaks the transactional protocol (InitProducerId, AddPartitionsToTxn, EndTxn, error
//! injection) but serves every record whatever `isolation.level` (it writes no transaction
//! markers): so these tests check what the sink sends and when, and that EndTxn is issued at
//! commit; read_committed visibility itself needs a real Kafka and is not tested here.

mod common;
mod kafka_common;
use kafka_common::*;
use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use std::collections::BTreeMap;
use std::time::Duration;
use weir_crds::pipeline::KafkaSinkSpec;
use weir_expr::Value;
use weir_runtime::kafka::partitioner::partition_for_key;
use weir_runtime::kafka::sink::{KafkaSink, SinkTaskInfo};
use weir_runtime::record::Record;
use weir_runtime::sink::Sink;

#[test]
fn tansu_accepts_init_transactions_but_rejects_end_txn() {
    let broker = Tansu::start_tansu();
    broker.create_topic("txn", 1);
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &broker.brokers)
        .set("transactional.id", "weir-tansu-probe")
        .create()
        .unwrap();
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("tansu supports InitProducerId");
    producer.begin_transaction().unwrap();
    producer
        .send(BaseRecord::<(), str>::to("txn").partition(0).payload("x"))
        .map_err(|(e, _)| e)
        .unwrap();
    let err = producer
        .commit_transaction(Duration::from_secs(30))
        .expect_err("tansu now supports EndTxn: use it for the exactly-once tests and update runtime/README.md")
        .to_string();
    assert!(
        err.contains("EndTxn") && err.contains("not supported"),
        "unexpected commit error: {err}"
    );
}

/// Payloads per partition.
type Partitions = BTreeMap<i32, Vec<String>>;

fn spec(brokers: &str, key: Option<&str>) -> KafkaSinkSpec {
    KafkaSinkSpec {
        brokers: brokers.to_string(),
        topic: "out".into(),
        key: key.map(str::to_string),
        exactly_once: true,
        transactions: true,
        properties: BTreeMap::new(),
        security: None,
    }
}

fn info(task: u32) -> SinkTaskInfo {
    SinkTaskInfo {
        namespace: "test".into(),
        job: "txn".into(),
        task,
    }
}

fn rec(tag: &str, i: i64) -> Record {
    Record::new(
        i,
        Value::map([("tag", Value::Str(tag.into())), ("i", Value::Int(i))]),
        0,
    )
}

fn tags(m: &BTreeMap<i32, Vec<String>>, tag: &str) -> usize {
    m.values()
        .flatten()
        .filter(|p| p.contains(&format!("\"tag\":\"{tag}\"")))
        .count()
}

#[test]
fn records_after_a_barrier_reach_the_broker_only_after_that_checkpoint_commits() {
    // the mock cluster serves every record (it ignores isolation.level), which shows what
    // the sink has sent and when
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("out", 3, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let read = |until: &dyn Fn(&Partitions) -> bool, secs| {
        read_all(
            &brokers,
            "out",
            3,
            "read_uncommitted",
            Duration::from_secs(secs),
            |m| until(m),
        )
    };

    let mut sink = KafkaSink::new("out", &spec(&brokers, None), &info(0)).unwrap();
    sink.on_restore(None, None).unwrap();
    for i in 0..6 {
        sink.write(&rec("c1", i)).unwrap();
    }
    sink.prepare(1).unwrap();
    // written after barrier 1: they belong to checkpoint 2 and must not join transaction 1
    for i in 0..6 {
        sink.write(&rec("c2", i)).unwrap();
    }
    let m = read(&|_| false, 3);
    assert_eq!(tags(&m, "c1"), 6, "prepare(1) flushed checkpoint 1: {m:?}");
    assert_eq!(
        tags(&m, "c2"),
        0,
        "records after barrier 1 were sent early: {m:?}"
    );

    sink.commit(1).unwrap();
    sink.prepare(2).unwrap();
    let m = read(&|m| tags(m, "c2") == 6, 30);
    assert_eq!(
        tags(&m, "c2"),
        6,
        "held records sent after commit(1): {m:?}"
    );
    // round-robin from task 0 over all 3 partitions
    assert!(m.values().all(|v| v.len() == 4), "{m:?}");

    // checkpoint 2 fails (no commit): its records stay in the open transaction and new
    // records are held until a later checkpoint's barrier, then committed with it
    for i in 0..6 {
        sink.write(&rec("c3", i)).unwrap();
    }
    let m = read(&|_| false, 2);
    assert_eq!(tags(&m, "c3"), 0, "{m:?}");
    sink.prepare(3).unwrap();
    sink.commit(3).unwrap();
    let m = read(&|m| tags(m, "c3") == 6, 30);
    assert_eq!(tags(&m, "c3"), 6, "{m:?}");
}

#[test]
fn end_txn_is_sent_at_commit_not_at_prepare_and_its_failure_names_sink_topic_and_checkpoint() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("out", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut sink = KafkaSink::new("out", &spec(&brokers, None), &info(1)).unwrap();
    sink.on_restore(None, None).unwrap();
    // every EndTxn fails from now on, with a non-retriable error
    cluster.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_INVALID_TXN_STATE; 8],
    );
    sink.write(&rec("x", 1)).unwrap();
    sink.prepare(7).expect("prepare only flushes: no EndTxn");
    let err = sink.commit(7).expect_err("EndTxn fails").to_string();
    for part in ["sink 'out'", "topic 'out'", &brokers, "checkpoint 7"] {
        assert!(err.contains(part), "{part:?} missing in: {err}");
    }
}

#[test]
fn a_retriable_end_txn_error_is_retried() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("out", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut sink = KafkaSink::new("out", &spec(&brokers, None), &info(0)).unwrap();
    sink.on_restore(None, None).unwrap();
    cluster.request_errors(
        RDKafkaApiKey::EndTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS],
    );
    for i in 0..4 {
        sink.write(&rec("done", i)).unwrap();
    }
    sink.prepare(1).unwrap();
    sink.commit(1).expect("a retriable EndTxn error is retried");
    let m = read_all(
        &brokers,
        "out",
        2,
        "read_uncommitted",
        Duration::from_secs(30),
        |m| tags(m, "done") == 4,
    );
    assert_eq!(tags(&m, "done"), 4, "{m:?}");
}

#[test]
fn keyed_records_land_on_the_java_partition_of_their_key() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("out", 5, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let mut sink = KafkaSink::new("out", &spec(&brokers, Some("e.tag")), &info(0)).unwrap();
    sink.on_restore(None, None).unwrap();
    let keys = ["a", "b", "c", "user-1", "user-2", "21", "foobar"];
    for (i, k) in keys.iter().enumerate() {
        sink.write(&rec(k, i as i64)).unwrap();
    }
    sink.prepare(1).unwrap();
    sink.commit(1).unwrap();
    let got = read_all(
        &brokers,
        "out",
        5,
        "read_committed",
        Duration::from_secs(60),
        |m| total(m) == keys.len(),
    );
    for k in keys {
        let want = partition_for_key(k.as_bytes(), 5);
        let found = got
            .iter()
            .find(|(_, v)| v.iter().any(|p| p.contains(&format!("\"tag\":\"{k}\""))))
            .map(|(p, _)| *p);
        assert_eq!(found, Some(want), "key {k}: {got:?}");
    }
}
