//! Timer specifications: `trigger_params` of the three core timer triggers, parsed and checked once.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, FixedOffset, Offset, SecondsFormat, TimeDelta, Utc};
use serde_json::{Map, Value, json};

use crate::cron::CronSchedule;
use crate::error::TimerError;
use crate::time::{micros, trunc_micros};

/// Trigger ref of interval timers.
pub const INTERVAL_TRIGGER: &str = "core.intervaltimer";
/// Trigger ref of cron timers.
pub const CRON_TRIGGER: &str = "core.crontimer";
/// Trigger ref of one-shot timers.
pub const DATETIME_TRIGGER: &str = "core.datetimetimer";
/// The triggers served by native timers.
pub const TIMER_TRIGGERS: [&str; 3] = [INTERVAL_TRIGGER, CRON_TRIGGER, DATETIME_TRIGGER];

/// Default of `max_catch_up` (how many missed instants `misfire: catch_up` fires at most).
pub const DEFAULT_MAX_CATCH_UP: u32 = 10;
/// Largest accepted `max_catch_up`.
pub const MAX_MAX_CATCH_UP: u32 = 10_000;
/// Largest accepted interval: 100 years.
const MAX_INTERVAL_SECONDS: u64 = 100 * 366 * 86_400;

/// Whether `trigger_ref` is served by a native timer.
pub fn is_timer_trigger(trigger_ref: &str) -> bool {
    TIMER_TRIGGERS.contains(&trigger_ref)
}

/// What a timer does with planned instants it could not fire on time (host down, process
/// suspended): see the crate docs for the exact rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MisfirePolicy {
    /// Fire none of them; resume at the next instant that is still on time.
    Skip,
    /// Fire once, for the latest missed instant.
    FireOnce,
    /// Fire each missed instant, oldest first, at most `max_catch_up` of them; drop the rest.
    CatchUp,
}

impl MisfirePolicy {
    /// The `misfire` value: `skip`, `fire_once` or `catch_up`.
    pub fn as_str(self) -> &'static str {
        match self {
            MisfirePolicy::Skip => "skip",
            MisfirePolicy::FireOnce => "fire_once",
            MisfirePolicy::CatchUp => "catch_up",
        }
    }
}

impl fmt::Display for MisfirePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MisfirePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(MisfirePolicy::Skip),
            "fire_once" => Ok(MisfirePolicy::FireOnce),
            "catch_up" => Ok(MisfirePolicy::CatchUp),
            other => Err(format!("unknown misfire policy `{other}` (expected skip, fire_once or catch_up)")),
        }
    }
}

/// The unit of an interval timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IntervalUnit {
    /// 1 s.
    Seconds,
    /// 60 s.
    Minutes,
    /// 3,600 s.
    Hours,
    /// 86,400 s (a fixed length: interval timers do not follow DST).
    Days,
    /// 7 days.
    Weeks,
}

impl IntervalUnit {
    fn seconds(self) -> u64 {
        match self {
            IntervalUnit::Seconds => 1,
            IntervalUnit::Minutes => 60,
            IntervalUnit::Hours => 3_600,
            IntervalUnit::Days => 86_400,
            IntervalUnit::Weeks => 7 * 86_400,
        }
    }
}

/// `{interval, unit, anchor}`: fires at `anchor + k·interval`, k = 0, 1, 2, …
#[derive(Debug, Clone, PartialEq)]
pub struct IntervalSchedule {
    interval: u64,
    unit: IntervalUnit,
    /// Microseconds between instants.
    every: i64,
    /// The first planned instant. `None` until the scheduler starts the timer (then: start time +
    /// one interval, or the stored next instant after a restart).
    anchor: Option<DateTime<Utc>>,
}

impl IntervalSchedule {
    /// The interval in seconds.
    pub fn interval_seconds(&self) -> u64 {
        self.interval * self.unit.seconds()
    }

    /// The first planned instant, when given or fixed by the scheduler.
    pub fn anchor(&self) -> Option<DateTime<Utc>> {
        self.anchor
    }

    fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Without an anchor the timer is taken as started at `t`.
        let anchor = self.anchor.unwrap_or(t.checked_add_signed(TimeDelta::microseconds(self.every))?);
        let (a, t) = (micros(anchor), micros(t));
        if t < a {
            return Some(anchor);
        }
        let k = (t - a) / self.every + 1;
        DateTime::from_timestamp_micros(a.checked_add(k.checked_mul(self.every)?)?)
    }

    fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let a = micros(self.anchor?);
        let t = micros(t);
        if t < a {
            return None;
        }
        DateTime::from_timestamp_micros(a + (t - a) / self.every * self.every)
    }
}

/// `{fire_at}`: fires once.
#[derive(Debug, Clone, PartialEq)]
pub struct OnceSchedule {
    fire_at: DateTime<Utc>,
    /// The offset `fire_at` was written with, for previews.
    offset: FixedOffset,
}

impl OnceSchedule {
    /// The planned instant.
    pub fn fire_at(&self) -> DateTime<Utc> {
        self.fire_at
    }
}

/// The schedule of a timer.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Schedule {
    /// `core.intervaltimer`.
    Interval(IntervalSchedule),
    /// `core.crontimer`.
    Cron(CronSchedule),
    /// `core.datetimetimer`.
    Once(OnceSchedule),
}

/// A checked timer: its schedule and misfire policy. Built by [`TimerSpec::parse`] (rules loaded at
/// start-up) or [`TimerSpec::parse_new`] (rules being saved).
#[derive(Debug, Clone, PartialEq)]
pub struct TimerSpec {
    schedule: Schedule,
    misfire: MisfirePolicy,
    /// `misfire` was written in the params (it may then allow a one-shot in the past).
    misfire_given: bool,
    max_catch_up: u32,
}

const INTERVAL_KEYS: &[&str] = &["interval", "unit", "anchor", "misfire", "max_catch_up"];
const CRON_KEYS: &[&str] = &["expression", "timezone", "misfire", "max_catch_up"];
const ONCE_KEYS: &[&str] = &["fire_at", "misfire", "max_catch_up"];

impl TimerSpec {
    /// Parses the `trigger_params` of a rule on `trigger_ref` (one of [`TIMER_TRIGGERS`]). Checks
    /// shape, types, ranges, the cron expression and time zone; unknown keys are rejected.
    ///
    /// Use this when loading stored rules; when a rule is saved use [`TimerSpec::parse_new`], which
    /// also rejects a one-shot time in the past.
    pub fn parse(trigger_ref: &str, params: &Value) -> Result<TimerSpec, TimerError> {
        let keys = match trigger_ref {
            INTERVAL_TRIGGER => INTERVAL_KEYS,
            CRON_TRIGGER => CRON_KEYS,
            DATETIME_TRIGGER => ONCE_KEYS,
            other => {
                return Err(TimerError::new(
                    "trigger",
                    format!("`{other}` is not a timer trigger (expected {})", TIMER_TRIGGERS.join(", ")),
                ));
            }
        };
        let empty = Map::new();
        let map = match params {
            Value::Object(map) => map,
            Value::Null => &empty,
            _ => return Err(TimerError::new("trigger_params", "must be an object")),
        };
        if let Some(key) = map.keys().find(|k| !keys.contains(&k.as_str())) {
            return Err(TimerError::param(
                key,
                format!("unknown key for {trigger_ref} (expected {})", keys.join(", ")),
            ));
        }

        let schedule = match trigger_ref {
            INTERVAL_TRIGGER => Schedule::Interval(parse_interval(map)?),
            CRON_TRIGGER => {
                let expression = required_str(map, "expression")?;
                let timezone = optional_str(map, "timezone")?.unwrap_or("UTC");
                let cron = CronSchedule::parse(expression, timezone).map_err(|(f, m)| TimerError::param(f, m))?;
                Schedule::Cron(cron)
            }
            _ => {
                let text = required_str(map, "fire_at")?;
                let at = parse_rfc3339(text).map_err(|m| TimerError::param("fire_at", m))?;
                Schedule::Once(OnceSchedule { fire_at: trunc_micros(at.with_timezone(&Utc)), offset: *at.offset() })
            }
        };

        let misfire_given = map.contains_key("misfire");
        let misfire = match optional_str(map, "misfire")? {
            Some(text) => text.parse().map_err(|m| TimerError::param("misfire", m))?,
            None if matches!(schedule, Schedule::Once(_)) => MisfirePolicy::FireOnce,
            None => MisfirePolicy::Skip,
        };
        let max_catch_up = match map.get("max_catch_up") {
            None => DEFAULT_MAX_CATCH_UP,
            Some(_) if misfire != MisfirePolicy::CatchUp => {
                return Err(TimerError::param("max_catch_up", "only applies with `misfire: catch_up`"));
            }
            Some(value) => match value.as_u64() {
                Some(n @ 1..) if n <= u64::from(MAX_MAX_CATCH_UP) => n as u32,
                _ => {
                    return Err(TimerError::param(
                        "max_catch_up",
                        format!("must be a whole number from 1 to {MAX_MAX_CATCH_UP}, got {value}"),
                    ));
                }
            },
        };
        Ok(TimerSpec { schedule, misfire, misfire_given, max_catch_up })
    }

    /// [`TimerSpec::parse`] for a rule being saved at `now`: a one-shot whose `fire_at` is not after
    /// `now` is rejected unless the params say `misfire: fire_once` or `misfire: catch_up` (it then
    /// fires at once). The default `fire_once` of one-shots covers downtime, not past times.
    pub fn parse_new(trigger_ref: &str, params: &Value, now: DateTime<Utc>) -> Result<TimerSpec, TimerError> {
        let spec = TimerSpec::parse(trigger_ref, params)?;
        if let Schedule::Once(once) = &spec.schedule
            && once.fire_at <= now
            && !(spec.misfire_given && spec.misfire != MisfirePolicy::Skip)
        {
            return Err(TimerError::param(
                "fire_at",
                format!(
                    "{} is in the past (now {}); set `misfire: fire_once` to fire it at once",
                    once.fire_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                    now.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            ));
        }
        Ok(spec)
    }

    /// Works out the trigger from the keys of `params` (`interval`, `expression` or `fire_at`), for
    /// `attune-host timer preview`.
    pub fn infer_trigger(params: &Value) -> Result<&'static str, TimerError> {
        let has = |k: &str| params.get(k).is_some();
        match (has("interval"), has("expression"), has("fire_at")) {
            (true, false, false) => Ok(INTERVAL_TRIGGER),
            (false, true, false) => Ok(CRON_TRIGGER),
            (false, false, true) => Ok(DATETIME_TRIGGER),
            (false, false, false) if !params.is_object() => Err(TimerError::new("trigger_params", "must be an object")),
            _ => Err(TimerError::new(
                "trigger_params",
                "expected exactly one of `interval` (interval timer), `expression` (cron timer) or `fire_at` (one-shot)",
            )),
        }
    }

    /// A one-shot at the Unix epoch, for bookkeeping entries that are never scheduled.
    pub(crate) fn placeholder() -> TimerSpec {
        TimerSpec {
            schedule: Schedule::Once(OnceSchedule { fire_at: DateTime::UNIX_EPOCH, offset: Utc.fix() }),
            misfire: MisfirePolicy::Skip,
            misfire_given: false,
            max_catch_up: DEFAULT_MAX_CATCH_UP,
        }
    }

    /// The schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// The trigger this timer feeds.
    pub fn trigger_ref(&self) -> &'static str {
        match self.schedule {
            Schedule::Interval(_) => INTERVAL_TRIGGER,
            Schedule::Cron(_) => CRON_TRIGGER,
            Schedule::Once(_) => DATETIME_TRIGGER,
        }
    }

    /// The misfire policy (given, or the default: `fire_once` for one-shots, `skip` otherwise).
    pub fn misfire(&self) -> MisfirePolicy {
        self.misfire
    }

    /// At most this many missed instants fire under `catch_up`.
    pub fn max_catch_up(&self) -> u32 {
        self.max_catch_up
    }

    /// Whether the timer fires more than once.
    pub fn is_recurring(&self) -> bool {
        !matches!(self.schedule, Schedule::Once(_))
    }

    /// An interval timer without an `anchor` is anchored at `anchor` (no-op for other timers or
    /// when an anchor was given).
    pub fn with_default_anchor(mut self, anchor: DateTime<Utc>) -> TimerSpec {
        if let Schedule::Interval(interval) = &mut self.schedule
            && interval.anchor.is_none()
        {
            interval.anchor = Some(trunc_micros(anchor));
        }
        self
    }

    /// An interval without a given anchor, anchored one interval after `start`.
    pub(crate) fn started_at(self, start: DateTime<Utc>) -> TimerSpec {
        let every = match &self.schedule {
            Schedule::Interval(interval) => interval.every,
            _ => return self,
        };
        match start.checked_add_signed(TimeDelta::microseconds(every)) {
            Some(anchor) => self.with_default_anchor(anchor),
            None => self,
        }
    }

    /// The first planned instant strictly after `t`; `None` when there is none (a one-shot at or
    /// before `t`, or beyond the representable range). An interval timer without an anchor is
    /// taken as started at `t` (first instant `t + interval`).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.schedule {
            Schedule::Interval(interval) => interval.next_after(t),
            Schedule::Cron(cron) => cron.next_after(t),
            Schedule::Once(once) => (once.fire_at > t).then_some(once.fire_at),
        }
    }

    /// The latest planned instant at or before `t` and at or after `floor` (for `fire_once`).
    pub(crate) fn latest_between(&self, floor: DateTime<Utc>, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let found = match &self.schedule {
            Schedule::Interval(interval) => interval.latest_at_or_before(t),
            Schedule::Once(once) => (once.fire_at <= t).then_some(once.fire_at),
            Schedule::Cron(_) => {
                // Widen a window back from `t` until it holds an instant, then walk it forward.
                let lower = floor - TimeDelta::microseconds(1);
                let mut width = TimeDelta::minutes(1);
                let mut found = None;
                loop {
                    let start = t.checked_sub_signed(width).map_or(lower, |s| s.max(lower));
                    let mut at = self.next_after(start);
                    while let Some(x) = at.filter(|x| *x <= t) {
                        found = Some(x);
                        at = self.next_after(x);
                    }
                    if found.is_some() || start == lower {
                        break found;
                    }
                    width = width * 2;
                }
            }
        };
        found.filter(|x| *x >= floor)
    }

    /// The next `count` planned instants strictly after `after`, in the timer's zone (UTC for
    /// interval timers, the `timezone` for cron, the written offset for one-shots).
    pub fn preview(&self, after: DateTime<Utc>, count: usize) -> Vec<DateTime<FixedOffset>> {
        let spec = self.clone().started_at(after);
        let mut out = Vec::with_capacity(count.min(1024));
        let mut t = after;
        while out.len() < count {
            let Some(next) = spec.next_after(t) else { break };
            out.push(self.in_zone(next));
            t = next;
        }
        out
    }

    fn in_zone(&self, t: DateTime<Utc>) -> DateTime<FixedOffset> {
        match &self.schedule {
            Schedule::Interval(_) => t.fixed_offset(),
            Schedule::Cron(cron) => t.with_timezone(&cron.zone()).fixed_offset(),
            Schedule::Once(once) => t.with_timezone(&once.offset),
        }
    }

    /// The payload of one fire, in the original shapes (times RFC 3339 UTC with milliseconds):
    ///
    /// * interval: `{type: "interval", interval_seconds, scheduled_at, fired_at, execution_count}`
    /// * cron: `{type: "cron", expression, timezone, scheduled_at, fired_at}`
    /// * one-shot: `{type: "datetime", fire_at, fired_at, delay_ms}` (`delay_ms` = fired_at − fire_at)
    ///
    /// `execution_count` counts this fire (the first fire has 1).
    pub fn payload(&self, scheduled_at: DateTime<Utc>, fired_at: DateTime<Utc>, execution_count: u64) -> Value {
        let ms = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
        match &self.schedule {
            Schedule::Interval(interval) => json!({
                "type": "interval",
                "interval_seconds": interval.interval_seconds(),
                "scheduled_at": ms(scheduled_at),
                "fired_at": ms(fired_at),
                "execution_count": execution_count,
            }),
            Schedule::Cron(cron) => json!({
                "type": "cron",
                "expression": cron.expression(),
                "timezone": cron.zone().name(),
                "scheduled_at": ms(scheduled_at),
                "fired_at": ms(fired_at),
            }),
            Schedule::Once(_) => json!({
                "type": "datetime",
                "fire_at": ms(scheduled_at),
                "fired_at": ms(fired_at),
                "delay_ms": (fired_at - scheduled_at).num_milliseconds(),
            }),
        }
    }
}

/// `attune-host timer preview '<trigger_params>' [--after T] [--count N]`: the next `count` planned
/// instants after `after` (RFC 3339; default now), one RFC 3339 string each, in the timer's zone.
/// The trigger is inferred from the keys ([`TimerSpec::infer_trigger`]); the params are checked as
/// when a rule is saved at `after`.
pub fn preview_lines(params_json: &str, after: Option<&str>, count: usize) -> Result<Vec<String>, TimerError> {
    let params: Value = serde_json::from_str(params_json)
        .map_err(|e| TimerError::new("trigger_params", format!("not valid JSON: {e}")))?;
    let after = match after {
        Some(text) => parse_rfc3339(text).map_err(|m| TimerError::new("after", m))?.with_timezone(&Utc),
        None => Utc::now(),
    };
    let spec = TimerSpec::parse_new(TimerSpec::infer_trigger(&params)?, &params, after)?;
    let mut lines: Vec<String> =
        spec.preview(after, count).iter().map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, spec.uses_z())).collect();
    // A one-shot allowed in the past (explicit misfire policy) fires at once: show its time.
    if let Schedule::Once(once) = &spec.schedule
        && lines.is_empty()
        && count > 0
    {
        lines.push(spec.in_zone(once.fire_at).to_rfc3339_opts(SecondsFormat::AutoSi, spec.uses_z()));
    }
    Ok(lines)
}

impl TimerSpec {
    /// Previews of UTC timers end in `Z`; zoned ones show their offset.
    fn uses_z(&self) -> bool {
        match &self.schedule {
            Schedule::Interval(_) => true,
            Schedule::Cron(cron) => cron.zone() == chrono_tz::UTC,
            Schedule::Once(once) => once.offset.local_minus_utc() == 0,
        }
    }
}

fn parse_interval(map: &Map<String, Value>) -> Result<IntervalSchedule, TimerError> {
    let value = map.get("interval").ok_or_else(|| TimerError::param("interval", "is required"))?;
    let interval = match value.as_u64() {
        Some(n @ 1..) => n,
        _ => return Err(TimerError::param("interval", format!("must be a positive whole number, got {value}"))),
    };
    let unit = match optional_str(map, "unit")? {
        None | Some("seconds") => IntervalUnit::Seconds,
        Some("minutes") => IntervalUnit::Minutes,
        Some("hours") => IntervalUnit::Hours,
        Some("days") => IntervalUnit::Days,
        Some("weeks") => IntervalUnit::Weeks,
        Some(other) => {
            return Err(TimerError::param(
                "unit",
                format!("unknown unit `{other}` (expected seconds, minutes, hours, days or weeks)"),
            ));
        }
    };
    let seconds = interval
        .checked_mul(unit.seconds())
        .filter(|s| *s <= MAX_INTERVAL_SECONDS)
        .ok_or_else(|| TimerError::param("interval", "is too large (at most 100 years)"))?;
    let anchor = match optional_str(map, "anchor")? {
        Some(text) => {
            Some(trunc_micros(parse_rfc3339(text).map_err(|m| TimerError::param("anchor", m))?.with_timezone(&Utc)))
        }
        None => None,
    };
    Ok(IntervalSchedule { interval, unit, every: seconds as i64 * 1_000_000, anchor })
}

fn required_str<'a>(map: &'a Map<String, Value>, key: &str) -> Result<&'a str, TimerError> {
    optional_str(map, key)?.ok_or_else(|| TimerError::param(key, "is required"))
}

fn optional_str<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, TimerError> {
    match map.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(TimerError::param(key, format!("must be a string, got {other}"))),
    }
}

fn parse_rfc3339(text: &str) -> Result<DateTime<FixedOffset>, String> {
    DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("`{text}` is not an RFC 3339 time with an offset, like 2026-12-01T09:00:00Z ({e})"))
}
