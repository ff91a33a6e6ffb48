//! The automation bot as a participant of the conversation (see `crate::automation`).
//!
//! A conversation whose team has automation on starts (and reopens) with status `bot`
//! (`inbound`); with `[automation] after_hours`, so does one that routing places in a closed
//! team (no open fallback), held for that team until it opens. After customer messages are
//! durable, [`ConversationActor::start_bot_turn`] computes the bot's turn in a task of its own
//! — the actor and the webhook's answer never wait for it — and the task sends the result back
//! as [`ConversationMsg::BotTurn`], stamped with the conversation's `next_seq` it was computed
//! for. [`ConversationActor::bot_turn`] applies it only if the bot still has the conversation
//! and nothing was appended since; otherwise it is dropped (counted `dropped`). A claim, a
//! transfer or a resolve takes the conversation from the bot in its own actor step, so no bot
//! message can follow it; a newer customer message makes the older turn stale, and its own
//! turn answers.
//!
//! What a turn does, each in one commit (which also writes the bot's memory, see below):
//! - an answer: an outbound text by `bot` (or the interactive Confirm / Cancel message of
//!   `cod_confirm`), queued in the outbox like an agent's reply (window, rate limits,
//!   retries); with `resolve` (an intent marked so, a settled cash-on-delivery confirmation, a
//!   lead that is not hot) the conversation is resolved in the same commit (reporting event
//!   `bot_resolved`);
//! - no answer: the fallback text, or after `max_failed_turns` consecutive such turns a
//!   hand-over;
//! - a hand-over: routing places the conversation again (with the detected intent as routing
//!   input; a hot lead goes to `[automation.leads] team`), it waits in that team's queue
//!   (`queued`, a new human SLA cycle from now), and a note by `bot` gives the reason, the
//!   intent, the extracted order id, a summary, and a lead's score and answers (reporting event
//!   `bot_handover`, counted in the team the bot handled it for). A claim from the bot leaves
//!   the same note and event, in the claim's commit.
//! - **after hours**: when the team a hand-over would queue in is closed, the conversation
//!   stays with the bot, which says so once (the team's `after_hours_reply`, else
//!   `[automation] closed_reply`) and keeps answering what it can; the memory records the team
//!   and the reason, and the timer service wakes the conversation at the team's opening
//!   (`bot_wake`, also scheduled at start-up from storage), when it is handed over with that
//!   reason (`team_opened` for one held only because the team was closed).
//!
//! [`BotMemory`] (failed turns, intent, order id, the flow — pending confirmation, lead answers
//! — and the team it is held for) is durable: written in the commit of every applied turn and
//! of the delivery that started the cycle, deleted in the commit that ends the cycle, and read
//! back when the actor is activated, so it survives passivation and restarts.

use super::*;
use crate::automation::memory::{Flow, Waiting};
use crate::automation::{HandoverReason, Turn};
use crate::domain::message::{Content, INTERACTIVE_KIND};

pub(super) use crate::automation::memory::BotMemory;

/// The longest customer text handed to a bot turn (longer texts are cut, on a char boundary).
const MAX_TURN_TEXT: usize = 2_000;

/// What the bot sends.
enum BotBody {
    Text(String),
    /// Meta's `interactive` object as JSON, and its body text.
    Buttons {
        json: String,
        summary: String,
    },
}

impl ConversationActor {
    /// Whether the bot takes new and reopened conversations of `team`.
    pub(super) fn bot_serves(&self, team: &str) -> bool {
        self.ctx.automation.get().is_some_and(|a| a.serves(team))
    }

    /// Whether the bot takes a conversation placed in `team` because the team is closed.
    pub(super) fn bot_holds_after_hours(
        &self,
        team: &str,
        policies: &Policies,
        now: Millis,
    ) -> bool {
        self.ctx.automation.get().is_some_and(|a| a.after_hours()) && !policies.is_open(team, now)
    }

    /// When the bot's conversation held for a closed team must be looked at again: the team's
    /// opening (now, if it is open already).
    pub(super) fn bot_wake(
        &self,
        state: &State,
        policies: &Policies,
        now: Millis,
    ) -> Option<Millis> {
        if state.conv.status != ConversationStatus::Bot {
            return None;
        }
        let w = state.bot.waiting.as_ref()?;
        match policies.team(&w.team) {
            Some(p) if !p.hours.is_open(now) => p.hours.next_open(now),
            _ => Some(now),
        }
    }

    /// At the opening of the team the bot holds the conversation for: hand it over.
    pub(super) async fn bot_tick(
        &self,
        state: &mut State,
        policies: &Policies,
        now: Millis,
    ) -> Result<(), Error> {
        if state.conv.status != ConversationStatus::Bot {
            return Ok(());
        }
        let Some(w) = state.bot.waiting.clone() else {
            return Ok(());
        };
        if !policies.is_open(&w.team, now) {
            return Ok(());
        }
        let mut mem = state.bot.clone();
        mem.waiting = None;
        let reason = w.reason.unwrap_or(HandoverReason::TeamOpened);
        let team = (reason == HandoverReason::HotLead).then_some(w.team);
        self.hand_over(state, mem, reason, team, true).await
    }

    /// Starts the bot's turn on the customer's texts just committed (the conversation is the
    /// bot's); `button` is the id of the button the customer pressed, if any. The turn is
    /// computed in a task; its result comes back as a `BotTurn`.
    pub(super) fn start_bot_turn(
        &self,
        state: &mut State,
        texts: Vec<String>,
        button: Option<String>,
    ) {
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
        let flow = state.bot.flow.clone();
        let ctx = self.ctx.clone();
        let id = state.conv.id.clone();
        let version = state.conv.next_seq;
        tokio::spawn(async move {
            let (turn, flow) = bot.decide_in(&flow, &text, button.as_deref()).await;
            let applied = ctx
                .ask(&id, None, |reply| ConversationMsg::BotTurn {
                    version,
                    turn: turn.clone(),
                    flow: flow.clone(),
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
        flow: Flow,
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
        // The memory as it is once this turn is applied; it becomes the actor's only with
        // the turn's commit.
        let mut mem = state.bot.clone();
        mem.flow = flow;
        match turn {
            Turn::Answer {
                intent,
                order_id,
                text,
                resolve,
            } => {
                mem.learn(intent, order_id);
                mem.failed_turns = 0;
                let resolved = self
                    .bot_send(state, mem, BotBody::Text(text), resolve)
                    .await?;
                let outcome = if resolved { "resolved" } else { "answered" };
                metrics::counter!(m::BOT_TURNS, "outcome" => outcome).increment(1);
            }
            Turn::Buttons {
                intent,
                order_id,
                json,
                summary,
            } => {
                mem.learn(intent, order_id);
                mem.failed_turns = 0;
                self.bot_send(state, mem, BotBody::Buttons { json, summary }, false)
                    .await?;
                metrics::counter!(m::BOT_TURNS, "outcome" => "answered").increment(1);
            }
            Turn::Lead {
                intent,
                score,
                answers,
                hot,
            } => {
                mem.learn(Some(intent), None);
                mem.failed_turns = 0;
                mem.lead = Some((score, answers));
                if hot {
                    let team = bot.leads_team().map(str::to_string);
                    self.hand_over(state, mem, HandoverReason::HotLead, team, false)
                        .await?;
                } else {
                    let text = bot.lead_answer().to_string();
                    self.bot_send(state, mem, BotBody::Text(text), true).await?;
                    metrics::counter!(m::BOT_TURNS, "outcome" => "resolved").increment(1);
                }
            }
            Turn::NoAnswer { intent, order_id } => {
                mem.learn(intent, order_id);
                mem.failed_turns += 1;
                if mem.failed_turns >= bot.max_failed_turns() {
                    self.hand_over(state, mem, HandoverReason::FailedTurns, None, false)
                        .await?;
                } else {
                    let text = bot.fallback().to_string();
                    self.bot_send(state, mem, BotBody::Text(text), false)
                        .await?;
                    metrics::counter!(m::BOT_TURNS, "outcome" => "fallback").increment(1);
                }
            }
            Turn::HandOver {
                reason,
                intent,
                order_id,
            } => {
                mem.learn(intent, order_id);
                self.hand_over(state, mem, reason, None, false).await?;
            }
        }
        Ok(true)
    }

    /// Sends `body` as the bot through the outbox, committing `mem` with it; with `resolve`,
    /// resolves in the same commit (and the memory's cycle ends). Answers whether it resolved.
    async fn bot_send(
        &self,
        state: &mut State,
        mem: BotMemory,
        body: BotBody,
        resolve: bool,
    ) -> Result<bool, Error> {
        let now = self.ctx.now();
        if !state.conv.window_open(now) {
            // Only a turn computed for longer than the 24-hour window could get here.
            self.hand_over(state, mem, HandoverReason::WindowClosed, None, true)
                .await?;
            return Ok(false);
        }
        let before = state.conv.clone();
        let mut next = before.clone();
        let (msg, job) = match body {
            BotBody::Text(text) => {
                let msg = next.append_outbound(Author::Bot, text, None, now);
                let job = outbox_job(&next, &msg);
                (msg, job)
            }
            BotBody::Buttons { json, summary } => {
                let mut msg = next.append_outbound(Author::Bot, summary, None, now);
                msg.kind = INTERACTIVE_KIND.to_string();
                msg.content = Some(Content::Interactive { json: json.clone() });
                let job = OutboxJob {
                    payload: Payload::Interactive { json },
                    ..outbox_job(&next, &msg)
                };
                (msg, job)
            }
        };
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
            batch.delete_bot_memory(&next.id);
        } else {
            batch.put_bot_memory(&next.id, &mem)?;
        }
        self.persist(state, next, batch).await?;
        let intent = mem.intent.clone();
        state.bot = if resolved { BotMemory::default() } else { mem };
        // The memory may now wait for (or no longer wait for) a team's opening.
        self.reschedule(state, false);
        state.recent.remember(&msg);
        metrics::counter!(m::OUTBOUND_MESSAGES, "outcome" => "queued").increment(1);
        if let Some(outbox) = self.ctx.outbox.get() {
            outbox.enqueue(job);
        }
        self.publish(EventKind::MessageCreated, &state.conv, Some(msg), None);
        if resolved {
            self.count_cycle(intent.as_deref(), "resolved");
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
    /// is a routing input; `team` overrides the team), it waits in that team's queue, and a
    /// note by `bot` says why and what the bot learned. If that team is closed (and not
    /// `now_anyway`), the bot keeps the conversation until the team opens instead.
    async fn hand_over(
        &self,
        state: &mut State,
        mut mem: BotMemory,
        reason: HandoverReason,
        team: Option<String>,
        now_anyway: bool,
    ) -> Result<(), Error> {
        let now = self.ctx.now();
        let before = state.conv.clone();
        let mut next = before.clone();
        let default_team = self.ctx.default_team(&next.number);
        let policies = self.ctx.policies();
        let mut placement = {
            let number = self.ctx.config.number(&next.number);
            let input = RouteInput {
                number: &next.number,
                customer: &next.customer,
                text: Some(mem.last_text.as_str()),
                message_type: "text",
                labels: next.labels(),
                intent: mem.intent.as_deref(),
                number_country: number.and_then(|n| n.country.as_deref()),
                number_languages: number.map_or(&[], |n| n.languages.as_slice()),
            };
            policies.place(&input, &default_team, now)
        };
        if let Some(t) = team {
            placement.team = t;
            placement.fell_back_from = None;
        }
        if !now_anyway && !policies.is_open(&placement.team, now) {
            return self
                .hold_for_opening(state, mem, reason, placement.team)
                .await;
        }
        if !next.hand_over(&placement.team, now) {
            return Ok(());
        }
        next.route(&placement);
        mem.waiting = None;
        let mut batch = Batch::new();
        let note = leave_bot(&before, &mut next, mem.note(reason), now, &mut batch)?;
        self.persist(state, next, batch).await?;
        metrics::counter!(m::BOT_TURNS, "outcome" => "handover").increment(1);
        self.transferred(&before, &state.conv);
        self.left_bot(state, note, mem.intent, reason);
        Ok(())
    }

    /// After the commit [`leave_bot`] prepared: the bot forgets the cycle, the hand-over is
    /// counted (by reason and by `intent`) and its note published.
    pub(super) fn left_bot(
        &self,
        state: &mut State,
        note: Message,
        intent: Option<String>,
        reason: HandoverReason,
    ) {
        state.bot = BotMemory::default();
        self.count_handover(intent.as_deref(), reason);
        self.publish(EventKind::MessageCreated, &state.conv, Some(note), None);
    }

    /// A hand-over to closed `team`: the bot keeps the conversation, records the team and the
    /// reason (the first reason stands), and tells the customer once that a person follows
    /// at opening.
    async fn hold_for_opening(
        &self,
        state: &mut State,
        mut mem: BotMemory,
        reason: HandoverReason,
        team: String,
    ) -> Result<(), Error> {
        let told = mem.waiting.as_ref().is_some_and(|w| w.told);
        let reason = mem
            .waiting
            .as_ref()
            .and_then(|w| w.reason)
            .unwrap_or(reason);
        mem.waiting = Some(Waiting {
            team: team.clone(),
            reason: Some(reason),
            told: true,
        });
        // The flow that led here is over; the note at opening still says what it learned.
        mem.flow = Flow::None;
        mem.failed_turns = 0;
        metrics::counter!(m::BOT_TURNS, "outcome" => "held").increment(1);
        if told {
            let mut batch = Batch::new();
            batch.put_bot_memory(&state.conv.id, &mem)?;
            self.ctx.store.commit(batch).await?;
            state.bot = mem;
            self.reschedule(state, false);
            return Ok(());
        }
        let text = self
            .ctx
            .policies()
            .team(&team)
            .and_then(|p| p.after_hours_reply.clone())
            .or_else(|| {
                self.ctx
                    .automation
                    .get()
                    .map(|a| a.closed_reply().to_string())
            })
            .unwrap_or_default();
        Box::pin(self.bot_send(state, mem, BotBody::Text(text), false)).await?;
        Ok(())
    }

    /// Counts a conversation leaving the bot for `reason` (by reason, and by intent).
    pub(super) fn count_handover(&self, intent: Option<&str>, reason: HandoverReason) {
        metrics::counter!(m::BOT_HANDOVERS, "reason" => reason.as_str()).increment(1);
        let label = self.intent_label(intent);
        metrics::counter!(m::BOT_INTENT_HANDOVERS, "intent" => label, "reason" => reason.as_str())
            .increment(1);
        self.count_cycle(intent, "handed_over");
    }

    /// Counts a bot cycle's end by its intent: `resolved` by the bot or `handed_over`.
    fn count_cycle(&self, intent: Option<&str>, outcome: &'static str) {
        let label = self.intent_label(intent);
        metrics::counter!(m::BOT_CYCLES, "intent" => label, "outcome" => outcome).increment(1);
    }

    fn intent_label(&self, intent: Option<&str>) -> String {
        self.ctx
            .automation
            .get()
            .map_or_else(|| "unknown".to_string(), |a| a.intent_label(intent))
    }
}

/// The conversation leaves the bot for people (the bot's hand-over, or a claim or transfer that
/// takes it from the bot, whose pending turn then finds it no longer its own): the bot's note
/// `text` appended to `next`, and in `batch` the note, the end of the bot's memory of the cycle
/// and the hand-over's report event (counted in the team the bot handled it for, `before`'s).
/// [`ConversationActor::left_bot`] follows the commit.
pub(super) fn leave_bot(
    before: &Conversation,
    next: &mut Conversation,
    text: String,
    now: Millis,
    batch: &mut Batch,
) -> Result<Message, Error> {
    let note = next.append_note(Author::Bot, text, now);
    batch.put_message(&note)?;
    batch.delete_bot_memory(&before.id);
    batch.put_report(&ReportEvent::of(before, now, None, ReportKind::BotHandover))?;
    Ok(note)
}
