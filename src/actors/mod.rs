//! The actors and the registry that finds (or wakes) them.
//!
//! - [`conversation::ConversationActor`]: one per *active* conversation, the single writer of its
//!   state. Concurrent commands are ordered by its mailbox, so e.g. of many racing claims exactly
//!   one wins, with no lock anywhere.
//! - [`agent::AgentActor`]: one per agent: presence and capacity (`max_concurrent`).
//! - [`team::TeamActor`]: one per team: its queue of waiting conversations.
//! - [`supervisor::ConversationSupervisor`]: parent of every conversation actor; restarts one that
//!   panicked from its last durable state and keeps the registry truthful.
//!
//! [`Ctx`] is what they share. Its registry maps conversation ids to live actors; an id that is
//! not there is activated from storage on demand ([`Ctx::activate`]) and idle actors remove
//! themselves, so memory follows active conversations. A command that reaches an actor that just
//! passivated gets [`Error::Retired`] (or a dropped reply port) and [`Ctx::ask`] retries it on a
//! fresh activation; since every handler makes its change durable before replying, a retry never
//! sees stale state, and re-applying is harmless (wamid dedup, idempotency keys, claim by the
//! owner is a no-op).
//!
//! Mailbox bound: ractor mailboxes are unbounded, so the bound is upstream — webhook admission
//! (`server.max_inflight_webhooks`), the HTTP server's connection handling for the agent API, and
//! the outbox's per-number in-flight limit. No producer sends without awaiting the reply except
//! the idle sweeper (one small message per actor per sweep) and team/agent bookkeeping casts.

pub mod agent;
pub mod conversation;
pub mod seen;
pub mod supervisor;
pub mod team;
pub mod timers;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorCell, ActorId, ActorRef, RpcReplyPort};

use crate::clock::SharedClock;
use crate::config::Config;
use crate::domain::policy::Policies;
use crate::domain::Conversation;
use crate::error::Error;
use crate::events::EventBus;
use crate::metrics as m;
use crate::outbox::Outbox;
use crate::store::Store;

pub use agent::{AgentActor, AgentMsg};
pub use conversation::{ConversationActor, ConversationMsg};
pub use team::{TeamActor, TeamMsg};

/// How long a caller waits for a conversation actor's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to reach a conversation that keeps passivating or restarting under the caller.
const ASK_ATTEMPTS: usize = 5;

/// Everything the actors share.
pub struct Ctx {
    pub config: Arc<Config>,
    pub store: Store,
    pub bus: EventBus,
    pub agents: HashMap<String, ActorRef<AgentMsg>>,
    pub teams: HashMap<String, ActorRef<TeamMsg>>,
    pub conversations: DashMap<String, ActorRef<ConversationMsg>>,
    pub actor_ids: DashMap<ActorId, String>,
    pub supervisor: OnceLock<ActorCell>,
    pub outbox: OnceLock<Outbox>,
    pub timers: OnceLock<timers::Timers>,
    pub clock: SharedClock,
    /// The routing rules and team policies in force; replaced whole by the admin API.
    policies: parking_lot::RwLock<Arc<Policies>>,
    /// Serializes admin changes so the stored and the active policies never disagree.
    pub settings_lock: tokio::sync::Mutex<()>,
}

impl Ctx {
    pub fn new(
        config: Arc<Config>,
        store: Store,
        bus: EventBus,
        agents: HashMap<String, ActorRef<AgentMsg>>,
        teams: HashMap<String, ActorRef<TeamMsg>>,
        clock: SharedClock,
        policies: Policies,
    ) -> Self {
        Self {
            config,
            store,
            bus,
            agents,
            teams,
            conversations: DashMap::new(),
            actor_ids: DashMap::new(),
            supervisor: OnceLock::new(),
            outbox: OnceLock::new(),
            timers: OnceLock::new(),
            clock,
            policies: parking_lot::RwLock::new(Arc::new(policies)),
            settings_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn now(&self) -> crate::domain::Millis {
        self.clock.now_ms()
    }

    /// The policies in force now (a snapshot: never changes under the caller).
    pub fn policies(&self) -> Arc<Policies> {
        self.policies.read().clone()
    }

    /// Installs new policies (the caller has made them durable) and lets every team re-check
    /// its queue under them.
    pub fn set_policies(&self, p: Policies) {
        *self.policies.write() = Arc::new(p);
        for t in self.teams.values() {
            let _ = t.cast(TeamMsg::Assign);
        }
    }

    /// Tells the timer service when to look at a conversation next.
    pub fn schedule(&self, conversation: &str, at: Option<crate::domain::Millis>) {
        if let Some(t) = self.timers.get() {
            t.schedule(conversation, at);
        }
    }

    /// The team a new (or reopened) conversation on `number` goes to.
    pub fn default_team(&self, number: &str) -> String {
        self.config
            .number(number)
            .map(|n| n.default_team.clone())
            .or_else(|| self.config.teams.first().map(|t| t.id.clone()))
            .unwrap_or_else(|| "unrouted".to_string())
    }

    /// Returns the live actor of a conversation, activating it from storage (or from `seed`, for
    /// a conversation that does not exist yet) when needed.
    pub async fn activate(
        self: &Arc<Self>,
        id: &str,
        seed: Option<&Conversation>,
    ) -> Result<ActorRef<ConversationMsg>, Error> {
        if let Some(r) = self.conversations.get(id) {
            return Ok(r.clone());
        }
        let (conv, persisted, seen) =
            match self.store.load_conversation(id, seen::MAX_SCANNED).await? {
                Some((c, wamids)) => {
                    let seen =
                        wamids.map(|w| seen::SeenWamids::from_wamids(w.iter().map(String::as_str)));
                    (c, true, seen)
                }
                // Nothing stored yet: the empty set is complete.
                None => match seed {
                    Some(s) => (s.clone(), false, Some(seen::SeenWamids::default())),
                    None => return Err(crate::domain::DomainError::NotFound.into()),
                },
            };
        let Some(sup) = self.supervisor.get() else {
            return Err(Error::Unavailable);
        };
        let (actor, _) = Actor::spawn_linked(
            None,
            ConversationActor { ctx: self.clone() },
            conversation::Args {
                conv,
                persisted,
                seen,
            },
            sup.clone(),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, conversation = id, "cannot spawn conversation actor");
            Error::Unavailable
        })?;
        let winner = match self.conversations.entry(id.to_string()) {
            dashmap::mapref::entry::Entry::Occupied(e) => Some(e.get().clone()),
            dashmap::mapref::entry::Entry::Vacant(v) => {
                v.insert(actor.clone());
                None
            }
        };
        match winner {
            Some(existing) => {
                // Another caller activated it first; ours never received a message.
                actor.stop(None);
                Ok(existing)
            }
            None => {
                self.actor_ids.insert(actor.get_id(), id.to_string());
                metrics::gauge!(m::LIVE_ACTORS).increment(1.0);
                metrics::counter!(m::ACTOR_ACTIVATIONS).increment(1);
                Ok(actor)
            }
        }
    }

    /// Drops a registry entry if it still points at `actor`.
    pub fn forget(&self, id: &str, actor: ActorId) {
        self.conversations.remove_if(id, |_, r| r.get_id() == actor);
    }

    /// Sends a command to a conversation and waits for its answer, re-activating the actor when it
    /// passivated or restarted in between.
    pub async fn ask<R, F>(
        self: &Arc<Self>,
        id: &str,
        seed: Option<&Conversation>,
        make: F,
    ) -> Result<R, Error>
    where
        R: Send + 'static,
        F: Fn(RpcReplyPort<Result<R, Error>>) -> ConversationMsg,
    {
        for _ in 0..ASK_ATTEMPTS {
            let actor = self.activate(id, seed).await?;
            match actor.call(&make, Some(CALL_TIMEOUT)).await {
                Ok(CallResult::Success(Err(Error::Retired))) => self.forget(id, actor.get_id()),
                Ok(CallResult::Success(r)) => return r,
                Ok(CallResult::Timeout) => return Err(Error::Unavailable),
                Ok(CallResult::SenderError) | Err(_) => self.forget(id, actor.get_id()),
            }
        }
        Err(Error::Unavailable)
    }

    pub fn agent(&self, id: &str) -> Option<&ActorRef<AgentMsg>> {
        self.agents.get(id)
    }

    pub fn team(&self, id: &str) -> Option<&ActorRef<TeamMsg>> {
        self.teams.get(id)
    }
}

/// Moves the `switchboard_conversations{status,team}` gauge for a state change.
pub fn count_change(before: Option<&Conversation>, after: &Conversation) {
    if let Some(b) = before {
        if b.status == after.status && b.team == after.team {
            return;
        }
        metrics::gauge!(m::CONVERSATIONS, "status" => b.status.as_str(), "team" => b.team.clone())
            .decrement(1.0);
    }
    metrics::gauge!(m::CONVERSATIONS, "status" => after.status.as_str(), "team" => after.team.clone())
        .increment(1.0);
}
