//! `GET /api/v1/conversations` pages honestly past its scan budget: a request reads a bounded
//! number of index entries or records, and whenever it stops before the end `next_after` says
//! where to continue — even on a page that holds few or no conversations — so a client that
//! follows it until `null` sees every visible conversation exactly once, in every listing mode.
//!
//! The stores here hold more conversations (42,000) than one request reads, and more than the
//! 40,000 records the listing used to read before it silently stopped with `next_after: null`.

use std::collections::BTreeSet;

use crate::common::*;
use serde_json::Value;
use switchboard::domain::conversation_id;
use switchboard::http::conversations::{LIST_SCAN_BUDGET, MAX_LIST};

/// Conversations of the crowded team: above one scan budget and above the old 40,000 cut-off.
const CROWD: usize = 42_000;
const _: () = assert!(
    LIST_SCAN_BUDGET < CROWD,
    "the crowd must outgrow one scan budget"
);
/// Inbound messages (each a new customer) per webhook body, well under the 3 MiB limit.
const PER_BODY: usize = 2_000;

/// Starts a broker (no fsync: the data only has to be there, fast) holding `CROWD` queued
/// conversations on N2 (team sales); returns it and their ids, sorted.
async fn crowded_broker() -> (TB, Vec<String>) {
    let tb = TB::start_with(|c| c.sync = false).await;
    let ts = now();
    let customers: Vec<String> = (0..CROWD).map(|i| format!("4930{i:08}")).collect();
    let mut posts = Vec::new();
    for (b, chunk) in customers.chunks(PER_BODY).enumerate() {
        let msgs: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, cust)| text_msg(&format!("wamid.lp{b}x{i}"), cust, ts, "hi"))
            .collect();
        let body = envelope(vec![entry(vec![change(N2, msgs, vec![])])]);
        let api = tb.api.clone();
        posts.push(tokio::spawn(async move { api.webhook(&body).await }));
    }
    for p in posts {
        assert_eq!(
            p.await.expect("webhook task"),
            200,
            "crowd webhook accepted"
        );
    }
    let mut ids: Vec<String> = customers.iter().map(|c| conversation_id(N2, c)).collect();
    ids.sort();
    (tb, ids)
}

/// One page as the client sees it.
struct Page {
    ids: Vec<String>,
    next_after: Option<String>,
}

/// Follows `next_after` from `after` (None: the start) until it is null; asserts every page
/// respects `limit` and that ids only grow (nothing repeated); returns the pages.
async fn follow(
    tb: &TB,
    token: &str,
    query: &str,
    limit: usize,
    mut after: Option<String>,
) -> Vec<Page> {
    let mut pages: Vec<Page> = Vec::new();
    loop {
        let mut path = format!("/api/v1/conversations?limit={limit}");
        if !query.is_empty() {
            path.push('&');
            path.push_str(query);
        }
        if let Some(a) = &after {
            path.push_str(&format!("&after={a}"));
        }
        let (code, body) = tb.get(token, &path).await;
        assert_eq!(code, 200, "GET {path}: {body}");
        let ids: Vec<String> = body["conversations"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: no conversations array"))
            .iter()
            .map(|c| c["id"].as_str().expect("id").to_owned())
            .collect();
        assert!(ids.len() <= limit, "GET {path}: {} > limit", ids.len());
        let next_after = match &body["next_after"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => panic!("GET {path}: next_after is {other}"),
        };
        let previous = pages.iter().flat_map(|p| p.ids.last()).next_back();
        let floor = previous.or(after.as_ref());
        assert!(
            ids.first().is_none_or(|f| floor.is_none_or(|p| f > p)),
            "GET {path}: the page goes back before {floor:?}"
        );
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "GET {path}: id order");
        if let (Some(n), Some(last)) = (&next_after, ids.last()) {
            assert!(
                n >= last,
                "GET {path}: next_after {n} before the page's end"
            );
        }
        after = next_after.clone();
        pages.push(Page { ids, next_after });
        assert!(pages.len() <= 100, "{query}: paging does not end");
        if after.is_none() {
            return pages;
        }
    }
}

fn all_ids(pages: &[Page]) -> Vec<String> {
    pages.iter().flat_map(|p| p.ids.iter().cloned()).collect()
}

/// `n` customers whose conversation on `number` has an id accepted by `pick`.
fn customers_where(number: &str, n: usize, pick: impl Fn(&str) -> bool) -> Vec<String> {
    (0u64..)
        .map(|k| format!("4477{k:08}"))
        .filter(|c| pick(&conversation_id(number, c)))
        .take(n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_supervisor_following_next_after_sees_every_visible_conversation_once() {
    let (tb, sales) = crowded_broker().await;
    // Carol supervises support only: six support conversations among 42,000 of sales, three of
    // them at the very end of the id order ("cff…": the last 1/4096 of it, far past what one scan
    // budget — or the old 40,000 cut-off — reaches from the start) and three at its beginning.
    let mut support = customers_where(N1, 3, |id| id < "c1");
    support.extend(customers_where(N1, 3, |id| id >= "cff"));
    let mut visible = BTreeSet::new();
    for cust in &support {
        tb.send_text(N1, cust, "hello").await;
        visible.insert(conversation_id(N1, cust));
    }
    let visible: Vec<String> = visible.into_iter().collect();

    // Unfiltered: the whole store is scanned budget by budget.
    let pages = follow(&tb, CAROL, "", MAX_LIST, None).await;
    assert_eq!(all_ids(&pages), visible, "every visible conversation, once");
    assert!(pages.len() > 1, "42,006 records take more than one budget");
    assert!(
        pages
            .iter()
            .any(|p| p.ids.len() < MAX_LIST && p.next_after.is_some()),
        "a short page still carries the cursor"
    );
    // status=queued without a team: one index range per team, merged by id.
    let pages = follow(&tb, CAROL, "status=queued", MAX_LIST, None).await;
    assert_eq!(all_ids(&pages), visible);
    // The admin sees everything, each once, through pages ended by the limit or the budget.
    let pages = follow(&tb, ROOT, "", 7_000, None).await;
    let mut everything = [sales, visible].concat();
    everything.sort();
    assert_eq!(all_ids(&pages).len(), everything.len());
    assert!(
        all_ids(&pages) == everything,
        "the admin's pages cover the store once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn filtered_listings_honour_after_and_page_past_the_scan_budget() {
    let (tb, sales) = crowded_broker().await;

    // status + team: one index range longer than a budget, followed to its end.
    let pages = follow(&tb, ROOT, "status=queued&team=sales", MAX_LIST, None).await;
    assert!(
        all_ids(&pages) == sales,
        "every queued sales conversation, once"
    );
    // `after` deep in the range (past 40,000 entries) is where the listing starts.
    let from = 40_500;
    let pages = follow(
        &tb,
        ROOT,
        "status=queued&team=sales",
        MAX_LIST,
        Some(sales[from].clone()),
    )
    .await;
    assert_eq!(all_ids(&pages), sales[from + 1..].to_vec());
    // The same through the team filter alone (one range per status, merged by id), and for an
    // agent of the team (its own conversations plus the team's queued and bot ranges) from an
    // `after` that leaves more than one budget to read.
    let pages = follow(&tb, ROOT, "team=sales", 3_000, Some(sales[from].clone())).await;
    assert_eq!(all_ids(&pages), sales[from + 1..].to_vec());
    let from = CROWD - LIST_SCAN_BUDGET - 2_000;
    let pages = follow(
        &tb,
        DAVE,
        "status=queued",
        MAX_LIST,
        Some(sales[from].clone()),
    )
    .await;
    assert!(pages.len() > 1, "more than one budget after {from}");
    assert!(
        all_ids(&pages) == sales[from + 1..],
        "the agent's queue, once"
    );

    // assignee: Dave owns three; `after` the first of them leaves the other two.
    let mut owned = vec![
        sales[10].clone(),
        sales[20_000].clone(),
        sales[41_990].clone(),
    ];
    for id in &owned {
        tb.must_claim(DAVE, id).await;
    }
    owned.sort();
    let pages = follow(&tb, ROOT, "assignee=dave", 1, Some(owned[0].clone())).await;
    assert_eq!(all_ids(&pages), owned[1..].to_vec());
    // Dave's own conversation is his whatever its status; the claimed ones left the queue.
    let pages = follow(&tb, DAVE, "", MAX_LIST, Some(sales[41_000].clone())).await;
    assert_eq!(all_ids(&pages), sales[41_001..].to_vec());
    let pages = follow(
        &tb,
        ROOT,
        "status=queued&team=sales",
        MAX_LIST,
        Some(sales[41_000].clone()),
    )
    .await;
    let mut queued = sales[41_001..].to_vec();
    queued.retain(|id| *id != owned[2]);
    assert_eq!(all_ids(&pages), queued);
}
