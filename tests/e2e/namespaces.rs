//! Namespaces are security: a pack defines refs under its own name only, `core.*` belongs to the
//! host (no sensor or API client feeds a core trigger, so no one forges a timer fire), rules
//! saved through the API live in a loaded pack or in `user`, and a rule names only an action
//! that exists.

use std::path::Path;

use attune_host::app::{App, AppConfig};
use attune_host::pack::Pack;
use attune_host::pipeline::{IngestError, Rejected, Source};
use reqwest::Method;
use serde_json::json;

use crate::host::Host;

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Pack `mine`: trigger `mine.tick`, action `mine.page`.
fn mine(packs: &Path) -> std::path::PathBuf {
    let dir = packs.join("mine");
    write(&dir, "pack.yaml", "ref: mine\nversion: 1.0.0\n");
    write(&dir, "triggers/tick.yaml", "ref: tick\n");
    write(&dir, "actions/page.yaml", "ref: page\ndescription: Pages the on-call person.\n");
    dir
}

/// The first error of loading `dir`, as `(field, message)`.
fn refused(dir: &Path) -> (Option<String>, String) {
    let error = Pack::load(dir).unwrap_err();
    (error.field.clone(), error.to_string())
}

#[test]
fn a_pack_defines_refs_under_its_own_name_only() {
    let packs = tempfile::tempdir().unwrap();
    let dir = mine(packs.path());
    let rule = |name: &str, r: &str, trigger: &str, action: &str| {
        write(
            &dir,
            &format!("rules/{name}.yaml"),
            &format!("ref: {r}\ntrigger: {trigger}\naction: {{ref: {action}}}\n"),
        )
    };
    // Its own rule, on its own trigger, with its own action: fine.
    rule("ok", "mine.ok", "mine.tick", "mine.page");
    assert_eq!(Pack::load(&dir).unwrap().actions[0].action_ref, "mine.page");

    // Another pack's rule (it would replace that pack's rule), or the host's.
    for (name, r) in [("hijack", "examples_files.heartbeat"), ("host", "core.heartbeat")] {
        rule(name, r, "mine.tick", "core.echo");
        let (field, message) = refused(&dir);
        assert_eq!(field.as_deref(), Some("ref"), "{message}");
        assert!(message.contains(&format!("{name}.yaml")) && message.contains("not in pack `mine`"), "{message}");
        std::fs::remove_file(dir.join(format!("rules/{name}.yaml"))).unwrap();
    }

    // An action nobody declares.
    rule("typo", "mine.typo", "mine.tick", "core.ecoh");
    let packs_dir = attune_host::pack::load_dir(packs.path()).unwrap_err();
    assert_eq!(packs_dir.field.as_deref(), Some("action.ref"), "{packs_dir}");
    assert!(packs_dir.message.contains("did you mean `core.echo`"), "{packs_dir}");
    std::fs::remove_file(dir.join("rules/typo.yaml")).unwrap();

    // A sensor feeding a core trigger would forge timer fires for every timer rule.
    write(&dir, "sensors/forger.js", "export function* poll() { yield { type: 'interval' }; }\n");
    write(
        &dir,
        "sensors/forger.yaml",
        "ref: forger\ntriggers: [core.intervaltimer]\nruntime: javascript\nentry: forger.js\n",
    );
    let (field, message) = refused(&dir);
    assert_eq!(field.as_deref(), Some("triggers[0]"), "{message}");
    assert!(message.contains("fed by the host alone"), "{message}");
}

#[tokio::test]
async fn core_triggers_are_fed_by_the_host_alone() {
    let dir = tempfile::tempdir().unwrap();
    let app =
        App::start(&AppConfig::new(format!("sqlite://{}", dir.path().join("a.db").display())), &[]).await.unwrap();
    let forged = json!({"type": "interval", "execution_count": 1});
    for source in [
        Source::Sensor { sensor_ref: "p.s".into(), triggers: vec!["core.intervaltimer".into()] },
        Source::Api { token: "t".into(), triggers: vec!["core.intervaltimer".into()] },
    ] {
        let refused = app.pipeline.ingest(&source, [("core.intervaltimer".to_string(), forged.clone())], None).await;
        assert!(matches!(refused, Err(IngestError::Rejected(Rejected::HostOnly { .. }))), "{source:?}: {refused:?}");
    }
    let timer = Source::Timer { rule_ref: "p.r".into(), scheduled_at: 1_000_000 };
    app.pipeline.ingest(&timer, [("core.intervaltimer".to_string(), forged)], None).await.unwrap();
    app.shutdown().await;
}

#[tokio::test]
async fn api_rules_live_in_a_pack_or_in_user_and_name_known_actions() {
    let packs = tempfile::tempdir().unwrap();
    mine(packs.path());
    let host = Host::start(packs.path(), None, None).await;
    let rule = |r: &str, action: &str| json!({"ref": r, "trigger": "mine.tick", "action": {"ref": action}});
    for accepted in [rule("mine.one", "mine.page"), rule("user.mine", "core.noop")] {
        let (status, body) = host.call(Method::POST, "/api/v1/rules", Some(accepted)).await;
        assert_eq!(status, 201, "{body}");
    }
    for (body, code, field) in [
        (rule("nopack.r", "core.echo"), "bad_ref", "ref"),
        (rule("core.r", "core.echo"), "bad_ref", "ref"),
        (rule("mine.two", "mine.pgae"), "unknown_action", "action.ref"),
    ] {
        let (status, error) = host.call(Method::POST, "/api/v1/rules", Some(body)).await;
        assert_eq!(
            (status, &error["error"]["code"], &error["error"]["field"]),
            (422, &json!(code), &json!(field)),
            "{error}"
        );
    }
    let (_, typo) = host.call(Method::POST, "/api/v1/rules", Some(rule("mine.two", "mine.pgae"))).await;
    assert!(typo["error"]["message"].as_str().unwrap().contains("did you mean `mine.page`"), "{typo}");

    // An API client cannot forge a timer fire either.
    let forged = json!({"trigger": "core.intervaltimer", "payload": {"type": "interval"}});
    let (status, error) = host.call(Method::POST, "/api/v1/events", Some(forged)).await;
    assert_eq!((status, &error["error"]["code"]), (403, &json!("trigger_not_allowed")), "{error}");
    host.stop().await;
}
