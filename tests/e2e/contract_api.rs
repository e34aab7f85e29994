//! The HTTP API keeps its contract: the OpenAPI document says what the server does (every
//! authenticated route documents 401, page sizes are 1 to 1000 and 0 is refused as documented,
//! non-null fields are refused as null), paging cursors and request bodies are checked (a bad
//! cursor or a key twice is 400 naming it), webhook secrets belong to exactly one trigger ref,
//! and a database that cannot be reached fails requests fast: 503 `store_unavailable` with
//! `Retry-After` within 1 s, `/ready` within 200 ms, and back to normal once it returns, without a
//! restart (real PostgreSQL behind a TCP proxy the test cuts and restores).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attune_host::api::{self, ApiState, WebhookSecrets};
use attune_host::app::{App, AppConfig};
use attune_host::auth::{self, Scope};
use attune_host::pack::Pack;
use attune_host::store::ListFilter;
use reqwest::Method;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const SECRET: &str = "contract-s3cret";

/// A pack with `ctest.status` (any payload), and `ctest.push` and `ctest.Push`: two triggers
/// whose refs differ only in case.
fn contract_pack(dir: &Path) -> Pack {
    let dir = dir.join("ctest");
    std::fs::create_dir_all(dir.join("triggers")).unwrap();
    std::fs::write(dir.join("pack.yaml"), "ref: ctest\nversion: 0.1.0\n").unwrap();
    std::fs::write(dir.join("triggers/status.yaml"), "ref: ctest.status\n").unwrap();
    std::fs::write(dir.join("triggers/push.yaml"), "ref: ctest.push\n").unwrap();
    std::fs::write(dir.join("triggers/push_upper.yaml"), "ref: ctest.Push\n").unwrap();
    Pack::load(&dir).unwrap()
}

struct Server {
    base: String,
    app: Arc<App>,
    admin: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(database_url: Option<String>, secrets: WebhookSecrets) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let pack = contract_pack(dir.path());
        let url = database_url.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("attune.db").display()));
        let app = Arc::new(App::start(&AppConfig::new(url), std::slice::from_ref(&pack)).await.unwrap());
        let state = ApiState::new(app.clone()).with_webhook_secrets(secrets);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, api::router(state)).await });
        let (admin, _) =
            auth::create_token(app.store.as_ref(), "contract admin", Scope::Admin, vec![], None).await.unwrap();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap();
        Server { base, app, admin, client, _dir: dir }
    }

    async fn sqlite() -> Self {
        Self::start(None, WebhookSecrets::new()).await
    }

    /// One request as admin (unless `token` is `Some("")`: none) with a raw body sent as JSON.
    async fn send(&self, method: Method, path: &str, token: Option<&str>, body: Option<&str>) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        match token {
            Some("") => {}
            Some(token) => request = request.bearer_auth(token),
            None => request = request.bearer_auth(&self.admin),
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let started = Instant::now();
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, body, retry_after, elapsed: started.elapsed() }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None, None).await
    }

    async fn stored_events(&self) -> usize {
        self.app.store.events(&ListFilter { limit: 1000, ..Default::default() }).await.unwrap().len()
    }
}

#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    retry_after: Option<String>,
    elapsed: Duration,
}

impl Answer {
    /// Asserts an error answer: status, `error.code` and `error.field`.
    #[track_caller]
    fn error(&self, status: u16, code: &str, field: Option<&str>) {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["error"]["code"], json!(code), "{}", self.body);
        assert!(self.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.body);
        assert_eq!(self.body["error"]["field"].as_str(), field, "{}", self.body);
    }
}

#[tokio::test]
async fn bad_paging_cursors_are_refused_naming_the_parameter() {
    let server = Server::sqlite().await;
    let events: Vec<Value> = (0..3).map(|i| json!({"trigger": "ctest.status", "payload": {"n": i}})).collect();
    let posted = server.send(Method::POST, "/api/v1/events", None, Some(&json!(events).to_string())).await;
    assert_eq!(posted.status, 201, "{}", posted.body);

    for path in ["/api/v1/events", "/api/v1/enforcements"] {
        for cursor in
            ["nope", "0", "01234567-89ab-cdef-0123-456789abcdef0", "01234567x89ab-cdef-0123-456789abcdef", "%20"]
        {
            server.get(&format!("{path}?before={cursor}")).await.error(400, "bad_query", Some("before"));
        }
    }
    for cursor in ["nope", "a.b.c", ".a", "a.", "a%20b.c"] {
        server.get(&format!("/api/v1/rules?after={cursor}")).await.error(400, "bad_query", Some("after"));
    }

    // A page's `next` is a good cursor, in any case: the page after it is the rest.
    let first = server.get("/api/v1/events?limit=2").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let next = first.body["next"].as_str().unwrap().to_string();
    for cursor in [next.clone(), next.to_uppercase()] {
        let rest = server.get(&format!("/api/v1/events?limit=2&before={cursor}")).await;
        assert_eq!(rest.status, 200, "{}", rest.body);
        assert_eq!(rest.body["events"].as_array().unwrap().len(), 1, "{}", rest.body);
    }
    assert_eq!(server.get("/api/v1/rules?after=ctest.any").await.status, 200);

    // Other query parameters that do not parse name themselves too.
    server.get("/api/v1/events?limit=ten").await.error(400, "bad_query", Some("limit"));
    server.get("/api/v1/rules?enabled=yes").await.error(400, "bad_query", Some("enabled"));
    server.get("/api/v1/events?colour=red").await.error(400, "bad_query", Some("colour"));
}

#[tokio::test]
async fn duplicate_keys_in_request_bodies_are_refused_naming_the_key() {
    let server = Server::sqlite().await;
    let rule = r#"{"ref": "ctest.one", "trigger": "ctest.status", "ref": "ctest.two", "action": {"ref": "core.noop"}}"#;
    server.send(Method::POST, "/api/v1/rules", None, Some(rule)).await.error(400, "duplicate_key", Some("ref"));
    let nested = r#"{"ref": "ctest.one", "trigger": "ctest.status",
                     "action": {"ref": "core.echo", "parameters": {"to": "a", "to": "b"}}}"#;
    server.send(Method::POST, "/api/v1/rules", None, Some(nested)).await.error(
        400,
        "duplicate_key",
        Some("action.parameters.to"),
    );
    server.send(Method::PUT, "/api/v1/rules/ctest.one", None, Some(nested)).await.error(
        400,
        "duplicate_key",
        Some("action.parameters.to"),
    );
    assert_eq!(server.get("/api/v1/rules/ctest.one").await.status, 404, "nothing was saved");

    let batch = r#"[{"trigger": "ctest.status", "payload": {}},
                    {"trigger": "ctest.status", "payload": {"status": 200, "status": 500}}]"#;
    server.send(Method::POST, "/api/v1/events", None, Some(batch)).await.error(
        400,
        "duplicate_key",
        Some("[1].payload.status"),
    );
    let dry_run = r#"{"rule": {"ref": "ctest.t", "trigger": "ctest.status", "action": {"ref": "core.noop"}},
                      "payload": {}, "payload": {"x": 1}}"#;
    server.send(Method::POST, "/api/v1/rules/test", None, Some(dry_run)).await.error(
        400,
        "duplicate_key",
        Some("payload"),
    );
    assert_eq!(server.stored_events().await, 0, "nothing was stored");

    // The same keys in different objects are fine.
    let fine = r#"{"trigger": "ctest.status", "payload": {"a": {"x": 1}, "b": {"x": 1}}}"#;
    assert_eq!(server.send(Method::POST, "/api/v1/events", None, Some(fine)).await.status, 201);
}

/// `limit=0` is refused with the error the OpenAPI document lists for the route, and the
/// document's bounds for `limit` are the server's.
#[tokio::test]
async fn limit_0_is_refused_with_the_documented_error() {
    let server = Server::sqlite().await;
    let doc = server.get("/api/v1/openapi.json").await.body;
    for path in ["/api/v1/events", "/api/v1/enforcements", "/api/v1/rules"] {
        server.get(&format!("{path}?limit=0")).await.error(400, "bad_query", Some("limit"));
        server.get(&format!("{path}?limit=1001")).await.error(400, "bad_query", Some("limit"));
        for limit in [1, 1000] {
            assert_eq!(server.get(&format!("{path}?limit={limit}")).await.status, 200, "{path}?limit={limit}");
        }
        let operation = &doc["paths"][path]["get"];
        let limit = operation["parameters"].as_array().unwrap().iter().find(|p| p["name"] == "limit").unwrap();
        assert_eq!((&limit["schema"]["minimum"], &limit["schema"]["maximum"]), (&json!(1), &json!(1000)), "{path}");
        assert_eq!(
            operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody",
            "{path}: {}",
            operation["responses"]
        );
    }
    let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
    for code in ["bad_query", "duplicate_key", "store_unavailable"] {
        assert!(codes.as_array().unwrap().contains(&json!(code)), "{code} not in {codes}");
    }
}

/// Every route that needs a token documents 401 (and 403, and 503 with `Retry-After`), and
/// answers 401 without a token; fields the document says are not nullable are refused as null.
#[tokio::test]
async fn openapi_lists_401_on_every_authenticated_route() {
    let server = Server::sqlite().await;
    let doc = server.get("/api/v1/openapi.json").await.body;
    let mut authenticated = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let public = ["/health", "/ready"].contains(&path.as_str()) || path.starts_with("/api/v1/webhooks/");
            assert_eq!(operation.get("security").is_none(), public, "{method} {path}");
            if public {
                continue;
            }
            let responses = &operation["responses"];
            for status in ["401", "403", "503"] {
                assert!(responses.get(status).is_some(), "{method} {path} does not document {status}: {responses}");
            }
            assert!(responses["503"]["headers"].get("Retry-After").is_some(), "{method} {path}");
            authenticated.push((method.to_uppercase(), path.replace("{ref}", "ctest.x").replace("{id}", "none")));
        }
    }
    assert!(authenticated.len() >= 19, "{authenticated:?}");
    for (method, path) in authenticated {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let body = (method != Method::GET && method != Method::DELETE).then_some("{}");
        let answer = server.send(method.clone(), &path, Some(""), body).await;
        answer.error(401, "unauthorized", None);
    }

    // `trigger_params` and `action.parameters` may be left out, but are objects, never null:
    // the document says so, and the server agrees.
    let rule_doc = &doc["components"]["schemas"]["RuleDoc"]["properties"];
    assert_eq!(rule_doc["trigger_params"]["type"], "object", "{rule_doc}");
    assert_eq!(doc["components"]["schemas"]["ActionDoc"]["properties"]["parameters"]["type"], "object");
    let null_params =
        r#"{"ref": "ctest.r", "trigger": "ctest.status", "trigger_params": null, "action": {"ref": "core.noop"}}"#;
    server.send(Method::POST, "/api/v1/rules", None, Some(null_params)).await.error(
        422,
        "invalid_field",
        Some("trigger_params"),
    );
    let left_out = r#"{"ref": "ctest.r", "trigger": "ctest.status", "action": {"ref": "core.noop"}}"#;
    let created = server.send(Method::POST, "/api/v1/rules", None, Some(left_out)).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!((&created.body["trigger_params"], &created.body["action"]["parameters"]), (&json!({}), &json!({})));
}

/// A webhook secret signs for its trigger ref exactly: not for another trigger whose ref differs
/// only in case, whether the secret came from the config or from its environment variable.
#[tokio::test]
async fn webhook_secrets_belong_to_one_trigger_ref_case_and_all() {
    let mut from_config = WebhookSecrets::new();
    from_config.insert("ctest.push", SECRET);
    let from_env = WebhookSecrets::from_vars([(WebhookSecrets::env_var("ctest.push"), SECRET.to_string())]);
    for secrets in [from_config, from_env] {
        let server = Server::start(None, secrets).await;
        let body = r#"{"branch": "main"}"#;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let signature = api::sign(SECRET.as_bytes(), now, body.as_bytes());
        let post = |trigger: &str| {
            server
                .client
                .post(format!("{}/api/v1/webhooks/{trigger}", server.base))
                .header("content-type", "application/json")
                .header("X-Attune-Timestamp", now.to_string())
                .header("X-Attune-Signature", &signature)
                .body(body)
                .send()
        };
        for other in ["ctest.Push", "CTEST.PUSH", "Ctest.push"] {
            let response = post(other).await.unwrap();
            assert_eq!(response.status().as_u16(), 404, "{other}: {}", response.text().await.unwrap());
        }
        assert_eq!(server.stored_events().await, 0);
        let response = post("ctest.push").await.unwrap();
        assert_eq!(response.status().as_u16(), 201, "{}", response.text().await.unwrap());
    }
}

/// A TCP proxy in front of PostgreSQL that the test takes down and brings back. While down it
/// answers nothing: connections made before stall (not closed, not forwarded), new ones are held
/// open without a word, as a database host gone from the network looks. `reset` instead closes
/// every connection and each new one at once, as a database process that died looks. Coming
/// back closes whatever was held, and forwards again.
struct PgProxy {
    addr: SocketAddr,
    down: watch::Sender<Outage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    None,
    Silent,
    Reset,
}

impl PgProxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (down, _) = watch::channel(Outage::None);
        let outage = down.subscribe();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(Self::serve(client, upstream, outage.clone()));
            }
        });
        PgProxy { addr, down }
    }

    async fn serve(mut client: TcpStream, upstream: SocketAddr, mut outage: watch::Receiver<Outage>) {
        let now = *outage.borrow_and_update();
        if now != Outage::None {
            if now == Outage::Silent {
                let _ = outage.wait_for(|o| *o == Outage::None).await;
            }
            return; // drops (closes) the connection
        }
        let Ok(mut server) = TcpStream::connect(upstream).await else { return };
        let cut = tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => None,
            changed = outage.wait_for(|o| *o != Outage::None) => changed.ok().map(|o| *o),
        };
        if cut == Some(Outage::Silent) {
            // Keep both sockets open, forwarding nothing, until the outage ends.
            let _ = outage.wait_for(|o| *o == Outage::None).await;
        }
    }

    fn set(&self, outage: Outage) {
        self.down.send_replace(outage);
    }

    /// `url` (a `postgres://` URL) pointed at this proxy.
    fn url(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let userinfo = authority.rsplit_once('@').map(|(user, _)| format!("{user}@")).unwrap_or_default();
        format!("{scheme}://{userinfo}{}/{path}", self.addr)
    }
}

/// The socket address of the server in a `postgres://` URL.
async fn postgres_addr(url: &str) -> SocketAddr {
    let rest = url.split_once("://").unwrap().1;
    let authority = rest.split('/').next().unwrap();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host_port = if host_port.contains(':') { host_port.to_string() } else { format!("{host_port}:5432") };
    tokio::net::lookup_host(host_port).await.unwrap().next().unwrap()
}

#[tokio::test]
async fn an_unreachable_database_fails_fast_with_503_and_retry_after_and_recovers() {
    let database = crate::support::postgres_database().await;
    let proxy = PgProxy::start(postgres_addr(&database).await).await;
    let server = Server::start(Some(proxy.url(&database)), WebhookSecrets::new()).await;
    let event = r#"{"trigger": "ctest.status", "payload": {"n": 1}}"#;
    let rule = r#"{"ref": "ctest.r", "trigger": "ctest.status", "action": {"ref": "core.noop"}}"#;
    assert_eq!(server.send(Method::POST, "/api/v1/events", None, Some(event)).await.status, 201);
    assert_eq!(server.get("/ready").await.status, 200);

    for outage in [Outage::Silent, Outage::Reset] {
        proxy.set(outage);
        let requests = [
            (Method::GET, "/api/v1/rules", None),
            (Method::GET, "/api/v1/events", None),
            (Method::GET, "/api/v1/enforcements", None),
            (Method::POST, "/api/v1/events", Some(event)),
            (Method::POST, "/api/v1/rules", Some(rule)),
            (Method::GET, "/api/v1/rules", None),
        ];
        for (method, path, body) in requests {
            let answer = server.send(method.clone(), path, None, body).await;
            answer.error(503, "store_unavailable", None);
            assert_eq!(answer.retry_after.as_deref(), Some("1"), "{outage:?} {method} {path}");
            assert!(answer.elapsed < Duration::from_secs(1), "{outage:?} {method} {path} took {:?}", answer.elapsed);
        }
        for _ in 0..3 {
            let ready = server.get("/ready").await;
            assert_eq!(ready.status, 503, "{outage:?}: {}", ready.body);
            assert!(ready.elapsed < Duration::from_millis(200), "{outage:?}: /ready took {:?}", ready.elapsed);
            assert_eq!(ready.body["failed"], json!(["store"]), "{}", ready.body);
            assert_eq!((&ready.body["store"]["ok"], &ready.body["bus"]["ok"]), (&json!(false), &json!(true)));
        }

        // Back: requests succeed again within about 2 s, without a restart.
        proxy.set(Outage::None);
        let back = Instant::now();
        loop {
            let answer = server.get("/api/v1/events").await;
            if answer.status == 200 {
                break;
            }
            answer.error(503, "store_unavailable", None);
            assert!(
                back.elapsed() < Duration::from_millis(2500),
                "{outage:?}: still {answer:?} after {:?}",
                back.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(back.elapsed() < Duration::from_millis(2500), "{outage:?}: back after {:?}", back.elapsed());
        assert_eq!(server.get("/ready").await.status, 200, "{outage:?}");
        let posted = server.send(Method::POST, "/api/v1/events", None, Some(event)).await;
        assert_eq!(posted.status, 201, "{outage:?}: {}", posted.body);
    }
    assert_eq!(server.stored_events().await, 3, "one event before, one after each outage, none during");
}
