//! `POST /api/v1/webhooks/{trigger_ref}`: a signed HTTP POST becomes one event of that trigger.
//!
//! - **Which trigger:** the one named in the path: `core.webhook` (the generic one) or any pack
//!   trigger. The core timer triggers are refused, so a webhook cannot impersonate a timer.
//! - **Secrets:** one per trigger, from [`WebhookSecrets`] (by default the environment variable
//!   `ATTUNE_WEBHOOK_SECRET_<TRIGGER>`, see [`WebhookSecrets::env_var`]). A trigger without a
//!   secret has no webhook (404): nothing is accepted unsigned.
//! - **Signature:** `X-Attune-Signature: sha256=<hex>`, the HMAC-SHA256 of the raw body with the
//!   trigger's secret (GitHub's scheme, with our header name), compared in constant time. Missing
//!   or wrong: 401 and nothing stored. The body is checked before it is parsed.
//! - **Body:** at most [`WEBHOOK_MAX_BODY_BYTES`] (413 beyond), a JSON object (400 when not JSON,
//!   422 when not an object); it is the event's payload as is, checked against the trigger's
//!   payload schema like any payload. The event's source is `webhook`.

use std::collections::HashMap;
use std::fmt;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{MethodRouter, post};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::ApiState;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::events::IngestedOut;
use crate::pipeline::Source;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-attune-signature";
/// Largest webhook body accepted; the pipeline's payload limit applies after parsing too.
pub const WEBHOOK_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Webhook secrets by trigger ref. `Debug` never shows a secret.
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    /// Keyed by [`WebhookSecrets::key`] of the trigger ref.
    secrets: HashMap<String, Vec<u8>>,
}

impl fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut triggers: Vec<&String> = self.secrets.keys().collect();
        triggers.sort();
        f.debug_struct("WebhookSecrets").field("triggers", &triggers).finish()
    }
}

impl WebhookSecrets {
    /// Prefix of the environment variables read by [`WebhookSecrets::from_env`].
    pub const ENV_PREFIX: &'static str = "ATTUNE_WEBHOOK_SECRET_";

    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the secret of a trigger. An empty secret is ignored: it would sign nothing.
    pub fn insert(&mut self, trigger_ref: &str, secret: impl Into<Vec<u8>>) {
        let secret = secret.into();
        if !secret.is_empty() {
            self.secrets.insert(Self::key(trigger_ref), secret);
        }
    }

    /// These secrets, with those of `other` replacing any for the same trigger.
    pub fn overlaid_with(mut self, other: WebhookSecrets) -> Self {
        self.secrets.extend(other.secrets);
        self
    }

    /// The secrets in `ATTUNE_WEBHOOK_SECRET_<TRIGGER>` variables of the process environment.
    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    /// The secrets among `vars` (name, value) named `ATTUNE_WEBHOOK_SECRET_<TRIGGER>`.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut secrets = Self::new();
        for (name, value) in vars {
            if let Some(key) = name.strip_prefix(Self::ENV_PREFIX).filter(|k| !k.is_empty()) {
                let value = value.into_bytes();
                if !value.is_empty() {
                    secrets.secrets.insert(key.to_string(), value);
                }
            }
        }
        secrets
    }

    /// The environment variable holding the secret of `trigger_ref`: the ref upper-cased, `.`
    /// as `__`, any other character that is not a letter, digit or `_` as `_`.
    /// `mypack.github_push` → `ATTUNE_WEBHOOK_SECRET_MYPACK__GITHUB_PUSH`.
    pub fn env_var(trigger_ref: &str) -> String {
        format!("{}{}", Self::ENV_PREFIX, Self::key(trigger_ref))
    }

    fn key(trigger_ref: &str) -> String {
        let mut key = String::with_capacity(trigger_ref.len() + 1);
        for c in trigger_ref.chars() {
            match c {
                '.' => key.push_str("__"),
                c if c.is_ascii_alphanumeric() || c == '_' => key.push(c.to_ascii_uppercase()),
                _ => key.push('_'),
            }
        }
        key
    }

    fn get(&self, trigger_ref: &str) -> Option<&[u8]> {
        self.secrets.get(&Self::key(trigger_ref)).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

/// The `X-Attune-Signature` value for `body` signed with `secret`: `sha256=<hex>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret, body)))
}

fn hmac_sha256(secret: &[u8], body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Whether `header` is a valid signature of `body`; the digests are compared in constant time.
fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(given) = header.and_then(|h| h.trim().strip_prefix("sha256=")).and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    let expected = hmac_sha256(secret, body);
    given.len() == expected.len() && bool::from(expected.ct_eq(given.as_slice()))
}

pub(super) fn route() -> MethodRouter<ApiState> {
    post(webhook).layer(DefaultBodyLimit::max(WEBHOOK_MAX_BODY_BYTES))
}

/// Receive a signed webhook call: the JSON object body becomes one event of the trigger.
#[utoipa::path(post, path = "/api/v1/webhooks/{trigger_ref}", tag = "webhooks",
    params(("trigger_ref" = String, Path, description = "`core.webhook` or a pack trigger with a configured secret"),
        ("X-Attune-Signature" = String, Header, description = "`sha256=<hex>`: HMAC-SHA256 of the raw body with the trigger's secret")),
    request_body(content = Object, description = "Any JSON object; it is the event payload"),
    responses((status = 201, body = IngestedOut),
        (status = 400, description = "Not JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong signature; nothing stored", body = ErrorBody),
        (status = 404, description = "No webhook for this trigger", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "Not an object, or refused by the trigger's payload schema", body = ErrorBody)))]
pub async fn webhook(
    State(state): State<ApiState>,
    Path(trigger_ref): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<IngestedOut>), ApiError> {
    let timer = attune_timers::is_timer_trigger(&trigger_ref);
    let Some(secret) = state.webhook_secrets.get(&trigger_ref).filter(|_| !timer) else {
        return Err(ApiError::not_found(format!("no webhook for trigger `{trigger_ref}`")));
    };
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::BodyTooLarge, rejection.body_text())
        } else {
            ApiError::new(ErrorCode::BadBody, rejection.body_text())
        }
    })?;
    let signature = headers.get(SIGNATURE_HEADER).and_then(|h| h.to_str().ok());
    if !verify(secret, &body, signature) {
        tracing::warn!(trigger = %trigger_ref, "webhook refused: missing or wrong signature");
        return Err(ApiError::new(ErrorCode::BadSignature, "missing or wrong `X-Attune-Signature: sha256=<hex>`"));
    }
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("the body is not JSON: {e}")))?;
    if !payload.is_object() {
        return Err(ApiError::new(ErrorCode::PayloadNotObject, "a webhook body is a JSON object"));
    }
    let ingested = state
        .app
        .pipeline
        .ingest(&Source::Webhook, vec![(trigger_ref, payload)], None)
        .await
        .map_err(|e| ApiError::from_ingest(e, |_, _| String::new()))?;
    Ok((StatusCode::CREATED, Json(IngestedOut { event_ids: ingested.event_ids, enforcements: ingested.enforcements })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_right_secret_and_body() {
        let good = sign(b"s3cret", b"{\"a\":1}");
        assert!(good.starts_with("sha256=") && good.len() == 7 + 64);
        assert!(verify(b"s3cret", b"{\"a\":1}", Some(&good)));
        assert!(!verify(b"other", b"{\"a\":1}", Some(&good)));
        assert!(!verify(b"s3cret", b"{\"a\":2}", Some(&good)));
        assert!(!verify(b"s3cret", b"{\"a\":1}", None));
        assert!(!verify(b"s3cret", b"{\"a\":1}", Some(good.trim_start_matches("sha256="))));
        assert!(!verify(b"s3cret", b"{\"a\":1}", Some("sha256=abcd")));
    }

    #[test]
    fn secrets_come_from_env_names() {
        assert_eq!(WebhookSecrets::env_var("mypack.github_push"), "ATTUNE_WEBHOOK_SECRET_MYPACK__GITHUB_PUSH");
        let secrets = WebhookSecrets::from_vars([
            ("ATTUNE_WEBHOOK_SECRET_MYPACK__GITHUB_PUSH".to_string(), "s".to_string()),
            ("ATTUNE_WEBHOOK_SECRET_CORE__WEBHOOK".to_string(), String::new()),
            ("HOME".to_string(), "/root".to_string()),
        ]);
        assert_eq!(secrets.get("mypack.github_push"), Some(&b"s"[..]));
        assert_eq!(secrets.get("core.webhook"), None, "empty secrets are ignored");
        assert_eq!(secrets.len(), 1);
        assert!(!format!("{secrets:?}").contains("\"s\""));
    }

    #[test]
    fn environment_secrets_replace_file_secrets() {
        let mut from_file = WebhookSecrets::new();
        from_file.insert("mypack.push", "file");
        from_file.insert("core.webhook", "file");
        let from_env = WebhookSecrets::from_vars([("ATTUNE_WEBHOOK_SECRET_CORE__WEBHOOK".into(), "env".into())]);
        let secrets = from_file.overlaid_with(from_env);
        assert_eq!(secrets.get("mypack.push"), Some(&b"file"[..]));
        assert_eq!(secrets.get("core.webhook"), Some(&b"env"[..]));
    }
}
