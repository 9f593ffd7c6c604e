//! Kafka connection security: TLS and SASL settings of Kafka sources, sinks and repartition
//! topics. Secrets (passwords, private keys, CA certificates) are only referenced, never
//! inline: the operator passes each referenced Secret key to the runtime pods as the
//! environment variable [`secret_env`] names, and the runtime turns them into librdkafka
//! settings.

use crate::pipeline::SecretKeyRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// TLS and SASL for one Kafka connection; unset parts mean plaintext / no authentication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSecurity {
    /// Encrypt the connection with TLS (`security.protocol` `SSL`, or `SASL_SSL` with `sasl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<KafkaTls>,
    /// Authenticate with SASL (`security.protocol` `SASL_PLAINTEXT`, or `SASL_SSL` with `tls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl: Option<KafkaSasl>,
}

/// TLS to the brokers. The broker's certificate is verified, host name included.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTls {
    /// PEM CA certificate(s) that signed the brokers' certificates, from a Secret key; unset uses the system's CA store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
    /// PEM client certificate for mutual TLS, from a Secret key (set together with `keySecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_secret: Option<SecretKeyRef>,
    /// PEM private key (unencrypted) of the client certificate, from a Secret key (set together with `certSecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<SecretKeyRef>,
}

/// A SASL mechanism.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SaslMechanism {
    /// User name and password in clear (use with `tls`).
    #[default]
    #[serde(rename = "PLAIN")]
    Plain,
    /// SCRAM with SHA-256.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// librdkafka's `sasl.mechanism` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials: a user name (inline or from a Secret) and a password from a Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    pub mechanism: SaslMechanism,
    /// User name (set this or `usernameSecret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// User name from a Secret key (set this or `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_secret: Option<SecretKeyRef>,
    /// Password from a Secret key.
    pub password_secret: SecretKeyRef,
}

impl KafkaSecurity {
    /// Every Secret key referenced, with its field path below `security`
    /// (`sasl.passwordSecret`, `tls.caSecret`, ...).
    pub fn secret_refs(&self) -> Vec<(&'static str, &SecretKeyRef)> {
        let mut v = vec![];
        if let Some(t) = &self.tls {
            v.extend(t.ca_secret.as_ref().map(|r| ("tls.caSecret", r)));
            v.extend(t.cert_secret.as_ref().map(|r| ("tls.certSecret", r)));
            v.extend(t.key_secret.as_ref().map(|r| ("tls.keySecret", r)));
        }
        if let Some(s) = &self.sasl {
            v.extend(
                s.username_secret
                    .as_ref()
                    .map(|r| ("sasl.usernameSecret", r)),
            );
            v.push(("sasl.passwordSecret", &s.password_secret));
        }
        v
    }

    /// librdkafka's `security.protocol` for these settings.
    pub fn protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }

    /// Problems of these settings, as `(field below security, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut v = vec![];
        for (field, r) in self.secret_refs() {
            if r.name.trim().is_empty() {
                v.push((format!("{field}.name"), "must not be empty".to_string()));
            }
            if r.key.trim().is_empty() {
                v.push((format!("{field}.key"), "must not be empty".to_string()));
            }
        }
        if let Some(t) = &self.tls {
            if t.cert_secret.is_some() != t.key_secret.is_some() {
                v.push((
                    "tls".to_string(),
                    "set certSecret and keySecret together (a client certificate needs its key)"
                        .to_string(),
                ));
            }
        }
        if let Some(s) = &self.sasl {
            match (&s.username, &s.username_secret) {
                (None, None) => v.push((
                    "sasl.username".to_string(),
                    "set username or usernameSecret".to_string(),
                )),
                (Some(_), Some(_)) => v.push((
                    "sasl.usernameSecret".to_string(),
                    "set username or usernameSecret, not both".to_string(),
                )),
                (Some(u), None) if u.trim().is_empty() => {
                    v.push(("sasl.username".to_string(), "must not be empty".to_string()))
                }
                _ => {}
            }
        }
        v
    }
}

/// The environment variable through which the operator passes Secret key `r` to the runtime:
/// `WEIR_SECRET_<NAME>_<KEY>`, name and key upper-cased with every character other than a
/// letter or digit replaced by `_` (Secret `kafka-client`, key `ca.crt` →
/// `WEIR_SECRET_KAFKA_CLIENT_CA_CRT`).
pub fn secret_env(r: &SecretKeyRef) -> String {
    let snake = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!("WEIR_SECRET_{}_{}", snake(&r.name), snake(&r.key))
}

/// librdkafka properties that carry secrets: they must come from a Secret through `security`,
/// never from `properties` (which are stored in the spec, the job's ConfigMap and logs).
pub fn secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k == "ssl.key.pem"
        || k == "sasl.jaas.config"
        || k == "sasl.oauthbearer.config"
}

/// librdkafka properties that `security` sets, so `properties` must not set them beside it.
pub const SECURITY_PROPERTIES: [&str; 7] = [
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "ssl.ca.pem",
    "ssl.certificate.pem",
    "ssl.key.pem",
];

/// Problems of a Kafka connection's `properties` beside its `security`, as
/// `(field below the connector, message)`.
pub fn property_problems(
    properties: &BTreeMap<String, String>,
    security: Option<&KafkaSecurity>,
) -> Vec<(String, String)> {
    let mut v = vec![];
    for key in properties.keys() {
        if secret_property(key) {
            v.push((
                format!("properties.{key}"),
                "secrets must not be inline: reference a Secret in security (sasl.passwordSecret, tls.keySecret)".to_string(),
            ));
        } else if security.is_some() && SECURITY_PROPERTIES.contains(&key.as_str()) {
            v.push((
                format!("properties.{key}"),
                "is set by security; remove it from properties".to_string(),
            ));
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    #[test]
    fn env_names_are_upper_snake() {
        assert_eq!(
            secret_env(&r("kafka-client", "ca.crt")),
            "WEIR_SECRET_KAFKA_CLIENT_CA_CRT"
        );
    }

    #[test]
    fn protocol_follows_the_parts_set() {
        let mut s = KafkaSecurity::default();
        assert_eq!(s.protocol(), "PLAINTEXT");
        s.tls = Some(KafkaTls::default());
        assert_eq!(s.protocol(), "SSL");
        s.sasl = Some(KafkaSasl {
            mechanism: SaslMechanism::ScramSha512,
            username: Some("u".into()),
            username_secret: None,
            password_secret: r("c", "p"),
        });
        assert_eq!(s.protocol(), "SASL_SSL");
        s.tls = None;
        assert_eq!(s.protocol(), "SASL_PLAINTEXT");
    }

    #[test]
    fn inline_secrets_and_half_settings_are_reported() {
        let props: BTreeMap<String, String> = [
            ("sasl.password".to_string(), "hunter2".to_string()),
            ("security.protocol".to_string(), "SSL".to_string()),
            ("compression.type".to_string(), "zstd".to_string()),
        ]
        .into();
        let sec = KafkaSecurity {
            tls: Some(KafkaTls {
                cert_secret: Some(r("c", "tls.crt")),
                ..KafkaTls::default()
            }),
            sasl: Some(KafkaSasl::default()),
        };
        let p = property_problems(&props, Some(&sec));
        let fields: Vec<&str> = p.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["properties.sasl.password", "properties.security.protocol"]
        );
        assert!(p.iter().all(|(_, m)| !m.contains("hunter2")));
        let fields: Vec<String> = sec.problems().into_iter().map(|(f, _)| f).collect();
        assert!(fields.contains(&"tls".to_string()), "{fields:?}");
        assert!(fields.contains(&"sasl.username".to_string()), "{fields:?}");
        assert!(
            fields.contains(&"sasl.passwordSecret.name".to_string()),
            "{fields:?}"
        );
        // without security, protocol properties are the user's to set
        assert!(property_problems(
            &[("security.protocol".to_string(), "SSL".to_string())].into(),
            None
        )
        .is_empty());
    }
}
