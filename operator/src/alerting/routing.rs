//! Which subscriptions receive a job's alert: selector (labels, names), minimum severity and
//! mute windows.

use chrono::{DateTime, Datelike, Timelike, Utc, Weekday};
use std::collections::BTreeMap;
use weir_crds::alert_subscription::{AlertSubscriptionSpec, ChannelSpec, MuteWindow};
use weir_crds::stream_job::Severity;

/// An `AlertSubscription` as the engine sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Subscription {
    /// Namespace; it covers jobs in this namespace only.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Spec.
    pub spec: AlertSubscriptionSpec,
}

/// The job facts routing needs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobRouting {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.labels` overlaid with `spec.alerting.labels`.
    pub labels: BTreeMap<String, String>,
}

/// The name of a subscription's fallback channel when it has none of its own.
pub const FALLBACK_CHANNEL_NAME: &str = "fallback";

impl Subscription {
    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the subscription covers this job at all (namespace and selector).
    pub fn selects(&self, job: &JobRouting) -> bool {
        let sel = &self.spec.selector;
        job.namespace == self.namespace
            && (sel.match_names.is_empty() || sel.match_names.contains(&job.name))
            && sel
                .match_labels
                .iter()
                .all(|(k, v)| job.labels.get(k) == Some(v))
    }

    /// Whether an alert of this severity on this job goes to this subscription.
    pub fn routes(&self, job: &JobRouting, severity: Severity) -> bool {
        severity >= self.spec.min_severity && self.selects(job)
    }

    /// Whether a mute window covers `now`.
    pub fn muted(&self, now: DateTime<Utc>) -> bool {
        self.spec.mute_windows.iter().any(|w| window_covers(w, now))
    }

    /// The channels' names, in order (`name`, or `<kind>-<index>`).
    pub fn channel_names(&self) -> Vec<String> {
        self.spec
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| c.display_name(i))
            .collect()
    }

    /// The fallback channel's name, if there is one.
    pub fn fallback_name(&self) -> Option<String> {
        self.spec.fallback.as_ref().map(|f| {
            f.name
                .clone()
                .unwrap_or_else(|| FALLBACK_CHANNEL_NAME.to_string())
        })
    }

    /// The channel spec for a name from [`Self::channel_names`] or [`Self::fallback_name`].
    pub fn channel(&self, name: &str, fallback: bool) -> Option<&ChannelSpec> {
        if fallback {
            return self.spec.fallback.as_ref();
        }
        self.spec
            .channels
            .iter()
            .enumerate()
            .find(|(i, c)| c.display_name(*i) == name)
            .map(|(_, c)| c)
    }
}

fn minutes(hhmm: &str) -> Option<u32> {
    let (h, m) = hhmm.split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

fn weekday(name: &str) -> Option<Weekday> {
    match name.to_ascii_lowercase().get(..3)? {
        "mon" => Some(Weekday::Mon),
        "tue" => Some(Weekday::Tue),
        "wed" => Some(Weekday::Wed),
        "thu" => Some(Weekday::Thu),
        "fri" => Some(Weekday::Fri),
        "sat" => Some(Weekday::Sat),
        "sun" => Some(Weekday::Sun),
        _ => None,
    }
}

/// Whether the window covers `now` (UTC). A window ending before it starts spans midnight and
/// belongs to the day it starts on; `start == end` covers the whole day. Malformed windows
/// (rejected by the CRD schema) cover nothing.
pub fn window_covers(w: &MuteWindow, now: DateTime<Utc>) -> bool {
    let (Some(start), Some(end)) = (minutes(&w.start), minutes(&w.end)) else {
        return false;
    };
    let day_ok = |d: Weekday| w.days.is_empty() || w.days.iter().any(|n| weekday(n) == Some(d));
    let t = now.hour() * 60 + now.minute();
    let today = now.weekday();
    if start == end {
        day_ok(today)
    } else if start < end {
        day_ok(today) && t >= start && t < end
    } else {
        (t >= start && day_ok(today)) || (t < end && day_ok(today.pred()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use weir_crds::alert_subscription::JobSelector;

    fn sub(labels: &[(&str, &str)], names: &[&str], min: Severity) -> Subscription {
        Subscription {
            namespace: "ads".into(),
            name: "oncall".into(),
            spec: AlertSubscriptionSpec {
                selector: JobSelector {
                    match_labels: labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    match_names: names.iter().map(|n| n.to_string()).collect(),
                },
                min_severity: min,
                ..Default::default()
            },
        }
    }

    fn job(name: &str, labels: &[(&str, &str)]) -> JobRouting {
        JobRouting {
            namespace: "ads".into(),
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn selector_matches_labels_names_and_namespace() {
        let s = sub(&[("team", "ads")], &[], Severity::Warning);
        assert!(s.routes(&job("a", &[("team", "ads")]), Severity::Warning));
        assert!(!s.routes(&job("a", &[("team", "ads")]), Severity::Info));
        assert!(!s.routes(&job("a", &[("team", "feed")]), Severity::Critical));
        let mut other_ns = job("a", &[("team", "ads")]);
        other_ns.namespace = "feed".into();
        assert!(!s.routes(&other_ns, Severity::Critical));
        let named = sub(&[], &["b"], Severity::Info);
        assert!(named.routes(&job("b", &[]), Severity::Info));
        assert!(!named.routes(&job("a", &[]), Severity::Info));
    }

    #[test]
    fn mute_windows_cover_ranges_midnight_and_days() {
        let at = |d, h, m| {
            Utc.with_ymd_and_hms(2026, 11, d, h, m, 0)
                .single()
                .unwrap_or_default()
        };
        // 2026-11-21 is a Saturday.
        let w = |s: &str, e: &str, days: &[&str]| MuteWindow {
            start: s.into(),
            end: e.into(),
            days: days.iter().map(|d| d.to_string()).collect(),
        };
        assert!(window_covers(&w("09:00", "17:00", &[]), at(21, 12, 0)));
        assert!(!window_covers(&w("09:00", "17:00", &[]), at(21, 17, 0)));
        assert!(
            window_covers(&w("22:00", "06:00", &["fri"]), at(21, 5, 59)),
            "Friday night into Saturday"
        );
        assert!(
            !window_covers(&w("22:00", "06:00", &["fri"]), at(21, 22, 30)),
            "Saturday night is not Friday's"
        );
        assert!(window_covers(
            &w("00:00", "00:00", &["sat", "sun"]),
            at(22, 3, 0)
        ));
        assert!(!window_covers(
            &w("00:00", "00:00", &["sat", "sun"]),
            at(23, 3, 0)
        ));
    }
}
