//! Restore decisions for lifecycle transitions (upgrade, rescale, restart, suspend, resume),
//! the job's checkpoint facts from the pods' reports, and start failures read from pod
//! termination messages. Pure; the controller does the HTTP and Kubernetes I/O.
//!
//! The runtime itself chooses and verifies the checkpoint it restores (walking back past
//! corrupt ones, honouring `restore.maxAge`, refusing to start empty). The operator decides
//! *when* a final checkpoint is taken, records the restore point it expects in
//! `status.restores`, and confirms it once the pods report what they actually restored.

use crate::lifecycle::Lifecycle;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use weir_crds::stream_job::{CheckpointStatus, RestoreRecord, StreamJobSpec, UpgradeMode};

/// How many restore records `status.restores` keeps.
pub const MAX_RESTORE_RECORDS: usize = 10;

/// The restore reason recorded when the restore point is not the one first intended (the
/// alert rules watch for it).
pub const FALLBACK: &str = "fallback";

/// A transition of running pods that needs their state carried over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A new revision replaces the pods.
    Upgrade,
    /// The pod count changes; state is redistributed over the new task assignment.
    Rescale,
    /// `restartNonce` changed.
    Restart,
    /// Scaling to zero.
    Suspend,
    /// Scaling back up from zero.
    Resume,
}

impl Transition {
    /// The transition a reconcile's lifecycle steps amount to (the most significant one).
    pub fn of(steps: &[Lifecycle]) -> Option<Transition> {
        let has = |f: fn(&Lifecycle) -> bool| steps.iter().any(f);
        if has(|s| matches!(s, Lifecycle::Suspended)) {
            Some(Transition::Suspend)
        } else if has(|s| matches!(s, Lifecycle::Resumed)) {
            Some(Transition::Resume)
        } else if has(|s| matches!(s, Lifecycle::Upgrading { .. })) {
            Some(Transition::Upgrade)
        } else if has(|s| matches!(s, Lifecycle::Scaled { .. })) {
            Some(Transition::Rescale)
        } else if has(|s| matches!(s, Lifecycle::Restarted)) {
            Some(Transition::Restart)
        } else {
            None
        }
    }

    /// The reason recorded in `status.restores`.
    pub fn reason(self) -> &'static str {
        match self {
            Transition::Upgrade => "upgrade",
            Transition::Rescale => "rescale",
            Transition::Restart => "restartNonce",
            Transition::Suspend => "suspend",
            Transition::Resume => "resume",
        }
    }

    /// Whether the running pods are asked for a final checkpoint first (not on resume: no pod
    /// runs). Stateless jobs never take one.
    pub fn wants_final_checkpoint(self, spec: &StreamJobSpec) -> bool {
        spec.upgrade_mode == UpgradeMode::LastCheckpoint && self != Transition::Resume
    }
}

/// One completed checkpoint as a runtime pod reports it (`lastCheckpoint` in `/status`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReportedCheckpoint {
    /// Id.
    pub id: u64,
    /// Completion time.
    pub completed_at: Option<DateTime<Utc>>,
    /// Total bytes.
    #[serde(default)]
    pub size: u64,
    /// Storage path.
    #[serde(default)]
    pub path: String,
}

/// What a runtime pod's `/status` says (fields the operator reads; others are ignored).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    /// `Restoring`, `Running`, `Finished`, `Stopped`, `Failed`.
    #[serde(default)]
    pub phase: String,
    /// The checkpoint this pod restored from at start (none: started without state).
    #[serde(default)]
    pub restored_from: Option<u64>,
    /// The newest completed checkpoint this pod knows.
    #[serde(default)]
    pub last_checkpoint: Option<ReportedCheckpoint>,
    /// Checkpoint failures in a row.
    #[serde(default)]
    pub consecutive_checkpoint_failures: u64,
    /// The newest failed checkpoint, while failures are consecutive.
    #[serde(default)]
    pub last_checkpoint_failure: Option<ReportedFailure>,
    /// The job's plan as the pod runs it.
    #[serde(default)]
    pub plan: Option<weir_crds::stream_job::PlanStatus>,
}

/// A failed checkpoint as a pod reports it.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReportedFailure {
    /// Id of the failed checkpoint.
    pub id: u64,
    /// `storage`, `timeout` or `task`.
    #[serde(default)]
    pub kind: String,
    /// The runtime's error text.
    #[serde(default)]
    pub reason: String,
}

/// Why checkpoint storage looks unreachable from the running pods: the first pod whose
/// current run of failures ends in a storage failure. Timeouts and snapshot failures are
/// not storage trouble and say nothing here.
pub fn storage_failure(reports: &[PodReport]) -> Option<String> {
    reports.iter().find_map(|r| {
        let f = r.last_checkpoint_failure.as_ref()?;
        (r.consecutive_checkpoint_failures > 0 && f.kind == "storage").then(|| {
            format!(
                "checkpoint {} failed ({} in a row): {}",
                f.id, r.consecutive_checkpoint_failures, f.reason
            )
        })
    })
}

/// The outcome of asking the running pods for a final checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub enum FinalCheckpoint {
    /// Every pod completed checkpoint `id`.
    Taken(u64),
    /// It failed (or timed out); why, naming the pod.
    Failed(String),
    /// Not attempted: why (stateless, no ready pod, resume).
    Skipped(String),
}

/// The restore point the operator expects the next pods to use, and what to tell the user.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreDecision {
    /// Appended to `status.restores` (none on suspend: nothing restores yet).
    pub record: Option<RestoreRecord>,
    /// Warning events (reason, note), e.g. a failed final checkpoint.
    pub warnings: Vec<(&'static str, String)>,
    /// Normal events (reason, note).
    pub notes: Vec<(&'static str, String)>,
    /// The newest known completed checkpoint after this decision.
    pub latest: Option<ReportedCheckpoint>,
}

/// The newest of the checkpoints known from status and from the pods.
pub fn newest_known(
    status: Option<&CheckpointStatus>,
    pods: &[PodReport],
) -> Option<ReportedCheckpoint> {
    let from_status = status.and_then(|c| {
        c.latest_id.map(|id| ReportedCheckpoint {
            id,
            completed_at: c.completed_at,
            size: c.size_bytes.unwrap_or(0),
            path: c.path.clone().unwrap_or_default(),
        })
    });
    pods.iter()
        .filter_map(|p| p.last_checkpoint.clone())
        .chain(from_status)
        .max_by_key(|c| c.id)
}

/// The path of checkpoint `id` of a job whose storage is `storage_url` (the runtime's layout:
/// `<storage>/<namespace>/<job>/chk-<id>`).
pub fn checkpoint_path(storage_url: &str, namespace: &str, job: &str, id: u64) -> String {
    format!(
        "{}/{namespace}/{job}/chk-{id}",
        storage_url.trim_end_matches('/')
    )
}

/// Where a transition's pods will restore from.
pub struct DecisionInput<'a> {
    /// The transition.
    pub transition: Transition,
    /// The job's spec.
    pub spec: &'a StreamJobSpec,
    /// Namespace and name, for paths.
    pub namespace: &'a str,
    /// Job name.
    pub name: &'a str,
    /// Revision being rolled out.
    pub revision: &'a str,
    /// Result of the final checkpoint.
    pub final_checkpoint: &'a FinalCheckpoint,
    /// The newest completed checkpoint known before it (status and pod reports).
    pub known: Option<ReportedCheckpoint>,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Decides the restore point of a transition.
///
/// - `stateless`: no restore; recorded as such.
/// - an explicit `restore.from`: that checkpoint.
/// - a final checkpoint taken: that checkpoint.
/// - otherwise the newest known successful checkpoint, if it is within `restore.maxAge`
///   (reason `fallback`, with a Warning when a final checkpoint was attempted and failed);
/// - none known: the record says no checkpoint; the runtime then looks in storage itself and
///   refuses to start empty when state was expected.
pub fn decide(input: &DecisionInput<'_>) -> RestoreDecision {
    let spec = input.spec;
    let mut warnings = vec![];
    let mut notes = vec![];
    let path = |id| checkpoint_path(&spec.checkpoint.storage, input.namespace, input.name, id);
    let record = |id: Option<u64>, age: Option<i64>, reason: &str, note: Option<String>| {
        Some(RestoreRecord {
            checkpoint_id: id,
            path: id.map(path),
            age_seconds: age,
            reason: reason.to_string(),
            time: input.now,
            revision: Some(input.revision.to_string()),
            confirmed: false,
            note,
        })
    };
    let reason = input.transition.reason();
    let taken = match input.final_checkpoint {
        FinalCheckpoint::Taken(id) => {
            notes.push((
                "FinalCheckpoint",
                format!("{reason}: every pod completed final checkpoint {id}"),
            ));
            Some(ReportedCheckpoint {
                id: *id,
                completed_at: Some(input.now),
                size: 0,
                path: path(*id),
            })
        }
        FinalCheckpoint::Failed(why) => {
            warnings.push((
                "FinalCheckpointFailed",
                format!("{reason}: the final checkpoint failed ({why}); falling back to the latest successful checkpoint"),
            ));
            None
        }
        FinalCheckpoint::Skipped(_) => None,
    };
    let latest = match (&taken, &input.known) {
        (Some(t), Some(k)) if k.id >= t.id => Some(k.clone()),
        (Some(t), _) => Some(t.clone()),
        (None, k) => k.clone(),
    };
    if input.transition == Transition::Suspend {
        return RestoreDecision {
            record: None,
            warnings,
            notes,
            latest,
        };
    }
    if spec.upgrade_mode == UpgradeMode::Stateless {
        return RestoreDecision {
            record: record(
                None,
                None,
                reason,
                Some("upgradeMode stateless: the new pods start without state".into()),
            ),
            warnings,
            notes,
            latest,
        };
    }
    if let Some(from) = spec.restore.from.as_deref().filter(|f| *f != "latest") {
        let id = explicit_id(from);
        return RestoreDecision {
            record: record(
                id,
                None,
                "restoreFrom",
                Some(format!("restore.from is set to {from}")),
            ),
            warnings,
            notes,
            latest,
        };
    }
    let age = |c: &ReportedCheckpoint| {
        c.completed_at
            .map(|t| input.now.signed_duration_since(t).num_seconds().max(0))
    };
    if let Some(t) = &taken {
        return RestoreDecision {
            record: record(Some(t.id), Some(0), reason, None),
            warnings,
            notes,
            latest,
        };
    }
    let failed = matches!(input.final_checkpoint, FinalCheckpoint::Failed(_));
    let Some(known) = &input.known else {
        let note = if failed {
            "the final checkpoint failed and no successful checkpoint is known; the runtime looks in storage and refuses to start empty if state is expected"
        } else {
            "no successful checkpoint is known; the runtime looks in storage and refuses to start empty if state is expected"
        };
        return RestoreDecision {
            record: record(
                None,
                None,
                if failed { FALLBACK } else { reason },
                Some(note.into()),
            ),
            warnings,
            notes,
            latest,
        };
    };
    let known_age = age(known);
    if let (Some(max), Some(a)) = (spec.restore.max_age, known_age) {
        if u64::try_from(a).unwrap_or(0) > max.0.as_secs() {
            warnings.push((
                "NoRestorableCheckpoint",
                format!(
                    "{reason}: the latest successful checkpoint {} is {a}s old, over restore.maxAge ({}s)",
                    known.id,
                    max.0.as_secs()
                ),
            ));
            return RestoreDecision {
                record: record(
                    None,
                    None,
                    if failed { FALLBACK } else { reason },
                    Some(format!(
                        "checkpoint {} is older than restore.maxAge",
                        known.id
                    )),
                ),
                warnings,
                notes,
                latest,
            };
        }
    }
    let (why, note) = if failed {
        (
            FALLBACK,
            Some(format!(
                "{reason}: final checkpoint failed; using the latest successful checkpoint {}",
                known.id
            )),
        )
    } else {
        (reason, None)
    };
    RestoreDecision {
        record: record(Some(known.id), known_age, why, note),
        warnings,
        notes,
        latest,
    }
}

/// The id in an explicit `restore.from` (an id or a path ending in `chk-<id>`).
pub fn explicit_id(from: &str) -> Option<u64> {
    let last = from.trim().trim_end_matches('/').rsplit('/').next()?;
    last.strip_prefix("chk-").unwrap_or(last).parse().ok()
}

/// Appends `record`, keeping the newest [`MAX_RESTORE_RECORDS`].
pub fn push_record(records: &mut Vec<RestoreRecord>, record: RestoreRecord) {
    records.push(record);
    let excess = records.len().saturating_sub(MAX_RESTORE_RECORDS);
    records.drain(..excess);
}

/// Whether a restore for `revision` and `reason` is already the last record (a reconcile
/// repeated after an operator restart must not record, or roll out, twice).
pub fn already_recorded(
    records: &[RestoreRecord],
    revision: &str,
    time_after: DateTime<Utc>,
) -> bool {
    records
        .last()
        .is_some_and(|r| r.revision.as_deref() == Some(revision) && r.time >= time_after)
}

/// What the ready pods reported, compared with the last unconfirmed record: confirms it, or
/// corrects it (with a Warning) when the runtime restored something else, e.g. walked back
/// past a corrupt checkpoint.
pub fn confirm_last_record(
    records: &mut [RestoreRecord],
    pods: &[PodReport],
    storage_url: &str,
    namespace: &str,
    name: &str,
) -> Option<(&'static str, String)> {
    let last = records.last_mut().filter(|r| !r.confirmed)?;
    if pods.is_empty() || pods.iter().any(|p| p.phase == "Restoring") {
        return None;
    }
    let restored: Vec<Option<u64>> = pods.iter().map(|p| p.restored_from).collect();
    let actual = restored[0];
    last.confirmed = true;
    if restored.iter().any(|r| *r != actual) {
        let note = format!("pods restored from different checkpoints: {restored:?}");
        last.note = Some(note.clone());
        return Some(("RestoreMismatch", note));
    }
    if actual == last.checkpoint_id {
        // Expected no checkpoint, got none: say so when there was a reason to expect state.
        if actual.is_none() && last.note.is_some() {
            let note = format!(
                "{}; the pods started without state",
                last.note.as_deref().unwrap_or_default()
            );
            last.note = Some(note.clone());
            return Some(("StartedWithoutState", note));
        }
        return None;
    }
    let expected = last.checkpoint_id;
    last.checkpoint_id = actual;
    last.path = actual.map(|id| checkpoint_path(storage_url, namespace, name, id));
    if let (Some(e), Some(a)) = (expected, actual) {
        if a > e && last.reason == "restoreFrom" {
            // the runtime continues a run pinned to restore.from from that run's newest
            // checkpoint instead of going back to the pin
            last.note = Some(format!(
                "restore.from {e} was restored before; the pods continued from checkpoint {a}, the newest taken since"
            ));
            return None;
        }
        if a > e {
            // A newer complete checkpoint holds everything the expected one does: the pods
            // restored `e`, checkpointed, and restarted before this confirmation. Nothing fell
            // back, so the reason stays and no warning is raised.
            last.note = Some(format!(
                "the pods restored checkpoint {a}, newer than {e}: they had restored {e}, checkpointed and restarted before the restore was confirmed"
            ));
            return None;
        }
    }
    if expected.is_some() {
        last.reason = FALLBACK.to_string();
    }
    let note = match (expected, actual) {
        (Some(e), Some(a)) => format!("checkpoint {e} could not be restored (see the pod log for why); the pods restored from the older checkpoint {a}"),
        (Some(e), None) => format!("checkpoint {e} could not be restored; the pods started without state (allowNonRestoredState)"),
        (None, Some(a)) => format!("the pods restored from checkpoint {a} found in storage"),
        (None, None) => "the pods started without state".to_string(),
    };
    last.note = Some(note.clone());
    let reason = match (expected, actual) {
        (_, None) => "StartedWithoutState",
        (Some(_), Some(_)) => "RestoredFromOlderCheckpoint",
        (None, Some(_)) => "RestoredFromStorage",
    };
    Some((reason, note))
}

/// `status.checkpoint` from the pods' reports, keeping what status knew (the newest wins;
/// total failures come from the task metrics).
pub fn checkpoint_status(
    previous: Option<&CheckpointStatus>,
    pods: &[PodReport],
    total_failures: Option<u64>,
) -> Option<CheckpointStatus> {
    let newest = newest_known(previous, pods);
    if newest.is_none() && previous.is_none() && pods.is_empty() {
        return None;
    }
    let mut next = previous.cloned().unwrap_or_default();
    if let Some(c) = newest {
        next.latest_id = Some(c.id);
        if !c.path.is_empty() {
            next.path = Some(c.path);
        }
        if c.completed_at.is_some() {
            next.completed_at = c.completed_at;
        }
        if c.size > 0 {
            next.size_bytes = Some(c.size);
        }
    }
    if !pods.is_empty() {
        next.consecutive_failures = pods
            .iter()
            .map(|p| p.consecutive_checkpoint_failures)
            .max()
            .unwrap_or(0);
    }
    if let Some(total) = total_failures {
        next.total_failed = next.total_failed.max(total);
    }
    Some(next)
}

/// Why runtime pods cannot start, read from their containers' termination messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartFailure {
    /// State was expected but no checkpoint can be restored: the job goes to Failed.
    NoRestorableCheckpoint(String),
    /// Checkpoint storage could not be read; the pod restarts with backoff.
    StorageUnreachable(String),
    /// The newest checkpoint's keyed state does not fit the spec (another
    /// `spec.maxParallelism`, or another number of tasks behind an exchange): the job goes to
    /// Failed until the spec is set back or the job starts without state.
    IncompatibleState(String),
}

/// Classifies a runtime container's termination message (the runtime's last log lines).
pub fn classify_termination(message: &str) -> Option<StartFailure> {
    let line = |needle: &str| {
        message
            .lines()
            .rev()
            .find(|l| l.contains(needle))
            .map(|l| l.trim().chars().take(1024).collect::<String>())
    };
    if let Some(l) = line("refusing to start without state") {
        return Some(StartFailure::NoRestorableCheckpoint(l));
    }
    if let Some(l) = line("reading checkpoints") {
        return Some(StartFailure::StorageUnreachable(l));
    }
    if let Some(l) = line("cannot be regrouped").or_else(|| line("cannot be moved between tasks")) {
        return Some(StartFailure::IncompatibleState(l));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_crds::Dur;

    fn spec() -> StreamJobSpec {
        serde_yaml::from_str(
            r#"
image: weir-runtime:test
checkpoint: {interval: 10s, storage: "file:///ckpt"}
pipeline:
  sources: [{name: gen, generator: {kind: nexmark}}]
  sinks: [{name: out, input: gen, stdout: {}}]
"#,
        )
        .expect("spec")
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-21T12:00:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn known(id: u64, age_s: i64) -> ReportedCheckpoint {
        ReportedCheckpoint {
            id,
            completed_at: Some(now() - chrono::Duration::seconds(age_s)),
            size: 10,
            path: format!("file:///ckpt/ns/job/chk-{id}"),
        }
    }

    fn input<'a>(
        t: Transition,
        spec: &'a StreamJobSpec,
        fin: &'a FinalCheckpoint,
        known: Option<ReportedCheckpoint>,
    ) -> DecisionInput<'a> {
        DecisionInput {
            transition: t,
            spec,
            namespace: "ns",
            name: "job",
            revision: "r2",
            final_checkpoint: fin,
            known,
            now: now(),
        }
    }

    #[test]
    fn a_final_checkpoint_is_the_restore_point() {
        let s = spec();
        let fin = FinalCheckpoint::Taken(7);
        let d = decide(&input(Transition::Upgrade, &s, &fin, Some(known(5, 30))));
        let r = d.record.expect("record");
        assert_eq!(r.checkpoint_id, Some(7));
        assert_eq!(r.path.as_deref(), Some("file:///ckpt/ns/job/chk-7"));
        assert_eq!(r.reason, "upgrade");
        assert_eq!(r.revision.as_deref(), Some("r2"));
        assert!(d.warnings.is_empty());
        assert_eq!(d.latest.map(|c| c.id), Some(7));
    }

    #[test]
    fn a_failed_final_checkpoint_falls_back_with_a_warning() {
        let s = spec();
        let fin = FinalCheckpoint::Failed("pod job-0: timed out".into());
        let d = decide(&input(Transition::Upgrade, &s, &fin, Some(known(5, 30))));
        let r = d.record.expect("record");
        assert_eq!(r.checkpoint_id, Some(5));
        assert_eq!(r.age_seconds, Some(30));
        assert_eq!(r.reason, FALLBACK);
        assert!(r.note.expect("note").contains("final checkpoint failed"));
        assert_eq!(d.warnings[0].0, "FinalCheckpointFailed");
        assert!(d.warnings[0].1.contains("timed out"));
    }

    #[test]
    fn fallback_respects_max_age() {
        let mut s = spec();
        s.restore.max_age = Some(Dur(std::time::Duration::from_secs(60)));
        let fin = FinalCheckpoint::Failed("boom".into());
        let d = decide(&input(Transition::Upgrade, &s, &fin, Some(known(5, 120))));
        assert_eq!(d.record.expect("record").checkpoint_id, None);
        assert!(d
            .warnings
            .iter()
            .any(|(r, m)| *r == "NoRestorableCheckpoint" && m.contains("maxAge")));
        let d = decide(&input(Transition::Upgrade, &s, &fin, Some(known(5, 59))));
        assert_eq!(d.record.expect("record").checkpoint_id, Some(5));
    }

    #[test]
    fn explicit_restore_from_wins() {
        let mut s = spec();
        s.restore.from = Some("file:///ckpt/ns/job/chk-3/".into());
        let fin = FinalCheckpoint::Taken(9);
        let d = decide(&input(Transition::Upgrade, &s, &fin, None));
        let r = d.record.expect("record");
        assert_eq!(r.checkpoint_id, Some(3));
        assert_eq!(r.reason, "restoreFrom");
        assert_eq!(explicit_id("12"), Some(12));
        assert_eq!(explicit_id("latest"), None);
    }

    #[test]
    fn stateless_and_suspend() {
        let mut s = spec();
        let fin = FinalCheckpoint::Taken(4);
        let d = decide(&input(Transition::Suspend, &s, &fin, None));
        assert!(d.record.is_none());
        assert_eq!(d.latest.map(|c| c.id), Some(4));
        assert_eq!(d.notes[0].0, "FinalCheckpoint");
        s.upgrade_mode = UpgradeMode::Stateless;
        assert!(!Transition::Upgrade.wants_final_checkpoint(&s));
        let skipped = FinalCheckpoint::Skipped("stateless".into());
        let d = decide(&input(Transition::Upgrade, &s, &skipped, Some(known(4, 1))));
        assert_eq!(d.record.expect("record").checkpoint_id, None);
    }

    #[test]
    fn resume_uses_the_newest_known_checkpoint() {
        let s = spec();
        assert!(!Transition::Resume.wants_final_checkpoint(&s));
        let skipped = FinalCheckpoint::Skipped("resume".into());
        let d = decide(&input(
            Transition::Resume,
            &s,
            &skipped,
            Some(known(8, 300)),
        ));
        let r = d.record.expect("record");
        assert_eq!((r.checkpoint_id, r.reason.as_str()), (Some(8), "resume"));
        let d = decide(&input(Transition::Resume, &s, &skipped, None));
        assert_eq!(d.record.expect("record").checkpoint_id, None);
    }

    #[test]
    fn transitions_from_lifecycle_steps() {
        use Lifecycle::*;
        assert_eq!(Transition::of(&[Suspended]), Some(Transition::Suspend));
        assert_eq!(
            Transition::of(&[
                Resumed,
                Upgrading {
                    from: "a".into(),
                    to: "b".into()
                }
            ]),
            Some(Transition::Resume)
        );
        assert_eq!(
            Transition::of(&[Scaled { from: 1, to: 2 }]),
            Some(Transition::Rescale)
        );
        assert_eq!(Transition::of(&[Restarted]), Some(Transition::Restart));
        assert_eq!(Transition::of(&[Deploying]), None);
        assert_eq!(Transition::of(&[]), None);
    }

    fn pod(restored: Option<u64>) -> PodReport {
        PodReport {
            phase: "Running".into(),
            restored_from: restored,
            ..Default::default()
        }
    }

    fn rec(id: Option<u64>) -> RestoreRecord {
        RestoreRecord {
            checkpoint_id: id,
            reason: "upgrade".into(),
            time: now(),
            revision: Some("r2".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_newer_checkpoint_than_expected_is_no_fallback() {
        let mut records = vec![rec(Some(9))];
        assert_eq!(
            confirm_last_record(&mut records, &[pod(Some(12))], "file:///c", "ns", "j"),
            None,
            "no warning"
        );
        assert!(records[0].confirmed);
        assert_eq!(records[0].reason, "upgrade", "not a fallback");
        assert_eq!(records[0].checkpoint_id, Some(12));
        assert_eq!(records[0].path.as_deref(), Some("file:///c/ns/j/chk-12"));
        let note = records[0].note.as_deref().unwrap_or_default();
        assert!(note.contains("newer than 9"), "{note}");
    }

    #[test]
    fn confirmation_corrects_a_walk_back() {
        let mut records = vec![rec(Some(9))];
        assert_eq!(
            confirm_last_record(&mut records, &[pod(Some(9))], "file:///c", "ns", "j"),
            None
        );
        assert!(records[0].confirmed);
        // confirmed records are left alone
        assert_eq!(
            confirm_last_record(&mut records, &[pod(Some(1))], "file:///c", "ns", "j"),
            None
        );

        let mut records = vec![rec(Some(9))];
        let (reason, note) = confirm_last_record(
            &mut records,
            &[pod(Some(8)), pod(Some(8))],
            "file:///c",
            "ns",
            "j",
        )
        .expect("a warning");
        assert_eq!(reason, "RestoredFromOlderCheckpoint");
        assert!(note.contains("older checkpoint 8"), "{note}");
        assert_eq!(records[0].checkpoint_id, Some(8));
        assert_eq!(records[0].path.as_deref(), Some("file:///c/ns/j/chk-8"));
        assert_eq!(records[0].reason, FALLBACK);

        let mut records = vec![RestoreRecord {
            note: Some("checkpoint 3 is older than restore.maxAge".into()),
            ..rec(None)
        }];
        let (reason, note) =
            confirm_last_record(&mut records, &[pod(None)], "file:///c", "ns", "j").expect("said");
        assert_eq!(reason, "StartedWithoutState");
        assert!(note.ends_with("the pods started without state"), "{note}");
        // a first deployment without any checkpoint is not worth a word
        let mut records = vec![rec(None)];
        assert_eq!(
            confirm_last_record(&mut records, &[pod(None)], "file:///c", "ns", "j"),
            None
        );

        let mut records = vec![rec(Some(9))];
        let restoring = PodReport {
            phase: "Restoring".into(),
            ..Default::default()
        };
        assert_eq!(
            confirm_last_record(&mut records, &[restoring], "file:///c", "ns", "j"),
            None
        );
        assert!(!records[0].confirmed);
    }

    #[test]
    fn records_are_bounded_and_not_repeated() {
        let mut records = vec![];
        for i in 0..15 {
            push_record(&mut records, rec(Some(i)));
        }
        assert_eq!(records.len(), MAX_RESTORE_RECORDS);
        assert_eq!(records[0].checkpoint_id, Some(5));
        assert!(already_recorded(
            &records,
            "r2",
            now() - chrono::Duration::seconds(1)
        ));
        assert!(!already_recorded(
            &records,
            "r3",
            now() - chrono::Duration::seconds(1)
        ));
    }

    #[test]
    fn checkpoint_status_keeps_the_newest() {
        let prev = CheckpointStatus {
            latest_id: Some(3),
            total_failed: 2,
            ..Default::default()
        };
        let mut p = pod(None);
        p.last_checkpoint = Some(known(6, 5));
        p.consecutive_checkpoint_failures = 1;
        let s = checkpoint_status(Some(&prev), &[p], Some(1)).expect("status");
        assert_eq!(s.latest_id, Some(6));
        assert_eq!(s.size_bytes, Some(10));
        assert_eq!(s.consecutive_failures, 1);
        assert_eq!(s.total_failed, 2);
        assert_eq!(checkpoint_status(None, &[], None), None);
    }

    #[test]
    fn termination_messages_are_classified() {
        let msg = "INFO starting\nError: refusing to start without state: looked at file:///c — chk-3: sha mismatch; set allowNonRestoredState\n";
        match classify_termination(msg) {
            Some(StartFailure::NoRestorableCheckpoint(l)) => assert!(l.contains("chk-3")),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify_termination("Error: reading checkpoints: s3 GET failed: connection refused"),
            Some(StartFailure::StorageUnreachable(_))
        ));
        let regrouped = "Error: checkpoint 9 was taken with spec.maxParallelism 64 and it is now 128: keyed state is kept in 64 key groups, which cannot be regrouped; set spec.maxParallelism back to 64, or start without state (restore.from: none)";
        match classify_termination(regrouped) {
            Some(StartFailure::IncompatibleState(l)) => assert!(l.contains("back to 64"), "{l}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify_termination("Error: checkpoint 9 was taken with 4 task(s) and the job now has 2: its keyed state behind an exchange cannot be moved between tasks yet"),
            Some(StartFailure::IncompatibleState(_))
        ));
        assert_eq!(classify_termination("panicked at foo"), None);
    }

    fn failing(kind: &str, in_a_row: u64) -> PodReport {
        PodReport {
            phase: "Running".into(),
            consecutive_checkpoint_failures: in_a_row,
            last_checkpoint_failure: Some(ReportedFailure {
                id: 7,
                kind: kind.into(),
                reason: "checkpoint storage put chk-7/task-0/manifest.json: connection refused"
                    .into(),
            }),
            ..PodReport::default()
        }
    }

    #[test]
    fn only_current_storage_failures_say_storage_is_unreachable() {
        assert_eq!(storage_failure(&[]), None);
        assert_eq!(storage_failure(&[PodReport::default()]), None);
        assert_eq!(storage_failure(&[failing("timeout", 2)]), None);
        assert_eq!(storage_failure(&[failing("task", 1)]), None);
        // a stale failure (a checkpoint completed since) is over
        assert_eq!(storage_failure(&[failing("storage", 0)]), None);
        let why = storage_failure(&[PodReport::default(), failing("storage", 3)]).expect("failure");
        assert!(why.contains("checkpoint 7 failed (3 in a row)"), "{why}");
        assert!(why.contains("connection refused"), "{why}");
    }

    #[test]
    fn a_pinned_restore_continued_from_a_newer_checkpoint_is_no_warning() {
        let mut records = vec![RestoreRecord {
            checkpoint_id: Some(3),
            reason: "restoreFrom".into(),
            ..RestoreRecord::default()
        }];
        let pods = [PodReport {
            phase: "Running".into(),
            restored_from: Some(9),
            ..PodReport::default()
        }];
        assert_eq!(
            confirm_last_record(&mut records, &pods, "file:///ck", "ns", "job"),
            None
        );
        assert_eq!(records[0].checkpoint_id, Some(9));
        assert_eq!(records[0].reason, "restoreFrom");
        assert!(records[0].confirmed);
        assert!(records[0]
            .note
            .as_deref()
            .is_some_and(|n| n.contains("continued from checkpoint 9")));
        // an older one than the pin is still a fallback with a warning
        let mut records = vec![RestoreRecord {
            checkpoint_id: Some(12),
            reason: "restoreFrom".into(),
            ..RestoreRecord::default()
        }];
        let warned = confirm_last_record(&mut records, &pods, "file:///ck", "ns", "job");
        assert_eq!(warned.map(|w| w.0), Some("RestoredFromOlderCheckpoint"));
    }
}
