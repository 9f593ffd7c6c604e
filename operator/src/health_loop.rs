//! The health and alerting loop (leader only): every `--scrape-interval` it scrapes each
//! StreamJob's ready runtime pods, aggregates their task metrics into `status.health`,
//! evaluates the alert rules against the job and the AlertSubscriptions of its namespace,
//! delivers due notifications (with Events on the job), patches the job's status and
//! `weir_job_*` series, and saves the alert engine state in the ConfigMap `weir-alert-state`.

use crate::alert_secrets::{read_secrets, smtp_settings, smtp_with_credentials};
use crate::alert_state_store::StateStore;
use crate::alerting::aggregate::{aggregate, JobScrape};
use crate::alerting::delivery::{deliver_due, DeliveryReport};
use crate::alerting::delivery_status::{by_subscription, with_deliveries};
use crate::alerting::dispatch::Disposition;
use crate::alerting::engine::{AlertEngine, EngineConfig};
use crate::alerting::job_input::{evaluate_job, subscription};
use crate::alerting::job_metrics::JobHealthMetrics;
use crate::alerting::metrics::NotificationMetrics;
use crate::alerting::notify::{ChannelResolver, SecretData};
use crate::alerting::routing::Subscription;
use crate::alerting::rules::RuleSet;
use crate::alerting::scrape::{scrape_job, PodTarget};
use crate::alerting::subscription::required_secrets;
use crate::build::{ADMIN_PORT, JOB_LABEL};
use crate::config::RunConfig;
use crate::events::{self, chain};
use crate::health_status::{health_conditions, status_patch, HealthReport};
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;
use weir_crds::alert_subscription::{AlertSubscription, AlertSubscriptionStatus};
use weir_crds::stream_job::StreamJobStatus;
use weir_crds::StreamJob;

/// Longest wait for one pod's `/metrics`.
pub const MAX_SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// Status patches retried this often after a 409 Conflict.
const PATCH_ATTEMPTS: usize = 3;

/// The alerting series on the operator's `/metrics`: `weir_job_*` and
/// `weir_notifications_total`.
#[derive(Clone, Debug, Default)]
pub struct AlertMetrics {
    /// `weir_job_*{namespace,job}`.
    pub jobs: JobHealthMetrics,
    /// `weir_notifications_total{channel,outcome}`.
    pub notifications: NotificationMetrics,
}

impl AlertMetrics {
    /// Creates and registers the series.
    pub fn register(registry: &mut Registry) -> Self {
        AlertMetrics {
            jobs: JobHealthMetrics::register(registry),
            notifications: NotificationMetrics::register(registry),
        }
    }
}

/// Listing what a round needs failed; the round is skipped.
#[derive(Debug, thiserror::Error)]
pub enum HealthLoopError {
    /// Listing StreamJobs, AlertSubscriptions or pods failed.
    #[error("listing {what} in {scope} failed")]
    List {
        /// `StreamJobs`, `AlertSubscriptions` or `pods`.
        what: &'static str,
        /// A namespace or `all namespaces`.
        scope: String,
        /// The cause.
        source: kube::Error,
    },
}

/// StreamJobs per list request of a round.
const JOB_LIST_PAGE: u32 = 100;

/// One StreamJob as listed (raw object, for its status and resourceVersion) and as parsed.
struct ListedJob {
    raw: DynamicObject,
    job: StreamJob,
}

/// Everything one round reads from the API.
#[derive(Default)]
struct Snapshot {
    jobs: Vec<ListedJob>,
    subscriptions: Vec<Subscription>,
    /// Pods by `namespace/job`.
    pods: HashMap<String, Vec<Pod>>,
}

/// The loop's state between rounds.
pub struct HealthLoop {
    client: Client,
    config: RunConfig,
    rules: Option<RuleSet>,
    rules_error: Option<String>,
    recorder: Recorder,
    metrics: AlertMetrics,
    engine: AlertEngine,
    store: StateStore,
    http: reqwest::Client,
    job_resource: ApiResource,
    subscription_resource: ApiResource,
    /// The previous scrape of each job (`namespace/name`), for rates.
    previous: HashMap<String, JobScrape>,
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

/// Starts the loop on the runtime; it runs until `shutdown` completes.
pub fn spawn(
    client: Client,
    config: RunConfig,
    metrics: AlertMetrics,
    identity: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let health = HealthLoop::new(client, config, metrics, identity);
    tokio::spawn(health.run(shutdown))
}

/// The rules from `--alert-rules` (or the built-in defaults); on error `None` and the message
/// (no alert fires, and each job's Alerting condition says why).
fn load_rules(config: &RunConfig) -> (Option<RuleSet>, Option<String>) {
    match RuleSet::load(config.alert_rules.as_deref()) {
        Ok(r) => (Some(r), None),
        Err(e) => {
            let message = chain(&e);
            tracing::error!(error = %message, path = ?config.alert_rules, "alert rules cannot be loaded; no alerts will fire");
            (None, Some(message))
        }
    }
}

impl HealthLoop {
    /// A loop with the rules from `--alert-rules` (or the defaults) and an empty engine; the
    /// saved engine state is loaded when it runs.
    pub fn new(client: Client, config: RunConfig, metrics: AlertMetrics, identity: String) -> Self {
        let (rules, rules_error) = load_rules(&config);
        let engine = AlertEngine::new(
            EngineConfig {
                external_url: config.external_url.clone(),
                ..EngineConfig::default()
            },
            Default::default(),
        );
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: crate::FIELD_MANAGER.to_string(),
                instance: Some(identity),
            },
        );
        // WEIR_NAMESPACE: the operator's own namespace (also where its Lease lives).
        let store = StateStore::new(client.clone(), &config.lease_namespace());
        HealthLoop {
            client,
            rules,
            rules_error,
            recorder,
            metrics,
            engine,
            store,
            http: reqwest::Client::new(),
            job_resource: ApiResource::erase::<StreamJob>(&()),
            subscription_resource: ApiResource::erase::<AlertSubscription>(&()),
            previous: HashMap::new(),
            config,
        }
    }

    /// Loads the saved engine state (retrying until it can be read, so a restart never pages
    /// again from empty state), then runs a round every scrape interval until `shutdown`.
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let interval = self.config.scrape_interval.0.max(Duration::from_secs(1));
        tokio::pin!(shutdown);
        loop {
            match self.store.load().await {
                Ok(state) => {
                    self.engine.state = state;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %chain(&e), "loading the alert engine state failed; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = &mut shutdown => return,
            }
        }
        tracing::info!(interval = ?interval, "health and alerting loop started");
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = &mut shutdown => return,
            }
            if let Err(e) = self.round(Utc::now()).await {
                tracing::warn!(error = %chain(&e), "health round skipped");
            }
        }
    }

    fn scopes(&self) -> Vec<Option<String>> {
        let namespaces = self.config.watched_namespaces();
        if namespaces.is_empty() {
            vec![None]
        } else {
            namespaces.into_iter().map(Some).collect()
        }
    }

    fn dynamic_api(&self, ns: Option<&str>, resource: &ApiResource) -> Api<DynamicObject> {
        match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, resource),
            None => Api::all_with(self.client.clone(), resource),
        }
    }

    async fn snapshot(&self) -> Result<Snapshot, HealthLoopError> {
        let mut snap = Snapshot::default();
        for scope in self.scopes() {
            let scope_name = scope
                .clone()
                .unwrap_or_else(|| "all namespaces".to_string());
            let list_err = |what: &'static str| {
                let scope = scope_name.clone();
                move |source: kube::Error| HealthLoopError::List {
                    what,
                    scope,
                    source,
                }
            };
            // Read in pages and keep each job parsed once, with only metadata and status of
            // the raw object: with hundreds of jobs a one-piece list (and its copies) is most
            // of the operator's peak memory.
            let api = self.dynamic_api(scope.as_deref(), &self.job_resource);
            let mut page = ListParams::default().limit(JOB_LIST_PAGE);
            loop {
                let jobs = api.list(&page).await.map_err(list_err("StreamJobs"))?;
                for mut raw in jobs.items {
                    if raw.metadata.deletion_timestamp.is_some() {
                        continue;
                    }
                    crate::object_trim::trim_job(&mut raw);
                    // A malformed job is reported by the controller (SpecValid); skip it here.
                    let parsed = serde_json::to_value(&raw).and_then(serde_json::from_value);
                    if let Ok(job) = parsed {
                        crate::object_trim::keep_metadata_and_status(&mut raw);
                        snap.jobs.push(ListedJob { raw, job });
                    }
                }
                match jobs.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => {
                        page = ListParams::default()
                            .limit(JOB_LIST_PAGE)
                            .continue_token(&token)
                    }
                    None => break,
                }
            }
            let subs = match self
                .dynamic_api(scope.as_deref(), &self.subscription_resource)
                .list(&ListParams::default())
                .await
            {
                Ok(list) => list.items,
                // The AlertSubscription CRD is not installed: health still works, no one is
                // notified.
                Err(kube::Error::Api(s)) if s.is_not_found() => vec![],
                Err(e) => return Err(list_err("AlertSubscriptions")(e)),
            };
            for raw in subs {
                let parsed: Result<AlertSubscription, _> =
                    serde_json::to_value(&raw).and_then(serde_json::from_value);
                if let Some(s) = parsed.ok().as_ref().and_then(subscription) {
                    snap.subscriptions.push(s);
                }
            }
            let pods: Api<Pod> = match scope.as_deref() {
                Some(ns) => Api::namespaced(self.client.clone(), ns),
                None => Api::all(self.client.clone()),
            };
            let pods = pods
                .list(&ListParams::default().labels(JOB_LABEL))
                .await
                .map_err(list_err("pods"))?;
            for pod in pods.items {
                let job = pod.labels().get(JOB_LABEL).cloned().unwrap_or_default();
                let ns = pod.namespace().unwrap_or_default();
                snap.pods.entry(key(&ns, &job)).or_default().push(pod);
            }
        }
        Ok(snap)
    }

    /// One round over every job.
    pub async fn round(&mut self, now: DateTime<Utc>) -> Result<(), HealthLoopError> {
        let snap = self.snapshot().await?;
        let timeout = self.config.scrape_interval.0.min(MAX_SCRAPE_TIMEOUT);
        let scrapes = futures::future::join_all(snap.jobs.iter().map(|j| {
            let name = j.raw.name_any();
            let ns = j.raw.namespace().unwrap_or_default();
            let targets: Vec<PodTarget> = snap
                .pods
                .get(&key(&ns, &name))
                .map(|pods| {
                    pods.iter()
                        .map(|p| PodTarget::from_pod(p, ADMIN_PORT as u16))
                        .collect()
                })
                .unwrap_or_default();
            let http = self.http.clone();
            async move { scrape_job(&http, &name, &targets, timeout).await }
        }))
        .await;

        let mut seen = BTreeSet::new();
        let mut refs: HashMap<String, ObjectReference> = HashMap::new();
        for (listed, scrape) in snap.jobs.iter().zip(scrapes) {
            let ns = listed.raw.namespace().unwrap_or_default();
            let name = listed.raw.name_any();
            let job_key = key(&ns, &name);
            seen.insert(job_key.clone());
            refs.insert(job_key.clone(), listed.raw.object_ref(&self.job_resource));
            let report = self.evaluate(listed, scrape, &snap.subscriptions, now);
            if let Err(e) = self.patch_status(&listed.raw, &report, now).await {
                tracing::warn!(job = %job_key, error = %chain(&e), "patching the job's health status failed");
            }
        }

        let reports = self.deliver(&snap.subscriptions, now).await;
        for report in &reports {
            self.publish_delivery_event(report, &refs).await;
        }
        self.record_deliveries(&reports, now).await;
        self.forget_deleted(&seen);
        if let Err(e) = self.store.save(&self.engine.state).await {
            tracing::warn!(error = %chain(&e), "saving the alert engine state failed");
        }
        Ok(())
    }

    /// Aggregation, rules, engine and metrics for one job.
    fn evaluate(
        &mut self,
        listed: &ListedJob,
        scrape: JobScrape,
        subscriptions: &[Subscription],
        now: DateTime<Utc>,
    ) -> HealthReport {
        let ns = listed.raw.namespace().unwrap_or_default();
        let name = listed.raw.name_any();
        let job_key = key(&ns, &name);
        let health = if scrape.pods.is_empty() {
            None
        } else {
            let memory = &mut self.engine.job_memory(&ns, &name).health;
            Some(aggregate(self.previous.get(&job_key), &scrape, memory))
        };
        self.previous.insert(job_key, scrape);
        // Rules see health only when some task reported: zeros from no tasks are not health.
        let rule_health = health.clone().filter(|h| h.tasks_reporting > 0);
        let active = match &self.rules {
            Some(rules) => evaluate_job(
                &mut self.engine,
                rules,
                &listed.job,
                rule_health,
                subscriptions,
                now,
            ),
            None => vec![],
        };
        let phase = listed.job.status.as_ref().and_then(|s| s.phase);
        // No series from a job none of whose tasks reported: absent, not zero.
        match health.as_ref().filter(|h| h.tasks_reporting > 0) {
            Some(h) => self.metrics.jobs.set(
                &ns,
                &name,
                h,
                phase,
                listed.job.spec.checkpoint.interval.0.as_secs_f64(),
            ),
            None => self.metrics.jobs.remove(&ns, &name),
        }
        let conditions = health_conditions(
            self.rules.as_ref(),
            &listed.job,
            health.as_ref(),
            &active,
            self.rules_error.as_deref(),
        );
        HealthReport {
            health,
            active_alerts: active,
            conditions,
        }
    }

    /// Merge-patches the status on the current object, re-reading it after a 409 Conflict.
    async fn patch_status(
        &self,
        raw: &DynamicObject,
        report: &HealthReport,
        now: DateTime<Utc>,
    ) -> Result<(), kube::Error> {
        let name = raw.name_any();
        let api = self.dynamic_api(raw.namespace().as_deref(), &self.job_resource);
        let mut current = raw.clone();
        for attempt in 1..=PATCH_ATTEMPTS {
            let status: StreamJobStatus = current
                .data
                .get("status")
                .cloned()
                .and_then(|s| serde_json::from_value(s).ok())
                .unwrap_or_default();
            let rv = current.metadata.resource_version.as_deref();
            let Some(patch) = status_patch(&status, rv, report, now) else {
                return Ok(());
            };
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.is_conflict() && attempt < PATCH_ATTEMPTS => {
                    current = api.get(&name).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads the subscriptions' Secrets and the SMTP settings, and sends what is due.
    async fn deliver(
        &mut self,
        subscriptions: &[Subscription],
        now: DateTime<Utc>,
    ) -> Vec<DeliveryReport> {
        let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in subscriptions {
            names
                .entry(s.namespace.clone())
                .or_default()
                .extend(required_secrets(&s.spec));
        }
        let mut secrets: BTreeMap<String, SecretData> = BTreeMap::new();
        for (ns, names) in &names {
            match read_secrets(&self.client, ns, names).await {
                Ok(data) => {
                    secrets.insert(ns.clone(), data);
                }
                Err(e) => tracing::warn!(error = %chain(&e), "reading notifier Secrets failed"),
            }
        }
        let smtp = match smtp_with_credentials(&self.client, &self.config).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %chain(&e), "SMTP credentials unavailable; sending without AUTH");
                smtp_settings(&self.config).ok().flatten()
            }
        };
        let resolver = ChannelResolver::new(self.http.clone(), smtp);
        deliver_due(
            &mut self.engine,
            now,
            subscriptions,
            &secrets,
            &resolver,
            Some(&self.metrics.notifications),
        )
        .await
    }

    /// Writes each delivery's outcome into its subscription's `status.channels[].lastDelivery`.
    async fn record_deliveries(&self, reports: &[DeliveryReport], now: DateTime<Utc>) {
        for (key, reports) in by_subscription(reports) {
            let Some((ns, name)) = key.split_once('/') else {
                continue;
            };
            let api = self.dynamic_api(Some(ns), &self.subscription_resource);
            if let Err(e) = patch_deliveries(&api, name, &reports, now).await {
                tracing::warn!(subscription = %key, error = %chain(&e), "recording delivery outcomes in the AlertSubscription status failed");
            }
        }
    }

    async fn publish_delivery_event(
        &self,
        report: &DeliveryReport,
        refs: &HashMap<String, ObjectReference>,
    ) {
        let (warning, reason, note) = delivery_event(report);
        for (ns, job) in &report.jobs {
            let Some(regarding) = refs.get(&key(ns, job)) else {
                continue;
            };
            if warning {
                events::warning(&self.recorder, regarding, reason, note.clone()).await;
            } else {
                events::normal(&self.recorder, regarding, reason, note.clone()).await;
            }
        }
    }

    /// Drops the series, previous scrape and engine memory of jobs that are gone.
    fn forget_deleted(&mut self, seen: &BTreeSet<String>) {
        let known: BTreeSet<String> = self
            .previous
            .keys()
            .chain(self.engine.state.jobs.keys())
            .cloned()
            .collect();
        for gone in known.difference(seen) {
            if let Some((ns, name)) = gone.split_once('/') {
                self.metrics.jobs.remove(ns, name);
                self.engine.forget_job(ns, name);
            }
            self.previous.remove(gone);
            tracing::info!(job = %gone, "job gone; forgot its health and alerts");
        }
    }
}

/// Merge-patches `lastDelivery` of the reported channels on the current subscription, with its
/// `resourceVersion` (re-read and retried on 409, so the controller's concurrent channel check
/// and these outcomes never overwrite each other).
async fn patch_deliveries(
    api: &Api<DynamicObject>,
    name: &str,
    reports: &[&DeliveryReport],
    now: DateTime<Utc>,
) -> Result<(), kube::Error> {
    for attempt in 1..=PATCH_ATTEMPTS {
        let current = api.get(name).await?;
        let status: AlertSubscriptionStatus = current
            .data
            .get("status")
            .cloned()
            .and_then(|s| serde_json::from_value(s).ok())
            .unwrap_or_default();
        let channels = with_deliveries(&status.channels, reports, now);
        if channels == status.channels {
            return Ok(());
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": current.metadata.resource_version},
            "status": {"channels": channels},
        });
        match api
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.is_conflict() && attempt < PATCH_ATTEMPTS => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The Event for one delivery: (is a Warning, reason, note).
pub fn delivery_event(report: &DeliveryReport) -> (bool, &'static str, String) {
    let target = &report.target;
    let channel = format!(
        "channel '{}' ({}{}) of AlertSubscription {}",
        target.channel,
        target.kind,
        if target.fallback { ", fallback" } else { "" },
        target.subscription
    );
    let error = report.error.as_deref().unwrap_or("unknown error");
    match &report.disposition {
        Disposition::Delivered => (
            false,
            "AlertSent",
            format!("sent \"{}\" to {channel}", report.title),
        ),
        Disposition::Retrying { at } => (
            true,
            "AlertDeliveryFailed",
            format!(
                "sending \"{}\" to {channel} failed (attempt {}): {error}; retrying at {}",
                report.title,
                report.attempt,
                at.to_rfc3339()
            ),
        ),
        Disposition::Diverted { to } => (
            true,
            "AlertDeliveryFailed",
            format!(
                "sending \"{}\" to {channel} failed (attempt {}): {error}; sending to '{}' instead",
                report.title, report.attempt, to.channel
            ),
        ),
        Disposition::GaveUp | Disposition::Unknown => (
            true,
            "AlertDeliveryFailed",
            format!(
                "sending \"{}\" to {channel} failed (attempt {}): {error}; gave up",
                report.title, report.attempt
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::dispatch::ChannelTarget;

    fn report(disposition: Disposition, error: Option<&str>) -> DeliveryReport {
        DeliveryReport {
            target: ChannelTarget {
                subscription: "ads/oncall".into(),
                channel: "pager".into(),
                fallback: false,
                kind: "webhook".into(),
                endpoint: String::new(),
            },
            attempt: 2,
            error: error.map(String::from),
            disposition,
            jobs: vec![("ads".into(), "ctr".into())],
            title: "[CRITICAL] ads/ctr: ctr has failed".into(),
        }
    }

    #[test]
    fn delivery_events_name_the_channel_and_what_happens_next() {
        let (warning, reason, note) = delivery_event(&report(Disposition::Delivered, None));
        assert_eq!((warning, reason), (false, "AlertSent"));
        assert_eq!(
            note,
            "sent \"[CRITICAL] ads/ctr: ctr has failed\" to channel 'pager' (webhook) of AlertSubscription ads/oncall"
        );
        let (warning, reason, note) = delivery_event(&report(
            Disposition::GaveUp,
            Some("webhook: HTTP 500: boom"),
        ));
        assert_eq!((warning, reason), (true, "AlertDeliveryFailed"));
        assert!(
            note.ends_with("failed (attempt 2): webhook: HTTP 500: boom; gave up"),
            "{note}"
        );
    }
}
