//! Meta's coexistence webhooks (a number used in the WhatsApp Business App and through the
//! Cloud API at once), read from the change the webhook parser kept verbatim
//! (`{"field", "value"}`, see [`super::webhook`]) into the domain's [`AppChange`]:
//!
//! - `smb_message_echoes`: `value.message_echoes[]`, each `{from (the business), to (the
//!   customer), id, timestamp, type, <type>: {…}}`; `type: "edit"` carries
//!   `edit.original_message_id` and `edit.message` (the new message object), `type: "revoke"`
//!   carries `revoke.original_message_id`.
//! - `history`: `value.history[]`, each `{metadata: {phase, chunk_order, progress}, threads:
//!   [{id (the customer's phone), messages: [{from, to (only on the business's own messages), id,
//!   timestamp, type, <type>, history_context: {status}}]}]}` (or `errors` when the business
//!   declined to share its history: nothing to import). Chunks may arrive in any order and
//!   again; `phase`, `chunk_order` and `progress` say where a chunk belongs, and are not needed
//!   to import it (each message carries its own time and wamid).
//! - `smb_app_state_sync`: `value.state_sync[]`, each `{type: "contact", contact: {full_name,
//!   first_name, phone_number}, action: "add" | "remove"}` (`add` also means an edit).
//!
//! Items without an id, a customer or a business number are skipped (the change stays kept
//! verbatim, so nothing is lost). Message bodies are read by [`super::message_body`], as for
//! inbound messages.

use serde_json::Value;

use super::message_body;
use super::webhook::{array, millis_from_secs, str_at};
use crate::domain::inbound::{AppChange, AppContact, AppEdit, AppMessage};
use crate::domain::DeliveryStatus;

/// The coexistence fields this module reads.
pub const FIELDS: [&str; 3] = ["smb_message_echoes", "history", "smb_app_state_sync"];

/// Reads a kept change of one of [`FIELDS`]; None for any other field or a change that is not
/// JSON.
pub fn parse(field: &str, change: &str) -> Option<AppChange> {
    if !FIELDS.contains(&field) {
        return None;
    }
    let change: Value = serde_json::from_str(change).ok()?;
    let value = change.get("value")?;
    let number = str_at(value, &["metadata", "phone_number_id"])
        .unwrap_or("")
        .to_string();
    let mut out = AppChange {
        number: number.clone(),
        ..AppChange::default()
    };
    let now = chrono::Utc::now().timestamp_millis();
    match field {
        "smb_message_echoes" => {
            for m in array(value, "message_echoes") {
                let customer = m.get("to").and_then(Value::as_str);
                if let Some(msg) = message(&number, customer, m, true, false, now) {
                    out.messages.push(msg);
                }
            }
        }
        "history" => {
            for chunk in array(value, "history") {
                for thread in array(chunk, "threads") {
                    let customer = thread.get("id").and_then(Value::as_str);
                    for m in array(thread, "messages") {
                        // The business's own messages name the customer in `to` (and come
                        // from the business's number); the customer's come from its phone.
                        let from = m.get("from").and_then(Value::as_str);
                        let from_business =
                            m.get("to").is_some() || (from.is_some() && from != customer);
                        if let Some(msg) = message(&number, customer, m, from_business, true, now) {
                            out.messages.push(msg);
                        }
                    }
                }
            }
        }
        _ => {
            for item in array(value, "state_sync") {
                if item.get("type").and_then(Value::as_str) != Some("contact") {
                    continue;
                }
                let Some(phone) =
                    str_at(item, &["contact", "phone_number"]).filter(|p| !p.is_empty())
                else {
                    continue;
                };
                let name = match item.get("action").and_then(Value::as_str) {
                    Some("remove") => None,
                    // An add (or edit) without a name names nobody.
                    Some("add") => match str_at(item, &["contact", "full_name"])
                        .filter(|n| !n.is_empty())
                        .or_else(|| str_at(item, &["contact", "first_name"]))
                        .filter(|n| !n.is_empty())
                    {
                        Some(n) => Some(n.to_string()),
                        None => continue,
                    },
                    _ => continue,
                };
                if number.is_empty() {
                    continue;
                }
                out.contacts.push(AppContact {
                    number: number.clone(),
                    phone: phone.trim_start_matches('+').to_string(),
                    name,
                });
            }
        }
    }
    Some(out)
}

/// One echo or history message; None when it lacks an id, a customer or a business number.
fn message(
    number: &str,
    customer: Option<&str>,
    m: &Value,
    from_business: bool,
    imported: bool,
    now: i64,
) -> Option<AppMessage> {
    let wamid = m
        .get("id")
        .and_then(Value::as_str)
        .filter(|w| !w.is_empty())?;
    let customer = customer.filter(|c| !c.is_empty())?.trim_start_matches('+');
    if number.is_empty() {
        return None;
    }
    let kind = m.get("type").and_then(Value::as_str).unwrap_or("unknown");
    let raw = m.to_string();
    let edit = match kind {
        "edit" => {
            let original = str_at(m, &["edit", "original_message_id"])?.to_string();
            let inner = m.get("edit").and_then(|e| e.get("message"));
            let text = inner.and_then(|inner| {
                let kind = inner.get("type").and_then(Value::as_str).unwrap_or("text");
                message_body::read(kind, &inner.to_string()).and_then(|b| b.text)
            });
            Some(AppEdit::Edit { original, text })
        }
        "revoke" => Some(AppEdit::Revoke {
            original: str_at(m, &["revoke", "original_message_id"])?.to_string(),
        }),
        _ => None,
    };
    let body = message_body::read(kind, &raw).unwrap_or_default();
    let status = str_at(m, &["history_context", "status"]).and_then(|s| {
        match s.to_ascii_lowercase().as_str() {
            "played" => Some(DeliveryStatus::Read),
            "error" => Some(DeliveryStatus::Failed),
            other => DeliveryStatus::parse(other),
        }
    });
    let sent_at = match m.get("timestamp") {
        Some(Value::String(s)) => s.trim().parse::<i64>().ok().and_then(millis_from_secs),
        Some(Value::Number(n)) => n.as_i64().and_then(millis_from_secs),
        _ => None,
    }
    .unwrap_or(now);
    Some(AppMessage {
        number: number.to_string(),
        customer: customer.to_string(),
        wamid: wamid.to_string(),
        sent_at,
        from_business,
        imported,
        kind: kind.to_string(),
        text: body.text,
        detail: body.detail,
        status,
        edit,
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(field: &str, value: Value) -> String {
        serde_json::json!({"field": field, "value": value}).to_string()
    }

    #[test]
    fn echoes_edits_and_revokes() {
        let raw = change(
            "smb_message_echoes",
            serde_json::json!({"metadata": {"phone_number_id": "1"}, "message_echoes": [
                {"from": "155", "to": "4915", "id": "e1", "timestamp": "1739321024", "type": "text", "text": {"body": "hi"}},
                {"from": "155", "to": "4915", "id": "e2", "timestamp": "1739321025", "type": "edit",
                 "edit": {"original_message_id": "e1", "message": {"type": "text", "text": {"body": "hello"}}}},
                {"from": "155", "to": "4915", "id": "e3", "timestamp": "1739321026", "type": "revoke",
                 "revoke": {"original_message_id": "e1"}},
                {"from": "155", "id": "no-customer", "type": "text", "text": {"body": "x"}}]}),
        );
        let c = parse("smb_message_echoes", &raw).expect("parsed");
        assert_eq!(c.number, "1");
        assert_eq!(c.messages.len(), 3);
        assert!(c.messages.iter().all(|m| m.from_business && !m.imported));
        assert_eq!(c.messages[0].text.as_deref(), Some("hi"));
        assert_eq!(c.messages[0].sent_at, 1_739_321_024_000);
        assert_eq!(
            c.messages[1].edit,
            Some(AppEdit::Edit {
                original: "e1".into(),
                text: Some("hello".into())
            })
        );
        assert_eq!(
            c.messages[2].edit,
            Some(AppEdit::Revoke {
                original: "e1".into()
            })
        );
    }

    #[test]
    fn history_sides_and_statuses() {
        let raw = change(
            "history",
            serde_json::json!({"metadata": {"phone_number_id": "1"}, "history": [
                {"metadata": {"phase": 0, "chunk_order": 2, "progress": 40}, "threads": [
                    {"id": "4915", "messages": [
                        {"from": "4915", "id": "h1", "timestamp": "100", "type": "text", "text": {"body": "q"},
                         "history_context": {"status": "READ"}},
                        {"from": "155", "to": "4915", "id": "h2", "timestamp": "101", "type": "text",
                         "text": {"body": "a"}, "history_context": {"status": "DELIVERED"}}]}]}]}),
        );
        let c = parse("history", &raw).expect("parsed");
        let sides: Vec<_> = c
            .messages
            .iter()
            .map(|m| (m.wamid.as_str(), m.from_business, m.imported, m.status))
            .collect();
        assert_eq!(
            sides,
            [
                ("h1", false, true, Some(DeliveryStatus::Read)),
                ("h2", true, true, Some(DeliveryStatus::Delivered))
            ]
        );
    }

    #[test]
    fn state_sync_names_and_removals() {
        let raw = change(
            "smb_app_state_sync",
            serde_json::json!({"metadata": {"phone_number_id": "1"}, "state_sync": [
                {"type": "contact", "contact": {"full_name": "Pablo Morales", "first_name": "Pablo", "phone_number": "16505551234"}, "action": "add"},
                {"type": "contact", "contact": {"phone_number": "16505550000"}, "action": "remove"},
                {"type": "other"}]}),
        );
        let c = parse("smb_app_state_sync", &raw).expect("parsed");
        assert_eq!(
            c.contacts,
            [
                AppContact {
                    number: "1".into(),
                    phone: "16505551234".into(),
                    name: Some("Pablo Morales".into())
                },
                AppContact {
                    number: "1".into(),
                    phone: "16505550000".into(),
                    name: None
                }
            ]
        );
        assert!(parse("messages", &raw).is_none());
    }
}
