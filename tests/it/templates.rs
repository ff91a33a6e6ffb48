//! The template registry (contract "Templates, business-initiated messages, numbers and Meta's
//! limits", first bullet): `POST /api/v1/templates` submits to Meta and registers the template;
//! `GET /api/v1/templates` shows status, quality and category as the template webhooks and the
//! sync from Meta's listing keep them, with each template's status history, across restarts.

use crate::common::*;
use serde_json::{json, Value};

pub(crate) fn order_ready() -> Value {
    json!({
        "name": "order_ready",
        "language": "en_US",
        "category": "UTILITY",
        "components": [{"type": "BODY", "text": "Hi {{1}}, order {{2}} is ready."}],
    })
}

/// A template webhook change, as Meta sends it (`field` and its `value`).
pub(crate) fn template_webhook(field: &str, value: Value) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "time": 1751247548, "changes": [{"field": field, "value": value}]}],
    })
}

/// Waits for the start-up sync's listing (the fake serves Meta's copy, which does not follow
/// the webhooks a test sends: a listing served later would put its statuses back).
pub(crate) async fn startup_sync(tb: &TB) {
    eventually("start-up sync", WAIT, || async {
        if tb.graph.template_lists() > 0 {
            Ok(())
        } else {
            Err("no listing yet".to_string())
        }
    })
    .await;
}

async fn templates(tb: &TB, token: &str) -> Vec<Value> {
    let (code, body) = tb.get(token, "/api/v1/templates").await;
    assert_eq!(code, 200, "{body}");
    body["templates"].as_array().cloned().unwrap_or_default()
}

async fn template(tb: &TB, name: &str, language: &str) -> Option<Value> {
    templates(tb, BOB)
        .await
        .into_iter()
        .find(|t| t["name"] == json!(name) && t["language"] == json!(language))
}

fn statuses(t: &Value) -> Vec<String> {
    t["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .map(|c| c["status"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_template_follows_the_webhooks_and_survives_a_restart() {
    let mut tb = TB::start().await;
    // The start-up sync (of an empty account) is done before anything is created.
    startup_sync(&tb).await;
    let (code, created) = tb.post(ROOT, "/api/v1/templates", order_ready()).await;
    assert_eq!(code, 201, "{created}");
    assert_eq!(created["status"], "PENDING");
    let posts = tb.graph.template_posts();
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].0, WABA_ID, "submitted to the configured WABA");
    assert_eq!(posts[0].1["name"], "order_ready");
    assert_eq!(posts[0].1["components"], order_ready()["components"]);
    let id = created["id"].as_str().unwrap_or("").to_string();
    assert!(!id.is_empty(), "Meta's id kept: {created}");

    let approved = template_webhook(
        "message_template_status_update",
        json!({"event": "APPROVED", "message_template_id": id.parse::<u64>().unwrap(),
               "message_template_name": "order_ready", "message_template_language": "en_US",
               "reason": "NONE", "message_template_category": "UTILITY"}),
    );
    // Redelivered: applied once.
    assert_eq!(tb.webhook(&approved).await, 200);
    assert_eq!(tb.webhook(&approved).await, 200);
    let quality = template_webhook(
        "message_template_quality_update",
        json!({"previous_quality_score": "UNKNOWN", "new_quality_score": "GREEN",
               "message_template_id": id, "message_template_name": "order_ready",
               "message_template_language": "en_US"}),
    );
    assert_eq!(tb.webhook(&quality).await, 200);
    let category = template_webhook(
        "template_category_update",
        json!({"message_template_id": id, "message_template_name": "order_ready",
               "message_template_language": "en_US", "previous_category": "UTILITY",
               "new_category": "MARKETING"}),
    );
    assert_eq!(tb.webhook(&category).await, 200);

    let t = template(&tb, "order_ready", "en_US").await.expect("listed");
    assert_eq!(t["status"], "APPROVED", "{t}");
    assert_eq!(t["quality"], "GREEN", "{t}");
    assert_eq!(t["category"], "MARKETING", "{t}");
    assert_eq!(t["components"], order_ready()["components"]);
    assert_eq!(statuses(&t), ["PENDING", "APPROVED"], "{t}");

    let paused = template_webhook(
        "message_template_status_update",
        json!({"event": "PAUSED", "message_template_id": id,
               "message_template_name": "order_ready", "message_template_language": "en_US",
               "reason": "LOW_QUALITY"}),
    );
    assert_eq!(tb.webhook(&paused).await, 200);
    let before = template(&tb, "order_ready", "en_US").await.expect("listed");
    assert_eq!(statuses(&before), ["PENDING", "APPROVED", "PAUSED"]);
    assert_eq!(before["history"][2]["reason"], "LOW_QUALITY");

    // The sync at start-up finds Meta's copy still PENDING (the fake does not follow webhooks):
    // set Meta's side to what the webhooks said so the restart shows what storage kept.
    tb.graph.set_template_status("order_ready", "PAUSED");
    tb.restart().await;
    let after = template(&tb, "order_ready", "en_US").await.expect("kept");
    assert_eq!(after["status"], "PAUSED");
    assert_eq!(statuses(&after), statuses(&before), "history kept: {after}");
    assert_eq!(after["quality"], "GREEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_create_and_a_bad_template_never_reaches_meta() {
    let tb = TB::start().await;
    for token in [BOB, CAROL] {
        let (code, body) = tb.post(token, "/api/v1/templates", order_ready()).await;
        assert_eq!((code, err_code(&body)), (403, "forbidden"), "{body}");
    }
    let mut bad_name = order_ready();
    bad_name["name"] = json!("Order Ready");
    let mut bad_category = order_ready();
    bad_category["category"] = json!("PROMOTION");
    let mut no_components = order_ready();
    no_components["components"] = json!([]);
    for body in [bad_name, bad_category, no_components, json!({})] {
        let (code, answer) = tb.post(ROOT, "/api/v1/templates", body.clone()).await;
        assert_eq!(
            (code, err_code(&answer)),
            (400, "invalid_request"),
            "{body}"
        );
    }
    assert!(tb.graph.template_posts().is_empty(), "nothing submitted");
    assert!(templates(&tb, ROOT).await.is_empty());

    let (code, _) = tb.post(ROOT, "/api/v1/templates", order_ready()).await;
    assert_eq!(code, 201);
    let (code, body) = tb.post(ROOT, "/api/v1/templates", order_ready()).await;
    assert_eq!((code, err_code(&body)), (409, "already_exists"), "{body}");
    assert_eq!(tb.graph.template_posts().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_picks_up_templates_created_elsewhere_and_status_changes() {
    let mut tb = TB::start().await;
    // Three, so the listing takes two pages.
    for (name, lang, status) in [
        ("welcome", "en_US", "APPROVED"),
        ("welcome", "es", "APPROVED"),
        ("spring_sale", "en_US", "PENDING"),
    ] {
        tb.graph.add_template(json!({
            "id": format!("77{}{}", name.len(), lang.len()),
            "name": name, "language": lang, "status": status, "category": "MARKETING",
            "quality_score": {"score": "GREEN"},
            "components": [{"type": "BODY", "text": format!("{name} {{{{1}}}}")}],
        }));
    }
    tb.restart().await;
    let listed = eventually("sync at start-up", WAIT, || async {
        let ts = templates(&tb, BOB).await;
        if ts.len() == 3 {
            Ok(ts)
        } else {
            Err(format!("{ts:?}"))
        }
    })
    .await;
    let es = listed
        .iter()
        .find(|t| t["name"] == "welcome" && t["language"] == "es")
        .expect("welcome es");
    assert_eq!(es["status"], "APPROVED");
    assert_eq!(es["quality"], "GREEN");
    assert_eq!(es["components"][0]["text"], "welcome {{1}}");

    tb.graph.set_template_status("spring_sale", "REJECTED");
    tb.restart().await;
    let t = eventually("status change synced", WAIT, || async {
        match template(&tb, "spring_sale", "en_US").await {
            Some(t) if t["status"] == "REJECTED" => Ok(t),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(statuses(&t), ["PENDING", "REJECTED"], "{t}");
}

/// Creates `order_ready` (en_US) through the API and approves it by webhook.
pub(crate) async fn approved_order_ready(tb: &TB) {
    startup_sync(tb).await;
    let (code, created) = tb.post(ROOT, "/api/v1/templates", order_ready()).await;
    assert_eq!(code, 201, "{created}");
    let approved = template_webhook(
        "message_template_status_update",
        json!({"event": "APPROVED", "message_template_id": created["id"],
               "message_template_name": "order_ready", "message_template_language": "en_US",
               "reason": "NONE"}),
    );
    assert_eq!(tb.webhook(&approved).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_template_reaches_a_customer_outside_the_window() {
    let tb = TB::start().await;
    startup_sync(&tb).await;
    let cust = customer();
    // The customer wrote two days ago: the window is closed.
    tb.send_text_at(N1, &cust, now() - 2 * SECS_PER_DAY, "hello")
        .await;
    let conv = tb.conv_id(N1, &cust).await;
    tb.must_claim(BOB, &conv).await;
    let (code, body) = tb.reply(BOB, &conv, "hi again", "k-text").await;
    assert_eq!((code, err_code(&body)), (422, "window_closed"), "{body}");

    let (code, created) = tb.post(ROOT, "/api/v1/templates", order_ready()).await;
    assert_eq!(code, 201, "{created}");
    let send = |params: Value, key: &str, language: &str| {
        json!({"template": {"name": "order_ready", "language": language, "parameters": params},
               "idempotency_key": key})
    };
    let path = format!("/api/v1/conversations/{conv}/messages");
    let (code, body) = tb
        .post(BOB, &path, send(json!(["Ana", "A-17"]), "k1", "en_US"))
        .await;
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
    for wrong in [json!([]), json!(["Ana"]), json!(["Ana", "A-17", "extra"])] {
        let (code, body) = tb
            .post(BOB, &path, send(wrong.clone(), "k2", "en_US"))
            .await;
        assert_eq!(
            (code, err_code(&body)),
            (400, "invalid_request"),
            "{wrong}: {body}"
        );
    }
    assert_eq!(tb.graph.count(), 0, "nothing reached Meta");

    // `en` falls back to the approved `en_US` variant.
    let (code, msg) = tb
        .post(BOB, &path, send(json!(["Ana", "A-17"]), "k3", "en"))
        .await;
    assert_eq!(code, 202, "{msg}");
    assert_eq!(msg["text"], "Hi Ana, order A-17 is ready.", "{msg}");
    let sends = tb.graph.wait_sends(1, WAIT).await;
    let body = &sends[0].body;
    assert_eq!(body["type"], "template", "{body}");
    assert_eq!(body["template"]["name"], "order_ready");
    assert_eq!(body["template"]["language"]["code"], "en_US");
    assert_eq!(
        body["template"]["components"],
        json!([{"type": "body", "parameters": [
            {"type": "text", "text": "Ana"}, {"type": "text", "text": "A-17"}]}]),
        "{body}"
    );
    let id = msg["id"].as_str().unwrap_or("").to_string();
    tb.wait_status(&conv, &id, "accepted").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_sends_a_template() {
    let tb = TB::start().await;
    approved_order_ready(&tb).await;
    let cust = customer();
    tb.send_text_at(N1, &cust, now() - 2 * SECS_PER_DAY, "hello")
        .await;
    let conv = tb.conv_id(N1, &cust).await;
    let path = format!("/api/v1/conversations/{conv}/messages");
    let body = json!({"template": {"name": "order_ready", "language": "en_US",
                      "parameters": ["Ana", "A-17"]}, "idempotency_key": "k"});
    let (code, answer) = tb.post(BOB, &path, body.clone()).await;
    assert_eq!((code, err_code(&answer)), (403, "not_owner"), "{answer}");
    let (code, answer) = tb
        .post(
            BOB,
            &path,
            json!({"template": {"name": "nope", "language": "en_US"}}),
        )
        .await;
    assert_eq!(
        (code, err_code(&answer)),
        (400, "invalid_request"),
        "{answer}"
    );
    assert_eq!(tb.graph.count(), 0);
}

/// Meta's `user_preferences` change: `customer` stops or resumes marketing messages on `number`.
pub(crate) fn preference_webhook(number: &str, customer: &str, value: &str, ts: i64) -> Value {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"field": "user_preferences", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": display_of(number), "phone_number_id": number},
            "contacts": [{"profile": {"name": "Ana"}, "wa_id": customer}],
            "user_preferences": [{"wa_id": customer, "detail": "User requested to stop marketing messages",
                                  "category": "marketing_messages", "value": value, "timestamp": ts}],
        }}]}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marketing_template_is_refused_to_a_customer_who_stopped_marketing() {
    let mut tb = TB::start().await;
    startup_sync(&tb).await;
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
    let cust = customer();
    let conv = tb.open_conv(N1, &cust, "hello").await;
    tb.must_claim(BOB, &conv).await;
    let path = format!("/api/v1/conversations/{conv}/messages");
    let send = |key: &str| {
        json!({"template": {"name": "spring_sale", "language": "en_US",
                            "parameters": ["Ana", "A-17"]}, "idempotency_key": key})
    };
    assert_eq!(
        tb.webhook(&preference_webhook(N1, &cust, "stop", now()))
            .await,
        200
    );
    // An older `resume` arriving late changes nothing.
    assert_eq!(
        tb.webhook(&preference_webhook(N1, &cust, "resume", now() - 60))
            .await,
        200
    );
    let (code, body) = tb.post(BOB, &path, send("k1")).await;
    assert_eq!(
        (code, err_code(&body)),
        (422, "marketing_opted_out"),
        "{body}"
    );
    // Kept across a restart.
    tb.graph.set_template_status("spring_sale", "APPROVED");
    tb.restart().await;
    let (code, body) = tb.post(BOB, &path, send("k2")).await;
    assert_eq!(
        (code, err_code(&body)),
        (422, "marketing_opted_out"),
        "{body}"
    );
    assert_eq!(tb.graph.count(), 0);

    assert_eq!(
        tb.webhook(&preference_webhook(N1, &cust, "resume", now() + 1))
            .await,
        200
    );
    let (code, body) = tb.post(BOB, &path, send("k3")).await;
    assert_eq!(code, 202, "{body}");
    tb.graph.wait_sends(1, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meta_pausing_a_template_fails_the_send_and_pauses_it() {
    let tb = TB::start().await;
    approved_order_ready(&tb).await;
    let cust = customer();
    let conv = tb.open_conv(N1, &cust, "hello").await;
    tb.must_claim(BOB, &conv).await;
    tb.graph.push(GraphReply::meta(
        400,
        132015,
        "Template is Paused",
        "Template is paused due to low quality",
    ));
    let path = format!("/api/v1/conversations/{conv}/messages");
    let (code, msg) = tb
        .post(
            BOB,
            &path,
            json!({"template": {"name": "order_ready", "language": "en_US",
                   "parameters": ["Ana", "A-17"]}, "idempotency_key": "k"}),
        )
        .await;
    assert_eq!(code, 202, "{msg}");
    let id = msg["id"].as_str().unwrap_or("").to_string();
    let failed = tb.wait_status(&conv, &id, "failed").await;
    assert_eq!(failed["error"]["code"], 132015, "{failed}");
    assert_eq!(failed["error"]["reason"], "template_paused", "{failed}");
    let t = template(&tb, "order_ready", "en_US").await.expect("listed");
    assert_eq!(t["status"], "PAUSED", "{t}");
    assert_eq!(statuses(&t), ["PENDING", "APPROVED", "PAUSED"]);
    let (code, body) = tb
        .post(
            BOB,
            &path,
            json!({"template": {"name": "order_ready", "language": "en_US",
                   "parameters": ["Ana", "A-17"]}, "idempotency_key": "k2"}),
        )
        .await;
    assert_eq!(
        (code, err_code(&body)),
        (422, "template_not_approved"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_template_is_in_the_audit_log() {
    let tb = TB::start().await;
    startup_sync(&tb).await;
    let (code, created) = tb.post(ROOT, "/api/v1/templates", order_ready()).await;
    assert_eq!(code, 201, "{created}");
    let (s, log) = tb.get(ROOT, "/api/v1/audit?limit=1").await;
    assert_eq!(s, 200, "{log}");
    let e = &log["entries"][0];
    assert_eq!(
        (&e["action"], &e["actor"], &e["target"]),
        (
            &json!("template.create"),
            &json!("root"),
            &json!("order_ready/en_US")
        ),
        "{log}"
    );
    assert_eq!(e["before"], Value::Null, "{e}");
    assert_eq!(
        (
            &e["after"]["id"],
            &e["after"]["category"],
            &e["after"]["status"]
        ),
        (&created["id"], &json!("UTILITY"), &json!("PENDING")),
        "{e}"
    );
    assert_eq!(e["after"]["components"], order_ready()["components"], "{e}");
    // A refused creation (a bad name) is no admin change: nothing more is logged.
    let mut bad = order_ready();
    bad["name"] = json!("Order Ready");
    let (code, _) = tb.post(ROOT, "/api/v1/templates", bad).await;
    assert_eq!(code, 400);
    let (_, again) = tb.get(ROOT, "/api/v1/audit?limit=1").await;
    assert_eq!(again["entries"][0]["seq"], e["seq"], "{again}");
}
