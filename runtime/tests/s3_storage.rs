//! Checkpoints on a real S3-protocol server (`s3s-fs`): kill -9 mid-run, restart, same output.
//!
//! Skips (loudly) when `s3s-fs` is not installed; install it with
//! `cargo install --root ~/.cache/weir/cargo s3s-fs@0.14.1 --features binary --locked`.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

#[test]
fn s3_checkpoints_survive_kill_9() {
    let Some(server_bin) = s3s_fs() else {
        eprintln!("\n\n!!!!!!!! SKIPPING s3_checkpoints_survive_kill_9: s3s-fs not found on PATH or in ~/.cache/weir/cargo/bin !!!!!!!!\n!!!!!!!! install: cargo install --root ~/.cache/weir/cargo s3s-fs@0.14.1 --features binary --locked !!!!!!!!\n\n");
        return;
    };
    let dir = tmp();
    let data = dir.path().join("s3data");
    std::fs::create_dir_all(data.join("ckpts")).unwrap(); // the bucket
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Server(
        Command::new(server_bin)
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
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "s3s-fs did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let envs = [
        ("AWS_ACCESS_KEY_ID", "AKTEST"),
        ("AWS_SECRET_ACCESS_KEY", "SKTEST"),
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_REGION", "us-east-1"),
    ];
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
    run_to_end(
        &[
            "run",
            "-q",
            "-f",
            &p(&f),
            "--state-dir",
            &p(&dir.path().join("st1")),
        ],
        &envs,
    );

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
