//! Settings from the command line and the environment (pure functions over the inputs), and
//! the `weir-runtime bench` command ([`bench`]).

pub mod bench;

use crate::checkpoint::catalog::RestoreFrom;
use std::path::{Path, PathBuf};
use weir_crds::manifest::parse_stream_job;
use weir_crds::StreamJob;

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The manifest file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The manifest is not a valid StreamJob.
    #[error(transparent)]
    Manifest(#[from] weir_crds::manifest::ManifestError),
    /// An environment variable has a bad value.
    #[error("environment variable {name}='{value}': {message}")]
    Env {
        /// Variable.
        name: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        message: String,
    },
}

/// A manifest as loaded from a file.
pub struct LoadedManifest {
    /// The StreamJob.
    pub job: StreamJob,
    /// Whether `spec.checkpoint.storage` was written explicitly (not defaulted).
    pub storage_explicit: bool,
}

/// Reads and parses a StreamJob manifest file.
pub fn load_manifest(path: &Path) -> Result<LoadedManifest, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let name = path.display().to_string();
    let job = parse_stream_job(&name, &text)?;
    Ok(LoadedManifest {
        storage_explicit: storage_is_explicit(&text),
        job,
    })
}

fn storage_is_explicit(text: &str) -> bool {
    use serde::Deserialize;
    for doc in serde_yaml::Deserializer::from_str(text) {
        let Ok(v) = serde_yaml::Value::deserialize(doc) else {
            continue;
        };
        if v.get("kind").and_then(|k| k.as_str()) == Some("StreamJob") {
            return v
                .get("spec")
                .and_then(|s| s.get("checkpoint"))
                .and_then(|c| c.get("storage"))
                .is_some();
        }
    }
    false
}

/// The default local state directory: `$XDG_DATA_HOME/weir/<job>` or `~/.local/share/weir/<job>`.
pub fn default_local_state_dir(
    job: &str,
    xdg_data_home: Option<&str>,
    home: Option<&str>,
) -> PathBuf {
    match (xdg_data_home.filter(|s| !s.is_empty()), home) {
        (Some(x), _) => PathBuf::from(x).join("weir").join(job),
        (None, Some(h)) => PathBuf::from(h).join(".local/share/weir").join(job),
        (None, None) => PathBuf::from(".weir").join(job),
    }
}

/// Checkpoint storage in local mode: `--checkpoint-dir` wins, then an explicit `file://` or
/// `s3://` storage in the spec, else `<state-dir>/checkpoints`.
pub fn local_storage_url(
    checkpoint_dir: Option<&Path>,
    spec_storage: &str,
    storage_explicit: bool,
    state_dir: &Path,
) -> String {
    if let Some(d) = checkpoint_dir {
        return format!("file://{}", absolute(d).display());
    }
    if storage_explicit {
        return spec_storage.to_string();
    }
    format!(
        "file://{}",
        absolute(&state_dir.join("checkpoints")).display()
    )
}

/// `p` made absolute against the current directory.
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|c| c.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Pod-mode settings read from the environment.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSettings {
    /// This pod's ordinal.
    pub ordinal: u32,
    /// Number of pods.
    pub replicas: u32,
    /// Pinned restore point.
    pub restore_from: Option<RestoreFrom>,
    /// `WEIR_ALLOW_NON_RESTORED_STATE`.
    pub allow_non_restored_state: Option<bool>,
    /// Local state directory.
    pub state_dir: PathBuf,
    /// Admin port.
    pub admin_port: u16,
}

/// The ordinal from a StatefulSet pod hostname (`name-3` → 3).
pub fn ordinal_from_hostname(hostname: &str) -> Option<u32> {
    hostname.rsplit_once('-')?.1.parse().ok()
}

/// Reads pod settings through `env` (a lookup such as `std::env::var(..).ok()`).
pub fn pod_settings(env: impl Fn(&str) -> Option<String>) -> Result<PodSettings, ConfigError> {
    let bad = |name: &'static str, value: &str, message: &str| ConfigError::Env {
        name,
        value: value.to_string(),
        message: message.to_string(),
    };
    let ordinal = match env("WEIR_ORDINAL") {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| bad("WEIR_ORDINAL", &v, "expected a number"))?,
        None => {
            let host = env("HOSTNAME").unwrap_or_default();
            ordinal_from_hostname(&host).ok_or_else(|| {
                bad(
                    "HOSTNAME",
                    &host,
                    "WEIR_ORDINAL is unset and the hostname does not end in -<ordinal>",
                )
            })?
        }
    };
    let replicas: u32 = match env("WEIR_REPLICAS") {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| bad("WEIR_REPLICAS", &v, "expected a number"))?,
        None => 1,
    };
    if replicas == 0 || ordinal >= replicas {
        return Err(bad(
            "WEIR_ORDINAL",
            &ordinal.to_string(),
            &format!("must be below WEIR_REPLICAS ({replicas})"),
        ));
    }
    let restore_from = match env("WEIR_RESTORE_FROM") {
        Some(v) if !v.trim().is_empty() => {
            Some(RestoreFrom::parse(&v).map_err(|m| bad("WEIR_RESTORE_FROM", &v, &m))?)
        }
        _ => None,
    };
    let allow_non_restored_state = match env("WEIR_ALLOW_NON_RESTORED_STATE") {
        Some(v) => match v.trim() {
            "true" | "1" | "yes" => Some(true),
            "false" | "0" | "no" | "" => Some(false),
            _ => {
                return Err(bad(
                    "WEIR_ALLOW_NON_RESTORED_STATE",
                    &v,
                    "expected true or false",
                ))
            }
        },
        None => None,
    };
    let admin_port = match env("WEIR_ADMIN_PORT") {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| bad("WEIR_ADMIN_PORT", &v, "expected a port number"))?,
        None => 8081,
    };
    Ok(PodSettings {
        ordinal,
        replicas,
        restore_from,
        allow_non_restored_state,
        state_dir: PathBuf::from(
            env("WEIR_STATE_DIR").unwrap_or_else(|| "/var/lib/weir/state".into()),
        ),
        admin_port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn pod_settings_from_env_and_hostname() {
        let s = pod_settings(env(&[("HOSTNAME", "ads-ctr-2"), ("WEIR_REPLICAS", "3")])).unwrap();
        assert_eq!((s.ordinal, s.replicas, s.admin_port), (2, 3, 8081));
        assert_eq!(s.state_dir, PathBuf::from("/var/lib/weir/state"));
        let s = pod_settings(env(&[
            ("WEIR_ORDINAL", "0"),
            ("WEIR_RESTORE_FROM", "12"),
            ("WEIR_ALLOW_NON_RESTORED_STATE", "true"),
        ]))
        .unwrap();
        assert_eq!(s.restore_from, Some(RestoreFrom::Id(12)));
        assert_eq!(s.allow_non_restored_state, Some(true));
        let e = pod_settings(env(&[("WEIR_ORDINAL", "3"), ("WEIR_REPLICAS", "2")])).unwrap_err();
        assert!(e.to_string().contains("below WEIR_REPLICAS"), "{e}");
        assert!(pod_settings(env(&[("HOSTNAME", "nohyphen")])).is_err());
    }

    #[test]
    fn local_defaults() {
        assert_eq!(
            default_local_state_dir("j", None, Some("/home/u")),
            PathBuf::from("/home/u/.local/share/weir/j")
        );
        assert_eq!(
            default_local_state_dir("j", Some("/x"), Some("/home/u")),
            PathBuf::from("/x/weir/j")
        );
        let st = Path::new("/s");
        assert_eq!(
            local_storage_url(None, "file:///var/lib/weir/checkpoints", false, st),
            "file:///s/checkpoints"
        );
        assert_eq!(
            local_storage_url(None, "file:///data/ck", true, st),
            "file:///data/ck"
        );
        assert_eq!(
            local_storage_url(Some(Path::new("/o")), "file:///data/ck", true, st),
            "file:///o"
        );
    }
}
