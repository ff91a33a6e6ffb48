//! Memory per conversation: RSS growth per live conversation actor and per passivated
//! conversation (the issue's targets: ≤ 2 KiB live, ≤ 256 B passivated).
//!
//! Not a criterion bench (RSS is a level, not a duration): it starts a real broker in-process
//! (`sync = false`: this measures memory, not fsync), ingests `SWITCHBOARD_MEM_CONVERSATIONS`
//! conversations (default 200,000; the issue's full figure is 1,000,000) through
//! `switchboard::ingest::ingest` in batches of 100 messages, in two halves. After each half it
//! reads RSS from `/proc/self/statm` (after purging jemalloc's arenas) with the half's actors live, then
//! passivates every actor (`ctx.passivate_idle(0)`, what the idle sweeper does) and reads it
//! again. It prints the growth per conversation over the whole run ("overall": includes fixed
//! costs such as RocksDB's bounded memtables and block cache, so it shrinks as the run grows) and
//! over the second half only ("marginal": what one more conversation costs). After the second
//! passivation it also reads RSS right away and after [`IDLE`] of doing nothing, without an
//! explicit purge: what the allocator gives back by itself once the broker goes quiet (the
//! binary's jemalloc settings, `switchboard::alloc`, apply here too).
//!
//! Run: `cargo bench --bench memory` (prints; asserts nothing).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::actors::Ctx;
use switchboard::whatsapp::webhook;
use switchboard::Broker;

use common::NUMBER;

/// The broker binary's allocator (jemalloc, see `src/main.rs`), counting the bytes Rust code
/// holds (RocksDB's C++ allocates from jemalloc too, but not through this), so RSS can be split
/// into Rust heap, RocksDB and allocator slack.
struct Counting;

static RUST_HEAP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: forwards to jemalloc unchanged; only counts sizes.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        RUST_HEAP.fetch_add(l.size(), std::sync::atomic::Ordering::Relaxed);
        tikv_jemallocator::Jemalloc.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        RUST_HEAP.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
        tikv_jemallocator::Jemalloc.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        RUST_HEAP.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        RUST_HEAP.fetch_sub(l.size(), std::sync::atomic::Ordering::Relaxed);
        tikv_jemallocator::Jemalloc.realloc(p, l, n)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

// The binary's jemalloc settings (background purge, short decay).
switchboard::jemalloc_conf!();

/// How long the bench stays idle before reading what the allocator gave back by itself.
const IDLE: Duration = Duration::from_secs(3);

fn rust_heap() -> u64 {
    RUST_HEAP.load(std::sync::atomic::Ordering::Relaxed) as u64
}

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

fn mib(b: u64) -> f64 {
    b as f64 / 1048576.0
}

/// RSS once jemalloc gave back what it keeps of freed memory: every arena purged now rather than
/// after its decay time (what `malloc_trim` did with glibc).
fn trimmed_rss() -> u64 {
    // MALLCTL_ARENAS_ALL: the command applies to every arena.
    const PURGE_ALL: &[u8] = b"arena.4096.purge\0";
    // SAFETY: a void mallctl command (no old or new value), with a NUL-terminated name.
    unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        );
    }
    rss_bytes()
}

/// Ingests conversations `range` (one message each) with 16 webhooks of `BATCH` in flight.
async fn ingest(ctx: &Arc<Ctx>, range: std::ops::Range<usize>, ts: i64) {
    let mut tasks = tokio::task::JoinSet::new();
    for start in range.clone().step_by(BATCH) {
        let ctx = ctx.clone();
        let n = BATCH.min(range.end - start);
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
}

/// RocksDB's share of RSS (bounded: memtables, block cache).
async fn rocks(ctx: &Ctx) -> String {
    let u = ctx.store.memory().await.unwrap_or_default();
    format!(
        "Rust heap {:.1} MiB; RocksDB memtables {:.1} MiB, block cache {:.1} MiB, table readers {:.1} MiB",
        mib(rust_heap()),
        mib(u.memtables),
        mib(u.block_cache),
        mib(u.table_readers)
    )
}

fn per(bytes: u64, n: usize) -> f64 {
    bytes as f64 / n.max(1) as f64
}

fn main() {
    let total: usize = std::env::var("SWITCHBOARD_MEM_CONVERSATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let half = total / 2;
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    rt.block_on(async move {
        let dir = match tempfile::tempdir() {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        // Nothing passivates by itself while ingesting; the bench passivates explicitly.
        let mut config = common::broker_config(dir.path(), false, 3_600_000, None);
        // Every conversation of a half stays live until the bench passivates it: the live-actor
        // bound (`conversations.max_live`, default 200,000) would otherwise retire most of a
        // 1,000,000-conversation run's first half and spread its RSS over fewer actors.
        config.conversations.max_live = total.max(1);
        let broker = match Broker::start(config).await {
            Ok(b) => b,
            Err(e) => panic!("start: {e}"),
        };
        let ctx = broker.ctx().clone();
        let ts = chrono::Utc::now().timestamp();
        let before = trimmed_rss();
        let heap_before = rust_heap();
        println!("RSS before: {:.1} MiB", mib(before));

        // Phase 1: the first half, live, then passivated.
        let started = Instant::now();
        ingest(&ctx, 0..half, ts).await;
        let live_1 = trimmed_rss();
        let n1 = ctx.conversations.len();
        println!(
            "phase 1: ingested {half} conversations in {:.1} s; live actors {n1}; RSS {:.1} MiB; {}",
            started.elapsed().as_secs_f64(),
            mib(live_1),
            rocks(&ctx).await
        );
        let heap_live_1 = rust_heap();
        ctx.passivate_idle(Duration::ZERO);
        let passive_1 = trimmed_rss();
        let heap_passive_1 = rust_heap();
        println!(
            "phase 1: passivated, live actors {}; RSS {:.1} MiB; {}",
            ctx.conversations.len(),
            mib(passive_1),
            rocks(&ctx).await
        );

        // Phase 2: the second half on top: its growth is the marginal cost, free of the fixed
        // costs (runtime, RocksDB's bounded memtables and block cache) the first half filled.
        let started = Instant::now();
        ingest(&ctx, half..total, ts).await;
        let live_2 = trimmed_rss();
        let n2 = ctx.conversations.len();
        println!(
            "phase 2: ingested {} more in {:.1} s; live actors {n2}; RSS {:.1} MiB; {}",
            total - half,
            started.elapsed().as_secs_f64(),
            mib(live_2),
            rocks(&ctx).await
        );
        ctx.passivate_idle(Duration::ZERO);
        let at_once = rss_bytes();
        tokio::time::sleep(IDLE).await;
        println!(
            "phase 2: passivated, RSS {:.1} MiB at once, {:.1} MiB after {} s idle (no explicit purge)",
            mib(at_once),
            mib(rss_bytes()),
            IDLE.as_secs()
        );
        let passive_2 = trimmed_rss();
        let heap_passive_2 = rust_heap();
        println!(
            "phase 2: passivated, live actors {}; RSS {:.1} MiB; {}",
            ctx.conversations.len(),
            mib(passive_2),
            rocks(&ctx).await
        );

        println!(
            "live: {:.0} B per live conversation actor overall (phase 1), {:.0} B marginal (phase 2) (target <= 2048 B)",
            per(live_1.saturating_sub(before), n1),
            per(live_2.saturating_sub(passive_1), n2)
        );
        println!(
            "passivated: {:.0} B per passivated conversation overall ({total} conversations), {:.0} B marginal (phase 2) (target <= 256 B)",
            per(passive_2.saturating_sub(before), total),
            per(passive_2.saturating_sub(passive_1), total - half)
        );
        println!(
            "Rust heap (what the broker's own code holds, no allocator slack): {:.0} B per live actor (phase 1), {:.0} B per passivated conversation (all {total})",
            per(heap_live_1.saturating_sub(heap_passive_1), n1),
            per(heap_passive_2.saturating_sub(heap_before), total)
        );
        broker.shutdown().await;
    });
}
