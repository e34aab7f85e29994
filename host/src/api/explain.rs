//! `GET /api/v1/events/{id}/explain`: every rule on a stored event's trigger, enabled or not,
//! and why it matched or not. Each rule sees the documents live matching built for the event
//! ([`crate::pipeline::event_document`] and [`attune_rules::CompiledRule::input`]), evaluated at
//! the event's own time, so a `timediff_*` condition says what it said when the event arrived.

use attune_rules::ActionContext;
use attune_rules::chrono::DateTime;
use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;

use super::ApiState;
use super::error::{ApiError, ErrorBody};
use super::events::EventOut;
use super::rules::DryRunOut;

/// One rule on the event's trigger and its verdict.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleVerdict {
    pub rule: String,
    pub enabled: bool,
    /// False when the event is for another rule instance (a timer's fire, or a sensor payload
    /// naming its rule): live matching did not offer it to this rule at all.
    pub offered: bool,
    /// Whether live matching makes an enforcement of such an event with the rule as it is now:
    /// offered, enabled and matched.
    pub would_enforce: bool,
    /// The conditions explained against the event, and the action parameters they render.
    pub result: DryRunOut,
}

/// `GET /events/{id}/explain`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ExplainOut {
    pub event: EventOut,
    /// Every rule on the event's trigger this host knows, enabled or not, by ref.
    pub rules: Vec<RuleVerdict>,
}

/// Why each rule on a stored event's trigger matched it or not. The rules are this host's
/// current ones: a rule changed since the event arrived is explained as it is now.
#[utoipa::path(get, path = "/api/v1/events/{id}/explain", tag = "events", security(("bearer" = [])),
    params(("id" = String, Path, description = "Event id")),
    responses((status = 200, body = ExplainOut), (status = 404, description = "No such event", body = ErrorBody)))]
pub async fn explain(State(state): State<ApiState>, Path(id): Path<String>) -> Result<Json<ExplainOut>, ApiError> {
    let event = state.app.history.event(&id).await?.ok_or_else(|| ApiError::not_found(format!("no event `{id}`")))?;
    let pipeline = &state.app.pipeline;
    let mut rules: Vec<_> = pipeline
        .rule_refs()
        .iter()
        .filter_map(|rule_ref| pipeline.rule(rule_ref))
        .filter(|rule| rule.trigger() == event.trigger_ref)
        .collect();
    rules.sort_by(|a, b| a.rule_ref().cmp(b.rule_ref()));
    let catalog = state.app.catalog.current();
    let document = crate::pipeline::event_document(&event);
    let at = DateTime::from_timestamp_micros(event.created_at).unwrap_or_default();
    let mut verdicts = Vec::with_capacity(rules.len());
    for rule in rules {
        let ctx = ActionContext { now: at, ..ActionContext::new(catalog.pack_config(rule.pack())) };
        let result = DryRunOut::new(rule.dry_run(&rule.input(&event.payload, &document, at), &ctx))?;
        let offered = event.rule_ref.as_deref().is_none_or(|only| only == rule.rule_ref());
        verdicts.push(RuleVerdict {
            rule: rule.rule_ref().to_string(),
            enabled: rule.enabled(),
            offered,
            would_enforce: offered && rule.enabled() && result.matched,
            result,
        });
    }
    Ok(Json(ExplainOut { event: event.into(), rules: verdicts }))
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use crate::api::{ApiState, router};
    use crate::app::{App, AppConfig};
    use crate::auth::{Scope, create_token};
    use crate::pack::Pack;

    /// A real API on 127.0.0.1 over SQLite, with the pack `t` (triggers `t.reading`, `t.other`).
    pub(in crate::api) struct Server {
        pub base: String,
        pub admin: String,
        pub client: reqwest::Client,
        _dir: tempfile::TempDir,
    }

    impl Server {
        pub async fn start() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let pack_dir = dir.path().join("t");
            std::fs::create_dir_all(pack_dir.join("triggers")).unwrap();
            std::fs::write(pack_dir.join("pack.yaml"), "ref: t\nversion: 0.1.0\n").unwrap();
            std::fs::write(pack_dir.join("triggers/reading.yaml"), "ref: t.reading\n").unwrap();
            std::fs::write(pack_dir.join("triggers/other.yaml"), "ref: t.other\n").unwrap();
            let pack = Pack::load(&pack_dir).unwrap();
            let url = format!("sqlite://{}", dir.path().join("attune.db").display());
            let app = Arc::new(App::start(&AppConfig::new(url), &[pack]).await.unwrap());
            let (admin, _) = create_token(app.store.as_ref(), "test", Scope::Admin, vec![], None).await.unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, router(ApiState::new(app))).await });
            Server { base, admin, client: reqwest::Client::new(), _dir: dir }
        }

        pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
            self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.admin)
        }

        /// Status and JSON body.
        pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
            let mut request = self.request(method, path);
            if let Some(body) = body {
                request = request.header("content-type", "application/json").body(body.to_string());
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or(Value::Null))
        }
    }

    fn rule(name: &str, trigger: &str, enabled: bool, conditions: Value) -> Value {
        json!({"ref": format!("t.{name}"), "trigger": trigger, "enabled": enabled, "conditions": conditions,
               "action": {"ref": "core.echo", "parameters": {"message": "{{ event.payload.celsius }}"}}})
    }

    /// Every rule on the trigger is explained, enabled or not; a rule of another trigger is not;
    /// what it says would be enforced is what live matching enforced; and a dry run of the same
    /// rule against the stored event explains it the same way.
    #[tokio::test]
    async fn explains_every_rule_on_the_trigger_as_live_matching_saw_it() {
        use reqwest::Method;
        let server = Server::start().await;
        let rules = [
            rule(
                "hot",
                "t.reading",
                true,
                json!({"all": [{"field": "payload.celsius", "operator": "greater_than", "value": 30}]}),
            ),
            rule(
                "freezing",
                "t.reading",
                false,
                json!({"field": "payload.celsius", "operator": "less_than", "value": 0}),
            ),
            rule("cold", "t.reading", true, json!({"field": "payload.celsius", "operator": "less_than", "value": 10})),
            rule("elsewhere", "t.other", true, Value::Null),
        ];
        for rule in &rules {
            let (status, body) = server.call(Method::POST, "/api/v1/rules", Some(rule.clone())).await;
            assert_eq!(status, 201, "{body}");
        }
        let (status, body) = server
            .call(Method::POST, "/api/v1/events", Some(json!({"trigger": "t.reading", "payload": {"celsius": 35}})))
            .await;
        assert_eq!(status, 201, "{body}");
        let id = body["event_ids"][0].as_str().unwrap().to_string();

        let (status, explained) = server.call(Method::GET, &format!("/api/v1/events/{id}/explain"), None).await;
        assert_eq!(status, 200, "{explained}");
        assert_eq!(explained["event"]["id"], json!(id));
        let verdicts = explained["rules"].as_array().unwrap();
        let summary: Vec<(&str, bool, bool, bool)> = verdicts
            .iter()
            .map(|v| {
                let flag = |key: &str| v[key].as_bool().unwrap();
                (
                    v["rule"].as_str().unwrap(),
                    flag("enabled"),
                    v["result"]["matched"].as_bool().unwrap(),
                    flag("would_enforce"),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [("t.cold", true, false, false), ("t.freezing", false, false, false), ("t.hot", true, true, true)]
        );
        let leaf = &verdicts[0]["result"]["explanation"]["conditions"];
        assert_eq!((leaf["held"].clone(), leaf["found"].clone()), (json!(false), json!(35)), "{leaf}");
        assert!(leaf["reason"].as_str().unwrap().contains("35"), "{leaf}");

        let (_, enforcements) = server.call(Method::GET, "/api/v1/enforcements", None).await;
        let enforced: Vec<&str> = enforcements["enforcements"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event_id"] == json!(id))
            .map(|e| e["rule"].as_str().unwrap())
            .collect();
        assert_eq!(enforced, ["t.hot"]);

        let (status, dry_run) =
            server.call(Method::POST, "/api/v1/rules/test", Some(json!({"rule": rules[0], "event_id": id}))).await;
        assert_eq!(status, 200, "{dry_run}");
        assert_eq!(dry_run["explanation"], verdicts[2]["result"]["explanation"]);
    }

    #[tokio::test]
    async fn an_unknown_event_is_404_and_no_token_is_401() {
        let server = Server::start().await;
        let (status, body) = server
            .call(reqwest::Method::GET, "/api/v1/events/01a22c79-7589-70ee-b4fe-8c3becc55007/explain", None)
            .await;
        assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "{body}");
        let response = server.client.get(format!("{}/api/v1/events/x/explain", server.base)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
    }
}
