//! The one place errors become HTTP answers: `{"error": {"code", "message"}}`.
//!
//! Codes are stable (see `crate::error::Error::code`); storage and actor failures are logged with
//! their details and answered with a generic message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::domain::DomainError;
use crate::error::Error;
use crate::log_limit::LogLimit;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub assignee: Option<String>,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            assignee: None,
            retry_after: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown bearer token",
        )
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "not found")
    }

    pub fn overloaded(code: &'static str, message: &str) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = e.code();
        match e {
            Error::Domain(d) => {
                let status = match &d {
                    DomainError::AlreadyAssigned { .. }
                    | DomainError::CapacityReached
                    | DomainError::NotWaiting => StatusCode::CONFLICT,
                    DomainError::NotOwner => StatusCode::FORBIDDEN,
                    DomainError::WindowClosed => StatusCode::UNPROCESSABLE_ENTITY,
                    DomainError::NotFound => StatusCode::NOT_FOUND,
                    DomainError::Invalid(_) => StatusCode::BAD_REQUEST,
                };
                let assignee = match &d {
                    DomainError::AlreadyAssigned { assignee } => Some(assignee.clone()),
                    _ => None,
                };
                ApiError {
                    assignee,
                    ..ApiError::new(status, code, d.to_string())
                }
            }
            Error::Store(s) => {
                // Every request fails alike while storage does: a few lines a second say so.
                static LOG: LogLimit = LogLimit::new(5);
                if let Some(held_back) = LOG.check() {
                    tracing::error!(error = %s, held_back, "storage failure");
                }
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    code,
                    "storage failure; nothing was acknowledged",
                )
            }
            Error::Unavailable => {
                ApiError::overloaded(code, "conversation temporarily unavailable; retry")
            }
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        Error::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!(crate::metrics::API_REQUESTS, "outcome" => self.code).increment(1);
        let mut err = json!({ "code": self.code, "message": self.message });
        if let Some(a) = &self.assignee {
            err["assignee"] = json!(a);
        }
        let mut resp = (self.status, Json(json!({ "error": err }))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Answers a request that no route matches with the contract's 404 (axum's own has no body).
pub async fn no_route() -> ApiError {
    ApiError::not_found()
}

/// Answers a route called with a method it does not take (axum still adds the `Allow` header).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    )
}
