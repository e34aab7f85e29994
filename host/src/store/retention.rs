//! Retention: events older than the host's `retention`, with their enforcements, and published
//! outbox rows as old are deleted in small batches. An unpublished outbox row is never deleted,
//! whatever its age: what was stored is always published.

use super::StoreError;
use super::sql::{PgStore, SqliteStore};

/// What one [`RetentionStore::prune`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub events: u64,
    pub enforcements: u64,
    pub outbox: u64,
}

impl Pruned {
    /// Whether a batch was full, so more may be left to delete.
    pub fn full(&self, batch: i64) -> bool {
        let batch = u64::try_from(batch).unwrap_or(0);
        self.events >= batch || self.outbox >= batch
    }
}

/// Deleting what is past retention.
#[async_trait::async_trait]
pub trait RetentionStore: Send + Sync {
    /// Deletes, in one transaction, up to `batch` events created before `before` (Unix
    /// microseconds) with their enforcements, and up to `batch` published outbox rows as old.
    async fn prune(&self, before: i64, batch: i64) -> Result<Pruned, StoreError>;
}

/// The oldest `$2` events created before `$1`.
macro_rules! old_events {
    () => {
        "SELECT id FROM events WHERE created_at < $1 ORDER BY id LIMIT $2"
    };
}

const PRUNE_ENFORCEMENTS: &str = concat!("DELETE FROM enforcements WHERE event_id IN (", old_events!(), ")");
const PRUNE_EVENTS: &str = concat!("DELETE FROM events WHERE id IN (", old_events!(), ")");
const PRUNE_OUTBOX: &str = "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
                            WHERE published_at IS NOT NULL AND created_at < $1 ORDER BY id LIMIT $2)";

macro_rules! impl_retention_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl RetentionStore for $store {
            async fn prune(&self, before: i64, batch: i64) -> Result<Pruned, StoreError> {
                let mut tx = self.begin_write().await?;
                // Enforcements first: they refer to their events.
                let enforcements =
                    sqlx::query(PRUNE_ENFORCEMENTS).bind(before).bind(batch).execute(&mut *tx).await?.rows_affected();
                let events =
                    sqlx::query(PRUNE_EVENTS).bind(before).bind(batch).execute(&mut *tx).await?.rows_affected();
                let outbox =
                    sqlx::query(PRUNE_OUTBOX).bind(before).bind(batch).execute(&mut *tx).await?.rows_affected();
                tx.commit().await?;
                Ok(Pruned { events, enforcements, outbox })
            }
        }
    };
}

impl_retention_store!(SqliteStore);
impl_retention_store!(PgStore);
