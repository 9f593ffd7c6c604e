//! A real SMTP server for the e2e suites: `aiosmtpd` with `operator/tests/support/smtp_sink.py`
//! on 127.0.0.1 (the operator runs with hostNetwork, so it reaches the test's loopback), saving
//! each message as JSON (envelope, subject, plain and HTML parts). Stopped when dropped.

use anyhow::{bail, Context as _, Result};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running SMTP sink.
pub struct SmtpSink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    child: Child,
}

/// One received message, as `smtp_sink.py` saved it.
#[derive(Clone, Debug)]
pub struct Mail {
    /// Envelope recipients.
    pub rcpt_tos: Vec<String>,
    /// Subject header.
    pub subject: String,
    /// The text/plain part.
    pub plain: String,
    /// The text/html part.
    pub html: String,
}

impl SmtpSink {
    /// Starts the server on a free port and waits until it accepts connections.
    pub fn start(name: &str) -> Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = std::env::temp_dir().join(format!("weir-e2e-smtp-{name}-{port}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let support = crate::repo_root().join("operator/tests/support");
        let mut child = Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "smtp_sink.SaveToDir"])
            .arg(&dir)
            .env("PYTHONPATH", &support)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting aiosmtpd (run tests/install-build-deps.sh)")?;
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("aiosmtpd exited ({status}); is it installed (tests/install-build-deps.sh)?");
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                bail!("aiosmtpd did not listen on 127.0.0.1:{port} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(SmtpSink { port, dir, child })
    }

    /// Every message received so far, in arrival order.
    pub fn mails(&self) -> Vec<Mail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "json"));
        files.sort();
        files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| Mail {
                rcpt_tos: v["rcpt_tos"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
                subject: v["subject"].as_str().unwrap_or_default().to_string(),
                plain: v["plain"].as_str().unwrap_or_default().to_string(),
                html: v["html"].as_str().unwrap_or_default().to_string(),
            })
            .collect()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
