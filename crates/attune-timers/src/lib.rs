//! Native timers (spec sections 4 and 5): one timer per enabled rule on `core.intervaltimer`,
//! `core.crontimer` or `core.datetimetimer`, all run by one scheduler task; each fire becomes a
//! payload through the host's [`FireSink`], and timer state survives restarts through a
//! [`TimerStore`].
//!
//! ```
//! use attune_timers::{TimerSpec, preview_lines};
//! use chrono::{DateTime, Utc};
//! use serde_json::json;
//!
//! // Rules are checked when saved; errors name the field.
//! let err = TimerSpec::parse("core.crontimer", &json!({"expression": "0 9 * * 1-5", "timezone": "Europe/Pariss"}))
//!     .unwrap_err();
//! assert_eq!(err.to_string(), "trigger_params.timezone: unknown time zone `Europe/Pariss`");
//!
//! // POSIX weekdays: 1-5 is Monday to Friday. 2026-03-06 is a Friday.
//! let spec = TimerSpec::parse("core.crontimer", &json!({"expression": "0 9 * * 1-5", "timezone": "Europe/Paris"})).unwrap();
//! let after: DateTime<Utc> = "2026-03-06T12:00:00Z".parse().unwrap();
//! assert_eq!(spec.next_after(after).unwrap().to_rfc3339(), "2026-03-09T08:00:00+00:00");
//!
//! // `attune-host timer preview`: RFC 3339 in the timer's zone.
//! let lines = preview_lines(r#"{"expression": "@daily", "timezone": "America/New_York"}"#,
//!     Some("2026-03-07T12:00:00Z"), 2).unwrap();
//! assert_eq!(lines, ["2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00"]);
//! ```
//!
//! # `trigger_params`
//!
//! Unknown keys are rejected, naming the key. Times are RFC 3339 with an offset and are kept to
//! the microsecond.
//!
//! | trigger | keys | meaning |
//! |---|---|---|
//! | `core.intervaltimer` | `interval` (whole number ≥ 1, required), `unit` (`seconds` default, `minutes`, `hours`, `days`, `weeks`), `anchor` (RFC 3339, optional) | fires at `anchor + k·interval`, k = 0, 1, …: an absolute grid, so no drift accumulates and a late fire does not move later ones. Without `anchor` the grid starts one interval after the timer starts, and is kept across restarts (the stored next instant anchors it). |
//! | `core.crontimer` | `expression` (required), `timezone` (IANA, default `UTC`) | POSIX crontab, see [`cron`] for fields, names, macros and DST. |
//! | `core.datetimetimer` | `fire_at` (RFC 3339, required) | fires once. [`TimerSpec::parse_new`] rejects a time not in the future unless `misfire` is given as `fire_once` or `catch_up`. |
//! | all | `misfire` (`skip`, `fire_once`, `catch_up`), `max_catch_up` (1 to 10,000, default 10, only with `catch_up`) | default `fire_once` for one-shots, `skip` for recurring timers |
//!
//! # Misfires
//!
//! A planned instant fired at most [`SchedulerConfig::misfire_grace`] (1 s) late is on time, and
//! fires, whatever the policy. Instants later than that (the host was down, the process was
//! suspended) are *missed*, and the policy decides:
//!
//! * `skip`: none of them fires; the timer resumes at the first instant that is still on time.
//! * `fire_once`: one fire, for the latest missed instant (its `scheduled_at`).
//! * `catch_up`: each missed instant fires, oldest first, at most `max_catch_up` of them in a row;
//!   the rest are skipped (logged).
//!
//! A one-shot that fired is never fired again; one whose time passed while its rule was disabled
//! ([`SchedulerHandle::remove`]) does not fire when re-enabled. `execution_count` continues from
//! the stored count.
//!
//! # Fire, then record: what the host must do for exactly-once
//!
//! For each planned instant the scheduler calls [`FireSink::fire`] and, only once it returns `Ok`,
//! saves the new [`TimerState`] (`last_scheduled_at` = the instant). Instants at or before the
//! stored `last_scheduled_at` are never fired again, so:
//!
//! * nothing is lost: a fire the sink refused is retried for the same instant (with backoff, however
//!   late, the policy not applying); a crash before the sink accepted leaves the instant unrecorded,
//!   and it is treated as missed after the restart (fires under `fire_once`/`catch_up` and within
//!   the grace; under `skip` beyond the grace it is skipped *and logged*, which is what `skip` asks);
//! * a crash after the sink accepted but before the save can offer the same instant again. The
//!   sink must absorb that: store the event under [`Fire::dedup_key`] (`timer:<rule>:<scheduled µs>`,
//!   e.g. a UUIDv5 of it as the event id with a unique constraint, a duplicate counting as
//!   accepted), or write [`Fire::state_after`] to `timer_state` in the same transaction as the
//!   event. Either gives exactly one event per (rule, scheduled instant).
//!
//! # Time
//!
//! The scheduler waits with `tokio::time::sleep_until` and reads wall time through a [`Clock`]:
//! [`SystemClock`] in production, [`TokioClock`] in tests under paused tokio time.

#![warn(missing_docs)]

pub mod cron;
mod error;
mod scheduler;
mod spec;
mod store;
mod time;

pub use error::{SchedulerError, TimerError};
pub use scheduler::{Scheduler, SchedulerConfig, SchedulerHandle};
pub use spec::{
    CRON_TRIGGER, DATETIME_TRIGGER, DEFAULT_MAX_CATCH_UP, INTERVAL_TRIGGER, IntervalSchedule, IntervalUnit,
    MAX_MAX_CATCH_UP, MisfirePolicy, OnceSchedule, Schedule, TIMER_TRIGGERS, TimerSpec, is_timer_trigger,
    preview_lines,
};
pub use store::{BoxError, Fire, FireSink, MemoryFireSink, MemoryTimerStore, TimerState, TimerStore};
pub use time::{Clock, SystemClock, TokioClock, from_micros, micros, trunc_micros};

#[cfg(test)]
mod tests;
