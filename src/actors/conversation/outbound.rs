//! What the business sends: replies (texts, quoting replies, interactive messages) and notes
//! (idempotent per author and key), reactions (idempotent by state), read receipts, the outbox's
//! attempts and outcomes, and wamids adopted from status callbacks for sends whose answer was
//! lost.

use super::*;
use crate::domain::message::{
    parse_message_id, Content, Outgoing, INTERACTIVE_KIND, REACTION_KIND, TEMPLATE_KIND,
};
use crate::outbox::ReadRefused;

/// How many of a conversation's newest messages a read receipt looks through for the
/// customer's latest one (its work bound; one that far back is not marked, the route answers
/// 204).
pub const READ_SCAN_MESSAGES: usize = 1000;

impl ConversationActor {
    /// Message `seq` as last committed: the kept copy of an open outbound message, else storage.
    /// The reply stored under idempotency key `key` in this conversation, if any.
    pub(super) async fn keyed(&self, state: &State, key: &str) -> Result<Option<Message>, Error> {
        match self.ctx.store.idempotent_seq(&state.conv.id, key).await? {
            Some(seq) => self.message(state, seq).await,
            None => Ok(None),
        }
    }

    pub(super) async fn message(&self, state: &State, seq: u64) -> Result<Option<Message>, Error> {
        if let Some(m) = state.recent.get(seq) {
            return Ok(Some(m.clone()));
        }
        Ok(self.ctx.store.get_message(&state.conv.id, seq).await?)
    }

    /// An idempotency key is checked by the store's writer with the reply's commit
    /// ([`Batch::guard_idempotency`]), not read before it: a retry's commit writes nothing and
    /// names the original message. A reply whose checks fail is answered from the key the old way
    /// (a retry gets its original answer even when it could no longer be sent now).
    pub(super) async fn reply(
        &self,
        state: &mut State,
        caller: &Caller,
        body: Outgoing,
        idempotency_key: Option<String>,
        media: Option<OutboundMedia>,
    ) -> Result<Message, Error> {
        let now = self.ctx.now();
        let Some(key) = idempotency_key else {
            return match self
                .reply_new(state, caller, body, None, media, now)
                .await?
            {
                Ok(msg) => Ok(msg),
                // Unguarded: never held back.
                Err(_) => Err(Error::Unavailable),
            };
        };
        let refused = check_send(state, caller, &body, now).err();
        let written = match refused {
            None => Some(
                self.reply_new(state, caller, body, Some(key.clone()), media, now)
                    .await,
            ),
            Some(_) => None,
        };
        let seq = match written {
            Some(Ok(Ok(msg))) => return Ok(msg),
            Some(Ok(Err(seq))) => seq,
            // Not written: the key may name an earlier reply, whose answer a retry gets.
            Some(Err(e)) => match self.ctx.store.idempotent_seq(&state.conv.id, &key).await? {
                Some(seq) => seq,
                None => return Err(e),
            },
            None => match self.ctx.store.idempotent_seq(&state.conv.id, &key).await? {
                Some(seq) => seq,
                None => return Err(refused.map_or(Error::Unavailable, Error::from)),
            },
        };
        let Some(msg) = self.message(state, seq).await? else {
            return Err(DomainError::NotFound.into());
        };
        // A retry gets its original answer; anyone else learns nothing of a message they did
        // not write (and is told why this send could not be made, if it could not).
        if msg.author.is_agent(&caller.id) {
            return Ok(msg);
        }
        if let Some(e) = refused {
            return Err(e.into());
        }
        Err(DomainError::Invalid(
            "idempotency_key was already used in this conversation by someone else".into(),
        )
        .into())
    }

    /// Writes a new reply (its checks but `check_send` passed, or no key): the message, or
    /// `Err(seq)` when the idempotency key named message `seq` already, so nothing was written.
    async fn reply_new(
        &self,
        state: &mut State,
        caller: &Caller,
        body: Outgoing,
        idempotency_key: Option<String>,
        media: Option<OutboundMedia>,
        now: Millis,
    ) -> Result<Result<Message, u64>, Error> {
        let id = state.conv.id.clone();
        if idempotency_key.is_none() {
            check_send(state, caller, &body, now)?;
        }
        let slot = self.send_checks(state, &state.conv, &body, now)?;
        let mut body = body;
        let quoted = match &mut body {
            Outgoing::Text {
                reply_to: Some(target),
                ..
            } => {
                let quoted = self.quoted(state, target).await?;
                // Stored as the message's id, however the request spelled it.
                *target = quoted.id();
                quoted.wamid
            }
            _ => None,
        };
        let mut next = state.conv.clone();
        let mut batch = Batch::new();
        if let Some(key) = &idempotency_key {
            batch.guard_idempotency(&id, key);
        }
        let mut queued = self.compose_reply(
            &mut next,
            caller,
            body,
            quoted,
            idempotency_key.clone(),
            &mut batch,
            now,
        )?;
        if let Some(media) = media {
            // Whoever sees this conversation may now download the media.
            batch.put_media_shown(&media.info.id, &id);
            with_media(&mut queued.msg, &mut queued.job, media);
        }
        queued.write(&mut batch, &id, idempotency_key.as_deref())?;
        if let Some(slot) = &slot {
            slot.write(&mut batch, now);
        }
        if let Some(seq) = self.persist_guarded(state, next, batch).await? {
            // A retry: the slot taken for it goes back (dropped uncommitted).
            return Ok(Err(seq));
        }
        if let Some(slot) = slot {
            slot.commit(now);
        }
        Ok(Ok(self.reply_committed(state, queued)))
    }

    /// What every send to the customer is checked for before anything changes, once the
    /// caller's right and the window are: the number can send, a `MARKETING` template does not
    /// go to a customer who stopped marketing, and a template to a customer whose window is
    /// closed takes a slot of the messaging limit (`crate::messaging_limit`: 429 when none is
    /// left). `conv` is the conversation as the send will find it.
    pub(super) fn send_checks(
        &self,
        state: &State,
        conv: &Conversation,
        body: &Outgoing,
        now: Millis,
    ) -> Result<Option<crate::messaging_limit::Slot>, Error> {
        self.check_sendable(state)?;
        let Outgoing::Template { category, .. } = body else {
            return Ok(None);
        };
        if category == "MARKETING" && self.marketing_stopped(conv) {
            return Err(DomainError::MarketingOptedOut.into());
        }
        if conv.window_open(now) {
            return Ok(None);
        }
        let limit = self.ctx.messaging_limit.get().ok_or(Error::Unavailable)?;
        let customer = conv
            .contact
            .phone
            .as_deref()
            .or(conv.contact.user_id.as_deref())
            .unwrap_or(conv.customer.as_str());
        limit.take(customer, now).map_err(|r| {
            DomainError::MessagingLimitReached {
                limit: r.limit,
                retry_after_secs: r.retry_after_secs,
            }
            .into()
        })
    }

    /// Builds the caller's message to the customer into `next` and the reporting events of the
    /// reply into `batch` (the first response of the cycle, this reply's wait, the response
    /// clocks it settles; a late reply whose deadline the timer has not reported yet is a miss,
    /// reported here once). The message and its outbox job are not in `batch` yet
    /// ([`QueuedReply::write`]), so a media reply can still change them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn compose_reply(
        &self,
        next: &mut Conversation,
        caller: &Caller,
        body: Outgoing,
        quoted: Option<String>,
        idempotency_key: Option<String>,
        batch: &mut Batch,
        now: Millis,
    ) -> Result<QueuedReply, Error> {
        let policies = self.ctx.policies();
        let settled: Vec<(SlaKind, bool)> = [SlaKind::FirstResponse, SlaKind::NextResponse]
            .into_iter()
            .filter_map(|kind| policies.sla_met(next, kind, now).map(|met| (kind, met)))
            .collect();
        let sla = next.sla().clone();
        let first = sla
            .first_response_at
            .is_none()
            .then(|| self.span(next.team(), sla.responsible_since, now));
        let wait = sla.waiting_since.map(|w| self.span(next.team(), w, now));
        let agent = Some(caller.id.as_str());
        if let Some(s) = first {
            let e = ReportEvent::of(next, now, agent, ReportKind::FirstResponse(s));
            batch.put_report(&e)?;
        }
        batch.put_report(&ReportEvent::of(
            next,
            now,
            agent,
            ReportKind::Reply { wait },
        ))?;
        for (kind, met) in &settled {
            let e = ReportEvent::of(
                next,
                now,
                agent,
                ReportKind::Sla {
                    kind: *kind,
                    met: *met,
                },
            );
            batch.put_report(&e)?;
        }
        next.on_human_reply(now);
        let (msg, job) = outbound_message(next, &caller.id, body, quoted, idempotency_key, now);
        Ok(QueuedReply {
            msg,
            job,
            settled,
            first,
        })
    }

    /// After the commit of a reply: the actor remembers it, the clocks it settled are counted,
    /// the outbox gets it, watchers learn of it. Answers the message.
    pub(super) fn reply_committed(&self, state: &mut State, queued: QueuedReply) -> Message {
        let QueuedReply {
            msg,
            job,
            settled,
            first,
        } = queued;
        state.recent.remember(&msg);
        for (kind, met) in settled {
            record_sla(state.conv.team(), kind, met);
        }
        if let Some(s) = first {
            m::record_first_response(state.conv.team(), s.wall_ms);
        }
        metrics::counter!(m::OUTBOUND_MESSAGES, "outcome" => "queued").increment(1);
        if let Some(outbox) = self.ctx.outbox.get() {
            outbox.enqueue(job);
        }
        self.publish(
            EventKind::MessageCreated,
            &state.conv,
            Some(msg.clone()),
            None,
        );
        msg
    }

    /// Whether the customer of `conv` stopped marketing messages on its number
    /// (`user_preferences`).
    fn marketing_stopped(&self, conv: &Conversation) -> bool {
        let ids: Vec<&str> = [
            conv.contact.phone.as_deref(),
            conv.contact.user_id.as_deref(),
            Some(conv.customer.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.ctx
            .templates
            .get()
            .is_some_and(|r| r.marketing_stopped(&conv.number, &ids))
    }

    /// Whether the conversation's number can send: its webhooks are kept, but no outbox sends
    /// from a number missing from the config, and a 202 would leave the send pending forever.
    fn check_sendable(&self, state: &State) -> Result<(), Error> {
        if self.ctx.config.number(&state.conv.number).is_none() {
            return Err(DomainError::Invalid(format!(
                "number {} is not in [[numbers]]; nothing can be sent from it",
                state.conv.number
            ))
            .into());
        }
        Ok(())
    }

    /// Message `target` (our id) of this conversation, which a reply quotes, with its wamid;
    /// a message of another conversation, a note, or one WhatsApp has not given a wamid yet
    /// cannot be quoted (400 `invalid_request`, naming which).
    async fn quoted(&self, state: &State, target: &str) -> Result<Message, Error> {
        let not_here = || {
            DomainError::Invalid(format!(
                "reply_to {target:?} names no message of this conversation"
            ))
        };
        let seq = parse_message_id(target)
            .filter(|(conv, _)| *conv == state.conv.id)
            .map(|(_, seq)| seq)
            .ok_or_else(not_here)?;
        let msg = self.message(state, seq).await?.ok_or_else(not_here)?;
        if msg.direction == Direction::Note {
            return Err(DomainError::Invalid(format!(
                "reply_to {target:?} is a note, which WhatsApp never saw"
            ))
            .into());
        }
        if msg.wamid.is_none() {
            return Err(DomainError::Invalid(format!(
                "reply_to {target:?} has no WhatsApp id yet (not accepted by Meta); quote it once it is"
            ))
            .into());
        }
        Ok(msg)
    }

    /// Sets the business's reaction to message `message_id` (`""` removes it) and queues it
    /// for Meta as an outbound message of kind `reaction` (its delivery and any failure show
    /// there), durable with the target's new `reactions` and the outbox job in one batch. If
    /// Meta refuses it, the target shows the reaction that stands again (`after_failure`).
    ///
    /// Idempotent by state: Meta shows one reaction per business per message, so a reaction
    /// the message already shows (the same emoji, whichever agent set it; or a removal when
    /// there is none) changes nothing and sends nothing. Repeated identical requests therefore
    /// send once, even when they race (the actor takes them one at a time).
    pub(super) async fn agent_react(
        &self,
        state: &mut State,
        caller: &Caller,
        message_id: &str,
        emoji: String,
    ) -> Result<Message, Error> {
        let now = self.ctx.now();
        state.conv.check_reply(caller, now)?;
        self.check_sendable(state)?;
        let seq = parse_message_id(message_id)
            .filter(|(conv, _)| *conv == state.conv.id)
            .map(|(_, seq)| seq)
            .ok_or(DomainError::NotFound)?;
        let mut target = self
            .message(state, seq)
            .await?
            .ok_or(DomainError::NotFound)?;
        if target.direction == Direction::Note || target.kind == REACTION_KIND {
            return Err(DomainError::Invalid(format!(
                "message {message_id} is a {}, which cannot be reacted to",
                target.kind
            ))
            .into());
        }
        let Some(wamid) = target.wamid.clone() else {
            return Err(DomainError::Invalid(format!(
                "message {message_id} has no WhatsApp id yet (not accepted by Meta); react once it is"
            ))
            .into());
        };
        if !target.set_business_reaction(&caller.id, &emoji) {
            return Ok(target);
        }
        let mut next = state.conv.clone();
        let mut msg =
            next.append_outbound(Author::Agent(caller.id.clone()), emoji.clone(), None, now);
        msg.kind = REACTION_KIND.to_string();
        msg.reply_to = Some(target.id());
        let job = OutboxJob {
            payload: Payload::Reaction {
                message_id: wamid,
                emoji,
            },
            ..outbox_job(&next, &msg)
        };
        let mut batch = Batch::new();
        batch.put_message(&target)?;
        batch.put_message(&msg)?;
        batch.put_outbox(&job)?;
        state.recent.forget(target.seq);
        self.persist(state, next, batch).await?;
        state.recent.remember(&target);
        state.recent.remember(&msg);
        metrics::counter!(m::OUTBOUND_MESSAGES, "outcome" => "queued").increment(1);
        if let Some(outbox) = self.ctx.outbox.get() {
            outbox.enqueue(job);
        }
        self.publish(EventKind::MessageCreated, &state.conv, Some(msg), None);
        self.publish(
            EventKind::MessageUpdated,
            &state.conv,
            Some(target.clone()),
            None,
        );
        Ok(target)
    }

    /// After `msg` was recorded as failed (by the Graph API's answer or a status callback): a
    /// reaction Meta refused never reached the customer, so the message it targets shows again
    /// the business reaction that stands, the latest one not refused (a later one still
    /// pending included: it is what Meta will get), or none. Reads the conversation's messages,
    /// only when a reaction failed.
    pub(super) async fn after_failure(
        &self,
        state: &mut State,
        msg: &Message,
    ) -> Result<(), Error> {
        if msg.kind != REACTION_KIND
            || msg.direction != Direction::Outbound
            || msg.status != Some(DeliveryStatus::Failed)
        {
            return Ok(());
        }
        let Some(target_id) = msg.reply_to.as_deref() else {
            return Ok(());
        };
        let Some(seq) = parse_message_id(target_id)
            .filter(|(conv, _)| *conv == state.conv.id)
            .map(|(_, seq)| seq)
        else {
            return Ok(());
        };
        let Some(mut target) = self.message(state, seq).await? else {
            return Ok(());
        };
        let messages = self.ctx.store.messages(&state.conv.id).await?;
        let standing = messages.iter().rev().find(|m| {
            m.kind == REACTION_KIND
                && m.direction == Direction::Outbound
                && m.reply_to.as_deref() == Some(target_id)
                && m.status != Some(DeliveryStatus::Failed)
        });
        let (by, emoji) = match standing {
            Some(m) => (m.author.as_str(), m.text.as_deref().unwrap_or("")),
            None => ("", ""),
        };
        if !target.set_business_reaction(by, emoji) {
            return Ok(());
        }
        let mut batch = Batch::new();
        batch.put_message(&target)?;
        state.recent.forget(seq);
        self.ctx.store.commit(batch).await?;
        state.recent.remember(&target);
        self.publish(EventKind::MessageUpdated, &state.conv, Some(target), None);
        Ok(())
    }

    /// Queues a read receipt with typing indicator for the customer's latest message (the
    /// owner only); None when the customer has sent nothing (among the last
    /// [`READ_SCAN_MESSAGES`] messages) to mark. Nothing is stored: see `outbox::reads`.
    pub(super) async fn mark_read(
        &self,
        state: &mut State,
        caller: &Caller,
    ) -> Result<Option<String>, Error> {
        state.conv.check_owner(caller)?;
        self.check_sendable(state)?;
        let Some(last) = self
            .ctx
            .store
            .last_inbound(&state.conv.id, READ_SCAN_MESSAGES)
            .await?
        else {
            return Ok(None);
        };
        let Some(wamid) = &last.wamid else {
            return Ok(None);
        };
        let Some(outbox) = self.ctx.outbox.get() else {
            return Err(Error::Unavailable);
        };
        match outbox.mark_read(&state.conv.number, &state.conv.id, wamid) {
            Ok(()) => Ok(Some(last.id())),
            // The number's read queue is full: nothing queued, the caller may retry.
            Err(ReadRefused::Full | ReadRefused::UnknownNumber) => Err(Error::Unavailable),
        }
    }

    pub(super) async fn note(
        &self,
        state: &mut State,
        caller: &Caller,
        text: String,
    ) -> Result<Message, Error> {
        let mut next = state.conv.clone();
        let msg = note_message(&mut next, caller, text, self.ctx.now());
        let mut batch = Batch::new();
        batch.put_message(&msg)?;
        self.persist(state, next, batch).await?;
        self.publish(
            EventKind::MessageCreated,
            &state.conv,
            Some(msg.clone()),
            None,
        );
        Ok(msg)
    }

    /// Whether message `seq` still waits for a send: pending (its outbox entry exists exactly
    /// as long: both are written, and both settled, in one batch).
    pub(super) async fn awaits_send(
        &self,
        state: &State,
        seq: u64,
    ) -> Result<Option<Message>, Error> {
        Ok(self
            .message(state, seq)
            .await?
            .filter(|m| m.status == Some(DeliveryStatus::Pending)))
    }

    pub(super) async fn send_attempt(
        &self,
        state: &mut State,
        job: OutboxJob,
    ) -> Result<bool, Error> {
        if self.awaits_send(state, job.seq).await?.is_none() {
            // Settled meanwhile (adopted, or a second copy): writing would bring the job back.
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.put_outbox(&job)?;
        self.ctx.store.commit(batch).await?;
        Ok(true)
    }

    pub(super) async fn send_outcome(
        &self,
        state: &mut State,
        seq: u64,
        outcome: Result<Option<String>, MessageError>,
    ) -> Result<bool, Error> {
        let id = state.conv.id.clone();
        let mut batch = Batch::new();
        batch.delete_outbox(&id, seq);
        let Some(mut msg) = self.awaits_send(state, seq).await? else {
            // Unknown or already settled (a duplicate outcome after a restart, or a status
            // callback adopted it while the request was out): drop the job.
            self.ctx.store.commit(batch).await?;
            return Ok(false);
        };
        let wamid = outcome.as_ref().ok().cloned().flatten();
        let label = match outcome {
            Ok(wamid) => {
                msg.status = Some(DeliveryStatus::Accepted);
                msg.wamid = wamid;
                "accepted"
            }
            Err(e) => {
                let label = if e.is_window_closed() {
                    "window_closed"
                } else {
                    "failed"
                };
                msg.status = Some(DeliveryStatus::Failed);
                msg.error = Some(e);
                label
            }
        };
        batch.put_message(&msg)?;
        state.recent.forget(seq);
        // With a wamid, the writer reads the status parked for it right after this commit
        // (`wamid_recorded`'s check), which saves every send a trip to the blocking pool.
        let orphan = match &wamid {
            Some(w) => self.ctx.store.commit_then_orphan(batch, w).await?,
            None => {
                self.ctx.store.commit(batch).await?;
                None
            }
        };
        state.recent.remember(&msg);
        if let Some(wamid) = wamid {
            self.wamid_known(state, &msg, &wamid);
            if let Some(orphan) = orphan {
                self.apply_orphan(state, &mut msg, &wamid, orphan).await?;
            }
        }
        self.after_failure(state, &msg).await?;
        metrics::counter!(m::OUTBOUND_MESSAGES, "outcome" => label).increment(1);
        self.record_delay(state, &msg);
        self.publish(EventKind::MessageStatus, &state.conv, Some(msg), None);
        Ok(true)
    }

    /// `at` is when the reply was accepted (the 202): the delay a customer waits for it.
    pub(super) fn record_delay(&self, state: &State, msg: &Message) {
        let delay_ms = self.ctx.now().saturating_sub(msg.at).max(0);
        metrics::histogram!(m::OUTBOUND_DELAY, "number" => state.conv.number.clone())
            .record(delay_ms as f64 / 1000.0);
    }

    /// After the commit that gave `msg` its wamid (its index entry): remembers where the wamid
    /// lives and applies a status parked for it meanwhile.
    pub(super) async fn wamid_recorded(
        &self,
        state: &mut State,
        msg: &mut Message,
        wamid: &str,
    ) -> Result<(), Error> {
        self.wamid_known(state, msg, wamid);
        // Write first, check second (the webhook path does the same in the other order): a
        // status that came before the wamid was recorded was parked as an orphan and is applied
        // here; one parked after this commit finds the wamid and comes to this actor as a Status
        // message. (Only this read, after the commit, is needed: reading before it too would
        // cost every send a second blocking-pool round trip.) A send's outcome has the writer
        // make this read right after its commit (`Store::commit_then_orphan`).
        if let Some(orphan) = self.ctx.store.orphan_status(wamid).await? {
            self.apply_orphan(state, msg, wamid, orphan).await?;
        }
        Ok(())
    }

    /// Remembers where `msg`'s wamid lives, once it is durable.
    fn wamid_known(&self, state: &mut State, msg: &Message, wamid: &str) {
        if let Some(seen) = &mut state.seen {
            seen.insert(wamid);
        }
        self.ctx.sent.remember(
            wamid,
            crate::store::WamidRef {
                conversation_id: state.conv.id.clone(),
                seq: msg.seq,
            },
        );
    }

    /// Applies to `msg` the status parked for its wamid before the wamid was recorded.
    async fn apply_orphan(
        &self,
        state: &mut State,
        msg: &mut Message,
        wamid: &str,
        orphan: crate::store::StatusUpdate,
    ) -> Result<(), Error> {
        let changed = msg.apply_status(orphan.status, orphan.error);
        let mut batch = Batch::new();
        batch.delete_orphan_status(wamid);
        if changed {
            batch.put_message(msg)?;
            state.recent.forget(msg.seq);
        }
        self.ctx.store.commit(batch).await?;
        if changed {
            state.recent.remember(msg);
        }
        Ok(())
    }

    pub(super) async fn adopt(
        &self,
        state: &mut State,
        seq: u64,
        update: InboundStatus,
    ) -> Result<bool, Error> {
        if update.number != state.conv.number {
            return Ok(false);
        }
        let Some(mut msg) = self.message(state, seq).await? else {
            return Ok(false);
        };
        if msg.direction != Direction::Outbound {
            return Ok(false);
        }
        match &msg.wamid {
            // Adopted (or answered) since the webhook looked the wamid up: an ordinary status.
            Some(w) if *w == update.wamid => {
                return self.status(state, seq, update).await.map(|_| true)
            }
            Some(_) => return Ok(false),
            None => {}
        }
        let pending = msg.status == Some(DeliveryStatus::Pending);
        // Pending: the send is out, held or queued. Accepted without a wamid: an answer without
        // `messages[0].id` recorded by an earlier release. A failed message stays failed.
        if !pending && msg.status != Some(DeliveryStatus::Accepted) {
            return Ok(false);
        }
        let id = state.conv.id.clone();
        let mut batch = Batch::new();
        batch.put_status_log(&update.wamid, update.status, update.at, &update.raw);
        if pending {
            batch.delete_outbox(&id, seq);
            msg.status = Some(DeliveryStatus::Accepted);
        }
        msg.wamid = Some(update.wamid.clone());
        msg.apply_status(update.status, update.error.clone());
        let priced = take_pricing(&mut msg, update.pricing.clone());
        batch.put_message(&msg)?;
        state.recent.forget(seq);
        self.ctx.store.commit(batch).await?;
        state.recent.remember(&msg);
        if priced {
            count_billable(&state.conv.number, &msg);
        }
        self.wamid_recorded(state, &mut msg, &update.wamid).await?;
        metrics::counter!(m::OUTBOX_ADOPTED, "number" => state.conv.number.clone()).increment(1);
        metrics::counter!(m::STATUS_UPDATES, "outcome" => "applied").increment(1);
        if pending {
            metrics::counter!(m::OUTBOUND_MESSAGES, "outcome" => "accepted").increment(1);
            self.record_delay(state, &msg);
            if let Some(outbox) = self.ctx.outbox.get() {
                outbox.adopted(&state.conv.number, &id, seq);
            }
        }
        self.publish(EventKind::MessageStatus, &state.conv, Some(msg), None);
        Ok(true)
    }
}

/// A reply composed by [`ConversationActor::compose_reply`], not yet committed.
pub(super) struct QueuedReply {
    pub msg: Message,
    pub job: OutboxJob,
    /// The response clocks it settles (met or not).
    settled: Vec<(SlaKind, bool)>,
    /// The first response of the cycle it is, if it is one.
    first: Option<Span>,
}

impl QueuedReply {
    /// Puts the message, its outbox job and its idempotency key into `batch`.
    pub fn write(
        &self,
        batch: &mut Batch,
        conversation_id: &str,
        idempotency_key: Option<&str>,
    ) -> Result<(), Error> {
        batch.put_message(&self.msg)?;
        batch.put_outbox(&self.job)?;
        if let Some(key) = idempotency_key {
            batch.put_idempotency(conversation_id, key, self.msg.seq);
        }
        Ok(())
    }
}

/// What agent `author` sends to the customer, durable with its outbox job in the same batch: a
/// text (quoting the message whose wamid is `quoted`) or an interactive message (kind
/// `interactive`, its body text as `text`, Meta's object as `content`).
pub(super) fn outbound_message(
    conv: &mut Conversation,
    author: &str,
    body: Outgoing,
    quoted: Option<String>,
    idempotency_key: Option<String>,
    now: Millis,
) -> (Message, OutboxJob) {
    let author = Author::Agent(author.to_string());
    match body {
        Outgoing::Text { body, reply_to } => {
            let mut msg = conv.append_outbound(author, body.clone(), idempotency_key, now);
            msg.reply_to = reply_to;
            let job = OutboxJob {
                payload: Payload::Text {
                    body,
                    reply_to: quoted,
                },
                ..outbox_job(conv, &msg)
            };
            (msg, job)
        }
        Outgoing::Interactive { json, summary } => {
            let mut msg = conv.append_outbound(author, summary, idempotency_key, now);
            msg.kind = INTERACTIVE_KIND.to_string();
            msg.content = Some(Content::Interactive { json: json.clone() });
            let job = OutboxJob {
                payload: Payload::Interactive { json },
                ..outbox_job(conv, &msg)
            };
            (msg, job)
        }
        Outgoing::Template {
            name,
            language,
            components_json,
            summary,
            ..
        } => {
            let mut msg = conv.append_outbound(author, summary, idempotency_key, now);
            msg.kind = TEMPLATE_KIND.to_string();
            let job = OutboxJob {
                payload: Payload::Template {
                    name,
                    language,
                    components_json,
                },
                ..outbox_job(conv, &msg)
            };
            (msg, job)
        }
    }
}

/// Only the owner sends; a template may be sent outside the 24-hour window, anything else only
/// inside it.
fn check_send(
    state: &State,
    caller: &Caller,
    body: &Outgoing,
    now: Millis,
) -> Result<(), DomainError> {
    match body {
        Outgoing::Template { .. } => state.conv.check_owner(caller),
        _ => state.conv.check_reply(caller, now),
    }
}

/// Makes a text reply a media message: the caption is its text, the outbox uploads the media
/// and sends it by Meta's id.
fn with_media(msg: &mut Message, job: &mut OutboxJob, media: OutboundMedia) {
    let caption = msg.text.take().filter(|t| !t.is_empty());
    msg.kind = media.kind.clone();
    msg.text = caption.clone();
    job.payload = Payload::Media {
        kind: media.kind,
        media_id: media.info.id.clone(),
        mime_type: media.info.mime_type.clone(),
        filename: media.info.filename.clone(),
        caption: caption.clone(),
        meta_id: None,
    };
    msg.media = Some(crate::domain::message::MediaInfo {
        caption,
        ..media.info
    });
}

/// The outbox's copy of outbound message `msg`: what to send, from which number, to whom.
pub(super) fn outbox_job(conv: &Conversation, msg: &Message) -> OutboxJob {
    OutboxJob {
        conversation_id: conv.id.clone(),
        seq: msg.seq,
        number: conv.number.clone(),
        to: conv.customer.clone(),
        payload: Payload::Text {
            body: msg.text.clone().unwrap_or_default(),
            reply_to: None,
        },
        in_doubt: false,
    }
}

pub(super) fn note_message(
    conv: &mut Conversation,
    caller: &Caller,
    text: String,
    now: i64,
) -> Message {
    conv.append_note(Author::Agent(caller.id.clone()), text, now)
}
