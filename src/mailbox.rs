//! A light actor for entities that exist by the hundred thousand: one mailbox, no resident task.
//!
//! Conversations are the broker's most numerous actors, and most live ones are idle between
//! messages. A ractor actor keeps a tokio task and four channels (signal, stop, supervision,
//! messages) per actor — about 9 KB each, measured (BENCHMARKS.md, memory) — and its `call`
//! adds a registry lookup, boxing and a select over those channels. A [`Mailbox`] is only its
//! state, a queue and a few flags behind one short lock: a task exists only while there is work
//! (spawned by the send that finds the mailbox idle; it lingers one scheduling round after the
//! queue empties, so a caller's next command usually finds it still running).
//!
//! A caller that waits for its answer anyway ([`Mailbox::submit`]) and finds the mailbox idle
//! handles its own message on its own task: no task spawn, no hop through the run queue there and
//! back, and an await inside the handler (a commit) wakes the caller directly. Whatever queued
//! meanwhile goes to a spawned runner, so the caller never handles other callers' messages.
//!
//! Invariants (what makes it an actor):
//! - **Single writer.** At most one holder of the state at a time (`running`): the runner task,
//!   or a caller handling its own message inline; messages are handled one at a time, in
//!   arrival order.
//! - **No lock across `.await`.** The lock guards the queue and flags; the runner takes the state
//!   out of it before handling and puts it back when the queue is empty.
//! - **Bounded.** At most [`MAX_QUEUED`] messages wait; a sender beyond that is refused
//!   ([`Rejected::Full`]) instead of growing memory without limit.
//! - **Retirement is final.** A retired mailbox (idle passivation, a panic, shutdown) refuses
//!   every message ([`Rejected::Retired`]), so the owner re-activates a fresh one from storage;
//!   messages queued when a handler panicked are dropped, which drops their reply ports, so
//!   their callers learn it too.
//! - **Supervision.** A panicking handler is caught; the mailbox retires and
//!   [`Handler::failed`] decides what happens next (for conversations: restart from storage).
//! - **Handlers run to completion.** A caller handling its message inline may be cancelled (an
//!   HTTP client going away drops the request's future); the unfinished handler then moves to a
//!   spawned task ([`Inline`]'s `Drop`) instead of being dropped half-way with the state in it.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::sync::Notify;

/// Most messages one mailbox holds waiting. Callers normally wait for their answer, so a queue
/// this long means a stalled handler (e.g. storage); refusing keeps memory bounded.
pub const MAX_QUEUED: usize = 1024;

/// The behaviour behind a mailbox.
pub trait Handler: Send + Sync + Sized + 'static {
    type Msg: Send + 'static;
    type State: Send + 'static;

    /// Handles one message. Replies go out through the message's own reply port. The future is
    /// part of the runner task, which is spawned per burst of messages: keep it small (box large
    /// per-message state machines), since spawning copies it.
    fn handle<'a>(
        &'a self,
        state: &'a mut Self::State,
        msg: Self::Msg,
    ) -> impl Future<Output = ()> + Send + 'a;

    /// Counts runner tasks, so shutdown can wait for handlers in progress.
    fn runners(&self) -> &Runners;

    /// Called once after a handler panicked; the mailbox is already retired.
    fn failed(&self, mailbox: &Arc<Mailbox<Self>>, panic: String);
}

/// Why a message was not accepted; the message comes back.
#[derive(Debug)]
pub enum Rejected<M> {
    Retired(M),
    Full(M),
}

/// Number of runner tasks in progress across many mailboxes, with a way to wait for none.
#[derive(Debug, Default)]
pub struct Runners {
    busy: AtomicUsize,
    idle: Notify,
}

impl Runners {
    fn enter(&self) {
        self.busy.fetch_add(1, Ordering::AcqRel);
    }

    fn leave(&self) {
        if self.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    pub fn busy(&self) -> usize {
        self.busy.load(Ordering::Acquire)
    }

    /// Waits until no runner is in progress, or `limit` passed; returns whether none is.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.busy() == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

struct Inner<H: Handler> {
    queue: VecDeque<H::Msg>,
    /// None while a runner holds it, and after retirement. Boxed so the runner moves a pointer.
    state: Option<Box<H::State>>,
    running: bool,
    retired: bool,
    last_active: Instant,
}

impl<H: Handler> Inner<H> {
    /// Nothing left to do: the state goes back and the mailbox may passivate from now on.
    fn go_idle(&mut self, state: Box<H::State>) {
        self.state = Some(state);
        self.running = false;
        self.last_active = Instant::now();
        // An idle mailbox keeps no queue buffer (most are idle most of the time).
        self.queue = VecDeque::new();
    }
}

pub struct Mailbox<H: Handler> {
    key: Arc<str>,
    handler: H,
    inner: parking_lot::Mutex<Inner<H>>,
}

impl<H: Handler> Mailbox<H> {
    pub fn new(key: Arc<str>, handler: H, state: H::State) -> Arc<Self> {
        Arc::new(Self {
            key,
            handler,
            inner: parking_lot::Mutex::new(Inner {
                queue: VecDeque::new(),
                state: Some(Box::new(state)),
                running: false,
                retired: false,
                last_active: Instant::now(),
            }),
        })
    }

    /// The key it is registered under.
    pub fn key(&self) -> &Arc<str> {
        &self.key
    }

    /// Queues a message, starting a runner when none is in progress. Must be called within a
    /// tokio runtime.
    pub fn send(self: &Arc<Self>, msg: H::Msg) -> Result<(), Rejected<H::Msg>> {
        let start = {
            let mut g = self.inner.lock();
            if g.retired {
                return Err(Rejected::Retired(msg));
            }
            if g.queue.len() >= MAX_QUEUED {
                return Err(Rejected::Full(msg));
            }
            // `last_active` is stamped when the runner goes idle: a running mailbox never retires.
            g.queue.push_back(msg);
            !std::mem::replace(&mut g.running, true)
        };
        if start {
            self.handler.runners().enter();
            tokio::spawn(Arc::clone(self).run());
        }
        Ok(())
    }

    /// Like [`Mailbox::send`], for a caller that will wait for the answer: when the mailbox is
    /// idle the message is not queued but returned as an [`Inline`] run, which the caller must
    /// await (it handles the message on the caller's task, then hands anything queued meanwhile
    /// to a runner). `Ok(None)`: queued behind the handler in progress.
    pub fn submit(self: &Arc<Self>, msg: H::Msg) -> Result<Option<Inline>, Rejected<H::Msg>> {
        let state = {
            let mut g = self.inner.lock();
            if g.retired {
                return Err(Rejected::Retired(msg));
            }
            if g.running {
                if g.queue.len() >= MAX_QUEUED {
                    return Err(Rejected::Full(msg));
                }
                g.queue.push_back(msg);
                return Ok(None);
            }
            match g.state.take() {
                Some(state) => {
                    g.running = true;
                    state
                }
                // Not running and no state only happens once retired (checked above).
                None => return Err(Rejected::Retired(msg)),
            }
        };
        self.handler.runners().enter();
        let run = Arc::clone(self).run_inline(state, msg);
        Ok(Some(Inline(Some(Box::pin(run)))))
    }

    async fn run(self: Arc<Self>) {
        let state = self.inner.lock().state.take();
        if let Some(state) = state {
            self.drain(state).await;
        }
        self.handler.runners().leave();
    }

    /// The rest of a mailbox's work after an inline run, on its own task.
    async fn run_with(self: Arc<Self>, state: Box<H::State>) {
        self.drain(state).await;
        self.handler.runners().leave();
    }

    /// Handles the caller's own message, then gives the state back, or to a runner when others
    /// queued meanwhile (no lingering: the caller is waiting to return).
    async fn run_inline(self: Arc<Self>, mut state: Box<H::State>, msg: H::Msg) {
        if self.handle_one(&mut state, msg).await {
            let rest = {
                let mut g = self.inner.lock();
                if g.queue.is_empty() {
                    g.go_idle(state);
                    None
                } else {
                    Some(state)
                }
            };
            if let Some(state) = rest {
                self.handler.runners().enter();
                tokio::spawn(Arc::clone(&self).run_with(state));
            }
        }
        self.handler.runners().leave();
    }

    /// Handles one message; on a panic retires the mailbox, drops what is queued, tells the
    /// handler and returns false.
    async fn handle_one(self: &Arc<Self>, state: &mut H::State, msg: H::Msg) -> bool {
        let handled = AssertUnwindSafe(self.handler.handle(state, msg))
            .catch_unwind()
            .await;
        let Err(panic) = handled else {
            return true;
        };
        let dropped = {
            let mut g = self.inner.lock();
            g.retired = true;
            g.running = false;
            std::mem::take(&mut g.queue)
        };
        drop(dropped);
        self.handler.failed(self, panic_message(panic.as_ref()));
        false
    }

    /// Handles queued messages until none is left, then gives the state back.
    async fn drain(self: &Arc<Self>, mut state: Box<H::State>) {
        let mut lingered = false;
        loop {
            let msg = {
                let mut g = self.inner.lock();
                match g.queue.pop_front() {
                    Some(m) => Some(m),
                    None if !lingered => None,
                    None => {
                        g.go_idle(state);
                        return;
                    }
                }
            };
            let Some(msg) = msg else {
                // Empty: stay one scheduling round before ending the task. A caller that was
                // just answered often sends its next command right away (a claim then a reply,
                // a webhook then its status callbacks); finding the runner still here saves a
                // task spawn per command.
                lingered = true;
                tokio::task::yield_now().await;
                continue;
            };
            lingered = false;
            if !self.handle_one(&mut state, msg).await {
                return;
            }
        }
    }

    /// Retires the mailbox if nothing is queued or running and it has been idle for `idle`
    /// (`Duration::ZERO`: whenever nothing is in progress). Returns whether it retired now.
    pub fn retire_if_idle(&self, idle: Duration) -> bool {
        // Nothing can have been idle for longer than the clock has run.
        Instant::now()
            .checked_sub(idle)
            .is_some_and(|cutoff| self.retire_if_idle_since(cutoff))
    }

    /// Retires the mailbox if nothing is queued or running and it went idle at or before
    /// `cutoff`. Returns whether it retired now.
    pub fn retire_if_idle_since(&self, cutoff: Instant) -> bool {
        let mut g = self.inner.lock();
        if g.retired || g.running || !g.queue.is_empty() || g.last_active > cutoff {
            return false;
        }
        g.retired = true;
        g.state = None;
        true
    }

    /// When it went idle, if it is idle now (nothing queued or running, not retired): what
    /// choosing the idlest mailboxes compares.
    pub fn idle_since(&self) -> Option<Instant> {
        let g = self.inner.lock();
        (!g.retired && !g.running && g.queue.is_empty()).then_some(g.last_active)
    }

    /// Retires it now; a handler in progress finishes, queued messages are still handled, and
    /// nothing new is accepted. Returns whether it retired now.
    pub fn retire(&self) -> bool {
        let mut g = self.inner.lock();
        !std::mem::replace(&mut g.retired, true)
    }

    pub fn is_retired(&self) -> bool {
        self.inner.lock().retired
    }
}

/// A message being handled on its caller's task (see [`Mailbox::submit`]). Await it; dropping
/// it unfinished moves the rest of the handler to a spawned task.
pub struct Inline(Option<Pin<Box<dyn Future<Output = ()> + Send>>>);

impl Future for Inline {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(run) = self.0.as_mut() else {
            return Poll::Ready(());
        };
        let done = run.as_mut().poll(cx);
        if done.is_ready() {
            self.0 = None;
        }
        done
    }
}

impl Drop for Inline {
    fn drop(&mut self) {
        if let Some(run) = self.0.take() {
            // Without a runtime (process teardown) there is nothing left to finish it for.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(run);
            }
        }
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    /// Appends to its state; `Panic` panics; `Slow` waits for a signal first.
    #[derive(Default)]
    struct Log {
        runners: Runners,
        failures: parking_lot::Mutex<Vec<String>>,
    }

    enum Msg {
        Push(u32, oneshot::Sender<Vec<u32>>),
        Slow(oneshot::Receiver<()>, oneshot::Sender<()>),
        Panic,
    }

    impl Handler for Arc<Log> {
        type Msg = Msg;
        type State = Vec<u32>;

        async fn handle(&self, state: &mut Vec<u32>, msg: Msg) {
            {
                match msg {
                    Msg::Push(n, reply) => {
                        tokio::task::yield_now().await;
                        state.push(n);
                        let _ = reply.send(state.clone());
                    }
                    Msg::Slow(go, done) => {
                        let _ = go.await;
                        let _ = done.send(());
                    }
                    Msg::Panic => panic!("boom"),
                }
            }
        }

        fn runners(&self) -> &Runners {
            &self.runners
        }

        fn failed(&self, _mailbox: &Arc<Mailbox<Self>>, panic: String) {
            self.failures.lock().push(panic);
        }
    }

    fn mailbox() -> (Arc<Log>, Arc<Mailbox<Arc<Log>>>) {
        let log = Arc::new(Log::default());
        let mb = Mailbox::new(Arc::from("k"), log.clone(), Vec::new());
        (log, mb)
    }

    /// Queues a message that holds the runner until `go` fires; `done` fires once it is handled.
    fn slow(mb: &Arc<Mailbox<Arc<Log>>>) -> (oneshot::Sender<()>, oneshot::Receiver<()>) {
        let (go_tx, go_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        assert!(mb.send(Msg::Slow(go_rx, done_tx)).is_ok());
        (go_tx, done_rx)
    }

    fn push(mb: &Arc<Mailbox<Arc<Log>>>, n: u32) -> oneshot::Receiver<Vec<u32>> {
        let (tx, rx) = oneshot::channel();
        assert!(mb.send(Msg::Push(n, tx)).is_ok());
        rx
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_are_handled_one_at_a_time_in_order() {
        let (_, mb) = mailbox();
        let mut senders = Vec::new();
        for t in 0..8u32 {
            let mb = mb.clone();
            senders.push(tokio::spawn(async move {
                let mut seen = Vec::new();
                for i in 0..100u32 {
                    seen.push(push(&mb, t * 1000 + i).await.expect("reply"));
                }
                seen
            }));
        }
        let mut last = Vec::new();
        for s in senders {
            let replies = s.await.expect("sender");
            // Each reply is a snapshot of the single state: every later one extends it.
            for w in replies.windows(2) {
                assert!(w[1].starts_with(&w[0]) || w[0].starts_with(&w[1]));
            }
            let l = replies.last().cloned().unwrap_or_default();
            if l.len() > last.len() {
                last = l;
            }
        }
        assert_eq!(last.len(), 800, "no message lost or applied twice");
        for t in 0..8u32 {
            let mine: Vec<u32> = last.iter().copied().filter(|n| n / 1000 == t).collect();
            assert_eq!(mine, (0..100).map(|i| t * 1000 + i).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn retire_if_idle_waits_for_work_in_progress() {
        let (log, mb) = mailbox();
        let (go_tx, done_rx) = slow(&mb);
        tokio::task::yield_now().await;
        assert!(!mb.retire_if_idle(Duration::ZERO), "busy: must not retire");
        let _ = go_tx.send(());
        done_rx.await.expect("slow handled");
        assert!(log.runners.wait_idle(Duration::from_secs(5)).await);
        assert!(
            !mb.retire_if_idle(Duration::from_secs(3600)),
            "not idle long enough"
        );
        assert!(mb.retire_if_idle(Duration::ZERO));
        assert!(mb.is_retired());
        let (tx, _rx) = oneshot::channel();
        assert!(matches!(
            mb.send(Msg::Push(1, tx)),
            Err(Rejected::Retired(_))
        ));
    }

    #[tokio::test]
    async fn a_panic_retires_the_mailbox_and_drops_what_waited() {
        let (log, mb) = mailbox();
        let (go_tx, done_rx) = slow(&mb);
        assert!(mb.send(Msg::Panic).is_ok());
        let waiting = push(&mb, 7);
        let _ = go_tx.send(());
        done_rx.await.expect("first message handled");
        assert!(
            waiting.await.is_err(),
            "queued caller learns the mailbox died"
        );
        assert!(log.runners.wait_idle(Duration::from_secs(5)).await);
        assert!(mb.is_retired());
        assert_eq!(log.failures.lock().as_slice(), ["boom".to_string()]);
    }

    /// What `Ctx::ask` does: handle inline when idle, else wait behind the runner.
    async fn ask(mb: &Arc<Mailbox<Arc<Log>>>, n: u32) -> Vec<u32> {
        let (tx, rx) = oneshot::channel();
        match mb.submit(Msg::Push(n, tx)) {
            Ok(Some(inline)) => inline.await,
            Ok(None) => {}
            Err(_) => panic!("mailbox refused"),
        }
        rx.await.expect("reply")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inline_and_queued_callers_share_one_state_in_order() {
        let (log, mb) = mailbox();
        let mut senders = Vec::new();
        for t in 0..8u32 {
            let mb = mb.clone();
            senders.push(tokio::spawn(async move {
                let mut last = Vec::new();
                for i in 0..100u32 {
                    let n = t * 1000 + i;
                    // Half the callers queue like `send` users, half go through `submit`.
                    last = if t % 2 == 0 {
                        ask(&mb, n).await
                    } else {
                        push(&mb, n).await.expect("reply")
                    };
                }
                last
            }));
        }
        let mut longest = Vec::new();
        for s in senders {
            let l = s.await.expect("sender");
            if l.len() > longest.len() {
                longest = l;
            }
        }
        assert!(log.runners.wait_idle(Duration::from_secs(5)).await);
        assert_eq!(longest.len(), 800, "no message lost or applied twice");
        for t in 0..8u32 {
            let mine: Vec<u32> = longest.iter().copied().filter(|n| n / 1000 == t).collect();
            assert_eq!(mine, (0..100).map(|i| t * 1000 + i).collect::<Vec<_>>());
        }
    }

    #[tokio::test]
    async fn an_idle_mailbox_is_handled_inline_and_others_wait_for_it() {
        let (log, mb) = mailbox();
        let (go_tx, go_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let inline = match mb.submit(Msg::Slow(go_rx, done_tx)) {
            Ok(Some(inline)) => inline,
            _ => panic!("an idle mailbox hands the message back to run inline"),
        };
        let (tx, queued) = oneshot::channel();
        assert!(
            matches!(mb.submit(Msg::Push(5, tx)), Ok(None)),
            "busy: queued behind the inline run"
        );
        let _ = go_tx.send(());
        inline.await;
        done_rx.await.expect("slow handled");
        assert_eq!(queued.await.expect("handled by a runner"), vec![5]);
        assert!(log.runners.wait_idle(Duration::from_secs(5)).await);
        assert_eq!(ask(&mb, 6).await, vec![5, 6]);
    }

    #[tokio::test]
    async fn a_cancelled_inline_caller_still_finishes_its_handler() {
        let (log, mb) = mailbox();
        let (go_tx, go_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let Ok(Some(inline)) = mb.submit(Msg::Slow(go_rx, done_tx)) else {
            panic!("inline run expected");
        };
        // The caller polls once, then gives up (is dropped) while its handler waits.
        assert!(inline.now_or_never().is_none());
        let waiting = push(&mb, 1);
        let _ = go_tx.send(());
        done_rx
            .await
            .expect("the handler ran to completion on a spawned task");
        assert_eq!(waiting.await.expect("the queue went on"), vec![1]);
        assert!(log.runners.wait_idle(Duration::from_secs(5)).await);
        assert_eq!(ask(&mb, 2).await, vec![1, 2], "the state came back intact");
    }

    #[tokio::test]
    async fn an_inline_panic_retires_the_mailbox() {
        let (log, mb) = mailbox();
        let Ok(Some(inline)) = mb.submit(Msg::Panic) else {
            panic!("inline run expected");
        };
        inline.await;
        assert!(mb.is_retired());
        assert_eq!(log.failures.lock().as_slice(), ["boom".to_string()]);
        assert!(log.runners.wait_idle(Duration::from_secs(5)).await);
        let (tx, _rx) = oneshot::channel();
        assert!(matches!(
            mb.submit(Msg::Push(1, tx)),
            Err(Rejected::Retired(_))
        ));
    }

    #[tokio::test]
    async fn the_queue_is_bounded() {
        let (_, mb) = mailbox();
        let (go_tx, _done_rx) = slow(&mb);
        tokio::task::yield_now().await;
        let mut replies = Vec::new();
        for i in 0..MAX_QUEUED as u32 {
            replies.push(push(&mb, i));
        }
        let (tx, _rx) = oneshot::channel();
        assert!(matches!(mb.send(Msg::Push(0, tx)), Err(Rejected::Full(_))));
        let _ = go_tx.send(());
        let last = replies.pop().expect("one").await.expect("handled");
        assert_eq!(last.len(), MAX_QUEUED);
    }
}
