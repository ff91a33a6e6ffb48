//! The one place errors become HTTP answers: `{"error": {"code", "message"}}`.
//!
//! Every code is a [`Code`] (the one list, in `crate::error`), and [`status`] is the one mapping
//! from code to HTTP status; nothing else in the transport picks a status for an error. Storage
//! and actor failures are logged with their details and answered with a generic message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::domain::DomainError;
use crate::error::{Code, Error};
use crate::log_limit::LogLimit;
use crate::service::ServiceError;

/// The HTTP status each code is answered with.
pub fn status(code: Code) -> StatusCode {
    match code {
        Code::InvalidRequest | Code::InvalidJson => StatusCode::BAD_REQUEST,
        Code::Unauthorized | Code::InvalidSignature => StatusCode::UNAUTHORIZED,
        Code::Forbidden | Code::NotOwner => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        Code::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        Code::AlreadyAssigned
        | Code::CapacityReached
        | Code::NotWaiting
        | Code::AlreadyExists
        | Code::ConversationElsewhere
        | Code::AutomationOff
        | Code::ConversationResolved => StatusCode::CONFLICT,
        Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Code::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
        Code::UriTooLong => StatusCode::URI_TOO_LONG,
        Code::WindowClosed | Code::TemplateNotApproved | Code::MarketingOptedOut => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Code::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        Code::RateLimited | Code::MessagingLimitReached => StatusCode::TOO_MANY_REQUESTS,
        Code::StorageError => StatusCode::INTERNAL_SERVER_ERROR,
        Code::Overloaded | Code::ShuttingDown | Code::Unavailable => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub assignee: Option<String>,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            assignee: None,
            retry_after: None,
        }
    }

    /// The status this error is answered with (see [`status`]).
    pub fn status(&self) -> StatusCode {
        status(self.code)
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, message)
    }

    pub fn unauthorized() -> Self {
        Self::new(Code::Unauthorized, "missing or unknown bearer token")
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(Code::Forbidden, message)
    }

    pub fn not_found() -> Self {
        Self::new(Code::NotFound, "not found")
    }

    /// A 503 with `Retry-After: 1`: a bound is reached, or what was asked for is not ready.
    pub fn overloaded(code: Code, message: &str) -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(code, message)
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let code = e.code();
        match e {
            Error::Domain(d) => {
                let assignee = match &d {
                    DomainError::AlreadyAssigned { assignee } => Some(assignee.clone()),
                    _ => None,
                };
                // When a slot of the messaging limit frees (the oldest opening leaves the 24 h).
                let retry_after = match &d {
                    DomainError::MessagingLimitReached {
                        retry_after_secs, ..
                    } => Some(u32::try_from(*retry_after_secs).unwrap_or(u32::MAX)),
                    _ => None,
                };
                ApiError {
                    assignee,
                    retry_after,
                    ..ApiError::new(code, d.to_string())
                }
            }
            Error::Store(s) => {
                // Every request fails alike while storage does: a few lines a second say so.
                static LOG: LogLimit = LogLimit::new(5);
                if let Some(held_back) = LOG.check() {
                    tracing::error!(error = %s, held_back, "storage failure");
                }
                ApiError::new(code, "storage failure; nothing was acknowledged")
            }
            Error::Unavailable => {
                ApiError::overloaded(code, "conversation temporarily unavailable; retry")
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Forbidden(message) => ApiError::forbidden(message),
            ServiceError::Core(e) => e.into(),
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
        let mut err = json!({ "code": self.code.as_str(), "message": self.message });
        if let Some(a) = &self.assignee {
            err["assignee"] = json!(a);
        }
        let mut resp = (self.status(), Json(json!({ "error": err }))).into_response();
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
        Code::MethodNotAllowed,
        "this route does not take that method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code has an error status, so none can be answered as a success; the strings'
    /// uniqueness and spelling are checked where they are declared (`crate::error`).
    #[test]
    fn every_code_maps_to_an_error_status() {
        for &c in Code::ALL {
            let s = status(c);
            assert!(
                s.is_client_error() || s.is_server_error(),
                "{c} maps to {s}"
            );
        }
    }

    /// The statuses clients have always had for these codes.
    #[test]
    fn statuses_are_the_contracts() {
        for (c, s) in [
            (Code::Unauthorized, 401),
            (Code::Forbidden, 403),
            (Code::NotOwner, 403),
            (Code::NotFound, 404),
            (Code::AlreadyAssigned, 409),
            (Code::WindowClosed, 422),
            (Code::TemplateNotApproved, 422),
            (Code::MarketingOptedOut, 422),
            (Code::MessagingLimitReached, 429),
            (Code::ConversationElsewhere, 409),
            (Code::PayloadTooLarge, 413),
            (Code::InvalidSignature, 401),
            (Code::InvalidJson, 400),
            (Code::RateLimited, 429),
            (Code::Overloaded, 503),
            (Code::ShuttingDown, 503),
            (Code::Unavailable, 503),
            (Code::StorageError, 500),
        ] {
            assert_eq!(status(c).as_u16(), s, "{c}");
        }
    }

    /// A use case's refusal keeps its code and says who may.
    #[test]
    fn service_errors_keep_their_code() {
        let e = ApiError::from(ServiceError::Forbidden("admins only"));
        assert_eq!((e.status().as_u16(), e.code), (403, Code::Forbidden));
        assert_eq!(e.message, "admins only");
        let e = ApiError::from(ServiceError::from(DomainError::NotFound));
        assert_eq!((e.status().as_u16(), e.code), (404, Code::NotFound));
        let e = ApiError::from(ServiceError::Core(Error::Unavailable));
        assert_eq!((e.status().as_u16(), e.retry_after), (503, Some(1)));
    }
}
