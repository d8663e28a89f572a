//! The sled key layout of the state machines: the one place that builds a key and the one
//! place that splits one.
//!
//! Every scope's state lives in the shared `sm` tree, every key starting with the 16-byte
//! scope id and a one-byte [`Tag`]:
//!
//! | tag | rest of the key              | value                                        |
//! |-----|------------------------------|----------------------------------------------|
//! | `r` | name key                     | the record set                               |
//! | `m` | [`Meta`] field               | applied log id, membership, policy, …        |
//! | `n` | writer (32) + nonce (u64 BE) | expiry (u64 BE) + the name key it changed    |
//! | `e` | expiry (u64 BE) + writer + nonce | nothing (an index for pruning nonces)    |
//! | `d` | prefix name key              | the delegation                               |
//! | `c` | index (u64 BE) + name key    | the change made at that index (watch history)|
//! | `p` | child scope id               | the admin-signed mutation that delegated it  |
//!
//! The `snapshots` tree holds the last snapshot of each scope under scope id + `meta` and
//! scope id + `data`. The layout is on disk: changing it is a migration.

use proto::{Name, ScopeId};

use crate::AnchorError;

/// The tree of every scope's state.
pub(super) const SM_TREE: &str = "sm";
/// The tree of every scope's last snapshot.
pub(super) const SNAPSHOT_TREE: &str = "snapshots";

/// Bytes of the scope id that starts every key.
const SCOPE_LEN: usize = 16;
/// Bytes of a writer key in nonce keys.
const WRITER_LEN: usize = 32;
/// Bytes of a big-endian u64 in keys.
const U64_LEN: usize = 8;
/// Bytes of a nonce key after its tag: writer and nonce.
const NONCE_REST_LEN: usize = WRITER_LEN + U64_LEN;

/// What a key of the `sm` tree holds (the byte after the scope id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Tag {
    Record = b'r',
    Meta = b'm',
    Nonce = b'n',
    Expiry = b'e',
    Delegation = b'd',
    Change = b'c',
    Proof = b'p',
}

/// The single-valued fields of a scope, under [`Tag::Meta`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Meta {
    /// The last applied log id.
    Applied,
    /// The last applied membership.
    Membership,
    /// The policy, TOML.
    Policy,
    /// The descriptor from genesis (or the seed).
    Descriptor,
    /// Names held.
    Names,
    /// False while a new child scope waits for its parent's hand-over.
    Active,
    /// The parent of a delegated scope.
    Parent,
    /// Watches resuming from before this index get "compacted".
    WatchFloor,
    /// Changes kept in the watch history.
    Changes,
    /// The parent's log index a delegated scope's log starts after.
    Origin,
    /// When the scope last split (the carried proposal time of the split entry), ms.
    LastSplit,
    /// A split-off scope that retired to merge back into its parent: which, and the
    /// parent's merge index.
    Retired,
    /// The member change in flight.
    MemberChange,
}

impl Meta {
    fn field(self) -> &'static [u8] {
        match self {
            Meta::Applied => b"applied",
            Meta::Membership => b"membership",
            Meta::Policy => b"policy",
            Meta::Descriptor => b"descriptor",
            Meta::Names => b"names",
            Meta::Active => b"active",
            Meta::Parent => b"parent",
            Meta::WatchFloor => b"watch_floor",
            Meta::Changes => b"changes",
            Meta::Origin => b"origin",
            Meta::LastSplit => b"last_split",
            Meta::Retired => b"retired",
            Meta::MemberChange => b"member_change",
        }
    }
}

/// The keys of one scope.
#[derive(Clone, Copy, Debug)]
pub(super) struct Keys {
    scope: ScopeId,
}

/// The record keys of a prefix's subtree or a range of it: from `from` (inclusive), while
/// under `subtree` and before `until`. Names sort as their keys, so the span is contiguous.
#[derive(Clone, Debug)]
pub(super) struct RecordSpan {
    pub from: Vec<u8>,
    subtree: Vec<u8>,
    until: Option<Vec<u8>>,
}

impl RecordSpan {
    /// True if the record key `k` lies in the span.
    pub fn holds(&self, k: &[u8]) -> bool {
        k >= self.from.as_slice()
            && k.starts_with(&self.subtree)
            && self.until.as_ref().is_none_or(|u| k < u.as_slice())
    }

    /// The span's entries of `tree`, in key order (an error ends the walk after it is
    /// yielded).
    pub fn scan<'t>(
        &'t self,
        tree: &'t sled::Tree,
    ) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 't {
        tree.range(self.from.clone()..)
            .take_while(move |kv| kv.as_ref().map_or(true, |(k, _)| self.holds(k)))
    }
}

impl Keys {
    pub(super) fn new(scope: ScopeId) -> Keys {
        Keys { scope }
    }

    /// The prefix of every key of the scope, in either tree.
    pub(super) fn scope(&self) -> [u8; SCOPE_LEN] {
        crate::raft::scope_prefix(&self.scope)
    }

    fn key(&self, tag: Tag, rest: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(SCOPE_LEN + 1 + rest.len());
        k.extend_from_slice(&self.scope());
        k.push(tag as u8);
        k.extend_from_slice(rest);
        k
    }

    /// The prefix of every key with `tag`.
    pub(super) fn all(&self, tag: Tag) -> Vec<u8> {
        self.key(tag, &[])
    }

    /// The record set of `name`; with a prefix name, also the start of its subtree.
    pub(super) fn record(&self, name: &Name) -> Vec<u8> {
        self.key(Tag::Record, &name.key())
    }

    /// The record keys of the names under `prefix` inside `range`, for a scan.
    pub(super) fn record_span(&self, prefix: &Name, range: &proto::KeyRange) -> RecordSpan {
        RecordSpan {
            from: self.record(range.start.as_ref().unwrap_or(prefix)),
            subtree: self.record(prefix),
            until: range.end.as_ref().map(|e| self.record(e)),
        }
    }

    pub(super) fn meta(&self, field: Meta) -> Vec<u8> {
        self.key(Tag::Meta, field.field())
    }

    /// Replay protection of `(writer, nonce)`.
    pub(super) fn nonce(&self, writer: &[u8; 32], nonce: u64) -> Vec<u8> {
        self.key(Tag::Nonce, &nonce_rest(writer, nonce))
    }

    /// The pruning index entry of `(writer, nonce)`, which expires at `expires_at_ms`.
    pub(super) fn expiry(&self, expires_at_ms: u64, writer: &[u8; 32], nonce: u64) -> Vec<u8> {
        let mut rest = expires_at_ms.to_be_bytes().to_vec();
        rest.extend_from_slice(&nonce_rest(writer, nonce));
        self.key(Tag::Expiry, &rest)
    }

    /// The first expiry key at `at_ms` (the end of the range of nonces expired before it).
    pub(super) fn expiry_from(&self, at_ms: u64) -> Vec<u8> {
        self.key(Tag::Expiry, &at_ms.to_be_bytes())
    }

    pub(super) fn delegation(&self, prefix: &Name) -> Vec<u8> {
        self.key(Tag::Delegation, &prefix.key())
    }

    /// The change to `name` at `index`.
    pub(super) fn change(&self, index: u64, name: &Name) -> Vec<u8> {
        let mut rest = index.to_be_bytes().to_vec();
        rest.extend_from_slice(&name.key());
        self.key(Tag::Change, &rest)
    }

    /// The first change key at `index`.
    pub(super) fn change_from(&self, index: u64) -> Vec<u8> {
        self.key(Tag::Change, &index.to_be_bytes())
    }

    /// The signed mutation that delegated `child`.
    pub(super) fn proof(&self, child: &ScopeId) -> Vec<u8> {
        self.key(Tag::Proof, &child.0)
    }

    /// The scope's last snapshot's metadata, in the snapshots tree.
    pub(super) fn snapshot_meta(&self) -> Vec<u8> {
        self.join(b"meta")
    }

    /// The scope's last snapshot's data, in the snapshots tree.
    pub(super) fn snapshot_data(&self) -> Vec<u8> {
        self.join(b"data")
    }

    /// A key of the scope from its part after the scope id (as snapshots carry it).
    pub(super) fn join(&self, rest: &[u8]) -> Vec<u8> {
        let mut k = self.scope().to_vec();
        k.extend_from_slice(rest);
        k
    }

    /// The part of a key of this scope after the scope id (as snapshots carry it).
    pub(super) fn strip<'k>(&self, key: &'k [u8]) -> &'k [u8] {
        key.get(SCOPE_LEN..).unwrap_or_default()
    }

    /// The name of a record key.
    pub(super) fn split_record(&self, key: &[u8]) -> Result<Name, AnchorError> {
        Ok(Name::from_key(after_tag(key))?)
    }

    /// The writer and nonce of a nonce key.
    pub(super) fn split_nonce(&self, key: &[u8]) -> Result<([u8; 32], u64), AnchorError> {
        let rest = after_tag(key);
        if rest.len() != NONCE_REST_LEN {
            return Err(corrupt_nonce("bad length"));
        }
        let (w, n) = rest.split_at(WRITER_LEN);
        let mut writer = [0u8; WRITER_LEN];
        writer.copy_from_slice(w);
        let nonce = u64::from_be_bytes(n.try_into().map_err(|_| corrupt_nonce("nonce"))?);
        Ok((writer, nonce))
    }

    /// The nonce key an expiry key indexes; `None` for a key too short to be one.
    pub(super) fn nonce_of_expiry(&self, expiry_key: &[u8]) -> Option<Vec<u8>> {
        let rest = after_tag(expiry_key).get(U64_LEN..)?;
        Some(self.key(Tag::Nonce, rest))
    }

    /// The index and name key of a change key.
    pub(super) fn split_change<'k>(&self, key: &'k [u8]) -> Result<(u64, &'k [u8]), AnchorError> {
        let rest = after_tag(key);
        if rest.len() < U64_LEN {
            return Err(AnchorError::Corrupt(
                "change key shorter than its index".into(),
            ));
        }
        let (index, name) = rest.split_at(U64_LEN);
        let mut b = [0u8; U64_LEN];
        b.copy_from_slice(index);
        Ok((u64::from_be_bytes(b), name))
    }
}

/// The value of a nonce key: its expiry and the name key it changed.
pub(super) fn nonce_value(expires_at_ms: u64, name: &Name) -> Vec<u8> {
    let mut value = expires_at_ms.to_be_bytes().to_vec();
    value.extend_from_slice(&name.key());
    value
}

/// The expiry and name key of a nonce key's value.
pub(super) fn split_nonce_value(value: &[u8]) -> Result<(u64, &[u8]), AnchorError> {
    if value.len() < U64_LEN {
        return Err(corrupt_nonce("bad length"));
    }
    let (expiry, name_key) = value.split_at(U64_LEN);
    let expires_at_ms = u64::from_be_bytes(expiry.try_into().map_err(|_| corrupt_nonce("expiry"))?);
    Ok((expires_at_ms, name_key))
}

fn nonce_rest(writer: &[u8; 32], nonce: u64) -> Vec<u8> {
    let mut k = writer.to_vec();
    k.extend_from_slice(&nonce.to_be_bytes());
    k
}

/// The part of a `sm` key after the scope id and the tag.
fn after_tag(key: &[u8]) -> &[u8] {
    key.get(SCOPE_LEN + 1..).unwrap_or_default()
}

fn corrupt_nonce(what: &str) -> AnchorError {
    AnchorError::Corrupt(format!("nonce entry: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back_into_what_built_them() {
        let keys = Keys::new(ScopeId([7; 16]));
        let name = Name::parse("/eu/a").unwrap();
        assert_eq!(keys.split_record(&keys.record(&name)).unwrap(), name);
        let writer = [9; 32];
        assert_eq!(
            keys.split_nonce(&keys.nonce(&writer, 42)).unwrap(),
            (writer, 42)
        );
        assert_eq!(
            keys.nonce_of_expiry(&keys.expiry(1_000, &writer, 42)),
            Some(keys.nonce(&writer, 42))
        );
        let change = keys.change(5, &name);
        let (index, name_key) = keys.split_change(&change).unwrap();
        assert_eq!((index, name_key), (5, &name.key()[..]));
        let value = nonce_value(77, &name);
        let (expiry, name_key) = split_nonce_value(&value).unwrap();
        assert_eq!((expiry, name_key), (77, &name.key()[..]));
        let meta = keys.meta(Meta::Applied);
        assert_eq!(keys.join(keys.strip(&meta)), meta);
    }

    #[test]
    fn the_layout_is_the_one_on_disk() {
        let keys = Keys::new(ScopeId([1; 16]));
        let mut applied = vec![1; 16];
        applied.extend_from_slice(b"mapplied");
        assert_eq!(keys.meta(Meta::Applied), applied);
        let mut snap = vec![1; 16];
        snap.extend_from_slice(b"data");
        assert_eq!(keys.snapshot_data(), snap);
        assert!(keys.split_nonce(&keys.all(Tag::Nonce)).is_err());
        assert!(keys.split_change(&keys.all(Tag::Change)).is_err());
        assert_eq!(keys.nonce_of_expiry(&keys.all(Tag::Expiry)), None);
    }
}
