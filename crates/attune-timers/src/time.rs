//! Wall time, tokio time and the conversions between them.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;

/// Unix microseconds (the unit of the `timer_state` table).
pub fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// The instant `us` Unix microseconds (`None` outside chrono's range).
pub fn from_micros(us: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(us)
}

/// `t` without its sub-microsecond part: every planned and stored time is whole microseconds.
pub fn trunc_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    from_micros(micros(t)).unwrap_or(t)
}

/// Where the scheduler reads wall time and how it turns a wall time into a tokio deadline.
///
/// Timers are planned in wall time (UTC); waiting uses tokio's clock (`sleep_until`), so tests can
/// pause and advance time. Called only from the scheduler task, many times per fire.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall time.
    fn now(&self) -> DateTime<Utc>;

    /// The tokio instant at which the wall clock should read `t` (now or earlier for past times).
    fn deadline(&self, t: DateTime<Utc>) -> Instant;

    /// The longest a single wait may last before the scheduler reads [`Clock::now`] again. A real
    /// wall clock can be stepped (NTP, an operator) while tokio's monotonic clock cannot: re-reading
    /// bounds the error. `None`: the two clocks never diverge.
    fn max_wait(&self) -> Option<Duration>;
}

/// The system clock (`Utc::now()`), for production. Waits are re-checked every second, so a step
/// of the wall clock moves fires by at most that long before they follow the new time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn deadline(&self, t: DateTime<Utc>) -> Instant {
        let (instant, wall) = (Instant::now(), Utc::now());
        instant + (t - wall).to_std().unwrap_or(Duration::ZERO)
    }

    fn max_wait(&self) -> Option<Duration> {
        Some(Duration::from_secs(1))
    }
}

/// A wall clock driven by tokio's clock: `origin_wall` at creation, then advancing exactly as
/// `tokio::time::Instant` does. Under `#[tokio::test(start_paused = true)]` time only moves through
/// `tokio::time::advance` or auto-advance, so schedules are deterministic.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: Instant,
    origin_wall: DateTime<Utc>,
}

impl TokioClock {
    /// A clock that reads `origin_wall` now. Must be called inside a tokio runtime.
    pub fn starting_at(origin_wall: DateTime<Utc>) -> Self {
        TokioClock { origin: Instant::now(), origin_wall }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = TimeDelta::from_std(self.origin.elapsed()).unwrap_or(TimeDelta::MAX);
        self.origin_wall.checked_add_signed(elapsed).unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    fn deadline(&self, t: DateTime<Utc>) -> Instant {
        let ahead = (t - self.origin_wall).to_std().unwrap_or(Duration::ZERO);
        self.origin.checked_add(ahead).unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365))
    }

    fn max_wait(&self) -> Option<Duration> {
        None
    }
}
