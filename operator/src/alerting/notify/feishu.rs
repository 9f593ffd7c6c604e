//! Feishu/Lark custom bot: an interactive card; when a signing secret is set, the body carries
//! `timestamp` (seconds) and `sign = base64(HMAC-SHA256(key = timestamp + "\n" + secret, message = ""))`.

use crate::alerting::model::{AlertStatus, Notification};
use crate::alerting::notify::dingtalk::hmac_sha256_base64;
use crate::alerting::notify::{http, render, Notifier, NotifyError};
use futures::future::BoxFuture;
use serde_json::json;
use weir_crds::stream_job::Severity;

/// Feishu's "request too frequent" code.
const RATE_LIMITED: i64 = 11232;
/// Feishu limits a request body to 20 KB; keep the card text well below.
const MAX_TEXT_BYTES: usize = 18_000;

/// Sends to a Feishu/Lark bot webhook.
#[derive(Clone, Debug)]
pub struct FeishuNotifier {
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
}

/// The Feishu signature for `timestamp_s`.
pub fn sign(secret: &str, timestamp_s: i64) -> String {
    hmac_sha256_base64(format!("{timestamp_s}\n{secret}").as_bytes(), b"")
}

/// The card message (without signature fields).
pub fn payload(n: &Notification) -> serde_json::Value {
    let template = match (n.status(), n.severity()) {
        (AlertStatus::Resolved, _) => "green",
        (_, Severity::Critical) => "red",
        (_, Severity::Warning) => "orange",
        _ => "blue",
    };
    let body = render::markdown(n);
    // The heading repeats the card title; drop it from the body.
    let body = body
        .split_once('\n')
        .map_or(body.as_str(), |(_, rest)| rest);
    let mut elements = vec![json!({
        "tag": "div",
        "text": {"tag": "lark_md", "content": super::truncate_bytes(body.trim(), MAX_TEXT_BYTES, "\n…(truncated)")}
    })];
    if !n.external_url.is_empty() {
        elements.push(json!({
            "tag": "action",
            "actions": [{
                "tag": "button",
                "text": {"tag": "plain_text", "content": "Details"},
                "type": "primary",
                "url": n.external_url,
            }]
        }));
    }
    json!({
        "msg_type": "interactive",
        "card": {
            "config": {"wide_screen_mode": true},
            "header": {
                "title": {"tag": "plain_text", "content": n.title()},
                "template": template,
            },
            "elements": elements,
        }
    })
}

impl FeishuNotifier {
    /// A notifier for `url`, signing with `secret` if given.
    pub fn new(client: reqwest::Client, url: String, secret: Option<String>) -> Self {
        FeishuNotifier {
            client,
            url,
            secret,
        }
    }

    /// The body to post at `timestamp_s`.
    pub fn body(&self, n: &Notification, timestamp_s: i64) -> serde_json::Value {
        let mut body = payload(n);
        if let (Some(secret), Some(obj)) = (&self.secret, body.as_object_mut()) {
            obj.insert("timestamp".into(), json!(timestamp_s.to_string()));
            obj.insert("sign".into(), json!(sign(secret, timestamp_s)));
        }
        body
    }
}

impl Notifier for FeishuNotifier {
    fn kind(&self) -> &'static str {
        "feishu"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let body = self.body(n, chrono::Utc::now().timestamp());
            let text = http::post_json(&self.client, "feishu", &self.url, &body).await?;
            http::check_code("feishu", &text, "code", "msg", &[RATE_LIMITED])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::model::fixtures::{alert, notification};
    use crate::alerting::notify::test_server::{now_ms, Received, TestServer};
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    const SECRET: &str = "qF2pX8kLm3Nv";

    /// Verifies as Feishu documents: HMAC-SHA256 keyed with `timestamp + "\n" + secret` over
    /// an empty message, base64; timestamp (seconds, a string) within one hour.
    fn verify(r: &Received) -> Result<(), String> {
        let ts = r.json["timestamp"]
            .as_str()
            .ok_or("timestamp missing or not a string")?;
        let ts: i64 = ts.parse().map_err(|_| "timestamp not a number")?;
        if (now_ms() / 1000 - ts).abs() > 3600 {
            return Err("timestamp more than an hour off (or in ms)".into());
        }
        let mac = Hmac::<Sha256>::new_from_slice(format!("{ts}\n{SECRET}").as_bytes())
            .map_err(|e| e.to_string())?;
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        match r.json["sign"].as_str() {
            Some(s) if s == expected => Ok(()),
            other => Err(format!("sign {other:?} != {expected}")),
        }
    }

    #[tokio::test]
    async fn signed_interactive_card_is_accepted() {
        let server = TestServer::start(|r| match verify(r) {
            Ok(()) => (200, r#"{"code":0,"msg":"success","data":{}}"#.into()),
            Err(e) => (200, format!(r#"{{"code":19021,"msg":"sign match fail or timestamp is not within one hour from current time: {e}"}}"#)),
        })
        .await;
        let n = FeishuNotifier::new(
            reqwest::Client::new(),
            format!("{}/open-apis/bot/v2/hook/xyz", server.base),
            Some(SECRET.into()),
        );
        let note = notification(vec![alert(
            "checkpointStale",
            Severity::Warning,
            AlertStatus::Firing,
        )]);
        let sent = n.send(&note).await;
        let r = server.only();
        assert!(sent.is_ok(), "{sent:?}");
        assert_eq!(r.path, "/open-apis/bot/v2/hook/xyz");
        assert_eq!(r.json["msg_type"], "interactive");
        let card = &r.json["card"];
        assert_eq!(card["header"]["title"]["tag"], "plain_text");
        assert_eq!(
            card["header"]["title"]["content"],
            "[WARNING] ads/ctr-samples: checkpointStale on ctr-samples"
        );
        assert_eq!(card["header"]["template"], "orange");
        assert_eq!(card["elements"][0]["text"]["tag"], "lark_md");
        assert!(card["elements"][0]["text"]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("**FIRING · warning**"));
        assert_eq!(
            card["elements"][1]["actions"][0]["url"],
            "https://weir.example.com"
        );
    }

    #[tokio::test]
    async fn a_bad_signature_is_a_permanent_error() {
        let server = TestServer::start(|r| match verify(r) {
            Ok(()) => (200, r#"{"code":0,"msg":"success"}"#.into()),
            Err(_) => (200, r#"{"code":19021,"msg":"sign match fail"}"#.into()),
        })
        .await;
        let n = FeishuNotifier::new(
            reqwest::Client::new(),
            format!("{}/hook", server.base),
            Some("other".into()),
        );
        let note = notification(vec![alert(
            "jobFailed",
            Severity::Critical,
            AlertStatus::Resolved,
        )]);
        let e = n.send(&note).await.err();
        assert_eq!(
            e.as_ref().map(|e| e.to_string()),
            Some("feishu: rejected: code 19021: sign match fail".into())
        );
        assert_eq!(e.map(|e| e.retryable()), Some(false));
        assert_eq!(server.only().json["card"]["header"]["template"], "green");
    }
}
