//! The OpenAI-compatible intent provider (`[automation] provider = "openai"`): asks a
//! chat-completions server (OpenAI, Ollama, vLLM, llama.cpp, …) which configured intent a
//! customer's text is.
//!
//! One call is `POST {base_url}/chat/completions` with a system prompt listing the intent ids and
//! the customer's text as the user message, `temperature = 0`. The answer is read robustly
//! ([`parse_answer`]): a JSON object with `"intent"` (or `"id"`), a JSON string, or the bare id,
//! with or without a Markdown code fence, quotes or a trailing full stop; `none` means the model
//! found no intent. Anything else is garbage.
//!
//! Invariants:
//! - A call never outlives `timeout_ms` (the whole request: connect, answer and body), and reads
//!   at most [`MAX_ANSWER_BODY`] bytes.
//! - At most `provider_max_in_flight` calls are in flight across the broker; a call beyond that
//!   is not made and fails at once with [`Failure::Overload`] (no queueing: a slow or dead
//!   server must not pile turns up in memory).
//! - Every failure ([`Failure`], a bounded set of reasons) leaves the decision to the built-in
//!   classifier (the caller's fallback); it is counted in `switchboard_bot_provider_failures_total`
//!   and the latency of every call made in `switchboard_bot_provider_seconds`.
//! - Nothing here touches the conversation actor: the caller (`Automation::decide`) runs in the
//!   bot turn's own task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::metrics as m;

/// The largest chat-completions answer read (an intent id needs a few bytes).
pub const MAX_ANSWER_BODY: usize = 64 * 1024;
/// Tokens the model may answer with: enough for `{"intent": "<id>"}`.
const MAX_TOKENS: u32 = 64;

/// Why a provider call gave no usable intent (the `reason` label of the failure metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer within `timeout_ms`.
    Timeout,
    /// Connection refused or broken, a non-2xx status, an answer too large or not the
    /// chat-completions shape.
    Error,
    /// The model answered, but not with a configured intent id (nor `none`).
    Garbage,
    /// `provider_max_in_flight` calls were already in flight.
    Overload,
}

impl Failure {
    pub const ALL: [Failure; 4] = [
        Failure::Timeout,
        Failure::Error,
        Failure::Garbage,
        Failure::Overload,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Error => "error",
            Self::Garbage => "garbage",
            Self::Overload => "overload",
        }
    }
}

/// What the model said: one of the configured intents, or none of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Intent(String),
    NoIntent,
}

/// The client: shared by every bot turn.
pub struct OpenAi {
    http: reqwest::Client,
    url: String,
    model: String,
    api_key: Option<String>,
    timeout: Duration,
    in_flight: Arc<tokio::sync::Semaphore>,
    intents: Vec<String>,
    system_prompt: String,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
#[error("openai provider: {0}")]
pub struct BuildError(pub String);

impl OpenAi {
    /// `base_url` without `/chat/completions` (e.g. `http://127.0.0.1:11434/v1`).
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<&str>,
        timeout: Duration,
        max_in_flight: usize,
        intents: Vec<String>,
    ) -> Result<Self, BuildError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| BuildError(e.to_string()))?;
        Ok(Self {
            http,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: model.to_string(),
            api_key: api_key.filter(|k| !k.is_empty()).map(str::to_string),
            timeout,
            in_flight: Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
            system_prompt: system_prompt(&intents),
            intents,
        })
    }

    /// Asks the model for `text`'s intent; counts failures and the call's latency.
    pub async fn classify(&self, text: &str) -> Result<Answer, Failure> {
        let r = self.call(text).await;
        if let Err(f) = r {
            metrics::counter!(m::BOT_PROVIDER_FAILURES, "reason" => f.as_str()).increment(1);
        }
        r
    }

    async fn call(&self, text: &str) -> Result<Answer, Failure> {
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return Err(Failure::Overload);
        };
        let started = Instant::now();
        // The client's own timeout covers the request; this one also bounds reading the body.
        let r = tokio::time::timeout(self.timeout, self.request(text)).await;
        metrics::histogram!(m::BOT_PROVIDER_SECONDS).record(started.elapsed().as_secs_f64());
        let content = match r {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "intent provider failed");
                return Err(if e.is_timeout() {
                    Failure::Timeout
                } else {
                    Failure::Error
                });
            }
            Ok(Ok(c)) => c,
        };
        let content = content.ok_or(Failure::Error)?;
        parse_answer(&content, &self.intents).ok_or(Failure::Garbage)
    }

    /// The call itself: the message content of the first choice (None: not that shape).
    async fn request(&self, text: &str) -> Result<Option<String>, RequestError> {
        let body = json!({
            "model": self.model,
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
            "messages": [
                {"role": "system", "content": self.system_prompt},
                {"role": "user", "content": text},
            ],
        });
        let mut req = self.http.post(&self.url).json(&body);
        if let Some(k) = &self.api_key {
            req = req.bearer_auth(k);
        }
        let mut resp = req.send().await?;
        if !resp.status().is_success() {
            return Err(RequestError::Status(resp.status().as_u16()));
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BODY {
                return Err(RequestError::TooLarge);
            }
            bytes.extend_from_slice(&chunk);
        }
        let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
            return Ok(None);
        };
        Ok(v["choices"][0]["message"]["content"]
            .as_str()
            .map(str::to_string))
    }
}

/// Why a request failed (logged at debug; counted as [`Failure::Error`] or `Timeout`).
#[derive(Debug, thiserror::Error)]
enum RequestError {
    #[error("request: {0}")]
    Http(#[from] reqwest::Error),
    #[error("answered {0}")]
    Status(u16),
    #[error("answer larger than {MAX_ANSWER_BODY} bytes")]
    TooLarge,
}

impl RequestError {
    fn is_timeout(&self) -> bool {
        matches!(self, Self::Http(e) if e.is_timeout())
    }
}

/// The instructions: pick one id of the list, or `none`, and answer in JSON.
fn system_prompt(intents: &[String]) -> String {
    format!(
        "You classify a customer's WhatsApp message (any language) into exactly one intent of \
         this list: {}. If none fits, the intent is \"none\". Answer only with JSON of the form \
         {{\"intent\": \"<id>\"}}, nothing else.",
        intents
            .iter()
            .map(|i| format!("\"{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Reads the model's answer: a JSON object's `intent` (or `id`), a JSON string, or a bare id,
/// perhaps in a code fence, quoted, or with prose around a JSON object. Ids compare
/// case-insensitively; `none` (or `null`) is [`Answer::NoIntent`]. None: garbage.
pub fn parse_answer(content: &str, intents: &[String]) -> Option<Answer> {
    let mut s = content.trim();
    // ```json … ``` or ``` … ```
    if let Some(inner) = s.strip_prefix("```") {
        let inner = inner.strip_suffix("```").unwrap_or(inner);
        // The fence's language tag, if any, ends at the first line break.
        s = match inner.split_once('\n') {
            Some((tag, rest)) if !tag.trim().contains(' ') => rest,
            _ => inner,
        }
        .trim();
    }
    let candidate = match serde_json::from_str::<Value>(s) {
        Ok(v) => from_json(&v)?,
        Err(_) => match (s.find('{'), s.rfind('}')) {
            // Prose around one JSON object.
            (Some(open), Some(close)) if open < close => {
                let v = serde_json::from_str::<Value>(&s[open..=close]).ok()?;
                from_json(&v)?
            }
            _ => Some(s.to_string()),
        },
    };
    let Some(id) = candidate else {
        return Some(Answer::NoIntent);
    };
    let id = id
        .trim()
        .trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | '.' | '!') || c.is_whitespace());
    if id.eq_ignore_ascii_case("none") || id.eq_ignore_ascii_case("null") {
        return Some(Answer::NoIntent);
    }
    intents
        .iter()
        .find(|i| i.eq_ignore_ascii_case(id))
        .map(|i| Answer::Intent(i.clone()))
}

/// The id a JSON answer names: Some(None) for an explicit null, None when it names nothing.
fn from_json(v: &Value) -> Option<Option<String>> {
    match v {
        Value::String(s) => Some(Some(s.clone())),
        Value::Null => Some(None),
        Value::Object(o) => match o.get("intent").or_else(|| o.get("id"))? {
            Value::String(s) => Some(Some(s.clone())),
            Value::Null => Some(None),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<String> {
        ["order_status", "refund", "greeting"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn answers_in_every_usual_shape_are_read() {
        let want = Some(Answer::Intent("refund".into()));
        for content in [
            r#"{"intent": "refund"}"#,
            r#"{"id":"refund"}"#,
            "refund",
            " Refund.\n",
            "\"refund\"",
            "`refund`",
            "```json\n{\"intent\": \"refund\"}\n```",
            "```\nrefund\n```",
            "Sure! Here it is: {\"intent\": \"refund\"}",
        ] {
            assert_eq!(parse_answer(content, &ids()), want, "{content:?}");
        }
        for content in [
            "none",
            r#"{"intent": "none"}"#,
            r#"{"intent": null}"#,
            "NONE.",
        ] {
            assert_eq!(
                parse_answer(content, &ids()),
                Some(Answer::NoIntent),
                "{content:?}"
            );
        }
    }

    #[test]
    fn anything_else_is_garbage() {
        for content in [
            "",
            "I think the customer wants their money back",
            r#"{"intent": "cancel_subscription"}"#,
            r#"{"intent": 3}"#,
            r#"{"label": "refund"}"#,
            "[\"refund\"]",
            "refund order_status",
            "{ not json }",
        ] {
            assert_eq!(parse_answer(content, &ids()), None, "{content:?}");
        }
    }

    #[test]
    fn failure_reasons_are_the_metrics_label_set() {
        let reasons: Vec<&str> = Failure::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(reasons, m::BOT_PROVIDER_FAILURE_REASONS);
    }

    #[test]
    fn the_prompt_lists_every_intent_and_none() {
        let p = system_prompt(&ids());
        for want in ["\"order_status\"", "\"refund\"", "\"greeting\"", "\"none\""] {
            assert!(p.contains(want), "{p}");
        }
    }
}
