//! Finding a customer's conversation from the ids a webhook names: its phone, its user id
//! (BSUID) or both (see `domain::customer`).
//!
//! Each id a contact has is indexed to its conversation (`store::schema::CF_CONTACTS`), written
//! by the conversation actor with the record in one batch. Resolution, for one message:
//! - an id that is indexed names the conversation; a message naming both ids, one of them new,
//!   reaches the known one, whose actor takes the new id (the link) in the commit of the message;
//! - neither indexed: a new contact, its conversation id derived from (number, phone) when the
//!   phone is known, else (number, user id) — for a phone exactly the id the broker derived
//!   before contacts existed, so a conversation stored by an earlier version (never indexed, see
//!   `store::legacy`) is found by its phone and indexed by its next write; a derived id already
//!   taken by another contact (its number changed away) gets a suffixed derivation instead;
//! - both indexed, to two different conversations (a phone-only and a user-id-only webhook each
//!   made a contact before any webhook linked them): the phone's conversation takes the message
//!   and the user id, counted in `switchboard_contact_conflicts_total`; the other conversation
//!   keeps its history (merging two conversations is not done).
//!
//! Resolved ids are remembered in a [`ContactCache`] (bounded; cleared when full), so the
//! common case — a known customer writing again — reads no storage, and a live conversation
//! still tells a redelivery without any read. An id leaves the cache when its contact lets it
//! go (a number or user id change, by the conversation actor once durable) and is overwritten
//! when a conflict gives it to another contact. A cached phone answers like storage would
//! (the phone's conversation wins any conflict); a cached user id answers only for a message
//! naming no phone.
//!
//! Races: two webhooks naming an id of one person must not each make a contact. Resolution and
//! delivery of a notification's messages hold [`STRIPES`] async locks, one per (number, id) hash
//! stripe of every id its messages name, taken in ascending order (so two notifications never
//! wait on each other) and released once every message is durable: whoever comes second reads
//! the index entries the first one wrote. Held across the first's commits, so webhooks naming
//! the same person are serialized, as they would be on the conversation's actor anyway; a fixed
//! number of locks, so memory is bounded whatever the traffic.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use tokio::sync::{Mutex, MutexGuard};

use crate::actors::{ConversationMsg, Ctx};
use crate::domain::{conversation_id, CustomerIds, DomainError, IdentityChange, InboundMessage};
use crate::error::Error;
use crate::metrics as m;

/// Lock stripes serializing the resolution of one (number, id).
pub const STRIPES: usize = 1024;
static LOCKS: [Mutex<()>; STRIPES] = [const { Mutex::const_new(()) }; STRIPES];

/// Most suffixed derivations tried for a new contact whose derived id is taken (each taker is a
/// contact whose number changed away from this one; more than a few is not a real history).
const MAX_DERIVATIONS: usize = 16;

fn stripe(number: &str, kind: u8, id: &str) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (number, kind, id).hash(&mut h);
    (h.finish() % STRIPES as u64) as usize
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
        let phones = [
            msg.ids.phone.as_deref(),
            change.and_then(|c| c.new_phone.as_deref()),
        ];
        let users = [
            msg.ids.user_id.as_deref(),
            change.and_then(|c| c.new_user_id.as_deref()),
        ];
        stripes.extend(
            phones
                .into_iter()
                .flatten()
                .map(|p| stripe(&msg.number, b'p', p)),
        );
        stripes.extend(
            users
                .into_iter()
                .flatten()
                .map(|u| stripe(&msg.number, b'u', u)),
        );
    }
    stripes.sort_unstable();
    stripes.dedup();
    let mut guards = Vec::with_capacity(stripes.len());
    for i in stripes {
        guards.push(LOCKS[i].lock().await);
    }
    Held { _guards: guards }
}

/// Most ids [`ContactCache`] holds; reaching it clears the cache (what is needed again is read
/// again from storage), so its memory stays bounded (≈ 200 bytes an entry) whatever the traffic.
pub const MAX_CACHED_IDS: usize = 200_000;

/// Which conversation an id resolved to, by (number, `p`/`u`, id); see the module docs.
#[derive(Default)]
pub struct ContactCache {
    ids: dashmap::DashMap<(String, u8, String), Arc<str>, foldhash::fast::RandomState>,
}

impl ContactCache {
    fn get(&self, number: &str, ids: &CustomerIds) -> Option<String> {
        let find = |kind: u8, id: &str| {
            self.ids
                .get(&(number.to_string(), kind, id.to_string()))
                .map(|v| v.to_string())
        };
        match (&ids.phone, &ids.user_id) {
            (Some(p), _) => find(b'p', p),
            (None, Some(u)) => find(b'u', u),
            (None, None) => None,
        }
    }

    fn remember(&self, number: &str, ids: &CustomerIds, id: &str) {
        if self.ids.len() >= MAX_CACHED_IDS {
            self.ids.clear();
        }
        let id: Arc<str> = Arc::from(id);
        for (kind, i) in [(b'p', &ids.phone), (b'u', &ids.user_id)] {
            if let Some(i) = i {
                self.ids
                    .insert((number.to_string(), kind, i.clone()), id.clone());
            }
        }
    }

    /// The contact of `number` no longer has these ids (they moved): forget them.
    pub fn forget(&self, number: &str, phone: Option<&str>, user_id: Option<&str>) {
        for (kind, i) in [(b'p', phone), (b'u', user_id)] {
            if let Some(i) = i {
                self.ids.remove(&(number.to_string(), kind, i.to_string()));
            }
        }
    }
}

/// The conversations one notification's messages resolved to so far, by (number, id): a
/// message naming an id an earlier message of the same notification introduced finds that
/// conversation before its index entry is written.
#[derive(Default)]
pub struct Resolutions {
    by_phone: HashMap<(String, String), String>,
    by_user: HashMap<(String, String), String>,
}

impl Resolutions {
    fn remember(&mut self, number: &str, ids: &CustomerIds, id: &str) {
        if let Some(p) = &ids.phone {
            self.by_phone
                .entry((number.to_string(), p.clone()))
                .or_insert_with(|| id.to_string());
        }
        if let Some(u) = &ids.user_id {
            self.by_user
                .entry((number.to_string(), u.clone()))
                .or_insert_with(|| id.to_string());
        }
    }

    fn get(&self, number: &str, ids: &CustomerIds) -> Option<String> {
        let find = |map: &HashMap<(String, String), String>, id: &Option<String>| {
            id.as_ref()
                .and_then(|i| map.get(&(number.to_string(), i.clone())).cloned())
        };
        find(&self.by_phone, &ids.phone).or_else(|| find(&self.by_user, &ids.user_id))
    }
}

/// The conversation id of the sender of a message on `number` (see the module docs). Call with
/// [`lock`] held for the message.
pub async fn resolve(
    ctx: &Arc<Ctx>,
    seen: &mut Resolutions,
    number: &str,
    ids: &CustomerIds,
) -> Result<String, Error> {
    if let Some(id) = seen
        .get(number, ids)
        .or_else(|| ctx.contacts.get(number, ids))
    {
        seen.remember(number, ids, &id);
        return Ok(id);
    }
    let (by_phone, by_user) = ctx
        .store
        .contact_conversations(number, ids.phone.as_deref(), ids.user_id.as_deref())
        .await?;
    let id = match (by_phone, by_user) {
        (Some(p), Some(u)) if p != u => {
            metrics::counter!(m::CONTACT_CONFLICTS).increment(1);
            tracing::warn!(phone_conversation = %p, user_conversation = %u,
                "a phone and a user id of two contacts named together; the phone's takes the user id");
            p
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => new_contact(ctx, number, ids).await?,
    };
    seen.remember(number, ids, &id);
    ctx.contacts.remember(number, ids, &id);
    Ok(id)
}

/// The id of a new contact's conversation: derived from its phone, else its user id, unless a
/// conversation of another contact holds that id (a legacy one holding this phone is this
/// contact's own).
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
        let Some(existing) = ctx.store.get_conversation(&id).await? else {
            return Ok(id);
        };
        let same =
            |mine: &Option<String>, theirs: &Option<String>| mine.is_some() && mine == theirs;
        if same(&ids.phone, &existing.contact.phone)
            || same(&ids.user_id, &existing.contact.user_id)
        {
            return Ok(id);
        }
    }
    tracing::error!(%number, "no free conversation id for a new contact");
    Err(Error::Unavailable)
}

/// Applies a `system` message's id change to the contact it names (found by its old ids, never
/// created). Answers whether a contact changed. Call with [`lock`] held for the message.
pub async fn change_ids(
    ctx: &Arc<Ctx>,
    number: &str,
    old: &CustomerIds,
    change: &IdentityChange,
) -> Result<bool, Error> {
    let (by_phone, by_user) = ctx
        .store
        .contact_conversations(number, old.phone.as_deref(), old.user_id.as_deref())
        .await?;
    // A contact not indexed yet (stored by an earlier version) is found by its phone's id.
    let legacy = old.phone.as_deref().map(|p| conversation_id(number, p));
    let Some(id) = by_phone.or(by_user).or(legacy) else {
        return Ok(false);
    };
    let asked = ctx
        .ask(&id, None, |reply| ConversationMsg::ChangeIds {
            old: old.clone(),
            change: change.clone(),
            reply,
        })
        .await;
    match asked {
        Ok(changed) => Ok(changed),
        Err(Error::Domain(DomainError::NotFound)) => Ok(false),
        Err(e) => Err(e),
    }
}
