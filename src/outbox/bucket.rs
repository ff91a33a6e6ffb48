//! A token bucket: at most `rate` sends per second per number, bursts up to `rate`.
//!
//! The lock is a plain mutex held for a few arithmetic operations and never across `.await`;
//! waiting happens outside it.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

pub struct TokenBucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub fn new(rate_per_sec: u32) -> Self {
        let rate = f64::from(rate_per_sec.max(1));
        Self {
            rate,
            burst: rate,
            state: Mutex::new((rate, Instant::now())),
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
        let mut s = self.state.lock();
        let now = Instant::now();
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
        let b = TokenBucket::new(5);
        for _ in 0..5 {
            assert!(b.try_take().is_ok());
        }
        let wait = b.try_take().expect_err("bucket empty");
        assert!(wait <= Duration::from_millis(200));
    }
}
