//! `POST /api/v1/templates/{name}/sends` (README, "Templates"): one template to many
//! conversations the caller owns in one request, each send answered on its own in request order
//! exactly as the reply route would answer it (accepted, or its error), idempotent per
//! conversation, within the messaging limit; a malformed request is one 400.

use crate::common::*;
use crate::templates::approved_order_ready;
use serde_json::{json, Value};

const PATH: &str = "/api/v1/templates/order_ready/sends";

fn send(conv: &str, key: &str) -> Value {
    json!({"conversation_id": conv, "parameters": ["Ana", "A-17"], "idempotency_key": key})
}

fn bulk(sends: Vec<Value>) -> Value {
    json!({"language": "en_US", "sends": sends})
}

/// `n` conversations on N1 whose customers wrote `ago` seconds ago, owned by BOB.
async fn owned(tb: &TB, n: usize, ago: i64) -> Vec<String> {
    let mut convs = Vec::new();
    for _ in 0..n {
        let cust = customer();
        tb.send_text_at(N1, &cust, now() - ago, "hello").await;
        let conv = tb.conv_id(N1, &cust).await;
        tb.must_claim(BOB, &conv).await;
        convs.push(conv);
    }
    convs
}

fn results(body: &Value) -> &Vec<Value> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_template_sends_reach_meta_once_each_and_a_repeat_sends_nothing() {
    let tb = TB::start().await;
    approved_order_ready(&tb).await;
    let convs = owned(&tb, 3, 60).await;
    let sends: Vec<Value> = convs
        .iter()
        .enumerate()
        .map(|(i, c)| send(c, &format!("k{i}")))
        .collect();
    let (code, body) = tb.post(BOB, PATH, bulk(sends.clone())).await;
    assert_eq!(code, 200, "{body}");
    let first = results(&body).clone();
    assert_eq!(first.len(), 3, "{body}");
    let mut ids = Vec::new();
    for (r, conv) in first.iter().zip(&convs) {
        assert_eq!(
            r["conversation_id"],
            json!(conv),
            "in request order: {body}"
        );
        let m = &r["message"];
        assert_eq!(m["type"], "template", "{body}");
        assert_eq!(m["text"], "Hi Ana, order A-17 is ready.", "{body}");
        ids.push(m["id"].as_str().unwrap_or("").to_string());
    }
    tb.graph.wait_sends(3, WAIT).await;
    for (conv, id) in convs.iter().zip(&ids) {
        tb.wait_status(conv, id, "accepted").await;
        let to_meta = tb.graph.sends_for(id);
        assert_eq!(to_meta.len(), 1, "{id}: sent once");
        assert_eq!(to_meta[0].body["template"]["name"], "order_ready");
    }

    // The same request again: the same messages, nothing more to Meta.
    let (code, again) = tb.post(BOB, PATH, bulk(sends)).await;
    assert_eq!(code, 200, "{again}");
    let again_ids: Vec<&str> = results(&again)
        .iter()
        .map(|r| r["message"]["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(again_ids, ids, "{again}");
    assert_eq!(tb.graph.count(), 3, "a repeat sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_template_sends_refuse_bad_input_as_json_errors() {
    let tb = TB::start().await;
    approved_order_ready(&tb).await;
    let convs = owned(&tb, 1, 60).await;
    let conv = &convs[0];
    let dave_cust = customer();
    let dave_conv = tb.open_conv(N1, &dave_cust, "hello").await;

    // Malformed requests: one 400 for all, nothing sent.
    let too_many: Vec<Value> = (0..1001).map(|i| send(conv, &format!("m{i}"))).collect();
    for (what, body) in [
        ("no sends", bulk(vec![])),
        ("too many sends", bulk(too_many)),
        ("no language", json!({"sends": [send(conv, "x")]})),
        (
            "an unknown key",
            json!({"language": "en_US", "sends": [send(conv, "x")], "extra": 1}),
        ),
        (
            "no conversation",
            bulk(vec![
                json!({"conversation_id": "", "parameters": ["Ana", "A-17"]}),
            ]),
        ),
    ] {
        let (code, answer) = tb.post(BOB, PATH, body).await;
        assert_eq!(
            (code, err_code(&answer)),
            (400, "invalid_request"),
            "{what}: {answer}"
        );
    }
    let (code, _, _) = tb
        .request(
            reqwest::Method::POST,
            None,
            PATH,
            Some(&bulk(vec![send(conv, "x")])),
        )
        .await;
    assert_eq!(code, 401, "no token");
    let raw = http_client(None)
        .post(tb.url(PATH))
        .bearer_auth(BOB)
        .header("content-type", "application/json")
        .body("{\"language\":")
        .send()
        .await
        .expect("request");
    assert_eq!(raw.status().as_u16(), 400);
    let answer: Value = raw.json().await.unwrap_or(Value::Null);
    assert_eq!(err_code(&answer), "invalid_request", "{answer}");

    // Each send answered on its own: the reply route's errors beside an accepted send.
    let (code, body) = tb
        .post(
            BOB,
            PATH,
            bulk(vec![
                json!({"conversation_id": conv, "parameters": ["Ana"], "idempotency_key": "w"}),
                send(&dave_conv, "n"),
                send("c-nope", "u"),
                send(conv, "ok"),
            ]),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let r = results(&body);
    assert_eq!(r[0]["error"]["code"], "invalid_request", "{body}");
    assert_eq!(r[1]["error"]["code"], "not_owner", "{body}");
    assert_eq!(r[2]["error"]["code"], "not_found", "{body}");
    assert_eq!(r[3]["message"]["type"], "template", "{body}");
    assert!(
        r[0]["message"].is_null() && r[3]["error"].is_null(),
        "{body}"
    );
    tb.graph.wait_sends(1, WAIT).await;
    assert_eq!(tb.graph.count(), 1, "only the accepted send reached Meta");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_template_sends_keep_the_messaging_limit() {
    let tb = TB::start_with(|c| c.whatsapp_extra = "messaging_limit = 2".into()).await;
    approved_order_ready(&tb).await;
    // Windows closed two days ago: each template opens a business-initiated conversation.
    let convs = owned(&tb, 4, 2 * SECS_PER_DAY).await;
    let sends: Vec<Value> = convs
        .iter()
        .enumerate()
        .map(|(i, c)| send(c, &format!("l{i}")))
        .collect();
    let (code, body) = tb.post(BOB, PATH, bulk(sends)).await;
    assert_eq!(code, 200, "{body}");
    let r = results(&body);
    let accepted = r
        .iter()
        .filter(|x| x["message"]["type"] == "template")
        .count();
    let limited = r
        .iter()
        .filter(|x| x["error"]["code"] == "messaging_limit_reached")
        .count();
    assert_eq!((accepted, limited), (2, 2), "{body}");
    tb.graph.wait_sends(2, WAIT).await;
    assert_eq!(tb.graph.count(), 2, "refused before Meta");
}
