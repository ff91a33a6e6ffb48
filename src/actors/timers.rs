//! The timer service: wakes a conversation when one of its deadlines falls due.
//!
//! Conversation actors passivate when idle, so they cannot hold their own timers. Instead each
//! actor tells this service the earliest instant it must look at itself again (SLA clocks,
//! `reassign_after`), after every durable change; at that instant the service sends it a `Tick`
//! (activating it from storage if needed) and the actor re-checks its deadlines against the
//! current policies and clock. A stale entry only causes a harmless extra check.
//!
//! Bounds: one entry per conversation (a new schedule replaces the old one), so memory follows
//! open conversations with running deadlines; at most [`MAX_FIRING`] ticks are in flight at once.
//! The channel is unbounded because its producers are conversation actors, one message per
//! durable change, which the webhook admission and API already bound.
//!
//! The service sleeps on tokio's timer but reads time from the injected [`Clock`], waking at least
//! every [`MAX_TIMER_SLEEP`] and whenever a manual clock is moved, so tests step through hours of
//! business time without sleeping.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::ports::Conversations;
use super::{ConversationMsg, Ctx};
use crate::clock::{SharedClock, MAX_TIMER_SLEEP};
use crate::domain::Millis;

/// Ticks delivered concurrently.
pub const MAX_FIRING: usize = 64;
/// When a tick could not be delivered, try again this much later.
const RETRY_MS: Millis = 5_000;

#[derive(Clone)]
pub struct Timers {
    tx: mpsc::UnboundedSender<(String, Option<Millis>)>,
}

impl Timers {
    /// Starts the service; it ticks `conversations` (nothing fires until that handle is bound).
    pub fn start(conversations: Conversations, clock: SharedClock) -> (Timers, JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let timers = Timers { tx };
        let handle = tokio::spawn(run(rx, conversations, clock, timers.clone()));
        (timers, handle)
    }

    /// Replaces the conversation's wake-up time (`None`: nothing to wait for).
    pub fn schedule(&self, conversation: &str, at: Option<Millis>) {
        let _ = self.tx.send((conversation.to_string(), at));
    }
}

async fn run(
    mut rx: mpsc::UnboundedReceiver<(String, Option<Millis>)>,
    conversations: Conversations,
    clock: SharedClock,
    me: Timers,
) {
    let mut due: BTreeSet<(Millis, String)> = BTreeSet::new();
    let mut by_conv: HashMap<String, Millis> = HashMap::new();
    let firing = Arc::new(Semaphore::new(MAX_FIRING));
    loop {
        let now = clock.now_ms();
        while let Some((at, id)) = due.first().cloned() {
            if at > now {
                break;
            }
            // Waits while MAX_FIRING ticks are in flight: at most that many tasks ever exist.
            let Ok(permit) = firing.clone().acquire_owned().await else {
                return;
            };
            due.pop_first();
            by_conv.remove(&id);
            fire(&conversations, permit, &me, id, now);
        }
        let wait = due
            .first()
            .map(|(at, _)| Duration::from_millis(u64::try_from(at - now).unwrap_or(0)))
            .unwrap_or(MAX_TIMER_SLEEP)
            .min(MAX_TIMER_SLEEP);
        let moved = async {
            match clock.changed() {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = rx.recv() => {
                let Some((id, at)) = msg else { return };
                if let Some(old) = by_conv.remove(&id) {
                    due.remove(&(old, id.clone()));
                }
                if let Some(at) = at {
                    due.insert((at, id.clone()));
                    by_conv.insert(id, at);
                }
            }
            _ = tokio::time::sleep(wait) => {}
            _ = moved => {}
        }
    }
}

fn fire(
    conversations: &Conversations,
    permit: OwnedSemaphorePermit,
    me: &Timers,
    id: String,
    now: Millis,
) {
    if !conversations.is_live() {
        return;
    }
    let (conversations, me) = (conversations.clone(), me.clone());
    tokio::spawn(async move {
        let _permit = permit;
        let r = conversations
            .ask(&id, |reply| ConversationMsg::Tick { reply })
            .await;
        if let Err(e) = r {
            if !matches!(e, crate::error::Error::Domain(_)) {
                tracing::warn!(conversation = %id, error = %e, "deadline check failed; retrying");
                me.schedule(&id, Some(now.saturating_add(RETRY_MS)));
            }
        }
    });
}

/// Gives the timer service the next deadline of every open conversation: at start-up (SLA clocks
/// and reassignment survive restarts because they are computed from durable state) and after an
/// admin changed the policies (new or changed targets apply to conversations already open).
pub async fn schedule_open(ctx: Arc<Ctx>) {
    let policies = ctx.policies();
    for (team, policy) in &policies.teams {
        if !policy.has_deadlines() {
            continue;
        }
        for status in [
            crate::domain::ConversationStatus::Queued,
            crate::domain::ConversationStatus::Assigned,
        ] {
            // Page by page: a million waiting conversations are never in memory at once.
            let scan = ctx.store.scan_status(status, team, |convs| {
                for c in convs {
                    if let Some(at) = policies.next_deadline(&c, ctx.now()) {
                        ctx.schedule(&c.id, Some(at));
                    }
                }
            });
            if let Err(e) = scan.await {
                tracing::error!(%team, error = %e, "cannot schedule deadlines of open conversations");
            }
        }
    }
    // Conversations the bot holds for a closed team wake at its opening (now, if it is open).
    if ctx.automation.get().is_some() {
        let now = ctx.now();
        let wake = ctx.clone();
        let scan = ctx.store.scan_bot_waiting(BOT_WAITING_PAGE, move |page| {
            let policies = wake.policies();
            for (id, team) in page {
                let at = match policies.team(&team) {
                    Some(p) if !p.hours.is_open(now) => p.hours.next_open(now),
                    _ => Some(now),
                };
                wake.schedule(&id, at);
            }
        });
        if let Err(e) = scan.await {
            tracing::error!(error = %e, "cannot schedule the conversations the bot holds for closed teams");
        }
    }
}

/// Conversations the bot holds for closed teams read per page at start-up.
const BOT_WAITING_PAGE: usize = 1_000;
