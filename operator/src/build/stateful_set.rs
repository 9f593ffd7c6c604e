//! The StatefulSet running a job's runtime pods, with the user's `podTemplate` merged in.

use super::{
    JobIdentity, ADMIN_PORT, CONTAINER_NAME, JOB_CONFIG_KEY, JOB_CONFIG_PATH,
    RESTART_NONCE_ANNOTATION, REVISION_ANNOTATION,
};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe,
    SecretEnvSource, SecretKeySelector, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::collections::BTreeMap;
use weir_crds::kafka::secret_env;
use weir_crds::pipeline::lookup_redis_url_env;
use weir_crds::stream_job::DesiredState;
use weir_crds::StreamJob;

/// Name of the volume holding the job config.
const CONFIG_VOLUME: &str = "weir-config";

/// The StatefulSet `<job>`: `parallelism` pods (0 when suspended), started all at once.
///
/// The update strategy is `OnDelete`: the operator itself deletes pods of an older revision,
/// all together, so a job never runs with pods of two revisions restored from different points.
pub fn stateful_set(job: &StreamJob, id: &JobIdentity, revision: &str) -> StatefulSet {
    let replicas = match job.spec.state {
        DesiredState::Suspended => 0,
        DesiredState::Running => job.spec.parallelism,
    };
    StatefulSet {
        metadata: id.child_meta(id.name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(replicas),
            service_name: Some(id.name.clone()),
            pod_management_policy: Some("Parallel".to_string()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("OnDelete".to_string()),
                rolling_update: None,
            }),
            selector: LabelSelector {
                match_labels: Some(id.selector()),
                match_expressions: None,
            },
            template: pod_template(job, id, revision),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// Pod annotations the operator compares to decide whether a pod runs the desired revision.
pub fn template_annotations(revision: &str, restart_nonce: Option<&str>) -> [(String, String); 2] {
    [
        (REVISION_ANNOTATION.to_string(), revision.to_string()),
        (
            RESTART_NONCE_ANNOTATION.to_string(),
            restart_nonce.unwrap_or_default().to_string(),
        ),
    ]
}

fn pod_template(job: &StreamJob, id: &JobIdentity, revision: &str) -> PodTemplateSpec {
    let user = &job.spec.pod_template;
    let mut labels = user.labels.clone();
    labels.extend(id.labels());
    let mut annotations = user.annotations.clone();
    annotations.extend(template_annotations(
        revision,
        job.spec.restart_nonce.as_deref(),
    ));

    let mut volumes = vec![Volume {
        name: CONFIG_VOLUME.to_string(),
        config_map: Some(ConfigMapVolumeSource {
            name: id.config_map_name(),
            items: Some(vec![KeyToPath {
                key: JOB_CONFIG_KEY.to_string(),
                path: JOB_CONFIG_KEY.to_string(),
                mode: None,
            }]),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    volumes.extend(
        user.volumes
            .iter()
            .filter(|v| v.name != CONFIG_VOLUME)
            .cloned(),
    );

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container(job, id)],
            volumes: Some(volumes),
            service_account_name: user.service_account_name.clone(),
            // On SIGTERM the runtime takes a final checkpoint, bounded by twice the
            // checkpoint timeout (one may already be running); leave it the time to finish.
            termination_grace_period_seconds: Some(
                i64::try_from(job.spec.checkpoint.timeout.0.as_secs())
                    .unwrap_or(i64::MAX / 4)
                    .saturating_mul(2)
                    .saturating_add(15),
            ),
            node_selector: non_empty_map(&user.node_selector),
            tolerations: non_empty_vec(&user.tolerations),
            ..PodSpec::default()
        }),
    }
}

fn container(job: &StreamJob, id: &JobIdentity) -> Container {
    let spec = &job.spec;
    let config_dir = JOB_CONFIG_PATH
        .rsplit_once('/')
        .map_or("/etc/weir", |(dir, _)| dir);
    let mut mounts = vec![VolumeMount {
        name: CONFIG_VOLUME.to_string(),
        mount_path: config_dir.to_string(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    mounts.extend(
        spec.pod_template
            .volume_mounts
            .iter()
            .filter(|m| m.name != CONFIG_VOLUME)
            .cloned(),
    );
    Container {
        name: CONTAINER_NAME.to_string(),
        image: Some(spec.image.clone()),
        image_pull_policy: spec.image_pull_policy.map(|p| p.as_str().to_string()),
        args: Some(vec![
            "worker".to_string(),
            "--config".to_string(),
            JOB_CONFIG_PATH.to_string(),
        ]),
        env: Some(env(job, id)),
        env_from: checkpoint_credentials(job),
        // The runtime's last log lines (e.g. why it refuses to start) become the
        // termination message the operator reads.
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ports: Some(vec![ContainerPort {
            name: Some("admin".to_string()),
            container_port: ADMIN_PORT,
            protocol: Some("TCP".to_string()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(http_probe("/readyz", 2, 3)),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            ..http_probe("/healthz", 10, 3)
        }),
        resources: spec.resources.clone(),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

/// Environment variable names Weir sets; a user `podTemplate.env` entry with one of these
/// names is ignored (documented in the operator README).
pub const RESERVED_ENV: [&str; 5] = [
    "WEIR_REPLICAS",
    "WEIR_RESTORE_FROM",
    "WEIR_JOB_NAME",
    "WEIR_NAMESPACE",
    "WEIR_POD_NAME",
];

fn env(job: &StreamJob, id: &JobIdentity) -> Vec<EnvVar> {
    let value = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value: Some(value),
        value_from: None,
    };
    let mut env = vec![
        value("WEIR_REPLICAS", job.spec.parallelism.to_string()),
        value(
            "WEIR_RESTORE_FROM",
            job.spec
                .restore
                .from
                .clone()
                .unwrap_or_else(|| "latest".to_string()),
        ),
        value("WEIR_JOB_NAME", id.name.clone()),
        value("WEIR_NAMESPACE", id.namespace.clone()),
        EnvVar {
            name: "WEIR_POD_NAME".to_string(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: "metadata.name".to_string(),
                }),
                ..EnvVarSource::default()
            }),
        },
    ];
    let mut lookups = lookup_url_env(job);
    lookups.extend(kafka_secret_env(job));
    env.extend(
        job.spec
            .pod_template
            .env
            .iter()
            .filter(|e| !RESERVED_ENV.contains(&e.name.as_str()))
            .filter(|e| !lookups.iter().any(|l| l.name == e.name))
            .cloned(),
    );
    env.extend(lookups);
    env
}

/// For each lookupJoin operator with `store.redisUrlSecret`: its Redis URL from the Secret's
/// key as `WEIR_LOOKUP_<OPERATOR>_REDIS_URL` (`weir_crds::pipeline::lookup_redis_url_env`),
/// the variable the runtime reads it from. The URL (with its password) never appears in the
/// job's ConfigMap or the StatefulSet.
fn lookup_url_env(job: &StreamJob) -> Vec<EnvVar> {
    job.spec
        .pipeline
        .operators
        .iter()
        .filter_map(|o| {
            let secret = o.lookup_join.as_ref()?.store.redis_url_secret.as_ref()?;
            Some(EnvVar {
                name: lookup_redis_url_env(&o.name),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret.name.clone(),
                        key: secret.key.clone(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
            })
        })
        .collect()
}

/// Every Secret key a Kafka source, sink or repartition's `security` references, once each,
/// as `WEIR_SECRET_<NAME>_<KEY>` (`weir_crds::kafka::secret_env`) from the Secret: passwords,
/// keys and certificates never appear in the job's ConfigMap or the StatefulSet.
fn kafka_secret_env(job: &StreamJob) -> Vec<EnvVar> {
    let p = &job.spec.pipeline;
    let securities = p
        .sources
        .iter()
        .filter_map(|s| s.kafka.as_ref()?.security.as_deref())
        .chain(
            p.sinks
                .iter()
                .filter_map(|s| s.kafka.as_ref()?.security.as_deref()),
        )
        .chain(
            p.operators
                .iter()
                .filter_map(|o| o.repartition.as_ref()?.security.as_deref()),
        );
    let mut by_env: BTreeMap<String, EnvVar> = BTreeMap::new();
    for security in securities {
        for (_, r) in security.secret_refs() {
            by_env.entry(secret_env(r)).or_insert_with(|| EnvVar {
                name: secret_env(r),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: r.name.clone(),
                        key: r.key.clone(),
                        optional: Some(false),
                    }),
                    ..EnvVarSource::default()
                }),
            });
        }
    }
    by_env.into_values().collect()
}

/// The `s3://` credentials Secret (`checkpoint.credentialsSecret`) as environment variables
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ENDPOINT`, `AWS_REGION`).
fn checkpoint_credentials(job: &StreamJob) -> Option<Vec<EnvFromSource>> {
    let secret = job.spec.checkpoint.credentials_secret.as_ref()?;
    Some(vec![EnvFromSource {
        secret_ref: Some(SecretEnvSource {
            name: secret.clone(),
            optional: Some(false),
        }),
        ..EnvFromSource::default()
    }])
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("admin".to_string()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}

fn non_empty_map(m: &BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then(|| m.clone())
}

fn non_empty_vec<T: Clone>(v: &[T]) -> Option<Vec<T>> {
    (!v.is_empty()).then(|| v.to_vec())
}

#[cfg(test)]
mod tests {
    use super::super::{children, fixtures, JOB_LABEL};
    use super::*;

    fn built(job: &StreamJob) -> (StatefulSetSpec, PodSpec, ObjectMeta) {
        let sts = children(job).expect("build").stateful_set;
        let spec = sts.spec.expect("spec");
        let pod = spec.template.spec.clone().expect("pod spec");
        let meta = spec.template.metadata.clone().expect("pod meta");
        (spec, pod, meta)
    }

    fn env_value(pod: &PodSpec, name: &str) -> Option<String> {
        pod.containers[0]
            .env
            .as_ref()?
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    #[test]
    fn runs_parallelism_pods_in_parallel_with_the_worker_command() {
        let (spec, pod, _) = built(&fixtures::job("job.yaml"));
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        assert_eq!(spec.service_name.as_deref(), Some("bids"));
        let c = &pod.containers[0];
        assert_eq!(
            c.image.as_deref(),
            Some("docker.io/local/weir-runtime:0.1.0")
        );
        assert_eq!(c.image_pull_policy.as_deref(), Some("Never"));
        assert_eq!(
            c.args.as_deref(),
            Some(&["worker", "--config", "/etc/weir/job.yaml"].map(String::from)[..])
        );
        assert_eq!(env_value(&pod, "WEIR_REPLICAS").as_deref(), Some("2"));
        // the runtime's final checkpoint on SIGTERM fits in the grace period
        assert!(pod.termination_grace_period_seconds.unwrap_or(30) > 2 * 60);
        assert_eq!(
            env_value(&pod, "WEIR_RESTORE_FROM").as_deref(),
            Some("latest")
        );
        assert_eq!(env_value(&pod, "WEIR_JOB_NAME").as_deref(), Some("bids"));
        assert_eq!(env_value(&pod, "WEIR_NAMESPACE").as_deref(), Some("ads"));
        assert_eq!(c.ports.as_ref().map(|p| p[0].container_port), Some(8081));
        let probe_path = |p: &Option<Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .and_then(|h| h.path.clone())
        };
        assert_eq!(probe_path(&c.readiness_probe).as_deref(), Some("/readyz"));
        assert_eq!(probe_path(&c.liveness_probe).as_deref(), Some("/healthz"));
        assert_eq!(
            c.resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("cpu"))
                .map(|q| q.0.as_str()),
            Some("100m")
        );
    }

    #[test]
    fn merges_the_pod_template_with_weir_winning_on_conflicts() {
        let (_, pod, meta) = built(&fixtures::job("job.yaml"));
        let labels = meta.labels.expect("labels");
        assert_eq!(labels.get("team").map(String::as_str), Some("ads"));
        assert_eq!(labels.get(JOB_LABEL).map(String::as_str), Some("bids"));
        assert_eq!(
            labels
                .get("app.kubernetes.io/managed-by")
                .map(String::as_str),
            Some("weir-operator")
        );
        let annotations = meta.annotations.expect("annotations");
        assert_eq!(
            annotations.get("prometheus.io/scrape").map(String::as_str),
            Some("true")
        );
        assert!(annotations.contains_key(REVISION_ANNOTATION));
        assert_eq!(env_value(&pod, "RUST_LOG").as_deref(), Some("debug"));
        // The user's WEIR_REPLICAS is ignored: only Weir's is present.
        let c = &pod.containers[0];
        let replicas_vars = c
            .env
            .as_ref()
            .map(|e| e.iter().filter(|e| e.name == "WEIR_REPLICAS").count());
        assert_eq!(replicas_vars, Some(1));
        assert_eq!(pod.service_account_name.as_deref(), Some("jobs"));
        assert_eq!(
            pod.node_selector.as_ref().and_then(|n| n.get("disk")),
            Some(&"ssd".to_string())
        );
        assert_eq!(pod.tolerations.as_ref().map(Vec::len), Some(1));
        let volumes: Vec<_> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, vec![CONFIG_VOLUME, "checkpoints"]);
        let mounts: Vec<_> = c
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.name.as_str(), m.mount_path.as_str()))
            .collect();
        assert_eq!(
            mounts,
            vec![
                (CONFIG_VOLUME, "/etc/weir"),
                ("checkpoints", "/var/lib/weir/checkpoints")
            ]
        );
    }

    #[test]
    fn suspended_jobs_have_zero_replicas() {
        let mut job = fixtures::job("job.yaml");
        job.spec.state = DesiredState::Suspended;
        assert_eq!(built(&job).0.replicas, Some(0));
    }

    #[test]
    fn the_restart_nonce_is_a_template_annotation() {
        let mut job = fixtures::job("job.yaml");
        let (_, _, before) = built(&job);
        job.spec.restart_nonce = Some("2026-11-21".to_string());
        let (_, _, after) = built(&job);
        let nonce = |m: &ObjectMeta| {
            m.annotations
                .as_ref()
                .and_then(|a| a.get(RESTART_NONCE_ANNOTATION))
                .cloned()
        };
        assert_eq!(nonce(&before).as_deref(), Some(""));
        assert_eq!(nonce(&after).as_deref(), Some("2026-11-21"));
        let revision = |m: &ObjectMeta| {
            m.annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_ANNOTATION))
                .cloned()
        };
        assert_eq!(revision(&before), revision(&after));
    }

    #[test]
    fn a_lookup_url_secret_becomes_a_secret_key_ref_env_var() {
        let mut job = fixtures::job("job.yaml");
        let op: weir_crds::pipeline::OperatorSpec = serde_json::from_str(
            r#"{"name": "enrich-ads", "input": "bids", "lookupJoin": {"key": "e.ad",
                "emit": "e", "store": {"redisUrlSecret": {"name": "redis-creds", "key": "url"}}}}"#,
        )
        .expect("operator");
        job.spec.pipeline.operators.push(op);
        // a user variable of the same name does not replace it
        job.spec.pod_template.env.push(EnvVar {
            name: "WEIR_LOOKUP_ENRICH_ADS_REDIS_URL".to_string(),
            value: Some("redis://elsewhere".to_string()),
            value_from: None,
        });
        let (_, pod, _) = built(&job);
        let env = pod.containers[0].env.clone().unwrap_or_default();
        let vars: Vec<&EnvVar> = env
            .iter()
            .filter(|e| e.name == "WEIR_LOOKUP_ENRICH_ADS_REDIS_URL")
            .collect();
        assert_eq!(vars.len(), 1, "{env:?}");
        assert_eq!(vars[0].value, None);
        let secret = vars[0]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("secretKeyRef");
        assert_eq!(secret.name, "redis-creds");
        assert_eq!(secret.key, "url");
        assert_eq!(secret.optional, Some(false));
        // the fixture's own operators add none
        let (_, plain, _) = built(&fixtures::job("job.yaml"));
        assert!(!plain.containers[0]
            .env
            .iter()
            .flatten()
            .any(|e| e.name.starts_with("WEIR_LOOKUP_")));
    }

    #[test]
    fn kafka_security_secrets_become_secret_key_ref_env_vars_once_each() {
        let mut job = fixtures::job("job.yaml");
        let security = r#"{"tls": {"caSecret": {"name": "kafka-tls", "key": "ca.crt"}},
            "sasl": {"mechanism": "SCRAM-SHA-512", "username": "weir",
                     "passwordSecret": {"name": "kafka-creds", "key": "password"}}}"#;
        let source: weir_crds::pipeline::SourceSpec = serde_json::from_str(&format!(
            r#"{{"name": "orders", "kafka": {{"brokers": "k:9093", "topic": "orders",
                "security": {security}}}}}"#
        ))
        .expect("source");
        let sink: weir_crds::pipeline::SinkSpec = serde_json::from_str(&format!(
            r#"{{"name": "out", "input": "orders", "kafka": {{"brokers": "k:9093",
                "topic": "out", "security": {security}}}}}"#
        ))
        .expect("sink");
        job.spec.pipeline.sources.push(source);
        job.spec.pipeline.sinks.push(sink);
        let (_, pod, _) = built(&job);
        let env = pod.containers[0].env.clone().unwrap_or_default();
        let secret_vars: Vec<(&str, &str, &str)> = env
            .iter()
            .filter(|e| e.name.starts_with("WEIR_SECRET_"))
            .map(|e| {
                assert_eq!(e.value, None, "{e:?}");
                let r = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                    .expect("secretKeyRef");
                (e.name.as_str(), r.name.as_str(), r.key.as_str())
            })
            .collect();
        assert_eq!(
            secret_vars,
            [
                (
                    "WEIR_SECRET_KAFKA_CREDS_PASSWORD",
                    "kafka-creds",
                    "password"
                ),
                ("WEIR_SECRET_KAFKA_TLS_CA_CRT", "kafka-tls", "ca.crt"),
            ]
        );
    }
}
