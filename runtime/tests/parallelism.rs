//! Results must not depend on parallelism: every example and Nexmark query that runs without
//! Kafka or Redis commits the same multiset of records with its input in 4 partitions (one
//! pod, so 4 tasks with keyed exchanges in memory) as in 1 partition (one task). Nexmark
//! queries read the same events from the Nexmark generator instead of a file.
//!
//! With two pods (two processes, `--replicas 2`, sharing the checkpoint storage as pods share
//! a volume) the keyed exchanges go through Kafka (a real tansu broker): the same records again,
//! also when a pod is killed mid-stream and the job comes back on three pods.
// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
mod kafka_common;
use common::*;
use serde_yaml::Value as Yaml;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The manifest at `path` with checkpoints in `ck`, every sink a file sink under `out`, and
/// every source a generator with `partitions` partitions and at most `count` events, as fast
/// as it goes (a file source becomes the Nexmark generator).
fn patched(
    path: &str,
    out: &Path,
    ck: &Path,
    partitions: u32,
    count: u64,
    rate: Option<u64>,
) -> String {
    let text = std::fs::read_to_string(repo_file(path)).unwrap();
    let mut job: Yaml = serde_yaml::from_str(&text).unwrap();
    let spec = &mut job["spec"];
    spec["parallelism"] = Yaml::from(1);
    spec["checkpoint"] = serde_yaml::from_str(&format!(
        "{{interval: 500ms, retain: 2, storage: \"file://{}\"}}",
        ck.display()
    ))
    .unwrap();
    let pipeline = &mut spec["pipeline"];
    for s in pipeline["sources"].as_sequence_mut().unwrap() {
        let m = s.as_mapping_mut().unwrap();
        if m.contains_key("file") {
            m.remove("file");
            m.insert(
                "generator".into(),
                serde_yaml::from_str("{kind: nexmark, seed: 7}").unwrap(),
            );
        }
        // out-of-orderness beyond the generators' spread (events are at most 3 s from their
        // index's time): no record is late at any parallelism. Which records are late depends
        // on how far the watermark got, and that depends on the partitioning (as in Flink).
        if s["eventTime"].is_mapping() {
            s["eventTime"]["maxOutOfOrderness"] = Yaml::from("10s");
        }
        let g = &mut s["generator"];
        assert!(g.is_mapping(), "{path}: a source that is not a generator");
        g["partitions"] = Yaml::from(partitions);
        let n = g["count"].as_u64().unwrap_or(count).min(count);
        g["count"] = Yaml::from(n);
        if let Some(g) = g.as_mapping_mut() {
            g.remove("rate");
        }
        if let Some(r) = rate {
            g["rate"] = Yaml::from(r);
        }
    }
    for s in pipeline["sinks"].as_sequence_mut().unwrap() {
        let sink = s["name"].as_str().unwrap().to_string();
        let m = s.as_mapping_mut().unwrap();
        m.remove("stdout");
        m.remove("kafka");
        m.insert(
            "file".into(),
            serde_yaml::from_str(&format!("{{path: \"{}\"}}", out.join(&sink).display())).unwrap(),
        );
    }
    serde_yaml::to_string(&job).unwrap()
}

/// Every sink's committed lines (sorted) after running `path` to the end.
/// Per sink: its committed lines, sorted, and its last record per key (for changelogs).
type SinkOutput = BTreeMap<String, (Vec<String>, BTreeMap<String, String>)>;

fn run(path: &str, partitions: u32, count: u64) -> (SinkOutput, String) {
    let base = tmp();
    let out = base.path().join("out");
    let f = base.path().join("job.yaml");
    let text = patched(path, &out, &base.path().join("ck"), partitions, count, None);
    write(&f, &text);
    let stderr = run_file_to_end(&f, &base.path().join("state"), &[]);
    let job: Yaml = serde_yaml::from_str(&text).unwrap();
    let mut sinks = BTreeMap::new();
    for s in job["spec"]["pipeline"]["sinks"].as_sequence().unwrap() {
        let name = s["name"].as_str().unwrap().to_string();
        let dir = out.join(&name);
        sinks.insert(name, (committed_lines(&dir), final_by_key(&dir)));
    }
    (sinks, stderr)
}

/// Whether a sink's records are an updating aggregate's changelog (`{key, ..., retract}`).
fn is_changelog(lines: &[String]) -> bool {
    !lines.is_empty() && lines.iter().all(|l| l.contains("\"retract\":"))
}

fn same_at_any_parallelism(path: &str, count: u64) {
    let (one, _) = run(path, 1, count);
    let total: usize = one.values().map(|(l, _)| l.len()).sum();
    assert!(total > 0, "{path}: the one-task run wrote nothing");
    let (four, stderr) = run(path, 4, count);
    assert!(
        !stderr.contains("per-task partial results"),
        "{path}: every keyed input has an exchange: {stderr}"
    );
    for (sink, (lines, finals)) in &one {
        let (other, other_finals) = &four[sink];
        if is_changelog(lines) {
            // an updating aggregate: the records on the way depend on the order in which the
            // tasks' records met; its result, the last record per key, does not
            assert_eq!(
                finals, other_finals,
                "{path}: sink {sink}: final results differ"
            );
            continue;
        }
        if lines != other {
            let only_one: Vec<_> = lines
                .iter()
                .filter(|l| !other.contains(l))
                .take(5)
                .collect();
            let only_four: Vec<_> = other
                .iter()
                .filter(|l| !lines.contains(l))
                .take(5)
                .collect();
            panic!(
                "{path}: sink {sink}: {} records at 1 partition, {} at 4; only at 1: {only_one:?}; only at 4: {only_four:?}",
                lines.len(),
                other.len()
            );
        }
    }
    println!("{path}: {total} records, the same at 1 and 4 partitions");
}

/// At 4 partitions, killed with SIGKILL after two checkpoints and restarted to the end: the
/// same committed output as one uninterrupted task (exactly once across the exchange).
fn same_after_a_kill(path: &str, count: u64) {
    let (one, _) = run(path, 1, count);
    let base = tmp();
    let out = base.path().join("out");
    let ck = base.path().join("ck");
    let f = base.path().join("job.yaml");
    // slow enough to be killed mid-stream: a few seconds of input
    let text = patched(path, &out, &ck, 4, count, Some(count / 4));
    write(&f, &text);
    let job: Yaml = serde_yaml::from_str(&text).unwrap();
    let name = job["metadata"]["name"].as_str().unwrap().to_string();
    let state = base.path().join("state");
    let args = ["run", "-q", "-f", &p(&f), "--state-dir", &p(&state)];
    kill_after_checkpoints(&args, &[], &job_root(&ck, &name), 2);
    let stderr = run_file_to_end(&f, &state, &[]);
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");
    for (sink, (lines, _)) in &one {
        let after = committed_lines(&out.join(sink));
        assert_eq!(
            (lines.len(), lines == &after),
            (after.len(), true),
            "{path}: sink {sink} after a kill at 4 partitions differs from one task"
        );
    }
}

#[test]
fn window_exactly_once_across_a_kill() {
    same_after_a_kill("examples/window-3m.yaml", 100_000);
}

#[test]
fn splice_exactly_once_across_a_kill() {
    same_after_a_kill("examples/splice.yaml", 50_000);
}

#[test]
fn quickstart() {
    same_at_any_parallelism("examples/quickstart.yaml", 20_000);
}

#[test]
fn window_3m() {
    same_at_any_parallelism("examples/window-3m.yaml", 100_000);
}

#[test]
fn splice() {
    same_at_any_parallelism("examples/splice.yaml", 50_000);
}

#[test]
fn impression_click() {
    same_at_any_parallelism("examples/impression-click.yaml", 50_000);
}

#[test]
fn effective_click() {
    same_at_any_parallelism("examples/effective-click.yaml", 50_000);
}

#[test]
fn nexmark_queries() {
    for q in ["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8"] {
        same_at_any_parallelism(&format!("bench/nexmark/{q}.yaml"), 20_000);
    }
}

/// `path` patched as for one pod (see [`patched`]), named `name`, with its exchanges through
/// the broker at `brokers` (tansu has no transactions: readers drop replays by sequence number).
fn patched_for_pods(
    path: &str,
    name: &str,
    base: &Path,
    brokers: &str,
    rate: Option<u64>,
) -> String {
    let text = patched(
        path,
        &base.join("out"),
        &base.join("ck"),
        4,
        PODS_COUNT,
        rate,
    );
    let mut job: Yaml = serde_yaml::from_str(&text).unwrap();
    job["metadata"]["name"] = Yaml::from(name);
    job["spec"]["pipeline"]["exchange"] =
        serde_yaml::from_str(&format!("{{brokers: \"{brokers}\", exactlyOnce: false}}")).unwrap();
    serde_yaml::to_string(&job).unwrap()
}

/// Events per run in the tests with several pods.
const PODS_COUNT: u64 = 20_000;

/// Starts pod `ordinal` of `replicas` of the job in `base` (own state directory, shared
/// checkpoints); returns it and its admin port.
fn start_pod(base: &Path, ordinal: u32, replicas: u32) -> (Child, u16) {
    let port = free_port();
    let job = base.join("job.yaml");
    let state = base.join(format!("state-{ordinal}"));
    let args = [
        "run",
        "-q",
        "-f",
        &p(&job),
        "--state-dir",
        &p(&state),
        "--ordinal",
        &ordinal.to_string(),
        "--replicas",
        &replicas.to_string(),
        "--admin-port",
        &port.to_string(),
    ];
    let log = std::env::var("WEIR_TEST_POD_LOG").unwrap_or_else(|_| "warn".into());
    (spawn(&args, &[("RUST_LOG", &log)]), port)
}

/// Waits until every pod says its tasks finished, then stops them with SIGTERM (a final
/// checkpoint commits the rest) and returns their stderr.
fn finish_pods(mut pods: Vec<(Child, u16)>) -> String {
    wait_finished(&mut pods);
    stop_pods(pods)
}

/// Waits until every pod says its tasks finished (a pod that ends first fails the test).
fn wait_finished(pods: &mut [(Child, u16)]) {
    for (child, port) in pods.iter_mut() {
        poll("every task finished", Duration::from_secs(240), || {
            if let Some(status) = child.try_wait().unwrap() {
                let mut stderr = String::new();
                if let Some(mut e) = child.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut stderr).unwrap();
                }
                panic!("a pod ended ({status}) before its tasks finished: {stderr}");
            }
            let phase = admin_status(*port).map(|s| s["phase"].clone());
            (phase.as_ref().and_then(|p| p.as_str()) == Some("Finished")).then_some(())
        });
    }
}

/// Waits for two more checkpoints on every pod (after the end of the input, one of them
/// started after every task finished, so everything is committed), then stops the pods with
/// SIGTERM; returns their stderr.
fn stop_pods(mut pods: Vec<(Child, u16)>) -> String {
    let last = |port: u16| admin_status(port).and_then(|s| s["lastCheckpoint"]["id"].as_u64());
    let marks: Vec<Option<u64>> = pods.iter().map(|(_, port)| last(*port)).collect();
    for ((_, port), mark) in pods.iter().zip(marks) {
        poll(
            "two checkpoints after the end",
            Duration::from_secs(60),
            || {
                let now = last(*port)?;
                (mark.is_none_or(|m| now >= m + 2)).then_some(())
            },
        );
    }
    for (child, _) in &pods {
        signal(child, "TERM");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline
        && pods
            .iter_mut()
            .any(|(c, _)| c.try_wait().unwrap().is_none())
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stderr = String::new();
    let (mut failed, mut hung) = (false, false);
    for (i, (mut child, _)) in pods.into_iter().enumerate() {
        let exited = child.try_wait().unwrap();
        if exited.is_none() {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        failed |= exited.is_some_and(|s| !s.success());
        hung |= exited.is_none();
        stderr.push_str(&format!(
            "--- pod {i} ({exited:?}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    assert!(!failed, "a pod failed:\n{stderr}");
    assert!(
        !hung,
        "a pod did not stop within 60 s of SIGTERM:\n{stderr}"
    );
    stderr
}

/// Waits up to 60 s for `child` to exit; its status and stderr (a pod still running fails).
fn wait_exit(mut child: Child, what: &str) -> (std::process::ExitStatus, String) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let exited = child.try_wait().unwrap();
    if exited.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let status = exited.unwrap_or_else(|| panic!("{what} did not exit within 60 s:\n{stderr}"));
    (status, stderr)
}

/// The committed output of every sink of the job in `base`.
fn sink_output(base: &Path) -> SinkOutput {
    let job: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(base.join("job.yaml")).unwrap()).unwrap();
    let mut sinks = BTreeMap::new();
    for s in job["spec"]["pipeline"]["sinks"].as_sequence().unwrap() {
        let name = s["name"].as_str().unwrap().to_string();
        let dir = base.join("out").join(&name);
        sinks.insert(name, (committed_lines(&dir), final_by_key(&dir)));
    }
    sinks
}

fn assert_same(path: &str, what: &str, one: &SinkOutput, other: &SinkOutput) {
    for (sink, (lines, finals)) in one {
        let (got, got_finals) = &other[sink];
        if is_changelog(lines) {
            assert_eq!(
                finals, got_finals,
                "{path}: sink {sink}: final results differ {what}"
            );
        } else {
            assert_eq!(
                (lines.len(), lines == got),
                (got.len(), true),
                "{path}: sink {sink} {what} differs from one task"
            );
        }
    }
}

/// (1 pod, 1 partition) against (2 pods, 4 partitions), the exchanges through Kafka.
fn same_on_two_pods(path: &str) {
    let (one, _) = run(path, 1, PODS_COUNT);
    assert!(
        one.values().any(|(l, _)| !l.is_empty()),
        "{path}: no output"
    );
    let broker = kafka_common::Tansu::start();
    let base = tmp();
    let name = "two-pods";
    write(
        &base.path().join("job.yaml"),
        &patched_for_pods(path, name, base.path(), &broker.brokers, None),
    );
    let pods = vec![start_pod(base.path(), 0, 2), start_pod(base.path(), 1, 2)];
    let plan = poll("the plan on GET /status", Duration::from_secs(60), || {
        admin_status(pods[0].1).map(|s| s["plan"].clone())
    });
    assert_eq!(plan["tasks"], 4, "{path}: {plan}");
    for x in plan["exchanges"].as_array().into_iter().flatten() {
        assert_eq!(x["transport"], "kafka", "{path}: across pods: {plan}");
        let topic = x["topic"].as_str().unwrap_or_default();
        assert!(topic.ends_with("-exchange"), "{path}: {plan}");
    }
    let stderr = finish_pods(pods);
    assert!(!stderr.contains("partial results"), "{stderr}");
    assert_same(path, "on two pods", &one, &sink_output(base.path()));
    let total: usize = one.values().map(|(l, _)| l.len()).sum();
    println!("{path}: {total} records, the same on one task and on two pods");
}

#[test]
fn two_pods_window_3m() {
    same_on_two_pods("examples/window-3m.yaml");
}

#[test]
fn two_pods_splice() {
    same_on_two_pods("examples/splice.yaml");
}

#[test]
fn two_pods_quickstart() {
    same_on_two_pods("examples/quickstart.yaml");
}

#[test]
fn two_pods_impression_click() {
    same_on_two_pods("examples/impression-click.yaml");
}

#[test]
fn two_pods_effective_click() {
    same_on_two_pods("examples/effective-click.yaml");
}

/// Every Nexmark query on two pods; q5 has two keyed stages, so two exchange levels.
#[test]
fn two_pods_nexmark_queries() {
    for q in ["q0", "q1", "q2", "q3", "q4", "q5", "q7", "q8"] {
        same_on_two_pods(&format!("bench/nexmark/{q}.yaml"));
    }
}

/// Two pods, one killed with SIGKILL mid-stream and the other stopped, then the job on three
/// pods to the end: the output of one uninterrupted task, nothing lost or doubled.
#[test]
fn a_pod_killed_and_a_rescale_from_two_pods_to_three_lose_and_double_nothing() {
    let path = "examples/window-3m.yaml";
    let (one, _) = run(path, 1, PODS_COUNT);
    let broker = kafka_common::Tansu::start();
    let base = tmp();
    let name = "rescale";
    // a few seconds of input, so the kill lands mid-stream
    let job = patched_for_pods(
        path,
        name,
        base.path(),
        &broker.brokers,
        Some(PODS_COUNT / 6),
    );
    write(&base.path().join("job.yaml"), &job);
    let root = job_root(&base.path().join("ck"), name);
    let (mut pod0, _) = start_pod(base.path(), 0, 2);
    let (mut pod1, _) = start_pod(base.path(), 1, 2);
    poll(
        "two completed checkpoints",
        Duration::from_secs(120),
        || (completed_checkpoints(&root).len() >= 2).then_some(()),
    );
    pod1.kill().unwrap(); // SIGKILL
    let _ = pod1.wait();
    pod0.kill().unwrap();
    let _ = pod0.wait();
    let pods = (0..3).map(|i| start_pod(base.path(), i, 3)).collect();
    let stderr = finish_pods(pods);
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");
    let after = sink_output(base.path());
    assert_same(
        path,
        "after a kill and a rescale to three pods",
        &one,
        &after,
    );
}

/// `spec.maxParallelism` sets the key groups: the results do not depend on it (5 groups over 4
/// tasks, so uneven ranges, equal one task), every checkpoint records it, and a restore with
/// another value, or with another number of tasks, is refused naming what changed.
#[test]
fn max_parallelism_sets_the_key_groups_and_a_restore_with_another_is_refused() {
    let path = "examples/window-3m.yaml";
    let (one, _) = run(path, 1, PODS_COUNT);
    let base = tmp();
    let (out, ck) = (base.path().join("out"), base.path().join("ck"));
    let f = base.path().join("job.yaml");
    let with = |groups: u32, partitions: u32| {
        let text = patched(path, &out, &ck, partitions, PODS_COUNT, None);
        let mut job: Yaml = serde_yaml::from_str(&text).unwrap();
        job["spec"]["maxParallelism"] = Yaml::from(groups);
        write(&f, &serde_yaml::to_string(&job).unwrap());
        job_root(&ck, job["metadata"]["name"].as_str().unwrap())
    };
    let root = with(5, 4);
    let state = base.path().join("state");
    run_file_to_end(&f, &state, &[]);
    assert_same(
        path,
        "with 5 key groups over 4 tasks",
        &one,
        &sink_output(base.path()),
    );
    let last = *completed_checkpoints(&root).last().unwrap();
    let marker: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join(format!("chk-{last}/_COMPLETED"))).unwrap(),
    )
    .unwrap();
    assert_eq!(marker["keyGroups"], 5, "{marker}");
    let refused = |what: &str, expected: &str| {
        let args = ["run", "-q", "-f", &p(&f), "--state-dir", &p(&state)];
        let out = wait_with_timeout(spawn(&args, &[]), Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{what}: not refused: {stderr}");
        assert!(stderr.contains(expected), "{what}: {stderr}");
    };
    with(6, 4);
    refused(
        "another maxParallelism",
        &format!("checkpoint {last} was taken with spec.maxParallelism 5 and it is now 6"),
    );
    with(5, 2);
    refused(
        "another number of tasks",
        &format!("checkpoint {last} was taken with 4 task(s) and the job now has 2"),
    );
}

/// Pods stopped one after the other on different checkpoint ticks, as a StatefulSet's pods
/// may be: the first completes its final checkpoint (the second takes part) and exits,
/// leaving a note; the second's final checkpoint, on a later tick, needs the first, so it exits
/// at once instead of waiting out its deadline (10 minutes here). Started again, the job ends
/// with the output of one uninterrupted task: nothing lost or doubled.
#[test]
fn pods_stopped_on_different_ticks_exit_promptly_and_lose_and_double_nothing() {
    let path = "examples/window-3m.yaml";
    let (one, _) = run(path, 1, PODS_COUNT);
    let broker = kafka_common::Tansu::start();
    let base = tmp();
    let name = "staggered";
    // about 20 s of input, so both stops land mid-stream
    let job = patched_for_pods(
        path,
        name,
        base.path(),
        &broker.brokers,
        Some(PODS_COUNT / 20),
    );
    write(&base.path().join("job.yaml"), &job);
    let root = job_root(&base.path().join("ck"), name);
    let (pod0, _) = start_pod(base.path(), 0, 2);
    let (pod1, _) = start_pod(base.path(), 1, 2);
    poll(
        "two completed checkpoints",
        Duration::from_secs(120),
        || (completed_checkpoints(&root).len() >= 2).then_some(()),
    );
    signal(&pod0, "TERM");
    let (status0, stderr0) = wait_exit(pod0, "pod 0");
    assert!(status0.success(), "pod 0: {status0}\n{stderr0}");
    assert!(stderr0.contains("final checkpoint done"), "{stderr0}");
    let note = std::fs::read_to_string(root.join("pods/pod-0.stopped")).unwrap();
    // checkpoints start every 500 ms: the second pod's final one is on a later tick
    std::thread::sleep(Duration::from_millis(1500));
    signal(&pod1, "TERM");
    let (status1, stderr1) = wait_exit(pod1, "pod 1");
    assert!(status1.success(), "pod 1: {status1}\n{stderr1}");
    assert!(
        stderr1.contains("without a final checkpoint: pod 0 stopped after checkpoint"),
        "note {note}\n{stderr1}"
    );
    let pods = (0..2).map(|i| start_pod(base.path(), i, 2)).collect();
    let stderr = finish_pods(pods);
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");
    assert_same(
        path,
        "after pods stopped on different ticks",
        &one,
        &sink_output(base.path()),
    );
}

/// Two Kafka topics with different partition counts (3 and 2, records dealt round-robin, so
/// neither is partitioned by a key) feed an `intervalJoin` keyed by a different field on each
/// side, and an `aggregate` keyed by a third field counts its output: on two pods (both inputs
/// and the aggregate's input exchanged through Kafka) the same as on one task reading
/// one-partition topics.
#[test]
fn two_kafka_sources_with_different_partition_counts_join_as_on_one_task() {
    const N: usize = 3000;
    let broker = kafka_common::Tansu::start();
    let base_ts = 1_700_000_000_000i64;
    let imps: Vec<String> = (0..N)
        .map(|i| {
            format!(
                r#"{{"req":"r{i}","ad":{},"ts":{}}}"#,
                i % 13,
                base_ts + i as i64 * 10
            )
        })
        .collect();
    let clicks: Vec<String> = (0..N)
        .step_by(3)
        .map(|i| format!(r#"{{"rid":"r{i}","ts":{}}}"#, base_ts + i as i64 * 10 + 500))
        .collect();
    let run = |name: &str, imp_parts: i32, click_parts: i32, replicas: u32| -> SinkOutput {
        let (it, ct) = (format!("{name}-imps"), format!("{name}-clicks"));
        broker.create_topic(&it, imp_parts);
        broker.create_topic(&ct, click_parts);
        kafka_common::produce(&broker.brokers, &it, imp_parts, &imps);
        kafka_common::produce(&broker.brokers, &ct, click_parts, &clicks);
        let base = tmp();
        let (b, out, ck) = (
            &broker.brokers,
            base.path().join("out"),
            base.path().join("ck"),
        );
        let job = format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: {name}}}
spec:
  image: x
  checkpoint: {{interval: 500ms, retain: 2, storage: "file://{ck}"}}
  pipeline:
    exchange: {{exactlyOnce: false}}
    sources:
      - {{name: imps, kafka: {{brokers: "{b}", topic: {it}}}, eventTime: {{field: ts, maxOutOfOrderness: 1h}}}}
      - {{name: clicks, kafka: {{brokers: "{b}", topic: {ct}}}, eventTime: {{field: ts, maxOutOfOrderness: 1h}}}}
    operators:
      - name: joined
        inputs: [imps, clicks]
        intervalJoin: {{left: imps, right: clicks, leftKey: e.req, rightKey: e.rid, before: 0s, after: 1m, emit: "{{'req': l.req, 'ad': l.ad, 'clickTs': r.ts}}"}}
      - name: perAd
        input: joined
        aggregate: {{key: e.ad, aggregates: [{{name: clicks, op: count}}]}}
    sinks:
      - {{name: joinedOut, input: joined, file: {{path: "{joined}"}}}}
      - {{name: perAdOut, input: perAd, file: {{path: "{per_ad}"}}}}
"#,
            ck = ck.display(),
            joined = out.join("joinedOut").display(),
            per_ad = out.join("perAdOut").display(),
        );
        write(&base.path().join("job.yaml"), &job);
        let pods: Vec<(Child, u16)> = (0..replicas)
            .map(|i| start_pod(base.path(), i, replicas))
            .collect();
        // the topics never end: wait for every click's match, then stop
        let mut seen = 0;
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            poll("every click joined", Duration::from_secs(60), || {
                seen = committed_lines(&out.join("joinedOut")).len();
                (seen >= clicks.len()).then_some(())
            })
        }));
        if waited.is_err() {
            let stderr = stop_pods(pods);
            panic!(
                "{name}: {seen} of {} clicks joined; pods:\n{stderr}",
                clicks.len()
            );
        }
        stop_pods(pods);
        sink_output(base.path())
    };
    let one = run("one", 1, 1, 1);
    let two = run("two", 3, 2, 2);
    assert_eq!(
        one["joinedOut"].0.len(),
        clicks.len(),
        "one match per click"
    );
    assert_same("two topics", "on two pods", &one, &two);
}
