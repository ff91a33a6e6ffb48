//! The inbound fetcher: drains the durable fetch queue (`store::schema::FetchJob`, ordered by
//! when each is next tried), at most `media.max_concurrent_fetches` at once.
//!
//! One task owns the loop; it reads the head of the queue (at most twice the concurrency: the
//! fetches in progress stay queued until they end, so that many entries always show every free
//! slot something due), starts what is due (keeping the rest of what is due for the next free
//! slots, so a queue that keeps up is read about once per `max_concurrent_fetches` fetches, not
//! after each), and sleeps until the next entry falls due, a fetch
//! is queued ([`super::Media::fetch_queued`]) or a fetch ends. Each fetch ends in exactly one
//! durable step: stored (the conversation actor marks the message's media downloaded, writes
//! the record and deletes the entry in one batch), retried (the entry moves to its next time,
//! `attempts` or `mismatches` one higher) or failed (the record says why; the entry goes).
//! A crash in between leaves the entry due, and it is fetched again after the restart.
//!
//! **Downloads yield to ingest.** The download itself (Meta's lookup, the transfer, hashing,
//! writing the object) runs on a runtime of its own ([`Lane`]): [`LANE_WORKERS`] worker
//! thread(s) and at most `max_concurrent_fetches` blocking threads, all at nice
//! `media.fetch_nice`, with a Graph connection pool of its own (a pooled connection's work runs
//! where it was opened). The kernel then gives the cores to webhooks and the API first and to
//! downloads what is left: under a saturating load the queue grows (it is durable, counted in
//! `switchboard_media_fetch_pending`, and a media id lives 7 days) and drains once the load
//! eases, while a nice thread still gets a share of a busy core, so it never stops. The queue
//! and the durable step stay on the broker's runtime: a conversation actor is never started
//! from the lane's threads, so nothing of ingest ever runs at the lane's priority.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinSet;

use object_store::ObjectStore;

use super::{hash, object_path, store_stream, Media, StreamError, MAX_MEDIA_BYTES, MAX_MISMATCHES};
use crate::actors::{ConversationMsg, Ctx};
use crate::config::MediaConfig;
use crate::domain::Millis;
use crate::log_limit::LogLimit;
use crate::metrics as m;
use crate::store::{Batch, FetchJob, MediaOrigin, MediaRecord, MediaState};
use crate::whatsapp::media::{MediaError as GraphError, MediaGraph};

/// Starts the fetcher; [`Media::abort`] stops it (fetches in progress stay queued on disk).
/// `pending` is the queue's length on disk, counted before anything could queue a fetch.
pub fn start(ctx: &Arc<Ctx>, media: &Arc<Media>, pending: u64) {
    metrics::gauge!(m::MEDIA_FETCH_PENDING).set(pending as f64);
    let cfg = ctx.config.media.clone();
    let lane = Lane::start(&cfg).and_then(|lane| {
        let graph = media.graph.with_own_pool().map_err(|e| e.to_string())?;
        Ok((lane, graph))
    });
    let (lane, downloads, graph) = match lane {
        Ok((lane, graph)) => {
            let handle = lane.handle();
            (Some(lane), handle, graph)
        }
        Err(e) => {
            // Still correct, only not yielding: downloads share the broker's threads.
            tracing::error!(error = %e, "media downloads run at the broker's priority");
            (None, tokio::runtime::Handle::current(), media.graph.clone())
        }
    };
    let f = Arc::new(Fetcher {
        ctx: ctx.clone(),
        media: media.clone(),
        graph,
        cfg,
        downloads,
    });
    let task = tokio::spawn(f.run());
    *media.fetcher.lock() = Some(task);
    *media.lane.lock() = lane;
}

/// Worker threads of the download runtime: a download's CPU is hashing and copying (one core
/// does well over a GB/s), the rest of its time it waits on the network.
pub const LANE_WORKERS: usize = 1;

/// The download runtime (see the module docs). Dropping it cuts the downloads in progress
/// without waiting (they stay queued on disk), from any context.
pub struct Lane {
    runtime: Option<tokio::runtime::Runtime>,
}

impl Lane {
    fn start(cfg: &MediaConfig) -> Result<Lane, String> {
        let nice = cfg.fetch_nice;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(LANE_WORKERS)
            // The object store's file operations: at most two parts and a completion per
            // transfer are in flight, and transfers are bounded by the concurrency.
            .max_blocking_threads(cfg.max_concurrent_fetches.max(1))
            .thread_name("media-fetch")
            .on_thread_start(move || lower_priority(nice))
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the download threads: {e}"))?;
        Ok(Lane {
            runtime: Some(runtime),
        })
    }

    fn handle(&self) -> tokio::runtime::Handle {
        match &self.runtime {
            Some(r) => r.handle().clone(),
            None => tokio::runtime::Handle::current(),
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
    }
}

/// Gives the calling thread nice value `nice` (Linux keeps one per thread; elsewhere the
/// downloads keep the broker's priority).
fn lower_priority(nice: u8) {
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: gettid and setpriority take and return plain integers.
        let failed = unsafe {
            let tid = libc::gettid();
            libc::setpriority(
                libc::PRIO_PROCESS,
                tid as libc::id_t,
                libc::c_int::from(nice),
            ) != 0
        };
        if failed {
            tracing::warn!(error = %std::io::Error::last_os_error(), nice, "cannot lower a media download thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

struct Fetcher {
    ctx: Arc<Ctx>,
    media: Arc<Media>,
    /// Meta's media endpoints through the lane's own connection pool.
    graph: MediaGraph,
    cfg: MediaConfig,
    /// Where downloads run: the lane, or the broker's runtime when it could not start.
    downloads: tokio::runtime::Handle,
}

/// A download on the lane, cut when the fetch that awaits it is (the fetcher stopped).
struct Cut(tokio::task::JoinHandle<Fetched>);

impl Drop for Cut {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How one download went.
enum Fetched {
    Stored {
        size: u64,
        sha256: String,
    },
    /// Worth another try later.
    Transient(String),
    /// The bytes did not match Meta's hash.
    Mismatch,
    /// Nothing will ever fetch it.
    Gone(String),
}

/// How often the fetcher reads its queue from the start regardless of its floor.
const FULL_READ: Duration = Duration::from_secs(60);

/// Delay before retry `attempt` (1-based): between half and all of a doubling ceiling.
fn backoff(cfg: &MediaConfig, attempt: u32) -> Millis {
    let exp = cfg
        .retry_base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(30));
    let ceiling = exp.min(cfg.retry_max_ms).max(1);
    rand::thread_rng().gen_range(ceiling / 2..=ceiling) as Millis
}

impl Fetcher {
    async fn run(self: Arc<Self>) {
        let limit = self.cfg.max_concurrent_fetches;
        let store = self.ctx.store.clone();
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, String> = HashMap::new();
        // Where the queue is read from (see `FetchSignal`): at most the first job's due time and
        // the time of the read, lowered by what conversations queued meanwhile. The queue's
        // start holds the deletions of every fetch done, so reading from it each time costs
        // more the longer the broker runs; from `floor`, only what is queued. A full read every
        // `FULL_READ` anyway, so a due time below the floor (a clock set back) waits at most that.
        let mut floor: Option<Millis> = None;
        let mut full_read_at = std::time::Instant::now();
        // Due jobs of the last read not started yet (at most twice the concurrency). A queue
        // entry is moved or deleted only by the end of a fetch this task started, so each stays
        // queued on disk until it is started from here; a free slot takes the next of them instead of reading the queue
        // again, which it did after every fetch (a blocking-pool hop and an iterator each). The
        // queue is read again once these cannot fill the free slots, from the floor, which a
        // fetch queued meanwhile lowered: nothing is missed, it waits at most for these.
        let mut ready: VecDeque<FetchJob> = VecDeque::new();
        loop {
            let now = self.ctx.now();
            let mut next: Option<Millis> = None;
            if let Some(t) = self.media.wake.take_earliest() {
                floor = floor.map(|f| f.min(t));
            }
            if full_read_at.elapsed() >= FULL_READ {
                floor = None;
                full_read_at = std::time::Instant::now();
            }
            let free = limit.saturating_sub(running.len());
            if free > 0 && ready.len() < free {
                match store.fetch_queue_head(floor, limit * 2).await {
                    Ok(head) => {
                        floor = Some(head.first().map_or(now, |j| j.next_at.min(now)));
                        let busy: HashSet<&String> = running.values().collect();
                        ready.clear();
                        for job in head {
                            if busy.contains(&job.media_id) {
                                continue;
                            }
                            if job.next_at > now {
                                next = Some(job.next_at);
                                break;
                            }
                            ready.push_back(job);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot read the media fetch queue");
                        next = Some(now + 1_000);
                    }
                }
            }
            while running.len() < limit {
                let Some(job) = ready.pop_front() else {
                    break;
                };
                // The same media queued twice (two messages): one fetch at a time.
                if running.values().any(|id| *id == job.media_id) {
                    continue;
                }
                let id = job.media_id.clone();
                let h = tasks.spawn(self.clone().fetch_one(job));
                running.insert(h.id(), id);
            }
            let sleep = next.map_or(Duration::from_secs(3600), |t| {
                Duration::from_millis(t.saturating_sub(now).max(0) as u64)
            });
            tokio::select! {
                _ = self.media.wake.notified() => {}
                Some(ended) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                    let id = match ended {
                        Ok((id, ())) => id,
                        Err(e) => e.id(),
                    };
                    running.remove(&id);
                }
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    async fn fetch_one(self: Arc<Self>, job: FetchJob) {
        let mut cut = Cut(self.downloads.spawn(download(
            self.graph.clone(),
            self.media.objects().clone(),
            job.media_id.clone(),
            job.sha256.clone(),
        )));
        let outcome = match (&mut cut.0).await {
            Ok(f) => f,
            Err(e) => Fetched::Transient(format!("download task: {e}")),
        };
        match outcome {
            Fetched::Stored { size, sha256 } => {
                let recorded = self
                    .ctx
                    .ask(&job.conversation_id, None, |reply| {
                        ConversationMsg::MediaFetched {
                            job: job.clone(),
                            size,
                            sha256: sha256.clone(),
                            reply,
                        }
                    })
                    .await;
                match recorded {
                    Ok(()) => {
                        metrics::counter!(m::MEDIA_FETCHES, "outcome" => "stored").increment(1);
                        metrics::gauge!(m::MEDIA_FETCH_PENDING).decrement(1.0);
                    }
                    Err(e) => self.retry(job, format!("recording it: {e}"), false).await,
                }
            }
            Fetched::Transient(reason) => self.retry(job, reason, false).await,
            Fetched::Mismatch => {
                if job.mismatches + 1 >= MAX_MISMATCHES {
                    let reason =
                        format!("the bytes did not match their sha256 {MAX_MISMATCHES} times");
                    self.fail(job, reason).await;
                } else {
                    self.retry(job, "the bytes did not match their sha256".into(), true)
                        .await;
                }
            }
            Fetched::Gone(reason) => self.fail(job, reason).await,
        }
    }

    /// Moves the entry to its next try, or fails it when that would be after the id expired.
    async fn retry(&self, job: FetchJob, reason: String, mismatch: bool) {
        let now = self.ctx.now();
        let attempts = job.attempts + 1;
        let next_at = now + backoff(&self.cfg, attempts);
        if next_at > job.expires_at {
            self.fail(job, format!("media id expired; last failure: {reason}"))
                .await;
            return;
        }
        static LOG: LogLimit = LogLimit::new(1);
        if let Some(held_back) = LOG.check() {
            tracing::warn!(media = %job.media_id, attempts, %reason, held_back, "media fetch failed; retrying");
        }
        let moved = FetchJob {
            attempts,
            mismatches: job.mismatches + u32::from(mismatch),
            next_at,
            ..job.clone()
        };
        let mut batch = Batch::new();
        batch.delete_fetch(&job);
        if let Err(e) = batch.put_fetch(&moved) {
            tracing::error!(error = %e, "cannot encode a media fetch");
            return;
        }
        metrics::counter!(m::MEDIA_FETCHES, "outcome" => "retried").increment(1);
        if let Err(e) = self.ctx.store.commit(batch).await {
            tracing::error!(media = %job.media_id, error = %e, "cannot reschedule a media fetch");
            // Still due on disk: give storage a moment before the loop takes it again.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Gives up on a fetch: the record says why, the entry goes.
    async fn fail(&self, job: FetchJob, reason: String) {
        tracing::warn!(media = %job.media_id, %reason, "media fetch failed for good");
        let record = match self.ctx.store.get_media(&job.media_id).await {
            Ok(Some(r)) => r,
            _ => MediaRecord {
                id: job.media_id.clone(),
                mime_type: "application/octet-stream".into(),
                filename: None,
                origin: MediaOrigin::Inbound {
                    conversation_id: job.conversation_id.clone(),
                    seq: job.seq,
                },
                state: MediaState::Pending,
            },
        };
        let record = MediaRecord {
            state: MediaState::Failed { reason },
            ..record
        };
        let mut batch = Batch::new();
        batch.delete_fetch(&job);
        if let Err(e) = batch.put_media(&record) {
            tracing::error!(error = %e, "cannot encode a media record");
            return;
        }
        match self.ctx.store.commit(batch).await {
            Ok(()) => {
                metrics::counter!(m::MEDIA_FETCHES, "outcome" => "failed").increment(1);
                metrics::gauge!(m::MEDIA_FETCH_PENDING).decrement(1.0);
            }
            Err(e) => {
                tracing::error!(media = %job.media_id, error = %e, "cannot record a failed media fetch");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Locates, streams, hashes and checks one media (on the lane); the object is stored only when it
/// matches (a mismatch or a failure leaves nothing behind).
async fn download(
    graph: MediaGraph,
    objects: Arc<dyn ObjectStore>,
    media_id: String,
    given_sha256: Option<String>,
) -> Fetched {
    let loc = match graph.locate(&media_id).await {
        Ok(l) => l,
        Err(GraphError::NotFound) => return Fetched::Gone("Meta answered 404".into()),
        Err(GraphError::Transient(r)) => return Fetched::Transient(r),
        Err(GraphError::Permanent { code, title }) => {
            return Fetched::Gone(format!("Meta refused it: ({code}) {title}"))
        }
    };
    if loc.file_size.is_some_and(|s| s > MAX_MEDIA_BYTES) {
        return Fetched::Gone(format!("larger than {MAX_MEDIA_BYTES} bytes"));
    }
    let resp = match graph.download(&loc.url).await {
        Ok(r) => r,
        // The URL lives 5 minutes: a 404 there means ask Meta again, not that it is gone.
        Err(GraphError::NotFound) => return Fetched::Transient("download URL gone".into()),
        Err(GraphError::Transient(r)) => return Fetched::Transient(r),
        Err(GraphError::Permanent { code, title }) => {
            return Fetched::Transient(format!("download refused: ({code}) {title}"))
        }
    };
    let path = object_path(&media_id);
    let written = match store_stream(&*objects, &path, resp.bytes_stream(), MAX_MEDIA_BYTES).await {
        Ok(w) => w,
        Err(StreamError::TooLarge) => {
            return Fetched::Gone(format!("larger than {MAX_MEDIA_BYTES} bytes"))
        }
        Err(StreamError::Source(e)) => return Fetched::Transient(format!("download: {e}")),
        Err(StreamError::Objects(e)) => return Fetched::Transient(format!("object store: {e}")),
    };
    let given = given_sha256
        .iter()
        .chain(loc.sha256.iter())
        .map(String::as_str);
    if hash::matches(&written.sha256, given) == Some(false) {
        let _ = objects.delete(&path).await;
        return Fetched::Mismatch;
    }
    Fetched::Stored {
        size: written.size,
        sha256: hex::encode(written.sha256),
    }
}
