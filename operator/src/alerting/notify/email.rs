//! Email over SMTP (lettre, async on tokio): TLS modes `starttls`, `tls` and `none`, optional
//! authentication, a multipart plain-text + HTML body, subject `[SEVERITY] namespace/job: summary`.

use crate::alerting::model::Notification;
use crate::alerting::notify::{render, Notifier, NotifyError};
use futures::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the SMTP connection is secured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required); default port 587.
    #[default]
    Starttls,
    /// TLS from the start (SMTPS); default port 465.
    Tls,
    /// No encryption (local relays and tests only); default port 25.
    None,
}

/// The operator's SMTP settings (from its configuration; credentials from a Secret).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SmtpSettings {
    /// Server host name (also used to verify its certificate).
    pub host: String,
    /// Port; defaults by TLS mode (587, 465, 25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// TLS mode.
    #[serde(default)]
    pub tls: SmtpTls,
    /// Sender, e.g. `Weir <weir@example.com>`.
    pub from: String,
    /// User name for AUTH, if the server needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Password for AUTH (from a Secret; never logged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Extra CA certificate(s), PEM, to trust besides the public roots (internal relays).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

/// The SMTP credentials Secret lacks a key or holds something unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("SMTP credentials: Secret '{secret}' key '{key}' is {problem}")]
pub struct SmtpSecretError {
    /// Secret name.
    pub secret: String,
    /// Key.
    pub key: String,
    /// `missing`, `empty` or `not UTF-8 text`.
    pub problem: &'static str,
}

impl SmtpSettings {
    /// Takes the AUTH user name and password from a Secret's data (`username_key`,
    /// `password_key`), naming the Secret and key when one is missing.
    pub fn with_credentials_from_secret(
        mut self,
        secret: &str,
        data: &std::collections::BTreeMap<String, Vec<u8>>,
        username_key: &str,
        password_key: &str,
    ) -> Result<Self, SmtpSecretError> {
        let get = |key: &str| {
            let err = |problem| SmtpSecretError {
                secret: secret.to_string(),
                key: key.to_string(),
                problem,
            };
            let bytes = data.get(key).ok_or(err("missing"))?;
            let text = std::str::from_utf8(bytes).map_err(|_| err("not UTF-8 text"))?;
            let text = text.trim_end_matches(['\r', '\n']);
            if text.is_empty() {
                return Err(err("empty"));
            }
            Ok(text.to_string())
        };
        self.username = Some(get(username_key)?);
        self.password = Some(get(password_key)?);
        Ok(self)
    }
}

/// Why an email channel cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EmailConfigError {
    /// An address does not parse.
    #[error("invalid email address '{address}': {reason}")]
    BadAddress {
        /// The address.
        address: String,
        /// Parser message.
        reason: String,
    },
    /// No recipients.
    #[error("no recipients")]
    NoRecipients,
    /// TLS parameters could not be built for the host.
    #[error("cannot set up TLS for SMTP host '{host}': {reason}")]
    Tls {
        /// Host.
        host: String,
        /// Why.
        reason: String,
    },
}

/// Sends email to fixed recipients.
#[derive(Clone)]
pub struct EmailNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

impl std::fmt::Debug for EmailNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailNotifier")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish()
    }
}

fn mailbox(address: &str) -> Result<Mailbox, EmailConfigError> {
    address.parse().map_err(
        |e: lettre::address::AddressError| EmailConfigError::BadAddress {
            address: address.to_string(),
            reason: e.to_string(),
        },
    )
}

impl EmailNotifier {
    /// Builds the SMTP transport and checks the addresses.
    pub fn new(settings: &SmtpSettings, to: &[String]) -> Result<Self, EmailConfigError> {
        if to.is_empty() {
            return Err(EmailConfigError::NoRecipients);
        }
        let to = to
            .iter()
            .map(|a| mailbox(a))
            .collect::<Result<Vec<_>, _>>()?;
        let from = mailbox(&settings.from)?;
        let tls_err = |e: lettre::transport::smtp::Error| EmailConfigError::Tls {
            host: settings.host.clone(),
            reason: e.to_string(),
        };
        let tls_params = || {
            let mut b = TlsParameters::builder(settings.host.clone());
            if let Some(pem) = &settings.ca_pem {
                b = b.add_root_certificate(Certificate::from_pem(pem.as_bytes()).map_err(tls_err)?);
            }
            b.build().map_err(tls_err)
        };
        let (tls, default_port) = match settings.tls {
            SmtpTls::Starttls => (Tls::Required(tls_params()?), 587),
            SmtpTls::Tls => (Tls::Wrapper(tls_params()?), 465),
            SmtpTls::None => (Tls::None, 25),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port.unwrap_or(default_port))
            .tls(tls)
            .timeout(Some(Duration::from_secs(20)));
        if let (Some(user), Some(pass)) = (&settings.username, &settings.password) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        Ok(EmailNotifier {
            transport: builder.build(),
            from,
            to,
        })
    }

    /// The message for a notification.
    pub fn message(&self, n: &Notification) -> Result<Message, NotifyError> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(n.title());
        for to in &self.to {
            b = b.to(to.clone());
        }
        let body = MultiPart::alternative()
            .singlepart(SinglePart::plain(render::plain(n)))
            .singlepart(SinglePart::html(render::html(n)));
        b.multipart(body).map_err(|e| NotifyError::Email {
            message: format!("cannot build message: {e}"),
            retryable: false,
        })
    }
}

impl Notifier for EmailNotifier {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn send<'a>(&'a self, n: &'a Notification) -> BoxFuture<'a, Result<(), NotifyError>> {
        Box::pin(async move {
            let msg = self.message(n)?;
            self.transport
                .send(msg)
                .await
                .map(|_| ())
                .map_err(|e| NotifyError::Email {
                    retryable: !e.is_permanent(),
                    message: format!("send failed: {e}"),
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::model::fixtures::{alert, notification};
    use crate::alerting::model::AlertStatus;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use weir_crds::stream_job::Severity;

    /// A real SMTP server: `python3 -m aiosmtpd` with a handler that saves each message.
    struct SmtpSink {
        child: Child,
        port: u16,
        dir: tempfile::TempDir,
    }

    impl Drop for SmtpSink {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn support_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support")
    }

    fn start_sink(extra_args: &[String]) -> SmtpSink {
        let has_aiosmtpd = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            has_aiosmtpd,
            "the email test needs a real SMTP server: install it with `pip install aiosmtpd` \
             (python3 -m aiosmtpd must work)"
        );
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        let port = match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
            Ok(a) => a.port(),
            Err(e) => panic!("no free port: {e}"),
        };
        let child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(extra_args)
            .args(["-c", "smtp_sink.SaveToDir"])
            .arg(dir.path())
            .env("PYTHONPATH", support_dir())
            .stdout(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => panic!("cannot start python3 -m aiosmtpd: {e}"),
        };
        let sink = SmtpSink { child, port, dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sink;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("aiosmtpd did not listen on 127.0.0.1:{port} within 10 s");
    }

    /// Saved messages: (envelope JSON, raw message).
    fn saved(dir: &Path) -> Vec<(serde_json::Value, String)> {
        let mut out = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        for p in names
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
        {
            let env: serde_json::Value = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or_default();
            let raw = std::fs::read_to_string(p.with_extension("eml")).unwrap_or_default();
            out.push((env, raw));
        }
        out
    }

    #[tokio::test]
    async fn multipart_email_reaches_a_real_smtp_server() {
        let sink = start_sink(&[]);
        let settings = SmtpSettings {
            host: "127.0.0.1".into(),
            port: Some(sink.port),
            tls: SmtpTls::None,
            from: "Weir <weir@example.com>".into(),
            ..Default::default()
        };
        let to = vec![
            "ads-oncall@example.com".to_string(),
            "lead@example.com".to_string(),
        ];
        let n = match EmailNotifier::new(&settings, &to) {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        };
        let note = notification(vec![
            alert(
                "checkpointFailures",
                Severity::Critical,
                AlertStatus::Firing,
            ),
            alert("lagGrowing", Severity::Warning, AlertStatus::Firing),
        ]);
        let sent = n.send(&note).await;
        assert!(sent.is_ok(), "{sent:?}");
        let msgs = wait_saved(sink.dir.path()).await;
        assert_eq!(msgs.len(), 1);
        let (env, raw) = &msgs[0];
        assert_eq!(env["mail_from"], "weir@example.com");
        assert_eq!(
            env["rcpt_tos"],
            serde_json::json!(["ads-oncall@example.com", "lead@example.com"])
        );
        assert_eq!(
            env["subject"],
            "[CRITICAL] ads/ctr-samples: checkpointFailures on ctr-samples (+1 more)"
        );
        assert_eq!(env["content_type"], "multipart/alternative");
        assert_eq!(env["parts"], serde_json::json!(["text/plain", "text/html"]));
        let plain = env["plain"].as_str().unwrap_or_default();
        assert!(
            plain.contains("FIRING · critical checkpointFailures ads/ctr-samples"),
            "{plain}"
        );
        let html = env["html"].as_str().unwrap_or_default();
        assert!(html.contains("<h2>[CRITICAL] ads/ctr-samples"), "{html}");
        assert!(
            raw.contains("To: ads-oncall@example.com, lead@example.com"),
            "{raw}"
        );
    }

    async fn wait_saved(dir: &Path) -> Vec<(serde_json::Value, String)> {
        for _ in 0..50 {
            let msgs = saved(dir);
            if !msgs.is_empty() {
                return msgs;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Vec::new()
    }

    /// A self-signed certificate for `localhost` (end entity, not a CA): (cert file, key file, PEM).
    fn self_signed(dir: &Path) -> (PathBuf, PathBuf, String) {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let status = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=localhost",
            ])
            .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "openssl could not make a test certificate"
        );
        let pem = std::fs::read_to_string(&cert).unwrap_or_default();
        (cert, key, pem)
    }

    async fn send_over_tls(
        mode: SmtpTls,
        flags: [&str; 2],
        trust: bool,
    ) -> (Result<(), NotifyError>, usize) {
        let certs = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        let (cert, key, pem) = self_signed(certs.path());
        let args = [
            flags[0].to_string(),
            cert.display().to_string(),
            flags[1].to_string(),
            key.display().to_string(),
        ];
        let sink = start_sink(&args);
        let settings = SmtpSettings {
            host: "localhost".into(),
            port: Some(sink.port),
            tls: mode,
            from: "weir@example.com".into(),
            ca_pem: trust.then_some(pem),
            ..Default::default()
        };
        let n = match EmailNotifier::new(&settings, &["oncall@example.com".to_string()]) {
            Ok(n) => n,
            Err(e) => panic!("{e}"),
        };
        let sent = n
            .send(&notification(vec![alert(
                "jobFailed",
                Severity::Critical,
                AlertStatus::Firing,
            )]))
            .await;
        let count = if sent.is_ok() {
            wait_saved(sink.dir.path()).await.len()
        } else {
            saved(sink.dir.path()).len()
        };
        (sent, count)
    }

    #[tokio::test]
    async fn starttls_and_implicit_tls_verify_the_server_certificate() {
        let (sent, n) = send_over_tls(SmtpTls::Starttls, ["--tlscert", "--tlskey"], true).await;
        assert!(sent.is_ok(), "STARTTLS: {sent:?}");
        assert_eq!(n, 1);
        let (sent, n) = send_over_tls(SmtpTls::Tls, ["--smtpscert", "--smtpskey"], true).await;
        assert!(sent.is_ok(), "SMTPS: {sent:?}");
        assert_eq!(n, 1);
        let (sent, n) = send_over_tls(SmtpTls::Starttls, ["--tlscert", "--tlskey"], false).await;
        assert!(sent.is_err(), "an untrusted certificate must be refused");
        assert_eq!(n, 0);
    }

    #[test]
    fn credentials_come_from_a_secret_naming_missing_keys() {
        let data = std::collections::BTreeMap::from([
            ("username".to_string(), b"weir".to_vec()),
            ("password".to_string(), b"s3cret\n".to_vec()),
        ]);
        let s = SmtpSettings::default()
            .with_credentials_from_secret("smtp", &data, "username", "password");
        let s = s.unwrap_or_default();
        assert_eq!(
            (s.username.as_deref(), s.password.as_deref()),
            (Some("weir"), Some("s3cret"))
        );
        let e =
            SmtpSettings::default().with_credentials_from_secret("smtp", &data, "user", "password");
        assert_eq!(
            e.err().map(|e| e.to_string()),
            Some("SMTP credentials: Secret 'smtp' key 'user' is missing".into())
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_retryable_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(1);
        let settings = SmtpSettings {
            host: "127.0.0.1".into(),
            port: Some(port),
            tls: SmtpTls::None,
            from: "weir@example.com".into(),
            ..Default::default()
        };
        let n = EmailNotifier::new(&settings, &["a@example.com".to_string()]);
        let e = match n {
            Ok(n) => n
                .send(&notification(vec![alert(
                    "x",
                    Severity::Info,
                    AlertStatus::Firing,
                )]))
                .await
                .err(),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(e.map(|e| e.retryable()), Some(true));
    }

    #[test]
    fn bad_addresses_are_named() {
        let settings = SmtpSettings {
            host: "smtp.example.com".into(),
            from: "weir@example.com".into(),
            ..Default::default()
        };
        let e = EmailNotifier::new(&settings, &["not an address".to_string()]).err();
        assert!(
            matches!(e, Some(EmailConfigError::BadAddress { ref address, .. }) if address == "not an address"),
            "{e:?}"
        );
        assert_eq!(
            EmailNotifier::new(&settings, &[]).err(),
            Some(EmailConfigError::NoRecipients)
        );
    }
}
