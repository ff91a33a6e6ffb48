//! Failed authentication, throttled per remote address.
//!
//! A token is 1 in 2^128 or so to guess, but nothing stopped a peer from trying tens of thousands
//! a second. Each address has a bucket of `server.auth_failures_per_minute` failures, refilled
//! evenly over a minute; while it is empty, every request from that address that carries a token
//! is answered 429 before the token is looked at, so a right guess cannot be told from a wrong
//! one (and the comparison's timing is not exercised at all). Requests without a token are not
//! throttled: they cannot guess anything.
//!
//! Bounds: one entry per address that failed recently; when there are more than
//! [`MAX_ADDRESSES`], the full (forgiven) ones are dropped, and if that is not enough, all are.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::error::Code;
use crate::metrics as m;

/// Addresses remembered before the forgiven ones are forgotten.
pub const MAX_ADDRESSES: usize = 65_536;

pub struct AuthThrottle {
    per_minute: f64,
    buckets: DashMap<IpAddr, Bucket>,
}

#[derive(Clone, Copy)]
struct Bucket {
    left: f64,
    at: Instant,
}

impl AuthThrottle {
    pub fn new(per_minute: u32) -> Self {
        // `unauthorized` is the API code; `throttled` predates `rate_limited` (the code such a
        // request gets) and is kept so dashboards keep working.
        metrics::counter!(m::AUTH_FAILURES, "outcome" => Code::Unauthorized).increment(0);
        metrics::counter!(m::AUTH_FAILURES, "outcome" => "throttled").increment(0);
        Self {
            per_minute: f64::from(per_minute.max(1)),
            buckets: DashMap::new(),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let gained = now.duration_since(b.at).as_secs_f64() * self.per_minute / 60.0;
        Bucket {
            left: (b.left + gained).min(self.per_minute),
            at: now,
        }
    }

    /// None when `peer` may try a token now; else how long until it may.
    pub fn check(&self, peer: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let b = self.buckets.get(&peer).map(|b| *b)?;
        let b = self.refilled(b, now);
        if b.left >= 1.0 {
            return None;
        }
        metrics::counter!(m::AUTH_FAILURES, "outcome" => "throttled").increment(1);
        Some(Duration::from_secs_f64(
            (1.0 - b.left) * 60.0 / self.per_minute,
        ))
    }

    /// Counts a wrong or missing-from-the-list token from `peer`.
    pub fn failed(&self, peer: IpAddr) {
        metrics::counter!(m::AUTH_FAILURES, "outcome" => Code::Unauthorized).increment(1);
        let now = Instant::now();
        if self.buckets.len() >= MAX_ADDRESSES {
            self.forget_forgiven(now);
        }
        let mut entry = self.buckets.entry(peer).or_insert(Bucket {
            left: self.per_minute,
            at: now,
        });
        let b = self.refilled(*entry, now);
        *entry = Bucket {
            left: (b.left - 1.0).max(0.0),
            at: now,
        };
    }

    fn forget_forgiven(&self, now: Instant) {
        self.buckets
            .retain(|_, b| self.refilled(*b, now).left < self.per_minute);
        if self.buckets.len() >= MAX_ADDRESSES {
            self.buckets.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_throttled_after_its_burst_and_others_are_not() {
        let t = AuthThrottle::new(3);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(t.check(a), None);
            t.failed(a);
        }
        let wait = t.check(a).expect("throttled after 3 failures");
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert_eq!(t.check(b), None);
    }
}
