//! Native timers in the host: `timer preview`, timer rules firing through the pipeline for their
//! own rule only, and following rule changes at once. (Scheduling semantics, DST, misfires and
//! restarts are tested in virtual time in crates/attune-timers.)

use std::time::Duration;

use attune_host::app::{App, AppConfig};
use attune_host::catalog::RuleRefusal;
use attune_host::rules::RuleChangeError;
use attune_host::store::ListFilter;
use attune_rules::RuleSpec;
use serde_json::json;

use crate::support::attune_host;

#[test]
fn preview_prints_planned_instants_in_the_timer_zone() {
    let output = attune_host()
        .args(["timer", "preview", r#"{"expression": "30 2 * * *", "timezone": "Europe/Paris"}"#])
        .args(["--after", "2026-03-27T00:00:00Z", "--count", "4"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    // 2026-03-29 02:30 does not exist in Paris: it fires once, just after the gap.
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "2026-03-27T02:30:00+01:00\n2026-03-28T02:30:00+01:00\n2026-03-29T03:00:00+02:00\n2026-03-30T02:30:00+02:00\n"
    );
    for (params, field) in [
        (r#"{"expression": "0 9 * * 1-5", "timezone": "Europe/Pariss"}"#, "trigger_params.timezone"),
        (r#"{"interval": 0}"#, "trigger_params.interval"),
        (r#"{"expression": "0 25 * * *"}"#, "trigger_params.expression"),
    ] {
        let output = attune_host().args(["timer", "preview", params]).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{params}");
        assert!(String::from_utf8_lossy(&output.stderr).contains(field), "{params}");
    }
}

fn interval_rule(rule_ref: &str, seconds: u64) -> RuleSpec {
    RuleSpec::from_json(json!({
        "ref": rule_ref, "trigger": "core.intervaltimer",
        "trigger_params": {"interval": seconds, "unit": "seconds"},
        "action": {"ref": "core.echo", "parameters": {"at": "{{ event.payload.scheduled_at }}"}}
    }))
    .unwrap()
}

async fn enforcements_of(app: &App, rule: &str) -> Vec<attune_host::store::EnforcementRecord> {
    let filter = ListFilter { rule_ref: Some(rule.into()), limit: 1_000, ..Default::default() };
    app.store.enforcements(&filter).await.unwrap()
}

#[tokio::test]
async fn timer_rules_fire_for_their_own_rule_and_follow_changes() {
    let dir = tempfile::tempdir().unwrap();
    let app =
        App::start(&AppConfig::new(format!("sqlite://{}", dir.path().join("a.db").display())), &[]).await.unwrap();
    app.rules.put(interval_rule("t.every_second", 1)).await.unwrap();
    app.rules.put(interval_rule("t.every_hour", 3_600)).await.unwrap();

    tokio::time::sleep(Duration::from_millis(2_600)).await;
    let fired = enforcements_of(&app, "t.every_second").await;
    assert!((2..=3).contains(&fired.len()), "{} fires in 2.6 s", fired.len());
    // The hourly rule shares the trigger but never sees the other timer's events.
    assert!(enforcements_of(&app, "t.every_hour").await.is_empty());
    let event = app.store.event(&fired[0].event_id).await.unwrap().unwrap();
    assert_eq!(event.source, "timer:t.every_second");
    assert_eq!(event.payload["type"], "interval");
    assert_eq!(event.payload["interval_seconds"], 1);
    assert_eq!(fired[0].parameters.as_ref().unwrap()["at"], event.payload["scheduled_at"]);

    // Disabled: it stops at once.
    app.rules.set_enabled("t.every_second", false).await.unwrap().unwrap();
    let at_disable = enforcements_of(&app, "t.every_second").await.len();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(enforcements_of(&app, "t.every_second").await.len(), at_disable);

    // A new schedule applies at once: the hourly rule becomes a 1 s timer.
    app.rules.put(interval_rule("t.every_hour", 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert!(!enforcements_of(&app, "t.every_hour").await.is_empty(), "the changed schedule did not apply");

    // Deleted: the timer and its state are gone (the scheduler deletes the state in the
    // background, after a fire in flight if there is one).
    assert!(app.rules.delete("t.every_hour").await.unwrap());
    let deleted = std::time::Instant::now();
    while app.store.timer_state("t.every_hour").await.unwrap().is_some() {
        assert!(deleted.elapsed() < Duration::from_secs(2), "the timer state outlived its rule");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn bad_trigger_params_are_rejected_when_the_rule_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let app =
        App::start(&AppConfig::new(format!("sqlite://{}", dir.path().join("a.db").display())), &[]).await.unwrap();
    let bad = RuleSpec::from_json(json!({
        "ref": "t.bad", "trigger": "core.crontimer", "trigger_params": {"expression": "*/5 * * *"},
        "action": {"ref": "core.echo"}
    }))
    .unwrap();
    match app.rules.put(bad).await {
        Err(RuleChangeError::Refused(RuleRefusal::Params(e))) => {
            assert_eq!(e.field, "trigger_params.expression", "{e}")
        }
        other => panic!("expected a trigger_params error, got {other:?}"),
    }
    assert!(app.store.rules().await.unwrap().is_empty(), "a rejected rule must not be stored");
    let past = RuleSpec::from_json(json!({
        "ref": "t.past", "trigger": "core.datetimetimer", "trigger_params": {"fire_at": "2020-01-01T00:00:00Z"},
        "action": {"ref": "core.echo"}
    }))
    .unwrap();
    assert!(
        matches!(app.rules.put(past).await, Err(RuleChangeError::Refused(RuleRefusal::Params(e))) if e.field == "trigger_params.fire_at")
    );
    app.shutdown().await;
}

/// Restarting a host around due instants loses no action: every timer event stored has its
/// enforcement, also the fire of an instant missed while the host was down, which is due the
/// moment it starts (its rule must already be in the matcher by then).
#[tokio::test]
async fn restarts_around_due_instants_keep_every_action() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    for restart in 0..20u64 {
        let app = App::start(&AppConfig::new(url.clone()), &[]).await.unwrap();
        if restart == 0 {
            app.rules.put(interval_rule("t.restarts", 1)).await.unwrap();
        }
        // Up and down for varying parts of the interval, so restarts land before, on and after
        // due instants, and instants fall due while the host is down.
        tokio::time::sleep(Duration::from_millis(100 + restart * 137 % 900)).await;
        app.shutdown().await;
        tokio::time::sleep(Duration::from_millis(restart * 211 % 1100)).await;
    }
    let app = App::start(&AppConfig::new(url), &[]).await.unwrap();
    let filter = ListFilter { trigger_ref: Some("core.intervaltimer".into()), limit: 1_000, ..Default::default() };
    let events = app.store.events(&filter).await.unwrap();
    let enforced: std::collections::HashSet<String> =
        enforcements_of(&app, "t.restarts").await.into_iter().map(|e| e.event_id).collect();
    assert!(events.len() >= 10, "only {} fires in 20 restarts", events.len());
    let lost: Vec<&str> = events.iter().filter(|e| !enforced.contains(&e.id)).map(|e| e.id.as_str()).collect();
    assert!(lost.is_empty(), "{} of {} timer events have no enforcement: {lost:?}", lost.len(), events.len());
    app.shutdown().await;
}
