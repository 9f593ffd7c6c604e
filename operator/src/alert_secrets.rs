//! Reads what notifiers need from the cluster: the Secrets an AlertSubscription refers to, and
//! the operator's SMTP settings (flags, with AUTH credentials from a Secret).

use crate::alerting::notify::email::{SmtpSettings, SmtpTls};
use crate::alerting::notify::SecretData;
use crate::config::RunConfig;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::Client;
use std::collections::{BTreeMap, BTreeSet};

/// Keys of the SMTP credentials Secret (`WEIR_SMTP_SECRET`).
pub const SMTP_USERNAME_KEY: &str = "username";
/// See [`SMTP_USERNAME_KEY`].
pub const SMTP_PASSWORD_KEY: &str = "password";

/// Reading Secrets or building the SMTP settings failed.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The API refused or failed a read (a missing Secret is not an error).
    #[error("reading Secret {namespace}/{name} failed")]
    ReadSecret {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// The cause.
        source: kube::Error,
    },
    /// `WEIR_SMTP_SECRET` is not `namespace/name`.
    #[error("WEIR_SMTP_SECRET must be namespace/name, got '{0}'")]
    SmtpSecretRef(String),
    /// The SMTP Secret does not exist.
    #[error("SMTP credentials Secret {namespace}/{name} not found")]
    SmtpSecretMissing {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The SMTP Secret lacks a key or holds an unusable value.
    #[error(transparent)]
    SmtpCredentials(#[from] crate::alerting::notify::email::SmtpSecretError),
    /// Host set without a sender address, or the other way round.
    #[error("SMTP settings need both WEIR_SMTP_HOST and WEIR_SMTP_FROM")]
    SmtpIncomplete,
}

/// A Secret's `data` decoded to bytes (`stringData` is folded into `data` by the API server).
pub fn secret_data(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret
        .data
        .as_ref()
        .map(|d| d.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
        .unwrap_or_default()
}

/// Reads the named Secrets of one namespace; missing ones are left out (the resolver then
/// reports "Secret not found" for the channels that need them).
pub async fn read_secrets(
    client: &Client,
    namespace: &str,
    names: &BTreeSet<String>,
) -> Result<SecretData, SecretsError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut out = SecretData::new();
    for name in names {
        let secret = api
            .get_opt(name)
            .await
            .map_err(|source| SecretsError::ReadSecret {
                namespace: namespace.to_string(),
                name: name.clone(),
                source,
            })?;
        if let Some(s) = secret {
            out.insert(name.clone(), secret_data(&s));
        }
    }
    Ok(out)
}

/// The SMTP settings from the flags, without credentials; `None` when no host is set.
pub fn smtp_settings(config: &RunConfig) -> Result<Option<SmtpSettings>, SecretsError> {
    let host = config.smtp_host.clone().filter(|h| !h.is_empty());
    let from = config.smtp_from.clone().filter(|f| !f.is_empty());
    let (host, from) = match (host, from) {
        (None, _) => return Ok(None),
        (Some(h), Some(f)) => (h, f),
        (Some(_), None) => return Err(SecretsError::SmtpIncomplete),
    };
    let tls = match config.smtp_tls.as_str() {
        "tls" => SmtpTls::Tls,
        "none" => SmtpTls::None,
        _ => SmtpTls::Starttls,
    };
    Ok(Some(SmtpSettings {
        host,
        port: config.smtp_port,
        tls,
        from,
        ..SmtpSettings::default()
    }))
}

/// Splits `namespace/name`.
pub fn parse_secret_ref(text: &str) -> Result<(String, String), SecretsError> {
    match text.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(SecretsError::SmtpSecretRef(text.to_string())),
    }
}

/// The SMTP settings with AUTH credentials read from `WEIR_SMTP_SECRET` (read on every call,
/// so rotated credentials are picked up).
pub async fn smtp_with_credentials(
    client: &Client,
    config: &RunConfig,
) -> Result<Option<SmtpSettings>, SecretsError> {
    let Some(settings) = smtp_settings(config)? else {
        return Ok(None);
    };
    let Some(secret_ref) = config.smtp_secret.as_deref().filter(|s| !s.is_empty()) else {
        return Ok(Some(settings));
    };
    let (namespace, name) = parse_secret_ref(secret_ref)?;
    let data = read_secrets(client, &namespace, &BTreeSet::from([name.clone()])).await?;
    let data = data
        .get(&name)
        .ok_or_else(|| SecretsError::SmtpSecretMissing {
            namespace: namespace.clone(),
            name: name.clone(),
        })?;
    Ok(Some(settings.with_credentials_from_secret(
        &format!("{namespace}/{name}"),
        data,
        SMTP_USERNAME_KEY,
        SMTP_PASSWORD_KEY,
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> RunConfig {
        let mut all = vec!["weir-operator", "run"];
        all.extend_from_slice(args);
        match crate::config::Cli::try_parse_from(all) {
            Ok(crate::config::Cli {
                command: crate::config::Command::Run(c),
            }) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn smtp_settings_come_from_the_flags() {
        assert_eq!(smtp_settings(&config(&[])).ok(), Some(None));
        let s = smtp_settings(&config(&[
            "--smtp-host",
            "mail",
            "--smtp-from",
            "weir@example.com",
            "--smtp-tls",
            "none",
            "--smtp-port",
            "2525",
        ]));
        let s = match s {
            Ok(Some(s)) => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (s.host.as_str(), s.port, s.tls),
            ("mail", Some(2525), SmtpTls::None)
        );
        assert!(matches!(
            smtp_settings(&config(&["--smtp-host", "mail"])),
            Err(SecretsError::SmtpIncomplete)
        ));
    }

    #[test]
    fn secret_refs_need_namespace_and_name() {
        assert_eq!(
            parse_secret_ref("weir-system/smtp").ok(),
            Some(("weir-system".to_string(), "smtp".to_string()))
        );
        for bad in ["smtp", "/smtp", "ns/", "a/b/c"] {
            assert!(parse_secret_ref(bad).is_err(), "{bad}");
        }
    }
}
