//! Event generator: a payload becomes an event only if its trigger exists, its source declared
//! that trigger, it fits the size limit and it is valid against the trigger's `payload_schema`.
//! A rejected payload is reported back to its source and nothing of it is stored.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::pack::{Pack, TriggerManifest};
use crate::store::{EventRecord, now_micros};

/// Where payloads come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A sensor, with the triggers its manifest declares.
    Sensor { sensor_ref: String, triggers: Vec<String> },
    /// A native timer of one rule, firing for the instant it was scheduled (Unix microseconds).
    /// Its events reach only that rule, and their ids derive from (rule, instant): a fire
    /// replayed after a crash is stored once.
    Timer { rule_ref: String, scheduled_at: i64 },
    /// A signed webhook call.
    Webhook,
    /// `POST /events` with a token allowed these triggers.
    Api { token: String, triggers: Vec<String> },
}

impl Source {
    fn declares(&self, trigger: &str) -> bool {
        match self {
            Source::Sensor { triggers, .. } | Source::Api { triggers, .. } => triggers.iter().any(|t| t == trigger),
            Source::Timer { .. } | Source::Webhook => true,
        }
    }

    /// The kind of source, a bounded metrics label.
    pub fn kind(&self) -> &'static str {
        match self {
            Source::Sensor { .. } => "sensor",
            Source::Timer { .. } => "timer",
            Source::Webhook => "webhook",
            Source::Api { .. } => "api",
        }
    }

    /// The `source` column of an event.
    pub fn label(&self) -> String {
        match self {
            Source::Sensor { sensor_ref, .. } => format!("sensor:{sensor_ref}"),
            Source::Timer { rule_ref, .. } => format!("timer:{rule_ref}"),
            Source::Webhook => "webhook".into(),
            Source::Api { token, .. } => format!("api:{token}"),
        }
    }
}

/// Why a payload was refused; `index` is its position in the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("payload {index}: unknown trigger `{trigger}`")]
    UnknownTrigger { index: usize, trigger: String },
    #[error("payload {index}: trigger `{trigger}` is not declared by {origin}")]
    Undeclared { index: usize, trigger: String, origin: String },
    #[error("payload {index}: {size} bytes exceeds the limit of {limit}")]
    TooLarge { index: usize, size: usize, limit: usize },
    #[error("payload {index}: does not match the payload_schema of `{trigger}`: {errors}")]
    Schema { index: usize, trigger: String, errors: String },
}

/// A trigger as the generator knows it: its schema compiled once.
struct TriggerCheck {
    schema: Option<jsonschema::Validator>,
}

/// The known triggers, replaced whole when packs are (re)loaded.
#[derive(Default)]
pub struct TriggerCatalog {
    triggers: HashMap<String, TriggerCheck>,
}

impl std::fmt::Debug for TriggerCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggerCatalog").field("triggers", &self.triggers.len()).finish()
    }
}

/// A trigger whose `payload_schema` is not a valid JSON Schema.
#[derive(Debug, Clone, thiserror::Error)]
#[error("trigger `{trigger}`: payload_schema: {message}")]
pub struct BadSchema {
    pub trigger: String,
    pub message: String,
}

impl TriggerCatalog {
    /// The core triggers plus every pack's.
    pub fn new<'a>(packs: impl IntoIterator<Item = &'a Pack>) -> Result<Self, BadSchema> {
        let mut catalog = Self::default();
        for core in crate::pack::CORE_TRIGGERS {
            catalog.triggers.insert(core.to_string(), TriggerCheck { schema: None });
        }
        for trigger in packs.into_iter().flat_map(|p| &p.triggers) {
            catalog.add(trigger)?;
        }
        Ok(catalog)
    }

    pub fn add(&mut self, trigger: &TriggerManifest) -> Result<(), BadSchema> {
        let schema = match &trigger.payload_schema {
            None | Some(Value::Null) => None,
            Some(schema) => Some(
                jsonschema::validator_for(schema)
                    .map_err(|e| BadSchema { trigger: trigger.trigger_ref.clone(), message: e.to_string() })?,
            ),
        };
        self.triggers.insert(trigger.trigger_ref.clone(), TriggerCheck { schema });
        Ok(())
    }

    pub fn contains(&self, trigger: &str) -> bool {
        self.triggers.contains_key(trigger)
    }
}

/// Checks a batch of payloads and turns them into events, all or none.
#[derive(Debug)]
pub struct EventGenerator {
    catalog: Arc<TriggerCatalog>,
    max_payload_bytes: usize,
}

impl EventGenerator {
    pub fn new(catalog: Arc<TriggerCatalog>, max_payload_bytes: usize) -> Self {
        Self { catalog, max_payload_bytes }
    }

    pub fn generate(&self, source: &Source, payloads: Vec<(String, Value)>) -> Result<Vec<EventRecord>, Rejected> {
        let created_at = now_micros();
        payloads
            .into_iter()
            .enumerate()
            .map(|(index, (trigger, payload))| {
                let Some(check) = self.catalog.triggers.get(&trigger) else {
                    return Err(Rejected::UnknownTrigger { index, trigger });
                };
                if !source.declares(&trigger) {
                    return Err(Rejected::Undeclared { index, trigger, origin: source.label() });
                }
                let size = payload.to_string().len();
                if size > self.max_payload_bytes {
                    return Err(Rejected::TooLarge { index, size, limit: self.max_payload_bytes });
                }
                if let Some(schema) = &check.schema {
                    let errors: Vec<String> = schema
                        .iter_errors(&payload)
                        .take(3)
                        .map(|e| format!("{} at `{}`", e, e.instance_path()))
                        .collect();
                    if !errors.is_empty() {
                        return Err(Rejected::Schema { index, trigger, errors: errors.join("; ") });
                    }
                }
                let id = match source {
                    Source::Timer { rule_ref, scheduled_at } => {
                        derived_id(*scheduled_at, &format!("{rule_ref}\0{scheduled_at}\0{index}"))
                    }
                    _ => uuid::Uuid::now_v7().to_string(),
                };
                Ok(EventRecord { id, trigger_ref: trigger, source: source.label(), payload, created_at })
            })
            .collect()
    }
}

/// A UUIDv7 for Unix time `micros` whose random bits are a hash of `key`: ordered by time like
/// any event id, and the same for the same key, so writing it twice is a no-op.
pub fn derived_id(micros: i64, key: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(key.as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    let millis = u64::try_from(micros / 1000).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid().to_string()
}
