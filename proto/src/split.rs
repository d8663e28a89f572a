//! Split and merge evidence: what a scope's leader proposes when it decides to change the
//! scope's shape, and what every member checks at apply before it executes the change.
//!
//! A scope reshapes itself by its own decision: no node outside the scope is asked, and no
//! single member can reshape it on its own say. So a plan never travels alone: it carries
//! the figures that justified it (sizes, load rates and how long they held, the chosen key
//! and its left/right counts), and each member checks them against the scope's policy at
//! apply. These types are plain data, encoded with [`crate::codec`] inside a log entry.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::name::Name;

/// What a split balances: the request load or the stored size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Basis {
    /// Requests per second (reads or writes).
    Load,
    /// Names or bytes held.
    Size,
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Basis::Load => "load",
            Basis::Size => "size",
        })
    }
}

/// The policy limit whose excess started the split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Trigger {
    /// `[split] names_max`.
    Names,
    /// `[split] bytes_max`.
    Bytes,
    /// `[split] reads_per_s_max`.
    Reads,
    /// `[split] writes_per_s_max`.
    Writes,
}

impl Trigger {
    /// What this limit measures.
    pub fn basis(self) -> Basis {
        match self {
            Trigger::Names | Trigger::Bytes => Basis::Size,
            Trigger::Reads | Trigger::Writes => Basis::Load,
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Trigger::Names => "names",
            Trigger::Bytes => "bytes",
            Trigger::Reads => "reads",
            Trigger::Writes => "writes",
        })
    }
}

/// How a scope splits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SplitPlan {
    /// One child label carries most of the load or size: `prefix/label` becomes a scope of
    /// its own. `part` of `whole` (requests sampled, names or bytes) fell under it.
    Subtree {
        /// The first label below the scope's prefix.
        label: String,
        /// What was counted.
        basis: Basis,
        /// The child's count.
        part: u64,
        /// The scope's count.
        whole: u64,
    },
    /// The load or size is spread over many names: the key range is cut at `at` (which
    /// goes to the right-hand scope). For load, `left`/`right` are the requests the sampler
    /// counted on either side of `at`; for size, the names on either side.
    Range {
        /// The first name of the right-hand scope.
        at: Name,
        /// What was balanced.
        basis: Basis,
        /// Count before `at`.
        left: u64,
        /// Count at or after `at`.
        right: u64,
    },
}

impl SplitPlan {
    /// What the plan balances.
    pub fn basis(&self) -> Basis {
        match self {
            SplitPlan::Subtree { basis, .. } | SplitPlan::Range { basis, .. } => *basis,
        }
    }
}

impl fmt::Display for SplitPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SplitPlan::Subtree {
                label,
                basis,
                part,
                whole,
            } => write!(
                f,
                "subtree split of child label {label:?} ({} of the {basis})",
                percent(*part, *whole)
            ),
            SplitPlan::Range {
                at,
                basis,
                left,
                right,
            } => write!(
                f,
                "range split at {at} by {basis} ({left} left, {right} right)"
            ),
        }
    }
}

/// A scope's load figures as one side of the evidence, rates in requests per second.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadEvidence {
    /// Highest reads/s over the retained window.
    pub reads_peak: u64,
    /// Highest writes/s over the retained window.
    pub writes_peak: u64,
    /// True when a full retained window has been observed, so the peaks can be trusted.
    pub peak_reliable: bool,
    /// Milliseconds the trigger's limit has been exceeded without a break (0 for size).
    pub over_ms: u64,
    /// Lowest per-second rate of the trigger during that time (0 for size).
    pub over_low: u64,
}

/// The figures and the plan a leader proposes; every member checks them at apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitEvidence {
    /// The plan.
    pub plan: SplitPlan,
    /// The limit that was exceeded.
    pub trigger: Trigger,
    /// The leader's wall clock when it decided, ms since the epoch.
    pub decided_at_ms: u64,
    /// Names the scope held.
    pub names: u64,
    /// Bytes of record sets the scope held.
    pub bytes: u64,
    /// The load figures.
    pub load: LoadEvidence,
}

/// One side of a merge: what the scope held and its retained peak load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeSide {
    /// The scope's prefix.
    pub prefix: Name,
    /// The first name of its range, when the scope is a range of its prefix.
    pub start: Option<Name>,
    /// The first name after its range, when the scope is a range of its prefix.
    pub end: Option<Name>,
    /// Names it held.
    pub names: u64,
    /// Bytes it held.
    pub bytes: u64,
    /// Its load figures.
    pub load: LoadEvidence,
}

/// The figures of two adjacent scopes a leader proposes to merge back into one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergeEvidence {
    /// The scope that keeps going (the left range, or the parent).
    pub left: MergeSide,
    /// The scope merged into it (the right range, or the child).
    pub right: MergeSide,
    /// When the split that made them two happened, ms since the epoch.
    pub split_at_ms: u64,
    /// The leader's wall clock when it decided, ms since the epoch.
    pub decided_at_ms: u64,
}

/// `part` of `whole` as a whole percentage, for messages ("97%").
pub fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0%".into();
    }
    format!("{}%", (u128::from(part) * 100 / u128::from(whole)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};

    #[test]
    fn evidence_round_trips_through_the_codec() {
        let e = SplitEvidence {
            plan: SplitPlan::Range {
                at: Name::parse("/users/m").unwrap(),
                basis: Basis::Load,
                left: 120,
                right: 110,
            },
            trigger: Trigger::Reads,
            decided_at_ms: 5,
            names: 9,
            bytes: 10,
            load: LoadEvidence {
                reads_peak: 3000,
                over_ms: 12_000,
                over_low: 2100,
                ..LoadEvidence::default()
            },
        };
        let bytes = encode(&e).unwrap();
        assert_eq!(decode::<SplitEvidence>(&bytes, bytes.len()).unwrap(), e);
        assert_eq!(e.plan.basis(), Basis::Load);
        assert_eq!(Trigger::Bytes.basis(), Basis::Size);
    }

    #[test]
    fn plans_read_well() {
        let p = SplitPlan::Subtree {
            label: "eu".into(),
            basis: Basis::Size,
            part: 97,
            whole: 100,
        };
        assert_eq!(
            p.to_string(),
            "subtree split of child label \"eu\" (97% of the size)"
        );
        assert_eq!(percent(1, 0), "0%");
    }
}
