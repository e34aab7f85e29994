//! Event generator: a payload becomes an event only if its trigger exists, its source declared
//! that trigger and it is valid against the trigger's `payload_schema`. A rejected payload is
//! reported back to its source and nothing of it is stored.

use serde_json::Value;

use crate::catalog::{PackCatalog, PayloadMismatch};
use crate::pack::CORE_TRIGGERS;
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

    /// The host's own timers and webhooks, the only sources of core triggers.
    fn is_host(&self) -> bool {
        matches!(self, Source::Timer { .. } | Source::Webhook)
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

/// One payload offered to the pipeline, from any source.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub trigger: String,
    /// The rule instance it is for: only that rule sees the event. `None`: every rule on the trigger.
    pub rule: Option<String>,
    pub document: Value,
}

impl From<(String, Value)> for Payload {
    /// A payload for every rule on `trigger`.
    fn from((trigger, document): (String, Value)) -> Self {
        Self { trigger, rule: None, document }
    }
}

impl From<crate::sandbox::SensorPayload> for Payload {
    fn from(p: crate::sandbox::SensorPayload) -> Self {
        Self { trigger: p.trigger, rule: p.rule, document: p.payload }
    }
}

/// Why a payload was refused; `index` is its position in the batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("payload {index}: unknown trigger `{trigger}`")]
    UnknownTrigger { index: usize, trigger: String },
    #[error("payload {index}: trigger `{trigger}` is not declared by {origin}")]
    Undeclared { index: usize, trigger: String, origin: String },
    /// A core trigger from a sensor or `POST /events`: only the host's timers and webhooks
    /// feed them, so no one can forge a timer fire.
    #[error("payload {index}: `{trigger}` is fed by the host alone, not by {origin}")]
    HostOnly { index: usize, trigger: String, origin: String },
    #[error("payload {index}: {mismatch}")]
    Schema { index: usize, mismatch: PayloadMismatch },
    /// The batch matches more rules than one ingest may enforce.
    #[error("the payloads would make more than {limit} enforcements; send fewer at a time")]
    TooManyEnforcements { limit: usize },
}

/// Checks a batch of payloads against `catalog` and turns them into events, all or none. Sizes
/// are checked by each source against its own limit (a sensor's `max_payload_bytes`, the API's
/// body limits), before the payloads get here.
pub fn generate(catalog: &PackCatalog, source: &Source, payloads: Vec<Payload>) -> Result<Vec<EventRecord>, Rejected> {
    let created_at = now_micros();
    payloads
        .into_iter()
        .enumerate()
        .map(|(index, Payload { trigger, rule, document: payload })| {
            if catalog.trigger(&trigger).is_none() {
                return Err(Rejected::UnknownTrigger { index, trigger });
            }
            if !source.is_host() && CORE_TRIGGERS.contains(&trigger.as_str()) {
                return Err(Rejected::HostOnly { index, trigger, origin: source.label() });
            }
            if !source.declares(&trigger) {
                return Err(Rejected::Undeclared { index, trigger, origin: source.label() });
            }
            catalog.check_payload(&trigger, &payload).map_err(|mismatch| Rejected::Schema { index, mismatch })?;
            let (id, rule_ref) = match source {
                Source::Timer { rule_ref, scheduled_at } => {
                    (derived_id(*scheduled_at, &format!("{rule_ref}\0{scheduled_at}\0{index}")), Some(rule_ref.clone()))
                }
                _ => (uuid::Uuid::now_v7().to_string(), rule),
            };
            Ok(EventRecord { id, trigger_ref: trigger, rule_ref, source: source.label(), payload, created_at })
        })
        .collect()
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
