//! The change feed behind `GET /api/v1/events`.
//!
//! Conversation actors publish an [`Event`] after a change is durable; the bus offers it to each
//! subscriber it concerns whose agent may see it as that agent is at the event (see
//! [`EventBus`]: subscribers are indexed by team and agent, so an event reaches only its
//! audience). Each subscriber has a bounded queue: one that falls more than `CAPACITY` events
//! behind is told it lagged (so it can re-read the list) instead of slowing the publishers down;
//! it takes whatever is queued in one batch. Wake-ups are coalesced: a stream is woken at most
//! once per [`FLUSH_TICK`] (the first event after a quiet tick wakes it at once), so a busy stream
//! is written once per tick, not once per event or per push. An agent's change (teams, role, disabled) reaches the index before the change
//! is answered ([`EventBus::refresh_agent`]). Publishing only hands the event to one dispatcher
//! thread (`event-fanout`), which offers events in publishing order, so an actor's answer never
//! waits for the fan-out; its backlog is bounded by [`MAX_BACKLOG`] (beyond: dropped and counted
//! to every stream as `lagged`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::domain::{Caller, Conversation, ConversationStatus, Message, Role, SlaKind};

/// Events buffered per subscriber before it is told it lagged.
pub const CAPACITY: usize = 4096;

/// Shortest time between two wake-ups of one stream by the dispatcher. Events offered within a
/// tick of the last wake-up wait for the next one, so at 10,000 messages/s a stream is written
/// ~200 times a second with dozens of events each instead of once per event (each write is a
/// loopback TCP send and a wake-up of the reader); an event after a quiet tick wakes its streams
/// at once. Adds at most this much to an event's latency (the target's p99 budget is 20 ms).
pub const FLUSH_TICK: Duration = Duration::from_millis(5);

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
    /// The event's wire form (its whole SSE frame), rendered once by the first subscriber that
    /// sends it and shared by all others: fan-out to many agents neither re-serializes nor
    /// copies it per agent.
    pub rendered: OnceLock<Bytes>,
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

/// The change feed: a registry of subscribers, indexed by what they may see.
///
/// Publishing offers an event only to the subscribers it may concern — admins, the members and
/// supervisors of the conversation's team (and of its previous team), its assignee (and previous
/// assignee) — and checks [`Event::visible_to`] with each one's caller as it is now (kept current
/// by [`EventBus::refresh_agent`], which the people service calls inside every change), so an
/// event of one team wakes no stream of another and the per-event cost grows with the audience,
/// not with every open stream. Each subscriber's queue holds at most [`CAPACITY`] events; when it
/// is full the oldest is dropped and counted, and the subscriber's next batch starts with that
/// count (`lagged`), as a broadcast channel would do.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
    /// The dispatcher's feed (`None` only if its thread could not be started: then publishers
    /// offer events themselves).
    feed: Option<Arc<Feed>>,
}

/// Events published and not yet offered, at most: beyond, an event is dropped and every stream
/// is told it lagged by one more (the dispatcher is far behind; publishers never wait for it).
pub const MAX_BACKLOG: usize = 65_536;

struct BusInner {
    registry: RwLock<Registry>,
    subscribers: AtomicUsize,
    next_id: AtomicU64,
    /// Events sent to the dispatcher and not yet offered.
    backlog: AtomicUsize,
    /// Events dropped because the backlog was full, not yet counted to the streams.
    dropped: AtomicU64,
}

enum Msg {
    Event(Arc<Event>),
    #[cfg(test)]
    Flush(std::sync::mpsc::Sender<()>),
}

/// Dropping the last one ends the dispatcher thread.
struct Feed {
    tx: std::sync::mpsc::Sender<Msg>,
}

/// One subscriber's queue and wake-up.
struct Slot {
    id: u64,
    agent: String,
    types: KindSet,
    queue: Mutex<Queue>,
    ready: Notify,
    /// Set while the slot waits in the dispatcher's list of slots to wake at the next tick, so
    /// it is listed (and woken) once per tick however many events it was offered.
    wake_pending: AtomicBool,
}

#[derive(Default)]
struct Queue {
    events: VecDeque<Arc<Event>>,
    missed: u64,
}

#[derive(Clone)]
struct Member {
    caller: Arc<Caller>,
    slot: Arc<Slot>,
}

/// Who listens, and the index built from it (rebuilt whole on every subscribe, unsubscribe
/// and people change: those are rare next to events, and a thousand streams rebuild in
/// microseconds).
#[derive(Default)]
struct Registry {
    /// Every subscriber with its caller now (`None` once disabled: offered nothing).
    subs: HashMap<u64, (Option<Arc<Caller>>, Arc<Slot>)>,
    /// Admins: every event concerns them.
    admins: Vec<Member>,
    /// Agents and supervisors by each of their teams.
    by_team: HashMap<String, Vec<Member>>,
    /// Everyone by agent id (the assignee path: one may own a conversation outside its teams).
    by_agent: HashMap<String, Vec<Member>>,
}

impl Registry {
    fn reindex(&mut self) {
        self.admins.clear();
        self.by_team.clear();
        self.by_agent.clear();
        for (caller, slot) in self.subs.values() {
            let Some(caller) = caller else { continue };
            let m = Member {
                caller: caller.clone(),
                slot: slot.clone(),
            };
            self.by_agent
                .entry(caller.id.clone())
                .or_default()
                .push(m.clone());
            if caller.role == Role::Admin {
                self.admins.push(m);
            } else {
                for t in &caller.teams {
                    self.by_team.entry(t.clone()).or_default().push(m.clone());
                }
            }
        }
    }
}

/// What a subscriber receives at once: how many events it missed since its last batch (it
/// fell more than [`CAPACITY`] behind), then the events still queued, oldest first.
pub struct Batch {
    pub missed: u64,
    pub events: Vec<Arc<Event>>,
}

/// An open subscription; dropping it unsubscribes.
pub struct Subscription {
    bus: Arc<BusInner>,
    slot: Arc<Slot>,
}

impl Subscription {
    /// The next batch, waiting until there is one. Cancel-safe: nothing is taken from the
    /// queue before the wait is over.
    pub async fn next_batch(&self) -> Batch {
        loop {
            // Registered before looking, so a push between the look and the wait still wakes.
            let ready = self.slot.ready.notified();
            {
                let mut q = self.slot.queue.lock();
                if q.missed > 0 || !q.events.is_empty() {
                    return Batch {
                        missed: std::mem::take(&mut q.missed),
                        events: q.events.drain(..).collect(),
                    };
                }
            }
            ready.await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut r = self.bus.registry.write();
        r.subs.remove(&self.slot.id);
        r.reindex();
        self.bus.subscribers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> Self {
        let inner = Arc::new(BusInner {
            registry: RwLock::new(Registry::default()),
            subscribers: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            backlog: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let dispatcher = inner.clone();
        let feed = std::thread::Builder::new()
            .name("event-fanout".into())
            .spawn(move || dispatch(dispatcher, rx))
            .map(|_| Arc::new(Feed { tx }))
            .map_err(|e| tracing::warn!(error = %e, "no event dispatcher thread; publishers offer events themselves"))
            .ok();
        Self { inner, feed }
    }

    /// Hands `event` to the dispatcher, which offers it to each subscriber it concerns that
    /// may see it and asked for its kind, in publishing order. The publisher (a conversation
    /// actor, before it answers) pays one channel send, not one push per stream.
    pub fn publish(&self, event: Event) {
        // No subscribers is normal; nothing to do.
        if !self.has_subscribers() {
            return;
        }
        let ev = Arc::new(event);
        let Some(feed) = &self.feed else {
            self.inner.offer(&ev, &mut |slot| slot.ready.notify_one());
            return;
        };
        if self.inner.backlog.fetch_add(1, Ordering::AcqRel) >= MAX_BACKLOG {
            self.inner.backlog.fetch_sub(1, Ordering::AcqRel);
            self.inner.dropped.fetch_add(1, Ordering::AcqRel);
            return;
        }
        if feed.tx.send(Msg::Event(ev)).is_err() {
            self.inner.backlog.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Waits until everything published so far has been offered.
    #[cfg(test)]
    fn settle(&self) {
        if let Some(feed) = &self.feed {
            let (tx, rx) = std::sync::mpsc::channel();
            if feed.tx.send(Msg::Flush(tx)).is_ok() {
                let _ = rx.recv();
            }
        }
    }

    /// Whether anyone listens: publishers skip building events (a conversation clone each)
    /// when nobody does.
    pub fn has_subscribers(&self) -> bool {
        self.inner.subscribers.load(Ordering::Acquire) > 0
    }

    /// Subscribes `caller` (its events of `types` only).
    pub fn subscribe(&self, caller: Arc<Caller>, types: KindSet) -> Subscription {
        let slot = Arc::new(Slot {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            agent: caller.id.clone(),
            types,
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            wake_pending: AtomicBool::new(false),
        });
        let mut r = self.inner.registry.write();
        r.subs.insert(slot.id, (Some(caller), slot.clone()));
        r.reindex();
        self.inner.subscribers.fetch_add(1, Ordering::AcqRel);
        Subscription {
            bus: self.inner.clone(),
            slot,
        }
    }

    /// An agent's teams, role or state changed (`None`: disabled): its streams are offered
    /// events by what it is now, from the next event published after this returns.
    pub fn refresh_agent(&self, id: &str, caller: Option<Arc<Caller>>) {
        let mut r = self.inner.registry.write();
        let mut any = false;
        for (c, slot) in r.subs.values_mut() {
            if slot.agent == id {
                *c = caller.clone();
                any = true;
            }
        }
        if any {
            r.reindex();
        }
    }
}

impl BusInner {
    /// Offers `ev` to each subscriber it concerns that may see it and asked for its kind;
    /// `wake` is called for each slot it was queued for.
    fn offer(&self, ev: &Arc<Event>, wake: &mut impl FnMut(&Arc<Slot>)) {
        let r = self.registry.read();
        let c = &ev.conversation;
        let team = |t: &str| r.by_team.get(t).map(Vec::as_slice).unwrap_or_default();
        let agent = |a: Option<&str>| {
            a.and_then(|a| r.by_agent.get(a))
                .map(Vec::as_slice)
                .unwrap_or_default()
        };
        let previous_team = ev
            .previous_team
            .as_deref()
            .filter(|t| *t != c.team())
            .map(team)
            .unwrap_or_default();
        let previous_assignee = match ev.previous_assignee.as_deref() {
            a @ Some(_) if a != c.assignee.as_deref() => agent(a),
            _ => &[],
        };
        // The first two lists never share a subscriber (admins are in no team list); the others
        // may overlap them, so what was offered is remembered for those.
        let mut offered: Vec<u64> = Vec::new();
        let lists: [(&[Member], bool); 5] = [
            (&r.admins, false),
            (team(c.team()), false),
            (previous_team, true),
            (agent(c.assignee.as_deref()), true),
            (previous_assignee, true),
        ];
        let dedup = lists[2..].iter().any(|(l, _)| !l.is_empty());
        for (list, check) in lists {
            for m in list {
                if check && offered.contains(&m.slot.id) {
                    continue;
                }
                if !m.slot.types.contains(ev.kind) || !ev.visible_to(&m.caller) {
                    continue;
                }
                if dedup {
                    offered.push(m.slot.id);
                }
                m.slot.push(ev);
                wake(&m.slot);
            }
        }
    }

    /// Tells every stream of the events dropped for a full backlog (as `lagged`).
    fn count_dropped(&self, wake: &mut impl FnMut(&Arc<Slot>)) {
        let n = self.dropped.swap(0, Ordering::AcqRel);
        if n == 0 {
            return;
        }
        for (_, slot) in self.registry.read().subs.values() {
            slot.queue.lock().missed += n;
            wake(slot);
        }
    }
}

/// The slots offered something since the dispatcher last woke streams, each listed once
/// (bounded by the number of subscribers).
#[derive(Default)]
struct Wakes {
    slots: Vec<Arc<Slot>>,
}

impl Wakes {
    fn add(&mut self, slot: &Arc<Slot>) {
        if !slot.wake_pending.swap(true, Ordering::AcqRel) {
            self.slots.push(slot.clone());
        }
    }

    /// Wakes every listed stream.
    fn wake_all(&mut self) {
        for slot in self.slots.drain(..) {
            // Cleared first: an event offered after this is listed for the next tick.
            slot.wake_pending.store(false, Ordering::Release);
            slot.ready.notify_one();
        }
    }
}

/// The dispatcher thread: offers each event in publishing order until the bus is gone, and
/// wakes the streams it queued events for at most once per [`FLUSH_TICK`].
fn dispatch(inner: Arc<BusInner>, rx: std::sync::mpsc::Receiver<Msg>) {
    use std::sync::mpsc::RecvTimeoutError;
    let mut wakes = Wakes::default();
    // When streams were last woken (`None`: not within a tick, so the next event wakes at once).
    let mut last_wake: Option<Instant> = None;
    loop {
        let due = last_wake.map(|at| at + FLUSH_TICK);
        let msg = match due {
            Some(due) if !wakes.slots.is_empty() => {
                match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(msg) => Some(msg),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            _ => match rx.recv() {
                Ok(msg) => Some(msg),
                Err(_) => break,
            },
        };
        match msg {
            Some(Msg::Event(ev)) => {
                inner.backlog.fetch_sub(1, Ordering::AcqRel);
                inner.count_dropped(&mut |s| wakes.add(s));
                inner.offer(&ev, &mut |s| wakes.add(s));
            }
            #[cfg(test)]
            Some(Msg::Flush(done)) => {
                let _ = done.send(());
            }
            None => {}
        }
        if wakes.slots.is_empty() {
            continue;
        }
        let now = Instant::now();
        if last_wake.is_none_or(|at| now >= at + FLUSH_TICK) {
            wakes.wake_all();
            last_wake = Some(now);
        }
    }
    wakes.wake_all();
}

impl Slot {
    /// Queues `ev`; the dispatcher (or a publisher without one) wakes the stream.
    fn push(&self, ev: &Arc<Event>) {
        let mut q = self.queue.lock();
        if q.events.len() >= CAPACITY {
            q.events.pop_front();
            q.missed += 1;
        }
        q.events.push_back(ev.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;
    use std::future::Future;

    fn caller(id: &str, role: Role, teams: &[&str]) -> Arc<Caller> {
        Arc::new(Caller {
            id: id.into(),
            role,
            teams: teams.iter().map(|t| t.to_string()).collect(),
        })
    }

    fn event(kind: EventKind, team: &str, assignee: Option<&str>) -> Event {
        let mut c = Conversation::new("n", "cust", team, 1);
        if let Some(a) = assignee {
            c.status = ConversationStatus::Assigned;
            c.assignee = Some(a.into());
        }
        Event {
            kind,
            conversation: c,
            message: None,
            previous_team: None,
            previous_status: None,
            previous_assignee: None,
            sla: None,
            rendered: Default::default(),
        }
    }

    /// What is queued for `sub` once everything published is offered.
    fn queued(bus: &EventBus, sub: &Subscription) -> (u64, usize) {
        bus.settle();
        let q = sub.slot.queue.lock();
        (q.missed, q.events.len())
    }

    #[test]
    fn an_event_is_offered_only_to_its_audience() {
        let bus = EventBus::new();
        let support = bus.subscribe(caller("a", Role::Agent, &["support"]), KindSet::ALL);
        let sales = bus.subscribe(caller("b", Role::Agent, &["sales"]), KindSet::ALL);
        let boss = bus.subscribe(caller("s", Role::Supervisor, &["sales"]), KindSet::ALL);
        let root = bus.subscribe(caller("r", Role::Admin, &["support"]), KindSet::ALL);
        let narrow = bus.subscribe(
            caller("a", Role::Agent, &["support"]),
            KindSet::parse("conversation.*").expect("valid"),
        );
        bus.publish(event(EventKind::MessageCreated, "support", None));
        assert_eq!(queued(&bus, &support), (0, 1));
        assert_eq!(
            queued(&bus, &sales),
            (0, 0),
            "another team's event is not queued"
        );
        assert_eq!(
            queued(&bus, &boss),
            (0, 0),
            "nor for a supervisor of another team"
        );
        assert_eq!(queued(&bus, &root), (0, 1));
        assert_eq!(
            queued(&bus, &narrow),
            (0, 0),
            "a filtered-out type is not queued"
        );
        // Assigned to `b` outside its teams: the owner hears it, once; teammates of the team
        // no longer see a conversation someone owns.
        bus.publish(event(EventKind::MessageCreated, "support", Some("b")));
        assert_eq!(queued(&bus, &sales), (0, 1));
        assert_eq!(queued(&bus, &support), (0, 1));
        bus.publish(event(EventKind::MessageCreated, "sales", Some("b")));
        assert_eq!(
            queued(&bus, &sales),
            (0, 2),
            "owner and team member: one copy"
        );
        assert_eq!(queued(&bus, &boss), (0, 1));
        drop(support);
        drop(sales);
        drop(boss);
        drop(root);
        drop(narrow);
        assert!(!bus.has_subscribers());
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_counts_them_and_other_teams_do_not_fill_it() {
        let bus = EventBus::new();
        let support = bus.subscribe(caller("a", Role::Agent, &["support"]), KindSet::ALL);
        let sales = bus.subscribe(caller("b", Role::Agent, &["sales"]), KindSet::ALL);
        for _ in 0..CAPACITY + 10 {
            bus.publish(event(EventKind::MessageCreated, "sales", None));
        }
        assert_eq!(queued(&bus, &sales), (10, CAPACITY));
        assert_eq!(
            queued(&bus, &support),
            (0, 0),
            "a stream never lags on events it may not see"
        );
        bus.settle();
        let batch = futures_util::FutureExt::now_or_never(sales.next_batch()).expect("ready");
        assert_eq!((batch.missed, batch.events.len()), (10, CAPACITY));
        assert_eq!(queued(&bus, &sales), (0, 0));
        assert!(futures_util::FutureExt::now_or_never(sales.next_batch()).is_none());
    }

    #[test]
    fn an_agent_change_applies_to_the_next_event() {
        let bus = EventBus::new();
        let sub = bus.subscribe(caller("a", Role::Agent, &["support"]), KindSet::ALL);
        bus.refresh_agent("a", Some(caller("a", Role::Agent, &["sales"])));
        bus.publish(event(EventKind::MessageCreated, "support", None));
        assert_eq!(queued(&bus, &sub), (0, 0));
        bus.publish(event(EventKind::MessageCreated, "sales", None));
        assert_eq!(queued(&bus, &sub), (0, 1));
        bus.refresh_agent("a", None);
        bus.publish(event(EventKind::MessageCreated, "sales", None));
        assert_eq!(
            queued(&bus, &sub),
            (0, 1),
            "a disabled agent is offered nothing"
        );
        bus.refresh_agent("a", Some(caller("a", Role::Admin, &[])));
        bus.publish(event(EventKind::ConversationCreated, "vip", None));
        assert_eq!(queued(&bus, &sub), (0, 2), "an admin hears every team");
    }

    #[test]
    fn a_transfer_reaches_those_who_saw_it_before_once() {
        let bus = EventBus::new();
        let before = bus.subscribe(caller("a", Role::Agent, &["support"]), KindSet::ALL);
        let both = bus.subscribe(
            caller("b", Role::Agent, &["support", "sales"]),
            KindSet::ALL,
        );
        let mut ev = event(EventKind::ConversationTransferred, "sales", None);
        ev.previous_team = Some("support".into());
        ev.previous_status = Some(ConversationStatus::Queued);
        bus.publish(ev);
        assert_eq!(queued(&bus, &before), (0, 1));
        assert_eq!(queued(&bus, &both), (0, 1));
    }

    /// Counts the wake-ups of a future polled by hand.
    struct CountingWaker(AtomicUsize);

    impl std::task::Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    #[test]
    fn a_stream_is_woken_once_per_tick_however_many_events_it_is_offered() {
        let bus = EventBus::new();
        let sub = bus.subscribe(caller("a", Role::Agent, &["support"]), KindSet::ALL);
        // The dispatcher's tick is wall-clock time: an attempt where this thread was held up
        // for a whole tick proves nothing and is tried again.
        for _attempt in 0..50 {
            std::thread::sleep(FLUSH_TICK * 2);
            let before = Instant::now();
            bus.publish(event(EventKind::MessageCreated, "support", None));
            bus.settle();
            let first = futures_util::FutureExt::now_or_never(sub.next_batch())
                .expect("the first event after a quiet tick wakes its stream at once");
            // (With what an earlier, inconclusive attempt left queued.)
            assert!(!first.events.is_empty());
            let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
            let waker = std::task::Waker::from(counter.clone());
            let mut cx = std::task::Context::from_waker(&waker);
            let mut next = Box::pin(sub.next_batch());
            assert!(next.as_mut().poll(&mut cx).is_pending());
            for _ in 0..3 {
                bus.publish(event(EventKind::MessageCreated, "support", None));
            }
            bus.settle();
            let woken_early = counter.0.load(Ordering::Acquire);
            if before.elapsed() >= FLUSH_TICK {
                continue;
            }
            assert_eq!(
                woken_early, 0,
                "events offered within a tick of the last wake-up do not wake the stream"
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while counter.0.load(Ordering::Acquire) == 0 {
                assert!(Instant::now() < deadline, "never woken at the tick");
                std::thread::sleep(Duration::from_millis(1));
            }
            assert_eq!(counter.0.load(Ordering::Acquire), 1, "one wake-up");
            let std::task::Poll::Ready(batch) = next.as_mut().poll(&mut cx) else {
                panic!("woken with nothing queued");
            };
            assert_eq!(batch.events.len(), 3, "the tick's events in one batch");
            return;
        }
        panic!("no attempt ran within a tick: the machine is too busy to tell");
    }

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
