//! The automatic splits and merges of a chaos campaign
//! ([`super::CampaignConfig::split_names_max`], [`super::CampaignConfig::merge_names_min`]):
//! every delegation that appears in any scope any anchor hosts, followed on a
//! [`Timeline`] from the moment one anchor has applied it (noting whether the faults were
//! on) through Active and Merging to its removal (only `MergeDone` removes a delegation),
//! and counted by how it ended once the campaign is over. Read from each replica's view
//! (not through `ScopeInfo`, which would refresh the size scan the splitter reuses).
//! Learned ranges (`DelegationState::Learned`) are another scope's split seen from here,
//! not splits of this scope: they are left out.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anchor::Anchor;
use proto::{DelegationState, ScopeId};

/// A delegation: the parent scope, the prefix, the parent's log index.
type Key = (ScopeId, String, u64);

/// The automatic splits of one campaign, counted after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Splits {
    /// Splits handed over (the parent's delegation seen Active, or merged back since).
    pub active: usize,
    /// Of those, the splits whose entry was applied while the faults were on.
    pub during_faults: usize,
    /// Splits that ended Aborted.
    pub aborted: usize,
    /// Splits still Frozen when the campaign stopped waiting for them.
    pub frozen: usize,
    /// Split entries the leaders' splitters saw committed and justified
    /// (`anchorage_splits_total{outcome="split"}` summed over the anchors, subtree and
    /// range splits).
    pub committed: u64,
    /// Split proposals refused at apply or not known to have committed (outcomes
    /// `refused` and `error`).
    pub not_committed: u64,
}

/// The automatic merges of one campaign, counted after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Merges {
    /// Split-off children merged back (their delegation removed by `MergeDone`).
    pub merged: usize,
    /// Merges begun (delegation seen Merging, or removed) while the faults were on.
    pub begun_during_faults: usize,
    /// Of the merged, those removed while the faults were on.
    pub merged_during_faults: usize,
    /// Merges seen begun that ended with the delegation Active again (`MergeAborted`).
    pub aborted: usize,
    /// Delegations still Merging when the campaign stopped waiting.
    pub merging: usize,
    /// `anchorage_merges_total` summed over the anchors, by outcome (`proposed`, `merged`,
    /// `aborted`, `too_big`, `refused`, `removed`, `error`).
    pub proposed: u64,
    /// See [`Merges::proposed`]: outcome `merged` (`MergeDone` committed).
    pub committed: u64,
    /// See [`Merges::proposed`]: outcomes `aborted` and `too_big`.
    pub aborted_steps: u64,
    /// See [`Merges::proposed`]: outcomes `refused` and `error`.
    pub refused_or_error: u64,
}

/// What the timeline knows of one delegation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Track {
    /// First seen while the faults were on.
    during_faults: bool,
    /// Its most advanced state at the last look (see [`rank`]).
    state: DelegationState,
    /// Seen Active at some look (handed over).
    active: bool,
    /// First seen Merging: `Some(faults on then)`.
    merging: Option<bool>,
    /// Found gone (merged back): `Some(faults on then)`.
    gone: Option<bool>,
}

/// Every delegation seen so far, and what became of it.
#[derive(Clone, Debug, Default)]
pub(super) struct Timeline {
    tracks: BTreeMap<Key, Track>,
}

/// The order in which states win when anchors disagree: a lagging anchor's Frozen loses
/// to another's Active or Aborted, and Merging (the step after Active) wins over both.
fn rank(s: &DelegationState) -> u8 {
    match s {
        DelegationState::Frozen => 0,
        DelegationState::Active | DelegationState::Aborted => 1,
        DelegationState::Merging { .. } => 2,
        DelegationState::Learned { .. } => 3,
    }
}

impl Timeline {
    /// Takes one look: `now` is every (delegation, state) some anchor reports, with the
    /// faults on or not. A delegation seen before and reported by no anchor now was removed,
    /// which only `MergeDone` does.
    fn observe(&mut self, now: &[(Key, DelegationState)], faults_on: bool) {
        let mut best: BTreeMap<&Key, DelegationState> = BTreeMap::new();
        for (key, state) in now {
            if matches!(state, DelegationState::Learned { .. }) {
                continue;
            }
            let known = best.entry(key).or_insert(*state);
            if rank(state) > rank(known) {
                *known = *state;
            }
        }
        for (key, state) in &best {
            let track = self.tracks.entry((*key).clone()).or_insert(Track {
                during_faults: faults_on,
                state: *state,
                active: false,
                merging: None,
                gone: None,
            });
            track.state = *state;
            track.active |= *state == DelegationState::Active;
            if matches!(state, DelegationState::Merging { .. }) {
                track.active = true;
                track.merging.get_or_insert(faults_on);
            }
        }
        for (key, track) in self.tracks.iter_mut() {
            if !best.contains_key(key) && track.gone.is_none() {
                track.gone = Some(faults_on);
            }
        }
    }

    /// Delegations (not removed) in exactly this kind of state now.
    fn now_in(&self, want: fn(&DelegationState) -> bool) -> usize {
        self.tracks
            .values()
            .filter(|t| t.gone.is_none() && want(&t.state))
            .count()
    }

    /// True when no split is Frozen and no merge in flight, and at least `splits` splits
    /// were handed over.
    fn settled(&self, splits: usize) -> bool {
        self.now_in(|s| *s == DelegationState::Frozen) == 0
            && self.now_in(|s| matches!(s, DelegationState::Merging { .. })) == 0
            && self.splits().active >= splits
    }

    /// The splits, without the metrics.
    fn splits(&self) -> Splits {
        let handed_over = |t: &&Track| t.active || t.gone.is_some();
        Splits {
            active: self.tracks.values().filter(handed_over).count(),
            during_faults: self
                .tracks
                .values()
                .filter(handed_over)
                .filter(|t| t.during_faults)
                .count(),
            aborted: self.now_in(|s| *s == DelegationState::Aborted),
            frozen: self.now_in(|s| *s == DelegationState::Frozen),
            ..Splits::default()
        }
    }

    /// The merges, without the metrics.
    fn merges(&self) -> Merges {
        let t = || self.tracks.values();
        Merges {
            merged: t().filter(|t| t.gone.is_some()).count(),
            begun_during_faults: t()
                .filter(|t| t.merging == Some(true) || t.gone == Some(true))
                .count(),
            merged_during_faults: t().filter(|t| t.gone == Some(true)).count(),
            aborted: t()
                .filter(|t| t.merging.is_some() && t.gone.is_none())
                .filter(|t| t.state == DelegationState::Active)
                .count(),
            merging: self.now_in(|s| matches!(s, DelegationState::Merging { .. })),
            ..Merges::default()
        }
    }
}

/// Every delegation of every scope any of `anchors` hosts, as each anchor reports it.
fn delegations(anchors: &[Anchor]) -> Vec<(Key, DelegationState)> {
    let mut seen = Vec::new();
    for a in anchors {
        for r in a.replicas() {
            if let Some(ds) = r.state.with_view(|v| {
                v.delegations
                    .values()
                    .map(|d| ((r.id, d.referral.prefix.to_string(), d.index), d.state))
                    .collect::<Vec<_>>()
            }) {
                seen.extend(ds);
            }
        }
    }
    seen
}

/// Until `deadline` (while the faults are on), looks at the delegations every 100 ms.
pub(super) async fn watch(anchors: &[Anchor], deadline: Instant) -> Timeline {
    let mut timeline = Timeline::default();
    while Instant::now() < deadline {
        timeline.observe(&delegations(anchors), true);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    timeline
}

/// After the campaign: goes on looking until no split is Frozen, no merge is in flight and
/// `levels` splits were handed over (the names may also have been deleted down to the
/// limit, so that fewer splits are due: then until `within` passes), and counts the splits
/// and merges.
pub(super) async fn count(
    anchors: &[Anchor],
    levels: usize,
    mut timeline: Timeline,
    within: Duration,
) -> (Splits, Merges) {
    let deadline = Instant::now() + within;
    loop {
        timeline.observe(&delegations(anchors), false);
        if timeline.settled(levels) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let splits_metric = |outcome: &str| -> u64 {
        let splits = |a: &Anchor, kind, reason| {
            a.metrics()
                .splits
                .with_label_values(&[kind, reason, outcome])
                .get()
        };
        let kinds = [("subtree", "size"), ("subtree", "load")];
        let kinds = kinds
            .into_iter()
            .chain([("range", "size"), ("range", "load")]);
        anchors
            .iter()
            .flat_map(|a| kinds.clone().map(move |(k, r)| splits(a, k, r)))
            .sum()
    };
    let merges_metric = |outcome: &str| -> u64 {
        anchors
            .iter()
            .map(|a| a.metrics().merges.with_label_values(&[outcome]).get())
            .sum()
    };
    let splits = Splits {
        committed: splits_metric("split"),
        not_committed: splits_metric("refused") + splits_metric("error"),
        ..timeline.splits()
    };
    let merges = Merges {
        proposed: merges_metric("proposed"),
        committed: merges_metric("merged"),
        aborted_steps: merges_metric("aborted") + merges_metric("too_big"),
        refused_or_error: merges_metric("refused") + merges_metric("error"),
        ..timeline.merges()
    };
    (splits, merges)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::DelegationState::{Aborted, Active, Frozen, Learned, Merging};

    fn key(prefix: &str) -> Key {
        (ScopeId::root(), prefix.to_string(), 7)
    }

    #[test]
    fn a_split_handed_over_then_merged_back_under_the_faults_counts_once_each() {
        let mut t = Timeline::default();
        t.observe(&[(key("/a"), Frozen)], true);
        assert!(!t.settled(0), "a frozen split is not settled");
        // One anchor is behind: the most advanced state counts.
        t.observe(&[(key("/a"), Frozen), (key("/a"), Active)], true);
        t.observe(
            &[(key("/a"), Active), (key("/a"), Merging { index: 9 })],
            true,
        );
        assert!(!t.settled(1), "a merge in flight is not settled");
        t.observe(&[], true);
        t.observe(&[], false);
        assert!(t.settled(1));
        let s = t.splits();
        assert_eq!(
            (s.active, s.during_faults, s.frozen, s.aborted),
            (1, 1, 0, 0)
        );
        let m = t.merges();
        assert_eq!(m.merged, 1);
        assert_eq!(m.begun_during_faults, 1);
        assert_eq!(m.merged_during_faults, 1);
        assert_eq!((m.aborted, m.merging), (0, 0));
    }

    #[test]
    fn a_merge_after_the_faults_an_aborted_merge_and_learned_ranges() {
        let mut t = Timeline::default();
        t.observe(
            &[
                (key("/a"), Active),
                (key("/b"), Active),
                (key("/c"), Aborted),
                (
                    key("/l"),
                    Learned {
                        base: ScopeId::root(),
                    },
                ),
            ],
            true,
        );
        t.observe(
            &[(key("/b"), Merging { index: 3 }), (key("/c"), Aborted)],
            false,
        );
        // /a merged after the faults; /b's merge aborted; the learned range is no split.
        t.observe(&[(key("/b"), Active), (key("/c"), Aborted)], false);
        let s = t.splits();
        assert_eq!((s.active, s.during_faults, s.aborted), (2, 2, 1));
        let m = t.merges();
        assert_eq!(
            (m.merged, m.merged_during_faults, m.begun_during_faults),
            (1, 0, 0)
        );
        assert_eq!((m.aborted, m.merging), (1, 0));
    }
}
