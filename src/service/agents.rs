//! An agent's own presence and load.
//!
//! The agent actor is the one place presence changes (it hands conversations back on going
//! offline and tells the teams); these are its two calls, made here so no transport sees it.

use ractor::rpc::CallResult;

use super::Result;
use crate::actors::{AgentMsg, Ctx, CALL_TIMEOUT};
use crate::domain::{Caller, DomainError, Presence};
use crate::error::Error;

pub use crate::actors::agent::AgentSnapshot;

/// Sets the caller's presence; answers the presence now in force.
pub async fn set_presence(ctx: &Ctx, caller: &Caller, presence: Presence) -> Result<Presence> {
    let agent = ctx.agent(&caller.id).ok_or(DomainError::NotFound)?;
    match agent
        .call(
            |reply| AgentMsg::SetPresence { presence, reply },
            Some(CALL_TIMEOUT),
        )
        .await
    {
        Ok(CallResult::Success(p)) => Ok(p),
        _ => Err(Error::Unavailable.into()),
    }
}

/// The caller's presence and load.
pub async fn me(ctx: &Ctx, caller: &Caller) -> Result<AgentSnapshot> {
    let agent = ctx.agent(&caller.id).ok_or(DomainError::NotFound)?;
    match agent
        .call(|reply| AgentMsg::Get { reply }, Some(CALL_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(a)) => Ok(a),
        _ => Err(Error::Unavailable.into()),
    }
}
