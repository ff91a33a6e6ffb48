//! `/api/v1/teams/{id}/queue`: a team's waiting conversations, for supervisors and admins.

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use ractor::rpc::CallResult;
use serde::Deserialize;
use serde_json::json;

use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use super::views::ConversationView;
use super::AppState;
use crate::actors::{team::QueueSnapshot, TeamMsg, CALL_TIMEOUT};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/teams/{id}/queue", get(queue))
}

#[derive(Deserialize)]
struct QueueParams {
    limit: Option<usize>,
}

async fn queue(
    State(s): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    Query(p): Query<QueueParams>,
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
    let now = chrono::Utc::now().timestamp_millis();
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
