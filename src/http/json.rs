//! A JSON body extractor whose every rejection is the contract's `invalid_request` error.
//!
//! axum's own `Json` answers some bad bodies with plain-text 415/422; clients of this API get one
//! error shape for every bad input instead.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest agent API body.
pub const MAX_API_BODY: usize = 256 * 1024;

pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::invalid(format!("cannot read body: {e}")))?;
        if bytes.len() > MAX_API_BODY {
            return Err(ApiError::invalid("body too large"));
        }
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
    }
}
