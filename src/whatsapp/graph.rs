//! The Graph API client for sending messages, and the classification of Meta's errors.
//!
//! Classification is the contract with the outbox: [`SendError::Transient`] is retried with
//! back-off (throughput and transient codes 130429, 131056, 131000, 131016, any 5xx, a
//! connection that could not be opened: Meta answered no, or never saw the request);
//! [`SendError::Ambiguous`] means Meta may have taken the message (a timeout or broken connection
//! after the request may have been written, a 2xx answer without `messages[0].id`), so the outbox
//! holds it for a status callback naming it before sending it again;
//! [`SendError::WindowClosed`] (131047) and [`SendError::Permanent`] fail the message with Meta's
//! code and title and are never retried.

use std::time::Duration;

use serde_json::{json, Value};

use crate::domain::message::WINDOW_CLOSED_CODE;

/// Meta error codes worth retrying.
pub const RETRYABLE_CODES: [i64; 4] = [130429, 131056, 131000, 131016];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("transient: {0}")]
    Transient(String),
    /// The request may have reached Meta; whether it took the message is unknown.
    #[error("ambiguous ({cause}): {reason}")]
    Ambiguous {
        cause: AmbiguousCause,
        reason: String,
    },
    #[error("window closed: ({code}) {title}")]
    WindowClosed { code: i64, title: String },
    #[error("failed: ({code}) {title}")]
    Permanent { code: i64, title: String },
}

/// Why a send's outcome is unknown (the `cause` label of `switchboard_outbox_ambiguous_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmbiguousCause {
    /// No answer within `outbox.request_timeout_ms`.
    Timeout,
    /// The connection broke after it was open (while writing, or reading the answer).
    Connection,
    /// A 2xx answer without `messages[0].id` (not JSON, or not Meta's shape).
    NoMessageId,
    /// Found on disk at start-up with an attempt that may have reached Meta.
    Restart,
}

impl AmbiguousCause {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connection => "connection",
            Self::NoMessageId => "no_message_id",
            Self::Restart => "restart",
        }
    }
}

impl std::fmt::Display for AmbiguousCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A media message by Meta's media id (see [`GraphClient::send_media`]).
#[derive(Debug, Clone, Copy)]
pub struct MediaMessage<'a> {
    pub kind: &'a str,
    pub meta_id: &'a str,
    pub caption: Option<&'a str>,
    pub filename: Option<&'a str>,
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

    /// Sends a text message, quoting the message `reply_to` (a wamid) when given; returns the
    /// wamid Meta assigned.
    pub async fn send_text(
        &self,
        phone_number_id: &str,
        to: &str,
        text: &str,
        reply_to: Option<&str>,
        callback_data: &str,
    ) -> Result<String, SendError> {
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": { "body": text },
            "biz_opaque_callback_data": callback_data,
        });
        if let Some(wamid) = reply_to {
            body["context"] = json!({ "message_id": wamid });
        }
        self.post_message(phone_number_id, &body).await
    }

    /// Sends media Meta already holds (`meta_id`, from an upload) as a message of `kind`
    /// (`image`, `audio`, `video`, `document`, `sticker`); returns the wamid Meta assigned.
    /// Meta takes a caption on images, videos and documents only, a filename on documents only.
    pub async fn send_media(
        &self,
        phone_number_id: &str,
        to: &str,
        m: &MediaMessage<'_>,
        callback_data: &str,
    ) -> Result<String, SendError> {
        let kind = m.kind;
        let mut media = json!({ "id": m.meta_id });
        if let Some(c) = m
            .caption
            .filter(|_| matches!(kind, "image" | "video" | "document"))
        {
            media["caption"] = json!(c);
        }
        if let Some(f) = m.filename.filter(|_| kind == "document") {
            media["filename"] = json!(f);
        }
        let mut body = json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": kind,
            "biz_opaque_callback_data": callback_data,
        });
        body[kind] = media;
        self.post_message(phone_number_id, &body).await
    }

    /// Posts one message object to `/{phone_number_id}/messages`; returns the wamid Meta
    /// assigned, or how the send failed.
    async fn post_message(
        &self,
        phone_number_id: &str,
        body: &serde_json::Value,
    ) -> Result<String, SendError> {
        let url = format!("{}/{}/messages", self.base, phone_number_id);
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(request_error)?;
        let status = resp.status();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            // Meta answered; only a success could have taken the message.
            Err(e) if status.is_success() => {
                return Err(SendError::Ambiguous {
                    cause: AmbiguousCause::Connection,
                    reason: format!("reading answer: {e}"),
                })
            }
            Err(e) => {
                return Err(SendError::Transient(format!(
                    "HTTP {status}, reading answer: {e}"
                )))
            }
        };
        classify(status.as_u16(), &bytes)
    }
}

/// A request that got no answer: a connection that never opened carried nothing (transient);
/// anything later (a timeout, a reset while writing or waiting) may have delivered it.
fn request_error(e: reqwest::Error) -> SendError {
    if e.is_connect() {
        return SendError::Transient(format!("connect: {e}"));
    }
    let cause = if e.is_timeout() {
        AmbiguousCause::Timeout
    } else {
        AmbiguousCause::Connection
    };
    SendError::Ambiguous {
        cause,
        reason: format!("request: {e}"),
    }
}

/// Turns a Graph API answer into a wamid or a classified error. A success without
/// `messages[0].id` is ambiguous: Meta may have taken the message (sending it again at once could
/// deliver it twice), but nothing ties it to later delivery statuses until a callback names it.
pub fn classify(status: u16, body: &[u8]) -> Result<String, SendError> {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if (200..300).contains(&status) {
        let wamid = parsed
            .as_ref()
            .and_then(|v| v.pointer("/messages/0/id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        return wamid.ok_or_else(|| SendError::Ambiguous {
            cause: AmbiguousCause::NoMessageId,
            reason: format!("HTTP {status} without messages[0].id"),
        });
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
        assert!(wamid.starts_with("wamid."), "{wamid:?}");
        // Taken without an id, or not JSON: maybe taken, maybe not.
        for body in [
            &br#"{"messaging_product":"whatsapp"}"#[..],
            b"",
            b"<html>ok</html>",
        ] {
            assert!(
                matches!(
                    classify(200, body),
                    Err(SendError::Ambiguous {
                        cause: AmbiguousCause::NoMessageId,
                        ..
                    })
                ),
                "{body:?}"
            );
        }
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
