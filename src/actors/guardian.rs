//! The supervisor of the agent and team actors: restarts one that fails and rebuilds its state
//! from storage.
//!
//! Agent and team actors are ractor actors spawned linked to the guardian, so a panic in a
//! handler reaches [`Guardian`]'s `handle_supervisor_evt` instead of silently losing the team
//! (and every cast to it) until the process restarts. A failed child is spawned again with the
//! arguments it first started with: an agent reloads the conversations it owns from the assignee
//! index into its shared slots (presence survives: the slots are shared, not the actor's), a team
//! rebuilds its queue from the status index at the `Assign` the guardian sends it. The
//! [`Directory`] (which the guardian fills as it first spawns them) then points at the new
//! actor. Restarts are counted in `switchboard_supervised_restarts_total{kind}`.
//!
//! Only a failure restarts a child: an actor stopped on purpose (shutdown) stays stopped.
//!
//! Bounds: a child that failed [`MAX_RESTARTS`] times within [`RESTART_WINDOW`] is not restarted
//! again (logged as an error), so a handler that fails on every message cannot spin.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::ports::Directory;
use super::{agent, team, AgentActor, AgentMsg, TeamActor, TeamMsg};
use crate::metrics as m;

/// Restarts of one child allowed within [`RESTART_WINDOW`].
pub const MAX_RESTARTS: usize = 5;
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// What a child is, and the arguments it starts (and restarts) with.
pub enum Child {
    Agent(agent::Args),
    Team(team::Args),
}

impl Child {
    fn kind(&self) -> &'static str {
        match self {
            Child::Agent(_) => "agent",
            Child::Team(_) => "team",
        }
    }

    fn id(&self) -> &str {
        match self {
            Child::Agent(a) => &a.id,
            Child::Team(t) => &t.id,
        }
    }
}

pub struct Guardian;

/// A child with its restart history.
pub struct Watched {
    child: Child,
    /// When it was restarted lately (within [`RESTART_WINDOW`]).
    restarts: VecDeque<Instant>,
}

pub struct State {
    children: HashMap<ActorId, Watched>,
    directory: Arc<Directory>,
}

pub enum GuardianMsg {
    /// The children [`Guardian::start`] spawned, by actor id.
    Watch(HashMap<ActorId, Watched>),
}

impl Guardian {
    /// Starts the guardian and, linked to it, the actor of every agent and team given, each
    /// entered in `directory`.
    pub async fn start(
        agents: Vec<agent::Args>,
        teams: Vec<team::Args>,
        directory: Arc<Directory>,
    ) -> Result<ActorRef<GuardianMsg>, ractor::SpawnErr> {
        let children = agents
            .into_iter()
            .map(Child::Agent)
            .chain(teams.into_iter().map(Child::Team))
            .collect::<Vec<_>>();
        let (guardian, _) = Actor::spawn(None, Guardian, directory.clone()).await?;
        let mut watched = HashMap::new();
        for child in children {
            let id = match &child {
                Child::Agent(args) => {
                    let (r, _) =
                        Actor::spawn_linked(None, AgentActor, args.clone(), guardian.get_cell())
                            .await?;
                    directory.set_agent(&args.id, r.clone());
                    r.get_id()
                }
                Child::Team(args) => {
                    let (r, _) =
                        Actor::spawn_linked(None, TeamActor, args.clone(), guardian.get_cell())
                            .await?;
                    directory.set_team(&args.id, r.clone());
                    r.get_id()
                }
            };
            watched.insert(
                id,
                Watched {
                    child,
                    restarts: VecDeque::new(),
                },
            );
        }
        let _ = guardian.cast(GuardianMsg::Watch(watched));
        Ok(guardian)
    }
}

/// Starts one more child linked to the guardian (an agent or team created at run time) and has
/// the guardian watch it like those it started with.
pub async fn adopt_agent(
    guardian: &ActorRef<GuardianMsg>,
    args: agent::Args,
) -> Result<ActorRef<AgentMsg>, ractor::SpawnErr> {
    let (r, _) = Actor::spawn_linked(None, AgentActor, args.clone(), guardian.get_cell()).await?;
    watch(guardian, r.get_id(), Child::Agent(args));
    Ok(r)
}

/// As [`adopt_agent`], for a team (its first `Assign`, sent by the caller, rebuilds its queue).
pub async fn adopt_team(
    guardian: &ActorRef<GuardianMsg>,
    args: team::Args,
) -> Result<ActorRef<TeamMsg>, ractor::SpawnErr> {
    let (r, _) = Actor::spawn_linked(None, TeamActor, args.clone(), guardian.get_cell()).await?;
    watch(guardian, r.get_id(), Child::Team(args));
    Ok(r)
}

fn watch(guardian: &ActorRef<GuardianMsg>, id: ActorId, child: Child) {
    let w = Watched {
        child,
        restarts: VecDeque::new(),
    };
    let _ = guardian.cast(GuardianMsg::Watch(HashMap::from([(id, w)])));
}

impl Actor for Guardian {
    type Msg = GuardianMsg;
    type State = State;
    type Arguments = Arc<Directory>;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        directory: Arc<Directory>,
    ) -> Result<State, ActorProcessingErr> {
        Ok(State {
            children: HashMap::new(),
            directory,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: GuardianMsg,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GuardianMsg::Watch(children) => state.children.extend(children),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(cell, error) = event {
            restart(&myself, state, cell.get_id(), &error.to_string()).await;
        }
        Ok(())
    }
}

/// Starts a failed child again (within its restart budget) and points the directory at it.
async fn restart(myself: &ActorRef<GuardianMsg>, state: &mut State, failed: ActorId, error: &str) {
    let Some(mut w) = state.children.remove(&failed) else {
        tracing::error!(%error, "an unknown supervised actor failed");
        return;
    };
    let (kind, id) = (w.child.kind(), w.child.id().to_owned());
    let now = Instant::now();
    while w
        .restarts
        .front()
        .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
    {
        w.restarts.pop_front();
    }
    if w.restarts.len() >= MAX_RESTARTS {
        tracing::error!(kind, %id, %error, "actor keeps failing; not restarting it again");
        return;
    }
    w.restarts.push_back(now);
    tracing::error!(kind, %id, %error, "actor failed; restarting it from storage");
    let started = match &w.child {
        Child::Agent(args) => {
            match Actor::spawn_linked(None, AgentActor, args.clone(), myself.get_cell()).await {
                Ok((r, _)) => {
                    state.directory.set_agent(&id, r.clone());
                    Ok(r.get_id())
                }
                Err(e) => Err(e),
            }
        }
        Child::Team(args) => {
            match Actor::spawn_linked(None, TeamActor, args.clone(), myself.get_cell()).await {
                Ok((r, _)) => {
                    // Its first `Assign` rebuilds the queue from storage, then assigns.
                    let _ = r.cast(TeamMsg::Assign);
                    state.directory.set_team(&id, r.clone());
                    Ok(r.get_id())
                }
                Err(e) => Err(e),
            }
        }
    };
    match started {
        Ok(new_id) => {
            metrics::counter!(m::SUPERVISED_RESTARTS, "kind" => kind).increment(1);
            state.children.insert(new_id, w);
        }
        Err(e) => tracing::error!(kind, %id, error = %e, "cannot restart actor"),
    }
}
