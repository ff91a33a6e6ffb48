//! The Graph API's media endpoints: what an inbound media id points at (`GET /{media-id}`), its
//! bytes (`GET` that URL with the same bearer token), and uploads of a business's media
//! (`POST /{phone_number_id}/media`, multipart, `messaging_product=whatsapp`).
//!
//! A client of its own, apart from the outbox's [`super::graph::GraphClient`]: files of up to
//! 100 MB cannot live under a total request timeout sized for a JSON send, so these requests
//! time out only when no byte moved for `media.read_timeout_ms` (and on connecting).
//! Responses are streamed by the caller: nothing here holds a file in memory.

use std::time::Duration;

use serde_json::Value;

/// How a media request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// Meta does not know the id (or no longer): nothing will fetch it.
    #[error("not found at Meta")]
    NotFound,
    /// Worth another try later (5xx, throttling, a broken or slow connection).
    #[error("transient: {0}")]
    Transient(String),
    /// Meta refused it for good (a 4xx with an error code).
    #[error("refused: ({code}) {title}")]
    Permanent { code: i64, title: String },
}

/// Meta's answer to `GET /{media-id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLocation {
    pub url: String,
    pub mime_type: Option<String>,
    /// As Meta writes it (hex or base64); see `crate::media::hash`.
    pub sha256: Option<String>,
    pub file_size: Option<u64>,
}

#[derive(Clone)]
pub struct MediaGraph {
    http: reqwest::Client,
    base: String,
    token: String,
    read_timeout: Duration,
}

fn client(read_timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(read_timeout)
        .read_timeout(read_timeout)
        .pool_max_idle_per_host(16)
        .build()
}

impl MediaGraph {
    pub fn new(base: &str, token: &str, read_timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: client(read_timeout)?,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            read_timeout,
        })
    }

    /// The same endpoints through a connection pool of its own. A pooled connection's task runs
    /// on the runtime that opened it, so a runtime of its own (the fetcher's downloads) needs
    /// its own pool for the work of its connections to stay on its threads.
    pub fn with_own_pool(&self) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: client(self.read_timeout)?,
            ..self.clone()
        })
    }

    /// Where media `meta_id`'s bytes are (the URL lives 5 minutes).
    pub async fn locate(&self, meta_id: &str) -> Result<MediaLocation, MediaError> {
        let url = format!("{}/{}", self.base, meta_id);
        let (status, body) = answer(self.http.get(url).bearer_auth(&self.token)).await?;
        if !(200..300).contains(&status) {
            return Err(refusal(status, &body));
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| MediaError::Transient(format!("answer is not JSON: {e}")))?;
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let url =
            text("url").ok_or_else(|| MediaError::Transient("answer without url".to_string()))?;
        // Meta documents `file_size` as a string in places and sends a number in others.
        let file_size = match v.get("file_size") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        };
        Ok(MediaLocation {
            url,
            mime_type: text("mime_type"),
            sha256: text("sha256"),
            file_size,
        })
    }

    /// Starts downloading `url` (with the bearer token); the caller streams the body.
    pub async fn download(&self, url: &str) -> Result<reqwest::Response, MediaError> {
        let resp = self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| MediaError::Transient(format!("request: {e}")))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        Err(refusal(status, &body))
    }

    /// Uploads `length` bytes of `body` for number `phone_number_id`; answers Meta's media id.
    pub async fn upload(
        &self,
        phone_number_id: &str,
        mime_type: &str,
        filename: &str,
        length: u64,
        body: reqwest::Body,
    ) -> Result<String, MediaError> {
        let part = reqwest::multipart::Part::stream_with_length(body, length)
            .file_name(filename.to_string())
            .mime_str(mime_type)
            .map_err(|e| MediaError::Permanent {
                code: 0,
                title: format!("bad type {mime_type:?}: {e}"),
            })?;
        let form = reqwest::multipart::Form::new()
            .text("messaging_product", "whatsapp")
            .text("type", mime_type.to_string())
            .part("file", part);
        let url = format!("{}/{}/media", self.base, phone_number_id);
        let (status, body) =
            answer(self.http.post(url).bearer_auth(&self.token).multipart(form)).await?;
        if !(200..300).contains(&status) {
            return match refusal(status, &body) {
                // An upload is not addressed by id: a 404 is the route's, worth retrying.
                MediaError::NotFound => Err(MediaError::Transient(format!("HTTP {status}"))),
                e => Err(e),
            };
        }
        serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| MediaError::Transient(format!("HTTP {status} without id")))
    }
}

/// Sends `req` and reads its whole answer (Graph's JSON answers here are small): its status and
/// body. A request or read that fails is transient.
async fn answer(req: reqwest::RequestBuilder) -> Result<(u16, bytes::Bytes), MediaError> {
    let resp = req
        .send()
        .await
        .map_err(|e| MediaError::Transient(format!("request: {e}")))?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| MediaError::Transient(format!("reading answer: {e}")))?;
    Ok((status, body))
}

/// A non-2xx answer: 404 (or Meta's 100 "does not exist") is gone, 5xx, 429 and Meta's
/// throughput codes are transient, any other 4xx is a refusal.
fn refusal(status: u16, body: &[u8]) -> MediaError {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    let code = err.and_then(|e| e.get("code")).and_then(Value::as_i64);
    let title = err
        .and_then(|e| e.get("error_user_title").or_else(|| e.get("message")))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if status == 404 {
        return MediaError::NotFound;
    }
    if status >= 500
        || status == 429
        || code.is_some_and(|c| super::graph::RETRYABLE_CODES.contains(&c))
    {
        return MediaError::Transient(format!("HTTP {status} {title}"));
    }
    MediaError::Permanent {
        code: code.unwrap_or(i64::from(status)),
        title: if title.is_empty() {
            format!("HTTP {status}")
        } else {
            title
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_classified() {
        assert_eq!(refusal(404, b""), MediaError::NotFound);
        assert!(matches!(refusal(500, b"x"), MediaError::Transient(_)));
        assert!(matches!(refusal(429, b""), MediaError::Transient(_)));
        let bad = br#"{"error":{"code":131053,"message":"Media upload error"}}"#;
        assert_eq!(
            refusal(400, bad),
            MediaError::Permanent {
                code: 131053,
                title: "Media upload error".into()
            }
        );
    }
}
