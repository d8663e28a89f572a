//! The child's half of a merge and the clean-up after it.
//!
//! - On the child's leader ([`retire_or_resume`]): when the local replica of its parent
//!   shows the child's delegation `Merging`, the child commits `Retire` (from then it refuses
//!   writes and its state is final). When a retired child's parent, having applied past the
//!   merge entry, shows the delegation Active again (the merge was aborted), the child
//!   commits `Resume` and takes writes again. The child's leader may be on any member: it
//!   reads its own replica of the parent (a split child's members are the parent's), so no
//!   request crosses the network.
//! - On every anchor ([`remove_if_merged`]): once the local parent replica has applied past
//!   the child's origin and holds no delegation to it (only `MergeDone` removes one), the
//!   child's replica is removed here, its peaks carried into the parent's load accounting
//!   (the merged scope keeps the summed peak, so it does not look cold and split again).

use std::sync::Arc;

use proto::DelegationState;

use super::Host;
use crate::raft::ScopeCommand;
use crate::replica::Replica;

/// How long a child's `Retire` or `Activate` may take to commit.
const PROPOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the child's leader should commit, from the child's retirement (`retired_into`,
/// `merge_index`) and what its parent replica shows: the delegation's state and the parent's
/// applied index. Pure.
pub(crate) fn child_step(
    retired: Option<u64>,
    delegation: Option<DelegationState>,
    parent_applied: u64,
) -> Option<ChildStep> {
    match (retired, delegation) {
        (None, Some(DelegationState::Merging { index })) => Some(ChildStep::Retire { index }),
        (Some(merge_index), Some(DelegationState::Active)) if parent_applied >= merge_index => {
            Some(ChildStep::Resume { index: merge_index })
        }
        _ => None,
    }
}

/// A step of the child's half.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChildStep {
    /// Commit `Retire` for the merge at the parent's `index`.
    Retire {
        /// The parent's merge index.
        index: u64,
    },
    /// The merge at the parent's `index` was aborted: commit `Resume`.
    Resume {
        /// The parent's merge index.
        index: u64,
    },
}

/// On the leader of `r`: retires it when its parent merges it, or resumes it after an
/// aborted merge.
pub(super) async fn retire_or_resume<H: Host>(host: &H, r: &Arc<Replica>) {
    let Some((parent, retired)) = r
        .state
        .with_view(|v| v.parent.as_ref().map(|p| (p.id, v.retired)))
        .flatten()
    else {
        return;
    };
    let Some(p) = host.replica(&parent) else {
        return;
    };
    let (delegation, applied) = p
        .state
        .with_view(|v| {
            let d = v
                .delegations
                .values()
                .find(|d| d.referral.scope == r.id)
                .map(|d| d.state);
            (d, v.applied.map_or(0, |a| a.index))
        })
        .unwrap_or((None, 0));
    let step = child_step(retired.map(|x| x.merge_index), delegation, applied);
    let (cmd, what) = match step {
        None => return,
        Some(ChildStep::Retire { index }) => (
            ScopeCommand::Retire {
                into: parent,
                merge_index: index,
            },
            "retire",
        ),
        Some(ChildStep::Resume { index }) => {
            (ScopeCommand::Resume { merge_index: index }, "resume")
        }
    };
    let outcome = tokio::time::timeout(PROPOSE_TIMEOUT, r.client_write(cmd)).await;
    let ok = matches!(&outcome, Ok(Ok(resp)) if matches!(resp.data.results.first(), Some(Ok(_))));
    tracing::info!(scope = %r.id, %parent, ok, "child {what}");
    host.count_merge(if ok { what } else { "error" });
}

/// True when `parent`'s replica (of `child`'s parent) has taken `child` back in: it has
/// applied past the child's origin and holds no delegation to it (only `MergeDone` removes
/// one).
pub fn merged_into(child: &Replica, parent: &Replica) -> bool {
    let Some(origin) = child
        .state
        .with_view(|v| {
            v.parent
                .as_ref()
                .filter(|p| p.id == parent.id)
                .and(v.origin)
        })
        .flatten()
    else {
        return false;
    };
    parent
        .state
        .with_view(|v| {
            let applied = v.applied.map_or(0, |a| a.index);
            applied >= origin && !v.delegations.values().any(|d| d.referral.scope == child.id)
        })
        .unwrap_or(false)
}

/// On every anchor: removes the replica of `r` when its parent, hosted here, has taken it
/// back in.
pub(super) async fn remove_if_merged<H: Host>(host: &H, r: &Arc<Replica>) {
    let Some(parent) = r
        .state
        .with_view(|v| v.parent.as_ref().map(|p| p.id))
        .flatten()
    else {
        return;
    };
    let Some(p) = host.replica(&parent) else {
        return;
    };
    if !merged_into(r, &p) {
        return;
    }
    let now = host.now_ms();
    let limits = p.load_limits();
    if let (Some(pf), Some(cf)) = (
        p.load.figures(now, limits),
        r.load.figures(now, r.load_limits()),
    ) {
        p.load.carry_peak(
            pf.reads_peak.saturating_add(cf.reads_peak),
            pf.writes_peak.saturating_add(cf.writes_peak),
            now,
        );
    }
    match host.remove_scope(&r.id).await {
        Ok(()) => {
            tracing::info!(scope = %r.id, %parent, "merged child removed");
            host.count_merge("removed");
        }
        Err(e) => {
            tracing::warn!(scope = %r.id, error = %e, "removing a merged child failed; retrying");
            host.count_merge("error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_retires_when_its_parent_merges_it_and_resumes_only_after_an_abort() {
        let merging = Some(DelegationState::Merging { index: 40 });
        let active = Some(DelegationState::Active);
        assert_eq!(
            child_step(None, merging, 40),
            Some(ChildStep::Retire { index: 40 })
        );
        // Retired already: nothing more while the parent merges.
        assert_eq!(child_step(Some(40), merging, 41), None);
        // A parent replica still behind the merge entry shows Active: not an abort.
        assert_eq!(child_step(Some(40), active, 39), None);
        assert_eq!(
            child_step(Some(40), active, 40),
            Some(ChildStep::Resume { index: 40 })
        );
        // Not retired, nothing merging: nothing to do.
        assert_eq!(child_step(None, active, 100), None);
        // The delegation is gone (merge done): the replica is removed, not resumed.
        assert_eq!(child_step(Some(40), None, 100), None);
    }
}
