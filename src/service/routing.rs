//! Routing rules: read by supervisors and admins, replaced by admins.
//!
//! A replacement is checked exactly like the config file's `[[routing.rules]]`, made durable and
//! in force for the next conversation routed ([`crate::admin::replace_rules`]).

use std::sync::Arc;

use super::{admins_only, supervisors_and_admins_only, Result};
use crate::actors::Ctx;
use crate::domain::policy::Policies;
use crate::domain::routing::RuleConfig;
use crate::domain::Caller;

/// The rules in force.
pub fn rules(policies: &Policies, caller: &Caller) -> Result<Vec<RuleConfig>> {
    supervisors_and_admins_only(caller)?;
    Ok(policies.rules.configs().to_vec())
}

/// Replaces the rules (admins); answers the rules now in force.
pub async fn replace_rules(
    ctx: &Arc<Ctx>,
    people: &super::people::People,
    caller: &Caller,
    rules: Vec<RuleConfig>,
) -> Result<Vec<RuleConfig>> {
    admins_only(caller)?;
    let before = Some(serde_json::json!(ctx.policies().rules.configs()));
    let after = Some(serde_json::json!(rules));
    let p = people
        .audited(caller, "routing.rules", "routing", before, after, |batch| {
            crate::admin::replace_rules(ctx, rules, batch)
        })
        .await?;
    Ok(p.rules.configs().to_vec())
}
