//! JSON shapes of the agent API (the contract's Conversation and Message).
//!
//! Domain types are never serialized to clients directly: these views fix the field names and
//! render times as RFC 3339, so storage can evolve without changing the API.

use chrono::{SecondsFormat, TimeZone, Utc};
use serde::Serialize;

use crate::domain::message::{Content, FailureReason, MediaInfo, Pricing, Reaction};
use crate::domain::{Conversation, Direction, Message, MessageError, Millis};

pub fn rfc3339(ms: Millis) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
}

/// One page of `GET /api/v1/conversations`, serialised straight from the views: building a
/// `serde_json::Value` first cost a map per conversation (a default page holds 10,000), which
/// was most of the list's CPU outside storage.
#[derive(Serialize)]
pub struct ListView {
    pub conversations: Vec<ConversationView>,
    pub next_after: Option<String>,
}

impl ListView {
    pub fn new(conversations: &[Conversation], next_after: Option<String>) -> Self {
        Self {
            conversations: conversations
                .iter()
                .map(|c| ConversationView::new(c, None))
                .collect(),
            next_after,
        }
    }
}

#[derive(Serialize)]
pub struct ConversationView {
    pub id: String,
    pub number: String,
    /// The phone when known, else the user id.
    pub customer: String,
    pub customer_name: Option<String>,
    /// Meta's business-scoped user id (BSUID); null while unknown.
    pub customer_user_id: Option<String>,
    /// The customer's phone (`wa_id`); null while Meta has not given one.
    pub customer_phone: Option<String>,
    pub customer_username: Option<String>,
    pub status: &'static str,
    pub team: String,
    pub assignee: Option<String>,
    pub window_expires_at: Option<String>,
    pub last_message_at: String,
    pub created_at: String,
    pub priority: &'static str,
    pub labels: Vec<String>,
    /// The routing rule that placed it (absent: the number's default team).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed_by: Option<String>,
    /// SLA clocks missed in the current cycle.
    pub sla_breaches: Vec<&'static str>,
    /// Since when the oldest customer message no human reply has answered yet has waited (null
    /// when nothing waits): the clock the SLAs count, which the console shows.
    pub waiting_since: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<MessageView>>,
}

impl ConversationView {
    pub fn new(c: &Conversation, messages: Option<&[Message]>) -> Self {
        Self {
            id: c.id.clone(),
            number: c.number.clone(),
            customer: c.customer.clone(),
            customer_name: c.customer_name.clone(),
            customer_user_id: c.contact.user_id.clone(),
            customer_phone: c.contact.phone.clone(),
            customer_username: c.contact.username.clone(),
            status: c.status.as_str(),
            team: c.team().to_string(),
            assignee: c.assignee.clone(),
            window_expires_at: c.window_expires_at().map(rfc3339),
            last_message_at: rfc3339(c.last_message_at),
            created_at: rfc3339(c.created_at),
            priority: c.priority().as_str(),
            labels: c.labels().to_vec(),
            routed_by: c.routed_by().map(str::to_string),
            sla_breaches: c.sla().breached.iter().map(|k| k.as_str()).collect(),
            waiting_since: c.sla().waiting_since.map(rfc3339),
            messages: messages.map(|ms| ms.iter().map(MessageView::new).collect()),
        }
    }
}

#[derive(Serialize)]
pub struct MessageView {
    pub id: String,
    pub direction: &'static str,
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
    pub wamid: Option<String>,
    pub status: Option<&'static str>,
    pub author: String,
    pub at: String,
    pub error: Option<MessageErrorView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The customer's original message JSON (unknown types and fields included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw: Option<Box<serde_json::value::RawValue>>,
    /// Our id of the message this one answers.
    pub reply_to: Option<String>,
    pub reactions: Vec<Reaction>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referral: Option<Box<serde_json::value::RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pricing: Option<PricingView>,
    /// The typed body of a message that is more than text or media (null otherwise).
    pub content: Option<ContentView>,
    /// Meta's `context.forwarded` (also true when `frequently_forwarded`).
    pub forwarded: bool,
    /// Meta's `context.frequently_forwarded`: forwarded many times.
    pub frequently_forwarded: bool,
    /// When the business edited it in the WhatsApp Business App (`text` is the edited text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    /// When the business deleted it for everyone in the WhatsApp Business App.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Imported from the WhatsApp Business App's chat history (`history` webhook).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub imported: bool,
}

type Json = Box<serde_json::value::RawValue>;

/// JSON text kept by the broker, shown as the JSON it is (null if it somehow is not).
fn json(text: &str) -> Option<Json> {
    serde_json::value::RawValue::from_string(text.to_string()).ok()
}

/// A message's `content`, tagged with its `type` (README "Message content").
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentView {
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
        url: Option<String>,
    },
    /// Meta's `contacts` array (shared contact cards).
    Contacts {
        contacts: Option<Json>,
    },
    ButtonReply {
        id: String,
        title: String,
    },
    ListReply {
        id: String,
        title: String,
        description: Option<String>,
    },
    /// A WhatsApp Flow's answer: `response_json` as Meta sent it (a string holding JSON).
    NfmReply {
        response_json: String,
        name: Option<String>,
        body: Option<String>,
    },
    Button {
        payload: Option<String>,
        text: String,
    },
    /// Meta's `order` object (`catalog_id`, `product_items`, `text`).
    Order {
        order: Option<Json>,
    },
    /// `system.type` as `kind` (`user_changed_number`, …).
    System {
        kind: String,
        body: Option<String>,
    },
    /// An agent's interactive message: Meta's `interactive` object.
    Interactive {
        interactive: Option<Json>,
    },
    Audio {
        voice: bool,
    },
    Sticker {
        animated: bool,
    },
    /// Meta's `errors` array, and `unsupported.type` as `kind` when Meta named it.
    Unsupported {
        kind: Option<String>,
        errors: Option<Json>,
    },
}

impl ContentView {
    fn new(c: &Content) -> Self {
        match c {
            Content::Location {
                latitude,
                longitude,
                name,
                address,
                url,
            } => Self::Location {
                latitude: *latitude,
                longitude: *longitude,
                name: name.clone(),
                address: address.clone(),
                url: url.clone(),
            },
            Content::Contacts { json: j } => Self::Contacts { contacts: json(j) },
            Content::ButtonReply { id, title } => Self::ButtonReply {
                id: id.clone(),
                title: title.clone(),
            },
            Content::ListReply {
                id,
                title,
                description,
            } => Self::ListReply {
                id: id.clone(),
                title: title.clone(),
                description: description.clone(),
            },
            Content::FlowReply {
                response_json,
                name,
                body,
            } => Self::NfmReply {
                response_json: response_json.clone(),
                name: name.clone(),
                body: body.clone(),
            },
            Content::Button { payload, text } => Self::Button {
                payload: payload.clone(),
                text: text.clone(),
            },
            Content::Order { json: j } => Self::Order { order: json(j) },
            Content::System { kind, body } => Self::System {
                kind: kind.clone(),
                body: body.clone(),
            },
            Content::Interactive { json: j } => Self::Interactive {
                interactive: json(j),
            },
            Content::Audio { voice } => Self::Audio { voice: *voice },
            Content::Sticker { animated } => Self::Sticker {
                animated: *animated,
            },
            Content::Unsupported { kind, errors } => Self::Unsupported {
                kind: kind.clone(),
                errors: errors.as_deref().and_then(json),
            },
        }
    }
}

/// A message's media as the contract shows it; `filename` and `caption` only when known.
#[derive(Serialize)]
pub struct MediaView {
    pub id: String,
    pub mime_type: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caption: Option<String>,
    pub downloaded: bool,
}

impl MediaView {
    fn new(m: &MediaInfo) -> Self {
        Self {
            id: m.id.clone(),
            mime_type: m.mime_type.clone(),
            sha256: m.sha256.clone(),
            size: m.size,
            filename: m.filename.clone(),
            caption: m.caption.clone(),
            downloaded: m.downloaded,
        }
    }
}

/// Meta's `pricing` of a message: `category`, `type`, `pricing_model` (and `billable`, when
/// Meta sent it).
#[derive(Serialize)]
pub struct PricingView {
    pub category: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub pricing_model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billable: Option<bool>,
}

impl PricingView {
    fn new(p: &Pricing) -> Self {
        Self {
            category: p.category.clone(),
            kind: p.kind.clone(),
            pricing_model: p.pricing_model.clone(),
            billable: p.billable,
        }
    }
}

impl MessageView {
    pub fn new(m: &Message) -> Self {
        // Kept in the customer's message as Meta sent it, read when shown.
        let (forwarded, frequently_forwarded) = match (&m.raw, m.direction) {
            (Some(raw), Direction::Inbound) => crate::whatsapp::message_body::forwarded(raw),
            _ => (false, false),
        };
        Self {
            id: m.id(),
            direction: m.direction.as_str(),
            kind: m.kind.clone(),
            text: m.text.clone(),
            wamid: m.wamid.clone(),
            status: m.status.map(|s| s.as_str()),
            author: m.author.to_string(),
            at: rfc3339(m.at),
            error: m.error.as_ref().map(MessageErrorView::new),
            idempotency_key: m.idempotency_key.clone(),
            raw: m
                .raw
                .as_ref()
                .and_then(|r| serde_json::value::RawValue::from_string(r.clone()).ok()),
            reply_to: m.reply_to.clone(),
            reactions: m.reactions.clone(),
            referral: m
                .referral
                .as_ref()
                .and_then(|r| serde_json::value::RawValue::from_string(r.clone()).ok()),
            media: m.media.as_ref().map(MediaView::new),
            pricing: m.pricing.as_ref().map(PricingView::new),
            content: m.content.as_ref().map(ContentView::new),
            forwarded,
            frequently_forwarded,
            edited_at: m.lifecycle.edited_at.map(rfc3339),
            revoked_at: m.lifecycle.revoked_at.map(rfc3339),
            imported: m.lifecycle.imported,
        }
    }
}

/// Why a message failed: Meta's code and title and, for the codes whose meaning is known
/// ([`FailureReason`]: 131047 `window_closed`, 131026 `undeliverable`, 131049 `marketing_limit`,
/// 131050 `marketing_opted_out`, 130472 `experiment`, and the template codes 132000, 132001,
/// 132012, 132015 and 132016: see `FailureReason::as_str`), a stable `reason` and a `detail` sentence
/// an agent can read, so clients need not know Meta's codes. When Meta gave no title, the
/// detail stands in for it.
#[derive(Serialize)]
pub struct MessageErrorView {
    pub code: i64,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
}

impl MessageErrorView {
    fn new(e: &MessageError) -> Self {
        let reason = e.reason();
        let detail = reason.map(FailureReason::describe);
        let title = match detail {
            Some(d) if e.title.trim().is_empty() => d.to_string(),
            _ => e.title.clone(),
        };
        Self {
            code: e.code,
            title,
            reason: reason.map(FailureReason::as_str),
            detail,
        }
    }
}
