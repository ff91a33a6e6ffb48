//! Business-initiated conversations (contract "Templates, business-initiated messages, numbers
//! and Meta's limits"): `POST /api/v1/conversations` starts a conversation owned by the caller
//! with an approved template, by phone or by user id, idempotently, refusing before any Graph
//! call what a template reply refuses; `[whatsapp] messaging_limit` caps the business-initiated
//! conversations of a rolling 24 h (429 `messaging_limit_reached`), counted once per customer,
//! exactly under concurrent requests and across a restart; `[[numbers]] coexistence = true`
//! defaults the number's `mps` to 20, shown in `/metrics`.

use std::time::Duration;

use crate::common::*;
use crate::templates::{approved_order_ready, order_ready, preference_webhook, template_webhook};
use serde_json::{json, Value};
use switchboard::clock::ManualClock;

fn start_body(number: &str, customer: &str, key: Option<&str>) -> Value {
    let mut body = json!({
        "number": number,
        "customer": customer,
        "template": {"name": "order_ready", "language": "en_US", "parameters": ["Ana", "A-17"]},
    });
    if let Some(k) = key {
        body["idempotency_key"] = json!(k);
    }
    body
}

async fn start(tb: &TB, token: &str, body: Value) -> (u16, Value) {
    tb.post(token, "/api/v1/conversations", body).await
}

/// An agent (support) who may own many conversations at once.
const CAMPAIGN: &str = "t-campaign";
const CAMPAIGN_AGENT: &str = "\n[[agents]]\nid = \"campaign\"\nname = \"Campaign\"\ntoken = \"t-campaign\"\nteams = [\"support\"]\nrole = \"agent\"\nmax_concurrent = 1000\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_starts_by_phone_or_user_id_owned_by_the_caller() {
    let tb = TB::start().await;
    approved_order_ready(&tb).await;
    let mut carol = Sse::connect(&tb, CAROL).await;
    let mut dave = Sse::connect(&tb, DAVE).await;
    let cust = customer();

    // By phone, in international format with its `+`.
    let (code, started) = start(&tb, BOB, start_body(N1, &format!("+{cust}"), Some("s1"))).await;
    assert_eq!(code, 201, "{started}");
    let id = started["id"].as_str().unwrap_or("").to_string();
    assert_eq!(started["customer"], json!(cust), "{started}");
    assert_eq!(started["customer_phone"], json!(cust));
    assert_eq!(started["assignee"], "bob");
    assert_eq!(started["status"], "assigned");
    assert_eq!(started["team"], "support");
    assert_eq!(started["number"], N1);
    let msg = &started["message"];
    assert_eq!(msg["type"], "template", "{started}");
    assert_eq!(msg["text"], "Hi Ana, order A-17 is ready.");
    assert_eq!(msg["author"], "bob");
    let msg_id = msg["id"].as_str().unwrap_or("").to_string();

    // Entitled callers hear of it like any other conversation.
    let ev = carol.wait_type("conversation.created", &id).await;
    assert_eq!(ev.data["conversation"]["assignee"], "bob", "{:?}", ev.data);
    carol.wait_type("message.created", &id).await;

    let sends = tb.graph.wait_sends(1, WAIT).await;
    assert_eq!(sends[0].phone_number_id, N1);
    assert_eq!(sends[0].body["to"], json!(cust), "{:?}", sends[0].body);
    assert_eq!(sends[0].body["type"], "template");
    assert_eq!(sends[0].body["template"]["name"], "order_ready");
    tb.wait_status(&id, &msg_id, "accepted").await;

    // The same key again: the same conversation and message, nothing sent again.
    let (code, again) = start(&tb, BOB, start_body(N1, &cust, Some("s1"))).await;
    assert_eq!(code, 201, "{again}");
    assert_eq!(again["id"], json!(id));
    assert_eq!(again["message"]["id"], json!(msg_id));
    let shown = tb.conversation(&id).await;
    let outbound: Vec<&Value> = shown["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["direction"] == "outbound")
        .collect();
    assert_eq!(outbound.len(), 1, "{shown}");
    assert_eq!(tb.graph.sends().len(), 1, "the retry sent nothing");

    // The customer's answer lands in the started conversation (its phone is indexed), which
    // stays the caller's.
    tb.send_text(N1, &cust, "thanks!").await;
    assert_eq!(tb.conv_id(N1, &cust).await, id);
    let after = tb.conversation(&id).await;
    assert_eq!(after["assignee"], "bob", "{after}");
    assert!(!after["window_expires_at"].is_null(), "{after}");

    // By user id: sent to Meta's `recipient`.
    let user = format!("US.{}", customer());
    let (code, by_user) = start(&tb, BOB, start_body(N1, &user, None)).await;
    assert_eq!(code, 201, "{by_user}");
    assert_eq!(by_user["customer"], json!(user));
    assert_eq!(by_user["customer_user_id"], json!(user));
    assert!(by_user["customer_phone"].is_null(), "{by_user}");
    assert_eq!(by_user["assignee"], "bob");
    let user_conv = by_user["id"].as_str().unwrap_or("").to_string();
    assert_ne!(user_conv, id);
    let sends = tb.graph.wait_sends(2, WAIT).await;
    let to_user = sends
        .iter()
        .find(|s| s.body["recipient"] == json!(user))
        .unwrap_or_else(|| panic!("no send to the user id: {sends:?}"));
    assert!(to_user.body.get("to").is_none(), "{:?}", to_user.body);

    // A sales agent hears of neither: once dave hears of a later sales conversation, nothing of
    // support's reached him.
    let sales = tb.open_conv(N2, &customer(), "hello sales").await;
    dave.wait_type("conversation.created", &sales).await;
    let leaked: Vec<&SseEvent> = dave
        .seen
        .iter()
        .filter(|e| {
            e.data["conversation"]["id"] == json!(id)
                || e.data["conversation"]["id"] == json!(user_conv)
        })
        .collect();
    assert!(leaked.is_empty(), "dave heard of support's: {leaked:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customers_existing_conversation_is_started_by_the_rules_of_a_claim() {
    let tb = TB::start().await;
    approved_order_ready(&tb).await;

    // Waiting in the caller's team: the caller takes it.
    let waiting = customer();
    let conv = tb.open_conv(N1, &waiting, "hello").await;
    let (code, body) = start(&tb, BOB, start_body(N1, &waiting, None)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        body["id"],
        json!(conv),
        "the customer's conversation, not a new one"
    );
    assert_eq!(body["assignee"], "bob");

    // Owned by a teammate: 409 naming the owner, as a claim.
    let (owned, owned_cust) = claimed(&tb, N1, ALICE).await;
    let (code, body) = start(&tb, BOB, start_body(N1, &owned_cust, None)).await;
    assert_eq!((code, err_code(&body)), (409, "already_assigned"), "{body}");
    assert_eq!(body["error"]["assignee"], "alice");
    assert_eq!(tb.conversation(&owned).await["assignee"], "alice");

    // Open in a team the caller is not in: refused, nothing said of it.
    let elsewhere = customer();
    tb.open_conv(N1, &elsewhere, "hello").await;
    let (code, body) = start(&tb, DAVE, start_body(N1, &elsewhere, None)).await;
    assert_eq!(
        (code, err_code(&body)),
        (409, "conversation_elsewhere"),
        "{body}"
    );
    assert!(body["error"].get("assignee").is_none(), "{body}");

    // Resolved: reopened, owned by the caller, in the caller's team when not in its own.
    let (code, _) = tb.resolve(BOB, &conv).await;
    assert_eq!(code, 200);
    let (code, body) = start(&tb, DAVE, start_body(N1, &waiting, None)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["id"], json!(conv));
    assert_eq!(body["status"], "assigned");
    assert_eq!(body["assignee"], "dave");
    assert_eq!(body["team"], "sales", "{body}");

    let sends = tb.graph.wait_sends(2, WAIT).await;
    for s in &sends {
        assert_eq!(
            s.body["to"],
            json!(waiting),
            "only the started ones: {sends:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_start_sends_nothing_and_stores_nothing() {
    let tb = TB::start().await;
    crate::templates::startup_sync(&tb).await;
    let (code, created) = tb.post(ROOT, "/api/v1/templates", order_ready()).await;
    assert_eq!(code, 201, "{created}");
    let cust = customer();

    // Not approved yet.
    let (code, body) = start(&tb, BOB, start_body(N1, &cust, Some("k"))).await;
    assert_eq!(
        (code, err_code(&body)),
        (422, "template_not_approved"),
        "{body}"
    );
    let approved = template_webhook(
        "message_template_status_update",
        json!({"event": "APPROVED", "message_template_id": created["id"],
               "message_template_name": "order_ready", "message_template_language": "en_US",
               "reason": "NONE"}),
    );
    assert_eq!(tb.webhook(&approved).await, 200);

    let mut bad: Vec<Value> = Vec::new();
    for params in [json!([]), json!(["Ana"]), json!(["Ana", "A-17", "extra"])] {
        let mut b = start_body(N1, &cust, Some("k"));
        b["template"]["parameters"] = params;
        bad.push(b);
    }
    for customer in ["", "12ab5678", "123", "+", "1234567890123456", "us.123"] {
        bad.push(start_body(N1, customer, Some("k")));
    }
    bad.push(start_body("999999999", &cust, Some("k")));
    bad.push(json!({"number": N1, "customer": cust}));
    bad.push(json!({"customer": cust, "template": {"name": "order_ready", "language": "en_US"}}));
    let mut no_template = start_body(N1, &cust, Some("k"));
    no_template["template"]["name"] = json!("nope");
    bad.push(no_template);
    for b in bad {
        let (code, answer) = start(&tb, BOB, b.clone()).await;
        assert_eq!(
            (code, err_code(&answer)),
            (400, "invalid_request"),
            "{b}: {answer}"
        );
    }

    // A marketing template to a customer who stopped marketing.
    let mut sale = order_ready();
    sale["name"] = json!("spring_sale");
    sale["category"] = json!("MARKETING");
    let (code, created) = tb.post(ROOT, "/api/v1/templates", sale).await;
    assert_eq!(code, 201, "{created}");
    let approved = template_webhook(
        "message_template_status_update",
        json!({"event": "APPROVED", "message_template_id": created["id"],
               "message_template_name": "spring_sale", "message_template_language": "en_US",
               "reason": "NONE"}),
    );
    assert_eq!(tb.webhook(&approved).await, 200);
    assert_eq!(
        tb.webhook(&preference_webhook(N1, &cust, "stop", now()))
            .await,
        200
    );
    let mut marketing = start_body(N1, &cust, Some("k"));
    marketing["template"]["name"] = json!("spring_sale");
    let (code, body) = start(&tb, BOB, marketing).await;
    assert_eq!(
        (code, err_code(&body)),
        (422, "marketing_opted_out"),
        "{body}"
    );

    // An agent at its max_concurrent (alice: 2) takes nothing more.
    claimed(&tb, N1, ALICE).await;
    claimed(&tb, N1, ALICE).await;
    let (code, body) = start(&tb, ALICE, start_body(N1, &cust, Some("k"))).await;
    assert_eq!((code, err_code(&body)), (409, "capacity_reached"), "{body}");

    assert_eq!(tb.graph.count(), 0, "nothing reached Meta");
    assert!(tb.conv_of(N1, &cust).await.is_none(), "nothing stored");
}

fn ms_now() -> i64 {
    now() * 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_messaging_limit_refuses_one_more_counts_once_per_customer_and_survives_a_restart() {
    // The gauges are process-wide.
    if reran_alone!() {
        return;
    }
    let clock = ManualClock::new(ms_now());
    let mut tb = TB::start_with_clock(
        |c| {
            c.whatsapp_extra = "messaging_limit = 3".into();
            c.extra = CAMPAIGN_AGENT.into();
        },
        clock.clone(),
    )
    .await;
    approved_order_ready(&tb).await;

    // One opening for `first`, though it gets templates from both numbers.
    let first = customer();
    let (code, body) = start(&tb, CAMPAIGN, start_body(N1, &first, None)).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = start(&tb, DAVE, start_body(N2, &first, None)).await;
    assert_eq!(code, 201, "counted once per customer: {body}");

    // Inside the customer-service window a template opens nothing.
    let writing = customer();
    let conv = tb.open_conv(N1, &writing, "hello").await;
    tb.must_claim(BOB, &conv).await;
    let path = format!("/api/v1/conversations/{conv}/messages");
    let template = json!({"template": {"name": "order_ready", "language": "en_US",
                          "parameters": ["Ana", "A-17"]}, "idempotency_key": "in-window"});
    let (code, body) = tb.post(BOB, &path, template).await;
    assert_eq!(code, 202, "{body}");

    // Six at once for two slots left: exactly two win, the others are refused before Meta.
    let customers: Vec<String> = (0..6).map(|_| customer()).collect();
    let bodies: Vec<Value> = customers.iter().map(|c| start_body(N1, c, None)).collect();
    let answers = futures_util::future::join_all(bodies.iter().map(|b| {
        tb.request(
            reqwest::Method::POST,
            Some(CAMPAIGN),
            "/api/v1/conversations",
            Some(b),
        )
    }))
    .await;
    let mut won = Vec::new();
    for (c, (code, body, headers)) in customers.iter().zip(&answers) {
        match *code {
            201 => won.push(c.clone()),
            429 => {
                assert_eq!(err_code(body), "messaging_limit_reached", "{body}");
                let retry: u64 = headers
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("no Retry-After: {headers:?}"));
                assert!(retry > 0 && retry <= 86_400, "{retry}");
            }
            other => panic!("{c}: {other} {body}"),
        }
    }
    assert_eq!(won.len(), 2, "{answers:?}");

    // A template reply to a customer whose window closed opens one too: refused now.
    let old = customer();
    tb.send_text_at(N1, &old, now() - 2 * SECS_PER_DAY, "hello")
        .await;
    let old_conv = tb.conv_id(N1, &old).await;
    tb.must_claim(BOB, &old_conv).await;
    let template = json!({"template": {"name": "order_ready", "language": "en_US",
                          "parameters": ["Ana", "A-17"]}, "idempotency_key": "closed"});
    let (code, body) = tb
        .post(
            BOB,
            &format!("/api/v1/conversations/{old_conv}/messages"),
            template,
        )
        .await;
    assert_eq!(
        (code, err_code(&body)),
        (429, "messaging_limit_reached"),
        "{body}"
    );

    // Two for `first`, one in the window, two winners; nothing for the refused.
    let sends = tb.graph.wait_sends(5, WAIT).await;
    let refused: Vec<&String> = customers.iter().filter(|c| !won.contains(c)).collect();
    for s in &sends {
        let to = s.body["to"].as_str().unwrap_or("");
        assert!(
            !refused.iter().any(|c| c.as_str() == to) && to != old,
            "a refused send reached Meta: {:?}",
            s.body
        );
    }
    let metrics = tb.metrics().await;
    assert_eq!(
        metric_sum(&metrics, "switchboard_messaging_limit", &[]),
        Some(3.0)
    );
    assert_eq!(
        metric_sum(
            &metrics,
            "switchboard_business_initiated_conversations_24h",
            &[]
        ),
        Some(3.0),
        "{metrics}"
    );

    // Kept across a restart: still full, and `first` still counted once.
    tb.restart().await;
    let (code, body) = start(&tb, CAMPAIGN, start_body(N1, &customer(), None)).await;
    assert_eq!(
        (code, err_code(&body)),
        (429, "messaging_limit_reached"),
        "{body}"
    );
    let mut again = start_body(N1, &first, None);
    again["template"]["parameters"] = json!(["Ana", "B-2"]);
    let (code, body) = start(&tb, CAMPAIGN, again).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        metric_sum(
            &tb.metrics().await,
            "switchboard_business_initiated_conversations_24h",
            &[]
        ),
        Some(3.0)
    );

    // 24 hours after the openings, their slots are free again.
    clock.advance(Duration::from_secs(24 * 3600 + 60));
    let (code, body) = start(&tb, CAMPAIGN, start_body(N1, &customer(), None)).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(
        metric_sum(
            &tb.metrics().await,
            "switchboard_business_initiated_conversations_24h",
            &[]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coexistence_number_defaults_to_20_mps_in_metrics() {
    let (coexisting, explicit) = (uniq("9"), uniq("8"));
    let tb = TB::start_with(|c| {
        c.extra = format!(
            "\n[[numbers]]\nphone_number_id = \"{coexisting}\"\ndefault_team = \"support\"\ncoexistence = true\n\
             \n[[numbers]]\nphone_number_id = \"{explicit}\"\ndefault_team = \"support\"\ncoexistence = true\nmps = 35\n"
        );
    })
    .await;
    let metrics = tb.metrics().await;
    let mps = |number: &str| {
        metric_sum(
            &metrics,
            "switchboard_number_mps",
            &[&format!("number=\"{number}\"")],
        )
    };
    assert_eq!(mps(&coexisting), Some(20.0), "{metrics}");
    assert_eq!(mps(&explicit), Some(35.0), "an explicit mps wins");
    assert_eq!(mps(N2), Some(80.0));
}
