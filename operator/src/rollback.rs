//! Rollback of a failed upgrade (`spec.upgrade.rollback`), pure: the last spec that ran with
//! every pod ready is kept in the ConfigMap `<job>-stable` (the rendered config, as in
//! `<job>-config`; the operator never writes `spec`), when an upgrade fails its progress
//! deadline the job goes back to it, and while `status.rollback.failedGeneration` is the job's
//! generation the reconcile deploys that spec instead of the failed one. The controller reads
//! and writes the ConfigMap.

use crate::build::JobIdentity;
use crate::build::JOB_CONFIG_KEY;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::ConfigMap;
use std::collections::BTreeMap;
use weir_crds::stream_job::{RollbackStatus, StableRevision, StreamJobStatus};
use weir_crds::StreamJob;

/// Restore-record reason of a rollback.
pub const ROLLBACK: &str = "rollback";

/// Annotation of `<job>-stable`: the revision its config renders to.
const REVISION_ANNOTATION: &str = "weir.dev/revision";

/// Name of the ConfigMap keeping job `job`'s last stable spec.
pub fn stable_config_map_name(job: &str) -> String {
    format!("{job}-stable")
}

/// `<job>-stable` holding `config` (the rendered config of the revision that ran healthily).
pub fn stable_config_map(id: &JobIdentity, config: &str, revision: &str) -> ConfigMap {
    let mut metadata = id.child_meta(stable_config_map_name(&id.name));
    metadata.annotations = Some(BTreeMap::from([(
        REVISION_ANNOTATION.to_string(),
        revision.to_string(),
    )]));
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(
            JOB_CONFIG_KEY.to_string(),
            config.to_string(),
        )])),
        ..ConfigMap::default()
    }
}

/// `job` as it ran at the stable revision kept in `stable` (its spec, with the current
/// `state` and `restartNonce`, which the user may change while rolled back); `None` if the
/// ConfigMap holds no readable config.
pub fn stable_job(job: &StreamJob, stable: &ConfigMap) -> Option<StreamJob> {
    let text = stable.data.as_ref()?.get(JOB_CONFIG_KEY)?;
    let kept = weir_crds::manifest::parse_stream_job("stable", text).ok()?;
    let mut out = job.clone();
    out.spec = kept.spec;
    out.spec.state = job.spec.state;
    out.spec.restart_nonce = job.spec.restart_nonce.clone();
    Some(out)
}

/// Whether the job is rolled back now: its generation is the one that failed.
pub fn active(status: &StreamJobStatus, generation: Option<i64>) -> bool {
    status
        .rollback
        .as_ref()
        .is_some_and(|r| r.failed_generation == generation)
}

/// Whether `<job>-stable` must be (re)written: the job runs healthily on `revision`, which is
/// not the one kept.
pub fn keep_as_stable(status: &StreamJobStatus, revision: &str) -> bool {
    status.phase == Some(weir_crds::stream_job::Phase::Running)
        && status
            .last_stable
            .as_ref()
            .is_none_or(|s| s.revision != revision)
}

/// `status.lastStable` for `revision`, healthy since `now`.
pub fn stable_revision(
    revision: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> StableRevision {
    StableRevision {
        revision: revision.to_string(),
        generation,
        since: now,
    }
}

/// What [`decide`] looks at when an upgrade has just failed its progress deadline.
#[derive(Clone, Debug)]
pub struct FailedUpgrade<'a> {
    /// The step that failed (only `Upgrading` rolls back: a first deploy has nothing to go
    /// back to, and a rescale or restart runs the same spec).
    pub step: &'a str,
    /// `spec.upgrade.rollback` of the failed spec.
    pub enabled: bool,
    /// The job's generation.
    pub generation: Option<i64>,
    /// The revision that failed.
    pub revision: &'a str,
    /// The deadline's message.
    pub reason: &'a str,
    /// `status.lastStable`.
    pub stable: Option<&'a StableRevision>,
    /// Whether the job is already rolled back (a rollback that fails is not rolled back).
    pub rolled_back: bool,
    /// Now.
    pub now: DateTime<Utc>,
}

/// The rollback to start, if this failure calls for one.
pub fn decide(f: &FailedUpgrade) -> Option<RollbackStatus> {
    if !f.enabled || f.rolled_back || f.step != "Upgrading" {
        return None;
    }
    let stable = f.stable.filter(|s| s.revision != f.revision)?;
    Some(RollbackStatus {
        failed_generation: f.generation,
        failed_revision: f.revision.to_string(),
        reason: f.reason.to_string(),
        to_revision: stable.revision.clone(),
        time: f.now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{children, fixtures};
    use chrono::TimeZone;
    use weir_crds::stream_job::{DesiredState, Phase};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0)
            .single()
            .unwrap_or_default()
    }

    #[test]
    fn the_stable_config_gives_back_the_stable_revision_with_the_current_state() {
        let job = fixtures::job("job.yaml");
        let id = JobIdentity::of(&job).expect("identity");
        let stable = children(&job).expect("build");
        let config = stable
            .config_map
            .data
            .as_ref()
            .and_then(|d| d.get(JOB_CONFIG_KEY))
            .cloned()
            .unwrap_or_default();
        let cm = stable_config_map(&id, &config, &stable.revision);
        assert_eq!(
            cm.metadata.name.as_deref(),
            Some(format!("{}-stable", id.name).as_str())
        );

        let mut failed = job.clone();
        failed.spec.pipeline.operators[0].filter = Some("true".into());
        failed.spec.state = DesiredState::Suspended;
        assert_ne!(children(&failed).expect("build").revision, stable.revision);
        let back = stable_job(&failed, &cm).expect("stable job");
        assert_eq!(
            back.spec.state,
            DesiredState::Suspended,
            "state is the user's"
        );
        assert_eq!(back.spec.pipeline, job.spec.pipeline);
        assert_eq!(
            children(&back).expect("build").revision,
            stable.revision,
            "the same revision as before the upgrade"
        );
        assert!(stable_job(&failed, &ConfigMap::default()).is_none());
    }

    #[test]
    fn only_a_failed_upgrade_with_rollback_on_and_a_different_stable_revision_rolls_back() {
        let stable = stable_revision("r1", Some(3), now());
        let f = FailedUpgrade {
            step: "Upgrading",
            enabled: true,
            generation: Some(4),
            revision: "r2",
            reason: "pods crash",
            stable: Some(&stable),
            rolled_back: false,
            now: now(),
        };
        let r = decide(&f).expect("rollback");
        assert_eq!(
            (
                r.failed_generation,
                r.failed_revision.as_str(),
                r.to_revision.as_str()
            ),
            (Some(4), "r2", "r1")
        );
        assert_eq!(
            decide(&FailedUpgrade {
                enabled: false,
                ..f.clone()
            }),
            None
        );
        assert_eq!(
            decide(&FailedUpgrade {
                step: "Deploying",
                ..f.clone()
            }),
            None
        );
        assert_eq!(
            decide(&FailedUpgrade {
                stable: None,
                ..f.clone()
            }),
            None
        );
        assert_eq!(
            decide(&FailedUpgrade {
                revision: "r1",
                ..f.clone()
            }),
            None
        );
        assert_eq!(
            decide(&FailedUpgrade {
                rolled_back: true,
                ..f
            }),
            None
        );

        // active until the spec changes (a new generation), then the new spec is tried
        let status = StreamJobStatus {
            rollback: Some(r),
            ..Default::default()
        };
        assert!(active(&status, Some(4)));
        assert!(!active(&status, Some(5)));
    }

    #[test]
    fn a_running_revision_is_kept_once() {
        let mut status = StreamJobStatus {
            phase: Some(Phase::Running),
            ..Default::default()
        };
        assert!(keep_as_stable(&status, "r1"));
        status.last_stable = Some(stable_revision("r1", Some(1), now()));
        assert!(!keep_as_stable(&status, "r1"));
        assert!(keep_as_stable(&status, "r2"));
        status.phase = Some(Phase::Upgrading);
        assert!(!keep_as_stable(&status, "r2"));
    }
}
