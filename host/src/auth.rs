//! API tokens (spec section 6): who may call the HTTP API, and what for.
//!
//! | scope      | may call                                                        |
//! |------------|-----------------------------------------------------------------|
//! | `admin`    | every route                                                     |
//! | `readonly` | `GET` routes only                                               |
//! | `sensor`   | only `POST /api/v1/events`, and only for the triggers it lists  |
//!
//! A token is 32 random bytes shown once, as `attune_` followed by 64 lowercase hex digits. The
//! store keeps only its SHA-256 (hex): a token has 256 bits of entropy, so a fast unsalted hash
//! is enough to make a leaked table useless (a slow password hash protects low-entropy secrets,
//! which these are not), and it lets a request find its token with one indexed lookup.
//!
//! Unknown, revoked and expired tokens are [`AuthError::Unauthorized`] (401); a valid token used
//! outside its scope is [`AuthError::Forbidden`] (403). The checks fail closed: a stored scope
//! that does not parse authenticates nobody.
//!
//! [`Tokens`] is the service the API middleware, `serve` and the `token` commands use; the free
//! functions are the same operations on a store reference.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::{ApiTokenRecord, Store, StoreError, now_micros};

/// Every token starts with this, so secret scanners and people recognise it.
pub const TOKEN_PREFIX: &str = "attune_";
/// Random bytes per token.
const TOKEN_BYTES: usize = 32;
/// `last_used_at` is written at most this often per token (microseconds), so reads stay reads.
const LAST_USED_RESOLUTION: i64 = 60 * 1_000_000;
/// The file `bootstrap_admin` writes the first admin token to, inside the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Everything.
    Admin,
    /// `GET` routes only.
    Readonly,
    /// Only `POST /api/v1/events`, for the token's triggers.
    Sensor,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Admin => "admin",
            Scope::Readonly => "readonly",
            Scope::Sensor => "sensor",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = TokenError;

    fn from_str(s: &str) -> Result<Self, TokenError> {
        match s {
            "admin" => Ok(Scope::Admin),
            "readonly" => Ok(Scope::Readonly),
            "sensor" => Ok(Scope::Sensor),
            other => Err(TokenError::BadScope(other.to_string())),
        }
    }
}

/// What a route needs from the caller's token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading (`GET`): `admin` or `readonly`.
    Read,
    /// Posting events for external sensors: `admin` or `sensor` (the handler then checks the
    /// triggers with [`Principal::may_post`]).
    Ingest,
    /// Changing anything else: `admin` only.
    Admin,
}

/// A token as listed: everything but the secret and its hash. Times are Unix microseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub triggers: Vec<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl TokenInfo {
    fn from_record(record: &ApiTokenRecord) -> Result<Self, TokenError> {
        Ok(TokenInfo {
            id: record.id.clone(),
            name: record.name.clone(),
            scope: record.scope.parse()?,
            triggers: record.triggers.clone(),
            created_at: record.created_at,
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            last_used_at: record.last_used_at,
        })
    }

    /// Neither revoked nor expired at `now`.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }
}

/// The caller of an authenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub scope: Scope,
    /// For `sensor` tokens: the triggers they may post events for.
    pub triggers: Vec<String>,
}

impl Principal {
    /// Whether this token's scope covers `access`; `Forbidden` (403) otherwise.
    pub fn require(&self, access: Access) -> Result<(), AuthError> {
        let allowed = matches!(
            (self.scope, access),
            (Scope::Admin, _) | (Scope::Readonly, Access::Read) | (Scope::Sensor, Access::Ingest)
        );
        if allowed { Ok(()) } else { Err(AuthError::Forbidden(format!("a `{}` token may not do this", self.scope))) }
    }

    /// Whether this token may post an event for `trigger`: admin tokens for any trigger,
    /// sensor tokens for the triggers written in them, nobody else.
    pub fn may_post(&self, trigger: &str) -> bool {
        match self.scope {
            Scope::Admin => true,
            Scope::Sensor => self.triggers.iter().any(|t| t == trigger),
            Scope::Readonly => false,
        }
    }
}

/// Why a request is refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No token, or an unknown, revoked or expired one: 401.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A valid token outside its scope: 403.
    #[error("{0}")]
    Forbidden(String),
    /// The token could not be checked: 500.
    #[error("cannot check the token: {0}")]
    Store(#[from] StoreError),
}

/// Errors of token management (the `token` CLI and `bootstrap_admin`).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("unknown scope `{0}`: use admin, readonly or sensor")]
    BadScope(String),
    #[error("a sensor token needs at least one trigger")]
    SensorWithoutTriggers,
    #[error("only sensor tokens carry triggers")]
    TriggersWithoutSensor,
    #[error("the token name must not be empty")]
    EmptyName,
    #[error("bad expiry `{0}`: use an RFC 3339 time or a duration like 90d, 12h, 30m")]
    BadExpiry(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
}

/// API tokens over the store: authenticating requests and managing tokens. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tokens {
    store: Arc<dyn Store>,
}

impl Tokens {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// See [`authenticate`].
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal, AuthError> {
        authenticate(self.store.as_ref(), bearer).await
    }

    /// See [`create_token`].
    pub async fn create(
        &self,
        name: &str,
        scope: Scope,
        triggers: Vec<String>,
        expires_at: Option<i64>,
    ) -> Result<(String, TokenInfo), TokenError> {
        create_token(self.store.as_ref(), name, scope, triggers, expires_at).await
    }

    /// See [`list`].
    pub async fn list(&self) -> Result<Vec<TokenInfo>, TokenError> {
        list(self.store.as_ref()).await
    }

    /// See [`revoke`].
    pub async fn revoke(&self, id: &str) -> Result<bool, TokenError> {
        revoke(self.store.as_ref(), id).await
    }

    /// See [`bootstrap_admin`].
    pub async fn bootstrap_admin(&self, data_dir: &Path) -> Result<Option<PathBuf>, TokenError> {
        bootstrap_admin(self.store.as_ref(), data_dir).await
    }
}

/// SHA-256 of the whole token text, lowercase hex: what the store keeps.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh random token: `attune_` + 64 hex digits.
fn generate_token() -> String {
    let bytes: [u8; TOKEN_BYTES] = rand::random();
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// Creates a token and returns its text (to show once; it is not stored) and what is stored.
/// `triggers` must be non-empty for a `sensor` token and empty otherwise. `expires_at` is Unix
/// microseconds.
pub async fn create_token(
    store: &dyn Store,
    name: &str,
    scope: Scope,
    triggers: Vec<String>,
    expires_at: Option<i64>,
) -> Result<(String, TokenInfo), TokenError> {
    let (token, record) = new_record(name, scope, triggers, expires_at)?;
    store.insert_api_token(&record).await?;
    Ok((token, TokenInfo::from_record(&record)?))
}

fn new_record(
    name: &str,
    scope: Scope,
    triggers: Vec<String>,
    expires_at: Option<i64>,
) -> Result<(String, ApiTokenRecord), TokenError> {
    if name.trim().is_empty() {
        return Err(TokenError::EmptyName);
    }
    match scope {
        Scope::Sensor if triggers.is_empty() => return Err(TokenError::SensorWithoutTriggers),
        Scope::Admin | Scope::Readonly if !triggers.is_empty() => return Err(TokenError::TriggersWithoutSensor),
        _ => {}
    }
    let token = generate_token();
    let record = ApiTokenRecord {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_string(),
        token_hash: hash_token(&token),
        scope: scope.as_str().to_string(),
        triggers,
        created_at: now_micros(),
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    Ok((token, record))
}

/// An expiry as the `token create --expires` flag takes it: an RFC 3339 time, or a duration from
/// `now` (Unix microseconds) as a number followed by `s`, `m`, `h` or `d`. Returns Unix
/// microseconds.
pub fn parse_expiry(text: &str, now: i64) -> Result<i64, TokenError> {
    let bad = || TokenError::BadExpiry(text.to_string());
    if let Ok(at) = attune_rules::chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(at.timestamp_micros());
    }
    let duration = crate::duration::parse(text).ok_or_else(bad)?;
    i64::try_from(duration.as_micros()).ok().and_then(|micros| now.checked_add(micros)).ok_or_else(bad)
}

/// Every token, oldest first, revoked and expired ones included.
pub async fn list(store: &dyn Store) -> Result<Vec<TokenInfo>, TokenError> {
    store.api_tokens().await?.iter().map(TokenInfo::from_record).collect()
}

/// Revokes a token by id; it stops working at once. Returns false when there is no such active
/// token.
pub async fn revoke(store: &dyn Store, id: &str) -> Result<bool, TokenError> {
    Ok(store.revoke_api_token(id, now_micros()).await?)
}

/// Checks a bearer token (the text after `Bearer `) and returns who it is. Records the use in
/// `last_used_at` (at most once a minute per token). Does not check the scope: see
/// [`Principal::require`].
pub async fn authenticate(store: &dyn Store, bearer: &str) -> Result<Principal, AuthError> {
    let bearer = bearer.trim();
    if !bearer.starts_with(TOKEN_PREFIX) {
        return Err(AuthError::Unauthorized("not an Attune token"));
    }
    let Some(record) = store.api_token_by_hash(&hash_token(bearer)).await? else {
        return Err(AuthError::Unauthorized("unknown token"));
    };
    let now = now_micros();
    if record.revoked_at.is_some() {
        return Err(AuthError::Unauthorized("token revoked"));
    }
    if record.expires_at.is_some_and(|at| now >= at) {
        return Err(AuthError::Unauthorized("token expired"));
    }
    let Ok(scope) = record.scope.parse::<Scope>() else {
        tracing::error!(token = %record.id, scope = %record.scope, "stored token has an unknown scope");
        return Err(AuthError::Unauthorized("token has an unknown scope"));
    };
    if record.last_used_at.is_none_or(|at| now - at >= LAST_USED_RESOLUTION)
        && let Err(e) = store.touch_api_token(&record.id, now).await
    {
        // Bookkeeping only: a failed write must not refuse a valid token.
        tracing::warn!(token = %record.id, "cannot record token use: {e}");
    }
    Ok(Principal { token_id: record.id, name: record.name, scope, triggers: record.triggers })
}

/// On a store without any token (the first `serve`), creates an admin token, writes it to
/// `data_dir/admin.token` (mode 0600, replacing a stale file) and returns that path; returns
/// `None` when a token already exists. The file is written before the token is stored, so a
/// stored admin token is never lost to a failed write.
pub async fn bootstrap_admin(store: &dyn Store, data_dir: &Path) -> Result<Option<PathBuf>, TokenError> {
    if !store.api_tokens().await?.is_empty() {
        return Ok(None);
    }
    let (token, record) = new_record("bootstrap admin", Scope::Admin, Vec::new(), None)?;
    // One id for every host's attempt: of hosts starting together on an empty database, the
    // first insert wins and the others find the id taken.
    let record = ApiTokenRecord { id: BOOTSTRAP_TOKEN_ID.into(), ..record };
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    write_secret_file(&path, &format!("{token}\n"))
        .map_err(|source| TokenError::File { path: path.clone(), source })?;
    match store.insert_api_token(&record).await {
        Ok(()) => Ok(Some(path)),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            match e {
                StoreError::Database(db) if db.as_database_error().is_some_and(|d| d.is_unique_violation()) => Ok(None),
                e => Err(e.into()),
            }
        }
    }
}

/// The id of the first admin token, made by [`bootstrap_admin`].
pub const BOOTSTRAP_TOKEN_ID: &str = "bootstrap-admin";

/// Writes `text` to a new file readable only by its owner.
fn write_secret_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(scope: Scope, triggers: &[&str]) -> Principal {
        Principal {
            token_id: "t".into(),
            name: "n".into(),
            scope,
            triggers: triggers.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn scopes_cover_what_the_table_says() {
        use Access::*;
        let cases = [
            (Scope::Admin, [true, true, true]),
            (Scope::Readonly, [true, false, false]),
            (Scope::Sensor, [false, true, false]),
        ];
        for (scope, expected) in cases {
            let p = principal(scope, &["p.t"]);
            let got = [Read, Ingest, Admin].map(|a| p.require(a).is_ok());
            assert_eq!(got, expected, "{scope}");
        }
        assert!(principal(Scope::Sensor, &["p.t"]).may_post("p.t"));
        assert!(!principal(Scope::Sensor, &["p.t"]).may_post("p.u"));
        assert!(principal(Scope::Admin, &[]).may_post("p.u"));
        assert!(!principal(Scope::Readonly, &[]).may_post("p.t"));
    }

    #[test]
    fn tokens_are_prefixed_random_hex_and_stored_hashed() {
        let (token, record) = new_record("ci", Scope::Readonly, vec![], None).unwrap();
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == TOKEN_PREFIX.len() + 64, "{token}");
        assert_ne!(record.token_hash, token);
        assert_eq!(record.token_hash, hash_token(&token));
        let (other, _) = new_record("ci", Scope::Readonly, vec![], None).unwrap();
        assert_ne!(token, other);
        assert!(matches!(new_record("s", Scope::Sensor, vec![], None), Err(TokenError::SensorWithoutTriggers)));
        assert!(matches!(
            new_record("a", Scope::Admin, vec!["p.t".into()], None),
            Err(TokenError::TriggersWithoutSensor)
        ));
        assert!(matches!("root".parse::<Scope>(), Err(TokenError::BadScope(_))));
    }

    #[test]
    fn expiries_are_times_or_durations() {
        assert_eq!(parse_expiry("90d", 5).unwrap(), 5 + 90 * 86_400 * 1_000_000);
        assert_eq!(parse_expiry("30m", 0).unwrap(), 30 * 60 * 1_000_000);
        assert_eq!(parse_expiry("1970-01-01T00:00:01Z", 0).unwrap(), 1_000_000);
        for bad in ["", "d", "10", "10w", "0d", "-1d", "tomorrow", "99999999999999999999d"] {
            assert!(matches!(parse_expiry(bad, 0), Err(TokenError::BadExpiry(_))), "{bad}");
        }
    }
}
