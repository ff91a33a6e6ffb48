//! Record layouts written by earlier releases, kept so their data still reads.
//!
//! Each stored type implements [`Record`] here: its current version and how older versions
//! become the current type. A layout change adds a frozen copy of the old struct below and one
//! arm to `upgrade`; nothing is ever rewritten in place, records are upgraded as they are read
//! and written back in the new layout on their next change.

use serde::Deserialize;

use super::codec::{raw, Record};
use super::schema::{FetchJob, MediaRecord, OutboxJob, Payload, StatusUpdate, WamidRef};
use super::settings::{RoutingRecord, TeamRecord};
use super::StoreError;
use crate::domain::message::{MessageV1, MessageV2};
use crate::domain::{Contact, Conversation, ConversationStatus, Message, Millis};

/// Types still in their first layout: version 1, nothing older to read.
macro_rules! first_layout {
    ($($t:ty),* $(,)?) => { $(impl Record for $t { const VERSION: u8 = 1; })* };
}

first_layout!(
    WamidRef,
    StatusUpdate,
    RoutingRecord,
    TeamRecord,
    MediaRecord,
    FetchJob,
    crate::domain::report::ReportEvent,
    crate::domain::report::Rollup,
    super::schema::CsatPending,
    super::schema::BotMemory,
);

/// Version 2 added replies, reactions, referrals, media, pricing and typed content; version 3
/// the [`crate::domain::message::Lifecycle`] (coexistence: imported, edited, revoked).
impl Record for Message {
    const VERSION: u8 = 3;
    fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StoreError> {
        match version {
            1 => Ok(raw::<MessageV1>(bytes)?.into()),
            2 => Ok(raw::<MessageV2>(bytes)?.into()),
            v => Err(StoreError::Codec(format!(
                "unknown message record version {v}"
            ))),
        }
    }
}

/// Version 2 added `in_doubt` (an attempt may have reached Meta); version 3 replaced `text` with
/// a [`Payload`] (media, quotes, reactions, interactive messages).
impl Record for OutboxJob {
    const VERSION: u8 = 3;
    fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StoreError> {
        match version {
            1 => Ok(raw::<OutboxJobV1>(bytes)?.into()),
            2 => Ok(raw::<OutboxJobV2>(bytes)?.into()),
            v => Err(StoreError::Codec(format!(
                "unknown outbox record version {v}"
            ))),
        }
    }
}

/// OutboxJob as written by version 1 (before `in_doubt`).
#[derive(Deserialize)]
struct OutboxJobV1 {
    conversation_id: String,
    seq: u64,
    number: String,
    to: String,
    text: String,
}

/// OutboxJob as written by version 2 (text only).
#[derive(Deserialize)]
struct OutboxJobV2 {
    conversation_id: String,
    seq: u64,
    number: String,
    to: String,
    text: String,
    in_doubt: bool,
}

impl From<OutboxJobV2> for OutboxJob {
    fn from(v: OutboxJobV2) -> Self {
        OutboxJob {
            conversation_id: v.conversation_id,
            seq: v.seq,
            number: v.number,
            to: v.to,
            payload: Payload::Text {
                body: v.text,
                reply_to: None,
            },
            in_doubt: v.in_doubt,
        }
    }
}

impl From<OutboxJobV1> for OutboxJob {
    fn from(v: OutboxJobV1) -> Self {
        OutboxJob {
            conversation_id: v.conversation_id,
            seq: v.seq,
            number: v.number,
            to: v.to,
            payload: Payload::Text {
                body: v.text,
                reply_to: None,
            },
            // Version 1 kept no record of attempts; its release retried timeouts at once.
            in_doubt: false,
        }
    }
}

/// Version 2 added priority, labels, the routing rule, SLA clocks and assignment tracking;
/// version 3 the contact (the customer's phone, user id and username), as its last field.
impl Record for Conversation {
    const VERSION: u8 = 3;
    fn upgrade(version: u8, bytes: &[u8]) -> Result<Self, StoreError> {
        match version {
            1 => Ok(raw::<ConversationV1>(bytes)?.into()),
            2 => conversation_v2(bytes),
            v => Err(StoreError::Codec(format!(
                "unknown conversation record version {v}"
            ))),
        }
    }
}

/// A version-2 conversation: every field of version 3 but the last, `contact`. Bincode is
/// positional, so the version-2 bytes followed by an encoded contact are a version-3 record;
/// the contact is then set from `customer`, the one id version 2 knew (a phone, or a user id by
/// its shape). Not indexed: the contact index is written lazily, by the record's next write (its
/// first inbound message), and until then the conversation is found by the id derived from its
/// phone, exactly as version 2 found it (see `ingest`'s contact resolution).
fn conversation_v2(bytes: &[u8]) -> Result<Conversation, StoreError> {
    let mut v3 = bytes.to_vec();
    bincode::serialize_into(&mut v3, &Contact::default())
        .map_err(|e| StoreError::Codec(e.to_string()))?;
    let mut c: Conversation = raw(&v3)?;
    c.contact = Contact::from_customer(&c.customer);
    c.contact.indexed = false;
    Ok(c)
}

/// Conversation as written by version 1 (before routing and SLAs).
#[derive(Deserialize)]
struct ConversationV1 {
    id: String,
    number: String,
    customer: String,
    customer_name: Option<String>,
    status: ConversationStatus,
    team: String,
    assignee: Option<String>,
    last_inbound_at: Option<Millis>,
    last_message_at: Millis,
    created_at: Millis,
    queued_at: Millis,
    next_seq: u64,
}

impl From<ConversationV1> for Conversation {
    fn from(v: ConversationV1) -> Self {
        let ConversationV1 {
            id,
            number,
            customer,
            customer_name,
            status,
            team,
            assignee,
            last_inbound_at,
            last_message_at,
            created_at,
            queued_at,
            next_seq,
        } = v;
        // What version 1 did not have starts as in a conversation created at its last queueing
        // (normal priority, no labels, no rule, no after-hours reply): in particular its SLA
        // cycle starts there, the best record of when a human last became responsible.
        let mut c = Conversation::new(&number, &customer, &team, queued_at);
        c.id = id;
        c.customer_name = customer_name;
        c.status = status;
        c.assigned_at = assignee.is_some().then_some(queued_at);
        c.assignee = assignee;
        c.last_inbound_at = last_inbound_at;
        c.last_message_at = last_message_at;
        c.created_at = created_at;
        c.next_seq = next_seq;
        // Unknown: assume answered, so an upgrade never triggers a reassignment by itself.
        c.owner_answered = true;
        // Its ids are not in the contact index yet (see `conversation_v2`).
        c.contact.indexed = false;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::decode;

    #[test]
    fn version_1_conversations_still_read() {
        #[derive(serde::Serialize)]
        struct V1<'a> {
            id: &'a str,
            number: &'a str,
            customer: &'a str,
            customer_name: Option<&'a str>,
            status: ConversationStatus,
            team: &'a str,
            assignee: Option<&'a str>,
            last_inbound_at: Option<Millis>,
            last_message_at: Millis,
            created_at: Millis,
            queued_at: Millis,
            next_seq: u64,
        }
        let old = V1 {
            id: "c1",
            number: "n",
            customer: "49",
            customer_name: Some("Ana"),
            status: ConversationStatus::Assigned,
            team: "support",
            assignee: Some("alice"),
            last_inbound_at: Some(5),
            last_message_at: 6,
            created_at: 1,
            queued_at: 2,
            next_seq: 3,
        };
        let mut bytes = vec![1u8];
        bytes.extend(bincode::serialize(&old).expect("encode v1"));
        let c: Conversation = decode(&bytes).expect("upgrade");
        assert_eq!(c.assignee.as_deref(), Some("alice"));
        assert_eq!(c.next_seq, 3);
        assert_eq!(c.priority(), crate::domain::Priority::Normal);
        assert_eq!(c.sla().responsible_since, 2);
        assert!(c.owner_answered);
        assert_eq!(c.contact.phone.as_deref(), Some("49"));
        assert!(!c.contact.indexed);
    }

    /// A version-2 record is a version-3 one without its last field, the contact.
    #[test]
    fn version_2_conversations_read_with_an_unindexed_contact() {
        for (customer, phone, user_id) in [
            ("4915112345678", Some("4915112345678"), None),
            (
                "US.13491208655302741918",
                None,
                Some("US.13491208655302741918"),
            ),
        ] {
            let mut c = Conversation::new("n", customer, "support", 5);
            c.customer_name = Some("Ana".into());
            let full = bincode::serialize(&c).expect("encode");
            let tail = bincode::serialize(&c.contact).expect("encode contact");
            let mut bytes = vec![2u8];
            bytes.extend_from_slice(&full[..full.len() - tail.len()]);
            let read: Conversation = decode(&bytes).expect("upgrade");
            assert_eq!(read.id, c.id);
            assert_eq!(read.customer_name.as_deref(), Some("Ana"));
            assert_eq!(read.contact.phone.as_deref(), phone);
            assert_eq!(read.contact.user_id.as_deref(), user_id);
            assert!(!read.contact.indexed);
        }
    }

    #[test]
    fn version_1_outbox_jobs_still_read_as_not_in_doubt() {
        let old = (String::from("c1"), 7u64, "n", "49", "hello");
        let mut bytes = vec![1u8];
        bytes.extend(bincode::serialize(&old).expect("encode v1"));
        let job: OutboxJob = decode(&bytes).expect("upgrade");
        let text = Payload::Text {
            body: "hello".into(),
            reply_to: None,
        };
        assert_eq!((job.seq, &job.payload, job.in_doubt), (7, &text, false));
    }

    #[test]
    fn version_2_outbox_jobs_read_as_text_payloads() {
        let old = (String::from("c1"), 7u64, "n", "49", "hello", true);
        let mut bytes = vec![2u8];
        bytes.extend(bincode::serialize(&old).expect("encode v2"));
        let job: OutboxJob = decode(&bytes).expect("upgrade");
        let text = Payload::Text {
            body: "hello".into(),
            reply_to: None,
        };
        assert_eq!((job.seq, &job.payload, job.in_doubt), (7, &text, true));
    }

    #[test]
    fn version_2_messages_read_with_a_default_lifecycle() {
        use crate::domain::message::{Author, Lifecycle};
        let m = Message {
            conversation_id: "c1".into(),
            seq: 3,
            direction: crate::domain::Direction::Outbound,
            kind: "text".into(),
            text: Some("hi".into()),
            wamid: Some("wamid.2".into()),
            status: Some(crate::domain::DeliveryStatus::Sent),
            author: Author::BusinessApp,
            at: 7,
            error: None,
            idempotency_key: None,
            raw: None,
            reply_to: None,
            reactions: Vec::new(),
            referral: None,
            media: None,
            pricing: None,
            content: None,
            lifecycle: Lifecycle {
                imported: true,
                edited_at: Some(8),
                revoked_at: None,
            },
        };
        // Version 3 is version 2 plus the lifecycle at the end: version 2's bytes are version
        // 3's without it.
        let v3 = super::super::codec::encode(&m).expect("encode");
        assert_eq!(v3[0], 3);
        let lifecycle = bincode::serialize(&m.lifecycle).expect("encode lifecycle");
        let mut v2 = vec![2u8];
        v2.extend_from_slice(&v3[1..v3.len() - lifecycle.len()]);
        let old: Message = decode(&v2).expect("upgrade");
        assert_eq!(old.lifecycle, Lifecycle::default());
        assert_eq!(old.author, Author::BusinessApp);
        assert_eq!((old.seq, old.text.as_deref()), (3, Some("hi")));
        let again: Message = decode(&v3).expect("decode");
        assert_eq!(again, m);
    }

    #[test]
    fn version_1_messages_read_with_no_replies_reactions_or_media() {
        let old = (
            String::from("c1"),
            4u64,
            crate::domain::Direction::Inbound,
            "text",
            Some("hi"),
            Some("wamid.1"),
            Some(crate::domain::DeliveryStatus::Received),
            "49",
            9i64,
            None::<crate::domain::MessageError>,
            None::<String>,
            Some("{}"),
        );
        let mut bytes = vec![1u8];
        bytes.extend(bincode::serialize(&old).expect("encode v1"));
        let m: Message = decode(&bytes).expect("upgrade");
        assert_eq!(
            (m.seq, m.text.as_deref(), m.raw.as_deref()),
            (4, Some("hi"), Some("{}"))
        );
        assert!(m.reply_to.is_none() && m.reactions.is_empty() && m.media.is_none());
        let again: Message =
            decode(&super::super::codec::encode(&m).expect("encode")).expect("decode");
        assert_eq!(again, m);
    }
}
