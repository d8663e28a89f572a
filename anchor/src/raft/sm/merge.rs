//! The merge entries at apply (`Overlay` methods): a parent taking a child it split off back
//! in, and the child retiring. Each is a pure function of the state and the entry, so every
//! member reaches the same result; an entry that does not hold is a no-op that says why.
//!
//! 1. `Merge` in the parent: the child's delegation becomes `Merging { index }` if the
//!    evidence justifies it ([`justify_merge`] at the carried time). The parent still refers.
//! 2. `Retire` in the child: from then it refuses writes, so its state is final.
//! 3. `MergeDone` in the parent: the child's final records and nonces are taken in (versions
//!    kept), each recorded in the watch history at this index, and the delegation is gone.
//!    Only at an index past the child's last one, so versions keep growing.
//!
//! `MergeAborted` turns a `Merging` delegation back to Active (the child then commits
//! `Resume`).

use openraft::StorageError;
use proto::msg::SeededNonce;
use proto::split::MergeEvidence;
use proto::{codec, Delegation, DelegationState, Name, RecordSet, ScopeId};

use super::keys::Meta;
use super::overlay::{sm_err, Overlay};
use super::view::Retired;
use crate::raft::NodeId;
use crate::scope::merge::justify_merge;

/// An entry's verdict: `Ok(())` when it took effect, `Err(why)` when it is a no-op.
pub(super) type Applied = Result<(), String>;

impl Overlay<'_> {
    /// The delegation to `child`, whatever its state.
    fn delegation_to(&self, child: &ScopeId) -> Option<Delegation> {
        self.view
            .delegations
            .values()
            .find(|d| d.referral.scope == *child)
            .cloned()
    }

    /// A `Merge` entry at `index`: see the module docs.
    pub(super) fn apply_merge(
        &mut self,
        child: &ScopeId,
        evidence: &MergeEvidence,
        proposed_at_ms: u64,
        index: u64,
    ) -> Result<Applied, StorageError<NodeId>> {
        let Some(policy) = self.view.policy.clone() else {
            return Ok(Err("the scope has no policy yet".into()));
        };
        if !self.view.writable() {
            return Ok(Err("the scope is not taking writes".into()));
        }
        let Some(mut d) = self.delegation_to(child) else {
            return Ok(Err(format!("no delegation to scope {child}")));
        };
        if d.state != DelegationState::Active {
            return Ok(Err(format!("the delegation to {child} is not active")));
        }
        if self.read(&self.keys.proof(child)).is_some() {
            return Ok(Err(format!(
                "{} was delegated by its admins, not split off: it does not merge back",
                d.referral.prefix
            )));
        }
        let own_range = self.view.descriptor.as_ref().map(|d| d.range.clone());
        if d.referral.range.is_bounded() || own_range.is_some_and(|r| r.is_bounded()) {
            return Ok(Err(
                "merges of ranges, or into a range scope, are not built yet".into(),
            ));
        }
        let busy = self.view.delegations.values().any(|o| {
            matches!(
                o.state,
                DelegationState::Frozen | DelegationState::Merging { .. }
            )
        });
        if busy {
            return Ok(Err("another split or merge is in flight".into()));
        }
        let whole = |start: &Option<Name>, end: &Option<Name>| start.is_none() && end.is_none();
        if evidence.left.prefix != self.view.prefix
            || evidence.right.prefix != d.referral.prefix
            || !whole(&evidence.left.start, &evidence.left.end)
            || !whole(&evidence.right.start, &evidence.right.end)
        {
            return Ok(Err("the evidence is about other scopes".into()));
        }
        if evidence.split_at_ms < self.view.last_split_ms.unwrap_or(0) {
            return Ok(Err(
                "the evidence dates the split before the last one".into()
            ));
        }
        if let Err(refusal) = justify_merge(evidence, &policy, proposed_at_ms) {
            return Ok(Err(refusal.to_string()));
        }
        d.state = DelegationState::Merging { index };
        self.store_delegation(d)?;
        Ok(Ok(()))
    }

    /// A `Retire` entry (in the child): see the module docs.
    pub(super) fn apply_retire(
        &mut self,
        into: ScopeId,
        merge_index: u64,
    ) -> Result<Applied, StorageError<NodeId>> {
        if self.view.parent.as_ref().map(|p| p.id) != Some(into) {
            return Ok(Err(format!("scope {into} is not this scope's parent")));
        }
        if self.view.retired.is_some() {
            return Ok(Ok(()));
        }
        let retired = Retired { into, merge_index };
        self.put_meta(Meta::Retired, &retired)?;
        self.view.retired = Some(retired);
        Ok(Ok(()))
    }

    /// A `Resume` entry (in a retired child whose merge was aborted): it takes writes again.
    pub(super) fn apply_resume(&mut self, merge_index: u64) -> Applied {
        match self.view.retired {
            Some(r) if r.merge_index == merge_index => {
                self.view.retired = None;
                self.del(self.keys.meta(Meta::Retired));
                Ok(())
            }
            _ => Err(format!("not retired for the merge at {merge_index}")),
        }
    }

    /// A `MergeDone` entry at `index`: see the module docs.
    pub(super) fn apply_merge_done(
        &mut self,
        child: &ScopeId,
        retired_at: u64,
        records: &[(Name, RecordSet)],
        nonces: &[SeededNonce],
        index: u64,
    ) -> Result<Applied, StorageError<NodeId>> {
        let Some(d) = self.delegation_to(child) else {
            return Ok(Err(format!("no delegation to scope {child}")));
        };
        if !matches!(d.state, DelegationState::Merging { .. }) {
            return Ok(Err(format!("the delegation to {child} is not merging")));
        }
        if index <= retired_at {
            return Ok(Err(format!(
                "index {index} is not past the child's index {retired_at}: versions would go back"
            )));
        }
        let prefix = d.referral.prefix.clone();
        if let Some((name, _)) = records
            .iter()
            .find(|(n, s)| !n.is_under(&prefix) || s.version > retired_at)
        {
            return Ok(Err(format!(
                "record {name} is outside {prefix} or newer than the child"
            )));
        }
        if let Some(n) = nonces.iter().find(|n| !n.name.is_under(&prefix)) {
            return Ok(Err(format!("a nonce for {} is outside {prefix}", n.name)));
        }
        // The parent dropped the subtree at the hand-over and took no write under it since;
        // anything left there is replaced by the child's state.
        let carried: std::collections::BTreeSet<&Name> = records.iter().map(|(n, _)| n).collect();
        let stale: Vec<Vec<u8>> = self
            .tree
            .scan_prefix(self.keys.record(&prefix))
            .filter_map(|kv| kv.ok())
            .filter(|(k, _)| {
                self.keys
                    .split_record(k)
                    .map_or(true, |n| !carried.contains(&n))
            })
            .map(|(k, _)| k.to_vec())
            .collect();
        for k in stale {
            if self.read(&k).is_some() {
                self.view.names = self.view.names.saturating_sub(1);
            }
            self.del(k);
        }
        for (name, set) in records {
            let k = self.keys.record(name);
            if self.read(&k).is_none() {
                self.view.names += 1;
            }
            self.record_change(index, name, Some(set))?;
            self.put(k, codec::encode(set).map_err(sm_err)?);
        }
        for n in nonces {
            self.remember_nonce(&n.writer, n.nonce, n.expires_at_ms, &n.name);
        }
        let key = d.referral.first().clone();
        self.del(self.keys.delegation(&key));
        self.del(self.keys.proof(child));
        self.view.delegations.remove(&key);
        let (names, changes) = (self.view.names, self.view.changes);
        self.put_meta(Meta::Names, &names)?;
        self.put_meta(Meta::Changes, &changes)?;
        Ok(Ok(()))
    }

    /// A `MergeAborted` entry: a `Merging` delegation is Active again.
    pub(super) fn apply_merge_aborted(
        &mut self,
        child: &ScopeId,
    ) -> Result<Applied, StorageError<NodeId>> {
        let Some(mut d) = self.delegation_to(child) else {
            return Ok(Err(format!("no delegation to scope {child}")));
        };
        if !matches!(d.state, DelegationState::Merging { .. }) {
            return Ok(Err(format!("the delegation to {child} is not merging")));
        }
        d.state = DelegationState::Active;
        self.store_delegation(d)?;
        Ok(Ok(()))
    }
}

#[cfg(test)]
#[path = "merge_tests.rs"]
mod tests;
