//! Errors at the crate's boundary: a rule that cannot be parsed, compiled or rendered.

use std::fmt;

/// What is wrong with a rule; [`RuleErrorKind::code`] gives a stable snake_case name for APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuleErrorKind {
    /// `ref`, `trigger` or `action.ref` is not `pack.name`.
    BadRef,
    /// A condition is not one of the four node shapes, or has an unknown or misplaced key.
    BadCondition,
    /// Conditions nest deeper, or are more numerous, than the engine accepts.
    TooComplex,
    /// The `operator` is not one of the known ones.
    UnknownOperator,
    /// A field path or template path does not parse.
    BadPath,
    /// A field path or template path starts with a root the engine does not know.
    UnknownRoot,
    /// The operator needs a `value` and none is given.
    MissingValue,
    /// The operator takes no `value` and one is given.
    UnexpectedValue,
    /// The `value` has a JSON type the operator cannot use.
    WrongValueType,
    /// `matches` with a pattern the regex engine rejects.
    BadRegex,
    /// `matches` with a pattern that compiles beyond the size limit.
    RegexTooBig,
    /// `wildcard` with a malformed glob.
    BadGlob,
    /// Action parameters with a template that does not parse (unclosed `{{`, empty expression).
    BadTemplate,
    /// At render time, a template names a value that is not there.
    MissingTemplateValue,
}

impl RuleErrorKind {
    /// Stable snake_case name, e.g. `unknown_operator`.
    pub fn code(self) -> &'static str {
        match self {
            RuleErrorKind::BadRef => "bad_ref",
            RuleErrorKind::BadCondition => "bad_condition",
            RuleErrorKind::TooComplex => "too_complex",
            RuleErrorKind::UnknownOperator => "unknown_operator",
            RuleErrorKind::BadPath => "bad_path",
            RuleErrorKind::UnknownRoot => "unknown_root",
            RuleErrorKind::MissingValue => "missing_value",
            RuleErrorKind::UnexpectedValue => "unexpected_value",
            RuleErrorKind::WrongValueType => "wrong_value_type",
            RuleErrorKind::BadRegex => "bad_regex",
            RuleErrorKind::RegexTooBig => "regex_too_big",
            RuleErrorKind::BadGlob => "bad_glob",
            RuleErrorKind::BadTemplate => "bad_template",
            RuleErrorKind::MissingTemplateValue => "missing_template_value",
        }
    }
}

impl fmt::Display for RuleErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A rule rejected at compile time, or an action that cannot be rendered for an event.
///
/// Displays as `rule mypack.r: conditions.all[0].operator: unknown operator ...`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("rule {rule_ref}: {field}: {message}")]
pub struct RuleError {
    /// The rule's `ref` as written (possibly itself the problem).
    pub rule_ref: String,
    /// Where in the rule, e.g. `conditions.all[1].any[0].value` or `action.parameters.message`.
    pub field: String,
    /// What is wrong, for people.
    pub message: String,
    /// What is wrong, for programs.
    pub kind: RuleErrorKind,
}

impl RuleError {
    pub(crate) fn new(
        rule_ref: &str,
        field: impl Into<String>,
        kind: RuleErrorKind,
        message: impl Into<String>,
    ) -> Self {
        RuleError { rule_ref: rule_ref.to_owned(), field: field.into(), message: message.into(), kind }
    }
}

/// Which text format a rule was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpecFormat {
    /// YAML (also accepts JSON documents).
    Yaml,
    /// JSON.
    Json,
}

/// A rule document that does not parse into a [`crate::RuleSpec`] (syntax, unknown key, wrong type).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rule {}: {message}", match format { SpecFormat::Yaml => "YAML", SpecFormat::Json => "JSON" })]
pub struct SpecParseError {
    /// The format that was being read.
    pub format: SpecFormat,
    /// One-based line of the problem, when the parser knows it.
    pub line: Option<usize>,
    /// One-based column of the problem, when the parser knows it.
    pub column: Option<usize>,
    /// The parser's message (which already says the line and column when it has them).
    pub message: String,
}
