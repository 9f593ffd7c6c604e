//! Delivery metrics: `weir_notifications_total{channel,outcome}` (channel = kind, so labels
//! stay bounded).

use crate::alerting::dispatch::Disposition;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of `weir_notifications_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// Channel kind: email, slack, dingtalk, feishu, wecom, teams, webhook.
    pub channel: String,
    /// sent, retrying, fallback, failed.
    pub outcome: String,
}

/// The notification counters.
#[derive(Clone, Debug, Default)]
pub struct NotificationMetrics {
    /// `weir_notifications_total{channel,outcome}`.
    pub notifications: Family<NotificationLabels, Counter>,
}

impl NotificationMetrics {
    /// Creates the metrics and registers them (as `weir_notifications_total`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = NotificationMetrics::default();
        registry.register(
            "weir_notifications",
            "Notification delivery attempts by channel kind and outcome",
            m.notifications.clone(),
        );
        m
    }

    /// Counts one reported delivery by what the outbox did with it.
    pub fn record(&self, channel_kind: &str, disposition: &Disposition) {
        let outcome = match disposition {
            Disposition::Delivered => "sent",
            Disposition::Retrying { .. } => "retrying",
            Disposition::Diverted { .. } => "fallback",
            Disposition::GaveUp => "failed",
            Disposition::Unknown => return,
        };
        self.notifications
            .get_or_create(&NotificationLabels {
                channel: channel_kind.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exposed_with_channel_and_outcome() {
        let mut registry = Registry::default();
        let m = NotificationMetrics::register(&mut registry);
        m.record("dingtalk", &Disposition::Delivered);
        m.record("dingtalk", &Disposition::Delivered);
        m.record("slack", &Disposition::GaveUp);
        m.record("slack", &Disposition::Unknown);
        let mut text = String::new();
        assert!(prometheus_client::encoding::text::encode(&mut text, &registry).is_ok());
        assert!(
            text.contains("weir_notifications_total{channel=\"dingtalk\",outcome=\"sent\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("weir_notifications_total{channel=\"slack\",outcome=\"failed\"} 1"),
            "{text}"
        );
        assert!(!text.contains("outcome=\"unknown\""));
    }
}
