//! The split-key sampler: finds a name that cuts a hot scope's requests into two halves of
//! about equal load, or says that there is none.
//!
//! The rules are CockroachDB's load-based splitter (its "unweighted finder"): a reservoir of
//! [`CANDIDATES_MAX`] candidate keys taken from request keys by reservoir sampling; each
//! candidate counts the requests that arrive after it was taken, left of it (names that
//! order before it) or right of it (itself and names after it: the candidate is the first
//! name of the right-hand half). A candidate qualifies only with at least
//! [`COUNTS_MIN`] counts and an imbalance |L−R|/(L+R) below [`IMBALANCE_MAX`]; with no
//! qualifying candidate there is no load split. That is what stops a useless split on one
//! hot name: every request for it falls on the same side of every candidate.
//!
//! Randomness comes in as a `u64` per request (the caller's seeded RNG), so tests are
//! deterministic. Memory is bounded: [`CANDIDATES_MAX`] names and their counts.

use proto::Name;

/// Candidate keys kept.
pub const CANDIDATES_MAX: usize = 20;
/// Counts a candidate needs before it may qualify.
pub const COUNTS_MIN: u64 = 100;
/// Largest imbalance |L−R|/(L+R) of a qualifying candidate (exclusive).
pub const IMBALANCE_MAX: f64 = 0.25;

/// One candidate key and what it counted since it was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The key: the first name of the right-hand half if the scope split here.
    pub at: Name,
    /// Requests for names before `at`.
    pub left: u64,
    /// Requests for `at` or names after it.
    pub right: u64,
    /// Of `right`, the requests for `at` itself.
    pub on: u64,
}

impl Candidate {
    fn new(at: Name) -> Candidate {
        Candidate {
            at,
            left: 0,
            right: 0,
            on: 0,
        }
    }

    /// Requests counted.
    pub fn counts(&self) -> u64 {
        self.left + self.right
    }

    /// |L−R|/(L+R); 1 with no counts.
    pub fn imbalance(&self) -> f64 {
        match self.counts() {
            0 => 1.0,
            n => self.left.abs_diff(self.right) as f64 / n as f64,
        }
    }

    /// True with enough counts and a small enough imbalance.
    pub fn qualifies(&self) -> bool {
        self.counts() >= COUNTS_MIN && self.imbalance() < IMBALANCE_MAX
    }
}

/// What the sampler can say now.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyFinding {
    /// Nothing sampled (the scope is under its load limits, or idle).
    NotSampled,
    /// A candidate qualifies.
    Found {
        /// The best qualifying candidate (lowest imbalance).
        key: Candidate,
        /// The name requested most, as the reservoir sees it (see [`KeyFinding::NoKey`]).
        hottest: Option<Candidate>,
    },
    /// No candidate qualifies. `best` is the one closest to qualifying (most counts among
    /// the least imbalanced with enough counts, else the one with most counts); `hottest`
    /// the candidate with enough counts whose own name took the largest share of them.
    NoKey {
        /// The nearest miss.
        best: Option<Candidate>,
        /// The name requested most, as the reservoir sees it.
        hottest: Option<Candidate>,
    },
}

/// A bounded reservoir of candidate split keys.
#[derive(Clone, Debug, Default)]
pub struct Sampler {
    candidates: Vec<Candidate>,
    seen: u64,
}

impl Sampler {
    /// Counts one request for `name` against every candidate, then offers `name` to the
    /// reservoir; `random` decides whether it replaces a candidate.
    pub fn offer(&mut self, name: &Name, random: u64) {
        for c in &mut self.candidates {
            if name < &c.at {
                c.left += 1;
            } else {
                c.right += 1;
                if name == &c.at {
                    c.on += 1;
                }
            }
        }
        self.seen += 1;
        if self.candidates.len() < CANDIDATES_MAX {
            self.candidates.push(Candidate::new(name.clone()));
            return;
        }
        // Algorithm R: the request replaces a candidate with probability CANDIDATES_MAX / seen.
        let slot = random % self.seen;
        if let Some(c) = usize::try_from(slot)
            .ok()
            .and_then(|i| self.candidates.get_mut(i))
        {
            *c = Candidate::new(name.clone());
        }
    }

    /// Forgets every candidate (CockroachDB drops its finder when a second falls under the
    /// threshold).
    pub fn reset(&mut self) {
        self.candidates.clear();
        self.seen = 0;
    }

    /// Requests offered since the last reset.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// The candidates, in the order they sit in the reservoir.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// The best qualifying key, or why there is none.
    pub fn finding(&self) -> KeyFinding {
        if self.candidates.is_empty() {
            return KeyFinding::NotSampled;
        }
        let by_imbalance = |a: &&Candidate, b: &&Candidate| {
            a.imbalance()
                .total_cmp(&b.imbalance())
                .then(b.counts().cmp(&a.counts()))
                .then(a.at.cmp(&b.at))
        };
        let counted: Vec<&Candidate> = self
            .candidates
            .iter()
            .filter(|c| c.counts() >= COUNTS_MIN)
            .collect();
        let hottest = counted
            .iter()
            .max_by(|a, b| {
                (u128::from(a.on) * u128::from(b.counts()))
                    .cmp(&(u128::from(b.on) * u128::from(a.counts())))
                    .then(b.at.cmp(&a.at))
            })
            .map(|c| (*c).clone());
        if let Some(found) = self
            .candidates
            .iter()
            .filter(|c| c.qualifies())
            .min_by(by_imbalance)
        {
            return KeyFinding::Found {
                key: found.clone(),
                hottest,
            };
        }
        let best = match counted.iter().copied().min_by(by_imbalance) {
            Some(c) => Some(c.clone()),
            None => self
                .candidates
                .iter()
                .max_by(|a, b| a.counts().cmp(&b.counts()).then(b.at.cmp(&a.at)))
                .cloned(),
        };
        KeyFinding::NoKey { best, hottest }
    }
}

#[cfg(test)]
#[path = "sampler_tests.rs"]
mod tests;
