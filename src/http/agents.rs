//! `/api/v1/agents`: presence (and a read of one's own load).
//!
//! Each handler calls one use case of [`crate::service::agents`] and renders its answer.

use axum::extract::State;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use super::json::ApiJson;
use super::AppState;
use crate::domain::Presence;
use crate::service::agents as service;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/agents/me/presence", put(set_presence))
        .route("/api/v1/agents/me", get(me))
}

#[derive(Deserialize)]
struct PresenceBody {
    status: Option<String>,
}

async fn set_presence(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<PresenceBody>,
) -> ApiResult<Json<serde_json::Value>> {
    let presence = body
        .status
        .as_deref()
        .and_then(Presence::parse)
        .ok_or_else(|| ApiError::invalid("\"status\" must be online, away or offline"))?;
    let p = service::set_presence(&s.ctx, &caller, presence).await?;
    Ok(Json(json!({ "agent": caller.id, "status": p.as_str() })))
}

async fn me(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<serde_json::Value>> {
    let a = service::me(&s.ctx, &caller).await?;
    Ok(Json(json!({
        "id": a.id,
        "role": caller.role,
        "teams": caller.teams,
        "status": a.presence.as_str(),
        "open_conversations": a.owned,
        "max_concurrent": a.max_concurrent,
    })))
}
