//! Replays: the first answer to a request that may come again (a webhook delivery with
//! `X-Attune-Delivery`, `POST /events` with an `Idempotency-Key`), kept so that a repeat answers
//! the same and stores nothing more.
//!
//! A record is written by [`EventStore::write`](super::EventStore::write) in the transaction of
//! the events it answers for ([`Commit::replay`]). Its key is claimed first, by an insert that
//! the table's primary key decides: of two claims of one key, the second waits for the first
//! transaction on PostgreSQL (and is serialized behind it by SQLite's one writer), then finds the
//! key taken, and its commit writes nothing ([`Written::Taken`]). So two identical requests in
//! flight at once store once, and no check-then-insert race exists. Keys are claimed in one
//! order in every transaction, so two transactions never wait on each other's keys.
//!
//! Records are kept at least [`RETENTION_MICROS`] (24 h): every write that claims a key also
//! deletes up to [`PRUNE_BATCH`] older ones, bounded work in the same transaction (PostgreSQL
//! skips rows another transaction is deleting rather than waiting for them).

use super::sql::{PgStore, SqliteStore};
use super::{Commit, StoreError};

/// How long a record is kept at least: 24 hours, in microseconds.
pub const RETENTION_MICROS: i64 = 24 * 60 * 60 * 1_000_000;
/// Most expired records one write deletes.
pub const PRUNE_BATCH: i64 = 100;

/// The first answer to a request with a key, in the scope the key is unique in.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReplayRecord {
    /// Where the key is unique: `webhook:<trigger ref>` for delivery ids, `token:<token id>`
    /// for idempotency keys.
    pub scope: String,
    /// The delivery id or idempotency key, as the client sent it.
    pub key: String,
    /// Lowercase hex SHA-256 of the request body the answer is for; another body with the same
    /// key is refused.
    pub request_hash: String,
    /// The HTTP status answered.
    pub status: i32,
    /// The response body answered, byte for byte.
    pub body: String,
    /// Unix microseconds.
    pub created_at: i64,
}

/// What became of one [`Commit`] of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Everything in it is stored (with its replay record, when it has one).
    Stored,
    /// Its replay key was taken already: nothing of it was written.
    Taken,
    /// Its fence no longer holds (another host owns its work now): nothing of it was written.
    Fenced,
}

/// Recorded answers. They are written with the events they answer for, through
/// [`EventStore::write`](super::EventStore::write).
#[async_trait::async_trait]
pub trait ReplayStore: Send + Sync {
    /// The recorded answer for `key` in `scope`, if there is one.
    async fn replay(&self, scope: &str, key: &str) -> Result<Option<ReplayRecord>, StoreError>;
    /// Deletes up to `limit` records created before `before` (Unix microseconds), oldest first;
    /// returns how many. Writes do this on their own; this is for operators and tests.
    async fn prune_replays(&self, before: i64, limit: i64) -> Result<u64, StoreError>;
}

const REPLAY: &str =
    "SELECT scope, key, request_hash, status, body, created_at FROM replays WHERE scope = $1 AND key = $2";
const CLAIM_REPLAY: &str = "INSERT INTO replays (scope, key, request_hash, status, body, created_at) \
                            VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (scope, key) DO NOTHING";
const PRUNE_REPLAYS_SQLITE: &str = "DELETE FROM replays WHERE rowid IN \
                                    (SELECT rowid FROM replays WHERE created_at < $1 ORDER BY created_at LIMIT $2)";
const PRUNE_REPLAYS_PG: &str = "DELETE FROM replays WHERE (scope, key) IN (SELECT scope, key FROM replays \
                                WHERE created_at < $1 ORDER BY created_at LIMIT $2 FOR UPDATE SKIP LOCKED)";

macro_rules! impl_replay_store {
    ($store:ty, $db:ty, $prune:expr) => {
        impl $store {
            /// Claims the replay keys of the `commits` still to be stored in `tx` (see the module
            /// docs), marking in `written` those whose key was taken, and prunes a batch of
            /// expired records.
            pub(super) async fn claim_replays(
                tx: &mut sqlx::Transaction<'static, $db>,
                commits: &[Commit],
                written: &mut [Written],
            ) -> Result<(), StoreError> {
                let mut claims: Vec<(usize, &ReplayRecord)> = commits
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| written[*i] == Written::Stored)
                    .filter_map(|(i, c)| Some((i, c.replay.as_ref()?)))
                    .collect();
                if claims.is_empty() {
                    return Ok(());
                }
                claims.sort_by(|(_, a), (_, b)| (&a.scope, &a.key).cmp(&(&b.scope, &b.key)));
                for (index, record) in claims {
                    let claimed = sqlx::query(CLAIM_REPLAY)
                        .bind(&record.scope)
                        .bind(&record.key)
                        .bind(&record.request_hash)
                        .bind(record.status)
                        .bind(&record.body)
                        .bind(record.created_at)
                        .execute(&mut **tx)
                        .await?;
                    if claimed.rows_affected() == 0 {
                        written[index] = Written::Taken;
                    }
                }
                let before = super::now_micros() - RETENTION_MICROS;
                sqlx::query($prune).bind(before).bind(PRUNE_BATCH).execute(&mut **tx).await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl ReplayStore for $store {
            async fn replay(&self, scope: &str, key: &str) -> Result<Option<ReplayRecord>, StoreError> {
                Ok(sqlx::query_as(REPLAY).bind(scope).bind(key).fetch_optional(&self.pool).await?)
            }

            async fn prune_replays(&self, before: i64, limit: i64) -> Result<u64, StoreError> {
                let done = sqlx::query($prune).bind(before).bind(limit).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }
        }
    };
}

impl_replay_store!(SqliteStore, sqlx::Sqlite, PRUNE_REPLAYS_SQLITE);
impl_replay_store!(PgStore, sqlx::Postgres, PRUNE_REPLAYS_PG);
