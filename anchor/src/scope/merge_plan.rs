//! The merge verdict the parent's leader acts on and `scope show` prints, for a parent and
//! one child it split off: [`super::merge::decide_merge`], then a check that the split
//! decider would not split the merged scope right back (the merged scope keeps the summed
//! peak and holds both sizes). Pure: figures, policy and time come in as arguments.

use std::fmt;

use proto::split::MergeEvidence;

use super::load::{ChildSize, LoadFigures, SizeFigures};
use super::merge::{decide_merge, MergeDecision, MergeInput, MergeReason};
use super::split::{decide, Decision, ScopeBounds};

/// One side of a parent/child pair, with its figures.
#[derive(Clone, Copy, Debug)]
pub struct Side<'a> {
    /// Its names.
    pub bounds: &'a ScopeBounds,
    /// Its load.
    pub load: &'a LoadFigures,
    /// Its size.
    pub size: &'a SizeFigures,
}

/// Why a parent and its child do not merge now.
#[derive(Clone, Debug, PartialEq)]
pub enum Hold {
    /// The merge decider says stay.
    Decider(MergeReason),
    /// The merged scope would split right away.
    WouldSplitAgain {
        /// What the split decider would do, in words.
        plan: String,
    },
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::Decider(r) => write!(f, "{r}"),
            Hold::WouldSplitAgain { plan } => write!(
                f,
                "the merged scope would split again at once ({plan}); no merge"
            ),
        }
    }
}

/// What to do about a parent and a child it split off at `split_at_ms`, at `now_ms`.
pub fn merge_verdict(
    parent: Side<'_>,
    child: Side<'_>,
    policy: &policy::Policy,
    now_ms: u64,
    split_at_ms: u64,
) -> Result<Box<MergeEvidence>, Hold> {
    let left = MergeInput {
        bounds: parent.bounds,
        load: parent.load,
        size: parent.size,
    };
    let right = MergeInput {
        bounds: child.bounds,
        load: child.load,
        size: child.size,
    };
    let evidence = match decide_merge(left, right, policy, now_ms, split_at_ms) {
        MergeDecision::Merge(e) => e,
        MergeDecision::Stay(reason) => return Err(Hold::Decider(reason)),
    };
    let (load, size) = merged(parent, child);
    let bounds = merged_bounds(parent.bounds, child.bounds);
    match decide(&load, &size, policy, &bounds, now_ms, None) {
        Decision::Split(e) => Err(Hold::WouldSplitAgain {
            plan: format!("{} ({} over the limit)", e.plan, e.trigger),
        }),
        Decision::Stay(_) => Ok(evidence),
    }
}

/// The names of the merged scope: the parent's, extended to the child's end when the child
/// is the range right after them.
pub fn merged_bounds(parent: &ScopeBounds, child: &ScopeBounds) -> ScopeBounds {
    let mut out = parent.clone();
    if child.prefix == parent.prefix && child.is_range() {
        out.end = child.end.clone();
    }
    out
}

/// The figures the merged scope would have: the summed peaks (CockroachDB keeps them after
/// a merge), both sizes, and the child's names among the parent's child labels (a subtree
/// as one label, a range as its own labels).
pub fn merged(parent: Side<'_>, child: Side<'_>) -> (LoadFigures, SizeFigures) {
    let mut load = parent.load.clone();
    load.reads_peak = load.reads_peak.saturating_add(child.load.reads_peak);
    load.writes_peak = load.writes_peak.saturating_add(child.load.writes_peak);
    load.reads_per_s = load.reads_per_s.saturating_add(child.load.reads_per_s);
    load.writes_per_s = load.writes_per_s.saturating_add(child.load.writes_per_s);
    let mut size = parent.size.clone();
    size.names = size.names.saturating_add(child.size.names);
    size.bytes = size.bytes.saturating_add(child.size.bytes);
    let depth = parent.bounds.prefix.depth();
    if child.bounds.prefix == parent.bounds.prefix {
        for c in &child.size.children {
            match size.children.iter_mut().find(|p| p.label == c.label) {
                Some(p) => {
                    p.names = p.names.saturating_add(c.names);
                    p.bytes = p.bytes.saturating_add(c.bytes);
                }
                None => size.children.push(c.clone()),
            }
        }
        size.children
            .sort_by(|a, b| b.names.cmp(&a.names).then_with(|| a.label.cmp(&b.label)));
    } else if let Some(label) = child.bounds.prefix.labels().get(depth) {
        match size.children.iter_mut().find(|c| &c.label == label) {
            Some(c) => {
                c.names = c.names.saturating_add(child.size.names);
                c.bytes = c.bytes.saturating_add(child.size.bytes);
            }
            None => size.children.push(ChildSize {
                label: label.clone(),
                names: child.size.names,
                bytes: child.size.bytes,
            }),
        }
        size.children
            .sort_by(|a, b| b.names.cmp(&a.names).then_with(|| a.label.cmp(&b.label)));
    }
    // The median moves; nothing here splits by size, and a size split would find it anew.
    size.median = None;
    (load, size)
}

#[cfg(test)]
#[path = "merge_plan_tests.rs"]
mod tests;
