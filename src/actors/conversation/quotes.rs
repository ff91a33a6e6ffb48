//! What an inbound message points at: the message it quotes (`reply_to`) and the message a
//! reaction changes.
//!
//! Both name a wamid; it counts only when it is one of this conversation's messages, found
//! among the delivery's own messages as they are made, in the recent-sends map, or in the
//! wamid index (one read for the whole delivery, and none for a conversation never stored).
//!
//! A reaction is not a message: it sets the customer's reaction on its target (one per
//! reactor; an empty or absent emoji removes it), durably, in the batch of its delivery. A
//! reaction to a wamid that is not this conversation's is kept verbatim (other changes, field
//! [`UNKNOWN_TARGET_FIELD`]) and counted. Either way its own wamid is indexed (to the target, or
//! to no message), so a redelivery is told from a new reaction even after a restart: the
//! activation's wamid set holds messages' wamids only, so a reaction the set lacks is looked up
//! (see `stored_wamids`). A redelivery is not applied again: a late copy of an earlier reaction
//! cannot bring back an emoji the customer has since changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use std::collections::btree_map::Entry;

use super::*;
use crate::domain::inbound::InboundReaction;
use crate::domain::message::{set_reaction, Reaction};
use crate::store::WamidRef;

/// The field under which a reaction to a message the broker does not hold is kept verbatim.
pub const UNKNOWN_TARGET_FIELD: &str = "reaction";

/// The reactions of one delivery: the stored messages they changed and how each went.
#[derive(Default)]
pub(super) struct Reactions {
    /// Stored messages (not of this delivery) reacted to, by seq, as read and then changed.
    loaded: BTreeMap<u64, Message>,
    /// Which of `loaded` changed.
    changed: BTreeSet<u64>,
    /// The wamids of the reactions handled (applied or kept), for the live wamid set.
    pub wamids: Vec<String>,
    applied: u64,
    removed: u64,
    unknown: u64,
}

impl Reactions {
    /// Counts the delivery's reactions (after its commit).
    pub fn count(&self) {
        for (outcome, n) in [
            ("applied", self.applied),
            ("removed", self.removed),
            ("unknown_target", self.unknown),
        ] {
            if n > 0 {
                metrics::counter!(m::INBOUND_REACTIONS, "outcome" => outcome).increment(n);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.wamids.is_empty()
    }

    /// The stored messages whose reactions changed, as they are to be written.
    pub fn changed(&self) -> impl Iterator<Item = &Message> {
        self.loaded
            .values()
            .filter(|m| self.changed.contains(&m.seq))
    }

    /// Takes the changed messages (after their commit).
    pub fn take_changed(&mut self) -> Vec<Message> {
        let changed = std::mem::take(&mut self.changed);
        std::mem::take(&mut self.loaded)
            .into_values()
            .filter(|m| changed.contains(&m.seq))
            .collect()
    }
}

impl ConversationActor {
    /// The seqs of this conversation's stored messages that `items` quote or react to, by wamid
    /// (wamids of messages of the delivery itself are added as they are made).
    pub(super) async fn referenced(
        &self,
        state: &State,
        items: &[InboundMessage],
        known: &[bool],
    ) -> Result<HashMap<String, u64>, Error> {
        let mut found = HashMap::new();
        // A conversation never stored holds no message to point at.
        if !state.persisted {
            return Ok(found);
        }
        let mut ask = Vec::new();
        let named = items
            .iter()
            .zip(known)
            .filter(|(_, known)| !**known)
            .filter_map(|(m, _)| match &m.detail.reaction {
                Some(r) => r.target.as_ref(),
                None => m.detail.quotes.as_ref(),
            });
        for wamid in named {
            match self.ctx.sent.get(wamid) {
                Some(r) if r.conversation_id == state.conv.id && r.is_message() => {
                    found.insert(wamid.clone(), r.seq);
                }
                _ => ask.push(wamid.clone()),
            }
        }
        ask.sort_unstable();
        ask.dedup();
        if ask.is_empty() {
            return Ok(found);
        }
        let refs = self.ctx.store.lookup_wamids(ask.clone()).await?;
        for (wamid, r) in ask.into_iter().zip(refs) {
            match r {
                Some(r) if r.conversation_id == state.conv.id && r.is_message() => {
                    found.insert(wamid, r.seq);
                }
                _ => {}
            }
        }
        Ok(found)
    }

    /// Applies a customer's reaction (`wamid`, raw JSON `raw`) to its target: a message of
    /// this delivery (`created`) or a stored one (read once, then changed in `reactions`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn react(
        &self,
        state: &State,
        refs: &HashMap<String, u64>,
        created: &mut [Message],
        reactions: &mut Reactions,
        batch: &mut Batch,
        reaction: InboundReaction,
        wamid: String,
        raw: &str,
    ) -> Result<(), Error> {
        let seq = reaction.target.as_ref().and_then(|t| refs.get(t)).copied();
        let emoji = reaction.emoji.as_deref();
        let target: Option<&mut Message> = match seq {
            Some(seq) => match created.iter_mut().find(|m| m.seq == seq) {
                Some(m) => Some(m),
                None => {
                    if let Entry::Vacant(e) = reactions.loaded.entry(seq) {
                        if let Some(m) = self.message(state, seq).await? {
                            e.insert(m);
                        }
                    }
                    let m = reactions.loaded.get_mut(&seq);
                    if m.is_some() {
                        reactions.changed.insert(seq);
                    }
                    m
                }
            },
            None => None,
        };
        let seq = match target {
            Some(m) => {
                // Unchanged (a repeat of the same emoji) is still this reaction handled.
                set_reaction(&mut m.reactions, Reaction::CUSTOMER, emoji);
                if emoji.is_some() {
                    reactions.applied += 1;
                } else {
                    reactions.removed += 1;
                }
                m.seq
            }
            None => {
                reactions.unknown += 1;
                batch.put_other_change(UNKNOWN_TARGET_FIELD, raw);
                WamidRef::NO_MESSAGE
            }
        };
        let r = WamidRef {
            conversation_id: state.conv.id.clone(),
            seq,
        };
        batch.put_wamid(&wamid, &r)?;
        reactions.wamids.push(wamid);
        Ok(())
    }
}
