//! Property tests of the webhook parser, through the entry point the webhook route calls
//! ([`webhook::parse`], on a body whose signature checked out), over two kinds of bodies:
//! - arbitrary JSON-ish bodies (random trees biased towards Meta's keys, some cut short or with a
//!   stray byte): the parser never panics, refuses exactly the bodies that are not JSON, and its
//!   result is what the rules in `whatsapp::webhook`'s docs say, checked against [`model`];
//! - structured-random valid notifications (random messages of every common type and statuses,
//!   any key order, string or integer timestamps, unicode as UTF-8 or as `\u` escapes the way
//!   Meta sends it), some with items the broker cannot use and with changes that are not about
//!   messages: every usable message and status is parsed exactly once, carrying its own JSON and
//!   timestamp, and every change holding something not understood is kept verbatim, whole.
//!
//! The fuzz targets (fuzz/, README "Fuzzing") search the same space for as long as one lets
//! them; these cases are few enough to run in a few seconds in every `make test`.

use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};
use switchboard::domain::DeliveryStatus;
use switchboard::whatsapp::webhook::{self, VALUE_KEYS};

/// Cases per property: enough to cover every shape a few times, few enough for a debug build
/// to run all of them in seconds.
const CASES: u32 = 96;

/// What the parser must produce, by the rules of `whatsapp::webhook`'s module docs.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    /// Wamids of the usable messages, in body order.
    messages: Vec<String>,
    /// Ids of the usable statuses, in body order.
    statuses: Vec<String>,
    /// Whatever is kept verbatim: (field, JSON).
    kept: Vec<(String, Value)>,
    skipped: usize,
}

/// The parser's answer in [`Expected`]'s terms; every `raw` must be JSON.
fn observed(body: &[u8]) -> Result<Expected, String> {
    let n = webhook::parse(body).map_err(|e| e.to_string())?;
    let json = |raw: &str| -> Value {
        serde_json::from_str(raw).unwrap_or_else(|e| panic!("raw is not JSON ({e}): {raw}"))
    };
    for m in &n.messages {
        json(&m.raw);
    }
    for s in &n.statuses {
        json(&s.raw);
        // Read for statuses of unknown wamids; must not panic on whatever Meta echoes.
        let _ = webhook::callback_message(s);
    }
    Ok(Expected {
        messages: n.messages.iter().map(|m| m.wamid.clone()).collect(),
        statuses: n.statuses.iter().map(|s| s.wamid.clone()).collect(),
        kept: n
            .other
            .iter()
            .map(|o| (o.field.clone(), json(&o.raw)))
            .collect(),
        skipped: n.skipped,
    })
}

fn walkable(v: &Value, key: &str) -> bool {
    matches!(v.get(key), None | Some(Value::Null | Value::Array(_)))
}

fn items<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The parser's documented rules, written out plainly over a JSON tree.
fn model(root: &Value) -> Expected {
    let mut e = Expected::default();
    if !(root.is_object() || root.is_null()) || !walkable(root, "entry") {
        e.kept.push((String::new(), root.clone()));
        return e;
    }
    for entry in items(root, "entry") {
        if !(entry.is_object() || entry.is_null()) || !walkable(entry, "changes") {
            e.kept.push((String::new(), entry.clone()));
            continue;
        }
        for change in items(entry, "changes") {
            let field = change.get("field").and_then(Value::as_str).unwrap_or("");
            let value = change.get("value").unwrap_or(&Value::Null);
            let carries = value.get("messages").is_some() || value.get("statuses").is_some();
            if !((field == "messages" || carries) && model_value(value, &mut e)) {
                e.kept.push((field.to_string(), change.clone()));
            }
        }
    }
    e
}

/// A messages change's value: its usable items into `e`; false when the change is kept.
fn model_value(value: &Value, e: &mut Expected) -> bool {
    let Some(fields) = value.as_object() else {
        return false;
    };
    let mut complete = fields.keys().all(|k| VALUE_KEYS.contains(&k.as_str()))
        && walkable(value, "messages")
        && walkable(value, "statuses");
    let before = e.messages.len() + e.statuses.len();
    let number = value
        .get("metadata")
        .and_then(|m| m.get("phone_number_id"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    // A sender is its phone (`from`) or user id (`from_user_id`), completed from the contact
    // naming either; a message naming neither is the only contact's. Empty ids are no ids.
    let contacts: Vec<(Option<String>, Option<String>)> = items(value, "contacts")
        .iter()
        .map(|c| (text(c, "wa_id"), text(c, "user_id")))
        .collect();
    for m in items(value, "messages") {
        let (from, from_user) = (text(m, "from"), text(m, "from_user_id"));
        let contact = match (&from, &from_user) {
            (None, None) if contacts.len() == 1 => contacts.first(),
            _ => contacts.iter().find(|(phone, user)| {
                (from.is_some() && *phone == from) || (from_user.is_some() && *user == from_user)
            }),
        };
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let phone = nonempty(from.clone().or_else(|| contact.and_then(|c| c.0.clone())));
        let user = nonempty(
            from_user
                .clone()
                .or_else(|| contact.and_then(|c| c.1.clone())),
        );
        let sender = phone.or(user);
        match (text(m, "id"), sender) {
            (Some(id), Some(_)) if !number.is_empty() => e.messages.push(id),
            _ => {
                e.skipped += 1;
                complete = false;
            }
        }
    }
    for s in items(value, "statuses") {
        let known = s
            .get("status")
            .and_then(Value::as_str)
            .and_then(DeliveryStatus::parse)
            .is_some();
        match text(s, "id") {
            Some(id) if known => e.statuses.push(id),
            _ => {
                e.skipped += 1;
                complete = false;
            }
        }
    }
    complete && e.messages.len() + e.statuses.len() > before
}

// ---- arbitrary JSON-ish bodies ----

const KEYS: &[&str] = &[
    "object",
    "entry",
    "id",
    "time",
    "changes",
    "field",
    "value",
    "messaging_product",
    "metadata",
    "phone_number_id",
    "contacts",
    "wa_id",
    "user_id",
    "username",
    "profile",
    "name",
    "messages",
    "statuses",
    "from",
    "from_user_id",
    "timestamp",
    "type",
    "text",
    "body",
    "caption",
    "status",
    "errors",
    "code",
    "title",
    "message",
    "recipient_id",
    "context",
    "reaction",
    "emoji",
    "interactive",
    "button_reply",
    "biz_opaque_callback_data",
];

const WORDS: &[&str] = &[
    "messages",
    "statuses",
    "whatsapp",
    "text",
    "image",
    "interactive",
    "reaction",
    "location",
    "brand_new",
    "sent",
    "delivered",
    "read",
    "failed",
    "deleted",
    "",
    "1",
    " 1700000000 ",
    "1700000000",
    "253402300800",
    "-1",
    "wamid.HBgL",
    "US.13491208655302741918",
    "c1:2",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => select(KEYS).prop_map(str::to_string),
        1 => "\\PC{0,6}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<i64>().prop_map(Value::from),
        1 => (-1e12f64..1e12).prop_map(|f| json!(f)),
        4 => select(WORDS).prop_map(|w| json!(w)),
        2 => "\\PC{0,12}".prop_map(Value::String),
    ]
}

fn tree() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A message- or status-like object: each of the keys the parser reads, often with a string
/// value, and a few random keys besides. Sometimes a usable item, often not.
fn item() -> impl Strategy<Value = Value> {
    let read = |k: &'static str| {
        prop::option::weighted(
            0.7,
            prop_oneof![3 => select(WORDS).prop_map(|w| json!(w)), 1 => leaf()],
        )
        .prop_map(move |v| v.map(|v| (k.to_string(), v)))
    };
    (
        [
            read("id"),
            read("from"),
            read("from_user_id"),
            read("status"),
            read("type"),
            read("timestamp"),
        ],
        prop::collection::vec((key(), tree()), 0..3),
    )
        .prop_map(|(read, extra)| Value::Object(read.into_iter().flatten().chain(extra).collect()))
}

/// Meta's envelope around random values, so that the walk reaches messages and statuses.
fn envelope() -> impl Strategy<Value = Value> {
    let value = (
        prop::option::of(select(WORDS)),
        prop::collection::vec(item(), 0..4),
        prop::collection::vec(item(), 0..3),
        prop::option::of((key(), tree())),
    )
        .prop_map(|(number, messages, statuses, extra)| {
            let mut v = json!({"messaging_product": "whatsapp", "messages": messages,
                "statuses": statuses});
            if let Some(n) = number {
                v["metadata"] = json!({ "phone_number_id": n });
            }
            if let Some((k, x)) = extra {
                v[k] = x;
            }
            v
        });
    let change = (select(&["messages", "statuses", "x", ""][..]), value)
        .prop_map(|(field, value)| json!({"field": field, "value": value}));
    let changes = prop_oneof![
        4 => prop::collection::vec(change, 0..3).prop_map(Value::Array),
        1 => tree(),
    ];
    prop::collection::vec(changes, 0..3).prop_map(|entries| {
        let entry: Vec<Value> = entries
            .into_iter()
            .map(|changes| json!({"id": "1", "changes": changes}))
            .collect();
        json!({"object": "whatsapp_business_account", "entry": entry})
    })
}

/// A body's bytes: JSON, or JSON cut short or with a byte put in.
fn mutated(v: Value) -> impl Strategy<Value = Vec<u8>> {
    let text = v.to_string().into_bytes();
    let len = text.len();
    prop_oneof![
        4 => Just(text.clone()),
        1 => (0..=len).prop_map({
            let text = text.clone();
            move |at| text[..at].to_vec()
        }),
        1 => (0..=len, any::<u8>()).prop_map(move |(at, b)| {
            let mut t = text.clone();
            t.insert(at, b);
            t
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Never panics; refuses only what is not JSON; otherwise exactly the documented result.
    #[test]
    fn any_body_is_parsed_by_the_rules(
        body in prop_oneof![2 => envelope(), 1 => tree()].prop_flat_map(mutated)
    ) {
        let tree = serde_json::from_slice::<Value>(&body);
        match (observed(&body), tree) {
            (Ok(got), Ok(tree)) => prop_assert_eq!(got, model(&tree)),
            (Err(_), Err(_)) => {}
            // JSON's grammar but no `Value` (a lone surrogate escape, a number beyond f64): the
            // fast path may take it where it ignores the field. Never a body that is not JSON.
            (Ok(_), Err(_)) => prop_assert!(
                std::str::from_utf8(&body)
                    .is_ok_and(|t| serde_json::from_str::<serde::de::IgnoredAny>(t).is_ok()),
                "took a body that is not JSON: {}",
                String::from_utf8_lossy(&body)
            ),
            (Err(e), Ok(_)) => prop_assert!(
                false,
                "refused JSON ({}): {}",
                e,
                String::from_utf8_lossy(&body)
            ),
        }
    }
}

// ---- structured-random valid notifications ----

/// A JSON value whose objects keep the key order they were built with (serde_json's map sorts
/// keys), written with non-ASCII as UTF-8 or as `\u` escapes.
#[derive(Clone, Debug)]
enum J {
    Int(i64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

fn obj(pairs: Vec<(&str, J)>) -> J {
    J::Obj(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

fn s(text: &str) -> J {
    J::Str(text.to_string())
}

impl J {
    fn value(&self) -> Value {
        match self {
            J::Int(i) => json!(i),
            J::Str(s) => json!(s),
            J::Arr(a) => Value::Array(a.iter().map(J::value).collect()),
            J::Obj(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), v.value())).collect()),
        }
    }

    /// Every object's keys in an order drawn from `seed`.
    fn shuffled(self, seed: &mut u64) -> J {
        match self {
            J::Arr(a) => J::Arr(a.into_iter().map(|j| j.shuffled(seed)).collect()),
            J::Obj(mut o) => {
                for i in (1..o.len()).rev() {
                    // xorshift64: any fixed permutation source will do.
                    *seed ^= *seed << 13;
                    *seed ^= *seed >> 7;
                    *seed ^= *seed << 17;
                    o.swap(i, (*seed % (i as u64 + 1)) as usize);
                }
                J::Obj(o.into_iter().map(|(k, v)| (k, v.shuffled(seed))).collect())
            }
            j => j,
        }
    }

    fn write(&self, ascii: bool, out: &mut String) {
        match self {
            J::Int(i) => out.push_str(&i.to_string()),
            J::Str(text) => write_str(text, ascii, out),
            J::Arr(a) => {
                out.push('[');
                for (i, j) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    j.write(ascii, out);
                }
                out.push(']');
            }
            J::Obj(o) => {
                out.push('{');
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(k, ascii, out);
                    out.push(':');
                    v.write(ascii, out);
                }
                out.push('}');
            }
        }
    }
}

fn write_str(text: &str, ascii: bool, out: &mut String) {
    let quoted = json!(text).to_string();
    if !ascii {
        out.push_str(&quoted);
        return;
    }
    for c in quoted.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
}

/// Latest timestamp Meta could mean (the last second of year 9999).
const MAX_SECS: i64 = 253_402_300_799;

#[derive(Clone, Debug)]
enum Ts {
    Str(i64),
    Int(i64),
    Missing,
}

fn ts() -> impl Strategy<Value = Ts> {
    prop_oneof![
        3 => (0..=MAX_SECS).prop_map(Ts::Str),
        2 => (0..=MAX_SECS).prop_map(Ts::Int),
        1 => Just(Ts::Missing),
    ]
}

/// Any printable text: emoji, quotes, backslashes, right-to-left scripts.
fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

/// The body of one message of a random common type: (type, the type's object).
fn content() -> impl Strategy<Value = (&'static str, J)> {
    let media = |kind: &'static str| {
        (text(), prop::bool::ANY).prop_map(move |(caption, with_caption)| {
            let mut o = vec![
                ("id", s("1479537139650973")),
                ("mime_type", s("image/jpeg")),
                ("sha256", s("HgarYDXcj5kPLZ0xvd6hV+2aF1WqB0vZy1vS6bLk0mE=")),
            ];
            if with_caption {
                o.push(("caption", J::Str(caption)));
            }
            (kind, obj(o))
        })
    };
    prop_oneof![
        3 => text().prop_map(|body| ("text", obj(vec![("body", J::Str(body))]))),
        1 => media("image"),
        1 => media("video"),
        1 => media("document"),
        1 => media("audio"),
        1 => media("sticker"),
        1 => (text(), text()).prop_map(|(name, address)| (
            "location",
            obj(vec![
                ("latitude", J::Int(52)),
                ("longitude", J::Int(13)),
                ("name", J::Str(name)),
                ("address", J::Str(address)),
            ])
        )),
        1 => (text(), text()).prop_map(|(payload, t)| (
            "button",
            obj(vec![("payload", J::Str(payload)), ("text", J::Str(t))])
        )),
        1 => text().prop_map(|title| (
            "interactive",
            obj(vec![
                ("type", s("button_reply")),
                ("button_reply", obj(vec![("id", s("b1")), ("title", J::Str(title))])),
            ])
        )),
        1 => select(&["👍", "❤️", "😂"][..]).prop_map(|emoji| (
            "reaction",
            obj(vec![("message_id", s("wamid.target")), ("emoji", s(emoji))])
        )),
        1 => text().prop_map(|formatted| (
            "contacts",
            J::Arr(vec![obj(vec![("name", obj(vec![("formatted_name", J::Str(formatted))]))])])
        )),
        1 => Just(("brand_new", obj(vec![("k", J::Arr(vec![J::Int(1), s("ü")]))]))),
    ]
}

/// Who sent a message: the phone, the business-scoped user id, or both.
#[derive(Clone, Debug)]
struct Sender {
    phone: Option<String>,
    user_id: Option<String>,
}

fn sender() -> impl Strategy<Value = Sender> {
    let phone = "[1-9][0-9]{7,13}";
    let user_id = "[A-Z]{2}\\.[0-9]{10,20}";
    prop_oneof![
        (phone, user_id).prop_map(|(p, u)| Sender {
            phone: Some(p),
            user_id: Some(u)
        }),
        phone.prop_map(|p| Sender {
            phone: Some(p),
            user_id: None
        }),
        user_id.prop_map(|u| Sender {
            phone: None,
            user_id: Some(u)
        }),
    ]
}

#[derive(Clone, Debug)]
struct Msg {
    sender: Sender,
    ts: Ts,
    content: (&'static str, J),
    reply: bool,
}

fn msg() -> impl Strategy<Value = Msg> {
    (sender(), ts(), content(), prop::bool::weighted(0.2)).prop_map(
        |(sender, ts, content, reply)| Msg {
            sender,
            ts,
            content,
            reply,
        },
    )
}

#[derive(Clone, Debug)]
struct Status {
    status: &'static str,
    ts: Ts,
    recipient: Sender,
    callback: Option<String>,
}

fn status() -> impl Strategy<Value = Status> {
    (
        select(&["sent", "delivered", "read", "failed"][..]),
        ts(),
        sender(),
        prop::option::of(prop_oneof![text(), Just("c1:7".to_string())]),
    )
        .prop_map(|(status, ts, recipient, callback)| Status {
            status,
            ts,
            recipient,
            callback,
        })
}

/// Something in a change the broker cannot use: the whole change is then kept.
#[derive(Clone, Copy, Debug)]
enum Flaw {
    MessageWithoutId,
    MessageWithoutSender,
    UnknownStatus,
    StatusWithoutId,
    ValueKey,
    NoNumber,
}

#[derive(Clone, Debug)]
struct Change {
    number: String,
    name: Option<String>,
    messages: Vec<Msg>,
    statuses: Vec<Status>,
    flaw: Option<Flaw>,
}

fn change() -> impl Strategy<Value = Change> {
    (
        "[1-9][0-9]{14}",
        prop::option::of(text()),
        prop::collection::vec(msg(), 0..4),
        prop::collection::vec(status(), 0..3),
        prop::option::weighted(
            0.3,
            select(vec![
                Flaw::MessageWithoutId,
                Flaw::MessageWithoutSender,
                Flaw::UnknownStatus,
                Flaw::StatusWithoutId,
                Flaw::ValueKey,
                Flaw::NoNumber,
            ]),
        ),
        msg(),
    )
        .prop_map(|(number, name, mut messages, statuses, flaw, spare)| {
            // A change must carry something to be used, and a missing number only shows on a
            // message (statuses do not need one).
            if (messages.is_empty() && statuses.is_empty())
                || (matches!(flaw, Some(Flaw::NoNumber)) && messages.is_empty())
            {
                messages.push(spare);
            }
            Change {
                number,
                name,
                messages,
                statuses,
                flaw,
            }
        })
}

fn timestamp(ts: &Ts) -> Option<J> {
    match ts {
        Ts::Str(secs) => Some(J::Str(secs.to_string())),
        Ts::Int(secs) => Some(J::Int(*secs)),
        Ts::Missing => None,
    }
}

/// A body built from its parts, and what parsing it must give: the messages' wamids with their
/// JSON and send time, the statuses' ids with their JSON, what is kept and skipped.
#[derive(Debug, Default)]
struct Built {
    entries: Vec<J>,
    messages: Vec<(String, Value, Option<i64>)>,
    statuses: Vec<(String, Value)>,
    kept: Vec<(String, Value)>,
    skipped: usize,
}

impl Built {
    fn change(&mut self, c: &Change, id: &mut usize) -> J {
        let mut messages = vec![];
        let mut expected = vec![];
        for m in &c.messages {
            *id += 1;
            let wamid = format!("wamid.HBgL{id}");
            let mut o = vec![("id", s(&wamid))];
            if let Some(p) = &m.sender.phone {
                o.push(("from", s(p)));
            }
            if let Some(u) = &m.sender.user_id {
                o.push(("from_user_id", s(u)));
            }
            if let Some(t) = timestamp(&m.ts) {
                o.push(("timestamp", t));
            }
            o.push(("type", s(m.content.0)));
            o.push((m.content.0, m.content.1.clone()));
            if m.reply {
                o.push((
                    "context",
                    obj(vec![("from", s(&c.number)), ("id", s("wamid.earlier"))]),
                ));
            }
            let j = obj(o);
            let at = match m.ts {
                Ts::Str(secs) | Ts::Int(secs) => Some(secs * 1000),
                Ts::Missing => None,
            };
            expected.push((wamid, j.value(), at));
            messages.push(j);
        }
        let mut statuses = vec![];
        let mut expected_statuses = vec![];
        for st in &c.statuses {
            *id += 1;
            let wamid = format!("wamid.OUT{id}");
            let mut o = vec![("id", s(&wamid)), ("status", s(st.status))];
            if let Some(t) = timestamp(&st.ts) {
                o.push(("timestamp", t));
            }
            if let Some(p) = &st.recipient.phone {
                o.push(("recipient_id", s(p)));
            }
            if let Some(u) = &st.recipient.user_id {
                o.push(("recipient_user_id", s(u)));
            }
            if let Some(cb) = &st.callback {
                o.push(("biz_opaque_callback_data", s(cb)));
            }
            o.push((
                "pricing",
                obj(vec![
                    ("billable", s("true")),
                    ("pricing_model", s("PMP")),
                    ("category", s("service")),
                ]),
            ));
            if st.status == "failed" {
                o.push((
                    "errors",
                    J::Arr(vec![obj(vec![
                        ("code", J::Int(131047)),
                        ("title", s("Re-engagement message")),
                    ])]),
                ));
            }
            let j = obj(o);
            expected_statuses.push((wamid, j.value()));
            statuses.push(j);
        }
        let mut skipped = 0;
        match c.flaw {
            Some(Flaw::MessageWithoutId) => {
                skipped += 1;
                messages.push(obj(vec![
                    ("from", s("15550001111")),
                    ("type", s("text")),
                    ("text", obj(vec![("body", s("no id"))])),
                ]));
            }
            Some(Flaw::MessageWithoutSender) => {
                // Empty ids are no ids (a message naming none would be the only contact's).
                skipped += 1;
                messages.push(obj(vec![
                    ("id", s("wamid.nosender")),
                    ("from", s("")),
                    ("from_user_id", s("")),
                    ("type", s("text")),
                ]));
            }
            Some(Flaw::UnknownStatus) => {
                skipped += 1;
                statuses.push(obj(vec![("id", s("wamid.del")), ("status", s("deleted"))]));
            }
            Some(Flaw::StatusWithoutId) => {
                skipped += 1;
                statuses.push(obj(vec![("status", s("sent"))]));
            }
            Some(Flaw::NoNumber) => {
                skipped += expected.len();
                expected.clear();
            }
            Some(Flaw::ValueKey) | None => {}
        }
        let mut metadata = vec![("display_phone_number", s("15550783881"))];
        if !matches!(c.flaw, Some(Flaw::NoNumber)) {
            metadata.push(("phone_number_id", s(&c.number)));
        }
        let mut contact = vec![];
        if let Some(first) = c.messages.first() {
            if let Some(p) = &first.sender.phone {
                contact.push(("wa_id", s(p)));
            }
            if let Some(u) = &first.sender.user_id {
                contact.push(("user_id", s(u)));
            }
        }
        if let Some(name) = &c.name {
            contact.push(("profile", obj(vec![("name", J::Str(name.clone()))])));
        }
        let mut value = vec![
            ("messaging_product", s("whatsapp")),
            ("metadata", obj(metadata)),
        ];
        if !contact.is_empty() {
            value.push(("contacts", J::Arr(vec![obj(contact)])));
        }
        if !messages.is_empty() {
            value.push(("messages", J::Arr(messages)));
        }
        if !statuses.is_empty() {
            value.push(("statuses", J::Arr(statuses)));
        }
        if matches!(c.flaw, Some(Flaw::ValueKey)) {
            value.push(("errors", J::Arr(vec![obj(vec![("code", J::Int(131000))])])));
        }
        let change = obj(vec![("field", s("messages")), ("value", obj(value))]);
        if c.flaw.is_some() {
            self.kept.push(("messages".to_string(), change.value()));
        }
        self.skipped += skipped;
        self.messages.extend(expected);
        self.statuses.extend(expected_statuses);
        change
    }
}

/// A change about something else than messages (kept whole, with its field).
fn other_change() -> impl Strategy<Value = J> {
    (
        select(
            &[
                "message_template_status_update",
                "account_update",
                "user_preferences",
            ][..],
        ),
        text(),
    )
        .prop_map(|(field, reason)| {
            obj(vec![
                ("field", s(field)),
                (
                    "value",
                    obj(vec![("event", s("APPROVED")), ("reason", J::Str(reason))]),
                ),
            ])
        })
}

/// Entries of changes (each a messages change or another kind), and how the body is written.
type Spec = (Vec<Vec<Result<Change, J>>>, u64, bool);

fn notification() -> impl Strategy<Value = Spec> {
    let change = prop_oneof![4 => change().prop_map(Ok), 1 => other_change().prop_map(Err)];
    (
        prop::collection::vec(prop::collection::vec(change, 1..4), 1..3),
        any::<u64>(),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// Every usable message and status parsed exactly once with its own JSON and time; every
    /// change holding anything else kept verbatim; in any key order, escaped or not.
    #[test]
    fn valid_notifications_are_parsed_exactly_once((entries, seed, ascii) in notification()) {
        let mut built = Built::default();
        let mut id = 0;
        for changes in &entries {
            let mut js = vec![];
            for c in changes {
                js.push(match c {
                    Ok(c) => built.change(c, &mut id),
                    Err(other) => {
                        let v = other.value();
                        let field = v["field"].as_str().unwrap_or("").to_string();
                        built.kept.push((field, v));
                        other.clone()
                    }
                });
            }
            built.entries.push(obj(vec![
                ("id", s("102290129340398")),
                ("time", J::Int(1_749_416_383)),
                ("changes", J::Arr(js)),
            ]));
        }
        let root = obj(vec![
            ("object", s("whatsapp_business_account")),
            ("entry", J::Arr(std::mem::take(&mut built.entries))),
        ]);
        let mut seed = seed | 1;
        let mut body = String::new();
        root.shuffled(&mut seed).write(ascii, &mut body);

        let n = webhook::parse(body.as_bytes()).map_err(|e| {
            TestCaseError::fail(format!("refused ({e}): {body}"))
        })?;
        let got: Vec<_> = n.messages.iter().map(|m| m.wamid.as_str()).collect();
        let want: Vec<_> = built.messages.iter().map(|(w, _, _)| w.as_str()).collect();
        prop_assert_eq!(got, want, "messages of {}", body);
        for (m, (_, raw, at)) in n.messages.iter().zip(&built.messages) {
            let got: Value = serde_json::from_str(&m.raw).map_err(|e| {
                TestCaseError::fail(format!("raw is not JSON ({e}): {}", m.raw))
            })?;
            prop_assert_eq!(&got, raw);
            if let Some(at) = at {
                prop_assert_eq!(m.sent_at, *at, "{}", m.raw);
            }
        }
        let got: Vec<_> = n.statuses.iter().map(|s| s.wamid.as_str()).collect();
        let want: Vec<_> = built.statuses.iter().map(|(w, _)| w.as_str()).collect();
        prop_assert_eq!(got, want, "statuses of {}", body);
        for (st, (_, raw)) in n.statuses.iter().zip(&built.statuses) {
            let got: Value = serde_json::from_str(&st.raw).map_err(|e| {
                TestCaseError::fail(format!("raw is not JSON ({e}): {}", st.raw))
            })?;
            prop_assert_eq!(&got, raw);
            let _ = webhook::callback_message(st);
        }
        let kept: Vec<(String, Value)> = n
            .other
            .iter()
            .map(|o| (o.field.clone(), serde_json::from_str(&o.raw).unwrap_or(Value::Null)))
            .collect();
        prop_assert_eq!(kept, built.kept, "kept of {}", body);
        prop_assert_eq!(n.skipped, built.skipped, "skipped of {}", body);
    }
}
