//! Several hosts on one PostgreSQL (spec section 7, issue 11): a simulation of 20 in-process
//! hosts, each a real [`Membership`] with its own lease and tick loop, sharing 10,000 sensors and
//! 10,000 timers. The work is a stub that records what each host runs, so the bench checks what
//! the hosts do, not only what the store says.
//!
//! Phases: start (20 hosts at once), steady state (database cost of membership alone), a 21st
//! host joins, one host leaves gracefully (`leave()`), one host is killed (its tick loop
//! aborted; its lease runs out after `LEASE`). After each phase it waits until the state has
//! converged: every item's owner in the store is the live host [`assign`] names for it, and each
//! live host's work runs exactly the items the store gives it. Throughout, a registry shared by
//! all stubs records any item that is started on one host while it still runs on another.
//!
//! Run: `cargo bench -p attune-host --bench membership` (PostgreSQL on 127.0.0.1:5432 as for the
//! tests; `ATTUNE_TEST_POSTGRES_URL` overrides). Creates and drops `bench_membership_<uuid>`.
//! Environment: `MEMBERSHIP_BENCH_HOSTS` (default 20), `_ITEMS` (per kind, default 10,000),
//! `_STEADY_SECONDS` (default 10), `_LIMIT_SECONDS` (how long a phase may take to converge,
//! default 120), `_HOSTS_PER_STORE` (default: as few as fit the server's `max_connections`,
//! counting 8 connections per store pool), `MEMBERSHIP_BENCH_LOG` (a tracing filter, e.g.
//! `attune_host=info`, to print the hosts' logs on stderr; warnings and errors are counted
//! anyway). Prints Markdown. It measures, it does not fail: read the "trouble" column and the
//! lines under the tables.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attune_host::membership::{LEASE, Membership, RENEW_EVERY, Work, assign};
use attune_host::metrics::Metrics;
use attune_host::store::{OwnershipRecord, PgStore, Store, WorkKind};
use tokio::task::JoinHandle;

/// Connections in one store's pool at most (`PgStore::connect`).
const POOL_MAX: usize = 8;
/// Connections left for everything else on the server (other tests, psql).
const HEADROOM: usize = 20;
/// How often convergence is checked (each check reads the whole ownership table).
const CHECK_EVERY: Duration = Duration::from_millis(250);
/// Acquisitions timed at the end.
const PROBES: usize = 200;
/// The quiet time between the start's convergence and the steady-state measurement.
const SETTLE: Duration = Duration::from_secs(12);
/// How often lease renewals are watched during the steady state.
const WATCH_EVERY: Duration = Duration::from_millis(250);

fn env(name: &str, default: usize) -> usize {
    std::env::var(format!("MEMBERSHIP_BENCH_{name}")).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// How a host came to run an item, as its stub saw it when told to start it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// The host held the item at a new generation: it acquired it.
    Acquired,
    /// The host held it at the generation it had run it under before (it stopped everything
    /// when its lease was about to end, and resumed after a renewal).
    Resumed,
    /// The host did not hold the item at all when told to start it.
    NotHeld,
}

/// Who runs an item, since when, at which generation.
#[derive(Debug, Clone)]
struct Runner {
    host: String,
    generation: Option<i64>,
    how: How,
    since: Instant,
}

/// Which host runs each item right now, across all stubs; records overlaps.
#[derive(Debug, Default)]
struct Registry {
    running: Mutex<HashMap<(WorkKind, String), Runner>>,
    /// Items started and stopped, on all hosts since the beginning.
    started: AtomicUsize,
    stopped: AtomicUsize,
    /// Starts by how; overlaps by how the earlier runner had started.
    resumed: AtomicUsize,
    not_held: AtomicUsize,
    overlap_count: AtomicUsize,
    overlaps_by: Mutex<HashMap<String, usize>>,
    /// Stops of items the host was not running.
    stops_not_running: AtomicUsize,
    /// An item started on one host while another still ran it (the first few).
    overlaps: Mutex<Vec<String>>,
    /// A start of an item the same host already ran, or a stop of one it did not run (the first few).
    anomalies: Mutex<Vec<String>>,
}

impl Registry {
    fn note(list: &Mutex<Vec<String>>, what: String) {
        let mut list = lock(list);
        if list.len() < 12 {
            list.push(what);
        } else if list.len() == 12 {
            list.push("…".into());
        }
    }
}

/// Stub work of one host for one kind: the set of items it runs.
#[derive(Debug)]
struct Stub {
    host: String,
    kind: WorkKind,
    membership: std::sync::Weak<Membership>,
    items: Mutex<HashSet<String>>,
    /// The generation each item last ran under here.
    generations: Mutex<HashMap<String, i64>>,
    registry: Arc<Registry>,
}

#[async_trait::async_trait]
impl Work for Stub {
    async fn start(&self, items: &[String]) {
        let registry = &self.registry;
        registry.started.fetch_add(items.len(), Ordering::Relaxed);
        let membership = self.membership.upgrade();
        let mut mine = lock(&self.items);
        let mut generations = lock(&self.generations);
        let mut running = lock(&registry.running);
        for item in items {
            let generation = membership.as_ref().and_then(|m| m.fence(self.kind, item)).map(|f| f.generation);
            let how = match generation {
                None => How::NotHeld,
                Some(g) if generations.get(item) == Some(&g) => How::Resumed,
                Some(_) => How::Acquired,
            };
            match how {
                How::NotHeld => {
                    registry.not_held.fetch_add(1, Ordering::Relaxed);
                    Registry::note(&registry.anomalies, format!("{} told to start {item}, not holding it", self.host));
                }
                How::Resumed => {
                    registry.resumed.fetch_add(1, Ordering::Relaxed);
                }
                How::Acquired => {}
            }
            if let Some(g) = generation {
                generations.insert(item.clone(), g);
            }
            if !mine.insert(item.clone()) {
                Registry::note(&registry.anomalies, format!("{} started {item} twice", self.host));
            }
            let runner = Runner { host: self.host.clone(), generation, how, since: Instant::now() };
            if let Some(other) = running.insert((self.kind, item.clone()), runner)
                && other.host != self.host
            {
                registry.overlap_count.fetch_add(1, Ordering::Relaxed);
                *lock(&registry.overlaps_by).entry(format!("{:?}", other.how)).or_default() += 1;
                Registry::note(
                    &registry.overlaps,
                    format!(
                        "{} {item}: started on {} ({how:?}, generation {generation:?}) while {} ran it ({:?}, generation {:?}, for {:.2} s)",
                        self.kind.as_str(),
                        self.host,
                        other.host,
                        other.how,
                        other.generation,
                        other.since.elapsed().as_secs_f64()
                    ),
                );
            }
        }
    }

    async fn stop(&self, items: &[String]) {
        self.registry.stopped.fetch_add(items.len(), Ordering::Relaxed);
        let mut mine = lock(&self.items);
        let mut running = lock(&self.registry.running);
        for item in items {
            if !mine.remove(item) {
                self.registry.stops_not_running.fetch_add(1, Ordering::Relaxed);
                Registry::note(&self.registry.anomalies, format!("{} stopped {item}, not running it", self.host));
            }
            let key = (self.kind, item.clone());
            if running.get(&key).is_some_and(|r| r.host == self.host) {
                running.remove(&key);
            }
        }
    }
}

impl Stub {
    /// The process died: everything it ran stops with it. How many items it still ran.
    fn die(&self) -> usize {
        let mut mine = lock(&self.items);
        let mut running = lock(&self.registry.running);
        let count = mine.len();
        for item in mine.drain() {
            let key = (self.kind, item);
            if running.get(&key).is_some_and(|r| r.host == self.host) {
                running.remove(&key);
            }
        }
        count
    }
}

/// One simulated host.
struct Host {
    id: String,
    membership: Arc<Membership>,
    /// Kept here: the membership holds them weakly.
    stubs: Vec<Arc<Stub>>,
    run: Option<JoinHandle<()>>,
}

impl Host {
    fn stub(&self, kind: WorkKind) -> &Stub {
        self.stubs.iter().find(|s| s.kind == kind).unwrap_or_else(|| panic!("no stub for {kind:?}"))
    }
}

struct Sim {
    stores: Vec<Arc<dyn Store>>,
    hosts_per_store: usize,
    url: String,
    wanted: HashMap<WorkKind, Vec<String>>,
    registry: Arc<Registry>,
    hosts: Vec<Host>,
    /// Reads ownership for the checks (a pool of its own).
    checker: Arc<dyn Store>,
    stats: sqlx::PgPool,
    db: String,
    peak_connections: i64,
    limit: Duration,
    /// `assign`'s answer for the current live hosts, per kind (computed once per host set).
    plans: HashMap<WorkKind, HashMap<String, String>>,
    /// The last `last_seen` (database µs) of each host, to see the gaps between its renewals.
    renewals: HashMap<String, i64>,
    /// Since [`Sim::reset_renewals`]: the longest gap between two renewals of one host, and
    /// how many gaps were longer than the lease (the host counted as dead meanwhile).
    max_gap: i64,
    lapses: usize,
    /// Renewals seen since [`Sim::reset_renewals`].
    renewed: usize,
}

fn items(kind: WorkKind, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("pack{:03}.{}{i:05}", i % 100, kind.as_str())).collect()
}

impl Sim {
    /// Joins host `index` and gives it its work; its loop starts with [`Sim::run`].
    async fn join(&mut self, index: usize) -> Duration {
        let slot = index / self.hosts_per_store;
        while self.stores.len() <= slot {
            let store = attune_host::store::open(&self.url).await.unwrap_or_else(|e| panic!("{e}"));
            self.stores.push(store);
        }
        let id = format!("h{index}");
        let joining = Instant::now();
        let membership = Membership::join(self.stores[slot].clone(), &id, "", None, Arc::new(Metrics::new()))
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        let joined = joining.elapsed();
        let mut stubs = Vec::new();
        for kind in WorkKind::ALL {
            membership.set_wanted(kind, self.wanted[&kind].iter().cloned().collect::<BTreeSet<_>>());
            let stub = Arc::new(Stub {
                host: id.clone(),
                kind,
                membership: Arc::downgrade(&membership),
                items: Mutex::default(),
                generations: Mutex::default(),
                registry: self.registry.clone(),
            });
            let work: Arc<dyn Work> = stub.clone();
            membership.attach(kind, Arc::downgrade(&work));
            stubs.push(stub);
        }
        self.hosts.push(Host { id, membership, stubs, run: None });
        joined
    }

    /// Starts the loops of the hosts that joined since the last call.
    fn run(&mut self) {
        for host in self.hosts.iter_mut().filter(|h| h.run.is_none()) {
            host.run = Some(tokio::spawn(host.membership.clone().run()));
        }
    }

    fn live(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.id.clone()).collect()
    }

    /// Recomputes the target after the set of hosts changed.
    fn replan(&mut self) {
        let live = self.live();
        self.plans = WorkKind::ALL
            .into_iter()
            .map(|kind| {
                let plan = assign(&self.wanted[&kind], &live, |_, _| true);
                (kind, plan.into_iter().map(|(i, h)| (i.to_string(), h.to_string())).collect())
            })
            .collect();
    }

    /// Reads the hosts' `last_seen` and notes the gaps between renewals.
    async fn watch_renewals(&mut self) {
        let lease = i64::try_from(LEASE.as_micros()).unwrap_or(i64::MAX);
        for host in self.checker.live_hosts().await.unwrap_or_else(|e| panic!("{e}")) {
            if let Some(previous) = self.renewals.insert(host.id.clone(), host.last_seen)
                && previous != host.last_seen
            {
                self.renewed += 1;
                let gap = host.last_seen - previous;
                self.max_gap = self.max_gap.max(gap);
                if gap > lease {
                    self.lapses += 1;
                }
            }
        }
    }

    /// Starts counting afresh from the renewals seen now.
    async fn reset_renewals(&mut self) {
        self.renewals.clear();
        self.watch_renewals().await;
        (self.max_gap, self.lapses, self.renewed) = (0, 0, 0);
    }

    async fn ownership(&self) -> HashMap<WorkKind, Vec<OwnershipRecord>> {
        let mut all = HashMap::new();
        for kind in WorkKind::ALL {
            all.insert(kind, self.checker.ownership(kind).await.unwrap_or_else(|e| panic!("{e}")));
        }
        all
    }

    async fn connections(&mut self) -> i64 {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(&self.db)
            .fetch_one(&self.stats)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        self.peak_connections = self.peak_connections.max(n);
        n
    }

    /// What is still off the target, in the store and in the hosts' work: `None` once there.
    fn off_target(&self, rows: &HashMap<WorkKind, Vec<OwnershipRecord>>) -> (Option<String>, Option<String>) {
        let live = self.live();
        let (mut store, mut work) = (Vec::new(), Vec::new());
        for kind in WorkKind::ALL {
            let plan = &self.plans[&kind];
            let rows = &rows[&kind];
            if rows.len() != self.wanted[&kind].len() {
                store.push(format!("{}: {} rows of {}", kind.as_str(), rows.len(), self.wanted[&kind].len()));
            }
            let mut owned: HashMap<&str, HashSet<&str>> = HashMap::new();
            let (mut unowned, mut dead, mut misplaced) = (0, 0, 0);
            for row in rows {
                match row.owner.as_deref() {
                    None => unowned += 1,
                    Some(owner) if !live.iter().any(|h| h == owner) => dead += 1,
                    Some(owner) => {
                        owned.entry(owner).or_default().insert(row.item.as_str());
                        if plan.get(row.item.as_str()).map(String::as_str) != Some(owner) {
                            misplaced += 1;
                        }
                    }
                }
            }
            if unowned + dead + misplaced > 0 {
                store.push(format!(
                    "{}: {unowned} unowned, {dead} owned by a dead host, {misplaced} not where assign puts them",
                    kind.as_str()
                ));
            }
            let empty = HashSet::new();
            for host in &self.hosts {
                let running = lock(&host.stub(kind).items);
                let given = owned.get(host.id.as_str()).unwrap_or(&empty);
                let extra: Vec<&String> = running.iter().filter(|i| !given.contains(i.as_str())).collect();
                let missing: Vec<&&str> = given.iter().filter(|i| !running.contains(**i)).collect();
                if !extra.is_empty() || !missing.is_empty() {
                    let not_held = extra.iter().filter(|i| host.membership.fence(kind, i).is_none()).count();
                    let held = missing.iter().filter(|i| host.membership.fence(kind, i).is_some()).count();
                    work.push(format!(
                        "{} {}: runs {} the store does not give it ({not_held} of them not held), does not run {} \
                         it is given ({held} of them held)",
                        host.id,
                        kind.as_str(),
                        extra.len(),
                        missing.len()
                    ));
                }
            }
        }
        let join = |v: Vec<String>| (!v.is_empty()).then(|| v.join("; "));
        (join(store), join(work))
    }

    /// Waits until the store, then the hosts' work, match the target: the time since `since` for
    /// each, or what was still off at the time limit.
    async fn converge(&mut self, since: Instant) -> (Result<Duration, String>, Result<Duration, String>) {
        self.replan();
        let mut store_done = None;
        loop {
            self.watch_renewals().await;
            let rows = self.ownership().await;
            self.connections().await;
            let (store, work) = self.off_target(&rows);
            if store.is_none() && store_done.is_none() {
                store_done = Some(since.elapsed());
            }
            if store.is_none() && work.is_none() {
                let done = since.elapsed();
                return (Ok(store_done.unwrap_or(done)), Ok(done));
            }
            if since.elapsed() > self.limit {
                let work = work.unwrap_or_else(|| "the store is not there yet".into());
                return (store_done.ok_or_else(|| store.unwrap_or_default()), Err(work));
            }
            tokio::time::sleep(CHECK_EVERY).await;
        }
    }

    fn overlaps(&self) -> usize {
        self.registry.overlap_count.load(Ordering::Relaxed)
    }

    /// Runs one phase: `change` (which may add or remove hosts), then waits for convergence.
    /// Returns a table row, and what was off when it did not converge.
    async fn phase(&mut self, name: String, ideal: String, change: Change) -> ([String; 9], Vec<String>) {
        let before_rows = self.ownership().await;
        let before = owners(&before_rows);
        let counters = |sim: &Self| {
            let r = &sim.registry;
            [
                sim.starts(),
                sim.stops(),
                sim.overlaps(),
                r.not_held.load(Ordering::Relaxed),
                r.resumed.load(Ordering::Relaxed),
                r.stops_not_running.load(Ordering::Relaxed),
            ]
        };
        let (c0, live_before) = (counters(self), self.live());
        self.reset_renewals().await;
        let (cpu0, machine0) = (cpu_seconds(&[std::process::id() as i32]), machine_jiffies());
        let t = Instant::now();
        let mut gone = None;
        let mut still_ran = 0;
        match change {
            Change::Start => self.run(),
            Change::Join(index) => {
                self.join(index).await;
                self.run();
            }
            Change::Leave(index) | Change::Kill(index) => {
                let mut host = self.hosts.remove(index);
                if matches!(change, Change::Leave(_)) {
                    host.membership.leave().await;
                }
                stop(&mut host).await;
                // A killed process runs nothing any more; one that left should have stopped
                // everything already.
                still_ran = host.stubs.iter().map(|s| s.die()).sum::<usize>();
                gone = Some(host);
            }
        }
        let (store, work) = self.converge(t).await;
        let wall = t.elapsed().as_secs_f64();
        let (cpu1, machine1) = (cpu_seconds(&[std::process::id() as i32]), machine_jiffies());
        let c1 = counters(self);
        let rows = self.ownership().await;
        let after = owners(&rows);
        let live = self.live();
        let name = match &gone {
            Some(host) => format!("{name} {} ({} → {})", host.id, live_before.len(), live.len()),
            None => format!("{name} ({} → {})", live_before.len(), live.len()),
        };
        let planned: usize = WorkKind::ALL
            .iter()
            .map(|k| {
                if before.is_empty() {
                    self.wanted[k].len()
                } else {
                    planned_moves(&self.wanted[k], &live_before, &live)
                }
            })
            .sum();
        let (s, m) = (balance(&rows, &live, WorkKind::Sensor), balance(&rows, &live, WorkKind::Timer));
        let mut off = Vec::new();
        let mut show = |label: &str, result: Result<Duration, String>| match result {
            Ok(d) => ms(d),
            Err(why) => {
                off.push(format!("{name}, {label}: {why}"));
                format!("**not after {:.0} s**", self.limit.as_secs_f64())
            }
        };
        let (store, work) = (show("store", store), show("work", work));
        let d = |i: usize| c1[i] - c0[i];
        let mut trouble =
            format!("{} overlaps; {} starts not held; {} resumed; {} stops not running", d(2), d(3), d(4), d(5));
        if matches!(change, Change::Leave(_)) {
            trouble.push_str(&format!("; still ran after `leave()`: {still_ran}"));
        }
        let row = [
            name,
            store,
            work,
            if before.is_empty() {
                format!("{} (all)", after.len())
            } else {
                format!("{} + {}", moved(&before, &after, WorkKind::Sensor), moved(&before, &after, WorkKind::Timer))
            },
            format!("{ideal}; `assign`: {planned}"),
            format!("{} / {}", d(0), d(1)),
            format!(
                "{} / {} ({:.2}); {} / {} ({:.2})",
                s.0,
                s.1,
                s.0 as f64 / s.1.max(1) as f64,
                m.0,
                m.1,
                m.0 as f64 / m.1.max(1) as f64
            ),
            format!(
                "{:.1} s ({} over the lease); hosts {:.2} cores, machine {:.0} % busy",
                self.max_gap as f64 / 1e6,
                self.lapses,
                (cpu1 - cpu0) / wall,
                (machine1.0 - machine0.0) / (machine1.1 - machine0.1).max(1.0) * 100.0
            ),
            trouble,
        ];
        (row, off)
    }

    /// Items started on any host, since the beginning.
    fn starts(&self) -> usize {
        self.registry.started.load(Ordering::Relaxed)
    }

    /// Items stopped through `Work::stop` on any host, since the beginning.
    fn stops(&self) -> usize {
        self.registry.stopped.load(Ordering::Relaxed)
    }
}

/// What a phase changes.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Starts the loops of the hosts that joined.
    Start,
    /// Host `h<n>` joins and starts.
    Join(usize),
    /// The host at this index in `Sim::hosts` leaves gracefully.
    Leave(usize),
    /// The host at this index is killed: its loop ends wherever it is, its lease runs out.
    Kill(usize),
}

/// Counts warnings and errors logged by the hosts, by message.
#[derive(Debug, Default, Clone)]
struct Warnings(Arc<Mutex<HashMap<String, usize>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if *event.metadata().level() > tracing::Level::WARN {
            return;
        }
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{value:?}");
                }
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        let key = format!("{} {}", event.metadata().level(), message.0.chars().take(140).collect::<String>());
        *lock(&self.0).entry(key).or_default() += 1;
    }
}

/// item -> owner, per kind.
fn owners(rows: &HashMap<WorkKind, Vec<OwnershipRecord>>) -> HashMap<(WorkKind, String), Option<String>> {
    rows.iter().flat_map(|(kind, rows)| rows.iter().map(|r| ((*kind, r.item.clone()), r.owner.clone()))).collect()
}

fn moved(
    before: &HashMap<(WorkKind, String), Option<String>>,
    after: &HashMap<(WorkKind, String), Option<String>>,
    kind: WorkKind,
) -> usize {
    before.iter().filter(|((k, item), owner)| *k == kind && after.get(&(*k, item.clone())) != Some(owner)).count()
}

/// (most, least) items per live host, per kind.
fn balance(rows: &HashMap<WorkKind, Vec<OwnershipRecord>>, live: &[String], kind: WorkKind) -> (usize, usize) {
    let loads: Vec<usize> =
        live.iter().map(|h| rows[&kind].iter().filter(|r| r.owner.as_deref() == Some(h.as_str())).count()).collect();
    (loads.iter().copied().max().unwrap_or(0), loads.iter().copied().min().unwrap_or(0))
}

/// `assign`'s own answer: how many items change host between two host sets.
fn planned_moves(items: &[String], before: &[String], after: &[String]) -> usize {
    let (a, b) = (assign(items, before, |_, _| true), assign(items, after, |_, _| true));
    a.iter().filter(|(item, host)| b.get(*item) != Some(*host)).count()
}

#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    xact_commit: i64,
    xact_rollback: i64,
    tup_returned: i64,
    tup_fetched: i64,
    tup_updated: i64,
}

async fn db_stats(pool: &sqlx::PgPool, db: &str) -> Stats {
    let (xact_commit, xact_rollback, tup_returned, tup_fetched, tup_updated): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT xact_commit, xact_rollback, tup_returned, tup_fetched, tup_updated FROM pg_stat_database \
             WHERE datname = $1",
        )
        .bind(db)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    Stats { xact_commit, xact_rollback, tup_returned, tup_fetched, tup_updated }
}

/// CPU time (seconds) of the given processes, from `/proc/<pid>/stat` (clock ticks of 10 ms).
fn cpu_seconds(pids: &[i32]) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
        })
        .sum::<f64>()
        / 100.0
}

/// Busy and total jiffies of the whole machine, from `/proc/stat`.
fn machine_jiffies() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let values: Vec<f64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let total: f64 = values.iter().sum();
    let idle = values.get(3).copied().unwrap_or(0.0) + values.get(4).copied().unwrap_or(0.0);
    (total - idle, total)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn median(mut samples: Vec<Duration>) -> f64 {
    samples.sort_unstable();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

/// Aborts a host's loop and waits until it has ended.
async fn stop(host: &mut Host) {
    if let Some(run) = host.run.take() {
        run.abort();
        let _ = run.await;
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

#[tokio::main]
async fn main() {
    let n_hosts = env("HOSTS", 20);
    let n_items = env("ITEMS", 10_000);
    let steady = Duration::from_secs(env("STEADY_SECONDS", 10) as u64);
    let limit = Duration::from_secs(env("LIMIT_SECONDS", 120) as u64);
    let warnings = Warnings::default();
    {
        use tracing_subscriber::layer::SubscriberExt;
        let log = std::env::var("MEMBERSHIP_BENCH_LOG").ok().map(|filter| {
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::stderr)
                .with_filter(tracing_subscriber::EnvFilter::new(filter))
        });
        use tracing_subscriber::Layer;
        let subscriber = tracing_subscriber::registry().with(warnings.clone()).with(log);
        tracing::subscriber::set_global_default(subscriber).unwrap_or_else(|e| panic!("{e}"));
    }

    let admin = std::env::var("ATTUNE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let db = format!("bench_membership_{}", uuid::Uuid::now_v7().simple());
    let pg = PgStore::connect(&admin).await.unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
    pg.execute_admin(&format!("CREATE DATABASE {db}")).await.unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}/{db}", admin.rsplit_once('/').map_or(admin.as_str(), |(server, _)| server));
    let stats =
        sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&admin).await.unwrap_or_else(|e| panic!("{e}"));
    let max_connections: i32 = sqlx::query_scalar("SELECT current_setting('max_connections')::int")
        .fetch_one(&stats)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let in_use: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
        .fetch_one(&stats)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Worst case, every pool fills up: the hosts' (with the one that joins later) and the checker's.
    let budget = (max_connections as usize).saturating_sub(in_use as usize + HEADROOM + POOL_MAX).max(POOL_MAX);
    let hosts_per_store = env("HOSTS_PER_STORE", ((n_hosts + 1) * POOL_MAX).div_ceil(budget).max(1));
    let checker = attune_host::store::open(&url).await.unwrap_or_else(|e| panic!("{e}"));
    checker.migrate().await.unwrap_or_else(|e| panic!("{e}"));

    let wanted: HashMap<WorkKind, Vec<String>> = WorkKind::ALL.into_iter().map(|k| (k, items(k, n_items))).collect();
    // `assign` alone, before anything else runs in this process: each host computes it for each
    // kind at every tick.
    let hosts: Vec<String> = (0..n_hosts).map(|i| format!("h{i}")).collect();
    let plan_cost = median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(assign(&wanted[&WorkKind::Sensor], &hosts, |_, _| true));
                t.elapsed()
            })
            .collect(),
    );
    let mut sim = Sim {
        stores: Vec::new(),
        hosts_per_store,
        url,
        wanted,
        registry: Arc::default(),
        hosts: Vec::new(),
        checker,
        stats,
        db: db.clone(),
        peak_connections: 0,
        limit,
        plans: HashMap::new(),
        renewals: HashMap::new(),
        max_gap: 0,
        lapses: 0,
        renewed: 0,
    };
    println!(
        "{n_hosts} hosts, {n_items} sensors + {n_items} timers, LEASE {LEASE:?}, RENEW_EVERY {RENEW_EVERY:?}; \
         PostgreSQL max_connections {max_connections} ({in_use} client connections before): {hosts_per_store} \
         hosts per store pool (≤ {POOL_MAX} connections each); tokio workers: {}; load average {}",
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );
    println!("`assign` ({n_items} items, {n_hosts} hosts), alone in the process: {plan_cost:.1} ms (median of 5)");

    let mut joins = Vec::new();
    for i in 0..n_hosts {
        joins.push(sim.join(i).await);
    }
    println!(
        "joins: median {:.1} ms, max {:.1} ms",
        median(joins.clone()),
        joins.iter().max().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    let mut rows = Vec::new();
    let mut off = Vec::new();
    let mut record = |(row, why): ([String; 9], Vec<String>)| {
        rows.push(row);
        off.extend(why);
    };
    record(sim.phase("start: all loops at once, nothing owned".into(), "all".into(), Change::Start).await);

    // Steady state: only the hosts' loops and a light watch of their renewals touch the database.
    // The wait first lets PostgreSQL's backends report the start's statistics (they flush them
    // at most once a second, and an idle one within 10 s).
    tokio::time::sleep(SETTLE).await;
    let connections = sim.connections().await;
    let pids: Vec<i32> = sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = $1")
        .bind(&db)
        .fetch_all(&sim.stats)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let own_pid = [std::process::id() as i32];
    sim.reset_renewals().await;
    let (starts0, overlaps0) = (sim.starts(), sim.overlaps());
    let (s0, pg0, me0, m0, w0) =
        (db_stats(&sim.stats, &db).await, cpu_seconds(&pids), cpu_seconds(&own_pid), machine_jiffies(), Instant::now());
    let mut watches = 0i64;
    while w0.elapsed() < steady {
        tokio::time::sleep(WATCH_EVERY).await;
        sim.watch_renewals().await;
        watches += 1;
    }
    let (s1, pg1, me1, m1, wall) =
        (db_stats(&sim.stats, &db).await, cpu_seconds(&pids), cpu_seconds(&own_pid), machine_jiffies(), w0.elapsed());
    let (steady_starts, steady_overlaps) = (sim.starts() - starts0, sim.overlaps() - overlaps0);
    let (steady_gap, steady_lapses, steady_renewals) = (sim.max_gap, sim.lapses, sim.renewed);

    // One tick's database reads, with the hosts running.
    let reads = median(
        futures_util::future::join_all((0..5).map(|_| async {
            let t = Instant::now();
            sim.checker.ownership(WorkKind::Sensor).await.unwrap_or_else(|e| panic!("{e}"));
            t.elapsed()
        }))
        .await,
    );

    record(
        sim.phase(
            "join:".into(),
            format!("{} (1/{})", 2 * n_items / (n_hosts + 1), n_hosts + 1),
            Change::Join(n_hosts),
        )
        .await,
    );
    let leaver = sim.hosts.iter().position(|h| h.id == "h7").unwrap_or(sim.hosts.len() / 3);
    let owned = owners(&sim.ownership().await);
    let count = |id: &str| owned.values().filter(|o| o.as_deref() == Some(id)).count();
    let ideal = format!("{} (its items)", count(&sim.hosts[leaver].id));
    record(sim.phase("leave():".into(), ideal, Change::Leave(leaver)).await);
    let victim = sim.hosts.iter().position(|h| h.id == "h3").unwrap_or(0);
    let owned = owners(&sim.ownership().await);
    let count = |id: &str| owned.values().filter(|o| o.as_deref() == Some(id)).count();
    let ideal = format!("{} (its items)", count(&sim.hosts[victim].id));
    record(sim.phase("killed:".into(), ideal, Change::Kill(victim)).await);

    // Every acquisition raised a generation by one, so the generations add up to the starts
    // (unless a host resumed work it had stopped while out of reach, which starts without one).
    let generations: i64 = sim.ownership().await.values().flatten().map(|r| r.generation).sum();

    // One acquisition (one UPDATE), with the hosts running: from this runtime, where the hosts'
    // rounds share the workers, and from a thread and runtime of its own. A probe item no host
    // wants, taken again and again by an owner that is not a live host.
    let probe = |store: Arc<dyn Store>| async move {
        let item = "zz.probe".to_string();
        store.register(WorkKind::Timer, std::slice::from_ref(&item)).await.unwrap_or_else(|e| panic!("{e}"));
        let mut times = Vec::new();
        for _ in 0..PROBES {
            let t = Instant::now();
            let taken = store
                .acquire(WorkKind::Timer, std::slice::from_ref(&item), "probe")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            times.push(t.elapsed());
            assert_eq!(taken.len(), 1, "the probe item was not taken");
        }
        times.sort_unstable();
        (times[PROBES / 2].as_secs_f64() * 1e3, times[PROBES * 99 / 100].as_secs_f64() * 1e3)
    };
    let shared = probe(sim.checker.clone()).await;
    let url = sim.url.clone();
    let alone = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
        runtime.unwrap_or_else(|e| panic!("{e}")).block_on(async move {
            probe(attune_host::store::open(&url).await.unwrap_or_else(|e| panic!("{e}"))).await
        })
    })
    .join()
    .unwrap_or_else(|_| panic!("the probe thread panicked"));

    println!();
    println!(
        "| phase | store converged after | work converged after | items moved (sensors + timers) | ideal; `assign`'s own moves | work started / stopped | most / least per host (sensors; timers) | longest renewal gap; CPU | trouble |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!("| {} |", row.join(" | "));
    }
    for why in &off {
        println!("- not converged: {why}");
    }
    let secs = wall.as_secs_f64();
    let d = |f: fn(&Stats) -> i64| (f(&s1) - f(&s0)) as f64;
    let row = |name: &str, total: f64| {
        println!("| {name} | {total:.1} | {:.2} |", total / n_hosts as f64);
    };
    println!();
    println!(
        "Steady state: {secs:.1} s, {n_hosts} hosts, nothing changing, {connections} connections to the bench \
         database; the watch of renewals ({watches} reads of `hosts`) is subtracted from the transactions."
    );
    println!();
    println!("| per second | all hosts | per host |");
    println!("|---|---|---|");
    row("lease renewals (ticks), seen in `hosts.last_seen`", steady_renewals as f64 / secs);
    row("transactions (xact_commit)", (d(|s| s.xact_commit) - watches as f64) / secs);
    row("rollbacks", d(|s| s.xact_rollback) / secs);
    row("rows read (tup_returned)", d(|s| s.tup_returned) / secs);
    row("rows fetched by index (tup_fetched)", d(|s| s.tup_fetched) / secs);
    row("rows updated (tup_updated)", d(|s| s.tup_updated) / secs);
    row("PostgreSQL CPU, backends of the bench database (core-ms)", (pg1 - pg0) / secs * 1e3);
    row("hosts' CPU, this process (core-ms)", (me1 - me0) / secs * 1e3);
    println!(
        "| whole machine busy | {:.0} % of {} cores | |",
        (m1.0 - m0.0) / (m1.1 - m0.1).max(1.0) * 100.0,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    println!(
        "| items started anyway / overlaps / longest renewal gap | {steady_starts} / {steady_overlaps} / {:.1} s ({steady_lapses} over the lease) | |",
        steady_gap as f64 / 1e6
    );
    println!();
    println!(
        "Reading one kind's ownership ({n_items} rows), with the hosts running: {reads:.1} ms (median of 5 at once)."
    );
    println!(
        "One acquisition (`acquire`, one UPDATE), {PROBES} in a row with {} hosts running, p50 / p99: {:.2} / {:.2} ms \
         from the hosts' runtime; {:.2} / {:.2} ms from a thread of its own.",
        sim.hosts.len(),
        shared.0,
        shared.1,
        alone.0,
        alone.1
    );
    let r = &sim.registry;
    println!(
        "Overlaps in all (an item started on a host while another ran it): {}, by how the earlier runner had \
         started it: {:?}; starts of items not held: {}; resumed: {}; stops of items not running: {}; peak \
         connections to the bench database: {}; sum of generations {generations} vs work started {} (of which {} \
         resumed); load average {}.",
        sim.overlaps(),
        lock(&r.overlaps_by),
        r.not_held.load(Ordering::Relaxed),
        r.resumed.load(Ordering::Relaxed),
        r.stops_not_running.load(Ordering::Relaxed),
        sim.peak_connections,
        sim.starts(),
        r.resumed.load(Ordering::Relaxed),
        load_average()
    );
    for o in lock(&sim.registry.overlaps).iter().chain(lock(&sim.registry.anomalies).iter()) {
        println!("  - {o}");
    }
    let mut logged: Vec<(String, usize)> = lock(&warnings.0).iter().map(|(k, v)| (k.clone(), *v)).collect();
    logged.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    println!("Warnings and errors the hosts logged: {}", if logged.is_empty() { "none" } else { "" });
    for (message, count) in logged.iter().take(15) {
        println!("  - {count} × {message}");
    }

    for host in &mut sim.hosts {
        stop(host).await;
    }
    drop(sim);
    let _ = pg.execute_admin(&format!("DROP DATABASE {db} WITH (FORCE)")).await;
}
