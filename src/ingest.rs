//! Makes a parsed webhook notification durable: every message, status and other change.
//!
//! Messages are grouped by conversation and handed to each conversation's actor (activated, or
//! created from a seed), all groups concurrently; the call returns only when every group is
//! durable, so the transport may answer 200. Statuses go to the conversation that owns their
//! wamid (found in memory for recent sends, `actors::sent`, else in storage). A status whose
//! wamid is not known yet (it raced the Graph API's answer, or the answer never came) goes to the
//! message it names in `biz_opaque_callback_data`, which adopts the wamid (see `outbox`); one
//! naming no message of ours is parked as an orphan. Both this path and the paths that record a
//! wamid write first and check second, so whichever comes last applies it; parking one wamid is
//! serialized (read the parked status, keep the more advanced), so concurrent webhooks never put
//! back a less advanced one. Every status is also kept whole, in the commit that settles it
//! (applied, stale, adopted or parked). Other changes (template updates, account events, echoes)
//! are kept verbatim; the template ones also update the template registry (`crate::templates`),
//! the coexistence ones (`smb_message_echoes`, `history`, `smb_app_state_sync`) their
//! conversations (`crate::coexistence`).
//!
//! A message for a `phone_number_id` missing from `[[numbers]]` is counted
//! (`switchboard_unknown_number_total`) and kept verbatim (field [`UNKNOWN_NUMBER_FIELD`]), never
//! a conversation; so is a coexistence change for one. Its statuses go on as any status (they
//! open nothing; one for a wamid nobody knows is parked and kept).
//!
//! Each message's conversation is its sender's contact's, found from the phone and user id it
//! names, for the whole body at once (see [`crate::identity`], which also says how racing
//! webhooks are kept from making two contacts for one person: the ids stay pending until the
//! messages are durable); a message naming neither is kept verbatim by the parser and counted
//! here. A `system` message opens no conversation: it is shown in its contact's conversation
//! when there is one, and one that changes the sender's number or user id moves the contact's
//! ids; every one is also kept verbatim (field `system`) and counted.
//!
//! Before any of that, inbound messages are checked against the body itself: a wamid listed
//! twice (under two customers, even) is stored once, the first time, and a Meta `timestamp`
//! more than [`MAX_FUTURE_SKEW_MS`] ahead of the broker's clock becomes the arrival time, since
//! it decides when the 24-hour window closes.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures_util::future::{join_all, try_join_all};
use tokio::sync::Mutex;

use crate::actors::{ConversationMsg, Ctx};
use crate::domain::inbound::{InboundMessage, InboundStatus, Notification, OtherChange};
use crate::domain::{Conversation, CustomerIds, DomainError};
use crate::error::Error;
use crate::identity;
use crate::log_limit::LogLimit;
use crate::metrics as m;
use crate::store::{Batch, StatusUpdate};
use crate::whatsapp::webhook::callback_message;

/// The field under which a message to a `phone_number_id` missing from `[[numbers]]` is kept
/// (`{"phone_number_id", "message"}`, the message as Meta sent it).
pub const UNKNOWN_NUMBER_FIELD: &str = "unknown_number";

fn unknown_number_raw(number: &str, message: &str) -> String {
    let number = serde_json::Value::String(number.to_string());
    format!(r#"{{"phone_number_id":{number},"message":{message}}}"#)
}

pub use crate::domain::inbound::MAX_FUTURE_SKEW_MS;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestReport {
    pub stored: usize,
    pub duplicates: usize,
    pub statuses: usize,
    pub other: usize,
}

pub async fn ingest(ctx: &Arc<Ctx>, n: Notification) -> Result<IngestReport, Error> {
    let mut report = IngestReport {
        statuses: n.statuses.len(),
        other: n.other.len(),
        ..Default::default()
    };
    if n.no_customer > 0 {
        metrics::counter!(m::INBOUND_NO_CUSTOMER).increment(n.no_customer as u64);
    }
    let now = ctx.now();
    // A message to a number the broker does not serve is kept, never a conversation.
    let (served, unserved): (Vec<_>, Vec<_>) = n
        .messages
        .into_iter()
        .partition(|m| ctx.config.number(&m.number).is_some());
    let mut n = Notification {
        messages: served,
        ..n
    };
    for msg in &unserved {
        metrics::counter!(m::UNKNOWN_NUMBER).increment(1);
        n.other.push(OtherChange {
            field: UNKNOWN_NUMBER_FIELD.to_string(),
            raw: unknown_number_raw(&msg.number, &msg.raw),
        });
    }
    // Held while ids move and messages are resolved: see `identity` (one person's webhooks never
    // race to make two contacts).
    let held = identity::lock(&n.messages).await;
    // `system` messages open no conversation. Those that move their contact's ids go first, so
    // later messages of this body already find the new ids; the others are shown once this
    // body's messages are stored, so a notice finds a conversation its body opened. All are kept
    // verbatim too.
    let (system, messages): (Vec<_>, Vec<_>) =
        n.messages.into_iter().partition(|m| m.kind == "system");
    let (moves, notices): (Vec<_>, Vec<_>) = system
        .into_iter()
        .partition(|m| m.identity_change.is_some());
    let mut other = n.other;
    for msg in moves.iter().chain(&notices) {
        metrics::counter!(m::INBOUND_SYSTEM).increment(1);
        other.push(OtherChange {
            field: "system".to_string(),
            raw: msg.raw.clone(),
        });
    }
    for msg in &moves {
        identity::change_ids(
            ctx,
            &msg.number,
            &msg.ids,
            msg.identity_change.as_ref(),
            msg,
        )
        .await?;
    }
    report.other = other.len();
    let senders: Vec<(&str, &CustomerIds)> = messages
        .iter()
        .map(|m| (m.number.as_str(), &m.ids))
        .collect();
    let mut resolved = identity::resolve_all(ctx, &senders).await?;
    // The resolved ids stay pending (found by other webhooks) until `settle` below.
    drop(held);
    let ids = std::mem::take(&mut resolved.ids);
    let fresh = std::mem::take(&mut resolved.fresh);
    // Per conversation: its seed, whether resolution found it free (see `Ctx::ask_fresh`), and
    // this body's messages for it.
    let mut groups: HashMap<String, (Conversation, Option<u64>, Vec<InboundMessage>)> =
        HashMap::new();
    // A wamid is one message, stored once, under the first customer (and number) the body
    // lists it with: a second listing is a duplicate, never a second message.
    let mut listed: HashMap<String, String> = HashMap::new();
    for ((mut msg, id), fresh) in messages.into_iter().zip(ids).zip(fresh) {
        match listed.get(&msg.wamid) {
            Some(first) => {
                report.duplicates += 1;
                metrics::counter!(m::INBOUND_DUPLICATES).increment(1);
                if *first != id {
                    metrics::counter!(m::INBOUND_WAMID_CONFLICTS).increment(1);
                    static LOG: LogLimit = LogLimit::new(5);
                    if let Some(held_back) = LOG.check() {
                        tracing::warn!(wamid = %msg.wamid, first = %first, again = %id, held_back,
                            "a wamid listed under two conversations in one webhook; keeping the first");
                    }
                }
                continue;
            }
            None => {
                listed.insert(msg.wamid.clone(), id.clone());
            }
        }
        if msg.sent_at > now.saturating_add(MAX_FUTURE_SKEW_MS) {
            // Trusted, it would keep the customer-service window open that much longer.
            metrics::counter!(m::INBOUND_FUTURE_TIMESTAMPS).increment(1);
            msg.sent_at = now;
        }
        let group = groups.entry(id.clone()).or_insert_with(|| {
            let team = ctx.default_team(&msg.number);
            (
                Conversation::for_customer(id.clone(), &msg.number, &msg.ids, &team, now),
                None,
                Vec::new(),
            )
        });
        group.1 = group.1.or(fresh);
        group.2.push(msg);
    }
    let deliveries = groups.into_iter().map(|(id, (seed, fresh, messages))| {
        let ctx = ctx.clone();
        async move {
            ctx.ask_fresh(&id, Some(&seed), fresh, |reply| ConversationMsg::Inbound {
                messages: messages.clone(),
                reply,
            })
            .await
        }
    });
    let statuses = deliver_statuses(ctx, n.statuses);
    let other = keep_other(ctx, other);
    let (acks, (), ()) = tokio::try_join!(try_join_all(deliveries), statuses, other)?;
    resolved.settle();
    for a in acks {
        report.stored += a.stored;
        report.duplicates += a.duplicates;
    }
    for msg in &notices {
        identity::change_ids(ctx, &msg.number, &msg.ids, None, msg).await?;
    }
    Ok(report)
}

async fn deliver_statuses(ctx: &Arc<Ctx>, statuses: Vec<InboundStatus>) -> Result<(), Error> {
    if statuses.is_empty() {
        return Ok(());
    }
    // Recent sends are found in memory (`actors::sent`); only the rest read storage.
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for s in statuses {
        match ctx.sent.get(&s.wamid) {
            Some(r) => known.push((r, s)),
            None => unknown.push(s),
        }
    }
    let refs = if unknown.is_empty() {
        Vec::new()
    } else {
        ctx.store
            .lookup_wamids(unknown.iter().map(|s| s.wamid.clone()).collect())
            .await?
    };
    let mut orphans = Vec::new();
    let mut named = Vec::new();
    for (s, r) in unknown.into_iter().zip(refs) {
        match (r, callback_message(&s)) {
            (Some(r), _) => known.push((r, s)),
            (None, Some((conversation, seq))) => named.push((conversation, seq, s)),
            (None, None) => orphans.push(s),
        }
    }
    // The message named by the callback takes the wamid (or already has it); a name that is not
    // one of ours parks the status like any unknown one.
    let adoptions = named.into_iter().map(|(conversation, seq, s)| {
        let ctx = ctx.clone();
        async move {
            let adopted = ctx
                .ask(&conversation, None, |reply| ConversationMsg::Adopt {
                    seq,
                    update: s.clone(),
                    reply,
                })
                .await;
            (s, adopted)
        }
    });
    for (s, adopted) in join_all(adoptions).await {
        match adopted {
            Ok(true) => {}
            Ok(false) | Err(Error::Domain(DomainError::NotFound)) => orphans.push(s),
            Err(e) => return Err(e),
        }
    }
    if !orphans.is_empty() {
        park_orphans(ctx, &orphans).await?;
        // Write first, check second: the send outcome may have landed in between.
        let again = ctx
            .store
            .lookup_wamids(orphans.iter().map(|s| s.wamid.clone()).collect())
            .await?;
        for (s, r) in orphans.into_iter().zip(again) {
            match r {
                Some(r) => known.push((r, s)),
                None => metrics::counter!(m::STATUS_UPDATES, "outcome" => "orphan").increment(1),
            }
        }
    }
    let calls = known.into_iter().map(|(r, s)| {
        let ctx = ctx.clone();
        async move {
            ctx.ask(&r.conversation_id, None, |reply| ConversationMsg::Status {
                seq: r.seq,
                update: s.clone(),
                reply,
            })
            .await
        }
    });
    try_join_all(calls).await?;
    Ok(())
}

/// Locks serializing the parking of one wamid (by hash): without them two webhooks could both
/// read "nothing parked" and the one writing last would win, a `sent` over a `read`. Held only
/// across one read and one commit; a fixed number, so memory is bounded whatever the traffic.
const PARKING_LOCKS: usize = 64;
static PARKING: [Mutex<()>; PARKING_LOCKS] = [const { Mutex::const_new(()) }; PARKING_LOCKS];

fn parking_lock(wamid: &str) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    wamid.hash(&mut h);
    (h.finish() % PARKING_LOCKS as u64) as usize
}

/// Stores statuses for unknown wamids, keeping the most advanced one per wamid (across this
/// notification and what is already parked).
async fn park_orphans(ctx: &Arc<Ctx>, orphans: &[InboundStatus]) -> Result<(), Error> {
    let mut best: HashMap<&str, &InboundStatus> = HashMap::new();
    for s in orphans {
        match best.get(s.wamid.as_str()) {
            Some(b) if !b.status.can_become(s.status) => {}
            _ => {
                best.insert(s.wamid.as_str(), s);
            }
        }
    }
    // Every orphan is kept whole, the ones a more advanced status supersedes too.
    let mut batch = Batch::new();
    for s in orphans {
        batch.put_status_log(&s.wamid, s.status, s.at, &s.raw);
    }
    // Taken in ascending order, so two notifications never wait on each other's locks.
    let mut locks: Vec<usize> = best.keys().map(|w| parking_lock(w)).collect();
    locks.sort_unstable();
    locks.dedup();
    let mut _held = Vec::with_capacity(locks.len());
    for i in locks {
        _held.push(PARKING[i].lock().await);
    }
    for (wamid, s) in best {
        let existing = ctx.store.orphan_status(wamid).await?;
        if existing
            .as_ref()
            .is_some_and(|e| !e.status.can_become(s.status))
        {
            continue;
        }
        batch.put_orphan_status(&StatusUpdate {
            wamid: s.wamid.clone(),
            status: s.status,
            error: s.error.clone(),
            at: s.at,
        })?;
    }
    ctx.store.commit(batch).await?;
    Ok(())
}

async fn keep_other(ctx: &Arc<Ctx>, other: Vec<OtherChange>) -> Result<(), Error> {
    if other.is_empty() {
        return Ok(());
    }
    let mut batch = Batch::new();
    for o in &other {
        batch.put_other_change(&o.field, &o.raw);
    }
    ctx.store.commit(batch).await?;
    // Kept verbatim first: a template change that fails to apply is answered 500, and Meta's
    // redelivery applies it again (applying is idempotent).
    if let Some(registry) = ctx.templates.get() {
        for o in &other {
            if crate::templates::TEMPLATE_FIELDS.contains(&o.field.as_str()) {
                registry.apply_change(&o.field, &o.raw).await?;
            } else if o.field == "user_preferences" {
                registry.apply_preferences(&o.raw).await?;
            }
        }
    }
    // Kept first for the same reason; applying is idempotent too.
    crate::coexistence::apply(ctx, &other).await
}
