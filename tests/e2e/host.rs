//! `serve` running in this test process on a free port, driven through its HTTP API.

use std::path::Path;
use std::time::{Duration, Instant};

use attune_host::api::WebhookSecrets;
use attune_host::app::AppConfig;
use attune_host::serve::{ServeConfig, serve};
use attune_host::supervisor::SupervisorOptions;
use reqwest::Method;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::settings;

/// `serve` running in this process on a free port.
pub struct Host {
    base: String,
    token: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
    _data: tempfile::TempDir,
}

impl Host {
    pub async fn start(packs: &Path, database_url: Option<String>, amqp: Option<&str>) -> Host {
        Self::start_with(packs, database_url, amqp, WebhookSecrets::new()).await
    }

    /// [`Self::start`] with webhook secrets.
    pub async fn start_with(
        packs: &Path,
        database_url: Option<String>,
        amqp: Option<&str>,
        webhook_secrets: WebhookSecrets,
    ) -> Host {
        let data = tempfile::tempdir().unwrap();
        let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let database_url =
            database_url.unwrap_or_else(|| format!("sqlite://{}", data.path().join("attune.db").display()));
        let app = match amqp {
            Some(exchange) => AppConfig {
                amqp_url: Some(attune_testkit::amqp_url()),
                exchange: exchange.into(),
                ..AppConfig::new(database_url)
            },
            None => AppConfig::new(database_url),
        };
        let config = ServeConfig {
            app,
            listen,
            packs: packs.to_path_buf(),
            data_dir: data.path().to_path_buf(),
            engine: settings(),
            supervisor: SupervisorOptions::default(),
            webhook_secrets,
            secrets: Default::default(),
            ceilings: Default::default(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(config, async {
            let _ = stopped.await;
        }));
        let base = format!("http://{listen}");
        let client = reqwest::Client::new();
        let started = Instant::now();
        while client.get(format!("{base}/ready")).send().await.map(|r| r.status().is_success()).ok() != Some(true) {
            assert!(!task.is_finished(), "serve stopped before it was ready");
            assert!(started.elapsed() < Duration::from_secs(30), "serve did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let token = std::fs::read_to_string(data.path().join("admin.token")).unwrap().trim().to_string();
        Host { base, token, client, stop: Some(stop), task, _data: data }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(&self.token, method, path, body).await
    }

    /// [`Self::call`] with another token than the first admin one.
    pub async fn call_as(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    /// A POST without the bearer token (webhooks authenticate by signature).
    pub async fn post_unauthenticated(&self, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
        let mut request = self.client.post(format!("{}{path}", self.base)).body(body.to_string());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, serde_json::from_str(&response.text().await.unwrap()).unwrap_or(Value::Null))
    }

    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (status, body) = self.call(method.clone(), path, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {body}");
        body
    }

    pub async fn enforcements(&self, rule: &str) -> Vec<Value> {
        let page = self.ok(Method::GET, &format!("/api/v1/enforcements?rule={rule}&limit=1000"), None).await;
        page["enforcements"].as_array().unwrap().clone()
    }

    pub async fn sensor(&self, sensor_ref: &str) -> Value {
        let sensors = self.ok(Method::GET, "/api/v1/sensors", None).await;
        sensors["sensors"].as_array().unwrap().iter().find(|s| s["ref"] == sensor_ref).unwrap().clone()
    }

    pub async fn metrics(&self) -> String {
        let response = self.client.get(format!("{}/metrics", self.base)).bearer_auth(&self.token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Waits until `rule` has at least `n` enforcements; returns them.
    pub async fn wait_enforcements(&self, rule: &str, n: usize, limit: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let list = self.enforcements(rule).await;
            if list.len() >= n {
                return list;
            }
            assert!(started.elapsed() < limit, "{rule}: {} enforcements after {limit:?}, wanted {n}", list.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asserts that `rule` gets no new enforcement for `quiet`.
    pub async fn assert_quiet(&self, rule: &str, quiet: Duration) {
        // A fire or poll already under way when the change landed may still be stored.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = self.enforcements(rule).await.len();
        tokio::time::sleep(quiet).await;
        assert_eq!(self.enforcements(rule).await.len(), before, "{rule} kept firing");
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.task).await.expect("stops within 10 s").unwrap().unwrap();
    }
}
