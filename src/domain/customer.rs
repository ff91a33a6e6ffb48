//! Who a customer is: Meta's two ids for one WhatsApp user on one business number.
//!
//! Since April 2026 Meta sends a business-scoped user id (BSUID, `user_id`) with every user and
//! leaves the phone number (`wa_id`) out for users with a username. A customer is one
//! [`Contact`]: its user id, its phone, or both, plus its username. The contact is part of its
//! conversation's record (one conversation per business number and customer), and storage keeps
//! an index from each id to that conversation (`store::schema::CF_CONTACTS`), written in the same
//! batch as the record, so a webhook naming either id finds the same conversation.
//!
//! Invariants:
//! - a contact has at least one id; `customer` (what the API shows as the customer) is the phone
//!   when known, else the user id ([`Contact::customer`]);
//! - a BSUID is told from a phone by its shape ([`is_user_id`]): two ASCII capital letters (the
//!   ISO 3166 alpha-2 country), a dot, then letters, digits and dots (`US.13491208655302741918`,
//!   `US.ENT.11815799212886844830` for a parent BSUID); a phone is digits only, so the two never
//!   look alike.

use serde::{Deserialize, Serialize};

/// Longest user id taken as a BSUID: Meta documents "up to 128 alphanumeric characters" after
/// the country and dot; the margin covers a parent BSUID's `ENT.` part.
const MAX_USER_ID_LEN: usize = 140;

/// Whether `s` has the shape of a BSUID (see the module docs).
pub fn is_user_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() > 3
        && b.len() <= MAX_USER_ID_LEN
        && b[0].is_ascii_uppercase()
        && b[1].is_ascii_uppercase()
        && b[2] == b'.'
        && b[3..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'.')
        && b[3..].iter().any(u8::is_ascii_alphanumeric)
}

/// The country (ISO 3166 alpha-2) a BSUID names in its prefix.
pub fn user_id_country(s: &str) -> Option<&str> {
    if is_user_id(s) {
        s.get(..2)
    } else {
        None
    }
}

/// The customer side of a conversation: the ids Meta has given for this person on this
/// business number, and its username.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// `wa_id`: None while Meta has not given one.
    pub phone: Option<String>,
    /// The BSUID (`user_id`): None for customers only known by phone (data from before 2026).
    pub user_id: Option<String>,
    /// `contacts[].profile.username`, the latest Meta sent.
    pub username: Option<String>,
    /// Whether this record's ids are in the contact index. False only for a record written
    /// before contacts existed; its first write by this version indexes them.
    pub indexed: bool,
}

impl Contact {
    /// A contact known by one id, classified by its shape (a BSUID or else a phone).
    pub fn from_customer(customer: &str) -> Self {
        if is_user_id(customer) {
            Contact {
                user_id: Some(customer.to_string()),
                ..Contact::default()
            }
        } else {
            Contact {
                phone: Some(customer.to_string()),
                ..Contact::default()
            }
        }
    }

    /// The id the API shows as `customer` and sends to: the phone when known, else the user id.
    pub fn customer(&self) -> Option<&str> {
        self.phone.as_deref().or(self.user_id.as_deref())
    }

    /// Takes what a message says about its sender: an id the contact lacks (the link) and its
    /// latest username. An id it already has is never replaced by a message: only a `system`
    /// message moves ids ([`Self::replace_ids`]), so a late delivery of a message sent before a
    /// number change cannot move it back. Answers whether anything changed.
    pub fn learn(&mut self, ids: &CustomerIds) -> bool {
        let mut changed = false;
        for (mine, theirs) in [
            (&mut self.phone, &ids.phone),
            (&mut self.user_id, &ids.user_id),
        ] {
            if mine.is_none() && theirs.is_some() {
                mine.clone_from(theirs);
                changed = true;
            }
        }
        if ids.username.is_some() && self.username != ids.username {
            self.username.clone_from(&ids.username);
            changed = true;
        }
        changed
    }

    /// Moves the ids a `system` message names (a new number, a new user id). Answers whether
    /// anything changed.
    pub fn replace_ids(&mut self, change: &IdentityChange) -> bool {
        let mut changed = false;
        for (mine, theirs) in [
            (&mut self.phone, &change.new_phone),
            (&mut self.user_id, &change.new_user_id),
        ] {
            if theirs.is_some() && mine != theirs {
                mine.clone_from(theirs);
                changed = true;
            }
        }
        changed
    }
}

/// What one inbound message says about its sender (from `from`, `from_user_id` and the change's
/// `contacts`). At least one of `phone` and `user_id` is set on every parsed message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CustomerIds {
    pub phone: Option<String>,
    pub user_id: Option<String>,
    pub username: Option<String>,
}

impl CustomerIds {
    /// The id shown as `customer`: the phone when known, else the user id.
    pub fn customer(&self) -> Option<&str> {
        self.phone.as_deref().or(self.user_id.as_deref())
    }
}

/// A `system` message that moves a contact's ids: `user_changed_number` (the new phone, Meta's
/// `system.wa_id`) or `user_changed_user_id` (the new BSUID, `system.user_id`). Meta also sends
/// the new BSUID with a number change (a new number means a new BSUID), so both may be set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdentityChange {
    pub new_phone: Option<String>,
    pub new_user_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_user_ids_from_phones() {
        for id in [
            "US.13491208655302741918",
            "BR.1502576394655843",
            "US.ENT.11815799212886844830",
            "DE.abc123",
        ] {
            assert!(is_user_id(id), "{id}");
        }
        for id in [
            "4915112345678",
            "",
            "US.",
            "US..",
            "us.123",
            "U.123",
            "USA.123",
            "US-123",
            "US.12 3",
        ] {
            assert!(!is_user_id(id), "{id}");
        }
        assert_eq!(user_id_country("AT.991"), Some("AT"));
        assert_eq!(user_id_country("4366412345"), None);
    }

    #[test]
    fn learns_new_ids_and_keeps_known_ones() {
        let mut c = Contact::from_customer("US.1");
        assert_eq!(c.customer(), Some("US.1"));
        assert!(!c.learn(&CustomerIds {
            user_id: Some("US.1".into()),
            ..CustomerIds::default()
        }));
        assert!(c.learn(&CustomerIds {
            phone: Some("15550001".into()),
            user_id: None,
            username: Some("ana".into()),
        }));
        assert_eq!(
            (c.customer(), c.user_id.as_deref(), c.username.as_deref()),
            (Some("15550001"), Some("US.1"), Some("ana"))
        );
        // A message never moves a known id; a system message does.
        assert!(!c.learn(&CustomerIds {
            phone: Some("15550002".into()),
            ..CustomerIds::default()
        }));
        assert!(c.replace_ids(&IdentityChange {
            new_phone: Some("15550002".into()),
            new_user_id: None,
        }));
        assert_eq!(c.customer(), Some("15550002"));
    }
}
