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
use proto::{Name, Referral, ScopeId};

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
        check_referral(referral, asked.prefix, asked.name).map_err(unverified)?;
    }
    Ok(answer)
}

/// A referral handed out by the scope at `scope_prefix` for `name` must lead strictly
/// deeper, and towards `name`.
pub(crate) fn check_referral(
    referral: &Referral,
    scope_prefix: &Name,
    name: &Name,
) -> Result<(), String> {
    let prefix = &referral.prefix;
    if !(prefix.is_under(scope_prefix) && prefix.depth() > scope_prefix.depth()) {
        return Err(format!(
            "referral to {prefix} is not below the referring scope's prefix {scope_prefix}"
        ));
    }
    if !name.is_under(prefix) {
        return Err(format!("referral to {prefix} does not lead to {name}"));
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
                name: &self.name,
            }
        }

        fn check(&self, signed: &SignedAnswer) -> Result<Answer, Error> {
            let me = self.peer();
            verify_answer(signed, self.asked(), |p| *p == me)
        }
    }

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
        assert!(check_referral(&r, &eu, &name)
            .unwrap_err()
            .contains("not below"));
        assert!(check_referral(&referral_to("/eu/payments"), &eu, &name).is_ok());
        let mut to_root = referral_to("/eu/payments");
        to_root.scope = ScopeId::root();
        assert!(check_referral(&to_root, &eu, &name).is_err());
    }
}
