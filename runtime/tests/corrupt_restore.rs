//! A corrupted newest checkpoint is skipped (walking back, saying so on stderr); an in-progress
//! checkpoint (no `_COMPLETED` marker) is never used; with nothing restorable the runtime
//! refuses to start empty unless allowed.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;
use std::path::Path;

fn job(out: &Path, ckpt: &Path, extra: &str) -> String {
    format!(
        r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: cj}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 250ms, retain: 20, storage: "file://{ckpt}"}}
{extra}
  pipeline:
    sources:
      - name: gen
        generator: {{kind: nexmark, count: 8000, rate: 5000, partitions: 1, seed: 3}}
    operators:
      - name: w
        input: gen
        window: {{type: tumbling, size: 1s, aggregates: [{{name: n, op: count}}]}}
    sinks:
      - {{name: out, input: w, file: {{path: "{out}"}}}}
"#,
        out = out.display(),
        ckpt = ckpt.display()
    )
}

#[test]
fn corrupt_newest_checkpoint_walks_back_and_in_progress_is_ignored() {
    let dir = tmp();
    let ck = dir.path().join("ck");
    let out = dir.path().join("out");
    let f = dir.path().join("job.yaml");
    write(&f, &job(&out, &ck, ""));
    let args = [
        "run",
        "-q",
        "-f",
        &p(&f),
        "--state-dir",
        &p(&dir.path().join("st")),
    ];
    run_to_end(&args, &[]);
    let expected = committed_lines(&out);
    let root = job_root(&ck, "cj");
    let ids = completed_checkpoints(&root);
    assert!(ids.len() >= 3, "expected several checkpoints, got {ids:?}");
    let newest = *ids.last().unwrap();

    // corrupt one file of the newest checkpoint (flip bytes, same size)
    let files = root.join(format!("chk-{newest}/task-0/files"));
    let victim = std::fs::read_dir(&files)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST")
        })
        .expect("a MANIFEST file in the checkpoint");
    let mut bytes = std::fs::read(&victim).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();

    // an in-progress checkpoint newer than everything: a manifest but no marker
    let fake = root.join(format!("chk-{}/task-0", newest + 1));
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::copy(
        root.join(format!("chk-{newest}/task-0/manifest.json")),
        fake.join("manifest.json"),
    )
    .unwrap();

    let stderr = run_to_end(&args, &[]);
    assert!(
        stderr.contains(&format!("checkpoint {newest} is unusable")),
        "stderr should say why {newest} was skipped:\n{stderr}"
    );
    assert!(stderr.contains("sha256"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "skipped checkpoint {}: no _COMPLETED marker",
            newest + 1
        )),
        "{stderr}"
    );
    let restored: u64 = stderr
        .split("restored from checkpoint ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("a restore line");
    assert!(
        restored < newest,
        "restored {restored}, newest was {newest}"
    );
    // output of the rolled-back checkpoint was moved aside and produced again: still exactly-once
    assert_eq!(committed_lines(&out), expected);
}

#[test]
fn refuses_to_start_empty_when_nothing_is_restorable() {
    let dir = tmp();
    let ck = dir.path().join("ck");
    let out = dir.path().join("out");
    let f = dir.path().join("job.yaml");
    write(&f, &job(&out, &ck, ""));
    let st = dir.path().join("st");
    let args = ["run", "-q", "-f", &p(&f), "--state-dir", &p(&st)];
    run_to_end(&args, &[]);
    let root = job_root(&ck, "cj");
    // every retained checkpoint loses a file its manifest references
    for id in completed_checkpoints(&root) {
        std::fs::remove_dir_all(root.join(format!("chk-{id}/task-0/files"))).unwrap();
    }
    // Kubernetes creates the termination-message file; the runtime only writes to an existing one
    let termination_log = dir.path().join("termination-log");
    std::fs::write(&termination_log, "").unwrap();
    let out1 = wait_with_timeout(
        spawn(&args, &[("WEIR_TERMINATION_LOG", &p(&termination_log))]),
        std::time::Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out1.stderr);
    assert!(!out1.status.success(), "{stderr}");
    assert!(
        stderr.contains("refusing to start without state"),
        "{stderr}"
    );
    assert!(stderr.contains("is missing"), "{stderr}");
    assert!(stderr.contains("allowNonRestoredState"), "{stderr}");
    let message = std::fs::read_to_string(&termination_log).unwrap();
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains("refusing to start without state") && message.contains("is missing"),
        "{message}"
    );

    // explicitly allowed: starts empty
    write(
        &f,
        &job(&out, &ck, "  restore: {allowNonRestoredState: true}"),
    );
    let stderr = run_to_end(&args, &[]);
    assert!(stderr.contains("starting without state"), "{stderr}");
}
