//! Webhook payload builders in Meta's Cloud API notification format.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::config::{display_of, WABA_ID};

pub fn text_msg(wamid: &str, from: &str, ts: i64, text: &str) -> Value {
    json!({
        "from": from,
        "id": wamid,
        "timestamp": ts.to_string(),
        "type": "text",
        "text": {"body": text}
    })
}

pub fn status_obj(wamid: &str, status: &str, ts: i64, recipient: &str) -> Value {
    json!({
        "id": wamid,
        "status": status,
        "timestamp": ts.to_string(),
        "recipient_id": recipient
    })
}

/// One `changes[]` element for `number` with the given messages (contacts are derived from
/// the messages' `from`) and statuses.
pub fn change(number: &str, messages: Vec<Value>, statuses: Vec<Value>) -> Value {
    let mut value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display_of(number), "phone_number_id": number}
    });
    if !messages.is_empty() {
        let froms: BTreeSet<String> = messages
            .iter()
            .filter_map(|m| m["from"].as_str().map(str::to_owned))
            .collect();
        let contacts: Vec<Value> = froms
            .iter()
            .map(|f| json!({"profile": {"name": format!("Customer {f}")}, "wa_id": f}))
            .collect();
        value["contacts"] = Value::Array(contacts);
        value["messages"] = Value::Array(messages);
    }
    if !statuses.is_empty() {
        value["statuses"] = Value::Array(statuses);
    }
    json!({"value": value, "field": "messages"})
}

pub fn entry(changes: Vec<Value>) -> Value {
    json!({"id": WABA_ID, "changes": changes})
}

pub fn envelope(entries: Vec<Value>) -> Value {
    json!({"object": "whatsapp_business_account", "entry": entries})
}

pub fn text_webhook(number: &str, from: &str, wamid: &str, ts: i64, text: &str) -> Value {
    envelope(vec![entry(vec![change(
        number,
        vec![text_msg(wamid, from, ts, text)],
        vec![],
    )])])
}

pub fn status_webhook(number: &str, statuses: Vec<Value>) -> Value {
    envelope(vec![entry(vec![change(number, vec![], statuses)])])
}
