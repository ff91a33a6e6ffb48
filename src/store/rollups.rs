//! Hourly rollups of the reporting events (`report_rollups`): the operands an event adds, the
//! RocksDB merge operator that folds them, and the first hour rolled up.
//!
//! Why a merge operator: many conversation actors write events of the same team and hour at
//! once, so a rollup cannot be read, changed and written back without a lock on the write path.
//! Instead each event's batch carries merge operands (one [`Rollup`] of that event for its team,
//! agent and number: [`operands`]), and RocksDB joins them when it reads, flushes or compacts
//! ([`merge`]). A rollup therefore holds exactly the durable events of its hour: an event and its
//! operands are committed in one `WriteBatch` or not at all.
//!
//! Invariants: [`merge`] is associative and commutative (counts add, lists join, conversations
//! are a set), as RocksDB's partial merges need; it never fails (a merge failure would stop
//! compactions and, with them, every write): an operand it cannot read is left out and logged,
//! which can only be a corrupt record. Operands use the compact encoding (a one-event rollup is
//! ~30 bytes).

use rocksdb::MergeOperands;

use super::codec::{decode_compact, encode_compact};
use super::schema::{Rollup, RollupKey, CF_REPORT_EVENTS, CF_REPORT_ROLLUPS, ROLLUPS_FROM_KEY};
use super::{cf, rocks, StoreError};
use crate::domain::report::{hour_floor, Dimension, ReportEventView, HOUR_MS};
use crate::domain::Millis;
use crate::log_limit::LogLimit;

/// The name RocksDB records for the operator (a store opened with another name refuses to open).
pub(super) const MERGE_OPERATOR: &str = "switchboard.report_rollups.v1";

/// A rollup key and the merge operand added to it.
pub(super) type Operand = (Vec<u8>, Vec<u8>);

/// The `(key, operand)` pairs one event adds: its hour's rollup of its team, of its agent (if it
/// has one) and of its number.
pub(super) fn operands(e: &ReportEventView<'_>) -> Result<Vec<Operand>, StoreError> {
    let hour = hour_floor(e.at);
    let value = encode_compact(&Rollup::of(e))?;
    let key = |dimension, key| {
        RollupKey {
            dimension,
            hour,
            team: e.team,
            key,
        }
        .encode()
    };
    let mut out = Vec::with_capacity(3);
    out.push((key(Dimension::Teams, ""), value.clone()));
    if let Some(agent) = e.agent {
        out.push((key(Dimension::Agents, agent), value.clone()));
    }
    out.push((key(Dimension::Numbers, e.number), value));
    Ok(out)
}

/// RocksDB's merge (full and partial): the existing rollup, if any, joined with every operand.
pub(super) fn merge(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    let mut acc = Rollup::default();
    for bytes in existing.into_iter().chain(operands.iter()) {
        match decode_compact::<Rollup>(bytes) {
            Ok(r) => acc.merge(&r),
            Err(e) => {
                static LOG: LogLimit = LogLimit::new(1);
                if let Some(held_back) = LOG.check() {
                    tracing::error!(error = %e, held_back, "unreadable report rollup operand left out");
                }
            }
        }
    }
    acc.normalize();
    match encode_compact(&acc) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, "report rollup not encodable");
            None
        }
    }
}

/// Several operands of one rollup joined into one, as RocksDB's partial merge would (the
/// operator is associative): the group-commit writer writes one operand per rollup and group
/// instead of one per event. `None` when one of them cannot be read; the caller then writes
/// them as they are, so the merge that meets it logs it as it always did.
pub(super) fn combine<'a>(operands: impl Iterator<Item = &'a [u8]>) -> Option<Vec<u8>> {
    let mut acc = Rollup::default();
    for bytes in operands {
        acc.merge(&decode_compact::<Rollup>(bytes).ok()?);
    }
    acc.normalize();
    encode_compact(&acc).ok()
}

/// The first hour whose events all have rollups, set on the first open of a store with
/// rollups: an empty store's rollups are complete from the beginning; one written by an earlier
/// release has rollups only from the hour after its last event. Blocking; called while opening.
pub(super) fn rolled_up_from(db: &rocksdb::DB) -> Result<Millis, StoreError> {
    let rollups = cf(db, CF_REPORT_ROLLUPS)?;
    if let Some(v) = db.get_cf(rollups, ROLLUPS_FROM_KEY).map_err(rocks)? {
        let b: [u8; 8] = v
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Codec("report rollups marker is not 8 bytes".into()))?;
        return Ok(Millis::from_be_bytes(b));
    }
    let last = db
        .iterator_cf(cf(db, CF_REPORT_EVENTS)?, rocksdb::IteratorMode::End)
        .next()
        .transpose()
        .map_err(rocks)?;
    let from = match last {
        None => Millis::MIN,
        Some((k, _)) => {
            let b: [u8; 8] = k
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| StoreError::Codec("short report event key".into()))?;
            let at = (u64::from_be_bytes(b) ^ (1 << 63)) as Millis;
            hour_floor(at).saturating_add(HOUR_MS)
        }
    };
    let mut opts = rocksdb::WriteOptions::default();
    opts.set_sync(true);
    db.put_cf_opt(rollups, ROLLUPS_FROM_KEY, from.to_be_bytes(), &opts)
        .map_err(rocks)?;
    Ok(from)
}

/// A stored rollup, read.
pub(super) fn decode(bytes: &[u8]) -> Result<Rollup, StoreError> {
    decode_compact::<Rollup>(bytes)
}

#[cfg(test)]
impl super::Store {
    /// Removes the marker, as a store written before rollups has none.
    pub(super) async fn forget_rollups_marker(&self) -> Result<(), StoreError> {
        self.read(|db| {
            db.delete_cf(cf(db, CF_REPORT_ROLLUPS)?, ROLLUPS_FROM_KEY)
                .map_err(rocks)
        })
        .await
    }

    /// Compacts the rollups (every operand merged into its rollup).
    pub(super) async fn compact_report_rollups(&self) -> Result<(), StoreError> {
        self.read(|db| {
            db.compact_range_cf(cf(db, CF_REPORT_ROLLUPS)?, None::<&[u8]>, None::<&[u8]>);
            Ok(())
        })
        .await
    }
}
