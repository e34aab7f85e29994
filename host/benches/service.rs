//! Service benchmark: `attune-host serve` as an operator runs it.
//!
//! 1. `lateness`: poll lateness of 100 healthy sensors (every 100 ms) beside hostile ones that
//!    keep hitting their fuel or memory limit, from the supervisor's
//!    `attune_sensor_poll_lateness_seconds` histogram (library: `App` + `Supervisor`).
//! 2. `rules`: rule change through the HTTP API -> first timer fire on the new schedule, and
//!    enabling a rule -> first event of the sensor it needs.
//! 3. `api`: `GET /api/v1/events` under `wrk` with 100,000 stored events, SQLite and PostgreSQL.
//! 4. `cold`: spawn of `serve` with 100 cached sensors -> `/ready`, and -> every sensor polled.
//! 5. `density`: CPU per poll (in all and by thread), memory and lateness of 40 sensors polling
//!    every second (Python, JS) and of 1,000 Python sensors polling every 10 s, each poll 3
//!    payloads that are stored and enforced, beside an idle host's CPU (library: `App` +
//!    `Supervisor`, as `serve` runs them).
//!
//! Run: `cargo bench -p attune-host --bench service` after `make components` (needs `wrk` and
//! PostgreSQL on 127.0.0.1:5432 as for the tests; `ATTUNE_TEST_POSTGRES_URL` overrides).
//! `cargo bench -p attune-host --bench service -- cold rules` runs only the named parts;
//! `SERVICE_BENCH_SECONDS` (default 30) is the length of each lateness run. Prints Markdown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_host::app::{App, AppConfig};
use attune_host::pack::Pack;
use attune_host::sandbox::SensorSpec;
use attune_host::sandbox::{EngineSettings, SensorEngine};
use attune_host::supervisor::{Supervisor, SupervisorOptions};
use attune_rules::RuleSpec;
use attune_rules::chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use reqwest::Method;
use serde_json::{Value, json};

const HEALTHY: usize = 100;
const HEALTHY_INTERVAL: Duration = Duration::from_millis(100);
const WARMUP: Duration = Duration::from_secs(5);
const ROUNDS: usize = 20;
/// How far ahead of the PUT the moved interval timer's first instant is.
const TIMER_LEAD: TimeDelta = TimeDelta::milliseconds(200);
const STORED_EVENTS: usize = 100_000;
const POST_BATCH: usize = 1_000;
const WRK: [&str; 4] = ["-t2", "-c8", "-d15s", "--latency"];
const COLD_SENSORS: usize = 100;
const RESTARTS: usize = 7;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn warm_cache() -> PathBuf {
    repo().join("target/attune-cache")
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap_or(dir)).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{e}"));
}

/// Median and max, in ms.
fn median_max(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    format!("{:.1} / {:.1} ms", ms(&samples[samples.len() / 2]), samples.last().map_or(0.0, ms))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn time_of(value: &Value) -> DateTime<Utc> {
    let text = value.as_str().unwrap_or_default();
    DateTime::parse_from_rfc3339(text).unwrap_or_else(|e| panic!("`{text}`: {e}")).to_utc()
}

fn since(later: DateTime<Utc>, earlier: DateTime<Utc>) -> Duration {
    (later - earlier).to_std().unwrap_or_default()
}

/// A running `attune-host serve`, talked to over HTTP with its admin token.
struct Server {
    child: tokio::process::Child,
    base: String,
    token: String,
    client: reqwest::Client,
    spawned: Instant,
    /// Spawn -> `GET /ready` answered 200.
    ready_after: Duration,
}

impl Server {
    async fn start(packs: &Path, data: &Path, database_url: Option<&str>, cache: &Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
        let port = port.unwrap_or_else(|e| panic!("{e}"));
        let log = std::fs::File::create(data.join("serve.log")).unwrap_or_else(|e| panic!("{e}"));
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_attune-host"));
        command.args(["serve", "--listen", &format!("127.0.0.1:{port}")]).arg("--packs").arg(packs);
        command.arg("--data-dir").arg(data).args(database_url.map(|url| ["--database-url", url]).iter().flatten());
        command.env("ATTUNE_CACHE_DIR", cache).env("ATTUNE_RUNTIMES_DIR", repo().join("build/runtimes"));
        command.stdout(Stdio::null()).stderr(log).kill_on_drop(true);
        let spawned = Instant::now();
        let child = command.spawn().unwrap_or_else(|e| panic!("spawn attune-host: {e}"));
        let (base, client) = (format!("http://127.0.0.1:{port}"), reqwest::Client::new());
        while client.get(format!("{base}/ready")).send().await.map(|r| r.status().is_success()).ok() != Some(true) {
            assert!(spawned.elapsed() < Duration::from_secs(300), "not ready; see {}/serve.log", data.display());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let ready_after = spawned.elapsed();
        let token = std::fs::read_to_string(data.join("admin.token")).unwrap_or_else(|e| panic!("admin.token: {e}"));
        Server { child, base, token: token.trim().to_string(), client, spawned, ready_after }
    }

    /// One request; panics unless 2xx. Returns the body and the round-trip time.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (String, Duration) {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let started = Instant::now();
        let response = request.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_else(|e| panic!("{path}: {e}"));
        let elapsed = started.elapsed();
        assert!(status.is_success(), "{path}: {status} {text}");
        (text, elapsed)
    }

    async fn get(&self, path: &str) -> Value {
        let text = self.call(Method::GET, path, None).await.0;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    }

    /// Polls `GET /events?trigger=..&since=..` until an event `wanted` accepts shows up.
    async fn wait_event(
        &self,
        trigger: &str,
        from: DateTime<Utc>,
        wanted: impl Fn(&Value) -> bool,
    ) -> (Value, Instant) {
        let path = format!("/api/v1/events?trigger={trigger}&since={}&limit=10", rfc3339(from));
        let started = Instant::now();
        loop {
            let page = self.get(&path).await;
            if let Some(event) = page["events"].as_array().into_iter().flatten().find(|e| wanted(e)) {
                return (event.clone(), Instant::now());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no {trigger} event: {page}");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Spawn -> every sensor has polled in this process (`attune_sensor_polls_total` ≥ 1 in
    /// `GET /metrics`; the counts in `GET /sensors` are kept in the store across restarts).
    async fn all_polled(&self, count: usize) -> Duration {
        loop {
            let metrics = self.call(Method::GET, "/metrics", None).await.0;
            let polls = sum_by(&metrics, "attune_sensor_polls_total", |l| l.get("sensor").map(|s| s.to_string()));
            if polls.values().filter(|n| **n >= 1.0).count() >= count {
                return self.spawned.elapsed();
            }
            assert!(self.spawned.elapsed() < Duration::from_secs(300), "sensors did not poll: {polls:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// SIGTERM, then waits for a clean exit.
    async fn stop(mut self) {
        let pid = self.child.id().map(|p| p.to_string()).unwrap_or_default();
        let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
        assert!(matches!(status, Ok(Ok(s)) if s.success()), "serve did not exit cleanly: {status:?}");
    }
}

// ---- 1. Hostile sensors beside healthy ones -------------------------------------------------

/// The samples of metric `name` in a Prometheus text exposition: (labels, value).
fn samples<'a>(text: &'a str, name: &str) -> Vec<(BTreeMap<&'a str, &'a str>, f64)> {
    let sample = |line: &'a str| {
        let (labels, value) = line.strip_prefix(name)?.strip_prefix('{')?.split_once("} ")?;
        let labels = labels.split(',').filter_map(|l| l.split_once('=')).map(|(k, v)| (k, v.trim_matches('"')));
        Some((labels.collect(), value.trim().parse().ok()?))
    };
    text.lines().filter_map(sample).collect()
}

/// Sum of metric `name` by the key `key` gives a sample's labels (`None` leaves it out).
fn sum_by(text: &str, name: &str, key: impl Fn(&BTreeMap<&str, &str>) -> Option<String>) -> BTreeMap<String, f64> {
    let mut sums = BTreeMap::new();
    for (labels, value) in samples(text, name) {
        if let Some(key) = key(&labels) {
            *sums.entry(key).or_default() += value;
        }
    }
    sums
}

/// The upper bound of the histogram bucket holding quantile `q`; `buckets` are cumulative
/// counts by `le`.
fn bucket_quantile(buckets: &BTreeMap<String, f64>, q: f64) -> String {
    let bound = |le: &str| if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
    let mut sorted: Vec<(f64, f64)> = buckets.iter().map(|(le, n)| (bound(le), *n)).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = sorted.last().map_or(0.0, |b| b.1);
    match sorted.iter().find(|(_, n)| *n >= q * total) {
        Some((le, _)) if le.is_finite() => format!("≤ {:.1} ms", le * 1e3),
        Some(_) => "> largest bucket".into(),
        None => "no samples".into(),
    }
}

/// `after − before`, key by key.
fn minus(after: BTreeMap<String, f64>, before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after.into_iter().map(|(k, v)| (k.clone(), v - before.get(&k).copied().unwrap_or(0.0))).collect()
}

/// The sum of `counts`, 0 when there are none (an empty `f64` sum is -0.0, printed "-0").
fn total(counts: &BTreeMap<String, f64>) -> f64 {
    counts.values().fold(0.0, |sum, n| sum + n)
}

/// CPU time (user + system) in seconds from a `/proc/.../stat` line (100 ticks/s).
fn stat_cpu_seconds(stat: &str) -> f64 {
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU time (user + system) of this process so far, in seconds.
fn cpu_seconds() -> f64 {
    stat_cpu_seconds(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// CPU seconds of this process's live threads so far, summed by thread name without its digits
/// (the numbered workers of one pool are one group): which part of the host spends the time.
fn cpu_by_thread() -> BTreeMap<String, f64> {
    let mut groups = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        let name = stat.split_once('(').and_then(|(_, rest)| rest.rsplit_once(')')).map_or("?", |(name, _)| name);
        let name = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-').to_string();
        *groups.entry(name).or_default() += stat_cpu_seconds(&stat);
    }
    groups
}

/// An app on SQLite in `dir` whose pack has the trigger `bench.tick` and the enabled rule
/// `bench.on_tick` on it (every payload an event and an enforcement), and a supervisor running
/// `specs` on it, started.
async fn supervised(dir: &Path, specs: Vec<SensorSpec>, options: SupervisorOptions) -> (Arc<App>, Arc<Supervisor>) {
    write(dir, "pack/pack.yaml", "ref: bench\nversion: 0.1.0\n");
    write(dir, "pack/triggers/tick.yaml", "ref: bench.tick\n");
    let pack = Pack::load(&dir.join("pack")).unwrap_or_else(|e| panic!("{e}"));
    let config = AppConfig::new(format!("sqlite://{}", dir.join("bench.db").display()));
    let app = Arc::new(App::start(&config, &[pack]).await.unwrap_or_else(|e| panic!("{e}")));
    // A sensor runs only while an enabled rule uses one of its triggers.
    let rule = json!({"ref": "bench.on_tick", "trigger": "bench.tick", "action": {"ref": "core.echo"}});
    app.rules.put(RuleSpec::from_json(rule).unwrap_or_else(|e| panic!("{e}"))).await.unwrap_or_else(|e| panic!("{e}"));
    let settings = EngineSettings {
        cache_dir: warm_cache(),
        runtimes_dir: repo().join("build/runtimes"),
        fuel_yield_interval: 1_000_000,
    };
    let engine = SensorEngine::new(settings).unwrap_or_else(|e| panic!("{e}"));
    let supervisor = Supervisor::new(app.clone(), engine, specs, options);
    supervisor.reconcile();
    (app, supervisor)
}

/// The fixture `file` (under tests/fixtures) as sensor `sensor_ref` on `bench.tick`.
fn fixture_sensor(file: &str, sensor_ref: String, interval: Duration) -> SensorSpec {
    let mut spec = SensorSpec::from_file(&repo().join("tests/fixtures").join(file)).unwrap_or_else(|e| panic!("{e}"));
    (spec.sensor_ref, spec.triggers, spec.poll_interval) = (sensor_ref, vec!["bench.tick".into()], interval);
    spec
}

/// The lateness histogram's buckets, poll and failure counts of the sensors `wanted` accepts.
type Figures = (BTreeMap<String, f64>, BTreeMap<String, f64>, BTreeMap<String, f64>);

fn sensor_figures(text: &str, wanted: impl Fn(&str) -> bool) -> Figures {
    let wanted = |labels: &BTreeMap<&str, &str>| labels.get("sensor").is_some_and(|s| wanted(s));
    let buckets = sum_by(text, "attune_sensor_poll_lateness_seconds_bucket", |l| {
        wanted(l).then(|| l.get("le").map(|le| le.to_string())).flatten()
    });
    let polls = sum_by(text, "attune_sensor_polls_total", |l| wanted(l).then(String::new));
    let failures =
        sum_by(text, "attune_sensor_failures_total", |l| Some(format!("{} {}", l.get("sensor")?, l.get("reason")?)));
    (buckets, polls, failures)
}

async fn lateness(label: &str, hostile: &[&str], seconds: u64) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let sensor = |file: &str, sensor_ref: String| {
        let mut spec = fixture_sensor(file, sensor_ref, HEALTHY_INTERVAL);
        if file.contains("memory_bomb") {
            // As in tests/e2e/limits.rs: filling memory costs fuel too; make memory the limit
            // that is reached first (default 64 MiB).
            (spec.limits.fuel, spec.limits.timeout_ms) = (u64::MAX / 2, 30_000);
        }
        spec
    };
    let mut specs: Vec<SensorSpec> =
        (0..HEALTHY).map(|i| sensor("js/counter.js", format!("bench.healthy{i:03}"))).collect();
    for file in hostile {
        let name = file.rsplit('/').next().unwrap_or(file).replace('.', "_");
        specs.push(sensor(file, format!("bench.hostile.{name}")));
    }
    // Hostile sensors are never quarantined and retry quickly, so they fail all run long.
    let options = SupervisorOptions {
        quarantine_after: u32::MAX,
        backoff_initial: Duration::from_millis(10),
        backoff_max: HEALTHY_INTERVAL,
    };
    let (app, supervisor) = supervised(dir.path(), specs, options).await;
    let figures = |text: &str| sensor_figures(text, |s| s.starts_with("bench.healthy"));
    tokio::time::sleep(WARMUP).await;
    let (before, cpu) = (figures(&app.metrics.render()), cpu_seconds());
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (after, cpu) = (figures(&app.metrics.render()), (cpu_seconds() - cpu) / seconds as f64);
    supervisor.stop_all(Duration::from_secs(5)).await;

    let buckets = minus(after.0, &before.0);
    let polls = total(&minus(after.1, &before.1));
    let failures = minus(after.2, &before.2);
    let healthy_failures: u64 =
        failures.iter().filter(|(k, _)| k.starts_with("bench.healthy")).map(|(_, n)| *n as u64).sum();
    let hostile_failures: Vec<String> = failures
        .iter()
        .filter_map(|(key, n)| {
            let (sensor, reason) = key.strip_prefix("bench.hostile.")?.split_once(' ')?;
            Some(format!("{sensor}: {n:.0} {reason}"))
        })
        .collect();
    println!(
        "| {label} | {polls:.0} | {:.0} | {} | {} | {healthy_failures} | {} | {cpu:.2} | {} |",
        buckets.get("+Inf").copied().unwrap_or(0.0),
        bucket_quantile(&buckets, 0.5),
        bucket_quantile(&buckets, 0.99),
        if hostile_failures.is_empty() { "–".into() } else { hostile_failures.join("; ") },
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').next().unwrap_or("?"),
    );
    drop(supervisor);
    if let Ok(app) = Arc::try_unwrap(app) {
        app.shutdown().await;
    }
}

// ---- 5. Cost per poll and density ------------------------------------------------------------

/// Private and proportional memory of this process, in MiB (`/proc/self/smaps_rollup`).
fn private_and_pss_mib() -> (f64, f64) {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    let kb = |name: &str| -> f64 {
        rollup
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            .sum()
    };
    ((kb("Private_Clean:") + kb("Private_Dirty:")) / 1024.0, kb("Pss:") / 1024.0)
}

/// `count` sensors of `file` (3 payloads a poll) every `interval`, each payload an event and an
/// enforcement, measured for `seconds` after every sensor polled once and a full interval more:
/// this process's CPU per poll (in all and by thread) and share of a core, its private memory
/// (and what the sensors added to it), and poll lateness. With no sensors: what an idle host
/// costs (lease renewals, the relay's and the epoch ticker's wake-ups).
async fn density(label: &str, file: &str, count: usize, interval: Duration, seconds: u64) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let specs = (0..count).map(|i| fixture_sensor(file, format!("bench.s{i:04}"), interval)).collect();
    let before_sensors = private_and_pss_mib().0;
    let (app, supervisor) = supervised(dir.path(), specs, SupervisorOptions::default()).await;
    let ours = |s: &str| s.starts_with("bench.s");
    let started = Instant::now();
    loop {
        let polled = sum_by(&app.metrics.render(), "attune_sensor_polls_total", |l| {
            l.get("sensor").filter(|s| ours(s)).map(|s| s.to_string())
        });
        if polled.len() == count {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{} of {count} sensors polled", polled.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(interval).await;
    // A sensor whose owner changed restarted (its lease lapsed, say): none should in the window.
    let changes = |text: &str| sum_by(text, "attune_ownership_changes_total", |_| Some(String::new()));
    let (text, cpu, threads) = (app.metrics.render(), cpu_seconds(), cpu_by_thread());
    let (before, changes_before) = (sensor_figures(&text, ours), changes(&text));
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let (text, cpu, threads) = (app.metrics.render(), cpu_seconds() - cpu, minus(cpu_by_thread(), &threads));
    let (after, changes) = (sensor_figures(&text, ours), minus(changes(&text), &changes_before));
    let (private, pss) = private_and_pss_mib();
    supervisor.stop_all(Duration::from_secs(5)).await;
    let buckets = minus(after.0, &before.0);
    let polls = total(&minus(after.1, &before.1));
    let failures: f64 = minus(after.2, &before.2).values().sum::<f64>().max(0.0);
    let changes = total(&changes);
    // Per poll, or per second with no sensors polling.
    let (per, unit) = if polls > 0.0 { (polls, "µs") } else { (seconds as f64, "µs/s") };
    let mut threads: Vec<(String, f64)> = threads.into_iter().filter(|(_, cpu)| *cpu > 0.0).collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    let threads: Vec<String> = threads.iter().map(|(name, cpu)| format!("{name} {:.0}", cpu / per * 1e6)).collect();
    println!(
        "| {label} | {polls:.0} ({failures:.0} failed, {changes:.0} ownership changes) | {:.0} {unit} ({}) | {:.1} % | {private:.0} MiB ({}) / {pss:.0} MiB | {} | {} | {} |",
        cpu / per * 1e6,
        threads.join(", "),
        cpu / seconds as f64 * 100.0,
        match count {
            0 => "no sensors".to_string(),
            _ => format!("{:.2} MiB a sensor", (private - before_sensors) / count as f64),
        },
        bucket_quantile(&buckets, 0.5),
        bucket_quantile(&buckets, 0.99),
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split(' ').next().unwrap_or("?"),
    );
    drop(supervisor);
    if let Ok(app) = Arc::try_unwrap(app) {
        app.shutdown().await;
    }
}

// ---- 2. Rule change -> first fire / first event ----------------------------------------------

/// One rule change: (request round trip, event created − planned, event visible − planned,
/// request returned → event visible). For a sensor the planned instant is when the request left.
type Round = [Duration; 4];

/// Sends a change and waits for the event of `trigger` that `wanted` accepts.
async fn change(
    server: &Server,
    (method, path, body): (Method, &str, Option<Value>),
    planned: DateTime<Utc>,
    trigger: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Round {
    let sent = Utc::now();
    let (_, rtt) = server.call(method, path, body).await;
    let returned = Instant::now();
    let (event, seen) = server.wait_event(trigger, sent, wanted).await;
    let visible = Utc::now() - (Instant::now() - seen);
    [rtt, since(time_of(&event["created_at"]), planned), since(visible, planned), seen - returned]
}

async fn rule_changes() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let pack = dir.path().join("packs/svc");
    write(&pack, "pack.yaml", "ref: svc\nversion: 0.1.0\n");
    write(&pack, "triggers/tick.yaml", "ref: svc.tick\n");
    write(&pack, "sensors/ticker.js", "export function* poll(config) { yield { at: Date.now() }; }\n");
    // One poll at start, then an hour's sleep: only the first poll after the rule change counts.
    let manifest =
        "ref: svc.ticker\ntriggers: [svc.tick]\nruntime: javascript\nentry: ticker.js\npoll_interval: 3600\n";
    write(&pack, "sensors/ticker.yaml", manifest);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(&dir.path().join("packs"), &data, None, &warm_cache()).await;

    let action = json!({"ref": "core.echo"});
    let far = rfc3339(Utc::now() + TimeDelta::days(1));
    for rule in [
        json!({"ref": "svc.interval", "trigger": "core.intervaltimer", "trigger_params": {"interval": 3600}, "action": action}),
        json!({"ref": "svc.once", "trigger": "core.datetimetimer", "trigger_params": {"fire_at": far}, "action": action}),
        json!({"ref": "svc.on_tick", "trigger": "svc.tick", "enabled": false, "action": action}),
    ] {
        server.call(Method::POST, "/api/v1/rules", Some(rule)).await;
    }

    let mut rows: [Vec<Round>; 3] = Default::default();
    // Round 0 is a warm-up (the first sensor start loads the runtime into the engine); not counted.
    for round in 0..=ROUNDS {
        // Interval timer moved to a new anchor TIMER_LEAD ahead: its first instant is the anchor.
        let planned = Utc::now() + TIMER_LEAD;
        let at = rfc3339(planned);
        let params = json!({"interval": 3600, "anchor": at});
        let body = json!({"trigger": "core.intervaltimer", "trigger_params": params, "action": action});
        let request = (Method::PUT, "/api/v1/rules/svc.interval", Some(body));
        let interval =
            change(&server, request, time_of(&json!(at)), "core.intervaltimer", |e| e["payload"]["scheduled_at"] == at)
                .await;

        // One-shot moved to now (misfire fire_once): it fires as soon as the change is applied.
        let at = rfc3339(Utc::now());
        let params = json!({"fire_at": at, "misfire": "fire_once"});
        let body = json!({"trigger": "core.datetimetimer", "trigger_params": params, "action": action});
        let request = (Method::PUT, "/api/v1/rules/svc.once", Some(body));
        let once =
            change(&server, request, time_of(&json!(at)), "core.datetimetimer", |e| e["payload"]["fire_at"] == at)
                .await;

        // Enabling the rule on the sensor's trigger starts the sensor; it polls at once.
        let request = (Method::POST, "/api/v1/rules/svc.on_tick/enable", None);
        let enable = change(&server, request, Utc::now(), "svc.tick", |_| true).await;
        server.call(Method::POST, "/api/v1/rules/svc.on_tick/disable", None).await;
        while server.get("/api/v1/sensors").await["sensors"][0]["state"] != "idle" {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if round > 0 {
            for (row, figures) in rows.iter_mut().zip([interval, once, enable]) {
                row.push(figures);
            }
        }
    }
    server.stop().await;

    println!(
        "| change ({ROUNDS} rounds; median / max) | request round trip | event created − planned instant | event visible in GET /events − planned instant | request returned → event visible |"
    );
    println!("|---|---|---|---|---|");
    let names = [
        format!("PUT interval timer, new anchor {} ms ahead", TIMER_LEAD.num_milliseconds()),
        "PUT one-shot timer, fire_at = now (misfire: fire_once)".to_string(),
        "POST enable on a sensor's trigger → sensor's first event (planned = request sent)".to_string(),
    ];
    for (name, rounds) in names.iter().zip(rows) {
        let column = |i: usize| median_max(rounds.iter().map(|r| r[i]).collect());
        println!("| {name} | {} | {} | {} | {} |", column(0), column(1), column(2), column(3));
    }
}

// ---- 3. GET /api/v1/events under load ----------------------------------------------------------

/// `wrk` against `url`: (requests/s, p50, p99) as printed by `--latency`.
fn wrk(url: &str, token: &str) -> (f64, String, String) {
    let output = std::process::Command::new("wrk")
        .args(WRK)
        .args(["-H", &format!("Authorization: Bearer {token}"), url])
        .output()
        .unwrap_or_else(|e| panic!("wrk (apt-get install -y wrk): {e}"));
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success() && !text.contains("Non-2xx"), "wrk {url}:\n{text}");
    let field = |prefix: &str| {
        let line = text.lines().map(str::trim).find(|l| l.starts_with(prefix));
        line.and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_else(|| panic!("no `{prefix}` in:\n{text}"))
            .to_string()
    };
    (field("Requests/sec:").parse().unwrap_or(0.0), field("50%"), field("99%"))
}

async fn api_load(label: &str, database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let packs = dir.path().join("packs");
    write(&packs, "load/pack.yaml", "ref: load\nversion: 0.1.0\n");
    write(&packs, "load/triggers/a.yaml", "ref: load.a\n");
    write(&packs, "load/triggers/b.yaml", "ref: load.b\n");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
    let server = Server::start(&packs, &data, database_url, &warm_cache()).await;

    // Half the events on each trigger; `since` is when the second half started.
    let started = Instant::now();
    let mut middle = Utc::now();
    for batch in 0..STORED_EVENTS / POST_BATCH {
        if batch == STORED_EVENTS / POST_BATCH / 2 {
            middle = Utc::now();
        }
        let events: Vec<Value> = (0..POST_BATCH)
            .map(|i| {
                let n = batch * POST_BATCH + i;
                let trigger = if n.is_multiple_of(2) { "load.a" } else { "load.b" };
                json!({"trigger": trigger, "payload": {"n": n, "host": format!("web-{}.prod", n % 10), "status": 503}})
            })
            .collect();
        server.call(Method::POST, "/api/v1/events", Some(json!(events))).await;
    }
    let fill = STORED_EVENTS as f64 / started.elapsed().as_secs_f64();
    // The load runs once the relay has published every event (outbox backlog 0).
    let stored = Instant::now();
    loop {
        let metrics = server.call(Method::GET, "/metrics", None).await.0;
        let backlog = metrics.lines().find_map(|l| l.strip_prefix("attune_outbox_backlog ")).map(str::trim);
        if backlog == Some("0") {
            break;
        }
        assert!(stored.elapsed() < Duration::from_secs(300), "outbox backlog {backlog:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained = stored.elapsed().as_secs_f64();
    for (query, path) in [
        ("default page (newest 100)", "/api/v1/events".to_string()),
        ("trigger + since (100 of 25,000)", format!("/api/v1/events?trigger=load.a&since={}", rfc3339(middle))),
    ] {
        let (rps, p50, p99) = wrk(&format!("{}{path}", server.base), &server.token);
        println!(
            "| {label} | {query} | {rps:.0} | {p50} | {p99} | {fill:.0} events/s; outbox empty {drained:.1} s later |"
        );
    }
    server.stop().await;
}

async fn api() {
    println!(
        "| store | GET /api/v1/events, {STORED_EVENTS} stored | requests/s | p50 | p99 | filled through POST /api/v1/events ({POST_BATCH} per request) |"
    );
    println!("|---|---|---|---|---|---|");
    api_load("SQLite", None).await;

    let admin = std::env::var("ATTUNE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("attune_bench_{}", uuid::Uuid::now_v7().simple());
    let pg =
        attune_host::store::PgStore::connect(&admin).await.unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
    pg.execute_admin(&format!("CREATE DATABASE {name}")).await.unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}/{name}", admin.rsplit_once('/').map_or(admin.as_str(), |(server, _)| server));
    api_load("PostgreSQL", Some(&url)).await;
    let _ = pg.execute_admin(&format!("DROP DATABASE {name} WITH (FORCE)")).await;
}

// ---- 4. Cold start -----------------------------------------------------------------------------

/// A pack of `count` sensors, each its own source file, trigger and rule.
fn cold_pack(packs: &Path, runtime: &str) {
    let pack = packs.join("cold");
    write(&pack, "pack.yaml", "ref: cold\nversion: 0.1.0\n");
    for i in 0..COLD_SENSORS {
        let (source, ext) = match runtime {
            "python" => (format!("# sensor {i}\ndef poll(config):\n    return [{{\"sensor\": {i}}}]\n"), "py"),
            _ => (format!("// sensor {i}\nexport function* poll(config) {{ yield {{ sensor: {i} }}; }}\n"), "js"),
        };
        write(&pack, &format!("sensors/s{i:03}.{ext}"), &source);
        let manifest = format!(
            "ref: cold.s{i:03}\ntriggers: [cold.t{i:03}]\nruntime: {runtime}\nentry: s{i:03}.{ext}\npoll_interval: 10\n"
        );
        write(&pack, &format!("sensors/s{i:03}.yaml"), &manifest);
        write(&pack, &format!("triggers/t{i:03}.yaml"), &format!("ref: cold.t{i:03}\n"));
        let rule = format!("ref: cold.r{i:03}\ntrigger: cold.t{i:03}\naction: {{ref: core.echo}}\n");
        write(&pack, &format!("rules/r{i:03}.yaml"), &rule);
    }
}

async fn cold_start(label: &str, runtime: &str) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let (packs, data, cache) = (dir.path().join("packs"), dir.path().join("data"), dir.path().join("cache"));
    cold_pack(&packs, runtime);
    std::fs::create_dir_all(&data).unwrap_or_else(|e| panic!("{e}"));
    // First start: empty artifact cache and database (compiles the runtime, installs the rules).
    let server = Server::start(&packs, &data, None, &cache).await;
    let first = (server.ready_after, server.all_polled(COLD_SENSORS).await);
    server.stop().await;
    let (mut ready, mut polled) = (Vec::new(), Vec::new());
    for _ in 0..RESTARTS {
        let server = Server::start(&packs, &data, None, &cache).await;
        ready.push(server.ready_after);
        polled.push(server.all_polled(COLD_SENSORS).await);
        server.stop().await;
    }
    let s = |d: Duration| format!("{:.2} s", d.as_secs_f64());
    println!("| {label} | {} | {} | {} / {} |", median_max(ready), median_max(polled), s(first.0), s(first.1));
}

#[tokio::main]
async fn main() {
    let parts: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let run = |part: &str| parts.is_empty() || parts.iter().any(|p| p == part);
    if run("cold") {
        println!(
            "| {COLD_SENSORS} sensors, cached artifacts ({RESTARTS} restarts; median / max) | spawn → GET /ready 200 | spawn → every sensor polls ≥ 1 | first start, empty cache: ready / all polled |"
        );
        println!("|---|---|---|---|");
        cold_start("JavaScript (plain source, QuickJS runtime)", "javascript").await;
        cold_start("Python (plain source, CPython runtime)", "python").await;
        println!();
    }
    if run("rules") {
        rule_changes().await;
        println!();
    }
    if run("api") {
        api().await;
        println!();
    }
    if run("density") {
        let seconds = std::env::var("SERVICE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
        println!(
            "| sensors (3 payloads a poll, each an event and an enforcement; SQLite) | polls in {seconds} s | CPU of this process per poll (by thread) | share of a core | private / PSS memory of this process | lateness p50 (bucket upper bound) | p99 | load average (1 min) |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        let second = Duration::from_secs(1);
        density("no sensors (an idle host)", "bench/three_payloads.py", 0, second, seconds).await;
        density("40 Python, every 1 s", "bench/three_payloads.py", 40, second, seconds).await;
        density("40 JavaScript, every 1 s", "bench/three_payloads.js", 40, second, seconds).await;
        density("1,000 Python, every 10 s", "bench/three_payloads.py", 1_000, second * 10, seconds).await;
        println!();
    }
    if run("lateness") {
        let seconds = std::env::var("SERVICE_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
        println!(
            "| {HEALTHY} healthy sensors (counter.js, every {} ms) beside | healthy polls in {seconds} s | lateness samples | lateness p50 (bucket upper bound) | p99 (bucket upper bound) | healthy failures | hostile failures in {seconds} s (reason) | CPU of this process (cores) | load average (1 min) |",
            HEALTHY_INTERVAL.as_millis()
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        lateness("nothing (baseline)", &[], seconds).await;
        lateness("JS busy loop + JS memory bomb", &["js/busy_loop.js", "js/memory_bomb.js"], seconds).await;
        lateness("Python busy loop + Python memory bomb", &["python/busy_loop.py", "python/memory_bomb.py"], seconds)
            .await;
    }
}
