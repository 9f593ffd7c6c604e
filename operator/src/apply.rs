//! Writes a job's children with server-side apply (one field manager, forced), restarts pods of
//! an older revision, and deletes the children on cleanup.

use crate::build::{config_map_name, Children, JobIdentity, JOB_LABEL};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeSet;
use std::fmt::Debug;

/// A failed write or read of a child object.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Reading the checkpoint-storage credentials Secret failed.
    #[error("reading Secret {namespace}/{name} (spec.checkpoint.credentialsSecret) failed")]
    ReadSecret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// Reading the ConfigMap keeping the last stable spec failed.
    #[error("reading ConfigMap {namespace}/{name} (the last stable spec) failed")]
    ReadConfigMap {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// Server-side apply of the ConfigMap failed.
    #[error("applying ConfigMap {namespace}/{name} failed")]
    ApplyConfigMap {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// Server-side apply of the Service failed.
    #[error("applying Service {namespace}/{name} failed")]
    ApplyService {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// Server-side apply of the StatefulSet failed.
    #[error("applying StatefulSet {namespace}/{name} failed")]
    ApplyStatefulSet {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// Reading the StatefulSet failed.
    #[error("reading StatefulSet {namespace}/{name} failed")]
    ReadStatefulSet {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// Listing the job's pods failed.
    #[error("listing the pods of job {namespace}/{name} failed")]
    ListPods {
        /// Namespace.
        namespace: String,
        /// Job name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// Deleting an outdated pod failed.
    #[error("deleting pod {namespace}/{name} failed")]
    DeletePod {
        /// Namespace.
        namespace: String,
        /// Pod name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// Deleting a child failed.
    #[error("deleting {kind} {namespace}/{name} failed")]
    DeleteChild {
        /// Kind of the child.
        kind: &'static str,
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
}

impl ApplyError {
    /// The variant's name, used as event reason and metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            ApplyError::ApplyConfigMap { .. } => "ApplyConfigMap",
            ApplyError::ApplyService { .. } => "ApplyService",
            ApplyError::ApplyStatefulSet { .. } => "ApplyStatefulSet",
            ApplyError::ReadStatefulSet { .. } => "ReadStatefulSet",
            ApplyError::ListPods { .. } => "ListPods",
            ApplyError::DeletePod { .. } => "DeletePod",
            ApplyError::DeleteChild { .. } => "DeleteChild",
            ApplyError::ReadSecret { .. } => "ReadSecret",
            ApplyError::ReadConfigMap { .. } => "ReadConfigMap",
        }
    }
}

fn params() -> PatchParams {
    PatchParams::apply(crate::FIELD_MANAGER).force()
}

async fn ssa<K>(client: &Client, namespace: &str, obj: &K) -> Result<K, kube::Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(&name, &params(), &Patch::Apply(obj)).await
}

/// The job's StatefulSet, if it exists.
pub async fn existing_stateful_set(
    client: &Client,
    id: &JobIdentity,
) -> Result<Option<StatefulSet>, ApplyError> {
    Api::<StatefulSet>::namespaced(client.clone(), &id.namespace)
        .get_opt(&id.name)
        .await
        .map_err(|source| ApplyError::ReadStatefulSet {
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            source,
        })
}

/// The children as stored after an apply.
#[derive(Debug)]
pub struct Stored {
    /// The ConfigMap.
    pub config_map: ConfigMap,
    /// The Service.
    pub service: Service,
    /// The StatefulSet.
    pub stateful_set: StatefulSet,
}

/// Applies ConfigMap, Service and StatefulSet, in that order; returns them as stored.
pub async fn apply_children(
    client: &Client,
    id: &JobIdentity,
    children: &Children,
) -> Result<Stored, ApplyError> {
    let ns = &id.namespace;
    let config_map = ssa::<ConfigMap>(client, ns, &children.config_map)
        .await
        .map_err(|source| ApplyError::ApplyConfigMap {
            namespace: ns.clone(),
            name: id.config_map_name(),
            source,
        })?;
    let service = ssa::<Service>(client, ns, &children.service)
        .await
        .map_err(|source| ApplyError::ApplyService {
            namespace: ns.clone(),
            name: id.name.clone(),
            source,
        })?;
    let stateful_set = ssa::<StatefulSet>(client, ns, &children.stateful_set)
        .await
        .map_err(|source| ApplyError::ApplyStatefulSet {
            namespace: ns.clone(),
            name: id.name.clone(),
            source,
        })?;
    Ok(Stored {
        config_map,
        service,
        stateful_set,
    })
}

/// Deletes `outdated` pods so that the StatefulSet recreates them from the current template.
/// Pods named in `stopped` have completed a final checkpoint and stopped processing, so they
/// have nothing left to do on SIGTERM: they are deleted without a grace period, and the
/// StatefulSet recreates them at once instead of after the kubelet has torn them down.
/// Returns how many were deleted.
///
/// Call only once the StatefulSet controller has observed the current template, otherwise it
/// would recreate the pods from the old one.
pub async fn restart_outdated_pods(
    client: &Client,
    id: &JobIdentity,
    outdated: &[Pod],
    stopped: &BTreeSet<String>,
) -> Result<usize, ApplyError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &id.namespace);
    let mut deleted = 0;
    for pod in outdated {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            grace_period_seconds: stopped.contains(&name).then_some(0),
            ..DeleteParams::default()
        };
        match pods.delete(&name, &params).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(ApplyError::DeletePod {
                    namespace: id.namespace.clone(),
                    name,
                    source,
                })
            }
        }
    }
    Ok(deleted)
}

/// Deletes `pods` without a grace period (a suspend past its progress deadline: their final
/// checkpoint cannot complete, and the restore point is the newest completed checkpoint).
/// Returns how many were deleted.
pub async fn force_delete_pods(
    client: &Client,
    id: &JobIdentity,
    pods: &[Pod],
) -> Result<usize, ApplyError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &id.namespace);
    let mut deleted = 0;
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => deleted += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(ApplyError::DeletePod {
                    namespace: id.namespace.clone(),
                    name,
                    source,
                })
            }
        }
    }
    Ok(deleted)
}

/// The ConfigMap keeping job `id`'s last stable spec, if any.
pub async fn stable_config_map(
    client: &Client,
    id: &JobIdentity,
) -> Result<Option<ConfigMap>, ApplyError> {
    let name = crate::rollback::stable_config_map_name(&id.name);
    Api::<ConfigMap>::namespaced(client.clone(), &id.namespace)
        .get_opt(&name)
        .await
        .map_err(|source| ApplyError::ReadConfigMap {
            namespace: id.namespace.clone(),
            name,
            source,
        })
}

/// Server-side applies the ConfigMap keeping the last stable spec.
pub async fn apply_stable_config_map(
    client: &Client,
    id: &JobIdentity,
    config_map: &ConfigMap,
) -> Result<(), ApplyError> {
    ssa::<ConfigMap>(client, &id.namespace, config_map)
        .await
        .map(|_| ())
        .map_err(|source| ApplyError::ApplyConfigMap {
            namespace: id.namespace.clone(),
            name: crate::rollback::stable_config_map_name(&id.name),
            source,
        })
}

/// The job's pods.
pub async fn job_pods(client: &Client, id: &JobIdentity) -> Result<Vec<Pod>, ApplyError> {
    Api::<Pod>::namespaced(client.clone(), &id.namespace)
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}={}", id.name)))
        .await
        .map(|l| l.items)
        .map_err(|source| ApplyError::ListPods {
            namespace: id.namespace.clone(),
            name: id.name.clone(),
            source,
        })
}

/// The keys of Secret `namespace/name`, or `None` if it does not exist.
pub async fn secret_keys(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<Option<Vec<String>>, kube::Error> {
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await?;
    Ok(secret.map(|s| {
        let mut keys: Vec<String> = s.data.unwrap_or_default().into_keys().collect();
        keys.extend(s.string_data.unwrap_or_default().into_keys());
        keys
    }))
}

async fn delete_if_present<K>(
    client: &Client,
    namespace: &str,
    name: &str,
    kind: &'static str,
) -> Result<(), ApplyError>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    // Foreground: the object stays (with a deletionTimestamp) until its pods are gone.
    match api.delete(name, &DeleteParams::foreground()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(source) => Err(ApplyError::DeleteChild {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        }),
    }
}

/// How many of the job's objects are left: the StatefulSet (0 or 1) plus its pods.
pub async fn remaining_children(
    client: &Client,
    namespace: &str,
    job: &str,
) -> Result<usize, ApplyError> {
    let sts = Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .get_opt(job)
        .await
        .map_err(|source| ApplyError::ReadStatefulSet {
            namespace: namespace.to_string(),
            name: job.to_string(),
            source,
        })?;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}={job}")))
        .await
        .map_err(|source| ApplyError::ListPods {
            namespace: namespace.to_string(),
            name: job.to_string(),
            source,
        })?;
    Ok(usize::from(sts.is_some()) + pods.items.len())
}

/// Deletes the job's children (their pods are garbage-collected with the StatefulSet).
pub async fn delete_children(
    client: &Client,
    namespace: &str,
    job: &str,
) -> Result<(), ApplyError> {
    delete_if_present::<StatefulSet>(client, namespace, job, "StatefulSet").await?;
    delete_if_present::<Service>(client, namespace, job, "Service").await?;
    delete_if_present::<ConfigMap>(client, namespace, &config_map_name(job), "ConfigMap").await
}
