//! Timer state: where each timer rule's schedule stands.

use super::StoreError;
use super::sql::{PgStore, SqliteStore};

/// Where a timer stands, so a restart neither repeats nor loses a fire. Times in Unix microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct TimerStateRecord {
    pub next_fire_at: Option<i64>,
    pub last_fire_at: Option<i64>,
    pub last_scheduled_at: Option<i64>,
    pub execution_count: i64,
}

/// Timer rules' schedules.
#[async_trait::async_trait]
pub trait TimerStateStore: Send + Sync {
    async fn timer_state(&self, rule_ref: &str) -> Result<Option<TimerStateRecord>, StoreError>;
    async fn save_timer_state(&self, rule_ref: &str, state: &TimerStateRecord) -> Result<(), StoreError>;
    async fn delete_timer_state(&self, rule_ref: &str) -> Result<(), StoreError>;
}

const TIMER_STATE: &str =
    "SELECT next_fire_at, last_fire_at, last_scheduled_at, execution_count FROM timer_state WHERE rule_ref = $1";
const SAVE_TIMER_STATE: &str = "INSERT INTO timer_state \
                                (rule_ref, next_fire_at, last_fire_at, last_scheduled_at, execution_count, updated_at) \
                                VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (rule_ref) DO UPDATE SET \
                                next_fire_at = excluded.next_fire_at, last_fire_at = excluded.last_fire_at, \
                                last_scheduled_at = excluded.last_scheduled_at, \
                                execution_count = excluded.execution_count, updated_at = excluded.updated_at";
const DELETE_TIMER_STATE: &str = "DELETE FROM timer_state WHERE rule_ref = $1";

macro_rules! impl_timer_state_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl TimerStateStore for $store {
            async fn timer_state(&self, rule_ref: &str) -> Result<Option<TimerStateRecord>, StoreError> {
                Ok(sqlx::query_as(TIMER_STATE).bind(rule_ref).fetch_optional(&self.pool).await?)
            }

            async fn save_timer_state(&self, rule_ref: &str, state: &TimerStateRecord) -> Result<(), StoreError> {
                sqlx::query(SAVE_TIMER_STATE)
                    .bind(rule_ref)
                    .bind(state.next_fire_at)
                    .bind(state.last_fire_at)
                    .bind(state.last_scheduled_at)
                    .bind(state.execution_count)
                    .bind(super::now_micros())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_timer_state(&self, rule_ref: &str) -> Result<(), StoreError> {
                sqlx::query(DELETE_TIMER_STATE).bind(rule_ref).execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

impl_timer_state_store!(SqliteStore);
impl_timer_state_store!(PgStore);
