//! The business starts a conversation (`POST /api/v1/conversations`): the caller comes to own
//! it — a new one, a resolved one reopened, an open one of its team claimed (see
//! `Conversation::start`) — and the template goes out, all in one commit, so a refused send
//! (marketing opt-out, the messaging limit, the caller's capacity) leaves nothing changed.

use super::*;
use crate::domain::Started;

impl ConversationActor {
    pub(super) async fn start(
        &self,
        state: &mut State,
        caller: &Caller,
        body: Outgoing,
        idempotency_key: Option<String>,
    ) -> Result<(Conversation, Message), Error> {
        let now = self.ctx.now();
        if let Some(key) = &idempotency_key {
            if let Some(msg) = self.keyed(state, key).await? {
                // A retry gets its original answer (the conversation as it is now, if the
                // caller may still see it); anyone else learns nothing of it.
                if msg.author.is_agent(&caller.id) && state.conv.visible_to(caller) {
                    return Ok((state.conv.clone(), msg));
                }
                if msg.author.is_agent(&caller.id) {
                    return Err(DomainError::NotFound.into());
                }
                return Err(DomainError::Invalid(
                    "idempotency_key was already used in this conversation by someone else".into(),
                )
                .into());
            }
        }
        let before = state.conv.clone();
        let mut next = before.clone();
        let started = next.start(caller, !state.persisted, now)?;
        let slot = self.send_checks(state, &next, &body, now)?;
        let takes = started != Started::Owned;
        if takes {
            self.reserve_agent(&caller.id, &before.id, false)?;
        }
        let mut batch = Batch::new();
        let done = self
            .commit_start(
                state,
                caller,
                &before,
                next,
                started,
                body,
                idempotency_key,
                slot,
                &mut batch,
                now,
            )
            .await;
        if done.is_err() && takes {
            self.free_agent(&caller.id, &before.id);
        }
        done
    }

    #[allow(clippy::too_many_arguments)]
    async fn commit_start(
        &self,
        state: &mut State,
        caller: &Caller,
        before: &Conversation,
        mut next: Conversation,
        started: Started,
        body: Outgoing,
        idempotency_key: Option<String>,
        slot: Option<crate::messaging_limit::Slot>,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<(Conversation, Message), Error> {
        let agent = Some(caller.id.as_str());
        match started {
            Started::Opened => {
                batch.put_report(&ReportEvent::of(&next, now, None, ReportKind::Opened))?;
            }
            Started::Reopened => {
                batch.put_report(&ReportEvent::of(&next, now, None, ReportKind::Reopened))?;
                // A rating question left unanswered expires with the cycle it was about.
                batch.delete_csat_pending(&next.id);
            }
            Started::Claimed | Started::Owned => {}
        }
        if started != Started::Owned {
            let reason = AssignReason::Start;
            let e = ReportEvent::of(&next, now, agent, ReportKind::Assigned { reason });
            batch.put_report(&e)?;
        }
        // Taken from the bot: it stops in this very step and leaves what it learned, as a claim.
        let from_bot = match started == Started::Claimed && before.status == ConversationStatus::Bot
        {
            true => Some(super::bot::leave_bot(
                before,
                &mut next,
                state.bot.note(crate::automation::HandoverReason::Claimed),
                now,
                batch,
            )?),
            false => None,
        };
        let queued = self.compose_reply(
            &mut next,
            caller,
            body,
            None,
            idempotency_key.clone(),
            batch,
            now,
        )?;
        let id = next.id.clone();
        queued.write(batch, &id, idempotency_key.as_deref())?;
        if let Some(slot) = &slot {
            slot.write(batch, now);
        }
        self.persist(state, next, std::mem::take(batch)).await?;
        if let Some(slot) = slot {
            slot.commit(now);
        }
        match started {
            Started::Opened => {
                self.sync_queues(None, &state.conv);
                self.publish(EventKind::ConversationCreated, &state.conv, None, None);
            }
            Started::Reopened => {
                self.sync_queues(Some(before), &state.conv);
                self.publish(
                    EventKind::ConversationReopened,
                    &state.conv,
                    None,
                    Some(before),
                );
            }
            Started::Claimed => {
                self.sync_queues(Some(before), &state.conv);
                self.publish(
                    EventKind::ConversationClaimed,
                    &state.conv,
                    None,
                    Some(before),
                );
            }
            Started::Owned => {}
        }
        if let Some(note) = from_bot {
            let intent = state.bot.intent.take();
            self.left_bot(
                state,
                note,
                intent,
                crate::automation::HandoverReason::Claimed,
            );
        }
        if started == Started::Reopened || started == Started::Opened {
            state.bot = super::bot::BotMemory::default();
        }
        let msg = self.reply_committed(state, queued);
        Ok((state.conv.clone(), msg))
    }
}
