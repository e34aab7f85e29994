//! Replays (spec section 6): signed webhooks carry a timestamp (300 s window) and an optional
//! delivery id stored once per trigger; `POST /events` takes an `Idempotency-Key`. A repeat
//! answers as the first request did and stores nothing more, also when both are in flight at
//! once (on one host or two sharing PostgreSQL); records are kept 24 h and pruned in batches.
//! Through a real server on 127.0.0.1, on SQLite and PostgreSQL.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use attune_host::api::{self, ApiState, WebhookSecrets};
use attune_host::app::{App, AppConfig};
use attune_host::auth::{self, Scope};
use attune_host::pack::Pack;
use attune_host::store::{self, Commit, ListFilter, PRUNE_BATCH, RETENTION_MICROS, ReplayRecord, Store, Written};
use futures_util::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{postgres_database, postgres_store, sqlite_store};

const SECRET: &str = "replay-s3cret";
const PUSH: &str = "/api/v1/webhooks/replaytest.push";

/// `replaytest.push` (a webhook trigger with a rule on it) and `replaytest.status` (payload must
/// have an integer `status`).
fn test_pack(dir: &std::path::Path) -> Pack {
    let dir = dir.join("replaytest");
    std::fs::create_dir_all(dir.join("triggers")).unwrap();
    std::fs::write(dir.join("pack.yaml"), "ref: replaytest\nversion: 0.1.0\n").unwrap();
    std::fs::write(
        dir.join("triggers/status.yaml"),
        "ref: replaytest.status\npayload_schema:\n  type: object\n  required: [status]\n  properties:\n    status: {type: integer}\n",
    )
    .unwrap();
    std::fs::write(dir.join("triggers/push.yaml"), "ref: replaytest.push\n").unwrap();
    Pack::load(&dir).unwrap()
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An answer: status, JSON body, and whether it says it was replayed.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    body: Value,
    replayed: bool,
}

struct Server {
    base: String,
    app: Arc<App>,
    admin: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    /// An app with the test pack on `database_url` (a fresh SQLite file when `None`), with a rule
    /// on `replaytest.push` (added once per database) and an admin token.
    async fn start(database_url: Option<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pack = test_pack(dir.path());
        let url = database_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("attune.db").display()));
        let app = Arc::new(App::start(&AppConfig::new(url), std::slice::from_ref(&pack)).await.unwrap());
        let mut secrets = WebhookSecrets::new();
        secrets.insert("replaytest.push", SECRET);
        secrets.insert("core.webhook", SECRET);
        let state = ApiState::new(app.clone()).with_webhook_secrets(secrets);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
        let (admin, _) = auth::create_token(app.store.as_ref(), "admin", Scope::Admin, vec![], None).await.unwrap();
        let server = Server { base, app, admin, client: reqwest::Client::new(), _dir: dir };
        let rule = json!({"ref": "replaytest.on_push", "trigger": "replaytest.push",
                          "action": {"ref": "core.echo", "parameters": {"n": "{{ event.payload.n }}"}}});
        let created = server.request(Method::POST, "/api/v1/rules", &[], Some(rule.to_string())).await;
        assert!(created.status == 201 || created.status == 409, "{created:?}");
        server
    }

    async fn request(&self, method: Method, path: &str, headers: &[(&str, String)], body: Option<String>) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if !path.starts_with("/api/v1/webhooks/") {
            request = request.header("authorization", format!("Bearer {}", self.admin));
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let replayed = response.headers().get(api::REPLAYED_HEADER).is_some_and(|v| v == "true");
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        Answer { status, body, replayed }
    }

    /// A webhook call signed at `at`, with `delivery` as `X-Attune-Delivery` when given.
    async fn webhook(&self, path: &str, at: i64, delivery: Option<&str>, body: &str) -> Answer {
        let mut headers = vec![
            ("X-Attune-Timestamp", at.to_string()),
            ("X-Attune-Signature", api::sign(SECRET.as_bytes(), at, body.as_bytes())),
        ];
        headers.extend(delivery.map(|d| ("X-Attune-Delivery", d.to_string())));
        self.request(Method::POST, path, &headers, Some(body.to_string())).await
    }

    /// `POST /events` with `token` and `key` as `Idempotency-Key` when given.
    async fn post_events(&self, token: &str, key: Option<&str>, body: &str) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/api/v1/events", self.base))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let replayed = response.headers().get(api::REPLAYED_HEADER).is_some_and(|v| v == "true");
        Answer { status, body: serde_json::from_slice(&response.bytes().await.unwrap()).unwrap(), replayed }
    }

    async fn token(&self, scope: Scope, triggers: &[&str]) -> String {
        let triggers = triggers.iter().map(|t| t.to_string()).collect();
        auth::create_token(self.app.store.as_ref(), "client", scope, triggers, None).await.unwrap().0
    }

    async fn stored_events(&self) -> usize {
        self.app.store.events(&ListFilter { limit: 1000, ..Default::default() }).await.unwrap().len()
    }

    async fn stored_enforcements(&self) -> usize {
        self.app.store.enforcements(&ListFilter { limit: 1000, ..Default::default() }).await.unwrap().len()
    }
}

#[track_caller]
fn assert_error(got: &Answer, status: u16, code: &str, field: Option<&str>) {
    assert_eq!(got.status, status, "{got:?}");
    assert_eq!(got.body["error"]["code"], json!(code), "{got:?}");
    assert!(got.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{got:?}");
    assert_eq!(got.body["error"]["field"].as_str(), field, "{got:?}");
}

/// A delivery sent again (re-signed later, as a sender's redelivery is, or byte for byte)
/// answers as the first did and stores nothing more; another body with its id is 422.
async fn webhook_deliveries(server: &Server) {
    let body = r#"{"n": 1, "branch": "main"}"#;
    let first = server.webhook(PUSH, now(), Some("delivery-1"), body).await;
    assert_eq!((first.status, &first.body["enforcements"], first.replayed), (201, &json!(1), false), "{first:?}");
    assert_eq!(first.body["event_ids"].as_array().map(Vec::len), Some(1), "{first:?}");
    for at in [now() - 10, now()] {
        let again = server.webhook(PUSH, at, Some("delivery-1"), body).await;
        assert_eq!((again.status, &again.body, again.replayed), (201, &first.body, true), "{again:?}");
    }
    assert_eq!((server.stored_events().await, server.stored_enforcements().await), (1, 1));

    let other_body = server.webhook(PUSH, now(), Some("delivery-1"), r#"{"n": 2}"#).await;
    assert_error(&other_body, 422, "idempotency_key_reused", Some("X-Attune-Delivery"));
    assert_eq!(server.stored_events().await, 1);

    // Another delivery id, no delivery id, or the same id for another trigger: new events.
    let second = server.webhook(PUSH, now(), Some("delivery-2"), body).await;
    assert_eq!((second.status, second.replayed), (201, false), "{second:?}");
    assert_ne!(second.body["event_ids"], first.body["event_ids"]);
    assert_eq!(server.webhook(PUSH, now(), None, body).await.status, 201);
    assert_eq!(server.webhook(PUSH, now(), None, body).await.status, 201);
    let generic = server.webhook("/api/v1/webhooks/core.webhook", now(), Some("delivery-1"), body).await;
    assert_eq!((generic.status, generic.replayed), (201, false), "{generic:?}");
    assert_eq!(server.stored_events().await, 5);

    // A bad delivery id: 400 naming the header, nothing stored.
    let long = "d".repeat(api::MAX_KEY_CHARS + 1);
    assert_error(&server.webhook(PUSH, now(), Some(&long), body).await, 400, "bad_header", Some("X-Attune-Delivery"));
    let at = now();
    let twice = [
        ("X-Attune-Timestamp", at.to_string()),
        ("X-Attune-Signature", api::sign(SECRET.as_bytes(), at, body.as_bytes())),
        ("X-Attune-Delivery", "a".into()),
        ("X-Attune-Delivery", "b".into()),
    ];
    let got = server.request(Method::POST, PUSH, &twice, Some(body.into())).await;
    assert_error(&got, 400, "bad_header", Some("X-Attune-Delivery"));
    assert_eq!(server.stored_events().await, 5);
}

#[tokio::test]
async fn webhook_delivery_replays_answer_as_the_first_and_store_once_on_sqlite() {
    webhook_deliveries(&Server::start(None).await).await;
}

#[tokio::test]
async fn webhook_delivery_replays_answer_as_the_first_and_store_once_on_postgres() {
    webhook_deliveries(&Server::start(Some(postgres_database().await)).await).await;
}

#[tokio::test]
async fn webhook_timestamps_off_by_more_than_300_s_or_unsigned_are_401() {
    let server = Server::start(None).await;
    let body = r#"{"n": 1}"#;
    for at in [now() - 301, now() + 301, now() - 86_400, 0] {
        let got = server.webhook(PUSH, at, Some(&format!("late-{at}")), body).await;
        assert_error(&got, 401, "bad_timestamp", None);
    }
    // Signed the old way, over the body alone: without a timestamp, and with one.
    let body_only = {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let unsigned = [("X-Attune-Signature", body_only.clone())];
    let got = server.request(Method::POST, PUSH, &unsigned, Some(body.into())).await;
    assert_error(&got, 401, "bad_timestamp", None);
    let unsigned = [("X-Attune-Timestamp", now().to_string()), ("X-Attune-Signature", body_only)];
    let got = server.request(Method::POST, PUSH, &unsigned, Some(body.into())).await;
    assert_error(&got, 401, "bad_signature", None);
    // A timestamp that is not Unix seconds, or another one than was signed.
    let at = now();
    let signature = api::sign(SECRET.as_bytes(), at, body.as_bytes());
    for timestamp in ["yesterday".to_string(), format!("{at}.0"), format!("-{at}")] {
        let headers = [("X-Attune-Timestamp", timestamp), ("X-Attune-Signature", signature.clone())];
        assert_error(
            &server.request(Method::POST, PUSH, &headers, Some(body.into())).await,
            401,
            "bad_timestamp",
            None,
        );
    }
    let headers = [("X-Attune-Timestamp", (at - 1).to_string()), ("X-Attune-Signature", signature)];
    assert_error(&server.request(Method::POST, PUSH, &headers, Some(body.into())).await, 401, "bad_signature", None);
    assert_eq!(server.stored_events().await, 0, "refused webhooks store nothing");
    // Within the window either way: accepted.
    for at in [now() - 290, now() + 290] {
        assert_eq!(server.webhook(PUSH, at, None, body).await.status, 201);
    }
}

/// The same key with the same body (however spaced and ordered) answers as the first request
/// did and stores nothing more; another body is 422; keys are per token; refusals record nothing.
async fn idempotency_keys(server: &Server) {
    let token = server.token(Scope::Sensor, &["replaytest.status"]).await;
    let body = r#"[{"trigger": "replaytest.status", "payload": {"status": 500, "host": "a"}},
                   {"trigger": "replaytest.status", "payload": {"status": 200}}]"#;
    let first = server.post_events(&token, Some("key-1"), body).await;
    assert_eq!((first.status, first.replayed), (201, false), "{first:?}");
    assert_eq!(first.body["event_ids"].as_array().map(Vec::len), Some(2), "{first:?}");
    let same = r#"[{"payload":{"host":"a","status":500},"trigger":"replaytest.status"},{"payload":{"status":200},"trigger":"replaytest.status"}]"#;
    for body in [body, same] {
        let again = server.post_events(&token, Some("key-1"), body).await;
        assert_eq!((again.status, &again.body, again.replayed), (201, &first.body, true), "{again:?}");
    }
    assert_eq!(server.stored_events().await, 2);

    let other = r#"{"trigger": "replaytest.status", "payload": {"status": 501}}"#;
    let reused = server.post_events(&token, Some("key-1"), other).await;
    assert_error(&reused, 422, "idempotency_key_reused", Some("Idempotency-Key"));
    assert_eq!(server.stored_events().await, 2);

    // Keys are per token: another token's `key-1` is another key.
    let admin = server.admin.clone();
    let theirs = server.post_events(&admin, Some("key-1"), body).await;
    assert_eq!((theirs.status, theirs.replayed), (201, false), "{theirs:?}");
    assert_ne!(theirs.body["event_ids"], first.body["event_ids"]);
    assert_eq!(server.stored_events().await, 4);

    // A refused request records nothing: the key is still free for a good one.
    let refused = server.post_events(&token, Some("key-2"), r#"{"trigger": "replaytest.status", "payload": {}}"#).await;
    assert_error(&refused, 422, "schema_mismatch", Some("payload"));
    let good = server.post_events(&token, Some("key-2"), other).await;
    assert_eq!((good.status, good.replayed), (201, false), "{good:?}");
    assert_eq!(server.stored_events().await, 5);

    // Without a key, every post stores; a bad key is 400 naming the header.
    assert_eq!(server.post_events(&token, None, other).await.status, 201);
    assert_eq!(server.post_events(&token, None, other).await.status, 201);
    let long = "k".repeat(api::MAX_KEY_CHARS + 1);
    assert_error(&server.post_events(&token, Some(&long), other).await, 400, "bad_header", Some("Idempotency-Key"));
    assert_eq!(server.stored_events().await, 7);
}

#[tokio::test]
async fn idempotency_key_replays_the_first_answer_on_sqlite() {
    idempotency_keys(&Server::start(None).await).await;
}

#[tokio::test]
async fn idempotency_key_replays_the_first_answer_on_postgres() {
    idempotency_keys(&Server::start(Some(postgres_database().await)).await).await;
}

/// Pairs of identical requests sent at once, each pair with its own key, through `a` and `b`
/// (one server twice, or two hosts on one database): each pair stores once and both of it get
/// the same answer.
async fn concurrent_pairs(a: &Server, b: &Server) {
    const PAIRS: usize = 12;
    let token = a.admin.clone();
    let mut calls: Vec<Pin<Box<dyn Future<Output = Answer> + '_>>> = Vec::new();
    for i in 0..PAIRS {
        let (key, at) = (format!("pair-{i}"), now());
        let body = format!(r#"{{"n": {i}}}"#);
        let event = format!(r#"{{"trigger": "replaytest.status", "payload": {{"status": {i}}}}}"#);
        for server in [a, b] {
            let (key, body) = (key.clone(), body.clone());
            calls.push(Box::pin(async move { server.webhook(PUSH, at, Some(&key), &body).await }));
        }
        for server in [a, b] {
            let (key, event, token) = (key.clone(), event.clone(), token.clone());
            calls.push(Box::pin(async move { server.post_events(&token, Some(&key), &event).await }));
        }
    }
    let answers = join_all(calls).await;
    for pair in answers.chunks(2) {
        assert_eq!((pair[0].status, pair[1].status), (201, 201), "{pair:?}");
        assert_eq!(pair[0].body, pair[1].body, "the same answer twice");
        assert!(pair[0].replayed != pair[1].replayed, "exactly one of a pair is a replay: {pair:?}");
    }
    assert_eq!(a.stored_events().await, 2 * PAIRS, "one event per key and endpoint");
}

#[tokio::test]
async fn concurrent_identical_requests_store_once_on_sqlite() {
    let server = Server::start(None).await;
    concurrent_pairs(&server, &server).await;
}

#[tokio::test]
async fn concurrent_identical_requests_store_once_on_postgres() {
    let server = Server::start(Some(postgres_database().await)).await;
    concurrent_pairs(&server, &server).await;
}

#[tokio::test]
async fn concurrent_identical_requests_to_two_hosts_store_once_on_postgres() {
    let database = postgres_database().await;
    let (a, b) = (Server::start(Some(database.clone())).await, Server::start(Some(database)).await);
    concurrent_pairs(&a, &b).await;
}

fn record(key: &str, created_at: i64) -> ReplayRecord {
    ReplayRecord {
        scope: "token:t1".into(),
        key: key.into(),
        request_hash: "h".into(),
        status: 201,
        body: r#"{"event_ids":[],"enforcements":0}"#.into(),
        created_at,
    }
}

fn keyed(key: &str, created_at: i64) -> Commit {
    Commit { replay: Some(record(key, created_at)), ..Commit::default() }
}

/// In the store: a taken key writes nothing of its commit (and only of its commit); records
/// are kept 24 h; each write prunes at most `PRUNE_BATCH` expired ones.
async fn replay_store(store: Arc<dyn Store>) {
    let now = store::now_micros();
    let expired = now - RETENTION_MICROS - 60_000_000;
    let kept = now - RETENTION_MICROS + 3_600_000_000;
    assert_eq!(store.write(&[keyed("young", kept)], None).await.unwrap(), [Written::Stored]);
    assert_eq!(store.replay("token:t1", "young").await.unwrap(), Some(record("young", kept)));
    assert_eq!(store.replay("token:t2", "young").await.unwrap(), None, "keys are per scope");

    // Two commits with one key in one write, and one with a key already taken: only the first
    // of the key is written; a commit without a key is written whatever happens to the others.
    let event = |id: &str| store::EventRecord {
        id: id.into(),
        trigger_ref: "p.t".into(),
        rule_ref: None,
        source: "api:x".into(),
        payload: json!({}),
        created_at: now,
    };
    let with_event = |key: &str, id: &str| Commit { events: vec![event(id)], ..keyed(key, now) };
    let commits = [
        with_event("k", "e1"),
        with_event("k", "e2"),
        with_event("young", "e3"),
        Commit { events: vec![event("e4")], ..Commit::default() },
    ];
    let written = store.write(&commits, None).await.unwrap();
    assert_eq!(written, [Written::Stored, Written::Taken, Written::Taken, Written::Stored]);
    let ids: Vec<String> = store
        .events(&ListFilter { limit: 10, ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(ids, ["e4", "e1"]);

    // 150 expired records written at once: that write prunes 100 of them, the next the rest.
    let old: Vec<Commit> = (0..150).map(|i| keyed(&format!("old-{i:03}"), expired)).collect();
    store.write(&old, None).await.unwrap();
    let left = |store: Arc<dyn Store>| async move {
        let mut n = 0;
        for i in 0..150 {
            n += usize::from(store.replay("token:t1", &format!("old-{i:03}")).await.unwrap().is_some());
        }
        n
    };
    assert_eq!(left(store.clone()).await, 150 - PRUNE_BATCH as usize, "oldest first, a batch per write");
    store.write(&[keyed("next", now)], None).await.unwrap();
    assert_eq!(left(store.clone()).await, 0);
    assert!(store.replay("token:t1", "young").await.unwrap().is_some(), "kept for 24 h");
    assert_eq!(store.prune_replays(now + 1, 1_000).await.unwrap(), 3, "young, k and next");
}

#[tokio::test]
async fn replays_are_claimed_once_kept_24_h_and_pruned_in_batches_on_sqlite() {
    let (store, _dir) = sqlite_store().await;
    replay_store(store).await;
}

#[tokio::test]
async fn replays_are_claimed_once_kept_24_h_and_pruned_in_batches_on_postgres() {
    replay_store(postgres_store().await).await;
}
