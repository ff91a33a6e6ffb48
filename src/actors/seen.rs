//! The wamids a conversation has stored, kept by its live actor as 64-bit hashes, so a new inbound
//! message is told from a redelivery without a storage read (a blocking-pool round trip per
//! webhook was one of the thread hops the ingest profile showed).
//!
//! Exactness: the set is complete — built at activation from every stored message of the
//! conversation, then extended by the actor, the only writer of its messages, with every wamid it
//! stores — so a wamid whose hash is absent was never stored. A present hash may be a collision,
//! so those (in practice: real redeliveries) are still confirmed against storage. Conversations
//! with more than [`MAX_SCANNED`] messages are not scanned at activation; their actor checks
//! storage for every message, as it always did.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Largest conversation (in messages) whose wamids are loaded when its actor activates; bounds
/// the activation read and the set's memory (8 bytes and a little per message).
pub const MAX_SCANNED: u64 = 512;

#[derive(Debug, Default, Clone)]
pub struct SeenWamids {
    hashes: HashSet<u64>,
}

fn hash(wamid: &str) -> u64 {
    let mut h = DefaultHasher::new();
    wamid.hash(&mut h);
    h.finish()
}

impl SeenWamids {
    pub fn from_wamids<'a>(wamids: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            hashes: wamids.into_iter().map(hash).collect(),
        }
    }

    /// False: certainly never stored. True: maybe stored (confirm in storage).
    pub fn maybe_contains(&self, wamid: &str) -> bool {
        self.hashes.contains(&hash(wamid))
    }

    pub fn insert(&mut self, wamid: &str) {
        self.hashes.insert(hash(wamid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_means_never_seen() {
        let mut s = SeenWamids::from_wamids(["wamid.a", "wamid.b"]);
        assert!(s.maybe_contains("wamid.a"));
        assert!(!s.maybe_contains("wamid.c"));
        s.insert("wamid.c");
        assert!(s.maybe_contains("wamid.c"));
    }
}
