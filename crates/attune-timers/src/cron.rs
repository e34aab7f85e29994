//! Cron schedules: POSIX crontab semantics on top of `croner`, plus the time-zone and DST rules.
//!
//! # croner configuration
//!
//! `croner` 4 is configured as `CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed)
//! .dom_and_dow(false).alternative_weekdays(false).sloppy_ranges(false)`:
//!
//! * `Seconds::Optional`: 5 fields, or 6 with a leading seconds field (a 5-field expression fires at
//!   second 0); `Year::Disallowed` rejects croner's 7-field form.
//! * `alternative_weekdays(false)`: POSIX weekday numbering, Sunday = 0 and 7, so `1-5` is Monday to
//!   Friday (Quartz numbering would make it Sunday to Thursday).
//! * `dom_and_dow(false)`: when day-of-month and day-of-week are both restricted (neither is `*`),
//!   a day matches when *either* matches (Vixie/POSIX). croner's `+` prefix on the weekday field
//!   (`0 0 1 * +MON`) is the only way to ask for "both". A field counts as restricted unless it is
//!   exactly `*` (or `?`): `*/2 * 1` means odd days *or* Mondays, where Vixie cron, which looks only
//!   at the leading `*`, would read it as odd days that are Mondays.
//! * `sloppy_ranges(false)`: `*/5` and `10-20/5` only; `0/5` is rejected as in Vixie cron.
//!
//! croner does not check where a name appears (it replaces `MON` and `JAN` anywhere in the string,
//! so `0 0 * MON *` would silently mean January and `0 0 * * JAN` Monday). Parsing
//! checks every field itself first: month names only in the month field, weekday names only in
//! the weekday field, `L`/`W`/`#`/`?` only where croner gives them a meaning. The macros
//! (`@hourly`, `@daily`/`@midnight`, `@weekly`, `@monthly`, `@yearly`/`@annually`) are expanded
//! here, so `@reboot` and misspellings get a clear message.
//!
//! # Time zones and DST
//!
//! The expression is matched against the wall clock of `timezone` (IANA name, default `UTC`).
//! croner walks *naive* wall-clock times; this module maps each match to real instants, following
//! Vixie cron's split between fixed-time and wildcard jobs:
//!
//! | job | example | wall time in the spring-forward gap | wall time in the repeated fall-back hour |
//! |---|---|---|---|
//! | fixed time: no `*` at the start of the second, minute or hour field | `30 2 * * *`, `0,30 1-3 * * *` | fires once, at the first instant after the gap (03:00 for 02:30 in Paris); several gap times of one gap share that one fire | fires once, at the first (daylight-time) occurrence |
//! | wildcard: the second, minute or hour field starts with `*` | `*/15 * * * *`, `30 * * * *` | skipped: the clock never shows it, and the job keeps its real-time cadence | fires at both occurrences, keeping its real-time cadence |

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// How many wall-clock matches [`CronSchedule::next_after`] walks before giving up. Only a fall-back
/// hour with a per-second job needs more than a handful (3,600 for a one-hour fold).
const MAX_WALK: usize = 20_000;

/// A parsed cron expression with its time zone.
#[derive(Clone)]
pub struct CronSchedule {
    /// The expression as the rule gave it (reported back in payloads).
    expression: String,
    zone: Tz,
    /// Shared: specs are cloned on every upsert and preview.
    cron: Arc<Cron>,
    /// Wildcard job (see the module docs): follows the real clock through DST changes.
    wildcard: bool,
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronSchedule")
            .field("expression", &self.expression)
            .field("zone", &self.zone.name())
            .field("wildcard", &self.wildcard)
            .finish()
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.expression == other.expression && self.zone == other.zone
    }
}

/// Names of the fields of a 6-field expression; a 5-field one uses the last five.
const FIELD_NAMES: [&str; 6] = ["second", "minute", "hour", "day-of-month", "month", "day-of-week"];
const MONTHS: [&str; 12] = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const WEEKDAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl CronSchedule {
    /// Parses `expression` in time zone `timezone` (IANA name). Errors are
    /// `(field, message)` with field `expression` or `timezone`.
    pub(crate) fn parse(expression: &str, timezone: &str) -> Result<Self, (&'static str, String)> {
        let zone = Tz::from_str(timezone).map_err(|_| ("timezone", format!("unknown time zone `{timezone}`")))?;
        let (cron, wildcard) = parse_expression(expression).map_err(|m| ("expression", m))?;
        let schedule = CronSchedule { expression: expression.to_owned(), zone, cron: Arc::new(cron), wildcard };
        // croner accepts days that never come (`0 0 31 2 *`); a timer that can never fire is a mistake.
        let probe = DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default();
        if schedule.next_after(probe).is_none() {
            return Err(("expression", format!("`{expression}` never matches a real date")));
        }
        Ok(schedule)
    }

    /// The expression as given.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The IANA time zone the expression is read in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// Whether this is a wildcard job (see the module docs for what that changes around DST).
    pub fn is_wildcard(&self) -> bool {
        self.wildcard
    }

    /// The first planned instant strictly after `t` (cron instants are whole seconds).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t_floor = DateTime::<Utc>::from_timestamp(t.timestamp(), 0)?;
        let local_t = t_floor.with_timezone(&self.zone).naive_local();
        let mut cursor = local_t;
        if self.wildcard {
            // Inside a repeated (fall-back) range, the second occurrence of a wall time *before*
            // `local_t` can still lie after `t`: start the walk at the beginning of the fold.
            if let LocalResult::Ambiguous(early, late) = self.zone.from_local_datetime(&local_t) {
                let fold = early.offset().fix().local_minus_utc() - late.offset().fix().local_minus_utc();
                cursor = local_t - chrono::TimeDelta::seconds(i64::from(fold.max(0)));
            }
        }
        let mut best: Option<DateTime<Utc>> = None;
        for _ in 0..MAX_WALK {
            let wall = self.cron.find_next_occurrence(&cursor, false).ok()?;
            let (first, second) = self.instants(wall);
            for instant in [first, second].into_iter().flatten() {
                if instant > t && best.is_none_or(|b| instant < b) {
                    best = Some(instant);
                }
            }
            // The earliest instant of a wall time never decreases as the wall time grows, so once
            // it is past `t` nothing later can beat `best`.
            if first.is_some_and(|f| f > t) {
                return best;
            }
            cursor = wall;
        }
        best
    }

    /// The real instants at which wall time `wall` fires, earliest first.
    fn instants(&self, wall: NaiveDateTime) -> (Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
        match self.zone.from_local_datetime(&wall) {
            LocalResult::Single(at) => (Some(at.with_timezone(&Utc)), None),
            LocalResult::Ambiguous(early, late) => {
                let early = early.with_timezone(&Utc);
                if self.wildcard { (Some(early), Some(late.with_timezone(&Utc))) } else { (Some(early), None) }
            }
            LocalResult::None if self.wildcard => (None, None),
            LocalResult::None => (self.gap_end(wall), None),
        }
    }

    /// The first instant whose wall time is past `wall` (which lies in a spring-forward gap): the
    /// instant the clock jumps, shown as the first wall time after the gap.
    fn gap_end(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        let guess = wall.and_utc().timestamp();
        // Offsets are within ±1 day, so the wall time is before `wall` at `lo` and after it at `hi`.
        let (mut lo, mut hi) = (guess - 86_400, guess + 86_400);
        let wall_at =
            |secs: i64| DateTime::<Utc>::from_timestamp(secs, 0).map(|d| d.with_timezone(&self.zone).naive_local());
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if wall_at(mid)? > wall {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        DateTime::<Utc>::from_timestamp(hi, 0)
    }
}

/// Checks and expands `expression`, then parses it with croner. Returns the cron and whether it is a
/// wildcard job.
fn parse_expression(expression: &str) -> Result<(Cron, bool), String> {
    let trimmed = expression.trim();
    if trimmed.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let expanded = if trimmed.starts_with('@') {
        match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            "@reboot" => return Err("`@reboot` is not a schedule a timer can follow".to_owned()),
            _ => {
                return Err(format!(
                    "unknown macro `{trimmed}` (expected @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly)"
                ));
            }
        }
    } else {
        trimmed
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let names: &[&str] = match fields.len() {
        5 => &FIELD_NAMES[1..],
        6 => &FIELD_NAMES[..],
        n => {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week) or 6 with leading seconds, found {n}"
            ));
        }
    };
    for (field, name) in fields.iter().zip(names) {
        check_field(field, name)?;
    }
    let cron = parser().parse(expanded).map_err(|e| {
        // Find the field croner objects to, by parsing it alone among wildcards.
        let culprit = (0..fields.len()).find(|&i| {
            let probe: Vec<&str> = fields.iter().enumerate().map(|(j, f)| if i == j { *f } else { "*" }).collect();
            parser().parse(&probe.join(" ")).is_err()
        });
        match culprit.and_then(|i| Some((fields.get(i)?, names.get(i)?))) {
            Some((field, name)) => format!("{name} field `{field}`: {}", croner_message(&e)),
            None => croner_message(&e),
        }
    })?;
    let wildcard = fields.iter().rev().skip(3).take(3).any(|f| f.starts_with('*'));
    Ok((cron, wildcard))
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .dom_and_dow(false)
        .alternative_weekdays(false)
        .sloppy_ranges(false)
        .build()
}

fn croner_message(e: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    match e {
        E::InvalidPattern(m) | E::IllegalCharacters(m) | E::ComponentError(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Names and letters are only allowed where they mean something.
fn check_field(field: &str, name: &str) -> Result<(), String> {
    let upper = field.to_ascii_uppercase();
    for word in upper.split(|c: char| !c.is_ascii_alphabetic()).filter(|w| !w.is_empty()) {
        let ok = match name {
            "month" => MONTHS.contains(&word),
            "day-of-week" => WEEKDAYS.contains(&word) || word == "L",
            "day-of-month" => matches!(word, "L" | "W" | "LW"),
            _ => false,
        };
        if !ok {
            let hint = match name {
                "month" => " (month names are JAN..DEC)",
                "day-of-week" => " (weekday names are SUN..SAT)",
                _ => "",
            };
            return Err(format!("{name} field `{field}`: `{word}` is not allowed here{hint}"));
        }
    }
    let specials: &[char] = match name {
        "day-of-month" => &['?'],
        "day-of-week" => &['?', '#', '+'],
        _ => &[],
    };
    if let Some(bad) =
        field.chars().find(|c| !(c.is_ascii_alphanumeric() || "*,-/".contains(*c) || specials.contains(c)))
    {
        return Err(format!("{name} field `{field}`: character `{bad}` is not allowed here"));
    }
    Ok(())
}
