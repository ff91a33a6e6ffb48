//! The admin API for people: `GET/POST /api/v1/agents`, `PATCH /api/v1/agents/{id}`,
//! `POST /api/v1/agents/{id}/token`, `GET/POST /api/v1/teams`, `PATCH /api/v1/teams/{id}` and
//! `GET /api/v1/audit` (admins only; 403 `forbidden` for everyone else), and
//! `GET /api/v1/teams/{id}/agents` (a team's members with presence and load, for its supervisors
//! and admins: the console's supervisor view).
//!
//! Each handler calls one use case of [`crate::service::people`] and renders its answer. A new
//! or rotated token appears in that one answer (`token`) and nowhere else, ever. Bodies refuse
//! keys they do not know (400 `invalid_request`), so a misspelt `max_concurent` never leaves a
//! field unchanged in silence.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Auth;
use super::error::ApiResult;
use super::extract::{ApiPath, ApiQuery};
use super::json::ApiJson;
use super::AppState;
use crate::domain::people::TeamProfile;
use crate::domain::{Role, TeamSettings};
use crate::service::people::{self as service, AgentPatch, AgentState, NewAgent, TeamState};
use crate::store::people::{AuditRecord, StoredTeam};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/agents", get(list_agents).post(create_agent))
        .route("/api/v1/agents/{id}", patch(update_agent))
        .route("/api/v1/agents/{id}/token", post(rotate_token))
        .route("/api/v1/teams", get(list_teams).post(create_team))
        .route("/api/v1/teams/{id}", patch(update_team))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/teams/{id}/agents", get(team_agents))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

fn agent_view(a: &AgentState) -> Value {
    let mut v = service::agent_json(&a.agent);
    v["created_at"] = json!(rfc3339(a.agent.created_at));
    v["updated_at"] = json!(rfc3339(a.agent.updated_at));
    if let Some(s) = &a.snapshot {
        v["status"] = json!(s.presence.as_str());
        v["open_conversations"] = json!(s.owned);
    }
    v
}

fn team_view(t: &StoredTeam, members: Option<&[String]>) -> Value {
    let mut v = json!({
        "id": t.profile.id,
        "name": t.profile.name,
        "created_at": rfc3339(t.created_at),
        "updated_at": rfc3339(t.updated_at),
    });
    if let Some(m) = members {
        v["members"] = json!(m);
    }
    v
}

fn audit_view(r: &AuditRecord) -> Value {
    let doc = |s: &Option<String>| {
        s.as_deref()
            .map(|t| serde_json::from_str::<Value>(t).unwrap_or(Value::Null))
            .unwrap_or(Value::Null)
    };
    json!({
        "seq": r.seq,
        "at": rfc3339(r.at),
        "actor": r.actor,
        "action": r.action,
        "target": r.target,
        "before": doc(&r.before),
        "after": doc(&r.after),
    })
}

async fn list_agents(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Value>> {
    let agents = s.people.agents(&caller)?;
    Ok(Json(
        json!({ "agents": agents.iter().map(agent_view).collect::<Vec<_>>() }),
    ))
}

async fn team_agents(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let agents = s.people.team_agents(&caller, &id)?;
    Ok(Json(json!({
        "team": id,
        "agents": agents.iter().map(agent_view).collect::<Vec<_>>(),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAgentBody {
    id: String,
    name: Option<String>,
    #[serde(default)]
    teams: Vec<String>,
    role: Option<Role>,
    max_concurrent: Option<u32>,
}

/// 201 with the agent and its `token` (shown this once).
async fn create_agent(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<CreateAgentBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let new = NewAgent {
        id: body.id,
        name: body.name,
        teams: body.teams,
        role: body.role,
        max_concurrent: body.max_concurrent,
    };
    let (agent, token) = s.people.create_agent(&caller, new).await?;
    let mut v = service::agent_json(&agent);
    v["token"] = json!(token);
    v["created_at"] = json!(rfc3339(agent.created_at));
    Ok((StatusCode::CREATED, Json(v)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchAgentBody {
    name: Option<String>,
    teams: Option<Vec<String>>,
    role: Option<Role>,
    max_concurrent: Option<u32>,
    disabled: Option<bool>,
}

async fn update_agent(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchAgentBody>,
) -> ApiResult<Json<Value>> {
    let patch = AgentPatch {
        name: body.name,
        teams: body.teams,
        role: body.role,
        max_concurrent: body.max_concurrent,
        disabled: body.disabled,
    };
    let agent = s.people.update_agent(&caller, &id, patch).await?;
    let mut v = service::agent_json(&agent);
    v["updated_at"] = json!(rfc3339(agent.updated_at));
    Ok(Json(v))
}

/// 200 with the agent's new `token` (shown this once); the old one is refused from now on.
async fn rotate_token(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Value>> {
    let (agent, token) = s.people.rotate_token(&caller, &id).await?;
    Ok(Json(json!({ "id": agent.profile.id, "token": token })))
}

async fn list_teams(State(s): State<AppState>, Auth(caller): Auth) -> ApiResult<Json<Value>> {
    let teams: Vec<TeamState> = s.people.teams(&caller)?;
    let teams: Vec<Value> = teams
        .iter()
        .map(|t| team_view(&t.team, Some(&t.members)))
        .collect();
    Ok(Json(json!({ "teams": teams })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateTeamBody {
    id: String,
    #[serde(default)]
    name: String,
    /// The same keys as `[[teams]]` and `PUT /api/v1/teams/{id}/settings`.
    settings: Option<TeamSettings>,
}

async fn create_team(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<CreateTeamBody>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let profile = TeamProfile {
        id: body.id,
        name: body.name,
    };
    let team = s
        .people
        .create_team(&caller, profile, body.settings)
        .await?;
    Ok((StatusCode::CREATED, Json(team_view(&team, Some(&[])))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchTeamBody {
    name: Option<String>,
}

async fn update_team(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<PatchTeamBody>,
) -> ApiResult<Json<Value>> {
    let team = s.people.update_team(&caller, &id, body.name).await?;
    Ok(Json(team_view(&team, None)))
}

#[derive(Deserialize)]
struct AuditParams {
    limit: Option<usize>,
    cursor: Option<u64>,
}

/// Newest first; `next_cursor` (pass it as `cursor`) is set while older entries may remain.
async fn audit(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(p): ApiQuery<AuditParams>,
) -> ApiResult<Json<Value>> {
    let page = s.people.audit_log(&caller, p.cursor, p.limit).await?;
    Ok(Json(json!({
        "entries": page.entries.iter().map(audit_view).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}
