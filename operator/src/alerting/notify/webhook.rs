//! Generic webhook with an Alertmanager-compatible body (version "4"), so receivers written
//! for Alertmanager work unchanged.

use crate::alerting::model::Notification;
use crate::alerting::notify::{http, Notifier, NotifyError};
use futures::future::BoxFuture;
use serde_json::json;

/// Sends Alertmanager-style JSON to a URL.
#[derive(Clone, Debug)]
pub struct WebhookNotifier {
    client: reqwest::Client,
    url: String,
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
    /// A notifier for `url`.
    pub fn new(client: reqwest::Client, url: String) -> Self {
        WebhookNotifier { client, url }
    }
}

impl Notifier for WebhookNotifier {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            http::post_json(&self.client, "webhook", &self.url, &payload(n)).await?;
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
        let n = WebhookNotifier::new(reqwest::Client::new(), format!("{}/hook", server.base));
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
}
