//! Applies Meta's coexistence webhooks (`smb_message_echoes`, `history`,
//! `smb_app_state_sync`) once they are kept verbatim (see [`crate::ingest`]): echoes and history
//! go to their customers' conversations (found or made as for inbound messages, see
//! [`crate::identity`]), contact names to the conversations of customers the broker knows.
//!
//! Invariants:
//! - called only after the changes are durable, and before the webhook is answered: a failure is
//!   a 500 and Meta's redelivery applies them again, which changes nothing already applied
//!   (messages are stored once by wamid, edits and names are idempotent);
//! - a change for a `phone_number_id` missing from `[[numbers]]` is counted
//!   (`switchboard_unknown_number_total`) and left kept, never a conversation;
//! - nothing here routes, assigns, starts the bot or an SLA clock, or sends (see
//!   `actors::conversation::app`).
//!
//! Bounds: contact names [`NAMES_AT_ONCE`] at a time; one webhook body (3 MiB, `http::webhook::MAX_BODY_BYTES`, Meta's own limit for a
//! webhook) holds every message applied at once; they are grouped per conversation, one commit
//! each, all conversations concurrently, as inbound messages are.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::try_join_all;
use futures_util::stream::{self, StreamExt, TryStreamExt};

use crate::actors::{ConversationMsg, Ctx};
use crate::domain::inbound::{AppContact, AppMessage, OtherChange};
use crate::domain::{Conversation, CustomerIds};
use crate::error::Error;
use crate::identity;
use crate::metrics as m;
use crate::whatsapp::coexistence::{parse, FIELDS};

/// Whether a kept change is one this module applies.
pub fn is_coexistence(field: &str) -> bool {
    FIELDS.contains(&field)
}

/// Applies every coexistence change of one webhook.
pub async fn apply(ctx: &Arc<Ctx>, changes: &[OtherChange]) -> Result<(), Error> {
    let mut messages: Vec<AppMessage> = Vec::new();
    let mut contacts: Vec<AppContact> = Vec::new();
    for o in changes.iter().filter(|o| is_coexistence(&o.field)) {
        let Some(change) = parse(&o.field, &o.raw) else {
            continue;
        };
        if ctx.config.number(&change.number).is_none() {
            metrics::counter!(m::UNKNOWN_NUMBER).increment(1);
            continue;
        }
        messages.extend(change.messages);
        contacts.extend(change.contacts);
    }
    if !messages.is_empty() {
        deliver(ctx, messages).await?;
    }
    // After this body's messages, so a name finds a conversation its history just made. An
    // address book sync may name thousands: a bounded number at once, the last change of each
    // contact only (the order within the body is the order of events).
    let mut last: HashMap<(String, String), Option<String>> = HashMap::new();
    for c in contacts {
        last.insert((c.number, c.phone), c.name);
    }
    stream::iter(last)
        .map(|((number, phone), name)| async move {
            identity::name_contact(ctx, &number, &phone, name).await
        })
        .buffer_unordered(NAMES_AT_ONCE)
        .try_collect::<Vec<bool>>()
        .await?;
    Ok(())
}

/// Contact names applied at once (each one read of the contact index and, for a known
/// customer, one commit).
const NAMES_AT_ONCE: usize = 32;

async fn deliver(ctx: &Arc<Ctx>, messages: Vec<AppMessage>) -> Result<(), Error> {
    let ids: Vec<CustomerIds> = messages
        .iter()
        .map(|m| CustomerIds {
            phone: Some(m.customer.clone()),
            ..CustomerIds::default()
        })
        .collect();
    let senders: Vec<(&str, &CustomerIds)> = messages
        .iter()
        .zip(&ids)
        .map(|(m, ids)| (m.number.as_str(), ids))
        .collect();
    let held = identity::lock_ids(&senders).await;
    let mut resolved = identity::resolve_all(ctx, &senders).await?;
    drop(held);
    let conversation_ids = std::mem::take(&mut resolved.ids);
    let now = ctx.now();
    let mut groups: HashMap<String, (Conversation, Vec<AppMessage>)> = HashMap::new();
    for ((mut msg, ids), id) in messages.into_iter().zip(&ids).zip(conversation_ids) {
        // As for inbound messages: a time far ahead would keep the window open that long.
        if msg.sent_at > now.saturating_add(crate::domain::inbound::MAX_FUTURE_SKEW_MS) {
            metrics::counter!(m::INBOUND_FUTURE_TIMESTAMPS).increment(1);
            msg.sent_at = now;
        }
        groups
            .entry(id.clone())
            .or_insert_with(|| {
                let team = ctx.default_team(&msg.number);
                (
                    Conversation::for_customer(id.clone(), &msg.number, ids, &team, now),
                    Vec::new(),
                )
            })
            .1
            .push(msg);
    }
    let deliveries = groups.into_iter().map(|(id, (seed, messages))| {
        let ctx = ctx.clone();
        async move {
            ctx.ask(&id, Some(&seed), |reply| ConversationMsg::App {
                messages: messages.clone(),
                reply,
            })
            .await
        }
    });
    try_join_all(deliveries).await?;
    resolved.settle();
    Ok(())
}
