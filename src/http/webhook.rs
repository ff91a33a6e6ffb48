//! `/webhooks/whatsapp`: Meta's verification handshake and notifications.
//!
//! Order of checks on POST: size (413 above 3 MiB, declared or read), the body read in full
//! (408 when it falls behind `server.min_body_rate`, see `super::server`), admission (503 +
//! Retry-After when `server.max_inflight_webhooks` requests are already being processed —
//! nothing is stored), signature over the raw bytes (401), JSON (400). Then every message,
//! status and change is made durable ([`crate::ingest`]) and only then is 200 sent, so Meta
//! never gets a 200 for something not stored and redelivers anything else.
//!
//! Admission is taken only once the body has arrived: a slot is held for work the broker does,
//! never for a peer that is slow to send (anyone can open connections and trickle bodies, and
//! those are bounded by the connection caps and read timeouts instead).

use std::time::Instant;

use axum::body::{to_bytes, Body};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::error::ApiError;
use super::AppState;
use crate::log_limit::LogLimit;
use crate::metrics as m;
use crate::whatsapp::{signature, webhook};

/// Largest accepted notification body.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route("/webhooks/whatsapp", get(verify).post(receive))
}

#[derive(Deserialize)]
struct VerifyParams {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Meta's handshake. Anything but the right token, a query string that cannot be read (a
/// repeated key) included, is the contract's 403, with the API's JSON error.
async fn verify(
    State(s): State<AppState>,
    query: Result<Query<VerifyParams>, QueryRejection>,
) -> Response {
    let Ok(Query(p)) = query else {
        return ApiError::forbidden("verification failed").into_response();
    };
    let ok = p.mode.as_deref() == Some("subscribe")
        && p.token.as_deref() == Some(s.ctx.config.whatsapp.verify_token.as_str());
    match (ok, p.challenge) {
        (true, Some(c)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            c,
        )
            .into_response(),
        _ => ApiError::forbidden("verification failed").into_response(),
    }
}

async fn receive(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let (outcome, resp) = handle(&s, &headers, body).await;
    metrics::counter!(m::WEBHOOK_REQUESTS, "outcome" => outcome).increment(1);
    metrics::histogram!(m::WEBHOOK_DURATION).record(started.elapsed().as_secs_f64());
    resp
}

async fn handle(s: &AppState, headers: &HeaderMap, body: Body) -> (&'static str, Response) {
    if !s.accepting() {
        return (
            "overloaded",
            ApiError::overloaded("shutting_down", "broker is shutting down").into_response(),
        );
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "body exceeds 3 MiB",
        )
        .into_response()
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return ("too_large", too_large());
    }
    let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) if super::server::is_too_slow(&e) => {
            let e = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "request body arrived too slowly",
            );
            return ("timeout", e.into_response());
        }
        Err(_) => return ("too_large", too_large()),
    };
    let Ok(_permit) = s.webhook_permits.clone().try_acquire_owned() else {
        return (
            "overloaded",
            ApiError::overloaded("overloaded", "too many webhooks in flight; retry")
                .into_response(),
        );
    };
    let _in_flight = super::InFlight::enter(m::WEBHOOKS_IN_FLIGHT);
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature::verify(s.ctx.config.whatsapp.app_secret.as_bytes(), &bytes, sig) {
        let e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "X-Hub-Signature-256 missing or wrong",
        );
        return ("invalid_signature", e.into_response());
    }
    let notification = match webhook::parse(&bytes) {
        Ok(n) => n,
        Err(e) => {
            let e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string());
            return ("invalid_json", e.into_response());
        }
    };
    if notification.skipped > 0 {
        tracing::warn!(
            skipped = notification.skipped,
            "webhook items without id or sender"
        );
    }
    match crate::ingest::ingest(&s.ctx, notification).await {
        Ok(report) => {
            tracing::debug!(?report, "webhook stored");
            ("ok", (StatusCode::OK, "EVENT_RECEIVED").into_response())
        }
        Err(e) => {
            // A storage failure is logged where it becomes a response (`http::error`).
            static LOG: LogLimit = LogLimit::new(5);
            if !matches!(e, crate::error::Error::Store(_)) {
                if let Some(held_back) = LOG.check() {
                    tracing::warn!(error = %e, held_back, "webhook not stored; Meta will redeliver");
                }
            }
            ("error", ApiError::from(e).into_response())
        }
    }
}
