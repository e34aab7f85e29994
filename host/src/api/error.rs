//! The one error shape of the API, `{"error": {"code", "message", "field"}}`, and the JSON body
//! extractor whose rejections (malformed JSON, wrong content type, body too large) take that
//! shape too.
//!
//! | status | when |
//! |---|---|
//! | 400 | malformed JSON, wrong content type, bad query string |
//! | 401 | no token, or an unknown, revoked or expired one; bad or missing webhook signature |
//! | 403 | a token outside its scope, or a sensor token posting for a trigger it does not list |
//! | 404 | no such rule, event, sensor, route or webhook |
//! | 409 | `POST /rules` for a ref that exists |
//! | 413 | body larger than the route accepts, payload larger than the pipeline accepts |
//! | 422 | unknown or mistyped field, rule that does not compile, payload refused by its trigger |
//! | 500 | the store failed |
//! | 503 | no sensor supervisor (`GET /sensors`), store or bus not ready (`GET /ready`) |

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::auth::AuthError;
use crate::catalog::TriggerUseError;
use crate::pipeline::{IngestError, Rejected};
use crate::rules::RuleChangeError;
use crate::store::StoreError;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case name, e.g. `unknown_operator`, `malformed_json`, `not_found`.
    pub code: String,
    /// What is wrong, for people.
    pub message: String,
    /// Where in the request body (or which query parameter), e.g. `conditions.all[0].operator`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error response.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorDetail,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { status, body: ErrorDetail { code: code.into(), message: message.into(), field: None } }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        self.body.field = (!field.is_empty()).then_some(field);
        self
    }

    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unprocessable(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A bearer challenge only where a token is what is missing (not on webhook signatures).
        let unauthorized = self.status == StatusCode::UNAUTHORIZED && self.body.code == "unauthorized";
        let mut response = (self.status, Json(ErrorBody { error: self.body })).into_response();
        if unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!("store error in the API: {e}");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store_error", e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized(why) => ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why),
            AuthError::Forbidden(why) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", why),
            AuthError::Store(e) => e.into(),
        }
    }
}

impl From<attune_rules::RuleError> for ApiError {
    fn from(e: attune_rules::RuleError) -> Self {
        ApiError::unprocessable(e.kind.code(), e.message).with_field(e.field)
    }
}

impl From<RuleChangeError> for ApiError {
    fn from(e: RuleChangeError) -> Self {
        match e {
            RuleChangeError::Invalid(e) => e.into(),
            RuleChangeError::Trigger(TriggerUseError::Unknown { message, .. }) => {
                ApiError::unprocessable("unknown_trigger", message).with_field("trigger")
            }
            RuleChangeError::Trigger(TriggerUseError::Params(e)) => {
                ApiError::unprocessable("bad_trigger_params", e.message).with_field(e.field)
            }
            RuleChangeError::Exists(rule_ref) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", format!("rule `{rule_ref}` exists")).with_field("ref")
            }
            RuleChangeError::NotFound(rule_ref) => ApiError::not_found(format!("no rule `{rule_ref}`")),
            RuleChangeError::Store(e) => e.into(),
            other => {
                tracing::error!("API request failed: {other}");
                ApiError::internal(other.to_string())
            }
        }
    }
}

impl ApiError {
    /// A pipeline refusal. `field_of(index, leaf)` names the place in the request body.
    pub fn from_ingest(e: IngestError, field_of: impl Fn(usize, &str) -> String) -> Self {
        match e {
            IngestError::Rejected(rejected) => {
                let message = rejected.to_string();
                match rejected {
                    Rejected::UnknownTrigger { index, .. } => {
                        ApiError::unprocessable("unknown_trigger", message).with_field(field_of(index, "trigger"))
                    }
                    Rejected::Undeclared { index, .. } => {
                        ApiError::new(StatusCode::FORBIDDEN, "trigger_not_allowed", message)
                            .with_field(field_of(index, "trigger"))
                    }
                    Rejected::Schema { index, .. } => {
                        ApiError::unprocessable("schema_mismatch", message).with_field(field_of(index, "payload"))
                    }
                }
            }
            IngestError::Store(e) => {
                tracing::error!("events not stored: {e}");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "store_error", e.to_string())
            }
        }
    }
}

/// A JSON request body, parsed only as far as JSON: typed checks happen in [`from_value`] so
/// that their errors name the field. Rejections are [`ApiError`]s.
#[derive(Debug, Clone)]
pub struct ApiJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for ApiJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<Value>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::bad_request("unsupported_content_type", "expected `Content-Type: application/json`")
        }
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", rejection.body_text())
        }
        JsonRejection::JsonDataError(_) => ApiError::unprocessable("invalid_body", rejection.body_text()),
        _ => ApiError::bad_request("malformed_json", rejection.body_text()),
    }
}

/// Deserializes a typed body (or part of one) from JSON. Unknown fields, missing fields and
/// wrong types are 422 with `field` set to their path, under `prefix` (`rule` gives
/// `rule.action.params`).
pub fn from_value<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let message = e.inner().to_string();
        let mut path = e.path().to_string();
        if path == "." {
            path.clear();
        }
        // serde names a missing field in the message, on the path of the object lacking it.
        if let Some(missing) = message.strip_prefix("missing field `").and_then(|rest| rest.split('`').next()) {
            path = join_field(&path, missing);
        }
        let code = if message.starts_with("unknown field") {
            "unknown_field"
        } else if message.starts_with("missing field") {
            "missing_field"
        } else {
            "invalid_field"
        };
        ApiError::unprocessable(code, message).with_field(join_field(prefix, &path))
    })
}

/// `a` + `b` as a field path: `rule` + `action.ref` = `rule.action.ref`, `[0]` + `trigger` =
/// `[0].trigger`, `rule` + `[1]` = `rule[1]`.
pub fn join_field(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ if b.starts_with('[') => format!("{a}{b}"),
        _ => format!("{a}.{b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Inner,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[test]
    fn typed_errors_name_the_field() {
        let cases = [
            (json!({"name": "a", "inner": {"n": 1, "m": 2}}), "unknown_field", "body.inner.m"),
            (json!({"name": "a"}), "missing_field", "body.inner"),
            (json!({"name": "a", "inner": {}}), "missing_field", "body.inner.n"),
            (json!({"name": 5, "inner": {"n": 1}}), "invalid_field", "body.name"),
        ];
        for (value, code, field) in cases {
            let e = from_value::<Outer>(value, "body").unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!((e.body.code.as_str(), e.body.field.as_deref()), (code, Some(field)), "{}", e.body.message);
        }
        assert_eq!(join_field("", "a"), "a");
        assert_eq!(join_field("[2]", "trigger"), "[2].trigger");
    }
}
