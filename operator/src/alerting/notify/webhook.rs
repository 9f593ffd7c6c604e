//! Generic webhook with an Alertmanager-compatible body (version "4"), so receivers written
//! for Alertmanager work unchanged. With a signing secret, each request carries
//! `X-Weir-Timestamp` (seconds) and `X-Weir-Signature: sha256=<hex HMAC-SHA256(secret,
//! timestamp + "." + body)>`, so the receiver can check origin and freshness.

use crate::alerting::model::Notification;
use crate::alerting::notify::{http, Notifier, NotifyError};
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// Header with the request time, seconds since the epoch.
pub const TIMESTAMP_HEADER: &str = "x-weir-timestamp";
/// Header with `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "x-weir-signature";

/// `sha256=` + hex HMAC-SHA256(secret, timestamp + "." + body).
pub fn sign(secret: &str, timestamp_s: i64, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new(); // HMAC accepts any key length
    };
    mac.update(format!("{timestamp_s}.").as_bytes());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends Alertmanager-style JSON to a URL.
#[derive(Clone, Debug)]
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
}

/// The Alertmanager webhook body.
pub fn payload(n: &Notification) -> serde_json::Value {
    let alerts: Vec<serde_json::Value> = n
        .alerts()
        .map(|(_, a)| {
            json!({
                "status": a.status.as_str(),
                "labels": a.labels,
                "annotations": a.annotations(),
                "startsAt": a.starts_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                // Alertmanager's zero time for alerts that have not ended.
                "endsAt": a.ends_at.map_or_else(
                    || "0001-01-01T00:00:00Z".to_string(),
                    |e| e.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                ),
                "generatorURL": n.external_url,
                "fingerprint": a.fingerprint(),
            })
        })
        .collect();
    let group_labels: serde_json::Map<String, serde_json::Value> = if n.is_digest() {
        Default::default()
    } else {
        n.groups
            .iter()
            .take(1)
            .flat_map(|g| [("namespace", g.namespace.clone()), ("job", g.job.clone())])
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect()
    };
    json!({
        "version": "4",
        "groupKey": format!(
            "{{}}:{{{}}}",
            group_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        "truncatedAlerts": 0,
        "status": n.status().as_str(),
        "receiver": n.receiver,
        "groupLabels": group_labels,
        "commonLabels": n.common_labels(),
        "commonAnnotations": n.common_annotations(),
        "externalURL": n.external_url,
        "alerts": alerts,
    })
}

impl WebhookNotifier {
    /// A notifier for `url`, signing requests with `secret` if given.
    pub fn new(client: reqwest::Client, url: String, secret: Option<String>) -> Self {
        WebhookNotifier {
            client,
            url,
            secret,
        }
    }
}

impl Notifier for WebhookNotifier {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let body = payload(n).to_string().into_bytes();
            let mut headers = Vec::new();
            if let Some(secret) = &self.secret {
                let ts = chrono::Utc::now().timestamp();
                headers.push((SIGNATURE_HEADER, sign(secret, ts, &body)));
                headers.push((TIMESTAMP_HEADER, ts.to_string()));
            }
            http::post_bytes(&self.client, "webhook", &self.url, body, &headers).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::model::fixtures::{alert, notification};
    use crate::alerting::model::AlertStatus;
    use crate::alerting::notify::test_server::TestServer;
    use weir_crds::stream_job::Severity;

    #[tokio::test]
    async fn alertmanager_v4_body_is_posted() {
        let server = TestServer::start(|_| (200, String::new())).await;
        let n = WebhookNotifier::new(
            reqwest::Client::new(),
            format!("{}/hook", server.base),
            None,
        );
        let firing = alert("backpressureHigh", Severity::Critical, AlertStatus::Firing);
        let resolved = alert(
            "checkpointFailures",
            Severity::Warning,
            AlertStatus::Resolved,
        );
        let fp = firing.fingerprint();
        let note = notification(vec![firing, resolved]);
        let sent = n.send(&note).await;
        assert!(sent.is_ok(), "{sent:?}");
        let b = server.only().json;
        assert_eq!(b["version"], "4");
        assert_eq!(b["status"], "firing");
        assert_eq!(b["receiver"], "ads/ads-oncall");
        assert_eq!(
            b["groupLabels"],
            json!({"namespace": "ads", "job": "ctr-samples"})
        );
        assert_eq!(
            b["commonLabels"],
            json!({"namespace": "ads", "job": "ctr-samples", "team": "ads"})
        );
        assert_eq!(
            b["commonAnnotations"],
            json!({"description": "Tasks spent 85% of the time blocked on the sink.", "threshold": "0.8", "value": "0.85"})
        );
        assert_eq!(b["externalURL"], "https://weir.example.com");
        let a0 = &b["alerts"][0];
        assert_eq!(a0["status"], "firing");
        assert_eq!(a0["labels"]["alertname"], "backpressureHigh");
        assert_eq!(a0["labels"]["severity"], "critical");
        assert_eq!(
            a0["annotations"]["summary"],
            "backpressureHigh on ctr-samples"
        );
        assert_eq!(a0["startsAt"], "2026-11-21T12:00:00Z");
        assert_eq!(a0["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(a0["fingerprint"], fp);
        assert_eq!(b["alerts"][1]["status"], "resolved");
        assert_eq!(b["alerts"][1]["endsAt"], "2026-11-21T12:07:00Z");
    }

    #[tokio::test]
    async fn signed_requests_carry_a_verifiable_hmac_over_timestamp_and_body() {
        const SECRET: &str = "whsec-123";
        let verify = |r: &crate::alerting::notify::test_server::Received| -> Result<(), String> {
            let ts: i64 = r
                .headers
                .get(TIMESTAMP_HEADER)
                .ok_or("no timestamp")?
                .parse()
                .map_err(|_| "bad timestamp")?;
            if (chrono::Utc::now().timestamp() - ts).abs() > 3600 {
                return Err("stale".into());
            }
            let mut mac =
                Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).map_err(|e| e.to_string())?;
            mac.update(format!("{ts}.").as_bytes());
            mac.update(&r.body);
            let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            match r.headers.get(SIGNATURE_HEADER) {
                Some(s) if *s == expected => Ok(()),
                other => Err(format!("signature {other:?} != {expected}")),
            }
        };
        let server = TestServer::start(move |r| match verify(r) {
            Ok(()) => (200, String::new()),
            Err(e) => (401, e),
        })
        .await;
        let note = notification(vec![alert(
            "jobFailed",
            Severity::Critical,
            AlertStatus::Firing,
        )]);
        let good = WebhookNotifier::new(
            reqwest::Client::new(),
            format!("{}/hook", server.base),
            Some(SECRET.into()),
        );
        let sent = good.send(&note).await;
        assert!(sent.is_ok(), "{sent:?}");
        let bad = WebhookNotifier::new(
            reqwest::Client::new(),
            format!("{}/hook", server.base),
            Some("other".into()),
        );
        let e = bad.send(&note).await.err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.to_string().starts_with("webhook: HTTP 401: signature")),
            "{e:?}"
        );
        assert_eq!(e.map(|e| e.retryable()), Some(false));
        let unsigned = WebhookNotifier::new(
            reqwest::Client::new(),
            format!("{}/hook", server.base),
            None,
        );
        assert!(
            unsigned.send(&note).await.is_err(),
            "this receiver requires a signature"
        );
    }
}
