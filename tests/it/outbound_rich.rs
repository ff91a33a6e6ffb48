//! Rich outbound sends (issue 19 items 4 and 5): quoting replies, reactions, interactive
//! messages, read receipts with the typing indicator, and Meta's final errors, each against the
//! fake Graph API and across a restart.

use crate::common::*;
use serde_json::{json, Value};

fn path(conv: &str, rest: &str) -> String {
    format!("/api/v1/conversations/{conv}{rest}")
}

/// The conversation's first message (the customer's "hello"): (our id, its wamid).
async fn first_inbound(tb: &TB, conv: &str) -> (String, String) {
    let m = &tb.messages(conv).await[0];
    assert_eq!(m["direction"], json!("inbound"), "{m}");
    (
        m["id"].as_str().unwrap().to_owned(),
        m["wamid"].as_str().unwrap().to_owned(),
    )
}

async fn react(tb: &TB, token: &str, conv: &str, msg: &str, emoji: &str) -> (u16, Value) {
    tb.post(
        token,
        &path(conv, &format!("/messages/{msg}/reaction")),
        json!({ "emoji": emoji }),
    )
    .await
}

fn buttons(n: usize) -> Value {
    let bs: Vec<Value> = (0..n)
        .map(|i| json!({"type": "reply", "reply": {"id": format!("opt-{i}"), "title": format!("Option {i}")}}))
        .collect();
    json!({"type": "button", "body": {"text": "Which size?"}, "footer": {"text": "Tap one"},
           "action": {"buttons": bs}})
}

fn list(rows: usize) -> Value {
    let rs: Vec<Value> = (0..rows)
        .map(|i| json!({"id": format!("row-{i}"), "title": format!("Slot {i}"), "description": "1 hour"}))
        .collect();
    json!({"type": "list", "header": {"type": "text", "text": "Appointments"},
           "body": {"text": "Pick a time"},
           "action": {"button": "Show times", "sections": [{"title": "Monday", "rows": rs}]}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quoting_reply_reaches_meta_with_the_quoted_wamid_and_shows_reply_to() {
    let mut tb = TB::start().await;
    let (conv, _) = claimed(&tb, N1, ALICE).await;
    let (first, first_wamid) = first_inbound(&tb, &conv).await;

    let (s, m) = tb
        .post(
            ALICE,
            &path(&conv, "/messages"),
            json!({"text": "Yes, that one.", "reply_to": first, "idempotency_key": "q1"}),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    assert_eq!(m["reply_to"], json!(first));
    let quoting = m["id"].as_str().unwrap().to_owned();
    let sends = tb.graph.wait_sends(1, WAIT).await;
    assert_eq!(sends[0].body["type"], json!("text"));
    assert_eq!(sends[0].body["text"]["body"], json!("Yes, that one."));
    assert_eq!(sends[0].body["context"], json!({"message_id": first_wamid}));
    let sent = tb.wait_status(&conv, &quoting, "accepted").await;

    // The same key again: the same message, nothing sent again.
    let (s, again) = tb
        .post(
            ALICE,
            &path(&conv, "/messages"),
            json!({"text": "Yes, that one.", "reply_to": first, "idempotency_key": "q1"}),
        )
        .await;
    assert_eq!((s, &again["id"]), (202, &json!(quoting)), "{again}");

    // Quoting our own accepted reply uses its wamid.
    let (s, m) = tb
        .post(
            ALICE,
            &path(&conv, "/messages"),
            json!({"text": "As I said:", "reply_to": quoting, "idempotency_key": "q2"}),
        )
        .await;
    assert_eq!(s, 202, "{m}");
    let sends = tb.graph.wait_sends(2, WAIT).await;
    assert_eq!(sends[1].body["context"]["message_id"], sent["wamid"]);
    tb.wait_status(&conv, m["id"].as_str().unwrap(), "accepted")
        .await;
    assert_eq!(tb.graph.count(), 2, "the replayed key sent nothing");

    // However the id is spelled, the message shows it as the API names it.
    let (s, m) = tb
        .post(
            ALICE,
            &path(&conv, "/messages"),
            json!({"text": "again", "reply_to": format!("{conv}-000"), "idempotency_key": "q3"}),
        )
        .await;
    assert_eq!((s, &m["reply_to"]), (202, &json!(first)), "{m}");
    let sends = tb.graph.wait_sends(3, WAIT).await;
    assert_eq!(sends[2].body["context"]["message_id"], json!(first_wamid));

    tb.restart().await;
    let shown = tb.message(&conv, &quoting).await.expect("still there");
    assert_eq!(shown["reply_to"], json!(first), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quote_of_what_meta_never_saw_is_refused_before_any_send() {
    let tb = TB::start().await;
    let (conv, _) = claimed(&tb, N1, ALICE).await;
    let (other, _) = claimed(&tb, N1, BOB).await;
    let (other_first, _) = first_inbound(&tb, &other).await;
    let (s, note) = tb.note(ALICE, &conv, "internal").await;
    assert_eq!(s, 201, "{note}");
    // A reply still pending has no wamid yet (Meta's answer is held back).
    tb.graph.push(GraphReply::Hang);
    let pending = tb.must_reply(ALICE, &conv, "on its way").await;
    tb.graph.wait_sends(1, WAIT).await;
    for (target, why) in [
        (format!("{conv}-99"), "no such message"),
        (other_first, "another conversation's message"),
        ("nonsense".to_owned(), "not a message id"),
        (note["id"].as_str().unwrap().to_owned(), "a note"),
        (pending["id"].as_str().unwrap().to_owned(), "no wamid yet"),
    ] {
        let (s, body) = tb
            .post(
                ALICE,
                &path(&conv, "/messages"),
                json!({"text": "quoting", "reply_to": target, "idempotency_key": uniq("bad-")}),
            )
            .await;
        assert_eq!(s, 400, "{why}: {body}");
        assert_eq!(err_code(&body), "invalid_request", "{why}");
        assert!(body.to_string().contains("reply_to"), "{why}: {body}");
    }
    assert_eq!(tb.graph.count(), 1, "only the pending reply reached Meta");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reactions_are_added_replaced_and_removed_at_meta_and_on_the_message() {
    let mut tb = TB::start().await;
    let (conv, cust) = claimed(&tb, N1, ALICE).await;
    let (first, first_wamid) = first_inbound(&tb, &conv).await;

    let (s, m) = react(&tb, ALICE, &conv, &first, "👍").await;
    assert_eq!(s, 202, "{m}");
    assert_eq!(m["id"], json!(first));
    assert_eq!(m["reactions"], json!([{"by": "alice", "emoji": "👍"}]));
    let sends = tb.graph.wait_sends(1, WAIT).await;
    assert_eq!(sends[0].body["type"], json!("reaction"));
    assert_eq!(sends[0].body["to"], json!(cust));
    assert_eq!(
        sends[0].body["reaction"],
        json!({"message_id": first_wamid, "emoji": "👍"})
    );

    // Idempotent by state: the same reaction again sends nothing.
    let (s, m) = react(&tb, ALICE, &conv, &first, "👍").await;
    assert_eq!(
        (s, &m["reactions"]),
        (202, &json!([{"by": "alice", "emoji": "👍"}]))
    );
    let (s, m) = react(&tb, ALICE, &conv, &first, "❤️").await;
    assert_eq!(
        (s, &m["reactions"]),
        (202, &json!([{"by": "alice", "emoji": "❤️"}]))
    );
    let sends = tb.graph.wait_sends(2, WAIT).await;
    assert_eq!(sends[1].body["reaction"]["emoji"], json!("❤️"));
    let (s, m) = react(&tb, ALICE, &conv, &first, "").await;
    assert_eq!((s, &m["reactions"]), (202, &json!([])), "{m}");
    let sends = tb.graph.wait_sends(3, WAIT).await;
    assert_eq!(
        sends[2].body["reaction"],
        json!({"message_id": first_wamid, "emoji": ""})
    );
    // Removing what is not there sends nothing either.
    let (s, _) = react(&tb, ALICE, &conv, &first, "").await;
    assert_eq!(s, 202);
    let (s, _) = react(&tb, ALICE, &conv, &first, "🎉").await;
    assert_eq!(s, 202);
    let sends = tb.graph.wait_sends(4, WAIT).await;
    assert_eq!(sends.len(), 4, "{sends:?}");

    // Each reaction's delivery is its own outbound message of type `reaction`.
    let reactions: Vec<Value> = tb
        .messages(&conv)
        .await
        .into_iter()
        .filter(|m| m["type"] == json!("reaction"))
        .collect();
    assert_eq!(reactions.len(), 4);
    for r in &reactions {
        assert_eq!(r["reply_to"], json!(first), "{r}");
        tb.wait_status(&conv, r["id"].as_str().unwrap(), "accepted")
            .await;
    }

    tb.restart().await;
    let shown = tb.message(&conv, &first).await.expect("still there");
    assert_eq!(shown["reactions"], json!([{"by": "alice", "emoji": "🎉"}]));
    assert_eq!(tb.graph.count(), 4, "nothing sent again after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_reacts_and_only_to_what_meta_has() {
    let tb = TB::start().await;
    let (conv, _) = claimed(&tb, N1, ALICE).await;
    let (first, _) = first_inbound(&tb, &conv).await;
    let (s, body) = react(&tb, BOB, &conv, &first, "👍").await;
    assert_eq!((s, err_code(&body)), (403, "not_owner"), "teammate: {body}");
    let (s, body) = react(&tb, DAVE, &conv, &first, "👍").await;
    assert_eq!(
        (s, err_code(&body)),
        (404, "not_found"),
        "other team: {body}"
    );
    let (s, body) = react(&tb, ALICE, &conv, &format!("{conv}-42"), "👍").await;
    assert_eq!((s, err_code(&body)), (404, "not_found"), "{body}");
    let (s, note) = tb.note(ALICE, &conv, "internal").await;
    assert_eq!(s, 201);
    let (s, body) = react(&tb, ALICE, &conv, note["id"].as_str().unwrap(), "👍").await;
    assert_eq!(
        (s, err_code(&body)),
        (400, "invalid_request"),
        "a note: {body}"
    );
    let (s, body) = react(&tb, ALICE, &conv, &first, "not an emoji").await;
    assert_eq!((s, err_code(&body)), (400, "invalid_request"), "{body}");
    let (s, body) = tb
        .post(
            ALICE,
            &path(&conv, &format!("/messages/{first}/reaction")),
            json!({}),
        )
        .await;
    assert_eq!((s, err_code(&body)), (400, "invalid_request"), "{body}");
    let m = tb.message(&conv, &first).await.unwrap();
    assert_eq!(m["reactions"], json!([]));
    assert_eq!(tb.graph.count(), 0, "nothing reached Meta");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_buttons_and_lists_are_sent_and_shown() {
    let mut tb = TB::start().await;
    let (conv, cust) = claimed(&tb, N1, ALICE).await;
    let mut ids = Vec::new();
    for (i, object) in [buttons(3), list(10)].into_iter().enumerate() {
        let key = format!("ia-{i}");
        let (s, m) = tb
            .post(
                ALICE,
                &path(&conv, "/messages"),
                json!({"interactive": object, "idempotency_key": key}),
            )
            .await;
        assert_eq!(s, 202, "{m}");
        assert_eq!(m["type"], json!("interactive"));
        assert_eq!(m["content"]["type"], json!("interactive"));
        assert_eq!(m["content"]["interactive"], object);
        let sends = tb.graph.wait_sends(i + 1, WAIT).await;
        let body = &sends[i].body;
        assert_eq!(body["type"], json!("interactive"));
        assert_eq!(body["to"], json!(cust));
        assert_eq!(body["interactive"], object);
        assert_eq!(body["biz_opaque_callback_data"], m["id"]);
        let id = m["id"].as_str().unwrap().to_owned();
        tb.wait_status(&conv, &id, "accepted").await;
        // The same key again answers the same message and sends nothing.
        let (s, again) = tb
            .post(
                ALICE,
                &path(&conv, "/messages"),
                json!({"interactive": object, "idempotency_key": key}),
            )
            .await;
        assert_eq!((s, &again["id"]), (202, &json!(id)));
        ids.push((id, object));
    }
    assert_eq!(tb.graph.count(), 2);
    assert_eq!(
        tb.message(&conv, &ids[0].0).await.unwrap()["text"],
        json!("Which size?"),
        "the body text reads as the message's text"
    );

    tb.restart().await;
    for (id, object) in &ids {
        let m = tb.message(&conv, id).await.expect("kept");
        assert_eq!(m["content"]["interactive"], *object, "{m}");
        assert_eq!(m["status"], json!("accepted"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_interactive_objects_are_400_with_no_graph_call() {
    let tb = TB::start().await;
    let (conv, _) = claimed(&tb, N1, ALICE).await;
    let mut no_body = buttons(1);
    no_body["body"] = json!({"text": ""});
    let mut not_reply = buttons(1);
    not_reply["action"]["buttons"][0]["type"] = json!("url");
    let mut long_title = list(1);
    long_title["action"]["sections"][0]["rows"][0]["title"] = json!("x".repeat(25));
    for (bad, why) in [
        (buttons(4), "four buttons"),
        (buttons(0), "no buttons"),
        (list(11), "eleven rows"),
        (no_body, "empty body text"),
        (not_reply, "not a reply button"),
        (long_title, "row title over 24"),
        (
            json!({"type": "product", "body": {"text": "x"}}),
            "unsupported type",
        ),
        (json!(["button"]), "not an object"),
    ] {
        let (s, body) = tb
            .post(
                ALICE,
                &path(&conv, "/messages"),
                json!({"interactive": bad, "idempotency_key": uniq("bad-")}),
            )
            .await;
        assert_eq!(
            (s, err_code(&body)),
            (400, "invalid_request"),
            "{why}: {body}"
        );
    }
    let (s, body) = tb
        .post(
            ALICE,
            &path(&conv, "/messages"),
            json!({"interactive": buttons(1), "text": "and text"}),
        )
        .await;
    assert_eq!(
        (s, err_code(&body)),
        (400, "invalid_request"),
        "both: {body}"
    );
    let outbound = tb
        .messages(&conv)
        .await
        .into_iter()
        .filter(|m| m["direction"] == json!("outbound"))
        .count();
    assert_eq!(outbound, 0, "nothing stored");
    assert_eq!(tb.graph.count(), 0, "nothing reached Meta");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_marks_the_latest_customer_message_read_with_a_typing_indicator() {
    let mut tb = TB::start().await;
    let (conv, cust) = claimed(&tb, N1, ALICE).await;
    let later = tb.send_text(N1, &cust, "are you there?").await;
    let later_id = tb
        .messages(&conv)
        .await
        .into_iter()
        .find(|m| m["wamid"] == json!(later))
        .unwrap()["id"]
        .clone();
    // An outbound message after it does not change what is marked.
    tb.must_reply(ALICE, &conv, "one moment").await;
    tb.graph.wait_sends(1, WAIT).await;

    let (s, body) = tb.post(ALICE, &path(&conv, "/read"), json!({})).await;
    assert_eq!(s, 202, "{body}");
    assert_eq!(body["message_id"], later_id);
    let sends = tb.graph.wait_sends(2, WAIT).await;
    assert_eq!(sends[1].path, format!("/{GRAPH_VERSION}/{N1}/messages"));
    assert_eq!(sends[1].auth.as_deref(), Some("Bearer test-access"));
    assert_eq!(
        sends[1].body,
        json!({"messaging_product": "whatsapp", "status": "read", "message_id": later,
               "typing_indicator": {"type": "text"}})
    );
    let (s, body) = tb.post(BOB, &path(&conv, "/read"), json!({})).await;
    assert_eq!((s, err_code(&body)), (403, "not_owner"), "{body}");
    let (s, body) = tb.post(DAVE, &path(&conv, "/read"), json!({})).await;
    assert_eq!((s, err_code(&body)), (404, "not_found"), "{body}");
    // Not a message of the conversation.
    let n = tb.messages(&conv).await.len();
    assert_eq!(n, 3, "two inbound and the reply");

    tb.restart().await;
    let (s, body) = tb.post(ALICE, &path(&conv, "/read"), json!({})).await;
    assert_eq!((s, &body["message_id"]), (202, &later_id), "{body}");
    let sends = tb.graph.wait_sends(3, WAIT).await;
    assert_eq!(sends[2].body["status"], json!("read"));
    assert_eq!(sends.len(), 3, "{sends:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_waiting_for_its_turn_is_replaced_by_a_newer_one_not_queued_twice() {
    // One send in flight per number: a slow reply holds it, so reads wait for their turn.
    let tb = TB::start_with(|c| c.outbox_extra = "max_in_flight = 1".into()).await;
    let (conv, cust) = claimed(&tb, N1, ALICE).await;
    tb.graph
        .push(GraphReply::Delay(800, Box::new(GraphReply::Ok)));
    tb.must_reply(ALICE, &conv, "looking into it").await;
    tb.graph.wait_sends(1, WAIT).await;
    for _ in 0..2 {
        let (s, body) = tb.post(ALICE, &path(&conv, "/read"), json!({})).await;
        assert_eq!(s, 202, "{body}");
    }
    let later = tb.send_text(N1, &cust, "hello again").await;
    let (s, body) = tb.post(ALICE, &path(&conv, "/read"), json!({})).await;
    assert_eq!(s, 202, "{body}");
    let sends = eventually("the latest message marked read", WAIT, || async {
        let sends = tb.graph.sends();
        match sends.last() {
            Some(s) if s.body["message_id"] == json!(later) => Ok(sends),
            _ => Err(format!("{sends:?}")),
        }
    })
    .await;
    // Three reads, but at most one waited per conversation at any time: the one already taken
    // for sending and the newest.
    let reads = sends
        .iter()
        .filter(|s| s.body["status"] == json!("read"))
        .count();
    assert!((1..=2).contains(&reads), "{sends:?}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(tb.graph.count(), sends.len(), "nothing more went out");
}

/// Meta's final errors: (code, title, reason).
const FINAL: [(i64, &str, &str); 4] = [
    (131026, "Message undeliverable", "undeliverable"),
    (131049, "This message was not delivered to maintain healthy ecosystem engagement.", "marketing_limit"),
    (131050, "Unable to deliver the message. This recipient has chosen to stop receiving marketing messages on WhatsApp from your business", "marketing_opted_out"),
    (130472, "User's number is part of an experiment", "experiment"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_errors_fail_the_message_at_once_with_a_reason_a_person_understands() {
    let mut tb = TB::start_with(|c| {
        c.retry_base_ms = 10;
        c.retry_max_ms = 20;
    })
    .await;
    let mut failed = Vec::new();
    for (i, (code, title, reason)) in FINAL.into_iter().enumerate() {
        let (conv, _) = claimed(&tb, N1, BOB).await;
        // A 5xx carrying a final code is final too.
        let http = if i == 0 { 500 } else { 400 };
        tb.graph
            .push(GraphReply::meta(http, code, title, "details from Meta"));
        let m = tb.must_reply(BOB, &conv, "special offer").await;
        let id = m["id"].as_str().unwrap().to_owned();
        let m = tb.wait_status(&conv, &id, "failed").await;
        assert_eq!(m["error"]["code"], json!(code), "{m}");
        assert_eq!(m["error"]["title"], json!(title), "{m}");
        assert_eq!(m["error"]["reason"], json!(reason), "{m}");
        assert!(
            m["error"]["detail"].as_str().is_some_and(|d| d.len() > 20),
            "a sentence: {m}"
        );
        assert_eq!(tb.graph.sends_for(&id).len(), 1, "no retry for {code}");
        failed.push((conv, id, reason));
    }
    // Longer than any retry's back-off: still one call each.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(tb.graph.count(), FINAL.len());

    tb.restart().await;
    for (conv, id, reason) in &failed {
        let m = tb.message(conv, id).await.unwrap();
        assert_eq!(
            (&m["status"], &m["error"]["reason"]),
            (&json!("failed"), &json!(reason))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_status_callback_with_a_final_code_shows_its_reason() {
    let mut tb = TB::start().await;
    for (code, title, reason) in FINAL {
        let (conv, cust, id, wamid) = accepted_reply(&tb).await;
        let mut failed = status_obj(&wamid, "failed", now(), &cust);
        failed["errors"] = json!([{"code": code, "title": title, "message": title,
                                   "error_data": {"details": "Meta's details"}}]);
        assert_eq!(tb.webhook(&status_webhook(N1, vec![failed])).await, 200);
        let m = tb.wait_status(&conv, &id, "failed").await;
        assert_eq!(m["error"]["code"], json!(code), "{m}");
        assert_eq!(m["error"]["title"], json!(title), "{m}");
        assert_eq!(m["error"]["reason"], json!(reason), "{m}");
        assert!(m["error"]["detail"].is_string(), "{m}");
    }
    // Meta gave no title: the sentence stands in for it.
    let (conv, cust, id, wamid) = accepted_reply(&tb).await;
    let mut failed = status_obj(&wamid, "failed", now(), &cust);
    failed["errors"] = json!([{"code": 131026}]);
    assert_eq!(tb.webhook(&status_webhook(N1, vec![failed])).await, 200);
    let m = tb.wait_status(&conv, &id, "failed").await;
    assert_eq!(m["error"]["title"], m["error"]["detail"], "{m}");
    tb.restart().await;
    let m = tb.message(&conv, &id).await.unwrap();
    assert_eq!(m["error"]["reason"], json!("undeliverable"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_reactions_quotes_and_interactive_messages_are_sent_after_a_crash() {
    let mut tb = TB::start_with(|c| {
        c.max_attempts = 1_000_000;
        c.retry_max_ms = 50;
        // A send cut by the crash is held this long for a status callback before it goes again.
        c.outbox_extra = "ambiguous_hold_ms = 200".into();
    })
    .await;
    let (conv, _) = claimed(&tb, N1, ALICE).await;
    let (first, first_wamid) = first_inbound(&tb, &conv).await;
    tb.graph.set_default(GraphReply::Status(500));
    let (s, _) = react(&tb, ALICE, &conv, &first, "🙏").await;
    assert_eq!(s, 202);
    let (s, quote) = tb
        .post(
            ALICE,
            &path(&conv, "/messages"),
            json!({"text": "about this", "reply_to": first, "idempotency_key": "crash-q"}),
        )
        .await;
    assert_eq!(s, 202, "{quote}");
    let (s, ia) = tb
        .post(
            ALICE,
            &path(&conv, "/messages"),
            json!({"interactive": buttons(2), "idempotency_key": "crash-i"}),
        )
        .await;
    assert_eq!(s, 202, "{ia}");
    tb.graph.wait_sends(2, WAIT).await; // attempted and failing

    tb.crash_and_restart().await;
    let good = FakeGraph::start_with_prefix("wamid.AFTER").await;
    tb.restart_with_graph(good).await;
    let sends = tb.graph.wait_sends(3, WAIT).await;
    let kinds: Vec<&Value> = sends.iter().map(|s| &s.body["type"]).collect();
    assert_eq!(
        kinds,
        [json!("reaction"), json!("text"), json!("interactive")]
            .iter()
            .collect::<Vec<_>>(),
        "in the order they were accepted"
    );
    assert_eq!(
        sends[0].body["reaction"],
        json!({"message_id": first_wamid, "emoji": "🙏"})
    );
    assert_eq!(sends[1].body["context"]["message_id"], json!(first_wamid));
    assert_eq!(sends[2].body["interactive"], buttons(2));
    for id in [&quote["id"], &ia["id"]] {
        tb.wait_status(&conv, id.as_str().unwrap(), "accepted")
            .await;
    }
    let shown = tb.message(&conv, &first).await.unwrap();
    assert_eq!(shown["reactions"], json!([{"by": "alice", "emoji": "🙏"}]));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(tb.graph.count(), 3, "each sent once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reaction_meta_refuses_leaves_the_one_that_stands() {
    let tb = TB::start().await;
    let (conv, cust) = claimed(&tb, N1, ALICE).await;
    let (first, _) = first_inbound(&tb, &conv).await;
    let (s, _) = react(&tb, ALICE, &conv, &first, "👍").await;
    assert_eq!(s, 202);
    let thumbs = format!("{conv}-1");
    tb.wait_status(&conv, &thumbs, "accepted").await;

    // Refused in the Graph API's answer: 👍 stands.
    tb.graph
        .push(GraphReply::meta(400, 131026, "Message undeliverable", "x"));
    let (s, m) = react(&tb, ALICE, &conv, &first, "❤️").await;
    assert_eq!((s, &m["reactions"][0]["emoji"]), (202, &json!("❤️")));
    let refused = eventually("the refused reaction shown failed", WAIT, || async {
        let msgs = tb.messages(&conv).await;
        match msgs
            .iter()
            .find(|m| m["type"] == json!("reaction") && m["text"] == json!("❤️"))
        {
            Some(m) if m["status"] == json!("failed") => Ok(m.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        refused["error"]["reason"],
        json!("undeliverable"),
        "{refused}"
    );
    let reactions_become = |want: Value| {
        let (tb, conv, first) = (&tb, &conv, &first);
        async move {
            eventually(&format!("reactions {want}"), WAIT, || async {
                let shown = tb.message(conv, first).await.unwrap();
                if shown["reactions"] == want {
                    Ok(())
                } else {
                    Err(shown.to_string())
                }
            })
            .await
        }
    };
    reactions_become(json!([{"by": "alice", "emoji": "👍"}])).await;

    // Accepted, then failed by a status callback: none stands (the 👍 was removed).
    let (s, _) = react(&tb, ALICE, &conv, &first, "").await;
    assert_eq!(s, 202);
    let (s, _) = react(&tb, ALICE, &conv, &first, "🎉").await;
    assert_eq!(s, 202);
    let sends = tb.graph.wait_sends(4, WAIT).await;
    let party = tb
        .messages(&conv)
        .await
        .into_iter()
        .find(|m| m["text"] == json!("🎉"))
        .unwrap();
    let party_id = party["id"].as_str().unwrap().to_owned();
    let accepted = tb.wait_status(&conv, &party_id, "accepted").await;
    assert_eq!(sends[3].body["reaction"]["emoji"], json!("🎉"));
    let mut failed = status_obj(accepted["wamid"].as_str().unwrap(), "failed", now(), &cust);
    failed["errors"] = json!([{"code": 131050, "title": "Unable to deliver the message"}]);
    assert_eq!(tb.webhook(&status_webhook(N1, vec![failed])).await, 200);
    tb.wait_status(&conv, &party_id, "failed").await;
    reactions_become(json!([])).await;
}
