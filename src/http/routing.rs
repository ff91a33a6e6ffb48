//! `/api/v1/routing/rules`: read (supervisors, admins) and replace (admins) the routing rules.
//!
//! A replacement is checked exactly like the config file's `[[routing.rules]]` (400
//! `invalid_request` naming the rule and key), made durable, and in force for the next
//! conversation routed, without a restart ([`crate::service::routing`]).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Auth;
use super::error::ApiResult;
use super::json::ApiJson;
use super::AppState;
use crate::domain::routing::RuleConfig;
use crate::service::routing as service;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/routing/rules", get(get_rules).put(put_rules))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesBody {
    rules: Vec<RuleConfig>,
}

async fn get_rules(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Value>> {
    let rules = service::rules(&s.ctx.policies(), &caller)?;
    Ok(Json(json!({ "rules": rules })))
}

async fn put_rules(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<RulesBody>,
) -> ApiResult<Json<Value>> {
    let rules = service::replace_rules(&s.ctx, &s.people, &caller, body.rules).await?;
    Ok(Json(json!({ "rules": rules })))
}
