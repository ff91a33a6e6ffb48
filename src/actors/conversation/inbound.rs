//! What customers send: inbound messages (routing a new or reopened conversation, the window,
//! redeliveries told from the wamids it holds) and the status callbacks of its outbound messages
//! (only ever forward).

use super::*;

impl ConversationActor {
    /// Which of `items` are already stored (by wamid). Storage is read only when the actor has no
    /// complete set: never for a conversation never persisted (its record is written atomically
    /// with its first message) nor for a live one with a complete set, for every item otherwise.
    pub(super) async fn stored_wamids(
        &self,
        state: &State,
        items: &[InboundMessage],
    ) -> Result<Vec<bool>, Error> {
        if !state.persisted {
            return Ok(vec![false; items.len()]);
        }
        if let Some(seen) = &state.seen {
            return Ok(items.iter().map(|m| seen.contains(&m.wamid)).collect());
        }
        let found = self
            .ctx
            .store
            .lookup_wamids(items.iter().map(|m| m.wamid.clone()).collect())
            .await?;
        Ok(found.into_iter().map(|r| r.is_some()).collect())
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
        // Routing runs on a conversation's first message and on reopen, on the first message
        // that is not a redelivery.
        let placement = if is_new || state.conv.status == ConversationStatus::Resolved {
            items
                .iter()
                .zip(&known)
                .find(|(_, stored)| !**stored)
                .map(|(first, _)| {
                    let input = RouteInput {
                        number: &next.number,
                        customer: &next.customer,
                        text: first.text.as_deref(),
                        message_type: &first.kind,
                        labels: next.labels(),
                        intent: None,
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
        let mut seen = HashSet::new();
        let mut batch = Batch::new();
        let mut created = Vec::new();
        let mut ack = InboundAck::default();
        let mut reopened = false;
        for (item, known) in items.into_iter().zip(known) {
            if known || !seen.insert(item.wamid.clone()) {
                ack.duplicates += 1;
                continue;
            }
            reopened |= next.on_inbound(
                item.customer_name.as_deref(),
                item.sent_at,
                now,
                &reopen_team,
            );
            let msg = inbound_message(&mut next, item);
            batch.put_message(&msg)?;
            created.push(msg);
        }
        if created.is_empty() {
            metrics::counter!(m::INBOUND_DUPLICATES).increment(ack.duplicates as u64);
            return Ok(ack);
        }
        // Routing places a new conversation (still in its seed's team: nothing above reads the
        // team) and a reopened one (already in `reopen_team`, the placement's) before the
        // after-hours check reads the team.
        if let Some(p) = &placement {
            next.route(p);
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
        // An after-hours reply changes the record (and takes a sequence number `created` does
        // not show), so it is always written with one.
        let committed = self.commit_inbound(state, next, &created, batch).await;
        if let Err(e) = committed {
            // A failed commit may still have reached the disk; only storage knows now.
            state.seen = None;
            return Err(e);
        }
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
        for msg in created {
            self.publish(EventKind::MessageCreated, conv, Some(msg), None);
        }
        if let Some((msg, job)) = auto_reply {
            metrics::counter!(m::OUTBOUND_MESSAGES, "outcome" => "queued").increment(1);
            if let Some(outbox) = self.ctx.outbox.get() {
                outbox.enqueue(job);
            }
            self.publish(EventKind::MessageCreated, &state.conv, Some(msg), None);
        }
        Ok(ack)
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
        // A status may have been parked as an orphan while the send was in flight; this one
        // supersedes or equals it (both came through the same forward-only rule).
        batch.delete_orphan_status(&update.wamid);
        if changed {
            batch.put_message(&msg)?;
            state.recent.forget(seq);
        }
        self.ctx.store.commit(batch).await?;
        if changed {
            state.recent.remember(&msg);
        }
        metrics::counter!(m::STATUS_UPDATES, "outcome" => if changed { "applied" } else { "stale" })
            .increment(1);
        if changed {
            self.publish(EventKind::MessageStatus, &state.conv, Some(msg), None);
        }
        Ok(changed)
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
        referral: None,
        media: None,
        pricing: None,
        content: None,
    }
}
