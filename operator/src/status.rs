//! Computes a StreamJob's status (phase, conditions, replicas) from what was observed. Pure;
//! the controller patches the result onto the object.

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::StatefulSet;
use weir_crds::conditions::{find_condition, set_condition};
use weir_crds::stream_job::Phase;
use weir_crds::{Condition, StreamJobStatus};

/// Condition type: all pods of the current revision are ready.
pub const READY: &str = "Ready";
/// Condition type: the spec deserialises and passes validation.
pub const SPEC_VALID: &str = "SpecValid";

/// What the StatefulSet reports about the job's pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Pods that exist.
    pub replicas: i32,
    /// Pods ready.
    pub ready: i32,
    /// Pods created from the current template.
    pub updated: i32,
    /// Whether the StatefulSet controller has seen the latest spec.
    pub current: bool,
}

impl Observed {
    /// Reads the StatefulSet's status.
    pub fn of(sts: &StatefulSet) -> Self {
        let status = sts.status.clone().unwrap_or_default();
        let generation = sts.metadata.generation.unwrap_or(0);
        Observed {
            replicas: status.replicas,
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            current: status.observed_generation.unwrap_or(0) >= generation,
        }
    }
}

/// What was deployed in this reconcile.
#[derive(Clone, Debug, PartialEq)]
pub struct Deployed {
    /// The job's generation.
    pub generation: Option<i64>,
    /// Revision of the rendered config.
    pub revision: String,
    /// Pods wanted (0 when suspended).
    pub desired_replicas: i32,
    /// `spec.restartNonce`.
    pub restart_nonce: Option<String>,
    /// The StatefulSet as it is now.
    pub observed: Observed,
}

/// The phase of a deployed job, and a one-line explanation.
pub fn phase(previous: &StreamJobStatus, d: &Deployed) -> (Phase, String) {
    let o = &d.observed;
    if d.desired_replicas == 0 {
        return if o.current && o.replicas == 0 {
            (Phase::Suspended, "suspended: no pods running".to_string())
        } else {
            (
                Phase::Suspending,
                format!("suspending: {} pods still running", o.replicas),
            )
        };
    }
    let rolled_out = o.current
        && o.replicas == d.desired_replicas
        && o.updated == d.desired_replicas
        && o.ready == d.desired_replicas;
    if rolled_out {
        return (
            Phase::Running,
            format!("{} of {} pods ready", o.ready, d.desired_replicas),
        );
    }
    let revision_changed = previous
        .revision
        .as_deref()
        .is_some_and(|r| r != d.revision);
    let phase = if revision_changed || previous.phase == Some(Phase::Upgrading) {
        Phase::Upgrading
    } else {
        Phase::Deploying
    };
    (
        phase,
        format!(
            "{} of {} pods ready, {} on revision {}",
            o.ready, d.desired_replicas, o.updated, d.revision
        ),
    )
}

/// The status after a successful deployment.
pub fn deployed(previous: &StreamJobStatus, d: &Deployed, now: DateTime<Utc>) -> StreamJobStatus {
    let (phase, message) = phase(previous, d);
    let mut status = previous.clone();
    set_condition(
        &mut status.conditions,
        observed(
            Condition::new(SPEC_VALID, true, "Valid", "spec is valid"),
            d.generation,
        ),
        now,
    );
    set_condition(
        &mut status.conditions,
        observed(
            Condition::new(READY, phase == Phase::Running, phase.as_str(), &message),
            d.generation,
        ),
        now,
    );
    status.phase = Some(phase);
    status.message = Some(message);
    status.observed_generation = d.generation;
    status.revision = Some(d.revision.clone());
    status.replicas = Some(d.observed.replicas);
    status.ready_replicas = Some(d.observed.ready);
    status.observed_restart_nonce = d.restart_nonce.clone();
    status
}

/// Marks a deployed job Failed: its pods cannot start (e.g. no restorable checkpoint).
pub fn failed(
    status: &mut StreamJobStatus,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    set_condition(
        &mut status.conditions,
        observed(Condition::new(READY, false, reason, message), generation),
        now,
    );
    status.phase = Some(Phase::Failed);
    status.message = Some(message.to_string());
}

/// The status of a job whose spec is invalid. Running pods are left alone, so a job that was
/// deployed keeps its phase; one that never was is Failed.
pub fn spec_invalid(
    previous: &StreamJobStatus,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    observed_pods: Option<Observed>,
    now: DateTime<Utc>,
) -> StreamJobStatus {
    let mut status = previous.clone();
    set_condition(
        &mut status.conditions,
        observed(
            Condition::new(SPEC_VALID, false, reason, message),
            generation,
        ),
        now,
    );
    match observed_pods {
        Some(o) => {
            status.replicas = Some(o.replicas);
            status.ready_replicas = Some(o.ready);
            status.message = Some(format!(
                "spec is invalid; the pods of revision {} are left running: {message}",
                status.revision.as_deref().unwrap_or("unknown")
            ));
            if status.phase.is_none() {
                status.phase = Some(Phase::Failed);
            }
        }
        None => {
            status.phase = Some(Phase::Failed);
            status.message = Some(format!("spec is invalid: {message}"));
            set_condition(
                &mut status.conditions,
                observed(Condition::new(READY, false, reason, message), generation),
                now,
            );
        }
    }
    status.observed_generation = generation;
    status
}

/// Whether `status` already reports this spec error (so the Warning event is not repeated).
pub fn already_reported(status: &StreamJobStatus, generation: Option<i64>, message: &str) -> bool {
    find_condition(&status.conditions, SPEC_VALID).is_some_and(|c| {
        !c.is_true() && c.message == message && c.observed_generation == generation
    })
}

fn observed(mut c: Condition, generation: Option<i64>) -> Condition {
    c.observed_generation = generation;
    c
}

/// A JSON merge patch of the fields this controller owns; cleared fields become `null`.
pub fn merge_patch(status: &StreamJobStatus) -> serde_json::Value {
    serde_json::json!({
        "status": {
            "phase": status.phase.map(|p| p.as_str()),
            "message": status.message,
            "conditions": status.conditions,
            "observedGeneration": status.observed_generation,
            "revision": status.revision,
            "replicas": status.replicas,
            "readyReplicas": status.ready_replicas,
            "observedRestartNonce": status.observed_restart_nonce,
            "plan": status.plan,
            "checkpoint": status.checkpoint,
            "restores": status.restores,
            "progress": status.progress,
            "lastStable": status.last_stable,
            "rollback": status.rollback,
        }
    })
}

/// `next` (computed by a reconcile from `previous`) re-applied onto `fresh`, the status another
/// writer (the health loop) has written since: the fields the controller owns come from
/// `next`, the others (health, active alerts) from `fresh`, and of the conditions those this
/// reconcile changed come from `next`, the rest from `fresh`. Used after a 409 Conflict, so
/// that a transition's restore record is not lost to a concurrent health update.
pub fn rebase(
    next: &StreamJobStatus,
    previous: &StreamJobStatus,
    fresh: &StreamJobStatus,
) -> StreamJobStatus {
    let mut conditions = fresh.conditions.clone();
    for c in &next.conditions {
        let before = find_condition(&previous.conditions, &c.type_);
        if before != Some(c) {
            match conditions.iter_mut().find(|f| f.type_ == c.type_) {
                Some(slot) => *slot = c.clone(),
                None => conditions.push(c.clone()),
            }
        }
    }
    StreamJobStatus {
        conditions,
        health: fresh.health.clone(),
        active_alerts: fresh.active_alerts.clone(),
        ..next.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_rebased_status_keeps_the_reconcile_and_the_health_writes() {
        let t = Utc
            .with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
            .single()
            .expect("time");
        let cond = |ty: &str, ok: bool| {
            let mut c = Condition::new(ty, ok, "R", "m");
            c.last_transition_time = Some(t);
            c
        };
        let previous = StreamJobStatus {
            conditions: vec![cond("Ready", true), cond("Backpressured", false)],
            ..Default::default()
        };
        // the reconcile appended a restore record and changed Ready
        let mut next = previous.clone();
        next.restores.push(weir_crds::stream_job::RestoreRecord {
            checkpoint_id: Some(7),
            reason: "upgrade".into(),
            ..Default::default()
        });
        next.conditions[0] = cond("Ready", false);
        // meanwhile the health loop set Backpressured and health
        let mut fresh = previous.clone();
        fresh.conditions[1] = cond("Backpressured", true);
        fresh.health = Some(Default::default());
        let out = rebase(&next, &previous, &fresh);
        assert_eq!(out.restores, next.restores);
        assert_eq!(out.health, fresh.health);
        assert_eq!(
            find_condition(&out.conditions, "Ready"),
            Some(&cond("Ready", false))
        );
        assert_eq!(
            find_condition(&out.conditions, "Backpressured"),
            Some(&cond("Backpressured", true))
        );
    }

    #[test]
    fn the_patch_carries_checkpoint_and_restores() {
        let status = StreamJobStatus {
            checkpoint: Some(weir_crds::stream_job::CheckpointStatus {
                latest_id: Some(4),
                ..Default::default()
            }),
            restores: vec![weir_crds::stream_job::RestoreRecord {
                checkpoint_id: Some(4),
                reason: "upgrade".into(),
                ..Default::default()
            }],
            plan: Some(weir_crds::stream_job::PlanStatus {
                tasks: 4,
                key_groups: 128,
                stages: 2,
                exchanges: vec![],
            }),
            ..Default::default()
        };
        let patch = merge_patch(&status);
        assert_eq!(patch["status"]["plan"]["tasks"], 4);
        assert_eq!(patch["status"]["checkpoint"]["latestId"], 4);
        assert_eq!(patch["status"]["restores"][0]["checkpointId"], 4);
    }

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).single().unwrap_or_default()
    }

    fn deployed_with(revision: &str, desired: i32, o: Observed) -> Deployed {
        Deployed {
            generation: Some(2),
            revision: revision.to_string(),
            desired_replicas: desired,
            restart_nonce: None,
            observed: o,
        }
    }

    const ALL_READY: Observed = Observed {
        replicas: 2,
        ready: 2,
        updated: 2,
        current: true,
    };

    #[test]
    fn first_deploy_is_deploying_then_running() {
        let pending = Observed {
            replicas: 2,
            ready: 0,
            updated: 2,
            current: true,
        };
        let s = deployed(
            &StreamJobStatus::default(),
            &deployed_with("r1", 2, pending),
            t(1),
        );
        assert_eq!(s.phase, Some(Phase::Deploying));
        let s = deployed(&s, &deployed_with("r1", 2, ALL_READY), t(2));
        assert_eq!(s.phase, Some(Phase::Running));
        let ready = find_condition(&s.conditions, READY).expect("Ready");
        assert!(ready.is_true());
        assert_eq!(ready.last_transition_time, Some(t(2)));
        assert_eq!(s.revision.as_deref(), Some("r1"));
        assert_eq!((s.replicas, s.ready_replicas), (Some(2), Some(2)));
    }

    #[test]
    fn a_new_revision_is_upgrading_until_every_pod_is_updated_and_ready() {
        let running = deployed(
            &StreamJobStatus::default(),
            &deployed_with("r1", 2, ALL_READY),
            t(1),
        );
        let half = Observed {
            replicas: 2,
            ready: 2,
            updated: 1,
            current: true,
        };
        let s = deployed(&running, &deployed_with("r2", 2, half), t(2));
        assert_eq!(s.phase, Some(Phase::Upgrading));
        // Still upgrading on the next reconcile, although status.revision is now r2.
        let s = deployed(&s, &deployed_with("r2", 2, half), t(3));
        assert_eq!(s.phase, Some(Phase::Upgrading));
        let s = deployed(&s, &deployed_with("r2", 2, ALL_READY), t(4));
        assert_eq!(s.phase, Some(Phase::Running));
        let stale = Observed {
            current: false,
            ..ALL_READY
        };
        let s2 = deployed(&s, &deployed_with("r3", 2, stale), t(5));
        assert_eq!(s2.phase, Some(Phase::Upgrading));
    }

    #[test]
    fn suspended_once_no_pod_is_left() {
        let running = deployed(
            &StreamJobStatus::default(),
            &deployed_with("r1", 2, ALL_READY),
            t(1),
        );
        let s = deployed(&running, &deployed_with("r1", 0, ALL_READY), t(2));
        assert_eq!(s.phase, Some(Phase::Suspending));
        let s = deployed(
            &s,
            &deployed_with(
                "r1",
                0,
                Observed {
                    current: true,
                    ..Observed::default()
                },
            ),
            t(3),
        );
        assert_eq!(s.phase, Some(Phase::Suspended));
        assert!(!find_condition(&s.conditions, READY)
            .expect("Ready")
            .is_true());
    }

    #[test]
    fn an_invalid_spec_fails_a_new_job_but_keeps_a_running_one() {
        let s = spec_invalid(
            &StreamJobStatus::default(),
            Some(1),
            "SpecInvalid",
            "spec.x: bad",
            None,
            t(1),
        );
        assert_eq!(s.phase, Some(Phase::Failed));
        let c = find_condition(&s.conditions, SPEC_VALID).expect("SpecValid");
        assert!(!c.is_true());
        assert_eq!(c.message, "spec.x: bad");
        assert!(already_reported(&s, Some(1), "spec.x: bad"));
        assert!(!already_reported(&s, Some(2), "spec.x: bad"));

        let running = deployed(
            &StreamJobStatus::default(),
            &deployed_with("r1", 2, ALL_READY),
            t(1),
        );
        let s = spec_invalid(
            &running,
            Some(3),
            "SpecInvalid",
            "spec.x: bad",
            Some(ALL_READY),
            t(2),
        );
        assert_eq!(s.phase, Some(Phase::Running));
        assert_eq!(s.revision.as_deref(), Some("r1"));
        assert!(find_condition(&s.conditions, READY)
            .expect("Ready")
            .is_true());
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn the_merge_patch_clears_what_is_gone() {
        let patch = merge_patch(&StreamJobStatus::default());
        assert!(patch["status"]["message"].is_null());
        assert!(patch["status"].get("message").is_some());
        // the controller owns checkpoint and restores; health and alerts are the health loop's
        assert!(patch["status"].get("checkpoint").is_some());
        assert!(patch["status"].get("health").is_none());
        assert!(patch["status"].get("activeAlerts").is_none());
    }
}
