//! The webhook load driver: open-loop scheduling, closed-loop workers, redeliveries, and the
//! ledger of what the target acknowledged.
//!
//! Invariants:
//! - Open loop: request `i` has intended send time `start + i / rate`, fixed before anything is
//!   sent. Latency is always measured from that intended time, so when the target (or our own
//!   `--connections` limit) holds requests back, the waiting shows up in the latency instead of
//!   silently lowering the offered rate (no coordinated omission). Closed loop (rate 0): each of
//!   `--connections` workers sends the next request as soon as the previous one is answered, and
//!   the intended time is the actual send time.
//! - Only an HTTP 200 acknowledges a webhook. Only then are its wamids marked acknowledged in the
//!   `Ledger` and its body becomes eligible for byte-for-byte redelivery (`--duplicate-ratio`).
//! - A webhook that failed with a transport error, timeout, 408/429 or 5xx is delivered again
//!   later with back-off (as Meta does), up to `--redeliveries` times and never after the
//!   give-up deadline; redeliveries count separately and are not in the scheduled latency.
//! - Every wamid ever generated is registered in the ledger, acknowledged or not, so the audit
//!   can also catch messages stored twice that were never acknowledged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use dashmap::DashMap;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::time::{sleep, sleep_until, Instant};

use crate::http1::{Answer, Http1Pool};
use crate::outcome::{backoff, error_kind, retry_after, retryable_status, status_kind};
use crate::stats::{lock, Counters, Latency};
use crate::webhook::{Generator, InboundRef, Kind, OutStatus, Webhook};

/// Counts in-flight background tasks so the run can wait for them with a deadline.
#[derive(Default)]
pub struct Tracker {
    n: AtomicUsize,
}

/// Held by a tracked task; dropping it marks the task done.
pub struct TrackGuard(Arc<Tracker>);

impl Drop for TrackGuard {
    fn drop(&mut self) {
        self.0.n.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Tracker {
    pub fn enter(self: &Arc<Self>) -> TrackGuard {
        self.n.fetch_add(1, Ordering::AcqRel);
        TrackGuard(self.clone())
    }

    pub fn active(&self) -> usize {
        self.n.load(Ordering::Acquire)
    }

    /// Waits until no tracked task is running, or the deadline passes. True when idle.
    pub async fn wait_idle(&self, deadline: Instant) -> bool {
        loop {
            if self.active() == 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What happened to each generated inbound message.
#[derive(Debug, Clone, Copy)]
pub struct InboundState {
    pub customer: usize,
    pub acked: bool,
}

/// Every generated inbound wamid and whether a 200 acknowledged it.
pub struct Ledger {
    map: Sharded<InboundState>,
}

/// Ledgers grow to millions of entries; one big map would stall every sender for tens of
/// milliseconds each time it doubles (seen as send lag). Shards resize one small part at a time.
type Sharded<V> = DashMap<String, V>;

fn sharded<V>() -> Sharded<V> {
    DashMap::with_shard_amount(64)
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger { map: sharded() }
    }
}

impl Ledger {
    pub fn register(&self, msgs: &[InboundRef]) {
        for r in msgs {
            self.map.entry(r.wamid.clone()).or_insert(InboundState {
                customer: r.customer,
                acked: false,
            });
        }
    }

    pub fn ack(&self, msgs: &[InboundRef]) {
        for r in msgs {
            self.map
                .entry(r.wamid.clone())
                .or_insert(InboundState {
                    customer: r.customer,
                    acked: false,
                })
                .acked = true;
        }
    }

    pub fn snapshot(&self) -> HashMap<String, InboundState> {
        snapshot(&self.map)
    }
}

/// Status callbacks of one outbound wamid that the broker acknowledged.
#[derive(Debug, Clone, Copy)]
pub struct StatusAcks {
    /// The highest acknowledged status.
    pub max: OutStatus,
    /// When `sent`, `delivered`, `read` were first acknowledged.
    pub at: [Option<Instant>; 3],
}

impl StatusAcks {
    pub fn new(max: OutStatus) -> Self {
        StatusAcks { max, at: [None; 3] }
    }
}

/// Acknowledged status callbacks per outbound wamid.
pub struct StatusLedger {
    map: Sharded<StatusAcks>,
}

impl Default for StatusLedger {
    fn default() -> Self {
        StatusLedger { map: sharded() }
    }
}

fn snapshot<V: Clone>(map: &Sharded<V>) -> HashMap<String, V> {
    map.iter()
        .map(|e| (e.key().clone(), e.value().clone()))
        .collect()
}

impl StatusLedger {
    fn ack(&self, wamid: &str, st: OutStatus) {
        let mut e = self
            .map
            .entry(wamid.to_string())
            .or_insert_with(|| StatusAcks::new(st));
        if st > e.max {
            e.max = st;
        }
        let slot = &mut e.at[st as usize - 1];
        if slot.is_none() {
            *slot = Some(Instant::now());
        }
    }

    pub fn snapshot(&self) -> HashMap<String, StatusAcks> {
        snapshot(&self.map)
    }
}

/// A bounded reservoir of acknowledged message webhooks, for redeliveries.
#[derive(Default)]
struct DupPool {
    inner: Mutex<(Vec<Arc<Webhook>>, u64)>,
}

const DUP_POOL: usize = 4096;

impl DupPool {
    fn offer(&self, w: Arc<Webhook>) {
        let mut g = lock(&self.inner);
        g.1 += 1;
        if g.0.len() < DUP_POOL {
            g.0.push(w);
        } else {
            let j = rand::thread_rng().gen_range(0..g.1);
            if let Ok(j) = usize::try_from(j) {
                if j < DUP_POOL {
                    g.0[j] = w;
                }
            }
        }
    }

    fn pick<R: Rng>(&self, rng: &mut R) -> Option<Arc<Webhook>> {
        let g = lock(&self.inner);
        if g.0.is_empty() {
            None
        } else {
            Some(g.0[rng.gen_range(0..g.0.len())].clone())
        }
    }
}

/// Measurements of one load target.
#[derive(Default)]
pub struct LoadStats {
    /// Scheduled (first-attempt) webhooks answered 200, from intended send time.
    pub ack: Latency,
    /// Status-callback webhooks answered 200, from when they were due.
    pub status_ack: Latency,
    /// Scheduled webhooks: from intended send time to the request starting (the generator's
    /// own lateness: waiting for a connection or for CPU). Part of `ack`, reported so a reader
    /// can tell the generator's share of the latency from the broker's.
    pub send_lag: Latency,
    pub counters: Counters,
    /// Failures by `<what>.<kind>`, e.g. `webhook.connection_refused`, `redelivery.overloaded`.
    pub errors: Counters,
}

/// Result of failed delivery attempt.
enum Delivery {
    Acked,
    Failed {
        kind: String,
        retry: bool,
        retry_after: Option<Duration>,
    },
}

/// Shared state of a load run against one target (broker or baseline).
pub struct LoadCtx {
    pub gen: Arc<Generator>,
    client: reqwest::Client,
    /// The lean client for plain-http targets (see `http1`); reqwest otherwise.
    fast: Option<Http1Pool>,
    /// Full webhook URL.
    pub url: String,
    pub ledger: Ledger,
    pub status_ledger: StatusLedger,
    pool: DupPool,
    pub stats: LoadStats,
    duplicate_ratio: f64,
    redeliveries: u32,
    redeliver_sem: Arc<Semaphore>,
    /// In-flight redeliveries.
    pub redelivering: Arc<Tracker>,
    give_up_at: Mutex<Option<Instant>>,
    /// Told of each webhook's new messages the moment its 200 arrives (`fanout` times the
    /// events from there); set once, before the load starts.
    pub ack_observer: OnceLock<AckObserver>,
}

/// See [`LoadCtx::ack_observer`].
pub type AckObserver = Arc<dyn Fn(&[InboundRef]) + Send + Sync>;

impl LoadCtx {
    pub fn new(
        gen: Arc<Generator>,
        client: reqwest::Client,
        url: String,
        duplicate_ratio: f64,
        redeliveries: u32,
        connections: usize,
        timeout: Duration,
    ) -> Arc<Self> {
        Arc::new(LoadCtx {
            gen,
            client,
            // Scheduled load, redeliveries (each bounded by `connections`) and status callbacks
            // can all be in flight: keep that many connections rather than reopening them.
            fast: Http1Pool::for_url(&url, 2 * connections + 8, timeout),
            url,
            ledger: Ledger::default(),
            status_ledger: StatusLedger::default(),
            pool: DupPool::default(),
            stats: LoadStats::default(),
            duplicate_ratio,
            redeliveries,
            redeliver_sem: Arc::new(Semaphore::new(connections.max(1))),
            redelivering: Arc::new(Tracker::default()),
            give_up_at: Mutex::new(None),
            ack_observer: OnceLock::new(),
        })
    }

    /// No redelivery starts after `at`.
    pub fn set_give_up_at(&self, at: Instant) {
        *lock(&self.give_up_at) = Some(at);
    }

    /// The next scheduled webhook: a redelivery of an acknowledged body with probability
    /// `duplicate_ratio` (when one exists), otherwise new messages.
    pub fn next_webhook<R: Rng>(&self, rng: &mut R) -> Arc<Webhook> {
        if self.duplicate_ratio > 0.0 && rng.gen_bool(self.duplicate_ratio) {
            if let Some(w) = self.pool.pick(rng) {
                return Arc::new(w.as_duplicate());
            }
        }
        let w = self.gen.messages(rng);
        self.ledger.register(&w.messages);
        Arc::new(w)
    }

    async fn post(&self, wh: &Webhook) -> Delivery {
        match self.send(wh).await {
            Ok((StatusCode::OK, _)) => Delivery::Acked,
            Ok((status, retry_after)) => Delivery::Failed {
                kind: status_kind(status),
                retry: retryable_status(status),
                retry_after,
            },
            Err(kind) => Delivery::Failed {
                kind: kind.to_string(),
                retry: true,
                retry_after: None,
            },
        }
    }

    /// One POST of the webhook, through the lean client when the target allows it.
    async fn send(&self, wh: &Webhook) -> Answer {
        if let Some(fast) = &self.fast {
            let sig = ("X-Hub-Signature-256", wh.signature.as_str());
            return fast.post_json(sig, wh.body.clone()).await;
        }
        let resp = self
            .client
            .post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header("X-Hub-Signature-256", &wh.signature)
            .body(wh.body.clone())
            .send()
            .await
            .map_err(|e| error_kind(&e))?;
        let status = resp.status();
        let hint = retry_after(resp.headers());
        // Drain the body so the connection can be reused; the status decides.
        let _ = resp.bytes().await;
        Ok((status, hint))
    }

    fn on_ack(&self, wh: &Arc<Webhook>) {
        let c = &self.stats.counters;
        match wh.kind {
            Kind::Messages => {
                if let Some(observe) = self.ack_observer.get() {
                    observe(&wh.messages);
                }
                self.ledger.ack(&wh.messages);
                self.pool.offer(wh.clone());
                c.add("messages_acked", wh.messages.len() as u64);
            }
            Kind::Duplicate => c.inc("duplicates_acked"),
            Kind::Statuses => {
                for s in &wh.statuses {
                    self.status_ledger.ack(&s.wamid, s.status);
                }
                c.add("statuses_acked", wh.statuses.len() as u64);
            }
        }
    }

    fn label(kind: Kind) -> &'static str {
        match kind {
            Kind::Statuses => "status_webhook",
            _ => "webhook",
        }
    }

    /// First delivery attempt of a webhook whose intended send time was `intended`.
    pub async fn deliver(self: &Arc<Self>, wh: Arc<Webhook>, intended: Instant) {
        let c = &self.stats.counters;
        let label = Self::label(wh.kind);
        c.inc(&format!("{label}s_sent"));
        if wh.kind == Kind::Duplicate {
            c.inc("duplicates_sent");
        }
        if wh.kind != Kind::Statuses {
            let lag = Instant::now().saturating_duration_since(intended);
            self.stats.send_lag.record(lag);
        }
        match self.post(&wh).await {
            Delivery::Acked => {
                let lat = intended.elapsed();
                if wh.kind == Kind::Statuses {
                    self.stats.status_ack.record(lat);
                } else {
                    self.stats.ack.record(lat);
                }
                c.inc(&format!("{label}s_acked"));
                self.on_ack(&wh);
            }
            Delivery::Failed {
                kind,
                retry,
                retry_after,
            } => {
                self.stats.errors.inc(&format!("{label}.{kind}"));
                // A failed redelivery of an acknowledged body needs no further redelivery.
                if retry && wh.kind != Kind::Duplicate {
                    self.spawn_redelivery(wh, 0, retry_after);
                }
            }
        }
    }

    fn spawn_redelivery(self: &Arc<Self>, wh: Arc<Webhook>, attempt: u32, hint: Option<Duration>) {
        let c = &self.stats.counters;
        if attempt >= self.redeliveries {
            c.inc("redeliveries_given_up");
            return;
        }
        let guard = self.redelivering.enter();
        let ctx = self.clone();
        tokio::spawn(async move {
            let _guard = guard;
            let wait = hint
                .map(|h| h.max(Duration::from_millis(50)))
                .unwrap_or_else(|| backoff(attempt));
            let give_up = *lock(&ctx.give_up_at);
            if give_up.is_some_and(|g| Instant::now() + wait > g) {
                ctx.stats.counters.inc("redeliveries_given_up");
                return;
            }
            sleep(wait).await;
            let Ok(_permit) = ctx.redeliver_sem.clone().acquire_owned().await else {
                return;
            };
            let c = &ctx.stats.counters;
            c.inc("redeliveries_sent");
            match ctx.post(&wh).await {
                Delivery::Acked => {
                    c.inc("redeliveries_acked");
                    ctx.on_ack(&wh);
                }
                Delivery::Failed {
                    kind,
                    retry,
                    retry_after,
                } => {
                    ctx.stats.errors.inc(&format!("redelivery.{kind}"));
                    if retry {
                        ctx.spawn_redelivery(wh.clone(), attempt + 1, retry_after);
                    }
                }
            }
        });
    }
}

/// Summary of the scheduled part of a load run.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    /// `open_loop` or `closed_loop`.
    pub mode: &'static str,
    /// Requested rate (open loop), requests/s.
    pub offered_rate: Option<f64>,
    /// Requests the schedule asked for (open loop) or that were sent (closed loop).
    pub scheduled: u64,
    /// Requests actually sent on schedule.
    pub sent: u64,
    /// Scheduled requests never sent because the backlog outlived the deadline.
    pub not_sent: u64,
    /// First-attempt 200s.
    pub acked: u64,
    /// From the first intended send time to the last scheduled answer, seconds.
    pub elapsed_s: f64,
    /// `acked / elapsed_s`.
    pub achieved_rate: f64,
}

impl LoadSummary {
    /// The summary of two runs of the same mode one after the other (rounds of one target):
    /// counts and elapsed time add up, and the achieved rate is recomputed over the sum.
    pub fn merge(self, next: LoadSummary) -> LoadSummary {
        let acked = self.acked + next.acked;
        let elapsed_s = self.elapsed_s + next.elapsed_s;
        LoadSummary {
            mode: self.mode,
            offered_rate: self.offered_rate,
            scheduled: self.scheduled + next.scheduled,
            sent: self.sent + next.sent,
            not_sent: self.not_sent + next.not_sent,
            acked,
            elapsed_s,
            achieved_rate: if elapsed_s > 0.0 {
                acked as f64 / elapsed_s
            } else {
                0.0
            },
        }
    }
}

/// Open loop: `rate` requests/s for `duration`, at most `connections` in flight. Scheduled
/// requests still waiting for a connection at `duration + backlog` are not sent.
pub async fn open_loop(
    ctx: Arc<LoadCtx>,
    rate: f64,
    duration: Duration,
    connections: usize,
    seed: u64,
    backlog: Duration,
) -> LoadSummary {
    let mut rng = StdRng::seed_from_u64(seed);
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let sem = Arc::new(Semaphore::new(connections.max(1)));
    let inflight = Arc::new(Tracker::default());
    let start = Instant::now() + Duration::from_millis(5);
    let stop_at = start + duration + backlog;
    let acked_before = ctx.stats.counters.get("webhooks_acked");
    let mut sent = 0u64;
    for i in 0..total {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        if intended > Instant::now() {
            sleep_until(intended).await;
        }
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = sleep_until(stop_at) => break,
        };
        let wh = ctx.next_webhook(&mut rng);
        let guard = inflight.enter();
        let c = ctx.clone();
        sent += 1;
        tokio::spawn(async move {
            let _permit = permit;
            let _guard = guard;
            c.deliver(wh, intended).await;
        });
    }
    let not_sent = total - sent;
    if not_sent > 0 {
        ctx.stats.counters.add("not_sent", not_sent);
        ctx.stats.errors.add("webhook.not_sent_backlog", not_sent);
    }
    // Answers are bounded by the request timeout; the extra deadline is only a safety net.
    inflight.wait_idle(stop_at + Duration::from_secs(60)).await;
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    let acked = ctx.stats.counters.get("webhooks_acked") - acked_before;
    LoadSummary {
        mode: "open_loop",
        offered_rate: Some(rate),
        scheduled: total,
        sent,
        not_sent,
        acked,
        elapsed_s: elapsed,
        achieved_rate: acked as f64 / elapsed,
    }
}

/// Closed loop: `connections` workers each send back to back for `duration`.
pub async fn closed_loop(
    ctx: Arc<LoadCtx>,
    duration: Duration,
    connections: usize,
    seed: u64,
) -> LoadSummary {
    let start = Instant::now();
    let end = start + duration;
    let acked_before = ctx.stats.counters.get("webhooks_acked");
    let mut workers = Vec::with_capacity(connections);
    for w in 0..connections.max(1) {
        let ctx = ctx.clone();
        workers.push(tokio::spawn(async move {
            let mut rng =
                StdRng::seed_from_u64(seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let mut sent = 0u64;
            while Instant::now() < end {
                let wh = ctx.next_webhook(&mut rng);
                ctx.deliver(wh, Instant::now()).await;
                sent += 1;
            }
            sent
        }));
    }
    let mut sent = 0;
    for w in workers {
        sent += w.await.unwrap_or(0);
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    let acked = ctx.stats.counters.get("webhooks_acked") - acked_before;
    LoadSummary {
        mode: "closed_loop",
        offered_rate: None,
        scheduled: sent,
        sent,
        not_sent: 0,
        acked,
        elapsed_s: elapsed,
        achieved_rate: acked as f64 / elapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_summaries_add_counts_and_recompute_the_rate() {
        let part = |acked: u64, elapsed_s: f64| LoadSummary {
            mode: "closed_loop",
            offered_rate: None,
            scheduled: acked + 1,
            sent: acked + 1,
            not_sent: 1,
            acked,
            elapsed_s,
            achieved_rate: acked as f64 / elapsed_s,
        };
        // 1000/s for 1 s and 3000/s for 3 s: 2500/s over 4 s, not the mean of the two rates.
        let m = part(1000, 1.0).merge(part(9000, 3.0));
        assert_eq!(
            (m.scheduled, m.sent, m.not_sent, m.acked),
            (10_002, 10_002, 2, 10_000)
        );
        assert!((m.elapsed_s - 4.0).abs() < 1e-9);
        assert!((m.achieved_rate - 2500.0).abs() < 1e-9);
        assert_eq!(part(0, 0.0).merge(part(0, 0.0)).achieved_rate, 0.0);
    }

    #[test]
    fn ledger_tracks_acks() {
        let l = Ledger::default();
        let a = InboundRef {
            wamid: "w1".into(),
            customer: 3,
        };
        let b = InboundRef {
            wamid: "w2".into(),
            customer: 4,
        };
        l.register(&[a.clone(), b]);
        l.ack(&[a]);
        let s = l.snapshot();
        assert!(s["w1"].acked);
        assert!(!s["w2"].acked);
        assert_eq!(s["w2"].customer, 4);
    }

    #[test]
    fn status_ledger_keeps_highest() {
        let l = StatusLedger::default();
        l.ack("x", OutStatus::Read);
        l.ack("x", OutStatus::Sent);
        let s = l.snapshot()["x"];
        assert_eq!(s.max, OutStatus::Read);
        assert!(s.at[0].is_some() && s.at[1].is_none() && s.at[2].is_some());
    }

    #[tokio::test]
    async fn tracker_waits() {
        let t = Arc::new(Tracker::default());
        let g = t.enter();
        assert!(
            !t.wait_idle(Instant::now() + Duration::from_millis(30))
                .await
        );
        drop(g);
        assert!(
            t.wait_idle(Instant::now() + Duration::from_millis(30))
                .await
        );
    }
}
