//! Routing rules and team settings: loaded at start-up, replaced at run time by admins.
//!
//! The config file gives the first values; a change through the admin API is checked exactly as
//! the file is (same compiler, same messages), made durable in the `settings` column family and
//! only then put in force, as one new [`Policies`] snapshot. Changes are serialized by
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

/// The policies of the config file, with stored admin changes applied.
pub async fn load(config: &Config, store: &Store) -> Result<Policies, Error> {
    let mut settings: HashMap<String, TeamSettings> = config
        .teams
        .iter()
        .map(|t| (t.id.clone(), t.settings.clone()))
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
            tracing::warn!(team = %id, "stored settings for a team no longer configured; ignored");
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
    for w in rules.warnings() {
        tracing::warn!("{w}");
    }
    policy::compile(rules, settings)
        .map_err(|(team, e)| DomainError::Invalid(format!("team {team:?}: {e}")).into())
}

/// Replaces the routing rules: checked, durable, then in force.
pub async fn replace_rules(ctx: &Arc<Ctx>, rules: Vec<RuleConfig>) -> Result<Policies, Error> {
    let _guard = ctx.settings_lock.lock().await;
    let current = ctx.policies();
    let exists = |t: &str| current.teams.contains_key(t);
    let compiled = RuleSet::compile(rules.clone(), &exists)
        .map_err(|e| DomainError::Invalid(e.to_string()))?;
    for w in compiled.warnings() {
        tracing::warn!("{w}");
    }
    let mut batch = Batch::new();
    batch.put_routing(&RoutingRecord::new(&rules).map_err(encode_error)?)?;
    ctx.store.commit(batch).await?;
    let next = Policies {
        rules: compiled,
        ..(*current).clone()
    };
    ctx.set_policies(next.clone());
    Ok(next)
}

/// Replaces one team's settings: checked, durable, then in force.
pub async fn replace_team(
    ctx: &Arc<Ctx>,
    team: &str,
    settings: TeamSettings,
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
    let mut batch = Batch::new();
    batch.put_team_settings(team, &TeamRecord::new(&settings).map_err(encode_error)?)?;
    ctx.store.commit(batch).await?;
    ctx.set_policies(next.clone());
    tokio::spawn(crate::actors::timers::schedule_open(ctx.clone()));
    Ok(next)
}

fn encode_error(e: serde_json::Error) -> Error {
    crate::store::StoreError::Codec(e.to_string()).into()
}
