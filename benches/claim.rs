//! A claim through the conversation actor against a raw tokio mpsc request/response round trip.
//!
//! The target is "actor claim ≤ 2× a raw mpsc round trip". A real broker runs in-process
//! (`Broker::start`, listening on 127.0.0.1:0, storage in a temp dir); 64 conversations are
//! ingested through `switchboard::ingest::ingest` from a generated webhook body, then:
//! - `mpsc_oneshot_roundtrip`: a `tokio::sync::mpsc` channel to a server task that answers each
//!   request through a `oneshot` (request = a cloned `Caller`, answer = a cloned `Conversation`,
//!   the same payloads a claim carries). The floor for any request/response between tasks.
//! - `actor_claim_noop_sync_false`: `ctx.ask(id, None, Claim{..})` by the agent who already owns
//!   the conversation: registry lookup + a message to its mailbox (a runner task spawned, the handler, the
//!   reply through a oneshot), no agent reservation, no write.
//!   This is the actor round trip itself.
//! - `actor_claim_sync_false`: a real claim (`storage.sync = false`): actor round trip + an agent
//!   actor `Reserve` call + a group commit (channel to the writer thread, RocksDB WAL write without
//!   fsync, oneshot back) + events. Only the claim is timed; each iteration then releases the
//!   conversation (untimed) so the next claim is a real one again. Conversations rotate.
//! - `actor_claim_sync_true`: the same on a second broker with `storage.sync = true`, so each claim
//!   waits for an fsync (what production pays).
//!
//! Every loop runs as a task on the runtime's workers (like the HTTP handlers that call `ctx.ask`).
//! At the end the bench prints the ratios to the mpsc round trip (of the middle figure of criterion's
//! `time:` lines) for whatever ran in this process.
//!
//! Machine note: warm-up 1 s, measurement 3 s, 10 samples, multi-threaded tokio runtime with the
//! default worker count (= cores) on a small shared VM; expect noise.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use tokio::sync::{mpsc, oneshot};

use switchboard::actors::{ConversationMsg, Ctx};
use switchboard::domain::Role;
use switchboard::domain::{conversation_id, Caller, Conversation};
use switchboard::whatsapp::webhook;
use switchboard::Broker;

use common::{AGENT, NUMBER};

const CONVERSATIONS: usize = 64;
const GROUP: &str = "claim";

/// Starts a broker on a fresh directory and ingests `CONVERSATIONS` conversations; returns their ids.
async fn start(dir: &std::path::Path, sync: bool) -> (Broker, Vec<String>) {
    let broker = Broker::start(common::broker_config(dir, sync, 3_600_000, Some(1_000_000)))
        .await
        .expect("broker starts");
    let customers: Vec<String> = (0..CONVERSATIONS)
        .map(|i| format!("4917000{i:05}"))
        .collect();
    let body = common::webhook_body(customers.len(), |i| {
        let wamid = format!("wamid.CLAIMBENCH{i:08}");
        ("Bench Customer".to_string(), customers[i].clone(), wamid)
    });
    let n = webhook::parse(&body).expect("parse");
    let report = switchboard::ingest::ingest(broker.ctx(), n)
        .await
        .expect("ingest");
    assert_eq!(report.stored, CONVERSATIONS);
    let ids = customers
        .iter()
        .map(|c| conversation_id(NUMBER, c))
        .collect();
    (broker, ids)
}

/// Runs a measurement loop as a task on the runtime's workers, where the broker's own callers (HTTP
/// handlers) run, rather than on criterion's `block_on` thread (which would add a cross-thread
/// wake-up to every round trip, the same for every variant).
async fn on_worker(f: impl std::future::Future<Output = Duration> + Send + 'static) -> Duration {
    tokio::spawn(f).await.expect("measurement task")
}

fn caller() -> Caller {
    Caller {
        id: AGENT.to_string(),
        role: Role::Agent,
        teams: vec!["support".to_string()],
    }
}

async fn claim(ctx: &Arc<Ctx>, id: &str, caller: &Caller) -> Conversation {
    ctx.ask(id, None, |reply| ConversationMsg::Claim {
        caller: caller.clone(),
        reply,
    })
    .await
    .expect("claim")
}

async fn release(ctx: &Arc<Ctx>, id: &str, caller: &Caller) -> Conversation {
    ctx.ask(id, None, |reply| ConversationMsg::Release {
        caller: caller.clone(),
        reply,
    })
    .await
    .expect("release")
}

/// Real claims: each iteration claims (timed) and releases (untimed) the next conversation.
fn bench_claims(c: &mut Criterion, rt: &tokio::runtime::Runtime, sync: bool) {
    let dir = tempfile::Builder::new()
        .prefix("switchboard-bench-")
        .tempdir()
        .expect("tempdir");
    let (broker, ids) = rt.block_on(start(dir.path(), sync));
    let ctx = broker.ctx().clone();
    let ids = Arc::new(ids);
    let who = caller();
    // Sanity, untimed: a claim assigns, a release puts it back.
    rt.block_on(async {
        let c = claim(&ctx, &ids[0], &who).await;
        assert_eq!(c.assignee.as_deref(), Some(AGENT));
        let r = release(&ctx, &ids[0], &who).await;
        assert_eq!(r.assignee, None);
    });
    c.benchmark_group(GROUP)
        .bench_function(format!("actor_claim_sync_{sync}"), |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (ctx, ids, who) = (ctx.clone(), ids.clone(), who.clone());
                on_worker(async move {
                    let mut timed = Duration::ZERO;
                    for i in 0..iters as usize {
                        let id = &ids[i % ids.len()];
                        let t = Instant::now();
                        let conv = claim(&ctx, id, &who).await;
                        timed += t.elapsed();
                        debug_assert_eq!(conv.assignee.as_deref(), Some(AGENT));
                        release(&ctx, id, &who).await;
                    }
                    timed
                })
            })
        });

    if !sync {
        // The actor round trip alone: the owner claims again, which answers without any write.
        rt.block_on(claim(&ctx, &ids[0], &who));
        c.benchmark_group(GROUP)
            .bench_function("actor_claim_noop_sync_false", |b| {
                b.to_async(rt).iter_custom(|iters| {
                    let (ctx, ids, who) = (ctx.clone(), ids.clone(), who.clone());
                    on_worker(async move {
                        let start = Instant::now();
                        for _ in 0..iters {
                            std::hint::black_box(claim(&ctx, &ids[0], &who).await);
                        }
                        start.elapsed()
                    })
                })
            });
    }
    rt.block_on(broker.shutdown());
}

/// The floor: one request/response through a tokio mpsc channel answered by a oneshot.
fn bench_mpsc(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    type Req = (Caller, oneshot::Sender<Conversation>);
    let (tx, mut rx) = mpsc::channel::<Req>(1024);
    let conv = Conversation::new(NUMBER, "491700000000", "support", 1_749_416_383_000);
    let server = rt.spawn(async move {
        while let Some((_caller, reply)) = rx.recv().await {
            let _ = reply.send(conv.clone());
        }
    });
    let who = caller();
    c.benchmark_group(GROUP)
        .bench_function("mpsc_oneshot_roundtrip", |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (tx, who) = (tx.clone(), who.clone());
                on_worker(async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let (reply, answer) = oneshot::channel();
                        tx.send((who.clone(), reply)).await.expect("send");
                        std::hint::black_box(answer.await.expect("answer"));
                    }
                    start.elapsed()
                })
            })
        });
    drop(tx);
    rt.block_on(server).expect("server task");
}

fn main() {
    let started = SystemTime::now();
    let mut c = common::criterion().configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    bench_mpsc(&mut c, &rt);
    bench_claims(&mut c, &rt, false);
    bench_claims(&mut c, &rt, true);
    c.final_summary();

    let Some(base) = common::typical_ns(&[GROUP, "mpsc_oneshot_roundtrip"], started) else {
        return;
    };
    println!(
        "\nratios to mpsc_oneshot_roundtrip ({:.3} µs; target for a claim: <= 2.00x):",
        base / 1e3
    );
    for name in [
        "actor_claim_noop_sync_false",
        "actor_claim_sync_false",
        "actor_claim_sync_true",
    ] {
        if let Some(t) = common::typical_ns(&[GROUP, name], started) {
            println!("  {name}: {:.3} µs = {:.2}x", t / 1e3, t / base);
        }
    }
}
