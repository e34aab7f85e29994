//! Durable storage behind one narrow interface, with two implementations generated from the same
//! SQL: SQLite (embedded default, a file under `data/`) and PostgreSQL (production). Migrations
//! for both dialects live in `migrations/`, with matching versions.
//!
//! Writes from the pipeline arrive as [`Commit`]s: a poll's events, the sensor's state writes,
//! the enforcements its events produced and their outbox messages, all in one transaction, so a
//! cursor never runs ahead of what was stored and an enforcement never exists without its outbox
//! row. [`GroupCommitter`] batches concurrent commits into one transaction.

mod group;
mod sql;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;

pub use attune_bus::{Message, OutboxRow};
pub use group::GroupCommitter;
pub use sql::{PgStore, SqliteStore};

use crate::sandbox::StateDelta;

/// A stored event: one payload, accepted for one trigger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EventRecord {
    /// UUIDv7: unique across hosts, ordered by creation time.
    pub id: String,
    pub trigger_ref: String,
    /// Where it came from: `sensor:<ref>`, `timer:<rule>`, `webhook`, `api:<token>`.
    pub source: String,
    pub payload: Value,
    /// Unix microseconds.
    pub created_at: i64,
}

/// A rule matched an event: one per (rule, event), whatever happens.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EnforcementRecord {
    /// Derived from (rule, event), so writing the same enforcement twice is a no-op.
    pub id: String,
    pub rule_ref: String,
    pub event_id: String,
    pub trigger_ref: String,
    pub action_ref: String,
    /// Resolved action parameters; `None` when resolving them failed (see `error`).
    pub parameters: Option<Value>,
    /// `scheduled` (published for an executor) or `failed` (parameters could not be resolved).
    pub status: String,
    pub error: Option<String>,
    pub created_at: i64,
}

/// Everything one pipeline step writes, atomically.
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// The sensor whose state writes are in `state`.
    pub sensor_ref: Option<String>,
    pub state: StateDelta,
    pub events: Vec<EventRecord>,
    pub enforcements: Vec<EnforcementRecord>,
    pub outbox: Vec<Message>,
    /// Outbox rows the broker confirmed. Marked through the same writer as everything else, so
    /// the relay never contends with the pipeline for SQLite's single write lock.
    pub published: Vec<i64>,
}

/// A page of a list query, newest first. `before` is an id cursor from the previous page.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub trigger_ref: Option<String>,
    pub rule_ref: Option<String>,
    /// Unix microseconds, inclusive.
    pub since: Option<i64>,
    /// Unix microseconds, exclusive.
    pub until: Option<i64>,
    pub before: Option<String>,
    pub limit: u32,
}

/// A rule as stored: its spec as JSON plus what is indexed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRule {
    pub rule_ref: String,
    pub pack_ref: Option<String>,
    pub trigger_ref: String,
    pub enabled: bool,
    pub spec: Value,
}

/// Where a timer stands, so a restart neither repeats nor loses a fire. Times in Unix microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimerStateRecord {
    pub next_fire_at: Option<i64>,
    pub last_fire_at: Option<i64>,
    pub last_scheduled_at: Option<i64>,
    pub execution_count: i64,
}

/// An API token as stored: never the token itself, only its hash (see `crate::auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    /// UUIDv7.
    pub id: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the whole token text (`attune_...`).
    pub token_hash: String,
    /// `admin`, `readonly` or `sensor`.
    pub scope: String,
    /// Trigger refs a `sensor` token may post events for.
    pub triggers: Vec<String>,
    /// Unix microseconds, like every time below.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored document is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://..")]
    Url(String),
    #[error("the store's writer has stopped")]
    Closed,
}

/// The storage interface. Implementations are safe to share between tasks; every method is one
/// transaction or one read.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// How many transactions may write at once: 1 for SQLite (one writer; concurrent writers
    /// only wait on its lock), more for PostgreSQL. The group committer runs this many writers,
    /// and with one writer the relay marks rows published through it too.
    fn writers(&self) -> usize;
    /// Applies pending migrations. Called at start by `serve` and by `attune-host migrate`.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// Writes every commit in one transaction: all or nothing.
    async fn write(&self, commits: &[Commit]) -> Result<(), StoreError>;
    /// A sensor's committed state.
    async fn sensor_state(&self, sensor_ref: &str) -> Result<BTreeMap<String, String>, StoreError>;

    /// Oldest unpublished outbox rows first.
    async fn unpublished(&self, limit: u32) -> Result<Vec<OutboxRow>, StoreError>;
    /// Marks rows published; called only after the broker confirmed them.
    async fn mark_published(&self, ids: &[i64]) -> Result<(), StoreError>;
    async fn outbox_backlog(&self) -> Result<i64, StoreError>;

    async fn events(&self, filter: &ListFilter) -> Result<Vec<EventRecord>, StoreError>;
    async fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError>;
    async fn enforcements(&self, filter: &ListFilter) -> Result<Vec<EnforcementRecord>, StoreError>;

    async fn upsert_rule(&self, rule: &StoredRule) -> Result<(), StoreError>;
    /// Returns whether a rule was deleted.
    async fn delete_rule(&self, rule_ref: &str) -> Result<bool, StoreError>;
    async fn rules(&self) -> Result<Vec<StoredRule>, StoreError>;

    async fn timer_state(&self, rule_ref: &str) -> Result<Option<TimerStateRecord>, StoreError>;
    async fn save_timer_state(&self, rule_ref: &str, state: &TimerStateRecord) -> Result<(), StoreError>;
    async fn delete_timer_state(&self, rule_ref: &str) -> Result<(), StoreError>;

    /// The cheapest round trip to the database (`SELECT 1`), for `GET /ready`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Stores a new API token; its id and hash are unique.
    async fn insert_api_token(&self, token: &ApiTokenRecord) -> Result<(), StoreError>;
    /// Every token, revoked and expired ones included, oldest first.
    async fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError>;
    /// The token with this hash, whatever its state. Called on every authenticated request.
    async fn api_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiTokenRecord>, StoreError>;
    /// Revokes a token at `at`. Returns false when there is no such token or it was already revoked.
    async fn revoke_api_token(&self, id: &str, at: i64) -> Result<bool, StoreError>;
    /// Records that a token was used at `at`.
    async fn touch_api_token(&self, id: &str, at: i64) -> Result<(), StoreError>;
}

/// The store as the bus relay's outbox: reads directly, marks through the group committer.
#[derive(Debug, Clone)]
pub struct StoreOutbox {
    pub store: Arc<dyn Store>,
    pub committer: GroupCommitter,
}

impl attune_bus::Outbox for StoreOutbox {
    type Error = Arc<StoreError>;

    async fn fetch_unpublished(&self, limit: usize) -> Result<Vec<OutboxRow>, Arc<StoreError>> {
        self.store.unpublished(u32::try_from(limit).unwrap_or(u32::MAX)).await.map_err(Arc::new)
    }

    async fn mark_published(&self, ids: &[i64]) -> Result<(), Arc<StoreError>> {
        if self.store.writers() == 1 {
            self.committer.commit(Commit { published: ids.to_vec(), ..Commit::default() }).await
        } else {
            self.store.mark_published(ids).await.map_err(Arc::new)
        }
    }
}

/// Opens the store named by `url`: `sqlite://PATH` (created if missing) or `postgres://..`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(Arc::new(SqliteStore::open(std::path::Path::new(path)).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else {
        Err(StoreError::Url(url.to_string()))
    }
}

/// Current time in Unix microseconds.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
}
