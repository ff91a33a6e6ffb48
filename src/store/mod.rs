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
//!
//! Layout: this file holds the handle, the commit path and closing; [`open`] opening and tuning
//! (and RocksDB's memory), [`health`] whether commits fail or hang, [`reads`] point reads and
//! the outbox's, [`list`] bounded listings and start-up scans, [`media`] the media column family,
//! [`bot`] the bot's memory.
//! [`report`] reads for reports and [`rollups`] the hourly report rollups' merge operator.

pub mod batch;
mod bot;
pub mod codec;
mod health;
mod legacy;
mod list;
mod media;
mod open;
pub mod openings;
mod orphans;
pub mod people;
mod reads;
pub mod report;
mod rollups;
pub mod schema;
pub mod settings;
pub mod templates;
#[cfg(test)]
mod tests;
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
pub use list::{ListPage, ListQuery};
pub use media::MAX_SHOWN_READ;
pub use open::{MemoryUsage, BLOCK_CACHE, MAX_OPEN_FILES, MEMTABLE_BUDGET};
pub use reads::{LoadedConversation, MAX_UNRECORDED};
use schema::*;
pub use schema::{
    FetchJob, IndexKey, MediaOrigin, MediaRecord, MediaState, OutboxJob, Payload, StatusUpdate,
    WamidRef,
};

use crate::domain::{Conversation, ConversationStatus, Direction, Message};

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
    /// The first hour whose report events all have rollups (read or set when opening).
    rolled_up_from: crate::domain::Millis,
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

impl Store {
    fn db(&self) -> Result<Arc<DB>, StoreError> {
        self.inner.db.read().clone().ok_or(StoreError::Closed)
    }

    /// Makes a batch durable (fsync'd when configured) through the group-commit writer.
    pub async fn commit(&self, batch: Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.commit_with(batch, None).await.map(|_| ())
    }

    /// [`Self::commit`], answering for each conditional put of `batch`
    /// ([`Batch::put_outbox_if_present`]), in order, whether its key existed, so it was written.
    pub async fn commit_checked(&self, batch: Batch) -> Result<Vec<bool>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.commit_with(batch, None).await?.present)
    }

    /// [`Self::commit`] of a batch guarded by an idempotency key ([`Batch::guard_idempotency`]):
    /// `Some(seq)` when the key was in use already, so nothing of the batch was written (the seq
    /// is the message it names), `None` when the batch was written.
    pub async fn commit_guarded(&self, batch: Batch) -> Result<Option<u64>, StoreError> {
        match self.commit_with(batch, None).await?.blocked {
            None => Ok(None),
            Some(v) => <[u8; 8]>::try_from(v.as_slice())
                .map(|b| Some(u64::from_be_bytes(b)))
                .map_err(|_| StoreError::Codec("idempotency entry is not a seq".into())),
        }
    }

    /// [`Self::commit`], then the orphan status parked for `wamid`, read by the writer thread
    /// right after the batch is written: what [`Self::orphan_status`] after the commit answers,
    /// without a second round trip (to the blocking pool) per send.
    pub async fn commit_then_orphan(
        &self,
        batch: Batch,
        wamid: &str,
    ) -> Result<Option<StatusUpdate>, StoreError> {
        let read = (CF_ORPHAN_STATUS, wamid.as_bytes().to_vec());
        match self.commit_with(batch, Some(read)).await?.read {
            Some(Ok(v)) => v.map(|v| decode(&v)).transpose(),
            // The commit is durable; only the read failed: it is made again on its own.
            Some(Err(_)) | None => self.orphan_status(wamid).await,
        }
    }

    async fn commit_with(
        &self,
        batch: Batch,
        read_after: Option<(&'static str, Vec<u8>)>,
    ) -> Result<writer::Committed, StoreError> {
        let tx = self.inner.writer.lock().clone().ok_or(StoreError::Closed)?;
        let (done, wait) = oneshot::channel();
        tx.send(writer::Msg::Commit(writer::Commit {
            batch,
            read_after,
            done,
        }))
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
        metrics::counter!(crate::metrics::STORE_READS).increment(1);
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Rocks(format!("read task failed: {e}")))?
    }

    /// Writes every memtable to table files (RocksDB's flush), which also merges the report
    /// rollups' operands into one value per rollup: for benchmarks that measure reads of data
    /// as it is once it is no longer fresh (a month of reports is on disk, not in memory).
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.read(|db| {
            for name in ALL_CFS {
                db.flush_cf(cf(db, name)?).map_err(rocks)?;
            }
            Ok(())
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

/// The first key after `key` in RocksDB's byte order: where a scan resumes after it.
fn key_after(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
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
