//! Sensor status: how each sensor is doing (state, last error, counters), written by its owner
//! after every poll under the sensor's fence, read by every host (`GET /sensors`) and by the next
//! owner, which goes on from it. Written only through [`Commit`](super::Commit)s.

use super::StoreError;
use super::sql::{PgStore, SqliteStore};

/// One sensor's stored status. `state` is the supervisor's state word (`running`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct SensorStatusRecord {
    pub sensor_ref: String,
    pub state: String,
    pub last_error: Option<String>,
    pub last_failure_reason: Option<String>,
    pub consecutive_failures: i64,
    pub polls: i64,
    pub failures: i64,
    pub events: i64,
    pub fuel_used: i64,
}

/// A change to a sensor's status, part of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatusWrite {
    /// The owner's whole view after a poll.
    Snapshot(SensorStatusRecord),
    /// A restart asked for on any host: the failures in a row are forgotten and a quarantine
    /// lifted (state `idle` until the owner runs it again).
    Restart(String),
}

/// Sensors' stored status.
#[async_trait::async_trait]
pub trait SensorStatusStore: Send + Sync {
    /// Every stored status, by sensor ref.
    async fn sensor_statuses(&self) -> Result<Vec<SensorStatusRecord>, StoreError>;
    async fn sensor_status(&self, sensor_ref: &str) -> Result<Option<SensorStatusRecord>, StoreError>;
}

const COLUMNS: &str = "sensor_ref, state, last_error, last_failure_reason, consecutive_failures, polls, failures, \
                       events, fuel_used";

/// `$1`..`$9` the record's fields in [`COLUMNS`] order, `$10` the time. Part of a commit.
pub(super) const UPSERT_STATUS: &str = "INSERT INTO sensor_status (sensor_ref, state, last_error, \
    last_failure_reason, consecutive_failures, polls, failures, events, fuel_used, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (sensor_ref) DO UPDATE SET \
    state = excluded.state, last_error = excluded.last_error, last_failure_reason = excluded.last_failure_reason, \
    consecutive_failures = excluded.consecutive_failures, polls = excluded.polls, failures = excluded.failures, \
    events = excluded.events, fuel_used = excluded.fuel_used, updated_at = excluded.updated_at";
/// `$1` sensor ref, `$2` the time. Part of a commit.
pub(super) const RESTART_STATUS: &str =
    "UPDATE sensor_status SET state = 'idle', consecutive_failures = 0, updated_at = $2 WHERE sensor_ref = $1";

macro_rules! impl_sensor_status_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl SensorStatusStore for $store {
            async fn sensor_statuses(&self) -> Result<Vec<SensorStatusRecord>, StoreError> {
                let query = format!("SELECT {COLUMNS} FROM sensor_status ORDER BY sensor_ref");
                Ok(sqlx::query_as(sqlx::AssertSqlSafe(query)).fetch_all(&self.pool).await?)
            }

            async fn sensor_status(&self, sensor_ref: &str) -> Result<Option<SensorStatusRecord>, StoreError> {
                let query = format!("SELECT {COLUMNS} FROM sensor_status WHERE sensor_ref = $1");
                Ok(sqlx::query_as(sqlx::AssertSqlSafe(query)).bind(sensor_ref).fetch_optional(&self.pool).await?)
            }
        }
    };
}

impl_sensor_status_store!(SqliteStore);
impl_sensor_status_store!(PgStore);
