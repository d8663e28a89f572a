//! [`Overlay`]: the writes of one `apply` call, read through before the tree and written
//! as one sled batch, so the records, the watch history and the applied index move together.
//!
//! It is also what a decision reads ([`ScopeRead`]): the state as it will be after the
//! entries applied so far in this call.

use std::collections::BTreeMap;

use openraft::{ErrorSubject, ErrorVerb, StorageError};
use policy::Policy;
use proto::{codec, Delegation, DelegationState, Name, RecordSet, ScopeDescriptor, ScopeId};

use super::keys::{nonce_value, Keys, Meta, Tag};
use super::view::ScopeView;
use crate::raft::{sto_err, NodeId};
use crate::scope::decide::{Accepted, Effect, ScopeRead};

/// Changes each scope keeps for watches to resume from; older ones are pruned (a few per
/// applied entry) and a watch resuming before them gets "compacted: resync".
pub const WATCH_HISTORY_CHANGES: u64 = 50_000;
/// Changes pruned per applied entry, so pruning never stalls apply.
const CHANGE_PRUNE_PER_ENTRY_MAX: u64 = 512;
/// Expired nonces pruned per applied entry, so pruning never stalls apply.
const NONCE_PRUNE_PER_ENTRY_MAX: usize = 64;

/// How long resolvers keep the referral to a scope split off automatically, seconds.
pub const SPLIT_REFERRAL_TTL_S: u32 = 600;

#[path = "overlay_split.rs"]
mod split;

#[path = "overlay_members.rs"]
mod members;

/// A state machine write failure, as openraft wants it.
pub(super) fn sm_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    sto_err(ErrorSubject::StateMachine, ErrorVerb::Write, e)
}

/// Reads through pending writes of the current apply batch, then the tree.
pub(super) struct Overlay<'a> {
    pub(super) scope: ScopeId,
    pub(super) keys: Keys,
    pub(super) tree: &'a sled::Tree,
    /// The view as it will be once the writes land.
    pub(super) view: ScopeView,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Changes the watch history keeps.
    history_max: u64,
}

impl<'a> Overlay<'a> {
    /// An overlay with no writes yet over `tree`, starting from `view`.
    pub(super) fn new(
        scope: ScopeId,
        tree: &'a sled::Tree,
        view: ScopeView,
        history_max: u64,
    ) -> Overlay<'a> {
        Overlay {
            scope,
            keys: Keys::new(scope),
            tree,
            view,
            writes: BTreeMap::new(),
            history_max,
        }
    }

    pub(super) fn read(&self, k: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(k) {
            Some(v) => v.clone(),
            None => self.tree.get(k).ok().flatten().map(|v| v.to_vec()),
        }
    }

    pub(super) fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.writes.insert(k, Some(v));
    }

    pub(super) fn del(&mut self, k: Vec<u8>) {
        self.writes.insert(k, None);
    }

    pub(super) fn put_meta<T: serde::Serialize>(
        &mut self,
        field: Meta,
        v: &T,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = codec::encode(v).map_err(sm_err)?;
        self.put(self.keys.meta(field), bytes);
        Ok(())
    }

    pub(super) fn record_change(
        &mut self,
        index: u64,
        name: &Name,
        set: Option<&RecordSet>,
    ) -> Result<(), StorageError<NodeId>> {
        let value = codec::encode(&set).map_err(sm_err)?;
        self.put(self.keys.change(index, name), value);
        self.view.changes += 1;
        Ok(())
    }

    /// Applies an accepted mutation at `index`; `at_ms` is the entry's proposal time (an
    /// operator's split keeps it as the scope's last split).
    pub(super) fn apply_effect(
        &mut self,
        acc: Accepted,
        index: u64,
        at_ms: u64,
    ) -> Result<(), StorageError<NodeId>> {
        let target = match &acc.effect {
            Effect::Put(name, _) | Effect::Delete(name) => name.clone(),
            Effect::Split { at, .. } | Effect::Merge { part: at } => at.clone(),
            Effect::Delegate(d, _) => d.referral.prefix.clone(),
            Effect::SetPolicy(..) | Effect::Members { .. } => self.view.prefix.clone(),
        };
        match acc.effect {
            Effect::Put(name, set) => {
                let k = self.keys.record(&name);
                if self.read(&k).is_none() {
                    self.view.names += 1;
                }
                self.record_change(index, &name, Some(&set))?;
                self.put(k, codec::encode(&set).map_err(sm_err)?);
            }
            Effect::Delete(name) => {
                let k = self.keys.record(&name);
                if self.read(&k).is_some() {
                    self.view.names = self.view.names.saturating_sub(1);
                    self.record_change(index, &name, None)?;
                }
                self.del(k);
            }
            Effect::Delegate(d, proof) => {
                let pk = self.keys.proof(&d.referral.scope);
                self.put(pk, codec::encode(&*proof).map_err(sm_err)?);
                let k = self.keys.delegation(d.referral.first());
                self.put(k, codec::encode(&*d).map_err(sm_err)?);
                self.view.delegations.insert(d.referral.first().clone(), *d);
            }
            Effect::SetPolicy(policy, toml) => {
                self.put_meta(Meta::Policy, &toml)?;
                self.view.policy = Some(*policy);
                self.view.policy_toml = Some(toml);
            }
            Effect::Split { at, by_range } => {
                // `decide` checked the region against this same state just before.
                let split = match self.operator_split_region(&at, by_range) {
                    Ok((prefix, range)) => self.split_off(prefix, range, index, at_ms)?,
                    Err(why) => Err(why),
                };
                match split {
                    Ok(child) => {
                        tracing::info!(scope = %self.scope, %child, %at, by_range, "operator split: the part moves to a child scope on the same members")
                    }
                    Err(why) => {
                        tracing::warn!(scope = %self.scope, %at, %why, "operator split not carried out")
                    }
                }
            }
            Effect::Merge { part } => match self.operator_merge(&part, index)? {
                Ok(()) => {
                    tracing::info!(scope = %self.scope, %part, "operator merge: the part merges back into this scope")
                }
                Err(why) => {
                    tracing::warn!(scope = %self.scope, %part, %why, "operator merge not carried out")
                }
            },
            Effect::Members { add, remove } => {
                self.begin_member_change(&add, &remove, index, at_ms)?
            }
        }
        let names = self.view.names;
        self.put_meta(Meta::Names, &names)?;
        let changes = self.view.changes;
        self.put_meta(Meta::Changes, &changes)?;
        self.remember_nonce(&acc.writer, acc.nonce, acc.expires_at_ms, &target);
        Ok(())
    }

    /// Replay protection: `(writer, nonce)` → expiry and the name it changed (so a delegation
    /// can hand the nonces of moved names to the child), plus an expiry index for pruning.
    pub(super) fn remember_nonce(
        &mut self,
        writer: &[u8; 32],
        nonce: u64,
        expires_at_ms: u64,
        name: &Name,
    ) {
        self.put(
            self.keys.nonce(writer, nonce),
            nonce_value(expires_at_ms, name),
        );
        self.put(self.keys.expiry(expires_at_ms, writer, nonce), Vec::new());
    }

    /// Forgets nonces whose mutation expired before `now_ms`: they can no longer be replayed.
    /// Not while a split is in flight: each member copies the split-off prefix's nonces from
    /// its own replica whenever it gets to it, so they must stay as they were at the split
    /// (pruning resumes after the hand-over, a bounded number per entry).
    pub(super) fn prune_nonces(&mut self, now_ms: u64) {
        if self.split_in_flight() {
            return;
        }
        let start = self.keys.all(Tag::Expiry);
        let end = self.keys.expiry_from(now_ms);
        let expired: Vec<Vec<u8>> = self
            .tree
            .range(start..end)
            .take(NONCE_PRUNE_PER_ENTRY_MAX)
            .filter_map(|kv| kv.ok().map(|(k, _)| k.to_vec()))
            .collect();
        for ek in expired {
            if let Some(nk) = self.keys.nonce_of_expiry(&ek) {
                self.del(nk);
            }
            self.del(ek);
        }
    }

    /// True while a split (a Frozen delegation with no admin-signed proof) is in flight.
    fn split_in_flight(&self) -> bool {
        self.view.delegations.values().any(|d| {
            d.state == DelegationState::Frozen
                && self.read(&self.keys.proof(&d.referral.scope)).is_none()
        })
    }

    /// Forgets the oldest changes of the watch history beyond `history_max`,
    /// a bounded number per entry, and raises the watch floor past them.
    pub(super) fn prune_changes(&mut self) -> Result<(), StorageError<NodeId>> {
        let excess = self.view.changes.saturating_sub(self.history_max);
        if excess == 0 {
            return Ok(());
        }
        let take = excess.min(CHANGE_PRUNE_PER_ENTRY_MAX) as usize;
        let oldest: Vec<Vec<u8>> = self
            .tree
            .scan_prefix(self.keys.all(Tag::Change))
            .take(take)
            .filter_map(|kv| kv.ok().map(|(k, _)| k.to_vec()))
            .collect();
        for k in oldest {
            if let Ok((index, _)) = self.keys.split_change(&k) {
                self.view.watch_floor = self.view.watch_floor.max(index);
            }
            self.del(k);
            self.view.changes = self.view.changes.saturating_sub(1);
        }
        let (floor, changes) = (self.view.watch_floor, self.view.changes);
        self.put_meta(Meta::WatchFloor, &floor)?;
        self.put_meta(Meta::Changes, &changes)
    }

    /// Frozen → Active: drop the moved records (the child has them) and keep the referral.
    pub(super) fn activate_delegation(
        &mut self,
        child: ScopeId,
    ) -> Result<(), StorageError<NodeId>> {
        let Some(mut d) = self.frozen(child) else {
            return Ok(());
        };
        let span = self.keys.record_span(&d.referral.prefix, &d.referral.range);
        let moved: Vec<Vec<u8>> = span
            .scan(self.tree)
            .filter_map(|kv| kv.ok().map(|(k, _)| k.to_vec()))
            .collect();
        for k in moved {
            if self.read(&k).is_some() {
                self.view.names = self.view.names.saturating_sub(1);
            }
            self.del(k);
        }
        let names = self.view.names;
        self.put_meta(Meta::Names, &names)?;
        d.state = DelegationState::Active;
        self.store_delegation(d)
    }

    pub(super) fn abort_delegation(&mut self, child: ScopeId) -> Result<(), StorageError<NodeId>> {
        let Some(mut d) = self.frozen(child) else {
            return Ok(());
        };
        d.state = DelegationState::Aborted;
        self.store_delegation(d)
    }

    fn frozen(&self, child: ScopeId) -> Option<Delegation> {
        self.view
            .delegations
            .values()
            .find(|d| d.referral.scope == child && d.state == DelegationState::Frozen)
            .cloned()
    }

    pub(super) fn store_delegation(&mut self, d: Delegation) -> Result<(), StorageError<NodeId>> {
        let k = self.keys.delegation(d.referral.first());
        self.put(k, codec::encode(&d).map_err(sm_err)?);
        self.view.delegations.insert(d.referral.first().clone(), d);
        Ok(())
    }

    /// Drops the delegation stored at `first` (a learned range that went stale).
    pub(super) fn forget_delegation(&mut self, first: &Name) {
        self.del(self.keys.delegation(first));
        self.view.delegations.remove(first);
    }

    pub(super) fn apply_genesis(
        &mut self,
        descriptor: ScopeDescriptor,
        toml: String,
    ) -> Result<(), StorageError<NodeId>> {
        if self.view.policy.is_some() {
            return Ok(());
        }
        let policy = Policy::from_toml(&toml).map_err(sm_err)?;
        self.put_meta(Meta::Policy, &toml)?;
        self.put_meta(Meta::Descriptor, &descriptor)?;
        self.view.prefix = descriptor.prefix.clone();
        self.view.descriptor = Some(descriptor);
        self.view.policy = Some(policy);
        self.view.policy_toml = Some(toml);
        Ok(())
    }

    /// The writes as one sled batch, and the view they make.
    pub(super) fn into_batch(self) -> (sled::Batch, ScopeView) {
        let mut batch = sled::Batch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        (batch, self.view)
    }
}

impl ScopeRead for Overlay<'_> {
    fn prefix(&self) -> &Name {
        &self.view.prefix
    }
    fn policy(&self) -> Option<&Policy> {
        self.view.policy.as_ref()
    }
    fn names(&self) -> u64 {
        self.view.names
    }
    fn get(&self, name: &Name) -> Option<RecordSet> {
        let bytes = self.read(&self.keys.record(name))?;
        codec::decode(&bytes, proto::limits::RAFT_FRAME_BYTES_MAX).ok()
    }
    fn nonce_seen(&self, writer: &[u8; 32], nonce: u64) -> bool {
        self.read(&self.keys.nonce(writer, nonce)).is_some()
    }
    fn scope_id(&self) -> ScopeId {
        self.scope
    }
    fn active(&self) -> bool {
        self.view.writable()
    }
    fn delegations(&self) -> &BTreeMap<Name, Delegation> {
        &self.view.delegations
    }
    fn split_refusal(&self, at: &Name, by_range: bool) -> Option<String> {
        self.operator_split_region(at, by_range).err()
    }
    fn members_refusal(&self, add: &[proto::MemberSpec], remove: &[String]) -> Option<String> {
        self.member_change_refusal(add, remove)
    }
    fn merge_refusal(&self, part: &Name) -> Option<String> {
        self.operator_merge_part(part).err()
    }
    fn covers(&self, name: &Name) -> bool {
        match &self.view.descriptor {
            Some(d) => d.covers(name),
            None => name.is_under(&self.view.prefix),
        }
    }
}
