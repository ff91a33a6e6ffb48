//! Agents, teams and the audit log, as stored (column families `people` and `audit`).
//!
//! Agents and teams are few (hundreds to thousands) and read whole at start-up into the live
//! roster (`service::people`); nothing reads them from here on the request path. A token is
//! kept only as its SHA-256 ([`TokenHash`]), never in the clear. The `seeded` key is written in
//! the batch that seeds the config's `[[agents]]` and `[[teams]]`, so the config seeds a store
//! exactly once, whatever happens to the file afterwards.
//!
//! The audit log is append-only, keyed by a sequence number (u64 big-endian, so key order is
//! the order of the changes); each record holds who changed what, when, and the JSON of the
//! thing before and after. It is written in the same batch as the change it describes, so a
//! change is never durable without its audit record or the other way round.

use serde::{Deserialize, Serialize};

use super::batch::{Batch, Op};
use super::codec::{encode, Record};
use super::schema::{CF_AUDIT, CF_PEOPLE};
use super::*;
use crate::domain::people::{AgentProfile, TeamProfile, TokenHash};
use crate::domain::Millis;

const AGENT_PREFIX: &[u8] = b"agent\0";
const TEAM_PREFIX: &[u8] = b"team\0";
const SEEDED_KEY: &[u8] = b"seeded";

/// Most audit records one page reads.
pub const AUDIT_PAGE_MAX: usize = 1000;

/// An agent with its token's hash. `rank` orders agents as they were created (the config's
/// order for seeded ones): round-robin assignment follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAgent {
    pub profile: AgentProfile,
    pub token: TokenHash,
    pub rank: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredTeam {
    pub profile: TeamProfile,
    pub rank: u64,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// One admin change: who (`actor`, an agent id, or `config` for seeding), what (`action` on
/// `target`), when, and the JSON documents before and after (tokens never appear in them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at: Millis,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl Record for StoredAgent {
    const VERSION: u8 = 1;
}
impl Record for StoredTeam {
    const VERSION: u8 = 1;
}
impl Record for AuditRecord {
    const VERSION: u8 = 1;
}

fn key(prefix: &[u8], id: &str) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// Everything the `people` column family holds.
#[derive(Debug, Default)]
pub struct StoredPeople {
    /// Whether the config has seeded this store already.
    pub seeded: bool,
    pub agents: Vec<StoredAgent>,
    pub teams: Vec<StoredTeam>,
}

impl Batch {
    pub fn put_agent(&mut self, a: &StoredAgent) -> Result<(), StoreError> {
        self.ops.push(Op::Put {
            cf: CF_PEOPLE,
            key: key(AGENT_PREFIX, &a.profile.id),
            value: encode(a)?,
        });
        Ok(())
    }

    pub fn put_team(&mut self, t: &StoredTeam) -> Result<(), StoreError> {
        self.ops.push(Op::Put {
            cf: CF_PEOPLE,
            key: key(TEAM_PREFIX, &t.profile.id),
            value: encode(t)?,
        });
        Ok(())
    }

    /// Marks the store as seeded from the config (see the module docs).
    pub fn put_seeded(&mut self) {
        self.ops.push(Op::Put {
            cf: CF_PEOPLE,
            key: SEEDED_KEY.to_vec(),
            value: Vec::new(),
        });
    }

    pub fn put_audit(&mut self, r: &AuditRecord) -> Result<(), StoreError> {
        self.ops.push(Op::Put {
            cf: CF_AUDIT,
            key: r.seq.to_be_bytes().to_vec(),
            value: encode(r)?,
        });
        Ok(())
    }
}

impl Store {
    /// Every agent and team, and whether the store was seeded (start-up).
    pub async fn people(&self) -> Result<StoredPeople, StoreError> {
        self.read(|db| {
            let mut out = StoredPeople {
                seeded: db
                    .get_pinned_cf(cf(db, CF_PEOPLE)?, SEEDED_KEY)
                    .map_err(rocks)?
                    .is_some(),
                ..StoredPeople::default()
            };
            scan_prefix(db, CF_PEOPLE, AGENT_PREFIX, |_, v| {
                out.agents.push(decode(v)?);
                Ok(true)
            })?;
            scan_prefix(db, CF_PEOPLE, TEAM_PREFIX, |_, v| {
                out.teams.push(decode(v)?);
                Ok(true)
            })?;
            Ok(out)
        })
        .await
    }

    /// The sequence number of the newest audit record, if any.
    pub async fn last_audit_seq(&self) -> Result<Option<u64>, StoreError> {
        self.read(|db| {
            let mut it = db.iterator_cf(cf(db, CF_AUDIT)?, IteratorMode::End);
            match it.next() {
                Some(item) => {
                    let (k, _) = item.map_err(rocks)?;
                    let bytes: [u8; 8] = k
                        .as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Codec("bad audit key".into()))?;
                    Ok(Some(u64::from_be_bytes(bytes)))
                }
                None => Ok(None),
            }
        })
        .await
    }

    /// Up to `limit` (at most [`AUDIT_PAGE_MAX`]) audit records, newest first, older than
    /// sequence number `before` when given.
    pub async fn audit_page(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let limit = limit.clamp(1, AUDIT_PAGE_MAX);
        self.read(move |db| {
            let h = cf(db, CF_AUDIT)?;
            // Reverse from `before - 1`: the first key at or below it.
            let start = match before {
                Some(0) => return Ok(Vec::new()),
                Some(b) => Some((b - 1).to_be_bytes()),
                None => None,
            };
            let mode = match &start {
                Some(k) => IteratorMode::From(k, IterDirection::Reverse),
                None => IteratorMode::End,
            };
            let mut out = Vec::new();
            for item in db.iterator_cf(h, mode) {
                let (_, v) = item.map_err(rocks)?;
                out.push(decode(&v)?);
                if out.len() >= limit {
                    break;
                }
            }
            Ok(out)
        })
        .await
    }
}
