//! Sensor state: each sensor's key-value store, read when an instance starts. Written only
//! through [`Commit`](super::Commit)s, in the same transaction as the events it accounts for;
//! a reset (`DELETE /sensors/{ref}/state`, `sensor state reset`) is a commit of [`cleared`].

use std::collections::BTreeMap;

use super::StoreError;
use super::sql::{PgStore, SqliteStore};
use crate::sandbox::StateDelta;

/// The writes that delete every key of `stored` (a sensor's whole state, as read).
pub fn cleared(stored: BTreeMap<String, String>) -> StateDelta {
    stored.into_keys().map(|key| (key, None)).collect()
}

/// Sensors' committed state.
#[async_trait::async_trait]
pub trait SensorStateStore: Send + Sync {
    /// A sensor's committed state.
    async fn sensor_state(&self, sensor_ref: &str) -> Result<BTreeMap<String, String>, StoreError>;
}

#[derive(Debug, sqlx::FromRow)]
struct StateRow {
    key: String,
    value: String,
}

const SENSOR_STATE: &str = "SELECT key, value FROM sensor_state WHERE sensor_ref = $1";
/// Sets one key: `$1` sensor ref, `$2` key, `$3` value. Part of a commit (see `events.rs`).
pub(super) const UPSERT_STATE: &str = "INSERT INTO sensor_state (sensor_ref, key, value) VALUES ($1, $2, $3) \
                                       ON CONFLICT (sensor_ref, key) DO UPDATE SET value = excluded.value";
/// Removes one key: `$1` sensor ref, `$2` key. Part of a commit (see `events.rs`).
pub(super) const DELETE_STATE: &str = "DELETE FROM sensor_state WHERE sensor_ref = $1 AND key = $2";

macro_rules! impl_sensor_state_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl SensorStateStore for $store {
            async fn sensor_state(&self, sensor_ref: &str) -> Result<BTreeMap<String, String>, StoreError> {
                let rows: Vec<StateRow> = sqlx::query_as(SENSOR_STATE).bind(sensor_ref).fetch_all(&self.pool).await?;
                Ok(rows.into_iter().map(|row| (row.key, row.value)).collect())
            }
        }
    };
}

impl_sensor_state_store!(SqliteStore);
impl_sensor_state_store!(PgStore);
