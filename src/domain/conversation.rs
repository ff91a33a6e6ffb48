//! A conversation between one business number and one customer, and every rule of its life.
//!
//! Invariants, enforced only here:
//! - one conversation per (business `phone_number_id`, customer): its id is derived from the
//!   pair (business number, the customer's first known id: its phone, else its user id) when
//!   the conversation is created and never changes; the customer's ids live in its [`Contact`]
//!   (`contact`), and storage indexes each id to the conversation (`store::schema::CF_CONTACTS`),
//!   so a webhook naming either id finds it. `customer` is always `contact.customer()`: the
//!   phone when known, else the user id;
//! - `assignee` is `Some` exactly when `status` is `Assigned` (exactly one owner at a time);
//! - a command reaches only a conversation its caller may see, as a read does
//!   ([`Conversation::check_access`]; a claim also reaches the caller's own teams'), and is
//!   `NotFound` otherwise;
//! - only the owner may reply, release or resolve; supervisors of the team and admins may also
//!   transfer and resolve;
//! - a new inbound message after `resolved` reopens the conversation to its team's queue;
//! - the customer-service window closes 24 h after the customer's last inbound message timestamp;
//! - `next_seq`, `last_message_at` and `last_inbound_at` follow from the conversation's messages
//!   alone ([`Conversation::absorb`]), so storage may commit a plain inbound message without
//!   rewriting the record and fold the messages committed after the record back in when it reads
//!   it ([`Conversation::only_absorbed`] says when that is allowed);
//! - where it is routed (team, priority, labels, the rule), its SLA breaches and its after-hours
//!   reply change only through the methods named after those rules ([`Conversation::route`],
//!   [`Conversation::fall_back_to`], [`Conversation::breach`],
//!   [`Conversation::send_after_hours_reply`], transfers, reopens): those fields are private to
//!   the domain, and everyone else reads them through accessors.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::customer::{Contact, CustomerIds, IdentityChange};
use super::policy::Placement;
use super::{Author, Caller, DeliveryStatus, Direction, DomainError, Message, Millis, WINDOW_MS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationStatus {
    Bot,
    Queued,
    Assigned,
    Resolved,
}

impl ConversationStatus {
    pub const ALL: [ConversationStatus; 4] =
        [Self::Bot, Self::Queued, Self::Assigned, Self::Resolved];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bot => "bot",
            Self::Queued => "queued",
            Self::Assigned => "assigned",
            Self::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Derives the conversation id from (business number, customer): 16 hex digits of SHA-256.
pub fn conversation_id(number: &str, customer: &str) -> String {
    let mut h = Sha256::new();
    h.update(number.as_bytes());
    h.update([0u8]);
    h.update(customer.as_bytes());
    let d = h.finalize();
    let mut id = String::with_capacity(17);
    id.push('c');
    id.push_str(&hex::encode(&d[..8]));
    id
}

/// The visibility rule of the contract, for a conversation in `team` with `status` and
/// `assignee`: supervisors and admins see everything of the teams they manage, an agent sees what
/// it owns plus what waits in its teams.
pub fn visible(
    team: &str,
    status: ConversationStatus,
    assignee: Option<&str>,
    caller: &Caller,
) -> bool {
    if caller.manages(team) || assignee == Some(caller.id.as_str()) {
        return true;
    }
    caller.in_team(team) && matches!(status, ConversationStatus::Queued | ConversationStatus::Bot)
}

/// What a command asks of a conversation, which decides whom it may reach
/// ([`Conversation::check_access`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Add to it: a note.
    Write,
    /// What only its owner may do: release, resolve, transfer, reply. The contract answers a
    /// teammate who tries `403 not_owner`, so these also reach the caller's own teams'
    /// conversations, where the ownership rule refuses them.
    Own,
    /// Take it: a claim, `next`, an automatic assignment.
    Claim,
}

/// How urgent a conversation is: team queues serve higher priorities first.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Urgent,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Normal => "normal",
            Self::High => "high",
            Self::Urgent => "urgent",
        }
    }

    /// One step up (an SLA breach raises it); `Urgent` stays.
    pub fn raised(self) -> Self {
        match self {
            Self::Low => Self::Normal,
            Self::Normal => Self::High,
            Self::High | Self::Urgent => Self::Urgent,
        }
    }
}

/// The three service-level clocks of a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaKind {
    FirstResponse,
    NextResponse,
    Resolution,
}

impl SlaKind {
    pub const ALL: [SlaKind; 3] = [Self::FirstResponse, Self::NextResponse, Self::Resolution];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::FirstResponse => "first_response",
            Self::NextResponse => "next_response",
            Self::Resolution => "resolution",
        }
    }
}

/// Where a conversation stands against its team's SLA. Each clock is settled (hit or missed)
/// once per cycle: first response and resolution per opening (creation, reopen, hand-over from
/// the bot), next response per unanswered customer message run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlaState {
    /// First response counts from here: the latest moment a human became responsible.
    pub responsible_since: Millis,
    /// Resolution counts from here: creation or the latest reopen.
    pub opened_at: Millis,
    /// The first human reply since `responsible_since`.
    pub first_response_at: Option<Millis>,
    /// The oldest customer message that no human reply has answered yet.
    pub waiting_since: Option<Millis>,
    /// Clocks missed in the current cycle (each is reported once).
    pub breached: Vec<SlaKind>,
}

impl SlaState {
    pub fn new(now: Millis) -> Self {
        Self {
            responsible_since: now,
            opened_at: now,
            ..Self::default()
        }
    }

    pub fn is_breached(&self, kind: SlaKind) -> bool {
        self.breached.contains(&kind)
    }
}

/// What starting a conversation did to it ([`Conversation::start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// A new conversation, owned by the caller.
    Opened,
    /// A resolved one, reopened owned by the caller.
    Reopened,
    /// An open one the caller took.
    Claimed,
    /// An open one the caller already owned.
    Owned,
}

/// Where a transfer sends a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransferTarget {
    Team(String),
    /// An agent, with the teams it belongs to: the conversation stays in its team when the agent
    /// is a member (or has no teams), else moves to the agent's first team.
    Agent {
        id: String,
        teams: Vec<String>,
    },
}

/// The durable state of a conversation (messages are stored beside it, keyed by `seq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Conversation {
    pub id: String,
    pub number: String,
    pub customer: String,
    pub customer_name: Option<String>,
    pub status: ConversationStatus,
    pub(super) team: String,
    pub assignee: Option<String>,
    /// Customer's last inbound message timestamp (ms), from Meta's `timestamp`.
    pub last_inbound_at: Option<Millis>,
    pub last_message_at: Millis,
    pub created_at: Millis,
    /// When it last entered a queue (orders the team queue).
    pub queued_at: Millis,
    /// Sequence number the next message will get.
    pub next_seq: u64,
    pub(super) priority: Priority,
    pub(super) labels: Vec<String>,
    /// The routing rule that placed it (None: the number's default team).
    pub(super) routed_by: Option<String>,
    pub(super) sla: SlaState,
    /// When the current owner got it (`reassign_after` counts from here).
    pub assigned_at: Option<Millis>,
    /// Whether the current owner has answered the customer since `assigned_at`.
    pub owner_answered: bool,
    /// Start of the closed period in which the after-hours reply was last sent (once per period).
    pub(super) after_hours_sent: Option<Millis>,
    /// The customer's ids and username. Last in the record: version 3 appended it (see
    /// `store::legacy`).
    pub contact: Contact,
}

impl Conversation {
    /// A conversation with a customer known by one id (`customer`: a phone, or a user id by its
    /// shape, see [`super::customer::is_user_id`]), its id derived from that pair.
    pub fn new(number: &str, customer: &str, team: &str, now: Millis) -> Self {
        let mut contact = Contact::from_customer(customer);
        // Created by this version: its first write indexes its ids.
        contact.indexed = true;
        Self::with_contact(
            conversation_id(number, customer),
            number,
            contact,
            team,
            now,
        )
    }

    /// A conversation with id `id` (chosen by whoever resolved the customer's contact) for a
    /// customer with `ids` (at least one id).
    pub fn for_customer(
        id: String,
        number: &str,
        ids: &CustomerIds,
        team: &str,
        now: Millis,
    ) -> Self {
        let mut contact = Contact {
            indexed: true,
            ..Contact::default()
        };
        contact.learn(ids);
        Self::with_contact(id, number, contact, team, now)
    }

    fn with_contact(id: String, number: &str, contact: Contact, team: &str, now: Millis) -> Self {
        Self {
            id,
            number: number.to_string(),
            customer: contact.customer().unwrap_or_default().to_string(),
            customer_name: None,
            status: ConversationStatus::Queued,
            team: team.to_string(),
            assignee: None,
            last_inbound_at: None,
            last_message_at: now,
            created_at: now,
            queued_at: now,
            next_seq: 0,
            priority: Priority::Normal,
            labels: Vec::new(),
            routed_by: None,
            sla: SlaState::new(now),
            assigned_at: None,
            owner_answered: false,
            after_hours_sent: None,
            contact,
        }
    }

    /// Takes the ids and username an inbound message gives for the customer (a new id links
    /// it to this contact; see [`Contact::learn`]). Answers whether the contact changed.
    pub fn learn_customer(&mut self, ids: &CustomerIds) -> bool {
        let changed = self.contact.learn(ids);
        self.sync_customer();
        changed
    }

    /// Moves the customer's ids as a `system` message says (a new number, a new user id).
    /// Answers whether the contact changed.
    pub fn change_customer_ids(&mut self, change: &IdentityChange) -> bool {
        let changed = self.contact.replace_ids(change);
        self.sync_customer();
        changed
    }

    fn sync_customer(&mut self) {
        if let Some(c) = self.contact.customer() {
            if c != self.customer {
                self.customer = c.to_string();
            }
        }
    }

    /// The team it is in (its queue while it waits).
    pub fn team(&self) -> &str {
        &self.team
    }

    pub fn priority(&self) -> Priority {
        self.priority
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The routing rule that placed it (None: the number's default team).
    pub fn routed_by(&self) -> Option<&str> {
        self.routed_by.as_deref()
    }

    pub fn sla(&self) -> &SlaState {
        &self.sla
    }

    /// Start of the closed period in which the after-hours reply was last sent.
    pub fn after_hours_sent(&self) -> Option<Millis> {
        self.after_hours_sent
    }

    /// Places the conversation as routing decided, on its first message or a reopen: into the
    /// placement's team, at the rule's priority (normal when it sets none), with the rule's
    /// labels added to those it has, remembering the rule (None: the number's default team).
    pub fn route(&mut self, p: &Placement) {
        self.team = p.team.clone();
        self.priority = p.priority.unwrap_or_default();
        for l in &p.labels {
            if !self.labels.contains(l) {
                self.labels.push(l.clone());
            }
        }
        self.routed_by = p.rule.clone();
    }

    /// Moves a conversation waiting in a closed team to that team's open fallback `team`, as a
    /// new conversation would be placed, keeping its place in line (`queued_at`).
    pub fn fall_back_to(&mut self, team: &str) {
        self.team = team.to_string();
    }

    /// An SLA clock was missed: recorded once per cycle, and the priority goes one step up.
    /// Returns false, changing nothing, when this cycle already recorded it.
    pub fn breach(&mut self, kind: SlaKind) -> bool {
        if self.sla.is_breached(kind) {
            return false;
        }
        self.sla.breached.push(kind);
        self.priority = self.priority.raised();
        true
    }

    /// The after-hours reply of the closed period that started at `period`: recorded, so the
    /// customer gets it once per period, and appended as the broker's own outbound message.
    pub fn send_after_hours_reply(&mut self, text: String, period: Millis, now: Millis) -> Message {
        self.after_hours_sent = Some(period);
        self.append_outbound(Author::System, text, None, now)
    }

    /// Appends a text to the customer: the next sequence number, pending until the outbox
    /// settles it.
    pub fn append_outbound(
        &mut self,
        author: Author,
        text: String,
        idempotency_key: Option<String>,
        now: Millis,
    ) -> Message {
        let seq = self.take_seq();
        self.last_message_at = now;
        Message {
            conversation_id: self.id.clone(),
            seq,
            direction: Direction::Outbound,
            kind: "text".into(),
            text: Some(text),
            wamid: None,
            status: Some(DeliveryStatus::Pending),
            author,
            at: now,
            error: None,
            idempotency_key,
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

    /// A new or reopened conversation goes to the bot first (its team has automation on): no
    /// queue, no owner, no human SLA clock running (see `Policies::deadlines`).
    pub fn start_with_bot(&mut self) {
        self.status = ConversationStatus::Bot;
        self.assignee = None;
        self.assigned_at = None;
        self.owner_answered = false;
    }

    /// The bot hands over: into `team`'s queue from now, and a human becomes responsible from
    /// now (a new first-response cycle, the customer waiting since now). False, changing
    /// nothing, unless the bot has it.
    pub fn hand_over(&mut self, team: &str, now: Millis) -> bool {
        if self.status != ConversationStatus::Bot {
            return false;
        }
        self.team = team.to_string();
        self.enqueue(now);
        let opened_at = self.sla.opened_at;
        self.sla = SlaState::new(now);
        self.sla.opened_at = opened_at;
        self.sla.waiting_since = Some(now);
        true
    }

    /// The bot settled the conversation: resolved. False, changing nothing, unless the bot has it.
    pub fn bot_resolve(&mut self) -> bool {
        if self.status != ConversationStatus::Bot {
            return false;
        }
        self.status = ConversationStatus::Resolved;
        true
    }

    /// Appends an internal note (never sent to the customer).
    pub fn append_note(&mut self, author: Author, text: String, now: Millis) -> Message {
        Message {
            conversation_id: self.id.clone(),
            seq: self.take_seq(),
            direction: Direction::Note,
            kind: "note".into(),
            text: Some(text),
            wamid: None,
            status: None,
            author,
            at: now,
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

    pub fn window_expires_at(&self) -> Option<Millis> {
        self.last_inbound_at.map(|t| t.saturating_add(WINDOW_MS))
    }

    pub fn window_open(&self, now: Millis) -> bool {
        self.window_expires_at().is_some_and(|exp| now < exp)
    }

    /// Whether `caller` may see this conversation at all.
    pub fn visible_to(&self, caller: &Caller) -> bool {
        visible(&self.team, self.status, self.assignee.as_deref(), caller)
    }

    /// Whether `caller` may address this conversation at all, checked before each command's own
    /// rule (owner, manager, window). A note reaches exactly what a read shows
    /// ([`Self::visible_to`]); anything else is `NotFound`, as a read of it is, so neither the
    /// conversation's existence nor its owner leaks outside the caller's teams. Claims and the
    /// owner's commands also reach the conversations of the caller's own teams that it cannot
    /// read: one a teammate owns (the contract's 409 `already_assigned` naming the owner for a
    /// claim, which is what a claim that lost a race hears, and 403 `not_owner` for a release,
    /// resolve, transfer or reply) and a resolved one (a follow-up).
    pub fn check_access(&self, caller: &Caller, access: Access) -> Result<(), DomainError> {
        let reaches = match access {
            Access::Write => self.visible_to(caller),
            Access::Claim | Access::Own => self.visible_to(caller) || caller.in_team(&self.team),
        };
        if reaches {
            Ok(())
        } else {
            Err(DomainError::NotFound)
        }
    }

    fn is_owner(&self, caller: &Caller) -> bool {
        self.status == ConversationStatus::Assigned
            && self.assignee.as_deref() == Some(caller.id.as_str())
    }

    /// Checks a claim by a caller [`Self::check_access`] let through; `Ok(false)` means the
    /// caller already owns it (nothing to do).
    pub fn check_claim(&self, caller: &Caller) -> Result<bool, DomainError> {
        match (&self.status, &self.assignee) {
            (ConversationStatus::Assigned, Some(a)) if *a == caller.id => Ok(false),
            (ConversationStatus::Assigned, Some(a)) => Err(DomainError::AlreadyAssigned {
                assignee: a.clone(),
            }),
            _ => Ok(true),
        }
    }

    /// Checks that a conversation handed out by its team's queue (`next`, automatic assignment)
    /// still waits there: the queue learns of a claim, resolve or transfer only once it is
    /// durable, so it may hand out one that stopped waiting just before.
    pub fn check_waiting(&self) -> Result<(), DomainError> {
        match (self.status, &self.assignee) {
            (ConversationStatus::Queued, _) => Ok(()),
            (ConversationStatus::Assigned, Some(a)) => Err(DomainError::AlreadyAssigned {
                assignee: a.clone(),
            }),
            _ => Err(DomainError::NotWaiting),
        }
    }

    pub fn assign(&mut self, agent: &str, now: Millis) {
        if self.assignee.as_deref() != Some(agent) {
            self.assigned_at = Some(now);
            self.owner_answered = false;
        }
        self.status = ConversationStatus::Assigned;
        self.assignee = Some(agent.to_string());
    }

    /// The business starts the conversation (`POST /api/v1/conversations`): `caller` owns it
    /// from now and a template goes out. `is_new`: nothing of it is stored yet.
    ///
    /// - new or resolved: it opens (reopens) owned by the caller, in the team it is in (a new
    ///   one: its number's default team) when the caller is a member (or has no teams), else
    ///   in the caller's first team — the rule of a transfer to an agent. The business speaks
    ///   first, so the cycle's first-response clock has nothing to measure and is settled; the
    ///   customer's answer starts the next-response clock as usual;
    /// - open and the caller owns it: nothing changes (another template goes out);
    /// - open and the caller may claim it (its team's, waiting or with the bot): claimed;
    /// - open and owned by a teammate: 409 `already_assigned`, as a claim;
    /// - open in a team the caller is not in: 409 `conversation_elsewhere` (nothing more said).
    pub fn start(
        &mut self,
        caller: &Caller,
        is_new: bool,
        now: Millis,
    ) -> Result<Started, DomainError> {
        let opens = is_new || self.status == ConversationStatus::Resolved;
        if opens {
            if !caller.teams.is_empty() && !caller.teams.contains(&self.team) {
                self.team = caller.teams[0].clone();
            }
            if !is_new {
                self.sla = SlaState::new(now);
            }
            self.sla.first_response_at = Some(now);
            self.queued_at = now;
            self.assign(&caller.id, now);
            return Ok(if is_new {
                Started::Opened
            } else {
                Started::Reopened
            });
        }
        if self.check_access(caller, Access::Claim).is_err() {
            return Err(DomainError::ConversationElsewhere);
        }
        if !self.check_claim(caller)? {
            return Ok(Started::Owned);
        }
        self.assign(&caller.id, now);
        Ok(Started::Claimed)
    }

    /// A human answered the customer: settles the first-response clock (the first time) and the
    /// next-response clock.
    pub fn on_human_reply(&mut self, now: Millis) {
        if self.sla.first_response_at.is_none() {
            self.sla.first_response_at = Some(now);
        }
        self.sla.waiting_since = None;
        self.sla.breached.retain(|k| *k != SlaKind::NextResponse);
        self.owner_answered = true;
    }

    /// Release by the owner: back to its team's queue.
    pub fn release(&mut self, caller: &Caller, now: Millis) -> Result<String, DomainError> {
        if !self.is_owner(caller) {
            return Err(DomainError::NotOwner);
        }
        let owner = caller.id.clone();
        self.enqueue(now);
        Ok(owner)
    }

    /// Resolve by the owner, or by a supervisor of the team / an admin. Returns the freed owner.
    pub fn resolve(&mut self, caller: &Caller) -> Result<Option<String>, DomainError> {
        if self.status == ConversationStatus::Resolved {
            return if caller.manages(&self.team) || caller.in_team(&self.team) {
                Ok(None)
            } else {
                Err(DomainError::NotOwner)
            };
        }
        if !self.is_owner(caller) && !caller.manages(&self.team) {
            return Err(DomainError::NotOwner);
        }
        self.status = ConversationStatus::Resolved;
        Ok(self.assignee.take())
    }

    /// Checks a hand-back to the bot: the owner, or a supervisor of the team or an admin, of a
    /// conversation that is not resolved. `Ok(false)`: the bot has it already (nothing to do).
    /// Whether the team has automation is the caller's to check (after this, so a caller who
    /// may not do it learns nothing of the config).
    pub fn check_hand_back(&self, caller: &Caller) -> Result<bool, DomainError> {
        if !self.is_owner(caller) && !caller.manages(&self.team) {
            return Err(DomainError::NotOwner);
        }
        match self.status {
            ConversationStatus::Resolved => Err(DomainError::Resolved),
            ConversationStatus::Bot => Ok(false),
            ConversationStatus::Queued | ConversationStatus::Assigned => Ok(true),
        }
    }

    /// Applies a hand-back [`Self::check_hand_back`] allowed: the bot has it again, out of the
    /// queue, no owner (returned, to free its capacity), no human SLA clock running.
    pub fn hand_back(&mut self) -> Option<String> {
        let owner = self.assignee.take();
        self.start_with_bot();
        owner
    }

    /// Checks that the caller may transfer; returns the current owner (to free its capacity).
    pub fn check_transfer(&self, caller: &Caller) -> Result<Option<String>, DomainError> {
        if self.is_owner(caller) || caller.manages(&self.team) {
            return Ok(self.assignee.clone());
        }
        Err(DomainError::NotOwner)
    }

    /// Applies a transfer that [`Self::check_transfer`] allowed.
    pub fn transfer(&mut self, target: &TransferTarget, now: Millis) {
        match target {
            TransferTarget::Team(team) => {
                self.team = team.clone();
                self.enqueue(now);
            }
            TransferTarget::Agent { id, teams } => {
                if !teams.is_empty() && !teams.contains(&self.team) {
                    self.team = teams[0].clone();
                }
                self.assign(id, now);
            }
        }
    }

    /// Only the owner may do this (mark the customer's messages read, …).
    pub fn check_owner(&self, caller: &Caller) -> Result<(), DomainError> {
        if self.is_owner(caller) {
            Ok(())
        } else {
            Err(DomainError::NotOwner)
        }
    }

    /// Only the owner may send a reply, and only inside the window.
    pub fn check_reply(&self, caller: &Caller, now: Millis) -> Result<(), DomainError> {
        if !self.is_owner(caller) {
            return Err(DomainError::NotOwner);
        }
        if !self.window_open(now) {
            return Err(DomainError::WindowClosed);
        }
        Ok(())
    }

    /// Records an inbound message; returns true when it reopened a resolved conversation.
    pub fn on_inbound(
        &mut self,
        customer_name: Option<&str>,
        sent_at: Millis,
        now: Millis,
        reopen_team: &str,
    ) -> bool {
        if let Some(name) = customer_name {
            if self.customer_name.as_deref() != Some(name) {
                self.customer_name = Some(name.to_string());
            }
        }
        // The message's own time (Meta's timestamp), as `absorb` reads it back from storage.
        let mut clock = self.clock();
        clock.saw(sent_at, true);
        self.set_clock(clock);
        if self.status == ConversationStatus::Resolved {
            self.team = reopen_team.to_string();
            self.enqueue(now);
            // A reopen starts a new cycle: a human becomes responsible again from now. The
            // after-hours reply is not part of it: it goes out once per closed period, so a
            // customer who writes again the same night is not told twice.
            self.sla = SlaState::new(now);
            self.sla.waiting_since = Some(now);
            return true;
        }
        if self.sla.waiting_since.is_none() {
            self.sla.waiting_since = Some(now);
        }
        false
    }

    /// Records a message of the WhatsApp Business App (an echo, or imported history): only the
    /// times follow (as storage's fold reads them back, see [`Self::absorb`]); no status, queue,
    /// owner or SLA clock changes, for none of it is the customer writing to the broker now.
    pub fn on_app_message(&mut self, at: Millis, inbound: bool) {
        let mut clock = self.clock();
        clock.saw(at, inbound);
        self.set_clock(clock);
    }

    /// A conversation that only the WhatsApp Business App made (an echo or imported history,
    /// no customer message through the broker yet) is `resolved`: in no queue and owned by
    /// nobody; the customer's next message reopens it and routing places it as usual.
    pub fn settle_as_app_only(&mut self) {
        self.status = ConversationStatus::Resolved;
        self.assignee = None;
        self.assigned_at = None;
    }

    /// Takes the conversation from `agent` back to its team's queue (the assignee became
    /// unavailable); returns false when `agent` does not own it (nothing to do).
    pub fn unassign(&mut self, agent: &str, now: Millis) -> bool {
        if self.status != ConversationStatus::Assigned || self.assignee.as_deref() != Some(agent) {
            return false;
        }
        self.enqueue(now);
        true
    }

    fn enqueue(&mut self, now: Millis) {
        self.status = ConversationStatus::Queued;
        self.assignee = None;
        self.assigned_at = None;
        self.owner_answered = false;
        self.queued_at = now;
    }

    pub fn take_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq += 1;
        s
    }

    /// Folds in what a stored message says about the conversation: the sequence number after
    /// it, the time of the last message and of the customer's last one. Storage uses it to bring
    /// a record up to date with messages committed after it; folding a message in twice, or one
    /// the record already covers, changes nothing.
    pub fn absorb(&mut self, m: &Message) {
        let mut clock = self.clock();
        clock.absorb(m);
        self.set_clock(clock);
    }

    /// Whether `after` is this conversation with `messages` absorbed and nothing else changed:
    /// then committing the messages alone stores `after` as faithfully as rewriting the record.
    pub fn only_absorbed(&self, after: &Conversation, messages: &[Message]) -> bool {
        let mut derived = self.clock();
        for m in messages {
            derived.absorb(m);
        }
        // Every other field by name, so a field added later cannot be forgotten here.
        let Conversation {
            id,
            number,
            customer,
            customer_name,
            status,
            team,
            assignee,
            last_inbound_at,
            last_message_at,
            created_at,
            queued_at,
            next_seq,
            priority,
            labels,
            routed_by,
            sla,
            assigned_at,
            owner_answered,
            after_hours_sent,
            contact,
        } = after;
        let clock = MessageClock {
            next_seq: *next_seq,
            last_message_at: *last_message_at,
            last_inbound_at: *last_inbound_at,
        };
        derived == clock
            && *id == self.id
            && *number == self.number
            && *customer == self.customer
            && *customer_name == self.customer_name
            && *status == self.status
            && *team == self.team
            && *assignee == self.assignee
            && *created_at == self.created_at
            && *queued_at == self.queued_at
            && *priority == self.priority
            && *labels == self.labels
            && *routed_by == self.routed_by
            && *sla == self.sla
            && *assigned_at == self.assigned_at
            && *owner_answered == self.owner_answered
            && *after_hours_sent == self.after_hours_sent
            && *contact == self.contact
    }

    fn clock(&self) -> MessageClock {
        MessageClock {
            next_seq: self.next_seq,
            last_message_at: self.last_message_at,
            last_inbound_at: self.last_inbound_at,
        }
    }

    fn set_clock(&mut self, c: MessageClock) {
        self.next_seq = c.next_seq;
        self.last_message_at = c.last_message_at;
        self.last_inbound_at = c.last_inbound_at;
    }
}

/// What follows from a conversation's messages alone: where the next one goes, and the times of
/// the last one and of the customer's last one. The one place those rules live, for the live
/// state ([`Conversation::on_inbound`]) and for storage's fold ([`Conversation::absorb`]) alike.
#[derive(Debug, Clone, Copy, PartialEq)]
struct MessageClock {
    next_seq: u64,
    last_message_at: Millis,
    last_inbound_at: Option<Millis>,
}

impl MessageClock {
    fn saw(&mut self, at: Millis, inbound: bool) {
        self.last_message_at = self.last_message_at.max(at);
        if inbound {
            self.last_inbound_at = Some(self.last_inbound_at.map_or(at, |t| t.max(at)));
        }
    }

    fn absorb(&mut self, m: &Message) {
        self.next_seq = self.next_seq.max(m.seq.saturating_add(1));
        self.saw(m.at, m.direction == Direction::Inbound);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    fn caller(id: &str, role: Role) -> Caller {
        Caller {
            id: id.into(),
            role,
            teams: vec!["support".into()],
        }
    }

    #[test]
    fn id_is_stable_per_pair() {
        assert_eq!(conversation_id("1", "2"), conversation_id("1", "2"));
        assert_ne!(conversation_id("1", "2"), conversation_id("12", ""));
        assert_eq!(conversation_id("1", "2").len(), 17);
    }

    #[test]
    fn claim_then_other_claim_fails_naming_owner() {
        let mut c = Conversation::new("n", "c", "support", 0);
        let alice = caller("alice", Role::Agent);
        let bob = caller("bob", Role::Agent);
        assert_eq!(c.check_claim(&alice), Ok(true));
        c.assign("alice", 0);
        assert_eq!(c.check_claim(&alice), Ok(false));
        assert_eq!(
            c.check_claim(&bob),
            Err(DomainError::AlreadyAssigned {
                assignee: "alice".into()
            })
        );
    }

    #[test]
    fn only_owner_replies_inside_window() {
        let mut c = Conversation::new("n", "c", "support", 0);
        c.on_inbound(None, 1_000, 1_000, "support");
        let alice = caller("alice", Role::Agent);
        assert_eq!(c.check_reply(&alice, 2_000), Err(DomainError::NotOwner));
        c.assign("alice", 0);
        assert_eq!(c.check_reply(&alice, 2_000), Ok(()));
        assert_eq!(
            c.check_reply(&alice, 1_000 + WINDOW_MS),
            Err(DomainError::WindowClosed)
        );
    }

    #[test]
    fn inbound_after_resolve_reopens() {
        let mut c = Conversation::new("n", "c", "support", 0);
        c.assign("alice", 0);
        c.resolve(&caller("alice", Role::Agent))
            .expect("owner resolves");
        assert_eq!(c.assignee, None);
        assert!(c.on_inbound(None, 5, 5, "support"));
        assert_eq!(c.status, ConversationStatus::Queued);
    }

    #[test]
    fn reopening_keeps_the_after_hours_reply_of_the_closed_period() {
        let mut c = Conversation::new("n", "c", "support", 0);
        c.send_after_hours_reply("closed".into(), 3, 0);
        c.assign("alice", 0);
        c.resolve(&caller("alice", Role::Agent))
            .expect("owner resolves");
        assert!(c.on_inbound(None, 5, 5, "support"));
        assert_eq!(c.after_hours_sent, Some(3));
    }

    #[test]
    fn routing_sets_team_and_priority_and_adds_labels() {
        let mut c = Conversation::new("n", "c", "support", 0);
        let placement = |team: &str, rule: Option<&str>, priority, labels: &[&str]| Placement {
            team: team.into(),
            rule: rule.map(str::to_string),
            priority,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            fell_back_from: None,
        };
        c.route(&placement(
            "vip",
            Some("gold"),
            Some(Priority::High),
            &["vip", "new"],
        ));
        assert_eq!(
            (c.team(), c.priority(), c.routed_by()),
            ("vip", Priority::High, Some("gold"))
        );
        // A reopen routed by the default: normal priority again, labels only ever added.
        c.route(&placement("support", None, None, &["new", "late"]));
        assert_eq!(
            (c.team(), c.priority(), c.routed_by()),
            ("support", Priority::Normal, None)
        );
        assert_eq!(c.labels(), ["vip", "new", "late"]);
    }

    #[test]
    fn a_breach_is_recorded_once_and_raises_the_priority_once() {
        let mut c = Conversation::new("n", "c", "support", 0);
        assert!(c.breach(SlaKind::FirstResponse));
        assert!(!c.breach(SlaKind::FirstResponse));
        assert_eq!(c.priority(), Priority::High);
        assert!(c.sla().is_breached(SlaKind::FirstResponse));
        assert!(c.breach(SlaKind::Resolution));
        assert_eq!(c.priority(), Priority::Urgent);
    }

    #[test]
    fn the_broker_signs_its_after_hours_reply_and_agents_their_notes() {
        let mut c = Conversation::new("n", "c", "support", 0);
        let reply = c.send_after_hours_reply("closed".into(), 7, 10);
        assert_eq!(
            (reply.author, reply.direction, reply.seq),
            (Author::System, Direction::Outbound, 0)
        );
        assert_eq!(c.after_hours_sent(), Some(7));
        let note = c.append_note(Author::Agent("alice".into()), "hi".into(), 11);
        assert_eq!((note.author.as_str(), note.seq), ("alice", 1));
    }

    #[test]
    fn supervisor_may_resolve_agent_may_not() {
        let mut c = Conversation::new("n", "c", "support", 0);
        c.assign("alice", 0);
        assert_eq!(
            c.resolve(&caller("bob", Role::Agent)),
            Err(DomainError::NotOwner)
        );
        assert_eq!(
            c.resolve(&caller("carol", Role::Supervisor)),
            Ok(Some("alice".into()))
        );
    }

    #[test]
    fn transfer_to_agent_keeps_team_only_when_agent_is_a_member() {
        let mut c = Conversation::new("n", "c", "support", 0);
        let target = |teams: &[&str]| TransferTarget::Agent {
            id: "dave".into(),
            teams: teams.iter().map(|t| t.to_string()).collect(),
        };
        c.transfer(&target(&["sales", "support"]), 1);
        assert_eq!(
            (c.team.as_str(), c.assignee.as_deref()),
            ("support", Some("dave"))
        );
        c.transfer(&target(&["sales"]), 2);
        assert_eq!(c.team, "sales");
        c.transfer(&target(&[]), 3);
        assert_eq!(c.team, "sales");
    }

    #[test]
    fn visibility_by_role() {
        let mut c = Conversation::new("n", "c", "support", 0);
        let bob = caller("bob", Role::Agent);
        assert!(c.visible_to(&bob));
        c.assign("alice", 0);
        assert!(!c.visible_to(&bob));
        assert!(c.visible_to(&caller("carol", Role::Supervisor)));
        let outsider = Caller {
            id: "x".into(),
            role: Role::Supervisor,
            teams: vec!["sales".into()],
        };
        assert!(!c.visible_to(&outsider));
    }

    #[test]
    fn writes_reach_what_reads_show_and_claims_also_the_own_teams() {
        let mut c = Conversation::new("n", "c", "support", 0);
        let bob = caller("bob", Role::Agent);
        let outsider = Caller {
            id: "x".into(),
            role: Role::Supervisor,
            teams: vec!["sales".into()],
        };
        for access in [Access::Write, Access::Own, Access::Claim] {
            assert_eq!(c.check_access(&bob, access), Ok(()), "queued, own team");
            assert_eq!(
                c.check_access(&outsider, access),
                Err(DomainError::NotFound)
            );
        }
        c.assign("alice", 0);
        assert_eq!(
            c.check_access(&bob, Access::Write),
            Err(DomainError::NotFound),
            "a teammate's conversation is no more writable than readable"
        );
        assert_eq!(c.check_access(&bob, Access::Claim), Ok(()));
        assert_eq!(
            c.check_access(&bob, Access::Own),
            Ok(()),
            "the ownership rule answers a teammate (403 not_owner)"
        );
        assert_eq!(
            c.check_access(&outsider, Access::Own),
            Err(DomainError::NotFound)
        );
        assert_eq!(
            c.check_access(&caller("carol", Role::Supervisor), Access::Write),
            Ok(())
        );
        assert_eq!(
            c.check_access(&outsider, Access::Claim),
            Err(DomainError::NotFound)
        );
    }

    fn inbound(c: &Conversation, seq: u64, at: Millis) -> Message {
        Message {
            conversation_id: c.id.clone(),
            seq,
            direction: Direction::Inbound,
            kind: "text".into(),
            text: None,
            wamid: None,
            status: None,
            author: Author::Customer(c.customer.clone()),
            at,
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
    fn only_what_follows_from_the_messages_may_skip_the_record() {
        let mut before = Conversation::new("n", "c", "support", 1_000);
        before.on_inbound(Some("Ana"), 1_000, 1_000, "support");
        before.take_seq();

        // A plain message: sequence and times only, exactly what `absorb` derives.
        let mut after = before.clone();
        after.on_inbound(Some("Ana"), 7_000, 9_000, "support");
        let seq = after.take_seq();
        let m = inbound(&after, seq, 7_000);
        assert!(before.only_absorbed(&after, std::slice::from_ref(&m)));
        let mut folded = before.clone();
        folded.absorb(&m);
        folded.absorb(&m); // twice is once
        assert_eq!(folded, after);
        assert_eq!(folded.last_message_at, 7_000, "the message's own time");
        assert!(!before.only_absorbed(&after, &[]), "a message not shown");

        // Anything else changed needs the record: a new name, a reopen, an owner.
        let mut renamed = before.clone();
        renamed.on_inbound(Some("Ana María"), 7_000, 9_000, "support");
        let seq = renamed.take_seq();
        let m = inbound(&renamed, seq, 7_000);
        assert!(!before.only_absorbed(&renamed, std::slice::from_ref(&m)));
        let mut resolved = before.clone();
        resolved.status = ConversationStatus::Resolved;
        let mut reopened = resolved.clone();
        assert!(reopened.on_inbound(None, 7_000, 9_000, "support"));
        let seq = reopened.take_seq();
        let m = inbound(&reopened, seq, 7_000);
        assert!(!resolved.only_absorbed(&reopened, std::slice::from_ref(&m)));
        let mut owned = before.clone();
        owned.assign("alice", 9_000);
        assert!(!before.only_absorbed(&owned, &[]));
    }
}
