//! Notifiers: one file per channel kind, a [`Notifier`] trait, and [`ChannelResolver`] which
//! builds a notifier from a `ChannelSpec` and the Secrets it refers to.

pub mod alertmanager;
pub mod dingtalk;
pub mod email;
pub mod feishu;
mod http;
pub mod render;
pub mod resolver;
pub mod slack;
pub mod teams;
pub mod webhook;
pub mod wecom;

#[cfg(test)]
pub(crate) mod test_server;

pub use resolver::{ChannelError, ChannelResolver, SecretData};

use crate::alerting::dispatch::Outcome;
use crate::alerting::model::Notification;
use futures::future::BoxFuture;

/// Sends notifications to one channel.
pub trait Notifier: Send + Sync {
    /// `email`, `slack`, `dingtalk`, `feishu`, `wecom`, `teams`, `webhook` or `alertmanager`.
    fn kind(&self) -> &'static str;
    /// Sends one notification.
    fn send<'a>(&'a self, notification: &'a Notification)
        -> BoxFuture<'a, Result<(), NotifyError>>;
}

/// A send failed.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The request could not be made or got no response.
    #[error("{kind}: request failed: {source}")]
    Request {
        /// Channel kind.
        kind: &'static str,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The provider answered with an HTTP error.
    #[error("{kind}: HTTP {status}: {body}")]
    Status {
        /// Channel kind.
        kind: &'static str,
        /// HTTP status.
        status: u16,
        /// The start of the response body.
        body: String,
    },
    /// The provider answered 200 but reported an error in the body (e.g. DingTalk `errcode`).
    #[error("{kind}: rejected: {message}")]
    Rejected {
        /// Channel kind.
        kind: &'static str,
        /// The provider's code and message.
        message: String,
        /// Whether trying again can help (e.g. a rate-limit code).
        retryable: bool,
    },
    /// The email could not be built (bad address) or sent.
    #[error("email: {message}")]
    Email {
        /// What failed.
        message: String,
        /// Whether trying again can help.
        retryable: bool,
    },
}

impl NotifyError {
    /// Whether trying again can help: transport errors, 408, 429 and 5xx, provider rate limits.
    pub fn retryable(&self) -> bool {
        match self {
            NotifyError::Request { .. } => true,
            NotifyError::Status { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            NotifyError::Rejected { retryable, .. } | NotifyError::Email { retryable, .. } => {
                *retryable
            }
        }
    }

    /// As an outbox outcome.
    pub fn to_outcome(&self) -> Outcome {
        Outcome::Failed {
            message: self.to_string(),
            retryable: self.retryable(),
        }
    }
}

/// Cuts `s` to at most `max_bytes`, on a char boundary, appending `marker` when cut
/// (the result including the marker stays within `max_bytes`).
pub fn truncate_bytes(s: &str, max_bytes: usize, marker: &str) -> String {
    if s.len() <= max_bytes {
        return s.to_string();
    }
    let mut end = max_bytes.saturating_sub(marker.len());
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    // Prefer cutting at a line end if one is near, so markdown is not broken mid-line.
    if let Some(nl) = s[..end].rfind('\n') {
        if end - nl < 200 {
            end = nl;
        }
    }
    format!("{}{marker}", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_char_boundaries_and_the_limit() {
        let s = "告警".repeat(100); // 3 bytes per char
        let t = truncate_bytes(&s, 100, "…");
        assert!(t.len() <= 100, "{}", t.len());
        assert!(t.ends_with('…'));
        assert_eq!(truncate_bytes("short", 100, "…"), "short");
        let lines = format!("{}\n{}", "a".repeat(50), "b".repeat(100));
        assert_eq!(
            truncate_bytes(&lines, 100, "\n[cut]"),
            format!("{}\n[cut]", "a".repeat(50))
        );
    }
}
