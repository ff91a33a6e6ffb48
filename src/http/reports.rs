//! `GET /api/v1/reports/teams|agents|numbers?from=&to=[&bucket=hour|day][&format=csv]`.
//!
//! Checks the caller may read reports first (403 for agents, whatever the query), then parses
//! the window (RFC 3339 bounds; a missing, unparsable or empty window is 400
//! `invalid_request`), calls [`crate::service::reports::report`] and renders its rows as JSON
//! (`{"teams": [...]}`) or, with `format=csv`, as `text/csv` with the same fields flattened
//! (`first_response_seconds.p50` becomes the column `first_response_seconds_p50`).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::auth::Auth;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiPath, ApiQuery};
use super::AppState;
use crate::domain::report::{Bucket, Dimension, ReportRow};
use crate::service::reports::{self as service, ReportQuery, Row};

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/reports/{dimension}", get(report))
}

#[derive(Deserialize)]
struct Params {
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
    format: Option<String>,
}

fn bound(name: &str, v: Option<&str>) -> Result<i64, ApiError> {
    let v = v.ok_or_else(|| ApiError::invalid(format!("`{name}` is required (RFC 3339)")))?;
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|_| ApiError::invalid(format!("`{name}` is not an RFC 3339 time: {v:?}")))
}

async fn report(
    State(s): State<AppState>,
    Auth(caller): Auth,
    ApiPath(dimension): ApiPath<String>,
    query: Result<ApiQuery<Params>, ApiError>,
) -> ApiResult<Response> {
    let (dimension, plural) = match dimension.as_str() {
        "teams" => (Dimension::Teams, "teams"),
        "agents" => (Dimension::Agents, "agents"),
        "numbers" => (Dimension::Numbers, "numbers"),
        _ => return Err(ApiError::not_found()),
    };
    // Access before the query's checks: an agent learns nothing from a report's 400.
    service::may_read(&caller)?;
    let ApiQuery(p) = query?;
    let from = bound("from", p.from.as_deref())?;
    let to = bound("to", p.to.as_deref())?;
    let bucket = match p.bucket.as_deref() {
        None => None,
        Some(b) => Some(
            Bucket::parse(b)
                .ok_or_else(|| ApiError::invalid("`bucket` must be `hour` or `day`"))?,
        ),
    };
    let csv = match p.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::invalid("`format` must be `json` or `csv`")),
    };
    let q = ReportQuery {
        dimension,
        from,
        to,
        bucket,
    };
    let people = s.people.clone();
    let home_team = Arc::new(move |agent: &str| people.home_team(agent));
    let rows = service::report(&s.ctx, &caller, q, home_team).await?;
    let objects: Vec<Map<String, Value>> = rows.iter().map(|r| row_json(dimension, r)).collect();
    if csv {
        let body = to_csv(dimension, &objects);
        return Ok(([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response());
    }
    let mut out = Map::new();
    out.insert(
        plural.to_string(),
        Value::Array(objects.into_iter().map(Value::Object).collect()),
    );
    Ok(Json(Value::Object(out)).into_response())
}

fn row_json(dimension: Dimension, r: &Row) -> Map<String, Value> {
    let mut m = match serde_json::to_value(&r.figures) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    m.insert(dimension.as_str().to_string(), Value::String(r.key.clone()));
    if let Some(b) = &r.bucket {
        m.insert("bucket".into(), Value::String(b.clone()));
    }
    m.insert("backlog".into(), r.backlog.into());
    m.insert("unassigned".into(), r.unassigned.into());
    m.insert("oldest_wait_seconds".into(), r.oldest_wait_seconds.into());
    m
}

/// The columns, in a fixed order: the key, the bucket, then the figures as the JSON has them.
fn columns(dimension: Dimension) -> Vec<String> {
    let mut cols = vec![dimension.as_str().to_string(), "bucket".to_string()];
    let sample = row_json(
        dimension,
        &Row {
            key: String::new(),
            bucket: None,
            figures: ReportRow::default(),
            backlog: None,
            unassigned: None,
            oldest_wait_seconds: None,
        },
    );
    for (k, v) in &sample {
        if k == dimension.as_str() {
            continue;
        }
        match v {
            Value::Object(inner) => cols.extend(inner.keys().map(|i| format!("{k}_{i}"))),
            _ => cols.push(k.clone()),
        }
    }
    cols
}

fn to_csv(dimension: Dimension, rows: &[Map<String, Value>]) -> String {
    let cols = columns(dimension);
    let mut out = cols.join(",");
    out.push('\n');
    for r in rows {
        let cells: Vec<String> = cols
            .iter()
            .map(|c| {
                let v = r.get(c).or_else(|| {
                    let (outer, inner) = c.rsplit_once('_')?;
                    r.get(outer)?.get(inner)
                });
                cell(v)
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// A CSV cell: empty for null or missing, quoted when it holds a comma, quote or line break.
fn cell(v: Option<&Value>) -> String {
    let text = match v {
        None | Some(Value::Null) => return String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}
