//! SDK glue benchmark: guest instructions (fuel) per poll of a sensor run through the SDK's glue
//! on the shared language runtime, beside a plain component doing the same work without the
//! SDK (built here with componentize-py / componentize-qjs against wit/sensor.wit). Fuel is a
//! deterministic count of the guest's wasm instructions, so the ratio survives a noisy machine;
//! times are printed beside it for reference only. Callgrind counts the machine instructions of
//! a poll, the host's and the guest's (see `common/callgrind.rs`), for both sides too.
//!
//! Run: `make components`, then `cargo bench -p attune-host --bench glue`. Prints a Markdown
//! table for BENCHMARKS.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

#[path = "common/callgrind.rs"]
mod callgrind;

use attune_host::sandbox::{EngineSettings, InstanceFeed, SensorEngine, SensorInstance, SensorPayload, SensorSpec};

/// Polls run and discarded first: the first polls of an interpreter warm its caches.
const WARMUP: usize = 200;
const POLLS: usize = 5_000;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures/bench").join(name)
}

fn settings() -> EngineSettings {
    EngineSettings {
        cache_dir: repo().join("target/attune-cache"),
        runtimes_dir: repo().join("build/runtimes"),
        fuel_yield_interval: 1_000_000,
    }
}

/// Runs a component build in `dir`, naming the command if it cannot start or fails. The builds
/// are not byte-for-byte reproducible and their output depends on the working directory (the
/// plain JS component built from the repository root costs ~5% more fuel per poll than one built
/// elsewhere), so every build runs in the same place.
fn build(dir: &Path, program: &Path, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        // With RUST_BACKTRACE set, componentize-py appends a Rust stack trace to its messages.
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (run `make components` first)", program.display()));
    assert!(
        out.status.success(),
        "{} {}: {}{}",
        program.display(),
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The plain components, built from their fixtures into target/bench-glue/ on every run so
/// they always match the fixtures and the toolchains the runtimes were built with.
fn build_plain_components() -> (PathBuf, PathBuf) {
    let root = repo();
    let out = root.join("target/bench-glue");
    std::fs::create_dir_all(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let wit = root.join("wit/sensor.wit");
    let (wit, fixtures) = (wit.to_string_lossy(), fixture("").to_string_lossy().into_owned());
    let python = out.join("glue_plain_py.wasm");
    build(
        &out,
        &root.join(".venv/bin/componentize-py"),
        &[
            "--quiet",
            "-d",
            &wit,
            "-w",
            "sensor",
            "componentize",
            "-p",
            &fixtures,
            "glue_plain",
            "-o",
            &python.to_string_lossy(),
        ],
    );
    let js = out.join("glue_plain_js.wasm");
    let js_source = fixture("glue_plain.js");
    build(
        &out,
        &root.join("sdk-js/node_modules/.bin/componentize-qjs"),
        &["--wit", &wit, "-n", "sensor", "--js", &js_source.to_string_lossy(), "--sync", "-o", &js.to_string_lossy()],
    );
    (python, js)
}

struct Figures {
    fuel_per_poll: f64,
    instructions_per_poll: f64,
    poll_median: Duration,
    payloads: Vec<SensorPayload>,
}

async fn measure(engine: &Arc<SensorEngine>, path: &Path) -> Figures {
    let spec = Arc::new(SensorSpec::from_file(path).unwrap_or_else(|e| panic!("{e}")));
    let feed = InstanceFeed::default();
    let mut sensor = SensorInstance::start(engine, spec.clone(), BTreeMap::new(), feed)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for _ in 0..WARMUP {
        sensor.poll().await.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    let mut fuel = 0;
    let mut times = Vec::with_capacity(POLLS);
    let mut payloads = Vec::new();
    for _ in 0..POLLS {
        let output = sensor.poll().await.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        fuel += output.fuel_used;
        times.push(output.elapsed);
        payloads = output.payloads;
    }
    times.sort();
    Figures {
        fuel_per_poll: fuel as f64 / POLLS as f64,
        instructions_per_poll: callgrind::instructions_per_poll(path),
        poll_median: times[POLLS / 2],
        payloads,
    }
}

/// Runs both sides and checks that they did the same work: the same payloads from the last poll
/// (the state counter included, so both read and wrote their key on every poll).
async fn compare(engine: &Arc<SensorEngine>, language: &str, sdk: &Path, plain: &Path) {
    let sdk = measure(engine, sdk).await;
    let plain = measure(engine, plain).await;
    assert_eq!(sdk.payloads.len(), 3, "{language}: the SDK sensor yields 3 payloads per poll");
    assert_eq!(sdk.payloads, plain.payloads, "{language}: the SDK and plain sensors differ in what they yield");
    let count = sdk.payloads[0].payload["count"].as_u64();
    assert_eq!(count, Some((WARMUP + POLLS) as u64), "{language}: the state counter counts every poll");
    println!(
        "| {language} | {:.1} k | {:.1} k | {:.3} | {:.1} k | {:.1} k | {:.3} | {:.1} µs | {:.1} µs |",
        sdk.fuel_per_poll / 1e3,
        plain.fuel_per_poll / 1e3,
        sdk.fuel_per_poll / plain.fuel_per_poll,
        sdk.instructions_per_poll / 1e3,
        plain.instructions_per_poll / 1e3,
        sdk.instructions_per_poll / plain.instructions_per_poll,
        sdk.poll_median.as_secs_f64() * 1e6,
        plain.poll_median.as_secs_f64() * 1e6,
    );
}

#[tokio::main]
async fn main() {
    if let Some((polls, path)) = callgrind::requested() {
        return callgrind::run(settings(), polls, &path).await;
    }
    let (plain_py, plain_js) = build_plain_components();
    let engine = SensorEngine::new(settings()).unwrap_or_else(|e| panic!("{e}"));
    println!(
        "| language (poll: 1 state get + set, 3 small JSON payloads) | fuel/poll, runtime + SDK glue \
         | fuel/poll, plain component | ratio | instructions/poll (callgrind), glue | instructions/poll, plain \
         | ratio | poll median, glue | poll median, plain |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    compare(&engine, "Python", &fixture("glue_sdk.py"), &plain_py).await;
    compare(&engine, "JavaScript", &fixture("glue_sdk.js"), &plain_js).await;
}
