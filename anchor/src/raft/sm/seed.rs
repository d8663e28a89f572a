//! The two writes that create or end a scope outside its Raft log: seeding a child scope
//! born from a delegation, and removing a scope's state.

use openraft::{LogId, Membership, SnapshotMeta};
use proto::msg::SeededNonce;
use proto::{codec, AnchorInfo, Name, RecordSet, ScopeDescriptor, SignedMutation};

use super::keys::{nonce_value, Keys, Meta, SM_TREE, SNAPSHOT_TREE};
use super::snapshot::{self, StoredMem};
use super::view::ScopeView;
use crate::raft::NodeId;
use crate::AnchorError;

/// The initial state of a child scope born from a delegation.
pub struct Seed<'a> {
    /// The child.
    pub child: &'a ScopeDescriptor,
    /// Its parent.
    pub parent: &'a ScopeDescriptor,
    /// Its first policy, TOML.
    pub policy_toml: &'a str,
    /// The records that move, every one under the child's prefix.
    pub records: &'a [(Name, RecordSet)],
    /// The replay protection that moves with them.
    pub nonces: &'a [SeededNonce],
    /// Where the child's log starts (the parent's delegation index, term 0).
    pub log_id: LogId<NodeId>,
    /// The child's members as a Raft membership.
    pub membership: Membership<NodeId, AnchorInfo>,
    /// The admin-signed delegation (kept so the child's leader can bring in a member that
    /// missed the seeding); `None` for a scope split off by its parent's own decision.
    pub proof: Option<&'a SignedMutation>,
    /// For a scope split off by its parent: when the parent split (the child counts it as its
    /// own last split, so it waits `interval_s_min` before it splits in turn).
    pub split_at_ms: Option<u64>,
}

/// Writes a child scope's initial state and a snapshot of it at `seed.log_id`, replacing any
/// partial earlier attempt. Its Raft group must not be running. The caller also sets the
/// log's purged id to `seed.log_id` and flushes before starting the group.
pub fn seed(db: &sled::Db, seed: &Seed<'_>) -> Result<(), AnchorError> {
    let scope = seed.child.id;
    let keys = Keys::new(scope);
    remove_scope(db, &scope)?;
    let tree = db.open_tree(SM_TREE)?;
    let mut batch = sled::Batch::default();
    let outside = |what: &'static str, name: &Name| AnchorError::SeedOutsidePrefix {
        what,
        name: name.clone(),
        prefix: seed.child.prefix.clone(),
    };
    for (name, set) in seed.records {
        if !seed.child.covers(name) {
            return Err(outside("record", name));
        }
        batch.insert(keys.record(name), codec::encode(set)?);
    }
    for n in seed.nonces {
        if !seed.child.covers(&n.name) {
            return Err(outside("nonce for", &n.name));
        }
        batch.insert(
            keys.nonce(&n.writer, n.nonce),
            nonce_value(n.expires_at_ms, &n.name),
        );
        batch.insert(keys.expiry(n.expires_at_ms, &n.writer, n.nonce), Vec::new());
    }
    let membership = StoredMem::new(Some(seed.log_id), seed.membership.clone());
    batch.insert(
        keys.meta(Meta::Policy),
        codec::encode(&seed.policy_toml.to_string())?,
    );
    batch.insert(keys.meta(Meta::Descriptor), codec::encode(seed.child)?);
    batch.insert(
        keys.meta(Meta::Names),
        codec::encode(&(seed.records.len() as u64))?,
    );
    batch.insert(keys.meta(Meta::Active), codec::encode(&false)?);
    batch.insert(keys.meta(Meta::Parent), codec::encode(seed.parent)?);
    batch.insert(
        keys.meta(Meta::WatchFloor),
        codec::encode(&seed.log_id.index)?,
    );
    batch.insert(keys.meta(Meta::Changes), codec::encode(&0u64)?);
    batch.insert(keys.meta(Meta::Origin), codec::encode(&seed.log_id.index)?);
    if let Some(proof) = seed.proof {
        batch.insert(keys.proof(&scope), codec::encode(proof)?);
    }
    if let Some(at) = seed.split_at_ms {
        batch.insert(keys.meta(Meta::LastSplit), codec::encode(&at)?);
    }
    batch.insert(keys.meta(Meta::Applied), codec::encode(&seed.log_id)?);
    batch.insert(keys.meta(Meta::Membership), codec::encode(&membership)?);
    tree.apply_batch(batch)?;
    // What the state machine will read when it opens: refuse a seed it could not.
    ScopeView::load(&tree, &keys, seed.child.prefix.clone())?;
    let (applied, membership, data) = snapshot::dump(&tree, &keys)?;
    let snapshot_meta = SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
        snapshot_id: format!("seed-{}-{}", seed.log_id.index, snapshot::hex_prefix(&data)),
    };
    snapshot::store(&db.open_tree(SNAPSHOT_TREE)?, &keys, &snapshot_meta, &data)
}

/// Deletes every state-machine and snapshot key of a scope.
pub fn remove_scope(db: &sled::Db, scope: &proto::ScopeId) -> Result<(), sled::Error> {
    let keys = Keys::new(*scope);
    for name in [SM_TREE, SNAPSHOT_TREE] {
        let tree = db.open_tree(name)?;
        let mut batch = sled::Batch::default();
        for kv in tree.scan_prefix(keys.scope()) {
            batch.remove(kv?.0);
        }
        tree.apply_batch(batch)?;
    }
    Ok(())
}
