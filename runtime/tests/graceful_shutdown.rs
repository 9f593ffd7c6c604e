//! SIGTERM/SIGINT: the runtime stops reading input, takes a final checkpoint (so the
//! exactly-once sink commits), exits 0, and the next start resumes from that checkpoint
//! with no record lost or duplicated. A second signal exits at once.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

const EVENTS: u64 = 30_000;

fn job(name: &str, out: &Path, ck: &Path, generator: &str, checkpoint: &str) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: {name}}}
spec:
  image: weir-runtime:dev
  checkpoint: {{{checkpoint}, storage: "file://{ck}"}}
  pipeline:
    sources:
      - name: gen
        generator: {{kind: nexmark, partitions: 2, {generator}}}
    operators:
      - {{name: bids, input: gen, filter: "e.type == 'bid'"}}
    sinks:
      - {{name: out, input: bids, file: {{path: "{out}"}}}}
"#,
        ck = ck.display(),
        out = out.display()
    )
}

/// Bytes written to the sink directory so far (pending and committed).
fn bytes_written(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn wait_for_output(child: &mut Child, out: &Path) {
    let start = Instant::now();
    while bytes_written(out) == 0 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the job ended before any output"
        );
        assert!(start.elapsed() < Duration::from_secs(60), "no output");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_takes_a_final_checkpoint_and_the_restart_is_exactly_once() {
    let dir = tmp();
    // reference: the same input without interruption
    let ref_out = dir.path().join("ref-out");
    let ref_f = dir.path().join("ref.yaml");
    let gen = format!("count: {EVENTS}, rate: 5000");
    write(
        &ref_f,
        &job(
            "ref",
            &ref_out,
            &dir.path().join("ref-ck"),
            &gen,
            "interval: 1h",
        ),
    );
    let ref_st = p(&dir.path().join("ref-st"));
    run_to_end(
        &["run", "-q", "-f", &p(&ref_f), "--state-dir", &ref_st],
        &[],
    );
    let expected = committed_lines(&ref_out);
    assert!(expected.len() > 1000, "reference output too small");

    // worker (pod mode), SIGTERM while input is being read; no periodic checkpoint (1h)
    let out = dir.path().join("out");
    let ck = dir.path().join("ck");
    let st = dir.path().join("st");
    let f = dir.path().join("job.yaml");
    write(&f, &job("term", &out, &ck, &gen, "interval: 1h"));
    let mut child = spawn(
        &["worker", "--config", &p(&f)],
        &[
            ("WEIR_ORDINAL", "0"),
            ("WEIR_STATE_DIR", &p(&st)),
            ("WEIR_ADMIN_PORT", "0"),
        ],
    );
    wait_for_output(&mut child, &out);
    signal(&child, "TERM");
    let res = wait_with_timeout(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.success(),
        "worker exit {:?}: {stderr}",
        res.status
    );
    assert!(stderr.contains("SIGTERM received"), "{stderr}");
    let root = job_root(&ck, "term");
    assert_eq!(completed_checkpoints(&root), vec![1], "{stderr}");
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("chk-1/_COMPLETED")).unwrap()).unwrap();
    assert_eq!(marker["isFinal"], true, "{marker}");
    let committed = committed_lines(&out);
    assert!(
        !committed.is_empty() && committed.len() < expected.len(),
        "stopped mid-input with output committed: {} of {} lines",
        committed.len(),
        expected.len()
    );

    // the next start restores from the final checkpoint and finishes the input
    let stderr = run_to_end(&["run", "-q", "-f", &p(&f), "--state-dir", &p(&st)], &[]);
    assert!(stderr.contains("restored from checkpoint 1"), "{stderr}");
    assert_eq!(
        committed_lines(&out),
        expected,
        "lost or duplicated records"
    );
}

#[test]
fn sigint_stops_run_mode_with_exit_0() {
    let dir = tmp();
    let out = dir.path().join("out");
    let ck = dir.path().join("ck");
    let f = dir.path().join("job.yaml");
    write(&f, &job("int", &out, &ck, "rate: 2000", "interval: 1h"));
    let st = p(&dir.path().join("st"));
    let mut child = spawn(&["run", "-q", "-f", &p(&f), "--state-dir", &st], &[]);
    wait_for_output(&mut child, &out);
    signal(&child, "INT");
    let res = wait_with_timeout(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "run exit {:?}: {stderr}", res.status);
    assert_eq!(completed_checkpoints(&job_root(&ck, "int")), vec![1]);
    assert!(!committed_lines(&out).is_empty());
}

/// With two pods and only ordinal 0 running, no checkpoint can complete (task 1 never writes
/// its manifest), so the final checkpoint waits: a second signal exits at once, and without
/// one the wait ends after interval + timeout with an error.
#[test]
fn second_signal_exits_at_once_and_an_impossible_final_checkpoint_fails() {
    let dir = tmp();
    let out = dir.path().join("out");
    let ck = dir.path().join("ck");
    let f = dir.path().join("job.yaml");
    write(
        &f,
        &job("two", &out, &ck, "rate: 2000", "interval: 1s, timeout: 2s"),
    );
    let st = p(&dir.path().join("st"));
    let args = [
        "run",
        "-q",
        "-f",
        &p(&f),
        "--state-dir",
        &st,
        "--ordinal",
        "0",
        "--replicas",
        "2",
    ];

    let mut child = spawn(&args, &[]);
    wait_for_output(&mut child, &out);
    signal(&child, "TERM");
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        child.try_wait().unwrap().is_none(),
        "exited although the final checkpoint cannot complete"
    );
    let second = Instant::now();
    signal(&child, "TERM");
    let res = wait_with_timeout(child, Duration::from_secs(30));
    assert!(second.elapsed() < Duration::from_secs(5));
    assert_eq!(
        res.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );

    // a fresh run (fresh output directory) that gets one signal only
    let out2 = dir.path().join("out2");
    let f2 = dir.path().join("job2.yaml");
    write(
        &f2,
        &job("two", &out2, &ck, "rate: 2000", "interval: 1s, timeout: 2s"),
    );
    let mut args2 = args;
    let f2s = p(&f2);
    args2[3] = &f2s;
    let mut child = spawn(&args2, &[]);
    wait_for_output(&mut child, &out2);
    let first = Instant::now();
    signal(&child, "TERM");
    let res = wait_with_timeout(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{stderr}");
    assert!(stderr.contains("no final checkpoint completed"), "{stderr}");
    assert!(first.elapsed() >= Duration::from_secs(2), "{stderr}");
    assert!(completed_checkpoints(&job_root(&ck, "two")).is_empty());
}
