//! The documents a rule sees, built in one place for the live pipeline and every dry run
//! (`attune-host rule test`, `POST /api/v1/rules/test`), so a dry run answers as live does.
//! [`crate::CompiledRule::input`] puts them together for one rule.
//!
//! | root | document |
//! |---|---|
//! | `payload` | the event's payload |
//! | `trigger` | `{"ref": <trigger ref>, "params": <the rule's trigger_params>}` |
//! | `event` | `{"id", "trigger", "source", "created_at"}`; `created_at` is RFC 3339 UTC with milliseconds, as `{{ system.timestamp }}`; `event.payload` reads the payload |

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::path::{Step, walk_steps};

/// An event as rules read it under `event.*`: built once per event, shared by every rule on its
/// trigger. The payload is not copied in; `event.payload.*` reads the payload itself.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDocument(Value);

impl EventDocument {
    /// `source` is where the event came from (`sensor:<ref>`, `timer:<rule>`, `webhook`, ..).
    pub fn new(id: &str, trigger: &str, source: &str, created_at: DateTime<Utc>) -> Self {
        Self(json!({
            "id": id,
            "trigger": trigger,
            "source": source,
            "created_at": created_at.to_rfc3339_opts(SecondsFormat::Millis, true),
        }))
    }

    /// The event of a dry run on `trigger` at `now`: id and source `test`.
    pub fn dry_run(trigger: &str, now: DateTime<Utc>) -> Self {
        Self::new("test", trigger, "test", now)
    }

    /// The document (without `payload`).
    pub fn as_value(&self) -> &Value {
        &self.0
    }
}

/// The `trigger` document of a rule: its trigger ref and its own `trigger_params`.
pub(crate) fn trigger_document(rule_trigger: &str, params: &serde_json::Map<String, Value>) -> Value {
    json!({"ref": rule_trigger, "params": params})
}

/// What one rule is matched against: one event. Built only by [`crate::CompiledRule::input`]
/// (from the documents above), so every caller gives rules the same documents.
///
/// Field paths and templates read `payload.*`, `trigger.*` and `event.*` from here. `event` may
/// leave out its `payload` key: `event.payload.*` then reads `payload`, so the host need not copy
/// the payload into an event document.
#[derive(Debug, Clone, Copy)]
pub struct MatchInput<'a> {
    pub(crate) payload: &'a Value,
    pub(crate) trigger: &'a Value,
    pub(crate) event: &'a Value,
    /// "Now" for `timediff_lt` / `timediff_gt`.
    pub(crate) now: DateTime<Utc>,
}

impl<'a> MatchInput<'a> {
    /// Follows `steps` under the `event` root.
    pub(crate) fn event_steps(&self, steps: &[Step]) -> Option<&'a Value> {
        if let [Step::Key(first), rest @ ..] = steps
            && first == "payload"
            && self.event.get("payload").is_none()
        {
            return walk_steps(rest, self.payload);
        }
        walk_steps(steps, self.event)
    }
}
