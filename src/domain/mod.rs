//! Pure data and state transitions: no I/O, no async, no clocks read here.
//!
//! Every rule of a conversation's life (who may claim, reply, release, transfer, resolve; how
//! statuses move; when the customer-service window is open) is a plain function on these types,
//! so the actors only sequence them and the rules are testable without a runtime.
//!
//! The domain depends on no adapter: the config, Meta's formats (`whatsapp`), storage and HTTP
//! all depend on it, never the reverse. What arrives from outside is translated into its types
//! ([`inbound`]) and what the config sets is stated in them ([`team`], [`agent::Role`]).

pub mod agent;
pub mod assignment;
pub mod conversation;
pub mod customer;
pub mod detect;
pub mod hours;
pub mod inbound;
pub mod message;
pub mod people;
pub mod policy;
pub mod queue;
pub mod report;
pub mod routing;
pub mod team;

pub use agent::{Caller, Presence, Role};
pub use conversation::{
    conversation_id, Access, Conversation, ConversationStatus, Priority, SlaKind, SlaState,
    Started, TransferTarget,
};
pub use customer::{Contact, CustomerIds, IdentityChange};
pub use inbound::{InboundMessage, InboundStatus};
pub use message::{Author, DeliveryStatus, Direction, Message, MessageError};
pub use team::{Assignment, Escalation, TeamSettings};

/// Milliseconds since the Unix epoch: the one time unit stored and compared in the core.
pub type Millis = i64;

/// The 24-hour customer-service window.
pub const WINDOW_MS: Millis = 24 * 60 * 60 * 1000;

/// A rule of the domain was broken; each variant has a stable API code (see `crate::error`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("conversation is assigned to {assignee}")]
    AlreadyAssigned { assignee: String },
    #[error("agent has reached max_concurrent")]
    CapacityReached,
    #[error("only the conversation's owner can do this")]
    NotOwner,
    #[error("the 24-hour customer-service window is closed")]
    WindowClosed,
    #[error("not found")]
    NotFound,
    /// Taken from a queue it had already left (claimed, resolved or moved meanwhile).
    #[error("the conversation is no longer waiting in its team's queue")]
    NotWaiting,
    #[error("{0}")]
    Invalid(String),
    /// An id that is taken (an agent or team created twice).
    #[error("{0}")]
    AlreadyExists(String),
    /// A template send naming a template with no `APPROVED` variant.
    #[error("{0}")]
    TemplateNotApproved(String),
    /// A `MARKETING` template to a customer who stopped marketing messages.
    #[error("the customer stopped marketing messages")]
    MarketingOptedOut,
    /// A template that would open one business-initiated conversation beyond the portfolio's
    /// messaging limit (`crate::messaging_limit`).
    #[error("messaging limit reached: {limit} business-initiated conversations in 24 h; a slot frees in {retry_after_secs} s")]
    MessagingLimitReached { limit: u32, retry_after_secs: u64 },
    /// `POST /api/v1/conversations` for a customer whose conversation on the number is open in
    /// a team the caller is not in (nothing more is said of it).
    #[error("the customer has an open conversation on this number in a team you are not in")]
    ConversationElsewhere,
    /// Handed back to the bot, but the conversation's team has no automation.
    #[error("automation is not on for this conversation's team")]
    AutomationOff,
    /// Handed back to the bot, but the conversation is resolved (it goes to the bot again
    /// when the customer writes).
    #[error("the conversation is resolved")]
    Resolved,
}
