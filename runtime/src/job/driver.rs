//! The job's run loop in one process: task events and admin requests in, the coordinator's
//! decisions (`coordinator`) carried out: task commands, SST uploads, the completion marker,
//! retention, status, metrics, progress lines and replies to `POST /checkpoint`.

use super::coordinator::{AfterCheckpoint, CheckpointCoordinator, Poll, ShutdownCheck};
use super::{lock, JobConfig, JobError, Mode};
use crate::checkpoint::catalog::RestoreFrom;
use crate::checkpoint::retention::plan_retention;
use crate::checkpoint::storage::CheckpointStorage;
use crate::checkpoint::transfer::{
    load_catalog, read_manifest, read_marker, read_stopped_note, upload_task, write_marker,
    write_stopped_note, StoredSsts, TransferError,
};
use crate::checkpoint::{checkpoint_dir, task_manifest_path, CompletedMarker, StoppedNote};
use crate::job::admin::{AdminRequest, CheckpointFailure, CheckpointReply};
use crate::job::status::{
    CheckpointFailureInfo, CheckpointFailureKind, CheckpointInfo, SharedStatus, TaskStatus,
};
use crate::metrics::TaskMetrics;
use crate::record::now_ms;
use crate::task::{TaskCommand, TaskEvent};
use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// The answer channel of one `POST /checkpoint`.
pub(super) type Reply = tokio::sync::oneshot::Sender<CheckpointReply>;

/// One task thread of this process.
pub(super) struct TaskHandle {
    pub(super) id: u32,
    pub(super) commands: Sender<TaskCommand>,
    pub(super) thread: Option<std::thread::JoinHandle<()>>,
    pub(super) metrics: TaskMetrics,
}

/// Runs one process's part of the job.
pub(super) struct JobDriver {
    pub(super) coordinator: CheckpointCoordinator<Reply>,
    pub(super) cfg: JobConfig,
    pub(super) storage: CheckpointStorage,
    pub(super) status: SharedStatus,
    pub(super) tasks: Vec<TaskHandle>,
    pub(super) events: Receiver<TaskEvent>,
    pub(super) admin: Receiver<AdminRequest>,
    /// Checkpoints retention must keep (the one restored from).
    pub(super) protected: Vec<u64>,
    pub(super) known_ssts: BTreeMap<u32, StoredSsts>,
}

impl JobDriver {
    pub(super) fn run(&mut self) -> Result<(), JobError> {
        let mut last_progress = Instant::now();
        let mut last_status = Instant::now() - Duration::from_secs(1);
        let mut last_counts = (0u64, 0u64);
        loop {
            match self.events.recv_timeout(Duration::from_millis(50)) {
                Ok(ev) => self.on_event(ev)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if self.cfg.mode == Mode::Local {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            while let Ok(req) = self.admin.try_recv() {
                self.on_admin(req);
            }
            self.poll_in_progress()?;
            if self.coordinator.last_look_before_tick(now_ms()) {
                self.poll_in_progress()?;
            }
            self.maybe_start();
            if last_status.elapsed() >= Duration::from_millis(500) {
                self.update_status();
                last_status = Instant::now();
            }
            if last_progress.elapsed() >= Duration::from_secs(2) {
                last_counts = self.report_progress(last_progress.elapsed(), last_counts);
                last_progress = Instant::now();
            }
            if self.coordinator.is_stopped()
                && self.coordinator.in_progress().is_none()
                && self.cfg.mode == Mode::Local
            {
                return Ok(());
            }
            match self.coordinator.check_shutdown(Instant::now()) {
                ShutdownCheck::Running => {}
                ShutdownCheck::Done { signal, waited } => {
                    self.leave_stopped_note();
                    eprintln!(
                        "weir: {signal} handled: final checkpoint done after {:.1}s; exiting",
                        waited.as_secs_f64()
                    );
                    return Ok(());
                }
                ShutdownCheck::PeerStopped {
                    signal,
                    waited,
                    why,
                } => {
                    eprintln!(
                        "weir: {signal} handled after {:.1}s without a final checkpoint: {why}, so \
                         this pod's final checkpoint cannot complete; exiting, and the next start \
                         restores from the newest completed checkpoint",
                        waited.as_secs_f64()
                    );
                    return Ok(());
                }
                ShutdownCheck::DeadlinePassed {
                    signal,
                    waited,
                    last_error,
                } => {
                    return Err(JobError::ShutdownCheckpoint {
                        signal,
                        waited,
                        last: last_error,
                    })
                }
            }
        }
    }

    /// With several pods: tells the others this pod exited after its last completed
    /// checkpoint and read nothing since, so their final checkpoints need not wait for it.
    fn leave_stopped_note(&self) {
        let Some(id) = self.coordinator.last_completed() else {
            return;
        };
        if self.cfg.replicas <= 1 {
            return;
        }
        let note = StoppedNote {
            ordinal: self.cfg.ordinal,
            checkpoint_id: id,
            stopped_at: chrono::Utc::now(),
        };
        if let Err(e) = write_stopped_note(&self.storage, &note) {
            tracing::warn!("leaving the stopped note: {e}");
        }
    }

    /// During a shutdown, the final checkpoint `id` waits on the other pods: the first pod it
    /// needs that exited after an earlier checkpoint (pod 0 writes the marker; every other pod
    /// its tasks' manifests), if any.
    fn stopped_peer(&self, id: u64) -> Result<Option<String>, TransferError> {
        for ordinal in (0..self.cfg.replicas).filter(|o| *o != self.cfg.ordinal) {
            let Some(note) = read_stopped_note(&self.storage, ordinal)? else {
                continue;
            };
            if note.checkpoint_id >= id {
                continue;
            }
            let mut needed = ordinal == 0;
            for t in self.cfg.plan.tasks_for(ordinal, self.cfg.replicas) {
                needed = needed || self.storage.size(&task_manifest_path(id, t))?.is_none();
            }
            if needed {
                return Ok(Some(format!(
                    "pod {ordinal} stopped after checkpoint {} at {}",
                    note.checkpoint_id,
                    note.stopped_at.to_rfc3339()
                )));
            }
        }
        Ok(None)
    }

    /// The final checkpoint this pod is stopping with still waits for the others: gives it up
    /// when one of them has already exited (see [`Self::stopped_peer`]).
    fn give_up_on_stopped_peers(&mut self) {
        let Some(id) = self.coordinator.final_waiting_for_peers() else {
            return;
        };
        match self.stopped_peer(id) {
            Ok(Some(why)) => self.coordinator.peer_stopped(why),
            Ok(None) => {}
            Err(e) => tracing::warn!("looking for stopped pods: {e}"),
        }
    }

    fn send_all(&self, command: impl Fn() -> TaskCommand) {
        for t in &self.tasks {
            let _ = t.commands.send(command());
        }
    }

    fn maybe_start(&mut self) {
        let Some(start) = self.coordinator.maybe_start(Instant::now(), now_ms()) else {
            return;
        };
        if let Some(old) = start.superseded {
            tracing::info!(
                id = old,
                "checkpoint abandoned: superseded by checkpoint {}: not every pod completed it",
                start.id
            );
        }
        tracing::debug!(
            id = start.id,
            is_final = start.is_final,
            "starting checkpoint"
        );
        self.send_all(|| TaskCommand::Checkpoint(start.id));
    }

    fn on_event(&mut self, ev: TaskEvent) -> Result<(), JobError> {
        match ev {
            TaskEvent::Snapshot {
                task,
                dir,
                mut manifest,
            } => {
                let id = manifest.checkpoint_id;
                if self.coordinator.in_progress_id() != Some(id) {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Ok(());
                }
                let known = self.known_ssts.entry(task).or_default();
                let res = upload_task(&self.storage, &dir, &mut manifest, known);
                let _ = std::fs::remove_dir_all(&dir);
                match res {
                    Ok(uploaded) => {
                        let size = manifest.total_size();
                        self.coordinator.snapshot_stored(task, id, size, uploaded);
                        if let Some(t) = self.tasks.iter().find(|t| t.id == task) {
                            t.metrics
                                .ckpt_size
                                .set(i64::try_from(size).unwrap_or(i64::MAX));
                            t.metrics
                                .ckpt_uploaded
                                .set(i64::try_from(uploaded).unwrap_or(i64::MAX));
                        }
                    }
                    Err(e) => {
                        let kind = match e {
                            TransferError::Storage(_) => CheckpointFailureKind::Storage,
                            _ => CheckpointFailureKind::Task,
                        };
                        self.fail_checkpoint(format!("uploading task {task}: {e}"), kind)?
                    }
                }
            }
            TaskEvent::SnapshotFailed { task, id, error } => {
                if self.coordinator.in_progress_id() == Some(id) {
                    self.fail_checkpoint(
                        format!("task {task}: {error}"),
                        CheckpointFailureKind::Task,
                    )?;
                }
            }
            TaskEvent::Finished { task } => {
                if self.coordinator.task_finished(task) {
                    lock(&self.status).phase = "Finished".into();
                    eprintln!("weir: all inputs exhausted; taking a final checkpoint");
                }
            }
            TaskEvent::Failed { task, error } => {
                return Err(JobError::TaskFailed { task, error });
            }
        }
        Ok(())
    }

    /// The checkpoint in progress failed: counts, status, replies; an error once more than
    /// `tolerableFailures` failed in a row.
    fn fail_checkpoint(
        &mut self,
        why: String,
        kind: CheckpointFailureKind,
    ) -> Result<(), JobError> {
        let Some(failed) = self.coordinator.fail(&why, kind, Instant::now()) else {
            return Ok(());
        };
        for t in &self.tasks {
            t.metrics.ckpt_failures.inc();
        }
        {
            let mut s = lock(&self.status);
            s.consecutive_checkpoint_failures = failed.failures;
            s.last_checkpoint_failure = Some(CheckpointFailureInfo {
                id: failed.id,
                at: chrono::Utc::now(),
                kind,
                reason: why.clone(),
            });
        }
        tracing::warn!(id = failed.id, "checkpoint failed: {why}");
        eprintln!("weir: checkpoint {} failed: {why}", failed.id);
        for reply in failed.replies {
            let _ = reply.send(Err(CheckpointFailure {
                checkpoint_id: Some(failed.id),
                error: format!("checkpoint {} failed: {why}", failed.id),
            }));
        }
        if failed.fatal {
            return Err(JobError::CheckpointFailures {
                failures: failed.failures,
                tolerable: self.cfg.job.spec.checkpoint.tolerable_failures,
                last: why,
            });
        }
        Ok(())
    }

    /// Advances the checkpoint in progress: time-out, or the job-level marker (pod 0 writes it
    /// once every pod's task manifests exist; the other pods wait to see it), then completion.
    fn poll_in_progress(&mut self) -> Result<(), JobError> {
        let id = match self.coordinator.poll(Instant::now()) {
            Poll::Idle => return Ok(()),
            Poll::TimedOut { why } => {
                return self.fail_checkpoint(why, CheckpointFailureKind::Timeout)
            }
            Poll::Finish { id } => id,
        };
        let Some(p) = self.coordinator.in_progress() else {
            return Ok(());
        };
        let marker = if self.cfg.ordinal == 0 {
            let all: Vec<u32> = (0..self.cfg.plan.tasks).collect();
            let mut total = p.total_size;
            if self.cfg.replicas > 1 {
                let mine = self.cfg.plan.tasks_for(0, self.cfg.replicas);
                for t in all.iter().filter(|t| !mine.contains(t)) {
                    match self.storage.size(&task_manifest_path(id, *t)) {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            self.give_up_on_stopped_peers();
                            return Ok(());
                        }
                        Err(e) => {
                            return self
                                .fail_checkpoint(e.to_string(), CheckpointFailureKind::Storage)
                        }
                    }
                    if let Ok(m) = read_manifest(&self.storage, id, *t) {
                        total += m.total_size();
                    }
                }
            }
            let marker = CompletedMarker {
                checkpoint_id: id,
                started_at: chrono::DateTime::from_timestamp_millis(p.started_at_ms)
                    .unwrap_or_else(chrono::Utc::now),
                completed_at: chrono::Utc::now(),
                tasks: all,
                total_size_bytes: total,
                uploaded_bytes: p.uploaded,
                replicas: self.cfg.replicas,
                is_final: p.is_final,
                pinned_from: match self.cfg.restore_from {
                    RestoreFrom::Id(id) => Some(id),
                    RestoreFrom::Latest | RestoreFrom::None => None,
                },
                key_groups: Some(self.cfg.plan.key_groups),
            };
            if let Err(e) = write_marker(&self.storage, &marker) {
                return self.fail_checkpoint(
                    format!("writing marker: {e}"),
                    CheckpointFailureKind::Storage,
                );
            }
            marker
        } else {
            match read_marker(&self.storage, id) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    self.give_up_on_stopped_peers();
                    return Ok(());
                }
                Err(e) => {
                    return self.fail_checkpoint(e.to_string(), CheckpointFailureKind::Storage)
                }
            }
        };
        self.complete(marker);
        Ok(())
    }

    fn complete(&mut self, marker: CompletedMarker) {
        let Some(done) = self.coordinator.complete(Instant::now()) else {
            return;
        };
        let duration = done.duration.as_secs_f64();
        for t in &self.tasks {
            let _ = t.commands.send(TaskCommand::Commit(done.id));
            t.metrics.ckpt_duration.set(duration);
            t.metrics
                .ckpt_last_id
                .set(i64::try_from(done.id).unwrap_or(i64::MAX));
            t.metrics
                .ckpt_last_ts
                .set(marker.completed_at.timestamp_millis() as f64 / 1000.0);
        }
        tracing::info!(
            id = done.id,
            duration,
            size = marker.total_size_bytes,
            uploaded = marker.uploaded_bytes,
            "checkpoint completed"
        );
        {
            let mut s = lock(&self.status);
            s.consecutive_checkpoint_failures = 0;
            s.last_checkpoint_failure = None;
            s.last_checkpoint = Some(CheckpointInfo {
                id: done.id,
                completed_at: marker.completed_at,
                size: marker.total_size_bytes,
                path: format!("{}/{}", self.storage.url(), checkpoint_dir(done.id)),
            });
        }
        for reply in done.replies {
            let _ = reply.send(Ok(done.id));
        }
        if let Err(e) = self.apply_retention(done.id) {
            tracing::warn!("retention after checkpoint {}: {e}", done.id);
        }
        self.refresh_checkpoint_list();
        if done.is_final {
            eprintln!("weir: final checkpoint {} completed", done.id);
            lock(&self.status).phase = if self.coordinator.all_finished() {
                "Finished".into()
            } else {
                "Stopped".into()
            };
        }
        match done.then {
            AfterCheckpoint::Continue => {}
            AfterCheckpoint::PauseTasks => self.send_all(|| TaskCommand::Pause),
            AfterCheckpoint::StopTasks => self.send_all(|| TaskCommand::Stop),
        }
    }

    fn apply_retention(&mut self, just_completed: u64) -> Result<(), TransferError> {
        let catalog = load_catalog(&self.storage)?;
        let entries: Vec<(u64, bool)> = catalog
            .entries
            .iter()
            .map(|e| (e.id, e.marker.is_some()))
            .collect();
        let mut protected = self.protected.clone();
        protected.push(just_completed);
        if let Some(id) = self.coordinator.in_progress_id() {
            protected.push(id);
        }
        let retain = self.cfg.job.spec.checkpoint.retain as usize;
        if self.cfg.ordinal == 0 {
            for id in plan_retention(&entries, retain, &protected) {
                tracing::debug!(id, "deleting checkpoint (retention)");
                self.storage.delete_dir(&checkpoint_dir(id))?;
            }
        }
        // SSTs of this pod's tasks that no remaining manifest references
        let remaining: Vec<u64> = load_catalog(&self.storage)?
            .entries
            .iter()
            .map(|e| e.id)
            .collect();
        for t in &self.tasks {
            let mut referenced = HashSet::new();
            for id in &remaining {
                match read_manifest(&self.storage, *id, t.id) {
                    Ok(m) => referenced.extend(m.files.into_iter().map(|f| f.key)),
                    Err(_) => continue,
                }
            }
            let prefix = format!("sst/task-{}", t.id);
            for (key, _) in self.storage.list_files(&prefix)? {
                if !referenced.contains(&key) {
                    self.storage.delete(&key)?;
                    if let Some(k) = self.known_ssts.get_mut(&t.id) {
                        k.forget_key(&key);
                    }
                }
            }
        }
        Ok(())
    }

    pub(super) fn refresh_checkpoint_list(&mut self) {
        let Ok(catalog) = load_catalog(&self.storage) else {
            return;
        };
        let list: Vec<CheckpointInfo> = catalog
            .entries
            .iter()
            .filter_map(|e| {
                e.marker.as_ref().map(|m| CheckpointInfo {
                    id: e.id,
                    completed_at: m.completed_at,
                    size: m.total_size_bytes,
                    path: format!("{}/{}", self.storage.url(), checkpoint_dir(e.id)),
                })
            })
            .collect();
        let mut s = lock(&self.status);
        if s.last_checkpoint.is_none() {
            s.last_checkpoint = list.last().cloned();
        }
        s.checkpoints = list;
    }

    fn on_admin(&mut self, req: AdminRequest) {
        match req {
            AdminRequest::Shutdown { signal } => {
                if self.coordinator.begin_shutdown(signal, Instant::now()) {
                    lock(&self.status).phase = "Stopping".into();
                    self.send_all(|| TaskCommand::Pause);
                }
            }
            AdminRequest::Checkpoint { is_final, reply } => {
                // answered when the next checkpoint to start completes
                if let Err(reply) = self.coordinator.request(is_final, reply) {
                    let _ = reply.send(Err(CheckpointFailure {
                        checkpoint_id: None,
                        error: "the job is stopped; no more checkpoints".into(),
                    }));
                }
            }
        }
    }

    /// Refreshes the task list and watermark in the shared status; returns (records in, out, min watermark).
    fn update_status(&self) -> (u64, u64, Option<i64>) {
        let mut tasks = vec![];
        let (mut rin, mut rout) = (0u64, 0u64);
        let mut min_wm: Option<i64> = None;
        for t in &self.tasks {
            let i = t.metrics.records_in.get();
            let o = t.metrics.records_out.get();
            rin += i;
            rout += o;
            let wm = t.metrics.watermark.get();
            let wm = (wm != 0).then_some(wm);
            if let Some(w) = wm {
                min_wm = Some(min_wm.map_or(w, |m: i64| m.min(w)));
            }
            tasks.push(TaskStatus {
                task: t.id,
                watermark_ms: wm,
                finished: self.coordinator.is_finished(t.id),
                records_in: i,
                records_out: o,
            });
        }
        let mut s = lock(&self.status);
        s.tasks = tasks;
        s.watermark_ms = min_wm;
        (rin, rout, min_wm)
    }

    fn report_progress(&self, elapsed: Duration, last: (u64, u64)) -> (u64, u64) {
        let (rin, rout, _) = self.update_status();
        if self.cfg.progress {
            let secs = elapsed.as_secs_f64().max(0.001);
            let in_rate = rin.saturating_sub(last.0) as f64 / secs;
            let out_rate = rout.saturating_sub(last.1) as f64 / secs;
            let max = |a: Option<i64>, b: Option<i64>| a.max(b);
            let (event, delay, kafka) = self
                .tasks
                .iter()
                .map(|t| t.metrics.lags())
                .fold((None, None, None), |(e, d, k), (te, td, tk)| {
                    (max(e, te), max(d, td), max(k, tk))
                });
            let lag = crate::task::input_lag::progress_text(delay, kafka, event);
            let ck = lock(&self.status)
                .last_checkpoint
                .clone()
                .map(|c| {
                    format!(
                        "#{} ({}s ago)",
                        c.id,
                        (chrono::Utc::now() - c.completed_at).num_seconds()
                    )
                })
                .unwrap_or_else(|| "none yet".into());
            eprintln!(
                "weir: in {in_rate:.0} rec/s, out {out_rate:.0} rec/s | {lag} | last checkpoint {ck}"
            );
        }
        (rin, rout)
    }

    pub(super) fn stop_tasks(&mut self) {
        self.send_all(|| TaskCommand::Stop);
        for t in self.tasks.iter_mut() {
            if let Some(h) = t.thread.take() {
                let _ = h.join();
            }
        }
    }
}
