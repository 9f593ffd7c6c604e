//! Checks of the files shipped in `alerts/`: the PrometheusRule covers the default rules and,
//! like the dashboard, reads only the `weir_job_*` series the operator exports.

use crate::alerting::rules::RuleSet;
use std::collections::BTreeSet;

const PROMETHEUS_RULES: &str = include_str!("../../../alerts/prometheus-rules.yaml");
const DASHBOARD: &str = include_str!("../../../alerts/dashboards/weir-jobs.json");
const DEFAULT_RULES: &str = include_str!("../../../alerts/default-rules.yaml");

/// The job-level series the operator exports (plus the optional interval).
const SERIES: [&str; 14] = [
    "weir_job_backpressure",
    "weir_job_busy_ratio",
    "weir_job_latency_p99_seconds",
    "weir_job_records_in_per_second",
    "weir_job_records_out_per_second",
    "weir_job_event_time_lag_seconds",
    "weir_job_input_delay_seconds",
    "weir_job_watermark_seconds",
    "weir_job_checkpoint_consecutive_failures",
    "weir_job_checkpoint_failures_total",
    "weir_job_last_checkpoint_age_seconds",
    "weir_job_restarts_in_window",
    "weir_job_phase",
    "weir_job_checkpoint_interval_seconds",
];

fn series_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("weir_job_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if end > "weir_job_".len() {
            out.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    out
}

#[test]
fn prometheus_rules_cover_the_default_rules_with_known_series() {
    let doc: serde_yaml::Value = match serde_yaml::from_str(PROMETHEUS_RULES) {
        Ok(d) => d,
        Err(e) => panic!("alerts/prometheus-rules.yaml: {e}"),
    };
    assert_eq!(doc["kind"].as_str(), Some("PrometheusRule"));
    let rules = doc["spec"]["groups"][0]["rules"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    let covered: BTreeSet<String> = rules
        .iter()
        .filter_map(|r| r["labels"]["rule"].as_str().map(str::to_string))
        .collect();
    let defaults = match RuleSet::from_yaml(DEFAULT_RULES) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    };
    // restoreFellBack and deployFailed read status facts that no series carries.
    for rule in defaults
        .rules()
        .filter(|r| r.name != "restoreFellBack" && r.name != "deployFailed")
    {
        assert!(
            covered.contains(&rule.name),
            "no PrometheusRule for {}",
            rule.name
        );
    }
    for r in &rules {
        assert!(
            r["expr"].as_str().is_some_and(|e| !e.is_empty()),
            "rule without expr: {r:?}"
        );
        assert!(
            r["labels"]["severity"].as_str().is_some(),
            "rule without severity: {r:?}"
        );
    }
    for s in series_in(PROMETHEUS_RULES) {
        assert!(
            SERIES.contains(&s.as_str()),
            "unknown series {s} in prometheus-rules.yaml"
        );
    }
}

#[test]
fn dashboard_is_valid_json_over_known_series() {
    let d: serde_json::Value = match serde_json::from_str(DASHBOARD) {
        Ok(d) => d,
        Err(e) => panic!("alerts/dashboards/weir-jobs.json: {e}"),
    };
    assert_eq!(d["uid"], "weir-jobs");
    let panels = d["panels"].as_array().cloned().unwrap_or_default();
    assert!(panels.len() >= 10);
    let ids: BTreeSet<_> = panels.iter().map(|p| p["id"].as_i64()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids must be unique");
    let used = series_in(DASHBOARD);
    for s in &used {
        assert!(
            SERIES.contains(&s.as_str()),
            "unknown series {s} in the dashboard"
        );
    }
    assert!(used.len() >= 11, "dashboard shows {used:?}");
}
