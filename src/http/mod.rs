//! The HTTP transport: Meta's webhook, the agent API, SSE, /metrics and /healthz.
//!
//! One router per resource; handlers only authenticate, validate and translate requests into
//! actor messages or store reads, and map typed errors to responses in [`error`]. Nothing in the
//! core depends on this module.

pub mod agents;
pub mod auth;
pub mod conversations;
pub mod error;
pub mod events;
pub mod json;
pub mod lane;
pub mod ops;
pub mod routing;
pub mod teams;
pub mod views;
pub mod webhook;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;

use crate::actors::Ctx;
use crate::domain::Caller;

#[derive(Clone)]
pub struct AppState {
    pub ctx: Arc<Ctx>,
    pub tokens: Arc<HashMap<String, Caller>>,
    /// Admission control for webhooks: one permit per request being processed.
    pub webhook_permits: Arc<Semaphore>,
    pub stream_permits: Arc<Semaphore>,
    pub metrics: PrometheusHandle,
    pub accepting: Arc<AtomicBool>,
}

impl AppState {
    pub fn new(ctx: Arc<Ctx>, metrics: PrometheusHandle) -> Self {
        let tokens = ctx
            .config
            .agents
            .iter()
            .map(|a| (a.token.clone(), Caller::from_config(a)))
            .collect();
        Self {
            webhook_permits: Arc::new(Semaphore::new(ctx.config.server.max_inflight_webhooks)),
            stream_permits: Arc::new(Semaphore::new(ctx.config.server.max_event_streams)),
            tokens: Arc::new(tokens),
            ctx,
            metrics,
            accepting: Arc::new(AtomicBool::new(true)),
        }
    }

    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }
}

/// The whole HTTP surface; testable with `oneshot` or served by [`crate::app`].
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(conversations::router())
        .merge(agents::router())
        .merge(teams::router())
        .merge(routing::router())
        .merge(events::router())
        .merge(ops::router())
        .route_layer(axum::middleware::from_fn(timed))
        // After `timed`: the webhook, the hottest route, records its own latency histogram
        // (`switchboard_webhook_duration_seconds`) and is not timed twice.
        .merge(webhook::router())
        // The webhook reads its body itself with its own 3 MiB limit and JSON error.
        .layer(DefaultBodyLimit::max(webhook::MAX_BODY_BYTES + 1))
        .with_state(state)
}

/// Records how long each routed request took to answer (for SSE: until the stream opened), by
/// route template and method — both from bounded sets, never from the request's own path.
async fn timed(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        _ => "other",
    };
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    metrics::histogram!(
        crate::metrics::HTTP_DURATION,
        "route" => route,
        "method" => method
    )
    .record(started.elapsed().as_secs_f64());
    resp
}
