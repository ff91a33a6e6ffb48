//! The type-specific part of an inbound message (`text`, `image`, `interactive`, `reaction`, …,
//! and `context`, `referral`, `errors`) and a status callback's `pricing`, read into the domain's
//! types; one reader for both webhook parsers, so they agree on it by construction.
//!
//! Each part is taken as its original JSON text and read on its own: a part of a shape the broker
//! does not expect (a field of another type, say) loses only that part's typed reading; the
//! message is still stored, with its kind, and `raw` keeps every byte of it.
//!
//! What `text` (the API's readable summary) is, per type: `text` its body; `image`, `video`,
//! `audio`, `sticker` their caption; `document` its caption, else its file name; `location` its
//! name, else its address; `contacts` the shared cards' formatted names, comma-separated;
//! `interactive` the chosen button's or row's title (`button_reply`, `list_reply`) or a flow's
//! `body` (`nfm_reply`); `button` its text; `order` the customer's note; `system` its body;
//! anything else (`unsupported`, `reaction`, unknown types) none.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::domain::inbound::{InboundDetail, InboundReaction};
use crate::domain::message::{Content, MediaInfo, Pricing};

type Str<'a> = Option<Cow<'a, str>>;
pub(super) type Raw<'a> = Option<&'a RawValue>;

/// A media part's `mime_type` when Meta gave none (it always does for media it delivers).
const UNKNOWN_MIME: &str = "application/octet-stream";

/// What one message's type-specific part reads as.
#[derive(Debug, Default)]
pub(super) struct Body {
    pub text: Option<String>,
    pub detail: InboundDetail,
}

/// Every part of a message this module reads, each as its JSON text.
#[derive(Deserialize)]
struct Parts<'a> {
    #[serde(borrow, default)]
    text: Raw<'a>,
    #[serde(borrow, default)]
    image: Raw<'a>,
    #[serde(borrow, default)]
    audio: Raw<'a>,
    #[serde(borrow, default)]
    video: Raw<'a>,
    #[serde(borrow, default)]
    document: Raw<'a>,
    #[serde(borrow, default)]
    sticker: Raw<'a>,
    #[serde(borrow, default)]
    location: Raw<'a>,
    #[serde(borrow, default)]
    contacts: Raw<'a>,
    #[serde(borrow, default)]
    interactive: Raw<'a>,
    #[serde(borrow, default)]
    button: Raw<'a>,
    #[serde(borrow, default)]
    order: Raw<'a>,
    #[serde(borrow, default)]
    system: Raw<'a>,
    #[serde(borrow, default)]
    reaction: Raw<'a>,
    #[serde(borrow, default)]
    unsupported: Raw<'a>,
    #[serde(borrow, default)]
    errors: Raw<'a>,
    #[serde(borrow, default)]
    context: Raw<'a>,
    #[serde(borrow, default)]
    referral: Raw<'a>,
}

#[derive(Deserialize)]
struct Text<'a> {
    #[serde(borrow, default)]
    body: Str<'a>,
}

/// `image`, `audio`, `video`, `document`, `sticker`.
#[derive(Deserialize)]
struct Media<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(borrow, default)]
    mime_type: Str<'a>,
    #[serde(borrow, default)]
    sha256: Str<'a>,
    #[serde(borrow, default)]
    caption: Str<'a>,
    #[serde(borrow, default)]
    filename: Str<'a>,
    #[serde(default)]
    voice: Option<bool>,
    #[serde(default)]
    animated: Option<bool>,
}

#[derive(Deserialize)]
struct Location<'a> {
    latitude: f64,
    longitude: f64,
    #[serde(borrow, default)]
    name: Str<'a>,
    #[serde(borrow, default)]
    address: Str<'a>,
    #[serde(borrow, default)]
    url: Str<'a>,
}

/// A shared contact card, as far as its summary needs it.
#[derive(Deserialize)]
struct Card<'a> {
    #[serde(borrow, default)]
    name: Option<CardName<'a>>,
}

#[derive(Deserialize)]
struct CardName<'a> {
    #[serde(borrow, default)]
    formatted_name: Str<'a>,
}

#[derive(Deserialize)]
struct Interactive<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Str<'a>,
    #[serde(borrow, default)]
    button_reply: Raw<'a>,
    #[serde(borrow, default)]
    list_reply: Raw<'a>,
    #[serde(borrow, default)]
    nfm_reply: Raw<'a>,
}

/// `button_reply` and `list_reply`.
#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    title: Cow<'a, str>,
    #[serde(borrow, default)]
    description: Str<'a>,
}

#[derive(Deserialize)]
struct FlowReply<'a> {
    #[serde(borrow)]
    response_json: Cow<'a, str>,
    #[serde(borrow, default)]
    name: Str<'a>,
    #[serde(borrow, default)]
    body: Str<'a>,
}

#[derive(Deserialize)]
struct Button<'a> {
    #[serde(borrow, default)]
    payload: Str<'a>,
    #[serde(borrow)]
    text: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Order<'a> {
    #[serde(borrow, default)]
    text: Str<'a>,
}

#[derive(Deserialize)]
struct System<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow, default)]
    body: Str<'a>,
}

#[derive(Deserialize)]
struct Reaction<'a> {
    #[serde(borrow, default)]
    message_id: Str<'a>,
    #[serde(borrow, default)]
    emoji: Str<'a>,
}

#[derive(Deserialize)]
struct Unsupported<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Str<'a>,
}

#[derive(Deserialize)]
struct Context<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(default)]
    forwarded: Option<bool>,
    #[serde(default)]
    frequently_forwarded: Option<bool>,
}

#[derive(Deserialize)]
struct PricingPart<'a> {
    #[serde(borrow)]
    category: Cow<'a, str>,
    #[serde(rename = "type", borrow, default)]
    kind: Str<'a>,
    #[serde(borrow, default)]
    pricing_model: Str<'a>,
    #[serde(default)]
    billable: Option<bool>,
}

/// `part` read as `T`, or None when absent or of another shape.
fn part<'a, T: Deserialize<'a>>(part: Raw<'a>) -> Option<T> {
    serde_json::from_str(part?.get()).ok()
}

fn owned(s: Str<'_>) -> Option<String> {
    s.map(Cow::into_owned)
}

/// Reads the message `raw` (its JSON text) of type `kind`; None when `raw` is not a JSON object
/// this reader can walk (the fast parser then leaves the body to the lenient one).
pub(super) fn read(kind: &str, raw: &str) -> Option<Body> {
    // Serde would also take a struct from an array; a message is an object.
    if !raw.trim_start().starts_with('{') {
        return None;
    }
    let p: Parts = serde_json::from_str(raw).ok()?;
    if kind == "text" {
        return Some(read_text(p.text, p.context, p.referral));
    }
    let mut body = Body::default();
    let d = &mut body.detail;
    quoting(p.context, p.referral, d);
    body.text = match kind {
        "image" | "audio" | "video" | "document" | "sticker" => {
            let raw = match kind {
                "image" => p.image,
                "audio" => p.audio,
                "video" => p.video,
                "document" => p.document,
                _ => p.sticker,
            };
            part::<Media>(raw).and_then(|m| media(kind, m, d))
        }
        "location" => part::<Location>(p.location).and_then(|l| {
            let text = l.name.clone().or_else(|| l.address.clone());
            d.content = Some(Content::Location {
                latitude: l.latitude,
                longitude: l.longitude,
                name: owned(l.name),
                address: owned(l.address),
                url: owned(l.url),
            });
            owned(text)
        }),
        "contacts" => p
            .contacts
            .filter(|c| c.get().starts_with('['))
            .and_then(|c| {
                d.content = Some(Content::Contacts {
                    json: c.get().to_string(),
                });
                let cards: Vec<Card> = serde_json::from_str(c.get()).unwrap_or_default();
                let names: Vec<_> = cards
                    .into_iter()
                    .filter_map(|c| c.name.and_then(|n| n.formatted_name))
                    .collect();
                (!names.is_empty()).then(|| names.join(", "))
            }),
        "interactive" => part::<Interactive>(p.interactive).and_then(|i| interactive(i, d)),
        "button" => part::<Button>(p.button).map(|b| {
            let text = b.text.into_owned();
            d.content = Some(Content::Button {
                payload: owned(b.payload),
                text: text.clone(),
            });
            text
        }),
        "order" => p.order.filter(|o| o.get().starts_with('{')).and_then(|o| {
            d.content = Some(Content::Order {
                json: o.get().to_string(),
            });
            part::<Order>(Some(o)).and_then(|o| owned(o.text))
        }),
        "system" => part::<System>(p.system).and_then(|s| {
            let text = owned(s.body);
            d.content = Some(Content::System {
                kind: s.kind.into_owned(),
                body: text.clone(),
            });
            text
        }),
        "reaction" => {
            let r = part::<Reaction>(p.reaction);
            d.reaction = Some(InboundReaction {
                target: r
                    .as_ref()
                    .and_then(|r| r.message_id.as_deref())
                    .filter(|w| !w.is_empty())
                    .map(str::to_string),
                emoji: r.and_then(|r| owned(r.emoji)).filter(|e| !e.is_empty()),
            });
            None
        }
        "unsupported" => {
            d.content = Some(Content::Unsupported {
                kind: part::<Unsupported>(p.unsupported).and_then(|u| owned(u.kind)),
                errors: p
                    .errors
                    .filter(|e| e.get().starts_with('['))
                    .map(|e| e.get().to_string()),
            });
            None
        }
        _ => None,
    };
    Some(body)
}

/// A `text` message from its `text`, `context` and `referral` parts: what [`read`] makes of
/// one, without reading the rest of it (the fast parser reads these three parts with the
/// message's header, so the commonest message is not parsed twice).
pub(super) fn read_text<'a>(text: Raw<'a>, context: Raw<'a>, referral: Raw<'a>) -> Body {
    let mut body = Body::default();
    quoting(context, referral, &mut body.detail);
    body.text = part::<Text>(text).and_then(|t| owned(t.body));
    body
}

/// What every type may carry: the message it quotes and the ad it came from.
fn quoting(context: Raw<'_>, referral: Raw<'_>, d: &mut InboundDetail) {
    if let Some(c) = part::<Context>(context) {
        d.quotes = owned(c.id).filter(|w| !w.is_empty());
    }
    // Kept as Meta sent it: `source_url`, `source_id`, `headline`, `ctwa_clid`, … .
    d.referral = referral
        .filter(|r| r.get().starts_with('{'))
        .map(|r| r.get().to_string());
}

/// A media part into `detail.media` (and, for audio and stickers, what kind they are); the
/// summary text it gives.
fn media(kind: &str, m: Media<'_>, d: &mut InboundDetail) -> Option<String> {
    match kind {
        "audio" => {
            d.content = Some(Content::Audio {
                voice: m.voice.unwrap_or(false),
            })
        }
        "sticker" => {
            d.content = Some(Content::Sticker {
                animated: m.animated.unwrap_or(false),
            })
        }
        _ => {}
    }
    let caption = owned(m.caption);
    let filename = owned(m.filename);
    let text = caption.clone().or_else(|| {
        if kind == "document" {
            filename.clone()
        } else {
            None
        }
    });
    d.media = owned(m.id).filter(|id| !id.is_empty()).map(|id| MediaInfo {
        id,
        mime_type: owned(m.mime_type).unwrap_or_else(|| UNKNOWN_MIME.to_string()),
        sha256: owned(m.sha256),
        size: None,
        filename,
        caption,
        downloaded: false,
    });
    text
}

fn interactive(i: Interactive<'_>, d: &mut InboundDetail) -> Option<String> {
    // Meta names the reply's kind in `type`; a body without it is read by which part it has.
    let kind = i.kind.as_deref().unwrap_or(if i.button_reply.is_some() {
        "button_reply"
    } else if i.list_reply.is_some() {
        "list_reply"
    } else {
        "nfm_reply"
    });
    match kind {
        "button_reply" => part::<Choice>(i.button_reply).map(|c| {
            let title = c.title.into_owned();
            d.content = Some(Content::ButtonReply {
                id: c.id.into_owned(),
                title: title.clone(),
            });
            title
        }),
        "list_reply" => part::<Choice>(i.list_reply).map(|c| {
            let title = c.title.into_owned();
            d.content = Some(Content::ListReply {
                id: c.id.into_owned(),
                title: title.clone(),
                description: owned(c.description),
            });
            title
        }),
        "nfm_reply" => part::<FlowReply>(i.nfm_reply).and_then(|f| {
            let body = owned(f.body);
            d.content = Some(Content::FlowReply {
                response_json: f.response_json.into_owned(),
                name: owned(f.name),
                body: body.clone(),
            });
            body
        }),
        _ => None,
    }
}

/// A status callback's `pricing` object (its JSON text); None when it is not one.
pub(super) fn pricing(raw: Option<&str>) -> Option<Pricing> {
    let p: PricingPart = serde_json::from_str(raw?).ok()?;
    Some(Pricing {
        category: p.category.into_owned(),
        kind: owned(p.kind),
        pricing_model: owned(p.pricing_model),
        billable: p.billable,
    })
}

/// Whether a message says it was forwarded, and forwarded many times (Meta's
/// `context.forwarded` and `context.frequently_forwarded`), read from its kept JSON.
pub fn forwarded(raw: &str) -> (bool, bool) {
    // Most messages say nothing of it: they are not parsed again.
    if !raw.contains("forwarded") {
        return (false, false);
    }
    #[derive(Deserialize)]
    struct Quoting<'a> {
        #[serde(borrow, default)]
        context: Raw<'a>,
    }
    let context = serde_json::from_str::<Quoting>(raw)
        .ok()
        .and_then(|q| part::<Context>(q.context));
    match context {
        Some(c) => (
            c.forwarded.unwrap_or(false) || c.frequently_forwarded.unwrap_or(false),
            c.frequently_forwarded.unwrap_or(false),
        ),
        None => (false, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(kind: &str, raw: &str) -> Body {
        match read(kind, raw) {
            Some(b) => b,
            None => panic!("not read: {raw}"),
        }
    }

    fn media_of(b: &Body) -> &MediaInfo {
        match &b.detail.media {
            Some(m) => m,
            None => panic!("no media: {b:?}"),
        }
    }

    #[test]
    fn media_parts_become_media_info_not_yet_downloaded() {
        let b = body(
            "image",
            r#"{"type":"image","image":{"caption":"Taj Mahal","mime_type":"image/jpeg",
               "sha256":"SfInY0g=","id":"1003383421387256","url":"https://lookaside.fbsbx.com/x"}}"#,
        );
        assert_eq!(b.text.as_deref(), Some("Taj Mahal"));
        let m = media_of(&b);
        assert_eq!(
            (m.id.as_str(), m.mime_type.as_str(), m.sha256.as_deref()),
            ("1003383421387256", "image/jpeg", Some("SfInY0g="))
        );
        assert_eq!(m.caption.as_deref(), Some("Taj Mahal"));
        assert!(!m.downloaded && m.size.is_none() && m.filename.is_none());
        assert!(b.detail.content.is_none());

        let b = body(
            "document",
            r#"{"type":"document","document":{"filename":"invoice.pdf","mime_type":"application/pdf","sha256":"h","id":"77"}}"#,
        );
        assert_eq!(
            b.text.as_deref(),
            Some("invoice.pdf"),
            "no caption: the file name"
        );
        assert_eq!(media_of(&b).filename.as_deref(), Some("invoice.pdf"));

        let b = body(
            "audio",
            r#"{"type":"audio","audio":{"mime_type":"audio/ogg; codecs=opus","sha256":"h","id":"5","voice":true}}"#,
        );
        assert_eq!(b.text, None);
        assert_eq!(media_of(&b).mime_type, "audio/ogg; codecs=opus");
        assert_eq!(b.detail.content, Some(Content::Audio { voice: true }));

        let b = body(
            "sticker",
            r#"{"type":"sticker","sticker":{"mime_type":"image/webp","sha256":"h","id":"6","animated":true}}"#,
        );
        assert_eq!(b.detail.content, Some(Content::Sticker { animated: true }));
        let b = body(
            "video",
            r#"{"type":"video","video":{"caption":"clip","mime_type":"video/mp4","id":"8"}}"#,
        );
        assert_eq!(b.text.as_deref(), Some("clip"));
        assert_eq!(media_of(&b).sha256, None);

        // Without an id there is nothing to fetch: no media, the caption still shown.
        let b = body("image", r#"{"type":"image","image":{"caption":"c"}}"#);
        assert!(b.detail.media.is_none());
        assert_eq!(b.text.as_deref(), Some("c"));
        let b = body("image", r#"{"type":"image","image":{"id":"9"}}"#);
        assert_eq!(media_of(&b).mime_type, UNKNOWN_MIME);
    }

    #[test]
    fn every_other_type_is_typed() {
        let cases: Vec<(&str, &str, Option<&str>, Option<Content>)> = vec![
            (
                "text",
                r#"{"text":{"body":"hello"}}"#,
                Some("hello"),
                None,
            ),
            (
                "location",
                r#"{"location":{"latitude":52.52,"longitude":13.405,"name":"Berlin","address":"Pariser Platz","url":"https://x"}}"#,
                Some("Berlin"),
                Some(Content::Location {
                    latitude: 52.52,
                    longitude: 13.405,
                    name: Some("Berlin".into()),
                    address: Some("Pariser Platz".into()),
                    url: Some("https://x".into()),
                }),
            ),
            (
                "location",
                r#"{"location":{"latitude":1,"longitude":-2,"address":"Main St"}}"#,
                Some("Main St"),
                Some(Content::Location {
                    latitude: 1.0,
                    longitude: -2.0,
                    name: None,
                    address: Some("Main St".into()),
                    url: None,
                }),
            ),
            (
                "contacts",
                r#"{"contacts":[{"name":{"formatted_name":"Ann Lee","first_name":"Ann"},"phones":[{"phone":"+1 555","wa_id":"1555","type":"CELL"}]},{"name":{"formatted_name":"Bo"}}]}"#,
                Some("Ann Lee, Bo"),
                Some(Content::Contacts {
                    json: r#"[{"name":{"formatted_name":"Ann Lee","first_name":"Ann"},"phones":[{"phone":"+1 555","wa_id":"1555","type":"CELL"}]},{"name":{"formatted_name":"Bo"}}]"#.into(),
                }),
            ),
            (
                "interactive",
                r#"{"interactive":{"type":"button_reply","button_reply":{"id":"yes-1","title":"Yes"}}}"#,
                Some("Yes"),
                Some(Content::ButtonReply {
                    id: "yes-1".into(),
                    title: "Yes".into(),
                }),
            ),
            (
                "interactive",
                r#"{"interactive":{"type":"list_reply","list_reply":{"id":"r2","title":"Tuesday","description":"9-12"}}}"#,
                Some("Tuesday"),
                Some(Content::ListReply {
                    id: "r2".into(),
                    title: "Tuesday".into(),
                    description: Some("9-12".into()),
                }),
            ),
            (
                "interactive",
                r#"{"interactive":{"type":"nfm_reply","nfm_reply":{"name":"flow","body":"Sent","response_json":"{\"flow_token\":\"t\",\"rating\":5}"}}}"#,
                Some("Sent"),
                Some(Content::FlowReply {
                    response_json: r#"{"flow_token":"t","rating":5}"#.into(),
                    name: Some("flow".into()),
                    body: Some("Sent".into()),
                }),
            ),
            (
                "interactive",
                r#"{"interactive":{"type":"call_permission_reply","call_permission_reply":{}}}"#,
                None,
                None,
            ),
            (
                "button",
                r#"{"button":{"payload":"STOP","text":"Unsubscribe"}}"#,
                Some("Unsubscribe"),
                Some(Content::Button {
                    payload: Some("STOP".into()),
                    text: "Unsubscribe".into(),
                }),
            ),
            (
                "order",
                r#"{"order":{"catalog_id":"c1","text":"by Friday","product_items":[{"product_retailer_id":"sku","quantity":2,"item_price":9.5,"currency":"EUR"}]}}"#,
                Some("by Friday"),
                Some(Content::Order {
                    json: r#"{"catalog_id":"c1","text":"by Friday","product_items":[{"product_retailer_id":"sku","quantity":2,"item_price":9.5,"currency":"EUR"}]}"#.into(),
                }),
            ),
            (
                "system",
                r#"{"system":{"body":"Ann changed from 1 to 2","wa_id":"2","type":"user_changed_number"}}"#,
                Some("Ann changed from 1 to 2"),
                Some(Content::System {
                    kind: "user_changed_number".into(),
                    body: Some("Ann changed from 1 to 2".into()),
                }),
            ),
            (
                "unsupported",
                r#"{"errors":[{"code":131051,"title":"Message type unknown"}],"unsupported":{"type":"edit"}}"#,
                None,
                Some(Content::Unsupported {
                    kind: Some("edit".into()),
                    errors: Some(r#"[{"code":131051,"title":"Message type unknown"}]"#.into()),
                }),
            ),
            (
                "hologram",
                r#"{"hologram":{"frames":3},"text":{"body":"not this type's"}}"#,
                None,
                None,
            ),
        ];
        for (kind, raw, text, content) in cases {
            let b = body(kind, raw);
            assert_eq!(b.text.as_deref(), text, "{raw}");
            assert_eq!(b.detail.content, content, "{raw}");
            assert!(
                b.detail.media.is_none() && b.detail.reaction.is_none(),
                "{raw}"
            );
        }
    }

    #[test]
    fn replies_referrals_and_reactions() {
        let b = body(
            "text",
            r#"{"text":{"body":"that one"},"context":{"from":"15550783881","id":"wamid.Q"},
               "referral":{"source_url":"https://fb.me/x","source_type":"ad","source_id":"1","headline":"Sale","ctwa_clid":"c"}}"#,
        );
        assert_eq!(b.detail.quotes.as_deref(), Some("wamid.Q"));
        let referral: serde_json::Value =
            serde_json::from_str(b.detail.referral.as_deref().unwrap_or("null"))
                .unwrap_or_default();
        assert_eq!(referral["headline"], "Sale");
        assert_eq!(referral["ctwa_clid"], "c");

        let b = body(
            "reaction",
            r#"{"reaction":{"message_id":"wamid.T","emoji":"\ud83d\udc4d"}}"#,
        );
        assert_eq!(b.text, None);
        assert_eq!(
            b.detail.reaction,
            Some(InboundReaction {
                target: Some("wamid.T".into()),
                emoji: Some("👍".into()),
            })
        );
        for removed in [
            r#"{"reaction":{"message_id":"wamid.T"}}"#,
            r#"{"reaction":{"message_id":"wamid.T","emoji":""}}"#,
        ] {
            let b = body("reaction", removed);
            let r = b.detail.reaction.unwrap_or_default();
            assert_eq!(r.target.as_deref(), Some("wamid.T"));
            assert_eq!(r.emoji, None, "{removed}");
        }
        // Every reaction is one, even one naming no message (it is kept, not applied).
        let b = body("reaction", r#"{"reaction":"odd"}"#);
        assert_eq!(b.detail.reaction, Some(InboundReaction::default()));
    }

    #[test]
    fn a_part_of_an_odd_shape_loses_only_itself() {
        let b = body(
            "image",
            r#"{"image":"not an object","context":{"id":"wamid.Q"},"referral":[1]}"#,
        );
        assert!(b.detail.media.is_none() && b.text.is_none());
        assert_eq!(b.detail.quotes.as_deref(), Some("wamid.Q"));
        assert!(b.detail.referral.is_none(), "a referral is an object");
        let b = body(
            "location",
            r#"{"location":{"latitude":"52.5","longitude":13},"context":7}"#,
        );
        assert!(b.detail.content.is_none() && b.detail.quotes.is_none());
        let b = body("button", r#"{"button":{"payload":"p"}}"#);
        assert!(b.detail.content.is_none(), "a button without text");
        assert!(read("text", "[1]").is_none());
        assert!(read("text", "{").is_none());
    }

    #[test]
    fn pricing_and_forwarding() {
        let p = pricing(Some(
            r#"{"billable":true,"pricing_model":"PMP","category":"marketing","type":"regular"}"#,
        ));
        assert_eq!(
            p,
            Some(Pricing {
                category: "marketing".into(),
                kind: Some("regular".into()),
                pricing_model: Some("PMP".into()),
                billable: Some(true),
            })
        );
        assert_eq!(pricing(None), None);
        assert_eq!(pricing(Some(r#"{"billable":false}"#)), None);
        assert_eq!(pricing(Some(r#""marketing""#)), None);

        assert_eq!(
            forwarded(r#"{"text":{"body":"x"},"context":{"forwarded":true}}"#),
            (true, false)
        );
        assert_eq!(
            forwarded(r#"{"context":{"frequently_forwarded":true}}"#),
            (true, true)
        );
        assert_eq!(
            forwarded(r#"{"text":{"body":"forwarded"}}"#),
            (false, false)
        );
        assert_eq!(forwarded(r#"{"context":{"id":"w"}}"#), (false, false));
    }
}
