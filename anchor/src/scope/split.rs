//! The split decider: whether a scope should split now, how, and why not; and the check
//! every member runs at apply before it executes a split. Pure: figures, policy and time
//! come in as arguments, so the leader and every member reach the same verdict.
//!
//! A scope splits by its own decision and no single member can reshape it on its own say:
//! the leader runs [`decide`] on its [`LoadFigures`] and [`SizeFigures`]; a
//! [`Decision::Split`] carries a [`SplitEvidence`] that is proposed as an entry of the
//! scope's log, and every member runs [`justify`] on it at apply, against its own copy of
//! the policy and its own name count. [`Decision::Stay`] carries the [`Reason`] that
//! `scope show` prints.
//!
//! The rules, and where they come from:
//! - A **size** limit (`[split] names_max`, `bytes_max`) splits as soon as it is exceeded
//!   (CockroachDB and TiKV split ranges by size at once). One child label holding at
//!   least [`SUBTREE_SHARE_MIN_PERCENT`] of the names (or bytes) becomes a subtree scope;
//!   otherwise the key range is cut at the median name, which the caller supplies.
//! - A **load** limit (`reads_per_s_max`, `writes_per_s_max`) splits only when every second
//!   of the last `window_s` seconds exceeded it (TiKV: 10 one-second rounds; CockroachDB:
//!   more than 10 s of sampling). One child label carrying at least
//!   [`SUBTREE_SHARE_MIN_PERCENT`] of the requests becomes a subtree scope; otherwise the
//!   range is cut at the sampler's qualifying key. No qualifying key, no load split. One
//!   name taking at least [`HOT_NAME_SHARE_PERCENT`] of the requests never becomes a
//!   subtree scope of its own, as moving it would not spread its load; a qualifying key
//!   may still cut the range next to it, which does.
//! - Two splits of one scope are at least `interval_s_min` apart (CockroachDB: at most
//!   once a minute), and nothing splits with `auto = false`: the decider still says what it
//!   would do.
//! - At apply, evidence older than [`EVIDENCE_AGE_MS_MAX`], from more than
//!   [`CLOCK_SKEW_MS_MAX`] in the future, that does not exceed a limit, whose key lies
//!   outside the scope or does not balance, is refused with a [`Refusal`].
//!
//! Merges are decided in [`super::merge`].

use proto::split::{percent, Basis, LoadEvidence, SplitEvidence, SplitPlan, Trigger};
use proto::Name;

use super::load::{LoadFigures, Over, SizeFigures};
use super::sampler::{Candidate, KeyFinding, COUNTS_MIN, IMBALANCE_MAX};
use super::verdict::check_time;
pub use super::verdict::{Reason, Refusal, CLOCK_SKEW_MS_MAX, EVIDENCE_AGE_MS_MAX};

/// Share of the load or size one child label needs for a subtree split, percent.
pub const SUBTREE_SHARE_MIN_PERCENT: u64 = 50;
/// Share of the requests on one name that blocks a load split, percent.
pub const HOT_NAME_SHARE_PERCENT: u64 = 50;

/// The names a scope owns: everything under `prefix`, or, for a range of it, the names
/// from `start` (inclusive) to `end` (exclusive) in name order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeBounds {
    /// The prefix.
    pub prefix: Name,
    /// The first name of the range; `None`: from the prefix.
    pub start: Option<Name>,
    /// The first name after the range; `None`: to the end of the subtree.
    pub end: Option<Name>,
}

impl ScopeBounds {
    /// The whole subtree of `prefix`.
    pub fn subtree(prefix: Name) -> ScopeBounds {
        ScopeBounds {
            prefix,
            start: None,
            end: None,
        }
    }

    /// True if the scope owns `name`.
    pub fn contains(&self, name: &Name) -> bool {
        name.is_under(&self.prefix)
            && self.start.as_ref().is_none_or(|s| name >= s)
            && self.end.as_ref().is_none_or(|e| name < e)
    }

    /// True for a range of a prefix rather than its whole subtree.
    pub fn is_range(&self) -> bool {
        self.start.is_some() || self.end.is_some()
    }

    /// The first name the scope can own.
    fn first(&self) -> &Name {
        self.start.as_ref().unwrap_or(&self.prefix)
    }
}

/// What the scope holds, as a member sees it at apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// Names in the member's state machine.
    pub names: u64,
    /// Bytes, when the state machine counts them; otherwise the evidence's figure is used.
    pub bytes: Option<u64>,
}

/// The decider's verdict.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Propose this split.
    Split(SplitEvidence),
    /// Do nothing now, for this reason.
    Stay(Reason),
}

/// What the decider would do now. `last_split_ms` is when this scope last split (or was
/// created by a split), if ever.
pub fn decide(
    load: &LoadFigures,
    size: &SizeFigures,
    policy: &policy::Policy,
    bounds: &ScopeBounds,
    now_ms: u64,
    last_split_ms: Option<u64>,
) -> Decision {
    let split = &policy.split;
    let by_size = if size.names > u64::from(split.names_max) {
        Some(size_plan(Trigger::Names, size, bounds))
    } else if size.bytes > split.bytes_max {
        Some(size_plan(Trigger::Bytes, size, bounds))
    } else {
        None
    };
    let plan = match by_size {
        Some(Ok(plan)) => Ok(plan),
        Some(Err(size_reason)) => load_plan(load, size, split, bounds).map_err(|_| size_reason),
        None => load_plan(load, size, split, bounds),
    };
    let (trigger, plan) = match plan {
        Ok(p) => p,
        Err(reason) => return Decision::Stay(reason),
    };
    let over = match trigger {
        Trigger::Reads => load.reads_over,
        Trigger::Writes => load.writes_over,
        Trigger::Names | Trigger::Bytes => None,
    };
    let evidence = SplitEvidence {
        plan,
        trigger,
        decided_at_ms: now_ms,
        names: size.names,
        bytes: size.bytes,
        load: LoadEvidence {
            reads_peak: load.reads_peak,
            writes_peak: load.writes_peak,
            peak_reliable: load.peak_reliable,
            over_ms: over.map_or(0, |o| o.for_ms),
            over_low: over.map_or(0, |o| o.low),
        },
    };
    if !split.auto {
        return Decision::Stay(Reason::AutoOff {
            would: Box::new(evidence),
        });
    }
    let min_ms = u64::from(split.interval_s_min) * 1000;
    if let Some(since_ms) = last_split_ms.map(|t| now_ms.saturating_sub(t)) {
        if since_ms < min_ms {
            return Decision::Stay(Reason::TooSoon {
                since_ms,
                min_ms,
                would: Box::new(evidence),
            });
        }
    }
    Decision::Split(evidence)
}

/// A size split: a dominant child subtree, else the median.
fn size_plan(
    trigger: Trigger,
    size: &SizeFigures,
    bounds: &ScopeBounds,
) -> Result<(Trigger, SplitPlan), Reason> {
    let whole = match trigger {
        Trigger::Bytes => size.bytes,
        _ => size.names,
    };
    let of = |c: &super::load::ChildSize| match trigger {
        Trigger::Bytes => c.bytes,
        _ => c.names,
    };
    let top = size
        .children
        .iter()
        .max_by(|a, b| of(a).cmp(&of(b)).then(b.label.cmp(&a.label)));
    if let Some(child) = top.filter(|c| holds_label(bounds, &c.label) && dominant(of(c), whole)) {
        let plan = SplitPlan::Subtree {
            label: child.label.clone(),
            basis: Basis::Size,
            part: of(child),
            whole,
        };
        return Ok((trigger, plan));
    }
    match &size.median {
        Some(m) if inside(bounds, &m.at) && m.left > 0 && m.left < size.names => Ok((
            trigger,
            SplitPlan::Range {
                at: m.at.clone(),
                basis: Basis::Size,
                left: m.left,
                right: size.names - m.left,
            },
        )),
        _ => Err(Reason::NoMedian { trigger }),
    }
}

/// A load split: after the hold, a dominant child subtree, else the sampler's key.
fn load_plan(
    load: &LoadFigures,
    size: &SizeFigures,
    split: &policy::Split,
    bounds: &ScopeBounds,
) -> Result<(Trigger, SplitPlan), Reason> {
    let hold_ms = u64::from(split.window_s) * 1000;
    let limits = [
        (
            Trigger::Reads,
            load.reads_over,
            u64::from(split.reads_per_s_max),
        ),
        (
            Trigger::Writes,
            load.writes_over,
            u64::from(split.writes_per_s_max),
        ),
    ];
    let held = limits
        .iter()
        .filter_map(|(t, over, limit)| over.map(|o| (*t, o, *limit)))
        .max_by_key(|(_, o, _): &(Trigger, Over, u64)| o.for_ms);
    let Some((trigger, over, limit)) = held else {
        return Err(Reason::UnderLimits {
            reads: (load.reads_per_s, split.reads_per_s_max.into()),
            writes: (load.writes_per_s, split.writes_per_s_max.into()),
            names: (size.names, split.names_max.into()),
            bytes: (size.bytes, split.bytes_max),
        });
    };
    if over.for_ms < hold_ms {
        return Err(Reason::Holding {
            trigger,
            limit,
            for_ms: over.for_ms,
            hold_ms,
        });
    }
    let (found, best, hottest) = match &load.key {
        KeyFinding::NotSampled => return Err(Reason::NotSampled { trigger }),
        KeyFinding::Found { key, hottest } => (Some(key), Some(key), hottest.as_ref()),
        KeyFinding::NoKey { best, hottest } => (None, best.as_ref(), hottest.as_ref()),
    };
    let found = found.filter(|k| inside(bounds, &k.at));
    let hot = hottest.filter(|h| h.on * 100 >= h.counts() * HOT_NAME_SHARE_PERCENT);
    if let (Some(h), None) = (hot, found) {
        return Err(Reason::HotName {
            trigger,
            hottest: h.clone(),
        });
    }
    let shares = &load.children;
    if let Some((label, n)) = shares.labels.first() {
        // Moving one hot name into a scope of its own would not spread its load.
        let hot_inside = hot.is_some_and(|h| {
            let child = bounds.prefix.child(label);
            child.is_ok_and(|c| h.at.is_under(&c))
        });
        if holds_label(bounds, label)
            && !hot_inside
            && shares.total >= COUNTS_MIN
            && dominant(*n, shares.total)
        {
            let plan = SplitPlan::Subtree {
                label: label.clone(),
                basis: Basis::Load,
                part: *n,
                whole: shares.total,
            };
            return Ok((trigger, plan));
        }
    }
    match found {
        Some(k) => Ok((
            trigger,
            SplitPlan::Range {
                at: k.at.clone(),
                basis: Basis::Load,
                left: k.left,
                right: k.right,
            },
        )),
        None => Err(Reason::NoKey {
            trigger,
            best: best.cloned(),
        }),
    }
}

/// True if the subtree of the child label `label` lies inside the scope's range (a range
/// scope may split off a subtree of its own, as the whole prefix may).
fn holds_label(bounds: &ScopeBounds, label: &str) -> bool {
    bounds
        .prefix
        .child(label)
        .is_ok_and(|child| bounds.contains(&child))
}

/// At least [`SUBTREE_SHARE_MIN_PERCENT`] of a non-empty whole.
fn dominant(part: u64, whole: u64) -> bool {
    whole > 0
        && part <= whole
        && u128::from(part) * 100 >= u128::from(whole) * u128::from(SUBTREE_SHARE_MIN_PERCENT)
}

/// True if `at` is inside the scope and not its first name (which would leave the left
/// side empty).
fn inside(bounds: &ScopeBounds, at: &Name) -> bool {
    // The cut is carried out at the label right below the prefix (no subtree is cut).
    proto::KeyRange::boundary(&bounds.prefix, at)
        .is_some_and(|cut| bounds.contains(&cut) && &cut != bounds.first())
}

/// The check every member runs at apply on a proposed split: the evidence must exceed a
/// limit of this member's policy for long enough, its key or child must lie inside the
/// scope and balance, and the policy must allow automatic splits now.
pub fn justify(
    evidence: &SplitEvidence,
    bounds: &ScopeBounds,
    held: Held,
    policy: &policy::Policy,
    now_ms: u64,
    last_split_ms: Option<u64>,
) -> Result<(), Refusal> {
    let split = &policy.split;
    if !split.auto {
        return Err(Refusal::AutoOff);
    }
    check_time(evidence.decided_at_ms, now_ms)?;
    let min_ms = u64::from(split.interval_s_min) * 1000;
    if let Some(since_ms) = last_split_ms.map(|t| now_ms.saturating_sub(t)) {
        if since_ms < min_ms {
            return Err(Refusal::TooSoon { since_ms, min_ms });
        }
    }
    let trigger = evidence.trigger;
    let not_over = |value, limit| Refusal::NotOver {
        trigger,
        value,
        limit,
    };
    let hold_ms = u64::from(split.window_s) * 1000;
    match trigger {
        Trigger::Names if held.names <= u64::from(split.names_max) => {
            return Err(not_over(held.names, split.names_max.into()));
        }
        Trigger::Bytes => {
            let bytes = held.bytes.unwrap_or(evidence.bytes);
            if bytes <= split.bytes_max {
                return Err(not_over(bytes, split.bytes_max));
            }
        }
        Trigger::Reads | Trigger::Writes => {
            let limit = match trigger {
                Trigger::Reads => split.reads_per_s_max,
                _ => split.writes_per_s_max,
            };
            if evidence.load.over_low <= u64::from(limit) {
                return Err(not_over(evidence.load.over_low, limit.into()));
            }
            if evidence.load.over_ms < hold_ms {
                return Err(Refusal::NotHeld {
                    trigger,
                    for_ms: evidence.load.over_ms,
                    hold_ms,
                });
            }
        }
        Trigger::Names => {}
    }
    let basis = evidence.plan.basis();
    if basis != trigger.basis() {
        return Err(Refusal::BasisMismatch { trigger, basis });
    }
    justify_plan(&evidence.plan, bounds)
}

fn justify_plan(plan: &SplitPlan, bounds: &ScopeBounds) -> Result<(), Refusal> {
    match plan {
        SplitPlan::Subtree {
            label,
            basis,
            part,
            whole,
        } => {
            let outside = |why| Refusal::OutsideScope {
                name: format!("{}/{label}", bounds.prefix),
                why,
            };
            if bounds.prefix.child(label).is_err() {
                return Err(outside("not a valid label"));
            }
            if !holds_label(bounds, label) {
                return Err(outside("outside the scope's range"));
            }
            if !dominant(*part, *whole) {
                return Err(Refusal::Unbalanced {
                    what: format!(
                        "child label {label:?} carries {} of the {basis}; a subtree split needs {SUBTREE_SHARE_MIN_PERCENT}%",
                        percent(*part, *whole)
                    ),
                });
            }
            if *basis == Basis::Load && *whole < COUNTS_MIN {
                return Err(Refusal::Unbalanced {
                    what: format!("{whole} requests counted; a load split needs {COUNTS_MIN}"),
                });
            }
            Ok(())
        }
        SplitPlan::Range {
            at,
            basis,
            left,
            right,
        } => {
            if !inside(bounds, at) {
                return Err(Refusal::OutsideScope {
                    name: at.to_string(),
                    why: "outside the scope's names, or its first name",
                });
            }
            if *left == 0 || *right == 0 {
                return Err(Refusal::Unbalanced {
                    what: format!(
                        "a cut at {at} leaves one side empty ({left} left, {right} right)"
                    ),
                });
            }
            if *basis == Basis::Load {
                let c = Candidate {
                    at: at.clone(),
                    left: *left,
                    right: *right,
                    on: 0,
                };
                if !c.qualifies() {
                    return Err(Refusal::Unbalanced {
                        what: format!(
                            "the key {at} has {} counts and imbalance {:.2}; it needs {COUNTS_MIN} counts and under {IMBALANCE_MAX}",
                            c.counts(),
                            c.imbalance()
                        ),
                    });
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
