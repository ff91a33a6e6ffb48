//! Wall-clock time as the core sees it, injectable.
//!
//! Business hours, SLA deadlines and reassignment timers are all about wall-clock instants in a
//! team's time zone, so tests must be able to stand at "Friday 16:58 in Berlin" or step across a
//! DST change without sleeping. Everything in the core that reads the time goes through [`Clock`];
//! production uses [`SystemClock`], tests a [`ManualClock`] they move by hand.
//!
//! Timers never sleep on the clock itself (a manual clock does not tick): they sleep on tokio's
//! timer for at most [`MAX_TIMER_SLEEP`] and re-read the clock, and [`Clock::changed`] wakes them
//! at once when a manual clock is moved.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::domain::Millis;

/// Longest a timer sleeps before it looks at the clock again.
pub const MAX_TIMER_SLEEP: Duration = Duration::from_secs(1);

pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> Millis;
    /// Notified whenever the clock jumps (never, for the system clock).
    fn changed(&self) -> Option<&Notify> {
        None
    }
}

pub type SharedClock = Arc<dyn Clock>;

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        chrono::Utc::now().timestamp_millis()
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicI64,
    changed: Notify,
}

impl ManualClock {
    pub fn new(now: Millis) -> Arc<Self> {
        Arc::new(Self {
            now: AtomicI64::new(now),
            changed: Notify::new(),
        })
    }

    pub fn set(&self, now: Millis) {
        self.now.store(now, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    pub fn advance(&self, by: Duration) {
        let ms = Millis::try_from(by.as_millis()).unwrap_or(Millis::MAX);
        self.now.fetch_add(ms, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
    fn changed(&self) -> Option<&Notify> {
        Some(&self.changed)
    }
}
