//! The Graph API client for sending messages, and the classification of Meta's errors.
//!
//! Classification is the contract with the outbox: [`SendError::Transient`] is retried with
//! back-off (throughput and transient codes 130429, 131056, 131000, 131016, any 5xx, connection
//! failures and timeouts); [`SendError::WindowClosed`] (131047) and [`SendError::Permanent`] fail
//! the message with Meta's code and title and are never retried.

use std::time::Duration;

use serde_json::{json, Value};

/// Meta error codes worth retrying.
pub const RETRYABLE_CODES: [i64; 4] = [130429, 131056, 131000, 131016];
/// Re-engagement message: the 24-hour window is closed.
pub const WINDOW_CLOSED_CODE: i64 = 131047;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("transient: {0}")]
    Transient(String),
    #[error("window closed: ({code}) {title}")]
    WindowClosed { code: i64, title: String },
    #[error("failed: ({code}) {title}")]
    Permanent { code: i64, title: String },
}

#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl GraphClient {
    pub fn new(base: &str, token: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(64)
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    /// Sends a text message; returns the wamid Meta assigned.
    pub async fn send_text(
        &self,
        phone_number_id: &str,
        to: &str,
        text: &str,
        callback_data: &str,
    ) -> Result<Option<String>, SendError> {
        let body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": { "body": text },
            "biz_opaque_callback_data": callback_data,
        });
        let url = format!("{}/{}/messages", self.base, phone_number_id);
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(|e| SendError::Transient(format!("request: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| SendError::Transient(format!("reading answer: {e}")))?;
        classify(status.as_u16(), &bytes)
    }
}

/// Turns a Graph API answer into a wamid or a classified error. A success without
/// `messages[0].id` is still a success (None): Meta took the message, and sending it again could
/// deliver it twice; it only cannot be matched with later delivery statuses.
pub fn classify(status: u16, body: &[u8]) -> Result<Option<String>, SendError> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        let wamid = parsed
            .as_ref()
            .and_then(|v| v.pointer("/messages/0/id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if wamid.is_none() {
            tracing::warn!(
                status,
                "Graph API accepted a message without messages[0].id; not sending it again"
            );
        }
        return Ok(wamid);
    }
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let code = err.and_then(|e| e.get("code")).and_then(Value::as_i64);
    let title = err
        .and_then(|e| e.get("error_user_title").or_else(|| e.get("message")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    match code {
        Some(c) if RETRYABLE_CODES.contains(&c) => {
            Err(SendError::Transient(format!("({c}) {title}")))
        }
        Some(WINDOW_CLOSED_CODE) => Err(SendError::WindowClosed {
            code: WINDOW_CLOSED_CODE,
            title: if title.is_empty() {
                "Re-engagement message: the 24-hour window is closed".into()
            } else {
                title
            },
        }),
        _ if status >= 500 || status == 429 => {
            Err(SendError::Transient(format!("HTTP {status} {title}")))
        }
        Some(c) => Err(SendError::Permanent { code: c, title }),
        None => Err(SendError::Permanent {
            code: i64::from(status),
            title: format!("HTTP {status}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_meta_answers() {
        let ok = include_bytes!("../../tests/fixtures/whatsapp/graph_send_ok.json");
        let wamid = classify(200, ok).expect("ok");
        assert!(
            wamid.as_deref().is_some_and(|w| w.starts_with("wamid.")),
            "{wamid:?}"
        );
        // Taken without an id: accepted all the same, never sent again.
        assert_eq!(
            classify(200, br#"{"messaging_product":"whatsapp"}"#),
            Ok(None)
        );
        assert_eq!(classify(201, b""), Ok(None));
        let rl = include_bytes!("../../tests/fixtures/whatsapp/graph_error_rate_limit.json");
        assert!(matches!(classify(400, rl), Err(SendError::Transient(_))));
        let wc = br#"{"error":{"code":131047,"message":"Re-engagement message"}}"#;
        assert!(matches!(
            classify(400, wc),
            Err(SendError::WindowClosed { code: 131047, .. })
        ));
        let other = br#"{"error":{"code":131026,"message":"Message undeliverable"}}"#;
        assert_eq!(
            classify(400, other),
            Err(SendError::Permanent {
                code: 131026,
                title: "Message undeliverable".into()
            })
        );
        assert!(matches!(
            classify(503, b"oops"),
            Err(SendError::Transient(_))
        ));
        assert!(matches!(
            classify(404, b""),
            Err(SendError::Permanent { code: 404, .. })
        ));
    }
}
