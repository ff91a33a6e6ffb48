//! `/api/v1/teams/{id}/queue`: a team's waiting conversations, for supervisors and admins;
//! `/api/v1/teams/{id}/next`: an agent of the team takes the oldest waiting conversation;
//! `/api/v1/teams/{id}/settings`: the team's assignment, hours, fallbacks, reassignment and SLA,
//! read by its supervisors and admins, replaced by admins (checked like the config file, durable,
//! in force at once).
//!
//! Each handler calls one use case of [`crate::service::teams`] and renders its answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::auth::Auth;
use super::error::ApiResult;
use super::extract::{ApiPath, ApiQuery};
use super::json::ApiJson;
use super::views::ConversationView;
use super::AppState;
use crate::domain::TeamSettings;
use crate::service::teams as service;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/teams/{id}/queue", get(queue))
        .route("/api/v1/teams/{id}/next", post(next))
        .route(
            "/api/v1/teams/{id}/settings",
            get(get_settings).put(put_settings),
        )
}

async fn get_settings(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TeamSettings>> {
    Ok(Json(service::settings(&s.ctx, &caller, &id)?))
}

/// A `PUT …/settings` body: the settings, and any key they do not know, so a misspelt key is
/// refused instead of replacing the setting it meant with its default.
#[derive(Deserialize)]
struct SettingsBody {
    #[serde(flatten)]
    settings: TeamSettings,
    #[serde(flatten)]
    unknown: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

async fn put_settings(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<SettingsBody>,
) -> ApiResult<Json<TeamSettings>> {
    let unknown = body.unknown.keys().next().map(String::as_str);
    let settings =
        service::replace_settings(&s.ctx, &s.people, &caller, &id, body.settings, unknown).await?;
    Ok(Json(settings))
}

/// Takes the oldest waiting conversation for the caller; 204 when none waits.
async fn next(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    Ok(match service::take_next(&s.ctx, &caller, &id).await? {
        Some(conv) => Json(ConversationView::new(&conv, None)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

#[derive(Deserialize)]
struct QueueParams {
    limit: Option<usize>,
}

async fn queue(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
    ApiQuery(p): ApiQuery<QueueParams>,
) -> ApiResult<Json<serde_json::Value>> {
    let q = service::queue(&s.ctx, &caller, &id, p.limit).await?;
    let conversations: Vec<ConversationView> = q
        .conversations
        .iter()
        .map(|c| ConversationView::new(c, None))
        .collect();
    Ok(Json(json!({
        "team": id,
        "depth": q.depth,
        "oldest_wait_seconds": q.oldest_wait_seconds,
        "conversations": conversations,
    })))
}
