//! A token bucket: at most `rate` sends per second per number, bursts of at most
//! [`BURST_SHARE`] of a second's sends, and never fewer than [`MIN_BURST`].
//!
//! The burst is small on purpose: Meta's `mps` is a per-second throughput, and a bucket that
//! could hold a whole second's tokens would let `2 × mps` leave in the first second of a backlog
//! (a full bucket, then a second's refill). With a 20 ms burst, any one-second window carries at
//! most `mps × 1.02` sends (`mps + 2` on a slow number), while one wake-up of the dispatcher
//! still sends up to 20 ms' worth. The floor of two tokens is what keeps a slow number at its
//! rate on a busy machine: with one token, every late wake-up of the dispatcher would be time the
//! bucket could not refill, and a 20 mps number sent 18.7/s at a load average of 13.
//!
//! The lock is a plain mutex held for a few arithmetic operations and never across `.await`;
//! waiting happens outside it.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The burst as a share of a second's tokens.
const BURST_SHARE: f64 = 0.02;
/// The smallest burst: a token saved while the dispatcher wakes up late.
const MIN_BURST: f64 = 2.0;

pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u32) -> Self {
        let rate = f64::from(rate_per_sec.max(1));
        let burst = (rate * BURST_SHARE).max(MIN_BURST);
        Self {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes a token now, or says how long until one is available.
    pub fn try_take(&self) -> Result<(), Duration> {
        self.check(true)
    }

    /// Whether a token is available now (without taking it), or how long until one is.
    pub fn ready(&self) -> Result<(), Duration> {
        self.check(false)
    }

    fn check(&self, take: bool) -> Result<(), Duration> {
        self.check_at(Instant::now(), take)
    }

    fn check_at(&self, now: Instant, take: bool) -> Result<(), Duration> {
        let mut s = self.state.lock();
        let elapsed = now.duration_since(s.1).as_secs_f64();
        s.0 = (s.0 + elapsed * self.rate).min(self.burst);
        s.1 = now;
        if s.0 >= 1.0 {
            if take {
                s.0 -= 1.0;
            }
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - s.0) / self.rate))
        }
    }

    pub async fn take(&self) {
        while let Err(wait) = self.try_take() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_burst_then_paces() {
        let b = TokenBucket::new(1000);
        for _ in 0..20 {
            assert!(b.try_take().is_ok());
        }
        let wait = b.try_take().expect_err("bucket empty");
        assert!(wait <= Duration::from_millis(1));
    }

    #[test]
    fn a_slow_number_bursts_two_sends() {
        let b = TokenBucket::new(5);
        assert!(b.try_take().is_ok());
        assert!(b.try_take().is_ok());
        let wait = b.try_take().expect_err("two tokens only");
        assert!(wait > Duration::from_millis(100) && wait <= Duration::from_millis(200));
    }

    #[test]
    fn no_second_carries_more_than_its_rate_and_the_burst() {
        // A backlog drained as fast as the bucket allows, on a simulated clock from a full bucket.
        let b = TokenBucket::new(100);
        let start = b.state.lock().1;
        let (mut sent, mut now) = (0, start);
        while now < start + Duration::from_secs(1) {
            if b.check_at(now, true).is_ok() {
                sent += 1;
            }
            now += Duration::from_micros(100);
        }
        assert!(sent <= 100 + 2, "{sent} sends in one second at 100 mps");
        assert!(sent >= 99, "{sent} sends in one second at 100 mps");
    }
}
