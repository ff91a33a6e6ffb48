//! A client for the agent event stream (`GET /api/v1/events`) that parses server-sent events.

use std::time::Instant;

use serde_json::{json, Value};

use super::api::{http_client, Api};
use super::util::WAIT;

#[derive(Clone, Debug)]
pub struct SseEvent {
    pub event: String,
    pub data: Value,
}

pub struct Sse {
    resp: reqwest::Response,
    buf: String,
    pub seen: Vec<SseEvent>,
}

impl Sse {
    /// Opens `GET /api/v1/events`; asserts 200 and `text/event-stream`.
    pub async fn connect(api: &Api, token: &str) -> Sse {
        Self::connect_to(api, token, "/api/v1/events").await
    }

    /// Opens the event stream at `path` (e.g. with a `types` filter).
    pub async fn connect_to(api: &Api, token: &str, path: &str) -> Sse {
        let client = http_client(None);
        let resp = client
            .get(api.url(path))
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("GET /api/v1/events");
        assert_eq!(resp.status().as_u16(), 200, "events stream status");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(
            ct.starts_with("text/event-stream"),
            "content-type was {ct:?}"
        );
        Sse {
            resp,
            buf: String::new(),
            seen: Vec::new(),
        }
    }

    fn take_event(&mut self) -> Option<Option<SseEvent>> {
        let norm = self.buf.replace("\r\n", "\n");
        self.buf = norm;
        let idx = self.buf.find("\n\n")?;
        let block: String = self.buf[..idx].to_owned();
        self.buf.drain(..idx + 2);
        let mut event = String::from("message");
        let mut data = Vec::new();
        for line in block.lines() {
            if line.starts_with(':') {
                continue;
            }
            let (k, v) = match line.split_once(':') {
                Some((k, v)) => (k, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match k {
                "event" => event = v.to_owned(),
                "data" => data.push(v.to_owned()),
                _ => {}
            }
        }
        if data.is_empty() {
            return Some(None); // comment / keep-alive
        }
        let joined = data.join("\n");
        let data = serde_json::from_str(&joined).unwrap_or(Value::String(joined));
        Some(Some(SseEvent { event, data }))
    }

    /// Next event before `deadline`, or None.
    pub async fn next_before(&mut self, deadline: Instant) -> Option<SseEvent> {
        loop {
            while let Some(ev) = self.take_event() {
                if let Some(ev) = ev {
                    self.seen.push(ev.clone());
                    return Some(ev);
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match tokio::time::timeout(left, self.resp.chunk()).await {
                Err(_) => return None,
                Ok(Ok(Some(bytes))) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(Ok(None)) | Ok(Err(_)) => return None,
            }
        }
    }

    /// Waits for the first event matching `pred`; panics (listing what was seen) on timeout.
    pub async fn wait_for(&mut self, what: &str, pred: impl Fn(&SseEvent) -> bool) -> SseEvent {
        let deadline = Instant::now() + WAIT;
        while let Some(ev) = self.next_before(deadline).await {
            if pred(&ev) {
                return ev;
            }
        }
        panic!(
            "no SSE event {what} within {WAIT:?}; seen: {:#?}",
            self.seen
                .iter()
                .map(|e| (&e.event, &e.data))
                .collect::<Vec<_>>()
        );
    }

    /// Waits for event `ty` about conversation `conv`.
    pub async fn wait_type(&mut self, ty: &str, conv: &str) -> SseEvent {
        let (t, c) = (ty.to_owned(), conv.to_owned());
        self.wait_for(&format!("{ty} for {conv}"), move |e| {
            e.event == t && e.data["conversation"]["id"] == json!(c)
        })
        .await
    }
}
