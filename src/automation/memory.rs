//! What the bot remembers of one conversation's bot cycle, durable with the conversation (the
//! `bot_memory` column family, see `crate::store::schema`): failed turns, what it learned
//! (intent, order id), the flow it is in (a cash-on-delivery confirmation waiting for the
//! customer's button, a lead's questions) and whether it holds the conversation for a closed
//! team until it opens.
//!
//! Invariants: a cycle starts empty (a new or reopened conversation) and ends — its record
//! deleted in the same commit — when the conversation leaves the bot (hand-over, claim,
//! resolve). The record is written in the commit of every applied bot turn, so after a restart
//! the bot continues where the last applied turn left it (what a turn still being computed at
//! the crash would have learned is lost with that turn, as its reply is).

use serde::{Deserialize, Serialize};

use super::{handover_note, HandoverReason};

/// The most lead answers kept (one per configured question; config bounds the questions too).
pub const MAX_LEAD_ANSWERS: usize = 16;
/// The longest lead answer kept, in characters.
pub const MAX_ANSWER_CHARS: usize = 300;

/// A multi-turn flow the bot is in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub enum Flow {
    #[default]
    None,
    /// `cod_confirm` asked for the order id; the next text with one continues.
    CodAwaitingId,
    /// The confirm/cancel buttons for `order_id` were sent; the customer's button reply (or
    /// its title as text) settles it.
    CodPending { order_id: String },
    /// Qualifying a lead: `answers` to the first `answers.len()` questions, in order.
    Lead {
        intent: String,
        answers: Vec<String>,
    },
}

/// The bot holds the conversation for a closed team until the team opens: then it goes
/// through routing to humans, for `reason` (None: only held because the team was closed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waiting {
    pub team: String,
    pub reason: Option<HandoverReason>,
    /// The bot already told the customer a person follows at opening (said once per wait).
    pub told: bool,
}

/// The bot's memory of the current bot cycle of a conversation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BotMemory {
    /// Consecutive turns without an answer.
    pub failed_turns: u32,
    /// Customer deliveries the bot took a turn on.
    pub turns: u32,
    pub intent: Option<String>,
    pub order_id: Option<String>,
    pub last_text: String,
    pub flow: Flow,
    pub waiting: Option<Waiting>,
    /// A qualified lead's score and answers (question id, answer), for the hand-over note.
    pub lead: Option<(i64, Vec<(String, String)>)>,
}

impl BotMemory {
    pub fn learn(&mut self, intent: Option<String>, order_id: Option<String>) {
        if intent.is_some() {
            self.intent = intent;
        }
        if order_id.is_some() {
            self.order_id = order_id;
        }
    }

    /// Whether there is anything worth keeping (an empty memory is not stored).
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The note left when the conversation leaves the bot for `reason`.
    pub fn note(&self, reason: HandoverReason) -> String {
        let mut note = handover_note(
            reason,
            self.intent.as_deref(),
            self.order_id.as_deref(),
            self.turns,
            &self.last_text,
        );
        if let Some((score, answers)) = &self.lead {
            note.push_str(&format!("\nLead score: {score}"));
            for (q, a) in answers {
                note.push_str(&format!("\n{q}: {a}"));
            }
        }
        if let Flow::CodPending { order_id } = &self.flow {
            note.push_str(&format!(
                "\nCash-on-delivery confirmation of order {order_id} asked, not answered"
            ));
        }
        note
    }
}
