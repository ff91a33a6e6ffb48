//! Who owns the conversation: claims (manual, `next`, automatic), release, resolve, transfer and
//! hand-backs, each checked by the domain's rules and committed before anyone is told.

use super::*;
use crate::automation::HandoverReason;

impl ConversationActor {
    /// A claim by `caller` (or a team's assignment to it); agents' claims are counted by
    /// outcome, automatic assignments by `switchboard_assignments_total` instead.
    pub(super) async fn claim(
        &self,
        state: &mut State,
        caller: &Caller,
        kind: ClaimKind,
    ) -> Result<Conversation, Error> {
        let r = self.take(state, caller, kind).await;
        match (&r, kind) {
            (_, ClaimKind::Auto) => {}
            (Ok(_), _) => self.ctx.claims_won.increment(1),
            (Err(e), _) => metrics::counter!(m::CLAIMS, "outcome" => e.code()).increment(1),
        }
        r
    }

    pub(super) async fn take(
        &self,
        state: &mut State,
        caller: &Caller,
        kind: ClaimKind,
    ) -> Result<Conversation, Error> {
        if kind != ClaimKind::Direct {
            state.conv.check_waiting()?;
        }
        if !state.conv.check_claim(caller)? {
            return Ok(state.conv.clone());
        }
        self.reserve_agent(&caller.id, &state.conv.id, kind == ClaimKind::Auto)?;
        let before = state.conv.clone();
        let mut next = before.clone();
        next.assign(&caller.id, self.ctx.now());
        let reason = match kind {
            ClaimKind::Direct => AssignReason::Claim,
            ClaimKind::Queued => AssignReason::Next,
            ClaimKind::Auto => AssignReason::Auto,
        };
        let mut batch = Batch::new();
        batch.put_report(&ReportEvent::of(
            &next,
            self.ctx.now(),
            Some(&caller.id),
            ReportKind::Assigned { reason },
        ))?;
        // Taken from the bot: the bot stops in this very step and leaves what it learned.
        let from_bot = match before.status == ConversationStatus::Bot {
            true => Some(super::bot::leave_bot(
                &before,
                &mut next,
                state.bot.note(HandoverReason::Claimed),
                self.ctx.now(),
                &mut batch,
            )?),
            false => None,
        };
        if let Err(e) = self.persist(state, next, batch).await {
            self.free_agent(&caller.id, &before.id);
            return Err(e);
        }
        self.sync_queues(Some(&before), &state.conv);
        self.publish(
            EventKind::ConversationClaimed,
            &state.conv,
            None,
            Some(&before),
        );
        if let Some(note) = from_bot {
            let intent = state.bot.intent.take();
            self.left_bot(state, note, intent, HandoverReason::Claimed);
        }
        Ok(state.conv.clone())
    }

    /// After a durable release (by the owner or a hand-back): the owner's slot, the team queue
    /// and the event.
    pub(super) fn released(&self, state: &State, before: &Conversation, owner: &str, avoid: bool) {
        self.free_agent(owner, &before.id);
        self.sync_queues_avoiding(Some(before), &state.conv, avoid.then_some(owner));
        self.publish(
            EventKind::ConversationReleased,
            &state.conv,
            None,
            Some(before),
        );
    }

    pub(super) async fn release(
        &self,
        state: &mut State,
        caller: &Caller,
    ) -> Result<Conversation, Error> {
        let before = state.conv.clone();
        let mut next = before.clone();
        let owner = next.release(caller, self.ctx.now())?;
        self.persist(state, next, Batch::new()).await?;
        self.released(state, &before, &owner, false);
        Ok(state.conv.clone())
    }

    pub(super) async fn resolve(
        &self,
        state: &mut State,
        caller: &Caller,
    ) -> Result<Conversation, Error> {
        let before = state.conv.clone();
        let mut next = before.clone();
        let freed = next.resolve(caller)?;
        if next == before {
            return Ok(before);
        }
        let now = self.ctx.now();
        let met = self
            .ctx
            .policies()
            .sla_met(&before, SlaKind::Resolution, now);
        // Counted where it was resolved, for whoever owned it.
        let took = self.span(before.team(), before.sla().opened_at, now);
        let mut batch = Batch::new();
        batch.put_report(&ReportEvent::of(
            &before,
            now,
            None,
            ReportKind::Resolved(took),
        ))?;
        if let Some(met) = met {
            let kind = ReportKind::Sla {
                kind: SlaKind::Resolution,
                met,
            };
            batch.put_report(&ReportEvent::of(&before, now, None, kind))?;
        }
        let asked = self.ask_csat(&before, &mut next, &mut batch, now)?;
        // Resolved while the bot held it: the bot's cycle ends with it.
        let from_bot = before.status == ConversationStatus::Bot;
        if from_bot {
            batch.delete_bot_memory(&before.id);
        }
        self.persist(state, next, batch).await?;
        if from_bot {
            state.bot = super::bot::BotMemory::default();
        }
        self.asked_csat(state, asked);
        if let Some(met) = met {
            record_sla(state.conv.team(), SlaKind::Resolution, met);
        }
        m::record_resolution(before.team(), took.wall_ms);
        if let Some(owner) = freed {
            self.free_agent(&owner, &before.id);
        }
        self.sync_queues(Some(&before), &state.conv);
        self.publish(
            EventKind::ConversationResolved,
            &state.conv,
            None,
            Some(&before),
        );
        Ok(state.conv.clone())
    }

    pub(super) async fn transfer(
        &self,
        state: &mut State,
        caller: &Caller,
        target: TransferTarget,
        note: Option<String>,
    ) -> Result<Conversation, Error> {
        let old_owner = state.conv.check_transfer(caller)?;
        let now = self.ctx.now();
        let new_owner = match &target {
            TransferTarget::Team(team) if self.ctx.team(team).is_none() => {
                return Err(DomainError::NotFound.into())
            }
            TransferTarget::Team(_) => None,
            TransferTarget::Agent { id, .. } => {
                if old_owner.as_deref() != Some(id.as_str()) {
                    self.reserve_agent(id, &state.conv.id, false)?;
                }
                Some(id.clone())
            }
        };
        let before = state.conv.clone();
        let mut next = before.clone();
        next.transfer(&target, now);
        let mut batch = Batch::new();
        // Out of the bot's hands, as a claim is.
        let from_bot = match before.status == ConversationStatus::Bot {
            true => Some(super::bot::leave_bot(
                &before,
                &mut next,
                state.bot.note(HandoverReason::Transferred),
                now,
                &mut batch,
            )?),
            false => None,
        };
        // The move counts in the team it left; the new owner's assignment in the team it joins.
        let to_team = next.team().to_string();
        batch.put_report(&ReportEvent::of(
            &before,
            now,
            None,
            ReportKind::Transferred { to_team },
        ))?;
        if let Some(n) = new_owner
            .as_ref()
            .filter(|n| Some(*n) != old_owner.as_ref())
        {
            let reason = AssignReason::Transfer;
            let e = ReportEvent::of(&next, now, Some(n), ReportKind::Assigned { reason });
            batch.put_report(&e)?;
        }
        let mut note_msg = None;
        if let Some(text) = note.filter(|t| !t.trim().is_empty()) {
            let msg = note_message(&mut next, caller, text, now);
            batch.put_message(&msg)?;
            note_msg = Some(msg);
        }
        if let Err(e) = self.persist(state, next, batch).await {
            if let Some(n) = new_owner.filter(|n| Some(n) != old_owner.as_ref()) {
                self.free_agent(&n, &before.id);
            }
            return Err(e);
        }
        if let Some(o) = old_owner.filter(|o| Some(o) != new_owner.as_ref()) {
            self.free_agent(&o, &before.id);
        }
        self.transferred(&before, &state.conv);
        if let Some(note) = from_bot {
            let intent = state.bot.intent.take();
            self.left_bot(state, note, intent, HandoverReason::Transferred);
        }
        if let Some(msg) = note_msg {
            self.publish(EventKind::MessageCreated, &state.conv, Some(msg), None);
        }
        Ok(state.conv.clone())
    }

    /// Hands the conversation back to the bot: status `bot`, no owner (its slot freed), out of
    /// the queue, a system note naming who did it, `conversation.released`; the bot starts a new
    /// cycle and answers the customer's next message. Refused (`automation_off`) when the team
    /// has no automation: nobody would answer.
    pub(super) async fn hand_back(
        &self,
        state: &mut State,
        caller: &Caller,
    ) -> Result<Conversation, Error> {
        if !state.conv.check_hand_back(caller)? {
            return Ok(state.conv.clone());
        }
        if !self.bot_serves(state.conv.team()) {
            return Err(DomainError::AutomationOff.into());
        }
        let now = self.ctx.now();
        let before = state.conv.clone();
        let mut next = before.clone();
        let owner = next.hand_back();
        let note = next.append_note(
            Author::System,
            format!("handed back to the bot by {}", caller.id),
            now,
        );
        let mut batch = Batch::new();
        batch.put_message(&note)?;
        self.persist(state, next, batch).await?;
        state.bot = super::bot::BotMemory::default();
        match owner {
            Some(owner) => self.released(state, &before, &owner, false),
            None => {
                self.sync_queues(Some(&before), &state.conv);
                self.publish(
                    EventKind::ConversationReleased,
                    &state.conv,
                    None,
                    Some(&before),
                );
            }
        }
        self.publish(EventKind::MessageCreated, &state.conv, Some(note), None);
        Ok(state.conv.clone())
    }

    /// Takes the conversation from `from` back to its team's queue, with a system note saying
    /// why. An owner going offline only loses conversations of auto-assigning teams (in a manual
    /// team nobody would pick them up sooner); deadlines apply to every team that sets them.
    pub(super) async fn reassign(
        &self,
        state: &mut State,
        from: &str,
        reason: String,
        why: Reassignment,
    ) -> Result<bool, Error> {
        let manual = self.ctx.policies().assignment(state.conv.team()) == Assignment::Manual;
        if manual && why == Reassignment::Offline {
            return Ok(false);
        }
        let before = state.conv.clone();
        let mut next = before.clone();
        let now = self.ctx.now();
        if !next.unassign(from, now) {
            return Ok(false);
        }
        let note = next.append_note(
            Author::System,
            format!("reassigned from {from}: {reason}"),
            now,
        );
        let mut batch = Batch::new();
        batch.put_message(&note)?;
        let reason = why.label().to_string();
        batch.put_report(&ReportEvent::of(
            &before,
            now,
            Some(from),
            ReportKind::Reassigned { reason },
        ))?;
        self.persist(state, next, batch).await?;
        metrics::counter!(m::ASSIGNMENTS, "team" => state.conv.team().to_string(), "reason" => why.label())
            .increment(1);
        self.released(state, &before, from, true);
        self.publish(EventKind::MessageCreated, &state.conv, Some(note), None);
        Ok(true)
    }
}
