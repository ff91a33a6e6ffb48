//! Reporting events and the reports computed from them.
//!
//! A [`ReportEvent`] is what happened to a conversation, when, and *where*: the team, agent and
//! number of that moment. The conversation actor writes them in the same batch as the change that
//! causes them, so an event exists exactly when its change is durable. Reports are folded from
//! the events of a time window ([`Aggregator`]), never from current conversation state: a
//! conversation moved from support to sales counts in support for what happened there and in
//! sales for the rest.
//!
//! Invariants: durations are measured once, when the event happens, both wall-clock and in the
//! team's business hours (so later changes to hours do not rewrite history); event kinds are only
//! ever appended (bincode stores the variant index); aggregation is a pure fold, so the same
//! events always give the same report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use chrono::{DateTime, TimeZone, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::hours::BusinessHours;
use super::{Conversation, Millis, SlaKind};

/// How an agent came to own a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssignReason {
    /// The team's automatic assignment.
    Auto,
    /// `POST …/claim`.
    Claim,
    /// `POST /teams/{id}/next`.
    Next,
    /// A transfer to the agent.
    Transfer,
    /// `POST /api/v1/conversations`: the agent started it (or took it to send a template).
    Start,
}

/// A span measured when its event happened: wall-clock and business-hours milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub wall_ms: Millis,
    pub business_ms: Millis,
}

impl Span {
    /// `[from, to)` measured on the wall clock and in `hours`.
    pub fn measure(hours: &BusinessHours, from: Millis, to: Millis) -> Self {
        Self {
            wall_ms: (to - from).max(0),
            business_ms: hours.business_ms_between(from, to),
        }
    }
}

/// What happened. Variants are only ever appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportKind {
    /// A new conversation (its first message).
    Opened,
    /// A resolved conversation the customer wrote to again.
    Reopened,
    /// Customer messages stored.
    Inbound {
        messages: u32,
    },
    /// The first human reply of a cycle, measured from when a human became responsible.
    FirstResponse(Span),
    /// A human reply to the customer; `wait` is how long the oldest unanswered customer message
    /// had waited (None when nothing was waiting).
    Reply {
        wait: Option<Span>,
    },
    /// Resolved, measured from its opening (creation or the latest reopen).
    Resolved(Span),
    Assigned {
        reason: AssignReason,
    },
    /// Taken from its owner back to the queue (owner offline, no answer, SLA escalation).
    Reassigned {
        reason: String,
    },
    /// Moved by a transfer; the event's team is the one it left.
    Transferred {
        to_team: String,
    },
    /// The bot handed the conversation to a human (a hand-over, or an agent's claim from it).
    BotHandover,
    /// The bot resolved the conversation on its own (an intent with `resolve = true`).
    BotResolved,
    Sla {
        kind: SlaKind,
        met: bool,
    },
    /// A customer-satisfaction answer, 1–5.
    Csat {
        score: u8,
    },
}

/// One reporting event, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportEvent {
    pub at: Millis,
    pub conversation: String,
    pub team: String,
    pub agent: Option<String>,
    pub number: String,
    pub kind: ReportKind,
}

/// A stored [`ReportEvent`] read in place (same layout, strings borrowed): what reports fold.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReportEventView<'a> {
    pub at: Millis,
    pub conversation: &'a str,
    pub team: &'a str,
    pub agent: Option<&'a str>,
    pub number: &'a str,
    pub kind: ReportKind,
}

impl ReportEvent {
    /// This event as a report scan sees it.
    pub fn view(&self) -> ReportEventView<'_> {
        ReportEventView {
            at: self.at,
            conversation: &self.conversation,
            team: &self.team,
            agent: self.agent.as_deref(),
            number: &self.number,
            kind: self.kind.clone(),
        }
    }

    /// An event of `conv` in its current team, by `agent` (default: its current assignee).
    pub fn of(conv: &Conversation, at: Millis, agent: Option<&str>, kind: ReportKind) -> Self {
        Self {
            at,
            conversation: conv.id.clone(),
            team: conv.team().to_string(),
            agent: agent.or(conv.assignee.as_deref()).map(str::to_string),
            number: conv.number.clone(),
            kind,
        }
    }
}

/// What a report is grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    Teams,
    Agents,
    Numbers,
}

impl Dimension {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Teams => "team",
            Self::Agents => "agent",
            Self::Numbers => "number",
        }
    }

    /// The key an event is counted under, if any (an event without an agent is in no agent's
    /// report).
    fn key<'a>(self, e: &ReportEventView<'a>) -> Option<&'a str> {
        match self {
            Self::Teams => Some(e.team),
            Self::Agents => e.agent,
            Self::Numbers => Some(e.number),
        }
    }
}

/// Hour or day buckets, cut in a time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    Hour,
    Day,
}

impl Bucket {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hour" => Some(Self::Hour),
            "day" => Some(Self::Day),
            _ => None,
        }
    }

    /// The bucket holding `at`: `[start, end)`. The end is the start of the bucket holding a
    /// moment safely inside the next one (an hour is never longer than 90 minutes, a day never
    /// longer than 36 hours, daylight saving included).
    pub fn range(self, tz: Tz, at: Millis) -> (Millis, Millis) {
        let start = self.start(tz, at);
        let probe = match self {
            Self::Hour => 90 * 60 * 1000,
            Self::Day => 36 * 60 * 60 * 1000,
        };
        let end = self.start(tz, start + probe);
        // Should the zone's arithmetic ever not move forward, `at` alone is cached.
        (start, end.max(at + 1))
    }

    /// The start of the bucket holding `at`, in `tz` (a day is local midnight to midnight).
    pub fn start(self, tz: Tz, at: Millis) -> Millis {
        let Some(t) = tz.timestamp_millis_opt(at).single() else {
            return at;
        };
        let local = match self {
            Self::Hour => t.date_naive().and_hms_opt(t.hour(), 0, 0),
            Self::Day => t.date_naive().and_hms_opt(0, 0, 0),
        };
        local
            .and_then(|l| tz.from_local_datetime(&l).earliest())
            .map(|d| d.timestamp_millis())
            .unwrap_or(at)
    }
}

/// Average and percentiles of a set of spans, in seconds (None when the set is empty).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Stats {
    pub avg: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
}

impl Stats {
    /// Nearest-rank percentiles (the smallest value with at least p % of values at or below it).
    pub fn of(mut ms: Vec<Millis>) -> Self {
        if ms.is_empty() {
            return Self::default();
        }
        ms.sort_unstable();
        let n = ms.len();
        let rank = |p: f64| {
            let r = ((p * n as f64).ceil() as usize).clamp(1, n);
            ms[r - 1] as f64 / 1000.0
        };
        let sum: i128 = ms.iter().map(|m| *m as i128).sum();
        Self {
            avg: Some(sum as f64 / n as f64 / 1000.0),
            p50: Some(rank(0.5)),
            p90: Some(rank(0.9)),
        }
    }
}

/// One row of a report: one key (team, agent or number), one bucket or the whole window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReportRow {
    /// Start of the bucket (None without `bucket`).
    #[serde(skip)]
    pub bucket: Option<Millis>,
    /// Distinct conversations with any event under this key in the window.
    pub conversations: u64,
    pub inbound: u64,
    pub outbound: u64,
    pub first_response_seconds: Stats,
    pub first_response_business_seconds: Stats,
    pub resolution_seconds: Stats,
    pub resolution_business_seconds: Stats,
    pub reply_seconds: Stats,
    pub reply_business_seconds: Stats,
    pub resolved: u64,
    pub assignments: u64,
    pub reassignments: u64,
    pub transfers: u64,
    pub sla_hits: u64,
    pub sla_misses: u64,
    pub bot_resolved: u64,
    pub bot_handovers: u64,
    /// bot_resolved / (bot_resolved + bot_handovers); None when the bot handled nothing.
    pub bot_containment: Option<f64>,
    pub csat_answers: u64,
    pub csat_avg: Option<f64>,
}

#[derive(Default)]
struct Acc {
    /// Distinct conversations, by a 64-bit hash of their id (a collision among a window's
    /// conversations is vanishingly rare; copying every id would cost a report its budget).
    conversations: HashSet<u64>,
    inbound: u64,
    outbound: u64,
    first: Vec<Millis>,
    first_b: Vec<Millis>,
    resolution: Vec<Millis>,
    resolution_b: Vec<Millis>,
    reply: Vec<Millis>,
    reply_b: Vec<Millis>,
    resolved: u64,
    assignments: u64,
    reassignments: u64,
    transfers: u64,
    sla_hits: u64,
    sla_misses: u64,
    bot_resolved: u64,
    bot_handovers: u64,
    csat: Vec<u8>,
}

impl Acc {
    fn add(&mut self, e: &ReportEventView<'_>) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        e.conversation.hash(&mut h);
        self.conversations.insert(h.finish());
        match &e.kind {
            ReportKind::Opened | ReportKind::Reopened => {}
            ReportKind::Inbound { messages } => self.inbound += u64::from(*messages),
            ReportKind::FirstResponse(s) => {
                self.first.push(s.wall_ms);
                self.first_b.push(s.business_ms);
            }
            ReportKind::Reply { wait } => {
                self.outbound += 1;
                if let Some(s) = wait {
                    self.reply.push(s.wall_ms);
                    self.reply_b.push(s.business_ms);
                }
            }
            ReportKind::Resolved(s) => {
                self.resolved += 1;
                self.resolution.push(s.wall_ms);
                self.resolution_b.push(s.business_ms);
            }
            ReportKind::Assigned { .. } => self.assignments += 1,
            ReportKind::Reassigned { .. } => self.reassignments += 1,
            ReportKind::Transferred { .. } => self.transfers += 1,
            ReportKind::BotHandover => self.bot_handovers += 1,
            ReportKind::BotResolved => self.bot_resolved += 1,
            ReportKind::Sla { met: true, .. } => self.sla_hits += 1,
            ReportKind::Sla { met: false, .. } => self.sla_misses += 1,
            ReportKind::Csat { score } => self.csat.push(*score),
        }
    }

    fn finish(self, bucket: Option<Millis>) -> ReportRow {
        let bot = self.bot_resolved + self.bot_handovers;
        let csat_answers = self.csat.len() as u64;
        let csat_sum: u64 = self.csat.iter().map(|s| u64::from(*s)).sum();
        ReportRow {
            bucket,
            conversations: self.conversations.len() as u64,
            inbound: self.inbound,
            outbound: self.outbound,
            first_response_seconds: Stats::of(self.first),
            first_response_business_seconds: Stats::of(self.first_b),
            resolution_seconds: Stats::of(self.resolution),
            resolution_business_seconds: Stats::of(self.resolution_b),
            reply_seconds: Stats::of(self.reply),
            reply_business_seconds: Stats::of(self.reply_b),
            resolved: self.resolved,
            assignments: self.assignments,
            reassignments: self.reassignments,
            transfers: self.transfers,
            sla_hits: self.sla_hits,
            sla_misses: self.sla_misses,
            bot_resolved: self.bot_resolved,
            bot_handovers: self.bot_handovers,
            bot_containment: (bot > 0).then(|| self.bot_resolved as f64 / bot as f64),
            csat_answers,
            csat_avg: (csat_answers > 0).then(|| csat_sum as f64 / csat_answers as f64),
        }
    }
}

/// Folds events into rows per key (and bucket). `keep` says which keys the caller may see;
/// `tz_of` gives the time zone a key's buckets are cut in.
pub struct Aggregator<K, Z> {
    dimension: Dimension,
    bucket: Option<Bucket>,
    keep: K,
    tz_of: Z,
    /// Per key, per bucket start (`Millis::MIN` without buckets). Keyed by the key alone first
    /// so the lookup for an event allocates nothing.
    rows: HashMap<String, BTreeMap<Millis, Acc>>,
    /// The last bucket computed, `[start, end)` in its zone: events come in time order, so most
    /// fall in it and skip the time-zone arithmetic.
    last: Option<(Tz, Millis, Millis)>,
}

impl<K, Z> Aggregator<K, Z>
where
    K: Fn(&ReportEventView<'_>) -> bool,
    Z: Fn(&str) -> Tz,
{
    pub fn new(dimension: Dimension, bucket: Option<Bucket>, keep: K, tz_of: Z) -> Self {
        Self {
            dimension,
            bucket,
            keep,
            tz_of,
            rows: HashMap::new(),
            last: None,
        }
    }

    pub fn add(&mut self, e: &ReportEventView<'_>) {
        let Some(key) = self.dimension.key(e) else {
            return;
        };
        if !(self.keep)(e) {
            return;
        }
        let start = match self.bucket {
            Some(b) => {
                let tz = (self.tz_of)(key);
                match self.last {
                    Some((z, s, end)) if z == tz && s <= e.at && e.at < end => s,
                    _ => {
                        let (s, end) = b.range(tz, e.at);
                        self.last = Some((tz, s, end));
                        s
                    }
                }
            }
            None => Millis::MIN,
        };
        let buckets = match self.rows.get_mut(key) {
            Some(b) => b,
            None => self.rows.entry(key.to_string()).or_default(),
        };
        buckets.entry(start).or_default().add(e);
    }

    /// Rows by key, then bucket start.
    pub fn finish(self) -> Vec<(String, ReportRow)> {
        let bucketed = self.bucket.is_some();
        let mut keys: Vec<(String, BTreeMap<Millis, Acc>)> = self.rows.into_iter().collect();
        keys.sort_by(|a, b| a.0.cmp(&b.0));
        keys.into_iter()
            .flat_map(|(key, buckets)| {
                buckets
                    .into_iter()
                    .map(move |(start, acc)| (key.clone(), acc.finish(bucketed.then_some(start))))
            })
            .collect()
    }
}

/// An RFC 3339 rendering of `at` in `tz` (bucket starts show their zone's offset).
pub fn rfc3339_in(tz: Tz, at: Millis) -> String {
    match tz.timestamp_millis_opt(at).single() {
        Some(t) => t.to_rfc3339(),
        None => DateTime::from_timestamp_millis(at)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Stats::of(vec![1000, 2000, 3000, 4000, 10_000]);
        assert_eq!(s.avg, Some(4.0));
        assert_eq!(s.p50, Some(3.0));
        assert_eq!(s.p90, Some(10.0));
        assert_eq!(Stats::of(vec![]), Stats::default());
    }

    #[test]
    fn day_buckets_are_cut_at_local_midnight() {
        let tz: Tz = "Europe/Berlin".parse().unwrap_or(Tz::UTC);
        // 2026-11-30 23:30 UTC is 00:30 on Dec 1 in Berlin: its day starts at 23:00 UTC.
        let at = chrono::Utc
            .with_ymd_and_hms(2026, 11, 30, 23, 30, 0)
            .single()
            .map(|t| t.timestamp_millis())
            .unwrap_or_default();
        let start = Bucket::Day.start(tz, at);
        assert_eq!(at - start, 30 * 60 * 1000);
        assert_eq!(Bucket::Hour.start(tz, at), start);
        let (s, end) = Bucket::Day.range(tz, at);
        assert_eq!((s, end - s), (start, 24 * 3_600_000));
    }
}
