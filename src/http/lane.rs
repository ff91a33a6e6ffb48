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
//! Invariants: the lane serves the same [`Front`] as the main listener (same routes, auth,
//! timeouts and connection bounds); it stops accepting when the stop signal turns true, and
//! [`Lane::stop`] waits, bounded, for requests in flight; the runtime is dropped on its own
//! thread when the `Lane` is dropped (never inside an async context), which cancels whatever it
//! still runs, as a crash would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::server::{self, Front};

/// A running lane.
pub struct Lane {
    addr: SocketAddr,
    server: Option<JoinHandle<()>>,
    /// Dropping it lets the lane's thread return, dropping the runtime there.
    _park: oneshot::Sender<()>,
}

impl Lane {
    /// Serves `front` on `listener` (already bound) from a new thread and runtime, until `stop`
    /// turns true.
    pub fn start(
        listener: std::net::TcpListener,
        front: Arc<Front>,
        stop: watch::Receiver<bool>,
    ) -> std::io::Result<Lane> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let server = rt.spawn(async move {
            match tokio::net::TcpListener::from_std(listener) {
                Ok(listener) => server::serve(listener, front, stop).await,
                Err(e) => tracing::error!(error = %e, "agents' listener failed"),
            }
        });
        let (park, parked) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("switchboard-api".into())
            .spawn(move || {
                // A claim's handler runs on this thread and waits here for its commit.
                let granted = sched_slice::request_short_slice();
                tracing::debug!(granted, "agents' lane: short scheduler slice");
                rt.block_on(async move {
                    let _ = parked.await;
                });
            })?;
        Ok(Lane {
            addr,
            server: Some(server),
            _park: park,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits up to `limit` for the lane to stop once its stop signal was sent (SSE streams
    /// never end by themselves, hence the bound).
    pub async fn stop(&mut self, limit: Duration) {
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
