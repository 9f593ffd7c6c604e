//! Checkpoints on a real S3-protocol server (`s3s-fs`): kill -9 mid-run, restart, same output;
//! the server going away mid-run fails checkpoints as storage failures, and they resume when
//! it is back, with nothing lost.
//!
//! Skips (loudly) when `s3s-fs` is not installed; install it with
//! `cargo install --root ~/.cache/weir/cargo s3s-fs@0.14.1 --features binary --locked`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn s3s_fs() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("WEIR_S3S_FS") {
        return Some(PathBuf::from(p));
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("s3s-fs"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/weir/cargo/bin/s3s-fs"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `s3s-fs` serving `data` on 127.0.0.1:`port`, once it accepts connections.
fn start_server(bin: &Path, data: &Path, port: u16) -> Server {
    let server = Server(
        Command::new(bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--access-key",
                "AKTEST",
                "--secret-key",
                "SKTEST",
            ])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    poll("s3s-fs to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    server
}

fn s3_env(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ACCESS_KEY_ID", "AKTEST".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "SKTEST".to_string()),
        ("AWS_ENDPOINT", format!("http://127.0.0.1:{port}")),
        ("AWS_REGION", "us-east-1".to_string()),
    ]
}

macro_rules! require_s3s_fs {
    ($test:literal) => {
        match s3s_fs() {
            Some(bin) => bin,
            None => {
                eprintln!("\n\n!!!!!!!! SKIPPING {}: s3s-fs not found on PATH or in ~/.cache/weir/cargo/bin !!!!!!!!\n!!!!!!!! install: cargo install --root ~/.cache/weir/cargo s3s-fs@0.14.1 --features binary --locked !!!!!!!!\n\n", $test);
                return;
            }
        }
    };
}

#[test]
fn s3_checkpoints_survive_kill_9() {
    let server_bin = require_s3s_fs!("s3_checkpoints_survive_kill_9");
    let dir = tmp();
    let data = dir.path().join("s3data");
    std::fs::create_dir_all(data.join("ckpts")).unwrap(); // the bucket
    let port = free_port();
    let _server = start_server(&server_bin, &data, port);
    let env = s3_env(port);
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let job = |out: &std::path::Path| {
        format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: s3job, namespace: team}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 300ms, retain: 2, storage: "s3://ckpts/weir"}}
  pipeline:
    sources:
      - name: gen
        generator: {{kind: nexmark, count: 12000, rate: 4000, partitions: 2, seed: 11}}
    operators:
      - {{name: w, input: gen, window: {{type: tumbling, size: 500ms, aggregates: [{{name: n, op: count}}]}}}}
    sinks:
      - {{name: out, input: w, file: {{path: "{}"}}}}
"#,
            out.display()
        )
    };
    let base_out = dir.path().join("base-out");
    let f = dir.path().join("base.yaml");
    write(&f, &job(&base_out).replace("s3job", "s3base"));
    run_file_to_end(&f, &dir.path().join("st1"), &envs);

    let out = dir.path().join("out");
    let f2 = dir.path().join("job.yaml");
    write(&f2, &job(&out));
    let args = [
        "run",
        "-q",
        "-f",
        &p(&f2),
        "--state-dir",
        &p(&dir.path().join("st2")),
    ];
    // s3s-fs stores objects as plain files under <root>/<bucket>/<key>
    let root = data.join("ckpts/weir/team/s3job");
    kill_after_checkpoints(&args, &envs, &root, 2);
    let stderr = run_to_end(&args, &envs);
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");
    assert!(stderr.contains("s3://ckpts/weir/team/s3job"), "{stderr}");
    let expected = committed_lines(&base_out);
    assert!(!expected.is_empty());
    assert_eq!(committed_lines(&out), expected);
}

#[test]
fn an_unreachable_store_fails_checkpoints_as_storage_and_loses_nothing() {
    let server_bin =
        require_s3s_fs!("an_unreachable_store_fails_checkpoints_as_storage_and_loses_nothing");
    let dir = tmp();
    let data = dir.path().join("s3data");
    std::fs::create_dir_all(data.join("ckpts")).unwrap();
    let port = free_port();
    let server = start_server(&server_bin, &data, port);
    let env = s3_env(port);
    let envs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let job = |name: &str, out: &Path| {
        format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: {name}, namespace: team}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 300ms, timeout: 5s, retain: 2, tolerableFailures: 1000, storage: "s3://ckpts/weir"}}
  pipeline:
    sources:
      - name: gen
        generator: {{kind: nexmark, count: 30000, rate: 3000, partitions: 2, seed: 12}}
    operators:
      - {{name: w, input: gen, window: {{type: tumbling, size: 500ms, aggregates: [{{name: n, op: count}}]}}}}
    sinks:
      - {{name: out, input: w, file: {{path: "{}"}}}}
"#,
            out.display()
        )
    };
    let base_out = dir.path().join("base-out");
    let f = dir.path().join("base.yaml");
    write(&f, &job("outagebase", &base_out));
    run_file_to_end(&f, &dir.path().join("st1"), &envs);

    let out = dir.path().join("out");
    let f2 = dir.path().join("job.yaml");
    write(&f2, &job("outage", &out));
    let admin = free_port();
    let mut child = spawn(
        &[
            "run",
            "-q",
            "-f",
            &p(&f2),
            "--state-dir",
            &p(&dir.path().join("st2")),
            "--admin-port",
            &admin.to_string(),
        ],
        &envs,
    );
    let before = poll("a completed checkpoint", Duration::from_secs(60), || {
        admin_status(admin)?["lastCheckpoint"]["id"].as_u64()
    });

    drop(server); // the store goes away mid-run
    let failure = poll(
        "a storage checkpoint failure",
        Duration::from_secs(60),
        || {
            let st = admin_status(admin)?;
            let f = st["lastCheckpointFailure"].clone();
            (f["kind"] == "storage" && st["consecutiveCheckpointFailures"].as_u64() > Some(0))
                .then_some(f)
        },
    );
    let reason = failure["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("checkpoint storage"),
        "the failure names the storage: {failure}"
    );
    // The job must not fail while checkpoints do. With a short input it may already have
    // read everything ("Finished") and be waiting for a final checkpoint to commit its output.
    let st = admin_status(admin).unwrap();
    assert!(
        st["phase"] == "Running" || st["phase"] == "Finished",
        "the job keeps running while checkpoints fail: {st}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the process waits for storage instead of exiting: {st}"
    );

    let _server = start_server(&server_bin, &data, port); // back, same address and data
    let after = poll(
        "a checkpoint after the outage",
        Duration::from_secs(60),
        || {
            let st = admin_status(admin)?;
            let id = st["lastCheckpoint"]["id"].as_u64()?;
            (id > failure["id"].as_u64()? && st["lastCheckpointFailure"].is_null()).then_some(id)
        },
    );
    assert!(after > before);
    let output = wait_with_timeout(child, Duration::from_secs(180));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let expected = committed_lines(&base_out);
    assert!(!expected.is_empty());
    assert_eq!(committed_lines(&out), expected, "no loss, no duplicates");
}
