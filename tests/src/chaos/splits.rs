//! The automatic splits of a chaos campaign ([`super::CampaignConfig::split_names_max`]):
//! every delegation that appears in any scope any anchor hosts, noted as it appears while
//! the faults are on, and counted by how it ended once the campaign is over. Read from each
//! replica's view (not through `ScopeInfo`, which would refresh the size scan the splitter
//! reuses).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anchor::Anchor;
use proto::{DelegationState, ScopeId};

/// A delegation: the parent scope, the prefix, the parent's log index.
type Key = (ScopeId, String, u64);

/// The automatic splits of one campaign, counted after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Splits {
    /// Splits handed over (the parent's delegation Active).
    pub active: usize,
    /// Of those, the splits whose entry was applied while the faults were on.
    pub during_faults: usize,
    /// Splits that ended Aborted.
    pub aborted: usize,
    /// Splits still Frozen when the campaign stopped waiting for them.
    pub frozen: usize,
    /// Split entries the leaders' splitters saw committed and justified
    /// (`anchorage_splits_total{outcome="split"}` summed over the anchors).
    pub committed: u64,
    /// Split proposals refused at apply or not known to have committed (outcomes
    /// `refused` and `error`).
    pub not_committed: u64,
}

/// Every delegation of every scope any of `anchors` hosts, in the most advanced state any
/// anchor reports (Frozen before Active or Aborted).
fn delegations(anchors: &[Anchor]) -> BTreeMap<Key, DelegationState> {
    let settled = |s: &DelegationState| *s != DelegationState::Frozen;
    let mut seen = BTreeMap::new();
    for a in anchors {
        for r in a.replicas() {
            let Some(ds) = r.state.with_view(|v| {
                v.delegations
                    .values()
                    .map(|d| ((r.id, d.referral.prefix.to_string(), d.index), d.state))
                    .collect::<Vec<_>>()
            }) else {
                continue;
            };
            for (key, state) in ds {
                let known = seen.entry(key).or_insert(state);
                if settled(&state) && !settled(known) {
                    *known = state;
                }
            }
        }
    }
    seen
}

/// Until `deadline`, notes every delegation as soon as one anchor has applied it.
pub(super) async fn watch(anchors: &[Anchor], deadline: Instant) -> BTreeSet<Key> {
    let mut seen = BTreeSet::new();
    while Instant::now() < deadline {
        seen.extend(delegations(anchors).into_keys());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// After the campaign: waits until no split is Frozen and `levels` splits are handed over
/// (the names may also have been deleted down to the limit, so that fewer splits are due:
/// then until `within` passes), and counts them; `during_faults` are the ones [`watch`]
/// saw.
pub(super) async fn count(
    anchors: &[Anchor],
    levels: usize,
    during_faults: &BTreeSet<Key>,
    within: Duration,
) -> Splits {
    let deadline = Instant::now() + within;
    let seen = loop {
        let seen = delegations(anchors);
        let of = |state| seen.values().filter(|s| **s == state).count();
        let done = of(DelegationState::Frozen) == 0 && of(DelegationState::Active) >= levels;
        if done || Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let of = |state| seen.values().filter(|s| **s == state).count();
    let metric = |outcome: &str| -> u64 {
        let splits = |a: &Anchor, reason| {
            a.metrics()
                .splits
                .with_label_values(&["subtree", reason, outcome])
                .get()
        };
        anchors
            .iter()
            .map(|a| splits(a, "size") + splits(a, "load"))
            .sum()
    };
    Splits {
        active: of(DelegationState::Active),
        during_faults: seen
            .iter()
            .filter(|(k, s)| **s == DelegationState::Active && during_faults.contains(*k))
            .count(),
        aborted: of(DelegationState::Aborted),
        frozen: of(DelegationState::Frozen),
        committed: metric("split"),
        not_committed: metric("refused") + metric("error"),
    }
}
