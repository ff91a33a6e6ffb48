//! Server-sent events: `GET /api/v1/events`.

use crate::common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_stream_requires_auth() {
    let tb = TB::start().await;
    let client = http_client(Some(std::time::Duration::from_secs(5)));
    let resp = client.get(tb.url("/api/v1/events")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = client
        .get(tb.url("/api/v1/events"))
        .bearer_auth("t-nobody")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_message_emits_created_events() {
    let tb = TB::start().await;
    let mut bob = Sse::connect(&tb, BOB).await;
    let cust = customer();
    let w = tb.send_text(N1, &cust, "hello stream").await;
    let id = tb.conv_id(N1, &cust).await;

    let ev = bob.wait_type("conversation.created", &id).await;
    assert_eq!(ev.data["type"], json!("conversation.created"));
    assert_eq!(ev.data["conversation"]["customer"], json!(cust));
    assert_eq!(ev.data["conversation"]["status"], json!("queued"));
    assert_eq!(ev.data["conversation"]["team"], json!("support"));

    let ev = bob.wait_type("message.created", &id).await;
    assert_eq!(ev.data["type"], json!("message.created"));
    assert_eq!(ev.data["message"]["wamid"], json!(w));
    assert_eq!(ev.data["message"]["text"], json!("hello stream"));
    assert_eq!(ev.data["message"]["direction"], json!("inbound"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claim_by_one_agent_reaches_the_other_agents_of_the_team() {
    let tb = TB::start().await;
    let id = tb.open_conv(N1, &customer(), "who takes me?").await;
    let mut bob = Sse::connect(&tb, BOB).await;
    let mut carol = Sse::connect(&tb, CAROL).await;
    let mut root = Sse::connect(&tb, ROOT).await;
    tb.must_claim(ALICE, &id).await;
    for (name, s) in [
        ("bob", &mut bob),
        ("carol", &mut carol),
        ("root", &mut root),
    ] {
        let ev = s.wait_type("conversation.claimed", &id).await;
        assert_eq!(ev.data["type"], json!("conversation.claimed"), "{name}");
        assert_eq!(
            ev.data["conversation"]["assignee"],
            json!("alice"),
            "{name}"
        );
        assert_eq!(
            ev.data["conversation"]["status"],
            json!("assigned"),
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_hears_nothing_of_a_colleagues_conversation_it_cannot_open() {
    let tb = TB::start().await;
    let id = tb.open_conv(N1, &customer(), "mine soon").await;
    let mut bob = Sse::connect(&tb, BOB).await;
    let mut carol = Sse::connect(&tb, CAROL).await;
    tb.must_claim(ALICE, &id).await;
    // bob could see it while it waited: he hears that alice took it.
    bob.wait_type("conversation.claimed", &id).await;
    assert_eq!(
        tb.get(BOB, &format!("/api/v1/conversations/{id}")).await.0,
        404
    );
    assert_eq!(tb.resolve(ALICE, &id).await.0, 200);
    // Events reach a stream in the order they happened: once bob hears of a conversation opened
    // after the resolve, he would have heard of the resolve before it.
    let later = tb.open_conv(N1, &customer(), "after the resolve").await;
    bob.wait_type("conversation.created", &later).await;
    let leaked: Vec<_> = bob
        .seen
        .iter()
        .filter(|e| e.data["conversation"]["id"] == json!(id) && e.event != "conversation.claimed")
        .map(|e| e.event.clone())
        .collect();
    assert!(
        leaked.is_empty(),
        "bob heard of alice's conversation: {leaked:?}"
    );
    // Her supervisor sees everything of the team, the resolve included.
    let ev = carol.wait_type("conversation.resolved", &id).await;
    assert_eq!(ev.data["conversation"]["status"], json!("resolved"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_events_released_transferred_resolved_reopened() {
    let tb = TB::start().await;
    let cust = customer();
    let id = tb.open_conv(N1, &cust, "lifecycle").await;
    let mut root = Sse::connect(&tb, ROOT).await;

    tb.must_claim(ALICE, &id).await;
    root.wait_type("conversation.claimed", &id).await;

    assert_eq!(tb.release(ALICE, &id).await.0, 200);
    let ev = root.wait_type("conversation.released", &id).await;
    assert!(ev.data["conversation"]["assignee"].is_null());
    assert_eq!(ev.data["conversation"]["status"], json!("queued"));

    tb.must_claim(ALICE, &id).await;
    assert_eq!(
        tb.transfer(ALICE, &id, json!({"team": "sales"})).await.0,
        200
    );
    let ev = root.wait_type("conversation.transferred", &id).await;
    assert_eq!(ev.data["conversation"]["team"], json!("sales"));

    tb.must_claim(DAVE, &id).await;
    assert_eq!(tb.resolve(DAVE, &id).await.0, 200);
    let ev = root.wait_type("conversation.resolved", &id).await;
    assert_eq!(ev.data["conversation"]["status"], json!("resolved"));

    tb.send_text(N1, &cust, "me again").await;
    let ev = root.wait_type("conversation.reopened", &id).await;
    assert_eq!(ev.data["conversation"]["status"], json!("queued"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_emits_message_created_and_status_events() {
    let tb = TB::start().await;
    let cust = customer();
    let id = tb.open_conv(N1, &cust, "hi").await;
    tb.must_claim(ALICE, &id).await;
    let mut alice = Sse::connect(&tb, ALICE).await;
    let m = tb.must_reply(ALICE, &id, "hello from alice").await;
    let msg_id = m["id"].clone();
    let ev = alice
        .wait_for("message.created for the reply", |e| {
            e.event == "message.created" && e.data["message"]["id"] == msg_id
        })
        .await;
    assert_eq!(ev.data["message"]["direction"], json!("outbound"));
    assert_eq!(ev.data["conversation"]["id"], json!(id));
    let ev = alice
        .wait_for("message.status accepted", |e| {
            e.event == "message.status"
                && e.data["message"]["id"] == msg_id
                && e.data["message"]["status"] == json!("accepted")
        })
        .await;
    let w = ev.data["message"]["wamid"]
        .as_str()
        .expect("accepted message has a wamid")
        .to_owned();
    assert_eq!(
        tb.webhook(&status_webhook(
            N1,
            vec![status_obj(&w, "delivered", now(), &cust)]
        ))
        .await,
        200
    );
    alice
        .wait_for("message.status delivered", |e| {
            e.event == "message.status"
                && e.data["message"]["id"] == msg_id
                && e.data["message"]["status"] == json!("delivered")
        })
        .await;
    // notes are events too
    let (_, n) = tb.note(ALICE, &id, "internal").await;
    let nid = n["id"].clone();
    alice
        .wait_for("message.created for the note", |e| {
            e.event == "message.created" && e.data["message"]["id"] == nid
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_other_teams_are_not_delivered() {
    let tb = TB::start().await;
    let mut dave = Sse::connect(&tb, DAVE).await; // sales only
    let mut alice = Sse::connect(&tb, ALICE).await; // support only
    let support_cust = customer();
    tb.send_text(N1, &support_cust, "support question").await;
    let support_id = tb.conv_id(N1, &support_cust).await;
    alice.wait_type("conversation.created", &support_id).await;
    // a sales event afterwards, which dave must get; everything before it must not be support's
    let sales_cust = customer();
    tb.send_text(N2, &sales_cust, "sales question").await;
    let sales_id = tb.conv_id(N2, &sales_cust).await;
    dave.wait_type("conversation.created", &sales_id).await;
    dave.wait_type("message.created", &sales_id).await;
    for e in &dave.seen {
        assert_ne!(
            e.data["conversation"]["id"],
            json!(support_id),
            "dave got a support event: {e:?}"
        );
    }
    // and alice sees no sales traffic: after a later support event, nothing of sales was seen
    tb.send_text(N1, &support_cust, "still support").await;
    alice
        .wait_for("second support message", |e| {
            e.event == "message.created" && e.data["message"]["text"] == json!("still support")
        })
        .await;
    for e in &alice.seen {
        assert_ne!(
            e.data["conversation"]["id"],
            json!(sales_id),
            "alice got a sales event: {e:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_have_matching_event_name_and_type() {
    let tb = TB::start().await;
    let mut root = Sse::connect(&tb, ROOT).await;
    let id = tb.open_conv(N2, &customer(), "check framing").await;
    root.wait_type("message.created", &id).await;
    for e in &root.seen {
        assert_eq!(
            e.data["type"],
            json!(e.event),
            "event name and data.type differ: {e:?}"
        );
        assert!(e.data["conversation"]["id"].is_string(), "{e:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_gets_no_message_events_of_a_conversation_someone_else_owns() {
    let tb = TB::start().await;
    let cust = customer();
    let id = tb.open_conv(N1, &cust, "bob's customer").await;
    let mut alice = Sse::connect(&tb, ALICE).await;
    tb.must_claim(BOB, &id).await;
    alice.wait_type("conversation.claimed", &id).await;
    let r = tb.must_reply(BOB, &id, "private reply").await;
    tb.wait_status(&id, r["id"].as_str().unwrap(), "accepted")
        .await;
    tb.send_text(N1, &cust, "private inbound").await;
    assert_eq!(tb.note(BOB, &id, "private note").await.0, 201);
    // fence: a new queued conversation alice may see
    let fence = tb.open_conv(N1, &customer(), "fence").await;
    alice.wait_type("message.created", &fence).await;
    for e in &alice.seen {
        if e.data["conversation"]["id"] == json!(id) {
            assert!(
                !e.event.starts_with("message."),
                "alice (agent) saw a message event of bob's conversation: {e:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_filter_narrows_the_stream() {
    let tb = TB::start().await;
    let mut lean = Sse::connect_to(&tb, BOB, "/api/v1/events?types=conversation.*").await;
    let mut full = Sse::connect(&tb, BOB).await;
    let cust = customer();
    tb.send_text(N1, &cust, "first").await;
    let id = tb.conv_id(N1, &cust).await;
    tb.send_text(N1, &cust, "second").await;
    tb.must_claim(ALICE, &id).await;

    // The unfiltered stream carries the message events; the filtered one skips them and still
    // delivers the conversation events in order.
    full.wait_type("message.created", &id).await;
    lean.wait_type("conversation.created", &id).await;
    lean.wait_type("conversation.claimed", &id).await;
    assert!(
        lean.seen.iter().all(|e| e.data["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("conversation."))),
        "only conversation.* events: {:?}",
        lean.seen
            .iter()
            .map(|e| e.event.clone())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_event_type_is_invalid_request() {
    let tb = TB::start().await;
    let client = http_client(Some(std::time::Duration::from_secs(5)));
    let resp = client
        .get(tb.url("/api/v1/events?types=conversation.claimed,message.deleted"))
        .bearer_auth(BOB)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], json!("invalid_request"), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("message.deleted")),
        "{v}"
    );
}

/// The bus wakes a stream at most once per tick, so events of a burst wait for the next tick
/// instead of each waking the stream: every stream still gets all of them, a conversation's in
/// order, and the burst's last event without any later traffic to push it out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_reaches_every_stream_complete_and_in_order() {
    let tb = TB::start().await;
    let mut bob = Sse::connect(&tb, BOB).await;
    let mut root = Sse::connect(&tb, ROOT).await;
    let cust = customer();
    let texts: Vec<String> = (0..20).map(|i| format!("burst {i}")).collect();
    let others: Vec<String> = (0..10).map(|_| customer()).collect();
    let sequential = async {
        for t in &texts {
            tb.send_text(N1, &cust, t).await;
        }
    };
    let concurrent =
        futures_util::future::join_all(others.iter().map(|c| tb.send_text(N1, c, "side")));
    tokio::join!(sequential, concurrent);
    let mine = |e: &SseEvent, who: &str| {
        e.event == "message.created" && e.data["conversation"]["customer"] == json!(who)
    };
    for (name, s) in [("bob", &mut bob), ("root", &mut root)] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let complete = |seen: &[SseEvent]| {
            seen.iter()
                .any(|e| mine(e, &cust) && e.data["message"]["text"] == json!("burst 19"))
                && others.iter().all(|c| seen.iter().any(|e| mine(e, c)))
        };
        while !complete(&s.seen) {
            assert!(
                s.next_before(deadline).await.is_some(),
                "{name}: the burst did not arrive whole: {:#?}",
                s.seen.iter().map(|e| &e.data).collect::<Vec<_>>()
            );
        }
        let got: Vec<&str> = s
            .seen
            .iter()
            .filter(|e| mine(e, &cust))
            .filter_map(|e| e.data["message"]["text"].as_str())
            .collect();
        assert_eq!(
            got, texts,
            "{name}: the conversation's messages, once, in order"
        );
    }
}
