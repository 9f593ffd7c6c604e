//! Weir's Kubernetes operator: reconciles `StreamJob`s into runtime pods, with leader election
//! and an admin HTTP server.
//!
//! Reconcile is a pipeline of small modules: [`validate`] (pure) → [`build`] (pure) →
//! [`apply`] (server-side apply) → [`status`] (pure computation, then a status patch).
//! [`controller`] wires them into a kube-rs `Controller`; [`leader`] holds a coordination
//! Lease so only one replica acts; [`admin`] serves `/metrics`, `/healthz` and `/readyz`.

pub mod admin;
pub mod alert_secrets;
pub mod alert_state_store;
pub mod alerting;
pub mod applied_children;
pub mod apply;
pub mod build;
pub mod config;
pub mod controller;
pub mod crd_wait;
pub mod events;
pub mod health_loop;
pub mod health_status;
pub mod job_changes;
pub mod leader;
pub mod lifecycle;
pub mod metrics;
pub mod object_trim;
pub mod pod_admin;
pub mod progress;
pub mod restore;
pub mod restore_flow;
pub mod rollback;
pub mod run;
pub mod status;
pub mod status_memory;
pub mod subscription_controller;
pub mod validate;

/// The single field manager used for every server-side apply and the finalizer's owner.
pub const FIELD_MANAGER: &str = "weir-operator";
