//! Typed view of the broker's agent API (`/api/v1`) and a small JSON client for it.
//!
//! Deserialization is deliberately tolerant: ids may be strings or numbers, unknown fields are
//! ignored, and optional fields may be missing or null, so a broker that extends its payloads
//! never breaks the load test. `ApiClient::call` never fails on an HTTP status: it returns the
//! status and the parsed JSON body (`null` when the body is not JSON) and only turns transport
//! failures into an error kind from `outcome::error_kind`.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::outcome::error_kind;

fn id_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    })
}

/// A conversation as the broker reports it.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Conversation {
    #[serde(deserialize_with = "id_string")]
    pub id: String,
    #[serde(default, deserialize_with = "opt_string")]
    pub number: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub customer: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub assignee: Option<String>,
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
}

impl Conversation {
    pub fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("")
    }
}

/// A message as the broker reports it.
#[derive(Debug, Clone, Deserialize, Default)]
pub struct Message {
    #[serde(default, deserialize_with = "id_string")]
    pub id: String,
    #[serde(default, deserialize_with = "opt_string")]
    pub direction: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub wamid: Option<String>,
    #[serde(default, deserialize_with = "opt_string")]
    pub status: Option<String>,
    #[serde(default)]
    pub error: Option<Value>,
}

impl Message {
    /// `error.code` when present (number or string).
    pub fn error_code(&self) -> Option<String> {
        match self.error.as_ref()?.get("code")? {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            v => Some(v.to_string()),
        }
    }
}

/// An SSE event payload.
#[derive(Debug, Clone, Deserialize)]
pub struct Event {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub conversation: Option<Conversation>,
    #[serde(default)]
    pub message: Option<Message>,
}

/// `error.code` of an error body.
pub fn error_code(v: &Value) -> Option<&str> {
    v.pointer("/error/code").and_then(Value::as_str)
}

/// Percent-encodes a path segment (ids are normally plain, but never trust that).
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// JSON client for `/api/v1`.
#[derive(Clone)]
pub struct ApiClient {
    pub client: reqwest::Client,
    pub base_url: String,
    pub timeout: Duration,
}

impl ApiClient {
    /// Sends a request; `Err(kind)` only for transport failures.
    pub async fn call(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), String> {
        let mut rb = self
            .client
            .request(method, format!("{}{}", self.base_url, path))
            .bearer_auth(token)
            .timeout(self.timeout);
        if let Some(b) = body {
            rb = rb.json(b);
        }
        match rb.send().await {
            Ok(r) => {
                let status = r.status();
                let bytes = r.bytes().await.map_err(|e| error_kind(&e).to_string())?;
                let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                Ok((status, v))
            }
            Err(e) => Err(error_kind(&e).to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerant_conversation() {
        let v = serde_json::json!({"id": 17, "number": "106540352242921", "customer": "4915",
            "status": "queued", "assignee": null, "team": "support", "extra": [1],
            "messages": [{"id": "m1", "direction": "outbound", "status": "failed",
                          "error": {"code": 131049, "title": "x"}}]});
        let c: Conversation = match serde_json::from_value(v) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.id, "17");
        assert_eq!(c.status(), "queued");
        assert_eq!(c.assignee, None);
        let msgs = c.messages.unwrap_or_default();
        assert_eq!(msgs[0].error_code().as_deref(), Some("131049"));
    }

    #[test]
    fn segments() {
        assert_eq!(seg("abc-1"), "abc-1");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }
}
