//! Which StreamJob watch events are worth a reconcile. A reconcile's output depends on the
//! job's spec (`metadata.generation`), its metadata (finalizers, deletion, labels, annotations)
//! and the children and pods, which have watches of their own. A change of `status` alone
//! (this controller's own status patch, or the health loop's) changes nothing the reconcile
//! would do, and with hundreds of jobs each such event used to cost a full reconcile
//! (three server-side applies, a pod list and a status comparison). Pure, apart from the
//! small map of what was last seen per object.

use kube::api::DynamicObject;
use kube::runtime::watcher;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// What of a job a reconcile depends on, and its status (only to tell status-only changes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprint {
    /// `metadata.generation`: bumped by the API server on every spec change.
    generation: Option<i64>,
    /// Hash of uid, deletion timestamp, finalizers, labels and annotations.
    metadata: u64,
    /// Hash of `status`.
    status: u64,
}

impl Fingerprint {
    /// Fingerprint of a (trimmed) StreamJob as the watch delivers it.
    pub fn of(job: &DynamicObject) -> Self {
        let meta = &job.metadata;
        let mut h = DefaultHasher::new();
        meta.uid.hash(&mut h);
        meta.deletion_timestamp
            .as_ref()
            .map(|t| t.0.as_microsecond())
            .hash(&mut h);
        meta.finalizers.hash(&mut h);
        meta.labels.hash(&mut h);
        meta.annotations.hash(&mut h);
        let metadata = h.finish();
        let mut h = DefaultHasher::new();
        job.data
            .get("status")
            .map(|s| s.to_string())
            .unwrap_or_default()
            .hash(&mut h);
        Fingerprint {
            generation: meta.generation,
            metadata,
            status: h.finish(),
        }
    }
}

/// How a job changed since its last watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Not seen before (created, or first listed after the operator started).
    New,
    /// The spec changed (or the object carries no generation to tell).
    Spec,
    /// Finalizers, deletion, labels or annotations changed.
    Metadata,
    /// Only the status changed.
    StatusOnly,
    /// Nothing this controller looks at changed (e.g. a re-list after a watch restart).
    Unchanged,
}

impl Change {
    /// Whether the change calls for a reconcile.
    pub fn needs_reconcile(self) -> bool {
        matches!(self, Change::New | Change::Spec | Change::Metadata)
    }

    /// Label value for the trigger metric.
    pub fn label(self) -> &'static str {
        match self {
            Change::New => "job_new",
            Change::Spec => "job_spec",
            Change::Metadata => "job_metadata",
            Change::StatusOnly => "job_status_only",
            Change::Unchanged => "job_unchanged",
        }
    }
}

/// Classifies `current` against the fingerprint last seen for the same object.
pub fn classify(previous: Option<&Fingerprint>, current: &Fingerprint) -> Change {
    let Some(previous) = previous else {
        return Change::New;
    };
    if current.generation.is_none() || current.generation != previous.generation {
        Change::Spec
    } else if current.metadata != previous.metadata {
        Change::Metadata
    } else if current.status != previous.status {
        Change::StatusOnly
    } else {
        Change::Unchanged
    }
}

/// The last fingerprint of every job the watch has shown, to classify the next event.
#[derive(Debug, Default)]
pub struct JobChanges {
    seen: HashMap<(Option<String>, String), Fingerprint>,
}

impl JobChanges {
    /// Takes one watch event: the object to reconcile if it changed in a way that matters,
    /// and the classification (`None` for events without an object, and for deletions,
    /// which the finalizer has already seen as a deletion timestamp).
    pub fn admit(
        &mut self,
        event: watcher::Event<DynamicObject>,
    ) -> (Option<DynamicObject>, Option<Change>) {
        match event {
            watcher::Event::Apply(job) | watcher::Event::InitApply(job) => {
                let key = (job.metadata.namespace.clone(), job_name(&job));
                let current = Fingerprint::of(&job);
                let change = classify(self.seen.get(&key), &current);
                self.seen.insert(key, current);
                (change.needs_reconcile().then_some(job), Some(change))
            }
            watcher::Event::Delete(job) => {
                self.seen
                    .remove(&(job.metadata.namespace.clone(), job_name(&job)));
                (None, None)
            }
            watcher::Event::Init | watcher::Event::InitDone => (None, None),
        }
    }
}

fn job_name(job: &DynamicObject) -> String {
    job.metadata.name.clone().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn job(generation: i64, extra: serde_json::Value) -> DynamicObject {
        let mut obj = json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "StreamJob",
            "metadata": {"name": "j", "namespace": "n", "uid": "u1", "generation": generation,
                         "resourceVersion": "1"},
            "spec": {"image": "i", "parallelism": 1},
        });
        merge(&mut obj, extra);
        serde_json::from_value(obj).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn change(before: &DynamicObject, after: &DynamicObject) -> Change {
        classify(Some(&Fingerprint::of(before)), &Fingerprint::of(after))
    }

    #[test]
    fn only_spec_and_metadata_changes_need_a_reconcile() {
        let base = job(1, json!({}));
        assert_eq!(classify(None, &Fingerprint::of(&base)), Change::New);
        assert_eq!(change(&base, &job(2, json!({}))), Change::Spec);
        assert_eq!(
            change(
                &base,
                &job(1, json!({"metadata": {"finalizers": ["weir.dev/cleanup"]}}))
            ),
            Change::Metadata
        );
        assert_eq!(
            change(
                &base,
                &job(
                    1,
                    json!({"metadata": {"deletionTimestamp": "2026-11-21T21:00:00Z"}})
                )
            ),
            Change::Metadata
        );
        assert_eq!(
            change(&base, &job(1, json!({"metadata": {"labels": {"a": "b"}}}))),
            Change::Metadata
        );
        assert_eq!(
            change(
                &base,
                &job(1, json!({"metadata": {"annotations": {"a": "b"}}}))
            ),
            Change::Metadata
        );
        assert_eq!(
            change(&base, &job(1, json!({"status": {"phase": "Deploying"}}))),
            Change::StatusOnly
        );
        // A new resourceVersion alone (e.g. a re-list) is no change.
        assert_eq!(
            change(
                &base,
                &job(1, json!({"metadata": {"resourceVersion": "9"}}))
            ),
            Change::Unchanged
        );
        for c in [Change::New, Change::Spec, Change::Metadata] {
            assert!(c.needs_reconcile(), "{c:?}");
        }
        for c in [Change::StatusOnly, Change::Unchanged] {
            assert!(!c.needs_reconcile(), "{c:?}");
        }
    }

    #[test]
    fn a_job_without_generation_is_always_reconciled() {
        let mut a = job(1, json!({}));
        a.metadata.generation = None;
        assert_eq!(change(&a, &a.clone()), Change::Spec);
    }

    #[test]
    fn a_recreated_job_with_the_same_name_is_a_change() {
        let a = job(1, json!({}));
        let b = job(1, json!({"metadata": {"uid": "u2"}}));
        assert_eq!(change(&a, &b), Change::Metadata);
    }

    #[test]
    fn the_filter_passes_changes_and_forgets_deleted_jobs() {
        let mut changes = JobChanges::default();
        let base = job(1, json!({}));
        let (obj, c) = changes.admit(Event::InitApply(base.clone()));
        assert!(obj.is_some());
        assert_eq!(c, Some(Change::New));
        let status = job(1, json!({"status": {"phase": "Deploying"}}));
        let (obj, c) = changes.admit(Event::Apply(status.clone()));
        assert!(obj.is_none());
        assert_eq!(c, Some(Change::StatusOnly));
        let (obj, c) = changes.admit(Event::Apply(job(2, json!({}))));
        assert!(obj.is_some());
        assert_eq!(c, Some(Change::Spec));
        let (obj, c) = changes.admit(Event::Init);
        assert!(obj.is_none() && c.is_none());
        let (obj, c) = changes.admit(Event::Delete(base.clone()));
        assert!(obj.is_none() && c.is_none());
        let (obj, c) = changes.admit(Event::Apply(base));
        assert!(obj.is_some());
        assert_eq!(c, Some(Change::New));
    }
}
