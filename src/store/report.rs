//! Reads for reports: a time window's reporting events and rollups, and the open conversations
//! now.
//!
//! All run on the blocking pool. A report ([`Store::fold_report`]) splits its window `[from, to)`
//! by UTC hour: each whole hour from the first one rolled up on is read from its rollups (one
//! range scan of the dimension's rollups, see [`super::rollups`]), unless a bucket boundary of
//! some zone cuts it (a half-hour zone's day or hour); everything else — the cut hours at the
//! window's edges, hours cut by a bucket, hours before rollups existed — is read from the events
//! (range scans of `report_events`, keyed by time). Every instant of the window is read exactly
//! once, one way or the other, so the figures are those of the events themselves. Records are
//! handed to the aggregate as they are read, so a report never holds the window's events. At
//! most [`MAX_REPORT_EVENTS`] records (events and rollups) are read per report; past that the
//! scan stops and says so, and the caller refuses the window as too large instead of answering
//! with part of it.

use std::collections::HashMap;

use chrono_tz::Tz;
use rocksdb::{Direction as IterDirection, IteratorMode, DB};

use super::codec::decode_view;
use super::schema::*;
use super::{cf, rocks, visit_prefix, Store, StoreError};
use crate::domain::report::{
    hour_floor, Aggregator, Bucket, Dimension, ReportEvent, ReportEventView, HOUR_MS,
};
use crate::domain::{ConversationStatus, Millis};

/// Most records (events and rollups) one report reads (a month of a team busier than any we
/// know of is ~1 M events, or a few thousand rollups).
pub const MAX_REPORT_EVENTS: usize = 5_000_000;

/// Readahead of a report scan (bytes): a month of a busy team is tens of MB read in order.
const READAHEAD: usize = 2 << 20;

/// What a window scan found.
pub struct Scanned<S> {
    /// The state the visitor folded the events into.
    pub state: S,
    pub events: usize,
    /// The window held more than [`MAX_REPORT_EVENTS`]; the visitor saw only the first.
    pub truncated: bool,
}

/// Open conversations now, from the index: queued and assigned per team, assigned per agent.
#[derive(Debug, Default, Clone)]
pub struct OpenCounts {
    pub queued: HashMap<String, u64>,
    pub assigned: HashMap<String, u64>,
    pub by_agent: HashMap<String, u64>,
}

/// Events read one by one: `[from, to)`, oldest first, into `visit`; counts into `read` and
/// stops once it reaches [`MAX_REPORT_EVENTS`] (answering `false`).
fn scan_events(
    db: &DB,
    from: Millis,
    to: Millis,
    read: &mut usize,
    mut visit: impl FnMut(&ReportEventView<'_>),
) -> Result<bool, StoreError> {
    if from >= to {
        return Ok(true);
    }
    let start = time_prefix(from);
    let end = time_prefix(to);
    // The upper bound lets RocksDB stop at the window's end without reading past it, and
    // readahead makes a long window's scan sequential reads.
    let mut opts = rocksdb::ReadOptions::default();
    opts.set_iterate_upper_bound(end.to_vec());
    opts.set_readahead_size(READAHEAD);
    let it = db.iterator_cf_opt(
        cf(db, CF_REPORT_EVENTS)?,
        opts,
        IteratorMode::From(&start, IterDirection::Forward),
    );
    for item in it {
        let (k, v) = item.map_err(rocks)?;
        if k.len() < 8 || k[..8] >= end[..] {
            break;
        }
        if *read == MAX_REPORT_EVENTS {
            return Ok(false);
        }
        let e: ReportEventView<'_> = decode_view::<ReportEvent, _>(&v)?;
        visit(&e);
        *read += 1;
    }
    Ok(true)
}

impl Store {
    /// The first hour whose events all have rollups (see [`super::rollups`]).
    pub fn rolled_up_from(&self) -> Millis {
        self.inner.rolled_up_from
    }

    /// Folds the window `[from, to)` into `agg` (see the module docs): whole hours from
    /// rollups where `zones` (every zone `agg` cuts buckets in) allow, the rest from events.
    pub async fn fold_report<K, Z>(
        &self,
        from: Millis,
        to: Millis,
        zones: Vec<Tz>,
        agg: Aggregator<K, Z>,
    ) -> Result<Scanned<Aggregator<K, Z>>, StoreError>
    where
        K: Fn(&str) -> bool + Send + 'static,
        Z: Fn(&str) -> Tz + Send + 'static,
    {
        let rolled_up_from = self.inner.rolled_up_from;
        self.read(move |db| {
            let mut agg = agg;
            let mut read = 0usize;
            let done = |state, read, complete: bool| Scanned {
                state,
                events: read,
                truncated: !complete,
            };
            // Whole hours in the window, from the first one rolled up.
            let first = hour_floor(from.saturating_add(HOUR_MS - 1)).max(rolled_up_from);
            let last = hour_floor(to);
            if first >= last {
                let complete = scan_events(db, from, to, &mut read, |e| agg.add(e))?;
                return Ok(done(agg, read, complete));
            }
            if !scan_events(db, from, first, &mut read, |e| agg.add(e))? {
                return Ok(done(agg, read, false));
            }
            // An hour some zone's bucket boundary cuts is read from its events instead (its
            // rollups say only that events were in the hour, not on which side of the cut).
            let bucket = agg.bucket();
            let dimension = agg.dimension();
            let holds = |hour: Millis| {
                bucket.is_none_or(|b: Bucket| zones.iter().all(|z| b.holds_hour(*z, hour)))
            };
            let mut cut: Vec<Millis> = Vec::new();
            let mut verdict: Option<(Millis, bool)> = None;
            let end = RollupKey::prefix(dimension, last);
            let mut opts = rocksdb::ReadOptions::default();
            opts.set_iterate_upper_bound(end.clone());
            opts.set_readahead_size(READAHEAD);
            let it = db.iterator_cf_opt(
                cf(db, CF_REPORT_ROLLUPS)?,
                opts,
                IteratorMode::From(&RollupKey::prefix(dimension, first), IterDirection::Forward),
            );
            for item in it {
                let (k, v) = item.map_err(rocks)?;
                if k[..] >= end[..] {
                    break;
                }
                let Some(key) = RollupKey::decode(dimension, &k) else {
                    break;
                };
                let whole = match verdict {
                    Some((h, whole)) if h == key.hour => whole,
                    _ => {
                        let whole = holds(key.hour);
                        verdict = Some((key.hour, whole));
                        if !whole {
                            cut.push(key.hour);
                        }
                        whole
                    }
                };
                if !whole {
                    continue;
                }
                if read == MAX_REPORT_EVENTS {
                    return Ok(done(agg, read, false));
                }
                let r = super::rollups::decode(&v)?;
                // A team's own rollup is keyed by the team alone.
                let row = match dimension {
                    Dimension::Teams => key.team,
                    Dimension::Agents | Dimension::Numbers => key.key,
                };
                agg.add_rollup(key.hour, key.team, row, &r);
                read += 1;
            }
            for hour in cut {
                if !scan_events(db, hour, hour + HOUR_MS, &mut read, |e| agg.add(e))? {
                    return Ok(done(agg, read, false));
                }
            }
            let complete = scan_events(db, last, to, &mut read, |e| agg.add(e))?;
            Ok(done(agg, read, complete))
        })
        .await
    }

    /// Folds every event with `from <= at < to` into `state` with `visit`, oldest first (the
    /// events alone, no rollups).
    pub async fn scan_report_events<S, F>(
        &self,
        from: Millis,
        to: Millis,
        mut state: S,
        mut visit: F,
    ) -> Result<Scanned<S>, StoreError>
    where
        S: Send + 'static,
        F: FnMut(&mut S, &ReportEventView<'_>) + Send + 'static,
    {
        self.read(move |db| {
            let mut events = 0;
            let complete = scan_events(db, from, to, &mut events, |e| visit(&mut state, e))?;
            Ok(Scanned {
                state,
                events,
                truncated: !complete,
            })
        })
        .await
    }

    /// The rating question a conversation waits an answer to, if any.
    pub async fn csat_pending(
        &self,
        conversation_id: &str,
    ) -> Result<Option<CsatPending>, StoreError> {
        let key = conversation_id.as_bytes().to_vec();
        self.read(move |db| {
            db.get_cf(cf(db, CF_CSAT_PENDING)?, &key)
                .map_err(rocks)?
                .map(|v| super::codec::decode(&v))
                .transpose()
        })
        .await
    }

    /// Queued and assigned conversations per team and assigned per agent, from index keys only.
    pub async fn open_counts(&self) -> Result<OpenCounts, StoreError> {
        self.read(|db| {
            let mut out = OpenCounts::default();
            for status in [ConversationStatus::Queued, ConversationStatus::Assigned] {
                let prefix = status_prefix(status, None);
                let it = db.iterator_cf(
                    cf(db, CF_INDEX)?,
                    IteratorMode::From(&prefix, IterDirection::Forward),
                );
                let counts = match status {
                    ConversationStatus::Queued => &mut out.queued,
                    _ => &mut out.assigned,
                };
                visit_prefix(it, &prefix, |k, _| {
                    if let Some(IndexKey::StatusTeam { team, .. }) = IndexKey::decode(k) {
                        *counts.entry(team).or_insert(0) += 1;
                    }
                    Ok(true)
                })?;
            }
            let it = db.iterator_cf(
                cf(db, CF_INDEX)?,
                IteratorMode::From(b"a\0", IterDirection::Forward),
            );
            visit_prefix(it, b"a\0", |k, _| {
                if let Some(IndexKey::Assignee { agent, .. }) = IndexKey::decode(k) {
                    *out.by_agent.entry(agent).or_insert(0) += 1;
                }
                Ok(true)
            })?;
            Ok(out)
        })
        .await
    }
}
