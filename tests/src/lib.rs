//! End-to-end test support: a real cluster from `tests/cluster/up.sh`, the operator installed
//! from the Helm chart with an image built from `target/release/weir-operator`, a namespace
//! per test, and polling helpers that fail with a message saying what was awaited.
//!
//! Suites run only with `WEIR_E2E=1` (CI sets it after `up.sh`); otherwise each test prints
//! "skipped: set WEIR_E2E=1" and returns.

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

pub mod dingtalk;
pub mod smtp_sink;
pub mod webhook;

/// Namespace of the operator release shared by the lifecycle suites.
pub const OPERATOR_NAMESPACE: &str = "weir-e2e";
/// Helm release name of that operator.
pub const OPERATOR_RELEASE: &str = "weir-e2e";
/// Its admin port on the node (it runs with hostNetwork).
pub const OPERATOR_ADMIN_PORT: u16 = 18080;
/// The runtime image StreamJobs use (override with WEIR_E2E_RUNTIME_IMAGE).
pub const DEFAULT_RUNTIME_IMAGE: &str = "docker.io/local/weir-runtime:0.1.0";
/// Field manager the tests apply StreamJobs with.
pub const TEST_MANAGER: &str = "weir-e2e";

/// True when `WEIR_E2E=1`; otherwise prints why the test is skipped.
pub fn enabled(test: &str) -> bool {
    if std::env::var("WEIR_E2E").as_deref() == Ok("1") {
        true
    } else {
        println!("{test}: skipped: set WEIR_E2E=1 (after tests/cluster/up.sh)");
        false
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The runtime image for StreamJobs.
pub fn runtime_image() -> String {
    std::env::var("WEIR_E2E_RUNTIME_IMAGE").unwrap_or_else(|_| DEFAULT_RUNTIME_IMAGE.to_string())
}

/// A client for the cluster in KUBECONFIG; fails clearly if none answers.
pub async fn client() -> Result<Client> {
    let client = Client::try_default().await.context(
        "no Kubernetes client: run `tests/cluster/up.sh` and `source tests/cluster/env.sh` (KUBECONFIG)",
    )?;
    client
        .apiserver_version()
        .await
        .context("the test cluster's apiserver does not answer: is tests/cluster/up.sh running?")?;
    Ok(client)
}

/// Runs a command from the repository root; fails with its output.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `check` every 500 ms until it returns `Some`, or fails after `timeout` saying `what`
/// was awaited and what the last check saw.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, String>>,
{
    let start = Instant::now();
    let mut last = String::from("nothing checked yet");
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(seen) => last = seen,
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Builds (imports) an image from host binaries with tests/cluster/image.sh.
pub fn build_image(name: &str, tag: &str, binary: &Path) -> Result<()> {
    if !binary.exists() {
        bail!(
            "{} is missing: run `cargo build --release -p weir-operator -p weir-runtime` first",
            binary.display()
        );
    }
    let script = repo_root().join("tests/cluster/image.sh");
    run(
        &script.to_string_lossy(),
        &[name, tag, &binary.to_string_lossy()],
    )
    .map(|_| ())
}

/// Tag of the operator image: a hash of the binary, so a rebuilt binary rolls the Deployment.
pub fn binary_tag(binary: &Path) -> Result<String> {
    let bytes = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes))[..12].to_string())
}

/// Applies the StreamJob CRD (server-side, so the current schema is in place).
pub fn apply_crds() -> Result<()> {
    run(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            TEST_MANAGER,
            "-f",
            "crds/streamjob.yaml",
        ],
    )
    .map(|_| ())
}

/// Helm values for an operator release on the test cluster.
pub struct Release<'a> {
    /// Release name.
    pub name: &'a str,
    /// Release namespace.
    pub namespace: &'a str,
    /// Admin port on the node.
    pub admin_port: u16,
    /// Lease name.
    pub lease_name: &'a str,
    /// Namespaces to watch (empty: all).
    pub watch_namespaces: &'a [&'a str],
}

/// The operator image tag (images are built once per test binary).
static IMAGES: OnceCell<String> = OnceCell::const_new();

/// Builds the operator and runtime images once; returns the operator image tag.
pub async fn images() -> Result<String> {
    IMAGES
        .get_or_try_init(|| async {
            let root = repo_root();
            let operator = std::env::var("WEIR_E2E_OPERATOR_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join("target/release/weir-operator"));
            let tag = binary_tag(&operator)?;
            build_image("weir-operator", &tag, &operator)?;
            let runtime = std::env::var("WEIR_E2E_RUNTIME_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|_| root.join("target/release/weir-runtime"));
            if runtime.exists() && std::env::var("WEIR_E2E_RUNTIME_IMAGE").is_err() {
                build_image("weir-runtime", "0.1.0", &runtime)?;
            }
            apply_crds()?;
            Ok(tag)
        })
        .await
        .cloned()
}

/// Installs or upgrades an operator release and waits until its pods are ready.
pub async fn install(client: &Client, release: &Release<'_>) -> Result<()> {
    install_with(client, release, &[]).await
}

/// [`install`] with extra chart values, each passed as `--set-string key=value` (e.g.
/// `("alerting.scrapeInterval", "5s")`).
pub async fn install_with(
    client: &Client,
    release: &Release<'_>,
    values: &[(&str, String)],
) -> Result<()> {
    let tag = images().await?;
    let helm = repo_root().join("tests/cluster/helm.py");
    let watch = format!("watchNamespaces={{{}}}", release.watch_namespaces.join(","));
    let mut args = vec![
        "upgrade",
        release.name,
        "charts/weir",
        "--install",
        "-n",
        release.namespace,
        "--create-namespace",
        "--set",
        "hostNetwork=true",
        "--set-string",
        "apiServerOverride.host=127.0.0.1",
        "--set-string",
        "apiServerOverride.port=6443",
        "--set-string",
    ];
    let tag_value = format!("image.tag={tag}");
    let port_value = format!("adminPort={}", release.admin_port);
    let lease_value = format!("leaderElection.leaseName={}", release.lease_name);
    args.push(&tag_value);
    args.extend(["--set", &port_value, "--set-string", &lease_value]);
    args.extend(["--set", "logLevel=debug"]);
    if !release.watch_namespaces.is_empty() {
        args.extend(["--set", &watch]);
    }
    let extra: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
    for value in &extra {
        args.extend(["--set-string", value]);
    }
    delete_failed_pods(client, release.namespace).await?;
    run(&helm.to_string_lossy(), &args)?;
    wait_operator_ready(client, release.namespace, release.name).await
}

/// Deletes the pods in phase Failed (evicted ones, e.g. under disk pressure) of `namespace`.
/// The operator Deployment rolls out with `Recreate` (it uses the host network), and the
/// Kubernetes 1.20 Deployment controller re-checks such a rollout on a pod deletion only when
/// no pod of the Deployment is left, counting Failed ones: a single evicted pod from an earlier
/// run would hold every later rollout until some unrelated resync.
async fn delete_failed_pods(client: &Client, namespace: &str) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let failed = match pods
        .list(&ListParams::default().fields("status.phase=Failed"))
        .await
    {
        Ok(list) => list.items,
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e).context(format!("listing failed pods in {namespace}")),
    };
    for pod in failed {
        let name = pod.metadata.name.unwrap_or_default();
        match pods.delete(&name, &Default::default()).await {
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Ok(_) => {}
            Err(e) => return Err(e).context(format!("deleting failed pod {namespace}/{name}")),
        }
    }
    Ok(())
}

/// Waits until the release's Deployment (`<release>-operator`; every release name used here
/// contains the chart name, so the chart's fullname is the release name) has all replicas
/// updated and ready.
pub async fn wait_operator_ready(client: &Client, namespace: &str, release: &str) -> Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let name = format!("{release}-operator");
    wait_for(
        &format!("operator Deployment {namespace}/{name} ready"),
        Duration::from_secs(180),
        || async {
            let d = deployments
                .get_opt(&name)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no Deployment yet")?;
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let s = d.status.clone().unwrap_or_default();
            let generation_seen = s.observed_generation >= d.metadata.generation;
            if generation_seen
                && s.updated_replicas == Some(want)
                && s.ready_replicas == Some(want)
                && s.replicas == Some(want)
            {
                Ok(Some(()))
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await
}

static SHARED_OPERATOR: OnceCell<()> = OnceCell::const_new();

/// The namespaces the shared operator watches: `weir-e2e-<suffix>` for these suffixes. It does
/// not watch all namespaces, so it never acts on jobs of suites that install their own release.
pub const SHARED_SUFFIXES: &[&str] = &[
    "deploy",
    "running",
    "upgrade",
    "rescale",
    "suspend",
    "restart",
    "delete",
    "invalid",
    "malformed",
    "kill",
    "upgrade-state",
    "crash",
    "suspend-state",
    "no-checkpoint",
    "s3",
    "restore-bench",
    "deadline",
    "rollback",
];

/// The operator shared by the lifecycle suites (release `weir-e2e`, watching the namespaces of
/// [`SHARED_SUFFIXES`]).
pub async fn shared_operator(client: &Client) -> Result<()> {
    SHARED_OPERATOR
        .get_or_try_init(|| async {
            let namespaces: Vec<String> = SHARED_SUFFIXES
                .iter()
                .map(|s| format!("weir-e2e-{s}"))
                .collect();
            let namespaces: Vec<&str> = namespaces.iter().map(String::as_str).collect();
            install(
                client,
                &Release {
                    name: OPERATOR_RELEASE,
                    namespace: OPERATOR_NAMESPACE,
                    admin_port: OPERATOR_ADMIN_PORT,
                    lease_name: "weir-e2e-leader",
                    watch_namespaces: &namespaces,
                },
            )
            .await
        })
        .await
        .cloned()
}

/// A namespace for one test; deleted (without waiting) when dropped.
pub struct TestNamespace {
    /// Its name.
    pub name: String,
}

impl TestNamespace {
    /// Creates `weir-e2e-<suffix>` afresh and waits for its default ServiceAccount token.
    /// Suites using [`shared_operator`] must use a suffix from [`SHARED_SUFFIXES`].
    pub async fn create(client: &Client, suffix: &str) -> Result<Self> {
        let name = format!("weir-e2e-{suffix}");
        let namespaces: Api<Namespace> = Api::all(client.clone());
        wait_for(
            &format!("old namespace {name} gone"),
            Duration::from_secs(120),
            || async {
                match namespaces.get_opt(&name).await {
                    Ok(None) => Ok(Some(())),
                    Ok(Some(ns)) => {
                        if ns.metadata.deletion_timestamp.is_none() {
                            let _ = namespaces.delete(&name, &Default::default()).await;
                        }
                        Err("still there".into())
                    }
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?;
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}
        }))?;
        namespaces.create(&PostParams::default(), &ns).await?;
        let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(
            &format!("default ServiceAccount token in {name}"),
            Duration::from_secs(60),
            || async {
                match sas.get_opt("default").await {
                    Ok(Some(sa)) if sa.secrets.as_ref().is_some_and(|s| !s.is_empty()) => {
                        Ok(Some(()))
                    }
                    Ok(_) => Err("no token yet".into()),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?;
        Ok(TestNamespace { name })
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var("WEIR_E2E_KEEP_FAILED").is_ok() {
            return;
        }
        let _ = Command::new("kubectl")
            .args(["delete", "namespace", &self.name, "--wait=false"])
            .output();
    }
}

/// The StreamJob API resource.
pub fn stream_jobs(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<weir_crds::StreamJob>(&());
    Api::namespaced_with(client.clone(), namespace, &ar)
}

/// A small valid StreamJob manifest.
pub fn job_manifest(name: &str, parallelism: i32) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "StreamJob",
        "metadata": {"name": name, "labels": {"team": "e2e"}},
        "spec": {
            "image": runtime_image(),
            "imagePullPolicy": "Never",
            "parallelism": parallelism,
            "podTemplate": {
                "labels": {"team": "e2e"},
                "env": [{"name": "RUST_LOG", "value": "info"}],
                // every pod of a job must see the same checkpoint storage (the node's disk)
                "volumes": [{"name": "ckpt", "hostPath": {"path": "/tmp/weir-e2e-checkpoints", "type": "DirectoryOrCreate"}}],
                "volumeMounts": [{"name": "ckpt", "mountPath": "/ckpt"}]
            },
            "checkpoint": {"interval": "2s", "storage": "file:///ckpt"},
            "pipeline": {
                "sources": [{"name": "gen", "generator": {"kind": "nexmark", "rate": 10, "partitions": 4}}],
                "operators": [{"name": "bids", "input": "gen", "filter": "e.type == 'bid'"}],
                "sinks": [{"name": "out", "input": "bids", "stdout": {}}]
            }
        }
    })
}

/// Server-side applies a StreamJob manifest as the test's field manager.
pub async fn apply_job(
    client: &Client,
    namespace: &str,
    manifest: &serde_json::Value,
) -> Result<()> {
    let name = manifest["metadata"]["name"].as_str().unwrap_or_default();
    stream_jobs(client, namespace)
        .patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(manifest),
        )
        .await
        .with_context(|| format!("applying StreamJob {namespace}/{name}"))?;
    Ok(())
}

/// `status` of a StreamJob as JSON (Null if none).
pub async fn job_status(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<serde_json::Value, String> {
    let obj = stream_jobs(client, namespace)
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    Ok(obj.data.get("status").cloned().unwrap_or_default())
}

/// A condition of a status, by type.
pub fn condition<'a>(status: &'a serde_json::Value, type_: &str) -> Option<&'a serde_json::Value> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// The pods of a job.
pub async fn job_pods(client: &Client, namespace: &str, job: &str) -> Result<Vec<Pod>, String> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("weir.dev/job={job}")))
        .await
        .map(|l| l.items)
        .map_err(|e| e.to_string())
}

/// GET `path` from `127.0.0.1:port` (an operator's admin server on hostNetwork).
pub async fn http_get(port: u16, path: &str) -> Result<String> {
    http_get_host("127.0.0.1", port, path).await
}

/// GET `path` from `host:port` (e.g. a pod IP: the tests run on the node); the raw response.
pub async fn http_get_host(host: &str, port: u16, path: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}

/// The IP of pod `namespace/pod`.
pub async fn pod_ip(client: &Client, namespace: &str, pod: &str) -> Result<String> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .get(pod)
        .await?
        .status
        .and_then(|s| s.pod_ip)
        .with_context(|| format!("pod {namespace}/{pod} has no IP"))
}

/// The body of a raw HTTP response.
pub fn http_body(raw: &str) -> &str {
    raw.split_once("\r\n\r\n").map_or(raw, |(_, b)| b).trim()
}

/// `/status` of a runtime pod's admin server (the tests run on the node, so pod IPs are
/// reachable).
pub async fn runtime_pod_status(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> Result<serde_json::Value> {
    let ip = pod_ip(client, namespace, pod).await?;
    let raw = http_get_host(&ip, 8081, "/status").await?;
    serde_json::from_str(http_body(&raw)).with_context(|| format!("status of {pod}: {raw}"))
}

/// Events (events.k8s.io/v1) about object `name` in `namespace`, as (type, reason, note).
pub async fn events_about(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Vec<(String, String, String)>, String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), namespace);
    let list = events
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(list
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect())
}

/// Waits for an event of `type_` and `reason` about `name`; returns its note.
pub async fn wait_event(
    client: &Client,
    namespace: &str,
    name: &str,
    type_: &str,
    reason: &str,
) -> Result<String> {
    wait_for(
        &format!("{type_} event {reason} about {namespace}/{name}"),
        Duration::from_secs(60),
        || async {
            let events = events_about(client, namespace, name).await?;
            match events.iter().find(|(t, r, _)| t == type_ && r == reason) {
                Some((_, _, note)) => Ok(Some(note.clone())),
                None => Err(format!("{events:?}")),
            }
        },
    )
    .await
}

/// The StatefulSet of a job, if any.
pub async fn job_stateful_set(
    client: &Client,
    namespace: &str,
    job: &str,
) -> Result<Option<k8s_openapi::api::apps::v1::StatefulSet>, String> {
    Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(client.clone(), namespace)
        .get_opt(job)
        .await
        .map_err(|e| e.to_string())
}

/// A pod template annotation of a StatefulSet.
pub fn template_annotation(
    sts: &k8s_openapi::api::apps::v1::StatefulSet,
    key: &str,
) -> Option<String> {
    sts.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .cloned()
}

/// A pod annotation.
pub fn pod_annotation(pod: &Pod, key: &str) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(key).cloned()
}

/// Waits until the job has exactly `n` pods, none terminating, all carrying annotation
/// `key` = `value`; returns them.
pub async fn wait_pods(
    client: &Client,
    namespace: &str,
    job: &str,
    n: usize,
    key: &str,
    value: &str,
) -> Result<Vec<Pod>> {
    wait_for(
        &format!("{n} pods of {namespace}/{job} with {key}={value}"),
        Duration::from_secs(120),
        || async {
            let pods = job_pods(client, namespace, job).await?;
            let good = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter(|p| pod_annotation(p, key).as_deref() == Some(value))
                .count();
            if good == n && pods.len() == n {
                Ok(Some(pods))
            } else {
                Err(format!(
                    "{} pods: {:?}",
                    pods.len(),
                    pods.iter()
                        .map(|p| (
                            p.metadata.name.clone(),
                            pod_annotation(p, key),
                            p.metadata.deletion_timestamp.is_some()
                        ))
                        .collect::<Vec<_>>()
                ))
            }
        },
    )
    .await
}

/// Waits until the job's status reports `observedGeneration` = its generation and a revision;
/// returns the status.
pub async fn wait_observed(
    client: &Client,
    namespace: &str,
    job: &str,
) -> Result<serde_json::Value> {
    wait_for(
        &format!("status of {namespace}/{job} observing its generation"),
        Duration::from_secs(90),
        || async {
            let obj = stream_jobs(client, namespace)
                .get(job)
                .await
                .map_err(|e| e.to_string())?;
            let status = obj.data.get("status").cloned().unwrap_or_default();
            if status["observedGeneration"].as_i64() == obj.metadata.generation
                && obj.metadata.generation.is_some()
            {
                Ok(Some(status))
            } else {
                Err(format!("{status}"))
            }
        },
    )
    .await
}
