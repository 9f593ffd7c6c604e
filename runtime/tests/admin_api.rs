//! The admin API in local mode: metrics, readiness, status, and a final checkpoint on request.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

mod common;
use common::*;
use std::net::TcpStream;
use std::time::{Duration, Instant};

#[test]
fn metrics_status_and_final_checkpoint() {
    let dir = tmp();
    let ck = dir.path().join("ck");
    let out = dir.path().join("out");
    let f = dir.path().join("job.yaml");
    write(
        &f,
        &format!(
            r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {{name: adm}}
spec:
  image: weir-runtime:dev
  checkpoint: {{interval: 1h, storage: "file://{ck}"}}
  pipeline:
    sources:
      - name: gen
        generator: {{kind: nexmark, rate: 2000, partitions: 2}}
    operators:
      - {{name: w, input: gen, window: {{type: tumbling, size: 1s, aggregates: [{{name: n, op: count}}]}}}}
    sinks:
      - {{name: out, input: gen, file: {{path: "{out}"}}}}
"#,
            ck = ck.display(),
            out = out.display()
        ),
    );
    let port = free_port();
    let child = spawn(
        &[
            "run",
            "-q",
            "-f",
            &p(&f),
            "--state-dir",
            &p(&dir.path().join("st")),
            "--admin-port",
            &port.to_string(),
        ],
        &[],
    );
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "admin port never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _) = http(port, "GET", "/healthz");
    assert_eq!(code, 200);
    while http(port, "GET", "/readyz").0 != 200 {
        assert!(start.elapsed() < Duration::from_secs(30), "never ready");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (code, metrics) = http(port, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        metrics.contains("weir_task_records_in_total{job=\"adm\",task=\"0\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_task_latency_seconds_bucket"),
        "{metrics}"
    );
    // a generator's lag is its delay behind schedule; its 2023 event time is no lag
    assert!(
        metrics.contains("weir_task_input_delay_ms{job=\"adm\",task=\"0\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("weir_task_event_time_lag_ms{"),
        "{metrics}"
    );
    let (code, status) = http(port, "GET", "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["phase"], "Running");
    assert_eq!(status["tasks"].as_array().map(|a| a.len()), Some(2));
    assert_eq!(status["restoredFrom"], serde_json::Value::Null);
    assert_eq!(status["restore"]["checkpointId"], serde_json::Value::Null);

    // the interval is 1h, so this checkpoint exists only because we asked for it
    let (code, body) = http(port, "POST", "/checkpoint?final=true");
    assert_eq!(code, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["checkpointId"], 1);
    assert_eq!(body["succeeded"], true);
    let out_proc = wait_with_timeout(child, Duration::from_secs(60));
    assert!(out_proc.status.success());
    assert_eq!(completed_checkpoints(&job_root(&ck, "adm")), vec![1]);
    assert!(
        !committed_lines(&out).is_empty(),
        "the final checkpoint committed output"
    );

    // restart next to an attempt that never completed: /status says what was restored and skipped
    std::fs::create_dir_all(job_root(&ck, "adm").join("chk-2/task-0")).unwrap();
    let port = free_port();
    let child = spawn(
        &[
            "run",
            "-q",
            "-f",
            &p(&f),
            "--state-dir",
            &p(&dir.path().join("st")),
            "--admin-port",
            &port.to_string(),
        ],
        &[],
    );
    let start = Instant::now();
    let status = loop {
        assert!(start.elapsed() < Duration::from_secs(30), "never ready");
        if TcpStream::connect(("127.0.0.1", port)).is_ok() && http(port, "GET", "/readyz").0 == 200
        {
            break http(port, "GET", "/status").1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["restoredFrom"], 1, "{status}");
    let restore = &status["restore"];
    assert_eq!(restore["checkpointId"], 1, "{status}");
    assert!(
        restore["path"]
            .as_str()
            .unwrap()
            .ends_with("/local/adm/chk-1"),
        "{status}"
    );
    assert!(restore["completedAt"].is_string(), "{status}");
    assert_eq!(restore["skipped"][0]["checkpointId"], 2, "{status}");
    assert!(
        restore["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no _COMPLETED marker"),
        "{status}"
    );
    let (code, body) = http(port, "POST", "/checkpoint?final=true");
    assert_eq!(code, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["succeeded"], true, "{body}");
    assert!(body["checkpointId"].as_u64().unwrap() > 2, "{body}");
    assert!(wait_with_timeout(child, Duration::from_secs(60))
        .status
        .success());
}
