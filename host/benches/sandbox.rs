//! Sandbox benchmark: poll latency under fuel and deadline, cold start from the artifact
//! cache, memory per live sensor, and the same poll done by spawning an interpreter per poll
//! (how the original Attune ran sensors).
//!
//! Run: `make bench` (or, after `make components`, `cargo bench -p attune-host --bench sandbox`).
//! Prints a Markdown table for BENCHMARKS.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_host::sandbox::SensorSpec;
use attune_host::sandbox::{EngineSettings, InstanceFeed, SensorEngine, SensorInstance};

const POLLS: usize = 20_000;
const SPAWNS: usize = 20;
const LIVE_SENSORS: usize = 100;
const COLD_STARTS: usize = 20;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn settings() -> EngineSettings {
    EngineSettings {
        cache_dir: repo().join("target/attune-cache"),
        runtimes_dir: repo().join("build/runtimes"),
        fuel_yield_interval: 1_000_000,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn millis(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

async fn start(engine: &Arc<SensorEngine>, spec: &Arc<SensorSpec>) -> SensorInstance {
    match SensorInstance::start(engine, spec.clone(), BTreeMap::new(), InstanceFeed::default()).await {
        Ok(sensor) => sensor,
        Err(e) => panic!("{}: {e}", spec.sensor_ref),
    }
}

struct Figures {
    poll_median: Duration,
    poll_p99: Duration,
    fuel_per_poll: u64,
    artifact_load: Duration,
    first_poll_ready: Duration,
    mib_per_sensor: f64,
    spawn_median: Duration,
}

async fn measure(file: &str, spawn: &[&str]) -> Figures {
    let path = repo().join("tests/fixtures/bench").join(file);
    let spec = Arc::new(SensorSpec::from_file(&path).unwrap_or_else(|e| panic!("{e}")));
    // Warm the on-disk artifact cache so every figure below is from cached artifacts.
    let engine = SensorEngine::new(settings()).unwrap_or_else(|e| panic!("{e}"));
    let mut sensor = start(&engine, &spec).await;

    let mut polls = Vec::with_capacity(POLLS);
    let mut fuel = 0;
    for _ in 0..POLLS {
        let started = Instant::now();
        let output = sensor.poll().await.unwrap_or_else(|e| panic!("{e}"));
        polls.push(started.elapsed());
        assert_eq!(output.payloads.len(), 3);
        fuel = output.fuel_used;
    }
    polls.sort();

    // Cold start: a fresh engine (empty in-memory cache) loads the artifact from disk, then
    // instantiates, loads the source and runs init.
    let mut loads = Vec::new();
    let mut ready = Vec::new();
    for _ in 0..COLD_STARTS {
        let engine = SensorEngine::new(settings()).unwrap_or_else(|e| panic!("{e}"));
        let started = Instant::now();
        engine.preload(&spec.code).await.unwrap_or_else(|e| panic!("{e}"));
        loads.push(started.elapsed());
        let started = Instant::now();
        let _sensor = start(&engine, &spec).await;
        ready.push(started.elapsed());
    }
    loads.sort();
    ready.sort();

    let before = rss_bytes();
    let mut live = Vec::with_capacity(LIVE_SENSORS);
    for _ in 0..LIVE_SENSORS {
        let mut sensor = start(&engine, &spec).await;
        sensor.poll().await.unwrap_or_else(|e| panic!("{e}"));
        live.push(sensor);
    }
    let mib_per_sensor = (rss_bytes().saturating_sub(before)) as f64 / LIVE_SENSORS as f64 / (1 << 20) as f64;
    drop(live);

    let mut spawns = Vec::new();
    for _ in 0..SPAWNS {
        let started = Instant::now();
        let out = Command::new(spawn[0]).args(&spawn[1..]).output().unwrap_or_else(|e| panic!("{}: {e}", spawn[0]));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        spawns.push(started.elapsed());
    }
    spawns.sort();

    Figures {
        poll_median: percentile(&polls, 0.5),
        poll_p99: percentile(&polls, 0.99),
        fuel_per_poll: fuel,
        artifact_load: percentile(&loads, 0.5),
        first_poll_ready: percentile(&ready, 0.5),
        mib_per_sensor,
        spawn_median: percentile(&spawns, 0.5),
    }
}

#[tokio::main]
async fn main() {
    let py_spawn = "import json\nfor i in range(3): print(json.dumps({'host': 'web-%d.prod' % i, 'status': 500 + i}))";
    let js_spawn = "for (let i = 0; i < 3; i++) console.log(JSON.stringify({host: `web-${i}.prod`, status: 500 + i}))";
    // The interpreter binary itself, not a version-manager shim in front of it.
    let python3 = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output();
    let python3 = python3.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default();
    let python = measure("three_payloads.py", &[&python3, "-c", py_spawn]).await;
    let js = measure("three_payloads.js", &["node", "-e", js_spawn]).await;

    println!("| figure (one poll returns 3 small JSON payloads) | Python | JavaScript |");
    println!("|---|---|---|");
    let row = |name: &str, f: &dyn Fn(&Figures) -> String| println!("| {name} | {} | {} |", f(&python), f(&js));
    row("poll median, fuel + deadline on", &|f| micros(f.poll_median));
    row("poll p99, fuel + deadline on", &|f| micros(f.poll_p99));
    row("fuel per poll", &|f| format!("{:.0} k", f.fuel_per_poll as f64 / 1e3));
    row("cold start: load cached artifact (median)", &|f| millis(f.artifact_load));
    row("cold start: instantiate + load source + init (median)", &|f| millis(f.first_poll_ready));
    row(&format!("memory per live sensor ({LIVE_SENSORS} instances, RSS)"), &|f| {
        format!("{:.2} MiB", f.mib_per_sensor)
    });
    row("spawning an interpreter per poll (median)", &|f| millis(f.spawn_median));
    row("spawn / sandboxed poll", &|f| format!("{:.0}×", f.spawn_median.as_secs_f64() / f.poll_median.as_secs_f64()));
}
