//! Health and alerting against a real cluster: the operator scrapes a running job, writes
//! `status.health` and the Backpressured/Alerting conditions, and delivers webhooks by
//! severity to AlertSubscriptions; breaking one subscription's Secret marks that channel
//! invalid while the other subscription keeps delivering.
//!
//! The runtime has no way to throttle a sink, so alerts are made to fire on purpose:
//! - `severity_routing_and_a_broken_secret` works with any runtime image (also the e2e
//!   stand-in): a job with an invalid spec is `Failed` (`jobFailed`, critical), and a running
//!   job whose `status.restores` records a fallback restore raises `restoreFellBack` (warning).
//! - `health_thresholds_fire_on_a_healthy_job` needs the real runtime's task metrics:
//!   `spec.alerting.rules` overrides set `backpressureHigh` to 0 (backpressure 0 ≥ 0: critical,
//!   and `Backpressured=True`) and `checkpointStale` to 0.0001 × interval (warning once a
//!   checkpoint completed). It is skipped, saying so, when `WEIR_E2E_RUNTIME_IMAGE` is the
//!   stand-in.
//!
//! Each test installs its own operator release (`weir-e2e-op-<test>`) watching only its
//! namespace (admin ports 18090/18091), so it does not restart the shared release other suites use. The webhook
//! receiver listens on 127.0.0.1 in the test process; the operator runs with hostNetwork.

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::Client;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_e2e::*;

/// One received webhook: (path, body).
type Received = Arc<Mutex<Vec<(String, String)>>>;

/// An HTTP receiver on the node (the operator runs with hostNetwork, so it reaches loopback):
/// answers 200 to every POST and records path and body.
async fn start_receiver() -> Result<(u16, Received)> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let port = listener.local_addr()?.port();
    let received: Received = Arc::default();
    let store = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else {
                        continue;
                    };
                    let length = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    if body.len() < length {
                        continue;
                    }
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                    if let Ok(mut r) = store.lock() {
                        r.push((path, body.to_string()));
                    }
                    let _ = stream
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
            });
        }
    });
    Ok((port, received))
}

fn bodies_to(received: &Received, path: &str) -> Vec<String> {
    received
        .lock()
        .map(|r| {
            r.iter()
                .filter(|(p, _)| p == path)
                .map(|(_, b)| b.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn subscriptions(client: &Client, ns: &str) -> Api<DynamicObject> {
    let ar = ApiResource::erase::<weir_crds::alert_subscription::AlertSubscription>(&());
    Api::namespaced_with(client.clone(), ns, &ar)
}

async fn apply(api: &Api<DynamicObject>, value: serde_json::Value) -> Result<()> {
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    api.patch(
        &name,
        &PatchParams::apply(TEST_MANAGER).force(),
        &Patch::Apply(&value),
    )
    .await
    .with_context(|| format!("applying {name}"))?;
    Ok(())
}

async fn apply_secret(
    client: &Client,
    ns: &str,
    name: &str,
    data: serde_json::Value,
) -> Result<()> {
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name},
        "stringData": data,
    });
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::apply(TEST_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await
        .with_context(|| format!("applying Secret {name}"))?;
    Ok(())
}

fn subscription(name: &str, min_severity: &str, secret: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": "AlertSubscription",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"team": "e2e"}},
            "minSeverity": min_severity,
            "repeatInterval": "20s",
            "channels": [{"name": "hook", "webhook": {"urlSecret": {"name": secret, "key": "url"}}}]
        }
    })
}

async fn subscription_condition(
    client: &Client,
    ns: &str,
    name: &str,
    type_: &str,
) -> Result<serde_json::Value, String> {
    let obj = subscriptions(client, ns)
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    let status = obj.data.get("status").cloned().unwrap_or_default();
    condition(&status, type_)
        .cloned()
        .ok_or_else(|| format!("no {type_} condition in {status}"))
}

struct Setup {
    client: Client,
    ns: TestNamespace,
    received: Received,
}

/// CRD, namespace, an operator release watching only that namespace, the webhook receiver,
/// Secrets `critical-hook` and `warning-hook`, and subscriptions `oncall` (critical) and
/// `team` (warning), both Ready.
async fn setup(test: &str, admin_port: u16) -> Result<Option<Setup>> {
    if !enabled(test) {
        return Ok(None);
    }
    let client = client().await?;
    images().await?;
    run(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            TEST_MANAGER,
            "-f",
            "crds/alertsubscription.yaml",
        ],
    )?;
    let ns = TestNamespace::create(&client, test).await?;
    // Its own namespace: the test namespace is deleted at the end, the release is kept.
    let release = format!("weir-e2e-op-{test}");
    install(
        &client,
        &Release {
            name: &release,
            namespace: &release,
            admin_port,
            lease_name: &release,
            watch_namespaces: &[&ns.name],
        },
    )
    .await?;
    let (port, received) = start_receiver().await?;
    for (secret, path) in [("critical-hook", "critical"), ("warning-hook", "warning")] {
        let url = format!("http://127.0.0.1:{port}/{path}");
        apply_secret(&client, &ns.name, secret, serde_json::json!({ "url": url })).await?;
    }
    let subs = subscriptions(&client, &ns.name);
    apply(&subs, subscription("oncall", "critical", "critical-hook")).await?;
    apply(&subs, subscription("team", "warning", "warning-hook")).await?;
    for name in ["oncall", "team"] {
        wait_for(
            &format!("AlertSubscription {name} Ready"),
            Duration::from_secs(60),
            || async {
                let c = subscription_condition(&client, &ns.name, name, "Ready").await?;
                if c["status"] == "True" {
                    Ok(Some(()))
                } else {
                    Err(c.to_string())
                }
            },
        )
        .await?;
    }
    Ok(Some(Setup {
        client,
        ns,
        received,
    }))
}

async fn wait_body(received: &Received, path: &str, needle: &str) -> Result<()> {
    wait_for(
        &format!("a webhook to {path} mentioning {needle}"),
        Duration::from_secs(120),
        || async {
            let b = bodies_to(received, path);
            if b.iter().any(|b| b.contains(needle)) {
                Ok(Some(()))
            } else {
                Err(format!("{b:?}"))
            }
        },
    )
    .await
}

/// Breaks `team`'s Secret: its channel is reported invalid, `oncall` stays Ready and keeps
/// receiving (repeatInterval 20 s), and the failed send is a Warning event on `job`.
async fn break_one_secret(s: &Setup, job: &str) -> Result<()> {
    let (client, ns) = (&s.client, &s.ns.name);
    // Remove the key (stringData is write-only: a new apply would not remove `data.url`).
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            "warning-hook",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"url": null, "other": "eA=="}})),
        )
        .await?;
    let c = wait_for(
        "team ChannelsValid=False",
        Duration::from_secs(60),
        || async {
            let c = subscription_condition(client, ns, "team", "ChannelsValid").await?;
            if c["status"] == "False" {
                Ok(Some(c))
            } else {
                Err(c.to_string())
            }
        },
    )
    .await?;
    ensure!(
        c["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Secret 'warning-hook' has no key 'url'"),
        "{c}"
    );
    let oncall = subscription_condition(client, ns, "oncall", "Ready")
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(oncall["status"] == "True", "oncall: {oncall}");
    let before = bodies_to(&s.received, "/critical").len();
    wait_for(
        "the critical subscriber still receives (repeat after 20 s)",
        Duration::from_secs(90),
        || async {
            let n = bodies_to(&s.received, "/critical").len();
            if n > before {
                Ok(Some(()))
            } else {
                Err(format!("{n} critical webhooks"))
            }
        },
    )
    .await?;
    let note = wait_event(client, ns, job, "Warning", "AlertDeliveryFailed").await?;
    ensure!(note.contains("AlertSubscription"), "event note: {note}");
    Ok(())
}

#[tokio::test]
async fn severity_routing_and_a_broken_secret() -> Result<()> {
    let Some(s) = setup("alert-routing", 18090).await? else {
        return Ok(());
    };
    let (client, ns) = (&s.client, s.ns.name.clone());
    let ns = ns.as_str();

    // Critical: a job whose spec is invalid is Failed (jobFailed).
    let mut broken = job_manifest("broken", 1);
    broken["spec"]["pipeline"]["operators"][0]["filter"] = "e.type ==".into();
    apply_job(client, ns, &broken).await?;
    // Warning: a running job whose last restore fell back (restoreFellBack).
    apply_job(client, ns, &job_manifest("fellback", 1)).await?;
    wait_for("fellback Ready", Duration::from_secs(120), || async {
        let st = job_status(client, ns, "fellback").await?;
        match condition(&st, "Ready") {
            Some(c) if c["status"] == "True" => Ok(Some(())),
            _ => Err(st.to_string()),
        }
    })
    .await?;
    let created = stream_jobs(client, ns)
        .get("fellback")
        .await?
        .metadata
        .creation_timestamp;
    let restore = serde_json::json!({"status": {"restores": [
        {"checkpointId": 3, "reason": "fallback", "time": created, "path": "file:///tmp/chk-3"}
    ]}});
    stream_jobs(client, ns)
        .patch_status("fellback", &PatchParams::default(), &Patch::Merge(&restore))
        .await?;

    wait_body(&s.received, "/critical", "jobFailed").await?;
    wait_body(&s.received, "/warning", "restoreFellBack").await?;
    let critical = bodies_to(&s.received, "/critical");
    ensure!(
        critical.iter().all(|b| !b.contains("restoreFellBack")),
        "the critical subscriber got the warning: {critical:?}"
    );
    let st = wait_for(
        "fellback: Alerting=True, health scraped",
        Duration::from_secs(60),
        || async {
            let st = job_status(client, ns, "fellback").await?;
            let alerting = condition(&st, "Alerting").map(|c| c["status"].clone());
            if alerting == Some("True".into()) && st["health"]["scrapedAt"].is_string() {
                Ok(Some(st))
            } else {
                Err(st.to_string())
            }
        },
    )
    .await?;
    ensure!(
        st["activeAlerts"].to_string().contains("restoreFellBack"),
        "{st}"
    );
    ensure!(
        condition(&st, "SpecValid").is_some() && condition(&st, "Backpressured").is_some(),
        "the controller's and the health loop's conditions are both kept: {st}"
    );
    let note = wait_event(client, ns, "broken", "Normal", "AlertSent").await?;
    ensure!(note.contains("AlertSubscription"), "event note: {note}");

    break_one_secret(&s, "broken").await
}

#[tokio::test]
async fn health_thresholds_fire_on_a_healthy_job() -> Result<()> {
    if runtime_image().contains("standin") {
        println!("health_thresholds: skipped: needs the real runtime's task metrics, WEIR_E2E_RUNTIME_IMAGE is the stand-in");
        return Ok(());
    }
    let Some(s) = setup("alert-health", 18091).await? else {
        return Ok(());
    };
    let (client, ns) = (&s.client, s.ns.name.clone());
    let ns = ns.as_str();
    let mut job = job_manifest("alerted", 1);
    job["spec"]["alerting"] = serde_json::json!({"rules": {
        "backpressureHigh": {"warning": 0.0, "critical": 0.0, "for": "0s"},
        "checkpointStale": {"warning": 0.0001, "critical": 1000000.0},
    }});
    apply_job(client, ns, &job).await?;
    let st = wait_for(
        "health, Backpressured=True and Alerting=True in status",
        Duration::from_secs(240),
        || async {
            let st = job_status(client, ns, "alerted").await?;
            let tasks = st["health"]["tasksReporting"].as_u64().unwrap_or(0);
            let is_true = |t: &str| condition(&st, t).is_some_and(|c| c["status"] == "True");
            if tasks > 0 && is_true("Backpressured") && is_true("Alerting") && is_true("Ready") {
                Ok(Some(st.clone()))
            } else {
                Err(st.to_string())
            }
        },
    )
    .await?;
    ensure!(
        st["activeAlerts"].to_string().contains("backpressureHigh"),
        "{st}"
    );
    wait_body(&s.received, "/critical", "backpressureHigh").await?;
    wait_body(&s.received, "/warning", "checkpointStale").await?;
    let critical = bodies_to(&s.received, "/critical");
    ensure!(
        critical.iter().all(|b| !b.contains("checkpointStale")),
        "the critical subscriber got the warning: {critical:?}"
    );
    break_one_secret(&s, "alerted").await
}
