//! Behaviour tests of the public API: operators, groups, rejected rules, templates, `rule test`,
//! and property tests of `not`/`all`/`any`.

use crate::*;
use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-05-01T12:00:00Z").unwrap().with_timezone(&Utc)
}

fn spec_with(conditions: Value, parameters: Value) -> RuleSpec {
    RuleSpec::from_json(json!({
        "ref": "mypack.r",
        "trigger": "mypack.t",
        "conditions": conditions,
        "action": {"ref": "core.echo", "parameters": parameters},
    }))
    .unwrap()
}

fn rule(conditions: Value) -> CompiledRule {
    compile(spec_with(conditions, json!({}))).unwrap()
}

fn reject(conditions: Value) -> RuleError {
    compile(spec_with(conditions, json!({}))).unwrap_err()
}

const EMPTY: &Value = &Value::Null;

/// Evaluates `rule` on `payload` via both `matches` and `explain` and checks they agree.
fn run(rule: &CompiledRule, payload: &Value) -> Explanation {
    let trigger = json!({"ref": "mypack.t", "params": {}});
    let event = json!({"id": "e1", "trigger": "mypack.t"});
    let input = MatchInput { payload, trigger: &trigger, event: &event, now: now() };
    let explanation = rule.explain(&input);
    assert_eq!(explanation.matched, rule.matches(&input), "matches and explain disagree");
    explanation
}

fn leaf_of(explanation: &Explanation) -> LeafExplanation {
    match &explanation.conditions {
        Some(ConditionExplanation::Leaf(leaf)) => leaf.clone(),
        other => panic!("expected a leaf, got {other:?}"),
    }
}

use LeafOutcome::{Held as H, Missing as M, NotHeld as N, TypeMismatch as T};

/// `(operator, value, found, outcome)`: `found: None` means `payload.x` is missing.
fn check_cases(cases: &[(&str, Option<Value>, Option<Value>, LeafOutcome)]) {
    for (op, value, found, outcome) in cases {
        let mut leaf = json!({"field": "payload.x", "operator": op});
        if let Some(v) = value {
            leaf["value"] = v.clone();
        }
        let payload = match found {
            Some(v) => json!({"x": v, "other": 1}),
            None => json!({"other": 1}),
        };
        let case = format!("{op} {value:?} on {found:?}");
        let r = rule(leaf.clone());
        let explanation = run(&r, &payload);
        let leaf_explanation = leaf_of(&explanation);
        assert_eq!(leaf_explanation.outcome, *outcome, "{case}: {}", leaf_explanation.reason);
        assert_eq!(explanation.matched, *outcome == H, "{case}");
        assert_eq!(leaf_explanation.found.as_ref(), found.as_ref(), "{case}");
        // `not` inverts whatever the reason.
        assert_eq!(run(&rule(json!({"not": leaf})), &payload).matched, *outcome != H, "not {case}");
    }
}

#[test]
fn equals_and_not_equals() {
    check_cases(&[
        ("equals", Some(json!(42)), Some(json!(42.0)), H),
        ("equals", Some(json!(42)), Some(json!(41)), N),
        ("equals", Some(json!(42)), Some(json!("42")), N),
        ("equals", Some(json!({"a": [1]})), Some(json!({"a": [1.0]})), H),
        ("equals", Some(json!(null)), Some(json!(null)), H),
        ("equals", Some(json!(42)), None, M),
        ("not_equals", Some(json!(42)), Some(json!(41)), H),
        ("not_equals", Some(json!(42)), Some(json!(42)), N),
        ("not_equals", Some(json!(42)), Some(json!("42")), H),
        ("not_equals", Some(json!(42)), None, M),
        ("iequals", Some(json!("Critical")), Some(json!("CRITICAL")), H),
        ("iequals", Some(json!("Critical")), Some(json!("warning")), N),
        ("iequals", Some(json!("ÉTÉ")), Some(json!("été")), H),
        ("iequals", Some(json!("5")), Some(json!(5)), T),
        ("iequals", Some(json!("x")), None, M),
    ]);
}

#[test]
fn contains_family() {
    check_cases(&[
        ("contains", Some(json!("prod")), Some(json!("web-1.prod")), H),
        ("contains", Some(json!("dev")), Some(json!("web-1.prod")), N),
        ("contains", Some(json!(1)), Some(json!([1.0, "a"])), H),
        ("contains", Some(json!("b")), Some(json!([1, "a"])), N),
        ("contains", Some(json!({"k": 1})), Some(json!([{"k": 1}])), H),
        ("contains", Some(json!("k")), Some(json!({"k": 1})), H),
        ("contains", Some(json!("z")), Some(json!({"k": 1})), N),
        ("contains", Some(json!("5")), Some(json!(5)), T),
        ("contains", Some(json!(5)), Some(json!("a5")), T),
        ("contains", Some(json!(5)), Some(json!({"5": 1})), T),
        ("contains", Some(json!("a")), None, M),
        ("not_contains", Some(json!("dev")), Some(json!("web-1.prod")), H),
        ("not_contains", Some(json!("prod")), Some(json!("web-1.prod")), N),
        ("not_contains", Some(json!("b")), Some(json!(["a"])), H),
        ("not_contains", Some(json!("a")), Some(json!(["a"])), N),
        ("not_contains", Some(json!("a")), Some(json!(true)), T),
        ("not_contains", Some(json!("a")), None, M),
        ("icontains", Some(json!("panic")), Some(json!("Kernel PANIC now")), H),
        ("icontains", Some(json!("oops")), Some(json!("Kernel PANIC now")), N),
        ("icontains", Some(json!("Critical")), Some(json!(["x", "CRITICAL"])), H),
        ("icontains", Some(json!("crit")), Some(json!(["critical"])), N),
        ("icontains", Some(json!("key")), Some(json!({"Key": 1})), H),
        ("icontains", Some(json!("a")), Some(json!(true)), T),
        ("icontains", Some(json!("a")), None, M),
    ]);
}

#[test]
fn prefix_and_suffix() {
    check_cases(&[
        ("starts_with", Some(json!("web")), Some(json!("web-1")), H),
        ("starts_with", Some(json!("web")), Some(json!("WEB-1")), N),
        ("starts_with", Some(json!("web")), Some(json!(["web-1"])), T),
        ("starts_with", Some(json!("web")), None, M),
        ("istarts_with", Some(json!("Web")), Some(json!("WEB-1")), H),
        ("istarts_with", Some(json!("web")), Some(json!("db-1")), N),
        ("istarts_with", Some(json!("web")), Some(json!(1)), T),
        ("istarts_with", Some(json!("web")), None, M),
        ("ends_with", Some(json!(".prod")), Some(json!("x.prod")), H),
        ("ends_with", Some(json!(".prod")), Some(json!("x.dev")), N),
        ("ends_with", Some(json!(".prod")), Some(json!(null)), T),
        ("ends_with", Some(json!(".prod")), None, M),
        ("iends_with", Some(json!(".Prod")), Some(json!("X.PROD")), H),
        ("iends_with", Some(json!(".prod")), Some(json!("x.dev")), N),
        ("iends_with", Some(json!(".prod")), Some(json!({})), T),
        ("iends_with", Some(json!(".prod")), None, M),
    ]);
}

#[test]
fn ordering() {
    check_cases(&[
        ("greater_than", Some(json!(499)), Some(json!(503)), H),
        ("greater_than", Some(json!(499)), Some(json!(499)), N),
        ("greater_than", Some(json!(499)), Some(json!(499.5)), H),
        ("greater_than", Some(json!(499)), Some(json!("503")), T),
        ("greater_than", Some(json!(499)), None, M),
        ("greater_than", Some(json!("b")), Some(json!("c")), H),
        ("greater_than", Some(json!("b")), Some(json!("a")), N),
        ("greater_than", Some(json!("b")), Some(json!(5)), T),
        ("greater_or_equal", Some(json!(499)), Some(json!(499.0)), H),
        ("greater_or_equal", Some(json!(499)), Some(json!(498)), N),
        ("greater_or_equal", Some(json!(499)), Some(json!(true)), T),
        ("greater_or_equal", Some(json!(499)), None, M),
        ("less_than", Some(json!(2)), Some(json!(1.5)), H),
        ("less_than", Some(json!(2)), Some(json!(2)), N),
        ("less_than", Some(json!(-1)), Some(json!(u64::MAX)), N),
        ("less_than", Some(json!(2)), Some(json!(null)), T),
        ("less_than", Some(json!(2)), None, M),
        ("less_or_equal", Some(json!(2)), Some(json!(2.0)), H),
        ("less_or_equal", Some(json!(2)), Some(json!(3)), N),
        ("less_or_equal", Some(json!("2026-05-01T00:00:00Z")), Some(json!("2026-04-30T23:00:00Z")), H),
        ("less_or_equal", Some(json!(2)), Some(json!([1])), T),
        ("less_or_equal", Some(json!(2)), None, M),
    ]);
}

#[test]
fn membership() {
    check_cases(&[
        ("in", Some(json!(["a", "b"])), Some(json!("b")), H),
        ("in", Some(json!(["a", "b"])), Some(json!("c")), N),
        ("in", Some(json!([1.0, 2])), Some(json!(1)), H),
        ("in", Some(json!([[1]])), Some(json!([1])), H),
        ("in", Some(json!([])), Some(json!("a")), N),
        ("in", Some(json!(["a"])), None, M),
        ("not_in", Some(json!(["a", "b"])), Some(json!("c")), H),
        ("not_in", Some(json!(["a", "b"])), Some(json!("a")), N),
        ("not_in", Some(json!([1])), Some(json!(1.0)), N),
        ("not_in", Some(json!(["a"])), None, M),
    ]);
}

#[test]
fn patterns() {
    check_cases(&[
        ("matches", Some(json!(r"disk\s+full")), Some(json!("error: disk  full!")), H),
        ("matches", Some(json!(r"^disk")), Some(json!("error: disk full")), N),
        ("matches", Some(json!(r"^5\d\d$")), Some(json!(503)), T),
        ("matches", Some(json!("x")), None, M),
        ("wildcard", Some(json!("web-*.prod")), Some(json!("web-12.prod")), H),
        ("wildcard", Some(json!("web-?.prod")), Some(json!("web-12.prod")), N),
        ("wildcard", Some(json!("web")), Some(json!("web-1")), N),
        ("wildcard", Some(json!("host[0-9]")), Some(json!("host7")), H),
        ("wildcard", Some(json!("*")), Some(json!(7)), T),
        ("wildcard", Some(json!("*")), None, M),
    ]);
}

#[test]
fn existence() {
    check_cases(&[
        ("exists", None, Some(json!(0)), H),
        ("exists", None, Some(json!(null)), H),
        ("exists", None, None, M),
        ("not_exists", None, None, H),
        ("not_exists", None, Some(json!(null)), N),
        ("not_exists", None, Some(json!("x")), N),
    ]);
}

#[test]
fn time_differences() {
    let ago = |s: i64| json!((now() - Duration::seconds(s)).to_rfc3339());
    let epoch = |s: i64| json!((now() - Duration::seconds(s)).timestamp());
    check_cases(&[
        ("timediff_lt", Some(json!(60)), Some(ago(30)), H),
        ("timediff_lt", Some(json!(60)), Some(ago(120)), N),
        ("timediff_lt", Some(json!(60)), Some(ago(-30)), H),
        ("timediff_lt", Some(json!(60)), Some(epoch(30)), H),
        ("timediff_lt", Some(json!(60)), Some(json!("yesterday")), T),
        ("timediff_lt", Some(json!(60)), Some(json!([1])), T),
        ("timediff_lt", Some(json!(60)), None, M),
        ("timediff_gt", Some(json!(60)), Some(ago(120)), H),
        ("timediff_gt", Some(json!(60)), Some(ago(-120)), H),
        ("timediff_gt", Some(json!(60.5)), Some(epoch(30)), N),
        ("timediff_gt", Some(json!(60)), Some(json!(false)), T),
        ("timediff_gt", Some(json!(60)), None, M),
    ]);
}

#[test]
fn reasons_say_what_was_found() {
    let r = rule(json!({"field": "payload.status", "operator": "greater_than", "value": 499}));
    assert_eq!(leaf_of(&run(&r, &json!({"status": 503}))).reason, "found 503, greater_than 499 holds");
    assert_eq!(leaf_of(&run(&r, &json!({"status": 200}))).reason, "found 200, greater_than 499 does not hold");
    assert_eq!(leaf_of(&run(&r, &json!({}))).reason, "field missing");
    assert_eq!(leaf_of(&run(&r, &json!({"status": "503"}))).reason, "type mismatch: found string, need a number");
    let r = rule(json!({"field": "payload.x", "operator": "not_exists"}));
    assert_eq!(leaf_of(&run(&r, &json!({}))).reason, "field missing, not_exists holds");
    let r = rule(json!({"field": "payload.at", "operator": "timediff_lt", "value": 60}));
    let at = (now() - Duration::seconds(42)).to_rfc3339();
    assert_eq!(leaf_of(&run(&r, &json!({"at": at}))).reason, format!("found \"{at}\" (age 42s), timediff_lt 60 holds"));
    let long = "x".repeat(200);
    let r = rule(json!({"field": "payload.x", "operator": "equals", "value": "y"}));
    assert!(leaf_of(&run(&r, &json!({"x": long}))).reason.contains('…'));
}

#[test]
fn paths_reach_into_arrays_and_every_root() {
    let payload = json!({"tags": ["critical", {"n": [0, 7]}], "0": "key"});
    for (field, value) in [
        ("payload.tags[0]", json!("critical")),
        ("payload.tags[1].n[1]", json!(7)),
        ("payload.0", json!("key")),
        ("trigger.ref", json!("mypack.t")),
        ("event.id", json!("e1")),
        ("event.payload.tags[0]", json!("critical")),
    ] {
        let r = rule(json!({"field": field, "operator": "equals", "value": value}));
        assert!(run(&r, &payload).matched, "{field}");
    }
    for field in ["payload.tags[2]", "payload.tags.0", "payload.tags[0].x", "payload[0]", "event.nope"] {
        let r = rule(json!({"field": field, "operator": "exists"}));
        assert!(!run(&r, &payload).matched, "{field}");
    }
    // A full event document (with its own payload) is read as it is.
    let r = rule(json!({"field": "event.payload.a", "operator": "equals", "value": 1}));
    let event = json!({"payload": {"a": 1}});
    let input = MatchInput { payload: EMPTY, trigger: EMPTY, event: &event, now: now() };
    assert!(r.matches(&input));
}

#[test]
fn nested_groups() {
    let r = rule(json!({"all": [
        {"field": "payload.status", "operator": "greater_than", "value": 499},
        {"any": [
            {"field": "payload.host", "operator": "ends_with", "value": ".prod"},
            {"field": "payload.tags[0]", "operator": "equals", "value": "critical"},
        ]},
        {"not": {"field": "payload.maintenance", "operator": "equals", "value": true}},
    ]}));
    assert!(run(&r, &json!({"status": 503, "host": "web-1.prod"})).matched);
    assert!(run(&r, &json!({"status": 503, "host": "web-1.dev", "tags": ["critical"]})).matched);
    assert!(!run(&r, &json!({"status": 503, "host": "web-1.dev", "tags": ["minor"]})).matched);
    assert!(!run(&r, &json!({"status": 200, "host": "web-1.prod"})).matched);
    assert!(!run(&r, &json!({"status": 503, "host": "web-1.prod", "maintenance": true})).matched);
    assert!(run(&r, &json!({"status": 503, "host": "web-1.prod", "maintenance": "yes"})).matched);

    let explanation = run(&r, &json!({"status": 503, "host": "web-1.dev", "tags": ["critical"]}));
    let json = serde_json::to_value(&explanation).unwrap();
    assert_eq!(json["matched"], json!(true));
    assert_eq!(json["conditions"]["kind"], json!("all"));
    assert_eq!(json["conditions"]["children"][1]["kind"], json!("any"));
    let host = &json["conditions"]["children"][1]["children"][0];
    assert_eq!(host["at"], json!("conditions.all[1].any[0]"));
    assert_eq!(host["outcome"], json!("not_held"));
    assert_eq!(host["found"], json!("web-1.dev"));
    assert_eq!(host["expected"], json!(".prod"));
    let maintenance = &json["conditions"]["children"][2]["children"][0];
    assert_eq!(maintenance["outcome"], json!("missing"));
    assert!(maintenance.get("found").is_none());
    assert_eq!(json["conditions"]["children"][2]["held"], json!(true));

    // Empty groups, and no conditions at all.
    assert!(run(&rule(json!({"all": []})), &json!({})).matched);
    assert!(!run(&rule(json!({"any": []})), &json!({})).matched);
    for none in [json!({}), Value::Null] {
        let explanation = run(&rule(none), &json!({}));
        assert!(explanation.matched && explanation.conditions.is_none());
    }
}

#[track_caller]
fn assert_rejected(err: &RuleError, field: &str, kind: RuleErrorKind, needle: &str) {
    assert_eq!(err.rule_ref, "mypack.r", "{err}");
    assert_eq!(err.field, field, "{err}");
    assert_eq!(err.kind, kind, "{err}");
    assert!(err.message.contains(needle), "{err:?} should mention {needle:?}");
    assert!(err.to_string().starts_with(&format!("rule mypack.r: {field}: ")), "{err}");
}

#[test]
fn rejects_unknown_operators() {
    let err = reject(json!({"all": [{"field": "payload.x", "operator": "greter_than", "value": 1}]}));
    assert_rejected(&err, "conditions.all[0].operator", RuleErrorKind::UnknownOperator, "did you mean `greater_than`");
    assert!(err.to_string().starts_with("rule mypack.r: conditions.all[0].operator: unknown operator `greter_than`"));
    assert!(err.message.contains("timediff_gt"));
    let err = reject(json!({"field": "payload.x", "operator": 5, "value": 1}));
    assert_rejected(&err, "conditions.operator", RuleErrorKind::BadCondition, "must be a string");
}

#[test]
fn rejects_bad_regexes_and_globs() {
    let err = reject(json!({"any": [{"not": {"field": "payload.x", "operator": "matches", "value": "(unclosed"}}]}));
    assert_rejected(&err, "conditions.any[0].not.value", RuleErrorKind::BadRegex, "invalid regex");
    let err = reject(json!({"field": "payload.x", "operator": "matches", "value": r"\w{1000}"}));
    assert_rejected(&err, "conditions.value", RuleErrorKind::RegexTooBig, "size limit");
    let err = reject(json!({"field": "payload.x", "operator": "wildcard", "value": "web-[0-9"}));
    assert_rejected(&err, "conditions.value", RuleErrorKind::BadGlob, "unclosed `[`");
}

#[test]
fn rejects_bad_paths_and_roots() {
    for bad in ["payload..x", "payload.x[", "payload.x[-1]", "", "payload.a b", ".x"] {
        let err = reject(json!({"all": [{"field": bad, "operator": "exists"}]}));
        assert_rejected(&err, "conditions.all[0].field", RuleErrorKind::BadPath, "bad path");
    }
    let err = reject(json!({"field": "body.x", "operator": "exists"}));
    assert_rejected(&err, "conditions.field", RuleErrorKind::UnknownRoot, "unknown root `body`");
    let err = reject(json!({"field": ["payload"], "operator": "exists"}));
    assert_rejected(&err, "conditions.field", RuleErrorKind::BadPath, "path string");
}

#[test]
fn rejects_wrong_missing_and_unexpected_values() {
    let cases = [
        ("in", Some(json!("a")), RuleErrorKind::WrongValueType, "needs a list value; found string"),
        ("not_in", Some(json!({})), RuleErrorKind::WrongValueType, "needs a list"),
        ("greater_than", Some(json!(true)), RuleErrorKind::WrongValueType, "a number or a string"),
        ("iequals", Some(json!(5)), RuleErrorKind::WrongValueType, "a string"),
        ("starts_with", Some(json!(null)), RuleErrorKind::WrongValueType, "a string"),
        ("matches", Some(json!(["a"])), RuleErrorKind::WrongValueType, "a string"),
        ("timediff_lt", Some(json!("60")), RuleErrorKind::WrongValueType, "seconds"),
        ("timediff_gt", Some(json!(-1)), RuleErrorKind::WrongValueType, "non-negative"),
        ("equals", None, RuleErrorKind::MissingValue, "needs a `value`"),
        ("in", None, RuleErrorKind::MissingValue, "needs a `value`"),
        ("exists", Some(json!(true)), RuleErrorKind::UnexpectedValue, "takes no `value`"),
        ("not_exists", Some(json!(null)), RuleErrorKind::UnexpectedValue, "takes no `value`"),
    ];
    for (op, value, kind, needle) in cases {
        let mut leaf = json!({"field": "payload.x", "operator": op});
        if let Some(v) = value {
            leaf["value"] = v;
        }
        let err = reject(json!({"all": [{"any": [leaf]}]}));
        assert_rejected(&err, "conditions.all[0].any[0].value", kind, needle);
    }
}

#[test]
fn rejects_malformed_trees() {
    let leaf = json!({"field": "payload.x", "operator": "exists"});
    let cases = [
        (json!({"all": leaf.clone()}), "conditions.all", "takes a list"),
        (json!({"all": [leaf.clone()], "any": []}), "conditions.any", "only key"),
        (json!({"any": [leaf.clone()], "field": "payload.x"}), "conditions.field", "only key"),
        (json!({"not": [leaf.clone()]}), "conditions.not", "one condition, not a list"),
        (json!({"all": [{}]}), "conditions.all[0]", "empty condition"),
        (json!({"all": ["payload.x"]}), "conditions.all[0]", "found string"),
        (json!([leaf.clone()]), "conditions", "found array"),
        (json!({"field": "payload.x", "operator": "equals", "valeu": 1}), "conditions.valeu", "unknown key `valeu`"),
        (json!({"operator": "exists"}), "conditions.field", "missing `field`"),
        (json!({"field": "payload.x"}), "conditions.operator", "missing `operator`"),
    ];
    for (conditions, field, needle) in cases {
        assert_rejected(&reject(conditions), field, RuleErrorKind::BadCondition, needle);
    }
    let mut deep = leaf.clone();
    for _ in 0..MAX_DEPTH {
        deep = json!({"not": deep});
    }
    assert_eq!(reject(deep).kind, RuleErrorKind::TooComplex);
    let wide = json!({"any": vec![leaf; MAX_NODES]});
    assert_eq!(reject(wide).kind, RuleErrorKind::TooComplex);
}

#[test]
fn rejects_bad_refs() {
    let base = json!({"ref": "mypack.r", "trigger": "mypack.t", "action": {"ref": "core.echo"}});
    for (key, value, field) in [
        ("ref", json!("noref"), "ref"),
        ("ref", json!("a.b.c"), "ref"),
        ("trigger", json!(""), "trigger"),
        ("trigger", json!("my pack.t"), "trigger"),
        ("action", json!({"ref": "echo"}), "action.ref"),
    ] {
        let mut doc = base.clone();
        doc[key] = value;
        let err = compile(RuleSpec::from_json(doc).unwrap()).unwrap_err();
        assert_eq!((err.field.as_str(), err.kind), (field, RuleErrorKind::BadRef), "{err}");
    }
    assert!(compile(RuleSpec::from_json(base).unwrap()).is_ok());
}

#[test]
fn rejects_bad_templates() {
    let cases = [
        (json!({"message": "{{ event.payload.x"}), "action.parameters.message", RuleErrorKind::BadTemplate, "unclosed"),
        (json!({"m": "a {{ }} b"}), "action.parameters.m", RuleErrorKind::BadTemplate, "empty"),
        (json!({"m": "{{ payload.x }}"}), "action.parameters.m", RuleErrorKind::UnknownRoot, "event.payload.x"),
        (json!({"h": {"a": ["x", "{{ env.HOME }}"]}}), "action.parameters.h.a[1]", RuleErrorKind::UnknownRoot, "env"),
        (json!({"m": "{{ system.now }}"}), "action.parameters.m", RuleErrorKind::BadPath, "system.timestamp"),
        (json!({"m": "{{ pack.token }}"}), "action.parameters.m", RuleErrorKind::BadPath, "pack.config"),
        (json!({"m": "{{ event..id }}"}), "action.parameters.m", RuleErrorKind::BadPath, "bad path"),
    ];
    for (parameters, field, kind, needle) in cases {
        let err = compile(spec_with(json!({}), parameters)).unwrap_err();
        assert_rejected(&err, field, kind, needle);
    }
}

#[test]
fn renders_action_parameters() {
    let r = compile(spec_with(
        json!({}),
        json!({
            "message": "{{ event.payload.host }} returned {{ event.payload.status }}",
            "status": "{{ event.payload.status }}",
            "tags": "{{ event.payload.tags }}",
            "first": ["{{ event.payload.tags[0] }}", 1],
            "id": "{{ event.id }}",
            "trigger": "{{ trigger.ref }}",
            "token": "{{ pack.config.token }}",
            "pack": "{{ pack.ref }}",
            "at": "{{ system.timestamp }}",
            "plain": {"n": 1, "s": "no template"},
        }),
    ))
    .unwrap();
    let payload = json!({"host": "web-1", "status": 503, "tags": ["a", "b"]});
    let trigger = json!({"ref": "mypack.t"});
    let event = json!({"id": "e1"});
    let input = MatchInput { payload: &payload, trigger: &trigger, event: &event, now: now() };
    let config = json!({"token": "s3cret"});
    let ctx = ActionContext { pack_config: &config, now: now() };
    assert_eq!(
        r.render_action(&input, &ctx).unwrap(),
        json!({
            "message": "web-1 returned 503",
            "status": 503,
            "tags": ["a", "b"],
            "first": ["a", 1],
            "id": "e1",
            "trigger": "mypack.t",
            "token": "s3cret",
            "pack": "mypack",
            "at": "2026-05-01T12:00:00.000Z",
            "plain": {"n": 1, "s": "no template"},
        })
    );

    let err = r.render_action(&MatchInput { payload: &json!({"host": "h"}), ..input }, &ctx).unwrap_err();
    assert_eq!(err.rule_ref, "mypack.r");
    assert_eq!(err.field, "action.parameters.first[0]");
    assert_eq!(err.kind, RuleErrorKind::MissingTemplateValue);
    assert_eq!(
        err.to_string(),
        "rule mypack.r: action.parameters.first[0]: template `{{ event.payload.tags[0] }}` names a missing value"
    );

    let dry = r.dry_run(&input, &ActionContext { pack_config: EMPTY, now: now() });
    let dry = serde_json::to_value(&dry).unwrap();
    assert_eq!(dry["explanation"]["matched"], json!(true));
    assert_eq!(dry["action_error"]["code"], json!("missing_template_value"));
    assert_eq!(dry["action_error"]["field"], json!("action.parameters.token"));
}

const RULE_YAML: &str = r#"
ref: mypack.page_on_5xx
trigger: mypack.http_status
conditions:
  all:
    - {field: payload.status, operator: greater_than, value: 499}
    - any:
        - {field: payload.host, operator: ends_with, value: ".prod"}
        - {field: "payload.tags[0]", operator: equals, value: critical}
    - not: {field: payload.maintenance, operator: equals, value: true}
action: {ref: core.echo, parameters: {message: "{{ event.payload.host }} is down", status: "{{ event.payload.status }}"}}
"#;

fn rule_test_now(rule: &str, payload: &str) -> RuleTestOutcome {
    rule_test_with(rule, "rules/page.yaml", payload, &ActionContext { pack_config: EMPTY, now: now() })
}

#[test]
fn rule_test_explains_and_exits() {
    let out = rule_test_now(RULE_YAML, r#"{"status": 503, "host": "web-1.dev", "tags": ["critical"]}"#);
    assert_eq!(out.exit_code, 0, "{}", out.text);
    assert_eq!(
        out.text,
        r#"rule mypack.page_on_5xx (trigger mypack.http_status)
✓ all: every member must hold
  ✓ payload.status: found 503, greater_than 499 holds
  ✓ any: one member must hold
    ✗ payload.host: found "web-1.dev", ends_with ".prod" does not hold
    ✓ payload.tags[0]: found "critical", equals "critical" holds
  ✓ not: the member must not hold
    ✗ payload.maintenance equals true: field missing
action parameters:
  {
    "message": "web-1.dev is down",
    "status": 503
  }
MATCHED
"#
    );

    let out = rule_test_now(RULE_YAML, r#"{"status": "503", "host": "web-1.prod"}"#);
    assert_eq!(out.exit_code, 1, "{}", out.text);
    assert!(out.text.contains("✗ payload.status greater_than 499: type mismatch: found string, need a number"));
    assert!(out.text.ends_with("NOT MATCHED\n"), "{}", out.text);

    // Matched, but the action cannot be rendered for this payload.
    let out = rule_test_now(RULE_YAML, r#"{"status": 503, "tags": ["critical"]}"#);
    assert_eq!(out.exit_code, 2, "{}", out.text);
    assert!(out.text.contains(
        "action parameters: cannot render: action.parameters.message: template `{{ event.payload.host }}` names a missing value"
    ));

    // Not matched, and the action cannot be rendered: still just "not matched".
    assert_eq!(rule_test_now(RULE_YAML, r#"{"status": 200}"#).exit_code, 1);

    let bad = RULE_YAML.replace("greater_than", "greter_than");
    let out = rule_test_now(&bad, "{}");
    assert_eq!(out.exit_code, 2);
    assert!(
        out.text.starts_with(
            "error: rules/page.yaml: rule mypack.page_on_5xx: conditions.all[0].operator: unknown operator `greter_than`"
        ),
        "{}",
        out.text
    );

    let out = rule_test_now("ref: a.b\ntrigger: a.t\nactions: {}\n", "{}");
    assert_eq!(out.exit_code, 2);
    assert!(out.text.starts_with("error: rules/page.yaml: invalid rule YAML: "), "{}", out.text);
    assert!(out.text.contains("line 3"), "{}", out.text);

    let out = rule_test_now(RULE_YAML, "{\"status\": ");
    assert_eq!(out.exit_code, 2);
    assert!(out.text.starts_with("error: payload: invalid JSON"), "{}", out.text);

    // No conditions; the event and trigger documents are there for conditions and templates.
    let always = "ref: a.b\ntrigger: a.t\ntrigger_params: {interval: 10}\naction: {ref: core.echo, parameters: {i: '{{ trigger.params.interval }}', e: '{{ event.created_at }}'}}\n";
    let out = rule_test_now(always, "[]");
    assert_eq!(out.exit_code, 0, "{}", out.text);
    assert!(out.text.contains("✓ no conditions: always matches"), "{}", out.text);
    assert!(out.text.contains(r#""i": 10"#) && out.text.contains("2026-05-01T12:00:00.000Z"), "{}", out.text);

    // The plain entry point uses the clock.
    assert_eq!(rule_test(RULE_YAML, "r.yaml", r#"{"status": 503, "host": "a.prod"}"#).exit_code, 0);
}

#[test]
fn disabled_rules_are_explained_all_the_same() {
    let r = rule(json!({})).with_enabled(false);
    let explanation = run(&r, &json!({}));
    assert!(explanation.matched && !explanation.enabled);
    assert!(explain_text(&explanation, None).contains("disabled"));
}

#[test]
fn shared_types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<CompiledRule>();
    check::<RuleIndex>();
    check::<Explanation>();
    check::<RuleError>();
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn small_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(json!(null)),
            any::<bool>().prop_map(Value::from),
            (0i64..4).prop_map(Value::from),
            Just(json!(1.5)),
            prop::sample::select(vec!["a", "B", "ab", "", "2026-05-01T11:59:30Z"]).prop_map(Value::from),
            Just(json!(["a", 1])),
            Just(json!({"k": "a"})),
        ]
    }

    fn text() -> impl Strategy<Value = Value> {
        prop::sample::select(vec!["a", "B", "ab", ""]).prop_map(Value::from)
    }

    fn leaf() -> impl Strategy<Value = Value> {
        let field =
            prop::sample::select(vec!["payload.a", "payload.b", "payload.list[0]", "payload.obj.k", "payload.none"]);
        let op_value = prop_oneof![
            (prop::sample::select(vec!["equals", "not_equals", "contains", "not_contains"]), small_value())
                .prop_map(|(o, v)| (o, Some(v))),
            (
                prop::sample::select(vec![
                    "iequals",
                    "icontains",
                    "starts_with",
                    "istarts_with",
                    "ends_with",
                    "iends_with",
                    "greater_than",
                    "less_or_equal",
                ]),
                text()
            )
                .prop_map(|(o, v)| (o, Some(v))),
            (prop::sample::select(vec!["greater_or_equal", "less_than", "timediff_lt", "timediff_gt"]), 0i64..4)
                .prop_map(|(o, v)| (o, Some(json!(v)))),
            (prop::sample::select(vec!["in", "not_in"]), prop::collection::vec(small_value(), 0..3))
                .prop_map(|(o, v)| (o, Some(Value::from(v)))),
            prop::sample::select(vec!["^a", "b", "[0-9]"]).prop_map(|p| ("matches", Some(json!(p)))),
            prop::sample::select(vec!["a*", "?", "*b*"]).prop_map(|p| ("wildcard", Some(json!(p)))),
            prop::sample::select(vec!["exists", "not_exists"]).prop_map(|o| (o, None)),
        ];
        (field, op_value).prop_map(|(field, (operator, value))| {
            let mut leaf = json!({"field": field, "operator": operator});
            if let Some(v) = value {
                leaf["value"] = v;
            }
            leaf
        })
    }

    fn tree() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"all": v})),
                prop::collection::vec(inner.clone(), 0..4).prop_map(|v| json!({"any": v})),
                inner.prop_map(|v| json!({"not": v})),
            ]
        })
    }

    fn payload() -> impl Strategy<Value = Value> {
        (
            prop::option::of(small_value()),
            prop::option::of(small_value()),
            prop::option::of(prop::collection::vec(small_value(), 0..2)),
            prop::option::of(small_value()),
        )
            .prop_map(|(a, b, list, k)| {
                let mut p = json!({});
                if let Some(a) = a {
                    p["a"] = a;
                }
                if let Some(b) = b {
                    p["b"] = b;
                }
                if let Some(list) = list {
                    p["list"] = Value::from(list);
                }
                if let Some(k) = k {
                    p["obj"] = json!({"k": k});
                }
                p
            })
    }

    fn matches(conditions: Value, payload: &Value) -> bool {
        let r = rule(conditions);
        run(&r, payload).matched
    }

    /// Every group's `held` agrees with its children's.
    fn consistent(node: &ConditionExplanation) -> bool {
        match node {
            ConditionExplanation::All { held, children, .. } => {
                *held == children.iter().all(ConditionExplanation::held) && children.iter().all(consistent)
            }
            ConditionExplanation::Any { held, children, .. } => {
                *held == children.iter().any(ConditionExplanation::held) && children.iter().all(consistent)
            }
            ConditionExplanation::Not { held, children, .. } => {
                children.len() == 1 && *held != children[0].held() && consistent(&children[0])
            }
            ConditionExplanation::Leaf(leaf) => leaf.held == (leaf.outcome == LeafOutcome::Held),
        }
    }

    proptest! {
        #[test]
        fn not_inverts(t in tree(), p in payload()) {
            prop_assert_eq!(matches(json!({"not": t.clone()}), &p), !matches(t, &p));
        }

        #[test]
        fn all_and_any_agree_with_their_members(ts in prop::collection::vec(tree(), 0..5), p in payload()) {
            let members: Vec<bool> = ts.iter().map(|t| matches(t.clone(), &p)).collect();
            prop_assert_eq!(matches(json!({"all": ts.clone()}), &p), members.iter().all(|m| *m));
            prop_assert_eq!(matches(json!({"any": ts}), &p), members.iter().any(|m| *m));
        }

        #[test]
        fn explanations_are_consistent(t in tree(), p in payload()) {
            let explanation = run(&rule(t), &p);
            let root = explanation.conditions.as_ref().unwrap();
            prop_assert_eq!(root.held(), explanation.matched);
            prop_assert!(consistent(root));
        }
    }
}
