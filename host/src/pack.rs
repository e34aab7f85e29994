//! Packs on disk (spec section 2): `pack.yaml`, `triggers/*.yaml`, `sensors/*.yaml`,
//! `rules/*.yaml`. Every error names the file and, where there is one, the field.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use attune_rules::RuleSpec;
use attune_timers::{TimerSpec, is_timer_trigger};
use serde::Deserialize;
use serde_json::Value;

use crate::capabilities::{AllowedHosts, GrantedPaths};
use crate::limits::Limits;
use crate::sandbox::{Grants, SensorCode};
use crate::sensor::SensorSpec;

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
    pub sensors: Vec<SensorSpec>,
    /// `rules/*.yaml`, each checked as the API would check it.
    pub rules: Vec<PackRule>,
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
}

fn read_yaml<T: serde::de::DeserializeOwned>(file: &Path) -> Result<T, PackError> {
    let text = std::fs::read_to_string(file).map_err(|e| PackError::new(file, None, e.to_string()))?;
    // serde_yaml's message already says which field and at which line and column.
    serde_yaml::from_str(&text).map_err(|e| PackError::new(file, None, e.to_string()))
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

/// Triggers every host provides without a pack.
pub const CORE_TRIGGERS: [&str; 4] = ["core.intervaltimer", "core.crontimer", "core.datetimetimer", "core.webhook"];

impl Pack {
    pub fn load(dir: &Path) -> Result<Self, PackError> {
        let manifest_file = dir.join("pack.yaml");
        let manifest: PackManifest = read_yaml(&manifest_file)?;
        let pack_ref = manifest.pack_ref.clone();
        if !is_identifier(&pack_ref) {
            return Err(PackError::new(
                &manifest_file,
                Some("ref"),
                format!("`{pack_ref}` must be letters, digits and `_`"),
            ));
        }

        let mut triggers = Vec::new();
        for file in yaml_files(&dir.join("triggers"))? {
            let mut trigger: TriggerManifest = read_yaml(&file)?;
            trigger.trigger_ref = qualify(&pack_ref, &trigger.trigger_ref, &file)?;
            for (field, schema) in
                [("payload_schema", &trigger.payload_schema), ("param_schema", &trigger.param_schema)]
            {
                if let Some(schema) = schema.as_ref().filter(|s| !s.is_null()) {
                    jsonschema::validator_for(schema).map_err(|e| PackError::new(&file, Some(field), e.to_string()))?;
                }
            }
            triggers.push(trigger);
        }

        let context = serde_json::json!({"pack": {"config": manifest.config}});
        let mut sensors = Vec::new();
        for file in yaml_files(&dir.join("sensors"))? {
            let sensor: SensorManifest = read_yaml(&file)?;
            sensors.push(resolve_sensor(&pack_ref, dir, &file, sensor, &triggers, &context)?);
        }
        let rules =
            yaml_files(&dir.join("rules"))?.into_iter().map(|file| load_rule(&file)).collect::<Result<_, _>>()?;
        Ok(Self { dir: dir.to_path_buf(), manifest, triggers, sensors, rules })
    }
}

/// Every pack under `dir` (each subdirectory with a `pack.yaml`), in name order; pack rules
/// must name a trigger of some loaded pack or a core one.
pub fn load_dir(dir: &Path) -> Result<Vec<Pack>, PackError> {
    let read = std::fs::read_dir(dir).map_err(|e| PackError::new(dir, None, e.to_string()))?;
    let mut dirs: Vec<PathBuf> =
        read.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join("pack.yaml").is_file()).collect();
    dirs.sort();
    let packs = dirs.iter().map(|d| Pack::load(d)).collect::<Result<Vec<_>, _>>()?;
    let known = |trigger: &str| {
        CORE_TRIGGERS.contains(&trigger) || packs.iter().flat_map(|p| &p.triggers).any(|t| t.trigger_ref == trigger)
    };
    for rule in packs.iter().flat_map(|p| &p.rules) {
        if !known(&rule.spec.trigger) {
            return Err(PackError::new(
                &rule.file,
                Some("trigger"),
                format!("unknown trigger `{}`", rule.spec.trigger),
            ));
        }
    }
    Ok(packs)
}

fn load_rule(file: &Path) -> Result<PackRule, PackError> {
    let text = std::fs::read_to_string(file).map_err(|e| PackError::new(file, None, e.to_string()))?;
    let spec = RuleSpec::from_yaml_str(&text).map_err(|e| PackError::new(file, None, e.to_string()))?;
    let rule = attune_rules::compile(spec.clone()).map_err(|e| PackError::new(file, Some(&e.field), e.message))?;
    if is_timer_trigger(rule.trigger()) {
        let params = Value::Object(rule.trigger_params().clone());
        TimerSpec::parse(rule.trigger(), &params).map_err(|e| PackError::new(file, Some(&e.field), e.message))?;
    }
    Ok(PackRule { file: file.to_path_buf(), spec })
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
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
    if !is_identifier(name) {
        return Err(PackError::new(file, Some("ref"), format!("`{given}`: a name is letters, digits and `_`")));
    }
    Ok(format!("{pack_ref}.{name}"))
}

fn resolve_sensor(
    pack_ref: &str,
    pack_dir: &Path,
    file: &Path,
    sensor: SensorManifest,
    triggers: &[TriggerManifest],
    context: &Value,
) -> Result<SensorSpec, PackError> {
    let sensor_ref = qualify(pack_ref, &sensor.sensor_ref, file)?;
    if sensor.triggers.is_empty() {
        return Err(PackError::new(file, Some("triggers"), "a sensor must declare at least one trigger"));
    }
    for (i, trigger) in sensor.triggers.iter().enumerate() {
        let known = triggers.iter().any(|t| &t.trigger_ref == trigger) || CORE_TRIGGERS.contains(&trigger.as_str());
        if !known {
            return Err(PackError::new(file, Some(&format!("triggers[{i}]")), format!("unknown trigger `{trigger}`")));
        }
    }
    let entry = file.parent().unwrap_or(pack_dir).join(&sensor.entry);
    let code = match sensor.runtime {
        Runtime::Python => SensorCode::Python(entry),
        Runtime::Javascript => SensorCode::JavaScript(entry),
        Runtime::Component => SensorCode::Component(entry),
    };
    if !code.path().is_file() {
        return Err(PackError::new(file, Some("entry"), format!("{}: no such file", code.path().display())));
    }
    if !(sensor.poll_interval > 0.0 && sensor.poll_interval.is_finite()) {
        return Err(PackError::new(file, Some("poll_interval"), "must be a positive number of seconds"));
    }
    sensor.limits.validate().map_err(|e| PackError::new(file, Some("limits"), e))?;
    let http = AllowedHosts::parse(&sensor.capabilities.http)
        .map_err(|e| PackError::new(file, Some("capabilities.http"), e))?;
    let paths = GrantedPaths::resolve(&sensor.capabilities.paths, pack_dir)
        .map_err(|e| PackError::new(file, Some("capabilities.paths"), e))?;
    let config = match &sensor.config {
        Value::Null => Value::Object(Default::default()),
        config => attune_rules::template::render(config, context)
            .map_err(|e| PackError::new(file, Some("config"), e.to_string()))?,
    };
    Ok(SensorSpec {
        sensor_ref,
        triggers: sensor.triggers,
        code,
        poll_interval: Duration::from_secs_f64(sensor.poll_interval),
        limits: sensor.limits,
        grants: Arc::new(Grants { http, paths }),
        config,
    })
}

/// Loads the sensor described by one `sensors/<name>.yaml`, with its pack around it.
pub fn load_sensor_manifest(file: &Path) -> Result<SensorSpec, PackError> {
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
    Ok(pack.sensors[position].clone())
}
