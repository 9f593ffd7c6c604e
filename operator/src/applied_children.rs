//! Skipping server-side applies that would change nothing. Each reconcile used to apply a
//! job's ConfigMap, Service and StatefulSet again; with hundreds of jobs those no-op applies
//! were most of the operator's API traffic. The operator remembers, per job, a digest of the
//! children it last applied and what the API server returned (the ConfigMap's and Service's
//! resourceVersion, the StatefulSet's generation); the child watches report the current
//! resourceVersions. The children are applied again unless all of them are provably still
//! what was applied: the same desired content, and nobody has written the objects since
//! (ConfigMap and Service: the same resourceVersion; StatefulSet: the same generation, so its
//! spec is untouched, our labels and owner reference still on it, and no deletion pending).
//! After an operator restart nothing is remembered, so the first reconcile of each job applies.

use crate::build::Children;
use k8s_openapi::api::apps::v1::StatefulSet;
use kube::runtime::watcher;
use kube::Resource;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// What an apply of one job's children returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// [`digest`] of the children applied.
    pub digest: u64,
    /// The ConfigMap's resourceVersion after the apply.
    pub config_map_version: Option<String>,
    /// The Service's resourceVersion after the apply.
    pub service_version: Option<String>,
    /// The StatefulSet's generation after the apply.
    pub stateful_set_generation: Option<i64>,
}

impl Applied {
    /// The record of an apply: the digest of what was applied and what the server returned.
    pub fn of(
        digest: u64,
        config_map: &impl Resource,
        service: &impl Resource,
        stateful_set: &StatefulSet,
    ) -> Self {
        Applied {
            digest,
            config_map_version: config_map.meta().resource_version.clone(),
            service_version: service.meta().resource_version.clone(),
            stateful_set_generation: stateful_set.metadata.generation,
        }
    }
}

/// Digest of the desired children (their JSON form; maps are ordered, so it is stable).
pub fn digest(children: &Children) -> u64 {
    let mut h = DefaultHasher::new();
    for json in [
        serde_json::to_string(&children.config_map),
        serde_json::to_string(&children.service),
        serde_json::to_string(&children.stateful_set),
    ] {
        json.unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

/// What is known about the children now.
#[derive(Debug)]
pub struct Current<'a> {
    /// The ConfigMap's resourceVersion as its watch last reported it (`None`: not seen).
    pub config_map_version: Option<&'a str>,
    /// The Service's resourceVersion as its watch last reported it.
    pub service_version: Option<&'a str>,
    /// The StatefulSet as read in this reconcile.
    pub stateful_set: Option<&'a StatefulSet>,
}

/// Whether applying `desired` (with digest `digest`) again would change nothing.
pub fn unchanged(
    recorded: Option<&Applied>,
    digest: u64,
    desired: &Children,
    current: &Current<'_>,
) -> bool {
    let Some(recorded) = recorded else {
        return false;
    };
    let Some(sts) = current.stateful_set else {
        return false;
    };
    recorded.digest == digest
        && recorded.config_map_version.is_some()
        && current.config_map_version == recorded.config_map_version.as_deref()
        && recorded.service_version.is_some()
        && current.service_version == recorded.service_version.as_deref()
        && sts.metadata.generation.is_some()
        && sts.metadata.generation == recorded.stateful_set_generation
        && sts.metadata.deletion_timestamp.is_none()
        && carries_metadata(sts, &desired.stateful_set)
}

/// Labels and owner references of `desired` are all on `actual` (metadata changes do not
/// bump the generation).
fn carries_metadata(actual: &StatefulSet, desired: &StatefulSet) -> bool {
    let labels = actual.metadata.labels.clone().unwrap_or_default();
    let owners = actual.metadata.owner_references.clone().unwrap_or_default();
    desired
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v))
        && desired
            .metadata
            .owner_references
            .iter()
            .flatten()
            .all(|o| owners.contains(o))
}

/// Key of a child: kind, namespace, name.
type ChildKey = (&'static str, String, String);

/// The applies remembered per job and the children's resourceVersions from their watches.
#[derive(Debug, Default)]
pub struct AppliedChildren {
    applied: Mutex<HashMap<(String, String), Applied>>,
    versions: Mutex<HashMap<ChildKey, String>>,
}

impl AppliedChildren {
    /// The record of the last apply of job `namespace/name`.
    pub fn recorded(&self, namespace: &str, name: &str) -> Option<Applied> {
        self.applied
            .lock()
            .ok()?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Remembers an apply of job `namespace/name`.
    pub fn record(&self, namespace: &str, name: &str, applied: Applied) {
        if let Ok(mut map) = self.applied.lock() {
            map.insert((namespace.to_string(), name.to_string()), applied);
        }
    }

    /// Forgets job `namespace/name` (deleted, or an apply failed half-way).
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut map) = self.applied.lock() {
            map.remove(&(namespace.to_string(), name.to_string()));
        }
    }

    /// The resourceVersion the watch last reported for child `kind` `namespace/name`.
    pub fn version(&self, kind: &'static str, namespace: &str, name: &str) -> Option<String> {
        self.versions
            .lock()
            .ok()?
            .get(&(kind, namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Takes one event of the watch of children of `kind` (in `scope`, or all namespaces). A
    /// (re)start of the watch forgets what it had reported in its scope, so nothing deleted
    /// while it was away is taken as still there.
    pub fn observe<K: Resource>(
        &self,
        kind: &'static str,
        scope: Option<&str>,
        event: &watcher::Event<K>,
    ) {
        let Ok(mut versions) = self.versions.lock() else {
            return;
        };
        let key = |obj: &K| {
            (
                kind,
                obj.meta().namespace.clone().unwrap_or_default(),
                obj.meta().name.clone().unwrap_or_default(),
            )
        };
        match event {
            watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => {
                if let Some(rv) = obj.meta().resource_version.clone() {
                    versions.insert(key(obj), rv);
                }
            }
            watcher::Event::Delete(obj) => {
                versions.remove(&key(obj));
            }
            watcher::Event::Init => {
                versions.retain(|(k, ns, _), _| *k != kind || scope.is_some_and(|s| s != ns))
            }
            watcher::Event::InitDone => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::{children, JobIdentity};
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use kube::core::PartialObjectMeta;
    use weir_crds::StreamJob;

    fn job() -> StreamJob {
        let mut job: StreamJob =
            serde_yaml::from_str(include_str!("../../examples/quickstart.yaml"))
                .expect("quickstart parses");
        job.metadata.namespace = Some("n".into());
        job.metadata.uid = Some("u1".into());
        job
    }

    /// The children of `job` as the API server would return them after an apply.
    fn stored(job: &StreamJob) -> (Children, StatefulSet) {
        let c = children(job).expect("children");
        let mut sts = c.stateful_set.clone();
        sts.metadata.generation = Some(1);
        sts.metadata.resource_version = Some("30".into());
        (c, sts)
    }

    fn record(c: &Children, sts: &StatefulSet) -> Applied {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                resource_version: Some("10".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        let mut svc = c.service.clone();
        svc.metadata.resource_version = Some("20".into());
        Applied::of(digest(c), &cm, &svc, sts)
    }

    fn current(sts: &StatefulSet) -> Current<'_> {
        Current {
            config_map_version: Some("10"),
            service_version: Some("20"),
            stateful_set: Some(sts),
        }
    }

    #[test]
    fn untouched_children_are_not_applied_again() {
        let job = job();
        let (c, sts) = stored(&job);
        let rec = record(&c, &sts);
        assert!(unchanged(Some(&rec), digest(&c), &c, &current(&sts)));
        // StatefulSet status updates change its resourceVersion, not its generation.
        let mut status_update = sts.clone();
        status_update.metadata.resource_version = Some("31".into());
        assert!(unchanged(
            Some(&rec),
            digest(&c),
            &c,
            &current(&status_update)
        ));
    }

    #[test]
    fn any_doubt_means_apply() {
        let job = job();
        let (c, sts) = stored(&job);
        let rec = record(&c, &sts);
        // Nothing remembered (operator restarted).
        assert!(!unchanged(None, digest(&c), &c, &current(&sts)));
        // The desired children changed (spec edit).
        let mut edited = job.clone();
        edited.spec.parallelism += 1;
        let c2 = children(&edited).expect("children");
        assert_ne!(digest(&c), digest(&c2));
        assert!(!unchanged(Some(&rec), digest(&c2), &c2, &current(&sts)));
        // Someone wrote the ConfigMap or the Service, or the watch has not seen it.
        for (cm, svc) in [
            (Some("11"), Some("20")),
            (Some("10"), Some("21")),
            (None, Some("20")),
            (Some("10"), None),
        ] {
            let now = Current {
                config_map_version: cm,
                service_version: svc,
                stateful_set: Some(&sts),
            };
            assert!(!unchanged(Some(&rec), digest(&c), &c, &now), "{now:?}");
        }
        // The StatefulSet is gone, its spec was edited, our label was removed, its owner
        // reference dropped, or it is being deleted.
        let gone = Current {
            stateful_set: None,
            ..current(&sts)
        };
        assert!(!unchanged(Some(&rec), digest(&c), &c, &gone));
        let mut scaled = sts.clone();
        scaled.metadata.generation = Some(2);
        assert!(!unchanged(Some(&rec), digest(&c), &c, &current(&scaled)));
        let mut unlabelled = sts.clone();
        unlabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(crate::build::JOB_LABEL);
        assert!(!unchanged(
            Some(&rec),
            digest(&c),
            &c,
            &current(&unlabelled)
        ));
        let mut orphan = sts.clone();
        orphan.metadata.owner_references = None;
        assert!(!unchanged(Some(&rec), digest(&c), &c, &current(&orphan)));
        let mut deleting = sts.clone();
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        assert!(!unchanged(Some(&rec), digest(&c), &c, &current(&deleting)));
        // The id helper is what the reconcile keys the record by.
        assert_eq!(JobIdentity::of(&job).expect("id").namespace, "n");
    }

    fn meta(ns: &str, name: &str, rv: &str) -> PartialObjectMeta<ConfigMap> {
        PartialObjectMeta {
            types: None,
            metadata: ObjectMeta {
                namespace: Some(ns.into()),
                name: Some(name.into()),
                resource_version: Some(rv.into()),
                ..ObjectMeta::default()
            },
            _phantom: Default::default(),
        }
    }

    #[test]
    fn the_watch_keeps_versions_and_a_restart_forgets_its_scope() {
        let a = AppliedChildren::default();
        a.observe(
            "ConfigMap",
            Some("n"),
            &watcher::Event::Apply(meta("n", "x", "1")),
        );
        a.observe(
            "ConfigMap",
            None,
            &watcher::Event::Apply(meta("m", "y", "2")),
        );
        a.observe(
            "Service",
            Some("n"),
            &watcher::Event::Apply(meta("n", "x", "3")),
        );
        assert_eq!(a.version("ConfigMap", "n", "x").as_deref(), Some("1"));
        a.observe(
            "ConfigMap",
            Some("n"),
            &watcher::Event::Apply(meta("n", "x", "4")),
        );
        assert_eq!(a.version("ConfigMap", "n", "x").as_deref(), Some("4"));
        a.observe(
            "ConfigMap",
            Some("n"),
            &watcher::Event::<PartialObjectMeta<ConfigMap>>::Init,
        );
        assert_eq!(a.version("ConfigMap", "n", "x"), None);
        assert_eq!(a.version("ConfigMap", "m", "y").as_deref(), Some("2"));
        assert_eq!(a.version("Service", "n", "x").as_deref(), Some("3"));
        a.observe(
            "Service",
            Some("n"),
            &watcher::Event::Delete(meta("n", "x", "5")),
        );
        assert_eq!(a.version("Service", "n", "x"), None);
        a.observe(
            "ConfigMap",
            None,
            &watcher::Event::<PartialObjectMeta<ConfigMap>>::Init,
        );
        assert_eq!(a.version("ConfigMap", "m", "y"), None);

        a.record(
            "n",
            "j",
            Applied::of(
                1,
                &meta("n", "j-config", "1"),
                &meta("n", "j", "2"),
                &StatefulSet::default(),
            ),
        );
        assert_eq!(a.recorded("n", "j").map(|r| r.digest), Some(1));
        a.forget("n", "j");
        assert_eq!(a.recorded("n", "j"), None);
    }
}
