//! The SQL behind [`Store`], written once and instantiated for SQLite and PostgreSQL by
//! `sql_store!`. Both dialects accept the same statements (`$n` parameters, `ON CONFLICT`,
//! multi-row `VALUES`); only the pool type and the migrations differ.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::QueryBuilder;
use sqlx::postgres::{PgPool, PgPoolOptions, Postgres};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::{
    ApiTokenRecord, Commit, EnforcementRecord, EventRecord, ListFilter, Message, OutboxRow, Store, StoreError,
    StoredRule, TimerStateRecord,
};

/// Rows per multi-row INSERT: well under both databases' bind-parameter limits.
const ROWS_PER_INSERT: usize = 500;
const MAX_PAGE: u32 = 1_000;

type EventRow = (String, String, String, String, i64);
type ApiTokenRow = (String, String, String, String, String, i64, Option<i64>, Option<i64>, Option<i64>);
type EnforcementRow = (String, String, String, String, String, Option<String>, String, Option<String>, i64);

fn event_from_row((id, trigger_ref, source, payload, created_at): EventRow) -> Result<EventRecord, StoreError> {
    Ok(EventRecord { id, trigger_ref, source, payload: serde_json::from_str(&payload)?, created_at })
}

fn enforcement_from_row(row: EnforcementRow) -> Result<EnforcementRecord, StoreError> {
    let (id, rule_ref, event_id, trigger_ref, action_ref, parameters, status, error, created_at) = row;
    let parameters = parameters.map(|p| serde_json::from_str(&p)).transpose()?;
    Ok(EnforcementRecord { id, rule_ref, event_id, trigger_ref, action_ref, parameters, status, error, created_at })
}

fn api_token_from_row(row: ApiTokenRow) -> Result<ApiTokenRecord, StoreError> {
    let (id, name, token_hash, scope, triggers, created_at, expires_at, revoked_at, last_used_at) = row;
    let triggers = serde_json::from_str(&triggers)?;
    Ok(ApiTokenRecord { id, name, token_hash, scope, triggers, created_at, expires_at, revoked_at, last_used_at })
}

/// `SELECT <every api_tokens column> FROM api_tokens` followed by `$rest`, as one literal.
macro_rules! select_api_tokens {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, token_hash, scope, triggers, created_at, expires_at, revoked_at, last_used_at FROM api_tokens",
            $rest
        )
    };
}

macro_rules! sql_store {
    ($store:ident, $db:ty, $pool:ty, $migrations:literal, $writers:expr) => {
        impl $store {
            /// Appends `filter`'s conditions to a query whose WHERE clause is already open.
            fn push_filter(query: &mut QueryBuilder<$db>, filter: &ListFilter) {
                if let Some(trigger_ref) = &filter.trigger_ref {
                    query.push(" AND trigger_ref = ").push_bind(trigger_ref.clone());
                }
                if let Some(rule_ref) = &filter.rule_ref {
                    query.push(" AND rule_ref = ").push_bind(rule_ref.clone());
                }
                if let Some(since) = filter.since {
                    query.push(" AND created_at >= ").push_bind(since);
                }
                if let Some(until) = filter.until {
                    query.push(" AND created_at < ").push_bind(until);
                }
                if let Some(before) = &filter.before {
                    query.push(" AND id < ").push_bind(before.clone());
                }
                // Ids are UUIDv7 text: newest first is id order.
                query.push(" ORDER BY id DESC LIMIT ").push_bind(i64::from(filter.limit.clamp(1, MAX_PAGE)));
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            fn writers(&self) -> usize {
                $writers
            }

            async fn migrate(&self) -> Result<(), StoreError> {
                sqlx::migrate!($migrations).run(&self.pool).await?;
                Ok(())
            }

            async fn write(&self, commits: &[Commit]) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                let events: Vec<&EventRecord> = commits.iter().flat_map(|c| &c.events).collect();
                for chunk in events.chunks(ROWS_PER_INSERT) {
                    let mut insert: QueryBuilder<$db> =
                        QueryBuilder::new("INSERT INTO events (id, trigger_ref, source, payload, created_at) ");
                    insert.push_values(chunk, |mut row, e| {
                        row.push_bind(e.id.clone())
                            .push_bind(e.trigger_ref.clone())
                            .push_bind(e.source.clone())
                            .push_bind(e.payload.to_string())
                            .push_bind(e.created_at);
                    });
                    // Timer events have ids derived from their scheduled instant: a replayed fire is a no-op.
                    insert.push(" ON CONFLICT (id) DO NOTHING");
                    insert.build().execute(&mut *tx).await?;
                }
                let enforcements: Vec<&EnforcementRecord> = commits.iter().flat_map(|c| &c.enforcements).collect();
                for chunk in enforcements.chunks(ROWS_PER_INSERT) {
                    let mut insert: QueryBuilder<$db> = QueryBuilder::new(
                        "INSERT INTO enforcements (id, rule_ref, event_id, trigger_ref, action_ref, parameters, status, error, created_at) ",
                    );
                    insert.push_values(chunk, |mut row, e| {
                        row.push_bind(e.id.clone())
                            .push_bind(e.rule_ref.clone())
                            .push_bind(e.event_id.clone())
                            .push_bind(e.trigger_ref.clone())
                            .push_bind(e.action_ref.clone())
                            .push_bind(e.parameters.as_ref().map(ToString::to_string))
                            .push_bind(e.status.clone())
                            .push_bind(e.error.clone())
                            .push_bind(e.created_at);
                    });
                    // One enforcement per (rule, event): a replay writes nothing new.
                    insert.push(" ON CONFLICT (rule_ref, event_id) DO NOTHING");
                    insert.build().execute(&mut *tx).await?;
                }
                let outbox: Vec<&Message> = commits.iter().flat_map(|c| &c.outbox).collect();
                let now = super::now_micros();
                for chunk in outbox.chunks(ROWS_PER_INSERT) {
                    let mut insert: QueryBuilder<$db> =
                        QueryBuilder::new("INSERT INTO outbox (message_id, routing_key, body, created_at) ");
                    insert.push_values(chunk, |mut row, m| {
                        row.push_bind(m.message_id.clone())
                            .push_bind(m.routing_key.clone())
                            .push_bind(m.body.to_string())
                            .push_bind(now);
                    });
                    insert.push(" ON CONFLICT (message_id) DO NOTHING");
                    insert.build().execute(&mut *tx).await?;
                }
                for commit in commits {
                    let Some(sensor_ref) = &commit.sensor_ref else { continue };
                    for (key, value) in &commit.state {
                        match value {
                            Some(value) => {
                                sqlx::query(
                                    "INSERT INTO sensor_state (sensor_ref, key, value) VALUES ($1, $2, $3) \
                                     ON CONFLICT (sensor_ref, key) DO UPDATE SET value = excluded.value",
                                )
                                .bind(sensor_ref)
                                .bind(key)
                                .bind(value)
                                .execute(&mut *tx)
                                .await?;
                            }
                            None => {
                                sqlx::query("DELETE FROM sensor_state WHERE sensor_ref = $1 AND key = $2")
                                    .bind(sensor_ref)
                                    .bind(key)
                                    .execute(&mut *tx)
                                    .await?;
                            }
                        }
                    }
                }
                let published: Vec<i64> = commits.iter().flat_map(|c| c.published.iter().copied()).collect();
                for chunk in published.chunks(ROWS_PER_INSERT) {
                    let mut update: QueryBuilder<$db> = QueryBuilder::new("UPDATE outbox SET published_at = ");
                    update.push_bind(now).push(" WHERE id IN (");
                    let mut list = update.separated(", ");
                    for id in chunk {
                        list.push_bind(*id);
                    }
                    update.push(")");
                    update.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn sensor_state(&self, sensor_ref: &str) -> Result<BTreeMap<String, String>, StoreError> {
                let rows: Vec<(String, String)> =
                    sqlx::query_as("SELECT key, value FROM sensor_state WHERE sensor_ref = $1")
                        .bind(sensor_ref)
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().collect())
            }

            async fn unpublished(&self, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
                let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
                    "SELECT id, message_id, routing_key, body FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(id, message_id, routing_key, body)| {
                        let body = serde_json::from_str(&body)?;
                        Ok(OutboxRow { id, message: Message { message_id, routing_key, body } })
                    })
                    .collect()
            }

            async fn mark_published(&self, ids: &[i64]) -> Result<(), StoreError> {
                self.write(&[Commit { published: ids.to_vec(), ..Commit::default() }]).await
            }

            async fn outbox_backlog(&self) -> Result<i64, StoreError> {
                let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(count)
            }

            async fn events(&self, filter: &ListFilter) -> Result<Vec<EventRecord>, StoreError> {
                let mut query: QueryBuilder<$db> =
                    QueryBuilder::new("SELECT id, trigger_ref, source, payload, created_at FROM events WHERE 1 = 1");
                Self::push_filter(&mut query, &ListFilter { rule_ref: None, ..filter.clone() });
                let rows: Vec<EventRow> = query.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(event_from_row).collect()
            }

            async fn event(&self, id: &str) -> Result<Option<EventRecord>, StoreError> {
                let row: Option<EventRow> =
                    sqlx::query_as("SELECT id, trigger_ref, source, payload, created_at FROM events WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(event_from_row).transpose()
            }

            async fn enforcements(&self, filter: &ListFilter) -> Result<Vec<EnforcementRecord>, StoreError> {
                let mut query: QueryBuilder<$db> = QueryBuilder::new(
                    "SELECT id, rule_ref, event_id, trigger_ref, action_ref, parameters, status, error, created_at \
                     FROM enforcements WHERE 1 = 1",
                );
                Self::push_filter(&mut query, filter);
                let rows: Vec<EnforcementRow> = query.build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(enforcement_from_row).collect()
            }

            async fn upsert_rule(&self, rule: &StoredRule) -> Result<(), StoreError> {
                let now = super::now_micros();
                sqlx::query(
                    "INSERT INTO rules (ref, pack_ref, trigger_ref, enabled, spec, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $6) \
                     ON CONFLICT (ref) DO UPDATE SET pack_ref = excluded.pack_ref, trigger_ref = excluded.trigger_ref, \
                     enabled = excluded.enabled, spec = excluded.spec, updated_at = excluded.updated_at",
                )
                .bind(&rule.rule_ref)
                .bind(&rule.pack_ref)
                .bind(&rule.trigger_ref)
                .bind(rule.enabled)
                .bind(rule.spec.to_string())
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn delete_rule(&self, rule_ref: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("DELETE FROM rules WHERE ref = $1").bind(rule_ref).execute(&self.pool).await?;
                Ok(done.rows_affected() > 0)
            }

            async fn rules(&self) -> Result<Vec<StoredRule>, StoreError> {
                let rows: Vec<(String, Option<String>, String, bool, String)> =
                    sqlx::query_as("SELECT ref, pack_ref, trigger_ref, enabled, spec FROM rules ORDER BY ref")
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter()
                    .map(|(rule_ref, pack_ref, trigger_ref, enabled, spec)| {
                        Ok(StoredRule { rule_ref, pack_ref, trigger_ref, enabled, spec: serde_json::from_str(&spec)? })
                    })
                    .collect()
            }

            async fn timer_state(&self, rule_ref: &str) -> Result<Option<TimerStateRecord>, StoreError> {
                let row: Option<(Option<i64>, Option<i64>, Option<i64>, i64)> = sqlx::query_as(
                    "SELECT next_fire_at, last_fire_at, last_scheduled_at, execution_count FROM timer_state WHERE rule_ref = $1",
                )
                .bind(rule_ref)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(next_fire_at, last_fire_at, last_scheduled_at, execution_count)| TimerStateRecord {
                    next_fire_at,
                    last_fire_at,
                    last_scheduled_at,
                    execution_count,
                }))
            }

            async fn save_timer_state(&self, rule_ref: &str, state: &TimerStateRecord) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO timer_state (rule_ref, next_fire_at, last_fire_at, last_scheduled_at, execution_count, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (rule_ref) DO UPDATE SET next_fire_at = excluded.next_fire_at, \
                     last_fire_at = excluded.last_fire_at, last_scheduled_at = excluded.last_scheduled_at, \
                     execution_count = excluded.execution_count, updated_at = excluded.updated_at",
                )
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
                sqlx::query("DELETE FROM timer_state WHERE rule_ref = $1").bind(rule_ref).execute(&self.pool).await?;
                Ok(())
            }

            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }

            async fn insert_api_token(&self, token: &ApiTokenRecord) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO api_tokens (id, name, token_hash, scope, triggers, created_at, expires_at, revoked_at, last_used_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(&token.id)
                .bind(&token.name)
                .bind(&token.token_hash)
                .bind(&token.scope)
                .bind(serde_json::to_string(&token.triggers)?)
                .bind(token.created_at)
                .bind(token.expires_at)
                .bind(token.revoked_at)
                .bind(token.last_used_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError> {
                let rows: Vec<ApiTokenRow> =
                    sqlx::query_as(select_api_tokens!(" ORDER BY created_at, id"))
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(api_token_from_row).collect()
            }

            async fn api_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
                let row: Option<ApiTokenRow> =
                    sqlx::query_as(select_api_tokens!(" WHERE token_hash = $1"))
                        .bind(token_hash)
                        .fetch_optional(&self.pool)
                        .await?;
                row.map(api_token_from_row).transpose()
            }

            async fn revoke_api_token(&self, id: &str, at: i64) -> Result<bool, StoreError> {
                let done = sqlx::query("UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                    .bind(id)
                    .bind(at)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn touch_api_token(&self, id: &str, at: i64) -> Result<(), StoreError> {
                sqlx::query("UPDATE api_tokens SET last_used_at = $2 WHERE id = $1")
                    .bind(id)
                    .bind(at)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}

/// SQLite in WAL mode: readers never block the writer, and `synchronous = NORMAL` makes a commit
/// an append to the log (durable across process crashes; the last commits may be lost on power
/// loss, the usual trade for an embedded store).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
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
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        Ok(Self { pool })
    }
}

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool =
            PgPoolOptions::new().max_connections(8).acquire_timeout(Duration::from_secs(10)).connect(url).await?;
        Ok(Self { pool })
    }

    /// Runs one statement outside a transaction (e.g. `CREATE DATABASE`, for test set-up).
    pub async fn execute_admin(&self, statement: &str) -> Result<(), StoreError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned())).execute(&self.pool).await?;
        Ok(())
    }
}

sql_store!(SqliteStore, sqlx::Sqlite, SqlitePool, "../migrations/sqlite", 1);
// Half the pool writes; the rest stays free for reads (API, relay fetches).
sql_store!(PgStore, Postgres, PgPool, "../migrations/postgres", 4);
