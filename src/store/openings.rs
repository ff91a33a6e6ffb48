//! Business-initiated conversations opened (Meta's messaging limit, see
//! `crate::messaging_limit`): one entry per opening, in the `settings` column family under
//! `bic` NUL, then the time it opened (sign-flipped i64 BE, so entries sort oldest first), then
//! the customer (last, so one containing NUL still reads back whole). The value is empty.
//!
//! An entry is written in the batch that stores the template message which opened the
//! conversation, so the count is exactly as durable as the sends it counts. Entries older than
//! the 24-hour window are deleted (by later batches, and at start-up), so the family holds
//! about one window's openings.

use super::batch::Batch;
use super::schema::{time_prefix, CF_SETTINGS};
use super::{scan_prefix, Store, StoreError};
use crate::domain::Millis;

/// Prefix of opening entries.
pub const OPENING_PREFIX: &[u8] = b"bic\0";

/// The key of the opening of `customer` at `at`.
pub fn opening_key(at: Millis, customer: &str) -> Vec<u8> {
    let mut k = OPENING_PREFIX.to_vec();
    k.extend_from_slice(&time_prefix(at));
    k.extend_from_slice(customer.as_bytes());
    k
}

fn decode_key(k: &[u8]) -> Option<(Millis, String)> {
    let rest = k.strip_prefix(OPENING_PREFIX)?;
    let (t, customer) = rest.split_at_checked(8)?;
    let t = u64::from_be_bytes(t.try_into().ok()?) ^ (1 << 63);
    Some((t as Millis, String::from_utf8_lossy(customer).into_owned()))
}

impl Batch {
    pub fn put_opening(&mut self, at: Millis, customer: &str) {
        self.put_raw(CF_SETTINGS, opening_key(at, customer), Vec::new());
    }

    pub fn delete_opening(&mut self, at: Millis, customer: &str) {
        self.delete_raw(CF_SETTINGS, opening_key(at, customer));
    }
}

impl Store {
    /// Every opening stored, oldest first: (when, customer).
    pub async fn openings(&self) -> Result<Vec<(Millis, String)>, StoreError> {
        self.read(|db| {
            let mut out = Vec::new();
            scan_prefix(db, CF_SETTINGS, OPENING_PREFIX, |k, _| {
                out.extend(decode_key(k));
                Ok(true)
            })?;
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_time_and_read_back() {
        let a = opening_key(-5, "x");
        let b = opening_key(1_700_000_000_000, "15551234567");
        let c = opening_key(1_700_000_000_001, "US.1\0odd");
        assert!(a < b && b < c);
        assert_eq!(decode_key(&a), Some((-5, "x".into())));
        assert_eq!(
            decode_key(&c),
            Some((1_700_000_000_001, "US.1\0odd".into()))
        );
    }
}
