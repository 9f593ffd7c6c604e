//! Running a job in this process: restore, start task threads, coordinate checkpoints,
//! commit sinks, report progress, and stop.

use crate::admin::{AdminRequest, CheckpointFailure, CheckpointReply};
use crate::checkpoint::catalog::RestoreFrom;
use crate::checkpoint::retention::plan_retention;
use crate::checkpoint::storage::CheckpointStorage;
use crate::checkpoint::transfer::{
    load_catalog, read_manifest, read_marker, upload_task, write_marker, StoredSsts, TransferError,
};
use crate::checkpoint::{checkpoint_dir, task_manifest_path, CompletedMarker};
use crate::metrics::{Metrics, TaskMetrics};
use crate::plan::JobPlan;
use crate::record::now_ms;
use crate::restore::{restore_tasks, RestoreError, RestoreOptions};
use crate::status::{
    CheckpointFailureInfo, CheckpointFailureKind, CheckpointInfo, JobStatus, RestoreInfo,
    SharedStatus, SkippedCheckpoint, TaskStatus,
};
use crate::task::{Task, TaskCommand, TaskError, TaskEvent, TaskStart};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_crds::stream_job::UpgradeMode;
use weir_crds::StreamJob;

/// A job run that failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Checkpoint storage could not be opened.
    #[error(transparent)]
    Storage(#[from] crate::checkpoint::storage::StorageError),
    /// Restore failed.
    #[error(transparent)]
    Restore(#[from] RestoreError),
    /// A task could not start.
    #[error(transparent)]
    Task(#[from] TaskError),
    /// A task failed while running.
    #[error("task {task} failed: {error}")]
    TaskFailed {
        /// Task index.
        task: u32,
        /// Why.
        error: String,
    },
    /// Too many checkpoints failed in a row.
    #[error("{failures} checkpoints failed in a row (tolerableFailures is {tolerable}); last error: {last}")]
    CheckpointFailures {
        /// Failures in a row.
        failures: u64,
        /// Tolerated.
        tolerable: u32,
        /// The last error.
        last: String,
    },
    /// The async runtime could not start.
    #[error("starting the I/O runtime: {0}")]
    Runtime(std::io::Error),
    /// After SIGTERM/SIGINT the final checkpoint did not complete in time.
    #[error("{signal}: no final checkpoint completed within {waited:?} (last error: {last}); the next start restores from the newest completed checkpoint")]
    ShutdownCheckpoint {
        /// The signal.
        signal: &'static str,
        /// How long the shutdown waited.
        waited: Duration,
        /// The last checkpoint error, if any.
        last: String,
    },
}

/// Whether the process exits when input ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `weir-runtime run`: exit 0 after the final checkpoint when bounded sources end.
    Local,
    /// `weir-runtime worker`: keep serving the admin API after input ends.
    Pod,
}

/// Everything needed to run a job.
pub struct JobConfig {
    /// The manifest.
    pub job: StreamJob,
    /// Its plan.
    pub plan: JobPlan,
    /// Local state directory.
    pub state_dir: PathBuf,
    /// Checkpoint storage URL.
    pub storage_url: String,
    /// Pod ordinal.
    pub ordinal: u32,
    /// Pod count.
    pub replicas: u32,
    /// Restore point.
    pub restore_from: RestoreFrom,
    /// Allow starting without state / dropping unmapped state.
    pub allow_non_restored_state: bool,
    /// Local or pod mode.
    pub mode: Mode,
    /// Admin HTTP port (None = off, Some(0) = any free port).
    pub admin_port: Option<u16>,
    /// Print progress to stderr.
    pub progress: bool,
}

struct InProgress {
    id: u64,
    started: Instant,
    started_at: chrono::DateTime<chrono::Utc>,
    waiting_tasks: HashSet<u32>,
    total_size: u64,
    uploaded: u64,
    is_final: bool,
    manifests_done: bool,
    last_poll: Instant,
}

/// A shutdown in progress (after SIGTERM/SIGINT).
struct Shutdown {
    signal: &'static str,
    started: Instant,
    deadline: Instant,
    last_error: String,
}

struct TaskHandle {
    id: u32,
    commands: Sender<TaskCommand>,
    thread: Option<std::thread::JoinHandle<()>>,
    metrics: TaskMetrics,
    finished: bool,
}

/// The checkpoint coordinator and job driver of one process.
struct Coordinator {
    cfg: JobConfig,
    storage: CheckpointStorage,
    status: SharedStatus,
    tasks: Vec<TaskHandle>,
    events: Receiver<TaskEvent>,
    admin: Receiver<AdminRequest>,
    in_progress: Option<InProgress>,
    last_id: u64,
    last_start: Instant,
    last_end: Instant,
    protected: Vec<u64>,
    known_ssts: BTreeMap<u32, StoredSsts>,
    failures: u64,
    waiting_replies: Vec<tokio::sync::oneshot::Sender<CheckpointReply>>,
    queued_replies: Vec<tokio::sync::oneshot::Sender<CheckpointReply>>,
    pending_request: Option<bool>,
    stopped: bool,
    /// A final checkpoint completed (input is paused or exhausted since).
    final_done: bool,
    shutdown: Option<Shutdown>,
}

/// Runs the job until it ends (local mode) or forever (pod mode).
pub fn run_job(cfg: JobConfig) -> Result<(), JobError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("weir-io")
        .enable_all()
        .build()
        .map_err(JobError::Runtime)?;
    let metrics = Arc::new(Metrics::new());
    let status: SharedStatus = Arc::new(Mutex::new(JobStatus {
        job: cfg.plan.job.clone(),
        phase: "Restoring".into(),
        ordinal: cfg.ordinal,
        replicas: cfg.replicas,
        ..Default::default()
    }));
    let (admin_tx, admin_rx) = mpsc::channel();
    rt.spawn(crate::shutdown::watch_signals(admin_tx.clone()));
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(port) = cfg.admin_port {
        let state = crate::admin::AdminState {
            metrics: metrics.clone(),
            status: status.clone(),
            ready: ready.clone(),
            requests: Arc::new(Mutex::new(admin_tx)),
        };
        let addr = std::net::SocketAddr::from(([0, 0, 0, 0], port));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(addr))
            .map_err(JobError::Runtime)?;
        if let Ok(a) = listener.local_addr() {
            eprintln!("weir: admin API on http://{a}");
        }
        rt.spawn(crate::admin::serve(listener, state));
    }

    let storage = CheckpointStorage::open(
        &cfg.storage_url,
        &cfg.plan.namespace,
        &cfg.plan.job,
        rt.handle().clone(),
    )?;
    let my_tasks = cfg.plan.tasks_for(cfg.ordinal, cfg.replicas);
    let allow_empty =
        cfg.allow_non_restored_state || cfg.job.spec.upgrade_mode == UpgradeMode::Stateless;
    let outcome = restore_tasks(
        &storage,
        &cfg.state_dir,
        &my_tasks,
        &RestoreOptions {
            from: cfg.restore_from.clone(),
            max_age: cfg.job.spec.restore.max_age.map(|d| d.0),
            allow_empty,
            storage_desc: storage.url(),
        },
    )?;
    match (outcome.checkpoint_id, outcome.completed_at) {
        (Some(id), Some(at)) => eprintln!(
            "weir: restored from checkpoint {id} ({}/{}, completed {}s ago)",
            storage.url(),
            checkpoint_dir(id),
            (chrono::Utc::now() - at).num_seconds()
        ),
        _ => eprintln!(
            "weir: starting without state (no checkpoint to restore in {})",
            storage.url()
        ),
    }
    let last_id = outcome.catalog.max_id().unwrap_or(0);
    let next_id = next_checkpoint_id(&cfg, last_id);
    let (ev_tx, ev_rx) = mpsc::channel();
    let mut tasks = vec![];
    let mut known_ssts = BTreeMap::new();
    for &t in &my_tasks {
        let restored = outcome.manifests.get(&t).cloned();
        if let Some(m) = &restored {
            known_ssts.insert(t, StoredSsts::from_manifest(m));
        }
        let tm = metrics.task(&cfg.plan.job, t);
        let task = Task::new(
            &cfg.plan,
            TaskStart {
                task: t,
                dir: cfg.state_dir.join(format!("task-{t}")),
                restored,
                next_checkpoint_id: next_id,
                allow_non_restored_state: cfg.allow_non_restored_state,
            },
            tm.clone(),
        )?;
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let events = ev_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("weir-task-{t}"))
            .spawn(move || task.run(cmd_rx, events))
            .map_err(JobError::Runtime)?;
        tasks.push(TaskHandle {
            id: t,
            commands: cmd_tx,
            thread: Some(thread),
            metrics: tm,
            finished: false,
        });
    }
    drop(ev_tx);
    {
        let mut s = lock(&status);
        s.phase = "Running".into();
        s.restored_from = outcome.checkpoint_id;
        s.restore = Some(RestoreInfo {
            checkpoint_id: outcome.checkpoint_id,
            path: outcome
                .checkpoint_id
                .map(|id| format!("{}/{}", storage.url(), checkpoint_dir(id))),
            completed_at: outcome.completed_at,
            skipped: outcome
                .skipped
                .iter()
                .map(|(id, why)| SkippedCheckpoint {
                    checkpoint_id: *id,
                    reason: why.clone(),
                })
                .collect(),
        });
    }
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut coord = Coordinator {
        storage,
        status,
        tasks,
        events: ev_rx,
        admin: admin_rx,
        in_progress: None,
        last_id: next_id.saturating_sub(1),
        last_start: Instant::now(),
        last_end: Instant::now(),
        protected: outcome.checkpoint_id.into_iter().collect(),
        known_ssts,
        failures: 0,
        waiting_replies: vec![],
        queued_replies: vec![],
        pending_request: None,
        stopped: false,
        final_done: false,
        shutdown: None,
        cfg,
    };
    coord.refresh_checkpoint_list();
    let res = coord.run();
    if let Err(e) = &res {
        let mut s = lock(&coord.status);
        s.phase = "Failed".into();
        s.message = Some(e.to_string());
    }
    coord.stop_tasks();
    if res.is_err() && coord.cfg.mode == Mode::Pod {
        // keep the admin API up briefly so the operator can read why
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(rt);
    res
}

fn lock(s: &SharedStatus) -> std::sync::MutexGuard<'_, JobStatus> {
    match s.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn interval_ms(cfg: &JobConfig) -> u64 {
    cfg.job.spec.checkpoint.interval.as_millis().max(1)
}

/// The id of the next checkpoint: sequential with one pod, the wall-clock tick with several.
fn next_checkpoint_id(cfg: &JobConfig, last: u64) -> u64 {
    if cfg.replicas <= 1 {
        last + 1
    } else {
        let tick = u64::try_from(now_ms()).unwrap_or(0) / interval_ms(cfg);
        tick.max(last + 1)
    }
}

impl Coordinator {
    fn run(&mut self) -> Result<(), JobError> {
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
            self.maybe_trigger()?;
            if last_status.elapsed() >= Duration::from_millis(500) {
                self.update_status();
                last_status = Instant::now();
            }
            if last_progress.elapsed() >= Duration::from_secs(2) {
                last_counts = self.report_progress(last_progress.elapsed(), last_counts);
                last_progress = Instant::now();
            }
            if self.stopped && self.in_progress.is_none() && self.cfg.mode == Mode::Local {
                return Ok(());
            }
            if let Some(sd) = &self.shutdown {
                if self.final_done && self.in_progress.is_none() {
                    eprintln!(
                        "weir: {} handled: final checkpoint done after {:.1}s; exiting",
                        sd.signal,
                        sd.started.elapsed().as_secs_f64()
                    );
                    return Ok(());
                }
                if Instant::now() > sd.deadline {
                    return Err(JobError::ShutdownCheckpoint {
                        signal: sd.signal,
                        waited: sd.started.elapsed(),
                        last: if sd.last_error.is_empty() {
                            "none".into()
                        } else {
                            sd.last_error.clone()
                        },
                    });
                }
            }
        }
    }

    /// SIGTERM/SIGINT: pause every task (no more input), then take a final checkpoint within
    /// the checkpoint timeout (plus one interval with several pods, whose checkpoints start on
    /// ticks, or plus one timeout when a checkpoint is already running); the run loop returns
    /// once it completed.
    fn begin_shutdown(&mut self, signal: &'static str) {
        if self.shutdown.is_some() {
            return;
        }
        let spec = &self.cfg.job.spec.checkpoint;
        let mut budget = spec.timeout.0;
        if self.cfg.replicas > 1 {
            budget += spec.interval.0;
        } else if self.in_progress.is_some() {
            // the running checkpoint finishes (or times out) before the final one starts
            budget += spec.timeout.0;
        }
        self.shutdown = Some(Shutdown {
            signal,
            started: Instant::now(),
            deadline: Instant::now() + budget,
            last_error: String::new(),
        });
        if self.final_done || self.stopped {
            // nothing was read since the last final checkpoint
            self.final_done = true;
            return;
        }
        lock(&self.status).phase = "Stopping".into();
        for t in &self.tasks {
            let _ = t.commands.send(TaskCommand::Pause);
        }
        self.pending_request = Some(true);
    }

    fn all_finished(&self) -> bool {
        self.tasks.iter().all(|t| t.finished)
    }

    fn maybe_trigger(&mut self) -> Result<(), JobError> {
        if self.cfg.replicas > 1 {
            return self.maybe_trigger_tick();
        }
        if self.in_progress.is_some() || self.stopped {
            return Ok(());
        }
        if self.shutdown.is_some() {
            // retry a failed final checkpoint after a short pause, until the deadline
            if self.failures == 0 || self.last_end.elapsed() >= Duration::from_millis(500) {
                self.start_checkpoint(true);
            }
            return Ok(());
        }
        if let Some(is_final) = self.pending_request.take() {
            self.start_checkpoint(is_final);
            return Ok(());
        }
        if self.all_finished() {
            self.start_checkpoint(true);
            return Ok(());
        }
        let spec = &self.cfg.job.spec.checkpoint;
        if self.last_end.elapsed() >= spec.min_pause.0
            && self.last_start.elapsed() >= spec.interval.0
        {
            self.start_checkpoint(false);
        }
        Ok(())
    }

    /// With several pods every pod starts checkpoint `tick` when the wall-clock tick changes,
    /// so ids agree without coordination. A checkpoint not completed by every pod before the
    /// next tick is superseded by the next one (its sink output is committed with the next), so
    /// with several pods a checkpoint must complete within one interval.
    /// Requests (`POST /checkpoint`, `final`) ride on the next tick's checkpoint; after a final
    /// one the tasks pause (stop reading input) but keep taking part in checkpoints.
    fn maybe_trigger_tick(&mut self) -> Result<(), JobError> {
        let tick = u64::try_from(now_ms()).unwrap_or(0) / interval_ms(&self.cfg);
        if let Some(p) = &self.in_progress {
            if tick <= p.id {
                return Ok(());
            }
            let why = format!("superseded by checkpoint {tick}: not every pod completed it");
            self.abandon_checkpoint(why, None)?;
        }
        if tick > self.last_id {
            let is_final = self.pending_request.take().unwrap_or(false) || self.shutdown.is_some();
            self.start_checkpoint(is_final);
        }
        Ok(())
    }

    fn start_checkpoint(&mut self, is_final: bool) {
        let id = next_checkpoint_id(&self.cfg, self.last_id);
        self.last_id = id;
        self.last_start = Instant::now();
        self.waiting_replies.append(&mut self.queued_replies);
        tracing::debug!(id, is_final, "starting checkpoint");
        for t in &self.tasks {
            let _ = t.commands.send(TaskCommand::Checkpoint(id));
        }
        self.in_progress = Some(InProgress {
            id,
            started: Instant::now(),
            started_at: chrono::Utc::now(),
            waiting_tasks: self.tasks.iter().map(|t| t.id).collect(),
            total_size: 0,
            uploaded: 0,
            is_final,
            manifests_done: false,
            last_poll: Instant::now(),
        });
    }

    fn on_event(&mut self, ev: TaskEvent) -> Result<(), JobError> {
        match ev {
            TaskEvent::Snapshot {
                task,
                dir,
                mut manifest,
            } => {
                let id = manifest.checkpoint_id;
                let current = self.in_progress.as_ref().map(|p| p.id);
                if current != Some(id) {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Ok(());
                }
                let known = self.known_ssts.entry(task).or_default();
                let res = upload_task(&self.storage, &dir, &mut manifest, known);
                let _ = std::fs::remove_dir_all(&dir);
                match res {
                    Ok(uploaded) => {
                        if let Some(p) = self.in_progress.as_mut() {
                            p.waiting_tasks.remove(&task);
                            p.total_size += manifest.total_size();
                            p.uploaded += uploaded;
                        }
                        if let Some(t) = self.tasks.iter().find(|t| t.id == task) {
                            t.metrics
                                .ckpt_size
                                .set(i64::try_from(manifest.total_size()).unwrap_or(i64::MAX));
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
                if self.in_progress.as_ref().map(|p| p.id) == Some(id) {
                    self.fail_checkpoint(
                        format!("task {task}: {error}"),
                        CheckpointFailureKind::Task,
                    )?;
                }
            }
            TaskEvent::Finished { task } => {
                if let Some(t) = self.tasks.iter_mut().find(|t| t.id == task) {
                    t.finished = true;
                }
                if self.all_finished() {
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

    fn fail_checkpoint(
        &mut self,
        why: String,
        kind: CheckpointFailureKind,
    ) -> Result<(), JobError> {
        self.abandon_checkpoint(why, Some(kind))
    }

    /// Drops the in-progress checkpoint; `failure` says what kind of failure it is (it counts
    /// towards `tolerableFailures`), `None` that it is a superseded multi-pod tick.
    fn abandon_checkpoint(
        &mut self,
        why: String,
        failure: Option<CheckpointFailureKind>,
    ) -> Result<(), JobError> {
        let Some(p) = self.in_progress.take() else {
            return Ok(());
        };
        let Some(kind) = failure else {
            tracing::info!(id = p.id, "checkpoint abandoned: {why}");
            for reply in self.waiting_replies.drain(..) {
                self.queued_replies.push(reply);
            }
            return Ok(());
        };
        self.failures += 1;
        self.last_end = Instant::now();
        for t in &self.tasks {
            t.metrics.ckpt_failures.inc();
        }
        {
            let mut s = lock(&self.status);
            s.consecutive_checkpoint_failures = self.failures;
            s.last_checkpoint_failure = Some(CheckpointFailureInfo {
                id: p.id,
                at: chrono::Utc::now(),
                kind,
                reason: why.clone(),
            });
        }
        tracing::warn!(id = p.id, "checkpoint failed: {why}");
        eprintln!("weir: checkpoint {} failed: {why}", p.id);
        for reply in self.waiting_replies.drain(..) {
            let _ = reply.send(Err(CheckpointFailure {
                checkpoint_id: Some(p.id),
                error: format!("checkpoint {} failed: {why}", p.id),
            }));
        }
        if let Some(sd) = self.shutdown.as_mut() {
            sd.last_error = format!("checkpoint {} failed: {why}", p.id);
        }
        let tolerable = self.cfg.job.spec.checkpoint.tolerable_failures;
        if self.failures > u64::from(tolerable) {
            return Err(JobError::CheckpointFailures {
                failures: self.failures,
                tolerable,
                last: why,
            });
        }
        Ok(())
    }

    /// Advances the in-progress checkpoint: job-level marker, commit, timeout.
    fn poll_in_progress(&mut self) -> Result<(), JobError> {
        let Some(p) = self.in_progress.as_mut() else {
            return Ok(());
        };
        let timeout = self.cfg.job.spec.checkpoint.timeout.0;
        if p.started.elapsed() > timeout {
            let id = p.id;
            return self.fail_checkpoint(
                format!("checkpoint {id} timed out after {timeout:?}"),
                CheckpointFailureKind::Timeout,
            );
        }
        if !p.waiting_tasks.is_empty() {
            return Ok(());
        }
        if !p.manifests_done {
            p.manifests_done = true;
            p.last_poll = Instant::now() - Duration::from_secs(1);
        }
        if self.cfg.replicas > 1 && p.last_poll.elapsed() < Duration::from_millis(500) {
            return Ok(());
        }
        p.last_poll = Instant::now();
        let id = p.id;
        if self.cfg.ordinal == 0 {
            let all: Vec<u32> = (0..self.cfg.plan.tasks).collect();
            let mut total = p.total_size;
            if self.cfg.replicas > 1 {
                let mine = self.cfg.plan.tasks_for(0, self.cfg.replicas);
                for t in all.iter().filter(|t| !mine.contains(t)) {
                    match self.storage.size(&task_manifest_path(id, *t)) {
                        Ok(Some(_)) => {}
                        Ok(None) => return Ok(()),
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
                started_at: p.started_at,
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
            };
            if let Err(e) = write_marker(&self.storage, &marker) {
                return self.fail_checkpoint(
                    format!("writing marker: {e}"),
                    CheckpointFailureKind::Storage,
                );
            }
            self.complete(marker);
        } else {
            match read_marker(&self.storage, id) {
                Ok(Some(m)) => self.complete(m),
                Ok(None) => {}
                Err(e) => {
                    return self.fail_checkpoint(e.to_string(), CheckpointFailureKind::Storage)
                }
            }
        }
        Ok(())
    }

    fn complete(&mut self, marker: CompletedMarker) {
        let Some(p) = self.in_progress.take() else {
            return;
        };
        self.failures = 0;
        self.last_end = Instant::now();
        let duration = p.started.elapsed().as_secs_f64();
        for t in &self.tasks {
            let _ = t.commands.send(TaskCommand::Commit(p.id));
            t.metrics.ckpt_duration.set(duration);
            t.metrics
                .ckpt_last_id
                .set(i64::try_from(p.id).unwrap_or(i64::MAX));
            t.metrics
                .ckpt_last_ts
                .set(marker.completed_at.timestamp_millis() as f64 / 1000.0);
        }
        tracing::info!(
            id = p.id,
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
                id: p.id,
                completed_at: marker.completed_at,
                size: marker.total_size_bytes,
                path: format!("{}/{}", self.storage.url(), checkpoint_dir(p.id)),
            });
        }
        for reply in self.waiting_replies.drain(..) {
            let _ = reply.send(Ok(p.id));
        }
        if let Err(e) = self.apply_retention(p.id) {
            tracing::warn!("retention after checkpoint {}: {e}", p.id);
        }
        self.refresh_checkpoint_list();
        if p.is_final {
            self.final_done = true;
            eprintln!("weir: final checkpoint {} completed", p.id);
            let finished = self.all_finished();
            lock(&self.status).phase = if finished {
                "Finished".into()
            } else {
                "Stopped".into()
            };
            if self.cfg.replicas > 1 {
                // other pods may still need this pod for later checkpoints: pause, keep ticking
                for t in &self.tasks {
                    let _ = t.commands.send(TaskCommand::Pause);
                }
            } else {
                self.stopped = true;
                for t in &self.tasks {
                    let _ = t.commands.send(TaskCommand::Stop);
                }
            }
        }
    }

    fn apply_retention(
        &mut self,
        just_completed: u64,
    ) -> Result<(), crate::checkpoint::transfer::TransferError> {
        let catalog = load_catalog(&self.storage)?;
        let entries: Vec<(u64, bool)> = catalog
            .entries
            .iter()
            .map(|e| (e.id, e.marker.is_some()))
            .collect();
        let mut protected = self.protected.clone();
        protected.push(just_completed);
        if let Some(p) = &self.in_progress {
            protected.push(p.id);
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

    fn refresh_checkpoint_list(&mut self) {
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
            AdminRequest::Shutdown { signal } => self.begin_shutdown(signal),
            AdminRequest::Checkpoint { is_final, reply } => {
                if self.stopped {
                    let _ = reply.send(Err(CheckpointFailure {
                        checkpoint_id: None,
                        error: "the job is stopped; no more checkpoints".into(),
                    }));
                    return;
                }
                // answered when the next checkpoint to start completes
                self.queued_replies.push(reply);
                self.pending_request = Some(is_final || self.pending_request.unwrap_or(false));
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
                finished: t.finished,
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
        let (rin, rout, min_wm) = self.update_status();
        if self.cfg.progress {
            let secs = elapsed.as_secs_f64().max(0.001);
            let in_rate = rin.saturating_sub(last.0) as f64 / secs;
            let out_rate = rout.saturating_sub(last.1) as f64 / secs;
            let lag = min_wm
                .map(|w| format!("{:.1}s", (now_ms() - w) as f64 / 1000.0))
                .unwrap_or_else(|| "-".into());
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
                "weir: in {in_rate:.0} rec/s, out {out_rate:.0} rec/s | event-time lag {lag} | last checkpoint {ck}"
            );
        }
        (rin, rout)
    }

    fn stop_tasks(&mut self) {
        for t in &self.tasks {
            let _ = t.commands.send(TaskCommand::Stop);
        }
        for t in self.tasks.iter_mut() {
            if let Some(h) = t.thread.take() {
                let _ = h.join();
            }
        }
    }
}
