//! The conversation actor: single writer of one conversation's state.
//!
//! Every command (inbound messages, status callbacks, claim, release, transfer, resolve, reply,
//! start, reaction, read receipt, note, send attempts and outcomes, wamid adoptions) is a message, handled one at a time. A
//! command from a caller first passes the visibility rule (`Conversation::check_access`, applied
//! once in `dispatch`). Each handler:
//! 1. checks the domain rules on the in-memory state;
//! 2. builds one atomic [`Batch`] with the new state, messages and index entries;
//! 3. awaits the group commit (durable, fsync'd when configured);
//! 4. only then updates memory, tells agents/teams/the outbox, publishes the event and replies.
//!
//! So a reply always describes durable state, a failed commit leaves memory unchanged, and a crash
//! between steps loses nothing that was acknowledged.
//!
//! Routing happens here too, so it is ordered with everything else that happens to the
//! conversation: on its first message and on reopen the policies in force place it (rules →
//! team, priority, labels; a closed team → its first open fallback), and while it waits in a
//! closed team the after-hours reply goes out once per closed period, durable in the same batch as
//! the message that triggered it. SLA clocks, `reassign_after` and the closing of a team with
//! fallbacks (what still waits moves on) are part of the conversation's state; after each change
//! the actor gives the timer service its next deadline, and a `Tick` re-checks them against the
//! clock, so deadlines survive passivation and restarts.
//!
//! Layout: this file holds the state, the messages, dispatch and what every handler shares
//! (persisting, publishing, keeping queues and agents in step); the handlers live by concern in
//! [`inbound`] (with [`quotes`]: replies and reactions), [`ownership`], [`outbound`],
//! [`start`] (the business starting it with a template), [`deadlines`] and [`media`]; the
//! automation bot's turns in [`bot`].

mod app;
mod bot;
mod csat;
mod deadlines;
mod inbound;
mod media;
mod outbound;
mod ownership;
mod quotes;
mod start;

use deadlines::record_sla;
use inbound::{count_billable, take_pricing};
use media::queue_fetch;
use outbound::{note_message, outbox_job};

use std::collections::HashSet;
use std::sync::Arc;

use super::recent::RecentOutbound;
use super::seen::SeenWamids;
use super::{count_change, Ctx, Reply, TeamMsg};
use crate::domain::hours::BusinessHours;
use crate::domain::message::Outgoing;
use crate::domain::policy::{Deadline, Policies};
use crate::domain::report::{AssignReason, ReportEvent, ReportKind, Span};
use crate::domain::routing::RouteInput;
use crate::domain::{
    Access, Assignment, Author, Caller, Conversation, ConversationStatus, CustomerIds,
    DeliveryStatus, Direction, DomainError, Escalation, IdentityChange, InboundMessage,
    InboundStatus, Message, MessageError, Millis, SlaKind, TransferTarget,
};
use crate::error::Error;
use crate::events::{Event, EventKind};
use crate::mailbox::{Handler, Mailbox, Runners};
use crate::metrics as m;
use crate::store::{Batch, FetchJob, OutboxJob, Payload, MAX_UNRECORDED};

/// What a media reply sends: the message kind (`image`, `audio`, …) and the media as shown.
#[derive(Debug, Clone)]
pub struct OutboundMedia {
    pub kind: String,
    pub info: crate::domain::message::MediaInfo,
}

pub struct ConversationActor {
    pub ctx: Arc<Ctx>,
}

pub struct State {
    conv: Conversation,
    /// Whether `conv` is already on disk (false for a brand-new conversation).
    persisted: bool,
    /// Messages committed since the record was last written
    /// (see [`ConversationActor::commit_inbound`]).
    unrecorded: u64,
    /// The wake-up time last given to the timer service.
    scheduled: Option<Millis>,
    /// Complete set of stored wamids, or None: check storage for every inbound message.
    seen: Option<SeenWamids>,
    /// Outbound messages with delivery still open, as last committed (see `actors::recent`).
    recent: RecentOutbound,
    /// What the bot learned in this conversation's current bot cycle, as last committed (the
    /// `bot_memory` column family; read at activation for a conversation the bot has).
    bot: bot::BotMemory,
}

impl State {
    /// A conversation nothing is stored of yet (its wamid set is complete: empty).
    pub fn new(conv: Conversation) -> Self {
        Self {
            conv,
            persisted: false,
            unrecorded: 0,
            scheduled: None,
            seen: Some(SeenWamids::default()),
            recent: RecentOutbound::default(),
            bot: bot::BotMemory::default(),
        }
    }

    /// With the bot's memory of the current cycle, as stored.
    pub fn with_bot_memory(mut self, memory: crate::automation::memory::BotMemory) -> Self {
        self.bot = memory;
        self
    }

    /// A conversation read from storage, `unrecorded` of its messages committed after its record.
    pub fn stored(conv: Conversation, unrecorded: u64, seen: Option<SeenWamids>) -> Self {
        Self {
            conv,
            persisted: true,
            unrecorded,
            scheduled: None,
            seen,
            recent: RecentOutbound::default(),
            bot: bot::BotMemory::default(),
        }
    }
}

/// What an inbound delivery did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundAck {
    pub stored: usize,
    pub duplicates: usize,
}

/// How a claim came about, which decides what it requires besides the caller's right to claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClaimKind {
    /// `POST …/claim`: any conversation the caller may claim, even a resolved one (a follow-up).
    Direct,
    /// Taken from the team's queue by the caller (`next`): only while still queued.
    Queued,
    /// The team's automatic assignment: only while still queued and the agent online.
    Auto,
}

pub enum ConversationMsg {
    Inbound {
        messages: Vec<InboundMessage>,
        reply: Reply<InboundAck>,
    },
    Status {
        seq: u64,
        update: InboundStatus,
        reply: Reply<bool>,
    },
    Claim {
        caller: Caller,
        reply: Reply<Conversation>,
    },
    /// A claim of a conversation the caller took from its team's queue (`next`): fails with
    /// `not_waiting` unless it is still queued (the queue learns of a claim, resolve or transfer
    /// only after it is durable, so it may hand out one that stopped waiting just before).
    ClaimQueued {
        caller: Caller,
        reply: Reply<Conversation>,
    },
    /// A team's automatic assignment to `agent`: a claim on the agent's behalf that fails with
    /// `capacity_reached` unless the agent is online at the moment its slot is taken (the team
    /// chose it from a snapshot; it may have gone offline since), and with `not_waiting` unless
    /// the conversation is still queued (as for `ClaimQueued`).
    Assign {
        agent: Caller,
        reply: Reply<Conversation>,
    },
    Release {
        caller: Caller,
        reply: Reply<Conversation>,
    },
    Resolve {
        caller: Caller,
        reply: Reply<Conversation>,
    },
    Transfer {
        caller: Caller,
        target: TransferTarget,
        note: Option<String>,
        reply: Reply<Conversation>,
    },
    Reply {
        caller: Caller,
        body: Outgoing,
        idempotency_key: Option<String>,
        /// A media message (its caption in `text`), sent by the outbox after uploading it.
        media: Option<OutboundMedia>,
        reply: Reply<Message>,
    },
    /// The business starts the conversation: the caller owns it (a new one, a resolved one
    /// reopened, an open one claimed) and `body` (a template) goes out, in one commit; see
    /// `Conversation::start`. Answers the conversation and the message; a repeated
    /// `idempotency_key` answers them again and sends nothing.
    Start {
        caller: Caller,
        body: Outgoing,
        idempotency_key: Option<String>,
        reply: Reply<(Conversation, Message)>,
    },
    /// The owner sets (`""`: removes) the business's reaction to message `message_id`;
    /// answers that message as it now stands.
    React {
        caller: Caller,
        message_id: String,
        emoji: String,
        reply: Reply<Message>,
    },
    /// The owner marks the customer's latest message read (with a typing indicator); answers
    /// its id, or None when there is none.
    MarkRead {
        caller: Caller,
        reply: Reply<Option<String>>,
    },
    Note {
        caller: Caller,
        text: String,
        reply: Reply<Message>,
    },
    /// The media fetcher stored (and verified) the media of inbound message `job.seq`: mark it
    /// downloaded, record it stored and drop the fetch from the queue, in one batch.
    MediaFetched {
        job: FetchJob,
        size: u64,
        sha256: String,
        reply: Reply<()>,
    },
    /// The outbox records on a job whether an attempt of it may be at Meta (`job.in_doubt`);
    /// answers false, writing nothing, when the message no longer waits for a send.
    SendAttempt { job: OutboxJob, reply: Reply<bool> },
    /// Answers whether this settled the message (false: it was settled already).
    SendOutcome {
        seq: u64,
        /// The wamid Meta gave it (None: accepted without one), or why it failed.
        outcome: Result<Option<String>, MessageError>,
        reply: Reply<bool>,
    },
    /// A status callback naming message `seq` (Meta echoes its id from
    /// `biz_opaque_callback_data`) for a wamid not on record: the message takes the wamid if it
    /// has none yet. Answers false when the callback is not this message's (then it is parked
    /// like any unknown status).
    Adopt {
        seq: u64,
        update: InboundStatus,
        reply: Reply<bool>,
    },
    /// The owner became unavailable: back to the queue of an auto-assigning team, with a note
    /// recording why (no-op if `from` no longer owns it or the team assigns manually). With
    /// `disabled` (an admin disabled the owner) it goes back whatever the team's policy.
    Reassign {
        from: String,
        reason: String,
        disabled: bool,
        reply: Reply<bool>,
    },
    /// Sent by the timer service: a deadline (SLA, `reassign_after`) may have fallen due.
    Tick { reply: Reply<()> },
    /// A `system` message moved the customer's ids (a new number, a new user id): the contact
    /// and its index entries move in one commit, if this conversation's contact has one of the
    /// `old` ids (the message's sender). Answers whether anything changed.
    ChangeIds {
        old: CustomerIds,
        /// The ids it moves, if it moves any.
        change: Option<IdentityChange>,
        /// The `system` message itself, shown in the conversation once the ids moved.
        notice: Box<InboundMessage>,
        reply: Reply<bool>,
    },
    /// The owner, or a supervisor of the team or an admin, hands the conversation back to the
    /// bot (its team must have automation on).
    HandBack {
        caller: Caller,
        reply: Reply<Conversation>,
    },
    /// The bot's turn, computed off the actor for the conversation as it was at `version`
    /// (its `next_seq` then): applied only if the bot still has the conversation and nothing
    /// was appended since, else dropped. Answers whether it was applied.
    BotTurn {
        version: u64,
        turn: crate::automation::Turn,
        /// The flow the bot's memory keeps once the turn is applied.
        flow: crate::automation::memory::Flow,
        reply: Reply<bool>,
    },
    /// Messages of the WhatsApp Business App (coexistence): the business's echoes, their edits
    /// and revokes, and imported chat history (see `app`). They start nothing.
    App {
        messages: Vec<crate::domain::inbound::AppMessage>,
        reply: Reply<InboundAck>,
    },
    /// The business's WhatsApp Business App names the customer with phone `phone` (`None`:
    /// removed from its contacts). Answers whether anything changed.
    Name {
        phone: String,
        name: Option<String>,
        reply: Reply<bool>,
    },
    /// Test-only: panics inside the handler, to exercise supervision.
    #[cfg(test)]
    Crash,
}

impl ConversationMsg {
    /// The caller of a command and what it asks, for [`Conversation::check_access`]; None for
    /// what the broker itself does. Exhaustive on purpose: a new command must say which it is.
    fn access(&self) -> Option<(&Caller, Access)> {
        match self {
            Self::Claim { caller, .. } | Self::ClaimQueued { caller, .. } => {
                Some((caller, Access::Claim))
            }
            Self::Assign { agent, .. } => Some((agent, Access::Claim)),
            Self::Release { caller, .. }
            | Self::Resolve { caller, .. }
            | Self::Transfer { caller, .. }
            | Self::Reply { caller, .. }
            | Self::React { caller, .. }
            | Self::MarkRead { caller, .. }
            | Self::HandBack { caller, .. } => Some((caller, Access::Own)),
            Self::Note { caller, .. } => Some((caller, Access::Write)),
            // Decided by `Conversation::start` (a new conversation is nobody's yet).
            Self::Start { .. } => None,
            Self::Inbound { .. }
            | Self::Status { .. }
            | Self::SendAttempt { .. }
            | Self::SendOutcome { .. }
            | Self::MediaFetched { .. }
            | Self::Adopt { .. }
            | Self::Reassign { .. }
            | Self::Tick { .. }
            | Self::BotTurn { .. }
            | Self::App { .. }
            | Self::Name { .. }
            | Self::ChangeIds { .. } => None,
            #[cfg(test)]
            Self::Crash => None,
        }
    }

    /// Answers a command from a caller with `e` without handling it.
    fn refuse(self, e: Error) {
        match self {
            Self::Claim { reply, .. }
            | Self::ClaimQueued { reply, .. }
            | Self::Assign { reply, .. }
            | Self::Release { reply, .. }
            | Self::Resolve { reply, .. }
            | Self::Transfer { reply, .. }
            | Self::HandBack { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Self::Reply { reply, .. } | Self::Note { reply, .. } | Self::React { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Self::MarkRead { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Self::Start { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Self::Inbound { .. }
            | Self::Status { .. }
            | Self::SendAttempt { .. }
            | Self::SendOutcome { .. }
            | Self::MediaFetched { .. }
            | Self::Adopt { .. }
            | Self::Reassign { .. }
            | Self::Tick { .. }
            | Self::BotTurn { .. }
            | Self::App { .. }
            | Self::Name { .. }
            | Self::ChangeIds { .. } => {}
            #[cfg(test)]
            Self::Crash => {}
        }
    }
}

impl Handler for ConversationActor {
    type Msg = ConversationMsg;
    type State = State;

    async fn handle(&self, state: &mut State, msg: ConversationMsg) {
        self.dispatch(state, msg).await
    }

    fn runners(&self) -> &Runners {
        &self.ctx.runners
    }

    /// Restarts a conversation whose handler panicked from its last durable state — the state it
    /// would have after a crash of the whole process — so one bad message cannot leave it without
    /// its writer.
    fn failed(&self, actor: &Arc<Mailbox<Self>>, panic: String) {
        self.ctx.forget(actor);
        metrics::counter!(m::ACTOR_RESTARTS).increment(1);
        let id = actor.key().clone();
        tracing::error!(conversation = %id, panic = %panic, "conversation actor failed; restarting from storage");
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            if let Err(e) = ctx.activate(&id, None).await {
                tracing::error!(conversation = %id, error = %e, "restart failed; next command re-activates");
            }
        });
    }
}

impl ConversationActor {
    /// Each handler's future is boxed: the runner task holds only the one in progress, and a
    /// runner is spawned (its future copied) per burst of messages.
    async fn dispatch(&self, state: &mut State, msg: ConversationMsg) {
        // Every command from a caller first passes the visibility rule, here, so no handler can
        // forget it: a conversation the caller may not address is not found, as a read says.
        if let Some((caller, access)) = msg.access() {
            if let Err(e) = state.conv.check_access(caller, access) {
                if let ConversationMsg::Reply {
                    caller,
                    idempotency_key: Some(key),
                    reply,
                    ..
                } = msg
                {
                    // The contract's idempotency holds even so: a retry of a reply the caller
                    // wrote gets its answer (it learns nothing it did not write); else not found.
                    let r = match self.keyed(state, &key).await {
                        Ok(Some(m)) if m.author.is_agent(&caller.id) => Ok(m),
                        Ok(_) => Err(e.into()),
                        Err(err) => Err(err),
                    };
                    let _ = reply.send(r);
                    return;
                }
                msg.refuse(e.into());
                return;
            }
        }
        match msg {
            ConversationMsg::Inbound { messages, reply } => {
                let _ = reply.send(Box::pin(self.inbound(state, messages)).await);
            }
            ConversationMsg::Status { seq, update, reply } => {
                let _ = reply.send(Box::pin(self.status(state, seq, update)).await);
            }
            ConversationMsg::Claim { caller, reply } => {
                let _ = reply.send(Box::pin(self.claim(state, &caller, ClaimKind::Direct)).await);
            }
            ConversationMsg::ClaimQueued { caller, reply } => {
                let _ = reply.send(Box::pin(self.claim(state, &caller, ClaimKind::Queued)).await);
            }
            ConversationMsg::Assign { agent, reply } => {
                let _ = reply.send(Box::pin(self.claim(state, &agent, ClaimKind::Auto)).await);
            }
            ConversationMsg::Release { caller, reply } => {
                let _ = reply.send(Box::pin(self.release(state, &caller)).await);
            }
            ConversationMsg::Resolve { caller, reply } => {
                let _ = reply.send(Box::pin(self.resolve(state, &caller)).await);
            }
            ConversationMsg::Transfer {
                caller,
                target,
                note,
                reply,
            } => {
                let _ = reply.send(Box::pin(self.transfer(state, &caller, target, note)).await);
            }
            ConversationMsg::Reply {
                caller,
                body,
                idempotency_key,
                media,
                reply,
            } => {
                let _ = reply
                    .send(Box::pin(self.reply(state, &caller, body, idempotency_key, media)).await);
            }
            ConversationMsg::Start {
                caller,
                body,
                idempotency_key,
                reply,
            } => {
                let _ =
                    reply.send(Box::pin(self.start(state, &caller, body, idempotency_key)).await);
            }
            ConversationMsg::React {
                caller,
                message_id,
                emoji,
                reply,
            } => {
                let _ = reply
                    .send(Box::pin(self.agent_react(state, &caller, &message_id, emoji)).await);
            }
            ConversationMsg::MarkRead { caller, reply } => {
                let _ = reply.send(Box::pin(self.mark_read(state, &caller)).await);
            }
            ConversationMsg::Note {
                caller,
                text,
                reply,
            } => {
                let _ = reply.send(Box::pin(self.note(state, &caller, text)).await);
            }
            ConversationMsg::MediaFetched {
                job,
                size,
                sha256,
                reply,
            } => {
                let _ = reply.send(Box::pin(self.media_fetched(state, job, size, sha256)).await);
            }
            ConversationMsg::SendAttempt { job, reply } => {
                let _ = reply.send(Box::pin(self.send_attempt(state, job)).await);
            }
            ConversationMsg::SendOutcome {
                seq,
                outcome,
                reply,
            } => {
                let _ = reply.send(Box::pin(self.send_outcome(state, seq, outcome)).await);
            }
            ConversationMsg::Adopt { seq, update, reply } => {
                let _ = reply.send(Box::pin(self.adopt(state, seq, update)).await);
            }
            ConversationMsg::Reassign {
                from,
                reason,
                disabled,
                reply,
            } => {
                let why = if disabled {
                    Reassignment::Disabled
                } else {
                    Reassignment::Offline
                };
                let r = self.reassign(state, &from, reason, why).await;
                let _ = reply.send(r);
            }
            ConversationMsg::Tick { reply } => {
                let _ = reply.send(Box::pin(self.tick(state)).await);
            }
            ConversationMsg::ChangeIds {
                old,
                change,
                notice,
                reply,
            } => {
                let _ = reply.send(Box::pin(self.change_ids(state, &old, change, notice)).await);
            }
            ConversationMsg::HandBack { caller, reply } => {
                let _ = reply.send(Box::pin(self.hand_back(state, &caller)).await);
            }
            ConversationMsg::BotTurn {
                version,
                turn,
                flow,
                reply,
            } => {
                let _ = reply.send(Box::pin(self.bot_turn(state, version, turn, flow)).await);
            }
            ConversationMsg::App { messages, reply } => {
                let _ = reply.send(Box::pin(self.app_messages(state, messages)).await);
            }
            ConversationMsg::Name { phone, name, reply } => {
                let _ = reply.send(Box::pin(self.app_name(state, &phone, name)).await);
            }
            #[cfg(test)]
            ConversationMsg::Crash => panic!("injected crash"),
        }
    }

    /// Commits `batch` together with the conversation's new state; on success the new state
    /// becomes the actor's, on failure nothing changes.
    async fn persist(
        &self,
        state: &mut State,
        next: Conversation,
        batch: Batch,
    ) -> Result<(), Error> {
        self.persist_guarded(state, next, batch).await.map(|_| ())
    }

    /// [`Self::persist`] of a batch that may be guarded by an idempotency key
    /// ([`Batch::guard_idempotency`]): `Some(seq)` when the key was in use already, so nothing was
    /// written and nothing changed (`seq` is the message the key names).
    async fn persist_guarded(
        &self,
        state: &mut State,
        mut next: Conversation,
        mut batch: Batch,
    ) -> Result<Option<u64>, Error> {
        // Every record this version writes has its contact indexed (a record from before
        // contacts existed gets its index entries in this batch, see `Batch::put_conversation`).
        next.contact.indexed = true;
        let before = state.persisted.then_some(&state.conv);
        batch.put_conversation(before, &next)?;
        if let Some(seq) = self.ctx.store.commit_guarded(batch).await? {
            return Ok(Some(seq));
        }
        count_change(before, &next);
        // Ids this contact let go (a new number or user id) no longer lead here.
        let (was, is) = (&state.conv.contact, &next.contact);
        fn gone<'a>(old: &'a Option<String>, new: &Option<String>) -> Option<&'a str> {
            old.as_deref().filter(|o| Some(*o) != new.as_deref())
        }
        let (phone, user_id) = (gone(&was.phone, &is.phone), gone(&was.user_id, &is.user_id));
        if phone.is_some() || user_id.is_some() {
            self.ctx.contacts.forget(&next.number, phone, user_id);
        }
        state.conv = next;
        state.persisted = true;
        state.unrecorded = 0;
        self.reschedule(state, false);
        Ok(None)
    }

    /// [`Self::persist`] for inbound messages, without rewriting the record when nothing but
    /// what follows from the new messages changed (their sequence numbers and times): one of the
    /// three memtable inserts each message costs the group-commit writer. Storage folds such
    /// messages back into the record whenever it reads it, and the record is written at least
    /// every [`MAX_UNRECORDED`] messages so that fold stays short.
    async fn commit_inbound(
        &self,
        state: &mut State,
        next: Conversation,
        created: &[Message],
        batch: Batch,
    ) -> Result<(), Error> {
        let unrecorded = state.unrecorded + created.len() as u64;
        if !state.persisted
            || !state.conv.contact.indexed
            || unrecorded > MAX_UNRECORDED
            || !state.conv.only_absorbed(&next, created)
        {
            return self.persist(state, next, batch).await;
        }
        self.ctx.store.commit(batch).await?;
        state.conv = next;
        state.unrecorded = unrecorded;
        self.reschedule(state, false);
        Ok(())
    }

    /// Tells the timer service when this conversation's next deadline falls due (only when it
    /// changed, unless `force`: after a tick the service has forgotten it).
    fn reschedule(&self, state: &mut State, force: bool) {
        let now = self.ctx.now();
        let policies = self.ctx.policies();
        let next = policies.next_deadline(&state.conv, now);
        // A conversation the bot holds for a closed team wakes at the team's opening.
        let next = match (next, self.bot_wake(state, &policies, now)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if force || next != state.scheduled {
            state.scheduled = next;
            self.ctx.schedule(&state.conv.id, next);
        }
    }

    fn publish(
        &self,
        kind: EventKind,
        conv: &Conversation,
        message: Option<Message>,
        previous: Option<&Conversation>,
    ) {
        if !self.ctx.bus.has_subscribers() {
            return;
        }
        self.ctx.bus.publish(Event {
            kind,
            conversation: conv.clone(),
            message,
            previous_team: previous.map(|p| p.team().to_string()),
            previous_status: previous.map(|p| p.status),
            previous_assignee: previous.and_then(|p| p.assignee.clone()),
            sla: None,
            rendered: Default::default(),
        });
    }

    /// `[from, to)` on the wall clock and in `team`'s business hours (for reporting events).
    fn span(&self, team: &str, from: Millis, to: Millis) -> Span {
        let policies = self.ctx.policies();
        match policies.team(team) {
            Some(p) => Span::measure(&p.hours, from, to),
            None => Span::measure(&BusinessHours::always_open(), from, to),
        }
    }

    fn team_cast(&self, team: &str, msg: TeamMsg) {
        if let Some(t) = self.ctx.team(team) {
            let _ = t.cast(msg);
        }
    }

    /// Keeps team queues in step with a status/team change.
    fn sync_queues(&self, before: Option<&Conversation>, after: &Conversation) {
        self.sync_queues_avoiding(before, after, None);
    }

    /// As [`Self::sync_queues`]; a conversation requeued because `avoid` lost it is not handed
    /// straight back to that agent.
    fn sync_queues_avoiding(
        &self,
        before: Option<&Conversation>,
        after: &Conversation,
        avoid: Option<&str>,
    ) {
        let was = before.filter(|b| b.status == crate::domain::ConversationStatus::Queued);
        let is = after.status == crate::domain::ConversationStatus::Queued;
        if let Some(b) = was {
            if !is || b.team() != after.team() {
                self.team_cast(
                    b.team(),
                    TeamMsg::Remove {
                        conversation: b.id.clone(),
                    },
                );
            }
        }
        if is
            && (was.is_none()
                || was.is_some_and(|b| {
                    b.team() != after.team()
                        || b.queued_at != after.queued_at
                        || b.priority() != after.priority()
                }))
        {
            self.team_cast(
                after.team(),
                TeamMsg::Enqueue {
                    conversation: after.id.clone(),
                    at: after.queued_at,
                    priority: after.priority(),
                    avoid: avoid.map(str::to_string),
                },
            );
        }
    }

    /// After a durable move to another team or owner: the team queues follow and watchers
    /// learn of it (`conversation.transferred`).
    fn transferred(&self, before: &Conversation, conv: &Conversation) {
        self.sync_queues(Some(before), conv);
        self.publish(EventKind::ConversationTransferred, conv, None, Some(before));
    }

    fn free_agent(&self, agent: &str, conversation: &str) {
        let freed = self
            .ctx
            .agent_slots(agent)
            .is_some_and(|slots| slots.free(conversation));
        if freed {
            if let Some(a) = self.ctx.agent(agent) {
                let _ = a.cast(super::AgentMsg::Freed);
            }
        }
    }

    /// Takes a slot of `agent` for `conversation`; with `online_only`, only while it is online.
    fn reserve_agent(
        &self,
        agent: &str,
        conversation: &str,
        online_only: bool,
    ) -> Result<(), Error> {
        let Some(slots) = self.ctx.agent_slots(agent) else {
            return Err(DomainError::NotFound.into());
        };
        if slots.reserve(conversation, online_only) {
            Ok(())
        } else {
            Err(DomainError::CapacityReached.into())
        }
    }
}

/// Why a conversation left its owner (the `reason` label of `switchboard_assignments_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reassignment {
    Offline,
    NoAnswer,
    SlaEscalation,
    /// An admin disabled the owner.
    Disabled,
}

impl Reassignment {
    fn label(self) -> &'static str {
        match self {
            Self::Offline => "assignee_offline",
            Self::NoAnswer => "no_answer",
            Self::SlaEscalation => "sla_escalation",
            Self::Disabled => "agent_disabled",
        }
    }
}
