//! The command line as a user runs it: `sensor run` (payload lines on stdout, one named reason
//! on stderr and a non-zero exit on failure), `rule test`, `pack validate` and the settings of
//! `serve`.

use std::path::Path;

use serde_json::{Value, json};

use crate::support::{JsonServer, attune_host, built, fixture, repo, run};

fn sensor_run(target: &Path, extra: &[&str]) -> crate::support::Run {
    let state = tempfile::NamedTempFile::new().unwrap();
    run(attune_host().args(["sensor", "run"]).arg(target).arg("--state-file").arg(state.path()).args(extra))
}

#[test]
fn runs_plain_sources_and_built_components() {
    let counter_py = sensor_run(&fixture("python/counter.py"), &["--polls", "3", "--interval-ms", "0"]);
    assert_eq!(counter_py.code, Some(0), "{}", counter_py.stderr);
    assert_eq!(counter_py.stdout, [json!({"n": 1}), json!({"n": 2}), json!({"n": 3})]);

    let counter_js = sensor_run(&fixture("js/counter.js"), &["--polls", "2", "--interval-ms", "0"]);
    assert_eq!(counter_js.code, Some(0), "{}", counter_js.stderr);
    assert_eq!(counter_js.stdout, [json!({"n": 1}), json!({"n": 2})]);

    let wasm = sensor_run(&built("components/js_bundled_dep.wasm"), &[]);
    assert_eq!(wasm.code, Some(0), "{}", wasm.stderr);
    assert!(!wasm.stdout.is_empty());
}

#[test]
fn state_file_carries_the_cursor_between_runs() {
    let state = tempfile::NamedTempFile::new().unwrap();
    let run_once = || {
        run(attune_host()
            .args(["sensor", "run"])
            .arg(fixture("python/counter.py"))
            .arg("--state-file")
            .arg(state.path()))
    };
    assert_eq!(run_once().stdout, [json!({"n": 1})]);
    assert_eq!(run_once().stdout, [json!({"n": 2})]);
}

#[tokio::test]
async fn runs_a_pack_directory_and_a_sensor_manifest() {
    let server = JsonServer::start(json!({"items": [{"id": 7}]})).await;
    let config = json!({"url": server.url("/items")}).to_string();
    let pack = repo().join("sensors/examples_http");
    let manifest = pack.join("sensors/json_poller.yaml");
    // The pack has two sensors: the directory needs `--sensor`.
    for (target, pick) in [(pack.as_path(), &["--sensor", "json_poller"][..]), (manifest.as_path(), &[][..])] {
        let target = target.to_path_buf();
        let mut args: Vec<String> = pick.iter().map(|a| a.to_string()).collect();
        args.extend(["--config".to_string(), config.clone()]);
        let result = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            sensor_run(&target, &args)
        })
        .await
        .unwrap();
        assert_eq!(result.code, Some(0), "{}", result.stderr);
        assert_eq!(result.stdout.len(), 1, "{:?}", result.stdout);
        assert_eq!(result.stdout[0]["id"], 7);
    }

    let inbox = tempfile::tempdir().unwrap();
    std::fs::write(inbox.path().join("x.csv"), "1,2").unwrap();
    let dir = inbox.path().to_str().unwrap().to_string();
    let config = json!({"dir": dir}).to_string();
    let files = repo().join("sensors/examples_files");
    let result = tokio::task::spawn_blocking(move || {
        sensor_run(&files, &["--config", &config, "--allow-path", &dir, "--envelope"])
    })
    .await
    .unwrap();
    assert_eq!(result.code, Some(0), "{}", result.stderr);
    assert_eq!(result.stdout[0]["trigger"], "examples_files.new_file");
    assert_eq!(result.stdout[0]["payload"]["name"], "x.csv");
}

#[test]
fn limit_failures_exit_non_zero_with_the_named_reason() {
    let cases: [(&Path, &[&str], &str); 4] = [
        (&fixture("python/busy_loop.py"), &["--fuel", "20000000"], "out of fuel"),
        (&fixture("js/busy_loop.js"), &["--timeout-ms", "200", "--fuel", "100000000000000"], "deadline exceeded"),
        (&fixture("js/memory_bomb.js"), &["--memory-mib", "40", "--fuel", "100000000000000"], "memory limit"),
        (&fixture("js/throws.js"), &[], "sensor error: TypeError: bad item"),
    ];
    for (target, flags, reason) in cases {
        let result = sensor_run(target, flags);
        assert_eq!(result.code, Some(1), "{}: {}", target.display(), result.stderr);
        let errors = result.errors();
        assert_eq!(errors.len(), 1, "{}", result.stderr);
        assert!(errors[0].contains(reason), "{}: {}", target.display(), errors[0]);
        assert!(result.stdout.is_empty());
    }
}

#[test]
fn python_exceptions_print_the_traceback() {
    let result = sensor_run(&fixture("python/raises.py"), &[]);
    assert_eq!(result.code, Some(1));
    assert!(result.stderr.contains("sensor error: KeyError: 'items'"), "{}", result.stderr);
    assert!(result.stderr.contains("Traceback") || result.stderr.contains("raises.py\", line"), "{}", result.stderr);
}

#[test]
fn bad_input_gives_one_line_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"this is not wasm").unwrap();
    let core = dir.path().join("core.wasm");
    // The smallest valid core module: magic plus version 1.
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();

    let cases: [(&Path, &str); 6] = [
        (&garbage, "not a WebAssembly component"),
        (&core, "a core WebAssembly module, not a component"),
        (&built("components/other_world.wasm"), "not an Attune sensor"),
        (&fixture("python/syntax_error.py"), "SyntaxError"),
        (&fixture("python/no_poll.py"), "defines no poll(config) function"),
        (&fixture("js/no_poll.js"), "defines no poll(config) function"),
    ];
    for (target, problem) in cases {
        let result = sensor_run(target, &[]);
        assert_ne!(result.code, Some(0), "{}", target.display());
        let errors = result.errors();
        assert_eq!(errors.len(), 1, "{}: {}", target.display(), result.stderr);
        let name = target.file_name().unwrap().to_str().unwrap();
        assert!(errors[0].contains(name), "must name {name}: {}", errors[0]);
        assert!(errors[0].contains(problem), "must say `{problem}`: {}", errors[0]);
    }

    let missing = sensor_run(Path::new("/nonexistent/sensor.py"), &[]);
    assert_eq!(missing.code, Some(2));
    assert!(missing.errors()[0].contains("/nonexistent/sensor.py"));
}

#[test]
fn bad_manifests_name_the_file_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("badpack");
    std::fs::create_dir_all(pack.join("sensors")).unwrap();
    std::fs::write(pack.join("pack.yaml"), "ref: badpack\nversion: 0.1.0\n").unwrap();
    std::fs::write(pack.join("sensors/s.py"), "def poll(config):\n    yield {}\n").unwrap();
    std::fs::write(
        pack.join("sensors/s.yaml"),
        "ref: badpack.s\ntriggers: [badpack.nope]\nruntime: python\nentry: s.py\n",
    )
    .unwrap();
    let result = sensor_run(&pack, &[]);
    assert_eq!(result.code, Some(2));
    assert!(result.errors()[0].contains("s.yaml: triggers[0]: unknown trigger `badpack.nope`"), "{}", result.stderr);

    std::fs::write(
        pack.join("sensors/s.yaml"),
        "ref: badpack.s\ntriggers: [core.webhook]\nruntime: python\nentry: s.py\nlimits: {fule: 1}\n",
    )
    .unwrap();
    let result = sensor_run(&pack, &[]);
    assert_eq!(result.code, Some(2));
    let error = result.errors()[0];
    assert!(error.contains("s.yaml") && error.contains("fule") && error.contains("line 5"), "{error}");
}

#[test]
fn rule_test_explains_and_exits_by_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let rule = dir.path().join("rule.yaml");
    std::fs::write(
        &rule,
        "ref: mypack.page_on_5xx\ntrigger: mypack.http_status\nconditions:\n  all:\n    - {field: payload.status, operator: greater_than, value: 499}\n    - {field: payload.host, operator: ends_with, value: .prod}\naction: {ref: core.echo, parameters: {message: \"{{ event.payload.host }} is down\"}}\n",
    )
    .unwrap();
    let payload = |name: &str, body: serde_json::Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, body.to_string()).unwrap();
        path
    };
    let down = payload("down.json", json!({"status": 503, "host": "web-1.prod"}));
    let fine = payload("fine.json", json!({"status": 200, "host": "web-1.prod"}));
    let output = |payload: &Path| attune_host().args(["rule", "test"]).arg(&rule).arg(payload).output().unwrap();

    let matched = output(&down);
    assert_eq!(matched.status.code(), Some(0));
    let text = String::from_utf8_lossy(&matched.stdout);
    assert!(text.contains("503") && text.contains("greater_than") && text.contains("web-1.prod is down"), "{text}");

    let unmatched = output(&fine);
    assert_eq!(unmatched.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unmatched.stdout).contains("200"));

    std::fs::write(&rule, "ref: mypack.bad\ntrigger: mypack.t\nconditions: {field: payload.x, operator: greter_than, value: 1}\naction: {ref: core.echo}\n").unwrap();
    let bad = output(&down);
    assert_eq!(bad.status.code(), Some(2));
    let error = String::from_utf8_lossy(&bad.stderr);
    assert!(error.contains("rule.yaml") && error.contains("greter_than") && error.contains("operator"), "{error}");
}

#[test]
fn serve_settings_come_from_flags_then_env_then_file_then_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("attune.yaml");
    std::fs::write(
        &file,
        "listen: 127.0.0.1:9001\npacks: my-packs\nquarantine_after: 7\nbackoff_max_ms: 5000\namqp_url: amqp://guest:secret@mq:5672/%2f\n",
    )
    .unwrap();
    let output = attune_host()
        .args(["serve", "--print-config", "--config"])
        .arg(&file)
        .args(["--quarantine-after", "9"])
        .env("ATTUNE_LISTEN", "127.0.0.1:9002")
        .env("ATTUNE_QUARANTINE_AFTER", "8")
        .env_remove("ATTUNE_DATABASE_URL")
        .env_remove("ATTUNE_DATA_DIR")
        // The default data dir is relative: `--print-config` keeps the host id there.
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let printed: Value = serde_yaml_ng::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["listen"], "127.0.0.1:9002", "env over file");
    assert_eq!(printed["quarantine_after"], 9, "flag over env over file");
    assert_eq!(printed["backoff_max_ms"], 5000, "file over default");
    assert_eq!(printed["backoff_initial_ms"], 1000, "default");
    assert_eq!(printed["packs"], dir.path().join("my-packs").display().to_string(), "relative to the file");
    assert_eq!(printed["database_url"], "sqlite://data/attune.db");
    assert_eq!(printed["amqp_url"], "amqp://guest:***@mq:5672/%2f", "password masked");

    std::fs::write(&file, "listen: 127.0.0.1:9001\nlisten_adress: 127.0.0.1:9003\n").unwrap();
    let result = run(attune_host().args(["serve", "--print-config", "--config"]).arg(&file));
    assert_eq!(result.code, Some(2));
    let error = result.errors()[0];
    assert!(error.contains("attune.yaml") && error.contains("listen_adress") && error.contains("line 2"), "{error}");
}

#[test]
fn pack_validate_checks_every_file() {
    let output = attune_host().args(["pack", "validate"]).arg(repo().join("sensors")).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("examples_files 0.1.0: ok (1 triggers, 1 sensors, 2 rules)"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("p");
    std::fs::create_dir_all(pack.join("triggers")).unwrap();
    std::fs::create_dir_all(pack.join("rules")).unwrap();
    std::fs::write(pack.join("pack.yaml"), "ref: p\nversion: 0.1.0\n").unwrap();
    std::fs::write(pack.join("triggers/t.yaml"), "ref: t\npayload_schema: {type: 12}\n").unwrap();
    let result = run(attune_host().args(["pack", "validate"]).arg(&pack));
    assert_eq!(result.code, Some(2));
    assert!(result.errors()[0].contains("t.yaml: payload_schema: "), "{}", result.stderr);

    std::fs::write(pack.join("triggers/t.yaml"), "ref: t\n").unwrap();
    std::fs::write(
        pack.join("rules/r.yaml"),
        "ref: p.r\ntrigger: core.crontimer\ntrigger_params: {expression: '61 * * * *'}\naction: {ref: core.echo}\n",
    )
    .unwrap();
    let result = run(attune_host().args(["pack", "validate"]).arg(dir.path()));
    assert_eq!(result.code, Some(2));
    assert!(result.errors()[0].contains("r.yaml: trigger_params.expression: "), "{}", result.stderr);
}

/// `pack validate` on `target`: exit code, stdout, and the `error:` lines of stderr.
fn pack_validate(target: &Path) -> (Option<i32>, String, String) {
    let output = attune_host().args(["pack", "validate"]).arg(target).output().unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error: ")).collect()
}

/// Every error of `tests/fixtures/packs/broken/weather` is reported, each naming its file and
/// field: config against config_schema, a manifest that does not parse (with its line), unknown
/// triggers with a did-you-mean, trigger_params against param_schema, and sensor code that
/// does not load (syntax error, no `poll`, imports the runtime lacks).
#[test]
fn pack_validate_reports_every_error_naming_file_and_field() {
    let dir = fixture("packs/broken");
    let (code, stdout, stderr) = pack_validate(&dir);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stdout.contains("good 0.1.0: ok (0 triggers, 0 sensors, 1 rules)"), "{stdout}");
    assert!(!stdout.contains("weather"), "{stdout}");
    let errors = error_lines(&stderr);
    let expected = [
        "weather/pack.yaml: config.tokne: unknown key `tokne`; did you mean `token`?",
        "weather/triggers/typo.yaml: unknown field `descripton`",
        "weather/sensors/wrong_trigger.yaml: triggers[0]: unknown trigger `weather.alrt`; did you mean `weather.alert`?",
        "weather/rules/bad_params.yaml: trigger_params.city: 5 is not of type \"string\"",
        "weather/rules/bad_params.yaml: trigger_params.abov: unknown key `abov`; did you mean `above`?",
        "weather/rules/unknown_trigger.yaml: trigger: unknown trigger `weather.alret`; did you mean `weather.alert`?",
        "weather/sensors/imports.py: ModuleNotFoundError: No module named 'attune_no_such_module'",
        "weather/sensors/js_import.js: SyntaxError: imports other than @attune/sensor",
        "weather/sensors/nopoll.py: nopoll.py defines no poll(config) function",
        "weather/sensors/syntax.py: SyntaxError: '[' was never closed (syntax.py, line 4)",
    ];
    assert_eq!(errors.len(), expected.len(), "{stderr}");
    for (error, wanted) in errors.iter().zip(expected) {
        assert!(error.contains(wanted), "expected `{wanted}` in: {error}");
    }
    // A manifest that does not parse keeps the parser's line and column.
    assert!(errors[1].contains("at line 2 column 1"), "{}", errors[1]);
    assert!(stderr.contains("10 errors in"), "{stderr}");
}

/// A single pack's rules may use the triggers of the packs beside it, as when `serve` loads
/// their directory; a rule's trigger_params are checked against that trigger's param_schema.
#[test]
fn pack_validate_resolves_rules_against_the_packs_beside_it() {
    let (code, stdout, stderr) = pack_validate(&fixture("packs/broken/good"));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("good 0.1.0: ok (0 triggers, 0 sensors, 1 rules)"), "{stdout}");
    assert!(stderr.contains("weather (1 triggers)"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let weather = dir.path().join("weather");
    std::fs::create_dir_all(weather.join("triggers")).unwrap();
    std::fs::write(weather.join("pack.yaml"), "ref: weather\nversion: 0.1.0\n").unwrap();
    std::fs::copy(fixture("packs/broken/weather/triggers/alert.yaml"), weather.join("triggers/alert.yaml")).unwrap();
    let good = dir.path().join("good");
    std::fs::create_dir_all(good.join("rules")).unwrap();
    std::fs::write(good.join("pack.yaml"), "ref: good\nversion: 0.1.0\n").unwrap();
    std::fs::write(
        good.join("rules/paris.yaml"),
        "ref: good.paris\ntrigger: weather.alert\ntrigger_params: {above: 30}\naction: {ref: core.echo}\n",
    )
    .unwrap();
    let (code, _, stderr) = pack_validate(&good);
    assert_eq!(code, Some(2), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("paris.yaml: trigger_params.city: \"city\" is a required property"), "{stderr}");

    // Alone, without the pack beside it, the trigger is unknown.
    let alone = tempfile::tempdir().unwrap();
    let copy = alone.path().join("good");
    std::fs::create_dir_all(copy.join("rules")).unwrap();
    std::fs::copy(good.join("pack.yaml"), copy.join("pack.yaml")).unwrap();
    std::fs::copy(good.join("rules/paris.yaml"), copy.join("rules/paris.yaml")).unwrap();
    let (code, _, stderr) = pack_validate(&copy);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(error_lines(&stderr)[0].contains("paris.yaml: trigger: unknown trigger `weather.alert`"), "{stderr}");
}

/// `serve` loads packs through the same checks: it refuses to start on what validate refuses,
/// with the same text.
#[test]
fn serve_refuses_a_pack_that_validate_refuses() {
    let data = tempfile::tempdir().unwrap();
    let result = run(attune_host()
        .args(["serve", "--listen", "127.0.0.1:0", "--packs"])
        .arg(fixture("packs/broken"))
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("ATTUNE_CONFIG")
        .env_remove("ATTUNE_DATABASE_URL"));
    assert_eq!(result.code, Some(1), "{}", result.stderr);
    let errors = result.errors();
    assert!(
        errors[0].contains("weather/pack.yaml: config.tokne: unknown key `tokne`; did you mean `token`?"),
        "{}",
        result.stderr
    );
}

/// `sensor run` checks payloads against their trigger's payload_schema as `serve` does: the
/// failing poll prints nothing, keeps no state and exits 1 naming the payload and the field.
#[test]
fn sensor_run_applies_the_payload_schema() {
    let state = tempfile::NamedTempFile::new().unwrap();
    let result = run(attune_host()
        .args(["sensor", "run"])
        .arg(fixture("packs/schema"))
        .args(["--polls", "2", "--interval-ms", "0", "--state-file"])
        .arg(state.path()));
    assert_eq!(result.code, Some(1), "{}", result.stderr);
    assert_eq!(result.stdout, [json!({"celsius": 21})], "only the first poll's payload");
    let errors = result.errors();
    assert_eq!(errors.len(), 1, "{}", result.stderr);
    assert!(
        errors[0].contains(
            "schema.thermo: payload 1: does not match the payload_schema of `schema.reading`: \"celsius\" is a required property"
        ),
        "{}",
        errors[0]
    );
    let kept: Value = serde_json::from_str(&std::fs::read_to_string(state.path()).unwrap()).unwrap();
    assert_eq!(kept["n"], "1", "the failing poll's state is not committed: {kept}");
}

/// The host id, the exchange and the sensor ceilings are `serve` settings like the others: the
/// id made once and kept in the data dir unless one is configured, each shown by
/// `--print-config` and checked, the error naming the setting.
#[test]
fn serve_prints_the_host_id_exchange_and_ceilings() {
    let data = tempfile::tempdir().unwrap();
    let print_config = || {
        let mut cmd = attune_host();
        cmd.args(["serve", "--print-config", "--data-dir"]).arg(data.path());
        for setting in ["CONFIG", "HOST_ID", "AMQP_EXCHANGE", "MAX_FUEL", "MAX_MEMORY_MIB", "MIN_POLL_INTERVAL"] {
            cmd.env_remove(format!("ATTUNE_{setting}"));
        }
        cmd
    };
    let printed = |cmd: &mut std::process::Command| -> Value {
        let output = cmd.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_yaml_ng::from_slice(&output.stdout).unwrap()
    };

    let defaults = printed(&mut print_config());
    let kept = std::fs::read_to_string(data.path().join("host-id")).unwrap();
    assert_eq!(defaults["host_id"], kept.trim(), "the id made and kept in the data dir");
    assert!(kept.starts_with("host-"), "{kept}");
    assert_eq!(printed(&mut print_config())["host_id"], defaults["host_id"], "the same id next time");
    assert_eq!(defaults["amqp_exchange"], "attune.events");
    assert_eq!(
        [&defaults["max_fuel"], &defaults["max_memory_mib"], &defaults["max_timeout_ms"]],
        [&json!(100_000_000_000_000u64), &json!(2048), &json!(60_000)]
    );
    assert_eq!([&defaults["max_payload_bytes"], &defaults["max_events_per_poll"]], [&json!(4 << 20), &json!(10_000)]);
    assert_eq!(defaults["min_poll_interval"], 0.1);

    let configured = printed(
        print_config()
            .env("ATTUNE_HOST_ID", "edge-1")
            .env("ATTUNE_AMQP_EXCHANGE", "team-a.events")
            .env("ATTUNE_MAX_MEMORY_MIB", "64")
            .env("ATTUNE_MIN_POLL_INTERVAL", "0.5")
            .args(["--max-fuel", "5000"]),
    );
    assert_eq!(configured["host_id"], "edge-1");
    assert_eq!(configured["amqp_exchange"], "team-a.events");
    assert_eq!(configured["max_memory_mib"], 64);
    assert_eq!(configured["max_fuel"], 5000);
    assert_eq!(configured["min_poll_interval"], 0.5);
    assert_eq!(configured["max_timeout_ms"], 60_000, "the others keep their defaults");

    for (variable, value, says) in [
        ("ATTUNE_HOST_ID", "edge 1", "error: host_id: `edge 1` must be 1 to 64 characters"),
        ("ATTUNE_AMQP_EXCHANGE", "amq.topic", "error: amqp_exchange: `amq.topic`: names starting with `amq.`"),
        ("ATTUNE_MAX_MEMORY_MIB", "0", "error: max_memory_mib: must be greater than 0"),
        ("ATTUNE_MIN_POLL_INTERVAL", "0.0001", "error: min_poll_interval: 0.0001 is not"),
    ] {
        let result = run(print_config().env(variable, value));
        assert_eq!(result.code, Some(2), "{variable}: {}", result.stderr);
        assert!(result.errors()[0].starts_with(says), "{variable}: {}", result.stderr);
    }
}

/// `pack validate` holds sensors to the ceilings `serve` would, from the same variables, flags
/// and config file: lowered, a limit the defaults allow is refused naming the field and the
/// ceiling; raised, one they refuse is allowed.
#[test]
fn pack_validate_applies_the_configured_ceilings() {
    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("big");
    std::fs::create_dir_all(pack.join("triggers")).unwrap();
    std::fs::create_dir_all(pack.join("sensors")).unwrap();
    std::fs::write(pack.join("pack.yaml"), "ref: big\nversion: 0.1.0\n").unwrap();
    std::fs::write(pack.join("triggers/t.yaml"), "ref: t\n").unwrap();
    std::fs::write(pack.join("sensors/s.js"), "export function* poll() {}\n").unwrap();
    let sensor_memory_mib = |mib: u32| {
        let manifest =
            format!("ref: s\ntriggers: [big.t]\nruntime: javascript\nentry: s.js\nlimits: {{memory_mib: {mib}}}\n");
        std::fs::write(pack.join("sensors/s.yaml"), manifest).unwrap();
    };
    sensor_memory_mib(128);
    let validate = || {
        let mut cmd = attune_host();
        cmd.args(["pack", "validate"]).arg(&pack).env_remove("ATTUNE_CONFIG").env_remove("ATTUNE_MAX_MEMORY_MIB");
        cmd
    };
    // Exit code and the first `error:` line.
    let run = |cmd: &mut std::process::Command| {
        let output = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code(), error_lines(&stderr).first().map_or_else(|| stderr.clone(), |e| e.to_string()))
    };
    let refused = "s.yaml: limits: limits.memory_mib is 128; the host allows at most 64";

    let (code, error) = run(&mut validate());
    assert_eq!(code, Some(0), "{error}");
    let (code, error) = run(validate().env("ATTUNE_MAX_MEMORY_MIB", "64"));
    assert!(code == Some(2) && error.ends_with(refused), "{error}");

    let file = dir.path().join("attune.yaml");
    std::fs::write(&file, "max_memory_mib: 64\n").unwrap();
    let (code, error) = run(validate().arg("--config").arg(&file));
    assert!(code == Some(2) && error.ends_with(refused), "{error}");
    let (code, error) = run(validate().arg("--config").arg(&file).args(["--max-memory-mib", "128"]));
    assert_eq!(code, Some(0), "the flag over the file: {error}");
    std::fs::write(&file, "max_memory_mib: 64\nmax_memory: 1\n").unwrap();
    let (code, error) = run(validate().arg("--config").arg(&file));
    assert!(code == Some(2) && error.contains("attune.yaml: unknown field `max_memory`"), "{error}");

    sensor_memory_mib(4096);
    let (code, error) = run(&mut validate());
    assert!(code == Some(2) && error.ends_with("limits.memory_mib is 4096; the host allows at most 2048"), "{error}");
    let (code, error) = run(validate().env("ATTUNE_MAX_MEMORY_MIB", "4096"));
    assert_eq!(code, Some(0), "raised: {error}");
}

/// Log lines past the per-call budget are not lost silently: one closing line counts them, for
/// the call that dropped them (the last poll too).
#[test]
fn dropped_log_lines_are_counted_in_one_closing_line() {
    let dir = tempfile::tempdir().unwrap();
    let sensor = dir.path().join("chatty.py");
    std::fs::write(
        &sensor,
        "from attune_sensor import log\n\ndef poll(config):\n    for i in range(150):\n        log.info(f\"line {i}\")\n    return []\n",
    )
    .unwrap();
    let chatty = sensor_run(&sensor, &["--polls", "1"]);
    assert_eq!(chatty.code, Some(0), "{}", chatty.stderr);
    assert!(chatty.stderr.contains("line 99"), "{}", chatty.stderr);
    assert!(!chatty.stderr.contains("line 100"), "{}", chatty.stderr);
    let closing: Vec<&str> =
        chatty.stderr.lines().filter(|l| l.contains("log lines of this call were dropped")).collect();
    assert_eq!(closing.len(), 1, "{}", chatty.stderr);
    assert!(
        closing[0].contains("50 more log lines of this call were dropped (limit 100 lines per call)"),
        "{}",
        closing[0]
    );
}
