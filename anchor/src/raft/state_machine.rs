//! The persistent state machine of one scope, in the anchor's shared sled database.
//!
//! Layout of the `sm` tree, every key prefixed by the 16-byte scope id:
//! `r` + name key → record set; `m` + field → applied log id, membership, policy, descriptor,
//! name count; `n` + writer + nonce → expiry (replay protection); `e` + expiry + writer +
//! nonce → () (to prune expired nonces). One `apply` call writes one sled batch, so the
//! records and the applied index move together. Decisions come from [`crate::scope::apply`].

// openraft's StorageError is large and is what its traits return; boxing it here would only
// move the cost.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StoredMembership,
};
use policy::Policy;
use proto::{codec, Name, RecordSet, ScopeDescriptor, ScopeId};

use super::{sto_err, ApplyOutcome, NodeId, ScopeCommand, TypeConfig};
use crate::scope::apply::{self, Effect, ScopeRead};
use crate::scope::verified::VerifiedCache;

const TAG_RECORD: u8 = b'r';
const TAG_META: u8 = b'm';
const TAG_NONCE: u8 = b'n';
const TAG_EXPIRY: u8 = b'e';
const META_APPLIED: &[u8] = b"applied";
const META_MEMBERSHIP: &[u8] = b"membership";
const META_POLICY: &[u8] = b"policy";
const META_DESCRIPTOR: &[u8] = b"descriptor";
const META_NAMES: &[u8] = b"names";
/// Expired nonces pruned per applied entry, so pruning never stalls apply.
const NONCE_PRUNE_PER_ENTRY_MAX: usize = 64;
/// Bytes in a snapshot digest.
const DIGEST_BYTES: usize = 32;

type StoredMem = StoredMembership<NodeId, proto::AnchorInfo>;
/// Key/value pairs of a scope's state machine, keys without the scope prefix.
pub type Kvs = Vec<(Vec<u8>, Vec<u8>)>;
type Dump = (Option<LogId<NodeId>>, StoredMem, Vec<u8>);

/// The part of a scope's state the rest of the anchor reads without going through Raft.
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
}

/// Read access to a scope's state machine, shared with the anchor's request handlers.
#[derive(Clone, Debug)]
pub struct ScopeState {
    scope: ScopeId,
    tree: sled::Tree,
    view: Arc<RwLock<ScopeView>>,
}

impl ScopeState {
    /// The record set of `name`, as last applied on this replica.
    pub fn get(&self, name: &Name) -> Result<Option<RecordSet>, crate::AnchorError> {
        let Some(bytes) = self.tree.get(key(&self.scope, TAG_RECORD, &name.key()))? else {
            return Ok(None);
        };
        Ok(Some(codec::decode(
            &bytes,
            proto::limits::RAFT_FRAME_BYTES_MAX,
        )?))
    }

    /// A copy of the scope's view.
    pub fn view(&self) -> ScopeView {
        self.view.read().map(|v| v.clone()).unwrap_or_default()
    }

    /// Runs `f` with a read-only [`ScopeRead`] over the current state (for the leader's
    /// check before proposing).
    pub fn with_read<T>(&self, f: impl FnOnce(&dyn ScopeReadDyn) -> T) -> T {
        let view = self.view();
        let overlay = Overlay {
            scope: self.scope,
            tree: &self.tree,
            view,
            writes: BTreeMap::new(),
        };
        f(&overlay)
    }
}

/// Object-safe alias of [`ScopeRead`] used by [`ScopeState::with_read`].
pub trait ScopeReadDyn {
    /// Decide a mutation against this state.
    fn decide(
        &self,
        m: &proto::Mutation,
        signed: &proto::SignedMutation,
        now_ms: u64,
    ) -> Result<apply::Accepted, proto::WireError>;
}

impl ScopeReadDyn for Overlay<'_> {
    fn decide(
        &self,
        m: &proto::Mutation,
        signed: &proto::SignedMutation,
        now_ms: u64,
    ) -> Result<apply::Accepted, proto::WireError> {
        apply::decide(self, m, signed, now_ms, 0)
    }
}

/// The openraft state machine of one scope.
pub struct StateMachine {
    verified: Arc<VerifiedCache>,
    scope: ScopeId,
    tree: sled::Tree,
    snapshots: sled::Tree,
    view: Arc<RwLock<ScopeView>>,
}

fn key(scope: &ScopeId, tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(17 + rest.len());
    k.extend_from_slice(&scope.0);
    k.push(tag);
    k.extend_from_slice(rest);
    k
}

fn nonce_key(writer: &[u8; 32], nonce: u64) -> Vec<u8> {
    let mut k = writer.to_vec();
    k.extend_from_slice(&nonce.to_be_bytes());
    k
}

fn sm_err(e: impl std::fmt::Display) -> StorageError<NodeId> {
    sto_err(ErrorSubject::StateMachine, ErrorVerb::Write, e)
}

impl StateMachine {
    /// Opens (or creates) the state machine of `scope` with the given prefix.
    pub fn open(
        db: &sled::Db,
        scope: ScopeId,
        prefix: Name,
        verified: Arc<VerifiedCache>,
    ) -> Result<StateMachine, crate::AnchorError> {
        let tree = db.open_tree("sm")?;
        let snapshots = db.open_tree("snapshots")?;
        let sm = StateMachine {
            verified,
            scope,
            tree,
            snapshots,
            view: Arc::new(RwLock::new(ScopeView {
                prefix,
                ..ScopeView::default()
            })),
        };
        sm.reload_view()?;
        Ok(sm)
    }

    /// A read handle sharing this state machine's view.
    pub fn state(&self) -> ScopeState {
        ScopeState {
            scope: self.scope,
            tree: self.tree.clone(),
            view: self.view.clone(),
        }
    }

    fn meta<T: serde::de::DeserializeOwned>(
        &self,
        field: &[u8],
    ) -> Result<Option<T>, crate::AnchorError> {
        match self.tree.get(key(&self.scope, TAG_META, field))? {
            Some(b) => Ok(Some(codec::decode(
                &b,
                proto::limits::RAFT_FRAME_BYTES_MAX,
            )?)),
            None => Ok(None),
        }
    }

    fn reload_view(&self) -> Result<(), crate::AnchorError> {
        let policy_toml: Option<String> = self.meta(META_POLICY)?;
        let policy = match &policy_toml {
            Some(t) => {
                Some(Policy::from_toml(t).map_err(|e| crate::AnchorError::Corrupt(e.to_string()))?)
            }
            None => None,
        };
        let descriptor: Option<ScopeDescriptor> = self.meta(META_DESCRIPTOR)?;
        let names: u64 = self.meta(META_NAMES)?.unwrap_or(0);
        let applied: Option<LogId<NodeId>> = self.meta(META_APPLIED)?;
        if let Ok(mut v) = self.view.write() {
            v.policy = policy;
            v.policy_toml = policy_toml;
            if let Some(d) = &descriptor {
                v.prefix = d.prefix.clone();
            }
            v.descriptor = descriptor;
            v.names = names;
            v.applied = applied;
        }
        Ok(())
    }

    fn snapshot_key(&self, part: &[u8]) -> Vec<u8> {
        let mut k = self.scope.0.to_vec();
        k.extend_from_slice(part);
        k
    }

    fn dump(&self) -> Result<Dump, StorageError<NodeId>> {
        let read_err =
            |e: &dyn std::fmt::Display| sto_err(ErrorSubject::StateMachine, ErrorVerb::Read, e);
        let mut body = Vec::new();
        let mut applied = None;
        let mut membership = StoredMem::default();
        for kv in self.tree.scan_prefix(self.scope.0) {
            let (k, v) = kv.map_err(|e| read_err(&e))?;
            let suffix = &k[16..];
            if suffix == key_suffix(TAG_META, META_APPLIED).as_slice() {
                let id: LogId<NodeId> = codec::decode(&v, proto::limits::RAFT_FRAME_BYTES_MAX)
                    .map_err(|e| read_err(&e))?;
                applied = Some(id);
                continue;
            }
            if suffix == key_suffix(TAG_META, META_MEMBERSHIP).as_slice() {
                membership = codec::decode(&v, proto::limits::RAFT_FRAME_BYTES_MAX)
                    .map_err(|e| read_err(&e))?;
                continue;
            }
            push_kv(&mut body, suffix, &v);
        }
        let mut data = blake3::hash(&body).as_bytes().to_vec();
        data.extend_from_slice(&body);
        Ok((applied, membership, data))
    }
}

fn key_suffix(tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = vec![tag];
    k.extend_from_slice(rest);
    k
}

fn push_kv(out: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    out.extend_from_slice(&(k.len() as u32).to_be_bytes());
    out.extend_from_slice(k);
    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
    out.extend_from_slice(v);
}

/// Parses snapshot data (digest, then length-prefixed key/value pairs), checking the digest
/// and every length. Pure; never panics on bad input.
pub fn parse_snapshot(data: &[u8]) -> Result<Kvs, String> {
    if data.len() < DIGEST_BYTES {
        return Err(format!(
            "snapshot of {} bytes is shorter than its digest",
            data.len()
        ));
    }
    let (digest, body) = data.split_at(DIGEST_BYTES);
    if blake3::hash(body).as_bytes() != digest {
        return Err("snapshot digest does not match its contents".into());
    }
    let mut kvs = Vec::new();
    let mut rest = body;
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>, String> {
        if rest.len() < 4 {
            return Err("truncated snapshot length".into());
        }
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if tail.len() < len {
            return Err(format!("snapshot entry of {len} bytes overruns the data"));
        }
        let (item, tail) = tail.split_at(len);
        *rest = tail;
        Ok(item.to_vec())
    };
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        kvs.push((k, v));
    }
    Ok(kvs)
}

/// Reads through pending writes of the current apply batch, then the tree.
struct Overlay<'a> {
    scope: ScopeId,
    tree: &'a sled::Tree,
    view: ScopeView,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Overlay<'_> {
    fn read(&self, k: &[u8]) -> Option<Vec<u8>> {
        match self.writes.get(k) {
            Some(v) => v.clone(),
            None => self.tree.get(k).ok().flatten().map(|v| v.to_vec()),
        }
    }

    fn put(&mut self, k: Vec<u8>, v: Vec<u8>) {
        self.writes.insert(k, Some(v));
    }

    fn del(&mut self, k: Vec<u8>) {
        self.writes.insert(k, None);
    }

    fn put_meta<T: serde::Serialize>(
        &mut self,
        field: &[u8],
        v: &T,
    ) -> Result<(), StorageError<NodeId>> {
        let bytes = codec::encode(v).map_err(sm_err)?;
        self.put(key(&self.scope, TAG_META, field), bytes);
        Ok(())
    }

    fn apply_effect(&mut self, acc: apply::Accepted) -> Result<(), StorageError<NodeId>> {
        match acc.effect {
            Effect::Put(name, set) => {
                let k = key(&self.scope, TAG_RECORD, &name.key());
                if self.read(&k).is_none() {
                    self.view.names += 1;
                }
                self.put(k, codec::encode(&set).map_err(sm_err)?);
            }
            Effect::Delete(name) => {
                let k = key(&self.scope, TAG_RECORD, &name.key());
                if self.read(&k).is_some() {
                    self.view.names = self.view.names.saturating_sub(1);
                }
                self.del(k);
            }
            Effect::SetPolicy(policy, toml) => {
                self.put_meta(META_POLICY, &toml)?;
                self.view.policy = Some(*policy);
                self.view.policy_toml = Some(toml);
            }
        }
        let names = self.view.names;
        self.put_meta(META_NAMES, &names)?;
        let nk = nonce_key(&acc.writer, acc.nonce);
        self.put(
            key(&self.scope, TAG_NONCE, &nk),
            acc.expires_at_ms.to_be_bytes().to_vec(),
        );
        let mut ek = acc.expires_at_ms.to_be_bytes().to_vec();
        ek.extend_from_slice(&nk);
        self.put(key(&self.scope, TAG_EXPIRY, &ek), Vec::new());
        Ok(())
    }

    /// Forgets nonces whose mutation expired before `now_ms`: they can no longer be replayed.
    fn prune_nonces(&mut self, now_ms: u64) {
        let start = key(&self.scope, TAG_EXPIRY, &[]);
        let end = key(&self.scope, TAG_EXPIRY, &now_ms.to_be_bytes());
        let expired: Vec<Vec<u8>> = self
            .tree
            .range(start..end)
            .take(NONCE_PRUNE_PER_ENTRY_MAX)
            .filter_map(|kv| kv.ok().map(|(k, _)| k.to_vec()))
            .collect();
        for ek in expired {
            let nk = ek[17 + 8..].to_vec();
            self.del(key(&self.scope, TAG_NONCE, &nk));
            self.del(ek);
        }
    }

    fn apply_genesis(
        &mut self,
        descriptor: ScopeDescriptor,
        toml: String,
    ) -> Result<(), StorageError<NodeId>> {
        if self.view.policy.is_some() {
            return Ok(());
        }
        let policy = Policy::from_toml(&toml).map_err(sm_err)?;
        self.put_meta(META_POLICY, &toml)?;
        self.put_meta(META_DESCRIPTOR, &descriptor)?;
        self.view.prefix = descriptor.prefix.clone();
        self.view.descriptor = Some(descriptor);
        self.view.policy = Some(policy);
        self.view.policy_toml = Some(toml);
        Ok(())
    }

    fn into_batch(self) -> (sled::Batch, ScopeView) {
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
        let bytes = self.read(&key(&self.scope, TAG_RECORD, &name.key()))?;
        codec::decode(&bytes, proto::limits::RAFT_FRAME_BYTES_MAX).ok()
    }
    fn nonce_seen(&self, writer: &[u8; 32], nonce: u64) -> bool {
        self.read(&key(&self.scope, TAG_NONCE, &nonce_key(writer, nonce)))
            .is_some()
    }
}

/// Builds a snapshot from a copy of the state taken when the builder was created.
pub struct SnapshotBuilder {
    scope: ScopeId,
    snapshots: sled::Tree,
    applied: Option<LogId<NodeId>>,
    membership: StoredMem,
    data: Vec<u8>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let digest = hex_prefix(&self.data);
        let snapshot_id = match &self.applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, digest),
            None => format!("0-0-{digest}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        store_snapshot(&self.snapshots, &self.scope, &meta, &self.data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(self.data.clone())),
        })
    }
}

fn hex_prefix(data: &[u8]) -> String {
    data.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn store_snapshot(
    snapshots: &sled::Tree,
    scope: &ScopeId,
    meta: &SnapshotMeta<NodeId, proto::AnchorInfo>,
    data: &[u8],
) -> Result<(), StorageError<NodeId>> {
    let err =
        |e: &dyn std::fmt::Display| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e);
    let meta_bytes = codec::encode(meta).map_err(|e| err(&e))?;
    let mut batch = sled::Batch::default();
    let mut mk = scope.0.to_vec();
    mk.extend_from_slice(b"meta");
    let mut dk = scope.0.to_vec();
    dk.extend_from_slice(b"data");
    batch.insert(mk, meta_bytes);
    batch.insert(dk, data);
    snapshots.apply_batch(batch).map_err(|e| err(&e))
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMem), StorageError<NodeId>> {
        let read = |e: crate::AnchorError| sto_err(ErrorSubject::StateMachine, ErrorVerb::Read, e);
        let applied = self.meta(META_APPLIED).map_err(read)?;
        let membership = self
            .meta(META_MEMBERSHIP)
            .map_err(read)?
            .unwrap_or_default();
        Ok((applied, membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyOutcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + Send,
    {
        let view = self.view.read().map(|v| v.clone()).unwrap_or_default();
        let mut overlay = Overlay {
            scope: self.scope,
            tree: &self.tree,
            view,
            writes: BTreeMap::new(),
        };
        let mut outcomes = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            let outcome = match entry.payload {
                EntryPayload::Blank => ApplyOutcome::default(),
                EntryPayload::Membership(m) => {
                    overlay.put_meta(META_MEMBERSHIP, &StoredMem::new(Some(log_id), m))?;
                    ApplyOutcome::default()
                }
                EntryPayload::Normal(ScopeCommand::Genesis {
                    descriptor,
                    policy_toml,
                }) => {
                    overlay.apply_genesis(descriptor, policy_toml)?;
                    ApplyOutcome {
                        results: vec![Ok(log_id.index)],
                    }
                }
                EntryPayload::Normal(ScopeCommand::Batch {
                    mutations,
                    proposed_at_ms,
                }) => {
                    overlay.prune_nonces(proposed_at_ms);
                    let mut results = Vec::with_capacity(mutations.len());
                    for signed in &mutations {
                        let decided = self.verified.verify(signed).and_then(|m| {
                            apply::decide(&overlay, &m, signed, proposed_at_ms, log_id.index)
                        });
                        results.push(match decided {
                            Ok(acc) => {
                                overlay.apply_effect(acc)?;
                                Ok(log_id.index)
                            }
                            Err(e) => Err(e),
                        });
                    }
                    ApplyOutcome { results }
                }
            };
            overlay.view.applied = Some(log_id);
            overlay.put_meta(META_APPLIED, &log_id)?;
            outcomes.push(outcome);
        }
        let (batch, view) = overlay.into_batch();
        self.tree.apply_batch(batch).map_err(sm_err)?;
        if let Ok(mut v) = self.view.write() {
            *v = view;
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let (applied, membership, data) = match self.dump() {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, scope = %self.scope, "cannot read state for snapshot");
                (
                    None,
                    StoredMem::default(),
                    blake3::hash(&[]).as_bytes().to_vec(),
                )
            }
        };
        SnapshotBuilder {
            scope: self.scope,
            snapshots: self.snapshots.clone(),
            applied,
            membership,
            data,
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, proto::AnchorInfo>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let snap_err = |e: String| {
            sto_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                e,
            )
        };
        let kvs = parse_snapshot(&data).map_err(snap_err)?;
        let mut batch = sled::Batch::default();
        for kv in self.tree.scan_prefix(self.scope.0) {
            let (k, _) = kv.map_err(sm_err)?;
            batch.remove(k);
        }
        for (k, v) in kvs {
            let mut full = self.scope.0.to_vec();
            full.extend_from_slice(&k);
            batch.insert(full, v);
        }
        if let Some(applied) = &meta.last_log_id {
            batch.insert(
                key(&self.scope, TAG_META, META_APPLIED),
                codec::encode(applied).map_err(sm_err)?,
            );
        }
        batch.insert(
            key(&self.scope, TAG_META, META_MEMBERSHIP),
            codec::encode(&meta.last_membership).map_err(sm_err)?,
        );
        self.tree.apply_batch(batch).map_err(sm_err)?;
        store_snapshot(&self.snapshots, &self.scope, meta, &data)?;
        self.reload_view().map_err(sm_err)?;
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let err =
            |e: &dyn std::fmt::Display| sto_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        let meta = self
            .snapshots
            .get(self.snapshot_key(b"meta"))
            .map_err(|e| err(&e))?;
        let data = self
            .snapshots
            .get(self.snapshot_key(b"data"))
            .map_err(|e| err(&e))?;
        let (Some(meta), Some(data)) = (meta, data) else {
            return Ok(None);
        };
        let meta: SnapshotMeta<NodeId, proto::AnchorInfo> =
            codec::decode(&meta, proto::limits::RAFT_FRAME_BYTES_MAX).map_err(|e| err(&e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}

/// Deletes every state-machine and snapshot key of a scope.
pub fn remove_scope(db: &sled::Db, scope: &ScopeId) -> Result<(), sled::Error> {
    for name in ["sm", "snapshots"] {
        let tree = db.open_tree(name)?;
        let mut batch = sled::Batch::default();
        for kv in tree.scan_prefix(scope.0) {
            batch.remove(kv?.0);
        }
        tree.apply_batch(batch)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_parse_checks_digest_and_lengths() {
        let mut body = Vec::new();
        push_kv(&mut body, b"k1", b"v1");
        push_kv(&mut body, b"k2", b"");
        let mut data = blake3::hash(&body).as_bytes().to_vec();
        data.extend_from_slice(&body);
        let kvs = parse_snapshot(&data).unwrap();
        assert_eq!(
            kvs,
            vec![(b"k1".to_vec(), b"v1".to_vec()), (b"k2".to_vec(), vec![])]
        );
        let mut bad = data.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(parse_snapshot(&bad).is_err());
        assert!(parse_snapshot(&data[..10]).is_err());
        let mut short = body[..body.len() - 1].to_vec();
        let mut d = blake3::hash(&short).as_bytes().to_vec();
        d.append(&mut short);
        assert!(parse_snapshot(&d).is_err());
    }
}
