//! Customer satisfaction (`[csat]`): the rating question a resolve sends, and the answer to it.
//!
//! The question is the configured rating template (quick-reply buttons whose payloads carry the
//! score, see `crate::templates::Registry::prepare_rating`) or, without one or when it cannot
//! be sent, a text inside the customer-service window. It is part of the resolve's batch (its
//! message, outbox job and a `csat_pending` marker naming the team and agent that resolved it),
//! so it is asked exactly when the resolve is durable. While the conversation stays resolved, a customer message that is a rating
//! (see [`score`]) answers it: stored as a message and a CSAT reporting event for that team and
//! agent, the marker removed, and the conversation *not* reopened. Anything else reopens as
//! usual (and drops the marker: the question was about the cycle that ended).

use super::*;
use crate::store::schema::CsatPending;

/// The score (1–5) a customer message gives, if it is a rating: a text that is just the number,
/// or a button whose reply id or payload is `csat:N` (or whose title is `N`).
pub(super) fn score(item: &InboundMessage) -> Option<u8> {
    let parse = |s: &str| {
        let s = s.trim();
        let s = s.strip_prefix("csat:").unwrap_or(s);
        match s.parse::<u8>() {
            Ok(n @ 1..=5) => Some(n),
            _ => None,
        }
    };
    if let Some(n) = item.text.as_deref().and_then(parse) {
        return Some(n);
    }
    let raw: serde_json::Value = serde_json::from_str(&item.raw).ok()?;
    ["/interactive/button_reply/id", "/button/payload"]
        .iter()
        .filter_map(|p| raw.pointer(p).and_then(|v| v.as_str()))
        .find_map(parse)
}

impl ConversationActor {
    /// The configured rating template, ready to send, if there is one and it can be sent now.
    fn rating_template(&self) -> Option<crate::templates::PreparedSend> {
        let c = &self.ctx.config.csat;
        let name = c.template.as_deref()?;
        let registry = self.ctx.templates.get()?;
        match registry.prepare_rating(name, &c.language) {
            Ok(p) => Some(p),
            Err(e) => {
                static LOG: crate::log_limit::LogLimit = crate::log_limit::LogLimit::new(1);
                if let Some(held_back) = LOG.check() {
                    tracing::warn!(template = name, error = %e, held_back,
                        "rating template not sendable; asking by text where the window allows");
                }
                None
            }
        }
    }

    /// Adds the rating question to a resolve's batch when `[csat]` is on and the conversation's
    /// number can send: the rating template if configured and sendable, else the text if the
    /// customer-service window is open.
    pub(super) fn ask_csat(
        &self,
        before: &Conversation,
        next: &mut Conversation,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<Option<(Message, OutboxJob)>, Error> {
        let c = &self.ctx.config.csat;
        if !c.enabled || self.ctx.config.number(&next.number).is_none() {
            return Ok(None);
        }
        let (msg, job) = match self.rating_template() {
            Some(t) => {
                let mut msg = next.append_outbound(Author::System, t.summary, None, now);
                msg.kind = crate::domain::message::TEMPLATE_KIND.to_string();
                let job = OutboxJob {
                    payload: Payload::Template {
                        name: t.name,
                        language: t.language,
                        components_json: t.components_json,
                    },
                    ..outbox_job(next, &msg)
                };
                (msg, job)
            }
            None if next.window_open(now) => {
                let msg = next.append_outbound(Author::System, c.text.clone(), None, now);
                let job = outbox_job(next, &msg);
                (msg, job)
            }
            None => return Ok(None),
        };
        batch.put_message(&msg)?;
        batch.put_outbox(&job)?;
        let pending = CsatPending {
            asked_at: now,
            team: before.team().to_string(),
            agent: before.assignee.clone(),
        };
        batch.put_csat_pending(&next.id, &pending)?;
        Ok(Some((msg, job)))
    }

    /// After the resolve's commit: the question goes to the outbox and to watchers.
    pub(super) fn asked_csat(&self, state: &mut State, asked: Option<(Message, OutboxJob)>) {
        let Some((msg, job)) = asked else {
            return;
        };
        state.recent.remember(&msg);
        metrics::counter!(m::OUTBOUND_MESSAGES, "outcome" => "queued").increment(1);
        if let Some(outbox) = self.ctx.outbox.get() {
            outbox.enqueue(job);
        }
        self.publish(EventKind::MessageCreated, &state.conv, Some(msg), None);
    }

    /// Handles `items` as the answer to a pending rating question, if they are one (a single
    /// new message that is a rating, to a resolved conversation with a question pending); None
    /// otherwise, and the caller handles them as any inbound message.
    pub(super) async fn csat_answer(
        &self,
        state: &mut State,
        items: &[InboundMessage],
        known: &[bool],
    ) -> Result<Option<InboundAck>, Error> {
        if !self.ctx.config.csat.enabled
            || !state.persisted
            || state.conv.status != ConversationStatus::Resolved
        {
            return Ok(None);
        }
        let fresh: Vec<&InboundMessage> = items
            .iter()
            .zip(known)
            .filter(|(_, k)| !**k)
            .map(|(i, _)| i)
            .collect();
        let [item] = fresh.as_slice() else {
            return Ok(None);
        };
        let Some(score) = score(item) else {
            return Ok(None);
        };
        let Some(pending) = self.ctx.store.csat_pending(&state.conv.id).await? else {
            return Ok(None);
        };
        let now = self.ctx.now();
        let mut next = state.conv.clone();
        let msg = inbound::inbound_message(&mut next, (*item).clone());
        next.absorb(&msg);
        let mut batch = Batch::new();
        batch.put_message(&msg)?;
        batch.delete_csat_pending(&next.id);
        batch.put_report(&ReportEvent {
            at: now,
            conversation: next.id.clone(),
            team: pending.team.clone(),
            agent: pending.agent.clone(),
            number: next.number.clone(),
            kind: ReportKind::Csat { score },
        })?;
        if let Err(e) = self.persist(state, next, batch).await {
            state.seen = None;
            return Err(e);
        }
        if let (Some(seen), Some(w)) = (&mut state.seen, msg.wamid.as_deref()) {
            seen.insert(w);
        }
        metrics::counter!(m::INBOUND_MESSAGES).increment(1);
        metrics::counter!(m::CSAT_ANSWERS, "team" => pending.team, "score" => SCORES[usize::from(score) - 1])
            .increment(1);
        self.publish(EventKind::MessageCreated, &state.conv, Some(msg), None);
        Ok(Some(InboundAck {
            stored: 1,
            duplicates: items.len() - 1,
        }))
    }
}

/// The `score` label values (a bounded set).
const SCORES: [&str; 5] = ["1", "2", "3", "4", "5"];
