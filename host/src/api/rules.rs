//! `/api/v1/rules`: rules as JSON documents (the YAML of spec section 4, as JSON), checked and
//! compiled when saved; a change applies to the next payload.

use std::sync::Arc;

use attune_rules::{ActionContext, CompiledRule, DryRun, EventDocument, RuleSpec};

use crate::rules::RuleChangeError;
use crate::store::RulePage;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ApiState;
use super::error::{ApiError, ApiJson, ErrorBody, ErrorCode, from_value, join_field};
use super::events::{ApiQuery, checked_limit};

/// Whether `text` is a ref, `pack.name`: letters, digits and `_` on each side of one `.`, as
/// `attune_rules` checks rule, trigger and action refs (the OpenAPI document's pattern
/// `^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$`).
fn is_ref(text: &str) -> bool {
    let part = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    text.split_once('.').is_some_and(|(pack, name)| part(pack) && part(name))
}

/// A rule document (OpenAPI view of `attune_rules::RuleSpec`, which is what is parsed). Unknown
/// keys are rejected. `enabled`, `trigger_params` and `action.parameters` may be left out but are
/// never `null` (they are a boolean and objects, as the answers always carry them);
/// `description` and `conditions` may be `null`, the same as left out.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"ref": "user.on_webhook", "trigger": "core.webhook",
    "conditions": {"field": "payload.status", "operator": "greater_or_equal", "value": 500},
    "action": {"ref": "core.echo", "parameters": {"message": "status {{ event.payload.status }}"}}}))]
pub struct RuleDoc {
    /// `pack.name`.
    #[serde(rename = "ref")]
    #[schema(pattern = r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")]
    pub rule_ref: String,
    /// Trigger ref whose events the rule sees.
    #[schema(pattern = r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")]
    pub trigger: String,
    /// Default true.
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
    pub description: Option<String>,
    /// Parameters of the trigger instance, checked against the trigger's `param_schema`
    /// (timers: `{interval, unit}`, `{expression, timezone}` or `{fire_at}`). Default `{}`.
    #[schema(value_type = Option<Object>, nullable = false)]
    pub trigger_params: Option<Map<String, Value>>,
    /// `{all: [..]}`, `{any: [..]}`, `{not: ..}` or `{field, operator, value}`; omitted = always.
    #[schema(value_type = Option<Object>)]
    pub conditions: Option<Value>,
    pub action: ActionDoc,
}

/// The `action` of a rule.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionDoc {
    #[serde(rename = "ref")]
    #[schema(pattern = r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")]
    pub action_ref: String,
    /// Strings may hold `{{ .. }}` templates. Default `{}`.
    #[schema(value_type = Option<Object>, nullable = false)]
    pub parameters: Option<Map<String, Value>>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleList {
    /// Ordered by ref.
    #[schema(value_type = Vec<RuleDoc>)]
    pub rules: Vec<Value>,
    /// Cursor of the next page (pass it as `after`); absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Filters of `GET /rules`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RuleQuery {
    /// Only rules on this trigger.
    #[param(nullable = false)]
    pub trigger: Option<String>,
    /// Only rules of this pack.
    #[param(nullable = false)]
    pub pack: Option<String>,
    /// Only enabled (`true`) or disabled (`false`) rules.
    #[param(nullable = false)]
    pub enabled: Option<bool>,
    /// Page size, 1 to 1000 (default 100).
    #[param(nullable = false, minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Cursor: the `next` of the previous page (a rule ref).
    #[param(nullable = false, pattern = r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")]
    pub after: Option<String>,
}

/// An `after` cursor: the ref of the last rule of the previous page. Anything that is not a
/// rule ref is 400 `bad_query` naming `after`.
fn checked_after(after: Option<String>) -> Result<Option<String>, ApiError> {
    match after {
        Some(text) if !is_ref(&text) => Err(ApiError::new(
            ErrorCode::BadQuery,
            format!("`{text}` is not a paging cursor: pass the `next` of the previous page"),
        )
        .with_field("after")),
        after => Ok(after),
    }
}

/// `POST /rules/test`: a rule (not saved) and what to evaluate it against: a `payload` (a JSON
/// object), or the stored event `event_id` (its payload, id, source and time, exactly as live
/// matching saw it); one of the two, not both.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTestIn {
    pub rule: Value,
    pub payload: Option<Value>,
    pub event_id: Option<String>,
}

/// In the OpenAPI document: `{rule, payload}` or `{rule, event_id}` (`oneOf`, so not both).
impl utoipa::PartialSchema for RuleTestIn {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Ref, Type};
        let variant = |with: &str, schema: ObjectBuilder| {
            ObjectBuilder::new()
                .property("rule", Ref::from_schema_name("RuleDoc"))
                .required("rule")
                .property(with, schema)
                .required(with)
                .additional_properties(Some(AdditionalProperties::<utoipa::openapi::Schema>::FreeForm(false)))
        };
        let payload = ObjectBuilder::new().schema_type(Type::Object).description(Some("The payload to evaluate."));
        let event_id = ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A stored event to evaluate, as live matching saw it."));
        OneOfBuilder::new()
            .description(Some("A rule (not saved) and a `payload` or a stored event's `event_id`, not both."))
            .item(variant("payload", payload))
            .item(variant("event_id", event_id))
            .into()
    }
}

impl utoipa::ToSchema for RuleTestIn {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use utoipa::PartialSchema;
        schemas.push(("RuleDoc".into(), RuleDoc::schema()));
        <RuleDoc as utoipa::ToSchema>::schemas(schemas);
    }
}

/// The body of `PUT /rules/{ref}` in the OpenAPI document: a [`RuleDoc`] whose `ref` may be left
/// out (the path names the rule); when given, it must equal the path's.
#[derive(Debug)]
pub struct RuleReplaceIn;

impl utoipa::PartialSchema for RuleReplaceIn {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{RefOr, schema::Schema};
        let mut schema = RuleDoc::schema();
        if let RefOr::T(Schema::Object(object)) = &mut schema {
            object.required.retain(|field| field != "ref");
            object.description = Some("A rule; `ref` may be left out, and when given must equal the path's.".into());
        }
        schema
    }
}

impl utoipa::ToSchema for RuleReplaceIn {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        <RuleDoc as utoipa::ToSchema>::schemas(schemas);
    }
}

/// A dry run: whether the rule matches, why (condition by condition, as `attune-host rule
/// test` explains it), and the action parameters it would enforce.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DryRunOut {
    pub matched: bool,
    /// The conditions explained as `attune-host rule test` prints them.
    pub text: String,
    pub action_ref: String,
    /// `{rule_ref, trigger, enabled, matched, conditions}`; each condition with `held` and a reason.
    #[schema(value_type = Object)]
    pub explanation: Value,
    /// Rendered action parameters (rendered whether or not the rule matched).
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    /// Why the parameters could not be rendered: `{code, field, message}`.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_error: Option<Value>,
}

impl DryRunOut {
    pub(super) fn new(dry_run: DryRun) -> Result<Self, ApiError> {
        let internal = |e: serde_json::Error| ApiError::internal(e.to_string());
        Ok(DryRunOut {
            matched: dry_run.explanation.matched,
            text: attune_rules::explain_text(&dry_run.explanation, None),
            action_ref: dry_run.action_ref,
            explanation: serde_json::to_value(&dry_run.explanation).map_err(internal)?,
            parameters: dry_run.parameters,
            action_error: dry_run.action_error.map(serde_json::to_value).transpose().map_err(internal)?,
        })
    }
}

/// Parses a rule document; errors are 422 naming the field under `prefix`.
fn parse_rule(value: Value, prefix: &str) -> Result<RuleSpec, ApiError> {
    if !value.is_object() {
        return Err(ApiError::new(ErrorCode::InvalidBody, "a rule is a JSON object").with_field(prefix));
    }
    from_value(value, prefix)
}

/// A refused rule change as an API error, its field under `prefix` (`rule` in a dry run).
fn refused(e: RuleChangeError, prefix: &str) -> ApiError {
    let error = ApiError::from(e);
    match error.body.field.clone() {
        Some(field) => error.with_field(join_field(prefix, &field)),
        None => error,
    }
}

fn rule_json(rule: &CompiledRule) -> Result<Value, ApiError> {
    serde_json::to_value(rule.spec()).map_err(|e| ApiError::internal(e.to_string()))
}

fn no_rule(rule_ref: &str) -> ApiError {
    ApiError::not_found(format!("no rule `{rule_ref}`"))
}

/// List rules by ref, paged and filtered.
#[utoipa::path(get, path = "/api/v1/rules", tag = "rules", security(("bearer" = [])), params(RuleQuery),
    responses((status = 200, body = RuleList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)))]
pub async fn list(State(state): State<ApiState>, ApiQuery(q): ApiQuery<RuleQuery>) -> Result<Json<RuleList>, ApiError> {
    let limit = checked_limit(q.limit)?;
    let after = checked_after(q.after)?;
    let page = RulePage { trigger_ref: q.trigger, pack_ref: q.pack, enabled: q.enabled, after, limit };
    let page = state.app.rules.list(&page).await?;
    let next = (page.len() == limit as usize).then(|| page.last().map(|r| r.rule_ref.clone())).flatten();
    Ok(Json(RuleList { rules: page.into_iter().map(|r| r.spec).collect(), next }))
}

/// Create a rule. It applies to the next payload.
#[utoipa::path(post, path = "/api/v1/rules", tag = "rules", security(("bearer" = [])), request_body = RuleDoc,
    responses((status = 201, body = RuleDoc), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, description = "Unknown field or a rule that does not compile; `field` says where", body = ErrorBody)))]
pub async fn create(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let rule = state.app.rules.create(parse_rule(body, "")?).await?;
    Ok((StatusCode::CREATED, Json(rule_json(&rule)?)))
}

/// Get a rule.
#[utoipa::path(get, path = "/api/v1/rules/{ref}", tag = "rules", security(("bearer" = [])),
    params(("ref" = String, Path, description = "Rule ref, `pack.name`", pattern = r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$", example = "user.on_webhook")),
    responses((status = 200, body = RuleDoc), (status = 404, body = ErrorBody)))]
pub async fn get_one(State(state): State<ApiState>, Path(rule_ref): Path<String>) -> Result<Json<Value>, ApiError> {
    state.app.rules.get(&rule_ref).await?.map(|r| Json(r.spec)).ok_or_else(|| no_rule(&rule_ref))
}

/// Replace a rule. The body's `ref` may be omitted; if given it must equal the path's.
#[utoipa::path(put, path = "/api/v1/rules/{ref}", tag = "rules", security(("bearer" = [])), request_body = RuleReplaceIn,
    params(("ref" = String, Path, description = "Rule ref, `pack.name`", pattern = r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$", example = "user.on_webhook")),
    responses((status = 200, body = RuleDoc), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn replace(
    State(state): State<ApiState>,
    Path(rule_ref): Path<String>,
    ApiJson(mut body): ApiJson,
) -> Result<Json<Value>, ApiError> {
    if let Some(object) = body.as_object_mut() {
        match object.get("ref") {
            None => {
                object.insert("ref".into(), json!(rule_ref));
            }
            Some(given) if given != &json!(rule_ref) => {
                return Err(ApiError::new(ErrorCode::RefMismatch, format!("the body's ref is not `{rule_ref}`"))
                    .with_field("ref"));
            }
            Some(_) => {}
        }
    }
    let rule = state.app.rules.replace(parse_rule(body, "")?).await?;
    Ok(Json(rule_json(&rule)?))
}

/// Delete a rule. It stops applying at once.
#[utoipa::path(delete, path = "/api/v1/rules/{ref}", tag = "rules", security(("bearer" = [])),
    params(("ref" = String, Path, description = "Rule ref, `pack.name`", pattern = r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$", example = "user.on_webhook")),
    responses((status = 204, description = "Deleted"), (status = 404, body = ErrorBody)))]
pub async fn delete(State(state): State<ApiState>, Path(rule_ref): Path<String>) -> Result<StatusCode, ApiError> {
    if state.app.rules.delete(&rule_ref).await? { Ok(StatusCode::NO_CONTENT) } else { Err(no_rule(&rule_ref)) }
}

/// Enable a rule.
#[utoipa::path(post, path = "/api/v1/rules/{ref}/enable", tag = "rules", security(("bearer" = [])),
    params(("ref" = String, Path, description = "Rule ref, `pack.name`", pattern = r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$", example = "user.on_webhook")),
    responses((status = 200, body = RuleDoc), (status = 404, body = ErrorBody)))]
pub async fn enable(State(state): State<ApiState>, Path(rule_ref): Path<String>) -> Result<Json<Value>, ApiError> {
    set_enabled(&state, &rule_ref, true).await
}

/// Disable a rule. Its events stop producing enforcements at once.
#[utoipa::path(post, path = "/api/v1/rules/{ref}/disable", tag = "rules", security(("bearer" = [])),
    params(("ref" = String, Path, description = "Rule ref, `pack.name`", pattern = r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$", example = "user.on_webhook")),
    responses((status = 200, body = RuleDoc), (status = 404, body = ErrorBody)))]
pub async fn disable(State(state): State<ApiState>, Path(rule_ref): Path<String>) -> Result<Json<Value>, ApiError> {
    set_enabled(&state, &rule_ref, false).await
}

async fn set_enabled(state: &ApiState, rule_ref: &str, enabled: bool) -> Result<Json<Value>, ApiError> {
    let rule: Arc<CompiledRule> =
        state.app.rules.set_enabled(rule_ref, enabled).await?.ok_or_else(|| no_rule(rule_ref))?;
    Ok(Json(rule_json(&rule)?))
}

/// Dry-run a rule (not saved) against a payload or a stored event, now, with its pack's config.
/// The rule sees the same documents as live matching builds.
#[utoipa::path(post, path = "/api/v1/rules/test", tag = "rules", security(("bearer" = [])), request_body = RuleTestIn,
    responses((status = 200, body = DryRunOut),
        (status = 404, description = "No stored event `event_id`", body = ErrorBody),
        (status = 422, description = "The rule does not compile (`field` under `rule.`), neither or both of `payload` and `event_id`, or an event of another trigger", body = ErrorBody)))]
pub async fn test(State(state): State<ApiState>, ApiJson(body): ApiJson) -> Result<Json<DryRunOut>, ApiError> {
    let RuleTestIn { rule, payload, event_id } = from_value(body, "")?;
    let rule = state.app.rules.check(parse_rule(rule, "rule")?).map_err(|e| refused(e, "rule"))?.rule;
    let catalog = state.app.catalog.current();
    let ctx = ActionContext::new(catalog.pack_config(rule.pack()));
    let (payload, event) = match (payload, event_id) {
        (Some(payload), None) if !payload.is_object() => {
            return Err(ApiError::new(ErrorCode::PayloadNotObject, "a payload is a JSON object").with_field("payload"));
        }
        (Some(payload), None) => (payload, EventDocument::dry_run(rule.trigger(), ctx.now)),
        (None, Some(id)) => {
            let event =
                state.app.history.event(&id).await?.ok_or_else(|| ApiError::not_found(format!("no event `{id}`")))?;
            if event.trigger_ref != rule.trigger() {
                return Err(ApiError::new(
                    ErrorCode::TriggerMismatch,
                    format!(
                        "event `{id}` is for trigger `{}`; the rule listens on `{}`",
                        event.trigger_ref,
                        rule.trigger()
                    ),
                )
                .with_field("event_id"));
            }
            let document = crate::pipeline::event_document(&event);
            (event.payload, document)
        }
        (None, None) => {
            return Err(ApiError::new(ErrorCode::MissingField, "give `payload` (or `event_id`)").with_field("payload"));
        }
        (Some(_), Some(_)) => {
            return Err(ApiError::new(ErrorCode::ConflictingFields, "give `payload` or `event_id`, not both")
                .with_field("event_id"));
        }
    };
    Ok(Json(DryRunOut::new(rule.dry_run(&rule.input(&payload, &event, ctx.now), &ctx))?))
}
