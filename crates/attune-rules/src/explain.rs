//! Why a rule matched or not: a tree mirroring the conditions (what `rule test` prints and the
//! API's dry run returns), and its text form.

use crate::error::RuleError;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;

/// The explanation of one rule against one event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// The rule's ref.
    pub rule_ref: String,
    /// The rule's trigger.
    pub trigger: String,
    /// Whether the rule is enabled (a disabled rule is explained all the same).
    pub enabled: bool,
    /// Whether the conditions hold (`true` when there are none).
    pub matched: bool,
    /// The condition tree; `None` when the rule has no conditions and always matches.
    pub conditions: Option<ConditionExplanation>,
}

/// One node of the condition tree. Serialized with a `kind` tag: `all`, `any`, `not`, `leaf`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConditionExplanation {
    /// Every child must hold.
    All {
        /// Place in the rule, e.g. `conditions.all[1]`.
        at: String,
        /// Whether the group held.
        held: bool,
        /// The members.
        children: Vec<ConditionExplanation>,
    },
    /// At least one child must hold.
    Any {
        /// Place in the rule.
        at: String,
        /// Whether the group held.
        held: bool,
        /// The members.
        children: Vec<ConditionExplanation>,
    },
    /// The one child must not hold.
    Not {
        /// Place in the rule.
        at: String,
        /// Whether the `not` held (its child did not).
        held: bool,
        /// Exactly one child.
        children: Vec<ConditionExplanation>,
    },
    /// A `{field, operator, value}` condition.
    Leaf(LeafExplanation),
}

impl ConditionExplanation {
    /// Whether this node held.
    pub fn held(&self) -> bool {
        match self {
            ConditionExplanation::All { held, .. }
            | ConditionExplanation::Any { held, .. }
            | ConditionExplanation::Not { held, .. } => *held,
            ConditionExplanation::Leaf(leaf) => leaf.held,
        }
    }
}

/// How a leaf came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeafOutcome {
    /// The operator held.
    Held,
    /// The field was found and the operator did not hold.
    NotHeld,
    /// The field is missing (false for every operator but `not_exists`).
    Missing,
    /// The found value has a type the operator cannot use (false).
    TypeMismatch,
}

/// Explanation of a `{field, operator, value}` condition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeafExplanation {
    /// Place in the rule, e.g. `conditions.all[0]`.
    pub at: String,
    /// The field path as written.
    pub field: String,
    /// The operator name.
    pub operator: &'static str,
    /// The `value` as written (absent for `exists`/`not_exists`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected: Option<Value>,
    /// The value found at the path (absent when the field is missing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub found: Option<Value>,
    /// How it came out.
    pub outcome: LeafOutcome,
    /// Whether the condition held.
    pub held: bool,
    /// Short human reason, e.g. `found 503, greater_than 499 holds`.
    pub reason: String,
}

/// The text `attune-host rule test` prints: a header, one line per condition indented by depth
/// with ✓/✗ and the reason, then the action parameters (pretty JSON) or the template error, and a
/// last line `MATCHED` or `NOT MATCHED`.
pub fn explain_text(explanation: &Explanation, action: Option<&Result<Value, RuleError>>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "rule {} (trigger {})", explanation.rule_ref, explanation.trigger);
    if !explanation.enabled {
        out.push_str("note: the rule is disabled; it is evaluated all the same\n");
    }
    match &explanation.conditions {
        None => out.push_str("✓ no conditions: always matches\n"),
        Some(node) => write_node(&mut out, node, 0),
    }
    match action {
        Some(Ok(parameters)) => {
            out.push_str("action parameters:\n");
            let pretty = serde_json::to_string_pretty(parameters).unwrap_or_else(|_| parameters.to_string());
            for line in pretty.lines() {
                let _ = writeln!(out, "  {line}");
            }
        }
        Some(Err(e)) => {
            let _ = writeln!(out, "action parameters: cannot render: {}: {}", e.field, e.message);
        }
        None => {}
    }
    out.push_str(if explanation.matched { "MATCHED\n" } else { "NOT MATCHED\n" });
    out
}

fn write_node(out: &mut String, node: &ConditionExplanation, depth: usize) {
    let indent = "  ".repeat(depth);
    let mark = if node.held() { '✓' } else { '✗' };
    match node {
        ConditionExplanation::All { children, .. }
        | ConditionExplanation::Any { children, .. }
        | ConditionExplanation::Not { children, .. } => {
            let (name, rule) = match node {
                ConditionExplanation::All { .. } => ("all", "every member must hold"),
                ConditionExplanation::Any { .. } => ("any", "one member must hold"),
                _ => ("not", "the member must not hold"),
            };
            let _ = writeln!(out, "{indent}{mark} {name}: {rule}");
            for child in children {
                write_node(out, child, depth + 1);
            }
        }
        ConditionExplanation::Leaf(leaf) => match leaf.outcome {
            // The reason already names the operator and the expected value.
            LeafOutcome::Held | LeafOutcome::NotHeld => {
                let _ = writeln!(out, "{indent}{mark} {}: {}", leaf.field, leaf.reason);
            }
            LeafOutcome::Missing | LeafOutcome::TypeMismatch => {
                let expected = leaf.expected.as_ref().map(|e| format!(" {}", short_json(e))).unwrap_or_default();
                let _ = writeln!(out, "{indent}{mark} {} {}{expected}: {}", leaf.field, leaf.operator, leaf.reason);
            }
        },
    }
}

/// Compact JSON, cut to about 80 characters for explanations.
pub(crate) fn short_json(v: &Value) -> String {
    const MAX: usize = 80;
    let text = v.to_string();
    if text.chars().count() <= MAX {
        return text;
    }
    let mut cut: String = text.chars().take(MAX).collect();
    cut.push('…');
    cut
}
