//! The automation bot (contract "Automation"), end to end on the demo config
//! (config/automation-demo.toml) with a fake order service on loopback: the bot answers an
//! order question from the order service; a request for a person and a text the classifier is
//! unsure of hand over (queued, with the bot's note); a claim while the bot is computing its
//! answer stops it, and it never sends after the claim.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::common::*;

const DEMO: &str = include_str!("../../config/automation-demo.toml");

/// The business's order service: `GET /orders/{id}` answers the order as a JSON object. When
/// gated, each answer waits for a permit (the test holds the bot mid-turn).
struct Orders {
    base: String,
    hits: Arc<AtomicUsize>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

#[derive(Clone)]
struct OrdersState {
    hits: Arc<AtomicUsize>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

async fn order(State(st): State<OrdersState>, Path(id): Path<String>) -> Json<Value> {
    st.hits.fetch_add(1, Ordering::SeqCst);
    if let Some(gate) = &st.gate {
        if let Ok(p) = gate.acquire().await {
            p.forget();
        }
    }
    Json(json!({"order_id": id, "status": "shipped", "eta": "December 9"}))
}

impl Orders {
    async fn start(gated: bool) -> Orders {
        let hits = Arc::new(AtomicUsize::new(0));
        let gate = gated.then(|| Arc::new(tokio::sync::Semaphore::new(0)));
        let app = Router::new()
            .route("/orders/{id}", get(order))
            .with_state(OrdersState {
                hits: hits.clone(),
                gate: gate.clone(),
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Orders {
            base: format!("http://{addr}"),
            hits,
            gate,
        }
    }
}

/// A broker with the demo automation config, its orders at `orders`.
async fn broker(orders: &Orders) -> TB {
    let extra = DEMO.replace("http://127.0.0.1:8099", &orders.base);
    TB::start_with(|c| c.extra = format!("\n{extra}\n")).await
}

fn bot_outbound(c: &Value) -> usize {
    c["messages"].as_array().map_or(0, |ms| {
        ms.iter()
            .filter(|m| m["direction"] == "outbound" && m["author"] == "bot")
            .count()
    })
}

#[tokio::test]
async fn where_is_my_order_is_answered_by_the_bot_from_the_order_service() {
    let orders = Orders::start(false).await;
    let tb = broker(&orders).await;
    let customer = customer();
    let id = tb.open_conv(N1, &customer, "where is my order 12345").await;
    let sends = tb.graph.wait_sends(1, WAIT).await;
    assert_eq!(
        sends[0].body["text"]["body"], "Order 12345 is shipped; expected delivery December 9.",
        "{}",
        sends[0].body
    );
    let c = tb.conversation(&id).await;
    assert_eq!(c["status"], "bot", "{c}");
    assert_eq!(bot_outbound(&c), 1, "{c}");
    assert_eq!(orders.hits.load(Ordering::SeqCst), 1);
    // The other team has no bot: its conversations queue for humans as before.
    let other = tb.open_conv(N2, &customer, "where is my order 12345").await;
    assert_eq!(tb.conversation(&other).await["status"], "queued");
}

#[tokio::test]
async fn asking_for_a_person_hands_over_to_the_team_with_the_bots_note() {
    let orders = Orders::start(false).await;
    let tb = broker(&orders).await;
    let customer = customer();
    let id = tb
        .open_conv(N1, &customer, "I want to talk to a person about order 4567")
        .await;
    let c = wait_status(&tb, &id, "queued").await;
    assert_eq!(c["team"], "support", "{c}");
    let notes = bot_notes(&c);
    assert_eq!(notes.len(), 1, "{c}");
    for part in ["keyword", "Order id: 4567", "talk to a person"] {
        assert!(notes[0].contains(part), "{part:?} not in {:?}", notes[0]);
    }
    assert_eq!(bot_outbound(&c), 0, "{c}");
    // It waits in the team's queue: an agent takes it with `next`.
    let v = eventually("taken with next", WAIT, || async {
        match tb
            .post(ALICE, "/api/v1/teams/support/next", json!({}))
            .await
        {
            (200, v) => Ok(v),
            (s, v) => Err(format!("{s} {v}")),
        }
    })
    .await;
    assert_eq!(v["id"].as_str(), Some(id.as_str()), "{v}");
}

#[tokio::test]
async fn a_text_the_classifier_is_unsure_of_hands_over() {
    let orders = Orders::start(false).await;
    let tb = broker(&orders).await;
    let customer = customer();
    let id = tb.open_conv(N1, &customer, "qwxz vbnm plkj").await;
    let c = wait_status(&tb, &id, "queued").await;
    let notes = bot_notes(&c);
    assert!(
        notes.len() == 1 && notes[0].contains("low_confidence"),
        "{c}"
    );
    assert_eq!(bot_outbound(&c), 0, "{c}");
}

#[tokio::test]
async fn a_claim_while_the_bot_computes_stops_it_and_it_never_sends_after() {
    let orders = Orders::start(true).await;
    let tb = broker(&orders).await;
    let customer = customer();
    let id = tb.open_conv(N1, &customer, "where is my order 55555").await;
    // The bot is mid-turn: its order lookup is held by the order service.
    eventually("the lookup started", WAIT, || async {
        match orders.hits.load(Ordering::SeqCst) {
            0 => Err("no lookup yet".to_string()),
            _ => Ok(()),
        }
    })
    .await;
    let dropped = |text: &str| {
        metric_sum(
            text,
            "switchboard_bot_turns_total",
            &["outcome=\"dropped\""],
        )
        .unwrap_or(0.0)
    };
    let before = dropped(&tb.metrics().await);
    let (s, v) = tb.claim(ALICE, &id).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("assigned")), "{v}");
    // The claim left the bot's note (what it knew: the intent is not known yet, the order id is).
    let c = tb.conversation(&id).await;
    let notes = bot_notes(&c);
    assert!(
        notes.len() == 1 && notes[0].contains("claimed") && notes[0].contains("55555"),
        "{c}"
    );
    // Now the bot's answer arrives, for a state that is gone: dropped.
    if let Some(gate) = &orders.gate {
        gate.add_permits(1);
    }
    eventually("the stale turn dropped", WAIT, || async {
        let now = dropped(&tb.metrics().await);
        if now > before {
            Ok(())
        } else {
            Err(format!("dropped {now}, before {before}"))
        }
    })
    .await;
    let c = tb.conversation(&id).await;
    assert_eq!(c["status"], "assigned", "{c}");
    assert_eq!(bot_outbound(&c), 0, "{c}");
    assert_eq!(tb.graph.count(), 0, "{:?}", tb.graph.sends());
}
