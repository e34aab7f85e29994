//! Each limit stops a hostile sensor with its named reason, and only that sensor.

use std::time::{Duration, Instant};

use attune_host::sandbox::SensorFailure;
use serde_json::json;

use crate::support::{fixture, poll_payloads, spec, start};

async fn failure_of(file: &str, configure: impl FnOnce(&mut attune_host::sandbox::SensorSpec)) -> SensorFailure {
    let mut spec = spec(&fixture(file), json!({}));
    configure(&mut spec);
    let mut sensor = start(spec).await;
    sensor.poll().await.expect_err("the hostile poll must fail")
}

#[tokio::test]
async fn busy_loop_runs_out_of_fuel() {
    for file in ["python/busy_loop.py", "js/busy_loop.js"] {
        let failure = failure_of(file, |s| {
            s.limits.fuel = 50_000_000;
            s.limits.timeout_ms = 30_000;
        })
        .await;
        assert_eq!(failure, SensorFailure::OutOfFuel { limit: 50_000_000 }, "{file}");
    }
}

#[tokio::test]
async fn busy_loop_hits_the_deadline() {
    for file in ["python/busy_loop.py", "js/busy_loop.js"] {
        let started = Instant::now();
        let failure = failure_of(file, |s| {
            s.limits.fuel = u64::MAX / 2;
            s.limits.timeout_ms = 200;
        })
        .await;
        assert_eq!(failure, SensorFailure::DeadlineExceeded { timeout_ms: 200 }, "{file}");
        assert!(started.elapsed() < Duration::from_secs(5), "{file}: deadline took {:?}", started.elapsed());
    }
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    for file in ["python/memory_bomb.py", "js/memory_bomb.js"] {
        let failure = failure_of(file, |s| {
            s.limits.memory_mib = 48;
            // Filling memory costs fuel too; make memory the limit that is reached first.
            s.limits.fuel = u64::MAX / 2;
            s.limits.timeout_ms = 30_000;
        })
        .await;
        assert_eq!(failure, SensorFailure::MemoryLimit { limit_mib: 48 }, "{file}");
    }
}

#[tokio::test]
async fn payload_count_and_size_are_capped() {
    let failure = failure_of("python/many_payloads.py", |s| s.limits.max_events_per_poll = 100).await;
    assert_eq!(failure, SensorFailure::TooManyPayloads { count: 1000, limit: 100 });
    let failure = failure_of("python/big_payload.py", |s| s.limits.max_payload_bytes = 64 * 1024).await;
    assert!(
        matches!(failure, SensorFailure::PayloadTooLarge { index: 0, limit: 65536, size } if size > 200_000),
        "{failure:?}"
    );
}

#[tokio::test]
async fn a_trap_costs_one_poll_and_state_survives_it() {
    // The JS counter is driven into a deadline once; the fresh instance carries the state on.
    let mut counter = start(spec(&fixture("js/counter.js"), json!({}))).await;
    assert_eq!(poll_payloads(&mut counter).await, vec![json!({"n": 1})]);
    assert_eq!(poll_payloads(&mut counter).await, vec![json!({"n": 2})]);

    let mut hostile = start(spec(&fixture("python/busy_loop.py"), json!({}))).await;
    assert!(hostile.poll().await.unwrap_err().is_trap());
    // The hostile sensor gets a fresh instance and fails again, by its own fault only.
    assert!(hostile.poll().await.unwrap_err().is_trap());
    assert_eq!(poll_payloads(&mut counter).await, vec![json!({"n": 3})]);
}

/// A looping sensor on the same single thread must not starve a healthy one: fuel yields let
/// the executor interleave them.
#[tokio::test(flavor = "current_thread")]
async fn a_looping_sensor_does_not_starve_a_healthy_one() {
    let mut hostile_spec = spec(&fixture("python/busy_loop.py"), json!({}));
    hostile_spec.limits.fuel = u64::MAX / 2;
    hostile_spec.limits.timeout_ms = 1_000;
    let mut hostile = start(hostile_spec).await;
    let mut healthy = start(spec(&fixture("js/counter.js"), json!({}))).await;

    let hostile_poll = async { hostile.poll().await };
    let healthy_polls = async {
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let started = Instant::now();
            healthy.poll().await.expect("healthy poll");
            worst = worst.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        worst
    };
    let (hostile_result, worst) = tokio::join!(hostile_poll, healthy_polls);
    assert_eq!(hostile_result.unwrap_err(), SensorFailure::DeadlineExceeded { timeout_ms: 1_000 });
    assert!(worst < Duration::from_millis(100), "a healthy poll took {worst:?} beside a looping sensor");
}
