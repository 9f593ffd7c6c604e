//! The alert engine: a pure state machine (time is passed in) that takes rule results per job
//! and decides what to notify.
//!
//! Per job and rule: inactive → pending (condition holds) → firing (held for `for`) →
//! resolved. Notifications are grouped per job and subscription, sent once and then again only
//! after the subscription's `repeatInterval` or when the severity rises, followed by a resolved
//! notification when `sendResolved`. Nothing is sent inside a mute window, nor while the job is
//! Upgrading, Suspending or Suspended — except for rules marked `neverSuppressed` (restart
//! loops). The whole state is serde-serialisable: saved after each tick and loaded after an
//! operator restart, it remembers what was already sent, so a restart does not page again.

use crate::alerting::aggregate::HealthMemory;
use crate::alerting::dispatch::{
    ChannelTarget, Delivery, DispatchConfig, Disposition, Outbox, Outcome,
};
use crate::alerting::lag::LagTrend;
use crate::alerting::model::{Alert, AlertGroup, AlertStatus, Notification};
use crate::alerting::notify::resolver::secret_refs;
use crate::alerting::resend;
use crate::alerting::routing::{JobRouting, Subscription};
use crate::alerting::rules::{severity_str, RuleResult};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use weir_crds::stream_job::{ActiveAlert, Phase, Severity};

/// Engine settings.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Retries, backoff and fallback.
    pub dispatch: DispatchConfig,
    /// Resolved alerts whose resolved notification is still held back (mute window) are
    /// forgotten after this long.
    pub resolved_retention: Duration,
    /// Put into notifications as a link (e.g. a Grafana dashboard).
    pub external_url: String,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            dispatch: DispatchConfig::default(),
            resolved_retention: Duration::from_secs(24 * 3600),
            external_url: String::new(),
        }
    }
}

/// Lifecycle state of one alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AlertPhase {
    /// Condition holds, not yet for the rule's `for`.
    Pending,
    /// Firing.
    Firing,
    /// Stopped firing; kept until resolved notifications are out.
    Resolved,
}

/// What was last sent about an alert to one subscription.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notified {
    /// When.
    pub at: DateTime<Utc>,
    /// At which severity.
    pub severity: Severity,
}

/// One alert (job × rule) in the engine state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertRecord {
    /// Job namespace.
    pub namespace: String,
    /// Job name.
    pub job: String,
    /// Rule name.
    pub rule: String,
    /// Current severity.
    pub severity: Severity,
    /// Lifecycle state.
    pub phase: AlertPhase,
    /// When the condition started holding.
    pub active_since: DateTime<Utc>,
    /// When it started firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_at: Option<DateTime<Utc>>,
    /// When it resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<DateTime<Utc>>,
    /// Latest rendered summary.
    pub summary: String,
    /// Latest rendered description.
    pub description: String,
    /// Latest value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Threshold crossed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Not suppressed during upgrades/suspension.
    #[serde(default)]
    pub never_suppressed: bool,
    /// Rules of the same job held back while this one fires.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inhibits: Vec<String>,
    /// Alert labels.
    pub labels: BTreeMap<String, String>,
    /// Per subscription (`namespace/name`): what was last sent.
    #[serde(default)]
    pub notified: BTreeMap<String, Notified>,
    /// Per subscription channel that needs re-sends (Alertmanager): when it last got the
    /// alert (see [`crate::alerting::resend`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resent: BTreeMap<String, DateTime<Utc>>,
}

/// Per-job memory besides alerts: health aggregation and lag trend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobMemory {
    /// Aggregation memory (checkpoint baseline, restart counters).
    #[serde(default)]
    pub health: HealthMemory,
    /// Input-delay samples (`health.inputDelayMs`; the field keeps its old name for stored state).
    #[serde(default)]
    pub lag: LagTrend,
    /// Kafka consumer lag samples (records).
    #[serde(default)]
    pub kafka_lag: LagTrend,
}

/// Everything the engine remembers; save it after each tick, load it at start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineState {
    /// Format version of this state.
    #[serde(default)]
    pub version: u32,
    /// Alerts by `namespace/job/rule`.
    #[serde(default)]
    pub alerts: BTreeMap<String, AlertRecord>,
    /// Per job by `namespace/job`.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobMemory>,
    /// Queued messages and channel records.
    #[serde(default)]
    pub outbox: Outbox,
}

/// The state could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not valid JSON of the expected shape.
    #[error("cannot load alert engine state: {0}")]
    Decode(#[from] serde_json::Error),
    /// Written by a newer operator.
    #[error("alert engine state has version {found}, this operator reads up to {supported}")]
    Version {
        /// Found.
        found: u32,
        /// Supported.
        supported: u32,
    },
}

/// The state format version this operator writes.
pub const STATE_VERSION: u32 = 1;

impl EngineState {
    /// Serialises to JSON (for a ConfigMap or an annotation).
    pub fn save(&self) -> Result<String, StateError> {
        let mut s = self.clone();
        s.version = STATE_VERSION;
        Ok(serde_json::to_string(&s)?)
    }

    /// Loads saved state; messages that were in flight at the restart are queued again.
    pub fn load(json: &str) -> Result<Self, StateError> {
        let mut s: EngineState = serde_json::from_str(json)?;
        if s.version > STATE_VERSION {
            return Err(StateError::Version {
                found: s.version,
                supported: STATE_VERSION,
            });
        }
        s.outbox.requeue_in_flight();
        Ok(s)
    }
}

/// One job's input to an evaluation tick.
#[derive(Clone, Debug, PartialEq)]
pub struct JobTick {
    /// Namespace, name, labels (`metadata.labels` overlaid with `spec.alerting.labels`).
    pub job: JobRouting,
    /// `spec.alerting.labels`, put on every alert.
    pub alert_labels: BTreeMap<String, String>,
    /// `status.phase`.
    pub phase: Option<Phase>,
    /// Rule results from `RuleSet::evaluate`.
    pub results: Vec<RuleResult>,
}

/// Whether notifications for this job are held back because of its phase.
pub fn phase_suppresses(phase: Option<Phase>) -> bool {
    matches!(
        phase,
        Some(Phase::Upgrading | Phase::Suspending | Phase::Suspended)
    )
}

/// The alert engine.
#[derive(Clone, Debug, Default)]
pub struct AlertEngine {
    /// Settings.
    pub config: EngineConfig,
    /// State (persist it with [`EngineState::save`]).
    pub state: EngineState,
}

fn job_key(namespace: &str, job: &str) -> String {
    format!("{namespace}/{job}")
}

impl AlertEngine {
    /// An engine with the given settings and (loaded or empty) state.
    pub fn new(config: EngineConfig, state: EngineState) -> Self {
        AlertEngine { config, state }
    }

    /// Memory of one job (health aggregation and lag trend), created on first use.
    pub fn job_memory(&mut self, namespace: &str, job: &str) -> &mut JobMemory {
        self.state.jobs.entry(job_key(namespace, job)).or_default()
    }

    /// Forgets a deleted job: its alerts (without notifications) and memory.
    pub fn forget_job(&mut self, namespace: &str, job: &str) {
        let prefix = format!("{}/", job_key(namespace, job));
        self.state.alerts.retain(|k, _| !k.starts_with(&prefix));
        self.state.jobs.remove(&job_key(namespace, job));
    }

    /// One evaluation of one job: advances its alerts and queues the notifications due for
    /// each subscription that selects the job. Returns the job's pending and firing alerts
    /// for `status.activeAlerts`.
    pub fn tick_job(
        &mut self,
        now: DateTime<Utc>,
        tick: &JobTick,
        subscriptions: &[Subscription],
    ) -> Vec<ActiveAlert> {
        self.advance(now, tick);
        self.route(now, tick, subscriptions);
        self.active_alerts(&tick.job.namespace, &tick.job.name)
    }

    fn advance(&mut self, now: DateTime<Utc>, tick: &JobTick) {
        let prefix = format!("{}/", job_key(&tick.job.namespace, &tick.job.name));
        let mut holding = Vec::new();
        for r in &tick.results {
            let Some(severity) = r.severity else { continue };
            holding.push(r.rule.clone());
            let key = format!("{prefix}{}", r.rule);
            let rec = self.state.alerts.entry(key).or_insert_with(|| AlertRecord {
                namespace: tick.job.namespace.clone(),
                job: tick.job.name.clone(),
                rule: r.rule.clone(),
                severity,
                phase: AlertPhase::Pending,
                active_since: now,
                fired_at: None,
                resolved_at: None,
                summary: String::new(),
                description: String::new(),
                value: None,
                threshold: None,
                never_suppressed: false,
                inhibits: Vec::new(),
                labels: BTreeMap::new(),
                notified: BTreeMap::new(),
                resent: BTreeMap::new(),
            });
            if rec.phase == AlertPhase::Resolved {
                rec.phase = AlertPhase::Pending;
                rec.active_since = now;
                rec.fired_at = None;
                rec.resolved_at = None;
            }
            rec.severity = severity;
            rec.summary = r.summary.clone();
            rec.description = r.description.clone();
            rec.value = r.value;
            rec.threshold = r.threshold;
            rec.never_suppressed = r.never_suppressed;
            rec.inhibits = r.inhibits.clone();
            rec.labels = alert_labels(tick, &r.rule, severity);
            let held = (now - rec.active_since).to_std().unwrap_or_default();
            if rec.phase == AlertPhase::Pending && held >= r.for_ {
                rec.phase = AlertPhase::Firing;
                rec.fired_at = Some(now);
            }
        }
        let retention = chrono::Duration::from_std(self.config.resolved_retention)
            .unwrap_or_else(|_| chrono::Duration::days(1));
        self.state.alerts.retain(|k, rec| {
            if !k.starts_with(&prefix) || holding.contains(&rec.rule) {
                return true;
            }
            match rec.phase {
                AlertPhase::Pending => false,
                AlertPhase::Firing => {
                    rec.phase = AlertPhase::Resolved;
                    rec.resolved_at = Some(now);
                    true
                }
                AlertPhase::Resolved => rec.resolved_at.is_some_and(|t| now - t < retention),
            }
        });
    }

    fn route(&mut self, now: DateTime<Utc>, tick: &JobTick, subscriptions: &[Subscription]) {
        let prefix = format!("{}/", job_key(&tick.job.namespace, &tick.job.name));
        let suppressed_phase = phase_suppresses(tick.phase);
        let mut per_sub: BTreeMap<String, Vec<Alert>> = BTreeMap::new();
        // Re-sends to single channels: (subscription, channel index) → alerts.
        let mut per_channel: BTreeMap<(String, usize), Vec<Alert>> = BTreeMap::new();
        let inhibited: Vec<String> = self
            .state
            .alerts
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(_, r)| r.phase == AlertPhase::Firing)
            .flat_map(|(_, r)| r.inhibits.iter().cloned())
            .collect();
        for (key, rec) in self.state.alerts.range_mut(prefix.clone()..) {
            if !key.starts_with(&prefix) {
                break;
            }
            // Forget a subscription that no longer selects the job. One that is absent is kept
            // (the caller's list may be incomplete, e.g. right after a restart; re-paging then
            // would be worse than a stale entry, which goes when the alert is forgotten).
            rec.notified.retain(|s, _| {
                subscriptions
                    .iter()
                    .find(|x| x.key() == *s)
                    .is_none_or(|x| x.selects(&tick.job))
            });
            for sub in subscriptions.iter().filter(|s| s.selects(&tick.job)) {
                let sk = sub.key();
                let muted = sub.muted(now);
                let routes = rec.phase == AlertPhase::Firing && sub.routes(&tick.job, rec.severity);
                let last = rec.notified.get(&sk).cloned();
                if routes {
                    let repeat = chrono::Duration::from_std(sub.spec.repeat_interval.0)
                        .unwrap_or_else(|_| chrono::Duration::hours(4));
                    let due = match &last {
                        None => true,
                        Some(n) => rec.severity > n.severity || now - n.at >= repeat,
                    };
                    let held = muted
                        || (suppressed_phase && !rec.never_suppressed)
                        || inhibited.contains(&rec.rule);
                    if !held {
                        let last_at = last.as_ref().map(|n| n.at);
                        for i in resend::due_resends(sub, &mut rec.resent, last_at, now, due) {
                            per_channel
                                .entry((sk.clone(), i))
                                .or_default()
                                .push(to_alert(rec, AlertStatus::Firing));
                        }
                    }
                    if due && !held {
                        per_sub
                            .entry(sk.clone())
                            .or_default()
                            .push(to_alert(rec, AlertStatus::Firing));
                        rec.notified.insert(
                            sk,
                            Notified {
                                at: now,
                                severity: rec.severity,
                            },
                        );
                    }
                } else if last.is_some() {
                    // Resolved, or no longer severe enough for this subscription.
                    resend::forget(&mut rec.resent, &sk);
                    if !sub.spec.send_resolved {
                        rec.notified.remove(&sk);
                    } else if !muted {
                        per_sub
                            .entry(sk.clone())
                            .or_default()
                            .push(to_alert(rec, AlertStatus::Resolved));
                        rec.notified.remove(&sk);
                    }
                }
            }
        }
        let prefix_ref = &prefix;
        self.state.alerts.retain(|k, rec| {
            !(k.starts_with(prefix_ref)
                && rec.phase == AlertPhase::Resolved
                && rec.notified.is_empty())
        });
        let group = |sk: &str, alerts: Vec<Alert>| Notification {
            receiver: sk.to_string(),
            groups: vec![AlertGroup {
                namespace: tick.job.namespace.clone(),
                job: tick.job.name.clone(),
                alerts,
            }],
            external_url: self.config.external_url.clone(),
        };
        for (sk, alerts) in per_sub {
            let Some(sub) = subscriptions.iter().find(|s| s.key() == sk) else {
                continue;
            };
            let notification = group(&sk, alerts);
            let fallback = sub.fallback_name().map(|name| ChannelTarget {
                subscription: sk.clone(),
                channel: name,
                fallback: true,
                endpoint: sub
                    .spec
                    .fallback
                    .as_ref()
                    .map(|c| endpoint(sub, c))
                    .unwrap_or_default(),
                kind: sub
                    .spec
                    .fallback
                    .as_ref()
                    .and_then(|f| f.kinds().first().copied())
                    .unwrap_or("unknown")
                    .to_string(),
            });
            for (i, channel) in sub.spec.channels.iter().enumerate() {
                self.state.outbox.enqueue(
                    now,
                    channel_target(sub, i, channel),
                    fallback.clone(),
                    notification.clone(),
                );
            }
        }
        // Re-sends keep an alert alive in the channel; they never go to the fallback (which
        // would get one message per interval while the channel is down).
        for ((sk, i), alerts) in per_channel {
            let Some(sub) = subscriptions.iter().find(|s| s.key() == sk) else {
                continue;
            };
            if let Some(channel) = sub.spec.channels.get(i) {
                let notification = group(&sk, alerts);
                self.state
                    .outbox
                    .enqueue(now, channel_target(sub, i, channel), None, notification);
            }
        }
    }

    /// The job's pending and firing alerts, for `status.activeAlerts`.
    pub fn active_alerts(&self, namespace: &str, job: &str) -> Vec<ActiveAlert> {
        let prefix = format!("{}/", job_key(namespace, job));
        self.state
            .alerts
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(_, r)| {
                let (state, since) = match r.phase {
                    AlertPhase::Pending => ("pending", r.active_since),
                    AlertPhase::Firing => ("firing", r.fired_at.unwrap_or(r.active_since)),
                    AlertPhase::Resolved => return None,
                };
                Some(ActiveAlert {
                    name: r.rule.clone(),
                    severity: r.severity,
                    state: state.to_string(),
                    since,
                    summary: r.summary.clone(),
                })
            })
            .collect()
    }

    /// Messages to send now (rate limits applied; see [`Outbox::take_due`]).
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Delivery> {
        self.state.outbox.take_due(now)
    }

    /// Records how a delivery went (retry, fallback or done).
    pub fn report(&mut self, now: DateTime<Utc>, id: u64, outcome: Outcome) -> Disposition {
        self.state
            .outbox
            .report(now, id, outcome, &self.config.dispatch)
    }
}

/// The rate-limit endpoint of a channel: `namespace/secret/key` of its URL Secret, if any
/// (an Alertmanager's Secrets hold credentials, not its address).
fn endpoint(sub: &Subscription, c: &weir_crds::alert_subscription::ChannelSpec) -> String {
    if c.alertmanager.is_some() {
        return String::new();
    }
    secret_refs(c)
        .first()
        .map(|r| format!("{}/{}/{}", sub.namespace, r.name, r.key))
        .unwrap_or_default()
}

/// Where the subscription's `i`-th channel is.
fn channel_target(
    sub: &Subscription,
    i: usize,
    channel: &weir_crds::alert_subscription::ChannelSpec,
) -> ChannelTarget {
    ChannelTarget {
        subscription: sub.key(),
        channel: channel.display_name(i),
        fallback: false,
        endpoint: endpoint(sub, channel),
        kind: channel
            .kinds()
            .first()
            .copied()
            .unwrap_or("unknown")
            .to_string(),
    }
}

fn alert_labels(tick: &JobTick, rule: &str, severity: Severity) -> BTreeMap<String, String> {
    let mut labels = tick.alert_labels.clone();
    labels.insert("alertname".into(), rule.into());
    labels.insert("severity".into(), severity_str(severity).into());
    labels.insert("namespace".into(), tick.job.namespace.clone());
    labels.insert("job".into(), tick.job.name.clone());
    labels
}

fn to_alert(rec: &AlertRecord, status: AlertStatus) -> Alert {
    Alert {
        rule: rec.rule.clone(),
        severity: rec.severity,
        status,
        summary: rec.summary.clone(),
        description: rec.description.clone(),
        value: rec.value,
        threshold: rec.threshold,
        starts_at: rec.fired_at.unwrap_or(rec.active_since),
        ends_at: match status {
            AlertStatus::Resolved => Some(rec.resolved_at.unwrap_or(rec.active_since)),
            AlertStatus::Firing => None,
        },
        labels: rec.labels.clone(),
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
