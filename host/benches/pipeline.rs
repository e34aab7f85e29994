//! Pipeline benchmark: payload -> stored event -> rules -> stored enforcement -> published.
//! 1,000 rules, 100 of them on the event's trigger, exactly one matching each event.
//!
//! Run: `cargo bench -p attune-host --bench pipeline` (PostgreSQL and RabbitMQ on 127.0.0.1, as
//! for the tests; `ATTUNE_TEST_POSTGRES_URL`, `AMQP_URL` override). Prints Markdown rows.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_host::app::{App, AppConfig};
use attune_host::pack::Pack;
use attune_host::pipeline::Source;
use attune_rules::RuleSpec;
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

const THROUGHPUT_EVENTS: usize = 40_000;
const BATCH: usize = 10;
const PRODUCERS: usize = 16;
const PACED_RATE: usize = 5_000;
const PACED_SECONDS: u64 = 4;

fn pack(dir: &Path) -> Pack {
    let write = |rel: &str, text: &str| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap_or(dir)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
    };
    write("pack.yaml", "ref: bench\nversion: 0.1.0\n");
    write(
        "triggers/status.yaml",
        "ref: bench.status\npayload_schema: {type: object, required: [kind, status], properties: {status: {type: integer}}}\n",
    );
    write("triggers/other.yaml", "ref: bench.other\n");
    Pack::load(dir).unwrap_or_else(|e| panic!("{e}"))
}

async fn add_rules(app: &App) {
    for i in 0..1_000 {
        let trigger = if i < 100 { "bench.status" } else { "bench.other" };
        let rule = json!({
            "ref": format!("bench.r{i}"), "trigger": trigger,
            "conditions": {"all": [
                {"field": "payload.kind", "operator": "equals", "value": format!("k{}", i % 100)},
                {"field": "payload.status", "operator": "greater_than", "value": 499}]},
            "action": {"ref": "core.echo", "parameters": {"message": "{{ event.payload.kind }} failed"}}
        });
        let spec = RuleSpec::from_json(rule).unwrap_or_else(|e| panic!("{e}"));
        app.rules.put(spec).await.unwrap_or_else(|e| panic!("{e}"));
    }
}

fn source() -> Source {
    Source::Sensor { sensor_ref: "bench.s".into(), triggers: vec!["bench.status".into()] }
}

fn payloads(start: usize) -> Vec<(String, serde_json::Value)> {
    (start..start + BATCH)
        .map(|n| ("bench.status".to_string(), json!({"kind": format!("k{}", n % 100), "status": 503, "n": n})))
        .collect()
}

/// (message_id, arrival) of every `event.created` message, from the in-process bus or RabbitMQ.
async fn arrivals(app: &App, amqp: Option<(&str, &str)>) -> mpsc::UnboundedReceiver<(String, Instant)> {
    let (tx, rx) = mpsc::unbounded_channel();
    match amqp {
        None => {
            let mut sub =
                app.in_process.as_ref().map(|b| b.subscribe("event.created")).unwrap_or_else(|| panic!("no bus"));
            tokio::spawn(async move {
                while let Some(m) = sub.recv().await {
                    let _ = tx.send((m.message_id, Instant::now()));
                }
            });
        }
        Some((url, exchange)) => {
            use lapin::options::*;
            use lapin::types::FieldTable;
            let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let ch = conn.create_channel().await.unwrap_or_else(|e| panic!("{e}"));
            let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
            ch.exchange_declare(exchange.into(), lapin::ExchangeKind::Topic, durable, FieldTable::default())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let q = ch
                .queue_declare(
                    "".into(),
                    QueueDeclareOptions { exclusive: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            ch.queue_bind(
                q.name().clone(),
                exchange.into(),
                "event.created".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            let mut consumer = ch
                .basic_consume(
                    q.name().clone(),
                    "bench".into(),
                    BasicConsumeOptions { no_ack: true, ..Default::default() },
                    FieldTable::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            tokio::spawn(async move {
                let _conn = conn;
                while let Some(Ok(delivery)) = consumer.next().await {
                    let id = delivery.properties.message_id().as_ref().map(|s| s.to_string()).unwrap_or_default();
                    let _ = tx.send((id, Instant::now()));
                }
            });
        }
    }
    rx
}

/// Events per second until every event was stored (ingest returned), and until every event was
/// published (its `event.created` message arrived).
async fn throughput(app: &Arc<App>, rx: &mut mpsc::UnboundedReceiver<(String, Instant)>) -> (f64, f64) {
    let started = Instant::now();
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let app = app.clone();
        producers.push(tokio::spawn(async move {
            for b in (p * BATCH..THROUGHPUT_EVENTS).step_by(PRODUCERS * BATCH) {
                app.pipeline.ingest(&source(), payloads(b), None).await.unwrap_or_else(|e| panic!("{e}"));
            }
        }));
    }
    for producer in producers {
        producer.await.unwrap_or_else(|e| panic!("{e}"));
    }
    let stored = THROUGHPUT_EVENTS as f64 / started.elapsed().as_secs_f64();
    for _ in 0..THROUGHPUT_EVENTS {
        rx.recv().await.unwrap_or_else(|| panic!("bus closed"));
    }
    (stored, THROUGHPUT_EVENTS as f64 / started.elapsed().as_secs_f64())
}

/// Paced at PACED_RATE events/s: p50 and p99 of ingest start -> `event.created` received.
async fn latency(app: &Arc<App>, rx: &mut mpsc::UnboundedReceiver<(String, Instant)>) -> (Duration, Duration) {
    let total = PACED_RATE * PACED_SECONDS as usize;
    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(total);
    let mut ticker = tokio::time::interval(Duration::from_secs(1) * BATCH as u32 / PACED_RATE as u32);
    let mut in_flight = Vec::new();
    for b in (0..total).step_by(BATCH) {
        ticker.tick().await;
        let app = app.clone();
        let at = Instant::now();
        in_flight.push(tokio::spawn(async move {
            let ingested = app.pipeline.ingest(&source(), payloads(b), None).await.unwrap_or_else(|e| panic!("{e}"));
            (ingested.event_ids, at)
        }));
    }
    for task in in_flight {
        let (ids, at) = task.await.unwrap_or_else(|e| panic!("{e}"));
        sent.extend(ids.into_iter().map(|id| (id, at)));
    }
    let mut latencies = Vec::with_capacity(total);
    while latencies.len() < total {
        let (id, arrived) = rx.recv().await.unwrap_or_else(|| panic!("bus closed"));
        if let Some(at) = sent.get(&id) {
            latencies.push(arrived - *at);
        }
    }
    latencies.sort();
    (latencies[total / 2], latencies[total * 99 / 100])
}

async fn run(label: &str, config: AppConfig, amqp: Option<(&str, &str)>, dir: &Path) {
    let app = Arc::new(App::start(&config, &[pack(&dir.join("pack"))]).await.unwrap_or_else(|e| panic!("{e}")));
    add_rules(&app).await;
    let mut rx = arrivals(&app, amqp).await;
    let (stored, published) = throughput(&app, &mut rx).await;
    let (p50, p99) = latency(&app, &mut rx).await;
    println!(
        "| {label} | {stored:.0} events/s | {published:.0} events/s | {:.1} ms | {:.1} ms |",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "| store + bus | all {THROUGHPUT_EVENTS} events stored ({PRODUCERS} producers × {BATCH}-payload polls) | all published | payload → published p50 at {PACED_RATE}/s | p99 at {PACED_RATE}/s |"
    );
    println!("|---|---|---|---|---|");
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    run("SQLite + in-process", AppConfig::new(sqlite), None, dir.path()).await;

    let admin = std::env::var("ATTUNE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("attune_bench_{}", uuid::Uuid::now_v7().simple());
    let pg =
        attune_host::store::PgStore::connect(&admin).await.unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
    pg.execute_admin(&format!("CREATE DATABASE {name}")).await.unwrap_or_else(|e| panic!("{e}"));
    let pg_url = format!("{}/{name}", admin.rsplit_once('/').map_or(admin.as_str(), |(server, _)| server));
    let amqp = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let exchange = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let config = AppConfig { amqp_url: Some(amqp.clone()), exchange: exchange.clone(), ..AppConfig::new(pg_url) };
    run("PostgreSQL + RabbitMQ", config, Some((&amqp, &exchange)), dir.path()).await;
    let _ = pg.execute_admin(&format!("DROP DATABASE {name} WITH (FORCE)")).await;
}
