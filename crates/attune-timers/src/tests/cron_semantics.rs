//! POSIX crontab semantics, as a table: expression, start, expected next instants (UTC).

use chrono::{Datelike, Weekday};

use super::{at, cron, next_n};
use crate::{CRON_TRIGGER, TimerSpec};

/// (expression, after, expected next instants).
const TABLE: &[(&str, &str, &[&str])] = &[
    // Sunday is 0 and 7. 2026-03-04 is a Wednesday, 2026-03-08 a Sunday.
    ("0 12 * * 0", "2026-03-04T00:00:00Z", &["2026-03-08T12:00:00Z", "2026-03-15T12:00:00Z"]),
    ("0 12 * * 7", "2026-03-04T00:00:00Z", &["2026-03-08T12:00:00Z", "2026-03-15T12:00:00Z"]),
    ("0 12 * * SUN", "2026-03-04T00:00:00Z", &["2026-03-08T12:00:00Z"]),
    ("0 12 * * 6-7", "2026-03-04T00:00:00Z", &["2026-03-07T12:00:00Z", "2026-03-08T12:00:00Z", "2026-03-14T12:00:00Z"]),
    ("0 12 * * SAT-SUN", "2026-03-04T00:00:00Z", &["2026-03-07T12:00:00Z", "2026-03-08T12:00:00Z"]),
    // 1-5 is Monday to Friday (Quartz numbering would give Sunday to Thursday). 2026-03-06 is a Friday.
    (
        "0 9 * * 1-5",
        "2026-03-06T12:00:00Z",
        &[
            "2026-03-09T09:00:00Z",
            "2026-03-10T09:00:00Z",
            "2026-03-11T09:00:00Z",
            "2026-03-12T09:00:00Z",
            "2026-03-13T09:00:00Z",
            "2026-03-16T09:00:00Z",
        ],
    ),
    ("0 9 * * MON-FRI", "2026-03-06T12:00:00Z", &["2026-03-09T09:00:00Z", "2026-03-10T09:00:00Z"]),
    ("0 9 * * mon,wed", "2026-03-06T12:00:00Z", &["2026-03-09T09:00:00Z", "2026-03-11T09:00:00Z"]),
    // Day of month and day of week both restricted: either matches (the 13th OR a Friday).
    (
        "0 0 13 * 5",
        "2026-03-01T00:00:00Z",
        &[
            "2026-03-06T00:00:00Z",
            "2026-03-13T00:00:00Z",
            "2026-03-20T00:00:00Z",
            "2026-03-27T00:00:00Z",
            "2026-04-03T00:00:00Z",
            "2026-04-10T00:00:00Z",
            "2026-04-13T00:00:00Z",
            "2026-04-17T00:00:00Z",
        ],
    ),
    // Only one restricted: that one decides.
    ("0 0 13 * *", "2026-03-01T00:00:00Z", &["2026-03-13T00:00:00Z", "2026-04-13T00:00:00Z"]),
    ("0 0 * * 5", "2026-03-01T00:00:00Z", &["2026-03-06T00:00:00Z", "2026-03-13T00:00:00Z"]),
    // `?` is `*`; croner's `+` asks for both (Friday the 13th).
    ("0 0 13 * ?", "2026-03-01T00:00:00Z", &["2026-03-13T00:00:00Z", "2026-04-13T00:00:00Z"]),
    ("0 0 13 * +5", "2026-03-01T00:00:00Z", &["2026-03-13T00:00:00Z", "2026-11-13T00:00:00Z", "2027-08-13T00:00:00Z"]),
    // Month names, any case.
    ("0 0 1 JAN,jul *", "2026-03-01T00:00:00Z", &["2026-07-01T00:00:00Z", "2027-01-01T00:00:00Z"]),
    (
        "30 6 1 mar-apr *",
        "2026-01-01T00:00:00Z",
        &["2026-03-01T06:30:00Z", "2026-04-01T06:30:00Z", "2027-03-01T06:30:00Z"],
    ),
    // Macros.
    ("@hourly", "2026-03-01T10:20:00Z", &["2026-03-01T11:00:00Z", "2026-03-01T12:00:00Z"]),
    ("@daily", "2026-03-01T10:20:00Z", &["2026-03-02T00:00:00Z", "2026-03-03T00:00:00Z"]),
    ("@midnight", "2026-03-01T10:20:00Z", &["2026-03-02T00:00:00Z"]),
    ("@weekly", "2026-03-04T10:20:00Z", &["2026-03-08T00:00:00Z", "2026-03-15T00:00:00Z"]),
    ("@monthly", "2026-03-04T10:20:00Z", &["2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"]),
    ("@yearly", "2026-03-04T10:20:00Z", &["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"]),
    ("@annually", "2026-03-04T10:20:00Z", &["2027-01-01T00:00:00Z"]),
    ("@HOURLY", "2026-03-01T10:20:00Z", &["2026-03-01T11:00:00Z"]),
    // Six fields: leading seconds.
    (
        "*/15 * * * * *",
        "2026-03-01T10:20:07Z",
        &["2026-03-01T10:20:15Z", "2026-03-01T10:20:30Z", "2026-03-01T10:20:45Z", "2026-03-01T10:21:00Z"],
    ),
    ("30 0 12 * * *", "2026-03-01T10:20:00Z", &["2026-03-01T12:00:30Z", "2026-03-02T12:00:30Z"]),
    // Five fields fire at second 0; steps, lists, ranges.
    ("*/20 * * * *", "2026-03-01T10:20:00Z", &["2026-03-01T10:40:00Z", "2026-03-01T11:00:00Z"]),
    (
        "5,35 8-9 * * *",
        "2026-03-01T00:00:00Z",
        &[
            "2026-03-01T08:05:00Z",
            "2026-03-01T08:35:00Z",
            "2026-03-01T09:05:00Z",
            "2026-03-01T09:35:00Z",
            "2026-03-02T08:05:00Z",
        ],
    ),
    (
        "0 10-20/5 * * *",
        "2026-03-01T00:00:00Z",
        &["2026-03-01T10:00:00Z", "2026-03-01T15:00:00Z", "2026-03-01T20:00:00Z", "2026-03-02T10:00:00Z"],
    ),
    // Leap day.
    ("0 0 29 2 *", "2026-01-01T00:00:00Z", &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]),
    // Strictly after: an instant equal to `after` is not returned.
    ("0 12 * * *", "2026-03-01T12:00:00Z", &["2026-03-02T12:00:00Z"]),
    ("0 12 * * *", "2026-03-01T11:59:59.999Z", &["2026-03-01T12:00:00Z"]),
];

#[test]
fn cron_table() {
    for (expression, after, expected) in TABLE {
        let spec = cron(expression, "UTC");
        let got = next_n(&spec, after, expected.len());
        assert_eq!(&got, expected, "`{expression}` after {after}");
    }
}

#[test]
fn one_to_five_is_monday_to_friday_over_a_year() {
    let spec = cron("0 9 * * 1-5", "UTC");
    let mut t = at("2026-01-01T00:00:00Z");
    for _ in 0..260 {
        t = spec.next_after(t).unwrap();
        assert!(!matches!(t.weekday(), Weekday::Sat | Weekday::Sun), "{t} is a weekend");
    }
}

/// (expression, expected field in the message, expected words in the message).
const BAD: &[(&str, &str)] = &[
    ("", "must not be empty"),
    ("   ", "must not be empty"),
    ("* * * *", "expected 5 fields"),
    ("0 0 0 * * * 2026", "found 7"),
    ("0 0 * MON *", "month field `MON`: `MON` is not allowed here"),
    ("0 0 * * JAN", "day-of-week field `JAN`: `JAN` is not allowed here"),
    ("MON * * * *", "minute field `MON`"),
    ("0 24 * * *", "hour field `24`"),
    ("61 * * * *", "minute field `61`"),
    ("0 0 32 * *", "day-of-month field `32`"),
    ("0 0 * 13 *", "month field `13`"),
    ("0 0 * * 8", "day-of-week field `8`"),
    ("0/5 * * * *", "minute field `0/5`"),
    ("*/0 * * * *", "minute field `*/0`"),
    ("0 0 31 2 *", "never matches a real date"),
    ("@reboot", "`@reboot` is not a schedule"),
    ("@fortnightly", "unknown macro `@fortnightly`"),
    ("0 0 * * 1$", "character `$` is not allowed"),
    ("0 0 L * *", ""),
];

#[test]
fn bad_expressions_are_rejected_naming_the_field() {
    for (expression, words) in BAD {
        let result = TimerSpec::parse(CRON_TRIGGER, &serde_json::json!({"expression": expression}));
        if expression.contains('L') {
            // `L` (last day of month) is a croner extension that is accepted.
            assert!(result.is_ok(), "`{expression}`: {result:?}");
            continue;
        }
        let err = result.expect_err(expression);
        assert_eq!(err.field, "trigger_params.expression", "`{expression}`");
        assert!(err.message.contains(words), "`{expression}`: {err}");
    }
}

#[test]
fn cron_payload_shape() {
    let spec = cron("*/5 * * * *", "Europe/Paris");
    let payload = spec.payload(at("2026-03-01T10:05:00Z"), at("2026-03-01T10:05:00.0012Z"), 7);
    assert_eq!(
        payload,
        serde_json::json!({
            "type": "cron",
            "expression": "*/5 * * * *",
            "timezone": "Europe/Paris",
            "scheduled_at": "2026-03-01T10:05:00.000Z",
            "fired_at": "2026-03-01T10:05:00.001Z",
        })
    );
}

#[test]
fn a_stepped_wildcard_counts_as_restricted() {
    // 2026-03-04 is a Wednesday: odd days OR Mondays.
    let spec = cron("0 0 */2 * 1", "UTC");
    assert_eq!(
        next_n(&spec, "2026-03-04T00:00:00Z", 4),
        ["2026-03-05T00:00:00Z", "2026-03-07T00:00:00Z", "2026-03-09T00:00:00Z", "2026-03-11T00:00:00Z"]
    );
}
