//! Read receipts with the typing indicator (`POST /api/v1/conversations/{id}/read`): the
//! customer's latest message is marked read at Meta and the customer sees the agent typing.
//!
//! A read receipt is not a message of the conversation: nothing of it is stored, and one lost to
//! a crash is harmless (the next one marks every earlier message read too), so it waits in
//! memory only. It still goes out through its number's token bucket (`mps`) and in-flight
//! permits, shared with the number's messages, so receipts never push the number over Meta's
//! throughput.
//!
//! Bounds: at most one receipt waits per conversation (a newer one takes the waiting one's place
//! and keeps its turn: it marks a later message, which marks the earlier one too), at most
//! `outbox.queue_capacity` conversations wait per number (beyond that a request is refused with
//! 503 `overloaded`), and each receipt is tried at most [`MAX_READ_ATTEMPTS`] times (transient
//! errors only; an ambiguous answer is not repeated, a refusal is final).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Notify, Semaphore};

use super::GraphSender;
use super::{backoff, Deliveries, TokenBucket};
use crate::config::OutboxConfig;
use crate::metrics as m;
use crate::whatsapp::graph::SendError;

/// Most tries of one read receipt (Meta throttling or a 5xx); after that it is dropped.
pub const MAX_READ_ATTEMPTS: u32 = 3;

/// The read receipts of one number waiting for their turn.
pub(super) struct Reads {
    state: Mutex<ReadQueue>,
    wake: Notify,
    capacity: usize,
}

#[derive(Default)]
struct ReadQueue {
    /// Conversations in the order their receipts were queued.
    order: VecDeque<String>,
    /// Each waiting conversation's wamid to mark.
    wamids: HashMap<String, String>,
}

/// Why a read receipt was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReadRefused {
    #[error("too many read receipts wait for this number")]
    Full,
    #[error("no outbox for this number")]
    UnknownNumber,
}

impl Reads {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(ReadQueue::default()),
            wake: Notify::new(),
            capacity,
        }
    }

    /// Queues a receipt for `wamid` of `conversation`, replacing one still waiting for it.
    pub(super) fn push(&self, conversation: &str, wamid: &str) -> Result<(), ReadRefused> {
        let outcome = {
            let mut st = self.state.lock();
            if let Some(w) = st.wamids.get_mut(conversation) {
                *w = wamid.to_string();
                "replaced"
            } else if st.order.len() >= self.capacity {
                metrics::counter!(m::READ_RECEIPTS, "outcome" => "refused").increment(1);
                return Err(ReadRefused::Full);
            } else {
                st.order.push_back(conversation.to_string());
                st.wamids
                    .insert(conversation.to_string(), wamid.to_string());
                "queued"
            }
        };
        metrics::counter!(m::READ_RECEIPTS, "outcome" => outcome).increment(1);
        self.wake.notify_one();
        Ok(())
    }

    fn pop(&self) -> Option<String> {
        let mut st = self.state.lock();
        let conv = st.order.pop_front()?;
        st.wamids.remove(&conv)
    }
}

/// What the read worker of one number shares with the number's message worker.
pub(super) struct ReadWorker<G> {
    pub graph: Arc<G>,
    pub cfg: OutboxConfig,
    pub number: String,
    pub bucket: Arc<TokenBucket>,
    pub permits: Arc<Semaphore>,
    pub deliveries: Deliveries,
    pub closing: Arc<AtomicBool>,
}

impl<G: GraphSender> ReadWorker<G> {
    /// Sends the number's receipts one token at a time, each on a task of its own holding an
    /// in-flight permit, until the outbox stops.
    pub(super) async fn run(self, reads: Arc<Reads>) {
        let this = Arc::new(self);
        loop {
            let Some(wamid) = reads.pop() else {
                reads.wake.notified().await;
                continue;
            };
            this.bucket.take().await;
            if this.closing.load(Ordering::Acquire) {
                return;
            }
            let Ok(permit) = this.permits.clone().acquire_owned().await else {
                return;
            };
            let worker = this.clone();
            let mut set = this.deliveries.lock();
            while set.try_join_next().is_some() {}
            set.spawn(async move {
                worker.send(&wamid).await;
                drop(permit);
            });
        }
    }

    async fn send(&self, wamid: &str) {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let res = self.graph.mark_read(&self.number, wamid).await;
            let outcome = match res {
                Ok(()) => "sent",
                Err(SendError::Transient(reason)) if attempt < MAX_READ_ATTEMPTS => {
                    tracing::debug!(number = %self.number, attempt, %reason, "read receipt refused for now; retrying");
                    tokio::time::sleep(backoff(&self.cfg, attempt)).await;
                    self.bucket.take().await;
                    if self.closing.load(Ordering::Acquire) {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::debug!(number = %self.number, attempt, error = %e, "read receipt not sent");
                    "failed"
                }
            };
            metrics::counter!(m::READ_RECEIPTS, "outcome" => outcome).increment(1);
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_receipt_waits_per_conversation_and_the_queue_is_bounded() {
        let reads = Reads::new(2);
        reads.push("c1", "w1").expect("queued");
        reads.push("c2", "w2").expect("queued");
        // A newer receipt of c1 takes the waiting one's place (and turn); no room for c3.
        reads.push("c1", "w3").expect("replaced");
        assert_eq!(reads.push("c3", "w4"), Err(ReadRefused::Full));
        assert_eq!(reads.pop().as_deref(), Some("w3"));
        assert_eq!(reads.pop().as_deref(), Some("w2"));
        assert_eq!(reads.pop(), None);
        reads.push("c3", "w4").expect("room again");
    }
}
