//! The actors and the registry that finds (or wakes) them.
//!
//! - [`conversation::ConversationActor`]: one per *active* conversation, the single writer of its
//!   state. Concurrent commands are ordered by its mailbox, so e.g. of many racing claims exactly
//!   one wins, with no lock anywhere.
//! - [`agent::AgentActor`]: one per agent: presence and capacity (`max_concurrent`).
//! - [`team::TeamActor`]: one per team: its queue of waiting conversations.
//!
//! Conversation actors run on [`mailbox::Mailbox`], a light actor (a queue and its state, with a
//! task only while there is work) rather than a ractor actor: there can be hundreds of thousands
//! live at once, and a ractor actor's resident task and four channels cost ~9 KB each. The same
//! discipline holds — one message at a time, the state owned by the handler, panics caught: a
//! conversation whose handler panicked is restarted from its last durable state
//! ([`ConversationActor::failed`](mailbox::Handler::failed)), counted in
//! `switchboard_actor_restarts_total`. Agents and teams, a handful each, are ractor actors,
//! spawned linked to [`guardian::Guardian`], which restarts a failed one from storage.
//!
//! Agents, teams, their guardian and the timer service take the narrow ports they use at
//! construction ([`ports`]: the directory of agent and team actors, the policies in force, and a
//! handle to the conversations bound once in app.rs); the outbox takes its own
//! (`outbox::GraphSender`, `outbox::OutcomeSink`, implemented here by [`send_outcomes`]). None
//! of them sees [`Ctx`], the conversation actors' context. Its registry maps conversation ids to
//! live actors; an id that is not there is activated from storage on demand
//! ([`Ctx::activate`]), and the idle sweeper retires actors idle for
//! `conversations.idle_timeout_ms` ([`Ctx::passivate_idle`]), so memory follows active
//! conversations. However many customers write within the idle timeout, at most
//! `conversations.max_live` actors stay live: an activation that passes the bound wakes the
//! sweeper, which retires the idlest actors down to nine tenths of it ([`Ctx::over_bound`],
//! [`Ctx::passivate_idlest`]); the slack means one sweep of the registry per tenth of the bound
//! activated, not one per activation. An actor busy when the sweep looks is skipped, so the bound
//! can be passed by the actors busy at once (bounded by webhook admission and the API's
//! in-flight limits), never by idle ones. A command that reaches an actor that just retired is refused
//! (or its reply port is dropped, if the actor panicked) and [`Ctx::ask`] retries it on a fresh
//! activation; since every handler makes its change durable before replying, a retry never sees
//! stale state, and re-applying is harmless (wamid dedup, idempotency keys, claim by the owner is
//! a no-op).
//!
//! Bounds: a conversation's mailbox holds at most [`mailbox::MAX_QUEUED`] waiting commands
//! (beyond that the caller gets `unavailable`); upstream, webhook admission
//! (`server.max_inflight_webhooks`) and the outbox's per-number in-flight limit bound what is
//! sent at all. Agent and team mailboxes (ractor, unbounded) receive bookkeeping casts and
//! reservation calls from conversation actors, at most one of each per conversation change.

pub mod agent;
pub mod contacts;
pub mod conversation;
pub mod guardian;
pub mod ports;
pub mod recent;
pub mod seen;
pub mod send_outcomes;
pub mod sent;
pub mod team;
#[cfg(test)]
mod tests;
pub mod timers;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use ractor::ActorRef;
use tokio::sync::oneshot;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::domain::policy::Policies;
use crate::domain::Conversation;
use crate::error::Error;
use crate::events::EventBus;
use crate::mailbox;
use crate::metrics as m;
use crate::outbox::Outbox;
use crate::store::Store;

pub use agent::{AgentActor, AgentMsg};
pub use conversation::{ConversationActor, ConversationMsg, OutboundMedia};

/// A live conversation actor.
pub type ConversationRef = Arc<mailbox::Mailbox<ConversationActor>>;

/// Where a conversation actor sends its answer.
pub type Reply<T> = oneshot::Sender<Result<T, Error>>;
pub use team::{TeamActor, TeamMsg};

/// How long a caller waits for an agent or team actor's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts to reach a conversation that keeps passivating or restarting under the caller.
const ASK_ATTEMPTS: usize = 5;

/// What conversation actors (and the services above them) work with: the registry of live
/// conversations and the ports they use. Agents, teams, their guardian, the timer service and the
/// outbox do not see it; they take narrower ports at construction ([`ports`], `outbox::ports`).
pub struct Ctx {
    pub config: Arc<Config>,
    pub store: Store,
    pub bus: EventBus,
    /// Agent and team actors by id; their guardian replaces an entry when it restarts the
    /// actor ([`guardian`]).
    directory: Arc<ports::Directory>,
    /// Each agent's capacity, shared with its actor and the teams (see [`agent::Slots`]); an
    /// agent created at run time is added by `service::people`.
    agent_slots: agent::AllSlots,
    /// Each team's queue depth and oldest wait as it last published them (gauges read these
    /// without a round trip through the team's mailbox).
    queue_stats:
        parking_lot::RwLock<HashMap<String, tokio::sync::watch::Receiver<team::QueueStats>>>,
    /// Keyed with foldhash (seeded per process): the lookup is on every command's path.
    pub conversations: DashMap<Arc<str>, ConversationRef, foldhash::fast::RandomState>,
    /// `switchboard_claims_total{outcome="won"}`, resolved once: the claim path is hot.
    pub claims_won: metrics::Counter,
    /// Conversation handlers in progress (shutdown waits for them).
    pub runners: mailbox::Runners,
    /// Set at shutdown: no conversation activates any more.
    closing: std::sync::atomic::AtomicBool,
    /// Raised before any conversation actor leaves `conversations` (passivated, forgotten after
    /// a panic or a retirement, shutdown): see [`Self::removals`].
    removals: std::sync::atomic::AtomicU64,
    /// Entries of `conversations` (kept beside the map: its own `len` locks every shard, and
    /// the bound is checked on every activation).
    live: std::sync::atomic::AtomicUsize,
    /// Woken when an activation takes `live` past `conversations.max_live` (see
    /// [`Self::over_bound`]).
    crowded: tokio::sync::Notify,
    /// Set once by app.rs, right after this context: the outbox reports to conversation actors
    /// through it ([`send_outcomes`]).
    pub outbox: OnceLock<Outbox>,
    /// Set once by app.rs, right after this context: the template registry, which the template
    /// webhooks keep current (`crate::ingest`).
    pub templates: OnceLock<Arc<crate::templates::Registry>>,
    /// Set once by app.rs, right after this context: the portfolio's messaging limit, which
    /// template sends to customers whose window is closed take a slot of.
    pub messaging_limit: OnceLock<Arc<crate::messaging_limit::MessagingLimit>>,
    /// The bot (`[automation]`), set once by app.rs when configured: conversation actors run
    /// its turns ([`conversation`]'s `bot` handlers). A port into `automation`, which depends
    /// on nothing here.
    pub automation: OnceLock<Arc<crate::automation::Automation>>,
    /// Wakes the media fetcher (`crate::media`) when a message queued a fetch: a port, so the
    /// actors never depend on the media module, which depends on them.
    pub media_queued: Arc<ports::FetchSignal>,
    timers: timers::Timers,
    pub clock: SharedClock,
    /// The routing rules and team policies in force; replaced whole by the admin API.
    policies: Arc<ports::ActivePolicies>,
    /// Serializes admin changes so the stored and the active policies never disagree.
    pub settings_lock: tokio::sync::Mutex<()>,
    /// Where recently sent wamids live, for status callbacks (see [`sent`]).
    pub sent: sent::SentWamids,
    /// Which conversation a customer's phone or user id resolved to (see `identity`).
    pub contacts: contacts::ContactCache,
}

/// The ports a [`Ctx`] is built from (all wired by app.rs).
pub struct Parts {
    pub config: Arc<Config>,
    pub store: Store,
    pub bus: EventBus,
    pub directory: Arc<ports::Directory>,
    pub agent_slots: agent::AllSlots,
    pub queue_stats: HashMap<String, tokio::sync::watch::Receiver<team::QueueStats>>,
    pub timers: timers::Timers,
    pub clock: SharedClock,
    pub policies: Arc<ports::ActivePolicies>,
}

impl Ctx {
    pub fn new(parts: Parts) -> Self {
        let Parts {
            config,
            store,
            bus,
            directory,
            agent_slots,
            queue_stats,
            timers,
            clock,
            policies,
        } = parts;
        Self {
            config,
            store,
            bus,
            directory,
            agent_slots,
            queue_stats: parking_lot::RwLock::new(queue_stats),
            conversations: DashMap::with_hasher(foldhash::fast::RandomState::default()),
            claims_won: metrics::counter!(m::CLAIMS, "outcome" => "won"),
            runners: mailbox::Runners::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            removals: std::sync::atomic::AtomicU64::new(0),
            live: std::sync::atomic::AtomicUsize::new(0),
            crowded: tokio::sync::Notify::new(),
            outbox: OnceLock::new(),
            automation: OnceLock::new(),
            templates: OnceLock::new(),
            messaging_limit: OnceLock::new(),
            media_queued: Arc::new(ports::FetchSignal::default()),
            timers,
            clock,
            policies,
            settings_lock: tokio::sync::Mutex::new(()),
            sent: sent::SentWamids::default(),
            contacts: contacts::ContactCache::default(),
        }
    }

    pub fn now(&self) -> crate::domain::Millis {
        self.clock.now_ms()
    }

    /// The policies in force now (a snapshot: never changes under the caller).
    pub fn policies(&self) -> Arc<Policies> {
        self.policies.get()
    }

    /// Installs new policies (the caller has made them durable) and lets every team re-check
    /// its queue under them.
    pub fn set_policies(&self, p: Policies) {
        self.policies.set(p);
        for t in self.team_refs() {
            let _ = t.cast(TeamMsg::Assign);
        }
    }

    /// Tells the timer service when to look at a conversation next.
    pub fn schedule(&self, conversation: &str, at: Option<crate::domain::Millis>) {
        self.timers.schedule(conversation, at);
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
    ) -> Result<ConversationRef, Error> {
        self.activate_fresh(id, seed, None).await
    }

    /// How many times a conversation actor has left memory (raised just before each leaves
    /// `conversations`). A read that found nothing stored at a conversation id, begun after
    /// this read `e`, still holds while it reads `e` and no actor for the id is live: every
    /// record is written by the conversation's own actor, which stays in `conversations` from
    /// before its first commit until this counter moves (see [`Self::activate_fresh`]).
    pub fn removals(&self) -> u64 {
        self.removals.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Raised before an actor is taken out of `conversations`, so whoever finds it gone there
    /// also finds this moved (the map's own locks order the two).
    fn removing(&self) {
        self.removals
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    /// [`Self::activate`] for a conversation a read begun at removal epoch `fresh` found
    /// nothing stored at (`identity::resolve_all`, for a new contact): while no actor for it is
    /// live and no actor left memory since that epoch, nothing can have been stored at it, so
    /// it starts from `seed` without reading storage again (one blocking-pool hop less per new
    /// conversation). Otherwise, as `activate`.
    pub async fn activate_fresh(
        self: &Arc<Self>,
        id: &str,
        seed: Option<&Conversation>,
        fresh: Option<u64>,
    ) -> Result<ConversationRef, Error> {
        if let Some(r) = self.conversations.get(id) {
            return Ok(r.clone());
        }
        if self.is_closing() {
            return Err(Error::Unavailable);
        }
        // Checked after the map: an actor removed before that lookup raised the epoch first.
        let unread = match (seed, fresh) {
            (Some(s), Some(epoch)) if self.removals() == epoch => {
                Some(conversation::State::new(s.clone()))
            }
            _ => None,
        };
        let state = match unread {
            Some(state) => state,
            None => match self.store.load_conversation(id, seen::MAX_SCANNED).await? {
                Some(loaded) => {
                    let seen = loaded
                        .wamids
                        .map(|w| seen::SeenWamids::from_wamids(w.iter().map(String::as_str)));
                    // The bot's memory is read only for a conversation the bot has.
                    let memory = match self.automation.get() {
                        Some(_) if loaded.conv.status == crate::domain::ConversationStatus::Bot => {
                            self.store.bot_memory(id).await?
                        }
                        _ => None,
                    };
                    let state = conversation::State::stored(loaded.conv, loaded.unrecorded, seen);
                    match memory {
                        Some(m) => state.with_bot_memory(m),
                        None => state,
                    }
                }
                // Nothing stored yet: the empty set is complete.
                None => match seed {
                    Some(s) => conversation::State::new(s.clone()),
                    None => return Err(crate::domain::DomainError::NotFound.into()),
                },
            },
        };
        let key: Arc<str> = Arc::from(id);
        let actor =
            mailbox::Mailbox::new(key.clone(), ConversationActor { ctx: self.clone() }, state);
        // Another caller may have activated it while we read storage: theirs wins, ours never
        // received a message.
        let mut added = false;
        let live = self.conversations.entry(key).or_insert_with(|| {
            added = true;
            actor
        });
        let live = live.value().clone();
        if added {
            metrics::gauge!(m::LIVE_ACTORS).increment(1.0);
            metrics::counter!(m::ACTOR_ACTIVATIONS).increment(1);
            let n = self.live.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            if n > self.config.conversations.max_live {
                // One stored permit at most: many activations past the bound wake one sweep.
                self.crowded.notify_one();
            }
        }
        if self.is_closing() {
            // Shutdown began while we read storage.
            live.retire();
        }
        Ok(live)
    }

    /// Drops a registry entry if it still points at `actor`; returns whether it did.
    pub fn forget(&self, actor: &ConversationRef) -> bool {
        self.removing();
        let gone = self
            .conversations
            .remove_if(actor.key().as_ref(), |_, r| Arc::ptr_eq(r, actor))
            .is_some();
        if gone {
            self.live.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            metrics::gauge!(m::LIVE_ACTORS).decrement(1.0);
        }
        gone
    }

    /// Conversation actors in memory now.
    pub fn live(&self) -> usize {
        self.live.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until an activation has taken the live actors past `conversations.max_live` since
    /// the last call (the sweeper then calls [`Self::passivate_idlest`]).
    pub async fn over_bound(&self) {
        self.crowded.notified().await;
    }

    /// Retires the idlest conversation actors until at most `keep` are live; returns how many
    /// retired. Busy ones are skipped (see the module's bounds), so fewer may retire.
    pub fn passivate_idlest(&self, keep: usize) -> usize {
        let excess = self.live().saturating_sub(keep);
        if excess == 0 {
            return 0;
        }
        // When each idle actor went idle; the `excess`-th oldest of them is the cutoff.
        let mut since: Vec<std::time::Instant> = self
            .conversations
            .iter()
            .filter_map(|r| r.value().idle_since())
            .collect();
        if since.is_empty() {
            return 0;
        }
        let nth = excess.min(since.len()) - 1;
        let (_, cutoff, _) = since.select_nth_unstable(nth);
        let cutoff = *cutoff;
        drop(since);
        let retired = self.passivate_since(cutoff);
        metrics::counter!(m::ACTOR_PASSIVATIONS, "reason" => "bound").increment(retired as u64);
        retired
    }

    /// Retires every conversation actor idle for at least `idle` (`Duration::ZERO`: every one not
    /// busy right now) and removes it from the registry; returns how many retired.
    pub fn passivate_idle(&self, idle: Duration) -> usize {
        // Nothing can have been idle for longer than the clock has run.
        let Some(cutoff) = std::time::Instant::now().checked_sub(idle) else {
            return 0;
        };
        let retired = self.passivate_since(cutoff);
        metrics::counter!(m::ACTOR_PASSIVATIONS, "reason" => "idle").increment(retired as u64);
        retired
    }

    /// Retires every conversation actor idle since `cutoff` or earlier and removes it from the
    /// registry; returns how many retired.
    fn passivate_since(&self, cutoff: std::time::Instant) -> usize {
        let mut retired = 0usize;
        // The mailbox lock is taken inside the shard lock, never the other way round. Counted
        // here, not from the map's length: activations may land while the sweep runs.
        self.conversations.retain(|_, r| {
            let keep = !r.retire_if_idle_since(cutoff);
            if !keep {
                self.removing();
            }
            retired += usize::from(!keep);
            keep
        });
        let live = self.conversations.len();
        self.live
            .fetch_sub(retired, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!(m::LIVE_ACTORS).decrement(retired as f64);
        // A map that grew for a peak keeps its table; give it back once mostly empty.
        if self.conversations.capacity() > 4 * live + 1024 {
            self.conversations.shrink_to_fit();
        }
        retired
    }

    /// Passivates one conversation's actor now if it is live and not busy (benchmarks, tests).
    pub fn passivate(&self, id: &str) -> bool {
        let Some(actor) = self.conversations.get(id).map(|r| r.clone()) else {
            return false;
        };
        actor.retire_if_idle(Duration::ZERO) && self.forget(&actor)
    }

    /// Stops accepting conversation commands and waits (up to `limit`) for handlers in progress,
    /// so their commits reach storage before it closes.
    pub async fn stop_conversations(&self, limit: Duration) {
        self.close_conversations();
        if !self.runners.wait_idle(limit).await {
            tracing::warn!(
                busy = self.runners.busy(),
                "conversation handlers still running at shutdown"
            );
        }
    }

    /// Stops activating conversations and retires every live one (without waiting).
    pub fn close_conversations(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.removing();
        self.conversations.retain(|_, r| {
            r.retire();
            false
        });
        self.live.store(0, std::sync::atomic::Ordering::Relaxed);
        metrics::gauge!(m::LIVE_ACTORS).set(0.0);
    }

    fn is_closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Acquire)
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
        F: Fn(Reply<R>) -> ConversationMsg,
    {
        self.ask_fresh(id, seed, None, make).await
    }

    /// [`Self::ask`] for a conversation found free at removal epoch `fresh` (see
    /// [`Self::activate_fresh`]).
    pub async fn ask_fresh<R, F>(
        self: &Arc<Self>,
        id: &str,
        seed: Option<&Conversation>,
        fresh: Option<u64>,
        make: F,
    ) -> Result<R, Error>
    where
        R: Send + 'static,
        F: Fn(Reply<R>) -> ConversationMsg,
    {
        for _ in 0..ASK_ATTEMPTS {
            let actor = self.activate_fresh(id, seed, fresh).await?;
            let (tx, rx) = oneshot::channel();
            match actor.submit(make(tx)) {
                // The mailbox was idle: this task handles the command itself.
                Ok(Some(inline)) => inline.await,
                Ok(None) => {}
                Err(mailbox::Rejected::Retired(_)) => {
                    self.forget(&actor);
                    continue;
                }
                Err(mailbox::Rejected::Full(_)) => {
                    metrics::counter!(m::MAILBOX_FULL).increment(1);
                    return Err(Error::Unavailable);
                }
            }
            // No timer around the wait: registering one wakes a parked worker (an eventfd write
            // per call, the largest cost of the round trip in the claim bench's profile), and
            // every await inside a handler is bounded already — the store answers each commit or
            // fails once closed, and the agent actor answers or drops the port.
            match rx.await {
                Ok(r) => return r,
                // The handler panicked (the reply port was dropped): it restarts from storage.
                Err(_) => {
                    self.forget(&actor);
                }
            }
        }
        Err(Error::Unavailable)
    }

    pub fn agent(&self, id: &str) -> Option<ActorRef<AgentMsg>> {
        self.directory.agent(id)
    }

    pub fn agent_refs(&self) -> Vec<ActorRef<AgentMsg>> {
        self.directory.agent_refs()
    }

    pub fn team_refs(&self) -> Vec<ActorRef<TeamMsg>> {
        self.directory.team_refs()
    }

    pub fn agent_slots(&self, id: &str) -> Option<Arc<agent::Slots>> {
        self.agent_slots.read().get(id).cloned()
    }

    /// Every team's last published queue depth and oldest wait.
    pub fn queue_stats(&self) -> Vec<(String, tokio::sync::watch::Receiver<team::QueueStats>)> {
        self.queue_stats
            .read()
            .iter()
            .map(|(id, rx)| (id.clone(), rx.clone()))
            .collect()
    }

    /// Enters a team created at run time (`service::people`): its queue's published stats.
    pub(crate) fn add_team_stats(
        &self,
        id: &str,
        stats: tokio::sync::watch::Receiver<team::QueueStats>,
    ) {
        self.queue_stats.write().insert(id.to_owned(), stats);
    }

    pub fn team(&self, id: &str) -> Option<ActorRef<TeamMsg>> {
        self.directory.team(id)
    }
}

/// Moves the `switchboard_conversations{status,team}` gauge for a state change.
pub fn count_change(before: Option<&Conversation>, after: &Conversation) {
    if let Some(b) = before {
        if b.status == after.status && b.team() == after.team() {
            return;
        }
        metrics::gauge!(m::CONVERSATIONS, "status" => b.status.as_str(), "team" => b.team().to_string())
            .decrement(1.0);
    }
    metrics::gauge!(m::CONVERSATIONS, "status" => after.status.as_str(), "team" => after.team().to_string())
        .increment(1.0);
}
