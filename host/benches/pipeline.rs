//! Pipeline benchmark: payload -> stored event -> rules -> stored enforcement -> published.
//! 1,000 rules, 100 of them on the event's trigger, exactly one matching each event.
//!
//! Beside each run, the storage limit: the same rows the pipeline wrote (events, enforcements,
//! outbox), copied into a fresh migrated database of the same kind, 1,000 events with their
//! enforcements and outbox rows per transaction, on one connection (SQLite: `INSERT … SELECT`
//! from the attached database, with the store's settings; PostgreSQL: `COPY … FROM STDIN`).
//! The pipeline's rate as a share of it survives a machine whose speed varies.
//!
//! Run: `cargo bench -p attune-host --bench pipeline` (PostgreSQL and RabbitMQ on 127.0.0.1, as
//! for the tests; `ATTUNE_TEST_POSTGRES_URL`, `AMQP_URL` override). Prints Markdown rows.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_host::app::{App, AppConfig};
use attune_host::pack::Pack;
use attune_host::pipeline::Source;
use attune_host::store::{PgStore, SqliteStore, Store};
use attune_rules::RuleSpec;
use futures_util::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

const THROUGHPUT_EVENTS: usize = 40_000;
const BATCH: usize = 10;
const PRODUCERS: usize = 16;
const PACED_RATE: usize = 5_000;
const PACED_SECONDS: u64 = 4;
/// Events per transaction in the storage-limit copies.
const LIMIT_EVENTS_PER_TX: usize = 1_000;

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

/// What one pipeline run measured.
struct Figures {
    stored: f64,
    published: f64,
    p50: Duration,
    p99: Duration,
}

async fn run(config: AppConfig, amqp: Option<(&str, &str)>, dir: &Path) -> Figures {
    let app = Arc::new(App::start(&config, &[pack(&dir.join("pack"))]).await.unwrap_or_else(|e| panic!("{e}")));
    add_rules(&app).await;
    let mut rx = arrivals(&app, amqp).await;
    let (stored, published) = throughput(&app, &mut rx).await;
    let (p50, p99) = latency(&app, &mut rx).await;
    Figures { stored, published, p50, p99 }
}

fn row(label: &str, f: &Figures, limit: f64) {
    println!(
        "| {label} | {:.0} events/s | {:.0} events/s | {:.1} ms | {:.1} ms | {limit:.0} events/s | {:.2} |",
        f.stored,
        f.published,
        f.p50.as_secs_f64() * 1e3,
        f.p99.as_secs_f64() * 1e3,
        f.stored / limit
    );
}

/// Events/s SQLite itself takes for the rows in `source`: copied into a fresh migrated database
/// with the store's settings (WAL, `synchronous = NORMAL`, foreign keys), by rowid ranges of
/// [`LIMIT_EVENTS_PER_TX`] events with their enforcements and a proportional share of the outbox.
async fn sqlite_storage_limit(source: &Path, dir: &Path) -> f64 {
    use sqlx::{Connection, Executor};
    let target = dir.join("limit.db");
    let store = SqliteStore::open(&target).await.unwrap_or_else(|e| panic!("{e}"));
    store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
    drop(store);
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", target.display()))
        .unwrap_or_else(|e| panic!("{e}"))
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
        .foreign_keys(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&options).await.unwrap_or_else(|e| panic!("{e}"));
    let attach = format!("ATTACH DATABASE '{}' AS src", source.display());
    conn.execute(sqlx::AssertSqlSafe(attach)).await.unwrap_or_else(|e| panic!("{e}"));
    let count = |table: &'static str| format!("SELECT count(*), coalesce(max(rowid), 0) FROM src.{table}");
    let (events, max_event): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(count("events")))
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_, max_outbox): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(count("outbox")))
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let chunks = (max_event + LIMIT_EVENTS_PER_TX as i64 - 1) / LIMIT_EVENTS_PER_TX as i64;
    let started = Instant::now();
    for k in 0..chunks {
        let (lo, hi) = (k * LIMIT_EVENTS_PER_TX as i64, (k + 1) * LIMIT_EVENTS_PER_TX as i64);
        let (outbox_lo, outbox_hi) = (max_outbox * k / chunks, max_outbox * (k + 1) / chunks);
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.unwrap_or_else(|e| panic!("{e}"));
        for statement in [
            format!("INSERT INTO events SELECT * FROM src.events WHERE rowid > {lo} AND rowid <= {hi}"),
            format!(
                "INSERT INTO enforcements SELECT * FROM src.enforcements WHERE event_id IN \
                 (SELECT id FROM src.events WHERE rowid > {lo} AND rowid <= {hi})"
            ),
            format!("INSERT INTO outbox SELECT * FROM src.outbox WHERE id > {outbox_lo} AND id <= {outbox_hi}"),
        ] {
            tx.execute(sqlx::AssertSqlSafe(statement)).await.unwrap_or_else(|e| panic!("{e}"));
        }
        tx.commit().await.unwrap_or_else(|e| panic!("{e}"));
    }
    events as f64 / started.elapsed().as_secs_f64()
}

/// Events/s PostgreSQL itself takes for the rows in the database at `source_url`, `COPY`d on one
/// connection into a fresh migrated database at `target_url`, [`LIMIT_EVENTS_PER_TX`] events with
/// their enforcements and a proportional share of the outbox per transaction.
async fn pg_storage_limit(source_url: &str, target_url: &str) -> f64 {
    use sqlx::{Connection, Executor};
    let store = PgStore::connect(target_url).await.unwrap_or_else(|e| panic!("{e}"));
    store.migrate().await.unwrap_or_else(|e| panic!("{e}"));
    let mut source = sqlx::PgConnection::connect(source_url).await.unwrap_or_else(|e| panic!("{e}"));
    let ordered_events = "SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM events";
    let events = copy_out(&mut source, "COPY (SELECT * FROM events ORDER BY created_at, id) TO STDOUT").await;
    let enforcements = copy_out(
        &mut source,
        &format!("COPY (SELECT en.* FROM enforcements en JOIN ({ordered_events}) e ON e.id = en.event_id ORDER BY e.n, en.id) TO STDOUT"),
    )
    .await;
    // The event number of each enforcement row, in the order above: where each chunk ends.
    let enforcement_event: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT e.n FROM enforcements en JOIN ({ordered_events}) e ON e.id = en.event_id ORDER BY e.n, en.id"
    )))
    .fetch_all(&mut source)
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let outbox = copy_out(&mut source, "COPY (SELECT * FROM outbox ORDER BY id) TO STDOUT").await;

    let mut conn = sqlx::PgConnection::connect(target_url).await.unwrap_or_else(|e| panic!("{e}"));
    let chunks = events.len().div_ceil(LIMIT_EVENTS_PER_TX);
    let started = Instant::now();
    let mut next_enforcement = 0;
    for k in 0..chunks {
        let event_rows = &events[k * LIMIT_EVENTS_PER_TX..((k + 1) * LIMIT_EVENTS_PER_TX).min(events.len())];
        let last_event = ((k + 1) * LIMIT_EVENTS_PER_TX) as i64;
        let enforcement_end =
            next_enforcement + enforcement_event[next_enforcement..].partition_point(|n| *n <= last_event);
        let enforcement_rows = &enforcements[next_enforcement..enforcement_end];
        next_enforcement = enforcement_end;
        let outbox_rows = &outbox[outbox.len() * k / chunks..outbox.len() * (k + 1) / chunks];
        conn.execute("BEGIN").await.unwrap_or_else(|e| panic!("{e}"));
        for (table, rows) in [("events", event_rows), ("enforcements", enforcement_rows), ("outbox", outbox_rows)] {
            let mut copy =
                conn.copy_in_raw(&format!("COPY {table} FROM STDIN")).await.unwrap_or_else(|e| panic!("{e}"));
            copy.send(rows.concat()).await.unwrap_or_else(|e| panic!("{e}"));
            copy.finish().await.unwrap_or_else(|e| panic!("{e}"));
        }
        conn.execute("COMMIT").await.unwrap_or_else(|e| panic!("{e}"));
    }
    events.len() as f64 / started.elapsed().as_secs_f64()
}

/// The rows of a `COPY … TO STDOUT` in text format, one line (with its newline) each.
async fn copy_out(conn: &mut sqlx::PgConnection, statement: &str) -> Vec<Vec<u8>> {
    let mut stream = conn.copy_out_raw(statement).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
    let mut text = Vec::new();
    while let Some(chunk) = stream.next().await {
        text.extend_from_slice(&chunk.unwrap_or_else(|e| panic!("{e}")));
    }
    drop(stream);
    text.split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
}

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "| store + bus | all {THROUGHPUT_EVENTS} events stored ({PRODUCERS} producers × {BATCH}-payload polls) | all published | payload → published p50 at {PACED_RATE}/s | p99 at {PACED_RATE}/s | storage limit (same rows, {LIMIT_EVENTS_PER_TX} events per transaction) | stored / limit |"
    );
    println!("|---|---|---|---|---|---|---|");
    let sqlite_path = dir.path().join("bench.db");
    let sqlite = run(AppConfig::new(format!("sqlite://{}", sqlite_path.display())), None, dir.path()).await;
    let limit = sqlite_storage_limit(&sqlite_path, dir.path()).await;
    row("SQLite + in-process", &sqlite, limit);

    let admin = std::env::var("ATTUNE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("attune_bench_{}", uuid::Uuid::now_v7().simple());
    let pg = PgStore::connect(&admin).await.unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
    let server = admin.rsplit_once('/').map_or(admin.as_str(), |(server, _)| server);
    for db in [name.clone(), format!("{name}_limit")] {
        pg.execute_admin(&format!("CREATE DATABASE {db}")).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let amqp = std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let exchange = format!("bench-{}", uuid::Uuid::now_v7().simple());
    let config = AppConfig {
        amqp_url: Some(amqp.clone()),
        exchange: exchange.clone(),
        ..AppConfig::new(format!("{server}/{name}"))
    };
    let postgres = run(config, Some((&amqp, &exchange)), dir.path()).await;
    let limit = pg_storage_limit(&format!("{server}/{name}"), &format!("{server}/{name}_limit")).await;
    row("PostgreSQL + RabbitMQ", &postgres, limit);
    for db in [name.clone(), format!("{name}_limit")] {
        let _ = pg.execute_admin(&format!("DROP DATABASE {db} WITH (FORCE)")).await;
    }
}
