//! API tokens: never the token itself, only its hash (see `crate::auth`).

use super::StoreError;
use super::sql::{PgStore, SqliteStore};

/// An API token as stored: never the token itself, only its hash (see `crate::auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTokenRecord {
    /// UUIDv7.
    pub id: String,
    pub name: String,
    /// Lowercase hex SHA-256 of the whole token text (`attune_...`).
    pub token_hash: String,
    /// `admin`, `readonly` or `sensor`.
    pub scope: String,
    /// Trigger refs a `sensor` token may post events for.
    pub triggers: Vec<String>,
    /// Unix microseconds, like every time below.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

/// API tokens.
#[async_trait::async_trait]
pub trait ApiTokenStore: Send + Sync {
    /// Stores a new API token; its id and hash are unique.
    async fn insert_api_token(&self, token: &ApiTokenRecord) -> Result<(), StoreError>;
    /// Every token, revoked and expired ones included, oldest first.
    async fn api_tokens(&self) -> Result<Vec<ApiTokenRecord>, StoreError>;
    /// The token with this hash, whatever its state. Called on every authenticated request.
    async fn api_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiTokenRecord>, StoreError>;
    /// Revokes a token at `at`. Returns false when there is no such token or it was already revoked.
    async fn revoke_api_token(&self, id: &str, at: i64) -> Result<bool, StoreError>;
    /// Records that a token was used at `at`.
    async fn touch_api_token(&self, id: &str, at: i64) -> Result<(), StoreError>;
}

#[derive(Debug, sqlx::FromRow)]
struct ApiTokenRow {
    id: String,
    name: String,
    token_hash: String,
    scope: String,
    /// A JSON array of trigger refs.
    triggers: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
}

impl TryFrom<ApiTokenRow> for ApiTokenRecord {
    type Error = StoreError;

    fn try_from(row: ApiTokenRow) -> Result<Self, StoreError> {
        let ApiTokenRow { id, name, token_hash, scope, triggers, created_at, expires_at, revoked_at, last_used_at } =
            row;
        let triggers = serde_json::from_str(&triggers)?;
        Ok(ApiTokenRecord { id, name, token_hash, scope, triggers, created_at, expires_at, revoked_at, last_used_at })
    }
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

const INSERT_API_TOKEN: &str = "INSERT INTO api_tokens \
                                (id, name, token_hash, scope, triggers, created_at, expires_at, revoked_at, last_used_at) \
                                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
const REVOKE_API_TOKEN: &str = "UPDATE api_tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";
const TOUCH_API_TOKEN: &str = "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1";

macro_rules! impl_api_token_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl ApiTokenStore for $store {
            async fn insert_api_token(&self, token: &ApiTokenRecord) -> Result<(), StoreError> {
                sqlx::query(INSERT_API_TOKEN)
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
                    sqlx::query_as(select_api_tokens!(" ORDER BY created_at, id")).fetch_all(&self.pool).await?;
                rows.into_iter().map(ApiTokenRecord::try_from).collect()
            }

            async fn api_token_by_hash(&self, token_hash: &str) -> Result<Option<ApiTokenRecord>, StoreError> {
                let row: Option<ApiTokenRow> = sqlx::query_as(select_api_tokens!(" WHERE token_hash = $1"))
                    .bind(token_hash)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map(ApiTokenRecord::try_from).transpose()
            }

            async fn revoke_api_token(&self, id: &str, at: i64) -> Result<bool, StoreError> {
                let done = sqlx::query(REVOKE_API_TOKEN).bind(id).bind(at).execute(&self.pool).await?;
                Ok(done.rows_affected() > 0)
            }

            async fn touch_api_token(&self, id: &str, at: i64) -> Result<(), StoreError> {
                sqlx::query(TOUCH_API_TOKEN).bind(id).bind(at).execute(&self.pool).await?;
                Ok(())
            }
        }
    };
}

impl_api_token_store!(SqliteStore);
impl_api_token_store!(PgStore);
