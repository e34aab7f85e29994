//! Host-held secrets in sensor configuration: `{{ secret.NAME }}` in a pack's `config` or a
//! sensor's `config`, as a whole string or inside one (`"Bearer {{ secret.API_TOKEN }}"`).
//!
//! | where a secret is | what happens |
//! |---|---|
//! | settings file: `secrets: {NAME: value}` | read by `serve`, `pack validate` (`--config`) and `sensor run` (`ATTUNE_CONFIG`) |
//! | environment: `ATTUNE_SECRET_<NAME>` | wins over the file, for the same commands |
//! | pack and sensor manifests | only the reference, as written |
//! | loaded packs, `GET /packs`, `GET /sensors`, the store, logs, `--print-config` | never the value |
//! | the sensor's `init(config)` | the value: references are resolved only there |
//!
//! A name is 1 to 128 of `A-Z a-z 0-9 _`, matched exactly (`{{ secret.API_TOKEN }}` is
//! `ATTUNE_SECRET_API_TOKEN`). A reference to a secret the host does not hold is a pack error
//! naming the file, the field and the secret, so `serve` refuses the pack as `pack validate`
//! does. A secret is always a string: a pack's `config_schema` checks only that a string may
//! stand there, never the value (which no error message may quote). Rules never see values: a
//! rule's `{{ pack.config.token }}` renders the reference as written.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde_json::{Map, Value};

use crate::field::FieldError;
use crate::sandbox::Redactions;

/// The template root of secrets.
const ROOT: &str = "secret";
const MAX_NAME_CHARS: usize = 128;

/// Secrets by name. `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: BTreeMap<String, String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets").field("names", &self.values.keys().collect::<Vec<_>>()).finish()
    }
}

/// One `{{ secret.NAME }}` in a configuration: the field it is in (`config.auth.token`) and the
/// secret it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub field: String,
    pub name: String,
}

impl Secrets {
    /// Prefix of the environment variables read by [`Secrets::from_env`].
    pub const ENV_PREFIX: &'static str = "ATTUNE_SECRET_";

    /// The secrets of a settings file's `secrets:` map; the error names the bad name.
    pub fn from_map(map: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut secrets = Self::default();
        for (name, value) in map {
            if !valid_name(name) {
                return Err(format!("secrets: `{name}`: {}", name_rule()));
            }
            secrets.insert(name, value);
        }
        Ok(secrets)
    }

    /// The secrets in `ATTUNE_SECRET_<NAME>` variables of the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// The secrets among `vars` (name, value) named `ATTUNE_SECRET_<NAME>`; variables whose
    /// `<NAME>` is no secret name are not secrets.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut secrets = Self::default();
        for (variable, value) in vars {
            if let Some(name) = variable.strip_prefix(Self::ENV_PREFIX).filter(|n| valid_name(n)) {
                secrets.insert(name, &value);
            }
        }
        secrets
    }

    /// Sets a secret. An empty value is no secret (as an empty webhook secret is none): a
    /// variable set to nothing does not satisfy a reference.
    pub fn insert(&mut self, name: &str, value: &str) {
        if !value.is_empty() {
            self.values.insert(name.to_string(), value.to_string());
        }
    }

    /// These secrets, with those of `other` replacing any of the same name.
    pub fn overlaid_with(mut self, other: Secrets) -> Self {
        self.values.extend(other.values);
        self
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Every name, in order (for `--print-config`, which never prints a value).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The environment variable holding secret `name`.
    pub fn env_var(name: &str) -> String {
        format!("{}{name}", Self::ENV_PREFIX)
    }

    /// `config` with each reference replaced by its secret: what a sensor's `init` is handed.
    /// Call only there, and never log or store what it returns. The error names the field and
    /// the secret, never a value.
    pub fn resolve(&self, config: &Value) -> Result<Value, FieldError> {
        let mut resolved = config.clone();
        self.resolve_in(&mut resolved, &mut String::from("config"))?;
        Ok(resolved)
    }

    /// For each secret `config` references: its value and the reference that stands for it,
    /// longest value first, so that a recording of the sensor's host calls can hold the
    /// reference in place of the value.
    pub fn redactions(&self, config: &Value) -> Redactions {
        let mut found: Redactions = references(config, "config")
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| Some((self.values.get(&r.name)?.clone(), format!("{{{{ {ROOT}.{} }}}}", r.name))))
            .collect();
        found.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
        found.dedup();
        found
    }

    fn resolve_in(&self, value: &mut Value, at: &mut String) -> Result<(), FieldError> {
        match value {
            Value::String(text) => {
                // A malformed reference cannot be here: the manifest was refused when it loaded.
                let found = scan(text).unwrap_or_default();
                if found.is_empty() {
                    return Ok(());
                }
                let mut out = String::with_capacity(text.len());
                let mut last = 0;
                for (range, name) in &found {
                    let secret = self.values.get(*name).ok_or_else(|| missing(at, name))?;
                    out.push_str(&text[last..range.start]);
                    out.push_str(secret);
                    last = range.end;
                }
                // A string that is one reference and blanks is the secret alone, as a template
                // that is the whole string is its value alone.
                if whole(text, &found) {
                    out = self.values[found[0].1].clone();
                } else {
                    out.push_str(&text[last..]);
                }
                *text = out;
                Ok(())
            }
            Value::Array(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let len = at.len();
                    at.push_str(&format!("[{i}]"));
                    self.resolve_in(item, at)?;
                    at.truncate(len);
                }
                Ok(())
            }
            Value::Object(map) => {
                for (key, item) in map.iter_mut() {
                    let len = at.len();
                    at.push('.');
                    at.push_str(key);
                    self.resolve_in(item, at)?;
                    at.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The message of a reference to a secret the host does not hold, with where to set it.
fn missing(field: &str, name: &str) -> FieldError {
    FieldError {
        field: field.to_string(),
        message: format!(
            "secret `{name}` is not set: set {} in the environment or `secrets: {{{name}: ..}}` in the config file",
            Secrets::env_var(name)
        ),
    }
}

/// A reference to a secret `secrets` does not hold, as [`Secrets::resolve`] would report it.
pub fn unset(secret: &SecretRef, secrets: &Secrets) -> Option<FieldError> {
    (!secrets.contains(&secret.name)).then(|| missing(&secret.field, &secret.name))
}

/// Every reference in `value`, which sits at `root` (`config`), in document order. A malformed
/// one (`{{ secret }}`, `{{ secret.a-b }}`) is an error naming its field.
pub fn references(value: &Value, root: &str) -> Result<Vec<SecretRef>, FieldError> {
    let mut found = Vec::new();
    collect(value, &mut root.to_string(), &mut found)?;
    Ok(found)
}

fn collect(value: &Value, at: &mut String, found: &mut Vec<SecretRef>) -> Result<(), FieldError> {
    match value {
        Value::String(text) => {
            let names = scan(text).map_err(|expression| FieldError {
                field: at.clone(),
                message: format!("`{expression}`: a secret is `{{{{ secret.NAME }}}}`, NAME {}", name_rule()),
            })?;
            found.extend(names.into_iter().map(|(_, name)| SecretRef { field: at.clone(), name: name.to_string() }));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = at.len();
                at.push_str(&format!("[{i}]"));
                collect(item, at, found)?;
                at.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                let len = at.len();
                at.push('.');
                at.push_str(key);
                collect(item, at, found)?;
                at.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// What the `secret` root renders to while a sensor's config templates are rendered when its
/// pack loads: each reference as itself, so it is resolved only when handed to the sensor.
pub fn placeholders(references: &[SecretRef]) -> Value {
    let names: Map<String, Value> =
        references.iter().map(|r| (r.name.clone(), Value::String(format!("{{{{ {ROOT}.{} }}}}", r.name)))).collect();
    Value::Object(names)
}

/// Whether `text` holds a secret reference (a value a schema cannot judge before it is resolved).
pub fn holds_reference(text: &str) -> bool {
    scan(text).is_ok_and(|found| !found.is_empty())
}

/// The `{{ secret.NAME }}` expressions of `text`: their byte ranges and names. Other templates
/// and unclosed `{{` are left alone (pack config is data; sensor config templates are checked
/// by the template engine). `Err` is the text of an expression under `secret` naming no secret.
fn scan(text: &str) -> Result<Vec<(Range<usize>, &str)>, &str> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{").map(|i| i + from) {
        let Some(close) = text[open + 2..].find("}}").map(|i| i + open + 2) else { break };
        let expression = &text[open..close + 2];
        let inner = text[open + 2..close].trim();
        let root_end = inner.find(['.', '[']).unwrap_or(inner.len());
        if &inner[..root_end] == ROOT {
            match inner[root_end..].strip_prefix('.') {
                Some(name) if valid_name(name) => found.push((open..close + 2, name)),
                _ => return Err(expression),
            }
        }
        from = close + 2;
    }
    Ok(found)
}

/// Whether `found` is one reference making up all of `text` but blanks around it.
fn whole(text: &str, found: &[(Range<usize>, &str)]) -> bool {
    match found {
        [(range, _)] => text[..range.start].trim().is_empty() && text[range.end..].trim().is_empty(),
        _ => false,
    }
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn name_rule() -> String {
    format!("is 1 to {MAX_NAME_CHARS} letters, digits and `_`")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn secrets(pairs: &[(&str, &str)]) -> Secrets {
        let mut secrets = Secrets::default();
        for (name, value) in pairs {
            secrets.insert(name, value);
        }
        secrets
    }

    #[test]
    fn references_are_resolved_whole_or_inside_strings() {
        let config = json!({
            "token": "{{ secret.TOKEN }}",
            "header": "Bearer {{secret.TOKEN}} for {{ secret.user_1 }}",
            "padded": "  {{ secret.TOKEN }} ",
            "other": "{{ event.payload.x }} stays",
            "list": [1, {"deep": "{{ secret.user_1 }}"}],
        });
        let resolved = secrets(&[("TOKEN", "t0k"), ("user_1", "ann")]).resolve(&config).unwrap();
        assert_eq!(
            resolved,
            json!({
                "token": "t0k",
                "header": "Bearer t0k for ann",
                "padded": "t0k",
                "other": "{{ event.payload.x }} stays",
                "list": [1, {"deep": "ann"}],
            })
        );
    }

    #[test]
    fn a_missing_secret_names_the_field_and_the_variable_never_a_value() {
        let config = json!({"list": [{"deep": "x {{ secret.TOKEN }} {{ secret.GONE }}"}]});
        let error = secrets(&[("TOKEN", "t0k")]).resolve(&config).unwrap_err();
        assert_eq!(error.field, "config.list[0].deep");
        assert!(error.message.starts_with("secret `GONE` is not set: set ATTUNE_SECRET_GONE"), "{error}");
        assert!(!error.to_string().contains("t0k"), "{error}");
    }

    #[test]
    fn references_are_found_and_malformed_ones_refused() {
        let config = json!({"a": "{{ secret.A }}", "b": ["x{{ secret.B }}y{{ secret.A }}"], "c": "{{ secretary.x }}"});
        let found = references(&config, "config").unwrap();
        let fields: Vec<(&str, &str)> = found.iter().map(|r| (r.field.as_str(), r.name.as_str())).collect();
        assert_eq!(fields, [("config.a", "A"), ("config.b[0]", "B"), ("config.b[0]", "A")]);
        for bad in ["{{ secret }}", "{{ secret.a-b }}", "{{ secret.a.b }}", "{{ secret[0] }}", "{{ secret. }}"] {
            let error = references(&json!({"k": bad}), "config").unwrap_err();
            assert_eq!(error.field, "config.k");
            assert!(error.message.starts_with(&format!("`{bad}`: a secret is")), "{error}");
        }
        assert!(references(&json!({"k": "{{ secret.A"}), "config").unwrap().is_empty(), "unclosed: not ours");
    }

    #[test]
    fn placeholders_render_references_as_themselves() {
        let config = json!({"t": "{{secret.A}}", "h": "Bearer {{ secret.A }}"});
        let refs = references(&config, "config").unwrap();
        let rendered = attune_rules::template::render(&config, &json!({"secret": placeholders(&refs)})).unwrap();
        assert_eq!(rendered, json!({"t": "{{ secret.A }}", "h": "Bearer {{ secret.A }}"}));
        assert_eq!(secrets(&[("A", "v")]).resolve(&rendered).unwrap(), json!({"t": "v", "h": "Bearer v"}));
    }

    #[test]
    fn the_environment_wins_and_debug_shows_names_only() {
        let file = Secrets::from_map(&BTreeMap::from([("A".into(), "file".into()), ("B".into(), "b".into())])).unwrap();
        let env = Secrets::from_vars([
            ("ATTUNE_SECRET_A".to_string(), "env".to_string()),
            ("ATTUNE_SECRET_".to_string(), "nameless".to_string()),
            ("ATTUNE_SECRET_EMPTY".to_string(), String::new()),
            ("ATTUNE_WEBHOOK_SECRET_X".to_string(), "webhook".to_string()),
        ]);
        let all = file.overlaid_with(env);
        assert_eq!(all.names().collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(all.resolve(&json!("{{ secret.A }}")).unwrap(), json!("env"));
        assert_eq!(format!("{all:?}"), r#"Secrets { names: ["A", "B"] }"#);
        let error = Secrets::from_map(&BTreeMap::from([("a-b".into(), "x".into())])).unwrap_err();
        assert!(error.starts_with("secrets: `a-b`: is 1 to 128"), "{error}");
    }
}
