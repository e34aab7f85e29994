//! Several hosts (spec section 7) as real processes: N `attune-host serve` on one fresh
//! PostgreSQL database and one RabbitMQ exchange of their own, sharing a generated pack of 30
//! JavaScript counter sensors and a 1 s interval timer rule; the harness is
//! [`attune_testkit::cluster`] (shared with the failover benchmark, host/benches/failover.rs).
//! Hosts are killed with SIGKILL, frozen with SIGSTOP past their lease, stopped with SIGTERM and
//! joined while the work runs; ownership is read through the HTTP API, exactness from the
//! `events` table: each counter's stored `n` are exactly 1..=k (none lost, none twice: a stale
//! owner's write was refused), no planned timer instant stored twice.
//!
//! The tests of this file take turns (one [`Cluster`] at a time in a process): each runs three
//! or four hosts of 30 sensors and measures takeover times, which two clusters sharing two cores
//! would blur.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use attune_testkit::Collector;
use attune_testkit::cluster::{
    Cluster, LEASE, Launch, PACK, SENSORS, Setup, free_port, items_of, owned_by, pack_rules, sensor_item, tail,
    timer_item, wait_ready, wait_until,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{attune_host, fixture, postgres_database, settings};

/// A host that must refuse to start has exited within this.
const REFUSAL_LIMIT: Duration = Duration::from_secs(20);

/// The test binary's `attune-host` with the test cache and runtimes, and `counter.js`.
pub(crate) fn setup() -> Setup {
    let settings = settings();
    Setup {
        binary: attune_host().get_program().into(),
        cache_dir: settings.cache_dir,
        runtimes_dir: settings.runtimes_dir,
        counter_js: fixture("js/counter.js"),
    }
}

/// A cluster on a fresh database, no host yet.
async fn new_cluster() -> Cluster {
    Cluster::new(setup(), postgres_database().await).await
}

/// Waits until `child` exits, at most [`REFUSAL_LIMIT`]; panics (killing it) when it is still
/// running then. Returns its status and its whole log.
async fn wait_refusal(what: &str, child: &mut tokio::process::Child, port: u16, log: &Path) -> (ExitStatus, String) {
    match tokio::time::timeout(REFUSAL_LIMIT, child.wait()).await {
        Ok(status) => (status.unwrap(), std::fs::read_to_string(log).unwrap_or_default()),
        Err(_) => {
            let ready = reqwest::get(format!("http://127.0.0.1:{port}/ready")).await.is_ok_and(|r| r.status() == 200);
            let _ = child.kill().await;
            panic!(
                "{what} did not refuse to start: still running after {REFUSAL_LIMIT:?} (answering /ready: {ready}); \
                 its log ends:\n{}",
                tail(log, 30)
            );
        }
    }
}

/// Whether `text` names `word` as a whole word (not inside a longer name such as `h01`).
fn names(text: &str, word: &str) -> bool {
    let part = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    text.match_indices(word).any(|(at, _)| {
        !text[..at].chars().next_back().is_some_and(part) && !text[at + word.len()..].chars().next().is_some_and(part)
    })
}

/// 1. Three hosts: every sensor and the timer have exactly one live owner, the same on every
/// host; the load is even; `GET /hosts` lists the three with what they own; after 5 s of work,
/// every counter's sequence is exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_own_each_sensor_and_timer_once_evenly_and_sequences_stay_exact() {
    let mut cluster = new_cluster().await;
    let started = Instant::now();
    cluster.start_all(3).await;
    let ready = started.elapsed();
    let owners = cluster.wait_balanced(Duration::from_secs(20)).await;
    let owned_after = started.elapsed();

    let agreed = wait_until("every host showing the same owners", Duration::from_secs(5), async || {
        let mut views = Vec::new();
        for i in cluster.live_indices() {
            views.push((cluster.host(i).id.clone(), cluster.owners_on(i).await?));
        }
        match views.windows(2).all(|w| w[0].1 == w[1].1) {
            true => Ok(()),
            false => Err(format!("{views:?}")),
        }
    })
    .await;
    cluster.or_fail(agreed);

    let listed =
        wait_until("GET /hosts listing the live hosts with what they own", Duration::from_secs(5), async || {
            let owners = cluster.owners().await?;
            cluster.owned(&owners)?;
            let mut expected = BTreeMap::new();
            for i in cluster.live_indices() {
                let host = cluster.host(i);
                let owns = |kind: &str| {
                    owners.iter().filter(|(item, o)| item.starts_with(kind) && o.as_deref() == Some(&host.id)).count()
                        as u64
                };
                expected.insert(host.id.clone(), (format!("127.0.0.1:{}", host.port), owns("sensor:"), owns("timer:")));
            }
            let listed = cluster.hosts_listed(0).await?;
            match listed == expected {
                true => Ok(()),
                false => Err(format!("listed {listed:?}, expected (from the owners) {expected:?}")),
            }
        })
        .await;
    cluster.or_fail(listed);

    // The work runs: events accumulate.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let exact = cluster.check_exact(5).await;
    println!(
        "CLUSTER three hosts: ready {ready:.2?}, all owned and balanced {owned_after:.2?} after spawn, loads {:?}; \
         {} counter events exact (fewest {} per sensor), {} timer fires",
        cluster.loads(&owners),
        exact.events(),
        exact.per_sensor.values().min().unwrap(),
        exact.fires
    );
}

/// 2. SIGKILL of the host owning the timer: its sensors and the timer have a live owner again
/// within 5 s, the work goes on, every counter stays exact and no planned instant is stored
/// twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_timer_owner_hands_its_work_to_live_hosts_within_5_s() {
    let mut cluster = new_cluster().await;
    let collector = Collector::bind(&cluster.exchange, "#").await;
    cluster.start_all(3).await;
    cluster.wait_balanced(Duration::from_secs(20)).await;
    cluster.wait_progress(3, 1, Duration::from_secs(15)).await;
    let (victim, victim_id, items) = cluster.timer_owner().await;

    let killed = cluster.kill9(victim).await;
    let taken =
        cluster.wait_owned("the killed host's items owned by live hosts", &items, Duration::from_secs(15)).await;
    let (after, at) = cluster.or_fail(taken);
    let takeover = at - killed;
    assert!(
        takeover <= Duration::from_secs(5),
        "the {} items of {victim_id} (killed) had live owners again only {takeover:.2?} after the kill (at most 5 s)\n{}",
        items.len(),
        cluster.logs()
    );
    let resumed = cluster.wait_progress(3, 2, Duration::from_secs(15)).await;
    let exact = cluster.check_exact(1).await;
    // None lost: every stored event and enforcement reaches the broker, those the killed host
    // had claimed but not published included (again, with the same message id, if it had).
    let (events, enforcements) = cluster.stored_message_ids().await;
    let stored: BTreeSet<String> = events.union(&enforcements).cloned().collect();
    let delivered = collector
        .wait_for(Duration::from_secs(15), |r| {
            let ids: BTreeSet<&str> = r.iter().filter_map(|m| m.message_id.as_deref()).collect();
            stored.iter().all(|id| ids.contains(id.as_str()))
        })
        .await;
    collector.delete_exchange(&cluster.exchange).await;
    assert!(delivered, "stored events or enforcements never reached the broker after the kill\n{}", cluster.logs());
    println!(
        "CLUSTER kill -9 of {victim_id} (timer owner, {} items): live owners again {takeover:.2?} after the kill, \
         loads then {:?}; work resumed {resumed:.2?} later; {} counter events exact, {} timer fires, none planned \
         twice; all {} stored events and enforcements reached the broker",
        items.len(),
        cluster.loads(&after),
        exact.events(),
        exact.fires,
        stored.len()
    );
}

/// 3. SIGSTOP of the timer's owner for 5 s, past its 3 s lease (longer if its items have not
/// moved yet, at most 10 s): its items move to the live hosts during the stop; after SIGCONT its
/// stale work writes nothing (it fenced itself, or its writes were refused), every counter stays
/// exact, it rejoins and gets a share again; and its items had moved within 5 s of the stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_frozen_past_its_lease_loses_its_work_and_stores_nothing_stale_after_it_resumes() {
    /// Frozen at least this long, and until its items moved ..
    const FROZEN: Duration = Duration::from_secs(5);
    /// .. at most this long.
    const FROZEN_MAX: Duration = Duration::from_secs(10);
    let mut cluster = new_cluster().await;
    cluster.start_all(3).await;
    cluster.wait_balanced(Duration::from_secs(20)).await;
    cluster.wait_progress(3, 1, Duration::from_secs(15)).await;
    let (victim, victim_id, items) = cluster.timer_owner().await;
    let rejections_before = cluster.or_fail(cluster.metric(victim, "attune_fence_rejections_total").await);

    let stopped = cluster.stop(victim);
    let moved = cluster.wait_owned("the frozen host's items owned by live hosts", &items, FROZEN_MAX).await;
    let moved_after = cluster.or_fail(moved.map_err(|e| format!("{e} (lease {LEASE:?})"))).1 - stopped;
    tokio::time::sleep(FROZEN.saturating_sub(stopped.elapsed())).await;
    let frozen = stopped.elapsed();
    cluster.cont(victim);

    // The frozen host's poll loops and timer were due long ago: they run at once on SIGCONT.
    cluster.wait_progress(3, 2, Duration::from_secs(15)).await;
    let exact = cluster.check_exact(1).await;
    let rejections = cluster.or_fail(cluster.metric(victim, "attune_fence_rejections_total").await);
    println!(
        "CLUSTER SIGSTOP of {victim_id} ({} items) for {frozen:.2?}: moved {moved_after:.2?} after the stop; after \
         SIGCONT {} counter events exact, {} timer fires; attune_fence_rejections_total on {victim_id}: \
         {rejections_before:?} before, {rejections:?} after (0 = it fenced itself before writing)",
        items.len(),
        exact.events(),
        exact.fires
    );

    let rejoined = cluster.wait_balanced(Duration::from_secs(15)).await;
    let exact = cluster.check_exact(1).await;
    println!(
        "CLUSTER {victim_id} rejoined: loads {:?}; still exact ({} counter events)",
        cluster.loads(&rejoined),
        exact.events()
    );
    assert!(
        moved_after <= FROZEN,
        "the {} items of {victim_id} (frozen past its {LEASE:?} lease) had live owners only {moved_after:.2?} after \
         the stop (at most {FROZEN:?})",
        items.len()
    );
}

/// 4. A fourth host joins: the load is even again and few sensors moved (at most twice the
/// newcomer's fair share); then SIGTERM of one host: its graceful stop releases its items, which
/// have new owners within 2 s of the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_host_takes_a_fair_share_moving_few_and_a_sigterm_hands_work_over_within_2_s() {
    let mut cluster = new_cluster().await;
    cluster.start_all(3).await;
    let before = cluster.wait_settled(Duration::from_secs(20), Duration::from_secs(1)).await;

    let joined = Instant::now();
    cluster.start(3).await;
    let after = cluster.wait_settled(Duration::from_secs(20), Duration::from_secs(1)).await;
    let rebalanced = joined.elapsed();
    let moved = (0..SENSORS).map(sensor_item).filter(|item| before[item] != after[item]).count();
    let bound = (2 * SENSORS).div_ceil(4);
    println!(
        "CLUSTER h3 joined: balanced again {rebalanced:.2?} after its spawn; sensors moved {moved} (bound {bound}), \
         timer moved {}; loads {:?} -> {:?}",
        before[&timer_item()] != after[&timer_item()],
        cluster.loads(&before),
        cluster.loads(&after)
    );
    assert!(moved <= bound, "{moved} of {SENSORS} sensors moved when a fourth host joined (at most {bound})");

    let leaver = 1;
    let leaver_id = Cluster::id(leaver);
    let items = owned_by(&after, &leaver_id);
    let sent = cluster.terminate(leaver);
    let handed =
        cluster.wait_owned("the stopping host's items owned by live hosts", &items, Duration::from_secs(10)).await;
    let handover = cluster.or_fail(handed).1 - sent;
    let status = cluster.wait_exit(leaver, Duration::from_secs(10)).await;
    let exited = sent.elapsed();
    assert!(status.success(), "{leaver_id} exited with {status} on SIGTERM\n{}", cluster.logs());
    assert!(
        handover <= Duration::from_secs(2),
        "the {} items of {leaver_id} had new owners only {handover:.2?} after its SIGTERM (at most 2 s: a graceful \
         stop releases them)\n{}",
        items.len(),
        cluster.logs()
    );
    let remaining = cluster.wait_balanced(Duration::from_secs(10)).await;
    cluster.wait_progress(3, 1, Duration::from_secs(15)).await;
    let exact = cluster.check_exact(1).await;
    println!(
        "CLUSTER SIGTERM of {leaver_id} ({} items): new owners {handover:.2?} after the signal, exited {exited:.2?} \
         after it; loads {:?}; {} counter events exact, {} timer fires",
        items.len(),
        cluster.loads(&remaining),
        exact.events(),
        exact.fires
    );
}

/// 5. In steady state (no kill, no stop) every stored event and enforcement reaches a RabbitMQ
/// consumer exactly once: three hosts publishing from one outbox claim each row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stored_event_and_enforcement_reaches_the_broker_exactly_once_in_steady_state() {
    let mut cluster = new_cluster().await;
    let collector = Collector::bind(&cluster.exchange, "#").await;
    cluster.start_all(3).await;
    cluster.wait_balanced(Duration::from_secs(20)).await;
    cluster.wait_progress(10, 3, Duration::from_secs(20)).await;

    let (events, enforcements) = cluster.stored_message_ids().await;
    assert!(enforcements.len() >= 300, "only {} enforcements stored", enforcements.len());
    let stored: BTreeSet<String> = events.union(&enforcements).cloned().collect();
    let ours =
        |m: &attune_testkit::Received| m.routing_key.starts_with("event.") || m.routing_key.starts_with("enforcement.");
    let arrived = collector
        .wait_for(Duration::from_secs(15), |r| {
            let ids: BTreeSet<&str> = r.iter().filter(|m| ours(m)).filter_map(|m| m.message_id.as_deref()).collect();
            stored.iter().all(|id| ids.contains(id.as_str()))
        })
        .await;
    // A second publish of a row would come about when the first did: give it time to show.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let received: Vec<attune_testkit::Received> = collector.received().into_iter().filter(|m| ours(m)).collect();
    let mut copies: BTreeMap<String, usize> = BTreeMap::new();
    for message in &received {
        attune_testkit::assert_well_formed(message);
        *copies.entry(message.message_id.clone().unwrap()).or_default() += 1;
    }
    let missing: Vec<&String> = stored.iter().filter(|id| !copies.contains_key(*id)).collect();
    assert!(
        arrived && missing.is_empty(),
        "{} of {} stored events and enforcements never reached the broker, e.g. {:?}\n{}",
        missing.len(),
        stored.len(),
        &missing[..missing.len().min(5)],
        cluster.logs()
    );
    let twice: Vec<(&String, &usize)> = copies.iter().filter(|(_, n)| **n > 1).collect();
    let (events_now, enforcements_now) = cluster.stored_message_ids().await;
    let unknown: Vec<&String> =
        copies.keys().filter(|id| !events_now.contains(*id) && !enforcements_now.contains(*id)).collect();
    assert!(
        twice.is_empty(),
        "{} messages published more than once in steady state (no host was killed), e.g. {:?}",
        twice.len(),
        &twice[..twice.len().min(5)]
    );
    assert!(unknown.is_empty(), "published without a stored row: {:?}", &unknown[..unknown.len().min(5)]);
    collector.delete_exchange(&cluster.exchange).await;
    println!(
        "CLUSTER outbox: {} events and {} enforcements stored at the snapshot, each received once; {} messages \
         received in all, none twice",
        events.len(),
        enforcements.len(),
        received.len()
    );
}

/// 6. Two hosts starting together on an empty database: both become ready, one admin token is
/// made (one file, one row), the pack's rules are installed once (one announcement each), and
/// two concurrent `POST /rules` of one ref on the two hosts make one 201 and one 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_starting_together_on_an_empty_database_bootstrap_once() {
    let mut cluster = new_cluster().await;
    cluster.start_all(2).await;

    let files: Vec<PathBuf> = (0..2).map(|i| cluster.data_dir(i).join("admin.token")).filter(|p| p.is_file()).collect();
    let (tokens,) =
        sqlx::query_as::<_, (i64,)>("SELECT count(*) FROM api_tokens").fetch_one(&cluster.pool).await.unwrap();
    assert_eq!(
        files.len(),
        1,
        "admin token files {files:?}: one host must make the first admin token\n{}",
        cluster.logs()
    );
    assert_eq!(tokens, 1, "{tokens} tokens stored: one host must make the first admin token");

    for i in 0..2 {
        let listed = wait_until("the pack's rules listed", Duration::from_secs(10), async || {
            let rules = cluster.get(i, &format!("/api/v1/rules?pack={PACK}&limit=1000")).await?;
            let refs: BTreeSet<&str> = items_of(&rules, "rules")?.iter().filter_map(|r| r["ref"].as_str()).collect();
            let missing: Vec<String> = pack_rules().into_iter().filter(|r| !refs.contains(r.as_str())).collect();
            if missing.is_empty() { Ok(()) } else { Err(format!("h{i} lacks {missing:?}")) }
        })
        .await;
        cluster.or_fail(listed);
    }
    let announced =
        sqlx::query_as::<_, (String, String)>("SELECT routing_key, body FROM outbox WHERE routing_key LIKE 'rule.%'")
            .fetch_all(&cluster.pool)
            .await
            .unwrap();
    let mut per_rule: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, body) in &announced {
        let body: Value = serde_json::from_str(body).unwrap_or(Value::Null);
        per_rule.entry(body["rule"].as_str().unwrap_or("?").to_string()).or_default().push(key.clone());
    }
    let twice: Vec<(String, Vec<String>)> = pack_rules()
        .into_iter()
        .map(|r| (r.clone(), per_rule.get(&r).cloned().unwrap_or_default()))
        .filter(|(_, keys)| keys.len() != 1)
        .collect();
    assert!(
        twice.is_empty(),
        "pack rules not installed exactly once (their rule.* announcements): {twice:?}\n{}",
        cluster.logs()
    );

    let mut outcomes = Vec::new();
    for k in 0..5 {
        let rule =
            json!({"ref": format!("{PACK}.race{k}"), "trigger": format!("{PACK}.t00"), "action": {"ref": "core.noop"}});
        let (a, b) = tokio::join!(
            cluster.call(0, Method::POST, "/api/v1/rules", Some(rule.clone())),
            cluster.call(1, Method::POST, "/api/v1/rules", Some(rule.clone()))
        );
        let (a, b) = (cluster.or_fail(a), cluster.or_fail(b));
        let mut statuses = [a.0, b.0];
        statuses.sort_unstable();
        assert_eq!(statuses, [201, 409], "{PACK}.race{k} posted on both hosts at once: h0 {a:?}, h1 {b:?}");
        outcomes.push(format!("{}/{}", a.0, b.0));
    }
    println!(
        "CLUSTER two hosts on an empty database: one admin token ({}), {} pack rules announced once each; \
         concurrent POST /rules (h0/h1): {outcomes:?}",
        files[0].parent().unwrap().file_name().unwrap().to_string_lossy(),
        pack_rules().len()
    );
}

/// 7a. A second host with the id of a live one refuses to start, non-zero, naming the id; the
/// live one is undisturbed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_with_the_id_of_a_live_one_refuses_to_start_naming_it() {
    let mut cluster = new_cluster().await;
    cluster.start(0).await;
    let data = cluster.root.path().join("twin");
    let (port, mut twin) = cluster.spawn_outside(&data, "h0");
    let started = Instant::now();
    let (status, log) = wait_refusal("a second host with id h0", &mut twin, port, &data.join("serve.log")).await;
    let refused = started.elapsed();
    assert!(!status.success(), "the second h0 exited with {status}, not an error:\n{log}");
    assert!(names(&log, "h0"), "the second h0's refusal does not name the id h0:\n{log}");

    let listed = wait_until("h0 still serving, listed once", Duration::from_secs(5), async || {
        let hosts = cluster.hosts_listed(0).await?;
        match hosts.keys().collect::<Vec<_>>() == ["h0"] {
            true => Ok(()),
            false => Err(format!("{hosts:?}")),
        }
    })
    .await;
    cluster.or_fail(listed);
    println!(
        "CLUSTER second host with id h0: refused in {refused:.2?} with {status}: {}",
        log.lines().rev().find(|l| names(l, "h0")).unwrap_or_default()
    );
}

/// 7b. SQLite is single-host: a second host on the same SQLite file refuses to start, non-zero,
/// naming the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_on_one_sqlite_file_refuses_to_start_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let packs = root.path().join("packs");
    std::fs::create_dir_all(&packs).unwrap();
    let file = root.path().join("shared.db");
    let database = format!("sqlite://{}", file.display());
    let setup = setup();
    let launch = |port: u16, data: &Path| {
        let (setup, packs, database) = (&setup, &packs, &database);
        Launch { setup, port, packs, data, database, amqp: None, exchange: None, host_id: None }.spawn()
    };
    let (first_port, first_data) = (free_port(), root.path().join("first"));
    let mut first = launch(first_port, &first_data);
    wait_ready("the first SQLite host", &mut first, first_port, &first_data.join("serve.log")).await;

    let (second_port, second_data) = (free_port(), root.path().join("second"));
    let mut second = launch(second_port, &second_data);
    let started = Instant::now();
    let (status, log) =
        wait_refusal("a second host on the same SQLite file", &mut second, second_port, &second_data.join("serve.log"))
            .await;
    let refused = started.elapsed();
    assert!(!status.success(), "the second SQLite host exited with {status}, not an error:\n{log}");
    let path = file.display().to_string();
    assert!(log.contains(&path), "the second SQLite host's refusal does not name {path}:\n{log}");
    assert!(first.try_wait().unwrap().is_none(), "the first SQLite host died");
    println!(
        "CLUSTER second host on {path}: refused in {refused:.2?} with {status}: {}",
        log.lines().rev().find(|l| l.contains(&path)).unwrap_or_default()
    );
}

/// 8. PostgreSQL cut for 10 s under three hosts (a TCP proxy between them and the database):
/// every host stops its work before its lease could end, and all resume by themselves once the
/// database is back, the sequences exact (no sensor ran on two hosts across the outage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_cut_fences_every_host_then_all_resume_exactly() {
    const CUT: Duration = Duration::from_secs(10);
    let database = postgres_database().await;
    let (upstream, via) = crate::faults::through_proxy(&database).await;
    let proxy = attune_testkit::Proxy::start(upstream).await;
    let mut cluster = Cluster::new(setup(), database.clone()).await;
    cluster.hosts_database = Some(via(proxy.addr));
    cluster.start_all(3).await;
    cluster.wait_balanced(Duration::from_secs(20)).await;
    cluster.wait_progress(3, 1, Duration::from_secs(15)).await;

    proxy.cut_now();
    // The outage is what this test is about: it lasts CUT whatever happens meanwhile.
    tokio::time::sleep(CUT).await;
    proxy.set_down(false);
    let resumed = cluster.wait_progress(3, 1, Duration::from_secs(30)).await;
    let exact = cluster.check_exact(1).await;
    let fenced: Vec<usize> = cluster
        .live_indices()
        .into_iter()
        .filter(|i| {
            std::fs::read_to_string(cluster.log_path(*i))
                .unwrap_or_default()
                .contains("the lease was not renewed in time: stopping all work")
        })
        .collect();
    println!(
        "CLUSTER PostgreSQL cut for {CUT:?}: hosts that fenced themselves {fenced:?}; work resumed {resumed:.2?} \
         after the database came back; {} counter events exact, {} timer fires",
        exact.events(),
        exact.fires
    );
    assert_eq!(fenced, cluster.live_indices(), "every host cut off from its lease stops its work");
    let balanced = cluster.wait_balanced(Duration::from_secs(15)).await;
    assert_eq!(cluster.live().len(), 3, "{balanced:?}");
}
