//! Bad Kafka settings fail with a message naming the source or sink, the brokers and the
//! topic, after retrying for `weir.startup.timeout.ms`.

mod common;
mod kafka_common;
use common::*;
use kafka_common::*;
use std::time::Duration;

fn job(dir: &std::path::Path, source: &str, sink: &str) -> String {
    let path = dir.join("job.yaml");
    write(
        &path,
        &format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: bad}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 1s, storage: "file://{ckpt}"}}
  pipeline:
    sources:
{source}
    sinks:
{sink}
"#,
            ckpt = p(&dir.join("ckpt")),
        ),
    );
    p(&path)
}

fn run_failing(job: &str) -> String {
    let out = wait_with_timeout(
        spawn(&["run", "-f", job, "-q"], &[]),
        Duration::from_secs(90),
    );
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected a failure: {stderr}");
    stderr
}

#[test]
fn unreachable_broker_names_the_source_the_broker_and_the_topic() {
    let dir = tmp();
    let port = free_port(); // nothing listens there
    let j = job(
        dir.path(),
        &format!(
            r#"      - name: orders
        kafka:
          brokers: "127.0.0.1:{port}"
          topic: orders-in
          properties: {{weir.startup.timeout.ms: "3000"}}"#
        ),
        "      - {name: out, input: orders, stdout: {}}",
    );
    let stderr = run_failing(&j);
    let last = stderr.lines().last().unwrap_or_default();
    for part in [
        "source 'orders'",
        &format!("127.0.0.1:{port}"),
        "'orders-in'",
        "weir.startup.timeout.ms",
    ] {
        assert!(
            last.contains(part),
            "{part:?} missing in the error: {stderr}"
        );
    }
    // the retries are visible while they happen, not only the final error
    assert!(stderr.contains("retrying in"), "{stderr}");
}

#[test]
fn unreachable_broker_names_the_sink_the_broker_and_the_topic() {
    let dir = tmp();
    let port = free_port();
    let j = job(
        dir.path(),
        "      - {name: gen, generator: {kind: nexmark, count: 10, partitions: 1}}",
        &format!(
            r#"      - name: results
        input: gen
        kafka:
          brokers: "127.0.0.1:{port}"
          topic: results-out
          properties: {{weir.startup.timeout.ms: "3000"}}"#
        ),
    );
    let stderr = run_failing(&j);
    let last = stderr.lines().last().unwrap_or_default();
    for part in [
        "sink 'results'",
        &format!("127.0.0.1:{port}"),
        "'results-out'",
    ] {
        assert!(
            last.contains(part),
            "{part:?} missing in the error: {stderr}"
        );
    }
}

#[test]
fn missing_topic_names_the_topic_and_says_it_may_not_exist() {
    let broker = Tansu::start();
    broker.create_topic("present", 1);
    let dir = tmp();
    let j = job(
        dir.path(),
        &format!(
            r#"      - name: orders
        kafka:
          brokers: "{brokers}"
          topic: absent
          properties: {{weir.startup.timeout.ms: "3000"}}"#,
            brokers = broker.brokers
        ),
        "      - {name: out, input: orders, stdout: {}}",
    );
    let stderr = run_failing(&j);
    let last = stderr.lines().last().unwrap_or_default();
    for part in [
        "source 'orders'",
        broker.brokers.as_str(),
        "'absent'",
        "exist",
    ] {
        assert!(
            last.contains(part),
            "{part:?} missing in the error: {stderr}"
        );
    }
}
