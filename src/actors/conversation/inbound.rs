//! What customers send: inbound messages (routing a new or reopened conversation, the window,
//! redeliveries told from the wamids it holds) and the status callbacks of its outbound messages
//! (only ever forward).

use super::quotes::Reactions;
use super::*;
use crate::domain::message::{message_id, Pricing};

impl ConversationActor {
    /// Which of `items` are already stored (by wamid). Storage is read only when the actor has no
    /// complete set: never for a conversation never persisted (its record is written atomically
    /// with its first message) nor for a live one with a complete set, for every item otherwise.
    /// Reactions are the exception (see `quotes`): their wamids are indexed but on no message
    /// (and may be indexed for a conversation never persisted), so a set built at activation
    /// lacks them, and a reaction the set lacks is looked up.
    pub(super) async fn stored_wamids(
        &self,
        state: &State,
        items: &[InboundMessage],
    ) -> Result<Vec<bool>, Error> {
        let mut stored: Vec<bool> = match &state.seen {
            Some(seen) => items.iter().map(|m| seen.contains(&m.wamid)).collect(),
            None => vec![false; items.len()],
        };
        // (A reaction to a message we do not hold may be all a conversation never stored has.)
        let ask: Vec<usize> = (0..items.len())
            .filter(|&i| {
                let unsure =
                    items[i].detail.reaction.is_some() || (state.persisted && state.seen.is_none());
                !stored[i] && unsure
            })
            .collect();
        if ask.is_empty() {
            return Ok(stored);
        }
        let found = self
            .ctx
            .store
            .lookup_wamids(ask.iter().map(|&i| items[i].wamid.clone()).collect())
            .await?;
        for (i, r) in ask.into_iter().zip(found) {
            stored[i] = r.is_some();
        }
        Ok(stored)
    }

    pub(super) async fn inbound(
        &self,
        state: &mut State,
        items: Vec<InboundMessage>,
    ) -> Result<InboundAck, Error> {
        let known = self.stored_wamids(state, &items).await?;
        if let Some(ack) = self.csat_answer(state, &items, &known).await? {
            return Ok(ack);
        }
        let now = self.ctx.now();
        // `state.conv` stays as it was until the commit succeeds: it is the "before".
        let mut next = state.conv.clone();
        let is_new = !state.persisted;
        if is_new {
            // Its last message time is its first message's (below), not the moment it was made.
            next.last_message_at = Millis::MIN;
        }
        let policies = self.ctx.policies();
        let default_team = self.ctx.default_team(&next.number);
        let number = self.ctx.config.number(&next.number);
        // Routing runs on a conversation's first message and on reopen, on the first message
        // that is not a redelivery.
        let placement = if is_new || state.conv.status == ConversationStatus::Resolved {
            items
                .iter()
                .zip(&known)
                .find(|(m, stored)| !**stored && m.detail.reaction.is_none())
                .map(|(first, _)| {
                    // `when.intent` rules see the built-in classifier's intent (cheap, no
                    // network), computed only when some rule asks for it.
                    let intent = first
                        .text
                        .as_deref()
                        .filter(|_| policies.rules.uses_intent())
                        .and_then(|t| self.ctx.automation.get()?.routing_intent(t));
                    let input = RouteInput {
                        number: &next.number,
                        customer: &next.customer,
                        text: first.text.as_deref(),
                        message_type: &first.kind,
                        labels: next.labels(),
                        intent: intent.as_deref(),
                        number_country: number.and_then(|n| n.country.as_deref()),
                        number_languages: number.map_or(&[], |n| n.languages.as_slice()),
                    };
                    policies.place(&input, &default_team, now)
                })
        } else {
            None
        };
        let reopen_team = match &placement {
            Some(p) => p.team.clone(),
            None => default_team,
        };
        let mut refs = self.referenced(state, &items, &known).await?;
        let mut reactions = Reactions::default();
        let mut seen = HashSet::new();
        let mut batch = Batch::new();
        let mut created: Vec<Message> = Vec::new();
        let mut ack = InboundAck::default();
        let mut reopened = false;
        let mut fetches = 0;
        for (mut item, known) in items.into_iter().zip(known) {
            if known || !seen.insert(item.wamid.clone()) {
                ack.duplicates += 1;
                continue;
            }
            // A reaction changes the message it names; it is no message of its own.
            if let Some(reaction) = item.detail.reaction.take() {
                self.react(
                    state,
                    &refs,
                    &mut created,
                    &mut reactions,
                    &mut batch,
                    reaction,
                    item.wamid,
                    &item.raw,
                )
                .await?;
                continue;
            }
            // A message naming an id this contact did not have links it (the index entry is
            // written with the record, see `commit_inbound`).
            next.learn_customer(&item.ids);
            reopened |= next.on_inbound(
                item.customer_name.as_deref(),
                item.sent_at,
                now,
                &reopen_team,
            );
            let seq = next.take_seq();
            // Quoting a message not of this conversation (or unknown) leaves `reply_to` null;
            // `raw` still has Meta's `context`.
            let reply_to = item
                .detail
                .quotes
                .as_ref()
                .and_then(|w| refs.get(w))
                .map(|s| message_id(&next.id, *s));
            // Later messages of this delivery may quote or react to this one.
            refs.insert(item.wamid.clone(), seq);
            let msg = Message {
                conversation_id: next.id.clone(),
                seq,
                direction: Direction::Inbound,
                kind: item.kind,
                text: item.text,
                wamid: Some(item.wamid),
                status: Some(DeliveryStatus::Received),
                author: Author::Customer(item.customer),
                at: item.sent_at,
                error: None,
                idempotency_key: None,
                raw: Some(item.raw),
                reply_to,
                reactions: Vec::new(),
                referral: item.detail.referral,
                lifecycle: Default::default(),
                media: item.detail.media,
                pricing: None,
                content: item.detail.content,
            };
            fetches += queue_fetch(&mut batch, &msg, now)?;
            created.push(msg);
        }
        // Written once every reaction of the delivery is on them.
        for msg in created.iter().chain(reactions.changed()) {
            batch.put_message(msg)?;
        }
        if created.is_empty() {
            metrics::counter!(m::INBOUND_DUPLICATES).increment(ack.duplicates as u64);
            if !reactions.is_empty() {
                self.commit_reactions(state, reactions, batch).await?;
            }
            return Ok(ack);
        }
        // Routing places a new conversation (still in its seed's team: nothing above reads the
        // team) and a reopened one (already in `reopen_team`, the placement's) before the
        // after-hours check reads the team.
        // A new bot cycle starts with an empty memory (a reopened conversation's old one is
        // deleted in this batch); one the bot takes only because its team is closed remembers
        // the team it holds it for, durably, so the team gets it at opening even after a crash.
        let mut fresh_bot = None;
        if let Some(p) = &placement {
            next.route(p);
            // With automation on for the team it lands in, the bot has it first; with
            // `after_hours`, also when that team is closed.
            if self.bot_serves(next.team()) {
                next.start_with_bot();
            } else if self.bot_holds_after_hours(next.team(), &policies, now) {
                next.start_with_bot();
                fresh_bot = Some(super::bot::BotMemory {
                    waiting: Some(crate::automation::memory::Waiting {
                        team: next.team().to_string(),
                        reason: None,
                        told: false,
                    }),
                    ..Default::default()
                });
            }
        }
        if self.ctx.automation.get().is_some() && (is_new || reopened) {
            match &fresh_bot {
                Some(m) => batch.put_bot_memory(&next.id, m)?,
                None if reopened => batch.delete_bot_memory(&next.id),
                None => {}
            }
        }
        // Reporting events, in the team the routing chose (the team of this moment).
        let opened = match (is_new, reopened) {
            (true, _) => Some(ReportKind::Opened),
            (false, true) => Some(ReportKind::Reopened),
            _ => None,
        };
        if let Some(kind) = opened {
            batch.put_report(&ReportEvent::of(&next, now, None, kind))?;
        }
        if reopened {
            // A rating question left unanswered expires with the cycle it was about.
            batch.delete_csat_pending(&next.id);
        }
        let messages = u32::try_from(created.len()).unwrap_or(u32::MAX);
        batch.put_report(&ReportEvent::of(
            &next,
            now,
            None,
            ReportKind::Inbound { messages },
        ))?;
        let mut auto_reply = None;
        if let Some((text, period)) = policies.after_hours_reply(&next, now) {
            let msg = next.send_after_hours_reply(text, period, now);
            let job = outbox_job(&next, &msg);
            batch.put_message(&msg)?;
            batch.put_outbox(&job)?;
            auto_reply = Some((msg, job));
        }
        let before = reopened.then(|| state.conv.clone());
        for msg in reactions.changed() {
            state.recent.forget(msg.seq);
        }
        // An after-hours reply changes the record (and takes a sequence number `created` does
        // not show), so it is always written with one.
        let committed = self.commit_inbound(state, next, &created, batch).await;
        if let Err(e) = committed {
            // A failed commit may still have reached the disk; only storage knows now.
            state.seen = None;
            return Err(e);
        }
        let reacted = self.reactions_committed(state, reactions);
        if let Some((msg, _)) = &auto_reply {
            state.recent.remember(msg);
        }
        if let Some(seen) = &mut state.seen {
            for w in created.iter().filter_map(|m| m.wamid.as_deref()) {
                seen.insert(w);
            }
        }
        if let Some(p) = &placement {
            let rule = p.rule.clone().unwrap_or_else(|| "default".into());
            metrics::counter!(m::ROUTED, "rule" => rule, "team" => p.team.clone()).increment(1);
            if let Some(from) = &p.fell_back_from {
                tracing::debug!(conversation = %state.conv.id, %from, to = %p.team, "team closed; routed to fallback");
            }
        }
        if fetches > 0 {
            metrics::gauge!(m::MEDIA_FETCH_PENDING).increment(fetches as f64);
            self.ctx.media_queued.queued(now);
        }
        ack.stored = created.len();
        metrics::counter!(m::INBOUND_MESSAGES).increment(ack.stored as u64);
        if ack.duplicates > 0 {
            metrics::counter!(m::INBOUND_DUPLICATES).increment(ack.duplicates as u64);
        }
        let conv = &state.conv;
        if is_new {
            self.sync_queues(None, conv);
            self.publish(EventKind::ConversationCreated, conv, None, None);
        } else if reopened {
            self.sync_queues(before.as_ref(), conv);
            self.publish(EventKind::ConversationReopened, conv, None, before.as_ref());
        }
        // What the bot reads: the delivery's texts (button replies included: they are texts),
        // and the id of the last button pressed (a reply button's id, a template button's
        // payload).
        let bot_texts: Vec<String> = if conv.status == ConversationStatus::Bot {
            created.iter().filter_map(|m| m.text.clone()).collect()
        } else {
            Vec::new()
        };
        let bot_button = created.iter().rev().find_map(|m| match &m.content {
            Some(crate::domain::message::Content::ButtonReply { id, .. }) => Some(id.clone()),
            Some(crate::domain::message::Content::Button {
                payload: Some(p), ..
            }) => Some(p.clone()),
            _ => None,
        });
        for msg in created {
            self.publish(EventKind::MessageCreated, conv, Some(msg), None);
        }
        for msg in reacted {
            self.publish(EventKind::MessageUpdated, conv, Some(msg), None);
        }
        if let Some((msg, job)) = auto_reply {
            metrics::counter!(m::OUTBOUND_MESSAGES, "outcome" => "queued").increment(1);
            if let Some(outbox) = self.ctx.outbox.get() {
                outbox.enqueue(job);
            }
            self.publish(EventKind::MessageCreated, &state.conv, Some(msg), None);
        }
        if is_new || reopened {
            state.bot = fresh_bot.unwrap_or_default();
        }
        self.start_bot_turn(state, bot_texts, bot_button);
        Ok(ack)
    }

    /// Commits a delivery that changed nothing but reactions (no message of its own, so the
    /// conversation's record stays as it is).
    async fn commit_reactions(
        &self,
        state: &mut State,
        reactions: Reactions,
        batch: Batch,
    ) -> Result<(), Error> {
        for msg in reactions.changed() {
            state.recent.forget(msg.seq);
        }
        self.ctx.store.commit(batch).await?;
        for msg in self.reactions_committed(state, reactions) {
            self.publish(EventKind::MessageUpdated, &state.conv, Some(msg), None);
        }
        Ok(())
    }

    /// After the commit of a delivery's reactions: the live wamid set and the recent sends
    /// follow, the reactions are counted; returns the messages they changed.
    fn reactions_committed(&self, state: &mut State, mut reactions: Reactions) -> Vec<Message> {
        if let Some(seen) = &mut state.seen {
            for w in &reactions.wamids {
                seen.insert(w);
            }
        }
        reactions.count();
        let changed = reactions.take_changed();
        for msg in &changed {
            state.recent.remember(msg);
        }
        changed
    }

    /// Moves the customer's ids as a `system` message says (when it moves any), the contact
    /// index with them, and shows the message in this conversation (kind `system`, with its typed content). It opens
    /// nothing and moves no window or clock: it is Meta's notice, not the customer writing.
    /// A redelivery finds the ids moved already and changes nothing.
    pub(super) async fn change_ids(
        &self,
        state: &mut State,
        old: &CustomerIds,
        change: Option<IdentityChange>,
        notice: Box<InboundMessage>,
    ) -> Result<bool, Error> {
        let contact = &state.conv.contact;
        let named =
            |mine: &Option<String>, theirs: &Option<String>| mine.is_some() && mine == theirs;
        // Found through an id derived from a phone: it must still be this customer's.
        if !(named(&old.phone, &contact.phone) || named(&old.user_id, &contact.user_id)) {
            return Ok(false);
        }
        let mut next = state.conv.clone();
        if let Some(change) = &change {
            if !next.change_customer_ids(change) {
                return Ok(false);
            }
        } else if state
            .seen
            .as_ref()
            .is_some_and(|s| s.contains(&notice.wamid))
        {
            return Ok(false);
        }
        let notice = *notice;
        let msg = Message {
            conversation_id: next.id.clone(),
            seq: next.take_seq(),
            direction: Direction::Inbound,
            kind: notice.kind,
            text: notice.text,
            wamid: Some(notice.wamid),
            status: Some(DeliveryStatus::Received),
            author: Author::Customer(notice.customer),
            at: notice.sent_at,
            error: None,
            idempotency_key: None,
            raw: Some(notice.raw),
            reply_to: None,
            reactions: Vec::new(),
            referral: None,
            lifecycle: Default::default(),
            media: None,
            pricing: None,
            content: notice.detail.content,
        };
        let mut batch = Batch::new();
        batch.put_message(&msg)?;
        self.persist(state, next, batch).await?;
        if let (Some(seen), Some(w)) = (&mut state.seen, &msg.wamid) {
            seen.insert(w);
        }
        self.publish(EventKind::MessageCreated, &state.conv, Some(msg), None);
        Ok(true)
    }

    pub(super) async fn status(
        &self,
        state: &mut State,
        seq: u64,
        update: InboundStatus,
    ) -> Result<bool, Error> {
        // The callback is kept whole, applied or not, in the commit that settles it.
        let mut batch = Batch::new();
        batch.put_status_log(&update.wamid, update.status, update.at, &update.raw);
        let Some(mut msg) = self.message(state, seq).await? else {
            self.ctx.store.commit(batch).await?;
            return Ok(false);
        };
        let changed = msg.apply_status(update.status, update.error);
        // Meta repeats the price on each status of a message; the first one is kept and counted,
        // stale status or not.
        let priced = take_pricing(&mut msg, update.pricing);
        // A status may have been parked as an orphan while the send was in flight; this one
        // supersedes or equals it (both came through the same forward-only rule).
        batch.delete_orphan_status(&update.wamid);
        if changed || priced {
            batch.put_message(&msg)?;
            state.recent.forget(seq);
        }
        self.ctx.store.commit(batch).await?;
        if changed || priced {
            state.recent.remember(&msg);
            self.after_failure(state, &msg).await?;
        }
        metrics::counter!(m::STATUS_UPDATES, "outcome" => if changed { "applied" } else { "stale" })
            .increment(1);
        if priced {
            count_billable(&state.conv.number, &msg);
        }
        if changed {
            self.publish(EventKind::MessageStatus, &state.conv, Some(msg), None);
        } else if priced {
            self.publish(EventKind::MessageUpdated, &state.conv, Some(msg), None);
        }
        Ok(changed)
    }
}

/// Keeps the first pricing a status callback gives a message (Meta repeats it on each status);
/// returns whether this one was the first.
pub(super) fn take_pricing(msg: &mut Message, pricing: Option<Pricing>) -> bool {
    if msg.pricing.is_some() || pricing.is_none() {
        return false;
    }
    msg.pricing = pricing;
    true
}

/// Counts a message Meta charges for, once: when its pricing was first kept (and committed).
pub(super) fn count_billable(number: &str, msg: &Message) {
    if let Some(p) = msg.pricing.as_ref().filter(|p| p.is_billable()) {
        metrics::counter!(m::BILLABLE_MESSAGES, "number" => number.to_string(),
            "category" => m::pricing_category(&p.category))
        .increment(1);
    }
}

/// Customer message `item` as the conversation's next message.
pub(super) fn inbound_message(next: &mut Conversation, item: InboundMessage) -> Message {
    Message {
        conversation_id: next.id.clone(),
        seq: next.take_seq(),
        direction: Direction::Inbound,
        kind: item.kind,
        text: item.text,
        wamid: Some(item.wamid),
        status: Some(DeliveryStatus::Received),
        author: Author::Customer(item.customer),
        at: item.sent_at,
        error: None,
        idempotency_key: None,
        raw: Some(item.raw),
        reply_to: None,
        reactions: Vec::new(),
        referral: item.detail.referral,
        lifecycle: Default::default(),
        media: item.detail.media,
        pricing: None,
        content: item.detail.content,
    }
}
