//! Loading StreamJob manifests from YAML with errors that name the failing field and line.

use crate::stream_job::{StreamJob, StreamJobSpec};
use serde::Deserialize;

/// A manifest that could not be read as a StreamJob.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The text is not YAML.
    #[error("{source_name}: not valid YAML: {message}")]
    Yaml {
        /// File name or other origin.
        source_name: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// The YAML does not match the StreamJob schema.
    #[error("{source_name}: {path}: {message}")]
    Schema {
        /// File name or other origin.
        source_name: String,
        /// The field path, e.g. `spec.pipeline.operators[1].window.size`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No StreamJob document in the file.
    #[error("{source_name}: no document of kind StreamJob found")]
    NoStreamJob {
        /// File name or other origin.
        source_name: String,
    },
}

/// Parses the first `kind: StreamJob` document of a (possibly multi-document) YAML text.
pub fn parse_stream_job(source_name: &str, text: &str) -> Result<StreamJob, ManifestError> {
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| ManifestError::Yaml {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })?;
        if value.get("kind").and_then(|k| k.as_str()) != Some("StreamJob") {
            continue;
        }
        let json = serde_json::to_value(&value).map_err(|e| ManifestError::Yaml {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })?;
        return from_json(source_name, json);
    }
    Err(ManifestError::NoStreamJob {
        source_name: source_name.to_string(),
    })
}

/// Deserialises a StreamJob from JSON, reporting the failing field path.
pub fn from_json(source_name: &str, json: serde_json::Value) -> Result<StreamJob, ManifestError> {
    serde_path_to_error::deserialize(json).map_err(|e| ManifestError::Schema {
        source_name: source_name.to_string(),
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// Deserialises just a spec from JSON, reporting the failing field path under `spec.`.
pub fn spec_from_json(
    source_name: &str,
    json: serde_json::Value,
) -> Result<StreamJobSpec, ManifestError> {
    serde_path_to_error::deserialize(json).map_err(|e| ManifestError::Schema {
        source_name: source_name.to_string(),
        path: format!("spec.{}", e.path()),
        message: e.inner().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: weir.dev/v1alpha1
kind: StreamJob
metadata: {name: demo}
spec:
  image: weir-runtime:0.1.0
  pipeline:
    sources:
      - {name: gen, generator: {kind: nexmark, count: 10}}
    operators:
      - {name: bids, input: gen, filter: "e.type == 'bid'"}
    sinks:
      - {name: out, input: bids, stdout: {}}
"#;

    #[test]
    fn parses_a_good_manifest() {
        let job = parse_stream_job("job.yaml", GOOD).unwrap();
        assert_eq!(
            job.spec.pipeline.operators[0].filter.as_deref(),
            Some("e.type == 'bid'")
        );
        assert_eq!(job.spec.checkpoint.retain, 3);
    }

    #[test]
    fn bad_duration_names_the_field() {
        let text = GOOD.replace(
            "count: 10}}",
            "count: 10}, eventTime: {field: ts, maxOutOfOrderness: 5x}}",
        );
        let err = parse_stream_job("job.yaml", &text).unwrap_err().to_string();
        assert!(
            err.contains("spec.pipeline.sources[0].eventTime.maxOutOfOrderness"),
            "{err}"
        );
        assert!(err.contains("invalid duration '5x'"), "{err}");
    }

    #[test]
    fn broken_yaml_gives_line() {
        let err = parse_stream_job("job.yaml", "kind: StreamJob\nspec: [unclosed")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("job.yaml: not valid YAML"), "{err}");
        assert!(err.contains("line"), "{err}");
    }
}
