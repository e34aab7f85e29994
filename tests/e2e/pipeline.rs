//! The event pipeline end to end: payload -> stored event -> rules -> stored enforcement ->
//! published, on SQLite with the in-process bus and on PostgreSQL with RabbitMQ, plus a broker
//! cut in the middle of the stream.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use attune_host::app::{App, AppConfig, PollError};
use attune_host::pack::Pack;
use attune_host::pipeline::{IngestError, Rejected, Source};
use attune_host::store::ListFilter;
use attune_rules::RuleSpec;
use attune_testkit::{Collector, Proxy, broker_addr, count_by_id, unique_name};
use serde_json::{Value, json};

use crate::support::{fixture, spec, start};

/// A pack with one trigger whose payload schema wants an integer `status` (at most `max`).
fn test_pack(dir: &Path, max: u32) -> Pack {
    std::fs::create_dir_all(dir.join("triggers")).unwrap();
    std::fs::write(dir.join("pack.yaml"), "ref: pipe\nversion: 0.1.0\nconfig: {team: ops}\n").unwrap();
    std::fs::write(
        dir.join("triggers/status.yaml"),
        format!(
            "ref: pipe.status\npayload_schema:\n  type: object\n  required: [status]\n  properties:\n    status: {{type: integer, maximum: {max}}}\n"
        ),
    )
    .unwrap();
    Pack::load(dir).unwrap()
}

/// 100 rules on `pipe.status`, rule `pipe.r{i}` matching `status == i`, with templated parameters.
async fn add_rules(app: &App) {
    for i in 0..100 {
        let rule = json!({
            "ref": format!("pipe.r{i}"), "trigger": "pipe.status",
            "conditions": {"all": [{"field": "payload.status", "operator": "equals", "value": i}]},
            "action": {"ref": "core.echo", "parameters": {
                "message": "{{ event.payload.host }} is {{ event.payload.status }}", "team": "{{ pack.config.team }}"}}
        });
        app.rules.put(RuleSpec::from_json(rule).unwrap()).await.unwrap();
    }
}

/// A source, a bad payload's trigger and document, the rejection expected, and its index prefix.
type Refusal = (Source, &'static str, Value, fn(&Rejected) -> bool, &'static str);

fn sensor_source() -> Source {
    Source::Sensor { sensor_ref: "pipe.s".into(), triggers: vec!["pipe.status".into()] }
}

/// Ingests one matching payload and several refused ones; returns the stored event and
/// enforcement ids, having checked everything that was (and was not) stored.
async fn ingest_and_check(app: &App) -> (String, String) {
    let state = [("cursor".to_string(), Some("1".to_string()))].into();
    let ingested = app
        .pipeline
        .ingest(
            &sensor_source(),
            vec![("pipe.status".into(), json!({"status": 7, "host": "web-1"}))],
            Some(("pipe.s".into(), state)),
        )
        .await
        .unwrap();
    assert_eq!(ingested.event_ids.len(), 1);
    assert_eq!(ingested.enforcements, 1, "exactly one of the 100 rules matches");

    let events = app.store.events(&ListFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].payload, json!({"status": 7, "host": "web-1"}));
    assert_eq!(events[0].source, "sensor:pipe.s");
    let enforcements = app.store.enforcements(&ListFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(enforcements.len(), 1);
    assert_eq!(enforcements[0].rule_ref, "pipe.r7");
    assert_eq!(enforcements[0].event_id, events[0].id);
    assert_eq!(enforcements[0].parameters, Some(json!({"message": "web-1 is 7", "team": "ops"})));
    assert_eq!(app.store.sensor_state("pipe.s").await.unwrap()["cursor"], "1");

    // Refused batches store nothing, state writes included.
    // Each batch holds a good payload and then a bad one (for the source that declares nothing,
    // the first payload is already refused).
    let refused: [Refusal; 3] = [
        (
            sensor_source(),
            "pipe.nope",
            json!({"status": 1}),
            |r| matches!(r, Rejected::UnknownTrigger { .. }),
            "payload 1:",
        ),
        (
            Source::Sensor { sensor_ref: "pipe.s".into(), triggers: vec![] },
            "pipe.status",
            json!({"status": 1}),
            |r| matches!(r, Rejected::Undeclared { .. }),
            "payload 0:",
        ),
        (
            sensor_source(),
            "pipe.status",
            json!({"status": "high"}),
            |r| matches!(r, Rejected::Schema { .. }),
            "payload 1:",
        ),
    ];
    for (source, trigger, payload, expected, index) in refused {
        let state = [("cursor".to_string(), Some("99".to_string()))].into();
        let good = ("pipe.status".to_string(), json!({"status": 7, "host": "web-2"}));
        let error =
            app.pipeline.ingest(&source, vec![good, (trigger.into(), payload)], Some(("pipe.s".into(), state))).await;
        match error {
            Err(IngestError::Rejected(rejected)) => {
                assert!(expected(&rejected), "{rejected}");
                assert!(rejected.to_string().starts_with(index), "{rejected}");
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert_eq!(app.store.events(&ListFilter { limit: 10, ..Default::default() }).await.unwrap().len(), 1);
    assert_eq!(app.store.sensor_state("pipe.s").await.unwrap()["cursor"], "1");
    (events[0].id.clone(), enforcements[0].id.clone())
}

async fn wait_for_empty_outbox(app: &App) {
    for _ in 0..200 {
        if app.store.outbox_backlog().await.unwrap() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the outbox did not drain: {} rows left", app.store.outbox_backlog().await.unwrap());
}

#[tokio::test]
async fn sqlite_and_in_process_bus() {
    let dir = tempfile::tempdir().unwrap();
    let pack = test_pack(&dir.path().join("pack"), 100);
    let url = format!("sqlite://{}", dir.path().join("attune.db").display());
    let app = App::start(&AppConfig::new(url), &[pack]).await.unwrap();
    let mut rule_changes = app.in_process.as_ref().unwrap().subscribe("rule.*");
    add_rules(&app).await;
    let mut published = app.in_process.as_ref().unwrap().subscribe("#");

    let (event_id, enforcement_id) = ingest_and_check(&app).await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(5), published.recv()).await.unwrap().unwrap();
        // The rules' own `rule.created` announcements may still be arriving.
        if !message.routing_key.starts_with("rule.") {
            seen.push((message.routing_key, message.message_id));
        }
    }
    seen.sort();
    assert_eq!(seen, [("enforcement.created".to_string(), enforcement_id), ("event.created".to_string(), event_id)]);
    wait_for_empty_outbox(&app).await;

    // Rule changes are announced on the bus too.
    app.rules.set_enabled("pipe.r1", false).await.unwrap();
    app.rules
        .put(
            RuleSpec::from_json(json!({"ref": "pipe.r1", "trigger": "pipe.status", "enabled": false,
        "action": {"ref": "core.noop"}}))
            .unwrap(),
        )
        .await
        .unwrap();
    app.rules.set_enabled("pipe.r1", true).await.unwrap();
    app.rules.delete("pipe.r1").await.unwrap();
    let mut keys = Vec::new();
    while keys.len() < 104 {
        let message = tokio::time::timeout(Duration::from_secs(5), rule_changes.recv()).await.unwrap().unwrap();
        assert_eq!(message.body.to_value()["rule"], message.body.to_value()["rule"].as_str().unwrap());
        keys.push(message.routing_key);
    }
    assert!(keys[..100].iter().all(|k| k == "rule.created"), "{keys:?}");
    assert_eq!(keys[100..], ["rule.disabled", "rule.updated", "rule.enabled", "rule.deleted"]);
    app.shutdown().await;
}

#[tokio::test]
async fn postgres_and_rabbitmq() {
    let dir = tempfile::tempdir().unwrap();
    let pack = test_pack(&dir.path().join("pack"), 100);
    let exchange = unique_name();
    let consumer = Collector::bind(&exchange, "enforcement.created").await;
    let config = AppConfig {
        amqp_url: Some(attune_testkit::amqp_url()),
        exchange: exchange.clone(),
        ..AppConfig::new(crate::support::postgres_database().await)
    };
    let app = App::start(&config, &[pack]).await.unwrap();
    add_rules(&app).await;

    let (_, enforcement_id) = ingest_and_check(&app).await;
    assert!(consumer.wait_for(Duration::from_secs(10), |r| !r.is_empty()).await, "no enforcement was published");
    let received = consumer.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].message_id.as_deref(), Some(enforcement_id.as_str()));
    assert_eq!(received[0].body["parameters"], json!({"message": "web-1 is 7", "team": "ops"}));
    attune_testkit::assert_well_formed(&received[0]);
    wait_for_empty_outbox(&app).await;
    app.shutdown().await;
    consumer.delete_exchange(&exchange).await;
}

/// A sensor's cursor is stored with its events; when the pipeline refuses a poll, the sensor's
/// state goes back to what is stored.
#[tokio::test]
async fn sensor_state_commits_with_its_events() {
    let dir = tempfile::tempdir().unwrap();
    // The counter emits {"n": k}; this schema accepts n up to 2 only.
    std::fs::create_dir_all(dir.path().join("pack/triggers")).unwrap();
    std::fs::write(dir.path().join("pack/pack.yaml"), "ref: pipe\nversion: 0.1.0\n").unwrap();
    std::fs::write(
        dir.path().join("pack/triggers/count.yaml"),
        "ref: pipe.count\npayload_schema: {type: object, properties: {n: {maximum: 2}}}\n",
    )
    .unwrap();
    let pack = Pack::load(&dir.path().join("pack")).unwrap();
    let url = format!("sqlite://{}", dir.path().join("attune.db").display());
    let app = App::start(&AppConfig::new(url), &[pack]).await.unwrap();

    let mut counter = spec(&fixture("js/counter.js"), json!({}));
    counter.sensor_ref = "pipe.counter".into();
    counter.triggers = vec!["pipe.count".into()];
    let mut sensor = start(counter).await;
    for expected in 1..=2 {
        app.poll_sensor(&mut sensor, None).await.unwrap();
        assert_eq!(app.store.sensor_state("pipe.counter").await.unwrap()["n"], expected.to_string());
    }
    for _ in 0..2 {
        // n = 3 is refused every time: the state did not move past what was stored.
        match app.poll_sensor(&mut sensor, None).await {
            Err(PollError::Ingest(IngestError::Rejected(Rejected::Schema { .. }))) => {}
            other => panic!("expected a schema rejection, got {other:?}"),
        }
        assert_eq!(app.store.sensor_state("pipe.counter").await.unwrap()["n"], "2");
    }
    assert_eq!(app.store.events(&ListFilter { limit: 10, ..Default::default() }).await.unwrap().len(), 2);
    app.shutdown().await;
}

/// The broker connection is cut mid-stream and the broker stays unreachable a while: after
/// recovery every enforcement has arrived, by message_id, none lost.
#[tokio::test]
async fn broker_cut_mid_stream_loses_no_enforcement() {
    const EVENTS: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let pack = test_pack(&dir.path().join("pack"), 100_000);
    let proxy = Proxy::start(broker_addr().await).await;
    let exchange = unique_name();
    let consumer = Collector::bind(&exchange, "enforcement.created").await;
    let config = AppConfig {
        amqp_url: Some(proxy.url()),
        exchange: exchange.clone(),
        ..AppConfig::new(format!("sqlite://{}", dir.path().join("attune.db").display()))
    };
    let app = Arc::new(App::start(&config, &[pack]).await.unwrap());
    let every = json!({"ref": "pipe.every", "trigger": "pipe.status", "action": {"ref": "core.echo"}});
    app.rules.put(RuleSpec::from_json(every).unwrap()).await.unwrap();

    let producer = tokio::spawn({
        let app = app.clone();
        async move {
            for batch in 0..EVENTS / 50 {
                let payloads = (0..50).map(|i| ("pipe.status".to_string(), json!({"status": batch * 50 + i})));
                app.pipeline.ingest(&sensor_source(), payloads, None).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    // Cut once the stream is flowing, and keep the broker away for a second.
    assert!(consumer.wait_for(Duration::from_secs(30), |r| r.len() >= 100).await, "nothing flowed before the cut");
    proxy.cut_after(10_000);
    for _ in 0..300 {
        if proxy.cuts() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(proxy.cuts() > 0, "the cut never fired");
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.set_down(false);
    producer.await.unwrap();

    let stored: HashSet<String> = {
        let mut ids = HashSet::new();
        let mut filter = ListFilter { limit: 1_000, ..Default::default() };
        loop {
            let page = app.store.enforcements(&filter).await.unwrap();
            let Some(last) = page.last() else { break };
            filter.before = Some(last.id.clone());
            ids.extend(page.into_iter().map(|e| e.id));
        }
        ids
    };
    assert_eq!(stored.len(), EVENTS);
    assert!(
        consumer.wait_for(Duration::from_secs(60), |r| count_by_id(r).len() >= EVENTS).await,
        "only {} of {EVENTS} enforcements arrived after recovery",
        count_by_id(&consumer.received()).len()
    );
    let arrived: HashSet<String> = count_by_id(&consumer.received()).into_keys().collect();
    assert_eq!(arrived, stored, "lost or unexpected enforcement message_ids");
    wait_for_empty_outbox(&app).await;
    consumer.delete_exchange(&exchange).await;
}

/// One timer instant fired twice (a replay after a crash, a few milliseconds later): one event,
/// one enforcement, and one message of each on the bus.
#[tokio::test]
async fn a_replayed_fire_stores_and_publishes_once() {
    let dir = tempfile::tempdir().unwrap();
    let app =
        App::start(&AppConfig::new(format!("sqlite://{}", dir.path().join("a.db").display())), &[]).await.unwrap();
    let mut published = app.in_process.as_ref().unwrap().subscribe("#");
    // Hourly: its own timer does not fire during the test.
    let rule = json!({"ref": "pipe.hourly", "trigger": "core.intervaltimer", "trigger_params": {"interval": 1, "unit": "hours"},
                      "action": {"ref": "core.echo", "parameters": {"n": "{{ event.payload.execution_count }}"}}});
    app.rules.put(RuleSpec::from_json(rule).unwrap()).await.unwrap();
    let source = Source::Timer { rule_ref: "pipe.hourly".into(), scheduled_at: 1_790_000_000_000_000 };
    let payload = || vec![("core.intervaltimer".to_string(), json!({"type": "interval", "execution_count": 1}))];
    let first = app.pipeline.ingest(&source, payload(), None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(5)).await;
    let again = app.pipeline.ingest(&source, payload(), None).await.unwrap();
    assert_eq!(first.event_ids, again.event_ids, "a fire's event id is its (rule, instant)");

    let all = ListFilter { limit: 100, ..Default::default() };
    let timer_events = ListFilter { trigger_ref: Some("core.intervaltimer".into()), ..all.clone() };
    assert_eq!(app.store.events(&timer_events).await.unwrap().len(), 1);
    let enforcements =
        app.store.enforcements(&ListFilter { rule_ref: Some("pipe.hourly".into()), ..all }).await.unwrap();
    assert_eq!(enforcements.len(), 1);
    let mut messages: Vec<(String, String)> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while messages.iter().filter(|(key, _)| key != "rule.created").count() < 2 {
        let message = tokio::time::timeout_at(deadline, published.recv()).await.expect("two messages").unwrap();
        messages.push((message.routing_key, message.message_id));
    }
    // Anything more would have come with the first two: the relay publishes in order.
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(message) = published.try_recv() {
        messages.push((message.routing_key, message.message_id));
    }
    let of = |key: &str| messages.iter().filter(|(k, _)| k == key).map(|(_, id)| id.clone()).collect::<Vec<_>>();
    assert_eq!(of("event.created"), first.event_ids);
    assert_eq!(of("enforcement.created"), [enforcements[0].id.clone()]);
    app.shutdown().await;
}

/// With a retention, a running app deletes events past it on its own.
#[tokio::test]
async fn an_app_with_a_retention_prunes_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("a.db").display());
    let config = AppConfig { retention: Some(Duration::from_secs(1)), ..AppConfig::new(url) };
    let app = App::start(&config, &[test_pack(&dir.path().join("pack"), 999)]).await.unwrap();
    let every = json!({"ref": "pipe.every", "trigger": "pipe.status", "action": {"ref": "core.echo"}});
    app.rules.put(RuleSpec::from_json(every).unwrap()).await.unwrap();
    app.pipeline.ingest(&sensor_source(), [("pipe.status".to_string(), json!({"status": 1}))], None).await.unwrap();
    let all = ListFilter { limit: 10, ..Default::default() };
    assert_eq!(app.store.events(&all).await.unwrap().len(), 1);
    let started = std::time::Instant::now();
    while !app.store.events(&all).await.unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(10), "the event outlived its retention");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.store.enforcements(&all).await.unwrap().is_empty());
    app.shutdown().await;
}
