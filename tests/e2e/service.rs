//! The service as a program drives it: `serve` with a test pack, through its real HTTP API, on
//! SQLite with the in-process bus and on PostgreSQL with RabbitMQ. Rules on a native timer and on
//! a sensor are created, disabled, updated and deleted, and their enforcements are checked in
//! the store (through the API) and on the bus; packs are reloaded without a restart.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use attune_testkit::{Collector, unique_name};
use reqwest::Method;
use serde_json::{Value, json};

use crate::host::Host;
use crate::support::fixture;

/// A pack `svc` with one trigger and the counter sensor polling every 100 ms.
fn write_pack(packs: &Path) -> PathBuf {
    let dir = packs.join("svc");
    let write = |rel: &str, text: &str| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("pack.yaml", "ref: svc\nversion: 1.0.0\n");
    write(
        "triggers/tick.yaml",
        "ref: tick\npayload_schema: {type: object, required: [n], properties: {n: {type: integer}}}\n",
    );
    write(
        "sensors/counter.yaml",
        "ref: counter\ntriggers: [svc.tick]\nruntime: javascript\nentry: counter.js\npoll_interval: 0.1\n",
    );
    std::fs::copy(fixture("js/counter.js"), dir.join("sensors/counter.js")).unwrap();
    dir
}

fn timer_rule(interval: Value) -> Value {
    json!({"ref": "svc.every", "trigger": "core.intervaltimer", "trigger_params": interval,
           "action": {"ref": "core.echo", "parameters": {"message": "fire {{ event.payload.execution_count }}"}}})
}

fn sensor_rule() -> Value {
    json!({"ref": "svc.on_tick", "trigger": "svc.tick",
           "conditions": {"all": [{"field": "payload.n", "operator": "greater_or_equal", "value": 1}]},
           "action": {"ref": "core.echo", "parameters": {"message": "tick {{ event.payload.n }}"}}})
}

/// Timer and sensor rules through their whole lifecycle, checked through the API.
async fn lifecycle(host: &Host) {
    // A timer rule: fires every second.
    let second = json!({"interval": 1, "unit": "seconds"});
    let (status, created) = host.call(Method::POST, "/api/v1/rules", Some(timer_rule(second.clone()))).await;
    assert_eq!(status, 201, "{created}");
    let fired = host.wait_enforcements("svc.every", 2, Duration::from_secs(5)).await;
    assert_eq!(fired[0]["status"], "scheduled");
    assert!(fired[0]["parameters"]["message"].as_str().unwrap().starts_with("fire "), "{}", fired[0]);

    // Disabled: no more fires.
    host.ok(Method::POST, "/api/v1/rules/svc.every/disable", None).await;
    host.assert_quiet("svc.every", Duration::from_millis(2500)).await;

    // Enabled with a new schedule (once an hour): the one-second timer is gone.
    let mut hourly = timer_rule(json!({"interval": 1, "unit": "hours"}));
    hourly.as_object_mut().unwrap().remove("ref");
    host.ok(Method::PUT, "/api/v1/rules/svc.every", Some(hourly)).await;
    assert_eq!(host.ok(Method::GET, "/api/v1/rules/svc.every", None).await["trigger_params"]["unit"], "hours");
    host.assert_quiet("svc.every", Duration::from_millis(2500)).await;

    // Back to every second: fires resume on the new schedule.
    let before = host.enforcements("svc.every").await.len();
    let mut every_second = timer_rule(second);
    every_second.as_object_mut().unwrap().remove("ref");
    host.ok(Method::PUT, "/api/v1/rules/svc.every", Some(every_second)).await;
    host.wait_enforcements("svc.every", before + 1, Duration::from_secs(4)).await;

    // Deleted: gone, and no more fires.
    host.ok(Method::DELETE, "/api/v1/rules/svc.every", None).await;
    assert_eq!(host.call(Method::GET, "/api/v1/rules/svc.every", None).await.0, 404);
    host.assert_quiet("svc.every", Duration::from_millis(2500)).await;

    // A sensor rule: the idle counter sensor starts and its payloads make enforcements.
    assert_eq!(host.sensor("svc.counter").await["state"], "idle");
    host.ok(Method::POST, "/api/v1/rules", Some(sensor_rule())).await;
    let ticks = host.wait_enforcements("svc.on_tick", 3, Duration::from_secs(10)).await;
    let message = ticks[0]["parameters"]["message"].as_str().unwrap();
    assert!(message.starts_with("tick "), "{message}");
    let running = host.sensor("svc.counter").await;
    assert_eq!(running["state"], "running", "{running}");
    assert!(running["polls"].as_u64().unwrap() >= 3, "{running}");

    // Disabled: the sensor stops (nothing else uses its trigger).
    host.ok(Method::POST, "/api/v1/rules/svc.on_tick/disable", None).await;
    host.assert_quiet("svc.on_tick", Duration::from_millis(1000)).await;
    assert_eq!(host.sensor("svc.counter").await["state"], "idle");

    // Enabled again, then deleted.
    host.ok(Method::POST, "/api/v1/rules/svc.on_tick/enable", None).await;
    let count = host.enforcements("svc.on_tick").await.len();
    host.wait_enforcements("svc.on_tick", count + 2, Duration::from_secs(5)).await;
    host.ok(Method::DELETE, "/api/v1/rules/svc.on_tick", None).await;
    host.assert_quiet("svc.on_tick", Duration::from_millis(1000)).await;
    assert_eq!(host.sensor("svc.counter").await["state"], "idle");

    // What happened is in the metrics.
    let metrics = host.metrics().await;
    for line in [
        r#"attune_sensor_polls_total{sensor="svc.counter"}"#,
        r#"attune_sensor_payloads_total{sensor="svc.counter"}"#,
        r#"attune_events_total{source="timer"}"#,
        r#"attune_events_total{source="sensor"}"#,
        r#"attune_enforcements_total{status="scheduled"}"#,
        "attune_timer_lateness_seconds_count",
        r#"attune_sensor_poll_lateness_seconds_bucket{le="0.01",sensor="svc.counter"}"#,
        "attune_outbox_backlog",
        "attune_bus_published_total",
    ] {
        let value = metric(&metrics, line).unwrap_or_else(|| panic!("no `{line}` in\n{metrics}"));
        if !line.contains("backlog") {
            assert!(value > 0.0, "{line} = {value}");
        }
    }
}

/// The value of the sample line starting with `name` (labels included).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
}

#[tokio::test]
async fn rule_lifecycle_on_timers_and_sensors_sqlite() {
    let packs = tempfile::tempdir().unwrap();
    write_pack(packs.path());
    let host = Host::start(packs.path(), None, None).await;
    lifecycle(&host).await;
    host.stop().await;
}

#[tokio::test]
async fn rule_lifecycle_on_timers_and_sensors_postgres_rabbitmq() {
    let packs = tempfile::tempdir().unwrap();
    write_pack(packs.path());
    let exchange = unique_name();
    let enforcements = Collector::bind(&exchange, "enforcement.created").await;
    let rule_changes = Collector::bind(&exchange, "rule.*").await;
    let database = crate::support::postgres_database().await;
    let host = Host::start(packs.path(), Some(database.clone()), Some(&exchange)).await;
    lifecycle(&host).await;
    // A sensor still polling when the host stops: what it stored is flushed to the bus.
    host.ok(Method::POST, "/api/v1/rules", Some(sensor_rule())).await;
    host.wait_enforcements("svc.on_tick", 1, Duration::from_secs(5)).await;
    host.stop().await;

    // Every stored enforcement was published by the time the host stopped.
    let store = attune_host::store::open(&database).await.unwrap();
    let all = attune_host::store::ListFilter { limit: 1000, ..Default::default() };
    let stored: BTreeSet<String> = store.enforcements(&all).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(store.outbox_backlog().await.unwrap(), 0, "the outbox was not flushed on shutdown");
    let published =
        |r: &[attune_testkit::Received]| r.iter().filter_map(|m| m.message_id.clone()).collect::<BTreeSet<_>>();
    assert!(
        enforcements.wait_for(Duration::from_secs(5), |r| published(r) == stored).await,
        "published {} messages for {} stored enforcements",
        enforcements.count(),
        stored.len()
    );
    // 5 changes of each rule; the last may still be on its way from the broker.
    assert!(rule_changes.wait_for(Duration::from_secs(5), |r| r.len() >= 10).await, "{:?}", rule_changes.received());
    let changes: Vec<(String, String)> = rule_changes
        .received()
        .iter()
        .map(|m| (m.routing_key.clone(), m.body["rule"].as_str().unwrap().to_string()))
        .collect();
    let of = |rule: &str| changes.iter().filter(|(_, r)| r == rule).map(|(k, _)| k.as_str()).collect::<Vec<_>>();
    assert_eq!(of("svc.every"), ["rule.created", "rule.disabled", "rule.enabled", "rule.updated", "rule.deleted"]);
    assert_eq!(of("svc.on_tick"), ["rule.created", "rule.disabled", "rule.enabled", "rule.deleted", "rule.created"]);
}

#[tokio::test]
async fn packs_reload_without_a_restart() {
    let packs = tempfile::tempdir().unwrap();
    let svc = write_pack(packs.path());
    let host = Host::start(packs.path(), None, None).await;
    host.ok(Method::POST, "/api/v1/rules", Some(sensor_rule())).await;
    host.wait_enforcements("svc.on_tick", 3, Duration::from_secs(10)).await;

    // A changed sensor source replaces the running instance and keeps its state store.
    let source = std::fs::read_to_string(svc.join("sensors/counter.js")).unwrap();
    let changed = source.replace("yield { n };", "yield { n, version: 2 };");
    assert_ne!(source, changed);
    std::fs::write(svc.join("sensors/counter.js"), changed).unwrap();
    // A new pack with a trigger of its own.
    let extra = packs.path().join("extra");
    std::fs::create_dir_all(extra.join("triggers")).unwrap();
    std::fs::write(extra.join("pack.yaml"), "ref: extra\nversion: 0.1.0\n").unwrap();
    std::fs::write(extra.join("triggers/ping.yaml"), "ref: ping\n").unwrap();
    let before = max_tick(&host).await;
    let reloaded = host.ok(Method::POST, "/api/v1/packs/reload", None).await;
    assert_eq!(reloaded["sensors"]["replaced"], json!(["svc.counter"]), "{reloaded}");
    let refs: Vec<&str> = reloaded["packs"].as_array().unwrap().iter().map(|p| p["ref"].as_str().unwrap()).collect();
    assert_eq!(refs, ["extra", "svc"]);

    let started = Instant::now();
    let first_v2 = loop {
        let events = host.ok(Method::GET, "/api/v1/events?trigger=svc.tick&limit=1000", None).await;
        let v2: Vec<i64> = events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["payload"]["version"] == 2)
            .map(|e| e["payload"]["n"].as_i64().unwrap())
            .collect();
        if let Some(min) = v2.iter().min() {
            break *min;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the changed sensor never polled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(first_v2 > before, "the counter restarted from {first_v2} (was at {before}): state lost");
    let triggers = host.ok(Method::GET, "/api/v1/triggers", None).await;
    assert!(triggers["triggers"].as_array().unwrap().iter().any(|t| t["ref"] == "extra.ping"), "{triggers}");
    // A rule on the new trigger is accepted now.
    let ping_rule = json!({"ref": "extra.on_ping", "trigger": "extra.ping", "action": {"ref": "core.echo"}});
    assert_eq!(host.call(Method::POST, "/api/v1/rules", Some(ping_rule)).await.0, 201);

    // A broken pack changes nothing: 422 naming the file and the field.
    std::fs::write(
        svc.join("sensors/broken.yaml"),
        "ref: broken\ntriggers: [svc.tick]\nruntime: javascript\nentry: counter.js\npoll_interval: -1\n",
    )
    .unwrap();
    let (status, error) = host.call(Method::POST, "/api/v1/packs/reload", None).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["error"]["field"], "poll_interval", "{error}");
    assert!(error["error"]["message"].as_str().unwrap().contains("broken.yaml"), "{error}");
    let listed = host.ok(Method::GET, "/api/v1/packs", None).await;
    assert_eq!(listed["packs"].as_array().unwrap().len(), 2, "{listed}");
    let ticking = max_tick(&host).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(max_tick(&host).await > ticking, "the sensor stopped after a refused reload");
    host.stop().await;
}

async fn max_tick(host: &Host) -> i64 {
    let events = host.ok(Method::GET, "/api/v1/events?trigger=svc.tick&limit=1000", None).await;
    events["events"].as_array().unwrap().iter().filter_map(|e| e["payload"]["n"].as_i64()).max().unwrap_or(0)
}
