//! The sensor supervisor: a failing sensor backs off, is quarantined with its reason and comes
//! back through a restart, while a healthy sensor beside it keeps polling.

use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_host::app::{App, AppConfig};
use attune_host::pack::Pack;
use attune_host::supervisor::{SensorState, SensorStatus, Supervisor, SupervisorOptions};
use attune_rules::RuleSpec;
use serde_json::json;

use crate::support::{engine, fixture, spec};

/// An app on SQLite in `dir` with pack `sup` (trigger `sup.tick`): the sensors' trigger, since
/// core triggers are fed by the host alone.
async fn start_app(dir: &std::path::Path) -> Arc<App> {
    let url = format!("sqlite://{}", dir.join("a.db").display());
    start_app_on(dir, url).await
}

async fn start_app_on(dir: &std::path::Path, url: String) -> Arc<App> {
    start_app_with(dir, AppConfig::new(url)).await
}

async fn start_app_with(dir: &std::path::Path, config: AppConfig) -> Arc<App> {
    let pack = dir.join("sup");
    std::fs::create_dir_all(pack.join("triggers")).unwrap();
    std::fs::write(pack.join("pack.yaml"), "ref: sup\nversion: 1.0.0\n").unwrap();
    std::fs::write(pack.join("triggers/tick.yaml"), "ref: tick\n").unwrap();
    let pack = Pack::load(&pack).unwrap();
    Arc::new(App::start(&config, &[pack]).await.unwrap())
}

/// Two hosts on one PostgreSQL and one exchange, each with the same failing sensor: it runs on
/// one of them; both show the same stored status and owner; a restart asked on the host that
/// does not run it reaches the one that does.
#[tokio::test]
async fn a_restart_asked_on_any_host_reaches_the_owner_and_both_show_one_status() {
    let dir = tempfile::tempdir().unwrap();
    let config = AppConfig {
        amqp_url: Some(attune_testkit::amqp_url()),
        exchange: attune_testkit::unique_name(),
        ..AppConfig::new(crate::support::postgres_database().await)
    };
    let options = SupervisorOptions {
        quarantine_after: 2,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(40),
    };
    let mut hosts = Vec::new();
    for _ in 0..2 {
        let config = AppConfig { host_id: attune_host::app::new_host_id(), ..config.clone() };
        let app = start_app_with(dir.path(), config).await;
        let rule = json!({"ref": "sup.on_tick", "trigger": "sup.tick", "action": {"ref": "core.echo"}});
        app.rules.put(RuleSpec::from_json(rule).unwrap()).await.unwrap();
        let mut failing = spec(&fixture("js/throws.js"), json!({}));
        failing.sensor_ref = "sup.failing".into();
        failing.triggers = vec!["sup.tick".into()];
        let supervisor = Supervisor::new(app.clone(), engine(), vec![failing], options);
        let follow = supervisor.follow(app.bus.as_ref());
        supervisor.reconcile();
        hosts.push((app, supervisor, follow));
    }
    let stored = async |supervisor: &Supervisor| supervisor.statuses().await.unwrap().remove(0);
    let started = Instant::now();
    let quarantined = loop {
        let seen = stored(&hosts[0].1).await;
        if seen.state == SensorState::Quarantined && seen.owner.is_some() {
            break seen;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "not quarantined: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(stored(&hosts[1].1).await, quarantined, "the two hosts show different statuses");
    let owner = quarantined.owner.clone().unwrap();
    let runs = |i: usize| hosts[i].0.membership.host_id() == owner;
    assert!(runs(0) != runs(1), "exactly one host runs the sensor");
    let other = if runs(0) { 1 } else { 0 };

    assert!(hosts[other].1.restart("sup.failing").await.unwrap());
    let restarted = Instant::now();
    loop {
        let seen = stored(&hosts[other].1).await;
        if seen.polls > quarantined.polls {
            assert_eq!(seen.owner.as_deref(), Some(owner.as_str()), "the sensor moved instead of restarting");
            break;
        }
        assert!(restarted.elapsed() < Duration::from_secs(10), "the owner never restarted it: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (app, supervisor, follow) in hosts {
        follow.abort();
        supervisor.stop_all(Duration::from_secs(3)).await;
        app.leave().await;
    }
}

#[tokio::test]
async fn failing_sensor_is_quarantined_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let app = start_app(dir.path()).await;
    // Sensors run only while an enabled rule uses their trigger.
    let rule = json!({"ref": "sup.on_webhook", "trigger": "sup.tick", "action": {"ref": "core.echo"}});
    app.rules.put(RuleSpec::from_json(rule).unwrap()).await.unwrap();

    let mut failing = spec(&fixture("js/throws.js"), json!({}));
    failing.sensor_ref = "sup.failing".into();
    failing.triggers = vec!["sup.tick".into()];
    let mut healthy = spec(&fixture("js/counter.js"), json!({}));
    healthy.sensor_ref = "sup.healthy".into();
    healthy.triggers = vec!["sup.tick".into()];
    healthy.poll_interval = Duration::from_millis(20);
    let options = SupervisorOptions {
        quarantine_after: 3,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
    };
    let supervisor = Supervisor::new(app.clone(), engine(), vec![failing, healthy], options);
    supervisor.reconcile();

    let status = |name: &str| supervisor.statuses_here().into_iter().find(|s| s.sensor_ref == name).unwrap();
    let started = Instant::now();
    while status("sup.failing").state != SensorState::Quarantined {
        assert!(started.elapsed() < Duration::from_secs(10), "not quarantined: {:?}", status("sup.failing"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let quarantined = status("sup.failing");
    assert_eq!(quarantined.consecutive_failures, 3);
    assert_eq!(quarantined.last_failure_reason.as_deref(), Some("sensor_error"));
    assert!(quarantined.last_error.unwrap().contains("TypeError: bad item"));
    // Backoff: three failures took at least 20 + 40 ms of waiting.
    assert!(started.elapsed() >= Duration::from_millis(60));
    let healthy_polls = status("sup.healthy").polls;
    assert!(healthy_polls >= 2, "the healthy sensor kept polling: {healthy_polls}");
    assert_eq!(status("sup.healthy").failures, 0);

    // A quarantined sensor stays down until restarted.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status("sup.failing").polls, quarantined.polls);
    assert!(supervisor.restart("sup.failing").await.unwrap());
    assert!(!supervisor.restart("sup.nope").await.unwrap());
    let restarted = Instant::now();
    while status("sup.failing").polls == quarantined.polls {
        assert!(restarted.elapsed() < Duration::from_secs(5), "the restart did not poll again");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_ne!(status("sup.failing").state, SensorState::Idle);

    // Without a rule on their trigger, sensors stop.
    app.rules.delete("sup.on_webhook").await.unwrap();
    supervisor.reconcile();
    assert_eq!(status("sup.healthy").state, SensorState::Idle);
    supervisor.stop_all(std::time::Duration::from_secs(3)).await;
}

/// Stopping lets a poll in flight finish and stores what it emitted.
#[tokio::test]
async fn stop_waits_for_the_poll_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let app = start_app(dir.path()).await;
    let rule = json!({"ref": "sup.on_webhook", "trigger": "sup.tick", "action": {"ref": "core.echo"}});
    app.rules.put(RuleSpec::from_json(rule).unwrap()).await.unwrap();
    let mut slow = spec(&fixture("js/slow_poll.js"), json!({}));
    slow.sensor_ref = "sup.slow".into();
    slow.triggers = vec!["sup.tick".into()];
    slow.poll_interval = Duration::from_millis(10);
    slow.limits.fuel = u64::MAX / 2;
    slow.limits.timeout_ms = 3_000;
    let supervisor = Supervisor::new(app.clone(), engine(), vec![slow], SupervisorOptions::default());
    supervisor.reconcile();

    let all = attune_host::store::ListFilter { limit: 100, ..Default::default() };
    let stored = || async { app.store.events(&all).await.unwrap().len() };
    // The supervisor records a poll's lateness just before the poll: once it has for one poll,
    // the second poll (about 1 s long) is under way.
    let lateness = r#"attune_sensor_poll_lateness_seconds_count{sensor="sup.slow"} "#;
    let started = Instant::now();
    while !app.metrics.render().lines().any(|l| l.strip_prefix(lateness).is_some_and(|n| n != "0")) {
        assert!(started.elapsed() < Duration::from_secs(10), "no second poll: {:?}", supervisor.statuses_here());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(stored().await, 1, "{:?}", supervisor.statuses_here());
    supervisor.stop_all(Duration::from_secs(3)).await;
    assert_eq!(stored().await, 2, "the poll in flight was not stored: {:?}", supervisor.statuses_here());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored().await, 2, "the sensor kept polling after the stop");
}

/// Code that does not load (here a syntax error) is quarantined at once with the error naming
/// the file and line, as `pack validate` reports it, instead of failing `quarantine_after` times.
#[tokio::test]
async fn code_that_does_not_load_is_quarantined_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = start_app(dir.path()).await;
    let rule = json!({"ref": "sup.on_webhook", "trigger": "sup.tick", "action": {"ref": "core.echo"}});
    app.rules.put(RuleSpec::from_json(rule).unwrap()).await.unwrap();
    let mut broken = spec(&fixture("python/syntax_error.py"), json!({}));
    broken.sensor_ref = "sup.broken".into();
    broken.triggers = vec!["sup.tick".into()];
    let options = SupervisorOptions { quarantine_after: 5, ..SupervisorOptions::default() };
    let supervisor = Supervisor::new(app.clone(), engine(), vec![broken], options);
    supervisor.reconcile();
    let status = || supervisor.statuses_here().into_iter().next().unwrap();
    let started = Instant::now();
    while status().state != SensorState::Quarantined {
        assert!(started.elapsed() < Duration::from_secs(10), "not quarantined: {:?}", status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let quarantined = status();
    assert_eq!(quarantined.consecutive_failures, 1);
    assert_eq!(quarantined.last_failure_reason.as_deref(), Some("start_failed"));
    let error = quarantined.last_error.unwrap();
    assert!(error.contains("syntax_error.py") && error.contains("line"), "{error}");
    let metrics = app.metrics.render();
    assert!(metrics.contains(r#"attune_sensor_quarantined{sensor="sup.broken"} 1"#), "{metrics}");
    supervisor.stop_all(Duration::from_secs(3)).await;
}

/// A store out of reach is the host's fault, not the sensor's: the sensor backs off through any
/// number of failed polls, is never quarantined for them, and resumes by itself.
#[tokio::test]
async fn an_unreachable_store_never_quarantines_a_sensor() {
    let dir = tempfile::tempdir().unwrap();
    let database = crate::support::postgres_database().await;
    let (upstream, via) = crate::faults::through_proxy(&database).await;
    let proxy = attune_testkit::Proxy::start(upstream).await;
    let app = start_app_on(dir.path(), via(proxy.addr)).await;
    let rule = json!({"ref": "sup.on_tick", "trigger": "sup.tick", "action": {"ref": "core.echo"}});
    app.rules.put(RuleSpec::from_json(rule).unwrap()).await.unwrap();
    let mut counter = spec(&fixture("js/counter.js"), json!({}));
    counter.sensor_ref = "sup.counter".into();
    counter.triggers = vec!["sup.tick".into()];
    counter.poll_interval = Duration::from_millis(20);
    let options = SupervisorOptions {
        quarantine_after: 2,
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(50),
    };
    let supervisor = Supervisor::new(app.clone(), engine(), vec![counter], options);
    supervisor.reconcile();
    wait_status(&supervisor, "the sensor never polled", |s| s.events >= 2).await;

    proxy.cut_now();
    let failed_before = wait_status(&supervisor, "", |_| true).await.failures;
    let down = wait_status(&supervisor, "no failed polls while the store is out of reach", |s| {
        s.failures >= failed_before + 6
    })
    .await;
    assert_ne!(down.state, SensorState::Quarantined, "{down:?}");
    assert_eq!(down.last_failure_reason.as_deref(), Some("store_error"), "{down:?}");

    proxy.set_down(false);
    let resumed = wait_status(&supervisor, "the sensor did not resume", |s| s.events > down.events).await;
    assert_eq!(resumed.state, SensorState::Running);
    supervisor.stop_all(Duration::from_secs(3)).await;
}

/// The status of the supervisor's only sensor once `done` holds (within 15 s, else `what`).
async fn wait_status(supervisor: &Supervisor, what: &str, done: impl Fn(&SensorStatus) -> bool) -> SensorStatus {
    let started = Instant::now();
    loop {
        let status = supervisor.statuses_here().into_iter().next().unwrap();
        if done(&status) {
            return status;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "{what}: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
