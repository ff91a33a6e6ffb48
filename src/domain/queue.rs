//! A team's waiting line: highest priority first, then longest waiting, then first come.
//!
//! Why this shape: after a backlog a team may hold a million waiting conversations, and that
//! memory must not depend on how the allocator interleaved it with everything else. A tree or a
//! map of `String`s makes one small allocation per conversation; allocated in step with the
//! conversations' actors, they pin nearly every heap page after those actors passivate (measured:
//! RSS 675 B per passivated conversation with a `BTreeSet<String>` queue, 144 B without any queue;
//! BENCHMARKS.md, memory). Here a conversation costs no allocation of its own: ids are kept as the
//! 64-bit value they encode (`c` + 16 hex digits, see [`super::conversation_id`]), in one
//! `VecDeque` per priority and one hash map — a few large buffers.
//!
//! Invariants:
//! - `slots` holds exactly the waiting conversations, each with its (priority, time, generation);
//! - a lane entry is live iff its key's slot has the same priority, time and generation; stale
//!   entries (removed or re-queued since) are skipped and dropped when they reach the front, and
//!   the lanes are compacted once stale entries outnumber live ones;
//! - each lane is ordered by time, ties in arrival order.
//!
//! An id not of the derived form (none is produced today) is kept verbatim in a side table under
//! a hash of it, so the queue never loses or invents a conversation.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;

use super::{Millis, Priority};

type Map<V> = HashMap<u64, V, foldhash::fast::FixedState>;

/// Lanes, most urgent first.
const LANES: [Priority; 4] = [
    Priority::Urgent,
    Priority::High,
    Priority::Normal,
    Priority::Low,
];

fn lane_of(p: Priority) -> usize {
    match p {
        Priority::Urgent => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Millis,
    key: u64,
    generation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    at: Millis,
    generation: u32,
    priority: Priority,
}

#[derive(Debug, Default)]
pub struct WaitingLine {
    lanes: [VecDeque<Entry>; 4],
    slots: Map<Slot>,
    /// Ids not of the derived form, by their key.
    other: Map<String>,
    /// The agent a waiting conversation must not go straight back to.
    avoid: Map<String>,
    generation: u32,
    stale: usize,
}

/// The key of a derived id (`c` + 16 lowercase hex digits).
fn derived_key(id: &str) -> Option<u64> {
    let hex = id.strip_prefix('c')?;
    if hex.len() != 16 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// The key of an id not of the derived form (kept verbatim in `other` under it).
fn other_key(id: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0x5b17).hash_one(id)
}

impl WaitingLine {
    fn key(&mut self, id: &str) -> u64 {
        derived_key(id).unwrap_or_else(|| {
            let k = other_key(id);
            self.other.entry(k).or_insert_with(|| id.to_string());
            k
        })
    }

    fn find_key(&self, id: &str) -> Option<u64> {
        derived_key(id).or_else(|| Some(other_key(id)).filter(|k| self.other.contains_key(k)))
    }

    fn id_of(&self, key: u64) -> String {
        match self.other.get(&key) {
            Some(id) => id.clone(),
            None => format!("c{key:016x}"),
        }
    }

    fn is_live(&self, e: &Entry, lane: usize) -> bool {
        self.slots.get(&e.key).is_some_and(|s| {
            s.generation == e.generation && s.at == e.at && lane_of(s.priority) == lane
        })
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Puts a conversation in line (or moves it, if it was waiting already); `avoid` is the
    /// agent it must not go straight back to.
    pub fn enqueue(&mut self, id: &str, at: Millis, priority: Priority, avoid: Option<String>) {
        let key = self.key(id);
        self.generation = self.generation.wrapping_add(1);
        let slot = Slot {
            at,
            generation: self.generation,
            priority,
        };
        match self.slots.entry(key) {
            MapEntry::Occupied(mut o) => {
                o.insert(slot);
                self.stale += 1;
            }
            MapEntry::Vacant(v) => {
                v.insert(slot);
            }
        }
        match avoid {
            Some(agent) => {
                self.avoid.insert(key, agent);
            }
            None => {
                self.avoid.remove(&key);
            }
        }
        let entry = Entry {
            at,
            key,
            generation: self.generation,
        };
        let lane = &mut self.lanes[lane_of(priority)];
        if lane.back().is_none_or(|b| b.at <= at) {
            lane.push_back(entry);
        } else {
            // Back in line at its old place (e.g. an assignment that failed): after everyone who
            // has waited as long, before everyone who came later.
            let i = lane.partition_point(|e| e.at <= at);
            lane.insert(i, entry);
        }
        self.compact_if_needed();
    }

    pub fn remove(&mut self, id: &str) {
        let Some(key) = self.find_key(id) else {
            return;
        };
        if self.slots.remove(&key).is_some() {
            self.stale += 1;
            self.avoid.remove(&key);
            self.other.remove(&key);
            self.compact_if_needed();
        }
    }

    /// Takes the first in line, with the agent it must not go back to.
    pub fn pop(&mut self) -> Option<(String, Millis, Priority, Option<String>)> {
        for (lane, priority) in LANES.iter().enumerate() {
            while let Some(e) = self.lanes[lane].pop_front() {
                if !self.is_live(&e, lane) {
                    self.stale = self.stale.saturating_sub(1);
                    continue;
                }
                self.slots.remove(&e.key);
                let id = self.id_of(e.key);
                self.other.remove(&e.key);
                let avoid = self.avoid.remove(&e.key);
                return Some((id, e.at, *priority, avoid));
            }
        }
        None
    }

    /// When the longest-waiting conversation (any priority) entered the line.
    pub fn oldest(&self) -> Option<Millis> {
        (0..LANES.len())
            .filter_map(|lane| {
                self.lanes[lane]
                    .iter()
                    .find(|e| self.is_live(e, lane))
                    .map(|e| e.at)
            })
            .min()
    }

    /// The waiting conversations in serving order.
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        (0..LANES.len()).flat_map(move |lane| {
            self.lanes[lane]
                .iter()
                .filter(move |e| self.is_live(e, lane))
                .map(|e| self.id_of(e.key))
        })
    }

    /// Drops stale entries once they outnumber the live ones, and gives memory back after a
    /// backlog drained.
    fn compact_if_needed(&mut self) {
        if self.stale <= self.slots.len() + 64 {
            return;
        }
        for lane in 0..LANES.len() {
            let mut kept = VecDeque::with_capacity(self.lanes[lane].len() / 2 + 1);
            for e in std::mem::take(&mut self.lanes[lane]) {
                if self.is_live(&e, lane) {
                    kept.push_back(e);
                }
            }
            kept.shrink_to_fit();
            self.lanes[lane] = kept;
        }
        self.stale = 0;
        if self.slots.capacity() > 4 * self.slots.len() + 1024 {
            self.slots.shrink_to_fit();
            self.avoid.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::conversation_id;

    fn id(n: u32) -> String {
        conversation_id("111", &format!("49{n}"))
    }

    fn drain(q: &mut WaitingLine) -> Vec<String> {
        std::iter::from_fn(|| q.pop().map(|(id, ..)| id)).collect()
    }

    #[test]
    fn derived_ids_round_trip_through_their_key() {
        for n in 0..100 {
            let i = id(n);
            let k = derived_key(&i).expect("derived id");
            assert_eq!(format!("c{k:016x}"), i);
        }
        assert_eq!(derived_key("c0123"), None);
        assert_eq!(derived_key("C0123456789abcdef"), None);
        assert_eq!(derived_key("c0123456789ABCDEF"), None);
    }

    #[test]
    fn serves_priority_then_time_then_arrival() {
        let mut q = WaitingLine::default();
        q.enqueue(&id(1), 30, Priority::Normal, None);
        q.enqueue(&id(2), 10, Priority::Normal, None);
        q.enqueue(&id(3), 50, Priority::Urgent, None);
        q.enqueue(&id(4), 10, Priority::Normal, None);
        q.enqueue(&id(5), 5, Priority::Low, None);
        q.enqueue(&id(6), 40, Priority::High, None);
        assert_eq!(q.len(), 6);
        assert_eq!(q.oldest(), Some(5));
        let order: Vec<String> = q.iter().collect();
        assert_eq!(order, [id(3), id(6), id(2), id(4), id(1), id(5)]);
        assert_eq!(drain(&mut q), order);
        assert!(q.is_empty());
        assert_eq!(q.oldest(), None);
    }

    #[test]
    fn re_enqueue_moves_and_remove_forgets() {
        let mut q = WaitingLine::default();
        q.enqueue(&id(1), 10, Priority::Normal, None);
        q.enqueue(&id(2), 20, Priority::Normal, Some("ann".into()));
        q.enqueue(&id(1), 30, Priority::High, None);
        q.remove(&id(2));
        q.remove(&id(9));
        assert_eq!(q.len(), 1);
        q.enqueue(&id(2), 20, Priority::Normal, None);
        assert_eq!(
            q.pop(),
            Some((id(1), 30, Priority::High, None)),
            "moved to its new lane"
        );
        assert_eq!(
            q.pop(),
            Some((id(2), 20, Priority::Normal, None)),
            "avoid was cleared"
        );
        assert_eq!(q.pop(), None, "no stale copy comes back");
    }

    #[test]
    fn back_in_line_at_its_old_place() {
        let mut q = WaitingLine::default();
        for (n, at) in [(1, 10), (2, 20), (3, 30)] {
            q.enqueue(&id(n), at, Priority::Normal, None);
        }
        let (first, at, p, _) = q.pop().expect("one");
        q.enqueue(&first, at, p, Some("ben".into()));
        q.enqueue(&id(4), 15, Priority::Normal, None);
        assert_eq!(q.iter().collect::<Vec<_>>(), [id(1), id(4), id(2), id(3)]);
        assert_eq!(
            q.pop(),
            Some((id(1), 10, Priority::Normal, Some("ben".into())))
        );
    }

    #[test]
    fn other_ids_are_kept_verbatim() {
        let mut q = WaitingLine::default();
        q.enqueue("legacy-42", 1, Priority::Normal, None);
        q.enqueue(&id(1), 2, Priority::Normal, None);
        assert_eq!(
            q.iter().collect::<Vec<_>>(),
            ["legacy-42".to_string(), id(1)]
        );
        q.remove("legacy-42");
        assert_eq!(drain(&mut q), [id(1)]);
    }

    #[test]
    fn churn_stays_compact_and_exact() {
        let mut q = WaitingLine::default();
        for round in 0..50u32 {
            for n in 0..200u32 {
                q.enqueue(&id(n), i64::from(round * 1000 + n), Priority::Normal, None);
            }
            for n in (0..200u32).step_by(2) {
                q.remove(&id(n));
            }
        }
        assert_eq!(q.len(), 100);
        let total: usize = q.lanes.iter().map(VecDeque::len).sum();
        assert!(total <= 2 * 100 + 64 + 1, "compacted: {total} entries");
        let out = drain(&mut q);
        let want: Vec<String> = (1..200u32).step_by(2).map(id).collect();
        assert_eq!(out, want);
    }
}
