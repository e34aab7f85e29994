//! The HTTP API (spec section 6): rules, the read side, ingest for external sensors and
//! webhooks under `/api/v1`, and `GET /health` and `GET /ready` at the root.
//!
//! ```text
//! GET    /health                          200 always                                   no auth
//! GET    /ready                           200, or 503 naming the store or bus check    no auth
//! GET    / and /console/*                 the operator console (crate::console)        no auth
//! POST   /api/v1/webhooks/{trigger_ref}   201; 401 signature or timestamp, 404, 422    HMAC
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
//! GET    /api/v1/sensors/{ref}/state      200: the sensor's stored state; 404          admin
//! DELETE /api/v1/sensors/{ref}/state      204: state reset, sensor restarted; 404, 503 admin
//! GET    /api/v1/events                   200, paged                                   read
//! GET    /api/v1/events/{id}              200; 404                                     read
//! GET    /api/v1/events/{id}/explain      200: every rule on its trigger, why; 404     read
//! POST   /api/v1/events                   201; 403 trigger not in token, 422           ingest
//! GET    /api/v1/enforcements             200, paged                                   read
//! GET    /api/v1/stream                   200 server-sent events; 429 too many streams read
//! GET    /api/v1/packs                    200                                          read
//! POST   /api/v1/packs/reload             200; 422 naming file and field, 503          admin
//! GET    /api/v1/hosts                    200: live hosts, what each owns              read
//! GET    /api/v1/timers                   200: timer rules, owner, schedule            read
//! GET    /metrics                         200, Prometheus text format                  read
//! ```
//!
//! "read" is an `admin` or `readonly` token, "admin" an `admin` token (a sensor's state may hold
//! what a `readonly` token should not see, so reading it is admin too), "ingest" an `admin` or
//! `sensor` token (see [`crate::auth`]). Every route that needs a token answers 401 without one
//! and 403 outside its scope, before the handler runs. While the database cannot be reached,
//! every route that uses it answers 503 `store_unavailable` with `Retry-After` within about a
//! second (the store's connection wait), and `GET /ready` answers 503 within 200 ms; both recover
//! by themselves when it is back. A query parameter that does not parse, is unknown or out of
//! range (a `limit` of 0, a paging cursor that is no `next`) is 400 `bad_query` naming it; a JSON
//! body with a key twice in one object is 400 `duplicate_key` naming it. Errors have one shape, [`ErrorBody`]
//! (every code and its status are in the table of [`ErrorCode`], `api/error.rs`). JSON bodies are limited to 2 MiB (axum's default),
//! webhook bodies to [`WEBHOOK_MAX_BODY_BYTES`]; beyond, 413.
//!
//! The OpenAPI document is generated from the handlers and types here ([`ApiDoc`]).

mod error;
mod events;
mod explain;
mod hosts;
mod ops;
mod packs;
mod rules;
mod sensor_state;
mod stream;
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
pub use events::{
    EnforcementOut, EnforcementPage, EventBatch, EventIn, EventOut, EventPage, IDEMPOTENCY_KEY_HEADER, IngestedOut,
    MAX_KEY_CHARS, REPLAYED_HEADER,
};
pub use explain::{ExplainOut, RuleVerdict};
pub use hosts::{HostList, HostOut, TimerList, TimerOut};
pub use ops::{Check, Readiness};
pub use packs::{PackInfo, PackList, ReloadOut};
pub use rules::{ActionDoc, DryRunOut, RuleDoc, RuleList, RuleQuery, RuleTestIn};
pub use sensor_state::SensorStateOut;
pub use stream::{CLIENT_BUFFER, MAX_STREAMS, StreamHub};
pub use webhooks::{
    DELIVERY_HEADER, MAX_CLOCK_SKEW_SECS, SIGNATURE_HEADER, TIMESTAMP_HEADER, WEBHOOK_MAX_BODY_BYTES, WebhookSecrets,
    sign,
};

use crate::app::App;
use crate::auth::{self, Access};
use crate::catalog::TriggerDef;
use crate::pack::{Pack, PackError};
use crate::store::StoreError;
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
    /// The live streams of `GET /stream`.
    pub streams: Arc<StreamHub>,
}

impl ApiState {
    /// A state with the app's packs, no webhook secrets and no sensor supervisor.
    pub fn new(app: Arc<App>) -> Self {
        ApiState { app, webhook_secrets: Arc::default(), sensors: None, packs: None, streams: Arc::default() }
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
    /// Every known sensor and how it is doing, wherever it runs. Called on each `GET /sensors`.
    async fn list(&self) -> Result<Vec<SensorInfo>, StoreError>;
    /// Restarts a sensor on a fresh instance, clearing a quarantine, on whichever host runs it.
    /// Called on each `POST /sensors/{ref}/restart`; false when there is no such sensor.
    async fn restart(&self, sensor_ref: &str) -> Result<bool, Arc<StoreError>>;
    /// Deletes every key of a sensor's stored state and restarts it on a fresh instance, on
    /// whichever host runs it; returns once the state is cleared and no instance seeded with the
    /// old one can write here. Called on each `DELETE /sensors/{ref}/state`; false when there is
    /// no such sensor.
    async fn reset_state(&self, sensor_ref: &str) -> Result<bool, Arc<StoreError>>;
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
        .route("/api/v1/sensors/{ref}/state", get(sensor_state::get_state).delete(sensor_state::reset_state))
        .route("/api/v1/events", get(events::list).post(events::ingest))
        .route("/api/v1/events/{id}", get(events::get_one))
        .route("/api/v1/events/{id}/explain", get(explain::explain))
        .route("/api/v1/stream", get(stream::stream))
        .route("/api/v1/enforcements", get(events::enforcements))
        .route("/api/v1/packs", get(packs::list))
        .route("/api/v1/packs/reload", post(packs::reload))
        .route("/api/v1/hosts", get(hosts::list))
        .route("/api/v1/timers", get(hosts::timers))
        .route("/metrics", get(ops::metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let public = Router::new()
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/api/v1/webhooks/{trigger_ref}", webhooks::route());
    protected
        .merge(public)
        .merge(crate::console::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed here") })
        .with_state(state)
}

/// What a request needs: reads are `GET` (but a sensor's state), `POST /events` is ingest,
/// everything else is admin.
fn access_for(method: &Method, path: &str) -> Access {
    let sensor_state = path.strip_prefix("/api/v1/sensors/").is_some_and(|rest| rest.ends_with("/state"));
    if (method == Method::GET || method == Method::HEAD) && !sensor_state {
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
        sensor_state::get_state, sensor_state::reset_state,
        rules::list, rules::create, rules::get_one, rules::replace, rules::delete, rules::enable,
        rules::disable, rules::test,
        events::list, events::get_one, events::ingest, events::enforcements, explain::explain, stream::stream,
        packs::list, packs::reload, hosts::list, hosts::timers, ops::metrics,
        webhooks::webhook,
    ),
    components(schemas(ErrorBody, ErrorDetail, ErrorCode, auth::Scope)),
    modifiers(&BearerAuth, &CommonResponses),
    tags(
        (name = "rules", description = "Rules: create, change, enable, disable, dry-run"),
        (name = "events", description = "Events and enforcements; ingest for external sensors"),
        (name = "webhooks", description = "HMAC-signed webhooks"),
        (name = "sensors", description = "Sensor status, restarts and state"),
        (name = "packs", description = "Loaded packs and reloading them"),
        (name = "hosts", description = "Hosts sharing the store, and who runs each sensor and timer"),
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

/// The answers every route of a kind can give, whatever its handler does, added to each route's
/// own: with a bearer token, 401 and 403 (the token check runs first) and 503
/// `store_unavailable` (the token is looked up in the store; so is every webhook); with query
/// parameters, 400 `bad_query`; with a JSON body, 400 (not JSON, a key twice, not JSON content),
/// 413 and 422. A status a route documents itself keeps its description; a 503 it documents
/// gains the store's case and `Retry-After`.
#[derive(Debug)]
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::ParameterIn;
        use utoipa::openapi::{RefOr, Response};
        const UNAVAILABLE: &str =
            "The store cannot be reached (`store_unavailable`); retry after `Retry-After` seconds";
        const UNAUTHORIZED: &str =
            "No token, or an unknown, revoked or expired one (`unauthorized`, with `WWW-Authenticate: Bearer`)";
        const BAD_QUERY: &str =
            "A query parameter that does not parse, is unknown or out of range (`bad_query`; `field` names it)";
        const BAD_BODY: &str = "A body that is not JSON (`malformed_json`), has a key twice in one object \
            (`duplicate_key`, `field` names it) or is not sent as `application/json`";
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch];
            for operation in operations.into_iter().flatten() {
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let query = operation.parameters.iter().flatten().any(|p| p.parameter_in == ParameterIn::Query);
                let body = operation.request_body.is_some();
                let responses = &mut operation.responses.responses;
                let mut add = |status: &str, description: &str| {
                    responses.entry(status.to_string()).or_insert_with(|| error_response(description).into());
                };
                if secured {
                    add("401", UNAUTHORIZED);
                    add("403", "The token's scope does not allow this (`forbidden`)");
                }
                if query {
                    add("400", BAD_QUERY);
                }
                if body {
                    add("400", BAD_BODY);
                    add("413", "A body larger than the route accepts (`body_too_large`)");
                    add("422", "A body of the wrong shape; `field` names the place");
                }
                if secured || path.starts_with("/api/v1/webhooks/") {
                    match responses.get_mut("503") {
                        Some(RefOr::T(response)) => {
                            response.description = format!("{}; or: {UNAVAILABLE}", response.description);
                            response.headers.insert("Retry-After".into(), retry_after());
                        }
                        Some(RefOr::Ref(_)) => {}
                        None => {
                            let mut response: Response = error_response(UNAVAILABLE);
                            response.headers.insert("Retry-After".into(), retry_after());
                            responses.insert("503".into(), response.into());
                        }
                    }
                }
            }
        }
    }
}

/// A response with an [`ErrorBody`].
fn error_response(description: &str) -> utoipa::openapi::Response {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build()
}

fn retry_after() -> utoipa::openapi::header::Header {
    use utoipa::openapi::header::HeaderBuilder;
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
        .description(Some("Seconds to wait before retrying"))
        .build()
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
        assert_eq!(access_for(&Method::GET, "/api/v1/sensors"), Access::Read);
        assert_eq!(access_for(&Method::GET, "/api/v1/sensors/p.s/state"), Access::Admin);
        assert_eq!(access_for(&Method::HEAD, "/api/v1/sensors/p.s/state"), Access::Admin);
    }

    /// Every authenticated route documents 401, 403 and 503 (with `Retry-After`); every route
    /// with a query or a body documents 400; page sizes are 1 to 1000, as refused.
    #[test]
    fn openapi_documents_what_every_route_can_answer() {
        let json = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut secured = 0;
        for (path, item) in json["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = &operation["responses"];
                let has = |status: &str| responses.get(status).is_some();
                if operation.get("security").is_some() {
                    secured += 1;
                    for status in ["401", "403", "503"] {
                        assert!(has(status), "{method} {path} does not document {status}");
                    }
                    assert!(responses["503"]["headers"].get("Retry-After").is_some(), "{method} {path}");
                }
                let query = operation["parameters"].as_array().is_some_and(|p| p.iter().any(|p| p["in"] == "query"));
                if query || operation.get("requestBody").is_some() {
                    assert!(has("400"), "{method} {path} does not document 400");
                }
                for parameter in operation["parameters"].as_array().into_iter().flatten() {
                    if parameter["name"] == "limit" {
                        assert_eq!(parameter["schema"]["minimum"], 1, "{method} {path}");
                        assert_eq!(parameter["schema"]["maximum"], events::MAX_LIMIT, "{method} {path}");
                    }
                }
            }
        }
        assert!(secured >= 19, "{secured} authenticated operations");
        let rule = &json["components"]["schemas"]["RuleDoc"]["properties"];
        assert_eq!(rule["trigger_params"]["type"], "object", "{}", rule["trigger_params"]);
        assert_eq!(rule["enabled"]["type"], "boolean", "{}", rule["enabled"]);
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
