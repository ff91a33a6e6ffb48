//! The core's one error type, with a stable snake_case code per variant.
//!
//! Transports map these codes to their own status (see `http::error`); the codes themselves are
//! part of the API contract and never change meaning. Internal details (storage messages, actor
//! failures) are logged where they happen and reach clients only as a generic code.

use crate::domain::DomainError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    /// The conversation's actor could not take the request (stopping, restarting, timed out).
    #[error("conversation temporarily unavailable")]
    Unavailable,
}

impl Error {
    /// The stable API code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Domain(d) => match d {
                DomainError::AlreadyAssigned { .. } => "already_assigned",
                DomainError::CapacityReached => "capacity_reached",
                DomainError::NotOwner => "not_owner",
                DomainError::WindowClosed => "window_closed",
                DomainError::NotFound => "not_found",
                DomainError::NotWaiting => "not_waiting",
                DomainError::Invalid(_) => "invalid_request",
            },
            Error::Store(_) => "storage_error",
            Error::Unavailable => "unavailable",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
