//! `/healthz` and `/metrics` for operators.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
}

/// The router is only served once start-up finished, so answering at all means ready.
async fn healthz() -> &'static str {
    "ok"
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    crate::actors::team::publish_gauges(&s.ctx).await;
    crate::metrics::publish_store_memory(&s.ctx.store).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}
