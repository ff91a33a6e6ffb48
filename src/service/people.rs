//! People at run time: agents, teams, their tokens and the audit log of admin changes.
//!
//! Agents and teams live in storage (`store::people`). The config's `[[agents]]` and `[[teams]]`
//! seed an empty store on the first start ([`load_or_seed`]); from then on the file's entries
//! are ignored (a one-line notice says so when they differ) and admins change people through
//! the API. [`People`] is the live roster every request authenticates against, and the one
//! place that changes it.
//!
//! A change is checked, committed in one batch with its audit record (who, what, when, the JSON
//! before and after), and only then put in force, at once: the token map, the callers that open
//! event streams watch ([`Live`]), the agent's teams and capacity (shared with its actor), the
//! teams' member lists (shared with their actors), and the live actor set (an agent or team
//! created now gets its actor, linked to the guardian, before the answer). Disabling an agent
//! removes its token, takes it out of its teams, sets it offline and hands every conversation it
//! owns back to its team's queue, and ends its event streams; rotating a token refuses the old
//! one from the next request and ends the streams opened with it.
//!
//! Invariants: changes are serialized by one lock held across the commit, so storage, roster
//! and audit order agree; the token map holds exactly the enabled agents' hashes; a token is
//! never stored, logged or audited, only its SHA-256 (`domain::people` says why SHA-256).
//! Authentication is one SHA-256, one read lock and one hash-map lookup (O(1) in the number of
//! agents), then a constant-time comparison of the stored hash.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ractor::rpc::CallResult;
use ractor::ActorRef;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::{admins_only, Result};
use crate::actors::guardian::{self, GuardianMsg};
use crate::actors::ports::{ActivePolicies, Conversations, Directory};
use crate::actors::{agent, team, AgentMsg, Ctx, TeamMsg, CALL_TIMEOUT};
use crate::config::{Config, ConfigError};
use crate::domain::people::{self as dp, AgentProfile, TeamProfile, TokenHash};
use crate::domain::{Caller, DomainError, Millis, Role, TeamSettings};
use crate::store::people::{AuditRecord, StoredAgent, StoredPeople, StoredTeam, AUDIT_PAGE_MAX};
use crate::store::settings::TeamRecord;
use crate::store::{Batch, Store, StoreError};

/// The author of seeded records in the audit log.
pub const CONFIG_ACTOR: &str = "config";
/// Audit records a page holds when the caller names no limit.
pub const AUDIT_PAGE_DEFAULT: usize = 100;
/// `max_concurrent` of an agent created without one (as in `[[agents]]`).
pub const DEFAULT_MAX_CONCURRENT: u32 = 5;

/// What an agent's open event streams watch: its caller now (`None` once disabled) and its
/// token's generation (bumped by each rotation). A stream ends when either moves away from what
/// it opened with.
#[derive(Debug, Clone)]
pub struct Live {
    pub caller: Option<Arc<Caller>>,
    pub generation: u64,
}

struct AgentEntry {
    stored: StoredAgent,
    live: watch::Sender<Live>,
    teams: agent::Teams,
}

struct TeamEntry {
    stored: StoredTeam,
    members: team::Members,
}

/// The ports an agent or team actor is started with (wired once by app.rs), kept to start the
/// actors of agents and teams created at run time.
#[derive(Clone)]
pub struct ActorPorts {
    pub store: Store,
    pub directory: Arc<Directory>,
    pub conversations: Conversations,
    pub policies: Arc<ActivePolicies>,
    pub slots: agent::AllSlots,
}

impl ActorPorts {
    fn agent_args(&self, id: &str, slots: Arc<agent::Slots>, teams: agent::Teams) -> agent::Args {
        agent::Args {
            id: id.to_owned(),
            slots,
            teams,
            store: self.store.clone(),
            directory: self.directory.clone(),
            conversations: self.conversations.clone(),
        }
    }

    fn team_args(
        &self,
        id: &str,
        members: team::Members,
        stats: watch::Sender<team::QueueStats>,
    ) -> team::Args {
        team::Args {
            id: id.to_owned(),
            members,
            slots: self.slots.clone(),
            store: self.store.clone(),
            stats,
            policies: self.policies.clone(),
            conversations: self.conversations.clone(),
        }
    }
}

/// The agents and teams in force.
pub struct Roster {
    agents: HashMap<String, AgentEntry>,
    teams: HashMap<String, TeamEntry>,
    /// Enabled agents by their token's hash.
    tokens: HashMap<TokenHash, String>,
    next_rank: u64,
}

impl Roster {
    /// The roster of what storage holds (after [`load_or_seed`]).
    pub fn new(stored: StoredPeople) -> Self {
        let mut r = Roster {
            agents: HashMap::new(),
            teams: HashMap::new(),
            tokens: HashMap::new(),
            next_rank: 0,
        };
        for t in stored.teams {
            r.next_rank = r.next_rank.max(t.rank + 1);
            r.teams.insert(
                t.profile.id.clone(),
                TeamEntry {
                    stored: t,
                    members: Default::default(),
                },
            );
        }
        for a in stored.agents {
            r.next_rank = r.next_rank.max(a.rank + 1);
            let (live, _) = watch::channel(Live {
                caller: (!a.profile.disabled).then(|| Arc::new(a.profile.caller())),
                generation: 0,
            });
            if !a.profile.disabled {
                r.tokens.insert(a.token, a.profile.id.clone());
            }
            r.agents.insert(
                a.profile.id.clone(),
                AgentEntry {
                    teams: Arc::new(parking_lot::RwLock::new(a.profile.teams.clone())),
                    stored: a,
                    live,
                },
            );
        }
        let ids: Vec<String> = r.teams.keys().cloned().collect();
        for id in ids {
            let m = r.members_of(&id);
            if let Some(t) = r.teams.get(&id) {
                *t.members.write() = m;
            }
        }
        r
    }

    /// The enabled agents of `team`, in creation order (round robin follows it).
    fn members_of(&self, team: &str) -> Vec<String> {
        let mut m: Vec<&StoredAgent> = self
            .agents
            .values()
            .map(|e| &e.stored)
            .filter(|a| !a.profile.disabled && a.profile.teams.iter().any(|t| t == team))
            .collect();
        m.sort_by_key(|a| a.rank);
        m.into_iter().map(|a| a.profile.id.clone()).collect()
    }

    /// The team ids, in creation order.
    pub fn team_ids(&self) -> Vec<String> {
        let mut t: Vec<&StoredTeam> = self.teams.values().map(|e| &e.stored).collect();
        t.sort_by_key(|t| t.rank);
        t.into_iter().map(|t| t.profile.id.clone()).collect()
    }

    /// Start-up arguments of every agent's actor (disabled agents too: they own nothing and
    /// cannot authenticate, and re-enabling one needs no new actor); their slots are entered in
    /// `ports.slots`.
    pub fn agent_args(&self, ports: &ActorPorts) -> Vec<agent::Args> {
        self.agents
            .values()
            .map(|e| {
                let id = &e.stored.profile.id;
                let slots = Arc::new(agent::Slots::new(e.stored.profile.max_concurrent));
                ports.slots.write().insert(id.clone(), slots.clone());
                ports.agent_args(id, slots, e.teams.clone())
            })
            .collect()
    }

    /// Start-up arguments of every team's actor, with where it publishes its queue stats.
    pub fn team_args(
        &self,
        ports: &ActorPorts,
    ) -> Vec<(team::Args, watch::Receiver<team::QueueStats>)> {
        self.teams
            .values()
            .map(|e| {
                let (stats, rx) = watch::channel(team::QueueStats::default());
                let args = ports.team_args(&e.stored.profile.id, e.members.clone(), stats);
                (args, rx)
            })
            .collect()
    }
}

/// Why people could not be loaded at start-up.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The config names something storage does not hold (a number's `default_team`).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Reads agents and teams from storage; on the first start (nothing seeded yet) writes the
/// config's `[[teams]]` (with their settings, unless an admin stored some already) and
/// `[[agents]]` (their tokens hashed) first, in one batch with their audit records. Later, the
/// file's entries are ignored, with a notice when they differ from storage. Every number's
/// `default_team` must be a stored team.
pub async fn load_or_seed(
    config: &Config,
    store: &Store,
    now: Millis,
) -> Result<StoredPeople, LoadError> {
    let mut stored = store.people().await?;
    if !stored.seeded {
        stored = seed(config, store, now).await?;
    } else if differs(config, &stored) {
        tracing::warn!(
            "config [[agents]]/[[teams]] differ from storage and are ignored: they seed an empty store only; change people with the admin API (/api/v1/agents, /api/v1/teams)"
        );
    }
    for (i, n) in config.numbers.iter().enumerate() {
        if !stored.teams.iter().any(|t| t.profile.id == n.default_team) {
            return Err(ConfigError {
                key: format!("numbers[{i}].default_team"),
                problem: format!(
                    "team {:?} is not in storage (teams come from the config only on the first start; create it with POST /api/v1/teams)",
                    n.default_team
                ),
            }
            .into());
        }
    }
    Ok(stored)
}

async fn seed(config: &Config, store: &Store, now: Millis) -> Result<StoredPeople, LoadError> {
    let (_, stored_settings) = store.settings().await?;
    let has_settings: HashSet<String> = stored_settings.into_iter().map(|(id, _)| id).collect();
    let mut seq = store.last_audit_seq().await?.map_or(1, |s| s + 1);
    let mut batch = Batch::new();
    let mut audit = |batch: &mut Batch, action: &str, target: &str, after: Value| {
        let r = AuditRecord {
            seq,
            at: now,
            actor: CONFIG_ACTOR.into(),
            action: action.into(),
            target: target.into(),
            before: None,
            after: Some(after.to_string()),
        };
        seq += 1;
        batch.put_audit(&r)
    };
    let mut out = StoredPeople {
        seeded: true,
        ..StoredPeople::default()
    };
    for (i, t) in config.teams.iter().enumerate() {
        let team = StoredTeam {
            profile: TeamProfile {
                id: t.id.clone(),
                name: t.name.clone(),
            },
            rank: i as u64,
            created_at: now,
            updated_at: now,
        };
        batch.put_team(&team)?;
        if !has_settings.contains(&t.id) {
            let rec = TeamRecord::new(&t.settings).map_err(|e| StoreError::Codec(e.to_string()))?;
            batch.put_team_settings(&t.id, &rec)?;
        }
        audit(&mut batch, "team.create", &t.id, team_json(&team, None))?;
        out.teams.push(team);
    }
    for (i, a) in config.agents.iter().enumerate() {
        let agent = StoredAgent {
            profile: AgentProfile {
                id: a.id.clone(),
                name: a.name.clone(),
                teams: a.teams.clone(),
                role: a.role,
                max_concurrent: a.max_concurrent,
                disabled: false,
            },
            token: TokenHash::of(&a.token),
            rank: i as u64,
            created_at: now,
            updated_at: now,
        };
        batch.put_agent(&agent)?;
        audit(&mut batch, "agent.create", &a.id, agent_json(&agent))?;
        out.agents.push(agent);
    }
    batch.put_seeded();
    store.commit(batch).await?;
    tracing::info!(
        agents = out.agents.len(),
        teams = out.teams.len(),
        "seeded agents and teams from the config (first start)"
    );
    Ok(out)
}

/// Whether the file's agents or teams say something storage does not.
fn differs(config: &Config, stored: &StoredPeople) -> bool {
    let teams = config.teams.iter().any(|t| {
        !stored
            .teams
            .iter()
            .any(|s| s.profile.id == t.id && s.profile.name == t.name)
    });
    let agents = config.agents.iter().any(|a| {
        !stored.agents.iter().any(|s| {
            let p = &s.profile;
            p.id == a.id
                && p.name == a.name
                && p.teams == a.teams
                && p.role == a.role
                && p.max_concurrent == a.max_concurrent
                && s.token.matches(&TokenHash::of(&a.token))
        })
    });
    teams || agents || config.agents.len() != stored.agents.len()
}

/// An agent as the API and the audit log show it (never its token or hash).
pub fn agent_json(a: &StoredAgent) -> Value {
    let p = &a.profile;
    json!({
        "id": p.id,
        "name": p.name,
        "teams": p.teams,
        "role": p.role,
        "max_concurrent": p.max_concurrent,
        "disabled": p.disabled,
    })
}

/// A team as the audit log shows it (with its settings when they were set with it).
fn team_json(t: &StoredTeam, settings: Option<&TeamSettings>) -> Value {
    let mut v = json!({ "id": t.profile.id, "name": t.profile.name });
    if let Some(s) = settings {
        v["settings"] = json!(s);
    }
    v
}

/// A new agent as an admin asked for it (absent fields take the config's defaults).
#[derive(Debug, Clone, Default)]
pub struct NewAgent {
    pub id: String,
    pub name: Option<String>,
    pub teams: Vec<String>,
    pub role: Option<Role>,
    pub max_concurrent: Option<u32>,
}

/// The fields of an agent an admin changes (absent: unchanged).
#[derive(Debug, Clone, Default)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub teams: Option<Vec<String>>,
    pub role: Option<Role>,
    pub max_concurrent: Option<u32>,
    pub disabled: Option<bool>,
}

/// An agent with its presence and load now (for the admin's list).
#[derive(Debug, Clone)]
pub struct AgentState {
    pub agent: StoredAgent,
    pub snapshot: Option<agent::AgentSnapshot>,
}

/// A team with its members now.
#[derive(Debug, Clone)]
pub struct TeamState {
    pub team: StoredTeam,
    pub members: Vec<String>,
}

/// One page of the audit log, newest first; pass `next_cursor` as `cursor` for the next.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub entries: Vec<AuditRecord>,
    pub next_cursor: Option<u64>,
}

/// The live roster and the admin use cases that change it (see the module docs).
pub struct People {
    ctx: Arc<Ctx>,
    guardian: ActorRef<GuardianMsg>,
    ports: ActorPorts,
    roster: parking_lot::RwLock<Roster>,
    /// Serializes changes: storage, roster and audit order agree.
    changes: tokio::sync::Mutex<()>,
    /// The next audit sequence number (taken under `changes`).
    audit_seq: AtomicU64,
}

impl People {
    /// The roster in force, its actors started by the caller and entered in `ctx`; audit
    /// records continue after `last_audit`.
    pub fn new(
        ctx: Arc<Ctx>,
        guardian: ActorRef<GuardianMsg>,
        ports: ActorPorts,
        roster: Roster,
        last_audit: Option<u64>,
    ) -> Self {
        Self {
            ctx,
            guardian,
            ports,
            roster: parking_lot::RwLock::new(roster),
            changes: tokio::sync::Mutex::new(()),
            audit_seq: AtomicU64::new(last_audit.map_or(1, |s| s + 1)),
        }
    }

    /// The enabled agent whose token this is.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        let hash = TokenHash::of(token);
        let r = self.roster.read();
        let e = r.agents.get(r.tokens.get(&hash)?)?;
        (e.stored.token.matches(&hash) && !e.stored.profile.disabled)
            .then(|| e.stored.profile.caller())
    }

    /// As [`Self::authenticate`], with what an event stream watches to follow the agent's
    /// changes and the token generation it opens with (both read under the lock every change
    /// takes, so a rotation right after is seen as one).
    pub fn session(&self, token: &str) -> Option<(Caller, watch::Receiver<Live>, u64)> {
        let hash = TokenHash::of(token);
        let r = self.roster.read();
        let e = r.agents.get(r.tokens.get(&hash)?)?;
        (e.stored.token.matches(&hash) && !e.stored.profile.disabled).then(|| {
            let generation = e.live.borrow().generation;
            (e.stored.profile.caller(), e.live.subscribe(), generation)
        })
    }

    /// An agent's first team, disabled agents included (reports cut an agent's buckets in that
    /// team's time zone, also for its past work); `None` for an unknown one.
    pub fn home_team(&self, id: &str) -> Option<String> {
        let r = self.roster.read();
        r.agents.get(id)?.stored.profile.teams.first().cloned()
    }

    /// The teams of an enabled agent (a transfer's target); `None` for an unknown or disabled
    /// one.
    pub fn agent_teams(&self, id: &str) -> Option<Vec<String>> {
        let r = self.roster.read();
        let e = r.agents.get(id)?;
        (!e.stored.profile.disabled).then(|| e.stored.profile.teams.clone())
    }

    fn audit(
        &self,
        batch: &mut Batch,
        caller: &Caller,
        action: &str,
        target: &str,
        before: Option<Value>,
        after: Option<Value>,
    ) -> Result<(), StoreError> {
        batch.put_audit(&AuditRecord {
            seq: self.audit_seq.fetch_add(1, Ordering::Relaxed),
            at: self.ctx.now(),
            actor: caller.id.clone(),
            action: action.into(),
            target: target.into(),
            before: before.map(|v| v.to_string()),
            after: after.map(|v| v.to_string()),
        })
    }

    /// Runs another admin change (routing rules, team settings) in the order of all others,
    /// handing `apply` a batch that holds the change's audit record: `apply` commits it with
    /// the change, so both are durable or neither is.
    pub async fn audited<T, Fut>(
        &self,
        caller: &Caller,
        action: &str,
        target: &str,
        before: Option<Value>,
        after: Option<Value>,
        apply: impl FnOnce(Batch) -> Fut,
    ) -> std::result::Result<T, crate::error::Error>
    where
        Fut: std::future::Future<Output = std::result::Result<T, crate::error::Error>>,
    {
        let _one = self.changes.lock().await;
        let mut batch = Batch::new();
        self.audit(&mut batch, caller, action, target, before, after)?;
        apply(batch).await
    }

    /// Every agent, in creation order, with its presence and load (admins).
    pub fn agents(&self, caller: &Caller) -> Result<Vec<AgentState>> {
        admins_only(caller)?;
        let agents: Vec<StoredAgent> = self
            .roster
            .read()
            .agents
            .values()
            .map(|e| e.stored.clone())
            .collect();
        Ok(self.states(agents))
    }

    /// The members of `team`, in creation order, with their presence and load: what its
    /// supervisors (and admins) watch in the console's supervisor view. Agents get 403, like for
    /// the team's queue; an unknown team is 404.
    pub fn team_agents(&self, caller: &Caller, team: &str) -> Result<Vec<AgentState>> {
        let agents: Vec<StoredAgent> = {
            let r = self.roster.read();
            let entry = r.teams.get(team).ok_or(DomainError::NotFound)?;
            super::managers_only(caller, team)?;
            let members = entry.members.read();
            members
                .iter()
                .filter_map(|id| r.agents.get(id))
                .map(|e| e.stored.clone())
                .collect()
        };
        Ok(self.states(agents))
    }

    /// `agents` in creation order, each with its presence and load.
    fn states(&self, mut agents: Vec<StoredAgent>) -> Vec<AgentState> {
        agents.sort_by_key(|a| a.rank);
        agents
            .into_iter()
            .map(|a| AgentState {
                snapshot: self
                    .ctx
                    .agent_slots(&a.profile.id)
                    .map(|s| s.snapshot(&a.profile.id)),
                agent: a,
            })
            .collect()
    }

    /// Creates an agent (admins); answers it with its token, which is shown this once.
    pub async fn create_agent(
        &self,
        caller: &Caller,
        new: NewAgent,
    ) -> Result<(StoredAgent, String)> {
        admins_only(caller)?;
        let _one = self.changes.lock().await;
        let profile = AgentProfile {
            id: new.id,
            name: new.name.unwrap_or_default(),
            teams: new.teams,
            role: new.role.unwrap_or(Role::Agent),
            max_concurrent: new.max_concurrent.unwrap_or(DEFAULT_MAX_CONCURRENT),
            disabled: false,
        };
        let rank = {
            let r = self.roster.read();
            dp::check_agent(&profile, &|t| r.teams.contains_key(t))?;
            if r.agents.contains_key(&profile.id) {
                return Err(
                    DomainError::AlreadyExists(format!("agent {:?} exists", profile.id)).into(),
                );
            }
            r.next_rank
        };
        let token = dp::new_token();
        let now = self.ctx.now();
        let stored = StoredAgent {
            profile,
            token: TokenHash::of(&token),
            rank,
            created_at: now,
            updated_at: now,
        };
        let id = stored.profile.id.clone();
        let mut batch = Batch::new();
        batch.put_agent(&stored)?;
        self.audit(
            &mut batch,
            caller,
            "agent.create",
            &id,
            None,
            Some(agent_json(&stored)),
        )?;
        self.ctx.store.commit(batch).await?;

        let slots = Arc::new(agent::Slots::new(stored.profile.max_concurrent));
        let teams: agent::Teams = Arc::new(parking_lot::RwLock::new(stored.profile.teams.clone()));
        self.ports.slots.write().insert(id.clone(), slots.clone());
        let args = self.ports.agent_args(&id, slots, teams.clone());
        match guardian::adopt_agent(&self.guardian, args).await {
            Ok(actor) => self.ports.directory.set_agent(&id, actor),
            // Stored all the same: the next start gives it an actor.
            Err(e) => {
                tracing::error!(agent = %id, error = %e, "cannot start the new agent's actor")
            }
        }
        {
            let mut r = self.roster.write();
            let (live, _) = watch::channel(Live {
                caller: Some(Arc::new(stored.profile.caller())),
                generation: 0,
            });
            r.tokens.insert(stored.token, id.clone());
            r.next_rank = rank + 1;
            r.agents.insert(
                id,
                AgentEntry {
                    stored: stored.clone(),
                    live,
                    teams,
                },
            );
        }
        self.refresh_members(&stored.profile.teams);
        Ok((stored, token))
    }

    /// Changes an agent (admins); in force at once (see the module docs).
    pub async fn update_agent(
        &self,
        caller: &Caller,
        id: &str,
        patch: AgentPatch,
    ) -> Result<StoredAgent> {
        admins_only(caller)?;
        let _one = self.changes.lock().await;
        let before = {
            let r = self.roster.read();
            r.agents
                .get(id)
                .map(|e| e.stored.clone())
                .ok_or(DomainError::NotFound)?
        };
        let mut after = before.clone();
        let p = &mut after.profile;
        if let Some(v) = patch.name {
            p.name = v;
        }
        if let Some(v) = patch.teams {
            p.teams = v;
        }
        if let Some(v) = patch.role {
            p.role = v;
        }
        if let Some(v) = patch.max_concurrent {
            p.max_concurrent = v;
        }
        if let Some(v) = patch.disabled {
            p.disabled = v;
        }
        {
            let r = self.roster.read();
            dp::check_agent(&after.profile, &|t| r.teams.contains_key(t))?;
            let admin = |p: &AgentProfile| p.role == Role::Admin && !p.disabled;
            let others = r
                .agents
                .values()
                .any(|e| e.stored.profile.id != id && admin(&e.stored.profile));
            if admin(&before.profile) && !admin(&after.profile) && !others {
                // Nobody could undo it without a restart on a fresh store.
                return Err(DomainError::Invalid(
                    "the last enabled admin cannot be disabled or lose the admin role".into(),
                )
                .into());
            }
        }
        if after.profile == before.profile {
            return Ok(before);
        }
        after.updated_at = self.ctx.now();
        let mut batch = Batch::new();
        batch.put_agent(&after)?;
        self.audit(
            &mut batch,
            caller,
            "agent.update",
            id,
            Some(agent_json(&before)),
            Some(agent_json(&after)),
        )?;
        self.ctx.store.commit(batch).await?;

        let (was, now) = (&before.profile, &after.profile);
        {
            let mut r = self.roster.write();
            if now.disabled {
                r.tokens.remove(&after.token);
            } else {
                r.tokens.insert(after.token, id.to_owned());
            }
            if let Some(e) = r.agents.get_mut(id) {
                e.stored = after.clone();
                *e.teams.write() = now.teams.clone();
                let caller = (!now.disabled).then(|| Arc::new(now.caller()));
                e.live.send_modify(|l| l.caller = caller.clone());
                // Before the change is answered, after `live` (a stream subscribing meanwhile
                // re-reads `live` once registered): the next event is offered by what it is now.
                self.ctx.bus.refresh_agent(id, caller);
            }
        }
        if let Some(slots) = self.ctx.agent_slots(id) {
            slots.set_max(now.max_concurrent);
        }
        let touched: Vec<String> = was
            .teams
            .iter()
            .chain(&now.teams)
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        self.refresh_members(&touched);
        if let Some(actor) = self.ctx.agent(id) {
            if now.disabled && !was.disabled {
                if !matches!(
                    actor
                        .call(|reply| AgentMsg::Disable { reply }, Some(CALL_TIMEOUT))
                        .await,
                    Ok(CallResult::Success(()))
                ) {
                    tracing::error!(agent = %id, "the disabled agent's actor did not answer; its conversations go back at its next start");
                }
            } else if !now.disabled {
                // More room or new teams: its teams may assign to it now.
                let _ = actor.cast(AgentMsg::Freed);
            }
        }
        Ok(after)
    }

    /// Gives an agent a new token (admins); the old one is refused from the next request on and
    /// the streams opened with it end. The new token is shown this once.
    pub async fn rotate_token(&self, caller: &Caller, id: &str) -> Result<(StoredAgent, String)> {
        admins_only(caller)?;
        let _one = self.changes.lock().await;
        let before = {
            let r = self.roster.read();
            r.agents
                .get(id)
                .map(|e| e.stored.clone())
                .ok_or(DomainError::NotFound)?
        };
        let token = dp::new_token();
        let after = StoredAgent {
            token: TokenHash::of(&token),
            updated_at: self.ctx.now(),
            ..before.clone()
        };
        let mut batch = Batch::new();
        batch.put_agent(&after)?;
        let who = json!({ "id": id });
        self.audit(
            &mut batch,
            caller,
            "agent.token_rotate",
            id,
            Some(who.clone()),
            Some(who),
        )?;
        self.ctx.store.commit(batch).await?;
        {
            let mut r = self.roster.write();
            r.tokens.remove(&before.token);
            if !after.profile.disabled {
                r.tokens.insert(after.token, id.to_owned());
            }
            if let Some(e) = r.agents.get_mut(id) {
                e.stored = after.clone();
                e.live.send_modify(|l| l.generation += 1);
            }
        }
        Ok((after, token))
    }

    /// Every team, in creation order, with its members (admins).
    pub fn teams(&self, caller: &Caller) -> Result<Vec<TeamState>> {
        admins_only(caller)?;
        let r = self.roster.read();
        let mut teams: Vec<TeamState> = r
            .teams
            .values()
            .map(|e| TeamState {
                team: e.stored.clone(),
                members: e.members.read().clone(),
            })
            .collect();
        teams.sort_by_key(|t| t.team.rank);
        Ok(teams)
    }

    /// Creates a team (admins) with `settings` (checked like `[[teams]]`; default: manual
    /// assignment, always open); its actor and queue exist before the answer.
    pub async fn create_team(
        &self,
        caller: &Caller,
        profile: TeamProfile,
        settings: Option<TeamSettings>,
    ) -> Result<StoredTeam> {
        admins_only(caller)?;
        let _one = self.changes.lock().await;
        dp::check_team(&profile)?;
        let rank = {
            let r = self.roster.read();
            if r.teams.contains_key(&profile.id) {
                return Err(
                    DomainError::AlreadyExists(format!("team {:?} exists", profile.id)).into(),
                );
            }
            r.next_rank
        };
        let now = self.ctx.now();
        let stored = StoredTeam {
            profile,
            rank,
            created_at: now,
            updated_at: now,
        };
        let id = stored.profile.id.clone();
        let settings = settings.unwrap_or_default();
        let mut batch = Batch::new();
        batch.put_team(&stored)?;
        self.audit(
            &mut batch,
            caller,
            "team.create",
            &id,
            None,
            Some(team_json(&stored, Some(&settings))),
        )?;
        crate::admin::add_team(&self.ctx, &id, settings, batch).await?;
        crate::metrics::zero_known_series(&[], &[id.as_str()], &[]);

        let members: team::Members = Default::default();
        let (stats, rx) = watch::channel(team::QueueStats::default());
        let args = self.ports.team_args(&id, members.clone(), stats);
        match guardian::adopt_team(&self.guardian, args).await {
            Ok(actor) => {
                self.ctx.add_team_stats(&id, rx);
                self.ports.directory.set_team(&id, actor.clone());
                // Its first `Assign` rebuilds its (empty) queue and starts assigning.
                let _ = actor.cast(TeamMsg::Assign);
            }
            Err(e) => tracing::error!(team = %id, error = %e, "cannot start the new team's actor"),
        }
        let mut r = self.roster.write();
        r.next_rank = rank + 1;
        r.teams.insert(
            id,
            TeamEntry {
                stored: stored.clone(),
                members,
            },
        );
        Ok(stored)
    }

    /// Renames a team (admins); its settings have their own route.
    pub async fn update_team(
        &self,
        caller: &Caller,
        id: &str,
        name: Option<String>,
    ) -> Result<StoredTeam> {
        admins_only(caller)?;
        let _one = self.changes.lock().await;
        let before = {
            let r = self.roster.read();
            r.teams
                .get(id)
                .map(|e| e.stored.clone())
                .ok_or(DomainError::NotFound)?
        };
        let mut after = before.clone();
        if let Some(n) = name {
            after.profile.name = n;
        }
        dp::check_team(&after.profile)?;
        if after.profile == before.profile {
            return Ok(before);
        }
        after.updated_at = self.ctx.now();
        let mut batch = Batch::new();
        batch.put_team(&after)?;
        self.audit(
            &mut batch,
            caller,
            "team.update",
            id,
            Some(team_json(&before, None)),
            Some(team_json(&after, None)),
        )?;
        self.ctx.store.commit(batch).await?;
        if let Some(e) = self.roster.write().teams.get_mut(id) {
            e.stored = after.clone();
        }
        Ok(after)
    }

    /// The audit log, newest first, older than `cursor` when given (admins).
    pub async fn audit_log(
        &self,
        caller: &Caller,
        cursor: Option<u64>,
        limit: Option<usize>,
    ) -> Result<AuditPage> {
        admins_only(caller)?;
        let limit = limit.unwrap_or(AUDIT_PAGE_DEFAULT);
        if limit == 0 || limit > AUDIT_PAGE_MAX {
            return Err(
                DomainError::Invalid(format!("\"limit\" must be 1 to {AUDIT_PAGE_MAX}")).into(),
            );
        }
        let entries = self.ctx.store.audit_page(cursor, limit).await?;
        let next_cursor = (entries.len() == limit)
            .then(|| entries.last().map(|e| e.seq))
            .flatten()
            .filter(|s| *s > 1);
        Ok(AuditPage {
            entries,
            next_cursor,
        })
    }

    /// Recomputes the members of `teams` and lets each re-check its queue.
    fn refresh_members(&self, teams: &[String]) {
        {
            let r = self.roster.read();
            for t in teams {
                if let Some(e) = r.teams.get(t) {
                    *e.members.write() = r.members_of(t);
                }
            }
        }
        for t in teams {
            if let Some(actor) = self.ctx.team(t) {
                let _ = actor.cast(TeamMsg::Assign);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str, rank: u64, teams: &[&str], disabled: bool) -> StoredAgent {
        StoredAgent {
            profile: AgentProfile {
                id: id.into(),
                name: String::new(),
                teams: teams.iter().map(|t| t.to_string()).collect(),
                role: Role::Agent,
                max_concurrent: 1,
                disabled,
            },
            token: TokenHash::of(&format!("token-{id}")),
            rank,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn the_roster_knows_enabled_tokens_and_orders_members_by_creation() {
        let team = StoredTeam {
            profile: TeamProfile {
                id: "support".into(),
                name: String::new(),
            },
            rank: 0,
            created_at: 0,
            updated_at: 0,
        };
        let r = Roster::new(StoredPeople {
            seeded: true,
            agents: vec![
                agent("zed", 1, &["support"], false),
                agent("off", 2, &["support"], true),
                agent("amy", 3, &["support"], false),
                agent("sal", 4, &[], false),
            ],
            teams: vec![team],
        });
        assert_eq!(
            r.members_of("support"),
            ["zed", "amy"],
            "creation order, enabled only"
        );
        assert_eq!(r.tokens.len(), 3, "no token for the disabled agent");
        assert!(!r.tokens.contains_key(&TokenHash::of("token-off")));
        assert_eq!(r.next_rank, 5);
        assert_eq!(r.agents.len(), 4, "every agent has an actor");
    }
}
