//! `trigger_params` checking, interval and one-shot schedules, payloads and previews.

use serde_json::json;

use super::{at, next_n, spec};
use crate::{
    CRON_TRIGGER, DATETIME_TRIGGER, INTERVAL_TRIGGER, MisfirePolicy, TimerError, TimerSpec, micros, preview_lines,
};

fn err(trigger: &str, params: serde_json::Value) -> TimerError {
    TimerSpec::parse(trigger, &params).expect_err("params should be rejected")
}

#[test]
fn bad_params_name_the_field() {
    let cases = [
        (INTERVAL_TRIGGER, json!({}), "trigger_params.interval", "is required"),
        (INTERVAL_TRIGGER, json!({"interval": 0}), "trigger_params.interval", "positive whole number"),
        (INTERVAL_TRIGGER, json!({"interval": -5}), "trigger_params.interval", "positive whole number"),
        (INTERVAL_TRIGGER, json!({"interval": 1.5}), "trigger_params.interval", "positive whole number"),
        (INTERVAL_TRIGGER, json!({"interval": "10"}), "trigger_params.interval", "positive whole number"),
        (INTERVAL_TRIGGER, json!({"interval": 10, "unit": "fortnights"}), "trigger_params.unit", "unknown unit"),
        (INTERVAL_TRIGGER, json!({"interval": 10, "unit": 5}), "trigger_params.unit", "must be a string"),
        (INTERVAL_TRIGGER, json!({"interval": 100_000, "unit": "weeks"}), "trigger_params.interval", "too large"),
        (INTERVAL_TRIGGER, json!({"interval": 10, "anchor": "yesterday"}), "trigger_params.anchor", "RFC 3339"),
        (INTERVAL_TRIGGER, json!({"interval": 10, "every": 3}), "trigger_params.every", "unknown key"),
        (INTERVAL_TRIGGER, json!({"interval": 10, "timezone": "UTC"}), "trigger_params.timezone", "unknown key"),
        (CRON_TRIGGER, json!({}), "trigger_params.expression", "is required"),
        (CRON_TRIGGER, json!({"expression": 5}), "trigger_params.expression", "must be a string"),
        (
            CRON_TRIGGER,
            json!({"expression": "* * * * *", "timezone": "Mars/Olympus"}),
            "trigger_params.timezone",
            "unknown time zone `Mars/Olympus`",
        ),
        (CRON_TRIGGER, json!({"expression": "* * * * *", "tz": "UTC"}), "trigger_params.tz", "unknown key"),
        (DATETIME_TRIGGER, json!({}), "trigger_params.fire_at", "is required"),
        (DATETIME_TRIGGER, json!({"fire_at": "2026-12-01 09:00"}), "trigger_params.fire_at", "RFC 3339"),
        (DATETIME_TRIGGER, json!({"fire_at": "2026-12-01T09:00:00"}), "trigger_params.fire_at", "RFC 3339"),
        (
            DATETIME_TRIGGER,
            json!({"fire_at": "2026-12-01T09:00:00Z", "misfire": "later"}),
            "trigger_params.misfire",
            "unknown misfire policy",
        ),
        (INTERVAL_TRIGGER, json!({"interval": 1, "max_catch_up": 5}), "trigger_params.max_catch_up", "only applies"),
        (
            INTERVAL_TRIGGER,
            json!({"interval": 1, "misfire": "catch_up", "max_catch_up": 0}),
            "trigger_params.max_catch_up",
            "from 1 to",
        ),
        (INTERVAL_TRIGGER, json!([1, 2]), "trigger_params", "must be an object"),
        ("core.webhook", json!({}), "trigger", "not a timer trigger"),
    ];
    for (trigger, params, field, words) in cases {
        let e = err(trigger, params.clone());
        assert_eq!(e.field, field, "{params}");
        assert!(e.message.contains(words), "{params}: {e}");
    }
}

#[test]
fn error_display_names_the_field() {
    let e = err(CRON_TRIGGER, json!({"expression": "0 * * * *", "timezone": "Europe/Pariss"}));
    assert_eq!(e.to_string(), "trigger_params.timezone: unknown time zone `Europe/Pariss`");
}

#[test]
fn defaults() {
    let interval = spec(INTERVAL_TRIGGER, json!({"interval": 10}));
    assert_eq!(interval.misfire(), MisfirePolicy::Skip);
    assert!(interval.is_recurring());
    let once = spec(DATETIME_TRIGGER, json!({"fire_at": "2026-12-01T09:00:00Z"}));
    assert_eq!(once.misfire(), MisfirePolicy::FireOnce);
    assert!(!once.is_recurring());
    let catch_up = spec(CRON_TRIGGER, json!({"expression": "* * * * *", "misfire": "catch_up"}));
    assert_eq!((catch_up.misfire(), catch_up.max_catch_up()), (MisfirePolicy::CatchUp, 10));
    let capped = spec(CRON_TRIGGER, json!({"expression": "* * * * *", "misfire": "catch_up", "max_catch_up": 3}));
    assert_eq!(capped.max_catch_up(), 3);
    // `null` params are `{}`.
    assert!(TimerSpec::parse(CRON_TRIGGER, &serde_json::Value::Null).is_err());
}

#[test]
fn interval_units() {
    for (unit, seconds) in [("seconds", 1), ("minutes", 60), ("hours", 3600), ("days", 86_400), ("weeks", 604_800)] {
        let s = spec(INTERVAL_TRIGGER, json!({"interval": 3, "unit": unit, "anchor": "2026-01-01T00:00:00Z"}));
        assert_eq!(
            s.next_after(at("2026-01-01T00:00:00Z")).map(|t| micros(t) - micros(at("2026-01-01T00:00:00Z"))),
            Some(3 * seconds * 1_000_000),
            "{unit}"
        );
    }
}

#[test]
fn interval_is_an_absolute_grid_without_drift() {
    let s = spec(INTERVAL_TRIGGER, json!({"interval": 7, "anchor": "2026-01-01T00:00:00.123456Z"}));
    let anchor = micros(at("2026-01-01T00:00:00.123456Z"));
    // Before the anchor, the anchor itself is first.
    assert_eq!(s.next_after(at("2025-12-31T00:00:00Z")).map(micros), Some(anchor));
    // A million fires on: exactly anchor + k·interval.
    let mut t = s.next_after(at("2025-12-31T00:00:00Z")).unwrap();
    for k in 1..=1_000_000_i64 {
        t = s.next_after(t).unwrap();
        assert_eq!(micros(t), anchor + k * 7_000_000);
    }
    // A late wake-up (3.7 intervals late) does not shift the grid.
    let late = chrono::DateTime::from_timestamp_micros(anchor + 37 * 700_000).unwrap();
    assert_eq!(s.next_after(late).map(micros), Some(anchor + 4 * 7_000_000));
}

#[test]
fn interval_without_anchor_starts_one_interval_after() {
    let s = spec(INTERVAL_TRIGGER, json!({"interval": 2, "unit": "minutes"}));
    assert_eq!(next_n(&s, "2026-01-01T00:00:30Z", 2), ["2026-01-01T00:02:30Z", "2026-01-01T00:04:30Z"]);
}

#[test]
fn one_shot_in_the_past_is_an_error_unless_a_misfire_policy_allows_it() {
    let now = at("2026-06-01T00:00:00Z");
    let past = json!({"fire_at": "2026-05-01T00:00:00Z"});
    let e = TimerSpec::parse_new(DATETIME_TRIGGER, &past, now).expect_err("past");
    assert_eq!(e.field, "trigger_params.fire_at");
    assert!(e.message.contains("is in the past"), "{e}");
    // Stored rules load regardless (a one-shot that fired stays valid).
    assert!(TimerSpec::parse(DATETIME_TRIGGER, &past).is_ok());
    for (policy, ok) in [("fire_once", true), ("catch_up", true), ("skip", false)] {
        let params = json!({"fire_at": "2026-05-01T00:00:00Z", "misfire": policy});
        assert_eq!(TimerSpec::parse_new(DATETIME_TRIGGER, &params, now).is_ok(), ok, "{policy}");
    }
    let future = json!({"fire_at": "2026-07-01T00:00:00+02:00"});
    let s = TimerSpec::parse_new(DATETIME_TRIGGER, &future, now).unwrap();
    assert_eq!(next_n(&s, "2026-06-01T00:00:00Z", 1), ["2026-06-30T22:00:00Z"]);
    assert_eq!(s.next_after(at("2026-06-30T22:00:00Z")), None);
}

#[test]
fn payload_shapes() {
    let interval = spec(INTERVAL_TRIGGER, json!({"interval": 5, "unit": "minutes"}));
    assert_eq!(
        interval.payload(at("2026-01-01T00:05:00Z"), at("2026-01-01T00:05:00.002999Z"), 3),
        json!({
            "type": "interval",
            "interval_seconds": 300,
            "scheduled_at": "2026-01-01T00:05:00.000Z",
            "fired_at": "2026-01-01T00:05:00.002Z",
            "execution_count": 3,
        })
    );
    let once = spec(DATETIME_TRIGGER, json!({"fire_at": "2026-12-01T10:00:00+01:00"}));
    assert_eq!(
        once.payload(at("2026-12-01T09:00:00Z"), at("2026-12-01T09:00:01.250Z"), 1),
        json!({
            "type": "datetime",
            "fire_at": "2026-12-01T09:00:00.000Z",
            "fired_at": "2026-12-01T09:00:01.250Z",
            "delay_ms": 1250,
        })
    );
}

#[test]
fn preview_lines_for_the_cli() {
    let lines = preview_lines(
        r#"{"expression": "30 2 * * *", "timezone": "Europe/Paris"}"#,
        Some("2026-03-28T12:00:00+01:00"),
        3,
    )
    .unwrap();
    assert_eq!(lines, ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]);

    let lines = preview_lines(r#"{"expression": "0 0 * * *"}"#, Some("2026-03-28T12:00:00Z"), 2).unwrap();
    assert_eq!(lines, ["2026-03-29T00:00:00Z", "2026-03-30T00:00:00Z"]);

    let lines = preview_lines(
        r#"{"interval": 90, "unit": "minutes", "anchor": "2026-01-01T00:00:00Z"}"#,
        Some("2026-01-01T01:00:00Z"),
        2,
    )
    .unwrap();
    assert_eq!(lines, ["2026-01-01T01:30:00Z", "2026-01-01T03:00:00Z"]);

    let lines = preview_lines(r#"{"interval": 10}"#, Some("2026-01-01T00:00:00Z"), 2).unwrap();
    assert_eq!(lines, ["2026-01-01T00:00:10Z", "2026-01-01T00:00:20Z"]);

    let lines = preview_lines(r#"{"fire_at": "2026-12-01T09:00:00+01:00"}"#, Some("2026-01-01T00:00:00Z"), 5).unwrap();
    assert_eq!(lines, ["2026-12-01T09:00:00+01:00"]);

    assert_eq!(preview_lines(r#"{"interval": 10}"#, Some("2026-01-01T00:00:00Z"), 0).unwrap(), Vec::<String>::new());
}

#[test]
fn preview_lines_errors_say_what_is_wrong() {
    let cases = [
        (r#"{"expression": "0 25 * * *"}"#, None, "trigger_params.expression: hour field `25`"),
        (
            r#"{"expression": "* * * * *", "timezone": "Europe/Pariss"}"#,
            None,
            "trigger_params.timezone: unknown time zone",
        ),
        (r#"{"interval": 0}"#, None, "trigger_params.interval: must be a positive whole number"),
        (r#"{"interval": 10, "expression": "* * * * *"}"#, None, "trigger_params: expected exactly one of"),
        (r#"{"unit": "seconds"}"#, None, "trigger_params: expected exactly one of"),
        (r#"{"interval": "#, None, "trigger_params: not valid JSON"),
        (r#"[1]"#, None, "trigger_params: must be an object"),
        (r#"{"interval": 10}"#, Some("tomorrow"), "after: `tomorrow` is not an RFC 3339 time"),
        (
            r#"{"fire_at": "2020-01-01T00:00:00Z"}"#,
            Some("2026-01-01T00:00:00Z"),
            "trigger_params.fire_at: 2020-01-01T00:00:00Z is in the past",
        ),
    ];
    for (params, after, expected) in cases {
        let e = preview_lines(params, after, 3).expect_err(params);
        assert!(e.to_string().starts_with(expected), "{params}: {e}");
    }
}
