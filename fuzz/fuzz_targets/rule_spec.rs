//! A rule document (YAML, or JSON) -> `RuleSpec` -> `compile` -> match, explain and render
//! against fixed events. Never panics; besides:
//! - `explain(..).matched` equals `matches(..)`;
//! - a spec that parsed survives its JSON form (how the store keeps rules) unchanged, and a rule
//!   that compiled compiles again from that form (a saved rule loads after a restart).
#![no_main]

use std::sync::{Arc, LazyLock};

use attune_rules::chrono::{DateTime, Utc};
use attune_rules::{ActionContext, EventDocument, RuleIndex, RuleSpec, compile, explain_text};
use attune_timers::{TimerSpec, is_timer_trigger};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

static NOW: LazyLock<DateTime<Utc>> = LazyLock::new(|| DateTime::from_timestamp(1_772_798_400, 0).unwrap_or_default());

static PAYLOADS: LazyLock<Vec<Value>> = LazyLock::new(|| {
    vec![
        json!({
            "status": 503, "host": "web-1.prod", "tags": ["critical", "db"], "maintenance": false,
            "size": 0, "ratio": 0.5, "name": "ÉTÉ.txt", "path": "/inbox/a b.txt", "n": null,
            "at": "2026-03-06T11:59:00Z", "epoch": 1_772_798_000, "nested": {"a": [1, {"b": "c"}]},
        }),
        json!([1, "two", null]),
        json!("text"),
        Value::Null,
    ]
});

static PACK_CONFIG: LazyLock<Value> =
    LazyLock::new(|| json!({"token": "t", "port": 8080, "hosts": ["a", {"name": "b"}], "none": null}));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = RuleSpec::from_yaml_str(text) {
        check(spec);
    }
    if text.trim_start().starts_with('{')
        && let Ok(spec) = RuleSpec::from_json_str(text)
    {
        check(spec);
    }
});

fn check(spec: RuleSpec) {
    // As the store keeps it: JSON. Exact through a value; through text (floats may move by
    // an ulp there) it must still compile when it compiled.
    let value = serde_json::to_value(&spec).expect("a spec serializes");
    assert_eq!(RuleSpec::from_json(value).as_ref(), Ok(&spec), "spec changed through its JSON value");
    let stored = serde_json::to_string(&spec).expect("a spec serializes");

    let Ok(rule) = compile(spec.clone()) else { return };
    let reloaded = RuleSpec::from_json_str(&stored).expect("a stored spec parses");
    if let Err(e) = compile(reloaded) {
        panic!("a compiled rule does not compile from its stored JSON: {e}\n{stored}");
    }

    if is_timer_trigger(rule.trigger()) {
        let _ = TimerSpec::parse(rule.trigger(), &Value::Object(rule.trigger_params().clone()));
    }

    let now = *NOW;
    let ctx = ActionContext { pack_config: &PACK_CONFIG, now };
    let event = EventDocument::new("0197a0c4-7d4e-7000-8000-000000000001", rule.trigger(), "sensor:fuzz.sensor", now);
    // The rule's own parameters and trigger_params as payloads let the fuzzer shape a payload.
    let own = [Value::Object(spec.action.parameters.clone()), Value::Object(spec.trigger_params.clone())];
    for payload in PAYLOADS.iter().chain(own.iter()) {
        let input = rule.input(payload, &event, now);
        let matched = rule.matches(&input);
        let explanation = rule.explain(&input);
        assert_eq!(explanation.matched, matched, "explain and matches disagree");
        let action = rule.render_action(&input, &ctx);
        let _ = explain_text(&explanation, Some(&action));
        let dry = rule.dry_run(&input, &ctx);
        assert_eq!(dry.explanation.matched, matched);
        assert_eq!(dry.parameters.is_some(), action.is_ok());
        let _ = serde_json::to_string(&dry).expect("a dry run serializes");
    }

    let mut index = RuleIndex::new();
    let rule = Arc::new(rule);
    index.upsert(Arc::clone(&rule));
    assert_eq!(index.get(rule.rule_ref()).map(|r| r.rule_ref()), Some(rule.rule_ref()));
    let _ = index.rules_for(rule.trigger());
    assert!(index.remove(rule.rule_ref()).is_some());
}
