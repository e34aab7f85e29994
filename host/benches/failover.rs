//! Failover after `kill -9` (issue 11, spec section 7): three real `attune-host serve` processes
//! on one fresh PostgreSQL database and one RabbitMQ exchange share 30 JavaScript counter
//! sensors (polled every 0.2 s) and a 1 s interval timer: the cluster tests' harness,
//! [`attune_testkit::cluster`]. Then, [`KILLS`] times, a host is killed with SIGKILL (odd kills:
//! the timer's owner; even kills: the other hosts in turn) and, from the signal, the bench
//! measures, polling both every [`POLL`]:
//!
//! - "owned again": every item the killed host owned has a live owner in `GET /sensors` and
//!   `GET /timers`;
//! - "work resumed": each of its sensors (and the timer, if it was the killed host's) stored a
//!   new event (the `events` table);
//!
//! then checks exactness (every counter's `n` exactly 1..=k, no planned timer instant twice, none
//! closer than the interval), restarts the killed host with its id, and waits until the cluster
//! is balanced, settled and every sensor and the timer progress before the next kill.
//!
//! Run: `cargo bench -p attune-host --bench failover` after `make components` (PostgreSQL on
//! 127.0.0.1:5432 and RabbitMQ on 127.0.0.1:5672, as for the tests; `ATTUNE_TEST_POSTGRES_URL`
//! and `AMQP_URL` override). `FAILOVER_BENCH_KILLS` (default 10) is the number of kills. Creates
//! and drops `bench_failover_<uuid>`; the hosts' logs are in a temporary directory, printed on a
//! failure. Prints Markdown; exits 1 after the figures when an exactness violation was seen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use attune_host::store::PgStore;
use attune_testkit::cluster::{Cluster, Setup, owned_by, poll_until, timer_item};

/// Hosts in the cluster.
const HOSTS: usize = 3;
const KILLS: usize = 10;
/// How often ownership and events are polled while a failover is measured.
const POLL: Duration = Duration::from_millis(50);
/// A failover not done by then fails the bench.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);
/// Between kills: balanced, and no owner changed for this long.
const SETTLE_HOLD: Duration = Duration::from_secs(1);
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// The target for a failover, at most.
const TARGET: Duration = Duration::from_secs(5);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// One kill, as measured from the signal.
#[derive(Debug)]
struct Kill {
    victim: String,
    sensors: usize,
    timer: bool,
    owned_again: Duration,
    /// The last of its sensors to store a new event.
    sensors_resumed: Duration,
    /// Its timer's first new fire.
    timer_resumed: Option<Duration>,
    /// Events and fires stored when checked, and the exactness violations then.
    events: usize,
    fires: usize,
    violations: Vec<String>,
    /// The restarted host: spawn -> `/ready`; spawn -> balanced, settled and making progress.
    ready: Duration,
    rejoined: Duration,
}

impl Kill {
    fn resumed(&self) -> Duration {
        self.sensors_resumed.max(self.timer_resumed.unwrap_or_default())
    }
}

/// Median (the mean of the two middle values of an even count) and max.
fn median_max(samples: impl Iterator<Item = Duration>) -> (Duration, Duration) {
    let mut sorted: Vec<Duration> = samples.collect();
    sorted.sort();
    let n = sorted.len();
    match n {
        0 => (Duration::ZERO, Duration::ZERO),
        _ if n % 2 == 1 => (sorted[n / 2], sorted[n - 1]),
        _ => ((sorted[n / 2 - 1] + sorted[n / 2]) / 2, sorted[n - 1]),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn load_average() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// From the kill at `killed` until every one of `items` has a live owner and stored a new event
/// since `base` was counted, polled every [`POLL`]: when all were first seen owned, and when
/// each was first seen with a new event.
async fn wait_failover(
    cluster: &Cluster,
    base: &BTreeMap<String, i64>,
    items: &[String],
    killed: Instant,
) -> (Duration, BTreeMap<String, Duration>) {
    let mut owned: Option<Duration> = None;
    let mut resumed: BTreeMap<String, Duration> = BTreeMap::new();
    let what = "the killed host's items owned by live hosts and storing new events";
    let waited = poll_until(what, FAILOVER_LIMIT, POLL, async || {
        if owned.is_none() {
            let orphans = cluster.orphans(&cluster.owners().await?, items);
            let at = killed.elapsed();
            owned = orphans.is_empty().then_some(at);
        }
        let now = cluster.event_counts().await;
        let at = killed.elapsed();
        for item in items.iter().filter(|item| now.get(*item) > base.get(*item)) {
            resumed.entry(item.clone()).or_insert(at);
        }
        let behind: Vec<&String> = items.iter().filter(|item| !resumed.contains_key(*item)).collect();
        match (owned, behind.is_empty()) {
            (Some(owned), true) => Ok(owned),
            (owned, _) => Err(format!("owned again: {owned:?}; no new event yet: {behind:?}")),
        }
    })
    .await;
    (cluster.or_fail(waited).0, resumed)
}

/// The killed host `victim` back with its id: ready, then the cluster balanced, settled and
/// making progress. Returns spawn -> ready and spawn -> all that.
async fn rejoin(cluster: &mut Cluster, victim: usize) -> (Duration, Duration) {
    let spawned = Instant::now();
    let ready = cluster.start(victim).await;
    cluster.wait_settled(SETTLE_LIMIT, SETTLE_HOLD).await;
    cluster.wait_progress(2, 1, SETTLE_LIMIT).await;
    (ready, spawned.elapsed())
}

/// Kill `k` (from 1): odd kills take the timer's owner, even ones the other hosts in turn.
async fn kill_once(cluster: &mut Cluster, k: usize) -> Kill {
    let (timer_host, timer_id, timer_items) = cluster.timer_owner().await;
    let (victim, victim_id, items) = if k % 2 == 1 {
        (timer_host, timer_id, timer_items)
    } else {
        let others: Vec<usize> = cluster.live_indices().into_iter().filter(|i| *i != timer_host).collect();
        let victim = others[(k / 2) % others.len()];
        let id = cluster.host(victim).id.clone();
        (victim, id.clone(), owned_by(&cluster.or_fail(cluster.owners().await), &id))
    };

    let killed = cluster.kill9(victim).await;
    // The process is gone: nothing it wrote is still to come.
    let base = cluster.event_counts().await;
    let (owned_again, resumed) = wait_failover(cluster, &base, &items, killed).await;
    let timer_resumed = resumed.get(&timer_item()).copied();
    let sensors_resumed =
        resumed.iter().filter(|(item, _)| **item != timer_item()).map(|(_, at)| *at).max().unwrap_or_default();
    let (exact, violations) = cluster.exactness(1).await;
    let (ready, rejoined) = rejoin(cluster, victim).await;
    Kill {
        victim: victim_id,
        sensors: items.iter().filter(|item| **item != timer_item()).count(),
        timer: items.contains(&timer_item()),
        owned_again,
        sensors_resumed,
        timer_resumed,
        events: exact.events(),
        fires: exact.fires,
        violations,
        ready,
        rejoined,
    }
}

/// A fresh, empty database on the test server: (admin connection, its name, its URL).
async fn fresh_database() -> (PgStore, String, String) {
    let admin_url = std::env::var("ATTUNE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let admin = PgStore::connect(&admin_url).await.unwrap_or_else(|e| panic!("PostgreSQL at {admin_url}: {e}"));
    let name = format!("bench_failover_{}", uuid::Uuid::now_v7().simple());
    admin.execute_admin(&format!("CREATE DATABASE {name}")).await.unwrap_or_else(|e| panic!("{e}"));
    let server = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(server, _)| server);
    let url = format!("{server}/{name}");
    (admin, name, url)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let kills: usize = std::env::var("FAILOVER_BENCH_KILLS").ok().and_then(|n| n.parse().ok()).unwrap_or(KILLS);
    let setup = Setup {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_attune-host")),
        cache_dir: repo().join("target/attune-cache"),
        runtimes_dir: repo().join("build/runtimes"),
        counter_js: repo().join("tests/fixtures/js/counter.js"),
    };
    let (admin, name, url) = fresh_database().await;
    let load_before = load_average();
    let mut cluster = Cluster::new(setup, url).await;
    cluster.tick = POLL;
    let started = Instant::now();
    cluster.start_all(HOSTS).await;
    let owners = cluster.wait_settled(SETTLE_LIMIT, SETTLE_HOLD).await;
    cluster.wait_progress(2, 1, SETTLE_LIMIT).await;
    eprintln!("{HOSTS} hosts running {:.2?} after spawn, loads {:?}", started.elapsed(), cluster.loads(&owners));

    let mut done: Vec<Kill> = Vec::new();
    for k in 1..=kills {
        let kill = kill_once(&mut cluster, k).await;
        eprintln!(
            "kill {k}/{kills}: {} ({} sensors{}): owned again {}, work resumed {}, {} violations; back {} later",
            kill.victim,
            kill.sensors,
            if kill.timer { " + timer" } else { "" },
            secs(kill.owned_again),
            secs(kill.resumed()),
            kill.violations.len(),
            secs(kill.rejoined)
        );
        done.push(kill);
    }
    let logs = cluster.logs();
    drop(cluster);
    let _ = admin.execute_admin(&format!("DROP DATABASE {name} WITH (FORCE)")).await;

    println!(
        "\n### kill -9, {kills} times ({HOSTS} hosts, 30 JS counter sensors every 0.2 s + a 1 s timer; odd kills: the timer's owner)\n"
    );
    println!(
        "| kill | victim: items | owned again | its sensors resumed (last) | timer resumed | events / fires then | \
         exact | restarted: ready / balanced and running |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (k, kill) in done.iter().enumerate() {
        println!(
            "| {} | {}: {} sensors{} | {} | {} | {} | {} / {} | {} | {} / {} |",
            k + 1,
            kill.victim,
            kill.sensors,
            if kill.timer { " + timer" } else { "" },
            secs(kill.owned_again),
            secs(kill.sensors_resumed),
            kill.timer_resumed.map_or("-".into(), secs),
            kill.events,
            kill.fires,
            if kill.violations.is_empty() {
                "yes".to_string()
            } else {
                format!("**{} violations**", kill.violations.len())
            },
            secs(kill.ready),
            secs(kill.rejoined)
        );
    }
    let (owned_median, owned_max) = median_max(done.iter().map(|k| k.owned_again));
    let (resumed_median, resumed_max) = median_max(done.iter().map(Kill::resumed));
    let over: Vec<usize> =
        done.iter().enumerate().filter(|(_, k)| k.owned_again.max(k.resumed()) > TARGET).map(|(i, _)| i + 1).collect();
    println!("\n| figure, from the SIGKILL | median | max |\n|---|---|---|");
    println!(
        "| owned again: every item of the killed host has a live owner (API) | {} | {} |",
        secs(owned_median),
        secs(owned_max)
    );
    println!(
        "| work resumed: each of its sensors and the timer stored a new event | {} | {} |",
        secs(resumed_median),
        secs(resumed_max)
    );
    println!(
        "\nTarget ≤ {} max: {}. Load average (1/5/15 min) {load_before} before, {} after.",
        secs(TARGET),
        if over.is_empty() { "met".to_string() } else { format!("**missed** by kills {over:?}") },
        load_average()
    );
    // A violation stays in the table: each is listed once, with the first check that saw it.
    let mut first_seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, kill) in done.iter().enumerate() {
        for v in &kill.violations {
            first_seen.entry(v.as_str()).or_insert(k + 1);
        }
    }
    if !first_seen.is_empty() {
        println!("\nExactness violations (each with the kill after which it was first seen):\n");
        for (v, k) in &first_seen {
            println!("- after kill {k}: {v}");
        }
        eprintln!("{logs}");
        std::process::exit(1);
    }
}
