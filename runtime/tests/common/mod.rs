//! Helpers shared by the end-to-end tests: run the real binary, read committed output.
#![allow(dead_code, clippy::unwrap_used)]

pub mod redis_server;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The runtime binary: `$WEIR_RUNTIME_BIN` when set (e.g. a copy of one build, which other
/// checkouts sharing the target directory cannot overwrite mid-run), else the one cargo built
/// for these tests.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("WEIR_RUNTIME_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_weir-runtime").to_string())
    })
}

pub fn write(path: &Path, text: &str) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

pub fn run_cmd(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Child {
    let mut c = Command::new(bin());
    c.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env("RUST_LOG", "warn");
    for (k, v) in envs {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "process did not finish within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs to completion and asserts success; returns stderr.
pub fn run_to_end(args: &[&str], envs: &[(&str, &str)]) -> String {
    let out = wait_with_timeout(spawn(args, envs), Duration::from_secs(180));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "run failed: {stderr}");
    stderr
}

/// `weir-runtime run -q -f <job_file> --state-dir <state_dir>` to the end (asserting success);
/// returns stderr. The uninterrupted baseline run of most tests.
pub fn run_file_to_end(job_file: &Path, state_dir: &Path, envs: &[(&str, &str)]) -> String {
    run_to_end(
        &[
            "run",
            "-q",
            "-f",
            &p(job_file),
            "--state-dir",
            &p(state_dir),
        ],
        envs,
    )
}

/// Completed checkpoint ids under a job's checkpoint root.
pub fn completed_checkpoints(job_root: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(job_root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let id = name.strip_prefix("chk-")?.parse().ok()?;
                    e.path().join("_COMPLETED").exists().then_some(id)
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Spawns a run, waits until `n` checkpoints completed under `job_root`, then kill -9s it.
/// Panics if the process ends before that (the test would prove nothing).
pub fn kill_after_checkpoints(args: &[&str], envs: &[(&str, &str)], job_root: &Path, n: usize) {
    kill_when(args, envs, job_root, |ids| ids.len() >= n);
}

/// Runs the binary and SIGKILLs it as soon as `done` holds for the completed checkpoint ids
/// under `job_root` (retention deletes old ones, so counts stop growing at `retain`).
pub fn kill_when(
    args: &[&str],
    envs: &[(&str, &str)],
    job_root: &Path,
    done: impl Fn(&[u64]) -> bool,
) {
    let mut child = spawn(args, envs);
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "process ended ({status}) before it could be killed; make the input larger. stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if done(&completed_checkpoints(job_root)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
}

/// Spawns a (re)start of a killed run and waits until the file sink at `out` has committed
/// `want` lines and two more checkpoints completed after that (a late duplicate would show up
/// by then), for at most 180 s; then kills it and returns its stderr. Panics if the process
/// ends first, or if it did not say it restored from a checkpoint.
pub fn restart_until_committed(args: &[&str], out: &Path, job_root: &Path, want: usize) -> String {
    let mut child = spawn(args, &[]);
    let start = Instant::now();
    let last_checkpoint = || completed_checkpoints(job_root).last().copied().unwrap_or(0);
    loop {
        let n = committed_lines(out).len();
        if n >= want {
            let done = last_checkpoint();
            while last_checkpoint() < done + 2 {
                assert!(
                    start.elapsed() < Duration::from_secs(180),
                    "no further checkpoint after {n} records were committed"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let o = child.wait_with_output().unwrap();
            panic!(
                "restarted job ended ({status}): {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "only {n} of {want} records committed after the restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(stderr.contains("restored from checkpoint"), "{stderr}");
    stderr
}

/// All committed output lines (part-*.jsonl) of a file sink directory, sorted.
pub fn committed_lines(dir: &Path) -> Vec<String> {
    let mut lines = vec![];
    let Ok(rd) = std::fs::read_dir(dir) else {
        return lines;
    };
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("part-") && name.ends_with(".jsonl") {
            let text = std::fs::read_to_string(e.path()).unwrap();
            lines.extend(text.lines().map(str::to_string));
        }
    }
    lines.sort();
    lines
}

/// The final state of a changelog sink: per `key` (the aggregate's output field) its last
/// committed record, reading the part files in checkpoint order. Every record of a key is
/// written by the one task that owns the key, so its last record is well defined; the
/// records before it depend on the order in which tasks' records met (as in any engine that
/// shuffles), the last does not.
pub fn final_by_key(dir: &Path) -> std::collections::BTreeMap<String, String> {
    let mut parts: Vec<(u64, u64, PathBuf)> = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(rest) = name
            .strip_prefix("part-")
            .and_then(|r| r.strip_suffix(".jsonl"))
        else {
            continue;
        };
        let mut it = rest.split('-').map(|n| n.parse::<u64>().unwrap_or(0));
        let (task, chk) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        parts.push((chk, task, e.path()));
    }
    parts.sort();
    let mut last = std::collections::BTreeMap::new();
    for (_, _, path) in parts {
        for line in std::fs::read_to_string(path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            last.insert(v["key"].to_string(), line.to_string());
        }
    }
    last
}

pub fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

pub fn p(path: &Path) -> String {
    path.display().to_string()
}

pub fn job_root(ckpt: &Path, job: &str) -> PathBuf {
    ckpt.join("local").join(job)
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP/1.1 request to the admin API on 127.0.0.1:`port`; returns status code and body.
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (code, body)
}

/// `GET /status` as JSON, or `None` while the admin port is not answering.
pub fn admin_status(port: u16) -> Option<serde_json::Value> {
    std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let (code, body) = http(port, "GET", "/status");
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `limit`; panics naming `what`.
pub fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends signal `sig` (e.g. `TERM`) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} failed");
}
