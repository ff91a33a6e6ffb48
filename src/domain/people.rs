//! Agents and teams as the business manages them at run time, and their bearer tokens.
//!
//! An [`AgentProfile`] is what an admin sets about an agent (name, teams, role, capacity,
//! whether it is disabled); a [`TeamProfile`] what it sets about a team besides its settings
//! (`super::team`). The checks an admin's change must pass are here, as plain functions, so the
//! config seeding and the admin API refuse the same things with the same messages.
//!
//! Tokens: a new token is 32 random bytes from the OS's CSPRNG, shown to the admin once as
//! base64url and never stored; only its [`TokenHash`] is. The hash is SHA-256, not a slow
//! password hash: a generated token has 256 bits of entropy, so nobody can guess it from its
//! hash however fast the hash is, and a fast hash keeps authentication (on every request) at a
//! map lookup. Config-seeded tokens may be weak (`dev-token-alice`); they are hashed the same way
//! and their strength is the operator's choice, as it was when they sat in the file. Hashes are
//! compared in constant time ([`TokenHash::matches`]).
//!
//! Invariants: an id is non-empty, at most [`MAX_ID_LEN`] bytes, and holds no whitespace, `/` or
//! control character (ids are parts of storage keys separated by NUL and appear in URLs); an
//! agent id is never the broker's own author id (`system`); `max_concurrent` is at least 1.

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::agent::{Caller, Role};
use super::message::Author;
use super::DomainError;

/// Longest agent or team id, in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Longest display name, in characters.
pub const MAX_NAME_LEN: usize = 200;
/// Most teams one agent is in.
pub const MAX_TEAMS_PER_AGENT: usize = 64;
/// Highest `max_concurrent` an admin may set (a capacity, not a quota: it bounds the slots an
/// agent's claims hold in memory).
pub const MAX_CONCURRENT_LIMIT: u32 = 10_000;

/// An agent as an admin set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentProfile {
    pub id: String,
    pub name: String,
    pub teams: Vec<String>,
    pub role: Role,
    pub max_concurrent: u32,
    /// A disabled agent cannot authenticate and owns nothing.
    pub disabled: bool,
}

impl AgentProfile {
    /// The agent as the permission rules see it.
    pub fn caller(&self) -> Caller {
        Caller {
            id: self.id.clone(),
            role: self.role,
            teams: self.teams.clone(),
        }
    }
}

/// A team as an admin set it (its routing and hours are its `TeamSettings`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamProfile {
    pub id: String,
    pub name: String,
}

/// The SHA-256 of a bearer token: what storage keeps and what authentication looks up.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenHash(pub [u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed whole: a hash is not a secret, but logs need only tell two apart.
        write!(f, "TokenHash({}…)", hex::encode(&self.0[..4]))
    }
}

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Whether `other` is this hash, in time that does not depend on where they differ.
    pub fn matches(&self, other: &TokenHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// A fresh token: 32 bytes from the OS's CSPRNG, base64url without padding (43 characters).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64url(&bytes)
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn invalid(message: String) -> DomainError {
    DomainError::Invalid(message)
}

/// Checks an agent or team id (`what` names the field in the message).
pub fn check_id(what: &str, id: &str) -> Result<(), DomainError> {
    if id.is_empty() {
        return Err(invalid(format!("{what} must not be empty")));
    }
    if id.len() > MAX_ID_LEN {
        return Err(invalid(format!("{what} is longer than {MAX_ID_LEN} bytes")));
    }
    if id
        .chars()
        .any(|c| c.is_control() || c == '/' || c.is_whitespace())
    {
        return Err(invalid(format!(
            "{what} {id:?} may not contain spaces, '/' or control characters"
        )));
    }
    Ok(())
}

pub fn check_name(name: &str) -> Result<(), DomainError> {
    if name.chars().count() > MAX_NAME_LEN {
        return Err(invalid(format!(
            "\"name\" is longer than {MAX_NAME_LEN} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            "\"name\" may not contain control characters".into(),
        ));
    }
    Ok(())
}

/// Checks a whole agent profile; `team_exists` names the teams it may be in.
pub fn check_agent(
    a: &AgentProfile,
    team_exists: &dyn Fn(&str) -> bool,
) -> Result<(), DomainError> {
    check_id("\"id\"", &a.id)?;
    if Author::is_reserved(&a.id) {
        return Err(invalid(format!(
            "\"id\" {:?} is reserved for the broker's own messages",
            a.id
        )));
    }
    if a.id == "me" {
        // `/api/v1/agents/me` is the caller's own resource: an agent named so could not be
        // addressed by `/api/v1/agents/{id}`.
        return Err(invalid("\"id\" \"me\" is reserved".into()));
    }
    check_name(&a.name)?;
    if a.max_concurrent == 0 || a.max_concurrent > MAX_CONCURRENT_LIMIT {
        return Err(invalid(format!(
            "\"max_concurrent\" must be 1 to {MAX_CONCURRENT_LIMIT}"
        )));
    }
    if a.teams.len() > MAX_TEAMS_PER_AGENT {
        return Err(invalid(format!(
            "\"teams\" lists more than {MAX_TEAMS_PER_AGENT} teams"
        )));
    }
    for (i, t) in a.teams.iter().enumerate() {
        if !team_exists(t) {
            return Err(invalid(format!("\"teams\": unknown team {t:?}")));
        }
        if a.teams[..i].contains(t) {
            return Err(invalid(format!("\"teams\": {t:?} is listed twice")));
        }
    }
    Ok(())
}

/// Checks a team profile.
pub fn check_team(t: &TeamProfile) -> Result<(), DomainError> {
    check_id("\"id\"", &t.id)?;
    check_name(&t.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> AgentProfile {
        AgentProfile {
            id: "ann".into(),
            name: "Ann".into(),
            teams: vec!["support".into()],
            role: Role::Agent,
            max_concurrent: 3,
            disabled: false,
        }
    }

    #[test]
    fn tokens_are_32_random_bytes_in_base64url() {
        let a = new_token();
        let b = new_token();
        assert_eq!(a.len(), 43, "{a}");
        assert_ne!(a, b);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
        assert_eq!(base64url(b"Man"), "TWFu");
    }

    #[test]
    fn hashes_match_only_their_token() {
        let t = new_token();
        let h = TokenHash::of(&t);
        assert!(h.matches(&TokenHash::of(&t)));
        assert!(!h.matches(&TokenHash::of(&format!("{t}x"))));
        assert!(!format!("{h:?}").contains(&hex::encode(h.0)));
    }

    #[test]
    fn agent_checks_name_the_field() {
        let exists = |t: &str| t == "support" || t == "sales";
        check_agent(&agent(), &exists).expect("valid");
        let bad = |f: &dyn Fn(&mut AgentProfile)| {
            let mut a = agent();
            f(&mut a);
            check_agent(&a, &exists).unwrap_err().to_string()
        };
        assert!(bad(&|a| a.id = "a b".into()).contains("\"id\""));
        assert!(bad(&|a| a.id = String::new()).contains("\"id\""));
        assert!(bad(&|a| a.id = "system".into()).contains("reserved"));
        assert!(bad(&|a| a.id = "me".into()).contains("reserved"));
        assert!(bad(&|a| a.max_concurrent = 0).contains("max_concurrent"));
        assert!(bad(&|a| a.teams = vec!["ops".into()]).contains("unknown team"));
        assert!(bad(&|a| a.teams = vec!["sales".into(), "sales".into()]).contains("twice"));
        assert!(bad(&|a| a.name = "x\n".into()).contains("name"));
    }
}
