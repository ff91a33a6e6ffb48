//! `--campaign N`: the outbound side of a peak. N template sends (business-initiated, one per
//! distinct customer) spread over the run's numbers, while agents on the first number answer
//! their own customers, and what reached the fake Graph API measured against each number's mps.
//!
//! Until `POST /api/v1/conversations` is on main, a campaign's conversations are opened the way a
//! broker sees them today: each customer writes once (signed webhooks, 100 messages each), an
//! agent takes the conversation from its team's queue (`POST /api/v1/teams/support/next`), and
//! the template is sent through `POST /api/v1/conversations/{id}/messages`. The fake Graph API
//! lists one approved template, so the broker's start-up sync registers it.
//!
//! Phases: set-up (conversations opened and taken; not measured), then the campaign: every
//! template send posted as fast as the broker accepts them — by default through the bulk route
//! (`POST /api/v1/templates/{name}/sends`, `--campaign-batch` sends per request, each request one
//! owner's; `--campaign-batch 0`: one reply-route request per send from `--connections`
//! workers), while one
//! agent posts text replies at `--reply-rate` in conversations of its own on the first
//! number (never one that got a template, so no reply waits behind its own conversation's
//! template); then the drain, until the fake Graph API has every send (or `--drain-timeout`).
//!
//! The reply rate defaults to half the number's mps (at most 50/s): a number offered more replies
//! than its mps queues them whatever the outbox does, and the first number's campaign share would
//! starve behind them.
//!
//! The phases are functions of their own ([`prepare`], [`post`], [`wait_drained`], [`figures`]):
//! `--mixed` (`crate::mixed`) runs them beside the inbound run, with owners of its own and the
//! simulated agents' replies in place of the scripted replier.
//!
//! Reported: each number's sends per second at the fake Graph API (templates and replies) while
//! every number still had templates to send (the window where the sum of the numbers' limits is
//! due: per-number rate against `--mps`), the total over that window and over the whole campaign,
//! pair-rate violations the fake Graph API saw (it answers them with 131056, as Meta does), and
//! the replies' 202 → Graph request latency.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use reqwest::Method;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::api::ApiClient;
use crate::cli::Settings;
use crate::fake_graph::{GraphState, SendRecord};
use crate::stats::{Latency, LatencySummary};
use crate::webhook::{numbers, sign, unix_now};

/// The replying agent's default rate: this share of the number's mps, at most
/// [`MAX_DEFAULT_REPLY_RATE`] replies a second.
const DEFAULT_REPLY_SHARE: f64 = 0.5;
const MAX_DEFAULT_REPLY_RATE: f64 = 50.0;

/// Replies a second of a run: `--reply-rate`, or half the number's mps (at most 50).
pub fn reply_rate(s: &Settings) -> f64 {
    s.reply_rate
        .unwrap_or_else(|| (f64::from(s.mps) * DEFAULT_REPLY_SHARE).min(MAX_DEFAULT_REPLY_RATE))
}
/// Conversations on the first number kept for replies (no template is sent in them).
const REPLY_CONVERSATIONS: usize = 200;
/// Messages per set-up webhook.
const PER_WEBHOOK: usize = 100;
/// The template the fake Graph API lists as approved.
pub const TEMPLATE: &str = "lt_order_ready";

#[derive(Debug, Clone, Serialize)]
pub struct CampaignReport {
    pub numbers: usize,
    pub mps: u32,
    pub template_sends: usize,
    /// Template sends the broker answered 202.
    pub accepted: usize,
    pub refused: usize,
    /// Sends per bulk request (0: one reply-route request per send).
    pub batch: usize,
    /// Seconds posting the templates took, and the rate the broker accepted them at.
    pub post_s: f64,
    pub post_rate: f64,
    /// Sends the fake Graph API accepted, per number per second (first to last send).
    /// Sends (templates and replies) the fake Graph API accepted per number per second while
    /// every number still had templates to send.
    pub per_number: Vec<(String, f64)>,
    /// All sends a second over that window: the sum of the numbers' limits when each is paced.
    pub busy_rate: f64,
    /// Seconds of that window.
    pub busy_s: f64,
    /// Template sends a second from the first to the last.
    pub total_rate: f64,
    /// Replies a second: offered by the scripted replier (campaign mode), or the agents'
    /// replies accepted while the campaign drained (`--mixed`).
    pub reply_rate: f64,
    pub pair_rate_violations: u64,
    pub reply_to_graph: LatencySummary,
    pub replies_sent: usize,
    pub replies_unseen: usize,
    pub drained: bool,
}

impl CampaignReport {
    pub fn summary(&self) -> String {
        let mps = f64::from(self.mps.max(1));
        let min = self
            .per_number
            .iter()
            .map(|x| x.1)
            .fold(f64::INFINITY, f64::min);
        let max = self.per_number.iter().map(|x| x.1).fold(0.0, f64::max);
        let mut o = String::new();
        use std::fmt::Write;
        let _ = writeln!(
            o,
            "campaign   {} template sends over {} numbers at mps {}: {} accepted, {} refused, posted in {:.1} s ({:.1}/s) {}",
            self.template_sends, self.numbers, self.mps, self.accepted, self.refused, self.post_s, self.post_rate,
            match self.batch {
                0 => "one request per send".to_string(),
                n => format!("{n} per bulk request"),
            }
        );
        let _ = writeln!(
            o,
            "outbound   {:.1} sends/s while every number had templates to send ({:.1} s; sum of the numbers' mps {}); per number min {min:.1} max {max:.1} sends/s ({:+.2} % .. {:+.2} % of mps)",
            self.busy_rate,
            self.busy_s,
            u64::from(self.mps) * self.numbers as u64,
            (min / mps - 1.0) * 100.0,
            (max / mps - 1.0) * 100.0,
        );
        let _ = writeln!(
            o,
            "templates  {:.1} sends/s first to last; drained: {}",
            self.total_rate, self.drained
        );
        let _ = writeln!(
            o,
            "pair rate  {} violations seen by the fake Graph API",
            self.pair_rate_violations
        );
        let r = &self.reply_to_graph;
        let _ = writeln!(
            o,
            "replies    {} sent during the campaign at {:.1}/s ({} never reached the fake Graph API); 202->graph p50 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms",
            self.replies_sent, self.reply_rate, self.replies_unseen, r.p50_ms, r.p99_ms, r.p999_ms, r.max_ms
        );
        o
    }

    /// Passes when the run saw no pair-rate violation, every reply arrived and nothing was
    /// refused.
    pub fn passed(&self) -> bool {
        self.pair_rate_violations == 0 && self.replies_unseen == 0 && self.refused == 0
    }
}

/// A conversation taken by an agent.
struct Taken {
    id: String,
    number: String,
    token: String,
}

/// The set-up phase's result: the campaign's conversations, opened and taken.
pub struct Prepared {
    nums: Vec<crate::webhook::Number>,
    /// The template sends' conversations in posting order: round robin over the numbers, so
    /// every number's backlog grows from the start.
    sends: Vec<Taken>,
    /// The first number's conversations kept out of the campaign for replies: (id, owner token).
    reply_convs: Vec<(String, String)>,
}

/// Set-up (not measured): every campaign customer writes once (signed webhooks to `base`,
/// [`PER_WEBHOOK`] messages each), plus `reply_conversations` more customers of the first
/// number, and the agents of `owners` take all those conversations from the team's queue.
pub async fn prepare(
    s: &Settings,
    client: &reqwest::Client,
    base: &str,
    api: &ApiClient,
    owners: &[String],
    reply_conversations: usize,
) -> anyhow::Result<Prepared> {
    wait_template(api, &s.admin_token).await?;

    let nums = numbers(s.numbers);
    let per_number = s.campaign.div_ceil(nums.len().max(1));
    let run = format!("{:06}", rand::random::<u32>() % 1_000_000);
    let mut customers: Vec<(usize, String)> = Vec::new();
    for (ni, _) in nums.iter().enumerate() {
        let extra = if ni == 0 { reply_conversations } else { 0 };
        for c in 0..per_number + extra {
            customers.push((ni, format!("49{run}{ni:02}{c:07}")));
        }
    }
    let webhook_url = format!("{base}/webhooks/whatsapp");
    let batches: Vec<Vec<(usize, String)>> = customers
        .chunks(PER_WEBHOOK)
        .map(<[(usize, String)]>::to_vec)
        .collect();
    let secret = s.app_secret.clone();
    let nums_ref = &nums;
    let failures = AtomicUsize::new(0);
    stream::iter(batches)
        .for_each_concurrent(s.connections.min(16), |batch| {
            let client = client.clone();
            let url = webhook_url.clone();
            let secret = secret.clone();
            let failures = &failures;
            async move {
                let body = inbound_webhook(nums_ref, &batch);
                let sig = sign(secret.as_bytes(), body.as_bytes());
                let ok = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("X-Hub-Signature-256", sig)
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .await;
    anyhow::ensure!(
        failures.load(Ordering::Relaxed) == 0,
        "{} set-up webhooks were not acknowledged",
        failures.load(Ordering::Relaxed)
    );
    let taken = take_all(api, owners, customers.len(), s.drain_timeout).await?;

    // The campaign: templates to every conversation but the first number's reply ones.
    let mut reply_convs: Vec<(String, String)> = Vec::new();
    let mut by_number: Vec<Vec<Taken>> = (0..nums.len()).map(|_| Vec::new()).collect();
    for t in taken {
        if t.number == nums[0].phone_number_id && reply_convs.len() < reply_conversations {
            reply_convs.push((t.id, t.token));
            continue;
        }
        let n = nums
            .iter()
            .position(|n| n.phone_number_id == t.number)
            .unwrap_or(0);
        by_number[n].push(t);
    }
    let longest = by_number.iter().map(Vec::len).max().unwrap_or(0);
    let mut queues: Vec<std::vec::IntoIter<Taken>> =
        by_number.into_iter().map(Vec::into_iter).collect();
    let mut sends = Vec::new();
    for _ in 0..longest {
        sends.extend(queues.iter_mut().filter_map(Iterator::next));
    }
    Ok(Prepared {
        nums,
        sends,
        reply_convs,
    })
}

/// What posting the templates gave.
pub struct Posted {
    /// Template sends the broker answered 202 (or 200 with a message, in bulk).
    pub accepted: usize,
    pub refused: usize,
    /// When the first template request went out.
    pub started: Instant,
    /// Seconds posting took.
    pub post_s: f64,
}

/// Posts every template send of `p` as fast as the broker accepts them: through the bulk route,
/// `--campaign-batch` sends per request (each request one owner's: only the owner may send), or
/// with `--campaign-batch 0` one reply-route request per send from `--connections` workers.
pub async fn post(s: &Settings, api: &ApiClient, p: &Prepared) -> Posted {
    let accepted = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let started = Instant::now();
    if s.campaign_batch == 0 {
        stream::iter(p.sends.iter())
            .for_each_concurrent(s.connections, |t| {
                let (accepted, refused) = (&accepted, &refused);
                async move {
                    let body = json!({"template": {"name": TEMPLATE, "language": "en_US",
                                                   "parameters": ["Ana"]},
                                      "idempotency_key": format!("lt-t-{}", t.id)});
                    let path = format!("/api/v1/conversations/{}/messages", t.id);
                    match api.call(&t.token, Method::POST, &path, Some(&body)).await {
                        Ok((st, _)) if st.as_u16() == 202 => {
                            accepted.fetch_add(1, Ordering::Relaxed)
                        }
                        _ => refused.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
            .await;
    } else {
        // Still round robin over the numbers within each owner's requests.
        let mut by_owner: HashMap<&str, Vec<&Taken>> = HashMap::new();
        for t in &p.sends {
            by_owner.entry(t.token.as_str()).or_default().push(t);
        }
        let requests: Vec<(&str, Vec<&Taken>)> = by_owner
            .into_iter()
            .flat_map(|(token, ts)| {
                ts.chunks(s.campaign_batch)
                    .map(|c| (token, c.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        stream::iter(requests)
            .for_each_concurrent(s.connections.div_ceil(8).max(2), |(token, ts)| {
                let (accepted, refused) = (&accepted, &refused);
                async move {
                    let sends: Vec<Value> = ts
                        .iter()
                        .map(|t| {
                            json!({"conversation_id": t.id, "parameters": ["Ana"],
                                        "idempotency_key": format!("lt-t-{}", t.id)})
                        })
                        .collect();
                    let body = json!({"language": "en_US", "sends": sends});
                    let path = format!("/api/v1/templates/{TEMPLATE}/sends");
                    match api.call(token, Method::POST, &path, Some(&body)).await {
                        Ok((st, v)) if st.as_u16() == 200 => {
                            let ok = v["results"].as_array().map_or(0, |r| {
                                r.iter().filter(|x| x["message"].is_object()).count()
                            });
                            accepted.fetch_add(ok, Ordering::Relaxed);
                            refused.fetch_add(ts.len().saturating_sub(ok), Ordering::Relaxed);
                        }
                        _ => {
                            refused.fetch_add(ts.len(), Ordering::Relaxed);
                        }
                    }
                }
            })
            .await;
    }
    Posted {
        accepted: accepted.into_inner(),
        refused: refused.into_inner(),
        started,
        post_s: started.elapsed().as_secs_f64(),
    }
}

/// The drain: waits until the fake Graph API has accepted `want` template sends, or the
/// deadline passes. True when it has.
pub async fn wait_drained(graph: &GraphState, want: usize, deadline: Instant) -> bool {
    loop {
        if graph.templates_accepted() >= want {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs the campaign against a broker at `base` (webhooks) / `agent_base` (API): set-up,
/// templates posted while one agent replies on the first number, the drain, the figures.
pub async fn drive(
    s: &Settings,
    graph: &GraphState,
    base: &str,
    agent_base: &str,
) -> anyhow::Result<CampaignReport> {
    let client = crate::outcome::client(s.connections, Some(s.request_timeout))?;
    let api = ApiClient {
        client: client.clone(),
        base_url: agent_base.to_string(),
        timeout: s.request_timeout,
    };
    let prepared = prepare(s, &client, base, &api, &s.agent_tokens, REPLY_CONVERSATIONS).await?;

    let replies: Arc<parking_mutex::Replies> = Arc::default();
    let stop = Arc::new(tokio::sync::Notify::new());
    let reply_task = {
        let api = api.clone();
        let convs = prepared.reply_convs.clone();
        let replies = replies.clone();
        let stop = stop.clone();
        let rate = reply_rate(s);
        let reply_every = Duration::from_secs_f64(1.0 / rate.max(0.01));
        tokio::spawn(async move {
            if rate <= 0.0 {
                return;
            }
            let mut tick = tokio::time::interval(reply_every);
            let mut i = 0usize;
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.notified() => return,
                }
                let Some((conv, token)) = convs.get(i % convs.len().max(1)) else {
                    return;
                };
                i += 1;
                let body =
                    json!({"text": format!("reply {i}"), "idempotency_key": format!("lt-r-{i}")});
                let path = format!("/api/v1/conversations/{conv}/messages");
                if let Ok((st, v)) = api.call(token, Method::POST, &path, Some(&body)).await {
                    if st.as_u16() == 202 {
                        if let Some(id) = v["id"].as_str() {
                            replies.push(id.to_string(), Instant::now());
                        }
                    }
                }
            }
        })
    };
    let posted = post(s, &api, &prepared).await;
    let drained = wait_drained(graph, posted.accepted, Instant::now() + s.drain_timeout).await;
    stop.notify_one();
    let _ = reply_task.await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let replies = replies.take();
    Ok(figures(
        s,
        graph,
        &prepared,
        &posted,
        drained,
        &replies,
        reply_rate(s),
    ))
}

/// The report of a campaign: what reached the fake Graph API measured against each number's
/// mps (see the module docs), and the 202 -> Graph latency of `replies` (message id, when its
/// 202 arrived), offered at `reply_rate` a second.
pub fn figures(
    s: &Settings,
    graph: &GraphState,
    p: &Prepared,
    posted: &Posted,
    drained: bool,
    replies: &[(String, Instant)],
    reply_rate: f64,
) -> CampaignReport {
    let sends = graph.sends();
    let (latency, unseen) = replies_to_graph(&sends, replies);
    // Template spans per number: the busy window runs from the first template send to the end of
    // the number that ran out of templates first.
    let mut spans: HashMap<&str, (Instant, Instant, u64)> = HashMap::new();
    for r in sends.iter().filter(|r| r.template) {
        let e = spans
            .entry(r.phone_number_id.as_str())
            .or_insert((r.at, r.at, 0));
        e.0 = e.0.min(r.at);
        e.1 = e.1.max(r.at);
        e.2 += 1;
    }
    let busy = match (
        spans.values().map(|x| x.0).min(),
        spans.values().map(|x| x.1).min(),
    ) {
        (Some(a), Some(b)) if b > a => Some((a, b)),
        _ => None,
    };
    let busy_s = busy.map_or(0.0, |(a, b)| b.duration_since(a).as_secs_f64());
    // Every send in the window counts against its number's mps, replies included.
    let mut in_window: HashMap<&str, u64> = HashMap::new();
    if let Some((a, b)) = busy {
        for r in sends.iter().filter(|r| r.at >= a && r.at <= b) {
            *in_window.entry(r.phone_number_id.as_str()).or_default() += 1;
        }
    }
    let mut per_number: Vec<(String, f64)> = in_window
        .iter()
        .filter(|_| busy_s > 0.0)
        .map(|(k, n)| (k.to_string(), *n as f64 / busy_s))
        .collect();
    per_number.sort_by(|a, b| a.0.cmp(&b.0));
    let busy_rate = if busy_s > 0.0 {
        in_window.values().sum::<u64>() as f64 / busy_s
    } else {
        0.0
    };
    let first = spans.values().map(|x| x.0).min();
    let last = spans.values().map(|x| x.1).max();
    let total = spans.values().map(|x| x.2).sum::<u64>();
    let total_rate = match (first, last) {
        (Some(a), Some(b)) if b > a => total as f64 / b.duration_since(a).as_secs_f64(),
        _ => 0.0,
    };
    CampaignReport {
        numbers: p.nums.len(),
        mps: s.mps,
        template_sends: p.sends.len(),
        accepted: posted.accepted,
        refused: posted.refused,
        batch: s.campaign_batch,
        post_s: posted.post_s,
        post_rate: posted.accepted as f64 / posted.post_s.max(1e-9),
        per_number,
        busy_rate,
        busy_s,
        total_rate,
        reply_rate,
        pair_rate_violations: graph
            .counters
            .snapshot()
            .get("pair_rate_violations")
            .copied()
            .unwrap_or(0),
        reply_to_graph: latency.summary(),
        replies_sent: replies.len(),
        replies_unseen: unseen,
        drained,
    }
}

/// From each reply's 202 (message id, when the 202 arrived) to the fake Graph API accepting its
/// send (matched by `biz_opaque_callback_data`); also how many never arrived.
pub fn replies_to_graph(sends: &[SendRecord], replies: &[(String, Instant)]) -> (Latency, usize) {
    let arrived: HashMap<&str, Instant> = sends
        .iter()
        .filter_map(|r| r.biz_opaque.as_deref().map(|b| (b, r.at)))
        .collect();
    let latency = Latency::new();
    let mut unseen = 0;
    for (id, at) in replies {
        match arrived.get(id.as_str()) {
            Some(g) => latency.record(g.saturating_duration_since(*at)),
            None => unseen += 1,
        }
    }
    (latency, unseen)
}

/// Waits until the broker lists the fake Graph API's approved template (its start-up sync).
async fn wait_template(api: &ApiClient, admin: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((st, v)) = api
            .call(admin, Method::GET, "/api/v1/templates", None)
            .await
        {
            let approved = v["templates"].as_array().is_some_and(|ts| {
                ts.iter()
                    .any(|t| t["name"] == json!(TEMPLATE) && t["status"] == json!("APPROVED"))
            });
            if st.is_success() && approved {
                return Ok(());
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the broker did not list the approved template {TEMPLATE} within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Takes every queued conversation (`count` of them), spread over the agents.
async fn take_all(
    api: &ApiClient,
    tokens: &[String],
    count: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<Taken>> {
    anyhow::ensure!(!tokens.is_empty(), "--campaign needs at least one agent");
    let deadline = Instant::now() + timeout;
    let taken = tokio::sync::Mutex::new(Vec::with_capacity(count));
    let per_agent = 8;
    let workers = tokens
        .iter()
        .flat_map(|t| std::iter::repeat_n(t, per_agent));
    stream::iter(workers)
        .for_each_concurrent(None, |token| {
            let taken = &taken;
            async move {
                while Instant::now() < deadline && taken.lock().await.len() < count {
                    match api
                        .call(token, Method::POST, "/api/v1/teams/support/next", None)
                        .await
                    {
                        Ok((st, v)) if st.as_u16() == 200 => {
                            let id = v["id"].as_str().map(str::to_string);
                            let number = v["number"].as_str().unwrap_or("").to_string();
                            if let Some(id) = id {
                                taken.lock().await.push(Taken {
                                    id,
                                    number,
                                    token: token.clone(),
                                });
                            }
                        }
                        // Not queued yet (set-up webhooks still being handled), or refused.
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            }
        })
        .await;
    let taken = taken.into_inner();
    anyhow::ensure!(
        taken.len() >= count,
        "took {} of {count} conversations before the deadline",
        taken.len()
    );
    Ok(taken)
}

/// One signed-webhook body with a text message from each of `batch`'s customers.
fn inbound_webhook(nums: &[crate::webhook::Number], batch: &[(usize, String)]) -> String {
    let ts = unix_now();
    let mut by_number: HashMap<usize, Vec<&String>> = HashMap::new();
    for (n, c) in batch {
        by_number.entry(*n).or_default().push(c);
    }
    let changes: Vec<Value> = by_number
        .into_iter()
        .map(|(n, custs)| {
            let num = &nums[n];
            json!({"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": num.display_phone_number,
                             "phone_number_id": num.phone_number_id},
                "contacts": custs.iter().map(|c| json!({"profile": {"name": "Campaign"}, "wa_id": c})).collect::<Vec<_>>(),
                "messages": custs.iter().map(|c| json!({"from": c, "id": format!("wamid.LTC{c}"),
                    "timestamp": ts, "type": "text", "text": {"body": "hello"}})).collect::<Vec<_>>(),
            }})
        })
        .collect();
    json!({"object": "whatsapp_business_account",
           "entry": [{"id": crate::webhook::WABA_ID, "changes": changes}]})
    .to_string()
}

/// The replies posted, with when each was accepted (202).
mod parking_mutex {
    use std::sync::Mutex;
    use tokio::time::Instant;

    #[derive(Default)]
    pub struct Replies(Mutex<Vec<(String, Instant)>>);

    impl Replies {
        pub fn push(&self, id: String, at: Instant) {
            crate::stats::lock(&self.0).push((id, at));
        }

        pub fn take(&self) -> Vec<(String, Instant)> {
            std::mem::take(&mut *crate::stats::lock(&self.0))
        }
    }
}
