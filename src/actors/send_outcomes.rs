//! The outbox's [`OutcomeSink`]: a send's attempt and outcome are recorded by the job's
//! conversation actor, the single writer of its messages and outbox entries, so a record never
//! races a status callback's adoption or a reply of the same conversation.
//!
//! Each report is one [`Ctx::ask`] (which activates the conversation if it passivated meanwhile);
//! the outbox retries a report that fails, and the actor's handlers are idempotent (a repeat
//! finds the message settled and answers `false`).

use std::sync::Arc;

use super::{ConversationMsg, Ctx};
use crate::domain::MessageError;
use crate::error::Error;
use crate::outbox::OutcomeSink;
use crate::store::OutboxJob;

/// Reports the outbox's sends to their conversations.
pub struct SendOutcomes {
    ctx: Arc<Ctx>,
}

impl SendOutcomes {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self { ctx }
    }
}

impl OutcomeSink for SendOutcomes {
    type Error = Error;

    async fn attempt(&self, job: &OutboxJob) -> Result<bool, Error> {
        self.ctx
            .ask(&job.conversation_id, None, |reply| {
                ConversationMsg::SendAttempt {
                    job: job.clone(),
                    reply,
                }
            })
            .await
    }

    async fn outcome(
        &self,
        conversation: &str,
        seq: u64,
        outcome: Result<Option<String>, MessageError>,
    ) -> Result<bool, Error> {
        self.ctx
            .ask(conversation, None, |reply| ConversationMsg::SendOutcome {
                seq,
                outcome: outcome.clone(),
                reply,
            })
            .await
    }
}
