//! Verification of signed answers: the chain of signatures from the trust
//! anchors to an answer.
//!
//! An anchor answers a resolve with a [`SignedAnswer`]: the encoded [`Answer`], its libp2p
//! public key and its signature over [`Answer::signing_bytes`]. `verify_answer` accepts it
//! only when, in this order:
//!
//! 1. the public key decodes (`PublicKey::try_decode_protobuf`) and its peer id is the peer
//!    the request was sent to (the libp2p connection authenticated that peer);
//! 2. that peer is a member of the scope asked: a trust anchor for the root, one of the
//!    members of the referral that named the scope for a child (or an anchor a member
//!    redirected to as its leader) — otherwise [`Error::NotMember`];
//! 3. the signature verifies over the domain-separated body;
//! 4. the body decodes, and its scope and name are the ones asked;
//! 5. a referral names a prefix strictly deeper than the asking scope's prefix and an
//!    ancestor of the name (or the name itself) — `check_referral` — so every hop of a walk
//!    gets closer to the name.
//!
//! Everything else is [`Error::Unverified`]. Pure functions: the client counts and logs
//! rejections and tries another member.

use libp2p::identity::PublicKey;
use libp2p::PeerId;
use proto::codec;
use proto::limits::CLIENT_FRAME_BYTES_MAX;
use proto::msg::{Answer, SignedAnswer};
use proto::{KeyRange, Name, Referral, ScopeId};

use crate::error::Error;

/// What a resolve asked, and of whom.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Asked<'a> {
    /// The anchor the request went to.
    pub peer: PeerId,
    /// The scope asked.
    pub scope: ScopeId,
    /// That scope's prefix.
    pub prefix: &'a Name,
    /// The part of the prefix's subtree that scope governs.
    pub range: &'a KeyRange,
    /// The name asked for.
    pub name: &'a Name,
}

/// Checks `signed` against what was asked; `is_member` says whether a peer is a member of
/// `asked.scope`. Returns the answer it carries.
pub(crate) fn verify_answer(
    signed: &SignedAnswer,
    asked: Asked<'_>,
    is_member: impl Fn(&PeerId) -> bool,
) -> Result<Answer, Error> {
    let peer = asked.peer;
    let unverified = |reason: String| Error::Unverified { peer, reason };
    let key = PublicKey::try_decode_protobuf(&signed.public_key)
        .map_err(|e| unverified(format!("its public key does not decode: {e}")))?;
    let signer = key.to_peer_id();
    if signer != peer {
        return Err(unverified(format!(
            "signed by {signer}, but the request went to {peer}"
        )));
    }
    if !is_member(&peer) {
        return Err(Error::NotMember {
            peer,
            scope: asked.scope,
        });
    }
    if !key.verify(&Answer::signing_bytes(&signed.body), &signed.signature) {
        return Err(unverified("the signature does not verify".into()));
    }
    let answer: Answer = codec::decode(&signed.body, CLIENT_FRAME_BYTES_MAX)
        .map_err(|e| unverified(format!("the signed body does not decode: {e}")))?;
    if answer.scope() != asked.scope {
        return Err(unverified(format!(
            "asked scope {}, the answer is for scope {}",
            asked.scope,
            answer.scope()
        )));
    }
    if answer.name() != asked.name {
        return Err(unverified(format!(
            "asked for {}, the answer is about {}",
            asked.name,
            answer.name()
        )));
    }
    if let Answer::Referral { referral, .. } = &answer {
        check_referral(referral, asked.prefix, asked.range, asked.name).map_err(unverified)?;
    }
    if let Answer::Members { .. } = &answer {
        return Err(unverified(
            "a member list is not an answer to a resolve".into(),
        ));
    }
    Ok(answer)
}

/// A referral handed out by the scope at `scope_prefix` (governing `scope_range` of it) for
/// `name` must lead strictly nearer, and towards `name`: to a deeper prefix inside the
/// referring scope's range, or to a range of the same prefix that starts later and lies
/// inside the referring scope's range (a range split off it).
pub(crate) fn check_referral(
    referral: &Referral,
    scope_prefix: &Name,
    scope_range: &KeyRange,
    name: &Name,
) -> Result<(), String> {
    let prefix = &referral.prefix;
    if !referral.narrower_than(scope_prefix, scope_range.start.as_ref()) {
        return Err(format!(
            "referral to {prefix} {} is not below the referring scope {scope_prefix} {scope_range}",
            referral.range
        ));
    }
    if !referral.range.is_valid_for(prefix) {
        return Err(format!(
            "referral to {prefix} has a malformed range {}",
            referral.range
        ));
    }
    if !scope_range.covers(scope_prefix, referral.first()) {
        return Err(format!(
            "referral to {prefix} {} lies outside the referring scope's range {scope_range}",
            referral.range
        ));
    }
    if *prefix == *scope_prefix {
        let beyond = match (&referral.range.end, &scope_range.end) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(mine), Some(theirs)) => mine > theirs,
        };
        if beyond {
            return Err(format!(
                "referral to the range {} of {prefix} reaches past the referring scope's range {scope_range}",
                referral.range
            ));
        }
    }
    if !referral.covers(name) {
        return Err(format!(
            "referral to {prefix} {} does not lead to {name}",
            referral.range
        ));
    }
    if referral.scope == ScopeId::root() {
        return Err("referral to the root scope".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;
    use proto::{AnchorInfo, RecordSet};

    fn n(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    fn sign_with(key: &Keypair, answer: &Answer) -> SignedAnswer {
        let body = codec::encode(answer).unwrap();
        SignedAnswer {
            signature: key.sign(&Answer::signing_bytes(&body)).unwrap(),
            public_key: key.public().encode_protobuf(),
            body,
        }
    }

    fn found(scope: ScopeId, name: &str) -> Answer {
        Answer::Found {
            scope,
            name: n(name),
            set: RecordSet {
                records: vec![proto::Record::Text("x".into())],
                ttl_s: 60,
                version: 4,
                writer: [0; 32],
            },
        }
    }

    fn referral_to(prefix: &str) -> Referral {
        Referral {
            scope: ScopeId::derive(&[prefix.as_bytes()]),
            prefix: n(prefix),
            epoch: 1,
            members: vec![AnchorInfo::default()],
            ttl_s: 60,
            range: KeyRange::all(),
        }
    }

    struct Case {
        key: Keypair,
        name: Name,
        prefix: Name,
    }

    impl Case {
        fn new() -> Case {
            Case {
                key: Keypair::generate_ed25519(),
                name: n("/eu/payments/api"),
                prefix: Name::root(),
            }
        }

        fn peer(&self) -> PeerId {
            self.key.public().to_peer_id()
        }

        fn asked(&self) -> Asked<'_> {
            Asked {
                peer: self.peer(),
                scope: ScopeId::root(),
                prefix: &self.prefix,
                range: &ALL,
                name: &self.name,
            }
        }

        fn check(&self, signed: &SignedAnswer) -> Result<Answer, Error> {
            let me = self.peer();
            verify_answer(signed, self.asked(), |p| *p == me)
        }
    }

    static ALL: KeyRange = KeyRange {
        start: None,
        end: None,
    };

    fn reason(r: Result<Answer, Error>) -> String {
        match r {
            Err(Error::Unverified { reason, .. }) => reason,
            other => panic!("expected Unverified, got {other:?}"),
        }
    }

    #[test]
    fn a_member_signed_answer_verifies() {
        let c = Case::new();
        let a = found(ScopeId::root(), "/eu/payments/api");
        assert_eq!(c.check(&sign_with(&c.key, &a)).unwrap(), a);
    }

    #[test]
    fn forged_signature_is_rejected() {
        let c = Case::new();
        let mut signed = sign_with(&c.key, &found(ScopeId::root(), "/eu/payments/api"));
        signed.signature[0] ^= 1;
        assert!(reason(c.check(&signed)).contains("signature"));
        // A body changed after signing.
        let mut signed = sign_with(&c.key, &found(ScopeId::root(), "/eu/payments/api"));
        let other = codec::encode(&found(ScopeId::root(), "/eu/payments/api2")).unwrap();
        signed.body = other;
        assert!(reason(c.check(&signed)).contains("signature"));
        let mut garbage = sign_with(&c.key, &found(ScopeId::root(), "/eu/payments/api"));
        garbage.public_key = vec![1, 2, 3];
        assert!(reason(c.check(&garbage)).contains("public key"));
    }

    #[test]
    fn answer_signed_by_another_peer_than_the_one_asked_is_rejected() {
        let c = Case::new();
        let other = Keypair::generate_ed25519();
        let signed = sign_with(&other, &found(ScopeId::root(), "/eu/payments/api"));
        assert!(reason(c.check(&signed)).contains("signed by"));
    }

    #[test]
    fn non_member_signer_is_not_a_member() {
        let c = Case::new();
        let signed = sign_with(&c.key, &found(ScopeId::root(), "/eu/payments/api"));
        let err = verify_answer(&signed, c.asked(), |_| false).unwrap_err();
        assert_eq!(
            err,
            Error::NotMember {
                peer: c.peer(),
                scope: ScopeId::root()
            }
        );
    }

    #[test]
    fn answer_about_another_scope_or_name_is_rejected() {
        let c = Case::new();
        let other_scope = ScopeId::derive(&[b"other"]);
        let signed = sign_with(&c.key, &found(other_scope, "/eu/payments/api"));
        assert!(reason(c.check(&signed)).contains("scope"));
        let signed = sign_with(&c.key, &found(ScopeId::root(), "/eu/payments/web"));
        assert!(reason(c.check(&signed)).contains("about"));
    }

    #[test]
    fn referral_must_lead_strictly_deeper_towards_the_name() {
        let c = Case::new();
        let refer = |prefix: &str| Answer::Referral {
            scope: ScopeId::root(),
            name: c.name.clone(),
            referral: referral_to(prefix),
        };
        assert!(c.check(&sign_with(&c.key, &refer("/eu"))).is_ok());
        assert!(c
            .check(&sign_with(&c.key, &refer("/eu/payments/api")))
            .is_ok());
        let r = reason(c.check(&sign_with(&c.key, &refer("/us"))));
        assert!(r.contains("does not lead"), "{r}");
        let r = reason(c.check(&sign_with(&c.key, &refer("/eu/payments/api/v1"))));
        assert!(r.contains("does not lead"), "{r}");

        // Asked from the /eu scope: a referral to /eu again (or above) is no progress.
        let eu = n("/eu");
        let name = n("/eu/payments/api");
        let r = referral_to("/eu");
        assert!(check_referral(&r, &eu, &ALL, &name)
            .unwrap_err()
            .contains("not below"));
        assert!(check_referral(&referral_to("/eu/payments"), &eu, &ALL, &name).is_ok());
        let mut to_root = referral_to("/eu/payments");
        to_root.scope = ScopeId::root();
        assert!(check_referral(&to_root, &eu, &ALL, &name).is_err());
    }

    fn range(start: Option<&str>, end: Option<&str>) -> KeyRange {
        KeyRange {
            start: start.map(n),
            end: end.map(n),
        }
    }

    #[test]
    fn a_range_referral_must_split_off_the_referring_range_towards_the_name() {
        let users = n("/users");
        let to = |start: Option<&str>, end: Option<&str>| {
            let mut r = referral_to("/users");
            r.range = range(start, end);
            r
        };
        let name = n("/users/q");
        // From the whole /users scope to the range [/users/m, -): nearer.
        assert!(check_referral(&to(Some("/users/m"), None), &users, &ALL, &name).is_ok());
        // A range that does not hold the name.
        let r = check_referral(&to(Some("/users/r"), None), &users, &ALL, &name).unwrap_err();
        assert!(r.contains("does not lead"), "{r}");
        // The same prefix without a later start is no progress.
        let from_m = range(Some("/users/m"), None);
        let r = check_referral(&to(Some("/users/m"), None), &users, &from_m, &name).unwrap_err();
        assert!(r.contains("not below"), "{r}");
        let r = check_referral(&to(None, None), &users, &from_m, &name).unwrap_err();
        assert!(r.contains("not below"), "{r}");
        // Further split off the right: nearer.
        let name_z = n("/users/z");
        assert!(check_referral(&to(Some("/users/t"), None), &users, &from_m, &name_z).is_ok());
        // Reaching past the referring scope's own end.
        let m_to_t = range(Some("/users/m"), Some("/users/t"));
        let r = check_referral(&to(Some("/users/p"), None), &users, &m_to_t, &name).unwrap_err();
        assert!(r.contains("reaches past"), "{r}");
        // A deeper prefix outside the referring range.
        let mut deep = referral_to("/users/a");
        deep.scope = ScopeId::derive(&[b"a"]);
        let r = check_referral(&deep, &users, &from_m, &n("/users/a/x")).unwrap_err();
        assert!(r.contains("outside"), "{r}");
        // Ends that are not children of the prefix.
        let r = check_referral(&to(Some("/users/m/x"), None), &users, &ALL, &n("/users/n"))
            .unwrap_err();
        assert!(r.contains("malformed"), "{r}");
    }
}
