//! Operators: their names, their compiled form (expected value checked and prepared once) and
//! their evaluation against a found value. See the crate docs for the semantics table.

use crate::error::RuleErrorKind;
use crate::glob::Glob;
use chrono::{DateTime, Utc};
use regex::{Regex, RegexBuilder};
use serde_json::{Number, Value};
use std::cmp::Ordering;
use std::fmt;

/// Compiled size limit of one `matches` pattern (the regex crate's default is 10 MiB).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Lazy-DFA cache limit of one pattern, per matching thread.
pub const REGEX_DFA_SIZE_LIMIT: usize = 1024 * 1024;

macro_rules! operators {
    ($($variant:ident => $name:literal,)*) => {
        /// A condition operator (spec section 4).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Operator {
            $(#[doc = concat!("`", $name, "`")] $variant,)*
        }

        impl Operator {
            /// Every operator, in the spec's order.
            pub const ALL: &'static [Operator] = &[$(Operator::$variant,)*];

            /// The name rules use, e.g. `greater_than`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Operator::$variant => $name,)*
                }
            }

            /// The operator a rule names, if it is a known one.
            pub fn from_name(name: &str) -> Option<Operator> {
                match name {
                    $($name => Some(Operator::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

operators! {
    Equals => "equals",
    NotEquals => "not_equals",
    IEquals => "iequals",
    Contains => "contains",
    NotContains => "not_contains",
    IContains => "icontains",
    StartsWith => "starts_with",
    IStartsWith => "istarts_with",
    EndsWith => "ends_with",
    IEndsWith => "iends_with",
    GreaterThan => "greater_than",
    GreaterOrEqual => "greater_or_equal",
    LessThan => "less_than",
    LessOrEqual => "less_or_equal",
    In => "in",
    NotIn => "not_in",
    Matches => "matches",
    Wildcard => "wildcard",
    Exists => "exists",
    NotExists => "not_exists",
    TimediffLt => "timediff_lt",
    TimediffGt => "timediff_gt",
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The closest known operator name to a misspelt one, if any is close.
pub(crate) fn suggest(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    Operator::ALL
        .iter()
        .map(|op| (edit_distance(&name, op.as_str()), op.as_str()))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// An operator with its expected value checked and prepared (lowercased, parsed, compiled).
#[derive(Debug, Clone)]
pub(crate) enum Check {
    Equals(Value),
    NotEquals(Value),
    /// Expected string, lowercased.
    IEquals(String),
    Contains(Value),
    NotContains(Value),
    /// Expected string, lowercased.
    IContains(String),
    StartsWith(String),
    IStartsWith(String),
    EndsWith(String),
    IEndsWith(String),
    Compare(Ordering, bool, Scalar),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Regex(Regex),
    Glob(Glob),
    Exists,
    NotExists,
    TimeDiff {
        less: bool,
        seconds: f64,
    },
}

/// Expected value of an ordering operator.
#[derive(Debug, Clone)]
pub(crate) enum Scalar {
    Number(Number),
    Text(String),
}

/// The result of one leaf. `Mismatch` carries what the operator needed, e.g. `"a number"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Outcome {
    Held,
    NotHeld,
    Missing,
    Mismatch(&'static str),
}

impl Outcome {
    fn of(held: bool) -> Outcome {
        if held { Outcome::Held } else { Outcome::NotHeld }
    }

    fn invert(self) -> Outcome {
        match self {
            Outcome::Held => Outcome::NotHeld,
            Outcome::NotHeld => Outcome::Held,
            other => other,
        }
    }
}

/// Checks `value` for `op` and prepares it. Errors are (kind, message) for the `value` field.
pub(crate) fn compile_check(op: Operator, value: Option<&Value>) -> Result<Check, (RuleErrorKind, String)> {
    use Operator as O;
    let Some(value) = value else {
        return match op {
            O::Exists => Ok(Check::Exists),
            O::NotExists => Ok(Check::NotExists),
            _ => Err((RuleErrorKind::MissingValue, format!("operator `{op}` needs a `value`"))),
        };
    };
    let wrong = |need: &str| {
        (RuleErrorKind::WrongValueType, format!("operator `{op}` needs {need} value; found {}", type_name(value)))
    };
    let text = || value.as_str().ok_or_else(|| wrong("a string"));
    Ok(match op {
        O::Equals => Check::Equals(value.clone()),
        O::NotEquals => Check::NotEquals(value.clone()),
        O::Contains => Check::Contains(value.clone()),
        O::NotContains => Check::NotContains(value.clone()),
        O::IEquals => Check::IEquals(lower(text()?)),
        O::IContains => Check::IContains(lower(text()?)),
        O::StartsWith => Check::StartsWith(text()?.to_owned()),
        O::IStartsWith => Check::IStartsWith(lower(text()?)),
        O::EndsWith => Check::EndsWith(text()?.to_owned()),
        O::IEndsWith => Check::IEndsWith(lower(text()?)),
        O::GreaterThan | O::GreaterOrEqual | O::LessThan | O::LessOrEqual => {
            let scalar = match value {
                Value::Number(n) => Scalar::Number(n.clone()),
                Value::String(s) => Scalar::Text(s.clone()),
                _ => return Err(wrong("a number or a string")),
            };
            let (ordering, or_equal) = match op {
                O::GreaterThan => (Ordering::Greater, false),
                O::GreaterOrEqual => (Ordering::Greater, true),
                O::LessThan => (Ordering::Less, false),
                _ => (Ordering::Less, true),
            };
            Check::Compare(ordering, or_equal, scalar)
        }
        O::In | O::NotIn => {
            let items = value.as_array().ok_or_else(|| wrong("a list"))?.clone();
            if op == O::In { Check::In(items) } else { Check::NotIn(items) }
        }
        O::Matches => Check::Regex(build_regex(text()?)?),
        O::Wildcard => {
            Check::Glob(Glob::parse(text()?).map_err(|m| (RuleErrorKind::BadGlob, format!("invalid glob: {m}")))?)
        }
        O::TimediffLt | O::TimediffGt => match value.as_f64() {
            Some(seconds) if seconds >= 0.0 => Check::TimeDiff { less: op == O::TimediffLt, seconds },
            _ => return Err(wrong("a non-negative number of seconds as")),
        },
        O::Exists | O::NotExists => {
            return Err((RuleErrorKind::UnexpectedValue, format!("operator `{op}` takes no `value`")));
        }
    })
}

fn build_regex(pattern: &str) -> Result<Regex, (RuleErrorKind, String)> {
    RegexBuilder::new(pattern).size_limit(REGEX_SIZE_LIMIT).dfa_size_limit(REGEX_DFA_SIZE_LIMIT).build().map_err(|e| {
        match e {
            regex::Error::CompiledTooBig(limit) => (
                RuleErrorKind::RegexTooBig,
                format!("pattern compiles beyond the size limit of {limit} bytes; simplify it (fewer or smaller repetitions)"),
            ),
            other => (RuleErrorKind::BadRegex, format!("invalid regex: {other}")),
        }
    })
}

/// Lowercases character by character (no final-sigma rule), the same way on both sides.
pub(crate) fn lower(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Runs `f` on `s` lowercased; only non-ASCII text is copied.
fn lowered<R>(s: &str, f: impl FnOnce(&str) -> R) -> R {
    if s.bytes().any(|b| !b.is_ascii()) { f(&lower(s)) } else { f(s) }
}

/// `s` (any case) equals `expected` (already lowercased).
fn ieq(s: &str, expected: &str) -> bool {
    if s.is_ascii() { s.as_bytes().eq_ignore_ascii_case(expected.as_bytes()) } else { lower(s) == expected }
}

fn istarts(s: &str, expected: &str) -> bool {
    if s.is_ascii() {
        s.len() >= expected.len() && s.as_bytes()[..expected.len()].eq_ignore_ascii_case(expected.as_bytes())
    } else {
        lower(s).starts_with(expected)
    }
}

fn iends(s: &str, expected: &str) -> bool {
    if s.is_ascii() {
        s.len() >= expected.len() && s.as_bytes()[s.len() - expected.len()..].eq_ignore_ascii_case(expected.as_bytes())
    } else {
        lower(s).ends_with(expected)
    }
}

fn icontains_str(s: &str, expected: &str) -> bool {
    if expected.is_empty() {
        return true;
    }
    if s.is_ascii() {
        let needle = expected.as_bytes();
        s.as_bytes().windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
    } else {
        lowered(s, |l| l.contains(expected))
    }
}

/// JSON type name for messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Numeric order across integer and float representations (1 == 1.0).
pub(crate) fn cmp_numbers(a: &Number, b: &Number) -> Ordering {
    match (a.as_i64(), a.as_u64(), b.as_i64(), b.as_u64()) {
        (Some(x), _, Some(y), _) => x.cmp(&y),
        (_, Some(x), _, Some(y)) => x.cmp(&y),
        // A negative integer against one beyond i64::MAX.
        (Some(_), None, None, Some(_)) => Ordering::Less,
        (None, Some(_), Some(_), None) => Ordering::Greater,
        // At least one float.
        _ => {
            let (x, y) = (a.as_f64().unwrap_or(f64::NAN), b.as_f64().unwrap_or(f64::NAN));
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    }
}

/// JSON equality where numbers compare numerically, recursively.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => cmp_numbers(x, y) == Ordering::Equal,
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, p)| y.get(k).is_some_and(|q| json_eq(p, q)))
        }
        _ => a == b,
    }
}

/// Seconds since the epoch of a timestamp value: an RFC 3339 string or a number of seconds.
pub(crate) fn epoch_seconds(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            DateTime::parse_from_rfc3339(s).ok().map(|t| seconds_of(t.timestamp(), t.timestamp_subsec_nanos()))
        }
        _ => None,
    }
}

pub(crate) fn now_seconds(now: &DateTime<Utc>) -> f64 {
    seconds_of(now.timestamp(), now.timestamp_subsec_nanos())
}

fn seconds_of(secs: i64, nanos: u32) -> f64 {
    secs as f64 + f64::from(nanos) * 1e-9
}

const NEED_STRING: &str = "a string";
const NEED_TIMESTAMP: &str = "an RFC 3339 timestamp or epoch seconds";

impl Check {
    /// Evaluates against the value found at the leaf's path (`None` when the field is missing).
    /// Allocation-free except for case-insensitive operators on non-ASCII text.
    pub(crate) fn evaluate(&self, found: Option<&Value>, now: f64) -> Outcome {
        let Some(v) = found else {
            return if matches!(self, Check::NotExists) { Outcome::Held } else { Outcome::Missing };
        };
        match self {
            Check::Exists => Outcome::Held,
            Check::NotExists => Outcome::NotHeld,
            Check::Equals(e) => Outcome::of(json_eq(v, e)),
            Check::NotEquals(e) => Outcome::of(!json_eq(v, e)),
            Check::IEquals(e) => on_str(v, |s| ieq(s, e)),
            Check::Contains(e) => contains(v, e),
            Check::NotContains(e) => contains(v, e).invert(),
            Check::IContains(e) => match v {
                Value::String(s) => Outcome::of(icontains_str(s, e)),
                Value::Array(items) => Outcome::of(items.iter().any(|i| i.as_str().is_some_and(|s| ieq(s, e)))),
                Value::Object(map) => Outcome::of(map.keys().any(|k| ieq(k, e))),
                _ => Outcome::Mismatch("a string, array or object"),
            },
            Check::StartsWith(e) => on_str(v, |s| s.starts_with(e.as_str())),
            Check::IStartsWith(e) => on_str(v, |s| istarts(s, e)),
            Check::EndsWith(e) => on_str(v, |s| s.ends_with(e.as_str())),
            Check::IEndsWith(e) => on_str(v, |s| iends(s, e)),
            Check::Compare(ordering, or_equal, expected) => {
                let got = match (v, expected) {
                    (Value::Number(n), Scalar::Number(e)) => cmp_numbers(n, e),
                    (Value::String(s), Scalar::Text(e)) => s.as_str().cmp(e.as_str()),
                    (_, Scalar::Number(_)) => return Outcome::Mismatch("a number"),
                    (_, Scalar::Text(_)) => return Outcome::Mismatch(NEED_STRING),
                };
                Outcome::of(got == *ordering || (*or_equal && got == Ordering::Equal))
            }
            Check::In(items) => Outcome::of(items.iter().any(|i| json_eq(v, i))),
            Check::NotIn(items) => Outcome::of(!items.iter().any(|i| json_eq(v, i))),
            Check::Regex(re) => on_str(v, |s| re.is_match(s)),
            Check::Glob(glob) => on_str(v, |s| glob.is_match(s)),
            Check::TimeDiff { less, seconds } => match epoch_seconds(v) {
                Some(t) => {
                    let age = (now - t).abs();
                    Outcome::of(if *less { age < *seconds } else { age > *seconds })
                }
                None => Outcome::Mismatch(NEED_TIMESTAMP),
            },
        }
    }
}

fn on_str(v: &Value, f: impl FnOnce(&str) -> bool) -> Outcome {
    match v {
        Value::String(s) => Outcome::of(f(s)),
        _ => Outcome::Mismatch(NEED_STRING),
    }
}

fn contains(v: &Value, e: &Value) -> Outcome {
    match (v, e) {
        (Value::String(s), Value::String(x)) => Outcome::of(s.contains(x.as_str())),
        (Value::Array(items), _) => Outcome::of(items.iter().any(|i| json_eq(i, e))),
        (Value::Object(map), Value::String(k)) => Outcome::of(map.contains_key(k)),
        (Value::String(_) | Value::Object(_), _) => Outcome::Mismatch("an array (the value is not a string)"),
        _ => Outcome::Mismatch("a string, array or object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_round_trip_and_suggestions() {
        assert_eq!(Operator::ALL.len(), 22);
        for op in Operator::ALL {
            assert_eq!(Operator::from_name(op.as_str()), Some(*op));
        }
        assert_eq!(suggest("greter_than"), Some("greater_than"));
        assert_eq!(suggest("Equal"), Some("equals"));
        assert_eq!(suggest("frobnicate"), None);
    }

    #[test]
    fn numbers_compare_across_representations() {
        let n = |v: Value| match v {
            Value::Number(n) => n,
            _ => unreachable!(),
        };
        assert_eq!(cmp_numbers(&n(json!(1)), &n(json!(1.0))), Ordering::Equal);
        assert_eq!(cmp_numbers(&n(json!(-1)), &n(json!(u64::MAX))), Ordering::Less);
        assert_eq!(cmp_numbers(&n(json!(u64::MAX)), &n(json!(-1))), Ordering::Greater);
        assert_eq!(cmp_numbers(&n(json!(2.5)), &n(json!(2))), Ordering::Greater);
        assert!(json_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
        assert!(!json_eq(&json!("1"), &json!(1)));
    }

    #[test]
    fn case_insensitive_helpers() {
        assert!(ieq("HeLLo", "hello"));
        assert!(!ieq("hello!", "hello"));
        assert!(ieq("ÉCOLE", &lower("école")));
        assert!(istarts("Web-1", "web"));
        assert!(!istarts("We", "web"));
        assert!(iends("x.PROD", ".prod"));
        assert!(iends("ÅNGSTRÖM.PROD", ".prod"));
        assert!(icontains_str("Kernel PANIC now", "panic"));
        assert!(icontains_str("STRAẞE", &lower("straße")));
        assert!(!icontains_str("ab", "abc"));
        assert!(icontains_str("", ""));
    }

    #[test]
    fn timestamps() {
        assert_eq!(epoch_seconds(&json!("1970-01-01T00:01:00Z")), Some(60.0));
        assert_eq!(epoch_seconds(&json!("1970-01-01T01:01:00+01:00")), Some(60.0));
        assert_eq!(epoch_seconds(&json!(60)), Some(60.0));
        assert_eq!(epoch_seconds(&json!("yesterday")), None);
        assert_eq!(epoch_seconds(&json!(true)), None);
    }
}
