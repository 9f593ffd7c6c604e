//! DingTalk group robot: a markdown message; when a signing secret is set, the URL gets
//! `timestamp` (ms) and `sign = urlencode(base64(HMAC-SHA256(secret, timestamp + "\n" + secret)))`.

use crate::alerting::model::Notification;
use crate::alerting::notify::{http, render, Notifier, NotifyError};
use base64::Engine;
use futures::future::BoxFuture;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

/// DingTalk error code for "too many messages" (robot rate limit).
const RATE_LIMITED: i64 = 130101;
/// DingTalk limits markdown text to about 20,000 bytes.
const MAX_TEXT_BYTES: usize = 20_000;

/// Sends to a DingTalk robot webhook.
#[derive(Clone, Debug)]
pub struct DingTalkNotifier {
    client: reqwest::Client,
    url: String,
    secret: Option<String>,
}

/// The DingTalk signature for `timestamp_ms`, base64 (not yet URL-encoded).
pub fn sign(secret: &str, timestamp_ms: i64) -> String {
    hmac_sha256_base64(
        secret.as_bytes(),
        format!("{timestamp_ms}\n{secret}").as_bytes(),
    )
}

/// base64(HMAC-SHA256(key, message)).
pub fn hmac_sha256_base64(key: &[u8], message: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail; an empty signature would be
    // rejected by the provider rather than panic here.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return String::new();
    };
    mac.update(message);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// The markdown message body.
pub fn payload(n: &Notification) -> serde_json::Value {
    json!({
        "msgtype": "markdown",
        "markdown": {
            "title": n.title(),
            "text": super::truncate_bytes(&render::markdown(n), MAX_TEXT_BYTES, "\n\n…(truncated)"),
        }
    })
}

impl DingTalkNotifier {
    /// A notifier for `url` (with `access_token`), signing with `secret` if given.
    pub fn new(client: reqwest::Client, url: String, secret: Option<String>) -> Self {
        DingTalkNotifier {
            client,
            url,
            secret,
        }
    }

    /// The URL to post to at `timestamp_ms`.
    pub fn signed_url(&self, timestamp_ms: i64) -> String {
        match &self.secret {
            None => self.url.clone(),
            Some(secret) => {
                let sep = if self.url.contains('?') { '&' } else { '?' };
                format!(
                    "{}{sep}timestamp={timestamp_ms}&sign={}",
                    self.url,
                    urlencoding::encode(&sign(secret, timestamp_ms))
                )
            }
        }
    }
}

impl Notifier for DingTalkNotifier {
    fn kind(&self) -> &'static str {
        "dingtalk"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let url = self.signed_url(chrono::Utc::now().timestamp_millis());
            let text = http::post_json(&self.client, "dingtalk", &url, &payload(n)).await?;
            http::check_code("dingtalk", &text, "errcode", "errmsg", &[RATE_LIMITED])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::model::fixtures::{alert, notification};
    use crate::alerting::model::AlertStatus;
    use crate::alerting::notify::test_server::{now_ms, Received, TestServer};
    use weir_crds::stream_job::Severity;

    const SECRET: &str = "SEC6f0e1d2c3b4a5968778695a4b3c2d1e0f";

    /// Verifies as DingTalk documents: recompute HMAC-SHA256(secret, timestamp + "\n" + secret),
    /// base64, compare with the URL-decoded `sign`; the timestamp must be within one hour.
    fn verify(r: &Received) -> Result<(), String> {
        let ts = r.query.get("timestamp").ok_or("no timestamp")?;
        let ts: i64 = ts.parse().map_err(|_| "timestamp not a number")?;
        if (now_ms() - ts).abs() > 3_600_000 {
            return Err("timestamp more than an hour off".into());
        }
        let mut mac =
            Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).map_err(|e| e.to_string())?;
        mac.update(format!("{ts}\n{SECRET}").as_bytes());
        let expected =
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let got = r.query.get("sign").ok_or("no sign")?;
        if *got != expected {
            return Err(format!("sign mismatch: {got} != {expected}"));
        }
        if !r
            .raw_query
            .contains(&format!("sign={}", urlencoding::encode(&expected)))
        {
            return Err("sign not URL-encoded in the query".into());
        }
        Ok(())
    }

    #[tokio::test]
    async fn signed_markdown_message_is_accepted() {
        let server = TestServer::start(|r| match verify(r) {
            Ok(()) => (200, r#"{"errcode":0,"errmsg":"ok"}"#.into()),
            Err(e) => (
                200,
                format!(r#"{{"errcode":310000,"errmsg":"sign not match: {e}"}}"#),
            ),
        })
        .await;
        let url = format!("{}/robot/send?access_token=abc", server.base);
        let n = DingTalkNotifier::new(reqwest::Client::new(), url, Some(SECRET.into()));
        let note = notification(vec![alert(
            "backpressureHigh",
            Severity::Critical,
            AlertStatus::Firing,
        )]);
        let sent = n.send(&note).await;
        let r = server.only();
        assert!(sent.is_ok(), "{sent:?}; {:?}", verify(&r));
        assert_eq!(r.path, "/robot/send");
        assert_eq!(r.query.get("access_token").map(String::as_str), Some("abc"));
        assert!(r.content_type.starts_with("application/json"));
        assert_eq!(r.json["msgtype"], "markdown");
        assert_eq!(
            r.json["markdown"]["title"],
            "[CRITICAL] ads/ctr-samples: backpressureHigh on ctr-samples"
        );
        let text = r.json["markdown"]["text"].as_str().unwrap_or_default();
        assert!(text.starts_with("### [CRITICAL] ads/ctr-samples"), "{text}");
        assert!(text.contains("value 0.85 · threshold 0.8"));
    }

    #[tokio::test]
    async fn wrong_secret_and_rate_limit_are_errors_with_the_right_retryability() {
        let server = TestServer::start(|r| match verify(r) {
            Ok(()) => (200, r#"{"errcode":130101,"errmsg":"send too fast"}"#.into()),
            Err(_) => (
                200,
                r#"{"errcode":310000,"errmsg":"sign not match"}"#.into(),
            ),
        })
        .await;
        let note = notification(vec![alert(
            "jobFailed",
            Severity::Critical,
            AlertStatus::Firing,
        )]);
        let url = format!("{}/robot/send?access_token=abc", server.base);
        let bad = DingTalkNotifier::new(reqwest::Client::new(), url.clone(), Some("wrong".into()));
        let e = bad.send(&note).await.err();
        assert_eq!(
            e.as_ref().map(|e| e.to_string()),
            Some("dingtalk: rejected: errcode 310000: sign not match".into())
        );
        assert_eq!(e.map(|e| e.retryable()), Some(false));
        let limited = DingTalkNotifier::new(reqwest::Client::new(), url, Some(SECRET.into()));
        assert_eq!(
            limited.send(&note).await.err().map(|e| e.retryable()),
            Some(true)
        );
    }

    #[tokio::test]
    async fn unsigned_robot_gets_no_signature_params() {
        let server = TestServer::start(|_| (200, r#"{"errcode":0,"errmsg":"ok"}"#.into())).await;
        let url = format!("{}/robot/send?access_token=abc", server.base);
        let n = DingTalkNotifier::new(reqwest::Client::new(), url, None);
        let note = notification(vec![alert(
            "jobFailed",
            Severity::Critical,
            AlertStatus::Resolved,
        )]);
        assert!(n.send(&note).await.is_ok());
        let r = server.only();
        assert!(!r.query.contains_key("sign") && !r.query.contains_key("timestamp"));
    }
}
