//! The job as this controller's last status patch left it, for as long as the controller's
//! cache does not show that patch yet. A reconcile computes the new status from the cached
//! job; right after a patch the watch may not have brought the patched object, so the next
//! reconcile (often triggered by the children the previous one created) started from the old
//! status: it recomputed conditions with new transition times, patched with a stale
//! resourceVersion, lost the optimistic-concurrency race against its own earlier write, and
//! had to re-read and rebase. Now the patch response (the object as stored) is remembered
//! together with the resourceVersion of the cached object the patch was computed from; while
//! the cache still shows that object, reconciles start from the remembered one instead. Once
//! the cache has moved on, the entry is dropped, so memory is only held for writes in flight.

use kube::api::DynamicObject;
use std::collections::HashMap;
use std::sync::Mutex;

/// A status patch as the API server stored it.
#[derive(Clone, Debug, PartialEq)]
struct Written {
    /// resourceVersion of the cached object the patch was computed from.
    based_on: String,
    /// resourceVersion of the object after the patch.
    version: Option<String>,
    /// `status` after the patch.
    status: serde_json::Value,
}

/// `cached` with the status and resourceVersion of the last patch, if `written` was computed
/// from exactly this cached object (so the cache does not show it yet); `None` otherwise.
fn fresher(written: &Written, cached: &DynamicObject) -> Option<DynamicObject> {
    if cached.metadata.resource_version.as_deref() != Some(written.based_on.as_str()) {
        return None;
    }
    let mut obj = cached.clone();
    obj.metadata.resource_version = written.version.clone();
    match obj.data.as_object_mut() {
        Some(data) => {
            data.insert("status".into(), written.status.clone());
        }
        None => return None,
    }
    Some(obj)
}

/// The last status patch per job (`namespace/name`) not yet seen in the cache.
#[derive(Debug, Default)]
pub struct StatusMemory {
    written: Mutex<HashMap<String, Written>>,
}

impl StatusMemory {
    /// The job to reconcile: `cached`, or, if the cache does not show this controller's last
    /// status patch yet, `cached` with that patch's status and resourceVersion.
    pub fn freshest(&self, key: &str, cached: &DynamicObject) -> Option<DynamicObject> {
        let mut written = self.written.lock().ok()?;
        let fresher = fresher(written.get(key)?, cached);
        if fresher.is_none() {
            // The cache has moved on (it shows the patch, or a newer write).
            written.remove(key);
        }
        fresher
    }

    /// Remembers a status patch computed from the job at `patched_from` (the cached object,
    /// or one [`StatusMemory::freshest`] returned) that the API server answered with
    /// `stored`.
    pub fn record(&self, key: &str, patched_from: Option<String>, stored: &DynamicObject) {
        let Ok(mut written) = self.written.lock() else {
            return;
        };
        // Patched from a remembered patch: the cache is still where that one was based.
        let based_on = match written.get(key) {
            Some(w) if w.version.is_some() && w.version == patched_from => Some(w.based_on.clone()),
            _ => patched_from,
        };
        match (based_on, stored.data.get("status")) {
            (Some(based_on), Some(status)) => {
                written.insert(
                    key.to_string(),
                    Written {
                        based_on,
                        version: stored.metadata.resource_version.clone(),
                        status: status.clone(),
                    },
                );
            }
            _ => {
                written.remove(key);
            }
        }
    }

    /// Forgets job `key` (deleted).
    pub fn forget(&self, key: &str) {
        if let Ok(mut written) = self.written.lock() {
            written.remove(key);
        }
    }

    /// How many patches are remembered (not yet seen in the cache).
    pub fn len(&self) -> usize {
        self.written.lock().map(|w| w.len()).unwrap_or(0)
    }

    /// Whether no patch is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(rv: &str, status: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "weir.dev/v1alpha1", "kind": "StreamJob",
            "metadata": {"name": "j", "namespace": "n", "resourceVersion": rv},
            "spec": {"image": "i"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_stale_cache_is_read_through_the_last_patch() {
        let memory = StatusMemory::default();
        let cached = job("5", json!({}));
        assert!(memory.freshest("n/j", &cached).is_none());
        let stored = job("6", json!({"phase": "Deploying"}));
        memory.record("n/j", Some("5".into()), &stored);
        // The cache still shows version 5: reconcile from the patched object.
        let fresh = memory.freshest("n/j", &cached).expect("fresher");
        assert_eq!(fresh.metadata.resource_version.as_deref(), Some("6"));
        assert_eq!(fresh.data["status"]["phase"], "Deploying");
        assert_eq!(fresh.data["spec"]["image"], "i");
        assert!(memory.freshest("n/k", &cached).is_none());
        // A patch computed from the remembered one: the cache is still at version 5.
        memory.record(
            "n/j",
            Some("6".into()),
            &job("7", json!({"phase": "Failed"})),
        );
        let fresh = memory.freshest("n/j", &cached).expect("fresher");
        assert_eq!(fresh.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(fresh.data["status"]["phase"], "Failed");
        // The cache moved on: use it, and forget the patch.
        let caught_up = job("6", json!({"phase": "Deploying"}));
        assert!(memory.freshest("n/j", &caught_up).is_none());
        assert!(memory.is_empty());
        assert!(memory.freshest("n/j", &cached).is_none());
    }

    #[test]
    fn nothing_is_remembered_without_a_version_and_deleted_jobs_are_forgotten() {
        let memory = StatusMemory::default();
        let stored = job("6", json!({"phase": "Deploying"}));
        memory.record("n/j", None, &stored);
        assert!(memory.is_empty());
        memory.record("n/j", Some("5".into()), &stored);
        assert_eq!(memory.len(), 1);
        memory.forget("n/j");
        assert!(memory.is_empty());
    }
}
