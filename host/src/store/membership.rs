//! Hosts and who owns what (spec section 7): each host's lease, renewed on the database's clock,
//! and each sensor's and timer's owner with its fencing token. The fence itself is checked by
//! the writes it guards, in their own transactions (`events.rs`, `timer_state.rs`).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use serde::Serialize;

use super::StoreError;
use super::sql::{PgStore, SqliteStore, db_now};

/// Items per acquire or release statement: a join moves hundreds of items in a few round trips.
pub const ROWS_PER_STATEMENT: usize = 500;

/// What a host may own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    Sensor,
    Timer,
}

impl WorkKind {
    pub const ALL: [WorkKind; 2] = [WorkKind::Sensor, WorkKind::Timer];

    /// The stored text: `sensor` or `timer`.
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkKind::Sensor => "sensor",
            WorkKind::Timer => "timer",
        }
    }
}

/// The right to write for one piece of work: its owner and generation when the owner took it. A
/// write carrying a fence is refused unless the store still records exactly this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub kind: WorkKind,
    /// Sensor ref or timer rule ref.
    pub item: String,
    pub owner: String,
    pub generation: i64,
}

/// A live host, as `GET /hosts` shows it. Times in Unix microseconds, on the database's clock.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HostRecord {
    pub id: String,
    pub listen: String,
    pub started_at: i64,
    pub last_seen: i64,
}

/// One piece of work and its owner.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OwnershipRecord {
    pub item: String,
    /// `None` once released, or before anyone took it.
    pub owner: Option<String>,
    pub generation: i64,
}

/// The packs hosts hold: the registered copy of each pack, and each host's copies, by fingerprint.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackCopies {
    /// Pack ref -> the fingerprint registered last.
    pub registered: HashMap<String, String>,
    /// Host id -> pack ref -> the fingerprint of that host's copy.
    pub hosts: HashMap<String, HashMap<String, String>>,
}

impl PackCopies {
    /// The packs of which `host` holds a copy other than the registered one.
    pub fn mismatched(&self, host: &str) -> BTreeSet<String> {
        let Some(copies) = self.hosts.get(host) else { return BTreeSet::new() };
        copies
            .iter()
            .filter(|(pack, fingerprint)| self.registered.get(*pack).is_some_and(|r| r != *fingerprint))
            .map(|(pack, _)| pack.clone())
            .collect()
    }

    /// Whether `host` may run a sensor of `pack`: its copy is the registered one (or no copy of
    /// the pack was ever registered, when there is nothing to compare).
    pub fn runs(&self, host: &str, pack: &str) -> bool {
        match self.registered.get(pack) {
            Some(registered) => self.hosts.get(host).and_then(|c| c.get(pack)) == Some(registered),
            None => true,
        }
    }
}

/// Hosts' leases and the ownership of work. A host is live while its lease lasts.
#[async_trait::async_trait]
pub trait MembershipStore: Send + Sync {
    /// Registers run `incarnation` of host `id` with a lease of `lease`, and gives up whatever an
    /// earlier run of `id` owned (its fences no longer hold). False, changing nothing, while
    /// another run of `id` holds a lease.
    async fn join(&self, id: &str, incarnation: &str, listen: &str, lease: Duration) -> Result<bool, StoreError>;
    /// Extends the lease of this run to `lease` from now. False when the row is another run's:
    /// this one was taken for dead and replaced.
    async fn renew(&self, id: &str, incarnation: &str, lease: Duration) -> Result<bool, StoreError>;
    /// Ends the lease of this run now and releases everything it owns (a graceful stop).
    async fn leave(&self, id: &str, incarnation: &str) -> Result<(), StoreError>;
    /// Hosts whose lease lasts, by id.
    async fn live_hosts(&self) -> Result<Vec<HostRecord>, StoreError>;
    /// Records pieces of work of `kind` that have no row yet (no owner).
    async fn register(&self, kind: WorkKind, items: &[String]) -> Result<(), StoreError>;
    /// Every piece of work of `kind`, by item.
    async fn ownership(&self, kind: WorkKind) -> Result<Vec<OwnershipRecord>, StoreError>;
    /// Makes `owner` the owner of each of `items` with its next generation, where the item has
    /// no owner or its owner's lease has ended; one statement per [`ROWS_PER_STATEMENT`] items.
    /// The items taken with their new generations; the rest are held by someone live.
    async fn acquire(&self, kind: WorkKind, items: &[String], owner: &str) -> Result<Vec<(String, i64)>, StoreError>;
    /// Gives up each of `held` (item, generation) that `owner` still holds at that generation.
    /// The items given up; the others were no longer this owner's.
    async fn release(&self, kind: WorkKind, owner: &str, held: &[(String, i64)]) -> Result<Vec<String>, StoreError>;
    /// Records `host`'s copies of its packs (ref, fingerprint), replacing what it recorded
    /// before; each becomes the registered copy if its pack has none yet, or if `register`.
    async fn record_packs(&self, host: &str, packs: &[(String, String)], register: bool) -> Result<(), StoreError>;
    /// The registered copies and every host's copies.
    async fn pack_copies(&self) -> Result<PackCopies, StoreError>;
}

/// `$1` id, `$2` incarnation, `$3` listen, `$4` lease µs; replaces only an expired row.
macro_rules! join_sql {
    ($dialect:ident) => {
        concat!(
            "INSERT INTO hosts (id, incarnation, listen, started_at, last_seen, lease_until) VALUES ($1, $2, $3, ",
            db_now!($dialect),
            ", ",
            db_now!($dialect),
            ", ",
            db_now!($dialect),
            " + $4) ON CONFLICT (id) DO UPDATE SET incarnation = excluded.incarnation, listen = excluded.listen, \
             started_at = excluded.started_at, last_seen = excluded.last_seen, lease_until = excluded.lease_until \
             WHERE hosts.lease_until <= ",
            db_now!($dialect)
        )
    };
}

macro_rules! impl_membership_store {
    ($store:ty, $dialect:ident, $share:literal, $lock_rows:literal, $lock_free_rows:literal) => {
        impl $store {
            /// Whether `fence` holds, read in `tx` and kept until it ends: on PostgreSQL the row
            /// is share-locked, so no takeover commits between this check and the write it guards.
            pub(super) async fn fence_holds<'c, E>(executor: E, fence: &Fence) -> Result<bool, StoreError>
            where
                E: sqlx::Executor<'c, Database = sqlx::$dialect>,
            {
                let held: Option<i32> = sqlx::query_scalar(concat!(
                    "SELECT 1 FROM ownership WHERE kind = $1 AND item = $2 AND owner = $3 AND generation = $4",
                    $share
                ))
                .bind(fence.kind.as_str())
                .bind(&fence.item)
                .bind(&fence.owner)
                .bind(fence.generation)
                .fetch_optional(executor)
                .await?;
                Ok(held.is_some())
            }

            /// Releases everything host `id` owns, in `tx`.
            async fn release_all_of(
                tx: &mut sqlx::Transaction<'static, sqlx::$dialect>,
                id: &str,
            ) -> Result<(), StoreError> {
                // Rows locked in (kind, item) order, as fence checks lock them: no deadlock with
                // a group commit that checks several fences.
                sqlx::query(concat!(
                    "UPDATE ownership SET owner = NULL, changed_at = ",
                    db_now!($dialect),
                    " WHERE (kind, item) IN (SELECT kind, item FROM ownership WHERE owner = $1",
                    $lock_rows,
                    ")"
                ))
                    .bind(id)
                    .execute(&mut **tx)
                    .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl MembershipStore for $store {
            async fn join(
                &self,
                id: &str,
                incarnation: &str,
                listen: &str,
                lease: Duration,
            ) -> Result<bool, StoreError> {
                let mut tx = self.begin_write().await?;
                let joined = sqlx::query(join_sql!($dialect))
                    .bind(id)
                    .bind(incarnation)
                    .bind(listen)
                    .bind(micros(lease))
                    .execute(&mut *tx)
                    .await?;
                if joined.rows_affected() == 0 {
                    return Ok(false);
                }
                Self::release_all_of(&mut tx, id).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn renew(&self, id: &str, incarnation: &str, lease: Duration) -> Result<bool, StoreError> {
                let renewed = sqlx::query(concat!(
                    "UPDATE hosts SET last_seen = ",
                    db_now!($dialect),
                    ", lease_until = ",
                    db_now!($dialect),
                    " + $3 WHERE id = $1 AND incarnation = $2"
                ))
                .bind(id)
                .bind(incarnation)
                .bind(micros(lease))
                .execute(&self.lease_pool)
                .await?;
                Ok(renewed.rows_affected() == 1)
            }

            async fn leave(&self, id: &str, incarnation: &str) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                let left = sqlx::query(concat!(
                    "UPDATE hosts SET lease_until = ",
                    db_now!($dialect),
                    " WHERE id = $1 AND incarnation = $2"
                ))
                .bind(id)
                .bind(incarnation)
                .execute(&mut *tx)
                .await?;
                if left.rows_affected() == 1 {
                    Self::release_all_of(&mut tx, id).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn live_hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT id, listen, started_at, last_seen FROM hosts WHERE lease_until > ",
                    db_now!($dialect),
                    " ORDER BY id"
                ))
                .fetch_all(&self.pool)
                .await?)
            }

            async fn register(&self, kind: WorkKind, items: &[String]) -> Result<(), StoreError> {
                for chunk in items.chunks(super::sql::ROWS_PER_INSERT) {
                    let mut insert = sqlx::QueryBuilder::new("INSERT INTO ownership (kind, item, changed_at) ");
                    insert.push_values(chunk, |mut row, item| {
                        row.push_bind(kind.as_str()).push_bind(item.clone()).push(db_now!($dialect));
                    });
                    insert.push(" ON CONFLICT (kind, item) DO NOTHING");
                    insert.build().execute(&self.pool).await?;
                }
                Ok(())
            }

            async fn ownership(&self, kind: WorkKind) -> Result<Vec<OwnershipRecord>, StoreError> {
                Ok(sqlx::query_as("SELECT item, owner, generation FROM ownership WHERE kind = $1 ORDER BY item")
                    .bind(kind.as_str())
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn acquire(
                &self,
                kind: WorkKind,
                items: &[String],
                owner: &str,
            ) -> Result<Vec<(String, i64)>, StoreError> {
                let mut taken = Vec::new();
                for chunk in items.chunks(ROWS_PER_STATEMENT) {
                    // Rows locked in (kind, item) order, as fence checks lock them; a row another
                    // transaction holds is left for the next round (a frozen owner's open
                    // transaction must not hold up a round).
                    let mut update = sqlx::QueryBuilder::new("UPDATE ownership SET owner = ");
                    update.push_bind(owner);
                    update.push(concat!(
                        ", generation = generation + 1, changed_at = ",
                        db_now!($dialect),
                        " WHERE (kind, item) IN (SELECT kind, item FROM ownership WHERE kind = "
                    ));
                    update.push_bind(kind.as_str());
                    update.push(" AND item IN (");
                    let mut each = update.separated(", ");
                    for item in chunk {
                        each.push_bind(item.as_str());
                    }
                    update.push(concat!(
                        ") AND (owner IS NULL OR owner NOT IN (SELECT id FROM hosts WHERE lease_until > ",
                        db_now!($dialect),
                        "))",
                        $lock_free_rows,
                        ") RETURNING item, generation"
                    ));
                    taken.extend(update.build_query_as::<(String, i64)>().fetch_all(&self.pool).await?);
                }
                Ok(taken)
            }

            async fn record_packs(
                &self,
                host: &str,
                packs: &[(String, String)],
                register: bool,
            ) -> Result<(), StoreError> {
                let mut tx = self.begin_write().await?;
                sqlx::query("DELETE FROM host_packs WHERE host_id = $1").bind(host).execute(&mut *tx).await?;
                let register_sql = if register {
                    concat!(
                        "INSERT INTO pack_versions (pack_ref, fingerprint, registered_by, registered_at) VALUES ($1, $2, $3, ",
                        db_now!($dialect),
                        ") ON CONFLICT (pack_ref) DO UPDATE SET fingerprint = excluded.fingerprint, \
                         registered_by = excluded.registered_by, registered_at = excluded.registered_at"
                    )
                } else {
                    concat!(
                        "INSERT INTO pack_versions (pack_ref, fingerprint, registered_by, registered_at) VALUES ($1, $2, $3, ",
                        db_now!($dialect),
                        ") ON CONFLICT (pack_ref) DO NOTHING"
                    )
                };
                for (pack, fingerprint) in packs {
                    sqlx::query("INSERT INTO host_packs (host_id, pack_ref, fingerprint) VALUES ($1, $2, $3)")
                        .bind(host)
                        .bind(pack)
                        .bind(fingerprint)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(register_sql).bind(pack).bind(fingerprint).bind(host).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn pack_copies(&self) -> Result<PackCopies, StoreError> {
                let registered: Vec<(String, String)> =
                    sqlx::query_as("SELECT pack_ref, fingerprint FROM pack_versions").fetch_all(&self.pool).await?;
                let copies: Vec<(String, String, String)> =
                    sqlx::query_as("SELECT host_id, pack_ref, fingerprint FROM host_packs")
                        .fetch_all(&self.pool)
                        .await?;
                let mut hosts: HashMap<String, HashMap<String, String>> = HashMap::new();
                for (host, pack, fingerprint) in copies {
                    hosts.entry(host).or_default().insert(pack, fingerprint);
                }
                Ok(PackCopies { registered: registered.into_iter().collect(), hosts })
            }

            async fn release(
                &self,
                kind: WorkKind,
                owner: &str,
                held: &[(String, i64)],
            ) -> Result<Vec<String>, StoreError> {
                let mut released = Vec::new();
                for chunk in held.chunks(ROWS_PER_STATEMENT) {
                    let mut update = sqlx::QueryBuilder::new(concat!(
                        "UPDATE ownership SET owner = NULL, changed_at = ",
                        db_now!($dialect),
                        " WHERE (kind, item) IN (SELECT kind, item FROM ownership WHERE kind = "
                    ));
                    update.push_bind(kind.as_str());
                    update.push(" AND owner = ");
                    update.push_bind(owner);
                    update.push(" AND (item, generation) IN (");
                    update.push_values(chunk, |mut row, (item, generation)| {
                        row.push_bind(item.as_str()).push_bind(*generation);
                    });
                    update.push(concat!(")", $lock_rows, ") RETURNING item"));
                    released.extend(update.build_query_scalar::<String>().fetch_all(&self.pool).await?);
                }
                Ok(released)
            }
        }
    };
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

// Byte order on both (PostgreSQL's collation might order refs otherwise than the host sorts them).
impl_membership_store!(SqliteStore, Sqlite, "", " ORDER BY kind, item", " ORDER BY kind, item");
impl_membership_store!(
    PgStore,
    Postgres,
    " FOR SHARE",
    " ORDER BY kind COLLATE \"C\", item COLLATE \"C\" FOR UPDATE",
    " ORDER BY kind COLLATE \"C\", item COLLATE \"C\" FOR UPDATE SKIP LOCKED"
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// Every shared connection busy (a burst of queued work) does not hold up a renewal.
    async fn renews_with_every_connection_taken<DB: sqlx::Database>(store: &dyn Store, pool: &sqlx::Pool<DB>) {
        store.migrate().await.unwrap();
        assert!(store.join("h1", "run-1", "127.0.0.1:1", Duration::from_secs(3)).await.unwrap());
        let mut taken = Vec::new();
        while let Ok(Ok(connection)) = tokio::time::timeout(Duration::from_millis(200), pool.acquire()).await {
            taken.push(connection);
        }
        assert!(!taken.is_empty());
        let renewal = tokio::time::timeout(Duration::from_secs(1), store.renew("h1", "run-1", Duration::from_secs(3)));
        assert!(matches!(renewal.await, Ok(Ok(true))), "the renewal waited for a shared connection");
    }

    #[tokio::test]
    async fn sqlite_renews_the_lease_while_the_pool_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("attune.db")).await.unwrap();
        renews_with_every_connection_taken(&store, &store.pool.clone()).await;
    }

    #[tokio::test]
    async fn postgres_renews_the_lease_while_the_pool_is_busy() {
        let admin = std::env::var("ATTUNE_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let name = format!("attune_test_{}", uuid::Uuid::now_v7().simple());
        PgStore::connect(&admin).await.unwrap().execute_admin(&format!("CREATE DATABASE {name}")).await.unwrap();
        let (server, _) = admin.rsplit_once('/').unwrap();
        let store = PgStore::connect(&format!("{server}/{name}")).await.unwrap();
        renews_with_every_connection_taken(&store, &store.pool.clone()).await;
    }
}
