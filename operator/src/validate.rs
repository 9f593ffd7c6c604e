//! Turns a watched object into a checked `StreamJob`: deserialise per object (so one malformed
//! resource cannot break the watch for the others), then run the spec checks of `weir-crds`.
//! Pure: no client.

use crate::alerting::rules::RuleSet;
use weir_crds::manifest::{from_json, ManifestError};
use weir_crds::validate::{describe, validate_job, SpecError};
use weir_crds::StreamJob;

/// Why a StreamJob cannot be deployed as written. The message names the failing field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpecInvalid {
    /// The object does not even deserialise as a StreamJob (a wrong type slipped past the schema).
    #[error("{0}")]
    Malformed(String),
    /// It deserialises, but the graph, expressions or settings are wrong.
    #[error("{}", describe(.0))]
    Invalid(Vec<SpecError>),
}

impl SpecInvalid {
    /// The condition reason: `SpecMalformed` or `SpecInvalid`.
    pub fn reason(&self) -> &'static str {
        match self {
            SpecInvalid::Malformed(_) => "SpecMalformed",
            SpecInvalid::Invalid(_) => "SpecInvalid",
        }
    }
}

/// Deserialises `object` (the full resource as JSON) and validates its name and spec, and its
/// alert overrides against `rules` (the operator's alert rules, when they loaded).
pub fn checked_job(
    object: serde_json::Value,
    rules: Option<&RuleSet>,
) -> Result<StreamJob, SpecInvalid> {
    let job = from_json("StreamJob", object).map_err(|e| match e {
        ManifestError::Schema { path, message, .. } => {
            SpecInvalid::Malformed(format!("{path}: {message}"))
        }
        other => SpecInvalid::Malformed(other.to_string()),
    })?;
    let mut errors = validate_job(&job);
    if let Some(rules) = rules {
        errors.extend(
            rules
                .override_problems(&job.spec.alerting)
                .into_iter()
                .map(|(field, message)| SpecError { field, message }),
        );
    }
    if errors.is_empty() {
        Ok(job)
    } else {
        Err(SpecInvalid::Invalid(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn a_valid_job_passes() {
        let job = checked_job(fixture("job.yaml"), None).expect("valid");
        assert_eq!(job.spec.parallelism, 2);
    }

    #[test]
    fn a_wrong_type_is_malformed_and_names_the_field() {
        let mut obj = fixture("job.yaml");
        obj["spec"]["pipeline"]["operators"][0]["filter"] = serde_json::json!(123);
        let err = checked_job(obj, None).expect_err("malformed");
        assert_eq!(err.reason(), "SpecMalformed");
        assert!(
            err.to_string()
                .contains("spec.pipeline.operators[0].filter"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_input_and_bad_cel_are_invalid_and_name_the_fields() {
        let mut obj = fixture("job.yaml");
        obj["spec"]["pipeline"]["operators"][0]["input"] = serde_json::json!("nowhere");
        obj["spec"]["pipeline"]["operators"][0]["filter"] = serde_json::json!("e.type ==");
        let err = checked_job(obj, None).expect_err("invalid");
        assert_eq!(err.reason(), "SpecInvalid");
        let msg = err.to_string();
        assert!(msg.contains("spec.pipeline.operators[0].input"), "{msg}");
        assert!(msg.contains("spec.pipeline.operators[0].filter"), "{msg}");
    }

    #[test]
    fn what_kubernetes_or_cel_would_refuse_later_is_invalid_now() {
        let rules = match RuleSet::defaults() {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        let mut obj = fixture("job.yaml");
        obj["metadata"]["name"] = serde_json::json!("a".repeat(53));
        obj["spec"]["resources"] = serde_json::json!({"limits": {"memory": "1GB"}});
        obj["spec"]["pipeline"]["operators"][0]["filter"] =
            serde_json::json!("lower(e.type) == 'bid'");
        obj["spec"]["alerting"] = serde_json::json!({"rules": {
            "backpressureHigh": {"warning": 0.95},
            "noSuchRule": {"disabled": true}
        }});
        let err = checked_job(obj, Some(&rules)).expect_err("invalid");
        assert_eq!(err.reason(), "SpecInvalid");
        let msg = err.to_string();
        for field in [
            "metadata.name",
            "spec.resources.limits.memory",
            "spec.pipeline.operators[0].filter",
            "spec.alerting.rules.backpressureHigh.warning",
            "spec.alerting.rules.noSuchRule",
        ] {
            assert!(msg.contains(field), "{field} not named in: {msg}");
        }
        assert!(msg.contains("lower"), "{msg}");
    }

    #[test]
    fn an_unknown_operator_kind_is_invalid() {
        let mut obj = fixture("job.yaml");
        obj["spec"]["pipeline"]["operators"][0] =
            serde_json::json!({"name": "bids", "input": "gen", "filtre": "true"});
        let err = checked_job(obj, None).expect_err("invalid");
        assert!(
            err.to_string().contains("spec.pipeline.operators[0]"),
            "{err}"
        );
    }
}
