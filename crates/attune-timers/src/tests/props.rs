//! Properties: planned instants strictly increase, and `next_after` is the *first* instant after.

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;
use serde_json::json;

use crate::{CRON_TRIGGER, INTERVAL_TRIGGER, Schedule, TimerSpec, micros};

const ZONES: &[&str] = &[
    "UTC",
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "America/Santiago",
];

fn field(choices: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
    proptest::sample::select(choices)
}

/// Valid expressions mixing fixed and wildcard fields, 5 or 6 fields, names and macros.
fn expression() -> impl Strategy<Value = String> {
    let seconds = field(&["", "0 ", "30 ", "*/20 ", "5,50 "]);
    let minutes = field(&["*", "*/7", "0", "15,45", "0-10/3", "59", "30"]);
    let hours = field(&["*", "0", "2", "1,2,3", "*/6", "9-17", "1-3"]);
    let dom = field(&["*", "1", "13", "28-31", "*/10", "L"]);
    let months = field(&["*", "1", "2,8", "*/3", "FEB-APR", "10-11"]);
    let dow = field(&["*", "0", "1-5", "SAT", "5", "7"]);
    let macros = field(&["@hourly", "@daily", "@weekly", "@monthly", "@yearly"]);
    prop_oneof![
        9 => (seconds, minutes, hours, dom, months, dow).prop_map(|(s, m, h, d, mo, w)| format!("{s}{m} {h} {d} {mo} {w}")),
        1 => macros.prop_map(str::to_owned),
    ]
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    // 2000..2040, microsecond resolution.
    (946_684_800_000_000_i64..2_208_988_800_000_000).prop_map(|us| DateTime::from_timestamp_micros(us).unwrap())
}

/// Around the 2026 DST changes of the zones above (within a day and a half before, half a day after).
fn near_dst_change() -> impl Strategy<Value = DateTime<Utc>> {
    let changes = proptest::sample::select(
        &[
            "2026-03-08T07:00:00Z", // New York, spring
            "2026-11-01T06:00:00Z", // New York, fall
            "2026-03-29T01:00:00Z", // Europe, spring
            "2026-10-25T01:00:00Z", // Europe, fall
            "2026-04-04T15:00:00Z", // Lord Howe, fall (30 min)
            "2026-10-03T15:30:00Z", // Lord Howe, spring (30 min)
            "2026-04-04T14:45:00Z", // Chatham, fall
            "2026-09-26T14:00:00Z", // Chatham, spring
        ][..],
    );
    (changes, -129_600_000_000_i64..43_200_000_000).prop_map(|(change, offset)| {
        DateTime::parse_from_rfc3339(change).unwrap().with_timezone(&Utc) + TimeDelta::microseconds(offset)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn cron_instants_strictly_increase_and_none_is_skipped(
        expression in expression(),
        zone in proptest::sample::select(ZONES),
        start in prop_oneof![instant(), near_dst_change()],
        probe in 0.0_f64..1.0,
    ) {
        let spec = TimerSpec::parse(CRON_TRIGGER, &json!({"expression": expression, "timezone": zone})).unwrap();
        let Schedule::Cron(schedule) = spec.schedule() else { unreachable!() };
        let mut seen_walls = std::collections::HashSet::new();
        let mut t = start;
        for _ in 0..48 {
            let Some(next) = spec.next_after(t) else { break };
            prop_assert!(next > t, "{expression} in {zone}: {next} after {t}");
            if !schedule.is_wildcard() {
                // A fixed-time job never fires twice for one wall-clock time (the repeated hour).
                let wall = next.with_timezone(&schedule.zone()).naive_local();
                prop_assert!(seen_walls.insert(wall), "{expression} in {zone}: {wall} twice");
            }
            // Any point between t and next has the same next instant (next_after is the first).
            let gap = micros(next) - micros(t);
            let between = t + TimeDelta::microseconds(((gap as f64) * probe) as i64);
            if between < next {
                prop_assert_eq!(spec.next_after(between), Some(next), "{} in {} between {} and {}", expression, zone, t, next);
            }
            t = next;
        }
    }

    #[test]
    fn interval_instants_strictly_increase_on_the_grid(
        interval in 1_u64..30_000,
        unit in proptest::sample::select(&["seconds", "minutes", "hours", "days"][..]),
        anchor in instant(),
        start in instant(),
    ) {
        let spec = TimerSpec::parse(
            INTERVAL_TRIGGER,
            &json!({"interval": interval, "unit": unit, "anchor": anchor.to_rfc3339()}),
        ).unwrap();
        let every = match unit { "seconds" => 1, "minutes" => 60, "hours" => 3_600, _ => 86_400 } * interval as i64 * 1_000_000;
        let mut t = start;
        for _ in 0..50 {
            let Some(next) = spec.next_after(t) else { break };
            prop_assert!(next > t);
            prop_assert!(next >= anchor);
            prop_assert_eq!((micros(next) - micros(anchor)) % every, 0);
            prop_assert!(next == anchor || micros(next) - micros(t) <= every);
            t = next;
        }
    }
}
