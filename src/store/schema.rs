//! Column families, their key layouts and the records stored in them.
//!
//! | column family   | key                                   | value                    |
//! |-----------------|---------------------------------------|--------------------------|
//! | `conversations` | conversation id                       | [`Conversation`]         |
//! | `messages`      | conversation id, 0, seq (u64 BE)      | [`Message`]              |
//! | `wamids`        | wamid                                 | [`WamidRef`]             |
//! | `outbox`        | conversation id, 0, seq (u64 BE)      | [`OutboxJob`]            |
//! | `idempotency`   | conversation id, 0, key               | seq (u64 BE)             |
//! | `index`         | see [`IndexKey`]                      | empty                    |
//! | `orphan_status` | wamid                                 | [`StatusUpdate`] (expires: [`super::orphans`]) |
//! | `other_changes` | SHA-256 of the change's JSON          | field, 0, raw JSON       |
//! | `status_log`    | wamid, 0, status, 0, time (i64 BE)    | the status's raw JSON    |
//! | `settings`      | `routing` / `team` 0 team id          | [`super::settings`] records |
//! |                 | `tmpl` 0 name 0 language              | [`super::templates::TemplateRecord`] |
//! |                 | `bic` 0 time (i64 BE) customer        | empty ([`super::openings`]) |
//! | `people`        | `agent` 0 id / `team` 0 id / `seeded` | [`super::people`] records |
//! | `audit`         | seq (u64 BE)                          | [`super::people::AuditRecord`] |
//! | `contacts`      | see [`ContactKey`]: `p`/`u`, 0, number, 0, phone/user id | conversation id |
//! | `media`         | `m` 0 media id                        | [`MediaRecord`]          |
//! |                 | `q` 0 next try (i64 BE) 0 media id    | [`FetchJob`]             |
//! |                 | `c` 0 media id 0 conversation id      | empty (where it is shown)|
//! | `csat_pending`  | conversation id                       | [`CsatPending`]          |
//! | `bot_memory`    | `m` 0 conversation id                 | [`BotMemory`]            |
//! |                 | `w` 0 conversation id                 | team id (held for its opening) |
//! | `report_events` | time (i64 BE, sign flipped), conversation id, 0, u64 BE | [`ReportEvent`] |
//! | `report_rollups`| see [`RollupKey`]: `t`/`a`/`n`, UTC hour (i64 BE, sign flipped), team, 0, agent or number | [`Rollup`] (merge operands) |
//! |                 | `from`                                | i64 BE: hours from here on are rolled up |
//!
//! A `wamids` entry names the message with that wamid, or, for a customer's reaction (not a
//! message of its own), the message it changed, or no message ([`WamidRef::NO_MESSAGE`]) when
//! the broker does not hold the message reacted to.
//!
//! `contacts` is the index from each of a customer's ids to its conversation (whose record holds
//! the contact: ids, username). Its entries are written with the record, in the same batch, from
//! the difference between the stored and the new contact, as the `index` entries are; a record
//! written before contacts existed (`contact.indexed == false`, see `super::legacy`) has none,
//! and its first write adds them all. The id is the key's last part, so one containing NUL still
//! reads unambiguously.
//!
//! Report events are keyed by time first, so a report over `[from, to)` is one range scan that
//! reads only that window; the trailing number (see [`report_key`]) only keeps two events of one
//! conversation in the same millisecond apart.
//!
//! Report rollups are maintained by RocksDB's merge operator ([`super::rollups`]): each report
//! event adds a merge operand to its hour's team, agent and number rollups in the event's own
//! batch, so a rollup holds exactly the durable events of its hour. The dimension comes first so
//! a report over a month is one range scan of its dimension's rollups. `from` marks the first
//! hour whose events all have rollups: set once, when a store whose events predate rollups (or
//! an empty one) is first opened; a report reads the events themselves before it.
//!
//! Big-endian sequence numbers make RocksDB's byte order the message order, so a prefix scan
//! returns a conversation's messages oldest first. Ids never contain NUL (config validation and
//! the id derivation guarantee it), so NUL separates key parts unambiguously.

use serde::{Deserialize, Serialize};

use crate::domain::{Conversation, ConversationStatus, DeliveryStatus, MessageError, Millis};

pub const CF_CONVERSATIONS: &str = "conversations";
pub const CF_MESSAGES: &str = "messages";
pub const CF_WAMIDS: &str = "wamids";
pub const CF_OUTBOX: &str = "outbox";
pub const CF_IDEMPOTENCY: &str = "idempotency";
pub const CF_INDEX: &str = "index";
pub const CF_ORPHAN_STATUS: &str = "orphan_status";
pub const CF_OTHER_CHANGES: &str = "other_changes";
pub const CF_SETTINGS: &str = "settings";
/// Every status callback as Meta sent it (pricing, conversation, errors…), once per redelivery.
pub const CF_STATUS_LOG: &str = "status_log";
/// Agents and teams as admins set them (seeded from the config on the first start).
pub const CF_PEOPLE: &str = "people";
/// Every admin change, oldest first by sequence number.
pub const CF_AUDIT: &str = "audit";

/// (business number, customer phone or user id) → conversation id: see [`ContactKey`].
pub const CF_CONTACTS: &str = "contacts";

/// Media metadata, the durable queue of inbound fetches, and where each media is shown
/// (`crate::media`); the bytes themselves live in the object store.
pub const CF_MEDIA: &str = "media";

/// Reporting events by time (see [`crate::domain::report`]).
pub const CF_REPORT_EVENTS: &str = "report_events";

/// Rating questions sent and not answered yet, by conversation.
pub const CF_CSAT_PENDING: &str = "csat_pending";

/// The bot's memory of each conversation's current bot cycle, and the conversations it holds
/// for a closed team (see [`crate::automation::memory`]).
pub const CF_BOT_MEMORY: &str = "bot_memory";

pub use crate::automation::memory::BotMemory;

/// Hourly rollups of the reporting events per team, agent and number (merge operands).
pub const CF_REPORT_ROLLUPS: &str = "report_rollups";

pub const ALL_CFS: [&str; 18] = [
    CF_CONVERSATIONS,
    CF_MESSAGES,
    CF_WAMIDS,
    CF_OUTBOX,
    CF_IDEMPOTENCY,
    CF_INDEX,
    CF_ORPHAN_STATUS,
    CF_OTHER_CHANGES,
    CF_SETTINGS,
    CF_STATUS_LOG,
    CF_REPORT_EVENTS,
    CF_CSAT_PENDING,
    CF_PEOPLE,
    CF_AUDIT,
    CF_CONTACTS,
    CF_MEDIA,
    CF_BOT_MEMORY,
    CF_REPORT_ROLLUPS,
];

/// An entry of the contact index: one of a customer's ids on one business number. Its value is
/// the conversation id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactKey {
    Phone { number: String, phone: String },
    UserId { number: String, user_id: String },
}

impl ContactKey {
    /// The entries a conversation's contact implies (none for a record never indexed: see
    /// [`Contact::indexed`](crate::domain::Contact)).
    pub fn for_conversation(c: &Conversation) -> Vec<ContactKey> {
        if !c.contact.indexed {
            return Vec::new();
        }
        Self::for_ids(
            &c.number,
            c.contact.phone.as_deref(),
            c.contact.user_id.as_deref(),
        )
    }

    /// The entries naming `phone` and `user_id` on `number`.
    pub fn for_ids(number: &str, phone: Option<&str>, user_id: Option<&str>) -> Vec<ContactKey> {
        let mut keys = Vec::with_capacity(2);
        if let Some(phone) = phone {
            keys.push(ContactKey::Phone {
                number: number.to_string(),
                phone: phone.to_string(),
            });
        }
        if let Some(user_id) = user_id {
            keys.push(ContactKey::UserId {
                number: number.to_string(),
                user_id: user_id.to_string(),
            });
        }
        keys
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            ContactKey::Phone { number, phone } => {
                join(&[b"p", number.as_bytes(), phone.as_bytes()])
            }
            ContactKey::UserId { number, user_id } => {
                join(&[b"u", number.as_bytes(), user_id.as_bytes()])
            }
        }
    }
}

/// A rating question waiting for its answer: where the conversation was resolved and by whom,
/// so the answer counts for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsatPending {
    pub asked_at: Millis,
    pub team: String,
    pub agent: Option<String>,
}

pub use crate::domain::report::{ReportEvent, Rollup};

/// The key of one hour's rollup: which dimension, which UTC hour (its start), the team the
/// events happened in, and the agent or number (empty for a team's own rollup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupKey<'a> {
    pub dimension: crate::domain::report::Dimension,
    pub hour: Millis,
    pub team: &'a str,
    pub key: &'a str,
}

impl<'a> RollupKey<'a> {
    fn tag(d: crate::domain::report::Dimension) -> u8 {
        use crate::domain::report::Dimension;
        match d {
            Dimension::Teams => b't',
            Dimension::Agents => b'a',
            Dimension::Numbers => b'n',
        }
    }

    /// Where `dimension`'s rollups of the hour `hour` begin.
    pub fn prefix(dimension: crate::domain::report::Dimension, hour: Millis) -> Vec<u8> {
        let mut k = Vec::with_capacity(9);
        k.push(Self::tag(dimension));
        k.extend_from_slice(&time_prefix(hour));
        k
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut k = Self::prefix(self.dimension, self.hour);
        k.extend_from_slice(self.team.as_bytes());
        k.push(0);
        k.extend_from_slice(self.key.as_bytes());
        k
    }

    /// Reads a key of `dimension` back (None for anything else).
    pub fn decode(dimension: crate::domain::report::Dimension, k: &'a [u8]) -> Option<Self> {
        let (&tag, rest) = k.split_first()?;
        if tag != Self::tag(dimension) || rest.len() < 8 {
            return None;
        }
        let (time, rest) = rest.split_at(8);
        let hour = (u64::from_be_bytes(time.try_into().ok()?) ^ (1 << 63)) as Millis;
        let sep = rest.iter().position(|b| *b == 0)?;
        Some(Self {
            dimension,
            hour,
            team: std::str::from_utf8(&rest[..sep]).ok()?,
            key: std::str::from_utf8(&rest[sep + 1..]).ok()?,
        })
    }
}

/// The `report_rollups` key of the first hour rolled up (see the module docs).
pub const ROLLUPS_FROM_KEY: &[u8] = b"from";

/// A time as a key prefix that sorts in time order, negative times included.
pub fn time_prefix(at: Millis) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

/// A report event's key: its time, its conversation and `unique` (see [`super::batch`]).
pub fn report_key(at: Millis, conversation_id: &str, unique: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(conversation_id.len() + 17);
    k.extend_from_slice(&time_prefix(at));
    k.extend_from_slice(conversation_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&unique.to_be_bytes());
    k
}

/// Where a wamid lives: which conversation, which message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WamidRef {
    pub conversation_id: String,
    pub seq: u64,
}

impl WamidRef {
    /// The `seq` of a wamid kept without a message (a reaction to a message the broker does
    /// not hold): indexed only so a redelivery is recognised.
    pub const NO_MESSAGE: u64 = u64::MAX;

    /// Whether it names a message.
    pub fn is_message(&self) -> bool {
        self.seq != Self::NO_MESSAGE
    }
}

/// An outbound message that is durable but not yet accepted by the Graph API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxJob {
    pub conversation_id: String,
    pub seq: u64,
    pub number: String,
    pub to: String,
    pub payload: Payload,
    /// A send attempt began and has no definite answer yet: it may have reached Meta. Set
    /// (durably) before a request goes out and cleared after a definite refusal, so a job found
    /// with it at start-up is held for a status callback before it is sent again.
    pub in_doubt: bool,
}

/// What an outbox job sends. Variants are only ever appended (bincode stores the variant index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A text message; `reply_to` is the wamid it quotes (Meta's `context.message_id`).
    Text {
        body: String,
        reply_to: Option<String>,
    },
    /// The business's reaction to the message `message_id` (a wamid); an empty emoji removes it.
    Reaction { message_id: String, emoji: String },
    /// Buttons or a list: Meta's `interactive` object as JSON text, checked by the API.
    Interactive { json: String },
    /// A media message (`kind`: `image`, `audio`, `video`, `document` or `sticker`) of the
    /// broker's media `media_id`. `meta_id` is Meta's id for it once uploaded: recorded durably
    /// on the job before the send, so a retry or a restart sends it without uploading again.
    Media {
        kind: String,
        media_id: String,
        mime_type: String,
        filename: Option<String>,
        caption: Option<String>,
        meta_id: Option<String>,
    },
    /// An approved template: `components_json` is Meta's send `components` array (parameters
    /// filled in), as JSON text.
    Template {
        name: String,
        language: String,
        components_json: String,
    },
}

/// What the broker knows of one media: an inbound attachment or an agent's upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRecord {
    pub id: String,
    pub mime_type: String,
    pub filename: Option<String>,
    pub origin: MediaOrigin,
    pub state: MediaState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaOrigin {
    /// Attached to message `seq` of a conversation; `id` is Meta's media id.
    Inbound { conversation_id: String, seq: u64 },
    /// Uploaded by agent `by` at `at` through `POST /api/v1/media`.
    Upload { by: String, at: Millis },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MediaState {
    /// Not fetched yet (a [`FetchJob`] is queued).
    Pending,
    /// The bytes are in the object store: `size` bytes whose SHA-256 is `sha256` (hex).
    Stored { size: u64, sha256: String },
    /// Given up: Meta answered 404, the id expired, or the bytes never matched their hash.
    Failed { reason: String },
}

/// A pending inbound fetch, keyed by when it is next tried ([`fetch_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchJob {
    pub media_id: String,
    pub conversation_id: String,
    pub seq: u64,
    /// The hash Meta gave in the webhook (base64 or hex), checked against the bytes.
    pub sha256: Option<String>,
    /// Meta keeps a media id 7 days: retries stop then.
    pub expires_at: Millis,
    pub attempts: u32,
    /// Downloads whose bytes did not match their hash (the fetch fails after a few).
    pub mismatches: u32,
    pub next_at: Millis,
}

pub fn media_key(id: &str) -> Vec<u8> {
    join(&[b"m", id.as_bytes()])
}

/// Big-endian with the sign bit flipped, so byte order is time order for any `next_at`.
pub fn fetch_key(next_at: Millis, id: &str) -> Vec<u8> {
    let mut k = FETCH_PREFIX.to_vec();
    k.extend_from_slice(&((next_at as u64) ^ (1 << 63)).to_be_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

pub const FETCH_PREFIX: &[u8] = b"q\0";

/// Reads the time back from a [`fetch_key`].
pub fn fetch_key_time(key: &[u8]) -> Option<Millis> {
    let b: [u8; 8] = key
        .get(FETCH_PREFIX.len()..FETCH_PREFIX.len() + 8)?
        .try_into()
        .ok()?;
    Some((u64::from_be_bytes(b) ^ (1 << 63)) as Millis)
}

pub fn media_shown_key(id: &str, conversation_id: &str) -> Vec<u8> {
    join(&[b"c", id.as_bytes(), conversation_id.as_bytes()])
}

pub fn media_shown_prefix(id: &str) -> Vec<u8> {
    let mut k = join(&[b"c", id.as_bytes()]);
    k.push(0);
    k
}

impl OutboxJob {
    pub fn message_id(&self) -> String {
        crate::domain::message::message_id(&self.conversation_id, self.seq)
    }
}

/// A status callback for a wamid we could not match yet (it raced the Graph API's answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdate {
    pub wamid: String,
    pub status: DeliveryStatus,
    pub error: Option<MessageError>,
    pub at: Millis,
}

pub fn seq_key(conversation_id: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(conversation_id.len() + 9);
    k.extend_from_slice(conversation_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// A status callback's key: the same status of the same message at the same time (a
/// redelivery) is the same key, so it is stored once.
pub fn status_log_key(wamid: &str, status: DeliveryStatus, at: Millis) -> Vec<u8> {
    let status = status.as_str().as_bytes();
    let mut k = Vec::with_capacity(wamid.len() + status.len() + 10);
    k.extend_from_slice(wamid.as_bytes());
    k.push(0);
    k.extend_from_slice(status);
    k.push(0);
    k.extend_from_slice(&at.to_be_bytes());
    k
}

pub fn conversation_prefix(conversation_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(conversation_id.len() + 1);
    k.extend_from_slice(conversation_id.as_bytes());
    k.push(0);
    k
}

pub fn idempotency_key(conversation_id: &str, key: &str) -> Vec<u8> {
    let mut k = conversation_prefix(conversation_id);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Secondary index entries, kept in the same write batch as the conversation they describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexKey {
    /// `s` status team id: list by status and team.
    StatusTeam {
        status: ConversationStatus,
        team: String,
        id: String,
    },
    /// `a` assignee id: list an agent's conversations, rebuild its load.
    Assignee { agent: String, id: String },
}

impl IndexKey {
    /// The index entries a conversation state implies.
    pub fn for_conversation(c: &Conversation) -> Vec<IndexKey> {
        let mut keys = vec![IndexKey::StatusTeam {
            status: c.status,
            team: c.team().to_string(),
            id: c.id.clone(),
        }];
        if let Some(agent) = &c.assignee {
            keys.push(IndexKey::Assignee {
                agent: agent.clone(),
                id: c.id.clone(),
            });
        }
        keys
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            IndexKey::StatusTeam { status, team, id } => join(&[
                b"s",
                status.as_str().as_bytes(),
                team.as_bytes(),
                id.as_bytes(),
            ]),
            IndexKey::Assignee { agent, id } => join(&[b"a", agent.as_bytes(), id.as_bytes()]),
        }
    }

    pub fn decode(key: &[u8]) -> Option<IndexKey> {
        let parts: Vec<&[u8]> = key.split(|b| *b == 0).collect();
        let s = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        match parts.as_slice() {
            [b"s", status, team, id] => Some(IndexKey::StatusTeam {
                status: ConversationStatus::parse(std::str::from_utf8(status).ok()?)?,
                team: s(team)?,
                id: s(id)?,
            }),
            [b"a", agent, id] => Some(IndexKey::Assignee {
                agent: s(agent)?,
                id: s(id)?,
            }),
            _ => None,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            IndexKey::StatusTeam { id, .. } | IndexKey::Assignee { id, .. } => id,
        }
    }
}

/// Prefix of index keys for a status (and optionally a team).
pub fn status_prefix(status: ConversationStatus, team: Option<&str>) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = vec![b"s", status.as_str().as_bytes()];
    if let Some(t) = team {
        parts.push(t.as_bytes());
    }
    let mut k = join(&parts);
    k.push(0);
    k
}

pub fn assignee_prefix(agent: &str) -> Vec<u8> {
    let mut k = join(&[b"a", agent.as_bytes()]);
    k.push(0);
    k
}

fn join(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_keys_round_trip_and_prefix() {
        let k = IndexKey::StatusTeam {
            status: ConversationStatus::Queued,
            team: "support".into(),
            id: "c1".into(),
        };
        let bytes = k.encode();
        assert_eq!(IndexKey::decode(&bytes), Some(k));
        assert!(bytes.starts_with(&status_prefix(ConversationStatus::Queued, Some("support"))));
        assert!(!bytes.starts_with(&status_prefix(ConversationStatus::Queued, Some("supp"))));
        let a = IndexKey::Assignee {
            agent: "alice".into(),
            id: "c1".into(),
        };
        assert_eq!(IndexKey::decode(&a.encode()), Some(a.clone()));
        assert!(a.encode().starts_with(&assignee_prefix("alice")));
    }

    #[test]
    fn fetch_keys_sort_by_time() {
        assert!(fetch_key(-5, "z") < fetch_key(3, "a"));
        assert!(fetch_key(3, "z") < fetch_key(300, "a"));
        assert_eq!(fetch_key_time(&fetch_key(-7, "x")), Some(-7));
        assert_eq!(
            fetch_key_time(&fetch_key(1_700_000_000_000, "x")),
            Some(1_700_000_000_000)
        );
        assert!(fetch_key(1, "x").starts_with(FETCH_PREFIX));
    }

    #[test]
    fn report_keys_sort_by_time() {
        assert!(report_key(-5, "z", 9) < report_key(3, "a", 0));
        assert!(report_key(3, "z", 0) < report_key(4, "a", 0));
        assert!(time_prefix(i64::MIN) < time_prefix(i64::MAX));
    }

    #[test]
    fn seq_keys_sort_numerically() {
        assert!(seq_key("c", 2) < seq_key("c", 10));
        assert!(seq_key("c", 255) < seq_key("c", 256));
    }
}
