//! Results: the JSON document written with `--json` and the human summary printed at the end.
//!
//! The JSON is the stable, machine-readable record of a run (CI reads `audit.passed`); the
//! summary is the same data for people. Both are produced from one `Report` value so they cannot
//! disagree. Latencies are milliseconds; rates are requests per second.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::audit::Audit;
use crate::broker_view::{BrokerLatency, BrokerView, MediaBacklog};
use crate::campaign::CampaignReport;
use crate::fanout::FanoutReport;
use crate::load::LoadSummary;
use crate::stats::LatencySummary;

/// Latency percentiles of the run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latencies {
    /// Scheduled webhooks answered 200, from intended send time.
    pub webhook_ack: LatencySummary,
    /// The generator's own share of `webhook_ack`: intended send time to the request starting.
    pub webhook_send_lag: LatencySummary,
    /// Claim requests, request to answer (200 and 409 alike).
    pub claim: LatencySummary,
    /// From a reply's 202 to the fake Graph API receiving the accepted send (0 when the send
    /// arrived before the 202 did).
    pub reply_to_graph: LatencySummary,
    /// From sending the reply request (the attempt that got 202) to the fake Graph API
    /// receiving the accepted send.
    pub reply_request_to_graph: LatencySummary,
    /// Status-callback webhooks answered 200, from when they were due.
    pub status_webhook_ack: LatencySummary,
}

/// The crash/restart of `--crash-after`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Crash {
    pub requested_at_s: f64,
    pub killed_at_s: Option<f64>,
    /// When the SIGKILL was sent (for the audit).
    #[serde(skip)]
    pub killed_at: Option<tokio::time::Instant>,
    /// From SIGKILL to /healthz answering 200 again.
    pub downtime_ms: Option<f64>,
    pub restarted: bool,
    pub error: Option<String>,
}

/// The `--baseline` comparison.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineResult {
    pub load: LoadSummary,
    pub latency_ms: LatencySummary,
    /// broker achieved rate / baseline achieved rate.
    pub ratio: f64,
    /// Where the trivial server ran: "process" or "in-process".
    pub mode: &'static str,
    /// Rounds of baseline-then-broker the duration was split into (1: baseline first, whole).
    pub rounds: u32,
    /// Each round's broker/baseline ratio, in order (one entry when `rounds` is 1).
    pub round_ratios: Vec<f64>,
    /// With rounds and a broker we started: its CPU seconds during its own slices, and during
    /// the baseline's (its background flushes and compactions, which would slow the baseline).
    pub broker_cpu_s: Option<f64>,
    pub broker_cpu_during_baseline_s: Option<f64>,
}

/// Everything a run reports.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub target: String,
    pub settings: BTreeMap<String, serde_json::Value>,
    pub mode: &'static str,
    pub offered_rate: Option<f64>,
    pub achieved_rate: f64,
    pub load: LoadSummary,
    pub webhooks: BTreeMap<String, u64>,
    pub latency_ms: Latencies,
    pub agents: BTreeMap<String, u64>,
    pub fake_graph: BTreeMap<String, u64>,
    /// Accepted sends per second of each number, at the fake Graph API (first to last send).
    pub outbound_per_number: BTreeMap<String, f64>,
    /// The `mps` each generated number was configured with.
    pub mps: u32,
    /// Failures by `<what>.<kind>`.
    pub errors: BTreeMap<String, u64>,
    pub crash: Option<Crash>,
    pub baseline: Option<BaselineResult>,
    /// The broker's own latency histograms over the run (not with `--crash-after`).
    pub broker_view: Option<BrokerView>,
    /// `--sse-agents`: the event streams' figures.
    pub fanout: Option<FanoutReport>,
    /// Replies still neither sent nor failed when the drain deadline passed.
    pub replies_pending_at_deadline: usize,
    /// `--media-share`: the broker's fetch backlog at the load's end and how long it took to drain.
    pub media_backlog: Option<MediaBacklog>,
    pub broker_shutdown: Option<String>,
    pub broker_log: Option<String>,
    pub audit: Audit,
    /// `--mixed`: the campaign that ran beside the load; its replies are the agents' replies
    /// accepted while it drained (see `crate::mixed`). Absent from other runs' JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<CampaignReport>,
}

fn lat_row(out: &mut String, name: &str, l: &LatencySummary) {
    if l.count == 0 {
        let _ = writeln!(out, "  {name:<16} {:>9}", "-");
    } else {
        let _ = writeln!(
            out,
            "  {name:<16} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9}",
            l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
        );
    }
}

fn broker_row(out: &mut String, name: &str, l: &Option<BrokerLatency>) {
    let Some(l) = l else {
        return;
    };
    let shares = l
        .share_within_ms
        .iter()
        .map(|(ms, share)| format!("<={ms}ms {:.2}%", share * 100.0))
        .collect::<Vec<_>>()
        .join("  ");
    let p99 = l
        .p99_at_most_ms
        .map(|ms| format!("<={ms}ms"))
        .unwrap_or_else(|| "beyond the buckets".into());
    let _ = writeln!(out, "  {name:<16} {shares}  p99 {p99}  count {}", l.count);
}

fn kv(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Report {
    /// Whether the run passed: its audit, and a `--mixed` run's campaign drained with no
    /// refused send, no pair-rate violation and every reply during it at the Graph API.
    pub fn passed(&self) -> bool {
        self.audit.passed
            && self
                .campaign
                .as_ref()
                .is_none_or(|c| c.drained && c.passed())
    }

    /// The human summary.
    pub fn summary(&self) -> String {
        let mut o = String::new();
        let w = &self.webhooks;
        let g = |k: &str| w.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            o,
            "switchboard-loadtest run {} against {}",
            self.run_id, self.target
        );
        let offered = self
            .offered_rate
            .map(|r| format!("{r:.1}/s"))
            .unwrap_or_else(|| "closed loop".into());
        let _ = writeln!(
            o,
            "webhooks   {} offered {offered}, achieved {:.1}/s over {:.2}s: sent {} acked {} not-sent {}",
            self.mode, self.achieved_rate, self.load.elapsed_s, self.load.sent, self.load.acked,
            self.load.not_sent
        );
        let _ = writeln!(
            o,
            "           messages acked {}, duplicates {} sent / {} acked, redeliveries {} sent / {} acked / {} given up",
            g("messages_acked"),
            g("duplicates_sent"),
            g("duplicates_acked"),
            g("redeliveries_sent"),
            g("redeliveries_acked"),
            g("redeliveries_given_up")
        );
        let _ = writeln!(
            o,
            "           status callbacks: {} webhooks sent / {} acked, {} statuses acked",
            g("status_webhooks_sent"),
            g("status_webhooks_acked"),
            g("statuses_acked")
        );
        let _ = writeln!(
            o,
            "latency ms             p50       p99     p99.9       max     count"
        );
        lat_row(&mut o, "webhook ack", &self.latency_ms.webhook_ack);
        lat_row(
            &mut o,
            "webhook send lag",
            &self.latency_ms.webhook_send_lag,
        );
        lat_row(&mut o, "claim", &self.latency_ms.claim);
        lat_row(&mut o, "reply 202->graph", &self.latency_ms.reply_to_graph);
        lat_row(
            &mut o,
            "reply req->graph",
            &self.latency_ms.reply_request_to_graph,
        );
        lat_row(&mut o, "status ack", &self.latency_ms.status_webhook_ack);
        if let Some(f) = &self.fanout {
            lat_row(&mut o, "200->sse event", &f.latency_ms);
        }
        if let Some(v) = &self.broker_view {
            if v.webhook.is_some() || v.claim.is_some() {
                let _ = writeln!(
                    o,
                    "broker-side (its /metrics histograms, handler start to answer)"
                );
                broker_row(&mut o, "webhook", &v.webhook);
                broker_row(&mut o, "claim", &v.claim);
            }
        }
        if let Some(f) = &self.fanout {
            let _ = writeln!(
                o,
                "fan-out    {} streams ({} open) over {} teams: {} messages acked, delivered/due {}/{} = {:.4} %",
                f.streams,
                f.connected,
                f.teams,
                f.messages_acked,
                f.delivered,
                f.due,
                f.delivered_share * 100.0
            );
            let _ = writeln!(
                o,
                "           events {} (message.created {}), lagged {} (missed {}), duplicates {}, foreign {}, seen unacked {}, before their 200 {}, oversized {}, untracked {}",
                f.events,
                f.message_events,
                f.lagged_events,
                f.lagged_missed,
                f.duplicates,
                f.foreign,
                f.seen_unacked,
                f.before_ack,
                f.oversized_events,
                f.untracked_messages
            );
            if let (Some(cpu), Some(per)) = (f.broker_cpu_s, f.broker_cpu_us_per_event) {
                let _ = writeln!(
                    o,
                    "           broker CPU {cpu:.2} s over load and drain: {per:.2} µs per delivered event"
                );
            }
            if !f.stream_errors.is_empty() {
                let _ = writeln!(o, "           stream errors {}", kv(&f.stream_errors));
            }
        }
        let _ = writeln!(o, "agents     {}", kv(&self.agents));
        let _ = writeln!(o, "fake graph {}", kv(&self.fake_graph));
        if let Some(b) = &self.media_backlog {
            let _ = match b.drained_after_s {
                Some(t) => writeln!(
                    o,
                    "media      {} fetches queued at the load's end, drained {t:.2} s later",
                    b.at_load_end
                ),
                None => writeln!(
                    o,
                    "media      {} fetches queued at the load's end, {} still queued at the drain deadline",
                    b.at_load_end, b.left
                ),
            };
        }
        let rates: Vec<f64> = self.outbound_per_number.values().copied().collect();
        if !rates.is_empty() {
            let total: f64 = rates.iter().sum();
            let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
            let max = rates.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(
                o,
                "outbound   {total:.1} sends/s through {} numbers; per number min {min:.1} max {max:.1} sends/s (mps {}: {:+.1} % .. {:+.1} %)",
                rates.len(),
                self.mps,
                (min / f64::from(self.mps.max(1)) - 1.0) * 100.0,
                (max / f64::from(self.mps.max(1)) - 1.0) * 100.0,
            );
        }
        if let Some(c) = &self.campaign {
            o.push_str(&crate::mixed::summary(self, c));
        }
        if let Some(c) = &self.crash {
            match (&c.error, c.killed_at_s, c.downtime_ms) {
                (None, Some(k), Some(d)) => {
                    let _ = writeln!(
                        o,
                        "crash      SIGKILL at {k:.2}s, healthy again after {d:.0} ms"
                    );
                }
                _ => {
                    let _ = writeln!(o, "crash      {c:?}");
                }
            }
        }
        if let Some(b) = &self.baseline {
            let _ = writeln!(
                o,
                "baseline   ({}) achieved {:.1}/s (p99 {:.2} ms): broker/baseline throughput = {:.3}",
                if b.rounds > 1 {
                    format!("{}, {} rounds", b.mode, b.rounds)
                } else {
                    b.mode.to_string()
                },
                b.load.achieved_rate,
                b.latency_ms.p99_ms,
                b.ratio
            );
            if b.rounds > 1 {
                let each: Vec<String> = b.round_ratios.iter().map(|r| format!("{r:.3}")).collect();
                let _ = writeln!(
                    o,
                    "rounds     broker/baseline per round: {}",
                    each.join(" ")
                );
                if let (Some(own), Some(during)) = (b.broker_cpu_s, b.broker_cpu_during_baseline_s)
                {
                    let _ = writeln!(
                        o,
                        "rounds     broker CPU {own:.2} s in its slices, {during:.2} s in the baseline's"
                    );
                }
            }
        }
        let _ = writeln!(o, "errors     {}", kv(&self.errors));
        if self.replies_pending_at_deadline > 0 {
            let _ = writeln!(
                o,
                "drain      {} replies still pending at the deadline",
                self.replies_pending_at_deadline
            );
        }
        if let Some(s) = &self.broker_shutdown {
            let _ = writeln!(o, "shutdown   {s}");
        }
        if let Some(l) = &self.broker_log {
            let _ = writeln!(o, "broker log {l}");
        }
        let _ = writeln!(
            o,
            "audit      {}",
            if self.audit.passed { "PASS" } else { "FAIL" }
        );
        for e in &self.audit.errors {
            let _ = writeln!(o, "  error: {e}");
        }
        for (name, c) in &self.audit.checks {
            let _ = writeln!(
                o,
                "  [{}] {name:<30} {}",
                if c.passed { " ok " } else { "FAIL" },
                kv(&c.counts)
            );
            for ex in &c.examples {
                let _ = writeln!(o, "         {ex}");
            }
        }
        if !self.audit.notes.is_empty() {
            let _ = writeln!(o, "  notes: {}", kv(&self.audit.notes));
        }
        o
    }
}
