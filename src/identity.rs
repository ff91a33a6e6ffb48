//! Finding a customer's conversation from the ids a webhook names: its phone, its user id
//! (BSUID) or both (see `domain::customer`).
//!
//! Each id a contact has is indexed to its conversation (`store::schema::CF_CONTACTS`), written
//! by the conversation actor with the record in one batch. Resolution, for one message, looks
//! each id it names up (in memory, else in the index) and:
//! - an id that is known names the conversation; a message naming both ids, one of them new,
//!   reaches the known one, whose actor takes the new id (the link) in the commit of the message;
//! - neither known: a new contact, its conversation id derived from (number, phone) when the
//!   phone is known, else (number, user id) — for a phone exactly the id the broker derived
//!   before contacts existed, so a conversation stored by an earlier version (never indexed, see
//!   `store::legacy`) is found by its phone and indexed by its next write; a derived id already
//!   taken by another contact (its number changed away) gets a suffixed derivation instead;
//! - both known, to two different conversations (a phone-only and a user-id-only webhook each
//!   made a contact before any webhook linked them): the phone's conversation takes the message
//!   and the user id, counted in `switchboard_contact_conflicts_total`; the other conversation
//!   keeps its history (merging two conversations is not done).
//!
//! Races: two webhooks naming an id of one person must not each make a contact. Resolution holds
//! async locks, one per (number, id) hash stripe ([`STRIPES`]) of every id its notification
//! names, taken in ascending order (so two notifications never wait on each other), and before
//! releasing them records every id it resolved as *pending* (in the same cache, [`Resolved`])
//! until the messages
//! are durable (and their index entries with them): a webhook resolving the same id meanwhile
//! finds it there, as it finds it in the index afterwards. Deliveries therefore run unlocked;
//! only resolution (one storage read per notification, index and derived records together) is
//! serialized per id. Pending
//! entries live exactly as long as a webhook being handled, so they are bounded by webhook
//! admission (`server.max_inflight_webhooks`) times the messages a body holds.
//!
//! Settled ids are remembered in the actors' `ContactCache` (`actors::contacts`; bounded, cleared
//! when full), so the common
//! case — a known customer writing again — reads no storage, and a live conversation still
//! tells a redelivery without any read. An id leaves the cache when its contact lets it go (a
//! `system` message moving it, by the conversation actor once durable), and is overwritten when
//! a conflict gives it to another contact.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

use crate::actors::contacts::{IdKey, PHONE, USER};
use crate::actors::{ConversationMsg, Ctx};
use crate::domain::{
    conversation_id, Contact, CustomerIds, DomainError, IdentityChange, InboundMessage,
};
use crate::error::Error;
use crate::metrics as m;

/// Lock stripes serializing the resolution of one (number, id).
pub const STRIPES: usize = 4096;
static LOCKS: [Mutex<()>; STRIPES] = [const { Mutex::const_new(()) }; STRIPES];

/// Most suffixed derivations tried for a new contact whose derived id is taken (each taker is a
/// contact whose number changed away from this one; more than a few is not a real history).
const MAX_DERIVATIONS: usize = 16;

fn stripe(key: &IdKey) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % STRIPES as u64) as usize
}

/// The ids a sender's `ids` name on `number`, phone first.
fn keys(number: &str, ids: &CustomerIds) -> [Option<IdKey>; 2] {
    [
        ids.phone.clone().map(|p| (number.to_string(), PHONE, p)),
        ids.user_id.clone().map(|u| (number.to_string(), USER, u)),
    ]
}

/// The locks of every id `messages` name (their senders' and, for a `system` message, the new
/// ones), held until dropped.
pub struct Held {
    _guards: Vec<MutexGuard<'static, ()>>,
}

pub async fn lock(messages: &[InboundMessage]) -> Held {
    let mut stripes = Vec::new();
    for msg in messages {
        let change = msg.identity_change.as_ref();
        let moved = CustomerIds {
            phone: change.and_then(|c| c.new_phone.clone()),
            user_id: change.and_then(|c| c.new_user_id.clone()),
            username: None,
        };
        for key in keys(&msg.number, &msg.ids)
            .into_iter()
            .chain(keys(&msg.number, &moved))
            .flatten()
        {
            stripes.push(stripe(&key));
        }
    }
    lock_stripes(stripes).await
}

/// The locks of one customer's ids on `number` (a conversation the business starts), held
/// until dropped: resolving them races webhooks of that customer exactly as webhooks race
/// each other.
pub async fn lock_customer(number: &str, ids: &CustomerIds) -> Held {
    let stripes = keys(number, ids).iter().flatten().map(stripe).collect();
    lock_stripes(stripes).await
}

/// [`lock`] for senders given by their ids alone (coexistence messages: no id moves).
pub async fn lock_ids(senders: &[(&str, &CustomerIds)]) -> Held {
    let stripes = senders
        .iter()
        .flat_map(|(number, ids)| keys(number, ids))
        .flatten()
        .map(|key| stripe(&key))
        .collect();
    lock_stripes(stripes).await
}

async fn lock_stripes(mut stripes: Vec<usize>) -> Held {
    stripes.sort_unstable();
    stripes.dedup();
    let mut guards = Vec::with_capacity(stripes.len());
    for i in stripes {
        guards.push(LOCKS[i].lock().await);
    }
    Held { _guards: guards }
}

/// The ids one notification resolved, pending in the cache until [`Resolved::settle`] (or a
/// drop, when the messages did not become durable) takes them out.
pub struct Resolved {
    ctx: Arc<Ctx>,
    /// The conversation each message goes to, in order.
    pub ids: Vec<String>,
    /// Per message, for a conversation this resolution found nothing stored at (a new
    /// contact's): the [`Ctx::removals`] epoch taken before that read, so its activation need
    /// not read it again ([`Ctx::ask_fresh`]). None otherwise.
    pub fresh: Vec<Option<u64>>,
    pending: Vec<(IdKey, Arc<str>)>,
}

impl Resolved {
    /// The messages are durable: the ids lead to their conversations from the index now, and
    /// from the cache.
    pub fn settle(mut self) {
        for (key, id) in std::mem::take(&mut self.pending) {
            self.ctx.contacts.settle(key.clone(), id);
            self.release(&key);
        }
    }

    fn release(&self, key: &IdKey) {
        self.ctx.contacts.release(key);
    }
}

impl Drop for Resolved {
    fn drop(&mut self) {
        for (key, _) in std::mem::take(&mut self.pending) {
            self.release(&key);
        }
    }
}

/// The conversation id of each message's sender, in order: `(number, ids)` per message (see the
/// module docs). Storage is read in one hop for the whole notification (the contact index for
/// what memory does not know and, in the same hop, the records at the ids derived for senders
/// the index does not know either), whatever its size; a new contact's activation then reads
/// nothing more (`fresh`). Call with [`lock`] held for the messages; the answer keeps the ids
/// pending until it is settled or dropped.
pub async fn resolve_all(
    ctx: &Arc<Ctx>,
    senders: &[(&str, &CustomerIds)],
) -> Result<Resolved, Error> {
    // Each id: what this notification resolved already, else memory, else the index (one read).
    let mut known: HashMap<IdKey, Option<String>> = HashMap::new();
    for (number, ids) in senders {
        for key in keys(number, ids).into_iter().flatten() {
            if let std::collections::hash_map::Entry::Vacant(e) = known.entry(key) {
                let hit = ctx.contacts.get(e.key());
                e.insert(hit);
            }
        }
    }
    let unknown: Vec<IdKey> = known
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k.clone())
        .collect();
    // A sender none of whose ids memory knows may be new: the record at the id derived for it
    // is read in the same hop as the index (when the index does not know its ids either).
    let position: HashMap<&IdKey, usize> =
        unknown.iter().enumerate().map(|(i, k)| (k, i)).collect();
    let mut candidates: Vec<(Vec<usize>, String)> = Vec::new();
    let mut candidate_of: HashSet<String> = HashSet::new();
    for (number, ids) in senders {
        let positions: Option<Vec<usize>> = keys(number, ids)
            .iter()
            .flatten()
            .map(|k| position.get(k).copied())
            .collect();
        let (Some(positions), Some(key)) = (positions, ids.customer()) else {
            continue;
        };
        let id = conversation_id(number, key);
        if candidate_of.insert(id.clone()) {
            candidates.push((positions, id));
        }
    }
    drop(position);
    // Taken before the read: an activation of a conversation this read found free may skip
    // reading it again only if no conversation left memory since (see `Ctx::activate_fresh`).
    let epoch = ctx.removals();
    let mut holders: HashMap<String, Option<Contact>> = HashMap::new();
    if !unknown.is_empty() {
        let asked = unknown
            .iter()
            .map(|(number, kind, id)| {
                let id = Some(id.clone());
                match *kind {
                    PHONE => (number.clone(), id, None),
                    _ => (number.clone(), None, id),
                }
            })
            .collect();
        let candidate_ids: Vec<String> = candidates.iter().map(|(_, id)| id.clone()).collect();
        let (found, read) = ctx.store.resolve_contacts(asked, candidates).await?;
        for (key, (by_phone, by_user)) in unknown.into_iter().zip(found) {
            known.insert(key, by_phone.or(by_user));
        }
        for (id, holder) in candidate_ids.into_iter().zip(read) {
            if let Some(holder) = holder {
                holders.insert(id, holder);
            }
        }
    }
    let lookup = |known: &HashMap<IdKey, Option<String>>, key: &Option<IdKey>| {
        key.as_ref().and_then(|k| known.get(k).cloned().flatten())
    };
    // New contacts: the records at their derived ids (read above) say whether those are free.
    let derived: Vec<Option<String>> = senders
        .iter()
        .map(|(number, ids)| {
            let [p, u] = keys(number, ids);
            match (lookup(&known, &p), lookup(&known, &u)) {
                (None, None) => ids.customer().map(|key| conversation_id(number, key)),
                _ => None,
            }
        })
        .collect();
    let wanted: Vec<String> = derived
        .iter()
        .flatten()
        .filter(|d| !holders.contains_key(*d))
        .cloned()
        .collect();
    if !wanted.is_empty() {
        // Every derived id is a candidate read above; this only keeps a new contact from ever
        // being resolved without the check, should that change.
        let contacts = ctx.store.conversation_contacts(wanted.clone()).await?;
        holders.extend(wanted.into_iter().zip(contacts));
    }
    let mut resolved = Resolved {
        ctx: ctx.clone(),
        ids: Vec::with_capacity(senders.len()),
        fresh: Vec::with_capacity(senders.len()),
        pending: Vec::new(),
    };
    for (i, (number, ids)) in senders.iter().enumerate() {
        let [p, u] = keys(number, ids);
        let mut fresh = None;
        let id = match (lookup(&known, &p), lookup(&known, &u)) {
            (Some(by_phone), Some(by_user)) if by_phone != by_user => {
                metrics::counter!(m::CONTACT_CONFLICTS).increment(1);
                tracing::warn!(phone_conversation = %by_phone, user_conversation = %by_user,
                    "a phone and a user id of two contacts named together; the phone's takes the user id");
                by_phone
            }
            (Some(id), _) | (None, Some(id)) => id,
            (None, None) => {
                let derived = derived[i].as_ref();
                match derived.and_then(|d| holders.get(d)) {
                    Some(None) => {
                        fresh = Some(epoch);
                        derived.cloned().unwrap_or_default()
                    }
                    Some(Some(holder)) if same_contact(ids, holder) => {
                        derived.cloned().unwrap_or_default()
                    }
                    _ => new_contact(ctx, number, ids).await?,
                }
            }
        };
        // Later messages of this notification, and other webhooks until these are durable,
        // find the ids here.
        let shared: Arc<str> = Arc::from(id.as_str());
        for key in [p, u].into_iter().flatten() {
            known.insert(key.clone(), Some(id.clone()));
            ctx.contacts.hold(key.clone(), shared.clone());
            resolved.pending.push((key, shared.clone()));
        }
        resolved.ids.push(id);
        resolved.fresh.push(fresh);
    }
    Ok(resolved)
}

/// Whether a stored contact is the one `ids` name (shares an id with them).
fn same_contact(ids: &CustomerIds, contact: &Contact) -> bool {
    let same = |mine: &Option<String>, theirs: &Option<String>| mine.is_some() && mine == theirs;
    same(&ids.phone, &contact.phone) || same(&ids.user_id, &contact.user_id)
}

/// The id of a new contact's conversation whose first derivation is taken by another contact:
/// suffixed derivations, read one at a time (each taker is a contact whose number changed away
/// from this one, so this is rare).
async fn new_contact(ctx: &Arc<Ctx>, number: &str, ids: &CustomerIds) -> Result<String, Error> {
    let Some(key) = ids.customer() else {
        return Err(DomainError::Invalid("a message naming no customer".into()).into());
    };
    for n in 0..MAX_DERIVATIONS {
        let id = if n == 0 {
            conversation_id(number, key)
        } else {
            // \u{1}: never part of a phone or a user id, so no derivation equals another's.
            conversation_id(number, &format!("{key}\u{1}{n}"))
        };
        let holder = ctx.store.conversation_contacts(vec![id.clone()]).await?;
        match holder.into_iter().next().flatten() {
            None => return Ok(id),
            Some(contact) if same_contact(ids, &contact) => return Ok(id),
            Some(_) => {}
        }
    }
    tracing::error!(%number, "no free conversation id for a new contact");
    Err(Error::Unavailable)
}

/// Applies a `system` message to the contact it names (found by its old ids, never created):
/// moves its ids when the message changes them, and shows the message in the contact's
/// conversation. Answers whether the conversation changed (false for a customer nobody knows, or
/// a redelivery). Call with [`lock`] held for the message.
pub async fn change_ids(
    ctx: &Arc<Ctx>,
    number: &str,
    old: &CustomerIds,
    change: Option<&IdentityChange>,
    notice: &InboundMessage,
) -> Result<bool, Error> {
    // A notice that moves no id is recognised again by its wamid; one that moves ids by the
    // ids having moved already.
    if change.is_none()
        && ctx
            .store
            .lookup_wamids(vec![notice.wamid.clone()])
            .await?
            .into_iter()
            .flatten()
            .next()
            .is_some()
    {
        return Ok(false);
    }
    let (by_phone, by_user) = ctx
        .store
        .contact_conversations(vec![(
            number.to_string(),
            old.phone.clone(),
            old.user_id.clone(),
        )])
        .await?
        .pop()
        .unwrap_or_default();
    // A contact not indexed yet (stored by an earlier version) is found by the id derived from
    // what it was stored under (its phone, else its user id); the actor checks it is this one.
    let legacy = old.customer().map(|c| conversation_id(number, c));
    let Some(id) = by_phone.or(by_user).or(legacy) else {
        return Ok(false);
    };
    let asked = ctx
        .ask(&id, None, |reply| ConversationMsg::ChangeIds {
            old: old.clone(),
            change: change.cloned(),
            notice: Box::new(notice.clone()),
            reply,
        })
        .await;
    // The new ids may have led to another contact until now: read them from the index again.
    if let Some(change) = change {
        ctx.contacts.forget(
            number,
            change.new_phone.as_deref(),
            change.new_user_id.as_deref(),
        );
    }
    match asked {
        Ok(changed) => Ok(changed),
        Err(Error::Domain(DomainError::NotFound)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Names the customer with phone `phone` on `number` as the business's WhatsApp Business App
/// address book does (`smb_app_state_sync`; `None`: the business removed the contact, and the
/// name it gave goes). Only a customer the broker knows is named: a contact is never created
/// for a name alone (an address book may hold thousands of people who never wrote), and the
/// change stays kept verbatim either way. Answers whether a conversation changed.
pub async fn name_contact(
    ctx: &Arc<Ctx>,
    number: &str,
    phone: &str,
    name: Option<String>,
) -> Result<bool, Error> {
    let (by_phone, _) = ctx
        .store
        .contact_conversations(vec![(number.to_string(), Some(phone.to_string()), None)])
        .await?
        .pop()
        .unwrap_or_default();
    // A contact not indexed yet (stored by an earlier version) is found by its derived id; the
    // actor checks the phone is its customer's.
    let id = by_phone.unwrap_or_else(|| conversation_id(number, phone));
    let asked = ctx
        .ask(&id, None, |reply| ConversationMsg::Name {
            phone: phone.to_string(),
            name: name.clone(),
            reply,
        })
        .await;
    match asked {
        Ok(changed) => Ok(changed),
        Err(Error::Domain(DomainError::NotFound)) => Ok(false),
        Err(e) => Err(e),
    }
}
