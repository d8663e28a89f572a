//! Membership changes of a scope, the pure part: whether a change may start, the members it
//! leads to, the next step its leader takes, and the proof a parent needs to refer to a
//! child's new members.
//!
//! A change is committed first (an admin-signed `Op::Members`, kept in the scope's state as
//! a [`MemberChange`]), then carried out by whichever member leads the scope
//! (`crate::delegation::mover`), step by step from what it sees, so a new leader picks up
//! where the old one stopped:
//! 1. every anchor that joins hosts an empty replica and becomes a learner;
//! 2. once every learner has caught up (bounded by [`CATCH_UP_MS_MAX`]; past it the change
//!    is aborted while the voters are still the old members), the voters grow to the old
//!    and the new members together (openraft: a joint, then a uniform configuration;
//!    re-issued if a leader change left it joint);
//! 3. the leader commits `MembersChanged`: every old and new member applies it, and the
//!    descriptor takes the new members (epoch + 1);
//! 4. the leader has the parent refer to the new members (`ChildMembers`, vouched for by a
//!    majority of the members the parent lists, who all still vote and know the new list);
//! 5. the voters shrink to the new members, and the anchors that left are told to drop
//!    their replica (each drops it only once a majority of the members it knows confirm a
//!    newer configuration without it, see [`confirms_removal`]).

use std::collections::BTreeSet;

use proto::msg::{Answer, SignedAnswer};
use proto::{AnchorInfo, Delegation, DelegationState, MemberChange, MemberSpec, ScopeId};

use super::learn::{majority, signed_answer, LearnRefusal};
use crate::identity::node_id_of_str;
use crate::raft::NodeId;

/// How long the anchors that join may take to catch up before the change is given up, ms.
pub const CATCH_UP_MS_MAX: u64 = 120_000;
/// A learner counts as caught up when it is at most this many entries behind the leader.
pub const CATCH_UP_LAG_MAX: u64 = 8;

/// The members once `add` joined and `remove` left `current` (order kept, joiners last).
pub fn target_members(
    current: &[AnchorInfo],
    add: &[MemberSpec],
    remove: &[String],
) -> Vec<AnchorInfo> {
    current
        .iter()
        .filter(|m| !remove.contains(&m.peer_id))
        .cloned()
        .chain(add.iter().map(|m| m.anchor.clone()))
        .collect()
}

/// Why a change adding `add` and removing `remove` cannot start on a scope with `current`
/// members, if it cannot. `busy` says what else is in flight (a split, a merge, another
/// member change).
pub fn change_refusal(
    current: &[AnchorInfo],
    add: &[MemberSpec],
    remove: &[String],
    busy: Option<&str>,
) -> Option<String> {
    if let Some(what) = busy {
        return Some(format!("{what} is in flight; try again once it is done"));
    }
    let is_member = |peer: &str| current.iter().any(|m| m.peer_id == peer);
    if let Some(m) = add.iter().find(|m| is_member(&m.anchor.peer_id)) {
        return Some(format!("{} is a member already", m.anchor.peer_id));
    }
    if let Some(m) = add
        .iter()
        .find(|m| node_id_of_str(&m.anchor.peer_id).is_none())
    {
        return Some(format!("{:?} is not a peer id", m.anchor.peer_id));
    }
    if let Some(m) = add.iter().find(|m| m.anchor.addrs.is_empty()) {
        return Some(format!(
            "{} has no address: give one (`anchorage status` on it prints them)",
            m.anchor.peer_id
        ));
    }
    if let Some(p) = remove.iter().find(|p| !is_member(p)) {
        return Some(format!("{p} is not a member"));
    }
    let target = target_members(current, add, remove);
    if target.is_empty() {
        return Some("a scope keeps at least one member".into());
    }
    if target.len() > proto::limits::SCOPE_MEMBERS_MAX {
        return Some(format!(
            "a scope has at most {} members",
            proto::limits::SCOPE_MEMBERS_MAX
        ));
    }
    None
}

/// Why the leader's own member change (`ScopeCommand::Place`) cannot start under `policy`,
/// if it cannot: automatic placement off, more than one anchor added or removed, nothing
/// added, or an added anchor that does not meet the placement labels. (What
/// [`change_refusal`] checks is checked too, by the caller.)
pub fn placement_refusal(
    policy: &policy::Policy,
    add: &[MemberSpec],
    remove: &[String],
) -> Option<String> {
    if !policy.placement.auto {
        return Some("the scope's policy turns automatic placement off".into());
    }
    if add.len() != 1 || remove.len() > 1 {
        return Some("a scope's own member change adds one anchor and removes at most one".into());
    }
    add.iter().find_map(|m| {
        policy::placement_allows(policy, &m.labels)
            .err()
            .map(|e| format!("{} cannot join: {e}", m.anchor.peer_id))
    })
}

/// The Raft node ids of `members` (peer ids that do not parse are left out: a change never
/// admits one).
pub fn node_ids(members: &[AnchorInfo]) -> BTreeSet<NodeId> {
    members
        .iter()
        .filter_map(|m| node_id_of_str(&m.peer_id))
        .collect()
}

/// What a scope's leader sees of its group, for [`next_step`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupView {
    /// The voter sets of the configuration (two while joint).
    pub voter_sets: Vec<BTreeSet<NodeId>>,
    /// Every node of the configuration, voters and learners.
    pub nodes: BTreeSet<NodeId>,
    /// Whether that configuration is committed.
    pub committed: bool,
    /// The leader's last log index.
    pub last_log: u64,
    /// How far each replicated node has matched the leader's log.
    pub matched: Vec<(NodeId, u64)>,
}

/// The next thing the leader does about its scope's members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do: the voters are the members.
    Idle,
    /// Wait (a configuration is being committed, or learners are catching up).
    Wait(&'static str),
    /// Have these anchors host an empty replica and add them as learners.
    AddLearners(Vec<AnchorInfo>),
    /// Change the voters to exactly these (joint, then uniform): the old members and the
    /// new ones together, while a change is in flight.
    ChangeVoters(BTreeSet<NodeId>),
    /// Every member, old and new, votes: commit `MembersChanged`.
    Finish,
    /// Give up: commit `MembersAborted` (and remove the learners added).
    Abort(String),
    /// The change is committed and the members that leave still vote: once the referrers
    /// know the new members, change the voters to exactly these, then tell `leaving` to
    /// drop their replica.
    Shrink {
        /// The voters once the leaving members are out.
        voters: BTreeSet<NodeId>,
        /// The members that leave.
        leaving: Vec<AnchorInfo>,
    },
}

/// The next step for a leader whose scope lists `members` (its descriptor), has `change` in
/// flight, and whose group it sees as `group`, at `now_ms`.
///
/// While a change is in flight the voters grow to the old and the new members together
/// (every old member applies `MembersChanged` and can vouch for the new list to the
/// parent); the members that leave are taken out of the voters only after it committed.
pub fn next_step(
    members: &[AnchorInfo],
    change: Option<&MemberChange>,
    group: &GroupView,
    now_ms: u64,
) -> Step {
    if !group.committed {
        return Step::Wait("a configuration change is being committed");
    }
    let uniform = group.voter_sets.len() == 1;
    let Some(change) = change else {
        let wanted = node_ids(members);
        if uniform && group.voter_sets[0] == wanted {
            return Step::Idle;
        }
        let voting: BTreeSet<NodeId> = group.voter_sets.iter().flatten().copied().collect();
        if !wanted.iter().all(|n| voting.contains(n)) {
            // The descriptor names a member that does not vote (a change aborted half-way
            // or an older build): nothing safe to do here but wait for an operator.
            return Step::Idle;
        }
        return Step::Shrink {
            voters: wanted,
            leaving: Vec::new(),
        };
    };
    let all: BTreeSet<NodeId> = node_ids(members)
        .into_iter()
        .chain(node_ids(&change.target))
        .collect();
    if !uniform {
        // A leader change left the configuration joint: finish it towards every member.
        return Step::ChangeVoters(all);
    }
    let voters = &group.voter_sets[0];
    if *voters == all {
        return Step::Finish;
    }
    let missing: Vec<AnchorInfo> = change
        .target
        .iter()
        .filter(|m| node_id_of_str(&m.peer_id).is_some_and(|n| !group.nodes.contains(&n)))
        .cloned()
        .collect();
    let lagging = all.iter().filter(|n| !voters.contains(n)).any(|n| {
        let matched = group
            .matched
            .iter()
            .find(|(id, _)| id == n)
            .map_or(0, |(_, m)| *m);
        matched + CATCH_UP_LAG_MAX < group.last_log
    });
    if missing.is_empty() && !lagging {
        return Step::ChangeVoters(all);
    }
    if now_ms.saturating_sub(change.started_ms) > CATCH_UP_MS_MAX && *voters == node_ids(members) {
        return Step::Abort(format!(
            "the anchors that join did not catch up within {} s",
            CATCH_UP_MS_MAX / 1000
        ));
    }
    if missing.is_empty() {
        Step::Wait("learners are catching up")
    } else {
        Step::AddLearners(missing)
    }
}

/// The members in `before` that `after` no longer lists.
pub fn leaving(before: &[AnchorInfo], after: &[AnchorInfo]) -> Vec<AnchorInfo> {
    before
        .iter()
        .filter(|m| !after.iter().any(|a| a.peer_id == m.peer_id))
        .cloned()
        .collect()
}

/// Where a configuration sits in a scope's log: (term, index) of its entry, compared as
/// Raft compares log positions (a higher term first, then a higher index).
pub type ConfigPos = (u64, u64);

/// True if a member's report of the scope's configuration (its position `theirs`, `nodes`
/// peer ids) shows that `me` left: a configuration that does not list it, at a later
/// position than the one `me` last applied (`mine`), or at the same one when that one does
/// not list `me` either (`listed`).
pub fn report_shows_removed(
    me: &str,
    mine: Option<ConfigPos>,
    listed: bool,
    theirs: Option<ConfigPos>,
    nodes: &[String],
) -> bool {
    match (theirs, mine) {
        (None, _) => false,
        (Some(theirs), Some(ours)) if theirs < ours || (theirs == ours && listed) => false,
        _ => !nodes.iter().any(|n| n == me),
    }
}

/// True if a member's report of the scope's configuration (position `theirs`, `nodes`
/// peer ids) vouches for `peer`: a configuration at a later position than the one this
/// replica has (`mine`) that lists it. (A replica cut off while `peer` was added refuses
/// its messages until a majority of the voters it knows vouch for it.)
pub fn report_vouches(
    peer: &str,
    mine: Option<ConfigPos>,
    theirs: Option<ConfigPos>,
    nodes: &[String],
) -> bool {
    let later = match (theirs, mine) {
        (Some(theirs), Some(ours)) => theirs > ours,
        _ => false,
    };
    later && nodes.iter().any(|n| n == peer)
}

/// True if `confirmed` distinct members out of the `voters` this replica knows (its own
/// configuration, without itself) is a strict majority of that configuration (`voters` +
/// itself when it is a voter): then it may drop its replica.
pub fn confirms_removal(confirmed: usize, voters: usize) -> bool {
    voters > 0 && confirmed * 2 > voters
}

/// Checks the signed word of the members of `child` on its new members, against the
/// delegation that refers to it: valid signatures of a strict majority of the members the
/// delegation lists, each an `Answer::Members` of `child` with the same epoch and members,
/// the epoch newer than the delegation's. `Ok(None)` when the delegation lists these
/// members already; `Ok(Some(updated delegation))` to store.
pub fn check_child_members(
    delegation: Option<&Delegation>,
    child: ScopeId,
    proofs: &[SignedAnswer],
) -> Result<Option<Delegation>, LearnRefusal> {
    let Some(d) = delegation.filter(|d| {
        d.referral.scope == child
            && matches!(
                d.state,
                DelegationState::Active | DelegationState::Merging { .. }
            )
    }) else {
        return Err(LearnRefusal::Conflict(format!(
            "this scope holds no active delegation to {child}"
        )));
    };
    let first = d.referral.first().clone();
    // Each proof: a valid signature over the members of `child`; all must say the same.
    let mut said: Option<(u64, Vec<AnchorInfo>)> = None;
    for p in proofs {
        let (signer, answer) = signed_answer(p).map_err(LearnRefusal::BadProof)?;
        let (epoch, members) = match answer {
            Answer::Members {
                scope,
                name,
                epoch,
                members,
            } if scope == child && name == first => (epoch, members),
            other => {
                return Err(LearnRefusal::BadProof(format!(
                "{signer} did not give the members of {child} (its answer is about {} in scope {})",
                other.name(),
                other.scope()
            )))
            }
        };
        if members.is_empty() || members.len() > proto::limits::SCOPE_MEMBERS_MAX {
            return Err(LearnRefusal::BadProof(format!(
                "{signer} lists {} members",
                members.len()
            )));
        }
        match &said {
            None => said = Some((epoch, members)),
            Some(s) if *s == (epoch, members) => {}
            Some(_) => {
                return Err(LearnRefusal::BadProof(
                    "the members disagree on the new member list".into(),
                ))
            }
        }
    }
    // The signers: a strict majority of the members the delegation lists.
    majority(d, proofs, |p| signed_answer(p).map(|(signer, _)| signer))?;
    let Some((epoch, members)) = said else {
        return Err(LearnRefusal::BadProof("no proof".into()));
    };
    if epoch <= d.referral.epoch {
        return Ok(None);
    }
    let mut updated = d.clone();
    updated.referral.epoch = epoch;
    updated.referral.members = members.clone();
    updated.members = members
        .into_iter()
        .map(|anchor| {
            let labels = d
                .members
                .iter()
                .find(|s| s.anchor.peer_id == anchor.peer_id)
                .map(|s| s.labels.clone())
                .unwrap_or_default();
            MemberSpec { anchor, labels }
        })
        .collect();
    Ok(Some(updated))
}

#[cfg(test)]
#[path = "members_tests.rs"]
mod tests;
