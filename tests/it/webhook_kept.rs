//! WhatsApp webhook: nothing of an acknowledged body is dropped. Items the broker cannot turn
//! into a message or a status (no business number, no id, no sender, an unknown status, unknown
//! value keys, a `messages` change carrying neither) are kept verbatim — their whole change, in
//! the `other_changes` column family — before the 200, once per redelivery, while the usable
//! messages and statuses next to them are stored exactly as before. Every status callback is
//! also kept whole (`status_log`: what the broker does not read of it, such as `pricing`).
//!
//! There is no API that reads kept changes, so each test crashes the broker after its
//! acknowledgements (nothing flushed by a clean shutdown), restarts it on the same directory,
//! shuts that down and reads the column family directly.

use crate::common::*;
use serde_json::{json, Value};
use switchboard::store::schema::{CF_OTHER_CHANGES, CF_STATUS_LOG};

/// The stopped broker's store, read-only, with every column family.
fn open_stopped(tb: &TB) -> rocksdb::DB {
    let opts = rocksdb::Options::default();
    let path = tb.cfg.storage_path.clone();
    let names = rocksdb::DB::list_cf(&opts, &path).expect("list column families");
    rocksdb::DB::open_cf_for_read_only(&opts, &path, &names, false).expect("open store")
}

/// Every kept change in the store: (field, JSON). Reads the store with the broker stopped.
async fn kept_after_crash(tb: &mut TB) -> Vec<(String, Value)> {
    tb.crash_and_restart().await;
    tb.shutdown().await;
    let db = open_stopped(tb);
    let cf = db.cf_handle(CF_OTHER_CHANGES).expect("other_changes");
    db.iterator_cf(cf, rocksdb::IteratorMode::Start)
        .map(|kv| {
            let (_, v) = kv.expect("read");
            let nul = v.iter().position(|b| *b == 0).expect("field, 0, raw");
            let field = String::from_utf8(v[..nul].to_vec()).expect("utf-8 field");
            let raw = serde_json::from_slice(&v[nul + 1..]).expect("raw JSON");
            (field, raw)
        })
        .collect()
}

/// Every status callback kept whole: (key's wamid, key's status, JSON). Reads the store with the
/// broker stopped, like [`kept_after_crash`] (which it must follow).
fn status_log(tb: &TB) -> Vec<(String, String, Value)> {
    let db = open_stopped(tb);
    let cf = db.cf_handle(CF_STATUS_LOG).expect("status_log");
    db.iterator_cf(cf, rocksdb::IteratorMode::Start)
        .map(|kv| {
            let (k, v) = kv.expect("read");
            let mut parts = k.split(|b| *b == 0);
            let wamid = String::from_utf8(parts.next().unwrap_or_default().to_vec()).unwrap();
            let status = String::from_utf8(parts.next().unwrap_or_default().to_vec()).unwrap();
            (wamid, status, serde_json::from_slice(&v).expect("raw JSON"))
        })
        .collect()
}

/// `change` (a whole `changes[]` element) is kept exactly once, under its field.
fn assert_kept_once(kept: &[(String, Value)], change: &Value) {
    let copies: Vec<_> = kept.iter().filter(|(_, raw)| raw == change).collect();
    assert_eq!(
        copies.len(),
        1,
        "kept {} times: {change}\nall: {kept:?}",
        copies.len()
    );
    assert_eq!(copies[0].0, change["field"].as_str().unwrap_or(""));
}

/// Posts the body twice (Meta redelivers until it sees a 200): both acknowledged.
async fn deliver_twice(tb: &TB, body: &Value) {
    for attempt in ["first delivery", "redelivery"] {
        let (status, v) = tb.webhook_bytes(serde_json::to_vec(body).unwrap()).await;
        assert_eq!(status, 200, "{attempt}: {v}");
    }
}

fn messages_change(value: Value) -> Value {
    json!({"field": "messages", "value": value})
}

fn metadata(number: &str) -> Value {
    json!({"display_phone_number": display_of(number), "phone_number_id": number})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_without_business_number_is_kept() {
    let mut tb = TB::start().await;
    let cust = customer();
    let change = messages_change(json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": N1_DISPLAY},
        "contacts": [{"profile": {"name": "Nobody's"}, "wa_id": cust}],
        "messages": [text_msg(&wamid(), &cust, now(), "which number am I writing to?")]
    }));
    deliver_twice(&tb, &envelope(vec![entry(vec![change.clone()])])).await;
    assert!(tb.conv_of(N1, &cust).await.is_none());
    assert_kept_once(&kept_after_crash(&mut tb).await, &change);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_without_id_or_sender_are_kept() {
    let mut tb = TB::start().await;
    let cust = customer();
    let mut no_id = text_msg("", &cust, now(), "I have no id");
    no_id.as_object_mut().unwrap().remove("id");
    let mut no_sender = text_msg(&wamid(), &cust, now(), "I have no sender");
    no_sender.as_object_mut().unwrap().remove("from");
    let without_id = change(N1, vec![no_id], vec![]);
    let without_sender = change(N1, vec![no_sender], vec![]);
    let body = envelope(vec![
        entry(vec![without_id.clone()]),
        entry(vec![without_sender.clone()]),
    ]);
    deliver_twice(&tb, &body).await;
    assert!(tb.conv_of(N1, &cust).await.is_none());
    let kept = kept_after_crash(&mut tb).await;
    assert_kept_once(&kept, &without_id);
    assert_kept_once(&kept, &without_sender);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_status_and_status_without_id_are_kept_known_status_still_applies() {
    let mut tb = TB::start().await;
    let (conv, cust, id, w) = accepted_reply(&tb).await;
    let t = now();
    let mut no_id = status_obj("", "read", t, &cust);
    no_id.as_object_mut().unwrap().remove("id");
    let change = change(
        N1,
        vec![],
        vec![
            status_obj(&w, "delivered", t, &cust),
            status_obj(&w, "deleted", t + 1, &cust),
            no_id,
        ],
    );
    deliver_twice(&tb, &envelope(vec![entry(vec![change.clone()])])).await;
    assert_eq!(
        tb.message(&conv, &id).await.unwrap()["status"],
        json!("delivered")
    );
    assert_kept_once(&kept_after_crash(&mut tb).await, &change);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_callbacks_are_kept_whole_once_each_pricing_and_all() {
    let mut tb = TB::start().await;
    let (conv, cust, id, w) = accepted_reply(&tb).await;
    let t = now();
    let priced = |status: &str, ts: i64| {
        let mut s = status_obj(&w, status, ts, &cust);
        s["conversation"] = json!({"id": "c-1", "origin": {"type": "service"}});
        s["pricing"] = json!({"billable": true, "pricing_model": "PMP", "category": "service"});
        s
    };
    let (sent, delivered) = (priced("sent", t), priced("delivered", t + 1));
    let orphan = status_obj("wamid.NOT-OURS", "read", t + 2, &cust);
    let change = change(
        N1,
        vec![],
        vec![sent.clone(), delivered.clone(), orphan.clone()],
    );
    deliver_twice(&tb, &envelope(vec![entry(vec![change])])).await;
    assert_eq!(
        tb.message(&conv, &id).await.unwrap()["status"],
        json!("delivered")
    );
    // Nothing went to the other changes: every status was usable.
    assert!(kept_after_crash(&mut tb).await.is_empty());
    let log = status_log(&tb);
    for (wamid, status, raw) in [
        (&w, "sent", &sent),
        (&w, "delivered", &delivered),
        (&"wamid.NOT-OURS".to_string(), "read", &orphan),
    ] {
        let copies = log
            .iter()
            .filter(|(k, s, v)| k == wamid && s == status && v == raw)
            .count();
        assert_eq!(copies, 1, "{status} of {wamid}: {log:?}");
    }
    assert_eq!(log.len(), 3, "{log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_value_keys_next_to_a_message_are_kept_and_the_message_stored_once() {
    let mut tb = TB::start().await;
    let cust = customer();
    let w = wamid();
    let mut change = change(N1, vec![text_msg(&w, &cust, now(), "hi")], vec![]);
    change["value"]["brand_new_key"] = json!({"nested": [1, 2, {"z": null}]});
    deliver_twice(&tb, &envelope(vec![entry(vec![change.clone()])])).await;
    let conv = tb.conv_id(N1, &cust).await;
    let msgs = tb.messages(&conv).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    assert_eq!(msgs[0]["wamid"], json!(w));
    assert_kept_once(&kept_after_crash(&mut tb).await, &change);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_change_with_neither_messages_nor_statuses_is_kept() {
    let mut tb = TB::start().await;
    let errors = messages_change(json!({
        "messaging_product": "whatsapp",
        "metadata": metadata(N1),
        "errors": [{"code": 131051, "title": "Message type unknown", "message": "Message type unknown",
                    "error_data": {"details": "Message type is currently not supported."}}]
    }));
    let empty = messages_change(json!({"messaging_product": "whatsapp", "metadata": metadata(N2)}));
    let body = envelope(vec![entry(vec![errors.clone(), empty.clone()])]);
    deliver_twice(&tb, &body).await;
    let kept = kept_after_crash(&mut tb).await;
    assert_kept_once(&kept, &errors);
    assert_kept_once(&kept, &empty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_message_next_to_a_malformed_one_is_stored_exactly_once() {
    let mut tb = TB::start().await;
    let (a, b) = (customer(), customer());
    let (w1, w2) = (wamid(), wamid());
    let mut broken = text_msg("", &a, now(), "no id");
    broken.as_object_mut().unwrap().remove("id");
    // In the same change as the malformed message, and in a change of its own.
    let mixed = change(
        N1,
        vec![broken, text_msg(&w1, &a, now(), "good one")],
        vec![],
    );
    let clean = change(N1, vec![text_msg(&w2, &b, now(), "good two")], vec![]);
    let body = envelope(vec![entry(vec![mixed.clone(), clean.clone()])]);
    deliver_twice(&tb, &body).await;
    for (cust, w, text) in [(&a, &w1, "good one"), (&b, &w2, "good two")] {
        let conv = tb.conv_id(N1, cust).await;
        let msgs = tb.messages(&conv).await;
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert_eq!(msgs[0]["wamid"], json!(w));
        assert_eq!(msgs[0]["text"], json!(text));
    }
    let kept = kept_after_crash(&mut tb).await;
    assert_kept_once(&kept, &mixed);
    assert!(
        !kept.iter().any(|(_, raw)| raw == &clean),
        "a fully used change is not kept"
    );
    // After the crash the messages are still there, once.
    tb.restart().await;
    for cust in [&a, &b] {
        let conv = tb.conv_id(N1, cust).await;
        assert_eq!(tb.messages(&conv).await.len(), 1);
    }
}
