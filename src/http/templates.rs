//! `/api/v1/templates`: the template registry, read by everyone, added to by admins (submitted
//! to Meta for review; its status then follows Meta's webhooks and the periodic sync).
//!
//! Each handler calls one use case of [`crate::service::templates`] and renders its answer.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Auth;
use super::error::ApiResult;
use super::json::ApiJson;
use super::views::rfc3339;
use super::AppState;
use crate::service::templates as service;
use crate::store::templates::TemplateRecord;
use crate::templates::NewTemplate;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/templates", get(list).post(create))
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
