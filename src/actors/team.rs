//! One actor per team: the queue of conversations waiting for an agent.
//!
//! Order is priority (urgent first), then the time a conversation entered the queue (oldest
//! first), then arrival ([`WaitingLine`], which costs no allocation per waiting conversation).
//! Conversation actors tell the team when one enters or leaves; the queue is rebuilt from the
//! status index at the first `Assign`, which app.rs sends once the broker is wired (in the
//! background of start-up), so it survives restarts. Reads (`Snapshot`) give supervisors depth
//! and oldest wait.
//!
//! Assignment (teams with `assignment = "round_robin" | "least_loaded"`): whenever a conversation
//! is queued or an agent of the team becomes available (comes online, frees a slot), the team
//! hands its oldest waiting conversations to online agents below `max_concurrent`, by claiming
//! them on the agent's behalf through the conversation actor — the same single-writer path as a
//! manual claim, so an automatic assignment can never race a manual one into two owners. Agents
//! who are not `online` are never chosen. `manual` teams only queue. The policy is read from the
//! policies in force at each pass, so an admin's change applies to the next assignment; the
//! choice itself is [`crate::domain::assignment::pick`].
//!
//! The mailbox never waits: availability is read from the agents' shared [`super::agent::Slots`]
//! (as conversation actors read it), and each claim runs on a task of its own that reports back
//! with [`TeamMsg::Assigned`], so `/next`, the queue view and new arrivals are never queued
//! behind a pass. Claims in flight count towards their agent's load until they report, and at
//! most [`MAX_CLAIMS_IN_FLIGHT`] run per team. Depth and oldest wait are published through a
//! `watch` channel after every change ([`QueueStats`]), so a `/metrics` scrape reads them
//! without touching the mailbox.

use std::collections::HashMap;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use super::agent::AllSlots;
use super::ports::{ActivePolicies, Conversations};
use super::{ConversationMsg, Ctx};
use crate::domain::assignment::{pick, Candidate, Rotation};
use crate::domain::queue::WaitingLine;
use crate::domain::{Assignment, Role};
use crate::domain::{Caller, ConversationStatus, DomainError, Millis, Presence, Priority};
use crate::error::Error;
use crate::store::Store;

/// Claims a team runs at once for automatic assignment (each on a task of its own); more wait
/// in the queue for the next pass, which every reported claim starts.
pub const MAX_CLAIMS_IN_FLIGHT: usize = 32;

pub struct TeamActor;

/// A team's members, in the order agents were created (the config's for seeded ones; round
/// robin follows it). Shared with the people roster, which changes it at run time, and kept by
/// the guardian's restart arguments, so a restarted team has the current members.
pub type Members = Arc<parking_lot::RwLock<Vec<String>>>;

#[derive(Clone)]
pub struct Args {
    pub id: String,
    pub members: Members,
    /// Every agent's capacity, shared with their actors and conversations.
    pub slots: AllSlots,
    pub store: Store,
    /// Where the queue's depth and oldest wait are published after every change.
    pub stats: watch::Sender<QueueStats>,
    /// The assignment policy is read here at each pass.
    pub policies: Arc<ActivePolicies>,
    /// Where automatic claims go.
    pub conversations: Conversations,
}

pub struct State {
    id: String,
    members: Members,
    slots: AllSlots,
    /// Who waits, in serving order (see [`WaitingLine`]).
    line: WaitingLine,
    policies: Arc<ActivePolicies>,
    conversations: Conversations,
    /// What the assignment policies remember between choices.
    rotation: Rotation,
    /// Automatic claims on their way, per agent (they count towards its load until reported).
    claiming: HashMap<String, usize>,
    /// Until the queue is rebuilt from storage (at the first `Assign`), the store to rebuild it
    /// from.
    store: Option<crate::store::Store>,
    stats: watch::Sender<QueueStats>,
}

impl State {
    fn claims_in_flight(&self) -> usize {
        self.claiming.values().sum()
    }

    /// Publishes depth and oldest wait if they changed.
    fn publish(&self) {
        let now = QueueStats {
            depth: self.line.len(),
            oldest_queued_at: self.line.oldest(),
        };
        self.stats.send_if_modified(|s| {
            let changed = *s != now;
            *s = now;
            changed
        });
    }
}

/// Rebuilds the queue from the status index. It runs at the first `Assign` (app.rs sends one to
/// every team once the broker is wired; the guardian to a team it restarted), not in
/// `pre_start`, so start-up (and `/healthz`, and webhooks) never wait for a scan proportional
/// to the number of waiting conversations; commands that arrive meanwhile wait in the mailbox and apply on top of the
/// scan, which is safe because every queue command is idempotent (enqueue replaces, remove of an
/// absent conversation is a no-op) and each is sent after the change it reports was committed.
/// A failed scan is logged and retried at the next `Assign`.
async fn load_queue(state: &mut State) {
    let Some(store) = state.store.take() else {
        return;
    };
    let line = &mut state.line;
    let scan = store.scan_status(ConversationStatus::Queued, &state.id, |queued| {
        for c in queued {
            line.enqueue(&c.id, c.queued_at, c.priority(), None);
        }
    });
    if let Err(e) = scan.await {
        tracing::error!(team = %state.id, error = %e, "cannot rebuild the queue; retrying at the next assignment");
        state.store = Some(store);
    }
}

/// A team's queue as supervisors see it.
#[derive(Debug, Clone)]
pub struct QueueSnapshot {
    pub depth: usize,
    pub oldest_queued_at: Option<Millis>,
    /// Oldest first, at most the requested number.
    pub conversations: Vec<String>,
}

/// A team queue's depth and oldest wait, as published after every change (gauges read these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub depth: usize,
    pub oldest_queued_at: Option<Millis>,
}

/// How an automatic claim ended, as its task reports it.
#[derive(Debug)]
pub enum Claimed {
    /// The agent owns it now.
    Won,
    /// The agent filled up meanwhile: it waits again.
    Full,
    /// Claimed by someone or moved since it was queued: it no longer waits here.
    Gone,
    /// Storage or the actor failed: it waits again, for the next pass.
    Failed,
}

pub enum TeamMsg {
    /// Hand waiting conversations to available agents (no-op for `manual` teams); the first one
    /// rebuilds the queue from storage.
    Assign,
    Enqueue {
        conversation: String,
        at: Millis,
        priority: Priority,
        /// The agent it was just taken from (never handed straight back to them).
        avoid: Option<String>,
    },
    Remove {
        conversation: String,
    },
    /// Takes the oldest waiting conversation off the queue (for `POST /teams/{id}/next`): one
    /// message, so two callers can never be handed the same conversation.
    Pop {
        reply: RpcReplyPort<Option<(String, Millis, Priority)>>,
    },
    Snapshot {
        limit: usize,
        reply: RpcReplyPort<QueueSnapshot>,
    },
    /// Fault injection for the supervision tests: the handler panics (nothing else sends it).
    Crash,
    /// An automatic claim's task reports how it ended.
    Assigned {
        conversation: String,
        agent: String,
        at: Millis,
        priority: Priority,
        avoid: Option<String>,
        outcome: Claimed,
    },
}

impl Actor for TeamActor {
    type Msg = TeamMsg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Args,
    ) -> Result<State, ActorProcessingErr> {
        let state = State {
            id: args.id.clone(),
            members: args.members,
            slots: args.slots,
            line: WaitingLine::default(),
            policies: args.policies,
            conversations: args.conversations,
            rotation: Rotation::default(),
            claiming: HashMap::new(),
            store: Some(args.store),
            stats: args.stats,
        };
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: TeamMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TeamMsg::Assign => {
                load_queue(state).await;
                assign(state, &myself)
            }
            TeamMsg::Enqueue {
                conversation,
                at,
                priority,
                avoid,
            } => {
                state.line.enqueue(&conversation, at, priority, avoid);
                assign(state, &myself);
            }
            TeamMsg::Remove { conversation } => state.line.remove(&conversation),
            TeamMsg::Pop { reply } => {
                let _ = reply.send(state.line.pop().map(|(id, at, p, _)| (id, at, p)));
            }
            TeamMsg::Snapshot { limit, reply } => {
                let _ = reply.send(QueueSnapshot {
                    depth: state.line.len(),
                    oldest_queued_at: state.line.oldest(),
                    conversations: state.line.iter().take(limit).collect(),
                });
            }
            TeamMsg::Crash => panic!("injected failure of team {}", state.id),
            TeamMsg::Assigned {
                conversation,
                agent,
                at,
                priority,
                avoid,
                outcome,
            } => {
                if let Some(n) = state.claiming.get_mut(&agent) {
                    *n = n.saturating_sub(1);
                }
                state.claiming.retain(|_, n| *n > 0);
                match outcome {
                    Claimed::Won => {
                        state.rotation.assigned(&agent);
                        metrics::counter!(crate::metrics::ASSIGNMENTS, "team" => state.id.clone(), "reason" => "auto").increment(1);
                        assign(state, &myself);
                    }
                    Claimed::Full => {
                        state.line.enqueue(&conversation, at, priority, avoid);
                        assign(state, &myself);
                    }
                    Claimed::Gone => assign(state, &myself),
                    // Waits for the next pass (a new arrival, an agent freeing a slot), so a
                    // failing store is not retried in a tight loop.
                    Claimed::Failed => state.line.enqueue(&conversation, at, priority, avoid),
                }
            }
        }
        state.publish();
        Ok(())
    }
}

/// The members who can take a conversation now: online, below capacity once the claims on
/// their way are counted. Read from the shared slots, without asking any actor.
fn candidates(state: &State, members: &[String]) -> Vec<Candidate> {
    let slots = state.slots.read();
    members
        .iter()
        .filter_map(|id| {
            let slots = slots.get(id)?;
            let a = slots.snapshot(id);
            let owned = a.owned + state.claiming.get(id).copied().unwrap_or(0);
            (a.presence == Presence::Online && owned < a.max_concurrent)
                .then_some(Candidate { id: a.id, owned })
        })
        .collect()
}

/// Hands waiting conversations to available agents until one of the two runs out or
/// [`MAX_CLAIMS_IN_FLIGHT`] claims are on their way; each claim runs on its own task and
/// reports back. Never waits. Bounded: at most one pass over the queue plus one skip per member.
fn assign(state: &mut State, myself: &ActorRef<TeamMsg>) {
    if state.line.is_empty() {
        return;
    }
    if !state.conversations.is_live() {
        return; // not wired yet, or shutting down
    }
    let assignment = state.policies.get().assignment(&state.id);
    if assignment == Assignment::Manual {
        return;
    }
    // A snapshot: the roster may change the members meanwhile; the next pass sees that.
    let members = state.members.read().clone();
    let mut budget = state.line.len() + members.len();
    while budget > 0 && !state.line.is_empty() && state.claims_in_flight() < MAX_CLAIMS_IN_FLIGHT {
        budget -= 1;
        let mut available = candidates(state, &members);
        if available.is_empty() {
            break;
        }
        let Some((conv, at, priority, avoid)) = state.line.pop() else {
            break;
        };
        // A conversation taken from an agent (who went offline, or did not answer within
        // `reassign_after`) goes to someone else when anyone else can take it, and back to that
        // agent otherwise: a one-agent team, or an agent who is the only one back online, must
        // not leave it waiting for nobody.
        if available.iter().any(|c| Some(&c.id) != avoid.as_ref()) {
            available.retain(|c| Some(&c.id) != avoid.as_ref());
        }
        let Some(agent) = pick(assignment, &members, &available, &mut state.rotation) else {
            state.line.enqueue(&conv, at, priority, avoid);
            break;
        };
        *state.claiming.entry(agent.clone()).or_insert(0) += 1;
        let caller = Caller {
            id: agent.clone(),
            role: Role::Agent,
            teams: vec![state.id.clone()],
        };
        let conversations = state.conversations.clone();
        let (myself, team) = (myself.clone(), state.id.clone());
        tokio::spawn(async move {
            let result = conversations
                .ask(&conv, |reply| ConversationMsg::Assign {
                    agent: caller.clone(),
                    reply,
                })
                .await;
            let outcome = match result {
                Ok(_) => Claimed::Won,
                Err(Error::Domain(DomainError::CapacityReached)) => Claimed::Full,
                Err(Error::Domain(_)) => Claimed::Gone,
                Err(e) => {
                    tracing::warn!(%team, conversation = %conv, error = %e, "assignment failed; will retry");
                    Claimed::Failed
                }
            };
            // A team that stopped meanwhile rebuilds its queue from storage when it starts.
            let _ = myself.cast(TeamMsg::Assigned {
                conversation: conv,
                agent,
                at,
                priority,
                avoid,
                outcome,
            });
        });
    }
}

/// Sets the queue depth and oldest-wait gauges of every team from what each team last
/// published (called when /metrics is scraped, so the wait is current rather than as old as
/// the last queue change). Touches no mailbox.
pub fn publish_gauges(ctx: &Ctx) {
    let now = ctx.now();
    for (id, stats) in ctx.queue_stats() {
        let q = *stats.borrow();
        let wait = q
            .oldest_queued_at
            .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
        metrics::gauge!(crate::metrics::QUEUE_DEPTH, "team" => id.clone()).set(q.depth as f64);
        metrics::gauge!(crate::metrics::QUEUE_OLDEST_WAIT, "team" => id.clone()).set(wait);
    }
}
