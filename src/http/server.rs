//! The front door: accepts TCP connections and serves them with HTTP/1.1 under bounds that no
//! peer, authenticated or not, can exhaust.
//!
//! `axum::serve` has no read timeouts: a peer that opens a connection and sends nothing, trickles
//! a header, or declares a body and sends one byte of it, holds the connection (and whatever the
//! request had already taken) for as long as it likes. Here every connection is in one of three
//! phases, and a watchdog closes it when the phase's deadline passes:
//!
//! - *idle* (opened, or its last response written, waiting for a request's first byte):
//!   `server.idle_timeout_ms`;
//! - *head* (a request's first byte arrived, its headers have not all): `server.header_timeout_ms`;
//! - *busy* (a request is being handled or its response written): no deadline from here, but the
//!   request body must keep arriving at `server.min_body_rate` bytes/s once
//!   `server.body_timeout_ms` has passed (`TimedBody`); a body that falls behind ends in an
//!   error, which the handler turns into 408. Event streams stay busy as long as they are open.
//!
//! Connection bounds, checked when a connection is accepted, before anything is read:
//! `server.max_connections` in all (lowered at start-up to fit the process's open-file limit,
//! with room kept for storage), `server.max_connections_per_peer` per remote address. Beyond
//! the total, [`OPS_RESERVE`] more connections are served for `/healthz` and `/metrics` only
//! (one request each), so operators still see a broker at its cap; beyond those, and beyond a
//! peer's cap, a connection is closed at once (`switchboard_connections_refused_total`).
//!
//! The router served is swapped in once the broker has started and taken out when it stops, so
//! the listener outlives a broker that restarts on its storage (`crate::supervisor`): meanwhile
//! `/healthz` answers 503 `starting` and `/metrics` still renders, instead of connections being
//! refused.
//!
//! Only HTTP/1.1 is spoken (Meta's webhooks, the API and SSE all use it); the phases above are
//! per request, which HTTP/2's multiplexing would not allow.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::Router;
use bytes::Bytes;
use dashmap::DashMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::RwLock;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use super::error::ApiError;
use crate::config::ServerConfig;
use crate::error::Code;
use crate::log_limit::LogLimit;
use crate::metrics as m;

/// Connections served beyond `server.max_connections`, for `/healthz` and `/metrics` only.
pub const OPS_RESERVE: usize = 32;
/// File descriptors kept for everything but client connections: RocksDB's open tables
/// (`crate::store::MAX_OPEN_FILES`), its journal and logs, the Graph API client's pool, the
/// outbox, stdio, the listeners.
pub const FD_RESERVE: u64 = crate::store::MAX_OPEN_FILES as u64 + 512;

/// The bounds every connection is served under (see the module doc).
#[derive(Debug, Clone)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_grace: Duration,
    /// Bytes per second a request body must keep up once `body_grace` has passed.
    pub min_body_rate: u64,
    pub max_connections: usize,
    /// 0: no cap per peer (behind a proxy, every connection has the proxy's address).
    pub max_connections_per_peer: usize,
}

impl Limits {
    /// The configured bounds, with `max_connections` lowered to what `open_files` (the
    /// process's limit on open file descriptors) leaves after [`FD_RESERVE`] and the reserve.
    pub fn new(cfg: &ServerConfig, open_files: u64) -> Limits {
        let room = open_files.saturating_sub(FD_RESERVE + OPS_RESERVE as u64);
        let max_connections = cfg.max_connections.min(room.max(1) as usize);
        if max_connections < cfg.max_connections {
            tracing::warn!(
                configured = cfg.max_connections,
                open_files,
                max_connections,
                "server.max_connections lowered to fit the open-file limit"
            );
        }
        Limits {
            header_timeout: Duration::from_millis(cfg.header_timeout_ms),
            idle_timeout: Duration::from_millis(cfg.idle_timeout_ms),
            body_grace: Duration::from_millis(cfg.body_timeout_ms),
            min_body_rate: cfg.min_body_rate,
            max_connections,
            max_connections_per_peer: cfg.max_connections_per_peer,
        }
    }
}

/// What the connections of one or more listeners serve, and their shared bounds.
pub struct Front {
    router: RwLock<Option<Router>>,
    metrics: PrometheusHandle,
    limits: Limits,
    conns: Arc<Semaphore>,
    reserve: Arc<Semaphore>,
    peers: DashMap<IpAddr, usize>,
}

impl Front {
    pub fn new(limits: Limits, metrics: PrometheusHandle) -> Arc<Front> {
        // Present from start-up, so a dashboard shows 0 rather than nothing.
        for reason in ["total_cap", "peer_cap"] {
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => reason).increment(0);
        }
        for phase in ["idle", "head", "body"] {
            metrics::counter!(m::CONNECTIONS_TIMED_OUT, "phase" => phase).increment(0);
        }
        // Registered, not set: brokers sharing a process (tests) share the gauge.
        metrics::gauge!(m::CONNECTIONS).increment(0.0);
        Arc::new(Front {
            router: RwLock::new(None),
            metrics,
            conns: Arc::new(Semaphore::new(limits.max_connections)),
            reserve: Arc::new(Semaphore::new(OPS_RESERVE)),
            limits,
            peers: DashMap::new(),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Serves `router` on every connection from now on (requests already in progress finish
    /// with the router they started with).
    pub fn attach(&self, router: Router) {
        *self.router.write() = Some(router);
    }

    /// Stops serving the broker's routes: `/healthz` answers 503 until [`Front::attach`].
    pub fn detach(&self) {
        *self.router.write() = None;
    }

    /// Admits a new connection from `peer`, or refuses it (None) with the reason counted.
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Admission> {
        let cap = self.limits.max_connections_per_peer;
        {
            let mut n = self.peers.entry(peer).or_insert(0);
            if cap > 0 && *n >= cap {
                drop(n);
                metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "peer_cap").increment(1);
                return None;
            }
            *n += 1;
        }
        let peer_slot = PeerSlot {
            front: self.clone(),
            peer,
        };
        if let Ok(permit) = self.conns.clone().try_acquire_owned() {
            return Some(Admission {
                _permit: permit,
                _peer: peer_slot,
                ops_only: false,
            });
        }
        if let Ok(permit) = self.reserve.clone().try_acquire_owned() {
            return Some(Admission {
                _permit: permit,
                _peer: peer_slot,
                ops_only: true,
            });
        }
        metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "total_cap").increment(1);
        None
    }

    async fn call(&self, req: Request<Body>, ops_only: bool) -> Response<Body> {
        let path = req.uri().path();
        let ops = path == "/healthz" || path == "/metrics";
        if ops_only && !ops {
            let mut resp = ApiError::overloaded(Code::Overloaded, "too many connections; retry")
                .into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        let router = self.router.read().clone();
        match router {
            Some(mut router) => match tower_service::Service::call(&mut router, req).await {
                Ok(resp) => resp,
                Err(never) => match never {},
            },
            None if path == "/metrics" => (
                [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                self.metrics.render(),
            )
                .into_response(),
            None if path == "/healthz" => {
                (StatusCode::SERVICE_UNAVAILABLE, "starting").into_response()
            }
            None => ApiError::overloaded(Code::Unavailable, "the broker is starting; retry")
                .into_response(),
        }
    }
}

/// A connection's place in the bounds: released when the connection ends.
struct Admission {
    _permit: OwnedSemaphorePermit,
    _peer: PeerSlot,
    ops_only: bool,
}

struct PeerSlot {
    front: Arc<Front>,
    peer: IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Some(mut n) = self.front.peers.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
        }
        self.front.peers.remove_if(&self.peer, |_, n| *n == 0);
    }
}

/// Accepts connections on `listener` and serves them from `front` until `stop` turns true;
/// then stops accepting, lets each connection finish the request it is in (idle ones close at
/// once) and returns when all have ended. The caller bounds that wait.
pub async fn serve(listener: TcpListener, front: Arc<Front>, mut stop: watch::Receiver<bool>) {
    let mut conns = JoinSet::new();
    let conn_stop = stop.clone();
    static ACCEPT_ERRORS: LogLimit = LogLimit::new(1);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Some(admission) = front.admit(peer.ip()) else {
                        drop(stream);
                        continue;
                    };
                    conns.spawn(connection(stream, peer, front.clone(), admission, conn_stop.clone()));
                }
                Err(e) => {
                    // Out of file descriptors (the cap should prevent it) or a connection reset
                    // before it was accepted: wait a moment rather than spin.
                    if let Some(held_back) = ACCEPT_ERRORS.check() {
                        tracing::warn!(error = %e, held_back, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    front: Arc<Front>,
    admission: Admission,
    mut stop: watch::Receiver<bool>,
) {
    let _open = super::InFlight::enter(m::CONNECTIONS);
    let state = Arc::new(ConnState::new());
    // hyper's own answers to what it cannot parse get the API's JSON error body.
    let io = TokioIo::new(super::parse_errors::ParseErrorBodies::new(Watched {
        inner: stream,
        state: state.clone(),
    }));
    let ops_only = admission.ops_only;
    let service = {
        let state = state.clone();
        let front = front.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            state.enter(Phase::Busy);
            let limits = &front.limits;
            let mut req =
                req.map(|b| Body::new(TimedBody::new(b, limits.body_grace, limits.min_body_rate)));
            req.extensions_mut().insert(ConnectInfo(peer));
            let front = front.clone();
            let state = state.clone();
            async move {
                let resp = front.call(req, ops_only).await;
                Ok::<_, Infallible>(resp.map(|body| Written { body, state }))
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(!ops_only)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let dog = watchdog(&state, &front.limits);
    tokio::pin!(dog);
    let mut draining = false;
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                break;
            }
            phase = &mut dog => {
                metrics::counter!(m::CONNECTIONS_TIMED_OUT, "phase" => phase).increment(1);
                tracing::debug!(%peer, phase, "connection timed out");
                break;
            }
            changed = stop.changed(), if !draining => {
                if changed.is_err() || *stop.borrow() {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
            }
        }
    }
    drop(admission);
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
enum Phase {
    Idle = 0,
    Head = 1,
    Busy = 2,
}

/// Where a connection is (see the module doc) and since when, shared by its reader, its
/// service and its watchdog. Times are milliseconds since `base`.
struct ConnState {
    phase: AtomicU8,
    since: AtomicU64,
    base: Instant,
    changed: Notify,
}

impl ConnState {
    fn new() -> Self {
        Self {
            phase: AtomicU8::new(Phase::Idle as u8),
            since: AtomicU64::new(0),
            base: Instant::now(),
            changed: Notify::new(),
        }
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Idle,
            1 => Phase::Head,
            _ => Phase::Busy,
        }
    }

    fn enter(&self, phase: Phase) {
        let now = self.base.elapsed().as_millis() as u64;
        self.since.store(now, Ordering::Release);
        self.phase.store(phase as u8, Ordering::Release);
        self.changed.notify_one();
    }

    /// Bytes arrived: a request starts if none was in progress.
    fn read_some(&self) {
        if self.phase() == Phase::Idle {
            self.enter(Phase::Head);
        }
    }
}

/// Resolves, with the phase's name, when the connection has stayed in its idle or head phase
/// past that phase's deadline.
async fn watchdog(state: &ConnState, limits: &Limits) -> &'static str {
    loop {
        let phase = state.phase();
        let since = state.since.load(Ordering::Acquire);
        let (limit, name) = match phase {
            Phase::Idle => (limits.idle_timeout, "idle"),
            Phase::Head => (limits.header_timeout, "head"),
            Phase::Busy => {
                state.changed.notified().await;
                continue;
            }
        };
        let deadline = state.base + Duration::from_millis(since) + limit;
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                if state.phase() == phase && state.since.load(Ordering::Acquire) == since {
                    return name;
                }
            }
            _ = state.changed.notified() => {}
        }
    }
}

/// The connection's socket, telling its state when bytes arrive.
struct Watched {
    inner: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.read_some();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A response body; the connection is idle again once it has been written (or dropped).
struct Written {
    body: Body,
    state: Arc<ConnState>,
}

impl Drop for Written {
    fn drop(&mut self) {
        self.state.enter(Phase::Idle);
    }
}

impl HttpBody for Written {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A request body that fell behind `server.min_body_rate` after `server.body_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("request body too slow")]
pub struct BodyTooSlow;

/// Whether reading a body failed because it arrived too slowly ([`BodyTooSlow`]).
pub fn is_too_slow(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTooSlow>()
            || matches!(
                err.downcast_ref::<TimedBodyError>(),
                Some(TimedBodyError::TooSlow(_))
            )
        {
            return true;
        }
        cur = err.source();
    }
    false
}

#[derive(Debug, thiserror::Error)]
enum TimedBodyError {
    #[error(transparent)]
    TooSlow(#[from] BodyTooSlow),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// A request body that must have delivered `(elapsed - grace) × rate` bytes at every moment.
/// The timer is only created once the body has to be waited for: a body that came with its
/// headers (most webhooks) costs none.
struct TimedBody {
    inner: Incoming,
    started: Instant,
    grace: Duration,
    rate: u64,
    received: u64,
    timer: Option<Pin<Box<Sleep>>>,
    failed: bool,
}

impl TimedBody {
    fn new(inner: Incoming, grace: Duration, rate: u64) -> Self {
        Self {
            inner,
            started: Instant::now(),
            grace,
            rate: rate.max(1),
            received: 0,
            timer: None,
            failed: false,
        }
    }

    fn deadline(&self) -> Instant {
        self.started + self.grace + Duration::from_secs_f64(self.received as f64 / self.rate as f64)
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = TimedBodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, TimedBodyError>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.received += data.len() as u64;
                    let deadline = self.deadline();
                    if let Some(timer) = self.timer.as_mut() {
                        timer.as_mut().reset(deadline);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = self.deadline();
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    self.failed = true;
                    metrics::counter!(m::CONNECTIONS_TIMED_OUT, "phase" => "body").increment(1);
                    return Poll::Ready(Some(Err(BodyTooSlow.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Raises the soft limit on open files to the hard limit and returns the limit now in force:
/// every connection costs a descriptor, and the usual soft default (1,024) would run out long
/// before any other resource. Best effort: on failure, the current limit is returned.
pub fn raise_open_files_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        lim.rlim_cur
    }
}
