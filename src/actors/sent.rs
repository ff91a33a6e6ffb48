//! Where recently sent messages live, by wamid, so Meta's status callbacks (sent, delivered,
//! read: about three per outbound message, the bulk of a sending business's webhooks) find their
//! conversation without a storage read, each of which is a blocking-pool round trip.
//!
//! Exactness: an entry is added only after the commit that wrote the wamid's index entry
//! succeeded, and that entry never changes or goes away (a wamid names one message for good), so
//! a hit always agrees with storage. A miss is not an answer: the caller reads storage, as it
//! always did.
//!
//! Bounds: two generations of at most [`GENERATION`] entries each; when the current one is full
//! it becomes the previous one and the oldest generation is dropped. At ~150 bytes an entry that
//! is at most ~5 MB, and it covers the statuses of the last [`GENERATION`] to 2 × [`GENERATION`]
//! sends (a minute at 500 sends a second; "read" receipts that come later read storage).
//! The lock is held for one map operation, never across an await.

use std::collections::HashMap;

use parking_lot::Mutex;

use crate::store::WamidRef;

/// Entries per generation.
pub const GENERATION: usize = 16_384;

#[derive(Default)]
pub struct SentWamids {
    generations: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    current: HashMap<String, WamidRef>,
    previous: HashMap<String, WamidRef>,
}

impl SentWamids {
    /// Records where `wamid` lives; call only once its index entry is durable.
    pub fn remember(&self, wamid: &str, at: WamidRef) {
        let mut g = self.generations.lock();
        if g.current.len() >= GENERATION {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(wamid.to_string(), at);
    }

    /// Where `wamid` lives, if it was sent recently (a miss means: read storage).
    pub fn get(&self, wamid: &str) -> Option<WamidRef> {
        let g = self.generations.lock();
        g.current
            .get(wamid)
            .or_else(|| g.previous.get(wamid))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seq: u64) -> WamidRef {
        WamidRef {
            conversation_id: "c1".into(),
            seq,
        }
    }

    #[test]
    fn finds_recent_sends_and_forgets_old_generations() {
        let s = SentWamids::default();
        s.remember("w0", at(0));
        assert_eq!(s.get("w0"), Some(at(0)));
        assert_eq!(s.get("w1"), None);
        // One full generation later w0 is still found (previous generation)...
        for i in 1..=GENERATION as u64 {
            s.remember(&format!("w{i}"), at(i));
        }
        assert_eq!(s.get("w0"), Some(at(0)));
        // ...and gone after the next, while the bound holds.
        for i in GENERATION as u64 + 1..=2 * GENERATION as u64 {
            s.remember(&format!("w{i}"), at(i));
        }
        assert_eq!(s.get("w0"), None);
        let last = 2 * GENERATION as u64;
        assert_eq!(s.get(&format!("w{last}")), Some(at(last)));
        let g = s.generations.lock();
        assert!(g.current.len() + g.previous.len() <= 2 * GENERATION);
    }
}
