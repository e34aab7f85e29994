//! A sensor's state store, seen and reset by an operator: the cursors and whatever else the
//! sensor keeps between polls (`state.get/set` in the SDKs). Admin only, reads included: a
//! sensor may keep what a `readonly` token should not see.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;

use super::ApiState;
use super::error::{ApiError, ErrorBody};

/// `GET /sensors/{ref}/state`: the sensor's committed state, as its next instance would start
/// from it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SensorStateOut {
    /// The sensor's ref.
    pub sensor: String,
    /// Every key the sensor stored, with its value (state values are strings).
    pub state: BTreeMap<String, String>,
}

/// A sensor's stored state: what its poll loop committed, read from the store (every host
/// answers the same).
#[utoipa::path(get, path = "/api/v1/sensors/{ref}/state", tag = "sensors", security(("bearer" = [])),
    params(("ref" = String, Path, description = "Sensor ref")),
    responses((status = 200, body = SensorStateOut), (status = 404, description = "No such sensor", body = ErrorBody)))]
pub async fn get_state(
    State(state): State<ApiState>,
    Path(sensor_ref): Path<String>,
) -> Result<Json<SensorStateOut>, ApiError> {
    if !state.app.catalog.current().sensors().any(|s| s.sensor_ref == sensor_ref) {
        return Err(ApiError::not_found(format!("no sensor `{sensor_ref}`")));
    }
    let stored = state.app.store.sensor_state(&sensor_ref).await.map_err(|e| ApiError::from(&e))?;
    Ok(Json(SensorStateOut { sensor: sensor_ref, state: stored }))
}

/// Reset a sensor's state: every key is deleted and the sensor restarts on a fresh instance
/// (a quarantine holds), on whichever host runs it. On the host answering, the instance's poll in
/// flight ends and is stored first, so nothing it held is written back after the reset; a host
/// running it elsewhere clears again once its own instance has stopped.
#[utoipa::path(delete, path = "/api/v1/sensors/{ref}/state", tag = "sensors", security(("bearer" = [])),
    params(("ref" = String, Path, description = "Sensor ref")),
    responses((status = 204, description = "Reset"), (status = 404, description = "No such sensor", body = ErrorBody),
        (status = 503, description = "No sensor supervisor", body = ErrorBody)))]
pub async fn reset_state(
    State(state): State<ApiState>,
    Path(sensor_ref): Path<String>,
) -> Result<StatusCode, ApiError> {
    if super::ops::supervisor(&state)?.reset_state(&sensor_ref).await.map_err(|e| ApiError::from(e.as_ref()))? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no sensor `{sensor_ref}`")))
    }
}
