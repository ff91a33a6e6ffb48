//! Parent of every conversation actor.
//!
//! It keeps the registry truthful when an actor ends (passivation or failure) and restarts an
//! actor that panicked from its last durable state — the state it would have had after a crash of
//! the whole process — so one bad message cannot take the broker down or leave a conversation
//! without its writer. Each restart is counted in `switchboard_actor_restarts_total`.

use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::Ctx;
use crate::metrics as m;

pub struct ConversationSupervisor {
    pub ctx: Arc<Ctx>,
}

impl ConversationSupervisor {
    /// Removes a finished actor from the registry; returns its conversation id if it was live.
    fn forget(&self, cell: &ActorCell) -> Option<String> {
        let (_, id) = self.ctx.actor_ids.remove(&cell.get_id())?;
        self.ctx.forget(&id, cell.get_id());
        metrics::gauge!(m::LIVE_ACTORS).decrement(1.0);
        Some(id)
    }
}

impl Actor for ConversationSupervisor {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        _args: (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        _state: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                self.forget(&cell);
            }
            SupervisionEvent::ActorFailed(cell, err) => {
                if let Some(id) = self.forget(&cell) {
                    metrics::counter!(m::ACTOR_RESTARTS).increment(1);
                    tracing::error!(conversation = %id, error = %err, "conversation actor failed; restarting from storage");
                    if let Err(e) = self.ctx.activate(&id, None).await {
                        tracing::error!(conversation = %id, error = %e, "restart failed; next command re-activates");
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
