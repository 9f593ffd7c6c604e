//! Lag in the open: completed checkpoints' source offsets are committed to the job's consumer
//! group (so `kafka-consumer-groups` and lag exporters see them), and the runtime's metrics
//! show per-partition lag. Against tansu.

mod common;
mod kafka_common;
use common::*;
use kafka_common::*;
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

fn records(from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| format!(r#"{{"id":{i},"ts":{}}}"#, 1_700_000_000_000i64 + i as i64))
        .collect()
}

fn job(dir: &Path, brokers: &str, source_extra: &str, sink_extra: &str) -> String {
    let path = dir.join("job.yaml");
    write(
        &path,
        &format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: lagjob}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 300ms, retain: 3, storage: "file://{ckpt}"}}
  pipeline:
    sources:
      - name: orders
        kafka: {{brokers: "{brokers}", topic: orders, startFrom: earliest{source_extra}}}
    sinks:
      - {{name: out, input: orders, file: {{path: "{out}"}}{sink_extra}}}
"#,
            ckpt = p(&dir.join("ckpt")),
            out = p(&dir.join("out")),
        ),
    );
    p(&path)
}

/// The source offsets (partition → offset) of the newest completed checkpoint.
fn checkpoint_offsets(root: &Path) -> Option<(u64, BTreeMap<i32, i64>)> {
    let id = *completed_checkpoints(root).last()?;
    let mut offsets = BTreeMap::new();
    for task in std::fs::read_dir(root.join(format!("chk-{id}"))).ok()? {
        let path = task.ok()?.path().join("manifest.json");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let m: serde_json::Value = serde_json::from_str(&text).ok()?;
        for s in m["sources"].as_array()? {
            if s["source"] == "orders" {
                offsets.insert(s["partition"].as_i64()? as i32, s["offset"].as_i64()?);
            }
        }
    }
    Some((id, offsets))
}

/// The offsets committed to `group` for `orders`' partitions (absent ones left out).
fn group_offsets(brokers: &str, group: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let c = kafka_common::config_with(brokers, &[("group.id", group)])
        .create::<rdkafka::consumer::BaseConsumer>()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition("orders", p);
    }
    let Ok(committed) = c.committed_offsets(tpl, Duration::from_secs(5)) else {
        return BTreeMap::new();
    };
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

#[test]
fn completed_checkpoints_offsets_are_committed_to_the_jobs_consumer_group() {
    let broker = Tansu::start();
    broker.create_topic("orders", 2);
    produce(&broker.brokers, "orders", 2, &records(0, 2000));
    let dir = tmp();
    let j = job(dir.path(), &broker.brokers, "", "");
    let root = job_root(&dir.path().join("ckpt"), "lagjob");
    let group = "weir-local-lagjob-orders";
    let mut child = spawn(
        &[
            "run",
            "-q",
            "-f",
            &j,
            "--state-dir",
            &p(&dir.path().join("state")),
        ],
        &[],
    );
    // every record read and checkpointed: the checkpoint holds the partitions' ends
    let check = |want_total: i64| {
        poll(
            "the group's committed offsets to equal the newest checkpoint's",
            Duration::from_secs(120),
            || {
                let (id, ckpt) = checkpoint_offsets(&root)?;
                let total: i64 = ckpt.values().sum();
                if ckpt.len() < 2 || total < want_total {
                    return None;
                }
                let committed = group_offsets(&broker.brokers, group, 2);
                // a newer checkpoint may complete meanwhile: re-read it
                let (id2, ckpt2) = checkpoint_offsets(&root)?;
                (committed == ckpt && id == id2 && ckpt == ckpt2).then_some(committed)
            },
        )
    };
    let first = check(2000);
    assert_eq!(first.values().sum::<i64>(), 2000, "{first:?}");
    // more input: the group follows the checkpoints
    produce(&broker.brokers, "orders", 2, &records(2000, 3000));
    let second = check(3000);
    assert_eq!(second.values().sum::<i64>(), 3000, "{second:?}");
    let _ = child.kill();
    let _ = child.wait();
}

fn metric(text: &str, name: &str, labels: &[&str]) -> Option<i64> {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .find_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as i64)
}

#[test]
fn per_partition_lag_is_in_the_metrics_and_shrinks_to_zero() {
    let broker = Tansu::start();
    broker.create_topic("orders", 1);
    produce(&broker.brokers, "orders", 1, &records(0, 3000));
    let dir = tmp();
    // a throttled sink keeps the job behind for about 10 s; statistics every second
    let j = job(
        dir.path(),
        &broker.brokers,
        ", properties: {statistics.interval.ms: \"1000\"}",
        ", maxRecordsPerSecond: 300",
    );
    let port = free_port();
    let mut child = spawn(
        &[
            "run",
            "-q",
            "-f",
            &j,
            "--state-dir",
            &p(&dir.path().join("state")),
            "--admin-port",
            &port.to_string(),
        ],
        &[],
    );
    let partition = [r#"source="orders""#, r#"partition="0""#, r#"job="lagjob""#];
    let behind = poll(
        "a positive lag in /metrics",
        Duration::from_secs(60),
        || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            let (_, text) = http(port, "GET", "/metrics");
            let lag = metric(&text, "weir_source_kafka_lag_records", &partition)?;
            let task = metric(&text, "weir_task_kafka_lag_records", &[r#"job="lagjob""#])?;
            (lag > 0).then_some((lag, task))
        },
    );
    assert!(
        behind.1 >= behind.0,
        "task max {} < partition {}",
        behind.1,
        behind.0
    );
    assert!(
        behind.0 <= 3000,
        "lag {} above the records produced",
        behind.0
    );
    poll("the lag to reach 0", Duration::from_secs(60), || {
        let (_, text) = http(port, "GET", "/metrics");
        (metric(&text, "weir_source_kafka_lag_records", &partition)? == 0).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
}
