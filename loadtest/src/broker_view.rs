//! The broker's own latency histograms, read from its `/metrics` before and after the load, and
//! its media fetch backlog after the load (`--media-share`: how many fetches were left queued
//! and how long they took to drain).
//!
//! The generator shares the machine with the broker, so what it measures includes its own
//! scheduling delays (see `webhook send lag`). The broker times each request from the moment its
//! handler starts to the answer; the difference of two scrapes gives that view for the run,
//! at the resolution of the broker's histogram buckets. Only shares at bucket bounds and an upper
//! bound for p99 are reported: anything finer would be invented.
//!
//! Invariants: a view is only formed when every bucket's count grew or stayed (a broker that
//! restarted between the scrapes resets its counters, and such a run gets no view); label sets
//! other than the selected one are ignored, several matching ones (e.g. per outcome) are summed.

use std::collections::BTreeMap;

use serde::Serialize;

/// `switchboard_webhook_duration_seconds`: every webhook request.
const WEBHOOK: (&str, &str) = ("switchboard_webhook_duration_seconds", "");
/// The claim route of `switchboard_http_request_duration_seconds`.
const CLAIM: (&str, &str) = (
    "switchboard_http_request_duration_seconds",
    r#"route="/api/v1/conversations/{id}/claim""#,
);

/// Bounds (ms) at which shares are reported; each is one of the broker's bucket bounds.
const SHARES_AT_MS: [u32; 4] = [1, 2, 5, 10];

/// Cumulative bucket counts by upper bound in seconds (`+Inf` as infinity).
#[derive(Debug, Clone, Default, PartialEq)]
struct Histogram(BTreeMap<u64, u64>);

/// One scrape's histograms of interest.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    webhook: Histogram,
    claim: Histogram,
}

/// The broker's view of one kind of request over the run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BrokerLatency {
    pub count: u64,
    /// Share of requests answered within each bound, keyed by the bound in ms.
    pub share_within_ms: BTreeMap<u32, f64>,
    /// The smallest bucket bound holding at least 99 % of the requests (None: beyond the last).
    pub p99_at_most_ms: Option<f64>,
}

/// What the broker measured between the two scrapes.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct BrokerView {
    pub webhook: Option<BrokerLatency>,
    pub claim: Option<BrokerLatency>,
}

/// Bucket bounds are compared as integer nanoseconds (exact for the broker's decimal bounds).
fn key(le: &str) -> Option<u64> {
    if le == "+Inf" {
        return Some(u64::MAX);
    }
    let s: f64 = le.parse().ok()?;
    (s.is_finite() && s >= 0.0).then(|| (s * 1e9).round() as u64)
}

impl Histogram {
    fn parse(text: &str, (name, label): (&str, &str)) -> Histogram {
        let prefix = format!("{name}_bucket{{");
        let mut h = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix(&prefix) else {
                continue;
            };
            // Label values may contain braces (`{id}`): the label set ends at the last "} ".
            let Some(end) = rest.rfind("} ") else {
                continue;
            };
            let (labels, value) = (&rest[..end], rest[end + 2..].trim());
            if !label.is_empty() && !labels.contains(label) {
                continue;
            }
            let le = labels
                .split_once("le=\"")
                .and_then(|(_, v)| v.split_once('"'))
                .and_then(|(v, _)| key(v));
            let count = value.parse::<f64>().ok().filter(|c| *c >= 0.0);
            if let (Some(le), Some(count)) = (le, count) {
                *h.entry(le).or_insert(0) += count as u64;
            }
        }
        Histogram(h)
    }

    /// `self - before`, or None when a bucket shrank (the broker restarted) or shapes differ.
    fn since(&self, before: &Histogram) -> Option<Histogram> {
        let mut out = BTreeMap::new();
        for (le, now) in &self.0 {
            let was = before.0.get(le).copied().unwrap_or(0);
            out.insert(*le, now.checked_sub(was)?);
        }
        if before.0.keys().any(|le| !self.0.contains_key(le)) {
            return None;
        }
        Some(Histogram(out))
    }

    fn latency(&self) -> Option<BrokerLatency> {
        let count = self.0.get(&u64::MAX).copied().filter(|c| *c > 0)?;
        let within = |ms: u32| {
            let le = u64::from(ms) * 1_000_000;
            self.0.get(&le).map(|c| *c as f64 / count as f64)
        };
        let share_within_ms = SHARES_AT_MS
            .iter()
            .filter_map(|ms| within(*ms).map(|s| (*ms, s)))
            .collect();
        let p99_at_most_ms = self
            .0
            .iter()
            .find(|(le, c)| **le != u64::MAX && **c as f64 >= 0.99 * count as f64)
            .map(|(le, _)| *le as f64 / 1e6);
        Some(BrokerLatency {
            count,
            share_within_ms,
            p99_at_most_ms,
        })
    }
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        Scrape {
            webhook: Histogram::parse(text, WEBHOOK),
            claim: Histogram::parse(text, CLAIM),
        }
    }

    /// Reads `{base_url}/metrics`; None when it cannot be read.
    pub async fn fetch(client: &reqwest::Client, base_url: &str) -> Option<Scrape> {
        Some(Scrape::parse(&metrics_text(client, base_url).await?))
    }

    /// What happened between `before` and this scrape.
    pub fn since(&self, before: &Scrape) -> BrokerView {
        let view = |now: &Histogram, was: &Histogram| now.since(was).and_then(|h| h.latency());
        BrokerView {
            webhook: view(&self.webhook, &before.webhook),
            claim: view(&self.claim, &before.claim),
        }
    }
}

/// The text of `{base_url}/metrics`; None when it cannot be read.
async fn metrics_text(client: &reqwest::Client, base_url: &str) -> Option<String> {
    let r = client
        .get(format!("{base_url}/metrics"))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = r#"# TYPE switchboard_webhook_duration_seconds histogram
switchboard_webhook_duration_seconds_bucket{le="0.001"} 10
switchboard_webhook_duration_seconds_bucket{le="0.002"} 10
switchboard_webhook_duration_seconds_bucket{le="0.005"} 10
switchboard_webhook_duration_seconds_bucket{le="0.01"} 10
switchboard_webhook_duration_seconds_bucket{le="+Inf"} 10
switchboard_webhook_duration_seconds_sum 0.01
switchboard_webhook_duration_seconds_count 10
switchboard_http_request_duration_seconds_bucket{route="/api/v1/conversations/{id}/claim",method="POST",le="0.001"} 0
switchboard_http_request_duration_seconds_bucket{route="/api/v1/conversations/{id}/claim",method="POST",le="0.002"} 0
switchboard_http_request_duration_seconds_bucket{route="/api/v1/conversations/{id}/claim",method="POST",le="+Inf"} 0
"#;

    const AFTER: &str = r#"switchboard_webhook_duration_seconds_bucket{le="0.001"} 810
switchboard_webhook_duration_seconds_bucket{le="0.002"} 960
switchboard_webhook_duration_seconds_bucket{le="0.005"} 1005
switchboard_webhook_duration_seconds_bucket{le="0.01"} 1010
switchboard_webhook_duration_seconds_bucket{le="+Inf"} 1010
switchboard_http_request_duration_seconds_bucket{route="/api/v1/conversations/{id}/claim",method="POST",le="0.001"} 50
switchboard_http_request_duration_seconds_bucket{route="/api/v1/conversations/{id}/claim",method="POST",le="0.002"} 90
switchboard_http_request_duration_seconds_bucket{route="/api/v1/conversations/{id}/claim",method="POST",le="+Inf"} 100
switchboard_http_request_duration_seconds_bucket{route="/api/v1/conversations",method="GET",le="0.001"} 7
switchboard_http_request_duration_seconds_bucket{route="/api/v1/conversations",method="GET",le="+Inf"} 7
"#;

    #[test]
    fn the_difference_of_two_scrapes_gives_shares_and_a_p99_bound() {
        let view = Scrape::parse(AFTER).since(&Scrape::parse(BEFORE));
        let Some(w) = view.webhook else {
            panic!("no webhook view");
        };
        assert_eq!(w.count, 1000);
        assert_eq!(w.share_within_ms.get(&1), Some(&0.8));
        assert_eq!(w.share_within_ms.get(&2), Some(&0.95));
        assert_eq!(w.share_within_ms.get(&5), Some(&0.995));
        assert_eq!(w.p99_at_most_ms, Some(5.0));
        let Some(c) = view.claim else {
            panic!("no claim view");
        };
        // Only the claim route counts, not the list route.
        assert_eq!(c.count, 100);
        assert_eq!(c.share_within_ms.get(&2), Some(&0.9));
        assert_eq!(
            c.p99_at_most_ms, None,
            "p99 lies beyond the last finite bucket"
        );
    }

    #[test]
    fn a_restarted_broker_gives_no_view() {
        let view = Scrape::parse(BEFORE).since(&Scrape::parse(AFTER));
        assert_eq!(view, BrokerView::default());
    }

    #[test]
    fn nothing_measured_gives_no_view() {
        let view = Scrape::parse(BEFORE).since(&Scrape::parse(BEFORE));
        assert_eq!(view.webhook, None);
        assert_eq!(
            Scrape::parse("garbage\n{le=\"x\"} y").since(&Scrape::default()),
            view
        );
    }
}

/// `switchboard_media_fetch_pending`: inbound media fetches queued in the broker.
const MEDIA_PENDING: &str = "switchboard_media_fetch_pending";

/// The broker's media fetch backlog after the load.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MediaBacklog {
    /// Fetches queued when the load stopped.
    pub at_load_end: u64,
    /// Seconds from the load's end until none was queued (None: not before the deadline).
    pub drained_after_s: Option<f64>,
    /// Fetches still queued when the wait ended.
    pub left: u64,
}

/// The broker's fetch backlog gauge (None: no answer, or no such gauge).
async fn media_pending(client: &reqwest::Client, base_url: &str) -> Option<u64> {
    let text = metrics_text(client, base_url).await?;
    text.lines().find_map(|l| {
        let v: f64 = l
            .strip_prefix(MEDIA_PENDING)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()?;
        (v.is_finite() && v >= 0.0).then_some(v as u64)
    })
}

/// Reads the backlog now (the load's end) and waits, polling every 50 ms, until it is empty
/// or `deadline` passes. None when the broker does not report one.
pub async fn wait_media_drained(
    client: &reqwest::Client,
    base_url: &str,
    deadline: tokio::time::Instant,
) -> Option<MediaBacklog> {
    let start = tokio::time::Instant::now();
    let at_load_end = media_pending(client, base_url).await?;
    let mut left = at_load_end;
    loop {
        if left == 0 {
            return Some(MediaBacklog {
                at_load_end,
                drained_after_s: Some(start.elapsed().as_secs_f64()),
                left,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Some(MediaBacklog {
                at_load_end,
                drained_after_s: None,
                left,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        left = media_pending(client, base_url).await.unwrap_or(left);
    }
}
