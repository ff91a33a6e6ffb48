//! Messages of a conversation and the forward-only delivery status of outbound ones.
//!
//! Invariant: an outbound message's status only moves forward (`pending < accepted < sent <
//! delivered < read`); `failed` is taken unless the message was already delivered or read, and
//! nothing moves a failed message again. Late or redelivered status callbacks are therefore
//! harmless.
//!
//! A message's [`Author`] is typed: the customer, an agent, the broker itself or its bot. Storage
//! keeps it as one string (the customer's or agent's id, [`Author::SYSTEM`] or [`Author::BOT`]),
//! exactly as before the type existed; which one a string is follows from the message's
//! direction, and the config refuses an agent id equal to either reserved one, so the reading is
//! unambiguous.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Millis;

/// The error code of a send refused because the customer-service window had closed (Meta's
/// 131047, "re-engagement message"). A failure is stored with the provider's code, so its meaning
/// is read from the code wherever a failure is counted or shown.
pub const WINDOW_CLOSED_CODE: i64 = 131047;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
    Note,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
            Self::Note => "note",
        }
    }
}

/// Where a message stands. Inbound messages are `received`; outbound ones start `pending` (durable,
/// not yet accepted by the Graph API).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    Received,
    Pending,
    Accepted,
    Sent,
    Delivered,
    Read,
    Failed,
}

impl DeliveryStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "accepted" => Self::Accepted,
            "sent" => Self::Sent,
            "delivered" => Self::Delivered,
            "read" => Self::Read,
            "failed" => Self::Failed,
            "pending" => Self::Pending,
            "received" => Self::Received,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Sent => "sent",
            Self::Delivered => "delivered",
            Self::Read => "read",
            Self::Failed => "failed",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Self::Received | Self::Pending => 0,
            Self::Accepted => 1,
            Self::Sent => 2,
            Self::Delivered => 3,
            Self::Read => 4,
            Self::Failed => 5,
        }
    }

    /// Whether moving from `self` to `next` is progress.
    pub fn can_become(self, next: DeliveryStatus) -> bool {
        match (self, next) {
            (Self::Failed, _) => false,
            (Self::Delivered | Self::Read, Self::Failed) => false,
            (_, Self::Failed) => true,
            (cur, next) => next.rank() > cur.rank(),
        }
    }
}

/// Meta's error code and title for a failed message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageError {
    pub code: i64,
    pub title: String,
}

impl MessageError {
    /// Whether the send was refused because the customer-service window had closed.
    pub fn is_window_closed(&self) -> bool {
        self.code == WINDOW_CLOSED_CODE
    }

    /// What the failure means in words clients can rely on, when Meta's code is one whose
    /// meaning is known (None: read Meta's `code` and `title`).
    pub fn reason(&self) -> Option<FailureReason> {
        FailureReason::of(self.code)
    }
}

/// Stable names for Meta error codes whose meaning a person needs, shown as the API's
/// `error.reason` beside Meta's `code` and `title`. Each but `WindowClosed` is *final*: no retry
/// can fix it, so the outbox fails the message at the first answer (`WindowClosed` is final too,
/// and was already).
///
/// The string of each variant is part of the API and never changes meaning; new codes only add
/// variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureReason {
    /// 131047: more than 24 hours since the customer's last message; only a template may go.
    WindowClosed,
    /// 131026: WhatsApp could not deliver it (no WhatsApp account, an old app, the business
    /// blocked, terms not accepted).
    Undeliverable,
    /// 131049: Meta's cap on marketing messages a user receives was reached.
    MarketingLimit,
    /// 131050: the user stopped marketing messages from this business.
    MarketingOptedOut,
    /// 130472: the user is part of a Meta experiment that withholds marketing messages.
    Experiment,
    // Variants are only ever appended.
    /// 132000: the parameters do not match the template's placeholders.
    TemplateParameterCount,
    /// 132001: no template by that name in that language.
    TemplateMissing,
    /// 132012: a parameter's format does not match the template's.
    TemplateParameterFormat,
    /// 132015: Meta paused the template for its low quality.
    TemplatePaused,
    /// 132016: Meta disabled the template for good.
    TemplateDisabled,
}

impl FailureReason {
    pub const ALL: [FailureReason; 10] = [
        Self::WindowClosed,
        Self::Undeliverable,
        Self::MarketingLimit,
        Self::MarketingOptedOut,
        Self::Experiment,
        Self::TemplateParameterCount,
        Self::TemplateMissing,
        Self::TemplateParameterFormat,
        Self::TemplatePaused,
        Self::TemplateDisabled,
    ];

    /// The reason of Meta's error `code`, if it is one of the known ones.
    pub fn of(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.meta_code() == code)
    }

    /// Whether Meta's error `code` is one no retry fixes, so a send fails at the first answer.
    pub fn is_final(code: i64) -> bool {
        Self::of(code).is_some()
    }

    pub fn meta_code(self) -> i64 {
        match self {
            Self::WindowClosed => WINDOW_CLOSED_CODE,
            Self::Undeliverable => 131026,
            Self::MarketingLimit => 131049,
            Self::MarketingOptedOut => 131050,
            Self::Experiment => 130472,
            Self::TemplateParameterCount => 132000,
            Self::TemplateMissing => 132001,
            Self::TemplateParameterFormat => 132012,
            Self::TemplatePaused => 132015,
            Self::TemplateDisabled => 132016,
        }
    }

    /// The stable `reason` string of the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WindowClosed => "window_closed",
            Self::Undeliverable => "undeliverable",
            Self::MarketingLimit => "marketing_limit",
            Self::MarketingOptedOut => "marketing_opted_out",
            Self::Experiment => "experiment",
            Self::TemplateParameterCount => "template_parameter_count",
            Self::TemplateMissing => "template_missing",
            Self::TemplateParameterFormat => "template_parameter_format",
            Self::TemplatePaused => "template_paused",
            Self::TemplateDisabled => "template_disabled",
        }
    }

    /// One sentence an agent can act on (the API's `error.detail`).
    pub fn describe(self) -> &'static str {
        match self {
            Self::WindowClosed => {
                "The customer last wrote more than 24 hours ago; only an approved template can reach them now."
            }
            Self::Undeliverable => {
                "WhatsApp could not deliver this message: the number may have no WhatsApp account, use an outdated app, or have blocked the business."
            }
            Self::MarketingLimit => {
                "WhatsApp limits how many marketing messages a person receives, and this customer has reached that limit for now."
            }
            Self::MarketingOptedOut => {
                "The customer has stopped marketing messages from this business."
            }
            Self::Experiment => {
                "WhatsApp withheld this marketing message because the customer is part of a Meta experiment."
            }
            Self::TemplateParameterCount => {
                "The template's parameters did not match what Meta has for it; the template list is being refreshed."
            }
            Self::TemplateMissing => {
                "Meta has no template by this name in this language; the template list is being refreshed."
            }
            Self::TemplateParameterFormat => {
                "A parameter's format did not match the template's; the template list is being refreshed."
            }
            Self::TemplatePaused => {
                "Meta paused this template for its low quality; it cannot be sent until Meta reinstates it."
            }
            Self::TemplateDisabled => {
                "Meta disabled this template; it can no longer be sent."
            }
        }
    }
}

/// Who reacted to a message: `"customer"` or an agent's id (as shown in the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reaction {
    pub by: String,
    pub emoji: String,
}

impl Reaction {
    /// How a customer's reaction is attributed (`by`).
    pub const CUSTOMER: &'static str = "customer";
}

/// Sets `by`'s reaction among `reactions`: one per reactor, a new emoji replacing theirs, an
/// empty one (or none) removing it. Returns whether anything changed (a redelivered or repeated
/// reaction changes nothing).
pub fn set_reaction(reactions: &mut Vec<Reaction>, by: &str, emoji: Option<&str>) -> bool {
    let emoji = emoji.filter(|e| !e.is_empty());
    let at = reactions.iter().position(|r| r.by == by);
    match (at, emoji) {
        (Some(i), Some(e)) if reactions[i].emoji == e => false,
        (Some(i), Some(e)) => {
            reactions[i].emoji = e.to_string();
            true
        }
        (Some(i), None) => {
            reactions.remove(i);
            true
        }
        (None, Some(e)) => {
            reactions.push(Reaction {
                by: by.to_string(),
                emoji: e.to_string(),
            });
            true
        }
        (None, None) => false,
    }
}

/// How long Meta keeps a media id (7 days): inbound fetches are retried until then.
pub const MEDIA_ID_LIFETIME_MS: Millis = 7 * 24 * 60 * 60 * 1000;

/// A message's media: an inbound attachment as Meta described it, or an agent's upload.
///
/// `id` is what `GET /api/v1/media/{id}` serves; `downloaded` turns true once the bytes are kept
/// by the broker (inbound: fetched from Meta and checked against `sha256`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInfo {
    pub id: String,
    pub mime_type: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
    pub filename: Option<String>,
    pub caption: Option<String>,
    pub downloaded: bool,
}

/// What Meta says a message costs, from its status callbacks' `pricing`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pricing {
    pub category: String,
    /// Meta's `type` (`regular`, `free_customer_service`, `free_entry_point`, …).
    pub kind: Option<String>,
    pub pricing_model: Option<String>,
    pub billable: Option<bool>,
}

impl Pricing {
    /// Whether Meta charges for the message: not when it says `billable: false`, nor for a
    /// free `type` (`free_customer_service`, `free_entry_point`); `billable` is being retired
    /// in favour of `type`, so either one saying free is enough.
    pub fn is_billable(&self) -> bool {
        self.billable != Some(false) && !self.kind.as_deref().is_some_and(|k| k.starts_with("free"))
    }
}

/// The typed body of a message that is neither plain text nor only media. JSON-valued parts that
/// the broker passes through without reading are kept as JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Content {
    Location {
        latitude: f64,
        longitude: f64,
        name: Option<String>,
        address: Option<String>,
        url: Option<String>,
    },
    /// Shared contact cards: Meta's `contacts` array, as JSON text.
    Contacts { json: String },
    /// `interactive.button_reply`.
    ButtonReply { id: String, title: String },
    /// `interactive.list_reply`.
    ListReply {
        id: String,
        title: String,
        description: Option<String>,
    },
    /// `interactive.nfm_reply`: a WhatsApp Flow's answer (`response_json` as Meta sent it).
    FlowReply {
        response_json: String,
        name: Option<String>,
        body: Option<String>,
    },
    /// A quick-reply button of a template (`button`).
    Button {
        payload: Option<String>,
        text: String,
    },
    /// A cart (`order`), as JSON text.
    Order { json: String },
    /// A `system` message (`user_changed_number`, …).
    System { kind: String, body: Option<String> },
    /// An agent's interactive message (buttons or a list), Meta's `interactive` object as JSON text.
    Interactive { json: String },
    // Variants are only ever appended: bincode stores the variant index.
    /// An `audio` message's kind: a voice note recorded in the chat (`voice`) or a shared file.
    Audio { voice: bool },
    /// A `sticker`'s kind: `animated` or still.
    Sticker { animated: bool },
    /// A message type WhatsApp does not deliver to businesses (`unsupported`): Meta's `errors`
    /// array as JSON text, and `unsupported.type` when Meta names what it was (`edit`, `poll`,
    /// …).
    Unsupported {
        kind: Option<String>,
        errors: Option<String>,
    },
}

/// What an agent sends to the customer, as the API checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text, quoting our message `reply_to` when given (sent with its wamid as Meta's
    /// `context.message_id`).
    Text {
        body: String,
        reply_to: Option<String>,
    },
    /// Buttons or a list: Meta's `interactive` object as JSON text, and the readable text the
    /// message shows (its body text).
    Interactive { json: String, summary: String },
    /// An approved template (allowed outside the 24-hour window): its name, the language
    /// variant chosen, Meta's send `components` as JSON text, and its body as filled in.
    Template {
        name: String,
        language: String,
        /// Meta's category: a `MARKETING` one is refused to a customer who stopped marketing.
        category: String,
        components_json: String,
        summary: String,
    },
}

/// The `kind` of a template message an agent sent.
pub const TEMPLATE_KIND: &str = "template";

/// The `kind` of an agent's reaction message: kept as an outbound message so its delivery (and
/// any failure) is visible; `reply_to` names the message it reacts to, `text` is the emoji
/// (empty when the reaction was removed).
pub const REACTION_KIND: &str = "reaction";

/// The `kind` of an interactive message (buttons or a list) an agent sent.
pub const INTERACTIVE_KIND: &str = "interactive";

/// Who wrote a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// The customer (inbound messages), by their WhatsApp id.
    Customer(String),
    /// An agent (replies and notes), by its configured id.
    Agent(String),
    /// The broker itself: after-hours replies, notes on automatic reassignments.
    System,
    /// The automation bot (`[automation]`): its answers and its hand-over notes.
    Bot,
    /// The business itself, writing from the WhatsApp Business App on a coexistence number
    /// (`smb_message_echoes`, and its side of imported `history`): never sent by the broker.
    BusinessApp,
}

impl Author {
    /// How [`Author::System`] is written, in storage and in the API; no agent may have this id.
    pub const SYSTEM: &'static str = "system";
    /// How [`Author::Bot`] is written; no agent may have this id either.
    pub const BOT: &'static str = "bot";
    /// How [`Author::BusinessApp`] is written; reserved like the others.
    pub const BUSINESS_APP: &'static str = "business_app";

    /// Whether an agent id would be mistaken for the broker's own authorship.
    pub fn is_reserved(agent_id: &str) -> bool {
        agent_id == Self::SYSTEM || agent_id == Self::BOT || agent_id == Self::BUSINESS_APP
    }

    /// The author as stored and shown: the customer's or agent's id, or `"system"`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Customer(id) | Self::Agent(id) => id,
            Self::System => Self::SYSTEM,
            Self::Bot => Self::BOT,
            Self::BusinessApp => Self::BUSINESS_APP,
        }
    }

    /// Whether this is the agent `id`.
    pub fn is_agent(&self, id: &str) -> bool {
        matches!(self, Self::Agent(a) if a == id)
    }

    /// Reads a stored author string back: inbound messages are the customer's; of the others,
    /// [`Self::SYSTEM`] is the broker's and anything else an agent's.
    fn read(direction: Direction, stored: String) -> Self {
        match direction {
            Direction::Inbound => Self::Customer(stored),
            _ if stored == Self::SYSTEM => Self::System,
            _ if stored == Self::BOT => Self::Bot,
            _ if stored == Self::BUSINESS_APP => Self::BusinessApp,
            _ => Self::Agent(stored),
        }
    }
}

impl std::fmt::Display for Author {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message of a conversation. Stored as-is (versioned bincode, through `StoredMessage`);
/// `raw` keeps the customer's original JSON so unknown types and fields are never lost.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub conversation_id: String,
    pub seq: u64,
    pub direction: Direction,
    pub kind: String,
    pub text: Option<String>,
    pub wamid: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub author: Author,
    pub at: Millis,
    pub error: Option<MessageError>,
    pub idempotency_key: Option<String>,
    pub raw: Option<String>,
    /// Our id of the message this one answers (Meta's `context.id` inbound, `context.message_id`
    /// outbound).
    pub reply_to: Option<String>,
    /// Reactions to this message, one per reactor (a later reaction replaces theirs, an empty
    /// emoji removes it).
    pub reactions: Vec<Reaction>,
    /// A click-to-WhatsApp ad's `referral` object, as JSON text.
    pub referral: Option<String>,
    pub media: Option<MediaInfo>,
    pub pricing: Option<Pricing>,
    pub content: Option<Content>,
    /// What happened to it after it was written, and where it came from (coexistence).
    pub lifecycle: Lifecycle,
}

/// A message's life after it was written, for messages the business wrote in the WhatsApp
/// Business App (edited, revoked), and whether it was imported from that app's chat history.
/// All default for everything else.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lifecycle {
    /// Imported from the WhatsApp Business App's chat history (`history` webhook): shown in
    /// time order before the conversation's live messages, and it started nothing (no
    /// routing, automation or SLA clock).
    pub imported: bool,
    /// When the business last edited it in the app (its `text` is the edited one).
    pub edited_at: Option<Millis>,
    /// When the business deleted it for everyone in the app (`revoke`): its text is kept for
    /// the record, shown as revoked.
    pub revoked_at: Option<Millis>,
}

impl Lifecycle {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// [`Message`]'s stored layout, field by field, the author as its string (the customer's or
/// agent's id, or [`Author::SYSTEM`]). Borrowed when writing (no copy of the text or raw JSON);
/// owned when reading. Version 3 of the record (see `store::legacy`): version 1 ended at `raw`,
/// version 2 at `content`.
#[derive(Serialize, Deserialize)]
struct StoredMessage<'a> {
    conversation_id: Cow<'a, str>,
    seq: u64,
    direction: Direction,
    kind: Cow<'a, str>,
    text: Option<Cow<'a, str>>,
    wamid: Option<Cow<'a, str>>,
    status: Option<DeliveryStatus>,
    author: Cow<'a, str>,
    at: Millis,
    error: Option<Cow<'a, MessageError>>,
    idempotency_key: Option<Cow<'a, str>>,
    raw: Option<Cow<'a, str>>,
    reply_to: Option<Cow<'a, str>>,
    reactions: Cow<'a, [Reaction]>,
    referral: Option<Cow<'a, str>>,
    media: Option<Cow<'a, MediaInfo>>,
    pricing: Option<Cow<'a, Pricing>>,
    content: Option<Cow<'a, Content>>,
    lifecycle: Cow<'a, Lifecycle>,
}

impl Serialize for Message {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        StoredMessage {
            conversation_id: Cow::Borrowed(&self.conversation_id),
            seq: self.seq,
            direction: self.direction,
            kind: Cow::Borrowed(&self.kind),
            text: self.text.as_deref().map(Cow::Borrowed),
            wamid: self.wamid.as_deref().map(Cow::Borrowed),
            status: self.status,
            author: Cow::Borrowed(self.author.as_str()),
            at: self.at,
            error: self.error.as_ref().map(Cow::Borrowed),
            idempotency_key: self.idempotency_key.as_deref().map(Cow::Borrowed),
            raw: self.raw.as_deref().map(Cow::Borrowed),
            reply_to: self.reply_to.as_deref().map(Cow::Borrowed),
            reactions: Cow::Borrowed(&self.reactions),
            referral: self.referral.as_deref().map(Cow::Borrowed),
            media: self.media.as_ref().map(Cow::Borrowed),
            pricing: self.pricing.as_ref().map(Cow::Borrowed),
            content: self.content.as_ref().map(Cow::Borrowed),
            lifecycle: Cow::Borrowed(&self.lifecycle),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let m = StoredMessage::deserialize(deserializer)?;
        Ok(Message {
            author: Author::read(m.direction, m.author.into_owned()),
            conversation_id: m.conversation_id.into_owned(),
            seq: m.seq,
            direction: m.direction,
            kind: m.kind.into_owned(),
            text: m.text.map(Cow::into_owned),
            wamid: m.wamid.map(Cow::into_owned),
            status: m.status,
            at: m.at,
            error: m.error.map(Cow::into_owned),
            idempotency_key: m.idempotency_key.map(Cow::into_owned),
            raw: m.raw.map(Cow::into_owned),
            reply_to: m.reply_to.map(Cow::into_owned),
            reactions: m.reactions.into_owned(),
            referral: m.referral.map(Cow::into_owned),
            media: m.media.map(Cow::into_owned),
            pricing: m.pricing.map(Cow::into_owned),
            content: m.content.map(Cow::into_owned),
            lifecycle: m.lifecycle.into_owned(),
        })
    }
}

/// [`Message`] as version 2 of the record wrote it: everything up to `content`, before
/// [`Lifecycle`]. Read by `store::legacy`.
#[derive(Deserialize)]
pub struct MessageV2 {
    conversation_id: String,
    seq: u64,
    direction: Direction,
    kind: String,
    text: Option<String>,
    wamid: Option<String>,
    status: Option<DeliveryStatus>,
    author: String,
    at: Millis,
    error: Option<MessageError>,
    idempotency_key: Option<String>,
    raw: Option<String>,
    reply_to: Option<String>,
    reactions: Vec<Reaction>,
    referral: Option<String>,
    media: Option<MediaInfo>,
    pricing: Option<Pricing>,
    content: Option<Content>,
}

impl From<MessageV2> for Message {
    fn from(m: MessageV2) -> Self {
        Message {
            author: Author::read(m.direction, m.author),
            conversation_id: m.conversation_id,
            seq: m.seq,
            direction: m.direction,
            kind: m.kind,
            text: m.text,
            wamid: m.wamid,
            status: m.status,
            at: m.at,
            error: m.error,
            idempotency_key: m.idempotency_key,
            raw: m.raw,
            reply_to: m.reply_to,
            reactions: m.reactions,
            referral: m.referral,
            media: m.media,
            pricing: m.pricing,
            content: m.content,
            lifecycle: Lifecycle::default(),
        }
    }
}

/// [`Message`] as version 1 of the record wrote it: everything up to `raw`, before replies,
/// reactions, referrals, media, pricing and typed content. Read by `store::legacy`.
#[derive(Deserialize)]
pub struct MessageV1 {
    conversation_id: String,
    seq: u64,
    direction: Direction,
    kind: String,
    text: Option<String>,
    wamid: Option<String>,
    status: Option<DeliveryStatus>,
    author: String,
    at: Millis,
    error: Option<MessageError>,
    idempotency_key: Option<String>,
    raw: Option<String>,
}

/// Version 1 is read as version 2 with the fields it did not have left empty, so each
/// record version upgrades one step at a time.
impl From<MessageV1> for MessageV2 {
    fn from(m: MessageV1) -> Self {
        MessageV2 {
            conversation_id: m.conversation_id,
            seq: m.seq,
            direction: m.direction,
            kind: m.kind,
            text: m.text,
            wamid: m.wamid,
            status: m.status,
            author: m.author,
            at: m.at,
            error: m.error,
            idempotency_key: m.idempotency_key,
            raw: m.raw,
            reply_to: None,
            reactions: Vec::new(),
            referral: None,
            media: None,
            pricing: None,
            content: None,
        }
    }
}

impl From<MessageV1> for Message {
    fn from(m: MessageV1) -> Self {
        MessageV2::from(m).into()
    }
}

impl Message {
    /// The reaction of the business (any agent's: Meta knows one reaction per business) to this
    /// message, if any.
    pub fn business_reaction(&self) -> Option<&Reaction> {
        self.reactions.iter().find(|r| r.by != Reaction::CUSTOMER)
    }

    /// Sets the business's reaction to `emoji` by agent `by` (an empty emoji removes it); at
    /// Meta a business has one reaction per message, so it replaces any agent's. Returns false,
    /// changing nothing, when the message already shows exactly that.
    pub fn set_business_reaction(&mut self, by: &str, emoji: &str) -> bool {
        let current = self.business_reaction().map(|r| r.emoji.as_str());
        let unchanged = match current {
            None => emoji.is_empty(),
            Some(e) => e == emoji,
        };
        if unchanged {
            return false;
        }
        self.reactions.retain(|r| r.by == Reaction::CUSTOMER);
        if !emoji.is_empty() {
            self.reactions.push(Reaction {
                by: by.to_string(),
                emoji: emoji.to_string(),
            });
        }
        true
    }

    /// Stable public id: the conversation id and the message's position in it.
    pub fn id(&self) -> String {
        message_id(&self.conversation_id, self.seq)
    }

    /// Applies a delivery status if it is progress; returns whether anything changed.
    pub fn apply_status(&mut self, next: DeliveryStatus, error: Option<MessageError>) -> bool {
        let cur = self.status.unwrap_or(DeliveryStatus::Pending);
        if self.direction != Direction::Outbound || !cur.can_become(next) {
            return false;
        }
        self.status = Some(next);
        if next == DeliveryStatus::Failed {
            self.error = error;
        }
        true
    }
}

/// Puts a conversation's messages (read in `seq` order) in the order they are shown: messages
/// imported from the WhatsApp Business App's history first, by their time (chunks arrive in any
/// order, so their `seq` is arrival order, not time order), then every live message in `seq`
/// order as before. Meta's history covers only the time before the number was onboarded, so it
/// all precedes what arrives live.
pub fn in_display_order(messages: &mut [Message]) {
    if messages.iter().any(|m| m.lifecycle.imported) {
        messages.sort_by_key(|m| {
            let imported = m.lifecycle.imported;
            (!imported, if imported { m.at } else { 0 }, m.seq)
        });
    }
}

pub fn message_id(conversation_id: &str, seq: u64) -> String {
    format!("{conversation_id}-{seq}")
}

/// Splits a public message id back into conversation id and sequence number.
pub fn parse_message_id(id: &str) -> Option<(&str, u64)> {
    let (conv, seq) = id.rsplit_once('-')?;
    Some((conv, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use DeliveryStatus::*;

    #[test]
    fn statuses_only_move_forward() {
        assert!(Pending.can_become(Accepted));
        assert!(Accepted.can_become(Delivered));
        assert!(!Delivered.can_become(Sent));
        assert!(!Read.can_become(Delivered));
        assert!(Sent.can_become(Failed));
        assert!(!Delivered.can_become(Failed));
        assert!(!Failed.can_become(Read));
    }

    /// The stored layout from before [`Author`]: every field in order, the author a string.
    #[derive(Serialize)]
    struct Untyped<'a> {
        conversation_id: &'a str,
        seq: u64,
        direction: Direction,
        kind: &'a str,
        text: Option<&'a str>,
        wamid: Option<&'a str>,
        status: Option<DeliveryStatus>,
        author: &'a str,
        at: Millis,
        error: Option<MessageError>,
        idempotency_key: Option<&'a str>,
        raw: Option<&'a str>,
    }

    fn untyped(direction: Direction, author: &str) -> Untyped<'_> {
        Untyped {
            conversation_id: "c1",
            seq: 3,
            direction,
            kind: "text",
            text: Some("hi"),
            wamid: None,
            status: Some(Pending),
            author,
            at: 9,
            error: Some(MessageError {
                code: WINDOW_CLOSED_CODE,
                title: "Re-engagement message".into(),
            }),
            idempotency_key: Some("k"),
            raw: None,
        }
    }

    #[test]
    fn version_one_messages_read_with_their_authors() {
        let cases = [
            (
                Direction::Inbound,
                "16505551234",
                Author::Customer("16505551234".into()),
            ),
            // A customer id is the customer's even when it reads like the broker's.
            (
                Direction::Inbound,
                "system",
                Author::Customer("system".into()),
            ),
            (Direction::Outbound, "alice", Author::Agent("alice".into())),
            (Direction::Outbound, "system", Author::System),
            (Direction::Note, "system", Author::System),
            (Direction::Note, "bob", Author::Agent("bob".into())),
        ];
        for (direction, stored, author) in cases {
            let old = bincode::serialize(&untyped(direction, stored)).expect("encode old");
            let v1: MessageV1 = bincode::deserialize(&old).expect("decode v1");
            let read = Message::from(v1);
            assert_eq!(read.author, author, "{stored:?} {direction:?}");
            assert_eq!(read.author.as_str(), stored);
            let again: Message =
                bincode::deserialize(&bincode::serialize(&read).expect("encode")).expect("decode");
            assert_eq!(again, read, "round trip");
        }
    }

    #[test]
    fn only_the_system_id_is_reserved() {
        assert!(Author::is_reserved(Author::SYSTEM));
        assert!(!Author::is_reserved("System"));
        assert!(!Author::is_reserved("alice"));
        assert!(Author::Agent("alice".into()).is_agent("alice"));
        assert!(!Author::System.is_agent("system"));
    }

    #[test]
    fn one_reaction_per_reactor_and_an_empty_emoji_removes_it() {
        let mut rs = Vec::new();
        assert!(set_reaction(&mut rs, "customer", Some("👍")));
        assert!(!set_reaction(&mut rs, "customer", Some("👍")), "a repeat");
        assert!(set_reaction(&mut rs, "alice", Some("🎉")));
        assert!(set_reaction(&mut rs, "customer", Some("❤")));
        let shown: Vec<_> = rs
            .iter()
            .map(|r| (r.by.as_str(), r.emoji.as_str()))
            .collect();
        assert_eq!(shown, [("customer", "❤"), ("alice", "🎉")]);
        assert!(set_reaction(&mut rs, "customer", Some("")));
        assert!(
            !set_reaction(&mut rs, "customer", None),
            "nothing to remove"
        );
        assert_eq!(rs.len(), 1);
        assert!(set_reaction(&mut rs, "alice", None));
        assert!(rs.is_empty());
    }

    #[test]
    fn billable_unless_meta_says_free() {
        let p = |billable: Option<bool>, kind: Option<&str>| Pricing {
            category: "marketing".into(),
            kind: kind.map(str::to_string),
            pricing_model: Some("PMP".into()),
            billable,
        };
        assert!(p(Some(true), Some("regular")).is_billable());
        assert!(p(None, None).is_billable());
        assert!(!p(Some(false), None).is_billable());
        assert!(!p(None, Some("free_customer_service")).is_billable());
        assert!(!p(Some(true), Some("free_entry_point")).is_billable());
    }

    #[test]
    fn the_business_has_one_reaction_per_message() {
        let mut m = Message::from(
            bincode::deserialize::<MessageV1>(
                &bincode::serialize(&untyped(Direction::Inbound, "15550001")).expect("encode"),
            )
            .expect("decode"),
        );
        m.reactions.push(Reaction {
            by: Reaction::CUSTOMER.into(),
            emoji: "🙏".into(),
        });
        assert!(!m.set_business_reaction("alice", ""), "nothing to remove");
        assert!(m.set_business_reaction("alice", "👍"));
        assert!(!m.set_business_reaction("alice", "👍"), "the same again");
        assert!(
            !m.set_business_reaction("bob", "👍"),
            "Meta shows it already"
        );
        assert!(m.set_business_reaction("bob", "❤️"), "replaces alice's");
        assert_eq!(
            m.reactions,
            vec![
                Reaction {
                    by: "customer".into(),
                    emoji: "🙏".into()
                },
                Reaction {
                    by: "bob".into(),
                    emoji: "❤️".into()
                }
            ]
        );
        assert!(m.set_business_reaction("alice", ""));
        assert_eq!(m.reactions.len(), 1, "only the customer's is left");
    }

    #[test]
    fn final_codes_have_stable_reasons() {
        for (code, reason) in [
            (131047, "window_closed"),
            (131026, "undeliverable"),
            (131049, "marketing_limit"),
            (131050, "marketing_opted_out"),
            (130472, "experiment"),
        ] {
            let e = MessageError {
                code,
                title: String::new(),
            };
            assert_eq!(e.reason().map(FailureReason::as_str), Some(reason));
            assert!(FailureReason::is_final(code));
        }
        assert!(!FailureReason::is_final(131000));
        assert_eq!(FailureReason::of(100), None);
    }

    #[test]
    fn message_ids_round_trip() {
        assert_eq!(
            parse_message_id(&message_id("c0123", 42)),
            Some(("c0123", 42))
        );
        assert_eq!(parse_message_id("nope"), None);
    }
}
