//! Weir's custom resources and the pipeline model shared by the operator and the runtime.
//!
//! - [`StreamJob`] (`weir.dev/v1alpha1`, short name `sj`): a stateful streaming job.
//! - [`AlertSubscription`]: who gets told about which jobs' alerts, and how.
//! - [`pipeline`]: sources, operators and sinks of a job graph.
//! - [`kafka`]: TLS and SASL of Kafka connections, secrets by reference.
//! - [`validate`]: pure checks of a spec (graph, expressions, settings) that name the failing field;
//!   [`validate_k8s`]: what Kubernetes or the runtime's CEL would refuse later (names, quantities, functions).

pub mod alert_subscription;
pub mod conditions;
pub mod duration;
pub mod kafka;
pub mod manifest;
pub mod pipeline;
pub mod stream_job;
pub mod validate;
pub mod validate_k8s;

pub use alert_subscription::{AlertSubscription, AlertSubscriptionSpec, AlertSubscriptionStatus};
pub use conditions::Condition;
pub use duration::Dur;
pub use stream_job::{StreamJob, StreamJobSpec, StreamJobStatus};

/// The API group of every Weir resource.
pub const GROUP: &str = "weir.dev";
/// The API version of every Weir resource.
pub const VERSION: &str = "v1alpha1";
