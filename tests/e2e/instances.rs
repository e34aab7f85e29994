//! Trigger instances: one sensor serves every enabled rule on its triggers, each with its own
//! `trigger_params` (checked against the trigger's `param_schema` when saved), may emit for one
//! rule or all, and sees rules come and go without a restart.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::host::Host;
use crate::support::{JsonServer, repo};

/// Copies the pack directory `from` into `packs`.
fn copy_pack(from: &Path, packs: &Path) {
    let to = packs.join(from.file_name().unwrap());
    for entry in walk(from) {
        let target = to.join(entry.strip_prefix(from).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&entry, target).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

fn status_rule(name: &str, params: Value) -> Value {
    json!({
        "ref": format!("examples_http.{name}"),
        "trigger": "examples_http.http_status",
        "trigger_params": params,
        "action": {"ref": "core.echo", "parameters": {
            "url": "{{ event.payload.url }}", "ok": "{{ event.payload.ok }}", "watching": "{{ trigger.params.url }}"}},
    })
}

async fn events_of(host: &Host, trigger: &str) -> Vec<Value> {
    let page = host.ok(Method::GET, &format!("/api/v1/events?trigger={trigger}&limit=1000"), None).await;
    page["events"].as_array().unwrap().clone()
}

/// The example: one HTTP status sensor, two rules watching two URLs, events per rule.
#[tokio::test]
async fn one_status_sensor_watches_a_url_per_rule() {
    let (up, other) = (JsonServer::start(json!({"up": true})).await, JsonServer::start(json!({})).await);
    let packs = tempfile::tempdir().unwrap();
    copy_pack(&repo().join("sensors/examples_http"), packs.path());
    let host = Host::start(packs.path(), None, None).await;

    // trigger_params are checked against the trigger's param_schema when a rule is saved.
    for (params, field) in [
        (json!({"url": "ftp://example.com/"}), "trigger_params.url"),
        (json!({"url": up.url("/a"), "expect_statsu": 200}), "trigger_params.expect_statsu"),
        (json!({}), "trigger_params.url"),
    ] {
        let (status, error) = host.call(Method::POST, "/api/v1/rules", Some(status_rule("bad", params))).await;
        assert_eq!(status, 422, "{error}");
        assert_eq!(error["error"]["code"], "bad_trigger_params", "{error}");
        assert_eq!(error["error"]["field"], field, "{error}");
    }
    let (_, typo) = host
        .call(Method::POST, "/api/v1/rules", Some(status_rule("bad", json!({"url": up.url("/"), "expect_statsu": 1}))))
        .await;
    assert!(typo["error"]["message"].as_str().unwrap().contains("did you mean `expect_status`"), "{typo}");
    assert_eq!(host.call(Method::GET, "/api/v1/rules/examples_http.bad", None).await.0, 404);

    let (url_a, url_b) = (up.url("/a"), other.url("/b"));
    host.ok(Method::POST, "/api/v1/rules", Some(status_rule("watch_a", json!({"url": url_a})))).await;
    host.ok(Method::POST, "/api/v1/rules", Some(status_rule("watch_b", json!({"url": url_b, "expect_status": 503}))))
        .await;
    let a = host.wait_enforcements("examples_http.watch_a", 2, Duration::from_secs(15)).await;
    let b = host.wait_enforcements("examples_http.watch_b", 2, Duration::from_secs(15)).await;
    for e in &a {
        assert_eq!(e["parameters"], json!({"url": url_a, "ok": true, "watching": url_a}), "{e}");
    }
    for e in &b {
        assert_eq!(e["parameters"], json!({"url": url_b, "ok": false, "watching": url_b}), "{e}");
    }
    // Each event is for one rule, and carries that rule's URL.
    let events = events_of(&host, "examples_http.http_status").await;
    assert!(events.len() >= 4);
    for event in &events {
        let url = match event["rule"].as_str() {
            Some("examples_http.watch_a") => &url_a,
            Some("examples_http.watch_b") => &url_b,
            other => panic!("event for {other:?}: {event}"),
        };
        assert_eq!(&event["payload"]["url"], url, "{event}");
    }
    host.stop().await;
}

/// A pack whose JS sensor emits one payload per instance, numbered by a counter in the
/// instance's memory (it starts again only if the instance is replaced), and one for all.
fn write_echo_pack(packs: &Path) {
    let dir = packs.join("inst");
    let write = |rel: &str, text: &str| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("pack.yaml", "ref: inst\nversion: 1.0.0\n");
    write(
        "triggers/tick.yaml",
        "ref: tick\nparam_schema: {type: object, required: [tag], properties: {tag: {type: string}}, additionalProperties: false}\n",
    );
    write(
        "sensors/echo.yaml",
        "ref: echo\ntriggers: [inst.tick]\nruntime: javascript\nentry: echo.js\npoll_interval: 0.1\n",
    );
    write(
        "sensors/echo.js",
        "import { emit, instances } from '@attune/sensor';\n\
         let polls = 0;\n\
         export function* poll() {\n\
           polls += 1;\n\
           for (const i of instances.list()) yield i.emit({ polls, tag: i.params.tag });\n\
           yield emit('inst.tick', { polls, tag: 'all' });\n\
         }\n",
    );
}

fn tick_rule(tag: &str) -> Value {
    json!({"ref": format!("inst.{tag}"), "trigger": "inst.tick", "trigger_params": {"tag": tag},
           "action": {"ref": "core.echo", "parameters": {"tag": "{{ event.payload.tag }}", "polls": "{{ event.payload.polls }}"}}})
}

/// `(tag, polls)` of each enforcement of `rule`.
async fn enforced(host: &Host, rule: &str) -> Vec<(String, i64)> {
    let list = host.enforcements(rule).await;
    list.iter()
        .map(|e| (e["parameters"]["tag"].as_str().unwrap().to_string(), e["parameters"]["polls"].as_i64().unwrap()))
        .collect()
}

async fn wait_for(host: &Host, rule: &str, what: &str, done: impl Fn(&[(String, i64)]) -> bool) -> Vec<(String, i64)> {
    let started = Instant::now();
    loop {
        let got = enforced(host, rule).await;
        if done(&got) {
            return got;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{rule}: {what}; got {got:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn instances_come_and_go_while_the_sensor_runs() {
    let packs = tempfile::tempdir().unwrap();
    write_echo_pack(packs.path());
    let host = Host::start(packs.path(), None, None).await;
    host.ok(Method::POST, "/api/v1/rules", Some(tick_rule("one"))).await;
    // `one` sees its own payloads and those for every rule, never another rule's.
    let one = wait_for(&host, "inst.one", "own and shared payloads", |got| {
        got.iter().any(|(tag, _)| tag == "one") && got.iter().any(|(tag, _)| tag == "all")
    })
    .await;
    let polls_before = one.iter().map(|(_, polls)| *polls).max().unwrap();

    // A second instance arrives: the same running instance (its counter goes on) serves both.
    host.ok(Method::POST, "/api/v1/rules", Some(tick_rule("two"))).await;
    let two = wait_for(&host, "inst.two", "its own payloads", |got| got.iter().any(|(tag, _)| tag == "two")).await;
    let first_two = two.iter().filter(|(tag, _)| tag == "two").map(|(_, polls)| *polls).min().unwrap();
    assert!(first_two > polls_before, "the sensor restarted: poll {first_two} after {polls_before}");
    assert!(two.iter().all(|(tag, _)| tag == "two" || tag == "all"), "{two:?}");
    let one = enforced(&host, "inst.one").await;
    assert!(one.iter().all(|(tag, _)| tag == "one" || tag == "all"), "{one:?}");

    // `one` goes: no more payloads for it, `two` goes on in the same instance.
    host.ok(Method::DELETE, "/api/v1/rules/inst.one", None).await;
    let gone_at = enforced(&host, "inst.two").await.iter().map(|(_, p)| *p).max().unwrap();
    let later = wait_for(&host, "inst.two", "more polls", |got| got.iter().any(|(_, p)| *p > gone_at + 3)).await;
    assert!(later.iter().map(|(_, p)| *p).min().unwrap() <= first_two, "{later:?}");
    let tagged_one = events_of(&host, "inst.tick")
        .await
        .iter()
        .filter(|e| e["payload"]["tag"] == "one" && e["payload"]["polls"].as_i64().unwrap() > gone_at + 1)
        .count();
    assert_eq!(tagged_one, 0, "payloads for a deleted instance");
    host.stop().await;
}
