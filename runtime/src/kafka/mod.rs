//! Kafka: a source reading assigned partitions with offsets in checkpoints, a sink that is
//! transactional (committed on checkpoint completion) or idempotent, and the Java-compatible
//! partitioner, on librdkafka (`rdkafka`).
//!
//! Connection problems at start (unreachable brokers, a TLS handshake or SASL authentication
//! failure, a missing or forbidden topic) are retried with exponential backoff, each attempt
//! logged with the source or sink, the brokers, the topic and the cause (librdkafka's last
//! client error, e.g. `SSL handshake failed: ... certificate verify failed`, when the request's
//! own error is only "broker transport failure"); after `weir.startup.timeout.ms` (a Weir
//! property in `properties`, default 45000) the job fails with that message. Nothing is lost
//! by failing: offsets only move with checkpoints.

pub mod partitioner;
pub mod readback;
pub mod repartition;
pub mod security;
pub mod sink;
pub mod source;

use crate::plan::{JobPlan, SourceKind};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weir_crds::kafka::KafkaSecurity;

/// Properties with this prefix configure Weir, not librdkafka.
pub const WEIR_PROPERTY_PREFIX: &str = "weir.";

/// How long to retry reaching the brokers and the topic at start (ms).
pub const STARTUP_TIMEOUT_PROPERTY: &str = "weir.startup.timeout.ms";

const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(45);

/// librdkafka's last client-level error (`ClientContext::error`): why brokers cannot be
/// reached (TLS handshake, SASL authentication, connection refused), which the failed
/// request's own error ("all brokers down") does not say.
#[derive(Clone, Debug, Default)]
pub struct LastClientError(Arc<Mutex<Option<String>>>);

impl LastClientError {
    /// Keeps `reason` as the last error.
    pub fn record(&self, reason: &str) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(reason.to_string());
        }
    }

    /// Logs a librdkafka log line as the default context does, and keeps it when it reports a
    /// failure (error level and above: a failed connection, TLS handshake or authentication).
    pub fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                self.record(message);
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}");
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
        }
    }

    /// `error`, followed by the last client error when there is one.
    pub fn explain(&self, error: impl std::fmt::Display) -> String {
        match self.0.lock().ok().and_then(|g| g.clone()) {
            Some(reason) => format!("{error}; last client error: {reason}"),
            None => error.to_string(),
        }
    }
}

/// A client context that keeps librdkafka's last error (logged at debug level; the retries
/// and failures that follow name it).
#[derive(Clone, Default)]
pub struct ErrorContext {
    /// The last error.
    pub last: LastClientError,
}

impl ClientContext for ErrorContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.last.log(level, fac, message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!("librdkafka: {error}: {reason}");
        self.last.record(reason);
    }
}

impl ConsumerContext for ErrorContext {}

/// A Kafka client problem, naming the source or sink, the brokers and the topic.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// The topic's metadata could not be read (brokers unreachable, or no such topic).
    #[error("{owner}: cannot read topic '{topic}' from brokers '{brokers}' (gave up after {attempts} attempt(s) in {waited_s}s; raise {STARTUP_TIMEOUT_PROPERTY} to wait longer): {message}")]
    Metadata {
        /// `source 'name'` or `sink 'name'`.
        owner: String,
        /// Bootstrap servers.
        brokers: String,
        /// Topic.
        topic: String,
        /// Attempts made.
        attempts: u32,
        /// Seconds spent.
        waited_s: u64,
        /// The last error.
        message: String,
    },
    /// A client could not be created (bad property, usually).
    #[error(
        "{owner}: creating a Kafka client for brokers '{brokers}', topic '{topic}': {message}"
    )]
    Client {
        /// `source 'name'` or `sink 'name'`.
        owner: String,
        /// Bootstrap servers.
        brokers: String,
        /// Topic.
        topic: String,
        /// What failed.
        message: String,
    },
    /// A topic Weir creates (a repartition topic) could not be created.
    #[error("{owner}: creating topic '{topic}' with {partitions} partition(s) on brokers '{brokers}': {message}")]
    CreateTopic {
        /// `repartition 'name'`.
        owner: String,
        /// Bootstrap servers.
        brokers: String,
        /// Topic.
        topic: String,
        /// Partitions asked for.
        partitions: u32,
        /// What failed.
        message: String,
    },
    /// A Weir property has a bad value.
    #[error("{owner}: property {property}: {message}")]
    Property {
        /// `source 'name'` or `sink 'name'`.
        owner: String,
        /// The property.
        property: String,
        /// What is wrong.
        message: String,
    },
}

/// Where a client connects, for messages and retries.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `source 'name'` or `sink 'name'`.
    pub owner: String,
    /// Bootstrap servers.
    pub brokers: String,
    /// Topic.
    pub topic: String,
    /// How long to retry at start.
    pub startup_timeout: Duration,
    /// TLS and SASL (Secret references only; values are read when a client is configured).
    pub security: Option<KafkaSecurity>,
}

impl Endpoint {
    /// An endpoint; reads the Weir properties out of `properties`.
    pub fn new(
        owner: String,
        brokers: &str,
        topic: &str,
        properties: &BTreeMap<String, String>,
        security: Option<&KafkaSecurity>,
    ) -> Result<Self, KafkaError> {
        let startup_timeout =
            match properties.get(STARTUP_TIMEOUT_PROPERTY) {
                None => DEFAULT_STARTUP_TIMEOUT,
                Some(v) => v.parse::<u64>().map(Duration::from_millis).map_err(|e| {
                    KafkaError::Property {
                        owner: owner.clone(),
                        property: STARTUP_TIMEOUT_PROPERTY.into(),
                        message: format!("'{v}' is not a number of milliseconds: {e}"),
                    }
                })?,
            };
        Ok(Endpoint {
            owner,
            brokers: brokers.to_string(),
            topic: topic.to_string(),
            startup_timeout,
            security: security.cloned(),
        })
    }

    /// A client error naming this endpoint.
    pub fn client_error(&self, message: impl ToString) -> KafkaError {
        KafkaError::Client {
            owner: self.owner.clone(),
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            message: message.to_string(),
        }
    }
}

/// A librdkafka configuration: `bootstrap.servers`, the user's properties except Weir's, then
/// the endpoint's `security` (TLS, SASL; its Secrets read now). The error names the endpoint
/// and the Secret that could not be read, never a value.
pub fn client_config(
    endpoint: &Endpoint,
    properties: &BTreeMap<String, String>,
) -> Result<ClientConfig, KafkaError> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &endpoint.brokers);
    for (k, v) in properties {
        if !k.starts_with(WEIR_PROPERTY_PREFIX) {
            c.set(k, v);
        }
    }
    security::apply(&mut c, endpoint.security.as_ref()).map_err(|e| endpoint.client_error(e))?;
    Ok(c)
}

/// Serves a consumer's queued events (librdkafka's log lines and errors are queued, not
/// delivered, until the client is polled), so that its context sees why a request failed.
pub fn serve_events<C: ConsumerContext>(consumer: &BaseConsumer<C>) {
    // an error event ends a poll early; a few rounds drain what is queued
    for _ in 0..16 {
        if consumer.poll(Duration::from_millis(5)).is_none() {
            break;
        }
    }
}

/// The backoff before retry `attempt` (1-based): 0.5 s doubling up to 10 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 500u64.saturating_mul(1 << attempt.saturating_sub(1).min(5));
    Duration::from_millis(ms.min(10_000))
}

/// Retries `f` with [`backoff`] until it succeeds or `endpoint.startup_timeout` passes; every
/// failure is logged with the endpoint. The error names the endpoint and the last failure.
pub fn retry_startup<T>(
    endpoint: &Endpoint,
    what: &str,
    mut f: impl FnMut(Duration) -> Result<T, String>,
) -> Result<T, KafkaError> {
    let started = Instant::now();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let left = endpoint.startup_timeout.saturating_sub(started.elapsed());
        // several attempts fit in the budget, each logged
        let per_try = (endpoint.startup_timeout / 4)
            .clamp(Duration::from_millis(500), Duration::from_secs(10))
            .min(left.max(Duration::from_millis(500)));
        match f(per_try) {
            Ok(v) => return Ok(v),
            Err(message) => {
                let wait = backoff(attempt);
                if started.elapsed() + wait >= endpoint.startup_timeout {
                    return Err(KafkaError::Metadata {
                        owner: endpoint.owner.clone(),
                        brokers: endpoint.brokers.clone(),
                        topic: endpoint.topic.clone(),
                        attempts: attempt,
                        waited_s: started.elapsed().as_secs(),
                        message,
                    });
                }
                tracing::warn!(
                    "{}: {what} failed (brokers '{}', topic '{}', attempt {attempt}), retrying in {}ms: {message}",
                    endpoint.owner,
                    endpoint.brokers,
                    endpoint.topic,
                    wait.as_millis()
                );
                std::thread::sleep(wait);
            }
        }
    }
}

/// Reads the partition count of `endpoint.topic` through `fetch` (a client's
/// `fetch_metadata`), retrying at start; a missing topic is an error like an unreachable
/// broker. Failures are explained with `last` (the client's last error).
pub fn partition_count<F>(
    endpoint: &Endpoint,
    last: &LastClientError,
    mut fetch: F,
) -> Result<u32, KafkaError>
where
    F: FnMut(Duration) -> rdkafka::error::KafkaResult<rdkafka::metadata::Metadata>,
{
    retry_startup(endpoint, "reading topic metadata", |timeout| {
        let md = fetch(timeout).map_err(|e| last.explain(e))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == endpoint.topic)
            .ok_or_else(|| {
                format!(
                    "the brokers returned no metadata for topic '{}'",
                    endpoint.topic
                )
            })?;
        if let Some(err) = t.error() {
            return Err(topic_error(&endpoint.topic, err.into()));
        }
        match u32::try_from(t.partitions().len()) {
            Ok(0) | Err(_) => Err(format!(
                "topic '{}' has no partitions (does the topic exist?)",
                endpoint.topic
            )),
            Ok(n) => Ok(n),
        }
    })
}

/// What a topic's metadata error means for the user.
fn topic_error(topic: &str, code: RDKafkaErrorCode) -> String {
    let hint = match code {
        RDKafkaErrorCode::TopicAuthorizationFailed => {
            "the credentials are not allowed to use the topic (check the broker's ACLs for this user)"
        }
        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic => {
            "does the topic exist?"
        }
        _ => "does the topic exist?",
    };
    format!("topic '{topic}': {code:?} ({code}; {hint})")
}

/// Resolves the partition count of every Kafka source of `plan` from the brokers (retrying
/// at start), creates missing repartition topics, and sets the task count to the largest
/// source partition count. A Kafka source without `group.id` gets
/// `weir-<namespace>-<job>-<source>`, the consumer group its offsets are committed to.
pub fn resolve_partitions(plan: &mut JobPlan) -> Result<(), KafkaError> {
    let group_prefix = format!("weir-{}-{}", plan.namespace, plan.job);
    for src in plan.sources.iter_mut() {
        let SourceKind::Kafka(spec) = &mut src.kind else {
            continue;
        };
        // the consumer group completed checkpoints' offsets are committed to
        spec.properties
            .entry("group.id".to_string())
            .or_insert_with(|| format!("{group_prefix}-{}", src.name));
        if src
            .name
            .ends_with(crate::operator::repartition::READ_SUFFIX)
        {
            continue; // created if missing, below
        }
        let endpoint = Endpoint::new(
            format!("source '{}'", src.name),
            &spec.brokers,
            &spec.topic,
            &spec.properties,
            spec.security.as_deref(),
        )?;
        let context = ErrorContext::default();
        let last = context.last.clone();
        let consumer: BaseConsumer<ErrorContext> = client_config(&endpoint, &spec.properties)?
            .create_with_context(context)
            .map_err(|e| endpoint.client_error(e))?;
        src.partitions = partition_count(&endpoint, &last, |t| {
            let md = consumer.fetch_metadata(Some(&endpoint.topic), t);
            serve_events(&consumer);
            md
        })?;
    }
    repartition::ensure_topics(plan)?;
    plan.tasks = plan.sources.iter().map(|s| s.partitions).max().unwrap_or(0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(2), Duration::from_millis(1000));
        assert_eq!(backoff(5), Duration::from_millis(8000));
        assert_eq!(backoff(9), Duration::from_millis(10_000));
    }

    #[test]
    fn weir_properties_are_not_passed_to_librdkafka_and_are_checked() {
        let props: BTreeMap<String, String> = [
            (STARTUP_TIMEOUT_PROPERTY.to_string(), "1500".to_string()),
            ("client.id".to_string(), "x".to_string()),
        ]
        .into();
        let e = Endpoint::new("sink 'out'".into(), "b:1", "t", &props, None).unwrap();
        let c = client_config(&e, &props).unwrap();
        assert_eq!(c.get("client.id"), Some("x"));
        assert_eq!(c.get(STARTUP_TIMEOUT_PROPERTY), None);
        assert_eq!(e.startup_timeout, Duration::from_millis(1500));
        let bad: BTreeMap<String, String> =
            [(STARTUP_TIMEOUT_PROPERTY.to_string(), "soon".to_string())].into();
        let err = Endpoint::new("sink 'out'".into(), "b:1", "t", &bad, None).unwrap_err();
        assert!(err.to_string().contains("weir.startup.timeout.ms"), "{err}");
    }

    #[test]
    fn topic_errors_say_what_to_check() {
        let denied = topic_error("orders", RDKafkaErrorCode::TopicAuthorizationFailed);
        assert!(
            denied.contains("'orders'") && denied.contains("ACLs"),
            "{denied}"
        );
        let missing = topic_error("orders", RDKafkaErrorCode::UnknownTopicOrPartition);
        assert!(missing.contains("exist"), "{missing}");
    }

    #[test]
    fn the_last_client_error_explains_a_failed_request() {
        let last = LastClientError::default();
        assert_eq!(last.explain("all brokers down"), "all brokers down");
        last.record("ssl://b:9093/bootstrap: SSL handshake failed: certificate verify failed");
        let m = last.explain("all brokers down");
        assert!(
            m.starts_with("all brokers down; last client error: ")
                && m.contains("certificate verify failed"),
            "{m}"
        );
    }

    #[test]
    fn retry_gives_up_with_the_endpoint_in_the_message() {
        let e = Endpoint {
            owner: "source 'orders'".into(),
            brokers: "127.0.0.1:1".into(),
            topic: "orders".into(),
            startup_timeout: Duration::from_millis(1200),
            security: None,
        };
        let mut calls = 0;
        let err = retry_startup(&e, "connecting", |_| -> Result<(), String> {
            calls += 1;
            Err("all brokers down".into())
        })
        .unwrap_err()
        .to_string();
        assert!(calls >= 2, "retried: {calls}");
        for part in [
            "source 'orders'",
            "127.0.0.1:1",
            "'orders'",
            "all brokers down",
        ] {
            assert!(err.contains(part), "{part} missing in: {err}");
        }
    }
}
