//! Simulated agents: presence, the SSE event stream, the claim race, replies and resolves.
//!
//! Each agent sets `PUT /api/v1/agents/me/presence {"status":"online"}`, opens
//! `GET /api/v1/events` and learns of conversations from it. For a queued, unassigned conversation
//! a deterministic subset of `--claim-race` agents (chosen by hashing the conversation id) races
//! to `POST .../claim`: in `paced` mode each agent keeps its own backlog of such conversations
//! (oldest first) and claims them one at a time, pausing after `capacity_reached` until one of
//! its conversations is done, so claim latency is the broker's and not the agents' own pile-up;
//! in `eager` mode every claim is sent the moment its event arrives. The winner replies
//! (`POST .../messages`, unique idempotency key, retried with the same key on transport errors
//! and 5xx), sometimes replays the same key to check idempotency, waits `--resolve-after-ms` and
//! resolves. After any disconnect (e.g. a broker crash) the agent reconnects with back-off, sets
//! presence again and re-reads the conversations it owns (every page) and the first page of the
//! queue, adopting any that the broker says it owns (a claim whose answer was lost); a `lagged`
//! event (the broker dropped events for a slow subscriber) triggers the same re-read.
//!
//! Events are notifications, not the current state: the broker publishes each conversation's
//! events in the order its changes were made, but a stream read behind a busy broker delivers them
//! seconds late (up to the broker's feed buffer plus the sockets' buffers), and a re-read after
//! `lagged` is newer than the events still queued behind it. So an event that says "assigned to
//! you" for a conversation the agent is not handling only makes the agent read that conversation
//! (`GET`); ownership is adopted from a read alone, and only from a read sent after the agent's
//! own last resolve of that conversation had been answered (an earlier read may show the
//! ownership it just gave up). Such events that a read contradicts are counted
//! (`stale_ownership_events`), as are `message.created` events whose sequence number went
//! backwards within one stream (`events_out_of_order`: the broker's order broken).
//!
//! The agents run on a single-threaded tokio runtime of their own (thread `lt-agents`) with their
//! own HTTP connections: they stand for people at other machines, and their requests and answers
//! must not wait behind the generator's webhook tasks, which would be the generator's lateness
//! counted as the broker's.
//!
//! Invariants the audit relies on:
//! - every successful claim, adoption and resolve is logged as an `OwnEvent` with the instants
//!   the request was sent and its answer received (for adoption: the read that showed it, or the
//!   last claim attempt before it whose answer was lost); when a resolve's outcome is unknown
//!   because an earlier attempt failed in
//!   transit, the end is logged from that earlier attempt, so a lost answer never looks like an
//!   owner who never let go;
//! - every 202 reply is logged once as a `ReplyRecord` with the broker's message id and the
//!   instant the 202 arrived;
//! - an agent handles a conversation at most once at a time (`handling` set), and never starts
//!   new work after `stop` begins; a paced agent starts no new claim after `stop_claiming`;
//! - a paced agent's backlog holds at most [`BACKLOG_MAX`] conversations (the oldest are dropped
//!   and counted as `agent.backlog.dropped`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::{sleep, Instant};

use crate::api::{error_code, seg, ApiClient, Conversation, Event};
use crate::load::{TrackGuard, Tracker};
use crate::outcome::{error_kind, status_kind};
use crate::sse::SseParser;
use crate::stats::{lock, Counters, Latency};

/// A conversation's ownership changed, as one agent observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnKind {
    /// `POST claim` answered 200.
    Claim,
    /// A read of the broker's state (`GET` of the conversation or a list page), sent after our
    /// last resolve of it was answered, showed it as ours without a successful claim answer.
    /// Events alone never make an adoption (see the module docs).
    Adopt,
    /// `POST resolve` answered 2xx (or its earlier, failed-in-transit attempt may have).
    Resolve,
}

/// How agents claim (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClaimMode {
    Paced,
    Eager,
}

impl ClaimMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ClaimMode::Paced => "paced",
            ClaimMode::Eager => "eager",
        }
    }
}

/// Bound of a paced agent's backlog of conversations to claim.
pub const BACKLOG_MAX: usize = 100_000;

/// Most conversations one event stream remembers the last message sequence of, for the
/// `events_out_of_order` check; past it the memory starts over (the check then misses a reorder
/// straddling the reset, never reports a false one).
const ORDER_TRACKED_MAX: usize = 200_000;

/// How long a paced agent at capacity waits for one of its conversations to end before asking
/// again (an end it missed, or a slot freed by the broker, e.g. a transfer away).
const CAPACITY_RETRY: Duration = Duration::from_millis(250);

/// One ownership observation.
#[derive(Debug, Clone)]
pub struct OwnEvent {
    pub conversation: String,
    pub agent: usize,
    pub kind: OwnKind,
    pub sent: Instant,
    pub recv: Instant,
}

/// A reply the broker accepted with 202.
#[derive(Debug, Clone)]
pub struct ReplyRecord {
    pub conversation: String,
    pub message_id: String,
    pub key: String,
    pub agent: usize,
    /// When the request that got the 202 was sent.
    pub requested_at: Instant,
    /// When its 202 arrived.
    pub accepted_at: Instant,
}

/// Settings of the agent fleet.
#[derive(Clone)]
pub struct AgentsConfig {
    pub api: ApiClient,
    pub tokens: Vec<String>,
    /// Known agent ids (same order as tokens), or empty to learn them from the broker.
    pub ids: Vec<String>,
    pub race: usize,
    pub mode: ClaimMode,
    /// `types` filter of the event stream (None: everything).
    pub event_types: Option<String>,
    pub resolve_after: Duration,
    pub replay_ratio: f64,
    pub run_id: String,
}

/// Measurements and logs shared by all agents.
pub struct AgentsShared {
    cfg: AgentsConfig,
    pub claim_latency: Latency,
    pub counters: Counters,
    /// Failures by `agent.<what>.<kind>`.
    pub errors: Counters,
    pub replies: Mutex<Vec<ReplyRecord>>,
    pub ownership: Mutex<Vec<OwnEvent>>,
    /// Replays whose answer named a different message: `(first id, replay id)`.
    pub replay_mismatches: Mutex<Vec<(String, String)>>,
    /// Conversation ids seen on any agent's SSE stream.
    pub seen_via_sse: Mutex<HashSet<String>>,
    /// Outbound message id -> wamids the event stream showed for it.
    pub wamids_seen: Mutex<HashMap<String, HashSet<String>>>,
    handlers: Arc<Tracker>,
    last_activity: Mutex<Instant>,
    stopping: AtomicBool,
    /// Cleared when the load ends: paced agents start no new claim.
    claiming: AtomicBool,
    connected: AtomicUsize,
}

struct AgentState {
    index: usize,
    token: String,
    id: Mutex<Option<String>>,
    handling: Mutex<HashSet<String>>,
    attempted: Mutex<HashSet<String>>,
    /// When this agent's handling of each conversation last ended (its resolve answered, or given
    /// up): a read sent before that may show the ownership it has since given up.
    ended: Mutex<HashMap<String, Instant>>,
    /// Conversations an event said we own, being read to confirm (one read each at a time).
    confirming: Mutex<HashSet<String>>,
    last_claim_sent: Mutex<HashMap<String, Instant>>,
    seq: AtomicU64,
    /// Paced mode: queued conversations to claim, oldest first.
    backlog: Mutex<VecDeque<String>>,
    backlog_ready: Notify,
    /// Paced mode: one of this agent's conversations is done (a slot may be free).
    freed: Notify,
}

impl AgentState {
    fn id(&self) -> Option<String> {
        lock(&self.id).clone()
    }

    fn learn_id(&self, id: Option<&str>) {
        if let Some(id) = id.filter(|s| !s.is_empty()) {
            let mut g = lock(&self.id);
            if g.is_none() {
                *g = Some(id.to_string());
            }
        }
    }
}

/// The running agent fleet.
pub struct Agents {
    pub shared: Arc<AgentsShared>,
    tasks: Vec<JoinHandle<()>>,
    /// Dropping it ends the agents' runtime (its thread returns and drops it there).
    _runtime: oneshot::Sender<()>,
}

/// Starts the agents' own single-threaded runtime on a thread of its own. Simulated agents are
/// other people's consoles: their requests and the timing of their answers must not queue
/// behind the generator's webhook tasks on the generator's workers.
fn agent_runtime() -> std::io::Result<(tokio::runtime::Handle, oneshot::Sender<()>)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("lt-agents".into())
        .spawn(move || {
            // The agents time claims from this thread: it should not add its own wait for a
            // core to what it measures (see `slice`).
            let _ = sched_slice::request_short_slice();
            rt.block_on(async move {
                let _ = stopped.await;
            });
        })?;
    Ok((handle, stop))
}

/// FNV-1a, for a stable choice of racers per conversation.
fn fnv(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Whether agent `index` of `k` races for conversation `id` (exactly `min(race, k)` do).
pub fn is_racer(id: &str, index: usize, k: usize, race: usize) -> bool {
    if k == 0 {
        return false;
    }
    let first = (fnv(id) % k as u64) as usize;
    (index + k - first) % k < race.min(k)
}

impl Agents {
    /// Starts one task per token (two when paced) on the agents' own runtime.
    pub fn start(cfg: AgentsConfig) -> std::io::Result<Agents> {
        let (rt, runtime) = agent_runtime()?;
        let shared = Arc::new(AgentsShared {
            cfg: cfg.clone(),
            claim_latency: Latency::new(),
            counters: Counters::default(),
            errors: Counters::default(),
            replies: Mutex::new(Vec::new()),
            ownership: Mutex::new(Vec::new()),
            replay_mismatches: Mutex::new(Vec::new()),
            seen_via_sse: Mutex::new(HashSet::new()),
            wamids_seen: Mutex::new(HashMap::new()),
            handlers: Arc::new(Tracker::default()),
            last_activity: Mutex::new(Instant::now()),
            stopping: AtomicBool::new(false),
            claiming: AtomicBool::new(true),
            connected: AtomicUsize::new(0),
        });
        let tasks = cfg
            .tokens
            .iter()
            .enumerate()
            .flat_map(|(index, token)| {
                let me = Arc::new(AgentState {
                    index,
                    token: token.clone(),
                    id: Mutex::new(cfg.ids.get(index).cloned()),
                    handling: Mutex::new(HashSet::new()),
                    attempted: Mutex::new(HashSet::new()),
                    ended: Mutex::new(HashMap::new()),
                    confirming: Mutex::new(HashSet::new()),
                    last_claim_sent: Mutex::new(HashMap::new()),
                    seq: AtomicU64::new(1),
                    backlog: Mutex::new(VecDeque::new()),
                    backlog_ready: Notify::new(),
                    freed: Notify::new(),
                });
                let mut tasks = vec![rt.spawn(agent_loop(shared.clone(), me.clone()))];
                if cfg.mode == ClaimMode::Paced {
                    tasks.push(rt.spawn(claim_backlog(shared.clone(), me)));
                }
                tasks
            })
            .collect();
        Ok(Agents {
            shared,
            tasks,
            _runtime: runtime,
        })
    }

    /// Waits until every agent has an open event stream (or the deadline). Returns how many do.
    pub async fn wait_connected(&self, deadline: Instant) -> usize {
        let k = self.shared.cfg.tokens.len();
        loop {
            let n = self.shared.connected.load(Ordering::Acquire);
            if n >= k || Instant::now() >= deadline {
                return n;
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// The load is over: paced agents leave their backlogs (those conversations stay queued in the
    /// broker) and finish what they hold.
    pub fn stop_claiming(&self) {
        self.shared.claiming.store(false, Ordering::Release);
    }

    /// Waits until no conversation is being handled and nothing happened for `idle`.
    pub async fn quiesce(&self, idle: Duration, deadline: Instant) -> bool {
        loop {
            let quiet = self.shared.handlers.active() == 0
                && lock(&self.shared.last_activity).elapsed() >= idle;
            if quiet {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stops taking new work, closes the event streams and waits for in-flight handlers.
    pub async fn stop(self, deadline: Instant) -> Arc<AgentsShared> {
        self.shared.stopping.store(true, Ordering::Release);
        for t in &self.tasks {
            t.abort();
        }
        if !self.shared.handlers.wait_idle(deadline).await {
            self.shared.errors.add(
                "agent.handler_unfinished_at_deadline",
                self.shared.handlers.active() as u64,
            );
        }
        self.shared
    }
}

impl AgentsShared {
    fn touch(&self) {
        *lock(&self.last_activity) = Instant::now();
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn err(&self, what: &str, kind: &str) {
        self.errors.inc(&format!("agent.{what}.{kind}"));
    }

    async fn call(
        &self,
        me: &AgentState,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), String> {
        self.cfg.api.call(&me.token, method, path, body).await
    }
}

struct ConnectedGuard<'a>(&'a AtomicUsize);

impl Drop for ConnectedGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn agent_loop(sh: Arc<AgentsShared>, me: Arc<AgentState>) {
    let mut failures: u32 = 0;
    loop {
        if sh.stopping() {
            return;
        }
        if failures > 0 {
            sleep(Duration::from_millis(50 * u64::from(failures.min(10)))).await;
        }
        failures += 1;

        let presence = json!({"status": "online"});
        match sh
            .call(
                &me,
                Method::PUT,
                "/api/v1/agents/me/presence",
                Some(&presence),
            )
            .await
        {
            Ok((s, v)) if s.is_success() => {
                sh.counters.inc("presence_set");
                me.learn_id(
                    v.get("id")
                        .and_then(Value::as_str)
                        .or_else(|| v.pointer("/agent/id").and_then(Value::as_str)),
                );
            }
            Ok((s, _)) => {
                sh.err("presence", &status_kind(s));
                continue;
            }
            Err(kind) => {
                sh.err("presence", &kind);
                continue;
            }
        }

        let url = match &sh.cfg.event_types {
            Some(t) => format!("{}/api/v1/events?types={}", sh.cfg.api.base_url, seg(t)),
            None => format!("{}/api/v1/events", sh.cfg.api.base_url),
        };
        let resp = sh
            .cfg
            .api
            .client
            .get(&url)
            .bearer_auth(&me.token)
            .header(ACCEPT, "text/event-stream")
            .send()
            .await;
        let mut resp = match resp {
            Ok(r) if r.status() == StatusCode::OK => r,
            Ok(r) => {
                sh.err("events", &status_kind(r.status()));
                continue;
            }
            Err(e) => {
                sh.err("events", error_kind(&e));
                continue;
            }
        };
        let ctype = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ctype.starts_with("text/event-stream") {
            sh.err("events", "wrong_content_type");
        }
        sh.counters.inc("event_stream_connects");
        sh.connected.fetch_add(1, Ordering::AcqRel);
        let _connected = ConnectedGuard(&sh.connected);
        failures = 0;

        // Anything that happened while we were not listening.
        {
            let (sh, me) = (sh.clone(), me.clone());
            tokio::spawn(async move { resync(sh, me).await });
        }

        let mut parser = SseParser::new();
        let mut order = StreamOrder::default();
        loop {
            match resp.chunk().await {
                Ok(Some(bytes)) => {
                    for ev in parser.push(&bytes) {
                        on_sse(&sh, &me, &mut order, &ev.data);
                    }
                }
                Ok(None) => {
                    sh.err("events", "stream_ended");
                    break;
                }
                Err(e) => {
                    sh.err("events", error_kind(&e));
                    break;
                }
            }
        }
    }
}

/// Most queued conversations a re-list reads: the first page of the queue, as a console shows
/// it. Others are still claimable when their next event (reopen, release) names them.
const RESYNC_QUEUED: usize = 500;
/// Pages of "owned by me" a re-list reads at most (an agent owns at most `max_concurrent`).
const RESYNC_OWNED_PAGES: usize = 20;

/// After (re)connecting or a `lagged` event: what this agent owns (every page; a claim whose
/// answer was lost shows up here) and the first page of the queue. Without a known agent id,
/// one page of everything visible.
async fn resync(sh: Arc<AgentsShared>, me: Arc<AgentState>) {
    let Some(id) = me.id() else {
        list_page(&sh, &me, "/api/v1/conversations").await;
        return;
    };
    let owned = format!("/api/v1/conversations?assignee={}", seg(&id));
    let mut after: Option<String> = None;
    for _ in 0..RESYNC_OWNED_PAGES {
        let path = match &after {
            Some(a) => format!("{owned}&after={}", seg(a)),
            None => owned.clone(),
        };
        after = list_page(&sh, &me, &path).await;
        if after.is_none() {
            break;
        }
    }
    let queued = format!("/api/v1/conversations?status=queued&limit={RESYNC_QUEUED}");
    list_page(&sh, &me, &queued).await;
}

/// Reads one page of conversations and acts on each; returns the page's `next_after`.
async fn list_page(sh: &Arc<AgentsShared>, me: &Arc<AgentState>, path: &str) -> Option<String> {
    let sent = Instant::now();
    match sh.call(me, Method::GET, path, None).await {
        Ok((s, v)) if s.is_success() => {
            let convs: Vec<Conversation> = v
                .get("conversations")
                .cloned()
                .and_then(|c| serde_json::from_value(c).ok())
                .unwrap_or_default();
            for c in convs {
                on_conversation(sh, me, &c, Seen::Read { sent });
            }
            v.get("next_after")
                .and_then(Value::as_str)
                .map(str::to_string)
        }
        Ok((s, _)) => {
            sh.err("list", &status_kind(s));
            None
        }
        Err(kind) => {
            sh.err("list", &kind);
            None
        }
    }
}

/// Re-reads one conversation after this agent's handler for it has finished.
async fn recheck_later(sh: Arc<AgentsShared>, me: Arc<AgentState>, id: String) {
    for _ in 0..100 {
        sleep(Duration::from_millis(100)).await;
        if sh.stopping() {
            return;
        }
        if !lock(&me.handling).contains(&id) {
            break;
        }
    }
    let path = format!("/api/v1/conversations/{}", seg(&id));
    let sent = Instant::now();
    match sh.call(&me, Method::GET, &path, None).await {
        Ok((s, v)) if s.is_success() => {
            if let Ok(conv) = serde_json::from_value::<Conversation>(v) {
                on_conversation(&sh, &me, &conv, Seen::Read { sent });
            }
        }
        // No longer visible to this agent (someone else owns it): nothing to do.
        Ok((s, _)) if s == StatusCode::NOT_FOUND || s == StatusCode::FORBIDDEN => {}
        Ok((s, _)) => sh.err("recheck", &status_kind(s)),
        Err(kind) => sh.err("recheck", &kind),
    }
}

/// Where an observation of a conversation came from.
#[derive(Debug, Clone, Copy)]
enum Seen {
    /// The event stream: in the broker's order, but possibly long after the change.
    Event,
    /// A `GET` or list answer to a request sent at `sent`: the broker's state at some instant
    /// between `sent` and now.
    Read { sent: Instant },
}

/// One event stream's memory of the last `message.created` sequence number per conversation.
#[derive(Default)]
struct StreamOrder {
    last_seq: HashMap<String, u64>,
}

impl StreamOrder {
    /// Records message `id` (`{conversation}-{seq}`); false when its sequence number is not
    /// above the last one this stream showed for that conversation.
    fn in_order(&mut self, id: &str) -> bool {
        let Some((conv, seq)) = id.rsplit_once('-') else {
            return true;
        };
        let Ok(seq) = seq.parse::<u64>() else {
            return true;
        };
        if self.last_seq.len() >= ORDER_TRACKED_MAX && !self.last_seq.contains_key(conv) {
            self.last_seq.clear();
        }
        match self.last_seq.get_mut(conv) {
            Some(last) if *last >= seq => false,
            Some(last) => {
                *last = seq;
                true
            }
            None => {
                self.last_seq.insert(conv.to_string(), seq);
                true
            }
        }
    }
}

fn on_sse(sh: &Arc<AgentsShared>, me: &Arc<AgentState>, order: &mut StreamOrder, data: &str) {
    sh.counters.inc("events_received");
    let ev: Event = match serde_json::from_str(data) {
        Ok(e) => e,
        Err(_) => {
            sh.err("events", "bad_json");
            return;
        }
    };
    let Some(conv) = ev.conversation else {
        if ev.kind == "lagged" {
            // The broker dropped events for us: re-read the list, as it asks.
            sh.counters.inc("events_lagged");
            let (sh, me) = (sh.clone(), me.clone());
            tokio::spawn(async move { resync(sh, me).await });
        } else if !ev.kind.is_empty() {
            sh.counters.inc("events_without_conversation");
        }
        return;
    };
    if conv.id.is_empty() {
        sh.err("events", "conversation_without_id");
        return;
    }
    lock(&sh.seen_via_sse).insert(conv.id.clone());
    if let Some(m) = &ev.message {
        if ev.kind == "message.created" && !order.in_order(&m.id) {
            sh.counters.inc("events_out_of_order");
        }
        if let (Some("outbound"), Some(w)) = (m.direction.as_deref(), m.wamid.as_deref()) {
            lock(&sh.wamids_seen)
                .entry(m.id.clone())
                .or_default()
                .insert(w.to_string());
        }
    }
    on_conversation(sh, me, &conv, Seen::Event);
}

fn on_conversation(sh: &Arc<AgentsShared>, me: &Arc<AgentState>, conv: &Conversation, seen: Seen) {
    if sh.stopping() {
        return;
    }
    let id = conv.id.clone();
    let k = sh.cfg.tokens.len();
    if conv.status() == "queued" && conv.assignee.is_none() {
        if !is_racer(&id, me.index, k, sh.cfg.race) {
            return;
        }
        if !lock(&me.attempted).insert(id.clone()) {
            return;
        }
        if sh.cfg.mode == ClaimMode::Paced {
            let dropped = {
                let mut backlog = lock(&me.backlog);
                backlog.push_back(id);
                (backlog.len() > BACKLOG_MAX)
                    .then(|| backlog.pop_front())
                    .flatten()
            };
            if let Some(old) = dropped {
                lock(&me.attempted).remove(&old);
                sh.err("backlog", "dropped");
            }
            me.backlog_ready.notify_one();
            return;
        }
        if !begin_handling(sh, me, &id) {
            return;
        }
        let guard = sh.handlers.enter();
        sh.touch();
        let (sh, me) = (sh.clone(), me.clone());
        tokio::spawn(async move {
            let _guard = guard;
            claim_and_handle(&sh, &me, id).await;
            sh.touch();
        });
        return;
    }
    lock(&me.attempted).remove(&id);
    let mine = conv.status() == "assigned" && conv.assignee.is_some() && conv.assignee == me.id();
    if !mine {
        return;
    }
    if lock(&me.handling).contains(&id) {
        return;
    }
    let read_sent = match seen {
        Seen::Event => {
            // Possibly long stale: read the conversation, and decide on what that says.
            if lock(&me.confirming).insert(id.clone()) {
                sh.counters.inc("ownership_events_checked");
                let (sh, me) = (sh.clone(), me.clone());
                tokio::spawn(async move { confirm_ownership(sh, me, id).await });
            }
            return;
        }
        Seen::Read { sent } => sent,
    };
    if lock(&me.ended)
        .get(&id)
        .is_some_and(|&end| end >= read_sent)
    {
        // The read may show the ownership we gave up meanwhile: read again, after that end.
        let (sh, me) = (sh.clone(), me.clone());
        tokio::spawn(async move { recheck_later(sh, me, id).await });
        return;
    }
    if !lock(&me.handling).insert(id.clone()) {
        return;
    }
    let now = Instant::now();
    let sent = lock(&me.last_claim_sent)
        .remove(&id)
        .map_or(read_sent, |c| c.min(read_sent));
    lock(&sh.ownership).push(OwnEvent {
        conversation: id.clone(),
        agent: me.index,
        kind: OwnKind::Adopt,
        sent,
        recv: now,
    });
    sh.counters.inc("adoptions");
    let guard = sh.handlers.enter();
    sh.touch();
    spawn_owned(sh, me, id, guard);
}

/// An event said we own `id` while we are not handling it: read it now and act on the read.
async fn confirm_ownership(sh: Arc<AgentsShared>, me: Arc<AgentState>, id: String) {
    let path = format!("/api/v1/conversations/{}", seg(&id));
    let sent = Instant::now();
    let r = sh.call(&me, Method::GET, &path, None).await;
    lock(&me.confirming).remove(&id);
    if sh.stopping() {
        return;
    }
    let conv = match r {
        Ok((s, v)) if s.is_success() => match serde_json::from_value::<Conversation>(v) {
            Ok(c) => c,
            Err(_) => return sh.err("confirm", "bad_json"),
        },
        // Not visible to us any more: someone else owns it, so the event was stale.
        Ok((s, _)) if s == StatusCode::NOT_FOUND || s == StatusCode::FORBIDDEN => {
            sh.counters.inc("stale_ownership_events");
            return;
        }
        Ok((s, _)) => return sh.err("confirm", &status_kind(s)),
        Err(kind) => return sh.err("confirm", &kind),
    };
    let mine = conv.status() == "assigned" && conv.assignee.is_some() && conv.assignee == me.id();
    if !mine {
        sh.counters.inc("stale_ownership_events");
    }
    on_conversation(&sh, &me, &conv, Seen::Read { sent });
}

/// Works an owned conversation (reply, resolve) on a task of its own, tracked by `guard`.
fn spawn_owned(sh: &Arc<AgentsShared>, me: &Arc<AgentState>, id: String, guard: TrackGuard) {
    let (sh, me) = (sh.clone(), me.clone());
    tokio::spawn(async move {
        let _guard = guard;
        handle_owned(&sh, &me, &id).await;
        sh.touch();
    });
}

/// What one claim request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Claimed {
    Won,
    /// 409 `capacity_reached`: the conversation is still there for later.
    AtCapacity,
    /// Someone else has it, it moved on, or the request failed.
    Lost,
}

async fn claim_and_handle(sh: &Arc<AgentsShared>, me: &Arc<AgentState>, id: String) {
    if claim(sh, me, &id).await == Claimed::Won {
        handle_owned(sh, me, &id).await;
    }
}

/// Sends one claim and records it. Unless it was won, `id` leaves `handling`.
async fn claim(sh: &Arc<AgentsShared>, me: &Arc<AgentState>, id: &str) -> Claimed {
    let path = format!("/api/v1/conversations/{}/claim", seg(id));
    sh.counters.inc("claims_attempted");
    let sent = Instant::now();
    let r = sh.call(me, Method::POST, &path, None).await;
    let recv = Instant::now();
    match r {
        Ok((s, v)) if s == StatusCode::OK => {
            sh.claim_latency.record(recv - sent);
            sh.counters.inc("claims_won");
            me.learn_id(v.get("assignee").and_then(Value::as_str));
            lock(&sh.ownership).push(OwnEvent {
                conversation: id.to_string(),
                agent: me.index,
                kind: OwnKind::Claim,
                sent,
                recv,
            });
            Claimed::Won
        }
        Ok((s, v)) => {
            sh.claim_latency.record(recv - sent);
            lock(&me.handling).remove(id);
            if s == StatusCode::CONFLICT {
                let code = error_code(&v).unwrap_or("conflict_without_code");
                sh.counters.inc(&format!("claims_{code}"));
                if code == "capacity_reached" {
                    return Claimed::AtCapacity;
                }
            } else {
                sh.err("claim", &status_kind(s));
            }
            Claimed::Lost
        }
        Err(kind) => {
            sh.err("claim", &kind);
            // The claim may or may not have happened: allow a retry after a resync and remember
            // when we asked, in case the broker later tells us we own it.
            lock(&me.last_claim_sent).insert(id.to_string(), sent);
            lock(&me.attempted).remove(id);
            lock(&me.handling).remove(id);
            Claimed::Lost
        }
    }
}

/// Paced mode: claims the agent's backlog one conversation at a time, oldest first, and waits
/// for a slot after `capacity_reached`.
async fn claim_backlog(sh: Arc<AgentsShared>, me: Arc<AgentState>) {
    loop {
        if sh.stopping() || !sh.claiming.load(Ordering::Acquire) {
            return;
        }
        let next = lock(&me.backlog).pop_front();
        let Some(id) = next else {
            // Bounded so that the end of the load is noticed with an empty backlog too.
            let _ = tokio::time::timeout(CAPACITY_RETRY, me.backlog_ready.notified()).await;
            continue;
        };
        if !begin_handling(&sh, &me, &id) {
            continue;
        }
        let guard = sh.handlers.enter();
        sh.touch();
        match claim(&sh, &me, &id).await {
            Claimed::Won => spawn_owned(&sh, &me, id, guard),
            Claimed::AtCapacity => {
                drop(guard);
                lock(&me.backlog).push_front(id);
                let _ = tokio::time::timeout(CAPACITY_RETRY, me.freed.notified()).await;
            }
            Claimed::Lost => {}
        }
    }
}

/// Marks `id` as being handled by this agent. When it still is (an earlier round of the same
/// conversation, resolved and reopened meanwhile), looks again once that is done and says no.
fn begin_handling(sh: &Arc<AgentsShared>, me: &Arc<AgentState>, id: &str) -> bool {
    if lock(&me.handling).insert(id.to_string()) {
        return true;
    }
    lock(&me.attempted).remove(id);
    let (sh, me, id) = (sh.clone(), me.clone(), id.to_string());
    tokio::spawn(async move { recheck_later(sh, me, id).await });
    false
}

fn transient(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS
}

async fn handle_owned(sh: &Arc<AgentsShared>, me: &Arc<AgentState>, id: &str) {
    let base = format!("/api/v1/conversations/{}", seg(id));
    let seq = me.seq.fetch_add(1, Ordering::Relaxed);
    let key = format!("lt-{}-a{}-{}", sh.cfg.run_id, me.index + 1, seq);
    let text = format!("Thanks for your message, we are on it. [lt reply {key}]");
    let body = json!({"text": text, "idempotency_key": key});
    let msg_path = format!("{base}/messages");

    let mut message_id: Option<String> = None;
    for attempt in 0..6u32 {
        if attempt > 0 {
            sleep(Duration::from_millis(100 << attempt.min(4))).await;
        }
        let requested_at = Instant::now();
        match sh.call(me, Method::POST, &msg_path, Some(&body)).await {
            Ok((s, v)) if s == StatusCode::ACCEPTED => {
                let mid = v
                    .get("id")
                    .map(|i| match i {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_default();
                if mid.is_empty() {
                    sh.err("reply", "accepted_without_id");
                    break;
                }
                sh.counters.inc("replies_accepted");
                lock(&sh.replies).push(ReplyRecord {
                    conversation: id.to_string(),
                    message_id: mid.clone(),
                    key: key.clone(),
                    agent: me.index,
                    requested_at,
                    accepted_at: Instant::now(),
                });
                message_id = Some(mid);
                break;
            }
            Ok((s, v)) if transient(s) => {
                let _ = v;
                sh.err("reply", &status_kind(s));
            }
            Ok((s, v)) => {
                sh.err("reply", error_code(&v).unwrap_or(&status_kind(s)));
                break;
            }
            Err(kind) => sh.err("reply", &kind),
        }
    }

    if let Some(first) = &message_id {
        if sh.cfg.replay_ratio > 0.0 && rand::thread_rng().gen_bool(sh.cfg.replay_ratio) {
            sh.counters.inc("replays");
            match sh.call(me, Method::POST, &msg_path, Some(&body)).await {
                Ok((s, v)) if s.is_success() => {
                    let again = v
                        .get("id")
                        .map(|i| match i {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .unwrap_or_default();
                    if &again != first {
                        lock(&sh.replay_mismatches).push((first.clone(), again));
                    }
                }
                Ok((s, v)) => sh.err("replay", error_code(&v).unwrap_or(&status_kind(s))),
                Err(kind) => sh.err("replay", &kind),
            }
        }
    }

    sleep(sh.cfg.resolve_after).await;

    let resolve_path = format!("{base}/resolve");
    let mut first_failed: Option<Instant> = None;
    for attempt in 0..6u32 {
        if attempt > 0 {
            sleep(Duration::from_millis(100 << attempt.min(4))).await;
        }
        let sent = Instant::now();
        match sh.call(me, Method::POST, &resolve_path, None).await {
            Ok((s, _)) if s.is_success() => {
                sh.counters.inc("resolves");
                lock(&sh.ownership).push(OwnEvent {
                    conversation: id.to_string(),
                    agent: me.index,
                    kind: OwnKind::Resolve,
                    sent: first_failed.unwrap_or(sent),
                    recv: Instant::now(),
                });
                break;
            }
            Ok((s, _)) if transient(s) => {
                sh.err("resolve", &status_kind(s));
                first_failed.get_or_insert(sent);
            }
            Ok((s, v)) => {
                sh.err("resolve", error_code(&v).unwrap_or(&status_kind(s)));
                if let Some(t) = first_failed {
                    // An earlier attempt may have resolved it before its answer was lost.
                    lock(&sh.ownership).push(OwnEvent {
                        conversation: id.to_string(),
                        agent: me.index,
                        kind: OwnKind::Resolve,
                        sent: t,
                        recv: Instant::now(),
                    });
                }
                break;
            }
            Err(kind) => {
                sh.err("resolve", &kind);
                first_failed.get_or_insert(sent);
            }
        }
    }
    lock(&me.handling).remove(id);
    lock(&me.ended).insert(id.to_string(), Instant::now());
    me.freed.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;
    use std::sync::atomic::AtomicI64;

    use axum::extract::{Path, State};
    use axum::routing::{get, post, put};
    use axum::Json;

    /// A broker stand-in: one SSE burst of `n` queued conversations, claims refused at `cap`
    /// owned conversations, and a count of claims in flight at once.
    #[derive(Default)]
    struct FakeBroker {
        cap: usize,
        /// Signalled when this many conversations have been claimed.
        want: usize,
        all_claimed: Notify,
        owned: Mutex<HashSet<String>>,
        claimed: Mutex<Vec<String>>,
        in_flight: AtomicI64,
        max_in_flight: AtomicI64,
    }

    async fn fake_claim(
        State(b): State<Arc<FakeBroker>>,
        Path(id): Path<String>,
    ) -> (StatusCode, Json<Value>) {
        let now = b.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        b.max_in_flight.fetch_max(now, Ordering::SeqCst);
        sleep(Duration::from_millis(2)).await;
        b.in_flight.fetch_sub(1, Ordering::SeqCst);
        let won = {
            let mut owned = lock(&b.owned);
            owned.len() < b.cap && owned.insert(id.clone())
        };
        if !won {
            let e = json!({"error": {"code": "capacity_reached", "message": "full"}});
            return (StatusCode::CONFLICT, Json(e));
        }
        let total = {
            let mut claimed = lock(&b.claimed);
            claimed.push(id.clone());
            claimed.len()
        };
        if total == b.want {
            b.all_claimed.notify_one();
        }
        let c = json!({"id": id, "status": "assigned", "assignee": "a1"});
        (StatusCode::OK, Json(c))
    }

    async fn fake_resolve(State(b): State<Arc<FakeBroker>>, Path(id): Path<String>) -> Json<Value> {
        lock(&b.owned).remove(&id);
        Json(json!({"id": id, "status": "resolved"}))
    }

    /// Runs one agent in `mode` against a fake broker announcing `n` conversations; returns the
    /// broker's view once all are claimed (or after 20 s).
    async fn run_agent(mode: ClaimMode, n: usize, cap: usize) -> Arc<FakeBroker> {
        let broker = Arc::new(FakeBroker {
            cap,
            want: n,
            ..Default::default()
        });
        let burst: String = (0..n)
            .map(|i| {
                let ev = json!({"type": "conversation.created",
                    "conversation": {"id": format!("c{i}"), "status": "queued", "assignee": null}});
                format!("data: {ev}\n\n")
            })
            .collect();
        let events = move || {
            let burst = burst.clone();
            async move { sse_then_silence(burst) }
        };
        let app = axum::Router::new()
            .route(
                "/api/v1/agents/me/presence",
                put(|| async { Json(json!({"id": "a1", "status": "online"})) }),
            )
            .route("/api/v1/events", get(events))
            .route(
                "/api/v1/conversations",
                get(|| async { Json(json!({"conversations": []})) }),
            )
            .route("/api/v1/conversations/{id}/claim", post(fake_claim))
            .route(
                "/api/v1/conversations/{id}/messages",
                post(|Path(id): Path<String>| async move {
                    (StatusCode::ACCEPTED, Json(json!({"id": format!("m-{id}")})))
                }),
            )
            .route("/api/v1/conversations/{id}/resolve", post(fake_resolve))
            .with_state(broker.clone());
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            panic!("cannot bind loopback");
        };
        let Ok(addr) = listener.local_addr() else {
            panic!("no local address");
        };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let Ok(client) = crate::outcome::client(16, None) else {
            panic!("no http client");
        };
        let Ok(agents) = Agents::start(AgentsConfig {
            api: ApiClient {
                client,
                base_url: format!("http://{addr}"),
                timeout: Duration::from_secs(5),
            },
            tokens: vec!["t1".into()],
            ids: vec!["a1".into()],
            race: 1,
            mode,
            event_types: None,
            resolve_after: Duration::from_millis(5),
            replay_ratio: 0.0,
            run_id: "test".into(),
        }) else {
            panic!("agents runtime");
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let _ = tokio::time::timeout_at(deadline, broker.all_claimed.notified()).await;
        agents.stop_claiming();
        agents.quiesce(Duration::from_millis(50), deadline).await;
        agents.stop(deadline).await;
        broker
    }

    /// An event stream that sends `burst` and then stays open without another byte.
    fn sse_then_silence(burst: String) -> impl axum::response::IntoResponse {
        let head = futures_util::stream::once(async move {
            Ok::<_, std::io::Error>(bytes::Bytes::from(burst))
        });
        let body = axum::body::Body::from_stream(futures_util::StreamExt::chain(
            head,
            futures_util::stream::pending(),
        ));
        ([(CONTENT_TYPE, "text/event-stream")], body)
    }

    /// Runs agent `a1` against a fake broker whose event stream says, once, that `a1` owns
    /// conversation `c9`, and whose `GET` of `c9` names `owner_now` as its owner. Meanwhile
    /// agent 2 (`a2`) holds `c9` by a successful claim from the start to the end of the run,
    /// logged as the load generator logs claims. Returns the audit's violations and the agents'
    /// counters.
    async fn stale_or_real(owner_now: &'static str) -> (Vec<String>, BTreeMap<String, u64>) {
        let event = json!({"type": "conversation.claimed",
            "conversation": {"id": "c9", "status": "assigned", "assignee": "a1"}});
        let burst = format!("data: {event}\n\n");
        let events = move || {
            let burst = burst.clone();
            async move { sse_then_silence(burst) }
        };
        let app = axum::Router::new()
            .route(
                "/api/v1/agents/me/presence",
                put(|| async { Json(json!({"id": "a1", "status": "online"})) }),
            )
            .route("/api/v1/events", get(events))
            .route(
                "/api/v1/conversations",
                get(|| async { Json(json!({"conversations": []})) }),
            )
            .route(
                "/api/v1/conversations/{id}",
                get(move |Path(id): Path<String>| async move {
                    Json(json!({"id": id, "status": "assigned", "assignee": owner_now}))
                }),
            )
            .route(
                "/api/v1/conversations/{id}/messages",
                post(|Path(id): Path<String>| async move {
                    (StatusCode::ACCEPTED, Json(json!({"id": format!("m-{id}")})))
                }),
            )
            .route(
                "/api/v1/conversations/{id}/resolve",
                post(|Path(id): Path<String>| async move {
                    Json(json!({"id": id, "status": "resolved"}))
                }),
            );
        let Ok(listener) = tokio::net::TcpListener::bind("127.0.0.1:0").await else {
            panic!("cannot bind loopback");
        };
        let Ok(addr) = listener.local_addr() else {
            panic!("no local address");
        };
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let Ok(client) = crate::outcome::client(4, None) else {
            panic!("no http client");
        };
        let a2_claimed = Instant::now();
        let Ok(agents) = Agents::start(AgentsConfig {
            api: ApiClient {
                client,
                base_url: format!("http://{addr}"),
                timeout: Duration::from_secs(5),
            },
            tokens: vec!["t1".into()],
            ids: vec!["a1".into()],
            race: 1,
            mode: ClaimMode::Paced,
            event_types: None,
            resolve_after: Duration::from_millis(5),
            replay_ratio: 0.0,
            run_id: "test".into(),
        }) else {
            panic!("agents runtime");
        };
        // Until the agent has acted on the event: it found it stale, or it adopted and resolved.
        let deadline = Instant::now() + Duration::from_secs(20);
        let c = &agents.shared.counters;
        while c.get("stale_ownership_events") + c.get("resolves") == 0 && Instant::now() < deadline
        {
            sleep(Duration::from_millis(10)).await;
        }
        agents.stop_claiming();
        agents.quiesce(Duration::from_millis(50), deadline).await;
        let shared = agents.stop(deadline).await;
        let mut log = lock(&shared.ownership).clone();
        // a2's claim: granted before a1 heard anything, never resolved while a1 could own it.
        let a1_first = log
            .iter()
            .map(|e| e.recv)
            .min()
            .unwrap_or_else(Instant::now);
        log.push(OwnEvent {
            conversation: "c9".into(),
            agent: 1,
            kind: OwnKind::Claim,
            sent: a2_claimed,
            recv: a2_claimed.min(a1_first),
        });
        (
            crate::audit::ownership_violations(&log),
            shared.counters.snapshot(),
        )
    }

    #[tokio::test]
    async fn a_stale_ownership_event_is_not_an_owner_but_a_real_one_is() {
        // The broker says a2 owns c9 now: a1's event was stale; a1 must not take it.
        let (violations, counters) = stale_or_real("a2").await;
        assert!(violations.is_empty(), "{violations:?} {counters:?}");
        assert_eq!(counters.get("stale_ownership_events"), Some(&1));
        assert_eq!(counters.get("adoptions"), None);
        // The broker really gives c9 to a1 while a2's claim holds: two owners, caught.
        let (violations, counters) = stale_or_real("a1").await;
        assert_eq!(violations.len(), 1, "{violations:?} {counters:?}");
        assert_eq!(counters.get("adoptions"), Some(&1));
        assert_eq!(counters.get("stale_ownership_events"), None);
    }

    #[test]
    fn stream_order_flags_a_sequence_going_back() {
        let mut o = StreamOrder::default();
        assert!(o.in_order("c1-1"));
        assert!(o.in_order("c2-5"));
        assert!(o.in_order("c1-2"));
        assert!(!o.in_order("c1-2"), "the same message twice");
        assert!(!o.in_order("c1-1"), "an older message after a newer one");
        assert!(o.in_order("c1-3"));
        assert!(o.in_order("no-sequence"));
    }

    #[tokio::test]
    async fn paced_agents_claim_one_at_a_time_within_capacity() {
        let broker = run_agent(ClaimMode::Paced, 40, 4).await;
        let mut claimed = lock(&broker.claimed).clone();
        assert_eq!(
            claimed.len(),
            40,
            "every queued conversation is claimed once"
        );
        claimed.sort();
        claimed.dedup();
        assert_eq!(claimed.len(), 40);
        assert_eq!(broker.max_in_flight.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn eager_agents_claim_everything_at_once() {
        let broker = run_agent(ClaimMode::Eager, 40, 100).await;
        assert_eq!(lock(&broker.claimed).len(), 40);
        assert!(broker.max_in_flight.load(Ordering::SeqCst) > 1);
    }

    #[test]
    fn racers_are_exactly_race_many() {
        for id in ["1", "2", "conv-abc", "99999"] {
            for k in 1..8 {
                for race in 1..5 {
                    let n = (0..k).filter(|&i| is_racer(id, i, k, race)).count();
                    assert_eq!(n, race.min(k), "id {id} k {k} race {race}");
                }
            }
        }
    }
}
