//! `--sse-agents N --teams T`: a thousand agents' event streams, each checking it saw every
//! inbound message its team may see, timed from the webhook's 200.
//!
//! Set-up: the generated config routes number i to `team{(i % T) + 1}` (`broker_config`), and a
//! customer always writes to one number, so the generator knows each message's team. Before the
//! load, N agents `fan1..N` (team `1 + (i - 1) % T`, role `agent`) are created through the admin
//! API (`POST /api/v1/agents`, the token comes back in the answer; an agent that already exists,
//! on a reused `--data-dir`, gets a fresh token instead) and each opens one `GET /api/v1/events`
//! stream; all streams share one connection pool and run on a runtime of their own
//! (thread `lt-fanout`, 2 workers), so reading them does not delay the generator's schedule.
//! Nobody claims (`--agents 0`), so every conversation stays queued and every message of team t
//! is due to each of team t's streams, and to no other.
//!
//! Measured:
//! - per event: from the 200 of the webhook that carried the message (as the generator saw it)
//!   to the `message.created` event naming its wamid arriving on a stream. An event that arrives
//!   before its 200 did counts as 0 and is counted (`before_ack`): the broker publishes when the
//!   message is durable, which is also when it answers.
//! - delivered / due: due = for each message a 200 acknowledged, one per stream of its team;
//!   delivered = those a stream saw. `lagged` events (and the events they say were missed) are
//!   counted apart, as are duplicates and `foreign` ones (a message of another team: a
//!   visibility bug).
//!
//! Bounds: streams ≤ 10,000 (`cli`); the ack table is fixed-size chunks allocated on first use
//! (at most [`MAX_MESSAGES`] messages, beyond which messages are not tracked and counted as
//! `untracked`); each stream's "seen" set is a bitset over message numbers (1 bit per message of
//! the run per stream: 1,000 streams × 1M messages = 125 MB); a stream's unparsed input is one
//! event (≤ [`MAX_EVENT`] bytes, beyond which it is dropped and counted).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use memchr::memmem;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::api::ApiClient;
use crate::broker_config::{fanout_team_id, team_of_number};
use crate::load::AckObserver;
use crate::stats::{Latency, LatencySummary};
use crate::webhook::{InboundRef, Population};

const CHUNK_BITS: u32 = 16;
const CHUNK: usize = 1 << CHUNK_BITS;
const CHUNKS: usize = 4096;
/// Messages the ack table can track (268M: far beyond any run's length).
pub const MAX_MESSAGES: u64 = (CHUNK * CHUNKS) as u64;
/// Longest event a stream buffers before dropping it (the broker's events are a few KiB).
const MAX_EVENT: usize = 1 << 20;
/// Latencies a stream keeps before adding them to the shared histogram (one lock per batch).
const LATENCY_BATCH: usize = 4096;
/// Agents created at once at set-up.
const CREATE_CONCURRENCY: usize = 16;

/// When each message's 200 arrived and its team: `((nanos since origin + 1) << 8) | team`,
/// 0 while not acknowledged.
struct AckTable {
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
}

impl AckTable {
    fn new() -> Self {
        AckTable {
            chunks: (0..CHUNKS).map(|_| OnceLock::new()).collect(),
        }
    }

    fn slot(&self, idx: u64) -> Option<&AtomicU64> {
        let chunk = self.chunks.get((idx >> CHUNK_BITS) as usize)?;
        let chunk =
            chunk.get_or_init(|| (0..CHUNK).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>());
        chunk.get((idx as usize) & (CHUNK - 1))
    }

    /// Records the first 200 of message `idx`; false when it was recorded already.
    fn record(&self, idx: u64, nanos: u64, team: u8) -> bool {
        let Some(slot) = self.slot(idx) else {
            return false;
        };
        let v = ((nanos + 1) << 8) | u64::from(team);
        slot.compare_exchange(0, v, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// (nanos since origin, team) of an acknowledged message.
    fn get(&self, idx: u64) -> Option<(u64, u8)> {
        let chunk = self.chunks.get((idx >> CHUNK_BITS) as usize)?.get()?;
        let v = chunk
            .get((idx as usize) & (CHUNK - 1))?
            .load(Ordering::Acquire);
        (v != 0).then(|| ((v >> 8) - 1, (v & 0xff) as u8))
    }
}

/// The message number of one of this run's wamids (`{prefix}{n}`).
fn message_index(prefix: &[u8], wamid: &[u8]) -> Option<u64> {
    let digits = wamid.strip_prefix(prefix)?;
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

struct Shared {
    acks: AckTable,
    origin: Instant,
    /// `"wamid":"` followed by this run's wamid prefix.
    needle: Vec<u8>,
    prefix: Vec<u8>,
    latency: Latency,
    connected: AtomicUsize,
    /// Acknowledged messages per team.
    acked: Vec<AtomicU64>,
    /// First sightings of a message on a stream, all streams (to know when to stop waiting).
    sightings: AtomicU64,
    untracked: AtomicU64,
}

impl Shared {
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX >> 9)
    }
}

/// What one stream saw.
#[derive(Default)]
struct Tally {
    team: usize,
    seen: Vec<u64>,
    events: u64,
    message_events: u64,
    duplicates: u64,
    /// First sightings (added to `Shared::sightings` once per chunk).
    fresh: u64,
    before_ack: u64,
    lagged_events: u64,
    lagged_missed: u64,
    oversized: u64,
    error: Option<String>,
}

impl Tally {
    /// Marks `idx` seen; false when it was seen before.
    fn see(&mut self, idx: u64) -> bool {
        let (w, b) = ((idx / 64) as usize, idx % 64);
        if self.seen.len() <= w {
            self.seen.resize(w + 1, 0);
        }
        let fresh = self.seen[w] & (1 << b) == 0;
        self.seen[w] |= 1 << b;
        fresh
    }

    fn seen_indices(&self) -> impl Iterator<Item = u64> + '_ {
        self.seen.iter().enumerate().flat_map(|(w, &bits)| {
            (0..64u64)
                .filter(move |b| bits & (1 << b) != 0)
                .map(move |b| w as u64 * 64 + b)
        })
    }
}

/// The fan-out figures of a run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct FanoutReport {
    pub streams: usize,
    pub teams: usize,
    /// Streams whose request was answered 200 before the load started.
    pub connected: usize,
    /// Messages a 200 acknowledged, each due to every stream of its team.
    pub messages_acked: u64,
    pub due: u64,
    pub delivered: u64,
    /// delivered / due.
    pub delivered_share: f64,
    /// 200 → `message.created` on a stream, per delivered event.
    pub latency_ms: LatencySummary,
    /// Events that arrived before the generator saw their webhook's 200 (counted as 0 ms).
    pub before_ack: u64,
    pub events: u64,
    pub message_events: u64,
    pub duplicates: u64,
    /// Messages of another team seen on a stream (a visibility bug if ever above 0).
    pub foreign: u64,
    /// Messages seen whose webhook no 200 acknowledged (not due; not counted as delivered).
    pub seen_unacked: u64,
    pub lagged_events: u64,
    pub lagged_missed: u64,
    pub oversized_events: u64,
    pub untracked_messages: u64,
    /// Streams that ended with an error before the end, by message.
    pub stream_errors: std::collections::BTreeMap<String, u64>,
    /// Broker CPU seconds during the load and drain, and per delivered event.
    pub broker_cpu_s: Option<f64>,
    pub broker_cpu_us_per_event: Option<f64>,
}

/// The running streams.
pub struct Fanout {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<Tally>>,
    per_team: Vec<usize>,
    stop: watch::Sender<bool>,
    teams: usize,
}

impl Fanout {
    /// Creates `streams` agents over `teams` teams through the admin API and opens their
    /// event streams at `agent_base` (`event_types` as `?types=`).
    pub async fn start(
        admin: &ApiClient,
        admin_token: &str,
        agent_base: &str,
        streams: usize,
        teams: usize,
        event_types: Option<&str>,
        wamid_prefix: &str,
    ) -> anyhow::Result<Fanout> {
        let teams = teams.clamp(1, 100);
        let tokens = create_agents(admin, admin_token, streams, teams).await?;
        let mut needle = b"\"wamid\":\"".to_vec();
        needle.extend_from_slice(wamid_prefix.as_bytes());
        let shared = Arc::new(Shared {
            acks: AckTable::new(),
            origin: Instant::now(),
            needle,
            prefix: wamid_prefix.as_bytes().to_vec(),
            latency: Latency::new(),
            connected: AtomicUsize::new(0),
            acked: (0..teams).map(|_| AtomicU64::new(0)).collect(),
            sightings: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("lt-fanout")
            .enable_all()
            .build()?;
        let client = {
            let _g = rt.enter();
            // No timeout: a stream lasts the whole run.
            crate::outcome::client(streams + 8, None)?
        };
        let url = match event_types {
            Some(t) => format!("{agent_base}/api/v1/events?types={t}"),
            None => format!("{agent_base}/api/v1/events"),
        };
        let (stop, stop_rx) = watch::channel(false);
        let mut per_team = vec![0; teams];
        let tasks = tokens
            .into_iter()
            .map(|(token, team)| {
                per_team[team] += 1;
                rt.spawn(follow(
                    client.clone(),
                    url.clone(),
                    token,
                    team,
                    shared.clone(),
                    stop_rx.clone(),
                ))
            })
            .collect();
        Ok(Fanout {
            rt,
            shared,
            tasks,
            per_team,
            stop,
            teams,
        })
    }

    /// Waits until every stream is open (or `deadline`); returns how many are.
    pub async fn wait_connected(&self, deadline: tokio::time::Instant) -> usize {
        let want = self.tasks.len();
        loop {
            let n = self.shared.connected.load(Ordering::Acquire);
            if n >= want || tokio::time::Instant::now() >= deadline {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the load generator calls on each webhook's 200 (see `LoadCtx::ack_observer`).
    pub fn observer(&self, pop: Arc<Population>) -> AckObserver {
        let sh = self.shared.clone();
        let teams = self.teams;
        Arc::new(move |msgs: &[InboundRef]| {
            let now = sh.nanos(Instant::now());
            for m in msgs {
                let (Some(idx), Some(c)) = (
                    message_index(&sh.prefix, m.wamid.as_bytes()),
                    pop.customers.get(m.customer),
                ) else {
                    sh.untracked.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let team = team_of_number(c.number, teams);
                if idx >= MAX_MESSAGES {
                    sh.untracked.fetch_add(1, Ordering::Relaxed);
                } else if sh.acks.record(idx, now, team as u8) {
                    sh.acked[team].fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    }

    fn due(&self) -> u64 {
        self.shared
            .acked
            .iter()
            .zip(&self.per_team)
            .map(|(a, &n)| a.load(Ordering::Acquire) * n as u64)
            .sum()
    }

    /// Waits until the streams have seen as many first sightings as are due (or `deadline`),
    /// closes them and counts.
    pub async fn finish(self, deadline: tokio::time::Instant) -> FanoutReport {
        loop {
            let due = self.due();
            if self.shared.sightings.load(Ordering::Acquire) >= due
                || tokio::time::Instant::now() >= deadline
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = self.stop.send(true);
        let mut r = FanoutReport {
            streams: self.tasks.len(),
            teams: self.teams,
            connected: self.shared.connected.load(Ordering::Acquire),
            messages_acked: self
                .shared
                .acked
                .iter()
                .map(|a| a.load(Ordering::Acquire))
                .sum(),
            due: self.due(),
            untracked_messages: self.shared.untracked.load(Ordering::Acquire),
            ..Default::default()
        };
        let tallies = futures_util::future::join_all(self.tasks).await;
        for t in tallies {
            let t = match t {
                Ok(t) => t,
                Err(e) => {
                    *r.stream_errors.entry(format!("task: {e}")).or_default() += 1;
                    continue;
                }
            };
            if let Some(e) = &t.error {
                *r.stream_errors.entry(e.clone()).or_default() += 1;
            }
            r.events += t.events;
            r.message_events += t.message_events;
            r.duplicates += t.duplicates;
            r.before_ack += t.before_ack;
            r.lagged_events += t.lagged_events;
            r.lagged_missed += t.lagged_missed;
            r.oversized_events += t.oversized;
            for idx in t.seen_indices() {
                match self.shared.acks.get(idx) {
                    Some((_, team)) if usize::from(team) == t.team => r.delivered += 1,
                    Some(_) => r.foreign += 1,
                    None => r.seen_unacked += 1,
                }
            }
        }
        r.delivered_share = if r.due > 0 {
            r.delivered as f64 / r.due as f64
        } else {
            0.0
        };
        r.latency_ms = self.shared.latency.summary();
        self.rt.shutdown_background();
        r
    }
}

/// Creates agents `fan1..N` (or gives existing ones a fresh token); returns (token, team).
async fn create_agents(
    api: &ApiClient,
    admin_token: &str,
    n: usize,
    teams: usize,
) -> anyhow::Result<Vec<(String, usize)>> {
    let results: Vec<anyhow::Result<(String, usize)>> = futures_util::stream::iter(1..=n)
        .map(|i| async move {
            let id = format!("fan{i}");
            let team = (i - 1) % teams;
            let body = json!({
                "id": id,
                "name": format!("Fan-out agent {i}"),
                "teams": [fanout_team_id(team)],
                "role": "agent",
                "max_concurrent": 5,
            });
            let call = |method, path: String, body: Option<serde_json::Value>| async move {
                api.call(admin_token, method, &path, body.as_ref())
                    .await
                    .map_err(|e| anyhow::anyhow!("creating agent {i}: {e}"))
            };
            let (status, v) = call(Method::POST, "/api/v1/agents".into(), Some(body)).await?;
            let (status, v) = if status == StatusCode::CONFLICT {
                call(Method::POST, format!("/api/v1/agents/{id}/token"), None).await?
            } else {
                (status, v)
            };
            match v["token"].as_str() {
                Some(t) if status.is_success() => Ok((t.to_string(), team)),
                _ => anyhow::bail!("creating agent {id}: {status} {v}"),
            }
        })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Follows one stream until told to stop (or it ends).
async fn follow(
    client: reqwest::Client,
    url: String,
    token: String,
    team: usize,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Tally {
    let mut t = Tally {
        team,
        ..Default::default()
    };
    let mut resp = match client.get(&url).bearer_auth(&token).send().await {
        Ok(r) if r.status() == StatusCode::OK => r,
        Ok(r) => {
            t.error = Some(format!("answered {}", r.status()));
            return t;
        }
        Err(e) => {
            t.error = Some(crate::outcome::error_kind(&e).to_string());
            return t;
        }
    };
    sh.connected.fetch_add(1, Ordering::AcqRel);
    let boundary = memmem::Finder::new(b"\n\n");
    let needle = memmem::Finder::new(&sh.needle);
    let mut pending: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut latencies: Vec<u64> = Vec::with_capacity(LATENCY_BATCH);
    loop {
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = stop.changed() => break,
        };
        let chunk = match chunk {
            Ok(Some(c)) => c,
            Ok(None) => {
                if !*stop.borrow() {
                    t.error = Some("stream ended".into());
                }
                break;
            }
            Err(e) => {
                t.error = Some(crate::outcome::error_kind(&e).to_string());
                break;
            }
        };
        let arrived = Instant::now();
        let fresh = t.fresh;
        let mut scan = |buf: &[u8], t: &mut Tally| {
            let mut start = 0;
            while let Some(end) = boundary.find(&buf[start..]) {
                on_event(
                    &buf[start..start + end],
                    &needle,
                    arrived,
                    &sh,
                    t,
                    &mut latencies,
                );
                start += end + 2;
            }
            start
        };
        // A chunk that starts at an event's start (the broker writes whole events) is read
        // where it lies; only an unfinished tail is copied.
        if pending.is_empty() {
            let used = scan(&chunk, &mut t);
            pending.extend_from_slice(&chunk[used..]);
        } else {
            pending.extend_from_slice(&chunk);
            let used = scan(&pending, &mut t);
            pending.drain(..used);
        }
        // One shared counter update per chunk, not per event (1,000 readers share it).
        sh.sightings.fetch_add(t.fresh - fresh, Ordering::Relaxed);
        if pending.len() > MAX_EVENT {
            pending.clear();
            t.oversized += 1;
        }
        if latencies.len() >= LATENCY_BATCH {
            sh.latency.record_micros(&latencies);
            latencies.clear();
        }
    }
    sh.latency.record_micros(&latencies);
    t
}

fn on_event(
    event: &[u8],
    needle: &memmem::Finder<'_>,
    arrived: Instant,
    sh: &Shared,
    t: &mut Tally,
    latencies: &mut Vec<u64>,
) {
    if event.first() == Some(&b':') {
        // A keep-alive comment.
        return;
    }
    t.events += 1;
    if event.starts_with(b"event: message.created\n") {
        t.message_events += 1;
        let Some(at) = needle.find(event) else {
            return; // not one of this run's inbound messages
        };
        let from = at + b"\"wamid\":\"".len();
        let Some(len) = event[from..].iter().position(|&b| b == b'"') else {
            return;
        };
        let Some(idx) = message_index(&sh.prefix, &event[from..from + len]) else {
            return;
        };
        if !t.see(idx) {
            t.duplicates += 1;
            return;
        }
        t.fresh += 1;
        match sh.acks.get(idx) {
            Some((acked, _)) => {
                let now = sh.nanos(arrived);
                latencies.push(now.saturating_sub(acked) / 1000);
            }
            None => {
                t.before_ack += 1;
                latencies.push(0);
            }
        }
    } else if event.starts_with(b"event: lagged\n") {
        t.lagged_events += 1;
        let missed = memmem::find(event, b"\"missed\":")
            .map(|i| &event[i + b"\"missed\":".len()..])
            .map(|rest| {
                rest.iter()
                    .take_while(|b| b.is_ascii_digit())
                    .fold(0u64, |n, &d| {
                        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                    })
            })
            .unwrap_or(0);
        t.lagged_missed += missed;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_table_records_once_and_reads_back() {
        let a = AckTable::new();
        assert_eq!(a.get(5), None);
        assert!(a.record(5, 1234, 7));
        assert!(!a.record(5, 9999, 3), "the first 200 wins");
        assert_eq!(a.get(5), Some((1234, 7)));
        assert!(a.record(MAX_MESSAGES - 1, 0, 0));
        assert_eq!(a.get(MAX_MESSAGES - 1), Some((0, 0)));
        assert!(!a.record(MAX_MESSAGES, 1, 1), "beyond the table");
    }

    #[test]
    fn message_index_reads_only_this_runs_wamids() {
        assert_eq!(message_index(b"wamid.LTAB", b"wamid.LTAB42"), Some(42));
        assert_eq!(message_index(b"wamid.LTAB", b"wamid.LTCD42"), None);
        assert_eq!(message_index(b"wamid.LTAB", b"wamid.LTAB"), None);
        assert_eq!(message_index(b"wamid.LTAB", b"wamid.LTAB4x"), None);
    }

    #[test]
    fn events_are_counted_once_with_latency_and_lag() {
        let sh = Shared {
            acks: AckTable::new(),
            origin: Instant::now(),
            needle: b"\"wamid\":\"wamid.LTAB".to_vec(),
            prefix: b"wamid.LTAB".to_vec(),
            latency: Latency::new(),
            connected: AtomicUsize::new(0),
            acked: vec![AtomicU64::new(0)],
            sightings: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
        };
        assert!(sh.acks.record(3, 0, 0));
        let needle = memmem::Finder::new(&sh.needle);
        let mut t = Tally::default();
        let mut lat = Vec::new();
        let ev = b"event: message.created\ndata: {\"message\":{\"id\":\"m1\",\"wamid\":\"wamid.LTAB3\"}}";
        let at = sh.origin + Duration::from_millis(7);
        on_event(ev, &needle, at, &sh, &mut t, &mut lat);
        on_event(ev, &needle, at, &sh, &mut t, &mut lat);
        let early = b"event: message.created\ndata: {\"message\":{\"wamid\":\"wamid.LTAB4\"}}";
        on_event(early, &needle, at, &sh, &mut t, &mut lat);
        on_event(
            b"event: lagged\ndata: {\"missed\":12,\"type\":\"lagged\"}",
            &needle,
            at,
            &sh,
            &mut t,
            &mut lat,
        );
        on_event(b":", &needle, at, &sh, &mut t, &mut lat);
        assert_eq!((t.events, t.message_events, t.duplicates), (4, 3, 1));
        assert_eq!((t.before_ack, t.lagged_events, t.lagged_missed), (1, 1, 12));
        assert_eq!(lat, vec![7000, 0]);
        assert_eq!(t.seen_indices().collect::<Vec<_>>(), vec![3, 4]);
        assert_eq!(t.fresh, 2);
    }
}
