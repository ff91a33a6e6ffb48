//! Messages of a conversation and the forward-only delivery status of outbound ones.
//!
//! Invariant: an outbound message's status only moves forward (`pending < accepted < sent <
//! delivered < read`); `failed` is taken unless the message was already delivered or read, and
//! nothing moves a failed message again. Late or redelivered status callbacks are therefore
//! harmless.

use serde::{Deserialize, Serialize};

use super::Millis;

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

/// One message of a conversation. Stored as-is (versioned bincode); `raw` keeps the customer's
/// original JSON so unknown types and fields are never lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub conversation_id: String,
    pub seq: u64,
    pub direction: Direction,
    pub kind: String,
    pub text: Option<String>,
    pub wamid: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub author: String,
    pub at: Millis,
    pub error: Option<MessageError>,
    pub idempotency_key: Option<String>,
    pub raw: Option<String>,
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

    #[test]
    fn message_ids_round_trip() {
        assert_eq!(
            parse_message_id(&message_id("c0123", 42)),
            Some(("c0123", 42))
        );
        assert_eq!(parse_message_id("nope"), None);
    }
}
