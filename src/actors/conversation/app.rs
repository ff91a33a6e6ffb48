//! Coexistence: what the business does in the WhatsApp Business App on a number it also uses
//! through the broker — its own messages (echoes), their edits and revokes, the chat history it
//! shares when onboarded, and the names it gives its contacts.
//!
//! Invariants:
//! - nothing here routes, queues, assigns, starts the bot, moves an SLA clock, counts as an
//!   agent's answer or sends anything: only the messages and the conversation's times change
//!   (a conversation made by the app alone is `resolved`, see
//!   [`Conversation::settle_as_app_only`]);
//! - every message is stored once by wamid (a redelivered echo or history chunk changes
//!   nothing); an edit or revoke applied again changes nothing either;
//! - one delivery is one commit, as for inbound messages.

use super::*;
use crate::domain::inbound::{AppEdit, AppMessage};
use crate::domain::message::Lifecycle;

impl ConversationActor {
    /// Which of `wamids` are already stored, as [`Self::stored_wamids`] tells it for inbound
    /// messages (the live set when complete, else storage).
    async fn stored_app_wamids(
        &self,
        state: &State,
        items: &[AppMessage],
    ) -> Result<Vec<bool>, Error> {
        let mut stored: Vec<bool> = match &state.seen {
            Some(seen) => items.iter().map(|m| seen.contains(&m.wamid)).collect(),
            None => vec![false; items.len()],
        };
        if state.persisted && state.seen.is_none() {
            let found = self
                .ctx
                .store
                .lookup_wamids(items.iter().map(|m| m.wamid.clone()).collect())
                .await?;
            for (s, r) in stored.iter_mut().zip(found) {
                *s |= r.is_some();
            }
        }
        Ok(stored)
    }

    pub(super) async fn app_messages(
        &self,
        state: &mut State,
        mut items: Vec<AppMessage>,
    ) -> Result<InboundAck, Error> {
        // Time order: a chunk's messages and an edit after what it edits (Meta's timestamps;
        // ties keep Meta's order).
        items.sort_by_key(|m| m.sent_at);
        let known = self.stored_app_wamids(state, &items).await?;
        let mut next = state.conv.clone();
        let is_new = !state.persisted;
        if is_new {
            next.last_message_at = Millis::MIN;
            next.settle_as_app_only();
        }
        let mut ack = InboundAck::default();
        let mut seen = HashSet::new();
        let mut created: Vec<Message> = Vec::new();
        let mut changed: Vec<Message> = Vec::new();
        let (mut echoes, mut imported) = (0u64, 0u64);
        for (item, known) in items.into_iter().zip(known) {
            if let Some(edit) = item.edit {
                if self
                    .apply_edit(state, &mut created, &mut changed, edit, item.sent_at)
                    .await?
                {
                    echoes += 1;
                }
                continue;
            }
            if known || !seen.insert(item.wamid.clone()) {
                ack.duplicates += 1;
                continue;
            }
            let inbound = !item.from_business;
            next.learn_customer(&CustomerIds {
                phone: Some(item.customer.clone()),
                ..CustomerIds::default()
            });
            next.on_app_message(item.sent_at, inbound);
            let (direction, author, status) = if inbound {
                (
                    Direction::Inbound,
                    Author::Customer(item.customer),
                    DeliveryStatus::Received,
                )
            } else {
                // The app sent it; Meta's history may say how far it got.
                let status = item
                    .status
                    .filter(|s| !matches!(s, DeliveryStatus::Received | DeliveryStatus::Pending))
                    .unwrap_or(DeliveryStatus::Sent);
                (Direction::Outbound, Author::BusinessApp, status)
            };
            if item.imported {
                imported += 1;
            } else {
                echoes += 1;
            }
            created.push(Message {
                conversation_id: next.id.clone(),
                seq: next.take_seq(),
                direction,
                kind: item.kind,
                text: item.text,
                wamid: Some(item.wamid),
                status: Some(status),
                author,
                at: item.sent_at,
                error: None,
                idempotency_key: None,
                raw: Some(item.raw),
                reply_to: None,
                reactions: Vec::new(),
                referral: item.detail.referral,
                media: item.detail.media,
                pricing: None,
                content: item.detail.content,
                lifecycle: Lifecycle {
                    imported: item.imported,
                    ..Lifecycle::default()
                },
            });
        }
        if created.is_empty() && changed.is_empty() {
            return Ok(ack);
        }
        let now = self.ctx.now();
        let mut batch = Batch::new();
        let mut fetches = 0;
        for msg in created.iter().chain(&changed) {
            batch.put_message(msg)?;
        }
        // An echo's media has Meta's id, fetched like a customer's; history media come without
        // one (Meta sends the ids of recent ones later), so there is nothing to fetch.
        for msg in created
            .iter()
            .filter(|m| m.media.as_ref().is_some_and(|i| !i.id.is_empty()))
        {
            fetches += queue_fetch(&mut batch, msg, now)?;
        }
        for msg in &changed {
            state.recent.forget(msg.seq);
        }
        if created.is_empty() && !is_new {
            // Edits and revokes only: the record stays as it is.
            self.ctx.store.commit(batch).await?;
        } else {
            if let Err(e) = self.persist(state, next, batch).await {
                // A failed commit may still have reached the disk; only storage knows now.
                state.seen = None;
                return Err(e);
            }
        }
        if let Some(seen) = &mut state.seen {
            for w in created.iter().filter_map(|m| m.wamid.as_deref()) {
                seen.insert(w);
            }
        }
        if fetches > 0 {
            metrics::gauge!(m::MEDIA_FETCH_PENDING).increment(fetches as f64);
            self.ctx.media_queued.queued(now);
        }
        ack.stored = created.len();
        metrics::counter!(m::APP_ECHOES).increment(echoes);
        metrics::counter!(m::HISTORY_IMPORTED).increment(imported);
        let conv = &state.conv;
        if is_new {
            self.publish(EventKind::ConversationCreated, conv, None, None);
        }
        for msg in created {
            self.publish(EventKind::MessageCreated, conv, Some(msg), None);
        }
        for msg in changed {
            self.publish(EventKind::MessageUpdated, conv, Some(msg), None);
        }
        Ok(ack)
    }

    /// Applies an edit or revoke to the business's message it names (in this delivery or
    /// stored); answers whether it changed anything. A target that is not the business app's
    /// own message, or not found (not imported, another conversation's), is left alone: the
    /// change stays kept verbatim.
    async fn apply_edit(
        &self,
        state: &State,
        created: &mut [Message],
        changed: &mut Vec<Message>,
        edit: AppEdit,
        at: Millis,
    ) -> Result<bool, Error> {
        let original = match &edit {
            AppEdit::Edit { original, .. } | AppEdit::Revoke { original } => original.clone(),
        };
        let apply = |msg: &mut Message| -> bool {
            if msg.author != Author::BusinessApp {
                return false;
            }
            match &edit {
                AppEdit::Edit { text, .. } => {
                    if msg.lifecycle.edited_at.is_some() && msg.text == *text {
                        return false;
                    }
                    msg.text = text.clone();
                    msg.lifecycle.edited_at = Some(at);
                    true
                }
                AppEdit::Revoke { .. } => {
                    if msg.lifecycle.revoked_at.is_some() {
                        return false;
                    }
                    msg.lifecycle.revoked_at = Some(at);
                    true
                }
            }
        };
        let is_it = |m: &Message| m.wamid.as_deref() == Some(original.as_str());
        if let Some(msg) = created.iter_mut().find(|m| is_it(m)) {
            return Ok(apply(msg));
        }
        if let Some(msg) = changed.iter_mut().find(|m| is_it(m)) {
            return Ok(apply(msg));
        }
        let found = self
            .ctx
            .store
            .lookup_wamids(vec![original.clone()])
            .await?
            .into_iter()
            .flatten()
            .next();
        let Some(r) = found.filter(|r| r.conversation_id == state.conv.id) else {
            return Ok(false);
        };
        let Some(mut msg) = self.message(state, r.seq).await? else {
            return Ok(false);
        };
        if !apply(&mut msg) {
            return Ok(false);
        }
        changed.push(msg);
        Ok(true)
    }

    /// The business's app names (or, `None`, stops naming) the customer with phone `phone`.
    pub(super) async fn app_name(
        &self,
        state: &mut State,
        phone: &str,
        name: Option<String>,
    ) -> Result<bool, Error> {
        if !state.persisted
            || state.conv.contact.phone.as_deref() != Some(phone)
            || state.conv.customer_name == name
        {
            return Ok(false);
        }
        let mut next = state.conv.clone();
        next.customer_name = name;
        self.persist(state, next, Batch::new()).await?;
        metrics::counter!(m::APP_CONTACT_SYNC).increment(1);
        Ok(true)
    }
}
