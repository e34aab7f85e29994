//! Rule engine (spec section 4): rules are checked and compiled once when saved, indexed by
//! trigger, matched against events without allocating, explained condition by condition, and their
//! action parameters rendered from `{{ .. }}` templates.
//!
//! ```
//! use attune_rules::{compile, ActionContext, EventDocument, RuleSpec};
//! use attune_rules::chrono::Utc;
//! use serde_json::json;
//!
//! let spec = RuleSpec::from_yaml_str(r#"
//! ref: mypack.page_on_5xx
//! trigger: mypack.http_status
//! conditions:
//!   all:
//!     - {field: payload.status, operator: greater_than, value: 499}
//!     - not: {field: payload.maintenance, operator: equals, value: true}
//! action: {ref: core.echo, parameters: {message: "{{ event.payload.host }} is down", status: "{{ event.payload.status }}"}}
//! "#).unwrap();
//! let rule = compile(spec).unwrap();
//!
//! let payload = json!({"status": 503, "host": "web-1"});
//! let event = EventDocument::new("e1", "mypack.http_status", "sensor:mypack.poller", Utc::now());
//! let input = rule.input(&payload, &event, Utc::now());
//! assert!(rule.matches(&input));
//! let params = rule.render_action(&input, &ActionContext::new(&json!({}))).unwrap();
//! assert_eq!(params, json!({"message": "web-1 is down", "status": 503}));
//! ```
//!
//! # Conditions
//!
//! `conditions` is omitted, `null` or `{}` (always matches), or one node: `{all: [..]}` (every
//! member holds; an empty list holds), `{any: [..]}` (some member holds; an empty list does not),
//! `{not: node}` (the member does not hold) or a leaf `{field, operator, value}`. Nesting is
//! limited to [`MAX_DEPTH`] levels and [`MAX_NODES`] nodes.
//!
//! Field paths are dot paths with `[n]` indexes rooted at `payload`, `trigger` or `event`
//! (`payload.tags[0]`, `event.id`, `trigger.params.interval`). A key step reads only objects and
//! an index step only arrays. A JSON `null` is a present value, not a missing field.
//!
//! # Operators
//!
//! "Missing" means the path names nothing; "mismatch" means the found value (or the pair) has a type
//! the operator cannot use. Both are **false** for every operator except `not_exists`, which is
//! true on a missing field. That includes the negative operators: `not_equals`, `not_in` and
//! `not_contains` are false on a missing field. `not` inverts its member's result *whatever the
//! reason*, so `not: {field: payload.x, operator: equals, value: 1}` holds when `payload.x` is
//! missing. The `value` column is what [`compile`] accepts; anything else is rejected.
//!
//! | operator | `value` | holds when the found value … | mismatch (false) |
//! |---|---|---|---|
//! | `equals` | any JSON | equals `value` (JSON equality, numbers numerically: `1 == 1.0`, also inside arrays and objects) | never |
//! | `not_equals` | any JSON | is present and does not equal `value` (`"5"` vs `5` holds) | never |
//! | `iequals` | string | is a string equal to `value` ignoring case | not a string |
//! | `contains` | any JSON | string: contains `value` as a substring; array: has a member equal to `value`; object: has the key `value` | not string/array/object; string or object with a non-string `value` |
//! | `not_contains` | any JSON | is present, not a mismatch, and `contains` does not hold | as `contains` |
//! | `icontains` | string | string: contains `value` ignoring case; array: has a string member equal to `value` ignoring case; object: has such a key | not string/array/object |
//! | `starts_with`, `ends_with` | string | is a string with that prefix / suffix | not a string |
//! | `istarts_with`, `iends_with` | string | the same, ignoring case | not a string |
//! | `greater_than`, `greater_or_equal`, `less_than`, `less_or_equal` | number or string | number `value`: is a number in that order (numerically); string `value`: is a string in that order (byte-wise lexicographic, which orders RFC 3339 timestamps of one format) | number vs string, or any other type; numeric strings are not converted |
//! | `in` | array | equals (as `equals`) some member of `value` | never |
//! | `not_in` | array | is present and equals no member of `value` | never |
//! | `matches` | string (regex) | is a string in which the regex matches somewhere (unanchored search; use `^…$` to anchor); Rust `regex` syntax, compiled size at most [`REGEX_SIZE_LIMIT`] | not a string |
//! | `wildcard` | string (glob) | is a string matching the whole glob: `*` any run of characters (also `/` and none), `?` one character, `[abc]`, `[a-z]`, `[!abc]`/`[^abc]`, `\*` a literal `*`; case-sensitive; matched by a small glob matcher, not a regex | not a string |
//! | `exists` | none | is present (even `null`) | never |
//! | `not_exists` | none | — holds only when the field is missing | never |
//! | `timediff_lt`, `timediff_gt` | number ≥ 0 (seconds) | is a time with `\|now − t\|` less / greater than `value` seconds; a time is an RFC 3339 string or a number of seconds since the epoch | not a string or number, or a string that is not RFC 3339 |
//!
//! Case-insensitive operators lowercase both sides character by character (Unicode simple
//! lowercase, no locale), the expected side once at compile time.
//!
//! # Cost
//!
//! [`CompiledRule::matches`] follows pre-parsed paths, short-circuits, and allocates nothing except
//! when a case-insensitive operator meets non-ASCII text. Regexes and globs are compiled, expected
//! strings lowercased, once in [`compile`]. [`CompiledRule::explain`] evaluates every node and
//! allocates; use it for dry runs and `rule test`, not on the event path.
//!
//! # Templates
//!
//! See [`template`]: in action parameters the roots are `event` (`event.payload.*`, `event.id`,
//! ..), `trigger` (`trigger.ref`, `trigger.params.*`), `pack` (`pack.config.*`, `pack.ref`) and
//! `system` (`system.timestamp`), checked at compile time; a missing value at render time is a
//! [`RuleError`] naming the rule and the parameter (`action.parameters.message`).

mod cli;
mod condition;
pub mod context;
mod error;
mod explain;
mod glob;
mod index;
mod operator;
mod path;
mod rule;
mod spec;
pub mod template;

#[cfg(test)]
mod tests;

pub use cli::{RuleTestOutcome, rule_test, rule_test_with};
pub use condition::{MAX_DEPTH, MAX_NODES};
pub use context::{EventDocument, MatchInput};
pub use error::{RuleError, RuleErrorKind, SpecFormat, SpecParseError};
pub use explain::{ConditionExplanation, Explanation, LeafExplanation, LeafOutcome, explain_text};
pub use index::RuleIndex;
pub use operator::{Operator, REGEX_DFA_SIZE_LIMIT, REGEX_SIZE_LIMIT};
pub use path::{PathError, canonical_path};
pub use rule::{ActionContext, CompiledRule, DryRun, DryRunError, MAX_REF_BYTES, compile};
pub use spec::{ActionSpec, RuleSpec};

/// Re-exported so callers give [`CompiledRule::input`] and [`ActionContext`] times of the same type.
pub use chrono;
