//! Timer state: where each timer rule's schedule stands.

use super::sql::{PgStore, SqliteStore};
use super::{Fence, StoreError};

/// Where a timer stands, so a restart neither repeats nor loses a fire. Times in Unix microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct TimerStateRecord {
    pub next_fire_at: Option<i64>,
    pub last_fire_at: Option<i64>,
    pub last_scheduled_at: Option<i64>,
    pub execution_count: i64,
}

#[derive(sqlx::FromRow)]
struct TimerStateRow {
    rule_ref: String,
    next_fire_at: Option<i64>,
    last_fire_at: Option<i64>,
    last_scheduled_at: Option<i64>,
    execution_count: i64,
}

/// Timer rules' schedules.
#[async_trait::async_trait]
pub trait TimerStateStore: Send + Sync {
    async fn timer_state(&self, rule_ref: &str) -> Result<Option<TimerStateRecord>, StoreError>;
    /// Saves the state of the timer of `rule_ref` while `fence` holds; false (nothing saved)
    /// once it does not.
    async fn save_timer_state(
        &self,
        rule_ref: &str,
        state: &TimerStateRecord,
        fence: &Fence,
    ) -> Result<bool, StoreError>;
    /// Every stored timer state, by rule ref (`GET /timers`).
    async fn timer_states(&self) -> Result<Vec<(String, TimerStateRecord)>, StoreError>;
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
const TIMER_STATES: &str = "SELECT rule_ref, next_fire_at, last_fire_at, last_scheduled_at, execution_count \
                            FROM timer_state ORDER BY rule_ref";
const DELETE_TIMER_STATE: &str = "DELETE FROM timer_state WHERE rule_ref = $1";

macro_rules! impl_timer_state_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl TimerStateStore for $store {
            async fn timer_state(&self, rule_ref: &str) -> Result<Option<TimerStateRecord>, StoreError> {
                Ok(sqlx::query_as(TIMER_STATE).bind(rule_ref).fetch_optional(&self.pool).await?)
            }

            async fn save_timer_state(
                &self,
                rule_ref: &str,
                state: &TimerStateRecord,
                fence: &Fence,
            ) -> Result<bool, StoreError> {
                let mut tx = self.begin_write().await?;
                if !Self::fence_holds(&mut *tx, fence).await? {
                    return Ok(false);
                }
                sqlx::query(SAVE_TIMER_STATE)
                    .bind(rule_ref)
                    .bind(state.next_fire_at)
                    .bind(state.last_fire_at)
                    .bind(state.last_scheduled_at)
                    .bind(state.execution_count)
                    .bind(super::now_micros())
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn timer_states(&self) -> Result<Vec<(String, TimerStateRecord)>, StoreError> {
                let rows: Vec<TimerStateRow> = sqlx::query_as(TIMER_STATES).fetch_all(&self.pool).await?;
                Ok(rows
                    .into_iter()
                    .map(|r| {
                        let TimerStateRow { rule_ref, next_fire_at, last_fire_at, last_scheduled_at, execution_count } =
                            r;
                        (rule_ref, TimerStateRecord { next_fire_at, last_fire_at, last_scheduled_at, execution_count })
                    })
                    .collect())
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
