//! `FakeGraph`: a stand-in for Meta's Graph API on loopback that records every send and answers
//! from a script (success, rate limit, Meta errors, bare statuses, delays, hangs).

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as AxPath, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::config::GRAPH_VERSION;
use super::util::{eventually, WAIT};

#[derive(Clone, Debug)]
pub enum GraphReply {
    /// 200 with Meta's success body, wamid `<prefix><n>`.
    Ok,
    /// HTTP 400 with the 130429 throughput envelope (fixture graph_error_rate_limit.json).
    RateLimit,
    /// HTTP `http` with a Meta error envelope with `code`, `message` and `details`.
    MetaError {
        http: u16,
        code: i64,
        message: String,
        details: String,
    },
    /// A bare HTTP status (e.g. 500) with a small non-Meta body.
    Status(u16),
    /// Wait `ms`, then answer like the inner reply.
    Delay(u64, Box<GraphReply>),
    /// Never answer.
    Hang,
}

impl GraphReply {
    pub fn meta(http: u16, code: i64, message: &str, details: &str) -> GraphReply {
        GraphReply::MetaError {
            http,
            code,
            message: message.to_owned(),
            details: details.to_owned(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GraphRequest {
    pub path: String,
    pub phone_number_id: String,
    pub auth: Option<String>,
    pub body: Value,
    /// When the FakeGraph received it.
    pub at: Instant,
}

struct GraphState {
    sends: Mutex<Vec<GraphRequest>>,
    script: Mutex<VecDeque<GraphReply>>,
    default: Mutex<GraphReply>,
    unexpected: Mutex<Vec<String>>,
    ok_counter: AtomicUsize,
    prefix: String,
    tx: watch::Sender<usize>,
}

pub struct FakeGraph {
    /// Value for `whatsapp.graph_api_base`.
    pub base: String,
    pub addr: SocketAddr,
    state: Arc<GraphState>,
    task: tokio::task::JoinHandle<()>,
}

pub const RATE_LIMIT_BODY: &str = r#"{"error":{"message":"(#130429) Rate limit hit","type":"OAuthException","code":130429,"error_data":{"messaging_product":"whatsapp","details":"Cloud API message throughput has been reached."},"fbtrace_id":"Az8or2yhqkZfEZ-_4Qn_Bam"}}"#;

async fn graph_send(
    State(st): State<Arc<GraphState>>,
    AxPath(phone): AxPath<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body_json: Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let to = body_json["to"].as_str().unwrap_or("").to_owned();
    st.sends.lock().unwrap().push(GraphRequest {
        path: uri.path().to_owned(),
        phone_number_id: phone,
        auth,
        body: body_json,
        at: Instant::now(),
    });
    st.tx.send_modify(|c| *c += 1);
    let reply = {
        let mut script = st.script.lock().unwrap();
        script
            .pop_front()
            .unwrap_or_else(|| st.default.lock().unwrap().clone())
    };
    answer(&st, reply, &to).await
}

fn answer<'a>(
    st: &'a GraphState,
    reply: GraphReply,
    to: &'a str,
) -> std::pin::Pin<Box<dyn Future<Output = Response> + Send + 'a>> {
    Box::pin(async move {
        match reply {
            GraphReply::Ok => {
                let n = st.ok_counter.fetch_add(1, Ordering::SeqCst) + 1;
                let body = json!({
                    "messaging_product": "whatsapp",
                    "contacts": [{"input": to, "wa_id": to}],
                    "messages": [{"id": format!("{}{}", st.prefix, n)}]
                });
                (StatusCode::OK, axum::Json(body)).into_response()
            }
            GraphReply::RateLimit => (
                StatusCode::BAD_REQUEST,
                [("content-type", "application/json")],
                RATE_LIMIT_BODY,
            )
                .into_response(),
            GraphReply::MetaError {
                http,
                code,
                message,
                details,
            } => {
                let body = json!({"error": {
                    "message": message,
                    "type": "OAuthException",
                    "code": code,
                    "error_data": {"messaging_product": "whatsapp", "details": details},
                    "fbtrace_id": "AbCdEfGhIjK"
                }});
                (StatusCode::from_u16(http).unwrap(), axum::Json(body)).into_response()
            }
            GraphReply::Status(code) => (
                StatusCode::from_u16(code).unwrap(),
                [("content-type", "text/plain")],
                "upstream trouble",
            )
                .into_response(),
            GraphReply::Delay(ms, inner) => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                answer(st, *inner, to).await
            }
            GraphReply::Hang => {
                std::future::pending::<()>().await;
                unreachable!()
            }
        }
    })
}

async fn graph_fallback(
    State(st): State<Arc<GraphState>>,
    method: axum::http::Method,
    uri: Uri,
) -> Response {
    st.unexpected
        .lock()
        .unwrap()
        .push(format!("{method} {uri}"));
    (StatusCode::NOT_FOUND, "no such route in FakeGraph").into_response()
}

impl FakeGraph {
    pub async fn start() -> FakeGraph {
        FakeGraph::start_with_prefix("wamid.OUT").await
    }

    pub async fn start_with_prefix(prefix: &str) -> FakeGraph {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        FakeGraph::start_on_listener(listener, prefix)
    }

    /// Starts on a given address (e.g. one a previous FakeGraph used), retrying the bind.
    pub async fn start_on(addr: SocketAddr, prefix: &str) -> FakeGraph {
        let listener = eventually(&format!("bind {addr}"), WAIT, move || async move {
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        FakeGraph::start_on_listener(listener, prefix)
    }

    fn start_on_listener(listener: tokio::net::TcpListener, prefix: &str) -> FakeGraph {
        let (tx, _rx) = watch::channel(0usize);
        let state = Arc::new(GraphState {
            sends: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(GraphReply::Ok),
            unexpected: Mutex::new(Vec::new()),
            ok_counter: AtomicUsize::new(0),
            prefix: prefix.to_owned(),
            tx,
        });
        let app = Router::new()
            .route(
                &format!("/{GRAPH_VERSION}/{{phone}}/messages"),
                post(graph_send),
            )
            .fallback(graph_fallback)
            .with_state(state.clone());
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGraph {
            base: format!("http://{addr}/{GRAPH_VERSION}"),
            addr,
            state,
            task,
        }
    }

    /// Queue replies for the next requests (FIFO); after the queue the default applies.
    pub fn push(&self, reply: GraphReply) {
        self.state.script.lock().unwrap().push_back(reply);
    }

    pub fn set_default(&self, reply: GraphReply) {
        *self.state.default.lock().unwrap() = reply;
    }

    pub fn sends(&self) -> Vec<GraphRequest> {
        self.state.sends.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.sends.lock().unwrap().len()
    }

    pub fn unexpected(&self) -> Vec<String> {
        self.state.unexpected.lock().unwrap().clone()
    }

    /// Sends whose `biz_opaque_callback_data` (or, failing that, text) identifies `msg_id`.
    pub fn sends_for(&self, msg_id: &str) -> Vec<GraphRequest> {
        self.sends()
            .into_iter()
            .filter(|s| s.body["biz_opaque_callback_data"] == json!(msg_id))
            .collect()
    }

    /// Waits until at least `n` send requests have been recorded; returns all recorded.
    pub async fn wait_sends(&self, n: usize, timeout: Duration) -> Vec<GraphRequest> {
        let mut rx = self.state.tx.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await;
        if res.is_err() {
            panic!(
                "FakeGraph: expected >= {n} sends within {timeout:?}, got {}: {:?}; unexpected requests: {:?}",
                self.count(),
                self.sends(),
                self.unexpected()
            );
        }
        self.sends()
    }
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.task.abort();
    }
}
