//! Field paths (`payload.tags[0].name`) as rules and templates parse them. Never panics; besides:
//! - the canonical form parses to itself, and names what the path names;
//! - a condition on the path compiles exactly when the path parses with a rule root, and
//!   `exists` on `payload.*` holds exactly when `lookup` finds the value;
//! - `{{ path }}` renders exactly the value `lookup` finds.
#![no_main]

use std::sync::LazyLock;

use attune_rules::chrono::{DateTime, Utc};
use attune_rules::template::{lookup, render};
use attune_rules::{EventDocument, RuleSpec, canonical_path, compile};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

static NOW: LazyLock<DateTime<Utc>> = LazyLock::new(|| DateTime::from_timestamp(1_772_798_400, 0).unwrap_or_default());

static DOC: LazyLock<Value> = LazyLock::new(|| {
    json!({
        "payload": {
            "a": {"b": [1, {"c": "d"}, [[true]]]}, "0": "zero", "tags": ["x", "y"], "content-type": "json",
            "é": {"ü": 1}, "a-b_c": null, "$x": {"@y": "z"}, "nested": [[[0]]], "": "empty",
        },
        "pack": {"config": {"hosts": ["a"]}},
        "x": [1],
    })
});

fn root_of(canonical: &str) -> &str {
    canonical.split(['.', '[']).next().unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = canonical_path(text);
    match &parsed {
        Ok(canonical) => {
            assert_eq!(canonical_path(canonical).as_ref(), Ok(canonical), "canonical form is not canonical");
            assert_eq!(lookup(&DOC, text), lookup(&DOC, canonical), "`{text}` and `{canonical}` differ");
        }
        Err(e) => {
            let _ = e.to_string();
            if text.trim() == text {
                assert_eq!(lookup(&DOC, text), None, "lookup followed a path that does not parse");
            }
        }
    }

    // In a condition.
    let spec = RuleSpec::from_json(json!({
        "ref": "fuzz.path", "trigger": "fuzz.trigger",
        "conditions": {"field": text, "operator": "exists"},
        "action": {"ref": "core.noop"},
    }))
    .expect("a fixed spec");
    let root = parsed.as_deref().map(root_of);
    let rule_root = matches!(root, Ok("payload" | "trigger" | "event"));
    match compile(spec) {
        Ok(rule) => {
            assert!(rule_root, "`{text}` compiled as a field");
            if root == Ok("payload") {
                let payload = &DOC["payload"];
                let event = EventDocument::new("e1", "fuzz.trigger", "test", *NOW);
                let input = rule.input(payload, &event, *NOW);
                assert_eq!(
                    rule.matches(&input),
                    lookup(&DOC, text).is_some(),
                    "`exists` and lookup disagree on `{text}`"
                );
            }
        }
        Err(e) => assert!(!rule_root, "`{text}` parses with a rule root but does not compile: {e}"),
    }

    // In a template.
    if text.trim() == text && !text.contains("{{") && !text.contains("}}") {
        let rendered = render(&Value::String(format!("{{{{ {text} }}}}")), &DOC);
        match (&parsed, lookup(&DOC, text)) {
            (Ok(_), Some(found)) => assert_eq!(rendered.as_ref(), Ok(found), "template and lookup differ on `{text}`"),
            _ => assert!(rendered.is_err(), "`{{{{ {text} }}}}` rendered, lookup found nothing"),
        }
    }
});
