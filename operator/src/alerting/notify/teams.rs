//! Microsoft Teams via a Workflows ("When a Teams webhook request is received") webhook:
//! a message with one Adaptive Card attachment.

use crate::alerting::model::{AlertStatus, Notification};
use crate::alerting::notify::{http, render, Notifier, NotifyError};
use futures::future::BoxFuture;
use serde_json::json;
use weir_crds::stream_job::Severity;

/// Sends to a Teams Workflows webhook.
#[derive(Clone, Debug)]
pub struct TeamsNotifier {
    client: reqwest::Client,
    url: String,
}

/// The message with an Adaptive Card 1.4 attachment.
pub fn payload(n: &Notification) -> serde_json::Value {
    let color = match (n.status(), n.severity()) {
        (AlertStatus::Resolved, _) => "Good",
        (_, Severity::Critical) => "Attention",
        (_, Severity::Warning) => "Warning",
        _ => "Accent",
    };
    let mut body = vec![json!({
        "type": "TextBlock",
        "text": n.title(),
        "weight": "Bolder",
        "size": "Medium",
        "color": color,
        "wrap": true,
    })];
    for (g, a) in n.alerts() {
        body.push(json!({
            "type": "TextBlock",
            "text": format!("{} · {} · {}/{}", render::status_line(a), a.rule, g.namespace, g.job),
            "weight": "Bolder",
            "separator": true,
            "wrap": true,
        }));
        body.push(json!({"type": "TextBlock", "text": a.summary, "wrap": true}));
        if !a.description.is_empty() {
            body.push(
                json!({"type": "TextBlock", "text": a.description, "isSubtle": true, "wrap": true}),
            );
        }
        let mut facts = vec![
            json!({"title": "Severity", "value": crate::alerting::rules::severity_str(a.severity)}),
        ];
        if let Some(v) = a.value {
            facts.push(
                json!({"title": "Value", "value": crate::alerting::template::format_number(v)}),
            );
        }
        if let Some(t) = a.threshold {
            facts.push(
                json!({"title": "Threshold", "value": crate::alerting::template::format_number(t)}),
            );
        }
        facts.push(json!({"title": "Since", "value": a.starts_at.to_rfc3339()}));
        if let Some(end) = a.ends_at {
            facts.push(json!({"title": "Resolved", "value": end.to_rfc3339()}));
        }
        body.push(json!({"type": "FactSet", "facts": facts}));
    }
    let mut card = json!({
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "msteams": {"width": "Full"},
        "body": body,
    });
    if !n.external_url.is_empty() {
        card["actions"] =
            json!([{"type": "Action.OpenUrl", "title": "Details", "url": n.external_url}]);
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": card,
        }]
    })
}

impl TeamsNotifier {
    /// A notifier for the workflow webhook `url`.
    pub fn new(client: reqwest::Client, url: String) -> Self {
        TeamsNotifier { client, url }
    }
}

impl Notifier for TeamsNotifier {
    fn kind(&self) -> &'static str {
        "teams"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            http::post_json(&self.client, "teams", &self.url, &payload(n)).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::model::fixtures::{alert, notification};
    use crate::alerting::notify::test_server::TestServer;

    #[tokio::test]
    async fn adaptive_card_attachment_is_posted() {
        // Workflows answer 202 Accepted; a body without an adaptive card attachment is a 400.
        let server = TestServer::start(|r| {
            let a = &r.json["attachments"][0];
            let ok = r.json["type"] == "message"
                && a["contentType"] == "application/vnd.microsoft.card.adaptive"
                && a["content"]["type"] == "AdaptiveCard";
            if ok {
                (202, String::new())
            } else {
                (400, "bad card".into())
            }
        })
        .await;
        let n = TeamsNotifier::new(
            reqwest::Client::new(),
            format!(
                "{}/workflows/abc/triggers/manual/paths/invoke?sig=s",
                server.base
            ),
        );
        let note = notification(vec![alert(
            "latencyP99High",
            Severity::Critical,
            AlertStatus::Firing,
        )]);
        let sent = n.send(&note).await;
        assert!(sent.is_ok(), "{sent:?}");
        let card = server.only().json["attachments"][0]["content"].clone();
        assert_eq!(card["version"], "1.4");
        assert_eq!(
            card["body"][0]["text"],
            "[CRITICAL] ads/ctr-samples: latencyP99High on ctr-samples"
        );
        assert_eq!(card["body"][0]["color"], "Attention");
        let facts = card["body"][4]["facts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(facts[0], json!({"title": "Severity", "value": "critical"}));
        assert_eq!(facts[1], json!({"title": "Value", "value": "0.85"}));
        assert_eq!(card["actions"][0]["url"], "https://weir.example.com");
    }
}
