//! Email over SMTP (lettre, async on tokio): TLS modes `starttls`, `tls` and `none`, optional
//! authentication, a multipart plain-text + HTML body, subject `[SEVERITY] namespace/job: summary`.

use crate::alerting::model::Notification;
use crate::alerting::notify::{render, Notifier, NotifyError};
use futures::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
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
        let tls_params = || {
            TlsParameters::new(settings.host.clone()).map_err(|e| EmailConfigError::Tls {
                host: settings.host.clone(),
                reason: e.to_string(),
            })
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

    fn start_sink() -> SmtpSink {
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
        let sink = start_sink();
        let settings = SmtpSettings {
            host: "127.0.0.1".into(),
            port: Some(sink.port),
            tls: SmtpTls::None,
            from: "Weir <weir@example.com>".into(),
            username: None,
            password: None,
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
        let mut msgs = saved(sink.dir.path());
        for _ in 0..50 {
            if !msgs.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            msgs = saved(sink.dir.path());
        }
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
