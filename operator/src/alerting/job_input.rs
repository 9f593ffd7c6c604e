//! From Kubernetes objects to the engine's inputs: one call per job per health scrape
//! ([`evaluate_job`]) runs lag trend, rules and the engine on a `StreamJob`.

use crate::alerting::engine::{AlertEngine, JobMemory, JobTick};
use crate::alerting::routing::{JobRouting, Subscription};
use crate::alerting::rules::{severity_str, JobFacts, RuleSet};
use chrono::{DateTime, Utc};
use weir_crds::alert_subscription::AlertSubscription;
use weir_crds::stream_job::{ActiveAlert, JobHealth, Phase, StreamJob};
use weir_crds::Condition;

/// `restoreFellBack` stays true this long after a restore with reason `fallback`.
pub const RESTORE_FALLBACK_ALERT_SECONDS: i64 = 3600;

/// Namespace, name and routing labels (`metadata.labels` overlaid with `spec.alerting.labels`).
pub fn job_routing(job: &StreamJob) -> JobRouting {
    let mut labels = job.metadata.labels.clone().unwrap_or_default();
    labels.extend(job.spec.alerting.labels.clone());
    JobRouting {
        namespace: job.metadata.namespace.clone().unwrap_or_default(),
        name: job.metadata.name.clone().unwrap_or_default(),
        labels,
    }
}

/// Whether the latest restore fell back to an older checkpoint within the last hour.
pub fn restore_fell_back(job: &StreamJob, now: DateTime<Utc>) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.restores.last())
        .is_some_and(|r| {
            r.reason == "fallback" && (now - r.time).num_seconds() < RESTORE_FALLBACK_ALERT_SECONDS
        })
}

/// Whether a transition of `job` failed its progress deadline: phase Failed with
/// `status.progress.failure` (a suspend past its deadline is not a failed deploy), or the job
/// runs rolled back from the generation it was given (`status.rollback`).
pub fn deploy_failed(job: &StreamJob) -> bool {
    job.status.as_ref().is_some_and(|s| {
        let failed = s.phase == Some(Phase::Failed)
            && s.progress
                .as_ref()
                .and_then(|p| p.failure.as_ref())
                .is_some_and(|f| f.reason != "SuspendDeadlineExceeded");
        let rolled_back = s.rollback.as_ref().is_some_and(|r| {
            r.failed_generation.is_some() && r.failed_generation == s.observed_generation
        });
        failed || rolled_back
    })
}

/// What the rules see of `job`, with `health` (from aggregation) and the lag trend.
pub fn job_facts(
    job: &StreamJob,
    health: Option<JobHealth>,
    lag_growing: bool,
    now: DateTime<Utc>,
) -> JobFacts {
    let routing = job_routing(job);
    JobFacts {
        namespace: routing.namespace,
        name: routing.name,
        labels: job.metadata.labels.clone().unwrap_or_default(),
        phase: job.status.as_ref().and_then(|s| s.phase),
        checkpoint_interval_seconds: job.spec.checkpoint.interval.0.as_secs_f64(),
        restore_fell_back: restore_fell_back(job, now),
        deploy_failed: deploy_failed(job),
        message: job
            .status
            .as_ref()
            .and_then(|s| s.message.clone())
            .unwrap_or_default(),
        health,
        lag_growing,
        alerting: job.spec.alerting.clone(),
    }
}

/// The engine's view of an `AlertSubscription` (`None` without namespace or name).
pub fn subscription(sub: &AlertSubscription) -> Option<Subscription> {
    Some(Subscription {
        namespace: sub.metadata.namespace.clone()?,
        name: sub.metadata.name.clone()?,
        spec: sub.spec.clone(),
    })
}

/// The StreamJob's `Alerting` condition: True while any alert fires (reason `AlertsFiring`,
/// message listing them, most severe first), else False (`NoAlertsFiring`).
pub fn alerting_condition(active: &[ActiveAlert]) -> Condition {
    let mut firing: Vec<&ActiveAlert> = active.iter().filter(|a| a.state == "firing").collect();
    firing.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.name.cmp(&b.name)));
    if firing.is_empty() {
        let pending = active.len();
        let message = if pending == 0 {
            "no alerts".to_string()
        } else {
            format!("{pending} alert(s) pending")
        };
        return Condition::new("Alerting", false, "NoAlertsFiring", message);
    }
    let list: Vec<String> = firing
        .iter()
        .map(|a| format!("{} ({})", a.name, severity_str(a.severity)))
        .collect();
    Condition::new("Alerting", true, "AlertsFiring", list.join(", "))
}

/// Whether the job falls behind its input: the trend of its Kafka consumer lag when it reads
/// Kafka (records waiting, which old event times in the data do not inflate), else of its
/// input delay (a generator's delay behind its schedule; never the event-time lag, which for
/// generators and replays is years). Both trends are fed on every evaluation.
fn lag_growing(memory: &mut JobMemory, health: Option<&JobHealth>, now_ms: i64) -> bool {
    let event_time = memory
        .lag
        .observe(now_ms, health.and_then(|h| h.input_delay_ms));
    let kafka_lag = health.and_then(|h| h.kafka_lag).map(|l| l as f64);
    let kafka = memory.kafka_lag.observe(now_ms, kafka_lag);
    if kafka_lag.is_some() {
        kafka
    } else {
        event_time
    }
}

/// One evaluation of one job: updates its lag trend, evaluates the rules on `health`, advances
/// its alerts and queues notifications. Returns `status.activeAlerts`.
pub fn evaluate_job(
    engine: &mut AlertEngine,
    rules: &RuleSet,
    job: &StreamJob,
    health: Option<JobHealth>,
    subscriptions: &[Subscription],
    now: DateTime<Utc>,
) -> Vec<ActiveAlert> {
    let routing = job_routing(job);
    let lag_growing = lag_growing(
        engine.job_memory(&routing.namespace, &routing.name),
        health.as_ref(),
        now.timestamp_millis(),
    );
    let facts = job_facts(job, health, lag_growing, now);
    let results = rules.evaluate(&facts);
    for r in results.iter().filter(|r| r.error.is_some()) {
        tracing::warn!(
            namespace = %routing.namespace,
            job = %routing.name,
            rule = %r.rule,
            error = r.error.as_deref().unwrap_or_default(),
            "alert rule could not be evaluated; treated as not firing"
        );
    }
    let tick = JobTick {
        alert_labels: job.spec.alerting.labels.clone(),
        phase: facts.phase,
        results,
        job: routing,
    };
    engine.tick_job(now, &tick, subscriptions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::collections::BTreeMap;
    use weir_crds::alert_subscription::{
        AlertSubscriptionSpec, ChannelSpec, SecretKeyRef, WebhookChannel,
    };
    use weir_crds::stream_job::{RestoreRecord, StreamJobStatus};

    const JOB: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {name: ctr, namespace: ads, labels: {team: ads}}
spec:
  image: weir-runtime:0.1.0
  pipeline:
    sources: [{name: gen, generator: {kind: nexmark}}]
    sinks: [{name: out, input: gen, stdout: {}}]
  checkpoint: {interval: 10s}
  alerting:
    rules: {backpressureHigh: {warning: 0.3, for: 0s}}
    labels: {tier: gold}
"#;

    fn job() -> StreamJob {
        match serde_yaml::from_str(JOB) {
            Ok(j) => j,
            Err(e) => panic!("fixture: {e}"),
        }
    }

    #[test]
    fn a_stream_job_with_overrides_fires_to_a_label_selected_subscription() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
            .single()
            .unwrap_or_default();
        let mut j = job();
        j.status = Some(StreamJobStatus {
            phase: Some(Phase::Running),
            ..Default::default()
        });
        let rules = match RuleSet::from_yaml(include_str!("../../../alerts/default-rules.yaml")) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let sub = Subscription {
            namespace: "ads".into(),
            name: "gold".into(),
            spec: AlertSubscriptionSpec {
                selector: weir_crds::alert_subscription::JobSelector {
                    match_labels: BTreeMap::from([("tier".to_string(), "gold".to_string())]),
                    match_names: vec![],
                },
                min_severity: weir_crds::stream_job::Severity::Warning,
                channels: vec![ChannelSpec {
                    webhook: Some(WebhookChannel {
                        url_secret: SecretKeyRef {
                            name: "h".into(),
                            key: "u".into(),
                        },
                        sign_secret: None,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
        };
        let mut engine = AlertEngine::default();
        let health = JobHealth {
            backpressure: 0.4,
            ..Default::default()
        };
        let active = evaluate_job(&mut engine, &rules, &j, Some(health), &[sub], now);
        assert_eq!(active.len(), 1);
        assert_eq!(
            (active[0].name.as_str(), active[0].state.as_str()),
            ("backpressureHigh", "firing")
        );
        let due = engine.take_due(now);
        assert_eq!(due.len(), 1);
        assert_eq!(
            due[0].notification.title(),
            "[WARNING] ads/ctr: ctr is backpressured 0.4 of the time (threshold 0.3)"
        );
    }

    #[test]
    fn a_deploy_past_its_deadline_pages_critical_with_the_reason_and_not_twice() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
            .single()
            .unwrap_or_default();
        let message = "Upgrading did not complete within the progress deadline of 40s (revision r2): pod ctr-0: the runtime container exited (exit code 1, Error): bad port";
        let mut j = job();
        j.status = Some(StreamJobStatus {
            phase: Some(Phase::Failed),
            message: Some(message.into()),
            progress: Some(weir_crds::stream_job::ProgressStatus {
                step: "Upgrading".into(),
                revision: Some("r2".into()),
                generation: Some(2),
                started_at: now,
                deadline: now,
                failure: Some(weir_crds::stream_job::DeployFailure {
                    reason: "CrashLoop".into(),
                    pod: Some("ctr-0".into()),
                    message: "bad port".into(),
                    time: now,
                }),
            }),
            ..Default::default()
        });
        assert!(deploy_failed(&j));
        let rules = match RuleSet::from_yaml(include_str!("../../../alerts/default-rules.yaml")) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let oncall = Subscription {
            namespace: "ads".into(),
            name: "oncall".into(),
            spec: AlertSubscriptionSpec {
                min_severity: weir_crds::stream_job::Severity::Critical,
                channels: vec![ChannelSpec {
                    webhook: Some(WebhookChannel {
                        url_secret: SecretKeyRef {
                            name: "h".into(),
                            key: "u".into(),
                        },
                        sign_secret: None,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            },
        };
        let mut engine = AlertEngine::default();
        let active = evaluate_job(&mut engine, &rules, &j, None, &[oncall], now);
        let firing: Vec<&str> = active
            .iter()
            .filter(|a| a.state == "firing")
            .map(|a| a.name.as_str())
            .collect();
        assert!(firing.contains(&"deployFailed"), "{active:?}");
        let due = engine.take_due(now);
        assert_eq!(due.len(), 1, "jobFailed is inhibited by deployFailed");
        let n = &due[0].notification;
        assert_eq!(
            n.title(),
            "[CRITICAL] ads/ctr: ctr: pods not ready within the progress deadline"
        );

        // rolled back from the failed generation: still paged, until the spec changes
        if let Some(s) = j.status.as_mut() {
            s.phase = Some(Phase::Running);
            s.observed_generation = Some(4);
            s.rollback = Some(weir_crds::stream_job::RollbackStatus {
                failed_generation: Some(4),
                failed_revision: "r2".into(),
                reason: message.into(),
                to_revision: "r1".into(),
                time: now,
            });
        }
        assert!(deploy_failed(&j));
        if let Some(s) = j.status.as_mut() {
            s.observed_generation = Some(5);
        }
        assert!(!deploy_failed(&j));
        if let Some(s) = j.status.as_mut() {
            s.phase = Some(Phase::Failed);
        }

        // a suspend forced past its deadline is not a failed deploy
        if let Some(p) = j.status.as_mut().and_then(|s| s.progress.as_mut()) {
            if let Some(f) = p.failure.as_mut() {
                f.reason = "SuspendDeadlineExceeded".into();
            }
        }
        assert!(!deploy_failed(&j));
    }

    #[test]
    fn kafka_lag_decides_whether_lag_grows_when_the_job_reads_kafka() {
        let health = |event_ms: f64, delay_ms: Option<f64>, kafka: Option<i64>| JobHealth {
            event_time_lag_ms: Some(event_ms),
            input_delay_ms: delay_ms,
            kafka_lag: kafka,
            ..Default::default()
        };
        // old event times: event-time lag grows with the wall clock, but nothing waits in Kafka
        let mut m = JobMemory::default();
        let mut grew = false;
        for i in 0..6 {
            let h = health(1e9 + 30_000.0 * i as f64, Some(0.0), Some(10));
            grew = lag_growing(&mut m, Some(&h), 30_000 * i);
        }
        assert!(!grew, "kafka lag is flat");
        // records pile up in Kafka
        let mut m = JobMemory::default();
        for i in 0..6 {
            let h = health(1000.0, Some(1000.0), Some(100 + 1000 * i));
            grew = lag_growing(&mut m, Some(&h), 30_000 * i);
        }
        assert!(grew, "kafka lag grows");
        // without Kafka, the input delay's trend decides
        let mut m = JobMemory::default();
        for i in 0..6 {
            let h = health(1000.0, Some(1000.0 + 30_000.0 * i as f64), None);
            grew = lag_growing(&mut m, Some(&h), 30_000 * i);
        }
        assert!(grew, "a generator falling behind its schedule");
        // a generator on schedule: its 2023 event time recedes with the clock, which is no lag
        let mut m = JobMemory::default();
        for i in 0..6 {
            let h = health(9.6e10 + 30_000.0 * i as f64, Some(0.0), None);
            grew = lag_growing(&mut m, Some(&h), 30_000 * i);
        }
        assert!(!grew, "event-time lag of years is not lag");
        // a file replay: no delay, no trend
        let mut m = JobMemory::default();
        for i in 0..6 {
            let h = health(9.6e10 + 30_000.0 * i as f64, None, None);
            grew = lag_growing(&mut m, Some(&h), 30_000 * i);
        }
        assert!(!grew, "a replay has no lag to grow");
    }

    #[test]
    fn alerting_condition_lists_firing_alerts_most_severe_first() {
        let a = |name: &str, severity, state: &str| ActiveAlert {
            name: name.into(),
            severity,
            state: state.into(),
            since: Utc::now(),
            summary: String::new(),
        };
        use weir_crds::stream_job::Severity;
        let c = alerting_condition(&[
            a("backpressureHigh", Severity::Warning, "firing"),
            a("jobFailed", Severity::Critical, "firing"),
            a("lagGrowing", Severity::Warning, "pending"),
        ]);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "AlertsFiring")
        );
        assert_eq!(
            c.message,
            "jobFailed (critical), backpressureHigh (warning)"
        );
        let c = alerting_condition(&[a("lagGrowing", Severity::Warning, "pending")]);
        assert_eq!(
            (c.status.as_str(), c.message.as_str()),
            ("False", "1 alert(s) pending")
        );
    }

    #[test]
    fn restore_fallback_is_reported_for_an_hour() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
            .single()
            .unwrap_or_default();
        let mut j = job();
        j.status = Some(StreamJobStatus {
            restores: vec![RestoreRecord {
                reason: "fallback".into(),
                time: now - chrono::Duration::minutes(10),
                ..Default::default()
            }],
            ..Default::default()
        });
        assert!(restore_fell_back(&j, now));
        assert!(!restore_fell_back(&j, now + chrono::Duration::hours(1)));
        assert_eq!(
            job_facts(&j, None, false, now).checkpoint_interval_seconds,
            10.0
        );
        assert_eq!(
            job_routing(&j).labels.get("tier").map(String::as_str),
            Some("gold")
        );
    }
}
