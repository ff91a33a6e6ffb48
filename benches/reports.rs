//! A report over a month of a busy team's reporting events: the target is an answer in under
//! 200 ms (issue 21, item 4).
//!
//! The store is filled once with 30 days of `support` at 1,500 conversations a day (45,000
//! conversations) plus a quieter `sales` at 300 a day, each conversation leaving the events a
//! typical one leaves (opened, 3 inbound batches, assigned, first response, 3 replies, an SLA
//! hit, resolved: 12 events), 648,000 events in all, spread over the month, each written with its
//! hourly rollups as the broker writes them. What is measured is what `GET /api/v1/reports/teams`
//! does for the window (without the HTTP hop and the live queue figures, which read no events):
//! `Store::fold_report` on the blocking pool — the month's whole hours from the team rollups
//! (720 per team), the cut hours at the window's edges from the events — then the rows finished
//! (exact percentiles over every span). The window starts and ends mid-hour, so both paths run.
//! Variants: the whole month as one row per team, and day buckets in Berlin time; and, for
//! comparison, the report from the events alone (what reports did before rollups) and the scan
//! of the events alone (range scan and in-place decoding, nothing folded).
//!
//! At the end the bench prints the typical time of each variant against the 200 ms target.

mod common;

use std::time::SystemTime;

use chrono_tz::Tz;

use switchboard::domain::report::{
    Aggregator, AssignReason, Bucket, Dimension, ReportEvent, ReportKind, ReportRow, Span,
};
use switchboard::domain::SlaKind;
use switchboard::store::{Batch, Store};

const DAY_MS: i64 = 86_400_000;
const START: i64 = 1_795_000_000_000; // 2026-11-18 11:06:40 UTC: mid-hour
const GROUP: &str = "reports";
/// The window: the filled month and a day after it, from and to mid-hour.
const FROM: i64 = START;
const TO: i64 = START + 31 * DAY_MS;

fn events_of(i: usize, team: &str, at: i64) -> Vec<ReportEvent> {
    let e = |dt: i64, agent: Option<&str>, kind: ReportKind| ReportEvent {
        at: at + dt,
        conversation: format!("106540352242922:49{i:010}"),
        team: team.to_string(),
        agent: agent.map(str::to_string),
        number: "106540352242922".to_string(),
        kind,
    };
    let agent = format!("agent{}", i % 40);
    let a = Some(agent.as_str());
    let span = |ms: i64| Span {
        wall_ms: ms,
        business_ms: ms / 2,
    };
    let mut v = vec![
        e(0, None, ReportKind::Opened),
        e(0, None, ReportKind::Inbound { messages: 1 }),
        e(
            30_000,
            a,
            ReportKind::Assigned {
                reason: AssignReason::Auto,
            },
        ),
        e(
            60_000 + (i as i64 % 600) * 1000,
            a,
            ReportKind::FirstResponse(span(60_000)),
        ),
    ];
    for r in 0..3 {
        let dt = 120_000 + r * 300_000;
        v.push(e(dt, None, ReportKind::Inbound { messages: 1 }));
        v.push(e(
            dt + 60_000,
            a,
            ReportKind::Reply {
                wait: Some(span(60_000)),
            },
        ));
    }
    v.push(e(
        70_000,
        a,
        ReportKind::Sla {
            kind: SlaKind::FirstResponse,
            met: true,
        },
    ));
    v.push(e(3_600_000, a, ReportKind::Resolved(span(3_600_000))));
    v
}

async fn fill(store: &Store) -> usize {
    let mut n = 0;
    let mut batch = Batch::new();
    for day in 0..30i64 {
        for (team, per_day) in [("support", 1500usize), ("sales", 300)] {
            for c in 0..per_day {
                let at = START + day * DAY_MS + (c as i64) * (DAY_MS / per_day as i64);
                let id = (day as usize) * 10_000 + c + if team == "sales" { 5_000 } else { 0 };
                for e in events_of(id, team, at) {
                    batch.put_report(&e).expect("encodes");
                    n += 1;
                }
                if batch.len() >= 5_000 {
                    store
                        .commit(std::mem::take(&mut batch))
                        .await
                        .expect("commit");
                }
            }
        }
    }
    store.commit(batch).await.expect("commit");
    n
}

fn aggregator(
    bucket: Option<Bucket>,
) -> Aggregator<impl Fn(&str) -> bool + Send + 'static, impl Fn(&str) -> Tz + Send + 'static> {
    let berlin: Tz = "Europe/Berlin".parse().unwrap_or(Tz::UTC);
    Aggregator::new(
        Dimension::Teams,
        bucket,
        |_: &str| true,
        move |_: &str| berlin,
    )
}

/// The report as the broker computes it: rollups for whole hours, events for the rest.
async fn report(store: &Store, bucket: Option<Bucket>) -> Vec<(String, ReportRow)> {
    let berlin: Tz = "Europe/Berlin".parse().unwrap_or(Tz::UTC);
    let scanned = store
        .fold_report(FROM, TO, vec![berlin, Tz::UTC], aggregator(bucket))
        .await
        .expect("fold");
    assert!(!scanned.truncated);
    scanned.state.finish()
}

/// The same from the events alone (reports before rollups).
async fn report_from_events(store: &Store, bucket: Option<Bucket>) -> Vec<(String, ReportRow)> {
    let scanned = store
        .scan_report_events(FROM, TO, aggregator(bucket), |a, e| a.add(e))
        .await
        .expect("scan");
    assert!(!scanned.truncated);
    scanned.state.finish()
}

fn main() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("db"), false, 2048).expect("store");
    let events = rt.block_on(fill(&store));
    // A month's events are on disk by the time anyone reports on them: the flush also merges
    // the rollups' operands, as RocksDB does for any hour that left the memtable.
    rt.block_on(store.flush()).expect("flush");
    println!(
        "filled {events} report events (30 days, support 1,500 + sales 300 conversations a day)"
    );
    // Rollups change how the figures are read, not what they are.
    for bucket in [None, Some(Bucket::Day)] {
        let rows = rt.block_on(report(&store, bucket));
        assert_eq!(rows, rt.block_on(report_from_events(&store, bucket)));
        assert!(rows.len() >= 2, "{} rows", rows.len());
    }
    println!("rollup and event-only reports agree (month and day buckets)");

    let since = SystemTime::now();
    let mut c = common::criterion().configure_from_args();
    let mut g = c.benchmark_group(GROUP);
    g.bench_function("month_by_team", |b| {
        b.to_async(&rt).iter(|| report(&store, None))
    });
    g.bench_function("month_by_team_day_buckets", |b| {
        b.to_async(&rt).iter(|| report(&store, Some(Bucket::Day)))
    });
    g.bench_function("month_by_team_from_events", |b| {
        b.to_async(&rt).iter(|| report_from_events(&store, None))
    });
    g.bench_function("month_scan_only", |b| {
        b.to_async(&rt).iter(|| async {
            store
                .scan_report_events(FROM, TO, 0usize, |n, _| *n += 1)
                .await
                .expect("scan")
                .state
        })
    });
    g.finish();
    c.final_summary();
    for name in [
        "month_by_team",
        "month_by_team_day_buckets",
        "month_by_team_from_events",
        "month_scan_only",
    ] {
        if let Some(ns) = common::typical_ns(&[GROUP, name], since) {
            let ms = ns / 1e6;
            let verdict = if ms < 200.0 { "under" } else { "OVER" };
            println!(
                "{GROUP}/{name}: {ms:.1} ms for {events} events ({verdict} the 200 ms target)"
            );
        }
    }
    rt.block_on(store.close());
}
