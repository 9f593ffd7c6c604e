//! Slack incoming webhook: Block Kit blocks with a plain `text` fallback (shown in
//! notifications and by clients that do not render blocks).

use crate::alerting::model::{AlertStatus, Notification};
use crate::alerting::notify::{http, render, truncate_bytes, Notifier, NotifyError};
use futures::future::BoxFuture;
use serde_json::json;

/// Slack allows 50 blocks per message; keep room for the header and footer.
const MAX_ALERT_BLOCKS: usize = 45;
/// Slack's limit for a section's text.
const MAX_SECTION_CHARS: usize = 3000;

/// Sends to a Slack incoming webhook.
#[derive(Clone, Debug)]
pub struct SlackNotifier {
    client: reqwest::Client,
    url: String,
}

/// Escapes `&`, `<`, `>` as Slack mrkdwn requires.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The message: `text` fallback, a header block, one section per alert, a context footer.
pub fn payload(n: &Notification) -> serde_json::Value {
    let mut blocks = vec![json!({
        "type": "header",
        "text": {"type": "plain_text", "text": truncate_bytes(&n.title(), 150, "…"), "emoji": true}
    })];
    let total = n.alerts().count();
    for (g, a) in n.alerts().take(MAX_ALERT_BLOCKS) {
        let icon = match a.status {
            AlertStatus::Firing => ":rotating_light:",
            AlertStatus::Resolved => ":white_check_mark:",
        };
        let mut text = format!(
            "{icon} *{}* `{}` {}/{}\n{}",
            render::status_line(a),
            escape(&a.rule),
            escape(&g.namespace),
            escape(&g.job),
            escape(&a.summary)
        );
        if !a.description.is_empty() {
            text.push_str(&format!("\n>{}", escape(&a.description)));
        }
        text.push_str(&format!("\n_{}_", render::facts(a)));
        blocks.push(json!({
            "type": "section",
            "text": {"type": "mrkdwn", "text": truncate_bytes(&text, MAX_SECTION_CHARS, "…")}
        }));
    }
    let mut footer = format!("{} · {total} alert(s)", escape(&n.receiver));
    if total > MAX_ALERT_BLOCKS {
        footer.push_str(&format!(" · {} more not shown", total - MAX_ALERT_BLOCKS));
    }
    if !n.external_url.is_empty() {
        footer.push_str(&format!(" · <{}|Details>", n.external_url));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": footer}]
    }));
    json!({
        "text": truncate_bytes(&render::plain(n), 3000, "…"),
        "blocks": blocks,
    })
}

impl SlackNotifier {
    /// A notifier for the webhook `url`.
    pub fn new(client: reqwest::Client, url: String) -> Self {
        SlackNotifier { client, url }
    }
}

impl Notifier for SlackNotifier {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let text = http::post_json(&self.client, "slack", &self.url, &payload(n)).await?;
            if text.trim() != "ok" {
                return Err(NotifyError::Rejected {
                    kind: "slack",
                    message: truncate_bytes(&text, 200, "…"),
                    retryable: false,
                });
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::model::fixtures::{alert, notification};
    use crate::alerting::notify::test_server::TestServer;
    use weir_crds::stream_job::Severity;

    #[tokio::test]
    async fn blocks_with_text_fallback_are_posted() {
        // Slack answers 200 "ok", or 400 "invalid_blocks" for malformed blocks.
        let server = TestServer::start(|r| {
            let blocks = r.json["blocks"].as_array().cloned().unwrap_or_default();
            let valid = r.json["text"].is_string()
                && !blocks.is_empty()
                && blocks.len() <= 50
                && blocks.iter().all(|b| b["type"].is_string());
            if valid {
                (200, "ok".into())
            } else {
                (400, "invalid_blocks".into())
            }
        })
        .await;
        let n = SlackNotifier::new(
            reqwest::Client::new(),
            format!("{}/services/T0/B0/XYZ", server.base),
        );
        let note = notification(vec![
            alert("restartLoop", Severity::Critical, AlertStatus::Firing),
            alert("backpressureHigh", Severity::Warning, AlertStatus::Resolved),
        ]);
        let sent = n.send(&note).await;
        assert!(sent.is_ok(), "{sent:?}");
        let r = server.only();
        assert!(r.json["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("[CRITICAL] ads/ctr-samples: restartLoop on ctr-samples (+1 more)"));
        let blocks = r.json["blocks"].as_array().cloned().unwrap_or_default();
        assert_eq!(blocks.len(), 4, "header, two alerts, footer");
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
        assert!(blocks[1]["text"]["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with(":rotating_light: *FIRING · critical* `restartLoop` ads/ctr-samples"));
        assert!(blocks[2]["text"]["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with(":white_check_mark: *RESOLVED*"));
        assert_eq!(
            blocks[3]["elements"][0]["text"],
            "ads/ads-oncall · 2 alert(s) · <https://weir.example.com|Details>"
        );
    }

    #[tokio::test]
    async fn a_revoked_webhook_is_a_permanent_error() {
        let server = TestServer::start(|_| (404, "no_team".into())).await;
        let n = SlackNotifier::new(
            reqwest::Client::new(),
            format!("{}/services/x", server.base),
        );
        let note = notification(vec![alert(
            "jobFailed",
            Severity::Critical,
            AlertStatus::Firing,
        )]);
        let e = n.send(&note).await.err();
        assert_eq!(
            e.as_ref().map(|e| e.to_string()),
            Some("slack: HTTP 404: no_team".into())
        );
        assert_eq!(e.map(|e| e.retryable()), Some(false));
    }
}
