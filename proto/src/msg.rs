//! Every wire message, one section per libp2p protocol (`docs/protocol.md`).
//!
//! Errors that a caller acts on (`NotLeader`, `Conflict`, `Denied`) are data, not strings.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::mutation::SignedMutation;
use crate::name::Name;
use crate::record::RecordSet;
use crate::scope::{AnchorInfo, Referral, ScopeDescriptor, ScopeId};

mod status;
pub use status::{AnchorStatus, Load, PeerLoad, ScopeInfo, ScopeStatus, SplitView};

/// libp2p protocol of Raft RPCs between members of a scope.
pub const RAFT_PROTOCOL: &str = "/anchorage/raft/1";
/// libp2p protocol of resolves.
pub const RESOLVE_PROTOCOL: &str = "/anchorage/resolve/1";
/// libp2p protocol of signed mutations.
pub const MUTATE_PROTOCOL: &str = "/anchorage/mutate/1";
/// libp2p protocol of operator calls.
pub const ADMIN_PROTOCOL: &str = "/anchorage/admin/1";
/// libp2p protocol of watches (long polls for committed changes under a prefix).
pub const WATCH_PROTOCOL: &str = "/anchorage/watch/1";
/// Domain separation of an anchor's signature over a resolve answer.
pub const ANSWER_SIGNATURE_DOMAIN: &[u8] = b"anchorage/answer/v1\0";

/// How fresh a read must be (`docs/design.md`, "Resolution").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ReadLevel {
    /// Any replica or a client cache, at most TTL stale.
    #[default]
    Cached,
    /// Any member's current state, no client cache.
    Replica,
    /// The leader, after a read-index round through the quorum.
    Linearizable,
}

impl fmt::Display for ReadLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReadLevel::Cached => "cached",
            ReadLevel::Replica => "replica",
            ReadLevel::Linearizable => "linearizable",
        })
    }
}

/// Errors an anchor returns on any protocol; a client can match on each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The request was malformed (bad name, bad records, undecodable).
    #[error("invalid request: {reason}")]
    Invalid {
        /// Details.
        reason: String,
    },
    /// A signature did not verify.
    #[error("bad signature: {reason}")]
    BadSignature {
        /// Details.
        reason: String,
    },
    /// Policy refused it.
    #[error("denied by policy: {reason}")]
    Denied {
        /// The policy's reason.
        reason: String,
    },
    /// Compare-and-set failed: the name is at another version (0 = absent).
    #[error("version conflict: the name is at version {current}")]
    Conflict {
        /// Current version.
        current: u64,
    },
    /// The mutation's nonce was already used by this writer.
    #[error("replayed mutation: nonce {nonce} was already used by this key")]
    Replayed {
        /// The nonce.
        nonce: u64,
    },
    /// The mutation expired, or expires too far in the future.
    #[error("mutation expiry {expires_at_ms} ms is outside the accepted window ({reason})")]
    Expired {
        /// Its expiry.
        expires_at_ms: u64,
        /// Why.
        reason: String,
    },
    /// This anchor is not the scope's leader; retry at `leader` if known.
    #[error("not the leader of scope {scope}")]
    NotLeader {
        /// The scope.
        scope: ScopeId,
        /// The leader, when known.
        leader: Option<AnchorInfo>,
    },
    /// No scope hosted here governs the name.
    #[error("no scope on this anchor governs {name}")]
    NoScope {
        /// The name.
        name: Name,
    },
    /// The anchor cannot serve the request now (no quorum, shutting down); retry.
    #[error("unavailable: {reason}")]
    Unavailable {
        /// Details.
        reason: String,
    },
    /// The request was refused for another reason.
    #[error("refused: {reason}")]
    Refused {
        /// Details.
        reason: String,
    },
    /// Names under `prefix` are being moved to a new scope: writes are refused until the move
    /// completes (reads are served). Nothing changed; retry shortly.
    #[error("names under {prefix} are moving to a new scope; retry shortly")]
    Moving {
        /// The prefix being moved.
        prefix: Name,
    },
    /// `name` is governed by a child scope: send the request there.
    #[error("{name} is governed by the child scope {} at {}", referral.scope, referral.prefix)]
    Delegated {
        /// The name.
        name: Name,
        /// Where to go (boxed to keep the error small; encoded as the referral itself).
        referral: Box<Referral>,
    },
}

// ---- /anchorage/resolve/1 ----

/// Ask one scope for the record set of a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveRequest {
    /// The name.
    pub name: Name,
    /// Freshness required.
    pub level: ReadLevel,
    /// The scope asked: the deepest one the resolver holds a referral for
    /// ([`ScopeId::root`] at first). The anchor answers from that scope only.
    pub scope: ScopeId,
}

/// What a scope says about a name; signed by the answering anchor in [`SignedAnswer`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// The name's record set.
    Found {
        /// The scope that answered.
        scope: ScopeId,
        /// The name.
        name: Name,
        /// Its records.
        set: RecordSet,
    },
    /// The scope governs the name and it holds nothing.
    NotFound {
        /// The scope that answered.
        scope: ScopeId,
        /// The name.
        name: Name,
    },
    /// The name lies under a child scope: ask its members.
    Referral {
        /// The scope that answered (the parent).
        scope: ScopeId,
        /// The name asked for.
        name: Name,
        /// The child.
        referral: Referral,
    },
    /// A member's word on its scope's members after a membership change (never an answer to
    /// a resolve): the scope's parent updates its referral on the signed word of a majority
    /// of the members it lists. `name` is the scope's first name. (Appended last.)
    Members {
        /// The scope.
        scope: ScopeId,
        /// Its first name.
        name: Name,
        /// The descriptor epoch the member list belongs to.
        epoch: u64,
        /// The members.
        members: Vec<AnchorInfo>,
    },
}

impl Answer {
    /// The scope that answered.
    pub fn scope(&self) -> ScopeId {
        match self {
            Answer::Found { scope, .. }
            | Answer::NotFound { scope, .. }
            | Answer::Referral { scope, .. }
            | Answer::Members { scope, .. } => *scope,
        }
    }

    /// The name it is about.
    pub fn name(&self) -> &Name {
        match self {
            Answer::Found { name, .. }
            | Answer::NotFound { name, .. }
            | Answer::Referral { name, .. }
            | Answer::Members { name, .. } => name,
        }
    }

    /// What a signature covers: the domain, then the encoded answer.
    pub fn signing_bytes(body: &[u8]) -> Vec<u8> {
        let mut v = ANSWER_SIGNATURE_DOMAIN.to_vec();
        v.extend_from_slice(body);
        v
    }
}

/// An [`Answer`] signed by the anchor that gave it: `signature` is the anchor's libp2p
/// identity key's signature over [`Answer::signing_bytes`]`(body)`, and `public_key` is that
/// key in libp2p's protobuf encoding (its peer id must be a member of the answering scope).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedAnswer {
    /// `codec::encode(&Answer)`.
    pub body: Vec<u8>,
    /// The signer's public key, libp2p protobuf encoding.
    pub public_key: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
}

/// The reply to a [`ResolveRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResolveResponse {
    /// A signed answer, not-found or referral.
    Signed(SignedAnswer),
    /// Could not answer.
    Error(WireError),
}

// ---- /anchorage/mutate/1 ----

/// A signed mutation. `forwarded` is set by an anchor relaying it to the leader, so a
/// relay is never relayed again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutateRequest {
    /// The mutation.
    pub mutation: SignedMutation,
    /// Set when an anchor forwards to the leader.
    pub forwarded: bool,
}

/// The outcome of a [`MutateRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MutateResponse {
    /// Committed by the scope's quorum and applied.
    Committed {
        /// The scope.
        scope: ScopeId,
        /// The log index that is now the name's version.
        version: u64,
        /// The leader that committed it, so a client can send the next write there directly.
        leader: Option<AnchorInfo>,
    },
    /// Refused; nothing changed (except when `Unavailable` after a timeout: unknown).
    Error(WireError),
}

// ---- /anchorage/admin/1 ----

/// Operator calls.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminRequest {
    /// This anchor's status.
    Status,
    /// Host a replica of a new scope (used by `anchorage init`). With `bootstrap`, this
    /// anchor also initializes the Raft group and commits the genesis entry with `policy_toml`.
    CreateScope {
        /// The scope.
        descriptor: ScopeDescriptor,
        /// Its first policy.
        policy_toml: String,
        /// Initialize the group from here.
        bootstrap: bool,
    },
    /// Build a snapshot of every hosted scope and purge the log up to it.
    Snapshot,
    /// Describe one hosted scope (by id, or the hosted scope governing a name).
    ScopeInfo {
        /// Which scope.
        target: ScopeTarget,
    },
    /// Seed a replica of a child scope on this member (sent by the parent's leader after the
    /// delegation committed; step 2 in `docs/design.md`, "Delegation").
    SeedScope(SeedScope),
    /// Learn a range a delegated child split off (sent by the child's leader to the members
    /// of the scope holding the delegation; see `docs/protocol.md`, "Learning a range").
    /// (Appended last: a variant's position is its encoding.)
    LearnRange(LearnRange),
    /// Host an empty replica of a scope this anchor joins (sent by the scope's leader while
    /// it carries out a member change; the replica catches up by Raft). Accepted only from a
    /// member of the scope and when this anchor's labels meet `labels_required`.
    JoinScope {
        /// The scope, with its members once the change is done.
        descriptor: ScopeDescriptor,
        /// The labels the scope's placement requires.
        labels_required: BTreeMap<String, String>,
    },
    /// A hint that this anchor left the scope: it asks the scope's members and drops its
    /// replica once a majority of them confirm a newer configuration without it.
    LeaveScope {
        /// The scope.
        scope: ScopeId,
    },
    /// Sign this anchor's word on the members of one of its scopes (`Answer::Members`).
    SignMembers {
        /// The scope.
        scope: ScopeId,
    },
    /// A child scope's new member list, with the signed word of a majority of the members
    /// the parent lists for it: the parent's leader commits it and refers to the new
    /// members from then on.
    ChildMembers(ChildMembers),
    /// Sent by a scope's leader handing its leadership to this anchor: once the other
    /// members' leader leases ran out (`after_ms`), this anchor's replica starts elections
    /// until it leads or `within_ms` passed. Accepted only from the scope's leader.
    Campaign {
        /// The scope.
        scope: ScopeId,
        /// How long to wait before the first election, ms.
        after_ms: u64,
        /// How long to keep trying, ms.
        within_ms: u64,
    },
}

/// A child's new members and the proof (see [`AdminRequest::ChildMembers`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildMembers {
    /// The parent scope (the one holding the delegation).
    pub scope: ScopeId,
    /// The child scope.
    pub child: ScopeId,
    /// Signed `Answer::Members`, one per member.
    pub proofs: Vec<SignedAnswer>,
}

/// A range split off below a delegation, and the proof: signed referral answers of a
/// majority of the delegation's members, each referring the range's first name to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnRange {
    /// The scope that holds the delegation (the one to learn the range).
    pub scope: ScopeId,
    /// The range scope's referral, as the answers carry it.
    pub referral: Referral,
    /// Signed resolve answers (`Answer::Referral` for `referral.first()`), one per member.
    pub proofs: Vec<SignedAnswer>,
}

/// Which scope an admin call is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScopeTarget {
    /// By id.
    Id(ScopeId),
    /// The hosted scope that governs this name (longest prefix).
    Name(Name),
}

/// A (writer, nonce) a parent applied, and until when a replay of it could be valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeededNonce {
    /// The writer's key.
    pub writer: [u8; 32],
    /// The nonce.
    pub nonce: u64,
    /// The mutation's expiry, ms.
    pub expires_at_ms: u64,
    /// The name it changed.
    pub name: Name,
}

/// One chunk of a child scope's initial state. Chunks are numbered from 0; the last has
/// `last` set. Re-sending a chunk, or the whole sequence, is harmless.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedScope {
    /// The parent scope.
    pub parent: ScopeDescriptor,
    /// The parent's log index that committed the delegation (the child's log starts there).
    pub index: u64,
    /// The admin-signed `Op::Delegate` mutation the parent committed: the proof, and the
    /// source of the child's prefix, members and policy.
    pub proof: SignedMutation,
    /// The child's id (derived from the parent id, prefix and index).
    pub child: ScopeId,
    /// Chunk number.
    pub chunk_no: u32,
    /// Records moving to the child, in name order.
    pub records: Vec<(Name, RecordSet)>,
    /// Replay protection moving with them: every unexpired (writer, nonce) of a mutation
    /// the parent applied to a name under the prefix, so the child refuses a replay of a
    /// mutation the parent already applied.
    pub nonces: Vec<SeededNonce>,
    /// Set on the final chunk.
    pub last: bool,
    /// Create the replica empty instead (no records, no chunks): it catches up from the
    /// child's leader by snapshot. Used for a member that missed the seeding.
    pub join_only: bool,
}

/// Answers to [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResponse {
    /// Status.
    Status(AnchorStatus),
    /// One scope.
    Scope(Box<ScopeInfo>),
    /// Done.
    Ok,
    /// Refused.
    Error(WireError),
    /// A signed statement (the answer to [`AdminRequest::SignMembers`]). (Appended last.)
    Signed(SignedAnswer),
}

// The status and scope-detail answers live in `status.rs`.

// ---- /anchorage/watch/1 ----

/// A long poll for committed changes to names under `prefix` in one scope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    /// The scope.
    pub scope: ScopeId,
    /// Names under this prefix.
    pub prefix: Name,
    /// The log index up to which the watcher has seen every change (`up_to` of its last
    /// answer); `None` starts from now.
    pub after: Option<u64>,
    /// How long the anchor may hold the request when nothing changed (at most
    /// [`crate::limits::WATCH_WAIT_MS_MAX`]).
    pub wait_ms: u32,
    /// The child scopes under `prefix` the watcher already follows from this scope (each
    /// one a leg of its own). With `Some`, the anchor answers [`WatchResponse::Children`]
    /// at once, or as soon as it changes during the wait, when the scope's live (Active or
    /// Merging) delegations under the prefix are not exactly these; with `None` it never
    /// lists them. (Appended last: a field's position is its encoding.)
    pub children: Option<Vec<ScopeId>>,
}

/// A child scope that governs part of a watched prefix: a subtree strictly under it, or a
/// range split off it (or off a prefix under it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchChild {
    /// Where the child is and what it governs.
    pub referral: Referral,
    /// The parent's log index of the delegation (or split): the parent delivers the child's
    /// names' changes up to it, the child those after it (its history starts there).
    pub index: u64,
}

/// One committed change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The name.
    pub name: Name,
    /// The log index that made the change (the name's new version).
    pub version: u64,
    /// The new record set, or `None` for a delete.
    pub set: Option<RecordSet>,
}

/// The reply to a [`WatchRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchResponse {
    /// Every change under the prefix in `(after, up_to]`, in version order.
    Changes {
        /// The scope.
        scope: ScopeId,
        /// The changes.
        events: Vec<ChangeEvent>,
        /// The index they cover up to; send it as the next `after`.
        up_to: u64,
    },
    /// History since `after` is no longer kept: the watcher must re-read and resume from
    /// `up_to`.
    Compacted {
        /// The scope.
        scope: ScopeId,
        /// Oldest index still resumable.
        oldest: u64,
        /// Resume from here after re-reading.
        up_to: u64,
    },
    /// The prefix has moved to a child scope, and every change the parent made under it
    /// up to the move has been delivered: continue at the child with the same `after`.
    Referral(Referral),
    /// Could not answer.
    Error(WireError),
    /// The scope's live delegations under the prefix (asked for with
    /// [`WatchRequest::children`]), as of its applied index `at`: follow each child from its
    /// `index`; stop following a child that is no longer listed (it merged back, and this
    /// scope reports its records as changes at the merge). No changes are delivered with it:
    /// ask again with the same `after`. (Appended last: a variant's position is its
    /// encoding.)
    Children {
        /// The scope.
        scope: ScopeId,
        /// At most [`crate::limits::WATCH_LEGS_MAX`] children, by first name.
        children: Vec<WatchChild>,
        /// The scope's applied index the list is true at (a listing never goes back).
        at: u64,
    },
}

// ---- /anchorage/raft/1 ----

/// Which openraft RPC a [`RaftRequest`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftRpc {
    /// AppendEntries.
    Append,
    /// RequestVote.
    Vote,
    /// One InstallSnapshot chunk.
    Snapshot,
    /// Several small RPCs to one anchor, coalesced: `payload` is `codec(Vec<RaftRequest>)`
    /// (at most [`crate::limits::RAFT_COALESCED_RPCS_MAX`], none of them coalesced itself), the
    /// answer `RaftResponse::Ok(codec(Vec<RaftResponse>))`, one per request, in order. The
    /// outer request's `scope` is ignored. (Renaming a variant keeps the wire format: the
    /// codec encodes a variant by its position.)
    Coalesced,
    /// A follower's request counts for the scope's leader: `payload` is
    /// `codec(proto::load::FollowerReport)`, the answer `RaftResponse::Ok` with an empty
    /// payload. (Appended last.)
    LoadReport,
    /// A scope's leader asks a member to sleep with it: `payload` is
    /// `codec(QuiesceRequest)`, the answer `RaftResponse::Ok(codec(QuiesceAnswer))`.
    /// (Appended last.)
    Quiesce,
    /// Anchor-level liveness ping (the outer `scope` is ignored, `payload` empty): the answer
    /// is `RaftResponse::Ok(codec(u64))`, the answering anchor's incarnation (its start time,
    /// ms), so a restart is seen even when it was quicker than the ping interval.
    /// (Appended last.)
    Ping,
}

/// A scope leader's request that a member's replica sleep (no ticks, no heartbeats, no
/// elections) until something wakes it: the member agrees only when it has the same term,
/// knows the sender as leader, and has the same last log id, applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuiesceRequest {
    /// The leader's term.
    pub term: u64,
    /// The leader's Raft node id.
    pub leader: u64,
    /// The leader's last log id as (term, index); `None` for an empty log.
    pub last_log: Option<(u64, u64)>,
}

/// A member's answer to a [`QuiesceRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuiesceAnswer {
    /// Its replica sleeps now.
    Asleep,
    /// It stays awake; why (term, leader, log, not_applied, sender).
    Mismatch(String),
}

/// A Raft RPC for one scope; `payload` is the codec-encoded openraft request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftRequest {
    /// The scope (Raft group).
    pub scope: ScopeId,
    /// Which RPC.
    pub rpc: RaftRpc,
    /// Encoded openraft request.
    pub payload: Vec<u8>,
}

/// The reply to a [`RaftRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RaftResponse {
    /// Encoded `Result<openraft response, openraft error>`.
    Ok(Vec<u8>),
    /// The receiver refused it (unknown scope, sender not a member, bad frame).
    Refused(WireError),
}
