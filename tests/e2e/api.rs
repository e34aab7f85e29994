//! The HTTP API through a real server on 127.0.0.1: rule lifecycle with events and
//! enforcements (SQLite, and PostgreSQL), auth on every route, sensor-scoped ingest, signed
//! webhooks, bad requests, the OpenAPI document, tokens and the first admin token.

use std::path::Path;
use std::sync::{Arc, Mutex};

use attune_host::api::{self, ApiState, PackControl, SensorControl, SensorInfo, WebhookSecrets};
use attune_host::app::{App, AppConfig};
use attune_host::auth::{self, Scope};
use attune_host::pack::{Pack, PackError};
use attune_host::store::{ListFilter, Store};
use attune_host::supervisor::SensorChanges;
use reqwest::Method;
use serde_json::{Value, json};

const WEBHOOK_SECRET: &str = "webhook-s3cret";

/// A pack with `apitest.status` (payload must have an integer `status`), `apitest.other` and
/// `apitest.push` (a webhook trigger).
fn test_pack(dir: &Path) -> Pack {
    let dir = dir.join("apitest");
    std::fs::create_dir_all(dir.join("triggers")).unwrap();
    std::fs::write(dir.join("pack.yaml"), "ref: apitest\nversion: 0.1.0\nconfig: {team: ops}\n").unwrap();
    std::fs::write(
        dir.join("triggers/status.yaml"),
        "ref: apitest.status\ndescription: HTTP status\npayload_schema:\n  type: object\n  required: [status]\n  properties:\n    status: {type: integer}\n",
    )
    .unwrap();
    std::fs::write(dir.join("triggers/other.yaml"), "ref: apitest.other\n").unwrap();
    std::fs::write(dir.join("triggers/push.yaml"), "ref: apitest.push\n").unwrap();
    Pack::load(&dir).unwrap()
}

/// A test double of the sensor supervisor: one sensor, restarts counted.
#[derive(Debug, Default)]
struct FakeSensors {
    restarts: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl SensorControl for FakeSensors {
    async fn list(&self) -> Result<Vec<SensorInfo>, attune_host::store::StoreError> {
        Ok(vec![SensorInfo {
            sensor_ref: "apitest.poller".into(),
            owner: Some("h1".into()),
            triggers: vec!["apitest.status".into()],
            state: api::SensorState::Quarantined,
            last_error: Some("out of fuel".into()),
            last_failure_reason: Some("out_of_fuel".into()),
            consecutive_failures: 5,
            polls: 9,
            failures: 5,
            events: 4,
            fuel_used: 1234,
        }])
    }

    async fn restart(&self, sensor_ref: &str) -> Result<bool, Arc<attune_host::store::StoreError>> {
        self.restarts.lock().unwrap().push(sensor_ref.to_string());
        Ok(sensor_ref == "apitest.poller")
    }

    async fn reset_state(&self, sensor_ref: &str) -> Result<bool, Arc<attune_host::store::StoreError>> {
        Ok(sensor_ref == "apitest.poller")
    }
}

/// A test double of pack loading: a reload finds the same pack again.
#[derive(Debug)]
struct SamePack(Pack);

#[async_trait::async_trait]
impl PackControl for SamePack {
    async fn reload(&self) -> Result<(Vec<Pack>, SensorChanges), PackError> {
        Ok((vec![self.0.clone()], SensorChanges::default()))
    }
}

/// An app with the test pack behind the API on a real port.
struct Server {
    base: String,
    app: Arc<App>,
    admin: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start_sqlite() -> Self {
        Self::start(None, None).await
    }

    async fn start(database_url: Option<String>, sensors: Option<Arc<dyn SensorControl>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pack = test_pack(dir.path());
        let url = database_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("attune.db").display()));
        let app = Arc::new(App::start(&AppConfig::new(url), std::slice::from_ref(&pack)).await.unwrap());
        let mut secrets = WebhookSecrets::new();
        secrets.insert("apitest.push", WEBHOOK_SECRET);
        secrets.insert("core.webhook", WEBHOOK_SECRET);
        secrets.insert("core.intervaltimer", WEBHOOK_SECRET);
        let mut state =
            ApiState::new(app.clone()).with_webhook_secrets(secrets).with_pack_control(Arc::new(SamePack(pack)));
        if let Some(sensors) = sensors {
            state = state.with_sensors(sensors);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
        let (admin, _) =
            auth::create_token(app.store.as_ref(), "test admin", Scope::Admin, vec![], None).await.unwrap();
        Server { base, app, admin, client: reqwest::Client::new(), _dir: dir }
    }

    async fn token(&self, scope: Scope, triggers: &[&str]) -> String {
        let triggers = triggers.iter().map(|t| t.to_string()).collect();
        auth::create_token(self.app.store.as_ref(), "test", scope, triggers, None).await.unwrap().0
    }

    /// One request with an optional bearer token and JSON body: status and JSON body (`null`
    /// when empty).
    async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<&Value>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        decode(response).await
    }

    async fn as_admin(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.call(method, path, Some(&self.admin.clone()), body).await
    }

    async fn get(&self, path: &str) -> Value {
        let (status, body) = self.as_admin(Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn raw(&self, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base)).body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        decode(request.send().await.unwrap()).await
    }

    async fn stored_events(&self) -> usize {
        self.app.store.events(&ListFilter { limit: 1000, ..Default::default() }).await.unwrap().len()
    }
}

async fn decode(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        // `GET /metrics` is the one route answering text.
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, body)
}

/// Asserts an error response: status, `error.code` and `error.field`.
#[track_caller]
fn assert_error(got: &(u16, Value), status: u16, code: &str, field: Option<&str>) {
    let (got_status, body) = got;
    assert_eq!(*got_status, status, "{body}");
    assert_eq!(body["error"]["code"], json!(code), "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert_eq!(body["error"]["field"].as_str(), field, "{body}");
}

fn page_rule() -> Value {
    json!({
        "ref": "apitest.page",
        "trigger": "apitest.status",
        "conditions": {"all": [{"field": "payload.status", "operator": "greater_than", "value": 499}]},
        "action": {"ref": "core.echo", "parameters": {"message": "{{ event.payload.host }} is down", "team": "{{ pack.config.team }}"}}
    })
}

fn status_event(status: i64) -> Value {
    json!({"trigger": "apitest.status", "payload": {"status": status, "host": "web-1"}})
}

/// Create, read, list, update, disable, enable, delete; events through `POST /events` make
/// enforcements only while the rule is enabled.
async fn rule_lifecycle(server: &Server) {
    let rule = page_rule();
    let (status, created) = server.as_admin(Method::POST, "/api/v1/rules", Some(&rule)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["ref"], "apitest.page");
    assert_eq!(created["enabled"], true);
    assert_error(&server.as_admin(Method::POST, "/api/v1/rules", Some(&rule)).await, 409, "conflict", Some("ref"));

    assert_eq!(server.get("/api/v1/rules/apitest.page").await, created);
    assert_eq!(server.get("/api/v1/rules").await["rules"], json!([created]));

    let mut changed = rule.clone();
    changed["description"] = json!("page on 5xx");
    changed.as_object_mut().unwrap().remove("ref");
    let (status, updated) = server.as_admin(Method::PUT, "/api/v1/rules/apitest.page", Some(&changed)).await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(server.get("/api/v1/rules/apitest.page").await["description"], "page on 5xx");
    assert_error(
        &server.as_admin(Method::PUT, "/api/v1/rules/apitest.nope", Some(&changed)).await,
        404,
        "not_found",
        None,
    );
    changed["ref"] = json!("apitest.other_name");
    assert_error(
        &server.as_admin(Method::PUT, "/api/v1/rules/apitest.page", Some(&changed)).await,
        422,
        "ref_mismatch",
        Some("ref"),
    );

    // Enabled: a 503 makes an enforcement, a 200 does not.
    let (status, ingested) = server.as_admin(Method::POST, "/api/v1/events", Some(&status_event(503))).await;
    assert_eq!((status, &ingested["enforcements"]), (201, &json!(1)), "{ingested}");
    let first_event = ingested["event_ids"][0].as_str().unwrap().to_string();
    let (_, ingested) = server.as_admin(Method::POST, "/api/v1/events", Some(&status_event(200))).await;
    assert_eq!(ingested["enforcements"], 0);
    let enforcements = server.get("/api/v1/enforcements?rule=apitest.page").await["enforcements"].clone();
    assert_eq!(enforcements.as_array().unwrap().len(), 1, "{enforcements}");
    assert_eq!(enforcements[0]["event_id"], json!(first_event));
    assert_eq!(enforcements[0]["parameters"], json!({"message": "web-1 is down", "team": "ops"}));
    assert_eq!(enforcements[0]["status"], "scheduled");

    // Disabled: nothing.
    let (status, disabled) = server.as_admin(Method::POST, "/api/v1/rules/apitest.page/disable", None).await;
    assert_eq!((status, &disabled["enabled"]), (200, &json!(false)), "{disabled}");
    assert_eq!(server.get("/api/v1/rules/apitest.page").await["enabled"], false);
    let (_, ingested) = server.as_admin(Method::POST, "/api/v1/events", Some(&status_event(503))).await;
    assert_eq!(ingested["enforcements"], 0);

    // Enabled again.
    let (status, enabled) = server.as_admin(Method::POST, "/api/v1/rules/apitest.page/enable", None).await;
    assert_eq!((status, &enabled["enabled"]), (200, &json!(true)), "{enabled}");
    let (_, ingested) = server.as_admin(Method::POST, "/api/v1/events", Some(&status_event(502))).await;
    assert_eq!(ingested["enforcements"], 1);
    let enforcements = server.get("/api/v1/enforcements?rule=apitest.page&trigger=apitest.status").await;
    assert_eq!(enforcements["enforcements"].as_array().unwrap().len(), 2, "{enforcements}");
    assert_eq!(server.get("/api/v1/enforcements?rule=apitest.nope").await["enforcements"], json!([]));

    // The read side: 4 events, newest first, paged with `next`.
    let events = server.get("/api/v1/events").await;
    assert_eq!(events["events"].as_array().unwrap().len(), 4, "{events}");
    assert!(events.get("next").is_none(), "{events}");
    assert_eq!(events["events"][3]["id"], json!(first_event));
    assert_eq!(events["events"][3]["source"], "api:test admin");
    let mut seen = Vec::new();
    let mut path = "/api/v1/events?limit=3".to_string();
    loop {
        let page = server.get(&path).await;
        seen.extend(page["events"].as_array().unwrap().iter().map(|e| e["id"].clone()));
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/events?limit=3&before={next}"),
            None => break,
        }
    }
    let all: Vec<Value> = events["events"].as_array().unwrap().iter().map(|e| e["id"].clone()).collect();
    assert_eq!(seen, all);
    assert_eq!(server.get("/api/v1/events?until=2000-01-01T00:00:00Z").await["events"], json!([]));
    assert_eq!(
        server.get("/api/v1/events?since=2000-01-01T00:00:00%2B02:00").await["events"].as_array().unwrap().len(),
        4
    );
    assert_eq!(server.get("/api/v1/events?trigger=apitest.other").await["events"], json!([]));
    let one = server.get(&format!("/api/v1/events/{first_event}")).await;
    assert_eq!(one["payload"], json!({"status": 503, "host": "web-1"}));
    assert_eq!(one["trigger"], "apitest.status");
    assert!(one["created_at"].as_str().unwrap().ends_with('Z'), "{one}");
    assert_error(&server.as_admin(Method::GET, "/api/v1/events/nope", None).await, 404, "not_found", None);

    // Dry run: the explanation `rule test` gives, with the pack's config.
    let (status, dry) = server
        .as_admin(
            Method::POST,
            "/api/v1/rules/test",
            Some(&json!({"rule": page_rule(), "payload": {"status": 500, "host": "db"}})),
        )
        .await;
    assert_eq!(status, 200, "{dry}");
    assert_eq!(dry["matched"], true);
    assert_eq!(dry["parameters"], json!({"message": "db is down", "team": "ops"}));
    assert_eq!(dry["explanation"]["conditions"]["children"][0]["held"], true, "{dry}");
    assert!(dry["text"].as_str().unwrap().contains("greater_than"), "{dry}");
    let (_, dry) = server
        .as_admin(Method::POST, "/api/v1/rules/test", Some(&json!({"rule": page_rule(), "payload": {"status": 200}})))
        .await;
    assert_eq!(dry["matched"], false);
    assert_eq!(dry["action_error"]["field"], "action.parameters.message", "{dry}");

    // Deleted: gone, and no more enforcements.
    let (status, body) = server.as_admin(Method::DELETE, "/api/v1/rules/apitest.page", None).await;
    assert_eq!((status, body), (204, Value::Null));
    assert_error(&server.as_admin(Method::DELETE, "/api/v1/rules/apitest.page", None).await, 404, "not_found", None);
    assert_error(&server.as_admin(Method::GET, "/api/v1/rules/apitest.page", None).await, 404, "not_found", None);
    assert_error(
        &server.as_admin(Method::POST, "/api/v1/rules/apitest.page/enable", None).await,
        404,
        "not_found",
        None,
    );
    let (_, ingested) = server.as_admin(Method::POST, "/api/v1/events", Some(&status_event(503))).await;
    assert_eq!(ingested["enforcements"], 0);
    assert_eq!(server.get("/api/v1/enforcements").await["enforcements"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn rule_lifecycle_on_sqlite() {
    rule_lifecycle(&Server::start_sqlite().await).await;
}

#[tokio::test]
async fn rule_lifecycle_on_postgres() {
    let server = Server::start(Some(crate::support::postgres_database().await), None).await;
    rule_lifecycle(&server).await;
}

/// Every route with a request it accepts, and the least scope that may call it.
fn routes() -> Vec<(Method, &'static str, Option<Value>, Scope)> {
    vec![
        (Method::GET, "/api/v1/openapi.json", None, Scope::Readonly),
        (Method::GET, "/api/v1/rules", None, Scope::Readonly),
        (Method::POST, "/api/v1/rules", Some(page_rule()), Scope::Admin),
        (Method::GET, "/api/v1/rules/apitest.page", None, Scope::Readonly),
        (Method::PUT, "/api/v1/rules/apitest.page", Some(page_rule()), Scope::Admin),
        (Method::POST, "/api/v1/rules/apitest.page/disable", None, Scope::Admin),
        (Method::POST, "/api/v1/rules/apitest.page/enable", None, Scope::Admin),
        (Method::POST, "/api/v1/rules/test", Some(json!({"rule": page_rule(), "payload": {}})), Scope::Admin),
        (Method::GET, "/api/v1/triggers", None, Scope::Readonly),
        (Method::GET, "/api/v1/sensors", None, Scope::Readonly),
        (Method::POST, "/api/v1/sensors/apitest.poller/restart", None, Scope::Admin),
        (Method::GET, "/api/v1/events", None, Scope::Readonly),
        (Method::GET, "/api/v1/events/nope", None, Scope::Readonly),
        (Method::POST, "/api/v1/events", Some(status_event(1)), Scope::Sensor),
        (Method::GET, "/api/v1/enforcements", None, Scope::Readonly),
        (Method::GET, "/api/v1/packs", None, Scope::Readonly),
        (Method::POST, "/api/v1/packs/reload", None, Scope::Admin),
        (Method::GET, "/metrics", None, Scope::Readonly),
        (Method::DELETE, "/api/v1/rules/apitest.page", None, Scope::Admin),
    ]
}

#[tokio::test]
async fn every_route_needs_a_token_in_its_scope() {
    let sensors: Arc<dyn SensorControl> = Arc::new(FakeSensors::default());
    let server = Server::start(None, Some(sensors)).await;
    let readonly = server.token(Scope::Readonly, &[]).await;
    let sensor = server.token(Scope::Sensor, &["apitest.status"]).await;
    let revoked = server.token(Scope::Admin, &[]).await;
    let revoked_id = auth::authenticate(server.app.store.as_ref(), &revoked).await.unwrap().token_id;
    assert!(auth::revoke(server.app.store.as_ref(), &revoked_id).await.unwrap());
    let (expired, _) =
        auth::create_token(server.app.store.as_ref(), "old", Scope::Admin, vec![], Some(1)).await.unwrap();
    let unknown = format!("attune_{}", "0".repeat(64));

    for (method, path, body, least) in routes() {
        let what = format!("{method} {path}");
        for token in [None, Some(unknown.as_str()), Some(revoked.as_str()), Some(expired.as_str()), Some("garbage")] {
            let got = server.call(method.clone(), path, token, body.as_ref()).await;
            assert_error(&got, 401, "unauthorized", None);
        }
        let allowed: &[(&str, Scope)] =
            &[(&server.admin, Scope::Admin), (&readonly, Scope::Readonly), (&sensor, Scope::Sensor)];
        for (token, scope) in allowed {
            let may = *scope == Scope::Admin || *scope == least;
            let (status, body) = server.call(method.clone(), path, Some(token), body.as_ref()).await;
            if may {
                assert!(![401, 403].contains(&status), "{what} as {scope}: {status} {body}");
                assert!(status < 500, "{what} as {scope}: {status} {body}");
            } else {
                assert_error(&(status, body), 403, "forbidden", None);
            }
        }
    }
    // Unauthenticated routes.
    assert_eq!(server.call(Method::GET, "/health", None, None).await, (200, json!({"status": "ok"})));
    let (status, ready) = server.call(Method::GET, "/ready", None, None).await;
    assert_eq!((status, &ready["status"]), (200, &json!("ready")), "{ready}");
    assert_eq!(ready["store"]["ok"], true);
    assert_eq!(ready["bus"]["ok"], true);
    assert_error(&server.call(Method::GET, "/api/v1/nothing", None, None).await, 404, "not_found", None);
}

#[tokio::test]
async fn sensor_token_posts_only_its_triggers() {
    let server = Server::start_sqlite().await;
    let sensor = server.token(Scope::Sensor, &["apitest.status"]).await;
    let post = |body: Value| {
        let sensor = sensor.clone();
        let server = &server;
        async move { server.call(Method::POST, "/api/v1/events", Some(&sensor), Some(&body)).await }
    };
    let (status, body) = post(status_event(200)).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = post(json!([status_event(201), status_event(202)])).await;
    assert_eq!((status, body["event_ids"].as_array().unwrap().len()), (201, 2), "{body}");
    assert_eq!(server.stored_events().await, 3);

    let other = json!({"trigger": "apitest.other", "payload": {}});
    assert_error(&post(other.clone()).await, 403, "trigger_not_allowed", Some("trigger"));
    assert_error(&post(json!([status_event(1), other])).await, 403, "trigger_not_allowed", Some("[1].trigger"));
    // The pipeline's own checks still apply to allowed triggers: all or nothing.
    let bad = json!({"trigger": "apitest.status", "payload": {"status": "high"}});
    assert_error(&post(json!([status_event(1), bad])).await, 422, "schema_mismatch", Some("[1].payload"));
    let not_object = json!({"trigger": "apitest.status", "payload": [1]});
    assert_error(&post(not_object).await, 422, "payload_not_object", Some("payload"));
    assert_error(&post(json!([])).await, 422, "bad_batch", None);
    assert_eq!(server.stored_events().await, 3, "refused batches store nothing");

    let events = server.get("/api/v1/events").await;
    assert!(events["events"].as_array().unwrap().iter().all(|e| e["source"] == "api:test"), "{events}");
    // Admin tokens may post for any known trigger; unknown triggers are refused.
    let (status, _) = server
        .as_admin(Method::POST, "/api/v1/events", Some(&json!({"trigger": "apitest.other", "payload": {}})))
        .await;
    assert_eq!(status, 201);
    let unknown = json!({"trigger": "apitest.nope", "payload": {}});
    assert_error(
        &server.as_admin(Method::POST, "/api/v1/events", Some(&unknown)).await,
        422,
        "unknown_trigger",
        Some("trigger"),
    );
}

#[tokio::test]
async fn webhook_accepts_only_signed_objects() {
    let server = Server::start_sqlite().await;
    let rule = json!({"ref": "apitest.on_push", "trigger": "apitest.push",
                      "conditions": {"field": "payload.branch", "operator": "equals", "value": "main"},
                      "action": {"ref": "core.echo", "parameters": {"branch": "{{ event.payload.branch }}"}}});
    assert_eq!(server.as_admin(Method::POST, "/api/v1/rules", Some(&rule)).await.0, 201);
    let body = r#"{"branch": "main", "commits": 3}"#;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let ts = now.to_string();
    let at = ("X-Attune-Timestamp", ts.as_str());
    let signature = api::sign(WEBHOOK_SECRET.as_bytes(), now, body.as_bytes());
    let json_type = ("content-type", "application/json");

    // Good signature (no bearer token needed): stored as a `webhook` event, rules apply.
    let (status, stored) =
        server.raw("/api/v1/webhooks/apitest.push", &[json_type, at, ("X-Attune-Signature", &signature)], body).await;
    assert_eq!((status, &stored["enforcements"]), (201, &json!(1)), "{stored}");
    let event = server.get(&format!("/api/v1/events/{}", stored["event_ids"][0].as_str().unwrap())).await;
    assert_eq!((&event["trigger"], &event["source"]), (&json!("apitest.push"), &json!("webhook")));
    assert_eq!(event["payload"], json!({"branch": "main", "commits": 3}));
    let generic = r#"{"any": "thing"}"#;
    let generic_signature = api::sign(WEBHOOK_SECRET.as_bytes(), now, generic.as_bytes());
    let (status, _) =
        server.raw("/api/v1/webhooks/core.webhook", &[at, ("X-Attune-Signature", &generic_signature)], generic).await;
    assert_eq!(status, 201);
    assert_eq!(server.stored_events().await, 2);

    // Refused: nothing stored.
    let wrong = api::sign(b"not the secret", now, body.as_bytes());
    let tampered = r#"{"branch": "main", "commits": 4}"#;
    let bearer = format!("Bearer {}", server.admin);
    // (trigger, headers, body, status, code)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, &'a str, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("apitest.push", vec![], body, 401, "bad_signature"),
        ("apitest.push", vec![at, ("X-Attune-Signature", &wrong)], body, 401, "bad_signature"),
        ("apitest.push", vec![at, ("X-Attune-Signature", &signature)], tampered, 401, "bad_signature"),
        (
            "apitest.push",
            vec![at, ("X-Attune-Signature", signature.trim_start_matches("sha256="))],
            body,
            401,
            "bad_signature",
        ),
        ("apitest.push", vec![("Authorization", &bearer)], body, 401, "bad_signature"),
        ("apitest.status", vec![at, ("X-Attune-Signature", &signature)], body, 404, "not_found"),
        ("core.intervaltimer", vec![at, ("X-Attune-Signature", &signature)], body, 404, "not_found"),
    ];
    for (trigger, headers, body, status, code) in cases {
        let got = server.raw(&format!("/api/v1/webhooks/{trigger}"), &headers, body).await;
        assert_error(&got, status, code, None);
    }
    for (body, status, code) in [("[1, 2]", 422, "payload_not_object"), ("{nope", 400, "malformed_json")] {
        let signature = api::sign(WEBHOOK_SECRET.as_bytes(), now, body.as_bytes());
        let got = server.raw("/api/v1/webhooks/apitest.push", &[at, ("X-Attune-Signature", &signature)], body).await;
        assert_error(&got, status, code, None);
    }
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(api::WEBHOOK_MAX_BODY_BYTES));
    let signature = api::sign(WEBHOOK_SECRET.as_bytes(), now, huge.as_bytes());
    let got = server.raw("/api/v1/webhooks/apitest.push", &[at, ("X-Attune-Signature", &signature)], &huge).await;
    assert_error(&got, 413, "body_too_large", None);
    assert_eq!(server.stored_events().await, 2, "refused webhooks store nothing");
}

#[tokio::test]
async fn bad_requests_name_the_field_and_store_nothing() {
    let server = Server::start_sqlite().await;
    let with = |patch: &dyn Fn(&mut Value)| {
        let mut rule = page_rule();
        patch(&mut rule);
        rule
    };
    let bad_operator = with(&|r| r["conditions"]["all"][0]["operator"] = json!("bigger_than"));
    let cases: Vec<(Value, &str, &str)> = vec![
        (with(&|r| r["acton"] = json!({})), "unknown_field", "acton"),
        (with(&|r| r["action"]["params"] = json!({})), "unknown_field", "action.params"),
        (with(&|r| drop(r.as_object_mut().unwrap().remove("trigger"))), "missing_field", "trigger"),
        (with(&|r| r["enabled"] = json!("yes")), "invalid_field", "enabled"),
        (bad_operator.clone(), "unknown_operator", "conditions.all[0].operator"),
        (with(&|r| r["conditions"]["all"][0]["field"] = json!("status")), "unknown_root", "conditions.all[0].field"),
        (
            with(&|r| r["conditions"]["all"][0]["operator"] = json!("matches")),
            "wrong_value_type",
            "conditions.all[0].value",
        ),
        (with(&|r| r["ref"] = json!("no_dot")), "bad_ref", "ref"),
        (with(&|r| r["trigger"] = json!("apitest.statuz")), "unknown_trigger", "trigger"),
        (json!([1]), "invalid_body", ""),
    ];
    for (rule, code, field) in &cases {
        let field = (!field.is_empty()).then_some(*field);
        assert_error(&server.as_admin(Method::POST, "/api/v1/rules", Some(rule)).await, 422, code, field);
    }
    // The same checks on PUT (the rule must exist for PUT to go further than the checks).
    assert_eq!(server.as_admin(Method::POST, "/api/v1/rules", Some(&page_rule())).await.0, 201);
    let got = server.as_admin(Method::PUT, "/api/v1/rules/apitest.page", Some(&bad_operator)).await;
    assert_error(&got, 422, "unknown_operator", Some("conditions.all[0].operator"));
    let test = json!({"rule": bad_operator, "payload": {}});
    let got = server.as_admin(Method::POST, "/api/v1/rules/test", Some(&test)).await;
    assert_error(&got, 422, "unknown_operator", Some("rule.conditions.all[0].operator"));
    let got = server.as_admin(Method::POST, "/api/v1/rules/test", Some(&json!({"rule": page_rule()}))).await;
    assert_error(&got, 422, "missing_field", Some("payload"));

    // Malformed JSON and a missing content type: 400, on every JSON route.
    let admin = format!("Bearer {}", server.admin);
    for path in ["/api/v1/rules", "/api/v1/rules/test", "/api/v1/events"] {
        let got =
            server.raw(path, &[("authorization", &admin), ("content-type", "application/json")], "{\"ref\": ").await;
        assert_error(&got, 400, "malformed_json", None);
        let got = server.raw(path, &[("authorization", &admin)], "{}").await;
        assert_error(&got, 400, "unsupported_content_type", None);
    }
    let got = server
        .as_admin(
            Method::POST,
            "/api/v1/events",
            Some(&json!({"trigger": "apitest.status", "payload": {}, "extra": 1})),
        )
        .await;
    assert_error(&got, 422, "unknown_field", Some("extra"));
    let got = server.as_admin(Method::POST, "/api/v1/events", Some(&json!([{"trigger": "apitest.status"}]))).await;
    assert_error(&got, 422, "missing_field", Some("[0].payload"));

    // Bad query strings.
    for (query, field) in
        [("since=yesterday", Some("since")), ("until=2026-13-01T00:00:00Z", Some("until")), ("limit=0", Some("limit"))]
    {
        assert_error(
            &server.as_admin(Method::GET, &format!("/api/v1/events?{query}"), None).await,
            400,
            "bad_query",
            field,
        );
    }
    for (path, field) in [("/api/v1/events?limit=many", "limit"), ("/api/v1/enforcements?rul=x", "rul")] {
        assert_error(&server.as_admin(Method::GET, path, None).await, 400, "bad_query", Some(field));
    }

    assert_eq!(server.get("/api/v1/rules").await["rules"].as_array().unwrap().len(), 1, "only the good rule");
    assert_eq!(server.stored_events().await, 0);
}

#[tokio::test]
async fn openapi_document_lists_the_paths() {
    let server = Server::start_sqlite().await;
    let readonly = server.token(Scope::Readonly, &[]).await;
    let (status, doc) = server.call(Method::GET, "/api/v1/openapi.json", Some(&readonly), None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    let mut expected: Vec<String> = routes().iter().map(|(_, path, ..)| path.to_string()).collect();
    expected.extend(["/health", "/ready", "/api/v1/webhooks/{trigger_ref}"].map(String::from));
    for path in expected {
        let templated = path
            .replace("apitest.page", "{ref}")
            .replace("apitest.poller", "{ref}")
            .replace("/events/nope", "/events/{id}");
        assert!(paths.contains_key(&templated), "{templated} missing from {:?}", paths.keys().collect::<Vec<_>>());
    }
    assert_eq!(
        doc["paths"]["/api/v1/rules"]["post"]["responses"]["409"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/ErrorBody"
    );
    assert!(doc["components"]["schemas"]["RuleDoc"].is_object());
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
}

#[tokio::test]
async fn triggers_and_sensors() {
    let fake = Arc::new(FakeSensors::default());
    let sensors: Arc<dyn SensorControl> = fake.clone();
    let server = Server::start(None, Some(sensors)).await;
    let triggers = server.get("/api/v1/triggers").await["triggers"].clone();
    let refs: Vec<&str> = triggers.as_array().unwrap().iter().map(|t| t["ref"].as_str().unwrap()).collect();
    assert!(
        refs.starts_with(&["core.intervaltimer", "core.crontimer", "core.datetimetimer", "core.webhook"]),
        "{refs:?}"
    );
    let status = triggers.as_array().unwrap().iter().find(|t| t["ref"] == "apitest.status").unwrap();
    assert_eq!((&status["pack"], &status["description"]), (&json!("apitest"), &json!("HTTP status")));
    assert_eq!(status["payload_schema"]["required"], json!(["status"]));

    let sensors = server.get("/api/v1/sensors").await["sensors"].clone();
    assert_eq!(sensors[0]["ref"], "apitest.poller");
    assert_eq!(sensors[0]["state"], "quarantined");
    let (status, _) = server.as_admin(Method::POST, "/api/v1/sensors/apitest.poller/restart", None).await;
    assert_eq!(status, 202);
    assert_error(
        &server.as_admin(Method::POST, "/api/v1/sensors/apitest.nope/restart", None).await,
        404,
        "not_found",
        None,
    );
    assert_eq!(*fake.restarts.lock().unwrap(), ["apitest.poller", "apitest.nope"]);

    // Without a supervisor: 503.
    let bare = Server::start_sqlite().await;
    assert_error(&bare.as_admin(Method::GET, "/api/v1/sensors", None).await, 503, "sensors_unavailable", None);
    assert_error(
        &bare.as_admin(Method::POST, "/api/v1/sensors/a.b/restart", None).await,
        503,
        "sensors_unavailable",
        None,
    );
}

/// Token management on both databases: create, list, authenticate, revoke, expire.
async fn token_lifecycle(store: &dyn Store) {
    let (token, info) = auth::create_token(store, "ci", Scope::Sensor, vec!["p.t".into()], None).await.unwrap();
    assert!(token.starts_with("attune_") && token.len() == 71, "{token}");
    let listed = auth::list(store).await.unwrap();
    assert_eq!(listed, vec![info.clone()]);
    let principal = auth::authenticate(store, &token).await.unwrap();
    assert_eq!((principal.scope, principal.triggers.as_slice()), (Scope::Sensor, &["p.t".to_string()][..]));
    assert!(auth::list(store).await.unwrap()[0].last_used_at.is_some(), "use is recorded");
    let stored = store.api_tokens().await.unwrap();
    assert!(!format!("{stored:?}").contains(&token[7..]), "the token itself is not stored");

    assert!(auth::revoke(store, &info.id).await.unwrap());
    assert!(!auth::revoke(store, &info.id).await.unwrap(), "already revoked");
    assert!(!auth::revoke(store, "nope").await.unwrap());
    assert!(matches!(auth::authenticate(store, &token).await, Err(auth::AuthError::Unauthorized(_))));

    let soon = attune_host::store::now_micros() + 500_000;
    let (expiring, _) = auth::create_token(store, "brief", Scope::Readonly, vec![], Some(soon)).await.unwrap();
    assert!(auth::authenticate(store, &expiring).await.is_ok());
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert!(matches!(auth::authenticate(store, &expiring).await, Err(auth::AuthError::Unauthorized("token expired"))));
    let listed = auth::list(store).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|t| !t.is_active(attune_host::store::now_micros())));
}

#[tokio::test]
async fn tokens_on_sqlite_and_postgres() {
    let (sqlite, _dir) = crate::support::sqlite_store().await;
    token_lifecycle(sqlite.as_ref()).await;
    token_lifecycle(crate::support::postgres_store().await.as_ref()).await;
}

#[tokio::test]
async fn first_admin_token_is_written_once_with_mode_0600() {
    let (store, dir) = crate::support::sqlite_store().await;
    let data = dir.path().join("data");
    let path = auth::bootstrap_admin(store.as_ref(), &data).await.unwrap().expect("a token on an empty store");
    assert_eq!(path, data.join("admin.token"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let token = std::fs::read_to_string(&path).unwrap();
    let principal = auth::authenticate(store.as_ref(), token.trim()).await.unwrap();
    assert_eq!(principal.scope, Scope::Admin);
    assert_eq!(auth::bootstrap_admin(store.as_ref(), &data).await.unwrap(), None, "only on an empty store");
    assert_eq!(auth::list(store.as_ref()).await.unwrap().len(), 1);
}

#[tokio::test]
async fn rules_list_pages_and_filters() {
    let server = Server::start_sqlite().await;
    for (name, trigger, enabled) in [
        ("a", "apitest.status", true),
        ("b", "apitest.other", true),
        ("c", "apitest.status", false),
        ("d", "apitest.other", true),
        ("e", "apitest.status", true),
    ] {
        let rule = json!({"ref": format!("apitest.{name}"), "trigger": trigger, "enabled": enabled,
                          "action": {"ref": "core.echo"}});
        assert_eq!(server.as_admin(Method::POST, "/api/v1/rules", Some(&rule)).await.0, 201);
    }
    let refs = |page: &Value| -> Vec<String> {
        page["rules"].as_array().unwrap().iter().map(|r| r["ref"].as_str().unwrap().to_string()).collect()
    };
    let mut seen = Vec::new();
    let mut path = "/api/v1/rules?limit=2".to_string();
    loop {
        let page = server.get(&path).await;
        seen.extend(refs(&page));
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/rules?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["apitest.a", "apitest.b", "apitest.c", "apitest.d", "apitest.e"]);
    assert_eq!(refs(&server.get("/api/v1/rules?trigger=apitest.other").await), ["apitest.b", "apitest.d"]);
    assert_eq!(refs(&server.get("/api/v1/rules?enabled=false").await), ["apitest.c"]);
    assert_eq!(
        refs(&server.get("/api/v1/rules?pack=apitest&trigger=apitest.status&enabled=true").await),
        ["apitest.a", "apitest.e"]
    );
    assert!(refs(&server.get("/api/v1/rules?pack=other").await).is_empty());
    assert_error(&server.as_admin(Method::GET, "/api/v1/rules?limit=0", None).await, 400, "bad_query", Some("limit"));
    let unknown = server.as_admin(Method::GET, "/api/v1/rules?triger=x", None).await;
    assert_eq!(unknown.0, 400, "{}", unknown.1);
}
