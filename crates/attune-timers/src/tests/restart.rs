//! Restarts: no double fire, misfire policies for instants missed while down, counts kept.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::json;

use super::at;
use super::scheduler::{Harness, run_for};
use crate::{
    BoxError, DATETIME_TRIGGER, Fire, FireSink, INTERVAL_TRIGGER, MemoryTimerStore, Scheduler, SchedulerConfig,
    TimerState, TimerStore, TokioClock,
};

/// Interval timer every 10 s from 00:00:10; runs 15 s, then the host is down `down` seconds.
async fn down_for(misfire: serde_json::Value, down: f64) -> Harness {
    let h = Harness::new("2026-01-01T00:00:00Z");
    let mut params = json!({"interval": 10, "anchor": "2026-01-01T00:00:10Z"});
    if let (Some(map), Some(extra)) = (params.as_object_mut(), misfire.as_object()) {
        map.extend(extra.clone());
    }
    h.upsert("r", INTERVAL_TRIGGER, params.clone()).await;
    run_for(15.0).await;
    assert_eq!(h.scheduled("r"), [at("2026-01-01T00:00:10Z")]);
    h.handle.shutdown().await;
    run_for(down).await;
    let h = Harness::with(h.store, h.clock);
    h.upsert("r", INTERVAL_TRIGGER, params).await;
    h
}

fn counts(h: &Harness) -> Vec<u64> {
    h.sink.fires().iter().map(|f| f.payload["execution_count"].as_u64().unwrap()).collect()
}

#[tokio::test(start_paused = true)]
async fn restart_without_downtime_neither_repeats_nor_loses() {
    let h = Harness::new("2026-01-01T00:00:00Z");
    let params = json!({"interval": 10});
    h.upsert("r", INTERVAL_TRIGGER, params.clone()).await;
    run_for(35.0).await;
    let first = h.scheduled("r");
    assert_eq!(first, [at("2026-01-01T00:00:10Z"), at("2026-01-01T00:00:20Z"), at("2026-01-01T00:00:30Z")]);

    let h = h.restart().await;
    h.upsert("r", INTERVAL_TRIGGER, params).await;
    run_for(30.0).await;
    // The grid without an anchor survives the restart (anchored on the stored next instant).
    assert_eq!(h.scheduled("r"), [at("2026-01-01T00:00:40Z"), at("2026-01-01T00:00:50Z"), at("2026-01-01T00:01:00Z")]);
    assert_eq!(counts(&h), [4, 5, 6], "execution_count survives restarts");
}

#[tokio::test(start_paused = true)]
async fn skip_fires_none_of_the_missed_instants() {
    // Down from 00:00:15 to 00:01:55: 20, 30, .., 110 missed.
    let h = down_for(json!({}), 100.0).await;
    run_for(30.0).await;
    assert_eq!(h.scheduled("r"), [at("2026-01-01T00:02:00Z"), at("2026-01-01T00:02:10Z"), at("2026-01-01T00:02:20Z")]);
    assert_eq!(counts(&h), [2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn fire_once_fires_once_for_the_latest_missed_instant() {
    let h = down_for(json!({"misfire": "fire_once"}), 100.0).await;
    run_for(10.0).await;
    assert_eq!(h.scheduled("r"), [at("2026-01-01T00:01:50Z"), at("2026-01-01T00:02:00Z")]);
    let fires = h.sink.fires();
    assert_eq!(fires[0].state_after.last_fire_at, Some(at("2026-01-01T00:01:55Z")));
    assert_eq!(fires[0].payload["scheduled_at"], json!("2026-01-01T00:01:50.000Z"));
    assert_eq!(counts(&h), [2, 3]);
}

#[tokio::test(start_paused = true)]
async fn catch_up_fires_each_missed_instant_up_to_the_maximum() {
    let h = down_for(json!({"misfire": "catch_up", "max_catch_up": 3}), 100.0).await;
    run_for(10.0).await;
    // Oldest first, three of them; 50..110 dropped; then on schedule again.
    assert_eq!(
        h.scheduled("r"),
        [
            at("2026-01-01T00:00:20Z"),
            at("2026-01-01T00:00:30Z"),
            at("2026-01-01T00:00:40Z"),
            at("2026-01-01T00:02:00Z")
        ]
    );
    assert_eq!(counts(&h), [2, 3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn catch_up_below_the_maximum_fires_them_all() {
    let h = down_for(json!({"misfire": "catch_up"}), 22.0).await;
    run_for(10.0).await;
    // Down 15 s to 37 s: 20 and 30 missed, then 40 on time.
    assert_eq!(h.scheduled("r"), [at("2026-01-01T00:00:20Z"), at("2026-01-01T00:00:30Z"), at("2026-01-01T00:00:40Z")]);
}

#[tokio::test(start_paused = true)]
async fn an_instant_missed_by_less_than_the_grace_still_fires() {
    // Down 15 s to 20.4 s: the 20 s instant is 0.4 s late, within the 1 s grace, even under skip.
    let h = down_for(json!({"misfire": "skip"}), 5.4).await;
    run_for(1.0).await;
    assert_eq!(h.scheduled("r"), [at("2026-01-01T00:00:20Z")]);
}

#[tokio::test(start_paused = true)]
async fn one_shot_that_fired_never_fires_again() {
    let h = Harness::new("2026-01-01T00:00:00Z");
    let params = json!({"fire_at": "2026-01-01T00:00:05Z"});
    h.upsert("once", DATETIME_TRIGGER, params.clone()).await;
    run_for(10.0).await;
    assert_eq!(h.scheduled("once").len(), 1);
    let h = h.restart().await;
    h.upsert("once", DATETIME_TRIGGER, params).await;
    run_for(10.0).await;
    assert!(h.sink.fires().is_empty());
    assert_eq!(h.handle.state("once").await.unwrap().unwrap().next_fire_at, None);
}

#[tokio::test(start_paused = true)]
async fn one_shot_missed_while_down_fires_once_by_default_and_not_under_skip() {
    let h = Harness::new("2026-01-01T00:00:00Z");
    h.upsert("a", DATETIME_TRIGGER, json!({"fire_at": "2026-01-01T00:01:00Z"})).await;
    h.upsert("b", DATETIME_TRIGGER, json!({"fire_at": "2026-01-01T00:01:00Z", "misfire": "skip"})).await;
    run_for(10.0).await;
    let h = {
        h.handle.shutdown().await;
        run_for(120.0).await;
        Harness::with(h.store, h.clock)
    };
    h.upsert("a", DATETIME_TRIGGER, json!({"fire_at": "2026-01-01T00:01:00Z"})).await;
    h.upsert("b", DATETIME_TRIGGER, json!({"fire_at": "2026-01-01T00:01:00Z", "misfire": "skip"})).await;
    run_for(60.0).await;
    let fires = h.sink.fires();
    assert_eq!(fires.len(), 1);
    assert_eq!(&*fires[0].rule_ref, "a");
    assert_eq!(fires[0].payload["delay_ms"], json!(70_000));
    assert_eq!(h.store.get("b").unwrap().next_fire_at, None);
    // And neither fires after one more restart.
    let h = h.restart().await;
    h.upsert("a", DATETIME_TRIGGER, json!({"fire_at": "2026-01-01T00:01:00Z"})).await;
    h.upsert("b", DATETIME_TRIGGER, json!({"fire_at": "2026-01-01T00:01:00Z", "misfire": "skip"})).await;
    run_for(60.0).await;
    assert!(h.sink.fires().is_empty());
}

/// The host's side of exactly-once: events keyed by `Fire::dedup_key`.
#[derive(Debug, Default)]
struct DedupSink {
    calls: Mutex<Vec<String>>,
    keys: Mutex<HashSet<String>>,
    events: Mutex<Vec<Fire>>,
}

#[async_trait]
impl FireSink for DedupSink {
    async fn fire(&self, fire: Fire) -> Result<(), BoxError> {
        self.calls.lock().unwrap().push(fire.dedup_key());
        if self.keys.lock().unwrap().insert(fire.dedup_key()) {
            self.events.lock().unwrap().push(fire);
        }
        Ok(())
    }
}

/// A store whose saves are lost (the host crashed between the sink and the save).
#[derive(Debug, Default)]
struct LosingStore {
    inner: MemoryTimerStore,
    lose_saves: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl TimerStore for LosingStore {
    async fn load(&self, rule_ref: &str) -> Result<Option<TimerState>, BoxError> {
        self.inner.load(rule_ref).await
    }
    async fn save(&self, rule_ref: &str, state: &TimerState) -> Result<(), BoxError> {
        if self.lose_saves.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        self.inner.save(rule_ref, state).await
    }
    async fn delete(&self, rule_ref: &str) -> Result<(), BoxError> {
        self.inner.delete(rule_ref).await
    }
}

#[tokio::test(start_paused = true)]
async fn crash_between_sink_and_save_repeats_the_key_not_the_event() {
    let clock = Arc::new(TokioClock::starting_at(at("2026-01-01T00:00:00Z")));
    let store = Arc::new(LosingStore::default());
    let sink = Arc::new(DedupSink::default());
    let spec = crate::TimerSpec::parse(INTERVAL_TRIGGER, &json!({"interval": 10})).unwrap();

    let handle = Scheduler::start(store.clone(), sink.clone(), clock.clone(), SchedulerConfig::default());
    handle.upsert("r", spec.clone()).await.unwrap();
    run_for(15.0).await;
    // The 20 s fire reaches the sink but its save is lost: the host "crashes" at 20.5 s.
    store.lose_saves.store(true, std::sync::atomic::Ordering::SeqCst);
    run_for(5.5).await;
    handle.shutdown().await;
    store.lose_saves.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(store.inner.get("r").unwrap().last_scheduled_at, Some(at("2026-01-01T00:00:10Z")));

    // Restarted at once: the stored state says 10 s was the last, so 20 s (0.5 s late, on time) is
    // offered again with the same dedup key; the sink keeps one event per key.
    let handle = Scheduler::start(store.clone(), sink.clone(), clock.clone(), SchedulerConfig::default());
    handle.upsert("r", spec).await.unwrap();
    run_for(20.0).await;
    let keys = sink.calls.lock().unwrap().clone();
    let twenty = format!("timer:r:{}", crate::micros(at("2026-01-01T00:00:20Z")));
    assert_eq!(keys.iter().filter(|k| **k == twenty).count(), 2, "offered twice");
    let events = sink.events.lock().unwrap().clone();
    let scheduled: Vec<_> = events.iter().map(|f| f.scheduled_at).collect();
    assert_eq!(
        scheduled,
        [
            at("2026-01-01T00:00:10Z"),
            at("2026-01-01T00:00:20Z"),
            at("2026-01-01T00:00:30Z"),
            at("2026-01-01T00:00:40Z")
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn interval_shortened_while_down_starts_afresh() {
    let h = Harness::new("2026-01-01T00:00:00Z");
    h.upsert("r", INTERVAL_TRIGGER, json!({"interval": 1, "unit": "hours"})).await;
    run_for(10.0).await;
    let h = h.restart().await;
    // The stored next instant is an hour away; the rule now says every 5 s.
    h.upsert("r", INTERVAL_TRIGGER, json!({"interval": 5})).await;
    run_for(11.0).await;
    assert_eq!(h.scheduled("r"), [at("2026-01-01T00:00:15Z"), at("2026-01-01T00:00:20Z")]);
}
