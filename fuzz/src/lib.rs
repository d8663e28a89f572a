//! Shared checks for the Anchorage fuzz targets (`fuzz_targets/`), and the seed inputs the
//! `gen_seeds` example writes to `seeds/`.
//!
//! Every check panics when a property breaks; libFuzzer reports the panic as a crash and
//! saves the input under `artifacts/<target>/`.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The wire types the `wire` target decodes, one per selector byte (first input byte,
/// modulo the count). Keep the order stable: the committed seeds start with these bytes.
pub const WIRE_TYPES: &[&str] = &[
    "ResolveRequest",
    "ResolveResponse",
    "MutateRequest",
    "MutateResponse",
    "AdminRequest",
    "AdminResponse",
    "RaftRequest",
    "RaftResponse",
    "Mutation",
    "RecordSet",
    "Policy",
    "AppendEntriesRequest",
    "VoteRequest",
    "InstallSnapshotRequest",
    "WatchRequest",
    "WatchResponse",
    "Answer",
];

/// The limit the anchor uses when it decodes each wire type (index as in [`WIRE_TYPES`]).
pub fn wire_limit(selector: usize) -> usize {
    use proto::limits::*;
    match selector {
        0..=5 => CLIENT_FRAME_BYTES_MAX,
        6 | 7 => RAFT_FRAME_BYTES_MAX,
        8 => MUTATION_BYTES_MAX,
        9 => RECORD_SET_BYTES_MAX,
        10 => POLICY_TOML_BYTES_MAX,
        11..=13 => RAFT_FRAME_BYTES_MAX,
        _ => CLIENT_FRAME_BYTES_MAX,
    }
}

/// Decodes `bytes` as `T` with `limit`; if that succeeds, re-encodes and decodes again and
/// asserts the value survives unchanged (decode → encode → decode equal). Returns the value.
pub fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(
    bytes: &[u8],
    limit: usize,
) -> Option<T> {
    let value: T = proto::codec::decode(bytes, limit).ok()?;
    let encoded = proto::codec::encode(&value)
        .unwrap_or_else(|e| panic!("decoded {value:?} but cannot encode it again: {e}"));
    assert!(
        encoded.len() <= bytes.len(),
        "re-encoding grew the frame from {} to {} bytes: {value:?}",
        bytes.len(),
        encoded.len()
    );
    let again: T = proto::codec::decode(&encoded, limit)
        .unwrap_or_else(|e| panic!("decoded {value:?}, re-encoded, and the re-decode failed: {e}"));
    assert_eq!(again, value, "decode → encode → decode changed the value");
    Some(value)
}

/// Like [`round_trip`], for types without `PartialEq` (openraft's messages): the value's
/// re-encoding must decode, and encode again to the same bytes.
pub fn round_trip_bytes<T: Serialize + DeserializeOwned>(bytes: &[u8], limit: usize) -> Option<T> {
    let value: T = proto::codec::decode(bytes, limit).ok()?;
    let encoded = proto::codec::encode(&value).expect("a decoded value encodes again");
    assert!(encoded.len() <= bytes.len(), "re-encoding grew the frame");
    let again: T = proto::codec::decode(&encoded, limit).expect("a re-encoded value decodes");
    let twice = proto::codec::encode(&again).expect("a decoded value encodes again");
    assert_eq!(twice, encoded, "decode → encode → decode changed the value");
    Some(value)
}

/// Checks the properties of a validly parsed policy: its TOML form parses back to an
/// equal policy, and so does its codec form.
pub fn check_policy(p: &policy::Policy) {
    let text = p.to_toml();
    let back = policy::Policy::from_toml(&text)
        .unwrap_or_else(|e| panic!("to_toml output does not parse back: {e}\n{text}"));
    assert_eq!(&back, p, "TOML round trip changed the policy:\n{text}");
    let bytes = proto::codec::encode(p).expect("a valid policy encodes");
    let back: policy::Policy =
        proto::codec::decode(&bytes, bytes.len()).expect("an encoded policy decodes");
    assert_eq!(&back, p, "codec round trip changed the policy");
}

/// A fixed signing key for harnesses that re-sign fuzzed mutation bodies.
pub fn fuzz_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32])
}

/// Re-encodes snapshot key/value pairs in the format `parse_snapshot` reads: the blake3
/// digest of the body, then `u32` big-endian length-prefixed keys and values.
pub fn encode_snapshot(kvs: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in kvs {
        body.extend_from_slice(&(k.len() as u32).to_be_bytes());
        body.extend_from_slice(k);
        body.extend_from_slice(&(v.len() as u32).to_be_bytes());
        body.extend_from_slice(v);
    }
    with_digest(&body)
}

/// Prepends the blake3 digest of `body`, as the snapshot format does.
pub fn with_digest(body: &[u8]) -> Vec<u8> {
    let mut data = blake3::hash(body).as_bytes().to_vec();
    data.extend_from_slice(body);
    data
}
