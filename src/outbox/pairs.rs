//! Meta's pair rate: how often one business number may message one WhatsApp user.
//!
//! Meta allows about one message every 6 seconds to the same user, with bursts: up to 45 messages
//! in 6 seconds, borrowed from the time that follows (the Cloud API's throughput documentation;
//! beyond it Meta refuses with 131056, "pair rate limit hit"). Each pair (the number's worker is
//! the only user of its table, so the pair is the recipient `to`) is a token bucket of
//! `outbox.pair_burst` tokens refilled one per `outbox.pair_interval_ms`: a send that finds no
//! token waits for one without holding anything other sends need (its worker parks it).
//!
//! A 131056 answer (Meta counts differently, or the pair was messaged from elsewhere, e.g. the
//! WhatsApp Business App) empties the pair's bucket and blocks it for 4^n seconds, n the pair's
//! consecutive 131056 answers (capped at [`MAX_STRIKES`]); an accepted send resets n. Only that
//! pair waits.
//!
//! Bound: an entry exists for a pair sent to within its refill time (burst × interval, 4.5 min
//! by default) or still under back-off; full, unblocked entries are the default and are swept
//! whenever the table has doubled since the last sweep, so it holds about the pairs of the last
//! few minutes' sends.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Highest exponent of the 131056 back-off: 4^5 s = 17 min. Past that a pair keeps being retried
/// every 17 minutes (within `outbox.max_attempts`), not every hour and more.
pub const MAX_STRIKES: u32 = 5;

/// Largest pair interval and back-off unit taken from the config (a day).
const MAX_SETTING: Duration = Duration::from_secs(86_400);

/// Smallest table size a sweep waits for.
const MIN_SWEEP: usize = 1024;

struct Pair {
    tokens: f64,
    at: Instant,
    /// Consecutive 131056 answers.
    strikes: u32,
    blocked_until: Option<Instant>,
}

impl Pair {
    fn full(burst: f64, now: Instant) -> Self {
        Pair {
            tokens: burst,
            at: now,
            strikes: 0,
            blocked_until: None,
        }
    }

    /// Tokens at `now` (uncapped): refilled one per `interval` since `at`.
    fn tokens_at(&self, now: Instant, interval: Duration) -> f64 {
        self.tokens + now.saturating_duration_since(self.at).as_secs_f64() / interval.as_secs_f64()
    }
}

pub(super) struct Pairs {
    map: HashMap<String, Pair>,
    burst: f64,
    interval: Duration,
    /// 4^n of these is the back-off after n consecutive 131056 answers (a second by default).
    backoff_unit: Duration,
    sweep_at: usize,
}

impl Pairs {
    pub(super) fn new(burst: u32, interval: Duration, backoff_unit: Duration) -> Self {
        Self {
            map: HashMap::new(),
            burst: f64::from(burst.max(1)),
            // Clamped so no time computed from them overflows an Instant.
            interval: interval.clamp(Duration::from_millis(1), MAX_SETTING),
            backoff_unit: backoff_unit.min(MAX_SETTING),
            sweep_at: MIN_SWEEP,
        }
    }

    /// Takes the pair's token for a send now, or says from when one is available.
    pub(super) fn try_take(&mut self, to: &str, now: Instant) -> Result<(), Instant> {
        if self.map.len() >= self.sweep_at {
            self.sweep(now);
        }
        let (burst, interval) = (self.burst, self.interval);
        if !self.map.contains_key(to) {
            self.map.insert(to.to_string(), Pair::full(burst, now));
        }
        let Some(p) = self.map.get_mut(to) else {
            return Ok(());
        };
        let unblocked = match p.blocked_until {
            Some(until) if now < until => return Err(until),
            Some(_) => true,
            None => false,
        };
        p.blocked_until = None;
        p.tokens = p.tokens_at(now, interval).min(burst);
        if unblocked {
            // The back-off is the wait Meta asks for: the retry goes when it ends.
            p.tokens = p.tokens.max(1.0);
        }
        p.at = now;
        if p.tokens >= 1.0 {
            p.tokens -= 1.0;
            Ok(())
        } else {
            Err(now + interval.mul_f64(1.0 - p.tokens))
        }
    }

    /// Gives back a token taken for a send that did not reach the user (the number had no
    /// token left, or Meta refused the send for another reason than the pair rate).
    pub(super) fn refund(&mut self, to: &str) {
        if let Some(p) = self.map.get_mut(to) {
            p.tokens = (p.tokens + 1.0).min(self.burst);
        }
    }

    /// Meta answered 131056 for `to`: the pair is blocked for 4^n seconds (returned; the unit
    /// is `outbox.pair_backoff_ms`).
    pub(super) fn limited(&mut self, to: &str, now: Instant) -> Duration {
        let p = self
            .map
            .entry(to.to_string())
            .or_insert(Pair::full(0.0, now));
        p.strikes = (p.strikes + 1).min(MAX_STRIKES);
        let wait = self.backoff_unit.saturating_mul(4u32.pow(p.strikes));
        p.tokens = 0.0;
        p.at = now;
        p.blocked_until = Some(now + wait);
        wait
    }

    /// Meta accepted a send to `to`: its 131056 back-off starts over.
    pub(super) fn accepted(&mut self, to: &str) {
        if let Some(p) = self.map.get_mut(to) {
            p.strikes = 0;
        }
    }

    /// Drops the entries that are back to the default (full, unblocked, no strikes).
    fn sweep(&mut self, now: Instant) {
        let (burst, interval) = (self.burst, self.interval);
        self.map.retain(|_, p| {
            let full = p.tokens_at(now, interval) >= burst;
            let blocked = p.blocked_until.is_some_and(|u| u > now);
            !(full && !blocked && p.strikes == 0)
        });
        self.sweep_at = (self.map.len() * 2).max(MIN_SWEEP);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_bursts_then_paces_and_others_are_unaffected() {
        let now = Instant::now();
        let mut p = Pairs::new(3, Duration::from_secs(6), Duration::from_secs(1));
        for _ in 0..3 {
            assert!(p.try_take("a", now).is_ok());
        }
        let next = p.try_take("a", now).expect_err("burst used");
        assert_eq!(next, now + Duration::from_secs(6));
        assert!(p.try_take("b", now).is_ok(), "another user is not paced");
        assert!(p.try_take("a", now + Duration::from_secs(6)).is_ok());
        assert!(p.try_take("a", now + Duration::from_secs(6)).is_err());
    }

    #[test]
    fn limited_backs_off_four_to_the_n_and_an_acceptance_resets_it() {
        let now = Instant::now();
        let mut p = Pairs::new(45, Duration::from_secs(6), Duration::from_secs(1));
        assert_eq!(p.limited("a", now), Duration::from_secs(4));
        assert_eq!(p.limited("a", now), Duration::from_secs(16));
        assert_eq!(p.limited("a", now), Duration::from_secs(64));
        assert_eq!(
            p.try_take("a", now + Duration::from_secs(63)),
            Err(now + Duration::from_secs(64))
        );
        assert!(
            p.try_take("a", now + Duration::from_secs(64)).is_ok(),
            "the retry goes when the back-off ends"
        );
        for _ in 0..10 {
            p.limited("a", now);
        }
        assert_eq!(p.limited("a", now), Duration::from_secs(1024), "capped");
        p.accepted("a");
        assert_eq!(p.limited("a", now), Duration::from_secs(4));
        assert!(p.try_take("b", now).is_ok(), "other pairs are unaffected");
    }

    #[test]
    fn full_entries_are_swept() {
        let now = Instant::now();
        let mut p = Pairs::new(1, Duration::from_millis(10), Duration::from_secs(1));
        for i in 0..MIN_SWEEP {
            let _ = p.try_take(&i.to_string(), now);
        }
        p.limited("blocked", now);
        let later = now + Duration::from_secs(1);
        let _ = p.try_take("x", later);
        assert_eq!(p.len(), 2, "only the blocked pair and the new one stay");
    }
}
