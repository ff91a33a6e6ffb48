//! Memory per conversation: RSS growth per live conversation actor and per passivated
//! conversation (the issue's targets: ≤ 2 KiB live, ≤ 256 B passivated).
//!
//! Not a criterion bench (RSS is a level, not a duration): it starts a real broker in-process
//! (`sync = false`: this measures memory, not fsync), ingests `SWITCHBOARD_MEM_CONVERSATIONS`
//! conversations (default 200,000; the issue's full figure is 1,000,000) through
//! `switchboard::ingest::ingest` in batches of 100 messages, reads RSS from `/proc/self/statm`
//! before and after, then lets every actor passivate (`idle_timeout_ms` short) and reads RSS
//! again. RSS includes RocksDB's memtables and block cache, which grow with the data set too; the
//! figure is therefore an upper bound for the actors themselves.
//!
//! Run: `cargo bench --bench memory` (prints; asserts nothing).

mod common;

use std::time::{Duration, Instant};

use switchboard::whatsapp::webhook;
use switchboard::Broker;

use common::NUMBER;

const BATCH: usize = 100;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn body(start: usize, n: usize, ts: i64) -> Vec<u8> {
    let msgs: Vec<String> = (start..start + n)
        .map(|i| {
            format!(
                r#"{{"from":"49{i:010}","id":"wamid.mem{i}","timestamp":"{ts}","type":"text","text":{{"body":"hello {i}"}}}}"#
            )
        })
        .collect();
    format!(
        r#"{{"entry":[{{"changes":[{{"field":"messages","value":{{"metadata":{{"phone_number_id":"{NUMBER}"}},"messages":[{}]}}}}]}}]}}"#,
        msgs.join(",")
    )
    .into_bytes()
}

fn main() {
    let total: usize = std::env::var("SWITCHBOARD_MEM_CONVERSATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    rt.block_on(async move {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        // Idle timeout long enough that nothing passivates while ingesting.
        let idle_ms = 20_000;
        let config = common::broker_config(dir.path(), false, idle_ms, None);
        let broker = match Broker::start(config).await {
            Ok(b) => b,
            Err(e) => panic!("start: {e}"),
        };
        let ctx = broker.ctx().clone();
        let ts = chrono::Utc::now().timestamp();
        let before = rss_bytes();
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for start in (0..total).step_by(BATCH) {
            let ctx = ctx.clone();
            let n = BATCH.min(total - start);
            tasks.spawn(async move {
                if let Ok(note) = webhook::parse(&body(start, n, ts)) {
                    let _ = switchboard::ingest::ingest(&ctx, note).await;
                }
            });
            while tasks.len() >= 16 {
                let _ = tasks.join_next().await;
            }
        }
        while tasks.join_next().await.is_some() {}
        let live = ctx.conversations.len();
        let after_live = rss_bytes();
        println!(
            "ingested {total} conversations in {:.1} s; live actors: {live}",
            started.elapsed().as_secs_f64()
        );
        println!(
            "RSS before {:.1} MiB, with live actors {:.1} MiB: {:.0} B per live conversation actor (target <= 2048 B)",
            before as f64 / 1048576.0,
            after_live as f64 / 1048576.0,
            (after_live.saturating_sub(before)) as f64 / live.max(1) as f64
        );
        let deadline = Instant::now() + Duration::from_millis(idle_ms) * 4;
        while !ctx.conversations.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let retained = rss_bytes();
        // glibc keeps freed memory in its arenas; trimming shows what is really still in use.
        // SAFETY: malloc_trim only releases free heap pages back to the OS.
        unsafe {
            libc::malloc_trim(0);
        }
        let after_passive = rss_bytes();
        println!(
            "after passivation, before malloc_trim: RSS {:.1} MiB (freed memory the allocator keeps)",
            retained as f64 / 1048576.0
        );
        println!(
            "after passivation: live actors {}, RSS {:.1} MiB: {:.0} B per passivated conversation (target <= 256 B)",
            ctx.conversations.len(),
            after_passive as f64 / 1048576.0,
            (after_passive.saturating_sub(before)) as f64 / total.max(1) as f64
        );
        broker.shutdown().await;
    });
}
