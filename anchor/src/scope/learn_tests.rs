use super::*;
use crate::scope::decide::delegation_over;
use libp2p::identity::Keypair;
use proto::{AnchorInfo, KeyRange};

pub(crate) fn n(s: &str) -> Name {
    Name::parse(s).unwrap()
}

pub(crate) fn id(b: u8) -> ScopeId {
    ScopeId([b; 16])
}

pub(crate) fn info(k: &Keypair) -> AnchorInfo {
    AnchorInfo {
        peer_id: k.public().to_peer_id().to_base58(),
        addrs: vec![],
    }
}

/// Three members, the root's Active delegation of `/users` to scope 1 on them.
pub(crate) struct Fixture {
    pub(crate) keys: Vec<Keypair>,
    pub(crate) delegations: BTreeMap<Name, Delegation>,
}

pub(crate) fn fixture() -> Fixture {
    let keys: Vec<Keypair> = (0..3).map(|_| Keypair::generate_ed25519()).collect();
    let referral = Referral {
        scope: id(1),
        prefix: n("/users"),
        epoch: 1,
        members: keys.iter().map(info).collect(),
        ttl_s: 60,
        range: KeyRange::all(),
    };
    let base = Delegation {
        members: vec![],
        referral,
        policy_toml: String::new(),
        index: 5,
        state: DelegationState::Active,
    };
    let mut delegations = BTreeMap::new();
    delegations.insert(n("/users"), base);
    Fixture { keys, delegations }
}

pub(crate) fn range(scope: u8, start: &str, end: Option<&str>, f: &Fixture) -> Referral {
    Referral {
        scope: id(scope),
        prefix: n("/users"),
        epoch: 1,
        members: f.keys.iter().map(info).collect(),
        ttl_s: 60,
        range: KeyRange {
            start: Some(n(start)),
            end: end.map(n),
        },
    }
}

pub(crate) fn sign(k: &Keypair, answer: &Answer) -> SignedAnswer {
    let body = proto::codec::encode(answer).unwrap();
    SignedAnswer {
        signature: k.sign(&Answer::signing_bytes(&body)).unwrap(),
        public_key: k.public().encode_protobuf(),
        body,
    }
}

/// `k`'s answer from scope `asked` referring the range's first name to `r`.
pub(crate) fn vouch(k: &Keypair, asked: ScopeId, r: &Referral) -> SignedAnswer {
    let answer = Answer::Referral {
        scope: asked,
        name: r.first().clone(),
        referral: r.clone(),
    };
    sign(k, &answer)
}

pub(crate) fn learn(
    f: &mut Fixture,
    r: &Referral,
    proofs: &[SignedAnswer],
) -> Result<(), LearnRefusal> {
    if let Some(d) = check_learned(&f.delegations, r, proofs, 9)? {
        f.delegations.insert(d.referral.first().clone(), d);
    }
    Ok(())
}

#[test]
fn a_majority_of_the_delegations_members_makes_a_range_learned() {
    let mut f = fixture();
    let r = range(2, "/users/m", None, &f);
    let proofs: Vec<_> = f.keys[..2].iter().map(|k| vouch(k, id(1), &r)).collect();
    let d = check_learned(&f.delegations, &r, &proofs, 9)
        .unwrap()
        .unwrap();
    assert_eq!(d.state, DelegationState::Learned { base: id(1) });
    assert_eq!(d.index, 9);
    assert_eq!(d.referral, r);
    learn(&mut f, &r, &proofs).unwrap();
    // Again: nothing to do.
    assert_eq!(check_learned(&f.delegations, &r, &proofs, 10), Ok(None));
}

#[test]
fn a_minority_or_one_member_counted_twice_is_refused() {
    let f = fixture();
    let r = range(2, "/users/m", None, &f);
    let one = vouch(&f.keys[0], id(1), &r);
    let e = check_learned(&f.delegations, &r, std::slice::from_ref(&one), 9).unwrap_err();
    assert_eq!(
        e,
        LearnRefusal::Minority {
            vouched: 1,
            members: 3
        }
    );
    let e = check_learned(&f.delegations, &r, &[one.clone(), one], 9).unwrap_err();
    assert_eq!(e.label(), "minority");
}

#[test]
fn a_forged_proof_is_refused() {
    let f = fixture();
    let r = range(2, "/users/m", None, &f);
    let mut proofs: Vec<_> = f.keys[..2].iter().map(|k| vouch(k, id(1), &r)).collect();
    proofs[1].signature[7] ^= 1;
    let e = check_learned(&f.delegations, &r, &proofs, 9).unwrap_err();
    assert!(
        matches!(e, LearnRefusal::BadProof(ref why) if why.contains("does not verify")),
        "{e}"
    );
    // A signature over another answer, with the body swapped in.
    let mut proofs: Vec<_> = f.keys[..2].iter().map(|k| vouch(k, id(1), &r)).collect();
    let other = range(3, "/users/m", None, &f);
    proofs[0].body = proto::codec::encode(&Answer::Referral {
        scope: id(1),
        name: n("/users/m"),
        referral: other,
    })
    .unwrap();
    assert_eq!(
        check_learned(&f.delegations, &r, &proofs, 9)
            .unwrap_err()
            .label(),
        "bad_proof"
    );
}

#[test]
fn proofs_from_non_members_are_refused() {
    let f = fixture();
    let r = range(2, "/users/m", None, &f);
    let strangers: Vec<Keypair> = (0..3).map(|_| Keypair::generate_ed25519()).collect();
    let proofs: Vec<_> = strangers.iter().map(|k| vouch(k, id(1), &r)).collect();
    let e = check_learned(&f.delegations, &r, &proofs, 9).unwrap_err();
    assert!(
        matches!(e, LearnRefusal::BadProof(ref why) if why.contains("not a member")),
        "{e}"
    );
}

#[test]
fn answers_that_do_not_vouch_for_this_referral_are_refused() {
    let f = fixture();
    let r = range(2, "/users/m", None, &f);
    // From a scope that is neither the delegated one nor a range learned under it.
    let proofs: Vec<_> = f.keys.iter().map(|k| vouch(k, id(7), &r)).collect();
    assert_eq!(
        check_learned(&f.delegations, &r, &proofs, 9)
            .unwrap_err()
            .label(),
        "bad_proof"
    );
    // About another name.
    let found = Answer::NotFound {
        scope: id(1),
        name: n("/users/m"),
    };
    let proofs: Vec<_> = f.keys.iter().map(|k| sign(k, &found)).collect();
    assert_eq!(
        check_learned(&f.delegations, &r, &proofs, 9)
            .unwrap_err()
            .label(),
        "bad_proof"
    );
}

#[test]
fn a_referral_outside_the_delegations_prefix_or_not_a_range_is_refused() {
    let f = fixture();
    let mut r = range(2, "/users/m", None, &f);
    r.prefix = n("/groups");
    r.range.start = Some(n("/groups/m"));
    let proofs: Vec<_> = f.keys.iter().map(|k| vouch(k, id(1), &r)).collect();
    assert_eq!(
        check_learned(&f.delegations, &r, &proofs, 9).unwrap_err(),
        LearnRefusal::NoDelegation(n("/groups"))
    );
    // A range whose start is not a child of the prefix.
    let mut r = range(2, "/users/m", None, &f);
    r.range.start = Some(n("/groups/m"));
    let proofs: Vec<_> = f.keys.iter().map(|k| vouch(k, id(1), &r)).collect();
    assert_eq!(
        check_learned(&f.delegations, &r, &proofs, 9)
            .unwrap_err()
            .label(),
        "not_a_range"
    );
    // A whole subtree.
    let mut r = range(2, "/users/m", None, &f);
    r.range = KeyRange::all();
    assert_eq!(
        check_learned(&f.delegations, &r, &[], 9)
            .unwrap_err()
            .label(),
        "not_a_range"
    );
}

#[test]
fn a_range_of_a_learned_range_is_learned_from_its_answers() {
    let mut f = fixture();
    let right = range(2, "/users/m", None, &f);
    let proofs: Vec<_> = f.keys.iter().map(|k| vouch(k, id(1), &right)).collect();
    learn(&mut f, &right, &proofs).unwrap();
    // Scope 2 splits [/users/t, -) off to scope 3: its members vouch from scope 2.
    let further = range(3, "/users/t", None, &f);
    let proofs: Vec<_> = f.keys[1..]
        .iter()
        .map(|k| vouch(k, id(2), &further))
        .collect();
    learn(&mut f, &further, &proofs).unwrap();
    let over = |s: &str| delegation_over(&f.delegations, &n(s)).map(|d| d.referral.scope);
    assert_eq!(over("/users/a"), Some(id(1)));
    assert_eq!(over("/users"), Some(id(1)));
    assert_eq!(over("/users/m"), Some(id(2)));
    assert_eq!(over("/users/n/x"), Some(id(2)));
    assert_eq!(over("/users/t"), Some(id(3)));
    assert_eq!(over("/users/z/y"), Some(id(3)));
    assert_eq!(over("/groups/a"), None);
}

#[test]
fn delegation_over_falls_back_to_the_delegation_outside_learned_ranges() {
    let mut f = fixture();
    // The left scope split [/users/f, /users/m) off; [/users/m, -) is not learned.
    let mid = range(4, "/users/f", Some("/users/m"), &f);
    let proofs: Vec<_> = f.keys.iter().map(|k| vouch(k, id(1), &mid)).collect();
    learn(&mut f, &mid, &proofs).unwrap();
    let over =
        |f: &Fixture, s: &str| delegation_over(&f.delegations, &n(s)).map(|d| d.referral.scope);
    assert_eq!(over(&f, "/users/g"), Some(id(4)));
    assert_eq!(over(&f, "/users/a"), Some(id(1)));
    assert_eq!(over(&f, "/users/z"), Some(id(1)));
    // A learned range refines only the delegation it was learned under: once that is gone
    // (a new delegation of the prefix, or none), it is ignored.
    let base = f.delegations.get_mut(&n("/users")).unwrap();
    base.referral.scope = id(8);
    assert_eq!(over(&f, "/users/g"), Some(id(8)));
    f.delegations.remove(&n("/users"));
    assert_eq!(over(&f, "/users/g"), None);
    // A range under a delegation that is not Active cannot be learned.
    let mut f = fixture();
    f.delegations.get_mut(&n("/users")).unwrap().state = DelegationState::Frozen;
    let proofs: Vec<_> = f.keys.iter().map(|k| vouch(k, id(1), &mid)).collect();
    assert_eq!(
        check_learned(&f.delegations, &mid, &proofs, 9)
            .unwrap_err()
            .label(),
        "no_delegation"
    );
}

#[test]
fn learned_ranges_under_one_delegation_are_bounded() {
    let mut f = fixture();
    for i in 0..LEARNED_PER_DELEGATION_MAX {
        let start = format!("/users/k{i:03}");
        let mut r = range(100, &start, None, &f);
        r.scope = ScopeId::derive(&[start.as_bytes()]);
        let proofs: Vec<_> = f.keys.iter().map(|k| vouch(k, id(1), &r)).collect();
        learn(&mut f, &r, &proofs).unwrap();
    }
    let r = range(2, "/users/z", None, &f);
    let proofs: Vec<_> = f.keys.iter().map(|k| vouch(k, id(1), &r)).collect();
    assert_eq!(
        check_learned(&f.delegations, &r, &proofs, 9).unwrap_err(),
        LearnRefusal::TooMany
    );
}
