//! The event pipeline: payload -> checked event -> rules on its trigger -> enforcements, all
//! written in one transaction together with the sensor's state writes and the outbox messages
//! (`event.created`, `enforcement.created`) that the relay then publishes on the bus.
//!
//! Matching happens before the commit but cannot outrun it: nothing a rule produced is visible
//! anywhere until the event it matched is stored in the same transaction.

mod generator;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use attune_rules::{ActionContext, CompiledRule, MatchInput, RuleIndex};
use serde_json::{Value, json};
use tokio::sync::Notify;

pub use generator::{BadSchema, EventGenerator, Rejected, Source, TriggerCatalog, derived_id};

use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::pack::Pack;
use crate::sandbox::StateDelta;
use crate::store::{Commit, EnforcementRecord, EventRecord, GroupCommitter, Message, StoreError};
use attune_bus::routing::{ENFORCEMENT_CREATED, EVENT_CREATED};

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("rejected: {0}")]
    Rejected(#[from] Rejected),
    #[error("not stored: {0}")]
    Store(Arc<StoreError>),
}

/// What one ingest stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    pub event_ids: Vec<String>,
    pub enforcements: usize,
}

/// The pipeline shared by every payload source.
#[derive(Debug)]
pub struct Pipeline {
    generator: RwLock<Arc<EventGenerator>>,
    rules: RwLock<RuleIndex>,
    /// Config of each pack, read by `{{ pack.config.* }}` in action parameters.
    pack_configs: RwLock<HashMap<String, Value>>,
    committer: GroupCommitter,
    /// The relay's wake-up: notified after every commit that wrote outbox rows.
    outbox_written: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// A pipeline for the core triggers and those of `packs`, with no rules yet.
    pub fn new(
        packs: &[Pack],
        committer: GroupCommitter,
        outbox_written: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BadSchema> {
        let (generator, pack_configs) = from_packs(packs)?;
        Ok(Self {
            generator: RwLock::new(generator),
            rules: RwLock::default(),
            pack_configs: RwLock::new(pack_configs),
            committer,
            outbox_written,
            metrics,
        })
    }

    /// Takes the triggers (with their payload schemas) and configs of `packs`, replacing those
    /// of earlier packs: at start and after a reload. On error nothing changes.
    pub fn set_packs(&self, packs: &[Pack]) -> Result<(), BadSchema> {
        let (generator, pack_configs) = from_packs(packs)?;
        *self.generator.write().unwrap_or_else(|e| e.into_inner()) = generator;
        *self.pack_configs.write().unwrap_or_else(|e| e.into_inner()) = pack_configs;
        Ok(())
    }

    /// Adds or replaces a rule; it applies to the next payload.
    pub fn upsert_rule(&self, rule: Arc<CompiledRule>) {
        self.rules.write().unwrap_or_else(|e| e.into_inner()).upsert(rule);
    }

    /// The rule with this ref, enabled or not.
    pub fn rule(&self, rule_ref: &str) -> Option<Arc<CompiledRule>> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).get(rule_ref).cloned()
    }

    /// Queues messages in the outbox (same writer and relay as events), e.g. `rule.*` changes.
    pub async fn publish(&self, messages: Vec<Message>) -> Result<(), Arc<StoreError>> {
        self.committer.commit(Commit { outbox: messages, ..Commit::default() }).await?;
        self.outbox_written.notify_one();
        Ok(())
    }

    /// Whether an enabled rule listens on `trigger` (a sensor runs only while one does).
    pub fn has_rules_for(&self, trigger: &str) -> bool {
        !self.rules.read().unwrap_or_else(|e| e.into_inner()).rules_for(trigger).is_empty()
    }

    /// Refs of every rule, enabled or not.
    pub fn rule_refs(&self) -> Vec<String> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).iter().map(|r| r.rule_ref().to_string()).collect()
    }

    pub fn remove_rule(&self, rule_ref: &str) -> bool {
        self.rules.write().unwrap_or_else(|e| e.into_inner()).remove(rule_ref).is_some()
    }

    /// Checks `payloads` (trigger ref, document) from `source`, stores them as events with their
    /// enforcements, outbox messages and `state` writes, all or nothing, and returns the event
    /// ids. A rejected payload rejects the batch: nothing is stored, state included.
    pub async fn ingest(
        &self,
        source: &Source,
        payloads: Vec<(String, Value)>,
        state: Option<(String, StateDelta)>,
    ) -> Result<Ingested, IngestError> {
        let generator = self.generator.read().unwrap_or_else(|e| e.into_inner()).clone();
        let events = generator.generate(source, payloads).inspect_err(|_| self.metrics.rejected(source.kind()))?;
        let mut commit = Commit::default();
        if let Some((sensor_ref, delta)) = state {
            commit.sensor_ref = Some(sensor_ref);
            commit.state = delta;
        }
        // A timer's events are for its own rule only, not for every rule on the timer trigger.
        let only_rule = match source {
            Source::Timer { rule_ref, .. } => Some(rule_ref.as_str()),
            _ => None,
        };
        self.match_rules(&events, only_rule, &mut commit);
        commit.outbox.extend(events.iter().map(event_message));
        let ingested = Ingested {
            event_ids: events.iter().map(|e| e.id.clone()).collect(),
            enforcements: commit.enforcements.len(),
        };
        let failed = commit.enforcements.iter().filter(|e| e.status == "failed").count();
        commit.events = events;
        let has_messages = !commit.outbox.is_empty();
        self.committer.commit(commit).await.map_err(IngestError::Store)?;
        if has_messages {
            self.outbox_written.notify_one();
        }
        self.metrics.ingested(source.kind(), ingested.event_ids.len(), ingested.enforcements - failed, failed);
        Ok(ingested)
    }

    fn match_rules(&self, events: &[EventRecord], only_rule: Option<&str>, commit: &mut Commit) {
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        let pack_configs = self.pack_configs.read().unwrap_or_else(|e| e.into_inner());
        let no_config = Value::Object(Default::default());
        for event in events {
            let candidates = rules.rules_for(&event.trigger_ref);
            if candidates.is_empty() {
                continue;
            }
            // `event.payload` is read from `payload` by the rule engine: no copy here.
            let event_doc = json!({"id": event.id, "trigger": event.trigger_ref, "source": event.source,
                                   "created_at": event.created_at});
            let trigger_doc = json!({"ref": event.trigger_ref});
            let input = MatchInput::new(&event.payload, &trigger_doc, &event_doc);
            let wanted = |rule: &&Arc<CompiledRule>| only_rule.is_none_or(|only| rule.rule_ref() == only);
            for rule in candidates.iter().filter(wanted).filter(|rule| rule.matches(&input)) {
                let pack_config = pack_configs.get(rule.pack()).unwrap_or(&no_config);
                let enforcement = enforce(rule, event, &input, pack_config);
                if enforcement.status == "scheduled" {
                    commit.outbox.push(enforcement_message(&enforcement));
                }
                commit.enforcements.push(enforcement);
            }
        }
    }
}

/// The event generator for the triggers of `packs`, and their configs by pack ref.
fn from_packs(packs: &[Pack]) -> Result<(Arc<EventGenerator>, HashMap<String, Value>), BadSchema> {
    let catalog = Arc::new(TriggerCatalog::new(packs)?);
    let generator = Arc::new(EventGenerator::new(catalog, Limits::default().max_payload_bytes));
    let configs = packs.iter().map(|p| (p.manifest.pack_ref.clone(), p.manifest.config.clone())).collect();
    Ok((generator, configs))
}

/// One enforcement of `rule` for `event`. Its id is derived from both (a UUIDv7 at the event's
/// time whose random bits hash the pair), so a replay produces the same row and the store's
/// uniqueness makes it a no-op.
fn enforce(rule: &CompiledRule, event: &EventRecord, input: &MatchInput<'_>, pack_config: &Value) -> EnforcementRecord {
    let (parameters, status, error) = match rule.render_action(input, &ActionContext::new(pack_config)) {
        Ok(parameters) => (Some(parameters), "scheduled", None),
        Err(e) => {
            tracing::warn!(rule = rule.rule_ref(), event = %event.id, "enforcement failed: {e}");
            (None, "failed", Some(e.to_string()))
        }
    };
    EnforcementRecord {
        id: derived_id(event.created_at, &format!("{}\0{}", rule.rule_ref(), event.id)),
        rule_ref: rule.rule_ref().to_string(),
        event_id: event.id.clone(),
        trigger_ref: event.trigger_ref.clone(),
        action_ref: rule.action_ref().to_string(),
        parameters,
        status: status.to_string(),
        error,
        created_at: event.created_at,
    }
}

fn event_message(event: &EventRecord) -> Message {
    Message {
        message_id: event.id.clone(),
        routing_key: EVENT_CREATED.into(),
        body: json!({"id": event.id, "trigger": event.trigger_ref, "source": event.source,
                     "payload": event.payload, "created_at": event.created_at}),
    }
}

fn enforcement_message(e: &EnforcementRecord) -> Message {
    Message {
        message_id: e.id.clone(),
        routing_key: ENFORCEMENT_CREATED.into(),
        body: json!({"id": e.id, "rule": e.rule_ref, "event_id": e.event_id, "trigger": e.trigger_ref,
                     "action": e.action_ref, "parameters": e.parameters, "created_at": e.created_at}),
    }
}
