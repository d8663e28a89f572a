//! Member changes at apply: starting one (`Op::Members`), ending it (`MembersChanged`,
//! `MembersAborted`), and a parent taking a child's new members (`ChildMembers`). Pure
//! functions of the state and the entry, like the rest of apply; the checks live in
//! [`crate::scope::members`].

use openraft::StorageError;
use proto::{DelegationState, MemberChange, MemberSpec, ScopeId};

use super::Overlay;
use crate::raft::sm::keys::Meta;
use crate::raft::sm::snapshot::StoredMem;
use crate::raft::NodeId;
use crate::scope::members::{
    change_refusal, check_child_members, node_ids, placement_refusal, target_members,
};

impl Overlay<'_> {
    /// Why a member change adding `add` and removing `remove` cannot start now, if it
    /// cannot: one change at a time, none while a split or merge is in flight, and a
    /// sensible target.
    pub(in crate::raft::sm) fn member_change_refusal(
        &self,
        add: &[MemberSpec],
        remove: &[String],
    ) -> Option<String> {
        let Some(descriptor) = &self.view.descriptor else {
            return Some("the scope has no descriptor yet".into());
        };
        let split_or_merge = self.view.delegations.values().any(|d| {
            matches!(
                d.state,
                DelegationState::Frozen | DelegationState::Merging { .. }
            )
        });
        let busy = if self.view.member_change.is_some() {
            Some("another member change")
        } else if split_or_merge {
            Some("a split, a merge or a delegation")
        } else {
            None
        };
        change_refusal(&descriptor.members, add, remove, busy)
    }

    /// `Place`: the leader's own member change starts if the policy and the state let it.
    pub(in crate::raft::sm) fn apply_place(
        &mut self,
        add: &[MemberSpec],
        remove: &[String],
        index: u64,
        at_ms: u64,
    ) -> Result<Result<(), String>, StorageError<NodeId>> {
        let Some(policy) = &self.view.policy else {
            return Ok(Err("the scope has no policy yet".into()));
        };
        if let Some(why) = placement_refusal(policy, add, remove)
            .or_else(|| self.member_change_refusal(add, remove))
        {
            return Ok(Err(why));
        }
        if !self.view.writable() {
            return Ok(Err("the scope is not taking writes".into()));
        }
        self.begin_member_change(add, remove, index, at_ms)?;
        Ok(Ok(()))
    }

    /// Starts a member change at `index` (the state `decide` checked just before): the
    /// scope's leader carries it out from here.
    pub(in crate::raft::sm) fn begin_member_change(
        &mut self,
        add: &[MemberSpec],
        remove: &[String],
        index: u64,
        at_ms: u64,
    ) -> Result<(), StorageError<NodeId>> {
        let Some(descriptor) = &self.view.descriptor else {
            return Ok(());
        };
        let change = MemberChange {
            index,
            target: target_members(&descriptor.members, add, remove),
            added: add.to_vec(),
            removed: remove.to_vec(),
            started_ms: at_ms,
        };
        tracing::info!(scope = %self.scope, index, joining = add.len(), leaving = remove.len(), "member change started");
        self.put_meta(Meta::MemberChange, &change)?;
        self.view.member_change = Some(change);
        Ok(())
    }

    /// `MembersChanged { index }`: when the change started at `index` is in flight and the
    /// last configuration applied is uniform with the old and the new members as voters,
    /// the descriptor takes the new members (epoch + 1) and the change ends (the leader
    /// takes the members that leave out of the voters next). `Ok(Err(why))` otherwise.
    pub(in crate::raft::sm) fn apply_members_changed(
        &mut self,
        index: u64,
    ) -> Result<Result<(), String>, StorageError<NodeId>> {
        let Some(change) = self.view.member_change.clone().filter(|c| c.index == index) else {
            return Ok(Err(format!(
                "no member change started at {index} is in flight"
            )));
        };
        let Some(mut descriptor) = self.view.descriptor.clone() else {
            return Ok(Err("the scope has no descriptor".into()));
        };
        let mut all = node_ids(&descriptor.members);
        all.extend(node_ids(&change.target));
        let voters = self.voter_sets();
        if voters.len() != 1 || voters[0] != all {
            return Ok(Err("the old and the new members do not all vote yet".into()));
        }
        descriptor.members = change.target.clone();
        descriptor.epoch += 1;
        tracing::info!(scope = %self.scope, index, epoch = descriptor.epoch, members = descriptor.members.len(), "member change done");
        self.put_meta(Meta::Descriptor, &descriptor)?;
        self.view.descriptor = Some(descriptor);
        self.del(self.keys.meta(Meta::MemberChange));
        self.view.member_change = None;
        Ok(Ok(()))
    }

    /// `MembersAborted { index }`: the change started at `index` ends with the members as
    /// they were, if the voters are still exactly the old members. `Ok(Err(why))` otherwise.
    pub(in crate::raft::sm) fn apply_members_aborted(
        &mut self,
        index: u64,
    ) -> Result<Result<(), String>, StorageError<NodeId>> {
        if self
            .view
            .member_change
            .as_ref()
            .is_none_or(|c| c.index != index)
        {
            return Ok(Err(format!(
                "no member change started at {index} is in flight"
            )));
        }
        let old = self
            .view
            .descriptor
            .as_ref()
            .map(|d| node_ids(&d.members))
            .unwrap_or_default();
        let voters = self.voter_sets();
        if voters.len() != 1 || voters[0] != old {
            return Ok(Err(
                "the voters changed already: the change must be finished".into(),
            ));
        }
        self.del(self.keys.meta(Meta::MemberChange));
        self.view.member_change = None;
        Ok(Ok(()))
    }

    /// `ChildMembers`: the delegation to `child` refers to its new members once the proofs
    /// hold. `Ok(Ok(false))` when it lists them already.
    pub(in crate::raft::sm) fn apply_child_members(
        &mut self,
        child: ScopeId,
        proofs: &[proto::msg::SignedAnswer],
    ) -> Result<Result<bool, String>, StorageError<NodeId>> {
        let current = self
            .view
            .delegations
            .values()
            .find(|d| d.referral.scope == child);
        match check_child_members(current, child, proofs) {
            Ok(Some(updated)) => {
                tracing::info!(scope = %self.scope, %child, epoch = updated.referral.epoch, "the child's new members are referred to");
                self.store_delegation(updated)?;
                Ok(Ok(true))
            }
            Ok(None) => Ok(Ok(false)),
            Err(refusal) => Ok(Err(refusal.to_string())),
        }
    }

    /// The voter sets of the last configuration applied (two while joint).
    fn voter_sets(&self) -> Vec<std::collections::BTreeSet<NodeId>> {
        let stored: StoredMem = self
            .read(&self.keys.meta(Meta::Membership))
            .and_then(|b| proto::codec::decode(&b, proto::limits::RAFT_FRAME_BYTES_MAX).ok())
            .unwrap_or_default();
        stored.membership().get_joint_config().clone()
    }
}
