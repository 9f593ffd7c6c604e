//! Kafka source offsets live in checkpoints: kill -9 a Kafka → file job mid-run, produce more,
//! restart the same command, and the committed file output holds every record exactly once
//! (against a real tansu broker).

mod common;
mod kafka_common;
use common::*;
use kafka_common::*;

fn records(from: usize, to: usize) -> Vec<String> {
    (from..to)
        .map(|i| format!(r#"{{"id":{i},"ts":{}}}"#, 1_700_000_000_000i64 + i as i64))
        .collect()
}

#[test]
fn kill_and_restart_resumes_from_checkpointed_offsets_exactly_once() {
    let broker = Tansu::start();
    broker.create_topic("in", 3);
    let half = 15_000;
    produce(&broker.brokers, "in", 3, &records(0, half));

    let dir = tmp();
    let ckpt = dir.path().join("ckpt");
    let out = dir.path().join("out");
    let job = dir.path().join("job.yaml");
    write(
        &job,
        &format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: kin}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 200ms, retain: 10, storage: "file://{ckpt}"}}
  pipeline:
    sources:
      - name: in
        kafka: {{brokers: "{brokers}", topic: in, startFrom: earliest}}
        eventTime: {{field: ts, maxOutOfOrderness: 1s}}
    sinks:
      - {{name: out, input: in, file: {{path: "{out}"}}}}
"#,
            ckpt = p(&ckpt),
            out = p(&out),
            brokers = broker.brokers,
        ),
    );
    let state = dir.path().join("state");
    let args = ["run", "-f", &p(&job), "--state-dir", &p(&state), "-q"];
    let root = job_root(&ckpt, "kin");

    // first run: killed after a few checkpoints, with some output committed
    kill_after_checkpoints(&args, &[], &root, 5);
    let first = committed_lines(&out).len();
    assert!(first > 0, "the first run committed nothing before the kill");

    // more input while the job is down
    produce(&broker.brokers, "in", 3, &records(half, 2 * half));

    // second run: must resume from the checkpointed offsets of all 3 partitions
    let want = 2 * half;
    restart_until_committed(&args, &out, &root, want);

    let mut ids: Vec<i64> = committed_lines(&out)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["id"].as_i64().unwrap()
        })
        .collect();
    ids.sort();
    let expected: Vec<i64> = (0..want as i64).collect();
    if ids != expected {
        let mut dups = ids.clone();
        dups.dedup();
        panic!(
            "committed {} records ({} distinct), expected each of {want} exactly once",
            ids.len(),
            dups.len()
        );
    }
}
