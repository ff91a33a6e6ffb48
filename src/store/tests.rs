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

/// Runs `commits` as one group commit: the writer is held in a stalled commit of its own while
/// they queue, so it takes them all at once when the stall is lifted. Returns each outcome.
/// Each answer says, per conditional put of its batch, whether it was made.
async fn commit_as_one_group(
    store: &Store,
    commits: Vec<Batch>,
) -> Vec<Result<Vec<bool>, StoreError>> {
    store.inject_write_stall(Duration::from_secs(30));
    let mut first = Batch::new();
    first.put_other_change("test", "holds the writer");
    let holder = tokio::spawn({
        let store = store.clone();
        async move { store.commit(first).await }
    });
    while store.commit_running_for().is_none() {
        tokio::task::yield_now().await;
    }
    // Queued one after the other, in the order given, behind the stalled one.
    let tx = store.inner.writer.lock().clone().expect("writer");
    let mut waiting = Vec::new();
    for (i, b) in commits.into_iter().enumerate() {
        let store = store.clone();
        waiting.push(tokio::spawn(async move { store.commit_checked(b).await }));
        while tx.max_capacity() - tx.capacity() < i + 1 {
            tokio::task::yield_now().await;
        }
    }
    store.inject_write_stall(Duration::ZERO);
    holder.await.expect("join").expect("holder commit");
    let mut out = Vec::new();
    for w in waiting {
        out.push(w.await.expect("join"));
    }
    out
}

/// A group commit is written in key order, but the operations on one key keep the order of the
/// commits that made them: the last commit's word on a key is the one that stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_in_key_order_keeps_each_keys_operations_in_commit_order() {
    use crate::domain::DeliveryStatus;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), false, 1024).expect("open");
    let status = |wamid: &str, at| StatusUpdate {
        wamid: wamid.to_string(),
        status: DeliveryStatus::Delivered,
        error: None,
        at,
    };
    // Keys "w0".."w9": each put, deleted, put again, or put then deleted, in separate commits,
    // with other keys' commits between them.
    let mut commits = Vec::new();
    for round in 0..3 {
        for i in (0..10).rev() {
            let w = format!("w{i}");
            let mut b = Batch::new();
            match (round, i % 2) {
                (0, _) => b.put_orphan_status(&status(&w, 1)).expect("put"),
                (1, _) => b.delete_orphan_status(&w),
                (2, 0) => b.put_orphan_status(&status(&w, 3)).expect("put"),
                _ => b.delete_orphan_status(&w),
            }
            commits.push(b);
        }
    }
    for r in commit_as_one_group(&store, commits).await {
        r.expect("commit");
    }
    for i in 0..10 {
        let got = store.orphan_status(&format!("w{i}")).await.expect("read");
        let want = (i % 2 == 0).then(|| status(&format!("w{i}"), 3));
        assert_eq!(got, want, "w{i}");
    }
    store.close().await;
}

/// A conditional put (the outbox's in-doubt mark of a dispatch round) is made only if its key
/// exists when the group is applied: a delete committed before it, in an earlier group or earlier
/// in its own, wins (a settled job is never brought back), a put before it in the group counts,
/// and each answer says which puts were made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_if_present_never_brings_back_a_deleted_outbox_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), false, 1024).expect("open");
    let job = |seq: u64, in_doubt: bool| OutboxJob {
        conversation_id: "c1".into(),
        seq,
        number: "n1".into(),
        to: "15550001".into(),
        payload: Payload::Text {
            body: format!("send {seq}"),
            reply_to: None,
        },
        in_doubt,
    };
    let mut b = Batch::new();
    for seq in 0..3 {
        b.put_outbox(&job(seq, false)).expect("put");
    }
    store.commit(b).await.expect("commit");
    // 1 is settled in a group of its own, 2 earlier in the marks' group; 3 is new there.
    let mut b = Batch::new();
    b.delete_outbox("c1", 1);
    store.commit(b).await.expect("commit");
    let mut settle = Batch::new();
    settle.delete_outbox("c1", 2);
    let mut new = Batch::new();
    new.put_outbox(&job(3, false)).expect("put");
    let mut marks = Batch::new();
    for seq in 0..5 {
        marks.put_outbox_if_present(&job(seq, true)).expect("put");
    }
    let answers = commit_as_one_group(&store, vec![settle, new, marks]).await;
    let answers: Vec<Vec<bool>> = answers.into_iter().map(|a| a.expect("commit")).collect();
    assert_eq!(
        answers,
        [vec![], vec![], vec![true, false, false, true, false]]
    );
    let (left, _) = store
        .outbox_page("n1".into(), None, 10)
        .await
        .expect("page");
    assert_eq!(left, [job(0, true), job(3, true)]);
    store.close().await;
}

/// A batch guarded by an idempotency key is written only while the key is unused when the
/// writer applies it: a second batch with the key, in the same group or a later one, writes
/// nothing and names the seq the key was stored with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_guarded_by_a_used_idempotency_key_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), false, 1024).expect("open");
    let keyed = |seq: u64, other: &str| {
        let mut b = Batch::new();
        b.guard_idempotency("c1", "k");
        b.put_idempotency("c1", "k", seq);
        b.put_other_change("test", other);
        b
    };
    let first = store
        .commit_guarded(keyed(7, "first"))
        .await
        .expect("commit");
    assert_eq!(first, None, "an unused key lets the batch through");
    assert_eq!(
        store
            .commit_guarded(keyed(8, "second"))
            .await
            .expect("commit"),
        Some(7)
    );
    assert_eq!(
        store.idempotent_seq("c1", "k").await.expect("read"),
        Some(7)
    );
    // In one group: the first batch with a new key is written, the next one is held back.
    for r in commit_as_one_group(&store, vec![keyed_in("c2", 1), keyed_in("c2", 2)]).await {
        r.expect("commit");
    }
    assert_eq!(
        store.idempotent_seq("c2", "k").await.expect("read"),
        Some(1)
    );
    store.close().await;
}

fn keyed_in(conv: &str, seq: u64) -> Batch {
    let mut b = Batch::new();
    b.guard_idempotency(conv, "k");
    b.put_idempotency(conv, "k", seq);
    b
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

mod rollups {
    //! Reports through rollups give exactly the figures of the events read one by one: over
    //! windows cut mid-hour, hour and day buckets in whole-, half- and quarter-hour zones across
    //! a daylight-saving change, each dimension, and a caller who sees one team only.

    use std::collections::HashMap;
    use std::sync::Arc;

    use chrono_tz::Tz;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::domain::report::{
        Aggregator, AssignReason, Bucket, Dimension, ReportEvent, ReportKind, ReportRow, Span,
        HOUR_MS,
    };
    use crate::domain::{Millis, SlaKind};

    /// 2026-10-24 00:00 UTC: Berlin leaves summer time on the 25th at 01:00 UTC.
    const T0: Millis = 1_792_800_000_000;

    fn zones() -> Arc<HashMap<String, Tz>> {
        let z = |s: &str| s.parse::<Tz>().unwrap_or(Tz::UTC);
        Arc::new(
            [
                ("support", z("Europe/Berlin")),
                ("sales", z("Asia/Kolkata")),
                ("a1", z("Europe/Berlin")),
                ("a2", z("Asia/Kathmandu")),
                ("n1", z("Europe/Berlin")),
                ("n2", z("America/New_York")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        )
    }

    fn random_events(
        rng: &mut rand::rngs::StdRng,
        n: usize,
        from: Millis,
        span: Millis,
    ) -> Vec<ReportEvent> {
        let teams = ["support", "sales", "ops"];
        let agents = [None, Some("a1"), Some("a2"), Some("a3")];
        let numbers = ["n1", "n2"];
        (0..n)
            .map(|_| {
                let s = |rng: &mut rand::rngs::StdRng| Span {
                    wall_ms: rng.gen_range(0..10_000_000),
                    business_ms: rng.gen_range(0..1_000_000),
                };
                let kind = match rng.gen_range(0..14) {
                    0 => ReportKind::Opened,
                    1 => ReportKind::Reopened,
                    2 => ReportKind::Inbound {
                        messages: rng.gen_range(1..4),
                    },
                    3 => ReportKind::FirstResponse(s(rng)),
                    4 => ReportKind::Reply { wait: Some(s(rng)) },
                    5 => ReportKind::Reply { wait: None },
                    6 => ReportKind::Resolved(s(rng)),
                    7 => ReportKind::Assigned {
                        reason: AssignReason::Claim,
                    },
                    8 => ReportKind::Reassigned {
                        reason: "offline".into(),
                    },
                    9 => ReportKind::Transferred {
                        to_team: "sales".into(),
                    },
                    10 => ReportKind::BotHandover,
                    11 => ReportKind::BotResolved,
                    12 => ReportKind::Sla {
                        kind: SlaKind::FirstResponse,
                        met: rng.gen(),
                    },
                    _ => ReportKind::Csat {
                        score: rng.gen_range(1..=5),
                    },
                };
                ReportEvent {
                    at: from + rng.gen_range(0..span),
                    conversation: format!("n:{}", rng.gen_range(0..200)),
                    team: teams[rng.gen_range(0..teams.len())].to_string(),
                    agent: agents[rng.gen_range(0..agents.len())].map(str::to_string),
                    number: numbers[rng.gen_range(0..numbers.len())].to_string(),
                    kind,
                }
            })
            .collect()
    }

    async fn write(store: &Store, events: &[ReportEvent], with_rollups: bool) {
        for chunk in events.chunks(7) {
            let mut b = Batch::new();
            for e in chunk {
                if with_rollups {
                    b.put_report(e).expect("put");
                } else {
                    b.put_report_without_rollups(e).expect("put");
                }
            }
            store.commit(b).await.expect("commit");
        }
    }

    fn aggregator(
        dimension: Dimension,
        bucket: Option<Bucket>,
        only: Option<&'static str>,
    ) -> Aggregator<impl Fn(&str) -> bool + Send + 'static, impl Fn(&str) -> Tz + Send + 'static>
    {
        let z = zones();
        Aggregator::new(
            dimension,
            bucket,
            move |team: &str| only.is_none_or(|o| o == team),
            move |key: &str| z.get(key).copied().unwrap_or(Tz::UTC),
        )
    }

    /// The report from the events in memory, one by one.
    fn by_hand(
        events: &[ReportEvent],
        from: Millis,
        to: Millis,
        dimension: Dimension,
        bucket: Option<Bucket>,
        only: Option<&'static str>,
    ) -> Vec<(String, ReportRow)> {
        let mut agg = aggregator(dimension, bucket, only);
        for e in events.iter().filter(|e| from <= e.at && e.at < to) {
            agg.add(&e.view());
        }
        agg.finish()
    }

    async fn check(
        store: &Store,
        events: &[ReportEvent],
        windows: &[(Millis, Millis)],
    ) -> (usize, usize) {
        let mut all_zones: Vec<Tz> = zones().values().copied().collect();
        all_zones.push(Tz::UTC);
        let (mut read, mut in_windows) = (0, 0);
        for &(from, to) in windows {
            for dimension in [Dimension::Teams, Dimension::Agents, Dimension::Numbers] {
                for bucket in [None, Some(Bucket::Hour), Some(Bucket::Day)] {
                    for only in [None, Some("support")] {
                        let got = store
                            .fold_report(
                                from,
                                to,
                                all_zones.clone(),
                                aggregator(dimension, bucket, only),
                            )
                            .await
                            .expect("fold");
                        assert!(!got.truncated);
                        let want = by_hand(events, from, to, dimension, bucket, only);
                        assert!(!want.is_empty());
                        assert_eq!(
                            got.state.finish(),
                            want,
                            "{dimension:?} {bucket:?} {only:?} [{from}, {to})"
                        );
                        if bucket.is_none() && only.is_none() && dimension == Dimension::Teams {
                            read += got.events;
                            in_windows +=
                                events.iter().filter(|e| from <= e.at && e.at < to).count();
                        }
                    }
                }
            }
        }
        (read, in_windows)
    }

    #[tokio::test]
    async fn reports_through_rollups_equal_reports_from_events() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(21);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), false, 64).expect("open");
        assert_eq!(store.rolled_up_from(), Millis::MIN, "an empty store");
        let events = random_events(&mut rng, 4_000, T0, 3 * 24 * HOUR_MS);
        write(&store, &events, true).await;
        let mut windows = vec![
            (T0, T0 + 3 * 24 * HOUR_MS),
            (T0 + 1_234_567, T0 + 2 * 24 * HOUR_MS + 987_654),
            (T0 + 25 * HOUR_MS + 1, T0 + 27 * HOUR_MS - 1),
            (T0 + 5 * 60_000, T0 + 50 * 60_000),
        ];
        for _ in 0..4 {
            let from = T0 + rng.gen_range(0..2 * 24 * HOUR_MS);
            windows.push((from, from + rng.gen_range(1..24 * HOUR_MS)));
        }
        let (read, raw) = check(&store, &events, &windows).await;
        assert!(
            read * 2 < raw,
            "rollups read: {read} records for {raw} events"
        );
        // Merged by flushes and compactions, the same.
        store.close().await;
        let store = Store::open(dir.path(), false, 64).expect("reopen");
        store.compact_report_rollups().await.expect("compact");
        check(&store, &events, &windows[..2]).await;
        store.close().await;
    }

    #[tokio::test]
    async fn events_written_before_rollups_are_read_one_by_one() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut events = random_events(&mut rng, 1_000, T0, 24 * HOUR_MS);
        {
            // A release without rollups wrote these; an empty marker says nothing yet.
            let store = Store::open(dir.path(), false, 64).expect("open");
            store.forget_rollups_marker().await.expect("forget");
            write(&store, &events, false).await;
            store.close().await;
        }
        let store = Store::open(dir.path(), false, 64).expect("open");
        let last = events.iter().map(|e| e.at).max().unwrap_or(T0);
        let from = store.rolled_up_from();
        assert_eq!(from, crate::domain::report::hour_floor(last) + HOUR_MS);
        let later = random_events(&mut rng, 1_000, T0, 2 * 24 * HOUR_MS);
        write(&store, &later, true).await;
        events.extend(later);
        check(
            &store,
            &events,
            &[
                (T0, T0 + 2 * 24 * HOUR_MS),
                (T0 + 3_000_000, T0 + 40 * HOUR_MS),
            ],
        )
        .await;
        store.close().await;
        let store = Store::open(dir.path(), false, 64).expect("reopen");
        assert_eq!(store.rolled_up_from(), from, "the marker is durable");
        store.close().await;
    }

    /// A group commit writes one operand per rollup, not one per event (the memtable holds a
    /// rollup's operands until a flush), and reports read through the joined operands are those
    /// of the events one by one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_group_writes_one_operand_per_rollup_and_reports_hold() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(24);
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), false, 1024).expect("open");
        // One hour: every event adds to one of at most 3 team rollups, 9 of (team, agent) and 6
        // of (team, number).
        let events = random_events(&mut rng, 300, T0, HOUR_MS);
        let commits = events
            .iter()
            .map(|e| {
                let mut b = Batch::new();
                b.put_report(e).expect("put");
                b
            })
            .collect();
        for r in super::commit_as_one_group(&store, commits).await {
            r.expect("commit");
        }
        let entries = store
            .read(|db| {
                db.property_int_value_cf(
                    cf(db, CF_REPORT_ROLLUPS)?,
                    "rocksdb.num-entries-active-mem-table",
                )
                .map_err(rocks)
            })
            .await
            .expect("property")
            .unwrap_or(u64::MAX);
        // At most those 18 and the marker written at open; one per event would be hundreds.
        assert!(entries <= 19, "{entries} memtable entries for 18 rollups");
        check(
            &store,
            &events,
            &[(T0, T0 + HOUR_MS), (T0 + 60_000, T0 + 1_800_000)],
        )
        .await;
        store.close().await;
        let store = Store::open(dir.path(), false, 1024).expect("reopen");
        store.compact_report_rollups().await.expect("compact");
        check(&store, &events, &[(T0, T0 + HOUR_MS)]).await;
        store.close().await;
    }
}

/// An orphan status older than Meta's seven days of retries is dropped by compaction; a recent
/// one, and one the filter cannot read, stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_statuses_older_than_a_week_are_compacted_away() {
    use crate::domain::DeliveryStatus;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), false, 1024).expect("open");
    let now = chrono::Utc::now().timestamp_millis();
    let status = |wamid: &str, at| StatusUpdate {
        wamid: wamid.to_string(),
        status: DeliveryStatus::Delivered,
        error: None,
        at,
    };
    let old = status("w-old", now - super::orphans::ORPHAN_TTL_MS - 60_000);
    let recent = status("w-recent", now - 60_000);
    let mut b = Batch::new();
    b.put_orphan_status(&old).expect("put");
    b.put_orphan_status(&recent).expect("put");
    b.put_raw(
        CF_ORPHAN_STATUS,
        b"w-garbled".to_vec(),
        vec![0xff, 0x00, 0x13],
    );
    store.commit(b).await.expect("commit");
    assert_eq!(store.orphan_status("w-old").await.expect("read"), Some(old));
    store.flush().await.expect("flush");
    store
        .read(|db| {
            db.compact_range_cf(cf(db, CF_ORPHAN_STATUS)?, None::<&[u8]>, None::<&[u8]>);
            Ok(())
        })
        .await
        .expect("compact");
    assert_eq!(store.orphan_status("w-old").await.expect("read"), None);
    assert_eq!(
        store.orphan_status("w-recent").await.expect("read"),
        Some(recent)
    );
    let garbled = store
        .read(|db| {
            db.get_cf(cf(db, CF_ORPHAN_STATUS)?, b"w-garbled")
                .map_err(rocks)
        })
        .await
        .expect("read");
    assert!(
        garbled.is_some(),
        "an unreadable value is not the filter's to drop"
    );
    store.close().await;
}
