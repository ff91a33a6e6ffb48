//! Rate limits for log lines that one failure can repeat thousands of times a second.
//!
//! When the disk fills up, every webhook fails the same way. Logging each one wrote 85 MB in about
//! a minute in a benchmark (three lines per webhook: the writer's failed group commit, the storage
//! error, the webhook not stored), onto the disk that was already full, burying the first line an
//! SRE needs. A [`LogLimit`] at such a call site lets at most `per_second` lines through in each
//! second and reports, with the next line it lets through, how many it held back; the failures
//! themselves are still counted in full by the metrics (`switchboard_webhook_requests_total` with
//! `outcome="error"`).
//!
//! Invariants: the first `per_second` events of every second are let through; an event held back
//! is counted in the next line its call site lets through, and in no other (held back after the
//! last line, it is only in the metrics); lock-free (two atomics), so it is safe on any path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct LogLimit {
    per_second: u64,
    /// The current second (high 32 bits) and the lines let through in it (low 32 bits).
    window: AtomicU64,
    /// Events held back since the last line let through.
    held_back: AtomicU64,
}

impl LogLimit {
    pub const fn new(per_second: u32) -> Self {
        Self {
            per_second: per_second as u64,
            window: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log this event and say that `n` similar ones were held back before it.
    /// `None`: do not log it (it is counted for the next line).
    pub fn check(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.check_at(now)
    }

    fn check_at(&self, now_secs: u64) -> Option<u64> {
        // Wraps after 2^32 s; a wrapped second only restarts a window early.
        let second = now_secs & 0xFFFF_FFFF;
        let mut current = self.window.load(Ordering::Relaxed);
        loop {
            let (window_second, used) = (current >> 32, current & 0xFFFF_FFFF);
            let next = if window_second != second {
                (second << 32) | 1
            } else if used < self.per_second {
                current + 1
            } else {
                self.held_back.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            match self.window.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(self.held_back.swap(0, Ordering::Relaxed)),
                Err(seen) => current = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lets_per_second_through_and_reports_the_rest_once() {
        let l = LogLimit::new(2);
        assert_eq!(l.check_at(100), Some(0));
        assert_eq!(l.check_at(100), Some(0));
        assert_eq!(l.check_at(100), None);
        assert_eq!(l.check_at(100), None);
        assert_eq!(l.check_at(100), None);
        // A new second: the three held back are reported by its first line, and only there.
        assert_eq!(l.check_at(101), Some(3));
        assert_eq!(l.check_at(101), Some(0));
        assert_eq!(l.check_at(101), None);
        assert_eq!(l.check_at(105), Some(1));
    }

    #[test]
    fn concurrent_callers_lose_no_count() {
        let l = std::sync::Arc::new(LogLimit::new(5));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    let mut logged = 0u64;
                    let mut reported = 0u64;
                    for _ in 0..10_000 {
                        if let Some(n) = l.check_at(7) {
                            logged += 1;
                            reported += n;
                        }
                    }
                    (logged, reported)
                })
            })
            .collect();
        let (mut logged, mut reported) = (0, 0);
        for t in threads {
            let (a, b) = t.join().unwrap_or((0, 0));
            logged += a;
            reported += b;
        }
        assert_eq!(logged, 5);
        // Held-back events can only be reported by a later line; the next second's first line
        // reports all of them.
        let rest = l.check_at(8).unwrap_or(0);
        assert_eq!(reported + rest, 40_000 - 5);
    }
}
