//! Kubernetes Events about StreamJobs: Normal events for lifecycle steps, Warning events for
//! errors (reason = the error variant's name, note = the error chain, truncated).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder};

/// Longest note the events API accepts (1 kB).
const MAX_NOTE: usize = 1024;

/// An error and its sources joined with ": ".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        // Some errors (kube's finalizer errors) already print their source; do not repeat it.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// `text` cut to at most `max` bytes on a character boundary, with "…" when cut.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Publishes a Normal event; failures are logged, never fatal.
pub async fn normal(recorder: &Recorder, regarding: &ObjectReference, reason: &str, note: String) {
    publish(recorder, regarding, EventType::Normal, reason, note).await;
}

/// Publishes a Warning event; failures are logged, never fatal.
pub async fn warning(recorder: &Recorder, regarding: &ObjectReference, reason: &str, note: String) {
    publish(recorder, regarding, EventType::Warning, reason, note).await;
}

async fn publish(
    recorder: &Recorder,
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_string(),
        note: Some(truncate(&note, MAX_NOTE)),
        action: "Reconcile".to_string(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, regarding).await {
        tracing::warn!(
            error = %chain(&e),
            object = ?regarding.name,
            reason,
            "publishing an event failed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_joins_sources() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(chain(&e), "outer: inner");
    }

    #[test]
    fn truncate_respects_limits_and_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        let long = "é".repeat(600);
        let t = truncate(&long, MAX_NOTE);
        assert!(t.len() <= MAX_NOTE);
        assert!(t.ends_with('…'));
    }
}
