//! Inbound media: the fetch a message with media queues in the batch that stores it, and the
//! fetcher's report that the bytes are kept (see `crate::media`).

use super::*;
use crate::domain::message::MEDIA_ID_LIFETIME_MS;
use crate::store::{MediaOrigin, MediaRecord, MediaState};

/// Queues the fetch of `msg`'s media (not yet downloaded) in `batch`, with its record (pending)
/// and its visibility entry; answers how many fetches it queued (0 or 1).
pub(super) fn queue_fetch(batch: &mut Batch, msg: &Message, now: Millis) -> Result<usize, Error> {
    let Some(media) = msg.media.as_ref().filter(|m| !m.downloaded) else {
        return Ok(0);
    };
    batch.put_media(&MediaRecord {
        id: media.id.clone(),
        mime_type: media.mime_type.clone(),
        filename: media.filename.clone(),
        origin: MediaOrigin::Inbound {
            conversation_id: msg.conversation_id.clone(),
            seq: msg.seq,
        },
        state: MediaState::Pending,
    })?;
    batch.put_media_shown(&media.id, &msg.conversation_id);
    batch.put_fetch(&FetchJob {
        media_id: media.id.clone(),
        conversation_id: msg.conversation_id.clone(),
        seq: msg.seq,
        sha256: media.sha256.clone(),
        // Meta keeps the id 7 days from the message; a timestamp from the future counts from now.
        expires_at: msg.at.min(now).saturating_add(MEDIA_ID_LIFETIME_MS),
        attempts: 0,
        mismatches: 0,
        next_at: now,
    })?;
    Ok(1)
}

impl ConversationActor {
    pub(super) async fn media_fetched(
        &self,
        state: &mut State,
        job: FetchJob,
        size: u64,
        sha256: String,
    ) -> Result<(), Error> {
        let mut batch = Batch::new();
        batch.delete_fetch(&job);
        let msg = self.message(state, job.seq).await?;
        let Some(mut msg) = msg.filter(|m| m.media.as_ref().is_some_and(|i| i.id == job.media_id))
        else {
            // Not this conversation's media any more (nothing should do that): drop the fetch.
            self.ctx.store.commit(batch).await?;
            return Ok(());
        };
        let Some(info) = msg.media.as_mut() else {
            return Ok(());
        };
        info.downloaded = true;
        info.size = Some(size);
        batch.put_media(&MediaRecord {
            id: info.id.clone(),
            mime_type: info.mime_type.clone(),
            filename: info.filename.clone(),
            origin: MediaOrigin::Inbound {
                conversation_id: state.conv.id.clone(),
                seq: msg.seq,
            },
            state: MediaState::Stored { size, sha256 },
        })?;
        // Its wamid entry is as it was.
        batch.put_message_only(&msg)?;
        self.ctx.store.commit(batch).await?;
        self.publish(EventKind::MessageStatus, &state.conv, Some(msg), None);
        Ok(())
    }
}
