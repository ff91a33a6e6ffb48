//! JSON shapes of the agent API (the contract's Conversation and Message).
//!
//! Domain types are never serialized to clients directly: these views fix the field names and
//! render times as RFC 3339, so storage can evolve without changing the API.

use chrono::{SecondsFormat, TimeZone, Utc};
use serde::Serialize;

use crate::domain::message::{MediaInfo, Pricing, Reaction};
use crate::domain::{Conversation, Message, MessageError, Millis};

pub fn rfc3339(ms: Millis) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default()
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
        }
    }
}

/// Why a message failed: Meta's code and title, and `reason: "window_closed"` when Meta refused it
/// because the 24-hour window had closed (131047), so clients need not know Meta's codes.
#[derive(Serialize)]
pub struct MessageErrorView {
    pub code: i64,
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl MessageErrorView {
    fn new(e: &MessageError) -> Self {
        Self {
            code: e.code,
            title: e.title.clone(),
            reason: e.is_window_closed().then_some("window_closed"),
        }
    }
}
