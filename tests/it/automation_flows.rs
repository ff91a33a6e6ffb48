//! The bot's multi-turn flows and hand-overs on the demo config (config/automation-demo.toml),
//! end to end, with a fake order service on loopback: cash-on-delivery confirmation with
//! interactive buttons (the button reply confirms at the business; a refusal hands over), lead
//! qualification (a hot lead reaches Sales with its score and answers, a cold one is answered
//! and resolved), the bot's memory across a restart, the after-hours flow under a
//! `ManualClock`, and each hand-over reason with its per-intent metrics.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};
use switchboard::clock::{Clock, ManualClock};

use crate::common::*;

const DEMO: &str = include_str!("../../config/automation-demo.toml");

/// The business's order service: `GET /orders/{id}` answers the order; `POST
/// /orders/{id}/confirm` and `/cancel` record the call and answer 204, or 500 when `refuse`.
struct Orders {
    base: String,
    posts: Arc<Mutex<Vec<String>>>,
}

#[derive(Clone)]
struct OrdersState {
    posts: Arc<Mutex<Vec<String>>>,
    refuse: bool,
}

async fn order(Path(id): Path<String>) -> Json<Value> {
    Json(json!({"order_id": id, "status": "shipped", "eta": "December 9", "total": "42.50 EUR"}))
}

async fn settle(
    State(st): State<OrdersState>,
    Path((id, action)): Path<(String, String)>,
) -> StatusCode {
    st.posts.lock().unwrap().push(format!("{action} {id}"));
    if st.refuse {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

impl Orders {
    async fn start(refuse: bool) -> Orders {
        let posts = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/orders/{id}", get(order))
            .route("/orders/{id}/{action}", post(settle))
            .with_state(OrdersState {
                posts: posts.clone(),
                refuse,
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Orders {
            base: format!("http://{addr}"),
            posts,
        }
    }

    fn posts(&self) -> Vec<String> {
        self.posts.lock().unwrap().clone()
    }
}

fn demo(orders: &Orders) -> String {
    format!(
        "\n{}\n",
        DEMO.replace("http://127.0.0.1:8099", &orders.base)
    )
}

async fn broker(orders: &Orders) -> TB {
    let extra = demo(orders);
    TB::start_with(|c| c.extra = extra).await
}

/// The texts (or interactive bodies) the bot sent, oldest first.
fn bot_said(c: &Value) -> Vec<String> {
    c["messages"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter(|m| m["direction"] == "outbound" && m["author"] == "bot")
                .map(|m| m["text"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `text` and waits for the bot's `n`th message in total to the customer.
async fn say(tb: &TB, number: &str, customer: &str, text: &str, n: usize) -> Value {
    say_at(tb, number, customer, now(), text, n).await
}

async fn say_at(tb: &TB, number: &str, customer: &str, ts: i64, text: &str, n: usize) -> Value {
    tb.send_text_at(number, customer, ts, text).await;
    let id = tb.conv_id(number, customer).await;
    wait_conv(tb, &id, &format!("bot message {n} after {text:?}"), |c| {
        bot_said(c).len() >= n
    })
    .await
}

/// The customer presses reply button `id` (titled `title`) on number 1.
async fn press(tb: &TB, customer: &str, id: &str, title: &str) {
    let msg = json!({
        "from": customer, "id": wamid(), "timestamp": now().to_string(), "type": "interactive",
        "interactive": {"type": "button_reply", "button_reply": {"id": id, "title": title}}
    });
    let body = envelope(vec![entry(vec![change(N1, vec![msg], vec![])])]);
    assert_eq!(tb.webhook(&body).await, 200);
}

fn counter(text: &str, name: &str, labels: &[&str]) -> f64 {
    metric_sum(text, name, labels).unwrap_or(0.0)
}

#[tokio::test]
async fn cod_confirm_sends_buttons_and_the_button_reply_confirms_at_the_business() {
    let orders = Orders::start(false).await;
    let tb = broker(&orders).await;
    let customer = customer();
    let id = tb
        .open_conv(N1, &customer, "I will pay cash on delivery for order 12345")
        .await;
    let sends = tb.graph.wait_sends(1, WAIT).await;
    let body = &sends[0].body;
    assert_eq!(body["type"], "interactive", "{body}");
    let buttons = &body["interactive"]["action"]["buttons"];
    assert_eq!(buttons[0]["reply"]["id"], "cod:confirm:12345", "{body}");
    assert_eq!(buttons[0]["reply"]["title"], "Confirm", "{body}");
    assert_eq!(buttons[1]["reply"]["id"], "cod:cancel:12345", "{body}");
    assert!(
        body["interactive"]["body"]["text"]
            .as_str()
            .is_some_and(|t| t.contains("12345")),
        "{body}"
    );
    let c = tb.conversation(&id).await;
    assert_eq!(c["status"], "bot", "{c}");
    assert!(orders.posts().is_empty());

    press(&tb, &customer, "cod:confirm:12345", "Confirm").await;
    let c = wait_conv(&tb, &id, "resolved by the bot", |c| {
        c["status"] == "resolved"
    })
    .await;
    assert_eq!(orders.posts(), vec!["confirm 12345"]);
    let sends = tb.graph.wait_sends(2, WAIT).await;
    assert_eq!(
        sends[1].body["text"]["body"], "Thank you, order 12345 is confirmed.",
        "{}",
        sends[1].body
    );
    assert!(bot_notes(&c).is_empty(), "{c}");
    let m = tb.metrics().await;
    assert!(
        counter(
            &m,
            "switchboard_bot_cycles_total",
            &["intent=\"cod_confirm\"", "outcome=\"resolved\""]
        ) >= 1.0,
        "{m}"
    );
}

#[tokio::test]
async fn cod_confirm_asks_for_the_order_id_and_a_refused_cancel_hands_over() {
    let orders = Orders::start(true).await;
    let tb = broker(&orders).await;
    let customer = customer();
    let c = say(&tb, N1, &customer, "confirm cash on delivery", 1).await;
    assert_eq!(
        bot_said(&c),
        vec!["Which order is it? Please send me its order number."]
    );
    let c = say(&tb, N1, &customer, "it is 77777", 2).await;
    assert!(bot_said(&c)[1].contains("77777"), "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    // The customer types the button's title instead of pressing it: the same choice.
    tb.send_text(N1, &customer, "cancel").await;
    let c = wait_conv(&tb, &id, "handed over", |c| c["status"] == "queued").await;
    assert_eq!(orders.posts(), vec!["cancel 77777"]);
    let notes = bot_notes(&c);
    assert_eq!(notes.len(), 1, "{c}");
    for part in [
        "cod_confirm_failed",
        "Intent: cod_confirm",
        "Order id: 77777",
    ] {
        assert!(notes[0].contains(part), "{part:?} not in {:?}", notes[0]);
    }
}

/// A sales conversation through the four demo questions with `answers`.
async fn qualify(tb: &TB, customer: &str, answers: [&str; 4]) -> Value {
    let c = say(tb, N1, customer, "I want a quote for my company", 1).await;
    assert_eq!(
        bot_said(&c),
        vec!["What budget do you have in mind (EUR per year)?"]
    );
    let mut c = c;
    for (i, a) in answers.iter().enumerate().take(3) {
        c = say(tb, N1, customer, a, i + 2).await;
    }
    let id = c["id"].as_str().unwrap().to_string();
    tb.send_text(N1, customer, answers[3]).await;
    wait_conv(tb, &id, "the lead settled", |c| {
        c["status"] == "queued" || c["status"] == "resolved"
    })
    .await
}

#[tokio::test]
async fn a_hot_lead_reaches_sales_with_its_score_and_answers() {
    let orders = Orders::start(false).await;
    let tb = broker(&orders).await;
    let customer = customer();
    let c = qualify(
        &tb,
        &customer,
        [
            "about 20k EUR",
            "right now",
            "120 people",
            "customer support",
        ],
    )
    .await;
    assert_eq!(
        (c["status"].as_str(), c["team"].as_str()),
        (Some("queued"), Some("sales")),
        "{c}"
    );
    assert_eq!(
        bot_said(&c),
        vec![
            "What budget do you have in mind (EUR per year)?",
            "When would you like to start?",
            "How many people work at your company?",
            "What would you use us for?",
        ]
    );
    let notes = bot_notes(&c);
    assert_eq!(notes.len(), 1, "{c}");
    for part in [
        "hot_lead",
        "Intent: sales",
        "Lead score: 100",
        "budget: about 20k EUR",
        "timeline: right now",
        "company_size: 120 people",
        "use_case: customer support",
    ] {
        assert!(notes[0].contains(part), "{part:?} not in {:?}", notes[0]);
    }
    // Sales takes it from its queue.
    let (s, v) = tb.post(DAVE, "/api/v1/teams/sales/next", json!({})).await;
    assert_eq!((s, v["id"].as_str()), (200, c["id"].as_str()), "{v}");
}

#[tokio::test]
async fn a_cold_lead_is_answered_and_resolved_by_the_bot() {
    let orders = Orders::start(false).await;
    let tb = broker(&orders).await;
    let customer = customer();
    let c = qualify(
        &tb,
        &customer,
        ["500", "next year maybe", "3", "just curious"],
    )
    .await;
    assert_eq!(c["status"], "resolved", "{c}");
    let said = bot_said(&c);
    assert_eq!(said.len(), 5, "{c}");
    assert!(said[4].starts_with("Thank you! Our plans"), "{c}");
    assert!(bot_notes(&c).is_empty(), "{c}");
}

#[tokio::test]
async fn the_bots_memory_survives_a_restart_mid_flow() {
    let orders = Orders::start(false).await;
    let mut tb = broker(&orders).await;
    let lead = customer();
    say(&tb, N1, &lead, "I want a quote for my company", 1).await;
    say(&tb, N1, &lead, "50000 EUR", 2).await;
    let buyer = customer();
    say(
        &tb,
        N1,
        &buyer,
        "I will pay cash on delivery for order 24680",
        1,
    )
    .await;
    let stuck = customer();
    // A turn without answer (an order question with no id): one of the two allowed.
    say(&tb, N1, &stuck, "where is my order", 1).await;

    tb.restart().await;

    // The lead continues with the second question's answer (without its memory the bot would
    // classify "asap" afresh).
    say(&tb, N1, &lead, "asap", 3).await;
    say(&tb, N1, &lead, "300", 4).await;
    tb.send_text(N1, &lead, "sales team").await;
    let id = tb.conv_id(N1, &lead).await;
    let c = wait_conv(&tb, &id, "the lead settled", |c| c["status"] == "queued").await;
    let notes = bot_notes(&c);
    assert!(
        notes.len() == 1
            && notes[0].contains("Lead score: 100")
            && notes[0].contains("budget: 50000 EUR"),
        "{c}"
    );
    // The pending confirmation still takes the button.
    press(&tb, &buyer, "cod:confirm:24680", "Confirm").await;
    let id = tb.conv_id(N1, &buyer).await;
    wait_conv(&tb, &id, "confirmed", |c| c["status"] == "resolved").await;
    assert_eq!(orders.posts(), vec!["confirm 24680"]);
    // The failed turn still counts: the second one hands over.
    tb.send_text(N1, &stuck, "where is my order please").await;
    let id = tb.conv_id(N1, &stuck).await;
    let c = wait_conv(&tb, &id, "handed over", |c| c["status"] == "queued").await;
    let notes = bot_notes(&c);
    assert!(
        notes.len() == 1 && notes[0].contains("max_failed_turns"),
        "{c}"
    );
}

#[tokio::test]
async fn each_hand_over_reason_leaves_its_note_and_is_counted_per_intent() {
    let orders = Orders::start(false).await;
    let tb = broker(&orders).await;
    let before = tb.metrics().await;
    // A sensitive intent.
    let complaint = tb
        .open_conv(
            N1,
            &customer(),
            "I want to file a complaint, terrible service",
        )
        .await;
    // Turns without progress: `max_failed_turns` (2) order questions without an order id.
    let lost = customer();
    say(&tb, N1, &lost, "where is my order", 1).await;
    tb.send_text(N1, &lost, "where is my package").await;
    // An explicit request for a person.
    let person = tb
        .open_conv(N1, &customer(), "I want to talk to a person")
        .await;
    // The classifier is unsure.
    let unsure = tb.open_conv(N1, &customer(), "qwxz vbnm plkj").await;
    let lost = tb.conv_id(N1, &lost).await;
    for (id, reason, intent) in [
        (&complaint, "sensitive_intent", "complaint"),
        (&lost, "max_failed_turns", "order_status"),
        (&person, "keyword", "unknown"),
        (&unsure, "low_confidence", "unknown"),
    ] {
        let c = wait_conv(&tb, id, reason, |c| c["status"] == "queued").await;
        let notes = bot_notes(&c);
        assert!(
            notes.len() == 1 && notes[0].contains(&format!("({reason})")),
            "{reason}: {c}"
        );
        assert_eq!(c["team"], "support", "{c}");
        let _ = intent;
    }
    // An agent's claim from the bot.
    let greeted = customer();
    let c = say(&tb, N1, &greeted, "hello", 1).await;
    let claimed = c["id"].as_str().unwrap().to_string();
    tb.must_claim(ALICE, &claimed).await;
    let c = tb.conversation(&claimed).await;
    let notes = bot_notes(&c);
    assert!(notes.len() == 1 && notes[0].contains("(claimed)"), "{c}");

    let after = tb.metrics().await;
    for (intent, reason) in [
        ("complaint", "sensitive_intent"),
        ("order_status", "max_failed_turns"),
        ("unknown", "keyword"),
        ("unknown", "low_confidence"),
        ("greeting", "claimed"),
    ] {
        let labels = [
            &format!("intent=\"{intent}\"")[..],
            &format!("reason=\"{reason}\"")[..],
        ];
        let name = "switchboard_bot_intent_handovers_total";
        let grew = counter(&after, name, &labels) - counter(&before, name, &labels);
        assert!(grew >= 1.0, "{intent} {reason}: {grew}");
    }
    let name = "switchboard_bot_cycles_total";
    let labels = ["intent=\"complaint\"", "outcome=\"handed_over\""];
    assert!(counter(&after, name, &labels) - counter(&before, name, &labels) >= 1.0);
}

fn utc(d: u32, h: u32, min: u32) -> i64 {
    Utc.with_ymd_and_hms(2026, 11, d, h, min, 0)
        .single()
        .expect("valid date")
        .timestamp_millis()
}

#[tokio::test]
async fn after_hours_the_bot_answers_first_and_the_team_gets_the_conversation_at_opening() {
    // Friday 18:00 in Berlin: sales (no bot in office hours) is closed until Monday 09:00.
    let clock = ManualClock::new(utc(27, 17, 0));
    let orders = Orders::start(false).await;
    let extra = demo(&orders);
    let tb = TB::start_with_clock(
        |c| {
            c.sales_extra = r#"time_zone = "Europe/Berlin"
hours = { mon = ["09:00-17:00"], tue = ["09:00-17:00"], wed = ["09:00-17:00"], thu = ["09:00-17:00"], fri = ["09:00-17:00"] }
after_hours_reply = "Sales is closed; we answer from 09:00.""#
                .into();
            c.extra = extra;
        },
        clock.clone(),
    )
    .await;
    let secs = || clock.now_ms() / 1000;
    let customer = customer();
    // The bot gives the first response (a knowledge answer), in sales.
    let c = say_at(&tb, N2, &customer, secs(), "what are your opening hours", 1).await;
    assert_eq!(
        (c["status"].as_str(), c["team"].as_str()),
        (Some("bot"), Some("sales")),
        "{c}"
    );
    assert!(bot_said(&c)[0].contains("Monday to Friday"), "{c}");
    let id = c["id"].as_str().unwrap().to_string();
    // A request for a person waits for the opening; the bot says so once and goes on answering.
    let c = say_at(&tb, N2, &customer, secs(), "I want to talk to a person", 2).await;
    assert_eq!(bot_said(&c)[1], "Sales is closed; we answer from 09:00.");
    assert_eq!(c["status"], "bot", "{c}");
    let c = say_at(
        &tb,
        N2,
        &customer,
        secs(),
        "do you ship abroad internationally",
        3,
    )
    .await;
    assert!(bot_said(&c)[2].contains("EU"), "{c}");
    assert_eq!(tb.list(ROOT, "status=queued&team=sales").await.len(), 0);

    // Saturday: still closed, nothing moves.
    clock.set(utc(28, 10, 0));
    assert_eq!(tb.conversation(&id).await["status"], "bot");
    // Monday 09:00 in Berlin: sales opens and gets it, through routing, with the bot's note.
    clock.set(utc(30, 8, 0));
    let c = wait_conv(&tb, &id, "queued in sales at opening", |c| {
        c["status"] == "queued"
    })
    .await;
    assert_eq!(c["team"], "sales", "{c}");
    let notes = bot_notes(&c);
    assert!(notes.len() == 1 && notes[0].contains("(keyword)"), "{c}");
    let (s, v) = tb.post(DAVE, "/api/v1/teams/sales/next", json!({})).await;
    assert_eq!((s, v["id"].as_str()), (200, Some(id.as_str())), "{v}");

    // A conversation the bot held only because the team was closed goes over as well.
    clock.set(utc(30, 17, 30)); // Monday 18:30 in Berlin
    let other = crate::common::customer();
    let c = say_at(&tb, N2, &other, secs(), "hello", 1).await;
    assert_eq!(c["status"], "bot", "{c}");
    let other = c["id"].as_str().unwrap().to_string();
    // Tuesday 2026-12-01 09:00 in Berlin.
    clock.set(
        Utc.with_ymd_and_hms(2026, 12, 1, 8, 0, 0)
            .unwrap()
            .timestamp_millis(),
    );
    let c = wait_conv(&tb, &other, "queued at opening", |c| {
        c["status"] == "queued"
    })
    .await;
    let notes = bot_notes(&c);
    assert!(
        notes.len() == 1 && notes[0].contains("(team_opened)"),
        "{c}"
    );
}

/// A supervisor's transfer out of the bot is a hand-over like a claim: the bot's note (reason
/// `transferred`), counted, and the end of its cycle: handed back to the bot later, the
/// conversation starts a clean cycle, after a restart too.
#[tokio::test]
async fn a_transfer_out_of_the_bot_leaves_its_note_and_ends_its_memory() {
    let orders = Orders::start(false).await;
    let mut tb = broker(&orders).await;
    let stuck = customer();
    // A turn without answer: one of the two allowed before the bot hands over.
    say(&tb, N1, &stuck, "where is my order", 1).await;
    let id = tb.conv_id(N1, &stuck).await;
    let (code, c) = tb
        .post(
            CAROL,
            &format!("/api/v1/conversations/{id}/transfer"),
            json!({"team": "support"}),
        )
        .await;
    assert_eq!(code, 200, "{c}");
    let c = wait_conv(&tb, &id, "queued in support", |c| c["status"] == "queued").await;
    let notes = bot_notes(&c);
    assert!(
        notes.len() == 1 && notes[0].contains("transferred"),
        "the transfer leaves the bot's note: {c}"
    );
    let metrics = tb.metrics().await;
    assert!(
        counter(
            &metrics,
            "switchboard_bot_handovers_total",
            &["reason=\"transferred\""]
        ) >= 1.0,
        "the hand-over is counted"
    );
    let (code, c) = tb
        .post(
            CAROL,
            &format!("/api/v1/conversations/{id}/handback"),
            json!({}),
        )
        .await;
    assert_eq!(code, 200, "{c}");
    wait_conv(&tb, &id, "the bot has it again", |c| c["status"] == "bot").await;

    tb.restart().await;

    // Another turn without answer: the first of the new cycle, so the bot answers.
    let c = say(&tb, N1, &stuck, "where is my order please", 2).await;
    assert_eq!(c["status"], "bot", "a clean cycle after the transfer: {c}");
    assert_eq!(bot_notes(&c).len(), 1, "no second hand-over: {c}");
}
