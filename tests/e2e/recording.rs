//! `sensor run --record DIR` and `sensor test DIR`: a recording replays in the real sandbox
//! with the network gone, the same every time (clock, WASI time and randomness included), and
//! any change in host calls, state writes or payloads is named at its first difference.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::support::{JsonServer, attune_host, built, run};

const PYTHON_SENSOR: &str = r#"import time, uuid
from attune_sensor import clock, http, log, state

def poll(config):
    cursor = state.get_json("cursor", 0)
    items = http.get(config["url"]).json()["items"]
    now = clock.now_ms()
    for item in items:
        if item["id"] > cursor:
            yield {"id": item["id"], "seen_ms": now, "wall_ms": int(time.time() * 1000), "tag": str(uuid.uuid4())}
            cursor = item["id"]
    state.set_json("cursor", cursor)
    log.info(f"cursor {cursor}")
"#;

const JS_SENSOR: &str = r#"import { clock, http, log, state } from '@attune/sensor';

export function* poll(config) {
  let cursor = state.getJson('cursor', 0);
  const items = http.get(config.url).json().items;
  const now = clock.nowMs();
  for (const item of items) {
    if (item.id > cursor) {
      yield { id: item.id, seen_ms: now, wall_ms: Date.now(), tag: Math.random().toString(36).slice(2) };
      cursor = item.id;
    }
  }
  state.setJson('cursor', cursor);
  log.info(`cursor ${cursor}`);
}
"#;

/// A pack `rec` whose one sensor polls `url` with `source` (`python` or `javascript`).
fn write_pack(root: &Path, runtime: &str, source: &str, url: &str) -> (PathBuf, PathBuf) {
    let dir = root.join(format!("rec_{runtime}"));
    let write = |rel: &str, text: &str| {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    let entry = if runtime == "python" { "items.py" } else { "items.js" };
    write("pack.yaml", "ref: rec\nversion: 0.1.0\n");
    write("triggers/item.yaml", "ref: item\npayload_schema: {type: object, required: [id, tag]}\n");
    write(
        "sensors/items.yaml",
        &format!(
            "ref: items\ntriggers: [rec.item]\nruntime: {runtime}\nentry: {entry}\n\
             capabilities: {{http: [\"127.0.0.1\"]}}\nconfig: {{url: \"{url}\"}}\n"
        ),
    );
    write(&format!("sensors/{entry}"), source);
    (dir.clone(), dir.join("sensors").join(entry))
}

/// `attune-host sensor test DIRS..`: exit code, stdout, stderr.
fn sensor_test(recordings: &[&Path]) -> (Option<i32>, String, String) {
    let output = attune_host().args(["sensor", "test"]).args(recordings).output().unwrap();
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    (output.status.code(), text(output.stdout), text(output.stderr))
}

/// Edits of one sensor's source: (from, to) for its request, its state write, its payload.
struct Edits {
    request: (&'static str, &'static str),
    state_write: (&'static str, &'static str),
    payload: (&'static str, &'static str),
}

// The server answers on another worker while the test waits on the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_replays_offline_and_names_the_first_difference() {
    let python = Edits {
        request: (r#"http.get(config["url"])"#, r#"http.get(config["url"] + "?since=" + str(cursor))"#),
        state_write: (r#"state.set_json("cursor", cursor)"#, r#"state.set_json("cursor", cursor + 1)"#),
        payload: (r#"{"id": item["id"],"#, r#"{"id": item["id"] * 10,"#),
    };
    let js = Edits {
        request: ("http.get(config.url)", "http.get(config.url + '?since=' + cursor)"),
        state_write: ("state.setJson('cursor', cursor)", "state.setJson('cursor', cursor + 1)"),
        payload: ("{ id: item.id,", "{ id: item.id * 10,"),
    };
    for (runtime, source, edits) in [("python", PYTHON_SENSOR, python), ("javascript", JS_SENSOR, js)] {
        let root = tempfile::tempdir().unwrap();
        let server = JsonServer::start(json!({"items": [{"id": 1}, {"id": 2}]})).await;
        let url = server.url("/items");
        let (pack, code) = write_pack(root.path(), runtime, source, &url);
        let recording = pack.join("tests/recording");

        let recorded = run(attune_host()
            .args(["sensor", "run", "--polls", "2", "--interval-ms", "0", "--record"])
            .arg(&recording)
            .arg("--state-file")
            .arg(root.path().join("state.json"))
            .arg(&pack));
        assert_eq!(recorded.code, Some(0), "{runtime}: {}", recorded.stderr);
        assert_eq!(recorded.stdout.len(), 2, "{runtime}: {:?}", recorded.stdout);
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(recording.join("recording.json")).unwrap()).unwrap();
        assert_eq!(file["target"], "../..", "{runtime}: the target is kept relative to the recording");
        let first_poll = &file["steps"][1];
        assert_eq!(first_poll["call"], "poll");
        let calls: Vec<&str> =
            first_poll["calls"].as_array().unwrap().iter().map(|c| c["call"].as_str().unwrap()).collect();
        assert_eq!(calls, ["state.get", "http.send", "clock.now-ms", "state.set", "log"], "{runtime}");
        assert_eq!(first_poll["calls"][1]["request"]["url"], url);
        assert_eq!(first_poll["payloads"].as_array().unwrap().len(), 2);
        assert_eq!(*server.requests.lock().unwrap(), 2);

        // No network from here on, and the same answer every time.
        drop(server);
        for _ in 0..2 {
            let (status, stdout, stderr) = sensor_test(&[&recording]);
            assert_eq!(status, Some(0), "{runtime}: {stderr}");
            assert!(stdout.contains("2 polls, 10 host calls, 2 payloads replayed"), "{runtime}: {stdout}");
        }
        let (status, stdout, stderr) = sensor_test(&[&pack.join("tests")]);
        assert_eq!(status, Some(0), "{runtime}: a directory of recordings: {stderr}");
        assert!(stdout.starts_with("ok: "), "{runtime}: {stdout}");

        let original = std::fs::read_to_string(&code).unwrap();
        let edited = |(from, to): (&str, &str)| {
            assert!(original.contains(from), "{runtime}: {from}");
            std::fs::write(&code, original.replacen(from, to, 1)).unwrap();
            let (status, _, stderr) = sensor_test(&[&recording]);
            assert_eq!(status, Some(1), "{runtime}: {stderr}");
            assert!(stderr.contains("1 of 1 recordings differ"), "{runtime}: {stderr}");
            stderr
        };
        let stderr = edited(edits.request);
        let difference = format!(
            "poll 1: host call 2: the recording has http.send GET {url}, the sensor made http.send GET {url}?since=0"
        );
        assert!(stderr.contains(&difference), "{runtime}: {stderr}");
        let stderr = edited(edits.state_write);
        let difference = r#"poll 1: host call 4: the recording has state.set "cursor" = "2", the sensor made state.set "cursor" = "3""#;
        assert!(stderr.contains(difference), "{runtime}: {stderr}");
        let stderr = edited(edits.payload);
        assert!(
            stderr.contains(r#"poll 1: payload 0: the recording has {"trigger":"rec.item","payload":{"id":1,"#)
                && stderr.contains(r#"the sensor yielded {"trigger":"rec.item","payload":{"id":10,"#),
            "{runtime}: {stderr}"
        );
    }
}

#[test]
fn a_built_component_replays_too() {
    let root = tempfile::tempdir().unwrap();
    let recording = root.path().join("recording");
    let recorded = run(attune_host()
        .args(["sensor", "run", "--polls", "3", "--interval-ms", "0", "--record"])
        .arg(&recording)
        .arg("--state-file")
        .arg(root.path().join("state.json"))
        .arg(built("components/js_bundled_dep.wasm")));
    assert_eq!(recorded.code, Some(0), "{}", recorded.stderr);
    assert_eq!(recorded.stdout.last().unwrap()["label"], "00003");
    let (status, stdout, stderr) = sensor_test(&[&recording]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stdout.contains("3 polls"), "{stdout}");
    // A recording whose state differs from what the sensor reads: named at the read.
    let file = recording.join("recording.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["state"] = json!({"n": "5"});
    std::fs::write(&file, doc.to_string()).unwrap();
    let (status, _, stderr) = sensor_test(&[&recording]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(
        stderr.contains(r#"poll 1: host call 1: state.get "n" answered null in the recording, "5" now"#),
        "{stderr}"
    );
}

/// `sensor run --watch`: an edit of the sensor's file runs it again with the new code; an edit
/// that breaks it is reported and the next good edit runs again.
#[test]
fn watch_runs_again_on_every_change() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let root = tempfile::tempdir().unwrap();
    let sensor = root.path().join("version.py");
    let write = |version: &str| {
        std::fs::write(&sensor, format!("def poll(config):\n    yield {{\"v\": {version}}}\n")).unwrap()
    };
    write("1");
    let mut child = attune_host()
        .args(["sensor", "run", "--watch", "--polls", "1", "--state-file"])
        .arg(root.path().join("data/state.json"))
        .arg(&sensor)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, receive) = std::sync::mpsc::channel();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    std::thread::spawn(move || stdout.lines().map_while(Result::ok).for_each(|line| drop(lines.send(line))));
    let (errors, receive_errors) = std::sync::mpsc::channel();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    std::thread::spawn(move || stderr.lines().map_while(Result::ok).for_each(|line| drop(errors.send(line))));
    let next_line = || receive.recv_timeout(std::time::Duration::from_secs(60)).expect("a payload line");

    assert_eq!(next_line(), r#"{"v":1}"#);
    // Modification times may be coarse: make each edit change the size too.
    write("22");
    assert_eq!(next_line(), r#"{"v":22}"#);
    write("(");
    let reported = (0..100)
        .filter_map(|_| receive_errors.recv_timeout(std::time::Duration::from_secs(60)).ok())
        .find(|line| line.starts_with("error: "));
    assert!(reported.is_some_and(|line| line.contains("version.py")), "a broken edit is reported");
    write("333");
    assert_eq!(next_line(), r#"{"v":333}"#);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A secret the sensor sends is recorded as its reference, never its value, and the recording
/// replays without the secret (the sensor is handed the reference itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_recorded_as_references_and_replay_without_them() {
    let root = tempfile::tempdir().unwrap();
    let server = JsonServer::start(json!({"items": []})).await;
    let source = "from attune_sensor import http\n\n\
                  def poll(config):\n    \
                      response = http.get(config[\"url\"], headers={\"authorization\": \"Bearer \" + config[\"token\"]})\n    \
                      yield {\"id\": response.status, \"tag\": \"t\"}\n";
    let (pack, _) = write_pack(root.path(), "python", source, &server.url("/items"));
    let manifest = pack.join("sensors/items.yaml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replace("config: {", "config: {token: \"{{ secret.API_TOKEN }}\", ")).unwrap();
    let recording = pack.join("tests/recording");
    let recorded = run(attune_host()
        .env("ATTUNE_SECRET_API_TOKEN", "s3cr3t-value")
        .args(["sensor", "run", "--polls", "1", "--record"])
        .arg(&recording)
        .arg("--state-file")
        .arg(root.path().join("state.json"))
        .arg(&pack));
    assert_eq!(recorded.code, Some(0), "{}", recorded.stderr);
    let file = std::fs::read_to_string(recording.join("recording.json")).unwrap();
    assert!(!file.contains("s3cr3t-value"), "{file}");
    assert!(file.contains("Bearer {{ secret.API_TOKEN }}"), "{file}");
    drop(server);
    let (status, stdout, stderr) = sensor_test(&[&recording]);
    assert_eq!(status, Some(0), "{stderr}");
    assert!(stdout.contains("1 polls"), "{stdout}");
}
