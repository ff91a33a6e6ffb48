//! Media: inbound attachments fetched from Meta and kept, agents' uploads checked and kept, and
//! both served back with `Range`.
//!
//! - **Bytes** live in an [`object_store`] (a directory under the storage path by default, any
//!   S3-compatible bucket by config, see [`objects`]); **metadata** ([`MediaRecord`]), the durable
//!   **fetch queue** ([`FetchJob`]) and where each media is **shown** live in RocksDB
//!   (`store::schema::CF_MEDIA`).
//! - **Never a whole file in memory**: downloads and uploads stream through [`store_stream`],
//!   which hashes while it writes; a transfer holds at most one part being filled and
//!   [`PARTS_IN_FLIGHT`] being written (object-store parts are 5 MiB, the S3 minimum), so at most
//!   15 MiB per transfer: `media.max_concurrent_fetches` transfers for fetches, at most
//!   `server.max_inflight_api` for uploads. Reads stream from the store chunk by chunk.
//! - **Inbound** ([`fetch`]): a message with media queues its fetch in the batch that stores it,
//!   so a fetch is never lost (a restart finds it on disk) and never exists without its message.
//!   The fetcher asks Meta where the bytes are, streams them into the object store, checks them
//!   against Meta's SHA-256 (hex or base64, see [`hash`]) and only then has the conversation
//!   actor mark the message's media `downloaded` (durable, with the record and the queue entry
//!   in one batch, then an event). Downloads run on threads of their own at a lower priority
//!   (`media.fetch_nice`), so under load they yield the cores to ingest and the durable queue
//!   grows instead, then drains. Failures are retried with exponential back-off until Meta's 7
//!   days for the id are over; a 404 fails it at once; bytes that do not match their hash are
//!   retried (a transfer can be cut or mangled) but fail after [`MAX_MISMATCHES`].
//! - **Outbound**: `POST /api/v1/media` checks Meta's type and size limits ([`limits`]) before
//!   storing; the outbox uploads the file to Meta before sending and records Meta's id on the
//!   job durably, so a retry or a restart never uploads twice nor sends twice.
//! - **Who may read**: whoever sees a conversation the media is shown in, its uploader, admins.
//!   Anything else, and anything not yet stored, is not found.

pub mod fetch;
pub mod hash;
pub mod limits;
pub mod objects;
pub mod parse;
mod sender;

use std::sync::Arc;

use crate::actors::ports::FetchSignal;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStore, WriteMultipart};
use sha2::{Digest, Sha256};

use crate::domain::{Caller, Millis, Role};
use crate::store::{MediaOrigin, MediaRecord, MediaState, Store, StoreError};
use crate::whatsapp::media::MediaGraph;

pub use limits::{kind_of, MediaKind, MAX_MEDIA_BYTES};
pub use sender::MetaSender;

/// Downloads whose bytes did not match Meta's hash before a fetch is failed for good.
pub const MAX_MISMATCHES: u32 = 3;

pub use crate::domain::message::MEDIA_ID_LIFETIME_MS;

/// Parts of an object-store upload in flight per transfer (each at most 5 MiB).
const PARTS_IN_FLIGHT: usize = 2;

/// Why a media operation failed; the HTTP layer gives each its code.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// Unknown, not visible to the caller, or not stored (yet).
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Invalid(String),
    /// The requested range starts past the end of the media (of `size` bytes).
    #[error("range not satisfiable")]
    Range { size: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The object store failed (logged; clients see a storage error).
    #[error("object store: {0}")]
    Objects(String),
    /// The body being read failed (the client went away, or was too slow).
    #[error("reading the body: {0}")]
    Body(String),
}

/// What [`store_stream`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    pub sha256: [u8; 32],
}

/// How [`store_stream`] failed; nothing is left in the object store.
#[derive(Debug)]
pub enum StreamError<E> {
    /// More than the limit arrived.
    TooLarge,
    /// The source stream failed.
    Source(E),
    Objects(object_store::Error),
}

/// Streams `source` into object `path`, hashing as it goes, refusing more than `max` bytes.
/// On any failure the partial object is aborted, so a reader never finds half a file.
pub async fn store_stream<S, E>(
    objects: &dyn ObjectStore,
    path: &ObjectPath,
    mut source: S,
    max: u64,
) -> Result<Written, StreamError<E>>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    let upload = objects
        .put_multipart(path)
        .await
        .map_err(StreamError::Objects)?;
    let mut w = WriteMultipart::new(upload);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let failed = loop {
        let chunk = match source.next().await {
            None => break None,
            Some(Ok(c)) => c,
            Some(Err(e)) => break Some(StreamError::Source(e)),
        };
        size += chunk.len() as u64;
        if size > max {
            break Some(StreamError::TooLarge);
        }
        hasher.update(&chunk);
        if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
            break Some(StreamError::Objects(e));
        }
        w.put(chunk);
    };
    if let Some(e) = failed {
        let _ = w.abort().await;
        return Err(e);
    }
    w.finish().await.map_err(StreamError::Objects)?;
    Ok(Written {
        size,
        sha256: hasher.finalize().into(),
    })
}

/// Where media `id`'s bytes are kept: its id hex-encoded (ids come from Meta or from
/// [`new_upload_id`], but an object path must never depend on what an id contains).
pub fn object_path(id: &str) -> ObjectPath {
    ObjectPath::from(format!("media/{}", hex::encode(id.as_bytes())))
}

/// An id for an agent's upload: never a Meta id (those are digits).
pub fn new_upload_id() -> String {
    let n: u128 = rand::random();
    format!("u{n:032x}")
}

/// A stored media opened for reading.
pub struct Opened {
    pub mime_type: String,
    pub filename: Option<String>,
    /// The whole media's size.
    pub size: u64,
    /// The bytes served: `start..end` (end exclusive).
    pub range: std::ops::Range<u64>,
    pub body: BoxStream<'static, Result<Bytes, object_store::Error>>,
}

/// A byte range as a client asked for it (`Range: bytes=…`), before the size is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteRange {
    /// `a-b` (inclusive) or `a-` (`None`: to the end).
    From(u64, Option<u64>),
    /// `-n`: the last n bytes.
    Suffix(u64),
}

impl ByteRange {
    /// The bytes this range names in a media of `size` bytes, or None when none of them exist.
    pub fn resolve(self, size: u64) -> Option<std::ops::Range<u64>> {
        match self {
            ByteRange::From(start, end) => {
                if start >= size || end.is_some_and(|e| e < start) {
                    return None;
                }
                let end = end.map_or(size, |e| e.saturating_add(1).min(size));
                Some(start..end)
            }
            ByteRange::Suffix(0) => None,
            ByteRange::Suffix(n) => Some(size.saturating_sub(n)..size),
        }
    }
}

/// The media service: the object store, and the metadata that says who may read what.
pub struct Media {
    store: Store,
    objects: Arc<dyn ObjectStore>,
    /// Meta's media endpoints: the fetcher's downloads and the outbox's uploads.
    pub graph: MediaGraph,
    /// Wakes the fetcher when a fetch is queued.
    pub(crate) wake: Arc<FetchSignal>,
    fetcher: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The threads downloads run on, at a lower priority ([`fetch::Lane`]).
    lane: parking_lot::Mutex<Option<fetch::Lane>>,
}

impl Media {
    /// `wake` is the notice conversations give when they queue a fetch (`Ctx::media_queued`).
    pub fn new(
        store: Store,
        objects: Arc<dyn ObjectStore>,
        graph: MediaGraph,
        wake: Arc<FetchSignal>,
    ) -> Self {
        Self {
            store,
            objects,
            graph,
            wake,
            fetcher: parking_lot::Mutex::new(None),
            lane: parking_lot::Mutex::new(None),
        }
    }

    pub fn objects(&self) -> &Arc<dyn ObjectStore> {
        &self.objects
    }

    /// Stops the fetcher at once; fetches in progress are cut and stay queued on disk.
    pub fn abort(&self) {
        if let Some(t) = self.fetcher.lock().take() {
            t.abort();
        }
        let lane = self.lane.lock().take();
        drop(lane);
    }

    /// Stores an agent's upload of type `content_type` (`length` from `Content-Length`, when
    /// given) after checking Meta's limits: the type first, then the declared length, then
    /// every byte as it arrives.
    pub async fn upload<S, E>(
        &self,
        caller: &Caller,
        content_type: &str,
        filename: Option<String>,
        length: Option<u64>,
        body: S,
        now: Millis,
    ) -> Result<MediaRecord, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mime = limits::essence(content_type);
        let kind = kind_of(&mime).ok_or_else(|| {
            count_upload("unsupported");
            MediaError::Unsupported(format!("WhatsApp does not take media of type {mime:?}"))
        })?;
        let max = kind.max_bytes();
        let too_large = || {
            count_upload("too_large");
            MediaError::TooLarge(format!("{} media is limited to {max} bytes", kind.as_str()))
        };
        if length.is_some_and(|l| l > max) {
            return Err(too_large());
        }
        if let Some(f) = &filename {
            if f.is_empty() || f.len() > 255 || f.contains(['/', '\\', '\0']) {
                return Err(MediaError::Invalid(
                    "filename must be 1 to 255 bytes without / or \\".into(),
                ));
            }
        }
        let id = new_upload_id();
        let written = match store_stream(&*self.objects, &object_path(&id), body, max).await {
            Ok(w) => w,
            Err(StreamError::TooLarge) => return Err(too_large()),
            Err(StreamError::Source(e)) => {
                count_upload("error");
                return Err(MediaError::Body(e.to_string()));
            }
            Err(StreamError::Objects(e)) => {
                count_upload("error");
                tracing::error!(error = %e, "cannot store an upload");
                return Err(MediaError::Objects(e.to_string()));
            }
        };
        if written.size == 0 {
            let _ = self.objects.delete(&object_path(&id)).await;
            return Err(MediaError::Invalid("the body is empty".into()));
        }
        let record = MediaRecord {
            id,
            mime_type: mime,
            filename,
            origin: MediaOrigin::Upload {
                by: caller.id.clone(),
                at: now,
            },
            state: MediaState::Stored {
                size: written.size,
                sha256: hex::encode(written.sha256),
            },
        };
        let mut batch = crate::store::Batch::new();
        batch.put_media(&record)?;
        self.store.commit(batch).await?;
        count_upload("stored");
        Ok(record)
    }

    /// Media `id`'s record, when `caller` may see it (else not found).
    pub async fn visible(&self, caller: &Caller, id: &str) -> Result<MediaRecord, MediaError> {
        let record = self
            .store
            .get_media(id)
            .await?
            .ok_or(MediaError::NotFound)?;
        if caller.role == Role::Admin {
            return Ok(record);
        }
        if let MediaOrigin::Upload { by, .. } = &record.origin {
            if *by == caller.id {
                return Ok(record);
            }
        }
        for conv in self.store.media_shown_in(id).await? {
            if let Some(c) = self.store.get_conversation(&conv).await? {
                if c.visible_to(caller) {
                    return Ok(record);
                }
            }
        }
        Err(MediaError::NotFound)
    }

    /// Opens media `id` for `caller`, the whole of it or `range`.
    pub async fn open(
        &self,
        caller: &Caller,
        id: &str,
        range: Option<ByteRange>,
    ) -> Result<Opened, MediaError> {
        let record = self.visible(caller, id).await?;
        let MediaState::Stored { size, .. } = record.state else {
            return Err(MediaError::NotFound);
        };
        let range = match range {
            Some(r) => r.resolve(size).ok_or(MediaError::Range { size })?,
            None => 0..size,
        };
        let opts = GetOptions {
            // An empty file has no range to ask for (the store refuses a zero-length one).
            range: (!range.is_empty()).then(|| GetRange::Bounded(range.clone())),
            ..Default::default()
        };
        let got = self
            .objects
            .get_opts(&object_path(id), opts)
            .await
            .map_err(|e| {
                tracing::error!(media = %id, error = %e, "stored media cannot be read");
                MediaError::Objects(e.to_string())
            })?;
        Ok(Opened {
            mime_type: record.mime_type,
            filename: record.filename,
            size,
            range,
            body: got.into_stream(),
        })
    }
}

fn count_upload(outcome: &'static str) {
    metrics::counter!(crate::metrics::MEDIA_UPLOADS, "outcome" => outcome).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_resolve_against_the_size() {
        assert_eq!(ByteRange::From(0, Some(9)).resolve(100), Some(0..10));
        assert_eq!(ByteRange::From(90, None).resolve(100), Some(90..100));
        assert_eq!(ByteRange::From(90, Some(500)).resolve(100), Some(90..100));
        assert_eq!(ByteRange::Suffix(10).resolve(100), Some(90..100));
        assert_eq!(ByteRange::Suffix(500).resolve(100), Some(0..100));
        assert_eq!(ByteRange::From(100, None).resolve(100), None);
        assert_eq!(ByteRange::From(5, Some(4)).resolve(100), None);
        assert_eq!(ByteRange::Suffix(0).resolve(100), None);
    }

    #[tokio::test]
    async fn streams_are_hashed_and_bounded() {
        let objects = object_store::memory::InMemory::new();
        let chunks = vec![
            Ok::<_, String>(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ];
        let path = object_path("x");
        let w = store_stream(
            &objects,
            &path,
            futures_util::stream::iter(chunks.clone()),
            64,
        )
        .await
        .map_err(|_| "store")
        .expect("stored");
        assert_eq!(w.size, 11);
        assert_eq!(w.sha256, <[u8; 32]>::from(Sha256::digest(b"hello world")));
        let too_big = store_stream(
            &objects,
            &object_path("y"),
            futures_util::stream::iter(chunks),
            8,
        )
        .await;
        assert!(matches!(too_big, Err(StreamError::TooLarge)));
        assert!(
            objects.head(&object_path("y")).await.is_err(),
            "nothing left behind"
        );
    }
}
