//! The StreamJob status written by the health loop: `health`, `activeAlerts` and the
//! Backpressured, CheckpointsHealthy and Alerting conditions. Pure; the conditions are merged
//! into the object's *current* conditions so the controller's Ready/SpecValid stay as they are.

use crate::alerting::job_input::alerting_condition;
use crate::alerting::rules::RuleSet;
use chrono::{DateTime, Utc};
use weir_crds::conditions::set_condition;
use weir_crds::stream_job::{ActiveAlert, JobHealth, StreamJob, StreamJobStatus};
use weir_crds::Condition;

/// Condition type: backpressure at or over the `backpressureHigh` warning threshold.
pub const BACKPRESSURED: &str = "Backpressured";
/// Condition type: checkpoints complete in time and do not fail more than tolerated.
pub const CHECKPOINTS_HEALTHY: &str = "CheckpointsHealthy";
/// Condition type: an alert is firing.
pub const ALERTING: &str = "Alerting";

/// Used when the rules file has no `backpressureHigh` warning threshold.
pub const DEFAULT_BACKPRESSURE_WARNING: f64 = 0.5;
/// Used when the rules file has no `checkpointStale` warning threshold (× interval).
pub const DEFAULT_STALE_FACTOR: f64 = 3.0;

/// The warning threshold of `rule` for `job`: the job's override, else the rule file's.
pub fn warning_threshold(rules: Option<&RuleSet>, job: &StreamJob, rule: &str) -> Option<f64> {
    job.spec
        .alerting
        .rules
        .get(rule)
        .and_then(|o| o.warning)
        .or_else(|| {
            rules?
                .rules()
                .find(|r| r.name == rule)
                .and_then(|r| r.thresholds.warning)
        })
}

fn unknown(type_: &str, reason: &str, message: impl Into<String>) -> Condition {
    let mut c = Condition::new(type_, false, reason, message);
    c.status = "Unknown".to_string();
    c
}

/// Health that tells something: at least one task reported.
fn reporting(health: Option<&JobHealth>) -> Result<&JobHealth, String> {
    match health {
        None => Err("no running pods".to_string()),
        Some(h) if h.tasks_reporting == 0 => Err(match h.skipped.first() {
            Some(why) => format!("no task metrics: {why}"),
            None => "no task metrics yet".to_string(),
        }),
        Some(h) => Ok(h),
    }
}

/// `Backpressured`: True when backpressure is at or over the warning threshold.
pub fn backpressured_condition(health: Option<&JobHealth>, threshold: f64) -> Condition {
    match reporting(health) {
        Err(why) => unknown(BACKPRESSURED, "NoMetrics", why),
        Ok(h) if h.backpressure >= threshold => Condition::new(
            BACKPRESSURED,
            true,
            "BackpressureHigh",
            format!(
                "tasks are blocked on output {:.2} of the time (threshold {threshold})",
                h.backpressure
            ),
        ),
        Ok(h) => Condition::new(
            BACKPRESSURED,
            false,
            "BackpressureNormal",
            format!(
                "tasks are blocked on output {:.2} of the time (threshold {threshold})",
                h.backpressure
            ),
        ),
    }
}

/// `CheckpointsHealthy`: False when more checkpoints failed in a row than
/// `tolerable_failures`, or the last success is older than `stale_factor` × interval.
pub fn checkpoints_condition(
    health: Option<&JobHealth>,
    interval_seconds: f64,
    tolerable_failures: u32,
    stale_factor: f64,
) -> Condition {
    let h = match reporting(health) {
        Err(why) => return unknown(CHECKPOINTS_HEALTHY, "NoMetrics", why),
        Ok(h) => h,
    };
    if h.checkpoint_consecutive_failures > u64::from(tolerable_failures) {
        return Condition::new(
            CHECKPOINTS_HEALTHY,
            false,
            "CheckpointsFailing",
            format!(
                "{} checkpoints failed in a row (tolerable: {tolerable_failures})",
                h.checkpoint_consecutive_failures
            ),
        );
    }
    let limit = stale_factor * interval_seconds;
    match h.last_checkpoint_age_seconds {
        None => unknown(
            CHECKPOINTS_HEALTHY,
            "NoCheckpointYet",
            "no checkpoint has completed yet",
        ),
        Some(age) if age > limit => Condition::new(
            CHECKPOINTS_HEALTHY,
            false,
            "CheckpointsStale",
            format!("last successful checkpoint {age:.0}s ago (limit {limit:.0}s)"),
        ),
        Some(age) => Condition::new(
            CHECKPOINTS_HEALTHY,
            true,
            "CheckpointsSucceeding",
            format!("last successful checkpoint {age:.0}s ago"),
        ),
    }
}

/// All three conditions for `job`. `rules_error` (the rules file could not be loaded) makes
/// `Alerting` Unknown with that message.
pub fn health_conditions(
    rules: Option<&RuleSet>,
    job: &StreamJob,
    health: Option<&JobHealth>,
    active: &[ActiveAlert],
    rules_error: Option<&str>,
) -> Vec<Condition> {
    let backpressure =
        warning_threshold(rules, job, "backpressureHigh").unwrap_or(DEFAULT_BACKPRESSURE_WARNING);
    let stale = warning_threshold(rules, job, "checkpointStale").unwrap_or(DEFAULT_STALE_FACTOR);
    let alerting = match rules_error {
        Some(e) => unknown(
            ALERTING,
            "RulesInvalid",
            format!("alert rules not loaded: {e}"),
        ),
        None => alerting_condition(active),
    };
    let generation = job.metadata.generation;
    [
        backpressured_condition(health, backpressure),
        checkpoints_condition(
            health,
            job.spec.checkpoint.interval.0.as_secs_f64(),
            job.spec.checkpoint.tolerable_failures,
            stale,
        ),
        alerting,
    ]
    .into_iter()
    .map(|mut c| {
        c.observed_generation = generation;
        c
    })
    .collect()
}

/// What one health round found for a job.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthReport {
    /// Aggregated health (`None`: no pods).
    pub health: Option<JobHealth>,
    /// Pending and firing alerts.
    pub active_alerts: Vec<ActiveAlert>,
    /// Backpressured, CheckpointsHealthy, Alerting.
    pub conditions: Vec<Condition>,
}

/// A JSON merge patch for the status subresource, built on the object's current status and
/// carrying its `resourceVersion` (the API server answers 409 if the object changed since it
/// was read). `None` when the status would not change.
pub fn status_patch(
    current: &StreamJobStatus,
    resource_version: Option<&str>,
    report: &HealthReport,
    now: DateTime<Utc>,
) -> Option<serde_json::Value> {
    let mut conditions = current.conditions.clone();
    for c in &report.conditions {
        set_condition(&mut conditions, c.clone(), now);
    }
    if conditions == current.conditions
        && report.health == current.health
        && report.active_alerts == current.active_alerts
    {
        return None;
    }
    let active = (!report.active_alerts.is_empty()).then_some(&report.active_alerts);
    Some(serde_json::json!({
        "metadata": {"resourceVersion": resource_version},
        "status": {
            "health": report.health,
            "activeAlerts": active,
            "conditions": conditions,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use weir_crds::conditions::find_condition;
    use weir_crds::stream_job::Severity;

    const JOB: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {name: ctr, namespace: ads, generation: 4}
spec:
  image: weir-runtime:0.1.0
  pipeline:
    sources: [{name: gen, generator: {kind: nexmark}}]
    sinks: [{name: out, input: gen, stdout: {}}]
  checkpoint: {interval: 10s, tolerableFailures: 1}
  alerting:
    rules: {backpressureHigh: {warning: 0.3}}
"#;

    fn job() -> StreamJob {
        match serde_yaml::from_str(JOB) {
            Ok(j) => j,
            Err(e) => panic!("fixture: {e}"),
        }
    }

    fn rules() -> Option<RuleSet> {
        match RuleSet::defaults() {
            Ok(r) => Some(r),
            Err(e) => panic!("{e}"),
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .unwrap_or_default()
    }

    fn health(backpressure: f64, failures: u64, age: Option<f64>) -> JobHealth {
        JobHealth {
            backpressure,
            checkpoint_consecutive_failures: failures,
            last_checkpoint_age_seconds: age,
            tasks_reporting: 2,
            ..Default::default()
        }
    }

    fn by_type<'a>(cs: &'a [Condition], t: &str) -> (&'a str, &'a str) {
        match find_condition(cs, t) {
            Some(c) => (c.status.as_str(), c.reason.as_str()),
            None => panic!("no {t} in {cs:?}"),
        }
    }

    #[test]
    fn thresholds_follow_the_job_override_then_the_rule_file() {
        let (r, j) = (rules(), job());
        assert_eq!(
            warning_threshold(r.as_ref(), &j, "backpressureHigh"),
            Some(0.3)
        );
        assert_eq!(
            warning_threshold(r.as_ref(), &j, "checkpointStale"),
            Some(3.0)
        );
        assert_eq!(warning_threshold(r.as_ref(), &j, "noSuchRule"), None);
    }

    #[test]
    fn conditions_reflect_health_against_the_job_thresholds() {
        let (r, j) = (rules(), job());
        let cs = health_conditions(r.as_ref(), &j, Some(&health(0.35, 0, Some(5.0))), &[], None);
        assert_eq!(by_type(&cs, BACKPRESSURED), ("True", "BackpressureHigh"));
        assert_eq!(
            by_type(&cs, CHECKPOINTS_HEALTHY),
            ("True", "CheckpointsSucceeding")
        );
        assert_eq!(by_type(&cs, ALERTING), ("False", "NoAlertsFiring"));
        assert!(cs.iter().all(|c| c.observed_generation == Some(4)));

        let cs = health_conditions(r.as_ref(), &j, Some(&health(0.1, 2, Some(5.0))), &[], None);
        assert_eq!(by_type(&cs, BACKPRESSURED), ("False", "BackpressureNormal"));
        assert_eq!(
            by_type(&cs, CHECKPOINTS_HEALTHY),
            ("False", "CheckpointsFailing")
        );
        // 1 failure is tolerated, but 31 s without a checkpoint is over 3 × 10 s.
        let cs = health_conditions(r.as_ref(), &j, Some(&health(0.1, 1, Some(31.0))), &[], None);
        assert_eq!(
            by_type(&cs, CHECKPOINTS_HEALTHY),
            ("False", "CheckpointsStale")
        );
        let cs = health_conditions(r.as_ref(), &j, Some(&health(0.1, 0, None)), &[], None);
        assert_eq!(
            by_type(&cs, CHECKPOINTS_HEALTHY),
            ("Unknown", "NoCheckpointYet")
        );
    }

    #[test]
    fn without_task_metrics_the_conditions_are_unknown_and_say_why() {
        let (r, j) = (rules(), job());
        let cs = health_conditions(None, &j, None, &[], Some("rule x: bad"));
        assert_eq!(by_type(&cs, BACKPRESSURED), ("Unknown", "NoMetrics"));
        assert_eq!(by_type(&cs, ALERTING), ("Unknown", "RulesInvalid"));
        let skipped = JobHealth {
            skipped: vec!["pod ctr-0: not ready".into()],
            ..Default::default()
        };
        let cs = health_conditions(r.as_ref(), &j, Some(&skipped), &[], None);
        let c = find_condition(&cs, BACKPRESSURED);
        assert_eq!(
            c.map(|c| c.message.as_str()),
            Some("no task metrics: pod ctr-0: not ready")
        );
    }

    #[test]
    fn the_patch_keeps_the_controllers_conditions_and_carries_the_resource_version() {
        let ready = Condition {
            last_transition_time: Some(at(0)),
            ..Condition::new("Ready", true, "Running", "2 of 2 pods ready")
        };
        let current = StreamJobStatus {
            conditions: vec![ready.clone()],
            ..Default::default()
        };
        let alert = ActiveAlert {
            name: "backpressureHigh".into(),
            severity: Severity::Warning,
            state: "firing".into(),
            since: at(5),
            summary: "s".into(),
        };
        let report = HealthReport {
            health: Some(health(0.4, 0, Some(3.0))),
            active_alerts: vec![alert],
            conditions: health_conditions(
                rules().as_ref(),
                &job(),
                Some(&health(0.4, 0, Some(3.0))),
                &[],
                None,
            ),
        };
        let patch = status_patch(&current, Some("42"), &report, at(10));
        let Some(patch) = patch else {
            panic!("expected a patch")
        };
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["status"]["health"]["backpressure"], 0.4);
        assert_eq!(
            patch["status"]["activeAlerts"][0]["name"],
            "backpressureHigh"
        );
        let conditions: Vec<Condition> =
            match serde_json::from_value(patch["status"]["conditions"].clone()) {
                Ok(c) => c,
                Err(e) => panic!("{e}"),
            };
        assert_eq!(conditions[0], ready, "Ready is untouched");
        assert_eq!(
            conditions
                .iter()
                .map(|c| c.type_.as_str())
                .collect::<Vec<_>>(),
            ["Ready", BACKPRESSURED, CHECKPOINTS_HEALTHY, ALERTING]
        );

        // Applying it and reporting the same again changes nothing: no patch.
        let mut after = current.clone();
        after.conditions = conditions;
        after.health = report.health.clone();
        after.active_alerts = report.active_alerts.clone();
        assert_eq!(status_patch(&after, Some("43"), &report, at(20)), None);

        // Alerts cleared: activeAlerts becomes null (removed by the merge patch).
        let cleared = HealthReport {
            active_alerts: vec![],
            ..report
        };
        let patch = status_patch(&after, Some("43"), &cleared, at(30));
        assert_eq!(
            patch.map(|p| p["status"]["activeAlerts"].clone()),
            Some(serde_json::Value::Null)
        );
    }
}
