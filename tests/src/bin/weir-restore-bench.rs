//! `weir-restore-bench`: on the local test cluster, builds up a large state (dedup over
//! Nexmark events with their padding, RocksDB state, checkpoints every 10 s on a hostPath
//! volume) as fast as the pod can, then slows the generator to a steady rate (a first
//! redeploy, under heavy ingestion), and measures what an upgrade of the running job costs:
//! the final checkpoint (`POST /checkpoint?final=true`, as the operator calls it, mid-stream)
//! and the time from the spec change to the new pod being Ready after its restore. Prints
//! numbers; never fails on speed.
//!
//! ```text
//! source tests/cluster/env.sh
//! WEIR_E2E=1 WEIR_E2E_RUNTIME_BIN=target/release/weir-runtime \
//!   WEIR_E2E_OPERATOR_BIN=target/release/weir-operator \
//!   cargo run -p weir-e2e --bin weir-restore-bench -- [STATE_MIB [STEADY_RATE]]
//! ```

use anyhow::{ensure, Context, Result};
use kube::api::{Patch, PatchParams};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use weir_e2e::*;

const JOB: &str = "bigstate";

/// The job; `rate` None means as fast as the pod can.
fn job(dir: &Path, rate: Option<u64>) -> serde_json::Value {
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
            "checkpoint": {"interval": "10s", "timeout": "120s", "retain": 2, "storage": "file:///state/ckpt"},
            "pipeline": {
                "sources": [{"name": "gen", "generator": {"kind": "nexmark", "rate": rate, "partitions": 1, "seed": 3}}],
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
    let mut args = std::env::args().skip(1);
    let state_mib: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);
    let steady_rate: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
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
    apply_job(&client, &ns, &job(&dir, None)).await?;

    println!("building {state_mib} MiB of checkpointed state: Nexmark events deduplicated by their padding…");
    let built = Instant::now();
    let target = state_mib * 1024 * 1024;
    wait_for(
        "the checkpointed state to reach its size",
        Duration::from_secs(3600),
        || async {
            let st = runtime_pod_status(&client, &ns, &format!("{JOB}-0"))
                .await
                .map_err(|e| e.to_string())?;
            let size = st["lastCheckpoint"]["id"]
                .as_u64()
                .and_then(|id| marker_size(&dir, &ns, id))
                .unwrap_or(0);
            if size >= target {
                Ok(Some(()))
            } else {
                Err(format!("{} MiB", size / 1048576))
            }
        },
    )
    .await?;
    println!("  built in {:.1}s", built.elapsed().as_secs_f64());

    // first redeploy: the generator slows to a steady rate (the spec change restores the state)
    let t = Instant::now();
    patch_spec(
        &client,
        serde_json::json!({"pipeline": job(&dir, Some(steady_rate))["spec"]["pipeline"]}),
        &ns,
    )
    .await?;
    let first = wait_restored(&client, &ns, 1).await?;
    println!(
        "redeploy under full-speed ingestion → Ready after restoring checkpoint {}: {:.2}s",
        first["checkpointId"],
        t.elapsed().as_secs_f64()
    );
    // one periodic checkpoint at the steady rate, so the final one covers ≤ 10 s of input
    let after = checkpoint_id(&client, &ns).await?;
    wait_for(
        "a periodic checkpoint at the steady rate",
        Duration::from_secs(300),
        || async {
            let id = checkpoint_id(&client, &ns)
                .await
                .map_err(|e| e.to_string())?;
            if id > after {
                Ok(Some(()))
            } else {
                Err(format!("{id}"))
            }
        },
    )
    .await?;

    // the final checkpoint mid-stream, timed as the operator sees it
    let before = checkpoint_id(&client, &ns).await?;
    let t = Instant::now();
    let reply = post_final_checkpoint(&client, &ns).await?;
    let final_s = t.elapsed().as_secs_f64();
    let final_id = serde_json::from_str::<serde_json::Value>(http_body(&reply))?["checkpointId"]
        .as_u64()
        .with_context(|| format!("final checkpoint reply: {reply}"))?;
    let size = marker_size(&dir, &ns, final_id).unwrap_or(0);
    println!(
        "final checkpoint {final_id} (previous {before}) at {steady_rate} events/s: {final_s:.2}s, state {:.1} MiB",
        size as f64 / 1048576.0
    );

    // upgrade: spec change → new pod Ready after its restore
    let t = Instant::now();
    patch_spec(
        &client,
        serde_json::json!({"checkpoint": {"interval": "30s"}}),
        &ns,
    )
    .await?;
    let restored = wait_restored(&client, &ns, 2).await?;
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

async fn patch_spec(client: &kube::Client, spec: serde_json::Value, ns: &str) -> Result<()> {
    stream_jobs(client, ns)
        .patch(
            JOB,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await?;
    Ok(())
}

/// The id of the pod's last completed checkpoint (0 before the first).
async fn checkpoint_id(client: &kube::Client, ns: &str) -> Result<u64> {
    let st = runtime_pod_status(client, ns, &format!("{JOB}-0")).await?;
    Ok(st["lastCheckpoint"]["id"].as_u64().unwrap_or(0))
}

/// Waits until the job is Running with its `n`-th upgrade restore confirmed; returns it.
async fn wait_restored(client: &kube::Client, ns: &str, n: usize) -> Result<serde_json::Value> {
    wait_for(
        "the new pod restored and Ready",
        Duration::from_secs(900),
        || async {
            let st = job_status(client, ns, JOB).await?;
            let upgrades: Vec<serde_json::Value> = st["restores"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter(|r| r["reason"] == "upgrade")
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            match upgrades.get(n - 1) {
                Some(r) if st["phase"] == "Running" && r["confirmed"] == true => {
                    Ok(Some(r.clone()))
                }
                _ => Err(st["phase"].to_string()),
            }
        },
    )
    .await
}
