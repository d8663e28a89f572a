//! The one error type of the anchor crate.

use thiserror::Error;

/// What can go wrong inside an anchor.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// The configuration file is missing or invalid.
    #[error("configuration {path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// What to fix.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The database failed.
    #[error("storage: {0} (check the data directory's disk and permissions)")]
    Storage(#[from] sled::Error),
    /// Stored or received bytes do not decode.
    #[error("{0}")]
    Proto(#[from] proto::ProtoError),
    /// Stored state is inconsistent.
    #[error("stored state is corrupt: {0}")]
    Corrupt(String),
    /// The scope is no longer hosted here (it merged back into its parent).
    #[error("scope {0} is no longer hosted here")]
    ScopeRemoved(proto::ScopeId),
    /// The network layer failed.
    #[error("network: {0}")]
    Net(#[from] resolver::net::NetError),
    /// Raft refused or failed (openraft's own errors only).
    #[error("raft: {0}")]
    Raft(String),
    /// A scope to host here does not list this anchor among its members.
    #[error("this anchor ({anchor}) is not among the scope's members; add its peer id to the member list")]
    NotAMember {
        /// This anchor's peer id.
        anchor: String,
    },
    /// A scope member's peer id does not parse.
    #[error("bad member peer id {peer_id:?}; give the base58 peer id `anchorage status` shows")]
    BadMember {
        /// What was given.
        peer_id: String,
    },
    /// A scope's member list is empty or names an anchor twice.
    #[error("scope members must be distinct and non-empty")]
    MembersNotDistinct,
    /// A new scope's first entry did not commit.
    #[error("the genesis entry was not committed in {secs} s; check that a majority of the members is running and reachable")]
    GenesisTimeout {
        /// How long we tried.
        secs: u64,
    },
    /// A policy did not parse.
    #[error("policy: {0}")]
    Policy(#[from] policy::PolicyError),
    /// A scope's Raft log or state machine store failed (`u64` is the Raft node id).
    #[error("raft storage: {0} (check the data directory's disk and permissions)")]
    RaftStorage(Box<openraft::StorageError<u64>>),
    /// A child scope's seed holds a record or nonce outside the child's prefix: the parent
    /// sent a bad seed, and nothing of it was kept.
    #[error(
        "seed {what} {name} is not under the child scope's prefix {prefix}; nothing was seeded"
    )]
    SeedOutsidePrefix {
        /// What it is: "record" or "nonce for".
        what: &'static str,
        /// The name outside the prefix.
        name: proto::Name,
        /// The child scope's prefix.
        prefix: proto::Name,
    },
    /// `init` on an anchor that already hosts the scope.
    #[error("scope {0} already exists on this anchor; init runs once per cluster")]
    AlreadyExists(proto::ScopeId),
}

impl From<openraft::StorageError<u64>> for AnchorError {
    fn from(e: openraft::StorageError<u64>) -> AnchorError {
        AnchorError::RaftStorage(Box::new(e))
    }
}
