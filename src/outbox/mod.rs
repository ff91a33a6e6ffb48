//! Outbound delivery: one outbox per business number.
//!
//! What a job sends is its [`Payload`]: a text (quoting a wamid with Meta's `context`), a
//! reaction, an interactive message, media, or an approved template; each is one Graph API request and everything below holds
//! for all of them alike. Read receipts are not jobs: they wait in memory, at most one per
//! conversation, and share the number's token bucket and in-flight permits (`reads`).
//!
//! A reply is durable (message + outbox entry, one batch) before the API answers 202; the outbox
//! then sends it to the Graph API within the number's `mps` (token bucket), with at most
//! `outbox.max_in_flight` requests in flight per number, and reports the outcome to the
//! conversation actor, which records it and deletes the outbox entry in one batch. Transient
//! failures are retried with exponential back-off (each delay drawn between half and all of its
//! ceiling), at most `outbox.max_attempts` times; entries still on disk at start-up (the broker
//! died before an outcome was recorded) are sent again, so an acknowledged reply is sent even
//! across kill -9.
//!
//! Ports: the outbox sees neither the actors nor a concrete HTTP client. Requests go out through a
//! [`GraphSender`] and attempts and outcomes are reported to an [`OutcomeSink`] (app.rs wires the
//! Graph client and the conversation actors' sink; see `ports.rs` for what both must keep).
//!
//! Order: a conversation has at most one send in flight; its later jobs wait behind it in the
//! order they were queued, so its replies reach the Graph API in the order they were accepted,
//! even when one of them is throttled and retried (concurrent sends of one conversation could
//! overtake each other, and a customer would read "part 2" before "part 1"). Different
//! conversations still share the number's `max_in_flight`.
//!
//! Never waiting on a full queue: [`Outbox::enqueue`] is called by conversation actors, and a send
//! in flight records its outcome through its conversation's actor, so an actor that waited for
//! room could wait on its own send (a burst of after-hours auto-replies on a throttled number
//! did that). Every job is durable before it is queued, so when a number's queue is full the job
//! stays on disk only and the number *spills*: every later job of that number stays on disk too,
//! and the worker, once its queue is empty, reads them back in pages in key order
//! (conversation, seq). It stops spilling after a full pass during which nothing new was
//! spilled. Start-up is a spill too: the first pass resumes what the last run left unsent.
//!
//! A send's outcome is recorded before its conversation's next send starts; recording is
//! retried while it fails, so a reply never overtakes one that is still on disk.
//!
//! At most once per run: a job can reach the worker twice (queued and read back from disk), so
//! the worker remembers the jobs it holds until their outcome is recorded, and a delivery first
//! checks that its job still waits (its message is pending, which lasts exactly as long as its
//! entry on disk: recording the outcome, or an adoption, settles both in one batch).
//!
//! Ambiguous sends: a send whose outcome is unknown (a timeout or broken connection after the
//! request may have been written, a 2xx answer without `messages[0].id`) may have reached Meta,
//! so sending it again at once could deliver it twice. It is *held* instead: for up to
//! `outbox.ambiguous_hold_ms` the worker waits for a status callback naming the message (Meta
//! echoes the message id the broker puts in `biz_opaque_callback_data`); the conversation actor
//! then adopts the callback's wamid and deletes the job ([`Outbox::adopted`] ends the hold), and
//! the send is over. Only when no callback came is it sent again (another attempt). Across
//! kill -9: before a request goes out the job is marked durably as *in doubt* (through its
//! conversation's actor, so the mark never brings back a job an adoption deleted), and a
//! definite refusal clears the mark; a job found in doubt at start-up is held the same way
//! before its first send of the run. A held send keeps its in-flight slot: at most
//! `max_in_flight` sends per number are held at once.
//!
//! Backlog: `switchboard_outbox_pending{number}` counts a number's jobs from the moment they are
//! durable until their outcome is recorded or a callback adopts them (set from disk at start-up,
//! before anything serves).
//!
//! Media: a media job's file is uploaded to Meta (`POST /{phone_number_id}/media`) before its
//! first send, and Meta's id is written on the job (through its conversation's actor, like the
//! in-doubt mark) before the send goes out, so neither a retry nor a restart uploads it twice,
//! and the send itself keeps the in-doubt discipline above. Upload failures are retried like
//! sends (same back-off, same `max_attempts`).
//!
//! Bounds: `outbox.queue_capacity` jobs queued per number, as many again waiting behind a
//! conversation's send in flight (beyond that the worker stops taking jobs until a send ends),
//! pages of `queue_capacity` jobs read back from disk, `max_in_flight` concurrent sends per
//! number, `max_attempts` tries per message (held ambiguous attempts included), one hold entry per
//! send in flight. Nothing else waits in memory: spilled jobs wait on disk.

mod bucket;
mod ports;
mod reads;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

pub use bucket::TokenBucket;
pub use ports::{GraphSender, OutcomeSink, UploadError};
pub use reads::{ReadRefused, MAX_READ_ATTEMPTS};

use crate::config::{NumberConfig, OutboxConfig};
use crate::domain::MessageError;
use crate::log_limit::LogLimit;
use crate::metrics as m;
use crate::store::{OutboxJob, Payload, Store};
use crate::whatsapp::graph::{AmbiguousCause, SendError};
use crate::whatsapp::media::MediaError;

pub struct Outbox {
    /// Set by a graceful shutdown: no send starts a new attempt, so none is left "in doubt"
    /// by the shutdown itself (an attempt cut off mid-request would be held after the restart).
    closing: Arc<std::sync::atomic::AtomicBool>,
    lanes: HashMap<String, Arc<Lane>>,
    /// Each number's read receipts (`reads`: in memory only, bounded).
    reads: HashMap<String, Arc<reads::Reads>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    deliveries: Deliveries,
    holds: Arc<Holds>,
}

/// What ends a held send early: one wake-up per send in flight (so bounded by `max_in_flight`
/// per number), registered for the send's whole life, so an adoption that comes while the
/// request is still out is not missed (a [`Notify`] keeps the wake-up until the hold waits).
#[derive(Default)]
struct Holds(Mutex<HashMap<JobKey, Arc<Notify>>>);

impl Holds {
    fn register(self: &Arc<Self>, key: JobKey) -> HoldGuard {
        let notify = Arc::new(Notify::new());
        self.0.lock().insert(key.clone(), notify.clone());
        HoldGuard {
            holds: self.clone(),
            key,
            notify,
        }
    }
}

/// Unregisters a send's wake-up when its delivery ends, however it ends (also when aborted).
struct HoldGuard {
    holds: Arc<Holds>,
    key: JobKey,
    notify: Arc<Notify>,
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.holds.0.lock().remove(&self.key);
    }
}

/// Every send in flight, so shutdown can wait for them and then cancel the rest.
type Deliveries = Arc<Mutex<JoinSet<()>>>;

/// One number's hand-over from conversation actors to its worker.
struct Lane {
    state: Mutex<LaneState>,
    /// Wakes the worker; a permit is stored when it is not waiting, so no wake-up is lost.
    wake: Notify,
    capacity: usize,
}

struct LaneState {
    queue: VecDeque<OutboxJob>,
    /// Jobs are kept on disk only until the worker has read them all back.
    spilled: bool,
    /// Counts spills, so the worker can tell whether one happened during its pass.
    spills: u64,
}

impl Lane {
    /// Queues `job`, or keeps it on disk only when the queue is full or already spilled.
    /// Never waits; true when queued.
    fn push(&self, job: OutboxJob) -> bool {
        let queued = {
            let mut st = self.state.lock();
            if st.spilled || st.queue.len() >= self.capacity {
                st.spilled = true;
                st.spills += 1;
                false
            } else {
                st.queue.push_back(job);
                true
            }
        };
        self.wake.notify_one();
        queued
    }
}

/// Delay before retry `attempt` (1-based): drawn between half and all of an exponentially
/// growing ceiling (never bunched near zero, never in lock-step).
pub fn backoff(cfg: &OutboxConfig, attempt: u32) -> Duration {
    let exp = cfg
        .retry_base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let ceiling = exp.min(cfg.retry_max_ms).max(1);
    Duration::from_millis(rand::thread_rng().gen_range(ceiling / 2..=ceiling))
}

impl Outbox {
    /// Starts one sender task per number of `numbers`; each first resumes its number's sends
    /// left on disk by the last run, `pending` of them (counted before anything could queue a
    /// new one). Sends go out through `graph`; outcomes are reported to `sink`.
    pub fn start<G: GraphSender, S: OutcomeSink>(
        cfg: &OutboxConfig,
        numbers: &[NumberConfig],
        store: Store,
        graph: G,
        sink: S,
        pending: &HashMap<String, usize>,
    ) -> Self {
        let (graph, sink) = (Arc::new(graph), Arc::new(sink));
        let mut lanes = HashMap::new();
        let mut reads = HashMap::new();
        let mut tasks = Vec::new();
        let deliveries: Deliveries = Arc::new(Mutex::new(JoinSet::new()));
        let holds = Arc::new(Holds::default());
        let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        for n in numbers {
            let left = pending.get(&n.phone_number_id).copied().unwrap_or(0);
            metrics::gauge!(m::OUTBOX_PENDING, "number" => n.phone_number_id.clone())
                .set(left as f64);
            let lane = Arc::new(Lane {
                state: Mutex::new(LaneState {
                    queue: VecDeque::new(),
                    spilled: true,
                    spills: 1,
                }),
                wake: Notify::new(),
                capacity: cfg.queue_capacity,
            });
            lanes.insert(n.phone_number_id.clone(), lane.clone());
            let bucket = Arc::new(TokenBucket::new(n.mps));
            let permits = Arc::new(Semaphore::new(cfg.max_in_flight));
            let worker = NumberWorker {
                store: store.clone(),
                graph: graph.clone(),
                sink: sink.clone(),
                cfg: cfg.clone(),
                number: n.phone_number_id.clone(),
                bucket: bucket.clone(),
                permits: permits.clone(),
                deliveries: deliveries.clone(),
                holds: holds.clone(),
                closing: closing.clone(),
            };
            tasks.push(tokio::spawn(worker.run(lane)));
            // Receipts share the number's bucket and permits with its messages.
            let number_reads = Arc::new(reads::Reads::new(cfg.queue_capacity));
            reads.insert(n.phone_number_id.clone(), number_reads.clone());
            let reader = reads::ReadWorker {
                graph: graph.clone(),
                cfg: cfg.clone(),
                number: n.phone_number_id.clone(),
                bucket,
                permits,
                deliveries: deliveries.clone(),
                closing: closing.clone(),
            };
            tasks.push(tokio::spawn(reader.run(number_reads)));
        }
        Self {
            closing,
            lanes,
            reads,
            tasks: Mutex::new(tasks),
            deliveries,
            holds,
        }
    }

    /// A status callback gave message `seq` of a conversation its wamid and the conversation
    /// actor deleted its job (durably): it is settled, and a send of it that is held (or still
    /// out) is not tried again.
    pub fn adopted(&self, number: &str, conversation_id: &str, seq: u64) {
        if self.lanes.contains_key(number) {
            metrics::gauge!(m::OUTBOX_PENDING, "number" => number.to_string()).decrement(1.0);
        }
        let key = (conversation_id.to_string(), seq);
        if let Some(n) = self.holds.0.lock().get(&key) {
            n.notify_one();
        }
    }

    /// Hands a durable job to its number's worker without waiting: when the number's queue is
    /// full the job stays on disk and the worker reads it back (module docs).
    pub fn enqueue(&self, job: OutboxJob) {
        match self.lanes.get(&job.number) {
            Some(lane) => {
                metrics::gauge!(m::OUTBOX_PENDING, "number" => job.number.clone()).increment(1.0);
                if !lane.push(job) {
                    metrics::counter!(m::OUTBOX_SPILLED).increment(1);
                }
            }
            None => {
                tracing::error!(number = %job.number, "no outbox for number; job stays on disk")
            }
        }
    }

    /// Queues a read receipt with typing indicator for the customer's message `wamid` of
    /// `conversation` on `number`, in place of one still waiting for that conversation (see
    /// `reads`). Never waits.
    pub fn mark_read(
        &self,
        number: &str,
        conversation: &str,
        wamid: &str,
    ) -> Result<(), ReadRefused> {
        self.reads
            .get(number)
            .ok_or(ReadRefused::UnknownNumber)?
            .push(conversation, wamid)
    }

    /// Stops every worker and send at once (abrupt stop); unsent jobs stay on disk.
    pub fn abort(&self) {
        for t in std::mem::take(&mut *self.tasks.lock()) {
            t.abort();
        }
        self.deliveries.lock().abort_all();
    }

    /// Stops taking jobs, lets sends in flight finish for up to `grace`, then stops the workers.
    /// Unsent jobs stay on disk and are sent after the next start.
    pub async fn shutdown(&self, grace: Duration) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        let deadline = Instant::now() + grace;
        let tasks: Vec<_> = std::mem::take(&mut *self.tasks.lock());
        for t in &tasks {
            t.abort();
        }
        loop {
            let busy = {
                let mut set = self.deliveries.lock();
                while set.try_join_next().is_some() {}
                !set.is_empty()
            };
            if !busy || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.deliveries.lock().abort_all();
    }
}

struct NumberWorker<G, S> {
    store: Store,
    graph: Arc<G>,
    sink: Arc<S>,
    cfg: OutboxConfig,
    number: String,
    bucket: Arc<TokenBucket>,
    permits: Arc<Semaphore>,
    deliveries: Deliveries,
    holds: Arc<Holds>,
    closing: Arc<std::sync::atomic::AtomicBool>,
}

/// A job's identity: its conversation and its seq there.
type JobKey = (String, u64);

/// The worker's own bookkeeping; only its task touches it.
#[derive(Default)]
struct Held {
    /// Conversations with a send in flight, each with the jobs waiting behind it.
    busy: HashMap<String, VecDeque<OutboxJob>>,
    /// Jobs waiting in `busy` lines (bounded by `queue_capacity`).
    waiting: usize,
    /// Every job in flight or waiting, until its outcome is recorded.
    known: HashSet<JobKey>,
    /// Jobs read back from disk, not yet taken.
    read_back: VecDeque<OutboxJob>,
    /// Where the current pass over the disk goes on, and the spill count when it began.
    pass: Option<(Option<JobKey>, u64)>,
}

impl<G: GraphSender, S: OutcomeSink> NumberWorker<G, S> {
    async fn run(self, lane: Arc<Lane>) {
        let this = Arc::new(self);
        // A send that ended names its job here; at most `max_in_flight` at a time.
        let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<JobKey>();
        let mut held = Held::default();
        let cap = this.cfg.queue_capacity;
        loop {
            // Ended sends first: they free their conversation's next job.
            while let Ok(key) = ended_rx.try_recv() {
                if !this.ended(&mut held, key, &ended_tx).await {
                    return;
                }
            }
            if held.waiting < cap {
                let next = match held.read_back.pop_front() {
                    Some(job) => Some(job),
                    None => lane.state.lock().queue.pop_front(),
                };
                if let Some(job) = next {
                    if !this.take(&mut held, job, &ended_tx).await {
                        return;
                    }
                    continue;
                }
                if this.read_more(&mut held, &lane).await {
                    continue;
                }
            }
            tokio::select! {
                biased;
                Some(key) = ended_rx.recv() => {
                    if !this.ended(&mut held, key, &ended_tx).await {
                        return;
                    }
                }
                _ = lane.wake.notified() => {}
            }
        }
    }

    /// Accepts one job: starts it, or lines it up behind its conversation's send in flight.
    /// False when the worker is shutting down.
    async fn take(
        self: &Arc<Self>,
        held: &mut Held,
        job: OutboxJob,
        ended: &mpsc::UnboundedSender<JobKey>,
    ) -> bool {
        if !held.known.insert((job.conversation_id.clone(), job.seq)) {
            return true; // already held: queued and read back from disk
        }
        if let Some(line) = held.busy.get_mut(&job.conversation_id) {
            line.push_back(job);
            held.waiting += 1;
            return true;
        }
        held.busy
            .insert(job.conversation_id.clone(), VecDeque::new());
        self.start(job, ended).await
    }

    /// A send's outcome was recorded (or the job was a second copy): its conversation's next
    /// job may go.
    async fn ended(
        self: &Arc<Self>,
        held: &mut Held,
        key: JobKey,
        ended: &mpsc::UnboundedSender<JobKey>,
    ) -> bool {
        held.known.remove(&key);
        match held.busy.get_mut(&key.0).and_then(VecDeque::pop_front) {
            Some(next) => {
                held.waiting -= 1;
                self.start(next, ended).await
            }
            None => {
                held.busy.remove(&key.0);
                true
            }
        }
    }

    /// While the number is spilled, reads the next page of its jobs back from disk. True when
    /// there may be more to take now; false when the worker should wait for a wake-up.
    async fn read_more(&self, held: &mut Held, lane: &Lane) -> bool {
        let (after, spills_at_start) = match held.pass.take() {
            Some(pass) => pass,
            None => {
                let st = lane.state.lock();
                if !st.spilled {
                    return false;
                }
                (None, st.spills)
            }
        };
        let page = self
            .store
            .outbox_page(self.number.clone(), after.clone(), self.cfg.queue_capacity)
            .await;
        let (jobs, reached_end) = match page {
            Ok(page) => page,
            Err(e) => {
                // Keep the place; a later wake-up (a new job or an ended send) tries again.
                tracing::error!(number = %self.number, error = %e, "cannot read the outbox back from disk");
                held.pass = Some((after, spills_at_start));
                return false;
            }
        };
        let last = jobs.last().map(|j| (j.conversation_id.clone(), j.seq));
        let fresh: Vec<_> = jobs
            .into_iter()
            .filter(|j| !held.known.contains(&(j.conversation_id.clone(), j.seq)))
            .collect();
        if !fresh.is_empty() {
            tracing::debug!(number = %self.number, count = fresh.len(), "sends read back from disk");
        }
        let progressed = !fresh.is_empty();
        held.read_back.extend(fresh);
        if !reached_end {
            held.pass = Some((last, spills_at_start));
            return true;
        }
        let mut st = lane.state.lock();
        if st.spills == spills_at_start {
            // Nothing spilled since this pass began, so every spilled job was on disk for it.
            st.spilled = false;
        }
        // Otherwise the next pass starts over for the jobs spilled meanwhile.
        progressed || !st.spilled
    }

    /// Sends `job` on a task of its own once a permit is free, and names it on `ended` when
    /// its outcome is recorded. False when the worker is shutting down.
    async fn start(
        self: &Arc<Self>,
        job: OutboxJob,
        ended: &mpsc::UnboundedSender<JobKey>,
    ) -> bool {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        let worker = self.clone();
        let ended = ended.clone();
        let mut set = self.deliveries.lock();
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            let key = (job.conversation_id.clone(), job.seq);
            worker.deliver(job).await;
            drop(permit);
            let _ = ended.send(key);
        });
        true
    }

    async fn deliver(&self, job: OutboxJob) {
        let conv = job.conversation_id.clone();
        let seq = job.seq;
        let hold = self.holds.register((conv.clone(), seq));
        // Until this send's outcome is recorded, its conversation's next send waits: letting it
        // go would put it ahead of this one, which stays on disk and is sent again after a
        // restart. So storage steps here are retried (with back-off) for as long as they fail;
        // storage that keeps failing gets the broker restarted (`crate::supervisor`).
        let outcome = match self.upload_media(job).await {
            Ok(Some(job)) => self.send_with_retries(&job, &hold.notify).await,
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        };
        let Some(outcome) = outcome else {
            // Settled already: a second copy, or a status callback adopted it (which counted it);
            // or shutting down (it stays on disk).
            return;
        };
        let outcome = outcome.map(Some);
        // Recording is idempotent: a repeat finds the message settled and drops the job.
        let settled = self
            .until_ok(&conv, seq, "recording a send's outcome", || {
                self.sink.outcome(&conv, seq, outcome.clone())
            })
            .await;
        if settled {
            // Recording deleted the job from disk (an adoption that came first counted it).
            metrics::gauge!(m::OUTBOX_PENDING, "number" => self.number.clone()).decrement(1.0);
        }
    }

    /// Records on the job's entry whether an attempt may be at Meta (see the module docs);
    /// false when the message no longer waits for a send (its outcome is recorded, or a status
    /// callback adopted it).
    async fn mark(&self, job: &OutboxJob, in_doubt: bool) -> bool {
        let (conv, seq) = (&job.conversation_id, job.seq);
        let marked = OutboxJob {
            in_doubt,
            ..job.clone()
        };
        self.until_ok(conv, seq, "recording a send attempt", || {
            self.sink.attempt(&marked)
        })
        .await
    }

    /// Holds a send that may have reached Meta: waits up to `ambiguous_hold_ms` for a status
    /// callback to adopt it (`adopted` also keeps a wake-up that came before the hold began).
    /// True when it is still pending, so it must be sent again.
    async fn hold(&self, job: &OutboxJob, adopted: &Notify) -> bool {
        let wait = Duration::from_millis(self.cfg.ambiguous_hold_ms);
        let _ = tokio::time::timeout(wait, adopted.notified()).await;
        let (conv, seq) = (&job.conversation_id, job.seq);
        self.until_ok(
            conv,
            seq,
            "checking that a held send is still pending",
            || self.store.outbox_contains(conv, seq),
        )
        .await
    }

    /// Runs `step` until it succeeds, backing off between attempts and logging failures (at
    /// most a line a second).
    async fn until_ok<T, E, F, Fut>(&self, conv: &str, seq: u64, what: &str, step: F) -> T
    where
        E: std::fmt::Display,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            match step().await {
                Ok(v) => return v,
                Err(e) => {
                    attempt += 1;
                    static LOG: LogLimit = LogLimit::new(1);
                    if let Some(held_back) = LOG.check() {
                        tracing::error!(conversation = %conv, seq, attempt, error = %e, held_back, "{what} failed; retrying");
                    }
                    tokio::time::sleep(backoff(&self.cfg, attempt)).await;
                }
            }
        }
    }

    /// Sends `job` until it is accepted, fails for good, or runs out of attempts; None when it
    /// turned out to be settled already (a second copy, or adopted from a status callback).
    async fn send_with_retries(
        &self,
        job: &OutboxJob,
        adopted: &Notify,
    ) -> Option<Result<String, MessageError>> {
        let message_id = job.message_id();
        // Whether the entry on disk says an attempt may be at Meta.
        let mut in_doubt = job.in_doubt;
        if in_doubt {
            // The last run may have delivered it: its callbacks get their time first.
            metrics::counter!(m::OUTBOX_AMBIGUOUS, "number" => self.number.clone(), "cause" => AmbiguousCause::Restart.as_str())
                .increment(1);
            tracing::debug!(%message_id, "send in doubt since the last run; holding it");
            if !self.hold(job, adopted).await {
                return None;
            }
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.bucket.take().await;
            if self.closing.load(std::sync::atomic::Ordering::Acquire) {
                // Shutting down: it stays on disk, not in doubt, and is sent after the restart.
                return None;
            }
            // Durable before the request leaves, so a kill -9 during it is known at start-up;
            // this also finds a job whose outcome is recorded already (a second copy).
            if !in_doubt {
                if !self.mark(job, true).await {
                    return None;
                }
                in_doubt = true;
            }
            let started = Instant::now();
            let res = self.graph.send(job, &message_id).await;
            metrics::histogram!(m::GRAPH_DURATION).record(started.elapsed().as_secs_f64());
            match res {
                Ok(wamid) => return Some(Ok(wamid)),
                Err(SendError::Ambiguous { cause, reason }) => {
                    metrics::counter!(m::OUTBOX_AMBIGUOUS, "number" => self.number.clone(), "cause" => cause.as_str())
                        .increment(1);
                    tracing::debug!(%message_id, attempt, %reason, "send outcome unknown; holding it");
                    if !self.hold(job, adopted).await {
                        return None;
                    }
                    if attempt >= self.cfg.max_attempts {
                        return Some(Err(MessageError {
                            code: 0,
                            title: format!("gave up after {attempt} attempts: {reason}"),
                        }));
                    }
                    // No callback named it: sent again (the hold was the back-off).
                    metrics::counter!(m::OUTBOUND_RETRIES).increment(1);
                }
                Err(SendError::Transient(reason)) => {
                    if attempt >= self.cfg.max_attempts {
                        return Some(Err(MessageError {
                            code: leading_code(&reason).unwrap_or(0),
                            title: format!("gave up after {attempt} attempts: {reason}"),
                        }));
                    }
                    // A definite refusal: nothing of this attempt is at Meta, and a restart
                    // during the back-off need not hold it.
                    if !self.mark(job, false).await {
                        return None;
                    }
                    in_doubt = false;
                    metrics::counter!(m::OUTBOUND_RETRIES).increment(1);
                    tracing::debug!(%message_id, attempt, %reason, "transient send failure; retrying");
                    tokio::time::sleep(backoff(&self.cfg, attempt)).await;
                }
                // Meta's code and title as given; the API adds `reason: "window_closed"`.
                Err(SendError::WindowClosed { code, title }) => {
                    return Some(Err(MessageError { code, title }))
                }
                Err(SendError::Permanent { code, title }) => {
                    return Some(Err(MessageError { code, title }))
                }
            }
        }
    }
}

impl<G: GraphSender, S: OutcomeSink> NumberWorker<G, S> {
    /// Uploads a media job's file to Meta unless it has Meta's id already, and records the id
    /// on the job durably before anything is sent: a retry or a restart then sends by that id
    /// and never uploads again (a crash during the upload itself only repeats the upload, which
    /// sends nothing). Answers the job to send, None when it needs no send (settled meanwhile,
    /// or shutting down: it stays on disk), or why the message fails.
    async fn upload_media(&self, job: OutboxJob) -> Result<Option<OutboxJob>, MessageError> {
        let Payload::Media {
            media_id,
            mime_type,
            filename,
            meta_id: None,
            ..
        } = &job.payload
        else {
            return Ok(Some(job));
        };
        let fail = |title: String| MessageError { code: 0, title };
        let mut attempt = 0;
        loop {
            attempt += 1;
            if self.closing.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(None);
            }
            let started = Instant::now();
            let res = self
                .graph
                .upload_media(&job.number, media_id, mime_type, filename.as_deref())
                .await;
            metrics::histogram!(m::GRAPH_DURATION).record(started.elapsed().as_secs_f64());
            let reason = match res {
                Ok(meta_id) => {
                    let mut uploaded = job.clone();
                    if let Payload::Media { meta_id: m, .. } = &mut uploaded.payload {
                        *m = Some(meta_id);
                    }
                    if !self.mark(&uploaded, uploaded.in_doubt).await {
                        return Ok(None);
                    }
                    return Ok(Some(uploaded));
                }
                Err(UploadError::Gone(reason)) => return Err(fail(reason)),
                Err(UploadError::Meta(MediaError::Permanent { code, title })) => {
                    return Err(MessageError { code, title })
                }
                Err(UploadError::Meta(e)) => e.to_string(),
            };
            if attempt >= self.cfg.max_attempts {
                return Err(fail(format!(
                    "gave up uploading after {attempt} attempts: {reason}"
                )));
            }
            metrics::counter!(m::OUTBOUND_RETRIES).increment(1);
            tracing::debug!(%media_id, attempt, %reason, "media upload failed; retrying");
            tokio::time::sleep(backoff(&self.cfg, attempt)).await;
        }
    }
}

/// Extracts `130429` from a transient reason like `(130429) Rate limit hit`.
fn leading_code(reason: &str) -> Option<i64> {
    reason.strip_prefix('(')?.split(')').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Payload;

    #[test]
    fn backoff_grows_and_is_capped() {
        let cfg = OutboxConfig {
            retry_base_ms: 100,
            retry_max_ms: 1000,
            ..OutboxConfig::default()
        };
        assert!(backoff(&cfg, 1) <= Duration::from_millis(100));
        assert!(backoff(&cfg, 4) >= Duration::from_millis(400));
        assert!(backoff(&cfg, 30) <= Duration::from_millis(1000));
    }

    #[test]
    fn default_retries_outlast_a_long_outage() {
        let cfg = OutboxConfig::default();
        // The shortest the default retries can take: every delay at half its ceiling.
        let least: u64 = (1..cfg.max_attempts)
            .map(|a| (cfg.retry_base_ms << (a - 1).min(20)).min(cfg.retry_max_ms) / 2)
            .sum();
        assert!(least >= 45 * 60 * 1000, "{least} ms");
    }

    #[test]
    fn leading_code_parses() {
        assert_eq!(leading_code("(130429) Rate limit hit"), Some(130429));
        assert_eq!(leading_code("HTTP 500"), None);
    }

    /// What the fakes saw, in the order they saw it.
    #[derive(Debug, PartialEq)]
    enum Seen {
        /// The job's entry was marked: whether an attempt may be at Meta.
        Attempt(bool),
        /// A request went out with this callback data.
        Sent(String),
        Outcome(Result<Option<String>, MessageError>),
    }

    /// A Graph API that answers from a script.
    struct ScriptedGraph {
        answers: Mutex<VecDeque<Result<String, SendError>>>,
        seen: mpsc::UnboundedSender<Seen>,
    }

    impl GraphSender for ScriptedGraph {
        async fn send(&self, _job: &OutboxJob, callback_data: &str) -> Result<String, SendError> {
            let _ = self.seen.send(Seen::Sent(callback_data.to_string()));
            let next = self.answers.lock().pop_front();
            next.unwrap_or_else(|| Err(SendError::Transient("script ran out".into())))
        }

        async fn mark_read(&self, _number: &str, _wamid: &str) -> Result<(), SendError> {
            Ok(())
        }

        async fn upload_media(
            &self,
            _number: &str,
            media_id: &str,
            _mime_type: &str,
            _filename: Option<&str>,
        ) -> Result<String, UploadError> {
            Err(UploadError::Gone(media_id.to_string()))
        }
    }

    /// A conversation side that records every report and settles the job on disk as the
    /// conversation actor does.
    struct RecordingSink {
        store: Store,
        seen: mpsc::UnboundedSender<Seen>,
    }

    impl OutcomeSink for RecordingSink {
        type Error = crate::store::StoreError;

        async fn attempt(&self, job: &OutboxJob) -> Result<bool, Self::Error> {
            let _ = self.seen.send(Seen::Attempt(job.in_doubt));
            Ok(true)
        }

        async fn outcome(
            &self,
            conversation: &str,
            seq: u64,
            outcome: Result<Option<String>, MessageError>,
        ) -> Result<bool, Self::Error> {
            let mut batch = crate::store::Batch::new();
            batch.delete_outbox(conversation, seq);
            self.store.commit(batch).await?;
            let _ = self.seen.send(Seen::Outcome(outcome));
            Ok(true)
        }
    }

    /// Through its ports alone: a job left on disk is resumed, marked in doubt before each
    /// request, unmarked after a definite refusal, retried, and its outcome reported once.
    #[tokio::test]
    async fn a_resumed_send_is_marked_retried_and_reported_through_its_ports() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), false, 64).expect("open store");
        let job = OutboxJob {
            conversation_id: "c1".into(),
            seq: 3,
            number: "n1".into(),
            to: "15550001".into(),
            payload: Payload::Text {
                body: "hello".into(),
                reply_to: None,
            },
            in_doubt: false,
        };
        let mut batch = crate::store::Batch::new();
        batch.put_outbox(&job).expect("encode");
        store.commit(batch).await.expect("commit");

        let (tx, mut rx) = mpsc::unbounded_channel();
        let graph = ScriptedGraph {
            answers: Mutex::new(VecDeque::from([
                Err(SendError::Transient("(130429) Rate limit hit".into())),
                Ok("wamid.A".into()),
            ])),
            seen: tx.clone(),
        };
        let sink = RecordingSink {
            store: store.clone(),
            seen: tx,
        };
        let cfg = OutboxConfig {
            retry_base_ms: 1,
            retry_max_ms: 1,
            ..OutboxConfig::default()
        };
        let numbers = [NumberConfig {
            phone_number_id: "n1".into(),
            display_phone_number: String::new(),
            default_team: "support".into(),
            mps_setting: Some(1000),
            mps: 1000,
            coexistence: false,
            country: None,
            time_zone: None,
            languages: Vec::new(),
        }];
        let pending = HashMap::from([("n1".to_string(), 1)]);
        let outbox = Outbox::start(&cfg, &numbers, store.clone(), graph, sink, &pending);

        let mut seen = Vec::new();
        while !matches!(seen.last(), Some(Seen::Outcome(_))) {
            let next = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the outbox reports within 10 s")
                .expect("fakes alive");
            seen.push(next);
        }
        let id = job.message_id();
        assert_eq!(
            seen,
            [
                Seen::Attempt(true),
                Seen::Sent(id.clone()),
                Seen::Attempt(false),
                Seen::Attempt(true),
                Seen::Sent(id),
                Seen::Outcome(Ok(Some("wamid.A".into()))),
            ]
        );
        outbox.shutdown(Duration::from_secs(1)).await;
        assert!(
            rx.try_recv().is_err(),
            "nothing is sent or reported after the outcome"
        );
        store.close().await;
    }
}
