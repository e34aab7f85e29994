//! Rules as stored: the spec as JSON, plus the columns lists filter on.

use serde_json::Value;

use super::StoreError;
use sqlx::{Database, QueryBuilder};

use super::sql::{Bind, PgStore, SqliteStore};

/// A rule as stored: its spec as JSON plus what is indexed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRule {
    pub rule_ref: String,
    pub pack_ref: Option<String>,
    pub trigger_ref: String,
    pub enabled: bool,
    pub spec: Value,
}

/// A rule change written in a [`Commit`](super::Commit), with its announcement.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleWrite {
    /// Insert the rule, or replace the one with its ref.
    Upsert(StoredRule),
    /// Insert the rule unless one with its ref exists (on any host): then nothing of its
    /// commit is written, which is [`Written::Taken`](super::Written::Taken).
    Create(StoredRule),
    /// Delete the rule with this ref, if there is one.
    Delete(String),
}

/// A page of rules in ref order, filtered.
#[derive(Debug, Clone, Default)]
pub struct RulePage {
    pub trigger_ref: Option<String>,
    pub pack_ref: Option<String>,
    pub enabled: Option<bool>,
    /// Only refs after this one (the cursor of the previous page).
    pub after: Option<String>,
    pub limit: u32,
}

/// Stored rules.
#[async_trait::async_trait]
pub trait RuleStore: Send + Sync {
    /// Inserts the rule, or replaces the one with its ref.
    async fn upsert_rule(&self, rule: &StoredRule) -> Result<(), StoreError>;
    /// Returns whether a rule was deleted.
    async fn delete_rule(&self, rule_ref: &str) -> Result<bool, StoreError>;
    /// Every rule, by ref.
    async fn rules(&self) -> Result<Vec<StoredRule>, StoreError>;
    /// The rule with this ref.
    async fn rule(&self, rule_ref: &str) -> Result<Option<StoredRule>, StoreError>;
    /// One page of rules, read in ref order from the primary key: its cost does not grow with
    /// the number of rules stored.
    async fn rules_page(&self, page: &RulePage) -> Result<Vec<StoredRule>, StoreError>;
}

#[derive(Debug, sqlx::FromRow)]
struct RuleRow {
    #[sqlx(rename = "ref")]
    rule_ref: String,
    pack_ref: Option<String>,
    trigger_ref: String,
    enabled: bool,
    spec: String,
}

impl TryFrom<RuleRow> for StoredRule {
    type Error = StoreError;

    fn try_from(row: RuleRow) -> Result<Self, StoreError> {
        let RuleRow { rule_ref, pack_ref, trigger_ref, enabled, spec } = row;
        Ok(StoredRule { rule_ref, pack_ref, trigger_ref, enabled, spec: serde_json::from_str(&spec)? })
    }
}

/// `SELECT <every rules column but the times> FROM rules` followed by `$rest`, as one literal.
macro_rules! select_rules {
    ($rest:literal) => {
        concat!("SELECT ref, pack_ref, trigger_ref, enabled, spec FROM rules", $rest)
    };
}

pub(super) const UPSERT_RULE: &str = "INSERT INTO rules (ref, pack_ref, trigger_ref, enabled, spec, created_at, updated_at) \
                           VALUES ($1, $2, $3, $4, $5, $6, $6) \
                           ON CONFLICT (ref) DO UPDATE SET pack_ref = excluded.pack_ref, \
                           trigger_ref = excluded.trigger_ref, enabled = excluded.enabled, spec = excluded.spec, \
                           updated_at = excluded.updated_at";
pub(super) const CREATE_RULE: &str = "INSERT INTO rules (ref, pack_ref, trigger_ref, enabled, spec, created_at, updated_at) \
                                      VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (ref) DO NOTHING";
pub(super) const DELETE_RULE: &str = "DELETE FROM rules WHERE ref = $1";

/// The query of a [`RulePage`].
fn page_query<DB>(page: &RulePage) -> QueryBuilder<DB>
where
    DB: Database,
    String: Bind<DB>,
    bool: Bind<DB>,
    i64: Bind<DB>,
{
    let mut query = QueryBuilder::new(select_rules!(" WHERE 1 = 1"));
    if let Some(after) = &page.after {
        query.push(" AND ref > ").push_bind(after.clone());
    }
    if let Some(trigger_ref) = &page.trigger_ref {
        query.push(" AND trigger_ref = ").push_bind(trigger_ref.clone());
    }
    if let Some(pack_ref) = &page.pack_ref {
        query.push(" AND pack_ref = ").push_bind(pack_ref.clone());
    }
    if let Some(enabled) = page.enabled {
        query.push(" AND enabled = ").push_bind(enabled);
    }
    query.push(" ORDER BY ref LIMIT ").push_bind(i64::from(page.limit.clamp(1, super::sql::MAX_PAGE)));
    query
}

macro_rules! impl_rule_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl RuleStore for $store {
            async fn upsert_rule(&self, rule: &StoredRule) -> Result<(), StoreError> {
                sqlx::query(UPSERT_RULE)
                    .bind(&rule.rule_ref)
                    .bind(&rule.pack_ref)
                    .bind(&rule.trigger_ref)
                    .bind(rule.enabled)
                    .bind(rule.spec.to_string())
                    .bind(super::now_micros())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn delete_rule(&self, rule_ref: &str) -> Result<bool, StoreError> {
                let done = sqlx::query(DELETE_RULE).bind(rule_ref).execute(&self.pool).await?;
                Ok(done.rows_affected() > 0)
            }

            async fn rules(&self) -> Result<Vec<StoredRule>, StoreError> {
                let rows: Vec<RuleRow> = sqlx::query_as(select_rules!(" ORDER BY ref")).fetch_all(&self.pool).await?;
                rows.into_iter().map(StoredRule::try_from).collect()
            }

            async fn rules_page(&self, page: &RulePage) -> Result<Vec<StoredRule>, StoreError> {
                let rows: Vec<RuleRow> = page_query::<$db>(page).build_query_as().fetch_all(&self.pool).await?;
                rows.into_iter().map(StoredRule::try_from).collect()
            }

            async fn rule(&self, rule_ref: &str) -> Result<Option<StoredRule>, StoreError> {
                let row: Option<RuleRow> =
                    sqlx::query_as(select_rules!(" WHERE ref = $1")).bind(rule_ref).fetch_optional(&self.pool).await?;
                row.map(StoredRule::try_from).transpose()
            }
        }
    };
}

impl_rule_store!(SqliteStore, sqlx::Sqlite);
impl_rule_store!(PgStore, sqlx::Postgres);
