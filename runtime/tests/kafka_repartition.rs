//! `repartition` through a real broker (tansu): a 2-partition file input is re-keyed by user
//! through a 4-partition topic the job creates; every record lands in the downstream task that
//! the Java client's partitioner picks for its key, and a kill -9 in the middle of the stream
//! plus a restart still commits every record exactly once.
// test helpers: a failed setup step should panic with its error
#![allow(clippy::unwrap_used)]

mod common;
mod kafka_common;
use common::*;
use kafka_common::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;
use weir_runtime::kafka::partitioner::partition_for_key;

const PER_FILE: usize = 8_000;
const USERS: usize = 53;
const TOPIC_PARTITIONS: u32 = 4;

fn line(i: usize) -> String {
    format!(
        r#"{{"id":{i},"user":"u{}","ts":{}}}"#,
        i % USERS,
        1_700_000_000_000i64 + i as i64
    )
}

/// Appends the records to `a.jsonl` (even ids) and `b.jsonl` (odd ids), 100 per file every
/// 40 ms, so the job is mid-stream when it is killed.
fn append_slowly(dir: &Path) -> std::thread::JoinHandle<()> {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let open = |name: &str| {
            std::fs::OpenOptions::new()
                .append(true)
                .open(dir.join(name))
                .unwrap()
        };
        let (mut a, mut b) = (open("a.jsonl"), open("b.jsonl"));
        for chunk in 0..PER_FILE / 100 {
            let (mut ta, mut tb) = (String::new(), String::new());
            for j in 0..100 {
                let i = 2 * (chunk * 100 + j);
                ta.push_str(&line(i));
                ta.push('\n');
                tb.push_str(&line(i + 1));
                tb.push('\n');
            }
            a.write_all(ta.as_bytes()).unwrap();
            b.write_all(tb.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(40));
        }
    })
}

/// The task of a committed file `part-<task>-<checkpoint>.jsonl`.
fn task_of(file: &str) -> Option<i32> {
    file.strip_prefix("part-")?.split('-').next()?.parse().ok()
}

/// (task, value) of every committed line.
fn committed_by_task(out: &Path) -> Vec<(i32, serde_json::Value)> {
    let mut v = vec![];
    for e in std::fs::read_dir(out).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.ends_with(".jsonl") {
            continue;
        }
        let Some(task) = task_of(&name) else { continue };
        for l in std::fs::read_to_string(e.path()).unwrap().lines() {
            v.push((task, serde_json::from_str(l).unwrap()));
        }
    }
    v
}

#[test]
fn repartition_co_partitions_by_key_and_survives_kill_9_exactly_once() {
    let broker = Tansu::start();
    let mock = std::env::var("WEIR_TEST_KAFKA").as_deref() == Ok("mock");
    if mock {
        // librdkafka's mock cluster has no CreateTopics: create it the way the mock can
        broker.create_topic("rp-by-user-repartition", TOPIC_PARTITIONS as i32);
    }
    // tansu has no Kafka transactions; the mock cluster commits them (without isolation)
    let exactly_once = mock;
    let dir = tmp();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for f in ["a.jsonl", "b.jsonl"] {
        write(&input.join(f), "");
    }
    let ckpt = dir.path().join("ckpt");
    let out = dir.path().join("out");
    let job = dir.path().join("job.yaml");
    write(
        &job,
        &format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: rp}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 300ms, retain: 10, storage: "file://{ckpt}"}}
  pipeline:
    sources:
      - name: events
        file: {{path: "{input}", follow: true}}
        eventTime: {{field: ts, maxOutOfOrderness: 1s}}
    operators:
      - name: by-user
        input: events
        repartition: {{key: "e.user", brokers: "{brokers}", partitions: {TOPIC_PARTITIONS}, exactlyOnce: {exactly_once}}}
    sinks:
      - {{name: out, input: by-user, file: {{path: "{out}"}}}}
"#,
            ckpt = p(&ckpt),
            out = p(&out),
            input = p(&input),
            brokers = broker.brokers,
        ),
    );
    let state = dir.path().join("state");
    let args = ["run", "-f", &p(&job), "--state-dir", &p(&state), "-q"];
    let root = job_root(&ckpt, "rp");

    let appender = append_slowly(&input);
    // first run: killed mid-stream after a few checkpoints
    kill_after_checkpoints(&args, &[], &root, 4);
    let first = committed_lines(&out).len();
    assert!(first > 0, "the first run committed nothing before the kill");
    assert!(
        first < 2 * PER_FILE,
        "the first run saw the whole input ({first}): it was not killed mid-stream"
    );

    // second run: resumes; the writer replays what followed the checkpoint, the reader drops it
    let want = 2 * PER_FILE;
    restart_until_committed(&args, &out, &root, want);
    appender.join().unwrap();

    let committed = committed_by_task(&out);
    // exactly once: every id, once
    let mut ids: Vec<i64> = committed
        .iter()
        .map(|(_, v)| v["id"].as_i64().unwrap())
        .collect();
    ids.sort();
    let mut distinct = ids.clone();
    distinct.dedup();
    assert_eq!(
        (ids.len(), distinct.len()),
        (want, want),
        "committed {} records ({} distinct), expected each of {want} exactly once",
        ids.len(),
        distinct.len()
    );
    // the records are unchanged by the trip through the topic
    for (_, v) in committed.iter().take(100) {
        let i = v["id"].as_u64().unwrap() as usize;
        assert_eq!(
            v,
            &serde_json::from_str::<serde_json::Value>(&line(i)).unwrap()
        );
    }
    // co-partitioned: each user in exactly one task, the one murmur2 picks
    let mut tasks_of_user: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (task, v) in &committed {
        let user = v["user"].as_str().unwrap().to_string();
        let t = tasks_of_user.entry(user).or_default();
        if !t.contains(task) {
            t.push(*task);
        }
    }
    assert_eq!(tasks_of_user.len(), USERS);
    for (user, tasks) in &tasks_of_user {
        let expected = partition_for_key(user.as_bytes(), TOPIC_PARTITIONS);
        assert_eq!(
            tasks,
            &vec![expected],
            "user {user} reached tasks {tasks:?}"
        );
    }
    let used: std::collections::BTreeSet<i32> = tasks_of_user.values().flatten().copied().collect();
    assert_eq!(
        used.len(),
        TOPIC_PARTITIONS as usize,
        "all 4 downstream tasks (2 more than input partitions) got keys: {used:?}"
    );
}
