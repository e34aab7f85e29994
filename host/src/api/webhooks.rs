//! `POST /api/v1/webhooks/{trigger_ref}`: a signed HTTP POST becomes one event of that trigger.
//!
//! - **Which trigger:** the one named in the path: `core.webhook` (the generic one) or any pack
//!   trigger. The core timer triggers are refused, so a webhook cannot impersonate a timer.
//! - **Secrets:** one per trigger, from [`WebhookSecrets`] (by default the environment variable
//!   `ATTUNE_WEBHOOK_SECRET_<TRIGGER>`, see [`WebhookSecrets::env_var`]). A trigger without a
//!   secret has no webhook (404): nothing is accepted unsigned.
//! - **Signature:** `X-Attune-Timestamp: <unix seconds>` and `X-Attune-Signature: sha256=<hex>`,
//!   the HMAC-SHA256 with the trigger's secret of `<timestamp>.<raw body>` (the timestamp header's
//!   text, a dot, the body's bytes), compared in constant time. A missing signature, or a wrong
//!   one: 401 `bad_signature`; a missing or unparsable timestamp, or one more than
//!   [`MAX_CLOCK_SKEW_SECS`] from the host's clock: 401 `bad_timestamp`. Nothing is stored. The
//!   body is checked before it is parsed.
//! - **Deliveries:** an optional `X-Attune-Delivery: <id>` (1 to 200 printable ASCII characters,
//!   else 400 `bad_header`) is stored once per trigger and kept at least 24 h: a repeat answers
//!   as the first did (status and body, the same event ids, with `Idempotent-Replayed: true`)
//!   and stores nothing more, even while the first is in flight; the same id with another body
//!   (compared by the SHA-256 of the raw bytes, which is what was signed) is 422
//!   `idempotency_key_reused`. The timestamp bounds replays of a captured request without a
//!   delivery id to the 300 s window.
//! - **Body:** at most [`WEBHOOK_MAX_BODY_BYTES`] (413 beyond), a JSON object (400 when not JSON,
//!   422 when not an object); it is the event's payload as is, checked against the trigger's
//!   payload schema like any payload. The event's source is `webhook`.

use std::collections::HashMap;
use std::fmt;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{MethodRouter, post};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use axum::response::Response;

use super::ApiState;
use super::error::{ApiError, ErrorBody, ErrorCode};
use super::events::{IngestedOut, Keyed, ingest_keyed, recorded, request_key, sha256_hex};
use crate::pipeline::Source;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-attune-signature";
/// The header with the Unix time (seconds) the signature was made at; it is signed too.
pub const TIMESTAMP_HEADER: &str = "x-attune-timestamp";
/// The optional header naming a delivery, stored once per trigger.
pub const DELIVERY_HEADER: &str = "X-Attune-Delivery";
/// Most seconds between a webhook's timestamp and the host's clock, either way.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;
/// Largest webhook body accepted. The body is the payload, so this is the payload limit of
/// every other source (checked once, here, before the body is even parsed).
pub const WEBHOOK_MAX_BODY_BYTES: usize = crate::limits::DEFAULT_MAX_PAYLOAD_BYTES;

/// Webhook secrets by trigger ref. `Debug` never shows a secret.
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    /// Keyed by the trigger ref when set by [`WebhookSecrets::insert`], by
    /// [`WebhookSecrets::key`] (no `.`) when read from the environment.
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
            self.secrets.insert(trigger_ref.to_string(), secret);
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

    /// The secret of exactly `trigger_ref`, case and all: its environment variable's (whose
    /// upper-case name can only stand for a lowercase ref), else the one inserted for it.
    fn get(&self, trigger_ref: &str) -> Option<&[u8]> {
        let from_env = (!trigger_ref.bytes().any(|b| b.is_ascii_uppercase()))
            .then(|| self.secrets.get(&Self::key(trigger_ref)))
            .flatten();
        from_env.or_else(|| self.secrets.get(trigger_ref)).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }
}

/// The `X-Attune-Signature` value for `body` sent with `X-Attune-Timestamp: <timestamp>`, signed
/// with `secret`: `sha256=<hex>` of the HMAC-SHA256 of `<timestamp>.<body>`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(hmac_sha256(secret, &timestamp.to_string(), body)))
}

/// The HMAC-SHA256 with `secret` of `<timestamp>.<body>`.
fn hmac_sha256(secret: &[u8], timestamp: &str, body: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// Whether `header` is a valid signature of `body` sent with `timestamp` (the timestamp header's
/// text); the digests are compared in constant time.
fn verify(secret: &[u8], timestamp: &str, body: &[u8], header: &str) -> bool {
    let Some(given) = header.trim().strip_prefix("sha256=").and_then(|h| hex::decode(h).ok()) else {
        return false;
    };
    let expected = hmac_sha256(secret, timestamp, body);
    given.len() == expected.len() && bool::from(expected.ct_eq(given.as_slice()))
}

/// The text of the timestamp header and the Unix seconds it says, when it is a decimal number.
fn timestamp(headers: &HeaderMap) -> Option<(&str, i64)> {
    let text = headers.get(TIMESTAMP_HEADER)?.to_str().ok()?.trim();
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    Some((text, text.parse().ok().filter(|_| digits)?))
}

/// The host's clock, in Unix seconds.
fn now_secs() -> i64 {
    crate::store::now_micros().div_euclid(1_000_000)
}

/// Authenticates a webhook call: its signature, its timestamp and how far that is from the
/// host's clock, in that order (see the module docs).
fn authenticate(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), ApiError> {
    let Some(signature) = headers.get(SIGNATURE_HEADER).and_then(|h| h.to_str().ok()) else {
        return Err(ApiError::new(ErrorCode::BadSignature, "missing `X-Attune-Signature: sha256=<hex>`"));
    };
    let Some((text, seconds)) = timestamp(headers) else {
        return Err(ApiError::new(
            ErrorCode::BadTimestamp,
            "missing or unparsable `X-Attune-Timestamp: <unix seconds>`; the signature covers `<timestamp>.<raw body>`",
        ));
    };
    if !verify(secret, text, body, signature) {
        return Err(ApiError::new(
            ErrorCode::BadSignature,
            "wrong `X-Attune-Signature`: expected `sha256=<hex>` of the HMAC-SHA256 of `<timestamp>.<raw body>`",
        ));
    }
    let skew = now_secs().saturating_sub(seconds).saturating_abs();
    if skew > MAX_CLOCK_SKEW_SECS {
        return Err(ApiError::new(
            ErrorCode::BadTimestamp,
            format!(
                "`X-Attune-Timestamp` is {skew} s from the host's clock; at most {MAX_CLOCK_SKEW_SECS} s are accepted"
            ),
        ));
    }
    Ok(())
}

pub(super) fn route() -> MethodRouter<ApiState> {
    post(webhook).layer(DefaultBodyLimit::max(WEBHOOK_MAX_BODY_BYTES))
}

/// Receive a signed webhook call: the JSON object body becomes one event of the trigger.
#[utoipa::path(post, path = "/api/v1/webhooks/{trigger_ref}", tag = "webhooks",
    params(("trigger_ref" = String, Path, description = "`core.webhook` or a pack trigger with a configured secret"),
        ("X-Attune-Timestamp" = String, Header, description = "Unix seconds when the call was signed; refused more than 300 s from the host's clock"),
        ("X-Attune-Signature" = String, Header, description = "`sha256=<hex>`: HMAC-SHA256 with the trigger's secret of `<timestamp>.<raw body>`"),
        ("X-Attune-Delivery" = Option<String>, Header, description = "Delivery id, 1 to 200 printable ASCII characters: stored once per trigger; a repeat answers as the first did and stores nothing more")),
    request_body(content = Object, description = "Any JSON object; it is the event payload"),
    responses((status = 201, body = IngestedOut,
            headers(("Idempotent-Replayed" = String, description = "`true` on an answer repeated from the first delivery with this id"))),
        (status = 400, description = "Not JSON, or a bad `X-Attune-Delivery` (`bad_header`)", body = ErrorBody),
        (status = 401, description = "Missing or wrong signature (`bad_signature`), missing, unparsable or stale timestamp (`bad_timestamp`); nothing stored", body = ErrorBody),
        (status = 404, description = "No webhook for this trigger", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "Not an object, refused by the trigger's payload schema, or a delivery id that came with another body (`idempotency_key_reused`)", body = ErrorBody)))]
pub async fn webhook(
    State(state): State<ApiState>,
    Path(trigger_ref): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
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
    authenticate(secret, &headers, &body).inspect_err(|e| {
        tracing::warn!(trigger = %trigger_ref, code = %e.code(), "webhook refused: {}", e.body.message);
    })?;
    let keyed = request_key(&headers, DELIVERY_HEADER)?.map(|key| Keyed {
        scope: format!("webhook:{trigger_ref}"),
        key,
        header: DELIVERY_HEADER,
        request_hash: sha256_hex(&body),
    });
    if let Some(keyed) = &keyed
        && let Some(first) = recorded(&state, keyed).await?
    {
        return Ok(first);
    }
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(ErrorCode::MalformedJson, format!("the body is not JSON: {e}")))?;
    if !payload.is_object() {
        return Err(ApiError::new(ErrorCode::PayloadNotObject, "a webhook body is a JSON object"));
    }
    ingest_keyed(&state, keyed, &Source::Webhook, vec![(trigger_ref, payload)], |_, _| String::new()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_right_secret_timestamp_and_body() {
        let good = sign(b"s3cret", 1_700_000_000, b"{\"a\":1}");
        assert!(good.starts_with("sha256=") && good.len() == 7 + 64);
        assert!(verify(b"s3cret", "1700000000", b"{\"a\":1}", &good));
        assert!(!verify(b"other", "1700000000", b"{\"a\":1}", &good));
        assert!(!verify(b"s3cret", "1700000000", b"{\"a\":2}", &good));
        assert!(!verify(b"s3cret", "1700000001", b"{\"a\":1}", &good));
        assert!(!verify(b"s3cret", "1700000000", b"{\"a\":1}", good.trim_start_matches("sha256=")));
        assert!(!verify(b"s3cret", "1700000000", b"{\"a\":1}", "sha256=abcd"));
        // What `printf '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret` prints (and the
        // README's Python and JavaScript snippets).
        assert_eq!(good, "sha256=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940");
    }

    #[test]
    fn timestamps_are_decimal_unix_seconds_within_300_s() {
        let headers = |pairs: &[(&'static str, String)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            map
        };
        let body = b"{}";
        let signed = |at: i64| headers(&[(TIMESTAMP_HEADER, at.to_string()), (SIGNATURE_HEADER, sign(b"k", at, body))]);
        let now = now_secs();
        for at in [now, now - 290, now + 290] {
            assert!(authenticate(b"k", &signed(at), body).is_ok(), "{at}");
        }
        for at in [now - 301, now + 301, 0] {
            assert_eq!(authenticate(b"k", &signed(at), body).unwrap_err().code(), ErrorCode::BadTimestamp, "{at}");
        }
        let unsigned_timestamp = headers(&[
            (TIMESTAMP_HEADER, now.to_string()),
            (SIGNATURE_HEADER, {
                let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
                mac.update(body);
                format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
            }),
        ]);
        assert_eq!(authenticate(b"k", &unsigned_timestamp, body).unwrap_err().code(), ErrorCode::BadSignature);
        let no_timestamp = headers(&[(SIGNATURE_HEADER, sign(b"k", now, body))]);
        assert_eq!(authenticate(b"k", &no_timestamp, body).unwrap_err().code(), ErrorCode::BadTimestamp);
        for bad in ["", "-5", "+5", "1e9", "12.5", "99999999999999999999"] {
            let got = authenticate(
                b"k",
                &headers(&[(TIMESTAMP_HEADER, bad.into()), (SIGNATURE_HEADER, sign(b"k", now, body))]),
                body,
            );
            assert_eq!(got.unwrap_err().code(), ErrorCode::BadTimestamp, "{bad:?}");
        }
        let no_signature = headers(&[(TIMESTAMP_HEADER, now.to_string())]);
        assert_eq!(authenticate(b"k", &no_signature, body).unwrap_err().code(), ErrorCode::BadSignature);
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
