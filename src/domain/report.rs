//! Reporting events and the reports computed from them.
//!
//! A [`ReportEvent`] is what happened to a conversation, when, and *where*: the team, agent and
//! number of that moment. The conversation actor writes them in the same batch as the change that
//! causes them, so an event exists exactly when its change is durable. Reports are folded from
//! the events of a time window ([`Aggregator`]), never from current conversation state: a
//! conversation moved from support to sales counts in support for what happened there and in
//! sales for the rest.
//!
//! A month of a busy team is hundreds of thousands of events, so each event also goes into its
//! UTC hour's [`Rollup`]s (one per team, agent and number, written in the event's batch by the
//! store): a report reads whole hours from rollups and only the hours its window cuts from the
//! events. A rollup is everything the figures need of its events, exactly: counts, every span
//! (so percentiles stay exact: nearest-rank over the same values) and the hashes of the
//! conversations seen (so distinct conversations are counted once across hours).
//!
//! Invariants: durations are measured once, when the event happens, both wall-clock and in the
//! team's business hours (so later changes to hours do not rewrite history); event kinds are only
//! ever appended (bincode stores the variant index); aggregation is a pure fold, so the same
//! events always give the same report, whether read one by one or through rollups (merging
//! rollups is associative and commutative; `store::tests` checks both paths agree).

use std::collections::{BTreeMap, HashMap, HashSet};

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

    /// Whether the UTC hour starting at `hour` lies within one bucket in `tz`: true for every
    /// hour in a zone whose offset is whole hours (daylight saving included), false for the hours
    /// a half- or quarter-hour offset (India, Nepal…) cuts in two. Bucket starts never decrease
    /// with time, so equal starts at both ends mean one bucket throughout.
    pub fn holds_hour(self, tz: Tz, hour: Millis) -> bool {
        self.start(tz, hour) == self.start(tz, hour + HOUR_MS - 1)
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
        let n = ms.len();
        let rank = |p: f64| ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        let sum: i128 = ms.iter().map(|m| *m as i128).sum();
        // Selection, not a sort: a month's replies are 10^5 spans. The p50 rank is at or below
        // the p90 one, so it is selected among the values left of p90's.
        let (r50, r90) = (rank(0.5), rank(0.9));
        let (left, p90, _) = ms.select_nth_unstable(r90);
        let p90 = *p90;
        let p50 = if r50 == r90 {
            p90
        } else {
            *left.select_nth_unstable(r50).1
        };
        Self {
            avg: Some(sum as f64 / n as f64 / 1000.0),
            p50: Some(p50 as f64 / 1000.0),
            p90: Some(p90 as f64 / 1000.0),
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

/// One UTC hour's length; rollups cover `[h, h + HOUR_MS)` with `h` a multiple of it.
pub const HOUR_MS: Millis = 3_600_000;

/// The start of the UTC hour holding `at`.
pub fn hour_floor(at: Millis) -> Millis {
    at.div_euclid(HOUR_MS) * HOUR_MS
}

/// A conversation id as rollups keep it: SipHash-1-3 with fixed keys, so the same id hashes the
/// same in every build and process (rollups are durable). Two ids of one report colliding is
/// vanishingly rare (64 bits) and would count them as one.
pub fn conversation_hash(id: &str) -> u64 {
    siphasher::sip::SipHasher13::new_with_keys(0, 0).hash(id.as_bytes())
}

/// The counters of a set of events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub inbound: u64,
    pub outbound: u64,
    pub resolved: u64,
    pub assignments: u64,
    pub reassignments: u64,
    pub transfers: u64,
    pub sla_hits: u64,
    pub sla_misses: u64,
    pub bot_resolved: u64,
    pub bot_handovers: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.inbound += o.inbound;
        self.outbound += o.outbound;
        self.resolved += o.resolved;
        self.assignments += o.assignments;
        self.reassignments += o.reassignments;
        self.transfers += o.transfers;
        self.sla_hits += o.sla_hits;
        self.sla_misses += o.sla_misses;
        self.bot_resolved += o.bot_resolved;
        self.bot_handovers += o.bot_handovers;
    }
}

/// Everything a report's figures need of a set of events (one hour of one team, agent or
/// number), losing nothing: counts, every span in milliseconds (unordered), CSAT answers per
/// score, and the conversations seen as [`conversation_hash`]es (sorted, each once, after
/// [`Self::normalize`]). Merging two is adding counts and joining the lists, so it is exact,
/// associative and commutative (what a RocksDB merge operator needs).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollup {
    pub conversations: Vec<u64>,
    pub counts: Counts,
    pub first: Vec<Millis>,
    pub first_b: Vec<Millis>,
    pub resolution: Vec<Millis>,
    pub resolution_b: Vec<Millis>,
    pub reply: Vec<Millis>,
    pub reply_b: Vec<Millis>,
    /// Answers scoring 1, 2, 3, 4 and 5.
    pub csat: [u64; 5],
}

impl Rollup {
    /// What one event adds.
    pub fn of(e: &ReportEventView<'_>) -> Self {
        let mut r = Self {
            conversations: vec![conversation_hash(e.conversation)],
            ..Self::default()
        };
        r.record(&e.kind);
        r
    }

    /// Counts an event of `kind` (not its conversation).
    fn record(&mut self, kind: &ReportKind) {
        let c = &mut self.counts;
        match kind {
            ReportKind::Opened | ReportKind::Reopened => {}
            ReportKind::Inbound { messages } => c.inbound += u64::from(*messages),
            ReportKind::FirstResponse(s) => {
                self.first.push(s.wall_ms);
                self.first_b.push(s.business_ms);
            }
            ReportKind::Reply { wait } => {
                c.outbound += 1;
                if let Some(s) = wait {
                    self.reply.push(s.wall_ms);
                    self.reply_b.push(s.business_ms);
                }
            }
            ReportKind::Resolved(s) => {
                c.resolved += 1;
                self.resolution.push(s.wall_ms);
                self.resolution_b.push(s.business_ms);
            }
            ReportKind::Assigned { .. } => c.assignments += 1,
            ReportKind::Reassigned { .. } => c.reassignments += 1,
            ReportKind::Transferred { .. } => c.transfers += 1,
            ReportKind::BotHandover => c.bot_handovers += 1,
            ReportKind::BotResolved => c.bot_resolved += 1,
            ReportKind::Sla { met: true, .. } => c.sla_hits += 1,
            ReportKind::Sla { met: false, .. } => c.sla_misses += 1,
            ReportKind::Csat { score } => {
                if let Some(n) = self.csat.get_mut(usize::from((*score).clamp(1, 5) - 1)) {
                    *n += 1;
                }
            }
        }
    }

    /// Adds `o`'s figures and conversations (call [`Self::normalize`] once after a series).
    pub fn merge(&mut self, o: &Rollup) {
        self.conversations.extend_from_slice(&o.conversations);
        self.merge_figures(o);
    }

    fn merge_figures(&mut self, o: &Rollup) {
        self.counts.add(&o.counts);
        self.first.extend_from_slice(&o.first);
        self.first_b.extend_from_slice(&o.first_b);
        self.resolution.extend_from_slice(&o.resolution);
        self.resolution_b.extend_from_slice(&o.resolution_b);
        self.reply.extend_from_slice(&o.reply);
        self.reply_b.extend_from_slice(&o.reply_b);
        for (a, b) in self.csat.iter_mut().zip(o.csat) {
            *a += b;
        }
    }

    /// Sorts the conversations and keeps each once.
    pub fn normalize(&mut self) {
        self.conversations.sort_unstable();
        self.conversations.dedup();
    }
}

/// A hasher for sets of [`conversation_hash`]es, which are uniform already.
type HashSetOfHashes = HashSet<u64, foldhash::fast::FixedState>;

#[derive(Default)]
struct Acc {
    /// Distinct conversations, by [`conversation_hash`] (a collision among a window's
    /// conversations is vanishingly rare; copying every id would cost a report its budget).
    conversations: HashSetOfHashes,
    /// Everything else (its own `conversations` stay empty).
    figures: Rollup,
}

impl Acc {
    fn add(&mut self, e: &ReportEventView<'_>) {
        self.conversations.insert(conversation_hash(e.conversation));
        self.figures.record(&e.kind);
    }

    fn absorb(&mut self, r: &Rollup) {
        self.conversations.extend(r.conversations.iter().copied());
        self.figures.merge_figures(r);
    }

    fn finish(self, bucket: Option<Millis>) -> ReportRow {
        let Rollup {
            counts: c,
            first,
            first_b,
            resolution,
            resolution_b,
            reply,
            reply_b,
            csat,
            ..
        } = self.figures;
        let bot = c.bot_resolved + c.bot_handovers;
        let csat_answers: u64 = csat.iter().sum();
        let csat_sum: u64 = csat.iter().zip(1u64..).map(|(n, s)| n * s).sum();
        ReportRow {
            bucket,
            conversations: self.conversations.len() as u64,
            inbound: c.inbound,
            outbound: c.outbound,
            first_response_seconds: Stats::of(first),
            first_response_business_seconds: Stats::of(first_b),
            resolution_seconds: Stats::of(resolution),
            resolution_business_seconds: Stats::of(resolution_b),
            reply_seconds: Stats::of(reply),
            reply_business_seconds: Stats::of(reply_b),
            resolved: c.resolved,
            assignments: c.assignments,
            reassignments: c.reassignments,
            transfers: c.transfers,
            sla_hits: c.sla_hits,
            sla_misses: c.sla_misses,
            bot_resolved: c.bot_resolved,
            bot_handovers: c.bot_handovers,
            bot_containment: (bot > 0).then(|| c.bot_resolved as f64 / bot as f64),
            csat_answers,
            csat_avg: (csat_answers > 0).then(|| csat_sum as f64 / csat_answers as f64),
        }
    }
}

/// Folds events and rollups into rows per key (and bucket). `keep` says which teams' events
/// the caller may see; `tz_of` gives the time zone a key's buckets are cut in.
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
    K: Fn(&str) -> bool,
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

    pub fn dimension(&self) -> Dimension {
        self.dimension
    }

    pub fn bucket(&self) -> Option<Bucket> {
        self.bucket
    }

    /// The bucket start of `at` for `key` (`Millis::MIN` without buckets).
    fn start(&mut self, key: &str, at: Millis) -> Millis {
        let Some(b) = self.bucket else {
            return Millis::MIN;
        };
        let tz = (self.tz_of)(key);
        match self.last {
            Some((z, s, end)) if z == tz && s <= at && at < end => s,
            _ => {
                let (s, end) = b.range(tz, at);
                self.last = Some((tz, s, end));
                s
            }
        }
    }

    pub fn add(&mut self, e: &ReportEventView<'_>) {
        let Some(key) = self.dimension.key(e) else {
            return;
        };
        if !(self.keep)(e.team) {
            return;
        }
        let start = self.start(key, e.at);
        // Looked up by `&str` first, so an event of a known key allocates nothing.
        let buckets = match self.rows.get_mut(key) {
            Some(b) => b,
            None => self.rows.entry(key.to_string()).or_default(),
        };
        buckets.entry(start).or_default().add(e);
    }

    /// Adds the rollup of `key`'s events in `team` during the UTC hour starting at `hour`. The
    /// caller reads a rollup only for an hour that lies in one bucket of every zone (see
    /// [`Bucket::holds_hour`]), so its events all belong to the bucket of its start.
    pub fn add_rollup(&mut self, hour: Millis, team: &str, key: &str, r: &Rollup) {
        if !(self.keep)(team) {
            return;
        }
        let start = self.start(key, hour);
        let buckets = match self.rows.get_mut(key) {
            Some(b) => b,
            None => self.rows.entry(key.to_string()).or_default(),
        };
        buckets.entry(start).or_default().absorb(r);
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
