//! `/api/v1/events` and `/api/v1/enforcements`: the read side, paged newest first, and ingest
//! for external sensors.
//!
//! Paging: a page holds at most `limit` items (default [`DEFAULT_LIMIT`], 1 to [`MAX_LIMIT`]);
//! when it is full, `next` is the cursor for the following (older) page, passed back as `before`
//! (the id of the page's last item, a UUID: anything else is 400 `bad_query` naming `before`).

use attune_rules::chrono::{DateTime, SecondsFormat, Utc};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, extract::FromRequestParts, http::request::Parts};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::ApiState;
use super::error::{ApiError, ApiJson, ErrorBody, ErrorCode, from_value, join_field};
use crate::auth::Principal;
use crate::history::{EnforcementRecord, EventRecord, ListFilter};
use crate::pipeline::{Ingested, Source};
use crate::store::{ReplayRecord, now_micros};

pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1_000;
/// Payloads per `POST /events` request.
pub const MAX_BATCH: usize = 1_000;
/// Largest payload `POST /events` accepts, serialized: the same as a sensor's default limit.
pub const MAX_PAYLOAD_BYTES: usize = crate::limits::DEFAULT_MAX_PAYLOAD_BYTES;

/// A stored event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventOut {
    /// UUIDv7, ordered by creation time.
    pub id: String,
    pub trigger: String,
    /// The rule instance the event is for (a timer's rule, or the rule a sensor payload named);
    /// absent when it is for every rule on its trigger.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `sensor:<ref>`, `timer:<rule>`, `webhook` or `api:<token name>`.
    pub source: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    /// RFC 3339, UTC, microseconds.
    pub created_at: String,
}

impl From<EventRecord> for EventOut {
    fn from(e: EventRecord) -> Self {
        EventOut {
            id: e.id,
            trigger: e.trigger_ref,
            rule: e.rule_ref,
            source: e.source,
            payload: e.payload,
            created_at: rfc3339(e.created_at),
        }
    }
}

/// A stored enforcement: a rule matched an event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnforcementOut {
    pub id: String,
    pub rule: String,
    pub event_id: String,
    pub trigger: String,
    pub action: String,
    /// Resolved action parameters; `null` when resolving failed (see `error`).
    #[schema(value_type = Option<Object>)]
    pub parameters: Option<Value>,
    /// `scheduled` or `failed`.
    pub status: String,
    pub error: Option<String>,
    /// RFC 3339, UTC, microseconds.
    pub created_at: String,
}

impl From<EnforcementRecord> for EnforcementOut {
    fn from(e: EnforcementRecord) -> Self {
        EnforcementOut {
            id: e.id,
            rule: e.rule_ref,
            event_id: e.event_id,
            trigger: e.trigger_ref,
            action: e.action_ref,
            parameters: e.parameters,
            status: e.status.as_str().to_string(),
            error: e.error,
            created_at: rfc3339(e.created_at),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    pub events: Vec<EventOut>,
    /// Cursor of the next (older) page, for `before`; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EnforcementPage {
    pub enforcements: Vec<EnforcementOut>,
    /// Cursor of the next (older) page, for `before`; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Filters of `GET /events`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only events of this trigger.
    #[param(nullable = false)]
    pub trigger: Option<String>,
    /// RFC 3339; events created at or after.
    #[param(nullable = false, format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339; events created before.
    #[param(nullable = false, format = DateTime)]
    pub until: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Cursor: the `next` of the previous page (an event id).
    #[param(
        nullable = false,
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub before: Option<String>,
}

/// Filters of `GET /enforcements`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EnforcementQuery {
    /// Only enforcements of this rule.
    #[param(nullable = false)]
    pub rule: Option<String>,
    /// Only enforcements of events of this trigger.
    #[param(nullable = false)]
    pub trigger: Option<String>,
    /// RFC 3339; created at or after.
    #[param(nullable = false, format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339; created before.
    #[param(nullable = false, format = DateTime)]
    pub until: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Cursor: the `next` of the previous page (an enforcement id).
    #[param(
        nullable = false,
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub before: Option<String>,
}

/// One payload for `POST /events`; the body is one of these or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"trigger": "examples_http.new_item",
    "payload": {"id": 3, "item": {"id": 3, "title": "third"}, "source": "http://127.0.0.1:8765/items"}}))]
pub struct EventIn {
    /// Trigger ref, `pack.name`; a `sensor` token must list it.
    #[schema(pattern = r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")]
    pub trigger: String,
    /// A JSON object, checked against the trigger's payload schema.
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// The body of `POST /events` (OpenAPI view; parsed by hand so errors name `[i].field`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum EventBatch {
    One(EventIn),
    Many(Vec<EventIn>),
}

/// In the OpenAPI document: one [`EventIn`], or a list of 1 to [`MAX_BATCH`].
impl utoipa::PartialSchema for EventBatch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ArrayBuilder, OneOfBuilder, Ref};
        OneOfBuilder::new()
            .description(Some("One payload, or a list of 1 to 1000 stored all or none."))
            .item(Ref::from_schema_name("EventIn"))
            .item(
                ArrayBuilder::new()
                    .items(Ref::from_schema_name("EventIn"))
                    .min_items(Some(1))
                    .max_items(Some(MAX_BATCH)),
            )
            .into()
    }
}

impl utoipa::ToSchema for EventBatch {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use utoipa::PartialSchema;
        schemas.push(("EventIn".into(), EventIn::schema()));
    }
}

/// What `POST /events` and the webhook stored.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct IngestedOut {
    /// Ids of the stored events, in request order.
    pub event_ids: Vec<String>,
    /// Enforcements the events produced.
    pub enforcements: usize,
}

/// A query string, rejected as a 400 in the API's error shape.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(query)) => Ok(ApiQuery(query)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

/// 400 `bad_query`, naming the parameter that does not parse (or is unknown, or twice there).
fn query_rejection(rejection: &QueryRejection) -> ApiError {
    // Inside the rejection: serde_path_to_error's error over serde_urlencoded's
    // (`serde::de::value::Error`), which knows the parameter.
    let mut source = std::error::Error::source(rejection);
    while let Some(error) = source {
        if let Some(e) = error.downcast_ref::<serde_path_to_error::Error<serde::de::value::Error>>() {
            let message = e.inner().to_string();
            let mut field = e.path().to_string();
            if field == "." {
                // Unknown and repeated parameters are named in the message, not the path.
                field = message.split('`').nth(1).unwrap_or_default().to_string();
            }
            let text = if field.is_empty() { message } else { format!("query parameter `{field}`: {message}") };
            return ApiError::new(ErrorCode::BadQuery, text).with_field(field);
        }
        source = error.source();
    }
    ApiError::new(ErrorCode::BadQuery, rejection.body_text())
}

/// Unix microseconds as RFC 3339 UTC with microseconds, as every time the API shows.
pub(super) fn rfc3339(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Micros, true))
        .unwrap_or_default()
}

fn parse_time(value: Option<&str>, field: &str) -> Result<Option<i64>, ApiError> {
    value
        .map(|text| {
            DateTime::parse_from_rfc3339(text).map(|t| t.timestamp_micros()).map_err(|e| {
                ApiError::new(ErrorCode::BadQuery, format!("`{text}` is not an RFC 3339 time: {e}")).with_field(field)
            })
        })
        .transpose()
}

/// A page size: the default when absent, else 1 to [`MAX_LIMIT`].
pub(super) fn checked_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(ErrorCode::BadQuery, format!("limit must be 1 to {MAX_LIMIT}")).with_field("limit"));
    }
    Ok(limit)
}

/// A `before` cursor: the id of the last item of the previous page, a UUID (36 characters,
/// hyphenated; any case, compared in the lowercase the ids are stored in). Anything else is
/// 400 `bad_query` naming `before`, rather than a page silently cut somewhere.
fn checked_before(before: Option<String>) -> Result<Option<String>, ApiError> {
    before
        .map(|text| match uuid::Uuid::try_parse(&text) {
            Ok(id) if text.len() == 36 => Ok(id.hyphenated().to_string()),
            _ => Err(ApiError::new(
                ErrorCode::BadQuery,
                format!("`{text}` is not a paging cursor: pass the `next` of the previous page"),
            )
            .with_field("before")),
        })
        .transpose()
}

fn page_filter(
    trigger: Option<String>,
    rule: Option<String>,
    since: Option<&str>,
    until: Option<&str>,
    limit: Option<u32>,
    before: Option<String>,
) -> Result<ListFilter, ApiError> {
    let limit = checked_limit(limit)?;
    Ok(ListFilter {
        trigger_ref: trigger,
        rule_ref: rule,
        since: parse_time(since, "since")?,
        until: parse_time(until, "until")?,
        before: checked_before(before)?,
        limit,
    })
}

/// The cursor after a page: its last id when it is full.
fn next_cursor(ids: impl DoubleEndedIterator<Item = String> + ExactSizeIterator, limit: u32) -> Option<String> {
    let len = ids.len();
    (len > 0 && len >= limit as usize).then(|| ids.last()).flatten()
}

/// List events, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", security(("bearer" = [])), params(EventQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let filter = page_filter(q.trigger, None, q.since.as_deref(), q.until.as_deref(), q.limit, q.before)?;
    let events = state.app.history.events(&filter).await?;
    let next = next_cursor(events.iter().map(|e| e.id.clone()), filter.limit);
    Ok(Json(EventPage { events: events.into_iter().map(EventOut::from).collect(), next }))
}

/// Get an event.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, body = EventOut), (status = 404, body = ErrorBody)))]
pub async fn get_one(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<EventOut>, ApiError> {
    let event = state.app.history.event(&id).await?.ok_or_else(|| ApiError::not_found(format!("no event `{id}`")))?;
    Ok(Json(event.into()))
}

/// List enforcements, newest first.
#[utoipa::path(get, path = "/api/v1/enforcements", tag = "events", security(("bearer" = [])), params(EnforcementQuery),
    responses((status = 200, body = EnforcementPage), (status = 400, body = ErrorBody)))]
pub async fn enforcements(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<EnforcementQuery>,
) -> Result<Json<EnforcementPage>, ApiError> {
    let filter = page_filter(q.trigger, q.rule, q.since.as_deref(), q.until.as_deref(), q.limit, q.before)?;
    let rows = state.app.history.enforcements(&filter).await?;
    let next = next_cursor(rows.iter().map(|e| e.id.clone()), filter.limit);
    Ok(Json(EnforcementPage { enforcements: rows.into_iter().map(EnforcementOut::from).collect(), next }))
}

/// Post events for an external sensor: one `{trigger, payload}` or a list of them, stored all
/// or none. A `sensor` token may post only for the triggers it lists.
///
/// With `Idempotency-Key: <key>` (1 to 200 printable ASCII characters, unique per token), the
/// first stored answer is recorded with the events, in the same transaction, and kept at least
/// 24 h: the same key with the same body (the same JSON document, compared by the SHA-256 of its
/// canonical form, so whitespace and key order do not matter) answers it again, status and
/// body, with `Idempotent-Replayed: true`, and stores nothing more, even while the first is in
/// flight; with another body, 422 `idempotency_key_reused`. A refused request records nothing.
#[utoipa::path(post, path = "/api/v1/events", tag = "events", security(("bearer" = [])), request_body = EventBatch,
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = r"^[!-~]([ -~]{0,198}[!-~])?$",
        description = "1 to 200 printable ASCII characters, unique per token: a repeat with the same body answers as the first did and stores nothing more")),
    responses((status = 201, body = IngestedOut,
            headers(("Idempotent-Replayed" = String, description = "`true` on an answer repeated from the first request with this key"))),
        (status = 400, description = "Bad JSON, or a bad `Idempotency-Key` (`field` names it)", body = ErrorBody),
        (status = 403, description = "The token does not list the trigger", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "Unknown trigger, payload refused by its schema, a bad body, or an `Idempotency-Key` that came with another body (`idempotency_key_reused`)", body = ErrorBody)))]
pub async fn ingest(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    ApiJson(body): ApiJson,
) -> Result<Response, ApiError> {
    let keyed = request_key(&headers, IDEMPOTENCY_KEY_HEADER)?.map(|key| Keyed {
        scope: format!("token:{}", principal.token_id),
        key,
        header: IDEMPOTENCY_KEY_HEADER,
        request_hash: sha256_hex(canonical_json(&body).as_bytes()),
    });
    if let Some(keyed) = &keyed
        && let Some(first) = recorded(&state, keyed).await?
    {
        return Ok(first);
    }
    let batch = body.is_array();
    let field_of = |index: usize, leaf: &str| {
        if batch { join_field(&format!("[{index}]"), leaf) } else { leaf.to_string() }
    };
    let items: Vec<EventIn> = if batch { from_value(body, "")? } else { vec![from_value(body, "")?] };
    if items.is_empty() || items.len() > MAX_BATCH {
        return Err(ApiError::new(ErrorCode::BadBatch, format!("post 1 to {MAX_BATCH} events")));
    }
    for (index, item) in items.iter().enumerate() {
        if !principal.may_post(&item.trigger) {
            return Err(ApiError::new(
                ErrorCode::TriggerNotAllowed,
                format!("token `{}` may not post events for `{}`", principal.name, item.trigger),
            )
            .with_field(field_of(index, "trigger")));
        }
        if !item.payload.is_object() {
            return Err(ApiError::new(ErrorCode::PayloadNotObject, "a payload is a JSON object")
                .with_field(field_of(index, "payload")));
        }
        let size = item.payload.to_string().len();
        if size > MAX_PAYLOAD_BYTES {
            return Err(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("payload {index}: {size} bytes exceeds the limit of {MAX_PAYLOAD_BYTES}"),
            )
            .with_field(field_of(index, "payload")));
        }
    }
    let triggers = items.iter().map(|i| i.trigger.clone()).collect();
    let source = Source::Api { token: principal.name.clone(), triggers };
    let payloads = items.into_iter().map(|i| (i.trigger, i.payload)).collect();
    ingest_keyed(&state, keyed, &source, payloads, field_of).await
}

/// The request header of `POST /events` that makes a repeat answer as the first request did.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// The response header on an answer repeated from the first request with its key: `true`.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";
/// Longest idempotency key or webhook delivery id, in characters (printable ASCII).
pub const MAX_KEY_CHARS: usize = 200;

/// A request with a key (an idempotency key, a webhook delivery id): answered once, then from
/// its record.
#[derive(Debug, Clone)]
pub(super) struct Keyed {
    /// Where the key is unique: `token:<token id>`, `webhook:<trigger ref>`.
    pub scope: String,
    pub key: String,
    /// The header that carried the key, as errors name it.
    pub header: &'static str,
    /// Lowercase hex SHA-256 of the request body.
    pub request_hash: String,
}

/// The key in the request header `name`: `None` when there is none; 400 `bad_header` naming it
/// when it is there twice, empty, longer than [`MAX_KEY_CHARS`] or not printable ASCII.
pub(super) fn request_key(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let bad = |why: &str| Err(ApiError::new(ErrorCode::BadHeader, format!("`{name}` {why}")).with_field(name));
    if values.next().is_some() {
        return bad("is given more than once");
    }
    let printable = |text: &&str| text.bytes().all(|b| (b' '..=b'~').contains(&b));
    match value.to_str().ok().filter(printable) {
        Some(key) if !key.is_empty() && key.len() <= MAX_KEY_CHARS => Ok(Some(key.to_string())),
        _ => bad(&format!("must be 1 to {MAX_KEY_CHARS} printable ASCII characters")),
    }
}

/// The recorded first answer to `keyed`'s key, when there is one; 422 `idempotency_key_reused`
/// when it answered another body.
pub(super) async fn recorded(state: &ApiState, keyed: &Keyed) -> Result<Option<Response>, ApiError> {
    let Some(first) = state.app.history.replay(&keyed.scope, &keyed.key).await? else { return Ok(None) };
    if first.request_hash != keyed.request_hash {
        let header = keyed.header;
        return Err(ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            format!("this `{header}` came with another body first; use a new one for another request"),
        )
        .with_field(header));
    }
    let status = u16::try_from(first.status).ok().and_then(|s| StatusCode::from_u16(s).ok());
    let status =
        status.ok_or_else(|| ApiError::internal(format!("recorded status {} is no HTTP status", first.status)))?;
    let mut answer = json_answer(status, first.body);
    answer.headers_mut().insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    Ok(Some(answer))
}

/// Ingests `payloads` from `source` and answers 201 with what was stored. With a key, the answer
/// is recorded in the transaction of the events, unless the key was taken meanwhile (by a
/// request still in flight when `recorded` looked): then nothing is stored and the answer is
/// the one recorded.
pub(super) async fn ingest_keyed(
    state: &ApiState,
    keyed: Option<Keyed>,
    source: &Source,
    payloads: Vec<(String, Value)>,
    field_of: impl Fn(usize, &str) -> String,
) -> Result<Response, ApiError> {
    let pipeline = &state.app.pipeline;
    let Some(keyed) = keyed else {
        let ingested = pipeline.ingest(source, payloads, None).await.map_err(|e| ApiError::from_ingest(e, field_of))?;
        return Ok(json_answer(StatusCode::CREATED, created_body(&ingested)));
    };
    let record = |ingested: &Ingested| ReplayRecord {
        scope: keyed.scope.clone(),
        key: keyed.key.clone(),
        request_hash: keyed.request_hash.clone(),
        status: i32::from(StatusCode::CREATED.as_u16()),
        body: created_body(ingested),
        created_at: now_micros(),
    };
    let stored =
        pipeline.ingest_once(source, payloads, record).await.map_err(|e| ApiError::from_ingest(e, field_of))?;
    match stored {
        Some(ingested) => Ok(json_answer(StatusCode::CREATED, created_body(&ingested))),
        None => recorded(state, &keyed).await?.ok_or_else(|| {
            ApiError::new(ErrorCode::Conflict, format!("`{}` is in use; try again", keyed.header))
                .with_field(keyed.header)
        }),
    }
}

/// The body of a 201 from `POST /events` or a webhook: an [`IngestedOut`].
fn created_body(ingested: &Ingested) -> String {
    let out = IngestedOut { event_ids: ingested.event_ids.clone(), enforcements: ingested.enforcements };
    serde_json::to_string(&out).unwrap_or_default()
}

fn json_answer(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// Lowercase hex SHA-256 of `bytes`.
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `value` as canonical JSON: no whitespace, object keys sorted (by their UTF-8 bytes) at every
/// depth, strings and numbers as serde_json writes them. Two bodies that are the same JSON
/// document, however they were spaced or their keys ordered, have the same canonical form.
pub(super) fn canonical_json(value: &Value) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                out.push('{');
                for (index, (key, value)) in entries.into_iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(value, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (index, item) in items.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&scalar.to_string()),
        }
    }
    let mut out = String::new();
    write(value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_ignores_spacing_and_key_order() {
        let a: Value = serde_json::from_str(r#"{"b": [1, {"y": 2, "x": "é"}], "a": null}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a":null,"b":[1,{"x":"é","y":2}]}"#).unwrap();
        assert_eq!(canonical_json(&a), r#"{"a":null,"b":[1,{"x":"é","y":2}]}"#);
        assert_eq!(sha256_hex(canonical_json(&a).as_bytes()), sha256_hex(canonical_json(&b).as_bytes()));
        assert_ne!(canonical_json(&json!({"a": [1, 2]})), canonical_json(&json!({"a": [2, 1]})));
    }

    #[test]
    fn request_keys_are_short_printable_and_single() {
        let mut headers = HeaderMap::new();
        assert_eq!(request_key(&headers, IDEMPOTENCY_KEY_HEADER).unwrap(), None);
        headers.insert(IDEMPOTENCY_KEY_HEADER, HeaderValue::from_static("order 42/retry"));
        assert_eq!(request_key(&headers, IDEMPOTENCY_KEY_HEADER).unwrap().as_deref(), Some("order 42/retry"));
        for bad in [String::new(), "k".repeat(MAX_KEY_CHARS + 1), "tab\there".into()] {
            headers.insert(IDEMPOTENCY_KEY_HEADER, HeaderValue::from_str(&bad).unwrap());
            let e = request_key(&headers, IDEMPOTENCY_KEY_HEADER).unwrap_err();
            assert_eq!((e.code(), e.body.field.as_deref()), (ErrorCode::BadHeader, Some(IDEMPOTENCY_KEY_HEADER)));
        }
        headers.insert(IDEMPOTENCY_KEY_HEADER, HeaderValue::from_static("a"));
        headers.append(IDEMPOTENCY_KEY_HEADER, HeaderValue::from_static("b"));
        assert_eq!(request_key(&headers, IDEMPOTENCY_KEY_HEADER).unwrap_err().code(), ErrorCode::BadHeader);
    }
}
