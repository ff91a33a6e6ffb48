//! The automation bot as a participant of the conversation (see `crate::automation`).
//!
//! A conversation whose team has automation on starts (and reopens) with status `bot`
//! (`inbound`). After customer messages are durable, [`ConversationActor::start_bot_turn`]
//! computes the bot's turn in a task of its own — the actor and the webhook's answer never wait
//! for it — and the task sends the result back as [`ConversationMsg::BotTurn`], stamped with
//! the conversation's `next_seq` it was computed for. [`ConversationActor::bot_turn`] applies
//! it only if the bot still has the conversation and nothing was appended since; otherwise
//! it is dropped (counted `dropped`). A claim, a transfer or a resolve takes the conversation
//! from the bot in its own actor step, so no bot message can follow it; a newer customer
//! message makes the older turn stale, and its own turn answers.
//!
//! What a turn does, each in one commit:
//! - an answer: an outbound text by `bot`, queued in the outbox like an agent's reply (window,
//!   rate limits, retries); with `resolve` (an intent marked so, e.g. "thanks") the
//!   conversation is resolved in the same commit (reporting event `bot_resolved`);
//! - no answer: the fallback text, or after `max_failed_turns` consecutive such turns a
//!   hand-over;
//! - a hand-over: routing places the conversation again (with the detected intent as routing
//!   input), it waits in that team's queue (`queued`, a new human SLA cycle from now), and a
//!   note by `bot` gives the reason, the intent, the extracted order id and a summary
//!   (reporting event `bot_handover`, counted in the team the bot handled it for). A claim from
//!   the bot leaves the same note and event, in the claim's commit.
//!
//! [`BotMemory`] lives in memory only: a conversation passivated or restarted mid-cycle starts
//! its count of failed turns again (at worst the customer gets one more fallback).

use super::*;
use crate::automation::{handover_note, HandoverReason, Turn};

/// The longest customer text handed to a bot turn (longer texts are cut, on a char boundary).
const MAX_TURN_TEXT: usize = 2_000;

/// What the bot learned in the current bot cycle of a conversation.
#[derive(Debug, Default)]
pub(super) struct BotMemory {
    /// Consecutive turns without an answer.
    failed_turns: u32,
    /// Customer deliveries the bot took a turn on.
    turns: u32,
    intent: Option<String>,
    order_id: Option<String>,
    last_text: String,
}

impl BotMemory {
    fn learn(&mut self, intent: Option<String>, order_id: Option<String>) {
        if intent.is_some() {
            self.intent = intent;
        }
        if order_id.is_some() {
            self.order_id = order_id;
        }
    }

    /// The note left when the conversation leaves the bot for `reason`.
    pub(super) fn note(&self, reason: HandoverReason) -> String {
        handover_note(
            reason,
            self.intent.as_deref(),
            self.order_id.as_deref(),
            self.turns,
            &self.last_text,
        )
    }
}

impl ConversationActor {
    /// Whether the bot takes new and reopened conversations of `team`.
    pub(super) fn bot_serves(&self, team: &str) -> bool {
        self.ctx.automation.get().is_some_and(|a| a.serves(team))
    }

    /// Starts the bot's turn on the customer's texts just committed (the conversation is the
    /// bot's). The turn is computed in a task; its result comes back as a `BotTurn`.
    pub(super) fn start_bot_turn(&self, state: &mut State, texts: Vec<String>) {
        let Some(bot) = self.ctx.automation.get().cloned() else {
            return;
        };
        if state.conv.status != ConversationStatus::Bot || texts.is_empty() {
            return;
        }
        let mut text = texts.join("\n");
        if text.len() > MAX_TURN_TEXT {
            let mut cut = MAX_TURN_TEXT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        state.bot.turns += 1;
        // Known before the turn is: a claim while it computes still hands over the order id.
        state.bot.learn(None, crate::automation::order_id(&text));
        state.bot.last_text = text.clone();
        let ctx = self.ctx.clone();
        let id = state.conv.id.clone();
        let version = state.conv.next_seq;
        tokio::spawn(async move {
            let turn = bot.decide(&text).await;
            let applied = ctx
                .ask(&id, None, |reply| ConversationMsg::BotTurn {
                    version,
                    turn: turn.clone(),
                    reply,
                })
                .await;
            if let Err(e) = applied {
                tracing::warn!(conversation = %id, error = %e, "bot turn not applied");
            }
        });
    }

    /// Applies a bot turn computed for `version`, unless the conversation moved on since.
    pub(super) async fn bot_turn(
        &self,
        state: &mut State,
        version: u64,
        turn: Turn,
    ) -> Result<bool, Error> {
        let bot = match self.ctx.automation.get() {
            Some(b)
                if state.conv.status == ConversationStatus::Bot
                    && state.conv.next_seq == version =>
            {
                b.clone()
            }
            _ => {
                metrics::counter!(m::BOT_TURNS, "outcome" => "dropped").increment(1);
                return Ok(false);
            }
        };
        match turn {
            Turn::Answer {
                intent,
                order_id,
                text,
                resolve,
            } => {
                state.bot.learn(intent, order_id);
                state.bot.failed_turns = 0;
                let resolved = self.bot_reply(state, text, resolve).await?;
                let outcome = if resolved { "resolved" } else { "answered" };
                metrics::counter!(m::BOT_TURNS, "outcome" => outcome).increment(1);
            }
            Turn::NoAnswer { intent, order_id } => {
                state.bot.learn(intent, order_id);
                state.bot.failed_turns += 1;
                if state.bot.failed_turns >= bot.max_failed_turns() {
                    self.hand_over(state, HandoverReason::FailedTurns).await?;
                } else {
                    self.bot_reply(state, bot.fallback().to_string(), false)
                        .await?;
                    metrics::counter!(m::BOT_TURNS, "outcome" => "fallback").increment(1);
                }
            }
            Turn::HandOver {
                reason,
                intent,
                order_id,
            } => {
                state.bot.learn(intent, order_id);
                self.hand_over(state, reason).await?;
            }
        }
        Ok(true)
    }

    /// Sends `text` as the bot through the outbox; with `resolve`, resolves in the same commit.
    /// Answers whether it resolved.
    async fn bot_reply(
        &self,
        state: &mut State,
        text: String,
        resolve: bool,
    ) -> Result<bool, Error> {
        let now = self.ctx.now();
        if !state.conv.window_open(now) {
            // Only a turn computed for longer than the 24-hour window could get here.
            self.hand_over(state, HandoverReason::WindowClosed).await?;
            return Ok(false);
        }
        let before = state.conv.clone();
        let mut next = before.clone();
        let msg = next.append_outbound(Author::Bot, text, None, now);
        let job = outbox_job(&next, &msg);
        let mut batch = Batch::new();
        batch.put_message(&msg)?;
        batch.put_outbox(&job)?;
        let resolved = resolve && next.bot_resolve();
        if resolved {
            batch.put_report(&ReportEvent::of(
                &before,
                now,
                None,
                ReportKind::BotResolved,
            ))?;
        }
        self.persist(state, next, batch).await?;
        state.recent.remember(&msg);
        metrics::counter!(m::OUTBOUND_MESSAGES, "outcome" => "queued").increment(1);
        if let Some(outbox) = self.ctx.outbox.get() {
            outbox.enqueue(job);
        }
        self.publish(EventKind::MessageCreated, &state.conv, Some(msg), None);
        if resolved {
            state.bot = BotMemory::default();
            self.publish(
                EventKind::ConversationResolved,
                &state.conv,
                None,
                Some(&before),
            );
        }
        Ok(resolved)
    }

    /// Hands the conversation from the bot to humans: routing places it (the detected intent
    /// is a routing input), it waits in that team's queue, and a note by `bot` says why and
    /// what the bot learned.
    async fn hand_over(&self, state: &mut State, reason: HandoverReason) -> Result<(), Error> {
        let now = self.ctx.now();
        let before = state.conv.clone();
        let mut next = before.clone();
        let default_team = self.ctx.default_team(&next.number);
        let placement = {
            let number = self.ctx.config.number(&next.number);
            let input = RouteInput {
                number: &next.number,
                customer: &next.customer,
                text: Some(state.bot.last_text.as_str()),
                message_type: "text",
                labels: next.labels(),
                intent: state.bot.intent.as_deref(),
                number_country: number.and_then(|n| n.country.as_deref()),
                number_languages: number.map_or(&[], |n| n.languages.as_slice()),
            };
            self.ctx.policies().place(&input, &default_team, now)
        };
        if !next.hand_over(&placement.team, now) {
            return Ok(());
        }
        next.route(&placement);
        let note = next.append_note(Author::Bot, state.bot.note(reason), now);
        let mut batch = Batch::new();
        batch.put_message(&note)?;
        // Counted in the team the bot handled it for.
        batch.put_report(&ReportEvent::of(
            &before,
            now,
            None,
            ReportKind::BotHandover,
        ))?;
        self.persist(state, next, batch).await?;
        state.bot = BotMemory::default();
        metrics::counter!(m::BOT_TURNS, "outcome" => "handover").increment(1);
        metrics::counter!(m::BOT_HANDOVERS, "reason" => reason.as_str()).increment(1);
        self.transferred(&before, &state.conv);
        self.publish(EventKind::MessageCreated, &state.conv, Some(note), None);
        Ok(())
    }
}
