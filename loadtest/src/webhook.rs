//! Meta-shaped webhook payloads: the simulated population, the message generator and signing.
//!
//! Invariants:
//! - every generated inbound message gets a fresh wamid `wamid.LT{run_id}{counter}`; `run_id` has
//!   a fixed length, so ids are unique across the run (and across runs with different ids);
//! - customers have fixed, distinct `wa_id`s (digit strings with varied country prefixes) and each
//!   writes to one "home" business number, so a conversation is `(number, customer)`; a share of
//!   them (`--username-share`) are username-only: Meta gives no phone, only their business-scoped
//!   user id (BSUID, `DE.1501234…`: country, dot, digits), which is then their `wa_id` here (the
//!   id the broker shows as `customer` and sends to, as `recipient`), sent as `from_user_id` and
//!   the contact's `user_id` with a `profile.username`, never as `from`/`wa_id`;
//! - bodies are serialized once, non-ASCII text is written as `\uXXXX` escapes like Meta does, and
//!   the signature is `sha256=<lowercase hex HMAC-SHA256(app_secret, exact body bytes)>`; a
//!   `Webhook` is immutable afterwards, so redeliveries are byte-for-byte identical.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;
use sha2::Sha256;

/// The WhatsApp Business Account id used in generated configs and payloads.
pub const WABA_ID: &str = "102290129340398";

const COUNTRY_CODES: [&str; 7] = ["49", "44", "1", "33", "34", "91", "55"];
/// The ISO 3166 countries of `COUNTRY_CODES`, in the same order (a BSUID's prefix).
const COUNTRIES: [&str; 7] = ["DE", "GB", "US", "FR", "ES", "IN", "BR"];
const FIRST_NAMES: [&str; 12] = [
    "Sheena", "Jonas", "Amelia", "Luc", "Lucía", "Priya", "João", "Mia", "Oliver", "Chloé",
    "Arjun", "Sofia",
];
const LAST_NAMES: [&str; 10] = [
    "Nelson", "Müller", "Smith", "Dubois", "García", "Sharma", "Silva", "Weber", "Brown", "Martin",
];
const TEXTS: [&str; 10] = [
    "Does it come in another color?",
    "Where is my order #4711?",
    "Hallo, wo ist meine Bestellung?",
    "Grüße aus München 👋 kann ich die Lieferadresse ändern?",
    "¿Dónde está mi pedido?",
    "Bonjour, j'ai une question sur ma commande",
    "मेरा ऑर्डर कहाँ है?",
    "Olá, preciso de ajuda com o pagamento",
    "Can I return this item?",
    "Thanks! 🙏",
];

/// A business phone number.
#[derive(Debug, Clone)]
pub struct Number {
    pub phone_number_id: String,
    pub display_phone_number: String,
}

/// A simulated customer.
#[derive(Debug, Clone)]
pub struct Customer {
    /// The id the broker shows as `customer`: the phone, or the BSUID of a username-only one.
    pub wa_id: String,
    pub name: String,
    /// Set for a username-only customer (no phone; `wa_id` is its BSUID).
    pub username: Option<String>,
    /// Index into `Population::numbers` of the number this customer writes to.
    pub number: usize,
}

/// Numbers and customers of a run.
#[derive(Debug, Clone)]
pub struct Population {
    pub numbers: Vec<Number>,
    pub customers: Vec<Customer>,
}

/// The business numbers of a run: `10654035224292N` / `1555078388N`, N = 1..=m.
pub fn numbers(m: usize) -> Vec<Number> {
    (1..=m)
        .map(|n| Number {
            phone_number_id: format!("10654035224292{n}"),
            display_phone_number: format!("1555078388{n}"),
        })
        .collect()
}

impl Population {
    /// A population of phone-only customers.
    #[cfg(test)]
    pub fn new(numbers_count: usize, customers: usize) -> Self {
        Self::with_usernames(numbers_count, customers, 0.0)
    }

    /// A population in which `username_share` (0..=1) of the customers are username-only
    /// (spread over the population deterministically, so a run and its audit agree).
    pub fn with_usernames(numbers_count: usize, customers: usize, username_share: f64) -> Self {
        let numbers = numbers(numbers_count);
        let per_mille = (username_share.clamp(0.0, 1.0) * 1000.0).round() as usize;
        let customers = (0..customers)
            .map(|i| {
                let cc = COUNTRY_CODES[i % COUNTRY_CODES.len()];
                // 3-digit area part + 7-digit running number: unique for i < 10^7.
                let phone = format!("{cc}{}{:07}", 150 + (i / 7) % 30, i);
                let name = format!(
                    "{} {}",
                    FIRST_NAMES[i % FIRST_NAMES.len()],
                    LAST_NAMES[(i / FIRST_NAMES.len()) % LAST_NAMES.len()]
                );
                // 7919 is prime to 1000: the chosen ones spread over every residue.
                let username_only = (i * 7919) % 1000 < per_mille;
                let (wa_id, username) = if username_only {
                    let country = COUNTRIES[i % COUNTRIES.len()];
                    (format!("{country}.1501{phone}"), Some(format!("user{i}")))
                } else {
                    (phone, None)
                };
                Customer {
                    wa_id,
                    name,
                    username,
                    number: i % numbers_count.max(1),
                }
            })
            .collect();
        Population { numbers, customers }
    }

    /// Display number of a phone_number_id (or the id itself when unknown).
    pub fn display_of(&self, phone_number_id: &str) -> String {
        self.numbers
            .iter()
            .find(|n| n.phone_number_id == phone_number_id)
            .map(|n| n.display_phone_number.clone())
            .unwrap_or_else(|| phone_number_id.to_string())
    }
}

/// What a webhook carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// New inbound messages (one or a batch).
    Messages,
    /// A byte-for-byte redelivery of an already acknowledged `Messages` body.
    Duplicate,
    /// Outbound status callbacks.
    Statuses,
}

/// One inbound message carried by a webhook.
#[derive(Debug, Clone)]
pub struct InboundRef {
    pub wamid: String,
    pub customer: usize,
}

/// A status update carried by a webhook.
#[derive(Debug, Clone)]
pub struct StatusRef {
    pub wamid: String,
    pub status: OutStatus,
}

/// Outbound statuses, in the order the contract says they only move forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OutStatus {
    Sent = 1,
    Delivered = 2,
    Read = 3,
}

impl OutStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutStatus::Sent => "sent",
            OutStatus::Delivered => "delivered",
            OutStatus::Read => "read",
        }
    }

    /// Rank of a status string as the broker reports it (`accepted` = 0); `None` for `failed`
    /// and unknown values.
    pub fn rank_of(s: &str) -> Option<u8> {
        match s {
            "accepted" => Some(0),
            "sent" => Some(1),
            "delivered" => Some(2),
            "read" => Some(3),
            _ => None,
        }
    }
}

/// A status callback to generate.
#[derive(Debug, Clone)]
pub struct StatusItem {
    pub phone_number_id: String,
    pub wamid: String,
    pub recipient: String,
    pub status: OutStatus,
}

/// A signed, immutable webhook request.
#[derive(Debug, Clone)]
pub struct Webhook {
    pub kind: Kind,
    pub body: Bytes,
    pub signature: String,
    pub messages: Vec<InboundRef>,
    pub statuses: Vec<StatusRef>,
}

impl Webhook {
    /// The same bytes, marked as a redelivery.
    pub fn as_duplicate(&self) -> Webhook {
        Webhook {
            kind: Kind::Duplicate,
            body: self.body.clone(),
            signature: self.signature.clone(),
            messages: self.messages.clone(),
            statuses: Vec::new(),
        }
    }
}

/// `sha256=<lowercase hex HMAC-SHA256(secret, body)>`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key size");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Rewrites every non-ASCII character of serialized JSON as `\uXXXX` escapes (UTF-16, surrogate
/// pairs for astral characters), as Meta does. Non-ASCII only occurs inside JSON strings, so the
/// result is the same JSON value.
pub fn escape_non_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for unit in c.encode_utf16(&mut buf) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        }
    }
    out
}

/// Current unix time in seconds, as Meta's string timestamps.
pub fn unix_now() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string()
}

/// Generates signed webhooks for a population.
pub struct Generator {
    pub pop: Arc<Population>,
    pub run_id: String,
    secret: Vec<u8>,
    counter: AtomicU64,
    batch_ratio: f64,
    max_batch: usize,
    /// Share of new messages that are images (see [`media_bytes`]).
    media_share: f64,
    /// Where texts are drawn from: [`TEXTS`], or the bot's (`--bot`, `crate::bot::TEXTS`).
    texts: &'static [&'static str],
}

/// Every image the load test sends has these bytes (the fake Graph API serves them for any
/// media id): 16 KiB, enough to exercise the broker's streaming and hashing.
pub fn media_bytes() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        (0..16 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect()
    })
}

/// What Meta's webhook says of [`media_bytes`]: base64 of its SHA-256.
pub fn media_sha256_b64() -> &'static str {
    static SHA: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SHA.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(media_bytes()))
    })
}

/// Media ids of this load test's images start with this.
pub const MEDIA_ID_PREFIX: &str = "LTM";

impl Generator {
    pub fn new(
        pop: Arc<Population>,
        run_id: String,
        secret: &str,
        batch_ratio: f64,
        max_batch: usize,
    ) -> Self {
        Generator {
            pop,
            run_id,
            secret: secret.as_bytes().to_vec(),
            counter: AtomicU64::new(1),
            batch_ratio,
            max_batch: max_batch.max(2),
            media_share: 0.0,
            texts: &TEXTS,
        }
    }

    /// Draws texts from the bot's intents (`--bot`).
    pub fn with_bot_texts(mut self, bot: bool) -> Self {
        if bot {
            self.texts = &crate::bot::TEXTS;
        }
        self
    }

    /// Makes a share of the new messages images (`--media-share`).
    pub fn with_media_share(mut self, share: f64) -> Self {
        self.media_share = share.clamp(0.0, 1.0);
        self
    }

    /// Prefix shared by all wamids of this run.
    pub fn wamid_prefix(&self) -> String {
        format!("wamid.LT{}", self.run_id)
    }

    fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// Serializes and signs a body into a `Webhook`.
    fn seal(
        &self,
        kind: Kind,
        value: &impl Serialize,
        messages: Vec<InboundRef>,
        statuses: Vec<StatusRef>,
    ) -> Webhook {
        // Plain data (strings, vectors) always serializes; an empty body would be refused by
        // the broker and counted as an error, never silently acknowledged.
        let json = serde_json::to_vec(value).unwrap_or_default();
        let body = if json.is_ascii() {
            json
        } else {
            escape_non_ascii(&String::from_utf8_lossy(&json)).into_bytes()
        };
        let signature = sign(&self.secret, &body);
        Webhook {
            kind,
            body: Bytes::from(body),
            signature,
            messages,
            statuses,
        }
    }

    /// A webhook with one new message, or (with probability `batch_ratio`) several messages for
    /// possibly several customers and numbers, spread over several changes and entries.
    pub fn messages<R: Rng>(&self, rng: &mut R) -> Webhook {
        let pop = &self.pop;
        let count = if rng.gen_bool(self.batch_ratio) {
            rng.gen_range(2..=self.max_batch)
        } else {
            1
        };
        let ts = unix_now();
        // number index -> messages (customer, wamid, text, media id of an image)
        let mut by_number: BTreeMap<usize, Vec<Outgoing>> = BTreeMap::new();
        let mut refs = Vec::with_capacity(count);
        for _ in 0..count {
            let customer = rng.gen_range(0..pop.customers.len());
            let n = self.next_id();
            let wamid = format!("wamid.LT{}{n}", self.run_id);
            let text = format!(
                "{} [lt {n}]",
                self.texts[rng.gen_range(0..self.texts.len())]
            );
            let media = (self.media_share > 0.0 && rng.gen_bool(self.media_share))
                .then(|| format!("{MEDIA_ID_PREFIX}{}{n}", self.run_id));
            by_number
                .entry(pop.customers[customer].number)
                .or_default()
                .push((customer, wamid.clone(), text, media));
            refs.push(InboundRef { wamid, customer });
        }

        let mut changes = Vec::new();
        for (number, msgs) in &by_number {
            // Sometimes one change per message, otherwise one change per number.
            if msgs.len() > 1 && rng.gen_bool(0.3) {
                for m in msgs {
                    changes.push(self.message_change(*number, std::slice::from_ref(m), &ts));
                }
            } else {
                changes.push(self.message_change(*number, msgs, &ts));
            }
        }
        let body = Envelope {
            object: "whatsapp_business_account",
            entry: entries(changes, rng),
        };
        self.seal(Kind::Messages, &body, refs, Vec::new())
    }

    fn message_change<'a>(
        &'a self,
        number: usize,
        msgs: &'a [Outgoing],
        ts: &'a str,
    ) -> Change<'a> {
        let pop = &self.pop;
        let num = &pop.numbers[number];
        let mut seen = Vec::new();
        let mut contacts = Vec::new();
        for (c, _, _, _) in msgs {
            if !seen.contains(c) {
                seen.push(*c);
                let cust = &pop.customers[*c];
                let username_only = cust.username.is_some();
                contacts.push(Contact {
                    profile: Profile {
                        name: &cust.name,
                        username: cust.username.as_deref(),
                    },
                    wa_id: (!username_only).then_some(cust.wa_id.as_str()),
                    user_id: username_only.then_some(cust.wa_id.as_str()),
                });
            }
        }
        let messages = msgs
            .iter()
            .map(|(c, wamid, text, media)| Message {
                from: pop.customers[*c]
                    .username
                    .is_none()
                    .then_some(pop.customers[*c].wa_id.as_str()),
                from_user_id: pop.customers[*c]
                    .username
                    .is_some()
                    .then_some(pop.customers[*c].wa_id.as_str()),
                id: wamid,
                timestamp: ts,
                kind: if media.is_some() { "image" } else { "text" },
                text: media.is_none().then_some(Text { body: text }),
                image: media.as_deref().map(|id| Image {
                    id,
                    mime_type: "image/jpeg",
                    sha256: media_sha256_b64(),
                    caption: text,
                }),
            })
            .collect();
        Change {
            value: ChangeValue {
                messaging_product: "whatsapp",
                metadata: Metadata {
                    display_phone_number: &num.display_phone_number,
                    phone_number_id: &num.phone_number_id,
                },
                contacts,
                messages,
                statuses: Vec::new(),
            },
            field: "messages",
        }
    }

    /// A webhook carrying status callbacks (grouped into one change per number).
    pub fn statuses<R: Rng>(&self, items: &[StatusItem], rng: &mut R) -> Webhook {
        let ts = unix_now();
        let mut by_number: BTreeMap<&str, Vec<&StatusItem>> = BTreeMap::new();
        for it in items {
            by_number.entry(&it.phone_number_id).or_default().push(it);
        }
        let displays: Vec<String> = by_number.keys().map(|p| self.pop.display_of(p)).collect();
        let mut changes = Vec::new();
        for ((pnid, its), display) in by_number.iter().zip(&displays) {
            let statuses = its
                .iter()
                .map(|it| Status {
                    id: &it.wamid,
                    status: it.status.as_str(),
                    timestamp: &ts,
                    // A send by `recipient` (a user id) is reported by Meta with
                    // `recipient_user_id` and no `recipient_id`.
                    recipient_id: (!is_user_id(&it.recipient)).then_some(it.recipient.as_str()),
                    recipient_user_id: is_user_id(&it.recipient).then_some(it.recipient.as_str()),
                    pricing: (it.status != OutStatus::Read && rng.gen_bool(0.5)).then_some(
                        Pricing {
                            billable: true,
                            pricing_model: "PMP",
                            category: "service",
                        },
                    ),
                })
                .collect();
            changes.push(Change {
                value: ChangeValue {
                    messaging_product: "whatsapp",
                    metadata: Metadata {
                        display_phone_number: display,
                        phone_number_id: pnid,
                    },
                    contacts: Vec::new(),
                    messages: Vec::new(),
                    statuses,
                },
                field: "messages",
            });
        }
        let mut entry = entries(changes, rng);
        entry.shuffle(rng);
        let body = Envelope {
            object: "whatsapp_business_account",
            entry,
        };
        let refs = items
            .iter()
            .map(|it| StatusRef {
                wamid: it.wamid.clone(),
                status: it.status,
            })
            .collect();
        self.seal(Kind::Statuses, &body, Vec::new(), refs)
    }
}

/// Puts changes into one entry, or (sometimes, when there are several) one entry each.
fn entries<'a, R: Rng>(changes: Vec<Change<'a>>, rng: &mut R) -> Vec<Entry<'a>> {
    if changes.len() > 1 && rng.gen_bool(0.5) {
        changes
            .into_iter()
            .map(|c| Entry {
                id: WABA_ID,
                changes: vec![c],
            })
            .collect()
    } else {
        vec![Entry {
            id: WABA_ID,
            changes,
        }]
    }
}

/// Whether a customer id is a BSUID (`DE.1501…`: two capitals, a dot) rather than a phone.
pub fn is_user_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() > 3 && b[0].is_ascii_uppercase() && b[1].is_ascii_uppercase() && b[2] == b'.'
}

// Meta's webhook shape, borrowed from the generator's data: serialized straight to bytes, in
// Meta's field order (a `serde_json::Value` tree cost a fifth of the generator's CPU at 10k/s).

#[derive(Serialize)]
struct Envelope<'a> {
    object: &'static str,
    entry: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    id: &'static str,
    changes: Vec<Change<'a>>,
}

#[derive(Serialize)]
struct Change<'a> {
    value: ChangeValue<'a>,
    field: &'static str,
}

#[derive(Serialize)]
struct ChangeValue<'a> {
    messaging_product: &'static str,
    metadata: Metadata<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    contacts: Vec<Contact<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    statuses: Vec<Status<'a>>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    display_phone_number: &'a str,
    phone_number_id: &'a str,
}

#[derive(Serialize)]
struct Contact<'a> {
    profile: Profile<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    wa_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

#[derive(Serialize)]
struct Profile<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<&'a str>,
}

/// One new message: (customer, wamid, text, media id when it is an image).
type Outgoing = (usize, String, String, Option<String>);

#[derive(Serialize)]
struct Message<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from_user_id: Option<&'a str>,
    id: &'a str,
    timestamp: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<Text<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<Image<'a>>,
}

/// Meta's `image` object of an inbound message.
#[derive(Serialize)]
struct Image<'a> {
    id: &'a str,
    mime_type: &'static str,
    sha256: &'a str,
    caption: &'a str,
}

#[derive(Serialize)]
struct Text<'a> {
    body: &'a str,
}

#[derive(Serialize)]
struct Status<'a> {
    id: &'a str,
    status: &'static str,
    timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipient_user_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pricing: Option<Pricing>,
}

#[derive(Serialize)]
struct Pricing {
    billable: bool,
    pricing_model: &'static str,
    category: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use serde_json::{json, Value};
    use std::collections::HashSet;

    fn gen(batch: f64) -> Generator {
        Generator::new(
            Arc::new(Population::new(3, 40)),
            "ABCD1234".into(),
            "secret",
            batch,
            5,
        )
    }

    #[test]
    fn a_media_share_sends_images_with_metas_hash() {
        let g = gen(0.0).with_media_share(1.0);
        let mut rng = StdRng::seed_from_u64(3);
        let w = g.messages(&mut rng);
        let v: Value = serde_json::from_slice(&w.body).unwrap_or(Value::Null);
        let m = &v["entry"][0]["changes"][0]["value"]["messages"][0];
        assert_eq!(m["type"], "image");
        assert!(m.get("text").is_none(), "{m}");
        let id = m["image"]["id"].as_str().unwrap_or("");
        assert!(id.starts_with(MEDIA_ID_PREFIX), "{id}");
        use base64::Engine;
        use sha2::Digest;
        let want =
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(media_bytes()));
        assert_eq!(m["image"]["sha256"], json!(want));
        let plain = gen(0.0).messages(&mut rng);
        let v: Value = serde_json::from_slice(&plain.body).unwrap_or(Value::Null);
        assert_eq!(
            v["entry"][0]["changes"][0]["value"]["messages"][0]["type"],
            "text"
        );
    }

    #[test]
    fn signature_matches_known_vector() {
        // RFC 4231 test case 2.
        let sig = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            sig,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn escapes_non_ascii_like_meta() {
        let v = json!({"t": "Grüße 👋"});
        let s = escape_non_ascii(&v.to_string());
        assert!(s.is_ascii());
        assert!(s.contains("Gr\\u00fc\\u00dfe \\ud83d\\udc4b"), "{s}");
        let back: Value = serde_json::from_str(&s).unwrap_or(Value::Null);
        assert_eq!(back, v);
    }

    #[test]
    fn customers_are_distinct_digit_strings() {
        let pop = Population::new(2, 5000);
        let ids: HashSet<_> = pop.customers.iter().map(|c| c.wa_id.clone()).collect();
        assert_eq!(ids.len(), 5000);
        assert!(ids.iter().all(|w| w.chars().all(|c| c.is_ascii_digit())));
        assert!(pop.customers.iter().all(|c| c.number < 2));
    }

    #[test]
    fn username_only_customers_send_their_user_id_and_no_phone() {
        let pop = Population::with_usernames(1, 1000, 0.25);
        let only: Vec<_> = pop
            .customers
            .iter()
            .filter(|c| c.username.is_some())
            .collect();
        assert_eq!(only.len(), 250);
        assert!(only.iter().all(|c| is_user_id(&c.wa_id)));
        let ids: HashSet<_> = pop.customers.iter().map(|c| c.wa_id.clone()).collect();
        assert_eq!(ids.len(), 1000);
        let i = pop
            .customers
            .iter()
            .position(|c| c.username.is_some())
            .unwrap_or(0);
        let g = Generator::new(Arc::new(pop), "ABCD1234".into(), "secret", 0.0, 1);
        let msgs = [(i, "wamid.x".to_string(), "hi".to_string(), None)];
        let change = g.message_change(0, &msgs, "1");
        let v = serde_json::to_value(&change).unwrap_or(Value::Null);
        let m = &v["value"]["messages"][0];
        assert!(m.get("from").is_none(), "{v}");
        assert!(is_user_id(m["from_user_id"].as_str().unwrap_or("")));
        let contact = &v["value"]["contacts"][0];
        assert!(contact.get("wa_id").is_none(), "{v}");
        assert_eq!(contact["user_id"], m["from_user_id"]);
        assert!(contact["profile"]["username"].is_string());
    }

    #[test]
    fn messages_have_meta_shape_and_unique_ids() {
        let g = gen(1.0);
        let mut rng = StdRng::seed_from_u64(7);
        let mut ids = HashSet::new();
        for _ in 0..200 {
            let w = g.messages(&mut rng);
            assert_eq!(w.signature, sign(b"secret", &w.body));
            let v: Value = serde_json::from_slice(&w.body).unwrap_or(Value::Null);
            assert_eq!(v["object"], "whatsapp_business_account");
            let mut found = 0;
            for e in v["entry"].as_array().into_iter().flatten() {
                assert_eq!(e["id"], WABA_ID);
                for c in e["changes"].as_array().into_iter().flatten() {
                    assert_eq!(c["field"], "messages");
                    let val = &c["value"];
                    assert!(val["metadata"]["phone_number_id"].is_string());
                    for m in val["messages"].as_array().into_iter().flatten() {
                        assert_eq!(m["type"], "text");
                        assert!(m["timestamp"].is_string());
                        let from = m["from"].as_str().unwrap_or("");
                        assert!(val["contacts"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|c| c["wa_id"] == from));
                        assert!(ids.insert(m["id"].as_str().unwrap_or("").to_string()));
                        found += 1;
                    }
                }
            }
            assert!(found >= 2, "batch ratio 1 always batches");
            assert_eq!(found, w.messages.len());
        }
    }

    #[test]
    fn status_webhook_shape() {
        let g = gen(0.0);
        let mut rng = StdRng::seed_from_u64(1);
        let items = vec![
            StatusItem {
                phone_number_id: "106540352242921".into(),
                wamid: "wamid.OUT1".into(),
                recipient: "4915000001".into(),
                status: OutStatus::Sent,
            },
            StatusItem {
                phone_number_id: "106540352242922".into(),
                wamid: "wamid.OUT2".into(),
                recipient: "4415000002".into(),
                status: OutStatus::Read,
            },
        ];
        let w = g.statuses(&items, &mut rng);
        let v: Value = serde_json::from_slice(&w.body).unwrap_or(Value::Null);
        let mut seen = 0;
        for e in v["entry"].as_array().into_iter().flatten() {
            for c in e["changes"].as_array().into_iter().flatten() {
                for s in c["value"]["statuses"].as_array().into_iter().flatten() {
                    assert!(s["id"].as_str().unwrap_or("").starts_with("wamid.OUT"));
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 2);
        assert_eq!(w.statuses.len(), 2);
    }
}
