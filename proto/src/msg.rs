//! Every wire message, one section per libp2p protocol (DESIGN.md §4).
//!
//! Errors that a caller acts on (`NotLeader`, `Conflict`, `Denied`) are data, not strings.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::mutation::SignedMutation;
use crate::name::Name;
use crate::record::RecordSet;
use crate::scope::{AnchorInfo, ScopeDescriptor, ScopeId};

/// libp2p protocol of Raft RPCs between members of a scope.
pub const RAFT_PROTOCOL: &str = "/anchorage/raft/1";
/// libp2p protocol of resolves.
pub const RESOLVE_PROTOCOL: &str = "/anchorage/resolve/1";
/// libp2p protocol of signed mutations.
pub const MUTATE_PROTOCOL: &str = "/anchorage/mutate/1";
/// libp2p protocol of operator calls.
pub const ADMIN_PROTOCOL: &str = "/anchorage/admin/1";

/// How fresh a read must be (DESIGN.md §6).
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
}

// ---- /anchorage/resolve/1 ----

/// Ask for the record set of a name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveRequest {
    /// The name.
    pub name: Name,
    /// Freshness required.
    pub level: ReadLevel,
}

/// The answer to a [`ResolveRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResolveResponse {
    /// The name's record set.
    Answer {
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
}

/// Answers to [`AdminRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminResponse {
    /// Status.
    Status(AnchorStatus),
    /// Done.
    Ok,
    /// Refused.
    Error(WireError),
}

/// One anchor, as `anchorage status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorStatus {
    /// Its peer id.
    pub peer_id: String,
    /// Its Raft node id.
    pub node_id: u64,
    /// Listen addresses.
    pub addrs: Vec<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Hosted scopes.
    pub scopes: Vec<ScopeStatus>,
}

/// One hosted scope replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeStatus {
    /// Scope id.
    pub id: ScopeId,
    /// Scope prefix.
    pub prefix: Name,
    /// leader, follower, candidate, learner.
    pub role: String,
    /// Current term.
    pub term: u64,
    /// Leader's peer id, if known.
    pub leader: Option<String>,
    /// Last applied log index.
    pub last_applied: Option<u64>,
    /// Last log index.
    pub last_log: Option<u64>,
    /// Index of the last snapshot.
    pub snapshot: Option<u64>,
    /// Member peer ids.
    pub members: Vec<String>,
    /// Names stored.
    pub names: u64,
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
