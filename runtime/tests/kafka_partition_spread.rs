//! A job with fewer tasks than the sink topic has partitions still writes to every
//! partition: keyless records round-robin over all partitions (against a real tansu broker).

mod common;
mod kafka_common;
use common::*;
use kafka_common::*;
use std::time::Duration;

#[test]
fn keyless_sink_with_two_tasks_writes_to_all_six_partitions() {
    let broker = Tansu::start();
    broker.create_topic("spread", 6);
    let dir = tmp();
    let ckpt = dir.path().join("ckpt");
    let job = dir.path().join("job.yaml");
    let count = 3000;
    write(
        &job,
        &format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: spread}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 500ms, storage: "file://{ckpt}"}}
  pipeline:
    sources:
      - name: gen
        generator: {{kind: nexmark, count: {count}, partitions: 2, seed: 3}}
    sinks:
      - name: out
        input: gen
        kafka: {{brokers: "{brokers}", topic: spread, exactlyOnce: false}}
"#,
            ckpt = p(&ckpt),
            brokers = broker.brokers,
        ),
    );
    let stderr = run_to_end(&["run", "-f", &p(&job), "-q"], &[]);
    assert!(stderr.contains("(2 task(s))"), "expected 2 tasks: {stderr}");
    let got = read_all(
        &broker.brokers,
        "spread",
        6,
        "read_committed",
        Duration::from_secs(60),
        |m| total(m) >= count,
    );
    let per_partition: Vec<usize> = got.values().map(Vec::len).collect();
    assert_eq!(
        total(&got),
        count,
        "records per partition: {per_partition:?}"
    );
    for (partition, records) in &got {
        assert!(
            !records.is_empty(),
            "partition {partition} received nothing; per partition: {per_partition:?}"
        );
    }
    // round-robin from each task's index: 2 tasks x 1500 records over 6 partitions = 500 each
    assert_eq!(per_partition, vec![500; 6]);
}
