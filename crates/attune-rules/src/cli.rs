//! `attune-host rule test <rule.yaml> <payload.json>`, minus the file reading.

use crate::context::EventDocument;
use crate::explain::explain_text;
use crate::rule::{ActionContext, compile};
use crate::spec::RuleSpec;
use serde_json::{Value, json};

/// What `rule test` prints and how it exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTestOutcome {
    /// 0 matched; 1 not matched; 2 bad rule, bad payload, or matched with action parameters that
    /// cannot be rendered for this payload.
    pub exit_code: u8,
    /// The explanation (for stdout), or the error (for stderr when `exit_code` is 2).
    pub text: String,
}

/// Evaluates a rule (YAML or JSON text) against a payload (JSON text) now, with an empty pack
/// config. `rule_path` only names the rule file in error messages.
pub fn rule_test(rule_yaml: &str, rule_path: &str, payload_json: &str) -> RuleTestOutcome {
    let empty = json!({});
    rule_test_with(rule_yaml, rule_path, payload_json, &ActionContext::new(&empty))
}

/// [`rule_test`] with a given pack config and time (`ctx.now` is also the event's `created_at`
/// and the `now` of `timediff_*`).
///
/// The rule sees the documents of [`crate::context`], with the event of
/// [`EventDocument::dry_run`].
pub fn rule_test_with(
    rule_yaml: &str,
    rule_path: &str,
    payload_json: &str,
    ctx: &ActionContext<'_>,
) -> RuleTestOutcome {
    let bad = |text: String| RuleTestOutcome { exit_code: 2, text };
    let spec = match RuleSpec::from_yaml_str(rule_yaml) {
        Ok(spec) => spec,
        Err(e) => return bad(format!("error: {rule_path}: {e}\n")),
    };
    let rule = match compile(spec) {
        Ok(rule) => rule,
        Err(e) => return bad(format!("error: {rule_path}: {e}\n")),
    };
    let payload: Value = match serde_json::from_str(payload_json) {
        Ok(payload) => payload,
        Err(e) => return bad(format!("error: payload: invalid JSON: {e}\n")),
    };
    let now = ctx.now;
    let event = EventDocument::dry_run(rule.trigger(), now);
    let input = rule.input(&payload, &event, now);
    let explanation = rule.explain(&input);
    let action = rule.render_action(&input, ctx);
    let mut text = explain_text(&explanation, Some(&action));
    let exit_code = match (explanation.matched, &action) {
        (true, Ok(_)) => 0,
        (true, Err(_)) => {
            text.push_str("error: the rule matches but its action parameters cannot be rendered for this payload\n");
            2
        }
        (false, _) => 1,
    };
    RuleTestOutcome { exit_code, text }
}
