//! [`RedisStore`]: lookupJoin's Redis client on the `redis` crate (sync API): one `MGET` per
//! batch over one connection, re-opened when it breaks; AUTH (`redis://:password@...`, ACL
//! `redis://user:password@...`) and the database from the URL; `rediss://` is TLS over
//! rustls, trusting the system roots or the CA certificates in [`CA_FILE_ENV`]'s file.

use super::{scrub, url_secret, LookupError, LookupStore};
use ::redis::{Client, ConnectionAddr, RedisError, TlsCertificates};
use std::path::{Path, PathBuf};
use std::time::Duration;
use weir_crds::pipeline::redact_url;
use weir_expr::Value;

/// Environment variable naming a PEM file of CA certificates that `rediss://` stores must be
/// signed by (instead of the system's roots), e.g. a private CA mounted from a Secret.
pub const CA_FILE_ENV: &str = "WEIR_REDIS_CA_FILE";

/// Connect, read and write timeout.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The CA file [`CA_FILE_ENV`] names, if set.
pub fn ca_file_from_env() -> Option<PathBuf> {
    std::env::var_os(CA_FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A Redis store: values are JSON strings (a value that is not JSON is returned as a string).
pub struct RedisStore {
    client: Client,
    /// `redis[s]://host:port/db`, for messages.
    name: String,
    /// The URL's password, removed from the client's messages.
    password: Option<String>,
    conn: Option<::redis::Connection>,
}

impl RedisStore {
    /// A store for `url` (`redis://` or `rediss://`); `ca_file` replaces the system roots for
    /// TLS. Checks the URL and reads the CA file; connects on the first lookup.
    pub fn open(url: &str, ca_file: Option<&Path>) -> Result<Self, LookupError> {
        let invalid = |e: RedisError| LookupError::InvalidUrl {
            url: redact_url(url),
            message: scrub(e.to_string(), url_secret(url)),
        };
        let tls = url.starts_with("rediss://");
        let client = match ca_file.filter(|_| tls) {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| LookupError::CaFile {
                    env: CA_FILE_ENV,
                    path: path.display().to_string(),
                    source,
                })?;
                let certs = TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                Client::build_with_tls(url, certs).map_err(invalid)?
            }
            None => Client::open(url).map_err(invalid)?,
        };
        if tls {
            // rustls needs a process-wide crypto provider; ring is the one compiled in (an
            // error only means one is installed already)
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let info = client.get_connection_info();
        let scheme = match info.addr() {
            ConnectionAddr::TcpTls { .. } => "rediss",
            _ => "redis",
        };
        let name = format!("{scheme}://{}/{}", info.addr(), info.redis_settings().db());
        let password = info.redis_settings().password().map(str::to_string);
        Ok(RedisStore {
            client,
            name,
            password,
            conn: None,
        })
    }

    /// The store as shown in messages: `redis[s]://host:port/db`, without credentials.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn error(&self, action: &'static str, e: &RedisError) -> LookupError {
        LookupError::Store {
            store: self.name.clone(),
            action,
            message: scrub(e.to_string(), self.password.as_deref()),
        }
    }

    /// The open connection, or a new one (TCP, TLS handshake, AUTH, SELECT).
    fn connection(&mut self) -> Result<&mut ::redis::Connection, LookupError> {
        if self.conn.is_none() {
            let conn = self
                .client
                .get_connection_with_timeout(TIMEOUT)
                .map_err(|e| self.error("connect", &e))?;
            conn.set_read_timeout(Some(TIMEOUT))
                .and_then(|()| conn.set_write_timeout(Some(TIMEOUT)))
                .map_err(|e| self.error("connect", &e))?;
            self.conn = Some(conn);
        }
        match self.conn.as_mut() {
            Some(conn) => Ok(conn),
            None => Err(LookupError::Store {
                store: self.name.clone(),
                action: "connect",
                message: "not connected".into(),
            }),
        }
    }

    /// One `MGET`; the connection is dropped on any error (it may be out of step).
    fn mget(&mut self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, LookupError> {
        let conn = self.connection()?;
        let res = ::redis::cmd("MGET")
            .arg(keys)
            .query::<Vec<Option<Vec<u8>>>>(conn);
        res.map_err(|e| {
            self.conn = None;
            self.error("MGET", &e)
        })
    }
}

impl LookupStore for RedisStore {
    fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<Value>>, LookupError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let reused = self.conn.is_some();
        let values = match self.mget(keys) {
            // a kept connection may have been closed by the server (timeout, restart): one
            // more try on a new one (MGET only reads)
            Err(LookupError::Store { action: "MGET", .. }) if reused => self.mget(keys)?,
            other => other?,
        };
        if values.len() != keys.len() {
            return Err(LookupError::Store {
                store: self.name.clone(),
                action: "MGET",
                message: format!("{} values for {} keys", values.len(), keys.len()),
            });
        }
        Ok(values
            .into_iter()
            .map(|v| {
                v.map(|bytes| {
                    let text = String::from_utf8_lossy(&bytes);
                    Value::from_json(&text).unwrap_or_else(|_| Value::str(&text))
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_store_without_credentials() {
        let s = RedisStore::open("redis://10.0.0.1:6380/2", None).unwrap();
        assert_eq!(s.name(), "redis://10.0.0.1:6380/2");
        let s = RedisStore::open("redis://cache", None).unwrap();
        assert_eq!(s.name(), "redis://cache:6379/0");
        let s = RedisStore::open("redis://app:pw@cache:7000/1", None).unwrap();
        assert_eq!(s.name(), "redis://cache:7000/1");
        assert_eq!(s.password.as_deref(), Some("pw"));
        let s = RedisStore::open("rediss://:pw@cache", None).unwrap();
        assert_eq!(s.name(), "rediss://cache:6379/0");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let e = RedisStore::open("rediss://cache", Some(Path::new("/nonexistent/ca.pem")))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("/nonexistent/ca.pem") && e.contains(CA_FILE_ENV),
            "{e}"
        );
        // a plain redis:// store does not use it
        assert!(RedisStore::open("redis://cache", Some(Path::new("/nonexistent"))).is_ok());
    }

    #[test]
    fn an_unreachable_store_is_an_error_naming_it() {
        // a port nothing listens on: bind one, then close it
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = RedisStore::open(&format!("redis://:hunter2@127.0.0.1:{port}"), None).unwrap();
        let e = s.get_many(&["k".into()]).unwrap_err().to_string();
        assert!(
            e.contains(&format!("redis://127.0.0.1:{port}/0: connect failed")),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
    }
}
