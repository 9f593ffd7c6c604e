//! Builds the children of a `StreamJob` (ConfigMap, headless Service, StatefulSet). Pure: no
//! client, so every rule here is unit-tested with YAML fixtures.

mod config_map;
mod service;
mod stateful_set;

pub use config_map::{config_map, render_job_config, JOB_CONFIG_KEY, JOB_CONFIG_PATH};
pub use service::{headless_service, ADMIN_PORT};
pub use stateful_set::{stateful_set, template_annotations, RESERVED_ENV};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use weir_crds::StreamJob;

/// Label on every child and pod naming the job (also the StatefulSet selector).
pub const JOB_LABEL: &str = "weir.dev/job";
/// Pod template annotation: hash of the rendered job config.
pub const REVISION_ANNOTATION: &str = "weir.dev/revision";
/// Pod template annotation: the job's `spec.restartNonce`.
pub const RESTART_NONCE_ANNOTATION: &str = "weir.dev/restart-nonce";
/// Name of the runtime container.
pub const CONTAINER_NAME: &str = "runtime";

/// Why children could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    /// The job has no name.
    #[error("the StreamJob has no metadata.name")]
    MissingName,
    /// The job has no namespace.
    #[error("StreamJob {name} has no metadata.namespace")]
    MissingNamespace {
        /// The job.
        name: String,
    },
    /// The job has no uid (it was not read from the API server), so no owner reference.
    #[error("StreamJob {name} has no metadata.uid; cannot set owner references")]
    MissingUid {
        /// The job.
        name: String,
    },
    /// The job config could not be rendered as YAML.
    #[error("rendering the job config of StreamJob {name} failed: {message}")]
    RenderConfig {
        /// The job.
        name: String,
        /// The serialiser's message.
        message: String,
    },
}

/// Everything Weir creates for one job.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    /// Hash of the rendered job config; changes roll out a new revision.
    pub revision: String,
    /// `<job>-config` holding `job.yaml`.
    pub config_map: ConfigMap,
    /// Headless Service `<job>` giving pods stable DNS names.
    pub service: Service,
    /// StatefulSet `<job>` running the runtime pods.
    pub stateful_set: StatefulSet,
}

/// Names and ownership shared by all children of one job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobIdentity {
    /// The job's name (also the Service and StatefulSet name).
    pub name: String,
    /// The job's namespace.
    pub namespace: String,
    /// Controller owner reference pointing at the job.
    pub owner: OwnerReference,
}

impl JobIdentity {
    /// Reads name, namespace and owner reference off the job.
    pub fn of(job: &StreamJob) -> Result<Self, BuildError> {
        let name = job.metadata.name.clone().ok_or(BuildError::MissingName)?;
        let namespace = job
            .metadata
            .namespace
            .clone()
            .ok_or_else(|| BuildError::MissingNamespace { name: name.clone() })?;
        let owner = job
            .controller_owner_ref(&())
            .ok_or_else(|| BuildError::MissingUid { name: name.clone() })?;
        Ok(JobIdentity {
            name,
            namespace,
            owner,
        })
    }

    /// Name of the ConfigMap holding the job config.
    pub fn config_map_name(&self) -> String {
        config_map_name(&self.name)
    }

    /// Labels Weir puts on every child and pod; they win over user labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "weir-job".to_string()),
            ("app.kubernetes.io/instance".to_string(), self.name.clone()),
            (
                "app.kubernetes.io/managed-by".to_string(),
                crate::FIELD_MANAGER.to_string(),
            ),
            (JOB_LABEL.to_string(), self.name.clone()),
        ])
    }

    /// The StatefulSet's (immutable) pod selector.
    pub fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(JOB_LABEL.to_string(), self.name.clone())])
    }

    /// Metadata for a child named `name`: namespace, labels, owner reference.
    pub fn child_meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }
}

/// Name of the ConfigMap holding the config of job `job`.
pub fn config_map_name(job: &str) -> String {
    format!("{job}-config")
}

/// Builds all children of `job`.
pub fn children(job: &StreamJob) -> Result<Children, BuildError> {
    let id = JobIdentity::of(job)?;
    let config = render_job_config(job, &id)?;
    let revision = revision_of(&config);
    Ok(Children {
        config_map: config_map(&id, &config),
        service: headless_service(&id),
        stateful_set: stateful_set(job, &id, &revision),
        revision,
    })
}

/// The revision of a rendered config: the first 16 hex digits of its SHA-256.
pub fn revision_of(config: &str) -> String {
    let digest = Sha256::digest(config.as_bytes());
    hex::encode(digest)[..16].to_string()
}

#[cfg(test)]
pub(crate) mod fixtures {
    use weir_crds::StreamJob;

    /// Loads `operator/tests/fixtures/<name>` as a StreamJob.
    pub fn job(name: &str) -> StreamJob {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        weir_crds::manifest::parse_stream_job(&path, &text).unwrap_or_else(|e| panic!("{e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_crds::stream_job::DesiredState;

    #[test]
    fn children_are_owned_by_the_job_and_labelled() {
        let c = children(&fixtures::job("job.yaml")).expect("build");
        for meta in [
            &c.config_map.metadata,
            &c.service.metadata,
            &c.stateful_set.metadata,
        ] {
            let owners = meta.owner_references.as_deref().unwrap_or_default();
            assert_eq!(owners.len(), 1);
            assert_eq!(owners[0].kind, "StreamJob");
            assert_eq!(owners[0].name, "bids");
            assert_eq!(owners[0].controller, Some(true));
            assert_eq!(meta.namespace.as_deref(), Some("ads"));
            assert_eq!(
                meta.labels.as_ref().and_then(|l| l.get(JOB_LABEL)),
                Some(&"bids".to_string())
            );
        }
        assert_eq!(c.config_map.metadata.name.as_deref(), Some("bids-config"));
        assert_eq!(c.service.metadata.name.as_deref(), Some("bids"));
        assert_eq!(c.stateful_set.metadata.name.as_deref(), Some("bids"));
    }

    #[test]
    fn a_job_without_uid_cannot_own_children() {
        let mut job = fixtures::job("job.yaml");
        job.metadata.uid = None;
        assert_eq!(
            children(&job).err(),
            Some(BuildError::MissingUid {
                name: "bids".to_string()
            })
        );
    }

    #[test]
    fn revision_changes_iff_the_config_changes() {
        let job = fixtures::job("job.yaml");
        let base = children(&job).expect("build").revision;
        assert_eq!(base.len(), 16);

        // Same spec, different status/resourceVersion/generation: same revision.
        let mut same = job.clone();
        same.metadata.resource_version = Some("9999".to_string());
        same.metadata.generation = Some(7);
        same.status = None;
        assert_eq!(children(&same).expect("build").revision, base);

        // Suspending and restarting do not change the config.
        let mut suspended = job.clone();
        suspended.spec.state = DesiredState::Suspended;
        suspended.spec.restart_nonce = Some("1".to_string());
        assert_eq!(children(&suspended).expect("build").revision, base);

        // Pipeline, image and parallelism changes do.
        let mut edited = job.clone();
        edited.spec.pipeline.operators[0].filter = Some("e.type == 'ask'".to_string());
        assert_ne!(children(&edited).expect("build").revision, base);
        let mut image = job.clone();
        image.spec.image = "docker.io/local/weir-runtime:0.2.0".to_string();
        assert_ne!(children(&image).expect("build").revision, base);
        let mut scaled = job;
        scaled.spec.parallelism = 3;
        assert_ne!(children(&scaled).expect("build").revision, base);
    }
}
