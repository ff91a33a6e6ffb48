//! Point reads on the blocking pool: a conversation with its unrecorded messages folded in,
//! messages, wamid and idempotency lookups, parked statuses, settings, the outbox's pending
//! jobs and an agent's owned conversations.
//!
//! Invariant: a conversation handed out is always up to date with every message committed after
//! its record ([`fold_tail`]); only the start-up scans in [`super::list`] return records as
//! stored.

use super::*;

/// Most messages a conversation commits in a row without rewriting its record. Each read of the
/// record then reads at most this many messages to bring it up to date, while a busy
/// conversation skips all but one record write in this many (one of the three memtable inserts
/// an inbound message costs the group-commit writer, stop 15 in `git log -p -- BENCHMARKS.md`).
pub const MAX_UNRECORDED: u64 = 64;

/// A conversation as an actor activation needs it.
pub struct LoadedConversation {
    /// The record with every message committed after it folded in.
    pub conv: Conversation,
    /// The wamids of all its messages, when it has at most the `max_messages` asked for.
    pub wamids: Option<Vec<String>>,
    /// How many messages were committed after the record.
    pub unrecorded: u64,
}

impl Store {
    pub async fn get_conversation(&self, id: &str) -> Result<Option<Conversation>, StoreError> {
        let id = id.to_string();
        self.read(move |db| get_conversation(db, &id)).await
    }

    /// A conversation and, when it has at most `max_messages` messages, the wamids of all of
    /// them (one blocking-pool hop for an actor activation).
    pub async fn load_conversation(
        &self,
        id: &str,
        max_messages: u64,
    ) -> Result<Option<LoadedConversation>, StoreError> {
        let id = id.to_string();
        self.read(move |db| {
            let Some((conv, unrecorded)) = get_folded(db, &id)? else {
                return Ok(None);
            };
            if conv.next_seq > max_messages {
                return Ok(Some(LoadedConversation {
                    conv,
                    wamids: None,
                    unrecorded,
                }));
            }
            let mut wamids = Vec::new();
            scan_prefix(db, CF_MESSAGES, &conversation_prefix(&id), |_, v| {
                let m: Message = decode(v)?;
                wamids.extend(m.wamid);
                Ok(true)
            })?;
            Ok(Some(LoadedConversation {
                conv,
                wamids: Some(wamids),
                unrecorded,
            }))
        })
        .await
    }

    /// For each (number, phone, user id) asked: the conversations the phone and the user id are
    /// indexed to on that number (`CF_CONTACTS`), in that order; None for an id not indexed (or
    /// not given). One blocking-pool hop for all of them.
    pub async fn contact_conversations(
        &self,
        asked: Vec<(String, Option<String>, Option<String>)>,
    ) -> Result<Vec<(Option<String>, Option<String>)>, StoreError> {
        if asked.iter().all(|(_, p, u)| p.is_none() && u.is_none()) {
            return Ok(asked.into_iter().map(|_| (None, None)).collect());
        }
        self.read(move |db| contact_index(db, &asked)).await
    }

    /// [`Self::contact_conversations`] for `asked`, then, in the same hop, the contact of each
    /// candidate conversation none of whose ids the index knows: `candidates` are (the
    /// positions in `asked` of a sender's ids, the conversation id derived for it), and each
    /// answer is `None` when one of those ids is indexed (the record is not read), else the
    /// contact stored at that id (`Some(None)`: no conversation there). A new customer's
    /// resolution costs one hop instead of two.
    pub async fn resolve_contacts(
        &self,
        asked: Vec<(String, Option<String>, Option<String>)>,
        candidates: Vec<(Vec<usize>, String)>,
    ) -> Result<ContactsResolved, StoreError> {
        self.read(move |db| {
            let indexed = contact_index(db, &asked)?;
            let mut holders = Vec::with_capacity(candidates.len());
            for (positions, id) in &candidates {
                let unknown = positions.iter().all(|&i| {
                    indexed
                        .get(i)
                        .is_none_or(|(p, u)| p.is_none() && u.is_none())
                });
                holders.push(if unknown {
                    Some(get_record(db, id)?.map(|c| c.contact))
                } else {
                    None
                });
            }
            Ok((indexed, holders))
        })
        .await
    }

    /// The contacts of conversations `ids` (None: no such conversation), as their records hold
    /// them (a contact changes only with its record, never in a folded message). One hop.
    pub async fn conversation_contacts(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<Option<crate::domain::Contact>>, StoreError> {
        self.read(move |db| {
            ids.iter()
                .map(|id| Ok(get_record(db, id)?.map(|c| c.contact)))
                .collect()
        })
        .await
    }

    pub async fn messages(&self, conversation_id: &str) -> Result<Vec<Message>, StoreError> {
        let prefix = conversation_prefix(conversation_id);
        self.read(move |db| {
            let mut out = Vec::new();
            scan_prefix(db, CF_MESSAGES, &prefix, |_, v| {
                out.push(decode(v)?);
                Ok(true)
            })?;
            Ok(out)
        })
        .await
    }

    pub async fn get_message(
        &self,
        conversation_id: &str,
        seq: u64,
    ) -> Result<Option<Message>, StoreError> {
        let key = seq_key(conversation_id, seq);
        self.read(move |db| {
            db.get_pinned_cf(cf(db, CF_MESSAGES)?, key)
                .map_err(rocks)?
                .map(|v| decode(&v))
                .transpose()
        })
        .await
    }

    /// The conversation's latest inbound message, looking back over at most `max_scan` of its
    /// newest messages (None: none among them).
    pub async fn last_inbound(
        &self,
        conversation_id: &str,
        max_scan: usize,
    ) -> Result<Option<Message>, StoreError> {
        let prefix = conversation_prefix(conversation_id);
        self.read(move |db| {
            // Just past the conversation's keys (its prefix ends with the NUL separator).
            let mut end = prefix.clone();
            if let Some(last) = end.last_mut() {
                *last = 1;
            }
            let it = db.iterator_cf(
                cf(db, CF_MESSAGES)?,
                IteratorMode::From(&end, IterDirection::Reverse),
            );
            for item in it.take(max_scan) {
                let (k, v) = item.map_err(rocks)?;
                if !k.starts_with(&prefix) {
                    break;
                }
                let m: Message = decode(&v)?;
                if m.direction == Direction::Inbound {
                    return Ok(Some(m));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Looks up several wamids at once (one blocking-pool hop for a whole webhook group).
    pub async fn lookup_wamids(
        &self,
        wamids: Vec<String>,
    ) -> Result<Vec<Option<WamidRef>>, StoreError> {
        self.read(move |db| {
            let h = cf(db, CF_WAMIDS)?;
            db.batched_multi_get_cf(h, wamids.iter().map(|w| w.as_bytes()), false)
                .into_iter()
                .map(|r| r.map_err(rocks)?.map(|v| decode(&v)).transpose())
                .collect()
        })
        .await
    }

    pub async fn idempotent_seq(
        &self,
        conversation_id: &str,
        key: &str,
    ) -> Result<Option<u64>, StoreError> {
        let k = idempotency_key(conversation_id, key);
        self.read(move |db| {
            Ok(db
                .get_pinned_cf(cf(db, CF_IDEMPOTENCY)?, k)
                .map_err(rocks)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes))
        })
        .await
    }

    pub async fn orphan_status(&self, wamid: &str) -> Result<Option<StatusUpdate>, StoreError> {
        let k = wamid.as_bytes().to_vec();
        self.read(move |db| {
            db.get_pinned_cf(cf(db, CF_ORPHAN_STATUS)?, k)
                .map_err(rocks)?
                .map(|v| decode(&v))
                .transpose()
        })
        .await
    }

    /// Routing rules and team settings stored by the admin API (see [`settings`]).
    pub async fn settings(
        &self,
    ) -> Result<
        (
            Option<settings::RoutingRecord>,
            Vec<(String, settings::TeamRecord)>,
        ),
        StoreError,
    > {
        self.read(|db| {
            let h = cf(db, CF_SETTINGS)?;
            let routing = db
                .get_pinned_cf(h, settings::ROUTING_KEY)
                .map_err(rocks)?
                .map(|v| decode(&v))
                .transpose()?;
            let mut teams = Vec::new();
            scan_prefix(db, CF_SETTINGS, settings::TEAM_PREFIX, |k, v| {
                let id = String::from_utf8_lossy(&k[settings::TEAM_PREFIX.len()..]).into_owned();
                teams.push((id, decode(v)?));
                Ok(true)
            })?;
            Ok((routing, teams))
        })
        .await
    }

    /// How many durable outbound messages await their outcome, per number (start-up report).
    pub async fn pending_outbox_by_number(&self) -> Result<HashMap<String, usize>, StoreError> {
        self.read(|db| {
            let mut counts = HashMap::new();
            for item in db.iterator_cf(cf(db, CF_OUTBOX)?, IteratorMode::Start) {
                let job: OutboxJob = decode(&item.map_err(rocks)?.1)?;
                *counts.entry(job.number).or_insert(0) += 1;
            }
            Ok(counts)
        })
        .await
    }

    /// Up to `limit` durable sends of `number` after the key of `after` (key order: conversation
    /// id, then seq), and whether the scan reached the end of the outbox. The outbox pages
    /// through this when jobs were kept on disk only (its queue was full, or at start-up).
    pub async fn outbox_page(
        &self,
        number: String,
        after: Option<(String, u64)>,
        limit: usize,
    ) -> Result<(Vec<OutboxJob>, bool), StoreError> {
        self.read(move |db| {
            let start = after.map(|(conv, seq)| key_after(seq_key(&conv, seq)));
            let mode = match &start {
                Some(s) => IteratorMode::From(s, IterDirection::Forward),
                None => IteratorMode::Start,
            };
            let mut jobs = Vec::new();
            for item in db.iterator_cf(cf(db, CF_OUTBOX)?, mode) {
                let job: OutboxJob = decode(&item.map_err(rocks)?.1)?;
                if job.number == number {
                    jobs.push(job);
                    if jobs.len() >= limit {
                        return Ok((jobs, false));
                    }
                }
            }
            Ok((jobs, true))
        })
        .await
    }

    /// Whether send `seq` of a conversation is still waiting for its outcome to be recorded.
    /// Conversation `conversation_id`'s outbox jobs with a seq below `before`, in seq order
    /// (at most `limit`): what must be sent before its job `before`.
    pub async fn outbox_before(
        &self,
        conversation_id: &str,
        before: u64,
        limit: usize,
    ) -> Result<Vec<OutboxJob>, StoreError> {
        let mut prefix = conversation_id.as_bytes().to_vec();
        prefix.push(0);
        self.read(move |db| {
            let mut jobs = Vec::new();
            scan_prefix(db, CF_OUTBOX, &prefix, |_, value| {
                let job: OutboxJob = decode(value)?;
                if job.seq >= before {
                    return Ok(false);
                }
                jobs.push(job);
                Ok(jobs.len() < limit)
            })?;
            Ok(jobs)
        })
        .await
    }

    pub async fn outbox_contains(
        &self,
        conversation_id: &str,
        seq: u64,
    ) -> Result<bool, StoreError> {
        let key = seq_key(conversation_id, seq);
        self.read(move |db| {
            Ok(db
                .get_pinned_cf(cf(db, CF_OUTBOX)?, key)
                .map_err(rocks)?
                .is_some())
        })
        .await
    }

    /// Ids of the conversations an agent owns (rebuilds its load after a restart).
    pub async fn owned_by(&self, agent: &str) -> Result<Vec<String>, StoreError> {
        let prefix = assignee_prefix(agent);
        self.read(move |db| {
            let mut ids = Vec::new();
            scan_prefix(db, CF_INDEX, &prefix, |k, _| {
                if let Some(key) = IndexKey::decode(k) {
                    ids.push(key.id().to_string());
                }
                Ok(true)
            })?;
            Ok(ids)
        })
        .await
    }
}

/// A conversation brought up to date with the messages committed after its record.
fn get_conversation(db: &DB, id: &str) -> Result<Option<Conversation>, StoreError> {
    Ok(get_folded(db, id)?.map(|(conv, _)| conv))
}

/// [`get_conversation`], and how many messages were folded in.
fn get_folded(db: &DB, id: &str) -> Result<Option<(Conversation, u64)>, StoreError> {
    let Some(mut conv) = get_record(db, id)? else {
        return Ok(None);
    };
    let folded = fold_tail(&mut db.raw_iterator_cf(cf(db, CF_MESSAGES)?), &mut conv)?;
    Ok(Some((conv, folded)))
}

/// A conversation's record as stored: `next_seq`, `last_message_at` and `last_inbound_at` may
/// lag its messages (see [`fold_tail`]).
/// What [`Store::resolve_contacts`] answers: the index's answer per id asked, and per candidate
/// its stored contact when it was read.
pub type ContactsResolved = (Vec<Indexed>, Vec<Option<Option<crate::domain::Contact>>>);

/// The conversations a phone and a user id are indexed to (None: not indexed, or not asked).
pub type Indexed = (Option<String>, Option<String>);

/// The contact index's conversation for each (number, phone, user id): phone's, user id's.
fn contact_index(
    db: &DB,
    asked: &[(String, Option<String>, Option<String>)],
) -> Result<Vec<Indexed>, StoreError> {
    let mut keys: Vec<Vec<u8>> = Vec::new();
    let mut slots = Vec::with_capacity(asked.len());
    for (number, phone, user_id) in asked {
        let mut slot = |id: Option<ContactKey>| {
            id.map(|k| {
                keys.push(k.encode());
                keys.len() - 1
            })
        };
        let p = slot(phone.as_deref().map(|p| ContactKey::Phone {
            number: number.clone(),
            phone: p.to_string(),
        }));
        let u = slot(user_id.as_deref().map(|u| ContactKey::UserId {
            number: number.clone(),
            user_id: u.to_string(),
        }));
        slots.push((p, u));
    }
    if keys.is_empty() {
        return Ok(slots.into_iter().map(|_| (None, None)).collect());
    }
    let h = cf(db, CF_CONTACTS)?;
    let values = db
        .batched_multi_get_cf(h, keys.iter().map(Vec::as_slice), false)
        .into_iter()
        .map(|v| match v.map_err(rocks)? {
            None => Ok(None),
            Some(v) => String::from_utf8(v.to_vec())
                .map(Some)
                .map_err(|_| StoreError::Codec("contact index value".into())),
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let at = |i: Option<usize>| i.and_then(|i| values.get(i).cloned().flatten());
    Ok(slots.into_iter().map(|(p, u)| (at(p), at(u))).collect())
}

pub(super) fn get_record(db: &DB, id: &str) -> Result<Option<Conversation>, StoreError> {
    db.get_pinned_cf(cf(db, CF_CONVERSATIONS)?, id.as_bytes())
        .map_err(rocks)?
        .map(|v| decode(&v))
        .transpose()
}

/// Folds into `conv` (a record as stored) the messages committed after it — those from its
/// `next_seq` on, at most [`MAX_UNRECORDED`] since the actor writes the record then — read
/// through `messages`, an iterator over the messages column family (of the same snapshot as the
/// record, when it came from one). Returns how many.
pub(super) fn fold_tail<D: rocksdb::DBAccess>(
    messages: &mut rocksdb::DBRawIteratorWithThreadMode<'_, D>,
    conv: &mut Conversation,
) -> Result<u64, StoreError> {
    let prefix = conversation_prefix(&conv.id);
    messages.seek(seq_key(&conv.id, conv.next_seq));
    let mut folded = 0;
    while let Some(v) = messages
        .key()
        .filter(|k| k.starts_with(&prefix))
        .and(messages.value())
    {
        let m: Message = decode(v)?;
        conv.absorb(&m);
        folded += 1;
        messages.next();
    }
    messages.status().map_err(rocks)?;
    Ok(folded)
}
