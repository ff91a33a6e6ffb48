//! What arrives from the customer's side: messages, delivery statuses of the broker's own sends,
//! and everything else a notification carries, already translated out of the provider's format.
//!
//! The webhook adapter (`whatsapp::webhook`) produces these; ingestion and the conversation
//! actors consume them. `raw` fields keep the provider's original JSON of each item, so nothing
//! the broker does not read is lost; the domain never looks inside them.

use super::message::{Content, MediaInfo, Pricing};
use super::{CustomerIds, DeliveryStatus, IdentityChange, MessageError, Millis};

/// How far ahead of the broker's clock an inbound message's Meta `timestamp` may be and still be
/// taken as given (clocks differ a little); a later one is dated when it arrived (`ingest`, and
/// `coexistence` for imported history), since it decides when the 24-hour window closes.
pub const MAX_FUTURE_SKEW_MS: Millis = 5 * 60 * 1000;

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

/// A message of the WhatsApp Business App on a coexistence number (the number is used in the
/// app and through the Cloud API at once): what the business sent from the app
/// (`smb_message_echoes`), or a message of the app's chat history (`history`), either side's.
/// None of them is the customer writing now: they start no routing, automation or SLA clock,
/// and the broker sends nothing for them.
#[derive(Debug, Clone, PartialEq)]
pub struct AppMessage {
    /// The business number (`phone_number_id`).
    pub number: String,
    /// The customer's phone: the echo's `to`, the history thread's `id`.
    pub customer: String,
    pub wamid: String,
    /// Meta's `timestamp` (ms): when it was written on the device.
    pub sent_at: Millis,
    /// Written by the business (shown as outbound, author `business_app`); else by the customer.
    pub from_business: bool,
    /// From the `history` webhook.
    pub imported: bool,
    pub kind: String,
    pub text: Option<String>,
    pub detail: InboundDetail,
    /// Meta's `history_context.status` of an imported message, when it is one the broker knows.
    pub status: Option<DeliveryStatus>,
    /// An edit or revoke of an earlier message, rather than a message of its own.
    pub edit: Option<AppEdit>,
    /// The item's JSON as Meta sent it.
    pub raw: String,
}

/// What an echo of type `edit` or `revoke` does to the message it names.
#[derive(Debug, Clone, PartialEq)]
pub enum AppEdit {
    /// The business edited message `original`: its text becomes `text`.
    Edit {
        original: String,
        text: Option<String>,
    },
    /// The business deleted message `original` for everyone.
    Revoke { original: String },
}

/// A contact of the business's WhatsApp Business App address book (`smb_app_state_sync`).
#[derive(Debug, Clone, PartialEq)]
pub struct AppContact {
    pub number: String,
    /// The contact's phone (`contact.phone_number`).
    pub phone: String,
    /// The name the business gave it (`full_name`, else `first_name`); None when it removed
    /// the contact.
    pub name: Option<String>,
}

/// What one coexistence change (`smb_message_echoes`, `history`, `smb_app_state_sync`) carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppChange {
    /// The business number it is about (`metadata.phone_number_id`; empty when Meta gave none).
    pub number: String,
    pub messages: Vec<AppMessage>,
    pub contacts: Vec<AppContact>,
}
