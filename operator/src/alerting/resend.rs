//! Re-sends of firing alerts to channels that forget an alert unless told again (Alertmanager
//! drops it after its `endsAt`), every channel's own `resendInterval`, apart from the
//! subscription's `repeatInterval` (which still governs the other channels).
//!
//! Pure: the engine keeps the last re-send time per subscription channel in the alert's record.

use crate::alerting::routing::Subscription;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

/// The key of one subscription channel in an alert's re-send times: `<namespace/name>/<channel>`.
pub fn resend_key(subscription: &str, channel: &str) -> String {
    format!("{subscription}/{channel}")
}

/// The indices of `sub`'s channels due a re-send of a firing alert at `now`, recording the
/// re-send in `resent`. `notified_now`: the alert goes to every channel this round anyway
/// (first send, repeat, escalation), so only the clocks restart. A channel never sent to is
/// counted from `last_notified`, the subscription's last notification of the alert.
pub fn due_resends(
    sub: &Subscription,
    resent: &mut BTreeMap<String, DateTime<Utc>>,
    last_notified: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    notified_now: bool,
) -> Vec<usize> {
    let sk = sub.key();
    let mut due = Vec::new();
    for (i, channel) in sub.spec.channels.iter().enumerate() {
        let Some(interval) = channel.resend_interval() else {
            continue;
        };
        let key = resend_key(&sk, &channel.display_name(i));
        let interval = chrono::Duration::from_std(interval).unwrap_or(chrono::Duration::minutes(1));
        let last = resent.get(&key).copied().or(last_notified);
        if notified_now {
            resent.insert(key, now);
        } else if last.is_none_or(|t| now - t >= interval) {
            resent.insert(key, now);
            due.push(i);
        }
    }
    due
}

/// Forgets the re-send times of one subscription (the alert no longer goes to it).
pub fn forget(resent: &mut BTreeMap<String, DateTime<Utc>>, subscription: &str) {
    let prefix = format!("{subscription}/");
    resent.retain(|k, _| !k.starts_with(&prefix));
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use weir_crds::alert_subscription::{
        AlertSubscriptionSpec, AlertmanagerChannel, ChannelSpec, EmailChannel,
    };
    use weir_crds::duration::Dur;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
            .single()
            .unwrap_or_default()
            + chrono::Duration::seconds(secs)
    }

    fn sub() -> Subscription {
        Subscription {
            namespace: "ads".into(),
            name: "oncall".into(),
            spec: AlertSubscriptionSpec {
                channels: vec![
                    ChannelSpec {
                        email: Some(EmailChannel {
                            to: vec!["a@example.com".into()],
                        }),
                        ..Default::default()
                    },
                    ChannelSpec {
                        alertmanager: Some(AlertmanagerChannel {
                            url: "http://am:9093".into(),
                            resend_interval: Dur::secs(60),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            },
        }
    }

    #[test]
    fn only_resending_channels_are_due_on_their_interval() {
        let s = sub();
        let mut resent = BTreeMap::new();
        assert!(
            due_resends(&s, &mut resent, None, t(0), true).is_empty(),
            "the first notification goes to every channel"
        );
        assert_eq!(resent.get("ads/oncall/alertmanager-1"), Some(&t(0)));
        assert!(due_resends(&s, &mut resent, Some(t(0)), t(30), false).is_empty());
        assert_eq!(
            due_resends(&s, &mut resent, Some(t(0)), t(60), false),
            vec![1]
        );
        assert!(due_resends(&s, &mut resent, Some(t(0)), t(90), false).is_empty());
        assert_eq!(
            due_resends(&s, &mut resent, Some(t(0)), t(125), false),
            vec![1]
        );
        let mut fresh = BTreeMap::new();
        assert_eq!(
            due_resends(&s, &mut fresh, Some(t(0)), t(61), false),
            vec![1],
            "without a record, counted from the last notification"
        );
        forget(&mut resent, "ads/oncall");
        assert!(resent.is_empty());
    }
}
