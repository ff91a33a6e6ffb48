//! Thread-safe measurement primitives shared by every part of the run.
//!
//! `Latency` wraps an HDR histogram (microsecond resolution, 3 significant digits, values up to
//! ten minutes; larger values are clamped, never dropped) behind a mutex; `Counters` is a named
//! counter map used for outcomes and for errors by kind. Both are cheap to share in an `Arc` and
//! never panic on a poisoned lock (a panicking recorder must not hide the rest of the results).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Locks a mutex, ignoring poisoning (the data is plain measurements).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

const MAX_MICROS: u64 = 600_000_000;

/// A latency histogram.
pub struct Latency {
    hist: Mutex<Histogram<u64>>,
}

/// Percentiles of a `Latency`, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        // Constant bounds (1 <= low, high >= 2 * low, sigfig <= 5): this cannot fail.
        let hist = Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds");
        Latency {
            hist: Mutex::new(hist),
        }
    }

    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros())
            .unwrap_or(MAX_MICROS)
            .clamp(1, MAX_MICROS);
        lock(&self.hist).saturating_record(us);
    }

    /// Records a batch of microsecond values under one lock (for many recorders at a high rate).
    pub fn record_micros(&self, values: &[u64]) {
        if values.is_empty() {
            return;
        }
        let mut h = lock(&self.hist);
        for &us in values {
            h.saturating_record(us.clamp(1, MAX_MICROS));
        }
    }

    pub fn summary(&self) -> LatencySummary {
        let h = lock(&self.hist);
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

/// Named counters.
#[derive(Default)]
pub struct Counters {
    map: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    pub fn add(&self, key: &str, n: u64) {
        let mut m = lock(&self.map);
        match m.get_mut(key) {
            Some(v) => *v += n,
            None => {
                m.insert(key.to_string(), n);
            }
        }
    }

    pub fn inc(&self, key: &str) {
        self.add(key, 1);
    }

    pub fn get(&self, key: &str) -> u64 {
        lock(&self.map).get(key).copied().unwrap_or(0)
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.map).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let l = Latency::new();
        for i in 1..=1000u64 {
            l.record(Duration::from_millis(i));
        }
        let s = l.summary();
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 2.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 2.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 2.0, "{s:?}");
        l.record(Duration::from_secs(100_000));
        assert!(l.summary().max_ms >= 599_000.0);
    }

    #[test]
    fn counters() {
        let c = Counters::default();
        c.inc("a");
        c.add("a", 2);
        c.inc("b");
        assert_eq!(c.get("a"), 3);
        assert_eq!(c.get("zz"), 0);
    }
}
