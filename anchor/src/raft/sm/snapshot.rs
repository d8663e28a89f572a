//! The snapshot format of a scope, and where the last snapshot is kept.
//!
//! Snapshot data is the blake3 digest (32 bytes) of a body, then the body: every key of the
//! scope without its scope id, each as `u32` big-endian length + key, `u32` length + value,
//! in key order. The applied log id and the membership are left out: they travel in
//! openraft's snapshot metadata. The format is canonical (whatever parses re-encodes to the
//! same bytes) and is both on disk and on the wire.

use openraft::{LogId, SnapshotMeta, StoredMembership};
use proto::{codec, AnchorInfo};

use super::keys::{Keys, Meta};
use crate::raft::NodeId;
use crate::AnchorError;

/// Bytes in a snapshot digest.
const DIGEST_BYTES: usize = 32;

/// Key/value pairs of a scope's state machine, keys without the scope prefix.
pub type Kvs = Vec<(Vec<u8>, Vec<u8>)>;
/// A membership as the state machine stores it.
pub(super) type StoredMem = StoredMembership<NodeId, AnchorInfo>;
/// openraft's metadata of a snapshot.
pub(super) type SnapMeta = SnapshotMeta<NodeId, AnchorInfo>;
/// The state of a scope as a snapshot carries it: applied log id, membership, data.
pub(super) type Dump = (Option<LogId<NodeId>>, StoredMem, Vec<u8>);

/// Why snapshot data was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Fewer bytes than the digest.
    #[error("snapshot of {len} bytes is shorter than its digest")]
    ShorterThanDigest {
        /// The bytes given.
        len: usize,
    },
    /// The digest is not that of the body: damaged in transit or on disk.
    #[error("snapshot digest does not match its contents")]
    DigestMismatch,
    /// The body ends inside a length prefix.
    #[error("truncated snapshot length")]
    TruncatedLength,
    /// A length prefix announces more bytes than remain.
    #[error("snapshot entry of {len} bytes overruns the data")]
    Overrun {
        /// The announced length.
        len: usize,
    },
}

/// Parses snapshot data (digest, then length-prefixed key/value pairs), checking the digest
/// and every length. Pure; never panics on bad input.
pub fn parse_snapshot(data: &[u8]) -> Result<Kvs, SnapshotError> {
    if data.len() < DIGEST_BYTES {
        return Err(SnapshotError::ShorterThanDigest { len: data.len() });
    }
    let (digest, body) = data.split_at(DIGEST_BYTES);
    if blake3::hash(body).as_bytes() != digest {
        return Err(SnapshotError::DigestMismatch);
    }
    let mut kvs = Vec::new();
    let mut rest = body;
    let take = |rest: &mut &[u8]| -> Result<Vec<u8>, SnapshotError> {
        if rest.len() < 4 {
            return Err(SnapshotError::TruncatedLength);
        }
        let (len, tail) = rest.split_at(4);
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if tail.len() < len {
            return Err(SnapshotError::Overrun { len });
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

fn push_kv(out: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    out.extend_from_slice(&(k.len() as u32).to_be_bytes());
    out.extend_from_slice(k);
    out.extend_from_slice(&(v.len() as u32).to_be_bytes());
    out.extend_from_slice(v);
}

/// Snapshot data with an empty body.
pub(super) fn empty_data() -> Vec<u8> {
    blake3::hash(&[]).as_bytes().to_vec()
}

/// Reads the scope of `keys` from `tree` as snapshot data, with its applied log id and
/// membership.
pub(super) fn dump(tree: &sled::Tree, keys: &Keys) -> Result<Dump, AnchorError> {
    let applied_key = keys.meta(Meta::Applied);
    let membership_key = keys.meta(Meta::Membership);
    let mut body = Vec::new();
    let mut applied = None;
    let mut membership = StoredMem::default();
    for kv in tree.scan_prefix(keys.scope()) {
        let (k, v) = kv?;
        if *k == *applied_key {
            let id: LogId<NodeId> = codec::decode(&v, proto::limits::RAFT_FRAME_BYTES_MAX)?;
            applied = Some(id);
            continue;
        }
        if *k == *membership_key {
            membership = codec::decode(&v, proto::limits::RAFT_FRAME_BYTES_MAX)?;
            continue;
        }
        push_kv(&mut body, keys.strip(&k), &v);
    }
    let mut data = blake3::hash(&body).as_bytes().to_vec();
    data.extend_from_slice(&body);
    Ok((applied, membership, data))
}

/// The first bytes of the data's digest, in hex, for snapshot ids.
pub(super) fn hex_prefix(data: &[u8]) -> String {
    data.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Keeps `meta` and `data` as the scope's last snapshot.
pub(super) fn store(
    snapshots: &sled::Tree,
    keys: &Keys,
    meta: &SnapMeta,
    data: &[u8],
) -> Result<(), AnchorError> {
    let meta_bytes = codec::encode(meta)?;
    let mut batch = sled::Batch::default();
    batch.insert(keys.snapshot_meta(), meta_bytes);
    batch.insert(keys.snapshot_data(), data);
    Ok(snapshots.apply_batch(batch)?)
}

/// The scope's last snapshot, if it has one.
pub(super) fn load(
    snapshots: &sled::Tree,
    keys: &Keys,
) -> Result<Option<(SnapMeta, Vec<u8>)>, AnchorError> {
    let meta = snapshots.get(keys.snapshot_meta())?;
    let data = snapshots.get(keys.snapshot_data())?;
    let (Some(meta), Some(data)) = (meta, data) else {
        return Ok(None);
    };
    let meta = codec::decode(&meta, proto::limits::RAFT_FRAME_BYTES_MAX)?;
    Ok(Some((meta, data.to_vec())))
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
