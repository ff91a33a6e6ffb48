//! The Graph API client for sending messages, and the classification of Meta's errors.
//!
//! Classification is the contract with the outbox: [`SendError::Transient`] is retried with
//! back-off (throughput and transient codes 130429, 131056, 131000, 131016, any 5xx, a
//! connection that could not be opened: Meta answered no, or never saw the request);
//! [`SendError::Ambiguous`] means Meta may have taken the message (a timeout or broken connection
//! after the request may have been written, a 2xx answer without `messages[0].id`), so the outbox
//! holds it for a status callback naming it before sending it again;
//! [`SendError::WindowClosed`] (131047) and [`SendError::Permanent`] fail the message with Meta's
//! code and title and are never retried. The final codes of [`FailureReason`] (131026, 131049,
//! 131050, 130472) are permanent whatever HTTP status carries them, so even a 5xx answer with one
//! of them fails the message at once.

use std::time::Duration;

use serde_json::{json, Value};

use crate::domain::message::{FailureReason, WINDOW_CLOSED_CODE};

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

/// Idle connections kept to the Graph API at least (what the client kept before it was sized
/// to the outbox's in-flight bound).
const MIN_IDLE_CONNECTIONS: usize = 64;

#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl GraphClient {
    /// `max_connections`: idle connections kept to the Graph API, sized to the sends that may be
    /// in flight at once (every number's `outbox.max_in_flight`, read receipts included): a pool
    /// smaller than that closes a connection after each request beyond it and opens a new one
    /// for the next, a TCP (and TLS) handshake per send at a campaign's rate.
    pub fn new(
        base: &str,
        token: &str,
        timeout: Duration,
        max_connections: usize,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .pool_max_idle_per_host(max_connections.max(MIN_IDLE_CONNECTIONS))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    /// Sends a text message to `to` (the customer: its phone, or its business-scoped user id
    /// when no phone is known, see [`post_message`](Self::post_message)), quoting the message
    /// `reply_to` (a wamid) when given; returns the wamid Meta assigned.
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
            "type": "text",
            "text": { "body": text },
            "biz_opaque_callback_data": callback_data,
        });
        body["to"] = json!(to);
        if let Some(wamid) = reply_to {
            body["context"] = json!({ "message_id": wamid });
        }
        self.post_message(phone_number_id, body).await
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
        self.post_message(phone_number_id, body).await
    }

    /// Reacts with `emoji` to the message `wamid` (an empty emoji removes the business's
    /// reaction); returns the wamid Meta assigned to the reaction.
    pub async fn send_reaction(
        &self,
        phone_number_id: &str,
        to: &str,
        wamid: &str,
        emoji: &str,
        callback_data: &str,
    ) -> Result<String, SendError> {
        let body = message_body(
            to,
            callback_data,
            "reaction",
            json!({ "message_id": wamid, "emoji": emoji }),
        );
        self.post_message(phone_number_id, body).await
    }

    /// Sends an interactive message (buttons or a list): `interactive` is Meta's object, as
    /// the API checked it.
    pub async fn send_interactive(
        &self,
        phone_number_id: &str,
        to: &str,
        interactive: &str,
        callback_data: &str,
    ) -> Result<String, SendError> {
        let object: Value = serde_json::from_str(interactive).map_err(|e| {
            // Checked before it was stored; a record that no longer parses cannot be sent.
            SendError::Permanent {
                code: 0,
                title: format!("stored interactive object is not JSON: {e}"),
            }
        })?;
        let body = message_body(to, callback_data, "interactive", object);
        self.post_message(phone_number_id, body).await
    }

    /// Sends an approved template (Meta's send-template API: `template.name`,
    /// `template.language.code`, and `template.components` when it has parameters):
    /// `components` is the array the API built, as JSON text.
    pub async fn send_template(
        &self,
        phone_number_id: &str,
        to: &str,
        name: &str,
        language: &str,
        components: &str,
        callback_data: &str,
    ) -> Result<String, SendError> {
        let components: Value = serde_json::from_str(components).map_err(|e| {
            // Built by the API before it was stored; a record that no longer parses cannot be
            // sent.
            SendError::Permanent {
                code: 0,
                title: format!("stored template components are not JSON: {e}"),
            }
        })?;
        let mut template = json!({ "name": name, "language": { "code": language } });
        if components.as_array().is_some_and(|c| !c.is_empty()) {
            template["components"] = components;
        }
        let body = message_body(to, callback_data, "template", template);
        self.post_message(phone_number_id, body).await
    }

    /// Marks the customer's message `wamid` (and every earlier one) read and shows the typing
    /// indicator (Meta shows it for up to 25 s, or until the business's next message). Meta's
    /// "Typing indicators" reference: the body below, answered `{"success": true}`; any 2xx is
    /// taken as done, errors are classified as for messages.
    pub async fn mark_read(&self, phone_number_id: &str, wamid: &str) -> Result<(), SendError> {
        let body = json!({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": wamid,
            "typing_indicator": { "type": "text" },
        });
        let url = format!("{}/{}/messages", self.base, phone_number_id);
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .map_err(request_error)?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        classify(status.as_u16(), &bytes).map(|_| ())
    }

    /// Posts one message object to `/{phone_number_id}/messages`; returns the wamid Meta
    /// assigned, or how the send failed.
    ///
    /// A `to` holding a business-scoped user id is sent as `recipient` instead. Meta's send API
    /// since usernames (2026): `to` takes a phone number, `recipient` a BSUID or parent BSUID;
    /// given both, `to` wins, so a BSUID goes alone in `recipient` — the field for users whose
    /// phone the business does not have (Meta's "Business-scoped user IDs" guide, as providers
    /// relay it: YCloud's BSUID send docs, 8x8's 2026-07 BSUID release notes). A BSUID is told
    /// from a phone by its shape (`US.1349…`: country, dot; see `domain::customer`).
    async fn post_message(
        &self,
        phone_number_id: &str,
        mut body: serde_json::Value,
    ) -> Result<String, SendError> {
        let user_id = body["to"]
            .as_str()
            .filter(|to| crate::domain::customer::is_user_id(to))
            .map(str::to_string);
        if let (Some(user_id), Some(fields)) = (user_id, body.as_object_mut()) {
            fields.remove("to");
            fields.insert("recipient".to_string(), json!(user_id));
        }
        let url = format!("{}/{}/messages", self.base, phone_number_id);
        let resp = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(&body)
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

/// Meta's message envelope for a message of type `kind` with its `content` object.
fn message_body(to: &str, callback_data: &str, kind: &str, content: Value) -> Value {
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": kind,
        "biz_opaque_callback_data": callback_data,
    });
    body[kind] = content;
    body
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
        // Final whatever the HTTP status says: no retry can fix these (`FailureReason`).
        Some(c) if c != WINDOW_CLOSED_CODE && FailureReason::is_final(c) => {
            Err(SendError::Permanent { code: c, title })
        }
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
        for code in [131026, 131049, 131050, 130472] {
            let body = format!(r#"{{"error":{{"code":{code},"message":"no"}}}}"#);
            for http in [400, 500] {
                assert!(
                    matches!(classify(http, body.as_bytes()), Err(SendError::Permanent { code: c, .. }) if c == code),
                    "{code} over HTTP {http}"
                );
            }
        }
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
