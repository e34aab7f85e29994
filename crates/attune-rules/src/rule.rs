//! A rule compiled once when saved: checked refs, the condition tree with parsed paths, compiled
//! regexes and lowercased strings, and the action parameters with parsed templates.

use crate::condition::{self, Node};
use crate::context::{EventDocument, MatchInput, trigger_document};
use crate::error::{RuleError, RuleErrorKind};
use crate::explain::{ConditionExplanation, Explanation};
use crate::operator::now_seconds;
use crate::path::{Path, Step, walk_steps};
use crate::spec::RuleSpec;
use crate::template::{RootCheck, Roots, Template, TemplateError, TemplateProblem};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// What action templates may read besides the event.
#[derive(Debug, Clone, Copy)]
pub struct ActionContext<'a> {
    /// The config of the rule's pack, read by `{{ pack.config.* }}`.
    pub pack_config: &'a Value,
    /// `{{ system.timestamp }}` (RFC 3339, UTC, milliseconds).
    pub now: DateTime<Utc>,
}

impl<'a> ActionContext<'a> {
    /// A context at the current time.
    pub fn new(pack_config: &'a Value) -> Self {
        ActionContext { pack_config, now: Utc::now() }
    }
}

/// A rule ready to match. Cheap to clone (regexes are shared). Compile with [`compile`].
#[derive(Debug, Clone)]
pub struct CompiledRule {
    spec: RuleSpec,
    pack: String,
    conditions: Option<Node>,
    parameters: Template,
    /// `{"ref", "params"}`: what the rule reads under `trigger.*`, built once.
    trigger_document: Value,
}

/// Template roots of action parameters and what each allows under it.
const ACTION_ROOTS: &[(&str, RootCheck)] =
    &[("event", any_steps), ("trigger", any_steps), ("pack", pack_steps), ("system", system_steps)];

fn any_steps(_: &[Step]) -> Result<(), String> {
    Ok(())
}

fn pack_steps(steps: &[Step]) -> Result<(), String> {
    match steps {
        [Step::Key(k), ..] if k == "config" => Ok(()),
        [Step::Key(k)] if k == "ref" => Ok(()),
        _ => Err("`pack` has `pack.config.<key>` and `pack.ref`".into()),
    }
}

fn system_steps(steps: &[Step]) -> Result<(), String> {
    match steps {
        [Step::Key(k)] if k == "timestamp" => Ok(()),
        _ => Err("`system` has only `system.timestamp`".into()),
    }
}

/// Longest ref (`pack.name`) of a rule, trigger or action, in bytes: short enough for URL paths
/// and index keys of every store.
pub const MAX_REF_BYTES: usize = 128;

/// `pack.name`, each part letters, digits and `_` (as pack refs are), at most [`MAX_REF_BYTES`].
fn valid_ref(s: &str) -> bool {
    let part = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    s.len() <= MAX_REF_BYTES && s.split_once('.').is_some_and(|(pack, name)| part(pack) && part(name))
}

/// Checks and compiles a rule. Errors name the rule and the field, e.g.
/// `rule mypack.r: conditions.all[0].operator: unknown operator ...`.
pub fn compile(spec: RuleSpec) -> Result<CompiledRule, RuleError> {
    let rule_ref = spec.rule_ref.as_str();
    let bad_ref = |field: &str, value: &str| {
        let message = if value.is_empty() {
            "must not be empty; expected `pack.name`".to_owned()
        } else if value.len() > MAX_REF_BYTES {
            format!("is {} bytes long; a ref is at most {MAX_REF_BYTES}", value.len())
        } else {
            format!("`{value}` is not `pack.name` (letters, digits and `_` on each side of one `.`)")
        };
        RuleError::new(rule_ref, field, RuleErrorKind::BadRef, message)
    };
    if !valid_ref(rule_ref) {
        return Err(bad_ref("ref", rule_ref));
    }
    if !valid_ref(&spec.trigger) {
        return Err(bad_ref("trigger", &spec.trigger));
    }
    if !valid_ref(&spec.action.action_ref) {
        return Err(bad_ref("action.ref", &spec.action.action_ref));
    }
    let conditions = condition::compile(rule_ref, spec.conditions.as_ref())?;
    let parameters = Value::Object(spec.action.parameters.clone());
    let parameters = Template::compile(&parameters, String::new(), &Roots::Only(ACTION_ROOTS))
        .map_err(|e| template_error(rule_ref, e))?;
    let pack = rule_ref.split_once('.').map(|(p, _)| p.to_owned()).unwrap_or_default();
    let trigger_document = trigger_document(&spec.trigger, &spec.trigger_params);
    Ok(CompiledRule { spec, pack, conditions, parameters, trigger_document })
}

fn template_error(rule_ref: &str, e: TemplateError) -> RuleError {
    let kind = match e.problem {
        TemplateProblem::Missing { .. } => RuleErrorKind::MissingTemplateValue,
        TemplateProblem::UnknownRoot { .. } => RuleErrorKind::UnknownRoot,
        TemplateProblem::BadPath(_) => RuleErrorKind::BadPath,
        _ => RuleErrorKind::BadTemplate,
    };
    let field = if e.at.is_empty() { "action.parameters".to_owned() } else { format!("action.parameters.{}", e.at) };
    RuleError::new(rule_ref, field, kind, e.problem.to_string())
}

impl CompiledRule {
    /// The rule as written.
    pub fn spec(&self) -> &RuleSpec {
        &self.spec
    }

    /// `pack.name`.
    pub fn rule_ref(&self) -> &str {
        &self.spec.rule_ref
    }

    /// The pack part of the ref (whose config `{{ pack.config.* }}` reads).
    pub fn pack(&self) -> &str {
        &self.pack
    }

    /// The trigger ref this rule listens on.
    pub fn trigger(&self) -> &str {
        &self.spec.trigger
    }

    /// The rule's `trigger_params`.
    pub fn trigger_params(&self) -> &Map<String, Value> {
        &self.spec.trigger_params
    }

    /// What this rule sees of an event with `payload`, evaluated at `now` (the `now` of
    /// `timediff_*`): the documents of [`crate::context`]. The only way to build a [`MatchInput`].
    pub fn input<'a>(&'a self, payload: &'a Value, event: &'a EventDocument, now: DateTime<Utc>) -> MatchInput<'a> {
        MatchInput { payload, trigger: &self.trigger_document, event: event.as_value(), now }
    }

    /// The action to enforce on a match.
    pub fn action_ref(&self) -> &str {
        &self.spec.action.action_ref
    }

    /// Whether the rule is enabled.
    pub fn enabled(&self) -> bool {
        self.spec.enabled
    }

    /// The same rule, enabled or disabled (no recompilation).
    pub fn with_enabled(mut self, enabled: bool) -> Self {
        self.spec.enabled = enabled;
        self
    }

    /// Whether the conditions hold for `input` (`enabled` is not consulted). Short-circuits and
    /// allocates nothing, except for case-insensitive operators on non-ASCII text.
    pub fn matches(&self, input: &MatchInput<'_>) -> bool {
        match &self.conditions {
            None => true,
            Some(node) => node.eval(input, now_seconds(&input.now)),
        }
    }

    /// Evaluates every condition and says why each held or not (`matched` equals [`Self::matches`]).
    pub fn explain(&self, input: &MatchInput<'_>) -> Explanation {
        let conditions = self.conditions.as_ref().map(|node| node.explain(input, now_seconds(&input.now)));
        Explanation {
            rule_ref: self.spec.rule_ref.clone(),
            trigger: self.spec.trigger.clone(),
            enabled: self.spec.enabled,
            matched: conditions.as_ref().is_none_or(ConditionExplanation::held),
            conditions,
        }
    }

    /// Resolves the action parameters' templates for `input`. A template naming a missing value is
    /// an error with the rule ref and the parameter path (`action.parameters.message`).
    pub fn render_action(&self, input: &MatchInput<'_>, ctx: &ActionContext<'_>) -> Result<Value, RuleError> {
        let resolve = |path: &Path| -> Option<Cow<'_, Value>> {
            match path.root.as_str() {
                "event" => input.event_steps(&path.steps).map(Cow::Borrowed),
                "trigger" => walk_steps(&path.steps, input.trigger).map(Cow::Borrowed),
                "pack" => match path.steps.split_first() {
                    Some((Step::Key(k), rest)) if k == "config" => walk_steps(rest, ctx.pack_config).map(Cow::Borrowed),
                    Some((Step::Key(k), [])) if k == "ref" => Some(Cow::Owned(Value::String(self.pack.clone()))),
                    _ => None,
                },
                "system" => Some(Cow::Owned(Value::String(ctx.now.to_rfc3339_opts(SecondsFormat::Millis, true)))),
                _ => None,
            }
        };
        self.parameters.render(&resolve).map_err(|e| template_error(&self.spec.rule_ref, e))
    }

    /// Explanation plus rendered action, as the API's dry run returns them.
    pub fn dry_run(&self, input: &MatchInput<'_>, ctx: &ActionContext<'_>) -> DryRun {
        let explanation = self.explain(input);
        let (parameters, action_error) = match self.render_action(input, ctx) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(DryRunError { field: e.field, message: e.message, code: e.kind.code() })),
        };
        DryRun { action_ref: self.spec.action.action_ref.clone(), explanation, parameters, action_error }
    }
}

/// A dry run: why the rule matched or not, and the action it would enforce.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRun {
    /// The action ref.
    pub action_ref: String,
    /// Condition by condition.
    pub explanation: Explanation,
    /// The rendered action parameters (rendered whether or not the rule matched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Why the parameters could not be rendered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_error: Option<DryRunError>,
}

/// A template error in a dry run, shaped like the API's error body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DryRunError {
    /// [`RuleErrorKind::code`].
    pub code: &'static str,
    /// E.g. `action.parameters.message`.
    pub field: String,
    /// What is missing.
    pub message: String,
}
