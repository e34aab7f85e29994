//! Several hosts (spec section 7) as real processes, for the cluster tests (tests/e2e/cluster.rs)
//! and the failover benchmark (host/benches/failover.rs): N `attune-host serve` on one
//! PostgreSQL database and one RabbitMQ exchange of their own, sharing a generated pack of
//! [`SENSORS`] JavaScript counter sensors (one trigger and one rule each, so every sensor is
//! wanted; all run the one `counter.js`, compiled once) and a 1 s interval timer rule. Hosts are
//! killed with SIGKILL, frozen with SIGSTOP, stopped with SIGTERM and joined while the work runs;
//! ownership is read through the HTTP API (`GET /sensors`, `GET /timers`, `GET /hosts`),
//! exactness from the `events` table: each counter's stored `n` are exactly 1..=k (none lost,
//! none twice: a stale owner's write was refused), no planned timer instant stored twice.
//!
//! What comes from the caller's own support code is passed in: the binary and its directories
//! ([`Setup`]) and a fresh, empty database's URL ([`Cluster::new`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::{amqp_url, unique_name};

/// The generated pack's ref.
pub const PACK: &str = "cluster";
/// Counter sensors in the pack, `cluster.s00` ..
pub const SENSORS: usize = 30;
/// Their poll interval, seconds.
const POLL_INTERVAL: &str = "0.2";
/// The interval timer rule (every second).
pub const TIMER_RULE: &str = "cluster.every";
/// A host's lease (spec: renewed every second, lasting 3 s).
pub const LEASE: Duration = Duration::from_secs(3);
/// Most/least loaded live host, at most.
pub const MAX_SPREAD: f64 = 1.5;
/// How often conditions are polled by default ([`Cluster::tick`] for a cluster's own waits).
pub const TICK: Duration = Duration::from_millis(75);
/// From spawn to `/ready`, at most (the first start may compile the counter component).
const READY_LIMIT: Duration = Duration::from_secs(60);

/// One cluster at a time in a process: each runs three or four hosts of 30 sensors and measures
/// takeover times, which two clusters sharing two cores would blur.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Owner (host id, `None`: unowned) of each item, keyed as the events' `source` column names
/// it: `sensor:cluster.s00` .. and `timer:cluster.every`.
pub type Owners = BTreeMap<String, Option<String>>;

/// How `attune-host` is run, and the sensor source every sensor of the pack runs.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The `attune-host` binary.
    pub binary: PathBuf,
    /// Its `ATTUNE_CACHE_DIR` (compiled components, shared by every host).
    pub cache_dir: PathBuf,
    /// Its `ATTUNE_RUNTIMES_DIR`.
    pub runtimes_dir: PathBuf,
    /// `counter.js` (tests/fixtures/js/counter.js): yields `{n: 1}`, `{n: 2}`, .. from its state.
    pub counter_js: PathBuf,
}

impl Setup {
    /// `attune-host` with the cache and runtimes, and no other `ATTUNE_*` of the caller's
    /// environment: only what the caller then gives it.
    pub fn command(&self) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.binary);
        for (key, _) in std::env::vars() {
            if key.starts_with("ATTUNE_") {
                command.env_remove(key);
            }
        }
        command
            .env("ATTUNE_CACHE_DIR", &self.cache_dir)
            .env("ATTUNE_RUNTIMES_DIR", &self.runtimes_dir)
            .env("NO_COLOR", "1");
        command
    }
}

pub fn sensor_ref(i: usize) -> String {
    format!("{PACK}.s{i:02}")
}

pub fn sensor_item(i: usize) -> String {
    format!("sensor:{}", sensor_ref(i))
}

pub fn timer_item() -> String {
    format!("timer:{TIMER_RULE}")
}

/// Every item the cluster must own: the sensors, then the timer.
pub fn all_items() -> Vec<String> {
    (0..SENSORS).map(sensor_item).chain([timer_item()]).collect()
}

/// The items `owners` gives to host `id`.
pub fn owned_by(owners: &Owners, id: &str) -> Vec<String> {
    owners.iter().filter(|(_, o)| o.as_deref() == Some(id)).map(|(item, _)| item.clone()).collect()
}

/// The pack: `triggers/tNN.yaml`, `sensors/sNN.yaml` (all with `entry: counter.js`),
/// `rules/on_tNN.yaml`, and `rules/every.yaml` (the timer).
pub fn write_pack(packs: &Path, counter_js: &Path) {
    let mut files = vec![(
        "pack.yaml".to_string(),
        format!("ref: {PACK}\nversion: 1.0.0\ndescription: {SENSORS} counters for the cluster tests\n"),
    )];
    for i in 0..SENSORS {
        files.push((
            format!("triggers/t{i:02}.yaml"),
            format!(
                "ref: t{i:02}\npayload_schema: {{type: object, required: [n], properties: {{n: {{type: integer}}}}}}\n"
            ),
        ));
        files.push((
            format!("sensors/s{i:02}.yaml"),
            format!(
                "ref: s{i:02}\ntriggers: [{PACK}.t{i:02}]\nruntime: javascript\nentry: counter.js\npoll_interval: {POLL_INTERVAL}\n"
            ),
        ));
        files.push((
            format!("rules/on_t{i:02}.yaml"),
            format!("ref: {PACK}.on_t{i:02}\ntrigger: {PACK}.t{i:02}\naction: {{ref: core.noop}}\n"),
        ));
    }
    files.push((
        "rules/every.yaml".to_string(),
        format!(
            "ref: {TIMER_RULE}\ntrigger: core.intervaltimer\ntrigger_params: {{interval: 1, unit: seconds}}\naction: {{ref: core.noop}}\n"
        ),
    ));
    let dir = packs.join(PACK);
    for (rel, text) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    std::fs::copy(counter_js, dir.join("sensors/counter.js")).unwrap();
}

/// The pack's rules: one per trigger, and the timer.
pub fn pack_rules() -> Vec<String> {
    (0..SENSORS).map(|i| format!("{PACK}.on_t{i:02}")).chain([TIMER_RULE.to_string()]).collect()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What one `attune-host serve` is started with.
#[derive(Debug)]
pub struct Launch<'a> {
    pub setup: &'a Setup,
    pub port: u16,
    pub packs: &'a Path,
    pub data: &'a Path,
    pub database: &'a str,
    pub amqp: Option<&'a str>,
    pub exchange: Option<&'a str>,
    pub host_id: Option<&'a str>,
}

impl Launch<'_> {
    /// Spawns the process (killed when dropped); its stderr is appended to `<data>/serve.log`.
    pub fn spawn(&self) -> tokio::process::Child {
        std::fs::create_dir_all(self.data).unwrap();
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.data.join("serve.log")).unwrap();
        let mut command = self.setup.command();
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port), "--database-url", self.database])
            .arg("--packs")
            .arg(self.packs)
            .arg("--data-dir")
            .arg(self.data)
            .env("ATTUNE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        if let Some(url) = self.amqp {
            command.args(["--amqp-url", url]);
        }
        if let Some(exchange) = self.exchange {
            command.args(["--amqp-exchange", exchange]);
        }
        if let Some(id) = self.host_id {
            command.args(["--host-id", id]);
        }
        command.spawn().unwrap()
    }
}

/// The last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = log.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Waits until the process on `port` answers `GET /ready` with 200; panics (with its log) when
/// it exits first or takes longer than [`READY_LIMIT`]. Returns how long it took.
pub async fn wait_ready(name: &str, child: &mut tokio::process::Child, port: u16, log: &Path) -> Duration {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let started = Instant::now();
    loop {
        let ready = client.get(format!("http://127.0.0.1:{port}/ready")).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            return started.elapsed();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{name} exited ({status}) before it was ready; its log ends:\n{}", tail(log, 30));
        }
        assert!(
            started.elapsed() < READY_LIMIT,
            "{name} not ready in {READY_LIMIT:?}; its log ends:\n{}",
            tail(log, 30)
        );
        tokio::time::sleep(TICK).await;
    }
}

/// Polls `probe` every [`TICK`] until it answers `Ok`, at most `limit` (see [`poll_until`]).
pub async fn wait_until<T>(
    what: &str,
    limit: Duration,
    probe: impl AsyncFnMut() -> Result<T, String>,
) -> Result<(T, Instant), String> {
    poll_until(what, limit, TICK, probe).await
}

/// Polls `probe` every `every` until it answers `Ok`, at most `limit`. `Err` carries what was
/// seen, for the failure message. Returns the value and the instant it was seen.
pub async fn poll_until<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> Result<(T, Instant), String> {
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return Ok((value, Instant::now())),
            Err(seen) if started.elapsed() >= limit => {
                return Err(format!("{what}: not within {limit:?}; last seen: {seen}"));
            }
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// A list answer's items: `items`, or the older `legacy` key.
pub fn items_of<'a>(doc: &'a Value, legacy: &str) -> Result<&'a Vec<Value>, String> {
    doc["items"]
        .as_array()
        .or_else(|| doc[legacy].as_array())
        .ok_or_else(|| format!("no `items` array in {}", short(doc)))
}

/// A JSON document cut to 300 characters, for messages.
pub fn short(doc: &Value) -> String {
    let text = doc.to_string();
    match text.char_indices().nth(300) {
        Some((at, _)) => format!("{}..", &text[..at]),
        None => text,
    }
}

/// The sum of every sample of `name` (all label sets) in a Prometheus text page.
pub fn metric_sum(page: &str, name: &str) -> Option<f64> {
    let samples: Vec<f64> = page
        .lines()
        .filter(|line| line.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|line| line.rsplit(' ').next()?.parse().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostState {
    Running,
    /// SIGSTOP: alive but frozen; not a live owner, its API does not answer.
    Stopped,
    /// SIGTERM sent, not exited yet: not a live owner.
    Terminating,
}

/// One `serve` process of the cluster.
#[derive(Debug)]
pub struct Host {
    pub id: String,
    pub port: u16,
    child: tokio::process::Child,
    state: HostState,
}

/// Stored events of the cluster's sensors and timer, checked for exactness.
#[derive(Debug)]
pub struct Exact {
    /// Events (= highest `n`) per sensor.
    pub per_sensor: BTreeMap<String, usize>,
    /// Timer fires.
    pub fires: usize,
}

impl Exact {
    pub fn events(&self) -> usize {
        self.per_sensor.values().sum()
    }
}

/// N `attune-host serve` on one fresh PostgreSQL database and one RabbitMQ exchange of their
/// own, sharing one pack. Host `i` has id `h<i>`, its own data dir `<root>/h<i>` (log in
/// `serve.log` there) and port. Every process is killed when the cluster is dropped.
#[derive(Debug)]
pub struct Cluster {
    /// First, so processes are killed before their directories go.
    hosts: BTreeMap<usize, Host>,
    pub setup: Setup,
    pub database: String,
    /// What the hosts connect to, when not `database` itself (a proxy in front of it).
    pub hosts_database: Option<String>,
    pub exchange: String,
    pub pool: PgPool,
    /// How often the cluster's own waits poll ([`TICK`] unless changed).
    pub tick: Duration,
    client: reqwest::Client,
    token: tokio::sync::OnceCell<String>,
    pub root: tempfile::TempDir,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// On `database` (fresh and empty: no migration yet), with a unique exchange and the pack;
    /// no host yet. Waits for any other cluster of this process to be dropped first.
    pub async fn new(setup: Setup, database: String) -> Self {
        let serial = SERIAL.lock().await;
        let pool = PgPoolOptions::new().max_connections(2).connect(&database).await.unwrap();
        let root = tempfile::tempdir().unwrap();
        write_pack(&root.path().join("packs"), &setup.counter_js);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        Cluster {
            hosts: BTreeMap::new(),
            setup,
            database,
            hosts_database: None,
            exchange: unique_name(),
            pool,
            tick: TICK,
            client,
            token: tokio::sync::OnceCell::new(),
            root,
            _serial: serial,
        }
    }

    pub fn id(i: usize) -> String {
        format!("h{i}")
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.root.path().join(Self::id(i))
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.data_dir(i).join("serve.log")
    }

    pub fn packs(&self) -> PathBuf {
        self.root.path().join("packs")
    }

    /// Spawns a `serve` on the cluster's database, exchange and packs, with data dir `data` and
    /// id `id`, not one of its hosts (not waiting for it): its port and process.
    pub fn spawn_outside(&self, data: &Path, id: &str) -> (u16, tokio::process::Child) {
        let (port, packs, amqp) = (free_port(), self.packs(), amqp_url());
        let child = Launch {
            setup: &self.setup,
            port,
            packs: &packs,
            data,
            database: self.hosts_database.as_deref().unwrap_or(&self.database),
            amqp: Some(&amqp),
            exchange: Some(&self.exchange),
            host_id: Some(id),
        }
        .spawn();
        (port, child)
    }

    /// Spawns host `i` (not waiting for it).
    pub fn spawn(&mut self, i: usize) {
        assert!(!self.hosts.contains_key(&i), "h{i} runs already");
        let id = Self::id(i);
        let (port, child) = self.spawn_outside(&self.data_dir(i), &id);
        self.hosts.insert(i, Host { id, port, child, state: HostState::Running });
    }

    pub async fn wait_ready(&mut self, i: usize) -> Duration {
        let log = self.log_path(i);
        let host = self.hosts.get_mut(&i).unwrap();
        wait_ready(&host.id, &mut host.child, host.port, &log).await
    }

    /// Starts host `i` and waits until it is ready; returns how long that took.
    pub async fn start(&mut self, i: usize) -> Duration {
        self.spawn(i);
        self.wait_ready(i).await
    }

    /// Starts hosts `0..n` together and waits until all are ready.
    pub async fn start_all(&mut self, n: usize) {
        for i in 0..n {
            self.spawn(i);
        }
        for i in 0..n {
            self.wait_ready(i).await;
        }
    }

    pub fn host(&self, i: usize) -> &Host {
        self.hosts.get(&i).unwrap_or_else(|| panic!("h{i} is not running"))
    }

    pub fn index_of(&self, id: &str) -> usize {
        self.hosts.iter().find(|(_, h)| h.id == id).map(|(i, _)| *i).unwrap_or_else(|| panic!("no host {id}"))
    }

    /// Indexes of the hosts running (not stopped, not terminating).
    pub fn live_indices(&self) -> Vec<usize> {
        self.hosts.iter().filter(|(_, h)| h.state == HostState::Running).map(|(i, _)| *i).collect()
    }

    /// Ids of the hosts running: the live owners.
    pub fn live(&self) -> BTreeSet<String> {
        self.live_indices().into_iter().map(|i| self.host(i).id.clone()).collect()
    }

    fn signal(&self, i: usize, signal: &str) -> Instant {
        let pid = self.host(i).child.id().expect("not reaped").to_string();
        let sent = Instant::now();
        assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success(), "kill {signal}");
        sent
    }

    /// SIGKILL; waits until the process is gone. Returns when the signal was sent.
    pub async fn kill9(&mut self, i: usize) -> Instant {
        let sent = self.signal(i, "-KILL");
        let mut host = self.hosts.remove(&i).unwrap();
        let status = host.child.wait().await.unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status}");
        sent
    }

    /// SIGSTOP: the process freezes (its lease is no longer renewed).
    pub fn stop(&mut self, i: usize) -> Instant {
        let sent = self.signal(i, "-STOP");
        self.hosts.get_mut(&i).unwrap().state = HostState::Stopped;
        sent
    }

    /// SIGCONT after [`stop`](Self::stop).
    pub fn cont(&mut self, i: usize) -> Instant {
        let sent = self.signal(i, "-CONT");
        self.hosts.get_mut(&i).unwrap().state = HostState::Running;
        sent
    }

    /// SIGTERM, not waiting for the exit (see [`wait_exit`](Self::wait_exit)).
    pub fn terminate(&mut self, i: usize) -> Instant {
        let sent = self.signal(i, "-TERM");
        self.hosts.get_mut(&i).unwrap().state = HostState::Terminating;
        sent
    }

    /// Waits until host `i` exits, at most `limit`.
    pub async fn wait_exit(&mut self, i: usize, limit: Duration) -> ExitStatus {
        let mut host = self.hosts.remove(&i).unwrap();
        match tokio::time::timeout(limit, host.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => {
                panic!("{} did not exit within {limit:?}; its log ends:\n{}", host.id, tail(&self.log_path(i), 30))
            }
        }
    }

    /// Of every host's log (also of the gone ones), for failure messages: its last warnings and
    /// errors, and its last lines.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let Ok(dirs) = std::fs::read_dir(self.root.path()) else { return out };
        let mut dirs: Vec<PathBuf> = dirs.filter_map(|d| Some(d.ok()?.path())).collect();
        dirs.sort();
        for dir in dirs.iter().filter(|d| d.join("serve.log").is_file()) {
            let name = dir.file_name().unwrap().to_string_lossy();
            let log = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let alarms: Vec<&str> =
                lines.iter().copied().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
            out.push_str(&format!(
                "--- {name}: last warnings and errors ---\n{}\n--- {name}: last lines ---\n{}\n",
                alarms[alarms.len().saturating_sub(8)..].join("\n"),
                lines[lines.len().saturating_sub(6)..].join("\n")
            ));
        }
        out
    }

    /// `r`'s value, or a panic with `r`'s message and the hosts' logs.
    pub fn or_fail<T>(&self, r: Result<T, String>) -> T {
        r.unwrap_or_else(|e| panic!("{e}\n{}", self.logs()))
    }

    /// An admin token: the one the first `serve` wrote to its data dir, or else (no host wrote
    /// one) a new one made with `attune-host token create`.
    pub async fn token(&self) -> &str {
        self.token
            .get_or_init(|| async {
                let written = (0..8).map(|i| self.data_dir(i).join("admin.token")).find(|p| p.is_file());
                if let Some(path) = written {
                    return std::fs::read_to_string(path).unwrap().trim().to_string();
                }
                let mut command = self.setup.command();
                command.args(["token", "create", "--scope", "admin", "--database-url", &self.database]);
                let out = command.output().await.unwrap();
                assert!(out.status.success(), "token create: {}", String::from_utf8_lossy(&out.stderr));
                String::from_utf8(out.stdout).unwrap().trim().to_string()
            })
            .await
    }

    /// One API call to host `i`: (status, JSON body or the text as a string).
    pub async fn call(
        &self,
        i: usize,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), String> {
        let host = self.host(i);
        let mut request = self
            .client
            .request(method, format!("http://127.0.0.1:{}{path}", host.port))
            .bearer_auth(self.token().await);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.map_err(|e| format!("{} {path}: {e}", host.id))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| format!("{} {path}: {e}", host.id))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// `GET path` on host `i`, which must answer 200.
    pub async fn get(&self, i: usize, path: &str) -> Result<Value, String> {
        match self.call(i, Method::GET, path, None).await? {
            (200, body) => Ok(body),
            (status, body) => Err(format!("{} GET {path}: {status} {}", self.host(i).id, short(&body))),
        }
    }

    /// Owners as host `i` shows them (`GET /sensors`, `GET /timers`); `Err` when an item is
    /// missing from its lists.
    pub async fn owners_on(&self, i: usize) -> Result<Owners, String> {
        let owner = |item: &Value| item["owner"].as_str().map(str::to_string);
        let mut owners = Owners::new();
        let sensors = self.get(i, "/api/v1/sensors").await?;
        for sensor in items_of(&sensors, "sensors")? {
            if let Some(r) = sensor["ref"].as_str().filter(|r| r.starts_with(&format!("{PACK}."))) {
                owners.insert(format!("sensor:{r}"), owner(sensor));
            }
        }
        let timers = self.get(i, "/api/v1/timers").await?;
        if let Some(timer) = items_of(&timers, "timers")?.iter().find(|t| t["rule"] == TIMER_RULE) {
            owners.insert(timer_item(), owner(timer));
        }
        let missing: Vec<String> = all_items().into_iter().filter(|item| !owners.contains_key(item)).collect();
        if !missing.is_empty() {
            return Err(format!("{} does not list {missing:?}", self.host(i).id));
        }
        Ok(owners)
    }

    /// Owners as the first live host that answers shows them.
    pub async fn owners(&self) -> Result<Owners, String> {
        let mut errors = Vec::new();
        for i in self.live_indices() {
            match self.owners_on(i).await {
                Ok(owners) => return Ok(owners),
                Err(e) => errors.push(e),
            }
        }
        Err(format!("no live host answered: {errors:?}"))
    }

    /// Items per live host (0 for a live host without any).
    pub fn loads(&self, owners: &Owners) -> BTreeMap<String, usize> {
        let mut loads: BTreeMap<String, usize> = self.live().into_iter().map(|id| (id, 0)).collect();
        for owner in owners.values().flatten() {
            *loads.entry(owner.clone()).or_default() += 1;
        }
        loads
    }

    /// `Ok` when every item has a live owner.
    pub fn owned(&self, owners: &Owners) -> Result<(), String> {
        let live = self.live();
        let orphans: Vec<String> = owners
            .iter()
            .filter(|(_, owner)| !owner.as_ref().is_some_and(|o| live.contains(o)))
            .map(|(item, owner)| format!("{item} -> {owner:?}"))
            .collect();
        match orphans.is_empty() {
            true => Ok(()),
            false => Err(format!(
                "{} of {} items without a live owner (live: {live:?}): {orphans:?}",
                orphans.len(),
                owners.len()
            )),
        }
    }

    /// `Ok` when every item has a live owner and most/least loaded live host ≤ [`MAX_SPREAD`].
    pub fn balanced(&self, owners: &Owners) -> Result<(), String> {
        self.owned(owners)?;
        let loads = self.loads(owners);
        let (most, least) = (loads.values().max().copied().unwrap_or(0), loads.values().min().copied().unwrap_or(0));
        match least > 0 && most as f64 / least as f64 <= MAX_SPREAD {
            true => Ok(()),
            false => Err(format!("loads {loads:?}: most/least = {most}/{least} > {MAX_SPREAD}")),
        }
    }

    /// Which of `items` have no live owner in `owners`, as `item -> owner`.
    pub fn orphans(&self, owners: &Owners, items: &[String]) -> Vec<String> {
        let live = self.live();
        items
            .iter()
            .filter(|item| owners.get(*item).cloned().flatten().is_none_or(|o| !live.contains(&o)))
            .map(|item| format!("{item} -> {:?}", owners.get(item).cloned().flatten()))
            .collect()
    }

    /// Waits until every one of `items` has a live owner, at most `limit`: the owners then, and
    /// the instant they were seen. `what` names the wait in the error.
    pub async fn wait_owned(&self, what: &str, items: &[String], limit: Duration) -> Result<(Owners, Instant), String> {
        poll_until(what, limit, self.tick, async || {
            let owners = self.owners().await?;
            let orphans = self.orphans(&owners, items);
            if orphans.is_empty() { Ok(owners) } else { Err(format!("{orphans:?}")) }
        })
        .await
    }

    /// The host owning the timer now: its index, its id and every item it owns.
    pub async fn timer_owner(&self) -> (usize, String, Vec<String>) {
        let owners = self.or_fail(self.owners().await);
        let Some(id) = owners[&timer_item()].clone() else { panic!("the timer has no owner: {owners:?}") };
        (self.index_of(&id), id.clone(), owned_by(&owners, &id))
    }

    /// Waits until every item has a live owner and the spread is even, at most `limit`.
    pub async fn wait_balanced(&self, limit: Duration) -> Owners {
        let what = "every sensor and the timer owned by a live host, spread evenly";
        let waited = poll_until(what, limit, self.tick, async || {
            let owners = self.owners().await?;
            self.balanced(&owners)?;
            Ok(owners)
        })
        .await;
        self.or_fail(waited).0
    }

    /// As [`wait_balanced`](Self::wait_balanced), and no owner changed during `hold`.
    pub async fn wait_settled(&self, limit: Duration, hold: Duration) -> Owners {
        let mut last: Option<(Owners, Instant)> = None;
        let waited = poll_until("ownership balanced and unchanged for a while", limit, self.tick, async || {
            let owners = self.owners().await?;
            self.balanced(&owners)?;
            match &last {
                Some((previous, since)) if *previous == owners && since.elapsed() >= hold => Ok(owners),
                Some((previous, since)) if *previous == owners => {
                    Err(format!("unchanged for {:?} only", since.elapsed()))
                }
                _ => {
                    last = Some((owners, Instant::now()));
                    Err("owners changed".into())
                }
            }
        })
        .await;
        self.or_fail(waited).0
    }

    /// `GET /hosts` on host `i`: id -> (listen, sensors, timers).
    pub async fn hosts_listed(&self, i: usize) -> Result<BTreeMap<String, (String, u64, u64)>, String> {
        let hosts = self.get(i, "/api/v1/hosts").await?;
        let mut listed = BTreeMap::new();
        for host in items_of(&hosts, "hosts")? {
            let id = host["id"].as_str().ok_or_else(|| format!("a host without id: {host}"))?;
            let count = |key: &str| host[key].as_u64().ok_or_else(|| format!("{id}: no count `{key}`: {host}"));
            let listen = host["listen"].as_str().unwrap_or_default().to_string();
            if listed.insert(id.to_string(), (listen, count("sensors")?, count("timers")?)).is_some() {
                return Err(format!("{id} listed twice: {}", short(&hosts)));
            }
        }
        Ok(listed)
    }

    /// Stored events per source (`sensor:<ref>`, `timer:<rule>`, ..).
    pub async fn event_counts(&self) -> BTreeMap<String, i64> {
        sqlx::query_as::<_, (String, i64)>("SELECT source, count(*) FROM events GROUP BY source")
            .fetch_all(&self.pool)
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    /// Waits until each of `items` stored at least `by(item)` more events than in `base` (an
    /// [`event_counts`](Self::event_counts)), at most `limit`; returns the instant it saw so.
    pub async fn wait_events_beyond(
        &self,
        what: &str,
        base: &BTreeMap<String, i64>,
        items: &[String],
        by: impl Fn(&str) -> i64,
        limit: Duration,
    ) -> Result<Instant, String> {
        let waited = poll_until(what, limit, self.tick, async || {
            let now = self.event_counts().await;
            let behind: Vec<String> = items
                .iter()
                .filter_map(|item| {
                    let (was, is) = (base.get(item).copied().unwrap_or(0), now.get(item).copied().unwrap_or(0));
                    (is < was + by(item)).then(|| format!("{item}: {was} -> {is}"))
                })
                .collect();
            if behind.is_empty() { Ok(()) } else { Err(format!("{} behind: {behind:?}", behind.len())) }
        })
        .await;
        waited.map(|((), at)| at)
    }

    /// Waits until every sensor stored `sensor_by` more events and the timer `timer_by` more
    /// fires than now, at most `limit`: the work goes on. Returns how long it took.
    pub async fn wait_progress(&self, sensor_by: i64, timer_by: i64, limit: Duration) -> Duration {
        let base = self.event_counts().await;
        let started = Instant::now();
        let by = |item: &str| if item == timer_item() { timer_by } else { sensor_by };
        let what = "every sensor and the timer making progress";
        let waited = self.wait_events_beyond(what, &base, &all_items(), by, limit).await;
        self.or_fail(waited);
        started.elapsed()
    }

    /// The exactness check, from the `events` table: each sensor's `n` sorted are exactly 1..=k
    /// (no duplicate, no gap) with k ≥ `min_each`; the timer fired, never twice for one planned
    /// instant nor for two instants less than its interval apart. Returns the counts and every
    /// violation (see [`check_exact`](Self::check_exact)).
    pub async fn exactness(&self, min_each: usize) -> (Exact, Vec<String>) {
        let rows = sqlx::query_as::<_, (String, String)>(
            "SELECT source, payload FROM events WHERE source LIKE 'sensor:%' OR source LIKE 'timer:%'",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        let mut ns: BTreeMap<String, Vec<i64>> = (0..SENSORS).map(|i| (sensor_item(i), Vec::new())).collect();
        let mut planned: Vec<String> = Vec::new();
        let mut violations = Vec::new();
        for (source, payload) in &rows {
            let payload: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
            if source == &timer_item() {
                match payload["scheduled_at"].as_str() {
                    Some(at) => planned.push(at.to_string()),
                    None => violations.push(format!("a timer event without scheduled_at: {payload}")),
                }
            } else if let Some(list) = ns.get_mut(source) {
                match payload["n"].as_i64() {
                    Some(n) => list.push(n),
                    None => violations.push(format!("{source}: an event without n: {payload}")),
                }
            }
        }
        let mut per_sensor = BTreeMap::new();
        for (sensor, list) in &mut ns {
            list.sort_unstable();
            let max = list.last().copied().unwrap_or(0);
            let mut seen = BTreeMap::<i64, usize>::new();
            for n in list.iter() {
                *seen.entry(*n).or_default() += 1;
            }
            let twice: Vec<i64> = seen.iter().filter(|(_, c)| **c > 1).map(|(n, _)| *n).collect();
            let lost: Vec<i64> = (1..=max).filter(|n| !seen.contains_key(n)).collect();
            let odd: Vec<i64> = seen.keys().filter(|n| **n < 1).copied().collect();
            if !twice.is_empty() || !lost.is_empty() || !odd.is_empty() {
                violations.push(format!(
                    "{sensor}: {} events, n up to {max}: stored twice {:?}, missing {:?}, below 1 {odd:?}",
                    list.len(),
                    &twice[..twice.len().min(10)],
                    &lost[..lost.len().min(10)]
                ));
            }
            if list.len() < min_each {
                violations.push(format!("{sensor}: only {} events (expected at least {min_each})", list.len()));
            }
            per_sensor.insert(sensor.clone(), list.len());
        }
        let mut instants = Vec::new();
        for at in &planned {
            match chrono::DateTime::parse_from_rfc3339(at) {
                Ok(t) => instants.push((t, at)),
                Err(e) => violations.push(format!("timer: scheduled_at {at:?} is not RFC 3339: {e}")),
            }
        }
        instants.sort();
        for pair in instants.windows(2) {
            let gap = pair[1].0 - pair[0].0;
            if gap.num_milliseconds() == 0 {
                violations.push(format!("timer: planned instant {} stored twice", pair[0].1));
            } else if gap.num_milliseconds() < 900 {
                violations.push(format!(
                    "timer: fires planned {} and {}, closer than the 1 s interval",
                    pair[0].1, pair[1].1
                ));
            }
        }
        if planned.is_empty() {
            violations.push("timer: never fired".into());
        }
        (Exact { per_sensor, fires: planned.len() }, violations)
    }

    /// [`exactness`](Self::exactness), panicking listing every violation (with the hosts' logs).
    pub async fn check_exact(&self, min_each: usize) -> Exact {
        let (exact, violations) = self.exactness(min_each).await;
        assert!(
            violations.is_empty(),
            "{} exactness violations in {} stored sensor events and {} timer fires:\n{}\n{}",
            violations.len(),
            exact.events(),
            exact.fires,
            violations.join("\n"),
            self.logs()
        );
        exact
    }

    /// The sum of `name`'s samples on host `i`'s `/metrics` (`None`: not exported).
    pub async fn metric(&self, i: usize, name: &str) -> Result<Option<f64>, String> {
        let page = self.get(i, "/metrics").await?;
        Ok(metric_sum(page.as_str().unwrap_or_default(), name))
    }

    /// Ids of every stored event and enforcement: the messages the bus must carry.
    pub async fn stored_message_ids(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let ids = async |sql: &'static str| -> BTreeSet<String> {
            sqlx::query_as::<_, (String,)>(sql)
                .fetch_all(&self.pool)
                .await
                .unwrap()
                .into_iter()
                .map(|(id,)| id)
                .collect()
        };
        (ids("SELECT id FROM events").await, ids("SELECT id FROM enforcements").await)
    }
}
