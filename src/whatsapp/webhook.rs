//! Parsing Meta's webhook notifications: every entry, every change, every message and status,
//! into the domain's [`Notification`] (`domain::inbound`).
//!
//! The parser is lenient by design: unknown message types, unknown fields and unknown change
//! kinds are kept (each message's original JSON travels with it as `raw`; other changes are
//! returned as [`OtherChange`]), because Meta adds types faster than any broker ships. Only bodies
//! that are not JSON at all are rejected. Timestamps arrive as strings in messages and statuses
//! but as integers elsewhere; both are accepted.
//!
//! Two paths, one result: Meta's usual shapes take the typed fast path
//! ([`super::typed_webhook`]); whatever it declines is walked here as a JSON tree.
//!
//! Nothing in an acknowledged body is dropped. Whatever the broker cannot turn into a message or
//! a status is kept verbatim as an [`OtherChange`] (stored like template updates: the JSON text
//! under its digest, so a redelivery is stored once). The unit kept is the whole change
//! (`{"field", "value"}`, as other changes already are), not the single item, so the item keeps
//! its context (business number, contacts). A `messages` change (or any change whose value has
//! `messages` or `statuses`) is kept whole when any of these holds:
//! - one of its messages has no `id`, no sender (`from`, `from_user_id`, or the ids of the
//!   change's contact for it: see [`sender_ids`]) or its change names no business number
//!   (`metadata.phone_number_id`), or is not an object (a message naming no customer at all is
//!   also counted in [`Notification::no_customer`]);
//! - one of its statuses has no `id` or a `status` the broker does not know (e.g. `deleted`);
//! - its value has a key other than [`VALUE_KEYS`] (e.g. `errors`), is not an object, or
//!   `messages`/`statuses` is not an array;
//! - it yields neither a message nor a status (no value, empty lists, `value.errors` only).
//!
//! Usable messages and statuses of a kept change are still delivered as usual (exactly once by
//! wamid); the kept copy is an archive, never a second message. An entry, or a body, whose
//! changes cannot be walked at all (not an object, `entry`/`changes` not a list) is kept whole
//! the same way, under field `""`. Envelope keys (`object`, an entry's `id` and `time`) are not
//! content and are not kept. [`Notification::skipped`] still counts the unusable items (the
//! transport logs it); they are now kept, not dropped.

use serde_json::Value;

use super::message_body;
use crate::domain::inbound::{InboundMessage, InboundStatus, Notification, OtherChange};
use crate::domain::{CustomerIds, DeliveryStatus, IdentityChange, MessageError, Millis};

#[derive(Debug, thiserror::Error)]
#[error("malformed JSON: {0}")]
pub struct ParseError(String);

/// The broker's message a status names, from the `biz_opaque_callback_data` Meta echoes (the
/// outbox sends each message's id there): a conversation id and a seq. Read from `raw` only when
/// needed (a status for a wamid not on record), so the parse stays off the common path.
pub fn callback_message(status: &InboundStatus) -> Option<(String, u64)> {
    #[derive(serde::Deserialize)]
    struct Named<'a> {
        #[serde(borrow, default)]
        biz_opaque_callback_data: Option<std::borrow::Cow<'a, str>>,
    }
    let named: Named = serde_json::from_str(&status.raw).ok()?;
    let data = named.biz_opaque_callback_data?;
    let (conversation, seq) = crate::domain::message::parse_message_id(&data)?;
    Some((conversation.to_string(), seq))
}

/// The keys of a `messages` change's value the broker reads; any other key (e.g. `errors`)
/// makes the whole change kept verbatim.
pub const VALUE_KEYS: [&str; 5] = [
    "messaging_product",
    "metadata",
    "contacts",
    "messages",
    "statuses",
];

/// Parses a notification: Meta's usual shapes on the typed fast path, anything else here.
pub fn parse(body: &[u8]) -> Result<Notification, ParseError> {
    match super::typed_webhook::parse(body) {
        Some(n) => Ok(n),
        None => parse_lenient(body),
    }
}

/// Walks the body as a JSON tree, turning what it can into messages and statuses and keeping
/// everything else verbatim.
pub(super) fn parse_lenient(body: &[u8]) -> Result<Notification, ParseError> {
    let root: Value = serde_json::from_slice(body).map_err(|e| ParseError(e.to_string()))?;
    let mut out = Notification::default();
    if !(root.is_object() || root.is_null()) || !walkable(&root, "entry") {
        keep(&mut out, "", &root);
        return Ok(out);
    }
    for entry in array(&root, "entry") {
        if !(entry.is_object() || entry.is_null()) || !walkable(entry, "changes") {
            keep(&mut out, "", entry);
            continue;
        }
        for change in array(entry, "changes") {
            let field = change.get("field").and_then(Value::as_str).unwrap_or("");
            let value = change.get("value").unwrap_or(&Value::Null);
            let has_messages = value.get("messages").is_some() || value.get("statuses").is_some();
            if (field == "messages" || has_messages) && parse_messages_value(value, &mut out) {
                continue;
            }
            keep(&mut out, field, change);
        }
    }
    Ok(out)
}

/// Keeps a piece of the body verbatim.
fn keep(out: &mut Notification, field: &str, raw: &Value) {
    out.other.push(OtherChange {
        field: field.to_string(),
        raw: raw.to_string(),
    });
}

/// Whether `v[key]` can be walked as a list: absent, null or an array.
fn walkable(v: &Value, key: &str) -> bool {
    matches!(v.get(key), None | Some(Value::Null | Value::Array(_)))
}

/// The items of `v[key]` when it is an array; none otherwise.
pub(super) fn array<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter())
        .into_iter()
        .flatten()
}

/// The string at `path` below `v`, if every step exists.
pub(super) fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

/// Meta's timestamps: seconds, as a string or a number.
fn timestamp_ms(v: Option<&Value>) -> Option<Millis> {
    let secs = match v? {
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    millis_from_secs(secs)
}

/// Latest Meta timestamp taken as given (the last second of year 9999): anything later, or
/// before 1970, is not a real send time, and would overflow the window arithmetic or render as
/// no RFC 3339 time at all; such a message is dated when it arrived instead.
const MAX_TIMESTAMP_SECS: i64 = 253_402_300_799;

/// A Meta `timestamp` (seconds) in milliseconds, when it is a plausible time.
pub(super) fn millis_from_secs(secs: i64) -> Option<Millis> {
    if (0..=MAX_TIMESTAMP_SECS).contains(&secs) {
        Some(secs * 1000)
    } else {
        None
    }
}

/// A message's id and sender, or None when it lacks either or its change names no business
/// number (the caller counts it as skipped and keeps its change).
pub(super) fn sender<'a>(
    number: &str,
    wamid: Option<&'a str>,
    from: Option<&'a str>,
) -> Option<(&'a str, &'a str)> {
    match (wamid, from) {
        (Some(w), Some(f)) if !number.is_empty() => Some((w, f)),
        _ => None,
    }
}

/// One of a change's `contacts`: `wa_id`, `user_id`, `profile.name`, `profile.username`.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ContactRef<'a> {
    pub wa_id: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub name: Option<&'a str>,
    pub username: Option<&'a str>,
}

/// A message's sender as Meta names it: its own `from` (phone) and `from_user_id` (BSUID),
/// completed from the change's contact naming either (Meta may leave `from` out for a user with
/// a username and give the phone only in `contacts`, or the reverse). When the message names no
/// id at all, the change's only contact is its sender. `customer()` of the result is None when
/// no id is known anywhere: such a message is kept verbatim, never a conversation.
pub(super) fn sender_ids(
    contacts: &[ContactRef],
    from: Option<&str>,
    from_user_id: Option<&str>,
) -> CustomerIds {
    let named = |c: &&ContactRef| {
        (from.is_some() && c.wa_id == from) || (from_user_id.is_some() && c.user_id == from_user_id)
    };
    let contact = match (from, from_user_id) {
        (None, None) if contacts.len() == 1 => contacts.first(),
        _ => contacts.iter().find(named),
    };
    let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    CustomerIds {
        phone: nonempty(from.or(contact.and_then(|c| c.wa_id))),
        user_id: nonempty(from_user_id.or(contact.and_then(|c| c.user_id))),
        username: nonempty(contact.and_then(|c| c.username)),
    }
}

/// The profile name of the contact that sent a message: the one whose `wa_id` or `user_id` is
/// one of the sender's ids, or the only contact of the change.
pub(super) fn customer_name(contacts: &[ContactRef], ids: &CustomerIds) -> Option<String> {
    let is =
        |mine: Option<&str>, theirs: &Option<String>| mine.is_some() && mine == theirs.as_deref();
    contacts
        .iter()
        .find(|c| is(c.wa_id, &ids.phone) || is(c.user_id, &ids.user_id))
        .or(if contacts.len() == 1 {
            contacts.first()
        } else {
            None
        })
        .and_then(|c| c.name.map(str::to_string))
}

/// The ids a `system` message moves its sender to (`user_changed_number`: `system.wa_id`, and
/// `user_changed_user_id`: `system.user_id`); None for any other system message.
pub(super) fn identity_change(
    system_type: Option<&str>,
    new_phone: Option<&str>,
    new_user_id: Option<&str>,
) -> Option<IdentityChange> {
    if !matches!(
        system_type,
        Some("user_changed_number" | "user_changed_user_id")
    ) {
        return None;
    }
    let nonempty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    let change = IdentityChange {
        new_phone: nonempty(new_phone),
        new_user_id: nonempty(new_user_id),
    };
    (change.new_phone.is_some() || change.new_user_id.is_some()).then_some(change)
}

/// Turns a `messages` change's value into messages and statuses; false when the change must be
/// kept verbatim (something in it was not used, or nothing was).
fn parse_messages_value(value: &Value, out: &mut Notification) -> bool {
    let Some(fields) = value.as_object() else {
        return false;
    };
    let mut complete = fields.keys().all(|k| VALUE_KEYS.contains(&k.as_str()))
        && walkable(value, "messages")
        && walkable(value, "statuses");
    let (messages, statuses) = (out.messages.len(), out.statuses.len());
    let number = str_at(value, &["metadata", "phone_number_id"])
        .unwrap_or("")
        .to_string();
    let contacts: Vec<ContactRef> = array(value, "contacts")
        .map(|c| ContactRef {
            wa_id: c.get("wa_id").and_then(Value::as_str),
            user_id: c.get("user_id").and_then(Value::as_str),
            name: str_at(c, &["profile", "name"]),
            username: str_at(c, &["profile", "username"]),
        })
        .collect();
    let now = chrono::Utc::now().timestamp_millis();
    for m in array(value, "messages") {
        let wamid = m.get("id").and_then(Value::as_str);
        let ids = sender_ids(
            &contacts,
            m.get("from").and_then(Value::as_str),
            m.get("from_user_id").and_then(Value::as_str),
        );
        let Some((wamid, customer)) = sender(&number, wamid, ids.customer()) else {
            if ids.customer().is_none() {
                out.no_customer += 1;
            }
            out.skipped += 1;
            complete = false;
            continue;
        };
        let (wamid, customer) = (wamid.to_string(), customer.to_string());
        let customer_name = customer_name(&contacts, &ids);
        let kind = m.get("type").and_then(Value::as_str).unwrap_or("unknown");
        let raw = m.to_string();
        let body = message_body::read(kind, &raw).unwrap_or_default();
        let identity_change = if kind == "system" {
            identity_change(
                str_at(m, &["system", "type"]),
                str_at(m, &["system", "wa_id"]),
                str_at(m, &["system", "user_id"]),
            )
        } else {
            None
        };
        out.messages.push(InboundMessage {
            number: number.clone(),
            customer,
            customer_name,
            ids,
            identity_change,
            wamid,
            sent_at: timestamp_ms(m.get("timestamp")).unwrap_or(now),
            kind: kind.to_string(),
            text: body.text,
            detail: body.detail,
            raw,
        });
    }
    for s in array(value, "statuses") {
        let wamid = s.get("id").and_then(Value::as_str);
        let status = s
            .get("status")
            .and_then(Value::as_str)
            .and_then(DeliveryStatus::parse);
        let (Some(wamid), Some(status)) = (wamid, status) else {
            out.skipped += 1;
            complete = false;
            continue;
        };
        let error = array(s, "errors").next().map(|e| MessageError {
            code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
            title: e
                .get("title")
                .or_else(|| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        });
        out.statuses.push(InboundStatus {
            number: number.clone(),
            wamid: wamid.to_string(),
            status,
            error,
            at: timestamp_ms(s.get("timestamp")).unwrap_or(now),
            pricing: message_body::pricing(s.get("pricing").map(Value::to_string).as_deref()),
            raw: s.to_string(),
        });
    }
    complete && (out.messages.len() > messages || out.statuses.len() > statuses)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = include_str!("../../tests/fixtures/whatsapp/text_message.json");

    #[test]
    fn parses_fixture_text() {
        let n = parse(TEXT.as_bytes()).expect("parse");
        assert_eq!(n.messages.len(), 1);
        let m = &n.messages[0];
        assert_eq!(m.number, "106540352242922");
        assert_eq!(m.customer, "16505551234");
        assert_eq!(m.customer_name.as_deref(), Some("Sheena Nelson"));
        assert_eq!(m.text.as_deref(), Some("Does it come in another color?"));
        assert_eq!(m.sent_at, 1_749_416_383_000);
    }

    #[test]
    fn every_entry_change_message_and_status() {
        let body = r#"{"entry":[
          {"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
             "messages":[{"from":"a","id":"w1","timestamp":"1","type":"text","text":{"body":"x"}},
                         {"from":"b","id":"w2","timestamp":2,"type":"brand_new","brand_new":{"k":1}}],
             "statuses":[{"id":"o1","status":"delivered","timestamp":"3"}]}},
             {"field":"message_template_status_update","value":{"event":"APPROVED"}}]},
          {"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"2"},
             "messages":[{"from_user_id":"US.1","id":"w3","type":"reaction","reaction":{}}]}}]}]}"#;
        let n = parse(body.as_bytes()).expect("parse");
        assert_eq!(n.messages.len(), 3);
        assert_eq!(n.messages[1].kind, "brand_new");
        assert!(n.messages[1].raw.contains("brand_new"));
        assert_eq!(n.messages[2].customer, "US.1");
        assert_eq!(n.statuses.len(), 1);
        assert_eq!(n.other.len(), 1);
    }

    #[test]
    fn keeps_every_change_it_cannot_fully_use() {
        let body = r#"{"entry":[
          {"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
             "messages":[{"from":"a","id":"w1","type":"text","text":{"body":"x"}},
                         {"from":"a","type":"text","text":{"body":"no id"}}]}},
             {"field":"messages","value":{"metadata":{"phone_number_id":"1"},
             "statuses":[{"id":"o1","status":"deleted"}]}},
             {"field":"messages","value":{"metadata":{"phone_number_id":"1"},
             "statuses":[{"id":"o2","status":"read"}]}}]},
          {"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
             "errors":[{"code":131000}]}},
             {"field":"message_template_status_update","value":{"event":"APPROVED"}}]}]}"#;
        let n = parse(body.as_bytes()).expect("parse");
        let wamids: Vec<_> = n.messages.iter().map(|m| m.wamid.as_str()).collect();
        assert_eq!(wamids, ["w1"]);
        let statuses: Vec<_> = n.statuses.iter().map(|s| s.wamid.as_str()).collect();
        assert_eq!(statuses, ["o2"]);
        assert_eq!(n.skipped, 2);
        let fields: Vec<_> = n.other.iter().map(|o| o.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "messages",
                "messages",
                "messages",
                "message_template_status_update"
            ]
        );
        assert!(n.other[0].raw.contains("no id") && n.other[0].raw.contains("w1"));
        assert!(n.other[1].raw.contains("deleted"));
        assert!(n.other[2].raw.contains("131000"));
    }

    #[test]
    fn keeps_a_body_it_cannot_walk() {
        for body in [r#"[{"entry":[]}]"#, r#""text""#, r#"{"entry":"x"}"#] {
            let n = parse(body.as_bytes()).expect("parse");
            assert_eq!(n.other.len(), 1, "{body}");
            assert_eq!(n.other[0].field, "");
            let kept: Value = serde_json::from_str(&n.other[0].raw).expect("JSON");
            assert_eq!(kept, serde_json::from_str::<Value>(body).expect("JSON"));
        }
        for body in [
            "{}",
            "null",
            r#"{"object":"x","entry":[{"id":"1","time":2}]}"#,
        ] {
            let n = parse(body.as_bytes()).expect("parse");
            assert!(n.other.is_empty() && n.messages.is_empty(), "{body}");
        }
    }

    #[test]
    fn implausible_timestamps_date_the_message_on_arrival() {
        for ts in ["99999999999999999", "-5", "\"253402300800\""] {
            let body = format!(
                r#"{{"entry":[{{"changes":[{{"field":"messages","value":{{"metadata":{{"phone_number_id":"1"}},"messages":[{{"from":"2","id":"w","timestamp":{ts},"type":"text","text":{{"body":"x"}}}}]}}}}]}}]}}"#
            );
            let n = parse(body.as_bytes()).expect("parse");
            let at = n.messages[0].sent_at;
            let now = chrono::Utc::now().timestamp_millis();
            assert!((now - at).abs() < 60_000, "{ts}: {at}");
        }
        assert_eq!(millis_from_secs(253_402_300_799), Some(253_402_300_799_000));
    }

    #[test]
    fn system_messages_carry_the_new_ids_and_nameless_messages_are_counted() {
        let body = r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
          "messages":[
            {"from":"4915","id":"s1","type":"system","system":{"body":"changed","wa_id":"4916","type":"user_changed_number"}},
            {"from_user_id":"US.1","id":"s2","type":"system","system":{"body":"changed","user_id":"US.2","type":"user_changed_user_id"}},
            {"from":"4915","id":"s3","type":"system","system":{"body":"other","type":"customer_identity_changed"}},
            {"id":"w1","type":"text","text":{"body":"from nobody"}}]}}]}]}"#;
        let n = parse(body.as_bytes()).expect("parse");
        let changes: Vec<_> = n
            .messages
            .iter()
            .map(|m| {
                m.identity_change
                    .as_ref()
                    .map(|c| (c.new_phone.as_deref(), c.new_user_id.as_deref()))
            })
            .collect();
        assert_eq!(
            changes,
            [Some((Some("4916"), None)), Some((None, Some("US.2"))), None]
        );
        assert_eq!((n.skipped, n.no_customer), (1, 1));
        assert_eq!(
            n.other.len(),
            1,
            "the change with the nameless message is kept"
        );
    }

    #[test]
    fn rejects_non_json_only() {
        assert!(parse(b"{not json").is_err());
        assert!(parse(b"{}").expect("empty ok").messages.is_empty());
    }
}
