//! Sandbox benchmark: poll latency under fuel and deadline, cold start from the artifact
//! cache, memory per live sensor, and the same poll done by spawning an interpreter per poll
//! (how the original Attune ran sensors).
//!
//! Instructions per poll are counted by callgrind (see `common/callgrind.rs`): unlike the times,
//! they do not drift with the machine's load.
//!
//! Run: `make bench` (or, after `make components`, `cargo bench -p attune-host --bench sandbox`).
//! Prints a Markdown table for BENCHMARKS.md.

#[path = "common/callgrind.rs"]
mod callgrind;

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
const NEW_SENSORS: usize = 200;

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

/// The process's memory from `/proc/self/smaps_rollup`: resident (RSS), private (pages no other
/// mapping shares: what each instance really costs) and proportional (PSS) bytes. RSS also counts
/// the copy-on-write pages of the runtime's memory image that every instance shares.
#[derive(Debug, Clone, Copy)]
struct Memory {
    rss: u64,
    private: u64,
    pss: u64,
}

impl Memory {
    fn now() -> Self {
        let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_else(|e| panic!("smaps_rollup: {e}"));
        let field = |name: &str| {
            rollup
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map_or(0, |kb| kb * 1024)
        };
        Self { rss: field("Rss:"), private: field("Private_Clean:") + field("Private_Dirty:"), pss: field("Pss:") }
    }

    /// MiB per instance between `before` and `self`, for each of RSS, private and PSS.
    fn per_instance(self, before: Self, count: usize) -> [f64; 3] {
        let per = |after: u64, before: u64| after.saturating_sub(before) as f64 / count as f64 / (1 << 20) as f64;
        [per(self.rss, before.rss), per(self.private, before.private), per(self.pss, before.pss)]
    }
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
    instructions_per_poll: f64,
    artifact_load: Duration,
    first_poll_ready: Duration,
    new_sensor_polled: Duration,
    /// RSS, private and PSS MiB per live sensor.
    mib_per_sensor: [f64; 3],
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

    // A new sensor in a running host: the engine holds the prepared component; start, then poll.
    let mut new_sensor = Vec::new();
    for _ in 0..NEW_SENSORS {
        let started = Instant::now();
        let mut sensor = start(&engine, &spec).await;
        sensor.poll().await.unwrap_or_else(|e| panic!("{e}"));
        new_sensor.push(started.elapsed());
    }
    new_sensor.sort();

    let before = Memory::now();
    let mut live = Vec::with_capacity(LIVE_SENSORS);
    for _ in 0..LIVE_SENSORS {
        let mut sensor = start(&engine, &spec).await;
        sensor.poll().await.unwrap_or_else(|e| panic!("{e}"));
        live.push(sensor);
    }
    let mib_per_sensor = Memory::now().per_instance(before, LIVE_SENSORS);
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
        instructions_per_poll: callgrind::instructions_per_poll(&path),
        artifact_load: percentile(&loads, 0.5),
        first_poll_ready: percentile(&ready, 0.5),
        new_sensor_polled: percentile(&new_sensor, 0.5),
        mib_per_sensor,
        spawn_median: percentile(&spawns, 0.5),
    }
}

/// Medians of loading a real example sensor's source (`check`: instantiate and `load`, no
/// `init`): compiled at each start (no kept code) and from the code object kept after the first.
async fn python_source_load() -> (Duration, Duration) {
    let path = repo().join("sensors/examples_http/sensors/status_checker.py");
    let spec = SensorSpec::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
    let engine = SensorEngine::new(settings()).unwrap_or_else(|e| panic!("{e}"));
    let kept = settings().cache_dir.join("sources");
    let mut compiled = Vec::new();
    let mut from_kept = Vec::new();
    for _ in 0..COLD_STARTS {
        let _ = std::fs::remove_dir_all(&kept);
        let started = Instant::now();
        SensorInstance::check(&engine, &spec).await.unwrap_or_else(|e| panic!("{e}"));
        compiled.push(started.elapsed());
        let started = Instant::now();
        SensorInstance::check(&engine, &spec).await.unwrap_or_else(|e| panic!("{e}"));
        from_kept.push(started.elapsed());
    }
    compiled.sort();
    from_kept.sort();
    (percentile(&compiled, 0.5), percentile(&from_kept, 0.5))
}

#[tokio::main]
async fn main() {
    if let Some((polls, path)) = callgrind::requested() {
        return callgrind::run(settings(), polls, &path).await;
    }
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
    row("fuel per poll (the guest's wasm instructions)", &|f| format!("{:.0} k", f.fuel_per_poll as f64 / 1e3));
    row("instructions per poll, host + guest (callgrind)", &|f| format!("{:.0} k", f.instructions_per_poll / 1e3));
    row("cold start: load cached artifact (median)", &|f| millis(f.artifact_load));
    row("cold start: instantiate + load source + init (median)", &|f| millis(f.first_poll_ready));
    row("new sensor in a running engine: start → first poll done (median)", &|f| millis(f.new_sensor_polled));
    for (i, kind) in ["RSS", "private", "PSS"].iter().enumerate() {
        row(&format!("memory per live sensor ({LIVE_SENSORS} instances, {kind})"), &|f| {
            format!("{:.2} MiB", f.mib_per_sensor[i])
        });
    }
    let (compiled, from_kept) = python_source_load().await;
    let size = std::fs::metadata(repo().join("sensors/examples_http/sensors/status_checker.py")).map_or(0, |m| m.len());
    println!(
        "| instantiate + load a {:.1} KB Python source (the example `status_checker.py`), median: compiled / from the kept code object | {} / {} | — |",
        size as f64 / 1e3,
        millis(compiled),
        millis(from_kept)
    );
    row("spawning an interpreter per poll (median)", &|f| millis(f.spawn_median));
    row("spawn / sandboxed poll", &|f| format!("{:.0}×", f.spawn_median.as_secs_f64() / f.poll_median.as_secs_f64()));
}
