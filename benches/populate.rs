//! Fills a data directory with a large history, for the recovery target ("after kill -9 with 1M
//! conversations and 10M messages on disk: webhooks accepted again within 2 s").
//!
//! Not a criterion bench: it writes `SWITCHBOARD_POPULATE_CONVERSATIONS` conversations (default
//! 1,000,000) of `SWITCHBOARD_POPULATE_MESSAGES` inbound messages each (default 10) into
//! `$SWITCHBOARD_POPULATE_DIR/db` through the real ingest path of an in-process broker
//! (`storage.sync = false` while filling: durability of the fill is not what is measured; the
//! broker is shut down cleanly at the end), 10 conversations × 10 messages per webhook. The layout
//! is the load generator's (`--data-dir DIR` keeps its database in `DIR/db`), and the phone number
//! is one of the load generator's, so the recovery run is then:
//!
//! ```sh
//! SWITCHBOARD_POPULATE_DIR=/tmp/big cargo bench --bench populate
//! target/release/switchboard-loadtest --broker-bin target/release/switchboard \
//!     --data-dir /tmp/big --rate 2000 --duration 12 --crash-after 6 --agents 0
//! ```
//!
//! whose `crash` line prints how long after SIGKILL the restarted broker answered again, and whose
//! audit checks that nothing acknowledged was lost.
//!
//! With `SWITCHBOARD_POPULATE_DIRECT=1` it writes through the store API instead of the ingest
//! path (`Store::commit` of batches of 1,000 conversations with their messages, `sync = false`):
//! several times faster, for the 5M-conversation figure on a shared machine. The records are the
//! ingest path's shape (a queued conversation of team `support` per customer, its inbound text
//! messages, each message's wamid indexed) without what ingest adds around them (reporting
//! events, contact names); start-up reads none of those.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::actors::Ctx;
use switchboard::whatsapp::webhook;
use switchboard::Broker;

use common::NUMBER;

/// Conversations per webhook (each with all its messages).
const PER_WEBHOOK: usize = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Conversations `first..first + n`, `per` messages each, timestamps `round` seconds apart.
fn body(first: usize, n: usize, per: usize, ts: i64) -> Vec<u8> {
    let mut msgs = Vec::with_capacity(n * per);
    for c in first..first + n {
        for m in 0..per {
            msgs.push(format!(
                r#"{{"from":"49{c:010}","id":"wamid.populate.{c}.{m}","timestamp":"{}","type":"text","text":{{"body":"message {m} of customer {c}, asking about order {c}"}}}}"#,
                ts + m as i64
            ));
        }
    }
    format!(
        r#"{{"entry":[{{"changes":[{{"field":"messages","value":{{"metadata":{{"phone_number_id":"{NUMBER}"}},"messages":[{}]}}}}]}}]}}"#,
        msgs.join(",")
    )
    .into_bytes()
}

async fn fill(ctx: &Arc<Ctx>, total: usize, per: usize) -> usize {
    let ts = chrono::Utc::now().timestamp() - 3600;
    let mut tasks = tokio::task::JoinSet::new();
    let mut stored = 0usize;
    let started = Instant::now();
    let mut next_report = 100_000;
    for first in (0..total).step_by(PER_WEBHOOK) {
        let ctx = ctx.clone();
        let n = PER_WEBHOOK.min(total - first);
        tasks.spawn(async move {
            match webhook::parse(&body(first, n, per, ts)) {
                Ok(note) => switchboard::ingest::ingest(&ctx, note)
                    .await
                    .map(|r| r.stored)
                    .unwrap_or(0),
                Err(_) => 0,
            }
        });
        while tasks.len() >= 16 {
            if let Some(Ok(s)) = tasks.join_next().await {
                stored += s;
            }
        }
        if first >= next_report {
            next_report += 100_000;
            println!(
                "{first} conversations, {stored} messages stored, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    while let Some(r) = tasks.join_next().await {
        stored += r.unwrap_or(0);
    }
    stored
}

/// [`fill`] through the store API: the same conversations and messages, batches of 1,000
/// conversations, 4 commits in flight.
async fn fill_direct(store: &switchboard::store::Store, total: usize, per: usize) -> usize {
    use switchboard::domain::message::{Author, DeliveryStatus, Direction, Message};
    use switchboard::domain::Conversation;
    use switchboard::store::{Batch, WamidRef};
    let ts = (chrono::Utc::now().timestamp() - 3600) * 1000;
    let started = Instant::now();
    let mut next_report = 500_000;
    let mut tasks = tokio::task::JoinSet::new();
    for first in (0..total).step_by(1_000) {
        let mut b = Batch::new();
        for c in first..(first + 1_000).min(total) {
            let customer = format!("49{c:010}");
            let mut conv = Conversation::new(NUMBER, &customer, "support", ts);
            for m in 0..per {
                let seq = conv.take_seq();
                let wamid = format!("wamid.populate.{c}.{m}");
                let msg = Message {
                    conversation_id: conv.id.clone(),
                    seq,
                    direction: Direction::Inbound,
                    kind: "text".into(),
                    text: Some(format!(
                        "message {m} of customer {c}, asking about order {c}"
                    )),
                    wamid: Some(wamid.clone()),
                    status: Some(DeliveryStatus::Received),
                    author: Author::Customer(customer.clone()),
                    at: ts + m as i64 * 1000,
                    error: None,
                    idempotency_key: None,
                    raw: None,
                    reply_to: None,
                    reactions: Vec::new(),
                    referral: None,
                    media: None,
                    pricing: None,
                    content: None,
                    lifecycle: Default::default(),
                };
                conv.absorb(&msg);
                let _ = b.put_message(&msg);
                let r = WamidRef {
                    conversation_id: conv.id.clone(),
                    seq,
                };
                let _ = b.put_wamid(&wamid, &r);
            }
            let _ = b.put_conversation(None, &conv);
        }
        let store = store.clone();
        tasks.spawn(async move { store.commit(b).await.is_ok() });
        while tasks.len() >= 4 {
            let _ = tasks.join_next().await;
        }
        if first >= next_report {
            next_report += 500_000;
            println!(
                "{first} conversations, {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    while tasks.join_next().await.is_some() {}
    total * per
}

fn main() {
    let Ok(dir) = std::env::var("SWITCHBOARD_POPULATE_DIR") else {
        println!(
            "set SWITCHBOARD_POPULATE_DIR to the directory to fill (its database goes in db/)"
        );
        return;
    };
    let total = env_usize("SWITCHBOARD_POPULATE_CONVERSATIONS", 1_000_000);
    let per = env_usize("SWITCHBOARD_POPULATE_MESSAGES", 10);
    let db = std::path::Path::new(&dir).join("db");
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    };
    if std::env::var("SWITCHBOARD_POPULATE_DIRECT").is_ok_and(|v| v == "1") {
        rt.block_on(async move {
            let store = match switchboard::store::Store::open(&db, false, 64) {
                Ok(s) => s,
                Err(e) => panic!("open: {e}"),
            };
            let started = Instant::now();
            let stored = fill_direct(&store, total, per).await;
            println!(
                "stored {stored} messages in {total} conversations through the store API in {:.0} s",
                started.elapsed().as_secs_f64()
            );
            store.close().await;
        });
        return;
    }
    rt.block_on(async move {
        // Actors passivate quickly so a million of them are never live at once.
        let config = common::broker_config(&db, false, 2_000, None);
        let broker = match Broker::start(config).await {
            Ok(b) => b,
            Err(e) => panic!("start: {e}"),
        };
        let ctx = broker.ctx().clone();
        let started = Instant::now();
        let stored = fill(&ctx, total, per).await;
        println!(
            "stored {stored} messages in {total} conversations in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        broker.shutdown().await;
        println!("clean shutdown in {:.1} s", t.elapsed().as_secs_f64());
        tokio::time::sleep(Duration::from_millis(10)).await;
    });
}
