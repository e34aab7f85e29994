//! Durable storage, split by concern into narrow traits that [`Store`] sums up, each implemented
//! for SQLite (embedded default, a file under `data/`) and PostgreSQL (production) from the same
//! SQL. Migrations for both dialects live in `migrations/`, with matching versions.
//!
//! | concern | trait | file |
//! |---|---|---|
//! | events, enforcements, outbox (the commit path) | [`EventStore`] | `events.rs` |
//! | rules | [`RuleStore`] | `rules.rs` |
//! | API tokens | [`ApiTokenStore`] | `tokens.rs` |
//! | sensor state | [`SensorStateStore`] | `sensor_state.rs` |
//! | sensor status (state, last error, counters) | [`SensorStatusStore`] | `sensor_status.rs` |
//! | timer state | [`TimerStateStore`] | `timer_state.rs` |
//! | first answers to repeatable requests | [`ReplayStore`] | `replays.rs` |
//! | deleting what is past retention | [`RetentionStore`] | `retention.rs` |
//! | hosts' leases, who owns which sensor and timer | [`MembershipStore`] | `membership.rs` |
//! | connections, migrations, readiness | [`Store`] | `sql.rs` |
//!
//! Writes from the pipeline arrive as [`Commit`]s: a poll's events, the sensor's state writes,
//! the enforcements its events produced and their outbox messages, all in one transaction, so a
//! cursor never runs ahead of what was stored and an enforcement never exists without its outbox
//! row. [`GroupCommitter`] batches concurrent commits into one transaction.

mod events;
mod group;
mod membership;
mod replays;
mod retention;
mod rules;
mod sensor_state;
mod sensor_status;
mod sql;
mod timer_state;
mod tokens;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use attune_bus::{Message, OutboxRow};
pub use events::{
    Commit, EnforcementRecord, EnforcementStatus, EventRecord, EventStore, ListFilter, UnknownEnforcementStatus,
};
pub use group::GroupCommitter;
pub use membership::{Fence, HostRecord, MembershipStore, OwnershipRecord, PackCopies, ROWS_PER_STATEMENT, WorkKind};
pub use replays::{PRUNE_BATCH, RETENTION_MICROS, ReplayRecord, ReplayStore, Written};
pub use retention::{Pruned, RetentionStore};
pub use rules::{RulePage, RuleStore, RuleWrite, StoredRule};
pub use sensor_state::{SensorStateStore, cleared};
pub use sensor_status::{SensorStatusRecord, SensorStatusStore, StatusWrite};
pub use sql::{PgStore, SqliteStore};
pub use timer_state::{TimerStateRecord, TimerStateStore};
pub use tokens::{ApiTokenRecord, ApiTokenStore};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored document is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("stored enforcement: {0}")]
    Status(#[from] UnknownEnforcementStatus),
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://..")]
    Url(String),
    #[error("the store's writer has stopped")]
    Closed,
    #[error("the store did not answer in time ({0})")]
    Timeout(&'static str),
}

/// The whole storage interface: every concern's trait, plus what concerns the database itself.
/// Implementations are safe to share between tasks; every method is one transaction or one read.
/// Shared as `Arc<dyn Store>`; the concern traits' methods are callable on it without importing
/// them.
#[async_trait::async_trait]
pub trait Store:
    EventStore
    + RuleStore
    + ApiTokenStore
    + SensorStateStore
    + SensorStatusStore
    + TimerStateStore
    + ReplayStore
    + RetentionStore
    + MembershipStore
    + Send
    + Sync
    + std::fmt::Debug
{
    /// How many transactions may write at once: 1 for SQLite (one writer; concurrent writers
    /// only wait on its lock), more for PostgreSQL. The group committer runs this many writers,
    /// and with one writer the relay marks rows published through it too.
    fn writers(&self) -> usize;
    /// Applies pending migrations. Called at start by `serve` and by `attune-host migrate`.
    async fn migrate(&self) -> Result<(), StoreError>;
    /// The cheapest round trip to the database (`SELECT 1`), for `GET /ready`.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// How often the relay also looks for rows nobody holds (unclaimed, or of a host whose lease
/// ended). They appear only when a lease ends or a command writes outside `serve`, and a takeover
/// waits for the lease (3 s) anyway; a round for this host's own rows, after each commit, skips
/// the look.
const ORPHANS_EVERY: Duration = Duration::from_secs(1);

/// The store as the bus relay's outbox: claims rows for this host directly, marks them through
/// the group committer.
#[derive(Debug, Clone)]
pub struct StoreOutbox {
    store: Arc<dyn Store>,
    committer: GroupCommitter,
    /// The claimer of the rows this relay publishes.
    host_id: String,
    /// When the relay last looked for rows nobody holds; `None`: never.
    orphans_looked_for: Arc<Mutex<Option<Instant>>>,
}

impl StoreOutbox {
    pub fn new(store: Arc<dyn Store>, committer: GroupCommitter, host_id: String) -> Self {
        Self { store, committer, host_id, orphans_looked_for: Arc::default() }
    }

    /// Whether this round looks for rows nobody holds (see [`ORPHANS_EVERY`]); if so, it counts
    /// as the look from now on.
    fn look_for_orphans(&self) -> bool {
        let mut last = self.orphans_looked_for.lock().unwrap_or_else(|e| e.into_inner());
        let due = last.is_none_or(|at| at.elapsed() >= ORPHANS_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

impl attune_bus::Outbox for StoreOutbox {
    type Error = Arc<StoreError>;

    async fn fetch_unpublished(&self, limit: usize) -> Result<Vec<OutboxRow>, Arc<StoreError>> {
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        self.store.claim_unpublished(&self.host_id, limit, self.look_for_orphans()).await.map_err(Arc::new)
    }

    async fn mark_published(&self, ids: &[i64]) -> Result<(), Arc<StoreError>> {
        if self.store.writers() == 1 {
            self.committer.commit(Commit { published: ids.to_vec(), ..Commit::default() }).await.map(drop)
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
