//! The change feed behind `GET /api/v1/events`.
//!
//! Conversation actors publish an [`Event`] after a change is durable; each SSE subscriber filters
//! the feed by what its agent may see. The feed is a bounded broadcast channel: a subscriber that
//! falls more than `CAPACITY` events behind is told it lagged (so it can re-read the list)
//! instead of slowing the publishers down.

use std::sync::{Arc, OnceLock};

use tokio::sync::broadcast;

use crate::domain::{Caller, Conversation, Message, SlaKind};

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
    /// An SLA clock was missed (`sla` names which); reaches supervisors of the team, admins and
    /// the assignee.
    SlaBreached,
}

impl EventKind {
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
            Self::SlaBreached => "conversation.sla_breached",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Event {
    pub kind: EventKind,
    pub conversation: Conversation,
    pub message: Option<Message>,
    /// Team and owner before the change: people who could see it before must hear it changed.
    pub previous_team: Option<String>,
    pub previous_assignee: Option<String>,
    /// For [`EventKind::SlaBreached`]: the clock that was missed.
    pub sla: Option<SlaKind>,
    /// The event's wire form, rendered once by the first subscriber that sends it and shared by
    /// all others (fan-out to many agents must not re-serialize per agent).
    pub rendered: OnceLock<String>,
}

impl Event {
    /// Whether `caller` should hear of this change. Message events only reach those who may see
    /// the conversation now; ownership and routing changes also reach everyone of its team and
    /// whoever could see it before (so nobody starts typing into a chat someone just took).
    pub fn visible_to(&self, caller: &Caller) -> bool {
        let c = &self.conversation;
        if self.kind == EventKind::SlaBreached {
            return caller.manages(&c.team) || c.assignee.as_deref() == Some(caller.id.as_str());
        }
        if c.visible_to(caller) {
            return true;
        }
        if matches!(
            self.kind,
            EventKind::MessageCreated | EventKind::MessageStatus
        ) {
            return false;
        }
        let was_team = self
            .previous_team
            .as_deref()
            .is_some_and(|t| caller.in_team(t) || caller.manages(t));
        let was_owner = self.previous_assignee.as_deref() == Some(caller.id.as_str());
        caller.in_team(&c.team) || was_team || was_owner
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
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(Arc::new(event));
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}
