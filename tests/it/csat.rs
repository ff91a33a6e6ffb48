//! CSAT by template (`[csat] template`, `language`): after a resolve the broker sends the
//! approved rating template, each quick-reply button carrying its score as payload, in the body
//! Meta's Cloud API takes; the customer's tap (a `button` message) is stored as the answer and
//! counted for the team and agent that resolved; a template that cannot be sent falls back to
//! the text question.

use crate::common::*;
use serde_json::{json, Value};

/// The rating template as an admin submits it: a body and five quick-reply buttons, best first
/// (so the titles, not the positions, give the scores).
fn rate_us() -> Value {
    let buttons: Vec<Value> = (1..=5)
        .rev()
        .map(|n| json!({"type": "QUICK_REPLY", "text": n.to_string()}))
        .collect();
    json!({
        "name": "rate_us",
        "language": "en_US",
        "category": "UTILITY",
        "components": [
            {"type": "BODY", "text": "How did we do? Tap a score."},
            {"type": "BUTTONS", "buttons": buttons},
        ],
    })
}

const CSAT_TEMPLATE: &str =
    "\n[csat]\nenabled = true\ntemplate = \"rate_us\"\nlanguage = \"en_US\"\n";

/// Waits for the start-up template sync, then creates `rate_us` and approves it by webhook.
async fn approved_rate_us(tb: &TB) {
    crate::templates::startup_sync(tb).await;
    let (code, created) = tb.post(ROOT, "/api/v1/templates", rate_us()).await;
    assert_eq!(code, 201, "{created}");
    let approved = json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "time": 1751247548, "changes": [{
            "field": "message_template_status_update",
            "value": {"event": "APPROVED", "message_template_id": created["id"],
                      "message_template_name": "rate_us", "message_template_language": "en_US",
                      "reason": "NONE"}}]}],
    });
    assert_eq!(tb.webhook(&approved).await, 200);
    eventually("rate_us approved", WAIT, || async {
        let (_, v) = tb.get(ROOT, "/api/v1/templates").await;
        let ok = v["templates"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["name"] == "rate_us" && t["status"] == "APPROVED");
        if ok {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;
}

/// A conversation alice claimed, answered and resolved; its id.
async fn resolved_by_alice(tb: &TB, customer: &str) -> String {
    tb.send_text(N1, customer, "help").await;
    let id = tb.conv_id(N1, customer).await;
    tb.must_claim(ALICE, &id).await;
    tb.must_reply(ALICE, &id, "done").await;
    let (s, v) = tb.resolve(ALICE, &id).await;
    assert_eq!(s, 200, "{v}");
    id
}

/// The customer's tap on a template's quick-reply button, as Meta delivers it.
fn button_tap(customer: &str, payload: &str, title: &str) -> Value {
    let msg = json!({
        "from": customer,
        "id": format!("wamid.tap{customer}"),
        "timestamp": now().to_string(),
        "type": "button",
        "button": {"payload": payload, "text": title},
    });
    envelope(vec![entry(vec![change(N1, vec![msg], vec![])])])
}

fn window() -> String {
    let now = chrono::Utc::now();
    format!(
        "from={}&to={}",
        (now - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        (now + chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    )
}

fn row<'a>(v: &'a Value, list: &str, field: &str, key: &str) -> &'a Value {
    v[list]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r[field] == key))
        .unwrap_or_else(|| panic!("no row {key} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolve_sends_the_rating_template_and_the_tapped_score_counts() {
    let tb = TB::start_with(|c| c.extra = CSAT_TEMPLATE.into()).await;
    approved_rate_us(&tb).await;
    let customer = customer();
    let id = resolved_by_alice(&tb, &customer).await;

    let sends = tb.graph.wait_sends(2, WAIT).await;
    let body = &sends[1].body;
    assert_eq!(body["messaging_product"], "whatsapp", "{body}");
    assert_eq!(body["to"], customer.as_str(), "{body}");
    assert_eq!(body["type"], "template", "{body}");
    assert_eq!(body["template"]["name"], "rate_us", "{body}");
    assert_eq!(body["template"]["language"], json!({"code": "en_US"}));
    // Buttons titled 5..1: each payload is its title's score, at its index.
    let expected: Vec<Value> = (0..5)
        .map(|i| {
            json!({"type": "button", "sub_type": "quick_reply", "index": i.to_string(),
                   "parameters": [{"type": "payload", "payload": format!("csat:{}", 5 - i)}]})
        })
        .collect();
    assert_eq!(body["template"]["components"], json!(expected), "{body}");
    let c = tb.conversation(&id).await;
    let asked = c["messages"]
        .as_array()
        .and_then(|m| m.last())
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        (asked["type"].clone(), asked["text"].clone()),
        (json!("template"), json!("How did we do? Tap a score.")),
        "{c}"
    );

    // The tap on "4" answers it: stored, counted for support and alice, not reopened.
    assert_eq!(tb.webhook(&button_tap(&customer, "csat:4", "4")).await, 200);
    let c = eventually("the answer stored", WAIT, || async {
        let c = tb.conversation(&id).await;
        let kinds: Vec<&str> = c["messages"]
            .as_array()
            .map(|m| m.iter().filter_map(|m| m["type"].as_str()).collect())
            .unwrap_or_default();
        if kinds.contains(&"button") {
            Ok(c)
        } else {
            Err(c.to_string())
        }
    })
    .await;
    assert_eq!(c["status"], "resolved", "{c}");
    let w = window();
    let (s, teams) = tb.get(ROOT, &format!("/api/v1/reports/teams?{w}")).await;
    assert_eq!(s, 200, "{teams}");
    let support = row(&teams, "teams", "team", "support");
    assert_eq!(
        (support["csat_answers"].clone(), support["csat_avg"].clone()),
        (json!(1), json!(4.0)),
        "{support}"
    );
    let (s, agents) = tb.get(ROOT, &format!("/api/v1/reports/agents?{w}")).await;
    assert_eq!(s, 200, "{agents}");
    let alice = row(&agents, "agents", "agent", "alice");
    assert_eq!(
        (alice["csat_answers"].clone(), alice["csat_avg"].clone()),
        (json!(1), json!(4.0)),
        "{alice}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rating_template_not_approved_falls_back_to_the_text_question() {
    let tb = TB::start_with(|c| c.extra = CSAT_TEMPLATE.into()).await;
    let customer = customer();
    resolved_by_alice(&tb, &customer).await;
    let sends = tb.graph.wait_sends(2, WAIT).await;
    let body = &sends[1].body;
    assert_eq!(body["type"], "text", "{body}");
    assert!(
        body["text"]["body"]
            .as_str()
            .is_some_and(|t| t.contains("rate our help")),
        "{body}"
    );
}
