//! Query-string and path extractors whose every rejection is the contract's `invalid_request`.
//!
//! axum's own `Query` and `Path` answer bad input (`limit=abc`, a repeated `status`, an id that
//! is not UTF-8 once decoded) with a `text/plain` 400; clients of this API get the one error
//! shape for every bad input instead (as [`super::json::ApiJson`] does for bodies). Handlers use
//! these, never axum's, so no route can answer a rejection in another shape.

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// The query string, deserialized; any rejection is 400 `invalid_request` naming the problem.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// The route's path parameters, percent-decoded; any rejection is 400 `invalid_request`.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}
