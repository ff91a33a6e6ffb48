//! The conversation list of an agent who sees 100,000 open conversations (issue 24's target:
//! first page ≤ 10 ms p99).
//!
//! Not a criterion bench: the target is a p99, and criterion reports means. It writes
//! `SWITCHBOARD_LIST_CONVERSATIONS` queued conversations (default 100,000) of team `support`, one
//! inbound message each, directly through the store API (`Store::commit` of batches of 1,000,
//! `sync = false`: durability of the fill is not what is measured) into a temporary directory,
//! plus 10,000 of another team the agent may not see. Then it times the list as the route runs it
//! for an agent of `support`: `service::conversations::list` (index ranges merged, records read,
//! each conversation's unrecorded tail folded in), the API's views built and serialised to JSON,
//! `SWITCHBOARD_LIST_ROUNDS` times (default 200) per page size, and prints p50, p99, max and the
//! process's CPU time per request (the wall times include waiting for a core on a shared machine):
//!
//! - `limit=50`: a page the size of the console's queue read (`/teams/{id}/queue?limit=50`);
//! - `limit=200`: the console's list page (`LIST_PAGE` in `src/console/assets/app.js`: the first
//!   page shows, then the rest is read page by page);
//! - the default page (no `limit`: up to 10,000 conversations, what the console asked for before);
//! - the default page of the second page on (`after` the first page's `next_after`);
//! - the default page serialised through a `serde_json::Value` tree, as the route did before.
//!
//! ```sh
//! cargo bench --bench list
//! ```

mod common;

use std::time::Instant;

use switchboard::domain::message::{Author, DeliveryStatus, Direction, Message};
use switchboard::domain::{Caller, Conversation, Role};
use switchboard::http::views::ListView;
use switchboard::service::conversations::{list, ListFilter};
use switchboard::store::{Batch, Store};

use common::NUMBER;

/// Conversations per committed batch while filling.
const FILL_BATCH: usize = 1_000;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Conversations `first..first + n` of `team`, each with one inbound text message.
async fn fill(store: &Store, team: &str, first: usize, n: usize) {
    let now = chrono::Utc::now().timestamp_millis() - 3_600_000;
    for start in (first..first + n).step_by(FILL_BATCH) {
        let mut b = Batch::new();
        for i in start..(start + FILL_BATCH).min(first + n) {
            let customer = format!("49{i:010}");
            let mut c = Conversation::new(NUMBER, &customer, team, now);
            let seq = c.take_seq();
            let m = Message {
                conversation_id: c.id.clone(),
                seq,
                direction: Direction::Inbound,
                kind: "text".into(),
                text: Some(format!("customer {i} asks about order {i}")),
                wamid: Some(format!("wamid.list.{i}")),
                status: Some(DeliveryStatus::Received),
                author: Author::Customer(customer.clone()),
                at: now + i as i64,
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
            c.absorb(&m);
            b.put_message(&m).expect("put message");
            b.put_conversation(None, &c).expect("put conversation");
        }
        store.commit(b).await.expect("commit");
    }
}

/// One list request as the route serves it: the page, its views, the JSON body (`via_value`: as
/// the route did before, through a `serde_json::Value` tree). Returns the number of
/// conversations, the body's size and `next_after`.
async fn one(
    store: &Store,
    caller: &Caller,
    limit: Option<usize>,
    after: Option<String>,
    via_value: bool,
) -> (usize, usize, Option<String>) {
    let page = list(store, caller, ListFilter::default(), limit, after)
        .await
        .expect("list");
    let n = page.conversations.len();
    let view = ListView::new(&page.conversations, page.next_after);
    let body = if via_value {
        serde_json::to_vec(&serde_json::to_value(&view).expect("to value"))
    } else {
        serde_json::to_vec(&view)
    }
    .expect("serialise");
    (n, body.len(), view.next_after)
}

/// CPU time (user + system) of this process so far, in ms: on a shared machine the wall time
/// of a request includes waiting for a core, its CPU time does not.
fn cpu_ms() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(u.ru_utime) + ms(u.ru_stime)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn measure(
    store: &Store,
    caller: &Caller,
    name: &str,
    limit: Option<usize>,
    after: Option<String>,
    rounds: usize,
    via_value: bool,
) {
    // Warm-up: the block cache and the allocator, as a running broker has them.
    for _ in 0..rounds.div_ceil(10) {
        one(store, caller, limit, after.clone(), via_value).await;
    }
    let mut ms = Vec::with_capacity(rounds);
    let mut shape = (0, 0);
    let cpu_before = cpu_ms();
    for _ in 0..rounds {
        let t = Instant::now();
        let (n, bytes, _) = one(store, caller, limit, after.clone(), via_value).await;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        shape = (n, bytes);
    }
    let cpu = (cpu_ms() - cpu_before) / rounds as f64;
    ms.sort_by(f64::total_cmp);
    println!(
        "{name}: {} conversations, {} bytes of JSON; {rounds} requests: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; process CPU {cpu:.3} ms a request",
        shape.0,
        shape.1,
        pct(&ms, 0.50),
        pct(&ms, 0.99),
        pct(&ms, 1.0)
    );
}

fn main() {
    let visible = env_usize("SWITCHBOARD_LIST_CONVERSATIONS", 100_000);
    let rounds = env_usize("SWITCHBOARD_LIST_ROUNDS", 200).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let store = Store::open(dir.path(), false, 64).expect("open");
        let t = Instant::now();
        fill(&store, "support", 0, visible).await;
        fill(&store, "sales", visible, 10_000).await;
        println!(
            "filled {visible} queued conversations of support and 10000 of sales in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let caller = Caller {
            id: "agent-1".into(),
            role: Role::Agent,
            teams: vec!["support".into()],
        };
        let few = (rounds / 5).max(1);
        measure(&store, &caller, "limit=50", Some(50), None, rounds, false).await;
        measure(&store, &caller, "limit=200", Some(200), None, rounds, false).await;
        let (_, _, next) = one(&store, &caller, None, None, false).await;
        measure(&store, &caller, "default page", None, None, few, false).await;
        let name = "default page, second";
        measure(&store, &caller, name, None, next, few, false).await;
        let name = "default page through a serde_json::Value (the route before)";
        measure(&store, &caller, name, None, None, few, true).await;
        store.close().await;
    });
}
