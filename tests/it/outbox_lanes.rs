//! The outbox's pacing per user and its two lanes (contract "Templates, business-initiated
//! messages, numbers and Meta's limits": the pair rate; issue 24: replies never queue behind a
//! campaign). Observed at the fake Graph API: which sends arrived, in what order, and when.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// Sends to `customer`, in the order the fake Graph API received them.
fn sends_to(tb: &TB, customer: &str) -> Vec<GraphRequest> {
    tb.graph
        .sends()
        .into_iter()
        .filter(|s| s.body["to"] == json!(customer))
        .collect()
}

fn gap(a: &GraphRequest, b: &GraphRequest) -> Duration {
    b.at.saturating_duration_since(a.at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_message_to_the_same_user_waits_for_its_pair_and_another_users_does_not() {
    let tb =
        TB::start_with(|c| c.outbox_extra = "pair_burst = 1\npair_interval_ms = 1500".into()).await;
    let (a_conv, a) = claimed(&tb, N1, BOB).await;
    let (b_conv, b) = claimed(&tb, N1, BOB).await;
    tb.must_reply(BOB, &a_conv, "a1").await;
    tb.must_reply(BOB, &a_conv, "a2").await;
    tb.must_reply(BOB, &b_conv, "b1").await;
    let sends = tb.graph.wait_sends(3, WAIT).await;
    let texts: Vec<_> = sends
        .iter()
        .map(|s| s.body["text"]["body"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        texts,
        ["a1", "b1", "a2"],
        "b's reply does not wait for a's pair"
    );
    let to_a = sends_to(&tb, &a);
    // The broker takes the pair's token when the send starts; arrival here can differ by a
    // little from that, never by the interval.
    assert!(
        gap(&to_a[0], &to_a[1]) >= Duration::from_millis(1300),
        "a's second message waited for its pair: {:?}",
        gap(&to_a[0], &to_a[1])
    );
    assert_eq!(sends_to(&tb, &b).len(), 1);
    let text = tb.metrics().await;
    let paced = metric_sum(
        &text,
        "switchboard_outbox_pair_paced_total",
        &[&format!("number=\"{N1}\"")],
    );
    assert!(paced.unwrap_or(0.0) >= 1.0, "pacing is counted: {paced:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pair_rate_limit_hit_backs_that_pair_off_four_to_the_n_and_no_other() {
    // 4^n units of 50 ms: 200 ms, then 800 ms.
    let tb = TB::start_with(|c| c.outbox_extra = "pair_backoff_ms = 50".into()).await;
    let (a_conv, a) = claimed(&tb, N1, BOB).await;
    let (b_conv, b) = claimed(&tb, N1, BOB).await;
    let hit = || {
        GraphReply::meta(
            400,
            131056,
            "(#131056) (Business Account, Consumer Account) pair rate limit hit",
            "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.",
        )
    };
    tb.graph.push(hit());
    tb.graph.push(hit());
    let msg = tb.must_reply(BOB, &a_conv, "to a").await;
    tb.graph.wait_sends(2, WAIT).await;
    // a's pair now waits 800 ms; b's reply goes at once.
    tb.must_reply(BOB, &b_conv, "to b").await;
    let id = msg["id"].as_str().unwrap_or("").to_string();
    tb.wait_status(&a_conv, &id, "accepted").await;
    let to_a = sends_to(&tb, &a);
    let to_b = sends_to(&tb, &b);
    assert_eq!((to_a.len(), to_b.len()), (3, 1), "{to_a:?} {to_b:?}");
    let (first, second) = (gap(&to_a[0], &to_a[1]), gap(&to_a[1], &to_a[2]));
    assert!(first >= Duration::from_millis(190), "4^1 units: {first:?}");
    assert!(
        second >= Duration::from_millis(790),
        "4^2 units: {second:?}"
    );
    assert!(
        to_b[0].at < to_a[2].at,
        "b's send did not wait for a's back-off"
    );
    let text = tb.metrics().await;
    let limited = metric_sum(
        &text,
        "switchboard_outbox_pair_limited_total",
        &[&format!("number=\"{N1}\"")],
    );
    assert!(
        limited.unwrap_or(0.0) >= 2.0,
        "131056 is counted: {limited:?}"
    );
}

/// A UTILITY template approved through the API and Meta's webhook.
async fn approved_template(tb: &TB) {
    crate::templates::startup_sync(tb).await;
    let template = json!({
        "name": "order_ready",
        "language": "en_US",
        "category": "UTILITY",
        "components": [{"type": "BODY", "text": "Hi {{1}}, order {{2}} is ready."}],
    });
    let (code, created) = tb.post(ROOT, "/api/v1/templates", template).await;
    assert_eq!(code, 201, "{created}");
    let approved = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "time": 1751247548, "changes": [{
            "field": "message_template_status_update",
            "value": {"event": "APPROVED", "message_template_id": created["id"],
                      "message_template_name": "order_ready",
                      "message_template_language": "en_US", "reason": "NONE"}}]}],
    });
    assert_eq!(tb.webhook(&approved).await, 200);
}

async fn send_template(tb: &TB, conv: &str) -> Value {
    let body = json!({"template": {"name": "order_ready", "language": "en_US",
                                   "parameters": ["Ana", "A-17"]},
                      "idempotency_key": uniq("k-")});
    let (code, msg) = tb
        .post(BOB, &format!("/api/v1/conversations/{conv}/messages"), body)
        .await;
    assert_eq!(code, 202, "{msg}");
    msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_reply_overtakes_a_queued_campaign_but_not_its_own_conversations_template() {
    // One send at a time, each taking 400 ms at Meta: the campaign queues.
    let tb = TB::start_with(|c| c.outbox_extra = "max_in_flight = 1".into()).await;
    tb.graph
        .set_default(GraphReply::Delay(400, Box::new(GraphReply::Ok)));
    approved_template(&tb).await;
    let mut campaign = Vec::new();
    for _ in 0..4 {
        campaign.push(claimed(&tb, N1, BOB).await);
    }
    let (mixed, mixed_customer) = claimed(&tb, N1, BOB).await;
    let (alices, alices_customer) = claimed(&tb, N1, ALICE).await;
    for (conv, _) in &campaign {
        send_template(&tb, conv).await;
    }
    tb.must_reply(ALICE, &alices, "an agent's answer").await;
    // A template and then a reply in one conversation: the reply must not overtake it.
    send_template(&tb, &mixed).await;
    tb.must_reply(BOB, &mixed, "after the template").await;
    let sends = tb.graph.wait_sends(7, Duration::from_secs(30)).await;
    let position = |customer: &str, kind: &str| {
        sends
            .iter()
            .position(|s| s.body["to"] == json!(customer) && s.body["type"] == json!(kind))
            .unwrap_or_else(|| panic!("no {kind} send to {customer}: {sends:?}"))
    };
    let alice_at = position(&alices_customer, "text");
    let last_campaign = campaign
        .iter()
        .map(|(_, customer)| position(customer, "template"))
        .max()
        .unwrap_or(0);
    // In arrival order it would be the 5th; at most two campaign sends were started before it
    // was accepted (one in flight, one more if that one ended meanwhile).
    assert!(
        alice_at <= 2 && alice_at < last_campaign,
        "the reply went before the queued campaign: position {alice_at} of {sends:?}"
    );
    assert!(
        position(&mixed_customer, "template") < position(&mixed_customer, "text"),
        "a conversation's sends keep their order across lanes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_leaves_a_quarter_of_the_in_flight_slots_to_replies() {
    // Four slots, each send held 10 s at Meta (longer than the test): the campaign may hold
    // three; the fourth is the reply's, so the reply reaches Meta while the campaign's requests
    // are still out. Without the bound, the campaign takes all four and the reply waits.
    // A fast number (burst of 20), so the campaign's sends leave as soon as each is accepted.
    const FAST: &str = "306540352242955";
    let tb = TB::start_with(|c| {
        c.outbox_extra = "max_in_flight = 4".into();
        c.extra = format!(
            "\n[[numbers]]\nphone_number_id = \"{FAST}\"\ndisplay_phone_number = \"15550783884\"\ndefault_team = \"support\"\nmps = 1000\n"
        );
    })
    .await;
    tb.graph
        .set_default(GraphReply::Delay(10_000, Box::new(GraphReply::Ok)));
    approved_template(&tb).await;
    let mut campaign = Vec::new();
    // Five templates (Bob's capacity): three go out, two wait.
    for _ in 0..5 {
        campaign.push(claimed(&tb, FAST, BOB).await);
    }
    let (alices, alices_customer) = claimed(&tb, FAST, ALICE).await;
    for (conv, _) in &campaign {
        send_template(&tb, conv).await;
    }
    // The campaign's first requests are out before the reply is accepted.
    tb.graph.wait_sends(3, WAIT).await;
    tb.must_reply(ALICE, &alices, "an agent's answer").await;
    let sends = tb.graph.wait_sends(4, WAIT).await;
    let first_four: Vec<_> = sends.iter().take(4).collect();
    let templates = first_four
        .iter()
        .filter(|s| s.body["type"] == json!("template"))
        .count();
    assert_eq!(
        templates, 3,
        "the campaign held three of the four slots: {first_four:?}"
    );
    assert_eq!(
        first_four[3].body["to"],
        json!(alices_customer),
        "the fourth request is the reply, sent while the campaign's three were out: {first_four:?}"
    );
}
