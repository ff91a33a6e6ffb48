//! One actor per agent: presence and capacity.
//!
//! Capacity lives in [`Slots`], shared by the actor and every conversation actor: a claim checks
//! and takes a slot in one short critical section ([`Slots::reserve`]), so two conversations
//! claimed by the same agent at the same moment cannot both slip under `max_concurrent`, and the
//! claim path needs no round trip through this actor's mailbox. The actor stays the one place
//! that reacts to changes: presence set by the agent, a slot freed (tell the teams), going
//! offline (hand conversations back). The set of owned conversations is rebuilt from the
//! assignee index when the actor starts, so it survives restarts; presence does not (agents are
//! `offline` until they say otherwise).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::ports::{Conversations, Directory};
use super::TeamMsg;

use crate::domain::Presence;
use crate::store::Store;

/// An agent's presence and owned conversations, behind one lock that is never held across an
/// `.await` (every method is synchronous).
pub struct Slots {
    /// `max_concurrent`; an admin may change it at run time (a lower value takes nothing away,
    /// it only refuses new claims until the agent is below it).
    max: AtomicUsize,
    inner: parking_lot::Mutex<SlotsInner>,
}

struct SlotsInner {
    presence: Presence,
    owned: HashSet<String>,
}

impl Slots {
    pub fn new(max_concurrent: u32) -> Self {
        Self {
            max: AtomicUsize::new(max_concurrent as usize),
            inner: parking_lot::Mutex::new(SlotsInner {
                presence: Presence::Offline,
                owned: HashSet::new(),
            }),
        }
    }

    /// Takes a slot for `conversation` if below capacity (idempotent per conversation); with
    /// `online_only` (automatic assignment) only while the agent is online, so an assignment
    /// racing the agent going offline either lands before the hand-back (which reads the owned
    /// set after presence changed) or not at all.
    pub fn reserve(&self, conversation: &str, online_only: bool) -> bool {
        let mut g = self.inner.lock();
        if online_only && g.presence != Presence::Online {
            return false;
        }
        if g.owned.contains(conversation) {
            return true;
        }
        if g.owned.len() >= self.max() {
            return false;
        }
        g.owned.insert(conversation.to_string());
        true
    }

    /// Gives a slot back; whether it was taken.
    pub fn free(&self, conversation: &str) -> bool {
        self.inner.lock().owned.remove(conversation)
    }

    /// Whether the agent is online with a free slot.
    fn available(&self) -> bool {
        let g = self.inner.lock();
        g.presence == Presence::Online && g.owned.len() < self.max()
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }

    /// Sets `max_concurrent` (an admin's change).
    pub fn set_max(&self, max_concurrent: u32) {
        self.max.store(max_concurrent as usize, Ordering::Relaxed);
    }

    /// Sets presence; returns the previous one.
    fn set_presence(&self, presence: Presence) -> Presence {
        std::mem::replace(&mut self.inner.lock().presence, presence)
    }

    fn owned(&self) -> Vec<String> {
        self.inner.lock().owned.iter().cloned().collect()
    }

    fn load(&self, owned: Vec<String>) {
        self.inner.lock().owned = owned.into_iter().collect();
    }

    /// The agent's presence and load now.
    pub fn snapshot(&self, id: &str) -> AgentSnapshot {
        let g = self.inner.lock();
        AgentSnapshot {
            id: id.to_string(),
            presence: g.presence,
            owned: g.owned.len(),
            max_concurrent: self.max(),
        }
    }
}

pub struct AgentActor;

/// Every agent's [`Slots`] by id, shared by the teams (which read their members' availability),
/// the conversations (which reserve and free slots) and the people roster, which adds an agent
/// created at run time.
pub type AllSlots = Arc<parking_lot::RwLock<HashMap<String, Arc<Slots>>>>;

/// An agent's teams, shared with the people roster that changes them at run time (and kept by
/// the guardian's restart arguments, so a restarted actor has the current ones).
pub type Teams = Arc<parking_lot::RwLock<Vec<String>>>;

#[derive(Clone)]
pub struct Args {
    pub id: String,
    pub slots: Arc<Slots>,
    pub teams: Teams,
    pub store: Store,
    /// Where its teams are (told when the agent becomes available).
    pub directory: Arc<Directory>,
    /// Its conversations (asked to go back to their queue when the agent goes offline).
    pub conversations: Conversations,
}

pub struct State {
    id: String,
    slots: Arc<Slots>,
    teams: Teams,
    directory: Arc<Directory>,
    conversations: Conversations,
}

impl State {
    /// Asks each owned conversation to go back to its queue (auto-assigning teams only). Runs
    /// detached: conversation actors call this actor (capacity), so it must never wait on them.
    fn hand_back(&self, reason: &'static str, disabled: bool) {
        if !self.conversations.is_live() {
            return;
        }
        let conversations = self.conversations.clone();
        let from = self.id.clone();
        let owned = self.slots.owned();
        tokio::spawn(async move {
            for conv in owned {
                let res = conversations
                    .ask(&conv, |reply| super::ConversationMsg::Reassign {
                        from: from.clone(),
                        reason: reason.to_string(),
                        disabled,
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
        if !self.slots.available() {
            return;
        }
        if !self.conversations.is_live() {
            return; // not wired yet, or shutting down: no team assigns then
        }
        let teams = self.teams.read().clone();
        for t in &teams {
            if let Some(team) = self.directory.team(t) {
                let _ = team.cast(TeamMsg::Assign);
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
    /// A slot was given back ([`Slots::free`]): the teams may assign again.
    Freed,
    SetPresence {
        presence: Presence,
        reply: RpcReplyPort<Presence>,
    },
    Get {
        reply: RpcReplyPort<AgentSnapshot>,
    },
    /// The agent was disabled: offline, and everything it owns goes back to its team's queue
    /// (whatever the team's assignment policy). Answers once the hand-back has started.
    Disable {
        reply: RpcReplyPort<()>,
    },
    /// Fault injection for the supervision tests: the handler panics (nothing else sends it).
    Crash,
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
        args.slots.load(args.store.owned_by(&args.id).await?);
        Ok(State {
            id: args.id,
            slots: args.slots,
            teams: args.teams,
            directory: args.directory,
            conversations: args.conversations,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: AgentMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AgentMsg::Freed => state.announce_available(),
            AgentMsg::SetPresence { presence, reply } => {
                let before = state.slots.set_presence(presence);
                let went_offline = presence == Presence::Offline && before != Presence::Offline;
                let _ = reply.send(presence);
                state.announce_available();
                if went_offline {
                    state.hand_back("assignee went offline", false);
                }
            }
            AgentMsg::Disable { reply } => {
                state.slots.set_presence(Presence::Offline);
                state.hand_back("agent disabled", true);
                let _ = reply.send(());
            }
            AgentMsg::Get { reply } => {
                let _ = reply.send(state.slots.snapshot(&state.id));
            }
            AgentMsg::Crash => panic!("injected failure of agent {}", state.id),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_capacity_and_presence_together() {
        let slots = Slots::new(2);
        assert!(
            !slots.reserve("c1", true),
            "offline: no automatic assignment"
        );
        assert!(
            slots.reserve("c1", false),
            "a manual claim needs no presence"
        );
        assert!(slots.reserve("c1", false), "idempotent per conversation");
        assert_eq!(slots.set_presence(Presence::Online), Presence::Offline);
        assert!(slots.available());
        assert!(slots.reserve("c2", true));
        assert!(!slots.available());
        assert!(!slots.reserve("c3", false), "at capacity");
        assert!(slots.reserve("c2", true), "already held");
        assert!(slots.free("c1"));
        assert!(!slots.free("c1"), "freed once");
        assert!(slots.reserve("c3", true));
        let snap = slots.snapshot("a");
        assert_eq!((snap.owned, snap.max_concurrent), (2, 2));
    }
}
