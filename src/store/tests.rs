//! Store tests: durability, indexes, folding, paging.

use super::*;

/// Commits `c`'s record (and index entries), replacing `before`'s.
async fn commit_conversation(store: &Store, before: Option<&Conversation>, c: &Conversation) {
    let mut b = Batch::new();
    b.put_conversation(before, c).expect("put");
    store.commit(b).await.expect("commit");
}

#[tokio::test]
async fn batch_is_durable_and_indexed_and_reopens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), true, 64).expect("open");
    let mut c = Conversation::new("n", "cust", "support", 1);
    commit_conversation(&store, None, &c).await;
    let before = c.clone();
    c.assign("alice", 1);
    commit_conversation(&store, Some(&before), &c).await;
    store.close().await;

    let store = Store::open(dir.path(), true, 64).expect("reopen");
    assert_eq!(
        store.get_conversation(&c.id).await.expect("get"),
        Some(c.clone())
    );
    let queued = store
        .list_page(
            vec![ListQuery::Status {
                status: ConversationStatus::Queued,
                team: None,
            }],
            None,
            10,
            10,
            |_| true,
        )
        .await
        .expect("list");
    assert_eq!(queued, ListPage::default(), "old index entry must be gone");
    assert_eq!(
        store.owned_by("alice").await.expect("owned"),
        vec![c.id.clone()]
    );
    let counts = store
        .count_by_status_team()
        .await
        .expect("view")
        .await
        .expect("counts");
    assert_eq!(
        counts.get(&(ConversationStatus::Assigned, "support".to_string())),
        Some(&1)
    );
    store.close().await;
}

#[tokio::test]
async fn status_counts_are_those_of_the_moment_the_view_was_taken() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), false, 64).expect("open");
    let mut a = Conversation::new("n", "cust-a", "support", 1);
    commit_conversation(&store, None, &a).await;
    let key = |status| (status, "support".to_string());

    let counted = store.count_by_status_team().await.expect("view");
    // Committed after the view was taken, before the count runs: not counted.
    let before = a.clone();
    a.assign("alice", 2);
    let mut b = Batch::new();
    b.put_conversation(Some(&before), &a).expect("put");
    b.put_conversation(None, &Conversation::new("n", "cust-b", "support", 2))
        .expect("put");
    store.commit(b).await.expect("commit");
    let counts = counted.await.expect("counts");
    assert_eq!(
        counts,
        HashMap::from([(key(ConversationStatus::Queued), 1)])
    );

    let now = store
        .count_by_status_team()
        .await
        .expect("view")
        .await
        .expect("counts");
    assert_eq!(
        now,
        HashMap::from([
            (key(ConversationStatus::Queued), 1),
            (key(ConversationStatus::Assigned), 1)
        ])
    );
    store.close().await;
}

#[tokio::test]
async fn status_pages_walk_one_team_in_id_order_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), false, 64).expect("open");
    let mut b = Batch::new();
    let mut support = Vec::new();
    for i in 0..25 {
        let c = Conversation::new("n", &format!("cust{i}"), "support", 1);
        support.push(c.id.clone());
        b.put_conversation(None, &c).expect("put");
        let other = Conversation::new("n", &format!("other{i}"), "sales", 1);
        b.put_conversation(None, &other).expect("put");
    }
    store.commit(b).await.expect("commit");
    support.sort();

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .status_page(ConversationStatus::Queued, "support".into(), after, 10)
            .await
            .expect("page");
        assert!(page.len() <= 10);
        assert!(page.iter().all(|c| c.team() == "support"));
        after = page.last().map(|c| c.id.clone());
        let full = page.len() == 10;
        seen.extend(page.into_iter().map(|c| c.id));
        if !full {
            break;
        }
    }
    assert_eq!(seen, support);
    let assigned = store
        .status_page(ConversationStatus::Assigned, "support".into(), None, 10)
        .await
        .expect("page");
    assert!(assigned.is_empty());
    store.close().await;
}

/// Follows `next_after` from the start until `None`, each page reading at most `budget`
/// entries; returns the ids listed and the number of pages.
async fn follow(
    store: &Store,
    queries: &[ListQuery],
    limit: usize,
    budget: usize,
    keep: fn(&Conversation) -> bool,
) -> (Vec<String>, usize) {
    let (mut seen, mut pages, mut after) = (Vec::new(), 0, None);
    loop {
        let page = store
            .list_page(queries.to_vec(), after, limit, budget, keep)
            .await
            .expect("page");
        pages += 1;
        assert!(page.conversations.len() <= limit.min(budget));
        seen.extend(page.conversations.into_iter().map(|c| c.id));
        match page.next_after {
            Some(next) => after = Some(next),
            None => return (seen, pages),
        }
        assert!(pages < 1_000, "paging does not end");
    }
}

#[tokio::test]
async fn list_pages_resume_where_the_budget_stopped_in_every_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), false, 64).expect("open");
    let mut b = Batch::new();
    let (mut support, mut sales_assigned) = (Vec::new(), Vec::new());
    for i in 0..40 {
        let c = Conversation::new("n", &format!("s{i}"), "support", 1);
        support.push(c.id.clone());
        b.put_conversation(None, &c).expect("put");
    }
    for i in 0..7 {
        let mut c = Conversation::new("n", &format!("a{i}"), "sales", 1);
        c.assign("dave", 1);
        sales_assigned.push(c.id.clone());
        b.put_conversation(None, &c).expect("put");
    }
    for i in 0..5 {
        let c = Conversation::new("n", &format!("q{i}"), "sales", 1);
        b.put_conversation(None, &c).expect("put");
    }
    store.commit(b).await.expect("commit");
    support.sort();
    sales_assigned.sort();
    let queued = |team: Option<&str>| ListQuery::Status {
        status: ConversationStatus::Queued,
        team: team.map(str::to_string),
    };

    // Unfiltered, only the 7 assigned sales conversations kept: 52 records, budget 4.
    fn assigned(c: &Conversation) -> bool {
        c.status == ConversationStatus::Assigned
    }
    let (seen, pages) = follow(&store, &[ListQuery::All], 100, 4, assigned).await;
    assert_eq!(seen, sales_assigned);
    assert_eq!(
        pages, 13,
        "52 records, 4 a page, the last page ends the range"
    );
    // Index scans: one team, every team (a range per team), an assignee, and a union.
    let (seen, _) = follow(&store, &[queued(Some("support"))], 100, 3, |_| true).await;
    assert_eq!(seen, support);
    let (seen, _) = follow(&store, &[queued(None)], 100, 3, |_| true).await;
    assert_eq!(seen.len(), 45);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "id order, no repeats");
    let (seen, _) = follow(&store, &[ListQuery::Assignee("dave".into())], 2, 5, |_| {
        true
    })
    .await;
    assert_eq!(seen, sales_assigned);
    let union = [
        ListQuery::Assignee("dave".into()),
        queued(Some("support")),
        ListQuery::Id(support[3].clone()),
    ];
    let (seen, _) = follow(&store, &union, 5, 6, |_| true).await;
    let mut want = [support.clone(), sales_assigned.clone()].concat();
    want.sort();
    assert_eq!(seen, want, "a union is merged by id, each once");

    // A page that matched nothing still carries the cursor; `after` is honoured.
    let page = store
        .list_page(vec![ListQuery::All], None, 10, 2, |_| false)
        .await
        .expect("page");
    assert!(page.conversations.is_empty());
    assert!(page.next_after.is_some());
    let page = store
        .list_page(
            vec![queued(Some("support"))],
            Some(support[37].clone()),
            10,
            10,
            |_| true,
        )
        .await
        .expect("page");
    let ids: Vec<_> = page.conversations.iter().map(|c| c.id.clone()).collect();
    assert_eq!(ids, support[38..].to_vec());
    assert_eq!(page.next_after, None, "the range ended within the budget");
    // A full page ending exactly at the end of the range needs no cursor either.
    let page = store
        .list_page(
            vec![queued(Some("support"))],
            Some(support[37].clone()),
            2,
            10,
            |_| true,
        )
        .await
        .expect("page");
    assert_eq!(page.conversations.len(), 2);
    assert_eq!(page.next_after, None);
    store.close().await;
}

/// Messages committed without their record are folded back in by every read that hands a
/// conversation out (by id, listed, loaded); only the start-up scans see the record as stored.
#[tokio::test]
async fn reads_fold_in_the_messages_committed_after_the_record() {
    use crate::domain::{DeliveryStatus, Direction};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), false, 64).expect("open");
    let mut c = Conversation::new("n", "cust", "support", 1_000);
    let other = Conversation::new("n", "other", "support", 1_000);
    let message = |c: &Conversation, seq: u64, at: i64| Message {
        conversation_id: c.id.clone(),
        seq,
        direction: Direction::Inbound,
        kind: "text".into(),
        text: Some(format!("m{seq}")),
        wamid: Some(format!("w-{}-{seq}", c.customer)),
        status: Some(DeliveryStatus::Received),
        author: crate::domain::Author::Customer(c.customer.clone()),
        at,
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
    let mut b = Batch::new();
    let seq = c.take_seq();
    let first = message(&c, seq, 2_000);
    c.absorb(&first);
    b.put_message(&first).expect("put");
    b.put_conversation(None, &c).expect("put");
    b.put_conversation(None, &other).expect("put");
    store.commit(b).await.expect("commit");
    let recorded = c.clone();
    // Three more messages without the record, and one of the neighbour's (same prefix order).
    let mut b = Batch::new();
    for at in [3_000, 5_000, 4_000] {
        let seq = c.take_seq();
        let m = message(&c, seq, at);
        c.absorb(&m);
        b.put_message(&m).expect("put");
    }
    b.put_message(&message(&other, 0, 9_000)).expect("put");
    store.commit(b).await.expect("commit");
    assert_eq!(
        (c.next_seq, c.last_message_at, c.last_inbound_at),
        (4, 5_000, Some(5_000))
    );

    assert_eq!(
        store.get_conversation(&c.id).await.expect("get"),
        Some(c.clone())
    );
    let loaded = store
        .load_conversation(&c.id, 10)
        .await
        .expect("load")
        .expect("stored");
    assert_eq!((loaded.conv, loaded.unrecorded), (c.clone(), 3));
    assert_eq!(loaded.wamids.map(|w| w.len()), Some(4));
    let page = store
        .list_page(vec![ListQuery::All], None, 10, 10, |_| true)
        .await
        .expect("list");
    let listed = page.conversations.iter().find(|x| x.id == c.id);
    assert_eq!(listed, Some(&c));
    // The neighbour's record has no messages of its own before its next_seq: it too gets its
    // message folded in, and nothing of `c`'s.
    let neighbour = page.conversations.iter().find(|x| x.id == other.id);
    assert_eq!(
        neighbour.map(|x| (x.next_seq, x.last_message_at)),
        Some((1, 9_000))
    );
    let mut scanned = Vec::new();
    store
        .scan_status(ConversationStatus::Queued, "support", |p| scanned.extend(p))
        .await
        .expect("scan");
    assert!(
        scanned.contains(&recorded),
        "start-up scans read records as stored"
    );
    store.close().await;
}
