//! Two hosts sharing one PostgreSQL and one RabbitMQ exchange: a rule changed on one takes
//! effect on the other (its matcher, and its timer on whichever host owns it), through the
//! `rule.*` announcements.

use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_host::app::{App, AppConfig, new_host_id};
use attune_host::store::WorkKind;
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
        amqp_url: Some(attune_testkit::amqp_url()),
        exchange: unique_name(),
        ..AppConfig::new(crate::support::postgres_database().await)
    };
    let a = Arc::new(App::start(&config, &[]).await.unwrap());
    let b = Arc::new(App::start(&AppConfig { host_id: new_host_id(), ..config }, &[]).await.unwrap());
    let follow_a = a.rules.follow(a.bus.as_ref());
    let follow_b = b.rules.follow(b.bus.as_ref());
    // Both listeners are bound before the first change (a rule that B hears of on its
    // connect-time resync would pass this test without any message).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let hourly = json!({"ref": "hosts.tick", "trigger": "core.intervaltimer",
                        "trigger_params": {"interval": 1, "unit": "hours"}, "action": {"ref": "core.echo"}});
    a.rules.put(RuleSpec::from_json(hourly.clone()).unwrap()).await.unwrap();
    eventually("the new rule", &b, async |b| b.pipeline.rule("hosts.tick").is_some()).await;
    // One of the two runs the timer, whichever owns it.
    let runs = async |app: &App| app.timers.state("hosts.tick").await.unwrap().is_some();
    let (a2, b2) = (a.clone(), b.clone());
    eventually("its timer on exactly one host", &b, async |_| runs(&a2).await != runs(&b2).await).await;

    let mut minutely = hourly.clone();
    minutely["trigger_params"]["unit"] = json!("minutes");
    a.rules.put(RuleSpec::from_json(minutely).unwrap()).await.unwrap();
    eventually("the changed schedule", &b, async |b| {
        b.pipeline.rule("hosts.tick").is_some_and(|r| r.trigger_params()["unit"] == "minutes")
    })
    .await;

    a.rules.set_enabled("hosts.tick", false).await.unwrap().unwrap();
    eventually("the disable", &b, async |b| b.pipeline.rule("hosts.tick").is_some_and(|r| !r.enabled())).await;
    eventually("the stopped timer", &b, async |_| !runs(&a2).await && !runs(&b2).await).await;
    drop((a2, b2));

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

/// A pack `twin` in `dir`, its description making this copy differ from another.
fn twin_pack(dir: &std::path::Path, description: &str) -> attune_host::pack::Pack {
    std::fs::create_dir_all(dir.join("triggers")).unwrap();
    std::fs::write(dir.join("pack.yaml"), format!("ref: twin\nversion: 1.0.0\ndescription: {description}\n")).unwrap();
    std::fs::write(dir.join("triggers/tick.yaml"), "ref: tick\n").unwrap();
    attune_host::pack::Pack::load(dir).unwrap()
}

/// Two hosts with different copies of one pack: its sensors run only on the host whose copy was
/// registered last (at its start, or by a reload asked for on it), and the other shows the
/// mismatch.
#[tokio::test]
async fn sensors_run_only_where_the_pack_copy_is_the_registered_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = AppConfig::new(crate::support::postgres_database().await);
    let (old, new) = (twin_pack(&dir.path().join("a/twin"), "old"), twin_pack(&dir.path().join("b/twin"), "new"));
    let a = Arc::new(App::start(&config, std::slice::from_ref(&old)).await.unwrap());
    let b = Arc::new(App::start(&AppConfig { host_id: new_host_id(), ..config }, &[new]).await.unwrap());
    let sensors: std::collections::BTreeSet<String> = (0..10).map(|i| format!("twin.s{i}")).collect();
    for app in [&a, &b] {
        app.membership.set_wanted(WorkKind::Sensor, sensors.clone());
    }
    let all_on = async |owner: &App| {
        let rows = owner.store.ownership(WorkKind::Sensor).await.unwrap();
        rows.len() == 10 && rows.iter().all(|r| r.owner.as_deref() == Some(owner.membership.host_id()))
    };
    // B started last: its copy is the registered one.
    let (a2, b2) = (a.clone(), b.clone());
    eventually("every sensor on the host with the registered copy", &a, async |_| all_on(&b2).await).await;
    let copies = a.store.pack_copies().await.unwrap();
    assert_eq!(copies.mismatched(a.membership.host_id()), ["twin".to_string()].into());
    assert!(copies.mismatched(b.membership.host_id()).is_empty());

    // A reload asked for on A registers A's copy: the sensors move there.
    a.membership.set_packs(attune_host::app::pack_fingerprints(&[old]), true);
    eventually("every sensor moved to the newly registered copy", &a, async |_| all_on(&a2).await).await;
    drop((a2, b2));
    for app in [a, b] {
        Arc::try_unwrap(app).unwrap().shutdown().await;
    }
}
