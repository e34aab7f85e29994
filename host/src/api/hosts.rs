//! Several hosts (spec section 7): the live hosts, and the timers with their owners. Both are
//! read from the store, so every host answers the same.

use std::collections::{BTreeMap, HashMap};

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::events::rfc3339;
use crate::store::WorkKind;

/// One live host in `GET /hosts`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct HostOut {
    pub id: String,
    /// Its API address, as it announced it.
    pub listen: String,
    /// RFC 3339, on the database's clock.
    pub started_at: String,
    /// Its last lease renewal (RFC 3339, database clock).
    pub last_seen: String,
    /// Sensors it owns.
    pub sensors: usize,
    /// Timers it owns.
    pub timers: usize,
    /// Packs of which its copy is not the one registered last: it runs none of their sensors.
    pub packs_mismatched: Vec<String>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HostList {
    pub hosts: Vec<HostOut>,
}

/// One timer rule in `GET /timers`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TimerOut {
    pub rule: String,
    /// The live host running it; `null` while none does.
    pub owner: Option<String>,
    /// RFC 3339; `null` when nothing is planned.
    pub next_fire_at: Option<String>,
    pub last_fire_at: Option<String>,
    pub execution_count: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TimerList {
    pub timers: Vec<TimerOut>,
}

/// Live owners by item, for one kind of work.
async fn owners(state: &ApiState, kind: WorkKind, live: &[String]) -> Result<HashMap<String, String>, ApiError> {
    let rows = state.app.store.ownership(kind).await.map_err(|e| ApiError::from(&e))?;
    Ok(rows.into_iter().filter_map(|row| Some((row.item, row.owner.filter(|o| live.contains(o))?))).collect())
}

/// The live hosts sharing this host's store, by id, with how many sensors and timers each owns.
#[utoipa::path(get, path = "/api/v1/hosts", tag = "hosts", security(("bearer" = [])),
    responses((status = 200, body = HostList), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<ApiState>) -> Result<Json<HostList>, ApiError> {
    let hosts = state.app.store.live_hosts().await.map_err(|e| ApiError::from(&e))?;
    let live: Vec<String> = hosts.iter().map(|h| h.id.clone()).collect();
    let mut counts: BTreeMap<(String, WorkKind), usize> = BTreeMap::new();
    for kind in WorkKind::ALL {
        for owner in owners(&state, kind, &live).await?.into_values() {
            *counts.entry((owner, kind)).or_default() += 1;
        }
    }
    let count = |id: &str, kind| counts.get(&(id.to_string(), kind)).copied().unwrap_or(0);
    let copies = state.app.store.pack_copies().await.map_err(|e| ApiError::from(&e))?;
    let hosts = hosts
        .into_iter()
        .map(|h| HostOut {
            sensors: count(&h.id, WorkKind::Sensor),
            packs_mismatched: copies.mismatched(&h.id).into_iter().collect(),
            timers: count(&h.id, WorkKind::Timer),
            started_at: rfc3339(h.started_at),
            last_seen: rfc3339(h.last_seen),
            listen: h.listen,
            id: h.id,
        })
        .collect();
    Ok(Json(HostList { hosts }))
}

/// Every enabled timer rule, by rule ref: its owner and where its schedule stands.
#[utoipa::path(get, path = "/api/v1/timers", tag = "hosts", security(("bearer" = [])),
    responses((status = 200, body = TimerList), (status = 401, body = ErrorBody)))]
pub async fn timers(State(state): State<ApiState>) -> Result<Json<TimerList>, ApiError> {
    let store = &state.app.store;
    let live: Vec<String> =
        store.live_hosts().await.map_err(|e| ApiError::from(&e))?.into_iter().map(|h| h.id).collect();
    let owners = owners(&state, WorkKind::Timer, &live).await?;
    let mut states: HashMap<String, _> =
        store.timer_states().await.map_err(|e| ApiError::from(&e))?.into_iter().collect();
    let mut rules = state.app.pipeline.timer_rules();
    rules.sort();
    let timers = rules
        .into_iter()
        .map(|rule| {
            let stored = states.remove(&rule).unwrap_or_default();
            TimerOut {
                owner: owners.get(&rule).cloned(),
                next_fire_at: stored.next_fire_at.map(rfc3339),
                last_fire_at: stored.last_fire_at.map(rfc3339),
                execution_count: stored.execution_count,
                rule,
            }
        })
        .collect();
    Ok(Json(TimerList { timers }))
}
