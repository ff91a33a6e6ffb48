//! Coexistence (a number used in the WhatsApp Business App and through the broker at once) and
//! per-number settings: `smb_message_echoes` (author `business_app`, edits, revokes),
//! `history` (chunks in any order and again, thousands of messages in one webhook, imported in
//! time order once, starting nothing), `smb_app_state_sync` (contact names), `[[numbers]]`
//! `country` / `time_zone` / `languages`, and webhooks for a number missing from `[[numbers]]`.

use crate::common::*;
use serde_json::{json, Value};
use switchboard::store::schema::CF_OTHER_CHANGES;

fn coex_change(number: &str, field: &str, value: Value) -> Value {
    let mut value = value;
    value["messaging_product"] = json!("whatsapp");
    value["metadata"] =
        json!({"display_phone_number": display_of(number), "phone_number_id": number});
    envelope(vec![entry(vec![json!({"field": field, "value": value})])])
}

fn echo_text(id: &str, to: &str, ts: i64, text: &str) -> Value {
    json!({"from": N1_DISPLAY, "to": to, "id": id, "timestamp": ts.to_string(), "type": "text",
           "text": {"body": text}})
}

/// A history message: (wamid, timestamp, written by the business, text).
type HistoryMessage = (String, i64, bool, String);
/// A history thread: the customer and its messages.
type Thread<'a> = (&'a str, Vec<HistoryMessage>);

fn echoes(number: &str, items: Vec<Value>) -> Value {
    coex_change(
        number,
        "smb_message_echoes",
        json!({"message_echoes": items}),
    )
}

/// One history chunk: `messages` of `customer`'s thread, each `(wamid, ts, from_business, text)`.
fn history_chunk(number: &str, chunk_order: u64, threads: Vec<Thread<'_>>) -> Value {
    let threads: Vec<Value> = threads
        .into_iter()
        .map(|(customer, msgs)| {
            let messages: Vec<Value> = msgs
                .into_iter()
                .map(|(id, ts, from_business, text)| {
                    let mut m = json!({"id": id, "timestamp": ts.to_string(), "type": "text",
                        "text": {"body": text}, "history_context": {"status": "READ"}});
                    if from_business {
                        m["from"] = json!(display_of(number));
                        m["to"] = json!(customer);
                    } else {
                        m["from"] = json!(customer);
                    }
                    m
                })
                .collect();
            json!({"id": customer, "messages": messages})
        })
        .collect();
    coex_change(
        number,
        "history",
        json!({"history": [{"metadata": {"phase": 1, "chunk_order": chunk_order, "progress": 50},
                            "threads": threads}]}),
    )
}

fn state_sync(number: &str, phone: &str, action: &str, name: Option<&str>) -> Value {
    let mut contact = json!({"phone_number": phone});
    if let Some(n) = name {
        contact["full_name"] = json!(n);
        contact["first_name"] = json!(n.split(' ').next().unwrap_or(n));
    }
    coex_change(
        number,
        "smb_app_state_sync",
        json!({"state_sync": [{"type": "contact", "contact": contact, "action": action,
                               "metadata": {"timestamp": now().to_string()}}]}),
    )
}

async fn post(tb: &TB, body: &Value) {
    let (status, v) = tb.webhook_bytes(serde_json::to_vec(body).unwrap()).await;
    assert_eq!(status, 200, "{v}");
}

async fn queue_depth(tb: &TB, team: &str) -> u64 {
    let (s, q) = tb.get(CAROL, &format!("/api/v1/teams/{team}/queue")).await;
    assert_eq!(s, 200, "{q}");
    q["depth"].as_u64().expect("depth")
}

fn by_wamid<'a>(messages: &'a [Value], wamid: &str) -> &'a Value {
    messages
        .iter()
        .find(|m| m["wamid"] == wamid)
        .unwrap_or_else(|| panic!("no message {wamid} in {messages:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoes_are_business_app_messages_with_edits_and_revokes_and_start_nothing() {
    let tb = TB::start().await;
    let customer = customer();
    let conv = tb.open_conv(N1, &customer, "is my order on its way?").await;
    let before = tb.conversation(&conv).await;
    assert_eq!(before["status"], "queued");
    let depth = queue_depth(&tb, "support").await;

    let ts = now();
    let e1 = uniq("wamid.ECHO");
    let echo = echoes(
        N1,
        vec![echo_text(&e1, &customer, ts, "yes, shipped today")],
    );
    post(&tb, &echo).await;
    post(&tb, &echo).await; // Meta redelivers: stored once.
    let messages = tb.messages(&conv).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    let m = by_wamid(&messages, &e1);
    assert_eq!(m["direction"], "outbound");
    assert_eq!(m["author"], "business_app");
    assert_eq!(m["text"], "yes, shipped today");
    assert_eq!(m["status"], "sent");

    // An edit changes the text, shown as edited; again, it changes nothing more.
    let edit = echoes(
        N1,
        vec![
            json!({"from": N1_DISPLAY, "to": customer, "id": uniq("wamid.EDIT"),
            "timestamp": (ts + 5).to_string(), "type": "edit",
            "edit": {"original_message_id": e1, "message": {"type": "text", "text": {"body": "yes, it ships tomorrow"}}}}),
        ],
    );
    post(&tb, &edit).await;
    post(&tb, &edit).await;
    let messages = tb.messages(&conv).await;
    assert_eq!(
        messages.len(),
        2,
        "an edit is no message of its own: {messages:?}"
    );
    let m = by_wamid(&messages, &e1);
    assert_eq!(m["text"], "yes, it ships tomorrow");
    assert!(m["edited_at"].is_string(), "{m}");
    assert!(m.get("revoked_at").is_none(), "{m}");

    let revoke = echoes(
        N1,
        vec![
            json!({"from": N1_DISPLAY, "to": customer, "id": uniq("wamid.REV"),
            "timestamp": (ts + 9).to_string(), "type": "revoke",
            "revoke": {"original_message_id": e1}}),
        ],
    );
    post(&tb, &revoke).await;
    post(&tb, &revoke).await;
    let messages = tb.messages(&conv).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert!(by_wamid(&messages, &e1)["revoked_at"].is_string());

    // The echo was nobody's answer: still queued, unowned, waiting since before, in the queue.
    let after = tb.conversation(&conv).await;
    assert_eq!(after["status"], "queued");
    assert_eq!(after["assignee"], Value::Null);
    assert_eq!(after["waiting_since"], before["waiting_since"]);
    assert_eq!(after["window_expires_at"], before["window_expires_at"]);
    assert_eq!(queue_depth(&tb, "support").await, depth);
    assert_eq!(tb.graph.sends().len(), 0, "nothing is sent for an echo");

    // An echo to someone who never wrote makes a resolved conversation, in no queue.
    let stranger = crate::common::customer();
    post(
        &tb,
        &echoes(
            N1,
            vec![echo_text(
                &uniq("wamid.ECHO"),
                &stranger,
                ts,
                "hello from the shop",
            )],
        ),
    )
    .await;
    let c = tb.conv_of(N1, &stranger).await.expect("a conversation");
    assert_eq!(c["status"], "resolved", "{c}");
    assert_eq!(queue_depth(&tb, "support").await, depth);
    assert_eq!(tb.graph.sends().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_chunks_in_any_order_are_imported_once_in_time_order_starting_nothing() {
    let tb = TB::start().await;
    let depth = queue_depth(&tb, "support").await;
    let customer = customer();
    let start = now() - 30 * SECS_PER_DAY;
    // Nine messages, three per chunk, the chunks' times interleaved (chunk 1 holds the 1st,
    // 4th and 7th message, …), both sides of the thread.
    let msg = |i: i64| {
        (
            format!("wamid.HIST{customer}x{i}"),
            start + i * 60,
            i % 2 == 1,
            format!("message {i}"),
        )
    };
    let chunk = |k: i64| {
        history_chunk(
            N1,
            k as u64,
            vec![(customer.as_str(), (0..3).map(|j| msg(j * 3 + k)).collect())],
        )
    };
    for k in [2, 0, 2, 1, 0] {
        post(&tb, &chunk(k)).await;
    }
    let conv = tb.conv_id(N1, &customer).await;
    let c = tb.conversation(&conv).await;
    assert_eq!(
        c["status"], "resolved",
        "history alone puts it in no queue: {c}"
    );
    assert_eq!(c["assignee"], Value::Null);
    let messages = c["messages"].as_array().unwrap().clone();
    let texts: Vec<&str> = messages
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..9).map(|i| format!("message {i}")).collect();
    assert_eq!(texts, want, "once each, in time order");
    for m in &messages {
        assert_eq!(m["imported"], true, "{m}");
        let business = m["direction"] == "outbound";
        assert_eq!(
            m["author"],
            if business {
                json!("business_app")
            } else {
                json!(customer)
            }
        );
    }
    assert_eq!(queue_depth(&tb, "support").await, depth);
    assert_eq!(tb.graph.sends().len(), 0, "nothing is sent for history");

    // The customer writing now opens the conversation as usual, after its history.
    tb.send_text(N1, &customer, "hello again").await;
    // Durable before the 200: no waiting.
    let c = tb.conversation(&conv).await;
    assert_eq!(c["status"], "queued", "{c}");
    let messages = c["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 10);
    assert_eq!(messages[9]["text"], "hello again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_webhook_of_thousands_of_messages_is_imported_in_order_once() {
    let tb = TB::start().await;
    let depth = queue_depth(&tb, "support").await;
    let customers: Vec<String> = (0..4).map(|_| customer()).collect();
    let start = now() - 90 * SECS_PER_DAY;
    // 4 threads × 600 messages, each thread's listed newest first (Meta's order is not ours).
    let per = 600;
    let threads: Vec<Thread<'_>> = customers
        .iter()
        .map(|c| {
            let msgs = (0..per)
                .rev()
                .map(|i| {
                    (
                        format!("wamid.BIG{c}x{i}"),
                        start + i * 30,
                        i % 3 == 0,
                        format!("m{i:04}"),
                    )
                })
                .collect();
            (c.as_str(), msgs)
        })
        .collect();
    let body = history_chunk(N1, 1, threads);
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(
        bytes.len() < 3 * 1024 * 1024,
        "within the 3 MiB bound: {}",
        bytes.len()
    );
    for _ in 0..2 {
        let (s, v) = tb.webhook_bytes(bytes.clone()).await;
        assert_eq!(s, 200, "{v}");
    }
    let want: Vec<String> = (0..per).map(|i| format!("m{i:04}")).collect();
    for c in &customers {
        let conv = tb.conv_id(N1, c).await;
        let conversation = tb.conversation(&conv).await;
        assert_eq!(conversation["status"], "resolved");
        let texts: Vec<String> = conversation["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["text"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(texts, want, "{c}: every message once, in time order");
    }
    assert_eq!(queue_depth(&tb, "support").await, depth);
    assert_eq!(tb.graph.sends().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_contacts_name_their_customers() {
    let tb = TB::start().await;
    let customer = customer();
    let conv = tb.open_conv(N1, &customer, "hi").await;
    assert_eq!(
        tb.conversation(&conv).await["customer_name"],
        format!("Customer {customer}")
    );
    post(
        &tb,
        &state_sync(N1, &customer, "add", Some("Pablo Morales")),
    )
    .await;
    assert_eq!(
        tb.conversation(&conv).await["customer_name"],
        "Pablo Morales"
    );
    post(&tb, &state_sync(N1, &customer, "add", Some("Pablo M."))).await;
    assert_eq!(tb.conversation(&conv).await["customer_name"], "Pablo M.");
    post(&tb, &state_sync(N1, &customer, "remove", None)).await;
    assert_eq!(tb.conversation(&conv).await["customer_name"], Value::Null);
    // A contact nobody knows yet is no conversation.
    let stranger = crate::common::customer();
    post(&tb, &state_sync(N1, &stranger, "add", Some("Nobody Yet"))).await;
    assert!(tb.conv_of(N1, &stranger).await.is_none());
}

/// A number's `country` and `languages` are routing's defaults where the customer's are
/// unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_numbers_country_and_languages_route_customers_whose_own_are_unknown() {
    const N3: &str = "306540352242944";
    let tb = TB::start_with(|c| {
        c.extra = format!(
            r#"
[[numbers]]
phone_number_id = "{N3}"
display_phone_number = "15550783883"
default_team = "support"
country = "de"
time_zone = "Europe/Berlin"
languages = ["DE"]

[[routing.rules]]
name = "german"
when = {{ country = ["DE"], language = ["de"] }}
then = {{ team = "sales" }}
"#
        )
    })
    .await;
    // No country in the number (no such calling code) and no language in "ok": the number's.
    let unknown = format!("999{}", &customer()[4..]);
    let conv = tb.open_conv(N3, &unknown, "ok").await;
    assert_eq!(tb.conversation(&conv).await["team"], "sales");
    // A customer whose own country is known keeps it.
    let us = format!("1415555{}", &customer()[8..]);
    let conv = tb.open_conv(N3, &us, "ok").await;
    assert_eq!(tb.conversation(&conv).await["team"], "support");
    // The same customer on a number without settings: nothing to default to.
    let conv = tb.open_conv(N1, &unknown, "ok").await;
    assert_eq!(tb.conversation(&conv).await["team"], "support");
}

/// Runs the binary on a config whose number has `key = value`; expects exit 2 and one line
/// naming the key.
fn expect_bad_number_setting(key: &str, value: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Cfg::new(&dir.path().join("db"), "http://127.0.0.1:9/v25.0");
    cfg.listen = format!("127.0.0.1:{}", free_port());
    let mut toml = cfg.toml();
    toml.push_str(&format!(
        "\n[[numbers]]\nphone_number_id = \"306540352242944\"\ndefault_team = \"support\"\n{key} = {value}\n"
    ));
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml).unwrap();
    let out = std::process::Command::new(bin_path())
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .expect("run switchboard");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains(&format!("numbers[2].{key}")),
        "names the key: {stderr}"
    );
}

#[test]
fn a_bad_time_zone_country_or_language_exits_2_with_one_line() {
    expect_bad_number_setting("time_zone", "\"Mars/Olympus_Mons\"");
    expect_bad_number_setting("country", "\"XQ\"");
    expect_bad_number_setting("languages", "[\"klingon\"]");
}

/// The stopped broker's kept changes: (field, JSON).
async fn kept_after_crash(tb: &mut TB) -> Vec<(String, Value)> {
    tb.crash_and_restart().await;
    tb.shutdown().await;
    let opts = rocksdb::Options::default();
    let path = tb.cfg.storage_path.clone();
    let names = rocksdb::DB::list_cf(&opts, &path).expect("list column families");
    let db = rocksdb::DB::open_cf_for_read_only(&opts, &path, &names, false).expect("open store");
    let cf = db.cf_handle(CF_OTHER_CHANGES).expect("other_changes");
    db.iterator_cf(cf, rocksdb::IteratorMode::Start)
        .map(|kv| {
            let (_, v) = kv.expect("read");
            let nul = v.iter().position(|b| *b == 0).expect("field, 0, raw");
            let field = String::from_utf8(v[..nul].to_vec()).expect("utf-8 field");
            (
                field,
                serde_json::from_slice(&v[nul + 1..]).expect("raw JSON"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_for_an_unknown_number_is_answered_counted_kept_and_no_conversation() {
    if reran_alone!() {
        return;
    }
    const UNKNOWN: &str = "999999999999999";
    let mut tb = TB::start().await;
    let count = |t: &str| metric_sum(t, "switchboard_unknown_number_total", &[]).unwrap_or(0.0);
    assert_eq!(count(&tb.metrics().await), 0.0, "exported at 0");
    let customer = customer();
    let w = wamid();
    post(&tb, &text_webhook(UNKNOWN, &customer, &w, now(), "hello?")).await;
    post(
        &tb,
        &echoes(
            UNKNOWN,
            vec![echo_text(&uniq("wamid.ECHO"), &customer, now(), "hi")],
        ),
    )
    .await;
    post(
        &tb,
        &history_chunk(
            UNKNOWN,
            1,
            vec![(
                customer.as_str(),
                vec![(uniq("wamid.H"), now() - 99, false, "old".into())],
            )],
        ),
    )
    .await;
    assert_eq!(count(&tb.metrics().await), 3.0);
    assert!(tb.conv_of(UNKNOWN, &customer).await.is_none());
    assert!(tb
        .list(ROOT, &format!("customer={customer}"))
        .await
        .is_empty());

    let kept = kept_after_crash(&mut tb).await;
    let message = kept
        .iter()
        .find(|(field, raw)| field == "unknown_number" && raw["message"]["id"] == w.as_str())
        .unwrap_or_else(|| panic!("the message is kept: {kept:?}"));
    assert_eq!(message.1["phone_number_id"], UNKNOWN);
    for field in ["smb_message_echoes", "history"] {
        assert!(
            kept.iter().any(
                |(f, raw)| f == field && raw["value"]["metadata"]["phone_number_id"] == UNKNOWN
            ),
            "{field} kept: {kept:?}"
        );
    }
}
