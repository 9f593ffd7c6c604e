//! Alerting: job health aggregation, alert rules, the alert engine and notifiers.
//!
//! Data flow (the controller wires it; see `alerts/README.md`):
//!
//! 1. [`scrape::scrape_job`] fetches a job's runtime pods' `/metrics`;
//!    [`aggregate::aggregate`] turns two such scrapes into `JobHealth`.
//! 2. [`lag::LagTrend`] derives `health.lagGrowing`; [`rules::RuleSet::evaluate`] runs the
//!    rules (from `alerts/default-rules.yaml`) over the job's health and overrides.
//! 3. [`engine::AlertEngine::tick_job`] advances pending → firing → resolved, routes to the
//!    [`routing::Subscription`]s and queues notifications; its state is saved with
//!    [`engine::EngineState::save`] so a restart does not page again.
//!    [`job_input::evaluate_job`] does 2–3 for one `StreamJob`.
//! 4. [`engine::AlertEngine::take_due`] hands out messages (rate limits, digests); the caller
//!    sends each with a [`notify::Notifier`] built by [`notify::ChannelResolver`] and reports
//!    the outcome with [`engine::AlertEngine::report`] (retries, fallback);
//!    [`delivery::deliver_due`] does all of that concurrently, and
//!    [`delivery_status::with_deliveries`] records each outcome in the subscription's status.
//! 5. [`metrics::NotificationMetrics`] counts deliveries, [`job_metrics::JobHealthMetrics`]
//!    exports `weir_job_*`; [`subscription::check_channels`]
//!    gives each channel's status for the AlertSubscription's status.

#![warn(missing_docs)]

pub mod aggregate;
pub mod delivery;
pub mod delivery_status;
pub mod dispatch;
pub mod engine;
pub mod job_input;
pub mod job_metrics;
pub mod lag;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod prom_text;
pub mod resend;
pub mod routing;
pub mod rules;
pub mod scrape;
pub mod subscription;
pub mod template;

#[cfg(test)]
mod shipped_files;
