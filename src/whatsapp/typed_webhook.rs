//! The fast path of webhook parsing: Meta's usual shapes, deserialized straight into typed,
//! borrowed structs.
//!
//! Why: building a `serde_json::Value` tree of every body and re-serializing each message for
//! its `raw` copy was a tenth of the broker's CPU under closed-loop ingest (stop 8,
//! in `git log -p -- BENCHMARKS.md`). Here strings borrow from the body where they can and each message's `raw` is its
//! original JSON text, sliced out of the body, not re-serialized.
//!
//! Invariant: this path either yields exactly what the lenient parser ([`super::webhook`]) would
//! (up to `raw`, and the JSON a message's detail keeps as text, being the original text rather
//! than a re-serialization of the same JSON value),
//! or `None`, and the lenient parser takes the body. It declines anything unusual: a field of an
//! unexpected type, a change that carries neither messages nor statuses (template updates,
//! account events — the lenient parser keeps them whole), duplicate keys, a body that is not an
//! object or not UTF-8 throughout (the lenient parser refuses it as not JSON). A message's
//! type-specific parts (`text`, `image`, `interactive`, `context`, …) and a status's `pricing`
//! are read by [`super::message_body`] in both paths, from the item's JSON text, so the two agree
//! on them by construction (a part of an odd shape loses its typed reading in both).
//!
//! It also declines every body with something the broker must keep verbatim rather than use
//! (see [`super::webhook`]): a `system` message (it may move its sender's ids), a message
//! without id, sender or business number, a status without
//! id or with an unknown `status`, a value key outside [`VALUE_KEYS`] (`Value` denies unknown
//! fields), a `messages` change that yields nothing. So this path never produces
//! [`Notification::other`] or [`Notification::skipped`], the one place that decides what is
//! kept is the lenient parser, and only bodies holding such items pay for the second parse;
//! Meta's usual bodies cost exactly what they did.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::message_body::{self, Raw};
#[cfg(doc)]
use super::webhook::VALUE_KEYS;
use super::webhook::{customer_name, sender, sender_ids, ContactRef};
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
    #[serde(borrow, default)]
    username: Str<'a>,
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
    // A text's parts, read here (see `message_body::read_text`); every other type's are read by
    // `message_body` from the message's text.
    #[serde(borrow, default)]
    text: Raw<'a>,
    #[serde(borrow, default)]
    context: Raw<'a>,
    #[serde(borrow, default)]
    referral: Raw<'a>,
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
    #[serde(borrow, default)]
    pricing: Option<&'a RawValue>,
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
        .map(|c| ContactRef {
            wa_id: c.wa_id.as_deref(),
            user_id: c.user_id.as_deref(),
            name: c.profile.as_ref().and_then(|p| p.name.as_deref()),
            username: c.profile.as_ref().and_then(|p| p.username.as_deref()),
        })
        .collect();
    let messages_len = value.messages.as_ref().map_or(0, Vec::len);
    if messages_len + value.statuses.as_ref().map_or(0, Vec::len) == 0 {
        return None;
    }
    let now = chrono::Utc::now().timestamp_millis();
    for raw in value.messages.iter().flatten() {
        // Serde would also take the struct from a list; the lenient parser skips (and keeps)
        // a message that is not an object.
        if !raw.get().starts_with('{') {
            return None;
        }
        let m: Message = serde_json::from_str(raw.get()).ok()?;
        let kind = m.kind.as_deref().unwrap_or("unknown");
        // A system message may move its sender's ids: the lenient parser reads those.
        if kind == "system" {
            return None;
        }
        let ids = sender_ids(&contacts, m.from.as_deref(), m.from_user_id.as_deref());
        let (wamid, customer) = sender(number, m.id.as_deref(), ids.customer())?;
        let (wamid, customer) = (wamid.to_string(), customer.to_string());
        let customer_name = customer_name(&contacts, &ids);
        let body = match kind {
            "text" => message_body::read_text(m.text, m.context, m.referral),
            _ => message_body::read(kind, raw.get())?,
        };
        out.messages.push(InboundMessage {
            number: number.to_string(),
            customer,
            customer_name,
            ids,
            identity_change: None,
            wamid,
            sent_at: timestamp_ms(m.timestamp).unwrap_or(now),
            kind: kind.to_string(),
            text: body.text,
            detail: body.detail,
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
            pricing: message_body::pricing(s.pricing.map(RawValue::get)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::whatsapp::webhook::parse_lenient;

    /// `detail` with the JSON it keeps as text re-serialized, so two copies of the same JSON
    /// value compare equal.
    fn normalized(
        d: &crate::domain::inbound::InboundDetail,
    ) -> crate::domain::inbound::InboundDetail {
        use crate::domain::message::Content;
        let norm = |s: &str| match serde_json::from_str::<serde_json::Value>(s) {
            Ok(v) => v.to_string(),
            Err(e) => panic!("kept JSON is no JSON: {e}: {s}"),
        };
        let mut d = d.clone();
        d.referral = d.referral.as_deref().map(norm);
        d.content = d.content.map(|c| match c {
            Content::Contacts { json } => Content::Contacts { json: norm(&json) },
            Content::Order { json } => Content::Order { json: norm(&json) },
            Content::Unsupported { kind, errors } => Content::Unsupported {
                kind,
                errors: errors.as_deref().map(norm),
            },
            other => other,
        });
        d
    }

    /// Both parsers agree: `raw` and the JSON kept as text in `detail` as the same JSON values,
    /// everything else exactly.
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
                detail: normalized(&m.detail),
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

    /// One message of every type Meta's webhook reference lists (and one it does not), each
    /// typed the same by both parsers; statuses with and without `pricing`.
    #[test]
    fn both_parsers_type_every_message_type_alike() {
        let n = agree(
            r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{
              "messaging_product":"whatsapp","metadata":{"display_phone_number":"1555","phone_number_id":"P1"},
              "contacts":[{"profile":{"name":"Ann"},"wa_id":"44"}],
              "messages":[
                {"from":"44","id":"m1","timestamp":"1","type":"text","text":{"body":"hi"},
                 "context":{"from":"1555","id":"wamid.OUT","forwarded":true},
                 "referral":{"source_url":"https://fb.me/a","source_type":"ad","source_id":"9","headline":"H"}},
                {"from":"44","id":"m2","timestamp":"1","type":"image","image":{"caption":"pic","mime_type":"image/jpeg","sha256":"s","id":"i1"}},
                {"from":"44","id":"m3","timestamp":"1","type":"audio","audio":{"mime_type":"audio/ogg; codecs=opus","sha256":"s","id":"a1","voice":true}},
                {"from":"44","id":"m4","timestamp":"1","type":"video","video":{"mime_type":"video/mp4","sha256":"s","id":"v1"}},
                {"from":"44","id":"m5","timestamp":"1","type":"document","document":{"filename":"f.pdf","mime_type":"application/pdf","sha256":"s","id":"d1"}},
                {"from":"44","id":"m6","timestamp":"1","type":"sticker","sticker":{"mime_type":"image/webp","sha256":"s","id":"s1","animated":false}},
                {"from":"44","id":"m7","timestamp":"1","type":"location","location":{"latitude":1.5,"longitude":2,"name":"N"}},
                {"from":"44","id":"m8","timestamp":"1","type":"contacts","contacts":[{"name":{"formatted_name":"Bo"}}]},
                {"from":"44","id":"m9","timestamp":"1","type":"interactive","interactive":{"type":"nfm_reply","nfm_reply":{"name":"flow","body":"Sent","response_json":"{\"a\":1}"}}},
                {"from":"44","id":"m10","timestamp":"1","type":"button","button":{"payload":"P","text":"T"}},
                {"from":"44","id":"m11","timestamp":"1","type":"order","order":{"catalog_id":"c","text":"t","product_items":[]}},
                {"from":"44","id":"m12","timestamp":"1","type":"unsupported","errors":[{"code":131051,"title":"Message type unknown"}]},
                {"from":"44","id":"m13","timestamp":"1","type":"reaction","reaction":{"message_id":"wamid.OUT","emoji":"❤"}},
                {"from":"44","id":"m14","timestamp":"1","type":"image","image":"odd"}
              ],
              "statuses":[
                {"id":"o1","status":"sent","timestamp":"2","recipient_id":"44",
                 "pricing":{"billable":true,"pricing_model":"PMP","category":"utility","type":"regular"}},
                {"id":"o2","status":"delivered","timestamp":"2","pricing":"odd"}
              ]}}]}]}"#,
        );
        let m = &n.messages;
        assert_eq!(m[0].detail.quotes.as_deref(), Some("wamid.OUT"));
        assert!(m[0]
            .detail
            .referral
            .as_deref()
            .is_some_and(|r| r.contains("fb.me")));
        assert_eq!(
            m[1].detail.media.as_ref().map(|m| m.id.as_str()),
            Some("i1")
        );
        assert_eq!(m[4].text.as_deref(), Some("f.pdf"));
        assert!(m[8].detail.content.is_some() && m[9].detail.content.is_some());
        assert!(m[12].detail.reaction.is_some());
        assert!(m[13].detail.media.is_none());
        assert_eq!(
            n.statuses[0].pricing.as_ref().map(|p| p.category.as_str()),
            Some("utility")
        );
        assert_eq!(n.statuses[1].pricing, None);
    }

    /// Meta's 2026 identity fields: a sender named by its user id, by its phone, or by neither in
    /// the message but by its contact; both parsers read the same ids.
    #[test]
    fn reads_phones_user_ids_and_usernames_like_the_lenient_parser() {
        let n = agree(
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"P1"},
              "contacts":[{"profile":{"name":"Ana","username":"ana.k"},"user_id":"US.1"},
                          {"profile":{"name":"Ben"},"wa_id":"4915","user_id":"DE.2"},
                          {"profile":{"name":"Cy"},"wa_id":"4477"}],
              "messages":[
                {"from_user_id":"US.1","id":"w1","timestamp":"1","type":"text","text":{"body":"a"}},
                {"from":"4915","id":"w2","timestamp":"1","type":"text","text":{"body":"b"}},
                {"from":"4477","from_user_id":"GB.3","id":"w3","timestamp":"1","type":"text","text":{"body":"c"}}
              ]}}]}]}"#,
        );
        let ids: Vec<_> = n
            .messages
            .iter()
            .map(|m| {
                (
                    m.customer.as_str(),
                    m.ids.phone.as_deref(),
                    m.ids.user_id.as_deref(),
                    m.ids.username.as_deref(),
                    m.customer_name.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            ids,
            [
                ("US.1", None, Some("US.1"), Some("ana.k"), Some("Ana")),
                ("4915", Some("4915"), Some("DE.2"), None, Some("Ben")),
                ("4477", Some("4477"), Some("GB.3"), None, Some("Cy")),
            ]
        );
        // Neither id in the message: the only contact is the sender.
        let n = agree(
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"P1"},
              "contacts":[{"profile":{"name":"Di"},"user_id":"BR.4"}],
              "messages":[{"id":"w4","timestamp":"1","type":"text","text":{"body":"d"}}]}}]}]}"#,
        );
        assert_eq!(n.messages[0].customer, "BR.4");
    }

    #[test]
    fn declines_what_only_the_lenient_parser_keeps() {
        for body in [
            include_str!("../../tests/fixtures/whatsapp/template_status_approved.json"),
            r#"{"entry":{"not":"an array"}}"#,
            r#"{"entry":[{"changes":[{"field":"messages"}]}]}"#,
            r#"{"entry":[{"changes":[{"field":"messages","value":{"messages":["text"]}}]}]}"#,
            // A message that is a list, not an object (serde would read it as one).
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
               "messages":[["w1","a"]]}}]}]}"#,
            r#"{"entry":[{"changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1"},
               "messages":[["w1","a",null,"1","text",{"body":"x"}]]}}]}]}"#,
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
