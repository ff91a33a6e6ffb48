//! Meta's messaging limit: how many business-initiated conversations the portfolio may open in
//! a rolling 24 hours (`whatsapp.messaging_limit`, default 1000, shared by every number).
//!
//! What opens one (Meta's model): a template sent to a customer whose 24-hour customer-service
//! window is closed (never written, or last wrote more than 24 h ago). It is counted once per
//! customer per 24 h, across the portfolio's numbers: a second template to the same customer
//! within 24 h of the first opening — from any number, window closed or not — takes no new
//! slot. Anything sent inside an open window (texts, templates, media) opens nothing. The
//! customer is its phone when known, else its user id (BSUIDs are scoped to the portfolio, so
//! the same person reached by phone on one number and by user id on another counts twice: the
//! broker cannot tell they are one).
//!
//! Invariants:
//! - exact under concurrency: a send takes a [`Slot`] under one mutex (never held across an
//!   `.await`) before anything is stored, and a slot taken but not yet committed counts, so no
//!   two sends both take the last one; a send refused here never reaches the Graph API (429
//!   `messaging_limit_reached`);
//! - durable exactly like the sends it counts: the slot's entry (`store::openings`) is written in
//!   the same batch as the template message, and the count is rebuilt from those entries at
//!   start-up ([`MessagingLimit::load`]); a send whose commit fails frees its slot (dropped);
//! - bounded: memory holds the openings of the last 24 h (at most the limit) plus the slots in
//!   flight; storage entries older than 24 h are deleted by later commits (at most
//!   [`MAX_PENDING_DELETES`] waiting) and at start-up.
//!
//! A send Meta later refuses still counts (Meta may count it too; the broker only guarantees it
//! never asks for more than the limit).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::domain::Millis;
use crate::metrics as m;
use crate::store::{Batch, Store, StoreError};

/// The rolling window Meta counts over.
pub const WINDOW_MS: Millis = 24 * 60 * 60 * 1000;

/// Expired entries waiting to be deleted by a later commit; beyond this, the rest are deleted at
/// the next start-up (they are ignored meanwhile).
pub const MAX_PENDING_DELETES: usize = 10_000;

/// The send would open one business-initiated conversation beyond the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("messaging limit reached: {limit} business-initiated conversations in 24 h")]
pub struct LimitReached {
    pub limit: u32,
    /// Seconds until the oldest opening leaves the window (a slot frees then).
    pub retry_after_secs: u64,
}

pub struct MessagingLimit {
    limit: u32,
    inner: parking_lot::Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Each customer with an opening in the window: when it opened.
    opened: HashMap<String, Millis>,
    /// The same openings by time, oldest first, for expiry.
    by_time: BTreeSet<(Millis, String)>,
    /// Customers whose slot is taken and not committed yet: how many sends hold it.
    reserved: HashMap<String, usize>,
    /// Stored entries to delete (expired, or a second entry for one opening).
    deletes: Vec<(Millis, String)>,
}

impl Inner {
    /// Drops openings that left the window (their entries to be deleted).
    fn expire(&mut self, now: Millis) {
        while let Some(first) = self.by_time.first() {
            if first.0 > now - WINDOW_MS {
                break;
            }
            let Some((at, customer)) = self.by_time.pop_first() else {
                break;
            };
            if self.opened.get(&customer) == Some(&at) {
                self.opened.remove(&customer);
            }
            self.delete_later(at, customer);
        }
    }

    fn delete_later(&mut self, at: Millis, customer: String) {
        if self.deletes.len() < MAX_PENDING_DELETES {
            self.deletes.push((at, customer));
        }
    }

    fn used(&self) -> usize {
        self.opened.len() + self.reserved.len()
    }
}

/// A slot taken by a send that opens a business-initiated conversation: write it into the
/// send's batch ([`Slot::write`]), then [`Slot::commit`] once that batch is durable. Dropped
/// without a commit, it is freed.
pub struct Slot {
    limit: Arc<MessagingLimit>,
    customer: String,
    /// Expired entries this slot's batch deletes.
    deletes: Vec<(Millis, String)>,
    done: bool,
}

impl MessagingLimit {
    /// The limit with the openings storage holds (those of the last 24 h; older ones, and a
    /// second entry for one customer's opening, are deleted here).
    pub async fn load(store: &Store, limit: u32, now: Millis) -> Result<Self, StoreError> {
        let stored = store.openings().await?;
        let mut inner = Inner::default();
        let mut stale = Batch::new();
        for (at, customer) in stored {
            // Oldest first: a customer's first entry in the window is its opening.
            if at <= now - WINDOW_MS || inner.opened.contains_key(&customer) {
                stale.delete_opening(at, &customer);
                continue;
            }
            inner.opened.insert(customer.clone(), at);
            inner.by_time.insert((at, customer));
        }
        if !stale.is_empty() {
            store.commit(stale).await?;
        }
        let this = Self {
            limit,
            inner: parking_lot::Mutex::new(inner),
        };
        metrics::gauge!(m::MESSAGING_LIMIT).set(f64::from(limit));
        this.publish(now);
        Ok(this)
    }

    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Business-initiated conversations opened in the last 24 h, slots in flight included.
    pub fn used(&self, now: Millis) -> usize {
        let mut inner = self.inner.lock();
        inner.expire(now);
        inner.used()
    }

    /// Sets the gauges (also called when `/metrics` is read: openings expire with time alone).
    pub fn publish(&self, now: Millis) {
        let used = self.used(now);
        metrics::gauge!(m::MESSAGING_LIMIT).set(f64::from(self.limit));
        metrics::gauge!(m::BUSINESS_INITIATED_24H).set(used as f64);
    }

    /// A template to `customer` whose window is closed: `None` when the customer already has an
    /// opening in the window (counted once), else a slot, unless the limit is reached.
    pub fn take(
        self: &Arc<Self>,
        customer: &str,
        now: Millis,
    ) -> Result<Option<Slot>, LimitReached> {
        let slot = {
            let mut inner = self.inner.lock();
            inner.expire(now);
            if inner.opened.contains_key(customer) {
                return Ok(None);
            }
            if let Some(holders) = inner.reserved.get_mut(customer) {
                // Another send to this customer holds its slot: share it (one opening).
                *holders += 1;
            } else if inner.used() >= self.limit as usize {
                let oldest = inner.by_time.first().map_or(now, |(at, _)| *at);
                let free_at = oldest.saturating_add(WINDOW_MS);
                let retry_after_secs = (free_at.saturating_sub(now).max(0) as u64).div_ceil(1000);
                return Err(LimitReached {
                    limit: self.limit,
                    retry_after_secs: retry_after_secs.max(1),
                });
            } else {
                inner.reserved.insert(customer.to_string(), 1);
            }
            let deletes = std::mem::take(&mut inner.deletes);
            Slot {
                limit: self.clone(),
                customer: customer.to_string(),
                deletes,
                done: false,
            }
        };
        self.publish_used();
        Ok(Some(slot))
    }

    fn publish_used(&self) {
        let used = self.inner.lock().used();
        metrics::gauge!(m::BUSINESS_INITIATED_24H).set(used as f64);
    }

    /// A holder of `customer`'s slot is done: with `at`, its send is durable (the opening is
    /// recorded, once); without, it failed.
    fn settle(&self, customer: &str, at: Option<Millis>, deletes: Vec<(Millis, String)>) {
        {
            let mut inner = self.inner.lock();
            if let Some(holders) = inner.reserved.get_mut(customer) {
                *holders -= 1;
                if *holders == 0 {
                    inner.reserved.remove(customer);
                }
            }
            if let Some(at) = at {
                if inner.opened.contains_key(customer) {
                    // A second send that shared the slot: its entry is a duplicate.
                    inner.delete_later(at, customer.to_string());
                } else {
                    inner.opened.insert(customer.to_string(), at);
                    inner.by_time.insert((at, customer.to_string()));
                }
            } else {
                // Not written after all: the next slot deletes these.
                for (at, c) in deletes {
                    inner.delete_later(at, c);
                }
            }
        }
        self.publish_used();
    }
}

impl Slot {
    /// Puts the opening (at `at`) and the expired entries' deletions into the send's batch.
    pub fn write(&self, batch: &mut Batch, at: Millis) {
        for (t, c) in &self.deletes {
            batch.delete_opening(*t, c);
        }
        batch.put_opening(at, &self.customer);
    }

    /// The batch [`Slot::write`] wrote into is durable.
    pub fn commit(mut self, at: Millis) {
        self.done = true;
        let deletes = std::mem::take(&mut self.deletes);
        self.limit.settle(&self.customer, Some(at), deletes);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if !self.done {
            let deletes = std::mem::take(&mut self.deletes);
            self.limit.settle(&self.customer, None, deletes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(n: u32) -> Arc<MessagingLimit> {
        Arc::new(MessagingLimit {
            limit: n,
            inner: parking_lot::Mutex::new(Inner::default()),
        })
    }

    #[test]
    fn counted_once_per_customer_refused_beyond_and_freed_after_24h() {
        let l = limit(2);
        let a = l.take("a", 1_000).expect("free").expect("a slot");
        a.commit(1_000);
        assert!(l.take("a", 2_000).expect("counted").is_none(), "once");
        let b = l.take("b", 3_000).expect("free").expect("a slot");
        // b's slot in flight counts: c is refused while it is held.
        let refused = l.take("c", 4_000).err().expect("limit reached");
        assert_eq!(refused.limit, 2);
        assert_eq!(refused.retry_after_secs, (WINDOW_MS - 3_000) as u64 / 1000);
        drop(b);
        let c = l
            .take("c", 5_000)
            .expect("b freed its slot")
            .expect("a slot");
        c.commit(5_000);
        assert!(l.take("d", 6_000).is_err());
        // a's opening leaves the window.
        let d = l
            .take("d", 1_000 + WINDOW_MS)
            .expect("a expired")
            .expect("slot");
        assert_eq!(d.deletes, vec![(1_000, "a".to_string())]);
        d.commit(1_000 + WINDOW_MS);
        assert_eq!(l.used(1_000 + WINDOW_MS), 2);
    }

    #[test]
    fn two_sends_to_one_customer_share_a_slot() {
        let l = limit(1);
        let first = l.take("a", 1).expect("free").expect("slot");
        let second = l.take("a", 2).expect("shared").expect("slot");
        assert!(l.take("b", 3).is_err());
        drop(first);
        second.commit(2);
        assert_eq!(l.used(3), 1);
        assert!(l.take("a", 4).expect("counted").is_none());
    }

    #[test]
    fn concurrent_takes_never_exceed_the_limit() {
        let l = limit(50);
        let slots: Vec<Slot> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let l = l.clone();
                    s.spawn(move || {
                        (0..100)
                            .filter_map(|i| l.take(&format!("{t}-{i}"), 10).ok().flatten())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        });
        assert_eq!(slots.len(), 50);
    }
}
