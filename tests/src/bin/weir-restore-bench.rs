//! `weir-restore-bench`: on the local test cluster, builds up a large state (dedup over
//! Nexmark events with their padding, RocksDB state, checkpoints on a hostPath volume), then
//! measures what an upgrade costs: the final checkpoint (`POST /checkpoint?final=true`, as the
//! operator calls it) and the time from the spec change to the new pod being Ready after its
//! restore. Prints numbers; never fails on speed.
//!
//! ```text
//! source tests/cluster/env.sh
//! WEIR_E2E=1 WEIR_E2E_RUNTIME_BIN=target/release/weir-runtime \
//!   WEIR_E2E_OPERATOR_BIN=target/release/weir-operator \
//!   cargo run -p weir-e2e --bin weir-restore-bench -- [EVENTS]
//! ```

use anyhow::{ensure, Context, Result};
use kube::api::{Patch, PatchParams};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weir_e2e::*;

const JOB: &str = "bigstate";

fn job(dir: &Path, events: u64) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": JOB},
        "spec": {
            "image": runtime_image(),
            "imagePullPolicy": "Never",
            "parallelism": 1,
            "podTemplate": {
                "volumes": [{"name": "state", "hostPath": {"path": dir.display().to_string(), "type": "DirectoryOrCreate"}}],
                "volumeMounts": [{"name": "state", "mountPath": "/state"}]
            },
            "checkpoint": {"interval": "20s", "timeout": "120s", "retain": 2, "storage": "file:///state/ckpt"},
            "pipeline": {
                "sources": [{"name": "gen", "generator": {"kind": "nexmark", "count": events, "partitions": 1, "seed": 3}}],
                "operators": [{"name": "d", "input": "gen", "dedup": {"key": "e.type + ':' + e.extra", "ttl": "24h"}}],
                "sinks": [{"name": "out", "input": "d", "stdout": {}}]
            }
        }
    })
}

async fn post_final_checkpoint(client: &kube::Client, ns: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ip = pod_ip(client, ns, &format!("{JOB}-0")).await?;
    let mut s = tokio::net::TcpStream::connect((ip.as_str(), 8081)).await?;
    s.write_all(
        format!("POST /checkpoint?final=true HTTP/1.1\r\nHost: {ip}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

fn marker_size(dir: &Path, ns: &str, id: u64) -> Option<u64> {
    let text =
        std::fs::read_to_string(dir.join(format!("ckpt/{ns}/{JOB}/chk-{id}/_COMPLETED"))).ok()?;
    serde_json::from_str::<serde_json::Value>(&text).ok()?["totalSizeBytes"].as_u64()
}

#[tokio::main]
async fn main() -> Result<()> {
    let events: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(8_000_000);
    ensure!(
        enabled("restore-bench"),
        "set WEIR_E2E=1 and bring the cluster up first"
    );
    let client = client().await?;
    shared_operator(&client).await?;
    let ns = TestNamespace::create(&client, "restore-bench").await?;
    let ns = ns.name.clone();
    let dir = PathBuf::from(format!("/tmp/weir-e2e-state/{ns}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    apply_job(&client, &ns, &job(&dir, events)).await?;

    println!("building state: {events} Nexmark events deduplicated by their padding…");
    let built = Instant::now();
    let status = wait_for(
        "the input to be consumed",
        Duration::from_secs(1800),
        || async {
            let st = runtime_pod_status(&client, &ns, &format!("{JOB}-0"))
                .await
                .map_err(|e| e.to_string())?;
            let done = st["tasks"].as_array().is_some_and(|t| {
                !t.is_empty()
                    && t.iter()
                        .all(|t| t["finished"] == true || t["recordsIn"].as_u64() >= Some(events))
            });
            if done {
                Ok(Some(st))
            } else {
                Err(format!("{}", st["tasks"]))
            }
        },
    )
    .await?;
    println!("  consumed in {:.1}s", built.elapsed().as_secs_f64());
    let before = status["lastCheckpoint"]["id"].as_u64();

    // the final checkpoint, timed as the operator sees it
    let t = Instant::now();
    let reply = post_final_checkpoint(&client, &ns).await?;
    let final_s = t.elapsed().as_secs_f64();
    let final_id = serde_json::from_str::<serde_json::Value>(http_body(&reply))?["checkpointId"]
        .as_u64()
        .with_context(|| format!("final checkpoint reply: {reply}"))?;
    let size = marker_size(&dir, &ns, final_id).unwrap_or(0);
    println!(
        "final checkpoint {final_id} (previous {before:?}): {final_s:.2}s, state {:.1} MiB",
        size as f64 / 1048576.0
    );

    // upgrade: spec change → new pod Ready after its restore
    let t = Instant::now();
    stream_jobs(&client, &ns)
        .patch(
            JOB,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"checkpoint": {"interval": "30s"}}})),
        )
        .await?;
    let restored = wait_for(
        "the new pod restored and Ready",
        Duration::from_secs(900),
        || async {
            let st = job_status(&client, &ns, JOB).await?;
            let r = st["restores"]
                .as_array()
                .and_then(|r| r.last().cloned())
                .unwrap_or_default();
            if st["phase"] == "Running" && r["confirmed"] == true && r["reason"] == "upgrade" {
                Ok(Some(r))
            } else {
                Err(st["phase"].to_string())
            }
        },
    )
    .await?;
    let ready_s = t.elapsed().as_secs_f64();
    println!(
        "redeploy → Ready after restoring checkpoint {}: {ready_s:.2}s",
        restored["checkpointId"]
    );
    println!(
        "| state (MiB) | final checkpoint (s) | spec change → Ready (s) |\n|---|---|---|\n| {:.0} | {final_s:.2} | {ready_s:.2} |",
        size as f64 / 1048576.0
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
