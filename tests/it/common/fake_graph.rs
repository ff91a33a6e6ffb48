//! `FakeGraph`: a stand-in for Meta's Graph API on loopback that records every send and answers
//! from a script (success, rate limit, Meta errors, bare statuses, delays, hangs), and serves
//! media: `GET /{media-id}` (a URL on this server, with faults scripted per id: 404, a status,
//! a wrong sha256), that URL's bytes (bearer token required), and uploads
//! (`POST /{phone}/media`, multipart, recorded), and a WABA's templates
//! (`POST /{waba}/message_templates` creates one, `PENDING`; `GET` lists them, paged by one
//! `paging.next` link when there are more than two, so paging is exercised).

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
use axum::routing::{get, post};
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

/// A fault for the next `GET /{media-id}` of one media.
#[derive(Clone, Debug)]
pub enum MediaFault {
    /// 404 with Meta's error envelope (the id does not exist).
    NotFound,
    /// A bare HTTP status.
    Status(u16),
    /// The right URL, but a sha256 that does not match the bytes.
    WrongSha,
    /// Never answer.
    Hang,
}

struct StoredMedia {
    mime_type: String,
    bytes: Vec<u8>,
    faults: VecDeque<MediaFault>,
    locates: usize,
    downloads: usize,
}

/// An upload the broker made (`POST /{phone}/media`).
#[derive(Clone, Debug)]
pub struct MediaUpload {
    pub phone_number_id: String,
    pub auth: Option<String>,
    /// The form's `messaging_product` field.
    pub messaging_product: Option<String>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub bytes: Vec<u8>,
    /// The id this FakeGraph answered.
    pub id: String,
}

#[derive(Default)]
struct MediaState {
    media: std::collections::HashMap<String, StoredMedia>,
    uploads: Vec<MediaUpload>,
    /// Statuses for the next uploads, in order (then 200).
    upload_faults: VecDeque<u16>,
}

#[derive(Default)]
struct TemplateState {
    /// Every template of the account, as Meta lists them.
    templates: Vec<Value>,
    /// Every creation request, in order: (WABA id, body).
    posts: Vec<(String, Value)>,
    /// Listings served.
    lists: usize,
    next_id: u64,
}

struct GraphState {
    media: Mutex<MediaState>,
    templates: Mutex<TemplateState>,
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

fn bearer_ok(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {}", super::config::ACCESS_TOKEN))
}

fn meta_not_found() -> Response {
    let body = json!({"error": {"message": "Unsupported get request. Object does not exist", "type": "GraphMethodException", "code": 100, "fbtrace_id": "AbC"}});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

async fn media_locate(
    State(st): State<Arc<GraphState>>,
    AxPath(id): AxPath<String>,
    headers: HeaderMap,
) -> Response {
    if !bearer_ok(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let (fault, mime, bytes) = {
        let mut ms = st.media.lock().unwrap();
        let Some(m) = ms.media.get_mut(&id) else {
            return meta_not_found();
        };
        m.locates += 1;
        (m.faults.pop_front(), m.mime_type.clone(), m.bytes.clone())
    };
    use sha2::Digest;
    let mut sha = hex::encode(sha2::Sha256::digest(&bytes));
    match fault {
        Some(MediaFault::NotFound) => return meta_not_found(),
        Some(MediaFault::Status(code)) => {
            return (StatusCode::from_u16(code).unwrap(), "upstream trouble").into_response()
        }
        Some(MediaFault::WrongSha) => sha = hex::encode(sha2::Sha256::digest(b"other bytes")),
        Some(MediaFault::Hang) => std::future::pending::<()>().await,
        None => {}
    }
    let addr = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_owned();
    axum::Json(json!({
        "messaging_product": "whatsapp",
        "url": format!("http://{addr}/media-bytes/{id}"),
        "mime_type": mime,
        "sha256": sha,
        "file_size": bytes.len(),
        "id": id,
    }))
    .into_response()
}

async fn media_bytes(
    State(st): State<Arc<GraphState>>,
    AxPath(id): AxPath<String>,
    headers: HeaderMap,
) -> Response {
    if !bearer_ok(&headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let mut ms = st.media.lock().unwrap();
    let Some(m) = ms.media.get_mut(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    m.downloads += 1;
    ([("content-type", m.mime_type.clone())], m.bytes.clone()).into_response()
}

/// One part of a multipart/form-data body: (name, filename, content type, bytes).
type Part = (String, Option<String>, Option<String>, Vec<u8>);

/// A small multipart/form-data reader: enough for the broker's uploads.
fn multipart_parts(content_type: &str, body: &[u8]) -> Vec<Part> {
    let Some(boundary) = content_type.split("boundary=").nth(1) else {
        return Vec::new();
    };
    let delim = format!("--{}", boundary.trim_matches('"'));
    let d = delim.as_bytes();
    let find = |hay: &[u8], needle: &[u8], from: usize| {
        hay.get(from..)?
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut parts = Vec::new();
    let mut pos = match find(body, d, 0) {
        Some(p) => p + d.len(),
        None => return parts,
    };
    while body.get(pos..pos + 2) == Some(b"\r\n") {
        let start = pos + 2;
        let Some(head_end) = find(body, b"\r\n\r\n", start) else {
            break;
        };
        let head = String::from_utf8_lossy(&body[start..head_end]).into_owned();
        let data_start = head_end + 4;
        let Some(next) = find(body, d, data_start) else {
            break;
        };
        let data = body[data_start..next.saturating_sub(2)].to_vec();
        let attr = |k: &str| {
            head.split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .map(str::to_owned)
        };
        let ctype = head.lines().find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("content-type:")
                .then(|| l[13..].trim().to_owned())
        });
        parts.push((
            attr("name").unwrap_or_default(),
            attr("filename"),
            ctype,
            data,
        ));
        pos = next + d.len();
    }
    parts
}

async fn media_upload(
    State(st): State<Arc<GraphState>>,
    AxPath(phone): AxPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let parts = multipart_parts(&ct, &body);
    let mut ms = st.media.lock().unwrap();
    if let Some(code) = ms.upload_faults.pop_front() {
        return (StatusCode::from_u16(code).unwrap(), "upstream trouble").into_response();
    }
    let id = format!("meta-upload-{}", ms.uploads.len() + 1);
    let field = |name: &str| parts.iter().find(|p| p.0 == name);
    let file = field("file");
    ms.uploads.push(MediaUpload {
        phone_number_id: phone,
        auth: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        messaging_product: field("messaging_product")
            .map(|p| String::from_utf8_lossy(&p.3).into_owned()),
        content_type: file.and_then(|f| f.2.clone()),
        filename: file.and_then(|f| f.1.clone()),
        bytes: file.map(|f| f.3.clone()).unwrap_or_default(),
        id: id.clone(),
    });
    axum::Json(json!({ "id": id })).into_response()
}

async fn template_create(
    State(st): State<Arc<GraphState>>,
    AxPath(waba): AxPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !bearer_ok(&headers) {
        return (StatusCode::UNAUTHORIZED, "no token").into_response();
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut ts = st.templates.lock().unwrap();
    ts.posts.push((waba, body.clone()));
    ts.next_id += 1;
    let id = format!("{}", 9_000_000 + ts.next_id);
    let category = body["category"].clone();
    ts.templates.push(json!({
        "id": id,
        "name": body["name"],
        "language": body["language"],
        "category": category,
        "status": "PENDING",
        "components": body["components"],
    }));
    axum::Json(json!({ "id": id, "status": "PENDING", "category": category })).into_response()
}

/// Lists two templates per page; `after` is the index of the next one.
async fn template_list(
    State(st): State<Arc<GraphState>>,
    AxPath(waba): AxPath<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if !bearer_ok(&headers) {
        return (StatusCode::UNAUTHORIZED, "no token").into_response();
    }
    let after: usize = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("after="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut ts = st.templates.lock().unwrap();
    ts.lists += 1;
    let page: Vec<Value> = ts.templates.iter().skip(after).take(2).cloned().collect();
    let mut answer = json!({ "data": page });
    if after + 2 < ts.templates.len() {
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("127.0.0.1");
        answer["paging"] = json!({
            "next": format!("http://{host}/{GRAPH_VERSION}/{waba}/message_templates?after={}", after + 2)
        });
    }
    axum::Json(answer).into_response()
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
            media: Mutex::new(MediaState::default()),
            templates: Mutex::new(TemplateState::default()),
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
            .route(
                &format!("/{GRAPH_VERSION}/{{phone}}/media"),
                post(media_upload),
            )
            .route(
                &format!("/{GRAPH_VERSION}/{{phone}}/message_templates"),
                post(template_create).get(template_list),
            )
            .route(&format!("/{GRAPH_VERSION}/{{id}}"), get(media_locate))
            .route("/media-bytes/{id}", get(media_bytes))
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

    /// Serves media `id` (`GET /{id}` and its URL) with these bytes.
    pub fn add_media(&self, id: &str, mime_type: &str, bytes: Vec<u8>) {
        self.state.media.lock().unwrap().media.insert(
            id.to_owned(),
            StoredMedia {
                mime_type: mime_type.to_owned(),
                bytes,
                faults: VecDeque::new(),
                locates: 0,
                downloads: 0,
            },
        );
    }

    /// Faults for the next `GET /{id}` of media `id` (in order; then it is served).
    pub fn media_fault(&self, id: &str, fault: MediaFault) {
        if let Some(m) = self.state.media.lock().unwrap().media.get_mut(id) {
            m.faults.push_back(fault);
        }
    }

    /// How often media `id` was located (`GET /{id}`) and downloaded.
    pub fn media_requests(&self, id: &str) -> (usize, usize) {
        let ms = self.state.media.lock().unwrap();
        ms.media
            .get(id)
            .map_or((0, 0), |m| (m.locates, m.downloads))
    }

    /// Answers the next uploads with these statuses, in order.
    pub fn upload_fault(&self, status: u16) {
        self.state
            .media
            .lock()
            .unwrap()
            .upload_faults
            .push_back(status);
    }

    /// Adds a template as if created elsewhere (Meta's listing shape).
    pub fn add_template(&self, template: Value) {
        self.state
            .templates
            .lock()
            .unwrap()
            .templates
            .push(template);
    }

    /// Sets the status Meta lists for template `name` (every language).
    pub fn set_template_status(&self, name: &str, status: &str) {
        for t in &mut self.state.templates.lock().unwrap().templates {
            if t["name"] == json!(name) {
                t["status"] = json!(status);
            }
        }
    }

    /// Template creations received: (WABA id, body).
    pub fn template_posts(&self) -> Vec<(String, Value)> {
        self.state.templates.lock().unwrap().posts.clone()
    }

    /// How many template listings were served.
    pub fn template_lists(&self) -> usize {
        self.state.templates.lock().unwrap().lists
    }

    pub fn uploads(&self) -> Vec<MediaUpload> {
        self.state.media.lock().unwrap().uploads.clone()
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
