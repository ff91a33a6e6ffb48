//! Meta's template management API for one WhatsApp Business Account: create
//! (`POST {graph}/{waba_id}/message_templates`) and list (`GET` on the same path, paged).
//!
//! Errors are typed ([`GraphError`]): Meta's refusal of a request (4xx with its error object)
//! is told from Meta being unreachable or failing (transport errors, 5xx), so the API answers
//! the first as the caller's mistake and the second as "try again". Listing follows Meta's
//! `paging.next` for at most [`MAX_PAGES`] pages.

use std::time::Duration;

use serde_json::{json, Value};

/// Pages read per listing, [`PAGE_SIZE`] templates each: 10 000 templates, above Meta's cap
/// per account (6 000), so the bound only stops a paging loop that never ends.
pub const MAX_PAGES: usize = 100;
/// Templates asked for per page.
pub const PAGE_SIZE: usize = 100;

/// The fields a listing asks for: what the registry keeps.
const FIELDS: &str = "id,name,language,status,category,components,quality_score";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// Meta answered and refused (its message, for the caller).
    #[error("refused by Meta ({code}): {message}")]
    Refused { code: i64, message: String },
    /// No usable answer: Meta unreachable, a timeout, a 5xx or a body not in Meta's shape.
    #[error("Graph API unavailable: {0}")]
    Unavailable(String),
}

/// What Meta answered to a creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub id: String,
    pub status: String,
    pub category: Option<String>,
}

#[derive(Clone)]
pub struct TemplateGraph {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl TemplateGraph {
    pub fn new(base: &str, token: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    /// Submits a template for review.
    pub async fn create(
        &self,
        waba_id: &str,
        name: &str,
        language: &str,
        category: &str,
        components: &Value,
    ) -> Result<Created, GraphError> {
        let url = format!("{}/{}/message_templates", self.base, waba_id);
        let body = json!({
            "name": name,
            "language": language,
            "category": category,
            "components": components,
        });
        let answer = self.call(self.http.post(url).json(&body)).await?;
        let id = match &answer["id"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => {
                return Err(GraphError::Unavailable(
                    "creation answered without an id".into(),
                ))
            }
        };
        Ok(Created {
            id,
            status: answer["status"].as_str().unwrap_or("PENDING").to_string(),
            category: answer["category"].as_str().map(str::to_string),
        })
    }

    /// Every template of the account, as Meta describes them.
    pub async fn list(&self, waba_id: &str) -> Result<Vec<Value>, GraphError> {
        let mut out = Vec::new();
        let first = format!(
            "{}/{}/message_templates?limit={PAGE_SIZE}&fields={FIELDS}",
            self.base, waba_id
        );
        let mut next = Some(first);
        for _ in 0..MAX_PAGES {
            let Some(url) = next.take() else { break };
            let mut page = self.call(self.http.get(url)).await?;
            match page.get_mut("data").map(Value::take) {
                Some(Value::Array(items)) => out.extend(items),
                _ => return Err(GraphError::Unavailable("listing without data".into())),
            }
            next = page
                .pointer("/paging/next")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        if next.is_some() {
            tracing::warn!(pages = MAX_PAGES, "template listing cut at its page bound");
        }
        Ok(out)
    }

    async fn call(&self, req: reqwest::RequestBuilder) -> Result<Value, GraphError> {
        let resp = req
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| GraphError::Unavailable(format!("request: {e}")))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| GraphError::Unavailable(format!("reading answer: {e}")))?;
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return parsed.ok_or_else(|| GraphError::Unavailable("answer is not JSON".into()));
        }
        let err = parsed.as_ref().and_then(|v| v.get("error"));
        match err {
            Some(e) if status.is_client_error() && status.as_u16() != 429 => {
                let message = e
                    .get("error_user_msg")
                    .or_else(|| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("refused")
                    .to_string();
                Err(GraphError::Refused {
                    code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                    message,
                })
            }
            _ => Err(GraphError::Unavailable(format!("HTTP {status}"))),
        }
    }
}
