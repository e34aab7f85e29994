//! The HTTP API (spec section 6): rules, the read side, ingest for external sensors and
//! webhooks under `/api/v1`, and `GET /health` and `GET /ready` at the root.
//!
//! ```text
//! GET    /health                          200 always                                   no auth
//! GET    /ready                           200, or 503 naming the store or bus check    no auth
//! POST   /api/v1/webhooks/{trigger_ref}   201; 401 bad signature, 404 no secret        HMAC
//! GET    /api/v1/openapi.json             200                                          read
//! GET    /api/v1/rules                    200, paged                                   read
//! POST   /api/v1/rules                    201; 409 exists, 422 bad rule                admin
//! GET    /api/v1/rules/{ref}              200; 404                                     read
//! PUT    /api/v1/rules/{ref}              200; 404, 422                                admin
//! DELETE /api/v1/rules/{ref}              204; 404                                     admin
//! POST   /api/v1/rules/{ref}/enable       200; 404                                     admin
//! POST   /api/v1/rules/{ref}/disable      200; 404                                     admin
//! POST   /api/v1/rules/test               200 (dry run); 422 bad rule                  admin
//! GET    /api/v1/triggers                 200                                          read
//! GET    /api/v1/sensors                  200; 503 without a supervisor                read
//! POST   /api/v1/sensors/{ref}/restart    202; 404, 503                                admin
//! GET    /api/v1/events                   200, paged                                   read
//! GET    /api/v1/events/{id}              200; 404                                     read
//! POST   /api/v1/events                   201; 403 trigger not in token, 422           ingest
//! GET    /api/v1/enforcements             200, paged                                   read
//! GET    /api/v1/packs                    200                                          read
//! POST   /api/v1/packs/reload             200; 422 naming file and field, 503          admin
//! GET    /metrics                         200, Prometheus text format                  read
//! ```
//!
//! "read" is an `admin` or `readonly` token, "admin" an `admin` token, "ingest" an `admin` or
//! `sensor` token (see [`crate::auth`]). Every route that needs a token answers 401 without one
//! and 403 outside its scope, before the handler runs. Errors have one shape, [`ErrorBody`]
//! (every code and its status are in the table of [`ErrorCode`], `api/error.rs`). JSON bodies are limited to 2 MiB (axum's default),
//! webhook bodies to [`WEBHOOK_MAX_BODY_BYTES`]; beyond, 413.
//!
//! The OpenAPI document is generated from the handlers and types here ([`ApiDoc`]).

mod error;
mod events;
mod ops;
mod packs;
mod rules;
mod webhooks;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Router, middleware};
use serde::Serialize;
use serde_json::Value;
use utoipa::OpenApi;

pub use error::{ApiError, ErrorBody, ErrorCode, ErrorDetail};
pub use events::{EnforcementOut, EnforcementPage, EventBatch, EventIn, EventOut, EventPage, IngestedOut};
pub use ops::{Check, Readiness};
pub use packs::{PackInfo, PackList, ReloadOut};
pub use rules::{ActionDoc, DryRunOut, RuleDoc, RuleList, RuleQuery, RuleTestIn};
pub use webhooks::{SIGNATURE_HEADER, WEBHOOK_MAX_BODY_BYTES, WebhookSecrets, sign};

use crate::app::App;
use crate::auth::{self, Access};
use crate::catalog::TriggerDef;
use crate::pack::{Pack, PackError};
use crate::supervisor::SensorChanges;

/// Everything the handlers need. Cheap to clone (all shared).
#[derive(Debug, Clone)]
pub struct ApiState {
    pub app: Arc<App>,
    /// Per-trigger webhook secrets; a trigger without one has no webhook.
    pub webhook_secrets: Arc<WebhookSecrets>,
    /// The sensor supervisor; `None` makes the sensor routes answer 503.
    pub sensors: Option<Arc<dyn SensorControl>>,
    /// Reloads the packs directory; `None` makes `POST /packs/reload` answer 503.
    pub packs: Option<Arc<dyn PackControl>>,
}

impl ApiState {
    /// A state with the app's packs, no webhook secrets and no sensor supervisor.
    pub fn new(app: Arc<App>) -> Self {
        ApiState { app, webhook_secrets: Arc::default(), sensors: None, packs: None }
    }

    pub fn with_pack_control(mut self, packs: Arc<dyn PackControl>) -> Self {
        self.packs = Some(packs);
        self
    }

    pub fn with_webhook_secrets(mut self, secrets: WebhookSecrets) -> Self {
        self.webhook_secrets = Arc::new(secrets);
        self
    }

    pub fn with_sensors(mut self, sensors: Arc<dyn SensorControl>) -> Self {
        self.sensors = Some(sensors);
        self
    }
}

/// The sensor supervisor as the API sees it.
#[async_trait::async_trait]
pub trait SensorControl: Send + Sync + std::fmt::Debug {
    /// Every known sensor and how it is doing. Called on each `GET /sensors`: must not block.
    fn list(&self) -> Vec<SensorInfo>;
    /// Restarts a sensor on a fresh instance, clearing a quarantine. Called on each
    /// `POST /sensors/{ref}/restart`; returns false when there is no such sensor.
    async fn restart(&self, sensor_ref: &str) -> bool;
}

/// Pack loading as the API sees it.
#[async_trait::async_trait]
pub trait PackControl: Send + Sync + std::fmt::Debug {
    /// Loads the packs directory again and applies it: the app's pack catalog (new triggers and
    /// configs), new pack rules, sensors added, replaced (keeping their state) or removed. On an
    /// error nothing changes. Returns the packs now loaded.
    async fn reload(&self) -> Result<(Vec<Pack>, SensorChanges), PackError>;
}

/// One sensor in `GET /sensors`: the supervisor's view of it.
pub use crate::supervisor::{SensorState, SensorStatus as SensorInfo};

/// One trigger in `GET /triggers`.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TriggerInfo {
    #[serde(rename = "ref")]
    pub trigger_ref: String,
    pub pack: String,
    pub description: String,
    /// JSON Schema of the payloads; `null` accepts any.
    #[schema(value_type = Option<Object>)]
    pub payload_schema: Option<Value>,
    /// JSON Schema of a rule's `trigger_params`.
    #[schema(value_type = Option<Object>)]
    pub param_schema: Option<Value>,
}

impl TriggerInfo {
    pub fn of(trigger: &TriggerDef) -> Self {
        TriggerInfo {
            trigger_ref: trigger.trigger_ref.clone(),
            pack: trigger.pack.clone(),
            description: trigger.description.clone(),
            payload_schema: trigger.payload_schema().cloned(),
            param_schema: trigger.param_schema().cloned(),
        }
    }
}

/// The whole HTTP service: `/health`, `/ready` and `/api/v1/..`.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/api/v1/openapi.json", get(ops::openapi))
        .route("/api/v1/rules", get(rules::list).post(rules::create))
        .route("/api/v1/rules/test", post(rules::test))
        .route("/api/v1/rules/{ref}", get(rules::get_one).put(rules::replace).delete(rules::delete))
        .route("/api/v1/rules/{ref}/enable", post(rules::enable))
        .route("/api/v1/rules/{ref}/disable", post(rules::disable))
        .route("/api/v1/triggers", get(ops::triggers))
        .route("/api/v1/sensors", get(ops::sensors))
        .route("/api/v1/sensors/{ref}/restart", post(ops::restart_sensor))
        .route("/api/v1/events", get(events::list).post(events::ingest))
        .route("/api/v1/events/{id}", get(events::get_one))
        .route("/api/v1/enforcements", get(events::enforcements))
        .route("/api/v1/packs", get(packs::list))
        .route("/api/v1/packs/reload", post(packs::reload))
        .route("/metrics", get(ops::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let public = Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/api/v1/webhooks/{trigger_ref}", webhooks::route());
    protected
        .merge(public)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed here") })
        .with_state(state)
}

/// What a request needs: reads are `GET`, `POST /events` is ingest, everything else is admin.
fn access_for(method: &Method, path: &str) -> Access {
    if method == Method::GET || method == Method::HEAD {
        Access::Read
    } else if method == Method::POST && path == "/api/v1/events" {
        Access::Ingest
    } else {
        Access::Admin
    }
}

/// Authenticates the bearer token and checks its scope; the handler sees the
/// [`auth::Principal`] as a request extension.
async fn require_token(State(state): State<ApiState>, mut request: Request, next: Next) -> Result<Response, ApiError> {
    let access = access_for(request.method(), request.uri().path());
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .ok_or(auth::AuthError::Unauthorized("missing `Authorization: Bearer <token>`"))?;
    let principal = state.app.tokens.authenticate(bearer).await?;
    principal.require(access)?;
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

/// The OpenAPI document, generated from the handlers and types of this module.
#[derive(Debug, OpenApi)]
#[openapi(
    info(title = "Attune sensor host", description = "Rules, events, enforcements, sensors and ingest."),
    paths(
        ops::health, ops::ready, ops::openapi, ops::triggers, ops::sensors, ops::restart_sensor,
        rules::list, rules::create, rules::get_one, rules::replace, rules::delete, rules::enable,
        rules::disable, rules::test,
        events::list, events::get_one, events::ingest, events::enforcements,
        packs::list, packs::reload, ops::metrics,
        webhooks::webhook,
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode, auth::Scope)),
    modifiers(&BearerAuth),
    tags(
        (name = "rules", description = "Rules: create, change, enable, disable, dry-run"),
        (name = "events", description = "Events and enforcements; ingest for external sensors"),
        (name = "webhooks", description = "HMAC-signed webhooks"),
        (name = "sensors", description = "Sensor status and restarts"),
        (name = "packs", description = "Loaded packs and reloading them"),
        (name = "ops", description = "Health, readiness, the trigger catalog and this document"),
    )
)]
pub struct ApiDoc;

#[derive(Debug)]
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_by_method_and_path() {
        assert_eq!(access_for(&Method::GET, "/api/v1/rules"), Access::Read);
        assert_eq!(access_for(&Method::POST, "/api/v1/events"), Access::Ingest);
        assert_eq!(access_for(&Method::POST, "/api/v1/rules/test"), Access::Admin);
        assert_eq!(access_for(&Method::DELETE, "/api/v1/rules/a.b"), Access::Admin);
    }

    #[test]
    fn openapi_lists_every_route() {
        let doc = ApiDoc::openapi();
        for path in ["/api/v1/rules", "/api/v1/rules/{ref}", "/api/v1/webhooks/{trigger_ref}", "/ready"] {
            assert!(doc.paths.paths.contains_key(path), "{path}");
        }
        let json = serde_json::to_value(&doc).unwrap();
        let codes = &json["components"]["schemas"]["ErrorCode"]["enum"];
        assert_eq!(codes.as_array().map(Vec::len), Some(ErrorCode::ALL.len()), "{codes}");
        assert_eq!(
            json["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["$ref"],
            "#/components/schemas/ErrorCode"
        );
    }
}
