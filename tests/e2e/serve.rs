//! `attune-host serve` as an operator runs it: the example packs, the first admin token, the
//! demo timer rule producing enforcements visible over the API, JSON logs tagged with the sensor,
//! and a clean exit on SIGTERM.

use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{attune_host, repo};

#[tokio::test]
async fn serve_runs_the_example_packs_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // Settings from a config file too: the webhook secret of `core.webhook`.
    let config = data.path().join("attune.yaml");
    std::fs::write(&config, "webhook_secrets:\n  core.webhook: from-the-file\n").unwrap();
    let mut child = tokio::process::Command::from(attune_host())
        .args(["--log-format", "json", "serve", "--listen", &format!("127.0.0.1:{port}"), "--packs"])
        .arg(repo().join("sensors"))
        .arg("--data-dir")
        .arg(data.path())
        .arg("--config")
        .arg(&config)
        .env_remove("ATTUNE_WEBHOOK_SECRET_CORE__WEBHOOK")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(data.path().join("serve.log")).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();

    let started = Instant::now();
    while client.get(format!("{base}/ready")).send().await.map(|r| r.status().is_success()).ok() != Some(true) {
        assert!(started.elapsed() < Duration::from_secs(30), "serve did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token_file = data.path().join("admin.token");
    assert_eq!(std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();

    // The pack's heartbeat rule fires every 5 s.
    let enforcements = loop {
        let page =
            get_json(&client, &format!("{base}/api/v1/enforcements?rule=examples_files.heartbeat"), &token).await;
        let list = page["enforcements"].as_array().cloned().unwrap_or_default();
        if !list.is_empty() || started.elapsed() > Duration::from_secs(20) {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(!enforcements.is_empty(), "no heartbeat enforcement within 20 s");
    assert!(enforcements[0]["parameters"]["message"].as_str().unwrap().starts_with("heartbeat "));
    let sensors = get_json(&client, &format!("{base}/api/v1/sensors"), &token).await;
    let watcher =
        sensors["sensors"].as_array().unwrap().iter().find(|s| s["ref"] == "examples_files.dir_watcher").unwrap();
    assert_ne!(watcher["state"], "quarantined", "{watcher}");

    // The webhook takes the file's secret.
    let body = r#"{"from": "a signed webhook"}"#;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let post = |signature: String| {
        client
            .post(format!("{base}/api/v1/webhooks/core.webhook"))
            .header(attune_host::api::TIMESTAMP_HEADER, now)
            .header(attune_host::api::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
    };
    let signed = post(attune_host::api::sign(b"from-the-file", now, body.as_bytes())).await.unwrap();
    assert_eq!(signed.status(), 201, "{}", signed.text().await.unwrap());
    let forged = post(attune_host::api::sign(b"another secret", now, body.as_bytes())).await.unwrap();
    assert_eq!(forged.status(), 401);

    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exits within 10 s").unwrap();
    assert!(status.success(), "{status}");

    // JSON logs: every line logged by a sensor's task carries the sensor's ref.
    let log = std::fs::read_to_string(data.path().join("serve.log")).unwrap();
    let lines: Vec<Value> =
        log.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let about_watcher: Vec<&Value> =
        lines.iter().filter(|l| l["span"]["sensor"] == "examples_files.dir_watcher").collect();
    let messages: Vec<&str> = about_watcher.iter().filter_map(|l| l["fields"]["message"].as_str()).collect();
    assert!(messages.contains(&"sensor started") && messages.contains(&"sensor stopped"), "{log}");
    for line in lines.iter().filter(|l| l["span"]["name"] == "sensor") {
        assert!(line["span"]["sensor"].as_str().is_some_and(|s| !s.is_empty()), "{line}");
    }
}

async fn get_json(client: &reqwest::Client, url: &str, token: &str) -> Value {
    let body = client.get(url).bearer_auth(token).send().await.unwrap().text().await.unwrap();
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
}
