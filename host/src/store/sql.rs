//! The two databases behind [`Store`]: connections, migrations and readiness. Each concern's file
//! implements its trait for both, from the same SQL: both dialects accept the same statements
//! (`$n` parameters, `ON CONFLICT`, multi-row `VALUES`); only the pool type and the migrations
//! differ. Statements are constants; a concern's `impl_*!` macro only executes them against
//! each store's pool, and statements built at run time (multi-row inserts, list filters) are
//! built by functions generic over the database.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::encode::Encode;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Database, Type};

use super::{Store, StoreError};

/// The database's clock in Unix microseconds, as SQL of each dialect: leases and claims are
/// compared on one clock, whatever the hosts' clocks say.
macro_rules! db_now {
    (Sqlite) => {
        "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"
    };
    (Postgres) => {
        "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)"
    };
}
pub(super) use db_now;

/// Most rows one list query returns, whatever its `limit`.
pub(super) const MAX_PAGE: u32 = 1_000;

/// Connections kept for renewing this host's lease, beside the pool every other statement
/// shares: a burst of work queued for connections (a thousand sensors starting, a flood of API
/// reads) never delays a renewal until the lease lapses and the host stops all its work.
pub(super) const LEASE_CONNECTIONS: u32 = 1;

/// Rows per multi-row INSERT: well under both databases' bind-parameter limits.
pub(super) const ROWS_PER_INSERT: usize = 500;

/// A value a statement of either dialect binds: what `QueryBuilder::push_bind` takes.
pub(super) trait Bind<DB: Database>: for<'q> Encode<'q, DB> + Type<DB> {}

impl<DB: Database, T: for<'q> Encode<'q, DB> + Type<DB>> Bind<DB> for T {}

/// SQLite in WAL mode: readers never block the writer, and `synchronous = NORMAL` makes a commit
/// an append to the log (durable across process crashes; the last commits may be lost on power
/// loss, the usual trade for an embedded store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    /// One connection for lease renewals alone (see [`LEASE_CONNECTIONS`]).
    pub(super) lease_pool: SqlitePool,
}

impl SqliteStore {
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // A connection to a local file does not go stale: no ping before each use. Every
        // statement is a round trip to the connection's worker thread, and at a few polls a
        // second those thread switches are most of what a poll costs the host.
        let pool_options = SqlitePoolOptions::new().test_before_acquire(false);
        let lease_pool = pool_options.clone().max_connections(LEASE_CONNECTIONS).connect_lazy_with(options.clone());
        let pool = pool_options.max_connections(4).connect_with(options).await?;
        Ok(Self { pool, lease_pool })
    }
}

impl SqliteStore {
    /// A write transaction that takes the write lock at once (`BEGIN IMMEDIATE`): one that
    /// reads first (a fence, a replay key) would otherwise fail with `SQLITE_BUSY_SNAPSHOT`
    /// when another connection wrote in between, which waiting does not cure.
    pub(super) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.pool.begin_with("BEGIN IMMEDIATE").await
    }
}

#[derive(Debug, Clone)]
pub struct PgStore {
    pub(super) pool: PgPool,
    /// One connection for lease renewals alone (see [`LEASE_CONNECTIONS`]).
    pub(super) lease_pool: PgPool,
}

/// How long a statement waits for a PostgreSQL connection: an idle one that still answers a
/// ping, or a new one, connected and authenticated. Beyond it the statement fails with
/// `PoolTimedOut`, which the API answers as 503 `store_unavailable` with `Retry-After`: while the
/// database cannot be reached (down, refusing, or not answering at all), a request fails within
/// this bound instead of hanging. Well under a second, so that a request (one such wait before
/// it fails) answers within one. A pool reconnects by itself once the database is back.
pub const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_millis(750);
/// How long [`PgStore::connect`] waits for the database to come up at start (the first
/// connection only; later ones get [`PG_ACQUIRE_TIMEOUT`]).
pub const PG_STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long PostgreSQL lets a session sit idle inside a transaction (ms): under the lease (3 s),
/// far over any transaction of ours between two statements.
const PG_IDLE_IN_TRANSACTION_MS: &str = "2000";

impl PgStore {
    /// A pool on `url`, once its first connection is made: waiting up to [`PG_STARTUP_TIMEOUT`]
    /// while the server refuses connections or does not answer, failing at once on any other
    /// error (bad credentials, no such database), as a pool with that acquire timeout would.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        // A session that stops in the middle of a transaction (its host frozen, or gone without
        // closing the connection) is ended by the server, releasing its row locks: no host's
        // fence check or write holds up a takeover past the lease.
        let options = PgConnectOptions::from_str(url)?
            .options([("idle_in_transaction_session_timeout", PG_IDLE_IN_TRANSACTION_MS)]);
        let lease_pool = PgPoolOptions::new()
            .max_connections(LEASE_CONNECTIONS)
            .acquire_timeout(PG_ACQUIRE_TIMEOUT)
            .connect_lazy_with(options.clone());
        let pool =
            PgPoolOptions::new().max_connections(8).acquire_timeout(PG_ACQUIRE_TIMEOUT).connect_lazy_with(options);
        let started = std::time::Instant::now();
        loop {
            match pool.acquire().await {
                Ok(_) => return Ok(Self { pool, lease_pool }),
                // Refused connections are retried inside `acquire` until it times out.
                Err(sqlx::Error::PoolTimedOut) if started.elapsed() < PG_STARTUP_TIMEOUT => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// A write transaction (PostgreSQL's row locks order writers; see [`SqliteStore::begin_write`]).
    pub(super) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.pool.begin().await
    }

    /// Runs one statement outside a transaction (e.g. `CREATE DATABASE`, for test set-up).
    pub async fn execute_admin(&self, statement: &str) -> Result<(), StoreError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned())).execute(&self.pool).await?;
        Ok(())
    }
}

macro_rules! impl_store {
    ($store:ty, $migrations:literal, $writers:expr) => {
        #[async_trait::async_trait]
        impl Store for $store {
            fn writers(&self) -> usize {
                $writers
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                sqlx::migrate!($migrations).run(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

impl_store!(SqliteStore, "../migrations/sqlite", 1);
// Half the pool writes; the rest stays free for reads (API, relay fetches).
impl_store!(PgStore, "../migrations/postgres", 4);
