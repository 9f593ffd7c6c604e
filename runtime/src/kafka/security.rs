//! A Kafka connection's `security` (TLS, SASL) as librdkafka settings. Each referenced Secret
//! key is read from the environment variable [`secret_env`] names (the operator sets it from
//! the Secret), or, for local runs, from the file `$WEIR_SECRETS_DIR/<secret>/<key>` (the
//! layout of a Secret mounted as a volume). Values are never logged nor put in messages.

use rdkafka::config::ClientConfig;
use weir_crds::kafka::{secret_env, KafkaSecurity};
use weir_crds::pipeline::SecretKeyRef;

/// A directory holding `<secret>/<key>` files, read when a Secret's environment variable is
/// not set.
pub const SECRETS_DIR_ENV: &str = "WEIR_SECRETS_DIR";

/// Where the value of a Secret key is looked for, and what was found.
fn read_secret(field: &str, r: &SecretKeyRef) -> Result<String, String> {
    let env = secret_env(r);
    if let Ok(v) = std::env::var(&env) {
        return Ok(v);
    }
    let dir = std::env::var_os(SECRETS_DIR_ENV);
    if let Some(dir) = &dir {
        let path = std::path::Path::new(dir).join(&r.name).join(&r.key);
        match std::fs::read_to_string(&path) {
            Ok(v) => return Ok(v),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "security.{field} (Secret '{}', key '{}'): reading {}: {e}",
                    r.name,
                    r.key,
                    path.display()
                ))
            }
            Err(_) => {}
        }
    }
    Err(format!(
        "security.{field} (Secret '{}', key '{}') is passed to the runtime as the environment \
         variable {env}, which is not set{}",
        r.name,
        r.key,
        match dir {
            Some(d) => format!(
                ", and {}/{}/{} does not exist",
                std::path::Path::new(&d).display(),
                r.name,
                r.key
            ),
            None => format!(
                " (for a local run, set it or put the value in ${SECRETS_DIR_ENV}/{}/{})",
                r.name, r.key
            ),
        }
    ))
}

/// Sets `security.protocol`, the TLS and the SASL settings of `security` on `config`. The
/// error names the field and where its value was looked for, never a value.
pub fn apply(config: &mut ClientConfig, security: Option<&KafkaSecurity>) -> Result<(), String> {
    let Some(s) = security else {
        return Ok(());
    };
    config.set("security.protocol", s.protocol());
    if let Some(tls) = &s.tls {
        if let Some(r) = &tls.ca_secret {
            config.set("ssl.ca.pem", read_secret("tls.caSecret", r)?);
        }
        if let Some(r) = &tls.cert_secret {
            config.set("ssl.certificate.pem", read_secret("tls.certSecret", r)?);
        }
        if let Some(r) = &tls.key_secret {
            config.set("ssl.key.pem", read_secret("tls.keySecret", r)?);
        }
    }
    if let Some(sasl) = &s.sasl {
        config.set("sasl.mechanism", sasl.mechanism.as_str());
        let username = match (&sasl.username, &sasl.username_secret) {
            (Some(u), _) => u.clone(),
            (None, Some(r)) => read_secret("sasl.usernameSecret", r)?.trim().to_string(),
            (None, None) => return Err("security.sasl: set username or usernameSecret".into()),
        };
        config.set("sasl.username", username);
        // a trailing newline (a file written with echo) is not part of the password
        let password = read_secret("sasl.passwordSecret", &sasl.password_secret)?;
        config.set(
            "sasl.password",
            password.strip_suffix('\n').unwrap_or(&password),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    // test setup: a failed step should panic with its error
    #![allow(clippy::unwrap_used)]
    use super::*;
    use weir_crds::kafka::{KafkaSasl, KafkaTls, SaslMechanism};

    fn r(name: &str, key: &str) -> SecretKeyRef {
        SecretKeyRef {
            name: name.into(),
            key: key.into(),
        }
    }

    #[test]
    fn settings_come_from_the_secrets_dir_and_a_missing_one_is_named_without_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sec-test-creds")).unwrap();
        std::fs::write(dir.path().join("sec-test-creds/password"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("sec-test-creds/ca.crt"), "PEM").unwrap();
        // only this test reads WEIR_SECRETS_DIR; secret names are unique to it
        std::env::set_var(SECRETS_DIR_ENV, dir.path());
        let mut sec = KafkaSecurity {
            tls: Some(KafkaTls {
                ca_secret: Some(r("sec-test-creds", "ca.crt")),
                ..KafkaTls::default()
            }),
            sasl: Some(KafkaSasl {
                mechanism: SaslMechanism::ScramSha256,
                username: Some("weir".into()),
                username_secret: None,
                password_secret: r("sec-test-creds", "password"),
            }),
        };
        let mut c = ClientConfig::new();
        apply(&mut c, Some(&sec)).unwrap();
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-256"));
        assert_eq!(c.get("sasl.username"), Some("weir"));
        assert_eq!(c.get("sasl.password"), Some("s3cret"));
        assert_eq!(c.get("ssl.ca.pem"), Some("PEM"));

        sec.tls = None;
        if let Some(s) = sec.sasl.as_mut() {
            s.password_secret = r("sec-test-absent", "pw");
        }
        let err = apply(&mut ClientConfig::new(), Some(&sec)).unwrap_err();
        for part in [
            "security.sasl.passwordSecret",
            "'sec-test-absent'",
            "WEIR_SECRET_SEC_TEST_ABSENT_PW",
        ] {
            assert!(err.contains(part), "{part} missing in: {err}");
        }
        let mut none = ClientConfig::new();
        apply(&mut none, None).unwrap();
        assert_eq!(none.get("security.protocol"), None);
    }
}
