//! A sensor as the host runs it: resolved from a manifest or from a bare source file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{Grants, SensorCode};
use crate::limits::Limits;

/// Everything needed to run one sensor, with paths resolved and policies parsed.
#[derive(Debug, Clone)]
pub struct SensorSpec {
    pub sensor_ref: String,
    /// Trigger refs the sensor may emit; empty only for a bare file run without a manifest.
    pub triggers: Vec<String>,
    pub code: SensorCode,
    pub poll_interval: Duration,
    pub limits: Limits,
    pub grants: Arc<Grants>,
    /// Resolved `config`, handed to the sensor's `init` as JSON.
    pub config: Value,
}

impl SensorSpec {
    /// A sensor from a bare `.py`, `.js` or `.wasm` file, named after the file, with default
    /// limits, no grants and no declared triggers.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let code = SensorCode::from_path(path).ok_or_else(|| {
            format!("{}: expected a .py, .js, .wasm, sensor .yaml file or a pack directory", path.display())
        })?;
        let stem = path.file_stem().map_or_else(|| "sensor".into(), |s| s.to_string_lossy().into_owned());
        Ok(Self {
            sensor_ref: format!("local.{stem}"),
            triggers: Vec::new(),
            code,
            poll_interval: Duration::from_secs(1),
            limits: Limits::default(),
            grants: Arc::default(),
            config: Value::Object(Default::default()),
        })
    }

    /// A digest of everything the sensor runs with, its code file's bytes included: equal
    /// fingerprints mean a reload can keep the running instance. An unreadable code file gives
    /// a fingerprint of its own, so the sensor is restarted and reports the read error.
    pub fn fingerprint(&self) -> String {
        let mut digest = Sha256::new();
        digest.update(format!("{self:?}").as_bytes());
        match std::fs::read(self.code.path()) {
            Ok(bytes) => digest.update(&bytes),
            Err(e) => digest.update(e.to_string().as_bytes()),
        }
        hex::encode(digest.finalize())
    }

    pub fn limits_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.timeout_ms)
    }

    /// The trigger a payload is for: the named one if declared, else the only declared one.
    /// On error, returns the declared list for the message.
    pub fn resolve_trigger(&self, named: Option<&str>) -> Result<String, String> {
        match (named, self.triggers.as_slice()) {
            (None, [only]) => Ok(only.clone()),
            (None, []) => Ok(String::new()),
            (Some(t), []) => Ok(t.to_string()),
            (Some(t), declared) if declared.iter().any(|d| d == t) => Ok(t.to_string()),
            (_, declared) => Err(declared.join(", ")),
        }
    }
}
