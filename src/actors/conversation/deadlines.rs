//! Time-driven changes: SLA breaches, `reassign_after`, and conversations still waiting when
//! their team closes moving to an open fallback; conversations the bot holds for a closed team
//! going to it when it opens (`bot`).

use super::*;

impl ConversationActor {
    /// Handles every deadline that has fallen due, then tells the timer service the next one.
    pub(super) async fn tick(&self, state: &mut State) -> Result<(), Error> {
        let now = self.ctx.now();
        let policies = self.ctx.policies();
        for due in policies.due(&state.conv, now) {
            match due {
                Deadline::Sla(kind) => self.breach(state, &policies, kind).await?,
                Deadline::Reassign => {
                    if let Some(owner) = state.conv.assignee.clone() {
                        let reason = "did not answer the customer in time".to_string();
                        self.reassign(state, &owner, reason, Reassignment::NoAnswer)
                            .await?;
                    }
                }
                Deadline::FallBack => self.fall_back(state, &policies, now).await?,
            }
        }
        self.bot_tick(state, &policies, now).await?;
        self.reschedule(state, true);
        Ok(())
    }

    /// The conversation waits in a team that has closed: it moves to the team's first open
    /// fallback, as a new conversation would be placed, keeping its place in line (`queued_at`).
    pub(super) async fn fall_back(
        &self,
        state: &mut State,
        policies: &Policies,
        now: Millis,
    ) -> Result<(), Error> {
        if state.conv.status != crate::domain::ConversationStatus::Queued {
            return Ok(());
        }
        let Some(to) = policies.open_fallback(state.conv.team(), now) else {
            return Ok(());
        };
        let before = state.conv.clone();
        let mut next = before.clone();
        next.fall_back_to(to);
        self.persist(state, next, Batch::new()).await?;
        metrics::counter!(m::FALLBACKS, "from" => before.team().to_string(), "to" => state.conv.team().to_string())
            .increment(1);
        self.transferred(&before, &state.conv);
        Ok(())
    }

    /// An SLA clock was missed: record it once, raise the priority, tell supervisors, and
    /// escalate when the team asks for it.
    pub(super) async fn breach(
        &self,
        state: &mut State,
        policies: &Policies,
        kind: SlaKind,
    ) -> Result<(), Error> {
        if state.conv.sla().is_breached(kind) {
            return Ok(());
        }
        let before = state.conv.clone();
        let mut next = before.clone();
        next.breach(kind);
        let mut batch = Batch::new();
        let miss = ReportKind::Sla { kind, met: false };
        batch.put_report(&ReportEvent::of(&before, self.ctx.now(), None, miss))?;
        self.persist(state, next, batch).await?;
        record_sla(state.conv.team(), kind, false);
        self.sync_queues(Some(&before), &state.conv);
        self.ctx.bus.publish(Event {
            kind: EventKind::SlaBreached,
            conversation: state.conv.clone(),
            message: None,
            previous_team: None,
            previous_status: None,
            previous_assignee: None,
            sla: Some(kind),
            rendered: Default::default(),
        });
        let escalate = policies
            .team(state.conv.team())
            .and_then(|p| p.sla.escalate)
            == Some(Escalation::Reassign);
        if let (true, Some(owner)) = (escalate, state.conv.assignee.clone()) {
            let reason = format!("{} SLA missed", kind.as_str());
            self.reassign(state, &owner, reason, Reassignment::SlaEscalation)
                .await?;
        }
        Ok(())
    }
}

pub(super) fn record_sla(team: &str, kind: SlaKind, met: bool) {
    metrics::counter!(m::SLA, "team" => team.to_string(), "kind" => kind.as_str(), "outcome" => if met { "hit" } else { "miss" })
        .increment(1);
}
