//! Turns a `ChannelSpec` and the Secret data it refers to into a [`Notifier`], or an error that
//! names the channel and the missing Secret, key or bad URL (so the AlertSubscription can say
//! which channel is broken while the others keep working).

use crate::alerting::notify::alertmanager::{AlertmanagerAuth, AlertmanagerNotifier};
use crate::alerting::notify::dingtalk::DingTalkNotifier;
use crate::alerting::notify::email::{EmailConfigError, EmailNotifier, SmtpSettings};
use crate::alerting::notify::feishu::FeishuNotifier;
use crate::alerting::notify::slack::SlackNotifier;
use crate::alerting::notify::teams::TeamsNotifier;
use crate::alerting::notify::webhook::WebhookNotifier;
use crate::alerting::notify::wecom::WeComNotifier;
use crate::alerting::notify::Notifier;
use std::collections::BTreeMap;
use std::sync::Arc;
use weir_crds::alert_subscription::{
    AlertmanagerChannel, ChannelSpec, SecretKeyRef, WebhookChannel,
};

/// Secret contents as read from Kubernetes: Secret name → key → bytes (`data`, decoded).
pub type SecretData = BTreeMap<String, BTreeMap<String, Vec<u8>>>;

/// Why a channel cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    /// No kind field is set.
    #[error(
        "channel '{channel}': set one of email, slack, dingtalk, feishu, wecom, teams, webhook, alertmanager"
    )]
    NoKind {
        /// Channel name.
        channel: String,
    },
    /// More than one kind field is set.
    #[error("channel '{channel}': set only one kind, found {kinds}")]
    SeveralKinds {
        /// Channel name.
        channel: String,
        /// The kinds set, comma-separated.
        kinds: String,
    },
    /// The Secret does not exist (or cannot be read).
    #[error("channel '{channel}': Secret '{secret}' not found")]
    MissingSecret {
        /// Channel name.
        channel: String,
        /// Secret name.
        secret: String,
    },
    /// The Secret lacks the key.
    #[error("channel '{channel}': Secret '{secret}' has no key '{key}'")]
    MissingKey {
        /// Channel name.
        channel: String,
        /// Secret name.
        secret: String,
        /// Key.
        key: String,
    },
    /// The value is not UTF-8 text or is empty.
    #[error("channel '{channel}': Secret '{secret}' key '{key}' is {problem}")]
    BadValue {
        /// Channel name.
        channel: String,
        /// Secret name.
        secret: String,
        /// Key.
        key: String,
        /// `empty` or `not UTF-8 text`.
        problem: &'static str,
    },
    /// The URL is not an absolute http(s) URL.
    #[error("channel '{channel}': Secret '{secret}' key '{key}' is not a usable URL: {reason}")]
    BadUrl {
        /// Channel name.
        channel: String,
        /// Secret name.
        secret: String,
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
    /// A URL written in the spec is not an absolute http(s) URL.
    #[error("channel '{channel}': {field} is not a usable URL: {reason}")]
    BadSpecUrl {
        /// Channel name.
        channel: String,
        /// The field, e.g. `alertmanager.url`.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Two ways of authenticating are set where only one can be used.
    #[error("channel '{channel}': set at most one of {fields}")]
    ConflictingAuth {
        /// Channel name.
        channel: String,
        /// The fields, e.g. `alertmanager.bearerTokenSecret, alertmanager.basicAuth`.
        fields: &'static str,
    },
    /// An email channel but the operator has no SMTP settings.
    #[error(
        "channel '{channel}': email needs the operator's SMTP settings, which are not configured"
    )]
    NoSmtp {
        /// Channel name.
        channel: String,
    },
    /// A signing secret on a kind that has no request signing.
    #[error("channel '{channel}': {kind} does not support signSecret; remove it")]
    SignNotSupported {
        /// Channel name.
        channel: String,
        /// Channel kind.
        kind: &'static str,
    },
    /// The email settings or addresses are wrong.
    #[error("channel '{channel}': {source}")]
    Email {
        /// Channel name.
        channel: String,
        /// What is wrong.
        source: EmailConfigError,
    },
}

/// Builds notifiers; holds the shared HTTP client and the operator's SMTP settings.
#[derive(Clone, Debug)]
pub struct ChannelResolver {
    client: reqwest::Client,
    smtp: Option<SmtpSettings>,
}

/// The Secret keys a channel reads (URL first, then the signing secret; for Alertmanager its
/// credentials).
pub fn secret_refs(channel: &ChannelSpec) -> Vec<&SecretKeyRef> {
    if let Some(am) = &channel.alertmanager {
        return am
            .bearer_token_secret
            .iter()
            .chain(
                am.basic_auth
                    .iter()
                    .flat_map(|b| [&b.username_secret, &b.password_secret]),
            )
            .collect();
    }
    [
        &channel.slack,
        &channel.dingtalk,
        &channel.feishu,
        &channel.wecom,
        &channel.teams,
        &channel.webhook,
    ]
    .into_iter()
    .flatten()
    .flat_map(|w| std::iter::once(&w.url_secret).chain(w.sign_secret.as_ref()))
    .collect()
}

impl ChannelResolver {
    /// A resolver using `client` for webhooks and `smtp` (if any) for email.
    pub fn new(client: reqwest::Client, smtp: Option<SmtpSettings>) -> Self {
        ChannelResolver { client, smtp }
    }

    /// The notifier for `channel` (named `name` in errors), reading URLs and signing secrets
    /// from `secrets`.
    pub fn resolve(
        &self,
        channel: &ChannelSpec,
        name: &str,
        secrets: &SecretData,
    ) -> Result<Arc<dyn Notifier>, ChannelError> {
        let kinds = channel.kinds();
        match kinds.len() {
            0 => {
                return Err(ChannelError::NoKind {
                    channel: name.to_string(),
                })
            }
            1 => {}
            _ => {
                return Err(ChannelError::SeveralKinds {
                    channel: name.to_string(),
                    kinds: kinds.join(", "),
                })
            }
        }
        if let Some(email) = &channel.email {
            let smtp = self.smtp.as_ref().ok_or_else(|| ChannelError::NoSmtp {
                channel: name.to_string(),
            })?;
            let n = EmailNotifier::new(smtp, &email.to).map_err(|source| ChannelError::Email {
                channel: name.to_string(),
                source,
            })?;
            return Ok(Arc::new(n));
        }
        let c = self.client.clone();
        if let Some(am) = &channel.alertmanager {
            return Ok(Arc::new(alertmanager(c, name, am, secrets)?));
        }
        let hook =
            |w: &Option<WebhookChannel>| -> Result<Option<(String, Option<String>)>, ChannelError> {
                let Some(w) = w else { return Ok(None) };
                let url = url_value(name, &w.url_secret, secrets)?;
                let sign = w
                    .sign_secret
                    .as_ref()
                    .map(|s| text_value(name, s, secrets))
                    .transpose()?;
                Ok(Some((url, sign)))
            };
        if let Some((url, sign)) = hook(&channel.dingtalk)? {
            return Ok(Arc::new(DingTalkNotifier::new(c, url, sign)));
        }
        if let Some((url, sign)) = hook(&channel.feishu)? {
            return Ok(Arc::new(FeishuNotifier::new(c, url, sign)));
        }
        if let Some((url, sign)) = hook(&channel.webhook)? {
            return Ok(Arc::new(WebhookNotifier::new(c, url, sign)));
        }
        let unsigned = |kind: &'static str, sign: Option<String>| match sign {
            Some(_) => Err(ChannelError::SignNotSupported {
                channel: name.to_string(),
                kind,
            }),
            None => Ok(()),
        };
        if let Some((url, sign)) = hook(&channel.slack)? {
            unsigned("slack", sign)?;
            return Ok(Arc::new(SlackNotifier::new(c, url)));
        }
        if let Some((url, sign)) = hook(&channel.wecom)? {
            unsigned("wecom", sign)?;
            return Ok(Arc::new(WeComNotifier::new(c, url)));
        }
        if let Some((url, sign)) = hook(&channel.teams)? {
            unsigned("teams", sign)?;
            return Ok(Arc::new(TeamsNotifier::new(c, url)));
        }
        Err(ChannelError::NoKind {
            channel: name.to_string(),
        })
    }
}

/// The Alertmanager notifier: URL from the spec, credentials from Secrets.
fn alertmanager(
    client: reqwest::Client,
    name: &str,
    am: &AlertmanagerChannel,
    secrets: &SecretData,
) -> Result<AlertmanagerNotifier, ChannelError> {
    check_url(am.url.trim()).map_err(|reason| ChannelError::BadSpecUrl {
        channel: name.to_string(),
        field: "alertmanager.url",
        reason,
    })?;
    let auth = match (&am.bearer_token_secret, &am.basic_auth) {
        (Some(_), Some(_)) => {
            return Err(ChannelError::ConflictingAuth {
                channel: name.to_string(),
                fields: "alertmanager.bearerTokenSecret, alertmanager.basicAuth",
            })
        }
        (Some(t), None) => Some(AlertmanagerAuth::Bearer(text_value(name, t, secrets)?)),
        (None, Some(b)) => Some(AlertmanagerAuth::Basic {
            username: text_value(name, &b.username_secret, secrets)?,
            password: text_value(name, &b.password_secret, secrets)?,
        }),
        (None, None) => None,
    };
    Ok(AlertmanagerNotifier::new(
        client,
        am.url.trim(),
        auth,
        am.resend_interval.0,
    ))
}

/// A Secret value as trimmed text.
fn text_value(
    channel: &str,
    r: &SecretKeyRef,
    secrets: &SecretData,
) -> Result<String, ChannelError> {
    let secret = secrets
        .get(&r.name)
        .ok_or_else(|| ChannelError::MissingSecret {
            channel: channel.to_string(),
            secret: r.name.clone(),
        })?;
    let bytes = secret.get(&r.key).ok_or_else(|| ChannelError::MissingKey {
        channel: channel.to_string(),
        secret: r.name.clone(),
        key: r.key.clone(),
    })?;
    let bad = |problem| ChannelError::BadValue {
        channel: channel.to_string(),
        secret: r.name.clone(),
        key: r.key.clone(),
        problem,
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|_| bad("not UTF-8 text"))?
        .trim();
    if text.is_empty() {
        return Err(bad("empty"));
    }
    Ok(text.to_string())
}

fn url_value(
    channel: &str,
    r: &SecretKeyRef,
    secrets: &SecretData,
) -> Result<String, ChannelError> {
    let text = text_value(channel, r, secrets)?;
    let bad = |reason: String| ChannelError::BadUrl {
        channel: channel.to_string(),
        secret: r.name.clone(),
        key: r.key.clone(),
        reason,
    };
    check_url(&text).map_err(bad)?;
    Ok(text)
}

/// Whether `text` is an absolute http(s) URL with a host; why not otherwise.
fn check_url(text: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(text).map_err(|e| e.to_string())?;
    if url.scheme() != "https" && url.scheme() != "http" {
        return Err(format!("scheme '{}' is not http or https", url.scheme()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_crds::alert_subscription::{BasicAuth, EmailChannel};

    fn hook(url: &str, sign: Option<&str>) -> Option<WebhookChannel> {
        Some(WebhookChannel {
            url_secret: SecretKeyRef {
                name: "hooks".into(),
                key: url.into(),
            },
            sign_secret: sign.map(|k| SecretKeyRef {
                name: "hooks".into(),
                key: k.into(),
            }),
        })
    }

    fn secrets() -> SecretData {
        BTreeMap::from([(
            "hooks".to_string(),
            BTreeMap::from([
                (
                    "ding".to_string(),
                    b"https://oapi.dingtalk.com/robot/send?access_token=x\n".to_vec(),
                ),
                ("ding-sign".to_string(), b"SECabc".to_vec()),
                ("ftp".to_string(), b"ftp://example.com/x".to_vec()),
                ("junk".to_string(), b"not a url".to_vec()),
                ("blank".to_string(), b"  \n".to_vec()),
            ]),
        )])
    }

    fn resolver(smtp: bool) -> ChannelResolver {
        let smtp = smtp.then(|| SmtpSettings {
            host: "smtp.example.com".into(),
            from: "weir@example.com".into(),
            ..Default::default()
        });
        ChannelResolver::new(reqwest::Client::new(), smtp)
    }

    fn err(c: ChannelSpec, smtp: bool) -> String {
        resolver(smtp)
            .resolve(&c, "ch", &secrets())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn valid_channels_resolve_to_their_kind() {
        let c = ChannelSpec {
            dingtalk: hook("ding", Some("ding-sign")),
            ..Default::default()
        };
        assert_eq!(
            resolver(false)
                .resolve(&c, "ch", &secrets())
                .map(|n| n.kind())
                .ok(),
            Some("dingtalk")
        );
        let e = ChannelSpec {
            email: Some(EmailChannel {
                to: vec!["a@example.com".into()],
            }),
            ..Default::default()
        };
        assert_eq!(
            resolver(true)
                .resolve(&e, "ch", &secrets())
                .map(|n| n.kind())
                .ok(),
            Some("email")
        );
    }

    #[test]
    fn errors_name_channel_secret_and_key() {
        assert_eq!(
            err(
                ChannelSpec {
                    slack: hook("nope", None),
                    ..Default::default()
                },
                false
            ),
            "channel 'ch': Secret 'hooks' has no key 'nope'"
        );
        let mut other = ChannelSpec {
            slack: hook("ding", None),
            ..Default::default()
        };
        if let Some(w) = other.slack.as_mut() {
            w.url_secret.name = "missing".into();
        }
        assert_eq!(
            err(other, false),
            "channel 'ch': Secret 'missing' not found"
        );
        assert_eq!(
            err(
                ChannelSpec {
                    dingtalk: hook("ding", Some("gone")),
                    ..Default::default()
                },
                false
            ),
            "channel 'ch': Secret 'hooks' has no key 'gone'"
        );
        assert_eq!(err(ChannelSpec { teams: hook("ftp", None), ..Default::default() }, false), "channel 'ch': Secret 'hooks' key 'ftp' is not a usable URL: scheme 'ftp' is not http or https");
        assert!(err(
            ChannelSpec {
                webhook: hook("junk", None),
                ..Default::default()
            },
            false
        )
        .starts_with("channel 'ch': Secret 'hooks' key 'junk' is not a usable URL: "));
        assert_eq!(
            err(
                ChannelSpec {
                    wecom: hook("blank", None),
                    ..Default::default()
                },
                false
            ),
            "channel 'ch': Secret 'hooks' key 'blank' is empty"
        );
        assert_eq!(
            err(
                ChannelSpec {
                    slack: hook("ding", Some("ding-sign")),
                    ..Default::default()
                },
                false
            ),
            "channel 'ch': slack does not support signSecret; remove it"
        );
        assert_eq!(
            err(ChannelSpec::default(), false),
            "channel 'ch': set one of email, slack, dingtalk, feishu, wecom, teams, webhook, alertmanager"
        );
        assert_eq!(
            err(
                ChannelSpec {
                    slack: hook("ding", None),
                    wecom: hook("ding", None),
                    ..Default::default()
                },
                false
            ),
            "channel 'ch': set only one kind, found slack, wecom"
        );
        let email = ChannelSpec {
            email: Some(EmailChannel {
                to: vec!["x".into()],
            }),
            ..Default::default()
        };
        assert_eq!(
            err(email.clone(), false),
            "channel 'ch': email needs the operator's SMTP settings, which are not configured"
        );
        assert!(err(email, true).starts_with("channel 'ch': invalid email address 'x'"));
    }

    fn am(url: &str) -> ChannelSpec {
        ChannelSpec {
            alertmanager: Some(AlertmanagerChannel {
                url: url.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn alertmanager_url_is_checked_naming_the_field_and_auth_comes_from_secrets() {
        assert_eq!(
            resolver(false)
                .resolve(&am("http://am.monitoring:9093/"), "ch", &secrets())
                .map(|n| n.kind())
                .ok(),
            Some("alertmanager")
        );
        assert_eq!(
            err(am("am.monitoring:9093"), false),
            "channel 'ch': alertmanager.url is not a usable URL: scheme 'am.monitoring' is not http or https"
        );
        assert!(err(am("not a url"), false)
            .starts_with("channel 'ch': alertmanager.url is not a usable URL: "));
        let key = |k: &str| SecretKeyRef {
            name: "hooks".into(),
            key: k.into(),
        };
        let mut bearer = am("https://am.example.com");
        if let Some(a) = bearer.alertmanager.as_mut() {
            a.bearer_token_secret = Some(key("ding-sign"));
        }
        assert!(resolver(false).resolve(&bearer, "ch", &secrets()).is_ok());
        let mut both = bearer.clone();
        if let Some(a) = both.alertmanager.as_mut() {
            a.basic_auth = Some(BasicAuth {
                username_secret: key("ding-sign"),
                password_secret: key("gone"),
            });
        }
        assert_eq!(
            err(both.clone(), false),
            "channel 'ch': set at most one of alertmanager.bearerTokenSecret, alertmanager.basicAuth"
        );
        if let Some(a) = both.alertmanager.as_mut() {
            a.bearer_token_secret = None;
        }
        assert_eq!(
            err(both.clone(), false),
            "channel 'ch': Secret 'hooks' has no key 'gone'"
        );
        let keys: Vec<_> = secret_refs(&both).iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["ding-sign", "gone"]);
        assert!(secret_refs(&am("http://am:9093")).is_empty());
    }

    #[test]
    fn secret_refs_lists_url_and_sign_keys() {
        let c = ChannelSpec {
            feishu: hook("f", Some("fs")),
            ..Default::default()
        };
        let keys: Vec<_> = secret_refs(&c).iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["f", "fs"]);
    }
}
