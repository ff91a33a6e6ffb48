//! The broker's listening sockets, bound once and served for as long as the process runs.
//!
//! `server.listen` is served on the caller's runtime; `server.api_listen`, when configured, on
//! the agents' lane ([`super::lane`]). Both serve one [`Front`]: its bounds are shared, and the
//! router it serves is attached when a broker has started and detached when it stops. Keeping
//! the listeners apart from the broker is what lets a broker restart on its storage
//! (`crate::supervisor`) without refusing a single connection meanwhile.
//!
//! Invariants: binding happens before anything else starts, so an address that cannot be bound
//! is a config error with nothing left running; [`Listeners::stop`] stops accepting and waits,
//! bounded, for requests in flight; dropping `Listeners` stops serving at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::lane::Lane;
use super::server::{self, Front, Limits};
use crate::config::Config;

/// An address that could not be bound; `key` is the config key that named it.
#[derive(Debug, thiserror::Error)]
#[error("config error: {key}: cannot listen on {addr}: {source}")]
pub struct ListenError {
    pub key: &'static str,
    pub addr: String,
    pub source: std::io::Error,
}

pub struct Listeners {
    front: Arc<Front>,
    addr: SocketAddr,
    api_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    main: Mutex<Option<JoinHandle<()>>>,
    lane: Mutex<Option<Lane>>,
}

impl Listeners {
    /// Binds `server.listen` (and `server.api_listen`) and starts serving them; until a router is
    /// attached, `/healthz` answers 503 `starting`. Raises the open-file limit first, since the
    /// connection cap is computed from it.
    pub async fn bind(
        config: &Config,
        metrics: PrometheusHandle,
    ) -> Result<Listeners, ListenError> {
        let listen = config.listen_addr().map_err(|e| ListenError {
            key: "server.listen",
            addr: config.server.listen.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
        })?;
        let api_listen = config.api_listen_addr().map_err(|e| ListenError {
            key: "server.api_listen",
            addr: config.server.api_listen.clone().unwrap_or_default(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()),
        })?;
        let error = |key, addr: SocketAddr| {
            move |source| ListenError {
                key,
                addr: addr.to_string(),
                source,
            }
        };
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(error("server.listen", listen))?;
        let addr = listener
            .local_addr()
            .map_err(error("server.listen", listen))?;
        let api_listener = match api_listen {
            Some(api) => Some((
                api,
                tokio::net::TcpListener::bind(api)
                    .await
                    .and_then(|l| l.into_std())
                    .map_err(error("server.api_listen", api))?,
            )),
            None => None,
        };

        let open_files = server::raise_open_files_limit();
        let front = Front::new(Limits::new(&config.server, open_files), metrics);
        let (stop, stopped) = watch::channel(false);
        let main = tokio::spawn(server::serve(listener, front.clone(), stopped.clone()));
        tracing::info!(%addr, "switchboard listening");
        let (lane, api_addr) = match api_listener {
            Some((api, listener)) => {
                let lane = Lane::start(listener, front.clone(), stopped)
                    .map_err(error("server.api_listen", api))?;
                tracing::info!(addr = %lane.addr(), "agents' lane listening");
                let addr = lane.addr();
                (Some(lane), Some(addr))
            }
            None => (None, None),
        };
        Ok(Listeners {
            front,
            addr,
            api_addr,
            stop,
            main: Mutex::new(Some(main)),
            lane: Mutex::new(lane),
        })
    }

    pub fn front(&self) -> &Arc<Front> {
        &self.front
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the agents' lane listens (`server.api_listen`), when configured.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api_addr
    }

    /// Stops accepting on both listeners and waits up to `limit` for requests in flight (SSE
    /// streams never end by themselves, hence the bound).
    pub async fn stop(&self, limit: Duration) {
        let _ = self.stop.send(true);
        let main = self.main.lock().take();
        let lane = self.lane.lock().take();
        let main = async {
            if let Some(main) = main {
                if tokio::time::timeout(limit, main).await.is_err() {
                    tracing::warn!("http server did not stop within {limit:?}");
                }
            }
        };
        let lane = async {
            if let Some(mut lane) = lane {
                lane.stop(limit).await;
            }
        };
        tokio::join!(main, lane);
    }
}

/// Dropping the listeners is an abrupt stop: nothing more is accepted or answered.
impl Drop for Listeners {
    fn drop(&mut self) {
        if let Some(main) = self.main.get_mut().take() {
            main.abort();
        }
        if let Some(lane) = self.lane.get_mut().as_mut() {
            lane.abort();
        }
    }
}
