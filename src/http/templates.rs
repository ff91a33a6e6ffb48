//! `/api/v1/templates`: the template registry, read by everyone, added to by admins (submitted
//! to Meta for review; its status then follows Meta's webhooks and the periodic sync); and
//! `/api/v1/templates/{name}/sends`, one template to many conversations in one request (a
//! campaign's bulk: each send answered on its own, in request order).
//!
//! Each handler calls one use case of [`crate::service::templates`] and renders its answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use super::extract::ApiPath;
use super::json::ApiJson;
use super::views::{rfc3339, MessageView};
use super::AppState;
use crate::service::conversations::{self as conversations, BulkSend};
use crate::service::templates as service;
use crate::store::templates::TemplateRecord;
use crate::templates::NewTemplate;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/templates", get(list).post(create))
        .route("/api/v1/templates/{name}/sends", post(send_many))
}

/// `{"language", "sends": [{"conversation_id", "parameters"?, "idempotency_key"?}]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendsBody {
    language: String,
    sends: Vec<SendBody>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    conversation_id: String,
    #[serde(default)]
    parameters: Vec<String>,
    idempotency_key: Option<String>,
}

/// `POST /api/v1/templates/{name}/sends`: 200 with `{"results": [...]}`, one per send in
/// request order: `{"conversation_id", "message"}` when accepted (as the reply route's 202),
/// else `{"conversation_id", "error": {"code", "message"}}` with the code the reply route would
/// have answered. A malformed request is one error for all (400).
async fn send_many(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<SendsBody>,
) -> ApiResult<Json<SendsAnswer>> {
    let ids: Vec<String> = body
        .sends
        .iter()
        .map(|x| x.conversation_id.clone())
        .collect();
    let sends = body
        .sends
        .into_iter()
        .map(|x| BulkSend {
            conversation_id: x.conversation_id,
            parameters: x.parameters,
            idempotency_key: x.idempotency_key,
        })
        .collect();
    let answers =
        conversations::send_templates(&s.ctx, &caller, &name, &body.language, sends).await?;
    let results = ids
        .into_iter()
        .zip(answers)
        .map(|(conversation_id, answer)| match answer {
            Ok(msg) => SendResult {
                conversation_id,
                message: Some(MessageView::new(&msg)),
                error: None,
            },
            Err(e) => {
                let e = ApiError::from(e);
                SendResult {
                    conversation_id,
                    message: None,
                    error: Some(SendError {
                        code: e.code.as_str(),
                        message: e.message,
                        assignee: e.assignee,
                    }),
                }
            }
        })
        .collect();
    Ok(Json(SendsAnswer { results }))
}

/// The bulk route's answer, serialised straight from the views: a campaign's answer holds up to
/// 1,000 messages, and building a `serde_json::Value` tree of them first was a large part of
/// the route's cost.
#[derive(Serialize)]
struct SendsAnswer {
    results: Vec<SendResult>,
}

/// One send's answer: `message` when accepted, `error` otherwise (never both).
#[derive(Serialize)]
struct SendResult {
    conversation_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<MessageView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<SendError>,
}

#[derive(Serialize)]
struct SendError {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    assignee: Option<String>,
}

/// A creation. Every key is optional here so an empty body reaches the permission check (403
/// for non-admins) before the checks of its content (400 naming the key).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: Option<String>,
    language: Option<String>,
    category: Option<String>,
    components: Option<Value>,
}

fn view(t: &TemplateRecord) -> Value {
    let components: Value = serde_json::from_str(&t.components_json).unwrap_or(json!([]));
    let history: Vec<Value> = t
        .history
        .iter()
        .map(|c| json!({ "at": rfc3339(c.at), "status": c.status, "reason": c.reason }))
        .collect();
    // Meta rates a template once it has been sent for a while; unrated is null.
    let quality = (!t.quality.is_empty()).then(|| t.quality.clone());
    json!({
        "id": t.id,
        "name": t.name,
        "language": t.language,
        "category": t.category,
        "status": t.status,
        "quality": quality,
        "components": components,
        "history": history,
        "updated_at": rfc3339(t.updated_at),
    })
}

async fn list(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Value>> {
    let templates: Vec<Value> = service::list(&s.ctx, &caller)?.iter().map(view).collect();
    Ok(Json(json!({ "templates": templates })))
}

async fn create(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<CreateBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let t = NewTemplate {
        name: body.name.unwrap_or_default(),
        language: body.language.unwrap_or_default(),
        category: body.category.unwrap_or_default(),
        components: body.components.unwrap_or(Value::Null),
    };
    let created = service::create(&s.ctx, &s.people, &caller, t).await?;
    Ok((StatusCode::CREATED, Json(view(&created))))
}
