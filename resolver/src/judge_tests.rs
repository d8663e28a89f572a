use super::*;
use crate::net::NetError;
use proto::codec;
use proto::{Referral, ScopeId};

fn anchor() -> AnchorAddr {
    AnchorAddr {
        peer: PeerId::random(),
        addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
    }
}

fn mutate_reply(w: WireError) -> Result<MutateResponse, CallError> {
    Ok(MutateResponse::Error(w))
}

fn timed_out() -> Result<MutateResponse, CallError> {
    Err(CallError::Timeout {
        peer: PeerId::random(),
        ms: 5,
    })
}

#[test]
fn replayed_after_a_timeout_is_unknown_but_alone_is_replayed() {
    let a = anchor();
    let mut fresh = None;
    let step = judge_mutate(
        &mut fresh,
        &mut None,
        &a,
        mutate_reply(WireError::Replayed { nonce: 4 }),
    );
    assert!(matches!(
        step,
        Step::Done(Err(Error::Replayed { nonce: 4 }))
    ));

    let mut ambiguity = None;
    assert!(matches!(
        judge_mutate(&mut ambiguity, &mut None, &a, timed_out()),
        Step::Next { .. }
    ));
    let step = judge_mutate(
        &mut ambiguity,
        &mut None,
        &a,
        mutate_reply(WireError::Replayed { nonce: 4 }),
    );
    assert!(
        matches!(step, Step::Done(Err(Error::Unknown { .. }))),
        "{step:?}"
    );
}

#[test]
fn unavailable_answer_makes_a_mutation_ambiguous_but_a_failed_dial_does_not() {
    let a = anchor();
    let mut ambiguity = None;
    let dial = CallError::Net(NetError::Failed {
        peer: a.peer,
        reason: "Failed to dial the requested peer".into(),
    });
    assert!(!dial.maybe_delivered());
    let _ = judge_mutate(&mut ambiguity, &mut None, &a, Err(dial));
    assert!(ambiguity.is_none());
    let unavailable = WireError::Unavailable {
        reason: "no quorum".into(),
    };
    let _ = judge_mutate(&mut ambiguity, &mut None, &a, mutate_reply(unavailable));
    assert!(ambiguity.is_some());
    let expired = WireError::Expired {
        expires_at_ms: 1,
        reason: "past".into(),
    };
    let step = judge_mutate(&mut ambiguity, &mut None, &a, mutate_reply(expired));
    assert!(matches!(step, Step::Done(Err(Error::Unknown { .. }))));
}

#[test]
fn a_conflict_after_an_ambiguous_attempt_is_unknown() {
    let a = anchor();
    let mut ambiguity = Some("an attempt timed out".to_string());
    let step = judge_mutate(
        &mut ambiguity,
        &mut None,
        &a,
        mutate_reply(WireError::Conflict { current: 7 }),
    );
    assert!(matches!(step, Step::Done(Err(Error::Unknown { .. }))));
    let mut fresh = None;
    let step = judge_mutate(
        &mut fresh,
        &mut None,
        &a,
        mutate_reply(WireError::Conflict { current: 7 }),
    );
    assert!(matches!(
        step,
        Step::Done(Err(Error::Conflict { current: 7 }))
    ));
}

#[test]
fn not_leader_redirects_only_with_a_leader() {
    let info = AnchorInfo {
        peer_id: PeerId::random().to_base58(),
        addrs: vec![],
    };
    let with = WireError::NotLeader {
        scope: ScopeId::root(),
        leader: Some(info.clone()),
    };
    assert!(matches!(judge_wire_error::<()>(with), Step::Redirect(i) if i == info));
    let without = WireError::NotLeader {
        scope: ScopeId::root(),
        leader: None,
    };
    assert!(matches!(judge_wire_error::<()>(without), Step::Next { .. }));
    let denied = WireError::Denied {
        reason: "no".into(),
    };
    assert!(matches!(
        judge_wire_error::<()>(denied),
        Step::Done(Err(Error::Denied { .. }))
    ));
}

fn signed(key: &libp2p::identity::Keypair, answer: &Answer) -> Result<ResolveResponse, CallError> {
    let body = codec::encode(answer).unwrap();
    let signed = proto::msg::SignedAnswer {
        signature: key.sign(&Answer::signing_bytes(&body)).unwrap(),
        public_key: key.public().encode_protobuf(),
        body,
    };
    Ok(ResolveResponse::Signed(signed))
}

#[test]
fn resolve_answers_are_verified_before_they_count() {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let a = AnchorAddr {
        peer: key.public().to_peer_id(),
        addrs: vec![],
    };
    let asked_name = Name::parse("/a").unwrap();
    let root = Name::root();
    let asked = Asked {
        range: &proto::KeyRange::all(),
        peer: a.peer,
        scope: ScopeId::root(),
        prefix: &root,
        name: &asked_name,
    };
    let member = |_: &PeerId| true;
    let stranger = |_: &PeerId| false;
    let not_found = |name: &str| Answer::NotFound {
        scope: ScopeId::root(),
        name: Name::parse(name).unwrap(),
    };
    let ok = judge_resolve(asked, signed(&key, &not_found("/a")), &member);
    assert!(matches!(ok, Step::Done(Ok(Answer::NotFound { .. }))));
    let other = judge_resolve(asked, signed(&key, &not_found("/b")), &member);
    assert!(matches!(
        other,
        Step::Next {
            fallback: Some(Error::Unverified { .. }),
            ..
        }
    ));
    let outsider = judge_resolve(asked, signed(&key, &not_found("/a")), &stranger);
    assert!(matches!(
        outsider,
        Step::Next {
            fallback: Some(Error::NotMember { .. }),
            ..
        }
    ));
    // What the network layer makes of an undecodable answer (three bytes of 0xff).
    let undecodable = codec::decode::<ResolveResponse>(&[0xff; 3], usize::MAX).unwrap_err();
    let garbage = CallError::Decode {
        peer: a.peer,
        reason: undecodable.to_string(),
    };
    let garbage = judge_resolve(asked, Err(garbage), &member);
    assert!(matches!(garbage, Step::Next { .. }));
    let error = ResolveResponse::Error(WireError::NoScope {
        name: asked_name.clone(),
    });
    let no_scope = judge_resolve(asked, Ok(error), &member);
    assert!(matches!(
        no_scope,
        Step::Next {
            fallback: Some(Error::NoScope { .. }),
            ..
        }
    ));
    // A scope that retired into its parent: the read waits, as a write does.
    let moving = ResolveResponse::Error(WireError::Moving {
        prefix: Name::parse("/eu").unwrap(),
    });
    let moving = judge_resolve(asked, Ok(moving), &member);
    assert!(matches!(moving, Step::Wait(Error::Moving { .. })));
}

#[test]
fn delegated_and_moving_are_not_ambiguous() {
    let a = anchor();
    let referral = Referral {
        scope: ScopeId::derive(&[b"eu"]),
        prefix: Name::parse("/eu").unwrap(),
        epoch: 1,
        members: vec![],
        ttl_s: 60,
        range: proto::KeyRange::all(),
    };
    let mut ambiguity = None;
    let delegated = WireError::Delegated {
        name: Name::parse("/eu/a").unwrap(),
        referral: Box::new(referral.clone()),
    };
    let step = judge_mutate(&mut ambiguity, &mut None, &a, mutate_reply(delegated));
    assert!(matches!(step, Step::Refer(r) if r == referral));
    let moving = WireError::Moving {
        prefix: Name::parse("/eu").unwrap(),
    };
    let step = judge_mutate(&mut ambiguity, &mut None, &a, mutate_reply(moving));
    assert!(matches!(step, Step::Wait(Error::Moving { .. })));
    assert!(ambiguity.is_none());
}
