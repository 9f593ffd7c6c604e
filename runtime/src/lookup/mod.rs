//! The external key-value stores lookupJoin reads: the batched [`LookupStore`] trait, its
//! errors, and [`open`], which builds an operator's store from its spec ([`redis`]).

pub mod redis;

use weir_crds::pipeline::{lookup_redis_url_env, LookupStoreSpec};
use weir_expr::Value;

/// An external key-value store answering lookups in batches.
pub trait LookupStore: Send {
    /// The values of `keys` (`None` for a missing key), in order, fetched in one round trip;
    /// `Err` if the store cannot be reached or refuses (the caller retries later).
    fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Value>>, LookupError>;
}

/// Why a lookup store cannot be built or cannot answer. No message contains a password: a
/// store is named by `scheme://host:port/db`, a URL by its redacted form.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The spec's URL (or the one in the environment) is not a usable Redis URL.
    #[error("invalid Redis URL '{url}': {message}")]
    InvalidUrl {
        /// The URL with its password replaced by `***`.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// `store.redisUrlSecret` is set but the environment variable carrying it is not.
    #[error(
        "store.redisUrlSecret (Secret '{secret}', key '{key}') is passed to the runtime as the \
         environment variable {env}, which is not set (the operator sets it in the job's pods; \
         set it yourself to run the job elsewhere)"
    )]
    MissingUrlEnv {
        /// The environment variable, `WEIR_LOOKUP_<OPERATOR>_REDIS_URL`.
        env: String,
        /// The Secret's name.
        secret: String,
        /// The key within the Secret.
        key: String,
    },
    /// The CA file named by [`redis::CA_FILE_ENV`] cannot be read.
    #[error("reading the Redis CA certificates {path} ({env}): {source}")]
    CaFile {
        /// The environment variable naming the file.
        env: &'static str,
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store failed at `action` (connecting, authenticating, a command).
    #[error("{store}: {action} failed: {message}")]
    Store {
        /// The store, e.g. `redis://10.0.0.1:6379/0` (never with credentials).
        store: String,
        /// What was being done, e.g. `connect` or `MGET`.
        action: &'static str,
        /// The client's message, with the password removed.
        message: String,
    },
}

/// The store lookupJoin operator `operator` reads, per its `store` spec: the URL from
/// `store.redis`, or from the environment variable [`lookup_redis_url_env`] names when the
/// spec has `store.redisUrlSecret`. Does not connect (that happens on the first lookup).
/// Returns the spec field the error is about along with it.
pub fn open(
    operator: &str,
    store: &LookupStoreSpec,
) -> Result<Box<dyn LookupStore>, (&'static str, LookupError)> {
    let (field, url) = match (&store.redis, &store.redis_url_secret) {
        (Some(url), _) => ("store.redis", url.clone()),
        (None, Some(secret)) => {
            let env = lookup_redis_url_env(operator);
            let url = std::env::var(&env).ok().filter(|u| !u.trim().is_empty());
            let url = url.ok_or_else(|| {
                (
                    "store.redisUrlSecret",
                    LookupError::MissingUrlEnv {
                        env,
                        secret: secret.name.clone(),
                        key: secret.key.clone(),
                    },
                )
            })?;
            ("store.redisUrlSecret", url.trim().to_string())
        }
        (None, None) => {
            return Err((
                "store",
                LookupError::InvalidUrl {
                    url: String::new(),
                    message: "set store.redis or store.redisUrlSecret".into(),
                },
            ))
        }
    };
    let ca = redis::ca_file_from_env();
    let store = redis::RedisStore::open(&url, ca.as_deref()).map_err(|e| (field, e))?;
    Ok(Box::new(store))
}

/// The part of `url` that [`weir_crds::pipeline::redact_url`] hides: the password, or a
/// user-info without `:`.
fn url_secret(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let (userinfo, _) = rest.rsplit_once('@')?;
    Some(userinfo.split_once(':').map_or(userinfo, |(_, pw)| pw))
}

/// `message` with every occurrence of `secret` (if non-empty) replaced by `***`.
fn scrub(message: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() && message.contains(s) => message.replace(s, "***"),
        _ => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_crds::pipeline::SecretKeyRef;

    #[test]
    fn a_secret_url_comes_from_the_operators_environment_variable() {
        let spec = LookupStoreSpec {
            redis_url_secret: Some(SecretKeyRef {
                name: "redis-creds".into(),
                key: "url".into(),
            }),
            ..LookupStoreSpec::default()
        };
        // an operator name no other test uses, so that the variable is unset
        let Err((field, e)) = open("lookup-env-unset", &spec) else {
            panic!("opened a store without its URL");
        };
        assert_eq!(field, "store.redisUrlSecret");
        let msg = e.to_string();
        assert!(
            msg.contains("WEIR_LOOKUP_LOOKUP_ENV_UNSET_REDIS_URL")
                && msg.contains("redis-creds")
                && msg.contains("store.redisUrlSecret"),
            "{msg}"
        );
    }

    #[test]
    fn errors_never_show_the_password() {
        let spec = LookupStoreSpec {
            redis: Some("redis://admin:s3cret@:notaport".into()),
            ..LookupStoreSpec::default()
        };
        let Err((field, e)) = open("f", &spec) else {
            panic!("opened a store with a bad URL");
        };
        assert_eq!(field, "store.redis");
        let msg = e.to_string();
        assert!(!msg.contains("s3cret"), "{msg}");
        assert!(msg.contains("admin:***@"), "{msg}");
        assert_eq!(
            scrub("auth with s3cret failed".into(), Some("s3cret")),
            "auth with *** failed"
        );
        assert_eq!(url_secret("redis://u:p@ss@h:1/0"), Some("p@ss"));
        assert_eq!(url_secret("rediss://tok@h"), Some("tok"));
        assert_eq!(url_secret("redis://h:1"), None);
    }
}
