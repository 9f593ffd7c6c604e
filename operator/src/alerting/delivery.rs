//! The I/O edge of the engine: sends the messages that are due, concurrently, with notifiers
//! resolved from each subscription's Secrets, and reports every outcome back to the engine.

use crate::alerting::dispatch::{ChannelTarget, Disposition, Outcome};
use crate::alerting::engine::AlertEngine;
use crate::alerting::metrics::NotificationMetrics;
use crate::alerting::notify::{ChannelResolver, Notifier, SecretData};
use crate::alerting::routing::Subscription;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What happened to one message (for events and logs).
#[derive(Clone, Debug, PartialEq)]
pub struct DeliveryReport {
    /// Where it went.
    pub target: ChannelTarget,
    /// Attempt number on that channel.
    pub attempt: u32,
    /// The error, if the send failed.
    pub error: Option<String>,
    /// What the engine does next with it.
    pub disposition: Disposition,
    /// The jobs it is about (`(namespace, job)`; more than one only in a digest), so events
    /// can be put on each StreamJob.
    pub jobs: Vec<(String, String)>,
    /// The message's title, e.g. `[WARNING] ads/ctr: ...`.
    pub title: String,
}

/// Sends everything due at `now`. `secrets` holds Secret data per namespace (see
/// [`crate::alerting::subscription::required_secrets`]). A channel that cannot be resolved
/// (missing Secret, bad URL) counts as a failed, non-retryable send, so the fallback is used.
pub async fn deliver_due(
    engine: &mut AlertEngine,
    now: DateTime<Utc>,
    subscriptions: &[Subscription],
    secrets: &BTreeMap<String, SecretData>,
    resolver: &ChannelResolver,
    metrics: Option<&NotificationMetrics>,
) -> Vec<DeliveryReport> {
    let due = engine.take_due(now);
    let empty = SecretData::new();
    let sends = due.iter().map(|d| {
        let notifier: Result<Arc<dyn Notifier>, String> = subscriptions
            .iter()
            .find(|s| s.key() == d.target.subscription)
            .ok_or_else(|| format!("subscription {} no longer exists", d.target.subscription))
            .and_then(|s| {
                let spec = s
                    .channel(&d.target.channel, d.target.fallback)
                    .ok_or_else(|| format!("channel '{}' no longer exists", d.target.channel))?;
                let data = secrets.get(&s.namespace).unwrap_or(&empty);
                resolver
                    .resolve(spec, &d.target.channel, data)
                    .map_err(|e| e.to_string())
            });
        async move {
            match notifier {
                Ok(n) => match n.send(&d.notification).await {
                    Ok(()) => Outcome::Sent,
                    Err(e) => e.to_outcome(),
                },
                Err(message) => Outcome::Failed {
                    message,
                    retryable: false,
                },
            }
        }
    });
    let outcomes = futures::future::join_all(sends).await;
    let mut reports = Vec::with_capacity(due.len());
    for (d, outcome) in due.into_iter().zip(outcomes) {
        let error = match &outcome {
            Outcome::Sent => None,
            Outcome::Failed { message, .. } => Some(message.clone()),
        };
        let disposition = engine.report(now, d.id, outcome);
        if let Some(m) = metrics {
            m.record(&d.target.kind, &disposition);
        }
        let jobs = d
            .notification
            .groups
            .iter()
            .map(|g| (g.namespace.clone(), g.job.clone()))
            .collect();
        reports.push(DeliveryReport {
            jobs,
            title: d.notification.title(),
            target: d.target,
            attempt: d.attempt,
            error,
            disposition,
        });
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::engine::JobTick;
    use crate::alerting::notify::test_server::TestServer;
    use crate::alerting::routing::JobRouting;
    use crate::alerting::rules::RuleResult;
    use std::time::Duration;
    use weir_crds::alert_subscription::{
        AlertSubscriptionSpec, ChannelSpec, SecretKeyRef, WebhookChannel,
    };
    use weir_crds::stream_job::{Phase, Severity};

    fn hook(key: &str) -> Option<WebhookChannel> {
        Some(WebhookChannel {
            url_secret: SecretKeyRef {
                name: "hooks".into(),
                key: key.into(),
            },
            sign_secret: None,
        })
    }

    #[tokio::test]
    async fn due_messages_are_sent_and_a_broken_channel_goes_to_the_fallback() {
        let server = TestServer::start(|_| (200, String::new())).await;
        let sub = Subscription {
            namespace: "ads".into(),
            name: "oncall".into(),
            spec: AlertSubscriptionSpec {
                channels: vec![
                    ChannelSpec {
                        webhook: hook("good"),
                        ..Default::default()
                    },
                    ChannelSpec {
                        name: Some("broken".into()),
                        slack: hook("missing"),
                        ..Default::default()
                    },
                ],
                fallback: Some(ChannelSpec {
                    webhook: hook("good"),
                    ..Default::default()
                }),
                ..Default::default()
            },
        };
        let secrets = BTreeMap::from([(
            "ads".to_string(),
            SecretData::from([(
                "hooks".to_string(),
                BTreeMap::from([(
                    "good".to_string(),
                    format!("{}/hook", server.base).into_bytes(),
                )]),
            )]),
        )]);
        let mut engine = AlertEngine::default();
        let now = Utc::now();
        let tick = JobTick {
            job: JobRouting {
                namespace: "ads".into(),
                name: "ctr".into(),
                labels: BTreeMap::new(),
            },
            alert_labels: BTreeMap::new(),
            phase: Some(Phase::Running),
            results: vec![RuleResult {
                rule: "jobFailed".into(),
                severity: Some(Severity::Critical),
                value: None,
                threshold: None,
                for_: Duration::ZERO,
                never_suppressed: false,
                inhibits: vec![],
                summary: "ctr has failed".into(),
                description: String::new(),
                error: None,
            }],
        };
        engine.tick_job(now, &tick, std::slice::from_ref(&sub));
        let resolver = ChannelResolver::new(reqwest::Client::new(), None);
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = NotificationMetrics::register(&mut registry);
        let subs = [sub];
        let reports =
            deliver_due(&mut engine, now, &subs, &secrets, &resolver, Some(&metrics)).await;
        assert_eq!(reports.len(), 2);
        assert_eq!(
            reports[0].jobs,
            vec![("ads".to_string(), "ctr".to_string())]
        );
        let by_channel = |name: &str| reports.iter().find(|r| r.target.channel == name).cloned();
        let good = by_channel("webhook-0");
        assert_eq!(good.map(|r| r.disposition), Some(Disposition::Delivered));
        let broken = by_channel("broken");
        assert_eq!(
            broken.as_ref().and_then(|r| r.error.as_deref()),
            Some("channel 'broken': Secret 'hooks' has no key 'missing'")
        );
        assert!(matches!(
            broken.map(|r| r.disposition),
            Some(Disposition::Diverted { .. })
        ));
        let reports =
            deliver_due(&mut engine, now, &subs, &secrets, &resolver, Some(&metrics)).await;
        assert_eq!((reports.len(), reports[0].target.fallback), (1, true));
        assert_eq!(reports[0].disposition, Disposition::Delivered);
        assert_eq!(
            server.received().len(),
            2,
            "primary webhook and fallback each got the alert"
        );
        assert!(engine.state.outbox.queue.is_empty());
    }
}
