//! The narrow ports agent and team actors, their guardian and the timer service take at
//! construction, instead of the whole [`Ctx`] attached after the fact.
//!
//! - [`Directory`]: where the agent and team actors are. Filled by their guardian as it spawns
//!   them and updated when it restarts one, read by everyone else (agents tell their teams they
//!   are available; conversations and the service find both).
//! - [`ActivePolicies`]: the routing rules and team policies in force, replaced whole by the
//!   admin API; teams read their assignment policy here at each pass.
//! - [`Conversations`]: how agents, teams and timers reach conversation actors. It is the one
//!   cyclic piece (conversation actors call agents and teams, which ask conversations back), so it
//!   is a handle created empty before any actor and bound exactly once, by app.rs, to the
//!   registry when that exists. Until it is bound (and once the registry is gone, at shutdown)
//!   nothing is asked: agents hand nothing back, teams do not assign, timers do not fire.
//! - [`FetchSignal`]: conversations tell the media fetcher (`crate::media`) that they queued a
//!   fetch, and from when it is due, so the fetcher reads its queue from there instead of from
//!   its start (which holds the deletions of every fetch done since the last compaction).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};

use ractor::ActorRef;

use super::{AgentMsg, ConversationMsg, Ctx, Reply, TeamMsg};
use crate::domain::policy::Policies;
use crate::error::Error;

/// A fetch was queued: wakes the fetcher and keeps the earliest due time queued since the fetcher
/// last looked. Invariant: a fetch committed to the queue is either seen by the fetcher's next
/// read or recorded here (conversations signal after their commit), so reading from
/// `min(what it saw first, what is recorded here)` misses nothing.
pub struct FetchSignal {
    notify: tokio::sync::Notify,
    earliest: std::sync::atomic::AtomicI64,
}

impl Default for FetchSignal {
    fn default() -> Self {
        Self {
            notify: tokio::sync::Notify::new(),
            earliest: std::sync::atomic::AtomicI64::new(i64::MAX),
        }
    }
}

impl FetchSignal {
    /// A fetch due at `at` is queued (durably).
    pub fn queued(&self, at: crate::domain::Millis) {
        self.earliest
            .fetch_min(at, std::sync::atomic::Ordering::AcqRel);
        self.notify.notify_one();
    }

    /// The earliest due time queued since the last call, if any.
    pub fn take_earliest(&self) -> Option<crate::domain::Millis> {
        let at = self
            .earliest
            .swap(i64::MAX, std::sync::atomic::Ordering::AcqRel);
        (at != i64::MAX).then_some(at)
    }

    /// Waits for the next [`Self::queued`].
    pub async fn notified(&self) {
        self.notify.notified().await
    }
}

/// Agent and team actors by id.
#[derive(Default)]
pub struct Directory {
    agents: parking_lot::RwLock<HashMap<String, ActorRef<AgentMsg>>>,
    teams: parking_lot::RwLock<HashMap<String, ActorRef<TeamMsg>>>,
}

impl Directory {
    pub fn agent(&self, id: &str) -> Option<ActorRef<AgentMsg>> {
        self.agents.read().get(id).cloned()
    }

    pub fn team(&self, id: &str) -> Option<ActorRef<TeamMsg>> {
        self.teams.read().get(id).cloned()
    }

    pub fn agent_refs(&self) -> Vec<ActorRef<AgentMsg>> {
        self.agents.read().values().cloned().collect()
    }

    pub fn team_refs(&self) -> Vec<ActorRef<TeamMsg>> {
        self.teams.read().values().cloned().collect()
    }

    /// Points `id` at its (re)started actor.
    pub(crate) fn set_agent(&self, id: &str, actor: ActorRef<AgentMsg>) {
        self.agents.write().insert(id.to_owned(), actor);
    }

    /// Points `id` at its (re)started actor.
    pub(crate) fn set_team(&self, id: &str, actor: ActorRef<TeamMsg>) {
        self.teams.write().insert(id.to_owned(), actor);
    }
}

/// The policies in force; a snapshot never changes under its reader.
pub struct ActivePolicies(parking_lot::RwLock<Arc<Policies>>);

impl ActivePolicies {
    pub fn new(p: Policies) -> Self {
        Self(parking_lot::RwLock::new(Arc::new(p)))
    }

    pub fn get(&self) -> Arc<Policies> {
        self.0.read().clone()
    }

    pub(crate) fn set(&self, p: Policies) {
        *self.0.write() = Arc::new(p);
    }
}

/// The conversation actors, as agents, teams and timers ask them (see the module docs).
#[derive(Clone, Default)]
pub struct Conversations(Arc<OnceLock<Weak<Ctx>>>);

impl Conversations {
    /// Binds the handle (and every clone of it) to the registry; only the first call counts.
    pub fn bind(&self, ctx: &Arc<Ctx>) {
        let _ = self.0.set(Arc::downgrade(ctx));
    }

    /// Whether the registry is there to ask.
    pub fn is_live(&self) -> bool {
        self.registry().is_some()
    }

    fn registry(&self) -> Option<Arc<Ctx>> {
        self.0.get().and_then(Weak::upgrade)
    }

    /// Sends a command to an existing conversation and waits for its answer ([`Ctx::ask`]);
    /// `unavailable` while the handle is unbound or the registry is gone.
    pub async fn ask<R, F>(&self, id: &str, make: F) -> Result<R, Error>
    where
        R: Send + 'static,
        F: Fn(Reply<R>) -> ConversationMsg,
    {
        let Some(ctx) = self.registry() else {
            return Err(Error::Unavailable);
        };
        ctx.ask(id, None, make).await
    }
}
