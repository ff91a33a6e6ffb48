//! `/api/v1/conversations`: list, start (with a template), read, claim, release, reply (text,
//! quote, interactive, template), react, mark read, note, transfer, resolve.
//!
//! Each handler parses the request, calls one use case of [`crate::service::conversations`]
//! (which checks what the caller may see and do) and renders the answer. This module only
//! translates.

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
use super::views::{ConversationView, ListView, MessageView};
use super::AppState;
use crate::domain::ConversationStatus;
use crate::service::conversations::{
    self as service, ListFilter, ReplyRequest, StartRequest, TemplateRequest, TransferTo,
};

pub use crate::service::conversations::{LIST_SCAN_BUDGET, MAX_LIST};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/conversations", get(list).post(start))
        .route("/api/v1/conversations/{id}", get(show))
        .route("/api/v1/conversations/{id}/claim", post(claim))
        .route("/api/v1/conversations/{id}/release", post(release))
        .route("/api/v1/conversations/{id}/resolve", post(resolve))
        .route("/api/v1/conversations/{id}/transfer", post(transfer))
        .route("/api/v1/conversations/{id}/handback", post(hand_back))
        .route("/api/v1/conversations/{id}/messages", post(reply))
        .route("/api/v1/conversations/{id}/notes", post(note))
        .route(
            "/api/v1/conversations/{id}/messages/{message_id}/reaction",
            post(react),
        )
        .route("/api/v1/conversations/{id}/read", post(mark_read))
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
/// filters (an empty value is no filter), a page at a time; see [`service::list`] for paging,
/// `limit` and `next_after`.
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
    let filter = ListFilter {
        status,
        team: nonempty(p.team),
        assignee: nonempty(p.assignee),
        customer: nonempty(p.customer),
        number: nonempty(p.number),
    };
    let page = service::list(&s.ctx.store, &caller, filter, p.limit, nonempty(p.after)).await?;
    Ok(Json(ListView::new(&page.conversations, page.next_after)))
}

#[derive(Deserialize)]
struct StartBody {
    /// The business number's `phone_number_id`.
    number: Option<String>,
    /// A phone (international format) or a user id (BSUID).
    customer: Option<String>,
    template: Option<TemplateBody>,
    idempotency_key: Option<String>,
}

/// The started conversation and the template message queued in it.
#[derive(serde::Serialize)]
struct StartedView {
    #[serde(flatten)]
    conversation: ConversationView,
    message: MessageView,
}

/// `POST /api/v1/conversations`: 201 with the conversation (owned by the caller) and its
/// `message`, the template queued for Meta; the same `idempotency_key` again answers the same.
async fn start(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<StartBody>,
) -> ApiResult<impl IntoResponse> {
    let req = StartRequest {
        number: body.number,
        customer: body.customer,
        template: body.template.map(TemplateBody::into_request),
        idempotency_key: body.idempotency_key,
    };
    let (conv, msg) = service::start(&s.ctx, &caller, req).await?;
    let view = StartedView {
        conversation: ConversationView::new(&conv, None),
        message: MessageView::new(&msg),
    };
    Ok((StatusCode::CREATED, Json(view)))
}

async fn show(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<impl IntoResponse> {
    let (conv, messages) = service::show(&s.ctx.store, &caller, &id).await?;
    Ok(Json(ConversationView::new(&conv, Some(&messages))))
}

async fn claim(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ConversationView>> {
    let conv = service::claim(&s.ctx, &caller, &id).await?;
    Ok(Json(ConversationView::new(&conv, None)))
}

async fn release(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ConversationView>> {
    let conv = service::release(&s.ctx, &caller, &id).await?;
    Ok(Json(ConversationView::new(&conv, None)))
}

async fn resolve(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ConversationView>> {
    let conv = service::resolve(&s.ctx, &caller, &id).await?;
    Ok(Json(ConversationView::new(&conv, None)))
}

/// `POST /api/v1/conversations/{id}/handback`: back to the bot (see `service::hand_back`).
async fn hand_back(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ConversationView>> {
    let conv = service::hand_back(&s.ctx, &caller, &id).await?;
    Ok(Json(ConversationView::new(&conv, None)))
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
    let to = match (body.team, body.agent) {
        (Some(team), None) => TransferTo::Team(team),
        (None, Some(agent)) => TransferTo::Agent(agent),
        _ => {
            return Err(ApiError::invalid(
                "give exactly one of \"team\" or \"agent\"",
            ))
        }
    };
    let conv = service::transfer(&s.ctx, &s.people, &caller, &id, to, body.note).await?;
    Ok(Json(ConversationView::new(&conv, None)))
}

#[derive(Deserialize)]
struct ReplyBody {
    text: Option<String>,
    /// Our id of the message to quote.
    reply_to: Option<String>,
    /// Meta's interactive object (buttons or a list).
    interactive: Option<serde_json::Value>,
    /// An approved template, allowed outside the 24-hour window.
    template: Option<TemplateBody>,
    idempotency_key: Option<String>,
    media: Option<MediaBody>,
}

/// `{"template": {"name", "language", "parameters"?}}`: the body's `{{1}}`… in order.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateBody {
    name: String,
    language: String,
    #[serde(default)]
    parameters: Vec<String>,
}

impl TemplateBody {
    fn into_request(self) -> TemplateRequest {
        TemplateRequest {
            name: self.name,
            language: self.language,
            parameters: self.parameters,
        }
    }
}

/// `{"media": {"id", "caption"?}}`: an upload (`POST /api/v1/media`) sent as a message.
#[derive(Deserialize)]
struct MediaBody {
    id: String,
    caption: Option<String>,
}

async fn reply(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReplyBody>,
) -> ApiResult<impl IntoResponse> {
    let msg = match body.media {
        Some(_) if body.text.is_some() || body.interactive.is_some() || body.template.is_some() => {
            return Err(ApiError::invalid(
                "give \"text\", \"interactive\" or \"media\" (with its \"caption\"), not two",
            ))
        }
        Some(m) => {
            service::reply_media(
                &s.ctx,
                &s.media,
                &caller,
                &id,
                &m.id,
                m.caption,
                body.idempotency_key,
            )
            .await?
        }
        None => {
            let req = ReplyRequest {
                text: body.text,
                reply_to: body.reply_to,
                interactive: body.interactive,
                template: body.template.map(TemplateBody::into_request),
                idempotency_key: body.idempotency_key,
            };
            service::reply(&s.ctx, &caller, &id, req).await?
        }
    };
    Ok((StatusCode::ACCEPTED, Json(MessageView::new(&msg))))
}

#[derive(Deserialize)]
struct ReactionBody {
    emoji: Option<String>,
}

/// `POST …/messages/{message_id}/reaction`: 202 with the message reacted to (its `reactions`
/// as they now stand); the reaction reaches Meta through the outbox.
async fn react(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath((id, message_id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<ReactionBody>,
) -> ApiResult<impl IntoResponse> {
    let msg = service::react(&s.ctx, &caller, &id, &message_id, body.emoji).await?;
    Ok((StatusCode::ACCEPTED, Json(MessageView::new(&msg))))
}

/// `POST …/read`: 202 `{"message_id"}` naming the customer's message marked read, or 204 when
/// the customer has sent nothing to mark.
async fn mark_read(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<axum::response::Response> {
    Ok(match service::mark_read(&s.ctx, &caller, &id).await? {
        Some(message_id) => (
            StatusCode::ACCEPTED,
            Json(json!({ "message_id": message_id })),
        )
            .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
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
    let msg = service::note(&s.ctx, &caller, &id, body.text).await?;
    Ok((StatusCode::CREATED, Json(MessageView::new(&msg))))
}
