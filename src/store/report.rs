//! Reads for reports: the reporting events of a time window and the open conversations now.
//!
//! Both run on the blocking pool. The event scan is one range scan over `[from, to)` of
//! `report_events` (keys start with the time), handing each decoded event to a visitor, so a
//! report holds its aggregate, never the window's events. At most [`MAX_REPORT_EVENTS`] events
//! are read per report; past that the scan stops and says so, and the caller refuses the window
//! as too large instead of answering with part of it.

use std::collections::HashMap;

use rocksdb::{Direction as IterDirection, IteratorMode};

use super::codec::decode_view;
use super::schema::*;
use super::{cf, rocks, visit_prefix, Store, StoreError};
use crate::domain::report::{ReportEvent, ReportEventView};
use crate::domain::{ConversationStatus, Millis};

/// Most events one report reads (a month of a team busier than any we know of is ~1 M).
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

impl Store {
    /// Folds every event with `from <= at < to` into `state` with `visit`, oldest first.
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
            let start = time_prefix(from);
            let end = time_prefix(to);
            // The upper bound lets RocksDB stop at the window's end without reading past it,
            // and readahead makes a long window's scan sequential reads.
            let mut opts = rocksdb::ReadOptions::default();
            opts.set_iterate_upper_bound(end.to_vec());
            opts.set_readahead_size(READAHEAD);
            let it = db.iterator_cf_opt(
                cf(db, CF_REPORT_EVENTS)?,
                opts,
                IteratorMode::From(&start, IterDirection::Forward),
            );
            let mut events = 0;
            let mut truncated = false;
            for item in it {
                let (k, v) = item.map_err(rocks)?;
                if k.len() < 8 || k[..8] >= end[..] {
                    break;
                }
                if events == MAX_REPORT_EVENTS {
                    truncated = true;
                    break;
                }
                let e: ReportEventView<'_> = decode_view::<ReportEvent, _>(&v)?;
                visit(&mut state, &e);
                events += 1;
            }
            Ok(Scanned {
                state,
                events,
                truncated,
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
