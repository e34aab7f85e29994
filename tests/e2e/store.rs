//! The store contract, run against SQLite and PostgreSQL alike.

use std::sync::Arc;

use std::time::Duration;

use attune_host::store::{
    Commit, EnforcementRecord, EnforcementStatus, EventRecord, Fence, ListFilter, Message, RuleWrite, Store,
    StoredRule, TimerStateRecord, WorkKind, Written,
};
use serde_json::json;

use crate::support::{postgres_store, sqlite_store};

fn event(id: &str, trigger: &str, at: i64) -> EventRecord {
    EventRecord {
        id: id.into(),
        trigger_ref: trigger.into(),
        rule_ref: None,
        source: "sensor:p.s".into(),
        payload: json!({"n": at}),
        created_at: at,
    }
}

fn enforcement(id: &str, rule: &str, event_id: &str, at: i64) -> EnforcementRecord {
    EnforcementRecord {
        id: id.into(),
        rule_ref: rule.into(),
        event_id: event_id.into(),
        trigger_ref: "p.t".into(),
        action_ref: "core.echo".into(),
        parameters: Some(json!({"message": "hi"})),
        status: EnforcementStatus::Scheduled,
        error: None,
        created_at: at,
    }
}

fn message(id: &str) -> Message {
    Message { message_id: id.into(), routing_key: "enforcement.created".into(), body: json!({"id": id}).into() }
}

/// Takes one item; its new generation, or `None` when someone live holds it.
async fn take(store: &Arc<dyn Store>, kind: WorkKind, item: &str, owner: &str) -> Option<i64> {
    let taken = store.acquire(kind, &[item.to_string()], owner).await.unwrap();
    assert!(taken.iter().all(|(taken, _)| taken == item), "{taken:?}");
    taken.first().map(|(_, generation)| *generation)
}

fn page(limit: u32) -> ListFilter {
    ListFilter { limit, ..Default::default() }
}

async fn contract(store: Arc<dyn Store>) {
    // Migrating again is a no-op.
    store.migrate().await.unwrap();

    let commit = Commit {
        sensor_ref: Some("p.s".into()),
        state: [("cursor".to_string(), Some("3".to_string())), ("gone".to_string(), None)].into(),
        events: vec![event("e1", "p.t", 100), event("e2", "p.t", 200), event("e3", "p.u", 300)],
        enforcements: vec![enforcement("f1", "p.r", "e1", 100), enforcement("f2", "p.r", "e2", 200)],
        outbox: vec![message("f1"), message("f2")],
        ..Commit::default()
    };
    store.write(std::slice::from_ref(&commit), None).await.unwrap();

    // Reads: newest first, filtered, paged by cursor.
    let ids = |events: Vec<EventRecord>| events.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(store.events(&page(10)).await.unwrap()), ["e3", "e2", "e1"]);
    let by_trigger = ListFilter { trigger_ref: Some("p.t".into()), ..page(10) };
    assert_eq!(ids(store.events(&by_trigger).await.unwrap()), ["e2", "e1"]);
    let window = ListFilter { since: Some(150), until: Some(300), ..page(10) };
    assert_eq!(ids(store.events(&window).await.unwrap()), ["e2"]);
    let second_page = ListFilter { before: Some("e3".into()), ..page(1) };
    assert_eq!(ids(store.events(&second_page).await.unwrap()), ["e2"]);
    assert_eq!(store.event("e1").await.unwrap().unwrap(), event("e1", "p.t", 100));
    assert!(store.event("nope").await.unwrap().is_none());
    let by_rule = ListFilter { rule_ref: Some("p.r".into()), ..page(10) };
    assert_eq!(store.enforcements(&by_rule).await.unwrap()[0], enforcement("f2", "p.r", "e2", 200));
    assert_eq!(store.sensor_state("p.s").await.unwrap(), [("cursor".to_string(), "3".to_string())].into());

    // Replaying the same enforcements (ids derive from rule and event) and messages writes
    // nothing new, whatever else the replay says.
    let replay = Commit {
        enforcements: vec![EnforcementRecord {
            action_ref: "core.other".into(),
            ..enforcement("f1", "p.r", "e1", 100)
        }],
        outbox: vec![message("f1")],
        ..Default::default()
    };
    store.write(&[replay], None).await.unwrap();
    assert_eq!(store.enforcements(&page(10)).await.unwrap().len(), 2);
    assert_eq!(store.outbox_backlog().await.unwrap(), 2);
    // The same poll written twice: one row and one message each.
    store.write(std::slice::from_ref(&commit), None).await.unwrap();
    assert_eq!(store.events(&page(10)).await.unwrap().len(), 3);
    assert_eq!(store.outbox_backlog().await.unwrap(), 2);
    // A message announcing a row (its id is the row's) is queued only with its row: the event
    // exists already, so neither the row nor its message is written.
    let again = Commit { events: vec![event("e1", "p.t", 100)], outbox: vec![message("e1")], ..Default::default() };
    store.write(&[again], None).await.unwrap();
    assert_eq!(store.outbox_backlog().await.unwrap(), 2, "a message without its event was queued");

    // Outbox: oldest first; only confirmed rows are marked.
    let rows = store.claim_unpublished("h1", 10, true).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.message.message_id.as_str()).collect::<Vec<_>>(), ["f1", "f2"]);
    store.mark_published(&[rows[0].id]).await.unwrap();
    assert_eq!(store.claim_unpublished("h1", 10, true).await.unwrap()[0].message, message("f2"));
    assert_eq!(store.outbox_backlog().await.unwrap(), 1);

    // All or nothing: an enforcement of a missing event fails the whole transaction.
    let broken = Commit {
        sensor_ref: Some("p.s".into()),
        state: [("cursor".to_string(), Some("99".to_string()))].into(),
        events: vec![event("e4", "p.t", 400)],
        enforcements: vec![enforcement("f9", "p.r", "missing-event", 400)],
        outbox: vec![message("f9")],
        // A rule change in a failed commit is not stored either.
        rules: vec![RuleWrite::Upsert(StoredRule {
            rule_ref: "p.lost".into(),
            pack_ref: Some("p".into()),
            trigger_ref: "p.t".into(),
            enabled: true,
            spec: json!({"ref": "p.lost"}),
        })],
        ..Commit::default()
    };
    assert!(store.write(&[broken], None).await.is_err());
    assert_eq!(store.rule("p.lost").await.unwrap(), None);
    assert!(store.event("e4").await.unwrap().is_none());
    assert_eq!(store.sensor_state("p.s").await.unwrap()["cursor"], "3");
    assert_eq!(store.outbox_backlog().await.unwrap(), 1);

    // Rules.
    let rule = StoredRule {
        rule_ref: "p.r".into(),
        pack_ref: Some("p".into()),
        trigger_ref: "p.t".into(),
        enabled: true,
        spec: json!({"ref": "p.r"}),
    };
    store.upsert_rule(&rule).await.unwrap();
    store.upsert_rule(&StoredRule { enabled: false, ..rule.clone() }).await.unwrap();
    assert_eq!(store.rules().await.unwrap(), [StoredRule { enabled: false, ..rule }]);
    assert!(store.delete_rule("p.r").await.unwrap());
    assert!(!store.delete_rule("p.r").await.unwrap());

    // Timer state, saved by the timer's owner only.
    assert!(store.join("h1", "run-1", "", Duration::from_secs(60)).await.unwrap());
    store.register(WorkKind::Timer, &["p.timer".to_string()]).await.unwrap();
    let generation = take(&store, WorkKind::Timer, "p.timer", "h1").await.unwrap();
    let fence = Fence { kind: WorkKind::Timer, item: "p.timer".into(), owner: "h1".into(), generation };
    assert_eq!(store.timer_state("p.timer").await.unwrap(), None);
    let state = TimerStateRecord {
        next_fire_at: Some(2_000),
        last_fire_at: Some(1_001),
        last_scheduled_at: Some(1_000),
        execution_count: 7,
    };
    assert!(store.save_timer_state("p.timer", &state, &fence).await.unwrap());
    let later = TimerStateRecord { next_fire_at: Some(3_000), execution_count: 8, ..state };
    assert!(store.save_timer_state("p.timer", &later, &fence).await.unwrap());
    assert_eq!(store.timer_state("p.timer").await.unwrap(), Some(later));
    let stale = Fence { generation: generation - 1, ..fence.clone() };
    assert!(!store.save_timer_state("p.timer", &state, &stale).await.unwrap(), "a stale fence saved");
    assert_eq!(store.timer_state("p.timer").await.unwrap(), Some(later));
    store.delete_timer_state("p.timer").await.unwrap();
    assert_eq!(store.timer_state("p.timer").await.unwrap(), None);
}

/// `rule` reads one rule by ref, as `rules` lists it.
async fn rule_by_ref(store: Arc<dyn Store>) {
    let rule = |rule_ref: &str| StoredRule {
        rule_ref: rule_ref.into(),
        pack_ref: None,
        trigger_ref: "p.t".into(),
        enabled: true,
        spec: json!({"ref": rule_ref}),
    };
    store.upsert_rule(&rule("p.a")).await.unwrap();
    store.upsert_rule(&rule("p.b")).await.unwrap();
    assert_eq!(store.rule("p.b").await.unwrap(), Some(rule("p.b")));
    assert_eq!(store.rule("p.c").await.unwrap(), None);
    assert!(store.delete_rule("p.b").await.unwrap());
    assert_eq!(store.rule("p.b").await.unwrap(), None);
    assert_eq!(store.rules().await.unwrap(), [rule("p.a")]);
}

#[tokio::test]
async fn sqlite_store_reads_one_rule() {
    let (store, _dir) = sqlite_store().await;
    rule_by_ref(store).await;
}

#[tokio::test]
async fn postgres_store_reads_one_rule() {
    rule_by_ref(postgres_store().await).await;
}

#[tokio::test]
async fn sqlite_store_keeps_the_contract() {
    let (store, _dir) = sqlite_store().await;
    contract(store).await;
}

#[tokio::test]
async fn postgres_store_keeps_the_contract() {
    contract(postgres_store().await).await;
}

/// Retention deletes old events with their enforcements and old published outbox rows, in
/// batches, and never an unpublished outbox row, however old.
async fn retention(store: Arc<dyn Store>) {
    let commit = |at: i64, n: usize| Commit {
        events: (0..n).map(|i| event(&format!("e{at}-{i:03}"), "p.t", at)).collect(),
        enforcements: (0..n)
            .map(|i| enforcement(&format!("f{at}-{i:03}"), "p.r", &format!("e{at}-{i:03}"), at))
            .collect(),
        outbox: (0..n).map(|i| message(&format!("f{at}-{i:03}"))).collect(),
        ..Default::default()
    };
    // Old events, and events an hour in the future: the cutoff falls between them. Outbox rows
    // are as old as their write, so all fall before it.
    let future = attune_host::store::now_micros() + 3_600_000_000;
    store.write(&[commit(100, 5), commit(future, 2)], None).await.unwrap();
    let rows = store.claim_unpublished("h1", 100, true).await.unwrap();
    // Two rows were published; the other five were not.
    store.mark_published(&[rows[0].id, rows[1].id]).await.unwrap();
    let cutoff = attune_host::store::now_micros() + 1_000_000;

    let first = store.prune(cutoff, 3).await.unwrap();
    assert_eq!((first.events, first.enforcements, first.outbox), (3, 3, 2));
    assert!(first.full(3));
    let second = store.prune(cutoff, 3).await.unwrap();
    assert_eq!((second.events, second.enforcements, second.outbox), (2, 2, 0));
    assert!(!second.full(3));
    let left: Vec<String> = store.events(&page(100)).await.unwrap().into_iter().map(|e| e.id).collect();
    assert_eq!(left, [format!("e{future}-001"), format!("e{future}-000")]);
    assert_eq!(store.enforcements(&page(100)).await.unwrap().len(), 2);
    // The unpublished rows stay until published, however old.
    assert_eq!(store.outbox_backlog().await.unwrap(), 5);
}

#[tokio::test]
async fn sqlite_store_prunes_what_is_past_retention() {
    let (store, _dir) = sqlite_store().await;
    retention(store).await;
}

#[tokio::test]
async fn postgres_store_prunes_what_is_past_retention() {
    retention(postgres_store().await).await;
}

/// Leases, ownership with fencing tokens, and outbox claims, as several hosts use them.
async fn membership(store: Arc<dyn Store>) {
    let lease = Duration::from_secs(60);
    let sensors = ["p.a".to_string(), "p.b".to_string()];
    assert!(store.join("h1", "run-1", "127.0.0.1:1", lease).await.unwrap());
    assert!(store.join("h2", "run-1", "127.0.0.1:2", lease).await.unwrap());
    // A second run of a live host id is refused; the first one's renewals go on.
    assert!(!store.join("h1", "run-2", "127.0.0.1:3", lease).await.unwrap());
    assert!(store.renew("h1", "run-1", lease).await.unwrap());
    let live: Vec<String> = store.live_hosts().await.unwrap().into_iter().map(|h| h.id).collect();
    assert_eq!(live, ["h1", "h2"]);

    // One owner at a time; each change of owner raises the generation.
    store.register(WorkKind::Sensor, &sensors).await.unwrap();
    store.register(WorkKind::Sensor, &sensors).await.unwrap();
    let first = take(&store, WorkKind::Sensor, "p.a", "h1").await.expect("a free item is taken");
    // Of several items, only those without a live owner are taken.
    let taken = store.acquire(WorkKind::Sensor, &sensors, "h2").await.unwrap();
    assert_eq!(taken, [("p.b".to_string(), 1)], "a live owner's item was taken");
    // A release gives up only what the owner still holds at that generation.
    let stale = [("p.a".to_string(), first), ("p.b".to_string(), 0)];
    assert!(store.release(WorkKind::Sensor, "h2", &stale).await.unwrap().is_empty());
    assert_eq!(store.release(WorkKind::Sensor, "h2", &[("p.b".to_string(), 1)]).await.unwrap(), ["p.b"]);
    let fence = Fence { kind: WorkKind::Sensor, item: "p.a".into(), owner: "h1".into(), generation: first };
    let poll = |id: &str, fence: &Fence| Commit {
        sensor_ref: Some("p.a".into()),
        state: [("n".to_string(), Some(id.to_string()))].into(),
        events: vec![event(id, "p.t", 1)],
        outbox: vec![message(id)],
        fence: Some(fence.clone()),
        ..Default::default()
    };
    assert_eq!(store.write(&[poll("m1", &fence)], None).await.unwrap(), [Written::Stored]);
    assert_eq!(store.release(WorkKind::Sensor, "h1", &[("p.a".to_string(), first)]).await.unwrap(), ["p.a"]);
    let second = take(&store, WorkKind::Sensor, "p.a", "h2").await.expect("a released item is taken");
    assert!(second > first);
    // The old owner's write is refused whole, next to a write that goes through. Outbox rows
    // are written claimed by the host that writes them.
    let current = Fence { owner: "h2".into(), generation: second, ..fence.clone() };
    assert_eq!(
        store.write(&[poll("m2", &fence), poll("m3", &current)], Some("h2")).await.unwrap(),
        [Written::Fenced, Written::Stored]
    );
    assert!(store.event("m2").await.unwrap().is_none(), "a fenced event was stored");
    assert_eq!(store.sensor_state("p.a").await.unwrap().get("n").map(String::as_str), Some("m3"));
    let owners: Vec<_> = store.ownership(WorkKind::Sensor).await.unwrap().into_iter().map(|r| r.owner).collect();
    assert_eq!(owners, [Some("h2".to_string()), None]);

    // Outbox rows are claimed by one host: unclaimed ones by the first to ask, a live host's
    // never by another; a host that left gives its claims up.
    let ids =
        |rows: Vec<attune_host::store::OutboxRow>| rows.into_iter().map(|r| r.message.message_id).collect::<Vec<_>>();
    assert_eq!(ids(store.claim_unpublished("h1", 10, true).await.unwrap()), ["m1"], "h2's own row was taken");
    assert_eq!(ids(store.claim_unpublished("h2", 10, true).await.unwrap()), ["m3"], "h1's claim was taken");
    assert_eq!(ids(store.claim_unpublished("h1", 1, true).await.unwrap()), ["m1"]);
    store.leave("h1", "run-1").await.unwrap();
    // A round for a host's own rows alone does not look at the others' (the relay looks for
    // them once a second), then the next look takes them.
    assert_eq!(ids(store.claim_unpublished("h2", 10, false).await.unwrap()), ["m3"]);
    assert_eq!(ids(store.claim_unpublished("h2", 10, true).await.unwrap()), ["m1", "m3"]);
    // Leaving released nothing of h2's, and h1's lease is over: a new run of it may join.
    assert_eq!(take(&store, WorkKind::Sensor, "p.a", "h1").await, None);
    assert!(store.join("h1", "run-2", "127.0.0.1:1", lease).await.unwrap());
    assert!(!store.renew("h1", "run-1", lease).await.unwrap(), "a replaced run renewed its lease");
}

#[tokio::test]
async fn sqlite_store_keeps_the_membership_contract() {
    let (store, _dir) = sqlite_store().await;
    membership(store).await;
}

#[tokio::test]
async fn postgres_store_keeps_the_membership_contract() {
    membership(postgres_store().await).await;
}

/// `migrations/<dialect>` up to version 5 (before enforcements were keyed by id alone), in a
/// directory of their own.
fn migrations_before_0006(dialect: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(crate::support::repo().join("migrations").join(dialect)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.as_str() < "0006" {
            std::fs::copy(&path, dir.path().join(name)).unwrap();
        }
    }
    dir
}

const OLD_EVENT: &str =
    "INSERT INTO events (id, trigger_ref, source, payload, created_at) VALUES ('e1', 'p.t', 'webhook', '{}', 100)";
const OLD_ENFORCEMENT: &str = "INSERT INTO enforcements (id, rule_ref, event_id, trigger_ref, action_ref, parameters, \
                               status, created_at) VALUES ('f1', 'p.r', 'e1', 'p.t', 'core.echo', '{\"message\": \"hi\"}', 'scheduled', 100)";

/// Migrates `$pool` to version 5 (`migrations/$dialect` before 0006), stores one event and its
/// enforcement there, and closes the pool (a macro: the two pool types share no trait for it).
macro_rules! fill_before_0006 {
    ($pool:expr, $dialect:literal) => {{
        let pool = $pool;
        let old = migrations_before_0006($dialect);
        sqlx::migrate::Migrator::new(old.path()).await.unwrap().run(&pool).await.unwrap();
        sqlx::query(OLD_EVENT).execute(&pool).await.unwrap();
        sqlx::query(OLD_ENFORCEMENT).execute(&pool).await.unwrap();
        pool.close().await;
    }};
}

/// After migration 0006: what was stored is there, a replayed enforcement is a no-op, another
/// rule's enforcement of the same event is stored, and retention deletes both with the event.
async fn upgraded(url: &str) {
    let store = attune_host::store::open(url).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.enforcements(&page(10)).await.unwrap(), [enforcement("f1", "p.r", "e1", 100)]);
    let again = Commit {
        enforcements: vec![enforcement("f1", "p.r", "e1", 100), enforcement("f2", "p.other", "e1", 100)],
        ..Default::default()
    };
    store.write(&[again], None).await.unwrap();
    assert_eq!(ids_of(store.enforcements(&page(10)).await.unwrap()), ["f2", "f1"]);
    let pruned = store.prune(200, 10).await.unwrap();
    assert_eq!((pruned.events, pruned.enforcements), (1, 2));
}

fn ids_of(enforcements: Vec<EnforcementRecord>) -> Vec<String> {
    enforcements.into_iter().map(|e| e.id).collect()
}

#[tokio::test]
async fn sqlite_upgrade_keeps_enforcements() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("attune.db").display());
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("attune.db")).create_if_missing(true);
    fill_before_0006!(sqlx::SqlitePool::connect_with(options).await.unwrap(), "sqlite");
    upgraded(&url).await;
}

#[tokio::test]
async fn postgres_upgrade_keeps_enforcements() {
    let url = crate::support::postgres_database().await;
    fill_before_0006!(sqlx::PgPool::connect(&url).await.unwrap(), "postgres");
    upgraded(&url).await;
}
