//! The I/O side of restores in a reconcile: the final checkpoint before a transition, the
//! checkpoint-storage Secret check, and what the pods report afterwards (what they restored,
//! why they cannot start). Decisions are made by the pure [`crate::restore`] module.

use crate::apply;
use crate::build::JobIdentity;
use crate::pod_admin::{self, AdminTarget};
use crate::restore::{self, DecisionInput, FinalCheckpoint, PodReport, StartFailure, Transition};
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeSet;
use std::time::Duration;
use weir_crds::StreamJob;

/// Condition type: checkpoint storage can be used (credentials present, storage readable).
pub const CHECKPOINT_STORAGE: &str = "CheckpointStorageReady";

/// How long `/status` calls wait.
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// Upper bound on waiting for a final checkpoint, whatever `checkpoint.timeout` says.
const MAX_FINAL_CHECKPOINT_WAIT: Duration = Duration::from_secs(120);

/// Admin targets of the pods that are ready (only they can checkpoint).
pub fn ready_targets(pods: &[Pod]) -> Vec<AdminTarget> {
    pods.iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && pod_admin::is_ready(p))
        .map(AdminTarget::of)
        .collect()
}

/// Takes the final checkpoint of a transition (unless already taken: pods that stopped after
/// one report it), and decides the restore point.
pub async fn prepare(
    http: &reqwest::Client,
    job: &StreamJob,
    id: &JobIdentity,
    transition: Transition,
    revision: &str,
    pods: &[Pod],
) -> restore::RestoreDecision {
    let targets = ready_targets(pods);
    let reports = pod_admin::pod_reports(http, &targets, STATUS_TIMEOUT).await;
    let known = restore::newest_known(
        job.status.as_ref().and_then(|s| s.checkpoint.as_ref()),
        &reports,
    );
    let alive = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .count();
    let final_checkpoint = if !transition.wants_final_checkpoint(&job.spec) {
        FinalCheckpoint::Skipped(format!(
            "not needed for {} ({:?} upgrade mode)",
            transition.reason(),
            job.spec.upgrade_mode
        ))
    } else if alive > 1 && targets.len() < alive {
        // Several pods complete a checkpoint together: with one of them not ready, asking
        // the others would only wait out the checkpoint timeout.
        FinalCheckpoint::Failed(format!(
            "only {} of {alive} pods are ready, and a checkpoint needs all of them",
            targets.len()
        ))
    } else if !reports.is_empty()
        && reports.len() == targets.len()
        && reports.iter().all(|r| r.phase == "Stopped")
    {
        // An earlier reconcile (maybe by an operator that then restarted) took it already.
        let ids: Vec<Option<u64>> = reports
            .iter()
            .map(|r| r.last_checkpoint.as_ref().map(|c| c.id))
            .collect();
        match ids[0] {
            Some(first) if ids.iter().all(|i| *i == Some(first)) => FinalCheckpoint::Taken(first),
            _ => FinalCheckpoint::Failed(format!(
                "the pods stopped without a common final checkpoint ({ids:?})"
            )),
        }
    } else {
        let timeout =
            (job.spec.checkpoint.timeout.0 + Duration::from_secs(5)).min(MAX_FINAL_CHECKPOINT_WAIT);
        let started = std::time::Instant::now();
        let outcome = pod_admin::final_checkpoint(http, &targets, timeout).await;
        tracing::info!(job = %format!("{}/{}", id.namespace, id.name), ?outcome, elapsed_ms = started.elapsed().as_millis() as u64, "final checkpoint");
        outcome
    };
    restore::decide(&DecisionInput {
        transition,
        spec: &job.spec,
        namespace: &id.namespace,
        name: &id.name,
        revision,
        final_checkpoint: &final_checkpoint,
        known,
        now: chrono::Utc::now(),
    })
}

/// Why the checkpoint-storage Secret cannot be used, if it cannot.
pub async fn credentials_problem(
    client: &kube::Client,
    job: &StreamJob,
    namespace: &str,
) -> Result<Option<String>, kube::Error> {
    let Some(secret) = job.spec.checkpoint.credentials_secret.as_deref() else {
        return Ok(None);
    };
    let required = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
    Ok(match apply::secret_keys(client, namespace, secret).await? {
        None => Some(format!(
            "spec.checkpoint.credentialsSecret: Secret {namespace}/{secret} does not exist"
        )),
        Some(keys) => {
            let missing: Vec<&str> = required
                .iter()
                .copied()
                .filter(|k| !keys.iter().any(|have| have == k))
                .collect();
            (!missing.is_empty()).then(|| {
                format!(
                    "spec.checkpoint.credentialsSecret: Secret {namespace}/{secret} has no {}",
                    missing.join(", ")
                )
            })
        }
    })
}

/// Why the job's pods cannot start, from their termination messages (first one found).
/// Ready pods are skipped: an old message of a pod that runs now is history.
pub fn start_failure(pods: &[Pod]) -> Option<(String, StartFailure)> {
    let not_ready: Vec<Pod> = pods
        .iter()
        .filter(|p| !pod_admin::is_ready(p))
        .cloned()
        .collect();
    pod_admin::termination_messages(&not_ready)
        .into_iter()
        .find_map(|(pod, msg)| restore::classify_termination(&msg).map(|f| (pod, f)))
}

/// The ready pods among `pods` that say they are `Stopped`: a final checkpoint completed and
/// they process nothing more, so replacing them loses nothing.
pub async fn stopped_pods(http: &reqwest::Client, pods: &[Pod]) -> BTreeSet<String> {
    let targets = ready_targets(pods);
    let answers = futures::future::join_all(
        targets
            .iter()
            .map(|t| pod_admin::pod_report(http, t, STATUS_TIMEOUT)),
    )
    .await;
    targets
        .into_iter()
        .zip(answers)
        .filter(|(_, r)| r.as_ref().is_ok_and(|r| r.phase == "Stopped"))
        .map(|(t, _)| t.pod)
        .collect()
}

/// `/status` of the ready pods.
pub async fn reports(http: &reqwest::Client, pods: &[Pod]) -> Vec<PodReport> {
    pod_admin::pod_reports(http, &ready_targets(pods), STATUS_TIMEOUT).await
}
