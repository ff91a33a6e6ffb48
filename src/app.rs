//! Wiring and lifecycle: start everything in order, serve, shut down cleanly.
//!
//! Start-up order: listeners (bound and serving at once, `/healthz` answering 503 `starting`) →
//! metrics → store (RocksDB open replays its WAL) → policies in force → agent actors (rebuild
//! their load from the assignee index) and team actors under their guardian, and the timer
//! service, each given the ports it uses → conversation registry ([`Ctx`], to which the
//! conversations handle they were given is bound) → outbox (each number's worker reads its
//! pending sends back from disk; it takes the Graph client and the conversations' outcome sink)
//! → teams told to assign (each rebuilds its queue from the status index in the background,
//! then assigns) → the router attached to the listeners. Every port is wired here, once.
//! `/healthz` answers 200 from then on, which does not wait for anything proportional to the number of
//! conversations: actors activate lazily and queues rebuild behind their mailboxes (measured:
//! 111 ms from SIGKILL to healthy with 1M conversations / 10M messages on disk, BENCHMARKS.md).
//!
//! Shutdown: stop taking webhooks (503), let the HTTP server finish requests in flight, give the
//! outbox a grace period for sends in flight, stop actors (conversation handlers in progress
//! finish their commits), then close the store (which drains the group-commit writer).
//! Acknowledged work not yet sent stays on disk for the next start.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use tokio::task::JoinHandle;

use crate::actors::guardian::{Guardian, GuardianMsg};
use crate::actors::ports::{ActivePolicies, Conversations, Directory};
use crate::actors::send_outcomes::SendOutcomes;
use crate::actors::timers::Timers;
use crate::actors::{Ctx, Parts};
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use crate::events::EventBus;
use crate::http::{self, AppState};
use crate::media::Media;
use crate::metrics as m;
use crate::outbox::Outbox;
use crate::service::people;
use crate::store::{Store, StoreError};
use crate::whatsapp::graph::GraphClient;
use crate::whatsapp::media::MediaGraph;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `storage.path` cannot be a data directory here (cannot be created, is not a directory,
    /// cannot be written): the config's to fix.
    #[error("config error: storage.path: cannot use {path}: {source}")]
    StoragePath {
        path: String,
        source: std::io::Error,
    },
    /// The directory is usable but RocksDB would not open it (another process holds it, damaged
    /// files, an I/O error).
    #[error("storage error: cannot open {path}: {source}")]
    Storage { path: String, source: StoreError },
    /// An address that cannot be bound (`server.listen`, `server.api_listen`).
    #[error(transparent)]
    Listen(#[from] http::ListenError),
    #[error("config error: {0}")]
    Config(#[from] crate::config::ConfigError),
    /// `[media]` names a store that cannot be used (a directory that cannot be made, a bucket
    /// the S3 client refuses).
    #[error("config error: {0}")]
    Media(String),
    #[error("cannot start {0}")]
    Spawn(String),
}

impl StartError {
    /// Whether the failure is the config's: a value that parsed but cannot be used here (an
    /// address that cannot be bound) or one that did not pass validation.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            StartError::Listen(_)
                | StartError::Config(_)
                | StartError::StoragePath { .. }
                | StartError::Media(_)
        )
    }
}

/// Checks that `storage.path` is, or can be made, a directory the broker can write to, so that
/// a path the config got wrong is told apart from a store RocksDB cannot open (blocking).
pub fn check_storage_path(config: &Config) -> Result<(), StartError> {
    let path = &config.storage.path;
    usable_dir(path).map_err(|source| StartError::StoragePath {
        path: path.display().to_string(),
        source,
    })
}

fn usable_dir(path: &std::path::Path) -> std::io::Result<()> {
    if path.exists() && !path.is_dir() {
        return Err(std::io::Error::other("it is not a directory"));
    }
    std::fs::create_dir_all(path)?;
    let probe = path.join(".switchboard-write-probe");
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// A running broker.
pub struct Broker {
    ctx: Arc<Ctx>,
    /// Media storage and the inbound fetcher, stopped with the broker.
    media: Arc<Media>,
    /// Supervises the agent and team actors.
    guardian: ActorRef<GuardianMsg>,
    state: AppState,
    /// Shared with the supervisor, which keeps them across a restart.
    listeners: Arc<http::Listeners>,
    sweeper: JoinHandle<()>,
    timer_task: JoinHandle<()>,
    /// Syncs the template registry from Meta (`crate::templates`).
    template_sync: JoinHandle<()>,
    shut: bool,
}

/// Dropping a broker without [`Broker::shutdown`] is an abrupt stop (like a crash, minus the
/// process exit): tasks and actors are stopped without waiting and the store is closed, so the
/// directory can be reopened and RocksDB never outlives the process's static state.
impl Drop for Broker {
    fn drop(&mut self) {
        if self.shut {
            return;
        }
        self.state.accepting.store(false, Ordering::Release);
        // Whoever else holds the listeners (the supervisor, restarting) keeps them open and
        // answering 503 meanwhile; otherwise they close with this broker.
        self.listeners.front().detach();
        self.sweeper.abort();
        self.timer_task.abort();
        self.template_sync.abort();
        if let Some(outbox) = self.ctx.outbox.get() {
            outbox.abort();
        }
        self.media.abort();
        // Retired actors refuse new commands; handlers in progress fail at the closed store.
        self.ctx.close_conversations();
        // The guardian first: a child stopped on purpose is never restarted anyway.
        self.guardian.stop(None);
        for a in self.ctx.agent_refs() {
            a.stop(None);
        }
        for t in self.ctx.team_refs() {
            t.stop(None);
        }
        self.ctx.store.close_blocking();
    }
}

impl Broker {
    /// Starts a broker from a validated config; binds `server.listen` (port 0 picks a free one).
    pub async fn start(config: Config) -> Result<Broker, StartError> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// As [`Broker::start`], reading wall-clock time from `clock` (tests move a manual clock
    /// through business hours and SLA deadlines instead of sleeping).
    pub async fn start_with_clock(
        config: Config,
        clock: SharedClock,
    ) -> Result<Broker, StartError> {
        let listeners = Arc::new(http::Listeners::bind(&config, m::install()).await?);
        Self::start_on(config, listeners, clock).await
    }

    /// Starts a broker served by `listeners`, already bound and answering `/healthz` with 503
    /// until this start has finished (a restart on the same listeners refuses no connection).
    pub async fn start_on(
        config: Config,
        listeners: Arc<http::Listeners>,
        clock: SharedClock,
    ) -> Result<Broker, StartError> {
        let metrics = m::install();
        m::zero_known_series(
            &crate::error::Code::ALL
                .iter()
                .map(|c| c.as_str())
                .collect::<Vec<_>>(),
            // The teams' series once they are read from storage, below.
            &[],
            &config
                .numbers
                .iter()
                .map(|n| n.phone_number_id.as_str())
                .collect::<Vec<_>>(),
        );
        for n in &config.numbers {
            metrics::gauge!(m::NUMBER_MPS, "number" => n.phone_number_id.clone())
                .set(f64::from(n.mps));
        }
        let config = Arc::new(config);
        // Before storage opens and anything starts: a media store that cannot be used is a config
        // error, answered with one line while nothing runs that an exit would cut short.
        let objects = crate::media::objects::build(&config).map_err(StartError::Media)?;

        let path = config.storage.path.clone();
        let (sync, batch) = (config.storage.sync, config.storage.max_commit_batch);
        let store = tokio::task::spawn_blocking(move || {
            let shown = path.display().to_string();
            usable_dir(&path).map_err(|source| StartError::StoragePath {
                path: shown.clone(),
                source,
            })?;
            Store::open(&path, sync, batch).map_err(|source| StartError::Storage {
                path: shown,
                source,
            })
        })
        .await
        .map_err(|e| StartError::Spawn(format!("storage open task: {e}")))??;

        // The gauge of conversations by status and team starts from a view of storage taken
        // here, before any actor, timer or request can change a status; every change from now on
        // is an increment and a decrement by the actor that made it, so adding the counts to the
        // gauge (whenever the scan finishes) is exact. `set` would race with those changes.
        match store.count_by_status_team().await {
            Ok(counted) => {
                tokio::spawn(init_gauges(counted));
            }
            Err(e) => tracing::warn!(error = %e, "cannot count conversations"),
        }

        // People (agents and teams) come from storage; the config seeds an empty store
        // (`service::people`).
        let stored = people::load_or_seed(&config, &store, clock.now_ms())
            .await
            .map_err(|e| match e {
                people::LoadError::Config(c) => StartError::Config(c),
                people::LoadError::Store(source) => StartError::Storage {
                    path: config.storage.path.display().to_string(),
                    source,
                },
            })?;
        let roster = people::Roster::new(stored);
        let team_ids = roster.team_ids();
        m::zero_known_series(
            &[],
            &team_ids.iter().map(String::as_str).collect::<Vec<_>>(),
            &[],
        );

        let policies = crate::admin::load(&config, &store, &team_ids)
            .await
            .map_err(|e| StartError::Spawn(format!("routing policies: {e}")))?;
        let policies = Arc::new(ActivePolicies::new(policies));
        // The one cyclic piece (conversations call agents and teams, which ask conversations
        // back): a handle every actor and the timer service take now, bound once the registry
        // exists (below). Nothing asks through it before then.
        let conversations = Conversations::default();
        let directory = Arc::new(Directory::default());

        // Agent and team actors run linked to their guardian, which restarts one that fails
        // (`actors::guardian`) and keeps the directory pointing at the live one. The roster
        // keeps these ports to start the actors of agents and teams created at run time.
        let ports = people::ActorPorts {
            store: store.clone(),
            directory: directory.clone(),
            conversations: conversations.clone(),
            policies: policies.clone(),
            slots: Default::default(),
        };
        let agent_args = roster.agent_args(&ports);
        let (team_args, published): (Vec<_>, HashMap<_, _>) = roster
            .team_args(&ports)
            .into_iter()
            .map(|(args, rx)| {
                let id = args.id.clone();
                (args, (id, rx))
            })
            .unzip();
        let guardian = Guardian::start(agent_args, team_args, directory.clone())
            .await
            .map_err(|e| StartError::Spawn(format!("agents and teams: {e}")))?;

        let (timers, timer_task) = Timers::start(conversations.clone(), clock.clone());
        let ctx = Arc::new(Ctx::new(Parts {
            config: config.clone(),
            store: store.clone(),
            bus: EventBus::new(),
            directory,
            agent_slots: ports.slots.clone(),
            queue_stats: published,
            timers,
            clock,
            policies,
        }));
        conversations.bind(&ctx);
        if let Some(cfg) = &config.automation {
            // Trained here, once: the classifier learns the intents' examples at start-up.
            let bot = crate::automation::Automation::new(cfg)
                .map_err(|e| StartError::Spawn(e.to_string()))?;
            let _ = ctx.automation.set(Arc::new(bot));
        }

        let graph = GraphClient::new(
            &config.whatsapp.graph_api_base,
            &config.whatsapp.access_token,
            Duration::from_millis(config.outbox.request_timeout_ms),
            config
                .outbox
                .max_in_flight
                .saturating_mul(config.numbers.len()),
        )
        .map_err(|e| StartError::Spawn(format!("graph client: {e}")))?;
        let template_graph = crate::templates::TemplateGraph::new(
            &config.whatsapp.graph_api_base,
            &config.whatsapp.access_token,
            Duration::from_millis(config.outbox.request_timeout_ms),
        )
        .map_err(|e| StartError::Spawn(format!("template client: {e}")))?;
        let templates = crate::templates::Registry::load(
            store.clone(),
            template_graph,
            &config.whatsapp.waba_id,
            ctx.clock.clone(),
        )
        .await
        .map_err(|source| StartError::Storage {
            path: config.storage.path.display().to_string(),
            source,
        })?;
        let templates = Arc::new(templates);
        let _ = ctx.templates.set(templates.clone());
        // Before anything serves: the openings of the last 24 h, as storage kept them.
        let messaging_limit = crate::messaging_limit::MessagingLimit::load(
            &store,
            config.whatsapp.messaging_limit,
            ctx.now(),
        )
        .await
        .map_err(|source| StartError::Storage {
            path: config.storage.path.display().to_string(),
            source,
        })?;
        let _ = ctx.messaging_limit.set(Arc::new(messaging_limit));
        // Counted before the outbox starts and before anything serves, so no new reply is
        // counted twice (the outbox counts what it is handed from here on).
        let pending = pending_sends(&ctx).await;
        let media_graph = MediaGraph::new(
            &config.whatsapp.graph_api_base,
            &config.whatsapp.access_token,
            Duration::from_millis(config.media.read_timeout_ms),
        )
        .map_err(|e| StartError::Spawn(format!("media client: {e}")))?;
        let media = Arc::new(Media::new(
            store.clone(),
            objects,
            media_graph,
            ctx.media_queued.clone(),
        ));
        let _ = ctx.outbox.set(Outbox::start(
            &config.outbox,
            &config.numbers,
            store.clone(),
            crate::media::MetaSender::new(graph, media.clone()),
            SendOutcomes::new(ctx.clone()),
            &pending,
        ));
        // Fetches the last run left queued resume at once; counted before anything serves, so
        // the gauge's later increments (new fetches) and decrements (settled ones) stay exact.
        let pending_fetches = match store.fetch_queue_len().await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot count the media fetch queue");
                0
            }
        };
        crate::media::fetch::start(&ctx, &media, pending_fetches);
        // Teams rebuild their queues and start assigning (draining what waited across the
        // restart) once everything exists.
        for t in ctx.team_refs() {
            let _ = t.cast(crate::actors::TeamMsg::Assign);
        }
        tokio::spawn(crate::actors::timers::schedule_open(ctx.clone()));
        let sweeper = tokio::spawn(sweep_idle(ctx.clone()));

        let last_audit = store
            .last_audit_seq()
            .await
            .map_err(|source| StartError::Storage {
                path: config.storage.path.display().to_string(),
                source,
            })?;
        let people = Arc::new(people::People::new(
            ctx.clone(),
            guardian.clone(),
            ports,
            roster,
            last_audit,
        ));
        let state = AppState::new(ctx.clone(), metrics, people, media.clone());
        listeners.front().attach(http::app(state.clone()));
        // Last, once nothing else can fail: a start that fails leaves no sync running.
        let template_sync = tokio::spawn(crate::templates::sync_periodically(
            templates,
            Duration::from_secs(config.whatsapp.template_sync_interval_secs),
        ));
        Ok(Broker {
            media,
            ctx,
            guardian,
            state,
            listeners,
            sweeper,
            timer_task,
            template_sync,
            shut: false,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listeners.addr()
    }

    /// Where the agents' lane listens (`server.api_listen`), when configured.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.listeners.api_addr()
    }

    /// The core, for in-process drivers (benchmarks, tests) that bypass HTTP.
    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }

    /// Graceful shutdown; returns when storage is flushed and closed.
    pub async fn shutdown(mut self) {
        self.shut = true;
        self.state.accepting.store(false, Ordering::Release);
        // SSE streams never end by themselves; don't let them hold shutdown hostage.
        self.listeners.stop(Duration::from_secs(5)).await;
        self.listeners.front().detach();
        if let Some(outbox) = self.ctx.outbox.get() {
            outbox.shutdown(Duration::from_secs(3)).await;
        }
        // A fetch cut here stays queued on disk and runs again after the next start.
        self.media.abort();
        self.sweeper.abort();
        self.timer_task.abort();
        self.template_sync.abort();
        self.ctx.stop_conversations(Duration::from_secs(5)).await;
        // The guardian first: a child stopped on purpose is never restarted anyway.
        self.guardian.stop(None);
        for a in self.ctx.agent_refs() {
            a.stop(None);
        }
        for t in self.ctx.team_refs() {
            t.stop(None);
        }
        self.ctx.store.close().await;
        tracing::info!("switchboard stopped");
    }
}

/// How many sends the last run left unsent, per number (each number's outbox worker reads its
/// own back from disk); logs them, naming the jobs no configured number will send.
async fn pending_sends(ctx: &Ctx) -> HashMap<String, usize> {
    match ctx.store.pending_outbox_by_number().await {
        Ok(counts) => {
            for (number, count) in &counts {
                if ctx
                    .config
                    .numbers
                    .iter()
                    .any(|n| &n.phone_number_id == number)
                {
                    tracing::info!(%number, count, "resuming pending outbound messages");
                } else {
                    tracing::error!(%number, count, "pending outbound messages for a number not configured; they stay on disk");
                }
            }
            counts
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read pending outbox");
            HashMap::new()
        }
    }
}

/// Adds the conversations counted by status and team to their gauge (see where it is spawned).
async fn init_gauges(
    counted: impl std::future::Future<Output = Result<crate::store::StatusTeamCounts, StoreError>>,
) {
    match counted.await {
        Ok(counts) => {
            for ((status, team), n) in counts {
                metrics::gauge!(m::CONVERSATIONS, "status" => status.as_str(), "team" => team)
                    .increment(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count conversations"),
    }
}

/// Retires every conversation actor idle for `conversations.idle_timeout_ms`, and the idlest
/// ones whenever the live ones pass `conversations.max_live` (down to nine tenths of it).
async fn sweep_idle(ctx: Arc<Ctx>) {
    let every =
        (ctx.config.idle_timeout() / 2).clamp(Duration::from_millis(20), Duration::from_secs(30));
    let max_live = ctx.config.conversations.max_live;
    let keep = max_live - max_live / 10;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let timed = tokio::select! {
            _ = tick.tick() => true,
            () = ctx.over_bound() => false,
        };
        // A sweep walks the whole registry (hundreds of thousands of entries at the bound):
        // off the async workers, so webhooks in progress there are not held up behind it.
        let sweep = ctx.clone();
        let done = tokio::task::spawn_blocking(move || {
            if timed {
                sweep.passivate_idle(sweep.config.idle_timeout());
            }
            if sweep.live() > max_live {
                sweep.passivate_idlest(keep);
            }
        })
        .await;
        if let Err(e) = done {
            tracing::error!(error = %e, "conversation sweep failed");
        }
    }
}
