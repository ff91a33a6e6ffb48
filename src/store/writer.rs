//! The group-commit writer: many acknowledgements, one write and one fsync.
//!
//! One OS thread owns the write path. Producers hand it a [`Batch`] and wait on a oneshot; the
//! thread takes the first commit, drains whatever else is already queued (up to
//! `max_commit_batch`), applies them all in a single `WriteBatch` with `sync` as configured, and
//! answers every producer with the same outcome. Under load the fsync cost is shared by every
//! request that arrived during the previous fsync, so throughput grows with concurrency while a
//! lone request still pays exactly one fsync.
//!
//! Bounds: the queue holds at most `QUEUE_CAPACITY` commits; producers wait (asynchronously) when it
//! is full, which pushes back to the webhook admission limit.
//!
//! A group is written in key order per column family (a stable sort, so the operations on one
//! key keep their order and the group means exactly what its commits said in arrival order):
//! RocksDB inserts a key into the memtable starting from where the previous insert ended, so
//! sorted keys cost a short step each where interleaved ones (random wamids, the messages of many
//! conversations) cost a full search. A group's merge operands of one report rollup are joined
//! into one ([`super::rollups::combine`], what the next flush would do anyway).
//!
//! Conditional puts and reads after the write: a commit may hold puts made only if their key
//! exists when the group is applied (the outbox's in-doubt marks, which must never bring back a
//! job whose outcome was committed first; this thread writes every key, so the check and the
//! put are one step against every other commit), and may ask for one key to be read right after
//! the group is written (a check that must see the commit, without a second round trip), and
//! may be guarded by a key (a reply's idempotency key): while that key exists, nothing of the
//! commit is written and its value is answered instead. All three are answered with the commit
//! ([`Committed`]).
//!
//! Health: the writer publishes whether its last group commit failed ([`Health`]). RocksDB stops
//! taking writes after an I/O error in its journal (a full disk, say) and does not resume while
//! the database stays open, so a failure that persists means the store must be reopened; the
//! broker's supervisor does that (`crate::supervisor`).
//!
//! Shutdown is an explicit [`Msg::Close`], not the channel closing: a task suspended mid-commit
//! (say, when a broker is dropped without a clean shutdown) still holds a sender, and the writer
//! must not wait for it. After `Close` the queue takes nothing new, and what is already queued is
//! still written and answered.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::{WriteBatch, WriteOptions, DB};
use tokio::sync::{mpsc, oneshot, watch};

use super::batch::{Batch, Op};
use super::StoreError;
use crate::log_limit::LogLimit;
use crate::metrics as m;

/// Commits waiting for the writer thread.
pub const QUEUE_CAPACITY: usize = 16_384;

pub(super) struct Commit {
    pub batch: Batch,
    /// A key to read right after the group is written, on this thread: a check that must
    /// see this commit (write first, check second) without a hop to the blocking pool.
    pub read_after: Option<(&'static str, Vec<u8>)>,
    pub done: oneshot::Sender<Result<Committed, StoreError>>,
}

/// What one commit learns besides that it is durable.
#[derive(Debug, Default)]
pub(super) struct Committed {
    /// For each [`Op::PutIfPresent`] of the batch, in order: whether its key existed, so the
    /// put was made.
    pub present: Vec<bool>,
    /// The value of `read_after`'s key once the group was written (an error only fails the
    /// read: the commit is durable).
    pub read: Option<Result<Option<Vec<u8>>, StoreError>>,
    /// The value of the batch's guard key when it was present, so nothing was written.
    pub blocked: Option<Vec<u8>>,
}

/// Whether the last group commit failed, and since when the one in progress runs; shared by
/// the writer thread and the store's handles.
pub(super) struct Health {
    pub failing: watch::Sender<bool>,
    /// Microseconds after `epoch` when the group commit in progress began plus one; 0 when idle.
    busy_since: AtomicU64,
    epoch: Instant,
    /// While set, fails every commit without writing (tests of the failure path; a real
    /// failure needs a full or failing disk).
    pub inject_failure: AtomicBool,
    /// Milliseconds each commit waits before writing (tests of a hung disk).
    pub inject_stall_ms: AtomicU64,
}

impl Health {
    pub fn new() -> Self {
        Self {
            failing: watch::Sender::new(false),
            busy_since: AtomicU64::new(0),
            epoch: Instant::now(),
            inject_failure: AtomicBool::new(false),
            inject_stall_ms: AtomicU64::new(0),
        }
    }

    /// How long the group commit in progress has been running, if one is.
    pub fn busy_for(&self) -> Option<Duration> {
        match self.busy_since.load(Ordering::Acquire) {
            0 => None,
            since => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_micros(since - 1)),
            ),
        }
    }

    fn begin(&self, at: Instant) {
        let since = at.saturating_duration_since(self.epoch).as_micros() as u64;
        self.busy_since.store(since + 1, Ordering::Release);
    }

    fn end(&self) {
        self.busy_since.store(0, Ordering::Release);
    }

    fn record(&self, failed: bool) {
        self.failing
            .send_if_modified(|f| std::mem::replace(f, failed) != failed);
    }
}

pub(super) enum Msg {
    Commit(Commit),
    /// Write what is queued, then stop.
    Close,
}

pub(super) fn spawn(
    db: Arc<DB>,
    sync: bool,
    max_batch: usize,
    health: Arc<Health>,
) -> std::io::Result<(mpsc::Sender<Msg>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let handle = std::thread::Builder::new()
        .name("store-writer".into())
        .spawn(move || {
            // Every acknowledgement waits for this thread to wake and write.
            let granted = sched_slice::request_short_slice();
            tracing::debug!(granted, "group-commit writer: short scheduler slice");
            run(db, sync, max_batch, health, rx)
        })?;
    Ok((tx, handle))
}

fn run(
    db: Arc<DB>,
    sync: bool,
    max_batch: usize,
    health: Arc<Health>,
    mut rx: mpsc::Receiver<Msg>,
) {
    let mut opts = WriteOptions::default();
    opts.set_sync(sync);
    let mut group: Vec<Commit> = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        match first {
            Msg::Commit(c) => group.push(c),
            Msg::Close => {
                // Nothing new from here on; recv yields what is queued, then None.
                rx.close();
                continue;
            }
        }
        while group.len() < max_batch {
            match rx.try_recv() {
                Ok(Msg::Commit(c)) => group.push(c),
                Ok(Msg::Close) => rx.close(),
                Err(_) => break,
            }
        }
        let started = Instant::now();
        health.begin(started);
        let stall = health.inject_stall_ms.load(Ordering::Relaxed);
        if stall > 0 {
            // Ends early once the test lifts the stall, so it need not guess its length.
            let until = started + Duration::from_millis(stall);
            while health.inject_stall_ms.load(Ordering::Relaxed) > 0 {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                std::thread::sleep(left.min(Duration::from_millis(5)));
            }
        }
        let applied = if health.inject_failure.load(Ordering::Relaxed) {
            Err(StoreError::Rocks("injected write failure".into()))
        } else {
            apply(&db, &opts, &group)
        };
        // Presence checks per commit on success; the group's error for each otherwise.
        let (result, mut checked) = match applied {
            Ok(p) => (Ok(()), p.into_iter()),
            Err(e) => (Err(e), Vec::new().into_iter()),
        };
        health.end();
        health.record(result.is_err());
        metrics::histogram!(m::STORE_COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        metrics::histogram!(m::STORE_GROUP_SIZE).record(group.len() as f64);
        if let Err(e) = &result {
            // A full or failing disk fails every commit: one line a second says so.
            static LOG: LogLimit = LogLimit::new(1);
            if let Some(held_back) = LOG.check() {
                tracing::error!(error = %e, held_back, "group commit failed");
            }
        }
        for c in group.drain(..) {
            let answer = match &result {
                Err(e) => Err(e.clone()),
                Ok(_) => Ok(Committed {
                    read: c.read_after.as_ref().map(|(name, key)| {
                        let h = super::cf(&db, name)?;
                        db.get_cf(h, key)
                            .map_err(|e| StoreError::Rocks(e.to_string()))
                    }),
                    ..checked.next().unwrap_or_default()
                }),
            };
            let _ = c.done.send(answer);
        }
    }
}

/// Writes `group` in one `WriteBatch`; answers, per commit, whether each of its
/// [`Op::PutIfPresent`] keys existed (so was written) and whether its guard held it back.
fn apply(db: &DB, opts: &WriteOptions, group: &[Commit]) -> Result<Vec<Committed>, StoreError> {
    let (mut ops, present) = checked_ops(db, group)?;
    // In key order per column family: a memtable insert starts its search from where the last
    // one in that memtable ended, so neighbouring keys are cheap and random ones (wamids, the
    // messages of many conversations interleaved) a full search each. The sort is stable, so
    // the operations on one key keep their order; those on different keys commute, since the
    // whole group is one atomic `WriteBatch`.
    ops.sort_by(|a, b| (a.cf(), a.key()).cmp(&(b.cf(), b.key())));
    let mut wb = WriteBatch::default();
    let mut handle: Option<(&'static str, &rocksdb::ColumnFamily)> = None;
    let mut i = 0;
    while i < ops.len() {
        let op = ops[i];
        let name = op.cf();
        let cf = match handle {
            Some((n, h)) if n == name => h,
            _ => {
                let h = super::cf(db, name)?;
                handle = Some((name, h));
                h
            }
        };
        i += 1;
        match op {
            Op::Put { key, value, .. } | Op::PutIfPresent { key, value, .. } => {
                wb.put_cf(cf, key, value)
            }
            Op::Delete { key, .. } => wb.delete_cf(cf, key),
            Op::Merge { key, value, .. } => {
                // The group's operands of one rollup (adjacent once sorted) become one: what a
                // flush would merge anyway, one memtable entry instead of one per event.
                let run = ops[i..]
                    .iter()
                    .take_while(|o| {
                        matches!(o, Op::Merge { .. }) && o.cf() == name && o.key() == key
                    })
                    .count();
                let combined = (run > 0 && name == super::schema::CF_REPORT_ROLLUPS)
                    .then(|| {
                        super::rollups::combine(
                            std::iter::once(value.as_slice())
                                .chain(ops[i..i + run].iter().map(|o| o.value())),
                        )
                    })
                    .flatten();
                match combined {
                    Some(v) => {
                        wb.merge_cf(cf, key, v);
                        i += run;
                    }
                    None => wb.merge_cf(cf, key, value),
                }
            }
        }
    }
    db.write_opt(wb, opts)
        .map_err(|e| StoreError::Rocks(e.to_string()))?;
    Ok(present)
}

/// The group's operations to write, in arrival order, without the conditional puts whose key
/// is absent nor the batches whose guard key is present; and per commit which of its
/// conditional puts were kept and what held it back. A key's presence is what the operations
/// before it in the group left (a put or merge makes it present, a delete absent), else whether
/// it is on disk: this thread writes every key, so nothing can change it between the check and
/// the write.
fn checked_ops<'a>(
    db: &DB,
    group: &'a [Commit],
) -> Result<(Vec<&'a Op>, Vec<Committed>), StoreError> {
    let conditional = |o: &Op| matches!(o, Op::PutIfPresent { .. });
    let mut ops = Vec::with_capacity(group.iter().map(|c| c.batch.ops.len()).sum());
    let checks = |c: &Commit| c.batch.guard.is_some() || c.batch.ops.iter().any(conditional);
    if !group.iter().any(checks) {
        ops.extend(group.iter().flat_map(|c| &c.batch.ops));
        return Ok((ops, group.iter().map(|_| Committed::default()).collect()));
    }
    // Only the column families checked need their keys followed.
    let mut cfs: Vec<&'static str> = group
        .iter()
        .flat_map(|c| &c.batch.ops)
        .filter(|o| conditional(o))
        .map(|o| o.cf())
        .chain(
            group
                .iter()
                .filter_map(|c| c.batch.guard.as_ref().map(|g| g.0)),
        )
        .collect();
    cfs.sort_unstable();
    cfs.dedup();
    // A followed key's value as the group's operations so far leave it (None: absent).
    let mut seen: HashMap<(&'static str, &[u8]), Option<&[u8]>> = HashMap::new();
    let rocks = |e: rocksdb::Error| StoreError::Rocks(e.to_string());
    let mut answers = Vec::with_capacity(group.len());
    for c in group {
        let mut answer = Committed::default();
        if let Some((name, key)) = &c.batch.guard {
            let value = match seen.get(&(*name, key.as_slice())) {
                Some(v) => v.map(<[u8]>::to_vec),
                None => db.get_cf(super::cf(db, name)?, key).map_err(rocks)?,
            };
            if value.is_some() {
                answer.blocked = value;
                answers.push(answer);
                continue;
            }
        }
        for op in &c.batch.ops {
            let (name, key) = (op.cf(), op.key());
            if !cfs.contains(&name) {
                ops.push(op);
                continue;
            }
            let value = match op {
                Op::PutIfPresent { value, .. } => {
                    let exists = match seen.get(&(name, key)) {
                        Some(v) => v.is_some(),
                        None => db
                            .get_pinned_cf(super::cf(db, name)?, key)
                            .map_err(rocks)?
                            .is_some(),
                    };
                    answer.present.push(exists);
                    if !exists {
                        continue;
                    }
                    Some(value.as_slice())
                }
                Op::Delete { .. } => None,
                Op::Put { value, .. } | Op::Merge { value, .. } => Some(value.as_slice()),
            };
            seen.insert((name, key), value);
            ops.push(op);
        }
        answers.push(answer);
    }
    Ok((ops, answers))
}
