//! The `bot_memory` column family: the bot's memory of each conversation's current bot cycle
//! (`m` 0 id → [`BotMemory`]) and, beside it, the conversations the bot holds for a closed team
//! until it opens (`w` 0 id → the team id), so start-up schedules their wake-up without
//! reading every memory.
//!
//! Both entries of a conversation change only together, in the batch of the bot's step that
//! changed the memory ([`Batch::put_bot_memory`] / [`Batch::delete_bot_memory`]).

use super::batch::Batch;
use super::codec::{decode, encode};
use super::schema::*;
use super::{cf, rocks, scan_prefix, Store, StoreError};

fn memory_key(conversation_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(conversation_id.len() + 2);
    k.extend_from_slice(b"m\0");
    k.extend_from_slice(conversation_id.as_bytes());
    k
}

const WAITING: &[u8] = b"w\0";

fn waiting_key(conversation_id: &str) -> Vec<u8> {
    let mut k = WAITING.to_vec();
    k.extend_from_slice(conversation_id.as_bytes());
    k
}

impl Batch {
    /// The memory of `conversation_id`'s bot cycle as it is now (and whether it is held for a
    /// closed team).
    pub fn put_bot_memory(
        &mut self,
        conversation_id: &str,
        memory: &BotMemory,
    ) -> Result<(), StoreError> {
        self.put_raw(CF_BOT_MEMORY, memory_key(conversation_id), encode(memory)?);
        match &memory.waiting {
            Some(w) => self.put_raw(
                CF_BOT_MEMORY,
                waiting_key(conversation_id),
                w.team.as_bytes().to_vec(),
            ),
            None => self.delete_raw(CF_BOT_MEMORY, waiting_key(conversation_id)),
        }
        Ok(())
    }

    /// The bot cycle ended (or a new one starts): nothing of it is kept.
    pub fn delete_bot_memory(&mut self, conversation_id: &str) {
        self.delete_raw(CF_BOT_MEMORY, memory_key(conversation_id));
        self.delete_raw(CF_BOT_MEMORY, waiting_key(conversation_id));
    }
}

impl Store {
    /// The bot's memory of the conversation's current cycle, if it has one.
    pub async fn bot_memory(&self, conversation_id: &str) -> Result<Option<BotMemory>, StoreError> {
        let key = memory_key(conversation_id);
        self.read(move |db| {
            db.get_pinned_cf(cf(db, CF_BOT_MEMORY)?, key)
                .map_err(rocks)?
                .map(|v| decode(&v))
                .transpose()
        })
        .await
    }

    /// Visits every conversation the bot holds for a closed team, with the team, in pages of
    /// at most `page` (so they are never all in memory at once).
    pub async fn scan_bot_waiting(
        &self,
        page: usize,
        mut visit: impl FnMut(Vec<(String, String)>) + Send + 'static,
    ) -> Result<(), StoreError> {
        self.read(move |db| {
            let mut batch = Vec::with_capacity(page);
            scan_prefix(db, CF_BOT_MEMORY, WAITING, |k, v| {
                let id = String::from_utf8_lossy(&k[WAITING.len()..]).into_owned();
                let team = String::from_utf8_lossy(v).into_owned();
                batch.push((id, team));
                if batch.len() >= page {
                    visit(std::mem::take(&mut batch));
                }
                Ok(true)
            })?;
            if !batch.is_empty() {
                visit(batch);
            }
            Ok(())
        })
        .await
    }
}
