//! Restarts the broker, in-process, when its storage fails.
//!
//! RocksDB stops taking writes after an I/O error in its journal (a full disk, for one) and does
//! not resume while the database stays open, even once space is freed: every webhook would be
//! answered 500 until someone restarted the process. Meanwhile `/healthz` answers 503, and Meta
//! redelivers what was not acknowledged.
//!
//! A store whose commits have failed, with none succeeding, for [`RESTART_AFTER`] is reopened
//! the way a crashed broker is: the running broker is dropped (an abrupt stop, like kill -9;
//! everything acknowledged is in the journal) and a new one starts on the same data directory,
//! retrying with back-off while the disk stays unusable. The listeners belong to the supervisor,
//! not to a broker: they stay open throughout, `/healthz` answering 503 and every other route
//! 503 `unavailable` until the new broker has started. Conversation, team
//! and agent state is rebuilt from disk, which is the only safe source: a commit that failed may
//! still have reached the journal.
//!
//! Bounds: one restart at a time. The first restart starts at once; a failed start, or a new
//! failure within [`STABLE`] of the last restart, waits [`RETRY_FIRST`], doubling up to
//! [`RETRY_MAX`], so a disk that stays full costs one reopen every 10 s, not one a second.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::app::{Broker, StartError};
use crate::clock::SystemClock;
use crate::config::Config;
use crate::http::Listeners;
use crate::metrics as m;

/// How long commits must keep failing before the store is reopened: long enough that one
/// failed commit RocksDB recovers from by itself does not restart the broker.
pub const RESTART_AFTER: Duration = Duration::from_secs(1);
/// First delay between failed start attempts; it doubles up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(10);
/// A restart this long after the previous one starts at once again (the back-off resets).
pub const STABLE: Duration = Duration::from_secs(60);

/// A broker that is started again when its storage fails.
pub struct Supervisor {
    /// What a restart starts from.
    config: Config,
    listeners: Arc<Listeners>,
    broker: Broker,
}

impl Supervisor {
    /// Starts the broker; a failure here is returned (a bad data directory, a taken port).
    pub async fn start(config: Config) -> Result<Self, StartError> {
        // A data directory the config got wrong is its error, told before anything serves.
        crate::app::check_storage_path(&config)?;
        let listeners = Arc::new(Listeners::bind(&config, m::install()).await?);
        let broker =
            Broker::start_on(config.clone(), listeners.clone(), Arc::new(SystemClock)).await?;
        Ok(Self {
            config,
            listeners,
            broker,
        })
    }

    /// The broker running now.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Runs until `shutdown` completes, then shuts the broker down gracefully.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let Self {
            config,
            listeners,
            mut broker,
        } = self;
        tokio::pin!(shutdown);
        let mut delay = RETRY_FIRST;
        let mut last_restart: Option<Instant> = None;
        loop {
            let store = broker.ctx().store.clone();
            tokio::select! {
                _ = &mut shutdown => {
                    broker.shutdown().await;
                    return;
                }
                _ = store.failed_for(RESTART_AFTER) => {}
            }
            tracing::error!(
                after = ?RESTART_AFTER,
                "storage keeps failing; restarting the broker on its journal"
            );
            metrics::counter!(m::BROKER_RESTARTS).increment(1);
            // Dropping closes the store, which joins its writer thread: off the async threads.
            let _ = tokio::task::spawn_blocking(move || drop(broker)).await;
            // A store that fails again soon after a restart (the disk is still full) backs off
            // instead of reopening every second.
            let mut wait = match last_restart {
                Some(at) if at.elapsed() < STABLE => true,
                _ => {
                    delay = RETRY_FIRST;
                    false
                }
            };
            broker = loop {
                if wait {
                    tokio::select! {
                        _ = &mut shutdown => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(RETRY_MAX);
                }
                wait = true;
                match Broker::start_on(config.clone(), listeners.clone(), Arc::new(SystemClock))
                    .await
                {
                    Ok(b) => break b,
                    Err(e) => {
                        tracing::error!(error = %e, retry_in = ?delay, "broker restart failed");
                    }
                }
            };
            last_restart = Some(Instant::now());
            tracing::info!(addr = %broker.addr(), "broker restarted");
        }
    }
}
