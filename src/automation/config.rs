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
    /// `[automation.leads]`: the question flow for sales intents.
    #[serde(default)]
    pub leads: Option<LeadsConfig>,
    /// The bot also takes the first response of new and reopened conversations that routing
    /// places in a closed team (no open fallback), whatever `teams` says, and holds them until
    /// the team opens.
    #[serde(default)]
    pub after_hours: bool,
    /// What the bot says when it would hand over but the team is closed (the team's own
    /// `after_hours_reply` is said instead when it has one): a person follows at opening.
    #[serde(default = "default_closed_reply")]
    pub closed_reply: String,
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
    /// `cod_confirm`: POSTed (empty body) with `{order_id}` replaced when the customer presses
    /// Confirm; any 2xx is success.
    #[serde(default)]
    pub confirm_url: Option<String>,
    /// `cod_confirm`: POSTed when the customer presses Cancel.
    #[serde(default)]
    pub cancel_url: Option<String>,
    /// `cod_confirm`: the body of the button message; `{field}` placeholders take the order's
    /// fields (and `{order_id}` the id).
    #[serde(default = "default_confirm_question")]
    pub confirm_question: String,
    #[serde(default = "default_confirmed_answer")]
    pub confirmed_answer: String,
    #[serde(default = "default_cancelled_answer")]
    pub cancelled_answer: String,
    /// `cod_confirm` without an order id in the text: the bot asks for it with this.
    #[serde(default = "default_ask_order_id")]
    pub ask_order_id: String,
}

/// `[automation.leads]`: qualifying leads. For an intent of `intents` the bot asks the
/// `questions` in order, one per customer message, scores the answers by `scoring` and hands a
/// lead scoring at least `hot_threshold` to `team`; the others get `answer` and are resolved.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeadsConfig {
    #[serde(default = "default_lead_intents")]
    pub intents: Vec<String>,
    pub questions: Vec<LeadQuestion>,
    #[serde(default)]
    pub scoring: Vec<ScoringRule>,
    pub hot_threshold: i64,
    pub team: String,
    #[serde(default = "default_lead_answer")]
    pub answer: String,
}

/// One question of the lead flow.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeadQuestion {
    pub id: String,
    pub text: String,
}

/// `points` for the answer to `question` when it holds a number of at least `at_least` (`10k`
/// and `2m` read as thousands and millions), or when it contains one of `contains` (whole
/// words, case and accents folded). Exactly one of the two.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringRule {
    pub question: String,
    pub points: i64,
    #[serde(default)]
    pub at_least: Option<f64>,
    #[serde(default)]
    pub contains: Vec<String>,
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
fn default_closed_reply() -> String {
    "Our team is away right now; a person will continue this conversation as soon as we open."
        .into()
}
fn default_confirm_question() -> String {
    "Order {order_id}: do you confirm you will pay cash on delivery?".into()
}
fn default_confirmed_answer() -> String {
    "Thank you, order {order_id} is confirmed.".into()
}
fn default_cancelled_answer() -> String {
    "Order {order_id} is cancelled.".into()
}
fn default_ask_order_id() -> String {
    "Which order is it? Please send me its order number.".into()
}
fn default_lead_intents() -> Vec<String> {
    vec!["sales".into()]
}
fn default_lead_answer() -> String {
    "Thank you! Our plans and prices are on our website; write again any time.".into()
}

/// Most lead questions.
pub const MAX_LEAD_QUESTIONS: usize = super::memory::MAX_LEAD_ANSWERS;

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
                if a == "cod_confirm" {
                    let ok = self
                        .orders
                        .as_ref()
                        .is_some_and(|o| o.confirm_url.is_some() && o.cancel_url.is_some());
                    if !ok {
                        return err(
                            format!("intents[{i}].action"),
                            "needs [automation.orders] confirm_url and cancel_url",
                        );
                    }
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
            for (key, url) in [
                ("confirm_url", &o.confirm_url),
                ("cancel_url", &o.cancel_url),
            ] {
                if let Some(u) = url {
                    if !(u.starts_with("http://") || u.starts_with("https://")) {
                        return err(format!("orders.{key}"), "not an http(s) URL");
                    }
                    if !u.contains("{order_id}") {
                        return err(format!("orders.{key}"), "must contain {order_id}");
                    }
                }
            }
        }
        if self.closed_reply.trim().is_empty() {
            return err("closed_reply".into(), "must not be blank");
        }
        if let Some(l) = &self.leads {
            l.validate(&ids)
                .map_err(|(k, p)| (format!("leads.{k}"), p))?;
        }
        Ok(())
    }
}

impl LeadsConfig {
    fn validate(&self, intents: &std::collections::HashSet<&str>) -> Result<(), (String, String)> {
        let err = |k: String, p: &str| Err((k, p.to_string()));
        if self.intents.is_empty() {
            return err("intents".into(), "at least one intent is needed");
        }
        for (i, it) in self.intents.iter().enumerate() {
            if !intents.contains(it.as_str()) {
                return err(format!("intents[{i}]"), "unknown intent");
            }
        }
        if self.questions.is_empty() || self.questions.len() > MAX_LEAD_QUESTIONS {
            return err("questions".into(), "must have 1 to 16 questions");
        }
        let mut qs = std::collections::HashSet::new();
        for (i, q) in self.questions.iter().enumerate() {
            if q.id.trim().is_empty() || q.text.trim().is_empty() {
                return err(format!("questions[{i}]"), "id and text must not be blank");
            }
            if !qs.insert(q.id.as_str()) {
                return err(format!("questions[{i}].id"), "duplicate question id");
            }
        }
        for (i, r) in self.scoring.iter().enumerate() {
            if !qs.contains(r.question.as_str()) {
                return err(format!("scoring[{i}].question"), "unknown question");
            }
            let words = r.contains.iter().any(|w| !w.trim().is_empty());
            if r.at_least.is_some() == words {
                return err(
                    format!("scoring[{i}]"),
                    "give exactly one of at_least and contains",
                );
            }
        }
        if self.team.trim().is_empty() {
            return err("team".into(), "must not be blank");
        }
        if self.answer.trim().is_empty() {
            return err("answer".into(), "must not be blank");
        }
        Ok(())
    }
}
