//! AlertSubscription checks for its status: whether each channel (and the fallback) can be
//! used, and the Ready / ChannelsValid conditions that follow.

use crate::alerting::notify::resolver::secret_refs;
use crate::alerting::notify::{ChannelResolver, SecretData};
use crate::alerting::routing::FALLBACK_CHANNEL_NAME;
use std::collections::BTreeSet;
use weir_crds::alert_subscription::{AlertSubscriptionSpec, ChannelStatus};
use weir_crds::Condition;

/// The Secret names a subscription reads (so the controller fetches and watches just these).
pub fn required_secrets(spec: &AlertSubscriptionSpec) -> BTreeSet<String> {
    spec.channels
        .iter()
        .chain(spec.fallback.as_ref())
        .flat_map(secret_refs)
        .map(|r| r.name.clone())
        .collect()
}

/// Each channel's status, in order, then the fallback's (if set): `ready`, or why not.
pub fn check_channels(
    spec: &AlertSubscriptionSpec,
    secrets: &SecretData,
    resolver: &ChannelResolver,
) -> Vec<ChannelStatus> {
    let fallback = spec.fallback.as_ref().map(|f| {
        let name = f
            .name
            .clone()
            .unwrap_or_else(|| FALLBACK_CHANNEL_NAME.to_string());
        (name, f)
    });
    spec.channels
        .iter()
        .enumerate()
        .map(|(i, c)| (c.display_name(i), c))
        .chain(fallback)
        .map(|(name, c)| match resolver.resolve(c, &name, secrets) {
            Ok(n) => ChannelStatus {
                name,
                ready: true,
                message: format!("{} channel ready", n.kind()),
                last_delivery: None,
            },
            Err(e) => ChannelStatus {
                name,
                ready: false,
                message: e.to_string(),
                last_delivery: None,
            },
        })
        .collect()
}

/// The `ChannelsValid` condition: True when every channel resolves; otherwise False with
/// reason `ChannelInvalid` and the broken channels' messages (the working ones still send).
pub fn channels_condition(statuses: &[ChannelStatus]) -> Condition {
    let broken: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.message.as_str())
        .collect();
    if broken.is_empty() {
        Condition::new(
            "ChannelsValid",
            true,
            "AllChannelsValid",
            format!("{} channel(s) ready", statuses.len()),
        )
    } else {
        Condition::new(
            "ChannelsValid",
            false,
            "ChannelInvalid",
            format!(
                "{} of {} channel(s) unusable: {}",
                broken.len(),
                statuses.len(),
                broken.join("; ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use weir_crds::alert_subscription::{ChannelSpec, SecretKeyRef, WebhookChannel};

    fn hook(secret: &str, key: &str) -> Option<WebhookChannel> {
        Some(WebhookChannel {
            url_secret: SecretKeyRef {
                name: secret.into(),
                key: key.into(),
            },
            sign_secret: None,
        })
    }

    #[test]
    fn one_broken_channel_is_reported_and_the_others_stay_ready() {
        let spec = AlertSubscriptionSpec {
            channels: vec![
                ChannelSpec {
                    slack: hook("chat", "slack"),
                    ..Default::default()
                },
                ChannelSpec {
                    name: Some("ops-wecom".into()),
                    wecom: hook("chat", "wecom"),
                    ..Default::default()
                },
            ],
            fallback: Some(ChannelSpec {
                webhook: hook("pager", "url"),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            required_secrets(&spec),
            BTreeSet::from(["chat".to_string(), "pager".to_string()])
        );
        let secrets: SecretData = BTreeMap::from([(
            "chat".to_string(),
            BTreeMap::from([(
                "slack".to_string(),
                b"https://hooks.slack.com/services/T/B/X".to_vec(),
            )]),
        )]);
        let st = check_channels(
            &spec,
            &secrets,
            &ChannelResolver::new(reqwest::Client::new(), None),
        );
        assert_eq!(st.len(), 3);
        assert_eq!((st[0].name.as_str(), st[0].ready), ("slack-0", true));
        assert_eq!(st[1].name, "ops-wecom");
        assert_eq!(
            st[1].message,
            "channel 'ops-wecom': Secret 'chat' has no key 'wecom'"
        );
        assert_eq!(
            st[2].message,
            "channel 'fallback': Secret 'pager' not found"
        );
        let c = channels_condition(&st);
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "ChannelInvalid")
        );
        assert!(c
            .message
            .starts_with("2 of 3 channel(s) unusable: channel 'ops-wecom'"));
    }
}
