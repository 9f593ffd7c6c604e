//! `kill -9` in the middle of a run, restart the same command: the committed output equals
//! that of an uninterrupted run (no loss, no duplicates).

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;
use std::path::Path;

fn window_job(out: &Path, ckpt: &Path) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: win}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 300ms, retain: 2, storage: "file://{ckpt}"}}
  pipeline:
    sources:
      - name: gen
        generator: {{kind: nexmark, count: 24000, rate: 6000, partitions: 2, seed: 7}}
    operators:
      - name: perSecond
        input: gen
        window:
          type: tumbling
          size: 1s
          aggregates:
            - {{name: n, op: count}}
      - name: sliding
        input: gen
        window:
          type: sliding
          size: 2s
          slide: 500ms
          aggregates:
            - {{name: n, op: count}}
    sinks:
      - {{name: out, input: perSecond, file: {{path: "{out}/tumbling"}}}}
      - {{name: out2, input: sliding, file: {{path: "{out}/sliding"}}}}
"#,
        out = out.display(),
        ckpt = ckpt.display()
    )
}

fn dedup_job(input: &Path, out: &Path, ckpt: &Path) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: dd}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 200ms, retain: 2, storage: "file://{ckpt}"}}
  pipeline:
    sources:
      - name: events
        file: {{path: "{input}"}}
        eventTime: {{field: ts, maxOutOfOrderness: 2s}}
    operators:
      - {{name: valid, input: events, filter: "e.user != 'bot'"}}
      - {{name: unique, input: valid, dedup: {{key: "e.id", ttl: 1h}}}}
      - name: perUser
        input: unique
        window:
          type: session
          key: e.user
          gap: 30s
          aggregates:
            - {{name: n, op: count}}
            - {{name: total, op: sum, of: e.amount}}
            - {{name: ids, op: distinctCount, of: e.id}}
    sinks:
      - {{name: out, input: unique, file: {{path: "{out}/unique"}}}}
      - {{name: sessions, input: perUser, file: {{path: "{out}/sessions"}}}}
"#,
        input = input.display(),
        out = out.display(),
        ckpt = ckpt.display()
    )
}

/// Two files that carry the same events (as a producer retrying into two partitions would):
/// every duplicate of an id is the same record, so which copy `dedup` keeps does not depend on
/// the order in which the two files' records meet after the exchange.
fn write_dedup_input(dir: &Path) {
    let mut text = String::new();
    for i in 0..60_000i64 {
        let id = i / 3;
        let user = ["ann", "bob", "bot", "cid", "dee"][(id % 5) as usize];
        let ts = 1_700_000_000_000 + id * 150 + (id % 7) * 300;
        text.push_str(&format!(
            "{{\"id\":{id},\"user\":\"{user}\",\"amount\":{},\"ts\":{ts}}}\n",
            id % 100
        ));
    }
    for f in 0..2 {
        write(&dir.join(format!("part-{f}.jsonl")), &text);
    }
}

fn assert_same_output(a: &Path, b: &Path, sub: &str) {
    let expected = committed_lines(&a.join(sub));
    let got = committed_lines(&b.join(sub));
    assert!(
        !expected.is_empty(),
        "baseline produced no output for {sub}"
    );
    assert_eq!(expected.len(), got.len(), "{sub}: record count differs");
    assert!(expected == got, "{sub}: records differ");
}

fn run_twice_with_kill(job: impl Fn(&Path, &Path) -> String, name: &str, kills: usize) {
    let base = tmp();
    let f = base.path().join("job.yaml");
    write(&f, &job(&base.path().join("out"), &base.path().join("ck")));
    run_file_to_end(&f, &base.path().join("st"), &[]);

    let crash = tmp();
    let f2 = crash.path().join("job.yaml");
    let ck = crash.path().join("ck");
    write(&f2, &job(&crash.path().join("out"), &ck));
    let args = [
        "run",
        "-q",
        "-f",
        &p(&f2),
        "--state-dir",
        &p(&crash.path().join("st")),
    ];
    for k in 0..kills {
        let have = completed_checkpoints(&job_root(&ck, name)).len();
        kill_after_checkpoints(&args, &[], &job_root(&ck, name), have.max(k) + 1);
    }
    let stderr = run_to_end(&args, &[]);
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");
    for sub in ["tumbling", "sliding", "unique", "sessions"] {
        if base.path().join("out").join(sub).exists() {
            assert_same_output(&base.path().join("out"), &crash.path().join("out"), sub);
        }
    }
}

#[test]
fn window_pipeline_survives_kill_9() {
    run_twice_with_kill(window_job, "win", 2);
}

#[test]
fn dedup_pipeline_survives_kill_9() {
    let input = tmp();
    write_dedup_input(input.path());
    let dir = input.path().to_path_buf();
    run_twice_with_kill(move |out, ck| dedup_job(&dir, out, ck), "dd", 2);
}

/// `--restore-from X` (an explicit `restore.from`) survives crashes: a run pinned to X that is
/// killed after checkpointing restarts from its own newest checkpoint, not from X again (which
/// would replay input whose output is already committed).
#[test]
fn a_pinned_restore_point_is_not_restored_twice_after_a_crash() {
    let base = tmp();
    let f = base.path().join("job.yaml");
    write(
        &f,
        &window_job(&base.path().join("out"), &base.path().join("ck")),
    );
    run_file_to_end(&f, &base.path().join("st"), &[]);

    let crash = tmp();
    let f2 = crash.path().join("job.yaml");
    let ck = crash.path().join("ck");
    let root = job_root(&ck, "win");
    write(&f2, &window_job(&crash.path().join("out"), &ck));
    let state = p(&crash.path().join("st"));
    let unpinned = ["run", "-q", "-f", &p(&f2), "--state-dir", &state];
    kill_after_checkpoints(&unpinned, &[], &root, 2);
    let pin = *completed_checkpoints(&root).last().unwrap();
    let pin_arg = pin.to_string();
    let pinned = [
        "run",
        "-q",
        "-f",
        &p(&f2),
        "--state-dir",
        &state,
        "--restore-from",
        &pin_arg,
    ];
    // the pinned run checkpoints past the pin, and is killed
    kill_when(&pinned, &[], &root, |ids| ids.last() >= Some(&(pin + 2)));
    assert!(completed_checkpoints(&root).last() > Some(&pin));
    // restarted with the same pin, it continues from its newest checkpoint
    let stderr = run_to_end(&pinned, &[]);
    assert!(
        !stderr.contains(&format!("restored from checkpoint {pin} ")),
        "went back to the pin: {stderr}"
    );
    for sub in ["tumbling", "sliding"] {
        assert_same_output(&base.path().join("out"), &crash.path().join("out"), sub);
    }
}
