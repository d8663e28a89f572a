//! Every bound Anchorage puts on its inputs, in one place, with the unit in the name.
//!
//! The codec checks a frame's length against these before it decodes a byte, names and
//! records are validated against them when they are built or decoded, and the `const`
//! assertions at the bottom keep them consistent with each other.

/// Bytes in one label of a name (`payments`).
pub const LABEL_BYTES_MAX: usize = 63;
/// Labels in one name (`/a/b/c` has 3).
pub const NAME_LABELS_MAX: usize = 32;
/// Bytes in the text form of a name, slashes included.
pub const NAME_BYTES_MAX: usize = 255;
/// Bytes in one `blob` record.
pub const BLOB_BYTES_MAX: usize = 64 * 1024;
/// Bytes in one `text` record.
pub const TEXT_BYTES_MAX: usize = 4 * 1024;
/// Bytes in the peer id of an `object` record.
pub const PEER_ID_BYTES_MAX: usize = 128;
/// Records in one record set.
pub const RECORDS_PER_SET_MAX: usize = 64;
/// Encoded bytes of one record set (records, TTL, version, writer).
pub const RECORD_SET_BYTES_MAX: usize = 96 * 1024;
/// Longest TTL any record set may carry, in seconds (one week).
pub const TTL_S_MAX: u32 = 7 * 24 * 3600;
/// Encoded bytes of one mutation body (what the writer signs).
pub const MUTATION_BYTES_MAX: usize = RECORD_SET_BYTES_MAX + 4 * 1024;
/// How far in the future a mutation's expiry may lie, in milliseconds. Bounds the
/// replay-protection set each scope has to remember.
pub const MUTATION_VALIDITY_MS_MAX: u64 = 10 * 60 * 1000;
/// Bytes of one client frame (resolve, mutate, admin, watch) on the wire.
pub const CLIENT_FRAME_BYTES_MAX: usize = 256 * 1024;
/// Bytes of one Raft frame on the wire (a batch of entries or a snapshot chunk).
pub const RAFT_FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Encoded bytes of the mutations the leader batches into one log entry (a single larger
/// mutation still travels alone).
pub const BATCH_BYTES_MAX: usize = 192 * 1024;
/// Mutations batched into one log entry.
pub const BATCH_MUTATIONS_MAX: usize = 256;
/// Upper bound of one log entry's encoded size: a full batch plus one more mutation.
pub const RAFT_ENTRY_BYTES_MAX: usize = BATCH_BYTES_MAX + MUTATION_BYTES_MAX;
/// Entries openraft may put in one AppendEntries; with the largest entry each, the frame
/// still fits [`RAFT_FRAME_BYTES_MAX`].
pub const RAFT_ENTRIES_PER_APPEND_MAX: u64 = 48;
/// Raft RPCs coalesced into one batch frame to one anchor.
pub const RAFT_COALESCED_RPCS_MAX: usize = 1024;
/// Bytes of the RPCs coalesced into one batch frame (only small RPCs are coalesced).
pub const RAFT_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Bytes of one snapshot chunk sent by InstallSnapshot.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1024 * 1024;
/// Bytes of a policy in TOML form.
pub const POLICY_TOML_BYTES_MAX: usize = 64 * 1024;
/// Members of one scope.
pub const SCOPE_MEMBERS_MAX: usize = 9;
/// Addresses advertised for one anchor.
pub const ANCHOR_ADDRS_MAX: usize = 8;
/// Bytes of one multiaddr in text form.
pub const ADDR_BYTES_MAX: usize = 256;
/// Labels one anchor may carry.
pub const LABELS_MAX: usize = 32;
/// Bytes of one label key or value.
pub const LABEL_TEXT_BYTES_MAX: usize = 128;
/// Hops a resolver's referral walk may take before it gives up (deeper than any name).
pub const REFERRAL_HOPS_MAX: usize = NAME_LABELS_MAX + 1;
/// Default TTL of a referral, seconds.
pub const REFERRAL_TTL_S_DEFAULT: u32 = 600;
/// Change events one watch answer carries.
pub const WATCH_EVENTS_MAX: usize = 1024;
/// Encoded bytes of the events in one watch answer (a single larger event travels alone).
pub const WATCH_EVENT_BYTES_MAX: usize = 128 * 1024;
/// Longest a watch request waits for a change before answering empty, ms.
pub const WATCH_WAIT_MS_MAX: u32 = 30_000;
/// Scopes one watch may follow at once: the scope governing its prefix and the child scopes
/// (delegated subtrees, split-off ranges) under the prefix, at any depth. Also the most child
/// scopes one watch answer may list.
pub const WATCH_LEGS_MAX: usize = 32;
/// Log indexes of history each scope keeps for watches to resume from; older resumes get
/// "compacted: resync".
pub const WATCH_HISTORY_INDEXES: u64 = 100_000;
/// Delegations one scope may hold.
pub const DELEGATIONS_MAX: usize = 4096;
/// Bytes of records in one seeding chunk sent to a new scope's members.
pub const SEED_CHUNK_BYTES_MAX: usize = 128 * 1024;

/// Hot scopes one load summary may list.
pub const HOT_SCOPES_MAX: usize = 16;
/// Longest publishing interval a load summary may announce, ms.
pub const SUMMARY_INTERVAL_MS_MAX: u64 = 10 * 60 * 1000;
/// Encoded bytes of one load summary (gossipsub topic `anchorage/load`): totals, the hot
/// scopes, labels and addresses, each at its bound, fit.
pub const LOAD_SUMMARY_BYTES_MAX: usize = 24 * 1024;
/// Bytes of one gossipsub message on the wire: a summary plus the envelope (signer key,
/// signature, sequence number, topic).
pub const GOSSIP_MESSAGE_BYTES_MAX: usize = LOAD_SUMMARY_BYTES_MAX + 4 * 1024;
/// Peers an anchor keeps load summaries of.
pub const PEER_BOOK_MAX: usize = 1024;
/// Bytes of peer summaries one status answer carries.
pub const STATUS_PEERS_BYTES_MAX: usize = 96 * 1024;

const _: () = assert!(NAME_BYTES_MAX > LABEL_BYTES_MAX);
const _: () = assert!(
    LOAD_SUMMARY_BYTES_MAX
        > 256
            + PEER_ID_BYTES_MAX
            + HOT_SCOPES_MAX * (16 + 8 + NAME_BYTES_MAX + 1 + 16)
            + LABELS_MAX * (16 + 2 * LABEL_TEXT_BYTES_MAX)
            + ANCHOR_ADDRS_MAX * (8 + ADDR_BYTES_MAX)
);
const _: () = assert!(CLIENT_FRAME_BYTES_MAX > STATUS_PEERS_BYTES_MAX + 64 * 1024);
const _: () = assert!(RECORD_SET_BYTES_MAX > BLOB_BYTES_MAX + 1024);
const _: () = assert!(MUTATION_BYTES_MAX > RECORD_SET_BYTES_MAX);
const _: () = assert!(CLIENT_FRAME_BYTES_MAX > 2 * MUTATION_BYTES_MAX);
const _: () = assert!(BATCH_BYTES_MAX >= MUTATION_BYTES_MAX);
const _: () = assert!(
    RAFT_FRAME_BYTES_MAX > RAFT_ENTRIES_PER_APPEND_MAX as usize * (RAFT_ENTRY_BYTES_MAX + 4096)
);
const _: () = assert!(RAFT_FRAME_BYTES_MAX > 2 * SNAPSHOT_CHUNK_BYTES_MAX);
const _: () = assert!(RAFT_FRAME_BYTES_MAX > 2 * RAFT_BATCH_BYTES_MAX);
const _: () = assert!(CLIENT_FRAME_BYTES_MAX > WATCH_EVENT_BYTES_MAX + RECORD_SET_BYTES_MAX);
const _: () = assert!(SEED_CHUNK_BYTES_MAX >= RECORD_SET_BYTES_MAX + 1024);
const _: () = assert!(CLIENT_FRAME_BYTES_MAX > SEED_CHUNK_BYTES_MAX + MUTATION_BYTES_MAX + 4096);
