//! Replies, notes, idempotency and the Graph API outbox (retries, failures, restart).

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// The text of each send, in the order the fake Graph API received them.
fn texts(sends: &[GraphRequest]) -> Vec<&str> {
    sends
        .iter()
        .map(|s| s.body["text"]["body"].as_str().unwrap())
        .collect()
}

/// The conversation's outbound messages (replies and automatic texts), oldest first.
async fn outbound_of(tb: &TB, conv: &str) -> Vec<Value> {
    tb.messages(conv)
        .await
        .into_iter()
        .filter(|m| m["direction"] == json!("outbound"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_is_202_pending_then_sent_to_graph_and_accepted() {
    let tb = TB::start().await;
    let (id, cust) = claimed(&tb, N1, ALICE).await;
    // Slow Graph answer, so the 202 is certainly given before acceptance.
    tb.graph
        .push(GraphReply::Delay(300, Box::new(GraphReply::Ok)));
    let (s, m) = tb.reply(ALICE, &id, "Yes, it comes in blue.", "k1").await;
    assert_eq!(s, 202, "{m}");
    assert_eq!(m["direction"], json!("outbound"));
    assert_eq!(m["type"], json!("text"));
    assert_eq!(m["text"], json!("Yes, it comes in blue."));
    assert_eq!(m["author"], json!("alice"));
    assert_eq!(
        m["status"],
        json!("pending"),
        "not yet accepted by Graph: {m}"
    );
    assert!(m["wamid"].is_null(), "{m}");
    parse_time(&m["at"]);
    let msg_id = m["id"].as_str().expect("message id").to_owned();

    let sends = tb.graph.wait_sends(1, WAIT).await;
    let req = &sends[0];
    assert_eq!(req.path, format!("/{GRAPH_VERSION}/{N1}/messages"));
    assert_eq!(req.auth.as_deref(), Some("Bearer test-access"));
    assert_eq!(req.body["messaging_product"], json!("whatsapp"));
    assert_eq!(req.body["recipient_type"], json!("individual"));
    assert_eq!(req.body["to"], json!(cust));
    assert_eq!(req.body["type"], json!("text"));
    assert_eq!(req.body["text"]["body"], json!("Yes, it comes in blue."));
    assert_eq!(req.body["biz_opaque_callback_data"], json!(msg_id));

    let m = tb.wait_status(&id, &msg_id, "accepted").await;
    assert_eq!(m["wamid"], json!("wamid.OUT1"));
    assert!(m.get("error").is_none_or(Value::is_null), "{m}");
    // the message is in the conversation after the inbound one
    let msgs = tb.messages(&id).await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["direction"], json!("inbound"));
    assert_eq!(msgs[1]["id"], json!(msg_id));
    assert!(
        tb.graph.unexpected().is_empty(),
        "{:?}",
        tb.graph.unexpected()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_without_a_message_id_is_held_then_sent_again_not_left_without_a_wamid() {
    let tb = TB::start_with(|c| c.outbox_extra = "ambiguous_hold_ms = 300".into()).await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    tb.graph.push(GraphReply::Status(200)); // 200, but no messages[0].id in the body
    let first = tb.must_reply(ALICE, &id, "taken without an id?").await;
    let m = tb
        .wait_status(&id, first["id"].as_str().unwrap(), "accepted")
        .await;
    // No status callback named it within the hold: sent again, and this time answered.
    assert_eq!(m["wamid"], json!("wamid.OUT1"), "{m}");
    let sends = tb.graph.sends();
    assert_eq!(sends.len(), 2, "{sends:?}");
    assert!(sends[1].at - sends[0].at >= Duration::from_millis(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_from_a_number_missing_from_the_config_is_refused_not_left_pending() {
    // A webhook for a number missing from the config opens no conversation (see
    // `coexistence`); a conversation of a number the config has since dropped is one.
    let mut tb = TB::start_with(|c| {
        c.extra =
            "\n[[numbers]]\nphone_number_id = \"999000111\"\ndefault_team = \"support\"\n".into();
    })
    .await;
    let cust = customer();
    let id = tb.open_conv("999000111", &cust, "hello?").await;
    tb.cfg.extra = String::new();
    tb.restart().await;
    tb.must_claim(ALICE, &id).await;
    let (s, body) = tb.reply(ALICE, &id, "hi", "unknown-number").await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(err_code(&body), "invalid_request");
    assert!(body.to_string().contains("999000111"), "{body}");
    let outbound = outbound_of(&tb, &id).await.len();
    assert_eq!(outbound, 0, "nothing accepted, nothing pending");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_on_second_number_uses_its_phone_number_id() {
    let tb = TB::start().await;
    let (id, cust) = claimed(&tb, N2, DAVE).await;
    let m = tb.must_reply(DAVE, &id, "sales here").await;
    let sends = tb.graph.wait_sends(1, WAIT).await;
    assert_eq!(sends[0].path, format!("/{GRAPH_VERSION}/{N2}/messages"));
    assert_eq!(sends[0].phone_number_id, N2);
    assert_eq!(sends[0].body["to"], json!(cust));
    tb.wait_status(&id, m["id"].as_str().unwrap(), "accepted")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_reply_text_reaches_graph_intact() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    tb.must_reply(ALICE, &id, "Grüße 😀 — ¿qué tal? 你好").await;
    let sends = tb.graph.wait_sends(1, WAIT).await;
    assert_eq!(
        sends[0].body["text"]["body"],
        json!("Grüße 😀 — ¿qué tal? 你好")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_of_one_conversation_are_sent_in_order() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, BOB).await;
    for i in 0..5 {
        tb.must_reply(BOB, &id, &format!("part {i}")).await;
    }
    let sends = tb.graph.wait_sends(5, WAIT).await;
    let got = texts(&sends);
    assert_eq!(got, vec!["part 0", "part 1", "part 2", "part 3", "part 4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_reply_is_not_overtaken_by_the_next_one() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, BOB).await;
    // The first two sends are throttled: "first" is retried twice; "second", accepted a moment
    // later, must wait for it instead of reaching Meta ahead of it.
    tb.graph.push(GraphReply::RateLimit);
    tb.graph.push(GraphReply::RateLimit);
    let first = tb.must_reply(BOB, &id, "first").await;
    let second = tb.must_reply(BOB, &id, "second").await;
    let sends = tb.graph.wait_sends(4, WAIT).await;
    let got = texts(&sends);
    assert_eq!(got, vec!["first", "first", "first", "second"]);
    tb.wait_status(&id, first["id"].as_str().unwrap(), "accepted")
        .await;
    tb.wait_status(&id, second["id"].as_str().unwrap(), "accepted")
        .await;
}

/// The texts sent for conversation `id`'s messages, in the order the fake Graph API got them.
fn texts_of<'a>(sends: &'a [GraphRequest], ids: &[String]) -> Vec<&'a str> {
    sends
        .iter()
        .filter(|s| {
            s.body["biz_opaque_callback_data"]
                .as_str()
                .is_some_and(|m| ids.iter().any(|i| i == m))
        })
        .map(|s| s.body["text"]["body"].as_str().unwrap())
        .collect()
}

/// Waits until every reply of each conversation (its message ids, in the order they were made,
/// with texts `part 0`, `part 1`, …) is accepted, then checks that the Graph API got each exactly
/// once and each conversation's in order.
async fn all_accepted_once_in_order(tb: &TB, convs: [(&String, &Vec<String>); 2]) {
    for (conv, ids) in convs {
        for id in ids {
            tb.wait_status(conv, id, "accepted").await;
        }
    }
    let sends = tb.graph.sends();
    let total: usize = convs.iter().map(|(_, ids)| ids.len()).sum();
    assert_eq!(sends.len(), total, "each reply sent once: {sends:?}");
    for (_, ids) in convs {
        let parts: Vec<String> = (0..ids.len()).map(|i| format!("part {i}")).collect();
        assert_eq!(texts_of(&sends, ids), parts);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbox_queue_keeps_replies_on_disk_and_sends_them_in_order() {
    // One send in flight and one queued per number; the first send is slow. While it is in
    // flight, the second reply waits behind it, the third fills the queue and the fourth finds
    // it full. The conversation's actor must not wait for room: its own send in flight needs it
    // to record the outcome. The replies stay on disk and go out from there, in order, once each.
    let tb = TB::start_with(|c| {
        c.outbox_extra = "max_in_flight = 1\nqueue_capacity = 1".into();
    })
    .await;
    let (a, _) = claimed(&tb, N1, BOB).await;
    let (b, _) = claimed(&tb, N1, BOB).await;
    tb.graph
        .push(GraphReply::Delay(300, Box::new(GraphReply::Ok)));
    let (mut ids_a, mut ids_b) = (Vec::new(), Vec::new());
    for (conv, ids) in [(&a, &mut ids_a), (&b, &mut ids_b)] {
        for i in 0..6 {
            let m = tokio::time::timeout(WAIT, tb.must_reply(BOB, conv, &format!("part {i}")))
                .await
                .expect("a reply waited for room in the outbox");
            ids.push(m["id"].as_str().unwrap().to_owned());
        }
    }
    all_accepted_once_in_order(&tb, [(&a, &ids_a), (&b, &ids_b)]).await;
    let spilled = metric_sum(&tb.metrics().await, "switchboard_outbox_spilled_total", &[]);
    assert!(spilled.unwrap_or(0.0) >= 1.0, "spilled: {spilled:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_pending_sends_than_one_page_resume_after_restart_in_order() {
    let mut tb = TB::start_with(|c| {
        c.max_attempts = 1_000_000;
        c.retry_max_ms = 50;
        // The shutdown cuts the sends retrying at the time: each may have had a request out,
        // so after the restart it is held this long for a status callback first.
        c.outbox_extra = "queue_capacity = 2\nambiguous_hold_ms = 200".into();
    })
    .await;
    tb.graph.set_default(GraphReply::Status(500));
    let (a, _) = claimed(&tb, N1, ALICE).await;
    let (b, _) = claimed(&tb, N1, ALICE).await;
    let (mut ids_a, mut ids_b) = (Vec::new(), Vec::new());
    for i in 0..5 {
        for (conv, ids) in [(&a, &mut ids_a), (&b, &mut ids_b)] {
            let m = tb.must_reply(ALICE, conv, &format!("part {i}")).await;
            ids.push(m["id"].as_str().unwrap().to_owned());
        }
    }
    tb.graph.wait_sends(4, WAIT).await; // failing and retried
    let good = FakeGraph::start_with_prefix("wamid.AFTER").await;
    tb.restart_with_graph(good).await;
    all_accepted_once_in_order(&tb, [(&a, &ids_a), (&b, &ids_b)]).await;
    tb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_reply_waits_until_the_previous_outcome_is_recorded() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, BOB).await;
    tb.graph
        .push(GraphReply::Delay(1000, Box::new(GraphReply::Ok)));
    let first = tb.must_reply(BOB, &id, "first").await;
    let second = tb.must_reply(BOB, &id, "second").await;
    // "first" is at the Graph API; storage fails before its answer can be recorded.
    tb.graph.wait_sends(1, WAIT).await;
    let store = tb.broker.as_ref().unwrap().ctx().store.clone();
    store.inject_write_failure(true);
    eventually("recording first's outcome to fail", WAIT, || async {
        if store.is_failing() {
            Ok(())
        } else {
            Err("not yet".to_owned())
        }
    })
    .await;
    // "second" must not overtake it (an absence, so a bounded wait: recording is retried every
    // 10–100 ms here).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(texts(&tb.graph.sends()), vec!["first"]);

    store.inject_write_failure(false);
    tb.wait_status(&id, first["id"].as_str().unwrap(), "accepted")
        .await;
    tb.wait_status(&id, second["id"].as_str().unwrap(), "accepted")
        .await;
    assert_eq!(texts(&tb.graph.sends()), vec!["first", "second"]);
}

// ---------------------------------------------------------------------------------------------
// Owner-only, validation
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_can_reply() {
    let tb = TB::start().await;
    let cust = customer();
    let id = tb.open_conv(N1, &cust, "hello").await;
    // nobody owns it yet
    let (s, v) = tb.reply(BOB, &id, "unclaimed", "u1").await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(err_code(&v), "not_owner");
    tb.must_claim(ALICE, &id).await;
    for (who, tok) in [
        ("bob", BOB),
        ("carol (supervisor)", CAROL),
        ("root (admin)", ROOT),
    ] {
        let (s, v) = tb
            .reply(tok, &id, &format!("from {who}"), &uniq("nk"))
            .await;
        assert_eq!(s, 403, "{who}: {v}");
        assert_eq!(err_code(&v), "not_owner", "{who}: {v}");
    }
    // alice can; and only alice's reply reaches Graph
    let m = tb.must_reply(ALICE, &id, "from alice").await;
    let sends = tb.graph.wait_sends(1, WAIT).await;
    assert_eq!(sends.len(), 1, "{sends:?}");
    assert_eq!(sends[0].body["biz_opaque_callback_data"], m["id"]);
    let msgs = tb.messages(&id).await;
    assert_eq!(msgs.len(), 2, "refused replies are not stored: {msgs:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_without_text_is_invalid_request() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    let path = format!("/api/v1/conversations/{id}/messages");
    for body in [
        json!({"idempotency_key": "x1"}),
        json!({"text": 42, "idempotency_key": "x2"}),
    ] {
        let (s, v) = tb.post(ALICE, &path, body.clone()).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert_eq!(err_code(&v), "invalid_request", "{body}: {v}");
    }
    // malformed JSON in the agent API is a 400 too
    let resp = tb
        .http
        .post(tb.url(&path))
        .bearer_auth(ALICE)
        .header("content-type", "application/json")
        .body("{\"text\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(tb.messages(&id).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_with_empty_text_is_invalid_request() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    let (s, v) = tb.reply(ALICE, &id, "", "empty-1").await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(err_code(&v), "invalid_request", "{v}");
}

// ---------------------------------------------------------------------------------------------
// Idempotency
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_idempotency_key_returns_same_message_and_sends_once() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    let (s1, m1) = tb.reply(ALICE, &id, "exactly once", "idem-1").await;
    assert_eq!(s1, 202, "{m1}");
    let (s2, m2) = tb.reply(ALICE, &id, "exactly once", "idem-1").await;
    assert_eq!(s2, 202, "{m2}");
    assert_eq!(m1["id"], m2["id"]);
    // concurrent retries of the same key
    let mut handles = Vec::new();
    for _ in 0..6 {
        let api = tb.api.clone();
        let id = id.clone();
        handles.push(tokio::spawn(async move {
            api.reply(ALICE, &id, "exactly once", "idem-1").await
        }));
    }
    for h in handles {
        let (s, m) = h.await.unwrap();
        assert_eq!(s, 202, "{m}");
        assert_eq!(m["id"], m1["id"]);
    }
    // also after it was accepted
    tb.wait_status(&id, m1["id"].as_str().unwrap(), "accepted")
        .await;
    let (s3, m3) = tb.reply(ALICE, &id, "exactly once", "idem-1").await;
    assert_eq!(s3, 202);
    assert_eq!(m3["id"], m1["id"]);

    // A different key is a different message; once it is sent, the first key was sent once.
    let (_, other) = tb.reply(ALICE, &id, "second", "idem-2").await;
    assert_ne!(other["id"], m1["id"]);
    let sends = tb.graph.wait_sends(2, WAIT).await;
    tb.wait_status(&id, other["id"].as_str().unwrap(), "accepted")
        .await;
    let sends_now = tb.graph.sends();
    assert_eq!(sends_now.len(), 2, "{sends:?}");
    assert_eq!(tb.graph.sends_for(m1["id"].as_str().unwrap()).len(), 1);
    let outbound = outbound_of(&tb, &id).await;
    assert_eq!(outbound.len(), 2, "{outbound:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_per_conversation_or_at_least_do_not_leak_messages() {
    // Reusing a key in another conversation must never return (or resend) a message of the
    // first conversation.
    let tb = TB::start().await;
    let (a, _) = claimed(&tb, N1, BOB).await;
    let (b, _) = claimed(&tb, N1, BOB).await;
    let (_, ma) = tb.reply(BOB, &a, "to a", "shared-key").await;
    let (s, mb) = tb.reply(BOB, &b, "to b", "shared-key").await;
    if s == 202 {
        assert!(
            tb.messages(&b).await.iter().any(|m| m["id"] == mb["id"]),
            "202 for conversation b returned a message that is not in b: {mb}"
        );
    }
    assert!(!tb.messages(&b).await.iter().any(|m| m["id"] == ma["id"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_callers_idempotency_key_returns_nothing_of_the_message() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    let (s, m) = tb.reply(ALICE, &id, "private answer", "alice-key").await;
    assert_eq!(s, 202, "{m}");
    // Not the owner: 403, as without a key, and no trace of alice's message.
    let (s, body) = tb.reply(BOB, &id, "anything", "alice-key").await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(err_code(&body), "not_owner");
    assert!(!body.to_string().contains("private answer"), "{body}");
    // The new owner may not take over alice's key either; alice's own retry still answers.
    let (s, _) = tb.transfer(ROOT, &id, json!({"agent": "bob"})).await;
    assert_eq!(s, 200);
    let (s, body) = tb.reply(BOB, &id, "anything", "alice-key").await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(err_code(&body), "invalid_request");
    assert!(!body.to_string().contains("private answer"), "{body}");
    let (s, again) = tb.reply(ALICE, &id, "private answer", "alice-key").await;
    assert_eq!(s, 202, "{again}");
    assert_eq!(again["id"], m["id"]);
    let outbound = outbound_of(&tb, &id).await.len();
    assert_eq!(outbound, 1);
}

// ---------------------------------------------------------------------------------------------
// Notes
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notes_are_stored_but_never_sent() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    let (s, n) = tb.note(ALICE, &id, "customer sounds upset").await;
    assert_eq!(s, 201, "{n}");
    assert_eq!(n["direction"], json!("note"));
    assert_eq!(n["text"], json!("customer sounds upset"));
    assert_eq!(n["author"], json!("alice"));
    assert!(n["wamid"].is_null());
    let r = tb.must_reply(ALICE, &id, "the actual reply").await;
    let sends = tb.graph.wait_sends(1, WAIT).await;
    tb.wait_status(&id, r["id"].as_str().unwrap(), "accepted")
        .await;
    let sends_now = tb.graph.sends();
    assert_eq!(sends_now.len(), 1, "{sends:?}");
    assert_eq!(sends_now[0].body["text"]["body"], json!("the actual reply"));
    let msgs = tb.messages(&id).await;
    let dirs: Vec<&str> = msgs
        .iter()
        .map(|m| m["direction"].as_str().unwrap())
        .collect();
    assert_eq!(dirs, vec!["inbound", "note", "outbound"]);
    assert_eq!(msgs[1]["id"], n["id"]);
    assert!(
        msgs[1]["wamid"].is_null(),
        "a note never gets a wamid: {}",
        msgs[1]
    );
}

// ---------------------------------------------------------------------------------------------
// Graph errors
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_until_accepted() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    tb.graph.push(GraphReply::RateLimit);
    tb.graph.push(GraphReply::RateLimit);
    let m = tb.must_reply(ALICE, &id, "patience").await;
    let msg_id = m["id"].as_str().unwrap().to_owned();
    let sends = tb.graph.wait_sends(3, WAIT).await;
    let m = tb.wait_status(&id, &msg_id, "accepted").await;
    assert_eq!(m["wamid"], json!("wamid.OUT1"));
    assert!(m.get("error").is_none_or(Value::is_null), "{m}");
    assert_eq!(sends.len(), 3);
    for s in &sends {
        assert_eq!(
            s.body["biz_opaque_callback_data"],
            json!(msg_id),
            "retries resend the same message"
        );
        assert_eq!(s.body["text"]["body"], json!("patience"));
    }
    let outbound = outbound_of(&tb, &id).await.len();
    assert_eq!(outbound, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_and_5xx_are_retried() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    tb.graph.push(GraphReply::meta(400, 131056, "(#131056) (Business Account, Consumer Account) pair rate limit hit", "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time."));
    tb.graph.push(GraphReply::meta(
        500,
        131000,
        "(#131000) Something went wrong",
        "Message failed to send due to an unknown error.",
    ));
    tb.graph.push(GraphReply::meta(
        503,
        131016,
        "(#131016) Service unavailable",
        "A service is temporarily unavailable.",
    ));
    tb.graph.push(GraphReply::Status(500));
    let m = tb.must_reply(ALICE, &id, "eventually").await;
    let msg_id = m["id"].as_str().unwrap();
    let sends = tb.graph.wait_sends(5, WAIT).await;
    assert_eq!(sends.len(), 5);
    let m = tb.wait_status(&id, msg_id, "accepted").await;
    assert_eq!(m["wamid"], json!("wamid.OUT1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_engagement_error_131047_fails_the_message_as_window_closed() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    tb.graph.push(GraphReply::meta(
        400,
        131047,
        "(#131047) Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
    ));
    let m = tb.must_reply(ALICE, &id, "too late?").await;
    let msg_id = m["id"].as_str().unwrap();
    let m = tb.wait_status(&id, msg_id, "failed").await;
    assert_eq!(m["error"]["code"], json!(131047), "{m}");
    assert_eq!(m["error"]["reason"], json!("window_closed"), "{m}");
    assert_eq!(
        m["error"]["title"],
        json!("(#131047) Re-engagement message"),
        "Meta's title, verbatim: {m}"
    );
    assert_eq!(tb.graph.count(), 1, "131047 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_graph_errors_fail_with_metas_code_and_title() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    // A code without a known meaning (the final ones with a `reason`: outbound_rich.rs).
    tb.graph.push(GraphReply::meta(
        400,
        131009,
        "(#131009) Parameter value is not valid",
        "Parameter value is not valid.",
    ));
    let m = tb.must_reply(ALICE, &id, "hello?").await;
    let msg_id = m["id"].as_str().unwrap();
    let m = tb.wait_status(&id, msg_id, "failed").await;
    assert_eq!(m["error"]["code"], json!(131009), "{m}");
    assert!(m["error"].get("reason").is_none(), "{m}");
    let title = m["error"]["title"].as_str().unwrap_or("").to_lowercase();
    assert!(
        title.contains("parameter value"),
        "Meta's title/message kept: {m}"
    );
    assert!(m["wamid"].is_null());
    assert_eq!(tb.graph.count(), 1, "a permanent error is not retried");

    // A failed message does not block the next one.
    let m2 = tb.must_reply(ALICE, &id, "second try").await;
    tb.wait_status(&id, m2["id"].as_str().unwrap(), "accepted")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_parameter_error_fails_with_code_100() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    tb.graph.push(GraphReply::meta(
        400,
        100,
        "(#100) Invalid parameter",
        "Parameter value is not valid",
    ));
    let m = tb.must_reply(ALICE, &id, "x").await;
    let m = tb
        .wait_status(&id, m["id"].as_str().unwrap(), "failed")
        .await;
    assert_eq!(m["error"]["code"], json!(100), "{m}");
    assert!(
        m["error"]["title"].as_str().is_some_and(|t| !t.is_empty()),
        "{m}"
    );
    assert_eq!(tb.graph.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_retries_end_in_failed_not_stuck_pending() {
    let tb = TB::start().await; // max_attempts = 5
    tb.graph.set_default(GraphReply::Status(500));
    let (id, _) = claimed(&tb, N1, ALICE).await;
    let m = tb.must_reply(ALICE, &id, "doomed").await;
    let m = tb
        .wait_status(&id, m["id"].as_str().unwrap(), "failed")
        .await;
    let n = tb.graph.count();
    assert!(
        (2..=5).contains(&n),
        "max_attempts = 5 but Graph saw {n} attempts"
    );
    assert!(m["error"].is_object(), "{m}");
}

// ---------------------------------------------------------------------------------------------
// Durability of the outbox across restarts (library)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_send_resumes_after_restart() {
    let mut tb = TB::start_with(|c| {
        c.max_attempts = 1_000_000;
        c.retry_max_ms = 50;
    })
    .await;
    tb.graph.set_default(GraphReply::Status(500));
    let (id, cust) = claimed(&tb, N1, ALICE).await;
    let m = tb.must_reply(ALICE, &id, "survive the restart").await;
    let msg_id = m["id"].as_str().unwrap().to_owned();
    tb.graph.wait_sends(2, WAIT).await; // attempted and failing
    assert_eq!(
        tb.message(&id, &msg_id).await.unwrap()["status"],
        json!("pending")
    );

    let good = FakeGraph::start_with_prefix("wamid.AFTER").await;
    tb.restart_with_graph(good).await;
    let sends = tb.graph.wait_sends(1, WAIT).await;
    assert_eq!(sends[0].body["biz_opaque_callback_data"], json!(msg_id));
    assert_eq!(sends[0].body["to"], json!(cust));
    let m = tb.wait_status(&id, &msg_id, "accepted").await;
    assert_eq!(m["wamid"], json!("wamid.AFTER1"));
    // ownership survived the restart too
    assert_eq!(tb.conversation(&id).await["assignee"], json!("alice"));
    tb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_survives_restart() {
    let mut tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    let (s, m1) = tb.reply(ALICE, &id, "once", "restart-key").await;
    assert_eq!(s, 202);
    tb.wait_status(&id, m1["id"].as_str().unwrap(), "accepted")
        .await;
    let sent_before = tb.graph.count();
    assert_eq!(sent_before, 1);
    let g2 = FakeGraph::start_with_prefix("wamid.G2-").await;
    tb.restart_with_graph(g2).await;
    let (s, m2) = tb.reply(ALICE, &id, "once", "restart-key").await;
    assert_eq!(s, 202, "{m2}");
    assert_eq!(m2["id"], m1["id"]);
    // prove nothing was sent by sending a different one and seeing only it
    let m3 = tb.must_reply(ALICE, &id, "new").await;
    let sends = tb.graph.wait_sends(1, WAIT).await;
    tb.wait_status(&id, m3["id"].as_str().unwrap(), "accepted")
        .await;
    assert_eq!(tb.graph.count(), 1, "{sends:?}");
    assert_eq!(
        tb.graph.sends()[0].body["biz_opaque_callback_data"],
        m3["id"]
    );
    tb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_graph_does_not_delay_the_202() {
    let tb = TB::start().await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    tb.graph.push(GraphReply::Hang);
    let start = std::time::Instant::now();
    let (s, _) = tb.reply(ALICE, &id, "fire and forget", "hang-1").await;
    assert_eq!(s, 202);
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "202 waited for Graph: {:?}",
        start.elapsed()
    );
}

// ---------------------------------------------------------------------------------------------
// Connection failures and per-number throughput
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failures_are_retried() {
    // Graph is unreachable (connection refused) when the reply is made, and comes back later
    // on the same address.
    let graph = FakeGraph::start().await;
    let addr = graph.addr;
    let mut tb = TB::start_with(|c| {
        c.graph_base = graph.base.clone();
        c.max_attempts = 1_000;
        c.retry_max_ms = 50;
    })
    .await;
    drop(graph);
    tb.graph = FakeGraph::start_with_prefix("wamid.UNUSED").await; // keep TB's field valid
                                                                   // make sure the old port really refuses connections
    eventually("old graph port to refuse", WAIT, move || async move {
        match tokio::net::TcpStream::connect(addr).await {
            Err(_) => Ok(()),
            Ok(_) => Err("still accepting".to_string()),
        }
    })
    .await;
    let (id, _) = claimed(&tb, N1, ALICE).await;
    let m = tb.must_reply(ALICE, &id, "through the outage").await;
    let msg_id = m["id"].as_str().unwrap().to_owned();
    // no observable attempt while refused; give the outbox a few retry rounds
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        tb.message(&id, &msg_id).await.unwrap()["status"],
        json!("pending")
    );
    let back = FakeGraph::start_on(addr, "wamid.BACK").await;
    let sends = back.wait_sends(1, WAIT).await;
    assert_eq!(sends[0].body["biz_opaque_callback_data"], json!(msg_id));
    let m = tb.wait_status(&id, &msg_id, "accepted").await;
    assert_eq!(m["wamid"], json!("wamid.BACK1"));
    tb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn number_mps_limits_outbound_rate() {
    const N3: &str = "306540352242944";
    let tb = TB::start_with(|c| {
        c.extra = format!(
            "\n[[numbers]]\nphone_number_id = \"{N3}\"\ndisplay_phone_number = \"15550783883\"\ndefault_team = \"support\"\nmps = 5\n"
        )
    })
    .await;
    // 3 conversations × 5 replies = 15 messages on a 5 mps number
    let mut convs = Vec::new();
    for _ in 0..3 {
        let cust = customer();
        let id = tb.open_conv(N3, &cust, "slow lane").await;
        tb.must_claim(BOB, &id).await;
        convs.push(id);
    }
    for i in 0..5 {
        for id in &convs {
            tb.must_reply(BOB, id, &format!("msg {i}")).await;
        }
    }
    let sends = tb.graph.wait_sends(15, Duration::from_secs(15)).await;
    assert!(sends.iter().all(|s| s.phone_number_id == N3));
    let span = sends[14].at.duration_since(sends[0].at);
    // One send every 200 ms after a burst of two: not a second's worth at the start.
    assert!(
        span >= Duration::from_millis(2_500),
        "15 sends at 5 mps took only {span:?}"
    );
    // No sliding 1 s window holds more than the mps and the burst of two.
    for (i, s) in sends.iter().enumerate() {
        let in_window = sends[i..]
            .iter()
            .filter(|o| o.at.duration_since(s.at) < Duration::from_secs(1))
            .count();
        assert!(in_window <= 7, "{in_window} sends within 1 s at mps 5");
    }
}
