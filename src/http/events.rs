//! `GET /api/v1/events`: the caller's live change feed as Server-Sent Events.
//!
//! Each event is `event: <type>` plus `data: {"type", "conversation", "message"?}`, filtered by
//! what the caller may see (see `crate::events::Event::visible_to`) as it is at that event: an
//! admin's change to the agent's teams or role applies to the next event, and the stream ends
//! when the agent is disabled or its token rotated (`service::people::Live`). A subscriber that falls behind
//! the bounded feed gets one `lagged` event with the number of events it missed, and should re-read
//! the conversation list. Open streams are bounded by `server.max_event_streams` in all and by
//! `server.max_streams_per_agent` per agent, so one agent's token cannot hold them all.
//!
//! `?types=conversation.*,message.status` (comma-separated types; `conversation.*` and
//! `message.*` cover a prefix) narrows the stream to those types — an agent console that only
//! needs queue changes skips every inbound message's event; filtered-out events are never
//! rendered for that subscriber. An unknown type is `400 invalid_request`.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use serde_json::json;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use super::auth::Session;
use super::error::{ApiError, ApiResult};
use super::extract::ApiQuery;
use super::views::{ConversationView, MessageView};
use super::AppState;
use crate::error::Code;
use crate::events::KindSet;
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
    let rx = s.ctx.bus.subscribe();
    let mut watched = live.clone();
    let ended = async move {
        // Also when the roster is gone (shutdown).
        let _ = watched
            .wait_for(|l| l.caller.is_none() || l.generation != opened)
            .await;
    };
    let events = BroadcastStream::new(rx)
        .take_until(ended)
        .filter_map(move |item| {
            let _alive = &guard;
            // The caller as it is now (teams and role may have changed since the stream opened).
            let Some(caller) = live.borrow().caller.clone() else {
                return std::future::ready(None);
            };
            let out = match item {
                Ok(ev) if types.contains(ev.kind) && ev.visible_to(&caller) => {
                    let data = ev.rendered.get_or_init(|| {
                        json!({
                            "type": ev.kind.as_str(),
                            "conversation": ConversationView::new(&ev.conversation, None),
                            "message": ev.message.as_ref().map(MessageView::new),
                            "sla": ev.sla.map(|k| k.as_str()),
                        })
                        .to_string()
                    });
                    Some(Ok::<_, Infallible>(
                        SseEvent::default()
                            .event(ev.kind.as_str())
                            .data(data.as_str()),
                    ))
                }
                Ok(_) => None,
                Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(SseEvent::default()
                    .event("lagged")
                    .data(json!({ "type": "lagged", "missed": n }).to_string()))),
            };
            std::future::ready(out)
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
