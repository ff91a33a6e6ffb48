//! `/healthz` and `/metrics` for operators.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
}

/// The router is only served once start-up finished, so answering means ready, unless storage
/// is failing (nothing can be acknowledged until the supervisor has reopened the store) or
/// stalled (a group commit has run longer than `storage.stall_after_ms`: everything waits).
async fn healthz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    let stall_after = Duration::from_millis(s.ctx.config.storage.stall_after_ms);
    if s.ctx.store.is_failing() {
        (StatusCode::SERVICE_UNAVAILABLE, "storage failing")
    } else if s.ctx.store.commit_running_for() > Some(stall_after) {
        (StatusCode::SERVICE_UNAVAILABLE, "storage stalled")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    crate::actors::team::publish_gauges(&s.ctx);
    if let Some(limit) = s.ctx.messaging_limit.get() {
        limit.publish(s.ctx.now());
    }
    s.ctx.store.publish_memory().await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}
