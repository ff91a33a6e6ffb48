//! Messages of a conversation and the forward-only delivery status of outbound ones.
//!
//! Invariant: an outbound message's status only moves forward (`pending < accepted < sent <
//! delivered < read`); `failed` is taken unless the message was already delivered or read, and
//! nothing moves a failed message again. Late or redelivered status callbacks are therefore
//! harmless.
//!
//! A message's [`Author`] is typed: the customer, an agent, or the broker itself. Storage keeps
//! it as one string (the customer's or agent's id, or [`Author::SYSTEM`]), exactly as before the
//! type existed; which of the three a string is follows from the message's direction, and the
//! config refuses an agent id equal to [`Author::SYSTEM`], so the reading is unambiguous.

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
}

/// Who wrote a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Author {
    /// The customer (inbound messages), by their WhatsApp id.
    Customer(String),
    /// An agent (replies and notes), by its configured id.
    Agent(String),
    /// The broker itself: after-hours replies, notes on automatic reassignments.
    System,
}

impl Author {
    /// How [`Author::System`] is written, in storage and in the API; no agent may have this id.
    pub const SYSTEM: &'static str = "system";

    /// Whether an agent id would be mistaken for the broker's own authorship.
    pub fn is_reserved(agent_id: &str) -> bool {
        agent_id == Self::SYSTEM
    }

    /// The author as stored and shown: the customer's or agent's id, or `"system"`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Customer(id) | Self::Agent(id) => id,
            Self::System => Self::SYSTEM,
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
}

/// [`Message`]'s stored layout, field by field in the same order, the author as its string: the
/// layout messages were written in before [`Author`] existed, so every stored message still
/// reads and new ones are written as they always were. Borrowed when writing (no copy of the
/// text or raw JSON); owned when reading.
#[derive(Serialize, Deserialize)]
struct StoredMessage<S, E> {
    conversation_id: S,
    seq: u64,
    direction: Direction,
    kind: S,
    text: Option<S>,
    wamid: Option<S>,
    status: Option<DeliveryStatus>,
    author: S,
    at: Millis,
    error: Option<E>,
    idempotency_key: Option<S>,
    raw: Option<S>,
}

impl Serialize for Message {
    fn serialize<Z: Serializer>(&self, serializer: Z) -> Result<Z::Ok, Z::Error> {
        StoredMessage::<&str, &MessageError> {
            conversation_id: &self.conversation_id,
            seq: self.seq,
            direction: self.direction,
            kind: &self.kind,
            text: self.text.as_deref(),
            wamid: self.wamid.as_deref(),
            status: self.status,
            author: self.author.as_str(),
            at: self.at,
            error: self.error.as_ref(),
            idempotency_key: self.idempotency_key.as_deref(),
            raw: self.raw.as_deref(),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let m = StoredMessage::<String, MessageError>::deserialize(deserializer)?;
        Ok(Message {
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
        })
    }
}

impl Message {
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
    fn authors_are_stored_as_the_strings_they_always_were() {
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
            let read: Message = bincode::deserialize(&old).expect("decode");
            assert_eq!(read.author, author, "{stored:?} {direction:?}");
            assert_eq!(read.author.as_str(), stored);
            assert_eq!(
                bincode::serialize(&read).expect("encode"),
                old,
                "same bytes"
            );
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
    fn message_ids_round_trip() {
        assert_eq!(
            parse_message_id(&message_id("c0123", 42)),
            Some(("c0123", 42))
        );
        assert_eq!(parse_message_id("nope"), None);
    }
}
