//! Tests of the Alertmanager channel: the payload, authentication headers, and the whole path
//! through a real Alertmanager (`prometheus-alertmanager`) to a webhook receiver.

use super::*;
use crate::alerting::delivery::deliver_due;
use crate::alerting::dispatch::Disposition;
use crate::alerting::engine::{AlertEngine, EngineConfig, EngineState, JobTick};
use crate::alerting::model::fixtures::{alert, notification};
use crate::alerting::notify::test_server::TestServer;
use crate::alerting::notify::ChannelResolver;
use crate::alerting::routing::{JobRouting, Subscription};
use crate::alerting::rules::RuleResult;
use chrono::TimeZone;
use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use weir_crds::alert_subscription::{AlertSubscriptionSpec, AlertmanagerChannel, ChannelSpec};
use weir_crds::stream_job::{Phase, Severity};
use weir_crds::Dur;

fn at(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
        .single()
        .unwrap_or_default()
        + chrono::Duration::seconds(secs)
}

#[test]
fn payload_is_postable_alerts_with_weir_labels_and_annotations() {
    let firing = alert("backpressureHigh", Severity::Critical, AlertStatus::Firing);
    let resolved = alert(
        "checkpointFailures",
        Severity::Warning,
        AlertStatus::Resolved,
    );
    let n = notification(vec![firing, resolved]);
    let p = payload(&n, at(600), Duration::from_secs(240));
    let a = p.as_array().cloned().unwrap_or_default();
    assert_eq!(a.len(), 2);
    assert_eq!(
        a[0]["labels"],
        json!({
            "alertname": "backpressureHigh",
            "severity": "critical",
            "namespace": "ads",
            "job": "ctr-samples",
            "streamjob": "ctr-samples",
            "team": "ads",
        })
    );
    assert_eq!(
        a[0]["annotations"],
        json!({
            "summary": "backpressureHigh on ctr-samples",
            "description": "Tasks spent 85% of the time blocked on the sink.",
            "value": "0.85",
            "threshold": "0.8",
        })
    );
    assert_eq!(a[0]["startsAt"], "2026-11-21T12:00:00Z");
    assert_eq!(
        a[0]["endsAt"], "2026-11-21T12:14:00Z",
        "firing: sent at 12:10 + 4 min"
    );
    assert_eq!(a[0]["generatorURL"], "https://weir.example.com");
    assert!(
        a[0].get("status").is_none(),
        "postable alerts have no status"
    );
    assert_eq!(a[1]["labels"]["alertname"], "checkpointFailures");
    assert_eq!(
        a[1]["endsAt"], "2026-11-21T12:07:00Z",
        "resolved: the resolve time"
    );
    let mut no_link = n.clone();
    no_link.external_url.clear();
    let p = payload(&no_link, at(600), Duration::from_secs(240));
    assert!(
        p[0].get("generatorURL").is_none(),
        "an empty generatorURL is left out"
    );
}

#[test]
fn alerts_url_appends_the_api_path_once() {
    assert_eq!(alerts_url("http://am:9093"), "http://am:9093/api/v2/alerts");
    assert_eq!(
        alerts_url("https://x/alertmanager/"),
        "https://x/alertmanager/api/v2/alerts"
    );
}

#[tokio::test]
async fn bearer_and_basic_auth_headers_are_sent_and_errors_are_reported() {
    let server = TestServer::start(|r| match r.headers.get("authorization") {
        Some(h) if h == "Bearer tok" || h == "Basic d2Vpcjpwdw==" => (200, String::new()),
        _ => (401, "unauthorized".into()),
    })
    .await;
    let note = notification(vec![alert(
        "jobFailed",
        Severity::Critical,
        AlertStatus::Firing,
    )]);
    let send = |auth| {
        AlertmanagerNotifier::new(
            reqwest::Client::new(),
            &server.base,
            auth,
            Duration::from_secs(60),
        )
    };
    let bearer = send(Some(AlertmanagerAuth::Bearer("tok".into())));
    let r = bearer.send(&note).await;
    assert!(r.is_ok(), "{r:?}");
    let basic = send(Some(AlertmanagerAuth::Basic {
        username: "weir".into(),
        password: "pw".into(),
    }));
    let r = basic.send(&note).await;
    assert!(r.is_ok(), "{r:?}");
    let e = send(None).send(&note).await.err().map(|e| e.to_string());
    assert_eq!(e.as_deref(), Some("alertmanager: HTTP 401: unauthorized"));
    let got = server.received();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].path, "/api/v2/alerts");
    assert!(got[0].json.is_array(), "{:?}", got[0].json);
    assert_eq!(
        format!("{:?}", AlertmanagerAuth::Bearer("secret".into())),
        "Bearer(***)",
        "credentials are not logged"
    );
}

/// The Debian package's binary; `WEIR_ALERTMANAGER` overrides it.
fn alertmanager_binary() -> String {
    let bin = std::env::var("WEIR_ALERTMANAGER")
        .unwrap_or_else(|_| "/usr/bin/prometheus-alertmanager".to_string());
    let runs = Command::new(&bin)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        runs,
        "the Alertmanager channel test needs a real Alertmanager at {bin}: install it with \
         `apt-get install prometheus-alertmanager` (tests/install-build-deps.sh does) or set \
         WEIR_ALERTMANAGER to its path"
    );
    bin
}

/// A real Alertmanager on loopback, gossip off, storage in a temp dir, routing everything to
/// `receiver_url` with one-second grouping.
struct RealAlertmanager {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Drop for RealAlertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => panic!("no free port: {e}"),
    }
}

async fn start_alertmanager(receiver_url: &str) -> RealAlertmanager {
    let bin = alertmanager_binary();
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    };
    let config = format!(
        "route:\n  receiver: weir-test\n  group_by: [alertname, namespace, streamjob]\n  \
         group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n  - name: weir-test\n    webhook_configs:\n      - url: {receiver_url}\n        \
         send_resolved: true\n"
    );
    let config_path = dir.path().join("alertmanager.yml");
    if let Err(e) = std::fs::write(&config_path, config) {
        panic!("cannot write the Alertmanager config: {e}");
    }
    let port = free_port();
    let log = match std::fs::File::create(dir.path().join("alertmanager.log")) {
        Ok(f) => f,
        Err(e) => panic!("cannot create the log file: {e}"),
    };
    let child = Command::new(&bin)
        .arg(format!("--config.file={}", config_path.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) => panic!("cannot start {bin}: {e}"),
    };
    let am = RealAlertmanager {
        child,
        base: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let ready = client.get(format!("{}/-/ready", am.base)).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return am;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(am._dir.path().join("alertmanager.log")).unwrap_or_default();
    panic!(
        "Alertmanager did not become ready on {} within 10 s:\n{log}",
        am.base
    );
}

/// Waits up to 20 s for a webhook notification from Alertmanager with this `status`.
async fn wait_for(server: &TestServer, status: &str) -> serde_json::Value {
    for _ in 0..200 {
        if let Some(r) = server
            .received()
            .into_iter()
            .find(|r| r.json["status"] == status)
        {
            return r.json;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got: Vec<_> = server.received().into_iter().map(|r| r.json).collect();
    panic!("no '{status}' notification from Alertmanager within 20 s; got {got:?}");
}

/// One engine round at `now` for job ads/ctr-samples with `results`, then delivery of what is
/// due through the resolver (the operator's path); fails on any failed delivery.
async fn round(
    engine: &mut AlertEngine,
    sub: &Subscription,
    results: Vec<RuleResult>,
    now: DateTime<Utc>,
) -> usize {
    let tick = JobTick {
        job: JobRouting {
            namespace: "ads".into(),
            name: "ctr-samples".into(),
            labels: BTreeMap::new(),
        },
        alert_labels: BTreeMap::from([("team".to_string(), "ads".to_string())]),
        phase: Some(Phase::Running),
        results,
    };
    engine.tick_job(now, &tick, std::slice::from_ref(sub));
    let resolver = ChannelResolver::new(reqwest::Client::new(), None);
    let reports = deliver_due(
        engine,
        now,
        std::slice::from_ref(sub),
        &BTreeMap::new(),
        &resolver,
        None,
    )
    .await;
    for r in &reports {
        assert_eq!(r.disposition, Disposition::Delivered, "{r:?}");
    }
    reports.len()
}

fn backpressure() -> RuleResult {
    RuleResult {
        rule: "backpressureHigh".into(),
        severity: Some(Severity::Critical),
        value: Some(0.93),
        threshold: Some(0.8),
        for_: Duration::ZERO,
        never_suppressed: false,
        inhibits: vec![],
        summary: "ctr-samples is backpressured".into(),
        description: "Tasks spent 93% of the time blocked on the sink.".into(),
        error: None,
    }
}

#[tokio::test]
async fn a_real_alertmanager_routes_the_firing_alert_then_its_resolve() {
    let receiver = TestServer::start(|_| (200, String::new())).await;
    let am = start_alertmanager(&format!("{}/hook", receiver.base)).await;
    let sub = Subscription {
        namespace: "ads".into(),
        name: "oncall".into(),
        spec: AlertSubscriptionSpec {
            channels: vec![ChannelSpec {
                alertmanager: Some(AlertmanagerChannel {
                    url: am.base.clone(),
                    resend_interval: Dur::secs(60),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            repeat_interval: Dur::secs(4 * 3600),
            send_resolved: true,
            ..Default::default()
        },
    };
    let mut engine = AlertEngine::new(
        EngineConfig {
            external_url: "https://weir.example.com".into(),
            ..Default::default()
        },
        EngineState::default(),
    );
    // Engine time runs a minute behind the wall clock, so the re-send a minute later and the
    // resolve both happen by now (Alertmanager keeps an alert whose endsAt is ahead firing).
    let start = Utc::now() - chrono::Duration::seconds(62);
    assert_eq!(
        round(&mut engine, &sub, vec![backpressure()], start).await,
        1
    );

    let got = wait_for(&receiver, "firing").await;
    assert_eq!(got["receiver"], "weir-test");
    let a = &got["alerts"][0];
    assert_eq!(a["status"], "firing");
    for (k, v) in [
        ("alertname", "backpressureHigh"),
        ("severity", "critical"),
        ("namespace", "ads"),
        ("job", "ctr-samples"),
        ("streamjob", "ctr-samples"),
        ("team", "ads"),
    ] {
        assert_eq!(a["labels"][k], v, "label {k} in {a}");
    }
    assert_eq!(a["annotations"]["summary"], "ctr-samples is backpressured");
    assert_eq!(a["annotations"]["value"], "0.93");
    assert_eq!(a["generatorURL"], "https://weir.example.com");

    // A minute later the still-firing alert is re-sent (Alertmanager does not page again).
    let later = start + chrono::Duration::seconds(61);
    assert_eq!(
        round(&mut engine, &sub, vec![backpressure()], later).await,
        1
    );

    let resolved_at = later + chrono::Duration::seconds(1);
    assert_eq!(round(&mut engine, &sub, vec![], resolved_at).await, 1);
    let got = wait_for(&receiver, "resolved").await;
    let a = &got["alerts"][0];
    assert_eq!(a["status"], "resolved");
    assert_eq!(a["labels"]["alertname"], "backpressureHigh");
    assert_eq!(a["labels"]["streamjob"], "ctr-samples");
    assert_eq!(
        a["endsAt"],
        resolved_at.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    let firing_pages = receiver
        .received()
        .iter()
        .filter(|r| r.json["status"] == "firing")
        .count();
    assert_eq!(firing_pages, 1, "the re-send did not page again");
}
