//! The HTTP transport: Meta's webhook, the agent API, SSE, /metrics and /healthz.
//!
//! One router per resource; handlers only authenticate, parse, call one use case of
//! [`crate::service`] (which checks permissions and talks to the actors and the store) and render
//! its answer; typed errors become responses in [`error`], the one place a code gets its status.
//! Nothing in the core depends on this module.

pub mod agents;
pub mod auth;
pub mod conversations;
pub mod error;
pub mod events;
pub mod extract;
pub mod json;
pub mod lane;
pub mod listeners;
pub mod media;
pub mod ops;
pub mod parse_errors;
pub mod people;
pub mod reports;
pub mod routing;
pub mod server;
pub mod teams;
pub mod templates;
pub mod throttle;
pub mod views;
pub mod webhook;

pub use listeners::{ListenError, Listeners};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use dashmap::DashMap;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::actors::Ctx;
use crate::error::Code;
use crate::service::people::People;

/// What every handler shares, behind one `Arc`: axum clones the state for every request, and one
/// reference count is cheaper than one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

pub struct Shared {
    pub ctx: Arc<Ctx>,
    /// The agents and teams in force: every request authenticates against it.
    pub people: Arc<People>,
    /// Media storage: uploads, downloads, what an agent may send.
    pub media: Arc<crate::media::Media>,
    /// Admission control for webhooks: one permit per request being processed.
    pub webhook_permits: Arc<Semaphore>,
    pub stream_permits: Arc<Semaphore>,
    /// Admission control for the agent API (`server.max_inflight_api`).
    pub api_permits: Arc<Semaphore>,
    pub metrics: PrometheusHandle,
    pub accepting: Arc<AtomicBool>,
    /// Per agent: requests in flight (`server.max_inflight_per_agent`) and open event streams
    /// (`server.max_streams_per_agent`), so one agent's token cannot take every slot. One entry
    /// per agent that has made a request.
    agent_requests: DashMap<String, Arc<Semaphore>>,
    agent_streams: DashMap<String, Arc<Semaphore>>,
    pub auth_throttle: throttle::AuthThrottle,
}

impl AppState {
    pub fn new(
        ctx: Arc<Ctx>,
        metrics: PrometheusHandle,
        people: Arc<People>,
        media: Arc<crate::media::Media>,
    ) -> Self {
        let auth_failures_per_minute = ctx.config.server.auth_failures_per_minute;
        Self(Arc::new(Shared {
            webhook_permits: Arc::new(Semaphore::new(ctx.config.server.max_inflight_webhooks)),
            stream_permits: Arc::new(Semaphore::new(ctx.config.server.max_event_streams)),
            api_permits: Arc::new(Semaphore::new(ctx.config.server.max_inflight_api)),
            people,
            media,
            ctx,
            metrics,
            accepting: Arc::new(AtomicBool::new(true)),
            agent_requests: DashMap::new(),
            agent_streams: DashMap::new(),
            auth_throttle: throttle::AuthThrottle::new(auth_failures_per_minute),
        }))
    }

    pub fn accepting(&self) -> bool {
        self.accepting.load(Ordering::Acquire)
    }

    /// One of `agent`'s request slots, or 503 `overloaded` when all are taken.
    fn agent_request_slot(&self, agent: &str) -> Result<OwnedSemaphorePermit, error::ApiError> {
        let cap = self.ctx.config.server.max_inflight_per_agent;
        take_slot(&self.agent_requests, agent, cap, "requests")
    }

    /// One of `agent`'s event-stream slots, or 503 `overloaded` when all are taken.
    pub fn agent_stream_slot(&self, agent: &str) -> Result<OwnedSemaphorePermit, error::ApiError> {
        let cap = self.ctx.config.server.max_streams_per_agent;
        take_slot(&self.agent_streams, agent, cap, "streams")
    }
}

fn take_slot(
    slots: &DashMap<String, Arc<Semaphore>>,
    agent: &str,
    cap: usize,
    kind: &'static str,
) -> Result<OwnedSemaphorePermit, error::ApiError> {
    let sem = match slots.get(agent) {
        Some(s) => s.clone(),
        None => slots
            .entry(agent.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(cap)))
            .clone(),
    };
    sem.try_acquire_owned().map_err(|_| {
        metrics::counter!(crate::metrics::AGENT_REFUSED, "kind" => kind).increment(1);
        error::ApiError::overloaded(
            Code::Overloaded,
            &format!("too many {kind} of this agent at once; retry"),
        )
    })
}

/// The whole HTTP surface; testable with `oneshot` or served by [`crate::app`].
pub fn app(state: AppState) -> Router {
    // Event streams and the operators' routes have bounds of their own (or need none).
    let api = Router::new()
        .merge(conversations::router())
        .merge(agents::router())
        .merge(teams::router())
        .merge(templates::router())
        .merge(routing::router())
        .merge(people::router())
        .merge(media::router())
        .merge(reports::router())
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), admit));
    Router::new()
        .merge(api)
        .merge(events::router())
        .merge(ops::router())
        // The agent console's page and assets: static, no token (the page asks for one).
        .merge(crate::console::router())
        .route_layer(axum::middleware::from_fn(timed))
        // After `timed`: the webhook, the hottest route, records its own latency histogram
        // (`switchboard_webhook_duration_seconds`) and is not timed twice.
        .merge(webhook::router())
        // Every error is the contract's JSON, also for a path or method nothing serves.
        .fallback(error::no_route)
        .method_not_allowed_fallback(error::method_not_allowed)
        // The webhook reads its body itself with its own 3 MiB limit and JSON error.
        .layer(DefaultBodyLimit::max(webhook::MAX_BODY_BYTES + 1))
        .with_state(state)
}

/// Admission control for the agent API: at most `server.max_inflight_api` requests are
/// processed at once, and of those at most `server.max_inflight_per_agent` of one agent; beyond
/// either the caller gets 503 `overloaded` with Retry-After, before anything is read or changed.
/// The caller is authenticated here (401, or 429 for an address that failed too often), and the
/// handler's [`auth::Auth`] takes the result from the request.
async fn admit(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let Ok(_permit) = s.api_permits.clone().try_acquire_owned() else {
        metrics::counter!(crate::metrics::API_REFUSED).increment(1);
        return error::ApiError::overloaded(
            Code::Overloaded,
            "too many API requests in flight; retry",
        )
        .into_response();
    };
    let caller = match auth::authenticate(&s, req.headers(), req.extensions()) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let _agent_permit = match s.agent_request_slot(&caller.id) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(auth::Authenticated(caller));
    let _in_flight = InFlight::enter(crate::metrics::API_IN_FLIGHT);
    next.run(req).await
}

/// Counts a request in a gauge for as long as it is processed (also when its future is dropped).
pub(crate) struct InFlight(&'static str);

impl InFlight {
    pub(crate) fn enter(gauge: &'static str) -> Self {
        metrics::gauge!(gauge).increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
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
