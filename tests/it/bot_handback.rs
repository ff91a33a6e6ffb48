//! Handing a conversation back to the bot (`POST /api/v1/conversations/{id}/handback`, issue
//! 22 item 1): by its owner, or a supervisor of the team or an admin; the bot has it again
//! (status `bot`, no owner, out of the queue), the agent's slot is free at once, watchers hear
//! `conversation.released`, and the bot answers the customer's next message. Refused with 409
//! `automation_off` for a team without automation and 409 `conversation_resolved` for a
//! resolved conversation.

use serde_json::{json, Value};

use crate::common::*;

const DEMO: &str = include_str!("../../config/automation-demo.toml");

async fn broker() -> TB {
    TB::start_with(|c| c.extra = format!("\n{DEMO}\n")).await
}

/// A support conversation the bot handed to humans (the customer asked for a person).
async fn handed_over(tb: &TB, customer: &str) -> String {
    let id = tb
        .open_conv(N1, customer, "I want to talk to a person")
        .await;
    eventually("queued for humans", WAIT, || async {
        match tb.conversation(&id).await["status"].as_str() {
            Some("queued") => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;
    id
}

async fn hand_back(tb: &TB, token: &str, id: &str) -> (u16, Value) {
    tb.post(
        token,
        &format!("/api/v1/conversations/{id}/handback"),
        json!({}),
    )
    .await
}

async fn open_count(tb: &TB, token: &str) -> i64 {
    let (s, v) = tb.get(token, "/api/v1/agents/me").await;
    assert_eq!(s, 200, "{v}");
    v["open_conversations"].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn the_owner_hands_back_the_bot_answers_again_and_the_slot_is_free() {
    let tb = broker().await;
    let mut watch = Sse::connect(&tb.api, CAROL).await;
    // ALICE may own two at once.
    let customer = customer();
    let first = handed_over(&tb, &customer).await;
    let second = handed_over(&tb, &crate::common::customer()).await;
    let third = handed_over(&tb, &crate::common::customer()).await;
    tb.must_claim(ALICE, &first).await;
    tb.must_claim(ALICE, &second).await;
    let (s, v) = tb.claim(ALICE, &third).await;
    assert_eq!((s, err_code(&v)), (409, "capacity_reached"), "{v}");

    let (s, v) = hand_back(&tb, ALICE, &first).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "bot", "{v}");
    assert!(v["assignee"].is_null(), "{v}");
    // The slot is free at once: the third claim succeeds.
    assert_eq!(open_count(&tb, ALICE).await, 1);
    tb.must_claim(ALICE, &third).await;
    let e = watch.wait_type("conversation.released", &first).await;
    assert_eq!(e.data["conversation"]["status"], "bot", "{:?}", e.data);
    let c = tb.conversation(&first).await;
    assert!(
        c["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["direction"] == "note"
                && m["author"] == "system"
                && m["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("handed back to the bot by alice"))),
        "{c}"
    );
    // Again: the bot has it already, nothing changes.
    let (s, v) = hand_back(&tb, CAROL, &first).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("bot")), "{v}");

    // The bot takes the customer's next message.
    tb.send_text(N1, &customer, "thank you").await;
    let sends = tb.graph.wait_sends(1, WAIT).await;
    assert_eq!(
        sends[0].body["text"]["body"], "You are welcome! Write again any time.",
        "{}",
        sends[0].body
    );
    eventually("resolved by the bot", WAIT, || async {
        match tb.conversation(&first).await["status"].as_str() {
            Some("resolved") => Ok(()),
            s => Err(format!("{s:?}")),
        }
    })
    .await;
}

#[tokio::test]
async fn a_supervisor_hands_back_a_queued_one_and_a_teammate_may_not() {
    let tb = broker().await;
    let id = handed_over(&tb, &customer()).await;
    let (s, v) = hand_back(&tb, BOB, &id).await;
    assert_eq!((s, err_code(&v)), (403, "not_owner"), "{v}");
    let (s, v) = hand_back(&tb, DAVE, &id).await;
    assert_eq!((s, err_code(&v)), (404, "not_found"), "{v}");
    let (s, v) = hand_back(&tb, CAROL, &id).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("bot")), "{v}");
    // It left the queue: nothing waits for `next`.
    let (s, v) = tb
        .post(ALICE, "/api/v1/teams/support/next", json!({}))
        .await;
    assert_eq!(s, 204, "{v}");
    // A resolved one goes to the bot when the customer writes again, not by hand.
    let other = handed_over(&tb, &customer()).await;
    tb.must_claim(BOB, &other).await;
    let (s, v) = tb.resolve(BOB, &other).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = hand_back(&tb, CAROL, &other).await;
    assert_eq!((s, err_code(&v)), (409, "conversation_resolved"), "{v}");
}

#[tokio::test]
async fn a_team_without_automation_refuses_with_automation_off() {
    let tb = broker().await;
    // N2's team, sales, has no bot.
    let id = tb.open_conv(N2, &customer(), "hello").await;
    tb.must_claim(DAVE, &id).await;
    let (s, v) = hand_back(&tb, DAVE, &id).await;
    assert_eq!((s, err_code(&v)), (409, "automation_off"), "{v}");
    let c = tb.conversation(&id).await;
    assert_eq!(c["status"], "assigned", "{c}");
    assert_eq!(c["assignee"], "dave", "{c}");
}
