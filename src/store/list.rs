//! Bounded listings and start-up scans: id-ordered pages merged from index ranges, status scans
//! a page at a time, counts by status and team.
//!
//! Invariant: every call reads a bounded number of entries from one snapshot and says where to
//! resume, so no request or start-up step holds more than one page in memory.

use super::reads::{fold_tail, get_record};
use super::*;

/// One key range a listing reads ([`Store::list_page`]); every range is in conversation-id
/// order, so several merge into one id-ordered answer.
#[derive(Debug, Clone)]
pub enum ListQuery {
    /// Index scan by status, optionally narrowed to one team (without one: one range per team
    /// that has conversations in that status, found by one seek per team).
    Status {
        status: ConversationStatus,
        team: Option<String>,
    },
    /// Index scan by assignee.
    Assignee(String),
    /// Every conversation record.
    All,
    /// One conversation by id.
    Id(String),
}

/// One page of a listing: what matched among the entries read, and where to continue.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListPage {
    /// Matching conversations in id order, at most the page's limit (possibly none).
    pub conversations: Vec<Conversation>,
    /// Set when the read stopped (scan budget or full page) before the end of its ranges: every
    /// entry with an id up to and including this one was read; the next page starts after it.
    /// `None`: nothing is left.
    pub next_after: Option<String>,
}

/// Conversations per page when start-up work walks a status index ([`Store::scan_status`]).
const SCAN_PAGE: usize = 10_000;

impl Store {
    /// One page of a listing: the union of `queries`' ranges merged in conversation-id order,
    /// starting after the id `after`, keeping the conversations `keep` accepts.
    ///
    /// Bounded work: it reads at most `budget` entries (index entries or records; at least one)
    /// from one consistent snapshot, plus one seek per team for a [`ListQuery::Status`] without
    /// team, and stops early once `limit` conversations matched. Whenever it stops before the
    /// end of every range, [`ListPage::next_after`] is the last id it read, so a caller following
    /// it until `None` sees every matching conversation exactly once, even through pages that
    /// matched nothing.
    pub async fn list_page<F>(
        &self,
        queries: Vec<ListQuery>,
        after: Option<String>,
        limit: usize,
        budget: usize,
        keep: F,
    ) -> Result<ListPage, StoreError>
    where
        F: Fn(&Conversation) -> bool + Send + 'static,
    {
        self.read(move |db| list_page(db, queries, after, limit, budget, keep))
            .await
    }

    /// Every conversation of `team` with `status`, handed to `visit` a page ([`SCAN_PAGE`]) at a
    /// time in id order, so start-up work (queue rebuild, deadlines) never holds every waiting
    /// conversation's record at once. Records as stored: the fields that follow from the
    /// messages (`next_seq`, `last_message_at`, `last_inbound_at`) may lag, which neither the
    /// queues nor the deadlines read; folding the messages in would cost a seek per waiting
    /// conversation at start-up.
    pub async fn scan_status(
        &self,
        status: ConversationStatus,
        team: &str,
        mut visit: impl FnMut(Vec<Conversation>),
    ) -> Result<(), StoreError> {
        let mut after = None;
        loop {
            let page = self
                .status_page(status, team.to_owned(), after, SCAN_PAGE)
                .await?;
            let full = page.len() >= SCAN_PAGE;
            after = page.last().map(|c| c.id.clone());
            visit(page);
            if !full {
                return Ok(());
            }
        }
    }

    /// Up to `limit` conversations of `team` with `status`, in id order after the id `after`.
    pub(super) async fn status_page(
        &self,
        status: ConversationStatus,
        team: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<Vec<Conversation>, StoreError> {
        self.read(move |db| {
            let prefix = status_prefix(status, Some(&team));
            let start = match after {
                Some(id) => key_after([prefix.as_slice(), id.as_bytes()].concat()),
                None => prefix.clone(),
            };
            let mut out = Vec::new();
            for_index(db, &prefix, &start, limit, &mut out)?;
            Ok(out)
        })
        .await
    }

    /// Conversations per (status, team), from the index alone (keys only, no record decoding),
    /// as storage stands when this returns: the view is taken (a RocksDB iterator is a
    /// point-in-time view) before it returns, the counting happens in the returned future. A
    /// caller that takes the view before anything can change a status, and from then on applies
    /// every change as a delta, ends up with exact counts without making start-up wait for a scan
    /// of every conversation.
    pub async fn count_by_status_team(
        &self,
    ) -> Result<
        impl std::future::Future<Output = Result<StatusTeamCounts, StoreError>> + Send + 'static,
        StoreError,
    > {
        let db = self.db()?;
        let (taken_tx, taken) = oneshot::channel::<()>();
        let (done_tx, done) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let count = || {
                let it = db.iterator_cf(
                    cf(&db, CF_INDEX)?,
                    IteratorMode::From(b"s\0", IterDirection::Forward),
                );
                let _ = taken_tx.send(());
                let mut counts = StatusTeamCounts::new();
                visit_prefix(it, b"s\0", |k, _| {
                    if let Some(IndexKey::StatusTeam { status, team, .. }) = IndexKey::decode(k) {
                        *counts.entry((status, team)).or_insert(0) += 1;
                    }
                    Ok(true)
                })?;
                Ok(counts)
            };
            let _ = done_tx.send(count());
        });
        let counted = async move {
            done.await
                .map_err(|e| StoreError::Rocks(format!("count task failed: {e}")))?
        };
        // A failure before the view was taken drops `taken_tx`; its error is what `done` holds.
        if taken.await.is_err() {
            counted.await?;
            return Err(StoreError::Rocks("count task ended without a view".into()));
        }
        Ok(counted)
    }
}

/// One id-ordered range merged by [`list_page`].
enum Source<'a> {
    /// Keys `prefix ++ id` of a column family; `records`: the values are the conversations
    /// (otherwise they are index entries and the conversation is read by id).
    Range {
        it: rocksdb::DBRawIterator<'a>,
        prefix: Vec<u8>,
        records: bool,
    },
    /// A single id, read by key; `None` once consumed.
    One(Option<String>),
}

impl<'a> Source<'a> {
    /// A range starting at the first key after `prefix ++ after` (or at `prefix`).
    fn range(
        snap: &'a rocksdb::Snapshot<'_>,
        h: &ColumnFamily,
        prefix: Vec<u8>,
        records: bool,
        after: Option<&str>,
    ) -> Self {
        let mut it = snap.raw_iterator_cf(h);
        match after {
            Some(a) => it.seek(key_after([prefix.as_slice(), a.as_bytes()].concat())),
            None => it.seek(&prefix),
        }
        Source::Range {
            it,
            prefix,
            records,
        }
    }

    /// The id of the next entry, `None` once the range is exhausted.
    fn head(&self) -> Result<Option<&[u8]>, StoreError> {
        match self {
            Source::Range { it, prefix, .. } => match it.key() {
                Some(k) => Ok(k.strip_prefix(prefix.as_slice())),
                None => it.status().map(|()| None).map_err(rocks),
            },
            Source::One(id) => Ok(id.as_deref().map(str::as_bytes)),
        }
    }

    fn advance(&mut self) {
        match self {
            Source::Range { it, .. } => it.next(),
            Source::One(id) => *id = None,
        }
    }
}

/// The blocking body of [`Store::list_page`]: a k-way merge of the queries' ranges by id.
fn list_page(
    db: &DB,
    queries: Vec<ListQuery>,
    after: Option<String>,
    limit: usize,
    budget: usize,
    keep: impl Fn(&Conversation) -> bool,
) -> Result<ListPage, StoreError> {
    let (limit, budget) = (limit.max(1), budget.max(1));
    // Declared before the sources: their iterators read through it and are dropped first.
    let snap = db.snapshot();
    let (convs, index) = (cf(db, CF_CONVERSATIONS)?, cf(db, CF_INDEX)?);
    let mut messages = snap.raw_iterator_cf(cf(db, CF_MESSAGES)?);
    let after = after.as_deref();
    let mut sources = Vec::new();
    for q in queries {
        match q {
            ListQuery::All => sources.push(Source::range(&snap, convs, Vec::new(), true, after)),
            ListQuery::Assignee(agent) => {
                sources.push(Source::range(
                    &snap,
                    index,
                    assignee_prefix(&agent),
                    false,
                    after,
                ));
            }
            ListQuery::Status {
                status,
                team: Some(team),
            } => sources.push(Source::range(
                &snap,
                index,
                status_prefix(status, Some(&team)),
                false,
                after,
            )),
            ListQuery::Status { status, team: None } => {
                for prefix in team_prefixes(&snap, index, status)? {
                    sources.push(Source::range(&snap, index, prefix, false, after));
                }
            }
            ListQuery::Id(id) => {
                let later = after.is_none_or(|a| id.as_str() > a);
                sources.push(Source::One(later.then_some(id)));
            }
        }
    }

    let mut page = ListPage::default();
    let (mut read, mut last) = (0, None);
    loop {
        // The source whose next id is smallest (the first of equals).
        let mut next: Option<(usize, &[u8])> = None;
        for (i, s) in sources.iter().enumerate() {
            if let Some(id) = s.head()? {
                if next.is_none_or(|(_, min)| id < min) {
                    next = Some((i, id));
                }
            }
        }
        let Some((i, id)) = next else {
            return Ok(page); // every range exhausted: nothing is left
        };
        if read >= budget || page.conversations.len() >= limit {
            // Stopped before the end: the next page starts after the last id read.
            page.next_after = last;
            return Ok(page);
        }
        let id = std::str::from_utf8(id)
            .map_err(|_| StoreError::Codec("conversation id is not UTF-8".into()))?
            .to_owned();
        let conv: Option<Conversation> = match &sources[i] {
            Source::Range {
                it, records: true, ..
            } => it.value().map(decode).transpose()?,
            _ => snap
                .get_pinned_cf(convs, id.as_bytes())
                .map_err(rocks)?
                .map(|v| decode(&v))
                .transpose()?,
        };
        // Every range holding this id moves past it (a conversation is listed once).
        for s in sources.iter_mut() {
            if s.head()? == Some(id.as_bytes()) {
                s.advance();
                read += 1;
            }
        }
        if let Some(mut c) = conv.filter(|c| keep(c)) {
            fold_tail(&mut messages, &mut c)?;
            page.conversations.push(c);
        }
        last = Some(id);
    }
}

/// The index prefix (`s` status team) of every team that has conversations in `status`: one
/// seek per team, skipping its entries.
fn team_prefixes(
    snap: &rocksdb::Snapshot<'_>,
    index: &ColumnFamily,
    status: ConversationStatus,
) -> Result<Vec<Vec<u8>>, StoreError> {
    let prefix = status_prefix(status, None);
    let mut it = snap.raw_iterator_cf(index);
    it.seek(&prefix);
    let mut out = Vec::new();
    while let Some(rest) = it.key().and_then(|k| k.strip_prefix(prefix.as_slice())) {
        let team = rest.split(|b| *b == 0).next().unwrap_or_default();
        let mut team_prefix = [prefix.as_slice(), team, &[0]].concat();
        out.push(team_prefix.clone());
        // The first key after every `prefix team 0 …` key (ids never contain NUL).
        if let Some(last) = team_prefix.last_mut() {
            *last = 1;
        }
        it.seek(&team_prefix);
    }
    it.status().map_err(rocks)?;
    Ok(out)
}

/// Up to `limit` conversations named by the index entries under `prefix`, from `start` on.
fn for_index(
    db: &DB,
    prefix: &[u8],
    start: &[u8],
    limit: usize,
    out: &mut Vec<Conversation>,
) -> Result<(), StoreError> {
    scan_prefix_from(db, CF_INDEX, prefix, start, |k, _| {
        if out.len() >= limit {
            return Ok(false);
        }
        if let Some(key) = IndexKey::decode(k) {
            out.extend(get_record(db, key.id())?);
        }
        Ok(true)
    })
}
