//! Rule store benchmark: rules created one by one through the HTTP API, then read back by ref,
//! on SQLite (the embedded default) — the cost of a rule request must not grow with the number
//! of rules stored.
//!
//! Run: `cargo bench -p attune-host --bench rules` (`RULES_BENCH_COUNT`, default 10,000, is how
//! many rules are created). Prints Markdown for BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_host::api::{self, ApiState};
use attune_host::app::{App, AppConfig};
use attune_host::auth::Scope;
use attune_host::pack::Pack;
use serde_json::json;

const READS: usize = 2_000;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let count: usize = std::env::var("RULES_BENCH_COUNT").ok().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pack = dir.path().join("bench");
    std::fs::create_dir_all(pack.join("triggers")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(pack.join("pack.yaml"), "ref: bench\nversion: 1.0.0\n").unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(pack.join("triggers/t.yaml"), "ref: t\n").unwrap_or_else(|e| panic!("{e}"));
    let pack = Pack::load(&pack).unwrap_or_else(|e| panic!("{e}"));
    let url = format!("sqlite://{}", dir.path().join("attune.db").display());
    let app = Arc::new(App::start(&AppConfig::new(url), &[pack]).await.unwrap_or_else(|e| panic!("{e}")));
    let (token, _) = app.tokens.create("bench", Scope::Admin, vec![], None).await.unwrap_or_else(|e| panic!("{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
    let router = api::router(ApiState::new(app.clone()));
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::new();

    let started = Instant::now();
    let mut creates = Vec::with_capacity(count);
    for i in 0..count {
        let rule = json!({"ref": format!("bench.r{i:05}"), "trigger": "bench.t",
                          "conditions": {"field": "payload.n", "operator": "equals", "value": i},
                          "action": {"ref": "core.echo", "parameters": {"n": "{{ event.payload.n }}"}}});
        let one = Instant::now();
        let response = client
            .post(format!("{base}/api/v1/rules"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(rule.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap_or_default());
        creates.push(one.elapsed());
    }
    let total = started.elapsed();

    let mut reads = Vec::with_capacity(READS);
    for i in 0..READS {
        let rule_ref = format!("bench.r{:05}", (i * 7_919) % count);
        let one = Instant::now();
        let response = client
            .get(format!("{base}/api/v1/rules/{rule_ref}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(response.status(), 200);
        let _ = response.bytes().await;
        reads.push(one.elapsed());
    }
    creates.sort();
    reads.sort();
    let last_thousand: Duration = creates.iter().rev().take(1_000).sum();
    println!("| what | figure |\n|---|---|");
    println!("| {count} rules created one by one (`POST /api/v1/rules`, SQLite) | {:.1} s |", total.as_secs_f64());
    println!(
        "| create latency p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        percentile(&creates, 0.5),
        percentile(&creates, 0.99),
        percentile(&creates, 1.0)
    );
    println!("| slowest 1,000 creates, mean | {:.2} ms |", last_thousand.as_secs_f64() * 1e3 / 1_000.0);
    println!(
        "| `GET /api/v1/rules/{{ref}}` with {count} rules, p50 / p99 / max ({READS} reads) | {:.2} / {:.2} / {:.2} ms |",
        percentile(&reads, 0.5),
        percentile(&reads, 0.99),
        percentile(&reads, 1.0)
    );
}
