//! WeCom (企业微信) group robot: a markdown message, cut to the robot's 4096-byte limit on a
//! character boundary with a marker.

use crate::alerting::model::{AlertStatus, Notification};
use crate::alerting::notify::{http, render, truncate_bytes, Notifier, NotifyError};
use futures::future::BoxFuture;
use serde_json::json;

/// WeCom's limit for `markdown.content`, in UTF-8 bytes.
pub const MAX_CONTENT_BYTES: usize = 4096;
/// Appended when the content was cut.
pub const TRUNCATED_MARKER: &str = "\n\n…(truncated)";
/// WeCom's "API freq out of limit" code.
const RATE_LIMITED: i64 = 45009;

/// Sends to a WeCom robot webhook.
#[derive(Clone, Debug)]
pub struct WeComNotifier {
    client: reqwest::Client,
    url: String,
}

/// The markdown message.
pub fn payload(n: &Notification) -> serde_json::Value {
    // WeCom markdown colours: info (green), warning (orange), comment (grey).
    let color = match n.status() {
        AlertStatus::Resolved => "info",
        AlertStatus::Firing => "warning",
    };
    let md = render::markdown(n);
    let (first, rest) = md.split_once('\n').unwrap_or((md.as_str(), ""));
    let title = first.trim_start_matches("### ");
    let content = format!("### <font color=\"{color}\">{title}</font>\n{rest}");
    json!({
        "msgtype": "markdown",
        "markdown": {"content": truncate_bytes(&content, MAX_CONTENT_BYTES, TRUNCATED_MARKER)}
    })
}

impl WeComNotifier {
    /// A notifier for `url` (with `key`).
    pub fn new(client: reqwest::Client, url: String) -> Self {
        WeComNotifier { client, url }
    }
}

impl Notifier for WeComNotifier {
    fn kind(&self) -> &'static str {
        "wecom"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let text = http::post_json(&self.client, "wecom", &self.url, &payload(n)).await?;
            http::check_code("wecom", &text, "errcode", "errmsg", &[RATE_LIMITED])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::model::fixtures::{alert, notification};
    use crate::alerting::notify::test_server::TestServer;
    use weir_crds::stream_job::Severity;

    fn accept_within_limit(r: &crate::alerting::notify::test_server::Received) -> (u16, String) {
        let content = r.json["markdown"]["content"].as_str().unwrap_or_default();
        if r.json["msgtype"] != "markdown" {
            return (
                200,
                r#"{"errcode":40008,"errmsg":"invalid message type"}"#.into(),
            );
        }
        if content.len() > MAX_CONTENT_BYTES {
            return (
                200,
                r#"{"errcode":40058,"errmsg":"markdown.content exceed max length 4096"}"#.into(),
            );
        }
        (200, r#"{"errcode":0,"errmsg":"ok"}"#.into())
    }

    #[tokio::test]
    async fn markdown_message_is_accepted() {
        let server = TestServer::start(accept_within_limit).await;
        let n = WeComNotifier::new(
            reqwest::Client::new(),
            format!("{}/cgi-bin/webhook/send?key=k1", server.base),
        );
        let note = notification(vec![alert(
            "lagGrowing",
            Severity::Warning,
            AlertStatus::Firing,
        )]);
        let sent = n.send(&note).await;
        assert!(sent.is_ok(), "{sent:?}");
        let r = server.only();
        assert_eq!(
            (r.path.as_str(), r.query.get("key").map(String::as_str)),
            ("/cgi-bin/webhook/send", Some("k1"))
        );
        let content = r.json["markdown"]["content"].as_str().unwrap_or_default();
        assert!(content.starts_with("### <font color=\"warning\">[WARNING] ads/ctr-samples: lagGrowing on ctr-samples</font>\n"), "{content}");
        assert!(!content.contains("(truncated)"));
    }

    #[tokio::test]
    async fn a_large_digest_is_cut_to_4096_bytes_on_a_char_boundary() {
        let server = TestServer::start(accept_within_limit).await;
        let n = WeComNotifier::new(
            reqwest::Client::new(),
            format!("{}/send?key=k1", server.base),
        );
        let mut a = alert("backpressureHigh", Severity::Critical, AlertStatus::Firing);
        a.description = "下游写入阻塞，作业处理变慢。".repeat(20); // multi-byte text
        let note = notification(vec![a; 30]);
        let sent = n.send(&note).await;
        assert!(sent.is_ok(), "{sent:?}");
        let content = server.only().json["markdown"]["content"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(content.len() <= MAX_CONTENT_BYTES, "{}", content.len());
        assert!(
            content.len() > MAX_CONTENT_BYTES - 400,
            "cut near the limit, got {}",
            content.len()
        );
        assert!(content.ends_with(TRUNCATED_MARKER));
    }

    #[tokio::test]
    async fn http_errors_are_retryable_when_the_server_is_at_fault() {
        let server = TestServer::start(|_| (502, "bad gateway".into())).await;
        let n = WeComNotifier::new(
            reqwest::Client::new(),
            format!("{}/send?key=k1", server.base),
        );
        let note = notification(vec![alert(
            "jobFailed",
            Severity::Critical,
            AlertStatus::Firing,
        )]);
        let e = n.send(&note).await.err();
        assert_eq!(
            e.as_ref().map(|e| e.to_string()),
            Some("wecom: HTTP 502: bad gateway".into())
        );
        assert_eq!(e.map(|e| e.retryable()), Some(true));
    }
}
