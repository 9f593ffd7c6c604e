//! The admin HTTP API (axum, on the I/O runtime, never on task threads):
//! `/metrics`, `/healthz`, `/readyz` (200 once restore finished), `/status`, `/checkpoints`,
//! and `POST /checkpoint[?final=true]` (reply after the checkpoint completes; with
//! `final=true` processing stops after it). The JSON shapes are documented in the README.

use crate::job::status::SharedStatus;
use crate::metrics::Metrics;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Why a requested checkpoint did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointFailure {
    /// The checkpoint that was attempted, if one was started.
    pub checkpoint_id: Option<u64>,
    /// What went wrong.
    pub error: String,
}

/// The outcome of a requested checkpoint: its id, or why it failed.
pub type CheckpointReply = Result<u64, CheckpointFailure>;

/// A request to the coordinator, from the admin API or the signal handler.
#[derive(Debug)]
pub enum AdminRequest {
    /// Take a checkpoint now; reply with its id once complete.
    Checkpoint {
        /// Stop processing after it.
        is_final: bool,
        /// Where to send the outcome.
        reply: tokio::sync::oneshot::Sender<CheckpointReply>,
    },
    /// SIGTERM/SIGINT: stop reading input, take a final checkpoint, exit.
    Shutdown {
        /// The signal's name, for messages.
        signal: &'static str,
    },
}

/// State shared by the handlers.
#[derive(Clone)]
pub struct AdminState {
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Job status.
    pub status: SharedStatus,
    /// Restore finished.
    pub ready: Arc<AtomicBool>,
    /// Channel to the coordinator.
    pub requests: Arc<Mutex<Sender<AdminRequest>>>,
}

/// The router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/checkpoints", get(checkpoints))
        .route("/checkpoint", post(checkpoint))
        .with_state(state)
}

/// Serves until the process exits.
pub async fn serve(listener: tokio::net::TcpListener, state: AdminState) {
    if let Err(e) = axum::serve(listener, router(state)).await {
        tracing::error!("admin API stopped: {e}");
    }
}

async fn metrics(State(s): State<AdminState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(s): State<AdminState>) -> Response {
    if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "restoring").into_response()
    }
}

fn snapshot(s: &AdminState) -> crate::job::status::JobStatus {
    match s.status.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

async fn status(State(s): State<AdminState>) -> Response {
    Json(snapshot(&s)).into_response()
}

async fn checkpoints(State(s): State<AdminState>) -> Response {
    Json(snapshot(&s).checkpoints).into_response()
}

async fn checkpoint(
    State(s): State<AdminState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let is_final = q.get("final").is_some_and(|v| v == "true" || v == "1");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sent = match s.requests.lock() {
        Ok(g) => g
            .send(AdminRequest::Checkpoint {
                is_final,
                reply: tx,
            })
            .is_ok(),
        Err(_) => false,
    };
    if !sent {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "checkpointId": null,
                "final": is_final,
                "succeeded": false,
                "error": "the job is not running",
            })),
        )
            .into_response();
    }
    let timeout = Duration::from_secs(600);
    let failed = |code: StatusCode, id: Option<u64>, error: &str| {
        (
            code,
            Json(serde_json::json!({
                "checkpointId": id,
                "final": is_final,
                "succeeded": false,
                "error": error,
            })),
        )
            .into_response()
    };
    match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(Ok(id))) => Json(serde_json::json!({
            "checkpointId": id,
            "final": is_final,
            "succeeded": true,
        }))
        .into_response(),
        Ok(Ok(Err(f))) => failed(StatusCode::INTERNAL_SERVER_ERROR, f.checkpoint_id, &f.error),
        Ok(Err(_)) => failed(
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            "the job stopped before the checkpoint completed",
        ),
        Err(_) => failed(
            StatusCode::GATEWAY_TIMEOUT,
            None,
            "timed out waiting for the checkpoint",
        ),
    }
}
