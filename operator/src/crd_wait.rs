//! Waits until the CRDs the controllers watch are Established.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use kube::Client;
use std::time::Duration;

/// The CRD of StreamJob.
pub const STREAM_JOB_CRD: &str = "streamjobs.weir.dev";

/// Whether the CRD's `Established` condition is True.
pub fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Polls every two seconds until every CRD in `names` is Established.
pub async fn wait_established(client: Client, names: &[&str]) {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for name in names {
        let mut logged = false;
        loop {
            match api.get_opt(name).await {
                Ok(Some(crd)) if is_established(&crd) => break,
                Ok(_) if !logged => {
                    tracing::info!(crd = name, "waiting for the CRD to be established");
                    logged = true;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(crd = name, error = %crate::events::chain(&e), "reading the CRD failed")
                }
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        tracing::info!(crd = name, "CRD established");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn established_only_with_the_condition_true() {
        let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
            "metadata": {"name": STREAM_JOB_CRD},
            "spec": {"group": "weir.dev", "names": {"kind": "StreamJob", "plural": "streamjobs"},
                     "scope": "Namespaced", "versions": []},
            "status": {"conditions": [
                {"type": "NamesAccepted", "status": "True"},
                {"type": "Established", "status": "False"}]}
        }))
        .expect("crd");
        assert!(!is_established(&crd));
        let mut ok = crd.clone();
        if let Some(cs) = ok.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            cs[1].status = "True".into();
        }
        assert!(is_established(&ok));
    }
}
