//! The dry run answers as live matching does. The same rules meet events from each source — a
//! sensor, a native timer, a signed webhook and `POST /events` — live under `serve`, then in
//! `POST /rules/test` (given the stored event, and given only its payload) and `attune-host rule
//! test`. Every document root (`payload`, `trigger` with its `params`, `event`) and every
//! operator family appear in the conditions and the action parameters.

use std::path::Path;
use std::time::{Duration, Instant};

use attune_host::api::{self, WebhookSecrets};
use reqwest::Method;
use serde_json::{Value, json};

use crate::host::Host;
use crate::support::attune_host;

const SECRET: &str = "parity-s3cret";

/// Pack `parity`: `reading` (emitted by a JS sensor and posted to `POST /events`) and `push`
/// (a webhook), both with a `param_schema`; pack config `{team: ops}`.
fn write_pack(packs: &Path) {
    let dir = packs.join("parity");
    let write = |rel: &str, text: &str| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "pack.yaml",
        "ref: parity\nversion: 1.0.0\nconfig: {team: ops}\nconfig_schema: {type: object, properties: {team: {type: string}}, additionalProperties: false}\n",
    );
    let params = "param_schema: {type: object, properties: {zone: {type: string}}, additionalProperties: false}\n";
    write("triggers/reading.yaml", &format!("ref: reading\npayload_schema: {{type: object, required: [n]}}\n{params}"));
    write("triggers/push.yaml", &format!("ref: push\n{params}"));
    write(
        "sensors/reader.yaml",
        "ref: reader\ntriggers: [parity.reading]\nruntime: javascript\nentry: reader.js\npoll_interval: 0.2\n",
    );
    write(
        "sensors/reader.js",
        "import { state } from '@attune/sensor';\n\
         export function* poll() {\n\
           const n = state.getJson('n', 0) + 1;\n\
           state.setJson('n', n);\n\
           yield { n, origin: 'sensor', s: 'abc', tags: ['x', 'y'] };\n\
         }\n",
    );
}

/// One source's rules: what it fires, the instance's params, and leaves on its payload.
struct Case {
    name: &'static str,
    trigger: &'static str,
    params: Value,
    /// `(params key, its value)`: a leaf on `trigger.params`.
    param: (&'static str, Value),
    payload_leaves: Vec<Value>,
}

fn cases() -> Vec<Case> {
    let reading = |origin: &str| {
        vec![
            json!({"field": "payload.origin", "operator": "equals", "value": origin}),
            json!({"field": "payload.n", "operator": "greater_or_equal", "value": 1}),
            json!({"field": "payload.s", "operator": "wildcard", "value": "a*c"}),
            json!({"field": "payload.s", "operator": "istarts_with", "value": "AB"}),
            json!({"field": "payload.tags", "operator": "contains", "value": "x"}),
            json!({"field": "payload.tags[1]", "operator": "not_in", "value": ["z"]}),
        ]
    };
    vec![
        Case {
            name: "sensor",
            trigger: "parity.reading",
            params: json!({"zone": "eu"}),
            param: ("zone", json!("eu")),
            payload_leaves: reading("sensor"),
        },
        Case {
            name: "api",
            trigger: "parity.reading",
            params: json!({"zone": "us"}),
            param: ("zone", json!("us")),
            payload_leaves: reading("api"),
        },
        Case {
            name: "webhook",
            trigger: "parity.push",
            params: json!({"zone": "ap"}),
            param: ("zone", json!("ap")),
            payload_leaves: reading("webhook"),
        },
        Case {
            name: "timer",
            trigger: "core.intervaltimer",
            params: json!({"interval": 1, "unit": "seconds"}),
            param: ("interval", json!(1)),
            payload_leaves: vec![
                json!({"field": "payload.type", "operator": "iequals", "value": "INTERVAL"}),
                json!({"field": "payload.execution_count", "operator": "greater_than", "value": 0}),
                json!({"field": "payload.scheduled_at", "operator": "timediff_lt", "value": 600}),
            ],
        },
    ]
}

/// A rule of `case`; `matching: false` asks `trigger.params` for a value it does not have.
fn rule(case: &Case, matching: bool, with_pack_config: bool) -> Value {
    let suffix = if matching { "hit" } else { "miss" };
    let (key, value) = &case.param;
    let wanted = if matching { value.clone() } else { json!("nowhere") };
    let mut all = vec![
        json!({"field": "trigger.ref", "operator": "equals", "value": case.trigger}),
        json!({"field": format!("trigger.params.{key}"), "operator": "in", "value": [wanted]}),
        json!({"field": "event.trigger", "operator": "iequals", "value": case.trigger.to_uppercase()}),
        json!({"field": "event.id", "operator": "exists"}),
        json!({"field": "event.source", "operator": "exists"}),
        json!({"field": "event.created_at", "operator": "timediff_lt", "value": 600}),
        json!({"field": "event.created_at", "operator": "matches", "value": "^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}\\.\\d{3}Z$"}),
        json!({"field": "event.nothing", "operator": "not_exists"}),
        json!({"not": {"field": "payload.maintenance", "operator": "equals", "value": true}}),
    ];
    all.extend(case.payload_leaves.iter().cloned());
    let mut parameters = json!({
        "payload": "{{ event.payload }}",
        "trigger": "{{ trigger.ref }}",
        "params": "{{ trigger.params }}",
        "param": format!("{{{{ trigger.params.{key} }}}}"),
        "id": "{{ event.id }}",
        "source": "{{ event.source }}",
        "at": "{{ event.created_at }}",
        "event_trigger": "{{ event.trigger }}",
    });
    if with_pack_config {
        parameters["team"] = json!("{{ pack.config.team }}");
    }
    json!({
        "ref": format!("parity.{}_{suffix}", case.name),
        "trigger": case.trigger,
        "trigger_params": case.params,
        "conditions": {"any": [{"all": all}]},
        "action": {"ref": "core.echo", "parameters": parameters},
    })
}

/// Every leaf in order: `(field, held, reason)`; a leaf under `not` has its own verdict.
fn leaves(explanation: &Value) -> Vec<(String, bool, String)> {
    fn walk(node: &Value, out: &mut Vec<(String, bool, String)>) {
        if node["kind"] == "leaf" {
            let text = |key: &str| node[key].as_str().unwrap().to_string();
            out.push((text("field"), node["held"].as_bool().unwrap(), text("reason")));
        }
        for child in node["children"].as_array().into_iter().flatten() {
            walk(child, out);
        }
    }
    let mut out = Vec::new();
    walk(&explanation["conditions"], &mut out);
    assert!(out.len() >= 10, "{explanation}");
    out
}

/// Parameters that name the event itself differ between a stored event and a dry run's own.
fn without_event_identity(parameters: &Value) -> Value {
    let mut parameters = parameters.clone();
    for key in ["id", "source", "at"] {
        parameters.as_object_mut().unwrap().remove(key);
    }
    parameters
}

async fn dry_run(host: &Host, body: Value) -> Value {
    host.ok(Method::POST, "/api/v1/rules/test", Some(body)).await
}

async fn wait_events(host: &Host, trigger: &str, source_prefix: &str) -> Vec<Value> {
    let started = Instant::now();
    loop {
        let page = host.ok(Method::GET, &format!("/api/v1/events?trigger={trigger}&limit=1000"), None).await;
        let events: Vec<Value> = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["source"].as_str().unwrap().starts_with(source_prefix))
            .cloned()
            .collect();
        if !events.is_empty() {
            return events;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no `{source_prefix}` event on {trigger}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn dry_runs_answer_as_live_for_every_source() {
    let packs = tempfile::tempdir().unwrap();
    write_pack(packs.path());
    let mut secrets = WebhookSecrets::new();
    secrets.insert("parity.push", SECRET);
    let host = Host::start_with(packs.path(), None, None, secrets).await;
    for case in cases() {
        for matching in [true, false] {
            let (status, body) = host.call(Method::POST, "/api/v1/rules", Some(rule(&case, matching, true))).await;
            assert_eq!(status, 201, "{body}");
        }
    }

    // Live: one event from each source not already running (the sensor and the timers are).
    let posted =
        json!({"trigger": "parity.reading", "payload": {"n": 5, "origin": "api", "s": "abc", "tags": ["x", "y"]}});
    host.ok(Method::POST, "/api/v1/events", Some(posted)).await;
    let body = json!({"n": 7, "origin": "webhook", "s": "abc", "tags": ["x", "y"]}).to_string();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (ts, signature) = (now.to_string(), api::sign(SECRET.as_bytes(), now, body.as_bytes()));
    let headers = [
        ("content-type", "application/json"),
        ("X-Attune-Timestamp", ts.as_str()),
        ("X-Attune-Signature", signature.as_str()),
    ];
    let (status, stored) = host.post_unauthenticated("/api/v1/webhooks/parity.push", &headers, &body).await;
    assert_eq!(status, 201, "{stored}");

    for case in cases() {
        let hit = rule(&case, true, true);
        let miss = rule(&case, false, true);
        let (hit_ref, miss_ref) = (hit["ref"].as_str().unwrap(), miss["ref"].as_str().unwrap());

        // The matching rule: live enforcement == dry run of the stored event, parameters and all.
        let enforcement = host.wait_enforcements(hit_ref, 1, Duration::from_secs(10)).await.pop().unwrap();
        assert_eq!(enforcement["status"], "scheduled", "{enforcement}");
        let event_id = enforcement["event_id"].as_str().unwrap();
        let event = host.ok(Method::GET, &format!("/api/v1/events/{event_id}"), None).await;
        let of_event = dry_run(&host, json!({"rule": hit, "event_id": event_id})).await;
        assert_eq!(of_event["matched"], true, "{}: {of_event}", case.name);
        assert_eq!(of_event["parameters"], enforcement["parameters"], "{}: dry run vs live", case.name);
        let parameters = &enforcement["parameters"];
        assert_eq!(parameters["payload"], event["payload"], "{}", case.name);
        assert_eq!(parameters["params"], case.params, "{}: trigger.params live", case.name);
        assert_eq!(parameters["param"], case.param.1, "{}", case.name);
        assert_eq!(parameters["trigger"], case.trigger, "{}", case.name);
        assert_eq!(parameters["id"], event["id"], "{}", case.name);
        assert_eq!(parameters["source"], event["source"], "{}", case.name);
        assert_eq!(parameters["team"], "ops", "{}", case.name);
        let at = parameters["at"].as_str().unwrap();
        assert!(event["created_at"].as_str().unwrap().starts_with(&at[..23]), "{}: {at} vs {event}", case.name);

        // Given only the payload: the same verdict on every leaf, the same parameters but for
        // those naming the event itself.
        let of_payload = dry_run(&host, json!({"rule": hit, "payload": event["payload"]})).await;
        assert_eq!(of_payload["matched"], true, "{}: {of_payload}", case.name);
        let (live, dry) = (leaves(&of_event["explanation"]), leaves(&of_payload["explanation"]));
        assert_eq!(live.len(), dry.len());
        for ((field, held, reason), (_, dry_held, dry_reason)) in live.iter().zip(&dry) {
            assert_eq!(held, dry_held, "{}: {field}", case.name);
            // Ages are measured at each call's own "now"; the event's own facts differ by design.
            let identity = ["event.id", "event.source", "event.created_at"].contains(&field.as_str());
            if !identity && !reason.contains("(age ") {
                assert_eq!(reason, dry_reason, "{}: {field}", case.name);
            }
        }
        assert_eq!(
            without_event_identity(&of_payload["parameters"]),
            without_event_identity(parameters),
            "{}",
            case.name
        );

        // The rule whose `trigger.params` condition fails: no enforcement live, and the dry run
        // of an event it saw names that leaf alone.
        let prefix = match case.name {
            "timer" => format!("timer:{miss_ref}"),
            "api" => "api:".to_string(),
            other => other.to_string(),
        };
        let events = wait_events(&host, case.trigger, &prefix).await;
        let seen = events.iter().find(|e| e["rule"].as_str().is_none_or(|r| r == miss_ref)).unwrap();
        let verdict = dry_run(&host, json!({"rule": miss, "event_id": seen["id"]})).await;
        assert_eq!(verdict["matched"], false, "{}: {verdict}", case.name);
        let failed: Vec<String> =
            leaves(&verdict["explanation"]).into_iter().filter(|(_, held, _)| !held).map(|(f, _, _)| f).collect();
        // `payload.maintenance` fails under `not`, as intended.
        assert_eq!(failed, [format!("trigger.params.{}", case.param.0), "payload.maintenance".into()], "{}", case.name);
        assert!(host.enforcements(miss_ref).await.is_empty(), "{}: the failing rule enforced live", case.name);

        // `attune-host rule test` (no pack config) agrees on the same rule and payload.
        let dir = tempfile::tempdir().unwrap();
        let cli_rule = rule(&case, true, false);
        std::fs::write(dir.path().join("rule.yaml"), serde_json::to_string(&cli_rule).unwrap()).unwrap();
        std::fs::write(dir.path().join("payload.json"), event["payload"].to_string()).unwrap();
        let mut cmd = attune_host();
        cmd.args(["rule", "test"]).arg(dir.path().join("rule.yaml")).arg(dir.path().join("payload.json"));
        let output = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert_eq!(output.status.code(), Some(0), "{}: {text}{}", case.name, String::from_utf8_lossy(&output.stderr));
        let printed: String = text
            .lines()
            .skip_while(|l| *l != "action parameters:")
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(|l| format!("{}\n", &l[2..]))
            .collect();
        let printed: Value = serde_json::from_str(&printed).unwrap_or_else(|e| panic!("{e}: {text}"));
        let mut expected = without_event_identity(&of_payload["parameters"]);
        expected.as_object_mut().unwrap().remove("team");
        assert_eq!(without_event_identity(&printed), expected, "{}: `rule test` vs POST /rules/test", case.name);
        assert!(text.ends_with("MATCHED\n") && !text.contains("NOT MATCHED"), "{}: {text}", case.name);
    }
    host.stop().await;
}
