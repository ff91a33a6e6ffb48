//! `/api/v1/conversations`: list, read, claim, release, reply, note, transfer, resolve.
//!
//! Reads go to the store (every change is durable before it is visible); commands become messages
//! to the conversation's actor, which applies the rules. This module only translates.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery};
use super::json::ApiJson;
use super::views::{ConversationView, MessageView};
use super::AppState;
use crate::actors::ConversationMsg;
use crate::config::Role;
use crate::domain::{Caller, Conversation, ConversationStatus, TransferTarget};
use crate::error::Code;
use crate::store::ListQuery;

/// Most conversations one list answer holds; page on with `after`.
pub const MAX_LIST: usize = 10_000;

/// Most index entries or conversation records one list request reads (its work bound, whatever
/// the filters): a request that reaches it answers with what matched so far and a `next_after`.
pub const LIST_SCAN_BUDGET: usize = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/conversations", get(list))
        .route("/api/v1/conversations/{id}", get(show))
        .route("/api/v1/conversations/{id}/claim", post(claim))
        .route("/api/v1/conversations/{id}/release", post(release))
        .route("/api/v1/conversations/{id}/resolve", post(resolve))
        .route("/api/v1/conversations/{id}/transfer", post(transfer))
        .route("/api/v1/conversations/{id}/messages", post(reply))
        .route("/api/v1/conversations/{id}/notes", post(note))
}

#[derive(Deserialize)]
struct ListParams {
    status: Option<String>,
    team: Option<String>,
    assignee: Option<String>,
    customer: Option<String>,
    number: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// `GET /api/v1/conversations`: what the caller may see among the conversations matching the
/// filters, in id order, at most `limit` ([`MAX_LIST`] by default and at most; 0 is a 400),
/// after the id `after`.
///
/// Each request reads at most [`LIST_SCAN_BUDGET`] index entries or records (merged from the
/// index ranges the filters and the caller's visibility need, see [`plan`]). Whenever it stops
/// before the end, on a full page or on that budget, `next_after` names where the next request
/// continues (pass it as `after`); it is `null` only when nothing is left. A page may therefore
/// hold fewer than `limit` conversations, even none, with a non-null `next_after`: follow it
/// until `null` to see everything, each conversation once.
async fn list(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<impl IntoResponse> {
    let status = match p.status.as_deref().filter(|v| !v.is_empty()) {
        Some(v) => Some(
            ConversationStatus::parse(v)
                .ok_or_else(|| ApiError::invalid(format!("unknown status {v:?}")))?,
        ),
        None => None,
    };
    let nonempty = |o: Option<String>| o.filter(|v| !v.is_empty());
    let (team, assignee, customer, number, after) = (
        nonempty(p.team),
        nonempty(p.assignee),
        nonempty(p.customer),
        nonempty(p.number),
        nonempty(p.after),
    );
    // A page of none could only answer with a `next_after` that goes nowhere: 0 is refused
    // rather than silently raised to 1; above the most a page holds it is lowered to that.
    let limit = match p.limit {
        Some(0) => return Err(ApiError::invalid("limit must be at least 1")),
        Some(n) => n.min(MAX_LIST),
        None => MAX_LIST,
    };
    let queries = plan(
        &caller,
        status,
        team.as_deref(),
        assignee.as_deref(),
        customer.as_deref(),
        number.as_deref(),
    );
    let keep = move |c: &Conversation| {
        c.visible_to(&caller)
            && status.is_none_or(|st| c.status == st)
            && team.as_deref().is_none_or(|t| c.team == t)
            && assignee
                .as_deref()
                .is_none_or(|a| c.assignee.as_deref() == Some(a))
            && customer.as_deref().is_none_or(|x| c.customer == x)
            && number.as_deref().is_none_or(|x| c.number == x)
    };
    let page = s
        .ctx
        .store
        .list_page(queries, after, limit, LIST_SCAN_BUDGET, keep)
        .await?;
    let views: Vec<ConversationView> = page
        .conversations
        .iter()
        .map(|c| ConversationView::new(c, None))
        .collect();
    Ok(Json(
        json!({ "conversations": views, "next_after": page.next_after }),
    ))
}

/// Chooses the index ranges that cover everything the filters and the caller's visibility allow
/// (the store merges them in id order).
fn plan(
    caller: &Caller,
    status: Option<ConversationStatus>,
    team: Option<&str>,
    assignee: Option<&str>,
    customer: Option<&str>,
    number: Option<&str>,
) -> Vec<ListQuery> {
    if let (Some(c), Some(n)) = (customer, number) {
        // Exactly one conversation can match: read it through its derived id.
        return vec![ListQuery::Id(crate::domain::conversation_id(n, c))];
    }
    if let Some(a) = assignee {
        return vec![ListQuery::Assignee(a.to_string())];
    }
    if caller.role == Role::Agent {
        // An agent sees queued and bot conversations of its teams plus its own.
        let mut qs = vec![ListQuery::Assignee(caller.id.clone())];
        for t in caller
            .teams
            .iter()
            .filter(|t| team.is_none_or(|x| x == t.as_str()))
        {
            for st in [ConversationStatus::Queued, ConversationStatus::Bot] {
                if status.is_none_or(|s| s == st) {
                    qs.push(ListQuery::Status {
                        status: st,
                        team: Some(t.clone()),
                    });
                }
            }
        }
        return qs;
    }
    if let Some(st) = status {
        return vec![ListQuery::Status {
            status: st,
            team: team.map(str::to_string),
        }];
    }
    if let Some(t) = team {
        return ConversationStatus::ALL
            .into_iter()
            .map(|st| ListQuery::Status {
                status: st,
                team: Some(t.to_string()),
            })
            .collect();
    }
    vec![ListQuery::All]
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let conv = s
        .ctx
        .store
        .get_conversation(&id)
        .await?
        .filter(|c| c.visible_to(&caller))
        .ok_or_else(ApiError::not_found)?;
    let messages = s.ctx.store.messages(&id).await?;
    Ok(Json(ConversationView::new(&conv, Some(&messages))))
}

async fn command<F>(s: &AppState, id: &str, make: F) -> ApiResult<Json<ConversationView>>
where
    F: Fn(crate::actors::Reply<Conversation>) -> ConversationMsg,
{
    let ctx = Arc::clone(&s.ctx);
    let conv = ctx.ask(id, None, make).await?;
    Ok(Json(ConversationView::new(&conv, None)))
}

async fn claim(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ConversationView>> {
    let r = command(&s, &id, |reply| ConversationMsg::Claim {
        caller: caller.clone(),
        reply,
    })
    .await;
    // Other outcomes are counted by the conversation; an unknown one never reaches an actor.
    if r.as_ref().is_err_and(|e| e.code == Code::NotFound) {
        metrics::counter!(crate::metrics::CLAIMS, "outcome" => Code::NotFound).increment(1);
    }
    r
}

async fn release(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ConversationView>> {
    command(&s, &id, |reply| ConversationMsg::Release {
        caller: caller.clone(),
        reply,
    })
    .await
}

async fn resolve(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ConversationView>> {
    command(&s, &id, |reply| ConversationMsg::Resolve {
        caller: caller.clone(),
        reply,
    })
    .await
}

#[derive(Deserialize)]
struct TransferBody {
    team: Option<String>,
    agent: Option<String>,
    note: Option<String>,
}

async fn transfer(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<TransferBody>,
) -> ApiResult<Json<ConversationView>> {
    let target = match (body.team, body.agent) {
        (Some(team), None) => TransferTarget::Team(team),
        (None, Some(agent)) => {
            let a = s.ctx.config.agent(&agent).ok_or_else(ApiError::not_found)?;
            TransferTarget::Agent {
                id: agent,
                teams: a.teams.clone(),
            }
        }
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of \"team\" or \"agent\"",
            ))
        }
    };
    command(&s, &id, |reply| ConversationMsg::Transfer {
        caller: caller.clone(),
        target: target.clone(),
        note: body.note.clone(),
        reply,
    })
    .await
}

#[derive(Deserialize)]
struct ReplyBody {
    text: Option<String>,
    idempotency_key: Option<String>,
}

/// Longest reply text WhatsApp accepts.
const MAX_TEXT: usize = 4096;

async fn reply(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReplyBody>,
) -> ApiResult<impl IntoResponse> {
    let text = body
        .text
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("\"text\" is required"))?;
    if text.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid("\"text\" is longer than 4096 characters"));
    }
    if body
        .idempotency_key
        .as_deref()
        .is_some_and(|k| k.is_empty() || k.len() > 256)
    {
        return Err(ApiError::invalid(
            "\"idempotency_key\" must be 1 to 256 bytes",
        ));
    }
    let msg = s
        .ctx
        .ask(&id, None, |reply| ConversationMsg::Reply {
            caller: caller.clone(),
            text: text.clone(),
            idempotency_key: body.idempotency_key.clone(),
            reply,
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(MessageView::new(&msg))))
}

#[derive(Deserialize)]
struct NoteBody {
    text: Option<String>,
}

async fn note(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<NoteBody>,
) -> ApiResult<impl IntoResponse> {
    let text = body
        .text
        .filter(|t| !t.trim().is_empty())
        .ok_or_else(|| ApiError::invalid("\"text\" is required"))?;
    let msg = s
        .ctx
        .ask(&id, None, |reply| ConversationMsg::Note {
            caller: caller.clone(),
            text: text.clone(),
            reply,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(MessageView::new(&msg))))
}
