//! Status callbacks: for every send the fake Graph API accepted, post `sent`, `delivered` and
//! `read` status webhooks to the broker, as Meta does.
//!
//! Each accepted send schedules three callbacks a few tens of milliseconds apart, the first
//! `--status-delay-ms` after the Graph API accepted the send (0 makes them race the broker's
//! handling of the Graph API's answer, as Meta's sometimes do); in about one
//! case in five the `sent` callback is held back until after `read`, to exercise the contract's
//! "statuses only move forward; a late `sent` never overwrites `delivered`". Due callbacks are
//! batched (up to 20 per webhook, grouped per number into changes) and delivered through the same
//! `LoadCtx` as the scheduled load (same signing, same redelivery rules), at most 8 at a time.
//! Invariant: the poster only stops once told to finish *and* nothing is left to post (or the
//! finish deadline passed, in which case the remainder is counted as not sent).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

use crate::fake_graph::SentNotice;
use crate::load::{LoadCtx, Tracker};
use crate::webhook::{OutStatus, StatusItem};

const BATCH: usize = 20;

/// Handle of the running poster.
pub struct StatusPoster {
    finish: watch::Sender<Option<Instant>>,
    task: JoinHandle<()>,
}

impl StatusPoster {
    /// `delay`: when the first callback (`sent`) is due after the Graph API accepted the send;
    /// `delivered` follows 30 ms later, `read` 70 ms later, a late `sent` 120 ms later.
    pub fn start(
        ctx: Arc<LoadCtx>,
        notices: mpsc::UnboundedReceiver<SentNotice>,
        seed: u64,
        delay: Duration,
    ) -> StatusPoster {
        let (finish, finish_rx) = watch::channel(None);
        let task = tokio::spawn(run(ctx, notices, finish_rx, seed, delay));
        StatusPoster { finish, task }
    }

    /// Posts what is still pending (until `deadline`), then stops.
    pub async fn finish(self, deadline: Instant) {
        let _ = self.finish.send(Some(deadline));
        let _ = tokio::time::timeout_at(deadline + Duration::from_secs(15), self.task).await;
    }
}

type Due = Reverse<(Instant, u64)>;

async fn run(
    ctx: Arc<LoadCtx>,
    mut notices: mpsc::UnboundedReceiver<SentNotice>,
    mut finish: watch::Receiver<Option<Instant>>,
    seed: u64,
    delay: Duration,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut heap: BinaryHeap<Due> = BinaryHeap::new();
    let mut items: std::collections::HashMap<u64, StatusItem> = Default::default();
    let mut next_key = 0u64;
    let sem = Arc::new(Semaphore::new(8));
    let inflight = Arc::new(Tracker::default());
    let mut notices_open = true;

    loop {
        let finish_at = *finish.borrow();
        if let Some(deadline) = finish_at {
            if heap.is_empty() && (notices.is_empty() || !notices_open) {
                break;
            }
            if Instant::now() >= deadline {
                ctx.stats
                    .counters
                    .add("statuses_not_sent", heap.len() as u64);
                break;
            }
        }
        let next_due = heap.peek().map(|Reverse((t, _))| *t);
        tokio::select! {
            n = notices.recv(), if notices_open => match n {
                Some(n) => {
                    let now = Instant::now();
                    let late_sent = rng.gen_bool(0.2);
                    let plan = [
                        (OutStatus::Sent, if late_sent { 120 } else { 0 }),
                        (OutStatus::Delivered, 30),
                        (OutStatus::Read, 70),
                    ];
                    for (status, ms) in plan {
                        let jitter = rng.gen_range(0..10);
                        let due = now + delay + Duration::from_millis(ms + jitter);
                        heap.push(Reverse((due, next_key)));
                        items.insert(next_key, StatusItem {
                            phone_number_id: n.phone_number_id.clone(),
                            wamid: n.wamid.clone(),
                            recipient: n.recipient.clone(),
                            status,
                        });
                        next_key += 1;
                    }
                }
                None => notices_open = false,
            },
            _ = async {
                match next_due {
                    Some(t) => sleep_until(t).await,
                    None => std::future::pending::<()>().await,
                }
            } => {
                let now = Instant::now();
                let mut batch = Vec::new();
                let mut first_due = now;
                while let Some(Reverse((t, key))) = heap.peek().copied() {
                    if t > now || batch.len() >= BATCH {
                        break;
                    }
                    heap.pop();
                    if batch.is_empty() {
                        first_due = t;
                    }
                    if let Some(it) = items.remove(&key) {
                        batch.push(it);
                    }
                }
                if !batch.is_empty() {
                    let wh = Arc::new(ctx.gen.statuses(&batch, &mut rng));
                    let Ok(permit) = sem.clone().acquire_owned().await else { break };
                    let guard = inflight.enter();
                    let ctx = ctx.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let _guard = guard;
                        ctx.deliver(wh, first_due).await;
                    });
                }
            },
            r = finish.changed() => if r.is_err() { break },
        }
    }
    let deadline = (*finish.borrow()).unwrap_or_else(Instant::now);
    inflight
        .wait_idle(deadline.max(Instant::now()) + Duration::from_secs(11))
        .await;
}
