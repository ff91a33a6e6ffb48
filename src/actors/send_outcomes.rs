//! The outbox's [`OutcomeSink`]: a send's attempt and outcome are recorded by the job's
//! conversation actor, the single writer of its messages and outbox entries, so a record never
//! races a status callback's adoption or a reply of the same conversation.
//!
//! Each report is one [`Ctx::ask`] (which activates the conversation if it passivated meanwhile);
//! the outbox retries a report that fails, and the actor's handlers are idempotent (a repeat
//! finds the message settled and answers `false`).
//!
//! A template send's refusal also goes to the template registry (a paused or disabled template,
//! or a copy that differs from Meta's): the template each send in flight names is remembered
//! from its attempt to its outcome, one entry per template send in flight, at most
//! [`MAX_TRACKED`] (a send adopted by a status callback gets no outcome and leaves its entry;
//! past the bound a send is not tracked, and its refusal only fails the message).

use std::collections::HashMap;
use std::sync::Arc;

use super::{ConversationMsg, Ctx};
use crate::domain::MessageError;
use crate::error::Error;
use crate::outbox::OutcomeSink;
use crate::store::{Batch, OutboxJob, Payload};

/// Template sends tracked from attempt to outcome (far above the outbox's sends in flight).
pub const MAX_TRACKED: usize = 10_000;

/// Reports the outbox's sends to their conversations.
pub struct SendOutcomes {
    ctx: Arc<Ctx>,
    /// (conversation, seq) → (template name, language) of template sends in flight.
    templates: parking_lot::Mutex<HashMap<(String, u64), (String, String)>>,
}

impl SendOutcomes {
    pub fn new(ctx: Arc<Ctx>) -> Self {
        Self {
            ctx,
            templates: parking_lot::Mutex::new(HashMap::new()),
        }
    }
}

impl SendOutcomes {
    /// Remembers the template a send names, until its outcome (module docs).
    fn track(&self, job: &OutboxJob) {
        if let Payload::Template { name, language, .. } = &job.payload {
            let mut tracked = self.templates.lock();
            if tracked.len() < MAX_TRACKED {
                tracked.insert(
                    (job.conversation_id.clone(), job.seq),
                    (name.clone(), language.clone()),
                );
            }
        }
    }
}

impl OutcomeSink for SendOutcomes {
    type Error = Error;

    async fn attempt(&self, job: &OutboxJob) -> Result<bool, Error> {
        self.track(job);
        self.ctx
            .ask(&job.conversation_id, None, |reply| {
                ConversationMsg::SendAttempt {
                    job: job.clone(),
                    reply,
                }
            })
            .await
    }

    /// A round's marks bypass the actors: each is a put of the job's entry made only if the
    /// entry is still on disk when the writer applies it ([`Batch::put_outbox_if_present`]).
    /// That is the actor's own check (its message is pending exactly as long as its entry
    /// exists), made atomically by the single writer of every key, so a mark never brings back
    /// a job whose outcome or adoption was committed first, and the round costs one commit
    /// instead of one actor round trip and one commit per send.
    async fn attempts(&self, jobs: &[&OutboxJob]) -> Result<Vec<bool>, Error> {
        let mut batch = Batch::new();
        for job in jobs {
            self.track(job);
            batch.put_outbox_if_present(job)?;
        }
        Ok(self.ctx.store.commit_checked(batch).await?)
    }

    async fn outcome(
        &self,
        conversation: &str,
        seq: u64,
        outcome: Result<Option<String>, MessageError>,
    ) -> Result<bool, Error> {
        let key = (conversation.to_string(), seq);
        let template = self.templates.lock().get(&key).cloned();
        if let (Err(e), Some((name, language)), Some(registry)) =
            (&outcome, &template, self.ctx.templates.get())
        {
            registry.on_send_error(name, language, e.code).await?;
        }
        let reported = self
            .ctx
            .ask(conversation, None, |reply| ConversationMsg::SendOutcome {
                seq,
                outcome: outcome.clone(),
                reply,
            })
            .await;
        if reported.is_ok() {
            self.templates.lock().remove(&key);
        }
        reported
    }
}
