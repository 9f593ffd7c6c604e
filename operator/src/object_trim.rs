//! Trimming of the StreamJobs the operator keeps in memory (the controller's cache, the health
//! loop's list): the fields the API server adds for other clients (`managedFields`, kubectl's
//! `last-applied-configuration` annotation) are dropped, since with hundreds of jobs they are
//! most of what would be held.

use kube::api::DynamicObject;

/// The annotation `kubectl apply` (client-side) stores the whole applied manifest in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops `metadata.managedFields` and kubectl's last-applied annotation; nothing the operator
/// reads (spec, status, labels, other annotations, finalizers, resourceVersion) is touched.
pub fn trim_job(obj: &mut DynamicObject) {
    obj.metadata.managed_fields = None;
    if let Some(annotations) = obj.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            obj.metadata.annotations = None;
        }
    }
}

/// [`trim_job`], and of the object's data only `status` is kept: for a job whose spec has
/// already been parsed elsewhere.
pub fn keep_metadata_and_status(obj: &mut DynamicObject) {
    trim_job(obj);
    let status = obj
        .data
        .get_mut("status")
        .map(serde_json::Value::take)
        .unwrap_or(serde_json::Value::Null);
    obj.data = if status.is_null() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "status": status })
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "weir.dev/v1alpha1",
            "kind": "StreamJob",
            "metadata": {
                "name": "j", "namespace": "n", "resourceVersion": "7",
                "finalizers": ["weir.dev/cleanup"],
                "labels": {"team": "ads"},
                "annotations": {LAST_APPLIED: "{\"big\": true}", "keep": "me"},
                "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
            },
            "spec": {"image": "i", "parallelism": 2},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    #[test]
    fn trimming_drops_only_what_other_clients_added() {
        let mut j = job();
        trim_job(&mut j);
        assert_eq!(j.metadata.managed_fields, None);
        let annotations = j.metadata.annotations.clone().unwrap();
        assert_eq!(annotations.len(), 1);
        assert_eq!(annotations["keep"], "me");
        assert_eq!(j.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(j.metadata.finalizers.as_ref().map(Vec::len), Some(1));
        assert_eq!(j.data["spec"]["parallelism"], 2);
        assert_eq!(j.data["status"]["phase"], "Running");
    }

    #[test]
    fn keeping_metadata_and_status_drops_the_spec() {
        let mut j = job();
        keep_metadata_and_status(&mut j);
        assert_eq!(j.data, serde_json::json!({"status": {"phase": "Running"}}));
        assert_eq!(j.metadata.labels.unwrap()["team"], "ads");
        let mut no_status = job();
        no_status.data = serde_json::json!({"spec": {}});
        keep_metadata_and_status(&mut no_status);
        assert_eq!(no_status.data, serde_json::json!({}));
    }
}
