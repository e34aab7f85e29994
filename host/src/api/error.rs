//! The one error shape of the API, `{"error": {"code", "message", "field"}}`; [`ErrorCode`],
//! every code the API answers, each with its one status; and the JSON body extractor whose
//! rejections (malformed JSON, wrong content type, body too large) take that shape too.
//!
//! | code | status | when |
//! |---|---|---|
//! | `malformed_json` | 400 | a body that is not JSON |
//! | `duplicate_key` | 400 | a JSON body with a key twice in one object (`field` names it) |
//! | `unsupported_content_type` | 400 | a JSON body without `Content-Type: application/json` |
//! | `bad_body` | 400 | a webhook body that cannot be read |
//! | `bad_query` | 400 | a query string that does not parse; a bad `limit`, `since`, `until`, `before` or `after` (`field` names it) |
//! | `bad_header` | 400 | a bad `X-Attune-Delivery` or `Idempotency-Key` (`field` names it) |
//! | `unauthorized` | 401 | no token, or an unknown, revoked or expired one (with `WWW-Authenticate: Bearer`) |
//! | `bad_signature` | 401 | a webhook without a valid `X-Attune-Signature` |
//! | `bad_timestamp` | 401 | a webhook without an `X-Attune-Timestamp`, or one more than 300 s off |
//! | `forbidden` | 403 | a token outside its scope |
//! | `trigger_not_allowed` | 403 | a sensor token posting for a trigger it does not list |
//! | `not_found` | 404 | no such rule, event, sensor, route or webhook |
//! | `method_not_allowed` | 405 | a route that does not take this method |
//! | `conflict` | 409 | `POST /rules` for a ref that exists |
//! | `body_too_large` | 413 | a body larger than the route accepts |
//! | `payload_too_large` | 413 | a payload larger than the pipeline accepts |
//! | `invalid_body` | 422 | JSON of the wrong shape (a rule that is not an object, ..) |
//! | `unknown_field` | 422 | a field the body may not have |
//! | `missing_field` | 422 | a field the body must have |
//! | `invalid_field` | 422 | a field of the wrong type or value |
//! | `conflicting_fields` | 422 | both of two fields that exclude each other (`payload`, `event_id`) |
//! | `ref_mismatch` | 422 | `PUT /rules/{ref}` with another `ref` in the body |
//! | `unknown_trigger` | 422 | a rule or payload for a trigger nobody defines |
//! | `unknown_action` | 422 | a rule naming an action that is neither a core one nor declared by a pack |
//! | `bad_trigger_params` | 422 | a rule's `trigger_params` that do not fit its trigger |
//! | `trigger_mismatch` | 422 | a dry run against a stored event of another trigger |
//! | `schema_mismatch` | 422 | a payload refused by its trigger's `payload_schema` |
//! | `payload_not_object` | 422 | a payload (or webhook body) that is not a JSON object |
//! | `bad_batch` | 422 | `POST /events` with no payload, or too many |
//! | `too_many_enforcements` | 422 | payloads that would make more enforcements than one ingest may (10,000) |
//! | `idempotency_key_reused` | 422 | a key (`field` names its header) that came with another body |
//! | `invalid_pack` | 422 | `POST /packs/reload` finding a pack with an error |
//! | `bad_ref` | 422 | a rule that does not compile ([`RuleErrorKind::code`], this and the 13 below) |
//! | `bad_condition` | 422 | |
//! | `too_complex` | 422 | |
//! | `unknown_operator` | 422 | |
//! | `bad_path` | 422 | |
//! | `unknown_root` | 422 | |
//! | `missing_value` | 422 | |
//! | `unexpected_value` | 422 | |
//! | `wrong_value_type` | 422 | |
//! | `bad_regex` | 422 | |
//! | `regex_too_big` | 422 | |
//! | `bad_glob` | 422 | |
//! | `bad_template` | 422 | |
//! | `missing_template_value` | 422 | |
//! | `too_many_streams` | 429 | `GET /stream` while the most live streams a host serves are open |
//! | `internal` | 500 | a response that cannot be built, a rule change that failed |
//! | `store_error` | 500 | the store failed |
//! | `store_unavailable` | 503 | the database cannot be reached (no connection within the pool's acquire timeout, a broken or refused one, the server shutting down); with `Retry-After` |
//! | `sensors_unavailable` | 503 | the sensor routes on a server without a sensor supervisor |
//! | `packs_unavailable` | 503 | `POST /packs/reload` on a server that does not load packs |
//!
//! `GET /ready` answers 503 too, with its own body ([`super::Readiness`]), not an error.

use attune_rules::RuleErrorKind;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Serialize, Serializer};
use serde_json::Value;

use crate::auth::AuthError;
use crate::catalog::RuleRefusal;
use crate::pipeline::{IngestError, Rejected};
use crate::rules::RuleChangeError;
use crate::store::StoreError;

/// Every code the API answers with (the table in the module docs): each has one status,
/// [`ErrorCode::status`], and one snake_case name, [`ErrorCode::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    MalformedJson,
    DuplicateKey,
    UnsupportedContentType,
    BadBody,
    BadQuery,
    BadHeader,
    Unauthorized,
    BadSignature,
    BadTimestamp,
    Forbidden,
    TriggerNotAllowed,
    NotFound,
    MethodNotAllowed,
    Conflict,
    BodyTooLarge,
    PayloadTooLarge,
    InvalidBody,
    UnknownField,
    MissingField,
    InvalidField,
    ConflictingFields,
    RefMismatch,
    UnknownTrigger,
    UnknownAction,
    BadTriggerParams,
    TriggerMismatch,
    SchemaMismatch,
    PayloadNotObject,
    BadBatch,
    TooManyEnforcements,
    IdempotencyKeyReused,
    InvalidPack,
    /// A rule that does not compile; the code is [`RuleErrorKind::code`].
    Rule(RuleErrorKind),
    TooManyStreams,
    Internal,
    StoreError,
    StoreUnavailable,
    SensorsUnavailable,
    PacksUnavailable,
}

impl ErrorCode {
    /// Every code, in the order of the table in the module docs.
    pub const ALL: &[ErrorCode] = &[
        ErrorCode::MalformedJson,
        ErrorCode::DuplicateKey,
        ErrorCode::UnsupportedContentType,
        ErrorCode::BadBody,
        ErrorCode::BadQuery,
        ErrorCode::BadHeader,
        ErrorCode::Unauthorized,
        ErrorCode::BadSignature,
        ErrorCode::BadTimestamp,
        ErrorCode::Forbidden,
        ErrorCode::TriggerNotAllowed,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::BodyTooLarge,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InvalidBody,
        ErrorCode::UnknownField,
        ErrorCode::MissingField,
        ErrorCode::InvalidField,
        ErrorCode::ConflictingFields,
        ErrorCode::RefMismatch,
        ErrorCode::UnknownTrigger,
        ErrorCode::UnknownAction,
        ErrorCode::BadTriggerParams,
        ErrorCode::TriggerMismatch,
        ErrorCode::SchemaMismatch,
        ErrorCode::PayloadNotObject,
        ErrorCode::BadBatch,
        ErrorCode::TooManyEnforcements,
        ErrorCode::IdempotencyKeyReused,
        ErrorCode::InvalidPack,
        ErrorCode::Rule(RuleErrorKind::BadRef),
        ErrorCode::Rule(RuleErrorKind::BadCondition),
        ErrorCode::Rule(RuleErrorKind::TooComplex),
        ErrorCode::Rule(RuleErrorKind::UnknownOperator),
        ErrorCode::Rule(RuleErrorKind::BadPath),
        ErrorCode::Rule(RuleErrorKind::UnknownRoot),
        ErrorCode::Rule(RuleErrorKind::MissingValue),
        ErrorCode::Rule(RuleErrorKind::UnexpectedValue),
        ErrorCode::Rule(RuleErrorKind::WrongValueType),
        ErrorCode::Rule(RuleErrorKind::BadRegex),
        ErrorCode::Rule(RuleErrorKind::RegexTooBig),
        ErrorCode::Rule(RuleErrorKind::BadGlob),
        ErrorCode::Rule(RuleErrorKind::BadTemplate),
        ErrorCode::Rule(RuleErrorKind::MissingTemplateValue),
        ErrorCode::TooManyStreams,
        ErrorCode::Internal,
        ErrorCode::StoreError,
        ErrorCode::StoreUnavailable,
        ErrorCode::SensorsUnavailable,
        ErrorCode::PacksUnavailable,
    ];

    /// The HTTP status every response with this code has.
    pub fn status(self) -> StatusCode {
        use ErrorCode::*;
        match self {
            MalformedJson | DuplicateKey | UnsupportedContentType | BadBody | BadQuery | BadHeader => {
                StatusCode::BAD_REQUEST
            }
            Unauthorized | BadSignature | BadTimestamp => StatusCode::UNAUTHORIZED,
            Forbidden | TriggerNotAllowed => StatusCode::FORBIDDEN,
            NotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Conflict => StatusCode::CONFLICT,
            BodyTooLarge | PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            InvalidBody | UnknownField | MissingField | InvalidField | ConflictingFields | RefMismatch
            | UnknownTrigger | UnknownAction | BadTriggerParams | TriggerMismatch | SchemaMismatch
            | PayloadNotObject | BadBatch | TooManyEnforcements | IdempotencyKeyReused | InvalidPack | Rule(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
            Internal | StoreError => StatusCode::INTERNAL_SERVER_ERROR,
            StoreUnavailable | SensorsUnavailable | PacksUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable snake_case name, as `error.code` carries it.
    pub fn as_str(self) -> &'static str {
        use ErrorCode::*;
        match self {
            MalformedJson => "malformed_json",
            DuplicateKey => "duplicate_key",
            UnsupportedContentType => "unsupported_content_type",
            BadBody => "bad_body",
            BadQuery => "bad_query",
            BadHeader => "bad_header",
            Unauthorized => "unauthorized",
            BadSignature => "bad_signature",
            BadTimestamp => "bad_timestamp",
            Forbidden => "forbidden",
            TriggerNotAllowed => "trigger_not_allowed",
            NotFound => "not_found",
            MethodNotAllowed => "method_not_allowed",
            Conflict => "conflict",
            BodyTooLarge => "body_too_large",
            PayloadTooLarge => "payload_too_large",
            InvalidBody => "invalid_body",
            UnknownField => "unknown_field",
            MissingField => "missing_field",
            InvalidField => "invalid_field",
            ConflictingFields => "conflicting_fields",
            RefMismatch => "ref_mismatch",
            UnknownTrigger => "unknown_trigger",
            UnknownAction => "unknown_action",
            BadTriggerParams => "bad_trigger_params",
            TriggerMismatch => "trigger_mismatch",
            SchemaMismatch => "schema_mismatch",
            PayloadNotObject => "payload_not_object",
            BadBatch => "bad_batch",
            TooManyEnforcements => "too_many_enforcements",
            IdempotencyKeyReused => "idempotency_key_reused",
            InvalidPack => "invalid_pack",
            Rule(kind) => kind.code(),
            TooManyStreams => "too_many_streams",
            Internal => "internal",
            StoreError => "store_error",
            StoreUnavailable => "store_unavailable",
            SensorsUnavailable => "sensors_unavailable",
            PacksUnavailable => "packs_unavailable",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// In the OpenAPI document: a string, one of [`ErrorCode::ALL`].
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Stable snake_case name of the error; each has one HTTP status."))
            .enum_values(Some(ErrorCode::ALL.iter().map(|code| code.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case name, e.g. `unknown_operator`, `malformed_json`, `not_found`.
    pub code: ErrorCode,
    /// What is wrong, for people.
    pub message: String,
    /// Where in the request body (or which query parameter), e.g. `conditions.all[0].operator`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error response; its status is its code's.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub body: ErrorDetail,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { body: ErrorDetail { code, message: message.into(), field: None } }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        let field = field.into();
        self.body.field = (!field.is_empty()).then_some(field);
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.body.code
    }

    pub fn status(&self) -> StatusCode {
        self.body.code.status()
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // A bearer challenge only where a token is what is missing (not on webhook signatures).
        let code = self.code();
        let mut response = (self.status(), Json(ErrorBody { error: self.body })).into_response();
        if code == ErrorCode::Unauthorized {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if code == ErrorCode::StoreUnavailable {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(STORE_RETRY_AFTER_SECS));
        }
        response
    }
}

/// Seconds a client is told to wait (`Retry-After`) when the store cannot be reached.
pub const STORE_RETRY_AFTER_SECS: u64 = 1;

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::from(&e)
    }
}

impl From<&StoreError> for ApiError {
    fn from(e: &StoreError) -> Self {
        if store_unreachable(e) {
            tracing::warn!("store unreachable in the API: {e}");
            ApiError::new(ErrorCode::StoreUnavailable, format!("the store cannot be reached: {e}"))
        } else {
            tracing::error!("store error in the API: {e}");
            ApiError::new(ErrorCode::StoreError, e.to_string())
        }
    }
}

/// Whether a store error means the database cannot be reached, so that the same request may
/// succeed later (503 `store_unavailable`): no connection within the pool's acquire timeout, an
/// I/O or TLS error (refused, reset, broken connection), a closed pool, PostgreSQL's connection
/// exceptions (SQLSTATE class `08`), shutting down or starting up (`57P01`..`57P03`) or out of
/// connections (`53300`), or the store's writer gone. Anything else (a statement the database
/// refuses, a constraint, a stored document that does not decode) is the store failing: 500.
pub fn store_unreachable(e: &StoreError) -> bool {
    match e {
        StoreError::Database(e) => match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some_and(|pg| {
                let code = pg.code();
                code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
            }),
            _ => false,
        },
        StoreError::Closed => true,
        _ => false,
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthorized(why) => ApiError::new(ErrorCode::Unauthorized, why),
            AuthError::Forbidden(why) => ApiError::new(ErrorCode::Forbidden, why),
            AuthError::Store(e) => e.into(),
        }
    }
}

impl From<attune_rules::RuleError> for ApiError {
    fn from(e: attune_rules::RuleError) -> Self {
        ApiError::new(ErrorCode::Rule(e.kind), e.message).with_field(e.field)
    }
}

impl From<RuleChangeError> for ApiError {
    fn from(e: RuleChangeError) -> Self {
        match e {
            RuleChangeError::Invalid(e) => e.into(),
            RuleChangeError::Refused(RuleRefusal::UnknownTrigger { message, .. }) => {
                ApiError::new(ErrorCode::UnknownTrigger, message).with_field("trigger")
            }
            RuleChangeError::Refused(RuleRefusal::Params(e)) => {
                ApiError::new(ErrorCode::BadTriggerParams, e.message).with_field(e.field)
            }
            RuleChangeError::Refused(RuleRefusal::UnknownAction { message }) => {
                ApiError::new(ErrorCode::UnknownAction, message).with_field("action.ref")
            }
            RuleChangeError::Refused(RuleRefusal::Namespace { message }) => {
                ApiError::new(ErrorCode::Rule(RuleErrorKind::BadRef), message).with_field("ref")
            }
            RuleChangeError::Exists(rule_ref) => {
                ApiError::new(ErrorCode::Conflict, format!("rule `{rule_ref}` exists")).with_field("ref")
            }
            RuleChangeError::NotFound(rule_ref) => ApiError::not_found(format!("no rule `{rule_ref}`")),
            RuleChangeError::Store(e) => e.into(),
            RuleChangeError::Recorded(e) => ApiError::from(e.as_ref()),
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
                        ApiError::new(ErrorCode::UnknownTrigger, message).with_field(field_of(index, "trigger"))
                    }
                    Rejected::Undeclared { index, .. } => {
                        ApiError::new(ErrorCode::TriggerNotAllowed, message).with_field(field_of(index, "trigger"))
                    }
                    Rejected::HostOnly { index, .. } => {
                        ApiError::new(ErrorCode::TriggerNotAllowed, message).with_field(field_of(index, "trigger"))
                    }
                    Rejected::TooManyEnforcements { .. } => ApiError::new(ErrorCode::TooManyEnforcements, message),
                    Rejected::Schema { index, .. } => {
                        ApiError::new(ErrorCode::SchemaMismatch, message).with_field(field_of(index, "payload"))
                    }
                }
            }
            IngestError::Store(e) => ApiError::from(e.as_ref()),
            // Requests write under no fence; only a sensor's or a timer's writes are fenced.
            fenced @ IngestError::Fenced(_) => ApiError::internal(fenced.to_string()),
        }
    }
}

/// A JSON request body, parsed only as far as JSON: typed checks happen in [`from_value`] so
/// that their errors name the field. Rejections are [`ApiError`]s: a content type other than
/// JSON, a body too large, a body that is not JSON, and a key twice in one object (which
/// serde_json would otherwise take the last of, silently), 400 `duplicate_key` naming it.
#[derive(Debug, Clone)]
pub struct ApiJson(pub Value);

impl<S: Send + Sync> FromRequest<S> for ApiJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(ErrorCode::UnsupportedContentType, "expected `Content-Type: application/json`"));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let code = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ErrorCode::BodyTooLarge
            } else {
                ErrorCode::MalformedJson
            };
            ApiError::new(code, rejection.body_text())
        })?;
        if let Some(field) = duplicate_key(&bytes) {
            return Err(ApiError::new(ErrorCode::DuplicateKey, format!("`{field}` appears twice")).with_field(field));
        }
        match Json::<Value>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

/// `application/json` or `application/<anything>+json`, parameters allowed (as axum's `Json`).
fn json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else { return false };
    let subtype = subtype.to_ascii_lowercase();
    kind.eq_ignore_ascii_case("application") && (subtype == "json" || subtype.ends_with("+json"))
}

/// The path (as [`from_value`] names fields: `a.b`, `[2].c`) of the first key that appears twice
/// in one object of the JSON text `bytes`; `None` when there is none, or when the text stops
/// being JSON before a key repeats.
pub fn duplicate_key(bytes: &[u8]) -> Option<String> {
    use serde::de::DeserializeSeed;
    let found = std::cell::RefCell::new(None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let _ = DuplicateKeys { path: String::new(), found: &found }.deserialize(&mut deserializer);
    found.into_inner()
}

/// Walks a JSON document without building it, failing at the first key seen twice in one object
/// and leaving its path in `found`.
struct DuplicateKeys<'a> {
    path: String,
    found: &'a std::cell::RefCell<Option<String>>,
}

impl<'de> serde::de::DeserializeSeed<'de> for DuplicateKeys<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DuplicateKeys<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0usize;
        loop {
            let path = format!("{}[{index}]", self.path);
            if seq.next_element_seed(DuplicateKeys { path, found: self.found })?.is_none() {
                return Ok(());
            }
            index += 1;
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = join_field(&self.path, &key);
            if !seen.insert(key) {
                *self.found.borrow_mut() = Some(path);
                return Err(serde::de::Error::custom("duplicate key"));
            }
            map.next_value_seed(DuplicateKeys { path, found: self.found })?;
        }
        Ok(())
    }
}

fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::new(ErrorCode::UnsupportedContentType, "expected `Content-Type: application/json`")
        }
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(ErrorCode::BodyTooLarge, rejection.body_text())
        }
        JsonRejection::JsonDataError(_) => ApiError::new(ErrorCode::InvalidBody, rejection.body_text()),
        _ => ApiError::new(ErrorCode::MalformedJson, rejection.body_text()),
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
            ErrorCode::UnknownField
        } else if message.starts_with("missing field") {
            ErrorCode::MissingField
        } else {
            ErrorCode::InvalidField
        };
        ApiError::new(code, message).with_field(join_field(prefix, &path))
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
            assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!((e.body.code.as_str(), e.body.field.as_deref()), (code, Some(field)), "{}", e.body.message);
        }
        assert_eq!(join_field("", "a"), "a");
        assert_eq!(join_field("[2]", "trigger"), "[2].trigger");
    }

    /// The module docs' table lists every code once, with its status, and nothing else.
    #[test]
    fn the_table_lists_every_code_with_its_status() {
        let source = include_str!("error.rs");
        let rows: Vec<&str> = source.lines().filter(|l| l.starts_with("//! | `")).collect();
        assert_eq!(rows.len(), ErrorCode::ALL.len(), "one row per code");
        let mut names = std::collections::HashSet::new();
        for (code, row) in ErrorCode::ALL.iter().zip(&rows) {
            assert!(names.insert(code.as_str()), "`{code}` twice");
            let expected = format!("//! | `{}` | {} |", code.as_str(), code.status().as_u16());
            assert!(row.starts_with(&expected), "{row:?} is not {expected:?}");
        }
    }

    #[test]
    fn duplicate_keys_are_found_with_their_path() {
        let cases: [(&str, Option<&str>); 9] = [
            (r#"{"a": 1, "b": 2}"#, None),
            (r#"{"a": 1, "a": 2}"#, Some("a")),
            (r#"{"a": {"x": 1}, "b": {"x": 1, "y": [1, {"z": 0, "z": 1}]}}"#, Some("b.y[1].z")),
            (r#"[{"trigger": "a.b"}, {"trigger": "a.b", "payload": {}, "trigger": "c.d"}]"#, Some("[1].trigger")),
            (r#"{"a": 1, "\u0061": 2}"#, Some("a")),
            (r#"[1, "a", null, true, 2.5, -3]"#, None),
            (r#"{"a": 1, "a""#, Some("a")),
            (r#"{"a": 1, "b": }"#, None),
            ("not json", None),
        ];
        for (text, expected) in cases {
            assert_eq!(duplicate_key(text.as_bytes()).as_deref(), expected, "{text}");
        }
    }

    #[test]
    fn an_unreachable_store_is_503_with_retry_after_other_store_errors_500() {
        let unreachable = [
            StoreError::Database(sqlx::Error::PoolTimedOut),
            StoreError::Database(sqlx::Error::PoolClosed),
            StoreError::Database(sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))),
            StoreError::Closed,
        ];
        for e in unreachable {
            let response = ApiError::from(e).into_response();
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()[header::RETRY_AFTER], STORE_RETRY_AFTER_SECS.to_string().as_str());
        }
        let failing = [
            StoreError::Database(sqlx::Error::RowNotFound),
            StoreError::Database(sqlx::Error::Protocol("bad".into())),
            StoreError::Json(serde_json::from_str::<Value>("{").unwrap_err()),
        ];
        for e in failing {
            let response = ApiError::from(e).into_response();
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(response.headers().get(header::RETRY_AFTER).is_none());
        }
    }

    #[test]
    fn json_content_types() {
        let accepts = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            json_content_type(&headers)
        };
        for value in
            ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/cloudevents+json"]
        {
            assert!(accepts(value), "{value}");
        }
        for value in ["text/json", "application/jsonx", "json", "text/plain"] {
            assert!(!accepts(value), "{value}");
        }
    }

    #[test]
    fn rule_errors_keep_their_codes_and_bodies_serialize_codes_as_strings() {
        let code = ErrorCode::Rule(RuleErrorKind::UnknownOperator);
        assert_eq!((code.as_str(), code.status()), ("unknown_operator", StatusCode::UNPROCESSABLE_ENTITY));
        let body = ErrorBody { error: ApiError::new(ErrorCode::Conflict, "exists").with_field("ref").body };
        assert_eq!(
            serde_json::to_value(body).unwrap(),
            json!({"error": {"code": "conflict", "message": "exists", "field": "ref"}})
        );
    }
}
