//! Who is calling and whether they are available.
//!
//! A [`Caller`] is resolved from a bearer token by the transport and carried into every command,
//! so the permission rules below see exactly what the config says about that agent. The config
//! builds callers from its `[[agents]]` entries; this module knows nothing of the config.

use serde::{Deserialize, Serialize};

/// What an agent may see and do (the config's `role`; serde names as there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Supervisor,
    Admin,
}

/// An authenticated agent, supervisor or admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub id: String,
    pub role: Role,
    pub teams: Vec<String>,
}

impl Caller {
    pub fn in_team(&self, team: &str) -> bool {
        self.teams.iter().any(|t| t == team)
    }

    /// Supervisors manage their teams; admins manage everything.
    pub fn manages(&self, team: &str) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Supervisor => self.in_team(team),
            Role::Agent => false,
        }
    }
}

/// Agent presence; agents start `offline` and nothing is assigned to them automatically until
/// they are `online`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    Online,
    Away,
    #[default]
    Offline,
}

impl Presence {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "online" => Some(Self::Online),
            "away" => Some(Self::Away),
            "offline" => Some(Self::Offline),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Away => "away",
            Self::Offline => "offline",
        }
    }
}
