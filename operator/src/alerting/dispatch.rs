//! The outbox: per-channel queues with rate limits (over the limit, queued messages are
//! merged into one digest rather than dropped), retries with exponential backoff, and a
//! subscription's fallback channel once a channel has failed several times in a row.
//!
//! Pure: the caller takes due deliveries, sends them with a notifier and reports the outcome.

use crate::alerting::model::{AlertGroup, Notification};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Messages per minute a channel kind accepts: DingTalk and WeCom robots allow 20.
pub fn rate_limit_per_minute(kind: &str) -> Option<usize> {
    match kind {
        "dingtalk" | "wecom" => Some(20),
        _ => None,
    }
}

/// Retry and fallback settings.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchConfig {
    /// Wait before the first retry; doubles with each attempt.
    pub retry_initial: Duration,
    /// Longest wait between retries.
    pub retry_max: Duration,
    /// Attempts per message on one channel before giving up.
    pub max_attempts: u32,
    /// Consecutive failures of a channel after which messages go to the fallback channel.
    pub fallback_after: u32,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig {
            retry_initial: Duration::from_secs(10),
            retry_max: Duration::from_secs(300),
            max_attempts: 5,
            fallback_after: 3,
        }
    }
}

impl DispatchConfig {
    /// Delay before retry number `attempt` (1 = first retry): initial × 2^(attempt−1), capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.retry_initial
            .checked_mul(factor)
            .unwrap_or(self.retry_max)
            .min(self.retry_max)
    }
}

/// Where a subscription's channel is: enough to find its spec again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelTarget {
    /// Subscription `namespace/name`.
    pub subscription: String,
    /// Channel name (see `Subscription::channel_names`).
    pub channel: String,
    /// The subscription's fallback channel.
    pub fallback: bool,
    /// `email`, `slack`, `dingtalk`, ...
    pub kind: String,
    /// The destination (`namespace/secret/key` of its URL): channels posting to the same robot
    /// share its rate limit. Empty: the channel itself.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
}

impl ChannelTarget {
    /// `namespace/subscription/channel`: the key for failure counts.
    pub fn key(&self) -> String {
        format!("{}/{}", self.subscription, self.channel)
    }

    /// The key rate limits are counted under: the endpoint, else the channel.
    pub fn rate_key(&self) -> String {
        if self.endpoint.is_empty() {
            self.key()
        } else {
            self.endpoint.clone()
        }
    }
}

/// A message waiting in the outbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedMessage {
    /// Unique within the outbox.
    pub id: u64,
    /// Where to.
    pub target: ChannelTarget,
    /// Where to if `target` keeps failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<ChannelTarget>,
    /// What.
    pub notification: Notification,
    /// Attempts made on `target`.
    #[serde(default)]
    pub attempts: u32,
    /// Not before this time (retry backoff).
    pub not_before: DateTime<Utc>,
    /// Handed to the caller and not yet reported.
    #[serde(default)]
    pub in_flight: bool,
}

/// Delivery facts about one channel.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChannelRecord {
    /// Failures since the last success.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The last successful send.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<DateTime<Utc>>,
}

/// Queued messages and channel records; part of the persisted engine state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outbox {
    /// Next message id.
    #[serde(default)]
    pub next_id: u64,
    /// Waiting or in-flight messages.
    #[serde(default)]
    pub queue: Vec<QueuedMessage>,
    /// By [`ChannelTarget::key`].
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelRecord>,
    /// Send times within the last minute, by [`ChannelTarget::rate_key`].
    #[serde(default)]
    pub rate_windows: BTreeMap<String, VecDeque<DateTime<Utc>>>,
}

/// A message to send now.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    /// Report the outcome with this id.
    pub id: u64,
    /// Where to.
    pub target: ChannelTarget,
    /// What.
    pub notification: Notification,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// How a send went.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Accepted by the provider.
    Sent,
    /// Not accepted.
    Failed {
        /// Why.
        message: String,
        /// Whether trying again can help (network errors, 5xx, 429).
        retryable: bool,
    },
}

/// What the outbox did with a reported outcome (for metrics and events).
#[derive(Clone, Debug, PartialEq)]
pub enum Disposition {
    /// Delivered; removed from the outbox.
    Delivered,
    /// Will be retried at this time.
    Retrying {
        /// When.
        at: DateTime<Utc>,
    },
    /// The channel failed too often; the message now goes to the fallback channel.
    Diverted {
        /// The fallback channel.
        to: ChannelTarget,
    },
    /// Given up after the last attempt (or a non-retryable error without fallback).
    GaveUp,
    /// No such in-flight message (already reported).
    Unknown,
}

impl Outbox {
    /// Queues a notification for one channel.
    pub fn enqueue(
        &mut self,
        now: DateTime<Utc>,
        target: ChannelTarget,
        fallback: Option<ChannelTarget>,
        notification: Notification,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push(QueuedMessage {
            id,
            target,
            fallback,
            notification,
            attempts: 0,
            not_before: now,
            in_flight: false,
        });
    }

    /// Messages handed out before a restart and never reported are sent again
    /// (at least once: a crash mid-send may repeat one message, never lose it).
    pub fn requeue_in_flight(&mut self) {
        for m in &mut self.queue {
            m.in_flight = false;
        }
    }

    /// Takes the messages due now, respecting rate limits: when a rate-limited channel has
    /// more due messages than free slots, the overflow is merged into one digest message.
    pub fn take_due(&mut self, now: DateTime<Utc>) -> Vec<Delivery> {
        let minute_ago = now - chrono::Duration::seconds(60);
        let mut by_channel: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, m) in self.queue.iter().enumerate() {
            if !m.in_flight && m.not_before <= now {
                by_channel.entry(m.target.rate_key()).or_default().push(i);
            }
        }
        let mut merged_away: Vec<usize> = Vec::new();
        let mut out = Vec::new();
        for (key, idx) in by_channel {
            let sent = self.rate_windows.entry(key).or_default();
            while sent.front().is_some_and(|t| *t <= minute_ago) {
                sent.pop_front();
            }
            let kind = self.queue[idx[0]].target.kind.clone();
            let free = rate_limit_per_minute(&kind).map(|l| l.saturating_sub(sent.len()));
            let send: Vec<usize> = match free {
                Some(0) => continue,
                Some(free) if idx.len() > free => {
                    // free − 1 single messages, then one digest of the rest.
                    let (single, rest) = idx.split_at(free - 1);
                    let head = rest[0];
                    for &j in &rest[1..] {
                        let groups = self.queue[j].notification.groups.clone();
                        merge_groups(&mut self.queue[head].notification.groups, groups);
                        merged_away.push(j);
                    }
                    single.iter().copied().chain([head]).collect()
                }
                _ => idx,
            };
            for i in send {
                let m = &mut self.queue[i];
                m.in_flight = true;
                m.attempts += 1;
                sent.push_back(now);
                out.push(Delivery {
                    id: m.id,
                    target: m.target.clone(),
                    notification: m.notification.clone(),
                    attempt: m.attempts,
                });
            }
        }
        merged_away.sort_unstable();
        for i in merged_away.into_iter().rev() {
            self.queue.remove(i);
        }
        out
    }

    /// Records how a delivery went.
    pub fn report(
        &mut self,
        now: DateTime<Utc>,
        id: u64,
        outcome: Outcome,
        config: &DispatchConfig,
    ) -> Disposition {
        let Some(pos) = self.queue.iter().position(|m| m.id == id && m.in_flight) else {
            return Disposition::Unknown;
        };
        let key = self.queue[pos].target.key();
        let record = self.channels.entry(key).or_default();
        let (message, retryable) = match outcome {
            Outcome::Sent => {
                record.consecutive_failures = 0;
                record.last_success = Some(now);
                self.queue.remove(pos);
                return Disposition::Delivered;
            }
            Outcome::Failed { message, retryable } => (message, retryable),
        };
        record.consecutive_failures += 1;
        record.last_error = Some(message);
        let failing = record.consecutive_failures >= config.fallback_after;
        let m = &mut self.queue[pos];
        m.in_flight = false;
        let exhausted = !retryable || m.attempts >= config.max_attempts;
        if failing || exhausted {
            if let Some(fb) = m.fallback.take() {
                m.target = fb.clone();
                m.attempts = 0;
                m.not_before = now;
                return Disposition::Diverted { to: fb };
            }
        }
        if exhausted {
            self.queue.remove(pos);
            return Disposition::GaveUp;
        }
        let delay = config.backoff(m.attempts);
        m.not_before = now + chrono::Duration::from_std(delay).unwrap_or_default();
        Disposition::Retrying { at: m.not_before }
    }
}

/// Appends groups, merging alerts of the same job into one group.
fn merge_groups(into: &mut Vec<AlertGroup>, groups: Vec<AlertGroup>) {
    for g in groups {
        match into
            .iter_mut()
            .find(|x| x.namespace == g.namespace && x.job == g.job)
        {
            Some(x) => x.alerts.extend(g.alerts),
            None => into.push(g),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::model::fixtures::{alert, notification};
    use crate::alerting::model::AlertStatus;
    use chrono::TimeZone;
    use weir_crds::stream_job::Severity;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
            .single()
            .unwrap_or_default()
            + chrono::Duration::seconds(secs)
    }

    fn target(channel: &str, kind: &str) -> ChannelTarget {
        ChannelTarget {
            subscription: "ads/oncall".into(),
            channel: channel.into(),
            fallback: channel == "fallback",
            kind: kind.into(),
            endpoint: String::new(),
        }
    }

    fn job_notification(job: &str) -> Notification {
        let mut n = notification(vec![alert(
            "backpressureHigh",
            Severity::Critical,
            AlertStatus::Firing,
        )]);
        n.groups[0].job = job.into();
        n
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let c = DispatchConfig::default();
        assert_eq!(c.backoff(1), Duration::from_secs(10));
        assert_eq!(c.backoff(3), Duration::from_secs(40));
        assert_eq!(c.backoff(30), Duration::from_secs(300));
    }

    #[test]
    fn over_the_dingtalk_limit_the_rest_becomes_one_digest_nothing_dropped() {
        let mut o = Outbox::default();
        for i in 0..25 {
            o.enqueue(
                t(0),
                target("dingtalk-0", "dingtalk"),
                None,
                job_notification(&format!("job-{i}")),
            );
        }
        let sent = o.take_due(t(0));
        assert_eq!(sent.len(), 20, "20 messages a minute");
        let digest = &sent[19].notification;
        assert!(digest.is_digest());
        assert_eq!(digest.groups.len(), 6, "jobs 19..24 in one digest");
        let jobs: usize = sent.iter().map(|d| d.notification.groups.len()).sum();
        assert_eq!(jobs, 25, "every job is in some message");
        for d in &sent {
            assert_eq!(
                o.report(t(1), d.id, Outcome::Sent, &DispatchConfig::default()),
                Disposition::Delivered
            );
        }
        o.enqueue(
            t(2),
            target("dingtalk-0", "dingtalk"),
            None,
            job_notification("late-1"),
        );
        o.enqueue(
            t(3),
            target("dingtalk-0", "dingtalk"),
            None,
            job_notification("late-2"),
        );
        assert!(o.take_due(t(30)).is_empty(), "window still full");
        let later = o.take_due(t(61));
        assert_eq!(later.len(), 2, "slots free again after a minute");
        // Slack has no limit.
        for i in 0..25 {
            o.enqueue(
                t(70),
                target("slack-1", "slack"),
                None,
                job_notification(&format!("j{i}")),
            );
        }
        assert_eq!(o.take_due(t(70)).len(), 25);
    }

    #[test]
    fn channels_posting_to_the_same_robot_share_its_limit() {
        let mut o = Outbox::default();
        for i in 0..15 {
            for sub in ["ads/a", "ads/b"] {
                let mut target = target("dingtalk-0", "dingtalk");
                target.subscription = sub.into();
                target.endpoint = "ads/robots/ops".into();
                o.enqueue(t(0), target, None, job_notification(&format!("job-{i}")));
            }
        }
        let sent = o.take_due(t(0));
        assert_eq!(
            sent.len(),
            20,
            "one robot, 20 a minute, whichever subscription sends"
        );
        let jobs: usize = sent.iter().map(|d| d.notification.alerts().count()).sum();
        assert_eq!(jobs, 30, "nothing dropped");
    }

    #[test]
    fn failures_retry_with_backoff_then_divert_to_fallback() {
        let c = DispatchConfig::default();
        let mut o = Outbox::default();
        o.enqueue(
            t(0),
            target("slack-0", "slack"),
            Some(target("fallback", "email")),
            job_notification("a"),
        );
        let fail = || Outcome::Failed {
            message: "HTTP 503".into(),
            retryable: true,
        };
        let d = o.take_due(t(0));
        assert_eq!(
            o.report(t(0), d[0].id, fail(), &c),
            Disposition::Retrying { at: t(10) }
        );
        assert!(o.take_due(t(5)).is_empty(), "backing off");
        let d = o.take_due(t(10));
        assert_eq!(d[0].attempt, 2);
        assert_eq!(
            o.report(t(10), d[0].id, fail(), &c),
            Disposition::Retrying { at: t(30) }
        );
        let d = o.take_due(t(30));
        let disp = o.report(t(30), d[0].id, fail(), &c);
        assert_eq!(
            disp,
            Disposition::Diverted {
                to: target("fallback", "email")
            }
        );
        let d = o.take_due(t(30));
        assert_eq!(
            (d[0].target.channel.as_str(), d[0].attempt),
            ("fallback", 1)
        );
        assert_eq!(
            o.report(t(31), d[0].id, Outcome::Sent, &c),
            Disposition::Delivered
        );
        assert!(o.queue.is_empty());
        assert_eq!(o.channels["ads/oncall/slack-0"].consecutive_failures, 3);
        // The failing channel is still tried first (so it can recover), and a failure goes
        // straight to the fallback.
        o.enqueue(
            t(40),
            target("slack-0", "slack"),
            Some(target("fallback", "email")),
            job_notification("b"),
        );
        let d = o.take_due(t(40));
        assert!(matches!(
            o.report(t(40), d[0].id, fail(), &c),
            Disposition::Diverted { .. }
        ));
    }

    #[test]
    fn without_fallback_a_message_is_given_up_after_max_attempts_or_permanent_error() {
        let c = DispatchConfig {
            max_attempts: 2,
            ..DispatchConfig::default()
        };
        let mut o = Outbox::default();
        o.enqueue(
            t(0),
            target("webhook-0", "webhook"),
            None,
            job_notification("a"),
        );
        let d = o.take_due(t(0));
        let fail = Outcome::Failed {
            message: "timeout".into(),
            retryable: true,
        };
        assert!(matches!(
            o.report(t(0), d[0].id, fail.clone(), &c),
            Disposition::Retrying { .. }
        ));
        let d = o.take_due(t(100));
        assert_eq!(o.report(t(100), d[0].id, fail, &c), Disposition::GaveUp);
        o.enqueue(
            t(200),
            target("webhook-0", "webhook"),
            None,
            job_notification("b"),
        );
        let d = o.take_due(t(200));
        let bad = Outcome::Failed {
            message: "HTTP 400".into(),
            retryable: false,
        };
        assert_eq!(o.report(t(200), d[0].id, bad, &c), Disposition::GaveUp);
        assert_eq!(
            o.report(t(200), d[0].id, Outcome::Sent, &c),
            Disposition::Unknown
        );
    }
}
