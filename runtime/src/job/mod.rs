//! Running a job in this process: start-up (admin API, restore, task threads) here, then
//! [`driver`] runs it: checkpoints as [`coordinator`] decides them (pure), their uploads and
//! markers, sink commits, status and progress, and the stop.

pub mod admin;
pub mod coordinator;
mod driver;
pub mod restore;
pub mod shutdown;
pub mod status;

use crate::checkpoint::catalog::RestoreFrom;
use crate::checkpoint::checkpoint_dir;
use crate::checkpoint::storage::CheckpointStorage;
use crate::checkpoint::transfer::{delete_stopped_note, StoredSsts};
use crate::exchange::DEFAULT_KEY_GROUPS;
use crate::job::restore::{restore_tasks, RestoreError, RestoreOptions};
use crate::job::status::{JobStatus, RestoreInfo, SharedStatus, SkippedCheckpoint};
use crate::metrics::Metrics;
use crate::plan::JobPlan;
use crate::record::now_ms;
use crate::task::{Task, TaskError, TaskStart};
use coordinator::{CheckpointCoordinator, Settings};
use driver::{JobDriver, TaskHandle};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
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
    /// The checkpoint was taken with another number of tasks and the plan has keyed exchanges.
    #[error("checkpoint {checkpoint} was taken with {before} task(s) and the job now has {now}: its keyed state behind an exchange cannot be moved between tasks yet; read the sources with the partition count of that checkpoint, or start without state (restore.from: none)")]
    Rescale {
        /// The checkpoint.
        checkpoint: u64,
        /// Its task count.
        before: usize,
        /// The plan's.
        now: u32,
    },
    /// The checkpoint was taken with another `spec.maxParallelism` and the plan has keyed
    /// exchanges.
    #[error("checkpoint {checkpoint} was taken with spec.maxParallelism {before} and it is now {now}: keyed state is kept in {before} key groups, which cannot be regrouped; set spec.maxParallelism back to {before}, or start without state (restore.from: none)")]
    KeyGroupsChanged {
        /// The checkpoint.
        checkpoint: u64,
        /// Its key groups.
        before: u32,
        /// The plan's.
        now: u32,
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
        plan: Some(crate::plan::summary::summary(&cfg.plan)),
        ..Default::default()
    }));
    let (admin_tx, admin_rx) = mpsc::channel();
    rt.spawn(crate::job::shutdown::watch_signals(admin_tx.clone()));
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some(port) = cfg.admin_port {
        let state = crate::job::admin::AdminState {
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
        rt.spawn(crate::job::admin::serve(listener, state));
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
    // this pod takes part in checkpoints again (see `checkpoint`, "Several pods"); after the
    // restore, whose errors say best what is wrong with the storage
    delete_stopped_note(&storage, cfg.ordinal)?;
    let last_id = outcome.catalog.max_id().unwrap_or(0);
    let next_id = checkpoint_settings(&cfg).next_id(last_id, now_ms());
    let (ev_tx, ev_rx) = mpsc::channel();
    check_rescale(&cfg, &outcome)?;
    let mut channels =
        (!cfg.plan.exchanges.is_empty()).then(|| crate::exchange::Channels::new(&my_tasks));
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
                exchange: channels.as_mut().and_then(|c| c.take(t)),
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
    let settings = checkpoint_settings(&cfg);
    let coordinator = CheckpointCoordinator::new(
        settings,
        my_tasks.iter().copied(),
        next_id.saturating_sub(1),
        Instant::now(),
    );
    let mut driver = JobDriver {
        coordinator,
        storage,
        status,
        tasks,
        events: ev_rx,
        admin: admin_rx,
        protected: outcome.checkpoint_id.into_iter().collect(),
        known_ssts,
        cfg,
    };
    driver.refresh_checkpoint_list();
    let res = driver.run();
    if let Err(e) = &res {
        let mut s = lock(&driver.status);
        s.phase = "Failed".into();
        s.message = Some(e.to_string());
    }
    driver.stop_tasks();
    if res.is_err() && driver.cfg.mode == Mode::Pod {
        // keep the admin API up briefly so the operator can read why
        std::thread::sleep(Duration::from_secs(2));
    }
    drop(rt);
    res
}

/// Keyed state behind an exchange lives in the task that owns its key group, so restoring a
/// checkpoint taken with another number of tasks or key groups (`spec.maxParallelism`) would
/// put keys in the wrong task: refused (moving key groups between tasks on a rescale is not
/// built yet).
fn check_rescale(cfg: &JobConfig, outcome: &restore::RestoreOutcome) -> Result<(), JobError> {
    if cfg.plan.exchanges.is_empty() {
        return Ok(());
    }
    let Some(id) = outcome.checkpoint_id else {
        return Ok(());
    };
    let marker = outcome
        .catalog
        .entries
        .iter()
        .find(|e| e.id == id)
        .and_then(|e| e.marker.as_ref());
    let groups = marker.map_or(DEFAULT_KEY_GROUPS, |m| {
        m.key_groups.unwrap_or(DEFAULT_KEY_GROUPS)
    });
    if groups != cfg.plan.key_groups {
        return Err(JobError::KeyGroupsChanged {
            checkpoint: id,
            before: groups,
            now: cfg.plan.key_groups,
        });
    }
    match marker.map(|m| m.tasks.len()) {
        Some(n) if n != cfg.plan.tasks as usize => Err(JobError::Rescale {
            checkpoint: id,
            before: n,
            now: cfg.plan.tasks,
        }),
        _ => Ok(()),
    }
}

/// The coordinator's settings from the spec and this pod's place.
fn checkpoint_settings(cfg: &JobConfig) -> Settings {
    let spec = &cfg.job.spec.checkpoint;
    Settings {
        interval: spec.interval.0,
        min_pause: spec.min_pause.0,
        timeout: spec.timeout.0,
        tolerable_failures: spec.tolerable_failures,
        replicas: cfg.replicas,
    }
}

fn lock(s: &SharedStatus) -> std::sync::MutexGuard<'_, JobStatus> {
    match s.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}
