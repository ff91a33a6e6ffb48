//! Bearer-token authentication for the agent API.
//!
//! Tokens come from the config; each maps to one [`Caller`]. A missing or unknown token is a 401
//! with the contract's error body, before any handler runs.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::error::ApiError;
use super::AppState;
use crate::domain::Caller;

/// The authenticated caller of an agent API request.
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(ApiError::unauthorized)?;
        state
            .tokens
            .get(token)
            .cloned()
            .map(Auth)
            .ok_or_else(ApiError::unauthorized)
    }
}
