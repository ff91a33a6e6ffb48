//! Built-in fake WhatsApp Graph API (loopback only).
//!
//! Serves `POST /{phone_number_id}/messages` (and `/{version}/{phone_number_id}/messages`) with
//! `Authorization: Bearer <access_token>`. A `--throttle-ratio` share of well-formed sends is
//! answered HTTP 400 with Meta's 130429 error envelope; every other one is accepted with Meta's
//! success shape and a fresh `wamid.OUT{run_id}{n}`.
//!
//! Media: `GET /{media-id}` (or `/{version}/{media-id}`) of a load-test image (ids from
//! [`crate::webhook::MEDIA_ID_PREFIX`]) answers Meta's shape with a URL on this server,
//! `GET /media-bytes/{id}` serves [`crate::webhook::media_bytes`]; both require the bearer token
//! (`media_located`, `media_downloaded`, `media_unknown` counters).
//!
//! Meta's pair rate is checked per number and recipient as Meta describes it: a bucket of
//! [`PAIR_BURST`] messages refilled one per [`PAIR_INTERVAL`], with [`PAIR_SLACK`] of tolerance
//! for the time a request takes to get here after the broker decided to send it. A send beyond
//! it is answered 131056 ("pair rate limit hit"), as Meta does, and counted
//! (`pair_rate_violations`). `rates_per_number` gives each number's accepted sends per second.
//!
//! Invariants: every accepted send is recorded (phone number, recipient, body text,
//! `biz_opaque_callback_data`, wamid, arrival instant) *before* the answer is written, and is
//! announced exactly once on the status channel so status callbacks (sent/delivered/read) can be
//! generated for it. Rejected and throttled attempts are counted but never recorded as sends.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::stats::{lock, Counters};

/// Meta's pair rate: one message per 6 s to one user…
pub const PAIR_INTERVAL: Duration = Duration::from_secs(6);
/// …in bursts of up to 45.
pub const PAIR_BURST: f64 = 45.0;
/// How much earlier than its pair allows a send may arrive and still count as kept (request
/// latency between the broker and here varies by a few milliseconds).
pub const PAIR_SLACK: Duration = Duration::from_millis(250);

/// A send the fake Graph API accepted.
#[derive(Debug, Clone)]
pub struct SendRecord {
    pub phone_number_id: String,
    pub to: String,
    pub text: Option<String>,
    /// A template message (`"type": "template"`): a campaign's send.
    pub template: bool,
    pub biz_opaque: Option<String>,
    pub wamid: String,
    pub at: Instant,
}

/// Announced for every accepted send (drives status callbacks).
#[derive(Debug, Clone)]
pub struct SentNotice {
    pub phone_number_id: String,
    pub wamid: String,
    pub recipient: String,
}

/// Shared state of the fake Graph API.
pub struct GraphState {
    access_token: String,
    throttle_ratio: f64,
    run_id: String,
    next: AtomicU64,
    sends: Mutex<Vec<SendRecord>>,
    /// Each (number, recipient) pair's tokens and when they were counted.
    pairs: Mutex<HashMap<(String, String), (f64, Instant)>>,
    /// `requests`, `accepted`, `throttled`, `unauthorized`, `bad_request`.
    pub counters: Counters,
    notices: mpsc::UnboundedSender<SentNotice>,
}

impl GraphState {
    pub fn sends(&self) -> Vec<SendRecord> {
        lock(&self.sends).clone()
    }

    /// Accepted template sends, counted without copying the log: a campaign's drain polls it
    /// while the load runs.
    pub fn templates_accepted(&self) -> usize {
        lock(&self.sends).iter().filter(|r| r.template).count()
    }

    /// Each number's accepted sends per second, from its first to its last accepted send
    /// (numbers with fewer than two sends are left out).
    pub fn rates_per_number(&self) -> BTreeMap<String, f64> {
        let mut spans: BTreeMap<String, (Instant, Instant, u64)> = BTreeMap::new();
        for s in lock(&self.sends).iter() {
            let e = spans
                .entry(s.phone_number_id.clone())
                .or_insert((s.at, s.at, 0));
            e.0 = e.0.min(s.at);
            e.1 = e.1.max(s.at);
            e.2 += 1;
        }
        spans
            .into_iter()
            .filter_map(|(n, (first, last, count))| {
                let secs = last.duration_since(first).as_secs_f64();
                (count >= 2 && secs > 0.0).then(|| (n, (count - 1) as f64 / secs))
            })
            .collect()
    }

    /// Takes a token of the pair (`number`, `to`) at `at`; false when the send breaks Meta's
    /// pair rate.
    fn pair_ok(&self, number: &str, to: &str, at: Instant) -> bool {
        let mut pairs = lock(&self.pairs);
        let e = pairs
            .entry((number.to_string(), to.to_string()))
            .or_insert((PAIR_BURST, at));
        let gained = at.duration_since(e.1).as_secs_f64() / PAIR_INTERVAL.as_secs_f64();
        e.0 = (e.0 + gained).min(PAIR_BURST);
        e.1 = at;
        let slack = PAIR_SLACK.as_secs_f64() / PAIR_INTERVAL.as_secs_f64();
        if e.0 >= 1.0 - slack {
            e.0 -= 1.0;
            true
        } else {
            false
        }
    }

    /// Accepted sends carrying this `biz_opaque_callback_data`.
    pub fn count_for(&self, biz_opaque: &str) -> usize {
        lock(&self.sends)
            .iter()
            .filter(|s| s.biz_opaque.as_deref() == Some(biz_opaque))
            .count()
    }
}

/// A running fake Graph API server.
pub struct FakeGraph {
    pub addr: SocketAddr,
    pub state: Arc<GraphState>,
    task: JoinHandle<()>,
}

impl FakeGraph {
    /// Base URL to put in `graph_api_base`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts the server on `127.0.0.1:port` (0 = any free port).
    pub async fn start(
        port: u16,
        access_token: String,
        throttle_ratio: f64,
        run_id: String,
        notices: mpsc::UnboundedSender<SentNotice>,
    ) -> anyhow::Result<FakeGraph> {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .map_err(|e| anyhow::anyhow!("fake Graph API: cannot bind 127.0.0.1:{port}: {e}"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(GraphState {
            access_token,
            throttle_ratio,
            run_id,
            next: AtomicU64::new(1),
            sends: Mutex::new(Vec::new()),
            pairs: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            notices,
        });
        let app = Router::new()
            .route("/{pnid}/messages", post(send_v))
            .route("/{version}/{pnid}/messages", post(send_versioned))
            .route(
                "/{pnid}/message_templates",
                get(templates_list).post(templates_create),
            )
            .route("/{pnid}", get(media_locate))
            .route("/{pnid}/{id}", get(media_locate_versioned))
            .route("/media-bytes/{id}", get(media_download))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("fake Graph API stopped: {e}");
            }
        });
        Ok(FakeGraph { addr, state, task })
    }

    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn graph_error(status: StatusCode, code: u64, message: &str, details: &str) -> Response {
    let trace: String = (0..22)
        .map(|_| {
            let c = rand::thread_rng().gen_range(0..62u8);
            char::from(match c {
                0..=9 => b'0' + c,
                10..=35 => b'a' + c - 10,
                _ => b'A' + c - 36,
            })
        })
        .collect();
    let body = json!({"error": {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "error_data": {"messaging_product": "whatsapp", "details": details},
        "fbtrace_id": trace
    }});
    (status, Json(body)).into_response()
}

fn bearer_ok(st: &GraphState, headers: &HeaderMap) -> bool {
    let expected = format!("Bearer {}", st.access_token);
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected)
}

async fn media_locate_versioned(
    State(st): State<Arc<GraphState>>,
    Path((_version, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    locate(&st, &id, &headers)
}

async fn media_locate(
    State(st): State<Arc<GraphState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    locate(&st, &id, &headers)
}

/// Meta's answer to `GET /{media-id}`: where the bytes are, their type, size and hash (hex).
fn locate(st: &GraphState, id: &str, headers: &HeaderMap) -> Response {
    if !bearer_ok(st, headers) {
        st.counters.inc("unauthorized");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if !id.starts_with(crate::webhook::MEDIA_ID_PREFIX) {
        st.counters.inc("media_unknown");
        return graph_error(
            StatusCode::NOT_FOUND,
            100,
            "Unsupported get request. Object does not exist",
            "No such media.",
        );
    }
    st.counters.inc("media_located");
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    use sha2::Digest;
    let bytes = crate::webhook::media_bytes();
    Json(json!({
        "messaging_product": "whatsapp",
        "url": format!("http://{host}/media-bytes/{id}"),
        "mime_type": "image/jpeg",
        "sha256": hex::encode(sha2::Sha256::digest(bytes)),
        "file_size": bytes.len(),
        "id": id,
    }))
    .into_response()
}

async fn media_download(
    State(st): State<Arc<GraphState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !bearer_ok(&st, &headers) {
        st.counters.inc("unauthorized");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    if !id.starts_with(crate::webhook::MEDIA_ID_PREFIX) {
        st.counters.inc("media_unknown");
        return StatusCode::NOT_FOUND.into_response();
    }
    st.counters.inc("media_downloaded");
    (
        [(axum::http::header::CONTENT_TYPE, "image/jpeg")],
        Bytes::from_static(crate::webhook::media_bytes()),
    )
        .into_response()
}

async fn send_versioned(
    State(st): State<Arc<GraphState>>,
    Path((_version, pnid)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(st, pnid, headers, body)
}

async fn send_v(
    State(st): State<Arc<GraphState>>,
    Path(pnid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(st, pnid, headers, body)
}

/// The WABA's templates: one approved template for `--campaign`
/// ([`crate::campaign::TEMPLATE`]), so the broker's start-up sync registers it.
async fn templates_list(State(st): State<Arc<GraphState>>, headers: HeaderMap) -> Response {
    if !bearer_ok(&st, &headers) {
        st.counters.inc("unauthorized");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    Json(json!({"data": [{
        "id": "990001",
        "name": crate::campaign::TEMPLATE,
        "language": "en_US",
        "status": "APPROVED",
        "category": "UTILITY",
        "components": [{"type": "BODY", "text": "Hi {{1}}, your order is ready."}],
    }]}))
    .into_response()
}

/// A template creation: accepted, `PENDING`.
async fn templates_create(State(st): State<Arc<GraphState>>, headers: HeaderMap) -> Response {
    if !bearer_ok(&st, &headers) {
        st.counters.inc("unauthorized");
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let n = st.next.fetch_add(1, Ordering::Relaxed);
    Json(json!({"id": format!("99{n}"), "status": "PENDING", "category": "UTILITY"}))
        .into_response()
}

fn handle(st: Arc<GraphState>, pnid: String, headers: HeaderMap, body: Bytes) -> Response {
    let at = Instant::now();
    st.counters.inc("requests");
    let expected = format!("Bearer {}", st.access_token);
    let authorized = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == expected);
    if !authorized {
        st.counters.inc("unauthorized");
        return graph_error(
            StatusCode::UNAUTHORIZED,
            190,
            "Invalid OAuth access token - Cannot parse access token",
            "Invalid OAuth access token.",
        );
    }
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            st.counters.inc("bad_request");
            return graph_error(
                StatusCode::BAD_REQUEST,
                100,
                "(#100) Invalid parameter",
                "Request body is not JSON.",
            );
        }
    };
    // A customer without a known phone is addressed by its user id, in `recipient`.
    let to = v
        .get("to")
        .or_else(|| v.get("recipient"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if v.get("messaging_product").and_then(Value::as_str) != Some("whatsapp") || to.is_empty() {
        st.counters.inc("bad_request");
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "(#100) Invalid parameter",
            "messaging_product must be whatsapp and to (or recipient) is required.",
        );
    }
    if st.throttle_ratio > 0.0 && rand::thread_rng().gen_bool(st.throttle_ratio) {
        st.counters.inc("throttled");
        return graph_error(
            StatusCode::BAD_REQUEST,
            130429,
            "(#130429) Rate limit hit",
            "Cloud API message throughput has been reached.",
        );
    }
    if !st.pair_ok(&pnid, &to, at) {
        st.counters.inc("pair_rate_violations");
        return graph_error(
            StatusCode::BAD_REQUEST,
            131056,
            "(#131056) (Business Account, Consumer Account) pair rate limit hit",
            "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.",
        );
    }
    let n = st.next.fetch_add(1, Ordering::Relaxed);
    let wamid = format!("wamid.OUT{}{n}", st.run_id);
    let rec = SendRecord {
        phone_number_id: pnid.clone(),
        to: to.clone(),
        text: v
            .pointer("/text/body")
            .and_then(Value::as_str)
            .map(str::to_string),
        template: v.get("type").and_then(Value::as_str) == Some("template"),
        biz_opaque: v
            .get("biz_opaque_callback_data")
            .and_then(Value::as_str)
            .map(str::to_string),
        wamid: wamid.clone(),
        at,
    };
    lock(&st.sends).push(rec);
    st.counters.inc("accepted");
    let _ = st.notices.send(SentNotice {
        phone_number_id: pnid,
        wamid: wamid.clone(),
        recipient: to.clone(),
    });
    (
        StatusCode::OK,
        Json(json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": wamid}]
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn start(throttle: f64) -> (FakeGraph, mpsc::UnboundedReceiver<SentNotice>) {
        let (tx, rx) = mpsc::unbounded_channel();
        match FakeGraph::start(0, "tok".into(), throttle, "R1".into(), tx).await {
            Ok(g) => (g, rx),
            Err(e) => panic!("{e}"),
        }
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap_or_default()
    }

    #[tokio::test]
    async fn accepts_and_records() {
        let (g, mut rx) = start(0.0).await;
        let body = json!({"messaging_product":"whatsapp","to":"4915000001","type":"text",
            "text":{"body":"hi"},"biz_opaque_callback_data":"msg-1"});
        let r = client()
            .post(format!("{}/v25.0/106540352242921/messages", g.base_url()))
            .bearer_auth("tok")
            .json(&body)
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(v["contacts"][0]["wa_id"], "4915000001");
        let wamid = v["messages"][0]["id"].as_str().unwrap_or("").to_string();
        assert!(wamid.starts_with("wamid.OUTR1"));
        assert_eq!(g.state.count_for("msg-1"), 1);
        let n = rx.recv().await;
        assert_eq!(n.map(|n| n.wamid), Some(wamid));
        let sends = g.state.sends();
        assert_eq!(sends[0].text.as_deref(), Some("hi"));
        assert_eq!(sends[0].phone_number_id, "106540352242921");
    }

    #[tokio::test]
    async fn throttles_and_checks_token() {
        let (g, _rx) = start(1.0).await;
        let body =
            json!({"messaging_product":"whatsapp","to":"1","type":"text","text":{"body":"x"}});
        let url = format!("{}/1/messages", g.base_url());
        let r = client()
            .post(&url)
            .bearer_auth("tok")
            .json(&body)
            .send()
            .await;
        let r = match r {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(v["error"]["code"], 130429);
        let r = client()
            .post(&url)
            .bearer_auth("nope")
            .json(&body)
            .send()
            .await;
        assert_eq!(r.map(|r| r.status().as_u16()).unwrap_or(0), 401);
        assert_eq!(g.state.sends().len(), 0);
    }
}
