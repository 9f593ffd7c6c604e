//! Health and alerting against a real cluster: the operator scrapes a running job, writes
//! `status.health` and the Backpressured/Alerting conditions, and delivers webhooks by
//! severity to AlertSubscriptions; breaking one subscription's Secret marks that channel
//! invalid while the other subscription keeps delivering.
//!
//! - `a_throttled_sink_pages_by_severity_and_resolves` (real runtime only): a job whose sink has
//!   `maxRecordsPerSecond` is really backpressured; the warning subscriber alone gets the
//!   warning (critical threshold out of reach), then the critical subscriber gets an email (real
//!   SMTP server, `aiosmtpd`) and a DingTalk message (the receiver checks the signature as
//!   DingTalk does) and the warning subscriber its webhook, within two scrape intervals (5 s)
//!   of the job running; throttled, the generator's lag is its delay behind schedule
//!   (`health.inputDelayMs` over 5 s) and there is no event-time lag (its event time is
//!   synthetic); lifting the throttle sends both a resolved message; a plain upgrade
//!   pages no one and leaves the generator on schedule; breaking the DingTalk Secret sets
//!   `ChannelsValid=False` while email still delivers, and `status.channels[].lastDelivery` gives each channel's outcome and error.
//!   Its operator release (admin port 18092) runs with the chart's `alerting.*` values.
//!
//! The other two make alerts fire without a throttle:
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
//! namespace (admin ports 18090/18091/18092), so it does not restart the shared release other suites use. The webhook
//! receiver listens on 127.0.0.1 in the test process; the operator runs with hostNetwork.

use anyhow::{ensure, Context as _, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::Client;
use std::time::Duration;
use weir_e2e::*;

use weir_e2e::webhook::{
    bodies_to, start as start_receiver, start_with as start_receiver_with, Received,
};

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

/// The DingTalk robot's signing secret in the throttle test.
const DINGTALK_SECRET: &str = "SECe2e-throttle-0123456789";
/// The operator's scrape interval in the throttle test.
const FAST_SCRAPE: Duration = Duration::from_secs(5);

/// A DingTalk robot: verifies the signature as DingTalk documents it and answers like DingTalk
/// (errcode 0, or 310000 when the signature does not match). Other paths get 200.
fn dingtalk_robot(path: &str, _body: &str) -> (u16, String) {
    if !path.starts_with("/dingtalk") {
        return (200, String::new());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    match weir_e2e::dingtalk::verify(path, DINGTALK_SECRET, now) {
        Ok(()) => (200, r#"{"errcode":0,"errmsg":"ok"}"#.into()),
        Err(e) => (
            200,
            serde_json::json!({"errcode": 310000, "errmsg": format!("sign not match: {e}")})
                .to_string(),
        ),
    }
}

/// DingTalk requests received, each with whether its signature verified.
fn dingtalk_received(received: &Received) -> Vec<(bool, String)> {
    received
        .lock()
        .map(|r| {
            r.iter()
                .filter(|(p, _)| p.starts_with("/dingtalk"))
                .map(|(p, b)| {
                    let ok = weir_e2e::dingtalk::verify(p, DINGTALK_SECRET, now_ms()).is_ok();
                    (ok, b.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// What each subscriber has received so far: (emails, DingTalk bodies, team webhook bodies).
fn inbox(smtp: &weir_e2e::smtp_sink::SmtpSink, received: &Received) -> (usize, usize, usize) {
    (
        smtp.mails().len(),
        dingtalk_received(received).len(),
        bodies_to(received, "/team").len(),
    )
}

/// The inbox once it has not changed for `quiet` (every notification of earlier rounds,
/// resolved ones included, delivered).
async fn quiet_inbox(
    smtp: &weir_e2e::smtp_sink::SmtpSink,
    received: &Received,
    quiet: Duration,
) -> Result<(usize, usize, usize)> {
    let mut last = inbox(smtp, received);
    let mut since = std::time::Instant::now();
    wait_for("a quiet inbox", Duration::from_secs(120), || {
        let now = inbox(smtp, received);
        if now != last {
            last = now;
            since = std::time::Instant::now();
        }
        let settled = since.elapsed() >= quiet;
        async move {
            if settled {
                Ok(Some(now))
            } else {
                Err(format!("inbox still changing: {now:?}"))
            }
        }
    })
    .await
}

/// The job of the throttle test: a `rate` records/s generator whose sink takes at most
/// `limit` records per second per task (none: unthrottled), with backpressure thresholds
/// 0.5 (warning) and `critical` that hold at once (`for: 0s`).
fn throttled_job(limit: Option<f64>, rate: u64, critical: f64) -> serde_json::Value {
    let mut job = job_manifest("throttled", 1);
    job["spec"]["pipeline"]["sources"][0]["generator"]["rate"] = rate.into();
    if let Some(limit) = limit {
        job["spec"]["pipeline"]["sinks"][0]["maxRecordsPerSecond"] = limit.into();
    }
    // The test is about backpressure paging by severity. `lagGrowing` stays on: it reads the
    // generator's delay behind its schedule (`health.inputDelayMs`), which restarts at 0 with
    // each upgrade, so it can at most go pending while throttled (`for: 10m`) and clears once
    // the throttle is lifted; the generator's 2023 event time no longer counts as lag.
    // `restartLoop` is off: each of the test's upgrades restores every task, which it counts.
    job["spec"]["alerting"] = serde_json::json!({"rules": {
        "backpressureHigh": {"warning": 0.5, "critical": critical, "for": "0s"},
        "restartLoop": {"disabled": true},
    }});
    job
}

/// Waits for the job to run its current generation with all pods ready; returns when.
async fn wait_running(client: &Client, ns: &str) -> Result<std::time::Instant> {
    wait_observed(client, ns, "throttled").await?;
    wait_for(
        "throttled Running and Ready",
        Duration::from_secs(240),
        || async {
            let st = job_status(client, ns, "throttled").await?;
            let ready = condition(&st, "Ready").is_some_and(|c| c["status"] == "True");
            if ready && st["phase"] == "Running" {
                Ok(Some(std::time::Instant::now()))
            } else {
                Err(st.to_string())
            }
        },
    )
    .await
}

/// `lastDelivery` of channel `name` in a subscription's status.
async fn last_delivery(
    client: &Client,
    ns: &str,
    sub: &str,
    name: &str,
) -> Result<serde_json::Value, String> {
    let obj = subscriptions(client, ns)
        .get(sub)
        .await
        .map_err(|e| e.to_string())?;
    let channels = obj.data["status"]["channels"].clone();
    channels
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .map(|c| c["lastDelivery"].clone())
        .filter(|d| !d.is_null())
        .ok_or_else(|| format!("no lastDelivery for {name}: {channels}"))
}

/// A throttled sink really backpressures the job: with a critical threshold out of reach only
/// the warning subscriber gets the warning; with it at 0.8 the critical subscriber gets an email
/// (real SMTP server) and a signed DingTalk message; each within two scrape intervals of the
/// job running throttled; lifting the throttle resolves it for both;
/// an upgrade alone pages no one; a broken DingTalk Secret is a condition on the subscription
/// while email still delivers, and each channel's `lastDelivery` says what happened.
#[tokio::test]
async fn a_throttled_sink_pages_by_severity_and_resolves() -> Result<()> {
    const TEST: &str = "alert-throttle";
    if runtime_image().contains("standin") {
        println!("{TEST}: skipped: needs the real runtime's sink throttle, WEIR_E2E_RUNTIME_IMAGE is the stand-in");
        return Ok(());
    }
    if !enabled(TEST) {
        return Ok(());
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
    let namespace = TestNamespace::create(&client, TEST).await?;
    let ns = namespace.name.as_str();
    let smtp = weir_e2e::smtp_sink::SmtpSink::start(TEST)?;
    let release = format!("weir-e2e-op-{TEST}");
    install_with(
        &client,
        &Release {
            name: &release,
            namespace: &release,
            admin_port: 18092,
            lease_name: &release,
            watch_namespaces: &[ns],
        },
        &[
            ("alerting.scrapeInterval", "5s".into()),
            ("alerting.smtp.host", "127.0.0.1".into()),
            ("alerting.smtp.port", smtp.port.to_string()),
            ("alerting.smtp.tls", "none".into()),
            ("alerting.smtp.from", "Weir <weir@e2e.test>".into()),
        ],
    )
    .await?;
    let (port, received) = start_receiver_with(dingtalk_robot).await?;
    let ding_url = format!("http://127.0.0.1:{port}/dingtalk?access_token=e2e");
    apply_secret(
        &client,
        ns,
        "dingtalk",
        serde_json::json!({"url": ding_url, "secret": DINGTALK_SECRET}),
    )
    .await?;
    let team_url = format!("http://127.0.0.1:{port}/team");
    apply_secret(
        &client,
        ns,
        "team-hook",
        serde_json::json!({"url": team_url}),
    )
    .await?;
    let subs = subscriptions(&client, ns);
    let sub = |name: &str, min: &str, channels: serde_json::Value| {
        serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "AlertSubscription",
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": {"team": "e2e"}},
                "minSeverity": min,
                "repeatInterval": "1h",
                "sendResolved": true,
                "channels": channels,
            }
        })
    };
    apply(
        &subs,
        sub(
            "oncall",
            "critical",
            serde_json::json!([
                {"name": "mail", "email": {"to": ["oncall@e2e.test"]}},
                {"name": "ding", "dingtalk": {
                    "urlSecret": {"name": "dingtalk", "key": "url"},
                    "signSecret": {"name": "dingtalk", "key": "secret"}}},
            ]),
        ),
    )
    .await?;
    apply(
        &subs,
        sub(
            "team",
            "warning",
            serde_json::json!([{"name": "hook", "webhook": {"urlSecret": {"name": "team-hook", "key": "url"}}}]),
        ),
    )
    .await?;
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

    // 1. Throttled from the start (40 records/s in, at most 2/s out per task), with a critical
    // threshold above 1: a warning, which only the warning subscriber gets.
    apply_job(&client, ns, &throttled_job(Some(2.0), 40, 1.5)).await?;
    let running = wait_running(&client, ns).await?;
    wait_for(
        "the warning webhook to the team subscriber",
        Duration::from_secs(120),
        || async {
            let team = bodies_to(&received, "/team");
            let warned = team.iter().any(|b| {
                b.contains("backpressureHigh")
                    && b.contains("\"severity\":\"warning\"")
                    && b.contains("\"firing\"")
            });
            if warned {
                Ok(Some(()))
            } else {
                Err(format!("{team:?}"))
            }
        },
    )
    .await?;
    let took = running.elapsed();
    println!("{TEST}: warned {took:?} after the throttled job was Running (scrape interval {FAST_SCRAPE:?})");
    ensure!(
        took <= 2 * FAST_SCRAPE + Duration::from_secs(10),
        "warned {took:?} after Running, more than two scrape intervals (+10 s slack)"
    );
    tokio::time::sleep(FAST_SCRAPE).await;
    let (mails, dings, _) = inbox(&smtp, &received);
    ensure!(
        mails == 0 && dings == 0,
        "the critical subscriber got the warning: {mails} mails, {dings} DingTalk messages"
    );

    // 2. Critical above 0.8 (a spec edit, so an upgrade): email and DingTalk to oncall, and
    // the warning subscriber (minSeverity warning) too.
    apply_job(&client, ns, &throttled_job(Some(2.0), 40, 0.8)).await?;
    let running = wait_running(&client, ns).await?;
    // The first rate may span the pod's start; the throttle then keeps it near 1.
    wait_for(
        "Backpressured=True and health.backpressure ≥ 0.8 from the throttled sink",
        Duration::from_secs(120),
        || async {
            let st = job_status(&client, ns, "throttled").await?;
            let bp = condition(&st, "Backpressured").is_some_and(|c| c["status"] == "True");
            let value = st["health"]["backpressure"].as_f64().unwrap_or_default();
            if bp && value >= 0.8 {
                Ok(Some(()))
            } else {
                Err(st.to_string())
            }
        },
    )
    .await?;
    let subject_prefix = format!("[CRITICAL] {ns}/throttled:");
    wait_for(
        "the critical email, the DingTalk message and the team webhook",
        Duration::from_secs(120),
        || async {
            let mails = smtp.mails();
            let mail = mails.iter().any(|m| m.subject.starts_with(&subject_prefix));
            let ding = dingtalk_received(&received)
                .iter()
                .any(|(ok, b)| *ok && b.contains("backpressured"));
            let team = bodies_to(&received, "/team")
                .iter()
                .any(|b| b.contains("backpressureHigh") && b.contains("\"firing\""));
            if mail && ding && team {
                Ok(Some(()))
            } else {
                Err(format!(
                    "mail {mail}, dingtalk {ding}, team {team}; mails {mails:?}"
                ))
            }
        },
    )
    .await?;
    let took = running.elapsed();
    println!("{TEST}: paged {took:?} after the throttled job was Running (scrape interval {FAST_SCRAPE:?})");
    // The first scrape after the pods are ready is the baseline, the second gives the rate.
    ensure!(
        took <= 2 * FAST_SCRAPE + Duration::from_secs(10),
        "paged {took:?} after Running, more than two scrape intervals (+10 s slack)"
    );
    let mail = smtp
        .mails()
        .into_iter()
        .find(|m| m.subject.starts_with(&subject_prefix))
        .context("critical email")?;
    ensure!(mail.rcpt_tos == ["oncall@e2e.test"], "{mail:?}");
    ensure!(
        mail.plain.contains("backpressured") && mail.html.contains("backpressured"),
        "{mail:?}"
    );
    ensure!(
        dingtalk_received(&received).iter().all(|(ok, _)| *ok),
        "every DingTalk request must be signed correctly"
    );
    // The outcome is recorded after the round's deliveries (and their Events).
    for channel in ["mail", "ding"] {
        wait_for(
            &format!("oncall/{channel} lastDelivery: a critical message delivered"),
            Duration::from_secs(30),
            || async {
                let d = last_delivery(&client, ns, "oncall", channel).await?;
                let critical = d["title"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("[CRITICAL]"));
                if d["outcome"] == "Delivered" && critical {
                    Ok(Some(()))
                } else {
                    Err(d.to_string())
                }
            },
        )
        .await?;
    }

    // The throttled generator falls behind its schedule (40 records/s due, 2/s written): its
    // lag is that processing-time delay, not the years between its 2023 event time and now.
    wait_for(
        "health.inputDelayMs over 5 s and no event-time lag while throttled",
        Duration::from_secs(60),
        || async {
            let st = job_status(&client, ns, "throttled").await?;
            let delay = st["health"]["inputDelayMs"].as_f64().unwrap_or_default();
            if delay > 5000.0 && st["health"]["eventTimeLagMs"].is_null() {
                Ok(Some(()))
            } else {
                Err(st["health"].to_string())
            }
        },
    )
    .await?;

    // 3. Lift the throttle (a spec edit: the job is upgraded): both get a resolved message.
    apply_job(&client, ns, &throttled_job(None, 40, 0.8)).await?;
    wait_for(
        "resolved notifications to both subscribers",
        Duration::from_secs(240),
        || async {
            let mail = smtp
                .mails()
                .iter()
                .any(|m| m.subject.starts_with("[RESOLVED]"));
            let ding = dingtalk_received(&received)
                .iter()
                .any(|(ok, b)| *ok && b.contains("RESOLVED"));
            let team = bodies_to(&received, "/team")
                .iter()
                .any(|b| b.contains("\"resolved\""));
            if mail && ding && team {
                Ok(Some(()))
            } else {
                Err(format!("mail {mail}, dingtalk {ding}, team {team}"))
            }
        },
    )
    .await?;
    wait_running(&client, ns).await?;
    // The warning and the critical alert are two alerts: the first rate after the upgrade can
    // span the old pod's backpressure and the new pod's none, which resolves the critical one
    // a round before the warning. Wait until nothing is active and the inbox is quiet.
    wait_for("no active alerts", Duration::from_secs(60), || async {
        let st = job_status(&client, ns, "throttled").await?;
        match st["activeAlerts"].as_array() {
            Some(a) if !a.is_empty() => Err(st.to_string()),
            _ => Ok(Some(())),
        }
    })
    .await?;
    let before = quiet_inbox(&smtp, &received, 2 * FAST_SCRAPE).await?;

    // 4. An upgrade of a healthy job pages no one.
    apply_job(&client, ns, &throttled_job(None, 30, 0.8)).await?;
    wait_running(&client, ns).await?;
    tokio::time::sleep(3 * FAST_SCRAPE).await;
    let st = job_status(&client, ns, "throttled")
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(
        st["activeAlerts"].as_array().is_none_or(|a| a.is_empty()),
        "no alert after the upgrade: {st}"
    );
    // Unthrottled, the generator keeps its schedule.
    let delay = st["health"]["inputDelayMs"].as_f64();
    ensure!(
        delay.is_some_and(|d| d < 5000.0) && st["health"]["eventTimeLagMs"].is_null(),
        "an unthrottled generator is on schedule, without event-time lag: {}",
        st["health"]
    );
    ensure!(
        inbox(&smtp, &received) == before,
        "the upgrade sent notifications: {before:?} -> {:?}; {:?}",
        inbox(&smtp, &received),
        received.lock().map(|r| r.clone()).unwrap_or_default()
    );

    // 5. Break the DingTalk Secret: a condition on oncall; email still delivers.
    Api::<Secret>::namespaced(client.clone(), ns)
        .patch(
            "dingtalk",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"url": null}})),
        )
        .await?;
    let c = wait_for(
        "oncall ChannelsValid=False",
        Duration::from_secs(60),
        || async {
            let c = subscription_condition(&client, ns, "oncall", "ChannelsValid").await?;
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
            .contains("Secret 'dingtalk' has no key 'url'"),
        "{c}"
    );
    let ready = subscription_condition(&client, ns, "oncall", "Ready")
        .await
        .map_err(anyhow::Error::msg)?;
    ensure!(ready["reason"] == "SomeChannelsInvalid", "{ready}");
    let (mails_before, ding_before, team_before) = inbox(&smtp, &received);
    apply_job(&client, ns, &throttled_job(Some(2.0), 30, 0.8)).await?;
    wait_for(
        "a new critical email and team webhook with DingTalk broken",
        Duration::from_secs(240),
        || async {
            let (mails, _, team) = inbox(&smtp, &received);
            if mails > mails_before && team > team_before {
                Ok(Some(()))
            } else {
                Err(format!("{mails} mails, {team} team webhooks"))
            }
        },
    )
    .await?;
    let newest = smtp.mails().pop().context("an email")?;
    ensure!(newest.subject.starts_with(&subject_prefix), "{newest:?}");
    ensure!(
        dingtalk_received(&received).len() == ding_before,
        "nothing reaches DingTalk without its URL"
    );
    let ding = wait_for(
        "oncall/ding lastDelivery says why it failed",
        Duration::from_secs(30),
        || async {
            let d = last_delivery(&client, ns, "oncall", "ding").await?;
            if d["outcome"] != "Delivered" {
                Ok(Some(d))
            } else {
                Err(d.to_string())
            }
        },
    )
    .await?;
    ensure!(
        ding["outcome"] == "GaveUp"
            && ding["error"]
                .as_str()
                .is_some_and(|e| e.contains("Secret 'dingtalk' has no key 'url'")),
        "{ding}"
    );
    let mail = last_delivery(&client, ns, "oncall", "mail")
        .await
        .map_err(anyhow::Error::msg)?;
    // The same alert went to both channels: the email's record is as recent as DingTalk's.
    let (mail_at, ding_at) = (
        mail["time"].as_str().unwrap_or_default(),
        ding["time"].as_str().unwrap_or_default(),
    );
    ensure!(
        mail["outcome"] == "Delivered" && mail["error"].is_null() && mail_at >= ding_at,
        "mail {mail}, ding {ding}"
    );
    Ok(())
}
