//! Capabilities fail closed: hosts not allow-listed, paths not granted and the host's own
//! environment are all out of a sensor's reach.

use serde_json::{Value, json};

use crate::support::{JsonServer, fixture, poll_payloads, spec, start, with_grants};

async fn one_payload(spec: attune_host::sensor::SensorSpec) -> Value {
    let mut sensor = start(spec).await;
    let mut payloads = poll_payloads(&mut sensor).await;
    assert_eq!(payloads.len(), 1, "{payloads:?}");
    payloads.remove(0)
}

#[tokio::test]
async fn http_reaches_only_allowed_hosts() {
    let server = JsonServer::start(json!({"ok": true})).await;
    let url = server.url("/x");
    let other_port = format!("127.0.0.1:{}", server.port.wrapping_add(1));
    for (file, kind_field) in [("python/http_denied.py", "kind"), ("js/http_get.js", "kind")] {
        // Nothing granted: denied before any connection is made.
        let denied = one_payload(spec(&fixture(file), json!({"url": url}))).await;
        assert_eq!(denied[kind_field], "denied", "{file}: {denied}");
        assert!(denied["error"].as_str().unwrap().contains("not an allowed host"), "{file}: {denied}");
        // Same host, other port granted: still denied.
        let denied = one_payload(with_grants(spec(&fixture(file), json!({"url": url})), &[&other_port], &[])).await;
        assert_eq!(denied[kind_field], "denied", "{file}: {denied}");
    }
    assert_eq!(*server.requests.lock().unwrap(), 0, "a denied request reached the server");

    let allowed =
        one_payload(with_grants(spec(&fixture("js/http_get.js"), json!({"url": url})), &["127.0.0.1"], &[])).await;
    assert_eq!(allowed["status"], 200, "{allowed}");
    assert_eq!(*server.requests.lock().unwrap(), 1);
}

#[tokio::test]
async fn files_are_readable_only_under_granted_paths() {
    let granted = tempfile::tempdir().unwrap();
    let secret_dir = tempfile::tempdir().unwrap();
    std::fs::write(granted.path().join("ok.txt"), "granted content").unwrap();
    std::fs::write(secret_dir.path().join("secret.txt"), "secret").unwrap();
    let inside = granted.path().join("ok.txt");
    // `..` out of the granted directory must not work either.
    let escape = granted.path().join("..").join(secret_dir.path().file_name().unwrap()).join("secret.txt");

    for file in ["python/path_read.py", "js/path_read.js"] {
        let read =
            |path: &std::path::Path| with_grants(spec(&fixture(file), json!({"path": path})), &[], &[granted.path()]);
        assert_eq!(one_payload(read(&inside)).await, json!({"content": "granted content"}), "{file}");
        for refused in [escape.as_path(), std::path::Path::new("/etc/passwd")] {
            let payload = one_payload(read(refused)).await;
            assert!(payload.get("content").is_none(), "{file} read {}: {payload}", refused.display());
            assert!(payload["error"].as_str().unwrap().contains("denied"), "{file}: {payload}");
        }
    }
}

#[tokio::test]
async fn the_host_environment_is_invisible() {
    // The test process has CARGO_* and PATH variables; none may reach a sensor.
    let probe = one_payload(spec(&fixture("python/env_probe.py"), json!({}))).await;
    assert_eq!(probe["environ"], json!({}), "{probe}");
    let argv = probe["argv"].as_array().unwrap();
    assert!(argv.iter().all(|a| a.as_str().is_none_or(str::is_empty)), "argv leaked: {probe}");
    assert!(!probe["etc_passwd"].as_str().unwrap_or_default().contains("root:"), "{probe}");
    assert!(!probe["cwd_listing"].to_string().contains("proc"), "{probe}");

    let probe = one_payload(spec(&fixture("js/env_probe.js"), json!({}))).await;
    let text = probe.to_string();
    assert!(!text.contains(env!("CARGO_MANIFEST_DIR")), "{probe}");
    assert!(!text.contains("CARGO"), "{probe}");
}
