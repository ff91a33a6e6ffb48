//! An HTTP client for the broker's API, webhook and /metrics, and a reader for the Prometheus
//! text it serves.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use super::config::ROOT;
use super::util::{eventually, now, sign, uniq, wamid, WAIT};
use super::webhook::text_webhook;

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
