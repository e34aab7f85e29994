//! Two hosts sharing one PostgreSQL and one RabbitMQ exchange: a rule changed on one takes
//! effect on the other (its matcher and its timers), through the `rule.*` announcements.

use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_host::app::{App, AppConfig};
use attune_rules::RuleSpec;
use attune_testkit::unique_name;
use serde_json::json;

/// Waits until `done` holds on `app`, at most 5 s.
async fn eventually(what: &str, app: &App, done: impl AsyncFn(&App) -> bool) {
    let started = Instant::now();
    while !done(app).await {
        assert!(started.elapsed() < Duration::from_secs(5), "the other host never saw: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rule_changes_reach_the_other_host() {
    let config = AppConfig {
        database_url: crate::support::postgres_database().await,
        amqp_url: Some(attune_testkit::amqp_url()),
        exchange: unique_name(),
        retention: None,
    };
    let a = Arc::new(App::start(&config, &[]).await.unwrap());
    let b = Arc::new(App::start(&config, &[]).await.unwrap());
    let follow_a = a.rules.follow(a.bus.as_ref());
    let follow_b = b.rules.follow(b.bus.as_ref());
    // Both listeners are bound before the first change (a rule that B hears of on its
    // connect-time resync would pass this test without any message).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let hourly = json!({"ref": "hosts.tick", "trigger": "core.intervaltimer",
                        "trigger_params": {"interval": 1, "unit": "hours"}, "action": {"ref": "core.echo"}});
    a.rules.put(RuleSpec::from_json(hourly.clone()).unwrap()).await.unwrap();
    eventually("the new rule", &b, async |b| b.pipeline.rule("hosts.tick").is_some()).await;
    eventually("its timer", &b, async |b| b.timers.state("hosts.tick").await.unwrap().is_some()).await;

    let mut minutely = hourly.clone();
    minutely["trigger_params"]["unit"] = json!("minutes");
    a.rules.put(RuleSpec::from_json(minutely).unwrap()).await.unwrap();
    eventually("the changed schedule", &b, async |b| {
        b.pipeline.rule("hosts.tick").is_some_and(|r| r.trigger_params()["unit"] == "minutes")
    })
    .await;

    a.rules.set_enabled("hosts.tick", false).await.unwrap().unwrap();
    eventually("the disable", &b, async |b| b.pipeline.rule("hosts.tick").is_some_and(|r| !r.enabled())).await;
    eventually("the stopped timer", &b, async |b| b.timers.state("hosts.tick").await.unwrap().is_none()).await;

    assert!(a.rules.delete("hosts.tick").await.unwrap());
    eventually("the delete", &b, async |b| b.pipeline.rule("hosts.tick").is_none()).await;

    for task in [follow_a, follow_b] {
        task.abort();
        let _ = task.await;
    }
    for app in [a, b] {
        Arc::try_unwrap(app).unwrap().shutdown().await;
    }
}
