//! Where customers' ids lead, in memory: the conversation a (business number, phone or user id)
//! resolved to (see `identity`, which decides; the contact index in storage is the truth).
//!
//! Two kinds of entry:
//! - *settled*: an id whose messages are durable, so the index says the same; bounded by
//!   [`MAX_CACHED_IDS`] (reaching it clears them: what is needed again is read again);
//! - *pending*: an id a webhook in flight resolved, held until its messages are durable (or it
//!   failed), so a racing webhook finds it before the index does; counted per holder, never
//!   dropped early, bounded by the webhooks in flight (webhook admission) and their messages.
//!
//! An id a contact lets go (a `system` message moving it) is forgotten by the conversation actor
//! once durable.

use std::sync::Arc;

use dashmap::DashMap;

/// Most settled ids held (≈ 200 bytes each).
pub const MAX_CACHED_IDS: usize = 200_000;

/// (business number, [`PHONE`] or [`USER`], the id).
pub type IdKey = (String, u8, String);

/// An [`IdKey`] naming a phone (`wa_id`).
pub const PHONE: u8 = b'p';
/// An [`IdKey`] naming a business-scoped user id.
pub const USER: u8 = b'u';

#[derive(Default)]
pub struct ContactCache {
    settled: DashMap<IdKey, Arc<str>, foldhash::fast::RandomState>,
    /// The conversation and how many webhooks in flight resolved the id to it.
    pending: DashMap<IdKey, (Arc<str>, usize), foldhash::fast::RandomState>,
}

impl ContactCache {
    /// Where `key` leads: a pending resolution first, else a settled one.
    pub fn get(&self, key: &IdKey) -> Option<String> {
        if let Some(p) = self.pending.get(key) {
            return Some(p.0.to_string());
        }
        self.settled.get(key).map(|v| v.to_string())
    }

    /// A webhook in flight resolved `key` to conversation `id` (the latest holder's answer wins).
    pub fn hold(&self, key: IdKey, id: Arc<str>) {
        self.pending
            .entry(key)
            .and_modify(|(to, n)| {
                *to = id.clone();
                *n += 1;
            })
            .or_insert_with(|| (id, 1));
    }

    /// One holder of `key` is done with it.
    pub fn release(&self, key: &IdKey) {
        self.pending.remove_if_mut(key, |_, (_, n)| {
            *n -= 1;
            *n == 0
        });
    }

    /// `key` leads to `id` now that its messages are durable.
    pub fn settle(&self, key: IdKey, id: Arc<str>) {
        if self.settled.len() >= MAX_CACHED_IDS {
            self.settled.clear();
        }
        self.settled.insert(key, id);
    }

    /// The contact of `number` no longer has these ids (they moved): forget them.
    pub fn forget(&self, number: &str, phone: Option<&str>, user_id: Option<&str>) {
        for (kind, i) in [(PHONE, phone), (USER, user_id)] {
            if let Some(i) = i {
                self.settled
                    .remove(&(number.to_string(), kind, i.to_string()));
            }
        }
    }
}
