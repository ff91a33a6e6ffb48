//! A typed, atomic set of changes: what one acknowledgement makes durable.
//!
//! Callers describe changes in domain terms; encoding happens here, on the caller's task, so the
//! group-commit writer only copies bytes. A batch is applied in one RocksDB `WriteBatch`, so a
//! message, its wamid entry, its conversation and the conversation's index entries are either all
//! durable or none is.

use crate::domain::{Conversation, DeliveryStatus, Message, Millis};

use super::codec::encode;
use super::schema::*;
use super::StoreError;

pub(super) enum Op {
    Put {
        cf: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        cf: &'static str,
        key: Vec<u8>,
    },
    /// A merge operand (only `report_rollups` has a merge operator: see `super::rollups`).
    Merge {
        cf: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    /// A put that happens only if `key` exists when the group is applied: the writer thread is
    /// the single writer of every key, so the check and the put are one atomic step against
    /// every other commit (a delete committed before it wins; see `super::writer`).
    PutIfPresent {
        cf: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
}

impl Op {
    pub(super) fn cf(&self) -> &'static str {
        match self {
            Op::Put { cf, .. }
            | Op::Delete { cf, .. }
            | Op::Merge { cf, .. }
            | Op::PutIfPresent { cf, .. } => cf,
        }
    }

    pub(super) fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. }
            | Op::Delete { key, .. }
            | Op::Merge { key, .. }
            | Op::PutIfPresent { key, .. } => key,
        }
    }

    /// The value written (empty for a delete).
    pub(super) fn value(&self) -> &[u8] {
        match self {
            Op::Put { value, .. } | Op::Merge { value, .. } | Op::PutIfPresent { value, .. } => {
                value
            }
            Op::Delete { .. } => &[],
        }
    }
}

#[derive(Default)]
pub struct Batch {
    pub(super) ops: Vec<Op>,
    /// A key whose presence when the writer applies the batch means none of it is written
    /// ([`Self::guard_idempotency`]).
    pub(super) guard: Option<(&'static str, Vec<u8>)>,
}

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }

    fn put(&mut self, cf: &'static str, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push(Op::Put { cf, key, value });
    }

    fn delete(&mut self, cf: &'static str, key: Vec<u8>) {
        self.ops.push(Op::Delete { cf, key });
    }

    /// For sibling store modules that own a column family's keys (`store::media`).
    pub(super) fn put_raw(&mut self, cf: &'static str, key: Vec<u8>, value: Vec<u8>) {
        self.put(cf, key, value);
    }

    pub(super) fn delete_raw(&mut self, cf: &'static str, key: Vec<u8>) {
        self.delete(cf, key);
    }

    pub fn put_routing(&mut self, r: &super::settings::RoutingRecord) -> Result<(), StoreError> {
        self.put(
            CF_SETTINGS,
            super::settings::ROUTING_KEY.to_vec(),
            encode(r)?,
        );
        Ok(())
    }

    pub fn put_team_settings(
        &mut self,
        id: &str,
        r: &super::settings::TeamRecord,
    ) -> Result<(), StoreError> {
        self.put(CF_SETTINGS, super::settings::team_key(id), encode(r)?);
        Ok(())
    }

    /// Writes a conversation and moves its index entries from `before` to `after`.
    pub fn put_conversation(
        &mut self,
        before: Option<&Conversation>,
        after: &Conversation,
    ) -> Result<(), StoreError> {
        self.put(
            CF_CONVERSATIONS,
            after.id.as_bytes().to_vec(),
            encode(after)?,
        );
        let new_keys = IndexKey::for_conversation(after);
        // `before` is the stored record, so its index entries exist: only the difference is
        // written (most changes — a new message — touch no index entry at all).
        let old_keys = before.map(IndexKey::for_conversation).unwrap_or_default();
        for old in &old_keys {
            if !new_keys.contains(old) {
                self.delete(CF_INDEX, old.encode());
            }
        }
        for k in new_keys {
            if !old_keys.contains(&k) {
                self.put(CF_INDEX, k.encode(), Vec::new());
            }
        }
        // The contact index the same way: a moved id (a new number) is deleted and put in this
        // one batch, so no reader ever finds it on neither or both sides.
        let new_ids = ContactKey::for_conversation(after);
        let old_ids = before.map(ContactKey::for_conversation).unwrap_or_default();
        for old in &old_ids {
            if !new_ids.contains(old) {
                self.delete(CF_CONTACTS, old.encode());
            }
        }
        for k in new_ids {
            if !old_ids.contains(&k) {
                self.put(CF_CONTACTS, k.encode(), after.id.as_bytes().to_vec());
            }
        }
        Ok(())
    }

    /// Writes a message (and its wamid entry, when it has one).
    pub fn put_message(&mut self, m: &Message) -> Result<(), StoreError> {
        self.put(CF_MESSAGES, seq_key(&m.conversation_id, m.seq), encode(m)?);
        if let Some(w) = &m.wamid {
            let r = WamidRef {
                conversation_id: m.conversation_id.clone(),
                seq: m.seq,
            };
            self.put(CF_WAMIDS, w.as_bytes().to_vec(), encode(&r)?);
        }
        Ok(())
    }

    /// Rewrites a stored message whose wamid (and so its wamid entry) did not change: one
    /// memtable insert, not two (the wamid entry's key is random, the costlier insert).
    pub fn put_message_only(&mut self, m: &Message) -> Result<(), StoreError> {
        self.put(CF_MESSAGES, seq_key(&m.conversation_id, m.seq), encode(m)?);
        Ok(())
    }

    /// Indexes a wamid that is not a message's own (a customer's reaction, under the message it
    /// changed), so a redelivery of it is recognised.
    pub fn put_wamid(&mut self, wamid: &str, r: &WamidRef) -> Result<(), StoreError> {
        self.put(CF_WAMIDS, wamid.as_bytes().to_vec(), encode(r)?);
        Ok(())
    }

    /// Records a reporting event, and adds it to its hour's rollups (its team's, its agent's if
    /// it has one, its number's) in this same batch, so rollups hold exactly the durable events.
    /// The event key's last part is a process-wide counter that starts at the wall-clock
    /// nanoseconds of the first event, so two events of one conversation in the same millisecond
    /// never share a key, also across restarts.
    pub fn put_report(&mut self, e: &ReportEvent) -> Result<(), StoreError> {
        self.put_report_event(e)?;
        for (key, operand) in super::rollups::operands(&e.view())? {
            self.ops.push(Op::Merge {
                cf: CF_REPORT_ROLLUPS,
                key,
                value: operand,
            });
        }
        Ok(())
    }

    /// The event alone, without rollups: what releases before rollups wrote (tests of a store
    /// upgraded from one).
    #[cfg(test)]
    pub(super) fn put_report_without_rollups(&mut self, e: &ReportEvent) -> Result<(), StoreError> {
        self.put_report_event(e)
    }

    fn put_report_event(&mut self, e: &ReportEvent) -> Result<(), StoreError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::OnceLock;
        static NEXT: OnceLock<AtomicU64> = OnceLock::new();
        let next = NEXT.get_or_init(|| {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            AtomicU64::new(nanos)
        });
        let unique = next.fetch_add(1, Ordering::Relaxed);
        self.put(
            CF_REPORT_EVENTS,
            report_key(e.at, &e.conversation, unique),
            encode(e)?,
        );
        Ok(())
    }

    pub fn put_csat_pending(
        &mut self,
        conversation_id: &str,
        p: &CsatPending,
    ) -> Result<(), StoreError> {
        self.put(
            CF_CSAT_PENDING,
            conversation_id.as_bytes().to_vec(),
            encode(p)?,
        );
        Ok(())
    }

    pub fn delete_csat_pending(&mut self, conversation_id: &str) {
        self.delete(CF_CSAT_PENDING, conversation_id.as_bytes().to_vec());
    }

    pub fn put_outbox(&mut self, job: &OutboxJob) -> Result<(), StoreError> {
        self.put(
            CF_OUTBOX,
            seq_key(&job.conversation_id, job.seq),
            encode(job)?,
        );
        Ok(())
    }

    /// Rewrites `job`'s entry only if it is still on disk when the batch is applied (a job
    /// settled meanwhile is not brought back); [`super::Store::commit_checked`] says which were.
    pub fn put_outbox_if_present(&mut self, job: &OutboxJob) -> Result<(), StoreError> {
        self.ops.push(Op::PutIfPresent {
            cf: CF_OUTBOX,
            key: seq_key(&job.conversation_id, job.seq),
            value: encode(job)?,
        });
        Ok(())
    }

    pub fn delete_outbox(&mut self, conversation_id: &str, seq: u64) {
        self.delete(CF_OUTBOX, seq_key(conversation_id, seq));
    }

    /// Makes the whole batch depend on idempotency key `key` of the conversation being unused:
    /// if it is stored when the writer applies the batch, nothing of the batch is written and
    /// [`super::Store::commit_guarded`] answers the seq it names. The writer writes every key, so
    /// the check is atomic with the write (no read before the commit is needed).
    pub fn guard_idempotency(&mut self, conversation_id: &str, key: &str) {
        self.guard = Some((CF_IDEMPOTENCY, idempotency_key(conversation_id, key)));
    }

    pub fn put_idempotency(&mut self, conversation_id: &str, key: &str, seq: u64) {
        self.put(
            CF_IDEMPOTENCY,
            idempotency_key(conversation_id, key),
            seq.to_be_bytes().to_vec(),
        );
    }

    pub fn put_orphan_status(&mut self, s: &StatusUpdate) -> Result<(), StoreError> {
        self.put(CF_ORPHAN_STATUS, s.wamid.as_bytes().to_vec(), encode(s)?);
        Ok(())
    }

    pub fn delete_orphan_status(&mut self, wamid: &str) {
        self.delete(CF_ORPHAN_STATUS, wamid.as_bytes().to_vec());
    }

    /// Keeps a status callback verbatim (the broker reads only its id, status, time and error).
    pub fn put_status_log(&mut self, wamid: &str, status: DeliveryStatus, at: Millis, raw: &str) {
        self.put(
            CF_STATUS_LOG,
            status_log_key(wamid, status, at),
            raw.as_bytes().to_vec(),
        );
    }

    /// Keeps a webhook change the broker does not act on (yet), verbatim, keyed by its digest so
    /// a redelivery is stored once.
    pub fn put_other_change(&mut self, field: &str, raw: &str) {
        use sha2::{Digest, Sha256};
        let key = Sha256::digest(raw.as_bytes()).to_vec();
        let mut value = Vec::with_capacity(field.len() + raw.len() + 1);
        value.extend_from_slice(field.as_bytes());
        value.push(0);
        value.extend_from_slice(raw.as_bytes());
        self.put(CF_OTHER_CHANGES, key, value);
    }
}
