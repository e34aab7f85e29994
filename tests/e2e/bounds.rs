//! Every input has a ceiling with a clear error naming the field: rule refs, sensor limits and
//! poll intervals, and the enforcements one request may make.

use std::path::Path;

use attune_host::pack::Pack;
use reqwest::Method;
use serde_json::json;

use crate::host::Host;

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn sensor_limits_and_poll_intervals_have_ceilings() {
    let packs = tempfile::tempdir().unwrap();
    let dir = packs.path().join("big");
    write(&dir, "pack.yaml", "ref: big\nversion: 1.0.0\n");
    write(&dir, "triggers/t.yaml", "ref: t\n");
    write(&dir, "sensors/s.js", "export function* poll() {}\n");
    for (extra, field, says) in [
        ("limits: {memory_mib: 1000000}\n", "limits", "limits.memory_mib is 1000000; the host allows at most 2048"),
        ("limits: {fuel: 1000000000000000}\n", "limits", "limits.fuel"),
        ("limits: {timeout_ms: 3600000}\n", "limits", "limits.timeout_ms"),
        ("poll_interval: 0.000001\n", "poll_interval", "too short"),
    ] {
        write(&dir, "sensors/s.yaml", &format!("ref: s\ntriggers: [big.t]\nruntime: javascript\nentry: s.js\n{extra}"));
        let error = Pack::load(&dir).unwrap_err();
        assert_eq!(error.field.as_deref(), Some(field), "{error}");
        assert!(error.message.contains(says), "{error}");
    }
    write(&dir, "sensors/s.yaml", "ref: s\ntriggers: [big.t]\nruntime: javascript\nentry: s.js\npoll_interval: 0.1\n");
    Pack::load(&dir).unwrap();
}

#[tokio::test]
async fn refs_and_enforcements_per_request_are_bounded() {
    let packs = tempfile::tempdir().unwrap();
    let dir = packs.path().join("fan");
    write(&dir, "pack.yaml", "ref: fan\nversion: 1.0.0\n");
    write(&dir, "triggers/out.yaml", "ref: out\n");
    let host = Host::start(packs.path(), None, None).await;

    // A 70 KB ref is refused when saved, not stored to become unreadable.
    let long = format!("fan.{}", "r".repeat(70_000));
    let rule = |r: &str| json!({"ref": r, "trigger": "fan.out", "action": {"ref": "core.noop"}});
    let (status, error) = host.call(Method::POST, "/api/v1/rules", Some(rule(&long))).await;
    assert_eq!((status, &error["error"]["code"], &error["error"]["field"]), (422, &json!("bad_ref"), &json!("ref")));
    assert!(error["error"]["message"].as_str().unwrap().contains("at most 128"), "{error}");

    // 11 rules on one trigger and 1,000 events in one request: 11,000 enforcements is over the
    // cap, so the whole request is refused and nothing is stored.
    for i in 0..11 {
        host.ok(Method::POST, "/api/v1/rules", Some(rule(&format!("fan.r{i}")))).await;
    }
    let events: Vec<_> = (0..1_000).map(|i| json!({"trigger": "fan.out", "payload": {"i": i}})).collect();
    let (status, error) = host.call(Method::POST, "/api/v1/events", Some(json!(events))).await;
    assert_eq!((status, &error["error"]["code"]), (422, &json!("too_many_enforcements")), "{error}");
    let stored = host.ok(Method::GET, "/api/v1/events?limit=10", None).await;
    assert_eq!(stored["events"], json!([]), "a refused request stored events");
    // Under the cap: stored.
    let (status, body) = host.call(Method::POST, "/api/v1/events", Some(json!(events[..900].to_vec()))).await;
    assert_eq!((status, &body["enforcements"]), (201, &json!(9_900)), "{body}");
    host.stop().await;
}
