//! The operator's own Prometheus metrics: reconciles, errors, durations, jobs per phase and
//! leadership. Labels are bounded (kind, error variant name, phase).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use weir_crds::stream_job::Phase;

/// Label set `{kind}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Resource kind, e.g. `StreamJob`.
    pub kind: String,
}

/// Label set `{kind, reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Resource kind.
    pub kind: String,
    /// The error variant's name.
    pub reason: String,
}

/// Label set `{phase}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// Job phase.
    pub phase: String,
}

/// Label set `{trigger}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    /// What asked for a reconcile (a bounded set, see [`Metrics::count_trigger`]).
    pub trigger: String,
}

/// Label set `{kind, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// Kind of the object written (`ConfigMap`, `Service`, `StatefulSet`, `StreamJobStatus`).
    pub kind: String,
    /// `written`, or `unchanged` (the write was skipped: the object already matched).
    pub outcome: String,
}

/// All operator metrics.
#[derive(Debug)]
pub struct Metrics {
    reconciles: Family<KindLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    jobs: Family<PhaseLabels, Gauge>,
    leader: Gauge,
    triggers: Family<TriggerLabels, Counter>,
    writes: Family<WriteLabels, Counter>,
    phases: Mutex<HashMap<String, Phase>>,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            jobs: Family::default(),
            leader: Gauge::default(),
            triggers: Family::default(),
            writes: Family::default(),
            phases: Mutex::new(HashMap::new()),
        };
        registry.register(
            "weir_operator_reconcile",
            "Reconciles started, by resource kind",
            m.reconciles.clone(),
        );
        registry.register(
            "weir_operator_reconcile_errors",
            "Reconciles that failed, by kind and error",
            m.errors.clone(),
        );
        registry.register(
            "weir_operator_reconcile_duration_seconds",
            "Time spent in one reconcile",
            m.duration.clone(),
        );
        registry.register("weir_jobs", "StreamJobs by phase", m.jobs.clone());
        registry.register(
            "weir_operator_leader",
            "1 while this replica holds the leader Lease (or runs without leader election)",
            m.leader.clone(),
        );
        registry.register(
            "weir_operator_reconcile_triggers",
            "Watch events and requeues that asked for a StreamJob reconcile, by trigger \
             (job_status_only and job_unchanged are counted but filtered out; several triggers \
             of one job may be served by one reconcile)",
            m.triggers.clone(),
        );
        registry.register(
            "weir_operator_writes",
            "Writes of children and job status, by kind and outcome (unchanged = skipped)",
            m.writes.clone(),
        );
        for phase in Phase::ALL {
            m.jobs
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str().to_string(),
                })
                .set(0);
        }
        m
    }

    /// Counts a reconcile of `kind` and times it until the returned guard is dropped.
    pub fn reconcile_started(&self, kind: &str) -> ReconcileTimer {
        self.reconciles
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    /// Counts a failed reconcile.
    pub fn reconcile_failed(&self, kind: &str, reason: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Records the phase of job `key` (`namespace/name`), or forgets it (`None`, on deletion).
    pub fn set_job_phase(&self, key: &str, phase: Option<Phase>) {
        let Ok(mut phases) = self.phases.lock() else {
            return;
        };
        match phase {
            Some(p) => phases.insert(key.to_string(), p),
            None => phases.remove(key),
        };
        for p in Phase::ALL {
            let n = phases.values().filter(|v| **v == p).count();
            self.jobs
                .get_or_create(&PhaseLabels {
                    phase: p.as_str().to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Counts a trigger: `job_new`, `job_spec`, `job_metadata`, `job_status_only`,
    /// `job_unchanged` (StreamJob watch events by what changed), `configmap`, `service`,
    /// `statefulset`, `pod` (watch events of children and pods), `requeue_poll`,
    /// `requeue_conflict`, `requeue_error` (requeues asked for when a reconcile ends; one
    /// that a watch event overtakes does not run on its own).
    pub fn count_trigger(&self, trigger: &str) {
        self.triggers
            .get_or_create(&TriggerLabels {
                trigger: trigger.to_string(),
            })
            .inc();
    }

    /// Counts a write of `kind` (`written`) or a skipped one (`unchanged`).
    pub fn count_write(&self, kind: &str, written: bool) {
        self.writes
            .get_or_create(&WriteLabels {
                kind: kind.to_string(),
                outcome: if written { "written" } else { "unchanged" }.to_string(),
            })
            .inc();
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
}

/// Observes the reconcile duration when dropped.
#[derive(Debug)]
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn render(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).expect("encode");
        out
    }

    #[test]
    fn exposes_the_documented_series() {
        let mut registry = Registry::default();
        let m = Metrics::new(&mut registry);
        drop(m.reconcile_started("StreamJob"));
        m.reconcile_failed("StreamJob", "ApplyStatefulSet");
        m.set_job_phase("a/x", Some(Phase::Running));
        m.set_job_phase("a/y", Some(Phase::Running));
        m.set_job_phase("a/z", Some(Phase::Failed));
        m.set_job_phase("a/y", None);
        m.set_leader(true);
        m.count_trigger("job_spec");
        m.count_write("StatefulSet", false);
        let text = render(&registry);
        for line in [
            "weir_operator_reconcile_total{kind=\"StreamJob\"} 1",
            "weir_operator_reconcile_errors_total{kind=\"StreamJob\",reason=\"ApplyStatefulSet\"} 1",
            "weir_operator_reconcile_duration_seconds_count 1",
            "weir_jobs{phase=\"Running\"} 1",
            "weir_jobs{phase=\"Failed\"} 1",
            "weir_jobs{phase=\"Suspended\"} 0",
            "weir_operator_leader 1",
            "weir_operator_reconcile_triggers_total{trigger=\"job_spec\"} 1",
            "weir_operator_writes_total{kind=\"StatefulSet\",outcome=\"unchanged\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
