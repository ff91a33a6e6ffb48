//! Settings changed through the admin API: routing rules and team settings.
//!
//! The config file gives the initial values; an admin's change is stored here and wins over the
//! file from then on (so it survives restarts), until the admin changes it again. A stored value
//! that no longer fits the config (a team it names was removed from the file) is ignored at
//! start-up with a warning, never fatal.

use serde::{Deserialize, Serialize};

use crate::domain::routing::RuleConfig;
use crate::domain::TeamSettings;

/// Key of the routing rules record in the `settings` column family.
pub const ROUTING_KEY: &[u8] = b"routing";
/// Prefix of team records (`team` NUL id).
pub const TEAM_PREFIX: &[u8] = b"team\0";

/// The rules as the admin sent them. Settings are documents in the API's own format, which
/// grows by optional keys; they are kept as JSON inside the versioned record so a release that
/// adds a key still reads what an older one stored (bincode would not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingRecord {
    rules_json: String,
}

impl RoutingRecord {
    pub fn new(rules: &[RuleConfig]) -> Result<Self, serde_json::Error> {
        Ok(Self {
            rules_json: serde_json::to_string(rules)?,
        })
    }

    pub fn rules(&self) -> Result<Vec<RuleConfig>, serde_json::Error> {
        serde_json::from_str(&self.rules_json)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamRecord {
    settings_json: String,
}

impl TeamRecord {
    pub fn new(settings: &TeamSettings) -> Result<Self, serde_json::Error> {
        Ok(Self {
            settings_json: serde_json::to_string(settings)?,
        })
    }

    pub fn settings(&self) -> Result<TeamSettings, serde_json::Error> {
        serde_json::from_str(&self.settings_json)
    }
}

pub fn team_key(id: &str) -> Vec<u8> {
    let mut k = TEAM_PREFIX.to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}
