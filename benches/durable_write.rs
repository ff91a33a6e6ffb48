//! The durable write path against raw RocksDB writes with the same sync setting.
//!
//! Compared, at 1 and 64 concurrent committers (tokio tasks), with `sync = true` (fsync before
//! acknowledging, the production default) and `sync = false` (WAL write only):
//! - `switchboard`: `Store::open(dir, sync, 2048)` then `store.commit(batch)` where the batch is
//!   what an inbound message makes durable: `Batch::new()` + `put_message(&Message{..})` (message +
//!   wamid entry) + `put_conversation(None, &conv)` (record + index entries). Every commit travels
//!   to the group-commit writer thread over a channel and waits on a oneshot; the writer merges
//!   whatever is queued into one `WriteBatch` and one fsync.
//! - `raw_rocksdb`: a plain `rocksdb::DB` opened with the same DB options as the store (pipelined
//!   writes, parallelism 2), `WriteOptions::set_sync(sync)`, **one `put` per write** whose value has
//!   the same total size as the switchboard batch (keys + values), each write issued from
//!   `spawn_blocking` (the store never calls RocksDB on an async worker either). RocksDB's own
//!   write-leader grouping merges concurrent writers, so at 64 committers both sides group.
//!
//! One criterion iteration = one commit by *each* committer (the committers run free, without a
//! barrier between iterations); throughput is in elements = messages, so `thrpt` is messages/s.
//! At the end the bench prints the switchboard / raw ratio of the typical time per message (the
//! middle figure of criterion's `time:` line, divided by the committers) for each
//! configuration that ran in this process.
//!
//! Machine note: warm-up 1 s, measurement 3 s, 10 samples, on a small shared VM whose fsync
//! latency varies; expect noise, especially for `sync = true`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput};
use rocksdb::{Options, WriteOptions, DB};

use switchboard::domain::{Author, Conversation, DeliveryStatus, Direction, Message};
use switchboard::store::{codec, schema, Batch, IndexKey, Store, WamidRef};
use switchboard::whatsapp::webhook;

use common::NUMBER;

const FIXTURE: &str = include_str!("../tests/fixtures/whatsapp/text_message.json");
const CONCURRENCY: [usize; 2] = [1, 64];
const GROUP: &str = "durable_write";

static NEXT: AtomicU64 = AtomicU64::new(1);

/// The inbound message the fixture produces, as the conversation actor would store it.
fn template() -> Message {
    let n = webhook::parse(FIXTURE.as_bytes()).expect("fixture parses");
    let m = n
        .messages
        .into_iter()
        .next()
        .expect("fixture has a message");
    Message {
        conversation_id: String::new(),
        seq: 0,
        direction: Direction::Inbound,
        kind: m.kind,
        text: m.text,
        wamid: Some(m.wamid),
        status: Some(DeliveryStatus::Received),
        author: Author::Customer(m.customer),
        at: m.sent_at,
        error: None,
        idempotency_key: None,
        raw: Some(m.raw),
        reply_to: None,
        reactions: Vec::new(),
        referral: None,
        media: None,
        pricing: None,
        content: None,
        lifecycle: Default::default(),
    }
}

/// A fresh (unique keys) message + conversation pair, as one inbound delivery creates.
fn fresh(tpl: &Message) -> (Message, Conversation) {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let conv = Conversation::new(
        NUMBER,
        &format!("4915{n:010}"),
        "support",
        1_749_416_383_000,
    );
    let mut msg = tpl.clone();
    msg.conversation_id = conv.id.clone();
    msg.wamid = Some(format!("wamid.BENCH{n:016}"));
    (msg, conv)
}

fn store_batch(tpl: &Message) -> Batch {
    let (msg, conv) = fresh(tpl);
    let mut b = Batch::new();
    b.put_message(&msg).expect("put_message");
    b.put_conversation(None, &conv).expect("put_conversation");
    b
}

/// Bytes (keys + values) one switchboard batch writes, computed with the store's own encoders;
/// the raw put writes a value of this size.
fn payload_size(tpl: &Message) -> usize {
    let (msg, conv) = fresh(tpl);
    let wamid = msg.wamid.clone().expect("wamid");
    let wamid_ref = WamidRef {
        conversation_id: msg.conversation_id.clone(),
        seq: msg.seq,
    };
    let message = schema::seq_key(&msg.conversation_id, msg.seq).len()
        + codec::encode(&msg).expect("encode").len();
    let wamid_entry = wamid.len() + codec::encode(&wamid_ref).expect("encode").len();
    let conversation = conv.id.len() + codec::encode(&conv).expect("encode").len();
    let index: usize = IndexKey::for_conversation(&conv)
        .iter()
        .map(|k| k.encode().len())
        .sum();
    message + wamid_entry + conversation + index
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn bench_dir() -> tempfile::TempDir {
    // Same disk as the build (ext4 on the VM here); tmpfs would make fsync free.
    tempfile::Builder::new()
        .prefix("switchboard-bench-")
        .tempdir()
        .expect("tempdir")
}

fn bench_switchboard(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    tpl: &Arc<Message>,
    sync: bool,
) {
    let dir = bench_dir();
    let store = Store::open(dir.path(), sync, 2048).expect("open store");
    let mut g = c.benchmark_group(GROUP);
    for &conc in &CONCURRENCY {
        g.throughput(Throughput::Elements(conc as u64));
        let id = BenchmarkId::new(format!("switchboard_sync_{sync}"), format!("c{conc}"));
        g.bench_function(id, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let store = store.clone();
                let tpl = tpl.clone();
                async move {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..conc)
                        .map(|_| {
                            let store = store.clone();
                            let tpl = tpl.clone();
                            tokio::spawn(async move {
                                for _ in 0..iters {
                                    store.commit(store_batch(&tpl)).await.expect("commit");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("committer");
                    }
                    start.elapsed()
                }
            })
        });
    }
    g.finish();
    rt.block_on(store.close());
}

fn open_raw(path: &std::path::Path) -> DB {
    // The store's write-path options (see `Store::open`: parallelism, pipelined writes), default
    // column family only. Raw writers keep RocksDB's concurrent memtable inserts (the store turns
    // them off: it has one writer thread; 64 raw writer threads are better served with them).
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.increase_parallelism(2);
    opts.set_max_background_jobs(2);
    opts.set_enable_pipelined_write(true);
    DB::open(&opts, path).expect("open raw rocksdb")
}

fn bench_raw(c: &mut Criterion, rt: &tokio::runtime::Runtime, value_len: usize, sync: bool) {
    let dir = bench_dir();
    let db = Arc::new(open_raw(dir.path()));
    let wo = {
        let mut wo = WriteOptions::default();
        wo.set_sync(sync);
        Arc::new(wo)
    };
    let value = Arc::new(vec![0x5au8; value_len]);
    let mut g = c.benchmark_group(GROUP);
    for &conc in &CONCURRENCY {
        g.throughput(Throughput::Elements(conc as u64));
        let id = BenchmarkId::new(format!("raw_rocksdb_sync_{sync}"), format!("c{conc}"));
        g.bench_function(id, |b| {
            b.to_async(rt).iter_custom(|iters| {
                let (db, wo, value) = (db.clone(), wo.clone(), value.clone());
                async move {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..conc)
                        .map(|_| {
                            let (db, wo, value) = (db.clone(), wo.clone(), value.clone());
                            tokio::spawn(async move {
                                for _ in 0..iters {
                                    let (db, wo, value) = (db.clone(), wo.clone(), value.clone());
                                    let key =
                                        format!("m{:016}", NEXT.fetch_add(1, Ordering::Relaxed));
                                    tokio::task::spawn_blocking(move || {
                                        db.put_opt(key, &*value, &wo)
                                    })
                                    .await
                                    .expect("blocking put")
                                    .expect("put");
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.expect("committer");
                    }
                    start.elapsed()
                }
            })
        });
    }
    g.finish();
    drop(db);
}

fn main() {
    let started = SystemTime::now();
    let mut c = common::criterion().configure_from_args();
    let rt = runtime();
    let tpl = Arc::new(template());
    let value_len = payload_size(&tpl);
    println!(
        "payload: switchboard batch = message + wamid entry + conversation + index entries = {value_len} bytes (keys + values); raw put value = {value_len} bytes"
    );
    for sync in [true, false] {
        bench_switchboard(&mut c, &rt, &tpl, sync);
        bench_raw(&mut c, &rt, value_len, sync);
    }
    c.final_summary();

    println!("\nratios (switchboard / raw RocksDB, criterion's typical time per message; < 1 means switchboard is faster):");
    for sync in [true, false] {
        for conc in CONCURRENCY {
            let p = format!("c{conc}");
            let sb = common::typical_ns(&[GROUP, &format!("switchboard_sync_{sync}"), &p], started);
            let raw =
                common::typical_ns(&[GROUP, &format!("raw_rocksdb_sync_{sync}"), &p], started);
            if let (Some(sb), Some(raw)) = (sb, raw) {
                let (sb, raw) = (sb / conc as f64, raw / conc as f64);
                println!(
                    "  sync={sync} committers={conc}: switchboard {:.2} µs/msg ({:.0} msg/s), raw {:.2} µs/msg ({:.0} msg/s), ratio {:.2}x",
                    sb / 1e3,
                    1e9 / sb,
                    raw / 1e3,
                    1e9 / raw,
                    sb / raw
                );
            }
        }
    }
}
