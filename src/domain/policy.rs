//! Team policies and routing: where a conversation goes, when a team is open, which deadlines run.
//!
//! [`Policies`] is one immutable, compiled snapshot of the routing rules and every team's settings
//! (assignment, business hours, fallbacks, after-hours reply, reassignment, SLA). The admin API
//! replaces it as a whole, so a conversation is always placed by one consistent set of rules, and
//! readers never lock: they hold an `Arc` to the snapshot that was current when they started.
//!
//! Everything here is a pure function of (snapshot, conversation, instant): the conversation actor
//! asks what to do and the timer service asks when to look again, and both get the same answer.

use std::collections::HashMap;
use std::sync::Arc;

use super::hours::BusinessHours;
use super::routing::{RouteInput, RuleSet};
use super::team::{Assignment, Escalation, TeamSettings};
use super::{Conversation, ConversationStatus, Millis, Priority, SlaKind};

/// A problem in a team's settings, naming the key relative to the team.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct SettingsError {
    pub key: String,
    pub problem: String,
}

fn err(key: impl Into<String>, problem: impl Into<String>) -> SettingsError {
    SettingsError {
        key: key.into(),
        problem: problem.into(),
    }
}

/// Parses "10m", "1h 30m", "24h" into milliseconds (> 0).
pub fn parse_duration(key: &str, text: &str) -> Result<Millis, SettingsError> {
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        err(
            key,
            format!("bad duration {text:?} ({e}); use e.g. \"90s\", \"10m\", \"24h\""),
        )
    })?;
    let ms = Millis::try_from(d.as_millis()).map_err(|_| err(key, "duration too long"))?;
    if ms <= 0 {
        return Err(err(key, "must be longer than 0"));
    }
    Ok(ms)
}

#[derive(Debug, Clone, Default)]
pub struct SlaPolicy {
    pub first_response: Option<Millis>,
    pub next_response: Option<Millis>,
    pub resolution: Option<Millis>,
    pub business_hours_only: bool,
    pub escalate: Option<Escalation>,
}

impl SlaPolicy {
    pub fn target(&self, kind: SlaKind) -> Option<Millis> {
        match kind {
            SlaKind::FirstResponse => self.first_response,
            SlaKind::NextResponse => self.next_response,
            SlaKind::Resolution => self.resolution,
        }
    }
}

/// One team's compiled settings.
#[derive(Debug, Clone)]
pub struct TeamPolicy {
    pub assignment: Assignment,
    pub hours: BusinessHours,
    pub fallback_teams: Vec<String>,
    pub after_hours_reply: Option<String>,
    pub reassign_after: Option<Millis>,
    pub sla: SlaPolicy,
}

impl Default for TeamPolicy {
    fn default() -> Self {
        Self {
            assignment: Assignment::Manual,
            hours: BusinessHours::always_open(),
            fallback_teams: Vec::new(),
            after_hours_reply: None,
            reassign_after: None,
            sla: SlaPolicy::default(),
        }
    }
}

impl TeamPolicy {
    /// Checks and compiles settings; `team_exists` validates fallback teams.
    pub fn compile(
        s: &TeamSettings,
        team_exists: &dyn Fn(&str) -> bool,
    ) -> Result<Self, SettingsError> {
        let hours = BusinessHours::parse(s.time_zone.as_deref(), s.hours.as_ref(), &s.holidays)
            .map_err(|e| err(e.key, e.problem))?;
        for (i, f) in s.fallback_teams.iter().enumerate() {
            if !team_exists(f) {
                return Err(err(
                    format!("fallback_teams[{i}]"),
                    format!("unknown team {f:?}"),
                ));
            }
        }
        if s.after_hours_reply
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(err("after_hours_reply", "must not be blank"));
        }
        let reassign_after = s
            .reassign_after
            .as_deref()
            .map(|t| parse_duration("reassign_after", t))
            .transpose()?;
        let sla = match &s.sla {
            None => SlaPolicy::default(),
            Some(c) => {
                let d = |key: &str, v: &Option<String>| {
                    v.as_deref()
                        .map(|t| parse_duration(&format!("sla.{key}"), t))
                        .transpose()
                };
                SlaPolicy {
                    first_response: d("first_response", &c.first_response)?,
                    next_response: d("next_response", &c.next_response)?,
                    resolution: d("resolution", &c.resolution)?,
                    business_hours_only: c.business_hours_only,
                    escalate: c.escalate,
                }
            }
        };
        Ok(Self {
            assignment: s.assignment,
            hours,
            fallback_teams: s.fallback_teams.clone(),
            after_hours_reply: s.after_hours_reply.clone(),
            reassign_after,
            sla,
        })
    }

    /// Whether any deadline (an SLA clock, `reassign_after`, or a closing that hands waiting
    /// conversations to a fallback) can run in this team.
    pub fn has_deadlines(&self) -> bool {
        self.reassign_after.is_some()
            || SlaKind::ALL.iter().any(|k| self.sla.target(*k).is_some())
            || self.falls_back()
    }

    /// Whether this team can close and has somewhere to send what waits in it meanwhile.
    fn falls_back(&self) -> bool {
        !self.fallback_teams.is_empty() && !self.hours.is_always_open()
    }

    /// `start` plus `ms` of SLA time: wall-clock, or business hours only.
    fn sla_deadline(&self, start: Millis, ms: Millis) -> Option<Millis> {
        if self.sla.business_hours_only {
            self.hours.add_business_ms(start, ms)
        } else {
            Some(start.saturating_add(ms))
        }
    }
}

/// Something the conversation actor must look at, at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    Sla(SlaKind),
    /// The assignee has not answered within `reassign_after`.
    Reassign,
    /// The conversation waits in a closed team and one of its fallback teams is open (follow
    /// the sun: what waits at closing time moves on, as new conversations do).
    FallBack,
}

/// Where a new or reopened conversation goes.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub team: String,
    /// The rule that matched (None: the number's default team).
    pub rule: Option<String>,
    pub priority: Option<Priority>,
    pub labels: Vec<String>,
    /// The rule's (or default) team was closed and this open fallback took it.
    pub fell_back_from: Option<String>,
}

/// A compiled, immutable snapshot of routing rules and team policies.
#[derive(Debug, Clone)]
pub struct Policies {
    pub rules: RuleSet,
    pub teams: HashMap<String, Arc<TeamPolicy>>,
    /// The settings each policy was compiled from (served back by the admin API).
    pub settings: HashMap<String, TeamSettings>,
}

impl Policies {
    pub fn team(&self, id: &str) -> Option<&TeamPolicy> {
        self.teams.get(id).map(|p| p.as_ref())
    }

    pub fn assignment(&self, team: &str) -> Assignment {
        self.team(team).map_or(Assignment::Manual, |p| p.assignment)
    }

    /// Whether `team` is inside its business hours at `now` (unknown teams are open).
    pub fn is_open(&self, team: &str, now: Millis) -> bool {
        self.team(team).is_none_or(|p| p.hours.is_open(now))
    }

    /// Rules first (first match wins), else `default_team`; then, if that team is closed, the
    /// first of its fallback teams that is open (follow the sun).
    pub fn place(&self, input: &RouteInput<'_>, default_team: &str, now: Millis) -> Placement {
        let is_open = |t: &str| self.is_open(t, now);
        let matched = self.rules.route(input, &is_open);
        let (rule, team, priority, labels) = match matched {
            Some(m) => (
                Some(m.rule.to_string()),
                m.team.unwrap_or(default_team).to_string(),
                m.priority,
                m.labels.to_vec(),
            ),
            None => (None, default_team.to_string(), None, Vec::new()),
        };
        let mut placement = Placement {
            team,
            rule,
            priority,
            labels,
            fell_back_from: None,
        };
        if !is_open(&placement.team) {
            let fallback = self
                .team(&placement.team)
                .and_then(|p| p.fallback_teams.iter().find(|f| is_open(f)).cloned());
            if let Some(f) = fallback {
                placement.fell_back_from = Some(std::mem::replace(&mut placement.team, f));
            }
        }
        placement
    }

    /// The after-hours reply to send now, with the closed period it belongs to, if the
    /// conversation waits in a closed team that has one and has not had it this period.
    pub fn after_hours_reply(&self, conv: &Conversation, now: Millis) -> Option<(String, Millis)> {
        if conv.status != ConversationStatus::Queued {
            return None;
        }
        let p = self.team(&conv.team)?;
        let text = p.after_hours_reply.as_ref()?;
        if p.hours.is_open(now) {
            return None;
        }
        let period = p.hours.closed_since(now).unwrap_or(Millis::MIN);
        (conv.after_hours_sent != Some(period)).then(|| (text.clone(), period))
    }

    /// The open fallback a conversation waiting in a closed `team` moves to at `now`, if any
    /// (the first open one, as at placement; a fallback's own fallbacks are not followed).
    pub fn open_fallback(&self, team: &str, now: Millis) -> Option<&str> {
        let p = self.team(team).filter(|p| p.falls_back())?;
        if p.hours.is_open(now) {
            return None;
        }
        p.fallback_teams
            .iter()
            .find(|f| self.is_open(f, now))
            .map(String::as_str)
    }

    /// When a conversation waiting in `p`'s team must next look for an open fallback: at the
    /// team's next closing while it is open; while it is closed, when the first fallback is
    /// open (`now` if one is already).
    fn fallback_check(&self, p: &TeamPolicy, now: Millis) -> Option<Millis> {
        if !p.falls_back() {
            return None;
        }
        if p.hours.is_open(now) {
            return p.hours.next_change(now);
        }
        p.fallback_teams
            .iter()
            .filter_map(|f| match self.team(f) {
                Some(fp) => fp.hours.next_open(now),
                None => Some(now),
            })
            .min()
    }

    /// Every deadline that is running for the conversation at `now`, with the instant it falls
    /// due.
    pub fn deadlines(&self, conv: &Conversation, now: Millis) -> Vec<(Deadline, Millis)> {
        let mut out = Vec::new();
        let Some(p) = self.team(&conv.team) else {
            return out;
        };
        if matches!(
            conv.status,
            ConversationStatus::Resolved | ConversationStatus::Bot
        ) {
            return out;
        }
        let sla = &conv.sla;
        for kind in SlaKind::ALL {
            let Some(target) = p.sla.target(kind) else {
                continue;
            };
            if sla.is_breached(kind) {
                continue;
            }
            let start = match kind {
                SlaKind::FirstResponse if sla.first_response_at.is_none() => {
                    Some(sla.responsible_since)
                }
                SlaKind::NextResponse if sla.first_response_at.is_some() => sla.waiting_since,
                SlaKind::Resolution => Some(sla.opened_at),
                _ => None,
            };
            if let Some(due) = start.and_then(|s| p.sla_deadline(s, target)) {
                out.push((Deadline::Sla(kind), due));
            }
        }
        if let (ConversationStatus::Assigned, Some(after), Some(at), false) = (
            conv.status,
            p.reassign_after,
            conv.assigned_at,
            conv.owner_answered,
        ) {
            out.push((Deadline::Reassign, at.saturating_add(after)));
        }
        if conv.status == ConversationStatus::Queued {
            if let Some(at) = self.fallback_check(p, now) {
                out.push((Deadline::FallBack, at));
            }
        }
        out
    }

    /// The earliest deadline after a change at `now`, for the timer service.
    pub fn next_deadline(&self, conv: &Conversation, now: Millis) -> Option<Millis> {
        self.deadlines(conv, now)
            .into_iter()
            .map(|(_, at)| at)
            .min()
    }

    /// The deadlines that have fallen due at `now`.
    pub fn due(&self, conv: &Conversation, now: Millis) -> Vec<Deadline> {
        self.deadlines(conv, now)
            .into_iter()
            .filter(|(_, at)| *at <= now)
            .map(|(d, _)| d)
            .collect()
    }

    /// Whether a clock that `conv` settles at `now` (a reply, a resolve) was met: None when that
    /// clock is not running, or its miss was already reported (a running clock is never breached:
    /// [`Self::deadlines`] leaves breached clocks out).
    pub fn sla_met(&self, conv: &Conversation, kind: SlaKind, now: Millis) -> Option<bool> {
        self.deadlines(conv, now)
            .into_iter()
            .find(|(d, _)| *d == Deadline::Sla(kind))
            .map(|(_, due)| now < due)
    }
}

/// Builds a snapshot from rules and per-team settings, checking both.
pub fn compile(
    rules: RuleSet,
    settings: HashMap<String, TeamSettings>,
) -> Result<Policies, (String, SettingsError)> {
    let ids: Vec<String> = settings.keys().cloned().collect();
    let exists = |t: &str| ids.iter().any(|i| i == t);
    let mut teams = HashMap::new();
    for (id, s) in &settings {
        let p = TeamPolicy::compile(s, &exists).map_err(|e| (id.clone(), e))?;
        teams.insert(id.clone(), Arc::new(p));
    }
    Ok(Policies {
        rules,
        teams,
        settings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::team::SlaSettings;

    fn settings(hours: bool, sla: Option<SlaSettings>) -> TeamSettings {
        TeamSettings {
            time_zone: hours.then(|| "UTC".to_string()),
            hours: hours.then(|| {
                [("mon".to_string(), vec!["09:00-17:00".to_string()])]
                    .into_iter()
                    .collect()
            }),
            fallback_teams: if hours { vec!["night".into()] } else { vec![] },
            after_hours_reply: Some("closed".into()),
            reassign_after: Some("10m".into()),
            sla,
            ..TeamSettings::default()
        }
    }

    /// Monday 2026-11-30 at `h`:00 UTC.
    fn mon(h: i64) -> Millis {
        1_795_996_800_000 + h * 3_600_000
    }

    fn policies(sla: Option<SlaSettings>) -> Policies {
        let teams = [
            ("day".to_string(), settings(true, sla)),
            ("night".to_string(), TeamSettings::default()),
        ]
        .into_iter()
        .collect();
        compile(RuleSet::empty(), teams).expect("valid")
    }

    fn input() -> RouteInput<'static> {
        RouteInput {
            number: "n",
            customer: "49",
            text: Some("hi"),
            message_type: "text",
            labels: &[],
            intent: None,
            number_country: None,
            number_languages: &[],
        }
    }

    #[test]
    fn closed_teams_fall_back_to_an_open_one() {
        let p = policies(None);
        assert_eq!(p.place(&input(), "day", mon(10)).team, "day");
        let night = p.place(&input(), "day", mon(20));
        assert_eq!(
            (night.team.as_str(), night.fell_back_from.as_deref()),
            ("night", Some("day"))
        );
    }

    #[test]
    fn the_after_hours_reply_is_due_once_per_closed_period() {
        let p = policies(None);
        let mut c = Conversation::new("n", "49", "day", mon(20));
        assert_eq!(p.after_hours_reply(&c, mon(10)), None);
        let (_, period) = p.after_hours_reply(&c, mon(20)).expect("closed");
        c.after_hours_sent = Some(period);
        assert_eq!(p.after_hours_reply(&c, mon(22)), None);
        // Tuesday evening is another closed period (Monday is the only open day here, so the
        // next period starts after next Monday's close).
        assert!(p.after_hours_reply(&c, mon(24 * 7 + 20)).is_some());
    }

    #[test]
    fn business_hours_slas_pause_while_closed_and_reassignment_waits_for_an_answer() {
        let sla = SlaSettings {
            first_response: Some("30m".into()),
            business_hours_only: true,
            ..SlaSettings::default()
        };
        let p = policies(Some(sla));
        // Created 16:45: 15 open minutes today, 15 more next Monday.
        let created = mon(16) + 45 * 60_000;
        let mut c = Conversation::new("n", "49", "day", created);
        let due = p.deadlines(&c, created);
        assert_eq!(
            due,
            vec![
                (
                    Deadline::Sla(SlaKind::FirstResponse),
                    mon(24 * 7 + 9) + 15 * 60_000
                ),
                (Deadline::FallBack, mon(17))
            ]
        );
        c.assign("alice", mon(10));
        assert!(p
            .deadlines(&c, mon(10))
            .contains(&(Deadline::Reassign, mon(10) + 600_000)));
        c.on_human_reply(mon(10) + 60_000);
        assert_eq!(p.deadlines(&c, mon(10) + 60_000), vec![]);
        assert_eq!(p.due(&c, mon(30)), vec![]);
    }

    #[test]
    fn what_waits_in_a_team_at_closing_time_moves_to_its_first_open_fallback() {
        let p = policies(None);
        let c = Conversation::new("n", "49", "day", mon(10));
        // Open: look again when it closes.
        assert_eq!(
            p.deadlines(&c, mon(10)),
            vec![(Deadline::FallBack, mon(17))]
        );
        assert_eq!(p.open_fallback("day", mon(10)), None);
        // Closed, and "night" (no hours) is open: due at once.
        assert_eq!(p.due(&c, mon(17)), vec![Deadline::FallBack]);
        assert_eq!(p.open_fallback("day", mon(17)), Some("night"));
        // Only waiting conversations move; the owner keeps an assigned one.
        let mut assigned = c.clone();
        assigned.assign("alice", mon(10));
        assert!(!p
            .deadlines(&assigned, mon(17))
            .iter()
            .any(|(d, _)| *d == Deadline::FallBack));
        // A team that never closes has nothing to look at.
        let mut moved = c.clone();
        moved.team = "night".into();
        assert_eq!(p.deadlines(&moved, mon(17)), vec![]);

        // A fallback that is closed too: look again when it opens.
        let mut night = settings(true, None);
        night.hours = Some(
            [("mon".to_string(), vec!["20:00-23:00".to_string()])]
                .into_iter()
                .collect(),
        );
        night.fallback_teams = vec![];
        let teams = [
            ("day".to_string(), settings(true, None)),
            ("night".to_string(), night),
        ]
        .into_iter()
        .collect();
        let p = compile(RuleSet::empty(), teams).expect("valid");
        assert_eq!(
            p.deadlines(&c, mon(17)),
            vec![(Deadline::FallBack, mon(20))]
        );
        assert_eq!(p.open_fallback("day", mon(17)), None);
        assert_eq!(p.open_fallback("day", mon(20)), Some("night"));
    }

    #[test]
    fn bad_settings_name_their_key() {
        let mut s = settings(true, None);
        s.reassign_after = Some("soon".into());
        let e = TeamPolicy::compile(&s, &|_| true).unwrap_err();
        assert_eq!(e.key, "reassign_after");
        let mut s = settings(true, None);
        s.fallback_teams = vec!["ghost".into()];
        let e = TeamPolicy::compile(&s, &|t| t != "ghost").unwrap_err();
        assert_eq!(e.key, "fallback_teams[0]");
    }
}
