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
use proto::{codec, Delegation, DelegationState, KeyRange, Name, RecordSet, ScopeId};

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
        let Some(mut d) = self.delegation_to(child) else {
            return Ok(Err(format!("no delegation to scope {child}")));
        };
        if let Err(why) = self.mergeable(&d) {
            return Ok(Err(why));
        }
        if self.read(&self.keys.proof(child)).is_some() {
            return Ok(Err(format!(
                "{} was delegated by its admins, not split off: it does not merge back by itself",
                d.referral.prefix
            )));
        }
        let own = self.view.bounds();
        let range = &d.referral.range;
        if evidence.left.prefix != own.prefix
            || evidence.left.start != own.start
            || evidence.left.end != own.end
            || evidence.right.prefix != d.referral.prefix
            || evidence.right.start != range.start
            || evidence.right.end != range.end
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

    /// Why the part split off as `d` cannot start merging back into this scope now, if it
    /// cannot: the checks an automatic and an operator's merge share. The part must be
    /// Active, on this scope's own members (each member takes the child's state from its own
    /// replica), and adjacent: a subtree inside this scope's own names, or the range right
    /// after them (so the scope's names stay one range).
    pub(in crate::raft::sm) fn mergeable(&self, d: &Delegation) -> Result<(), String> {
        let part = || format!("{} {}", d.referral.prefix, d.referral.range);
        if !self.view.writable() {
            return Err("the scope is not taking writes".into());
        }
        if d.state != DelegationState::Active {
            return Err(format!("the delegation of {} is not active", part()));
        }
        let busy = self.view.delegations.values().any(|o| {
            matches!(
                o.state,
                DelegationState::Frozen | DelegationState::Merging { .. }
            )
        });
        if busy {
            return Err("another split or merge is in flight".into());
        }
        if self.view.member_change.is_some() {
            return Err("a member change is in flight".into());
        }
        let ours = self
            .view
            .descriptor
            .as_ref()
            .map(|x| &x.members[..])
            .unwrap_or_default();
        let same = d.referral.members.len() == ours.len()
            && d.referral
                .members
                .iter()
                .all(|m| ours.iter().any(|o| o.peer_id == m.peer_id));
        if !same {
            return Err(format!(
                "{} is on other anchors than this scope: it cannot merge back here",
                part()
            ));
        }
        let own = self.view.bounds();
        let adjacent = if d.referral.range.is_bounded() {
            d.referral.prefix == own.prefix
                && own.end.is_some()
                && d.referral.range.start == own.end
        } else {
            own.contains(&d.referral.prefix) && d.referral.prefix != own.prefix
        };
        if !adjacent {
            return Err(format!(
                "{} does not border this scope's own names ({} {}): merge the parts between first",
                part(),
                own.prefix,
                KeyRange {
                    start: own.start,
                    end: own.end
                }
            ));
        }
        Ok(())
    }

    /// The part an operator's merge (`Op::Merge`) of `part` takes back, or why it cannot:
    /// the same checks as at apply, for the leader's and apply's decision.
    pub(in crate::raft::sm) fn operator_merge_part(
        &self,
        part: &Name,
    ) -> Result<Delegation, String> {
        if self.view.retired.is_some() {
            return Err("the scope retired to merge into its parent".into());
        }
        let d = self
            .view
            .delegations
            .get(part)
            .filter(|d| d.state != DelegationState::Aborted)
            .ok_or_else(|| {
                format!("this scope holds no scope split off at {part}: name the first name of the part (see `anchorage scope show`)")
            })?;
        self.mergeable(d)?;
        Ok(d.clone())
    }

    /// An operator's merge of `part` at `index`: its delegation becomes `Merging`, and the
    /// merge goes on as an automatic one does. `Err(why)` when it cannot.
    pub(in crate::raft::sm) fn operator_merge(
        &mut self,
        part: &Name,
        index: u64,
    ) -> Result<Applied, StorageError<NodeId>> {
        let mut d = match self.operator_merge_part(part) {
            Ok(d) => d,
            Err(why) => return Ok(Err(why)),
        };
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
        let part = format!("{} {}", d.referral.prefix, d.referral.range);
        if let Some((name, _)) = records
            .iter()
            .find(|(n, s)| !d.referral.covers(n) || s.version > retired_at)
        {
            return Ok(Err(format!(
                "record {name} is outside {part} or newer than the child"
            )));
        }
        if let Some(n) = nonces.iter().find(|n| !d.referral.covers(&n.name)) {
            return Ok(Err(format!("a nonce for {} is outside {part}", n.name)));
        }
        // The parent dropped the subtree at the hand-over and took no write under it since;
        // anything left there is replaced by the child's state.
        let carried: std::collections::BTreeSet<&Name> = records.iter().map(|(n, _)| n).collect();
        let span = self.keys.record_span(&d.referral.prefix, &d.referral.range);
        let stale: Vec<Vec<u8>> = span
            .scan(self.tree)
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
        // Ranges learned of the child's prefix refined the delegation that is gone.
        let learned: Vec<Name> = self
            .view
            .delegations
            .iter()
            .filter(|(_, o)| o.state == DelegationState::Learned { base: *child })
            .map(|(k, _)| k.clone())
            .collect();
        for k in learned {
            self.forget_delegation(&k);
        }
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
