//! Which agent a team's next waiting conversation goes to: the assignment policies as one pure
//! function of the team's members, who can take work now, and what the team remembers of its
//! past choices ([`Rotation`]).
//!
//! Invariants: only an available candidate (online, below capacity: the caller's filter) is
//! ever chosen; `manual` chooses nobody; the choice depends on nothing but the arguments, so
//! the policies can be told apart in a table test rather than through timing.
//! - `round_robin`: the first available member at or after the cursor, in member order; the
//!   cursor then moves past it.
//! - `least_loaded`: the available member with the fewest open conversations; ties go to the
//!   one assigned least recently (never assigned counts as longest ago).

use std::collections::HashMap;

use super::Assignment;

/// An agent who can take a conversation now, with how many it holds (claims in flight counted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    pub owned: usize,
}

/// What a team remembers between choices.
#[derive(Debug, Default, Clone)]
pub struct Rotation {
    /// Round robin: index in the members of the next agent to try.
    cursor: usize,
    /// Least loaded: the choice number of each agent's last assignment.
    last_assigned: HashMap<String, u64>,
    choices: u64,
}

impl Rotation {
    /// Records that `agent` was given a conversation (least-loaded ties look at this).
    pub fn assigned(&mut self, agent: &str) {
        self.choices += 1;
        self.last_assigned.insert(agent.to_owned(), self.choices);
    }
}

/// The agent `policy` gives the next conversation to, among `available` (a subset of
/// `members`); None for `manual` or when nobody is available.
pub fn pick(
    policy: Assignment,
    members: &[String],
    available: &[Candidate],
    rotation: &mut Rotation,
) -> Option<String> {
    match policy {
        Assignment::Manual => None,
        Assignment::LeastLoaded => available
            .iter()
            .min_by_key(|c| {
                (
                    c.owned,
                    rotation.last_assigned.get(&c.id).copied().unwrap_or(0),
                )
            })
            .map(|c| c.id.clone()),
        Assignment::RoundRobin => {
            let n = members.len();
            (0..n).find_map(|i| {
                let idx = (rotation.cursor + i) % n;
                let id = &members[idx];
                available.iter().any(|c| &c.id == id).then(|| {
                    rotation.cursor = (idx + 1) % n;
                    id.clone()
                })
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members() -> Vec<String> {
        ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
    }

    fn cand(id: &str, owned: usize) -> Candidate {
        Candidate {
            id: id.into(),
            owned,
        }
    }

    /// Three choices in a row from the same loads (each chosen agent's load grows by one, as
    /// a successful assignment does): what each policy hands out, in order.
    fn run(policy: Assignment, loads: &[(&str, usize)]) -> Vec<Option<String>> {
        let mut rotation = Rotation::default();
        let mut loads: Vec<Candidate> = loads.iter().map(|(id, n)| cand(id, *n)).collect();
        (0..3)
            .map(|_| {
                let chosen = pick(policy, &members(), &loads, &mut rotation);
                if let Some(id) = &chosen {
                    rotation.assigned(id);
                    if let Some(c) = loads.iter_mut().find(|c| &c.id == id) {
                        c.owned += 1;
                    }
                }
                chosen
            })
            .collect()
    }

    fn ids(v: &[&str]) -> Vec<Option<String>> {
        v.iter().map(|s| Some(s.to_string())).collect()
    }

    /// A policy, the available agents with their loads, and the three choices expected.
    type Row = (
        Assignment,
        &'static [(&'static str, usize)],
        Vec<Option<String>>,
    );

    #[test]
    fn the_policies_choose_differently_from_the_same_state() {
        use Assignment::*;
        let table: [Row; 7] = [
            // Uneven loads: round robin goes in member order whatever the loads ...
            (
                RoundRobin,
                &[("a", 3), ("b", 0), ("c", 1)],
                ids(&["a", "b", "c"]),
            ),
            // ... least loaded fills the emptiest first.
            (
                LeastLoaded,
                &[("a", 3), ("b", 0), ("c", 1)],
                ids(&["b", "c", "b"]),
            ),
            // Equal loads: least loaded breaks ties by who waited longest since a choice.
            (
                LeastLoaded,
                &[("a", 0), ("b", 0), ("c", 0)],
                ids(&["a", "b", "c"]),
            ),
            // Someone unavailable is skipped by both.
            (RoundRobin, &[("a", 0), ("c", 0)], ids(&["a", "c", "a"])),
            (LeastLoaded, &[("b", 2), ("c", 0)], ids(&["c", "c", "b"])),
            // Manual hands out nothing, and nobody available means nobody chosen.
            (
                Manual,
                &[("a", 0), ("b", 0), ("c", 0)],
                vec![None, None, None],
            ),
            (RoundRobin, &[], vec![None, None, None]),
        ];
        for (policy, loads, want) in table {
            assert_eq!(run(policy, loads), want, "{policy:?} with {loads:?}");
        }
    }
}
