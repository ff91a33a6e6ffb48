//! The outbox's Graph port with media: sends go through the Graph client as they always do, and
//! an agent's upload is streamed from the object store to Meta (`POST /{phone_number_id}/media`)
//! before its first send.
//!
//! Lives here, not in the outbox, because it reads the broker's media; the outbox sees only the
//! `GraphSender` port, so it depends on neither this module nor the actors.

use std::sync::Arc;

use super::{object_path, Media};
use crate::outbox::{GraphSender, UploadError};
use crate::store::{MediaRecord, MediaState, OutboxJob};
use crate::whatsapp::graph::{GraphClient, SendError};
use crate::whatsapp::media::MediaError;

/// The Graph client, plus the media it uploads from.
pub struct MetaSender {
    graph: GraphClient,
    media: Arc<Media>,
}

impl MetaSender {
    pub fn new(graph: GraphClient, media: Arc<Media>) -> Self {
        Self { graph, media }
    }
}

impl GraphSender for MetaSender {
    async fn send(&self, job: &OutboxJob, callback_data: &str) -> Result<String, SendError> {
        GraphSender::send(&self.graph, job, callback_data).await
    }

    async fn mark_read(&self, phone_number_id: &str, wamid: &str) -> Result<(), SendError> {
        GraphSender::mark_read(&self.graph, phone_number_id, wamid).await
    }

    /// Streams the stored bytes to Meta (never the whole file in memory).
    async fn upload_media(
        &self,
        phone_number_id: &str,
        media_id: &str,
        mime_type: &str,
        filename: Option<&str>,
    ) -> Result<String, UploadError> {
        let size = match self.media.store.get_media(media_id).await {
            Ok(Some(MediaRecord {
                state: MediaState::Stored { size, .. },
                ..
            })) => size,
            Ok(_) => return Err(UploadError::Gone("the media is not stored".into())),
            Err(e) => return Err(UploadError::Meta(MediaError::Transient(e.to_string()))),
        };
        let got = self
            .media
            .objects()
            .get(&object_path(media_id))
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => {
                    UploadError::Gone("the media's bytes are gone".into())
                }
                e => UploadError::Meta(MediaError::Transient(format!("object store: {e}"))),
            })?;
        let body = reqwest::Body::wrap_stream(got.into_stream());
        let name = filename.unwrap_or(media_id);
        self.media
            .graph
            .upload(phone_number_id, mime_type, name, size, body)
            .await
            .map_err(UploadError::Meta)
    }
}
