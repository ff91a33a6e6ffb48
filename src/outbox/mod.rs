//! Outbound delivery: one outbox per business number.
//!
//! What a job sends is its [`Payload`]: a text (quoting a wamid with Meta's `context`), a
//! reaction, an interactive message, media, or an approved template; each is one Graph API request and everything below holds
//! for all of them alike. Read receipts are not jobs: they wait in memory, at most one per
//! conversation, and share the number's token bucket and in-flight permits (`reads`).
//!
//! A reply is durable (message + outbox entry, one batch) before the API answers 202; the outbox
//! then sends it to the Graph API within the number's `mps` (token bucket, 20 ms burst), with at most
//! `outbox.max_in_flight` requests in flight per number, and reports the outcome to the
//! conversation actor, which records it and deletes the outbox entry in one batch. Transient
//! failures are retried with exponential back-off (each delay drawn between half and all of its
//! ceiling; the retry keeps its in-flight slot meanwhile), at most `outbox.max_attempts` times;
//! entries still on disk at start-up (the broker died before an outcome was recorded) are sent
//! again, so an acknowledged reply is sent even across kill -9.
//!
//! Lanes: each number has two, sharing its `mps` and in-flight slots. The *reply* lane carries
//! agents' and the bot's messages (everything but templates); the *campaign* lane carries
//! template sends (business-initiated: `POST /api/v1/conversations`, and the templates an agent
//! sends to reopen a closed window, which no waiting customer is owed). Each lane has its own
//! queue and spill, and the worker starts reply sends first: the campaign lane gets at least one
//! send in [`REPLY_STREAK`]` + 1` while both have work (replies never wait behind a campaign; a
//! flood of replies slows a campaign to a tenth of the number's rate, never to nothing). The
//! campaign lane may hold at most [`campaign_slots`] of the number's in-flight slots: the rest
//! (a quarter, at least one) stay free for replies, so an agent's reply never waits for a
//! campaign's request to come back from Meta before its own can leave. A
//! conversation whose line holds a reply is served as a reply, template ahead of it included, so
//! the lanes never reorder a conversation's sends (below).
//!
//! Pair rate: Meta allows about one message per 6 s to one user, in bursts of up to 45
//! (`pairs`). A send whose user had their share is parked until the pair has a token again,
//! without an in-flight slot, and other users' sends go meanwhile; a 131056 answer ("pair rate
//! limit hit") backs that pair off 4^n seconds (n: its consecutive 131056 answers), other pairs
//! unaffected (`switchboard_outbox_pair_paced_total{number}`,
//! `switchboard_outbox_pair_limited_total{number}`, `switchboard_outbox_sends_total{number,lane}`).
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
//! did that). Every job is durable before it is queued, so when a lane's queue is full the job
//! stays on disk only and the lane *spills*: every later job of that lane stays on disk too,
//! and the worker, once the lane's queue is empty, reads the number's jobs back in pages in key
//! order (conversation, seq), keeping that lane's. It stops spilling after a full pass during
//! which nothing new was spilled. Start-up is a spill too: the first pass resumes what the last
//! run left unsent.
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
//! kill -9: before a request goes out the job is marked durably as *in doubt*, never bringing
//! back a job an adoption or outcome deleted, and a definite refusal clears the mark; a job found
//! in doubt at start-up is held the same way before its first send of the run. A held send keeps
//! its in-flight slot: at most `max_in_flight` sends per number are held at once.
//!
//! Marks per round: the sends a number's worker starts together (one dispatch round: as many as
//! its tokens and slots allow at that moment) are marked in one commit before any of their
//! requests leaves ([`OutcomeSink::attempts`]); each mark is written only if its job is still on
//! disk when the store's single writer applies it, so a job settled meanwhile is dropped, not
//! brought back. A crash after that commit leaves every send of the round in doubt, each held at
//! start-up on its own. The rarer marks (a retry's, a refusal's clearing, a media id) go one by
//! one through the job's conversation actor.
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
//! Bounds: per number and lane, `outbox.queue_capacity` jobs queued, as many again held by the
//! worker and not started (waiting for their turn, their pair, a back-off, or behind their
//! conversation's send in flight; beyond that the worker stops taking the lane's jobs until some
//! start), a page of `queue_capacity` jobs read back from disk; `max_in_flight` concurrent sends
//! (and retries keeping their slot) per number, `max_attempts` tries per message (held ambiguous
//! attempts included), one hold entry per send in flight, the pair table of `pairs`. Nothing
//! else waits in memory: spilled jobs wait on disk.

mod bucket;
mod pairs;
mod ports;
mod reads;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};
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
    /// Each number's hand-over to its worker.
    lanes: HashMap<String, Arc<Intake>>,
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

/// Which of its number's two lanes a job waits in (module docs, "Lanes").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LaneKind {
    /// Agents' and the bot's messages: whatever answers a customer who is waiting.
    Reply = 0,
    /// Template sends: business-initiated, a campaign's bulk.
    Campaign = 1,
}

impl LaneKind {
    const ALL: [LaneKind; 2] = [LaneKind::Reply, LaneKind::Campaign];

    pub fn of(job: &OutboxJob) -> Self {
        match job.payload {
            Payload::Template { .. } => LaneKind::Campaign,
            _ => LaneKind::Reply,
        }
    }

    pub fn as_str(self) -> &'static str {
        m::OUTBOX_LANES[self as usize]
    }
}

/// The campaign lane's turn comes at least once per this many sends while both lanes have
/// work: replies go first, and a stream of them slows a campaign to a tenth, never stops it.
const REPLY_STREAK: u32 = 9;

/// In-flight slots the campaign lane may hold: all but a quarter of `max_in_flight` (at least
/// one kept for replies), and all of a single slot (a number with one slot cannot keep one aside
/// without stopping its campaign).
fn campaign_slots(max_in_flight: usize) -> usize {
    if max_in_flight <= 1 {
        max_in_flight
    } else {
        max_in_flight - (max_in_flight / 4).max(1)
    }
}

/// One number's hand-over from conversation actors to its worker: a queue per lane.
struct Intake {
    lanes: [Lane; 2],
    /// Wakes the worker; a permit is stored when it is not waiting, so no wake-up is lost.
    wake: Notify,
}

/// One lane's queue, spilled to disk on its own (a campaign's spill never puts replies on disk).
struct Lane {
    state: Mutex<LaneState>,
    capacity: usize,
}

struct LaneState {
    queue: VecDeque<OutboxJob>,
    /// How many of `queue`'s jobs each conversation has (see `NumberWorker::earlier`).
    convs: HashMap<String, u32>,
    /// Jobs are kept on disk only until the worker has read them all back.
    spilled: bool,
    /// Counts spills, so the worker can tell whether one happened during its pass.
    spills: u64,
}

impl Lane {
    fn new(capacity: usize) -> Self {
        Lane {
            state: Mutex::new(LaneState {
                queue: VecDeque::new(),
                convs: HashMap::new(),
                // Start-up is a spill: the first pass resumes what the last run left.
                spilled: true,
                spills: 1,
            }),
            capacity,
        }
    }

    /// Queues `job`, or keeps it on disk only when the queue is full or already spilled.
    /// Never waits; true when queued.
    fn push(&self, job: OutboxJob) -> bool {
        let mut st = self.state.lock();
        if st.spilled || st.queue.len() >= self.capacity {
            st.spilled = true;
            st.spills += 1;
            false
        } else {
            *st.convs.entry(job.conversation_id.clone()).or_default() += 1;
            st.queue.push_back(job);
            true
        }
    }

    fn pop(&self) -> Option<OutboxJob> {
        let mut st = self.state.lock();
        let job = st.queue.pop_front()?;
        forget(&mut st.convs, &job.conversation_id, 1);
        Some(job)
    }

    /// Takes out of the queue conversation `conv`'s jobs with a seq below `before`.
    fn take_before(&self, conv: &str, before: u64) -> Vec<OutboxJob> {
        let mut st = self.state.lock();
        if !st.convs.contains_key(conv) {
            return Vec::new();
        }
        let (taken, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut st.queue)
            .into_iter()
            .partition(|j| j.conversation_id == conv && j.seq < before);
        st.queue = kept;
        forget(&mut st.convs, conv, taken.len() as u32);
        taken.into()
    }
}

/// Lowers `conv`'s count in `convs` by `n`, dropping it at zero.
fn forget(convs: &mut HashMap<String, u32>, conv: &str, n: u32) {
    if let Some(c) = convs.get_mut(conv) {
        *c = c.saturating_sub(n);
        if *c == 0 {
            convs.remove(conv);
        }
    }
}

impl Intake {
    fn push(&self, job: OutboxJob) -> bool {
        let queued = self.lanes[LaneKind::of(&job) as usize].push(job);
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
            let intake = Arc::new(Intake {
                lanes: [Lane::new(cfg.queue_capacity), Lane::new(cfg.queue_capacity)],
                wake: Notify::new(),
            });
            lanes.insert(n.phone_number_id.clone(), intake.clone());
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
            tasks.push(tokio::spawn(worker.run(intake)));
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

    /// Hands a durable job to its number's worker without waiting: when its lane's queue is
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

/// A job the worker holds, with what its earlier attempts of this run left.
struct Pending {
    job: OutboxJob,
    lane: LaneKind,
    /// Attempts made so far (counted against `max_attempts`).
    attempts: u32,
    /// In doubt since the last run: held for a status callback before its first send.
    hold_first: bool,
    /// Marked in doubt on disk already, with the other sends of its dispatch round (`start_all`).
    marked: bool,
}

/// Where a conversation's line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// Its next job waits its turn in this lane's `ready` queue.
    Ready(LaneKind),
    /// Waiting for a time (its pair's rate or back-off, or a retry's back-off) in `parked`.
    Parked,
    /// A send of it is out; the rest waits.
    InFlight,
}

/// One conversation's jobs the worker holds, in order: at most one of them is out at a time.
struct Line {
    jobs: VecDeque<Pending>,
    state: LineState,
    /// Reply-lane jobs among `jobs`: while there is one the line is served as a reply, so a
    /// reply never waits behind the campaign lane for a template queued before it.
    replies: usize,
    /// The in-flight slot a retry keeps through its back-off (as a send in flight does), so a
    /// throttled number does not start more sends meanwhile; none while waiting for a pair.
    permit: Option<OwnedSemaphorePermit>,
}

impl Line {
    fn lane(&self) -> LaneKind {
        if self.replies > 0 {
            LaneKind::Reply
        } else {
            LaneKind::Campaign
        }
    }
}

/// One lane's side of the worker's bookkeeping.
#[derive(Default)]
struct LaneHeld {
    /// This lane's jobs held and not started (bounded by `queue_capacity`).
    count: usize,
    /// Conversations whose next job may start, in turn; an entry whose line has moved on since
    /// is skipped (at most one stale entry per promotion to the reply lane).
    ready: VecDeque<String>,
    /// Jobs read back from disk, not yet taken, and how many of them each conversation has.
    read_back: VecDeque<OutboxJob>,
    read_back_convs: HashMap<String, u32>,
    /// Where the current pass over the disk goes on, and the spill count when it began.
    pass: Option<(Option<JobKey>, u64)>,
}

/// The worker's own bookkeeping; only its task touches it.
struct Held {
    lines: HashMap<String, Line>,
    /// Every job held, in flight or waiting, until its outcome is recorded.
    known: HashSet<JobKey>,
    lanes: [LaneHeld; 2],
    /// Parked lines by the time they may go again (one entry per parked line).
    parked: BinaryHeap<Reverse<(Instant, String)>>,
    pairs: pairs::Pairs,
    /// A permit taken for the next send.
    spare: Option<OwnedSemaphorePermit>,
    /// Reply sends in a row while the campaign lane had work.
    reply_streak: u32,
    /// The campaign lane's sends in flight (at most [`campaign_slots`]).
    campaign_flying: HashSet<JobKey>,
}

/// What a delivery task tells its worker when it ends.
struct Ended {
    key: JobKey,
    to: String,
    end: End,
}

enum End {
    /// Its outcome is recorded (or it needs none: settled already, or shutting down);
    /// `accepted` when Meta took it.
    Settled { accepted: bool },
    /// Send it again, after `after`; `permit` is its slot when it keeps one.
    Retry {
        /// Boxed: it is the rare end, and a job is large.
        pending: Box<Pending>,
        after: RetryAfter,
        permit: Option<OwnedSemaphorePermit>,
    },
}

enum RetryAfter {
    /// At its next turn (an ambiguous send no callback named, after its hold).
    Now,
    /// After this back-off (a transient failure), keeping its slot.
    Backoff(Duration),
    /// Meta's 131056: after its pair's back-off, without a slot.
    PairLimited,
}

/// What the worker waits for before it can start more.
enum Wait {
    /// Nothing to start (or only parked lines: `parked` says when).
    Work,
    /// An in-flight slot.
    Permit,
    /// The number's next token, at this time.
    Token(Instant),
}

impl<G: GraphSender, S: OutcomeSink> NumberWorker<G, S> {
    async fn run(self, intake: Arc<Intake>) {
        let this = Arc::new(self);
        // A send that ended says so here; at most `max_in_flight` at a time.
        let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<Ended>();
        let mut held = Held {
            lines: HashMap::new(),
            known: HashSet::new(),
            lanes: Default::default(),
            parked: BinaryHeap::new(),
            pairs: pairs::Pairs::new(
                this.cfg.pair_burst,
                Duration::from_millis(this.cfg.pair_interval_ms),
                Duration::from_millis(this.cfg.pair_backoff_ms),
            ),
            spare: None,
            reply_streak: 0,
            campaign_flying: HashSet::new(),
        };
        loop {
            // Ended sends first: they free their conversation's next job.
            while let Ok(e) = ended_rx.try_recv() {
                this.ended(&mut held, e);
            }
            let mut again = false;
            for lane in LaneKind::ALL {
                again |= this.fill(&mut held, &intake, lane).await;
            }
            let wait = this.dispatch(&mut held, &ended_tx);
            if again {
                continue;
            }
            let wake_at = match wait {
                Wait::Token(at) => Some(at),
                _ => None,
            };
            let wake_at = match (wake_at, held.parked.peek()) {
                (Some(a), Some(Reverse((b, _)))) => Some(a.min(*b)),
                (a, b) => a.or(b.map(|Reverse((b, _))| *b)),
            };
            let want_permit = matches!(wait, Wait::Permit);
            tokio::select! {
                biased;
                Some(e) = ended_rx.recv() => this.ended(&mut held, e),
                _ = intake.wake.notified() => {}
                permit = this.permits.clone().acquire_owned(), if want_permit => {
                    match permit {
                        Ok(p) => held.spare = Some(p),
                        Err(_) => return,
                    }
                }
                _ = tokio::time::sleep_until(wake_at.unwrap_or_else(Instant::now).into()), if wake_at.is_some() => {}
            }
        }
    }

    /// Takes `lane`'s jobs while it holds fewer than `queue_capacity`: read back from disk
    /// first (they are older than anything queued since the spill), then queued, then the next
    /// page from disk. True when another page may be read at once.
    async fn fill(&self, held: &mut Held, intake: &Intake, lane: LaneKind) -> bool {
        let i = lane as usize;
        while held.lanes[i].count < self.cfg.queue_capacity {
            let next = match held.lanes[i].read_back.pop_front() {
                Some(job) => {
                    forget(&mut held.lanes[i].read_back_convs, &job.conversation_id, 1);
                    Some(job)
                }
                None => intake.lanes[i].pop(),
            };
            match next {
                Some(job) => {
                    for (earlier, lane) in self.earlier(held, intake, &job, lane).await {
                        self.take(held, earlier, lane);
                    }
                    self.take(held, job, lane)
                }
                // One page per turn, so a long pass does not hold back the sends.
                None => return self.read_more(held, &intake.lanes[i], lane).await,
            }
        }
        false
    }

    /// The jobs of `job`'s conversation in the other lane, accepted before it and not held yet
    /// (in seq order): they must go first. Lanes are separate queues, so a reply accepted after
    /// a template of its conversation could otherwise be taken (and sent) before the template
    /// still waiting in the campaign lane, or the other way round; taking them first puts them
    /// ahead of it in the conversation's line. They are in memory (the other lane's queue or
    /// pages read back) unless the other lane is spilled; then its disk is read too, which happens
    /// only while that lane is spilled (a big campaign, or start-up) and costs one short
    /// prefix read. A copy of such a job left in the other lane is dropped when taken later
    /// (`known`, or the sink's answer once it is settled).
    async fn earlier(
        &self,
        held: &mut Held,
        intake: &Intake,
        job: &OutboxJob,
        lane: LaneKind,
    ) -> Vec<(OutboxJob, LaneKind)> {
        let other = match lane {
            LaneKind::Reply => LaneKind::Campaign,
            LaneKind::Campaign => LaneKind::Reply,
        };
        let o = other as usize;
        let conv = &job.conversation_id;
        let mut found: Vec<OutboxJob> = intake.lanes[o].take_before(conv, job.seq);
        if held.lanes[o].read_back_convs.contains_key(conv) {
            let (taken, kept): (VecDeque<_>, VecDeque<_>) =
                std::mem::take(&mut held.lanes[o].read_back)
                    .into_iter()
                    .partition(|j| &j.conversation_id == conv && j.seq < job.seq);
            held.lanes[o].read_back = kept;
            forget(&mut held.lanes[o].read_back_convs, conv, taken.len() as u32);
            found.extend(taken);
        }
        if intake.lanes[o].state.lock().spilled {
            let on_disk = self
                .until_ok(
                    conv,
                    job.seq,
                    "reading a conversation's earlier sends",
                    || {
                        self.store
                            .outbox_before(conv, job.seq, self.cfg.queue_capacity)
                    },
                )
                .await;
            found.extend(on_disk.into_iter().filter(|j| LaneKind::of(j) == other));
        }
        found.retain(|j| !held.known.contains(&(j.conversation_id.clone(), j.seq)));
        found.sort_by_key(|j| j.seq);
        found.dedup_by_key(|j| j.seq);
        found.into_iter().map(|j| (j, other)).collect()
    }

    /// Accepts one job into its conversation's line.
    fn take(&self, held: &mut Held, job: OutboxJob, lane: LaneKind) {
        if !held.known.insert((job.conversation_id.clone(), job.seq)) {
            return; // already held: queued and read back from disk
        }
        held.lanes[lane as usize].count += 1;
        let conv = job.conversation_id.clone();
        let pending = Pending {
            hold_first: job.in_doubt,
            marked: false,
            job,
            lane,
            attempts: 0,
        };
        let reply = usize::from(lane == LaneKind::Reply);
        match held.lines.get_mut(&conv) {
            Some(line) => {
                line.jobs.push_back(pending);
                line.replies += reply;
                if reply == 1 && line.state == LineState::Ready(LaneKind::Campaign) {
                    line.state = LineState::Ready(LaneKind::Reply);
                    held.lanes[LaneKind::Reply as usize].ready.push_back(conv);
                }
            }
            None => {
                held.lines.insert(
                    conv.clone(),
                    Line {
                        jobs: VecDeque::from([pending]),
                        state: LineState::Ready(lane),
                        replies: reply,
                        permit: None,
                    },
                );
                held.lanes[lane as usize].ready.push_back(conv);
            }
        }
    }

    /// A delivery ended: its conversation's next job gets its turn, or the job itself does
    /// again, after its back-off.
    fn ended(&self, held: &mut Held, e: Ended) {
        let now = Instant::now();
        held.campaign_flying.remove(&e.key);
        let conv = e.key.0.clone();
        match e.end {
            End::Settled { accepted } => {
                if accepted {
                    held.pairs.accepted(&e.to);
                }
                held.known.remove(&e.key);
                let Some(line) = held.lines.get_mut(&conv) else {
                    return;
                };
                if line.jobs.is_empty() {
                    held.lines.remove(&conv);
                } else {
                    let lane = line.lane();
                    line.state = LineState::Ready(lane);
                    held.lanes[lane as usize].ready.push_front(conv);
                }
            }
            End::Retry {
                pending,
                after,
                permit,
            } => {
                held.lanes[pending.lane as usize].count += 1;
                let reply = usize::from(pending.lane == LaneKind::Reply);
                let at = match after {
                    RetryAfter::Now => now,
                    RetryAfter::Backoff(d) => {
                        // A definite refusal: nothing reached the user, so the pair keeps its
                        // token for the retry.
                        held.pairs.refund(&e.to);
                        now + d
                    }
                    RetryAfter::PairLimited => {
                        metrics::counter!(m::OUTBOX_PAIR_LIMITED, "number" => self.number.clone())
                            .increment(1);
                        now + held.pairs.limited(&e.to, now)
                    }
                };
                let permit = match after {
                    RetryAfter::PairLimited => None,
                    _ => permit,
                };
                let line = held.lines.entry(conv.clone()).or_insert_with(|| Line {
                    jobs: VecDeque::new(),
                    state: LineState::InFlight,
                    replies: 0,
                    permit: None,
                });
                line.jobs.push_front(*pending);
                line.replies += reply;
                line.permit = permit;
                if at <= now {
                    let lane = line.lane();
                    line.state = LineState::Ready(lane);
                    held.lanes[lane as usize].ready.push_front(conv);
                } else {
                    line.state = LineState::Parked;
                    held.parked.push(Reverse((at, conv)));
                }
            }
        }
    }

    /// The lane whose turn it is: replies first, the campaign lane at least once per
    /// `REPLY_STREAK` sends when both have work and while it holds fewer than its slots.
    fn next_lane(held: &Held, campaign_slots: usize) -> Option<LaneKind> {
        let reply = !held.lanes[LaneKind::Reply as usize].ready.is_empty();
        let campaign = !held.lanes[LaneKind::Campaign as usize].ready.is_empty()
            && held.campaign_flying.len() < campaign_slots;
        match (reply, campaign) {
            (true, true) if held.reply_streak >= REPLY_STREAK => Some(LaneKind::Campaign),
            (true, _) => Some(LaneKind::Reply),
            (false, true) => Some(LaneKind::Campaign),
            (false, false) => None,
        }
    }

    /// Starts every send that may start now: each needs an in-flight slot, one of the number's
    /// tokens and one of its pair's; a send whose pair has none is parked until its pair has
    /// one, and the next conversation's send goes instead. Says what to wait for next.
    fn dispatch(self: &Arc<Self>, held: &mut Held, ended: &mpsc::UnboundedSender<Ended>) -> Wait {
        let mut starting = Vec::new();
        let wait = self.dispatch_round(held, &mut starting);
        self.start_all(starting, ended);
        wait
    }

    /// [`Self::dispatch`]'s choice of what starts now, in `starting` (each with its slot).
    fn dispatch_round(
        &self,
        held: &mut Held,
        starting: &mut Vec<(Pending, OwnedSemaphorePermit)>,
    ) -> Wait {
        let now = Instant::now();
        while let Some(Reverse((at, _))) = held.parked.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, conv))) = held.parked.pop() else {
                break;
            };
            if let Some(line) = held.lines.get_mut(&conv) {
                if line.state == LineState::Parked {
                    let lane = line.lane();
                    line.state = LineState::Ready(lane);
                    held.lanes[lane as usize].ready.push_front(conv);
                }
            }
        }
        loop {
            let Some(lane) = Self::next_lane(held, campaign_slots(self.cfg.max_in_flight)) else {
                return Wait::Work;
            };
            let li = lane as usize;
            let Some(conv) = held.lanes[li].ready.front() else {
                return Wait::Work;
            };
            let Some(line) = held.lines.get_mut(conv) else {
                held.lanes[li].ready.pop_front();
                continue;
            };
            if line.state != LineState::Ready(lane) || line.jobs.is_empty() {
                held.lanes[li].ready.pop_front();
                continue;
            }
            if line.permit.is_none() && held.spare.is_none() {
                match self.permits.clone().try_acquire_owned() {
                    Ok(p) => held.spare = Some(p),
                    Err(TryAcquireError::NoPermits) => return Wait::Permit,
                    Err(TryAcquireError::Closed) => return Wait::Work,
                }
            }
            if let Err(wait) = self.bucket.ready() {
                return Wait::Token(now + wait);
            }
            let to = line.jobs[0].job.to.clone();
            if let Err(until) = held.pairs.try_take(&to, now) {
                // This user had their share: others go first, it goes when its pair may.
                metrics::counter!(m::OUTBOX_PAIR_PACED, "number" => self.number.clone())
                    .increment(1);
                line.state = LineState::Parked;
                line.permit = None;
                let Some(conv) = held.lanes[li].ready.pop_front() else {
                    return Wait::Work;
                };
                held.parked.push(Reverse((until, conv)));
                continue;
            }
            if let Err(wait) = self.bucket.try_take() {
                // The number's read receipts took it meanwhile.
                held.pairs.refund(&to);
                return Wait::Token(now + wait);
            }
            let Some(pending) = line.jobs.pop_front() else {
                continue;
            };
            let permit = match line.permit.take().or_else(|| held.spare.take()) {
                Some(p) => p,
                None => return Wait::Permit, // unreachable: one was secured above
            };
            line.state = LineState::InFlight;
            if pending.lane == LaneKind::Reply {
                line.replies -= 1;
            }
            held.lanes[li].ready.pop_front();
            held.lanes[pending.lane as usize].count -= 1;
            if lane == LaneKind::Reply && !held.lanes[LaneKind::Campaign as usize].ready.is_empty()
            {
                held.reply_streak += 1;
            } else {
                held.reply_streak = 0;
            }
            metrics::counter!(m::OUTBOX_SENDS, "number" => self.number.clone(), "lane" => lane.as_str())
                .increment(1);
            if lane == LaneKind::Campaign {
                held.campaign_flying
                    .insert((pending.job.conversation_id.clone(), pending.job.seq));
            }
            starting.push((pending, permit));
        }
    }

    /// While `lane` is spilled, reads the next page of the number's jobs back from disk and
    /// keeps that lane's. True when there may be more to take now; false when the worker
    /// should wait for a wake-up.
    async fn read_more(&self, held: &mut Held, queue: &Lane, lane: LaneKind) -> bool {
        let i = lane as usize;
        let (after, spills_at_start) = match held.lanes[i].pass.take() {
            Some(pass) => pass,
            None => {
                let st = queue.state.lock();
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
                held.lanes[i].pass = Some((after, spills_at_start));
                return false;
            }
        };
        let last = jobs.last().map(|j| (j.conversation_id.clone(), j.seq));
        let known = &held.known;
        let fresh: Vec<_> = jobs
            .into_iter()
            .filter(|j| {
                LaneKind::of(j) == lane && !known.contains(&(j.conversation_id.clone(), j.seq))
            })
            .collect();
        if !fresh.is_empty() {
            tracing::debug!(number = %self.number, lane = lane.as_str(), count = fresh.len(), "sends read back from disk");
        }
        let progressed = !fresh.is_empty();
        for j in &fresh {
            *held.lanes[i]
                .read_back_convs
                .entry(j.conversation_id.clone())
                .or_default() += 1;
        }
        held.lanes[i].read_back.extend(fresh);
        if !reached_end {
            held.lanes[i].pass = Some((last, spills_at_start));
            return true;
        }
        let mut st = queue.state.lock();
        if st.spills == spills_at_start {
            // Nothing spilled since this pass began, so every spilled job was on disk for it.
            st.spilled = false;
        }
        // Otherwise the next pass starts over for the jobs spilled meanwhile.
        progressed || !st.spilled
    }

    /// Starts a dispatch round's sends. Those about to make their first attempt of the run
    /// without an upload first (nearly all) are marked in doubt together: one commit for the
    /// round (`OutcomeSink::attempts`), each mark written only if its job is still on disk, then
    /// each request goes out on its own task. The others mark themselves (`send_once`).
    fn start_all(
        self: &Arc<Self>,
        starting: Vec<(Pending, OwnedSemaphorePermit)>,
        ended: &mpsc::UnboundedSender<Ended>,
    ) {
        let (round, single): (Vec<_>, Vec<_>) = starting
            .into_iter()
            .partition(|(p, _)| !p.hold_first && !p.job.in_doubt && !needs_upload(&p.job.payload));
        for (pending, permit) in single {
            self.start(pending, permit, ended);
        }
        if round.is_empty() {
            return;
        }
        let worker = self.clone();
        let ended = ended.clone();
        let mut set = self.deliveries.lock();
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            let settled = |p: &Pending| Ended {
                key: (p.job.conversation_id.clone(), p.job.seq),
                to: p.job.to.clone(),
                end: End::Settled { accepted: false },
            };
            if worker.closing.load(std::sync::atomic::Ordering::Acquire) {
                // Shutting down: they stay on disk, not in doubt, and are sent after the restart.
                for (p, _) in &round {
                    let _ = ended.send(settled(p));
                }
                return;
            }
            let mut round = round;
            for (p, _) in &mut round {
                p.job.in_doubt = true;
            }
            let marked = {
                let jobs: Vec<&OutboxJob> = round.iter().map(|(p, _)| &p.job).collect();
                let (conv, seq) = (&jobs[0].conversation_id, jobs[0].seq);
                worker
                    .until_ok(conv, seq, "recording a round of send attempts", || {
                        worker.sink.attempts(&jobs)
                    })
                    .await
            };
            for (i, (mut p, permit)) in round.into_iter().enumerate() {
                if marked.get(i).copied().unwrap_or(false) {
                    p.marked = true;
                    worker.start(p, permit, &ended);
                } else {
                    // No longer waits for a send (settled meanwhile: a second copy, or
                    // adopted); its mark was not written, so nothing came back.
                    let _ = ended.send(settled(&p));
                }
            }
        });
    }

    /// Sends `pending` on a task of its own, holding `permit`, and reports on `ended` how it
    /// ended.
    fn start(
        self: &Arc<Self>,
        pending: Pending,
        permit: OwnedSemaphorePermit,
        ended: &mpsc::UnboundedSender<Ended>,
    ) {
        let worker = self.clone();
        let ended = ended.clone();
        let mut set = self.deliveries.lock();
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            let key = (pending.job.conversation_id.clone(), pending.job.seq);
            let to = pending.job.to.clone();
            let end = worker.deliver(pending, permit).await;
            let _ = ended.send(Ended { key, to, end });
        });
    }

    /// One attempt of a send (with its media upload and its ambiguous hold, if any).
    async fn deliver(&self, pending: Pending, permit: OwnedSemaphorePermit) -> End {
        let Pending {
            job,
            lane,
            attempts,
            hold_first,
            marked,
        } = pending;
        let conv = job.conversation_id.clone();
        let seq = job.seq;
        let hold = self.holds.register((conv.clone(), seq));
        let settled = End::Settled { accepted: false };
        if hold_first {
            // The last run may have delivered it: its callbacks get their time first; then it
            // takes its turn (and tokens) again, as the time since it took them has passed.
            metrics::counter!(m::OUTBOX_AMBIGUOUS, "number" => self.number.clone(), "cause" => AmbiguousCause::Restart.as_str())
                .increment(1);
            tracing::debug!(message_id = %job.message_id(), "send in doubt since the last run; holding it");
            if !self.hold(&job, &hold.notify).await {
                return settled;
            }
            return End::Retry {
                pending: Box::new(Pending {
                    job,
                    lane,
                    attempts,
                    hold_first: false,
                    marked: false,
                }),
                after: RetryAfter::Now,
                permit: Some(permit),
            };
        }
        // Until this send's outcome is recorded, its conversation's next send waits: letting it
        // go would put it ahead of this one, which stays on disk and is sent again after a
        // restart. So storage steps here are retried (with back-off) for as long as they fail;
        // storage that keeps failing gets the broker restarted (`crate::supervisor`).
        let job = match self.upload_media(job).await {
            Ok(Some(job)) => job,
            Ok(None) => return settled,
            Err(e) => {
                self.record(&conv, seq, Err(e)).await;
                return settled;
            }
        };
        match self
            .send_once(job, attempts + 1, marked, &hold.notify)
            .await
        {
            Attempt::Over(None) => settled,
            Attempt::Over(Some(outcome)) => {
                let accepted = outcome.is_ok();
                self.record(&conv, seq, outcome.map(Some)).await;
                End::Settled { accepted }
            }
            Attempt::Again { job, after } => End::Retry {
                pending: Box::new(Pending {
                    job: *job,
                    lane,
                    attempts: attempts + 1,
                    hold_first: false,
                    marked: false,
                }),
                after,
                permit: Some(permit),
            },
        }
    }

    /// Records a send's outcome (idempotent: a repeat finds the message settled and drops it).
    async fn record(&self, conv: &str, seq: u64, outcome: Result<Option<String>, MessageError>) {
        let settled = self
            .until_ok(conv, seq, "recording a send's outcome", || {
                self.sink.outcome(conv, seq, outcome.clone())
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

    /// Sends `job` once (its `attempt`-th try): its outcome, None when it turned out to be
    /// settled already (a second copy, or adopted from a status callback) or the broker is
    /// shutting down, or to try again after what.
    /// `marked`: the job's in-doubt mark is durable already (`start_all`).
    async fn send_once(
        &self,
        job: OutboxJob,
        attempt: u32,
        marked: bool,
        adopted: &Notify,
    ) -> Attempt {
        let message_id = job.message_id();
        let (conv, seq) = (&job.conversation_id, job.seq);
        if marked {
            // Marked with its round after the shutdown check there: it goes, as a send whose
            // own mark was written before the shutdown began does.
        } else if self.closing.load(std::sync::atomic::Ordering::Acquire) {
            // Shutting down: it stays on disk, not in doubt, and is sent after the restart.
            return Attempt::Over(None);
        } else if job.in_doubt {
            // Sent again after a hold no callback ended: one may have come since.
            let pending = self
                .until_ok(
                    conv,
                    seq,
                    "checking that a held send is still pending",
                    || self.store.outbox_contains(conv, seq),
                )
                .await;
            if !pending {
                return Attempt::Over(None);
            }
        } else if !self.mark(&job, true).await {
            // Durable before the request leaves, so a kill -9 during it is known at start-up;
            // this also finds a job whose outcome is recorded already (a second copy).
            return Attempt::Over(None);
        }
        let started = Instant::now();
        let res = self.graph.send(&job, &message_id).await;
        metrics::histogram!(m::GRAPH_DURATION).record(started.elapsed().as_secs_f64());
        let job = OutboxJob {
            in_doubt: true,
            ..job
        };
        match res {
            Ok(wamid) => Attempt::Over(Some(Ok(wamid))),
            Err(SendError::Ambiguous { cause, reason }) => {
                metrics::counter!(m::OUTBOX_AMBIGUOUS, "number" => self.number.clone(), "cause" => cause.as_str())
                    .increment(1);
                tracing::debug!(%message_id, attempt, %reason, "send outcome unknown; holding it");
                if !self.hold(&job, adopted).await {
                    return Attempt::Over(None);
                }
                if attempt >= self.cfg.max_attempts {
                    return Attempt::Over(Some(Err(MessageError {
                        code: 0,
                        title: format!("gave up after {attempt} attempts: {reason}"),
                    })));
                }
                // No callback named it: sent again (the hold was the back-off).
                metrics::counter!(m::OUTBOUND_RETRIES).increment(1);
                Attempt::Again {
                    job: Box::new(job),
                    after: RetryAfter::Now,
                }
            }
            Err(SendError::Transient(reason)) => {
                let code = leading_code(&reason);
                if attempt >= self.cfg.max_attempts {
                    return Attempt::Over(Some(Err(MessageError {
                        code: code.unwrap_or(0),
                        title: format!("gave up after {attempt} attempts: {reason}"),
                    })));
                }
                // A definite refusal: nothing of this attempt is at Meta, and a restart
                // during the back-off need not hold it.
                let job = OutboxJob {
                    in_doubt: false,
                    ..job
                };
                if !self.mark(&job, false).await {
                    return Attempt::Over(None);
                }
                metrics::counter!(m::OUTBOUND_RETRIES).increment(1);
                tracing::debug!(%message_id, attempt, %reason, "transient send failure; retrying");
                let after = if code == Some(PAIR_RATE_LIMIT_HIT) {
                    RetryAfter::PairLimited
                } else {
                    RetryAfter::Backoff(backoff(&self.cfg, attempt))
                };
                Attempt::Again {
                    job: Box::new(job),
                    after,
                }
            }
            // Meta's code and title as given; the API adds `reason: "window_closed"`.
            Err(SendError::WindowClosed { code, title }) => {
                Attempt::Over(Some(Err(MessageError { code, title })))
            }
            Err(SendError::Permanent { code, title }) => {
                Attempt::Over(Some(Err(MessageError { code, title })))
            }
        }
    }
}

/// Meta's "pair rate limit hit": too many messages to one user (`pairs`).
const PAIR_RATE_LIMIT_HIT: i64 = 131056;

/// How one attempt went.
enum Attempt {
    /// Done: its outcome to record, or None when there is none to record.
    Over(Option<Result<String, MessageError>>),
    /// To be sent again (`job` as it now stands on disk), after what.
    Again {
        /// Boxed: it is the rare outcome, and a job is large.
        job: Box<OutboxJob>,
        after: RetryAfter,
    },
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

/// Whether a job's file must be uploaded to Meta before it can be sent (`upload_media`).
fn needs_upload(payload: &Payload) -> bool {
    matches!(payload, Payload::Media { meta_id: None, .. })
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
        /// A round's jobs were marked together: (conversation, in doubt) of each.
        Round(Vec<(String, bool)>),
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

    /// The one number `n1` these tests send through, at 1,000 mps.
    fn number_n1() -> NumberConfig {
        NumberConfig {
            phone_number_id: "n1".into(),
            display_phone_number: String::new(),
            default_team: "support".into(),
            mps_setting: Some(1000),
            mps: 1000,
            coexistence: false,
            country: None,
            time_zone: None,
            languages: Vec::new(),
        }
    }

    /// [`RecordingSink`] that also marks a round's jobs as the conversation actors' sink does
    /// (one commit of conditional puts) and reports each round.
    struct RoundSink(RecordingSink);

    impl OutcomeSink for RoundSink {
        type Error = crate::store::StoreError;

        async fn attempt(&self, job: &OutboxJob) -> Result<bool, Self::Error> {
            self.0.attempt(job).await
        }

        async fn attempts(&self, jobs: &[&OutboxJob]) -> Result<Vec<bool>, Self::Error> {
            let mut batch = crate::store::Batch::new();
            for job in jobs {
                batch.put_outbox_if_present(job)?;
            }
            let marked = self.0.store.commit_checked(batch).await?;
            let round = jobs
                .iter()
                .map(|j| (j.conversation_id.clone(), j.in_doubt))
                .collect();
            let _ = self.0.seen.send(Seen::Round(round));
            Ok(marked)
        }

        async fn outcome(
            &self,
            conversation: &str,
            seq: u64,
            outcome: Result<Option<String>, MessageError>,
        ) -> Result<bool, Self::Error> {
            self.0.outcome(conversation, seq, outcome).await
        }
    }

    /// The sends of one dispatch round are marked in doubt together, in one call (one commit),
    /// before any of their requests goes out; a job settled on disk before its round is neither
    /// brought back nor sent.
    #[tokio::test]
    async fn a_rounds_in_doubt_marks_are_one_commit_before_its_requests() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), false, 64).expect("open store");
        let job = |conv: &str| OutboxJob {
            conversation_id: conv.into(),
            seq: 1,
            number: "n1".into(),
            to: format!("1555000{conv}"),
            payload: Payload::Text {
                body: "hello".into(),
                reply_to: None,
            },
            in_doubt: false,
        };
        let convs = ["c0", "c1", "c2", "c3", "c4"];
        let mut batch = crate::store::Batch::new();
        for c in convs {
            batch.put_outbox(&job(c)).expect("encode");
        }
        store.commit(batch).await.expect("commit");

        let (tx, mut rx) = mpsc::unbounded_channel();
        let graph = ScriptedGraph {
            answers: Mutex::new(VecDeque::from(vec![Ok("wamid.A".to_string()); 5])),
            seen: tx.clone(),
        };
        let sink = RoundSink(RecordingSink {
            store: store.clone(),
            seen: tx,
        });
        let numbers = [number_n1()];
        let pending = HashMap::from([("n1".to_string(), convs.len())]);
        let cfg = OutboxConfig::default();
        let outbox = Outbox::start(&cfg, &numbers, store.clone(), graph, sink, &pending);

        let mut seen = Vec::new();
        while seen
            .iter()
            .filter(|s| matches!(s, Seen::Outcome(_)))
            .count()
            < convs.len()
        {
            let next = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("the outbox reports within 10 s")
                .expect("fakes alive");
            seen.push(next);
        }
        let Some(Seen::Round(round)) = seen.first() else {
            panic!("a round is marked before anything is sent: {seen:?}");
        };
        let mut marked: Vec<_> = round.iter().map(|(c, _)| c.as_str()).collect();
        marked.sort_unstable();
        assert_eq!(marked, convs, "all five in one round");
        assert!(round.iter().all(|(_, in_doubt)| *in_doubt), "{round:?}");
        assert_eq!(
            seen.iter().filter(|s| matches!(s, Seen::Round(_))).count(),
            1,
            "one round only: {seen:?}"
        );
        assert!(
            !seen.iter().any(|s| matches!(s, Seen::Attempt(_))),
            "no send marked on its own: {seen:?}"
        );
        assert_eq!(
            seen.iter().filter(|s| matches!(s, Seen::Sent(_))).count(),
            convs.len()
        );
        outbox.shutdown(Duration::from_secs(1)).await;
        store.close().await;
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
        let numbers = [number_n1()];
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
