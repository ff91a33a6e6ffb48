//! A team's queue, taking its next conversation, and its settings.
//!
//! Calls into the team actor (ractor) are made only by [`pop`], [`put_back`] and [`snapshot`],
//! so a change to how the team actor is reached stays in this file.

use std::sync::Arc;

use ractor::rpc::CallResult;
use ractor::ActorRef;

use super::{admins_only, managers_only, Result, ServiceError};
use crate::actors::{ConversationMsg, Ctx, TeamMsg, CALL_TIMEOUT};
use crate::domain::TeamSettings;
use crate::domain::{Caller, Conversation, DomainError, Millis, Priority};
use crate::error::Error;

/// A team's settings (its supervisors and admins).
pub fn settings(ctx: &Ctx, caller: &Caller, team: &str) -> Result<TeamSettings> {
    let policies = ctx.policies();
    let settings = policies.settings.get(team).ok_or(DomainError::NotFound)?;
    managers_only(caller, team)?;
    Ok(settings.clone())
}

/// Replaces a team's settings (admins): checked like the config file, durable, in force at once;
/// answers the settings now in force. `unknown_key` is a key the request held that settings do
/// not know: it is refused (after the permission check), so a misspelt key never replaces the
/// setting it meant with its default.
pub async fn replace_settings(
    ctx: &Arc<Ctx>,
    people: &super::people::People,
    caller: &Caller,
    team: &str,
    settings: TeamSettings,
    unknown_key: Option<&str>,
) -> Result<TeamSettings> {
    admins_only(caller)?;
    if let Some(key) = unknown_key {
        return Err(DomainError::Invalid(format!("unknown key {key:?}")).into());
    }
    let before = ctx
        .policies()
        .settings
        .get(team)
        .map(|s| serde_json::json!(s));
    let after = Some(serde_json::json!(settings));
    let p = people
        .audited(caller, "team.settings", team, before, after, |batch| {
            crate::admin::replace_team(ctx, team, settings, batch)
        })
        .await?;
    Ok(p.settings.get(team).cloned().unwrap_or_default())
}

/// Most queue entries one `next` call skips (conversations claimed directly meanwhile).
const NEXT_ATTEMPTS: usize = 64;

/// Pops the oldest waiting conversation and claims it for the caller (members of the team, its
/// supervisors and admins); `None` when none waits. The pop is one team-actor message and the
/// claim one conversation-actor message, so two callers never get the same conversation; if the
/// caller is at capacity the conversation goes back to its place in the queue.
pub async fn take_next(
    ctx: &Arc<Ctx>,
    caller: &Caller,
    team: &str,
) -> Result<Option<Conversation>> {
    let queue = ctx.team(team).ok_or(DomainError::NotFound)?;
    if !caller.in_team(team) && !caller.manages(team) {
        return Err(ServiceError::Forbidden(
            "only members of the team take from its queue",
        ));
    }
    for _ in 0..NEXT_ATTEMPTS {
        let Some((cid, at, priority)) = pop(&queue).await? else {
            return Ok(None);
        };
        let claimed = ctx
            .ask(&cid, None, |reply| ConversationMsg::ClaimQueued {
                caller: caller.clone(),
                reply,
            })
            .await;
        match claimed {
            Ok(conv) => return Ok(Some(conv)),
            Err(Error::Domain(DomainError::CapacityReached)) => {
                put_back(&queue, cid, at, priority);
                return Err(Error::from(DomainError::CapacityReached).into());
            }
            // Claimed directly (or gone) since it was queued: take the next one.
            Err(Error::Domain(_)) => continue,
            Err(e) => {
                put_back(&queue, cid, at, priority);
                return Err(e.into());
            }
        }
    }
    Ok(None)
}

/// A team's waiting conversations, oldest first (its supervisors and admins).
pub struct Queue {
    pub depth: usize,
    /// How long the oldest has waited, in whole seconds (0 when none waits).
    pub oldest_wait_seconds: Millis,
    /// At most the requested number; any no longer stored is left out.
    pub conversations: Vec<Conversation>,
}

/// Most conversations a queue view holds, and how many when the caller names no limit.
const QUEUE_MAX: usize = 1000;
const QUEUE_DEFAULT: usize = 100;

/// The team's queue: its depth, its oldest wait and its first `limit` conversations.
pub async fn queue(ctx: &Ctx, caller: &Caller, team: &str, limit: Option<usize>) -> Result<Queue> {
    let actor = ctx.team(team).ok_or(DomainError::NotFound)?;
    managers_only(caller, team)?;
    let limit = limit.unwrap_or(QUEUE_DEFAULT).min(QUEUE_MAX);
    let snap = snapshot(&actor, limit).await?;
    let now = ctx.now();
    let mut conversations = Vec::with_capacity(snap.conversations.len());
    for cid in &snap.conversations {
        if let Some(c) = ctx.store.get_conversation(cid).await? {
            conversations.push(c);
        }
    }
    Ok(Queue {
        depth: snap.depth,
        oldest_wait_seconds: snap
            .oldest_queued_at
            .map(|t| ((now - t).max(0)) / 1000)
            .unwrap_or(0),
        conversations,
    })
}

/// Takes the oldest waiting conversation off the team's queue.
async fn pop(team: &ActorRef<TeamMsg>) -> Result<Option<(String, Millis, Priority)>> {
    match team
        .call(|reply| TeamMsg::Pop { reply }, Some(CALL_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(p)) => Ok(p),
        _ => Err(Error::Unavailable.into()),
    }
}

/// Puts a popped conversation back at its place in the queue.
fn put_back(team: &ActorRef<TeamMsg>, conversation: String, at: Millis, priority: Priority) {
    let _ = team.cast(TeamMsg::Enqueue {
        conversation,
        at,
        priority,
        avoid: None,
    });
}

async fn snapshot(
    team: &ActorRef<TeamMsg>,
    limit: usize,
) -> Result<crate::actors::team::QueueSnapshot> {
    match team
        .call(
            |reply| TeamMsg::Snapshot { limit, reply },
            Some(CALL_TIMEOUT),
        )
        .await
    {
        Ok(CallResult::Success(q)) => Ok(q),
        _ => Err(Error::Unavailable.into()),
    }
}
