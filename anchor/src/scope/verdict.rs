//! The split and merge deciders' verdicts in words: why a scope does not split now
//! ([`Reason`], what `scope show` prints) and why a member refuses a proposed split or
//! merge at apply ([`Refusal`]), with the time checks on evidence both share.

use std::fmt;

use proto::split::{percent, Basis, SplitEvidence, Trigger};
use thiserror::Error;

use super::sampler::{Candidate, COUNTS_MIN, IMBALANCE_MAX};

/// Oldest evidence a member accepts at apply, ms after the leader decided.
pub const EVIDENCE_AGE_MS_MAX: u64 = 60_000;
/// How far ahead of a member's clock the leader's decision time may be, ms.
pub const CLOCK_SKEW_MS_MAX: u64 = 5_000;

/// Why a scope does not split now; its `Display` is what `scope show` prints.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// No limit is exceeded.
    UnderLimits {
        /// Reads in the last second, and the limit.
        reads: (u64, u64),
        /// Writes in the last second, and the limit.
        writes: (u64, u64),
        /// Names held, and the limit.
        names: (u64, u64),
        /// Bytes held, and the limit.
        bytes: (u64, u64),
    },
    /// A load limit is exceeded, but not for long enough yet.
    Holding {
        /// Which limit.
        trigger: Trigger,
        /// The limit, per second.
        limit: u64,
        /// How long it has been exceeded, ms.
        for_ms: u64,
        /// How long it must be, ms.
        hold_ms: u64,
    },
    /// The sampler has not seen enough requests yet.
    NotSampled {
        /// Which limit.
        trigger: Trigger,
    },
    /// One name takes most of the requests: no split would spread them.
    HotName {
        /// Which limit.
        trigger: Trigger,
        /// The name and its counts.
        hottest: Candidate,
    },
    /// No sampled key qualifies.
    NoKey {
        /// Which limit.
        trigger: Trigger,
        /// The nearest miss.
        best: Option<Candidate>,
    },
    /// A size limit is exceeded, but no median name inside the scope is known.
    NoMedian {
        /// Which limit.
        trigger: Trigger,
    },
    /// A split was due, but the last one was too recent.
    TooSoon {
        /// Since the last split, ms.
        since_ms: u64,
        /// The policy's minimum, ms.
        min_ms: u64,
        /// The split it would make.
        would: Box<SplitEvidence>,
    },
    /// A split was due, but automatic splits are off.
    AutoOff {
        /// The split it would make.
        would: Box<SplitEvidence>,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::UnderLimits {
                reads,
                writes,
                names,
                bytes,
            } => write!(
                f,
                "under every limit: reads {}/s of {}/s, writes {}/s of {}/s, {} names of {}, {} bytes of {}",
                reads.0, reads.1, writes.0, writes.1, names.0, names.1, bytes.0, bytes.1
            ),
            Reason::Holding {
                trigger,
                limit,
                for_ms,
                hold_ms,
            } => write!(
                f,
                "{trigger} over the limit {limit}/s for {} s of {} s",
                for_ms / 1000,
                hold_ms / 1000
            ),
            Reason::NotSampled { trigger } => write!(
                f,
                "{trigger} over the limit, but the sampler has not counted {COUNTS_MIN} requests yet"
            ),
            Reason::HotName { trigger, hottest } => write!(
                f,
                "no qualifying split key: one hot name {} carries {} of {trigger}",
                hottest.at,
                percent(hottest.on, hottest.counts())
            ),
            Reason::NoKey { trigger, best } => match best {
                Some(c) if c.counts() < COUNTS_MIN => write!(
                    f,
                    "no qualifying split key for {trigger}: the best candidate {} has {} of {COUNTS_MIN} counts",
                    c.at,
                    c.counts()
                ),
                Some(c) => write!(
                    f,
                    "no qualifying split key for {trigger}: the best candidate {} splits {}/{} (imbalance {:.2}, must be under {IMBALANCE_MAX})",
                    c.at,
                    percent(c.left, c.counts()),
                    percent(c.right, c.counts()),
                    c.imbalance()
                ),
                None => write!(f, "no qualifying split key for {trigger}: no candidate"),
            },
            Reason::NoMedian { trigger } => write!(
                f,
                "{trigger} over the limit, but no median name to cut at is known"
            ),
            Reason::TooSoon {
                since_ms,
                min_ms,
                would,
            } => write!(
                f,
                "last split {} s ago, splits are at least {} s apart; then: {}",
                since_ms / 1000,
                min_ms / 1000,
                would.plan
            ),
            Reason::AutoOff { would } => write!(
                f,
                "automatic splits are off ([split] auto = false); it would make a {} ({} over the limit)",
                would.plan, would.trigger
            ),
        }
    }
}

/// Why a member refuses a proposed split at apply.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Refusal {
    /// `[split] auto = false`.
    #[error("automatic splits are off in this scope's policy ([split] auto = false)")]
    AutoOff,
    /// The evidence is older than [`EVIDENCE_AGE_MS_MAX`].
    #[error("the evidence was decided {age_ms} ms before apply; at most {EVIDENCE_AGE_MS_MAX} ms are accepted")]
    Stale {
        /// Its age, ms.
        age_ms: u64,
    },
    /// The evidence is dated ahead of this member's clock.
    #[error("the evidence is dated {ahead_ms} ms ahead of this member; at most {CLOCK_SKEW_MS_MAX} ms of clock skew are accepted")]
    FromTheFuture {
        /// How far ahead, ms.
        ahead_ms: u64,
    },
    /// The last split of the scope is too recent.
    #[error("the last split was {since_ms} ms ago; the policy wants {min_ms} ms between splits")]
    TooSoon {
        /// Since the last split, ms.
        since_ms: u64,
        /// The policy's minimum, ms.
        min_ms: u64,
    },
    /// The figures do not exceed the limit named as the trigger.
    #[error("{trigger} at {value} does not exceed the limit {limit}")]
    NotOver {
        /// Which limit.
        trigger: Trigger,
        /// The figure (this member's own count for names).
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// A load limit exceeded for less than the policy's hold.
    #[error("{trigger} exceeded the limit for {for_ms} ms; the policy wants {hold_ms} ms")]
    NotHeld {
        /// Which limit.
        trigger: Trigger,
        /// For how long, ms.
        for_ms: u64,
        /// The hold, ms.
        hold_ms: u64,
    },
    /// The plan balances something else than the trigger measures.
    #[error("a {trigger} trigger cannot justify a plan by {basis}")]
    BasisMismatch {
        /// Which limit.
        trigger: Trigger,
        /// What the plan balances.
        basis: Basis,
    },
    /// The split key or child lies outside the scope, or leaves one side empty.
    #[error("{name} cannot split this scope ({why})")]
    OutsideScope {
        /// The key or child prefix (as text: a bad label has no name).
        name: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The counts do not show a balanced cut or a dominant child.
    #[error("{what}")]
    Unbalanced {
        /// What is wrong, with the figures.
        what: String,
    },
    /// `[merge] auto = false`.
    #[error("automatic merges are off in this scope's policy ([merge] auto = false)")]
    MergeAutoOff,
    /// The merge evidence breaks a merge rule.
    #[error("the scopes may not merge: {why}")]
    NotMergeable {
        /// The rule broken, with the figures.
        why: String,
    },
}

/// The time checks shared by splits and merges: the evidence was decided at most
/// [`EVIDENCE_AGE_MS_MAX`] before `now_ms` and at most [`CLOCK_SKEW_MS_MAX`] after it.
pub fn check_time(decided_at_ms: u64, now_ms: u64) -> Result<(), Refusal> {
    if decided_at_ms > now_ms + CLOCK_SKEW_MS_MAX {
        return Err(Refusal::FromTheFuture {
            ahead_ms: decided_at_ms - now_ms,
        });
    }
    let age_ms = now_ms.saturating_sub(decided_at_ms);
    if age_ms > EVIDENCE_AGE_MS_MAX {
        return Err(Refusal::Stale { age_ms });
    }
    Ok(())
}
