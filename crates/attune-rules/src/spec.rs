//! The rule document as users write it (YAML or JSON), before compilation.

use crate::error::{SpecFormat, SpecParseError};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A rule as written (spec section 4). Strict: unknown keys are rejected.
///
/// `conditions` stays raw JSON here so that [`crate::compile`] can name the exact place of any
/// problem (`conditions.all[1].any[0].value`); it is checked there, not by serde.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// `pack.name`.
    #[serde(rename = "ref")]
    pub rule_ref: String,
    /// Trigger ref (`pack.name`) whose events this rule sees.
    pub trigger: String,
    /// Disabled rules compile but are left out of [`crate::RuleIndex::rules_for`].
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Parameters of the trigger (timers: interval, cron expression, fire time). Opaque to the rule
    /// engine; visible to conditions and templates as `trigger.params`.
    #[serde(default)]
    pub trigger_params: Map<String, Value>,
    /// The condition tree; omitted, `null` or `{}` means the rule always matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Value>,
    /// What to enforce when the rule matches.
    pub action: ActionSpec,
}

/// The `action` of a rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    /// Action ref (`pack.name`).
    #[serde(rename = "ref")]
    pub action_ref: String,
    /// Parameters; strings may hold `{{ .. }}` templates.
    #[serde(default)]
    pub parameters: Map<String, Value>,
}

fn default_true() -> bool {
    true
}

impl RuleSpec {
    /// Parses a YAML document (JSON documents are YAML too).
    pub fn from_yaml_str(text: &str) -> Result<RuleSpec, SpecParseError> {
        serde_yaml_ng::from_str(text).map_err(|e| {
            let location = e.location();
            SpecParseError {
                format: SpecFormat::Yaml,
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
                message: e.to_string(),
            }
        })
    }

    /// Parses a JSON document.
    pub fn from_json_str(text: &str) -> Result<RuleSpec, SpecParseError> {
        serde_json::from_str(text).map_err(|e| json_error(&e))
    }

    /// Converts an already parsed JSON value (e.g. an API request body).
    pub fn from_json(value: Value) -> Result<RuleSpec, SpecParseError> {
        serde_json::from_value(value).map_err(|e| json_error(&e))
    }
}

fn json_error(e: &serde_json::Error) -> SpecParseError {
    let known = e.line() > 0;
    SpecParseError {
        format: SpecFormat::Json,
        line: known.then(|| e.line()),
        column: known.then(|| e.column()),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SPEC_EXAMPLE: &str = r#"
ref: mypack.page_on_5xx
trigger: mypack.http_status
enabled: true
trigger_params: {}
conditions:
  all:
    - {field: payload.status, operator: greater_than, value: 499}
    - any:
        - {field: payload.host, operator: ends_with, value: ".prod"}
        - {field: "payload.tags[0]", operator: equals, value: critical}
    - not: {field: payload.maintenance, operator: equals, value: true}
action: {ref: core.echo, parameters: {message: "{{ event.payload.host }} is down"}}
"#;

    #[test]
    fn parses_the_spec_example() {
        let spec = RuleSpec::from_yaml_str(SPEC_EXAMPLE).unwrap();
        assert_eq!(spec.rule_ref, "mypack.page_on_5xx");
        assert_eq!(spec.action.action_ref, "core.echo");
        assert_eq!(spec.action.parameters["message"], json!("{{ event.payload.host }} is down"));
        assert_eq!(spec.conditions.as_ref().unwrap()["all"][0]["value"], json!(499));
    }

    #[test]
    fn defaults_and_round_trip() {
        let spec =
            RuleSpec::from_json(json!({"ref": "p.r", "trigger": "p.t", "action": {"ref": "core.echo"}})).unwrap();
        assert!(spec.enabled);
        assert!(spec.conditions.is_none() && spec.trigger_params.is_empty() && spec.action.parameters.is_empty());
        let again = RuleSpec::from_json(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(spec, again);
    }

    #[test]
    fn unknown_keys_are_rejected_with_a_location() {
        let err = RuleSpec::from_yaml_str("ref: p.r\ntrigger: p.t\nacton: {ref: core.echo}\n").unwrap_err();
        assert!(err.message.contains("acton"), "{err}");
        assert_eq!(err.line, Some(3));
        assert!(err.message.contains("line 3 column 1"), "the message keeps the location: {err}");
        let err = RuleSpec::from_json_str("{\"ref\": \"p.r\",\n \"trigger\": 5}").unwrap_err();
        assert_eq!(err.format, SpecFormat::Json);
        assert_eq!(err.line, Some(2));
        assert!(err.to_string().starts_with("invalid rule JSON: "), "{err}");
        let err =
            RuleSpec::from_json_str(r#"{"ref":"p.r","trigger":"p.t","action":{"ref":"a.b","params":{}}}"#).unwrap_err();
        assert!(err.message.contains("params"), "{err}");
    }
}
