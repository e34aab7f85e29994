//! `{{ path }}` templates inside JSON values. A string that is exactly one template takes the
//! JSON type of the value it names; templates inside longer strings are rendered as text.
//! A path that names nothing is an error, never an empty string.

use serde_json::Value;

/// Renders every string in `value` against `context` (e.g. `{"pack": {"config": {..}}}`).
pub fn render(value: &Value, context: &Value) -> Result<Value, String> {
    Ok(match value {
        Value::String(s) => render_str(s, context)?,
        Value::Array(items) => Value::Array(items.iter().map(|v| render(v, context)).collect::<Result<_, _>>()?),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| Ok((k.clone(), render(v, context)?))).collect::<Result<_, String>>()?)
        }
        other => other.clone(),
    })
}

fn render_str(s: &str, context: &Value) -> Result<Value, String> {
    let trimmed = s.trim();
    if let Some(path) = whole_template(trimmed) {
        return lookup(context, path).cloned().ok_or_else(|| missing(path));
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").ok_or_else(|| format!("unclosed `{{{{` in `{s}`"))? + start;
        out.push_str(&rest[..start]);
        let path = rest[start + 2..end].trim();
        match lookup(context, path).ok_or_else(|| missing(path))? {
            Value::String(text) => out.push_str(text),
            other => out.push_str(&other.to_string()),
        }
        rest = &rest[end + 2..];
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

fn missing(path: &str) -> String {
    format!("template `{{{{ {path} }}}}` names a missing value")
}

/// `{{ path }}` with nothing around it.
fn whole_template(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then(|| inner.trim())
}

/// Follows a dot path with optional `[n]` indexes, e.g. `pack.config.hosts[0]`.
pub fn lookup<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = root;
    for segment in path.split('.') {
        let (key, indexes) = match segment.find('[') {
            Some(i) => (&segment[..i], &segment[i..]),
            None => (segment, ""),
        };
        if !key.is_empty() {
            current = current.get(key)?;
        }
        for index in indexes.split_terminator(']') {
            let n: usize = index.strip_prefix('[')?.parse().ok()?;
            current = current.get(n)?;
        }
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_templates_keep_their_type() {
        let ctx = json!({"pack": {"config": {"port": 8080, "hosts": ["a", "b"], "token": "t"}}});
        let out = render(
            &json!({"port": "{{ pack.config.port }}", "url": "http://{{pack.config.hosts[1]}}:{{ pack.config.port }}/", "n": 1}),
            &ctx,
        )
        .unwrap();
        assert_eq!(out, json!({"port": 8080, "url": "http://b:8080/", "n": 1}));
        assert!(render(&json!("{{ pack.config.nope }}"), &ctx).unwrap_err().contains("pack.config.nope"));
        assert!(render(&json!("x {{ pack.config.port"), &ctx).is_err());
    }
}
