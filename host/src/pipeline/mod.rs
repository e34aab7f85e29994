//! The event pipeline: payload -> checked event -> rules on its trigger -> enforcements, all
//! written in one transaction together with the sensor's state writes and the outbox messages
//! (`event.created`, `enforcement.created`) that the relay then publishes on the bus.
//!
//! Matching happens before the commit but cannot outrun it: nothing a rule produced is visible
//! anywhere until the event it matched is stored in the same transaction.

mod generator;

use std::sync::{Arc, RwLock};

use attune_rules::chrono::{DateTime, Utc};
use attune_rules::{ActionContext, CompiledRule, EventDocument, MatchInput, RuleIndex};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Notify;

pub use generator::{Payload, Rejected, Source, derived_id};

use crate::catalog::{PackCatalog, SharedCatalog};
use crate::metrics::Metrics;
use crate::sandbox::{StateDelta, TriggerInstance};
use crate::store::{
    Commit, EnforcementRecord, EnforcementStatus, EventRecord, Fence, GroupCommitter, Message, ReplayRecord, RuleWrite,
    StatusWrite, StoreError, Written,
};
use attune_bus::Body;
use attune_bus::routing::{ENFORCEMENT_CREATED, EVENT_CREATED};

/// Most enforcements one ingest (a poll, a request, a fire) may make: a batch beyond it is
/// refused whole, so one request cannot flood the store or starve the timers.
pub const MAX_ENFORCEMENTS_PER_INGEST: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("rejected: {0}")]
    Rejected(#[from] Rejected),
    #[error("not stored: {0}")]
    Store(Arc<StoreError>),
    /// The work's fence no longer holds: another host owns it now, and nothing was stored.
    #[error("not stored: {} `{}` is no longer this host's (generation {})", .0.kind.as_str(), .0.item, .0.generation)]
    Fenced(Fence),
}

/// What work a host owns writes beside its events: under its fence, with its status.
struct Owned {
    fence: Fence,
    statuses: Vec<StatusWrite>,
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
    /// Triggers (their payload schemas) and pack configs (`{{ pack.config.* }}`).
    catalog: Arc<SharedCatalog>,
    rules: RwLock<RuleIndex>,
    committer: GroupCommitter,
    /// The relay's wake-up: notified after every commit that wrote outbox rows.
    outbox_written: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Pipeline {
    /// A pipeline for the triggers of `catalog` (as it is at each payload), with no rules yet.
    pub fn new(
        catalog: Arc<SharedCatalog>,
        committer: GroupCommitter,
        outbox_written: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { catalog, rules: RwLock::default(), committer, outbox_written, metrics }
    }

    /// Adds or replaces a rule; it applies to the next payload.
    pub fn upsert_rule(&self, rule: Arc<CompiledRule>) {
        self.rules.write().unwrap_or_else(|e| e.into_inner()).upsert(rule);
    }

    /// The rule with this ref, enabled or not.
    pub fn rule(&self, rule_ref: &str) -> Option<Arc<CompiledRule>> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).get(rule_ref).cloned()
    }

    /// Stores rule changes with the messages announcing them (`rule.*`), in one transaction
    /// through the same writer and relay as events. False, storing nothing, when it creates a
    /// rule ([`RuleWrite::Create`]) whose ref exists.
    pub async fn record_rules(&self, rules: Vec<RuleWrite>, messages: Vec<Message>) -> Result<bool, Arc<StoreError>> {
        let has_messages = !messages.is_empty();
        let written = self.committer.commit(Commit { rules, outbox: messages, ..Commit::default() }).await?;
        if written != Written::Stored {
            return Ok(false);
        }
        if has_messages {
            self.outbox_written.notify_one();
        }
        Ok(true)
    }

    /// Stores sensor status changes and the messages announcing them, under `fence` when given,
    /// through the same writer and relay as events.
    pub async fn record_status(
        &self,
        statuses: Vec<StatusWrite>,
        messages: Vec<Message>,
        fence: Option<Fence>,
    ) -> Result<Written, Arc<StoreError>> {
        let has_messages = !messages.is_empty();
        let written = self.committer.commit(Commit { statuses, outbox: messages, fence, ..Commit::default() }).await?;
        if has_messages && written == Written::Stored {
            self.outbox_written.notify_one();
        }
        Ok(written)
    }

    /// Stores a sensor's state writes alone (a reset deletes every key) with the messages
    /// announcing them, through the same writer and relay as events.
    pub async fn record_state(
        &self,
        sensor_ref: &str,
        state: StateDelta,
        messages: Vec<Message>,
    ) -> Result<(), Arc<StoreError>> {
        let has_messages = !messages.is_empty();
        let commit = Commit { sensor_ref: Some(sensor_ref.to_string()), state, outbox: messages, ..Commit::default() };
        self.committer.commit(commit).await?;
        if has_messages {
            self.outbox_written.notify_one();
        }
        Ok(())
    }

    /// Stores a message for the bus alone (an announcement to the other hosts).
    pub async fn announce(&self, message: Message) -> Result<(), Arc<StoreError>> {
        self.committer.commit(Commit { outbox: vec![message], ..Commit::default() }).await?;
        self.outbox_written.notify_one();
        Ok(())
    }

    /// Whether an enabled rule listens on `trigger` (a sensor runs only while one does).
    pub fn has_rules_for(&self, trigger: &str) -> bool {
        !self.rules.read().unwrap_or_else(|e| e.into_inner()).rules_for(trigger).is_empty()
    }

    /// The enabled rules on `triggers`, with their `trigger_params`: the instances a sensor
    /// declaring those triggers serves.
    pub fn instances_for(&self, triggers: &[String]) -> Vec<TriggerInstance> {
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        triggers
            .iter()
            .flat_map(|trigger| rules.rules_for(trigger))
            .map(|rule| TriggerInstance {
                rule: rule.rule_ref().to_string(),
                trigger: rule.trigger().to_string(),
                params: Value::Object(rule.trigger_params().clone()),
            })
            .collect()
    }

    /// Refs of the enabled rules on a timer trigger.
    pub fn timer_rules(&self) -> Vec<String> {
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        rules
            .iter()
            .filter(|r| r.enabled() && attune_timers::is_timer_trigger(r.trigger()))
            .map(|r| r.rule_ref().to_string())
            .collect()
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
    pub async fn ingest<P: Into<Payload>>(
        &self,
        source: &Source,
        payloads: impl IntoIterator<Item = P>,
        state: Option<(String, StateDelta)>,
    ) -> Result<Ingested, IngestError> {
        Ok(self.ingest_with(source, payloads, state, None, |_| None).await?.0)
    }

    /// [`Pipeline::ingest`] for work a host owns (a sensor's poll, a timer's fire): stored only
    /// while `fence` holds, in the same transaction, with `statuses`; else
    /// [`IngestError::Fenced`].
    pub async fn ingest_owned<P: Into<Payload>>(
        &self,
        source: &Source,
        payloads: impl IntoIterator<Item = P>,
        state: Option<(String, StateDelta)>,
        fence: Fence,
        statuses: Vec<StatusWrite>,
    ) -> Result<Ingested, IngestError> {
        let owned = Owned { fence, statuses };
        Ok(self.ingest_with(source, payloads, state, Some(owned), |_| None).await?.0)
    }

    /// [`Pipeline::ingest`] of a request with a key: `answer` makes the record of what it
    /// answers, written in the same transaction under its key, unless the key is taken already;
    /// then nothing is stored and this returns `None` (the key's record holds the first answer).
    pub async fn ingest_once<P: Into<Payload>>(
        &self,
        source: &Source,
        payloads: impl IntoIterator<Item = P>,
        answer: impl FnOnce(&Ingested) -> ReplayRecord + Send,
    ) -> Result<Option<Ingested>, IngestError> {
        let (ingested, written) = self.ingest_with(source, payloads, None, None, |i| Some(answer(i))).await?;
        Ok((written == Written::Stored).then_some(ingested))
    }

    async fn ingest_with<P: Into<Payload>>(
        &self,
        source: &Source,
        payloads: impl IntoIterator<Item = P>,
        state: Option<(String, StateDelta)>,
        owned: Option<Owned>,
        replay: impl FnOnce(&Ingested) -> Option<ReplayRecord> + Send,
    ) -> Result<(Ingested, Written), IngestError> {
        let (fence, statuses) = owned.map_or((None, Vec::new()), |o| (Some(o.fence), o.statuses));
        let catalog = self.catalog.current();
        let payloads = payloads.into_iter().map(Into::into).collect();
        let events =
            generator::generate(&catalog, source, payloads).inspect_err(|_| self.metrics.rejected(source.kind()))?;
        let mut commit = Commit { fence: fence.clone(), statuses, ..Commit::default() };
        if let Some((sensor_ref, delta)) = state {
            commit.sensor_ref = Some(sensor_ref);
            commit.state = delta;
        }
        self.match_rules(&catalog, &events, &mut commit).inspect_err(|_| self.metrics.rejected(source.kind()))?;
        let scheduled = commit.enforcements.iter().filter(|e| e.status == EnforcementStatus::Scheduled);
        let messages = scheduled.map(enforcement_message).chain(events.iter().map(event_message));
        for message in messages {
            // Structs of strings, numbers and JSON values always serialize.
            commit.outbox.push(message.map_err(|e| IngestError::Store(Arc::new(StoreError::Json(e))))?);
        }
        let ingested = Ingested {
            event_ids: events.iter().map(|e| e.id.clone()).collect(),
            enforcements: commit.enforcements.len(),
        };
        commit.replay = replay(&ingested);
        // Reported once stored, so no log line tells of an enforcement that was rolled back.
        let failed: Vec<(String, String, String)> = commit
            .enforcements
            .iter()
            .filter(|e| e.status == EnforcementStatus::Failed)
            .map(|e| (e.rule_ref.clone(), e.event_id.clone(), e.error.clone().unwrap_or_default()))
            .collect();
        commit.events = events;
        let has_messages = !commit.outbox.is_empty();
        let written = self.committer.commit(commit).await.map_err(IngestError::Store)?;
        if written != Written::Stored {
            // Only a commit with a fence can be fenced.
            if let Some(fence) = fence.filter(|_| written == Written::Fenced) {
                self.metrics.fence_rejected(source.kind());
                return Err(IngestError::Fenced(fence));
            }
            return Ok((ingested, written));
        }
        if has_messages {
            self.outbox_written.notify_one();
        }
        self.metrics.ingested(source.kind(), ingested.event_ids.len(), ingested.enforcements - failed.len());
        for (rule, event, error) in &failed {
            self.metrics.enforcement_failed(rule, event, error);
        }
        Ok((ingested, written))
    }

    /// Matches `events` against their rules into `commit`; refuses a batch that would make more
    /// than [`MAX_ENFORCEMENTS_PER_INGEST`] enforcements, before it holds them all in memory.
    fn match_rules(&self, catalog: &PackCatalog, events: &[EventRecord], commit: &mut Commit) -> Result<(), Rejected> {
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        let now = Utc::now();
        for event in events {
            let candidates = rules.rules_for(&event.trigger_ref);
            if candidates.is_empty() {
                continue;
            }
            let document = event_document(event);
            // An event for one rule instance (a timer's, or a sensor payload naming its rule)
            // reaches that rule only.
            let wanted =
                |rule: &&Arc<CompiledRule>| event.rule_ref.as_deref().is_none_or(|only| rule.rule_ref() == only);
            for rule in candidates.iter().filter(wanted) {
                let input = rule.input(&event.payload, &document, now);
                if !rule.matches(&input) {
                    continue;
                }
                if commit.enforcements.len() == MAX_ENFORCEMENTS_PER_INGEST {
                    return Err(Rejected::TooManyEnforcements { limit: MAX_ENFORCEMENTS_PER_INGEST });
                }
                let enforcement = enforce(rule, event, &input, catalog.pack_config(rule.pack()));
                commit.enforcements.push(enforcement);
            }
        }
        Ok(())
    }
}

/// A message telling the other hosts (and executors) of a change on `routing_key`: `about`
/// names what changed, and with the time it makes the id (a change is announced once).
pub fn announcement(routing_key: &str, about: &str, at: i64, body: Value) -> Message {
    Message::new(routing_key, derived_id(at, &format!("{routing_key}\0{about}\0{at}")), body)
}

/// What rules read under `event.*` of a stored event: the same document every dry run builds.
pub fn event_document(event: &EventRecord) -> EventDocument {
    EventDocument::new(&event.id, &event.trigger_ref, &event.source, micros_to_time(event.created_at))
}

/// The Unix time (microseconds) written in a UUIDv7 event id; 0 for any other id.
fn id_time_micros(id: &str) -> i64 {
    let Some(timestamp) = uuid::Uuid::parse_str(id).ok().and_then(|u| u.get_timestamp()) else { return 0 };
    let (seconds, nanos) = timestamp.to_unix();
    i64::try_from(seconds).unwrap_or(0) * 1_000_000 + i64::from(nanos / 1_000)
}

fn micros_to_time(micros: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// One enforcement of `rule` for `event`. Its id is derived from both alone (a UUIDv7 at the
/// time written in the event's own id, whose random bits hash the pair), never from a clock, so
/// a replay of the event produces the same row and the same message, and the store's uniqueness
/// makes both no-ops.
fn enforce(rule: &CompiledRule, event: &EventRecord, input: &MatchInput<'_>, pack_config: &Value) -> EnforcementRecord {
    let (parameters, status, error) = match rule.render_action(input, &ActionContext::new(pack_config)) {
        Ok(parameters) => (Some(parameters), EnforcementStatus::Scheduled, None),
        Err(e) => (None, EnforcementStatus::Failed, Some(e.to_string())),
    };
    EnforcementRecord {
        id: derived_id(id_time_micros(&event.id), &format!("{}\0{}", rule.rule_ref(), event.id)),
        rule_ref: rule.rule_ref().to_string(),
        event_id: event.id.clone(),
        trigger_ref: event.trigger_ref.clone(),
        action_ref: rule.action_ref().to_string(),
        parameters,
        status,
        error,
        created_at: event.created_at,
    }
}

/// `event.created`: the event as consumers read it (keys in the order a JSON object of them
/// would have), serialized once, here.
fn event_message(event: &EventRecord) -> Result<Message, serde_json::Error> {
    #[derive(Serialize)]
    struct EventBody<'a> {
        created_at: i64,
        id: &'a str,
        payload: &'a Value,
        source: &'a str,
        trigger: &'a str,
    }
    let body = EventBody {
        created_at: event.created_at,
        id: &event.id,
        payload: &event.payload,
        source: &event.source,
        trigger: &event.trigger_ref,
    };
    Ok(Message::new(EVENT_CREATED, event.id.clone(), Body::serialize(&body)?))
}

/// `enforcement.created`: a scheduled enforcement for executors, serialized once, here.
fn enforcement_message(e: &EnforcementRecord) -> Result<Message, serde_json::Error> {
    #[derive(Serialize)]
    struct EnforcementBody<'a> {
        action: &'a str,
        created_at: i64,
        event_id: &'a str,
        id: &'a str,
        parameters: Option<&'a Value>,
        rule: &'a str,
        trigger: &'a str,
    }
    let body = EnforcementBody {
        action: &e.action_ref,
        created_at: e.created_at,
        event_id: &e.event_id,
        id: &e.id,
        parameters: e.parameters.as_ref(),
        rule: &e.rule_ref,
        trigger: &e.trigger_ref,
    };
    Ok(Message::new(ENFORCEMENT_CREATED, e.id.clone(), Body::serialize(&body)?))
}
