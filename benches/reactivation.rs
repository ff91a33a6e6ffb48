//! Re-activation of a passivated conversation: what the first command to an idle conversation
//! pays before its actor can answer.
//!
//! A real broker runs in-process (`Broker::start`, 127.0.0.1:0, temp storage dir) with 256
//! conversations ingested through `switchboard::ingest::ingest`. Per iteration one conversation
//! is passivated directly (`ctx.passivate`: its mailbox retired and removed from the registry, as
//! the idle sweeper does) — untimed; then `ctx.activate(&id, None)` is timed: a registry miss,
//! `store.load_conversation` on tokio's blocking pool (RocksDB point read + the wamid scan +
//! decode), building the mailbox, then the registry insert. This is more precise
//! than `[conversations] idle_timeout_ms`, whose sweeper runs on its own schedule.
//!
//! Compared with its parts:
//! - `activate_live`: `ctx.activate` when the actor is live (a `DashMap` hit), the floor;
//! - `store_get_conversation`: the storage read alone (blocking-pool hop + RocksDB get + decode);
//! - `activate_passivated`: the full re-activation described above.
//!
//! The data set is small and freshly written, so reads are served from the memtable / block
//! cache: this measures the CPU and scheduling path, not a cold disk read. Storage runs with
//! `sync = false` because nothing in the timed path writes (the setting only affected setup).
//!
//! Machine note: warm-up 1 s, measurement 3 s, 10 samples on a small shared VM; expect noise.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

use switchboard::actors::Ctx;
use switchboard::domain::conversation_id;
use switchboard::whatsapp::webhook;
use switchboard::Broker;

use common::NUMBER;

const CONVERSATIONS: usize = 256;

/// Retires the live actor of `id` the way idle passivation does. Untimed.
async fn passivate(ctx: &Arc<Ctx>, id: &str) {
    ctx.activate(id, None).await.expect("activate (untimed)");
    assert!(ctx.passivate(id), "an idle actor passivates");
}

fn reactivation(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let dir = tempfile::Builder::new()
        .prefix("switchboard-bench-")
        .tempdir()
        .expect("tempdir");
    let broker = rt
        .block_on(Broker::start(common::broker_config(
            dir.path(),
            false,
            3_600_000,
            Some(1000),
        )))
        .expect("broker starts");
    let ctx = broker.ctx().clone();
    let customers: Vec<String> = (0..CONVERSATIONS)
        .map(|i| format!("4917100{i:05}"))
        .collect();
    let ids: Arc<Vec<String>> = Arc::new(
        customers
            .iter()
            .map(|c| conversation_id(NUMBER, c))
            .collect(),
    );
    rt.block_on(async {
        let body = common::webhook_body(customers.len(), |i| {
            let wamid = format!("wamid.REACTBENCH{i:08}");
            ("Bench Customer".to_string(), customers[i].clone(), wamid)
        });
        let n = webhook::parse(&body).expect("parse");
        let report = switchboard::ingest::ingest(&ctx, n).await.expect("ingest");
        assert_eq!(report.stored, CONVERSATIONS);
        // Sanity: a passivated conversation comes back with its durable state.
        passivate(&ctx, &ids[0]).await;
        assert!(!ctx.conversations.contains_key(ids[0].as_str()));
        ctx.activate(&ids[0], None).await.expect("re-activate");
        assert!(ctx.conversations.contains_key(ids[0].as_str()));
    });

    let mut g = c.benchmark_group("reactivation");
    g.bench_function("activate_live", |b| {
        b.to_async(&rt).iter(|| {
            let (ctx, ids) = (ctx.clone(), ids.clone());
            async move { ctx.activate(&ids[0], None).await.expect("activate") }
        })
    });
    g.bench_function("store_get_conversation", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (ctx, ids) = (ctx.clone(), ids.clone());
            async move {
                let start = Instant::now();
                for i in 0..iters as usize {
                    let c = ctx
                        .store
                        .get_conversation(&ids[i % ids.len()])
                        .await
                        .expect("get");
                    debug_assert!(c.is_some());
                }
                start.elapsed()
            }
        })
    });
    g.bench_function("activate_passivated", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (ctx, ids) = (ctx.clone(), ids.clone());
            async move {
                let mut timed = Duration::ZERO;
                for i in 0..iters as usize {
                    let id = &ids[i % ids.len()];
                    passivate(&ctx, id).await;
                    let t = Instant::now();
                    let actor = ctx.activate(id, None).await.expect("re-activate");
                    timed += t.elapsed();
                    debug_assert!(ctx.conversations.contains_key(id.as_str()));
                    drop(actor);
                }
                timed
            }
        })
    });
    g.finish();
    rt.block_on(broker.shutdown());
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = reactivation
}
criterion_main!(benches);
