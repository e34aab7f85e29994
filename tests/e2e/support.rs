//! Shared test helpers: fixture paths, one engine per test process (components are compiled
//! once into the shared on-disk cache and loaded from it after), a tiny real HTTP server, and
//! the `attune-host` binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex, OnceLock};

use attune_host::capabilities::{AllowedHosts, GrantedPaths};
use attune_host::sandbox::SensorSpec;
use attune_host::sandbox::{EngineSettings, Grants, InstanceFeed, SensorEngine, SensorInstance, StartError};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ has a parent").to_path_buf()
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

pub fn built(rel: &str) -> PathBuf {
    let path = repo().join("build").join(rel);
    assert!(path.is_file(), "{} is missing: run `make components` first", path.display());
    path
}

pub fn settings() -> EngineSettings {
    EngineSettings {
        cache_dir: repo().join("target/attune-cache"),
        runtimes_dir: built("runtimes/python.wasm").parent().expect("runtimes dir").to_path_buf(),
        fuel_yield_interval: 1_000_000,
    }
}

/// One engine for the whole test binary, as the service has one per process.
pub fn engine() -> Arc<SensorEngine> {
    static ENGINE: OnceLock<Arc<SensorEngine>> = OnceLock::new();
    ENGINE.get_or_init(|| SensorEngine::new(settings()).expect("engine starts")).clone()
}

/// A bare-file sensor with the given config.
pub fn spec(path: &Path, config: Value) -> SensorSpec {
    let mut spec = SensorSpec::from_file(path).expect("known extension");
    spec.config = config;
    spec
}

pub fn with_grants(mut spec: SensorSpec, hosts: &[&str], paths: &[&Path]) -> SensorSpec {
    spec.grants = Arc::new(Grants {
        http: AllowedHosts::parse(hosts).expect("valid hosts"),
        paths: GrantedPaths::resolve(paths, Path::new("/")).expect("existing dirs"),
    });
    spec
}

pub async fn start(spec: SensorSpec) -> SensorInstance {
    start_with_state(spec, BTreeMap::new()).await
}

pub async fn start_with_state(spec: SensorSpec, state: BTreeMap<String, String>) -> SensorInstance {
    let name = spec.sensor_ref.clone();
    match SensorInstance::start(&engine(), Arc::new(spec), state, InstanceFeed::default()).await {
        Ok(sensor) => sensor,
        Err(e) => panic!("{name} did not start: {e}"),
    }
}

pub async fn try_start(spec: SensorSpec) -> Result<SensorInstance, StartError> {
    SensorInstance::start(&engine(), Arc::new(spec), BTreeMap::new(), InstanceFeed::default()).await
}

/// Payload documents of one successful poll.
pub async fn poll_payloads(sensor: &mut SensorInstance) -> Vec<Value> {
    match sensor.poll().await {
        Ok(output) => output.payloads.into_iter().map(|p| p.payload).collect(),
        Err(e) => panic!("{} poll failed: {e}", sensor.spec().sensor_ref),
    }
}

/// A real HTTP/1.1 server on 127.0.0.1 that answers every request with the current body.
pub struct JsonServer {
    pub port: u16,
    body: Arc<Mutex<String>>,
    pub requests: Arc<Mutex<u32>>,
}

impl JsonServer {
    pub async fn start(body: Value) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let body = Arc::new(Mutex::new(body.to_string()));
        let requests = Arc::new(Mutex::new(0));
        let (served, counter) = (body.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let body = served.lock().expect("body").clone();
                *counter.lock().expect("counter") += 1;
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let response = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                });
            }
        });
        Self { port, body, requests }
    }

    pub fn set(&self, body: Value) {
        *self.body.lock().expect("body") = body.to_string();
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// The `attune-host` binary with the test cache and runtimes.
pub fn attune_host() -> Command {
    let settings = settings();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_attune-host"));
    cmd.env("ATTUNE_CACHE_DIR", settings.cache_dir)
        .env("ATTUNE_RUNTIMES_DIR", settings.runtimes_dir)
        .env("NO_COLOR", "1");
    cmd
}

pub struct Run {
    pub code: Option<i32>,
    pub stdout: Vec<Value>,
    pub stderr: String,
}

pub fn run(cmd: &mut Command) -> Run {
    let Output { status, stdout, stderr } = cmd.output().expect("attune-host runs");
    let stdout = String::from_utf8_lossy(&stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}")))
        .collect();
    Run { code: status.code(), stdout, stderr: String::from_utf8_lossy(&stderr).into_owned() }
}

impl Run {
    /// The `error: ..` lines of stderr (log lines from the engine are not errors).
    pub fn errors(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.starts_with("error: ")).collect()
    }
}

/// A fresh SQLite store in a temp dir (kept alive by the returned guard).
pub async fn sqlite_store() -> (std::sync::Arc<dyn attune_host::store::Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("attune.db").display());
    let store = attune_host::store::open(&url).await.unwrap();
    store.migrate().await.unwrap();
    (store, dir)
}

/// A fresh PostgreSQL store (see [`postgres_database`]), migrated.
pub async fn postgres_store() -> std::sync::Arc<dyn attune_host::store::Store> {
    let store = attune_host::store::open(&postgres_database().await).await.unwrap();
    store.migrate().await.unwrap();
    store
}

/// Creates a fresh, empty database on the local PostgreSQL server (`ATTUNE_TEST_POSTGRES_URL`,
/// default `postgres://postgres@127.0.0.1:5432/postgres`) and returns its URL. A missing server
/// fails the test: never a skip.
pub async fn postgres_database() -> String {
    let admin_url = std::env::var("ATTUNE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
    let name = format!("attune_test_{}", uuid::Uuid::now_v7().simple());
    let admin = attune_host::store::PgStore::connect(&admin_url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is required at {admin_url} (start it; see README): {e}"));
    admin.execute_admin(&format!("CREATE DATABASE {name}")).await.unwrap();
    match admin_url.rsplit_once('/') {
        Some((server, _db)) => format!("{server}/{name}"),
        None => panic!("bad ATTUNE_TEST_POSTGRES_URL {admin_url}"),
    }
}
