//! The `StreamJob` custom resource: spec (what to run) and status (what Weir observed and did).

use crate::conditions::Condition;
use crate::duration::Dur;
use crate::pipeline::Pipeline;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements, Toleration, Volume, VolumeMount};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A stateful streaming job: a pipeline run by `parallelism` runtime pods with checkpointed state.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "StreamJob",
    namespaced,
    status = "StreamJobStatus",
    shortname = "sj",
    category = "weir",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Parallelism","type":"integer","jsonPath":".spec.parallelism"}"#,
    printcolumn = r#"{"name":"Last checkpoint","type":"string","jsonPath":".status.checkpoint.latestId"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobSpec {
    /// The runtime image, e.g. `docker.io/local/weir-runtime:0.1.0`.
    pub image: String,
    /// Image pull policy for the runtime pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Number of runtime pods; input partitions are spread over them.
    #[serde(default = "default_parallelism")]
    #[schemars(range(min = 0, max = 1024))]
    pub parallelism: i32,
    /// Key groups of keyed state (Flink's `maxParallelism`, default 128): behind an exchange in
    /// one pod, keyed state is organised in this many groups, each owned by one task, so a keyed
    /// stage runs at most this many tasks (wider jobs exchange through Kafka). Fixed for the
    /// life of a job's state: a restore from a checkpoint taken with another value is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32768))]
    pub max_parallelism: Option<u32>,
    /// CPU and memory for each runtime container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Pod settings merged into the pods Weir builds.
    #[serde(default)]
    pub pod_template: PodTemplate,
    /// The job graph.
    pub pipeline: Pipeline,
    /// Checkpoint settings.
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// How state carries over an upgrade.
    #[serde(default)]
    pub upgrade_mode: UpgradeMode,
    /// How long a transition may take before the job is `Failed`, and what happens then.
    #[serde(default)]
    pub upgrade: UpgradeSpec,
    /// Where to restore from.
    #[serde(default)]
    pub restore: RestoreSpec,
    /// Desired run state.
    #[serde(default)]
    pub state: DesiredState,
    /// Change this value to restart the job's pods (restoring from the latest checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_nonce: Option<String>,
    /// Per-job alert thresholds and routing labels.
    #[serde(default)]
    pub alerting: AlertingSpec,
}

fn default_parallelism() -> i32 {
    1
}

/// Kubernetes image pull policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull if not present.
    IfNotPresent,
    /// Never pull (images imported locally).
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// Pod-level settings merged into what Weir builds; never silently dropped.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplate {
    /// Extra pod labels (Weir's own labels win on conflict, and validation says so).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra pod annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Extra environment variables for the runtime container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Service account for the runtime pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Extra volumes (e.g. a PVC holding `file://` checkpoints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Mounts of those volumes into the runtime container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
}

/// Checkpoint settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSpec {
    /// Time between checkpoint starts.
    #[serde(default = "default_interval")]
    pub interval: Dur,
    /// A checkpoint not complete after this long fails.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    /// Minimum time between the end of one checkpoint and the start of the next.
    #[serde(default)]
    pub min_pause: Dur,
    /// How many successful checkpoints to keep.
    #[serde(default = "default_retain")]
    #[schemars(range(min = 1, max = 100))]
    pub retain: u32,
    /// Consecutive failed checkpoints tolerated before the job restarts.
    #[serde(default)]
    pub tolerable_failures: u32,
    /// `file:///path` (on a volume) or `s3://bucket/prefix`.
    #[serde(default = "default_storage")]
    #[schemars(regex(pattern = r"^(file:///|s3://)[^\s]+$"))]
    pub storage: String,
    /// Secret with `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally `AWS_ENDPOINT`, `AWS_REGION` for `s3://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

fn default_interval() -> Dur {
    Dur::secs(30)
}
fn default_timeout() -> Dur {
    Dur::secs(600)
}
fn default_retain() -> u32 {
    3
}
fn default_storage() -> String {
    "file:///var/lib/weir/checkpoints".to_string()
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            interval: default_interval(),
            timeout: default_timeout(),
            min_pause: Dur::default(),
            retain: default_retain(),
            tolerable_failures: 0,
            storage: default_storage(),
            credentials_secret: None,
        }
    }
}

/// How state carries over an upgrade.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UpgradeMode {
    /// Take a final checkpoint, then restore from the latest successful one.
    #[default]
    LastCheckpoint,
    /// Start the new revision with empty state.
    Stateless,
}

/// Bounds on a transition (deploy, upgrade, rescale, resume, restart, suspend).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeSpec {
    /// How long a deploy, upgrade, rescale, resume or restart may take until every pod is
    /// Ready (and a suspend until every pod is gone). Past it the job goes `Failed` with the
    /// reason (crash loop and the container's last termination message, image pull error,
    /// unschedulable pod, runtime refusal), a Warning event and a critical `deployFailed`
    /// alert; a suspend past it has its remaining pods deleted at once. Default 5m.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: Dur,
    /// When an upgrade fails its progress deadline, go back to the last spec that ran
    /// healthily (kept by the operator in the ConfigMap `<job>-stable`; `spec` is never
    /// written), restoring the newest checkpoint taken before the upgrade. The failed
    /// generation is not tried again until the spec changes; `status.rollback` says which
    /// generation failed and why.
    #[serde(default)]
    pub rollback: bool,
}

fn default_progress_deadline() -> Dur {
    Dur::secs(300)
}

impl Default for UpgradeSpec {
    fn default() -> Self {
        UpgradeSpec {
            progress_deadline: default_progress_deadline(),
            rollback: false,
        }
    }
}

/// Where a (re)deployment restores from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSpec {
    /// `latest` (default), or an explicit checkpoint id or path. The job starts from an
    /// explicit checkpoint once: crashes, upgrades and restarts while `from` keeps its value
    /// continue from the newest checkpoint taken since (the runtime records the pin in each
    /// checkpoint's marker), so committed output is never replayed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Refuse checkpoints older than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<Dur>,
    /// Start even if no checkpoint can be restored, or if some state does not map onto the new graph.
    #[serde(default)]
    pub allow_non_restored_state: bool,
}

/// Desired run state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DesiredState {
    /// Run the job.
    #[default]
    Running,
    /// Take a final checkpoint and scale to zero.
    Suspended,
}

/// Per-job alerting.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertingSpec {
    /// Overrides keyed by rule name (e.g. `backpressureHigh`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rules: BTreeMap<String, RuleOverride>,
    /// Extra labels put on this job's alerts, for routing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Threshold overrides for one alert rule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleOverride {
    /// Threshold for severity warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<f64>,
    /// Threshold for severity critical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<f64>,
    /// How long the condition must hold before firing.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<Dur>,
    /// Switch the rule off for this job.
    #[serde(default)]
    pub disabled: bool,
}

// ---------------------------------------------------------------- status

/// What Weir observed and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamJobStatus {
    /// Lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// A one-line explanation of the phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Ready, SpecValid, CheckpointsHealthy, Backpressured, Alerting.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The generation last reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Hash of the deployed job config; changes roll out a new revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Pods requested and ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Pods ready (restored and processing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The restart nonce last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_restart_nonce: Option<String>,
    /// The plan the pods run: tasks, key groups, stages and exchanges (read from a pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanStatus>,
    /// Latest checkpoint facts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointStatus>,
    /// Aggregated task metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<JobHealth>,
    /// Recent restores, newest last (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restores: Vec<RestoreRecord>,
    /// Alerts currently pending or firing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub active_alerts: Vec<ActiveAlert>,
    /// The transition in progress (or the one that failed its deadline); absent once the job
    /// is Running or Suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ProgressStatus>,
    /// The last revision that ran with every pod ready (its spec is in `<job>-stable`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stable: Option<StableRevision>,
    /// The latest rollback: active while `failedGeneration` is the job's generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackStatus>,
}

/// A revision that ran healthily.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StableRevision {
    /// Its revision.
    pub revision: String,
    /// The job's generation it ran as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When all its pods were first seen ready.
    pub since: DateTime<Utc>,
}

/// A rollback after a failed upgrade (`spec.upgrade.rollback`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RollbackStatus {
    /// The generation whose upgrade failed; not tried again until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_generation: Option<i64>,
    /// Its revision.
    pub failed_revision: String,
    /// Why it failed (the progress deadline's message).
    pub reason: String,
    /// The revision rolled back to.
    pub to_revision: String,
    /// When the rollback started.
    pub time: DateTime<Utc>,
}

/// A transition the operator waits for, bounded by `spec.upgrade.progressDeadline`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProgressStatus {
    /// What is waited for: Deploying, Upgrading, Scaled, Resumed, Restarted, Suspended, or
    /// Recovering (pods of a running job stopped being ready on their own).
    pub step: String,
    /// The revision being rolled out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The job's generation the transition started with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it fails unless every pod is Ready (or, for a suspend, gone).
    pub deadline: DateTime<Utc>,
    /// Set once the deadline passed: why the pods are not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<DeployFailure>,
}

/// Why a transition failed its progress deadline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeployFailure {
    /// CrashLoop, ImagePull, Unschedulable, RuntimeRefused, ContainerConfig, PodsMissing or
    /// NotReady.
    pub reason: String,
    /// The pod it was seen on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// What Kubernetes or the container said (e.g. its last termination message).
    pub message: String,
    /// When the deadline passed.
    pub time: DateTime<Utc>,
}

/// Lifecycle phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, nothing deployed yet.
    Pending,
    /// Children applied, pods not all ready.
    Deploying,
    /// All pods ready.
    Running,
    /// Rolling out a new revision.
    Upgrading,
    /// Taking a final checkpoint before scaling to zero.
    Suspending,
    /// Scaled to zero.
    Suspended,
    /// Cannot run; see message.
    Failed,
}

impl Phase {
    /// Every phase, for metrics.
    pub const ALL: [Phase; 7] = [
        Phase::Pending,
        Phase::Deploying,
        Phase::Running,
        Phase::Upgrading,
        Phase::Suspending,
        Phase::Suspended,
        Phase::Failed,
    ];
    /// The spelling used in status.
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Deploying => "Deploying",
            Phase::Running => "Running",
            Phase::Upgrading => "Upgrading",
            Phase::Suspending => "Suspending",
            Phase::Suspended => "Suspended",
            Phase::Failed => "Failed",
        }
    }
}

/// Latest checkpoint facts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointStatus {
    /// Id of the latest successful checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_id: Option<u64>,
    /// Its storage path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// When it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// Its total size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Failures since the last success.
    #[serde(default)]
    pub consecutive_failures: u64,
    /// Failures in total.
    #[serde(default)]
    pub total_failed: u64,
}

/// Aggregated task metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobHealth {
    /// Max over tasks of backpressured time fraction (0..1).
    pub backpressure: f64,
    /// Max over tasks of busy time fraction (0..1).
    pub busy: f64,
    /// Max of the tasks' p99 end-to-end latency, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99_ms: Option<f64>,
    /// Sum of records in per second.
    pub records_in_per_second: f64,
    /// Sum of records out per second.
    pub records_out_per_second: f64,
    /// Max event-time lag (wall clock − watermark), ms: only for jobs whose input's event time follows the wall clock (Kafka); unset for generators and file replays, whose event times are synthetic or historical.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time_lag_ms: Option<f64>,
    /// Max over tasks of the processing-time delay behind the input's head, ms: how far a rate-limited generator is behind its schedule (0 for an unbounded one); for Kafka 0 when caught up, else the event-time lag; unset for file replays. `lagGrowing` fires on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_delay_ms: Option<f64>,
    /// Max Kafka consumer lag over the job's Kafka partitions: records between a task's position and the partition's end (unset without Kafka sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_lag: Option<i64>,
    /// Min watermark over tasks, epoch ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_ms: Option<i64>,
    /// Failed checkpoints in a row.
    pub checkpoint_consecutive_failures: u64,
    /// Failed checkpoints in total.
    pub checkpoint_total_failures: u64,
    /// Seconds since the last successful checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_age_seconds: Option<f64>,
    /// Duration of the last checkpoint, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_duration_ms: Option<f64>,
    /// Restarts in the recent window.
    pub restarts_in_window: u64,
    /// Tasks whose metrics were aggregated.
    pub tasks_reporting: u32,
    /// Tasks skipped (not ready or unreachable), with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// When the metrics were scraped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scraped_at: Option<DateTime<Utc>>,
}

/// One restore, as recorded in status.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreRecord {
    /// Checkpoint id restored (none when started without state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_id: Option<u64>,
    /// Checkpoint path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The checkpoint's age at restore time, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<i64>,
    /// Why: upgrade, crash, resume, restartNonce, fallback, ...
    pub reason: String,
    /// When the restore point was chosen.
    pub time: DateTime<Utc>,
    /// The revision rolled out with this restore point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Whether the pods reported restoring from this checkpoint (false until they are ready).
    #[serde(default)]
    pub confirmed: bool,
    /// What else happened: a failed final checkpoint, a walk-back past a corrupt checkpoint,
    /// or a start without state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Alert severity, ordered info < warning < critical.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Severity {
    /// For information.
    #[default]
    Info,
    /// Needs attention.
    Warning,
    /// Page someone.
    Critical,
}

/// An alert currently pending or firing for the job.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActiveAlert {
    /// Rule name.
    pub name: String,
    /// Severity.
    pub severity: Severity,
    /// `pending` or `firing`.
    pub state: String,
    /// Since when in this state.
    pub since: DateTime<Utc>,
    /// Rendered summary.
    pub summary: String,
}

/// The plan the runtime made of the pipeline, as its pods report it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanStatus {
    /// Tasks of the job (the largest source partition count); pod `i` of `N` runs tasks
    /// `p % N == i`.
    pub tasks: u32,
    /// Key groups of keyed state (`spec.maxParallelism`).
    pub key_groups: u32,
    /// Stages: an operator reading an input through an exchange starts a new one.
    pub stages: u32,
    /// Where records move to the task that owns their key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exchanges: Vec<ExchangeStatus>,
}

/// One keyed exchange of the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExchangeStatus {
    /// The keyed operator.
    pub operator: String,
    /// Its input, as the spec names it.
    pub input: String,
    /// The key (CEL over `e`); absent: every record goes to one task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `memory` (between the tasks of one pod) or `kafka`.
    pub transport: String,
    /// The Kafka topic, for `kafka`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
}
