//! Each delivery's outcome in the AlertSubscription's `status.channels[].lastDelivery`: what
//! was sent, when, whether it arrived and, if not, the error and what happens next.

use crate::alerting::delivery::DeliveryReport;
use crate::alerting::dispatch::Disposition;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use weir_crds::alert_subscription::{ChannelDelivery, ChannelStatus};

/// The `outcome` word for a disposition.
pub fn outcome_name(disposition: &Disposition) -> &'static str {
    match disposition {
        Disposition::Delivered => "Delivered",
        Disposition::Retrying { .. } => "Retrying",
        Disposition::Diverted { .. } => "Diverted",
        Disposition::GaveUp | Disposition::Unknown => "GaveUp",
    }
}

/// The reports of one round by subscription (`namespace/name`), in order.
pub fn by_subscription(reports: &[DeliveryReport]) -> BTreeMap<String, Vec<&DeliveryReport>> {
    let mut map: BTreeMap<String, Vec<&DeliveryReport>> = BTreeMap::new();
    for r in reports {
        map.entry(r.target.subscription.clone())
            .or_default()
            .push(r);
    }
    map
}

/// `channels` with `lastDelivery` set from `reports` (all of one subscription; a later report
/// on the same channel wins). A report for a channel the status does not list yet (the
/// subscription controller has not checked it) is left out; the fallback channel is the
/// last entry with its name.
pub fn with_deliveries(
    channels: &[ChannelStatus],
    reports: &[&DeliveryReport],
    now: DateTime<Utc>,
) -> Vec<ChannelStatus> {
    let mut out = channels.to_vec();
    for r in reports {
        let named = |c: &ChannelStatus| c.name == r.target.channel;
        let index = if r.target.fallback {
            out.iter().rposition(named)
        } else {
            out.iter().position(named)
        };
        let Some(i) = index else { continue };
        out[i].last_delivery = Some(ChannelDelivery {
            time: now,
            outcome: outcome_name(&r.disposition).to_string(),
            title: r.title.clone(),
            attempt: r.attempt,
            error: r.error.clone().unwrap_or_default(),
        });
    }
    out
}

/// `fresh` (the controller's check of each channel) keeping the `lastDelivery` that `previous`
/// recorded for channels of the same name.
pub fn keep_deliveries(
    previous: &[ChannelStatus],
    fresh: Vec<ChannelStatus>,
) -> Vec<ChannelStatus> {
    fresh
        .into_iter()
        .map(|mut c| {
            if c.last_delivery.is_none() {
                c.last_delivery = previous
                    .iter()
                    .find(|p| p.name == c.name)
                    .and_then(|p| p.last_delivery.clone());
            }
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::dispatch::ChannelTarget;

    fn report(
        channel: &str,
        fallback: bool,
        d: Disposition,
        error: Option<&str>,
    ) -> DeliveryReport {
        DeliveryReport {
            target: ChannelTarget {
                subscription: "ads/oncall".into(),
                channel: channel.into(),
                fallback,
                kind: "webhook".into(),
                endpoint: String::new(),
            },
            attempt: 2,
            error: error.map(String::from),
            disposition: d,
            jobs: vec![("ads".into(), "ctr".into())],
            title: "[CRITICAL] ads/ctr: backpressure high".into(),
        }
    }

    fn channel(name: &str) -> ChannelStatus {
        ChannelStatus {
            name: name.into(),
            ready: true,
            message: "webhook channel ready".into(),
            last_delivery: None,
        }
    }

    #[test]
    fn each_channel_shows_its_last_outcome_and_error() {
        let now = Utc::now();
        let channels = [channel("mail"), channel("chat"), channel("fallback")];
        let sent = report("mail", false, Disposition::Delivered, None);
        let failed = report(
            "chat",
            false,
            Disposition::Retrying { at: now },
            Some("dingtalk: HTTP 500: busy"),
        );
        let unknown = report("gone", false, Disposition::GaveUp, Some("x"));
        let out = with_deliveries(&channels, &[&sent, &failed, &unknown], now);
        assert_eq!(out.len(), 3);
        let mail = out[0].last_delivery.clone().unwrap_or_default();
        assert_eq!(
            (mail.outcome.as_str(), mail.error.as_str(), mail.attempt),
            ("Delivered", "", 2)
        );
        assert_eq!(mail.title, "[CRITICAL] ads/ctr: backpressure high");
        let chat = out[1].last_delivery.clone().unwrap_or_default();
        assert_eq!(
            (chat.outcome.as_str(), chat.error.as_str()),
            ("Retrying", "dingtalk: HTTP 500: busy")
        );
        assert_eq!(out[2].last_delivery, None);

        // A later success on the same channel replaces the failure; the others are kept.
        let ok = report("chat", false, Disposition::Delivered, None);
        let out = with_deliveries(&out, &[&ok], now);
        let chat = out[1].last_delivery.clone().unwrap_or_default();
        assert_eq!(
            (chat.outcome.as_str(), chat.error.as_str()),
            ("Delivered", "")
        );
        assert_eq!(
            out[0].last_delivery.as_ref().map(|d| d.outcome.as_str()),
            Some("Delivered")
        );
    }

    #[test]
    fn the_fallback_is_the_last_entry_of_its_name_and_gave_up_is_said() {
        let now = Utc::now();
        let channels = [channel("pager"), channel("pager")];
        let r = report("pager", true, Disposition::GaveUp, Some("HTTP 404"));
        let out = with_deliveries(&channels, &[&r], now);
        assert_eq!(out[0].last_delivery, None);
        assert_eq!(
            out[1].last_delivery.as_ref().map(|d| d.outcome.as_str()),
            Some("GaveUp")
        );
    }

    #[test]
    fn a_fresh_channel_check_keeps_the_recorded_deliveries() {
        let now = Utc::now();
        let r = report("mail", false, Disposition::Delivered, None);
        let previous = with_deliveries(&[channel("mail"), channel("old")], &[&r], now);
        let fresh = vec![
            ChannelStatus {
                ready: false,
                message: "Secret 'smtp' not found".into(),
                ..channel("mail")
            },
            channel("new"),
        ];
        let kept = keep_deliveries(&previous, fresh);
        assert!(!kept[0].ready);
        assert_eq!(kept[0].last_delivery, previous[0].last_delivery);
        assert_eq!(kept[1].last_delivery, None);
    }

    #[test]
    fn reports_are_grouped_by_subscription() {
        let mut other = report("mail", false, Disposition::Delivered, None);
        other.target.subscription = "ads/team".into();
        let reports = [
            report("mail", false, Disposition::Delivered, None),
            other,
            report("chat", false, Disposition::GaveUp, None),
        ];
        let grouped = by_subscription(&reports);
        assert_eq!(
            grouped.keys().collect::<Vec<_>>(),
            ["ads/oncall", "ads/team"]
        );
        assert_eq!(grouped["ads/oncall"].len(), 2);
    }
}
