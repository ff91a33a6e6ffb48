//! One actor per team: the queue of conversations waiting for an agent.
//!
//! Order is the time a conversation entered the queue (oldest first). Conversation actors tell the
//! team when one enters or leaves; the queue is rebuilt from the status index when the actor
//! starts, so it survives restarts. Reads (`Snapshot`) give supervisors depth and oldest wait.

use std::collections::{BTreeSet, HashMap};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::domain::{ConversationStatus, Millis};
use crate::store::{ListQuery, Store};

pub struct TeamActor;

pub struct Args {
    pub id: String,
    pub store: Store,
}

#[derive(Default)]
pub struct State {
    order: BTreeSet<(Millis, String)>,
    since: HashMap<String, Millis>,
}

impl State {
    fn enqueue(&mut self, id: String, at: Millis) {
        self.remove(&id);
        self.order.insert((at, id.clone()));
        self.since.insert(id, at);
    }

    fn remove(&mut self, id: &str) {
        if let Some(at) = self.since.remove(id) {
            self.order.remove(&(at, id.to_string()));
        }
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
    Enqueue {
        conversation: String,
        at: Millis,
    },
    Remove {
        conversation: String,
    },
    /// Takes the oldest waiting conversation off the queue (for `POST /teams/{id}/next`): one
    /// message, so two callers can never be handed the same conversation.
    Pop {
        reply: RpcReplyPort<Option<(String, Millis)>>,
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
        let mut state = State::default();
        let queued = args
            .store
            .list(
                ListQuery::Status {
                    status: ConversationStatus::Queued,
                    team: Some(args.id.clone()),
                },
                usize::MAX,
            )
            .await?;
        for c in queued {
            state.enqueue(c.id, c.queued_at);
        }
        Ok(state)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: TeamMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TeamMsg::Enqueue { conversation, at } => state.enqueue(conversation, at),
            TeamMsg::Remove { conversation } => state.remove(&conversation),
            TeamMsg::Pop { reply } => {
                let next = state.order.pop_first().map(|(at, id)| {
                    state.since.remove(&id);
                    (id, at)
                });
                let _ = reply.send(next);
            }
            TeamMsg::Snapshot { limit, reply } => {
                let _ = reply.send(QueueSnapshot {
                    depth: state.order.len(),
                    oldest_queued_at: state.order.first().map(|(at, _)| *at),
                    conversations: state
                        .order
                        .iter()
                        .take(limit)
                        .map(|(_, id)| id.clone())
                        .collect(),
                });
            }
        }
        Ok(())
    }
}
