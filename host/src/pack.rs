//! Packs on disk (spec section 2): `pack.yaml`, `triggers/*.yaml`, `sensors/*.yaml`,
//! `rules/*.yaml`. Every error names the file and, where there is one, the field.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use attune_rules::RuleSpec;
use attune_timers::{CRON_TRIGGER, DATETIME_TRIGGER, INTERVAL_TRIGGER, TimerSpec, is_timer_trigger};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::capabilities::{AllowedHosts, GrantedPaths};
pub use crate::field::FieldError;
use crate::limits::{HostCeilings, Limits};
use crate::sandbox::SensorSpec;
use crate::sandbox::{Grants, SensorCode};
use crate::secrets::{self, SecretRef, Secrets};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackManifest {
    #[serde(rename = "ref")]
    pub pack_ref: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the pack's configuration.
    #[serde(default)]
    pub config_schema: Value,
    /// Configuration values, referenced from sensor config as `{{ pack.config.key }}`.
    #[serde(default)]
    pub config: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerManifest {
    #[serde(rename = "ref")]
    pub trigger_ref: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub payload_schema: Option<Value>,
    #[serde(default)]
    pub param_schema: Option<Value>,
}

/// `actions/<name>.yaml`: an action the pack's executors run, which rules may name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionManifest {
    #[serde(rename = "ref")]
    pub action_ref: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Python,
    Javascript,
    Component,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesManifest {
    #[serde(default)]
    pub http: Vec<String>,
    #[serde(default)]
    pub paths: Vec<PathBuf>,
}

fn default_poll_interval() -> f64 {
    10.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensorManifest {
    #[serde(rename = "ref")]
    pub sensor_ref: String,
    #[serde(default)]
    pub description: String,
    pub triggers: Vec<String>,
    pub runtime: Runtime,
    /// Source file or built component, relative to the manifest's directory.
    pub entry: PathBuf,
    /// Seconds between polls.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: f64,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub capabilities: CapabilitiesManifest,
    #[serde(default)]
    pub config: Value,
}

/// A loaded, validated pack.
#[derive(Debug, Clone)]
pub struct Pack {
    pub dir: PathBuf,
    pub manifest: PackManifest,
    pub triggers: Vec<TriggerManifest>,
    /// `actions/*.yaml`: the actions rules may name besides the core ones.
    pub actions: Vec<ActionManifest>,
    pub sensors: Vec<SensorSpec>,
    /// `rules/*.yaml`, each checked as the API would check it.
    pub rules: Vec<PackRule>,
    /// The `{{ secret.NAME }}` in `pack.yaml`'s and the sensors' `config`: the host must hold
    /// each secret for the pack to load (see [`require_secrets`]).
    pub secrets: Vec<SecretUse>,
}

/// A `{{ secret.NAME }}` in one of a pack's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    pub file: PathBuf,
    pub reference: SecretRef,
}

/// A rule shipped with a pack, installed on first start.
#[derive(Debug, Clone)]
pub struct PackRule {
    pub file: PathBuf,
    pub spec: RuleSpec,
}

/// A pack error: the file, the field (when one is to blame) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}{message}", file.display(), field.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct PackError {
    pub file: PathBuf,
    pub field: Option<String>,
    pub message: String,
}

impl PackError {
    fn new(file: &Path, field: Option<&str>, message: impl Into<String>) -> Self {
        Self { file: file.to_path_buf(), field: field.map(str::to_string), message: message.into() }
    }

    fn at(file: &Path, error: FieldError) -> Self {
        Self { file: file.to_path_buf(), field: Some(error.field), message: error.message }
    }
}

impl TriggerManifest {
    /// Checks a rule's `trigger_params` against this trigger's `param_schema` (an absent, null
    /// or `{}` schema accepts anything); the error names the first problem, e.g. field
    /// `trigger_params.url`. The parameters of the core timers are checked by
    /// `attune_timers::TimerSpec::parse` instead: they have no manifest.
    pub fn check_params(&self, params: &Map<String, Value>) -> Result<(), FieldError> {
        self.param_errors(params).into_iter().next().map_or(Ok(()), Err)
    }

    /// Every problem of `params` against the `param_schema`, in the schema's order.
    pub fn param_errors(&self, params: &Map<String, Value>) -> Vec<FieldError> {
        let Some(schema) = &self.param_schema else { return Vec::new() };
        schema_errors(schema, &Value::Object(params.clone()), "trigger_params").unwrap_or_else(|message| {
            vec![FieldError {
                field: "trigger_params".into(),
                message: format!("the param_schema of `{}` is not a valid JSON Schema: {message}", self.trigger_ref),
            }]
        })
    }
}

/// Checks `instance` against `schema` and names each problem's place under `root`
/// (`config.token`, `trigger_params.items[2].url`). An unknown key where the schema allows no
/// others gets a did-you-mean. A null or `{}` schema accepts anything; `Err` when `schema` is
/// not a JSON Schema.
pub fn schema_errors(schema: &Value, instance: &Value, root: &str) -> Result<Vec<FieldError>, String> {
    schema_errors_but(schema, instance, root, |_| false)
}

/// [`schema_errors`] without the problems `ignored` picks.
fn schema_errors_but(
    schema: &Value,
    instance: &Value,
    root: &str,
    ignored: impl Fn(&jsonschema::ValidationError<'_>) -> bool,
) -> Result<Vec<FieldError>, String> {
    use jsonschema::error::ValidationErrorKind;
    if schema.is_null() || schema.as_object().is_some_and(Map::is_empty) {
        return Ok(Vec::new());
    }
    let validator = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    for error in validator.iter_errors(instance).filter(|e| !ignored(e)) {
        let at = field_path(root, error.instance_path());
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected }
            | ValidationErrorKind::UnevaluatedProperties { unexpected } => {
                let known = declared_properties(schema, error.schema_path().as_str());
                for key in unexpected {
                    errors.push(FieldError { field: format!("{at}.{key}"), message: unknown_key(key, &known) });
                }
            }
            ValidationErrorKind::Required { property } => {
                let name = property.as_str().map_or_else(|| property.to_string(), str::to_string);
                errors.push(FieldError { field: format!("{at}.{name}"), message: error.to_string() });
            }
            _ => errors.push(FieldError { field: at, message: error.to_string() }),
        }
    }
    Ok(errors)
}

/// `root` followed by the instance path: `.name` per property, `[n]` per index.
fn field_path(root: &str, path: &jsonschema::paths::Location) -> String {
    use jsonschema::paths::LocationSegment;
    let mut field = root.to_string();
    for segment in path {
        match segment {
            LocationSegment::Property(name) => {
                field.push('.');
                field.push_str(&name);
            }
            LocationSegment::Index(index) => field.push_str(&format!("[{index}]")),
        }
    }
    field
}

/// The `properties` declared next to the keyword at `keyword_path` (e.g.
/// `/properties/auth/additionalProperties`), for suggestions.
fn declared_properties(schema: &Value, keyword_path: &str) -> Vec<String> {
    let parent = keyword_path.rsplit_once('/').map_or("", |(parent, _)| parent);
    schema
        .pointer(parent)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

fn unknown_key(key: &str, known: &[String]) -> String {
    match did_you_mean(key, known.iter().map(String::as_str)) {
        Some(close) => format!("unknown key `{key}`; did you mean `{close}`?"),
        None if known.is_empty() => format!("unknown key `{key}`; the schema allows no keys"),
        None => format!(
            "unknown key `{key}` (known: {})",
            known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
        ),
    }
}

pub(crate) fn unknown_trigger<'a>(trigger: &str, known: impl IntoIterator<Item = &'a str> + Clone) -> String {
    // A trigger named without its pack (`tick` for `mypack.tick`) is suggested whole.
    let qualified = known.clone().into_iter().find(|k| k.split_once('.').is_some_and(|(_, name)| name == trigger));
    match qualified.or_else(|| did_you_mean(trigger, known)) {
        Some(close) => format!("unknown trigger `{trigger}`; did you mean `{close}`?"),
        None => format!("unknown trigger `{trigger}`"),
    }
}

/// The candidate closest to `given` (Damerau-Levenshtein), when it is close enough to be a
/// likely typo: at most one edit per three characters, and at least one.
pub fn did_you_mean<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (given.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != given)
        .map(|c| (strsim::damerau_levenshtein(given, c), c))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

fn read_yaml<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T, PackError> {
    let text = read_pack_file(file)?;
    // The parser's message already says which field and at which line and column.
    serde_yaml_ng::from_str(&text).map_err(|e| manifest_error(file, &e))
}

/// A manifest that does not parse: the parser's message (which names the key, the line and the
/// column), and for an unknown key or value the closest known one.
fn manifest_error(file: &Path, error: &dyn std::fmt::Display) -> PackError {
    let message = error.to_string();
    match suggestion(&message) {
        Some(close) => PackError::new(file, None, format!("{message}; did you mean `{close}`?")),
        None => PackError::new(file, None, message),
    }
}

/// For serde's `unknown field `x`, expected one of `a`, `b`` (or `unknown variant ..`), the
/// expected name closest to `x`, when one is close.
fn suggestion(message: &str) -> Option<String> {
    let (_, rest) = message.split_once("unknown field `").or_else(|| message.split_once("unknown variant `"))?;
    let (given, rest) = rest.split_once('`')?;
    let (_, expected) = rest.split_once("expected")?;
    // The expected names are the backquoted words after `expected`.
    let known: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    did_you_mean(given, known).map(str::to_string)
}

fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, PackError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| PackError::new(dir, None, e.to_string()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

/// The generic webhook trigger of the core pack: any signed JSON body.
pub const WEBHOOK_TRIGGER: &str = "core.webhook";

/// Triggers every host provides without a pack (the built-in pack `core`): the timers of
/// `attune_timers` and the generic webhook.
pub const CORE_TRIGGERS: [&str; 4] = [INTERVAL_TRIGGER, CRON_TRIGGER, DATETIME_TRIGGER, WEBHOOK_TRIGGER];

/// Actions every host knows without a pack: `core.echo` (its parameters are the message) and
/// `core.noop`.
pub const CORE_ACTIONS: [&str; 2] = ["core.echo", "core.noop"];

/// The namespace of rules created through the API that belong to no pack.
pub const USER_NAMESPACE: &str = "user";

/// What `GET /triggers` says of a core trigger.
pub fn core_trigger_description(trigger_ref: &str) -> &'static str {
    match trigger_ref {
        INTERVAL_TRIGGER => "Fires every `interval` `unit` (trigger_params: {interval, unit}).",
        CRON_TRIGGER => "Fires on a cron schedule (trigger_params: {expression, timezone}).",
        DATETIME_TRIGGER => "Fires once at `fire_at` (trigger_params: {fire_at}).",
        WEBHOOK_TRIGGER => "A signed HTTP POST to /api/v1/webhooks/core.webhook; the payload is the JSON body.",
        _ => "",
    }
}

/// One pack as far as it loaded, with every error found in it (not only the first).
#[derive(Debug)]
pub struct PackReport {
    pub dir: PathBuf,
    /// `None` when `pack.yaml` itself is unusable; else the pack without the files that failed.
    pub pack: Option<Pack>,
    /// The refs of every trigger file that parsed, valid or not: a rule or sensor naming one
    /// of them is not also reported as naming an unknown trigger.
    pub declared_triggers: Vec<String>,
    pub errors: Vec<PackError>,
}

impl PackReport {
    /// The pack, or its first error.
    pub fn into_result(self) -> Result<Pack, PackError> {
        match (self.pack, self.errors.into_iter().next()) {
            (_, Some(error)) => Err(error),
            (Some(pack), None) => Ok(pack),
            (None, None) => Err(PackError::new(&self.dir, None, "not a pack")),
        }
    }
}

impl Pack {
    /// A digest of the pack's files (relative paths and bytes, in path order), the same on
    /// every host holding the same copy wherever it lies: hosts compare their copies by it.
    pub fn content_fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        fn walk(dir: &Path, base: &Path, files: &mut Vec<(String, Vec<u8>)>) {
            let Ok(entries) = std::fs::read_dir(dir) else { return };
            for entry in entries.flatten() {
                let path = entry.path();
                let relative = path.strip_prefix(base).unwrap_or(&path).to_string_lossy().into_owned();
                match entry.file_type() {
                    Ok(kind) if kind.is_dir() => walk(&path, base, files),
                    // An unreadable file counts by its error, so two such copies still differ from
                    // a readable one.
                    Ok(_) => {
                        files.push((relative, std::fs::read(&path).unwrap_or_else(|e| e.to_string().into_bytes())))
                    }
                    Err(_) => {}
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.dir, &self.dir, &mut files);
        files.sort();
        let mut digest = Sha256::new();
        for (path, bytes) in &files {
            digest.update((path.len() as u64).to_le_bytes());
            digest.update(path.as_bytes());
            digest.update((bytes.len() as u64).to_le_bytes());
            digest.update(bytes);
        }
        hex::encode(digest.finalize())
    }

    /// Loads the pack at `dir` under the default [`HostCeilings`]; the error is the first one
    /// found. Its rules' triggers are resolved by [`load_dir`] and [`validate`], which know the
    /// other packs.
    pub fn load(dir: &Path) -> Result<Self, PackError> {
        Self::check(dir, &HostCeilings::default()).into_result()
    }

    /// Loads what can be loaded of the pack at `dir` and reports every error found, its
    /// sensors checked against `ceilings`.
    pub fn check(dir: &Path, ceilings: &HostCeilings) -> PackReport {
        let mut report =
            PackReport { dir: dir.to_path_buf(), pack: None, declared_triggers: Vec::new(), errors: Vec::new() };
        let manifest_file = dir.join("pack.yaml");
        let manifest: PackManifest = match read_yaml(&manifest_file) {
            Ok(manifest) => manifest,
            Err(e) => {
                report.errors.push(e);
                return report;
            }
        };
        let pack_ref = manifest.pack_ref.clone();
        if !is_identifier(&pack_ref) {
            report.errors.push(PackError::new(
                &manifest_file,
                Some("ref"),
                format!("`{pack_ref}` must be letters, digits and `_`"),
            ));
            return report;
        }
        report.errors.extend(check_config(&manifest_file, &manifest));
        let errors = &mut report.errors;
        let mut secret_uses = Vec::new();
        let mut used = |file: &Path, references: Vec<SecretRef>| {
            secret_uses
                .extend(references.into_iter().map(|reference| SecretUse { file: file.to_path_buf(), reference }));
        };
        match secrets::references(&manifest.config, "config") {
            Ok(references) => used(&manifest_file, references),
            Err(e) => errors.push(PackError::at(&manifest_file, e)),
        }

        let mut triggers = Vec::new();
        for file in yaml_files(&dir.join("triggers")).unwrap_or_else(|e| take(errors, e)) {
            let mut trigger: TriggerManifest = match read_yaml(&file) {
                Ok(trigger) => trigger,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            trigger.trigger_ref = match qualify(&pack_ref, &trigger.trigger_ref, &file) {
                Ok(trigger_ref) => trigger_ref,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            report.declared_triggers.push(trigger.trigger_ref.clone());
            let before = errors.len();
            for (field, schema) in
                [("payload_schema", &trigger.payload_schema), ("param_schema", &trigger.param_schema)]
            {
                if let Some(schema) = schema.as_ref().filter(|s| !s.is_null())
                    && let Err(e) = jsonschema::validator_for(schema)
                {
                    errors.push(PackError::new(&file, Some(field), e.to_string()));
                }
            }
            if errors.len() == before {
                triggers.push(trigger);
            }
        }

        let context = serde_json::json!({"pack": {"config": manifest.config}});
        let mut sensors = Vec::new();
        for file in yaml_files(&dir.join("sensors")).unwrap_or_else(|e| take(errors, e)) {
            let sensor: SensorManifest = match read_yaml(&file) {
                Ok(sensor) => sensor,
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            match resolve_sensor(&pack_ref, dir, &file, sensor, &report.declared_triggers, &context, ceilings) {
                Ok((spec, references)) => {
                    sensors.push(spec);
                    used(&file, references);
                }
                Err(e) => errors.extend(e),
            }
        }
        let mut actions = Vec::new();
        for file in yaml_files(&dir.join("actions")).unwrap_or_else(|e| take(errors, e)) {
            let loaded = read_yaml::<ActionManifest>(&file).and_then(|mut action| {
                action.action_ref = qualify(&pack_ref, &action.action_ref, &file)?;
                Ok(action)
            });
            match loaded {
                Ok(action) => actions.push(action),
                Err(e) => errors.push(e),
            }
        }
        let mut rules = Vec::new();
        for file in yaml_files(&dir.join("rules")).unwrap_or_else(|e| take(errors, e)) {
            match load_rule(&file).and_then(|rule| owned_by(&pack_ref, rule)) {
                Ok(rule) => rules.push(rule),
                Err(e) => errors.push(e),
            }
        }
        report.pack =
            Some(Self { dir: dir.to_path_buf(), manifest, triggers, actions, sensors, rules, secrets: secret_uses });
        report
    }

    /// A pack error for each `{{ secret.NAME }}` of the pack that `secrets` does not hold, naming
    /// the file, the field and the secret, with where to set it.
    pub fn unset_secrets(&self, secrets: &Secrets) -> Vec<PackError> {
        self.secrets
            .iter()
            .filter_map(|used| secrets::unset(&used.reference, secrets).map(|e| PackError::at(&used.file, e)))
            .collect()
    }
}

/// Every secret the packs' configs name must be one the host holds; the error is the first one
/// that is not. Checked wherever packs load (`serve`, a pack reload, `pack validate`), so a
/// sensor is never handed a reference it cannot resolve.
pub fn require_secrets(packs: &[Pack], secrets: &Secrets) -> Result<(), PackError> {
    packs.iter().flat_map(|p| p.unset_secrets(secrets)).next().map_or(Ok(()), Err)
}

/// A pack's rule lives under the pack's own ref: it cannot replace another pack's rule.
fn owned_by(pack_ref: &str, rule: PackRule) -> Result<PackRule, PackError> {
    match rule.spec.rule_ref.split_once('.') {
        Some((pack, _)) if pack == pack_ref => Ok(rule),
        _ => Err(PackError::new(
            &rule.file,
            Some("ref"),
            format!("`{}` is not in pack `{pack_ref}`: a pack's rules are `{pack_ref}.<name>`", rule.spec.rule_ref),
        )),
    }
}

/// Records `error` and carries on with nothing.
fn take<T>(errors: &mut Vec<PackError>, error: PackError) -> Vec<T> {
    errors.push(error);
    Vec::new()
}

/// The pack's `config` (absent counts as `{}`) against its `config_schema`. A value holding a
/// `{{ secret.NAME }}` is known only once resolved, for the sensor: here it is only checked to be
/// where a string may stand (a secret is a string), and never quoted.
fn check_config(file: &Path, manifest: &PackManifest) -> Vec<PackError> {
    use jsonschema::error::ValidationErrorKind;
    let config = match &manifest.config {
        Value::Null => Value::Object(Map::new()),
        config => config.clone(),
    };
    let unknown_yet = |e: &jsonschema::ValidationError<'_>| {
        e.instance().as_str().is_some_and(secrets::holds_reference)
            && !matches!(e.kind(), ValidationErrorKind::Type { .. })
    };
    match schema_errors_but(&manifest.config_schema, &config, "config", unknown_yet) {
        Ok(errors) => errors.into_iter().map(|e| PackError::at(file, e)).collect(),
        Err(message) => vec![PackError::new(file, Some("config_schema"), message)],
    }
}

/// [`load_dir_with`] the default [`HostCeilings`].
pub fn load_dir(dir: &Path) -> Result<Vec<Pack>, PackError> {
    load_dir_with(dir, &HostCeilings::default())
}

/// Every pack under `dir` (each subdirectory with a `pack.yaml`), in name order, its sensors
/// within `ceilings`; pack rules must name a trigger of some loaded pack or a core one, with
/// `trigger_params` its `param_schema` accepts. The error is the first one found.
pub fn load_dir_with(dir: &Path, ceilings: &HostCeilings) -> Result<Vec<Pack>, PackError> {
    check_dir(dir, ceilings)?.into_iter().map(PackReport::into_result).collect()
}

/// [`load_dir_with`] reporting every error of every pack; `Err` only when `dir` cannot be read.
pub fn check_dir(dir: &Path, ceilings: &HostCeilings) -> Result<Vec<PackReport>, PackError> {
    let mut reports: Vec<PackReport> = pack_dirs(dir)?.iter().map(|d| Pack::check(d, ceilings)).collect();
    resolve_rules(&mut reports, &[]);
    Ok(reports)
}

/// [`validate_with`] the default [`HostCeilings`].
pub fn validate(dir: &Path) -> Result<Validation, PackError> {
    validate_with(dir, &HostCeilings::default())
}

/// What `pack validate` checks short of loading sensor code, sensors against `ceilings`.
/// `dir` is a directory of packs (checked as [`load_dir_with`] does), or one pack, whose rules
/// may also use the triggers of the packs beside it in its parent directory, as they would
/// when `serve` loads that directory.
pub fn validate_with(dir: &Path, ceilings: &HostCeilings) -> Result<Validation, PackError> {
    if !dir.join("pack.yaml").is_file() {
        return Ok(Validation { reports: check_dir(dir, ceilings)?, neighbours: Vec::new() });
    }
    let neighbours = neighbour_packs(dir, ceilings);
    let mut reports = vec![Pack::check(dir, ceilings)];
    resolve_rules(&mut reports, &neighbours);
    Ok(Validation { reports, neighbours })
}

/// The outcome of [`validate`].
#[derive(Debug)]
pub struct Validation {
    pub reports: Vec<PackReport>,
    /// The packs beside a single validated pack whose triggers its rules could use (their own
    /// errors are not reported).
    pub neighbours: Vec<Pack>,
}

fn pack_dirs(dir: &Path) -> Result<Vec<PathBuf>, PackError> {
    let read = std::fs::read_dir(dir).map_err(|e| PackError::new(dir, None, e.to_string()))?;
    let mut dirs: Vec<PathBuf> =
        read.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join("pack.yaml").is_file()).collect();
    dirs.sort();
    Ok(dirs)
}

/// The other packs in `dir`'s parent directory, as far as they load.
fn neighbour_packs(dir: &Path, ceilings: &HostCeilings) -> Vec<Pack> {
    let Ok(canonical) = dir.canonicalize() else { return Vec::new() };
    let Some(parent) = canonical.parent() else { return Vec::new() };
    let Ok(dirs) = pack_dirs(parent) else { return Vec::new() };
    dirs.into_iter()
        .filter(|d| d.canonicalize().ok().as_ref() != Some(&canonical))
        .filter_map(|d| Pack::check(&d, ceilings).pack)
        .collect()
}

/// Checks the rules of every report's pack against the triggers known: core ones, those of
/// the reports' packs and those of `neighbours`. A rule that fails is moved to the errors.
fn resolve_rules(reports: &mut [PackReport], neighbours: &[Pack]) {
    let valid: Vec<TriggerManifest> = reports
        .iter()
        .filter_map(|r| r.pack.as_ref())
        .chain(neighbours)
        .flat_map(|p| p.triggers.iter().cloned())
        .collect();
    let mut declared: Vec<String> = CORE_TRIGGERS.iter().map(|t| t.to_string()).collect();
    declared.extend(reports.iter().flat_map(|r| r.declared_triggers.iter().cloned()));
    declared.extend(valid.iter().map(|t| t.trigger_ref.clone()));
    declared.sort();
    declared.dedup();
    let mut actions: Vec<String> = CORE_ACTIONS.iter().map(|a| a.to_string()).collect();
    let packs = reports.iter().filter_map(|r| r.pack.as_ref()).chain(neighbours);
    actions.extend(packs.flat_map(|p| p.actions.iter().map(|a| a.action_ref.clone())));
    for report in reports.iter_mut() {
        let Some(pack) = report.pack.as_mut() else { continue };
        let mut kept = Vec::new();
        for rule in std::mem::take(&mut pack.rules) {
            let mut errors = check_rule_trigger(&rule, &valid, &declared);
            if let Err(message) = check_action(&rule.spec.action.action_ref, actions.iter().map(String::as_str)) {
                errors.push(PackError::new(&rule.file, Some("action.ref"), message));
            }
            if errors.is_empty() {
                kept.push(rule);
            } else {
                report.errors.extend(errors);
            }
        }
        pack.rules = kept;
    }
}

/// The rule's trigger must be known, and its `trigger_params` match the trigger's
/// `param_schema` (core timers' parameters are checked when the rule is loaded).
fn check_rule_trigger(rule: &PackRule, valid: &[TriggerManifest], declared: &[String]) -> Vec<PackError> {
    let trigger = rule.spec.trigger.as_str();
    if let Some(manifest) = valid.iter().find(|t| t.trigger_ref == trigger) {
        return manifest
            .param_errors(&rule.spec.trigger_params)
            .into_iter()
            .map(|e| PackError::at(&rule.file, e))
            .collect();
    }
    if declared.iter().any(|t| t == trigger) {
        return Vec::new();
    }
    let message = unknown_trigger(trigger, declared.iter().map(String::as_str));
    vec![PackError::new(&rule.file, Some("trigger"), message)]
}

/// An action a rule may name: a core action or one a loaded pack declares.
pub(crate) fn check_action<'a>(action: &str, known: impl IntoIterator<Item = &'a str> + Clone) -> Result<(), String> {
    if known.clone().into_iter().any(|a| a == action) {
        return Ok(());
    }
    Err(match did_you_mean(action, known) {
        Some(close) => format!("unknown action `{action}`; did you mean `{close}`?"),
        None => format!("unknown action `{action}`: use a core action or declare it in the pack's actions/"),
    })
}

fn load_rule(file: &Path) -> Result<PackRule, PackError> {
    let text = read_pack_file(file)?;
    let spec = RuleSpec::from_yaml_str(&text).map_err(|e| manifest_error(file, &e))?;
    let rule = attune_rules::compile(spec.clone()).map_err(|e| PackError::new(file, Some(&e.field), e.message))?;
    if is_timer_trigger(rule.trigger()) {
        let params = Value::Object(rule.trigger_params().clone());
        TimerSpec::parse(rule.trigger(), &params).map_err(|e| PackError::new(file, Some(&e.field), e.message))?;
    }
    Ok(PackRule { file: file.to_path_buf(), spec })
}

/// A pack ref, or the name part of a pack's trigger, sensor or action ref.
fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.len() < attune_rules::MAX_REF_BYTES && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `name` or `pack.name` -> `pack.name`; a ref in another pack's namespace is an error.
fn qualify(pack_ref: &str, given: &str, file: &Path) -> Result<String, PackError> {
    let name = match given.split_once('.') {
        Some((pack, name)) if pack == pack_ref => name,
        Some((pack, _)) => {
            return Err(PackError::new(file, Some("ref"), format!("`{given}` is in pack `{pack}`, not `{pack_ref}`")));
        }
        None => given,
    };
    if pack_ref.len() + 1 + name.len() > attune_rules::MAX_REF_BYTES {
        let message = format!("`{pack_ref}.{name}` is longer than {} bytes", attune_rules::MAX_REF_BYTES);
        return Err(PackError::new(file, Some("ref"), message));
    }
    if !is_identifier(name) {
        return Err(PackError::new(file, Some("ref"), format!("`{given}`: a name is letters, digits and `_`")));
    }
    Ok(format!("{pack_ref}.{name}"))
}

/// Resolves one sensor manifest; every problem of it is reported. `triggers` are the refs
/// declared by the pack's trigger files.
fn resolve_sensor(
    pack_ref: &str,
    pack_dir: &Path,
    file: &Path,
    sensor: SensorManifest,
    triggers: &[String],
    context: &Value,
    ceilings: &HostCeilings,
) -> Result<(SensorSpec, Vec<SecretRef>), Vec<PackError>> {
    let mut errors = Vec::new();
    let sensor_ref = qualify(pack_ref, &sensor.sensor_ref, file).map_err(|e| errors.push(e)).ok();
    if sensor.triggers.is_empty() {
        errors.push(PackError::new(file, Some("triggers"), "a sensor must declare at least one trigger"));
    }
    for (i, trigger) in sensor.triggers.iter().enumerate() {
        if CORE_TRIGGERS.contains(&trigger.as_str()) {
            let message = format!("`{trigger}` is fed by the host alone; a sensor emits its own pack's triggers");
            errors.push(PackError::new(file, Some(&format!("triggers[{i}]")), message));
            continue;
        }
        if !triggers.iter().any(|t| t == trigger) {
            let candidates = triggers.iter().map(String::as_str);
            errors.push(PackError::new(file, Some(&format!("triggers[{i}]")), unknown_trigger(trigger, candidates)));
        }
    }
    let code = entry_in_pack(pack_dir, file, &sensor.entry)
        .map_err(|e| errors.push(PackError::new(file, Some("entry"), e)))
        .ok()
        .map(|entry| match sensor.runtime {
            Runtime::Python => SensorCode::Python(entry),
            Runtime::Javascript => SensorCode::JavaScript(entry),
            Runtime::Component => SensorCode::Component(entry),
        });
    if let Err(e) = ceilings.check_poll_interval(sensor.poll_interval) {
        errors.push(PackError::new(file, Some("poll_interval"), e));
    }
    if let Err(e) = sensor.limits.validate_within(&ceilings.limits) {
        errors.push(PackError::new(file, Some("limits"), e));
    }
    let http = AllowedHosts::parse(&sensor.capabilities.http)
        .map_err(|e| errors.push(PackError::new(file, Some("capabilities.http"), e)))
        .ok();
    let paths = GrantedPaths::resolve(&sensor.capabilities.paths, pack_dir)
        .map_err(|e| errors.push(PackError::new(file, Some("capabilities.paths"), e)))
        .ok();
    // Secrets stay references here (rendered as themselves): they are resolved only when the
    // config is handed to the sensor.
    let references =
        secrets::references(&sensor.config, "config").map_err(|e| errors.push(PackError::at(file, e))).ok();
    let config = match (&sensor.config, &references) {
        (Value::Null, _) => Some(Value::Object(Default::default())),
        (config, Some(references)) => {
            let mut context = context.clone();
            context["secret"] = secrets::placeholders(references);
            attune_rules::template::render(config, &context)
                .map_err(|e| errors.push(PackError::new(file, Some("config"), e.to_string())))
                .ok()
        }
        (_, None) => None,
    };
    match (sensor_ref, code, http, paths, config, references) {
        (Some(sensor_ref), Some(code), Some(http), Some(paths), Some(config), Some(references))
            if errors.is_empty() =>
        {
            let spec = SensorSpec {
                sensor_ref,
                triggers: sensor.triggers,
                code,
                poll_interval: Duration::from_secs_f64(sensor.poll_interval),
                limits: sensor.limits,
                grants: Arc::new(Grants { http, paths }),
                config,
            };
            Ok((spec, references))
        }
        _ => Err(errors),
    }
}

/// The sensor's code file: `entry`, relative to the manifest's directory, must resolve (symlinks
/// followed) to a regular file beneath the pack directory. Nothing of the file is read here, so
/// no error quotes a file outside the pack.
fn entry_in_pack(pack_dir: &Path, manifest: &Path, entry: &Path) -> Result<PathBuf, String> {
    if entry.has_root() {
        return Err(format!("`{}`: must be a path relative to the manifest, inside the pack", entry.display()));
    }
    let path = manifest.parent().unwrap_or(pack_dir).join(entry);
    match inside_pack(pack_dir, &path) {
        Ok(real) if real.is_file() => Ok(path),
        Ok(_) => Err(format!("{}: not a regular file", path.display())),
        Err(OutsidePack::Missing) => Err(format!("{}: no such file", path.display())),
        Err(OutsidePack::Outside) => Err(format!("`{}` leads outside the pack directory", entry.display())),
        Err(OutsidePack::Io(e)) => Err(format!("{}: {e}", path.display())),
    }
}

enum OutsidePack {
    Missing,
    Outside,
    Io(std::io::Error),
}

/// `path` with its symlinks resolved, if that lies beneath `pack_dir` (resolved too).
fn inside_pack(pack_dir: &Path, path: &Path) -> Result<PathBuf, OutsidePack> {
    let pack = pack_dir.canonicalize().map_err(OutsidePack::Io)?;
    let real = path.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => OutsidePack::Missing,
        _ => OutsidePack::Io(e),
    })?;
    if real.starts_with(&pack) { Ok(real) } else { Err(OutsidePack::Outside) }
}

/// The text of a pack's `pack.yaml` or `<folder>/<name>.yaml`. Parse errors may quote it, so a
/// manifest that is a symlink out of the pack is refused unread: no other file's content
/// reaches an error, a log or an API answer.
fn read_pack_file(file: &Path) -> Result<String, PackError> {
    let pack_dir = match file.file_name() {
        Some(name) if name == "pack.yaml" => file.parent(),
        _ => file.parent().and_then(Path::parent),
    };
    if let Some(pack_dir) = pack_dir
        && let Err(OutsidePack::Outside) = inside_pack(pack_dir, file)
    {
        return Err(PackError::new(file, None, "leads outside the pack directory (through a symlink); not read"));
    }
    std::fs::read_to_string(file).map_err(|e| PackError::new(file, None, e.to_string()))
}

/// Loads the sensor described by one `sensors/<name>.yaml`, with its pack around it.
pub fn load_sensor_manifest(file: &Path) -> Result<SensorSpec, PackError> {
    load_sensor_manifest_in_pack(file).map(|(_, spec)| spec)
}

/// [`load_sensor_manifest`], also returning the pack (whose triggers the sensor emits for).
pub fn load_sensor_manifest_in_pack(file: &Path) -> Result<(Pack, SensorSpec), PackError> {
    let pack_dir =
        file.parent().and_then(Path::parent).filter(|dir| dir.join("pack.yaml").is_file()).ok_or_else(|| {
            PackError::new(file, None, "a sensor manifest must sit in <pack>/sensors/ next to <pack>/pack.yaml")
        })?;
    let pack = Pack::load(pack_dir)?;
    let canonical = file.canonicalize().map_err(|e| PackError::new(file, None, e.to_string()))?;
    let name = canonical.file_name().map(|n| n.to_os_string());
    let position = yaml_files(&pack_dir.join("sensors"))?
        .iter()
        .position(|f| f.file_name().map(|n| n.to_os_string()) == name)
        .ok_or_else(|| PackError::new(file, None, "not found among the pack's sensors"))?;
    let spec = pack.sensors[position].clone();
    Ok((pack, spec))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn trigger(param_schema: Option<Value>) -> TriggerManifest {
        TriggerManifest { trigger_ref: "p.t".into(), description: String::new(), payload_schema: None, param_schema }
    }

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn check_params_names_the_field() {
        let t = trigger(Some(json!({
            "type": "object",
            "required": ["url"],
            "properties": {"url": {"type": "string"}, "every": {"type": "integer"}},
            "additionalProperties": false
        })));
        assert_eq!(t.check_params(&params(json!({"url": "http://x"}))), Ok(()));
        let e = t.check_params(&params(json!({"url": 5}))).unwrap_err();
        assert_eq!(e.field, "trigger_params.url");
        assert!(e.message.contains("not of type"), "{e}");
        let e = t.check_params(&params(json!({}))).unwrap_err();
        assert_eq!(e.field, "trigger_params.url");
        let e = t.check_params(&params(json!({"url": "u", "evrey": 1}))).unwrap_err();
        assert_eq!(
            e,
            FieldError {
                field: "trigger_params.evrey".into(),
                message: "unknown key `evrey`; did you mean `every`?".into()
            }
        );
        let e = t.check_params(&params(json!({"url": "u", "zzz": 1}))).unwrap_err();
        assert_eq!(e.message, "unknown key `zzz` (known: `every`, `url`)");
    }

    #[test]
    fn empty_schemas_accept_anything() {
        let anything = params(json!({"a": 1, "b": [2]}));
        for schema in [None, Some(Value::Null), Some(json!({}))] {
            assert_eq!(trigger(schema).check_params(&anything), Ok(()));
        }
    }

    #[test]
    fn nested_places_are_named() {
        let schema = json!({
            "type": "object",
            "properties": {"hosts": {"type": "array", "items": {
                "type": "object", "properties": {"name": {"type": "string"}}, "additionalProperties": false
            }}}
        });
        let errors = schema_errors(&schema, &json!({"hosts": [{"name": "a"}, {"nmae": "b"}]}), "config").unwrap();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "config.hosts[1].nmae");
        assert!(errors[0].message.ends_with("did you mean `name`?"), "{}", errors[0]);
    }

    #[test]
    fn suggestions_are_close_or_absent() {
        assert_eq!(did_you_mean("tokne", ["token", "url"]), Some("token"));
        assert_eq!(did_you_mean("p.tikc", ["p.tick", "p.tock"]), Some("p.tick"));
        assert_eq!(did_you_mean("core.webhok", CORE_TRIGGERS), Some("core.webhook"));
        assert_eq!(did_you_mean("badpack.nope", CORE_TRIGGERS), None);
        assert_eq!(did_you_mean("x", ["y"]), Some("y"));
        assert_eq!(did_you_mean("ab", ["xy"]), None);
    }

    #[test]
    fn unknown_keys_and_values_get_the_closest_known_one() {
        let near = "unknown field `config_shema`, expected one of `ref`, `config_schema`, `config` at line 3 column 1";
        assert_eq!(suggestion(near).as_deref(), Some("config_schema"));
        let nested = "limits: unknown field `fule`, expected one of `fuel`, `memory_mib` at line 5 column 10";
        assert_eq!(suggestion(nested).as_deref(), Some("fuel"));
        assert_eq!(
            suggestion("unknown variant `pyhton`, expected `python` or `javascript`").as_deref(),
            Some("python")
        );
        assert_eq!(suggestion("unknown field `zzz`, expected `ref` or `version`"), None, "nothing close");
        assert_eq!(suggestion("missing field `ref`"), None);
        assert_eq!(unknown_trigger("tick", ["p.tick", "p.tock"]), "unknown trigger `tick`; did you mean `p.tick`?");
    }

    /// A pack's config holding secrets: the schema judges only that a string may stand there,
    /// and each secret must be held for the pack to load.
    #[test]
    fn secrets_in_pack_config_are_typed_and_required() {
        let dir = tempfile::tempdir().unwrap();
        let schema =
            "config_schema: {type: object, properties: {token: {type: string, minLength: 40}, port: {type: integer}}}";
        let manifest = |config: &str| {
            std::fs::write(
                dir.path().join("pack.yaml"),
                format!("ref: p\nversion: 1.0.0\n{schema}\nconfig: {config}\n"),
            )
            .unwrap();
            Pack::check(dir.path(), &HostCeilings::default())
        };
        let report = manifest(r#"{token: "{{ secret.TOKEN }}", port: 80}"#);
        assert!(report.errors.is_empty(), "the reference is not held to minLength: {:?}", report.errors);
        let pack = report.pack.unwrap();
        let mut held = Secrets::default();
        let unset = pack.unset_secrets(&held);
        assert_eq!(unset.len(), 1);
        assert_eq!(
            (unset[0].file.clone(), unset[0].field.as_deref()),
            (dir.path().join("pack.yaml"), Some("config.token"))
        );
        assert!(unset[0].message.starts_with("secret `TOKEN` is not set: set ATTUNE_SECRET_TOKEN"), "{}", unset[0]);
        held.insert("TOKEN", "short");
        assert_eq!(require_secrets(&[pack], &held), Ok(()));

        let report = manifest(r#"{token: "x", port: "{{ secret.PORT }}"}"#);
        let messages: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages.len(), 2, "{messages:?}");
        assert!(messages[0].contains("config.port") && messages[0].contains("is not of type"), "{messages:?}");
        assert!(messages[1].contains("config.token") && messages[1].contains("shorter than 40"), "{messages:?}");
    }

    #[test]
    fn manifest_errors_keep_line_and_column() {
        let dir = std::env::temp_dir().join(format!("attune-pack-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pack.yaml");
        std::fs::write(&file, "ref: p\nversion: 0.1.0\nconfig_shema: {}\n").unwrap();
        let e = Pack::load(&dir).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(e.file, file);
        assert!(e.message.contains("config_shema") && e.message.contains("line 3 column 1"), "{e}");
    }
}
