//! `--mixed`: a peak hour on one broker. The inbound run (`run::drive_and_audit`: webhooks at
//! `--rate`, agents claiming, replying and resolving, status callbacks, the end-of-run audit)
//! and, at the same time, a template campaign over the same numbers, run by `crate::campaign`'s
//! own phases (set-up, posting, drain, figures).
//!
//! Order: the campaign's set-up (its customers write once; agents of its own, `campaign1..C` of
//! the generated config, take the conversations from the queue) runs before the simulated agents
//! start and is not measured, so no simulated agent ever claims a campaign conversation and the
//! owners never take an inbound one. The templates are posted the moment the load starts, and
//! the campaign drains while the load runs (or after it).
//!
//! The campaign's replies are the simulated agents' replies accepted (202) from the first
//! template request to the last template reaching the fake Graph API: the replies that shared
//! their numbers with a draining campaign, 202 -> Graph measured at the fake Graph API as
//! campaign mode measures its own. Every reply of the run is also in the `reply 202->graph` row
//! and in the audit's `no_lost_replies`; campaign mode's scripted replier does not run.
//!
//! Bounds: posting takes at most one request timeout per request; the drain ends at
//! `--drain-timeout` after posting ends; each owner holds at most [`owner_room`] conversations.

use std::fmt::Write as _;
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::agents::ReplyRecord;
use crate::api::ApiClient;
use crate::broker_config::campaign_owner_token;
use crate::campaign::{self, CampaignReport, Posted, Prepared};
use crate::cli::Settings;
use crate::fake_graph::GraphState;
use crate::report::Report;

/// Agents that own the campaign's conversations (each bulk request is one owner's; four keep a
/// few requests in flight at once).
pub const OWNERS: usize = 4;

/// `max_concurrent` of each campaign owner: its share of the campaign, with room to spare.
pub fn owner_room(s: &Settings) -> u32 {
    u32::try_from(s.campaign / OWNERS + 1_000).unwrap_or(u32::MAX)
}

/// The campaign's conversations, opened and taken, waiting for the load to start.
pub struct Campaign {
    api: ApiClient,
    prepared: Prepared,
}

impl Campaign {
    /// The set-up phase against a broker at `base` (webhooks) / `agent_base` (API).
    pub async fn prepare(s: &Settings, base: &str, agent_base: &str) -> anyhow::Result<Campaign> {
        let client = crate::outcome::client(s.connections, Some(s.request_timeout))?;
        let api = ApiClient {
            client: client.clone(),
            base_url: agent_base.to_string(),
            timeout: s.request_timeout,
        };
        let owners: Vec<String> = (1..=OWNERS).map(campaign_owner_token).collect();
        let prepared = campaign::prepare(s, &client, base, &api, &owners, 0).await?;
        Ok(Campaign { api, prepared })
    }

    /// Posts the templates and waits for the drain, on a task of its own.
    pub fn start(self, s: &Settings, graph: Arc<GraphState>) -> Running {
        let s = s.clone();
        Running(tokio::spawn(async move {
            let posted = campaign::post(&s, &self.api, &self.prepared).await;
            let deadline = Instant::now() + s.drain_timeout;
            let drained = campaign::wait_drained(&graph, posted.accepted, deadline).await;
            Drained {
                prepared: self.prepared,
                posted,
                drained,
            }
        }))
    }
}

/// The campaign posting and draining.
pub struct Running(JoinHandle<Drained>);

impl Running {
    /// Waits for the drain (bounded: see the module docs).
    pub async fn finish(self) -> anyhow::Result<Drained> {
        self.0
            .await
            .map_err(|e| anyhow::anyhow!("the campaign task failed: {e}"))
    }
}

/// The campaign after its drain (or its drain deadline).
pub struct Drained {
    prepared: Prepared,
    posted: Posted,
    drained: bool,
}

impl Drained {
    /// The campaign's figures; its replies are those of `replies` accepted while it drained.
    pub fn report(
        &self,
        s: &Settings,
        graph: &GraphState,
        replies: &[ReplyRecord],
    ) -> CampaignReport {
        let start = self.posted.started;
        let end = graph
            .sends()
            .iter()
            .filter(|r| r.template)
            .map(|r| r.at)
            .max()
            .unwrap_or_else(Instant::now)
            .max(start);
        let during: Vec<(String, Instant)> = replies
            .iter()
            .filter(|r| r.accepted_at >= start && r.accepted_at <= end)
            .map(|r| (r.message_id.clone(), r.accepted_at))
            .collect();
        let window_s = end.duration_since(start).as_secs_f64();
        let rate = if window_s > 0.0 {
            during.len() as f64 / window_s
        } else {
            0.0
        };
        campaign::figures(
            s,
            graph,
            &self.prepared,
            &self.posted,
            self.drained,
            &during,
            rate,
        )
    }
}

/// The summary's lines for a `--mixed` run: the peak hour at a glance, then the campaign's own.
pub fn summary(r: &Report, c: &CampaignReport) -> String {
    let mut o = String::new();
    let count = |k: &str| r.agents.get(k).copied().unwrap_or(0);
    let ack = &r.latency_ms.webhook_ack;
    let claim = &r.latency_ms.claim;
    let reply = &r.latency_ms.reply_to_graph;
    let _ = writeln!(
        o,
        "mixed      one broker: webhooks acked {:.1}/s (offered {}), ack p50 {:.2} p99 {:.2} ms",
        r.achieved_rate,
        r.offered_rate
            .map_or_else(|| "closed loop".to_string(), |x| format!("{x:.1}/s")),
        ack.p50_ms,
        ack.p99_ms
    );
    let _ = writeln!(
        o,
        "           claims {} won of {} attempted ({} requests), p99 {:.2} ms; agents' replies {} accepted, 202->graph p50 {:.2} p99 {:.2} ms",
        count("claims_won"),
        count("claims_attempted"),
        claim.count,
        claim.p99_ms,
        count("replies_accepted"),
        reply.p50_ms,
        reply.p99_ms
    );
    let _ = writeln!(
        o,
        "           campaign drained: {}; audit {}",
        c.drained,
        if r.audit.passed { "PASS" } else { "FAIL" }
    );
    o.push_str(&c.summary());
    o
}
