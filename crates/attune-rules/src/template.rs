//! `{{ path }}` templates inside JSON values (action parameters, sensor config).
//!
//! - A string whose trimmed text is exactly one `{{ path }}` takes the JSON type of the value it
//!   names (`"{{ event.payload.status }}"` renders as the number `503`).
//! - Templates inside longer strings render as text: strings as they are, anything else as compact
//!   JSON (`null`, `true`, `[1,2]`).
//! - A path that names nothing is an error, never an empty string; so is an unclosed `{{`, an
//!   empty `{{ }}` and a path that does not parse. A lone `}}` is plain text.
//! - Paths are dot paths with `[n]` indexes (see [`lookup`]).
//! - `{{ path | default(JSON) }}` gives the JSON literal when the path names nothing, e.g.
//!   `"{{ event.payload.note | default(\"none\") }}"` or `"{{ event.payload.n | default(0) }}"`
//!   (typed like any whole template); a value that is there, `null` included, is kept.
//!
//! [`render`] works against any context value (the host uses it for sensor config with
//! `{"pack": {"config": ..}}`); rules compile their action parameters once and render them with
//! the roots `event`, `trigger`, `pack` (`pack.config.*`, `pack.ref`) and `system`
//! (`system.timestamp`).

use crate::path::{Path, PathError, Step};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

pub use crate::path::lookup;

/// A template problem, with where it is inside the rendered value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TemplateError {
    /// Path inside the value being rendered, e.g. `message` or `hosts[1]`; empty for the value itself.
    pub at: String,
    /// What is wrong.
    pub problem: TemplateProblem,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.at.is_empty() { write!(f, "{}", self.problem) } else { write!(f, "{}: {}", self.at, self.problem) }
    }
}

/// What is wrong with a template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateProblem {
    /// `{{` without a matching `}}`.
    #[error("unclosed `{{{{` in `{text}`")]
    Unclosed {
        /// The whole string.
        text: String,
    },
    /// `{{ }}`.
    #[error("empty `{{{{ }}}}` in `{text}`")]
    Empty {
        /// The whole string.
        text: String,
    },
    /// The path inside `{{ }}` does not parse, or names something the root does not have.
    #[error("template {0}")]
    BadPath(PathError),
    /// The path starts with a root the context does not offer.
    #[error("template `{{{{ {path} }}}}`: unknown root `{root}` (roots: {known}){hint}")]
    UnknownRoot {
        /// The path as written.
        path: String,
        /// Its first key.
        root: String,
        /// The roots on offer.
        known: String,
        /// A suggestion, or empty.
        hint: String,
    },
    /// What follows `|` is not `default(<JSON>)`.
    #[error("template `{{{{ {text} }}}}`: {reason}")]
    BadFilter {
        /// The expression as written.
        text: String,
        /// What is wrong.
        reason: String,
    },
    /// At render time, the path names nothing (and no default was given).
    #[error("template `{{{{ {path} }}}}` names a missing value")]
    Missing {
        /// The path as written.
        path: String,
    },
}

/// Renders every string in `value` against `context` (e.g. `{"pack": {"config": {..}}}`): the first
/// key of each path is looked up in `context`. Parses on every call; rules use a compiled form.
pub fn render(value: &Value, context: &Value) -> Result<Value, TemplateError> {
    let template = Template::compile(value, String::new(), &Roots::Any)?;
    template.render(&|path: &Path| {
        let first = context.as_object()?.get(&path.root)?;
        path.walk(first).map(Cow::Borrowed)
    })
}

/// Checks the steps under a root; `Err(reason)` when the root has nothing there.
pub(crate) type RootCheck = fn(&[Step]) -> Result<(), String>;

/// Which roots a template may use.
#[derive(Debug)]
pub(crate) enum Roots<'a> {
    /// Any first key (checked at render time against the context).
    Any,
    /// Only these, each with a check of the path under it (`Err(reason)` when invalid).
    Only(&'a [(&'a str, RootCheck)]),
}

/// A parsed `{{ path }}` or `{{ path | default(value) }}`.
#[derive(Debug, Clone)]
pub(crate) struct Expr {
    text: String,
    path: Path,
    default: Option<Value>,
}

impl Expr {
    /// The value the expression gives: what the path names, else the default.
    fn value<'v, R>(&'v self, resolve: &R, at: &str) -> Result<Cow<'v, Value>, TemplateError>
    where
        R: Fn(&Path) -> Option<Cow<'v, Value>>,
    {
        match (resolve(&self.path), &self.default) {
            (Some(found), _) => Ok(found),
            (None, Some(default)) => Ok(Cow::Borrowed(default)),
            (None, None) => Err(missing(at, self)),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Part {
    Text(String),
    Expr(Expr),
}

/// A JSON value with its templates parsed; subtrees without templates stay literal.
#[derive(Debug, Clone)]
pub(crate) enum Template {
    Literal(Value),
    Whole { at: String, expr: Expr },
    Text { at: String, parts: Vec<Part> },
    Array(Vec<Template>),
    Object(Vec<(String, Template)>),
}

fn join_key(at: &str, key: &str) -> String {
    if at.is_empty() { key.to_owned() } else { format!("{at}.{key}") }
}

impl Template {
    /// Parses every string in `value`; `at` is where `value` sits, for error messages.
    pub(crate) fn compile(value: &Value, at: String, roots: &Roots<'_>) -> Result<Template, TemplateError> {
        Ok(match value {
            Value::String(s) => parse_string(s, at, roots)?.unwrap_or_else(|| Template::Literal(value.clone())),
            Value::Array(items) => {
                let items = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| Template::compile(item, format!("{at}[{i}]"), roots))
                    .collect::<Result<Vec<_>, _>>()?;
                if items.iter().all(|t| matches!(t, Template::Literal(_))) {
                    Template::Literal(value.clone())
                } else {
                    Template::Array(items)
                }
            }
            Value::Object(map) => {
                let entries = map
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), Template::compile(v, join_key(&at, k), roots)?)))
                    .collect::<Result<Vec<_>, TemplateError>>()?;
                if entries.iter().all(|(_, t)| matches!(t, Template::Literal(_))) {
                    Template::Literal(value.clone())
                } else {
                    Template::Object(entries)
                }
            }
            other => Template::Literal(other.clone()),
        })
    }

    /// Renders with `resolve` giving the value a path names (`None`: missing).
    pub(crate) fn render<'v, R>(&'v self, resolve: &R) -> Result<Value, TemplateError>
    where
        R: Fn(&Path) -> Option<Cow<'v, Value>>,
    {
        Ok(match self {
            Template::Literal(v) => v.clone(),
            Template::Whole { at, expr } => expr.value(resolve, at)?.into_owned(),
            Template::Text { at, parts } => {
                let mut out = String::new();
                for part in parts {
                    match part {
                        Part::Text(text) => out.push_str(text),
                        Part::Expr(expr) => match expr.value(resolve, at)?.as_ref() {
                            Value::String(s) => out.push_str(s),
                            other => out.push_str(&other.to_string()),
                        },
                    }
                }
                Value::String(out)
            }
            Template::Array(items) => Value::Array(items.iter().map(|t| t.render(resolve)).collect::<Result<_, _>>()?),
            Template::Object(entries) => Value::Object(
                entries.iter().map(|(k, t)| Ok((k.clone(), t.render(resolve)?))).collect::<Result<Map<_, _>, _>>()?,
            ),
        })
    }
}

fn missing(at: &str, expr: &Expr) -> TemplateError {
    TemplateError { at: at.to_owned(), problem: TemplateProblem::Missing { path: expr.text.clone() } }
}

/// `None` when the string holds no template.
fn parse_string(s: &str, at: String, roots: &Roots<'_>) -> Result<Option<Template>, TemplateError> {
    if !s.contains("{{") {
        return Ok(None);
    }
    let fail = |at: &str, problem| TemplateError { at: at.to_owned(), problem };
    let trimmed = s.trim();
    if let Some(inner) = trimmed.strip_prefix("{{").and_then(|t| t.strip_suffix("}}"))
        && !inner.contains("{{")
        && !inner.contains("}}")
    {
        let expr = parse_expr(inner, s, roots).map_err(|p| fail(&at, p))?;
        return Ok(Some(Template::Whole { at, expr }));
    }
    let mut parts = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let end = rest[start + 2..]
            .find("}}")
            .map(|n| n + start + 2)
            .ok_or_else(|| fail(&at, TemplateProblem::Unclosed { text: s.to_owned() }))?;
        if start > 0 {
            parts.push(Part::Text(rest[..start].to_owned()));
        }
        parts.push(Part::Expr(parse_expr(&rest[start + 2..end], s, roots).map_err(|p| fail(&at, p))?));
        rest = &rest[end + 2..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_owned()));
    }
    Ok(Some(Template::Text { at, parts }))
}

fn parse_expr(inner: &str, whole: &str, roots: &Roots<'_>) -> Result<Expr, TemplateProblem> {
    let text = inner.trim();
    if text.is_empty() {
        return Err(TemplateProblem::Empty { text: whole.to_owned() });
    }
    let (path_text, default) = match text.split_once('|') {
        Some((path_text, filter)) => (path_text.trim_end(), Some(parse_default(text, filter.trim())?)),
        None => (text, None),
    };
    let path = Path::parse(path_text).map_err(TemplateProblem::BadPath)?;
    if let Roots::Only(allowed) = roots {
        let Some((_, check)) = allowed.iter().find(|(name, _)| *name == path.root) else {
            let known = allowed.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
            let hint = if path.root == "payload" { format!("; did you mean `event.{text}`?") } else { String::new() };
            return Err(TemplateProblem::UnknownRoot { path: text.to_owned(), root: path.root.clone(), known, hint });
        };
        check(&path.steps).map_err(|reason| TemplateProblem::BadPath(PathError { path: text.to_owned(), reason }))?;
    }
    Ok(Expr { text: text.to_owned(), path, default })
}

/// The JSON literal of `default(<JSON>)`, the one filter there is.
fn parse_default(text: &str, filter: &str) -> Result<Value, TemplateProblem> {
    let fail = |reason: String| TemplateProblem::BadFilter { text: text.to_owned(), reason };
    let name = filter.split('(').next().unwrap_or_default().trim();
    if name != "default" {
        return Err(fail(format!("unknown filter `{name}` (filters: default)")));
    }
    let argument = filter["default".len()..]
        .trim()
        .strip_prefix('(')
        .and_then(|a| a.strip_suffix(')'))
        .ok_or_else(|| fail("write `default(<JSON value>)`, e.g. `default(\"none\")` or `default(0)`".into()))?;
    serde_json::from_str(argument.trim())
        .map_err(|e| fail(format!("the default `{}` is not a JSON value ({e})", argument.trim())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_templates_keep_their_type() {
        let ctx = json!({"pack": {"config": {"port": 8080, "hosts": ["a", "b"], "token": "t", "n": null}}});
        let out = render(
            &json!({
                "port": " {{ pack.config.port }} ",
                "url": "http://{{pack.config.hosts[1]}}:{{ pack.config.port }}/",
                "n": 1,
                "list": ["{{ pack.config.hosts }}", "x"],
                "null": "{{ pack.config.n }}",
                "text": "n={{ pack.config.n }} }} {",
            }),
            &ctx,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({
                "port": 8080,
                "url": "http://b:8080/",
                "n": 1,
                "list": [["a", "b"], "x"],
                "null": null,
                "text": "n=null }} {",
            })
        );
    }

    #[test]
    fn defaults_fill_in_missing_values_only() {
        let ctx = json!({"pack": {"config": {"port": 8080, "n": null}}});
        let out = render(
            &json!({
                "port": "{{ pack.config.port | default(80) }}",
                "missing": "{{ pack.config.nope | default(80) }}",
                "typed": "{{ pack.config.nope | default({\"a\": [1]}) }}",
                "null_is_a_value": "{{ pack.config.n | default(1) }}",
                "text": "note: {{ pack.config.note|default(\"none\") }}",
            }),
            &ctx,
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"port": 8080, "missing": 80, "typed": {"a": [1]}, "null_is_a_value": null, "text": "note: none"})
        );
        let err = render(&json!("{{ pack.config.x | upper }}"), &ctx).unwrap_err();
        assert_eq!(
            err.to_string(),
            "template `{{ pack.config.x | upper }}`: unknown filter `upper` (filters: default)"
        );
        let err = render(&json!("{{ pack.config.x | default(none) }}"), &ctx).unwrap_err();
        assert!(err.to_string().contains("the default `none` is not a JSON value"), "{err}");
        let err = render(&json!("{{ pack.config.x | default }}"), &ctx).unwrap_err();
        assert!(err.to_string().contains("write `default(<JSON value>)`"), "{err}");
    }

    #[test]
    fn errors_say_where_and_what() {
        let ctx = json!({"pack": {"config": {"port": 8080}}});
        let err = render(&json!({"a": ["{{ pack.config.nope }}"]}), &ctx).unwrap_err();
        assert_eq!(err.at, "a[0]");
        assert_eq!(err.to_string(), "a[0]: template `{{ pack.config.nope }}` names a missing value");
        let err = render(&json!("x {{ pack.config.port"), &ctx).unwrap_err();
        assert!(matches!(err.problem, TemplateProblem::Unclosed { .. }), "{err}");
        let err = render(&json!({"k": "a {{  }} b"}), &ctx).unwrap_err();
        assert!(matches!(err.problem, TemplateProblem::Empty { .. }), "{err}");
        let err = render(&json!("{{ pack..config }}"), &ctx).unwrap_err();
        assert!(matches!(err.problem, TemplateProblem::BadPath(_)), "{err}");
        assert!(render(&json!("{{ other.x }}"), &ctx).is_err());
    }

    #[test]
    fn restricted_roots() {
        fn any(_: &[Step]) -> Result<(), String> {
            Ok(())
        }
        fn only_ts(steps: &[Step]) -> Result<(), String> {
            match steps {
                [Step::Key(k)] if k == "timestamp" => Ok(()),
                _ => Err("`system` has only `system.timestamp`".into()),
            }
        }
        let roots = Roots::Only(&[("event", any), ("system", only_ts)]);
        assert!(Template::compile(&json!("{{ event.payload.x }}"), String::new(), &roots).is_ok());
        let err = Template::compile(&json!({"m": "{{ payload.x }}"}), String::new(), &roots).unwrap_err();
        assert_eq!(err.at, "m");
        assert!(err.to_string().contains("did you mean `event.payload.x`"), "{err}");
        let err = Template::compile(&json!("{{ system.time }}"), String::new(), &roots).unwrap_err();
        assert!(err.to_string().contains("system.timestamp"), "{err}");
    }
}
