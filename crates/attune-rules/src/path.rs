//! Dot paths with `[n]` indexes (`payload.tags[0]`, `pack.config.hosts[1].name`), parsed once.
//!
//! Syntax: a first key (the root), then any number of `.key` and `[n]` steps. A key is one or more
//! characters other than `.`, `[`, `]` and whitespace; `n` is a non-negative decimal integer. A key
//! step only reads objects and an index step only reads arrays: `payload.0` is the key `"0"`, never
//! the first element of an array.

use serde_json::Value;
use std::fmt;

/// One step of a path after its root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Key(String),
    Index(usize),
}

/// A parsed path: its root key and the steps under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path {
    pub(crate) root: String,
    pub(crate) steps: Vec<Step>,
}

/// Why a path does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad path `{path}`: {reason}")]
pub struct PathError {
    /// The path as written.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Path {
    /// Parses `text`; the whole text must be a path (no surrounding whitespace).
    pub(crate) fn parse(text: &str) -> Result<Path, PathError> {
        let fail = |reason: String| PathError { path: text.to_owned(), reason };
        if text.is_empty() {
            return Err(fail("the path is empty".into()));
        }
        let bytes = text.as_bytes();
        let mut root: Option<String> = None;
        let mut steps = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'[' => {
                    if root.is_none() {
                        return Err(fail("a path starts with a key, not an index".into()));
                    }
                    let close =
                        text[i..].find(']').map(|n| n + i).ok_or_else(|| fail(format!("unclosed `[` at {i}")))?;
                    let digits = &text[i + 1..close];
                    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                        return Err(fail(format!("index `[{digits}]` must be a non-negative integer")));
                    }
                    let n = digits.parse::<usize>().map_err(|_| fail(format!("index `[{digits}]` is too large")))?;
                    steps.push(Step::Index(n));
                    i = close + 1;
                }
                b'.' if root.is_none() => return Err(fail("a path starts with a key, not `.`".into())),
                b'.' => {
                    let (key, next) = read_key(text, i + 1).map_err(fail)?;
                    steps.push(Step::Key(key.to_owned()));
                    i = next;
                }
                _ if root.is_none() => {
                    let (key, next) = read_key(text, i).map_err(fail)?;
                    root = Some(key.to_owned());
                    i = next;
                }
                other => {
                    return Err(fail(format!("expected `.` or `[` at {i}, found `{}`", char::from(other))));
                }
            }
        }
        let root = root.ok_or_else(|| fail("the path has no root key".into()))?;
        Ok(Path { root, steps })
    }

    /// Follows the steps (not the root) from `value`.
    pub(crate) fn walk<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        walk_steps(&self.steps, value)
    }
}

/// Follows `steps` from `value`; `None` when a key or index names nothing or meets the wrong type.
pub(crate) fn walk_steps<'v>(steps: &[Step], mut value: &'v Value) -> Option<&'v Value> {
    for step in steps {
        value = match (step, value) {
            (Step::Key(key), Value::Object(map)) => map.get(key)?,
            (Step::Index(n), Value::Array(items)) => items.get(*n)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Reads a key starting at byte `start`; returns it and the byte index after it.
fn read_key(text: &str, start: usize) -> Result<(&str, usize), String> {
    let rest = &text[start..];
    let len = rest.find(|c: char| c == '.' || c == '[' || c == ']' || c.is_whitespace()).unwrap_or(rest.len());
    if len == 0 {
        return Err(match rest.chars().next() {
            None => "the path ends with `.`".to_owned(),
            Some(c) if c.is_whitespace() => format!("whitespace at {start}"),
            Some(c) => format!("empty key before `{c}` at {start}"),
        });
    }
    Ok((&rest[..len], start + len))
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.root)?;
        for step in &self.steps {
            match step {
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Parses `text` as a field path (as conditions and templates do, no surrounding whitespace) and
/// writes it back in canonical form: `payload.tags[01]` is `payload.tags[1]`. For tools and the
/// fuzz targets (`fuzz/`); the engine itself keeps paths parsed.
pub fn canonical_path(text: &str) -> Result<String, PathError> {
    Path::parse(text).map(|path| path.to_string())
}

/// Follows a whole dot path with optional `[n]` indexes from `root`, e.g. `pack.config.hosts[0]`
/// in `{"pack": {"config": {"hosts": [..]}}}`. `None` when the path names nothing or does not parse.
pub fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let path = Path::parse(path.trim()).ok()?;
    let first = root.as_object()?.get(&path.root)?;
    path.walk(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_keys_and_indexes() {
        let p = Path::parse("payload.tags[0].name[2][3]").unwrap();
        assert_eq!(p.root, "payload");
        assert_eq!(
            p.steps,
            vec![Step::Key("tags".into()), Step::Index(0), Step::Key("name".into()), Step::Index(2), Step::Index(3)]
        );
        assert_eq!(p.to_string(), "payload.tags[0].name[2][3]");
        assert_eq!(Path::parse("payload[1]").unwrap().steps, vec![Step::Index(1)]);
        assert_eq!(Path::parse("event.content-type").unwrap().steps, vec![Step::Key("content-type".into())]);
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in ["", ".a", "a.", "a..b", "a[", "a[x]", "a[-1]", "a[]", "[0]", "a]b", "a b", "a[0]b", "a.[0]"] {
            assert!(Path::parse(bad).is_err(), "{bad:?} should not parse");
        }
        assert!(Path::parse("a[99999999999999999999999]").unwrap_err().reason.contains("too large"));
    }

    #[test]
    fn canonical_form() {
        assert_eq!(canonical_path("payload.tags[01].name").unwrap(), "payload.tags[1].name");
        assert_eq!(canonical_path("event.content-type").unwrap(), "event.content-type");
        assert!(canonical_path(" payload.x").is_err());
    }

    #[test]
    fn lookup_follows_objects_and_arrays_only() {
        let v = json!({"pack": {"config": {"hosts": ["a", {"n": 1}], "0": "zero"}}});
        assert_eq!(lookup(&v, "pack.config.hosts[0]"), Some(&json!("a")));
        assert_eq!(lookup(&v, " pack.config.hosts[1].n "), Some(&json!(1)));
        assert_eq!(lookup(&v, "pack.config.0"), Some(&json!("zero")));
        assert_eq!(lookup(&v, "pack.config.hosts.0"), None);
        assert_eq!(lookup(&v, "pack.config[0]"), None);
        assert_eq!(lookup(&v, "pack.config.hosts[2]"), None);
        assert_eq!(lookup(&v, "pack..config"), None);
        assert_eq!(lookup(&json!([1]), "x"), None);
    }
}
