//! Every wire and log decoder: `proto::codec::decode::<T>(bytes, limit)` for each message
//! type, with the limit the anchor uses for it, plus `SignedMutation::verify`.
//!
//! Input: one selector byte (modulo the number of types, see `WIRE_TYPES` in src/lib.rs),
//! then the encoded frame. Never panics; whatever decodes survives decode → encode → decode
//! unchanged; `verify` agrees with decoding and validating the body; a decoded policy that
//! validates survives the TOML round trip.
#![no_main]

use anchor::raft::{NodeId, TypeConfig};
use anchorage_fuzz::{
    check_policy, fuzz_key, round_trip, round_trip_bytes, wire_limit, WIRE_TYPES,
};
use libfuzzer_sys::fuzz_target;
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use proto::limits::MUTATION_BYTES_MAX;
use proto::msg::{
    AdminRequest, AdminResponse, Answer, MutateRequest, MutateResponse, RaftRequest, RaftResponse,
    ResolveRequest, ResolveResponse, WatchRequest, WatchResponse,
};
use proto::mutation::Signature;
use proto::record::validate_records;
use proto::{Mutation, RecordSet, SignedMutation};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    let selector = usize::from(selector) % WIRE_TYPES.len();
    let limit = wire_limit(selector);
    match selector {
        0 => drop(round_trip::<ResolveRequest>(frame, limit)),
        1 => {
            if let Some(ResolveResponse::Signed(signed)) =
                round_trip::<ResolveResponse>(frame, limit)
            {
                // The signed body is decoded by the resolver with the same limit.
                let _ = Answer::signing_bytes(&signed.body);
                if let Some(answer) = round_trip::<Answer>(&signed.body, limit) {
                    check_answer(&answer);
                }
            }
        }
        2 => {
            if let Some(req) = round_trip::<MutateRequest>(frame, limit) {
                check_signed(&req.mutation);
            }
        }
        3 => drop(round_trip::<MutateResponse>(frame, limit).map(|r| format!("{r:?}"))),
        4 => drop(round_trip::<AdminRequest>(frame, limit)),
        5 => drop(round_trip::<AdminResponse>(frame, limit)),
        6 => drop(round_trip::<RaftRequest>(frame, limit)),
        7 => {
            if let Some(RaftResponse::Refused(e)) = round_trip::<RaftResponse>(frame, limit) {
                drop(e.to_string());
            }
        }
        8 => {
            let decoded = round_trip::<Mutation>(frame, limit);
            // The same bytes as a signed body: re-signed with a fixed key, `verify` must
            // accept exactly the bodies that decode and validate.
            let signed = resign(frame);
            let verified = signed.verify();
            let expected =
                decoded.filter(|m| frame.len() <= MUTATION_BYTES_MAX && m.op.validate().is_ok());
            assert_eq!(
                verified.ok(),
                expected,
                "verify disagrees with decode + validate"
            );
        }
        9 => {
            if let Some(set) = round_trip::<RecordSet>(frame, limit) {
                check_record_set(&set);
            }
        }
        10 => {
            // Policies travel and are stored as TOML; the codec form is checked as well.
            if let Some(p) = round_trip::<policy::Policy>(frame, limit) {
                let text = p.to_toml();
                if p.validate().is_ok() {
                    check_policy(&p);
                } else {
                    assert!(
                        policy::Policy::from_toml(&text).is_err(),
                        "invalid policy parsed"
                    );
                }
            }
        }
        11 => drop(round_trip_bytes::<AppendEntriesRequest<TypeConfig>>(
            frame, limit,
        )),
        12 => drop(round_trip_bytes::<VoteRequest<NodeId>>(frame, limit)),
        13 => drop(round_trip_bytes::<InstallSnapshotRequest<TypeConfig>>(
            frame, limit,
        )),
        14 => drop(round_trip::<WatchRequest>(frame, limit)),
        15 => match round_trip::<WatchResponse>(frame, limit) {
            Some(WatchResponse::Changes { events, .. }) => {
                for e in events {
                    if let Some(set) = e.set {
                        check_record_set(&set);
                    }
                }
            }
            Some(WatchResponse::Error(e)) => drop(e.to_string()),
            _ => {}
        },
        _ => {
            if let Some(answer) = round_trip::<Answer>(frame, limit) {
                check_answer(&answer);
            }
        }
    }
});

/// `frame` as a mutation body with one valid signature by the fuzz key.
fn resign(frame: &[u8]) -> SignedMutation {
    let mut signed = SignedMutation {
        body: frame.to_vec(),
        signatures: Vec::new(),
    };
    signed.add_signature(&fuzz_key());
    signed
}

/// A signed mutation as received: `verify` must not panic, and what it accepts must be a
/// valid mutation whose body is what was signed. Re-signed with a valid key, the body must
/// verify exactly when it decodes and validates.
fn check_signed(signed: &SignedMutation) {
    let _ = (signed.writer(), signed.signers());
    if let Ok(m) = signed.verify() {
        assert!(m.op.validate().is_ok());
        let body: Mutation = proto::codec::decode(&signed.body, MUTATION_BYTES_MAX).unwrap();
        assert_eq!(body, m);
    }
    let mut resigned = resign(&signed.body);
    // Keep the fuzzed signatures after the valid one: any bad one must fail the whole.
    resigned
        .signatures
        .extend(signed.signatures.iter().cloned());
    let all_valid = signed.signatures.iter().all(|s| sig_ok(&signed.body, s));
    if let Ok(m) = resigned.verify() {
        assert!(
            all_valid && m.op.validate().is_ok(),
            "a bad signature passed"
        );
    }
}

fn sig_ok(body: &[u8], s: &Signature) -> bool {
    SignedMutation {
        body: body.to_vec(),
        signatures: vec![s.clone()],
    }
    .verify()
    .is_ok()
}

fn check_answer(answer: &Answer) {
    let _ = (answer.scope(), answer.name().to_string());
    if let Answer::Found { set, .. } = answer {
        check_record_set(set);
    }
}

fn check_record_set(set: &RecordSet) {
    let _ = validate_records(&set.records, set.ttl_s);
    for r in &set.records {
        let _ = (r.kind(), r.payload_bytes(), r.to_string());
    }
}
