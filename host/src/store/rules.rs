//! Rules as stored: the spec as JSON, plus the columns lists filter on.

use serde_json::Value;

use super::StoreError;
use super::sql::{PgStore, SqliteStore};

/// A rule as stored: its spec as JSON plus what is indexed.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRule {
    pub rule_ref: String,
    pub pack_ref: Option<String>,
    pub trigger_ref: String,
    pub enabled: bool,
    pub spec: Value,
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

const UPSERT_RULE: &str = "INSERT INTO rules (ref, pack_ref, trigger_ref, enabled, spec, created_at, updated_at) \
                           VALUES ($1, $2, $3, $4, $5, $6, $6) \
                           ON CONFLICT (ref) DO UPDATE SET pack_ref = excluded.pack_ref, \
                           trigger_ref = excluded.trigger_ref, enabled = excluded.enabled, spec = excluded.spec, \
                           updated_at = excluded.updated_at";
const DELETE_RULE: &str = "DELETE FROM rules WHERE ref = $1";

macro_rules! impl_rule_store {
    ($store:ty) => {
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

            async fn rule(&self, rule_ref: &str) -> Result<Option<StoredRule>, StoreError> {
                let row: Option<RuleRow> =
                    sqlx::query_as(select_rules!(" WHERE ref = $1")).bind(rule_ref).fetch_optional(&self.pool).await?;
                row.map(StoredRule::try_from).transpose()
            }
        }
    };
}

impl_rule_store!(SqliteStore);
impl_rule_store!(PgStore);
