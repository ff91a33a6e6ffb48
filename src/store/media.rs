//! The media column family: metadata of every media, the durable queue of inbound fetches
//! (ordered by when each is next tried) and the conversations each media is shown in.
//!
//! The fetch queue is changed only in batches that also say why: a fetch is queued in the batch
//! that stores its message, moved (delete + put under its new time) when it is retried, and
//! deleted in the batch that marks the media stored or failed, so a crash anywhere leaves the
//! queue and the records agreeing.

use super::batch::Batch;
use super::codec::{decode, encode};
use super::schema::*;
use super::{cf, rocks, scan_prefix, Store, StoreError};

impl Batch {
    pub fn put_media(&mut self, r: &MediaRecord) -> Result<(), StoreError> {
        self.put_raw(CF_MEDIA, media_key(&r.id), encode(r)?);
        Ok(())
    }

    pub fn put_fetch(&mut self, job: &FetchJob) -> Result<(), StoreError> {
        self.put_raw(
            CF_MEDIA,
            fetch_key(job.next_at, &job.media_id),
            encode(job)?,
        );
        Ok(())
    }

    pub fn delete_fetch(&mut self, job: &FetchJob) {
        self.delete_raw(CF_MEDIA, fetch_key(job.next_at, &job.media_id));
    }

    /// Media `id` is shown in conversation `conversation_id` (who sees it may download it).
    pub fn put_media_shown(&mut self, id: &str, conversation_id: &str) {
        self.put_raw(CF_MEDIA, media_shown_key(id, conversation_id), Vec::new());
    }
}

/// At most this many conversations are read when checking who may see a media: a media is
/// shown in one conversation (inbound) or in the few an agent sent it to.
pub const MAX_SHOWN_READ: usize = 64;

impl Store {
    pub async fn get_media(&self, id: &str) -> Result<Option<MediaRecord>, StoreError> {
        let key = media_key(id);
        self.read(move |db| {
            db.get_pinned_cf(cf(db, CF_MEDIA)?, key)
                .map_err(rocks)?
                .map(|v| decode(&v))
                .transpose()
        })
        .await
    }

    /// The conversations media `id` is shown in (at most [`MAX_SHOWN_READ`]).
    pub async fn media_shown_in(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let prefix = media_shown_prefix(id);
        self.read(move |db| {
            let mut out = Vec::new();
            scan_prefix(db, CF_MEDIA, &prefix, |k, _| {
                if let Ok(c) = std::str::from_utf8(&k[prefix.len()..]) {
                    out.push(c.to_string());
                }
                Ok(out.len() < MAX_SHOWN_READ)
            })?;
            Ok(out)
        })
        .await
    }

    /// The first `limit` queued fetches in time order, due or not.
    pub async fn fetch_queue_head(&self, limit: usize) -> Result<Vec<FetchJob>, StoreError> {
        self.read(move |db| {
            let mut out = Vec::new();
            scan_prefix(db, CF_MEDIA, FETCH_PREFIX, |_, v| {
                out.push(decode::<FetchJob>(v)?);
                Ok(out.len() < limit)
            })?;
            Ok(out)
        })
        .await
    }

    /// How many fetches are queued (start-up gauge; the queue is small: fetches finish in
    /// seconds unless Meta is down).
    pub async fn fetch_queue_len(&self) -> Result<u64, StoreError> {
        self.read(move |db| {
            let mut n = 0u64;
            scan_prefix(db, CF_MEDIA, FETCH_PREFIX, |_, _| {
                n += 1;
                Ok(true)
            })?;
            Ok(n)
        })
        .await
    }
}
