//! The template registry's records: one per (name, language), in the `settings` column family
//! under `tmpl` NUL name NUL language; and customers' marketing preferences (Meta's
//! `user_preferences` webhook), under `mkt` NUL number NUL customer id (the id last, so one
//! containing NUL still reads back whole).
//!
//! Components are kept as the JSON Meta returned (inside the versioned record, as settings
//! are), so a send is built from what Meta approved and a key Meta adds later is kept, not
//! dropped by a struct that does not know it. A record's status history is bounded by
//! [`MAX_HISTORY`]: the oldest change is dropped first, the current status is always the last.

use serde::{Deserialize, Serialize};

use super::batch::Batch;
use super::codec::{decode, encode, Record};
use super::schema::CF_SETTINGS;
use super::{scan_prefix, Store, StoreError};
use crate::domain::Millis;

/// Prefix of template records.
pub const TEMPLATE_PREFIX: &[u8] = b"tmpl\0";

/// Status changes kept per template (a template changes status a handful of times in its life;
/// the bound only stops a flapping one from growing its record without end).
pub const MAX_HISTORY: usize = 100;

/// One status a template went through: when the broker learnt it, and Meta's reason if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusChange {
    pub at: Millis,
    pub status: String,
    /// Meta's `reason` (webhooks), or where the change came from (`created`, `sync`).
    pub reason: String,
}

/// A template as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateRecord {
    /// Meta's template id (empty until Meta named one).
    pub id: String,
    pub name: String,
    pub language: String,
    pub category: String,
    pub status: String,
    /// Meta's quality score (`GREEN`, `YELLOW`, `RED`, `UNKNOWN`); empty until Meta rated it.
    pub quality: String,
    /// The components, as Meta returned them (JSON array).
    pub components_json: String,
    pub history: Vec<StatusChange>,
    pub updated_at: Millis,
}

impl Record for TemplateRecord {
    const VERSION: u8 = 1;
}

impl TemplateRecord {
    /// A template first heard of by id, name and language (a webhook or a sync before any
    /// create): nothing else known yet, no components.
    pub fn unknown(id: String, name: &str, language: &str, at: Millis) -> Self {
        TemplateRecord {
            id,
            name: name.to_string(),
            language: language.to_string(),
            category: String::new(),
            status: String::new(),
            quality: String::new(),
            components_json: "[]".to_string(),
            history: Vec::new(),
            updated_at: at,
        }
    }

    /// Sets the status, recording the change in the history when it is one.
    pub fn set_status(&mut self, status: &str, reason: &str, at: Millis) {
        if self.status == status && !self.history.is_empty() {
            return;
        }
        self.status = status.to_string();
        self.history.push(StatusChange {
            at,
            status: status.to_string(),
            reason: reason.to_string(),
        });
        if self.history.len() > MAX_HISTORY {
            let extra = self.history.len() - MAX_HISTORY;
            self.history.drain(..extra);
        }
    }
}

/// Prefix of marketing preference records.
pub const MARKETING_PREFIX: &[u8] = b"mkt\0";

/// Whether a customer stopped marketing messages on a number, as of Meta's `timestamp` (a
/// preference older than the one kept is ignored: webhooks may come out of order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MarketingPreference {
    pub stopped: bool,
    /// Meta's timestamp (seconds).
    pub at: i64,
}

impl Record for MarketingPreference {
    const VERSION: u8 = 1;
}

pub fn marketing_key(number: &str, customer: &str) -> Vec<u8> {
    let mut k = MARKETING_PREFIX.to_vec();
    k.extend_from_slice(number.as_bytes());
    k.push(0);
    k.extend_from_slice(customer.as_bytes());
    k
}

/// The key of the template `name` in `language`.
pub fn template_key(name: &str, language: &str) -> Vec<u8> {
    let mut k = TEMPLATE_PREFIX.to_vec();
    k.extend_from_slice(name.as_bytes());
    k.push(0);
    k.extend_from_slice(language.as_bytes());
    k
}

impl Batch {
    pub fn put_template(&mut self, t: &TemplateRecord) -> Result<(), StoreError> {
        self.put_raw(CF_SETTINGS, template_key(&t.name, &t.language), encode(t)?);
        Ok(())
    }

    pub fn put_marketing_preference(
        &mut self,
        number: &str,
        customer: &str,
        p: &MarketingPreference,
    ) -> Result<(), StoreError> {
        self.put_raw(CF_SETTINGS, marketing_key(number, customer), encode(p)?);
        Ok(())
    }
}

impl Store {
    /// Every template record, by name then language.
    pub async fn templates(&self) -> Result<Vec<TemplateRecord>, StoreError> {
        self.read(|db| {
            let mut out = Vec::new();
            scan_prefix(db, CF_SETTINGS, TEMPLATE_PREFIX, |_, v| {
                out.push(decode(v)?);
                Ok(true)
            })?;
            Ok(out)
        })
        .await
    }

    /// Every marketing preference: (number, customer id, preference).
    pub async fn marketing_preferences(
        &self,
    ) -> Result<Vec<(String, String, MarketingPreference)>, StoreError> {
        self.read(|db| {
            let mut out = Vec::new();
            scan_prefix(db, CF_SETTINGS, MARKETING_PREFIX, |k, v| {
                let rest = &k[MARKETING_PREFIX.len()..];
                if let Some(cut) = rest.iter().position(|&b| b == 0) {
                    let number = String::from_utf8_lossy(&rest[..cut]).into_owned();
                    let customer = String::from_utf8_lossy(&rest[cut + 1..]).into_owned();
                    out.push((number, customer, decode(v)?));
                }
                Ok(true)
            })?;
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_and_records_changes_only() {
        let mut t = TemplateRecord {
            id: "1".into(),
            name: "n".into(),
            language: "en".into(),
            category: "UTILITY".into(),
            status: String::new(),
            quality: String::new(),
            components_json: "[]".into(),
            history: Vec::new(),
            updated_at: 0,
        };
        t.set_status("PENDING", "created", 1);
        t.set_status("PENDING", "sync", 2);
        assert_eq!(t.history.len(), 1);
        for i in 0..(MAX_HISTORY as i64 + 10) {
            let s = if i % 2 == 0 { "APPROVED" } else { "PAUSED" };
            t.set_status(s, "", i);
        }
        assert_eq!(t.history.len(), MAX_HISTORY);
        assert_eq!(
            t.history.last().map(|c| c.status.as_str()),
            Some(t.status.as_str())
        );
        let bytes = encode(&t).expect("encode");
        assert_eq!(decode::<TemplateRecord>(&bytes).expect("decode"), t);
    }
}
