//! Durable state on RocksDB: typed records, atomic batches, group commit, recovery.
//!
//! Why this shape:
//! - **The journal is RocksDB's write-ahead log** and every acknowledged change goes through it in
//!   one `WriteBatch` (see [`batch`]), fsync'd when `storage.sync` is on, by the group-commit
//!   writer ([`writer`]) so one fsync covers every change that arrived during the previous one.
//! - **Snapshots are the column families themselves**: each conversation's state is rewritten
//!   with every change, so recovery replays nothing but RocksDB's own WAL tail; actors are
//!   re-activated lazily from their record, and start-up only scans the outbox (pending sends).
//!   One exception, for the busiest path: a plain inbound message (one that changes nothing but
//!   what follows from the messages themselves, see [`Conversation::only_absorbed`]) is committed
//!   without its record, at most [`MAX_UNRECORDED`] in a row. Every read that hands a
//!   conversation out folds the messages after the record back in ([`fold_tail`]), so callers
//!   never see the difference; only [`Store::scan_status`] returns records as stored.
//! - **Raw bytes never leave this module**: callers see domain types, [`schema`] records and
//!   [`StoreError`].
//! - **RocksDB is never called on an async worker thread**: reads run on tokio's blocking pool,
//!   writes on the writer thread.
//! - **Its memory is bounded**: every column family's memtables share [`MEMTABLE_BUDGET`] (RocksDB
//!   flushes the largest when they reach it) and every table reader shares one
//!   [`BLOCK_CACHE`]-byte LRU block cache, so memory does not grow with the data set or with the
//!   number of column families.

pub mod batch;
pub mod codec;
mod legacy;
pub mod schema;
pub mod settings;
mod writer;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction as IterDirection, IteratorMode, Options, DB,
};
use tokio::sync::{mpsc, oneshot};

pub use batch::Batch;
use codec::decode;
use schema::*;
pub use schema::{IndexKey, OutboxJob, StatusUpdate, WamidRef};

use crate::domain::{Conversation, ConversationStatus, Message};

/// Conversations per (status, team).
pub type StatusTeamCounts = HashMap<(ConversationStatus, String), u64>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("rocksdb: {0}")]
    Rocks(String),
    #[error("codec: {0}")]
    Codec(String),
    #[error("store is closed")]
    Closed,
    #[error("missing column family {0}")]
    MissingCf(&'static str),
}

struct Inner {
    db: RwLock<Option<Arc<DB>>>,
    block_cache: rocksdb::Cache,
    writer: Mutex<Option<mpsc::Sender<writer::Msg>>>,
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    health: Arc<writer::Health>,
}

/// A cheap, cloneable handle to the database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

fn cf<'a>(db: &'a DB, name: &'static str) -> Result<&'a ColumnFamily, StoreError> {
    db.cf_handle(name).ok_or(StoreError::MissingCf(name))
}

fn rocks(e: rocksdb::Error) -> StoreError {
    StoreError::Rocks(e.to_string())
}

/// RocksDB's in-memory footprint, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryUsage {
    /// Active and immutable memtables, every column family.
    pub memtables: u64,
    /// Bytes held by the shared block cache.
    pub block_cache: u64,
    /// Table readers outside the block cache.
    pub table_readers: u64,
}

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

/// Most messages a conversation commits in a row without rewriting its record. Each read of the
/// record then reads at most this many messages to bring it up to date, while a busy
/// conversation skips all but one record write in this many (one of the three memtable inserts
/// an inbound message costs the group-commit writer, BENCHMARKS.md "Stop 15").
pub const MAX_UNRECORDED: u64 = 64;

/// A conversation as an actor activation needs it.
pub struct LoadedConversation {
    /// The record with every message committed after it folded in.
    pub conv: Conversation,
    /// The wamids of all its messages, when it has at most the `max_messages` asked for.
    pub wamids: Option<Vec<String>>,
    /// How many messages were committed after the record.
    pub unrecorded: u64,
}

/// All memtables together (RocksDB's write buffer manager), across column families.
pub const MEMTABLE_BUDGET: usize = 64 << 20;
/// The block cache shared by every column family (data, index and filter blocks).
pub const BLOCK_CACHE: usize = 32 << 20;
/// Table files RocksDB keeps open at once (its default is every file, unbounded): the HTTP
/// front door sizes its connection cap from the open-file limit minus this and a margin.
pub const MAX_OPEN_FILES: i32 = 1024;

impl Store {
    /// Opens (creating if missing) the database and starts the writer thread. Blocking.
    pub fn open(path: &Path, sync: bool, max_commit_batch: usize) -> Result<Self, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.increase_parallelism(2);
        opts.set_max_background_jobs(2);
        // Group commit already batches; pipelined writes let the WAL and memtable overlap.
        opts.set_enable_pipelined_write(true);
        // One writer thread: concurrent memtable inserts only add splice recomputation per key
        // (10.6 % of broker CPU in the ingest profile, see BENCHMARKS.md).
        opts.set_allow_concurrent_memtable_write(false);
        opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
        opts.set_max_open_files(MAX_OPEN_FILES);
        // Write flushed/compacted files out as they grow instead of in one burst at the end, so
        // the WAL fsync an acknowledgement waits for is not queued behind megabytes of SST data.
        opts.set_bytes_per_sync(1 << 20);
        // Flushes and compactions yield the CPU to request handling on small machines.
        let mut env = rocksdb::Env::new().map_err(rocks)?;
        env.lower_thread_pool_cpu_priority();
        env.lower_high_priority_thread_pool_cpu_priority();
        opts.set_env(&env);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_bloom_filter(10.0, false);
        // Partitioned filters and indexes: a lookup loads one ~4 KiB partition of a file's bloom
        // filter and index, not the whole filter (≈1 MiB for a 300 MB file). With whole filters,
        // a redelivery check against a flushed wamid evicted and re-read (copy plus XXH3
        // checksum) a filter block per file per lookup once the data outgrew the bounded cache:
        // 17 % of the webhook workers' CPU after 45 s of closed-loop ingest (BENCHMARKS.md,
        // stop 11). The partitions' top-level index stays pinned in the cache.
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_pin_top_level_index_and_filter(true);
        let mut cf_opts = Options::default();
        cf_opts.set_block_based_table_factory(&table);
        let cfs = ALL_CFS
            .iter()
            .map(|n| ColumnFamilyDescriptor::new(*n, cf_opts.clone()));
        let db = Arc::new(DB::open_cf_descriptors(&opts, path, cfs).map_err(rocks)?);
        let health = Arc::new(writer::Health::new());
        let (tx, handle) = writer::spawn(db.clone(), sync, max_commit_batch, health.clone())
            .map_err(|e| StoreError::Rocks(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db: RwLock::new(Some(db)),
                block_cache: cache,
                writer: Mutex::new(Some(tx)),
                writer_thread: Mutex::new(Some(handle)),
                health,
            }),
        })
    }

    /// Whether the last group commit failed (and none has succeeded since).
    pub fn is_failing(&self) -> bool {
        *self.inner.health.failing.borrow()
    }

    /// How long the group commit in progress has been running, if one is (a hung disk shows
    /// here first: nothing fails, everything waits).
    pub fn commit_running_for(&self) -> Option<Duration> {
        self.inner.health.busy_for()
    }

    /// Returns once commits have been failing, with none succeeding, for `persisting`.
    pub async fn failed_for(&self, persisting: Duration) {
        let mut rx = self.inner.health.failing.subscribe();
        loop {
            // (`map` drops the watch's read guard before the next await.)
            if rx.wait_for(|failing| *failing).await.map(|_| ()).is_err() {
                return std::future::pending().await;
            }
            let recovered = rx.wait_for(|failing| !*failing);
            let recovered = async { recovered.await.map(|_| ()) };
            match tokio::time::timeout(persisting, recovered).await {
                Err(_) => return,
                Ok(Err(_)) => return std::future::pending().await,
                Ok(Ok(())) => {} // a commit succeeded meanwhile
            }
        }
    }

    /// Makes every commit wait `stall` before writing, as on a hung disk (zero: none). For
    /// tests only.
    #[doc(hidden)]
    pub fn inject_write_stall(&self, stall: Duration) {
        self.inner.health.inject_stall_ms.store(
            stall.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// While `failing`, every commit fails without writing, as on a failing disk. For tests of
    /// the failure path only.
    #[doc(hidden)]
    pub fn inject_write_failure(&self, failing: bool) {
        self.inner
            .health
            .inject_failure
            .store(failing, std::sync::atomic::Ordering::Relaxed);
    }

    fn db(&self) -> Result<Arc<DB>, StoreError> {
        self.inner.db.read().clone().ok_or(StoreError::Closed)
    }

    /// Makes a batch durable (fsync'd when configured) through the group-commit writer.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let tx = self.inner.writer.lock().clone().ok_or(StoreError::Closed)?;
        let (done, wait) = oneshot::channel();
        tx.send(writer::Msg::Commit(writer::Commit { batch, done }))
            .await
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs a blocking read on the blocking pool.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&DB) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db()?;
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Rocks(format!("read task failed: {e}")))?
    }

    pub async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let id = id.to_string();
        self.read(move |db| get_conversation(db, &id)).await
    }

    /// A conversation and, when it has at most `max_messages` messages, the wamids of all of
    /// them (one blocking-pool hop for an actor activation).
    pub async fn load_conversation(
        &self,
        id: &str,
        max_messages: u64,
    ) -> Result<Option<LoadedConversation>, StoreError> {
        let id = id.to_string();
        self.read(move |db| {
            let Some((conv, unrecorded)) = get_folded(db, &id)? else {
                return Ok(None);
            };
            if conv.next_seq > max_messages {
                return Ok(Some(LoadedConversation {
                    conv,
                    wamids: None,
                    unrecorded,
                }));
            }
            let mut wamids = Vec::new();
            scan_prefix(db, CF_MESSAGES, &conversation_prefix(&id), |_, v| {
                let m: Message = decode(v)?;
                wamids.extend(m.wamid);
                Ok(true)
            })?;
            Ok(Some(LoadedConversation {
                conv,
                wamids: Some(wamids),
                unrecorded,
            }))
        })
        .await
    }

    pub async fn messages(&self, conversation_id: &str) -> Result<Vec<Message>, StoreError> {
        let prefix = conversation_prefix(conversation_id);
        self.read(move |db| {
            let mut out = Vec::new();
            scan_prefix(db, CF_MESSAGES, &prefix, |_, v| {
                out.push(decode(v)?);
                Ok(true)
            })?;
            Ok(out)
        })
        .await
    }

    pub async fn get_message(
        &self,
        conversation_id: &str,
        seq: u64,
    ) -> Result<Option<Message>, StoreError> {
        let key = seq_key(conversation_id, seq);
        self.read(move |db| {
            db.get_pinned_cf(cf(db, CF_MESSAGES)?, key)
                .map_err(rocks)?
                .map(|v| decode(&v))
                .transpose()
        })
        .await
    }

    /// Looks up several wamids at once (one blocking-pool hop for a whole webhook group).
    pub async fn lookup_wamids(
        &self,
        wamids: Vec<String>,
    ) -> Result<Vec<Option<WamidRef>>, StoreError> {
        self.read(move |db| {
            let h = cf(db, CF_WAMIDS)?;
            db.batched_multi_get_cf(h, wamids.iter().map(|w| w.as_bytes()), false)
                .into_iter()
                .map(|r| r.map_err(rocks)?.map(|v| decode(&v)).transpose())
                .collect()
        })
        .await
    }

    pub async fn idempotent_seq(
        &self,
        conversation_id: &str,
        key: &str,
    ) -> Result<Option<u64>, StoreError> {
        let k = idempotency_key(conversation_id, key);
        self.read(move |db| {
            Ok(db
                .get_pinned_cf(cf(db, CF_IDEMPOTENCY)?, k)
                .map_err(rocks)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes))
        })
        .await
    }

    pub async fn orphan_status(&self, wamid: &str) -> Result<Option<StatusUpdate>, StoreError> {
        let k = wamid.as_bytes().to_vec();
        self.read(move |db| {
            db.get_pinned_cf(cf(db, CF_ORPHAN_STATUS)?, k)
                .map_err(rocks)?
                .map(|v| decode(&v))
                .transpose()
        })
        .await
    }

    /// Routing rules and team settings stored by the admin API (see [`settings`]).
    pub async fn settings(
        &self,
    ) -> Result<
        (
            Option<settings::RoutingRecord>,
            Vec<(String, settings::TeamRecord)>,
        ),
        StoreError,
    > {
        self.read(|db| {
            let h = cf(db, CF_SETTINGS)?;
            let routing = db
                .get_pinned_cf(h, settings::ROUTING_KEY)
                .map_err(rocks)?
                .map(|v| decode(&v))
                .transpose()?;
            let mut teams = Vec::new();
            scan_prefix(db, CF_SETTINGS, settings::TEAM_PREFIX, |k, v| {
                let id = String::from_utf8_lossy(&k[settings::TEAM_PREFIX.len()..]).into_owned();
                teams.push((id, decode(v)?));
                Ok(true)
            })?;
            Ok((routing, teams))
        })
        .await
    }

    /// How many durable outbound messages await their outcome, per number (start-up report).
    pub async fn pending_outbox_by_number(&self) -> Result<HashMap<String, usize>, StoreError> {
        self.read(|db| {
            let mut counts = HashMap::new();
            for item in db.iterator_cf(cf(db, CF_OUTBOX)?, IteratorMode::Start) {
                let job: OutboxJob = decode(&item.map_err(rocks)?.1)?;
                *counts.entry(job.number).or_insert(0) += 1;
            }
            Ok(counts)
        })
        .await
    }

    /// Up to `limit` durable sends of `number` after the key of `after` (key order: conversation
    /// id, then seq), and whether the scan reached the end of the outbox. The outbox pages
    /// through this when jobs were kept on disk only (its queue was full, or at start-up).
    pub async fn outbox_page(
        &self,
        number: String,
        after: Option<(String, u64)>,
        limit: usize,
    ) -> Result<(Vec<OutboxJob>, bool), StoreError> {
        self.read(move |db| {
            let start = after.map(|(conv, seq)| key_after(seq_key(&conv, seq)));
            let mode = match &start {
                Some(s) => IteratorMode::From(s, IterDirection::Forward),
                None => IteratorMode::Start,
            };
            let mut jobs = Vec::new();
            for item in db.iterator_cf(cf(db, CF_OUTBOX)?, mode) {
                let job: OutboxJob = decode(&item.map_err(rocks)?.1)?;
                if job.number == number {
                    jobs.push(job);
                    if jobs.len() >= limit {
                        return Ok((jobs, false));
                    }
                }
            }
            Ok((jobs, true))
        })
        .await
    }

    /// Whether send `seq` of a conversation is still waiting for its outcome to be recorded.
    pub async fn outbox_contains(
        &self,
        conversation_id: &str,
        seq: u64,
    ) -> Result<bool, StoreError> {
        let key = seq_key(conversation_id, seq);
        self.read(move |db| {
            Ok(db
                .get_pinned_cf(cf(db, CF_OUTBOX)?, key)
                .map_err(rocks)?
                .is_some())
        })
        .await
    }

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
    async fn status_page(
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

    /// Ids of the conversations an agent owns (rebuilds its load after a restart).
    pub async fn owned_by(&self, agent: &str) -> Result<Vec<String>, StoreError> {
        let prefix = assignee_prefix(agent);
        self.read(move |db| {
            let mut ids = Vec::new();
            scan_prefix(db, CF_INDEX, &prefix, |k, _| {
                if let Some(key) = IndexKey::decode(k) {
                    ids.push(key.id().to_string());
                }
                Ok(true)
            })?;
            Ok(ids)
        })
        .await
    }

    /// What RocksDB holds in memory now (memtables and block cache are bounded by
    /// [`MEMTABLE_BUDGET`] and [`BLOCK_CACHE`]). Reads counters on the blocking pool, no I/O.
    pub async fn memory(&self) -> Result<MemoryUsage, StoreError> {
        let block_cache = self.inner.block_cache.get_usage() as u64;
        self.read(move |db| {
            let mut usage = MemoryUsage {
                block_cache,
                ..MemoryUsage::default()
            };
            for name in ALL_CFS {
                let h = cf(db, name)?;
                let prop = |p: &str| db.property_int_value_cf(h, p).ok().flatten().unwrap_or(0);
                usage.memtables += prop("rocksdb.cur-size-all-mem-tables");
                usage.table_readers += prop("rocksdb.estimate-table-readers-mem");
            }
            Ok(usage)
        })
        .await
    }

    /// Stops the writer after it drained every queued commit, then closes the database so the
    /// directory can be reopened. Waits (bounded) for in-flight reads to drop their handles.
    pub async fn close(&self) {
        let this = self.clone();
        let _ = tokio::task::spawn_blocking(move || this.close_blocking()).await;
    }

    /// [`Self::close`] for contexts that cannot await (a `Drop`). Idempotent.
    pub fn close_blocking(&self) {
        let tx = self.inner.writer.lock().take();
        if let Some(t) = self.inner.writer_thread.lock().take() {
            if let Some(tx) = tx {
                // try_send: this may run on an async thread (a Drop), where blocking_send panics.
                // A full queue is being drained by the writer, so the retry is short.
                let mut close = writer::Msg::Close;
                for _ in 0..5_000 {
                    match tx.try_send(close) {
                        Ok(()) => break,
                        Err(mpsc::error::TrySendError::Full(m)) => {
                            close = m;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
            }
            let _ = t.join();
        }
        let Some(mut db) = self.inner.db.write().take() else {
            return;
        };
        // RocksDB must be closed before the process exits, or its background threads can outlive
        // the library's static state.
        for _ in 0..500 {
            match Arc::try_unwrap(db) {
                Ok(db) => {
                    let _ = db.flush_wal(true);
                    drop(db);
                    return;
                }
                Err(still_shared) => {
                    db = still_shared;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
        tracing::warn!("store still referenced after 5 s; leaving it open");
    }
}

/// A conversation brought up to date with the messages committed after its record.
fn get_conversation(db: &DB, id: &str) -> Result<Option<Conversation>, StoreError> {
    Ok(get_folded(db, id)?.map(|(conv, _)| conv))
}

/// [`get_conversation`], and how many messages were folded in.
fn get_folded(db: &DB, id: &str) -> Result<Option<(Conversation, u64)>, StoreError> {
    let Some(mut conv) = get_record(db, id)? else {
        return Ok(None);
    };
    let folded = fold_tail(&mut db.raw_iterator_cf(cf(db, CF_MESSAGES)?), &mut conv)?;
    Ok(Some((conv, folded)))
}

/// A conversation's record as stored: `next_seq`, `last_message_at` and `last_inbound_at` may
/// lag its messages (see [`fold_tail`]).
fn get_record(db: &DB, id: &str) -> Result<Option<Conversation>, StoreError> {
    db.get_pinned_cf(cf(db, CF_CONVERSATIONS)?, id.as_bytes())
        .map_err(rocks)?
        .map(|v| decode(&v))
        .transpose()
}

/// Folds into `conv` (a record as stored) the messages committed after it — those from its
/// `next_seq` on, at most [`MAX_UNRECORDED`] since the actor writes the record then — read
/// through `messages`, an iterator over the messages column family (of the same snapshot as the
/// record, when it came from one). Returns how many.
fn fold_tail<D: rocksdb::DBAccess>(
    messages: &mut rocksdb::DBRawIteratorWithThreadMode<'_, D>,
    conv: &mut Conversation,
) -> Result<u64, StoreError> {
    let prefix = conversation_prefix(&conv.id);
    messages.seek(seq_key(&conv.id, conv.next_seq));
    let mut folded = 0;
    while let Some(v) = messages
        .key()
        .filter(|k| k.starts_with(&prefix))
        .and(messages.value())
    {
        let m: Message = decode(v)?;
        conv.absorb(&m);
        folded += 1;
        messages.next();
    }
    messages.status().map_err(rocks)?;
    Ok(folded)
}

/// The first key after `key` in RocksDB's byte order: where a scan resumes after it.
fn key_after(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
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

/// Visits every entry of `cf_name` whose key starts with `prefix`, in key order, until `visit`
/// returns `false`.
fn scan_prefix(
    db: &DB,
    cf_name: &'static str,
    prefix: &[u8],
    visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    scan_prefix_from(db, cf_name, prefix, prefix, visit)
}

/// [`scan_prefix`] starting at `start` (a key at or after `prefix`) instead of its first key.
fn scan_prefix_from(
    db: &DB,
    cf_name: &'static str,
    prefix: &[u8],
    start: &[u8],
    visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let it = db.iterator_cf(
        cf(db, cf_name)?,
        IteratorMode::From(start, IterDirection::Forward),
    );
    visit_prefix(it, prefix, visit)
}

/// Visits `it`'s entries while their keys start with `prefix` and `visit` says go on.
fn visit_prefix(
    it: rocksdb::DBIteratorWithThreadMode<'_, DB>,
    prefix: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    for item in it {
        let (k, v) = item.map_err(rocks)?;
        if !k.starts_with(prefix) || !visit(&k, &v)? {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Commits `c`'s record (and index entries), replacing `before`'s.
    async fn commit_conversation(store: &Store, before: Option<&Conversation>, c: &Conversation) {
        let mut b = Batch::new();
        b.put_conversation(before, c).expect("put");
        store.commit(b).await.expect("commit");
    }

    #[tokio::test]
    async fn batch_is_durable_and_indexed_and_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), true, 64).expect("open");
        let mut c = Conversation::new("n", "cust", "support", 1);
        commit_conversation(&store, None, &c).await;
        let before = c.clone();
        c.assign("alice", 1);
        commit_conversation(&store, Some(&before), &c).await;
        store.close().await;

        let store = Store::open(dir.path(), true, 64).expect("reopen");
        assert_eq!(
            store.get_conversation(&c.id).await.expect("get"),
            Some(c.clone())
        );
        let queued = store
            .list_page(
                vec![ListQuery::Status {
                    status: ConversationStatus::Queued,
                    team: None,
                }],
                None,
                10,
                10,
                |_| true,
            )
            .await
            .expect("list");
        assert_eq!(queued, ListPage::default(), "old index entry must be gone");
        assert_eq!(
            store.owned_by("alice").await.expect("owned"),
            vec![c.id.clone()]
        );
        let counts = store
            .count_by_status_team()
            .await
            .expect("view")
            .await
            .expect("counts");
        assert_eq!(
            counts.get(&(ConversationStatus::Assigned, "support".to_string())),
            Some(&1)
        );
        store.close().await;
    }

    #[tokio::test]
    async fn status_counts_are_those_of_the_moment_the_view_was_taken() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), false, 64).expect("open");
        let mut a = Conversation::new("n", "cust-a", "support", 1);
        commit_conversation(&store, None, &a).await;
        let key = |status| (status, "support".to_string());

        let counted = store.count_by_status_team().await.expect("view");
        // Committed after the view was taken, before the count runs: not counted.
        let before = a.clone();
        a.assign("alice", 2);
        let mut b = Batch::new();
        b.put_conversation(Some(&before), &a).expect("put");
        b.put_conversation(None, &Conversation::new("n", "cust-b", "support", 2))
            .expect("put");
        store.commit(b).await.expect("commit");
        let counts = counted.await.expect("counts");
        assert_eq!(
            counts,
            HashMap::from([(key(ConversationStatus::Queued), 1)])
        );

        let now = store
            .count_by_status_team()
            .await
            .expect("view")
            .await
            .expect("counts");
        assert_eq!(
            now,
            HashMap::from([
                (key(ConversationStatus::Queued), 1),
                (key(ConversationStatus::Assigned), 1)
            ])
        );
        store.close().await;
    }

    #[tokio::test]
    async fn status_pages_walk_one_team_in_id_order_without_gaps_or_repeats() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), false, 64).expect("open");
        let mut b = Batch::new();
        let mut support = Vec::new();
        for i in 0..25 {
            let c = Conversation::new("n", &format!("cust{i}"), "support", 1);
            support.push(c.id.clone());
            b.put_conversation(None, &c).expect("put");
            let other = Conversation::new("n", &format!("other{i}"), "sales", 1);
            b.put_conversation(None, &other).expect("put");
        }
        store.commit(b).await.expect("commit");
        support.sort();

        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .status_page(ConversationStatus::Queued, "support".into(), after, 10)
                .await
                .expect("page");
            assert!(page.len() <= 10);
            assert!(page.iter().all(|c| c.team == "support"));
            after = page.last().map(|c| c.id.clone());
            let full = page.len() == 10;
            seen.extend(page.into_iter().map(|c| c.id));
            if !full {
                break;
            }
        }
        assert_eq!(seen, support);
        let assigned = store
            .status_page(ConversationStatus::Assigned, "support".into(), None, 10)
            .await
            .expect("page");
        assert!(assigned.is_empty());
        store.close().await;
    }

    /// Follows `next_after` from the start until `None`, each page reading at most `budget`
    /// entries; returns the ids listed and the number of pages.
    async fn follow(
        store: &Store,
        queries: &[ListQuery],
        limit: usize,
        budget: usize,
        keep: fn(&Conversation) -> bool,
    ) -> (Vec<String>, usize) {
        let (mut seen, mut pages, mut after) = (Vec::new(), 0, None);
        loop {
            let page = store
                .list_page(queries.to_vec(), after, limit, budget, keep)
                .await
                .expect("page");
            pages += 1;
            assert!(page.conversations.len() <= limit.min(budget));
            seen.extend(page.conversations.into_iter().map(|c| c.id));
            match page.next_after {
                Some(next) => after = Some(next),
                None => return (seen, pages),
            }
            assert!(pages < 1_000, "paging does not end");
        }
    }

    #[tokio::test]
    async fn list_pages_resume_where_the_budget_stopped_in_every_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), false, 64).expect("open");
        let mut b = Batch::new();
        let (mut support, mut sales_assigned) = (Vec::new(), Vec::new());
        for i in 0..40 {
            let c = Conversation::new("n", &format!("s{i}"), "support", 1);
            support.push(c.id.clone());
            b.put_conversation(None, &c).expect("put");
        }
        for i in 0..7 {
            let mut c = Conversation::new("n", &format!("a{i}"), "sales", 1);
            c.assign("dave", 1);
            sales_assigned.push(c.id.clone());
            b.put_conversation(None, &c).expect("put");
        }
        for i in 0..5 {
            let c = Conversation::new("n", &format!("q{i}"), "sales", 1);
            b.put_conversation(None, &c).expect("put");
        }
        store.commit(b).await.expect("commit");
        support.sort();
        sales_assigned.sort();
        let queued = |team: Option<&str>| ListQuery::Status {
            status: ConversationStatus::Queued,
            team: team.map(str::to_string),
        };

        // Unfiltered, only the 7 assigned sales conversations kept: 52 records, budget 4.
        fn assigned(c: &Conversation) -> bool {
            c.status == ConversationStatus::Assigned
        }
        let (seen, pages) = follow(&store, &[ListQuery::All], 100, 4, assigned).await;
        assert_eq!(seen, sales_assigned);
        assert_eq!(
            pages, 13,
            "52 records, 4 a page, the last page ends the range"
        );
        // Index scans: one team, every team (a range per team), an assignee, and a union.
        let (seen, _) = follow(&store, &[queued(Some("support"))], 100, 3, |_| true).await;
        assert_eq!(seen, support);
        let (seen, _) = follow(&store, &[queued(None)], 100, 3, |_| true).await;
        assert_eq!(seen.len(), 45);
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "id order, no repeats");
        let (seen, _) = follow(&store, &[ListQuery::Assignee("dave".into())], 2, 5, |_| {
            true
        })
        .await;
        assert_eq!(seen, sales_assigned);
        let union = [
            ListQuery::Assignee("dave".into()),
            queued(Some("support")),
            ListQuery::Id(support[3].clone()),
        ];
        let (seen, _) = follow(&store, &union, 5, 6, |_| true).await;
        let mut want = [support.clone(), sales_assigned.clone()].concat();
        want.sort();
        assert_eq!(seen, want, "a union is merged by id, each once");

        // A page that matched nothing still carries the cursor; `after` is honoured.
        let page = store
            .list_page(vec![ListQuery::All], None, 10, 2, |_| false)
            .await
            .expect("page");
        assert!(page.conversations.is_empty());
        assert!(page.next_after.is_some());
        let page = store
            .list_page(
                vec![queued(Some("support"))],
                Some(support[37].clone()),
                10,
                10,
                |_| true,
            )
            .await
            .expect("page");
        let ids: Vec<_> = page.conversations.iter().map(|c| c.id.clone()).collect();
        assert_eq!(ids, support[38..].to_vec());
        assert_eq!(page.next_after, None, "the range ended within the budget");
        // A full page ending exactly at the end of the range needs no cursor either.
        let page = store
            .list_page(
                vec![queued(Some("support"))],
                Some(support[37].clone()),
                2,
                10,
                |_| true,
            )
            .await
            .expect("page");
        assert_eq!(page.conversations.len(), 2);
        assert_eq!(page.next_after, None);
        store.close().await;
    }

    /// Messages committed without their record are folded back in by every read that hands a
    /// conversation out (by id, listed, loaded); only the start-up scans see the record as stored.
    #[tokio::test]
    async fn reads_fold_in_the_messages_committed_after_the_record() {
        use crate::domain::{DeliveryStatus, Direction};
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), false, 64).expect("open");
        let mut c = Conversation::new("n", "cust", "support", 1_000);
        let other = Conversation::new("n", "other", "support", 1_000);
        let message = |c: &Conversation, seq: u64, at: i64| Message {
            conversation_id: c.id.clone(),
            seq,
            direction: Direction::Inbound,
            kind: "text".into(),
            text: Some(format!("m{seq}")),
            wamid: Some(format!("w-{}-{seq}", c.customer)),
            status: Some(DeliveryStatus::Received),
            author: c.customer.clone(),
            at,
            error: None,
            idempotency_key: None,
            raw: None,
        };
        let mut b = Batch::new();
        let seq = c.take_seq();
        let first = message(&c, seq, 2_000);
        c.absorb(&first);
        b.put_message(&first).expect("put");
        b.put_conversation(None, &c).expect("put");
        b.put_conversation(None, &other).expect("put");
        store.commit(b).await.expect("commit");
        let recorded = c.clone();
        // Three more messages without the record, and one of the neighbour's (same prefix order).
        let mut b = Batch::new();
        for at in [3_000, 5_000, 4_000] {
            let seq = c.take_seq();
            let m = message(&c, seq, at);
            c.absorb(&m);
            b.put_message(&m).expect("put");
        }
        b.put_message(&message(&other, 0, 9_000)).expect("put");
        store.commit(b).await.expect("commit");
        assert_eq!(
            (c.next_seq, c.last_message_at, c.last_inbound_at),
            (4, 5_000, Some(5_000))
        );

        assert_eq!(
            store.get_conversation(&c.id).await.expect("get"),
            Some(c.clone())
        );
        let loaded = store
            .load_conversation(&c.id, 10)
            .await
            .expect("load")
            .expect("stored");
        assert_eq!((loaded.conv, loaded.unrecorded), (c.clone(), 3));
        assert_eq!(loaded.wamids.map(|w| w.len()), Some(4));
        let page = store
            .list_page(vec![ListQuery::All], None, 10, 10, |_| true)
            .await
            .expect("list");
        let listed = page.conversations.iter().find(|x| x.id == c.id);
        assert_eq!(listed, Some(&c));
        // The neighbour's record has no messages of its own before its next_seq: it too gets its
        // message folded in, and nothing of `c`'s.
        let neighbour = page.conversations.iter().find(|x| x.id == other.id);
        assert_eq!(
            neighbour.map(|x| (x.next_seq, x.last_message_at)),
            Some((1, 9_000))
        );
        let mut scanned = Vec::new();
        store
            .scan_status(ConversationStatus::Queued, "support", |p| scanned.extend(p))
            .await
            .expect("scan");
        assert!(
            scanned.contains(&recorded),
            "start-up scans read records as stored"
        );
        store.close().await;
    }
}
