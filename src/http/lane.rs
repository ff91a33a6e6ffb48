//! The agents' lane: `server.api_listen`, the same routes served on a runtime of its own.
//!
//! Webhooks arrive by the thousand per second and keep the main runtime's workers busy; a claim
//! arriving on the same listener waits in their run queues before its handler starts, and again
//! for every wake-up on its way. Agents' consoles can instead connect to a second listener whose
//! connections are driven by a single-threaded runtime on a thread of its own. A command for an
//! idle conversation then runs on that thread too (the caller's task handles it, see
//! `actors::mailbox`), and its commit wakes it there: the only thing it shares with the webhook
//! traffic is the group-commit writer and the CPU.
//!
//! Invariants: the lane serves exactly the router it is given (same routes, auth and limits as
//! the main listener); [`Lane::stop`] stops accepting and waits, bounded, for requests in
//! flight; the runtime is dropped on its own thread when the `Lane` is dropped (never inside an
//! async context), which cancels whatever it still runs, as a crash would.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running lane.
pub struct Lane {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    /// Dropping it lets the lane's thread return, dropping the runtime there.
    _park: oneshot::Sender<()>,
}

impl Lane {
    /// Serves `router` on `listener` (already bound) from a new thread and runtime.
    pub fn start(listener: std::net::TcpListener, router: Router) -> std::io::Result<Lane> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = rt.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(error = %e, "agents' listener failed");
                    return;
                }
            };
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "agents' http server failed");
            }
        });
        let (park, parked) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("switchboard-api".into())
            .spawn(move || {
                // A claim's handler runs on this thread and waits here for its commit.
                let granted = crate::slice::request_short_slice();
                tracing::debug!(granted, "agents' lane: short scheduler slice");
                rt.block_on(async move {
                    let _ = parked.await;
                });
            })?;
        Ok(Lane {
            addr,
            stop: Some(stop),
            server: Some(server),
            _park: park,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and waits up to `limit` for requests in flight (SSE streams never end by
    /// themselves, hence the bound).
    pub async fn stop(&mut self, limit: Duration) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            if tokio::time::timeout(limit, server).await.is_err() {
                tracing::warn!("agents' http server did not stop within {limit:?}");
            }
        }
    }

    /// Stops serving at once (an abrupt stop).
    pub fn abort(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
    }
}
