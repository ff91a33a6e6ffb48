//! `/healthz` and `/metrics` for operators.

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
/// is failing: then nothing can be acknowledged, and a load balancer should look elsewhere until
/// the supervisor has reopened the store.
async fn healthz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.ctx.store.is_failing() {
        (StatusCode::SERVICE_UNAVAILABLE, "storage failing")
    } else {
        (StatusCode::OK, "ok")
    }
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    crate::actors::team::publish_gauges(&s.ctx).await;
    crate::metrics::publish_store_memory(&s.ctx.store).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}
