//! `maxRecordsPerSecond` on a sink: the real binary writes no faster than the limit, the task
//! reports the wait as backpressured (and busy) time on `/metrics`, and it still answers a
//! final checkpoint while blocked. The same job without the limit is the control.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;
use std::collections::HashMap;
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

/// Starts job `name` (one task, a 400 records/s generator, stdout sink with `limit`) and
/// waits until it is ready; returns the process and its admin port.
fn start(dir: &std::path::Path, name: &str, limit: Option<f64>) -> (Child, u16) {
    let f = dir.join(format!("{name}.yaml"));
    let limit = limit
        .map(|l| format!(", maxRecordsPerSecond: {l}"))
        .unwrap_or_default();
    write(
        &f,
        &format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: {name}}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 1h, storage: "file://{ck}"}}
  pipeline:
    sources:
      - name: gen
        generator: {{kind: nexmark, rate: 400, partitions: 1}}
    sinks:
      - {{name: out, input: gen, stdout: {{}}{limit}}}
"#,
            ck = dir.join("ck").display(),
        ),
    );
    let port = free_port();
    let mut child = spawn(
        &[
            "run",
            "-q",
            "-f",
            &p(&f),
            "--state-dir",
            &p(&dir.join(format!("st-{name}"))),
            "--admin-port",
            &port.to_string(),
        ],
        &[],
    );
    let begin = Instant::now();
    while begin.elapsed() < Duration::from_secs(30) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() && http(port, "GET", "/readyz").0 == 200
        {
            return (child, port);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "{name} never ready: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The task-0 counters of `/metrics` (`weir_task_<name>_total`), and when they were read.
fn counters(port: u16) -> (Instant, HashMap<String, f64>) {
    let (code, text) = http(port, "GET", "/metrics");
    assert_eq!(code, 200);
    let at = Instant::now();
    let values = text
        .lines()
        .filter(|l| l.starts_with("weir_task_") && l.contains("task=\"0\""))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let name = series.split('{').next()?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect();
    (at, values)
}

/// Per-second rates of the counters between two reads 3 s apart.
fn rates(port: u16) -> HashMap<String, f64> {
    let (t0, a) = counters(port);
    std::thread::sleep(Duration::from_secs(3));
    let (t1, b) = counters(port);
    let secs = t1.duration_since(t0).as_secs_f64();
    b.iter()
        .map(|(k, v)| (k.clone(), (v - a.get(k).copied().unwrap_or(0.0)) / secs))
        .collect()
}

#[test]
fn a_rate_limited_sink_backpressures_the_task_and_the_control_does_not() {
    let dir = tmp();
    let (limited, lport) = start(dir.path(), "limited", Some(20.0));
    let (free, fport) = start(dir.path(), "free", None);
    // Past the first second (the generator's and the bucket's initial allowance).
    std::thread::sleep(Duration::from_secs(2));
    let l = rates(lport);
    let f = rates(fport);
    let get = |m: &HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(-1.0);

    let out = get(&l, "weir_task_records_out_total");
    assert!(
        out > 10.0 && out <= 26.0,
        "limited to 20/s, wrote {out}/s: {l:?}"
    );
    let bp = get(&l, "weir_task_backpressured_ms_total");
    assert!(
        bp > 700.0,
        "blocked most of each second, got {bp} ms/s: {l:?}"
    );
    assert!(
        get(&l, "weir_task_busy_ms_total") >= bp * 0.95,
        "waiting on the sink counts as busy: {l:?}"
    );

    let free_out = get(&f, "weir_task_records_out_total");
    assert!(
        free_out > 200.0,
        "the control writes at the source rate: {f:?}"
    );
    let free_bp = get(&f, "weir_task_backpressured_ms_total");
    assert!(free_bp < 200.0, "the control is not backpressured: {f:?}");

    // Blocked on its sink, the task still takes a final checkpoint and stops.
    let (code, body) = http(lport, "POST", "/checkpoint?final=true");
    assert_eq!(code, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["succeeded"], true, "{body}");
    assert!(wait_with_timeout(limited, Duration::from_secs(60))
        .status
        .success());
    let (code, _) = http(fport, "POST", "/checkpoint?final=true");
    assert_eq!(code, 200);
    assert!(wait_with_timeout(free, Duration::from_secs(60))
        .status
        .success());
}
