//! Text renderings of a notification shared by the notifiers: plain text, simple markdown
//! (DingTalk, WeCom, Feishu `lark_md`) and HTML (email).

use crate::alerting::model::{Alert, AlertGroup, AlertStatus, Notification};
use crate::alerting::rules::severity_str;
use crate::alerting::template::format_number;

/// `value 0.85 · threshold 0.8 · since 2026-11-21 12:00 UTC[ · resolved ...]`.
pub fn facts(a: &Alert) -> String {
    let mut parts = Vec::new();
    if let Some(v) = a.value {
        parts.push(format!("value {}", format_number(v)));
    }
    if let Some(t) = a.threshold {
        parts.push(format!("threshold {}", format_number(t)));
    }
    parts.push(format!(
        "since {}",
        a.starts_at.format("%Y-%m-%d %H:%M UTC")
    ));
    if let Some(end) = a.ends_at {
        parts.push(format!("resolved {}", end.format("%Y-%m-%d %H:%M UTC")));
    }
    parts.join(" · ")
}

/// `FIRING · critical` or `RESOLVED`.
pub fn status_line(a: &Alert) -> String {
    match a.status {
        AlertStatus::Firing => format!("FIRING · {}", severity_str(a.severity)),
        AlertStatus::Resolved => "RESOLVED".to_string(),
    }
}

fn group_heading(g: &AlertGroup) -> String {
    format!("{}/{}", g.namespace, g.job)
}

/// Markdown: a heading with the title, then each job's alerts.
pub fn markdown(n: &Notification) -> String {
    let mut out = format!("### {}\n", n.title());
    for g in &n.groups {
        if n.is_digest() {
            out.push_str(&format!("\n#### {}\n", group_heading(g)));
        }
        for a in &g.alerts {
            out.push_str(&format!(
                "\n**{}** `{}` {}\n\n{}\n",
                status_line(a),
                a.rule,
                group_heading(g),
                a.summary
            ));
            if !a.description.is_empty() {
                out.push_str(&format!("\n> {}\n", a.description));
            }
            out.push_str(&format!("\n{}\n", facts(a)));
        }
    }
    if !n.external_url.is_empty() {
        out.push_str(&format!("\n[Details]({})\n", n.external_url));
    }
    out
}

/// Plain text (email text part, Slack/Teams fallback).
pub fn plain(n: &Notification) -> String {
    let mut out = format!("{}\n", n.title());
    for (g, a) in n.alerts() {
        out.push_str(&format!(
            "\n{} {} {}\n  {}\n",
            status_line(a),
            a.rule,
            group_heading(g),
            a.summary
        ));
        if !a.description.is_empty() {
            out.push_str(&format!("  {}\n", a.description));
        }
        out.push_str(&format!("  {}\n", facts(a)));
    }
    if !n.external_url.is_empty() {
        out.push_str(&format!("\n{}\n", n.external_url));
    }
    out
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML document (email HTML part).
pub fn html(n: &Notification) -> String {
    let mut out = format!(
        "<!DOCTYPE html><html><body style=\"font-family:sans-serif\"><h2>{}</h2>",
        html_escape(&n.title())
    );
    for (g, a) in n.alerts() {
        let color = match (a.status, a.severity) {
            (AlertStatus::Resolved, _) => "#2e7d32",
            (_, weir_crds::stream_job::Severity::Critical) => "#c62828",
            (_, weir_crds::stream_job::Severity::Warning) => "#ef6c00",
            _ => "#1565c0",
        };
        out.push_str(&format!(
            "<div style=\"border-left:4px solid {color};padding-left:8px;margin:12px 0\">\
             <p><b>{}</b> <code>{}</code> {}</p><p>{}</p><p>{}</p><p><small>{}</small></p></div>",
            html_escape(&status_line(a)),
            html_escape(&a.rule),
            html_escape(&group_heading(g)),
            html_escape(&a.summary),
            html_escape(&a.description),
            html_escape(&facts(a)),
        ));
    }
    if !n.external_url.is_empty() {
        out.push_str(&format!(
            "<p><a href=\"{0}\">{0}</a></p>",
            html_escape(&n.external_url)
        ));
    }
    out.push_str("</body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerting::model::fixtures::{alert, notification};
    use weir_crds::stream_job::Severity;

    #[test]
    fn markdown_has_title_status_summary_facts_and_link() {
        let n = notification(vec![alert(
            "backpressureHigh",
            Severity::Critical,
            AlertStatus::Firing,
        )]);
        let md = markdown(&n);
        assert!(
            md.starts_with("### [CRITICAL] ads/ctr-samples: backpressureHigh on ctr-samples\n"),
            "{md}"
        );
        assert!(md.contains("**FIRING · critical** `backpressureHigh` ads/ctr-samples"));
        assert!(md.contains("value 0.85 · threshold 0.8 · since 2026-11-21 12:00 UTC"));
        assert!(md.ends_with("[Details](https://weir.example.com)\n"));
    }

    #[test]
    fn html_is_escaped() {
        let mut a = alert("x", Severity::Warning, AlertStatus::Firing);
        a.summary = "<script>".into();
        assert!(html(&notification(vec![a])).contains("&lt;script&gt;"));
    }
}
