//! Results must not depend on parallelism: every example and Nexmark query that runs without
//! Kafka or Redis commits the same multiset of records with its input in 4 partitions (one
//! pod, so 4 tasks with keyed exchanges in memory) as in 1 partition (one task). Nexmark
//! queries read the same events from the Nexmark generator instead of a file.
// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use serde_yaml::Value as Yaml;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
