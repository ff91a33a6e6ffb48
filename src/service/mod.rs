//! Use cases of the agent API: what a caller may do and how it is done, for any transport.
//!
//! One file per group (conversations, teams, agents, routing, templates, people: the admin's agents, teams
//! and audit log, and the live roster requests authenticate against). Each function takes the
//! authenticated [`Caller`] and what the transport parsed, checks the caller's permissions, runs
//! the use case against the core (actors, store, policies) and returns domain values or a
//! [`ServiceError`]. Transports only authenticate, parse, call one function here and translate
//! the answer (`http` renders it as JSON and maps each error's [`Code`] to a status).
//!
//! Invariants: nothing here depends on a transport (no axum, no HTTP status); every check a
//! caller can fail is made in the order the API documents (not found before forbidden where a
//! route has both); calls into agent and team actors (ractor) are made only here, in one small
//! function per call, so transports never see an actor type.

pub mod agents;
pub mod conversations;
pub mod people;
pub mod reports;
pub mod routing;
pub mod teams;
pub mod templates;

use crate::domain::Caller;
use crate::error::{Code, Error};

/// Why a use case refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The caller's role or teams do not allow this; the message says who may.
    #[error("{0}")]
    Forbidden(&'static str),
    /// A domain rule, storage, or an actor that could not answer.
    #[error(transparent)]
    Core(#[from] Error),
}

impl ServiceError {
    /// The stable API code.
    pub fn code(&self) -> Code {
        match self {
            ServiceError::Forbidden(_) => Code::Forbidden,
            ServiceError::Core(e) => e.code(),
        }
    }
}

impl From<crate::domain::DomainError> for ServiceError {
    fn from(e: crate::domain::DomainError) -> Self {
        Error::from(e).into()
    }
}

impl From<crate::store::StoreError> for ServiceError {
    fn from(e: crate::store::StoreError) -> Self {
        Error::from(e).into()
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Permission checks by role, the same for every use case.
fn admins_only(caller: &Caller) -> Result<()> {
    if caller.role != crate::domain::Role::Admin {
        return Err(ServiceError::Forbidden("admins only"));
    }
    Ok(())
}

fn supervisors_and_admins_only(caller: &Caller) -> Result<()> {
    if caller.role == crate::domain::Role::Agent {
        return Err(ServiceError::Forbidden("supervisors and admins only"));
    }
    Ok(())
}

/// Only supervisors of `team` and admins.
fn managers_only(caller: &Caller, team: &str) -> Result<()> {
    if !caller.manages(team) {
        return Err(ServiceError::Forbidden(
            "supervisors of the team and admins only",
        ));
    }
    Ok(())
}
