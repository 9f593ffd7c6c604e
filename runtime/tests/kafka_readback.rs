//! Exactly-once Kafka output on a broker without transactions (`transactions: false`), against
//! a real tansu broker: a Kafka → map → Kafka job is killed with SIGKILL while it writes, then
//! restarted. The restarted sink reads back what it wrote after the restored checkpoint and
//! does not write it again, so the output topic holds every input record exactly once (read
//! with read_uncommitted, as any consumer of a broker without transactions reads).
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
mod kafka_common;
use common::*;
use kafka_common::*;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const RECORDS: usize = 12_000;

fn records() -> Vec<String> {
    (0..RECORDS)
        .map(|i| format!(r#"{{"id":{i},"ts":{}}}"#, 1_700_000_000_000i64 + i as i64))
        .collect()
}

/// Produces `values[i]` to partition `i % partitions`, one record per batch: tansu serves a
/// fetch only from a batch's first offset (see the probe below), and the job resumes from
/// record offsets.
fn produce_unbatched(brokers: &str, topic: &str, partitions: i32, values: &[String]) {
    produce_with(
        brokers,
        topic,
        partitions,
        values,
        &[("batch.num.messages", "1")],
    );
}

/// Every payload in the topic: read until nothing more arrives for 2 s (tansu's high
/// watermarks are not record counts, see the probe below).
fn everything_in(brokers: &str, topic: &str, partitions: i32) -> BTreeMap<i32, Vec<String>> {
    let mut quiet_since = Instant::now();
    let mut seen = 0;
    read_all(
        brokers,
        topic,
        partitions,
        "read_uncommitted",
        Duration::from_secs(120),
        |m| {
            if total(m) != seen {
                seen = total(m);
                quiet_since = Instant::now();
            }
            quiet_since.elapsed() > Duration::from_secs(2)
        },
    )
}

/// Records the restarted sink read back, summed over its tasks (each logs its own count).
fn read_back_count(stderr: &str) -> Option<u64> {
    let counts: Vec<u64> = stderr
        .split("read back ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

#[test]
fn a_kill_mid_write_and_restart_leaves_each_record_once_in_the_topic() {
    let broker = Tansu::start();
    broker.create_topic("in", 2);
    broker.create_topic("out", 3);
    produce_unbatched(&broker.brokers, "in", 2, &records());

    let dir = tmp();
    let ckpt = dir.path().join("ckpt");
    let job = dir.path().join("job.yaml");
    write(
        &job,
        &format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: readback}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 400ms, retain: 5, storage: "file://{ckpt}"}}
  pipeline:
    sources:
      - name: in
        kafka: {{brokers: "{brokers}", topic: in, startFrom: earliest}}
        eventTime: {{field: ts, maxOutOfOrderness: 1s}}
    operators:
      - {{name: doubled, input: in, map: "{{'id': e.id, 'twice': e.id * 2}}"}}
    sinks:
      - name: out
        input: doubled
        maxRecordsPerSecond: 2000
        kafka: {{brokers: "{brokers}", topic: out, exactlyOnce: true, transactions: false}}
"#,
            ckpt = p(&ckpt),
            brokers = broker.brokers,
        ),
    );
    let state = dir.path().join("state");
    let admin = free_port().to_string();
    let args = [
        "run",
        "-f",
        &p(&job),
        "--state-dir",
        &p(&state),
        "-q",
        "--admin-port",
        &admin,
    ];
    let root = job_root(&ckpt, "readback");

    // first run: SIGKILL a moment after a checkpoint, while records of the next one are
    // being written (the sink is throttled to 2,000 records/s per task)
    let mut child = spawn(&args, &[]);
    poll(
        "two completed checkpoints",
        Duration::from_secs(120),
        || {
            assert!(child.try_wait().unwrap().is_none(), "the first run ended");
            (completed_checkpoints(&root).len() >= 2).then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    let _ = child.wait();
    let before = total(&everything_in(&broker.brokers, "out", 3)) as i64;
    assert!(
        before > 0 && before < RECORDS as i64,
        "the kill should land mid-stream: {before} of {RECORDS} written"
    );

    // second run: restores, reads back, and finishes the input
    let mut child = spawn(&args, &[("RUST_LOG", "warn,weir_runtime::kafka=info")]);
    let start = Instant::now();
    let mut written = 0;
    while written < RECORDS {
        written = total(&read_all(
            &broker.brokers,
            "out",
            3,
            "read_uncommitted",
            Duration::from_secs(5),
            |m| total(m) >= RECORDS,
        ));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the restarted run ended"
        );
        if start.elapsed() > Duration::from_secs(120) {
            let n = total(&everything_in(&broker.brokers, "out", 3));
            let status = admin_status(admin.parse().unwrap());
            child.kill().unwrap();
            let o = child.wait_with_output().unwrap();
            panic!(
                "only {n} of {RECORDS} records in the topic after the restart: {status:?} {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // two more checkpoints: a late duplicate would show up by then
    let done = completed_checkpoints(&root).last().copied().unwrap_or(0);
    poll("two more checkpoints", Duration::from_secs(60), || {
        (completed_checkpoints(&root).last().copied().unwrap_or(0) >= done + 2).then_some(())
    });
    child.kill().unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");
    let read_back = read_back_count(&stderr).unwrap_or(0);
    assert!(
        read_back > 0,
        "the restart found nothing written after its checkpoint, so this run tested nothing: {stderr}"
    );

    let out = everything_in(&broker.brokers, "out", 3);
    let mut ids: Vec<i64> = out
        .values()
        .flatten()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["twice"], v["id"].as_i64().unwrap() * 2, "{l}");
            v["id"].as_i64().unwrap()
        })
        .collect();
    ids.sort();
    let mut distinct = ids.clone();
    distinct.dedup();
    assert_eq!(
        (ids.len(), distinct.len()),
        (RECORDS, RECORDS),
        "each of {RECORDS} records exactly once (read back {read_back} after the restore)"
    );
    assert_eq!(ids, (0..RECORDS as i64).collect::<Vec<_>>());
    assert!(
        out.values().all(|v| !v.is_empty()),
        "every partition of the output topic gets data"
    );
}

/// Pins the two tansu behaviours the test above works around, so that a tansu that fixes them
/// shows up here: a fetch that starts inside a record batch returns nothing, and the high
/// watermark after a multi-record batch is that batch's base offset + 1.
#[test]
fn tansu_fetches_only_from_batch_starts_and_counts_batches_in_its_high_watermark() {
    let broker = Tansu::start_tansu();
    broker.create_topic("batched", 1);
    let values: Vec<String> = (0..1000).map(|i| format!(r#"{{"id":{i}}}"#)).collect();
    produce(&broker.brokers, "batched", 1, &values);
    let c = consumer(&broker.brokers, "read_uncommitted");
    let (_, high) = c
        .fetch_watermarks("batched", 0, Duration::from_secs(10))
        .unwrap();
    assert!(high < 1000, "tansu's high watermark is now a record count ({high}): drop the quiet-period workarounds in kafka/readback.rs and this test");
    let from = |offset: i64| {
        let c = consumer(&broker.brokers, "read_uncommitted");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset("batched", 0, Offset::Offset(offset))
            .unwrap();
        c.assign(&tpl).unwrap();
        let start = Instant::now();
        let mut got = 0;
        while start.elapsed() < Duration::from_secs(3) {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(100)) {
                assert!(m.offset() >= offset);
                got += 1;
            }
        }
        got
    };
    assert_eq!(
        from(0),
        1000,
        "a fetch from the batch start gets every record"
    );
    assert_eq!(from(1), 0, "tansu now serves fetches inside a batch: the unbatched input of the test above is no longer needed");
}
