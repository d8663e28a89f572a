//! The one codec for wire and disk: serde + bincode 2, fixed-width integers, size-checked.
//!
//! [`decode`] refuses a frame longer than the caller's limit before reading a byte of it,
//! refuses trailing bytes, and never panics on arbitrary input (property-tested below).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::ProtoError;
use crate::limits::RAFT_FRAME_BYTES_MAX;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::Limit<RAFT_FRAME_BYTES_MAX>,
>;

fn config() -> Config {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_limit::<RAFT_FRAME_BYTES_MAX>()
}

/// Encodes a value. Fails only for values over the largest frame.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ProtoError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| ProtoError::Encode {
        reason: e.to_string(),
    })
}

/// Decodes a value from exactly `bytes`, which may be at most `max` bytes long.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, ProtoError> {
    if bytes.len() > max {
        return Err(ProtoError::FrameTooLarge {
            len: bytes.len(),
            max,
        });
    }
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| ProtoError::Malformed {
            reason: e.to_string(),
        })?;
    if used != bytes.len() {
        return Err(ProtoError::Malformed {
            reason: format!("{} trailing bytes after the message", bytes.len() - used),
        });
    }
    Ok(value)
}

/// Checks a frame's announced length (the u32 prefix on the wire) against a limit,
/// before anything is allocated for it.
pub fn check_frame_len(len: u64, max: usize) -> Result<usize, ProtoError> {
    match usize::try_from(len) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(ProtoError::FrameTooLarge {
            len: len.min(usize::MAX as u64) as usize,
            max,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::CLIENT_FRAME_BYTES_MAX;
    use crate::msg::{AdminRequest, MutateRequest, RaftRequest, ResolveRequest, ResolveResponse};
    use crate::mutation::{Mutation, Op, SignedMutation};
    use crate::name::Name;
    use crate::record::{Record, RecordSet};
    use crate::scope::ScopeId;
    use proptest::prelude::*;

    fn key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn oversize_frame_is_refused_before_decoding() {
        let bytes = vec![0u8; CLIENT_FRAME_BYTES_MAX + 1];
        let err = decode::<ResolveRequest>(&bytes, CLIENT_FRAME_BYTES_MAX).unwrap_err();
        assert!(matches!(err, ProtoError::FrameTooLarge { .. }));
        assert!(check_frame_len(u64::from(u32::MAX), CLIENT_FRAME_BYTES_MAX).is_err());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&ScopeId::root()).unwrap();
        bytes.push(0);
        assert!(decode::<ScopeId>(&bytes, 64).is_err());
    }

    #[test]
    fn a_bad_name_inside_a_message_fails_to_decode() {
        let good = encode(&"/eu/x".to_string()).unwrap();
        assert!(decode::<Name>(&good, 1024).is_ok());
        let bad = encode(&"/eu/X$".to_string()).unwrap();
        assert!(decode::<Name>(&bad, 1024).is_err());
    }

    fn arb_name() -> impl Strategy<Value = Name> {
        proptest::collection::vec("[a-z0-9_-]{1,8}", 0..6)
            .prop_map(|labels| Name::from_labels(&labels).unwrap())
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| Record::Addr((std::net::Ipv4Addr::from(ip), port).into())),
            "\\PC{0,40}".prop_map(Record::Text),
            (arb_name(), any::<u16>(), any::<u16>(), any::<u16>()).prop_map(
                |(target, port, priority, weight)| Record::Service {
                    target,
                    port,
                    priority,
                    weight
                }
            ),
            arb_name().prop_map(Record::Alias),
            "[1-9A-Za-z]{1,52}".prop_map(|peer| Record::Object { peer }),
            proptest::collection::vec(any::<u8>(), 0..256).prop_map(Record::Blob),
        ]
    }

    proptest! {
        #[test]
        fn record_set_round_trip(records in proptest::collection::vec(arb_record(), 1..8),
                                 ttl_s in any::<u32>(), version in any::<u64>()) {
            let set = RecordSet { records, ttl_s, version, writer: [3; 32] };
            let bytes = encode(&set).unwrap();
            prop_assert_eq!(decode::<RecordSet>(&bytes, bytes.len()).unwrap(), set);
        }

        #[test]
        fn signed_mutation_round_trip(name in arb_name(), records in proptest::collection::vec(arb_record(), 1..4),
                                      nonce in any::<u64>(), exp in any::<u64>()) {
            let m = Mutation { op: Op::Put { name, records, ttl_s: 60 }, nonce, expires_at_ms: exp };
            let signed = SignedMutation::sign(&m, &key()).unwrap();
            let req = MutateRequest { mutation: signed, forwarded: false };
            let bytes = encode(&req).unwrap();
            let back: MutateRequest = decode(&bytes, CLIENT_FRAME_BYTES_MAX).unwrap();
            prop_assert_eq!(back.mutation.verify().unwrap(), m);
        }

        #[test]
        fn random_bytes_never_panic_any_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<ResolveRequest>(&bytes, CLIENT_FRAME_BYTES_MAX);
            let _ = decode::<ResolveResponse>(&bytes, CLIENT_FRAME_BYTES_MAX);
            let _ = decode::<MutateRequest>(&bytes, CLIENT_FRAME_BYTES_MAX);
            let _ = decode::<AdminRequest>(&bytes, CLIENT_FRAME_BYTES_MAX);
            let _ = decode::<RaftRequest>(&bytes, CLIENT_FRAME_BYTES_MAX);
            let _ = decode::<Mutation>(&bytes, CLIENT_FRAME_BYTES_MAX);
        }
    }
}
