//! The fault suite, as real processes: `attune-host serve` (the binary) under load — a
//! JavaScript counter sensor polling every 100 ms, a 1 s interval timer rule and a client posting
//! `POST /api/v1/events` in a loop — while its broker connection is cut for 30 s, its database
//! connection is cut, it is killed with SIGKILL and started again, or stopped with SIGTERM.
//! Nothing acknowledged is lost, every stored event and enforcement reaches RabbitMQ, and a
//! message comes twice only as at-least-once delivery allows (the same `message_id`).
//!
//! Each test's host publishes to an exchange of its own (`--amqp-exchange`), where its consumer
//! counts the messages of that test's pack: its rules, triggers and timer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attune_host::store::{ListFilter, Store};
use attune_testkit::{Collector, Proxy, Received, amqp_url, broker_addr};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::support::{attune_host, fixture, postgres_database};

/// The deliberate broker outage of the first test.
const BROKER_CUT: Duration = Duration::from_secs(30);
/// The deliberate database outage of the second test: long enough for the sensor to fail (and
/// back off) three times, short of its quarantine.
const PG_CUT: Duration = Duration::from_secs(4);
/// Pause between two requests of the client.
const CLIENT_PAUSE: Duration = Duration::from_millis(20);

/// A pack `<pack>` for one test: a trigger the counter sensor feeds, one the client posts to.
struct Rig {
    pack: &'static str,
    /// The test's own exchange.
    exchange: String,
    packs: tempfile::TempDir,
    data: tempfile::TempDir,
    /// The API port, kept across restarts.
    port: u16,
}

impl Rig {
    fn new(pack: &'static str) -> Self {
        let packs = tempfile::tempdir().unwrap();
        let dir = packs.path().join(pack);
        let write = |rel: &str, text: &str| {
            let path = dir.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("pack.yaml", &format!("ref: {pack}\nversion: 1.0.0\n"));
        write(
            "triggers/tick.yaml",
            "ref: tick\npayload_schema: {type: object, required: [n], properties: {n: {type: integer}}}\n",
        );
        write(
            "triggers/posted.yaml",
            "ref: posted\npayload_schema: {type: object, required: [i], properties: {i: {type: integer}}}\n",
        );
        write(
            "sensors/counter.yaml",
            &format!(
                "ref: counter\ntriggers: [{pack}.tick]\nruntime: javascript\nentry: counter.js\npoll_interval: 0.1\n"
            ),
        );
        std::fs::copy(fixture("js/counter.js"), dir.join("sensors/counter.js")).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Rig { pack, exchange: attune_testkit::unique_name(), packs, data: tempfile::tempdir().unwrap(), port }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn rules(&self) -> [String; 3] {
        let pack = self.pack;
        [format!("{pack}.on_tick"), format!("{pack}.on_posted"), format!("{pack}.every")]
    }

    /// Starts `attune-host serve` on this rig's port, packs and data directory, and waits until
    /// it is ready. Its log is appended to `serve.log` in the data directory.
    async fn serve(&self, database_url: &str, amqp: Option<&str>) -> Serve {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let mut command = tokio::process::Command::from(attune_host());
        command
            .args(["serve", "--listen", &format!("127.0.0.1:{}", self.port), "--database-url", database_url])
            .arg("--packs")
            .arg(self.packs.path())
            .arg("--data-dir")
            .arg(self.data.path())
            .args(["--amqp-exchange", &self.exchange])
            .env_remove("ATTUNE_AMQP_URL")
            .env_remove("ATTUNE_CONFIG")
            .env("ATTUNE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        if let Some(url) = amqp {
            command.args(["--amqp-url", url]);
        }
        let mut child = command.spawn().unwrap();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        let started = Instant::now();
        loop {
            let ready = client.get(format!("{}/ready", self.base())).send().await;
            if ready.is_ok_and(|r| r.status() == 200) {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("serve exited ({status}) before it was ready:\n{}", self.log_tail());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "serve not ready in 30 s:\n{}", self.log_tail());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let token = std::fs::read_to_string(self.data.path().join("admin.token")).unwrap().trim().to_string();
        Serve { child, base: self.base(), token, client, ready_after: started.elapsed() }
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.data.path().join("serve.log")
    }

    /// The last lines of the host's log, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Creates the three rules under load: the sensor's trigger, the client's trigger, and a
    /// timer firing every second.
    async fn add_rules(&self, host: &Serve) {
        let pack = self.pack;
        let echo = |message: &str| json!({"ref": "core.echo", "parameters": {"message": message}});
        for rule in [
            json!({"ref": format!("{pack}.on_tick"), "trigger": format!("{pack}.tick"),
                   "action": echo("tick {{ event.payload.n }}")}),
            json!({"ref": format!("{pack}.on_posted"), "trigger": format!("{pack}.posted"),
                   "action": echo("posted {{ event.payload.i }}")}),
            json!({"ref": format!("{pack}.every"), "trigger": "core.intervaltimer",
                   "trigger_params": {"interval": 1, "unit": "seconds"},
                   "action": echo("fire {{ event.payload.execution_count }}")}),
        ] {
            let (status, body) = host.call(Method::POST, "/api/v1/rules", Some(rule)).await;
            assert_eq!(status, 201, "{body}");
        }
    }

    /// Ends the load: the rules are disabled (the sensor and the timer stop) and the client stops.
    async fn quiesce(&self, host: &Serve, load: Load) -> Vec<Outcome> {
        let outcomes = load.stop().await;
        for rule in self.rules() {
            let (status, body) = host.call(Method::POST, &format!("/api/v1/rules/{rule}/disable"), None).await;
            assert_eq!(status, 200, "{body}");
        }
        outcomes
    }

    /// Whether a bus message is one of this rig's: an enforcement of its rules, or an event of
    /// its triggers or its timer.
    fn owns(&self, message: &Received) -> bool {
        let prefix = format!("{}.", self.pack);
        let field = |name: &str| message.body[name].as_str().unwrap_or_default();
        match message.routing_key.as_str() {
            "enforcement.created" => field("rule").starts_with(&prefix),
            "event.created" => {
                field("trigger").starts_with(&prefix) || field("source") == format!("timer:{}.every", self.pack)
            }
            _ => false,
        }
    }
}

/// A running `attune-host serve`.
struct Serve {
    child: tokio::process::Child,
    base: String,
    token: String,
    client: reqwest::Client,
    /// From spawn to `/ready` answering 200.
    ready_after: Duration,
}

impl Serve {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("still running").to_string();
        assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success());
    }

    /// SIGTERM; returns the exit status and how long the process took to exit (at most 10 s).
    async fn terminate(mut self) -> (std::process::ExitStatus, Duration) {
        let sent = Instant::now();
        self.signal("-TERM");
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("serve exits within 10 s of SIGTERM")
            .unwrap();
        (status, sent.elapsed())
    }

    /// SIGKILL, and waits for the process to be gone.
    async fn kill(mut self) -> std::process::ExitStatus {
        self.signal("-KILL");
        self.child.wait().await.unwrap()
    }
}

/// One request of the load client.
#[derive(Debug, Clone)]
struct Outcome {
    started: Instant,
    ended: Instant,
    /// `None`: no HTTP answer (connection refused or reset).
    status: Option<u16>,
    retry_after: Option<String>,
    /// The ids a 201 acknowledged.
    event_ids: Vec<String>,
    /// The answer's body or the transport error, shown by failure messages.
    #[allow(dead_code)]
    error: Option<String>,
}

impl Outcome {
    fn elapsed(&self) -> Duration {
        self.ended - self.started
    }
}

/// The client: posts one event to `<pack>.posted` every [`CLIENT_PAUSE`], recording every answer.
struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    task: JoinHandle<()>,
}

impl Load {
    fn start(rig: &Rig, token: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let url = format!("{}/api/v1/events", rig.base());
        let trigger = format!("{}.posted", rig.pack);
        let token = token.to_string();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        let task = tokio::spawn({
            let (stop, outcomes) = (stop.clone(), outcomes.clone());
            async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let started = Instant::now();
                    let body = json!({"trigger": trigger, "payload": {"i": i}});
                    let sent = client
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/json")
                        .body(body.to_string())
                        .send()
                        .await;
                    let outcome = match sent {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            let retry_after =
                                response.headers().get("retry-after").map(|v| v.to_str().unwrap_or("?").to_string());
                            let text = response.text().await.unwrap_or_default();
                            let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                            let event_ids = match status {
                                201 => body["event_ids"]
                                    .as_array()
                                    .unwrap_or_else(|| panic!("a 201 without event ids: {body}"))
                                    .iter()
                                    .map(|id| id.as_str().unwrap().to_string())
                                    .collect(),
                                _ => Vec::new(),
                            };
                            let error = (status != 201).then(|| body.to_string());
                            Outcome {
                                started,
                                ended: Instant::now(),
                                status: Some(status),
                                retry_after,
                                event_ids,
                                error,
                            }
                        }
                        Err(e) => Outcome {
                            started,
                            ended: Instant::now(),
                            status: None,
                            retry_after: None,
                            event_ids: Vec::new(),
                            error: Some(e.to_string()),
                        },
                    };
                    outcomes.lock().unwrap().push(outcome);
                    tokio::time::sleep(CLIENT_PAUSE).await;
                }
            }
        });
        Load { stop, outcomes, task }
    }

    fn snapshot(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    /// Waits until `done(outcomes)` holds, at most `limit`; returns whether it did.
    async fn wait_for(&self, limit: Duration, done: impl Fn(&[Outcome]) -> bool) -> bool {
        let started = Instant::now();
        loop {
            if done(&self.outcomes.lock().unwrap()) {
                return true;
            }
            if started.elapsed() > limit {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.unwrap();
        self.outcomes.lock().unwrap().clone()
    }
}

fn acknowledged(outcomes: &[Outcome]) -> Vec<String> {
    outcomes.iter().flat_map(|o| o.event_ids.iter().cloned()).collect()
}

fn count_status(outcomes: &[Outcome], status: Option<u16>) -> usize {
    outcomes.iter().filter(|o| o.status == status).count()
}

/// Every stored row of one kind, paging through the store (newest first).
async fn stored_events(store: &dyn Store) -> Vec<attune_host::store::EventRecord> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page =
            store.events(&ListFilter { limit: 1000, before: before.take(), ..Default::default() }).await.unwrap();
        let Some(last) = page.last() else { return all };
        before = Some(last.id.clone());
        all.extend(page);
    }
}

async fn stored_enforcement_ids(store: &dyn Store) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    let mut before = None;
    loop {
        let filter = ListFilter { limit: 1000, before: before.take(), ..Default::default() };
        let page = store.enforcements(&filter).await.unwrap();
        let Some(last) = page.last() else { return all };
        before = Some(last.id.clone());
        all.extend(page.into_iter().map(|e| e.id));
    }
}

/// Ids of every stored event and enforcement: the messages the bus must carry.
async fn stored_message_ids(store: &dyn Store) -> BTreeSet<String> {
    let mut ids = stored_enforcement_ids(store).await;
    ids.extend(stored_events(store).await.into_iter().map(|e| e.id));
    ids
}

/// Waits until the outbox has no unpublished row, at most `limit`; returns how long it took.
async fn drained(store: &dyn Store, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let backlog = store.outbox_backlog().await.unwrap();
        if backlog == 0 {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{backlog} outbox rows still unpublished after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the consumer received of this rig's messages, checked against what is stored: every
/// stored event and enforcement published (0 lost), nothing published that is not stored, and a
/// message received twice only with the same id and body (at-least-once).
struct Delivered {
    stored: usize,
    received: usize,
    distinct: usize,
    duplicates: usize,
}

async fn check_delivered(rig: &Rig, collector: &Collector, store: &dyn Store) -> Delivered {
    let stored = stored_message_ids(store).await;
    let ours = |received: &[Received]| -> Vec<Received> { received.iter().filter(|m| rig.owns(m)).cloned().collect() };
    let arrived = collector
        .wait_for(Duration::from_secs(15), |r| {
            let ids: BTreeSet<&str> = r.iter().filter_map(|m| m.message_id.as_deref()).collect();
            stored.iter().all(|id| ids.contains(id.as_str()))
        })
        .await;
    let received = ours(&collector.received());
    let mut by_id: HashMap<String, Vec<&Received>> = HashMap::new();
    for message in &received {
        attune_testkit::assert_well_formed(message);
        by_id.entry(message.message_id.clone().unwrap()).or_default().push(message);
    }
    let missing: Vec<&String> = stored.iter().filter(|id| !by_id.contains_key(*id)).collect();
    assert!(
        arrived && missing.is_empty(),
        "{} of {} stored events and enforcements never reached the broker, e.g. {:?}",
        missing.len(),
        stored.len(),
        &missing[..missing.len().min(5)]
    );
    let unknown: Vec<&String> = by_id.keys().filter(|id| !stored.contains(*id)).collect();
    assert!(unknown.is_empty(), "published without a stored row: {unknown:?}");
    let mut duplicates = 0;
    for (id, copies) in &by_id {
        duplicates += copies.len() - 1;
        for copy in &copies[1..] {
            assert_eq!(copy.body, copies[0].body, "{id} was published twice with different bodies");
            assert_eq!(copy.routing_key, copies[0].routing_key, "{id}");
        }
    }
    Delivered { stored: stored.len(), received: received.len(), distinct: by_id.len(), duplicates }
}

/// Every event a 201 acknowledged is stored; the counter sensor's events are `n` = 1, 2, .. with
/// none missing and none twice (its state is written with its events). Returns (events stored,
/// counter events).
async fn check_stored(rig: &Rig, store: &dyn Store, acknowledged: &[String]) -> (usize, usize) {
    let events = stored_events(store).await;
    let ids: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|id| !ids.contains(id.as_str())).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged events are not stored: {lost:?}", lost.len(), acknowledged.len());
    let tick = format!("{}.tick", rig.pack);
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for event in events.iter().filter(|e| e.trigger_ref == tick) {
        *counts.entry(event.payload["n"].as_i64().unwrap()).or_default() += 1;
    }
    let max = counts.keys().next_back().copied().unwrap_or(0);
    let gaps: Vec<i64> = (1..=max).filter(|n| !counts.contains_key(n)).collect();
    let twice: Vec<(&i64, &usize)> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(gaps.is_empty(), "counter payloads lost: n = {gaps:?} (of 1..={max})\n{}", rig.log_tail());
    assert!(twice.is_empty(), "counter payloads stored twice: {twice:?}");
    (events.len(), counts.len())
}

/// `url` with its host and port replaced by `proxy`'s; and the address it named.
pub(crate) async fn through_proxy(url: &str) -> (SocketAddr, impl FnOnce(SocketAddr) -> String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((user, hostport)) => (format!("{user}@"), hostport),
        None => (String::new(), authority),
    };
    let hostport = if hostport.contains(':') { hostport.to_string() } else { format!("{hostport}:5432") };
    let upstream = tokio::net::lookup_host(hostport).await.unwrap().next().unwrap();
    let (scheme, path) = (scheme.to_string(), path.to_string());
    (upstream, move |proxy: SocketAddr| format!("{scheme}://{userinfo}{proxy}/{path}"))
}

/// 1. RabbitMQ cut for 30 s under load (PostgreSQL store, the AMQP connection through a proxy):
/// the outbox keeps what is stored meanwhile, and once the broker is back every stored event and
/// enforcement is published, duplicates only with the same message id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_cut_for_30_s_under_load_loses_nothing() {
    let rig = Rig::new("fault_broker");
    let collector = Collector::bind(&rig.exchange, "#").await;
    let proxy = Proxy::start(broker_addr().await).await;
    let database = postgres_database().await;
    let host = rig.serve(&database, Some(&proxy.url())).await;
    let store = attune_host::store::open(&database).await.unwrap();
    rig.add_rules(&host).await;
    let load = Load::start(&rig, &host.token);
    assert!(
        collector.wait_for(Duration::from_secs(15), |r| r.iter().filter(|m| rig.owns(m)).count() >= 50).await,
        "no traffic before the cut:\n{}",
        rig.log_tail()
    );

    let ours = |r: &[Received]| r.iter().filter(|m| rig.owns(m)).count();
    proxy.cut_now();
    let received_at_cut = ours(&collector.received());
    let stored_at_cut = stored_message_ids(store.as_ref()).await.len();
    tokio::time::sleep(BROKER_CUT).await;
    let stored_at_restore = stored_message_ids(store.as_ref()).await;
    let backlog_at_restore = store.outbox_backlog().await.unwrap();
    let received_during_cut = ours(&collector.received()) - received_at_cut;
    assert!(
        stored_at_restore.len() > stored_at_cut + 100,
        "the load did not go on while the broker was away: {stored_at_cut} -> {}",
        stored_at_restore.len()
    );
    assert!(backlog_at_restore > 100, "the outbox did not keep the messages of the cut: {backlog_at_restore}");

    proxy.set_down(false);
    let restored = Instant::now();
    let caught_up = collector
        .wait_for(Duration::from_secs(30), |r| {
            let ids: BTreeSet<&str> = r.iter().filter_map(|m| m.message_id.as_deref()).collect();
            stored_at_restore.iter().all(|id| ids.contains(id.as_str()))
        })
        .await;
    let backlog_delivered = restored.elapsed();
    assert!(caught_up, "the backlog of the cut was not delivered within 30 s:\n{}", rig.log_tail());

    let outcomes = rig.quiesce(&host, load).await;
    drained(store.as_ref(), Duration::from_secs(15)).await;
    let delivered = check_delivered(&rig, &collector, store.as_ref()).await;
    let acked = acknowledged(&outcomes);
    let (events, ticks) = check_stored(&rig, store.as_ref(), &acked).await;
    assert_eq!(count_status(&outcomes, Some(201)), outcomes.len(), "the API failed while the broker was away");
    let (status, _) = host.terminate().await;
    assert!(status.success(), "{status}");
    println!(
        "FIGURES broker cut {BROKER_CUT:?}: events stored {events} (counter {ticks}, posted {}), messages stored {}, \
         backlog at restore {backlog_at_restore}, received during the cut {received_during_cut}, backlog delivered \
         {backlog_delivered:.2?} after restore, received {} ({} distinct), duplicates {}, lost 0",
        acked.len(),
        delivered.stored,
        delivered.received,
        delivered.distinct,
        delivered.duplicates
    );
}

/// 2. PostgreSQL cut under load (the database URL through a proxy): requests fail fast with 503
/// and `Retry-After`, nothing acknowledged is lost, and requests succeed again within 2 s of the
/// database coming back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_answers_503_fast_and_loses_nothing_acknowledged() {
    let rig = Rig::new("fault_pg");
    let database = postgres_database().await;
    let (upstream, via) = through_proxy(&database).await;
    let proxy = Proxy::start(upstream).await;
    let host = rig.serve(&via(proxy.addr), None).await;
    let store = attune_host::store::open(&database).await.unwrap();
    rig.add_rules(&host).await;
    let load = Load::start(&rig, &host.token);
    assert!(load.wait_for(Duration::from_secs(10), |o| count_status(o, Some(201)) >= 50).await, "no traffic");

    proxy.cut_now();
    let cut = Instant::now();
    // `/ready` names the store, fast.
    let probe = Instant::now();
    let ready = host.client.get(format!("{}/ready", host.base)).send().await.unwrap();
    let ready_took = probe.elapsed();
    assert_eq!(ready.status(), 503);
    let ready: Value = serde_json::from_str(&ready.text().await.unwrap()).unwrap();
    assert!(ready["failed"].to_string().contains("store"), "{ready}");
    // The outage lasts (deliberately) PG_CUT, and until the client saw 20 refusals of requests
    // sent after it began.
    let refused_in_cut = |o: &[Outcome]| o.iter().filter(|o| o.started >= cut && o.status == Some(503)).count();
    assert!(
        load.wait_for(Duration::from_secs(30), |o| refused_in_cut(o) >= 20).await,
        "requests during the cut were not refused: {:?}",
        load.snapshot().iter().filter(|o| o.started >= cut).take(5).collect::<Vec<_>>()
    );
    tokio::time::sleep(PG_CUT.saturating_sub(cut.elapsed())).await;
    proxy.set_down(false);
    let restored = Instant::now();
    let outage = restored - cut;
    let recovered = |o: &[Outcome]| o.iter().find(|o| o.started >= restored && o.status == Some(201)).map(|o| o.ended);
    assert!(load.wait_for(Duration::from_secs(10), |o| recovered(o).is_some()).await, "no recovery in 10 s");
    let recovery = recovered(&load.snapshot()).unwrap() - restored;
    assert!(
        load.wait_for(Duration::from_secs(10), |o| o.iter().filter(|o| o.started >= restored).count() >= 50).await,
        "the client stalled after the database came back"
    );
    // The sensor, backing off since its polls failed, polls again and is stored.
    let newest_tick = || async {
        let filter = ListFilter { trigger_ref: Some(format!("{}.tick", rig.pack)), limit: 1, ..Default::default() };
        store.events(&filter).await.unwrap().first().map_or(0, |e| e.payload["n"].as_i64().unwrap())
    };
    let tick_at_restore = newest_tick().await;
    let waiting = Instant::now();
    while newest_tick().await < tick_at_restore + 3 {
        assert!(waiting.elapsed() < Duration::from_secs(15), "the sensor did not resume:\n{}", rig.log_tail());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let outcomes = rig.quiesce(&host, load).await;
    // Requests sent during the cut and answered before its end: 503 with Retry-After, each fast.
    let in_cut: Vec<&Outcome> = outcomes.iter().filter(|o| o.started >= cut && o.ended <= restored).collect();
    for outcome in &in_cut {
        assert_eq!(outcome.status, Some(503), "{outcome:?}");
        assert_eq!(outcome.retry_after.as_deref(), Some("1"), "{outcome:?}");
        assert!(outcome.elapsed() < Duration::from_secs(1), "a refusal took {:?}: {outcome:?}", outcome.elapsed());
    }
    let slowest = in_cut.iter().map(|o| o.elapsed()).max().unwrap_or_default();
    // Around the cut only 201 and 503; after recovery, only 201.
    for outcome in &outcomes {
        assert!(matches!(outcome.status, Some(201 | 503)), "{outcome:?}");
        if outcome.started >= restored + recovery {
            assert_eq!(outcome.status, Some(201), "failed after recovery: {outcome:?}");
        }
    }
    assert!(recovery <= Duration::from_secs(2), "requests succeeded again only {recovery:?} after the restore");
    let acked = acknowledged(&outcomes);
    let (events, ticks) = check_stored(&rig, store.as_ref(), &acked).await;
    drained(store.as_ref(), Duration::from_secs(10)).await;
    let (status, _) = host.terminate().await;
    assert!(status.success(), "{status}");
    println!(
        "FIGURES postgres cut {outage:.2?}: /ready 503 in {ready_took:.2?}; requests {} (201: {}, 503: {}), during the \
         cut {} refused, slowest refusal {slowest:.2?}; acknowledged {} all stored; events stored {events} (counter \
         {ticks}); recovery {recovery:.2?} after restore",
        outcomes.len(),
        count_status(&outcomes, Some(201)),
        count_status(&outcomes, Some(503)),
        in_cut.len(),
        acked.len()
    );
}

/// 3. SIGKILL under load, then a restart on the same database: once drained, no unpublished
/// outbox row, every stored event and enforcement published, nothing acknowledged lost. So that
/// the kill surely leaves outbox rows for the next process (the relay otherwise keeps the outbox
/// nearly empty), the broker connection (through a proxy) is cut until 50 rows wait, and restored
/// after the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_under_load_loses_nothing() {
    let rig = Rig::new("fault_kill");
    let collector = Collector::bind(&rig.exchange, "#").await;
    let database = postgres_database().await;
    let proxy = Proxy::start(broker_addr().await).await;
    let amqp = proxy.url();
    let host = rig.serve(&database, Some(&amqp)).await;
    let store = attune_host::store::open(&database).await.unwrap();
    rig.add_rules(&host).await;
    let load = Load::start(&rig, &host.token);
    assert!(
        collector.wait_for(Duration::from_secs(15), |r| r.iter().filter(|m| rig.owns(m)).count() >= 300).await,
        "no traffic before the kill:\n{}",
        rig.log_tail()
    );

    proxy.cut_now();
    let waiting = Instant::now();
    while store.outbox_backlog().await.unwrap() < 50 {
        assert!(waiting.elapsed() < Duration::from_secs(15), "no outbox backlog while the broker is away");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let held = waiting.elapsed();
    let status = host.kill().await;
    let killed = Instant::now();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9), "{status}");
    let backlog_at_kill = store.outbox_backlog().await.unwrap();
    assert!(backlog_at_kill >= 50, "{backlog_at_kill}");
    let stored_at_kill = stored_message_ids(store.as_ref()).await;
    proxy.set_down(false);
    let host = rig.serve(&database, Some(&amqp)).await;
    let restart = Instant::now();
    let (restarted_after, ready_after) = (killed.elapsed(), host.ready_after);
    // What was stored before the kill reaches the broker once the new process runs.
    assert!(
        collector
            .wait_for(Duration::from_secs(15), |r| {
                let ids: BTreeSet<&str> = r.iter().filter_map(|m| m.message_id.as_deref()).collect();
                stored_at_kill.iter().all(|id| ids.contains(id.as_str()))
            })
            .await,
        "what was stored before the kill was not published after the restart:\n{}",
        rig.log_tail()
    );
    let drain = restart.elapsed();
    assert!(
        load.wait_for(Duration::from_secs(10), |o| {
            o.iter().filter(|o| o.started >= restart && o.status == Some(201)).count() >= 50
        })
        .await,
        "the client got nothing through after the restart"
    );

    let outcomes = rig.quiesce(&host, load).await;
    drained(store.as_ref(), Duration::from_secs(15)).await;
    let delivered = check_delivered(&rig, &collector, store.as_ref()).await;
    let acked = acknowledged(&outcomes);
    let (events, ticks) = check_stored(&rig, store.as_ref(), &acked).await;
    // Only refused connections while the host was down, and answers from a request cut by the kill.
    for outcome in &outcomes {
        assert!(outcome.status.is_none() || outcome.status == Some(201), "{outcome:?}");
    }
    let (status, _) = host.terminate().await;
    assert!(status.success(), "{status}");
    println!(
        "FIGURES kill -9: unpublished outbox rows at the kill {backlog_at_kill} (broker held off {held:.2?} before it), restarted (ready, {ready_after:.2?} \
         from spawn) {restarted_after:.2?} after the kill, everything stored before the kill published {drain:.2?} \
         after ready; events stored {events} (counter {ticks}, posted {}), \
         requests refused while down {}; messages stored {}, received {} ({} distinct), duplicates {}, lost 0, \
         outbox backlog 0",
        acked.len(),
        count_status(&outcomes, None),
        delivered.stored,
        delivered.received,
        delivered.distinct,
        delivered.duplicates
    );
}

/// 4. SIGTERM under load: the process exits within 10 s with status 0, every acknowledged event is
/// stored, every stored event and enforcement published, and the outbox is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_cleanly_and_loses_nothing() {
    let rig = Rig::new("fault_term");
    let collector = Collector::bind(&rig.exchange, "#").await;
    let database = postgres_database().await;
    let host = rig.serve(&database, Some(&amqp_url())).await;
    let store = attune_host::store::open(&database).await.unwrap();
    rig.add_rules(&host).await;
    let load = Load::start(&rig, &host.token);
    assert!(
        collector.wait_for(Duration::from_secs(15), |r| r.iter().filter(|m| rig.owns(m)).count() >= 300).await,
        "no traffic before SIGTERM:\n{}",
        rig.log_tail()
    );

    let (status, exit) = host.terminate().await;
    assert!(status.success(), "exit status {status}:\n{}", rig.log_tail());
    let outcomes = load.stop().await;
    let backlog = store.outbox_backlog().await.unwrap();
    assert_eq!(backlog, 0, "the outbox was not flushed on SIGTERM:\n{}", rig.log_tail());
    let delivered = check_delivered(&rig, &collector, store.as_ref()).await;
    let acked = acknowledged(&outcomes);
    let (events, ticks) = check_stored(&rig, store.as_ref(), &acked).await;
    for outcome in &outcomes {
        assert!(outcome.status.is_none() || outcome.status == Some(201), "{outcome:?}");
    }
    println!(
        "FIGURES SIGTERM: exit {exit:.2?} with {status}; events stored {events} (counter {ticks}, posted {}), \
         messages stored {}, received {} ({} distinct), duplicates {}, lost 0, outbox backlog {backlog}",
        acked.len(),
        delivered.stored,
        delivered.received,
        delivered.distinct,
        delivered.duplicates
    );
}
