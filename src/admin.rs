//! Routing rules and team settings: loaded at start-up, replaced at run time by admins.
//!
//! The config file gives the first values; a change through the admin API is checked exactly as
//! the file is (same compiler, same messages), made durable in the `settings` column family and
//! only then put in force, as one new [`Policies`] snapshot. The teams are those in storage
//! (`service::people`); a team created at run time gets its policy here too ([`add_team`]). Changes are serialized by
//! `Ctx::settings_lock`, so the stored and the active settings never disagree. Stored values win
//! over the file at the next start (an admin's change is not undone by a restart); one that no
//! longer fits the file (it names a team that was removed) is skipped with a warning.

use std::collections::HashMap;
use std::sync::Arc;

use crate::actors::Ctx;
use crate::config::Config;
use crate::domain::policy::{self, Policies, TeamPolicy};
use crate::domain::routing::{RuleConfig, RuleSet};
use crate::domain::DomainError;
use crate::domain::TeamSettings;
use crate::error::Error;
use crate::store::settings::{RoutingRecord, TeamRecord};
use crate::store::{Batch, Store};

/// The policies of `teams` (the teams in storage, see `service::people`): each team's stored
/// settings, else the config file's, else the defaults; the routing rules stored, else the
/// file's.
pub async fn load(config: &Config, store: &Store, teams: &[String]) -> Result<Policies, Error> {
    let mut settings: HashMap<String, TeamSettings> = teams
        .iter()
        .map(|id| {
            let from_file = config.teams.iter().find(|t| &t.id == id);
            (
                id.clone(),
                from_file.map(|t| t.settings.clone()).unwrap_or_default(),
            )
        })
        .collect();
    let (stored_rules, stored_teams) = match store.settings().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read stored settings; using the config file's");
            (None, Vec::new())
        }
    };
    for (id, rec) in stored_teams {
        if !settings.contains_key(&id) {
            tracing::warn!(team = %id, "stored settings for a team not in storage; ignored");
            continue;
        }
        let stored = match rec.settings() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(team = %id, error = %e, "unreadable stored team settings; ignored");
                continue;
            }
        };
        match TeamPolicy::compile(&stored, &|t| settings.contains_key(t)) {
            Ok(_) => {
                settings.insert(id, stored);
            }
            Err(e) => {
                tracing::warn!(team = %id, error = %e, "stored team settings no longer valid; using the config file's")
            }
        }
    }
    let exists = |t: &str| settings.contains_key(t);
    let file_rules = || {
        RuleSet::compile(config.routing.rules.clone(), &exists)
            .map_err(|e| DomainError::Invalid(e.to_string()))
    };
    let stored_rules = stored_rules.and_then(|rec| match rec.rules() {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable stored routing rules; using the config file's");
            None
        }
    });
    let rules = match stored_rules {
        Some(rules) => match RuleSet::compile(rules, &exists) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "stored routing rules no longer valid; using the config file's");
                file_rules()?
            }
        },
        None => file_rules()?,
    };
    for w in rules.warnings(intent_ids(config).as_deref()) {
        tracing::warn!("{w}");
    }
    policy::compile(rules, settings)
        .map_err(|(team, e)| DomainError::Invalid(format!("team {team:?}: {e}")).into())
}

/// The intent ids routing may see (None: no `[automation]`, so none).
fn intent_ids(config: &Config) -> Option<Vec<&str>> {
    config
        .automation
        .as_ref()
        .map(|a| a.intents.iter().map(|i| i.id.as_str()).collect())
}

/// Replaces the routing rules: checked, durable (in one batch with `batch`, the change's audit
/// record), then in force.
pub async fn replace_rules(
    ctx: &Arc<Ctx>,
    rules: Vec<RuleConfig>,
    mut batch: Batch,
) -> Result<Policies, Error> {
    let _guard = ctx.settings_lock.lock().await;
    let current = ctx.policies();
    let exists = |t: &str| current.teams.contains_key(t);
    let compiled = RuleSet::compile(rules.clone(), &exists)
        .map_err(|e| DomainError::Invalid(e.to_string()))?;
    for w in compiled.warnings(intent_ids(&ctx.config).as_deref()) {
        tracing::warn!("{w}");
    }
    batch.put_routing(&RoutingRecord::new(&rules).map_err(encode_error)?)?;
    ctx.store.commit(batch).await?;
    let next = Policies {
        rules: compiled,
        ..(*current).clone()
    };
    ctx.set_policies(next.clone());
    Ok(next)
}

/// Replaces one team's settings: checked, durable (in one batch with `batch`, the change's
/// audit record), then in force.
pub async fn replace_team(
    ctx: &Arc<Ctx>,
    team: &str,
    settings: TeamSettings,
    mut batch: Batch,
) -> Result<Policies, Error> {
    let _guard = ctx.settings_lock.lock().await;
    let current = ctx.policies();
    if !current.teams.contains_key(team) {
        return Err(DomainError::NotFound.into());
    }
    let mut all = current.settings.clone();
    all.insert(team.to_string(), settings.clone());
    let next = policy::compile(current.rules.clone(), all)
        .map_err(|(_, e)| DomainError::Invalid(e.to_string()))?;
    batch.put_team_settings(team, &TeamRecord::new(&settings).map_err(encode_error)?)?;
    ctx.store.commit(batch).await?;
    ctx.set_policies(next.clone());
    tokio::spawn(crate::actors::timers::schedule_open(ctx.clone()));
    Ok(next)
}

/// Adds a team created at run time with `settings`: checked like the config file, then
/// committed in one batch with `batch` (the team's own record and its audit record), then in
/// force. The caller starts the team's actor.
pub async fn add_team(
    ctx: &Arc<Ctx>,
    team: &str,
    settings: TeamSettings,
    mut batch: Batch,
) -> Result<Policies, Error> {
    let _guard = ctx.settings_lock.lock().await;
    let current = ctx.policies();
    let mut all = current.settings.clone();
    all.insert(team.to_string(), settings.clone());
    let next = policy::compile(current.rules.clone(), all)
        .map_err(|(_, e)| DomainError::Invalid(e.to_string()))?;
    batch.put_team_settings(team, &TeamRecord::new(&settings).map_err(encode_error)?)?;
    ctx.store.commit(batch).await?;
    ctx.set_policies(next.clone());
    Ok(next)
}

fn encode_error(e: serde_json::Error) -> Error {
    crate::store::StoreError::Codec(e.to_string()).into()
}
