//! Which lifecycle steps a reconcile takes (deploy, upgrade, scale, suspend, resume, restart),
//! decided by comparing the existing StatefulSet with the desired one. Pure.

use crate::build::{RESTART_NONCE_ANNOTATION, REVISION_ANNOTATION};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;

/// A lifecycle step, published as a Normal event whose reason is the variant name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    /// First deployment of the job's children.
    Deploying,
    /// A new revision (changed job config) is rolled out.
    Upgrading {
        /// The revision running before.
        from: String,
        /// The revision rolled out.
        to: String,
    },
    /// The number of pods changed.
    Scaled {
        /// Pods before.
        from: i32,
        /// Pods after.
        to: i32,
    },
    /// Scaled to zero on request.
    Suspended,
    /// Scaled back up after a suspension.
    Resumed,
    /// Pods restart because `spec.restartNonce` changed.
    Restarted,
    /// Every pod of the current revision is ready.
    Running,
}

impl Lifecycle {
    /// The event reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Lifecycle::Deploying => "Deploying",
            Lifecycle::Upgrading { .. } => "Upgrading",
            Lifecycle::Scaled { .. } => "Scaled",
            Lifecycle::Suspended => "Suspended",
            Lifecycle::Resumed => "Resumed",
            Lifecycle::Restarted => "Restarted",
            Lifecycle::Running => "Running",
        }
    }

    /// The event note.
    pub fn note(&self) -> String {
        match self {
            Lifecycle::Deploying => "deploying the job's ConfigMap, Service and StatefulSet".into(),
            Lifecycle::Upgrading { from, to } => {
                format!("rolling out revision {to} (was {from})")
            }
            Lifecycle::Scaled { from, to } => format!("scaling from {from} to {to} pods"),
            Lifecycle::Suspended => "suspending: scaling to 0 pods".into(),
            Lifecycle::Resumed => "resuming from suspension".into(),
            Lifecycle::Restarted => "restartNonce changed: restarting all pods".into(),
            Lifecycle::Running => "all pods of the current revision are ready".into(),
        }
    }
}

fn replicas(sts: &StatefulSet) -> i32 {
    sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn template_annotation<'a>(sts: &'a StatefulSet, key: &str) -> Option<&'a str> {
    sts.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// The steps taken by replacing `existing` (if any) with `desired`.
pub fn steps(existing: Option<&StatefulSet>, desired: &StatefulSet) -> Vec<Lifecycle> {
    let Some(existing) = existing else {
        return vec![Lifecycle::Deploying];
    };
    let mut steps = vec![];
    let (before, after) = (replicas(existing), replicas(desired));
    match (before, after) {
        (b, 0) if b > 0 => steps.push(Lifecycle::Suspended),
        (0, a) if a > 0 => steps.push(Lifecycle::Resumed),
        (b, a) if b != a => steps.push(Lifecycle::Scaled { from: b, to: a }),
        _ => {}
    }
    let old_revision = template_annotation(existing, REVISION_ANNOTATION).unwrap_or_default();
    let new_revision = template_annotation(desired, REVISION_ANNOTATION).unwrap_or_default();
    // A rescale changes the config too (the runtime must know the pod count); report it once.
    if old_revision != new_revision && before == after {
        steps.push(Lifecycle::Upgrading {
            from: old_revision.to_string(),
            to: new_revision.to_string(),
        });
    }
    let old_nonce = template_annotation(existing, RESTART_NONCE_ANNOTATION).unwrap_or_default();
    let new_nonce = template_annotation(desired, RESTART_NONCE_ANNOTATION).unwrap_or_default();
    if old_nonce != new_nonce && after > 0 {
        steps.push(Lifecycle::Restarted);
    }
    steps
}

/// Whether `pod` runs something other than `desired` (revision or restart nonce differ) and is
/// not already terminating; such pods are deleted so all pods restart together.
pub fn pod_is_outdated(pod: &Pod, desired: &BTreeMap<String, String>) -> bool {
    if pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    let empty = BTreeMap::new();
    let actual = pod.metadata.annotations.as_ref().unwrap_or(&empty);
    desired
        .iter()
        .any(|(k, v)| actual.get(k).map(String::as_str).unwrap_or_default() != v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{children, fixtures};
    use weir_crds::stream_job::DesiredState;
    use weir_crds::StreamJob;

    fn sts(job: &StreamJob) -> StatefulSet {
        children(job).expect("build").stateful_set
    }

    #[test]
    fn first_apply_deploys() {
        let job = fixtures::job("job.yaml");
        assert_eq!(steps(None, &sts(&job)), vec![Lifecycle::Deploying]);
        assert_eq!(steps(Some(&sts(&job)), &sts(&job)), vec![]);
    }

    #[test]
    fn spec_edit_upgrades_and_rescale_scales() {
        let job = fixtures::job("job.yaml");
        let mut edited = job.clone();
        edited.spec.pipeline.operators[0].filter = Some("true".into());
        assert!(matches!(
            steps(Some(&sts(&job)), &sts(&edited))[..],
            [Lifecycle::Upgrading { .. }]
        ));
        let mut scaled = job.clone();
        scaled.spec.parallelism = 3;
        assert_eq!(
            steps(Some(&sts(&job)), &sts(&scaled)),
            vec![Lifecycle::Scaled { from: 2, to: 3 }]
        );
    }

    #[test]
    fn suspend_resume_and_restart() {
        let job = fixtures::job("job.yaml");
        let mut suspended = job.clone();
        suspended.spec.state = DesiredState::Suspended;
        assert_eq!(
            steps(Some(&sts(&job)), &sts(&suspended)),
            vec![Lifecycle::Suspended]
        );
        assert_eq!(
            steps(Some(&sts(&suspended)), &sts(&job)),
            vec![Lifecycle::Resumed]
        );
        let mut restarted = job.clone();
        restarted.spec.restart_nonce = Some("1".into());
        assert_eq!(
            steps(Some(&sts(&job)), &sts(&restarted)),
            vec![Lifecycle::Restarted]
        );
    }

    #[test]
    fn pods_with_other_annotations_are_outdated_unless_terminating() {
        let desired = BTreeMap::from([
            (REVISION_ANNOTATION.to_string(), "r2".to_string()),
            (RESTART_NONCE_ANNOTATION.to_string(), String::new()),
        ]);
        let mut pod = Pod::default();
        pod.metadata.annotations = Some(BTreeMap::from([(
            REVISION_ANNOTATION.to_string(),
            "r1".to_string(),
        )]));
        assert!(pod_is_outdated(&pod, &desired));
        pod.metadata.annotations = Some(BTreeMap::from([(
            REVISION_ANNOTATION.to_string(),
            "r2".to_string(),
        )]));
        assert!(!pod_is_outdated(&pod, &desired));
        pod.metadata.annotations = Some(BTreeMap::from([(
            REVISION_ANNOTATION.to_string(),
            "r1".to_string(),
        )]));
        pod.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(!pod_is_outdated(&pod, &desired));
    }
}
