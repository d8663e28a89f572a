//! The persistent state machine of one scope, in the anchor's shared sled database.
//!
//! Layout of the `sm` tree, every key prefixed by the 16-byte scope id:
//! `r` + name key → record set; `m` + field → applied log id, membership, policy, descriptor,
//! name count, parent, active flag, watch history bounds; `n` + writer + nonce → expiry
//! (replay protection); `e` + expiry + writer + nonce → () (to prune expired nonces);
//! `d` + prefix key → delegation; `c` + index + name key → the change made at that index
//! (watch history, bounded by [`WATCH_HISTORY_CHANGES`]). One `apply` call writes one sled
//! batch, so the records, the history and the applied index move together. Decisions come
//! from [`crate::scope::apply`].
//!
//! A child scope born from a delegation starts from [`seed`]: its state and a snapshot at
//! the parent's delegation index, written before its Raft group is started.

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
use proto::msg::ChangeEvent;
use proto::{
    codec, AnchorInfo, Delegation, DelegationState, Name, RecordSet, ScopeDescriptor, ScopeId,
};

use super::{sto_err, ApplyOutcome, NodeId, ScopeCommand, TypeConfig};
use crate::scope::apply::{self, Effect, ScopeRead};
use crate::scope::verified::VerifiedCache;

const TAG_RECORD: u8 = b'r';
const TAG_META: u8 = b'm';
const TAG_NONCE: u8 = b'n';
const TAG_EXPIRY: u8 = b'e';
const TAG_DELEGATION: u8 = b'd';
const TAG_CHANGE: u8 = b'c';
const TAG_PROOF: u8 = b'p';
const META_APPLIED: &[u8] = b"applied";
const META_MEMBERSHIP: &[u8] = b"membership";
const META_POLICY: &[u8] = b"policy";
const META_DESCRIPTOR: &[u8] = b"descriptor";
const META_NAMES: &[u8] = b"names";
const META_ACTIVE: &[u8] = b"active";
const META_PARENT: &[u8] = b"parent";
const META_WATCH_FLOOR: &[u8] = b"watch_floor";
const META_CHANGES: &[u8] = b"changes";
const META_ORIGIN: &[u8] = b"origin";
/// Changes each scope keeps for watches to resume from; older ones are pruned (a few per
/// applied entry) and a watch resuming before them gets "compacted: resync".
pub const WATCH_HISTORY_CHANGES: u64 = 50_000;
/// Changes pruned per applied entry, so pruning never stalls apply.
const CHANGE_PRUNE_PER_ENTRY_MAX: u64 = 512;
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

    /// Runs `f` on the view without copying it.
    pub fn with_view<T>(&self, f: impl FnOnce(&ScopeView) -> T) -> Option<T> {
        self.view.read().ok().map(|v| f(&v))
    }

    /// The admin-signed mutation that created the delegation to `child`.
    pub fn delegation_proof(
        &self,
        child: &ScopeId,
    ) -> Result<Option<proto::SignedMutation>, crate::AnchorError> {
        match self.tree.get(key(&self.scope, TAG_PROOF, &child.0))? {
            Some(b) => Ok(Some(codec::decode(
                &b,
                proto::limits::RAFT_FRAME_BYTES_MAX,
            )?)),
            None => Ok(None),
        }
    }

    /// The remembered (writer, nonce) pairs of mutations to names under `prefix` that have
    /// not expired by `now_ms` (for seeding a child scope).
    pub fn nonces_under(
        &self,
        prefix: &Name,
        now_ms: u64,
    ) -> Result<Vec<proto::msg::SeededNonce>, crate::AnchorError> {
        let corrupt = |what: &str| crate::AnchorError::Corrupt(format!("nonce entry: {what}"));
        let prefix_key = prefix.key();
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(key(&self.scope, TAG_NONCE, &[])) {
            let (k, v) = kv?;
            let rest = &k[17..];
            if rest.len() != 40 || v.len() < 8 {
                return Err(corrupt("bad length"));
            }
            let name_key = &v[8..];
            if !name_key.starts_with(&prefix_key) || name_key.is_empty() {
                continue;
            }
            let mut writer = [0u8; 32];
            writer.copy_from_slice(&rest[..32]);
            let nonce = u64::from_be_bytes(rest[32..40].try_into().map_err(|_| corrupt("nonce"))?);
            let expires_at_ms =
                u64::from_be_bytes(v[..8].try_into().map_err(|_| corrupt("expiry"))?);
            if expires_at_ms < now_ms {
                continue;
            }
            out.push(proto::msg::SeededNonce {
                writer,
                nonce,
                expires_at_ms,
                name: Name::from_key(name_key)?,
            });
        }
        Ok(out)
    }

    /// Every record under `prefix`, in name order (for seeding a child scope).
    pub fn records_under(
        &self,
        prefix: &Name,
    ) -> Result<Vec<(Name, RecordSet)>, crate::AnchorError> {
        let start = key(&self.scope, TAG_RECORD, &prefix.key());
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix(&start) {
            let (k, v) = kv?;
            let name = Name::from_key(&k[17..])?;
            out.push((
                name,
                codec::decode(&v, proto::limits::RAFT_FRAME_BYTES_MAX)?,
            ));
        }
        Ok(out)
    }

    /// Changes to names under `prefix` at indexes in `(after, up_to]`, in order, at most
    /// `events_max` events and about `bytes_max` bytes. Returns the events and the index
    /// they cover up to (`up_to`, or less when a bound cut the list; never inside an index).
    pub fn changes(
        &self,
        prefix: &Name,
        after: u64,
        up_to: u64,
        events_max: usize,
        bytes_max: usize,
    ) -> Result<(Vec<ChangeEvent>, u64), crate::AnchorError> {
        if up_to <= after {
            return Ok((Vec::new(), after));
        }
        let start = key(&self.scope, TAG_CHANGE, &(after + 1).to_be_bytes());
        let end = key(
            &self.scope,
            TAG_CHANGE,
            &(up_to.saturating_add(1)).to_be_bytes(),
        );
        let prefix_key = prefix.key();
        let mut events: Vec<ChangeEvent> = Vec::new();
        let mut bytes = 0usize;
        // Changes of one index are delivered together or not at all.
        let mut pending: Vec<ChangeEvent> = Vec::new();
        let mut pending_bytes = 0usize;
        let mut pending_index: Option<u64> = None;
        let fits = |events: &Vec<ChangeEvent>, n: usize, bytes: usize| {
            events.is_empty() || (events.len() + n <= events_max && bytes <= bytes_max)
        };
        for kv in self.tree.range(start..end) {
            let (k, v) = kv?;
            let (index, name_key) = split_change_key(&k[17..])?;
            if pending_index != Some(index) {
                if let Some(prev) = pending_index {
                    if !fits(&events, pending.len(), bytes + pending_bytes) {
                        return Ok((events, prev - 1));
                    }
                    events.append(&mut pending);
                    bytes += pending_bytes;
                    pending_bytes = 0;
                }
                pending_index = Some(index);
            }
            if !name_key.starts_with(&prefix_key) {
                continue;
            }
            let set: Option<RecordSet> = codec::decode(&v, proto::limits::RAFT_FRAME_BYTES_MAX)?;
            pending_bytes += v.len() + name_key.len();
            pending.push(ChangeEvent {
                name: Name::from_key(name_key)?,
                version: index,
                set,
            });
        }
        if let Some(last) = pending_index {
            if !fits(&events, pending.len(), bytes + pending_bytes) {
                return Ok((events, last - 1));
            }
            events.append(&mut pending);
        }
        Ok((events, up_to))
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
            history_max: WATCH_HISTORY_CHANGES,
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
    /// Changes the watch history keeps ([`WATCH_HISTORY_CHANGES`]; tests lower it).
    history_max: u64,
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
            history_max: WATCH_HISTORY_CHANGES,
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
        let active: bool = self.meta(META_ACTIVE)?.unwrap_or(true);
        let parent: Option<ScopeDescriptor> = self.meta(META_PARENT)?;
        let watch_floor: u64 = self.meta(META_WATCH_FLOOR)?.unwrap_or(0);
        let changes: u64 = self.meta(META_CHANGES)?.unwrap_or(0);
        let origin: Option<u64> = self.meta(META_ORIGIN)?;
        let mut delegations = BTreeMap::new();
        for kv in self.tree.scan_prefix(key(&self.scope, TAG_DELEGATION, &[])) {
            let (_, v) = kv?;
            let d: Delegation = codec::decode(&v, proto::limits::RAFT_FRAME_BYTES_MAX)?;
            delegations.insert(d.referral.prefix.clone(), d);
        }
        if let Ok(mut v) = self.view.write() {
            v.active = active;
            v.parent = parent;
            v.watch_floor = watch_floor;
            v.changes = changes;
            v.origin = origin;
            v.delegations = delegations;
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
    /// Changes the watch history keeps.
    history_max: u64,
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

    fn record_change(
        &mut self,
        index: u64,
        name: &Name,
        set: Option<&RecordSet>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut rest = index.to_be_bytes().to_vec();
        rest.extend_from_slice(&name.key());
        let value = codec::encode(&set).map_err(sm_err)?;
        self.put(key(&self.scope, TAG_CHANGE, &rest), value);
        self.view.changes += 1;
        Ok(())
    }

    fn apply_effect(
        &mut self,
        acc: apply::Accepted,
        index: u64,
    ) -> Result<(), StorageError<NodeId>> {
        let target = match &acc.effect {
            Effect::Put(name, _) | Effect::Delete(name) => name.clone(),
            Effect::Delegate(d, _) => d.referral.prefix.clone(),
            Effect::SetPolicy(..) => self.view.prefix.clone(),
        };
        match acc.effect {
            Effect::Put(name, set) => {
                let k = key(&self.scope, TAG_RECORD, &name.key());
                if self.read(&k).is_none() {
                    self.view.names += 1;
                }
                self.record_change(index, &name, Some(&set))?;
                self.put(k, codec::encode(&set).map_err(sm_err)?);
            }
            Effect::Delete(name) => {
                let k = key(&self.scope, TAG_RECORD, &name.key());
                if self.read(&k).is_some() {
                    self.view.names = self.view.names.saturating_sub(1);
                    self.record_change(index, &name, None)?;
                }
                self.del(k);
            }
            Effect::Delegate(d, proof) => {
                let pk = key(&self.scope, TAG_PROOF, &d.referral.scope.0);
                self.put(pk, codec::encode(&*proof).map_err(sm_err)?);
                let k = key(&self.scope, TAG_DELEGATION, &d.referral.prefix.key());
                self.put(k, codec::encode(&*d).map_err(sm_err)?);
                self.view.delegations.insert(d.referral.prefix.clone(), *d);
            }
            Effect::SetPolicy(policy, toml) => {
                self.put_meta(META_POLICY, &toml)?;
                self.view.policy = Some(*policy);
                self.view.policy_toml = Some(toml);
            }
        }
        let names = self.view.names;
        self.put_meta(META_NAMES, &names)?;
        let changes = self.view.changes;
        self.put_meta(META_CHANGES, &changes)?;
        self.remember_nonce(&acc.writer, acc.nonce, acc.expires_at_ms, &target);
        Ok(())
    }

    /// Replay protection: `(writer, nonce)` → expiry and the name it changed (so a delegation
    /// can hand the nonces of moved names to the child), plus an expiry index for pruning.
    fn remember_nonce(&mut self, writer: &[u8; 32], nonce: u64, expires_at_ms: u64, name: &Name) {
        let nk = nonce_key(writer, nonce);
        let mut value = expires_at_ms.to_be_bytes().to_vec();
        value.extend_from_slice(&name.key());
        self.put(key(&self.scope, TAG_NONCE, &nk), value);
        let mut ek = expires_at_ms.to_be_bytes().to_vec();
        ek.extend_from_slice(&nk);
        self.put(key(&self.scope, TAG_EXPIRY, &ek), Vec::new());
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

    /// Forgets the oldest changes of the watch history beyond `history_max`,
    /// a bounded number per entry, and raises the watch floor past them.
    fn prune_changes(&mut self) -> Result<(), StorageError<NodeId>> {
        let excess = self.view.changes.saturating_sub(self.history_max);
        if excess == 0 {
            return Ok(());
        }
        let take = excess.min(CHANGE_PRUNE_PER_ENTRY_MAX) as usize;
        let start = key(&self.scope, TAG_CHANGE, &[]);
        let oldest: Vec<Vec<u8>> = self
            .tree
            .scan_prefix(&start)
            .take(take)
            .filter_map(|kv| kv.ok().map(|(k, _)| k.to_vec()))
            .collect();
        for k in oldest {
            if let Ok((index, _)) = split_change_key(&k[17..]) {
                self.view.watch_floor = self.view.watch_floor.max(index);
            }
            self.del(k);
            self.view.changes = self.view.changes.saturating_sub(1);
        }
        let (floor, changes) = (self.view.watch_floor, self.view.changes);
        self.put_meta(META_WATCH_FLOOR, &floor)?;
        self.put_meta(META_CHANGES, &changes)
    }

    /// Frozen → Active: drop the moved records (the child has them) and keep the referral.
    fn activate_delegation(&mut self, child: ScopeId) -> Result<(), StorageError<NodeId>> {
        let Some(mut d) = self.frozen(child) else {
            return Ok(());
        };
        let start = key(&self.scope, TAG_RECORD, &d.referral.prefix.key());
        let moved: Vec<Vec<u8>> = self
            .tree
            .scan_prefix(&start)
            .filter_map(|kv| kv.ok().map(|(k, _)| k.to_vec()))
            .collect();
        for k in moved {
            if self.read(&k).is_some() {
                self.view.names = self.view.names.saturating_sub(1);
            }
            self.del(k);
        }
        let names = self.view.names;
        self.put_meta(META_NAMES, &names)?;
        d.state = DelegationState::Active;
        self.store_delegation(d)
    }

    fn abort_delegation(&mut self, child: ScopeId) -> Result<(), StorageError<NodeId>> {
        let Some(mut d) = self.frozen(child) else {
            return Ok(());
        };
        d.state = DelegationState::Aborted;
        self.store_delegation(d)
    }

    fn frozen(&self, child: ScopeId) -> Option<Delegation> {
        self.view
            .delegations
            .values()
            .find(|d| d.referral.scope == child && d.state == DelegationState::Frozen)
            .cloned()
    }

    fn store_delegation(&mut self, d: Delegation) -> Result<(), StorageError<NodeId>> {
        let k = key(&self.scope, TAG_DELEGATION, &d.referral.prefix.key());
        self.put(k, codec::encode(&d).map_err(sm_err)?);
        self.view.delegations.insert(d.referral.prefix.clone(), d);
        Ok(())
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
    fn scope_id(&self) -> ScopeId {
        self.scope
    }
    fn active(&self) -> bool {
        self.view.active
    }
    fn delegations(&self) -> &BTreeMap<Name, Delegation> {
        &self.view.delegations
    }
}

fn split_change_key(rest: &[u8]) -> Result<(u64, &[u8]), crate::AnchorError> {
    if rest.len() < 8 {
        return Err(crate::AnchorError::Corrupt(
            "change key shorter than its index".into(),
        ));
    }
    let (index, name) = rest.split_at(8);
    let mut b = [0u8; 8];
    b.copy_from_slice(index);
    Ok((u64::from_be_bytes(b), name))
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
            history_max: self.history_max,
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
                EntryPayload::Normal(ScopeCommand::DelegationActive { child }) => {
                    overlay.activate_delegation(child)?;
                    ApplyOutcome {
                        results: vec![Ok(log_id.index)],
                    }
                }
                EntryPayload::Normal(ScopeCommand::DelegationAborted { child, reason }) => {
                    tracing::warn!(scope = %self.scope, %child, %reason, "delegation aborted");
                    overlay.abort_delegation(child)?;
                    ApplyOutcome {
                        results: vec![Ok(log_id.index)],
                    }
                }
                EntryPayload::Normal(ScopeCommand::Activate) => {
                    overlay.view.active = true;
                    overlay.put_meta(META_ACTIVE, &true)?;
                    ApplyOutcome {
                        results: vec![Ok(log_id.index)],
                    }
                }
                EntryPayload::Normal(ScopeCommand::Batch {
                    mutations,
                    proposed_at_ms,
                }) => {
                    overlay.prune_nonces(proposed_at_ms);
                    overlay.prune_changes()?;
                    let mut results = Vec::with_capacity(mutations.len());
                    for signed in &mutations {
                        let decided = self.verified.verify(signed).and_then(|m| {
                            apply::decide(&overlay, &m, signed, proposed_at_ms, log_id.index)
                        });
                        results.push(match decided {
                            Ok(acc) => {
                                overlay.apply_effect(acc, log_id.index)?;
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
    pub nonces: &'a [proto::msg::SeededNonce],
    /// Where the child's log starts (the parent's delegation index, term 0).
    pub log_id: LogId<NodeId>,
    /// The child's members as a Raft membership.
    pub membership: openraft::Membership<NodeId, AnchorInfo>,
    /// The admin-signed delegation (kept so the child's leader can bring in a member that
    /// missed the seeding).
    pub proof: &'a proto::SignedMutation,
}

/// Writes a child scope's initial state and a snapshot of it at `seed.log_id`, replacing any
/// partial earlier attempt. Its Raft group must not be running. The caller also sets the
/// log's purged id to `seed.log_id` and flushes before starting the group.
pub fn seed(
    db: &sled::Db,
    seed: &Seed<'_>,
    verified: Arc<VerifiedCache>,
) -> Result<(), crate::AnchorError> {
    let scope = seed.child.id;
    remove_scope(db, &scope)?;
    let tree = db.open_tree("sm")?;
    let mut batch = sled::Batch::default();
    let meta = |field: &[u8]| key(&scope, TAG_META, field);
    for (name, set) in seed.records {
        if !name.is_under(&seed.child.prefix) {
            return Err(crate::AnchorError::Corrupt(format!(
                "seed record {name} is not under {}",
                seed.child.prefix
            )));
        }
        batch.insert(key(&scope, TAG_RECORD, &name.key()), codec::encode(set)?);
    }
    for n in seed.nonces {
        if !n.name.is_under(&seed.child.prefix) {
            return Err(crate::AnchorError::Corrupt(format!(
                "seed nonce for {} is not under {}",
                n.name, seed.child.prefix
            )));
        }
        let nk = nonce_key(&n.writer, n.nonce);
        let mut value = n.expires_at_ms.to_be_bytes().to_vec();
        value.extend_from_slice(&n.name.key());
        let mut ek = n.expires_at_ms.to_be_bytes().to_vec();
        ek.extend_from_slice(&nk);
        batch.insert(key(&scope, TAG_NONCE, &nk), value);
        batch.insert(key(&scope, TAG_EXPIRY, &ek), Vec::new());
    }
    let membership = StoredMem::new(Some(seed.log_id), seed.membership.clone());
    batch.insert(
        meta(META_POLICY),
        codec::encode(&seed.policy_toml.to_string())?,
    );
    batch.insert(meta(META_DESCRIPTOR), codec::encode(seed.child)?);
    batch.insert(
        meta(META_NAMES),
        codec::encode(&(seed.records.len() as u64))?,
    );
    batch.insert(meta(META_ACTIVE), codec::encode(&false)?);
    batch.insert(meta(META_PARENT), codec::encode(seed.parent)?);
    batch.insert(meta(META_WATCH_FLOOR), codec::encode(&seed.log_id.index)?);
    batch.insert(meta(META_CHANGES), codec::encode(&0u64)?);
    batch.insert(meta(META_ORIGIN), codec::encode(&seed.log_id.index)?);
    batch.insert(key(&scope, TAG_PROOF, &scope.0), codec::encode(seed.proof)?);
    batch.insert(meta(META_APPLIED), codec::encode(&seed.log_id)?);
    batch.insert(meta(META_MEMBERSHIP), codec::encode(&membership)?);
    tree.apply_batch(batch)?;
    let sm = StateMachine::open(db, scope, seed.child.prefix.clone(), verified)?;
    let (applied, membership, data) = sm
        .dump()
        .map_err(|e| crate::AnchorError::Raft(e.to_string()))?;
    let snapshot_meta = SnapshotMeta {
        last_log_id: applied,
        last_membership: membership,
        snapshot_id: format!("seed-{}-{}", seed.log_id.index, hex_prefix(&data)),
    };
    store_snapshot(&sm.snapshots, &scope, &snapshot_meta, &data)
        .map_err(|e| crate::AnchorError::Raft(e.to_string()))?;
    Ok(())
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
    use openraft::{CommittedLeaderId, Entry};
    use proto::{Mutation, Op, Record, SignedMutation};

    fn entry(index: u64, cmd: ScopeCommand) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(cmd),
        }
    }

    fn signed(op: Op, nonce: u64) -> SignedMutation {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let m = Mutation {
            op,
            nonce,
            expires_at_ms: 1_100_000,
        };
        SignedMutation::sign(&m, &key).unwrap()
    }

    fn put(name: &str, text: &str) -> Op {
        Op::Put {
            name: Name::parse(name).unwrap(),
            records: vec![Record::Text(text.into())],
            ttl_s: 60,
        }
    }

    fn batch(ops: Vec<Op>, first_nonce: u64) -> ScopeCommand {
        ScopeCommand::Batch {
            mutations: ops
                .into_iter()
                .enumerate()
                .map(|(i, op)| signed(op, first_nonce + i as u64))
                .collect(),
            proposed_at_ms: 1_000_000,
        }
    }

    async fn scope_with_history() -> (tempfile::TempDir, StateMachine) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let mut sm = StateMachine::open(
            &db,
            ScopeId::root(),
            Name::root(),
            Arc::new(VerifiedCache::default()),
        )
        .unwrap();
        let genesis = ScopeCommand::Genesis {
            descriptor: ScopeDescriptor {
                id: ScopeId::root(),
                prefix: Name::root(),
                epoch: 1,
                members: vec![],
            },
            policy_toml: Policy::development(None).to_toml(),
        };
        let entries = vec![
            entry(1, genesis),
            entry(2, batch(vec![put("/eu/a", "1"), put("/us/b", "1")], 10)),
            entry(3, batch(vec![put("/eu/a", "2"), put("/eu/c", "1")], 20)),
            entry(4, batch(vec![put("/us/b", "2")], 30)),
            entry(
                5,
                batch(
                    vec![Op::Delete {
                        name: Name::parse("/eu/a").unwrap(),
                    }],
                    40,
                ),
            ),
        ];
        sm.apply(entries).await.unwrap();
        (dir, sm)
    }

    fn names_and_versions(events: &[ChangeEvent]) -> Vec<(String, u64, bool)> {
        events
            .iter()
            .map(|e| (e.name.to_string(), e.version, e.set.is_some()))
            .collect()
    }

    #[tokio::test]
    async fn watch_history_lists_changes_under_a_prefix_in_version_order() {
        let (_dir, sm) = scope_with_history().await;
        let st = sm.state();
        let eu = Name::parse("/eu").unwrap();
        let (events, up_to) = st.changes(&eu, 0, 5, 100, 1 << 20).unwrap();
        assert_eq!(up_to, 5);
        assert_eq!(
            names_and_versions(&events),
            vec![
                ("/eu/a".into(), 2, true),
                ("/eu/a".into(), 3, true),
                ("/eu/c".into(), 3, true),
                ("/eu/a".into(), 5, false),
            ]
        );
        // Resuming after 3 gives only what came later.
        let (events, _) = st.changes(&eu, 3, 5, 100, 1 << 20).unwrap();
        assert_eq!(
            names_and_versions(&events),
            vec![("/eu/a".into(), 5, false)]
        );
        // Nothing to report is an empty list that still covers the range.
        let us = Name::parse("/us").unwrap();
        let (events, up_to) = st.changes(&us, 4, 5, 100, 1 << 20).unwrap();
        assert!(events.is_empty());
        assert_eq!(up_to, 5);
    }

    #[tokio::test]
    async fn old_watch_history_is_pruned_and_the_floor_says_where_it_ends() {
        let (_dir, mut sm) = scope_with_history().await;
        // History: /eu/a@2, /us/b@2, /eu/a@3, /eu/c@3, /us/b@4, /eu/a@5 (deleted). Keep 3.
        sm.history_max = 3;
        sm.apply(vec![entry(6, batch(vec![put("/us/d", "1")], 50))])
            .await
            .unwrap();
        let st = sm.state();
        let view = st.view();
        // The batch pruned before it recorded its own change: 6 - 3 = 3 oldest gone
        // (/eu/a@2, /us/b@2, /eu/a@3), then /us/d@6 was added.
        assert_eq!(view.changes, 4);
        assert_eq!(view.watch_floor, 3);
        let eu = Name::parse("/eu").unwrap();
        let (events, _) = st.changes(&eu, view.watch_floor, 6, 100, 1 << 20).unwrap();
        // Index 3 lost /eu/a@3, so the floor is 3: a watch may resume only from after 3
        // (an older one gets Compacted), and from there the history is complete.
        assert_eq!(
            names_and_versions(&events),
            vec![("/eu/a".into(), 5, false)],
            "what is left after the floor is complete"
        );
        // The floor survives a restart.
        drop(st);
        sm.reload_view().unwrap();
        assert_eq!(sm.state().view().watch_floor, 3);
    }

    #[tokio::test]
    async fn watch_history_never_splits_an_index_when_a_bound_cuts() {
        let (_dir, sm) = scope_with_history().await;
        let st = sm.state();
        let eu = Name::parse("/eu").unwrap();
        // Two events max: index 2 (one event) fits, index 3 (two events) would not.
        let (events, up_to) = st.changes(&eu, 0, 5, 2, 1 << 20).unwrap();
        assert_eq!(names_and_versions(&events), vec![("/eu/a".into(), 2, true)]);
        assert_eq!(up_to, 2);
        // The first index is always delivered whole, even past the bound.
        let (events, up_to) = st.changes(&eu, 2, 5, 1, 1).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(up_to, 3);
    }

    #[tokio::test]
    async fn an_active_delegation_drops_the_moved_names_and_applying_it_twice_is_harmless() {
        let (_dir, mut sm) = scope_with_history().await;
        let child = ScopeId::derive(&[b"child"]);
        let d = Delegation {
            referral: proto::Referral {
                scope: child,
                prefix: Name::parse("/eu").unwrap(),
                epoch: 1,
                members: vec![],
                ttl_s: 60,
            },
            members: vec![],
            policy_toml: String::new(),
            index: 6,
            state: DelegationState::Frozen,
        };
        {
            let mut overlay = Overlay {
                scope: sm.scope,
                tree: &sm.tree,
                view: sm.state().view(),
                writes: BTreeMap::new(),
                history_max: WATCH_HISTORY_CHANGES,
            };
            overlay
                .apply_effect(
                    apply::Accepted {
                        effect: Effect::Delegate(Box::new(d), Box::new(signed(put("/x", "p"), 99))),
                        writer: [0; 32],
                        nonce: 99,
                        expires_at_ms: 2_000_000,
                    },
                    6,
                )
                .unwrap();
            let (batch, view) = overlay.into_batch();
            sm.tree.apply_batch(batch).unwrap();
            *sm.view.write().unwrap() = view;
        }
        let before = sm.state().view().names;
        assert_eq!(before, 2, "/eu/c and /us/b");
        for index in [7, 8] {
            sm.apply(vec![entry(index, ScopeCommand::DelegationActive { child })])
                .await
                .unwrap();
        }
        let st = sm.state();
        assert_eq!(st.view().names, 1);
        assert!(st.get(&Name::parse("/eu/c").unwrap()).unwrap().is_none());
        assert!(st.get(&Name::parse("/us/b").unwrap()).unwrap().is_some());
        let view = st.view();
        let d = view.delegations.values().next().unwrap();
        assert_eq!(d.state, DelegationState::Active);
        assert!(st.delegation_proof(&child).unwrap().is_some());
        // Aborting an active delegation changes nothing.
        sm.apply(vec![entry(
            9,
            ScopeCommand::DelegationAborted {
                child,
                reason: "late".into(),
            },
        )])
        .await
        .unwrap();
        let view = sm.state().view();
        assert_eq!(
            view.delegations.values().next().unwrap().state,
            DelegationState::Active
        );
    }

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
