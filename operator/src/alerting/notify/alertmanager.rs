//! Alertmanager as a channel: posts the notification's alerts to `<url>/api/v2/alerts` as
//! postable alerts (labels, annotations, startsAt, endsAt, generatorURL), so an existing
//! Alertmanager's routes, silences and inhibitions apply to Weir's alerts.
//!
//! A firing alert's `endsAt` is [`ENDS_AFTER_RESENDS`] resend intervals after the send, so
//! Alertmanager keeps it firing between Weir's re-sends (the engine re-sends to this channel
//! every `resendInterval`, see `ChannelSpec::resend_interval`) and resolves it by itself if
//! Weir stops sending. A resolved alert carries its resolve time as `endsAt`.

use crate::alerting::model::{AlertStatus, Notification};
use crate::alerting::notify::{http, Notifier, NotifyError};
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use serde_json::json;
use std::time::Duration;

/// A firing alert's `endsAt` is this many resend intervals ahead (as Prometheus does).
pub const ENDS_AFTER_RESENDS: u32 = 4;

/// The API path appended to the configured base URL.
pub const ALERTS_PATH: &str = "/api/v2/alerts";

/// How requests authenticate.
#[derive(Clone, PartialEq, Eq)]
pub enum AlertmanagerAuth {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// HTTP basic authentication.
    Basic {
        /// User name.
        username: String,
        /// Password.
        password: String,
    },
}

impl std::fmt::Debug for AlertmanagerAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AlertmanagerAuth::Bearer(_) => f.write_str("Bearer(***)"),
            AlertmanagerAuth::Basic { username, .. } => write!(f, "Basic({username}:***)"),
        }
    }
}

impl AlertmanagerAuth {
    /// The `Authorization` header value.
    pub fn header(&self) -> String {
        match self {
            AlertmanagerAuth::Bearer(t) => format!("Bearer {t}"),
            AlertmanagerAuth::Basic { username, password } => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"))
            ),
        }
    }
}

/// `<base>/api/v2/alerts`, with one slash between them.
pub fn alerts_url(base: &str) -> String {
    format!("{}{ALERTS_PATH}", base.trim_end_matches('/'))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The postable alerts for `n`, sent at `now`: labels are the alert's (`alertname` = rule,
/// `severity`, `namespace`, `job`, the job's `spec.alerting.labels`) plus `streamjob`;
/// annotations are summary, description, value and threshold. Firing alerts end at
/// `now + ends_after`, resolved ones at their resolve time.
pub fn payload(n: &Notification, now: DateTime<Utc>, ends_after: Duration) -> serde_json::Value {
    let ends_after = chrono::Duration::from_std(ends_after).unwrap_or(chrono::Duration::hours(1));
    let alerts: Vec<serde_json::Value> = n
        .alerts()
        .map(|(g, a)| {
            let mut labels = a.labels.clone();
            labels
                .entry("streamjob".into())
                .or_insert_with(|| g.job.clone());
            let ends_at = match a.status {
                AlertStatus::Firing => now + ends_after,
                AlertStatus::Resolved => a.ends_at.unwrap_or(now),
            };
            let mut alert = json!({
                "labels": labels,
                "annotations": a.annotations(),
                "startsAt": rfc3339(a.starts_at),
                "endsAt": rfc3339(ends_at),
            });
            if !n.external_url.is_empty() {
                alert["generatorURL"] = json!(n.external_url);
            }
            alert
        })
        .collect();
    json!(alerts)
}

/// Posts alerts to one Alertmanager.
#[derive(Clone, Debug)]
pub struct AlertmanagerNotifier {
    client: reqwest::Client,
    url: String,
    auth: Option<AlertmanagerAuth>,
    resend_interval: Duration,
}

impl AlertmanagerNotifier {
    /// A notifier for the Alertmanager at `base_url` (without `/api/v2/alerts`).
    pub fn new(
        client: reqwest::Client,
        base_url: &str,
        auth: Option<AlertmanagerAuth>,
        resend_interval: Duration,
    ) -> Self {
        AlertmanagerNotifier {
            client,
            url: alerts_url(base_url),
            auth,
            resend_interval,
        }
    }
}

impl Notifier for AlertmanagerNotifier {
    fn kind(&self) -> &'static str {
        "alertmanager"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let ends_after = self
                .resend_interval
                .max(Duration::from_secs(1))
                .saturating_mul(ENDS_AFTER_RESENDS);
            let body = payload(n, Utc::now(), ends_after).to_string().into_bytes();
            let headers: Vec<(&str, String)> = self
                .auth
                .iter()
                .map(|a| ("authorization", a.header()))
                .collect();
            http::post_bytes(&self.client, "alertmanager", &self.url, body, &headers).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
#[path = "alertmanager_tests.rs"]
mod tests;
