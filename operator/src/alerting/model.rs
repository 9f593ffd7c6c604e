//! What a notifier is asked to send: alerts grouped per job, one group per job (a rate-limit
//! digest carries several groups).

use crate::alerting::rules::severity_str;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use weir_crds::stream_job::Severity;

/// Whether an alert is firing or has resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AlertStatus {
    /// The condition holds (and has for the rule's `for`).
    Firing,
    /// The condition stopped holding.
    Resolved,
}

impl AlertStatus {
    /// `firing` or `resolved`, as Alertmanager spells it.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

/// One alert in a notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Rule name (label `alertname`).
    pub rule: String,
    /// Severity.
    pub severity: Severity,
    /// Firing or resolved.
    pub status: AlertStatus,
    /// Rendered summary.
    pub summary: String,
    /// Rendered description.
    pub description: String,
    /// The rule's value when last evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The threshold crossed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// When it started firing.
    pub starts_at: DateTime<Utc>,
    /// When it resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    /// Labels: `alertname`, `severity`, `namespace`, `job` and the job's `spec.alerting.labels`.
    pub labels: BTreeMap<String, String>,
}

impl Alert {
    /// A stable identity of the alert: hex SHA-256 of its sorted labels, first 16 digits.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (k, v) in &self.labels {
            if k == "severity" {
                continue; // an escalation is the same alert
            }
            h.update(k.as_bytes());
            h.update([0xff]);
            h.update(v.as_bytes());
            h.update([0xff]);
        }
        hex::encode(h.finalize())[..16].to_string()
    }

    /// The alert's annotations (summary, description, value, threshold).
    pub fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::from([
            ("summary".to_string(), self.summary.clone()),
            ("description".to_string(), self.description.clone()),
        ]);
        if let Some(v) = self.value {
            a.insert("value".into(), crate::alerting::template::format_number(v));
        }
        if let Some(t) = self.threshold {
            a.insert(
                "threshold".into(),
                crate::alerting::template::format_number(t),
            );
        }
        a
    }
}

/// Alerts of one job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertGroup {
    /// Job namespace.
    pub namespace: String,
    /// Job name.
    pub job: String,
    /// The alerts being notified now.
    pub alerts: Vec<Alert>,
}

/// One message to one channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// The subscription, `namespace/name`.
    pub receiver: String,
    /// One group per job; more than one only in a rate-limit digest.
    pub groups: Vec<AlertGroup>,
    /// Link to the operator or a dashboard, if configured.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub external_url: String,
}

impl Notification {
    /// Every alert, group by group.
    pub fn alerts(&self) -> impl Iterator<Item = (&AlertGroup, &Alert)> {
        self.groups
            .iter()
            .flat_map(|g| g.alerts.iter().map(move |a| (g, a)))
    }

    /// Firing if any alert fires, else resolved.
    pub fn status(&self) -> AlertStatus {
        if self.alerts().any(|(_, a)| a.status == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        }
    }

    /// The highest severity among firing alerts (among all alerts if none fires).
    pub fn severity(&self) -> Severity {
        let status = self.status();
        self.alerts()
            .filter(|(_, a)| a.status == status)
            .map(|(_, a)| a.severity)
            .max()
            .unwrap_or_default()
    }

    /// Whether this bundles several jobs' notifications (a rate-limit digest).
    pub fn is_digest(&self) -> bool {
        self.groups.len() > 1
    }

    /// A one-line title: `[CRITICAL] ns/job: summary (+N more)`, `[RESOLVED] ...`, or for a
    /// digest `[CRITICAL] digest: N alerts for M jobs`.
    pub fn title(&self) -> String {
        let tag = match self.status() {
            AlertStatus::Firing => severity_str(self.severity()).to_uppercase(),
            AlertStatus::Resolved => "RESOLVED".to_string(),
        };
        let n = self.alerts().count();
        if self.is_digest() {
            return format!("[{tag}] digest: {n} alerts for {} jobs", self.groups.len());
        }
        let status = self.status();
        let first = self
            .alerts()
            .filter(|(_, a)| a.status == status)
            .max_by_key(|(_, a)| a.severity);
        match first {
            Some((g, a)) if n > 1 => format!(
                "[{tag}] {}/{}: {} (+{} more)",
                g.namespace,
                g.job,
                a.summary,
                n - 1
            ),
            Some((g, a)) => format!("[{tag}] {}/{}: {}", g.namespace, g.job, a.summary),
            None => format!("[{tag}] no alerts"),
        }
    }

    /// Labels every alert shares.
    pub fn common_labels(&self) -> BTreeMap<String, String> {
        common(self.alerts().map(|(_, a)| a.labels.clone()))
    }

    /// Annotations every alert shares.
    pub fn common_annotations(&self) -> BTreeMap<String, String> {
        common(self.alerts().map(|(_, a)| a.annotations()))
    }
}

fn common(mut maps: impl Iterator<Item = BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let Some(mut acc) = maps.next() else {
        return BTreeMap::new();
    };
    for m in maps {
        acc.retain(|k, v| m.get(k) == Some(v));
    }
    acc
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Notifications used by the notifier and engine tests.
    use super::*;
    use chrono::TimeZone;

    /// A firing critical backpressure alert on ads/ctr-samples.
    pub fn alert(rule: &str, severity: Severity, status: AlertStatus) -> Alert {
        let starts_at = Utc
            .with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
            .single()
            .unwrap_or_default();
        Alert {
            rule: rule.into(),
            severity,
            status,
            summary: format!("{rule} on ctr-samples"),
            description: "Tasks spent 85% of the time blocked on the sink.".into(),
            value: Some(0.85),
            threshold: Some(0.8),
            starts_at,
            ends_at: (status == AlertStatus::Resolved)
                .then(|| starts_at + chrono::Duration::minutes(7)),
            labels: BTreeMap::from([
                ("alertname".into(), rule.into()),
                ("severity".into(), severity_str(severity).into()),
                ("namespace".into(), "ads".into()),
                ("job".into(), "ctr-samples".into()),
                ("team".into(), "ads".into()),
            ]),
        }
    }

    /// One job, the given alerts.
    pub fn notification(alerts: Vec<Alert>) -> Notification {
        Notification {
            receiver: "ads/ads-oncall".into(),
            groups: vec![AlertGroup {
                namespace: "ads".into(),
                job: "ctr-samples".into(),
                alerts,
            }],
            external_url: "https://weir.example.com".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;

    #[test]
    fn title_names_severity_job_and_extra_count() {
        let n = notification(vec![
            alert("backpressureHigh", Severity::Warning, AlertStatus::Firing),
            alert("restartLoop", Severity::Critical, AlertStatus::Firing),
        ]);
        assert_eq!(
            n.title(),
            "[CRITICAL] ads/ctr-samples: restartLoop on ctr-samples (+1 more)"
        );
        let r = notification(vec![alert(
            "jobFailed",
            Severity::Critical,
            AlertStatus::Resolved,
        )]);
        assert_eq!(
            r.title(),
            "[RESOLVED] ads/ctr-samples: jobFailed on ctr-samples"
        );
    }

    #[test]
    fn fingerprint_ignores_severity_and_common_labels_intersect() {
        let a = alert("x", Severity::Warning, AlertStatus::Firing);
        let b = alert("x", Severity::Critical, AlertStatus::Firing);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint().len(), 16);
        let n = notification(vec![a, alert("y", Severity::Warning, AlertStatus::Firing)]);
        let common = n.common_labels();
        assert_eq!(common.get("job").map(String::as_str), Some("ctr-samples"));
        assert!(!common.contains_key("alertname"));
    }
}
