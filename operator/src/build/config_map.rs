//! The ConfigMap holding the rendered job config the runtime reads as `/etc/weir/job.yaml`.

use super::{BuildError, JobIdentity};
use k8s_openapi::api::core::v1::ConfigMap;
use serde::Serialize;
use std::collections::BTreeMap;
use weir_crds::stream_job::DesiredState;
use weir_crds::{StreamJob, StreamJobSpec};

/// Key of the job config in the ConfigMap.
pub const JOB_CONFIG_KEY: &str = "job.yaml";
/// Where the runtime container sees the job config.
pub const JOB_CONFIG_PATH: &str = "/etc/weir/job.yaml";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RenderedManifest<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: RenderedMeta<'a>,
    spec: StreamJobSpec,
}

#[derive(Serialize)]
struct RenderedMeta<'a> {
    name: &'a str,
    namespace: &'a str,
}

/// Renders the full StreamJob manifest (defaults filled in) as the runtime reads it.
///
/// Only what the pods must run differently for is included: `state` and `restartNonce` are
/// left out (they scale or restart pods through the StatefulSet, not through the config), as
/// are status and server-managed metadata, so the revision hash changes iff the job changes.
pub fn render_job_config(job: &StreamJob, id: &JobIdentity) -> Result<String, BuildError> {
    let mut spec = job.spec.clone();
    spec.state = DesiredState::Running;
    spec.restart_nonce = None;
    let manifest = RenderedManifest {
        api_version: "weir.dev/v1alpha1",
        kind: "StreamJob",
        metadata: RenderedMeta {
            name: &id.name,
            namespace: &id.namespace,
        },
        spec,
    };
    serde_yaml::to_string(&manifest).map_err(|e| BuildError::RenderConfig {
        name: id.name.clone(),
        message: e.to_string(),
    })
}

/// The ConfigMap `<job>-config` with the rendered config under `job.yaml`.
pub fn config_map(id: &JobIdentity, config: &str) -> ConfigMap {
    ConfigMap {
        metadata: id.child_meta(id.config_map_name()),
        data: Some(BTreeMap::from([(
            JOB_CONFIG_KEY.to_string(),
            config.to_string(),
        )])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{children, fixtures};
    use super::*;

    #[test]
    fn the_config_is_a_stream_job_manifest_the_runtime_can_parse() {
        let job = fixtures::job("job.yaml");
        let c = children(&job).expect("build");
        let text = c
            .config_map
            .data
            .as_ref()
            .and_then(|d| d.get(JOB_CONFIG_KEY))
            .expect("job.yaml key");
        let parsed = weir_crds::manifest::parse_stream_job("job.yaml", text).expect("parses");
        assert_eq!(parsed.metadata.name.as_deref(), Some("bids"));
        assert_eq!(parsed.metadata.namespace.as_deref(), Some("ads"));
        assert_eq!(parsed.spec, job.spec);
        assert!(parsed.status.is_none());
        assert!(!text.contains("resourceVersion"), "{text}");
    }
}
