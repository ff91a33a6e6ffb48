//! Orphan statuses expire: a status whose wamid the broker does not know yet is parked in
//! `orphan_status` so the send that is still recording its wamid (or adopting it after a
//! restart) can apply it. Statuses of messages the broker never sent (another app on a shared
//! number, a wamid from before the broker took the number over) are never claimed, and without
//! an end the column family would grow with them forever.
//!
//! Invariant: an orphan is dropped by RocksDB's compactions once Meta's timestamp on it is older
//! than [`ORPHAN_TTL_MS`] (Meta's seven days of webhook retries: past them, no send of ours can
//! still be waiting for it). Compactions run as the column family grows, so what it holds is
//! bounded by a week of unclaimed statuses. A value that cannot be decoded is kept (it is not
//! this filter's to judge).

use rocksdb::compaction_filter::Decision;

use crate::domain::Millis;

use super::codec::decode;
use super::schema::StatusUpdate;

/// How long an unclaimed status is kept, by Meta's timestamp on it.
pub(super) const ORPHAN_TTL_MS: Millis = 7 * 24 * 60 * 60 * 1000;

/// The compaction filter's name (RocksDB records it in the options file).
pub(super) const FILTER_NAME: &str = "switchboard.orphan_status_ttl";

/// Whether the orphan stored as `value` has expired at `now`.
pub(super) fn expired(value: &[u8], now: Millis) -> bool {
    decode::<StatusUpdate>(value).is_ok_and(|s| s.at < now.saturating_sub(ORPHAN_TTL_MS))
}

/// The compaction filter of `orphan_status`.
pub(super) fn filter(_level: u32, _key: &[u8], value: &[u8]) -> Decision {
    if expired(value, chrono::Utc::now().timestamp_millis()) {
        Decision::Remove
    } else {
        Decision::Keep
    }
}
