//! One actor per agent: presence and capacity.
//!
//! Capacity is checked and taken in one message ([`AgentMsg::Reserve`]), so two conversations
//! claimed by the same agent at the same moment cannot both slip under `max_concurrent`. The set of
//! owned conversations is rebuilt from the assignee index when the actor starts, so it survives
//! restarts; presence does not (agents are `offline` until they say otherwise).

use std::collections::HashSet;
use std::sync::Weak;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{Ctx, TeamMsg};

use crate::domain::Presence;
use crate::store::Store;

pub struct AgentActor;

pub struct Args {
    pub id: String,
    pub max_concurrent: u32,
    pub teams: Vec<String>,
    pub store: Store,
}

pub struct State {
    id: String,
    max: usize,
    teams: Vec<String>,
    presence: Presence,
    owned: HashSet<String>,
    ctx: Weak<Ctx>,
}

impl State {
    /// Asks each owned conversation to go back to its queue (auto-assigning teams only). Runs
    /// detached: conversation actors call this actor (capacity), so it must never wait on them.
    fn hand_back(&self, reason: &'static str) {
        let Some(ctx) = self.ctx.upgrade() else {
            return;
        };
        let from = self.id.clone();
        let owned: Vec<String> = self.owned.iter().cloned().collect();
        tokio::spawn(async move {
            for conv in owned {
                let res = ctx
                    .ask(&conv, None, |reply| super::ConversationMsg::Reassign {
                        from: from.clone(),
                        reason: reason.to_string(),
                        reply,
                    })
                    .await;
                if let Err(e) = res {
                    tracing::warn!(conversation = %conv, error = %e, "could not hand back conversation");
                }
            }
        });
    }

    /// Tells the agent's teams it may take work now (came online or freed a slot).
    fn announce_available(&self) {
        if self.presence != Presence::Online || self.owned.len() >= self.max {
            return;
        }
        if let Some(ctx) = self.ctx.upgrade() {
            for t in &self.teams {
                if let Some(team) = ctx.team(t) {
                    let _ = team.cast(TeamMsg::Assign);
                }
            }
        }
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentSnapshot {
    pub id: String,
    pub presence: Presence,
    pub owned: usize,
    pub max_concurrent: usize,
}

pub enum AgentMsg {
    /// Gives the actor the shared context once it exists (agents start before it).
    Attach(Weak<Ctx>),
    /// Takes a slot for `conversation` if below capacity (idempotent per conversation); with
    /// `online_only` (automatic assignment) only while the agent is online, so an assignment
    /// racing the agent going offline either lands before the hand-back or not at all.
    Reserve {
        conversation: String,
        online_only: bool,
        reply: RpcReplyPort<bool>,
    },
    /// Gives a slot back.
    Free {
        conversation: String,
    },
    SetPresence {
        presence: Presence,
        reply: RpcReplyPort<Presence>,
    },
    Get {
        reply: RpcReplyPort<AgentSnapshot>,
    },
}

impl Actor for AgentActor {
    type Msg = AgentMsg;
    type State = State;
    type Arguments = Args;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Args,
    ) -> Result<State, ActorProcessingErr> {
        let owned = args.store.owned_by(&args.id).await?.into_iter().collect();
        Ok(State {
            id: args.id,
            max: args.max_concurrent as usize,
            teams: args.teams,
            presence: Presence::Offline,
            owned,
            ctx: Weak::new(),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: AgentMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Reserve {
                conversation,
                online_only,
                reply,
            } => {
                let ok = (!online_only || state.presence == Presence::Online)
                    && (state.owned.contains(&conversation) || state.owned.len() < state.max);
                if ok {
                    state.owned.insert(conversation);
                }
                let _ = reply.send(ok);
            }
            AgentMsg::Attach(ctx) => state.ctx = ctx,
            AgentMsg::Free { conversation } => {
                if state.owned.remove(&conversation) {
                    state.announce_available();
                }
            }
            AgentMsg::SetPresence { presence, reply } => {
                let went_offline =
                    presence == Presence::Offline && state.presence != Presence::Offline;
                state.presence = presence;
                let _ = reply.send(presence);
                state.announce_available();
                if went_offline {
                    state.hand_back("assignee went offline");
                }
            }
            AgentMsg::Get { reply } => {
                let _ = reply.send(AgentSnapshot {
                    id: state.id.clone(),
                    presence: state.presence,
                    owned: state.owned.len(),
                    max_concurrent: state.max,
                });
            }
        }
        Ok(())
    }
}
