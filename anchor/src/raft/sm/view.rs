//! [`ScopeView`]: the part of one scope's state kept decoded in memory, what the rest of
//! the anchor reads on every request without touching sled.

use std::collections::BTreeMap;

use openraft::LogId;
use policy::Policy;
use proto::{codec, Delegation, DelegationState, MemberChange, Name, ScopeDescriptor, ScopeId};
use serde::{Deserialize, Serialize};

use super::keys::{Keys, Meta, Tag};
use crate::raft::NodeId;
use crate::scope::split::ScopeBounds;
use crate::AnchorError;

/// The part of a scope's state the rest of the anchor reads without going through Raft: the
/// single-valued fields and the delegations, decoded. The state machine replaces it after
/// every applied batch of entries.
#[derive(Clone, Debug, Default)]
pub struct ScopeView {
    /// The scope's prefix.
    pub prefix: Name,
    /// Current policy, once genesis is applied.
    pub policy: Option<Policy>,
    /// Current policy as TOML.
    pub policy_toml: Option<String>,
    /// Descriptor from genesis.
    pub descriptor: Option<ScopeDescriptor>,
    /// Names held.
    pub names: u64,
    /// Last applied log id.
    pub applied: Option<LogId<NodeId>>,
    /// Delegations by prefix (Aborted ones included).
    pub delegations: BTreeMap<Name, Delegation>,
    /// False while a new child scope waits for its parent's hand-over.
    pub active: bool,
    /// The parent of a delegated scope.
    pub parent: Option<ScopeDescriptor>,
    /// Watches resuming from before this index get "compacted".
    pub watch_floor: u64,
    /// Changes kept in the watch history.
    pub changes: u64,
    /// For a delegated scope: the parent's log index its log starts after.
    pub origin: Option<u64>,
    /// When this scope last split, ms since the epoch (the split entry's carried time).
    pub last_split_ms: Option<u64>,
    /// Set once this split-off scope retired to merge back into its parent: it refuses
    /// writes (`Moving`) and its state is final.
    pub retired: Option<Retired>,
    /// Set (in memory only) when this replica is being removed: its stored state may be
    /// gone, so nothing may be read from it any more.
    pub removed: bool,
    /// The member change in flight, if any.
    pub member_change: Option<MemberChange>,
}

/// A scope's retirement into its parent (`ScopeCommand::Retire`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    /// The parent it merges into.
    pub into: ScopeId,
    /// The parent's log index of the merge entry.
    pub merge_index: u64,
}

impl ScopeView {
    /// True when the scope takes writes: activated, and not retired.
    pub fn writable(&self) -> bool {
        self.active && self.retired.is_none()
    }

    /// Whether nothing is in flight in this scope: no delegation being seeded or merged, no
    /// member change, no retirement, and (a child) active. Only a settled scope hibernates,
    /// so the background loops may look at a hibernated one rarely.
    pub fn settled(&self) -> bool {
        let in_flight = self.delegations.values().any(|d| {
            matches!(
                d.state,
                DelegationState::Frozen | DelegationState::Merging { .. }
            )
        });
        (self.active || self.parent.is_none())
            && self.retired.is_none()
            && self.member_change.is_none()
            && !in_flight
            && !self.removed
    }
}

impl ScopeView {
    /// The names this scope holds itself, for its split decisions: its prefix and range,
    /// with the end brought down to the first range it split off (a range split always
    /// moves the right-hand part away). Delegated subtrees inside are not taken out; ranges
    /// learned of a child's prefix are not this scope's.
    pub fn bounds(&self) -> ScopeBounds {
        let range = self
            .descriptor
            .as_ref()
            .map(|d| d.range.clone())
            .unwrap_or_default();
        let split_off = self
            .delegations
            .values()
            .filter(|d| d.referral.prefix == self.prefix)
            .filter(|d| {
                !matches!(
                    d.state,
                    DelegationState::Aborted | DelegationState::Learned { .. }
                )
            })
            .filter_map(|d| d.referral.range.start.clone())
            .min();
        let end = match (range.end, split_off) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        ScopeBounds {
            prefix: self.prefix.clone(),
            start: range.start,
            end,
        }
    }

    /// Reads the view of the scope of `keys` from `tree`. `prefix` is kept when the scope
    /// has no descriptor yet (before genesis).
    pub(super) fn load(
        tree: &sled::Tree,
        keys: &Keys,
        prefix: Name,
    ) -> Result<ScopeView, AnchorError> {
        let policy_toml: Option<String> = read_meta(tree, keys, Meta::Policy)?;
        let policy = match &policy_toml {
            Some(t) => Some(Policy::from_toml(t).map_err(|e| AnchorError::Corrupt(e.to_string()))?),
            None => None,
        };
        let descriptor: Option<ScopeDescriptor> = read_meta(tree, keys, Meta::Descriptor)?;
        let names: u64 = read_meta(tree, keys, Meta::Names)?.unwrap_or(0);
        let applied: Option<LogId<NodeId>> = read_meta(tree, keys, Meta::Applied)?;
        let active: bool = read_meta(tree, keys, Meta::Active)?.unwrap_or(true);
        let parent: Option<ScopeDescriptor> = read_meta(tree, keys, Meta::Parent)?;
        let watch_floor: u64 = read_meta(tree, keys, Meta::WatchFloor)?.unwrap_or(0);
        let changes: u64 = read_meta(tree, keys, Meta::Changes)?.unwrap_or(0);
        let origin: Option<u64> = read_meta(tree, keys, Meta::Origin)?;
        let last_split_ms: Option<u64> = read_meta(tree, keys, Meta::LastSplit)?;
        let retired: Option<Retired> = read_meta(tree, keys, Meta::Retired)?;
        let member_change: Option<MemberChange> = read_meta(tree, keys, Meta::MemberChange)?;
        let mut delegations = BTreeMap::new();
        for kv in tree.scan_prefix(keys.all(Tag::Delegation)) {
            let (_, v) = kv?;
            let d: Delegation = codec::decode(&v, proto::limits::RAFT_FRAME_BYTES_MAX)?;
            delegations.insert(d.referral.first().clone(), d);
        }
        let prefix = match &descriptor {
            Some(d) => d.prefix.clone(),
            None => prefix,
        };
        Ok(ScopeView {
            prefix,
            policy,
            policy_toml,
            descriptor,
            names,
            applied,
            delegations,
            active,
            parent,
            watch_floor,
            changes,
            origin,
            last_split_ms,
            retired,
            removed: false,
            member_change,
        })
    }
}

/// One single-valued field of the scope, decoded.
pub(super) fn read_meta<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    keys: &Keys,
    field: Meta,
) -> Result<Option<T>, AnchorError> {
    match tree.get(keys.meta(field))? {
        Some(b) => Ok(Some(codec::decode(
            &b,
            proto::limits::RAFT_FRAME_BYTES_MAX,
        )?)),
        None => Ok(None),
    }
}
