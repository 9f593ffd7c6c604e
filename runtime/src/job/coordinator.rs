//! The checkpoint coordinator's decisions, with no I/O: when to start a checkpoint, which one
//! is in progress and which tasks it still waits for, when it times out, fails or may be
//! finished, what happens after a final one, how failures count against `tolerableFailures`,
//! and when a shutdown may exit. Time is passed in (`now`, and the wall clock in ms for the
//! multi-pod tick), so every rule is unit-tested below; the driver (`job::driver`) does the
//! uploads, marker writes, status and task messages these decisions call for.
//!
//! `R` is whatever answers a `POST /checkpoint` request (a reply channel in the driver): a
//! request is answered by the first checkpoint that *starts after it*, with that checkpoint's
//! outcome; a multi-pod checkpoint superseded by the next tick hands its requests on to the next.

use crate::job::status::CheckpointFailureKind;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// With several pods, how often the driver may look for the other pods' manifests or the
/// completion marker once its own tasks are done.
const MULTI_POD_POLL: Duration = Duration::from_millis(500);
/// How long a shutdown waits after a failed final checkpoint before trying again.
const FINAL_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// The settings the coordinator decides by (from `spec.checkpoint` and the pod's place).
#[derive(Clone, Debug)]
pub struct Settings {
    /// `checkpoint.interval`.
    pub interval: Duration,
    /// `checkpoint.minPause`.
    pub min_pause: Duration,
    /// `checkpoint.timeout`.
    pub timeout: Duration,
    /// `checkpoint.tolerableFailures`.
    pub tolerable_failures: u32,
    /// Pods of the job.
    pub replicas: u32,
}

impl Settings {
    fn interval_ms(&self) -> u64 {
        u64::try_from(self.interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// The multi-pod tick at wall-clock time `wall_ms`: every pod starts checkpoint `tick`
    /// when it changes, so ids agree without talking to each other.
    pub fn tick(&self, wall_ms: i64) -> u64 {
        u64::try_from(wall_ms).unwrap_or(0) / self.interval_ms()
    }

    /// The id of the checkpoint after `last`: sequential with one pod, the wall-clock tick (but
    /// always above `last`) with several.
    pub fn next_id(&self, last: u64, wall_ms: i64) -> u64 {
        if self.replicas <= 1 {
            last + 1
        } else {
            self.tick(wall_ms).max(last + 1)
        }
    }
}

/// The checkpoint in progress.
#[derive(Debug)]
pub struct InProgress {
    /// Its id.
    pub id: u64,
    /// When it started.
    pub started: Instant,
    /// When it started, wall-clock epoch ms (for its completion marker).
    pub started_at_ms: i64,
    /// Whether it is a final checkpoint (input pauses or stops after it).
    pub is_final: bool,
    /// This pod's tasks whose snapshot is not uploaded yet.
    pub waiting_tasks: BTreeSet<u32>,
    /// Bytes of state of this pod's uploaded task snapshots.
    pub total_size: u64,
    /// Bytes this pod uploaded for it (new SSTs only).
    pub uploaded: u64,
    manifests_done: bool,
    last_poll: Instant,
    /// Every task of this pod had finished its input when it started: nothing is read after
    /// it, so once it completes it counts as a final checkpoint.
    after_input_ended: bool,
}

/// A checkpoint to start now: tell every task to take checkpoint `id`.
#[derive(Debug, PartialEq, Eq)]
pub struct Start {
    /// Its id.
    pub id: u64,
    /// A final checkpoint.
    pub is_final: bool,
    /// The multi-pod checkpoint this one supersedes (not completed by every pod in its tick).
    pub superseded: Option<u64>,
}

/// What [`CheckpointCoordinator::poll`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Poll {
    /// Nothing to do now.
    Idle,
    /// Every task of this pod uploaded its snapshot: finish checkpoint `id` (pod 0 writes the
    /// marker once every pod's manifests exist; the others wait for it).
    Finish {
        /// The checkpoint.
        id: u64,
    },
    /// The checkpoint in progress ran past `checkpoint.timeout`; call
    /// [`CheckpointCoordinator::fail`] with this reason.
    TimedOut {
        /// The reason.
        why: String,
    },
}

/// What to do with the tasks after a checkpoint completed.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterCheckpoint {
    /// Nothing: the job goes on.
    Continue,
    /// A final checkpoint with several pods: stop reading input but keep taking part in the
    /// other pods' checkpoints.
    PauseTasks,
    /// A final checkpoint with one pod: the job is stopped.
    StopTasks,
}

/// A completed checkpoint's consequences.
#[derive(Debug)]
pub struct Completed<R> {
    /// The checkpoint.
    pub id: u64,
    /// Whether it was final.
    pub is_final: bool,
    /// How long it took.
    pub duration: Duration,
    /// The requests it answers (with `Ok(id)`).
    pub replies: Vec<R>,
    /// What the tasks do next.
    pub then: AfterCheckpoint,
}

/// A failed checkpoint's consequences.
#[derive(Debug)]
pub struct Failed<R> {
    /// The checkpoint.
    pub id: u64,
    /// Failures in a row, this one included.
    pub failures: u64,
    /// The requests it answers (with the error).
    pub replies: Vec<R>,
    /// The job must stop: more than `tolerableFailures` checkpoints failed in a row.
    pub fatal: bool,
}

/// What a shutdown in progress says, checked on every round.
#[derive(Debug, PartialEq, Eq)]
pub enum ShutdownCheck {
    /// No shutdown, or its final checkpoint is still to complete.
    Running,
    /// The final checkpoint completed: exit 0.
    Done {
        /// The signal.
        signal: &'static str,
        /// Time since the signal.
        waited: Duration,
    },
    /// The final checkpoint can never complete: a pod it needs exited after an earlier final
    /// checkpoint. Exit 0 now; the next start restores from the newest completed checkpoint.
    PeerStopped {
        /// The signal.
        signal: &'static str,
        /// Time since the signal.
        waited: Duration,
        /// Which pod stopped, after which checkpoint.
        why: String,
    },
    /// The deadline passed with no final checkpoint.
    DeadlinePassed {
        /// The signal.
        signal: &'static str,
        /// Time since the signal.
        waited: Duration,
        /// The last checkpoint error, or `none`.
        last_error: String,
    },
}

#[derive(Debug)]
struct Shutdown {
    signal: &'static str,
    started: Instant,
    deadline: Instant,
    last_error: String,
    peer_stopped: Option<String>,
}

/// The coordinator of one pod's checkpoints (see the module documentation).
#[derive(Debug)]
pub struct CheckpointCoordinator<R> {
    settings: Settings,
    tasks: BTreeSet<u32>,
    finished: BTreeSet<u32>,
    in_progress: Option<InProgress>,
    last_id: u64,
    last_completed: Option<u64>,
    last_start: Instant,
    last_end: Instant,
    failures: u64,
    pending_request: Option<bool>,
    waiting_replies: Vec<R>,
    queued_replies: Vec<R>,
    stopped: bool,
    final_done: bool,
    shutdown: Option<Shutdown>,
}

impl<R> CheckpointCoordinator<R> {
    /// A coordinator for this pod's `tasks`; the next checkpoint gets an id above `last_id`.
    pub fn new(
        settings: Settings,
        tasks: impl IntoIterator<Item = u32>,
        last_id: u64,
        now: Instant,
    ) -> Self {
        CheckpointCoordinator {
            settings,
            tasks: tasks.into_iter().collect(),
            finished: BTreeSet::new(),
            in_progress: None,
            last_id,
            last_completed: None,
            last_start: now,
            last_end: now,
            failures: 0,
            pending_request: None,
            waiting_replies: vec![],
            queued_replies: vec![],
            stopped: false,
            final_done: false,
            shutdown: None,
        }
    }

    /// The checkpoint in progress.
    pub fn in_progress(&self) -> Option<&InProgress> {
        self.in_progress.as_ref()
    }

    /// The id of the checkpoint in progress.
    pub fn in_progress_id(&self) -> Option<u64> {
        self.in_progress.as_ref().map(|p| p.id)
    }

    /// Whether every task of this pod has exhausted its input.
    pub fn all_finished(&self) -> bool {
        self.tasks.iter().all(|t| self.finished.contains(t))
    }

    /// Whether task `task` has exhausted its input.
    pub fn is_finished(&self, task: u32) -> bool {
        self.finished.contains(&task)
    }

    /// Whether the job stopped after its final checkpoint (one pod): no more checkpoints.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Failed checkpoints in a row.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// Task `task` exhausted its input; true when that makes every task finished.
    pub fn task_finished(&mut self, task: u32) -> bool {
        let was = self.all_finished();
        self.finished.insert(task);
        !was && self.all_finished()
    }

    /// A `POST /checkpoint[?final=true]` request: `Err(reply)` when the job is stopped and no
    /// checkpoint will come; otherwise it rides on the next checkpoint to start.
    pub fn request(&mut self, is_final: bool, reply: R) -> Result<(), R> {
        if self.stopped {
            return Err(reply);
        }
        self.queued_replies.push(reply);
        self.pending_request = Some(is_final || self.pending_request.unwrap_or(false));
        Ok(())
    }

    /// SIGTERM/SIGINT: from now on every checkpoint is final, and the run ends once one
    /// completed or the deadline passes: `checkpoint.timeout`, plus one interval with several
    /// pods (whose checkpoints start on ticks) or one more timeout when a checkpoint is already
    /// running. Returns true when the tasks must pause (stop reading input) now; false when
    /// nothing was read since a final checkpoint, which then already counts.
    pub fn begin_shutdown(&mut self, signal: &'static str, now: Instant) -> bool {
        if self.shutdown.is_some() {
            return false;
        }
        let mut budget = self.settings.timeout;
        if self.settings.replicas > 1 {
            budget += self.settings.interval;
        } else if self.in_progress.is_some() {
            budget += self.settings.timeout;
        }
        self.shutdown = Some(Shutdown {
            signal,
            started: now,
            deadline: now + budget,
            last_error: String::new(),
            peer_stopped: None,
        });
        if self.final_done || self.stopped {
            self.final_done = true;
            return false;
        }
        self.pending_request = Some(true);
        true
    }

    /// Whether a shutdown is in progress.
    pub fn shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// The last checkpoint this process completed.
    pub fn last_completed(&self) -> Option<u64> {
        self.last_completed
    }

    /// With several pods, during a shutdown: the final checkpoint this pod stored its part of
    /// and now waits for the other pods on. The driver then looks for stopped pods' notes.
    pub fn final_waiting_for_peers(&self) -> Option<u64> {
        let p = self.in_progress.as_ref()?;
        (self.settings.replicas > 1
            && self.shutdown.is_some()
            && p.is_final
            && p.waiting_tasks.is_empty())
        .then_some(p.id)
    }

    /// A pod the final checkpoint in progress needs has exited after an earlier one (`why`):
    /// the shutdown ends now (see [`ShutdownCheck::PeerStopped`]).
    pub fn peer_stopped(&mut self, why: String) {
        if let Some(sd) = self.shutdown.as_mut() {
            sd.peer_stopped = Some(why);
        }
    }

    /// Whether a checkpoint should start now. With one pod: right away for a shutdown (after a
    /// short pause behind a failed one), a request or exhausted input, else once both
    /// `interval` since the last start and `minPause` since the last end passed. With several
    /// pods: when the wall-clock tick moves past the last id (superseding an unfinished one).
    pub fn maybe_start(&mut self, now: Instant, wall_ms: i64) -> Option<Start> {
        if self.settings.replicas > 1 {
            return self.maybe_start_on_tick(now, wall_ms);
        }
        if self.in_progress.is_some() || self.stopped {
            return None;
        }
        let is_final = if self.shutdown.is_some() {
            if self.failures > 0 && now.duration_since(self.last_end) < FINAL_RETRY_PAUSE {
                return None;
            }
            true
        } else if let Some(is_final) = self.pending_request.take() {
            is_final
        } else if self.all_finished() {
            true
        } else if now.duration_since(self.last_end) >= self.settings.min_pause
            && now.duration_since(self.last_start) >= self.settings.interval
        {
            false
        } else {
            return None;
        };
        Some(self.start(is_final, None, now, wall_ms))
    }

    /// With several pods: whether the next [`Self::maybe_start`] would supersede the
    /// checkpoint in progress although this pod's tasks are done with it. The driver then
    /// looks once more for the other pods' manifests or the marker, without waiting for
    /// [`MULTI_POD_POLL`]: another pod may have completed it, and a pod that gave it up would
    /// wait in vain for its final checkpoint once the others exited.
    pub fn last_look_before_tick(&mut self, wall_ms: i64) -> bool {
        if self.settings.replicas <= 1 {
            return false;
        }
        let tick = self.settings.tick(wall_ms);
        match self.in_progress.as_mut() {
            Some(p) if p.waiting_tasks.is_empty() && tick > p.id && p.manifests_done => {
                p.manifests_done = false;
                true
            }
            _ => false,
        }
    }

    fn maybe_start_on_tick(&mut self, now: Instant, wall_ms: i64) -> Option<Start> {
        let tick = self.settings.tick(wall_ms);
        let mut superseded = None;
        if let Some(p) = &self.in_progress {
            if tick <= p.id {
                return None;
            }
            if p.is_final && p.waiting_tasks.is_empty() && self.shutdown.is_some() {
                // this pod's part of its final checkpoint is stored: the other pods complete
                // it (or time it out); a new tick would be one they may never take part in
                return None;
            }
            superseded = Some(p.id);
            self.in_progress = None;
            // its requests ride on the next checkpoint
            let waiting = std::mem::take(&mut self.waiting_replies);
            self.queued_replies.extend(waiting);
        }
        if tick <= self.last_id {
            return None;
        }
        let is_final = self.pending_request.take().unwrap_or(false) || self.shutdown.is_some();
        Some(self.start(is_final, superseded, now, wall_ms))
    }

    fn start(
        &mut self,
        is_final: bool,
        superseded: Option<u64>,
        now: Instant,
        wall_ms: i64,
    ) -> Start {
        let id = self.settings.next_id(self.last_id, wall_ms);
        self.last_id = id;
        self.last_start = now;
        let queued = std::mem::take(&mut self.queued_replies);
        self.waiting_replies.extend(queued);
        self.in_progress = Some(InProgress {
            id,
            started: now,
            started_at_ms: wall_ms,
            is_final,
            waiting_tasks: self.tasks.clone(),
            total_size: 0,
            uploaded: 0,
            manifests_done: false,
            last_poll: now,
            after_input_ended: self.all_finished(),
        });
        Start {
            id,
            is_final,
            superseded,
        }
    }

    /// Task `task`'s snapshot for checkpoint `id` is uploaded (`size` bytes of state, `uploaded`
    /// new). False when `id` is not the checkpoint in progress: the snapshot is stale, drop it.
    pub fn snapshot_stored(&mut self, task: u32, id: u64, size: u64, uploaded: u64) -> bool {
        match self.in_progress.as_mut() {
            Some(p) if p.id == id => {
                p.waiting_tasks.remove(&task);
                p.total_size += size;
                p.uploaded += uploaded;
                true
            }
            _ => false,
        }
    }

    /// Advances the checkpoint in progress: time-out, or ready to finish once every task of
    /// this pod is in (with several pods, at most every half second, since finishing then
    /// means looking at the other pods' files).
    pub fn poll(&mut self, now: Instant) -> Poll {
        let Some(p) = self.in_progress.as_mut() else {
            return Poll::Idle;
        };
        let elapsed = now.duration_since(p.started);
        if elapsed > self.settings.timeout {
            return Poll::TimedOut {
                why: format!(
                    "checkpoint {} timed out after {:?}",
                    p.id, self.settings.timeout
                ),
            };
        }
        if !p.waiting_tasks.is_empty() {
            return Poll::Idle;
        }
        if self.settings.replicas > 1 {
            if p.manifests_done && now.duration_since(p.last_poll) < MULTI_POD_POLL {
                return Poll::Idle;
            }
            p.last_poll = now;
        }
        p.manifests_done = true;
        Poll::Finish { id: p.id }
    }

    /// The checkpoint in progress completed (its marker is written or seen).
    pub fn complete(&mut self, now: Instant) -> Option<Completed<R>> {
        let p = self.in_progress.take()?;
        self.failures = 0;
        self.last_end = now;
        self.last_completed = Some(p.id);
        if p.after_input_ended && !p.is_final {
            // a SIGTERM from now on has nothing left to checkpoint
            self.final_done = true;
        }
        let then = if !p.is_final {
            AfterCheckpoint::Continue
        } else {
            self.final_done = true;
            if self.settings.replicas > 1 {
                AfterCheckpoint::PauseTasks
            } else {
                self.stopped = true;
                AfterCheckpoint::StopTasks
            }
        };
        Some(Completed {
            id: p.id,
            is_final: p.is_final,
            duration: now.duration_since(p.started),
            replies: std::mem::take(&mut self.waiting_replies),
            then,
        })
    }

    /// The checkpoint in progress failed (`why`, of `kind`): it counts towards
    /// `tolerableFailures` and answers its requests.
    pub fn fail(
        &mut self,
        why: &str,
        _kind: CheckpointFailureKind,
        now: Instant,
    ) -> Option<Failed<R>> {
        let p = self.in_progress.take()?;
        self.failures += 1;
        self.last_end = now;
        if let Some(sd) = self.shutdown.as_mut() {
            sd.last_error = format!("checkpoint {} failed: {why}", p.id);
        }
        Some(Failed {
            id: p.id,
            failures: self.failures,
            replies: std::mem::take(&mut self.waiting_replies),
            // during a shutdown its deadline decides (a final checkpoint is retried until then)
            fatal: self.shutdown.is_none()
                && self.failures > u64::from(self.settings.tolerable_failures),
        })
    }

    /// Where a shutdown stands; checked after each round's events and decisions.
    pub fn check_shutdown(&self, now: Instant) -> ShutdownCheck {
        let Some(sd) = &self.shutdown else {
            return ShutdownCheck::Running;
        };
        let waited = now.duration_since(sd.started);
        // Once a final checkpoint completed the tasks read nothing more, so a checkpoint still
        // in progress adds nothing to it. With several pods that is a wall-clock tick taken
        // while paused, and it can never complete once another pod has exited: waiting for it
        // held a suspended pod for the whole checkpoint timeout (10 min by default).
        if self.final_done {
            return ShutdownCheck::Done {
                signal: sd.signal,
                waited,
            };
        }
        if let Some(why) = &sd.peer_stopped {
            return ShutdownCheck::PeerStopped {
                signal: sd.signal,
                waited,
                why: why.clone(),
            };
        }
        if now > sd.deadline {
            return ShutdownCheck::DeadlinePassed {
                signal: sd.signal,
                waited,
                last_error: if sd.last_error.is_empty() {
                    "none".into()
                } else {
                    sd.last_error.clone()
                },
            };
        }
        ShutdownCheck::Running
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn settings(replicas: u32) -> Settings {
        Settings {
            interval: 10 * S,
            min_pause: 2 * S,
            timeout: 60 * S,
            tolerable_failures: 1,
            replicas,
        }
    }

    fn one_pod(tasks: &[u32]) -> (CheckpointCoordinator<&'static str>, Instant) {
        let t0 = Instant::now();
        (
            CheckpointCoordinator::new(settings(1), tasks.iter().copied(), 4, t0),
            t0,
        )
    }

    #[test]
    fn one_pod_starts_on_the_interval_with_sequential_ids() {
        let (mut c, t0) = one_pod(&[0, 1]);
        assert_eq!(c.maybe_start(t0 + 9 * S, 0), None);
        let start = c.maybe_start(t0 + 10 * S, 0).expect("due");
        assert_eq!(
            start,
            Start {
                id: 5,
                is_final: false,
                superseded: None
            }
        );
        assert_eq!(c.maybe_start(t0 + 30 * S, 0), None, "one at a time");
    }

    #[test]
    fn min_pause_counts_from_the_end_of_the_last_checkpoint() {
        let (mut c, t0) = one_pod(&[0]);
        c.maybe_start(t0 + 10 * S, 0).expect("due");
        assert!(c.snapshot_stored(0, 5, 10, 10));
        assert_eq!(c.poll(t0 + 19 * S), Poll::Finish { id: 5 });
        c.complete(t0 + 19 * S).expect("in progress");
        // interval since the start passed at 20 s, but minPause since the end only at 21 s
        assert_eq!(c.maybe_start(t0 + 20 * S, 0), None);
        assert_eq!(c.maybe_start(t0 + 21 * S, 0).map(|s| s.id), Some(6));
    }

    #[test]
    fn a_checkpoint_finishes_only_when_every_task_is_in_and_ignores_stale_snapshots() {
        let (mut c, t0) = one_pod(&[0, 1]);
        c.maybe_start(t0 + 10 * S, 0).expect("due");
        assert!(
            !c.snapshot_stored(0, 4, 1, 1),
            "an older checkpoint's snapshot"
        );
        assert!(c.snapshot_stored(0, 5, 100, 40));
        assert_eq!(c.poll(t0 + 11 * S), Poll::Idle);
        assert!(c.snapshot_stored(1, 5, 50, 10));
        let p = c.in_progress().expect("in progress");
        assert_eq!((p.total_size, p.uploaded), (150, 50));
        assert_eq!(c.poll(t0 + 11 * S), Poll::Finish { id: 5 });
        let done = c.complete(t0 + 12 * S).expect("completes");
        assert_eq!((done.id, done.duration), (5, 2 * S));
        assert_eq!(done.then, AfterCheckpoint::Continue);
    }

    #[test]
    fn a_request_is_answered_by_the_next_checkpoint_to_start_and_makes_it_final() {
        let (mut c, t0) = one_pod(&[0]);
        c.maybe_start(t0 + 10 * S, 0).expect("due");
        // arrives while 5 runs: must not be answered by 5
        c.request(true, "caller").expect("accepted");
        c.snapshot_stored(0, 5, 1, 1);
        c.poll(t0 + 11 * S);
        let five = c.complete(t0 + 11 * S).expect("5");
        assert!(five.replies.is_empty());
        let six = c
            .maybe_start(t0 + 11 * S, 0)
            .expect("requested: starts at once");
        assert_eq!((six.id, six.is_final), (6, true));
        c.snapshot_stored(0, 6, 1, 1);
        c.poll(t0 + 12 * S);
        let done = c.complete(t0 + 12 * S).expect("6");
        assert_eq!(done.replies, vec!["caller"]);
        assert_eq!(done.then, AfterCheckpoint::StopTasks);
        assert!(c.is_stopped());
        assert_eq!(
            c.request(false, "late"),
            Err("late"),
            "stopped: no checkpoint will come"
        );
        assert_eq!(c.maybe_start(t0 + 60 * S, 0), None);
    }

    #[test]
    fn exhausted_input_takes_a_final_checkpoint() {
        let (mut c, t0) = one_pod(&[0, 1]);
        assert!(!c.task_finished(0));
        assert_eq!(c.maybe_start(t0 + S, 0), None);
        assert!(c.task_finished(1));
        assert!(c.maybe_start(t0 + S, 0).expect("final").is_final);
    }

    #[test]
    fn failures_count_until_more_than_tolerable_in_a_row_and_a_success_resets_them() {
        let (mut c, t0) = one_pod(&[0]);
        c.maybe_start(t0 + 10 * S, 0).expect("5");
        c.request(false, "r").ok();
        let f = c
            .fail("disk full", CheckpointFailureKind::Storage, t0 + 11 * S)
            .expect("failed");
        assert_eq!((f.id, f.failures, f.fatal), (5, 1, false));
        assert!(f.replies.is_empty(), "the request came after 5 started");
        c.maybe_start(t0 + 21 * S, 0).expect("6");
        c.snapshot_stored(0, 6, 1, 1);
        c.poll(t0 + 22 * S);
        c.complete(t0 + 22 * S).expect("6 completes");
        assert_eq!(c.failures(), 0);
        c.maybe_start(t0 + 32 * S, 0).expect("7");
        c.fail("x", CheckpointFailureKind::Task, t0 + 33 * S)
            .expect("7");
        c.maybe_start(t0 + 43 * S, 0).expect("8");
        let f = c
            .fail("y", CheckpointFailureKind::Task, t0 + 44 * S)
            .expect("8");
        assert!(f.fatal, "2 in a row with tolerableFailures 1");
    }

    #[test]
    fn a_checkpoint_times_out() {
        let (mut c, t0) = one_pod(&[0]);
        c.maybe_start(t0 + 10 * S, 0).expect("5");
        assert_eq!(c.poll(t0 + 70 * S), Poll::Idle);
        match c.poll(t0 + 71 * S) {
            Poll::TimedOut { why } => assert!(why.contains("checkpoint 5 timed out"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shutdown_takes_a_final_checkpoint_retries_after_failure_and_has_a_deadline() {
        let (mut c, t0) = one_pod(&[0]);
        assert!(c.begin_shutdown("SIGTERM", t0));
        assert!(!c.begin_shutdown("SIGTERM", t0), "once");
        let s = c.maybe_start(t0, 0).expect("at once");
        assert!(s.is_final);
        c.fail("s3 down", CheckpointFailureKind::Storage, t0 + S);
        assert_eq!(
            c.maybe_start(t0 + S, 0),
            None,
            "a short pause after a failure"
        );
        assert!(c.maybe_start(t0 + S + FINAL_RETRY_PAUSE, 0).is_some());
        c.fail("s3 down", CheckpointFailureKind::Storage, t0 + 2 * S);
        assert_eq!(c.check_shutdown(t0 + 60 * S), ShutdownCheck::Running);
        match c.check_shutdown(t0 + 61 * S) {
            ShutdownCheck::DeadlinePassed { last_error, .. } => {
                assert!(last_error.contains("s3 down"), "{last_error}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn shutdown_ends_once_the_final_checkpoint_completed() {
        let (mut c, t0) = one_pod(&[0]);
        c.begin_shutdown("SIGINT", t0);
        let s = c.maybe_start(t0, 0).expect("final");
        c.snapshot_stored(0, s.id, 1, 1);
        c.poll(t0 + S);
        assert_eq!(c.check_shutdown(t0 + S), ShutdownCheck::Running);
        c.complete(t0 + S);
        assert_eq!(
            c.check_shutdown(t0 + S),
            ShutdownCheck::Done {
                signal: "SIGINT",
                waited: S
            }
        );
    }

    #[test]
    fn shutdown_after_a_final_checkpoint_needs_no_other() {
        let (mut c, t0) = one_pod(&[0]);
        c.task_finished(0);
        let s = c.maybe_start(t0, 0).expect("final");
        c.snapshot_stored(0, s.id, 1, 1);
        c.poll(t0);
        c.complete(t0);
        assert!(!c.begin_shutdown("SIGTERM", t0 + S), "nothing read since");
        assert!(matches!(
            c.check_shutdown(t0 + S),
            ShutdownCheck::Done { .. }
        ));
    }

    #[test]
    fn shutdown_while_a_checkpoint_runs_allows_a_second_timeout() {
        let (mut c, t0) = one_pod(&[0]);
        c.maybe_start(t0 + 10 * S, 0).expect("5");
        c.begin_shutdown("SIGTERM", t0 + 10 * S);
        assert_eq!(c.check_shutdown(t0 + 130 * S), ShutdownCheck::Running);
        assert!(matches!(
            c.check_shutdown(t0 + 131 * S),
            ShutdownCheck::DeadlinePassed { .. }
        ));
    }

    #[test]
    fn several_pods_start_on_the_wall_clock_tick_and_supersede_unfinished_ones() {
        let t0 = Instant::now();
        let mut c: CheckpointCoordinator<&str> =
            CheckpointCoordinator::new(settings(2), [1], 100, t0);
        // tick = wall ms / 10 s
        assert_eq!(
            c.maybe_start(t0, 1_000_000).map(|s| s.id),
            None,
            "tick 100 is done"
        );
        let s = c.maybe_start(t0, 1_010_000).expect("tick 101");
        assert_eq!(s.id, 101);
        c.request(true, "r").ok();
        assert_eq!(c.maybe_start(t0 + S, 1_019_999), None, "still tick 101");
        let s = c.maybe_start(t0 + 10 * S, 1_020_000).expect("tick 102");
        assert_eq!(
            s,
            Start {
                id: 102,
                is_final: true,
                superseded: Some(101)
            }
        );
        assert_eq!(c.failures(), 0, "a superseded tick is no failure");
        c.snapshot_stored(1, 102, 1, 1);
        assert_eq!(c.poll(t0 + 11 * S), Poll::Finish { id: 102 });
        assert_eq!(
            c.poll(t0 + 11 * S),
            Poll::Idle,
            "the other pods' files: every 500 ms"
        );
        assert_eq!(
            c.poll(t0 + 11 * S + MULTI_POD_POLL),
            Poll::Finish { id: 102 }
        );
        let done = c.complete(t0 + 12 * S).expect("102");
        assert_eq!(done.replies, vec!["r"], "the request moved on to 102");
        assert_eq!(done.then, AfterCheckpoint::PauseTasks);
        assert!(!c.is_stopped(), "other pods may still need this one");
        assert!(c.maybe_start(t0 + 20 * S, 1_030_000).is_some());
    }

    #[test]
    fn a_pod_looks_for_the_marker_once_more_before_a_tick_supersedes_its_checkpoint() {
        let t0 = Instant::now();
        let mut c: CheckpointCoordinator<&str> =
            CheckpointCoordinator::new(settings(2), [1], 100, t0);
        let s = c.maybe_start(t0, 1_010_000).expect("tick 101");
        c.snapshot_stored(1, s.id, 1, 1);
        assert_eq!(c.poll(t0), Poll::Finish { id: 101 }, "first look");
        assert_eq!(c.poll(t0), Poll::Idle, "throttled");
        assert!(
            !c.last_look_before_tick(1_010_500),
            "the tick has not moved"
        );
        assert!(c.last_look_before_tick(1_020_000), "the next tick is due");
        assert_eq!(
            c.poll(t0),
            Poll::Finish { id: 101 },
            "one more look at once"
        );
        let next = c.maybe_start(t0, 1_020_000).expect("tick 102");
        assert_eq!(next.superseded, Some(101));
        assert!(
            !c.last_look_before_tick(1_020_000),
            "102 is not superseded yet"
        );
        assert!(!CheckpointCoordinator::<&str>::new(settings(1), [1], 0, t0)
            .last_look_before_tick(i64::MAX));
    }

    #[test]
    fn a_final_checkpoint_this_pod_stored_is_not_superseded_during_a_shutdown() {
        let t0 = Instant::now();
        let mut c: CheckpointCoordinator<&str> =
            CheckpointCoordinator::new(settings(2), [1], 100, t0);
        assert!(c.begin_shutdown("SIGTERM", t0));
        let s = c.maybe_start(t0, 1_010_000).expect("tick 101");
        assert!(s.is_final);
        assert!(
            c.maybe_start(t0, 1_020_000).is_some(),
            "superseded while this pod's part is not stored"
        );
        c.snapshot_stored(1, 102, 1, 1);
        assert!(
            c.maybe_start(t0, 1_030_000).is_none(),
            "kept: the other pods complete it"
        );
        assert_eq!(c.in_progress_id(), Some(102));
    }

    #[test]
    fn a_checkpoint_after_every_task_finished_counts_as_final_for_a_shutdown() {
        let t0 = Instant::now();
        let mut c: CheckpointCoordinator<&str> =
            CheckpointCoordinator::new(settings(2), [1], 100, t0);
        c.task_finished(1);
        let s = c.maybe_start(t0, 1_010_000).expect("tick 101");
        c.snapshot_stored(1, s.id, 1, 1);
        assert_eq!(c.poll(t0), Poll::Finish { id: 101 });
        let done = c.complete(t0).expect("101");
        assert_eq!(done.then, AfterCheckpoint::Continue);
        assert!(!c.begin_shutdown("SIGTERM", t0 + S), "nothing left to read");
        assert!(matches!(
            c.check_shutdown(t0 + S),
            ShutdownCheck::Done { .. }
        ));
    }

    #[test]
    fn a_paused_pod_exits_on_sigterm_without_waiting_for_a_tick_checkpoint() {
        // Two pods took a final checkpoint together (a suspend) and paused; ticks go on.
        let t0 = Instant::now();
        let mut c: CheckpointCoordinator<&str> =
            CheckpointCoordinator::new(settings(2), [1], 100, t0);
        c.request(true, "operator").ok();
        let s = c.maybe_start(t0, 1_010_000).expect("tick 101");
        assert!(s.is_final);
        c.snapshot_stored(1, 101, 1, 1);
        assert_eq!(c.poll(t0 + S), Poll::Finish { id: 101 });
        let done = c.complete(t0 + S).expect("101");
        assert_eq!(done.then, AfterCheckpoint::PauseTasks);
        // the next tick starts while paused; the other pod exits before taking part in it
        assert!(c.maybe_start(t0 + 10 * S, 1_020_000).is_some());
        assert!(
            !c.begin_shutdown("SIGTERM", t0 + 11 * S),
            "nothing read since the final checkpoint"
        );
        assert_eq!(
            c.check_shutdown(t0 + 11 * S),
            ShutdownCheck::Done {
                signal: "SIGTERM",
                waited: Duration::ZERO
            },
            "the unfinishable tick is not waited for"
        );
    }

    #[test]
    fn a_final_checkpoint_a_stopped_pod_cannot_join_ends_the_shutdown_at_once() {
        // The other pod stopped after the final checkpoint of an earlier tick.
        let t0 = Instant::now();
        let mut c: CheckpointCoordinator<&str> =
            CheckpointCoordinator::new(settings(2), [1], 100, t0);
        assert!(c.begin_shutdown("SIGTERM", t0));
        let s = c.maybe_start(t0, 1_010_000).expect("tick 101");
        assert_eq!(c.final_waiting_for_peers(), None, "own part not stored yet");
        c.snapshot_stored(1, s.id, 1, 1);
        assert_eq!(c.final_waiting_for_peers(), Some(101));
        assert_eq!(c.check_shutdown(t0 + S), ShutdownCheck::Running);
        c.peer_stopped("pod 0 stopped after checkpoint 100".into());
        assert_eq!(
            c.check_shutdown(t0 + S),
            ShutdownCheck::PeerStopped {
                signal: "SIGTERM",
                waited: S,
                why: "pod 0 stopped after checkpoint 100".into()
            }
        );
        let mut running: CheckpointCoordinator<&str> =
            CheckpointCoordinator::new(settings(2), [1], 100, t0);
        let s = running.maybe_start(t0, 1_010_000).expect("tick 101");
        running.snapshot_stored(1, s.id, 1, 1);
        assert_eq!(
            running.final_waiting_for_peers(),
            None,
            "only a shutdown gives up on its peers"
        );
    }

    #[test]
    fn next_id_is_above_the_last_even_when_the_clock_is_behind() {
        assert_eq!(settings(1).next_id(7, 0), 8);
        assert_eq!(settings(3).next_id(7, 50_000), 8);
        assert_eq!(settings(3).next_id(7, 500_000), 50);
    }
}
