//! Automation: the bot that answers a team's customers first and hands over to humans.
//!
//! This module decides what the bot does with one customer text ([`Automation::decide`]): it
//! needs no conversation state beyond what the caller passes, touches no storage and never
//! blocks an actor. The conversation actor runs it in a task of its own after the customer's
//! message is durable, and applies the resulting [`Turn`] in a later step, only if the
//! conversation is still with the bot and unchanged since (so a claim in between wins, and a
//! turn computed for an older state is dropped). What a turn does to the conversation —
//! replying through the outbox, handing over through routing, resolving — is the actor's.
//!
//! Decision order for a text:
//! 1. a hand-over keyword (`[automation.handover] keywords`, whole words) → hand over;
//! 2. a knowledge question at least `knowledge_min_score` similar (and at least as close as the
//!    best intent) → its answer;
//! 3. the classifier's intent below `min_confidence` → hand over;
//! 4. a sensitive intent, or one marked `handover` → hand over;
//! 5. `order_lookup` → the order id (the first run of 4–20 digits) is looked up at
//!    `[automation.orders] url`; the intent's `answer` is filled from the JSON object; no id →
//!    a turn without answer; a failed, slow (`timeout_ms`) or malformed lookup → hand over;
//!    `cod_confirm` → the order is fetched the same way and the customer gets an interactive
//!    message with Confirm / Cancel buttons (no id: the bot asks for it); see [`flows`];
//! 6. the intent's `answer` → that answer (and the conversation is resolved when the intent
//!    says `resolve = true`);
//! 7. otherwise a turn without answer (the caller counts them against `max_failed_turns`).
//!
//! Multi-turn flows (a cash-on-delivery confirmation waiting for its button, a lead's
//! questions) and the memory they need live in [`flows`] and [`memory`]: [`Automation::decide_in`]
//! is `decide` with the conversation's current [`memory::Flow`], answering the turn and the flow
//! to keep if the turn is applied.
//!
//! Providers ([`Provider`]): the built-in classifier ([`classifier`]), or an OpenAI-compatible
//! chat-completions server ([`provider`], `provider = "openai"`). The built-in one always
//! runs (it is cheap and needs no network): its confidence decides step 2 (so a knowledge
//! answer costs no call), and it decides the intent whenever the server fails — times out
//! (`timeout_ms`), errs, answers garbage or has `provider_max_in_flight` calls in flight
//! already. The server's intent counts as certain (confidence 1); its `none` is a
//! low-confidence hand-over. The call runs in the turn's task, so a slow server delays only
//! that turn, never the conversation actor or the webhook's answer.
//!
//! Bounds: at most [`MAX_IN_FLIGHT`] turns computed at once (beyond that a turn hands over at
//! once rather than queueing without limit); an order lookup takes at most `timeout_ms` and
//! reads at most [`MAX_ORDER_BODY`] bytes; a provider call takes at most the provider's
//! `timeout_ms`, reads at most [`provider::MAX_ANSWER_BODY`] bytes, and at most
//! `provider_max_in_flight` are in flight.

pub mod classifier;
pub mod config;
mod flows;
pub mod memory;
pub mod provider;

use std::sync::Arc;
use std::time::Duration;

use classifier::{normalize, Classified, Classifier, Knowledge};
pub use config::AutomationConfig;

/// Turns computed at the same time, across all conversations.
pub const MAX_IN_FLIGHT: usize = 256;
/// The largest order-service answer read.
pub const MAX_ORDER_BODY: usize = 64 * 1024;
/// The longest customer text quoted in a hand-over note.
const SUMMARY_CHARS: usize = 200;

/// Why the bot handed a conversation to humans (the `reason` label of the hand-over metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum HandoverReason {
    Keyword,
    LowConfidence,
    Sensitive,
    FailedTurns,
    OrderLookupFailed,
    /// The intent's action is not built (`cod_confirm`) or marked `handover`.
    IntentHandover,
    /// More turns in flight than [`MAX_IN_FLIGHT`].
    Busy,
    /// An agent claimed the conversation from the bot.
    Claimed,
    /// The customer-service window closed before the answer could go out.
    WindowClosed,
    // Variants are only ever appended: bincode stores the variant index (`memory::Waiting`).
    /// The business's endpoint refused or failed a cash-on-delivery confirm or cancel.
    CodFailed,
    /// A qualified lead scored at least `[automation.leads] hot_threshold`.
    HotLead,
    /// The bot held the conversation while its team was closed; the team opened.
    TeamOpened,
    /// A supervisor or an admin transferred the conversation out of the bot's hands.
    Transferred,
}

impl HandoverReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Keyword => "keyword",
            Self::LowConfidence => "low_confidence",
            Self::Sensitive => "sensitive_intent",
            Self::FailedTurns => "max_failed_turns",
            Self::OrderLookupFailed => "order_lookup_failed",
            Self::IntentHandover => "intent_handover",
            Self::Busy => "busy",
            Self::Claimed => "claimed",
            Self::WindowClosed => "window_closed",
            Self::CodFailed => "cod_confirm_failed",
            Self::HotLead => "hot_lead",
            Self::TeamOpened => "team_opened",
            Self::Transferred => "transferred",
        }
    }
}

/// What the bot does with one customer text.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    /// Reply `text`; then resolve the conversation when `resolve`.
    Answer {
        intent: Option<String>,
        order_id: Option<String>,
        text: String,
        resolve: bool,
    },
    /// Understood nothing it can answer: the caller counts a turn without progress and replies
    /// the fallback (or hands over once there were `max_failed_turns`).
    NoAnswer {
        intent: Option<String>,
        order_id: Option<String>,
    },
    HandOver {
        reason: HandoverReason,
        intent: Option<String>,
        order_id: Option<String>,
    },
    /// Send an interactive message (Meta's `interactive` object as JSON, its body text as
    /// `summary`): the cash-on-delivery Confirm / Cancel buttons.
    Buttons {
        intent: Option<String>,
        order_id: Option<String>,
        json: String,
        summary: String,
    },
    /// A lead answered every question: with `hot`, hand over to `[automation.leads] team`
    /// with the score and answers in the note; else answer `[automation.leads] answer` and
    /// resolve.
    Lead {
        intent: String,
        score: i64,
        answers: Vec<(String, String)>,
        hot: bool,
    },
}

/// Which classifier gives intents: the built-in one, or an OpenAI-compatible server with the
/// built-in one as its fallback.
enum Provider {
    Builtin(Classifier),
    OpenAi {
        remote: provider::OpenAi,
        fallback: Classifier,
    },
}

impl Provider {
    /// The built-in classifier (the only one, or the server's fallback).
    fn builtin(&self) -> &Classifier {
        match self {
            Self::Builtin(c) | Self::OpenAi { fallback: c, .. } => c,
        }
    }

    /// The intent for `text`: the server's when it answers, else the built-in one's (`builtin`).
    async fn classify(&self, text: &str, builtin: Option<Classified>) -> Option<Classified> {
        let Self::OpenAi { remote, .. } = self else {
            return builtin;
        };
        match remote.classify(text).await {
            Ok(provider::Answer::Intent(intent)) => Some(Classified {
                intent,
                confidence: 1.0,
            }),
            Ok(provider::Answer::NoIntent) => None,
            Err(_) => builtin,
        }
    }
}

/// The trained bot, shared by every conversation.
pub struct Automation {
    cfg: AutomationConfig,
    provider: Provider,
    knowledge: Knowledge,
    /// Hand-over keywords, normalised as texts are.
    keywords: Vec<String>,
    http: reqwest::Client,
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// The bot could not be built (its HTTP client).
#[derive(Debug, thiserror::Error)]
#[error("automation: {0}")]
pub struct BuildError(String);

/// Why an order lookup failed (logged, never shown to the customer).
#[derive(Debug, thiserror::Error)]
enum LookupError {
    #[error("request: {0}")]
    Request(#[from] reqwest::Error),
    #[error("order service answered {0}")]
    Status(u16),
    #[error("answer larger than {MAX_ORDER_BODY} bytes")]
    TooLarge,
    #[error("answer is not a JSON object")]
    NotObject,
    #[error("answer lacks field {0:?}")]
    MissingField(String),
}

impl Automation {
    /// Trains the classifier from the intents' examples and indexes the knowledge base.
    pub fn new(cfg: &AutomationConfig) -> Result<Self, BuildError> {
        let intents: Vec<(String, Vec<String>)> = cfg
            .intents
            .iter()
            .map(|i| (i.id.clone(), i.examples.clone()))
            .collect();
        let questions: Vec<&str> = cfg.knowledge.iter().map(|k| k.question.as_str()).collect();
        let timeout = Duration::from_millis(cfg.orders.as_ref().map_or(3_000, |o| o.timeout_ms));
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| BuildError(e.to_string()))?;
        let classifier = Classifier::train(&intents);
        let provider = match (cfg.provider.as_str(), &cfg.base_url, &cfg.model) {
            ("openai", Some(base_url), Some(model)) => Provider::OpenAi {
                remote: provider::OpenAi::new(
                    base_url,
                    model,
                    cfg.api_key.as_deref(),
                    Duration::from_millis(
                        cfg.timeout_ms
                            .unwrap_or(config::DEFAULT_PROVIDER_TIMEOUT_MS),
                    ),
                    cfg.provider_max_in_flight
                        .unwrap_or(config::DEFAULT_PROVIDER_MAX_IN_FLIGHT),
                    intents.iter().map(|(id, _)| id.clone()).collect(),
                )
                .map_err(|e| BuildError(e.to_string()))?,
                fallback: classifier,
            },
            // `validate` refuses "openai" without its keys.
            _ => Provider::Builtin(classifier),
        };
        Ok(Self {
            provider,
            knowledge: Knowledge::build(&questions),
            keywords: cfg
                .handover
                .keywords
                .iter()
                .map(|k| normalize(k))
                .filter(|k| !k.is_empty())
                .collect(),
            cfg: cfg.clone(),
            http,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// Whether the bot handles `team`'s new and reopened conversations.
    pub fn serves(&self, team: &str) -> bool {
        self.cfg.teams.iter().any(|t| t == team)
    }

    pub fn max_failed_turns(&self) -> u32 {
        self.cfg.handover.max_failed_turns
    }

    pub fn fallback(&self) -> &str {
        &self.cfg.fallback
    }

    /// The intent routing sees for the message that opens or reopens a conversation: the
    /// built-in classifier's, when at least `min_confidence` sure. No network and microseconds
    /// of work, so the conversation actor may ask it in its own step (the provider is never
    /// asked here: the actor must not wait on a network call). Whether the team has the bot
    /// does not matter: routing runs before the team is known.
    pub fn routing_intent(&self, text: &str) -> Option<String> {
        self.provider
            .builtin()
            .classify(text)
            .filter(|c| c.confidence >= self.cfg.handover.min_confidence)
            .map(|c| c.intent)
    }

    /// Decides the bot's turn for a customer's `text`.
    pub async fn decide(&self, text: &str) -> Turn {
        // Bounded: a burst beyond the bound goes to humans instead of waiting in memory.
        let Ok(_permit) = self.in_flight.clone().try_acquire_owned() else {
            return Turn::HandOver {
                reason: HandoverReason::Busy,
                intent: None,
                order_id: order_id(text),
            };
        };
        self.decide_now(text).await
    }

    async fn decide_now(&self, text: &str) -> Turn {
        let order_id = order_id(text);
        let hand_over = |reason, intent: Option<&str>| Turn::HandOver {
            reason,
            intent: intent.map(str::to_string),
            order_id: order_id.clone(),
        };
        if self.asks_for_human(text) {
            return hand_over(HandoverReason::Keyword, None);
        }
        let builtin = self.provider.builtin().classify(text);
        let confidence = builtin.as_ref().map_or(0.0, |c| c.confidence);
        if let Some((i, score)) = self.knowledge.best(text) {
            if score >= self.cfg.knowledge_min_score && score >= confidence {
                return Turn::Answer {
                    intent: Some("knowledge".into()),
                    order_id: order_id.clone(),
                    text: self.cfg.knowledge[i].answer.clone(),
                    resolve: false,
                };
            }
        }
        let classified = self.provider.classify(text, builtin).await;
        let Some(c) = classified.filter(|c| c.confidence >= self.cfg.handover.min_confidence)
        else {
            return hand_over(HandoverReason::LowConfidence, None);
        };
        let Some(intent) = self.cfg.intents.iter().find(|i| i.id == c.intent) else {
            return hand_over(HandoverReason::LowConfidence, None);
        };
        let id = Some(intent.id.as_str());
        if self.cfg.handover.sensitive_intents.contains(&intent.id) {
            return hand_over(HandoverReason::Sensitive, id);
        }
        if intent.handover {
            return hand_over(HandoverReason::IntentHandover, id);
        }
        match intent.action.as_deref() {
            Some("order_lookup") => {
                let Some(order) = &order_id else {
                    return Turn::NoAnswer {
                        intent: id.map(str::to_string),
                        order_id: None,
                    };
                };
                let template = intent
                    .answer
                    .as_deref()
                    .or(self.cfg.orders.as_ref().and_then(|o| o.answer.as_deref()))
                    .unwrap_or_default();
                match self.lookup(order, template).await {
                    Ok(text) => Turn::Answer {
                        intent: id.map(str::to_string),
                        order_id: order_id.clone(),
                        text,
                        resolve: intent.resolve,
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "order lookup failed; handing over");
                        hand_over(HandoverReason::OrderLookupFailed, id)
                    }
                }
            }
            Some("cod_confirm") => match &order_id {
                Some(order) => self.cod_start(intent, order).await,
                None => Turn::NoAnswer {
                    intent: id.map(str::to_string),
                    order_id: None,
                },
            },
            Some(_) => hand_over(HandoverReason::IntentHandover, id),
            None => match &intent.answer {
                Some(a) => Turn::Answer {
                    intent: id.map(str::to_string),
                    order_id: order_id.clone(),
                    text: a.clone(),
                    resolve: intent.resolve,
                },
                None => Turn::NoAnswer {
                    intent: id.map(str::to_string),
                    order_id: order_id.clone(),
                },
            },
        }
    }

    /// Whether the text holds a hand-over keyword as whole words.
    fn asks_for_human(&self, text: &str) -> bool {
        let t = format!(" {} ", normalize(text));
        self.keywords.iter().any(|k| t.contains(&format!(" {k} ")))
    }

    /// GETs the order and fills `template` from its fields.
    async fn lookup(&self, order_id: &str, template: &str) -> Result<String, LookupError> {
        fill(template, &self.fetch_order(order_id).await?)
    }

    /// GETs the order: its JSON object, with `order_id` set to the id asked for when the
    /// object has no such field.
    async fn fetch_order(
        &self,
        order_id: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, LookupError> {
        let Some(orders) = &self.cfg.orders else {
            return Err(LookupError::NotObject);
        };
        // The id is digits only (see `order_id`), so it needs no escaping in the URL.
        let url = orders.url.replace("{order_id}", order_id);
        let mut resp = self.http.get(url).send().await?;
        if !resp.status().is_success() {
            return Err(LookupError::Status(resp.status().as_u16()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            if body.len() + chunk.len() > MAX_ORDER_BODY {
                return Err(LookupError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        let serde_json::Value::Object(mut fields) =
            serde_json::from_slice(&body).map_err(|_| LookupError::NotObject)?
        else {
            return Err(LookupError::NotObject);
        };
        fields
            .entry("order_id")
            .or_insert_with(|| serde_json::Value::String(order_id.to_string()));
        Ok(fields)
    }
}

/// The order id in a text: its first run of 4 to 20 ASCII digits.
pub fn order_id(text: &str) -> Option<String> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|run| (4..=20).contains(&run.len()))
        .map(str::to_string)
}

/// Replaces each `{field}` of `template` with that field of the object (strings as they are,
/// other values as JSON); a placeholder naming no field fails, so a broken text is never sent.
fn fill(
    template: &str,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, LookupError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let name = &after[..close];
        match fields.get(name) {
            Some(serde_json::Value::String(s)) => out.push_str(s),
            Some(v) => out.push_str(&v.to_string()),
            None => return Err(LookupError::MissingField(name.to_string())),
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The hand-over note the bot leaves for the humans: reason, intent, extracted fields and a
/// short summary of what the customer wrote, so the customer need not repeat it.
pub fn handover_note(
    reason: HandoverReason,
    intent: Option<&str>,
    order_id: Option<&str>,
    bot_turns: u32,
    last_text: &str,
) -> String {
    let mut quoted: String = last_text.chars().take(SUMMARY_CHARS).collect();
    if last_text.chars().count() > SUMMARY_CHARS {
        quoted.push('…');
    }
    let mut note = format!(
        "Hand-over from the bot ({}).\nIntent: {}\n",
        reason.as_str(),
        intent.unwrap_or("unknown")
    );
    if let Some(o) = order_id {
        note.push_str(&format!("Order id: {o}\n"));
    }
    note.push_str(&format!(
        "Summary: {bot_turns} customer message(s) handled by the bot; last: \"{quoted}\""
    ));
    note
}

#[cfg(test)]
mod tests;
