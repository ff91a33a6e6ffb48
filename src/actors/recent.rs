//! The outbound messages a live conversation actor wrote and whose delivery is still open, kept
//! so the Graph API's answer and Meta's status callbacks (sent, delivered, read: about three per
//! outbound message, the bulk of a sending business's webhooks) find the message without a
//! storage read, each of which is a blocking-pool round trip.
//!
//! Exactness: the actor is the only writer of its conversation's messages. It forgets a message
//! before committing a change to it and remembers the new version only after the commit
//! succeeded, so an entry is never older than what storage holds (a failed commit may still
//! have reached the disk; then the entry is simply absent). A miss is not an answer: the caller
//! reads storage, as it always did.
//!
//! Bounds: at most [`MAX_ENTRIES`] messages, each with a text of at most [`MAX_TEXT_BYTES`];
//! a message leaves when its delivery is settled (read or failed), when a newer one pushes it
//! out, or with the actor (passivation, restart).

use std::collections::VecDeque;

use crate::domain::{DeliveryStatus, Direction, Message};

/// Outbound messages kept per live actor.
pub const MAX_ENTRIES: usize = 2;
/// Longer texts are not kept (a live actor's memory stays small); their updates read storage.
pub const MAX_TEXT_BYTES: usize = 1024;

#[derive(Debug, Default)]
pub struct RecentOutbound {
    entries: VecDeque<Message>,
}

impl RecentOutbound {
    /// The kept copy of message `seq`, if any (a miss means: read storage).
    pub fn get(&self, seq: u64) -> Option<&Message> {
        self.entries.iter().find(|m| m.seq == seq)
    }

    /// Drops message `seq`; call before committing a change to it.
    pub fn forget(&mut self, seq: u64) {
        self.entries.retain(|m| m.seq != seq);
    }

    /// Keeps `msg` as committed, if it is outbound, unsettled and small enough.
    pub fn remember(&mut self, msg: &Message) {
        self.forget(msg.seq);
        let settled = matches!(
            msg.status,
            Some(DeliveryStatus::Read | DeliveryStatus::Failed)
        );
        let small = msg.text.as_ref().is_none_or(|t| t.len() <= MAX_TEXT_BYTES);
        if msg.direction != Direction::Outbound || settled || !small {
            return;
        }
        if self.entries.len() == MAX_ENTRIES {
            self.entries.pop_front();
        }
        self.entries.push_back(msg.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outbound(seq: u64, status: DeliveryStatus, text: &str) -> Message {
        Message {
            conversation_id: "c".into(),
            seq,
            direction: Direction::Outbound,
            kind: "text".into(),
            text: Some(text.into()),
            wamid: None,
            status: Some(status),
            author: crate::domain::Author::Agent("agent".into()),
            at: 0,
            error: None,
            idempotency_key: None,
            raw: None,
            reply_to: None,
            reactions: Vec::new(),
            referral: None,
            media: None,
            pricing: None,
            content: None,
            lifecycle: Default::default(),
        }
    }

    #[test]
    fn keeps_the_latest_version_until_settled() {
        let mut r = RecentOutbound::default();
        r.remember(&outbound(1, DeliveryStatus::Pending, "hi"));
        assert_eq!(
            r.get(1).and_then(|m| m.status),
            Some(DeliveryStatus::Pending)
        );
        r.remember(&outbound(1, DeliveryStatus::Delivered, "hi"));
        assert_eq!(
            r.get(1).and_then(|m| m.status),
            Some(DeliveryStatus::Delivered)
        );
        r.remember(&outbound(1, DeliveryStatus::Read, "hi"));
        assert!(r.get(1).is_none(), "a read message is settled and leaves");
        r.remember(&outbound(2, DeliveryStatus::Accepted, "hi"));
        r.remember(&outbound(2, DeliveryStatus::Failed, "hi"));
        assert!(r.get(2).is_none(), "a failed message is settled and leaves");
    }

    #[test]
    fn bounded_oldest_out_and_only_small_outbound_messages() {
        let mut r = RecentOutbound::default();
        for seq in 1..=3 {
            r.remember(&outbound(seq, DeliveryStatus::Pending, "hi"));
        }
        assert!(r.get(1).is_none());
        assert!(r.get(2).is_some() && r.get(3).is_some());

        r.remember(&outbound(
            4,
            DeliveryStatus::Pending,
            &"x".repeat(MAX_TEXT_BYTES + 1),
        ));
        assert!(r.get(4).is_none(), "long texts are not kept");
        let mut inbound = outbound(5, DeliveryStatus::Received, "hi");
        inbound.direction = Direction::Inbound;
        r.remember(&inbound);
        assert!(r.get(5).is_none(), "inbound messages are not kept");

        r.forget(3);
        assert!(r.get(3).is_none());
        assert!(r.get(2).is_some());
    }
}
