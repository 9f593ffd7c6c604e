//! The `weir-operator` binary: parses flags, sets up logging, runs the operator.

use anyhow::Context as _;
use clap::Parser;
use weir_operator::config::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(config) => {
            let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
                .with_context(|| format!("invalid --log-level '{}'", config.log_level))?;
            tracing_subscriber::fmt().with_env_filter(filter).init();
            weir_operator::run::run(config)
                .await
                .context("weir-operator stopped")
        }
    }
}
