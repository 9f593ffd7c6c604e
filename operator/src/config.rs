//! Command-line flags and environment variables of the `weir-operator` binary.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Weir's Kubernetes operator.
#[derive(Debug, Parser)]
#[command(name = "weir-operator", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controllers (after winning leader election, if enabled) and the admin server.
    Run(RunConfig),
}

/// Settings of `weir-operator run`.
#[derive(Clone, Debug, Args)]
pub struct RunConfig {
    /// Namespaces to watch, comma-separated; empty means all namespaces.
    #[arg(
        long,
        env = "WEIR_NAMESPACES",
        value_delimiter = ',',
        default_value = ""
    )]
    pub namespaces: Vec<String>,
    /// Most StreamJobs reconciled at the same time (each holds its children and API
    /// responses in memory while it runs; 0 means no limit).
    #[arg(long, env = "WEIR_MAX_CONCURRENT_RECONCILES", default_value_t = 64)]
    pub max_concurrent_reconciles: u16,
    /// Log filter (trace, debug, info, warn, error, or a tracing env-filter directive).
    #[arg(long, env = "WEIR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Port of the admin HTTP server (/metrics, /healthz, /readyz).
    #[arg(long, env = "WEIR_ADMIN_PORT", default_value_t = 8080)]
    pub admin_port: u16,
    /// Hold a coordination.k8s.io Lease so only one replica runs controllers.
    #[arg(
        long,
        env = "WEIR_LEADER_ELECTION",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub leader_election: bool,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "WEIR_LEASE_NAME", default_value = "weir-operator")]
    pub lease_name: String,
    /// Namespace of the Lease; defaults to the pod's own namespace (or `default`).
    #[arg(long, env = "WEIR_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Identity written into the Lease; defaults to the host name.
    #[arg(long, env = "WEIR_POD_NAME")]
    pub pod_name: Option<String>,
    /// Path of the alert rules file (read by the alert engine).
    #[arg(long, env = "WEIR_ALERT_RULES")]
    pub alert_rules: Option<PathBuf>,
    /// How often job health is scraped and alert rules evaluated (e.g. `15s`).
    #[arg(long, env = "WEIR_SCRAPE_INTERVAL", default_value = "15s")]
    pub scrape_interval: weir_crds::duration::Dur,
    /// SMTP server for email channels; email channels are unusable without it.
    #[arg(long, env = "WEIR_SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// SMTP port; defaults by TLS mode (587 starttls, 465 tls, 25 none).
    #[arg(long, env = "WEIR_SMTP_PORT")]
    pub smtp_port: Option<u16>,
    /// SMTP connection security: `starttls`, `tls` or `none`.
    #[arg(long, env = "WEIR_SMTP_TLS", default_value = "starttls", value_parser = ["starttls", "tls", "none"])]
    pub smtp_tls: String,
    /// Sender address of alert emails, e.g. `Weir <weir@example.com>`.
    #[arg(long, env = "WEIR_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// `namespace/name` of a Secret with keys `username` and `password` for SMTP AUTH.
    #[arg(long, env = "WEIR_SMTP_SECRET")]
    pub smtp_secret: Option<String>,
    /// Link put into notifications (e.g. a Grafana dashboard).
    #[arg(long, env = "WEIR_EXTERNAL_URL", default_value = "")]
    pub external_url: String,
}

impl RunConfig {
    /// The namespaces to watch with blanks removed; empty means all namespaces.
    pub fn watched_namespaces(&self) -> Vec<String> {
        self.namespaces
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect()
    }

    /// The identity to hold the Lease under.
    pub fn holder_identity(&self) -> String {
        self.pod_name
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| format!("weir-operator-{}", std::process::id()))
    }

    /// The namespace to keep the Lease in.
    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "default".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> RunConfig {
        let mut all = vec!["weir-operator", "run"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all) {
            Ok(Cli {
                command: Command::Run(c),
            }) => c,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(&[]);
        assert!(c.watched_namespaces().is_empty());
        assert_eq!(c.admin_port, 8080);
        assert!(c.leader_election);
        assert_eq!(c.lease_name, "weir-operator");
        assert_eq!(c.scrape_interval.0, std::time::Duration::from_secs(15));
        assert_eq!(c.smtp_tls, "starttls");
    }

    #[test]
    fn alerting_flags() {
        let c = parse(&[
            "--scrape-interval",
            "5s",
            "--smtp-host",
            "mail.example.com",
            "--smtp-tls",
            "tls",
            "--smtp-secret",
            "weir-system/smtp",
        ]);
        assert_eq!(c.scrape_interval.0, std::time::Duration::from_secs(5));
        assert_eq!(c.smtp_host.as_deref(), Some("mail.example.com"));
        assert_eq!(c.smtp_secret.as_deref(), Some("weir-system/smtp"));
        let all = ["weir-operator", "run", "--smtp-tls", "ssl"];
        assert!(
            Cli::try_parse_from(all).is_err(),
            "unknown TLS mode is refused"
        );
    }

    #[test]
    fn namespaces_and_leader_election_flag() {
        let c = parse(&[
            "--namespaces",
            "a, b,,c",
            "--leader-election",
            "false",
            "--alert-rules",
            "/etc/weir/alerts/rules.yaml",
        ]);
        assert_eq!(c.watched_namespaces(), vec!["a", "b", "c"]);
        assert!(!c.leader_election);
        assert_eq!(
            c.alert_rules.as_deref(),
            Some(std::path::Path::new("/etc/weir/alerts/rules.yaml"))
        );
    }
}
