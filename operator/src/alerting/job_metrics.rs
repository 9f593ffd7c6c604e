//! The per-job series on the operator's `/metrics` (`weir_job_*{namespace,job}`), set from each
//! job's aggregated health; `alerts/prometheus-rules.yaml` and the Grafana dashboard read them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use weir_crds::stream_job::{JobHealth, Phase};

type F64Gauge = Gauge<f64, AtomicU64>;

/// Labels `{namespace, job}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabels {
    /// Job namespace.
    pub namespace: String,
    /// Job name.
    pub job: String,
}

/// Labels `{namespace, job, phase}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobPhaseLabels {
    /// Job namespace.
    pub namespace: String,
    /// Job name.
    pub job: String,
    /// Phase.
    pub phase: String,
}

/// (name, help) of each `{namespace, job}` gauge, in [`JobHealthMetrics::gauges`] order.
const GAUGES: [(&str, &str); 13] = [
    (
        "weir_job_backpressure",
        "Max over tasks of the fraction of time blocked on output",
    ),
    (
        "weir_job_busy_ratio",
        "Max over tasks of the fraction of time busy",
    ),
    (
        "weir_job_latency_p99_seconds",
        "Max over tasks of p99 end-to-end latency",
    ),
    (
        "weir_job_records_in_per_second",
        "Records read per second, all tasks",
    ),
    (
        "weir_job_records_out_per_second",
        "Records written per second, all tasks",
    ),
    (
        "weir_job_event_time_lag_seconds",
        "Max over tasks of wall clock minus watermark; only for jobs whose event time follows the wall clock (Kafka), absent for generators and file replays",
    ),
    (
        "weir_job_input_delay_seconds",
        "Max over tasks of the processing-time delay behind the input's head (a generator's delay behind its schedule; for Kafka 0 when caught up, else the event-time lag)",
    ),
    (
        "weir_job_watermark_seconds",
        "Min over tasks of the watermark, epoch seconds",
    ),
    (
        "weir_job_checkpoint_consecutive_failures",
        "Failed checkpoints in a row",
    ),
    (
        "weir_job_checkpoint_failures_total",
        "Failed checkpoints in total (as reported by tasks)",
    ),
    (
        "weir_job_last_checkpoint_age_seconds",
        "Seconds since the last successful checkpoint",
    ),
    (
        "weir_job_restarts_in_window",
        "Task and container restarts in the last 15 minutes",
    ),
    (
        "weir_job_checkpoint_interval_seconds",
        "The job's checkpoint interval",
    ),
];

/// Per-job gauges.
#[derive(Clone, Debug, Default)]
pub struct JobHealthMetrics {
    gauges: Vec<Family<JobLabels, F64Gauge>>,
    phase: Family<JobPhaseLabels, Gauge>,
}

impl JobHealthMetrics {
    /// Creates and registers the series.
    pub fn register(registry: &mut Registry) -> Self {
        let m = JobHealthMetrics {
            gauges: GAUGES.iter().map(|_| Family::default()).collect(),
            phase: Family::default(),
        };
        for ((name, help), family) in GAUGES.iter().zip(&m.gauges) {
            registry.register(*name, *help, family.clone());
        }
        registry.register(
            "weir_job_phase",
            "1 for the job's current phase, 0 for the others",
            m.phase.clone(),
        );
        m
    }

    /// Sets every series of one job; unknown values (no latency yet, ...) are removed rather
    /// than reported as 0.
    pub fn set(
        &self,
        namespace: &str,
        job: &str,
        health: &JobHealth,
        phase: Option<Phase>,
        checkpoint_interval_seconds: f64,
    ) {
        let labels = JobLabels {
            namespace: namespace.to_string(),
            job: job.to_string(),
        };
        let values: [Option<f64>; 13] = [
            Some(health.backpressure),
            Some(health.busy),
            health.latency_p99_ms.map(|v| v / 1000.0),
            Some(health.records_in_per_second),
            Some(health.records_out_per_second),
            health.event_time_lag_ms.map(|v| v / 1000.0),
            health.input_delay_ms.map(|v| v / 1000.0),
            health.watermark_ms.map(|v| v as f64 / 1000.0),
            Some(health.checkpoint_consecutive_failures as f64),
            Some(health.checkpoint_total_failures as f64),
            health.last_checkpoint_age_seconds,
            Some(health.restarts_in_window as f64),
            Some(checkpoint_interval_seconds),
        ];
        for (family, value) in self.gauges.iter().zip(values) {
            match value {
                Some(v) => {
                    family.get_or_create(&labels).set(v);
                }
                None => {
                    family.remove(&labels);
                }
            }
        }
        for p in Phase::ALL {
            self.phase
                .get_or_create(&JobPhaseLabels {
                    namespace: namespace.to_string(),
                    job: job.to_string(),
                    phase: p.as_str().to_string(),
                })
                .set(i64::from(Some(p) == phase));
        }
    }

    /// Removes a deleted job's series.
    pub fn remove(&self, namespace: &str, job: &str) {
        let labels = JobLabels {
            namespace: namespace.to_string(),
            job: job.to_string(),
        };
        for family in &self.gauges {
            family.remove(&labels);
        }
        for p in Phase::ALL {
            self.phase.remove(&JobPhaseLabels {
                namespace: namespace.to_string(),
                job: job.to_string(),
                phase: p.as_str().to_string(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(r: &Registry) -> String {
        let mut s = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut s, r).is_ok());
        s
    }

    #[test]
    fn health_becomes_job_series_in_seconds_and_phase_flags() {
        let mut r = Registry::default();
        let m = JobHealthMetrics::register(&mut r);
        let h = JobHealth {
            backpressure: 0.5,
            latency_p99_ms: Some(1500.0),
            watermark_ms: Some(1_700_000_000_000),
            checkpoint_consecutive_failures: 2,
            ..JobHealth::default()
        };
        m.set("ads", "ctr", &h, Some(Phase::Running), 30.0);
        let text = encode(&r);
        for line in [
            "weir_job_backpressure{namespace=\"ads\",job=\"ctr\"} 0.5",
            "weir_job_latency_p99_seconds{namespace=\"ads\",job=\"ctr\"} 1.5",
            "weir_job_watermark_seconds{namespace=\"ads\",job=\"ctr\"} 1700000000.0",
            "weir_job_checkpoint_consecutive_failures{namespace=\"ads\",job=\"ctr\"} 2.0",
            "weir_job_phase{namespace=\"ads\",job=\"ctr\",phase=\"Running\"} 1",
            "weir_job_phase{namespace=\"ads\",job=\"ctr\",phase=\"Failed\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(
            !text.contains("weir_job_event_time_lag_seconds{"),
            "unknown lag is not exported as 0"
        );
        m.remove("ads", "ctr");
        assert!(!encode(&r).contains("job=\"ctr\""));
    }
}
