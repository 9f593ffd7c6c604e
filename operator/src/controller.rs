//! The StreamJob controller: watches StreamJobs as `DynamicObject`s (so one malformed object
//! cannot break the watch), owns their ConfigMaps, Services and StatefulSets, and runs the
//! reconcile pipeline validate → build → apply → status inside `finalizer()`.

use crate::applied_children::{self, AppliedChildren};
use crate::apply::{self, ApplyError};
use crate::build::{self, BuildError, JobIdentity};
use crate::config::RunConfig;
use crate::events::{self, chain};
use crate::job_changes::JobChanges;
use crate::lifecycle::{self, Lifecycle};
use crate::metrics::Metrics;
use crate::progress::{self, PodView, Verdict};
use crate::restore;
use crate::restore_flow;
use crate::rollback;
use crate::status::{self, Deployed, Observed};
use crate::status_memory::StatusMemory;
use crate::validate::{checked_job, SpecInvalid};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Pod, Service};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::{controller, reflector, watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use weir_crds::stream_job::{DesiredState, Phase};
use weir_crds::{StreamJob, StreamJobStatus};

/// The finalizer Weir puts on every StreamJob.
pub const FINALIZER: &str = "weir.dev/cleanup";
/// Kind label value in metrics.
pub const KIND: &str = "StreamJob";

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// The operator's settings.
    pub config: RunConfig,
    /// The StreamJob API resource (for the dynamic API).
    pub resource: ApiResource,
    /// HTTP client for the runtime pods' admin API.
    pub http: reqwest::Client,
    /// The children applied per job, to skip applies that would change nothing.
    pub applied: AppliedChildren,
    /// The status last written per job, to skip a patch the cache does not show yet.
    pub statuses: StatusMemory,
    /// The alert rules (`--alert-rules` or the defaults), to check `spec.alerting.rules`
    /// overrides against; `None` when they do not load (the health loop reports that).
    pub alert_rules: Option<crate::alerting::rules::RuleSet>,
}

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object is not namespaced.
    #[error("StreamJob {name} has no namespace")]
    MissingNamespace {
        /// Name.
        name: String,
    },
    /// Building the children failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Writing or reading children failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Patching the status failed.
    #[error("patching the status of StreamJob {namespace}/{name} failed")]
    PatchStatus {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// The job's StatefulSet or pods were still there after waiting; cleanup is retried.
    #[error("{remaining} children of StreamJob {namespace}/{name} still exist after {waited:?}")]
    ChildrenRemain {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// StatefulSet plus pods left.
        remaining: usize,
        /// How long cleanup waited.
        waited: Duration,
    },
    /// Adding or removing the finalizer failed, or the wrapped reconcile failed.
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// The failing variant's name, used as event reason and metric label.
    pub fn reason(&self) -> &'static str {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::MissingNamespace { .. } => "MissingNamespace",
            Error::Build(_) => "BuildChildren",
            Error::Apply(e) => e.reason(),
            Error::PatchStatus { .. } => "PatchStatus",
            Error::ChildrenRemain { .. } => "ChildrenRemain",
            Error::Finalizer(f) => match f.as_ref() {
                F::ApplyFailed(e) | F::CleanupFailed(e) => e.reason(),
                F::AddFinalizer(_) => "AddFinalizer",
                F::RemoveFinalizer(_) => "RemoveFinalizer",
                F::UnnamedObject => "UnnamedObject",
                F::InvalidFinalizer => "InvalidFinalizer",
            },
        }
    }
}

/// Runs the StreamJob controller(s) until `shutdown` completes; `started` is called once the
/// watches are set up. One controller per watched namespace, or one for all namespaces.
pub async fn run<S, F>(ctx: Arc<Context>, shutdown: S, started: impl FnOnce())
where
    S: Fn() -> F,
    F: Future<Output = ()> + Send + Sync + 'static,
{
    let namespaces = ctx.config.watched_namespaces();
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.into_iter().map(Some).collect()
    };
    let controllers = scopes.into_iter().map(|ns| {
        let client = ctx.client.clone();
        let jobs: Api<DynamicObject> = match &ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ctx.resource),
            None => Api::all_with(client.clone(), &ctx.resource),
        };
        // Metadata-only watches (`PartialObjectMeta`).
        let config_maps: Api<PartialObjectMeta<ConfigMap>> = scoped(&client, ns.as_deref());
        let services: Api<PartialObjectMeta<Service>> = scoped(&client, ns.as_deref());
        let stateful_sets: Api<PartialObjectMeta<StatefulSet>> = scoped(&client, ns.as_deref());
        let pods: Api<PartialObjectMeta<Pod>> = scoped(&client, ns.as_deref());
        let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=weir-operator");
        // The cache of StreamJobs keeps them without managedFields and kubectl's
        // last-applied annotation (most of each object's size); children and pods are
        // watched as metadata only and not cached at all.
        let writer = reflector::store::Writer::new(ctx.resource.clone());
        let reader = writer.as_reader();
        // Only changes of spec or metadata trigger a reconcile; status-only events (this
        // controller's own status patches, the health loop's) are counted and dropped.
        let mut changes = JobChanges::default();
        let metrics = ctx.metrics.clone();
        let trigger = watcher(jobs, watcher::Config::default())
            .modify(crate::object_trim::trim_job)
            .reflect(writer)
            .filter_map(move |event| {
                futures::future::ready(match event {
                    Ok(event) => {
                        let (job, change) = changes.admit(event);
                        if let Some(change) = change {
                            metrics.count_trigger(change.label());
                        }
                        job.map(Ok)
                    }
                    Err(e) => Some(Err(e)),
                })
            });
        let m = &ctx.metrics;
        let resource = ctx.resource.clone();
        // Pods are not owned by the job (the StatefulSet owns them), but their changes
        // matter: a pod that cannot start (its termination message), one that became ready
        // or was recreated. Mapped to the job by the `weir.dev/job` label.
        let pod_to_job = move |pod: PartialObjectMeta<Pod>| {
            let job = pod.labels().get(build::JOB_LABEL).cloned();
            let namespace = pod.namespace();
            job.zip(namespace).map(|(job, namespace)| {
                reflector::ObjectRef::new_with(job.as_str(), resource.clone())
                    .within(namespace.as_str())
            })
        };
        Controller::for_stream_with(trigger, reader, ctx.resource.clone())
            .with_config(
                controller::Config::default().concurrency(ctx.config.max_concurrent_reconciles),
            )
            .owns_stream(counted(
                observed(
                    watcher(config_maps, owned.clone()),
                    ctx.clone(),
                    CONFIG_MAP,
                    ns.clone(),
                ),
                m.clone(),
                "configmap",
            ))
            .owns_stream(counted(
                observed(
                    watcher(services, owned.clone()),
                    ctx.clone(),
                    SERVICE,
                    ns.clone(),
                ),
                m.clone(),
                "service",
            ))
            .owns_stream(counted(
                watcher(stateful_sets, owned),
                m.clone(),
                "statefulset",
            ))
            .watches_stream(
                counted(
                    watcher(pods, watcher::Config::default().labels(build::JOB_LABEL)),
                    m.clone(),
                    "pod",
                ),
                pod_to_job,
            )
            .graceful_shutdown_on(shutdown())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                match result {
                    Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                    Err(e) => tracing::warn!(error = %chain(&e), "reconcile failed"),
                }
            })
    });
    let all = futures::future::join_all(controllers);
    started();
    all.await;
}

/// The objects a watch touched, each counted as a reconcile trigger.
fn counted<K: Send + 'static>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    metrics: Arc<Metrics>,
    trigger: &'static str,
) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static {
    events
        .touched_objects()
        .inspect(move |_| metrics.count_trigger(trigger))
}

/// The watch events of children of `kind`, their resourceVersions noted in `ctx.applied`.
fn observed<K: kube::Resource + Send + 'static>(
    events: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    ctx: Arc<Context>,
    kind: &'static str,
    scope: Option<String>,
) -> impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static {
    events.inspect(move |event| {
        if let Ok(event) = event {
            ctx.applied.observe(kind, scope.as_deref(), event);
        }
    })
}

fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn error_policy(_obj: Arc<DynamicObject>, _error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.count_trigger("requeue_error");
    Action::requeue(Duration::from_secs(15))
}

/// Reconciles one StreamJob: counts and times it, runs it inside the finalizer, and turns an
/// error into a Warning event.
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    let name = obj.name_any();
    let ns = obj
        .namespace()
        .ok_or_else(|| Error::MissingNamespace { name: name.clone() })?;
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ctx.resource);
    let regarding = obj.object_ref(&ctx.resource);
    let result = finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            Finalizer::Apply(obj) => {
                // The cache may not show this controller's last status patch yet.
                let key = format!("{}/{}", ns, obj.name_any());
                let obj = ctx.statuses.freshest(&key, &obj).map_or(obj, Arc::new);
                apply_job(&obj, &ctx).await
            }
            Finalizer::Cleanup(obj) => cleanup_job(&obj, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    if let Err(e) = &result {
        ctx.metrics.reconcile_failed(KIND, e.reason());
        events::warning(&ctx.recorder, &regarding, e.reason(), chain(e)).await;
    }
    result
}

fn previous_status(obj: &DynamicObject) -> StreamJobStatus {
    obj.data
        .get("status")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
}

/// Whether a status patch was written, or lost a race with another writer of the status.
#[derive(Debug, PartialEq, Eq)]
enum Patched {
    Written,
    Conflict,
}

/// Merge-patches the fields this controller owns, guarded by the object's resourceVersion:
/// `conditions` is replaced as a whole, so a concurrent writer (the health loop adds its own
/// conditions) must not be overwritten with a stale list. A conflict is retried shortly.
async fn patch_status(
    obj: &DynamicObject,
    ctx: &Context,
    status: &StreamJobStatus,
) -> Result<Patched, Error> {
    let name = obj.name_any();
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.resource);
    let previous = previous_status(obj);
    let mut resource_version = obj.resource_version();
    let mut status = status.clone();
    for _ in 0..STATUS_REBASES {
        let mut patch = status::merge_patch(&status);
        patch["metadata"] = serde_json::json!({ "resourceVersion": resource_version });
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(stored) => {
                ctx.statuses.record(
                    &format!("{namespace}/{name}"),
                    obj.resource_version(),
                    &stored,
                );
                return Ok(Patched::Written);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Someone else (the health loop) wrote the status since this reconcile read
                // it: re-apply this reconcile's changes onto theirs rather than drop them
                // (a transition's restore record would be lost: the next reconcile sees no
                // transition any more).
                let fresh = api
                    .get_status(&name)
                    .await
                    .map_err(|source| Error::PatchStatus {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        source,
                    })?;
                status = status::rebase(&status, &previous, &previous_status(&fresh));
                resource_version = fresh.resource_version();
            }
            Err(source) => {
                return Err(Error::PatchStatus {
                    namespace,
                    name,
                    source,
                })
            }
        }
    }
    Ok(Patched::Conflict)
}

/// How often a conflicting status patch is rebased onto the current status and retried.
const STATUS_REBASES: usize = 3;

/// Requeue soon after losing a status race (the watch usually brings the new version first).
const CONFLICT_RETRY: Duration = Duration::from_secs(1);

async fn apply_job(obj: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    let regarding = obj.object_ref(&ctx.resource);
    let previous = previous_status(obj);
    let object = serde_json::to_value(obj).unwrap_or_default();
    match checked_job(object, ctx.alert_rules.as_ref()) {
        Ok(job) => deploy(obj, &job, &previous, &regarding, ctx).await,
        Err(invalid) => reject(obj, &invalid, &previous, &regarding, ctx).await,
    }
}

/// An invalid spec: report it, and leave whatever runs untouched.
async fn reject(
    obj: &DynamicObject,
    invalid: &SpecInvalid,
    previous: &StreamJobStatus,
    regarding: &ObjectReference,
    ctx: &Context,
) -> Result<Action, Error> {
    let name = obj.name_any();
    let namespace = obj.namespace().unwrap_or_default();
    let generation = obj.metadata.generation;
    let message = invalid.to_string();
    let existing = Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&name)
        .await
        .map_err(|source| ApplyError::ReadStatefulSet {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    let observed = existing.as_ref().map(Observed::of);
    if !status::already_reported(previous, generation, &message) {
        events::warning(&ctx.recorder, regarding, "SpecInvalid", message.clone()).await;
    }
    let next = status::spec_invalid(
        previous,
        generation,
        invalid.reason(),
        &message,
        observed,
        chrono::Utc::now(),
    );
    ctx.metrics
        .set_job_phase(&format!("{namespace}/{name}"), next.phase);
    if next != *previous && patch_status(obj, ctx, &next).await? == Patched::Conflict {
        return Ok(Action::requeue(CONFLICT_RETRY));
    }
    tracing::info!(job = %format!("{namespace}/{name}"), error = %message, "spec invalid; children left untouched");
    Ok(Action::await_change())
}

/// A valid spec: build, take a final checkpoint if running pods are replaced, apply, restart
/// outdated pods, report status (including restores and start failures).
async fn deploy(
    obj: &DynamicObject,
    job: &StreamJob,
    previous: &StreamJobStatus,
    regarding: &ObjectReference,
    ctx: &Context,
) -> Result<Action, Error> {
    let id = JobIdentity::of(job)?;
    let job_key = format!("{}/{}", id.namespace, id.name);
    let now = chrono::Utc::now();
    // Rolled back from this generation: deploy the last stable spec instead (the failed one is
    // not tried again until the spec changes).
    let requested = job;
    let rolled_back_job = if rollback::active(previous, obj.metadata.generation) {
        apply::stable_config_map(&ctx.client, &id)
            .await?
            .and_then(|cm| rollback::stable_job(job, &cm))
    } else {
        None
    };
    let rolling_back = rolled_back_job.is_some();
    let job = rolled_back_job.as_ref().unwrap_or(job);
    let children = build::children(job)?;

    // Missing storage credentials: say so and change nothing (running pods keep running).
    let credentials = restore_flow::credentials_problem(&ctx.client, job, &id.namespace)
        .await
        .map_err(|source| ApplyError::ReadSecret {
            namespace: id.namespace.clone(),
            name: job
                .spec
                .checkpoint
                .credentials_secret
                .clone()
                .unwrap_or_default(),
            source,
        })?;
    if let Some(problem) = credentials {
        let mut next = previous.clone();
        let changed = storage_condition(&mut next, false, "CredentialsMissing", &problem, now);
        if changed {
            events::warning(
                &ctx.recorder,
                regarding,
                "CredentialsMissing",
                problem.clone(),
            )
            .await;
        }
        if next != *previous && patch_status(obj, ctx, &next).await? == Patched::Conflict {
            return Ok(Action::requeue(CONFLICT_RETRY));
        }
        return Ok(Action::requeue(Duration::from_secs(30)));
    }

    let existing = apply::existing_stateful_set(&ctx.client, &id).await?;
    let steps = lifecycle::steps(existing.as_ref(), &children.stateful_set);
    let mut next = previous.clone();
    let mut pods = apply::job_pods(&ctx.client, &id).await?;

    // Carry state over the transition: final checkpoint first, then record the restore point.
    let transition = restore::Transition::of(&steps);
    if let Some(transition) = transition {
        let decision =
            restore_flow::prepare(&ctx.http, job, &id, transition, &children.revision, &pods).await;
        for (reason, note) in &decision.warnings {
            events::warning(&ctx.recorder, regarding, reason, note.clone()).await;
        }
        for (reason, note) in &decision.notes {
            events::normal(&ctx.recorder, regarding, reason, note.clone()).await;
        }
        if let Some(latest) = &decision.latest {
            next.checkpoint = restore::checkpoint_status(
                next.checkpoint.as_ref(),
                &[restore::PodReport {
                    last_checkpoint: Some(latest.clone()),
                    ..Default::default()
                }],
                None,
            );
        }
        if let Some(mut record) = decision.record {
            if rolling_back {
                record.reason = rollback::ROLLBACK.to_string();
            }
            let note = format!(
                "{}: restoring from {}{}",
                record.reason,
                record
                    .checkpoint_id
                    .map_or("no checkpoint".to_string(), |c| format!("checkpoint {c}")),
                record
                    .note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default()
            );
            events::normal(&ctx.recorder, regarding, "RestorePoint", note).await;
            restore::push_record(&mut next.restores, record);
        }
    } else if existing.is_none() && next.restores.is_empty() {
        // First deployment: the runtime restores whatever storage holds (e.g. the job was
        // deleted and re-created); the record is confirmed once the pods report.
        restore::push_record(
            &mut next.restores,
            weir_crds::stream_job::RestoreRecord {
                checkpoint_id: job
                    .spec
                    .restore
                    .from
                    .as_deref()
                    .and_then(restore::explicit_id),
                reason: "deploy".into(),
                time: now,
                revision: Some(children.revision.clone()),
                ..Default::default()
            },
        );
    }
    // A transition's restore record is written before the new revision is applied: once the
    // StatefulSet carries it, the next reconcile sees no transition, so a record that a later
    // failure (a lost status race, an API error) kept from being written would be gone.
    if transition.is_some()
        && next != *previous
        && patch_status(obj, ctx, &next).await? == Patched::Conflict
    {
        return Ok(Action::requeue(CONFLICT_RETRY));
    }

    let sts = apply_unless_unchanged(ctx, &id, &children, existing, steps.is_empty()).await?;
    for step in &steps {
        events::normal(&ctx.recorder, regarding, step.reason(), step.note()).await;
    }

    let mut observed = Observed::of(&sts);
    if observed.current {
        let desired: BTreeMap<String, String> =
            build::template_annotations(&children.revision, job.spec.restart_nonce.as_deref())
                .into_iter()
                .collect();
        // The pods listed above: the StatefulSet controller has observed the current
        // template, so this apply changed no template and the list is current enough.
        let outdated: Vec<_> = pods
            .iter()
            .filter(|p| lifecycle::pod_is_outdated(p, &desired))
            .cloned()
            .collect();
        let stopped = restore_flow::stopped_pods(&ctx.http, &outdated).await;
        let restarted = apply::restart_outdated_pods(&ctx.client, &id, &outdated, &stopped).await?;
        if restarted > 0 {
            tracing::info!(job = %job_key, restarted, "deleted pods of an older revision");
            // They are being replaced: not updated, not ready.
            observed.current = false;
            pods.clear();
        }
    }

    let desired_replicas = match job.spec.state {
        DesiredState::Suspended => 0,
        DesiredState::Running => job.spec.parallelism,
    };
    let deployed = Deployed {
        generation: obj.metadata.generation,
        revision: children.revision.clone(),
        desired_replicas,
        restart_nonce: job.spec.restart_nonce.clone(),
        observed,
    };
    let mut next = status::deployed(&next, &deployed, now);

    // The progress deadline: a transition whose pods are not all ready in time fails, and a
    // suspend whose pods are not gone in time has them deleted at once.
    let pod_views: Vec<PodView> = pods.iter().map(PodView::of).collect();
    let verdict = progress::judge(&progress::Input {
        previous: previous.progress.as_ref(),
        started: steps.first().map(Lifecycle::reason),
        phase: next.phase.unwrap_or(Phase::Deploying),
        revision: &children.revision,
        generation: obj.metadata.generation,
        deadline: job.spec.upgrade.progress_deadline.0,
        desired: desired_replicas,
        pods: &pod_views,
        now,
    });
    next.progress = verdict.progress().cloned();
    match &verdict {
        Verdict::Settled => {}
        Verdict::Waiting {
            diagnosis: Some(d), ..
        } => {
            next.message = Some(format!(
                "{}; {}{}",
                next.message.as_deref().unwrap_or_default(),
                d.pod
                    .as_deref()
                    .map(|p| format!("pod {p}: "))
                    .unwrap_or_default(),
                d.message
            ));
        }
        Verdict::Waiting { .. } => {}
        Verdict::Failed { message, newly, .. } => {
            if *newly {
                events::warning(
                    &ctx.recorder,
                    regarding,
                    PROGRESS_DEADLINE_EXCEEDED,
                    message.clone(),
                )
                .await;
            }
            status::failed(
                &mut next,
                PROGRESS_DEADLINE_EXCEEDED,
                message,
                obj.metadata.generation,
                now,
            );
        }
        Verdict::SuspendOverdue {
            progress, newly, ..
        } => {
            let overdue: Vec<_> = pods.clone();
            let deleted = apply::force_delete_pods(&ctx.client, &id, &overdue).await?;
            if *newly {
                let note = progress
                    .failure
                    .as_ref()
                    .map_or_else(String::new, |f| f.message.clone());
                events::warning(&ctx.recorder, regarding, "SuspendDeadlineExceeded", note).await;
            }
            tracing::warn!(job = %job_key, deleted, "suspend past its progress deadline: deleted the remaining pods without grace period");
        }
    }

    // What the pods say: why they cannot start, what they restored, their checkpoints.
    let failed_start = match restore_flow::start_failure(&pods) {
        Some((pod, restore::StartFailure::NoRestorableCheckpoint(why))) => Some((
            "NoRestorableCheckpoint",
            format!("pod {pod} cannot restore its state: {why}"),
        )),
        Some((pod, restore::StartFailure::IncompatibleState(why))) => Some((
            "IncompatibleState",
            format!("pod {pod} cannot restore the newest checkpoint with this spec: {why}"),
        )),
        Some((pod, restore::StartFailure::StorageUnreachable(why))) => {
            let message = format!("pod {pod} cannot read checkpoint storage (retrying with backoff; nothing is deleted): {why}");
            if storage_condition(&mut next, false, "StorageUnreachable", &message, now) {
                events::warning(&ctx.recorder, regarding, "StorageUnreachable", message).await;
            }
            None
        }
        None => None,
    };
    if let Some((reason, message)) = failed_start {
        if previous.phase != Some(Phase::Failed) || previous.message.as_deref() != Some(&message) {
            events::warning(&ctx.recorder, regarding, reason, message.clone()).await;
        }
        status::failed(&mut next, reason, &message, obj.metadata.generation, now);
    }
    if next.phase == Some(Phase::Running) {
        let reports = restore_flow::reports(&ctx.http, &pods).await;
        if let Some(plan) = reports.iter().find_map(|r| r.plan.clone()) {
            next.plan = Some(plan);
        }
        match restore::storage_failure(&reports) {
            Some(why) => {
                let message = format!("checkpoints cannot reach storage (the job keeps running and retries every interval, up to checkpoint.tolerableFailures; nothing is deleted): {why}");
                if storage_condition(&mut next, false, "StorageUnreachable", &message, now) {
                    events::warning(&ctx.recorder, regarding, "StorageUnreachable", message).await;
                }
            }
            None => {
                storage_condition(
                    &mut next,
                    true,
                    "Ready",
                    "checkpoint storage is readable",
                    now,
                );
            }
        }
        if let Some((reason, note)) = restore::confirm_last_record(
            &mut next.restores,
            &reports,
            &job.spec.checkpoint.storage,
            &id.namespace,
            &id.name,
        ) {
            events::warning(&ctx.recorder, regarding, reason, note).await;
        }
        next.checkpoint = restore::checkpoint_status(next.checkpoint.as_ref(), &reports, None);
    }

    // Rollback: an upgrade that failed its deadline goes back to the last stable spec; a
    // revision that runs healthily becomes the stable one.
    let mut rollback_started = false;
    if let Verdict::Failed {
        progress, message, ..
    } = &verdict
    {
        let failed = rollback::FailedUpgrade {
            step: &progress.step,
            enabled: requested.spec.upgrade.rollback,
            generation: obj.metadata.generation,
            revision: &children.revision,
            reason: message,
            stable: previous.last_stable.as_ref(),
            rolled_back: rolling_back,
            now,
        };
        if let Some(r) = rollback::decide(&failed) {
            let note = format!(
                "rolling back to revision {} (the last that ran healthily); generation {} is not tried again until the spec changes: {}",
                r.to_revision,
                r.failed_generation.map_or("?".to_string(), |g| g.to_string()),
                r.reason
            );
            events::warning(&ctx.recorder, regarding, "RollingBack", note).await;
            next.rollback = Some(r);
            rollback_started = true;
        }
    }
    if rollback::keep_as_stable(&next, &children.revision) {
        let config = children
            .config_map
            .data
            .as_ref()
            .and_then(|d| d.get(build::JOB_CONFIG_KEY))
            .cloned()
            .unwrap_or_default();
        let cm = rollback::stable_config_map(&id, &config, &children.revision);
        apply::apply_stable_config_map(&ctx.client, &id, &cm).await?;
        next.last_stable = Some(rollback::stable_revision(
            &children.revision,
            obj.metadata.generation,
            now,
        ));
    }
    if rolling_back && next.phase == Some(Phase::Running) {
        if let Some(r) = &next.rollback {
            next.message = Some(format!(
                "rolled back to revision {}: generation {} (revision {}) failed: {}",
                r.to_revision,
                r.failed_generation
                    .map_or("?".to_string(), |g| g.to_string()),
                r.failed_revision,
                r.reason
            ));
        }
    }

    if next.phase == Some(Phase::Running) && previous.phase != Some(Phase::Running) {
        let running = Lifecycle::Running;
        events::normal(&ctx.recorder, regarding, running.reason(), running.note()).await;
    }
    ctx.metrics.set_job_phase(&job_key, next.phase);
    let written = next != *previous;
    ctx.metrics.count_write("StreamJobStatus", written);
    if written && patch_status(obj, ctx, &next).await? == Patched::Conflict {
        ctx.metrics.count_trigger("requeue_conflict");
        return Ok(Action::requeue(CONFLICT_RETRY));
    }
    if rollback_started {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    ctx.metrics.count_trigger("requeue_poll");
    // No watch event marks a deadline: look again when it passes.
    let wait = verdict
        .due_in(now)
        .map_or(poll_interval(next.phase), |due| {
            due.min(poll_interval(next.phase))
        });
    Ok(Action::requeue(wait))
}

/// Event and condition reason of a transition that failed its progress deadline.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// How long until a job is looked at again without any watch event. Running jobs are polled
/// for their pods' checkpoint facts (HTTP, no watch can tell). Every other change a
/// reconcile waits for (the StatefulSet controller observing a template, pods being
/// recreated, becoming ready or failing to start) arrives through the StatefulSet and pod
/// watches, so the other phases are only re-checked as a safety net.
pub fn poll_interval(phase: Option<Phase>) -> Duration {
    match phase {
        Some(Phase::Running) => RUNNING_POLL,
        Some(Phase::Suspended) => Duration::from_secs(300),
        Some(Phase::Failed) => Duration::from_secs(30),
        _ => SETTLING_POLL,
    }
}

/// Applies the children, unless nothing changed since this operator last applied them (see
/// [`applied_children`]); returns the StatefulSet as stored.
async fn apply_unless_unchanged(
    ctx: &Context,
    id: &JobIdentity,
    children: &build::Children,
    existing: Option<StatefulSet>,
    no_lifecycle_step: bool,
) -> Result<StatefulSet, Error> {
    let digest = applied_children::digest(children);
    let recorded = ctx.applied.recorded(&id.namespace, &id.name);
    let config_map_version = ctx
        .applied
        .version(CONFIG_MAP, &id.namespace, &id.config_map_name());
    let service_version = ctx.applied.version(SERVICE, &id.namespace, &id.name);
    let current = applied_children::Current {
        config_map_version: config_map_version.as_deref(),
        service_version: service_version.as_deref(),
        stateful_set: existing.as_ref(),
    };
    let skip = no_lifecycle_step
        && applied_children::unchanged(recorded.as_ref(), digest, children, &current);
    for kind in [CONFIG_MAP, SERVICE, STATEFUL_SET] {
        ctx.metrics.count_write(kind, !skip);
    }
    match existing {
        Some(sts) if skip => Ok(sts),
        _ => {
            ctx.applied.forget(&id.namespace, &id.name);
            let stored = apply::apply_children(&ctx.client, id, children).await?;
            ctx.applied.record(
                &id.namespace,
                &id.name,
                applied_children::Applied::of(
                    digest,
                    &stored.config_map,
                    &stored.service,
                    &stored.stateful_set,
                ),
            );
            Ok(stored.stateful_set)
        }
    }
}

/// Kind names of the children (watch keys and metric labels).
const CONFIG_MAP: &str = "ConfigMap";
const SERVICE: &str = "Service";
const STATEFUL_SET: &str = "StatefulSet";

/// How often a running job's pods are asked for their checkpoint facts.
const RUNNING_POLL: Duration = Duration::from_secs(30);

/// The safety-net re-check of a job on its way to Running or Suspended (was 5 s, before the
/// pod watch, when polling was how pod changes were noticed).
const SETTLING_POLL: Duration = Duration::from_secs(60);

/// Sets the checkpoint-storage condition; true if it flipped or its reason changed.
fn storage_condition(
    status: &mut StreamJobStatus,
    ok: bool,
    reason: &str,
    message: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let before =
        weir_crds::conditions::find_condition(&status.conditions, restore_flow::CHECKPOINT_STORAGE)
            .map(|c| (c.status.clone(), c.reason.clone()));
    weir_crds::conditions::set_condition(
        &mut status.conditions,
        weir_crds::Condition::new(restore_flow::CHECKPOINT_STORAGE, ok, reason, message),
        now,
    );
    let after =
        weir_crds::conditions::find_condition(&status.conditions, restore_flow::CHECKPOINT_STORAGE)
            .map(|c| (c.status.clone(), c.reason.clone()));
    before != after
}

/// How long cleanup waits for the pods to terminate before it is retried.
const CLEANUP_WAIT: Duration = Duration::from_secs(60);

/// Deletion: remove the children and wait until the StatefulSet and its pods are gone, then
/// let the finalizer go.
async fn cleanup_job(obj: &DynamicObject, ctx: &Context) -> Result<Action, Error> {
    let name = obj.name_any();
    let namespace = obj.namespace().unwrap_or_default();
    ctx.applied.forget(&namespace, &name);
    ctx.statuses.forget(&format!("{namespace}/{name}"));
    apply::delete_children(&ctx.client, &namespace, &name).await?;
    let start = std::time::Instant::now();
    loop {
        let remaining = apply::remaining_children(&ctx.client, &namespace, &name).await?;
        if remaining == 0 {
            break;
        }
        if start.elapsed() >= CLEANUP_WAIT {
            return Err(Error::ChildrenRemain {
                namespace,
                name,
                remaining,
                waited: start.elapsed(),
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    events::normal(
        &ctx.recorder,
        &obj.object_ref(&ctx.resource),
        "Deleted",
        "deleted the job's StatefulSet (and its pods), Service and ConfigMap".to_string(),
    )
    .await;
    ctx.metrics
        .set_job_phase(&format!("{namespace}/{name}"), None);
    Ok(Action::await_change())
}

/// The StreamJob API resource.
pub fn stream_job_resource() -> ApiResource {
    ApiResource::erase::<StreamJob>(&())
}
