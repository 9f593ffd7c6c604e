//! Job health from task metrics: turns two successive scrapes of a job's runtime pods
//! (`weir_task_*{job,task}` series) into the [`JobHealth`] shown in `status.health`.
//!
//! | field | from (series of `runtime/src/metrics.rs`) |
//! |---|---|
//! | backpressure | max over tasks of Δ`weir_task_backpressured_ms_total` / elapsed ms |
//! | busy | max over tasks of Δ`weir_task_busy_ms_total` / elapsed ms |
//! | latencyP99Ms | max over tasks of the p99 of `weir_task_latency_seconds` (buckets added between the scrapes, else all) |
//! | recordsIn/OutPerSecond | sum over tasks of the rate of `weir_task_records_{in,out}_total` |
//! | eventTimeLagMs | max over tasks of `weir_task_event_time_lag_ms` (exported only where event time follows the wall clock) |
//! | inputDelayMs | max over tasks of `weir_task_input_delay_ms` (processing-time delay behind the input's head) |
//! | kafkaLag | max over tasks of `weir_task_kafka_lag_records` (unset when no task has one) |
//! | watermarkMs | min over tasks of `weir_task_watermark_ms` (tasks without a watermark yet are ignored) |
//! | checkpointTotalFailures | max over tasks of `weir_task_checkpoint_failures_total` |
//! | checkpointConsecutiveFailures | failures since the job's last completed checkpoint (see [`HealthMemory`]) |
//! | lastCheckpointAgeSeconds | now − min over tasks of `weir_task_last_checkpoint_completed_timestamp_seconds` |
//! | checkpointDurationMs | max over tasks of `weir_task_checkpoint_duration_seconds` |
//! | restartsInWindow | task restarts (`weir_task_restarts_total`) plus container restarts within [`RESTART_WINDOW`] |
//!
//! Millisecond spellings (`weir_task_latency_ms`, `weir_task_checkpoint_duration_ms`,
//! `weir_task_checkpoint_last_completed_timestamp_ms`) are accepted too, and a
//! `weir_task_checkpoint_consecutive_failures` gauge is used when a runtime exports it.
//!
//! Tasks on pods that are not ready or could not be scraped are left out and listed in `skipped`.

use crate::alerting::prom_text::{self, Sample};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use weir_crds::stream_job::JobHealth;

/// Restarts are counted over this window.
pub const RESTART_WINDOW: Duration = Duration::from_secs(15 * 60);

/// One pod's scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct PodScrape {
    /// Pod name.
    pub pod: String,
    /// The pod's Ready condition.
    pub ready: bool,
    /// Sum of the pod's container restart counts (`status.containerStatuses[].restartCount`).
    pub container_restarts: u64,
    /// When it was scraped.
    pub at: DateTime<Utc>,
    /// The `/metrics` body, or why it could not be fetched.
    pub body: Result<String, String>,
}

/// All pods of one job, scraped at about the same time.
#[derive(Clone, Debug, PartialEq)]
pub struct JobScrape {
    /// Job name (the `job` label on task series).
    pub job: String,
    /// Per pod.
    pub pods: Vec<PodScrape>,
    /// When the scrape round started.
    pub at: DateTime<Utc>,
}

/// What aggregation remembers between scrapes of one job (serialisable, so it can be kept
/// with the rest of the alert state).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthMemory {
    /// The job's last completed checkpoint timestamp seen (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_completed_ms: Option<i64>,
    /// Total failures when that checkpoint was first seen completed.
    #[serde(default)]
    pub failures_at_last_completion: u64,
    /// Restart counters last seen, by `pod` or `pod/task`.
    #[serde(default)]
    pub restart_counters: BTreeMap<String, u64>,
    /// Restart events counted, with the time they were seen (ms), oldest first.
    #[serde(default)]
    pub restart_events: VecDeque<(i64, u64)>,
}

#[derive(Default, Debug)]
struct Task {
    counters: BTreeMap<&'static str, f64>,
    gauges: BTreeMap<&'static str, f64>,
    /// Histograms by family: (le, cumulative count).
    buckets: BTreeMap<&'static str, Vec<(f64, f64)>>,
    sums: BTreeMap<&'static str, (f64, f64)>,
}

const COUNTERS: [&str; 7] = [
    "weir_task_records_in_total",
    "weir_task_records_out_total",
    "weir_task_busy_ms_total",
    "weir_task_idle_ms_total",
    "weir_task_backpressured_ms_total",
    "weir_task_checkpoint_failures_total",
    "weir_task_restarts_total",
];
const GAUGES: [&str; 8] = [
    "weir_task_event_time_lag_ms",
    "weir_task_input_delay_ms",
    "weir_task_kafka_lag_records",
    "weir_task_watermark_ms",
    "weir_task_checkpoint_duration_ms",
    "weir_task_checkpoint_size_bytes",
    "weir_task_checkpoint_last_completed_timestamp_ms",
    "weir_task_checkpoint_consecutive_failures",
];
const HISTOGRAMS: [&str; 3] = [
    "weir_task_latency_ms",
    "weir_task_event_time_lag_ms",
    "weir_task_checkpoint_duration_ms",
];

fn intern(name: &str, set: &[&'static str]) -> Option<&'static str> {
    set.iter().copied().find(|n| *n == name)
}

/// Series the runtime exports in seconds, the millisecond names used here, and the factor.
const SECONDS_ALIASES: [(&str, &str); 3] = [
    ("weir_task_latency_seconds", "weir_task_latency_ms"),
    (
        "weir_task_checkpoint_duration_seconds",
        "weir_task_checkpoint_duration_ms",
    ),
    (
        "weir_task_last_checkpoint_completed_timestamp_seconds",
        "weir_task_checkpoint_last_completed_timestamp_ms",
    ),
];

/// Rewrites a seconds-based sample to its millisecond name: values (and `le` bounds) × 1000,
/// except histogram counts.
fn to_millis(s: &Sample) -> Option<Sample> {
    for (secs, ms) in SECONDS_ALIASES {
        let Some(suffix) = s.name.strip_prefix(secs) else {
            continue;
        };
        let mut out = s.clone();
        out.name = format!("{ms}{suffix}");
        match suffix {
            "" | "_sum" => out.value *= 1000.0,
            "_bucket" => {
                if let Some(le) = out.labels.get_mut("le") {
                    if let Ok(v) = le.parse::<f64>() {
                        *le = (v * 1000.0).to_string();
                    }
                }
            }
            "_count" => {}
            _ => return None,
        }
        return Some(out);
    }
    None
}

/// Parses one pod's text into tasks of `job`, keyed by the `task` label.
fn tasks_of(job: &str, samples: &[Sample]) -> BTreeMap<String, Task> {
    let mut tasks: BTreeMap<String, Task> = BTreeMap::new();
    for original in samples {
        let converted = to_millis(original);
        let s = converted.as_ref().unwrap_or(original);
        if s.labels.get("job").is_some_and(|j| j != job) {
            continue;
        }
        let Some(task_id) = s.labels.get("task") else {
            continue;
        };
        let task = tasks.entry(task_id.clone()).or_default();
        if let Some(n) = intern(&s.name, &COUNTERS) {
            *task.counters.entry(n).or_default() += s.value;
        } else if let Some(n) = intern(&s.name, &GAUGES) {
            task.gauges.insert(n, s.value);
        } else if let Some((family, suffix)) = s.name.rsplit_once('_') {
            let Some(n) = intern(family, &HISTOGRAMS) else {
                continue;
            };
            match suffix {
                "bucket" => {
                    let le = s.labels.get("le").and_then(|l| match l.as_str() {
                        "+Inf" => Some(f64::INFINITY),
                        l => l.parse().ok(),
                    });
                    if let Some(le) = le {
                        task.buckets.entry(n).or_default().push((le, s.value));
                    }
                }
                "sum" => task.sums.entry(n).or_default().0 = s.value,
                "count" => task.sums.entry(n).or_default().1 = s.value,
                _ => {}
            }
        }
    }
    for t in tasks.values_mut() {
        for b in t.buckets.values_mut() {
            b.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
    }
    tasks
}

/// The `q` quantile of cumulative buckets, interpolated linearly within a bucket as
/// Prometheus' `histogram_quantile` does; `None` when there are no observations.
pub fn bucket_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(prev.0);
            }
            let in_bucket = count - prev.1;
            if in_bucket <= 0.0 {
                return Some(le);
            }
            return Some(prev.0 + (le - prev.0) * (rank - prev.1) / in_bucket);
        }
        prev = (le, count);
    }
    Some(prev.0)
}

fn increase(cur: f64, prev: f64) -> f64 {
    if cur >= prev {
        cur - prev
    } else {
        cur // counter reset: the process restarted
    }
}

fn window_buckets(cur: &[(f64, f64)], prev: Option<&Vec<(f64, f64)>>) -> Vec<(f64, f64)> {
    let Some(prev) = prev else {
        return cur.to_vec();
    };
    let delta: Vec<(f64, f64)> = cur
        .iter()
        .map(|(le, c)| {
            let p = prev.iter().find(|(l, _)| l == le).map_or(0.0, |(_, p)| *p);
            (*le, increase(*c, p))
        })
        .collect();
    if delta.last().is_some_and(|(_, c)| *c > 0.0) {
        delta
    } else {
        cur.to_vec()
    }
}

fn max_opt(acc: Option<f64>, v: f64) -> Option<f64> {
    if v.is_nan() {
        return acc;
    }
    Some(acc.map_or(v, |a| a.max(v)))
}

/// Aggregates the current scrape (with the previous one for rates) into job health.
pub fn aggregate(
    previous: Option<&JobScrape>,
    current: &JobScrape,
    memory: &mut HealthMemory,
) -> JobHealth {
    let mut health = JobHealth {
        scraped_at: Some(current.at),
        ..JobHealth::default()
    };
    let mut prev_tasks: BTreeMap<String, (DateTime<Utc>, Task)> = BTreeMap::new();
    for pod in previous.map(|p| p.pods.as_slice()).unwrap_or_default() {
        if let Ok(body) = &pod.body {
            if let Ok(samples) = prom_text::parse(body) {
                for (id, t) in tasks_of(&current.job, &samples) {
                    prev_tasks.insert(id, (pod.at, t));
                }
            }
        }
    }
    let mut watermark: Option<i64> = None;
    let mut last_completed: Option<f64> = None;
    let mut failures_total: u64 = 0;
    let mut consecutive_gauge: Option<u64> = None;
    let mut restart_events = 0u64;
    for pod in &current.pods {
        let c = pod.container_restarts;
        let seen = memory.restart_counters.insert(pod.pod.clone(), c);
        restart_events += seen.map_or(0, |s| c.saturating_sub(s));
        if !pod.ready {
            health.skipped.push(format!("pod {}: not ready", pod.pod));
            continue;
        }
        let body = match &pod.body {
            Ok(b) => b,
            Err(why) => {
                health
                    .skipped
                    .push(format!("pod {}: unreachable: {why}", pod.pod));
                continue;
            }
        };
        let samples = match prom_text::parse(body) {
            Ok(s) => s,
            Err(e) => {
                health.skipped.push(format!("pod {}: {e}", pod.pod));
                continue;
            }
        };
        let tasks = tasks_of(&current.job, &samples);
        if tasks.is_empty() {
            health.skipped.push(format!(
                "pod {}: no weir_task_* series for job {}",
                pod.pod, current.job
            ));
        }
        for (id, task) in tasks {
            health.tasks_reporting += 1;
            let prev = prev_tasks.get(&id);
            let elapsed_ms = prev
                .map(|(at, _)| (pod.at - *at).num_milliseconds() as f64)
                .filter(|ms| *ms > 0.0);
            let delta = |name: &'static str| -> Option<f64> {
                let (_, p) = prev?;
                Some(increase(*task.counters.get(name)?, *p.counters.get(name)?))
            };
            if let Some(ms) = elapsed_ms {
                let frac = |name| delta(name).map_or(0.0, |d| (d / ms).clamp(0.0, 1.0));
                health.backpressure = health
                    .backpressure
                    .max(frac("weir_task_backpressured_ms_total"));
                health.busy = health.busy.max(frac("weir_task_busy_ms_total"));
                let rate = |name| delta(name).map_or(0.0, |d| d * 1000.0 / ms);
                health.records_in_per_second += rate("weir_task_records_in_total");
                health.records_out_per_second += rate("weir_task_records_out_total");
            }
            let restarts = task.counters.get("weir_task_restarts_total").copied();
            if let Some(r) = restarts {
                let key = format!("{}/{id}", pod.pod);
                let r = r as u64;
                let seen = memory.restart_counters.insert(key, r);
                restart_events += seen.map_or(0, |s| if r >= s { r - s } else { r });
            }
            let prev_buckets = |n| prev.and_then(|(_, p)| p.buckets.get(n));
            if let Some(b) = task.buckets.get("weir_task_latency_ms") {
                let w = window_buckets(b, prev_buckets("weir_task_latency_ms"));
                if let Some(p99) = bucket_quantile(0.99, &w) {
                    health.latency_p99_ms = max_opt(health.latency_p99_ms, p99);
                }
            }
            let lag = task
                .gauges
                .get("weir_task_event_time_lag_ms")
                .copied()
                .or_else(|| {
                    let b = task.buckets.get("weir_task_event_time_lag_ms")?;
                    bucket_quantile(
                        0.99,
                        &window_buckets(b, prev_buckets("weir_task_event_time_lag_ms")),
                    )
                });
            if let Some(lag) = lag {
                health.event_time_lag_ms = max_opt(health.event_time_lag_ms, lag);
            }
            if let Some(d) = task.gauges.get("weir_task_input_delay_ms") {
                if d.is_finite() && *d >= 0.0 {
                    health.input_delay_ms = max_opt(health.input_delay_ms, *d);
                }
            }
            if let Some(l) = task.gauges.get("weir_task_kafka_lag_records") {
                if l.is_finite() && *l >= 0.0 {
                    let l = *l as i64;
                    health.kafka_lag = Some(health.kafka_lag.map_or(l, |m| m.max(l)));
                }
            }
            if let Some(w) = task.gauges.get("weir_task_watermark_ms") {
                if w.is_finite() && *w > 0.0 {
                    let w = *w as i64;
                    watermark = Some(watermark.map_or(w, |m| m.min(w)));
                }
            }
            let duration = task
                .gauges
                .get("weir_task_checkpoint_duration_ms")
                .copied()
                .or_else(|| {
                    let (sum, count) = task.sums.get("weir_task_checkpoint_duration_ms")?;
                    (*count > 0.0).then(|| sum / count)
                });
            if let Some(d) = duration {
                health.checkpoint_duration_ms = max_opt(health.checkpoint_duration_ms, d);
            }
            if let Some(f) = task.counters.get("weir_task_checkpoint_failures_total") {
                failures_total = failures_total.max(*f as u64);
            }
            if let Some(c) = task.gauges.get("weir_task_checkpoint_consecutive_failures") {
                consecutive_gauge = Some(consecutive_gauge.unwrap_or(0).max(*c as u64));
            }
            let done = task
                .gauges
                .get("weir_task_checkpoint_last_completed_timestamp_ms")
                .copied()
                .filter(|t| *t > 0.0);
            last_completed = match (last_completed, done) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    health.watermark_ms = watermark;
    health.checkpoint_total_failures = failures_total;
    let now_ms = current.at.timestamp_millis();
    if let Some(done) = last_completed {
        health.last_checkpoint_age_seconds = Some(((now_ms as f64 - done) / 1000.0).max(0.0));
        let done = done as i64;
        if memory.last_completed_ms != Some(done) {
            memory.last_completed_ms = Some(done);
            memory.failures_at_last_completion = failures_total;
        }
    }
    health.checkpoint_consecutive_failures = consecutive_gauge
        .unwrap_or_else(|| failures_total.saturating_sub(memory.failures_at_last_completion));
    if restart_events > 0 {
        memory.restart_events.push_back((now_ms, restart_events));
    }
    let horizon = now_ms - RESTART_WINDOW.as_millis() as i64;
    while memory
        .restart_events
        .front()
        .is_some_and(|(t, _)| *t < horizon)
    {
        memory.restart_events.pop_front();
    }
    health.restarts_in_window = memory.restart_events.iter().map(|(_, n)| n).sum();
    health
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .unwrap_or_default()
    }

    /// Exposition text for one task, as the runtime writes it.
    #[allow(clippy::too_many_arguments)]
    fn task_text(
        task: u32,
        bp_ms: u64,
        busy_ms: u64,
        rin: u64,
        lat: [u64; 4],
        ckpt_fail: u64,
        done_ms: i64,
        restarts: u64,
    ) -> String {
        format!(
            "# TYPE weir_task_records_in_total counter\n\
             weir_task_records_in_total{{job=\"ads\",task=\"{task}\"}} {rin}\n\
             weir_task_records_out_total{{job=\"ads\",task=\"{task}\"}} {}\n\
             weir_task_busy_ms_total{{job=\"ads\",task=\"{task}\"}} {busy_ms}\n\
             weir_task_backpressured_ms_total{{job=\"ads\",task=\"{task}\"}} {bp_ms}\n\
             weir_task_event_time_lag_ms{{job=\"ads\",task=\"{task}\"}} {}\n\
             weir_task_watermark_ms{{job=\"ads\",task=\"{task}\"}} {}\n\
             # TYPE weir_task_latency_ms histogram\n\
             weir_task_latency_ms_bucket{{job=\"ads\",task=\"{task}\",le=\"10\"}} {}\n\
             weir_task_latency_ms_bucket{{job=\"ads\",task=\"{task}\",le=\"100\"}} {}\n\
             weir_task_latency_ms_bucket{{job=\"ads\",task=\"{task}\",le=\"1000\"}} {}\n\
             weir_task_latency_ms_bucket{{job=\"ads\",task=\"{task}\",le=\"+Inf\"}} {}\n\
             weir_task_checkpoint_failures_total{{job=\"ads\",task=\"{task}\"}} {ckpt_fail}\n\
             weir_task_checkpoint_last_completed_timestamp_ms{{job=\"ads\",task=\"{task}\"}} {done_ms}\n\
             weir_task_checkpoint_duration_ms{{job=\"ads\",task=\"{task}\"}} 250\n\
             weir_task_restarts_total{{job=\"ads\",task=\"{task}\"}} {restarts}\n",
            rin / 2,
            1000 * (task + 1),
            1_700_000_000_000i64 - 5000 * i64::from(task),
            lat[0], lat[1], lat[2], lat[3]
        )
    }

    fn pod(name: &str, secs: i64, body: String) -> PodScrape {
        PodScrape {
            pod: name.into(),
            ready: true,
            container_restarts: 0,
            at: at(secs),
            body: Ok(body),
        }
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        let b = [
            (10.0, 50.0),
            (100.0, 90.0),
            (1000.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(bucket_quantile(0.5, &b), Some(10.0));
        // rank 99 lies in (100, 1000]: 100 + 900 * (99-90)/10
        assert_eq!(bucket_quantile(0.99, &b), Some(910.0));
        assert_eq!(
            bucket_quantile(0.99, &[(10.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
        assert_eq!(
            bucket_quantile(0.99, &[(10.0, 1.0), (f64::INFINITY, 100.0)]),
            Some(10.0)
        );
    }

    #[test]
    fn two_scrapes_give_rates_maxima_and_sums() {
        let mut mem = HealthMemory::default();
        let done = 1_700_000_000_000i64 - 20_000;
        let prev = JobScrape {
            job: "ads".into(),
            at: at(0),
            pods: vec![
                pod("ads-0", 0, task_text(0, 0, 0, 0, [0, 0, 0, 0], 1, done, 0)),
                pod("ads-1", 0, task_text(1, 0, 0, 0, [0, 0, 0, 0], 1, done, 0)),
            ],
        };
        aggregate(None, &prev, &mut mem);
        // 10 s later: task 0 backpressured 2 s, task 1 backpressured 7 s.
        let cur = JobScrape {
            job: "ads".into(),
            at: at(10),
            pods: vec![
                pod(
                    "ads-0",
                    10,
                    task_text(0, 2000, 5000, 1000, [50, 90, 100, 100], 1, done, 0),
                ),
                pod(
                    "ads-1",
                    10,
                    task_text(1, 7000, 9000, 3000, [100, 100, 100, 100], 3, done, 2),
                ),
            ],
        };
        let h = aggregate(Some(&prev), &cur, &mut mem);
        assert_eq!(h.tasks_reporting, 2);
        assert!((h.backpressure - 0.7).abs() < 1e-9, "{}", h.backpressure);
        assert!((h.busy - 0.9).abs() < 1e-9);
        assert!((h.records_in_per_second - 400.0).abs() < 1e-9);
        assert!((h.records_out_per_second - 200.0).abs() < 1e-9);
        assert_eq!(h.latency_p99_ms, Some(910.0));
        assert_eq!(h.event_time_lag_ms, Some(2000.0));
        assert_eq!(h.watermark_ms, Some(1_700_000_000_000 - 5000));
        assert_eq!(h.checkpoint_total_failures, 3);
        assert_eq!(h.checkpoint_consecutive_failures, 2);
        assert_eq!(h.last_checkpoint_age_seconds, Some(30.0));
        assert_eq!(h.checkpoint_duration_ms, Some(250.0));
        assert_eq!(h.restarts_in_window, 2);
        assert!(h.skipped.is_empty());
    }

    #[test]
    fn kafka_lag_is_the_largest_task_lag_and_unset_without_kafka() {
        let mut mem = HealthMemory::default();
        let done = 1_700_000_000_000i64;
        let with_lag = |task: u32, lag: u64| {
            format!(
                "{}weir_task_kafka_lag_records{{job=\"ads\",task=\"{task}\"}} {lag}\n\
                 weir_source_kafka_lag_records{{job=\"ads\",task=\"{task}\",source=\"in\",partition=\"{task}\"}} {lag}\n",
                task_text(task, 0, 0, 0, [0, 0, 0, 0], 0, done, 0)
            )
        };
        let scrape = JobScrape {
            job: "ads".into(),
            at: at(0),
            pods: vec![
                pod("ads-0", 0, with_lag(0, 40)),
                pod("ads-1", 0, with_lag(1, 1200)),
            ],
        };
        assert_eq!(aggregate(None, &scrape, &mut mem).kafka_lag, Some(1200));
        let plain = JobScrape {
            job: "ads".into(),
            at: at(0),
            pods: vec![pod(
                "ads-0",
                0,
                task_text(0, 0, 0, 0, [0, 0, 0, 0], 0, done, 0),
            )],
        };
        assert_eq!(aggregate(None, &plain, &mut mem).kafka_lag, None);
    }

    #[test]
    fn input_delay_is_the_largest_task_delay_and_unset_when_no_task_has_one() {
        let mut mem = HealthMemory::default();
        let done = 1_700_000_000_000i64;
        let with_delay = |task: u32, delay: Option<u64>| {
            let base = task_text(task, 0, 0, 0, [0, 0, 0, 0], 0, done, 0);
            match delay {
                Some(d) => {
                    format!("{base}weir_task_input_delay_ms{{job=\"ads\",task=\"{task}\"}} {d}\n")
                }
                None => base,
            }
        };
        let scrape = |delays: [Option<u64>; 2]| JobScrape {
            job: "ads".into(),
            at: at(0),
            pods: vec![
                pod("ads-0", 0, with_delay(0, delays[0])),
                pod("ads-1", 0, with_delay(1, delays[1])),
            ],
        };
        let h = aggregate(None, &scrape([Some(40), Some(9500)]), &mut mem);
        assert_eq!(h.input_delay_ms, Some(9500.0));
        let h = aggregate(None, &scrape([Some(0), None]), &mut mem);
        assert_eq!(h.input_delay_ms, Some(0.0));
        let h = aggregate(None, &scrape([None, None]), &mut mem);
        assert_eq!(h.input_delay_ms, None);
    }

    #[test]
    fn a_new_checkpoint_resets_consecutive_failures_and_restarts_age_out() {
        let mut mem = HealthMemory::default();
        let s = |secs, fails, done, restarts| JobScrape {
            job: "ads".into(),
            at: at(secs),
            pods: vec![pod(
                "ads-0",
                secs,
                task_text(0, 0, 0, 0, [0, 0, 0, 0], fails, done, restarts),
            )],
        };
        let first = s(0, 4, 1_000, 0);
        aggregate(None, &first, &mut mem);
        let failing = s(10, 6, 1_000, 1);
        let h = aggregate(Some(&first), &failing, &mut mem);
        assert_eq!(
            (h.checkpoint_consecutive_failures, h.restarts_in_window),
            (2, 1)
        );
        let recovered = s(20, 6, 1_700_000_019_000, 1);
        let h = aggregate(Some(&failing), &recovered, &mut mem);
        assert_eq!(h.checkpoint_consecutive_failures, 0);
        assert_eq!(h.restarts_in_window, 1);
        let later = s(
            20 + RESTART_WINDOW.as_secs() as i64,
            6,
            1_700_000_019_000,
            1,
        );
        let h = aggregate(Some(&recovered), &later, &mut mem);
        assert_eq!(h.restarts_in_window, 0);
    }

    /// The runtime's own exposition (prometheus-client, OpenMetrics text): seconds-based
    /// latency histogram, checkpoint duration and completion time.
    fn runtime_text(busy_ms: u64, lat_counts: [u64; 3], done_s: f64) -> String {
        format!(
            "# HELP weir_task_busy_ms Milliseconds spent processing.\n\
             # TYPE weir_task_busy_ms counter\n\
             weir_task_busy_ms_total{{job=\"ads\",task=\"0\"}} {busy_ms}\n\
             # TYPE weir_task_latency_seconds histogram\n\
             weir_task_latency_seconds_sum{{job=\"ads\",task=\"0\"}} 1.5\n\
             weir_task_latency_seconds_count{{job=\"ads\",task=\"0\"}} {}\n\
             weir_task_latency_seconds_bucket{{le=\"0.001\",job=\"ads\",task=\"0\"}} {}\n\
             weir_task_latency_seconds_bucket{{le=\"0.002\",job=\"ads\",task=\"0\"}} {}\n\
             weir_task_latency_seconds_bucket{{le=\"+Inf\",job=\"ads\",task=\"0\"}} {}\n\
             # TYPE weir_task_checkpoint_duration_seconds gauge\n\
             weir_task_checkpoint_duration_seconds{{job=\"ads\",task=\"0\"}} 0.125\n\
             # TYPE weir_task_last_checkpoint_completed_timestamp_seconds gauge\n\
             weir_task_last_checkpoint_completed_timestamp_seconds{{job=\"ads\",task=\"0\"}} {done_s}\n\
             # EOF\n",
            lat_counts[2], lat_counts[0], lat_counts[1], lat_counts[2]
        )
    }

    #[test]
    fn the_runtime_seconds_series_are_read_as_milliseconds() {
        let mut mem = HealthMemory::default();
        let prev = JobScrape {
            job: "ads".into(),
            at: at(0),
            pods: vec![pod("ads-0", 0, runtime_text(0, [0, 0, 0], 1_699_999_990.0))],
        };
        aggregate(None, &prev, &mut mem);
        let cur = JobScrape {
            job: "ads".into(),
            at: at(10),
            pods: vec![pod(
                "ads-0",
                10,
                runtime_text(2500, [50, 100, 100], 1_699_999_995.5),
            )],
        };
        let h = aggregate(Some(&prev), &cur, &mut mem);
        assert!((h.busy - 0.25).abs() < 1e-9);
        // rank 99 of 100 lies in (1 ms, 2 ms]: 1 + 1 × (99 − 50) / 50
        assert!(
            h.latency_p99_ms.is_some_and(|p| (p - 1.98).abs() < 1e-9),
            "{:?}",
            h.latency_p99_ms
        );
        assert_eq!(h.checkpoint_duration_ms, Some(125.0));
        assert_eq!(h.last_checkpoint_age_seconds, Some(14.5));
    }

    #[test]
    fn unready_unreachable_and_garbled_pods_are_skipped_with_why() {
        let mut mem = HealthMemory::default();
        let mut not_ready = pod("ads-0", 0, task_text(0, 0, 0, 0, [0, 0, 0, 0], 0, 1, 0));
        not_ready.ready = false;
        let down = PodScrape {
            body: Err("connection refused".into()),
            ..pod("ads-1", 0, String::new())
        };
        let garbled = pod(
            "ads-2",
            0,
            "weir_task_records_in_total{job=\"ads\" 1".into(),
        );
        let ok = pod("ads-3", 0, task_text(3, 0, 0, 0, [0, 0, 0, 0], 0, 1, 0));
        let h = aggregate(
            None,
            &JobScrape {
                job: "ads".into(),
                at: at(0),
                pods: vec![not_ready, down, garbled, ok],
            },
            &mut mem,
        );
        assert_eq!(h.tasks_reporting, 1);
        assert_eq!(h.skipped.len(), 3);
        assert_eq!(h.skipped[0], "pod ads-0: not ready");
        assert_eq!(h.skipped[1], "pod ads-1: unreachable: connection refused");
        assert!(
            h.skipped[2].starts_with("pod ads-2: metrics line 1: bad labels"),
            "{}",
            h.skipped[2]
        );
    }

    #[test]
    fn counter_reset_after_a_pod_restart_is_not_a_negative_rate() {
        let mut mem = HealthMemory::default();
        let prev = JobScrape {
            job: "ads".into(),
            at: at(0),
            pods: vec![pod(
                "ads-0",
                0,
                task_text(0, 90_000, 0, 50_000, [0; 4], 0, 1, 0),
            )],
        };
        let mut restarted = pod("ads-0", 10, task_text(0, 1000, 0, 2000, [0; 4], 0, 1, 0));
        restarted.container_restarts = 1;
        let first = JobScrape {
            job: "ads".into(),
            at: at(0),
            pods: vec![PodScrape {
                container_restarts: 0,
                ..prev.pods[0].clone()
            }],
        };
        aggregate(None, &first, &mut mem);
        let h = aggregate(
            Some(&prev),
            &JobScrape {
                job: "ads".into(),
                at: at(10),
                pods: vec![restarted],
            },
            &mut mem,
        );
        assert!((h.backpressure - 0.1).abs() < 1e-9);
        assert!((h.records_in_per_second - 200.0).abs() < 1e-9);
        assert_eq!(h.restarts_in_window, 1);
    }
}
