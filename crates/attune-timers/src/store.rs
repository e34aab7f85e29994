//! What the scheduler persists and where fires go: [`TimerStore`] and [`FireSink`], each with an
//! in-memory implementation.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::time::micros;

/// The error type of [`TimerStore`] and [`FireSink`] implementations (`anyhow::Error` converts
/// into it with `.into()`).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The stored state of one timer: one row of `timer_state(rule_ref TEXT PRIMARY KEY, next_fire_at
/// BIGINT NULL, last_fire_at BIGINT NULL, last_scheduled_at BIGINT NULL, execution_count BIGINT NOT
/// NULL DEFAULT 0, updated_at BIGINT NOT NULL)`, times in Unix microseconds ([`micros`],
/// [`from_micros`](crate::from_micros)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimerState {
    /// The first planned instant not yet fired. `None`: nothing planned (a one-shot that fired, or
    /// a timer stopped by [`remove`](crate::SchedulerHandle::remove)).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// When the last fire happened (wall time at dispatch).
    pub last_fire_at: Option<DateTime<Utc>>,
    /// The planned instant of the last fire: instants at or before it are never fired again.
    pub last_scheduled_at: Option<DateTime<Utc>>,
    /// Fires so far, over the timer's whole life (restarts included).
    pub execution_count: u64,
}

impl TimerState {
    /// The row's time columns as Unix microseconds: `(next_fire_at, last_fire_at, last_scheduled_at)`.
    pub fn micros(&self) -> (Option<i64>, Option<i64>, Option<i64>) {
        (self.next_fire_at.map(micros), self.last_fire_at.map(micros), self.last_scheduled_at.map(micros))
    }
}

/// Persistent timer state, keyed by rule ref. The scheduler calls it from short-lived tasks, never
/// concurrently for the same rule, and in order for each rule: `load` once when a timer starts (and
/// again after a failure), `save` after every accepted fire and whenever the planned next instant
/// changes, `delete` when a timer is purged.
#[async_trait]
pub trait TimerStore: Send + Sync + fmt::Debug {
    /// The stored state, `None` when the rule has none.
    async fn load(&self, rule_ref: &str) -> Result<Option<TimerState>, BoxError>;
    /// Inserts or replaces the state (the host also sets `updated_at`).
    async fn save(&self, rule_ref: &str, state: &TimerState) -> Result<(), BoxError>;
    /// Removes the state; removing a missing row is not an error.
    async fn delete(&self, rule_ref: &str) -> Result<(), BoxError>;
}

/// One fire of one timer, handed to the [`FireSink`].
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    /// The rule whose timer fired.
    pub rule_ref: Arc<str>,
    /// `core.intervaltimer`, `core.crontimer` or `core.datetimetimer`.
    pub trigger_ref: &'static str,
    /// The planned instant (not "now").
    pub scheduled_at: DateTime<Utc>,
    /// The payload, in the shape of [`TimerSpec::payload`](crate::TimerSpec::payload).
    pub payload: Value,
    /// The timer's state once this fire is recorded. A sink that writes it in the same transaction
    /// as the event makes fires exactly-once without relying on [`Fire::dedup_key`].
    pub state_after: TimerState,
}

impl Fire {
    /// `timer:<rule_ref>:<scheduled_at in Unix µs>`: the same for every attempt at the same planned
    /// instant, different for any other. Events keyed by it (unique constraint, or a UUIDv5 of it as
    /// the event id) make a repeated fire a no-op.
    pub fn dedup_key(&self) -> String {
        format!("timer:{}:{}", self.rule_ref, micros(self.scheduled_at))
    }
}

/// Where fires go: the host turns each into an event through the same pipeline as sensor payloads.
/// Called from short-lived tasks, concurrently for different rules and never concurrently for the
/// same rule. Return `Ok` only once the fire is durable (the event stored): the scheduler records
/// the fire after that, and retries the same instant (same [`Fire::dedup_key`]) after an error.
#[async_trait]
pub trait FireSink: Send + Sync + fmt::Debug {
    /// Accepts one fire.
    async fn fire(&self, fire: Fire) -> Result<(), BoxError>;
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// [`TimerStore`] in memory (tests, `sensor run`-style tools). Bounded by the number of rules.
#[derive(Debug, Default)]
pub struct MemoryTimerStore {
    rows: Mutex<HashMap<String, TimerState>>,
}

impl MemoryTimerStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state stored for `rule_ref`.
    pub fn get(&self, rule_ref: &str) -> Option<TimerState> {
        lock(&self.rows).get(rule_ref).copied()
    }

    /// Stores `state` for `rule_ref` directly (to set up a restart).
    pub fn put(&self, rule_ref: &str, state: TimerState) {
        lock(&self.rows).insert(rule_ref.to_owned(), state);
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        lock(&self.rows).len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl TimerStore for MemoryTimerStore {
    async fn load(&self, rule_ref: &str) -> Result<Option<TimerState>, BoxError> {
        Ok(self.get(rule_ref))
    }

    async fn save(&self, rule_ref: &str, state: &TimerState) -> Result<(), BoxError> {
        self.put(rule_ref, *state);
        Ok(())
    }

    async fn delete(&self, rule_ref: &str) -> Result<(), BoxError> {
        lock(&self.rows).remove(rule_ref);
        Ok(())
    }
}

/// [`FireSink`] that keeps the fires in memory, at most `capacity` of them (older ones are
/// dropped first and counted in [`MemoryFireSink::dropped`]).
#[derive(Debug)]
pub struct MemoryFireSink {
    fires: Mutex<std::collections::VecDeque<Fire>>,
    capacity: usize,
    dropped: std::sync::atomic::AtomicU64,
}

impl MemoryFireSink {
    /// A sink keeping the last `capacity` fires.
    pub fn with_capacity(capacity: usize) -> Self {
        MemoryFireSink {
            fires: Mutex::new(std::collections::VecDeque::new()),
            capacity,
            dropped: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The fires kept, oldest first.
    pub fn fires(&self) -> Vec<Fire> {
        lock(&self.fires).iter().cloned().collect()
    }

    /// Takes the fires kept, oldest first.
    pub fn take(&self) -> Vec<Fire> {
        lock(&self.fires).drain(..).collect()
    }

    /// Fires dropped because the sink was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl FireSink for MemoryFireSink {
    async fn fire(&self, fire: Fire) -> Result<(), BoxError> {
        let mut fires = lock(&self.fires);
        if fires.len() >= self.capacity && fires.pop_front().is_some() {
            self.dropped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        fires.push_back(fire);
        Ok(())
    }
}
