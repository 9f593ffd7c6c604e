//! Restores on the real cluster: a stateful window job with checkpoints and the exactly-once
//! file sink on a hostPath volume (this machine is the node) is upgraded, crashed, suspended
//! and resumed, has its newest checkpoint corrupted, or has no restorable checkpoint. The
//! committed output is compared with an uninterrupted local run of the same deterministic
//! pipeline: no loss, no duplicates.

use anyhow::{bail, ensure, Context, Result};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::Client;
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir_e2e::*;

const EVENTS: u64 = 60_000;
const RATE: u64 = 1_200;
const SEED: u64 = 5;

async fn setup(test: &str) -> Result<Option<(Client, TestNamespace, PathBuf)>> {
    if !enabled(test) {
        return Ok(None);
    }
    let client = client().await?;
    shared_operator(&client).await?;
    let ns = TestNamespace::create(&client, test).await?;
    let dir = PathBuf::from(format!("/tmp/weir-e2e-state/{}", ns.name));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(Some((client, ns, dir)))
}

fn pipeline() -> serde_json::Value {
    serde_json::json!({
        "sources": [{"name": "gen", "generator": {
            "kind": "nexmark", "count": EVENTS, "rate": RATE, "partitions": 2, "seed": SEED}}],
        "operators": [{"name": "w", "input": "gen", "window": {
            "type": "tumbling", "size": "500ms", "aggregates": [{"name": "n", "op": "count"}]}}],
        "sinks": [{"name": "out", "input": "w", "file": {"path": "/state/out"}}]
    })
}

/// The window job, its state and output on hostPath `dir` mounted at /state.
fn stateful_job(name: &str, dir: &Path) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": name},
        "spec": {
            "image": runtime_image(),
            "imagePullPolicy": "Never",
            "parallelism": 1,
            "podTemplate": {
                "env": [{"name": "RUST_LOG", "value": "info"}],
                "volumes": [{"name": "state", "hostPath": {"path": dir.display().to_string(), "type": "DirectoryOrCreate"}}],
                "volumeMounts": [{"name": "state", "mountPath": "/state"}]
            },
            "checkpoint": {"interval": "2s", "retain": 5, "storage": "file:///state/ckpt"},
            "pipeline": pipeline()
        }
    })
}

fn runtime_bin() -> PathBuf {
    std::env::var("WEIR_E2E_RUNTIME_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/release/weir-runtime"))
}

/// Runs the same pipeline locally, uninterrupted; returns its committed output, sorted.
fn expected_output(dir: &Path) -> Result<Vec<String>> {
    let local = dir.join("expected");
    std::fs::create_dir_all(&local)?;
    let mut job = stateful_job("expected", dir);
    job["spec"]["pipeline"]["sinks"][0]["file"]["path"] =
        serde_json::json!(local.join("out").display().to_string());
    let manifest = local.join("job.yaml");
    std::fs::write(&manifest, serde_json::to_string_pretty(&job)?)?;
    let out = std::process::Command::new(runtime_bin())
        .args(["run", "-q", "-f"])
        .arg(&manifest)
        .arg("--state-dir")
        .arg(local.join("state"))
        .arg("--checkpoint-dir")
        .arg(local.join("ckpt"))
        .output()
        .context("running the runtime locally")?;
    ensure!(
        out.status.success(),
        "local run failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = committed_lines(&local.join("out"))?;
    ensure!(!lines.is_empty(), "the local run produced nothing");
    Ok(lines)
}

/// Committed output lines (files `part-*.jsonl`), sorted.
fn committed_lines(out: &Path) -> Result<Vec<String>> {
    let mut lines = vec![];
    if !out.exists() {
        return Ok(lines);
    }
    for entry in std::fs::read_dir(out)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("part-") && name.ends_with(".jsonl") {
            let text = std::fs::read_to_string(entry.path())?;
            lines.extend(text.lines().map(str::to_string));
        }
    }
    lines.sort();
    Ok(lines)
}

/// Waits until the committed output has as many lines as `expected`, then compares.
async fn assert_exactly_once(dir: &Path, expected: &[String]) -> Result<()> {
    let out = dir.join("out");
    let got = wait_for(
        "the job's committed output to be complete",
        Duration::from_secs(180),
        || async {
            let lines = committed_lines(&out).map_err(|e| e.to_string())?;
            if lines.len() >= expected.len() {
                Ok(Some(lines))
            } else {
                Err(format!("{} of {} lines", lines.len(), expected.len()))
            }
        },
    )
    .await?;
    // a little longer: duplicates would show up as extra lines
    tokio::time::sleep(Duration::from_secs(3)).await;
    let got_now = committed_lines(&out)?;
    ensure!(
        got == got_now || got_now.len() == got.len(),
        "output still changing"
    );
    let missing = expected.iter().filter(|l| !got_now.contains(l)).count();
    ensure!(
        got_now == expected,
        "output differs from the uninterrupted run: {} lines vs {} expected, {missing} expected lines missing",
        got_now.len(),
        expected.len()
    );
    Ok(())
}

async fn status_where(
    client: &Client,
    ns: &str,
    job: &str,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value> {
    wait_for(what, Duration::from_secs(120), || async {
        let status = job_status(client, ns, job).await?;
        if pred(&status) {
            Ok(Some(status))
        } else {
            Err(status.to_string())
        }
    })
    .await
}

fn latest_checkpoint(status: &serde_json::Value) -> Option<u64> {
    status["checkpoint"]["latestId"].as_u64()
}

fn last_restore(status: &serde_json::Value) -> serde_json::Value {
    status["restores"]
        .as_array()
        .and_then(|r| r.last().cloned())
        .unwrap_or_default()
}

/// Completed checkpoint ids in the job's storage on the node.
fn completed_checkpoints(storage_root: &Path, ns: &str, job: &str) -> Vec<u64> {
    let root = storage_root.join(format!("{ns}/{job}"));
    let mut ids: Vec<u64> = std::fs::read_dir(&root)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().join("_COMPLETED").exists())
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("chk-")
                        .and_then(|i| i.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

/// Waits until the job is Running and has completed a checkpoint; returns the newest id.
async fn running_with_checkpoint(
    client: &Client,
    ns: &str,
    job: &str,
    storage_root: &Path,
) -> Result<u64> {
    status_where(client, ns, job, "phase Running", |s| {
        s["phase"] == "Running"
    })
    .await?;
    wait_for(
        "a completed checkpoint in storage",
        Duration::from_secs(60),
        || async {
            match completed_checkpoints(storage_root, ns, job).last() {
                Some(id) => Ok(Some(*id)),
                None => Err("none yet".to_string()),
            }
        },
    )
    .await
}

/// Force-deletes the job's pod mid-stream and checks that the replacement restores a
/// checkpoint at least as new as `seen` (the runtime picks the newest complete one).
async fn crash_and_check_restore(client: &Client, ns: &str, seen: u64) -> Result<()> {
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
        .delete(
            "win-0",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await?;
    let restored = wait_for(
        "the replacement pod to report its restore",
        Duration::from_secs(120),
        || async {
            let st = runtime_pod_status(client, ns, "win-0")
                .await
                .map_err(|e| e.to_string())?;
            match st["restoredFrom"].as_u64() {
                Some(id) if st["phase"] != "Restoring" => Ok(Some(id)),
                _ => Err(st.to_string()),
            }
        },
    )
    .await?;
    ensure!(
        restored >= seen,
        "restored {restored}, but checkpoint {seen} had completed before the crash"
    );
    Ok(())
}

async fn merge_spec(client: &Client, ns: &str, job: &str, spec: serde_json::Value) -> Result<()> {
    stream_jobs(client, ns)
        .patch(
            job,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await?;
    Ok(())
}

fn spawn_expected(dir: &Path) -> tokio::task::JoinHandle<Result<Vec<String>>> {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || expected_output(&dir))
}

#[tokio::test]
async fn upgrade_mid_stream_restores_the_final_checkpoint_exactly_once() -> Result<()> {
    let Some((client, ns, dir)) = setup("upgrade-state").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    let expected = spawn_expected(&dir);
    apply_job(&client, ns, &stateful_job("win", &dir)).await?;
    running_with_checkpoint(&client, ns, "win", &dir.join("ckpt")).await?;
    let before = job_status(&client, ns, "win")
        .await
        .map_err(anyhow::Error::msg)?;
    let old_revision = before["revision"].as_str().unwrap_or_default().to_string();

    // a spec change mid-stream: a new revision, which also keeps only the newest checkpoint
    merge_spec(
        &client,
        ns,
        "win",
        serde_json::json!({"checkpoint": {"interval": "1s", "retain": 1}}),
    )
    .await?;
    let status = status_where(
        &client,
        ns,
        "win",
        "an upgrade restore confirmed by the pods",
        |s| {
            let r = last_restore(s);
            s["revision"] != old_revision.as_str()
                && r["reason"] == "upgrade"
                && r["checkpointId"].is_u64()
                && r["confirmed"] == true
        },
    )
    .await?;
    let restore = last_restore(&status);
    ensure!(
        restore["path"]
            .as_str()
            .is_some_and(|p| p.ends_with(&format!("chk-{}", restore["checkpointId"]))),
        "restore record names the checkpoint path: {restore}"
    );
    wait_event(&client, ns, "win", "Normal", "FinalCheckpoint").await?;

    // retention (retain 1) never deletes the checkpoint the running revision restored from
    let pinned = restore["checkpointId"].as_u64().unwrap_or_default();
    let storage = dir.join("ckpt");
    let ids = wait_for(
        "three checkpoints of the new revision",
        Duration::from_secs(60),
        || async {
            let ids = completed_checkpoints(&storage, ns, "win");
            match ids.last() {
                Some(newest) if *newest >= pinned + 3 => Ok(Some(ids)),
                _ => Err(format!("{ids:?}")),
            }
        },
    )
    .await?;
    ensure!(
        ids.contains(&pinned),
        "restore point chk-{pinned} was deleted by retention: {ids:?}"
    );
    ensure!(
        !ids.contains(&(pinned + 1)),
        "retain 1 deletes unpinned older checkpoints (retention runs as each completes): {ids:?}"
    );
    assert_exactly_once(&dir, &expected.await??).await
}

#[tokio::test]
async fn a_crashed_pod_restores_the_latest_checkpoint_exactly_once() -> Result<()> {
    let Some((client, ns, dir)) = setup("crash").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    let expected = spawn_expected(&dir);
    apply_job(&client, ns, &stateful_job("win", &dir)).await?;
    let seen = running_with_checkpoint(&client, ns, "win", &dir.join("ckpt")).await?;
    crash_and_check_restore(&client, ns, seen).await?;
    assert_exactly_once(&dir, &expected.await??).await
}

#[tokio::test]
async fn suspend_and_resume_keep_state_and_a_corrupt_newest_checkpoint_is_walked_past() -> Result<()>
{
    let Some((client, ns, dir)) = setup("suspend-state").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    let expected = spawn_expected(&dir);
    apply_job(&client, ns, &stateful_job("win", &dir)).await?;
    running_with_checkpoint(&client, ns, "win", &dir.join("ckpt")).await?;

    // suspend: final checkpoint, then no pods
    merge_spec(
        &client,
        ns,
        "win",
        serde_json::json!({"state": "suspended"}),
    )
    .await?;
    let suspended = status_where(&client, ns, "win", "Suspended", |s| {
        s["phase"] == "Suspended"
    })
    .await?;
    let final_id = latest_checkpoint(&suspended).context("no final checkpoint in status")?;
    wait_event(&client, ns, "win", "Normal", "FinalCheckpoint").await?;

    // resume: restores the final checkpoint
    merge_spec(&client, ns, "win", serde_json::json!({"state": "running"})).await?;
    let resumed = status_where(&client, ns, "win", "resumed and confirmed", |s| {
        let r = last_restore(s);
        s["phase"] == "Running" && r["reason"] == "resume" && r["confirmed"] == true
    })
    .await?;
    ensure!(
        last_restore(&resumed)["checkpointId"].as_u64() == Some(final_id),
        "resume restored {} not the final checkpoint {final_id}",
        last_restore(&resumed)
    );

    // suspend again, corrupt the newest checkpoint, resume: the previous one is used, with a warning
    merge_spec(
        &client,
        ns,
        "win",
        serde_json::json!({"state": "suspended"}),
    )
    .await?;
    let suspended = status_where(&client, ns, "win", "Suspended again", |s| {
        s["phase"] == "Suspended" && latest_checkpoint(s).is_some_and(|c| c > final_id)
    })
    .await?;
    let newest = latest_checkpoint(&suspended).context("no checkpoint")?;
    corrupt_checkpoint(&dir.join(format!("ckpt/{ns}/win/chk-{newest}")))?;
    merge_spec(&client, ns, "win", serde_json::json!({"state": "running"})).await?;
    let note = wait_event(&client, ns, "win", "Warning", "RestoredFromOlderCheckpoint").await?;
    let status = status_where(&client, ns, "win", "the walk-back recorded", |s| {
        last_restore(s)["confirmed"] == true && last_restore(s)["reason"] == "fallback"
    })
    .await?;
    let used = last_restore(&status)["checkpointId"]
        .as_u64()
        .context("no checkpoint used")?;
    ensure!(
        used < newest,
        "restored {used}, expected one older than the corrupt {newest}; {note}"
    );
    assert_exactly_once(&dir, &expected.await??).await
}

/// Overwrites every file of a checkpoint (but its completion marker) with garbage of the
/// same size.
fn corrupt_checkpoint(chk: &Path) -> Result<()> {
    fn walk(dir: &Path, n: &mut usize) -> Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, n)?;
            } else if path.file_name().is_some_and(|f| f != "_COMPLETED") {
                let len = std::fs::metadata(&path)?.len();
                std::fs::write(&path, vec![b'#'; usize::try_from(len.max(1))?])?;
                *n += 1;
            }
        }
        Ok(())
    }
    let mut n = 0;
    walk(chk, &mut n)?;
    if n == 0 {
        bail!("no files in {}", chk.display());
    }
    Ok(())
}

#[tokio::test]
async fn no_restorable_checkpoint_fails_the_job_until_allowed() -> Result<()> {
    let Some((client, ns, dir)) = setup("no-checkpoint").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    apply_job(&client, ns, &stateful_job("win", &dir)).await?;
    running_with_checkpoint(&client, ns, "win", &dir.join("ckpt")).await?;
    merge_spec(
        &client,
        ns,
        "win",
        serde_json::json!({"state": "suspended"}),
    )
    .await?;
    status_where(&client, ns, "win", "Suspended", |s| {
        s["phase"] == "Suspended"
    })
    .await?;

    // every checkpoint is now too old
    tokio::time::sleep(Duration::from_secs(3)).await;
    merge_spec(
        &client,
        ns,
        "win",
        serde_json::json!({"state": "running", "restore": {"maxAge": "1s"}}),
    )
    .await?;
    let failed = status_where(&client, ns, "win", "phase Failed", |s| {
        s["phase"] == "Failed"
    })
    .await?;
    let message = failed["message"].as_str().unwrap_or_default();
    ensure!(
        message.contains("refusing to start without state")
            && message.contains("allowNonRestoredState"),
        "the message says what was looked at and how to proceed: {message}"
    );
    wait_event(&client, ns, "win", "Warning", "NoRestorableCheckpoint").await?;

    merge_spec(
        &client,
        ns,
        "win",
        serde_json::json!({"restore": {"maxAge": "1s", "allowNonRestoredState": true}}),
    )
    .await?;
    let running = status_where(&client, ns, "win", "Running without state, said so", |s| {
        s["phase"] == "Running" && last_restore(s)["confirmed"] == true
    })
    .await?;
    let restore = last_restore(&running);
    ensure!(
        restore["checkpointId"].is_null()
            && restore["note"]
                .as_str()
                .is_some_and(|n| n.contains("without state")),
        "the restore record says the job started without state: {restore}"
    );
    Ok(())
}

/// `s3s-fs` serving a directory on the node's bridge address, so pods can reach it.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `s3s-fs` on `port` (0: a free one).
fn start_s3s(data: &Path, port: u16) -> Result<S3Server> {
    let bin = std::env::var("HOME")
        .map(|h| PathBuf::from(h).join(".cache/weir/cargo/bin/s3s-fs"))
        .ok()
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("s3s-fs"));
    std::fs::create_dir_all(data.join("ckpts"))?;
    let host = std::env::var("WEIR_NODE_IP").unwrap_or_else(|_| "10.244.77.1".to_string());
    let port = match port {
        0 => std::net::TcpListener::bind((host.as_str(), 0))?
            .local_addr()?
            .port(),
        p => p,
    };
    let child = std::process::Command::new(&bin)
        .args(["--host", &host, "--port", &port.to_string()])
        .args(["--access-key", "AKE2E", "--secret-key", "SKE2E"])
        .arg(data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let server = S3Server {
        child,
        endpoint: format!("http://{host}:{port}"),
    };
    let start = std::time::Instant::now();
    while std::net::TcpStream::connect((host.as_str(), port)).is_err() {
        ensure!(
            start.elapsed() < Duration::from_secs(20),
            "s3s-fs did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(server)
}

#[tokio::test]
async fn s3_checkpoints_survive_a_crash_a_missing_secret_and_a_storage_outage() -> Result<()> {
    let Some((client, ns, dir)) = setup("s3").await? else {
        return Ok(());
    };
    let ns = &ns.name;
    let s3 = start_s3s(&dir.join("s3"), 0)?;
    let expected = spawn_expected(&dir);
    let mut job = stateful_job("win", &dir);
    job["spec"]["checkpoint"]["storage"] = serde_json::json!("s3://ckpts/weir");
    job["spec"]["checkpoint"]["credentialsSecret"] = serde_json::json!("s3-creds");
    // the job keeps running through a storage outage (below) instead of restarting at once
    job["spec"]["checkpoint"]["tolerableFailures"] = serde_json::json!(1000);
    // slower than the other tests, so that the stream outlasts the crash and the outage
    job["spec"]["pipeline"]["sources"][0]["generator"]["rate"] = serde_json::json!(RATE / 3);
    apply_job(&client, ns, &job).await?;

    // the Secret does not exist yet: reported, nothing deployed
    status_where(&client, ns, "win", "CheckpointStorageReady=False", |s| {
        condition(s, "CheckpointStorageReady")
            .is_some_and(|c| c["status"] == "False" && c["reason"] == "CredentialsMissing")
    })
    .await?;
    let note = wait_event(&client, ns, "win", "Warning", "CredentialsMissing").await?;
    ensure!(
        note.contains("s3-creds"),
        "the event names the Secret: {note}"
    );
    ensure!(
        job_stateful_set(&client, ns, "win")
            .await
            .map_err(anyhow::Error::msg)?
            .is_none(),
        "nothing is deployed without the credentials"
    );

    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "s3-creds"},
        "stringData": {
            "AWS_ACCESS_KEY_ID": "AKE2E",
            "AWS_SECRET_ACCESS_KEY": "SKE2E",
            "AWS_ENDPOINT": s3.endpoint,
            "AWS_REGION": "us-east-1"
        }
    }))?;
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), ns)
        .create(&Default::default(), &secret)
        .await?;

    // checkpoints land in the bucket (s3s-fs keeps objects as files)
    let seen = running_with_checkpoint(&client, ns, "win", &dir.join("s3/ckpts/weir")).await?;
    crash_and_check_restore(&client, ns, seen).await?;

    // the store goes away mid-stream: checkpoints fail as storage failures, the job runs on
    let port: u16 = s3.endpoint.rsplit(':').next().unwrap_or_default().parse()?;
    drop(s3);
    let st = status_where(
        &client,
        ns,
        "win",
        "CheckpointStorageReady=False while running",
        |s| {
            s["phase"] == "Running"
                && condition(s, "CheckpointStorageReady")
                    .is_some_and(|c| c["status"] == "False" && c["reason"] == "StorageUnreachable")
        },
    )
    .await?;
    let message = condition(&st, "CheckpointStorageReady")
        .map(|c| c["message"].to_string())
        .unwrap_or_default();
    ensure!(
        message.contains("checkpoint storage"),
        "the condition names the storage error: {message}"
    );
    wait_event(&client, ns, "win", "Warning", "StorageUnreachable").await?;

    // a crash while it is away: the new pod cannot read its checkpoints and retries with backoff
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
        .delete(
            "win-0",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            },
        )
        .await?;
    let st = status_where(
        &client,
        ns,
        "win",
        "the restarted pod to report unreadable storage",
        |s| {
            condition(s, "CheckpointStorageReady").is_some_and(|c| {
                c["status"] == "False"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("cannot read checkpoint storage"))
            })
        },
    )
    .await?;
    ensure!(
        st["phase"] != "Failed",
        "an outage does not fail the job: {st}"
    );

    // back at the same address: the pod restores the latest checkpoint, nothing was lost
    let _s3 = start_s3s(&dir.join("s3"), port)?;
    wait_for(
        "the job Running with storage Ready again",
        Duration::from_secs(240),
        || async {
            let s = job_status(&client, ns, "win").await?;
            let ready =
                condition(&s, "CheckpointStorageReady").is_some_and(|c| c["status"] == "True");
            if s["phase"] == "Running" && ready {
                Ok(Some(()))
            } else {
                Err(s.to_string())
            }
        },
    )
    .await?;
    assert_exactly_once(&dir, &expected.await??).await?;
    Ok(())
}
