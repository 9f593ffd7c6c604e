//! Engine behaviour tests: what a subscriber receives over time.

use super::*;
use crate::alerting::routing::Subscription;
use crate::alerting::rules::RuleResult;
use chrono::TimeZone;
use weir_crds::alert_subscription::{
    AlertSubscriptionSpec, AlertmanagerChannel, ChannelSpec, EmailChannel, JobSelector, MuteWindow,
    SecretKeyRef, WebhookChannel,
};
use weir_crds::Dur;

fn t(mins: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
        .single()
        .unwrap_or_default()
        + chrono::Duration::minutes(mins)
}

fn webhook(kind: &str) -> ChannelSpec {
    let w = Some(WebhookChannel {
        url_secret: SecretKeyRef {
            name: "hooks".into(),
            key: kind.into(),
        },
        sign_secret: None,
    });
    let mut c = ChannelSpec::default();
    match kind {
        "slack" => c.slack = w,
        "dingtalk" => c.dingtalk = w,
        "wecom" => c.wecom = w,
        _ => c.webhook = w,
    }
    c
}

fn sub(
    name: &str,
    min: Severity,
    labels: &[(&str, &str)],
    channels: Vec<ChannelSpec>,
) -> Subscription {
    Subscription {
        namespace: "ads".into(),
        name: name.into(),
        spec: AlertSubscriptionSpec {
            selector: JobSelector {
                match_labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                match_names: vec![],
            },
            min_severity: min,
            channels,
            fallback: None,
            repeat_interval: Dur::secs(3600),
            send_resolved: true,
            mute_windows: vec![],
        },
    }
}

fn result(rule: &str, severity: Option<Severity>, for_mins: u64) -> RuleResult {
    RuleResult {
        rule: rule.into(),
        severity,
        value: Some(0.9),
        threshold: Some(0.8),
        for_: Duration::from_secs(for_mins * 60),
        never_suppressed: rule == "restartLoop",
        inhibits: if rule == "jobFailed" {
            vec!["backpressureHigh".into()]
        } else {
            vec![]
        },
        summary: format!("{rule} summary"),
        description: String::new(),
        error: None,
    }
}

fn tick(job: &str, team: &str, phase: Phase, results: Vec<RuleResult>) -> JobTick {
    JobTick {
        job: JobRouting {
            namespace: "ads".into(),
            name: job.into(),
            labels: BTreeMap::from([("team".to_string(), team.to_string())]),
        },
        alert_labels: BTreeMap::from([("tier".to_string(), "gold".to_string())]),
        phase: Some(phase),
        results,
    }
}

/// Runs a tick and delivers everything due successfully; returns (subscription/channel, title).
fn run(
    engine: &mut AlertEngine,
    now: DateTime<Utc>,
    t: &JobTick,
    subs: &[Subscription],
) -> Vec<(String, String)> {
    engine.tick_job(now, t, subs);
    deliver(engine, now)
}

fn deliver(engine: &mut AlertEngine, now: DateTime<Utc>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for d in engine.take_due(now) {
        out.push((d.target.key(), d.notification.title()));
        engine.report(now, d.id, Outcome::Sent);
    }
    out
}

#[test]
fn pending_then_firing_after_for_then_resolved() {
    let subs = [sub(
        "oncall",
        Severity::Warning,
        &[],
        vec![webhook("slack")],
    )];
    let mut e = AlertEngine::default();
    let firing = |_: i64| {
        tick(
            "ctr",
            "ads",
            Phase::Running,
            vec![result("backpressureHigh", Some(Severity::Warning), 5)],
        )
    };
    assert!(run(&mut e, t(0), &firing(0), &subs).is_empty());
    let active = e.active_alerts("ads", "ctr");
    assert_eq!(
        (active[0].state.as_str(), active[0].since),
        ("pending", t(0))
    );
    assert!(
        run(&mut e, t(4), &firing(4), &subs).is_empty(),
        "not yet held for 5m"
    );
    let sent = run(&mut e, t(5), &firing(5), &subs);
    assert_eq!(
        sent,
        [(
            "ads/oncall/slack-0".to_string(),
            "[WARNING] ads/ctr: backpressureHigh summary".to_string()
        )]
    );
    assert_eq!(e.active_alerts("ads", "ctr")[0].state, "firing");
    let clear = tick(
        "ctr",
        "ads",
        Phase::Running,
        vec![result("backpressureHigh", None, 5)],
    );
    let sent = run(&mut e, t(8), &clear, &subs);
    assert_eq!(sent[0].1, "[RESOLVED] ads/ctr: backpressureHigh summary");
    assert!(e.active_alerts("ads", "ctr").is_empty());
    assert!(
        e.state.alerts.is_empty(),
        "resolved and notified: forgotten"
    );
}

#[test]
fn a_pending_alert_that_clears_sends_nothing() {
    let subs = [sub("oncall", Severity::Info, &[], vec![webhook("slack")])];
    let mut e = AlertEngine::default();
    run(
        &mut e,
        t(0),
        &tick(
            "ctr",
            "ads",
            Phase::Running,
            vec![result("latencyP99High", Some(Severity::Critical), 5)],
        ),
        &subs,
    );
    let sent = run(
        &mut e,
        t(3),
        &tick("ctr", "ads", Phase::Running, vec![]),
        &subs,
    );
    assert!(sent.is_empty());
    assert!(e.state.alerts.is_empty());
}

#[test]
fn routing_by_severity_and_selector_and_escalation() {
    let subs = [
        sub(
            "pager",
            Severity::Critical,
            &[("team", "ads")],
            vec![webhook("webhook")],
        ),
        sub(
            "chat",
            Severity::Warning,
            &[("team", "ads")],
            vec![webhook("slack")],
        ),
        sub(
            "feed",
            Severity::Info,
            &[("team", "feed")],
            vec![webhook("slack")],
        ),
    ];
    let mut e = AlertEngine::default();
    let warn = tick(
        "ctr",
        "ads",
        Phase::Running,
        vec![result("backpressureHigh", Some(Severity::Warning), 0)],
    );
    let sent = run(&mut e, t(0), &warn, &subs);
    assert_eq!(
        sent.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["ads/chat/slack-0"]
    );
    // Escalation to critical: the pager hears of it now, the chat channel again (severity rose).
    let crit = tick(
        "ctr",
        "ads",
        Phase::Running,
        vec![result("backpressureHigh", Some(Severity::Critical), 0)],
    );
    let mut sent = run(&mut e, t(1), &crit, &subs);
    sent.sort();
    assert_eq!(
        sent.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(),
        ["ads/chat/slack-0", "ads/pager/webhook-0"]
    );
    assert!(sent[0].1.starts_with("[CRITICAL] ads/ctr"));
    // Back to warning: the pager gets a resolved, the chat channel nothing new.
    let sent = run(&mut e, t(2), &warn, &subs);
    assert_eq!(
        sent,
        [(
            "ads/pager/webhook-0".to_string(),
            "[RESOLVED] ads/ctr: backpressureHigh summary".to_string()
        )]
    );
}

#[test]
fn a_firing_alert_repeats_only_after_the_repeat_interval() {
    let subs = [sub(
        "oncall",
        Severity::Warning,
        &[],
        vec![webhook("slack")],
    )];
    let mut e = AlertEngine::default();
    let firing = tick(
        "ctr",
        "ads",
        Phase::Running,
        vec![result("checkpointFailures", Some(Severity::Warning), 0)],
    );
    assert_eq!(run(&mut e, t(0), &firing, &subs).len(), 1);
    for m in [1, 10, 30, 59] {
        assert!(
            run(&mut e, t(m), &firing, &subs).is_empty(),
            "deduplicated at minute {m}"
        );
    }
    assert_eq!(
        run(&mut e, t(60), &firing, &subs).len(),
        1,
        "repeat after 1h"
    );
    assert!(run(&mut e, t(61), &firing, &subs).is_empty());
}

#[test]
fn alertmanager_hears_a_firing_alert_every_resend_interval_the_others_once() {
    let am = ChannelSpec {
        alertmanager: Some(AlertmanagerChannel {
            url: "http://am:9093".into(),
            resend_interval: Dur::secs(120),
            ..Default::default()
        }),
        ..Default::default()
    };
    let subs = [sub(
        "oncall",
        Severity::Warning,
        &[],
        vec![webhook("slack"), am],
    )];
    let mut e = AlertEngine::default();
    let firing = tick(
        "ctr",
        "ads",
        Phase::Running,
        vec![result("checkpointFailures", Some(Severity::Warning), 0)],
    );
    let first = run(&mut e, t(0), &firing, &subs);
    assert_eq!(first.len(), 2, "both channels get the first notification");
    assert!(run(&mut e, t(1), &firing, &subs).is_empty());
    let resent = run(&mut e, t(2), &firing, &subs);
    assert_eq!(
        resent.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        ["ads/oncall/alertmanager-1"],
        "only Alertmanager hears it again"
    );
    assert!(run(&mut e, t(3), &firing, &subs).is_empty());
    assert_eq!(run(&mut e, t(4), &firing, &subs).len(), 1);
    let resolved = tick("ctr", "ads", Phase::Running, vec![]);
    let sent = run(&mut e, t(5), &resolved, &subs);
    assert_eq!(sent.len(), 2, "both get the resolve: {sent:?}");
    assert!(sent
        .iter()
        .all(|(_, title)| title.starts_with("[RESOLVED]")));
    assert!(run(&mut e, t(8), &resolved, &subs).is_empty());
    assert!(e.state.alerts.is_empty());
}

#[test]
fn no_resolved_notification_when_send_resolved_is_off() {
    let mut s = sub("oncall", Severity::Warning, &[], vec![webhook("slack")]);
    s.spec.send_resolved = false;
    let subs = [s];
    let mut e = AlertEngine::default();
    run(
        &mut e,
        t(0),
        &tick(
            "ctr",
            "ads",
            Phase::Running,
            vec![result("jobFailed", Some(Severity::Critical), 0)],
        ),
        &subs,
    );
    assert!(run(
        &mut e,
        t(1),
        &tick("ctr", "ads", Phase::Running, vec![]),
        &subs
    )
    .is_empty());
    assert!(e.state.alerts.is_empty());
}

#[test]
fn suppressed_during_an_upgrade_then_sent_if_still_firing() {
    let subs = [sub(
        "oncall",
        Severity::Warning,
        &[],
        vec![webhook("slack")],
    )];
    let mut e = AlertEngine::default();
    let bp = |phase| {
        tick(
            "ctr",
            "ads",
            phase,
            vec![result("backpressureHigh", Some(Severity::Critical), 0)],
        )
    };
    assert!(run(&mut e, t(0), &bp(Phase::Upgrading), &subs).is_empty());
    assert!(run(&mut e, t(1), &bp(Phase::Suspending), &subs).is_empty());
    assert_eq!(
        e.active_alerts("ads", "ctr")[0].state,
        "firing",
        "still shown in status"
    );
    assert_eq!(run(&mut e, t(2), &bp(Phase::Running), &subs).len(), 1);
}

#[test]
fn restart_loop_is_not_suppressed_during_an_upgrade() {
    let subs = [sub(
        "oncall",
        Severity::Warning,
        &[],
        vec![webhook("slack")],
    )];
    let mut e = AlertEngine::default();
    let t0 = tick(
        "ctr",
        "ads",
        Phase::Upgrading,
        vec![
            result("restartLoop", Some(Severity::Critical), 0),
            result("backpressureHigh", Some(Severity::Critical), 0),
        ],
    );
    let sent = run(&mut e, t(0), &t0, &subs);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, "[CRITICAL] ads/ctr: restartLoop summary");
}

#[test]
fn mute_window_holds_everything_until_it_ends() {
    let mut s = sub("oncall", Severity::Warning, &[], vec![webhook("slack")]);
    s.spec.mute_windows = vec![MuteWindow {
        start: "12:00".into(),
        end: "12:30".into(),
        days: vec![],
    }];
    let subs = [s];
    let mut e = AlertEngine::default();
    let firing = tick(
        "ctr",
        "ads",
        Phase::Running,
        vec![result("jobFailed", Some(Severity::Critical), 0)],
    );
    assert!(run(&mut e, t(0), &firing, &subs).is_empty());
    assert_eq!(
        run(&mut e, t(30), &firing, &subs).len(),
        1,
        "sent when the window ends"
    );
}

#[test]
fn over_the_wecom_rate_limit_alerts_are_digested() {
    let subs = [sub(
        "oncall",
        Severity::Warning,
        &[],
        vec![webhook("wecom")],
    )];
    let mut e = AlertEngine::default();
    for i in 0..30 {
        let t0 = tick(
            &format!("job-{i:02}"),
            "ads",
            Phase::Running,
            vec![result("jobFailed", Some(Severity::Critical), 0)],
        );
        e.tick_job(t(0), &t0, &subs);
    }
    let sent = deliver(&mut e, t(0));
    assert_eq!(sent.len(), 20);
    assert_eq!(sent[19].1, "[CRITICAL] digest: 11 alerts for 11 jobs");
}

#[test]
fn a_failing_channel_falls_back_after_three_failures() {
    let mut s = sub("oncall", Severity::Warning, &[], vec![webhook("slack")]);
    let email = ChannelSpec {
        email: Some(EmailChannel {
            to: vec!["oncall@example.com".into()],
        }),
        ..Default::default()
    };
    s.spec.fallback = Some(email);
    let subs = [s];
    let mut e = AlertEngine::default();
    e.tick_job(
        t(0),
        &tick(
            "ctr",
            "ads",
            Phase::Running,
            vec![result("jobFailed", Some(Severity::Critical), 0)],
        ),
        &subs,
    );
    let mut now = t(0);
    let mut dispositions = Vec::new();
    for _ in 0..3 {
        let d = e.take_due(now);
        assert_eq!(d[0].target.channel, "slack-0");
        dispositions.push(e.report(
            now,
            d[0].id,
            Outcome::Failed {
                message: "HTTP 500".into(),
                retryable: true,
            },
        ));
        now += chrono::Duration::minutes(5);
    }
    assert!(
        matches!(dispositions[2], Disposition::Diverted { .. }),
        "{dispositions:?}"
    );
    let d = e.take_due(now);
    assert_eq!(
        (
            d[0].target.channel.as_str(),
            d[0].target.kind.as_str(),
            d[0].target.fallback
        ),
        ("fallback", "email", true)
    );
    assert_eq!(
        subs[0].channel("fallback", true).map(|c| c.kinds()),
        Some(vec!["email"])
    );
}

#[test]
fn restart_does_not_page_again_and_resumes_in_flight_messages() {
    let subs = [sub(
        "oncall",
        Severity::Warning,
        &[],
        vec![webhook("slack"), webhook("webhook")],
    )];
    let mut e = AlertEngine::default();
    let firing = tick(
        "ctr",
        "ads",
        Phase::Running,
        vec![result("jobFailed", Some(Severity::Critical), 0)],
    );
    e.tick_job(t(0), &firing, &subs);
    let due = e.take_due(t(0));
    assert_eq!(due.len(), 2);
    e.report(t(0), due[0].id, Outcome::Sent); // slack sent; the webhook send is interrupted
    let saved = match e.state.save() {
        Ok(s) => s,
        Err(err) => panic!("save: {err}"),
    };
    // The operator restarts.
    let state = match EngineState::load(&saved) {
        Ok(s) => s,
        Err(err) => panic!("load: {err}"),
    };
    let mut e2 = AlertEngine::new(EngineConfig::default(), state);
    let sent = run(&mut e2, t(1), &firing, &subs);
    assert_eq!(
        sent,
        [(
            "ads/oncall/webhook-1".to_string(),
            "[CRITICAL] ads/ctr: jobFailed summary".to_string()
        )],
        "only the interrupted send"
    );
    assert!(
        run(&mut e2, t(2), &firing, &subs).is_empty(),
        "no duplicate page"
    );
    assert_eq!(e2.active_alerts("ads", "ctr")[0].since, t(0));
}

#[test]
fn state_from_a_newer_operator_is_refused() {
    let e = EngineState::load(r#"{"version": 99}"#)
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some("alert engine state has version 99, this operator reads up to 1")
    );
}

#[test]
fn alerts_carry_job_routing_labels() {
    let subs = [sub(
        "oncall",
        Severity::Warning,
        &[("team", "ads")],
        vec![webhook("slack")],
    )];
    let mut e = AlertEngine::default();
    e.tick_job(
        t(0),
        &tick(
            "ctr",
            "ads",
            Phase::Running,
            vec![result("jobFailed", Some(Severity::Critical), 0)],
        ),
        &subs,
    );
    let d = e.take_due(t(0));
    let labels = &d[0].notification.groups[0].alerts[0].labels;
    assert_eq!(labels.get("tier").map(String::as_str), Some("gold"));
    assert_eq!(
        labels.get("alertname").map(String::as_str),
        Some("jobFailed")
    );
    assert_eq!(labels.get("severity").map(String::as_str), Some("critical"));
}

#[test]
fn forgetting_a_job_drops_its_alerts() {
    let subs = [sub(
        "oncall",
        Severity::Warning,
        &[],
        vec![webhook("slack")],
    )];
    let mut e = AlertEngine::default();
    e.tick_job(
        t(0),
        &tick(
            "ctr",
            "ads",
            Phase::Running,
            vec![result("jobFailed", Some(Severity::Critical), 0)],
        ),
        &subs,
    );
    e.tick_job(
        t(0),
        &tick(
            "ctr2",
            "ads",
            Phase::Running,
            vec![result("jobFailed", Some(Severity::Critical), 0)],
        ),
        &subs,
    );
    e.forget_job("ads", "ctr");
    assert!(e.active_alerts("ads", "ctr").is_empty());
    assert_eq!(e.active_alerts("ads", "ctr2").len(), 1);
}

#[test]
fn a_subscription_missing_for_a_tick_does_not_cause_a_second_page() {
    let subs = [sub(
        "oncall",
        Severity::Warning,
        &[],
        vec![webhook("slack")],
    )];
    let mut e = AlertEngine::default();
    let firing = tick(
        "ctr",
        "ads",
        Phase::Running,
        vec![result("jobFailed", Some(Severity::Critical), 0)],
    );
    assert_eq!(run(&mut e, t(0), &firing, &subs).len(), 1);
    assert!(
        run(&mut e, t(1), &firing, &[]).is_empty(),
        "subscription cache not synced yet"
    );
    assert!(
        run(&mut e, t(2), &firing, &subs).is_empty(),
        "no second page once it is back"
    );
    let resolved = run(
        &mut e,
        t(3),
        &tick("ctr", "ads", Phase::Running, vec![]),
        &subs,
    );
    assert_eq!(resolved.len(), 1);
}

#[test]
fn a_resolved_alert_with_a_deleted_subscription_is_forgotten_after_retention() {
    let subs = [sub(
        "oncall",
        Severity::Warning,
        &[],
        vec![webhook("slack")],
    )];
    let mut e = AlertEngine::default();
    let firing = tick(
        "ctr",
        "ads",
        Phase::Running,
        vec![result("jobFailed", Some(Severity::Critical), 0)],
    );
    run(&mut e, t(0), &firing, &subs);
    let clear = tick("ctr", "ads", Phase::Running, vec![]);
    assert!(run(&mut e, t(1), &clear, &[]).is_empty());
    assert_eq!(
        e.state.alerts.len(),
        1,
        "kept while its subscription might come back"
    );
    run(&mut e, t(1) + chrono::Duration::hours(25), &clear, &[]);
    assert!(e.state.alerts.is_empty());
}

#[test]
fn a_failed_job_inhibits_its_backpressure_alert() {
    let subs = [sub(
        "oncall",
        Severity::Warning,
        &[],
        vec![webhook("slack")],
    )];
    let mut e = AlertEngine::default();
    let both = tick(
        "ctr",
        "ads",
        Phase::Failed,
        vec![
            result("jobFailed", Some(Severity::Critical), 0),
            result("backpressureHigh", Some(Severity::Critical), 0),
        ],
    );
    let sent = run(&mut e, t(0), &both, &subs);
    assert_eq!(
        sent,
        [(
            "ads/oncall/slack-0".to_string(),
            "[CRITICAL] ads/ctr: jobFailed summary".to_string()
        )]
    );
    assert_eq!(
        e.active_alerts("ads", "ctr").len(),
        2,
        "both still shown in status"
    );
    let recovered = tick(
        "ctr",
        "ads",
        Phase::Running,
        vec![result("backpressureHigh", Some(Severity::Critical), 0)],
    );
    let sent = run(&mut e, t(1), &recovered, &subs);
    assert_eq!(
        sent,
        [(
            "ads/oncall/slack-0".to_string(),
            "[CRITICAL] ads/ctr: backpressureHigh summary (+1 more)".to_string()
        )],
        "one message for the job: backpressure now firing, jobFailed resolved"
    );
}
