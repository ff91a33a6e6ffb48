//! `/api/v1/teams/{id}/queue`: a team's waiting conversations, for supervisors and admins;
//! `/api/v1/teams/{id}/next`: an agent of the team takes the oldest waiting conversation;
//! `/api/v1/teams/{id}/settings`: the team's assignment, hours, fallbacks, reassignment and SLA,
//! read by its supervisors and admins, replaced by admins (checked like the config file, durable,
//! in force at once).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ractor::rpc::CallResult;
use serde::Deserialize;
use serde_json::json;

use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery};
use super::json::ApiJson;
use super::views::ConversationView;
use super::AppState;
use crate::actors::{team::QueueSnapshot, TeamMsg, CALL_TIMEOUT};
use crate::domain::{Role, TeamSettings};

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
    let policies = s.ctx.policies();
    let settings = policies.settings.get(&id).ok_or_else(ApiError::not_found)?;
    if !caller.manages(&id) {
        return Err(ApiError::forbidden(
            "supervisors of the team and admins only",
        ));
    }
    Ok(Json(settings.clone()))
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
    if caller.role != Role::Admin {
        return Err(ApiError::forbidden("admins only"));
    }
    if let Some(key) = body.unknown.keys().next() {
        return Err(ApiError::invalid(format!("unknown key {key:?}")));
    }
    let p = crate::admin::replace_team(&s.ctx, &id, body.settings).await?;
    let settings = p.settings.get(&id).cloned().unwrap_or_default();
    Ok(Json(settings))
}

/// Most queue entries one `next` call skips (conversations claimed directly meanwhile).
const NEXT_ATTEMPTS: usize = 64;

/// Pops the oldest waiting conversation and claims it for the caller; 204 when none waits.
/// The pop is one team-actor message and the claim one conversation-actor message, so two
/// callers never get the same conversation; if the caller is at capacity the conversation goes
/// back to its place in the queue.
async fn next(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let team = s.ctx.team(&id).ok_or_else(ApiError::not_found)?;
    if !caller.in_team(&id) && !caller.manages(&id) {
        return Err(ApiError::forbidden(
            "only members of the team take from its queue",
        ));
    }
    for _ in 0..NEXT_ATTEMPTS {
        let popped = match team
            .call(|reply| TeamMsg::Pop { reply }, Some(CALL_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(p)) => p,
            _ => return Err(crate::error::Error::Unavailable.into()),
        };
        let Some((cid, at, priority)) = popped else {
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        let claimed = s
            .ctx
            .ask(&cid, None, |reply| {
                crate::actors::ConversationMsg::ClaimQueued {
                    caller: caller.clone(),
                    reply,
                }
            })
            .await;
        match claimed {
            Ok(conv) => return Ok(Json(ConversationView::new(&conv, None)).into_response()),
            Err(crate::error::Error::Domain(crate::domain::DomainError::CapacityReached)) => {
                let _ = team.cast(TeamMsg::Enqueue {
                    conversation: cid,
                    at,
                    priority,
                    avoid: None,
                });
                return Err(
                    crate::error::Error::from(crate::domain::DomainError::CapacityReached).into(),
                );
            }
            // Claimed directly (or gone) since it was queued: take the next one.
            Err(crate::error::Error::Domain(_)) => continue,
            Err(e) => {
                let _ = team.cast(TeamMsg::Enqueue {
                    conversation: cid,
                    at,
                    priority,
                    avoid: None,
                });
                return Err(e.into());
            }
        }
    }
    Ok(StatusCode::NO_CONTENT.into_response())
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
    let team = s.ctx.team(&id).ok_or_else(ApiError::not_found)?;
    if !caller.manages(&id) {
        return Err(ApiError::forbidden(
            "supervisors of the team and admins only",
        ));
    }
    let limit = p.limit.unwrap_or(100).min(1000);
    let snap: QueueSnapshot = match team
        .call(
            |reply| TeamMsg::Snapshot { limit, reply },
            Some(CALL_TIMEOUT),
        )
        .await
    {
        Ok(CallResult::Success(q)) => q,
        _ => return Err(crate::error::Error::Unavailable.into()),
    };
    let now = s.ctx.now();
    let mut conversations = Vec::with_capacity(snap.conversations.len());
    for cid in &snap.conversations {
        if let Some(c) = s.ctx.store.get_conversation(cid).await? {
            conversations.push(ConversationView::new(&c, None));
        }
    }
    Ok(Json(json!({
        "team": id,
        "depth": snap.depth,
        "oldest_wait_seconds": snap.oldest_queued_at.map(|t| ((now - t).max(0)) / 1000).unwrap_or(0),
        "conversations": conversations,
    })))
}
