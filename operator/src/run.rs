//! `weir-operator run`: admin server, leader election, CRD wait, controllers, and graceful
//! shutdown on SIGTERM (stop controllers, release the Lease).

use crate::admin::{self, AdminState};
use crate::config::RunConfig;
use crate::controller::{self, Context};
use crate::crd_wait;
use crate::events::chain;
use crate::leader::{LeaderElector, LeaderError, LeaseSettings};
use crate::metrics::Metrics;
use kube::runtime::events::{Recorder, Reporter};
use kube::Client;
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Why the operator stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No Kubernetes client could be configured.
    #[error("configuring the Kubernetes client failed")]
    Client {
        /// The cause.
        source: kube::Error,
    },
    /// The admin server failed.
    #[error(transparent)]
    Admin(#[from] admin::AdminError),
    /// Leadership was lost; the process exits so the pod restarts as a standby.
    #[error(transparent)]
    LostLeadership(#[from] LeaderError),
    /// Installing the signal handler failed.
    #[error("installing the SIGTERM handler failed")]
    Signal {
        /// The cause.
        source: std::io::Error,
    },
}

/// How long running reconciles may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// Runs the operator until SIGTERM/Ctrl-C (Ok) or a fatal error.
pub async fn run(config: RunConfig) -> Result<(), RunError> {
    let mut registry = Registry::default();
    let metrics = Arc::new(Metrics::new(&mut registry));
    let alert_metrics = crate::health_loop::AlertMetrics::register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = {
        let rx = stop_rx.clone();
        move || {
            let mut rx = rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        }
    };

    let admin_state = AdminState {
        registry: Arc::new(registry),
        ready: ready.clone(),
    };
    let mut admin_task = tokio::spawn(admin::serve(admin_state, config.admin_port, stopped()));

    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| RunError::Signal { source })?;
    let signal = async move {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutdown requested");
    };
    tokio::pin!(signal);

    let client = Client::try_default()
        .await
        .map_err(|source| RunError::Client { source })?;
    let identity = config.holder_identity();
    tracing::info!(
        %identity,
        namespaces = ?config.watched_namespaces(),
        alert_rules = ?config.alert_rules,
        "starting weir-operator"
    );

    // Leader election: stand by (ready) until the Lease is ours.
    let elector = config.leader_election.then(|| {
        LeaderElector::new(
            client.clone(),
            LeaseSettings::new(
                config.lease_name.clone(),
                config.lease_namespace(),
                identity.clone(),
            ),
        )
    });
    if let Some(elector) = &elector {
        let standby_ready = ready.clone();
        let acquired = elector.acquire(|holder| {
            if !standby_ready.swap(true, Ordering::SeqCst) {
                tracing::info!(%holder, "standing by: another replica is the leader");
            }
        });
        tokio::select! {
            _ = acquired => {}
            _ = &mut signal => return shut_down(stop_tx, None, admin_task).await,
            r = &mut admin_task => return admin_result(r),
        }
        tracing::info!(lease = %elector.settings().name, "acquired leadership");
    }
    ready.store(false, Ordering::SeqCst);
    metrics.set_leader(true);

    tokio::select! {
        _ = crd_wait::wait_established(client.clone(), &[crd_wait::STREAM_JOB_CRD]) => {}
        _ = &mut signal => return shut_down(stop_tx, elector, admin_task).await,
    }

    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: crate::FIELD_MANAGER.to_string(),
                instance: Some(identity.clone()),
            },
        ),
        client: client.clone(),
        metrics: metrics.clone(),
        config: config.clone(),
        resource: controller::stream_job_resource(),
        http: reqwest::Client::new(),
        applied: Default::default(),
        statuses: Default::default(),
        // The health loop logs and reports a rules file that does not load.
        alert_rules: crate::alerting::rules::RuleSet::load(config.alert_rules.as_deref()).ok(),
    });
    crate::health_loop::spawn(
        client.clone(),
        config.clone(),
        alert_metrics,
        identity.clone(),
        stopped(),
    );
    crate::subscription_controller::spawn(
        client.clone(),
        config.clone(),
        identity.clone(),
        stopped.clone(),
    );
    let controller_ready = ready.clone();
    let controllers = controller::run(ctx, stopped.clone(), move || {
        controller_ready.store(true, Ordering::SeqCst);
        tracing::info!("controllers started");
    });
    tokio::pin!(controllers);

    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = &mut controllers => {
            tracing::warn!("controllers stopped on their own");
            shut_down(stop_tx, elector, admin_task).await
        }
        e = lost => {
            metrics.set_leader(false);
            tracing::error!(error = %chain(&e), "lost leadership; exiting");
            Err(RunError::LostLeadership(e))
        }
        _ = &mut signal => {
            let _ = stop_tx.send(true);
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut controllers).await.is_err() {
                tracing::warn!("reconciles did not finish in time");
            }
            shut_down(stop_tx, elector, admin_task).await
        }
    }
}

async fn shut_down(
    stop_tx: watch::Sender<bool>,
    elector: Option<LeaderElector>,
    admin_task: tokio::task::JoinHandle<Result<(), admin::AdminError>>,
) -> Result<(), RunError> {
    let _ = stop_tx.send(true);
    if let Some(elector) = elector {
        match elector.release().await {
            Ok(()) => tracing::info!("released the leader Lease"),
            Err(e) => tracing::warn!(error = %chain(&e), "releasing the leader Lease failed"),
        }
    }
    match tokio::time::timeout(Duration::from_secs(5), admin_task).await {
        Ok(r) => admin_result(r),
        Err(_) => Ok(()),
    }
}

fn admin_result(
    r: Result<Result<(), admin::AdminError>, tokio::task::JoinError>,
) -> Result<(), RunError> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(join) => {
            tracing::error!(error = %join, "admin server task failed");
            Ok(())
        }
    }
}
