//! Tests: cron semantics, DST, params, intervals, the scheduler under paused time, restarts and
//! properties.

mod cron_semantics;
mod dst;
mod params;
mod props;
mod restart;
mod scheduler;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::TimerSpec;

/// Parses an RFC 3339 time.
pub(crate) fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
}

/// Parses a timer spec.
pub(crate) fn spec(trigger: &str, params: Value) -> TimerSpec {
    TimerSpec::parse(trigger, &params).unwrap()
}

/// A cron spec.
pub(crate) fn cron(expression: &str, timezone: &str) -> TimerSpec {
    spec(crate::CRON_TRIGGER, serde_json::json!({"expression": expression, "timezone": timezone}))
}

/// The next `n` instants after `after`, as RFC 3339 UTC strings.
pub(crate) fn next_n(spec: &TimerSpec, after: &str, n: usize) -> Vec<String> {
    let mut t = at(after);
    let mut out = Vec::new();
    for _ in 0..n {
        t = spec.next_after(t).unwrap();
        out.push(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    }
    out
}

/// The next `n` instants after `after`, in the timer's zone (via `preview`).
pub(crate) fn preview_n(spec: &TimerSpec, after: &str, n: usize) -> Vec<String> {
    spec.preview(at(after), n).iter().map(|t| t.to_rfc3339()).collect()
}
