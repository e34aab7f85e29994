//! The pack author's kit, host side: `{{ secret.NAME }}` in pack and sensor config reaches the
//! sensor and nothing else (API, store, logs, `--print-config`); an unset secret is refused by
//! `pack validate`, `serve` and `sensor run`, naming the file, the field and the secret; a
//! sensor's state store shown and reset over the API (admin only) and the command line, while
//! the sensor runs and on several hosts, the counter starting again from 1; did-you-mean for
//! misspelled triggers and manifest keys; a help line on every flag.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use attune_host::app::{App, AppConfig};
use attune_host::pack::Pack;
use attune_host::store::{ListFilter, Store};
use attune_host::supervisor::{Supervisor, SupervisorOptions};
use attune_rules::RuleSpec;
use attune_testkit::cluster::{free_port, wait_ready, wait_until};
use reqwest::Method;
use serde_json::{Value, json};

use crate::host::Host;
use crate::support::{engine, fixture, spec};

/// `attune-host` with the test cache and runtimes and no other `ATTUNE_*` variable of the test's
/// environment.
fn host() -> tokio::process::Command {
    crate::cluster::setup().command()
}

/// Writes each (path under `dir`, text).
fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (rel, text) in files {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

/// `attune-host serve` as a process of its own, since its environment, log and settings are
/// what the secrets test checks ([`Host`] runs `serve` in this process): on SQLite in its data
/// dir, JSON logs in `<data>/serve.log`.
struct Served {
    child: tokio::process::Child,
    base: String,
    admin: String,
    data: PathBuf,
    client: reqwest::Client,
}

impl Served {
    /// Starts it on `packs` with `args` and `env` besides (no other `ATTUNE_*` variable of the
    /// test's environment), and waits until it is ready.
    async fn start(packs: &Path, data: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        std::fs::create_dir_all(data).unwrap();
        let log = data.join("serve.log");
        let mut child = host()
            .args(["--log-format", "json", "serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--packs")
            .arg(packs)
            .arg("--data-dir")
            .arg(data)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        wait_ready("serve", &mut child, port, &log).await;
        let admin = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_string();
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
        Served { child, base: format!("http://127.0.0.1:{port}"), admin, data: data.to_path_buf(), client }
    }

    /// The body of `GET path` with the admin token, which must answer 200.
    async fn get(&self, path: &str) -> String {
        let response = self.client.get(format!("{}{path}", self.base)).bearer_auth(&self.admin).send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 200, "GET {path}: {text}");
        text
    }

    /// SIGTERM, then its whole log once it exited.
    async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{status}");
        std::fs::read_to_string(self.data.join("serve.log")).unwrap()
    }
}

/// Pack `kit` in `packs`: the counter sensor (tests/fixtures/js/counter.js, yielding {n: 1},
/// {n: 2}, .. from its state store) polling every 0.1 s for `kit.tick`, and a rule on it (a
/// sensor runs only while a rule needs it).
fn counter_pack(packs: &Path) {
    let pack = packs.join("kit");
    write_files(
        &pack,
        &[
            ("pack.yaml", "ref: kit\nversion: 1.0.0\n"),
            ("triggers/tick.yaml", "ref: tick\n"),
            (
                "sensors/counter.yaml",
                "ref: counter\ntriggers: [kit.tick]\nruntime: javascript\nentry: counter.js\npoll_interval: 0.1\n",
            ),
            ("rules/on_tick.yaml", "ref: kit.on_tick\ntrigger: kit.tick\naction: {ref: core.noop}\n"),
        ],
    );
    std::fs::copy(fixture("js/counter.js"), pack.join("sensors/counter.js")).unwrap();
}

/// The counter's runs, from its `n` in order: each run counts 1, 2, 3, .. and a new run starts
/// at 1 (a reset); anything else (a skip, a repeat, a count going on from an older state) fails.
fn runs(counts: &[i64]) -> Vec<usize> {
    let mut runs: Vec<usize> = Vec::new();
    for (i, n) in counts.iter().enumerate() {
        match runs.last_mut() {
            Some(run) if *n == *run as i64 + 1 => *run += 1,
            _ if *n == 1 => runs.push(1),
            _ => panic!("the counter went on to {n} after {}", last_of(&counts[..i])),
        }
    }
    runs
}

/// The end of a long sequence of counts, for failure messages.
fn last_of(counts: &[i64]) -> String {
    format!("{} events, the last: {:?}", counts.len(), &counts[counts.len().saturating_sub(12)..])
}

/// Exit code, stdout and stderr.
async fn output_of(command: &mut tokio::process::Command) -> (Option<i32>, String, String) {
    let output = command.output().await.unwrap();
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (output.status.code(), text(&output.stdout), text(&output.stderr))
}

/// Pack `authsec`: its config's `token` is a secret; its sensor gets it through
/// `{{ pack.config.token }}` and another secret inside a string, and emits both reversed (so
/// the secret itself never becomes an event).
fn secret_pack(packs: &Path, token_ref: &str) {
    let sensor = "ref: probe\ntriggers: [authsec.seen]\nruntime: javascript\nentry: probe.js\npoll_interval: 0.2\n\
                  config:\n  token: \"{{ pack.config.token }}\"\n  header: \"Bearer {{ secret.AUTHOR_HEADER }}\"\n";
    let probe = "export function* poll(config) {\n  const reversed = (s) => s.split('').reverse().join('');\n  \
                 yield { token: reversed(config.token), header: reversed(config.header) };\n}\n";
    let manifest = format!(
        "ref: authsec\nversion: 1.0.0\nconfig_schema: {{type: object, properties: {{token: {{type: string, minLength: 8}}}}}}\n\
         config: {{token: \"{{{{ secret.{token_ref} }}}}\"}}\n"
    );
    write_files(
        &packs.join("authsec"),
        &[
            ("pack.yaml", &manifest),
            ("triggers/seen.yaml", "ref: seen\n"),
            ("sensors/probe.yaml", sensor),
            ("sensors/probe.js", probe),
            ("rules/on_seen.yaml", "ref: authsec.on_seen\ntrigger: authsec.seen\naction: {ref: core.noop}\n"),
        ],
    );
}

fn reversed(text: &str) -> String {
    text.chars().rev().collect()
}

/// Every file under `dir` (the SQLite database and its journal, the log, the token), as text.
fn every_file(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(every_file(&path));
        } else {
            files.push((path.clone(), String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned()));
        }
    }
    files
}

/// A secret from the environment (winning over the settings file) and one from the settings
/// file reach the sensor's `init`; neither is in any API answer, the store, the log or
/// `--print-config`.
#[tokio::test]
async fn secrets_reach_the_sensor_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");
    secret_pack(&packs, "AUTHOR_TOKEN");
    let unique = uuid::Uuid::now_v7().simple().to_string();
    let (token, header) = (format!("tok3n-{unique}"), format!("head3r-{unique}"));
    let settings = dir.path().join("attune.yaml");
    std::fs::write(&settings, format!("secrets: {{AUTHOR_TOKEN: overridden-{unique}, AUTHOR_HEADER: {header}}}\n"))
        .unwrap();
    let config = settings.to_str().unwrap();
    let env = [("ATTUNE_SECRET_AUTHOR_TOKEN", token.as_str())];
    let served = Served::start(&packs, &dir.path().join("data"), &["--config", config], &env).await;

    let seen = wait_until("an event of authsec.seen", Duration::from_secs(30), async || {
        let page: Value =
            serde_json::from_str(&served.get("/api/v1/events?trigger=authsec.seen&limit=1").await).unwrap();
        page["events"].as_array().and_then(|e| e.first().cloned()).ok_or_else(|| page.to_string())
    })
    .await
    .unwrap()
    .0;
    let expected = json!({"token": reversed(&token), "header": reversed(&format!("Bearer {header}"))});
    assert_eq!(seen["payload"], expected, "the sensor's init got the secrets, the environment's winning");

    let secrets = [token.as_str(), header.as_str()];
    let leaks = |what: &str, text: &str| {
        for secret in secrets {
            assert!(!text.contains(secret), "{what} shows a secret: {text}");
        }
        assert!(!text.contains(&format!("overridden-{unique}")), "{what} shows the overridden secret");
    };
    for path in ["/api/v1/packs", "/api/v1/sensors", "/api/v1/triggers", "/api/v1/events", "/api/v1/rules", "/metrics"]
    {
        leaks(path, &served.get(path).await);
    }
    let packs_answer = served.get("/api/v1/packs").await;
    assert!(packs_answer.contains("authsec.probe"), "{packs_answer}");

    let data = dir.path().join("data");
    let (code, stdout, stderr) =
        output_of(host().args(["serve", "--print-config", "--config", config, "--data-dir"]).arg(&data).envs(env))
            .await;
    assert_eq!(code, Some(0), "{stderr}");
    leaks("--print-config", &stdout);
    assert!(stdout.contains("# secrets (values never printed): AUTHOR_HEADER, AUTHOR_TOKEN"), "{stdout}");

    let log = served.stop().await;
    assert!(log.contains("sensor started"), "{log}");
    leaks("the log", &log);
    for (path, text) in every_file(&dir.path().join("data")) {
        leaks(&path.display().to_string(), &text);
    }
}

/// A secret the host does not hold: `pack validate`, `serve` and `sensor run` refuse the pack
/// naming the file, the field and the secret, with the variable to set.
#[tokio::test]
async fn an_unset_secret_is_refused_naming_file_field_and_secret() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");
    secret_pack(&packs, "AUTHOR_UNSET");
    let pack = packs.join("authsec");
    let unset = |name: &str, file: &str, field: &str| {
        format!("{}: {field}: secret `{name}` is not set: set ATTUNE_SECRET_{name}", pack.join(file).display())
    };
    let token_error = unset("AUTHOR_UNSET", "pack.yaml", "config.token");
    let header_error = unset("AUTHOR_HEADER", "sensors/probe.yaml", "config.header");
    let validate = async |env: &[(&str, &str)]| {
        output_of(host().args(["pack", "validate"]).arg(&pack).envs(env.iter().copied())).await
    };

    let (code, _, stderr) = validate(&[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 2, "{stderr}");
    assert!(errors[0].starts_with(&format!("error: {token_error}")), "{stderr}");
    assert!(errors[1].starts_with(&format!("error: {header_error}")), "{stderr}");

    // Set in the environment, or in the settings file `--config` names: the pack is valid.
    let settings = dir.path().join("attune.yaml");
    std::fs::write(&settings, "secrets: {AUTHOR_HEADER: h}\n").unwrap();
    let (code, stdout, stderr) = validate(&[
        ("ATTUNE_SECRET_AUTHOR_UNSET", "a-long-enough-token"),
        ("ATTUNE_CONFIG", settings.to_str().unwrap()),
    ])
    .await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("authsec 1.0.0: ok"), "{stdout}");

    let data = dir.path().join("data");
    let mut serve = host();
    serve.args(["serve", "--listen", "127.0.0.1:0", "--packs"]).arg(&packs).arg("--data-dir").arg(&data);
    let (code, _, stderr) = output_of(&mut serve).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("error: {token_error}")), "serve says what validate says: {stderr}");

    let state = dir.path().join("state.json");
    let mut sensor_run = host();
    sensor_run
        .args(["sensor", "run"])
        .arg(&pack)
        .arg("--state-file")
        .arg(&state)
        .env("ATTUNE_SECRET_AUTHOR_HEADER", "h");
    let (code, _, stderr) = output_of(&mut sensor_run).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("config.token: secret `AUTHOR_UNSET` is not set: set ATTUNE_SECRET_AUTHOR_UNSET"),
        "{stderr}"
    );

    // A reload bringing the pack into a running host is refused the same way.
    let live = dir.path().join("live");
    counter_pack(&live);
    let running = Host::start(&live, None, None).await;
    secret_pack(&live, "AUTHOR_UNSET");
    let (status, body) = running.call(Method::POST, "/api/v1/packs/reload", None).await;
    assert_eq!((status, &body["error"]["field"]), (422, &json!("config.token")), "{body}");
    let live_error =
        format!("{}: config.token: secret `AUTHOR_UNSET` is not set", live.join("authsec/pack.yaml").display());
    assert!(body["error"]["message"].as_str().unwrap().starts_with(&live_error), "{body}");
    let packs_now = running.ok(Method::GET, "/api/v1/packs", None).await;
    assert_eq!(packs_now["packs"].as_array().unwrap().len(), 1, "nothing changed: {packs_now}");
    running.stop().await;
}

/// The `n` of the counter's stored events (`kit.tick`), oldest first.
async fn counts(store: &dyn Store) -> Vec<i64> {
    let filter = ListFilter { trigger_ref: Some("kit.tick".into()), limit: 1000, ..ListFilter::default() };
    let events = store.events(&filter).await.unwrap();
    events.iter().rev().map(|e| e.payload["n"].as_i64().unwrap()).collect()
}

/// `GET` and `DELETE /sensors/{ref}/state`: admin only, 404 for no such sensor; a reset while the
/// counter runs starts it again from 1 (the poll in flight cannot write the old count back).
/// `sensor state show|reset` do the same on the database, also while `serve` runs.
#[tokio::test]
async fn a_sensor_state_is_shown_and_reset_over_the_api_and_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");
    counter_pack(&packs);
    let db = format!("sqlite://{}", dir.path().join("attune.db").display());
    let served = Host::start(&packs, Some(db.clone()), None).await;
    let store = attune_host::store::open(&db).await.unwrap();
    let state_path = "/api/v1/sensors/kit.counter/state";
    wait_until("the counter at 5", Duration::from_secs(30), async || {
        let shown = served.ok(Method::GET, state_path, None).await;
        let n = shown["state"]["n"].as_str().map_or(0, |n| n.parse::<i64>().unwrap());
        if n >= 5 { Ok(()) } else { Err(shown.to_string()) }
    })
    .await
    .unwrap();
    let shown = served.ok(Method::GET, state_path, None).await;
    assert_eq!(shown["sensor"], "kit.counter", "{shown}");
    assert_eq!(shown["state"].as_object().unwrap().len(), 1, "one key, `n`: {shown}");

    let cli = async |args: &[&str]| output_of(host().args(args).args(["--database-url", &db])).await;
    let (code, readonly, stderr) = cli(&["token", "create", "--scope", "readonly"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    let readonly = readonly.trim();
    assert_eq!(served.call_as(readonly, Method::GET, "/api/v1/sensors", None).await.0, 200);
    for method in [Method::GET, Method::DELETE] {
        let (status, body) = served.call_as(readonly, method.clone(), state_path, None).await;
        assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "{method} {body}");
        let (status, body) = served.call(method.clone(), "/api/v1/sensors/kit.nope/state", None).await;
        assert_eq!(status, 404, "{method} {body}");
        assert_eq!(body["error"]["code"], "not_found", "{body}");
        assert_eq!(body["error"]["message"], "no sensor `kit.nope`", "{body}");
    }

    let (status, body) = served.call(Method::DELETE, state_path, None).await;
    assert_eq!((status, body), (204, Value::Null));
    let after = wait_until("the counter starting again", Duration::from_secs(15), async || {
        let counts = counts(store.as_ref()).await;
        if runs(&counts).len() == 2 { Ok(counts) } else { Err(last_of(&counts)) }
    })
    .await
    .unwrap()
    .0;
    assert!(runs(&after)[0] >= 5, "{after:?}");

    // From the command line while `serve` runs: the host restarts the sensor from the empty state.
    let (code, _, stderr) = cli(&["sensor", "state", "reset", "kit.counter"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("reset the state of kit.counter (1 key deleted)"), "{stderr}");
    wait_until("the counter starting again after `sensor state reset`", Duration::from_secs(15), async || {
        let counts = counts(store.as_ref()).await;
        if runs(&counts).len() == 3 { Ok(()) } else { Err(last_of(&counts)) }
    })
    .await
    .unwrap();
    let (code, _, stderr) = cli(&["sensor", "state", "show", "kit.countr"]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no sensor `kit.countr` has run here; did you mean `kit.counter`?"), "{stderr}");

    // Stopped, the stored state is the last count, and a reset needs no host to hear of it.
    served.stop().await;
    let last = counts(store.as_ref()).await.last().unwrap().to_string();
    let (code, stdout, stderr) = cli(&["sensor", "state", "show", "kit.counter"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), json!({"sensor": "kit.counter", "state": {"n": last}}));
    let (code, _, stderr) = cli(&["sensor", "state", "reset", "kit.counter"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(store.outbox_backlog().await.unwrap(), 0, "an announcement nobody would publish");
    let (_, stdout, _) = cli(&["sensor", "state", "show", "kit.counter"]).await;
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), json!({"sensor": "kit.counter", "state": {}}));
}

/// Two hosts on one PostgreSQL and one exchange run the counter once between them: a reset asked
/// on the host that does not run it reaches the one that does, which starts it again from 1
/// after clearing what its poll in flight wrote.
#[tokio::test]
async fn a_state_reset_asked_on_any_host_reaches_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        &dir.path().join("kit"),
        &[("pack.yaml", "ref: kit\nversion: 1.0.0\n"), ("triggers/tick.yaml", "ref: tick\n")],
    );
    let pack = Pack::load(&dir.path().join("kit")).unwrap();
    let config = AppConfig {
        amqp_url: Some(attune_testkit::amqp_url()),
        exchange: attune_testkit::unique_name(),
        ..AppConfig::new(crate::support::postgres_database().await)
    };
    let mut hosts: Vec<(Arc<App>, Arc<Supervisor>, tokio::task::JoinHandle<()>)> = Vec::new();
    for _ in 0..2 {
        let config = AppConfig { host_id: attune_host::app::new_host_id(), ..config.clone() };
        let app = Arc::new(App::start(&config, std::slice::from_ref(&pack)).await.unwrap());
        let rule = json!({"ref": "kit.on_tick", "trigger": "kit.tick", "action": {"ref": "core.noop"}});
        app.rules.put(RuleSpec::from_json(rule).unwrap()).await.unwrap();
        let mut counter = spec(&fixture("js/counter.js"), json!({}));
        counter.sensor_ref = "kit.counter".into();
        counter.triggers = vec!["kit.tick".into()];
        counter.poll_interval = Duration::from_millis(50);
        let supervisor = Supervisor::new(app.clone(), engine(), vec![counter], SupervisorOptions::default());
        let follow = supervisor.follow(app.bus.as_ref());
        supervisor.reconcile();
        hosts.push((app, supervisor, follow));
    }
    let store = hosts[0].0.store.clone();
    let owner = wait_until("the counter at 5 on one host", Duration::from_secs(30), async || {
        let status = hosts[0].1.statuses().await.unwrap().remove(0);
        match status.owner {
            Some(owner) if counts(store.as_ref()).await.len() >= 5 => Ok(owner),
            _ => Err(format!("{status:?}")),
        }
    })
    .await
    .unwrap()
    .0;
    let other = usize::from(hosts[0].0.membership.host_id() == owner);
    assert_ne!(hosts[other].0.membership.host_id(), owner);

    assert!(!hosts[other].1.reset_state("kit.nope").await.unwrap(), "no such sensor");
    assert!(hosts[other].1.reset_state("kit.counter").await.unwrap());
    let after = wait_until("the owner starting the counter again", Duration::from_secs(15), async || {
        let counts = counts(store.as_ref()).await;
        if runs(&counts).len() == 2 && runs(&counts)[1] >= 3 { Ok(counts) } else { Err(last_of(&counts)) }
    })
    .await
    .unwrap()
    .0;
    assert!(runs(&after)[0] >= 5, "{after:?}");
    let status = hosts[other].1.statuses().await.unwrap().remove(0);
    assert_eq!(status.owner.as_deref(), Some(owner.as_str()), "the sensor moved instead of restarting");
    for (app, supervisor, follow) in hosts {
        follow.abort();
        supervisor.stop_all(Duration::from_secs(3)).await;
        app.leave().await;
    }
}

/// A misspelled trigger (a rule's, a sensor's, one written without its pack) and a misspelled
/// manifest key get the closest known name, from `pack validate` and from `serve` alike.
#[tokio::test]
async fn misspelled_triggers_and_keys_get_a_did_you_mean() {
    let dir = tempfile::tempdir().unwrap();
    let packs = dir.path().join("packs");
    let pack = packs.join("dym");
    write_files(
        &pack,
        &[
            ("pack.yaml", "ref: dym\nversion: 1.0.0\n"),
            ("triggers/tick.yaml", "ref: tick\n"),
            ("sensors/a.yaml", "ref: a\ntriggers: [dym.tikc]\nruntime: javascript\nentry: a.js\n"),
            ("sensors/a.js", "export function* poll() {}\n"),
            ("sensors/b.yaml", "ref: b\ntriggers: [tick]\nruntime: javascript\nentry: a.js\npoll_intervall: 5\n"),
            ("sensors/c.yaml", "ref: c\ntriggers: [dym.tick]\nruntime: javascrpt\nentry: a.js\n"),
            ("rules/r.yaml", "ref: dym.r\ntrigger: dym.tock\naction: {ref: core.noop}\n"),
            ("rules/s.yaml", "ref: dym.s\ntrigger: dym.tick\nacton: {ref: core.noop}\n"),
        ],
    );
    let (code, _, stderr) = output_of(host().args(["pack", "validate"]).arg(&pack)).await;
    assert_eq!(code, Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    let expected = [
        "sensors/a.yaml: triggers[0]: unknown trigger `dym.tikc`; did you mean `dym.tick`?",
        "sensors/b.yaml: unknown field `poll_intervall`",
        "sensors/c.yaml: runtime: unknown variant `javascrpt`",
        "rules/s.yaml: invalid rule YAML: unknown field `acton`",
        "rules/r.yaml: trigger: unknown trigger `dym.tock`; did you mean `dym.tick`?",
    ];
    assert_eq!(errors.len(), expected.len(), "{stderr}");
    for (error, wanted) in errors.iter().zip(expected) {
        assert!(error.contains(wanted), "expected `{wanted}` in: {error}");
    }
    assert!(errors[1].ends_with("; did you mean `poll_interval`?"), "{}", errors[1]);
    assert!(errors[2].ends_with("; did you mean `javascript`?"), "{}", errors[2]);
    assert!(errors[3].ends_with("; did you mean `action`?"), "{}", errors[3]);

    // `b` is parsed once its key is right: its trigger, written without its pack, is named whole.
    std::fs::write(pack.join("sensors/b.yaml"), "ref: b\ntriggers: [tick]\nruntime: javascript\nentry: a.js\n")
        .unwrap();
    let (_, _, stderr) = output_of(host().args(["pack", "validate"]).arg(&pack)).await;
    assert!(
        stderr.contains("sensors/b.yaml: triggers[0]: unknown trigger `tick`; did you mean `dym.tick`?"),
        "{stderr}"
    );

    let data = dir.path().join("data");
    let mut serve = host();
    serve.args(["serve", "--listen", "127.0.0.1:0", "--packs"]).arg(&packs).arg("--data-dir").arg(&data);
    let (code, _, serve_err) = output_of(&mut serve).await;
    assert_eq!(code, Some(1), "{serve_err}");
    let first = stderr.lines().find(|l| l.starts_with("error: ")).unwrap();
    assert!(serve_err.contains(first), "serve reports what validate does first ({first}): {serve_err}");
}

/// Every argument of every command has a help line (clap's own `help` subcommand aside).
#[test]
fn every_flag_has_a_help_line() {
    use clap::CommandFactory;
    fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>, seen: &mut usize) {
        let path = format!("{path} {}", command.get_name()).trim().to_string();
        for arg in command.get_arguments() {
            *seen += 1;
            let help = arg.get_help().or(arg.get_long_help()).map(ToString::to_string).unwrap_or_default();
            if help.trim().is_empty() {
                missing.push(format!("{path}: {}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
            walk(sub, &path, missing, seen);
        }
    }
    let mut command = attune_host::cli::Cli::command();
    command.build();
    let (mut missing, mut seen) = (Vec::new(), 0);
    walk(&command, "", &mut missing, &mut seen);
    assert!(seen > 80, "the whole tree was walked: {seen} arguments");
    assert!(missing.is_empty(), "arguments without help:\n{}", missing.join("\n"));
    // The limits `sensor run` overrides say their unit and default.
    let help =
        format!("{}", command.find_subcommand_mut("sensor").unwrap().find_subcommand_mut("run").unwrap().render_help());
    for wanted in ["in MiB", "else 64", "in milliseconds", "else 2000", "else 1000000000"] {
        assert!(help.contains(wanted), "`{wanted}` not in:\n{help}");
    }
}
