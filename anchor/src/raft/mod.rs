//! Raft plumbing shared by every scope: one openraft type configuration, the sled-backed
//! log store ([`log_store`]) and state machine ([`sm`]), and the network adapter that sends
//! RPCs by scope id ([`network`]), and each group's sleep switches ([`quiesce`]).
//!
//! Group identity (the [`ScopeId`]) lives in the storage and network instances; the type
//! configuration is the same for every scope.

pub mod log_store;
pub mod network;
pub mod proposer;
pub mod quiesce;
pub mod sm;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use proto::msg::WireError;
use proto::{AnchorInfo, ScopeDescriptor, ScopeId, SignedMutation};

/// Raft node ids are derived from libp2p peer ids (see [`crate::identity::node_id`]).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The one openraft type configuration of every scope group.
    pub TypeConfig:
        D = ScopeCommand,
        R = ApplyOutcome,
        NodeId = NodeId,
        Node = AnchorInfo,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft handle of one scope.
pub type ScopeRaft = openraft::Raft<TypeConfig>;

/// A command in a scope's log: what every member applies, in order.
///
/// Time enters as a value (`proposed_at_ms`, the leader's clock at proposal), so apply is a
/// pure function of (state, entry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScopeCommand {
    /// Signed mutations from writers, applied in order as one log entry (the leader's
    /// proposer gathers concurrent writes; no two in one entry address the same name, so
    /// every name's version is still the log index of the entry that last changed it).
    Writes {
        /// The mutations as their writers signed them.
        mutations: Vec<SignedMutation>,
        /// Leader's wall clock when it proposed, ms since the epoch.
        proposed_at_ms: u64,
    },
    /// The first entry of a scope created by `anchorage init`: its descriptor and policy.
    /// Applied only if the scope has no policy yet.
    Genesis {
        /// The scope.
        descriptor: ScopeDescriptor,
        /// Its first policy, TOML.
        policy_toml: String,
    },
    /// The child scope of a Frozen delegation is seeded and has a leader: from this entry the
    /// parent drops the moved records and answers with a referral.
    /// A no-op unless the delegation is Frozen.
    DelegationActive {
        /// The child scope.
        child: ScopeId,
    },
    /// Seeding the child failed: the prefix is writable in the parent again. A no-op unless
    /// the delegation is Frozen.
    DelegationAborted {
        /// The child scope.
        child: ScopeId,
        /// Why, for operators.
        reason: String,
    },
    /// A new child scope whose parent now refers to it starts accepting writes. Idempotent.
    Activate,
    /// The scope's own decision to split a subtree off onto the same members, with the
    /// evidence the leader decided on. Every member checks it at apply with
    /// [`crate::scope::split::justify`] against `proposed_at_ms` (never its own clock); if it
    /// holds, the entry acts as a committed delegation of the child prefix to the same members
    /// (Frozen, no admin-signed proof); if not, it is a no-op. (Appended last: a variant's
    /// position is its encoding.)
    Split {
        /// The plan and the figures that justify it.
        evidence: proto::split::SplitEvidence,
        /// Leader's wall clock when it proposed, ms since the epoch.
        proposed_at_ms: u64,
    },
    /// The parent's decision to take a child it split off back in (step 1 of a merge).
    /// Every member checks it at apply with [`crate::scope::merge::justify_merge`] against
    /// `proposed_at_ms`; if it holds, the child's delegation becomes `Merging` (the parent
    /// still refers to the child); if not, it is a no-op.
    Merge {
        /// The child scope (an Active delegation with no admin-signed proof).
        child: ScopeId,
        /// The figures of both scopes that justify it.
        evidence: proto::split::MergeEvidence,
        /// Leader's wall clock when it proposed, ms since the epoch.
        proposed_at_ms: u64,
    },
    /// In the child (step 2): from this entry it refuses every write with `Moving`, so its
    /// state is final; its reads are still served. A no-op unless `into` is its parent.
    Retire {
        /// The parent it merges into.
        into: ScopeId,
        /// The parent's log index of the `Merge` entry.
        merge_index: u64,
    },
    /// In the parent (step 3): the retired child's final state. Applied only while the
    /// child's delegation is `Merging` and only at an index past every index of the child's
    /// log (`retired_at`), so every name's version keeps growing: the records are taken in
    /// with their versions, the delegation is removed, and the parent answers for the names.
    MergeDone {
        /// The child scope.
        child: ScopeId,
        /// The child's applied log index the records were read at.
        retired_at: u64,
        /// Every record of the child, with its version.
        records: Vec<(proto::Name, proto::RecordSet)>,
        /// The child's replay protection.
        nonces: Vec<proto::msg::SeededNonce>,
    },
    /// In the parent: the merge cannot complete (the child's final state does not fit one
    /// entry, or the child split in the meantime); the delegation is Active again and the
    /// child resumes taking writes. A no-op unless the delegation is `Merging`.
    MergeAborted {
        /// The child scope.
        child: ScopeId,
        /// Why, for operators.
        reason: String,
    },
    /// In a retired child whose merge was aborted: it takes writes again. A no-op unless it
    /// retired for the merge at the parent's `merge_index`.
    Resume {
        /// The parent's log index of the aborted merge entry.
        merge_index: u64,
    },
    /// A range a delegated child split off, learned with the signed answers of a majority
    /// of the delegation's members vouching for it. Every member checks the proofs at apply
    /// against its own delegation ([`crate::scope::learn::check_learned`]); if they hold,
    /// the range is stored as a `Learned` delegation keyed by its first name, and names in
    /// it are referred straight to the range scope. Otherwise a no-op answering `Refused`.
    /// (Appended last: a variant's position is its encoding.)
    LearnRange {
        /// The range scope's referral.
        referral: proto::Referral,
        /// Signed `Answer::Referral`s of the delegation's members for its first name.
        proofs: Vec<proto::msg::SignedAnswer>,
    },
    /// A learned range whose scope no longer governs its first name (it merged back):
    /// every member checks the proofs at apply ([`crate::scope::forget::check_forget`]) and
    /// drops the learned range if they hold; a no-op answering `Refused` otherwise.
    /// (Appended last.)
    ForgetRange {
        /// The learned range's first name.
        first: proto::Name,
        /// Signed answers of a majority of the delegation's members that answer `first`
        /// themselves, from the delegated scope or another learned range.
        proofs: Vec<proto::msg::SignedAnswer>,
    },
    /// The member change started at `index` is done: the Raft configuration is uniform with
    /// the old and the new members as voters. Every member checks that against the last
    /// configuration it applied; if it holds, the descriptor takes the new members (its
    /// epoch plus one) and the change is over (the members that leave are taken out of the
    /// voters next). A no-op answering `Refused` otherwise. (Appended last.)
    MembersChanged {
        /// The log index of the entry that started the change.
        index: u64,
    },
    /// The member change started at `index` is given up (a new anchor did not catch up in
    /// time); the members stay as they were. A no-op unless that change is in flight and the
    /// voters are still the old members. (Appended last.)
    MembersAborted {
        /// The log index of the entry that started the change.
        index: u64,
        /// Why, for operators.
        reason: String,
    },
    /// In a parent: a child's new members, vouched for by the signed word
    /// (`Answer::Members`) of a majority of the members the parent lists for it. Every
    /// member checks the proofs at apply ([`crate::scope::members::check_child_members`]).
    /// (Appended last.)
    ChildMembers {
        /// The child scope.
        child: ScopeId,
        /// Signed `Answer::Members`, one per member.
        proofs: Vec<proto::msg::SignedAnswer>,
    },
    /// The leader's own member change (a dead or misplaced member replaced, a missing one
    /// added, a replica moved off a loaded anchor), decided from its view of the cluster.
    /// Every member checks at apply ([`crate::scope::members::placement_refusal`])
    /// that the policy lets the scope place itself, that it adds at most one anchor that
    /// meets the placement and removes at most one, and that nothing else is in flight;
    /// then it starts like an admin's member change. A no-op answering `Refused` otherwise.
    /// (Appended last.)
    Place {
        /// The anchor that joins, if any.
        add: Vec<proto::MemberSpec>,
        /// The member that leaves, if any.
        remove: Vec<String>,
        /// Why, for operators (`dead`, `placement`, `balance`, `short`).
        why: String,
        /// Leader's wall clock when it proposed, ms since the epoch.
        proposed_at_ms: u64,
    },
}

/// What applying one entry produced; returned to the proposer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ApplyOutcome {
    /// Per mutation of a batch (or one for genesis): `Ok(version)` for a committed change,
    /// or why it was refused at apply.
    pub results: Vec<Result<u64, WireError>>,
}

/// Helper for storage errors.
pub(crate) fn sto_err(
    subject: openraft::ErrorSubject<NodeId>,
    verb: openraft::ErrorVerb,
    e: impl std::fmt::Display,
) -> openraft::StorageError<NodeId> {
    openraft::StorageError::from(openraft::StorageIOError::new(
        subject,
        verb,
        openraft::AnyError::error(e.to_string()),
    ))
}

/// The key prefix of a scope in every sled tree.
pub fn scope_prefix(scope: &ScopeId) -> [u8; 16] {
    scope.0
}
