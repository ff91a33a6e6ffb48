//! The wamids a conversation has stored, kept by its live actor as 128-bit keyed hashes, so a
//! redelivery is told from a new message without a storage read: each such read is a
//! blocking-pool round trip, and confirming Meta's redeliveries that way (one webhook in twenty
//! in the load generator's default mix) cost about an eighth of the broker's CPU at 15,000
//! webhooks/s (stop 16; `git log -p -- BENCHMARKS.md`).
//!
//! Exactness: the set is complete — built at activation from every stored message of the
//! conversation, then extended by the actor, the only writer of its messages, with every wamid it
//! stores — so a wamid whose hash is absent was never stored, and one whose hash is present was,
//! unless two different wamids of one conversation agree on all 128 bits of SipHash-1-3 under a
//! key drawn at random when the process starts. Wamids are Meta's, arrive in signed webhooks and
//! cannot be chosen to collide under a key nobody sees; by chance, a new message of a
//! conversation holding [`MAX_SCANNED`] messages matches one of them with odds of 1 in 6·10^35.
//! That is the one place the broker rests exactly-once on a hash instead of a comparison, far
//! below the odds of the disk returning a corrupt block that its 32-bit checksum misses.
//! Conversations with more than [`MAX_SCANNED`] messages are not scanned at activation; their
//! actor checks storage for every message, as it always did.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use siphasher::sip128::SipHasher13;

/// Largest conversation (in messages) whose wamids are loaded when its actor activates; bounds
/// the activation read and the set's memory (16 bytes and a little per message).
pub const MAX_SCANNED: u64 = 512;

/// The set's keys are already uniformly distributed keyed hashes: the table uses their low 64
/// bits as they are instead of hashing them again.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for (i, b) in bytes.iter().take(8).enumerate() {
            self.0 ^= u64::from(*b) << (8 * i);
        }
    }

    fn write_u128(&mut self, i: u128) {
        self.0 = i as u64;
    }
}

#[derive(Debug, Default, Clone)]
pub struct SeenWamids {
    hashes: HashSet<u128, BuildHasherDefault<PassThrough>>,
}

fn hash(wamid: &str) -> u128 {
    static KEYED: OnceLock<SipHasher13> = OnceLock::new();
    let h = KEYED.get_or_init(|| SipHasher13::new_with_keys(rand::random(), rand::random()));
    h.hash(wamid.as_bytes()).into()
}

impl SeenWamids {
    pub fn from_wamids<'a>(wamids: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            hashes: wamids.into_iter().map(hash).collect(),
        }
    }

    /// Whether `wamid` is stored in this conversation (see the module docs for the one caveat).
    pub fn contains(&self, wamid: &str) -> bool {
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
    fn tells_stored_from_new() {
        let mut s = SeenWamids::from_wamids(["wamid.a", "wamid.b"]);
        assert!(s.contains("wamid.a"));
        assert!(!s.contains("wamid.c"));
        s.insert("wamid.c");
        assert!(s.contains("wamid.c"));
    }

    #[test]
    fn wamids_differing_late_differ() {
        // Meta's wamids share long prefixes; the hash covers every byte.
        let base = "wamid.HBgLMTY1MDUwNzY1MjAVAgASGBQzQTRBNjU5OUFFRTAzODA5OEI3NwA";
        let s = SeenWamids::from_wamids([format!("{base}=").as_str()]);
        assert!(s.contains(&format!("{base}=")));
        assert!(!s.contains(&format!("{base}A")));
        assert!(!s.contains(base));
    }
}
