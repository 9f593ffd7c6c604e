//! The progress deadline of a transition (`spec.upgrade.progressDeadline`), pure: from the
//! job's pods as observed, the phase the StatefulSet implies, the lifecycle step this
//! reconcile took and the time, decide whether the transition is settled, still within its
//! deadline, failed (and why, read from the pods' status: crash loop with the last termination
//! message, image pull error, unschedulable, runtime refusal), or — for a suspend — overdue so
//! that its remaining pods must be deleted at once. The controller does the I/O.

use crate::restore::{classify_termination, StartFailure};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use std::time::Duration;
use weir_crds::stream_job::{DeployFailure, Phase, ProgressStatus};

/// Step name of a transition nobody asked for: pods of a running job stopped being ready.
pub const RECOVERING: &str = "Recovering";

/// Why pods are not ready, most telling first (the order [`diagnose`] prefers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailureKind {
    /// The runtime refused to start (it said why in its termination message).
    RuntimeRefused,
    /// The container keeps exiting (CrashLoopBackOff, or a non-zero exit).
    CrashLoop,
    /// The image cannot be pulled (or is absent with `imagePullPolicy: Never`).
    ImagePull,
    /// The container cannot be created from its spec (a missing Secret or ConfigMap key...).
    ContainerConfig,
    /// The scheduler finds no node for the pod.
    Unschedulable,
    /// Fewer pods exist than wanted (the StatefulSet controller cannot create them).
    PodsMissing,
    /// Pods run but do not become ready.
    NotReady,
}

impl FailureKind {
    /// The reason written to status, events and the alert.
    pub fn as_str(&self) -> &'static str {
        match self {
            FailureKind::RuntimeRefused => "RuntimeRefused",
            FailureKind::CrashLoop => "CrashLoop",
            FailureKind::ImagePull => "ImagePull",
            FailureKind::ContainerConfig => "ContainerConfig",
            FailureKind::Unschedulable => "Unschedulable",
            FailureKind::PodsMissing => "PodsMissing",
            FailureKind::NotReady => "NotReady",
        }
    }
}

/// Why the pods are not ready, as far as their status tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// The kind.
    pub kind: FailureKind,
    /// The pod it was seen on.
    pub pod: Option<String>,
    /// What Kubernetes or the container said.
    pub message: String,
}

/// How a container last ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Termination {
    /// Exit code.
    pub exit_code: i32,
    /// Kubernetes' reason (`Error`, `OOMKilled`, ...).
    pub reason: Option<String>,
    /// The container's termination message (the runtime writes why it stopped).
    pub message: Option<String>,
}

/// What matters of one pod for the deadline.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// Its Ready condition is true.
    pub ready: bool,
    /// It is being deleted.
    pub terminating: bool,
    /// `PodScheduled=False` with reason `Unschedulable`: the scheduler's message.
    pub unschedulable: Option<String>,
    /// A container waiting: (reason, message).
    pub waiting: Option<(String, String)>,
    /// A container's current or last termination with a non-zero exit code.
    pub terminated: Option<Termination>,
}

impl PodView {
    /// Reads a pod's status.
    pub fn of(pod: &Pod) -> Self {
        let status = pod.status.clone().unwrap_or_default();
        let ready = status
            .conditions
            .as_ref()
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let unschedulable = status.conditions.as_ref().and_then(|cs| {
            cs.iter()
                .find(|c| {
                    c.type_ == "PodScheduled"
                        && c.status == "False"
                        && c.reason.as_deref() == Some("Unschedulable")
                })
                .map(|c| c.message.clone().unwrap_or_default())
        });
        let mut waiting = None;
        let mut terminated = None;
        for c in status.container_statuses.unwrap_or_default() {
            if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
                if let Some(reason) = &w.reason {
                    waiting.get_or_insert((reason.clone(), w.message.clone().unwrap_or_default()));
                }
            }
            let t = c
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .or_else(|| c.last_state.as_ref().and_then(|s| s.terminated.as_ref()));
            if let Some(t) = t.filter(|t| t.exit_code != 0) {
                terminated.get_or_insert(Termination {
                    exit_code: t.exit_code,
                    reason: t.reason.clone(),
                    message: t.message.clone().filter(|m| !m.trim().is_empty()),
                });
            }
        }
        PodView {
            name: pod.metadata.name.clone().unwrap_or_default(),
            ready,
            terminating: pod.metadata.deletion_timestamp.is_some(),
            unschedulable,
            waiting,
            terminated,
        }
    }
}

const IMAGE_PULL: [&str; 5] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "RegistryUnavailable",
];
const CONTAINER_CONFIG: [&str; 3] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Why one pod is not ready; `None` for a ready or terminating pod.
fn diagnose_pod(pod: &PodView) -> Option<Diagnosis> {
    if pod.ready || pod.terminating {
        return None;
    }
    let found = |kind, message: String| {
        Some(Diagnosis {
            kind,
            pod: Some(pod.name.clone()),
            message,
        })
    };
    let waiting_reason = pod.waiting.as_ref().map(|(r, _)| r.as_str());
    if let Some(t) = &pod.terminated {
        let how = format!(
            "exit code {}{}",
            t.exit_code,
            t.reason
                .as_deref()
                .map(|r| format!(", {r}"))
                .unwrap_or_default()
        );
        if let Some(message) = &t.message {
            if let Some(StartFailure::NoRestorableCheckpoint(line)) = classify_termination(message)
            {
                return found(FailureKind::RuntimeRefused, line);
            }
            return found(
                FailureKind::CrashLoop,
                format!("the runtime container exited ({how}): {message}"),
            );
        }
        return found(
            FailureKind::CrashLoop,
            format!("the runtime container exited ({how}) without a termination message"),
        );
    }
    if let Some((reason, message)) = &pod.waiting {
        let said = |r: &str| {
            if message.is_empty() {
                r.to_string()
            } else {
                format!("{r}: {message}")
            }
        };
        if reason == "CrashLoopBackOff" {
            return found(FailureKind::CrashLoop, said(reason));
        }
        if IMAGE_PULL.contains(&reason.as_str()) {
            return found(FailureKind::ImagePull, said(reason));
        }
        if CONTAINER_CONFIG.contains(&reason.as_str()) {
            return found(FailureKind::ContainerConfig, said(reason));
        }
    }
    if let Some(message) = &pod.unschedulable {
        return found(
            FailureKind::Unschedulable,
            format!("the pod cannot be scheduled: {message}"),
        );
    }
    found(
        FailureKind::NotReady,
        match waiting_reason {
            Some(r) => format!("the runtime container is waiting ({r})"),
            None => "the pod is not ready (the runtime has not reported ready)".to_string(),
        },
    )
}

/// The most telling reason why the job's pods are not all ready (`desired` of them).
pub fn diagnose(pods: &[PodView], desired: i32) -> Option<Diagnosis> {
    let best = pods.iter().filter_map(diagnose_pod).min_by_key(|d| d.kind);
    let alive = pods.iter().filter(|p| !p.terminating).count();
    let missing = usize::try_from(desired).unwrap_or(0).saturating_sub(alive);
    match best {
        Some(d) if d.kind != FailureKind::NotReady || missing == 0 => Some(d),
        _ if missing > 0 => Some(Diagnosis {
            kind: FailureKind::PodsMissing,
            pod: None,
            message: format!(
                "{alive} of {desired} pods exist; the StatefulSet controller has not created the others (see its events)"
            ),
        }),
        other => other,
    }
}

/// What a reconcile knows when it judges progress.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// `status.progress` as last written.
    pub previous: Option<&'a ProgressStatus>,
    /// The lifecycle step this reconcile started (its event reason), if any.
    pub started: Option<&'a str>,
    /// The phase the StatefulSet implies (Running once every pod is updated and ready).
    pub phase: Phase,
    /// The revision rolled out.
    pub revision: &'a str,
    /// The job's generation.
    pub generation: Option<i64>,
    /// `spec.upgrade.progressDeadline`.
    pub deadline: Duration,
    /// Pods wanted (0 when suspended).
    pub desired: i32,
    /// The job's pods.
    pub pods: &'a [PodView],
    /// Now.
    pub now: DateTime<Utc>,
}

/// The judgement on a transition.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Running or Suspended: nothing to wait for (`status.progress` is cleared).
    Settled,
    /// Within the deadline; `diagnosis` says what the pods are stuck on, if anything.
    Waiting {
        /// The transition.
        progress: ProgressStatus,
        /// Why pods are not ready yet.
        diagnosis: Option<Diagnosis>,
    },
    /// Past the deadline with pods not ready: the job is `Failed` (`progress.failure` says why).
    Failed {
        /// The transition, with its failure.
        progress: ProgressStatus,
        /// A one-line message for status and the Warning event.
        message: String,
        /// First reconcile to see it (publish the event once).
        newly: bool,
    },
    /// A suspend past its deadline: delete `pods` without grace period.
    SuspendOverdue {
        /// The transition, with its failure.
        progress: ProgressStatus,
        /// Pods still there.
        pods: Vec<String>,
        /// First reconcile to see it (publish the event once).
        newly: bool,
    },
}

impl Verdict {
    /// `status.progress` after this verdict.
    pub fn progress(&self) -> Option<&ProgressStatus> {
        match self {
            Verdict::Settled => None,
            Verdict::Waiting { progress, .. }
            | Verdict::Failed { progress, .. }
            | Verdict::SuspendOverdue { progress, .. } => Some(progress),
        }
    }

    /// How long until the deadline, when the reconcile must look again.
    pub fn due_in(&self, now: DateTime<Utc>) -> Option<Duration> {
        match self {
            Verdict::Waiting { progress, .. } => Some(
                (progress.deadline - now)
                    .to_std()
                    .unwrap_or_default()
                    .saturating_add(Duration::from_secs(1)),
            ),
            _ => None,
        }
    }
}

fn started_now(input: &Input, step: &str) -> ProgressStatus {
    ProgressStatus {
        step: step.to_string(),
        revision: Some(input.revision.to_string()),
        generation: input.generation,
        started_at: input.now,
        deadline: input.now
            + chrono::Duration::from_std(input.deadline).unwrap_or(chrono::Duration::MAX),
        failure: None,
    }
}

/// Judges the transition. The clock starts when a lifecycle step is taken, or — when none was
/// but the pods are not settled and no clock runs — now, as `Recovering` (or the phase's step).
/// A clock keeps running across reconciles until the job is Running or Suspended.
pub fn judge(input: &Input) -> Verdict {
    if matches!(input.phase, Phase::Running | Phase::Suspended) {
        return Verdict::Settled;
    }
    let suspending = input.phase == Phase::Suspending;
    let mut progress = match (input.started, input.previous) {
        (Some(step), _) => started_now(input, step),
        (None, Some(p)) => p.clone(),
        (None, None) => started_now(
            input,
            match input.phase {
                Phase::Suspending => "Suspended",
                Phase::Upgrading => "Upgrading",
                _ => RECOVERING,
            },
        ),
    };
    if input.now <= progress.deadline {
        progress.failure = None;
        let diagnosis = if suspending {
            None
        } else {
            diagnose(input.pods, input.desired)
        };
        return Verdict::Waiting {
            progress,
            diagnosis,
        };
    }
    let newly = progress.failure.is_none();
    let deadline = humantime(input.deadline);
    if suspending {
        let pods: Vec<String> = input.pods.iter().map(|p| p.name.clone()).collect();
        if progress.failure.is_none() {
            progress.failure = Some(DeployFailure {
                reason: "SuspendDeadlineExceeded".into(),
                pod: pods.first().cloned(),
                message: format!(
                    "pods {} still running {deadline} after the suspend started; deleted without grace period",
                    pods.join(", ")
                ),
                time: input.now,
            });
        }
        return Verdict::SuspendOverdue {
            progress,
            pods,
            newly,
        };
    }
    let diagnosis = diagnose(input.pods, input.desired).unwrap_or(Diagnosis {
        kind: FailureKind::NotReady,
        pod: None,
        message: "the pods are not all updated and ready".into(),
    });
    let failure = match progress.failure.take() {
        // Keep the first diagnosis time, but follow what the pods say now.
        Some(old) => DeployFailure {
            reason: diagnosis.kind.as_str().to_string(),
            pod: diagnosis.pod.clone(),
            message: diagnosis.message.clone(),
            time: old.time,
        },
        None => DeployFailure {
            reason: diagnosis.kind.as_str().to_string(),
            pod: diagnosis.pod.clone(),
            message: diagnosis.message.clone(),
            time: input.now,
        },
    };
    let message = format!(
        "{} did not complete within the progress deadline of {deadline}{}: {}{}",
        progress.step,
        progress
            .revision
            .as_deref()
            .map(|r| format!(" (revision {r})"))
            .unwrap_or_default(),
        failure
            .pod
            .as_deref()
            .map(|p| format!("pod {p}: "))
            .unwrap_or_default(),
        failure.message
    );
    progress.failure = Some(failure);
    Verdict::Failed {
        progress,
        message,
        newly,
    }
}

/// `90s` → `1m30s`, for messages.
fn humantime(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .unwrap_or_default()
    }

    fn pod(yaml: &str) -> PodView {
        let pod: Pod = serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"));
        PodView::of(&pod)
    }

    fn crash_looping() -> PodView {
        pod(r#"
metadata: {name: ctr-0}
status:
  phase: Running
  conditions: [{type: Ready, status: "False"}, {type: PodScheduled, status: "True"}]
  containerStatuses:
    - name: runtime
      ready: false
      restartCount: 4
      image: x
      imageID: y
      state: {waiting: {reason: CrashLoopBackOff, message: "back-off 40s restarting failed container"}}
      lastState: {terminated: {exitCode: 1, reason: Error, message: "WEIR_ADMIN_PORT: 'x': expected a port number"}}
"#)
    }

    fn ready(name: &str) -> PodView {
        PodView {
            name: name.into(),
            ready: true,
            ..Default::default()
        }
    }

    fn input<'a>(
        previous: Option<&'a ProgressStatus>,
        started: Option<&'a str>,
        phase: Phase,
        pods: &'a [PodView],
        now: DateTime<Utc>,
    ) -> Input<'a> {
        Input {
            previous,
            started,
            phase,
            revision: "r2",
            generation: Some(3),
            deadline: Duration::from_secs(40),
            desired: 2,
            pods,
            now,
        }
    }

    #[test]
    fn a_crash_loop_is_read_from_the_pod_with_its_termination_message() {
        let d = diagnose(&[crash_looping(), ready("ctr-1")], 2).expect("diagnosis");
        assert_eq!(d.kind, FailureKind::CrashLoop);
        assert_eq!(d.pod.as_deref(), Some("ctr-0"));
        assert!(
            d.message.contains("expected a port number"),
            "{}",
            d.message
        );
        assert!(d.message.contains("exit code 1"), "{}", d.message);
    }

    #[test]
    fn image_pull_unschedulable_refusal_and_missing_pods_are_told_apart() {
        let image = pod(r#"
metadata: {name: ctr-0}
status:
  containerStatuses:
    - {name: runtime, ready: false, restartCount: 0, image: x, imageID: "", state: {waiting: {reason: ErrImageNeverPull, message: "image not present with pull policy of Never"}}}
"#);
        let d = diagnose(&[image], 1).expect("diagnosis");
        assert_eq!(d.kind, FailureKind::ImagePull);
        assert!(d.message.contains("ErrImageNeverPull"), "{}", d.message);

        let pending = pod(r#"
metadata: {name: ctr-1}
status:
  phase: Pending
  conditions: [{type: PodScheduled, status: "False", reason: Unschedulable, message: "0/1 nodes are available: 1 Insufficient cpu."}]
"#);
        let d = diagnose(&[ready("ctr-0"), pending.clone()], 2).expect("diagnosis");
        assert_eq!(d.kind, FailureKind::Unschedulable);
        assert!(d.message.contains("Insufficient cpu"), "{}", d.message);

        let refused = pod(r#"
metadata: {name: ctr-0}
status:
  containerStatuses:
    - name: runtime
      ready: false
      restartCount: 1
      image: x
      imageID: y
      state: {waiting: {reason: CrashLoopBackOff}}
      lastState: {terminated: {exitCode: 1, message: "error: refusing to start without state: no checkpoint in file:///c"}}
"#);
        // the refusal wins over another pod's plain crash
        let d = diagnose(&[crash_looping(), refused], 2).expect("diagnosis");
        assert_eq!(d.kind, FailureKind::RuntimeRefused);

        let d = diagnose(&[ready("ctr-0")], 3).expect("diagnosis");
        assert_eq!(d.kind, FailureKind::PodsMissing);
        assert!(d.message.contains("1 of 3"), "{}", d.message);
        // a stated reason beats "missing"
        let d = diagnose(&[pending], 3).expect("diagnosis");
        assert_eq!(d.kind, FailureKind::Unschedulable);
        assert_eq!(diagnose(&[ready("ctr-0"), ready("ctr-1")], 2), None);
    }

    #[test]
    fn an_upgrade_whose_pods_crash_fails_at_the_deadline_not_before() {
        let pods = [crash_looping(), ready("ctr-1")];
        let v = judge(&input(
            None,
            Some("Upgrading"),
            Phase::Upgrading,
            &pods,
            t(0),
        ));
        let Verdict::Waiting {
            progress,
            diagnosis,
        } = v.clone()
        else {
            panic!("{v:?}")
        };
        assert_eq!(progress.step, "Upgrading");
        assert_eq!(progress.deadline, t(40));
        assert_eq!(
            diagnosis.map(|d| d.kind),
            Some(FailureKind::CrashLoop),
            "the crash is visible while waiting"
        );
        assert_eq!(v.due_in(t(10)), Some(Duration::from_secs(31)));

        // the clock keeps running over reconciles that take no step
        let v = judge(&input(
            Some(&progress),
            None,
            Phase::Upgrading,
            &pods,
            t(40),
        ));
        assert!(matches!(v, Verdict::Waiting { .. }), "{v:?}");
        let v = judge(&input(
            Some(&progress),
            None,
            Phase::Upgrading,
            &pods,
            t(41),
        ));
        let Verdict::Failed {
            progress: failed,
            message,
            newly,
        } = v
        else {
            panic!("{v:?}")
        };
        assert!(newly);
        let failure = failed.failure.clone().expect("failure");
        assert_eq!(failure.reason, "CrashLoop");
        assert_eq!(failure.time, t(41));
        assert!(
            message.starts_with("Upgrading did not complete within the progress deadline of 40s (revision r2): pod ctr-0:"),
            "{message}"
        );
        assert!(message.contains("expected a port number"), "{message}");

        // still failed later, not new, first failure time kept
        let v = judge(&input(Some(&failed), None, Phase::Upgrading, &pods, t(90)));
        let Verdict::Failed {
            progress, newly, ..
        } = v
        else {
            panic!("{v:?}")
        };
        assert!(!newly);
        assert_eq!(progress.failure.map(|f| f.time), Some(t(41)));

        // pods recover: settled
        let all = [ready("ctr-0"), ready("ctr-1")];
        assert_eq!(
            judge(&input(Some(&failed), None, Phase::Running, &all, t(95))),
            Verdict::Settled
        );
        // a new spec restarts the clock
        let v = judge(&input(
            Some(&failed),
            Some("Upgrading"),
            Phase::Upgrading,
            &pods,
            t(100),
        ));
        let Verdict::Waiting { progress, .. } = v else {
            panic!("{v:?}")
        };
        assert_eq!((progress.started_at, progress.failure), (t(100), None));
    }

    #[test]
    fn pods_that_stop_being_ready_on_their_own_get_a_clock_too() {
        let pods = [crash_looping(), ready("ctr-1")];
        let v = judge(&input(None, None, Phase::Deploying, &pods, t(0)));
        assert_eq!(
            v.progress().map(|p| (p.step.as_str(), p.started_at)),
            Some((RECOVERING, t(0)))
        );
    }

    #[test]
    fn a_suspend_past_its_deadline_deletes_the_remaining_pods() {
        let stuck = [PodView {
            name: "ctr-1".into(),
            terminating: true,
            ..Default::default()
        }];
        let mut i = input(None, Some("Suspended"), Phase::Suspending, &stuck, t(0));
        i.desired = 0;
        let v = judge(&i);
        let progress = v.progress().cloned().expect("progress");
        assert!(
            matches!(
                v,
                Verdict::Waiting {
                    diagnosis: None,
                    ..
                }
            ),
            "{v:?}"
        );
        let mut i = input(Some(&progress), None, Phase::Suspending, &stuck, t(41));
        i.desired = 0;
        let Verdict::SuspendOverdue {
            pods,
            newly,
            progress,
        } = judge(&i)
        else {
            panic!("not overdue")
        };
        assert_eq!(pods, ["ctr-1"]);
        assert!(newly);
        assert_eq!(
            progress.failure.map(|f| f.reason),
            Some("SuspendDeadlineExceeded".to_string())
        );
        let mut i = input(None, None, Phase::Suspended, &[], t(42));
        i.desired = 0;
        assert_eq!(judge(&i), Verdict::Settled);
    }
}
