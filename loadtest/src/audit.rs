//! End-of-run audit: read the broker's state back through its API and check it against what the
//! load test itself observed.
//!
//! Checks (each reports pass/fail with counts and a few examples):
//! - `inbound_stored_once`: every inbound message acknowledged with 200 is stored exactly once, in
//!   the conversation of its (number, customer); no generated wamid is stored twice, acknowledged
//!   or not, and no wamid of this run is stored that was never generated;
//! - `one_conversation_per_customer`: no two conversations share (number, customer);
//! - `single_owner`: from the agents' own observations, no two successful claims of a
//!   conversation without a resolve by the first owner that could have come in between (request
//!   and answer instants bound each event, and the check only fails when no ordering of the
//!   events inside those bounds explains the observations);
//! - `no_double_send`: no reply reached the fake Graph API twice (same
//!   `biz_opaque_callback_data`), and every send carried it. One exception, counted as
//!   `resent_after_crash`: a send that was in flight when the broker was SIGKILLed (the Graph API
//!   accepted it at most `IN_FLIGHT_WINDOW` before, the broker never recorded its wamid) and was
//!   sent again after the restart — the broker cannot know whether it went through, and
//!   at-least-once is the contract;
//! - `no_lost_replies`: every reply answered 202 reached the fake Graph API, or is stored as
//!   `failed` with an error code (retries exhausted), and is stored by the broker at all;
//! - `reply_idempotency`: replaying an idempotency key returned the same message;
//! - `statuses_forward_only`: an outbound message whose `read`/`delivered` callback was
//!   acknowledged is stored at least at that status (a late `sent` did not win).
//!
//! The fetch uses the admin token: `GET /api/v1/conversations?limit=N&after=ID` pages (a broker
//! that ignores paging and answers everything at once is fine too), then
//! `GET /api/v1/conversations/{id}` for the messages of every conversation of this run's customers
//! (a data directory filled beforehand, e.g. by `benches/populate.rs` with a million
//! conversations of other customers, is listed but not fetched one by one).

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;
use tokio::time::{sleep, Duration, Instant};

use crate::agents::{OwnEvent, OwnKind, ReplyRecord};
use crate::api::{seg, ApiClient, Conversation};
use crate::fake_graph::SendRecord;
use crate::load::{InboundState, StatusAcks};
use crate::stats::Latency;
use crate::webhook::{OutStatus, Population};

const PAGE: usize = 500;
const MAX_EXAMPLES: usize = 5;

/// Lists every conversation (admin) and fetches, with its messages, each one of a customer of
/// `pop` (or whose customer the list does not say).
pub async fn fetch_conversations(
    api: &ApiClient,
    admin_token: &str,
    pop: &Population,
) -> anyhow::Result<Vec<Conversation>> {
    let ours: HashSet<&str> = pop.customers.iter().map(|c| c.wa_id.as_str()).collect();
    let mut ids: Vec<String> = Vec::new();
    let mut seen = HashSet::new();
    let mut after: Option<String> = None;
    for _page in 0..100_000 {
        let path = match &after {
            None => format!("/api/v1/conversations?limit={PAGE}"),
            Some(a) => format!("/api/v1/conversations?limit={PAGE}&after={}", seg(a)),
        };
        let (status, v) = get_with_retry(api, admin_token, &path).await?;
        if !status.is_success() {
            bail!("GET {path} (admin) answered {status}: {v}");
        }
        let convs: Vec<Conversation> =
            serde_json::from_value(v.get("conversations").cloned().unwrap_or(Value::Null))
                .with_context(|| format!("GET {path}: no conversations array"))?;
        for c in convs {
            let of_this_run = c.customer.as_deref().is_none_or(|w| ours.contains(w));
            if of_this_run && seen.insert(c.id.clone()) {
                ids.push(c.id);
            }
        }
        let next = match v.get("next_after") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        match next {
            Some(n) if Some(&n) != after.as_ref() => after = Some(n),
            _ => break,
        }
    }

    let results: Vec<anyhow::Result<Conversation>> = stream::iter(ids)
        .map(|id| async move {
            let path = format!("/api/v1/conversations/{}", seg(&id));
            let (status, v) = get_with_retry(api, admin_token, &path).await?;
            if !status.is_success() {
                bail!("GET {path} (admin) answered {status}: {v}");
            }
            let c: Conversation =
                serde_json::from_value(v).with_context(|| format!("GET {path}: bad body"))?;
            Ok(c)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn get_with_retry(
    api: &ApiClient,
    token: &str,
    path: &str,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let mut last = String::new();
    for attempt in 0..4u64 {
        if attempt > 0 {
            sleep(Duration::from_millis(200 * attempt)).await;
        }
        match api.call(token, Method::GET, path, None).await {
            Ok((s, v)) if !s.is_server_error() => return Ok((s, v)),
            Ok((s, v)) => last = format!("{s}: {v}"),
            Err(kind) => last = kind,
        }
    }
    bail!("GET {path} failed: {last}")
}

/// Outcome of one check.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Check {
    pub passed: bool,
    pub counts: BTreeMap<String, u64>,
    pub examples: Vec<String>,
}

impl Check {
    fn count(&mut self, k: &str, n: u64) {
        *self.counts.entry(k.to_string()).or_insert(0) += n;
    }

    fn example(&mut self, e: String) {
        if self.examples.len() < MAX_EXAMPLES {
            self.examples.push(e);
        }
    }
}

/// The whole audit.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Audit {
    pub passed: bool,
    pub checks: BTreeMap<String, Check>,
    /// Informational numbers that do not decide pass/fail.
    pub notes: BTreeMap<String, u64>,
    /// Problems that prevented the audit from running (then `passed` is false).
    pub errors: Vec<String>,
}

impl Audit {
    pub fn failed(msg: String) -> Audit {
        Audit {
            passed: false,
            errors: vec![msg],
            ..Default::default()
        }
    }
}

/// What the load test observed during the run.
pub struct Observed<'a> {
    pub wamid_prefix: &'a str,
    pub ledger: &'a HashMap<String, InboundState>,
    pub population: &'a Population,
    pub ownership: &'a [OwnEvent],
    pub replies: &'a [ReplyRecord],
    pub replay_mismatches: &'a [(String, String)],
    pub sends: &'a [SendRecord],
    pub status_acked: &'a HashMap<String, StatusAcks>,
    pub seen_via_sse: &'a HashSet<String>,
    /// Outbound message id -> wamids the agents' event streams showed for it.
    pub wamids_seen: &'a HashMap<String, HashSet<String>>,
    pub agents: usize,
    /// When the broker was SIGKILLed (`--crash-after`).
    pub kills: &'a [Instant],
    /// Start of the load; times in examples are seconds since then.
    pub origin: Instant,
}

impl Observed<'_> {
    /// `t` as seconds since the start of the load, e.g. `1.532s`.
    fn t(&self, t: Instant) -> String {
        if t >= self.origin {
            format!("{:.3}s", (t - self.origin).as_secs_f64())
        } else {
            format!("-{:.3}s", (self.origin - t).as_secs_f64())
        }
    }
}

fn norm(s: &str) -> &str {
    s.trim_start_matches('+')
}

/// Reply latencies to the fake Graph API, computed by the audit.
#[derive(Default)]
pub struct ReplyLatency {
    /// From the 202 arriving to the Graph API receiving the send (0 when it came first).
    pub from_ack: Latency,
    /// From the reply request being sent to the Graph API receiving the send.
    pub from_request: Latency,
}

/// Runs every check; also returns the reply-to-Graph latencies.
pub fn check(obs: &Observed<'_>, convs: &[Conversation]) -> (Audit, ReplyLatency) {
    let mut audit = Audit::default();
    audit
        .notes
        .insert("conversations".into(), convs.len() as u64);
    let reply_latency = ReplyLatency::default();

    audit
        .checks
        .insert("inbound_stored_once".into(), inbound(obs, convs));
    audit.checks.insert(
        "one_conversation_per_customer".into(),
        one_per_customer(convs),
    );

    let mut owner = Check::default();
    let violations = ownership_violations(obs.ownership);
    owner.count(
        "successful_claims",
        obs.ownership
            .iter()
            .filter(|e| e.kind == OwnKind::Claim)
            .count() as u64,
    );
    owner.count(
        "adoptions",
        obs.ownership
            .iter()
            .filter(|e| e.kind == OwnKind::Adopt)
            .count() as u64,
    );
    owner.count(
        "resolves",
        obs.ownership
            .iter()
            .filter(|e| e.kind == OwnKind::Resolve)
            .count() as u64,
    );
    owner.count("violations", violations.len() as u64);
    for v in violations {
        owner.example(v);
    }
    owner.passed = owner.counts.get("violations").copied().unwrap_or(0) == 0;
    audit.checks.insert("single_owner".into(), owner);

    let (double, lost) = replies(obs, convs, &reply_latency);
    audit.checks.insert("no_double_send".into(), double);
    audit.checks.insert("no_lost_replies".into(), lost);

    let mut idem = Check::default();
    idem.count("mismatches", obs.replay_mismatches.len() as u64);
    for (a, b) in obs.replay_mismatches {
        idem.example(format!(
            "same idempotency key answered message {a} then {b}"
        ));
    }
    idem.passed = obs.replay_mismatches.is_empty();
    audit.checks.insert("reply_idempotency".into(), idem);

    audit
        .checks
        .insert("statuses_forward_only".into(), statuses(obs, convs));

    if obs.agents > 0 {
        let ours: HashSet<&str> = obs
            .population
            .customers
            .iter()
            .map(|c| c.wa_id.as_str())
            .collect();
        let unseen = convs
            .iter()
            .filter(|c| {
                c.customer
                    .as_deref()
                    .is_some_and(|x| ours.contains(norm(x)))
            })
            .filter(|c| !obs.seen_via_sse.contains(&c.id))
            .count();
        audit.notes.insert(
            "conversations_never_seen_on_event_stream".into(),
            unseen as u64,
        );
    }

    audit.passed = audit.checks.values().all(|c| c.passed);
    (audit, reply_latency)
}

fn inbound(obs: &Observed<'_>, convs: &[Conversation]) -> Check {
    let mut c = Check::default();
    // wamid -> conversations it is stored in (one entry per stored copy)
    let mut stored: HashMap<&str, Vec<&Conversation>> = HashMap::new();
    for conv in convs {
        for m in conv.messages.iter().flatten() {
            if m.direction.as_deref() != Some("inbound") {
                continue;
            }
            if let Some(w) = m.wamid.as_deref() {
                if w.starts_with(obs.wamid_prefix) {
                    stored.entry(w).or_default().push(conv);
                }
            }
        }
    }
    for (wamid, st) in obs.ledger {
        let copies = stored.get(wamid.as_str()).map(Vec::len).unwrap_or(0);
        if st.acked {
            c.count("acked", 1);
        }
        if copies > 1 {
            c.count("duplicated", 1);
            c.example(format!("{wamid} stored {copies} times"));
        }
        if st.acked && copies == 0 {
            c.count("missing", 1);
            c.example(format!("{wamid} acknowledged with 200 but not stored"));
        }
        if copies == 1 {
            if st.acked {
                c.count("acked_stored_once", 1);
            } else {
                c.count("unacked_but_stored", 1);
            }
            let (Some(conv), Some(cust)) = (
                stored.get(wamid.as_str()).and_then(|v| v.first()),
                obs.population.customers.get(st.customer),
            ) else {
                continue;
            };
            let num = &obs.population.numbers[cust.number];
            let number_ok = conv.number.as_deref().is_none_or(|n| {
                norm(n) == num.phone_number_id || norm(n) == num.display_phone_number
            });
            let customer_ok = conv
                .customer
                .as_deref()
                .is_none_or(|x| norm(x) == cust.wa_id);
            if !(number_ok && customer_ok) {
                c.count("misplaced", 1);
                c.example(format!(
                    "{wamid} from {} to {} stored in conversation {} ({:?}, {:?})",
                    cust.wa_id, num.phone_number_id, conv.id, conv.number, conv.customer
                ));
            }
        }
    }
    for (wamid, v) in &stored {
        if !obs.ledger.contains_key(*wamid) {
            c.count("unknown", v.len() as u64);
            c.example(format!("{wamid} stored but never sent"));
        }
    }
    c.passed = ["duplicated", "missing", "misplaced", "unknown"]
        .iter()
        .all(|k| c.counts.get(*k).copied().unwrap_or(0) == 0);
    c
}

fn one_per_customer(convs: &[Conversation]) -> Check {
    let mut c = Check::default();
    let mut by_pair: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
    for conv in convs {
        if let (Some(n), Some(cu)) = (conv.number.as_deref(), conv.customer.as_deref()) {
            by_pair
                .entry((norm(n), norm(cu)))
                .or_default()
                .push(&conv.id);
        }
    }
    c.count("pairs", by_pair.len() as u64);
    for ((n, cu), ids) in &by_pair {
        if ids.len() > 1 {
            c.count("duplicate_pairs", 1);
            c.example(format!("number {n} customer {cu}: conversations {ids:?}"));
        }
    }
    c.passed = c.counts.get("duplicate_pairs").copied().unwrap_or(0) == 0;
    c
}

/// Pairs of successful claims of one conversation that no resolve can separate.
pub fn ownership_violations(events: &[OwnEvent]) -> Vec<String> {
    let mut by_conv: HashMap<&str, Vec<&OwnEvent>> = HashMap::new();
    for e in events {
        by_conv.entry(&e.conversation).or_default().push(e);
    }
    let mut out = Vec::new();
    for (conv, evs) in by_conv {
        let claims: Vec<&OwnEvent> = evs
            .iter()
            .copied()
            .filter(|e| e.kind != OwnKind::Resolve)
            .collect();
        let ends: Vec<&OwnEvent> = evs
            .iter()
            .copied()
            .filter(|e| e.kind == OwnKind::Resolve)
            .collect();
        // `first`'s owner may have let go before `second` was granted.
        let separated = |first: &OwnEvent, second: &OwnEvent| {
            first.sent <= second.recv
                && ends.iter().any(|e| {
                    e.agent == first.agent && e.recv >= first.sent && e.sent <= second.recv
                })
        };
        for i in 0..claims.len() {
            for j in i + 1..claims.len() {
                let (a, b) = (claims[i], claims[j]);
                if !separated(a, b) && !separated(b, a) {
                    out.push(format!(
                        "conversation {conv}: agent {} ({:?}) and agent {} ({:?}) owned it at once",
                        a.agent + 1,
                        a.kind,
                        b.agent + 1,
                        b.kind
                    ));
                }
            }
        }
    }
    out.sort();
    out
}

/// The reply key embedded in our reply texts (`[lt reply KEY]`).
fn reply_key(text: &str) -> Option<&str> {
    let start = text.find("[lt reply ")? + "[lt reply ".len();
    let end = text[start..].find(']')? + start;
    Some(&text[start..end])
}

fn replies(obs: &Observed<'_>, convs: &[Conversation], lat: &ReplyLatency) -> (Check, Check) {
    let mut double = Check::default();
    let mut lost = Check::default();

    // Accepted sends by biz_opaque_callback_data, and by reply key (fallback when it is absent).
    let mut by_opaque: HashMap<&str, Vec<&SendRecord>> = HashMap::new();
    let mut by_key: HashMap<&str, Vec<&SendRecord>> = HashMap::new();
    for s in obs.sends {
        match s.biz_opaque.as_deref() {
            Some(o) => by_opaque.entry(o).or_default().push(s),
            None => {
                double.count("without_biz_opaque_callback_data", 1);
                double.example(format!(
                    "send to {} ({:?}) has no biz_opaque_callback_data",
                    s.to, s.text
                ));
            }
        }
        if let Some(k) = s.text.as_deref().and_then(reply_key) {
            by_key.entry(k).or_default().push(s);
        }
    }
    double.count("sends", obs.sends.len() as u64);
    let mut stored_wamid: HashMap<&str, Option<&str>> = HashMap::new();
    for conv in convs {
        for m in conv.messages.iter().flatten() {
            stored_wamid.insert(m.id.as_str(), m.wamid.as_deref());
        }
    }
    for (o, v) in &by_opaque {
        if v.len() < 2 {
            continue;
        }
        let mut sends: Vec<&SendRecord> = v.clone();
        sends.sort_by_key(|s| s.at);
        let mut recorded: HashSet<&str> = obs
            .wamids_seen
            .get(*o)
            .map(|s| s.iter().map(String::as_str).collect())
            .unwrap_or_default();
        if let Some(w) = stored_wamid.get(o).copied().flatten() {
            recorded.insert(w);
        }
        if resent_only_across_kills(&sends, &recorded, obs.kills) {
            double.count("resent_after_crash", 1);
            let times: Vec<String> = sends.iter().map(|s| obs.t(s.at)).collect();
            double.example(format!(
                "(allowed) message {o} was in flight at a SIGKILL and sent again after the restart: \
                 accepted at {}",
                times.join(", ")
            ));
            continue;
        }
        double.count("sent_more_than_once", 1);
        let list: Vec<String> = sends
            .iter()
            .map(|s| format!("{} at {}", s.wamid, obs.t(s.at)))
            .collect();
        double.example(format!(
            "message {o} reached the Graph API {} times: {} (stored wamid {:?})",
            sends.len(),
            list.join(", "),
            stored_wamid.get(o).copied().flatten()
        ));
    }
    double.passed = ["sent_more_than_once", "without_biz_opaque_callback_data"]
        .iter()
        .all(|k| double.counts.get(*k).copied().unwrap_or(0) == 0);

    let mut messages: HashMap<&str, (&Conversation, &crate::api::Message)> = HashMap::new();
    for conv in convs {
        for m in conv.messages.iter().flatten() {
            messages.insert(m.id.as_str(), (conv, m));
        }
    }
    let mut done = HashSet::new();
    for r in obs.replies {
        if !done.insert(r.message_id.as_str()) {
            continue;
        }
        lost.count("accepted", 1);
        let reached = by_opaque
            .get(r.message_id.as_str())
            .or_else(|| by_key.get(r.key.as_str()));
        let stored = messages.get(r.message_id.as_str());
        if stored.is_none() {
            lost.count("missing_in_broker", 1);
            lost.example(format!(
                "reply {} (conversation {}) answered 202 but is not stored",
                r.message_id, r.conversation
            ));
        }
        match reached.and_then(|v| v.iter().min_by_key(|s| s.at)) {
            Some(send) => {
                lost.count("reached_graph", 1);
                lat.from_ack
                    .record(send.at.saturating_duration_since(r.accepted_at));
                lat.from_request
                    .record(send.at.saturating_duration_since(r.requested_at));
                if let Some((conv, _)) = stored {
                    let number_ok = conv.number.as_deref().is_none_or(|n| {
                        norm(n) == send.phone_number_id
                            || obs.population.display_of(&send.phone_number_id) == norm(n)
                    });
                    let to_ok = conv.customer.as_deref().is_none_or(|c| norm(c) == send.to);
                    if !(number_ok && to_ok) {
                        lost.count("wrong_recipient", 1);
                        lost.example(format!(
                            "reply {} of conversation {} ({:?}/{:?}) was sent from {} to {}",
                            r.message_id,
                            conv.id,
                            conv.number,
                            conv.customer,
                            send.phone_number_id,
                            send.to
                        ));
                    }
                }
            }
            None => {
                let failed_with_code = stored.is_some_and(|(_, m)| {
                    m.status.as_deref() == Some("failed") && m.error_code().is_some()
                });
                if failed_with_code {
                    lost.count("failed_with_code", 1);
                } else {
                    lost.count("lost", 1);
                    lost.example(format!(
                        "reply {} by agent {} (conversation {}) never reached the Graph API; stored status {:?}",
                        r.message_id,
                        r.agent + 1,
                        r.conversation,
                        stored.and_then(|(_, m)| m.status.clone())
                    ));
                }
            }
        }
    }
    lost.passed = ["lost", "missing_in_broker", "wrong_recipient"]
        .iter()
        .all(|k| lost.counts.get(*k).copied().unwrap_or(0) == 0);
    (double, lost)
}

/// How long before a SIGKILL a send accepted by the Graph API still counts as "in flight" (the
/// broker may not have recorded the answer yet).
pub const IN_FLIGHT_WINDOW: Duration = Duration::from_secs(2);

/// Whether repeated sends of one message are explained by SIGKILLs: every two consecutive sends
/// straddle a SIGKILL that came at most `IN_FLIGHT_WINDOW` after the earlier one, and the broker
/// never showed that it had recorded the answer to any send but the last (neither its stored
/// wamid nor one its event stream announced is one of the earlier ones), i.e. each earlier send
/// was in flight when the broker died. At-least-once delivery cannot avoid that; resending a
/// send it had recorded, or one from long before, it can.
fn resent_only_across_kills(
    sends: &[&SendRecord],
    recorded: &HashSet<&str>,
    kills: &[Instant],
) -> bool {
    let kill_between = |a: Instant, b: Instant| {
        kills
            .iter()
            .any(|&k| a <= k && k < b && k.saturating_duration_since(a) <= IN_FLIGHT_WINDOW)
    };
    let gaps_ok = sends.windows(2).all(|w| kill_between(w[0].at, w[1].at));
    let earlier_unrecorded = sends[..sends.len() - 1]
        .iter()
        .all(|s| !recorded.contains(s.wamid.as_str()));
    gaps_ok && earlier_unrecorded
}

fn statuses(obs: &Observed<'_>, convs: &[Conversation]) -> Check {
    let mut c = Check::default();
    for conv in convs {
        for m in conv.messages.iter().flatten() {
            if m.direction.as_deref() != Some("outbound") {
                continue;
            }
            let Some(acked) = m.wamid.as_deref().and_then(|w| obs.status_acked.get(w)) else {
                continue;
            };
            c.count("checked", 1);
            let stored = m.status.as_deref().unwrap_or("");
            let ok = OutStatus::rank_of(stored).is_some_and(|r| r >= acked.max as u8);
            if !ok {
                c.count("behind", 1);
                let wamid = m.wamid.as_deref().unwrap_or("");
                let graph = obs
                    .sends
                    .iter()
                    .find(|s| s.wamid == wamid)
                    .map(|s| obs.t(s.at))
                    .unwrap_or_else(|| "?".into());
                let when = |i: usize| acked.at[i].map(|t| obs.t(t)).unwrap_or_else(|| "-".into());
                c.example(format!(
                    "message {} ({wamid}): `{}` acknowledged, stored status `{stored}` \
                     (Graph accepted at {graph}; sent/delivered/read acked at {}/{}/{})",
                    m.id,
                    acked.max.as_str(),
                    when(0),
                    when(1),
                    when(2)
                ));
            }
        }
    }
    c.passed = c.counts.get("behind").copied().unwrap_or(0) == 0;
    c
}

/// Polls until every accepted reply reached the fake Graph API or is stored as failed, or until
/// the deadline. Returns how many are still pending.
pub async fn wait_for_sends(
    api: &ApiClient,
    admin_token: &str,
    replies: &[ReplyRecord],
    graph: &crate::fake_graph::GraphState,
    deadline: Instant,
) -> usize {
    let mut pending: Vec<&ReplyRecord> = replies.iter().collect();
    let mut last_broker_check = Instant::now();
    loop {
        pending.retain(|r| graph.count_for(&r.message_id) == 0);
        if !pending.is_empty() && last_broker_check.elapsed() >= Duration::from_secs(1) {
            last_broker_check = Instant::now();
            let convs: HashSet<&str> = pending.iter().map(|r| r.conversation.as_str()).collect();
            let mut failed = HashSet::new();
            for conv in convs {
                let path = format!("/api/v1/conversations/{}", seg(conv));
                if let Ok((s, v)) = api.call(admin_token, Method::GET, &path, None).await {
                    if s.is_success() {
                        if let Ok(c) = serde_json::from_value::<Conversation>(v) {
                            for m in c.messages.iter().flatten() {
                                if m.status.as_deref() == Some("failed") {
                                    failed.insert(m.id.clone());
                                }
                            }
                        }
                    }
                }
            }
            pending.retain(|r| !failed.contains(&r.message_id));
        }
        if pending.is_empty() || Instant::now() >= deadline {
            return pending.len();
        }
        sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Message;

    fn ev(conv: &str, agent: usize, kind: OwnKind, t0: Instant, a: u64, b: u64) -> OwnEvent {
        OwnEvent {
            conversation: conv.into(),
            agent,
            kind,
            sent: t0 + Duration::from_millis(a),
            recv: t0 + Duration::from_millis(b),
        }
    }

    #[test]
    fn ownership_detects_overlap_only() {
        let t = Instant::now();
        // A claims, resolves, B claims later: fine.
        let ok = vec![
            ev("c1", 0, OwnKind::Claim, t, 0, 5),
            ev("c1", 0, OwnKind::Resolve, t, 100, 105),
            ev("c1", 1, OwnKind::Claim, t, 200, 205),
        ];
        assert!(ownership_violations(&ok).is_empty());
        // Resolve and the next claim overlap in time: still explainable.
        let racy = vec![
            ev("c1", 0, OwnKind::Claim, t, 0, 5),
            ev("c1", 0, OwnKind::Resolve, t, 100, 110),
            ev("c1", 1, OwnKind::Claim, t, 102, 108),
        ];
        assert!(ownership_violations(&racy).is_empty());
        // Two successful claims and no resolve in between: violation.
        let bad = vec![
            ev("c2", 0, OwnKind::Claim, t, 0, 5),
            ev("c2", 1, OwnKind::Claim, t, 1, 6),
            ev("c2", 0, OwnKind::Resolve, t, 100, 105),
        ];
        assert_eq!(ownership_violations(&bad).len(), 1);
        // Same agent twice without resolve: violation too.
        let twice = vec![
            ev("c3", 0, OwnKind::Claim, t, 0, 5),
            ev("c3", 0, OwnKind::Claim, t, 50, 55),
        ];
        assert_eq!(ownership_violations(&twice).len(), 1);
        // A resolve by someone else does not separate.
        let other = vec![
            ev("c4", 0, OwnKind::Claim, t, 0, 5),
            ev("c4", 2, OwnKind::Resolve, t, 10, 15),
            ev("c4", 1, OwnKind::Claim, t, 50, 55),
        ];
        assert_eq!(ownership_violations(&other).len(), 1);
        // An adoption (a read showed agent 1 as owner) while agent 2's claim holds: violation.
        let adopted = vec![
            ev("c5", 1, OwnKind::Claim, t, 0, 5),
            ev("c5", 0, OwnKind::Adopt, t, 50, 55),
        ];
        assert_eq!(ownership_violations(&adopted).len(), 1);
        // An adoption after the other owner's resolve: fine.
        let handed = vec![
            ev("c6", 1, OwnKind::Claim, t, 0, 5),
            ev("c6", 1, OwnKind::Resolve, t, 20, 25),
            ev("c6", 0, OwnKind::Adopt, t, 50, 55),
        ];
        assert!(ownership_violations(&handed).is_empty());
    }

    fn msg(id: &str, dir: &str, wamid: &str, status: &str) -> Message {
        Message {
            id: id.into(),
            direction: Some(dir.into()),
            wamid: Some(wamid.into()),
            status: Some(status.into()),
            error: None,
        }
    }

    #[test]
    fn full_check() {
        let pop = Population::new(1, 3);
        let c0 = &pop.customers[0];
        let c1 = &pop.customers[1];
        let mut ledger = HashMap::new();
        ledger.insert(
            "wamid.LTX1".to_string(),
            InboundState {
                customer: 0,
                acked: true,
            },
        );
        ledger.insert(
            "wamid.LTX2".to_string(),
            InboundState {
                customer: 1,
                acked: true,
            },
        );
        ledger.insert(
            "wamid.LTX3".to_string(),
            InboundState {
                customer: 1,
                acked: false,
            },
        );
        let t = Instant::now();
        let replies = vec![
            ReplyRecord {
                conversation: "1".into(),
                message_id: "m1".into(),
                key: "k1".into(),
                agent: 0,
                requested_at: t,
                accepted_at: t,
            },
            ReplyRecord {
                conversation: "2".into(),
                message_id: "m2".into(),
                key: "k2".into(),
                agent: 0,
                requested_at: t,
                accepted_at: t,
            },
        ];
        let sends = vec![SendRecord {
            phone_number_id: pop.numbers[0].phone_number_id.clone(),
            to: c0.wa_id.clone(),
            text: Some("x [lt reply k1]".into()),
            template: false,
            biz_opaque: Some("m1".into()),
            wamid: "wamid.OUT1".into(),
            at: t + Duration::from_millis(3),
        }];
        let mut status_acked = HashMap::new();
        status_acked.insert("wamid.OUT1".to_string(), StatusAcks::new(OutStatus::Read));
        let mut m2 = msg("m2", "outbound", "", "failed");
        m2.error = Some(serde_json::json!({"code": 130429, "title": "Rate limit hit"}));
        m2.wamid = None;
        let convs = vec![
            Conversation {
                id: "1".into(),
                number: Some(pop.numbers[0].phone_number_id.clone()),
                customer: Some(c0.wa_id.clone()),
                status: Some("resolved".into()),
                assignee: None,
                messages: Some(vec![
                    msg("i1", "inbound", "wamid.LTX1", "received"),
                    msg("m1", "outbound", "wamid.OUT1", "read"),
                ]),
            },
            Conversation {
                id: "2".into(),
                number: Some(pop.numbers[0].phone_number_id.clone()),
                customer: Some(c1.wa_id.clone()),
                status: Some("queued".into()),
                assignee: None,
                messages: Some(vec![msg("i2", "inbound", "wamid.LTX2", "received"), m2]),
            },
        ];
        let seen = HashSet::new();
        let obs = Observed {
            wamid_prefix: "wamid.LTX",
            ledger: &ledger,
            population: &pop,
            ownership: &[],
            replies: &replies,
            replay_mismatches: &[],
            sends: &sends,
            status_acked: &status_acked,
            seen_via_sse: &seen,
            wamids_seen: &HashMap::new(),
            agents: 1,
            kills: &[],
            origin: t,
        };
        let (audit, lat) = check(&obs, &convs);
        assert!(audit.passed, "{audit:#?}");
        assert_eq!(lat.from_ack.summary().count, 1);
        assert_eq!(lat.from_request.summary().count, 1);
        assert_eq!(
            audit.checks["no_lost_replies"]
                .counts
                .get("failed_with_code"),
            Some(&1)
        );

        // Now break things: store LTX1 twice, mark OUT1 as sent only, lose m1 at the Graph.
        let mut broken = convs.clone();
        if let Some(ms) = broken[1].messages.as_mut() {
            ms.push(msg("i9", "inbound", "wamid.LTX1", "received"));
        }
        if let Some(ms) = broken[0].messages.as_mut() {
            ms[1].status = Some("sent".into());
        }
        let obs2 = Observed { sends: &[], ..obs };
        let (audit, _) = check(&obs2, &broken);
        assert!(!audit.passed);
        assert!(!audit.checks["inbound_stored_once"].passed);
        assert!(!audit.checks["statuses_forward_only"].passed);
        assert!(!audit.checks["no_lost_replies"].passed);
    }

    #[test]
    fn double_send_only_allowed_across_a_kill() {
        let pop = Population::new(1, 1);
        let t = Instant::now();
        let send = |ms: u64, opaque: &str| SendRecord {
            phone_number_id: pop.numbers[0].phone_number_id.clone(),
            to: pop.customers[0].wa_id.clone(),
            text: None,
            template: false,
            biz_opaque: Some(opaque.into()),
            wamid: format!("w{ms}"),
            at: t + Duration::from_millis(ms),
        };
        // m1: in flight at the kill (t+3000), resent after. m2: twice, with no kill between.
        // m3: across the kill, but the broker had recorded the first send's wamid.
        // m4: across the kill, but accepted long before it.
        let sends = vec![
            send(2990, "m1"),
            send(3200, "m1"),
            send(10, "m2"),
            send(20, "m2"),
            send(2500, "m3"),
            send(3300, "m3"),
            send(100, "m4"),
            send(3400, "m4"),
            send(2900, "m5"),
            send(3500, "m5"),
        ];
        let convs = vec![Conversation {
            id: "c".into(),
            messages: Some(vec![
                Message {
                    id: "m1".into(),
                    direction: Some("outbound".into()),
                    wamid: Some("w3200".into()),
                    ..Default::default()
                },
                Message {
                    id: "m3".into(),
                    direction: Some("outbound".into()),
                    wamid: Some("w2500".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }];
        let kills = [t + Duration::from_millis(3000)];
        // m5: across the kill, the event stream had shown the first wamid.
        let mut wamids_seen: HashMap<String, HashSet<String>> = HashMap::new();
        wamids_seen.insert("m5".into(), ["w2900".to_string()].into_iter().collect());
        let (ledger, acked, seen) = (HashMap::new(), HashMap::new(), HashSet::new());
        let obs = Observed {
            wamid_prefix: "wamid.LTX",
            ledger: &ledger,
            population: &pop,
            ownership: &[],
            replies: &[],
            replay_mismatches: &[],
            sends: &sends,
            status_acked: &acked,
            seen_via_sse: &seen,
            wamids_seen: &wamids_seen,
            agents: 0,
            kills: &kills,
            origin: t,
        };
        let (audit, _) = check(&obs, &convs);
        let c = &audit.checks["no_double_send"];
        assert_eq!(c.counts.get("resent_after_crash"), Some(&1), "{c:?}");
        assert_eq!(c.counts.get("sent_more_than_once"), Some(&4), "{c:?}");
        assert!(!c.passed);
        let only_crash = &sends[..2];
        let (audit, _) = check(
            &Observed {
                sends: only_crash,
                ..obs
            },
            &convs,
        );
        assert!(audit.checks["no_double_send"].passed);
    }

    #[test]
    fn reply_key_parsing() {
        assert_eq!(reply_key("hello [lt reply lt-AB-a1-3]"), Some("lt-AB-a1-3"));
        assert_eq!(reply_key("nothing"), None);
    }
}
