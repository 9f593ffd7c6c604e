//! Keeps the alert engine's state in the ConfigMap `weir-alert-state` (key `state.json`) in
//! the operator's namespace, so an operator restart does not page again.

use crate::alerting::engine::EngineState;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use std::collections::BTreeMap;

/// Name of the ConfigMap.
pub const STATE_CONFIG_MAP: &str = "weir-alert-state";
/// Key holding the JSON state.
pub const STATE_KEY: &str = "state.json";
/// Key holding state that could not be read at start, kept rather than overwritten.
pub const UNREADABLE_KEY: &str = "state.json.unreadable";

/// Loading or saving the state failed.
#[derive(Debug, thiserror::Error)]
pub enum StateStoreError {
    /// Reading the ConfigMap failed.
    #[error("reading ConfigMap {namespace}/{STATE_CONFIG_MAP} failed")]
    Read {
        /// Namespace.
        namespace: String,
        /// The cause.
        source: kube::Error,
    },
    /// Writing the ConfigMap failed.
    #[error("writing ConfigMap {namespace}/{STATE_CONFIG_MAP} failed")]
    Write {
        /// Namespace.
        namespace: String,
        /// The cause.
        source: kube::Error,
    },
    /// The state could not be serialised.
    #[error("serialising the alert engine state failed")]
    Encode {
        /// The cause.
        source: crate::alerting::engine::StateError,
    },
}

/// The persisted state of the alert engine.
pub struct StateStore {
    api: Api<ConfigMap>,
    namespace: String,
    /// The JSON last written or read, to skip writes that change nothing.
    last_saved: Option<String>,
    /// State found at start that could not be loaded; written back under [`UNREADABLE_KEY`].
    unreadable: Option<String>,
}

/// What was found at start.
#[derive(Debug, PartialEq)]
pub enum Loaded {
    /// No saved state (first start).
    Empty,
    /// The saved state.
    State(EngineState),
    /// Saved state that cannot be used (kept under [`UNREADABLE_KEY`]), and why.
    Unreadable(String),
}

/// Interprets the ConfigMap's data.
pub fn decode(data: Option<&BTreeMap<String, String>>) -> Loaded {
    match data.and_then(|d| d.get(STATE_KEY)) {
        None => Loaded::Empty,
        Some(json) => match EngineState::load(json) {
            Ok(s) => Loaded::State(s),
            Err(e) => Loaded::Unreadable(e.to_string()),
        },
    }
}

impl StateStore {
    /// A store in `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        StateStore {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            last_saved: None,
            unreadable: None,
        }
    }

    /// Loads the saved state; unreadable state is logged, kept aside and replaced by an empty
    /// one.
    pub async fn load(&mut self) -> Result<EngineState, StateStoreError> {
        let cm =
            self.api
                .get_opt(STATE_CONFIG_MAP)
                .await
                .map_err(|source| StateStoreError::Read {
                    namespace: self.namespace.clone(),
                    source,
                })?;
        let data = cm.as_ref().and_then(|c| c.data.as_ref());
        Ok(match decode(data) {
            Loaded::Empty => EngineState::default(),
            Loaded::State(s) => {
                self.last_saved = data.and_then(|d| d.get(STATE_KEY)).cloned();
                s
            }
            Loaded::Unreadable(why) => {
                tracing::error!(
                    configmap = %format!("{}/{STATE_CONFIG_MAP}", self.namespace),
                    error = %why,
                    "alert engine state cannot be loaded; starting empty (kept under {UNREADABLE_KEY})"
                );
                self.unreadable = data.and_then(|d| d.get(STATE_KEY)).cloned();
                EngineState::default()
            }
        })
    }

    /// Saves `state` if it differs from what was last saved; returns whether it wrote.
    pub async fn save(&mut self, state: &EngineState) -> Result<bool, StateStoreError> {
        let json = state
            .save()
            .map_err(|source| StateStoreError::Encode { source })?;
        if self.last_saved.as_deref() == Some(json.as_str()) {
            return Ok(false);
        }
        let mut data = BTreeMap::from([(STATE_KEY.to_string(), json.clone())]);
        if let Some(bad) = &self.unreadable {
            data.insert(UNREADABLE_KEY.to_string(), bad.clone());
        }
        let cm = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": STATE_CONFIG_MAP,
                "labels": {"app.kubernetes.io/managed-by": crate::FIELD_MANAGER},
            },
            "data": data,
        });
        self.api
            .patch(
                STATE_CONFIG_MAP,
                &PatchParams::apply(crate::FIELD_MANAGER).force(),
                &Patch::Apply(&cm),
            )
            .await
            .map_err(|source| StateStoreError::Write {
                namespace: self.namespace.clone(),
                source,
            })?;
        self.last_saved = Some(json);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_round_trips_and_bad_state_is_reported() {
        assert_eq!(decode(None), Loaded::Empty);
        let mut state = EngineState::default();
        state.jobs.insert("ads/ctr".into(), Default::default());
        let json = match state.save() {
            Ok(j) => j,
            Err(e) => panic!("{e}"),
        };
        let data = BTreeMap::from([(STATE_KEY.to_string(), json)]);
        match decode(Some(&data)) {
            Loaded::State(s) => assert!(s.jobs.contains_key("ads/ctr")),
            other => panic!("{other:?}"),
        }
        let bad = BTreeMap::from([(STATE_KEY.to_string(), "{not json".to_string())]);
        assert!(matches!(decode(Some(&bad)), Loaded::Unreadable(_)));
    }
}
