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
use super::{cf, rocks, scan_prefix, scan_prefix_from, Store, StoreError};
use crate::domain::Millis;

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

    /// The first `limit` queued fetches in time order, due or not, from those due at `from`
    /// (from the queue's start when None).
    pub async fn fetch_queue_head(
        &self,
        from: Option<Millis>,
        limit: usize,
    ) -> Result<Vec<FetchJob>, StoreError> {
        self.read(move |db| {
            let mut out = Vec::new();
            let start = match from {
                Some(at) => fetch_key(at, ""),
                None => FETCH_PREFIX.to_vec(),
            };
            scan_prefix_from(db, CF_MEDIA, FETCH_PREFIX, &start, |_, v| {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, next_at: i64) -> FetchJob {
        FetchJob {
            media_id: id.into(),
            conversation_id: "c1".into(),
            seq: 1,
            sha256: None,
            expires_at: 1_000_000,
            attempts: 0,
            mismatches: 0,
            next_at,
        }
    }

    #[tokio::test]
    async fn the_fetch_queue_is_in_time_order_and_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), true, 64).expect("open");
        let mut b = Batch::new();
        for (id, at) in [("late", 500), ("early", -3), ("mid", 20)] {
            b.put_fetch(&job(id, at)).expect("encode");
        }
        b.put_media_shown("m1", "conv-a");
        b.put_media_shown("m1", "conv-b");
        b.put_media_shown("m10", "conv-c");
        store.commit(b).await.expect("commit");
        let ids = |jobs: Vec<FetchJob>| jobs.into_iter().map(|j| j.media_id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.fetch_queue_head(None, 10).await.expect("head")),
            ["early", "mid", "late"]
        );
        // Moving a fetch to a later time is a delete and a put.
        let mut b = Batch::new();
        b.delete_fetch(&job("early", -3));
        b.put_fetch(&job("early", 900)).expect("encode");
        store.commit(b).await.expect("commit");
        store.close().await;
        let store = Store::open(dir.path(), true, 64).expect("reopen");
        assert_eq!(
            ids(store.fetch_queue_head(None, 2).await.expect("head")),
            ["mid", "late"]
        );
        assert_eq!(store.fetch_queue_len().await.expect("len"), 3);
        // A media id that is a prefix of another does not see the other's conversations.
        assert_eq!(
            store.media_shown_in("m1").await.expect("shown"),
            ["conv-a", "conv-b"]
        );
        assert_eq!(store.get_media("m1").await.expect("get"), None);
    }
}
