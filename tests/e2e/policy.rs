//! Capabilities fail closed: hosts not allow-listed, paths not granted and the host's own
//! environment are all out of a sensor's reach.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::support::{JsonServer, attune_host, fixture, poll_payloads, spec, start, with_grants};

async fn one_payload(spec: attune_host::sandbox::SensorSpec) -> Value {
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
        let error = denied["error"].as_str().unwrap();
        assert!(error.contains("not an allowed host"), "{file}: {denied}");
        // The message says where the grant goes.
        assert!(error.contains("capabilities.http") && error.contains("--allow-http"), "{file}: {denied}");
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

// ---- Sensor code only from inside its pack; granted paths through directory handles. ----

const SECRET: &str = "s3cr3t-admin-token-4711";

/// A pack `p` in `root/packs/p` whose one sensor has `entry`, and a file outside every pack,
/// `root/outside/secret.py`, whose text is [`SECRET`] (as Python, a syntax error quoting it).
fn pack_with_entry(root: &Path, entry: &str) -> (PathBuf, PathBuf) {
    let pack = root.join("packs/p");
    std::fs::create_dir_all(pack.join("sensors")).unwrap();
    std::fs::create_dir_all(pack.join("src")).unwrap();
    std::fs::create_dir_all(root.join("outside")).unwrap();
    std::fs::write(root.join("outside/secret.py"), format!("this is the admin token: {SECRET}\n")).unwrap();
    std::fs::write(pack.join("src/main.py"), "def poll(config):\n    yield {}\n").unwrap();
    std::fs::create_dir_all(pack.join("triggers")).unwrap();
    std::fs::write(pack.join("pack.yaml"), "ref: p\nversion: 0.1.0\n").unwrap();
    std::fs::write(pack.join("triggers/t.yaml"), "ref: t\n").unwrap();
    let manifest = pack.join("sensors/s.yaml");
    std::fs::write(&manifest, format!("ref: s\ntriggers: [p.t]\nruntime: python\nentry: '{entry}'\n")).unwrap();
    (pack, manifest)
}

/// An `entry` that is absolute, leaves the pack with `..`, or is (or goes through) a symlink
/// out of the pack is refused when the pack loads, by `Pack::load` and by `pack validate`,
/// naming the manifest and `entry` and quoting nothing of the file it points at. `..` and
/// symlinks that stay inside the pack are fine.
#[test]
fn sensor_code_comes_only_from_inside_its_pack() {
    let root = tempfile::tempdir().unwrap();
    let outside = root.path().join("outside/secret.py");
    let absolute = outside.display().to_string();
    // Each entry, with the symlink (in the pack, to a target outside) it goes through.
    let refused = [
        (absolute.as_str(), None),
        ("../../../outside/secret.py", None),
        ("linked.py", Some(("sensors/linked.py", outside.as_path()))),
        ("../lib/secret.py", Some(("lib", outside.parent().unwrap()))),
    ];
    for (entry, link) in refused {
        let _ = std::fs::remove_dir_all(root.path().join("packs"));
        let (pack, manifest) = pack_with_entry(root.path(), entry);
        if let Some((link, target)) = link {
            std::os::unix::fs::symlink(target, pack.join(link)).unwrap();
        }
        let error = attune_host::pack::Pack::load(&pack).expect_err(entry);
        assert_eq!(error.file, manifest, "{entry}: {error}");
        assert_eq!(error.field.as_deref(), Some("entry"), "{entry}: {error}");
        assert!(!error.to_string().contains(SECRET), "{entry}: {error}");

        let output = attune_host().args(["pack", "validate"]).arg(&pack).output().unwrap();
        let (stdout, stderr) =
            (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr).into_owned());
        assert_eq!(output.status.code(), Some(2), "{entry}: {stdout}{stderr}");
        assert!(stderr.contains("sensors/s.yaml: entry: "), "{entry}: {stderr}");
        assert!(!stdout.contains(SECRET) && !stderr.contains(SECRET), "{entry}: {stdout}{stderr}");
    }

    let _ = std::fs::remove_dir_all(root.path().join("packs"));
    let (pack, _) = pack_with_entry(root.path(), "../src/main.py");
    assert!(attune_host::pack::Pack::load(&pack).is_ok());
    std::os::unix::fs::symlink("../src/main.py", pack.join("sensors/inside.py")).unwrap();
    let (pack, _) = pack_with_entry(root.path(), "inside.py");
    assert!(attune_host::pack::Pack::load(&pack).is_ok());
    let output = attune_host().args(["pack", "validate"]).arg(&pack).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// A pack manifest that is a symlink to a file outside the pack is refused unread: a parse
/// error would quote the file (here a bare token, "invalid type: string ..").
#[test]
fn pack_files_linked_from_outside_are_not_quoted() {
    let root = tempfile::tempdir().unwrap();
    let (pack, _) = pack_with_entry(root.path(), "../src/main.py");
    let token = root.path().join("outside/admin.token");
    std::fs::write(&token, format!("{SECRET}\n")).unwrap();
    std::fs::create_dir_all(pack.join("rules")).unwrap();
    for linked in ["sensors/evil.yaml", "rules/evil.yaml", "triggers/evil.yaml"] {
        std::os::unix::fs::symlink(&token, pack.join(linked)).unwrap();
        let error = attune_host::pack::Pack::load(&pack).expect_err(linked);
        assert!(error.file.ends_with(linked), "{error}");
        assert!(error.message.contains("outside the pack"), "{error}");
        assert!(!error.to_string().contains(SECRET), "{error}");
        let output = attune_host().args(["pack", "validate"]).arg(&pack).output().unwrap();
        let all = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        assert_eq!(output.status.code(), Some(2), "{all}");
        assert!(!all.contains(SECRET), "{all}");
        std::fs::remove_file(pack.join(linked)).unwrap();
    }
    std::fs::rename(pack.join("pack.yaml"), root.path().join("outside/pack.yaml")).unwrap();
    std::fs::write(root.path().join("outside/pack.yaml"), format!("{SECRET}\n")).unwrap();
    std::os::unix::fs::symlink(root.path().join("outside/pack.yaml"), pack.join("pack.yaml")).unwrap();
    let error = attune_host::pack::Pack::load(&pack).expect_err("pack.yaml");
    assert!(!error.to_string().contains(SECRET) && error.message.contains("outside the pack"), "{error}");
}

/// `fs_probe.py` with `ops` (and `times`), granted `dirs`, a 5 s deadline.
fn probe(ops: Value, times: u32, dirs: &[&Path]) -> attune_host::sandbox::SensorSpec {
    let mut spec = with_grants(spec(&fixture("python/fs_probe.py"), json!({"ops": ops, "times": times})), &[], dirs);
    spec.limits.timeout_ms = 5_000;
    spec
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Reading a FIFO in a granted directory neither blocks the poll (until its deadline, or until
/// a writer appears) nor breaks the sensor: it fails at once with a clear error, and the rest of
/// the poll and the next poll work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_in_a_granted_directory_fails_fast() {
    let granted = tempfile::tempdir().unwrap();
    let fifo = granted.path().join("pipe");
    mkfifo(&fifo);
    std::fs::write(granted.path().join("ok.txt"), "fine").unwrap();
    let ops = json!([["read", fifo], ["read", granted.path().join("ok.txt")], ["list", granted.path()]]);
    let mut sensor = start(probe(ops, 1, &[granted.path()])).await;
    for round in 0..2 {
        let started = std::time::Instant::now();
        let poll = tokio::spawn(async move {
            let result = sensor.poll().await;
            (sensor, result)
        });
        let (returned, result) = match tokio::time::timeout(std::time::Duration::from_millis(2_500), poll).await {
            Ok(done) => done.unwrap(),
            Err(_) => {
                // Let the stuck read finish (a writer appears), so the test ends instead of hanging.
                std::thread::spawn(move || {
                    use std::io::Write;
                    let _ = std::fs::OpenOptions::new().write(true).open(&fifo).and_then(|mut f| f.write_all(b"x"));
                });
                panic!("round {round}: reading a FIFO blocked the poll");
            }
        };
        sensor = returned;
        let elapsed = started.elapsed();
        let payloads: Vec<Value> = result.unwrap().payloads.into_iter().map(|p| p.payload).collect();
        assert!(elapsed < std::time::Duration::from_secs(1), "round {round}: {elapsed:?}");
        let error = payloads[0]["error"].as_str().unwrap_or_else(|| panic!("{payloads:?}"));
        assert!(error.contains("not a regular file") && error.contains("FIFO"), "{error}");
        assert_eq!(payloads[1]["content"], "fine", "{payloads:?}");
        assert_eq!(payloads[2]["names"], json!(["ok.txt", "pipe"]), "{payloads:?}");
    }
}

/// A symlink inside a granted directory is followed only while it stays inside: one to a file
/// or directory outside is refused, for reading and listing.
#[tokio::test]
async fn symlinks_out_of_a_granted_directory_are_refused() {
    let granted = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let g = granted.path();
    std::fs::write(g.join("a.txt"), "inside").unwrap();
    std::fs::write(outside.path().join("secret.txt"), SECRET).unwrap();
    std::os::unix::fs::symlink("a.txt", g.join("alias")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), g.join("out")).unwrap();
    std::os::unix::fs::symlink(outside.path(), g.join("outdir")).unwrap();
    std::os::unix::fs::symlink(
        "../".to_string() + &outside.path().file_name().unwrap().to_string_lossy(),
        g.join("up"),
    )
    .unwrap();
    let ops = json!([
        ["read", g.join("alias")],
        ["read", g.join("out")],
        ["read", g.join("outdir/secret.txt")],
        ["list", g.join("outdir")],
        ["read", g.join("up/secret.txt")],
        ["read", g.join("../").join(outside.path().file_name().unwrap()).join("secret.txt")],
    ]);
    let mut sensor = start(probe(ops, 1, &[g])).await;
    let payloads = poll_payloads(&mut sensor).await;
    assert_eq!(payloads.len(), 6, "{payloads:?}");
    assert_eq!(payloads[0]["content"], "inside", "{payloads:?}");
    for refused in &payloads[1..] {
        assert!(!refused.to_string().contains(SECRET), "{refused}");
        let error = refused["error"].as_str().unwrap_or_else(|| panic!("{refused}"));
        assert!(error.contains("denied"), "{refused}");
    }
}

/// Symlinks swapped in while the sensor reads never lead out: a directory inside the grant is
/// replaced, again and again, by a symlink to a directory outside holding a file of the same
/// name; every read sees the inside file or is refused. And the granted directory itself,
/// replaced after load by a symlink elsewhere, is still the directory that was granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinks_swapped_in_after_load_cannot_lead_out() {
    let root = tempfile::tempdir().unwrap();
    let (granted, outside) = (root.path().join("granted"), root.path().join("outside"));
    std::fs::create_dir_all(granted.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(granted.join("sub/file.txt"), "inside").unwrap();
    std::fs::write(outside.join("file.txt"), SECRET).unwrap();
    std::os::unix::fs::symlink(&outside, granted.join("link")).unwrap();
    let ops = json!([["read", granted.join("sub/file.txt")]]);
    let mut sensor = start(probe(ops, 2_000, &[&granted])).await;
    // Granted now, started after the granted directory was swapped for a symlink (below).
    let ops = json!([["read", granted.join("file.txt")], ["list", &granted], ["read", granted.join("sub/file.txt")]]);
    let moved = probe(ops, 1, &[&granted]);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, granted) = (stop.clone(), granted.clone());
        std::thread::spawn(move || {
            let (sub, link, stash) = (granted.join("sub"), granted.join("link"), granted.join("stash"));
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::fs::rename(&sub, &stash).unwrap();
                std::fs::rename(&link, &sub).unwrap();
                std::fs::rename(&sub, &link).unwrap();
                std::fs::rename(&stash, &sub).unwrap();
            }
        })
    };
    let (mut inside, started) = (0, std::time::Instant::now());
    while started.elapsed() < std::time::Duration::from_secs(2) {
        let payloads = poll_payloads(&mut sensor).await;
        for payload in &payloads {
            assert!(!payload.to_string().contains(SECRET), "read through a swapped-in symlink: {payload}");
            if payload["content"] == "inside" {
                inside += payload["count"].as_u64().unwrap();
            }
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flipper.join().unwrap();
    assert!(inside > 0, "no read saw the inside file");

    // The granted directory moved away and replaced by a symlink to `outside`: reads still go to
    // the directory opened at load, never to `outside`.
    std::fs::rename(&granted, root.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(&outside, &granted).unwrap();
    let mut sensor = start(moved).await;
    let payloads = poll_payloads(&mut sensor).await;
    assert!(!Value::from(payloads.clone()).to_string().contains(SECRET), "{payloads:?}");
    assert!(payloads[0]["error"].as_str().is_some_and(|e| e.contains("No such file")), "{payloads:?}");
    assert_eq!(payloads[1]["names"], json!(["link", "sub"]), "{payloads:?}");
    assert_eq!(payloads[2]["content"], "inside", "{payloads:?}");
}

/// Every host call ends with its poll's deadline, so a sensor stuck in one (here an HTTP request
/// to a server that accepts and never answers) is restarted, and stopped, by that deadline:
/// `restart` starts a fresh poll and `stop_all` returns long before its grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sensor_stuck_in_a_host_call_restarts_and_stops_by_its_deadline() {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use attune_host::app::{App, AppConfig};
    use attune_host::supervisor::{Supervisor, SupervisorOptions};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}/", listener.local_addr().unwrap().port());
    let (accepted, mut connections) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
            let _ = accepted.send(Instant::now());
        }
    });

    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pol");
    std::fs::create_dir_all(pack.join("triggers")).unwrap();
    std::fs::write(pack.join("pack.yaml"), "ref: pol\nversion: 1.0.0\n").unwrap();
    std::fs::write(pack.join("triggers/tick.yaml"), "ref: tick\n").unwrap();
    let pack = attune_host::pack::Pack::load(&pack).unwrap();
    let db = format!("sqlite://{}", dir.path().join("a.db").display());
    let app = Arc::new(App::start(&AppConfig::new(db), &[pack]).await.unwrap());
    let rule = json!({"ref": "pol.on_tick", "trigger": "pol.tick", "action": {"ref": "core.echo"}});
    app.rules.put(attune_rules::RuleSpec::from_json(rule).unwrap()).await.unwrap();

    let mut stuck = with_grants(spec(&fixture("js/http_get.js"), json!({"url": url})), &["127.0.0.1"], &[]);
    stuck.sensor_ref = "pol.stuck".into();
    stuck.triggers = vec!["pol.tick".into()];
    stuck.poll_interval = Duration::from_millis(10);
    stuck.limits.timeout_ms = 1_000;
    let options = SupervisorOptions {
        quarantine_after: 100,
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(10),
    };
    let supervisor = Supervisor::new(app.clone(), crate::support::engine(), vec![stuck], options);
    supervisor.reconcile();
    async fn next_request(connections: &mut tokio::sync::mpsc::UnboundedReceiver<Instant>) -> Instant {
        let wait = tokio::time::timeout(Duration::from_secs(10), connections.recv());
        wait.await.expect("the sensor sent no request").unwrap()
    }

    // Stuck in its request: a restart ends that poll at its deadline and polls again.
    next_request(&mut connections).await;
    let restarted = Instant::now();
    assert!(supervisor.restart("pol.stuck").await.unwrap());
    let again = next_request(&mut connections).await;
    assert!(again - restarted < Duration::from_millis(2_500), "restart took {:?}", again - restarted);

    // Stuck again: stopping waits for the poll's deadline (1 s), not for the grace period.
    let stopping = Instant::now();
    supervisor.stop_all(Duration::from_secs(10)).await;
    assert!(stopping.elapsed() < Duration::from_millis(2_000), "stop took {:?}", stopping.elapsed());
    let status = supervisor.statuses_here().remove(0);
    assert!(status.polls >= 1, "{status:?}");
}
