//! What the outbox needs from outside, as two narrow traits, so it depends on neither the actors
//! nor a concrete HTTP client: app.rs wires the real ones ([`GraphClient`], and the conversation
//! actors' sink in `actors::send_outcomes`), tests fake them.
//!
//! Invariants both implementations keep (the outbox's order and at-most-once rest on them):
//! - [`OutcomeSink::attempt`], [`OutcomeSink::attempts`] and [`OutcomeSink::outcome`] are
//!   durable when they answer `Ok`,
//!   and idempotent: the outbox retries them while they fail, and a repeat of one that succeeded
//!   answers `Ok(false)` (the message was settled already) instead of doing it twice.
//! - A sink answers `Ok(false)` as soon as the message no longer waits for a send (its outcome is
//!   recorded, or a status callback adopted it), which is how the outbox drops a second copy.

use std::future::Future;

use crate::domain::MessageError;
use crate::store::{OutboxJob, Payload};
use crate::whatsapp::graph::{GraphClient, MediaMessage, SendError};
use crate::whatsapp::media::MediaError;

/// Sends one job to the Graph API.
pub trait GraphSender: Send + Sync + 'static {
    /// Sends `job`, with `callback_data` (the message id Meta echoes in the job's status
    /// callbacks); returns the wamid Meta assigned.
    fn send(
        &self,
        job: &OutboxJob,
        callback_data: &str,
    ) -> impl Future<Output = Result<String, SendError>> + Send;

    /// Marks the customer's message `wamid` read at Meta, with a typing indicator.
    fn mark_read(
        &self,
        phone_number_id: &str,
        wamid: &str,
    ) -> impl Future<Output = Result<(), SendError>> + Send;

    /// Uploads the broker's media `media_id` to Meta for number `phone_number_id`; answers
    /// Meta's id for it, which a media message is then sent by.
    fn upload_media(
        &self,
        phone_number_id: &str,
        media_id: &str,
        mime_type: &str,
        filename: Option<&str>,
    ) -> impl Future<Output = Result<String, UploadError>> + Send;
}

/// Why one upload failed: Meta's answer, or the media is gone from the broker (no retry helps).
#[derive(Debug)]
pub enum UploadError {
    Meta(MediaError),
    Gone(String),
}

impl GraphSender for GraphClient {
    async fn send(&self, job: &OutboxJob, callback_data: &str) -> Result<String, SendError> {
        match &job.payload {
            Payload::Text { body, reply_to } => {
                self.send_text(
                    &job.number,
                    &job.to,
                    body,
                    reply_to.as_deref(),
                    callback_data,
                )
                .await
            }
            Payload::Reaction {
                message_id: target,
                emoji,
            } => {
                self.send_reaction(&job.number, &job.to, target, emoji, callback_data)
                    .await
            }
            Payload::Interactive { json } => {
                self.send_interactive(&job.number, &job.to, json, callback_data)
                    .await
            }
            Payload::Media {
                kind,
                caption,
                filename,
                meta_id: Some(meta_id),
                ..
            } => {
                let m = MediaMessage {
                    kind,
                    meta_id,
                    caption: caption.as_deref(),
                    filename: filename.as_deref(),
                };
                self.send_media(&job.number, &job.to, &m, callback_data)
                    .await
            }
            Payload::Template {
                name,
                language,
                components_json,
            } => {
                self.send_template(
                    &job.number,
                    &job.to,
                    name,
                    language,
                    components_json,
                    callback_data,
                )
                .await
            }
            // The outbox uploads first and never sends a media job without Meta's id.
            Payload::Media { meta_id: None, .. } => Err(SendError::Permanent {
                code: 0,
                title: "media was not uploaded".into(),
            }),
        }
    }

    async fn mark_read(&self, phone_number_id: &str, wamid: &str) -> Result<(), SendError> {
        GraphClient::mark_read(self, phone_number_id, wamid).await
    }

    /// The Graph client alone holds no media: `media::MetaSender` adds them.
    async fn upload_media(
        &self,
        _phone_number_id: &str,
        media_id: &str,
        _mime_type: &str,
        _filename: Option<&str>,
    ) -> Result<String, UploadError> {
        Err(UploadError::Gone(format!(
            "no media storage to upload {media_id} from"
        )))
    }
}

/// Where the outbox reports what became of a send: to the job's conversation, the single writer
/// of its messages and outbox entries.
pub trait OutcomeSink: Send + Sync + 'static {
    type Error: std::fmt::Display + Send;

    /// Records on the job's entry whether an attempt may be at Meta (`job.in_doubt`); `Ok(false)`
    /// when the message no longer waits for a send.
    fn attempt(&self, job: &OutboxJob) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// [`Self::attempt`] for several jobs at once (a dispatch round's), answering for each, in
    /// order, whether it still waits for a send (so its mark was written). A job no longer on
    /// disk is never written back. By default one [`Self::attempt`] after the other; the
    /// conversation actors' sink writes them all in one commit.
    fn attempts(
        &self,
        jobs: &[&OutboxJob],
    ) -> impl Future<Output = Result<Vec<bool>, Self::Error>> + Send {
        async move {
            let mut marked = Vec::with_capacity(jobs.len());
            for job in jobs {
                marked.push(self.attempt(job).await?);
            }
            Ok(marked)
        }
    }

    /// Records a send's outcome (the wamid Meta gave it, `None` when accepted without one, or
    /// why it failed) and deletes its job, in one batch; `Ok(false)` when it was settled already.
    fn outcome(
        &self,
        conversation: &str,
        seq: u64,
        outcome: Result<Option<String>, MessageError>,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;
}
