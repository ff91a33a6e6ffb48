//! Reports per team, agent or number over a time window, from the reporting events.
//!
//! Who sees what: admins every team; supervisors only events that happened in their teams (so
//! an agent or number report of a supervisor holds only their teams' share); agents nothing
//! (403). Figures over the window come from the events of `[from, to)` (see
//! [`crate::domain::report`]; whole hours are read from their rollups, see
//! [`crate::store::report`]); `backlog`, `unassigned` and `oldest_wait_seconds` are *now*:
//! open conversations from the index, the team queue's depth and oldest wait as its actor last
//! published them. Hour and day buckets are cut in the time zone of the row's team (an agent:
//! its first team; a number: its default team).

use std::collections::HashMap;
use std::sync::Arc;

use chrono_tz::Tz;

use super::{supervisors_and_admins_only, Result};
use crate::actors::Ctx;
use crate::domain::report::{rfc3339_in, Aggregator, Bucket, Dimension, ReportRow};
use crate::domain::{Caller, DomainError, Millis, Role};

/// What a report asks for.
#[derive(Debug, Clone)]
pub struct ReportQuery {
    pub dimension: Dimension,
    pub from: Millis,
    pub to: Millis,
    pub bucket: Option<Bucket>,
}

/// One row as answered: the key, its bucket and the live figures beside the window's.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: String,
    /// The bucket's start, RFC 3339 in the row's time zone (None without `bucket`).
    pub bucket: Option<String>,
    pub figures: ReportRow,
    /// Open (queued + assigned) conversations now: per team, or assigned to the agent.
    pub backlog: Option<u64>,
    /// Queued conversations now (teams only).
    pub unassigned: Option<u64>,
    /// How long the team's oldest waiting conversation has waited now (teams only).
    pub oldest_wait_seconds: Option<Millis>,
}

/// Whether `caller` may read reports at all (supervisors and admins); checked before anything
/// else of a request.
pub fn may_read(caller: &Caller) -> Result<()> {
    supervisors_and_admins_only(caller)
}

/// An agent's first team, by agent id (`service::people::People::home_team`).
pub type HomeTeam = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Computes a report for `caller`. Teams, agents and numbers are those of the run-time
/// roster: `home_team` names an agent's first team (`service::people`), whose time zone cuts
/// that agent's buckets.
pub async fn report(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    q: ReportQuery,
    home_team: HomeTeam,
) -> Result<Vec<Row>> {
    supervisors_and_admins_only(caller)?;
    if q.from >= q.to {
        return Err(DomainError::Invalid("`from` must be before `to`".into()).into());
    }
    let policies = ctx.policies();
    // Every team in force, those created at run time included.
    let team_tz: Arc<HashMap<String, Tz>> = Arc::new(
        policies
            .teams
            .iter()
            .map(|(id, p)| (id.clone(), p.hours.time_zone()))
            .collect(),
    );
    let numbers: HashMap<String, Tz> = ctx
        .config
        .numbers
        .iter()
        .map(|n| {
            let tz = team_tz.get(&n.default_team).copied();
            (n.phone_number_id.clone(), tz.unwrap_or(Tz::UTC))
        })
        .collect();
    // Every zone a bucket may be cut in (a key without one is cut in UTC).
    let mut bucket_zones: Vec<Tz> = team_tz.values().copied().collect();
    bucket_zones.push(Tz::UTC);
    bucket_zones.sort_by_key(|z| z.name());
    bucket_zones.dedup();
    let dimension = q.dimension;
    let tz_of: Arc<dyn Fn(&str) -> Tz + Send + Sync> = {
        let team_tz = team_tz.clone();
        Arc::new(move |key: &str| {
            let team = match dimension {
                Dimension::Teams => Some(key.to_string()),
                Dimension::Agents => home_team(key),
                Dimension::Numbers => return numbers.get(key).copied().unwrap_or(Tz::UTC),
            };
            team.and_then(|t| team_tz.get(&t).copied())
                .unwrap_or(Tz::UTC)
        })
    };
    let who = caller.clone();
    let keep = move |team: &str| who.role == Role::Admin || who.in_team(team);
    let agg = Aggregator::new(q.dimension, q.bucket, keep, {
        let tz_of = tz_of.clone();
        move |key: &str| tz_of(key)
    });
    let scanned = ctx
        .store
        .fold_report(q.from, q.to, bucket_zones, agg)
        .await?;
    if scanned.truncated {
        return Err(DomainError::Invalid(format!(
            "the window holds more than {} events; ask for a shorter one",
            crate::store::report::MAX_REPORT_EVENTS
        ))
        .into());
    }
    let mut rows = scanned.state.finish();
    if q.dimension == Dimension::Teams && q.bucket.is_none() {
        // Every team the caller may see has a row, also one with nothing in the window.
        for t in team_tz.keys() {
            if caller.manages(t) && !rows.iter().any(|(k, _)| k == t) {
                rows.push((t.clone(), ReportRow::default()));
            }
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
    }
    let open = ctx.store.open_counts().await?;
    let now = ctx.now();
    let queues: HashMap<String, _> = ctx
        .queue_stats()
        .into_iter()
        .map(|(team, rx)| {
            let stats = *rx.borrow();
            (team, stats)
        })
        .collect();
    Ok(rows
        .into_iter()
        .map(|(key, figures)| {
            let tz = tz_of(&key);
            let bucket = figures.bucket.map(|b| rfc3339_in(tz, b));
            let (backlog, unassigned, oldest_wait_seconds) = match q.dimension {
                Dimension::Teams => {
                    let queued = open.queued.get(&key).copied().unwrap_or(0);
                    let assigned = open.assigned.get(&key).copied().unwrap_or(0);
                    let stats = queues.get(&key).copied().unwrap_or_default();
                    let wait = stats
                        .oldest_queued_at
                        .map(|t| (now - t).max(0) / 1000)
                        .unwrap_or(0);
                    (
                        Some(queued + assigned),
                        Some(stats.depth as u64),
                        Some(wait),
                    )
                }
                Dimension::Agents => (
                    Some(open.by_agent.get(&key).copied().unwrap_or(0)),
                    None,
                    None,
                ),
                Dimension::Numbers => (None, None, None),
            };
            Row {
                key,
                bucket,
                figures,
                backlog,
                unassigned,
                oldest_wait_seconds,
            }
        })
        .collect())
}
