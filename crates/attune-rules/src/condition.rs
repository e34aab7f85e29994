//! The condition tree: checked and compiled from the rule's raw `conditions`, then evaluated
//! (fast, short-circuiting) or explained (every node, with reasons).

use crate::context::MatchInput;
use crate::error::{RuleError, RuleErrorKind};
use crate::explain::{ConditionExplanation, LeafExplanation, LeafOutcome, short_json};
use crate::operator::{self, Check, Operator, Outcome, compile_check, type_name};
use crate::path::{Path, Step, walk_steps};
use serde_json::{Map, Value};

/// Deepest nesting of `all`/`any`/`not` accepted (the top node is depth 1).
pub const MAX_DEPTH: usize = 32;
/// Most condition nodes (groups and leaves) in one rule.
pub const MAX_NODES: usize = 1000;

/// Where a field path starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Root {
    Payload,
    Trigger,
    Event,
}

const FIELD_ROOTS: &str = "payload, trigger, event";

#[derive(Debug, Clone)]
pub(crate) enum Node {
    All { at: String, children: Vec<Node> },
    Any { at: String, children: Vec<Node> },
    Not { at: String, child: Box<Node> },
    Leaf(Box<Leaf>),
}

#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    at: String,
    field: String,
    root: Root,
    steps: Vec<Step>,
    operator: Operator,
    expected: Option<Value>,
    check: Check,
}

/// Compiles `conditions`; `None` when the rule always matches (omitted, `null` or `{}`).
pub(crate) fn compile(rule_ref: &str, conditions: Option<&Value>) -> Result<Option<Node>, RuleError> {
    match conditions {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) if map.is_empty() => Ok(None),
        Some(value) => Compiler { rule_ref, nodes: 0 }.node(value, "conditions", 1).map(Some),
    }
}

struct Compiler<'r> {
    rule_ref: &'r str,
    nodes: usize,
}

impl Compiler<'_> {
    fn err(&self, field: impl Into<String>, kind: RuleErrorKind, message: impl Into<String>) -> RuleError {
        RuleError::new(self.rule_ref, field, kind, message)
    }

    fn node(&mut self, value: &Value, at: &str, depth: usize) -> Result<Node, RuleError> {
        if depth > MAX_DEPTH {
            return Err(self.err(
                at,
                RuleErrorKind::TooComplex,
                format!("conditions nest deeper than {MAX_DEPTH} levels"),
            ));
        }
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(self.err(at, RuleErrorKind::TooComplex, format!("more than {MAX_NODES} conditions")));
        }
        let Value::Object(map) = value else {
            return Err(self.err(
                at,
                RuleErrorKind::BadCondition,
                format!(
                    "a condition is a mapping: {{all: [..]}}, {{any: [..]}}, {{not: {{..}}}} or \
                     {{field, operator, value}}; found {}",
                    type_name(value)
                ),
            ));
        };
        if map.is_empty() {
            return Err(self.err(at, RuleErrorKind::BadCondition, "empty condition"));
        }
        for group in ["all", "any", "not"] {
            let Some(inner) = map.get(group) else { continue };
            if let Some(other) = map.keys().find(|k| *k != group) {
                return Err(self.err(
                    format!("{at}.{other}"),
                    RuleErrorKind::BadCondition,
                    format!("`{group}` must be the only key of its condition; found also `{other}`"),
                ));
            }
            let group_at = format!("{at}.{group}");
            if group == "not" {
                if inner.is_array() {
                    return Err(self.err(
                        group_at,
                        RuleErrorKind::BadCondition,
                        "`not` takes one condition, not a list (wrap several in `all` or `any`)",
                    ));
                }
                let child = self.node(inner, &group_at, depth + 1)?;
                return Ok(Node::Not { at: at.to_owned(), child: Box::new(child) });
            }
            let Value::Array(items) = inner else {
                return Err(self.err(
                    group_at,
                    RuleErrorKind::BadCondition,
                    format!("`{group}` takes a list of conditions; found {}", type_name(inner)),
                ));
            };
            let children = items
                .iter()
                .enumerate()
                .map(|(i, item)| self.node(item, &format!("{group_at}[{i}]"), depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            let at = at.to_owned();
            return Ok(if group == "all" { Node::All { at, children } } else { Node::Any { at, children } });
        }
        self.leaf(map, at).map(|leaf| Node::Leaf(Box::new(leaf)))
    }

    fn leaf(&self, map: &Map<String, Value>, at: &str) -> Result<Leaf, RuleError> {
        if let Some(unknown) = map.keys().find(|k| !matches!(k.as_str(), "field" | "operator" | "value")) {
            return Err(self.err(
                format!("{at}.{unknown}"),
                RuleErrorKind::BadCondition,
                format!(
                    "unknown key `{unknown}` (a condition is {{all}}, {{any}}, {{not}} or {{field, operator, value}})"
                ),
            ));
        }
        let field_at = format!("{at}.field");
        let field = match map.get("field") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(self.err(
                    field_at,
                    RuleErrorKind::BadPath,
                    format!("`field` must be a path string; found {}", type_name(other)),
                ));
            }
            None => return Err(self.err(field_at, RuleErrorKind::BadCondition, "missing `field`")),
        };
        let path = Path::parse(&field).map_err(|e| self.err(&field_at, RuleErrorKind::BadPath, e.to_string()))?;
        let root = match path.root.as_str() {
            "payload" => Root::Payload,
            "trigger" => Root::Trigger,
            "event" => Root::Event,
            other => {
                return Err(self.err(
                    field_at,
                    RuleErrorKind::UnknownRoot,
                    format!("unknown root `{other}` in `{field}` (roots: {FIELD_ROOTS})"),
                ));
            }
        };
        let operator_at = format!("{at}.operator");
        let operator = match map.get("operator") {
            Some(Value::String(name)) => Operator::from_name(name).ok_or_else(|| {
                let known = Operator::ALL.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(", ");
                let hint = operator::suggest(name).map(|s| format!("did you mean `{s}`? ")).unwrap_or_default();
                self.err(
                    &operator_at,
                    RuleErrorKind::UnknownOperator,
                    format!("unknown operator `{name}` ({hint}known: {known})"),
                )
            })?,
            Some(other) => {
                return Err(self.err(
                    operator_at,
                    RuleErrorKind::BadCondition,
                    format!("`operator` must be a string; found {}", type_name(other)),
                ));
            }
            None => return Err(self.err(operator_at, RuleErrorKind::BadCondition, "missing `operator`")),
        };
        let expected = map.get("value").cloned();
        let check = compile_check(operator, expected.as_ref())
            .map_err(|(kind, message)| self.err(format!("{at}.value"), kind, message))?;
        Ok(Leaf { at: at.to_owned(), field, root, steps: path.steps, operator, expected, check })
    }
}

impl Node {
    /// Short-circuiting evaluation; allocation-free (see [`Check::evaluate`]).
    pub(crate) fn eval(&self, input: &MatchInput<'_>, now: f64) -> bool {
        match self {
            Node::All { children, .. } => children.iter().all(|c| c.eval(input, now)),
            Node::Any { children, .. } => children.iter().any(|c| c.eval(input, now)),
            Node::Not { child, .. } => !child.eval(input, now),
            Node::Leaf(leaf) => leaf.outcome(input, now) == Outcome::Held,
        }
    }

    /// Evaluates every node (no short-circuit) and says why each held or not.
    pub(crate) fn explain(&self, input: &MatchInput<'_>, now: f64) -> ConditionExplanation {
        match self {
            Node::All { at, children } | Node::Any { at, children } => {
                let children: Vec<_> = children.iter().map(|c| c.explain(input, now)).collect();
                let is_all = matches!(self, Node::All { .. });
                let held = if is_all { children.iter().all(|c| c.held()) } else { children.iter().any(|c| c.held()) };
                if is_all {
                    ConditionExplanation::All { at: at.clone(), held, children }
                } else {
                    ConditionExplanation::Any { at: at.clone(), held, children }
                }
            }
            Node::Not { at, child } => {
                let child = child.explain(input, now);
                ConditionExplanation::Not { at: at.clone(), held: !child.held(), children: vec![child] }
            }
            Node::Leaf(leaf) => ConditionExplanation::Leaf(leaf.explain(input, now)),
        }
    }
}

impl Leaf {
    fn found<'v>(&self, input: &MatchInput<'v>) -> Option<&'v Value> {
        self.root.resolve(input, &self.steps)
    }

    fn outcome(&self, input: &MatchInput<'_>, now: f64) -> Outcome {
        self.check.evaluate(self.found(input), now)
    }

    fn explain(&self, input: &MatchInput<'_>, now: f64) -> LeafExplanation {
        let found = self.found(input);
        let outcome = self.check.evaluate(found, now);
        let op = self.operator.as_str();
        let expected = self.expected.as_ref().map(|e| format!(" {}", short_json(e))).unwrap_or_default();
        let shown = found.map(|v| {
            let mut text = short_json(v);
            if matches!(self.operator, Operator::TimediffLt | Operator::TimediffGt)
                && let Some(t) = operator::epoch_seconds(v)
            {
                text.push_str(&format!(" (age {}s)", round_seconds((now - t).abs())));
            }
            text
        });
        let (reason, leaf_outcome) = match (outcome, shown) {
            (Outcome::Held, None) => (format!("field missing, {op} holds"), LeafOutcome::Held),
            (Outcome::Held, Some(v)) => (format!("found {v}, {op}{expected} holds"), LeafOutcome::Held),
            (Outcome::NotHeld, Some(v)) => (format!("found {v}, {op}{expected} does not hold"), LeafOutcome::NotHeld),
            (Outcome::NotHeld | Outcome::Missing, None) => ("field missing".to_owned(), LeafOutcome::Missing),
            (Outcome::Missing, Some(v)) => (format!("found {v}"), LeafOutcome::NotHeld),
            (Outcome::Mismatch(need), _) => (
                format!("type mismatch: found {}, need {need}", found.map_or("nothing", type_name)),
                LeafOutcome::TypeMismatch,
            ),
        };
        LeafExplanation {
            at: self.at.clone(),
            field: self.field.clone(),
            operator: op,
            expected: self.expected.clone(),
            found: found.cloned(),
            outcome: leaf_outcome,
            held: outcome == Outcome::Held,
            reason,
        }
    }
}

fn round_seconds(s: f64) -> String {
    if s >= 100.0 || s.fract() == 0.0 { format!("{s:.0}") } else { format!("{s:.3}") }
}

impl Root {
    /// The value a field path's steps start from.
    pub(crate) fn resolve<'a>(self, input: &MatchInput<'a>, steps: &[Step]) -> Option<&'a Value> {
        match self {
            Root::Payload => walk_steps(steps, input.payload),
            Root::Trigger => walk_steps(steps, input.trigger),
            Root::Event => input.event_steps(steps),
        }
    }
}
