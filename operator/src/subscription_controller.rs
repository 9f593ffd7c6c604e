//! The AlertSubscription controller: reads the Secrets a subscription's channels refer to,
//! checks every channel (one broken channel never stops the others) and writes
//! `status.channels`, `observedGeneration` and the Ready / ChannelsValid conditions. It watches
//! Secrets too, so creating, fixing or breaking a Secret updates the status at once.

use crate::alert_secrets::{read_secrets, smtp_settings, SecretsError};
use crate::alerting::delivery_status::keep_deliveries;
use crate::alerting::notify::ChannelResolver;
use crate::alerting::subscription::{channels_condition, check_channels, required_secrets};
use crate::config::RunConfig;
use crate::events::{self, chain};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use weir_crds::alert_subscription::{
    AlertSubscription, AlertSubscriptionSpec, AlertSubscriptionStatus, ChannelStatus,
};
use weir_crds::conditions::{find_condition, set_condition};
use weir_crds::Condition;

/// The AlertSubscription CRD the controller waits for.
pub const ALERT_SUBSCRIPTION_CRD: &str = "alertsubscriptions.weir.dev";
/// Kind label value in metrics and logs.
pub const KIND: &str = "AlertSubscription";
/// Condition type: every channel can be used.
pub const READY: &str = "Ready";
/// Condition type from [`channels_condition`].
pub const CHANNELS_VALID: &str = "ChannelsValid";

/// Everything a reconcile needs.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// The operator's settings (SMTP for email channels).
    pub config: RunConfig,
    /// The AlertSubscription API resource (for the dynamic API).
    pub resource: ApiResource,
}

/// A failed reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object is not namespaced.
    #[error("AlertSubscription {name} has no namespace")]
    MissingNamespace {
        /// Name.
        name: String,
    },
    /// Reading a referenced Secret failed (other than not found).
    #[error(transparent)]
    ReadSecrets(#[from] SecretsError),
    /// Patching the status failed.
    #[error("patching the status of AlertSubscription {namespace}/{name} failed")]
    PatchStatus {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
}

/// The spec of a subscription as listed, or why it cannot be read.
pub fn parse_spec(obj: &DynamicObject) -> Result<AlertSubscriptionSpec, String> {
    let value = serde_json::to_value(obj).map_err(|e| e.to_string())?;
    serde_json::from_value::<AlertSubscription>(value)
        .map(|s| s.spec)
        .map_err(|e| e.to_string())
}

/// The subscriptions (of `subscriptions`) that read Secret `namespace/name`.
pub fn subscriptions_referencing<'a>(
    namespace: &str,
    name: &str,
    subscriptions: impl IntoIterator<Item = &'a DynamicObject>,
) -> Vec<&'a DynamicObject> {
    subscriptions
        .into_iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace))
        .filter(|s| parse_spec(s).is_ok_and(|spec| required_secrets(&spec).contains(name)))
        .collect()
}

fn secret_mapper(
    store: Store<DynamicObject>,
    resource: ApiResource,
) -> impl Fn(Secret) -> Vec<ObjectRef<DynamicObject>> + Send + Sync + 'static {
    move |secret: Secret| {
        let (Some(ns), Some(name)) = (secret.namespace(), secret.metadata.name.clone()) else {
            return vec![];
        };
        let all = store.state();
        subscriptions_referencing(&ns, &name, all.iter().map(|s| s.as_ref()))
            .into_iter()
            .map(|s| ObjectRef::from_obj_with(s, resource.clone()))
            .collect()
    }
}

/// The status for checked channels: `channels`, `observedGeneration`, and Ready and
/// ChannelsValid on top of the previous conditions.
pub fn subscription_status(
    previous: &AlertSubscriptionStatus,
    generation: Option<i64>,
    channels: Vec<ChannelStatus>,
    now: DateTime<Utc>,
) -> AlertSubscriptionStatus {
    let channels = keep_deliveries(&previous.channels, channels);
    let valid = channels_condition(&channels);
    let usable = channels.iter().filter(|c| c.ready).count();
    let ready = if valid.is_true() {
        Condition::new(READY, true, "ChannelsReady", valid.message.clone())
    } else if usable == 0 {
        Condition::new(READY, false, "NoUsableChannel", valid.message.clone())
    } else {
        Condition::new(
            READY,
            false,
            "SomeChannelsInvalid",
            format!(
                "{usable} channel(s) still deliver; {}",
                valid.message.clone()
            ),
        )
    };
    with_conditions(previous, generation, channels, [ready, valid], now)
}

/// The status of a subscription whose spec cannot be read.
pub fn invalid_spec_status(
    previous: &AlertSubscriptionStatus,
    generation: Option<i64>,
    error: &str,
    now: DateTime<Utc>,
) -> AlertSubscriptionStatus {
    let message = format!("spec cannot be read: {error}");
    with_conditions(
        previous,
        generation,
        vec![],
        [
            Condition::new(READY, false, "SpecInvalid", message.clone()),
            Condition::new(CHANNELS_VALID, false, "SpecInvalid", message),
        ],
        now,
    )
}

fn with_conditions(
    previous: &AlertSubscriptionStatus,
    generation: Option<i64>,
    channels: Vec<ChannelStatus>,
    conditions: [Condition; 2],
    now: DateTime<Utc>,
) -> AlertSubscriptionStatus {
    let mut status = previous.clone();
    for mut c in conditions {
        c.observed_generation = generation;
        set_condition(&mut status.conditions, c, now);
    }
    status.channels = channels;
    status.observed_generation = generation;
    status
}

/// A JSON merge patch of the whole status (this controller owns all of it but the channels'
/// `lastDelivery`, which the alert dispatcher writes: the patch carries `resourceVersion`, so
/// a delivery recorded since `status` was read makes it fail with 409 rather than be lost).
pub fn merge_patch(
    status: &AlertSubscriptionStatus,
    resource_version: Option<&str>,
) -> serde_json::Value {
    serde_json::json!({
        "metadata": {"resourceVersion": resource_version},
        "status": {
            "conditions": status.conditions,
            "channels": status.channels,
            "observedGeneration": status.observed_generation,
        }
    })
}

fn previous_status(obj: &DynamicObject) -> AlertSubscriptionStatus {
    obj.data
        .get("status")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default()
}

/// Checks one subscription's channels and patches its status when it changed.
pub async fn reconcile(obj: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = obj.name_any();
    let namespace = obj
        .namespace()
        .ok_or_else(|| Error::MissingNamespace { name: name.clone() })?;
    let previous = previous_status(&obj);
    let generation = obj.metadata.generation;
    let now = Utc::now();
    let next = match parse_spec(&obj) {
        Ok(spec) => {
            let secrets = read_secrets(&ctx.client, &namespace, &required_secrets(&spec)).await?;
            let smtp = smtp_settings(&ctx.config).unwrap_or_else(|e| {
                tracing::warn!(error = %chain(&e), "SMTP settings unusable; email channels are reported as not configured");
                None
            });
            let resolver = ChannelResolver::new(reqwest::Client::new(), smtp);
            subscription_status(
                &previous,
                generation,
                check_channels(&spec, &secrets, &resolver),
                now,
            )
        }
        Err(e) => invalid_spec_status(&previous, generation, &e, now),
    };
    let was_valid = find_condition(&previous.conditions, CHANNELS_VALID).map(Condition::is_true);
    let now_valid = find_condition(&next.conditions, CHANNELS_VALID);
    if let Some(c) = now_valid.filter(|c| !c.is_true() && was_valid != Some(false)) {
        let regarding = obj.object_ref(&ctx.resource);
        events::warning(&ctx.recorder, &regarding, &c.reason, c.message.clone()).await;
    }
    if next != previous {
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &ctx.resource);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(merge_patch(&next, obj.metadata.resource_version.as_deref())),
        )
        .await
        .map_err(|source| Error::PatchStatus {
            namespace: namespace.clone(),
            name: name.clone(),
            source,
        })?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(_obj: Arc<DynamicObject>, error: &Error, _ctx: Arc<Context>) -> Action {
    if let Error::PatchStatus {
        source: kube::Error::Api(s),
        ..
    } = error
    {
        if s.is_conflict() {
            // The dispatcher recorded a delivery meanwhile: check again on the newer object.
            tracing::debug!(error = %chain(error), "AlertSubscription status changed meanwhile");
            return Action::requeue(Duration::from_secs(1));
        }
    }
    tracing::warn!(error = %chain(error), "AlertSubscription reconcile failed");
    Action::requeue(Duration::from_secs(30))
}

/// Starts the controller(s) on the runtime once the CRD is established; they run until
/// `shutdown` completes. One controller per watched namespace, or one for all.
pub fn spawn<S, F>(
    client: Client,
    config: RunConfig,
    identity: String,
    shutdown: S,
) -> tokio::task::JoinHandle<()>
where
    S: Fn() -> F + Send + 'static,
    F: Future<Output = ()> + Send + Sync + 'static,
{
    tokio::spawn(async move {
        crate::crd_wait::wait_established(client.clone(), &[ALERT_SUBSCRIPTION_CRD]).await;
        let ctx = Arc::new(Context {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: crate::FIELD_MANAGER.to_string(),
                    instance: Some(identity),
                },
            ),
            client,
            config,
            resource: ApiResource::erase::<AlertSubscription>(&()),
        });
        run(ctx, shutdown).await;
    })
}

/// Runs the controller(s) until `shutdown` completes.
pub async fn run<S, F>(ctx: Arc<Context>, shutdown: S)
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
        let (subs, secrets): (Api<DynamicObject>, Api<Secret>) = match &ns {
            Some(ns) => (
                Api::namespaced_with(client.clone(), ns, &ctx.resource),
                Api::namespaced(client, ns),
            ),
            None => (
                Api::all_with(client.clone(), &ctx.resource),
                Api::all(client),
            ),
        };
        let controller =
            Controller::new_with(subs, watcher::Config::default(), ctx.resource.clone());
        let mapper = secret_mapper(controller.store(), ctx.resource.clone());
        controller
            .watches(secrets, watcher::Config::default(), mapper)
            .graceful_shutdown_on(shutdown())
            .run(reconcile, error_policy, ctx.clone())
            .for_each(|result| async move {
                match result {
                    Ok((obj, _)) => tracing::debug!(object = %obj, "AlertSubscription reconciled"),
                    Err(e) => {
                        tracing::debug!(error = %chain(&e), "AlertSubscription controller event")
                    }
                }
            })
    });
    futures::future::join_all(controllers).await;
    tracing::info!(kind = KIND, "controller stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn sub(ns: &str, name: &str, spec: serde_json::Value) -> DynamicObject {
        let value = serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "AlertSubscription",
            "metadata": {"name": name, "namespace": ns, "generation": 3},
            "spec": spec,
        });
        match serde_json::from_value(value) {
            Ok(o) => o,
            Err(e) => panic!("{e}"),
        }
    }

    fn hook(secret: &str) -> serde_json::Value {
        serde_json::json!({"webhook": {"urlSecret": {"name": secret, "key": "url"}}})
    }

    #[test]
    fn a_secret_maps_to_the_subscriptions_of_its_namespace_that_read_it() {
        let subs = [
            sub(
                "ads",
                "oncall",
                serde_json::json!({"channels": [hook("pager")]}),
            ),
            sub(
                "ads",
                "team",
                serde_json::json!({"channels": [hook("chat")], "fallback": hook("pager")}),
            ),
            sub(
                "ads",
                "other",
                serde_json::json!({"channels": [hook("chat")]}),
            ),
            sub(
                "feed",
                "oncall",
                serde_json::json!({"channels": [hook("pager")]}),
            ),
            sub(
                "ads",
                "broken",
                serde_json::json!({"channels": "not a list"}),
            ),
        ];
        let names: Vec<String> = subscriptions_referencing("ads", "pager", &subs)
            .into_iter()
            .map(|s| s.name_any())
            .collect();
        assert_eq!(names, ["oncall", "team"]);
        assert!(subscriptions_referencing("ads", "unused", &subs).is_empty());
    }

    #[test]
    fn one_broken_channel_makes_ready_false_but_says_the_others_deliver() {
        let t0 = Utc
            .timestamp_opt(1_800_000_000, 0)
            .single()
            .unwrap_or_default();
        let ok = ChannelStatus {
            name: "webhook-0".into(),
            ready: true,
            message: "webhook channel ready".into(),
            ..Default::default()
        };
        let broken = ChannelStatus {
            name: "slack-1".into(),
            ready: false,
            message: "channel 'slack-1': Secret 'chat' not found".into(),
            ..Default::default()
        };
        let s = subscription_status(
            &AlertSubscriptionStatus::default(),
            Some(3),
            vec![ok.clone(), broken.clone()],
            t0,
        );
        let ready = find_condition(&s.conditions, READY)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "SomeChannelsInvalid")
        );
        assert!(
            ready.message.starts_with("1 channel(s) still deliver"),
            "{}",
            ready.message
        );
        let valid = find_condition(&s.conditions, CHANNELS_VALID)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (valid.status.as_str(), valid.reason.as_str()),
            ("False", "ChannelInvalid")
        );
        assert_eq!((s.observed_generation, s.channels.len()), (Some(3), 2));
        assert_eq!(valid.observed_generation, Some(3));

        // Fixed: both True, and the transition time moves.
        let t1 = t0 + chrono::Duration::seconds(60);
        let fixed = ChannelStatus {
            ready: true,
            ..broken
        };
        let s = subscription_status(&s, Some(3), vec![ok, fixed], t1);
        let ready = find_condition(&s.conditions, READY)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (ready.status.as_str(), ready.last_transition_time),
            ("True", Some(t1))
        );

        let none = subscription_status(
            &AlertSubscriptionStatus::default(),
            None,
            vec![ChannelStatus {
                ready: false,
                ..Default::default()
            }],
            t0,
        );
        let ready = find_condition(&none.conditions, READY)
            .cloned()
            .unwrap_or_default();
        assert_eq!(ready.reason, "NoUsableChannel");
    }

    #[test]
    fn an_unreadable_spec_is_reported_on_the_subscription() {
        let obj = sub(
            "ads",
            "broken",
            serde_json::json!({"channels": "not a list"}),
        );
        let err = parse_spec(&obj).err().unwrap_or_default();
        let s = invalid_spec_status(
            &AlertSubscriptionStatus::default(),
            Some(1),
            &err,
            Utc::now(),
        );
        let ready = find_condition(&s.conditions, READY)
            .cloned()
            .unwrap_or_default();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "SpecInvalid")
        );
        assert!(
            ready
                .message
                .starts_with("spec cannot be read: invalid type")
                && ready.message.contains("expected a sequence"),
            "{}",
            ready.message
        );
        let patch = merge_patch(&s, Some("42"));
        assert_eq!(patch["status"]["observedGeneration"], 1);
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
    }
}
