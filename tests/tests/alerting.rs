//! Health and alerting against a real cluster: the operator scrapes a running job, writes
//! `status.health` and the Backpressured/Alerting conditions, and delivers webhooks by
//! severity to AlertSubscriptions; breaking one subscription's Secret marks that channel
//! invalid while the other subscription keeps delivering.
//!
//! The runtime has no way to throttle a sink, so alerts are made to fire on a healthy job with
//! `spec.alerting.rules` overrides: `backpressureHigh` at 0 (backpressure 0 ≥ 0: critical) and
//! `checkpointStale` at 0.0001 × interval (warning once a checkpoint completed).

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

#[tokio::test]
async fn alerts_reach_subscribers_by_severity_and_a_broken_secret_is_reported() -> Result<()> {
    if !enabled("alerting") {
        return Ok(());
    }
    let client = client().await?;
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
    shared_operator(&client).await?;
    let ns = TestNamespace::create(&client, "alerting").await?;
    let ns = &ns.name;
    let (port, received) = start_receiver().await?;

    apply_secret(
        &client,
        ns,
        "critical-hook",
        serde_json::json!({"url": format!("http://127.0.0.1:{port}/critical")}),
    )
    .await?;
    apply_secret(
        &client,
        ns,
        "warning-hook",
        serde_json::json!({"url": format!("http://127.0.0.1:{port}/warning")}),
    )
    .await?;
    let subs = subscriptions(&client, ns);
    apply(&subs, subscription("oncall", "critical", "critical-hook")).await?;
    apply(&subs, subscription("team", "warning", "warning-hook")).await?;

    for name in ["oncall", "team"] {
        wait_for(
            &format!("AlertSubscription {name} Ready"),
            Duration::from_secs(60),
            || async {
                let c = subscription_condition(&client, ns, name, "Ready").await?;
                if c["status"] == "True" {
                    Ok(Some(()))
                } else {
                    Err(c.to_string())
                }
            },
        )
        .await?;
    }

    let mut job = job_manifest("alerted", 1);
    job["spec"]["alerting"] = serde_json::json!({"rules": {
        "backpressureHigh": {"warning": 0.0, "critical": 0.0, "for": "0s"},
        "checkpointStale": {"warning": 0.0001, "critical": 1000000.0},
    }});
    apply_job(&client, ns, &job).await?;

    // Health and conditions in status.
    let status = wait_for(
        "health, Backpressured and Alerting in status",
        Duration::from_secs(240),
        || async {
            let s = job_status(&client, ns, "alerted").await?;
            let tasks = s["health"]["tasksReporting"].as_u64().unwrap_or(0);
            let bp = condition(&s, "Backpressured").map(|c| c["status"].clone());
            let alerting = condition(&s, "Alerting").map(|c| c["status"].clone());
            let ready = condition(&s, "Ready").map(|c| c["status"].clone());
            if tasks > 0
                && bp == Some("True".into())
                && alerting == Some("True".into())
                && ready == Some("True".into())
            {
                Ok(Some(s))
            } else {
                Err(s.to_string())
            }
        },
    )
    .await?;
    let alerts = status["activeAlerts"].to_string();
    ensure!(
        alerts.contains("backpressureHigh"),
        "activeAlerts: {alerts}"
    );

    // Critical to the critical subscriber only; the warning to the warning subscriber.
    wait_for(
        "critical webhook with backpressureHigh",
        Duration::from_secs(90),
        || async {
            let b = bodies_to(&received, "/critical");
            if b.iter().any(|b| b.contains("backpressureHigh")) {
                Ok(Some(()))
            } else {
                Err(format!("{b:?}"))
            }
        },
    )
    .await?;
    wait_for(
        "warning webhook with checkpointStale",
        Duration::from_secs(120),
        || async {
            let b = bodies_to(&received, "/warning");
            if b.iter().any(|b| b.contains("checkpointStale")) {
                Ok(Some(()))
            } else {
                Err(format!("{b:?}"))
            }
        },
    )
    .await?;
    let critical = bodies_to(&received, "/critical");
    ensure!(
        critical.iter().all(|b| !b.contains("checkpointStale")),
        "the critical subscriber got the warning: {critical:?}"
    );
    let note = wait_event(&client, ns, "alerted", "Normal", "AlertSent").await?;
    ensure!(note.contains("AlertSubscription"), "event note: {note}");

    // Break the warning subscriber's Secret: its channel becomes invalid, the other still sends.
    apply_secret(
        &client,
        ns,
        "warning-hook",
        serde_json::json!({"other": "x"}),
    )
    .await?;
    let c = wait_for(
        "team ChannelsValid=False",
        Duration::from_secs(60),
        || async {
            let c = subscription_condition(&client, ns, "team", "ChannelsValid").await?;
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
            .contains("warning-hook"),
        "{c}"
    );
    let oncall = subscription_condition(&client, ns, "oncall", "Ready")
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(oncall["status"] == "True", "oncall: {oncall}");
    let before = bodies_to(&received, "/critical").len();
    wait_for(
        "the critical subscriber still receives (repeat after 20s)",
        Duration::from_secs(90),
        || async {
            let n = bodies_to(&received, "/critical").len();
            if n > before {
                Ok(Some(()))
            } else {
                Err(format!("{n} critical webhooks"))
            }
        },
    )
    .await?;
    wait_event(&client, ns, "alerted", "Warning", "AlertDeliveryFailed").await?;
    Ok(())
}
