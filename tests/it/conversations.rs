//! Conversations: identity, ownership (claim/release/transfer/resolve), reopen, window.

use crate::common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_conversation_per_number_and_customer() {
    let tb = TB::start().await;
    let cust = customer();
    tb.send_text(N1, &cust, "first on number one").await;
    tb.send_text(N1, &cust, "second on number one").await;
    tb.send_text(N2, &cust, "first on number two").await;
    let all = tb.list(ROOT, &format!("customer={cust}")).await;
    assert_eq!(all.len(), 2, "{all:#?}");
    let c1 = tb.conv_of(N1, &cust).await.unwrap();
    let c2 = tb.conv_of(N2, &cust).await.unwrap();
    assert_ne!(c1["id"], c2["id"]);
    assert_eq!(c1["team"], json!("support"));
    assert_eq!(c2["team"], json!("sales"));
    assert_eq!(tb.messages(c1["id"].as_str().unwrap()).await.len(), 2);
    assert_eq!(tb.messages(c2["id"].as_str().unwrap()).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_conversation_is_queued_on_default_team_and_unassigned_while_agents_offline() {
    let tb = TB::start().await;
    let cust = customer();
    let id = tb.open_conv(N1, &cust, "hi").await;
    let c = tb.conversation(&id).await;
    assert_eq!(c["status"], json!("queued"));
    assert_eq!(c["team"], json!("support"));
    assert!(
        c["assignee"].is_null(),
        "nobody is online, nothing may be assigned: {c}"
    );
    assert_eq!(c["customer"], json!(cust));
    assert_eq!(c["number"], json!(N1));
    // A second message: still unassigned.
    tb.send_text(N1, &cust, "anyone?").await;
    let c = tb.conversation(&id).await;
    assert!(c["assignee"].is_null(), "{c}");
    assert_eq!(c["status"], json!("queued"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_that_went_offline_again_get_nothing_assigned() {
    let tb = TB::start().await;
    for t in [ALICE, BOB, CAROL, ROOT] {
        assert_eq!(tb.presence(t, "online").await.0, 200);
        assert_eq!(tb.presence(t, "offline").await.0, 200);
    }
    assert_eq!(tb.presence(BOB, "away").await.0, 200);
    let id = tb.open_conv(N1, &customer(), "hello?").await;
    let c = tb.conversation(&id).await;
    assert!(
        c["assignee"].is_null(),
        "offline/away agents must not be assigned: {c}"
    );
}

// ---------------------------------------------------------------------------------------------
// Claim
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_assigns_the_caller() {
    let tb = TB::start().await;
    let id = tb.open_conv(N1, &customer(), "help").await;
    let (s, v) = tb.claim(BOB, &id).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["id"], json!(id));
    assert_eq!(v["assignee"], json!("bob"));
    assert_eq!(v["status"], json!("assigned"));
    let c = tb.conversation(&id).await;
    assert_eq!(c["assignee"], json!("bob"));
    assert_eq!(c["status"], json!("assigned"));

    let (s, v) = tb.claim(ALICE, &id).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(err_code(&v), "already_assigned");
    assert_eq!(
        v["error"]["assignee"],
        json!("bob"),
        "409 names the owner: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_have_exactly_one_winner() {
    let tb = TB::start_with(|c| c.extra = racer_agents(20)).await;
    for round in 0..3 {
        let id = tb
            .open_conv(N1, &customer(), &format!("race {round}"))
            .await;
        let mut handles = Vec::new();
        for i in 0..20 {
            let api = tb.api.clone();
            let id = id.clone();
            handles.push(tokio::spawn(async move {
                let (s, v) = api.claim(&format!("t-racer{i}"), &id).await;
                (i, s, v)
            }));
        }
        let mut winners = Vec::new();
        let mut losers = Vec::new();
        for h in handles {
            let (i, s, v) = h.await.unwrap();
            match s {
                200 => winners.push((i, v)),
                409 => losers.push((i, v)),
                other => panic!("racer{i}: unexpected {other}: {v}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let winner = format!("racer{}", winners[0].0);
        assert_eq!(winners[0].1["assignee"], json!(winner));
        assert_eq!(losers.len(), 19);
        for (i, v) in &losers {
            assert_eq!(err_code(v), "already_assigned", "racer{i}: {v}");
            assert_eq!(
                v["error"]["assignee"],
                json!(winner),
                "racer{i} told the wrong owner: {v}"
            );
        }
        assert_eq!(tb.conversation(&id).await["assignee"], json!(winner));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_by_one_agent_respect_capacity() {
    // alice has max_concurrent = 2: firing claims on 6 conversations at once must give her at
    // most 2.
    let tb = TB::start().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(tb.open_conv(N1, &customer(), &format!("cap {i}")).await);
    }
    let mut handles = Vec::new();
    for id in &ids {
        let api = tb.api.clone();
        let id = id.clone();
        handles.push(tokio::spawn(async move { api.claim(ALICE, &id).await }));
    }
    let mut ok = 0;
    for h in handles {
        let (s, v) = h.await.unwrap();
        match s {
            200 => ok += 1,
            409 => assert_eq!(err_code(&v), "capacity_reached", "{v}"),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert_eq!(ok, 2, "alice may own at most 2");
    let owned = tb.list(ROOT, "assignee=alice").await;
    assert_eq!(owned.len(), 2, "{owned:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_reached_and_freed_by_resolve() {
    let tb = TB::start().await;
    let a = tb.open_conv(N1, &customer(), "1").await;
    let b = tb.open_conv(N1, &customer(), "2").await;
    let c = tb.open_conv(N1, &customer(), "3").await;
    tb.must_claim(ALICE, &a).await;
    tb.must_claim(ALICE, &b).await;
    let (s, v) = tb.claim(ALICE, &c).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(err_code(&v), "capacity_reached", "{v}");
    assert!(tb.conversation(&c).await["assignee"].is_null());
    // Resolving one frees a slot.
    assert_eq!(tb.resolve(ALICE, &a).await.0, 200);
    tb.must_claim(ALICE, &c).await;
    // Releasing one frees a slot too.
    let d = tb.open_conv(N1, &customer(), "4").await;
    assert_eq!(tb.claim(ALICE, &d).await.0, 409);
    assert_eq!(tb.release(ALICE, &b).await.0, 200);
    tb.must_claim(ALICE, &d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_of_unknown_conversation_is_404() {
    let tb = TB::start().await;
    let (s, v) = tb.claim(BOB, "no-such-conversation").await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(err_code(&v), "not_found");
    let (s, v) = tb
        .get(BOB, "/api/v1/conversations/no-such-conversation")
        .await;
    assert_eq!(s, 404, "{v}");
    assert_eq!(err_code(&v), "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_cannot_claim_other_teams_conversation() {
    let tb = TB::start().await;
    let sales = tb.open_conv(N2, &customer(), "buy").await;
    let (s, v) = tb.claim(ALICE, &sales).await;
    assert!(
        s == 403 || s == 404,
        "alice (support) claimed a sales conversation: {s} {v}"
    );
    assert!(tb.conversation(&sales).await["assignee"].is_null());
    // dave (sales) can.
    tb.must_claim(DAVE, &sales).await;
}

// ---------------------------------------------------------------------------------------------
// Release
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_returns_to_queue_and_only_owner_may_release() {
    let tb = TB::start().await;
    let id = tb.open_conv(N1, &customer(), "help").await;
    tb.must_claim(ALICE, &id).await;
    let (s, v) = tb.release(BOB, &id).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(err_code(&v), "not_owner");
    assert_eq!(tb.conversation(&id).await["assignee"], json!("alice"));

    let (s, v) = tb.release(ALICE, &id).await;
    assert_eq!(s, 200, "{v}");
    let c = tb.conversation(&id).await;
    assert_eq!(c["status"], json!("queued"));
    assert!(c["assignee"].is_null(), "{c}");
    assert_eq!(c["team"], json!("support"));
    // someone else can take it now
    tb.must_claim(BOB, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_of_unowned_conversation_is_not_owner() {
    let tb = TB::start().await;
    let id = tb.open_conv(N1, &customer(), "help").await;
    let (s, v) = tb.release(BOB, &id).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(err_code(&v), "not_owner");
}

// ---------------------------------------------------------------------------------------------
// Transfer
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_team_queues_it_there() {
    let tb = TB::start().await;
    let id = tb
        .open_conv(N1, &customer(), "actually I want to buy")
        .await;
    tb.must_claim(ALICE, &id).await;
    let (s, v) = tb.transfer(ALICE, &id, json!({"team": "sales"})).await;
    assert_eq!(s, 200, "{v}");
    let c = tb.conversation(&id).await;
    assert_eq!(c["team"], json!("sales"));
    assert_eq!(c["status"], json!("queued"));
    assert!(c["assignee"].is_null(), "{c}");
    // alice no longer sees it, dave does and can claim
    let (s, _) = tb.get(ALICE, &format!("/api/v1/conversations/{id}")).await;
    assert_eq!(s, 404);
    assert!(tb.list(DAVE, "").await.iter().any(|c| c["id"] == json!(id)));
    tb.must_claim(DAVE, &id).await;
    // alice's capacity slot is free again (she owned 1 of 2): she can claim two more.
    let a = tb.open_conv(N1, &customer(), "x").await;
    let b = tb.open_conv(N1, &customer(), "y").await;
    tb.must_claim(ALICE, &a).await;
    tb.must_claim(ALICE, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_agent_assigns_that_agent() {
    let tb = TB::start().await;
    assert_eq!(tb.presence(BOB, "online").await.0, 200);
    let id = tb.open_conv(N1, &customer(), "help").await;
    tb.must_claim(ALICE, &id).await;
    let (s, v) = tb.transfer(ALICE, &id, json!({"agent": "bob"})).await;
    assert_eq!(s, 200, "{v}");
    let c = tb.conversation(&id).await;
    assert_eq!(c["assignee"], json!("bob"));
    assert_eq!(c["status"], json!("assigned"));
    // alice is no longer the owner
    let (s, v) = tb.reply(ALICE, &id, "still me?", "k-alice").await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(err_code(&v), "not_owner");
    // bob is
    tb.must_reply(BOB, &id, "bob here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_by_non_owner_is_forbidden_but_supervisor_and_admin_may() {
    let tb = TB::start().await;
    let id = tb.open_conv(N1, &customer(), "help").await;
    tb.must_claim(ALICE, &id).await;
    let (s, v) = tb.transfer(BOB, &id, json!({"team": "sales"})).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(err_code(&v), "not_owner");
    assert_eq!(tb.conversation(&id).await["assignee"], json!("alice"));

    let (s, v) = tb.transfer(CAROL, &id, json!({"agent": "bob"})).await;
    assert_eq!(s, 200, "supervisor transfer: {v}");
    assert_eq!(tb.conversation(&id).await["assignee"], json!("bob"));

    let (s, v) = tb.transfer(ROOT, &id, json!({"team": "sales"})).await;
    assert_eq!(s, 200, "admin transfer: {v}");
    let c = tb.conversation(&id).await;
    assert_eq!(c["team"], json!("sales"));
    assert!(c["assignee"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_unknown_target_is_404() {
    let tb = TB::start().await;
    let id = tb.open_conv(N1, &customer(), "help").await;
    tb.must_claim(ALICE, &id).await;
    for body in [json!({"team": "no-such-team"}), json!({"agent": "nobody"})] {
        let (s, v) = tb.transfer(ALICE, &id, body.clone()).await;
        assert_eq!(s, 404, "{body}: {v}");
        assert_eq!(err_code(&v), "not_found", "{v}");
    }
    let c = tb.conversation(&id).await;
    assert_eq!(
        c["assignee"],
        json!("alice"),
        "failed transfers change nothing"
    );
    assert_eq!(c["team"], json!("support"));
    // transfer of an unknown conversation
    let (s, v) = tb
        .transfer(ROOT, "no-such-conv", json!({"team": "sales"}))
        .await;
    assert_eq!(s, 404, "{v}");
}

// ---------------------------------------------------------------------------------------------
// Resolve and reopen
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_then_inbound_reopens_the_same_conversation() {
    let tb = TB::start().await;
    let cust = customer();
    let id = tb.open_conv(N1, &cust, "help").await;
    tb.must_claim(ALICE, &id).await;
    let (s, v) = tb.resolve(BOB, &id).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(err_code(&v), "not_owner");

    let (s, v) = tb.resolve(ALICE, &id).await;
    assert_eq!(s, 200, "{v}");
    let c = tb.conversation(&id).await;
    assert_eq!(c["status"], json!("resolved"));
    assert!(c["assignee"].is_null(), "{c}");
    assert_eq!(
        tb.list(ROOT, &format!("customer={cust}&status=resolved"))
            .await
            .len(),
        1
    );

    tb.send_text(N1, &cust, "one more thing").await;
    let convs = tb.list(ROOT, &format!("customer={cust}")).await;
    assert_eq!(convs.len(), 1, "reopen, not a new conversation: {convs:#?}");
    assert_eq!(convs[0]["id"], json!(id));
    let c = tb.conversation(&id).await;
    assert_eq!(c["status"], json!("queued"));
    assert_eq!(c["team"], json!("support"));
    assert!(c["assignee"].is_null());
    let msgs = tb.messages(&id).await;
    assert_eq!(msgs.len(), 2, "history survives reopen: {msgs:#?}");
    assert_eq!(msgs[1]["text"], json!("one more thing"));
    // and it can be claimed again
    tb.must_claim(BOB, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supervisor_and_admin_may_resolve() {
    let tb = TB::start().await;
    let a = tb.open_conv(N1, &customer(), "a").await;
    let b = tb.open_conv(N1, &customer(), "b").await;
    tb.must_claim(ALICE, &a).await;
    tb.must_claim(BOB, &b).await;
    assert_eq!(tb.resolve(CAROL, &a).await.0, 200);
    assert_eq!(tb.resolve(ROOT, &b).await.0, 200);
    assert_eq!(tb.conversation(&a).await["status"], json!("resolved"));
    assert_eq!(tb.conversation(&b).await["status"], json!("resolved"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopen_after_transfer_goes_back_to_number_default_team() {
    // Reopen routes like a first message: default team of the number (no rules configured).
    let tb = TB::start().await;
    let cust = customer();
    let id = tb.open_conv(N1, &cust, "hi").await;
    tb.must_claim(ALICE, &id).await;
    assert_eq!(
        tb.transfer(ALICE, &id, json!({"team": "sales"})).await.0,
        200
    );
    tb.must_claim(DAVE, &id).await;
    assert_eq!(tb.resolve(DAVE, &id).await.0, 200);
    tb.send_text(N1, &cust, "back again").await;
    let c = tb.conversation(&id).await;
    assert_eq!(c["status"], json!("queued"));
    assert!(c["assignee"].is_null());
    assert_eq!(
        c["team"],
        json!("support"),
        "reopen routes to the number's default team: {c}"
    );
}

// ---------------------------------------------------------------------------------------------
// Customer-service window
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_expires_24h_after_last_inbound_timestamp() {
    let tb = TB::start().await;
    let cust = customer();
    let t1 = now() - 3_600;
    tb.send_text_at(N1, &cust, t1, "first").await;
    let c = tb.conv_of(N1, &cust).await.unwrap();
    assert_eq!(
        parse_time(&c["window_expires_at"]).timestamp(),
        t1 + SECS_PER_DAY,
        "{c}"
    );

    let t2 = now() - 60;
    tb.send_text_at(N1, &cust, t2, "second").await;
    let c = tb.conv_of(N1, &cust).await.unwrap();
    assert_eq!(
        parse_time(&c["window_expires_at"]).timestamp(),
        t2 + SECS_PER_DAY,
        "{c}"
    );
    parse_time(&c["last_message_at"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_does_not_move_back_for_a_late_delivered_older_message() {
    let tb = TB::start().await;
    let cust = customer();
    let t2 = now() - 60;
    tb.send_text_at(N1, &cust, t2, "newer").await;
    tb.send_text_at(N1, &cust, t2 - 7_200, "older, delivered late")
        .await;
    let c = tb.conv_of(N1, &cust).await.unwrap();
    assert_eq!(
        parse_time(&c["window_expires_at"]).timestamp(),
        t2 + SECS_PER_DAY,
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_after_window_closed_is_422_and_nothing_is_sent() {
    let tb = TB::start().await;
    let cust = customer();
    tb.send_text_at(N1, &cust, now() - 2 * SECS_PER_DAY, "two days ago")
        .await;
    let id = tb.conv_id(N1, &cust).await;
    tb.must_claim(ALICE, &id).await;
    let (s, v) = tb.reply(ALICE, &id, "sorry for the delay", "late-1").await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(err_code(&v), "window_closed");
    // A note is still fine (it never goes to WhatsApp).
    assert_eq!(
        tb.note(ALICE, &id, "window closed, need a template")
            .await
            .0,
        201
    );

    // Once the customer writes again, replies work and only that one is sent.
    tb.send_text(N1, &cust, "hello again").await;
    let m = tb.must_reply(ALICE, &id, "welcome back").await;
    let sends = tb.graph.wait_sends(1, WAIT).await;
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].body["text"]["body"], json!("welcome back"));
    assert_eq!(sends[0].body["biz_opaque_callback_data"], m["id"]);
    let msgs = tb.messages(&id).await;
    assert!(
        !msgs
            .iter()
            .any(|m| m["text"] == json!("sorry for the delay")),
        "the refused reply must not be stored as a message: {msgs:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_closes_exactly_after_24_hours() {
    let tb = TB::start().await;
    // 23h59m ago: still open.
    let open = customer();
    tb.send_text_at(N1, &open, now() - SECS_PER_DAY + 60, "almost a day ago")
        .await;
    let id = tb.conv_id(N1, &open).await;
    tb.must_claim(BOB, &id).await;
    tb.must_reply(BOB, &id, "just in time").await;
    // 24h01m ago: closed.
    let closed = customer();
    tb.send_text_at(
        N1,
        &closed,
        now() - SECS_PER_DAY - 60,
        "a bit more than a day ago",
    )
    .await;
    let id = tb.conv_id(N1, &closed).await;
    tb.must_claim(BOB, &id).await;
    let (s, v) = tb.reply(BOB, &id, "too late", "late-2").await;
    assert_eq!(s, 422, "{v}");
    assert_eq!(err_code(&v), "window_closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_to_an_agent_at_capacity_does_not_exceed_max_concurrent() {
    let tb = TB::start().await;
    let a = tb.open_conv(N1, &customer(), "a").await;
    let b = tb.open_conv(N1, &customer(), "b").await;
    let c = tb.open_conv(N1, &customer(), "c").await;
    tb.must_claim(ALICE, &a).await;
    tb.must_claim(ALICE, &b).await; // alice: 2 of 2
    tb.must_claim(BOB, &c).await;
    let (s, v) = tb.transfer(BOB, &c, json!({"agent": "alice"})).await;
    assert_ne!(s, 200, "alice (max_concurrent 2) would own 3: {v}");
    assert_eq!(s, 409, "{v}");
    assert_eq!(err_code(&v), "capacity_reached", "{v}");
    assert_eq!(tb.list(ROOT, "assignee=alice").await.len(), 2);
    assert_eq!(
        tb.conversation(&c).await["assignee"],
        json!("bob"),
        "a refused transfer changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn former_owner_cannot_reply_after_resolve_or_release() {
    let tb = TB::start().await;
    let cust = customer();
    let id = tb.open_conv(N1, &cust, "hi").await;
    tb.must_claim(ALICE, &id).await;
    assert_eq!(tb.resolve(ALICE, &id).await.0, 200);
    let (s, v) = tb.reply(ALICE, &id, "after resolve", "ar-1").await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(err_code(&v), "not_owner");
    tb.send_text(N1, &cust, "reopen").await;
    tb.must_claim(ALICE, &id).await;
    assert_eq!(tb.release(ALICE, &id).await.0, 200);
    let (s, v) = tb.reply(ALICE, &id, "after release", "ar-2").await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(err_code(&v), "not_owner");
    assert_eq!(tb.graph.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_cannot_transfer_or_resolve_an_unowned_queued_conversation() {
    let tb = TB::start().await;
    let id = tb.open_conv(N1, &customer(), "queued").await;
    let (s, v) = tb.transfer(ALICE, &id, json!({"team": "sales"})).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(err_code(&v), "not_owner");
    let (s, v) = tb.resolve(ALICE, &id).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(err_code(&v), "not_owner");
    let c = tb.conversation(&id).await;
    assert_eq!(c["status"], json!("queued"));
    assert_eq!(c["team"], json!("support"));
}
