//! The change feed behind `GET /api/v1/events`.
//!
//! Conversation actors publish an [`Event`] after a change is durable; each SSE subscriber filters
//! the feed by what its agent may see. The feed is a bounded broadcast channel: a subscriber that
//! falls more than `CAPACITY` events behind is told it lagged (so it can re-read the list)
//! instead of slowing the publishers down.

use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

use crate::domain::{Caller, Conversation, ConversationStatus, Message, SlaKind};

/// Events buffered per subscriber before it is told it lagged.
pub const CAPACITY: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    ConversationCreated,
    ConversationClaimed,
    ConversationReleased,
    ConversationTransferred,
    ConversationResolved,
    ConversationReopened,
    MessageCreated,
    MessageStatus,
    /// A message changed otherwise than in status: a customer's reaction was set or removed,
    /// Meta's pricing arrived.
    MessageUpdated,
    /// An SLA clock was missed (`sla` names which); reaches supervisors of the team, admins and
    /// the assignee.
    SlaBreached,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        Self::ConversationCreated,
        Self::ConversationClaimed,
        Self::ConversationReleased,
        Self::ConversationTransferred,
        Self::ConversationResolved,
        Self::ConversationReopened,
        Self::MessageCreated,
        Self::MessageStatus,
        Self::MessageUpdated,
        Self::SlaBreached,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConversationCreated => "conversation.created",
            Self::ConversationClaimed => "conversation.claimed",
            Self::ConversationReleased => "conversation.released",
            Self::ConversationTransferred => "conversation.transferred",
            Self::ConversationResolved => "conversation.resolved",
            Self::ConversationReopened => "conversation.reopened",
            Self::MessageCreated => "message.created",
            Self::MessageStatus => "message.status",
            Self::MessageUpdated => "message.updated",
            Self::SlaBreached => "conversation.sla_breached",
        }
    }
}

/// A set of event kinds (a subscriber's `types` filter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindSet(u16);

impl KindSet {
    pub const ALL: KindSet = KindSet(u16::MAX);

    pub fn contains(self, k: EventKind) -> bool {
        self.0 & (1 << k as u16) != 0
    }

    /// Parses a comma-separated list of event types; `conversation.*` and `message.*` stand for
    /// every type with that prefix. Returns the first unknown entry on error.
    pub fn parse(list: &str) -> Result<KindSet, String> {
        let mut bits = 0u16;
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let matched: Vec<EventKind> = match item.strip_suffix('*') {
                Some(prefix) if prefix.ends_with('.') => EventKind::ALL
                    .into_iter()
                    .filter(|k| k.as_str().starts_with(prefix))
                    .collect(),
                _ => EventKind::ALL
                    .into_iter()
                    .filter(|k| k.as_str() == item)
                    .collect(),
            };
            if matched.is_empty() {
                return Err(item.to_string());
            }
            for k in matched {
                bits |= 1 << k as u16;
            }
        }
        if bits == 0 {
            return Err(list.to_string());
        }
        Ok(KindSet(bits))
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub conversation: Conversation,
    pub message: Option<Message>,
    /// Team, status and owner before the change: people who could see it before must hear it
    /// changed.
    pub previous_team: Option<String>,
    pub previous_status: Option<ConversationStatus>,
    pub previous_assignee: Option<String>,
    /// For [`EventKind::SlaBreached`]: the clock that was missed.
    pub sla: Option<SlaKind>,
    /// The event's wire form, rendered once by the first subscriber that sends it and shared by
    /// all others (fan-out to many agents must not re-serialize per agent).
    pub rendered: OnceLock<String>,
}

impl Event {
    /// Whether `caller` should hear of this change. Message events only reach those who may see
    /// the conversation now; ownership and routing changes also reach whoever could see it just
    /// before (so nobody starts typing into a chat someone just took), and nobody else: an agent
    /// never hears of a colleague's conversation it could not open.
    pub fn visible_to(&self, caller: &Caller) -> bool {
        let c = &self.conversation;
        if self.kind == EventKind::SlaBreached {
            return caller.manages(c.team()) || c.assignee.as_deref() == Some(caller.id.as_str());
        }
        if c.visible_to(caller) {
            return true;
        }
        if matches!(
            self.kind,
            EventKind::MessageCreated | EventKind::MessageStatus | EventKind::MessageUpdated
        ) {
            return false;
        }
        match (&self.previous_team, self.previous_status) {
            (Some(team), Some(status)) => crate::domain::conversation::visible(
                team,
                status,
                self.previous_assignee.as_deref(),
                caller,
            ),
            _ => false,
        }
    }
}

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(CAPACITY);
        Self { tx }
    }

    pub fn publish(&self, event: Event) {
        // No subscribers is normal; nothing to do.
        if self.has_subscribers() {
            let _ = self.tx.send(Arc::new(event));
        }
    }

    /// Whether anyone listens: publishers skip building events (a conversation clone each)
    /// when nobody does.
    pub fn has_subscribers(&self) -> bool {
        self.tx.receiver_count() > 0
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_set_parses_names_and_prefixes() {
        let s = KindSet::parse("conversation.*, message.status").expect("valid");
        assert!(s.contains(EventKind::ConversationCreated));
        assert!(
            s.contains(EventKind::SlaBreached),
            "conversation.sla_breached is a conversation.*"
        );
        assert!(s.contains(EventKind::MessageStatus));
        assert!(!s.contains(EventKind::MessageCreated));
        let one = KindSet::parse("message.created").expect("valid");
        assert!(one.contains(EventKind::MessageCreated));
        assert!(!one.contains(EventKind::ConversationClaimed));
        assert_eq!(
            KindSet::parse("conversation.nope"),
            Err("conversation.nope".into())
        );
        assert_eq!(KindSet::parse("message*"), Err("message*".into()));
        assert!(KindSet::parse(" , ").is_err());
        assert!(KindSet::ALL.contains(EventKind::MessageCreated));
    }
}
