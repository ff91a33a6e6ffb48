//! What arrives from the customer's side: messages, delivery statuses of the broker's own sends,
//! and everything else a notification carries, already translated out of the provider's format.
//!
//! The webhook adapter (`whatsapp::webhook`) produces these; ingestion and the conversation
//! actors consume them. `raw` fields keep the provider's original JSON of each item, so nothing
//! the broker does not read is lost; the domain never looks inside them.

use super::message::{Content, MediaInfo, Pricing};
use super::{CustomerIds, DeliveryStatus, IdentityChange, MessageError, Millis};

/// An inbound customer message.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    /// The business number it was sent to (`phone_number_id`).
    pub number: String,
    /// The sender as the API shows it: its phone when the webhook gave one, else its user id.
    pub customer: String,
    pub customer_name: Option<String>,
    /// Every id and the username the webhook gave for the sender (its contact is found by
    /// either id, and one naming both links them).
    pub ids: CustomerIds,
    /// For a `system` message that moves the sender's ids (`user_changed_number`,
    /// `user_changed_user_id`): the new ones. Such a message opens no conversation.
    pub identity_change: Option<IdentityChange>,
    pub wamid: String,
    /// The provider's send time (Meta's `timestamp`), in ms.
    pub sent_at: Millis,
    pub kind: String,
    /// A readable summary: the body of a text, a caption, a button's title, … (see
    /// `whatsapp::message_body`).
    pub text: Option<String>,
    /// What the message carries besides its text, typed.
    pub detail: InboundDetail,
    pub raw: String,
}

/// The typed parts of an inbound message, as far as its type has them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InboundDetail {
    /// An image, audio, video, document or sticker as Meta described it (not yet downloaded).
    pub media: Option<MediaInfo>,
    pub content: Option<Content>,
    /// The wamid of the message it answers (Meta's `context.id`): becomes `reply_to` when that
    /// message is one of its conversation's.
    pub quotes: Option<String>,
    /// A click-to-WhatsApp ad's `referral` object, as JSON text.
    pub referral: Option<String>,
    /// Set for every `reaction`: such a message is not stored as one, it changes its target.
    pub reaction: Option<InboundReaction>,
}

/// A customer's reaction to a message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InboundReaction {
    /// The wamid reacted to (`reaction.message_id`); None when Meta named none.
    pub target: Option<String>,
    /// None or empty: the customer removed their reaction.
    pub emoji: Option<String>,
}

/// A status callback for an outbound message.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundStatus {
    pub number: String,
    pub wamid: String,
    pub status: DeliveryStatus,
    pub error: Option<MessageError>,
    pub at: Millis,
    /// What Meta says the message costs (`pricing`), when this callback says it.
    pub pricing: Option<Pricing>,
    /// The status object's JSON: what the broker does not read of it (`pricing`,
    /// `conversation`, …) is kept with it (`store::schema::CF_STATUS_LOG`).
    pub raw: String,
}

/// A change kept verbatim: one that is not about messages or statuses (template updates, account
/// events, echoes, …), or one holding something the broker could not use (see
/// `whatsapp::webhook`). `raw` is the change's JSON (the entry's or body's, when those could not
/// be walked).
#[derive(Debug, Clone, PartialEq)]
pub struct OtherChange {
    pub field: String,
    pub raw: String,
}

/// Everything one webhook notification carries.
#[derive(Debug, Default)]
pub struct Notification {
    pub messages: Vec<InboundMessage>,
    pub statuses: Vec<InboundStatus>,
    /// Kept verbatim: changes the broker does not act on, and changes holding anything it could
    /// not turn into a message or status.
    pub other: Vec<OtherChange>,
    /// Messages and statuses that could not be used (no id, no sender, no business number,
    /// unknown status) — counted and logged. Not dropped: their change is in `other`.
    pub skipped: usize,
    /// Of `skipped`, the messages that named no customer at all (neither a phone nor a user id,
    /// in the message or the change's `contacts`): counted on their own
    /// (`switchboard_inbound_no_customer_total`), kept verbatim, never a conversation.
    pub no_customer: usize,
}
