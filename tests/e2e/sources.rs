//! Both authoring paths in both languages: plain source on the shared runtimes, and components
//! built by the SDKs; plus the example packs against real inputs.

use std::collections::BTreeMap;

use attune_host::pack::Pack;
use attune_host::sandbox::{SensorCode, SensorFailure, apply_delta};
use serde_json::json;

use crate::support::{JsonServer, built, fixture, poll_payloads, repo, spec, start, start_with_state, try_start};

#[tokio::test]
async fn python_stdlib_modules_import_inside_poll() {
    let mut sensor = start(spec(&fixture("python/stdlib.py"), json!({}))).await;
    let payloads = poll_payloads(&mut sensor).await;
    assert!(!payloads.is_empty());
    let text = serde_json::to_string(&payloads).unwrap();
    assert!(!text.contains("Error"), "{text}");
}

#[tokio::test]
async fn uncaught_exceptions_come_back_with_message_and_traceback() {
    let mut sensor = start(spec(&fixture("python/raises.py"), json!({}))).await;
    match sensor.poll().await.unwrap_err() {
        SensorFailure::Sensor { message, traceback } => {
            assert_eq!(message, "KeyError: 'items'");
            let traceback = traceback.expect("a Python traceback");
            assert!(traceback.contains("raises.py"), "{traceback}");
            assert!(traceback.matches("line ").count() >= 2, "two frames expected: {traceback}");
        }
        other => panic!("expected a sensor error, got {other:?}"),
    }
    // An exception is not a trap: the same instance polls again.
    assert!(matches!(sensor.poll().await.unwrap_err(), SensorFailure::Sensor { .. }));

    let mut sensor = start(spec(&fixture("js/throws.js"), json!({}))).await;
    match sensor.poll().await.unwrap_err() {
        SensorFailure::Sensor { message, traceback } => {
            assert_eq!(message, "TypeError: bad item");
            assert!(traceback.is_some_and(|t| !t.is_empty()));
        }
        other => panic!("expected a sensor error, got {other:?}"),
    }
}

#[tokio::test]
async fn multi_trigger_sensors_name_their_trigger() {
    let mut spec = spec(&fixture("python/multi_trigger.py"), json!({}));
    spec.triggers = vec!["fixtures.a".into(), "fixtures.b".into()];
    let mut sensor = start(spec.clone()).await;
    let output = sensor.poll().await.unwrap();
    let triggers: Vec<&str> = output.payloads.iter().map(|p| p.trigger.as_str()).collect();
    assert_eq!(triggers, ["fixtures.a", "fixtures.b"]);

    spec.triggers = vec!["fixtures.a".into()];
    let mut sensor = start(spec).await;
    assert!(matches!(
        sensor.poll().await.unwrap_err(),
        SensorFailure::UndeclaredTrigger { index: 1, ref trigger, .. } if trigger == "fixtures.b"
    ));
}

#[tokio::test]
async fn state_writes_are_kept_only_when_the_poll_succeeds() {
    for file in ["python/counter.py", "js/counter.js"] {
        let mut sensor = start(spec(&fixture(file), json!({}))).await;
        assert_eq!(poll_payloads(&mut sensor).await, vec![json!({"n": 1})]);
        let output = sensor.poll().await.unwrap();
        assert_eq!(output.payloads[0].payload, json!({"n": 2}));
        assert_eq!(output.state.get("n").cloned().flatten().as_deref(), Some("2"), "{file}: {:?}", output.state);
        // A restart from the committed state continues the count.
        let state = BTreeMap::from([("n".to_string(), "2".to_string())]);
        let mut restarted = start_with_state(spec(&fixture(file), json!({})), state).await;
        assert_eq!(poll_payloads(&mut restarted).await, vec![json!({"n": 3})], "{file}");
    }
}

#[tokio::test]
async fn sdk_built_components_run_with_their_dependencies() {
    let mut py = start(spec(&built("components/py_compiled_dep.wasm"), json!({"name": "attune"}))).await;
    let payloads = poll_payloads(&mut py).await;
    assert!(payloads[0].to_string().contains("attune"), "{payloads:?}");

    let mut js = start(spec(&built("components/js_bundled_dep.wasm"), json!({}))).await;
    assert!(!poll_payloads(&mut js).await.is_empty());
}

#[tokio::test]
async fn example_http_poller_emits_only_new_items() {
    let server = JsonServer::start(json!({"items": [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]})).await;
    let pack = Pack::load(&repo().join("sensors/examples_http")).unwrap();
    let mut spec = pack.sensors.iter().find(|s| s.sensor_ref == "examples_http.json_poller").unwrap().clone();
    assert!(matches!(spec.code, SensorCode::Python(_)));
    spec.config = json!({"url": server.url("/items")});

    // What the caller commits after each poll, as the service does.
    let mut committed = BTreeMap::new();
    let mut sensor = start(spec.clone()).await;
    let mut poll = async || {
        let output = sensor.poll().await.expect("poll");
        apply_delta(&mut committed, &output.state);
        output.payloads
    };
    let first = poll().await;
    assert_eq!(first.iter().map(|p| p.payload["id"].clone()).collect::<Vec<_>>(), [json!(1), json!(2)]);
    assert!(first.iter().all(|p| p.trigger == "examples_http.new_item"));
    assert!(poll().await.is_empty(), "nothing new, nothing emitted");

    server.set(json!({"items": [{"id": 1}, {"id": 2}, {"id": 3, "v": "c"}]}));
    let third = poll().await;
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].payload["id"], 3);

    // A restart from the committed cursor repeats nothing.
    let mut restarted = start_with_state(spec, committed).await;
    assert!(poll_payloads(&mut restarted).await.is_empty());
    assert_eq!(*server.requests.lock().unwrap(), 4);
}

#[tokio::test]
async fn example_dir_watcher_reports_new_files_once() {
    let inbox = tempfile::tempdir().unwrap();
    let pack = Pack::load(&repo().join("sensors/examples_files")).unwrap();
    let mut spec = pack.sensors[0].clone();
    assert!(matches!(spec.code, SensorCode::JavaScript(_)));
    spec.config = json!({"dir": inbox.path()});
    let spec = crate::support::with_grants(spec, &[], &[inbox.path()]);

    std::fs::write(inbox.path().join("a.txt"), "aaa").unwrap();
    let mut sensor = start(spec).await;
    let first = poll_payloads(&mut sensor).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["name"], "a.txt");
    assert_eq!(first[0]["size"], 3);

    std::fs::write(inbox.path().join("b.txt"), "bb").unwrap();
    std::fs::create_dir(inbox.path().join("sub")).unwrap();
    let second = poll_payloads(&mut sensor).await;
    assert_eq!(second.iter().map(|p| p["name"].clone()).collect::<Vec<_>>(), [json!("b.txt")]);
    assert!(poll_payloads(&mut sensor).await.is_empty());
}

#[tokio::test]
async fn bad_sources_fail_to_start_with_the_file_and_the_problem() {
    let cases = [
        ("python/syntax_error.py", "SyntaxError"),
        ("python/no_poll.py", "no_poll.py defines no poll(config) function"),
        ("js/syntax_error.js", "SyntaxError"),
        ("js/no_poll.js", "no_poll.js defines no poll(config) function"),
    ];
    for (file, expected) in cases {
        let error = try_start(spec(&fixture(file), json!({}))).await.expect_err(file).to_string();
        assert!(error.contains(expected), "{file}: {error}");
        let name = file.rsplit('/').next().unwrap();
        assert!(error.contains(name), "{file}: the message must name the file: {error}");
    }
}

/// The kept files in the shared cache whose bytes contain `needle`.
fn kept_sources_containing(needle: &[u8]) -> Vec<std::path::PathBuf> {
    let dir = crate::support::settings().cache_dir.join("sources");
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| std::fs::read(path).is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle)))
        .collect()
}

#[tokio::test]
async fn python_source_is_compiled_once_then_loaded_from_the_kept_code() {
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::now_v7().simple().to_string();
    let path = dir.path().join("kept.py");
    std::fs::write(&path, format!("def poll(config):\n    return [{{\"mark\": \"{mark}-source\"}}]\n")).unwrap();

    // The first start compiles the source and keeps the code object its `load` returned.
    let mut sensor = start(spec(&path, json!({}))).await;
    assert_eq!(poll_payloads(&mut sensor).await, vec![json!({"mark": format!("{mark}-source")})]);
    let kept = kept_sources_containing(format!("{mark}-source").as_bytes());
    assert_eq!(kept.len(), 1, "one compiled form kept for the source: {kept:?}");

    // A later start loads the kept code instead of compiling: an edit to it shows.
    let mut code = std::fs::read(&kept[0]).unwrap();
    let source_mark = format!("{mark}-source");
    let at = code.windows(source_mark.len()).position(|w| w == source_mark.as_bytes()).unwrap();
    code[at + mark.len()..at + source_mark.len()].copy_from_slice(b"-cached");
    std::fs::write(&kept[0], &code).unwrap();
    let mut sensor = start(spec(&path, json!({}))).await;
    assert_eq!(poll_payloads(&mut sensor).await, vec![json!({"mark": format!("{mark}-cached")})]);

    // Kept bytes the runtime cannot read are not trusted: the source is compiled and kept again.
    std::fs::write(&kept[0], b"not a code object").unwrap();
    let mut sensor = start(spec(&path, json!({}))).await;
    assert_eq!(poll_payloads(&mut sensor).await, vec![json!({"mark": format!("{mark}-source")})]);
    assert_eq!(kept_sources_containing(format!("{mark}-source").as_bytes()), kept);

    // Another file name with the same text is compiled for its own tracebacks.
    let other = dir.path().join("other.py");
    std::fs::copy(&path, &other).unwrap();
    start(spec(&other, json!({}))).await;
    assert_eq!(kept_sources_containing(format!("{mark}-source").as_bytes()).len(), 2);
}
