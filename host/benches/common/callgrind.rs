//! Instructions per poll, counted by callgrind: shared by the benchmarks that report them.
//!
//! Wall times on this VM drift by up to 2× between phases; the number of instructions a poll
//! executes (the host's and the guest's compiled code alike) does not. A benchmark re-runs its
//! own binary under `valgrind --tool=callgrind` with `ATTUNE_BENCH_COUNT=<polls>:<sensor file>`,
//! which starts that sensor from the cached artifact and polls it, twice with a different number
//! of polls, and divides the difference in instructions by the difference in polls, so the
//! start-up (engine, artifact, instantiation) cancels out.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use attune_host::sandbox::{EngineSettings, InstanceFeed, SensorEngine, SensorInstance, SensorSpec};

const REQUEST: &str = "ATTUNE_BENCH_COUNT";
/// Polls in the short and the long counted run. The first polls of an interpreter warm its
/// caches; both runs pay for them, so they cancel too.
const POLLS: (usize, usize) = (200, 1_200);

/// The counted run this process was started for, if any: polls and sensor file.
pub fn requested() -> Option<(usize, PathBuf)> {
    let request = std::env::var(REQUEST).ok()?;
    let (polls, path) =
        request.split_once(':').unwrap_or_else(|| panic!("{REQUEST}={request}: expected <polls>:<file>"));
    let polls = polls.parse().unwrap_or_else(|e| panic!("{REQUEST}={request}: polls: {e}"));
    Some((polls, PathBuf::from(path)))
}

/// The counted run itself (under callgrind): start the sensor, poll it `polls` times.
pub async fn run(settings: EngineSettings, polls: usize, path: &Path) {
    let engine = SensorEngine::new(settings).unwrap_or_else(|e| panic!("{e}"));
    let spec = Arc::new(SensorSpec::from_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    let mut sensor = SensorInstance::start(&engine, spec, BTreeMap::new(), InstanceFeed::default())
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for _ in 0..polls {
        sensor.poll().await.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// Instructions callgrind counted in a run of this binary that polls the sensor at `path`
/// `polls` times.
fn count(polls: usize, path: &Path) -> u64 {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("this benchmark's binary: {e}"));
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(&exe)
        .env(REQUEST, format!("{polls}:{}", path.display()))
        .output()
        .unwrap_or_else(|e| panic!("valgrind: {e} (instructions per poll are counted with valgrind --tool=callgrind)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "callgrind run of {} ({polls} polls) failed:\n{stderr}", path.display());
    stderr
        .lines()
        .find_map(|line| line.split_once("Collected :").map(|(_, n)| n.trim().parse::<u64>()))
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no `Collected :` line in callgrind's output:\n{stderr}"))
}

/// Machine instructions per poll of the sensor at `path`, host and guest together.
pub fn instructions_per_poll(path: &Path) -> f64 {
    // Under valgrind wasmtime sees other CPU features than natively, so it wants an artifact of
    // its own: a first run, not counted, compiles and caches it (once; minutes for Python).
    count(0, path);
    let (short, long) = POLLS;
    let (few, many) = (count(short, path), count(long, path));
    assert!(many > few, "{}: {long} polls counted {many} instructions, {short} polls {few}", path.display());
    (many - few) as f64 / (long - short) as f64
}
