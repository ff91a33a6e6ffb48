//! Shared harness for Switchboard's black-box integration tests.
//!
//! Everything talks to 127.0.0.1 only: the broker under test (library or binary) and a
//! `FakeGraph` that stands in for Meta's Graph API.
#![allow(dead_code)]

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as AxPath, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::watch;

use switchboard::app::Broker;
use switchboard::config::Config;

// ---------------------------------------------------------------------------------------------
// Constants of the standard test configuration
// ---------------------------------------------------------------------------------------------

pub const APP_SECRET: &str = "test-secret";
pub const VERIFY_TOKEN: &str = "test-verify";
pub const ACCESS_TOKEN: &str = "test-access";
pub const WABA_ID: &str = "102290129340398";

/// Number 1: default team "support", no explicit mps (default 80).
pub const N1: &str = "106540352242922";
pub const N1_DISPLAY: &str = "15550783881";
/// Number 2: default team "sales", mps 80.
pub const N2: &str = "206540352242933";
pub const N2_DISPLAY: &str = "15550783882";

pub const ALICE: &str = "t-alice"; // agent, support, max_concurrent 2
pub const BOB: &str = "t-bob"; // agent, support, max 5
pub const CAROL: &str = "t-carol"; // supervisor, support
pub const DAVE: &str = "t-dave"; // agent, sales
pub const ROOT: &str = "t-root"; // admin, support + sales

/// Prefix of the graph API path (graph_api_base = http://127.0.0.1:PORT/v25.0).
pub const GRAPH_VERSION: &str = "v25.0";

pub const SECS_PER_DAY: i64 = 86_400;

pub fn display_of(number: &str) -> &'static str {
    match number {
        N1 => N1_DISPLAY,
        N2 => N2_DISPLAY,
        _ => "15550000000",
    }
}

// ---------------------------------------------------------------------------------------------
// Small utilities
// ---------------------------------------------------------------------------------------------

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

static SEQ: AtomicU64 = AtomicU64::new(1);

/// A fresh, process-unique inbound wamid.
pub fn wamid() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("wamid.IN{}x{:06}", std::process::id(), n)
}

/// A fresh, process-unique string (customers, idempotency keys, ...).
pub fn uniq(prefix: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}{:04}", std::process::id() % 1000, n)
}

/// Opens a conversation, claims it as bob and sends one reply; returns (conv, customer,
/// message id, outbound wamid) once it is accepted.
pub async fn accepted_reply(tb: &TB) -> (String, String, String, String) {
    let cust = customer();
    let conv = tb.open_conv(N1, &cust, "need help").await;
    tb.must_claim(BOB, &conv).await;
    let m = tb.must_reply(BOB, &conv, "how can I help?").await;
    let id = m["id"].as_str().unwrap().to_owned();
    let m = tb.wait_status(&conv, &id, "accepted").await;
    let w = m["wamid"]
        .as_str()
        .expect("accepted message has a wamid")
        .to_owned();
    (conv, cust, id, w)
}

/// A new customer's conversation on `number`, claimed by `token`'s agent: (id, customer).
pub async fn claimed(tb: &TB, number: &str, token: &str) -> (String, String) {
    let cust = customer();
    let id = tb.open_conv(number, &cust, "hello").await;
    tb.must_claim(token, &id).await;
    (id, cust)
}

/// A fresh customer wa_id (digits only, like a phone number).
pub fn customer() -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("4915{:03}{:05}", std::process::id() % 1000, n % 100_000)
}

/// `sha256=<lowercase hex HMAC-SHA256(app_secret, body)>`
pub fn sign(body: &[u8]) -> String {
    sign_with(APP_SECRET, body)
}

pub fn sign_with(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn err_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no error.code>")
}

/// Retries `f` every ~20 ms until it returns Ok or `timeout` passes (then panics with the
/// last error).
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting for {what}; last: {e}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub const WAIT: Duration = Duration::from_secs(10);

/// Holds a broker's only admission slot with a request to `addr` whose head (and part of its
/// body) is `head` and whose body never finishes arriving, until `probe` is refused (answers
/// `Some`). If the held request arrived while a probe was in flight, it was the one refused (it
/// has an answer): it is sent again on a new connection. Returns the held connection and what
/// the refused probe saw.
pub async fn hold_until_refused<T, F, Fut>(
    addr: &str,
    head: &[u8],
    mut probe: F,
) -> (tokio::net::TcpStream, T)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    use tokio::io::AsyncWriteExt;
    let deadline = tokio::time::Instant::now() + WAIT;
    'hold: loop {
        let mut held = tokio::net::TcpStream::connect(addr).await.unwrap();
        held.write_all(head).await.unwrap();
        held.flush().await.unwrap();
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no request was refused"
            );
            if let Some(refused) = probe().await {
                return (held, refused);
            }
            let mut answer = [0u8; 1];
            if held.try_read(&mut answer).is_ok() {
                continue 'hold; // the held request got an answer: it was the refused one
            }
            tokio::task::yield_now().await;
        }
    }
}

pub fn parse_time(s: &Value) -> chrono::DateTime<chrono::FixedOffset> {
    let s = s
        .as_str()
        .unwrap_or_else(|| panic!("expected an RFC 3339 string, got {s}"));
    chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("not RFC 3339: {s:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Webhook payload builders (Meta's Cloud API notification format)
// ---------------------------------------------------------------------------------------------

pub fn text_msg(wamid: &str, from: &str, ts: i64, text: &str) -> Value {
    json!({
        "from": from,
        "id": wamid,
        "timestamp": ts.to_string(),
        "type": "text",
        "text": {"body": text}
    })
}

pub fn status_obj(wamid: &str, status: &str, ts: i64, recipient: &str) -> Value {
    json!({
        "id": wamid,
        "status": status,
        "timestamp": ts.to_string(),
        "recipient_id": recipient
    })
}

/// One `changes[]` element for `number` with the given messages (contacts are derived from
/// the messages' `from`) and statuses.
pub fn change(number: &str, messages: Vec<Value>, statuses: Vec<Value>) -> Value {
    let mut value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": display_of(number), "phone_number_id": number}
    });
    if !messages.is_empty() {
        let froms: BTreeSet<String> = messages
            .iter()
            .filter_map(|m| m["from"].as_str().map(str::to_owned))
            .collect();
        let contacts: Vec<Value> = froms
            .iter()
            .map(|f| json!({"profile": {"name": format!("Customer {f}")}, "wa_id": f}))
            .collect();
        value["contacts"] = Value::Array(contacts);
        value["messages"] = Value::Array(messages);
    }
    if !statuses.is_empty() {
        value["statuses"] = Value::Array(statuses);
    }
    json!({"value": value, "field": "messages"})
}

pub fn entry(changes: Vec<Value>) -> Value {
    json!({"id": WABA_ID, "changes": changes})
}

pub fn envelope(entries: Vec<Value>) -> Value {
    json!({"object": "whatsapp_business_account", "entry": entries})
}

pub fn text_webhook(number: &str, from: &str, wamid: &str, ts: i64, text: &str) -> Value {
    envelope(vec![entry(vec![change(
        number,
        vec![text_msg(wamid, from, ts, text)],
        vec![],
    )])])
}

pub fn status_webhook(number: &str, statuses: Vec<Value>) -> Value {
    envelope(vec![entry(vec![change(number, vec![], statuses)])])
}

// ---------------------------------------------------------------------------------------------
// Configuration builder
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct Cfg {
    pub listen: String,
    /// Extra lines inside `[server]` (e.g. `max_inflight_webhooks = 1`).
    pub server_extra: String,
    pub storage_path: PathBuf,
    pub sync: bool,
    /// Extra lines inside `[storage]` (e.g. `stall_after_ms = 100`).
    pub storage_extra: String,
    pub graph_base: String,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    pub max_attempts: u64,
    /// Extra lines inside `[outbox]` (e.g. `queue_capacity = 1`).
    pub outbox_extra: String,
    pub idle_timeout_ms: u64,
    /// Appended verbatim at the end (e.g. more `[[agents]]`).
    pub extra: String,
    /// Extra keys inside the `support` / `sales` `[[teams]]` tables (hours, sla, …).
    pub support_extra: String,
    pub sales_extra: String,
}

fn toml_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl Cfg {
    pub fn new(storage_path: &Path, graph_base: &str) -> Cfg {
        Cfg {
            listen: "127.0.0.1:0".into(),
            server_extra: String::new(),
            storage_path: storage_path.to_path_buf(),
            sync: true,
            storage_extra: String::new(),
            graph_base: graph_base.into(),
            retry_base_ms: 10,
            retry_max_ms: 100,
            max_attempts: 5,
            outbox_extra: String::new(),
            idle_timeout_ms: 60_000,
            extra: String::new(),
            support_extra: String::new(),
            sales_extra: String::new(),
        }
    }

    pub fn toml(&self) -> String {
        format!(
            r#"[server]
listen = {listen}
{server_extra}

[storage]
path = {path}
sync = {sync}
{storage_extra}

[whatsapp]
app_secret = "{APP_SECRET}"
verify_token = "{VERIFY_TOKEN}"
access_token = "{ACCESS_TOKEN}"
waba_id = "{WABA_ID}"
graph_api_base = {graph}

[outbox]
retry_base_ms = {rb}
retry_max_ms = {rm}
max_attempts = {ma}
{outbox_extra}

[conversations]
idle_timeout_ms = {idle}

[[numbers]]
phone_number_id = "{N1}"
display_phone_number = "{N1_DISPLAY}"
default_team = "support"

[[numbers]]
phone_number_id = "{N2}"
display_phone_number = "{N2_DISPLAY}"
default_team = "sales"
mps = 80

[[teams]]
id = "support"
name = "Support"
{support_extra}

[[teams]]
id = "sales"
name = "Sales"
{sales_extra}

[[agents]]
id = "alice"
name = "Alice"
token = "t-alice"
teams = ["support"]
role = "agent"
max_concurrent = 2

[[agents]]
id = "bob"
name = "Bob"
token = "t-bob"
teams = ["support"]
role = "agent"
max_concurrent = 5

[[agents]]
id = "carol"
name = "Carol"
token = "t-carol"
teams = ["support"]
role = "supervisor"
max_concurrent = 5

[[agents]]
id = "dave"
name = "Dave"
token = "t-dave"
teams = ["sales"]
role = "agent"
max_concurrent = 5

[[agents]]
id = "root"
name = "Root"
token = "t-root"
teams = ["support", "sales"]
role = "admin"
max_concurrent = 5
{extra}
"#,
            listen = toml_str(&self.listen),
            server_extra = self.server_extra,
            path = toml_str(&self.storage_path.to_string_lossy()),
            sync = self.sync,
            storage_extra = self.storage_extra,
            graph = toml_str(&self.graph_base),
            rb = self.retry_base_ms,
            rm = self.retry_max_ms,
            ma = self.max_attempts,
            outbox_extra = self.outbox_extra,
            idle = self.idle_timeout_ms,
            extra = self.extra,
            support_extra = self.support_extra,
            sales_extra = self.sales_extra,
        )
    }
}

/// TOML for `n` extra support agents `racer0..racer{n-1}` with tokens `t-racer{i}`.
pub fn racer_agents(n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "\n[[agents]]\nid = \"racer{i}\"\nname = \"Racer {i}\"\ntoken = \"t-racer{i}\"\nteams = [\"support\"]\nrole = \"agent\"\nmax_concurrent = 5\n"
        ));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// HTTP client for the broker
// ---------------------------------------------------------------------------------------------

pub fn http_client(timeout: Option<Duration>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5));
    if let Some(t) = timeout {
        b = b.timeout(t);
    }
    b.build().unwrap()
}

fn parse_body(text: &str) -> Value {
    if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
    }
}

#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(addr: SocketAddr) -> Api {
        Api::from_base(format!("http://{addr}"))
    }

    pub fn from_base(base: String) -> Api {
        Api {
            base,
            http: http_client(Some(Duration::from_secs(30))),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        token: Option<&str>,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut rb = self.http.request(method, self.url(path));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        if let Some(b) = body {
            rb = rb.json(b);
        }
        let resp = rb
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {path} failed: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap_or_default();
        (status, parse_body(&text), headers)
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let (s, v, _) = self
            .request(reqwest::Method::GET, Some(token), path, None)
            .await;
        (s, v)
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let (s, v, _) = self
            .request(reqwest::Method::POST, Some(token), path, Some(&body))
            .await;
        (s, v)
    }

    pub async fn put(&self, token: &str, path: &str, body: Value) -> (u16, Value) {
        let (s, v, _) = self
            .request(reqwest::Method::PUT, Some(token), path, Some(&body))
            .await;
        (s, v)
    }

    /// POST raw bytes to the webhook with an optional signature header.
    pub async fn webhook_raw(&self, body: Vec<u8>, signature: Option<&str>) -> (u16, Value) {
        let mut rb = self
            .http
            .post(self.url("/webhooks/whatsapp"))
            .header("content-type", "application/json");
        if let Some(sig) = signature {
            rb = rb.header("X-Hub-Signature-256", sig);
        }
        let resp = rb.body(body).send().await.expect("webhook request failed");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, parse_body(&text))
    }

    /// POST raw bytes, correctly signed.
    pub async fn webhook_bytes(&self, body: Vec<u8>) -> (u16, Value) {
        let sig = sign(&body);
        self.webhook_raw(body, Some(&sig)).await
    }

    /// POST raw bytes, correctly signed; None when the request failed (e.g. server killed).
    pub async fn webhook_bytes_opt(&self, body: Vec<u8>) -> Option<u16> {
        let sig = sign(&body);
        let resp = self
            .http
            .post(self.url("/webhooks/whatsapp"))
            .header("content-type", "application/json")
            .header("X-Hub-Signature-256", sig)
            .body(body)
            .send()
            .await
            .ok()?;
        let status = resp.status().as_u16();
        // the status only counts if the whole response arrived
        resp.bytes().await.ok()?;
        Some(status)
    }

    /// POST a JSON payload, correctly signed; returns the HTTP status.
    pub async fn webhook(&self, body: &Value) -> u16 {
        self.webhook_bytes(serde_json::to_vec(body).unwrap())
            .await
            .0
    }

    /// Posts one inbound text (timestamp `ts`), asserts 200, returns its wamid.
    pub async fn send_text_at(&self, number: &str, from: &str, ts: i64, text: &str) -> String {
        let w = wamid();
        let status = self
            .webhook(&text_webhook(number, from, &w, ts, text))
            .await;
        assert_eq!(status, 200, "webhook for {from} on {number} not accepted");
        w
    }

    pub async fn send_text(&self, number: &str, from: &str, text: &str) -> String {
        self.send_text_at(number, from, now(), text).await
    }

    /// Conversations visible to `token` matching `query` (e.g. "status=queued&team=sales").
    pub async fn list(&self, token: &str, query: &str) -> Vec<Value> {
        let path = if query.is_empty() {
            "/api/v1/conversations".to_string()
        } else {
            format!("/api/v1/conversations?{query}")
        };
        let (s, v) = self.get(token, &path).await;
        assert_eq!(s, 200, "GET {path}: {v}");
        v["conversations"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: no conversations array: {v}"))
            .clone()
    }

    /// The (single) conversation for (number, customer), as the admin sees it.
    pub async fn conv_of(&self, number: &str, customer: &str) -> Option<Value> {
        let convs = self
            .list(ROOT, &format!("customer={customer}&number={number}"))
            .await;
        assert!(
            convs.len() <= 1,
            "more than one conversation for ({number}, {customer}): {convs:?}"
        );
        convs.into_iter().next()
    }

    pub async fn conv_id(&self, number: &str, customer: &str) -> String {
        let c = self
            .conv_of(number, customer)
            .await
            .unwrap_or_else(|| panic!("no conversation for ({number}, {customer})"));
        c["id"]
            .as_str()
            .expect("conversation id is a string")
            .to_owned()
    }

    /// Posts an inbound text and returns the id of the conversation it landed in.
    pub async fn open_conv(&self, number: &str, customer: &str, text: &str) -> String {
        self.send_text(number, customer, text).await;
        self.conv_id(number, customer).await
    }

    /// GET /conversations/{id} as admin; asserts 200.
    pub async fn conversation(&self, id: &str) -> Value {
        let (s, v) = self.get(ROOT, &format!("/api/v1/conversations/{id}")).await;
        assert_eq!(s, 200, "GET conversation {id}: {v}");
        v
    }

    pub async fn messages(&self, id: &str) -> Vec<Value> {
        let c = self.conversation(id).await;
        c["messages"]
            .as_array()
            .unwrap_or_else(|| panic!("conversation {id} has no messages array: {c}"))
            .clone()
    }

    pub async fn claim(&self, token: &str, id: &str) -> (u16, Value) {
        self.post(
            token,
            &format!("/api/v1/conversations/{id}/claim"),
            json!({}),
        )
        .await
    }

    pub async fn release(&self, token: &str, id: &str) -> (u16, Value) {
        self.post(
            token,
            &format!("/api/v1/conversations/{id}/release"),
            json!({}),
        )
        .await
    }

    pub async fn resolve(&self, token: &str, id: &str) -> (u16, Value) {
        self.post(
            token,
            &format!("/api/v1/conversations/{id}/resolve"),
            json!({}),
        )
        .await
    }

    pub async fn transfer(&self, token: &str, id: &str, body: Value) -> (u16, Value) {
        self.post(token, &format!("/api/v1/conversations/{id}/transfer"), body)
            .await
    }

    pub async fn reply(&self, token: &str, id: &str, text: &str, key: &str) -> (u16, Value) {
        self.post(
            token,
            &format!("/api/v1/conversations/{id}/messages"),
            json!({"text": text, "idempotency_key": key}),
        )
        .await
    }

    pub async fn note(&self, token: &str, id: &str, text: &str) -> (u16, Value) {
        self.post(
            token,
            &format!("/api/v1/conversations/{id}/notes"),
            json!({"text": text}),
        )
        .await
    }

    pub async fn presence(&self, token: &str, status: &str) -> (u16, Value) {
        self.put(
            token,
            "/api/v1/agents/me/presence",
            json!({"status": status}),
        )
        .await
    }

    /// Claims and asserts 200.
    pub async fn must_claim(&self, token: &str, id: &str) -> Value {
        let (s, v) = self.claim(token, id).await;
        assert_eq!(s, 200, "claim of {id} with {token}: {v}");
        v
    }

    /// Replies and asserts 202; returns the message.
    pub async fn must_reply(&self, token: &str, id: &str, text: &str) -> Value {
        let (s, v) = self.reply(token, id, text, &uniq("key-")).await;
        assert_eq!(s, 202, "reply in {id} with {token}: {v}");
        v
    }

    /// The message `msg_id` of conversation `conv`, if present.
    pub async fn message(&self, conv: &str, msg_id: &str) -> Option<Value> {
        self.messages(conv)
            .await
            .into_iter()
            .find(|m| m["id"] == json!(msg_id))
    }

    /// Waits until message `msg_id` of `conv` has status `status`; returns it.
    pub async fn wait_status(&self, conv: &str, msg_id: &str, status: &str) -> Value {
        eventually(
            &format!("message {msg_id} to be {status}"),
            WAIT,
            move || async move {
                match self.message(conv, msg_id).await {
                    Some(m) if m["status"] == json!(status) => Ok(m),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await
    }

    pub async fn metrics(&self) -> String {
        let resp = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        assert_eq!(resp.status().as_u16(), 200);
        resp.text().await.unwrap()
    }

    pub async fn healthz(&self) -> u16 {
        match self.http.get(self.url("/healthz")).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        }
    }
}

/// Sum of every sample of `name` (exact metric name, any labels) whose label set contains all
/// `labels` (each like `outcome="ok"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (metric, lbls) = match series.find('{') {
            Some(i) => (&series[..i], &series[i..]),
            None => (series, ""),
        };
        if metric != name || !labels.iter().all(|l| lbls.contains(l)) {
            continue;
        }
        if let Ok(v) = value.trim().parse::<f64>() {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Fake Graph API
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// In-process broker
// ---------------------------------------------------------------------------------------------

pub struct TB {
    pub api: Api,
    pub broker: Option<Broker>,
    pub graph: FakeGraph,
    pub cfg: Cfg,
    pub dir: tempfile::TempDir,
    /// The broker's wall clock, kept across restarts.
    pub clock: switchboard::clock::SharedClock,
}

impl std::ops::Deref for TB {
    type Target = Api;
    fn deref(&self) -> &Api {
        &self.api
    }
}

pub async fn start_broker(cfg: &Cfg) -> Broker {
    start_broker_with_clock(cfg, Arc::new(switchboard::clock::SystemClock)).await
}

pub async fn start_broker_with_clock(cfg: &Cfg, clock: switchboard::clock::SharedClock) -> Broker {
    let text = cfg.toml();
    let config = Config::from_toml_str(&text)
        .unwrap_or_else(|e| panic!("test config rejected: {e:?}\n{text}"));
    Broker::start_with_clock(config, clock)
        .await
        .unwrap_or_else(|e| panic!("broker failed to start: {e:?}"))
}

impl TB {
    pub async fn start() -> TB {
        TB::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Cfg)) -> TB {
        TB::start_with_clock(tweak, Arc::new(switchboard::clock::SystemClock)).await
    }

    /// Starts a broker whose wall clock is `clock` (e.g. a `ManualClock` the test moves).
    pub async fn start_with_clock(
        tweak: impl FnOnce(&mut Cfg),
        clock: switchboard::clock::SharedClock,
    ) -> TB {
        let graph = FakeGraph::start().await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Cfg::new(&dir.path().join("db"), &graph.base);
        tweak(&mut cfg);
        let broker = start_broker_with_clock(&cfg, clock.clone()).await;
        let api = Api::new(broker.addr());
        TB {
            api,
            broker: Some(broker),
            graph,
            cfg,
            dir,
            clock,
        }
    }

    pub async fn shutdown(&mut self) {
        if let Some(b) = self.broker.take() {
            tokio::time::timeout(Duration::from_secs(20), b.shutdown())
                .await
                .expect("broker.shutdown() did not finish within 20 s");
        }
    }

    /// Drops the broker without shutting down (a crash minus the process exit), then starts
    /// again on the same storage directory.
    pub async fn crash_and_restart(&mut self) {
        drop(self.broker.take());
        let broker = start_broker_with_clock(&self.cfg, self.clock.clone()).await;
        self.api = Api::new(broker.addr());
        self.broker = Some(broker);
    }

    /// Graceful shutdown, then start again on the same storage directory.
    pub async fn restart(&mut self) {
        self.shutdown().await;
        let broker = start_broker_with_clock(&self.cfg, self.clock.clone()).await;
        self.api = Api::new(broker.addr());
        self.broker = Some(broker);
    }

    /// Like restart, but with a new FakeGraph (and the config pointing to it).
    pub async fn restart_with_graph(&mut self, graph: FakeGraph) {
        self.shutdown().await;
        self.cfg.graph_base = graph.base.clone();
        self.graph = graph;
        let broker = start_broker_with_clock(&self.cfg, self.clock.clone()).await;
        self.api = Api::new(broker.addr());
        self.broker = Some(broker);
    }
}

// ---------------------------------------------------------------------------------------------
// SSE client
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------------

pub fn bin_path() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub struct BinProc {
    pub child: Child,
    pub api: Api,
    pub log: PathBuf,
}

impl BinProc {
    /// Spawns `switchboard --config <config>` (stderr to `log`) and waits for /healthz 200.
    pub async fn spawn(config: &Path, port: u16, log: &Path) -> BinProc {
        let logf = std::fs::File::create(log).unwrap();
        let child = Command::new(bin_path())
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("spawn switchboard");
        let mut p = BinProc {
            child,
            api: Api::from_base(format!("http://127.0.0.1:{port}")),
            log: log.to_path_buf(),
        };
        p.wait_healthy(Duration::from_secs(30)).await;
        p
    }

    /// As [`BinProc::spawn`], with the child's soft limit on open files set to `soft`.
    pub async fn spawn_with_nofile(config: &Path, port: u16, log: &Path, soft: u64) -> BinProc {
        use std::os::unix::process::CommandExt;
        let logf = std::fs::File::create(log).unwrap();
        let mut cmd = Command::new(bin_path());
        cmd.arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(logf));
        // SAFETY: only async-signal-safe calls (getrlimit/setrlimit) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                lim.rlim_cur = soft;
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn switchboard");
        let mut p = BinProc {
            child,
            api: Api::from_base(format!("http://127.0.0.1:{port}")),
            log: log.to_path_buf(),
        };
        p.wait_healthy(Duration::from_secs(30)).await;
        p
    }

    pub async fn wait_healthy(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!(
                    "switchboard exited early with {st}; log:\n{}",
                    self.log_text()
                );
            }
            if self.api.healthz().await == 200 {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "switchboard not healthy within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends a signal with kill(1) (e.g. "TERM") and waits for exit with a deadline.
    pub async fn signal_and_wait(
        &mut self,
        sig: &str,
        timeout: Duration,
    ) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let st = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(&pid)
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} {pid} failed");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                self.kill9();
                panic!(
                    "switchboard did not exit within {timeout:?} after SIG{sig}; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for BinProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
