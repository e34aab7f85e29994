//! The scheduler under paused tokio time: many timers on time and in order, changes, removal,
//! one-shots, sink and store failures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use tokio::time::sleep;

use super::{at, spec};
use crate::{
    BoxError, CRON_TRIGGER, Clock, DATETIME_TRIGGER, Fire, FireSink, INTERVAL_TRIGGER, MemoryFireSink,
    MemoryTimerStore, Scheduler, SchedulerConfig, SchedulerError, SchedulerHandle, TimerState, TimerStore, TokioClock,
    micros,
};

/// A scheduler on a memory store and sink, with a wall clock driven by tokio's (paused) clock.
pub(crate) struct Harness {
    pub store: Arc<MemoryTimerStore>,
    pub sink: Arc<MemoryFireSink>,
    pub clock: Arc<TokioClock>,
    pub handle: SchedulerHandle,
}

impl Harness {
    /// Starts at wall time `wall` on a new store.
    pub fn new(wall: &str) -> Harness {
        let clock = Arc::new(TokioClock::starting_at(at(wall)));
        Harness::with(Arc::new(MemoryTimerStore::new()), clock)
    }

    /// Starts on `store` with `clock` (a restart keeps both).
    pub fn with(store: Arc<MemoryTimerStore>, clock: Arc<TokioClock>) -> Harness {
        let sink = Arc::new(MemoryFireSink::with_capacity(1 << 20));
        let handle = Scheduler::start(store.clone(), sink.clone(), clock.clone(), SchedulerConfig::default());
        Harness { store, sink, clock, handle }
    }

    /// Stops this scheduler and starts another on the same store and clock (a host restart).
    pub async fn restart(self) -> Harness {
        self.handle.shutdown().await;
        Harness::with(self.store, self.clock)
    }

    pub async fn upsert(&self, rule: &str, trigger: &str, params: serde_json::Value) {
        self.handle.upsert(rule, spec(trigger, params)).await.unwrap();
    }

    /// Scheduled instants fired so far for `rule`, in fire order.
    pub fn scheduled(&self, rule: &str) -> Vec<DateTime<Utc>> {
        self.sink.fires().iter().filter(|f| &*f.rule_ref == rule).map(|f| f.scheduled_at).collect()
    }
}

/// Lets virtual time pass (the scheduler and its calls run meanwhile).
pub(crate) async fn run_for(seconds: f64) {
    sleep(Duration::from_secs_f64(seconds)).await;
}

fn lateness(fire: &Fire) -> TimeDelta {
    fire.state_after.last_fire_at.unwrap() - fire.scheduled_at
}

#[tokio::test(start_paused = true)]
async fn thousand_timers_fire_on_time_in_order_on_their_grids() {
    let h = Harness::new("2026-01-01T00:00:00Z");
    let start = at("2026-01-01T00:00:00Z");
    let mut grids = HashMap::new();
    for i in 0..1000_i64 {
        let interval = 1 + i % 10;
        let anchor = start + TimeDelta::seconds(1) + TimeDelta::microseconds(i * 7_919);
        grids.insert(format!("r{i}"), (micros(anchor), interval * 1_000_000));
        h.upsert(
            &format!("r{i}"),
            INTERVAL_TRIGGER,
            json!({"interval": interval, "anchor": anchor.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}),
        )
        .await;
    }
    assert_eq!(h.handle.len(), 1000);
    run_for(60.0).await;

    let fires = h.sink.fires();
    let horizon = micros(start) + 59_000_000;
    let mut per_rule: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut previous = i64::MIN;
    for fire in &fires {
        let late = lateness(fire);
        assert!(late >= TimeDelta::zero() && late <= TimeDelta::milliseconds(1), "{} late by {late}", fire.rule_ref);
        let s = micros(fire.scheduled_at);
        assert!(s >= previous, "fires out of order");
        previous = s;
        per_rule.entry(&fire.rule_ref).or_default().push(s);
    }
    for (rule, (anchor, every)) in &grids {
        let got = per_rule.get(rule.as_str()).cloned().unwrap_or_default();
        let expected: Vec<i64> = (0..).map(|k| anchor + k * every).take_while(|s| *s <= horizon).collect();
        assert_eq!(&got[..expected.len()], &expected[..], "{rule}");
        for (k, fire) in fires.iter().filter(|f| &*f.rule_ref == rule).enumerate() {
            assert_eq!(fire.payload["execution_count"], json!(k + 1));
        }
    }
    assert!(fires.len() > 15_000, "{} fires", fires.len());
}

#[tokio::test(start_paused = true)]
async fn changed_schedule_applies_at_once() {
    let h = Harness::new("2026-01-01T00:00:00Z");
    h.upsert("r", INTERVAL_TRIGGER, json!({"interval": 1, "unit": "hours"})).await;
    run_for(10.0).await;
    assert!(h.sink.fires().is_empty());
    // Every second from now: the first fire is one second after the change, not after the hour.
    h.upsert("r", INTERVAL_TRIGGER, json!({"interval": 1})).await;
    run_for(3.5).await;
    assert_eq!(h.scheduled("r"), [at("2026-01-01T00:00:11Z"), at("2026-01-01T00:00:12Z"), at("2026-01-01T00:00:13Z")]);
    // To a cron schedule (another trigger for the same rule), also at once.
    h.upsert("r", CRON_TRIGGER, json!({"expression": "*/5 * * * * *"})).await;
    run_for(10.0).await;
    let fires = h.sink.fires();
    let cron_fires: Vec<_> = fires.iter().filter(|f| f.trigger_ref == CRON_TRIGGER).map(|f| f.scheduled_at).collect();
    assert_eq!(cron_fires, [at("2026-01-01T00:00:15Z"), at("2026-01-01T00:00:20Z")]);
    assert_eq!(fires.last().unwrap().payload["type"], json!("cron"));
    // The same spec again changes nothing.
    let before = h.handle.state("r").await.unwrap();
    h.upsert("r", CRON_TRIGGER, json!({"expression": "*/5 * * * * *"})).await;
    assert_eq!(h.handle.state("r").await.unwrap(), before);
}

#[tokio::test(start_paused = true)]
async fn remove_stops_the_timer_and_keeps_its_count() {
    let h = Harness::new("2026-01-01T00:00:00Z");
    h.upsert("r", INTERVAL_TRIGGER, json!({"interval": 1})).await;
    run_for(5.5).await;
    assert_eq!(h.scheduled("r").len(), 5);
    assert!(h.handle.remove("r").await.unwrap());
    assert!(!h.handle.remove("r").await.unwrap());
    assert_eq!(h.handle.len(), 0);
    run_for(10.0).await;
    assert_eq!(h.scheduled("r").len(), 5, "no fire after remove");
    assert_eq!(h.handle.state("r").await.unwrap(), None);
    let stored = h.store.get("r").unwrap();
    assert_eq!((stored.next_fire_at, stored.execution_count), (None, 5));

    // Enabled again: a fresh schedule (the pause is not "missed"), the count goes on.
    h.upsert("r", INTERVAL_TRIGGER, json!({"interval": 1, "misfire": "fire_once"})).await;
    run_for(2.5).await;
    let fires = h.sink.fires();
    assert_eq!(fires.len(), 7);
    assert_eq!(fires[5].scheduled_at, at("2026-01-01T00:00:16.500Z"));
    assert_eq!(fires[6].payload["execution_count"], json!(7));

    assert!(h.handle.purge("r").await.unwrap());
    run_for(0.1).await;
    assert_eq!(h.store.get("r"), None, "purge deletes the state");
}

#[tokio::test(start_paused = true)]
async fn release_stops_the_timer_and_leaves_its_state_for_the_next_owner() {
    let h = Harness::new("2026-01-01T00:00:00Z");
    h.upsert("r", INTERVAL_TRIGGER, json!({"interval": 1})).await;
    run_for(3.5).await;
    let saved = h.store.get("r").unwrap();
    assert!(h.handle.release("r").await.unwrap());
    assert_eq!(h.handle.len(), 0);
    run_for(5.0).await;
    assert_eq!(h.scheduled("r").len(), 3, "no fire after release");
    // Unlike `remove`, the next planned instant stays: the next owner goes on from it.
    assert_eq!(h.store.get("r"), Some(saved));
    assert_eq!(saved.next_fire_at, Some(at("2026-01-01T00:00:04Z")));
}

#[tokio::test(start_paused = true)]
async fn one_shot_fires_once() {
    let h = Harness::new("2026-01-01T00:00:00Z");
    h.upsert("once", DATETIME_TRIGGER, json!({"fire_at": "2026-01-01T00:00:30+01:00"})).await;
    h.upsert("later", DATETIME_TRIGGER, json!({"fire_at": "2026-01-01T00:01:00Z"})).await;
    // 00:00:30+01:00 is 23:00:30 the day before: in the past, so the default fire_once fires it now.
    run_for(0.01).await;
    assert_eq!(h.scheduled("once"), [at("2025-12-31T23:00:30Z")]);
    assert_eq!(h.sink.fires()[0].payload["delay_ms"], json!(3_570_000));
    run_for(120.0).await;
    let later: Vec<_> = h.sink.fires().into_iter().filter(|f| &*f.rule_ref == "later").collect();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].payload["delay_ms"], json!(0));
    assert_eq!(h.store.get("later").unwrap().next_fire_at, None);
    // Re-applying the rule does not fire it again.
    h.upsert("later", DATETIME_TRIGGER, json!({"fire_at": "2026-01-01T00:01:00Z"})).await;
    run_for(60.0).await;
    assert_eq!(h.scheduled("later").len(), 1);
    assert_eq!(h.handle.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn cron_timer_across_dst_in_the_scheduler() {
    let h = Harness::new("2026-03-27T12:00:00Z");
    h.upsert("paris", CRON_TRIGGER, json!({"expression": "30 2 * * *", "timezone": "Europe/Paris"})).await;
    // New York is already on daylight time (since 8 March): 02:30 EDT every day.
    h.upsert("ny", CRON_TRIGGER, json!({"expression": "30 2 * * *", "timezone": "America/New_York"})).await;
    run_for(3.0 * 86_400.0).await;
    assert_eq!(
        h.scheduled("paris"),
        [at("2026-03-28T01:30:00Z"), at("2026-03-29T01:00:00Z"), at("2026-03-30T00:30:00Z")]
    );
    assert_eq!(h.scheduled("ny"), [at("2026-03-28T06:30:00Z"), at("2026-03-29T06:30:00Z"), at("2026-03-30T06:30:00Z")]);
    for fire in h.sink.fires() {
        assert!(lateness(&fire) <= TimeDelta::milliseconds(1));
    }
}

/// Refuses the first `failures` fires, then passes them on.
#[derive(Debug)]
struct FlakySink {
    failures: AtomicU32,
    attempts: Mutex<Vec<String>>,
    inner: MemoryFireSink,
}

#[async_trait]
impl FireSink for FlakySink {
    async fn fire(&self, fire: Fire) -> Result<(), BoxError> {
        self.attempts.lock().unwrap().push(fire.dedup_key());
        if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err("event store unavailable".into());
        }
        self.inner.fire(fire).await
    }
}

#[tokio::test(start_paused = true)]
async fn refused_fires_are_retried_for_the_same_instant() {
    let clock = Arc::new(TokioClock::starting_at(at("2026-01-01T00:00:00Z")));
    let sink = Arc::new(FlakySink {
        failures: AtomicU32::new(3),
        attempts: Mutex::default(),
        inner: MemoryFireSink::with_capacity(100),
    });
    let store = Arc::new(MemoryTimerStore::new());
    let handle = Scheduler::start(store.clone(), sink.clone(), clock.clone(), SchedulerConfig::default());
    handle.upsert("r", spec(INTERVAL_TRIGGER, json!({"interval": 10}))).await.unwrap();
    run_for(35.0).await;
    // Refused at 10 s, retried after 0.5, 1 and 2 s, accepted at 13.5 s; later instants on the grid.
    let attempts = sink.attempts.lock().unwrap().clone();
    let key = format!("timer:r:{}", micros(at("2026-01-01T00:00:10Z")));
    assert_eq!(attempts[..4], [key.clone(), key.clone(), key.clone(), key]);
    let fires = sink.inner.fires();
    let scheduled: Vec<_> = fires.iter().map(|f| f.scheduled_at).collect();
    assert_eq!(scheduled, [at("2026-01-01T00:00:10Z"), at("2026-01-01T00:00:20Z"), at("2026-01-01T00:00:30Z")]);
    assert_eq!(fires[0].state_after.last_fire_at, Some(at("2026-01-01T00:00:13.500Z")));
    assert_eq!(fires[2].payload["execution_count"], json!(3));
    assert_eq!(store.get("r").unwrap().execution_count, 3);
}

/// Fails `load` the first `failures` times.
#[derive(Debug, Default)]
struct FlakyStore {
    failures: AtomicU32,
    inner: MemoryTimerStore,
}

#[async_trait]
impl TimerStore for FlakyStore {
    async fn load(&self, rule_ref: &str) -> Result<Option<TimerState>, BoxError> {
        if self.failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err("database is locked".into());
        }
        self.inner.load(rule_ref).await
    }
    async fn save(&self, rule_ref: &str, state: &TimerState) -> Result<(), BoxError> {
        self.inner.save(rule_ref, state).await
    }
    async fn delete(&self, rule_ref: &str) -> Result<(), BoxError> {
        self.inner.delete(rule_ref).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_load_is_reported_and_retried() {
    let clock = Arc::new(TokioClock::starting_at(at("2026-01-01T00:00:00Z")));
    let store = Arc::new(FlakyStore { failures: AtomicU32::new(1), inner: MemoryTimerStore::new() });
    let sink = Arc::new(MemoryFireSink::with_capacity(100));
    let handle = Scheduler::start(store.clone(), sink.clone(), clock.clone(), SchedulerConfig::default());
    let err = handle.upsert("r", spec(INTERVAL_TRIGGER, json!({"interval": 1}))).await.unwrap_err();
    assert!(matches!(err, SchedulerError::Store { .. }), "{err}");
    assert!(err.to_string().contains("database is locked"));
    run_for(3.0).await;
    // Loaded on the retry at 0.5 s: fires at 1.5, 2.5 s.
    let scheduled: Vec<_> = sink.fires().iter().map(|f| f.scheduled_at).collect();
    assert_eq!(scheduled, [at("2026-01-01T00:00:01.500Z"), at("2026-01-01T00:00:02.500Z")]);
    let _ = clock.now();
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_everything() {
    let h = Harness::new("2026-01-01T00:00:00Z");
    h.upsert("r", INTERVAL_TRIGGER, json!({"interval": 1})).await;
    run_for(2.5).await;
    h.handle.shutdown().await;
    run_for(5.0).await;
    assert_eq!(h.scheduled("r").len(), 2);
    let err = h.handle.upsert("x", spec(INTERVAL_TRIGGER, json!({"interval": 1}))).await.unwrap_err();
    assert_eq!(err, SchedulerError::Stopped);
}

/// Takes `delay` (virtual time) to accept the first fire.
#[derive(Debug)]
struct SlowFirstSink {
    delay: Duration,
    calls: AtomicU32,
    inner: MemoryFireSink,
}

#[async_trait]
impl FireSink for SlowFirstSink {
    async fn fire(&self, fire: Fire) -> Result<(), BoxError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            sleep(self.delay).await;
        }
        self.inner.fire(fire).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_late_fire_does_not_shift_later_ones() {
    let clock = Arc::new(TokioClock::starting_at(at("2026-01-01T00:00:00Z")));
    let sink = Arc::new(SlowFirstSink {
        delay: Duration::from_millis(1_400),
        calls: AtomicU32::new(0),
        inner: MemoryFireSink::with_capacity(100),
    });
    let handle =
        Scheduler::start(Arc::new(MemoryTimerStore::new()), sink.clone(), clock.clone(), SchedulerConfig::default());
    handle.upsert("r", spec(INTERVAL_TRIGGER, json!({"interval": 1}))).await.unwrap();
    run_for(4.5).await;
    let fires = sink.inner.fires();
    let scheduled: Vec<_> = fires.iter().map(|f| f.scheduled_at).collect();
    let fired: Vec<_> = fires.iter().map(|f| f.state_after.last_fire_at.unwrap()).collect();
    // The first fire holds the timer until 2.4 s: the 2 s instant fires 0.4 s late (within the
    // grace), and 3 s and 4 s are exactly on time again.
    assert_eq!(
        scheduled,
        [
            at("2026-01-01T00:00:01Z"),
            at("2026-01-01T00:00:02Z"),
            at("2026-01-01T00:00:03Z"),
            at("2026-01-01T00:00:04Z")
        ]
    );
    assert_eq!(
        fired,
        [
            at("2026-01-01T00:00:01Z"),
            at("2026-01-01T00:00:02.400Z"),
            at("2026-01-01T00:00:03Z"),
            at("2026-01-01T00:00:04Z")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn quick_remove_and_upsert_sequences_settle_correctly() {
    let h = Harness::new("2026-01-01T00:00:00Z");
    let params = json!({"interval": 1});
    h.upsert("r", INTERVAL_TRIGGER, params.clone()).await;
    run_for(3.5).await;
    // Disabled and enabled again before the store call of the removal finished.
    h.handle.remove("r").await.unwrap();
    h.upsert("r", INTERVAL_TRIGGER, params.clone()).await;
    run_for(1.5).await;
    // Re-enabled: a fresh schedule from 3.5 s (first fire at 4.5 s), the count goes on.
    assert_eq!(h.scheduled("r")[3], at("2026-01-01T00:00:04.500Z"));
    assert_eq!(h.sink.fires()[3].payload["execution_count"], json!(4));
    // Deleted and created again at once: a new timer, counting from 1.
    h.handle.purge("r").await.unwrap();
    h.upsert("r", INTERVAL_TRIGGER, params).await;
    run_for(1.5).await;
    assert_eq!(h.sink.fires().last().unwrap().payload["execution_count"], json!(1));
    assert_eq!(h.store.get("r").unwrap().execution_count, 1);
    // Purging a rule without a running timer still deletes its stored state.
    h.store.put("stale", TimerState { execution_count: 9, ..TimerState::default() });
    assert!(!h.handle.purge("stale").await.unwrap());
    run_for(0.1).await;
    assert_eq!(h.store.get("stale"), None);
    assert_eq!(h.handle.len(), 1);
}
