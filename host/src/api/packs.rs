//! Loaded packs, and reloading the packs directory without a restart.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::ApiState;
use super::error::{ApiError, ErrorBody, ErrorCode};
use crate::pack::Pack;
use crate::supervisor::SensorChanges;

/// One pack in `GET /packs`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct PackInfo {
    #[serde(rename = "ref")]
    pub pack_ref: String,
    pub version: String,
    pub description: String,
    pub triggers: Vec<String>,
    pub sensors: Vec<String>,
    /// Rules shipped in `rules/` (installed on first load; changed through the API since).
    pub rules: Vec<String>,
}

impl PackInfo {
    pub fn of(pack: &Pack) -> Self {
        PackInfo {
            pack_ref: pack.manifest.pack_ref.clone(),
            version: pack.manifest.version.clone(),
            description: pack.manifest.description.clone(),
            triggers: pack.triggers.iter().map(|t| t.trigger_ref.clone()).collect(),
            sensors: pack.sensors.iter().map(|s| s.sensor_ref.clone()).collect(),
            rules: pack.rules.iter().map(|r| r.spec.rule_ref.clone()).collect(),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PackList {
    pub packs: Vec<PackInfo>,
}

/// `POST /packs/reload`: the packs now loaded and what happened to the sensors.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReloadOut {
    pub packs: Vec<PackInfo>,
    pub sensors: SensorChanges,
}

/// The loaded packs.
#[utoipa::path(get, path = "/api/v1/packs", tag = "packs", security(("bearer" = [])),
    responses((status = 200, body = PackList), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<ApiState>) -> Json<PackList> {
    Json(PackList { packs: state.app.catalog.current().packs().iter().map(PackInfo::of).collect() })
}

/// Load the packs directory again and apply it without a restart: new and changed triggers,
/// pack rules not stored yet, sensors added, replaced (keeping their state store) or removed.
/// A pack with an error changes nothing; the error names the file and the field.
#[utoipa::path(post, path = "/api/v1/packs/reload", tag = "packs", security(("bearer" = [])),
    responses((status = 200, body = ReloadOut),
        (status = 422, description = "A pack is invalid; `message` names the file, `field` the field", body = ErrorBody),
        (status = 503, description = "This server does not load packs", body = ErrorBody)))]
pub async fn reload(State(state): State<ApiState>) -> Result<Json<ReloadOut>, ApiError> {
    let control = state
        .packs
        .clone()
        .ok_or_else(|| ApiError::new(ErrorCode::PacksUnavailable, "this server does not load packs"))?;
    let (packs, sensors) = control.reload().await.map_err(|e| {
        let error = ApiError::new(ErrorCode::InvalidPack, e.to_string());
        match e.field {
            Some(field) => error.with_field(field),
            None => error,
        }
    })?;
    Ok(Json(ReloadOut { packs: packs.iter().map(PackInfo::of).collect(), sensors }))
}
