//! `[automation]`: the bot's configuration as the config file spells it (see the section
//! "Automation" of the contract), and its validation.
//!
//! Invariants once [`AutomationConfig::validate`] passed: every intent has an id (unique) and
//! at least one example; `order_lookup` intents have an `answer` and `[automation.orders]` a URL
//! with `{order_id}`; thresholds are within 0..=1; every bound is positive. The crate's config
//! module checks the team names against `[[teams]]`.

use serde::Deserialize;

/// `[automation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutomationConfig {
    /// The teams whose new and reopened conversations the bot handles first.
    #[serde(default)]
    pub teams: Vec<String>,
    /// Which intent classifier: `"builtin"` (no network) or `"openai"` (an OpenAI-compatible
    /// chat-completions server, falling back to the built-in one; `automation::provider`).
    #[serde(default = "default_provider")]
    pub provider: String,
    /// `openai`: the server's base URL, `POST {base_url}/chat/completions` (required).
    #[serde(default)]
    pub base_url: Option<String>,
    /// `openai`: the model asked (required).
    #[serde(default)]
    pub model: Option<String>,
    /// `openai`: sent as `Authorization: Bearer …` when set (local servers need none).
    #[serde(default)]
    pub api_key: Option<String>,
    /// `openai`: bound on one call (default [`DEFAULT_PROVIDER_TIMEOUT_MS`]); slower, the
    /// built-in classifier decides.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// `openai`: calls in flight at once, across conversations (default
    /// [`DEFAULT_PROVIDER_MAX_IN_FLIGHT`]); a turn beyond it does not call and the built-in
    /// classifier decides at once.
    #[serde(default)]
    pub provider_max_in_flight: Option<usize>,
    /// A knowledge answer is given only when the customer's text is at least this similar
    /// (cosine, 0..1) to its question.
    #[serde(default = "default_knowledge_min_score")]
    pub knowledge_min_score: f32,
    /// What the bot says when it understood the intent but has nothing to answer with (a turn
    /// without progress, counted against `max_failed_turns`).
    #[serde(default = "default_fallback")]
    pub fallback: String,
    #[serde(default)]
    pub intents: Vec<IntentConfig>,
    #[serde(default)]
    pub knowledge: Vec<KnowledgeConfig>,
    #[serde(default)]
    pub handover: HandoverConfig,
    #[serde(default)]
    pub orders: Option<OrdersConfig>,
}

/// `[[automation.intents]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentConfig {
    pub id: String,
    pub examples: Vec<String>,
    /// The reply (for `order_lookup`: the template filled from the order service's fields).
    #[serde(default)]
    pub answer: Option<String>,
    /// `order_lookup` or `cod_confirm` (the latter hands over until it is built).
    #[serde(default)]
    pub action: Option<String>,
    /// Always hand over this intent to a human.
    #[serde(default)]
    pub handover: bool,
    /// After answering, the bot resolves the conversation (e.g. a "thanks, bye" intent).
    #[serde(default)]
    pub resolve: bool,
}

/// `[[automation.knowledge]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeConfig {
    pub question: String,
    pub answer: String,
}

/// `[automation.handover]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoverConfig {
    /// Below this classifier confidence (cosine, 0..1) the bot hands over.
    #[serde(default = "default_min_confidence")]
    pub min_confidence: f32,
    /// Words or phrases asking for a human, in any language; matched on whole words after the
    /// same normalisation as the classifier's (case and accents folded).
    #[serde(default = "default_keywords")]
    pub keywords: Vec<String>,
    /// Consecutive turns the bot could not answer before it hands over.
    #[serde(default = "default_max_failed_turns")]
    pub max_failed_turns: u32,
    /// Intents always handed over (complaints, legal, …).
    #[serde(default)]
    pub sensitive_intents: Vec<String>,
}

impl Default for HandoverConfig {
    fn default() -> Self {
        Self {
            min_confidence: default_min_confidence(),
            keywords: default_keywords(),
            max_failed_turns: default_max_failed_turns(),
            sensitive_intents: Vec::new(),
        }
    }
}

/// `[automation.orders]`: the business's own order service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrdersConfig {
    /// GET, with `{order_id}` replaced by the digits taken from the message; answers a JSON
    /// object.
    pub url: String,
    /// Default answer for `order_lookup` intents that set none; `{field}` placeholders take the
    /// object's fields.
    #[serde(default)]
    pub answer: Option<String>,
    /// Bound on one lookup (connect and answer); a lookup that takes longer hands over.
    #[serde(default = "default_orders_timeout_ms")]
    pub timeout_ms: u64,
}

/// `timeout_ms` when the config sets none.
pub const DEFAULT_PROVIDER_TIMEOUT_MS: u64 = 2_000;
/// `provider_max_in_flight` when the config sets none.
pub const DEFAULT_PROVIDER_MAX_IN_FLIGHT: usize = 16;

fn default_provider() -> String {
    "builtin".into()
}
fn default_knowledge_min_score() -> f32 {
    0.5
}
fn default_fallback() -> String {
    "Sorry, I did not get that. Could you say it another way (with your order number if it is about an order)?".into()
}
fn default_min_confidence() -> f32 {
    0.3
}
fn default_keywords() -> Vec<String> {
    [
        "human",
        "agent",
        "person",
        "operator",
        "humano",
        "persona",
        "agente",
        "humain",
        "conseiller",
        "mensch",
        "mitarbeiter",
        "atendente",
        "pessoa",
    ]
    .map(String::from)
    .to_vec()
}
fn default_max_failed_turns() -> u32 {
    2
}
fn default_orders_timeout_ms() -> u64 {
    3_000
}

/// The actions an intent may name.
pub const ACTIONS: [&str; 2] = ["order_lookup", "cod_confirm"];

impl AutomationConfig {
    /// Checks what serde cannot; answers the offending key (below `automation.`) and the problem.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |k: String, p: &str| Err((k, p.to_string()));
        match self.provider.as_str() {
            "builtin" => {}
            "openai" => {
                match self.base_url.as_deref().map(str::trim) {
                    None | Some("") => {
                        return err("base_url".into(), "required with provider = \"openai\"")
                    }
                    Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                        return err("base_url".into(), "not an http(s) URL")
                    }
                    Some(_) => {}
                }
                if self.model.as_deref().is_none_or(|m| m.trim().is_empty()) {
                    return err("model".into(), "required with provider = \"openai\"");
                }
            }
            _ => return err("provider".into(), "must be \"builtin\" or \"openai\""),
        }
        if self.timeout_ms == Some(0) {
            return err("timeout_ms".into(), "must be greater than 0");
        }
        if self.provider_max_in_flight == Some(0) {
            return err("provider_max_in_flight".into(), "must be greater than 0");
        }
        if !(0.0..=1.0).contains(&self.knowledge_min_score) {
            return err("knowledge_min_score".into(), "must be within 0..1");
        }
        if !(0.0..=1.0).contains(&self.handover.min_confidence) {
            return err("handover.min_confidence".into(), "must be within 0..1");
        }
        if self.handover.max_failed_turns == 0 {
            return err("handover.max_failed_turns".into(), "must be greater than 0");
        }
        if self.fallback.trim().is_empty() {
            return err("fallback".into(), "must not be blank");
        }
        if self.intents.is_empty() {
            return err("intents".into(), "at least one intent is needed");
        }
        let mut ids = std::collections::HashSet::new();
        for (i, it) in self.intents.iter().enumerate() {
            if it.id.trim().is_empty() {
                return err(format!("intents[{i}].id"), "must not be blank");
            }
            if !ids.insert(it.id.as_str()) {
                return err(format!("intents[{i}].id"), "duplicate intent id");
            }
            if it.examples.iter().all(|e| e.trim().is_empty()) {
                return err(
                    format!("intents[{i}].examples"),
                    "at least one example is needed",
                );
            }
            if let Some(a) = &it.action {
                if !ACTIONS.contains(&a.as_str()) {
                    return err(
                        format!("intents[{i}].action"),
                        "must be \"order_lookup\" or \"cod_confirm\"",
                    );
                }
                if a == "order_lookup" {
                    let Some(o) = &self.orders else {
                        return err(format!("intents[{i}].action"), "needs [automation.orders]");
                    };
                    if it.answer.is_none() && o.answer.is_none() {
                        return err(format!("intents[{i}].answer"), "needed for order_lookup");
                    }
                }
            }
        }
        for (i, s) in self.handover.sensitive_intents.iter().enumerate() {
            if !ids.contains(s.as_str()) {
                return err(format!("handover.sensitive_intents[{i}]"), "unknown intent");
            }
        }
        for (i, k) in self.knowledge.iter().enumerate() {
            if k.question.trim().is_empty() || k.answer.trim().is_empty() {
                return err(
                    format!("knowledge[{i}]"),
                    "question and answer must not be blank",
                );
            }
        }
        if let Some(o) = &self.orders {
            if !(o.url.starts_with("http://") || o.url.starts_with("https://")) {
                return err("orders.url".into(), "not an http(s) URL");
            }
            if !o.url.contains("{order_id}") {
                return err("orders.url".into(), "must contain {order_id}");
            }
            if o.timeout_ms == 0 {
                return err("orders.timeout_ms".into(), "must be greater than 0");
            }
        }
        Ok(())
    }
}
