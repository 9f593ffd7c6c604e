//! The `AlertSubscription` custom resource: which jobs' alerts go to whom, over which channels.

use crate::conditions::Condition;
use crate::duration::Dur;
pub use crate::stream_job::Severity;
use chrono::{DateTime, Utc};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Subscribes channels to the alerts of the StreamJobs it selects, from a minimum severity up.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "AlertSubscription",
    namespaced,
    status = "AlertSubscriptionStatus",
    shortname = "asub",
    category = "weir",
    printcolumn = r#"{"name":"Min severity","type":"string","jsonPath":".spec.minSeverity"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AlertSubscriptionSpec {
    /// Which jobs (in this namespace) this subscription covers.
    #[serde(default)]
    pub selector: JobSelector,
    /// Alerts below this severity are not sent.
    #[serde(default)]
    pub min_severity: Severity,
    /// Where to send.
    pub channels: Vec<ChannelSpec>,
    /// Used when a channel keeps failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<ChannelSpec>,
    /// Re-send a still-firing alert after this long.
    #[serde(default = "default_repeat")]
    pub repeat_interval: Dur,
    /// Also notify when an alert resolves.
    #[serde(default = "default_true")]
    pub send_resolved: bool,
    /// Times when nothing is sent (alerts still show in status).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mute_windows: Vec<MuteWindow>,
}

fn default_repeat() -> Dur {
    Dur::secs(4 * 3600)
}
fn default_true() -> bool {
    true
}

/// Selects jobs by labels and/or names; an empty selector selects every job in the namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobSelector {
    /// Every label here must match the job's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// If set, the job's name must be one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_names: Vec<String>,
}

/// A daily time range (UTC) during which notifications are held back.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MuteWindow {
    /// Start, `HH:MM` (UTC).
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,
    /// End, `HH:MM` (UTC); may be before start to span midnight.
    #[schemars(regex(pattern = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub end: String,
    /// Weekdays (`mon`..`sun`); empty means every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
}

/// One channel; set exactly one of the kind fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelSpec {
    /// Name used in status, metrics and events; defaults to the kind and index.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Email over the operator's SMTP settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<EmailChannel>,
    /// Slack incoming webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slack: Option<WebhookChannel>,
    /// DingTalk group robot (HMAC-SHA256 signed when `signSecret` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dingtalk: Option<WebhookChannel>,
    /// Feishu/Lark custom bot (signed when `signSecret` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feishu: Option<WebhookChannel>,
    /// WeCom group robot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wecom: Option<WebhookChannel>,
    /// Microsoft Teams Workflows webhook (Adaptive Card).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teams: Option<WebhookChannel>,
    /// Generic webhook with an Alertmanager-compatible body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookChannel>,
    /// An existing Alertmanager: alerts are posted to its `/api/v2/alerts` and re-sent while
    /// they fire, so its routes, silences and inhibitions apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<AlertmanagerChannel>,
}

/// An Alertmanager to post alerts to (API v2).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerChannel {
    /// Base URL, e.g. `http://alertmanager.monitoring:9093` (a path prefix such as
    /// `/alertmanager` is kept); alerts go to `<url>/api/v2/alerts`.
    #[schemars(regex(pattern = r"^https?://[^/?#\s]+"))]
    pub url: String,
    /// Re-send each firing alert this often; its `endsAt` is set 4 intervals ahead, so
    /// Alertmanager keeps it firing between sends and resolves it by itself if Weir stops.
    #[serde(default = "default_resend")]
    pub resend_interval: Dur,
    /// Secret key holding a bearer token (`Authorization: Bearer ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret: Option<SecretKeyRef>,
    /// HTTP basic authentication, both parts from Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<BasicAuth>,
}

fn default_resend() -> Dur {
    Dur::secs(60)
}

/// HTTP basic authentication credentials, from Secrets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BasicAuth {
    /// Secret key holding the user name.
    pub username_secret: SecretKeyRef,
    /// Secret key holding the password.
    pub password_secret: SecretKeyRef,
}

/// Email recipients.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmailChannel {
    /// Recipient addresses.
    pub to: Vec<String>,
}

/// A webhook URL (and optional signing secret), both from Secrets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookChannel {
    /// Secret key holding the URL.
    pub url_secret: SecretKeyRef,
    /// Secret key holding the signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_secret: Option<SecretKeyRef>,
}

/// A key in a Secret in the subscription's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    pub name: String,
    /// Key within the Secret.
    pub key: String,
}

/// What the operator found about the subscription.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertSubscriptionStatus {
    /// Ready (all channels usable) and ChannelsValid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Per-channel state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelStatus>,
}

/// One channel's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelStatus {
    /// Channel name.
    pub name: String,
    /// Whether it can be used.
    pub ready: bool,
    /// Why it cannot be used, or that it is ready.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The last message sent (or tried) on this channel, written by the alert dispatcher after
    /// every delivery attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<ChannelDelivery>,
}

/// The outcome of the last delivery attempt on a channel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelDelivery {
    /// When it was attempted.
    pub time: DateTime<Utc>,
    /// `Delivered`; or, after a failure, what happens next: `Retrying`, `Diverted` (sent to
    /// the fallback channel instead) or `GaveUp`.
    pub outcome: String,
    /// The message, e.g. `[CRITICAL] ads/ctr: backpressure 0.93 is above 0.8`.
    pub title: String,
    /// Attempt number on this channel (1 for the first send).
    pub attempt: u32,
    /// The error text of a failed attempt, empty when delivered.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}

impl ChannelSpec {
    /// The kind fields this channel sets.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut v = vec![];
        for (set, name) in [
            (self.email.is_some(), "email"),
            (self.slack.is_some(), "slack"),
            (self.dingtalk.is_some(), "dingtalk"),
            (self.feishu.is_some(), "feishu"),
            (self.wecom.is_some(), "wecom"),
            (self.teams.is_some(), "teams"),
            (self.webhook.is_some(), "webhook"),
            (self.alertmanager.is_some(), "alertmanager"),
        ] {
            if set {
                v.push(name);
            }
        }
        v
    }

    /// How often a firing alert must be sent again to this channel regardless of the
    /// subscription's `repeatInterval` (Alertmanager forgets alerts that are not re-sent).
    pub fn resend_interval(&self) -> Option<std::time::Duration> {
        self.alertmanager
            .as_ref()
            .map(|a| a.resend_interval.0.max(std::time::Duration::from_secs(1)))
    }

    /// The channel's display name: `name`, or `<kind>-<index>`.
    pub fn display_name(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| {
            format!(
                "{}-{}",
                self.kinds().first().copied().unwrap_or("channel"),
                index
            )
        })
    }
}
