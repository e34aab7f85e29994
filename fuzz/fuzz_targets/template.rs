//! `{{ path }}` templates: a JSON value (or, when the input is not JSON, one string) rendered by
//! `template::render` against a fixed context, and compiled and rendered as a rule's action
//! parameters. Never panics; a value holding no `{{` renders as itself.
#![no_main]

use std::sync::LazyLock;

use attune_rules::chrono::{DateTime, Utc};
use attune_rules::template::render;
use attune_rules::{ActionContext, EventDocument, RuleSpec, compile};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

static NOW: LazyLock<DateTime<Utc>> = LazyLock::new(|| DateTime::from_timestamp(1_772_798_400, 0).unwrap_or_default());

/// What sensor config templates see (`{"pack": {"config": ..}}`), plus other roots and types.
static CONTEXT: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "pack": {"ref": "fuzz", "config": {"port": 8080, "hosts": ["a", {"name": "b"}], "token": "t", "n": null, "t": true, "f": 1.5, "e": {}, "0": "zero"}},
        "event": {"payload": {"status": 503, "host": "web-1", "tags": ["x"]}, "id": "e1"},
        "x": [[1], [2, [3]]],
    })
});

static PAYLOAD: LazyLock<Value> = LazyLock::new(|| json!({"status": 503, "host": "web-1", "tags": ["x", {"k": null}]}));

fn has_template(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("{{"),
        Value::Array(items) => items.iter().any(has_template),
        Value::Object(map) => map.values().any(has_template),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let value = serde_json::from_str::<Value>(text).unwrap_or_else(|_| Value::String(text.to_owned()));

    let rendered = render(&value, &CONTEXT);
    if !has_template(&value) {
        assert_eq!(rendered.as_ref(), Ok(&value), "a value without templates changed");
    }
    if let Err(e) = &rendered {
        let _ = e.to_string();
    }

    // As action parameters: restricted roots, compiled once, rendered per event.
    let parameters = match value {
        Value::Object(map) => map,
        other => Map::from_iter([("p".to_owned(), other)]),
    };
    let spec = RuleSpec {
        rule_ref: "fuzz.template".into(),
        trigger: "fuzz.trigger".into(),
        enabled: true,
        description: None,
        trigger_params: Map::from_iter([("url".to_owned(), json!("http://127.0.0.1/"))]),
        conditions: None,
        action: attune_rules::ActionSpec { action_ref: "core.echo".into(), parameters },
    };
    match compile(spec) {
        Ok(rule) => {
            let now = *NOW;
            let event = EventDocument::new("e1", rule.trigger(), "test", now);
            let input = rule.input(&PAYLOAD, &event, now);
            let pack_config = &CONTEXT["pack"]["config"];
            if let Err(e) = rule.render_action(&input, &ActionContext { pack_config, now }) {
                let _ = e.to_string();
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
