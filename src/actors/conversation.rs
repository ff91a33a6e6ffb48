//! The conversation actor: single writer of one conversation's state.
//!
//! Every command (inbound messages, status callbacks, claim, release, transfer, resolve, reply,
//! note, send attempts and outcomes, wamid adoptions) is a message, handled one at a time. A
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

use std::collections::HashSet;
use std::sync::Arc;

use super::recent::RecentOutbound;
use super::seen::SeenWamids;
use super::{count_change, Ctx, Reply, TeamMsg};
use crate::domain::policy::{Deadline, Policies};
use crate::domain::routing::RouteInput;
use crate::domain::{
    Access, Assignment, Author, Caller, Conversation, ConversationStatus, DeliveryStatus,
    Direction, DomainError, Escalation, InboundMessage, InboundStatus, Message, MessageError,
    Millis, SlaKind, TransferTarget,
};
use crate::error::Error;
use crate::events::{Event, EventKind};
use crate::mailbox::{Handler, Mailbox, Runners};
use crate::metrics as m;
use crate::store::{Batch, OutboxJob, MAX_UNRECORDED};

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
        }
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
        text: String,
        idempotency_key: Option<String>,
        reply: Reply<Message>,
    },
    Note {
        caller: Caller,
        text: String,
        reply: Reply<Message>,
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
    /// recording why (no-op if `from` no longer owns it or the team assigns manually).
    Reassign {
        from: String,
        reason: String,
        reply: Reply<bool>,
    },
    /// Sent by the timer service: a deadline (SLA, `reassign_after`) may have fallen due.
    Tick { reply: Reply<()> },
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
            | Self::Reply { caller, .. } => Some((caller, Access::Own)),
            Self::Note { caller, .. } => Some((caller, Access::Write)),
            Self::Inbound { .. }
            | Self::Status { .. }
            | Self::SendAttempt { .. }
            | Self::SendOutcome { .. }
            | Self::Adopt { .. }
            | Self::Reassign { .. }
            | Self::Tick { .. } => None,
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
            | Self::Transfer { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Self::Reply { reply, .. } | Self::Note { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Self::Inbound { .. }
            | Self::Status { .. }
            | Self::SendAttempt { .. }
            | Self::SendOutcome { .. }
            | Self::Adopt { .. }
            | Self::Reassign { .. }
            | Self::Tick { .. } => {}
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
                text,
                idempotency_key,
                reply,
            } => {
                let _ =
                    reply.send(Box::pin(self.reply(state, &caller, text, idempotency_key)).await);
            }
            ConversationMsg::Note {
                caller,
                text,
                reply,
            } => {
                let _ = reply.send(Box::pin(self.note(state, &caller, text)).await);
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
                reply,
            } => {
                let r = self
                    .reassign(state, &from, reason, Reassignment::Offline)
                    .await;
                let _ = reply.send(r);
            }
            ConversationMsg::Tick { reply } => {
                let _ = reply.send(Box::pin(self.tick(state)).await);
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
        mut batch: Batch,
    ) -> Result<(), Error> {
        let before = state.persisted.then_some(&state.conv);
        batch.put_conversation(before, &next)?;
        self.ctx.store.commit(batch).await?;
        count_change(before, &next);
        state.conv = next;
        state.persisted = true;
        state.unrecorded = 0;
        self.reschedule(state, false);
        Ok(())
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
        let next = self
            .ctx
            .policies()
            .next_deadline(&state.conv, self.ctx.now());
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

    /// Which of `items` are already stored (by wamid). Storage is read only when the actor has no
    /// complete set: never for a conversation never persisted (its record is written atomically
    /// with its first message) nor for a live one with a complete set, for every item otherwise.
    async fn stored_wamids(
        &self,
        state: &State,
        items: &[InboundMessage],
    ) -> Result<Vec<bool>, Error> {
        if !state.persisted {
            return Ok(vec![false; items.len()]);
        }
        if let Some(seen) = &state.seen {
            return Ok(items.iter().map(|m| seen.contains(&m.wamid)).collect());
        }
        let found = self
            .ctx
            .store
            .lookup_wamids(items.iter().map(|m| m.wamid.clone()).collect())
            .await?;
        Ok(found.into_iter().map(|r| r.is_some()).collect())
    }

    async fn inbound(
        &self,
        state: &mut State,
        items: Vec<InboundMessage>,
    ) -> Result<InboundAck, Error> {
        let known = self.stored_wamids(state, &items).await?;
        let now = self.ctx.now();
        // `state.conv` stays as it was until the commit succeeds: it is the "before".
        let mut next = state.conv.clone();
        let is_new = !state.persisted;
        if is_new {
            // Its last message time is its first message's (below), not the moment it was made.
            next.last_message_at = Millis::MIN;
        }
        let policies = self.ctx.policies();
        let default_team = self.ctx.default_team(&next.number);
        // Routing runs on a conversation's first message and on reopen, on the first message
        // that is not a redelivery.
        let placement = if is_new || state.conv.status == ConversationStatus::Resolved {
            items
                .iter()
                .zip(&known)
                .find(|(_, stored)| !**stored)
                .map(|(first, _)| {
                    let input = RouteInput {
                        number: &next.number,
                        customer: &next.customer,
                        text: first.text.as_deref(),
                        message_type: &first.kind,
                        labels: next.labels(),
                        intent: None,
                    };
                    policies.place(&input, &default_team, now)
                })
        } else {
            None
        };
        let reopen_team = match &placement {
            Some(p) => p.team.clone(),
            None => default_team,
        };
        let mut seen = HashSet::new();
        let mut batch = Batch::new();
        let mut created = Vec::new();
        let mut ack = InboundAck::default();
        let mut reopened = false;
        for (item, known) in items.into_iter().zip(known) {
            if known || !seen.insert(item.wamid.clone()) {
                ack.duplicates += 1;
                continue;
            }
            reopened |= next.on_inbound(
                item.customer_name.as_deref(),
                item.sent_at,
                now,
                &reopen_team,
            );
            let msg = Message {
                conversation_id: next.id.clone(),
                seq: next.take_seq(),
                direction: Direction::Inbound,
                kind: item.kind,
                text: item.text,
                wamid: Some(item.wamid),
                status: Some(DeliveryStatus::Received),
                author: Author::Customer(item.customer),
                at: item.sent_at,
                error: None,
                idempotency_key: None,
                raw: Some(item.raw),
            };
            batch.put_message(&msg)?;
            created.push(msg);
        }
        if created.is_empty() {
            metrics::counter!(m::INBOUND_DUPLICATES).increment(ack.duplicates as u64);
            return Ok(ack);
        }
        // Routing places a new conversation (still in its seed's team: nothing above reads the
        // team) and a reopened one (already in `reopen_team`, the placement's) before the
        // after-hours check reads the team.
        if let Some(p) = &placement {
            next.route(p);
        }
        let mut auto_reply = None;
        if let Some((text, period)) = policies.after_hours_reply(&next, now) {
            let msg = next.send_after_hours_reply(text, period, now);
            let job = outbox_job(&next, &msg);
            batch.put_message(&msg)?;
            batch.put_outbox(&job)?;
            auto_reply = Some((msg, job));
        }
        let before = reopened.then(|| state.conv.clone());
        // An after-hours reply changes the record (and takes a sequence number `created` does
        // not show), so it is always written with one.
        let committed = self.commit_inbound(state, next, &created, batch).await;
        if let Err(e) = committed {
            // A failed commit may still have reached the disk; only storage knows now.
            state.seen = None;
            return Err(e);
        }
        if let Some((msg, _)) = &auto_reply {
            state.recent.remember(msg);
        }
        if let Some(seen) = &mut state.seen {
            for w in created.iter().filter_map(|m| m.wamid.as_deref()) {
                seen.insert(w);
            }
        }
        if let Some(p) = &placement {
            let rule = p.rule.clone().unwrap_or_else(|| "default".into());
            metrics::counter!(m::ROUTED, "rule" => rule, "team" => p.team.clone()).increment(1);
            if let Some(from) = &p.fell_back_from {
                tracing::debug!(conversation = %state.conv.id, %from, to = %p.team, "team closed; routed to fallback");
            }
        }
        ack.stored = created.len();
        metrics::counter!(m::INBOUND_MESSAGES).increment(ack.stored as u64);
        if ack.duplicates > 0 {
            metrics::counter!(m::INBOUND_DUPLICATES).increment(ack.duplicates as u64);
        }
        let conv = &state.conv;
        if is_new {
            self.sync_queues(None, conv);
            self.publish(EventKind::ConversationCreated, conv, None, None);
        } else if reopened {
            self.sync_queues(before.as_ref(), conv);
            self.publish(EventKind::ConversationReopened, conv, None, before.as_ref());
        }
        for msg in created {
            self.publish(EventKind::MessageCreated, conv, Some(msg), None);
        }
        if let Some((msg, job)) = auto_reply {
            metrics::counter!(m::OUTBOUND_MESSAGES, "outcome" => "queued").increment(1);
            if let Some(outbox) = self.ctx.outbox.get() {
                outbox.enqueue(job);
            }
            self.publish(EventKind::MessageCreated, &state.conv, Some(msg), None);
        }
        Ok(ack)
    }

    /// Message `seq` as last committed: the kept copy of an open outbound message, else storage.
    /// The reply stored under idempotency key `key` in this conversation, if any.
    async fn keyed(&self, state: &State, key: &str) -> Result<Option<Message>, Error> {
        match self.ctx.store.idempotent_seq(&state.conv.id, key).await? {
            Some(seq) => self.message(state, seq).await,
            None => Ok(None),
        }
    }

    async fn message(&self, state: &State, seq: u64) -> Result<Option<Message>, Error> {
        if let Some(m) = state.recent.get(seq) {
            return Ok(Some(m.clone()));
        }
        Ok(self.ctx.store.get_message(&state.conv.id, seq).await?)
    }

    async fn status(
        &self,
        state: &mut State,
        seq: u64,
        update: InboundStatus,
    ) -> Result<bool, Error> {
        // The callback is kept whole, applied or not, in the commit that settles it.
        let mut batch = Batch::new();
        batch.put_status_log(&update.wamid, update.status, update.at, &update.raw);
        let Some(mut msg) = self.message(state, seq).await? else {
            self.ctx.store.commit(batch).await?;
            return Ok(false);
        };
        let changed = msg.apply_status(update.status, update.error);
        // A status may have been parked as an orphan while the send was in flight; this one
        // supersedes or equals it (both came through the same forward-only rule).
        batch.delete_orphan_status(&update.wamid);
        if changed {
            batch.put_message(&msg)?;
            state.recent.forget(seq);
        }
        self.ctx.store.commit(batch).await?;
        if changed {
            state.recent.remember(&msg);
        }
        metrics::counter!(m::STATUS_UPDATES, "outcome" => if changed { "applied" } else { "stale" })
            .increment(1);
        if changed {
            self.publish(EventKind::MessageStatus, &state.conv, Some(msg), None);
        }
        Ok(changed)
    }

    /// A claim by `caller` (or a team's assignment to it); agents' claims are counted by
    /// outcome, automatic assignments by `switchboard_assignments_total` instead.
    async fn claim(
        &self,
        state: &mut State,
        caller: &Caller,
        kind: ClaimKind,
    ) -> Result<Conversation, Error> {
        let r = self.take(state, caller, kind).await;
        match (&r, kind) {
            (_, ClaimKind::Auto) => {}
            (Ok(_), _) => self.ctx.claims_won.increment(1),
            (Err(e), _) => metrics::counter!(m::CLAIMS, "outcome" => e.code()).increment(1),
        }
        r
    }

    async fn take(
        &self,
        state: &mut State,
        caller: &Caller,
        kind: ClaimKind,
    ) -> Result<Conversation, Error> {
        if kind != ClaimKind::Direct {
            state.conv.check_waiting()?;
        }
        if !state.conv.check_claim(caller)? {
            return Ok(state.conv.clone());
        }
        self.reserve_agent(&caller.id, &state.conv.id, kind == ClaimKind::Auto)?;
        let before = state.conv.clone();
        let mut next = before.clone();
        next.assign(&caller.id, self.ctx.now());
        if let Err(e) = self.persist(state, next, Batch::new()).await {
            self.free_agent(&caller.id, &before.id);
            return Err(e);
        }
        self.sync_queues(Some(&before), &state.conv);
        self.publish(
            EventKind::ConversationClaimed,
            &state.conv,
            None,
            Some(&before),
        );
        Ok(state.conv.clone())
    }

    /// After a durable release (by the owner or a hand-back): the owner's slot, the team queue
    /// and the event.
    fn released(&self, state: &State, before: &Conversation, owner: &str, avoid: bool) {
        self.free_agent(owner, &before.id);
        self.sync_queues_avoiding(Some(before), &state.conv, avoid.then_some(owner));
        self.publish(
            EventKind::ConversationReleased,
            &state.conv,
            None,
            Some(before),
        );
    }

    async fn release(&self, state: &mut State, caller: &Caller) -> Result<Conversation, Error> {
        let before = state.conv.clone();
        let mut next = before.clone();
        let owner = next.release(caller, self.ctx.now())?;
        self.persist(state, next, Batch::new()).await?;
        self.released(state, &before, &owner, false);
        Ok(state.conv.clone())
    }

    async fn resolve(&self, state: &mut State, caller: &Caller) -> Result<Conversation, Error> {
        let before = state.conv.clone();
        let mut next = before.clone();
        let freed = next.resolve(caller)?;
        if next == before {
            return Ok(before);
        }
        let met = self
            .ctx
            .policies()
            .sla_met(&before, SlaKind::Resolution, self.ctx.now());
        self.persist(state, next, Batch::new()).await?;
        if let Some(met) = met {
            record_sla(state.conv.team(), SlaKind::Resolution, met);
        }
        if let Some(owner) = freed {
            self.free_agent(&owner, &before.id);
        }
        self.sync_queues(Some(&before), &state.conv);
        self.publish(
            EventKind::ConversationResolved,
            &state.conv,
            None,
            Some(&before),
        );
        Ok(state.conv.clone())
    }

    async fn transfer(
        &self,
        state: &mut State,
        caller: &Caller,
        target: TransferTarget,
        note: Option<String>,
    ) -> Result<Conversation, Error> {
        let old_owner = state.conv.check_transfer(caller)?;
        let now = self.ctx.now();
        let new_owner = match &target {
            TransferTarget::Team(team) if !self.ctx.config.team_exists(team) => {
                return Err(DomainError::NotFound.into())
            }
            TransferTarget::Team(_) => None,
            TransferTarget::Agent { id, .. } => {
                if old_owner.as_deref() != Some(id.as_str()) {
                    self.reserve_agent(id, &state.conv.id, false)?;
                }
                Some(id.clone())
            }
        };
        let before = state.conv.clone();
        let mut next = before.clone();
        next.transfer(&target, now);
        let mut batch = Batch::new();
        let mut note_msg = None;
        if let Some(text) = note.filter(|t| !t.trim().is_empty()) {
            let msg = note_message(&mut next, caller, text, now);
            batch.put_message(&msg)?;
            note_msg = Some(msg);
        }
        if let Err(e) = self.persist(state, next, batch).await {
            if let Some(n) = new_owner.filter(|n| Some(n) != old_owner.as_ref()) {
                self.free_agent(&n, &before.id);
            }
            return Err(e);
        }
        if let Some(o) = old_owner.filter(|o| Some(o) != new_owner.as_ref()) {
            self.free_agent(&o, &before.id);
        }
        self.transferred(&before, &state.conv);
        if let Some(msg) = note_msg {
            self.publish(EventKind::MessageCreated, &state.conv, Some(msg), None);
        }
        Ok(state.conv.clone())
    }

    async fn reply(
        &self,
        state: &mut State,
        caller: &Caller,
        text: String,
        idempotency_key: Option<String>,
    ) -> Result<Message, Error> {
        let id = state.conv.id.clone();
        let now = self.ctx.now();
        if let Some(key) = &idempotency_key {
            if let Some(msg) = self.keyed(state, key).await? {
                // A retry gets its original answer; anyone else learns nothing of a message
                // they did not write.
                if msg.author.is_agent(&caller.id) {
                    return Ok(msg);
                }
                state.conv.check_reply(caller, now)?;
                return Err(DomainError::Invalid(
                    "idempotency_key was already used in this conversation by someone else".into(),
                )
                .into());
            }
        }
        state.conv.check_reply(caller, now)?;
        if self.ctx.config.number(&state.conv.number).is_none() {
            // Its webhooks are kept, but no outbox sends from a number missing from the config:
            // a 202 here would leave the reply pending forever.
            return Err(DomainError::Invalid(format!(
                "number {} is not in [[numbers]]; nothing can be sent from it",
                state.conv.number
            ))
            .into());
        }
        let mut next = state.conv.clone();
        // Settle the response clocks this reply answers; a late reply whose deadline the timer
        // has not reported yet is a miss, reported here once.
        let policies = self.ctx.policies();
        let settled: Vec<(SlaKind, bool)> = [SlaKind::FirstResponse, SlaKind::NextResponse]
            .into_iter()
            .filter_map(|kind| policies.sla_met(&next, kind, now).map(|met| (kind, met)))
            .collect();
        next.on_human_reply(now);
        let (msg, job) =
            outbound_message(&mut next, &caller.id, text, idempotency_key.clone(), now);
        let seq = msg.seq;
        let mut batch = Batch::new();
        batch.put_message(&msg)?;
        batch.put_outbox(&job)?;
        if let Some(key) = &idempotency_key {
            batch.put_idempotency(&id, key, seq);
        }
        self.persist(state, next, batch).await?;
        state.recent.remember(&msg);
        for (kind, met) in settled {
            record_sla(state.conv.team(), kind, met);
        }
        metrics::counter!(m::OUTBOUND_MESSAGES, "outcome" => "queued").increment(1);
        if let Some(outbox) = self.ctx.outbox.get() {
            outbox.enqueue(job);
        }
        self.publish(
            EventKind::MessageCreated,
            &state.conv,
            Some(msg.clone()),
            None,
        );
        Ok(msg)
    }

    async fn note(
        &self,
        state: &mut State,
        caller: &Caller,
        text: String,
    ) -> Result<Message, Error> {
        let mut next = state.conv.clone();
        let msg = note_message(&mut next, caller, text, self.ctx.now());
        let mut batch = Batch::new();
        batch.put_message(&msg)?;
        self.persist(state, next, batch).await?;
        self.publish(
            EventKind::MessageCreated,
            &state.conv,
            Some(msg.clone()),
            None,
        );
        Ok(msg)
    }

    /// Takes the conversation from `from` back to its team's queue, with a system note saying
    /// why. An owner going offline only loses conversations of auto-assigning teams (in a manual
    /// team nobody would pick them up sooner); deadlines apply to every team that sets them.
    async fn reassign(
        &self,
        state: &mut State,
        from: &str,
        reason: String,
        why: Reassignment,
    ) -> Result<bool, Error> {
        let manual = self.ctx.policies().assignment(state.conv.team()) == Assignment::Manual;
        if manual && why == Reassignment::Offline {
            return Ok(false);
        }
        let before = state.conv.clone();
        let mut next = before.clone();
        let now = self.ctx.now();
        if !next.unassign(from, now) {
            return Ok(false);
        }
        let note = next.append_note(
            Author::System,
            format!("reassigned from {from}: {reason}"),
            now,
        );
        let mut batch = Batch::new();
        batch.put_message(&note)?;
        self.persist(state, next, batch).await?;
        metrics::counter!(m::ASSIGNMENTS, "team" => state.conv.team().to_string(), "reason" => why.label())
            .increment(1);
        self.released(state, &before, from, true);
        self.publish(EventKind::MessageCreated, &state.conv, Some(note), None);
        Ok(true)
    }

    /// Handles every deadline that has fallen due, then tells the timer service the next one.
    async fn tick(&self, state: &mut State) -> Result<(), Error> {
        let now = self.ctx.now();
        let policies = self.ctx.policies();
        for due in policies.due(&state.conv, now) {
            match due {
                Deadline::Sla(kind) => self.breach(state, &policies, kind).await?,
                Deadline::Reassign => {
                    if let Some(owner) = state.conv.assignee.clone() {
                        let reason = "did not answer the customer in time".to_string();
                        self.reassign(state, &owner, reason, Reassignment::NoAnswer)
                            .await?;
                    }
                }
                Deadline::FallBack => self.fall_back(state, &policies, now).await?,
            }
        }
        self.reschedule(state, true);
        Ok(())
    }

    /// The conversation waits in a team that has closed: it moves to the team's first open
    /// fallback, as a new conversation would be placed, keeping its place in line (`queued_at`).
    async fn fall_back(
        &self,
        state: &mut State,
        policies: &Policies,
        now: Millis,
    ) -> Result<(), Error> {
        if state.conv.status != crate::domain::ConversationStatus::Queued {
            return Ok(());
        }
        let Some(to) = policies.open_fallback(state.conv.team(), now) else {
            return Ok(());
        };
        let before = state.conv.clone();
        let mut next = before.clone();
        next.fall_back_to(to);
        self.persist(state, next, Batch::new()).await?;
        metrics::counter!(m::FALLBACKS, "from" => before.team().to_string(), "to" => state.conv.team().to_string())
            .increment(1);
        self.transferred(&before, &state.conv);
        Ok(())
    }

    /// An SLA clock was missed: record it once, raise the priority, tell supervisors, and
    /// escalate when the team asks for it.
    async fn breach(
        &self,
        state: &mut State,
        policies: &Policies,
        kind: SlaKind,
    ) -> Result<(), Error> {
        if state.conv.sla().is_breached(kind) {
            return Ok(());
        }
        let before = state.conv.clone();
        let mut next = before.clone();
        next.breach(kind);
        self.persist(state, next, Batch::new()).await?;
        record_sla(state.conv.team(), kind, false);
        self.sync_queues(Some(&before), &state.conv);
        self.ctx.bus.publish(Event {
            kind: EventKind::SlaBreached,
            conversation: state.conv.clone(),
            message: None,
            previous_team: None,
            previous_status: None,
            previous_assignee: None,
            sla: Some(kind),
            rendered: Default::default(),
        });
        let escalate = policies
            .team(state.conv.team())
            .and_then(|p| p.sla.escalate)
            == Some(Escalation::Reassign);
        if let (true, Some(owner)) = (escalate, state.conv.assignee.clone()) {
            let reason = format!("{} SLA missed", kind.as_str());
            self.reassign(state, &owner, reason, Reassignment::SlaEscalation)
                .await?;
        }
        Ok(())
    }

    /// Whether message `seq` still waits for a send: pending (its outbox entry exists exactly
    /// as long: both are written, and both settled, in one batch).
    async fn awaits_send(&self, state: &State, seq: u64) -> Result<Option<Message>, Error> {
        Ok(self
            .message(state, seq)
            .await?
            .filter(|m| m.status == Some(DeliveryStatus::Pending)))
    }

    async fn send_attempt(&self, state: &mut State, job: OutboxJob) -> Result<bool, Error> {
        if self.awaits_send(state, job.seq).await?.is_none() {
            // Settled meanwhile (adopted, or a second copy): writing would bring the job back.
            return Ok(false);
        }
        let mut batch = Batch::new();
        batch.put_outbox(&job)?;
        self.ctx.store.commit(batch).await?;
        Ok(true)
    }

    async fn send_outcome(
        &self,
        state: &mut State,
        seq: u64,
        outcome: Result<Option<String>, MessageError>,
    ) -> Result<bool, Error> {
        let id = state.conv.id.clone();
        let mut batch = Batch::new();
        batch.delete_outbox(&id, seq);
        let Some(mut msg) = self.awaits_send(state, seq).await? else {
            // Unknown or already settled (a duplicate outcome after a restart, or a status
            // callback adopted it while the request was out): drop the job.
            self.ctx.store.commit(batch).await?;
            return Ok(false);
        };
        let wamid = outcome.as_ref().ok().cloned().flatten();
        let label = match outcome {
            Ok(wamid) => {
                msg.status = Some(DeliveryStatus::Accepted);
                msg.wamid = wamid;
                "accepted"
            }
            Err(e) => {
                let label = if e.is_window_closed() {
                    "window_closed"
                } else {
                    "failed"
                };
                msg.status = Some(DeliveryStatus::Failed);
                msg.error = Some(e);
                label
            }
        };
        batch.put_message(&msg)?;
        state.recent.forget(seq);
        self.ctx.store.commit(batch).await?;
        state.recent.remember(&msg);
        if let Some(wamid) = wamid {
            self.wamid_recorded(state, &mut msg, &wamid).await?;
        }
        metrics::counter!(m::OUTBOUND_MESSAGES, "outcome" => label).increment(1);
        self.record_delay(state, &msg);
        self.publish(EventKind::MessageStatus, &state.conv, Some(msg), None);
        Ok(true)
    }

    /// `at` is when the reply was accepted (the 202): the delay a customer waits for it.
    fn record_delay(&self, state: &State, msg: &Message) {
        let delay_ms = self.ctx.now().saturating_sub(msg.at).max(0);
        metrics::histogram!(m::OUTBOUND_DELAY, "number" => state.conv.number.clone())
            .record(delay_ms as f64 / 1000.0);
    }

    /// After the commit that gave `msg` its wamid (its index entry): remembers where the wamid
    /// lives and applies a status parked for it meanwhile.
    async fn wamid_recorded(
        &self,
        state: &mut State,
        msg: &mut Message,
        wamid: &str,
    ) -> Result<(), Error> {
        if let Some(seen) = &mut state.seen {
            seen.insert(wamid);
        }
        self.ctx.sent.remember(
            wamid,
            crate::store::WamidRef {
                conversation_id: state.conv.id.clone(),
                seq: msg.seq,
            },
        );
        // Write first, check second (the webhook path does the same in the other order): a
        // status that came before the wamid was recorded was parked as an orphan and is applied
        // here; one parked after this commit finds the wamid and comes to this actor as a Status
        // message. (Only this read, after the commit, is needed: reading before it too would
        // cost every send a second blocking-pool round trip.)
        if let Some(orphan) = self.ctx.store.orphan_status(wamid).await? {
            let changed = msg.apply_status(orphan.status, orphan.error);
            let mut batch = Batch::new();
            batch.delete_orphan_status(wamid);
            if changed {
                batch.put_message(msg)?;
                state.recent.forget(msg.seq);
            }
            self.ctx.store.commit(batch).await?;
            if changed {
                state.recent.remember(msg);
            }
        }
        Ok(())
    }

    async fn adopt(
        &self,
        state: &mut State,
        seq: u64,
        update: InboundStatus,
    ) -> Result<bool, Error> {
        if update.number != state.conv.number {
            return Ok(false);
        }
        let Some(mut msg) = self.message(state, seq).await? else {
            return Ok(false);
        };
        if msg.direction != Direction::Outbound {
            return Ok(false);
        }
        match &msg.wamid {
            // Adopted (or answered) since the webhook looked the wamid up: an ordinary status.
            Some(w) if *w == update.wamid => {
                return self.status(state, seq, update).await.map(|_| true)
            }
            Some(_) => return Ok(false),
            None => {}
        }
        let pending = msg.status == Some(DeliveryStatus::Pending);
        // Pending: the send is out, held or queued. Accepted without a wamid: an answer without
        // `messages[0].id` recorded by an earlier release. A failed message stays failed.
        if !pending && msg.status != Some(DeliveryStatus::Accepted) {
            return Ok(false);
        }
        let id = state.conv.id.clone();
        let mut batch = Batch::new();
        batch.put_status_log(&update.wamid, update.status, update.at, &update.raw);
        if pending {
            batch.delete_outbox(&id, seq);
            msg.status = Some(DeliveryStatus::Accepted);
        }
        msg.wamid = Some(update.wamid.clone());
        msg.apply_status(update.status, update.error.clone());
        batch.put_message(&msg)?;
        state.recent.forget(seq);
        self.ctx.store.commit(batch).await?;
        state.recent.remember(&msg);
        self.wamid_recorded(state, &mut msg, &update.wamid).await?;
        metrics::counter!(m::OUTBOX_ADOPTED, "number" => state.conv.number.clone()).increment(1);
        metrics::counter!(m::STATUS_UPDATES, "outcome" => "applied").increment(1);
        if pending {
            metrics::counter!(m::OUTBOUND_MESSAGES, "outcome" => "accepted").increment(1);
            self.record_delay(state, &msg);
            if let Some(outbox) = self.ctx.outbox.get() {
                outbox.adopted(&state.conv.number, &id, seq);
            }
        }
        self.publish(EventKind::MessageStatus, &state.conv, Some(msg), None);
        Ok(true)
    }
}

/// Why a conversation left its owner (the `reason` label of `switchboard_assignments_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reassignment {
    Offline,
    NoAnswer,
    SlaEscalation,
}

impl Reassignment {
    fn label(self) -> &'static str {
        match self {
            Self::Offline => "assignee_offline",
            Self::NoAnswer => "no_answer",
            Self::SlaEscalation => "sla_escalation",
        }
    }
}

fn record_sla(team: &str, kind: SlaKind, met: bool) {
    metrics::counter!(m::SLA, "team" => team.to_string(), "kind" => kind.as_str(), "outcome" => if met { "hit" } else { "miss" })
        .increment(1);
}

/// A text to the customer by agent `author`, durable with its outbox job in the same batch.
fn outbound_message(
    conv: &mut Conversation,
    author: &str,
    text: String,
    idempotency_key: Option<String>,
    now: Millis,
) -> (Message, OutboxJob) {
    let msg = conv.append_outbound(
        Author::Agent(author.to_string()),
        text,
        idempotency_key,
        now,
    );
    let job = outbox_job(conv, &msg);
    (msg, job)
}

/// The outbox's copy of outbound message `msg`: what to send, from which number, to whom.
fn outbox_job(conv: &Conversation, msg: &Message) -> OutboxJob {
    OutboxJob {
        conversation_id: conv.id.clone(),
        seq: msg.seq,
        number: conv.number.clone(),
        to: conv.customer.clone(),
        text: msg.text.clone().unwrap_or_default(),
        in_doubt: false,
    }
}

fn note_message(conv: &mut Conversation, caller: &Caller, text: String, now: i64) -> Message {
    conv.append_note(Author::Agent(caller.id.clone()), text, now)
}
