//! Outbound delivery: one outbox per business number.
//!
//! A reply is durable (message + outbox entry, one batch) before the API answers 202; the outbox
//! then sends it to the Graph API within the number's `mps` (token bucket), with at most
//! `outbox.max_in_flight` requests in flight per number, and reports the outcome to the
//! conversation actor, which records it and deletes the outbox entry in one batch. Transient
//! failures are retried with exponential back-off and full jitter, at most `outbox.max_attempts`
//! times; entries still on disk at start-up (the broker died before an outcome was recorded) are
//! sent again, so an acknowledged reply is sent even across kill -9.
//!
//! Order: a conversation has at most one send in flight; its later jobs wait behind it in the
//! order they were queued, so its replies reach the Graph API in the order they were accepted,
//! even when one of them is throttled and retried (concurrent sends of one conversation could
//! overtake each other, and a customer would read "part 2" before "part 1"). Different
//! conversations still share the number's `max_in_flight`.
//!
//! Bounds: `outbox.queue_capacity` jobs buffered per number (producers wait when full), and as
//! many again waiting behind a conversation's send in flight (beyond that the worker stops taking
//! jobs until a send ends), `max_in_flight` concurrent sends per number, `max_attempts` tries per
//! message.

mod bucket;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::{JoinHandle, JoinSet};

pub use bucket::TokenBucket;

use crate::actors::{ConversationMsg, Ctx};
use crate::config::OutboxConfig;
use crate::domain::MessageError;
use crate::metrics as m;
use crate::store::OutboxJob;
use crate::whatsapp::graph::{GraphClient, SendError};

pub struct Outbox {
    senders: HashMap<String, mpsc::Sender<OutboxJob>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    deliveries: Deliveries,
}

/// Every send in flight, so shutdown can wait for them and then cancel the rest.
type Deliveries = Arc<Mutex<JoinSet<()>>>;

/// Delay before retry `attempt` (1-based): full jitter over an exponentially growing ceiling.
pub fn backoff(cfg: &OutboxConfig, attempt: u32) -> Duration {
    let exp = cfg
        .retry_base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(20));
    let ceiling = exp.min(cfg.retry_max_ms).max(1);
    Duration::from_millis(rand::thread_rng().gen_range(ceiling / 2..=ceiling))
}

impl Outbox {
    /// Starts one sender task per configured number.
    pub fn start(ctx: &Arc<Ctx>, graph: GraphClient) -> Self {
        let cfg = ctx.config.outbox.clone();
        let mut senders = HashMap::new();
        let mut tasks = Vec::new();
        let deliveries: Deliveries = Arc::new(Mutex::new(JoinSet::new()));
        for n in &ctx.config.numbers {
            let (tx, rx) = mpsc::channel(cfg.queue_capacity);
            senders.insert(n.phone_number_id.clone(), tx);
            let worker = NumberWorker {
                ctx: ctx.clone(),
                graph: graph.clone(),
                cfg: cfg.clone(),
                bucket: Arc::new(TokenBucket::new(n.mps)),
                permits: Arc::new(Semaphore::new(cfg.max_in_flight)),
                deliveries: deliveries.clone(),
            };
            tasks.push(tokio::spawn(worker.run(rx)));
        }
        Self {
            senders,
            tasks: Mutex::new(tasks),
            deliveries,
        }
    }

    /// Queues a durable job for sending; waits while the number's queue is full.
    pub async fn enqueue(&self, job: OutboxJob) {
        match self.senders.get(&job.number) {
            Some(tx) => {
                if tx.send(job).await.is_err() {
                    tracing::warn!("outbox stopped; job stays on disk for the next start");
                }
            }
            None => {
                tracing::error!(number = %job.number, "no outbox for number; job stays on disk")
            }
        }
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

struct NumberWorker {
    ctx: Arc<Ctx>,
    graph: GraphClient,
    cfg: OutboxConfig,
    bucket: Arc<TokenBucket>,
    permits: Arc<Semaphore>,
    deliveries: Deliveries,
}

impl NumberWorker {
    async fn run(self, mut rx: mpsc::Receiver<OutboxJob>) {
        let this = Arc::new(self);
        // A send that ended names its conversation here; at most `max_in_flight` at a time.
        let (ended_tx, mut ended_rx) = mpsc::unbounded_channel::<String>();
        // Conversations with a send in flight, each with the jobs waiting behind it.
        let mut busy: HashMap<String, VecDeque<OutboxJob>> = HashMap::new();
        let mut waiting = 0usize;
        loop {
            tokio::select! {
                biased;
                Some(conv) = ended_rx.recv() => {
                    match busy.get_mut(&conv).and_then(VecDeque::pop_front) {
                        Some(next) => {
                            waiting -= 1;
                            if !this.start(next, &ended_tx).await {
                                return;
                            }
                        }
                        None => {
                            busy.remove(&conv);
                        }
                    }
                }
                job = rx.recv(), if waiting < this.cfg.queue_capacity => {
                    let Some(job) = job else { return };
                    if let Some(line) = busy.get_mut(&job.conversation_id) {
                        line.push_back(job);
                        waiting += 1;
                        continue;
                    }
                    busy.insert(job.conversation_id.clone(), VecDeque::new());
                    if !this.start(job, &ended_tx).await {
                        return;
                    }
                }
            }
        }
    }

    /// Sends `job` on a task of its own once a permit is free, and names its conversation on
    /// `ended` when the outcome is recorded. False when the worker is shutting down.
    async fn start(
        self: &Arc<Self>,
        job: OutboxJob,
        ended: &mpsc::UnboundedSender<String>,
    ) -> bool {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return false;
        };
        let worker = self.clone();
        let ended = ended.clone();
        let mut set = self.deliveries.lock();
        while set.try_join_next().is_some() {}
        set.spawn(async move {
            let conv = job.conversation_id.clone();
            worker.deliver(job).await;
            drop(permit);
            let _ = ended.send(conv);
        });
        true
    }

    async fn deliver(&self, job: OutboxJob) {
        let outcome = self.send_with_retries(&job).await;
        let conv = job.conversation_id.clone();
        let seq = job.seq;
        let res = self
            .ctx
            .ask(&conv, None, |reply| ConversationMsg::SendOutcome {
                seq,
                outcome: outcome.clone(),
                reply,
            })
            .await;
        if let Err(e) = res {
            tracing::error!(conversation = %conv, seq, error = %e, "cannot record send outcome; it will be retried after restart");
        }
    }

    async fn send_with_retries(&self, job: &OutboxJob) -> Result<String, MessageError> {
        let message_id = job.message_id();
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.bucket.take().await;
            let started = Instant::now();
            let res = self
                .graph
                .send_text(&job.number, &job.to, &job.text, &message_id)
                .await;
            metrics::histogram!(m::GRAPH_DURATION).record(started.elapsed().as_secs_f64());
            match res {
                Ok(wamid) => return Ok(wamid),
                Err(SendError::Transient(reason)) if attempt < self.cfg.max_attempts => {
                    metrics::counter!(m::OUTBOUND_RETRIES).increment(1);
                    tracing::debug!(%message_id, attempt, %reason, "transient send failure; retrying");
                    tokio::time::sleep(backoff(&self.cfg, attempt)).await;
                }
                Err(SendError::Transient(reason)) => {
                    return Err(MessageError {
                        code: leading_code(&reason).unwrap_or(0),
                        title: format!("gave up after {attempt} attempts: {reason}"),
                    })
                }
                Err(SendError::WindowClosed { code, title }) => {
                    return Err(MessageError {
                        code,
                        title: format!("window_closed: {title}"),
                    })
                }
                Err(SendError::Permanent { code, title }) => {
                    return Err(MessageError { code, title })
                }
            }
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
    fn leading_code_parses() {
        assert_eq!(leading_code("(130429) Rate limit hit"), Some(130429));
        assert_eq!(leading_code("HTTP 500"), None);
    }
}
