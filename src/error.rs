//! The core's one error type, and the one list of error codes the broker answers with.
//!
//! [`Code`] names every error the API and the webhook return, each with a stable snake_case
//! string that is part of the API contract and never changes meaning; transports map each code to
//! their own status in one place (see `http::error`). [`Error`] is the core's error, one code per
//! variant. Internal details (storage messages, actor failures) are logged where they happen and
//! reach clients only as a generic code.

use crate::domain::DomainError;
use crate::store::StoreError;

/// Declares [`Code`] with its strings, and [`Code::ALL`] from the same list, so no code can be
/// added without a string or left out of `ALL`.
macro_rules! codes {
    ($($(#[$doc:meta])* $variant:ident => $s:literal,)*) => {
        /// An error code of the API and the webhook (`{"error": {"code": …}}`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$doc])* $variant,)*
        }

        impl Code {
            /// Every code, in declaration order.
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            /// The code as clients and metric labels see it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $s,)*
                }
            }
        }
    };
}

codes! {
    /// A request the API cannot take as it is (bad query, path, body or field).
    InvalidRequest => "invalid_request",
    /// A webhook body that is not a notification Meta sends.
    InvalidJson => "invalid_json",
    /// Missing or unknown bearer token.
    Unauthorized => "unauthorized",
    /// A webhook whose `X-Hub-Signature-256` is missing or wrong.
    InvalidSignature => "invalid_signature",
    /// The caller's role or teams do not allow it (or Meta's handshake failed).
    Forbidden => "forbidden",
    /// Only the conversation's owner may do this.
    NotOwner => "not_owner",
    NotFound => "not_found",
    MethodNotAllowed => "method_not_allowed",
    /// A request body arrived slower than `server.min_body_rate`.
    RequestTimeout => "request_timeout",
    AlreadyAssigned => "already_assigned",
    CapacityReached => "capacity_reached",
    /// Taken from a queue it had already left.
    NotWaiting => "not_waiting",
    /// Created with an id that is taken (an agent or team).
    AlreadyExists => "already_exists",
    /// A webhook body above 3 MiB, or media above Meta's limit for its type.
    PayloadTooLarge => "payload_too_large",
    /// Media of a type WhatsApp does not take.
    UnsupportedMediaType => "unsupported_media_type",
    /// A `Range` outside the media's bytes.
    RangeNotSatisfiable => "range_not_satisfiable",
    /// A request target longer than hyper reads.
    UriTooLong => "uri_too_long",
    /// The 24-hour customer-service window is closed.
    WindowClosed => "window_closed",
    /// A template send naming a template Meta has not approved (or no longer does).
    TemplateNotApproved => "template_not_approved",
    /// A `MARKETING` template to a customer who stopped marketing messages (`user_preferences`).
    MarketingOptedOut => "marketing_opted_out",
    /// A template that would open a business-initiated conversation beyond the portfolio's
    /// messaging limit (`whatsapp.messaging_limit` in a rolling 24 h).
    MessagingLimitReached => "messaging_limit_reached",
    /// Starting a conversation with a customer whose conversation is open in another team.
    ConversationElsewhere => "conversation_elsewhere",
    /// A hand-back to the bot for a team without automation.
    AutomationOff => "automation_off",
    /// A hand-back to the bot of a resolved conversation.
    ConversationResolved => "conversation_resolved",
    /// Request headers larger than hyper reads.
    HeadersTooLarge => "headers_too_large",
    /// An address that failed authentication too often lately.
    RateLimited => "rate_limited",
    /// Storage failed; nothing was acknowledged.
    StorageError => "storage_error",
    /// A bound on work in flight is reached; retry.
    Overloaded => "overloaded",
    /// The broker is stopping and takes no more webhooks.
    ShuttingDown => "shutting_down",
    /// What was asked for cannot take requests right now (an actor restarting, the broker
    /// starting); retry.
    Unavailable => "unavailable",
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A code is a metric label as it is (`"outcome" => code`), so labels and API codes share names.
impl From<Code> for metrics::SharedString {
    fn from(c: Code) -> Self {
        metrics::SharedString::const_str(c.as_str())
    }
}

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
    pub fn code(&self) -> Code {
        match self {
            Error::Domain(d) => match d {
                DomainError::AlreadyAssigned { .. } => Code::AlreadyAssigned,
                DomainError::CapacityReached => Code::CapacityReached,
                DomainError::NotOwner => Code::NotOwner,
                DomainError::WindowClosed => Code::WindowClosed,
                DomainError::NotFound => Code::NotFound,
                DomainError::NotWaiting => Code::NotWaiting,
                DomainError::Invalid(_) => Code::InvalidRequest,
                DomainError::AlreadyExists(_) => Code::AlreadyExists,
                DomainError::TemplateNotApproved(_) => Code::TemplateNotApproved,
                DomainError::MarketingOptedOut => Code::MarketingOptedOut,
                DomainError::MessagingLimitReached { .. } => Code::MessagingLimitReached,
                DomainError::ConversationElsewhere => Code::ConversationElsewhere,
                DomainError::AutomationOff => Code::AutomationOff,
                DomainError::Resolved => Code::ConversationResolved,
            },
            Error::Store(_) => Code::StorageError,
            Error::Unavailable => Code::Unavailable,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Code;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            let s = c.as_str();
            assert!(seen.insert(s), "{s} used twice");
            assert!(
                !s.is_empty()
                    && !s.starts_with('_')
                    && !s.ends_with('_')
                    && !s.contains("__")
                    && s.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{s} is not snake_case"
            );
        }
    }
}
