//! `GET /api/v1/events`: the caller's live change feed as Server-Sent Events.
//!
//! Each event is `event: <type>` plus `data: {"type", "conversation", "message"?}`, filtered by
//! what the caller may see (see `crate::events::Event::visible_to`) as it is at that event: an
//! admin's change to the agent's teams or role applies to the next event, and the stream ends
//! when the agent is disabled or its token rotated (`service::people::Live`). A subscriber that falls behind
//! the bounded feed gets one `lagged` event with the number of events it missed, and should re-read
//! the conversation list. The events queued for a stream are written as one chunk (the bus wakes
//! a stream at most once per `crate::events::FLUSH_TICK`, so a busy stream is one write per tick);
//! a keep-alive comment (`:`) goes out after 14–15 s without events. Open streams are bounded by `server.max_event_streams` in all and by
//! `server.max_streams_per_agent` per agent, so one agent's token cannot hold them all.
//!
//! `?types=conversation.*,message.status` (comma-separated types; `conversation.*` and
//! `message.*` cover a prefix) narrows the stream to those types — an agent console that only
//! needs queue changes skips every inbound message's event; filtered-out events are never
//! rendered for that subscriber. An unknown type is `400 invalid_request`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde_json::json;

use super::auth::Session;
use super::error::{ApiError, ApiResult};
use super::extract::ApiQuery;
use super::views::{ConversationView, MessageView};
use super::AppState;
use crate::error::Code;
use crate::events::{Batch, Event, KindSet};
use crate::metrics as m;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/events", get(stream))
}

struct StreamGuard {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _agent_permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        metrics::gauge!(m::EVENT_STREAMS).decrement(1.0);
    }
}

#[derive(serde::Deserialize)]
struct StreamParams {
    types: Option<String>,
}

async fn stream(
    State(s): State<AppState>,
    Session {
        caller,
        live,
        generation: opened,
    }: Session,
    ApiQuery(p): ApiQuery<StreamParams>,
) -> ApiResult<impl IntoResponse> {
    let types = match p.types.as_deref() {
        None => KindSet::ALL,
        Some(list) => KindSet::parse(list)
            .map_err(|bad| ApiError::invalid(format!("unknown event type: {bad}")))?,
    };
    let agent_permit = s.agent_stream_slot(&caller.id)?;
    let permit = s
        .stream_permits
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::overloaded(Code::Overloaded, "too many event streams"))?;
    metrics::gauge!(m::EVENT_STREAMS).increment(1.0);
    let guard = StreamGuard {
        _permit: permit,
        _agent_permit: agent_permit,
    };
    let sub = s.ctx.bus.subscribe(Arc::new(caller.clone()), types);
    // A change of the agent that raced the subscription (see `EventBus::refresh_agent`).
    let now = live.borrow().caller.clone();
    if now.as_deref() != Some(&caller) {
        s.ctx.bus.refresh_agent(&caller.id, now);
    }
    let mut watched = live.clone();
    let ended = async move {
        // Also when the roster is gone (shutdown).
        let _ = watched
            .wait_for(|l| l.caller.is_none() || l.generation != opened)
            .await;
    };
    // One keep-alive timer for the stream's life, moved on (at most once a second) rather than
    // set and cancelled around every batch: a busy stream is woken up to ~200 times a second.
    let silence = Box::pin(tokio::time::sleep(KEEP_ALIVE));
    let frames = futures_util::stream::unfold(
        (sub, guard, silence),
        |(sub, guard, mut silence)| async move {
            // Whatever is queued goes out as one chunk: the bus wakes a busy stream once per
            // tick; a lone event is its shared frame itself, not a copy.
            let chunk = tokio::select! {
                biased;
                batch = sub.next_batch() => {
                    let now = tokio::time::Instant::now();
                    if silence.deadline() + RESET_GRAIN < now + KEEP_ALIVE {
                        silence.as_mut().reset(now + KEEP_ALIVE);
                    }
                    batch_frames(batch)
                }
                () = silence.as_mut() => {
                    silence.as_mut().reset(tokio::time::Instant::now() + KEEP_ALIVE);
                    Bytes::from_static(b":\n\n")
                }
            };
            Some((Ok::<_, Infallible>(chunk), (sub, guard, silence)))
        },
    )
    .take_until(ended);
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(frames),
    ))
}

/// A comment line sent when nothing else was for this long, so proxies keep the stream open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// How stale the keep-alive deadline may get before a batch moves it: a keep-alive goes out
/// after 14–15 s without events.
const RESET_GRAIN: Duration = Duration::from_secs(1);

/// The SSE frames of a batch: `lagged` first when events were missed, then each event's frame
/// (rendered once per event, shared by every stream that sends it).
fn batch_frames(batch: Batch) -> Bytes {
    let lagged = (batch.missed > 0).then(|| {
        Bytes::from(format!(
            "event: lagged\ndata: {}\n\n",
            json!({ "type": "lagged", "missed": batch.missed })
        ))
    });
    let frames: Vec<Bytes> = lagged
        .into_iter()
        .chain(batch.events.iter().map(|ev| frame(ev)))
        .collect();
    if let [one] = frames.as_slice() {
        return one.clone();
    }
    let mut buf = BytesMut::with_capacity(frames.iter().map(Bytes::len).sum());
    for f in &frames {
        buf.extend_from_slice(f);
    }
    buf.freeze()
}

fn frame(ev: &Event) -> Bytes {
    ev.rendered
        .get_or_init(|| {
            let data = json!({
                "type": ev.kind.as_str(),
                "conversation": ConversationView::new(&ev.conversation, None),
                "message": ev.message.as_ref().map(MessageView::new),
                "sla": ev.sla.map(|k| k.as_str()),
            });
            Bytes::from(format!("event: {}\ndata: {data}\n\n", ev.kind.as_str()))
        })
        .clone()
}
