//! What a team is set to do: how its waiting conversations reach agents, when it is open, where
//! conversations go while it is closed, and its service levels.
//!
//! These are the settings as written (in `[[teams]]` or through `PUT /api/v1/teams/{id}/settings`,
//! hence the serde derives: the config and the admin API parse them, storage keeps them as
//! JSON). They are checked and compiled into a [`super::policy::TeamPolicy`] before anything acts
//! on them; nothing here validates.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What an admin may change about a team at run time; the same keys as in `[[teams]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct TeamSettings {
    /// How waiting conversations reach agents (default `manual`: agents claim or pull).
    #[serde(default)]
    pub assignment: Assignment,
    /// IANA zone of `hours` and `holidays` (default UTC).
    #[serde(default)]
    pub time_zone: Option<String>,
    /// Opening ranges per day (`mon`..`sun`, "HH:MM-HH:MM", may cross midnight); none = always open.
    #[serde(default)]
    pub hours: Option<BTreeMap<String, Vec<String>>>,
    /// Dates ("YYYY-MM-DD", in `time_zone`) on which no range starts.
    #[serde(default)]
    pub holidays: Vec<String>,
    /// While closed, new conversations go to the first of these teams that is open.
    #[serde(default)]
    pub fallback_teams: Vec<String>,
    /// Sent to the customer once per closed period when nobody can take the conversation.
    #[serde(default)]
    pub after_hours_reply: Option<String>,
    /// An assignee who has not answered the customer by then loses the conversation ("10m").
    #[serde(default)]
    pub reassign_after: Option<String>,
    #[serde(default)]
    pub sla: Option<SlaSettings>,
}

/// A team's service levels ("5m", "24h", …); each clock is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlaSettings {
    #[serde(default)]
    pub first_response: Option<String>,
    #[serde(default)]
    pub next_response: Option<String>,
    #[serde(default)]
    pub resolution: Option<String>,
    /// Count only time inside the team's business hours.
    #[serde(default)]
    pub business_hours_only: bool,
    /// What a breach does besides the metric and the priority raise every breach gets.
    #[serde(default)]
    pub escalate: Option<Escalation>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Escalation {
    /// Tell supervisors of the team and admins (the `conversation.sla_breached` event, which
    /// every breach publishes): the default.
    Notify,
    /// Also take the conversation from its assignee back to the queue.
    Reassign,
}

/// A team's assignment policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Assignment {
    /// Online agents below capacity in turn.
    RoundRobin,
    /// The online agent with the fewest open conversations (ties: longest since last assigned).
    LeastLoaded,
    /// Nothing is assigned automatically; agents claim or `POST /teams/{id}/next`.
    #[default]
    Manual,
}
