//! Scope identities and descriptors, and how anchors are named in them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;
use crate::name::Name;

/// A stable scope id: 16 bytes of a blake3 digest.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct ScopeId(pub [u8; 16]);

impl ScopeId {
    /// The id of the root scope, the same on every cluster.
    pub fn root() -> ScopeId {
        ScopeId::derive(&[b"anchorage/root-scope/v1"])
    }

    /// An id derived from the given parts (parent id, split point, log index...).
    pub fn derive(parts: &[&[u8]]) -> ScopeId {
        let mut h = blake3::Hasher::new();
        for p in parts {
            h.update(&(p.len() as u64).to_be_bytes());
            h.update(p);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&h.finalize().as_bytes()[..16]);
        ScopeId(id)
    }

    /// The id of the child scope that a delegation of `prefix`, committed at log index
    /// `index` of scope `parent`, creates. Both ends derive it: the parent's members when
    /// they apply the delegation, the child's members when they check a seed against it.
    pub fn child(parent: &ScopeId, prefix: &Name, index: u64) -> ScopeId {
        ScopeId::derive(&[
            &parent.0,
            prefix.to_string().as_bytes(),
            &index.to_be_bytes(),
        ])
    }

    /// Hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the hex form.
    pub fn from_hex(s: &str) -> Result<ScopeId, ProtoError> {
        let bytes = hex::decode(s).map_err(|e| ProtoError::Malformed {
            reason: format!("scope id {s:?}: {e}"),
        })?;
        let id: [u8; 16] = bytes.try_into().map_err(|_| ProtoError::Malformed {
            reason: format!("scope id {s:?} must be 32 hex digits"),
        })?;
        Ok(ScopeId(id))
    }
}

impl fmt::Display for ScopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ScopeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeId({})", &self.to_hex()[..8])
    }
}

/// How an anchor is reached: its libp2p peer id and listen addresses (text multiaddrs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct AnchorInfo {
    /// Base58 libp2p peer id.
    pub peer_id: String,
    /// Multiaddrs it listens on.
    pub addrs: Vec<String>,
}

/// An anchor chosen as a member of a new scope, with the labels it carries (copied from its
/// status into a delegation, signed by the parent's admins, and checked against the child
/// policy's `[placement]` at apply; each member checks its own labels again when seeded).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberSpec {
    /// The anchor.
    pub anchor: AnchorInfo,
    /// Its labels (`jurisdiction = "eu"`).
    pub labels: std::collections::BTreeMap<String, String>,
}

/// A change of a scope's members in flight: committed by an admin-signed `Op::Members`
/// (or the scope's own placement decision), carried out by the scope's leader: each new
/// anchor joins as a learner, is promoted once it has caught up (a joint, then a uniform
/// Raft configuration), and the anchors that leave drop their replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberChange {
    /// The log index of the entry that started it.
    pub index: u64,
    /// The members once it is done, in the scope's order.
    pub target: Vec<AnchorInfo>,
    /// The anchors that join, with the labels checked against placement.
    pub added: Vec<MemberSpec>,
    /// The peer ids of the anchors that leave.
    pub removed: Vec<String>,
    /// When it was committed (the entry's proposal time), ms since the epoch.
    pub started_ms: u64,
}

impl MemberChange {
    /// The peer ids of the members once it is done.
    pub fn target_peers(&self) -> Vec<&str> {
        self.target.iter().map(|a| a.peer_id.as_str()).collect()
    }
}

/// Where a resolver goes for names under `prefix`: the child scope and its members. Handed
/// out by the parent from its delegations (`docs/design.md`, "Scopes" and "Resolution").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    /// The child scope.
    pub scope: ScopeId,
    /// The prefix it governs.
    pub prefix: Name,
    /// The delegation's epoch (bumped when its members change).
    pub epoch: u64,
    /// The child's member anchors; only they may answer for it.
    pub members: Vec<AnchorInfo>,
    /// How long a resolver may cache this referral, seconds.
    pub ttl_s: u32,
    /// The part of `prefix`'s subtree the child governs: all of it for a delegated subtree, a
    /// key range for a scope born from a range split. (Appended last: a field's position is
    /// its encoding.)
    pub range: KeyRange,
}

impl Referral {
    /// True if the child governs `name`: under the prefix and inside the range.
    pub fn covers(&self, name: &Name) -> bool {
        self.range.covers(&self.prefix, name)
    }

    /// The first name the child can govern: the range's start, or the prefix. Delegations
    /// and cached referrals are keyed by it.
    pub fn first(&self) -> &Name {
        self.range.start.as_ref().unwrap_or(&self.prefix)
    }

    /// True when the referral leads from a scope at (`prefix`, `start`) to one strictly
    /// nearer a name: a deeper prefix below it, or the same prefix with a later range start
    /// (a range split off to the right). Every hop of a walk must make such progress.
    pub fn narrower_than(&self, prefix: &Name, start: Option<&Name>) -> bool {
        if self.prefix == *prefix {
            return match (&self.range.start, start) {
                (Some(mine), Some(theirs)) => mine > theirs,
                (Some(_), None) => true,
                (None, _) => false,
            };
        }
        self.prefix.is_under(prefix) && self.prefix.depth() > prefix.depth()
    }
}

/// A range of a prefix's subtree, by the first label below the prefix: the names from
/// `start` (inclusive) to `end` (exclusive) in name order, where `start` and `end` are
/// children of the prefix (`/users/m`), so a subtree is never cut. Unbounded by default: the
/// whole subtree, the prefix itself included.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct KeyRange {
    /// The first name of the range; `None`: from the prefix itself.
    pub start: Option<Name>,
    /// The first name after the range; `None`: to the end of the subtree.
    pub end: Option<Name>,
}

impl KeyRange {
    /// The whole subtree.
    pub fn all() -> KeyRange {
        KeyRange::default()
    }

    /// True if `name` lies under `prefix` and inside the range.
    pub fn covers(&self, prefix: &Name, name: &Name) -> bool {
        name.is_under(prefix)
            && self.start.as_ref().is_none_or(|s| name >= s)
            && self.end.as_ref().is_none_or(|e| name < e)
    }

    /// True for a part of the subtree rather than all of it.
    pub fn is_bounded(&self) -> bool {
        self.start.is_some() || self.end.is_some()
    }

    /// True if both ends are children of `prefix` and `start < end`: the form every range of
    /// a scope takes.
    pub fn is_valid_for(&self, prefix: &Name) -> bool {
        let child = |n: &Name| n.is_under(prefix) && n.depth() == prefix.depth() + 1;
        self.start.as_ref().is_none_or(child)
            && self.end.as_ref().is_none_or(child)
            && match (&self.start, &self.end) {
                (Some(s), Some(e)) => s < e,
                _ => true,
            }
    }

    /// The boundary a cut at `name` makes under `prefix`: `name` shortened to its label
    /// right below the prefix (`/users/m/x` → `/users/m`), so the subtree of that label goes
    /// to the right-hand side whole. `None` when `name` is not strictly below `prefix`.
    pub fn boundary(prefix: &Name, name: &Name) -> Option<Name> {
        if !name.is_under(prefix) || name.depth() <= prefix.depth() {
            return None;
        }
        Name::from_labels(&name.labels()[..=prefix.depth()]).ok()
    }
}

impl fmt::Display for KeyRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.start, &self.end) {
            (None, None) => f.write_str("[all]"),
            (s, e) => write!(
                f,
                "[{}, {})",
                s.as_ref().map_or("-".to_string(), |n| n.to_string()),
                e.as_ref().map_or("-".to_string(), |n| n.to_string())
            ),
        }
    }
}

/// The state of a delegation in the parent (`docs/design.md`, "Delegation").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DelegationState {
    /// Committed; writes under the prefix are refused with `Moving` while the child is seeded.
    Frozen,
    /// The child governs the prefix; the parent answers with a referral.
    Active,
    /// Seeding failed; the prefix is writable in the parent again.
    Aborted,
    /// A split-off child is merging back: the parent committed the merge at its log index
    /// `index` and still refers to the child, which retires (refuses writes with `Moving`)
    /// and whose final records the parent then takes in. (Appended last: a variant's
    /// position is its encoding.)
    Merging {
        /// The parent's log index of the merge entry.
        index: u64,
    },
    /// Not a delegation this scope made but a range its child learned to split off: the
    /// child `base` (a delegated subtree of this scope) split a range of its prefix off, and
    /// a majority of `base`'s members vouched for the new range scope with signed referral
    /// answers, so this scope refers names in the range straight to it, saving the hop
    /// through `base`. It refines the live delegation to `base` only, is never seeded, handed
    /// over or merged. (Appended last: a variant's position is its encoding.)
    Learned {
        /// The child scope whose delegation this range refines.
        base: ScopeId,
    },
}

impl DelegationState {
    /// True when the parent refers readers (and writers) to the child: Active, or Merging
    /// until the merge completes.
    pub fn refers(&self) -> bool {
        matches!(
            self,
            DelegationState::Active
                | DelegationState::Merging { .. }
                | DelegationState::Learned { .. }
        )
    }
}

/// A delegation as the parent's state holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delegation {
    /// The child's referral (scope id, prefix, epoch, members, ttl).
    pub referral: Referral,
    /// Members with the labels the delegation was signed with.
    pub members: Vec<MemberSpec>,
    /// The child's first policy, TOML.
    pub policy_toml: String,
    /// Log index of the parent entry that committed the delegation (the child's log starts
    /// after it, so a name's version keeps growing across the move).
    pub index: u64,
    /// Where it stands.
    pub state: DelegationState,
}

/// What a scope is: id, prefix, range and members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeDescriptor {
    /// Stable id.
    pub id: ScopeId,
    /// The prefix it governs.
    pub prefix: Name,
    /// Incremented on every change of range or members.
    pub epoch: u64,
    /// Member anchors.
    pub members: Vec<AnchorInfo>,
    /// The part of the prefix's subtree the scope governs (all of it unless the scope was
    /// born from a range split). (Appended last: a field's position is its encoding.)
    pub range: KeyRange,
}

impl ScopeDescriptor {
    /// True if the scope's prefix and range hold `name` (delegations aside).
    pub fn covers(&self, name: &Name) -> bool {
        self.range.covers(&self.prefix, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_id_is_the_blake3_of_parent_prefix_and_index() {
        let eu = Name::parse("/eu").unwrap();
        let id = ScopeId::child(&ScopeId::root(), &eu, 17);
        let want = ScopeId::derive(&[&ScopeId::root().0, b"/eu", &17u64.to_be_bytes()]);
        assert_eq!(id, want);
        assert_eq!(id.to_hex(), "cbfcb2838ccd7bac2513d7b155779a79");
        assert_ne!(id, ScopeId::child(&ScopeId::root(), &eu, 18));
        assert_ne!(id, ScopeId::child(&id, &eu, 17));
    }
}
