//! One actor per team: the queue of conversations waiting for an agent.
//!
//! Order is priority (urgent first), then the time a conversation entered the queue (oldest
//! first), then arrival ([`WaitingLine`], which costs no allocation per waiting conversation).
//! Conversation actors tell the team when one enters or leaves; the queue is rebuilt from the
//! status index once the broker is wired (`Attach`, in the background of start-up), so it
//! survives restarts. Reads (`Snapshot`) give supervisors depth and oldest wait.
//!
//! Assignment (teams with `assignment = "round_robin" | "least_loaded"`): whenever a conversation
//! is queued or an agent of the team becomes available (comes online, frees a slot), the team
//! hands its oldest waiting conversations to online agents below `max_concurrent`, by claiming
//! them on the agent's behalf through the conversation actor — the same single-writer path as a
//! manual claim, so an automatic assignment can never race a manual one into two owners. Agents
//! who are not `online` are never chosen. `manual` teams only queue. The policy is read from the
//! policies in force at each pass, so an admin's change applies to the next assignment.

use std::collections::HashMap;
use std::sync::Weak;

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{AgentMsg, ConversationMsg, Ctx, CALL_TIMEOUT};
use crate::domain::queue::WaitingLine;
use crate::domain::{Assignment, Role};
use crate::domain::{Caller, ConversationStatus, DomainError, Millis, Presence, Priority};
use crate::error::Error;
use crate::store::Store;

pub struct TeamActor;

pub struct Args {
    pub id: String,
    /// Agents of the team, in config order (round robin follows it).
    pub members: Vec<String>,
    pub store: Store,
}

pub struct State {
    id: String,
    members: Vec<String>,
    /// Who waits, in serving order (see [`WaitingLine`]).
    line: WaitingLine,
    ctx: Weak<Ctx>,
    /// Round robin: index in `members` of the next agent to try.
    cursor: usize,
    /// Least loaded: when each agent was last given a conversation (ties go to the longest idle).
    last_assigned: HashMap<String, u64>,
    assignments: u64,
    /// Until the queue is rebuilt from storage (at `Attach`), the store to rebuild it from.
    store: Option<crate::store::Store>,
}

/// Rebuilds the queue from the status index. It runs at `Attach`, not in `pre_start`, so start-up
/// (and `/healthz`, and webhooks) never wait for a scan proportional to the number of waiting
/// conversations; commands that arrive meanwhile wait in the mailbox and apply on top of the
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

pub enum TeamMsg {
    /// Gives the actor the shared context once it exists (teams start before it).
    Attach(Weak<Ctx>),
    /// Hand waiting conversations to available agents (no-op for `manual` teams).
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
            line: WaitingLine::default(),
            ctx: Weak::new(),
            cursor: 0,
            last_assigned: HashMap::new(),
            assignments: 0,
            store: Some(args.store),
        };
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: TeamMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TeamMsg::Attach(ctx) => {
                state.ctx = ctx;
                load_queue(state).await;
                assign(state).await;
            }
            TeamMsg::Assign => {
                load_queue(state).await;
                assign(state).await
            }
            TeamMsg::Enqueue {
                conversation,
                at,
                priority,
                avoid,
            } => {
                state.line.enqueue(&conversation, at, priority, avoid);
                assign(state).await;
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
        }
        Ok(())
    }
}

/// An agent's availability as the team sees it.
struct Candidate {
    id: String,
    owned: usize,
}

async fn candidates(ctx: &Ctx, members: &[String]) -> Vec<Candidate> {
    let mut out = Vec::new();
    for id in members {
        let Some(agent) = ctx.agent(id) else { continue };
        if let Ok(CallResult::Success(a)) = agent
            .call(|reply| AgentMsg::Get { reply }, Some(CALL_TIMEOUT))
            .await
        {
            if a.presence == Presence::Online && a.owned < a.max_concurrent {
                out.push(Candidate {
                    id: a.id,
                    owned: a.owned,
                });
            }
        }
    }
    out
}

/// Picks the agent for the next conversation according to the team's policy.
fn pick(state: &mut State, assignment: Assignment, available: &[Candidate]) -> Option<String> {
    match assignment {
        Assignment::Manual => None,
        Assignment::LeastLoaded => available
            .iter()
            .min_by_key(|c| {
                (
                    c.owned,
                    state.last_assigned.get(&c.id).copied().unwrap_or(0),
                )
            })
            .map(|c| c.id.clone()),
        Assignment::RoundRobin => {
            let n = state.members.len();
            (0..n).find_map(|i| {
                let idx = (state.cursor + i) % n;
                let id = &state.members[idx];
                available.iter().any(|c| &c.id == id).then(|| {
                    state.cursor = (idx + 1) % n;
                    id.clone()
                })
            })
        }
    }
}

/// Hands waiting conversations to available agents until one of the two runs out. Bounded: at
/// most one pass over the queue plus one skip per member.
async fn assign(state: &mut State) {
    if state.line.is_empty() {
        return;
    }
    let Some(ctx) = state.ctx.upgrade() else {
        return;
    };
    let assignment = ctx.policies().assignment(&state.id);
    if assignment == Assignment::Manual {
        return;
    }
    let mut budget = state.line.len() + state.members.len();
    while budget > 0 && !state.line.is_empty() {
        budget -= 1;
        let mut available = candidates(&ctx, &state.members).await;
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
        let Some(agent) = pick(state, assignment, &available) else {
            state.line.enqueue(&conv, at, priority, avoid);
            break;
        };
        let caller = Caller {
            id: agent.clone(),
            role: Role::Agent,
            teams: vec![state.id.clone()],
        };
        let result = ctx
            .ask(&conv, None, |reply| ConversationMsg::Assign {
                agent: caller.clone(),
                reply,
            })
            .await;
        match result {
            Ok(_) => {
                state.assignments += 1;
                state.last_assigned.insert(agent, state.assignments);
                metrics::counter!(crate::metrics::ASSIGNMENTS, "team" => state.id.clone(), "reason" => "auto").increment(1);
            }
            // The agent filled up meanwhile: keep the conversation, try again with fresh loads.
            Err(Error::Domain(DomainError::CapacityReached)) => {
                state.line.enqueue(&conv, at, priority, avoid)
            }
            // Claimed by someone or moved since it was queued: it is no longer waiting here.
            Err(Error::Domain(_)) => {}
            Err(e) => {
                tracing::warn!(team = %state.id, conversation = %conv, error = %e, "assignment failed; will retry");
                state.line.enqueue(&conv, at, priority, avoid);
                break;
            }
        }
    }
}

/// Sets the queue depth and oldest-wait gauges of every team (called when /metrics is scraped,
/// so the wait is current rather than as old as the last queue change).
pub async fn publish_gauges(ctx: &Ctx) {
    let now = ctx.now();
    for (id, team) in &ctx.teams {
        if let Ok(CallResult::Success(q)) = team
            .call(
                |reply| TeamMsg::Snapshot { limit: 0, reply },
                Some(CALL_TIMEOUT),
            )
            .await
        {
            let wait = q
                .oldest_queued_at
                .map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            metrics::gauge!(crate::metrics::QUEUE_DEPTH, "team" => id.clone()).set(q.depth as f64);
            metrics::gauge!(crate::metrics::QUEUE_OLDEST_WAIT, "team" => id.clone()).set(wait);
        }
    }
}
