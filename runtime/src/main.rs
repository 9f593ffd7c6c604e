//! `weir-runtime`: run a StreamJob locally, as a pod worker, validate it, or benchmark.

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use weir_runtime::checkpoint::catalog::RestoreFrom;
use weir_runtime::cli::{self as config, LoadedManifest};
use weir_runtime::job::{run_job, JobConfig, Mode};
use weir_runtime::plan::{plan_job, JobPlan};

#[derive(Parser)]
#[command(name = "weir-runtime", version, about = "Weir's streaming runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a job on this machine; restarting the same command restores from the latest checkpoint.
    Run {
        /// The StreamJob manifest.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Local state directory (default: $XDG_DATA_HOME/weir/<job> or ~/.local/share/weir/<job>).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Checkpoint directory, overriding the spec's storage.
        #[arg(long)]
        checkpoint_dir: Option<PathBuf>,
        /// This process's ordinal among `--replicas` processes.
        #[arg(long, default_value_t = 0)]
        ordinal: u32,
        /// Number of processes sharing the job's partitions.
        #[arg(long, default_value_t = 1)]
        replicas: u32,
        /// Restore point: latest (default), none, or a checkpoint id.
        #[arg(long)]
        restore_from: Option<String>,
        /// Serve the admin API on this port (0 = any free port); off by default.
        #[arg(long)]
        admin_port: Option<u16>,
        /// No progress lines on stderr.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Run as a pod (settings from WEIR_* environment variables).
    Worker {
        /// The StreamJob manifest written by the operator.
        #[arg(long, default_value = "/etc/weir/job.yaml")]
        config: PathBuf,
    },
    /// Parse, validate and plan a manifest; print the plan or every error.
    Validate {
        /// The StreamJob manifest.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Measure throughput and checkpoint timing on this machine.
    Bench {
        /// Events per query.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Run only these sections (comma-separated): q0, q1, q2, qw, dedup, state.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// State size for the incremental-checkpoint section, MiB (0 skips it).
        #[arg(long, default_value_t = 1024)]
        state_mib: u64,
    },
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Loads and plans a manifest, printing every problem with its field.
fn load_and_plan(file: &Path) -> anyhow::Result<(LoadedManifest, JobPlan)> {
    let loaded = config::load_manifest(file)?;
    match plan_job(&loaded.job) {
        Ok(plan) => Ok((loaded, plan)),
        Err(errors) => bail!(spec_errors(file, &errors)),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` and `worker` leave their failure in the Kubernetes termination message
    let long_running = matches!(cli.command, Command::Run { .. } | Command::Worker { .. });
    let res = match cli.command {
        Command::Validate { file } => validate(&file),
        Command::Run {
            file,
            state_dir,
            checkpoint_dir,
            ordinal,
            replicas,
            restore_from,
            admin_port,
            quiet,
        } => {
            init_tracing("warn");
            run_local(
                &file,
                state_dir,
                checkpoint_dir,
                ordinal,
                replicas,
                restore_from,
                admin_port,
                quiet,
            )
        }
        Command::Worker { config } => {
            init_tracing("info");
            worker(&config)
        }
        Command::Bench {
            events,
            only,
            state_mib,
        } => {
            init_tracing("warn");
            weir_runtime::cli::bench::run(&weir_runtime::cli::bench::BenchOptions {
                events,
                only,
                state_mib,
            })
            .map_err(anyhow::Error::from)
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if long_running {
                let path = std::env::var_os("WEIR_TERMINATION_LOG")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(weir_runtime::job::shutdown::TERMINATION_LOG));
                weir_runtime::job::shutdown::write_termination_message(&path, &format!("{e:#}"));
            }
            ExitCode::FAILURE
        }
    }
}

/// Completes the plan for `replicas` pods: Kafka partition counts, the keyed exchanges (in
/// memory, or through Kafka topics created here), and a refusal if a keyed operator would
/// still compute per-task partial results (`plan::partitioning`).
fn prepare_plan(plan: &mut JobPlan, replicas: u32, file: &Path) -> anyhow::Result<()> {
    weir_runtime::kafka::resolve_partitions(plan)?;
    if let Err(errors) = weir_runtime::plan::partitioning::plan_exchanges(plan, replicas) {
        bail!(spec_errors(file, &errors));
    }
    if !plan.kafka_exchanges.is_empty() {
        // the exchange topics: created if missing, and their partition counts read
        weir_runtime::kafka::resolve_partitions(plan)?;
    }
    let report = weir_runtime::plan::partitioning::analyse(plan);
    let unmet = weir_runtime::plan::partitioning::unmet_exchanges(plan, &report);
    if !unmet.is_empty() {
        bail!("{}", unmet.trim_end());
    }
    Ok(())
}

/// Prints every error of `file` on stderr and returns them as one message.
fn spec_errors(file: &Path, errors: &[weir_crds::validate::SpecError]) -> String {
    for e in errors {
        eprintln!("{}: {e}", file.display());
    }
    let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    format!(
        "{} has {} error(s): {}",
        file.display(),
        errors.len(),
        all.join("; ")
    )
}

fn validate(file: &Path) -> anyhow::Result<()> {
    let (loaded, mut plan) = load_and_plan(file)?;
    let pods = u32::try_from(loaded.job.spec.parallelism)
        .unwrap_or(1)
        .max(1);
    if let Err(errors) = weir_runtime::plan::partitioning::plan_exchanges(&mut plan, pods) {
        bail!(spec_errors(file, &errors));
    }
    print!("{}", plan.describe(0, pods));
    let report = weir_runtime::plan::partitioning::analyse(&plan);
    // with Kafka partition counts unknown (0 tasks) the exchanges are planned at start
    let unmet = match plan.tasks {
        0 => String::new(),
        _ => weir_runtime::plan::partitioning::unmet_exchanges(&plan, &report),
    };
    for line in unmet.lines() {
        eprintln!("warning: {line}");
    }
    println!("{}: valid", file.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn run_local(
    file: &Path,
    state_dir: Option<PathBuf>,
    checkpoint_dir: Option<PathBuf>,
    ordinal: u32,
    replicas: u32,
    restore_from: Option<String>,
    admin_port: Option<u16>,
    quiet: bool,
) -> anyhow::Result<()> {
    if replicas == 0 || ordinal >= replicas {
        bail!("--ordinal ({ordinal}) must be below --replicas ({replicas})");
    }
    let (loaded, mut plan) = load_and_plan(file)?;
    prepare_plan(&mut plan, replicas, file)?;
    let state_dir = state_dir.unwrap_or_else(|| {
        config::default_local_state_dir(
            &plan.job,
            std::env::var("XDG_DATA_HOME").ok().as_deref(),
            std::env::var("HOME").ok().as_deref(),
        )
    });
    let state_dir = config::absolute(&state_dir);
    let storage_url = config::local_storage_url(
        checkpoint_dir.as_deref(),
        &loaded.job.spec.checkpoint.storage,
        loaded.storage_explicit,
        &state_dir,
    );
    let restore_from = match restore_from.or_else(|| loaded.job.spec.restore.from.clone()) {
        Some(s) => RestoreFrom::parse(&s).map_err(anyhow::Error::msg)?,
        None => RestoreFrom::Latest,
    };
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating state directory {}", state_dir.display()))?;
    eprintln!(
        "weir: running {} ({} task(s)); state in {}, checkpoints in {}",
        plan.job,
        plan.tasks_for(ordinal, replicas).len(),
        state_dir.display(),
        storage_url
    );
    let allow = loaded.job.spec.restore.allow_non_restored_state;
    run_job(JobConfig {
        job: loaded.job,
        plan,
        state_dir,
        storage_url,
        ordinal,
        replicas,
        restore_from,
        allow_non_restored_state: allow,
        mode: Mode::Local,
        admin_port,
        progress: !quiet,
    })?;
    eprintln!("weir: done");
    Ok(())
}

fn worker(config_path: &Path) -> anyhow::Result<()> {
    let pod = config::pod_settings(|k| std::env::var(k).ok())?;
    let (loaded, mut plan) = load_and_plan(config_path)?;
    prepare_plan(&mut plan, pod.replicas, config_path)?;
    let restore_from = match pod.restore_from.clone() {
        Some(r) => r,
        None => match &loaded.job.spec.restore.from {
            Some(s) => RestoreFrom::parse(s).map_err(anyhow::Error::msg)?,
            None => RestoreFrom::Latest,
        },
    };
    let allow = pod
        .allow_non_restored_state
        .unwrap_or(loaded.job.spec.restore.allow_non_restored_state);
    std::fs::create_dir_all(&pod.state_dir)
        .with_context(|| format!("creating state directory {}", pod.state_dir.display()))?;
    tracing::info!(
        ordinal = pod.ordinal,
        replicas = pod.replicas,
        tasks = ?plan.tasks_for(pod.ordinal, pod.replicas),
        "starting worker"
    );
    run_job(JobConfig {
        storage_url: loaded.job.spec.checkpoint.storage.clone(),
        job: loaded.job,
        plan,
        state_dir: pod.state_dir,
        ordinal: pod.ordinal,
        replicas: pod.replicas,
        restore_from,
        allow_non_restored_state: allow,
        mode: Mode::Pod,
        admin_port: Some(pod.admin_port),
        progress: false,
    })?;
    Ok(())
}
