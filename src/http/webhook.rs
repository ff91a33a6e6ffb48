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
use crate::error::Code;
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
    let answer = handle(&s, &headers, body).await;
    let outcome = outcome(answer.as_ref().map(|_| ()).map_err(|e| e.code));
    let resp = answer.unwrap_or_else(IntoResponse::into_response);
    metrics::counter!(m::WEBHOOK_REQUESTS, "outcome" => outcome).increment(1);
    metrics::histogram!(m::WEBHOOK_DURATION).record(started.elapsed().as_secs_f64());
    resp
}

/// The `switchboard_webhook_requests_total{outcome}` label of an answer: `ok`, the error's code
/// where the label has always been that code (`invalid_signature`, `invalid_json`,
/// `overloaded`), and `error` for whatever ingest refused. Three labels predate the codes and are
/// kept so dashboards and alerts keep working: `too_large` (code `payload_too_large`), `timeout`
/// (`request_timeout`) and `overloaded` also for `shutting_down`.
fn outcome(answer: Result<(), Code>) -> &'static str {
    match answer {
        Ok(()) => "ok",
        Err(c @ (Code::InvalidSignature | Code::InvalidJson | Code::Overloaded)) => c.as_str(),
        Err(Code::ShuttingDown) => Code::Overloaded.as_str(),
        Err(Code::PayloadTooLarge) => "too_large",
        Err(Code::RequestTimeout) => "timeout",
        Err(_) => "error",
    }
}

async fn handle(s: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    if !s.accepting() {
        return Err(ApiError::overloaded(
            Code::ShuttingDown,
            "broker is shutting down",
        ));
    }
    let too_large = || ApiError::new(Code::PayloadTooLarge, "body exceeds 3 MiB");
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(e) if super::server::is_too_slow(&e) => {
            return Err(ApiError::new(
                Code::RequestTimeout,
                "request body arrived too slowly",
            ));
        }
        Err(_) => return Err(too_large()),
    };
    let Ok(_permit) = s.webhook_permits.clone().try_acquire_owned() else {
        return Err(ApiError::overloaded(
            Code::Overloaded,
            "too many webhooks in flight; retry",
        ));
    };
    let _in_flight = super::InFlight::enter(m::WEBHOOKS_IN_FLIGHT);
    let sig = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature::verify(s.ctx.config.whatsapp.app_secret.as_bytes(), &bytes, sig) {
        return Err(ApiError::new(
            Code::InvalidSignature,
            "X-Hub-Signature-256 missing or wrong",
        ));
    }
    let notification =
        webhook::parse(&bytes).map_err(|e| ApiError::new(Code::InvalidJson, e.to_string()))?;
    if notification.skipped > 0 {
        tracing::warn!(
            skipped = notification.skipped,
            "webhook items without id or sender"
        );
    }
    match crate::ingest::ingest(&s.ctx, notification).await {
        Ok(report) => {
            tracing::debug!(?report, "webhook stored");
            Ok((StatusCode::OK, "EVENT_RECEIVED").into_response())
        }
        Err(e) => {
            // A storage failure is logged where it becomes a response (`http::error`).
            static LOG: LogLimit = LogLimit::new(5);
            if !matches!(e, crate::error::Error::Store(_)) {
                if let Some(held_back) = LOG.check() {
                    tracing::warn!(error = %e, held_back, "webhook not stored; Meta will redeliver");
                }
            }
            Err(ApiError::from(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The labels dashboards know, whatever code the answer carries.
    #[test]
    fn outcome_labels_are_unchanged() {
        for (answer, label) in [
            (Ok(()), "ok"),
            (Err(Code::InvalidSignature), "invalid_signature"),
            (Err(Code::InvalidJson), "invalid_json"),
            (Err(Code::Overloaded), "overloaded"),
            (Err(Code::ShuttingDown), "overloaded"),
            (Err(Code::PayloadTooLarge), "too_large"),
            (Err(Code::RequestTimeout), "timeout"),
            (Err(Code::StorageError), "error"),
            (Err(Code::Unavailable), "error"),
        ] {
            assert_eq!(outcome(answer), label, "{answer:?}");
        }
    }
}
