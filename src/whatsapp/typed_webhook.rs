//! The fast path of webhook parsing: Meta's usual shapes, deserialized straight into typed,
//! borrowed structs.
//!
//! Why: building a `serde_json::Value` tree of every body and re-serializing each message for
//! its `raw` copy was a tenth of the broker's CPU under closed-loop ingest (BENCHMARKS.md,
//! stop 8). Here strings borrow from the body where they can and each message's `raw` is its
//! original JSON text, sliced out of the body, not re-serialized.
//!
//! Invariant: this path either yields exactly what the lenient parser ([`super::webhook`]) would
//! (up to `raw` being the original text rather than a re-serialization of the same JSON value),
//! or `None`, and the lenient parser takes the body. It declines anything unusual: a field of an
//! unexpected type, a change that carries neither messages nor statuses (template updates,
//! account events — the lenient parser keeps them whole), duplicate keys, a body that is not an
//! object or not UTF-8 throughout (the lenient parser refuses it as not JSON).
//!
//! It also declines every body with something the broker must keep verbatim rather than use
//! (see [`super::webhook`]): a message without id, sender or business number, a status without
//! id or with an unknown `status`, a value key outside [`VALUE_KEYS`] (`Value` denies unknown
//! fields), a `messages` change that yields nothing. So this path never produces
//! [`Notification::other`] or [`Notification::skipped`], the one place that decides what is
//! kept is the lenient parser, and only bodies holding such items pay for the second parse;
//! Meta's usual bodies cost exactly what they did.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

#[cfg(doc)]
use super::webhook::VALUE_KEYS;
use super::webhook::{customer_name, sender};
use crate::domain::inbound::{InboundMessage, InboundStatus, Notification};
use crate::domain::{DeliveryStatus, MessageError, Millis};

type Str<'a> = Option<Cow<'a, str>>;

#[derive(Deserialize)]
struct Root<'a> {
    #[serde(borrow, default)]
    entry: Option<Vec<Entry<'a>>>,
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow, default)]
    changes: Option<Vec<Change<'a>>>,
}

#[derive(Deserialize)]
struct Change<'a> {
    #[serde(borrow, default)]
    field: Str<'a>,
    #[serde(borrow, default)]
    value: Option<Value<'a>>,
}

/// Exactly [`VALUE_KEYS`]: any other key declines the body (the lenient parser keeps it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Value<'a> {
    #[serde(rename = "messaging_product", default)]
    _messaging_product: Option<serde::de::IgnoredAny>,
    #[serde(borrow, default)]
    metadata: Option<Metadata<'a>>,
    #[serde(borrow, default)]
    contacts: Option<Vec<Contact<'a>>>,
    #[serde(borrow, default)]
    messages: Option<Vec<&'a RawValue>>,
    /// Each status's original text, read into [`Status`] one by one: its `raw` is kept.
    #[serde(borrow, default)]
    statuses: Option<Vec<&'a RawValue>>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow, default)]
    phone_number_id: Str<'a>,
}

#[derive(Deserialize)]
struct Contact<'a> {
    #[serde(borrow, default)]
    wa_id: Str<'a>,
    #[serde(borrow, default)]
    user_id: Str<'a>,
    #[serde(borrow, default)]
    profile: Option<Named<'a>>,
}

#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow, default)]
    name: Str<'a>,
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(borrow, default)]
    from: Str<'a>,
    #[serde(borrow, default)]
    from_user_id: Str<'a>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(rename = "type", borrow, default)]
    kind: Str<'a>,
    #[serde(borrow, default)]
    text: Option<Texts<'a>>,
    #[serde(borrow, default)]
    image: Option<Texts<'a>>,
    #[serde(borrow, default)]
    video: Option<Texts<'a>>,
    #[serde(borrow, default)]
    document: Option<Texts<'a>>,
    #[serde(borrow, default)]
    sticker: Option<Texts<'a>>,
    #[serde(borrow, default)]
    audio: Option<Texts<'a>>,
    #[serde(borrow, default)]
    button: Option<Texts<'a>>,
    #[serde(borrow, default)]
    interactive: Option<Interactive<'a>>,
    #[serde(borrow, default)]
    reaction: Option<Texts<'a>>,
    #[serde(borrow, default)]
    location: Option<Texts<'a>>,
    #[serde(borrow, default)]
    order: Option<Texts<'a>>,
    #[serde(borrow, default)]
    system: Option<Texts<'a>>,
}

/// The text-bearing fields of every message kind's object (each kind uses one or two).
#[derive(Deserialize)]
struct Texts<'a> {
    #[serde(borrow, default)]
    body: Str<'a>,
    #[serde(borrow, default)]
    caption: Str<'a>,
    #[serde(borrow, default)]
    text: Str<'a>,
    #[serde(borrow, default)]
    title: Str<'a>,
    #[serde(borrow, default)]
    emoji: Str<'a>,
    #[serde(borrow, default)]
    name: Str<'a>,
    #[serde(borrow, default)]
    address: Str<'a>,
}

#[derive(Deserialize)]
struct Interactive<'a> {
    #[serde(borrow, default)]
    button_reply: Option<Texts<'a>>,
    #[serde(borrow, default)]
    list_reply: Option<Texts<'a>>,
}

#[derive(Deserialize)]
struct Status<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(borrow, default)]
    status: Str<'a>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    errors: Option<Vec<ErrorItem<'a>>>,
}

#[derive(Deserialize)]
struct ErrorItem<'a> {
    #[serde(default)]
    code: Option<i64>,
    /// Present (even as null) or absent: a present `title` wins over `message`.
    #[serde(borrow, default, deserialize_with = "present")]
    title: Option<Str<'a>>,
    #[serde(borrow, default)]
    message: Str<'a>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Str<'de>>, D::Error> {
    Str::deserialize(d).map(Some)
}

/// The notification, or None when the lenient parser must decide.
pub(super) fn parse(body: &[u8]) -> Option<Notification> {
    // Serde would also take a struct from an array; the lenient parser keeps those bodies.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    // serde_json skips the strings it ignores (`object`, an entry's `id`) without checking
    // their UTF-8: from bytes, a body the lenient parser refuses as not JSON would be taken
    // here. Checked once up front, both paths give one answer.
    let text = std::str::from_utf8(body).ok()?;
    let root: Root = serde_json::from_str(text).ok()?;
    let mut out = Notification::default();
    for entry in root.entry.iter().flatten() {
        for change in entry.changes.iter().flatten() {
            let value = change.value.as_ref()?;
            let carries = value.messages.is_some() || value.statuses.is_some();
            if change.field.as_deref() != Some("messages") && !carries {
                return None;
            }
            messages(value, &mut out)?;
        }
    }
    Some(out)
}

/// The change's messages and statuses, or None (decline) when one of them cannot be used or
/// there are none: the lenient parser keeps such a change.
fn messages(value: &Value, out: &mut Notification) -> Option<()> {
    let number = value
        .metadata
        .as_ref()
        .and_then(|m| m.phone_number_id.as_deref())
        .unwrap_or("");
    let contacts: Vec<_> = value
        .contacts
        .iter()
        .flatten()
        .map(|c| {
            let name = c.profile.as_ref().and_then(|p| p.name.as_deref());
            (c.wa_id.as_deref(), c.user_id.as_deref(), name)
        })
        .collect();
    let messages_len = value.messages.as_ref().map_or(0, Vec::len);
    if messages_len + value.statuses.as_ref().map_or(0, Vec::len) == 0 {
        return None;
    }
    let now = chrono::Utc::now().timestamp_millis();
    for raw in value.messages.iter().flatten() {
        let m: Message = serde_json::from_str(raw.get()).ok()?;
        let from = m.from.as_deref().or(m.from_user_id.as_deref());
        let (wamid, customer) = sender(number, m.id.as_deref(), from)?;
        let customer_name = customer_name(&contacts, customer);
        let kind = m.kind.as_deref().unwrap_or("unknown");
        out.messages.push(InboundMessage {
            number: number.to_string(),
            customer: customer.to_string(),
            customer_name,
            wamid: wamid.to_string(),
            sent_at: timestamp_ms(m.timestamp).unwrap_or(now),
            kind: kind.to_string(),
            text: text_of(kind, &m),
            raw: raw.get().to_string(),
        });
    }
    for raw in value.statuses.iter().flatten() {
        let s: Status = serde_json::from_str(raw.get()).ok()?;
        let status = s.status.as_deref().and_then(DeliveryStatus::parse);
        let (Some(wamid), Some(status)) = (s.id.as_deref(), status) else {
            return None;
        };
        let error = s.errors.iter().flatten().next().map(|e| MessageError {
            code: e.code.unwrap_or(0),
            title: match &e.title {
                Some(title) => title.as_deref(),
                None => e.message.as_deref(),
            }
            .unwrap_or("")
            .to_string(),
        });
        out.statuses.push(InboundStatus {
            number: number.to_string(),
            wamid: wamid.to_string(),
            status,
            error,
            at: timestamp_ms(s.timestamp).unwrap_or(now),
            raw: raw.get().to_string(),
        });
    }
    Some(())
}

/// Meta's timestamps: seconds, as a string or a number (anything else: none).
fn timestamp_ms(v: Option<&RawValue>) -> Option<Millis> {
    let text = v?.get();
    let secs = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(s) if s.contains('\\') => serde_json::from_str::<String>(text)
            .ok()?
            .trim()
            .parse::<i64>()
            .ok()?,
        Some(s) => s.trim().parse::<i64>().ok()?,
        None => text.parse::<i64>().ok()?,
    };
    super::webhook::millis_from_secs(secs)
}

/// The human-readable text of a message, whatever its type (as the lenient parser reads it).
fn text_of(kind: &str, m: &Message) -> Option<String> {
    fn field(
        t: &Option<Texts<'_>>,
        f: for<'t> fn(&'t Texts<'_>) -> Option<&'t str>,
    ) -> Option<String> {
        t.as_ref().and_then(f).map(str::to_string)
    }
    match kind {
        "text" => field(&m.text, |t| t.body.as_deref()),
        "image" => field(&m.image, |t| t.caption.as_deref()),
        "video" => field(&m.video, |t| t.caption.as_deref()),
        "document" => field(&m.document, |t| t.caption.as_deref()),
        "sticker" => field(&m.sticker, |t| t.caption.as_deref()),
        "audio" => field(&m.audio, |t| t.caption.as_deref()),
        "button" => field(&m.button, |t| t.text.as_deref()),
        "interactive" => m.interactive.as_ref().and_then(|i| {
            field(&i.button_reply, |t| t.title.as_deref())
                .or_else(|| field(&i.list_reply, |t| t.title.as_deref()))
        }),
        "reaction" => field(&m.reaction, |t| t.emoji.as_deref()),
        "location" => field(&m.location, |t| t.name.as_deref())
            .or_else(|| field(&m.location, |t| t.address.as_deref())),
        "order" => field(&m.order, |t| t.text.as_deref()),
        "system" => field(&m.system, |t| t.body.as_deref()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whatsapp::webhook::parse_lenient;

    /// Both parsers agree: `raw` as the same JSON value, everything else exactly.
    fn agree(body: &str) -> Notification {
        let Some(fast) = parse(body.as_bytes()) else {
            panic!("the fast path declined {body}");
        };
        let slow = match parse_lenient(body.as_bytes()) {
            Ok(n) => n,
            Err(e) => panic!("lenient parser refused {body}: {e}"),
        };
        let value = |s: &str| serde_json::from_str::<serde_json::Value>(s).ok();
        assert_eq!(fast.messages.len(), slow.messages.len(), "{body}");
        for (f, s) in fast.messages.iter().zip(&slow.messages) {
            assert_eq!(value(&f.raw), value(&s.raw));
            // Without a usable timestamp both take "now", read a moment apart.
            assert!((f.sent_at - s.sent_at).abs() < 60_000);
            let strip = |m: &InboundMessage| InboundMessage {
                raw: String::new(),
                sent_at: 0,
                ..m.clone()
            };
            assert_eq!(strip(f), strip(s));
        }
        assert_eq!(fast.statuses.len(), slow.statuses.len(), "{body}");
        for (f, s) in fast.statuses.iter().zip(&slow.statuses) {
            assert_eq!(value(&f.raw), value(&s.raw));
            let strip = |s: &InboundStatus| InboundStatus {
                raw: String::new(),
                ..s.clone()
            };
            assert_eq!(strip(f), strip(s));
        }
        // The fast path takes only bodies with nothing to keep verbatim.
        assert_eq!((fast.skipped, slow.skipped), (0, 0), "{body}");
        assert!(fast.other.is_empty() && slow.other.is_empty(), "{body}");
        fast
    }

    #[test]
    fn agrees_with_the_lenient_parser_on_meta_shapes() {
        for fixture in [
            include_str!("../../tests/fixtures/whatsapp/text_message.json"),
            include_str!("../../tests/fixtures/whatsapp/image_message.json"),
            include_str!("../../tests/fixtures/whatsapp/status_failed.json"),
        ] {
            agree(fixture);
        }
        let n = agree(
            r#"{"object":"whatsapp_business_account","entry":[
              {"id":"1","changes":[{"field":"messages","value":{"messaging_product":"whatsapp",
                "metadata":{"display_phone_number":"1555","phone_number_id":"P1"},
                "contacts":[{"profile":{"name":"Gr\u00fc\u00dfe \ud83d\udc4b"},"wa_id":"49151"},
                            {"profile":{"name":"Two"},"wa_id":"44"}],
                "messages":[
                  {"from":"49151","id":"w1","timestamp":"1700000000","type":"text","text":{"body":"M\u00fcnchen \"quoted\""}},
                  {"from":"44","id":"w2","timestamp":1700000001,"type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"x","title":"Pick"}}},
                  {"from":"44","id":"w3","timestamp":"\u0031\u0037","type":"location","location":{"latitude":1.5,"address":"Main St"}},
                  {"from":"44","id":"w4","type":"brand_new","brand_new":{"k":[1,2,{"z":null}]}},
                  {"from_user_id":"US.9","id":"w5","timestamp":null,"type":"reaction","reaction":{"message_id":"o","emoji":"\ud83d\udc4d"}},
                  {"from":"44","id":"w7","timestamp":"1.5","type":"button","button":{"payload":"p","text":"Yes"}}
                ],
                "statuses":[
                  {"id":"o1","status":"failed","timestamp":"1700000002","recipient_id":"44",
                   "errors":[{"code":131047,"title":null,"message":"ignored: a present title wins"}]},
                  {"id":"o2","status":"read","timestamp":"1700000003","errors":[{"code":1,"message":"m"}]}
                ]}}]},
              {"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"P2"},
                "contacts":[{"profile":{"name":"Only"},"wa_id":"33"}],
                "messages":[{"from":"other","id":"w8","timestamp":"1","type":"image","image":{"caption":"c","id":"m"}}]}}]}
            ]}"#,
        );
        assert_eq!(n.messages.len(), 7);
        assert_eq!(n.statuses.len(), 2);
        assert_eq!(n.skipped, 0);
        assert_eq!(n.messages[0].text.as_deref(), Some("München \"quoted\""));
        assert_eq!(n.messages[0].customer_name.as_deref(), Some("Grüße 👋"));
        assert_eq!(n.messages[0].sent_at, 1_700_000_000_000);
        assert_eq!(n.messages[1].sent_at, 1_700_000_001_000);
        assert_eq!(n.messages[2].sent_at, 17_000);
        assert_eq!(n.messages[6].customer_name.as_deref(), Some("Only"));
        assert_eq!(
            n.statuses[0].error.as_ref().map(|e| e.title.as_str()),
            Some("")
        );
        // `raw` is the message's original text.
        assert!(n.messages[0].raw.contains(r#"M\u00fcnchen"#));
    }

    #[test]
    fn declines_what_only_the_lenient_parser_keeps() {
        for body in [
            include_str!("../../tests/fixtures/whatsapp/template_status_approved.json"),
            r#"{"entry":{"not":"an array"}}"#,
            r#"{"entry":[{"changes":[{"field":"messages"}]}]}"#,
            r#"{"entry":[{"changes":[{"field":"messages","value":{"messages":["text"]}}]}]}"#,
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
               "statuses":[{"id":"o","status":"sent","errors":[{"code":"NaN"}]}]}}]}]}"#,
            r#"{"entry":[{"changes":[{"field":"x","value":{"messages":null}}]}]}"#,
            r#"{"entry":[],"entry":[]}"#,
            "{not json",
        ] {
            assert!(parse(body.as_bytes()).is_none(), "{body}");
        }
        for (body, _) in KEPT {
            assert!(parse(body.as_bytes()).is_none(), "{body}");
        }
    }

    /// Bodies holding something the broker cannot use, each with the messages and statuses it
    /// still uses: (body, (messages, statuses, skipped)).
    const KEPT: [(&str, (usize, usize, usize)); 14] = [
        // A message without a business number.
        (
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{},
              "messages":[{"from":"a","id":"w1","type":"text","text":{"body":"x"}}]}}]}]}"#,
            (0, 0, 1),
        ),
        // A message without an id, next to a good one.
        (
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
              "messages":[{"from":"a","type":"text","text":{"body":"no id"}},
                          {"from":"a","id":"w2","type":"text","text":{"body":"ok"}}]}}]}]}"#,
            (1, 0, 1),
        ),
        // A message without a sender.
        (
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
              "messages":[{"id":"w3","type":"text","text":{"body":"no sender"}}]}}]}]}"#,
            (0, 0, 1),
        ),
        // A status the broker does not know, next to a known one.
        (
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
              "statuses":[{"id":"o1","status":"deleted","timestamp":"1"},
                          {"id":"o2","status":"read","timestamp":"2"}]}}]}]}"#,
            (0, 1, 1),
        ),
        // A status without an id.
        (
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
              "statuses":[{"status":"sent","timestamp":"1"}]}}]}]}"#,
            (0, 0, 1),
        ),
        // An unknown key at the value level, next to a good message.
        (
            r#"{"entry":[{"changes":[{"field":"messages","value":{"messaging_product":"whatsapp",
              "metadata":{"phone_number_id":"1"},"brand_new_key":{"k":1},
              "messages":[{"from":"a","id":"w4","type":"text","text":{"body":"ok"}}]}}]}]}"#,
            (1, 0, 0),
        ),
        // A `messages` change with neither messages nor statuses.
        (
            r#"{"entry":[{"changes":[{"field":"messages","value":{"messaging_product":"whatsapp",
              "metadata":{"phone_number_id":"1"},
              "errors":[{"code":131000,"title":"Something went wrong"}]}}]}]}"#,
            (0, 0, 0),
        ),
        (
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
              "messages":[]}}]}]}"#,
            (0, 0, 0),
        ),
        (
            r#"{"entry":[{"changes":[{"field":"messages"}]}]}"#,
            (0, 0, 0),
        ),
        (
            r#"{"entry":[{"changes":[{"field":"x","value":{"messages":null}}]}]}"#,
            (0, 0, 0),
        ),
        // Items that are not objects, lists that are not lists.
        (
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
              "messages":["text"]}}]}]}"#,
            (0, 0, 1),
        ),
        (
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
              "messages":{"from":"a","id":"w5"}}}]}]}"#,
            (0, 0, 0),
        ),
        (r#"{"entry":[{"changes":{"field":"messages"}}]}"#, (0, 0, 0)),
        (r#"{"entry":{"not":"an array"}}"#, (0, 0, 0)),
    ];

    /// What the fast path declines, the lenient parser uses as far as it can and keeps whole:
    /// nothing of an acknowledged body is dropped.
    #[test]
    fn the_lenient_parser_keeps_what_the_fast_path_declines() {
        for (body, (messages, statuses, skipped)) in KEPT {
            let n = crate::whatsapp::webhook::parse(body.as_bytes()).expect("parse");
            assert_eq!(
                (n.messages.len(), n.statuses.len(), n.skipped),
                (messages, statuses, skipped),
                "{body}"
            );
            assert_eq!(n.other.len(), 1, "{body}");
            let kept: serde_json::Value = serde_json::from_str(&n.other[0].raw).expect("kept JSON");
            let root: serde_json::Value = serde_json::from_str(body).expect("body JSON");
            let changes = &root["entry"][0]["changes"];
            let expected = if changes.is_array() {
                &changes[0]
            } else if root["entry"].is_array() {
                &root["entry"][0]
            } else {
                &root
            };
            assert_eq!(&kept, expected, "kept verbatim: {body}");
            let field = expected["field"].as_str().unwrap_or("");
            assert_eq!(n.other[0].field, field, "{body}");
            // The same body again keeps the same bytes (stored once under their digest).
            let again = crate::whatsapp::webhook::parse(body.as_bytes()).expect("parse");
            assert_eq!(again.other, n.other, "{body}");
        }
    }
}
