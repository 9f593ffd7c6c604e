//! Helpers for the Kafka tests: a tansu broker on a free loopback port (memory storage),
//! optionally behind a TLS terminator ([`tls`]), topics, a producer and a reader of every
//! partition.
#![allow(dead_code)]
// test helpers: a failed setup step should panic with its error
#![allow(clippy::unwrap_used)]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod tls;

const INSTALL: &str = "install tansu: tests/support/kafka.sh install \
     (runs `cargo install --locked --root ~/.cache/weir/cargo tansu --features dynostore`), \
     or set TANSU to its path";

/// The tansu binary: `$TANSU`, `~/.cache/weir/cargo/bin/tansu`, or `tansu` on PATH.
pub fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
        });
    let cached = cache.join("weir/cargo/bin/tansu");
    if cached.exists() {
        return cached;
    }
    if let Some(p) = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("tansu"))
            .find(|p| p.exists())
    }) {
        return p;
    }
    panic!("{INSTALL}");
}

/// A tansu broker with memory storage; killed on drop. With `WEIR_TEST_KAFKA=mock` the
/// tests run against librdkafka's in-process mock cluster instead (no install needed; it
/// ignores `isolation.level` and does not implement transaction markers).
pub struct Tansu {
    child: Option<Child>,
    mock: Option<rdkafka::mocking::MockCluster<'static, DefaultProducerContext>>,
    /// `127.0.0.1:PORT`.
    pub brokers: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tansu {
    /// Starts a broker on a free port and waits until it accepts connections.
    pub fn start() -> Tansu {
        if std::env::var("WEIR_TEST_KAFKA").as_deref() != Ok("mock") {
            return Tansu::start_tansu();
        }
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        Tansu {
            child: None,
            brokers: mock.bootstrap_servers(),
            mock: Some(mock),
            log: PathBuf::new(),
            _dir: tempfile::tempdir().unwrap(),
        }
    }

    /// Starts tansu whatever `WEIR_TEST_KAFKA` says.
    pub fn start_tansu() -> Tansu {
        Tansu::start_advertising(None, &[])
    }

    /// Starts tansu listening on a free port, advertising `advertised` (`host:port`, default
    /// its own address; e.g. a TLS terminator in front of it), with `extra` arguments (e.g.
    /// `--authentication`).
    pub fn start_advertising(advertised: Option<&str>, extra: &[&str]) -> Tansu {
        let bin = tansu_bin();
        let port = super::common::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = advertised.map_or_else(|| url.clone(), |a| format!("tcp://{a}"));
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("tansu.log");
        let child = Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
                "--storage-engine",
                "memory://tansu/",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}; {INSTALL}", bin.display()));
        let mut t = Tansu {
            child: Some(child),
            mock: None,
            brokers: format!("127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = t.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("tansu exited ({status}): {}", t.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tansu did not listen on {port}: {}",
                t.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    /// The broker's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Creates `topic` with `partitions` partitions.
    pub fn create_topic(&self, topic: &str, partitions: i32) {
        match &self.mock {
            Some(m) => m.create_topic(topic, partitions, 1).unwrap(),
            None => create_topic(&self.brokers, topic, partitions),
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Creates `topic` through the admin API and waits until its metadata shows every partition.
pub fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    create_topic_with(brokers, topic, partitions, &[]);
}

/// [`create_topic`] with extra client properties (TLS, SASL).
pub fn create_topic_with(brokers: &str, topic: &str, partitions: i32, props: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> = config_with(brokers, props).create().unwrap();
    let res = futures::executor::block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
    ))
    .unwrap();
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
    let consumer = consumer_with(brokers, "read_committed", props);
    let start = Instant::now();
    loop {
        let n = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()
            .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
            .unwrap_or(0);
        if n == partitions as usize {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "topic {topic} has {n} partitions"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client configuration for `brokers` with `props`.
pub fn config_with(brokers: &str, props: &[(&str, &str)]) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    for (k, v) in props {
        c.set(*k, *v);
    }
    c
}

/// A consumer with no group membership (partitions are assigned explicitly).
pub fn consumer(brokers: &str, isolation: &str) -> BaseConsumer {
    consumer_with(brokers, isolation, &[])
}

/// [`consumer`] with extra client properties (TLS, SASL).
pub fn consumer_with(brokers: &str, isolation: &str, props: &[(&str, &str)]) -> BaseConsumer {
    config_with(brokers, props)
        .set("group.id", "weir-test-reader")
        .set("enable.auto.commit", "false")
        .set("isolation.level", isolation)
        .create()
        .unwrap()
}

/// Produces `values[i]` to partition `i % partitions` (idempotent producer) and flushes.
pub fn produce(brokers: &str, topic: &str, partitions: i32, values: &[String]) {
    produce_with(brokers, topic, partitions, values, &[]);
}

/// [`produce`] with extra librdkafka producer properties (e.g. `batch.num.messages`).
pub fn produce_with(
    brokers: &str,
    topic: &str,
    partitions: i32,
    values: &[String],
    properties: &[(&str, &str)],
) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true");
    for (k, v) in properties {
        config.set(*k, *v);
    }
    let producer: ThreadedProducer<DefaultProducerContext> = config.create().unwrap();
    for (i, v) in values.iter().enumerate() {
        let mut rec: BaseRecord<'_, (), String> = BaseRecord::to(topic)
            .partition(i as i32 % partitions)
            .payload(v);
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(20));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

/// Reads every partition of `topic` from the start until `expect(records)` holds or `timeout`
/// passes; returns the payloads per partition.
pub fn read_all(
    brokers: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    timeout: Duration,
    expect: impl FnMut(&BTreeMap<i32, Vec<String>>) -> bool,
) -> BTreeMap<i32, Vec<String>> {
    read_all_with(brokers, topic, partitions, isolation, timeout, &[], expect)
}

/// [`read_all`] with extra client properties (TLS, SASL).
pub fn read_all_with(
    brokers: &str,
    topic: &str,
    partitions: i32,
    isolation: &str,
    timeout: Duration,
    props: &[(&str, &str)],
    mut expect: impl FnMut(&BTreeMap<i32, Vec<String>>) -> bool,
) -> BTreeMap<i32, Vec<String>> {
    let c = consumer_with(brokers, isolation, props);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out: BTreeMap<i32, Vec<String>> = (0..partitions).map(|p| (p, vec![])).collect();
    let start = Instant::now();
    while !expect(&out) && start.elapsed() < timeout {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
            let payload = String::from_utf8_lossy(m.payload().unwrap_or_default()).to_string();
            out.entry(m.partition()).or_default().push(payload);
        }
    }
    out
}

/// Total records over all partitions.
pub fn total(m: &BTreeMap<i32, Vec<String>>) -> usize {
    m.values().map(Vec::len).sum()
}
