//! `/api/v1/events` and `/api/v1/enforcements`: the read side, paged newest first, and ingest
//! for external sensors.
//!
//! Paging: a page holds at most `limit` items (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]);
//! when it is full, `next` is the cursor for the following (older) page, passed back as `before`.

use attune_rules::chrono::{DateTime, SecondsFormat, Utc};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::{Json, extract::FromRequestParts, http::request::Parts};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApiState;
use super::error::{ApiError, ApiJson, ErrorBody, ErrorCode, from_value, join_field};
use crate::auth::Principal;
use crate::history::{EnforcementRecord, EventRecord, ListFilter};
use crate::pipeline::Source;

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
    pub trigger: Option<String>,
    /// RFC 3339; events created at or after.
    pub since: Option<String>,
    /// RFC 3339; events created before.
    pub until: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// Cursor: the `next` of the previous page.
    pub before: Option<String>,
}

/// Filters of `GET /enforcements`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EnforcementQuery {
    /// Only enforcements of this rule.
    pub rule: Option<String>,
    /// Only enforcements of events of this trigger.
    pub trigger: Option<String>,
    /// RFC 3339; created at or after.
    pub since: Option<String>,
    /// RFC 3339; created before.
    pub until: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    pub limit: Option<u32>,
    /// Cursor: the `next` of the previous page.
    pub before: Option<String>,
}

/// One payload for `POST /events`; the body is one of these or a list of them.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventIn {
    /// Trigger ref; a `sensor` token must list it.
    pub trigger: String,
    /// A JSON object, checked against the trigger's payload schema.
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// The body of `POST /events` (OpenAPI view; parsed by hand so errors name `[i].field`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum EventBatch {
    One(EventIn),
    Many(Vec<EventIn>),
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

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    ApiError::new(ErrorCode::BadQuery, rejection.body_text())
}

fn rfc3339(micros: i64) -> String {
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
        before,
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
#[utoipa::path(post, path = "/api/v1/events", tag = "events", security(("bearer" = [])), request_body = EventBatch,
    responses((status = 201, body = IngestedOut), (status = 400, body = ErrorBody),
        (status = 403, description = "The token does not list the trigger", body = ErrorBody),
        (status = 413, body = ErrorBody),
        (status = 422, description = "Unknown trigger, payload refused by its schema, or a bad body", body = ErrorBody)))]
pub async fn ingest(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    ApiJson(body): ApiJson,
) -> Result<(StatusCode, Json<IngestedOut>), ApiError> {
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
    let payloads = items.into_iter().map(|i| (i.trigger, i.payload));
    let ingested =
        state.app.pipeline.ingest(&source, payloads, None).await.map_err(|e| ApiError::from_ingest(e, field_of))?;
    Ok((StatusCode::CREATED, Json(IngestedOut { event_ids: ingested.event_ids, enforcements: ingested.enforcements })))
}
