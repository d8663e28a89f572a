//! What the admin protocol reports about an anchor and its scopes: `anchorage status`
//! ([`AnchorStatus`], [`ScopeStatus`], [`PeerLoad`]) and `anchorage scope show`
//! ([`ScopeInfo`], [`Load`], [`SplitView`]). Re-exported by [`crate::msg`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::name::Name;
use crate::scope::{Delegation, ScopeDescriptor, ScopeId};

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
    /// The load summaries this anchor holds of live anchors (its own included), as many as
    /// fit [`crate::limits::STATUS_PEERS_BYTES_MAX`]. (Appended last.)
    pub peers: Vec<PeerLoad>,
    /// Live summaries left out of `peers` for size. (Appended last.)
    pub peers_omitted: u32,
}

/// One anchor's load summary as another anchor holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerLoad {
    /// The summary.
    pub summary: crate::gossip::LoadSummary,
    /// How long ago the holder received it, ms (by the holder's clock).
    pub age_ms: u64,
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
    /// The log index of the Raft configuration `members` comes from. (Appended last.)
    pub membership_log: Option<u64>,
    /// The term of the entry holding that configuration: with `membership_log`, its
    /// position (two replicas can hold different configurations at one index, one of them
    /// never to be committed). (Appended last.)
    pub membership_term: Option<u64>,
    /// `awake`, `asleep` (quiescent: no ticks, no heartbeats) or `hibernated` (the group
    /// stopped; reopened from disk by the first message, write or read). (Appended last.)
    pub sleep: String,
}

/// One hosted scope in detail, as `anchorage scope show` prints it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeInfo {
    /// Raft and storage status on the answering anchor.
    pub status: ScopeStatus,
    /// Descriptor (id, prefix, epoch, members).
    pub descriptor: ScopeDescriptor,
    /// Its parent, for a delegated scope.
    pub parent: Option<ScopeDescriptor>,
    /// Current policy, TOML.
    pub policy_toml: Option<String>,
    /// Delegations it holds, without their policy text (ask the child scope for its policy),
    /// as many as fit one frame.
    pub delegations: Vec<Delegation>,
    /// False while a new child scope waits for its parent to hand over, and once a scope
    /// retired to merge back into its parent (writes refused).
    pub active: bool,
    /// Load seen on the answering anchor.
    pub load: Load,
    /// The split decider's view on the answering anchor; `None` before the replica has
    /// applied its scope's policy.
    pub split: Option<SplitView>,
    /// The member change in flight, if any. (Appended last.)
    pub member_change: Option<crate::scope::MemberChange>,
}

/// Requests one anchor served for one scope in the last [`Load::WINDOW_S`] seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Load {
    /// Resolves answered.
    pub reads: u64,
    /// Mutations received (before forwarding).
    pub writes: u64,
}

impl Load {
    /// The window the counts cover, seconds.
    pub const WINDOW_S: u64 = 10;
}

/// A scope's load and size as its split decider sees them on one anchor, and what the
/// decider would do now and why (`anchorage scope show`).
///
/// Load covers the requests this anchor served for the scope (reads it answered, writes it
/// received); size comes from the anchor's copy of the scope's state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitView {
    /// Reads in the last settled second.
    pub reads_per_s: u64,
    /// Writes in the last settled second.
    pub writes_per_s: u64,
    /// Highest reads/s over the retained window.
    pub reads_peak: u64,
    /// Highest writes/s over the retained window.
    pub writes_peak: u64,
    /// The retained window of the peaks, seconds.
    pub peak_window_s: u64,
    /// True once a full retained window has been observed, so the peaks can be trusted.
    pub peak_reliable: bool,
    /// Names held.
    pub names: u64,
    /// Bytes of record sets, from the scan; `None` when the scan stopped before the end.
    pub bytes: Option<u64>,
    /// Names the size scan read (it reads at most a bounded number).
    pub scanned: u64,
    /// True when the scan read every name, so the child-label sizes are exact; false: they
    /// cover the first `scanned` names in name order only.
    pub complete: bool,
    /// The child labels holding the most names, most first: (label, names, bytes).
    pub children: Vec<(String, u64, u64)>,
    /// The median name, when the scan reached it.
    pub median: Option<Name>,
    /// The sampler's best split key, if a candidate qualifies.
    pub key: Option<Name>,
    /// The sampler's finding in words: the key and its counts, or why there is none.
    pub key_text: String,
    /// True when the decider would split the scope now (with `auto = true`).
    pub would_split: bool,
    /// What the decider would do now and why, in words.
    pub decision: String,
    /// The policy's `[split] auto`.
    pub auto: bool,
    /// What the merge decider would do now for each child this scope split off, one line
    /// per child (`/shop/eu: stay: …` or `/shop/eu: merge due: …`); empty when it has none.
    pub merges: Vec<String>,
}
