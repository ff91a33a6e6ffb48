//! Bearer-token authentication for the agent API.
//!
//! Tokens are looked up in the live roster (`service::people`: agents in storage, changed at run
//! time; a disabled agent's or a rotated-out token is unknown); each maps to one [`Caller`]. A
//! missing or unknown token is a 401 with the contract's error body, before any handler runs. Wrong tokens are counted per remote
//! address ([`super::throttle`]): an address that failed too often gets 429 `rate_limited`
//! for any token until its bucket refills.
//!
//! Routes behind admission control are authenticated there (`super::admit`), which leaves the
//! result in the request's extensions as [`Authenticated`]; [`Auth`] takes it from there, or
//! authenticates itself on the routes outside admission (the event stream).

use std::net::SocketAddr;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};

use super::error::ApiError;
use super::AppState;
use crate::domain::Caller;
use crate::error::Code;
use crate::service::people::Live;

/// The authenticated caller of an agent API request.
pub struct Auth(pub Caller);

/// A caller already authenticated by admission control, carried to the handler.
#[derive(Clone)]
pub struct Authenticated(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(Authenticated(caller)) = parts.extensions.remove::<Authenticated>() {
            return Ok(Auth(caller));
        }
        authenticate(state, &parts.headers, &parts.extensions).map(Auth)
    }
}

/// The caller of an event stream, with what the stream watches to follow the agent's changes
/// (its teams and role, being disabled, its token rotated).
pub struct Session {
    pub caller: Caller,
    pub live: tokio::sync::watch::Receiver<Live>,
    /// The token generation the stream opens with (see [`Live`]).
    pub generation: u64,
}

impl FromRequestParts<AppState> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate_with(state, &parts.headers, &parts.extensions, |t| {
            state.people.session(t)
        })
        .map(|(caller, live, generation)| Session {
            caller,
            live,
            generation,
        })
    }
}

/// The caller whose bearer token `headers` carry; 401 when there is none or it is unknown, 429
/// when the request's address has failed too often lately.
pub fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<Caller, ApiError> {
    authenticate_with(state, headers, extensions, |t| state.people.authenticate(t))
}

/// As [`authenticate`], answering what `lookup` finds for the token (the event stream also
/// takes what it watches to follow the agent's changes).
pub fn authenticate_with<T>(
    state: &AppState,
    headers: &HeaderMap,
    extensions: &Extensions,
    lookup: impl FnOnce(&str) -> Option<T>,
) -> Result<T, ApiError> {
    let token = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(ApiError::unauthorized)?;
    // Requests served by `super::server` carry their peer; in-process ones (`oneshot`) do not.
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    if let Some(wait) = peer.and_then(|p| state.auth_throttle.check(p)) {
        let mut e = ApiError::new(
            Code::RateLimited,
            "too many failed authentications from this address; retry later",
        );
        e.retry_after = Some((wait.as_secs_f64().ceil() as u32).max(1));
        return Err(e);
    }
    match lookup(token) {
        Some(found) => Ok(found),
        None => {
            if let Some(p) = peer {
                state.auth_throttle.failed(p);
            }
            Err(ApiError::unauthorized())
        }
    }
}
