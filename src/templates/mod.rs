//! The template registry: the business's message templates, their status, quality and category
//! as Meta last said, and each one's history of statuses.
//!
//! Templates are created here (submitted to Meta, see [`graph`]) or found by the sync; their
//! status, quality and category follow the three template webhooks ([`Registry::apply_change`])
//! and a periodic listing from Meta ([`Registry::sync`], at start-up and every
//! `whatsapp.template_sync_interval_secs`). A template is known by (name, language), as Meta
//! knows it. A send is resolved here ([`Registry::prepare_send`]: language fallback, approval,
//! parameter count) before anything is stored; Meta's refusal of a send updates the template
//! ([`Registry::on_send_error`]). Customers' marketing preferences (`user_preferences`) are
//! kept here too, since they decide which templates may reach whom.
//!
//! Invariants:
//! - storage first: a change is in memory only once it is durable, so a read never shows what a
//!   restart would lose;
//! - changes are serialized by the registry's write lock (a tokio mutex, held across the
//!   commit but never across a Graph call), so a webhook and a sync never both read a record
//!   and write back an older one; reads take the in-memory maps' locks only briefly, never
//!   across an `.await`;
//! - the history records changes only (a redelivered webhook or a sync that finds the same
//!   status adds nothing) and is bounded (`store::templates::MAX_HISTORY`).

pub mod graph;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::clock::SharedClock;
use crate::domain::Millis;
use crate::metrics as m;
use crate::store::templates::{MarketingPreference, TemplateRecord};
use crate::store::{Batch, Store, StoreError};
pub use graph::{GraphError, TemplateGraph};

/// The webhook fields that change a template.
pub const TEMPLATE_FIELDS: [&str; 3] = [
    "message_template_status_update",
    "message_template_quality_update",
    "template_category_update",
];

/// The categories Meta takes.
pub const CATEGORIES: [&str; 3] = ["MARKETING", "UTILITY", "AUTHENTICATION"];

/// Longest template name Meta takes.
pub const MAX_NAME_LEN: usize = 512;
/// Longest language code taken (Meta's codes are at most `xx_XX`-like; this leaves room).
pub const MAX_LANGUAGE_LEN: usize = 16;
/// Most components one template may have (Meta's are header, body, footer, buttons).
pub const MAX_COMPONENTS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The request is not a template Meta could take (the message says why).
    #[error("{0}")]
    Invalid(String),
    /// A template by that name and language is already registered.
    #[error("template {name} ({language}) already exists")]
    AlreadyExists { name: String, language: String },
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What an admin submits.
#[derive(Debug, Clone)]
pub struct NewTemplate {
    pub name: String,
    pub language: String,
    pub category: String,
    pub components: Value,
}

type Key = (String, String);

pub struct Registry {
    store: Store,
    graph: TemplateGraph,
    waba_id: String,
    clock: SharedClock,
    entries: parking_lot::RwLock<BTreeMap<Key, TemplateRecord>>,
    /// Marketing preferences by (number, customer phone or user id).
    marketing: parking_lot::RwLock<HashMap<Key, MarketingPreference>>,
    write: tokio::sync::Mutex<()>,
    /// A sync asked for by a send error is queued (one at a time: see [`Self::on_send_error`]).
    resync: std::sync::atomic::AtomicBool,
}

impl Registry {
    /// The registry as storage holds it.
    pub async fn load(
        store: Store,
        graph: TemplateGraph,
        waba_id: &str,
        clock: SharedClock,
    ) -> Result<Self, StoreError> {
        let entries = store
            .templates()
            .await?
            .into_iter()
            .map(|t| ((t.name.clone(), t.language.clone()), t))
            .collect();
        let marketing = store
            .marketing_preferences()
            .await?
            .into_iter()
            .map(|(number, customer, p)| ((number, customer), p))
            .collect();
        Ok(Self {
            marketing: parking_lot::RwLock::new(marketing),
            store,
            graph,
            waba_id: waba_id.to_string(),
            clock,
            entries: parking_lot::RwLock::new(entries),
            write: tokio::sync::Mutex::new(()),
            resync: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Every template, by name then language.
    pub fn list(&self) -> Vec<TemplateRecord> {
        self.entries.read().values().cloned().collect()
    }

    /// The template `name` in `language`, if registered.
    pub fn get(&self, name: &str, language: &str) -> Option<TemplateRecord> {
        self.entries
            .read()
            .get(&(name.to_string(), language.to_string()))
            .cloned()
    }

    /// Checks `t`, submits it to Meta and registers it with Meta's id and status.
    pub async fn create(&self, t: NewTemplate) -> Result<TemplateRecord, TemplateError> {
        let created = self.submit(&t).await?;
        Ok(self.register(t, created, Batch::new()).await?)
    }

    /// Checks `t` and submits it to Meta (nothing is stored yet: see [`Self::register`]).
    pub async fn submit(&self, t: &NewTemplate) -> Result<graph::Created, TemplateError> {
        validate(t)?;
        if self.get(&t.name, &t.language).is_some() {
            return Err(TemplateError::AlreadyExists {
                name: t.name.clone(),
                language: t.language.clone(),
            });
        }
        Ok(self
            .graph
            .create(
                &self.waba_id,
                &t.name,
                &t.language,
                &t.category,
                &t.components,
            )
            .await?)
    }

    /// Registers `t` as Meta `created` it, committed with what `batch` holds already (the
    /// admin change's audit record), so both are durable or neither is.
    pub async fn register(
        &self,
        t: NewTemplate,
        created: graph::Created,
        batch: Batch,
    ) -> Result<TemplateRecord, StoreError> {
        let _w = self.write.lock().await;
        let now = self.now();
        // A webhook about it may have come while Meta answered: what it said is newer.
        let rec = match self.get(&t.name, &t.language) {
            Some(mut known) => {
                if known.id.is_empty() {
                    known.id = created.id;
                }
                if known.components_json == "[]" {
                    known.components_json = t.components.to_string();
                }
                if known.category.is_empty() {
                    known.category = created.category.unwrap_or(t.category);
                }
                known
            }
            None => {
                let mut rec = TemplateRecord {
                    id: created.id,
                    name: t.name,
                    language: t.language,
                    category: created.category.unwrap_or(t.category),
                    status: String::new(),
                    quality: String::new(),
                    components_json: t.components.to_string(),
                    history: Vec::new(),
                    updated_at: now,
                };
                rec.set_status(&created.status, "created", now);
                rec
            }
        };
        self.commit_with(vec![rec.clone()], batch).await?;
        Ok(rec)
    }

    /// Applies a template webhook change (`field` one of [`TEMPLATE_FIELDS`], `raw` the change
    /// as Meta sent it, `{"field", "value"}`). A change naming a template the registry does not
    /// hold registers it with what the change says (the next sync adds its components); one
    /// without a name and language is ignored (it stays kept verbatim).
    pub async fn apply_change(&self, field: &str, raw: &str) -> Result<(), StoreError> {
        let Ok(change) = serde_json::from_str::<Value>(raw) else {
            return Ok(());
        };
        let v = &change["value"];
        let id = match &v["message_template_id"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => String::new(),
        };
        let (Some(name), Some(language)) = (
            v["message_template_name"].as_str(),
            v["message_template_language"].as_str(),
        ) else {
            return Ok(());
        };
        let _w = self.write.lock().await;
        let now = self.now();
        let known = self.find(&id, name, language);
        let mut rec = known
            .clone()
            .unwrap_or_else(|| TemplateRecord::unknown(id.clone(), name, language, now));
        if rec.id.is_empty() {
            rec.id = id;
        }
        match field {
            "message_template_status_update" => {
                if let Some(event) = v["event"].as_str() {
                    // Meta reinstates a paused or flagged template as approved.
                    let status = if event == "REINSTATED" {
                        "APPROVED"
                    } else {
                        event
                    };
                    let reason = v["reason"].as_str().unwrap_or("");
                    rec.set_status(status, reason, now);
                }
                if let Some(c) = v["message_template_category"].as_str() {
                    rec.category = c.to_string();
                }
            }
            "message_template_quality_update" => {
                if let Some(q) = v["new_quality_score"].as_str() {
                    rec.quality = q.to_string();
                }
            }
            "template_category_update" => {
                if let Some(c) = v["new_category"].as_str() {
                    rec.category = c.to_string();
                }
            }
            _ => return Ok(()),
        }
        if known.as_ref() == Some(&rec) {
            return Ok(());
        }
        rec.updated_at = now;
        self.commit(vec![rec]).await
    }

    /// Reads every template from Meta and brings the registry up to date: new ones registered,
    /// known ones' status, quality, category and components replaced by Meta's. A template
    /// the listing no longer names is kept as it is (Meta deleted it, or the listing was cut),
    /// and so is one a webhook changed while the listing was on its way: the webhook is newer.
    pub async fn sync(&self) -> Result<usize, TemplateError> {
        let started = self.now();
        let listed = self.graph.list(&self.waba_id).await?;
        let _w = self.write.lock().await;
        let now = self.now();
        let mut changed = Vec::new();
        for t in &listed {
            let (Some(name), Some(language)) = (t["name"].as_str(), t["language"].as_str()) else {
                continue;
            };
            let id = match &t["id"] {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            let known = self.find(&id, name, language);
            if known.as_ref().is_some_and(|k| k.updated_at >= started) {
                continue;
            }
            let mut rec = known
                .clone()
                .unwrap_or_else(|| TemplateRecord::unknown(id.clone(), name, language, now));
            if !id.is_empty() {
                rec.id = id;
            }
            if let Some(s) = t["status"].as_str() {
                rec.set_status(s, "sync", now);
            }
            if let Some(c) = t["category"].as_str() {
                rec.category = c.to_string();
            }
            if let Some(q) = t.pointer("/quality_score/score").and_then(Value::as_str) {
                rec.quality = q.to_string();
            }
            if let Some(c @ Value::Array(_)) = t.get("components") {
                rec.components_json = c.to_string();
            }
            if known.as_ref() != Some(&rec) {
                rec.updated_at = now;
                changed.push(rec);
            }
        }
        let n = changed.len();
        self.commit(changed).await?;
        Ok(n)
    }

    /// Whether the customer known on `number` by any of `ids` (phone, user id) stopped
    /// marketing messages.
    pub fn marketing_stopped(&self, number: &str, ids: &[&str]) -> bool {
        let prefs = self.marketing.read();
        ids.iter().any(|id| {
            prefs
                .get(&(number.to_string(), id.to_string()))
                .is_some_and(|p| p.stopped)
        })
    }

    /// Applies a `user_preferences` change (`raw`: `{"field", "value"}` as Meta sent it): each
    /// `marketing_messages` `stop` / `resume` of a customer on the number the change names,
    /// unless a later one is kept already.
    pub async fn apply_preferences(&self, raw: &str) -> Result<(), StoreError> {
        let Ok(change) = serde_json::from_str::<Value>(raw) else {
            return Ok(());
        };
        let v = &change["value"];
        let Some(number) = v
            .pointer("/metadata/phone_number_id")
            .and_then(Value::as_str)
        else {
            return Ok(());
        };
        let _w = self.write.lock().await;
        let mut batch = Batch::new();
        let mut applied = Vec::new();
        for p in v["user_preferences"].as_array().into_iter().flatten() {
            if p["category"].as_str() != Some("marketing_messages") {
                continue;
            }
            let stopped = match p["value"].as_str() {
                Some("stop") => true,
                Some("resume") => false,
                _ => continue,
            };
            let at = match &p["timestamp"] {
                Value::Number(n) => n.as_i64().unwrap_or(0),
                Value::String(s) => s.parse().unwrap_or(0),
                _ => 0,
            };
            let pref = MarketingPreference { stopped, at };
            for key in ["wa_id", "user_id"] {
                let Some(id) = p[key].as_str().filter(|id| !id.is_empty()) else {
                    continue;
                };
                let k = (number.to_string(), id.to_string());
                let newer = self.marketing.read().get(&k).is_none_or(|old| old.at <= at);
                if newer {
                    batch.put_marketing_preference(number, id, &pref)?;
                    applied.push((k, pref));
                }
            }
        }
        if applied.is_empty() {
            return Ok(());
        }
        self.store.commit(batch).await?;
        let mut prefs = self.marketing.write();
        for (k, p) in applied {
            prefs.insert(k, p);
        }
        Ok(())
    }

    /// Takes in Meta's refusal of a send of template `name` (`language`) with error `code`:
    /// 132015 pauses it, 132016 disables it; 132000, 132001 and 132012 (the registry's copy
    /// differs from Meta's) start a sync, at most one queued at a time. Other codes change
    /// nothing. Idempotent (the outbox may report an outcome twice).
    pub async fn on_send_error(
        self: &Arc<Self>,
        name: &str,
        language: &str,
        code: i64,
    ) -> Result<(), StoreError> {
        let status = match code {
            132015 => "PAUSED",
            132016 => "DISABLED",
            132000 | 132001 | 132012 => {
                if !self.resync.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.resync
                            .store(false, std::sync::atomic::Ordering::Release);
                        if let Err(e) = this.sync().await {
                            tracing::warn!(error = %e, "template sync after a send error failed");
                        }
                    });
                }
                return Ok(());
            }
            _ => return Ok(()),
        };
        let _w = self.write.lock().await;
        let Some(mut rec) = self.get(name, language) else {
            return Ok(());
        };
        if rec.status == status {
            return Ok(());
        }
        let now = self.now();
        rec.set_status(status, &format!("send refused ({code})"), now);
        rec.updated_at = now;
        self.commit(vec![rec]).await
    }

    /// The record for Meta's `id`, else for (name, language).
    fn find(&self, id: &str, name: &str, language: &str) -> Option<TemplateRecord> {
        let entries = self.entries.read();
        if let Some(t) = entries.get(&(name.to_string(), language.to_string())) {
            return Some(t.clone());
        }
        if id.is_empty() {
            return None;
        }
        entries.values().find(|t| t.id == id).cloned()
    }

    /// Makes `records` durable, then shows them.
    async fn commit(&self, records: Vec<TemplateRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.commit_with(records, Batch::new()).await
    }

    /// [`Self::commit`] with `batch`'s other changes in the same commit.
    async fn commit_with(
        &self,
        records: Vec<TemplateRecord>,
        mut batch: Batch,
    ) -> Result<(), StoreError> {
        for r in &records {
            batch.put_template(r)?;
        }
        self.store.commit(batch).await?;
        let mut entries = self.entries.write();
        for r in records {
            entries.insert((r.name.clone(), r.language.clone()), r);
        }
        Ok(())
    }
}

/// A template send as the registry resolved it: which variant, and Meta's send components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedSend {
    pub name: String,
    /// The variant chosen (see [`Registry::prepare_send`] for the fallback).
    pub language: String,
    /// `MARKETING`, `UTILITY` or `AUTHENTICATION`, as Meta last said.
    pub category: String,
    /// Meta's `template.components` for the send (JSON array; empty without parameters).
    pub components_json: String,
    /// The body with its parameters filled in: the message's text as agents see it.
    pub summary: String,
}

/// Why a template cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendRefusal {
    /// Unknown template, or parameters that do not fit its body.
    #[error("{0}")]
    Invalid(String),
    /// No variant of it is `APPROVED`.
    #[error("{0}")]
    NotApproved(String),
}

/// Longest parameter taken, in characters (Meta's body is at most 1 024 characters).
pub const MAX_PARAMETER_CHARS: usize = 1024;

impl Registry {
    /// Resolves a send of template `name` in `language` with the body's `parameters`: the
    /// variant is the exact language if approved, else an approved variant of the same
    /// language (`en` for `en_US`, `en_GB` for `en_US`), else the first approved one; the
    /// parameters must fill the chosen body's `{{1}}`…`{{n}}` exactly.
    pub fn prepare_send(
        &self,
        name: &str,
        language: &str,
        parameters: &[String],
    ) -> Result<PreparedSend, SendRefusal> {
        let variants: Vec<TemplateRecord> = self
            .entries
            .read()
            .values()
            .filter(|t| t.name == name)
            .cloned()
            .collect();
        if variants.is_empty() {
            return Err(SendRefusal::Invalid(format!("no template named {name:?}")));
        }
        let approved = |t: &&TemplateRecord| t.status == "APPROVED";
        let base = |l: &str| l.split(['_', '-']).next().unwrap_or("").to_string();
        let chosen = variants
            .iter()
            .filter(approved)
            .find(|t| t.language == language)
            .or_else(|| {
                variants
                    .iter()
                    .filter(approved)
                    .find(|t| base(&t.language) == base(language))
            })
            .or_else(|| variants.iter().find(approved));
        let Some(t) = chosen else {
            let status = variants
                .iter()
                .find(|t| t.language == language)
                .unwrap_or(&variants[0])
                .status
                .clone();
            return Err(SendRefusal::NotApproved(format!(
                "template {name:?} is not approved (status {status})"
            )));
        };
        let components: Value = serde_json::from_str(&t.components_json).unwrap_or(Value::Null);
        let body = components
            .as_array()
            .and_then(|c| {
                c.iter().find(|c| {
                    c["type"]
                        .as_str()
                        .is_some_and(|k| k.eq_ignore_ascii_case("BODY"))
                })
            })
            .and_then(|c| c["text"].as_str())
            .unwrap_or("");
        let wanted = placeholders(body);
        if parameters.len() != wanted {
            return Err(SendRefusal::Invalid(format!(
                "template {name:?} ({}) takes {wanted} parameters, {} given",
                t.language,
                parameters.len()
            )));
        }
        if parameters
            .iter()
            .any(|p| p.trim().is_empty() || p.chars().count() > MAX_PARAMETER_CHARS)
        {
            return Err(SendRefusal::Invalid(
                "each parameter: 1 to 1024 characters, not only blanks".into(),
            ));
        }
        let send_components = if wanted == 0 {
            serde_json::json!([])
        } else {
            let params: Vec<Value> = parameters
                .iter()
                .map(|p| serde_json::json!({ "type": "text", "text": p }))
                .collect();
            serde_json::json!([{ "type": "body", "parameters": params }])
        };
        Ok(PreparedSend {
            name: t.name.clone(),
            language: t.language.clone(),
            category: t.category.clone(),
            components_json: send_components.to_string(),
            summary: fill(body, parameters),
        })
    }
}

/// The payload of a rating template's quick-reply button: what the customer's tap sends back.
pub fn rating_payload(score: usize) -> String {
    format!("csat:{score}")
}

impl Registry {
    /// Resolves a send of the rating template `name` (`[csat] template`) as
    /// [`Self::prepare_send`] does without parameters, and gives each of its quick-reply buttons
    /// the payload [`rating_payload`] of its score: the button's title if that is a number 1–5,
    /// else its position (1 for the first). Meta sends a tap back as a `button` message with
    /// that payload.
    pub fn prepare_rating(&self, name: &str, language: &str) -> Result<PreparedSend, SendRefusal> {
        let mut prepared = self.prepare_send(name, language, &[])?;
        let chosen = self.get(&prepared.name, &prepared.language);
        let components: Value = chosen
            .and_then(|t| serde_json::from_str(&t.components_json).ok())
            .unwrap_or(Value::Null);
        let buttons = components
            .as_array()
            .and_then(|c| {
                c.iter().find(|c| {
                    c["type"]
                        .as_str()
                        .is_some_and(|k| k.eq_ignore_ascii_case("BUTTONS"))
                })
            })
            .and_then(|c| c["buttons"].as_array())
            .cloned()
            .unwrap_or_default();
        let mut send: Vec<Value> =
            serde_json::from_str(&prepared.components_json).unwrap_or_default();
        for (index, b) in buttons.iter().enumerate() {
            if !b["type"]
                .as_str()
                .is_some_and(|k| k.eq_ignore_ascii_case("QUICK_REPLY"))
            {
                continue;
            }
            let titled = b["text"]
                .as_str()
                .and_then(|t| t.trim().parse::<usize>().ok())
                .filter(|n| (1..=5).contains(n));
            let score = titled.unwrap_or(index + 1);
            send.push(serde_json::json!({
                "type": "button",
                "sub_type": "quick_reply",
                "index": index.to_string(),
                "parameters": [{ "type": "payload", "payload": rating_payload(score) }],
            }));
        }
        prepared.components_json = Value::Array(send).to_string();
        Ok(prepared)
    }
}

/// The highest `{{n}}` in `text` (Meta numbers them from 1, without gaps).
fn placeholders(text: &str) -> usize {
    let mut highest = 0;
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        rest = &rest[start + 2..];
        if let Some(end) = rest.find("}}") {
            if let Ok(n) = rest[..end].trim().parse::<usize>() {
                highest = highest.max(n);
            }
        }
    }
    highest
}

/// `text` with `{{n}}` replaced by the n-th parameter.
fn fill(text: &str, parameters: &[String]) -> String {
    let mut out = text.to_string();
    for (i, p) in parameters.iter().enumerate().rev() {
        out = out.replace(&format!("{{{{{}}}}}", i + 1), p);
    }
    out
}

/// Checks a submission before it goes to Meta.
fn validate(t: &NewTemplate) -> Result<(), TemplateError> {
    let bad = |m: &str| Err(TemplateError::Invalid(m.to_string()));
    if t.name.is_empty()
        || t.name.len() > MAX_NAME_LEN
        || !t
            .name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return bad("name: lowercase letters, digits and underscores, 1 to 512 of them");
    }
    if t.language.is_empty()
        || t.language.len() > MAX_LANGUAGE_LEN
        || !t
            .language
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return bad("language: a language code such as en_US");
    }
    if !CATEGORIES.contains(&t.category.as_str()) {
        return bad("category: MARKETING, UTILITY or AUTHENTICATION");
    }
    match &t.components {
        Value::Array(c) if !c.is_empty() && c.len() <= MAX_COMPONENTS => Ok(()),
        _ => bad("components: an array of 1 to 10 components"),
    }
}

/// Syncs at once, then every `interval`, for ever (the caller aborts the task at shutdown).
/// A failed sync is logged and counted; the next one tries again.
pub async fn sync_periodically(registry: Arc<Registry>, interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match registry.sync().await {
            Ok(changed) => {
                metrics::counter!(m::TEMPLATE_SYNCS, "outcome" => "ok").increment(1);
                tracing::debug!(changed, "templates synced");
            }
            Err(e) => {
                metrics::counter!(m::TEMPLATE_SYNCS, "outcome" => "failed").increment(1);
                tracing::warn!(error = %e, "template sync failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, language: &str, category: &str, components: Value) -> NewTemplate {
        NewTemplate {
            name: name.into(),
            language: language.into(),
            category: category.into(),
            components,
        }
    }

    #[test]
    fn placeholders_are_counted_and_filled() {
        assert_eq!(placeholders("Hi {{1}}, order {{2}} is ready ({{1}})"), 2);
        assert_eq!(placeholders("no parameters {{ }} {x}"), 0);
        let p = vec!["Ana".to_string(), "A-17".to_string()];
        assert_eq!(fill("Hi {{1}}, order {{2}}", &p), "Hi Ana, order A-17");
    }

    #[test]
    fn submissions_are_checked() {
        let body = serde_json::json!([{"type": "BODY", "text": "Hi {{1}}"}]);
        assert!(validate(&t("order_ready", "en_US", "UTILITY", body.clone())).is_ok());
        for bad in [
            t("Order", "en_US", "UTILITY", body.clone()),
            t("", "en_US", "UTILITY", body.clone()),
            t("a", "", "UTILITY", body.clone()),
            t("a", "en US", "UTILITY", body.clone()),
            t("a", "en", "PROMO", body.clone()),
            t("a", "en", "UTILITY", serde_json::json!([])),
            t("a", "en", "UTILITY", serde_json::json!({})),
        ] {
            assert!(
                matches!(validate(&bad), Err(TemplateError::Invalid(_))),
                "{bad:?}"
            );
        }
    }
}
