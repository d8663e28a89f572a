//! The merge decider: whether two adjacent scopes should merge back into one, and the
//! check every member runs at apply. Pure, like [`super::split`], whose bounds, time
//! checks and [`Refusal`] it shares.
//!
//! The rules follow CockroachDB's merge queue and TiKV's merge checker:
//! - Both scopes hold fewer names and bytes than `[merge] names_min` / `bytes_min`
//!   (defaults: a quarter of the split limits), so the merged scope is far from a size split.
//! - Both peaks are reliable (a full retained window observed) and their **sum** is under
//!   **half** of each split load limit. The gap between half and the full limit is what
//!   keeps a merged pair from splitting again: a pair whose summed peak is near the limit
//!   does not merge.
//! - The split that made them two is at least `age_s_min` old (TiKV waits an hour).
//! - The two are adjacent: consecutive ranges of one prefix, or a scope and a child scope
//!   delegated below it.
//! - `[merge] auto = false` (the default): the decider says what it would do and nothing
//!   happens.

use std::fmt;

use proto::split::{LoadEvidence, MergeEvidence, MergeSide};

use super::load::{LoadFigures, SizeFigures};
use super::split::ScopeBounds;
use super::verdict::{check_time, Refusal};

/// One of the two scopes, as the deciding leader sees it.
#[derive(Clone, Copy, Debug)]
pub struct MergeInput<'a> {
    /// Its names.
    pub bounds: &'a ScopeBounds,
    /// Its load.
    pub load: &'a LoadFigures,
    /// Its size.
    pub size: &'a SizeFigures,
}

/// Which of the two scopes a reason is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The scope that keeps going (left range, or parent).
    Left,
    /// The scope merged into it (right range, or child).
    Right,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Left => "the left scope",
            Side::Right => "the right scope",
        })
    }
}

/// The merge decider's verdict.
#[derive(Clone, Debug, PartialEq)]
pub enum MergeDecision {
    /// Propose this merge.
    Merge(Box<MergeEvidence>),
    /// Do nothing now, for this reason.
    Stay(MergeReason),
}

/// Why two scopes do not merge now; its `Display` is what `scope show` prints.
#[derive(Clone, Debug, PartialEq)]
pub enum MergeReason {
    /// The scopes are not neighbours.
    NotAdjacent,
    /// One side holds too much.
    TooBig {
        /// Which side.
        side: Side,
        /// `names` or `bytes`.
        what: &'static str,
        /// Its figure.
        value: u64,
        /// The merge minimum it must stay under.
        min: u64,
    },
    /// One side's peak is not reliable yet.
    Unreliable {
        /// Which side.
        side: Side,
    },
    /// The summed peak is not under half a split limit.
    TooHot {
        /// `reads` or `writes`.
        what: &'static str,
        /// The summed peak, per second.
        sum: u64,
        /// Half the split limit, per second.
        half: u64,
    },
    /// The split is not old enough.
    TooYoung {
        /// Its age, ms.
        age_ms: u64,
        /// The policy's minimum, ms.
        min_ms: u64,
    },
    /// A merge was due, but automatic merges are off.
    AutoOff {
        /// The merge it would make.
        would: Box<MergeEvidence>,
    },
}

impl fmt::Display for MergeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeReason::NotAdjacent => {
                f.write_str("not adjacent: neither consecutive ranges nor a scope and its child")
            }
            MergeReason::TooBig {
                side,
                what,
                value,
                min,
            } => write!(f, "{side} holds {value} {what}; a merge needs under {min}"),
            MergeReason::Unreliable { side } => write!(
                f,
                "{side} has not been observed for a full window yet, so its peak load is unknown"
            ),
            MergeReason::TooHot { what, sum, half } => write!(
                f,
                "summed peak {what} {sum}/s; a merge needs under {half}/s (half the split limit)"
            ),
            MergeReason::TooYoung { age_ms, min_ms } => write!(
                f,
                "split {} s ago; a merge waits {} s",
                age_ms / 1000,
                min_ms / 1000
            ),
            MergeReason::AutoOff { would } => write!(
                f,
                "automatic merges are off ([merge] auto = false); it would merge {} into {}",
                side_text(&would.right),
                side_text(&would.left)
            ),
        }
    }
}

fn side_text(side: &MergeSide) -> String {
    match &side.start {
        Some(start) => format!("{} from {start}", side.prefix),
        None => side.prefix.to_string(),
    }
}

/// What the merge decider would do now for two scopes; `split_at_ms` is when the split
/// that made them two happened.
pub fn decide_merge(
    left: MergeInput<'_>,
    right: MergeInput<'_>,
    policy: &policy::Policy,
    now_ms: u64,
    split_at_ms: u64,
) -> MergeDecision {
    if !adjacent(left.bounds, right.bounds) {
        return MergeDecision::Stay(MergeReason::NotAdjacent);
    }
    let evidence = MergeEvidence {
        left: side(left),
        right: side(right),
        split_at_ms,
        decided_at_ms: now_ms,
    };
    if let Err(reason) = check_figures(&evidence, policy, now_ms) {
        return MergeDecision::Stay(reason);
    }
    if !policy.merge.auto {
        return MergeDecision::Stay(MergeReason::AutoOff {
            would: Box::new(evidence),
        });
    }
    MergeDecision::Merge(Box::new(evidence))
}

/// The check every member runs at apply on a proposed merge: the policy allows automatic
/// merges, the evidence is fresh, and its figures meet every merge rule.
pub fn justify_merge(
    evidence: &MergeEvidence,
    policy: &policy::Policy,
    now_ms: u64,
) -> Result<(), Refusal> {
    if !policy.merge.auto {
        return Err(Refusal::MergeAutoOff);
    }
    check_time(evidence.decided_at_ms, now_ms)?;
    let left = bounds_of(&evidence.left);
    let right = bounds_of(&evidence.right);
    if !adjacent(&left, &right) {
        return Err(Refusal::NotMergeable {
            why: MergeReason::NotAdjacent.to_string(),
        });
    }
    check_figures(evidence, policy, now_ms)
        .map_err(|r| Refusal::NotMergeable { why: r.to_string() })
}

fn side(input: MergeInput<'_>) -> MergeSide {
    MergeSide {
        prefix: input.bounds.prefix.clone(),
        start: input.bounds.start.clone(),
        end: input.bounds.end.clone(),
        names: input.size.names,
        bytes: input.size.bytes,
        load: LoadEvidence {
            reads_peak: input.load.reads_peak,
            writes_peak: input.load.writes_peak,
            peak_reliable: input.load.peak_reliable,
            over_ms: 0,
            over_low: 0,
        },
    }
}

fn bounds_of(side: &MergeSide) -> ScopeBounds {
    ScopeBounds {
        prefix: side.prefix.clone(),
        start: side.start.clone(),
        end: side.end.clone(),
    }
}

/// Consecutive ranges of one prefix, or a scope and a subtree inside its own names.
fn adjacent(left: &ScopeBounds, right: &ScopeBounds) -> bool {
    if left.prefix == right.prefix {
        return left.end.is_some() && left.end == right.start;
    }
    !right.is_range() && left.contains(&right.prefix)
}

fn check_figures(
    evidence: &MergeEvidence,
    policy: &policy::Policy,
    now_ms: u64,
) -> Result<(), MergeReason> {
    let names_min = policy.merge.names_min_for(&policy.split);
    let bytes_min = policy.merge.bytes_min_for(&policy.split);
    for (side, s) in [(Side::Left, &evidence.left), (Side::Right, &evidence.right)] {
        if s.names >= names_min {
            return Err(MergeReason::TooBig {
                side,
                what: "names",
                value: s.names,
                min: names_min,
            });
        }
        if s.bytes >= bytes_min {
            return Err(MergeReason::TooBig {
                side,
                what: "bytes",
                value: s.bytes,
                min: bytes_min,
            });
        }
    }
    for (side, s) in [(Side::Left, &evidence.left), (Side::Right, &evidence.right)] {
        if !s.load.peak_reliable {
            return Err(MergeReason::Unreliable { side });
        }
    }
    let (l, r) = (&evidence.left.load, &evidence.right.load);
    let split = &policy.split;
    for (what, sum, limit) in [
        (
            "reads",
            l.reads_peak.saturating_add(r.reads_peak),
            split.reads_per_s_max,
        ),
        (
            "writes",
            l.writes_peak.saturating_add(r.writes_peak),
            split.writes_per_s_max,
        ),
    ] {
        let half = u64::from(limit) / 2;
        if sum >= half {
            return Err(MergeReason::TooHot { what, sum, half });
        }
    }
    let age_ms = now_ms.saturating_sub(evidence.split_at_ms);
    let min_ms = u64::from(policy.merge.age_s_min) * 1000;
    if age_ms < min_ms {
        return Err(MergeReason::TooYoung { age_ms, min_ms });
    }
    Ok(())
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
