//! Health, readiness, the trigger catalog, sensors and the OpenAPI document.

use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::OpenApi;

use super::error::{ApiError, ErrorBody, ErrorCode};
use super::{ApiDoc, ApiState, SensorControl, SensorInfo, TriggerInfo};

/// How long `GET /ready` waits for each check (they run at once): a probe gets its answer within
/// 200 ms even when the database does not answer at all (the check then fails, naming the wait).
pub const READY_CHECK_TIMEOUT: Duration = Duration::from_millis(100);

/// One readiness check.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Check {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// `GET /ready`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: String,
    /// The checks that failed (`store`, `bus`); absent when ready.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
    pub store: Check,
    pub bus: Check,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TriggerList {
    pub triggers: Vec<TriggerInfo>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SensorList {
    pub sensors: Vec<SensorInfo>,
}

/// The process is up.
#[utoipa::path(get, path = "/health", tag = "ops", responses((status = 200, description = "Always")))]
pub async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Whether the store answers a query and the bus is connected, each within
/// [`READY_CHECK_TIMEOUT`]: answers within 200 ms, 503 naming the checks that failed.
#[utoipa::path(get, path = "/ready", tag = "ops",
    responses((status = 200, body = Readiness), (status = 503, description = "A check failed; it says which", body = Readiness)))]
pub async fn ready(State(state): State<ApiState>) -> (StatusCode, Json<Readiness>) {
    let check = |result: Result<Result<(), String>, tokio::time::error::Elapsed>| match result {
        Ok(Ok(())) => Check { ok: true, error: None },
        Ok(Err(e)) => Check { ok: false, error: Some(e) },
        Err(_) => Check { ok: false, error: Some(format!("no answer within {READY_CHECK_TIMEOUT:?}")) },
    };
    let store = async { state.app.ping_store().await.map_err(|e| e.to_string()) };
    let bus = async { state.app.bus.ready().await.map_err(|e| e.to_string()) };
    let (store, bus) =
        tokio::join!(tokio::time::timeout(READY_CHECK_TIMEOUT, store), tokio::time::timeout(READY_CHECK_TIMEOUT, bus));
    let (store, bus) = (check(store), check(bus));
    let failed: Vec<String> =
        [("store", store.ok), ("bus", bus.ok)].into_iter().filter(|(_, ok)| !ok).map(|(name, _)| name.into()).collect();
    let ok = failed.is_empty();
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { status: if ok { "ready" } else { "not_ready" }.into(), failed, store, bus }))
}

/// Prometheus metrics of this host (text exposition format 0.0.4).
#[utoipa::path(get, path = "/metrics", tag = "ops", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, body = ErrorBody)))]
pub async fn metrics(State(state): State<ApiState>) -> Response {
    // The backlog is read from the store, so it counts rows every host wrote.
    match state.app.outbox_backlog().await {
        Ok(rows) => state.app.metrics.set_outbox_backlog(rows),
        Err(e) => tracing::warn!("metrics: cannot count the outbox backlog: {e}"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.app.metrics.render()).into_response()
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "ops", security(("bearer" = [])),
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let document = DOCUMENT.get_or_init(|| ApiDoc::openapi().to_json().unwrap_or_default());
    ([(header::CONTENT_TYPE, "application/json")], document.clone()).into_response()
}

/// The known triggers: core ones and every loaded pack's.
#[utoipa::path(get, path = "/api/v1/triggers", tag = "ops", security(("bearer" = [])),
    responses((status = 200, body = TriggerList), (status = 401, body = ErrorBody)))]
pub async fn triggers(State(state): State<ApiState>) -> Json<TriggerList> {
    Json(TriggerList { triggers: state.app.catalog.current().triggers().iter().map(TriggerInfo::of).collect() })
}

pub(super) fn supervisor(state: &ApiState) -> Result<&dyn SensorControl, ApiError> {
    state
        .sensors
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorCode::SensorsUnavailable, "this server runs no sensor supervisor"))
}

/// Every sensor: state, last error, polls, fuel used, events.
#[utoipa::path(get, path = "/api/v1/sensors", tag = "sensors", security(("bearer" = [])),
    responses((status = 200, body = SensorList), (status = 503, description = "No sensor supervisor", body = ErrorBody)))]
pub async fn sensors(State(state): State<ApiState>) -> Result<Json<SensorList>, ApiError> {
    let sensors = supervisor(&state)?.list().await.map_err(|e| ApiError::from(&e))?;
    Ok(Json(SensorList { sensors }))
}

/// Restart a sensor on a fresh instance (also ends a quarantine).
#[utoipa::path(post, path = "/api/v1/sensors/{ref}/restart", tag = "sensors", security(("bearer" = [])),
    params(("ref" = String, Path, description = "Sensor ref")),
    responses((status = 202, description = "Restarting"), (status = 404, body = ErrorBody),
        (status = 503, description = "No sensor supervisor", body = ErrorBody)))]
pub async fn restart_sensor(
    State(state): State<ApiState>,
    Path(sensor_ref): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if supervisor(&state)?.restart(&sensor_ref).await.map_err(|e| ApiError::from(e.as_ref()))? {
        Ok((StatusCode::ACCEPTED, Json(json!({"restarting": sensor_ref}))))
    } else {
        Err(ApiError::not_found(format!("no sensor `{sensor_ref}`")))
    }
}
