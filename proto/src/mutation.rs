//! Mutations: what a writer asks for, and how it is signed and verified (`docs/design.md`,
//! "Mutations").
//!
//! The writer encodes a [`Mutation`] with the codec and signs `DOMAIN || body` with its
//! ed25519 key. Anchors verify every signature before decoding the body further, and the
//! nonce and expiry make a replayed or stale mutation refusable.

use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::ProtoError;
use crate::limits::MUTATION_BYTES_MAX;
use crate::name::Name;
use crate::record::{validate_records, Record};

/// Domain separation for mutation signatures.
pub const SIGNATURE_DOMAIN: &[u8] = b"anchorage/mutation/v1\0";
/// Signatures on one mutation (k-of-n policy changes need several).
pub const SIGNATURES_MAX: usize = 16;

/// What a writer asks a scope to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mutation {
    /// The change.
    pub op: Op,
    /// A random number, unique per writer within the validity window.
    pub nonce: u64,
    /// Milliseconds since the Unix epoch after which the mutation must be refused.
    pub expires_at_ms: u64,
}

/// The operations a mutation can carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Replace the record set of `name`.
    Put {
        /// Target name.
        name: Name,
        /// New records.
        records: Vec<Record>,
        /// TTL in seconds.
        ttl_s: u32,
    },
    /// Remove `name`.
    Delete {
        /// Target name.
        name: Name,
    },
    /// Replace the record set of `name` only if its version is `expected_version`
    /// (0 means: only if the name does not exist).
    Cas {
        /// Target name.
        name: Name,
        /// Version the writer last saw; 0 for "absent".
        expected_version: u64,
        /// New records.
        records: Vec<Record>,
        /// TTL in seconds.
        ttl_s: u32,
    },
    /// Replace the policy of the scope governing `prefix` (TOML form), signed by k of its
    /// n admin keys.
    SetPolicy {
        /// The scope's prefix.
        prefix: Name,
        /// The new policy, TOML.
        policy_toml: String,
    },
    /// Delegate the subtree `prefix` (strictly under the governing scope's prefix) to a new
    /// child scope on `members`, with its first policy; signed by k of the parent's n admin
    /// keys (`docs/design.md`, "Delegation").
    Delegate {
        /// The child's prefix.
        prefix: Name,
        /// Its member anchors and their labels.
        members: Vec<crate::scope::MemberSpec>,
        /// Its first policy, TOML.
        policy_toml: String,
        /// How long resolvers may cache the referral, seconds.
        referral_ttl_s: u32,
    },
    /// An operator's split of the scope governing `at` onto its own members, signed by k of
    /// its n admin keys: the subtree `at` becomes a scope of its own, or (`by_range`) the
    /// scope's range is cut at `at` (brought up to its label right below the scope's prefix)
    /// and the names from there to the scope's end become a scope of their own. The same
    /// execution as an automatic split, without the evidence: the admins decide. (Appended
    /// last: a variant's position is its encoding.)
    Split {
        /// The subtree to split off, or the cut.
        at: Name,
        /// Cut the range at `at` instead of splitting its subtree off.
        by_range: bool,
    },
    /// An operator's merge of a scope split off the scope governing `scope` back into it,
    /// signed by k of that scope's n admin keys: `part` is the first name of the part split
    /// off (a subtree's prefix, or the first name of a range). The same execution as an
    /// automatic merge, without the evidence: the admins decide. (Appended last.)
    Merge {
        /// A name the merging (parent) scope governs: where the mutation is sent.
        scope: Name,
        /// The first name of the part to take back.
        part: Name,
    },
    /// An operator's change of the members of the scope governing `scope`, signed by k of
    /// its n admin keys: the anchors in `add` join (each as a learner first, promoted once it
    /// has caught up; their labels are checked against the scope's `[placement]`), the
    /// anchors in `remove` (peer ids) leave and drop their replica. A move is one of each.
    /// The scope's leader carries it out (`docs/protocol.md`, "Member changes").
    /// (Appended last.)
    Members {
        /// A name the scope governs: where the mutation is sent.
        scope: Name,
        /// The anchors that join, with their labels.
        add: Vec<crate::scope::MemberSpec>,
        /// The peer ids of the anchors that leave.
        remove: Vec<String>,
    },
}

impl Op {
    /// The name this operation addresses (the prefix for policy changes).
    pub fn name(&self) -> &Name {
        match self {
            Op::Put { name, .. } | Op::Delete { name } | Op::Cas { name, .. } => name,
            Op::SetPolicy { prefix, .. } | Op::Delegate { prefix, .. } => prefix,
            Op::Split { at, .. } => at,
            Op::Merge { scope, .. } | Op::Members { scope, .. } => scope,
        }
    }

    /// Short lowercase name of the operation, as used in policy and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Put { .. } => "put",
            Op::Delete { .. } => "delete",
            Op::Cas { .. } => "cas",
            Op::SetPolicy { .. } => "set_policy",
            Op::Delegate { .. } => "delegate",
            Op::Split { .. } => "split",
            Op::Merge { .. } => "merge",
            Op::Members { .. } => "members",
        }
    }

    /// Protocol-level checks on the records and TTL.
    pub fn validate(&self) -> Result<(), ProtoError> {
        match self {
            Op::Put { records, ttl_s, .. } | Op::Cas { records, ttl_s, .. } => {
                validate_records(records, *ttl_s)
            }
            Op::Delete { .. } | Op::SetPolicy { .. } | Op::Split { .. } | Op::Merge { .. } => {
                Ok(())
            }
            Op::Delegate {
                prefix,
                members,
                policy_toml,
                referral_ttl_s,
            } => validate_delegate(prefix, members, policy_toml, *referral_ttl_s),
            Op::Members { add, remove, .. } => validate_member_change(add, remove),
        }
    }
}

fn validate_member_change(
    add: &[crate::scope::MemberSpec],
    remove: &[String],
) -> Result<(), ProtoError> {
    use crate::limits::{PEER_ID_BYTES_MAX, SCOPE_MEMBERS_MAX};
    let bad = |reason: String| Err(ProtoError::Malformed { reason });
    if add.is_empty() && remove.is_empty() {
        return bad("a member change adds or removes at least one anchor".into());
    }
    if add.len() > SCOPE_MEMBERS_MAX || remove.len() > SCOPE_MEMBERS_MAX {
        return bad(format!(
            "a member change adds or removes at most {SCOPE_MEMBERS_MAX} anchors each"
        ));
    }
    validate_member_specs(add)?;
    let mut seen = std::collections::BTreeSet::new();
    for peer in remove {
        if peer.is_empty() || peer.len() > PEER_ID_BYTES_MAX {
            return bad(format!("peer id {peer:?} to remove is empty or too long"));
        }
        if !seen.insert(peer) {
            return bad(format!("anchor {peer} is removed twice"));
        }
        if add.iter().any(|m| &m.anchor.peer_id == peer) {
            return bad(format!("anchor {peer} is both added and removed"));
        }
    }
    Ok(())
}

fn validate_delegate(
    prefix: &Name,
    members: &[crate::scope::MemberSpec],
    policy_toml: &str,
    referral_ttl_s: u32,
) -> Result<(), ProtoError> {
    use crate::limits::{POLICY_TOML_BYTES_MAX, SCOPE_MEMBERS_MAX, TTL_S_MAX};
    let bad = |reason: String| Err(ProtoError::Malformed { reason });
    if prefix.depth() == 0 {
        return bad("the root cannot be delegated".into());
    }
    if members.is_empty() || members.len() > SCOPE_MEMBERS_MAX {
        return bad(format!(
            "a delegation names {} member anchors; it needs 1..={SCOPE_MEMBERS_MAX}",
            members.len()
        ));
    }
    validate_member_specs(members)?;
    if policy_toml.len() > POLICY_TOML_BYTES_MAX {
        return bad(format!(
            "the child policy is {} bytes; at most {POLICY_TOML_BYTES_MAX}",
            policy_toml.len()
        ));
    }
    if referral_ttl_s == 0 || referral_ttl_s > TTL_S_MAX {
        return bad(format!(
            "referral_ttl_s is {referral_ttl_s}; it must be 1..={TTL_S_MAX}"
        ));
    }
    Ok(())
}

/// Each member named once, with a bounded peer id, addresses and labels.
fn validate_member_specs(members: &[crate::scope::MemberSpec]) -> Result<(), ProtoError> {
    use crate::limits::{
        ADDR_BYTES_MAX, ANCHOR_ADDRS_MAX, LABELS_MAX, LABEL_TEXT_BYTES_MAX, PEER_ID_BYTES_MAX,
    };
    let bad = |reason: String| Err(ProtoError::Malformed { reason });
    let mut seen = std::collections::BTreeSet::new();
    for m in members {
        let peer = &m.anchor.peer_id;
        if peer.is_empty() || peer.len() > PEER_ID_BYTES_MAX {
            return bad(format!("member peer id {peer:?} is empty or too long"));
        }
        if !seen.insert(peer.clone()) {
            return bad(format!("member {peer} is named twice"));
        }
        if m.anchor.addrs.len() > ANCHOR_ADDRS_MAX
            || m.anchor.addrs.iter().any(|a| a.len() > ADDR_BYTES_MAX)
        {
            return bad(format!(
                "member {peer}: at most {ANCHOR_ADDRS_MAX} addresses of {ADDR_BYTES_MAX} bytes"
            ));
        }
        if m.labels.len() > LABELS_MAX
            || m.labels
                .iter()
                .any(|(k, v)| k.len() > LABEL_TEXT_BYTES_MAX || v.len() > LABEL_TEXT_BYTES_MAX)
        {
            return bad(format!(
                "member {peer}: at most {LABELS_MAX} labels of {LABEL_TEXT_BYTES_MAX} bytes"
            ));
        }
    }
    Ok(())
}

/// One signature over a mutation body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The signer's ed25519 public key.
    pub key: [u8; 32],
    /// 64 signature bytes.
    pub sig: Vec<u8>,
}

/// An encoded mutation and its signatures, as sent on the wire and stored in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMutation {
    /// `codec::encode(&Mutation)`.
    pub body: Vec<u8>,
    /// One signature per signer (the first is the writer).
    pub signatures: Vec<Signature>,
}

impl SignedMutation {
    /// Encodes and signs a mutation with one key.
    pub fn sign(m: &Mutation, key: &ed25519_dalek::SigningKey) -> Result<Self, ProtoError> {
        let body = codec::encode(m)?;
        if body.len() > MUTATION_BYTES_MAX {
            return Err(ProtoError::FrameTooLarge {
                len: body.len(),
                max: MUTATION_BYTES_MAX,
            });
        }
        let mut out = SignedMutation {
            body,
            signatures: Vec::new(),
        };
        out.add_signature(key);
        Ok(out)
    }

    /// Adds another signer's signature (for k-of-n policy changes).
    pub fn add_signature(&mut self, key: &ed25519_dalek::SigningKey) {
        let sig = key.sign(&signed_bytes(&self.body));
        self.signatures.push(Signature {
            key: key.verifying_key().to_bytes(),
            sig: sig.to_bytes().to_vec(),
        });
    }

    /// Verifies every signature, then decodes and validates the body.
    ///
    /// Signatures are checked under the ZIP-215 rules (`ed25519-zebra`), which accept every
    /// signature ed25519-dalek makes and under which [`signatures_hold_together`] accepts a
    /// batch exactly when each of its signatures is accepted here.
    pub fn verify(&self) -> Result<Mutation, ProtoError> {
        self.check_shape()?;
        let msg = signed_bytes(&self.body);
        for s in &self.signatures {
            let bad_sig = || ProtoError::BadSignature {
                key: hex::encode(s.key),
            };
            let key = ed25519_zebra::VerificationKey::try_from(s.key).map_err(|e| {
                ProtoError::BadKey {
                    reason: e.to_string(),
                }
            })?;
            let sig = ed25519_zebra::Signature::from_slice(&s.sig).map_err(|_| bad_sig())?;
            key.verify(&sig, &msg).map_err(|_| bad_sig())?;
        }
        self.decode_body()
    }

    /// Everything [`SignedMutation::verify`] checks except the signatures themselves: only
    /// for a mutation whose signatures this very process verified before (the same bytes,
    /// matched by [`SignedMutation::digest`]).
    pub fn decode_verified_earlier(&self) -> Result<Mutation, ProtoError> {
        self.check_shape()?;
        self.decode_body()
    }

    /// A digest of the body and every signature: equal digests mean identical bytes.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&(self.body.len() as u64).to_le_bytes());
        h.update(&self.body);
        for s in &self.signatures {
            h.update(&s.key);
            h.update(&(s.sig.len() as u64).to_le_bytes());
            h.update(&s.sig);
        }
        *h.finalize().as_bytes()
    }

    fn decode_body(&self) -> Result<Mutation, ProtoError> {
        let m: Mutation = codec::decode(&self.body, MUTATION_BYTES_MAX)?;
        m.op.validate()?;
        Ok(m)
    }

    fn check_shape(&self) -> Result<(), ProtoError> {
        if self.body.len() > MUTATION_BYTES_MAX {
            return Err(ProtoError::FrameTooLarge {
                len: self.body.len(),
                max: MUTATION_BYTES_MAX,
            });
        }
        if self.signatures.is_empty() || self.signatures.len() > SIGNATURES_MAX {
            return Err(ProtoError::Malformed {
                reason: format!(
                    "{} signatures; a mutation needs 1..={SIGNATURES_MAX}",
                    self.signatures.len()
                ),
            });
        }
        Ok(())
    }

    /// The writer's key (first signer).
    pub fn writer(&self) -> [u8; 32] {
        self.signatures.first().map(|s| s.key).unwrap_or([0; 32])
    }

    /// Distinct signer keys.
    pub fn signers(&self) -> Vec<[u8; 32]> {
        let mut keys: Vec<[u8; 32]> = self.signatures.iter().map(|s| s.key).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

/// True when every signature of every mutation in `batch` holds, checked as one batch
/// (about half the work of checking them one by one for batches of tens). False when any
/// does not hold, or one is malformed: check them one by one then to learn which. `rng`
/// makes the batch's random weights; it must be unpredictable to whoever made the
/// signatures.
pub fn signatures_hold_together<R>(batch: &[&SignedMutation], rng: R) -> bool
where
    R: rand_core::RngCore + rand_core::CryptoRng,
{
    let mut verifier = ed25519_zebra::batch::Verifier::new();
    for m in batch {
        if m.check_shape().is_err() {
            return false;
        }
        let msg = signed_bytes(&m.body);
        for s in &m.signatures {
            let Ok(sig) = ed25519_zebra::Signature::from_slice(&s.sig) else {
                return false;
            };
            verifier.queue((ed25519_zebra::VerificationKeyBytes::from(s.key), sig, &msg));
        }
    }
    verifier.verify(rng).is_ok()
}

fn signed_bytes(body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(SIGNATURE_DOMAIN.len() + body.len());
    msg.extend_from_slice(SIGNATURE_DOMAIN);
    msg.extend_from_slice(body);
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put() -> Mutation {
        Mutation {
            op: Op::Put {
                name: Name::parse("/a").unwrap(),
                records: vec![Record::Text("hi".into())],
                ttl_s: 30,
            },
            nonce: 1,
            expires_at_ms: 10,
        }
    }

    #[test]
    fn tampered_body_or_signature_fails() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let signed = SignedMutation::sign(&put(), &key).unwrap();
        assert_eq!(signed.verify().unwrap(), put());
        let mut bad = signed.clone();
        let last = bad.body.len() - 1;
        bad.body[last] ^= 1;
        assert!(matches!(bad.verify(), Err(ProtoError::BadSignature { .. })));
        let mut bad = signed.clone();
        bad.signatures[0].sig[0] ^= 1;
        assert!(matches!(bad.verify(), Err(ProtoError::BadSignature { .. })));
        let mut bad = signed;
        bad.signatures.clear();
        assert!(bad.verify().is_err());
    }

    #[test]
    fn a_batch_holds_exactly_when_every_signature_does() {
        let keys: Vec<_> = (1..=4u8)
            .map(|i| ed25519_dalek::SigningKey::from_bytes(&[i; 32]))
            .collect();
        let mut all: Vec<SignedMutation> = keys
            .iter()
            .map(|k| SignedMutation::sign(&put(), k).unwrap())
            .collect();
        // A second signer on one of them.
        let extra = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let sig = ed25519_dalek::Signer::sign(&extra, &signed_bytes(&all[1].body));
        all[1].signatures.push(Signature {
            key: extra.verifying_key().to_bytes(),
            sig: sig.to_bytes().to_vec(),
        });
        let refs: Vec<&SignedMutation> = all.iter().collect();
        assert!(all.iter().all(|m| m.verify().is_ok()));
        assert!(signatures_hold_together(&refs, rand::rngs::OsRng));
        for i in 0..all.len() {
            let mut bad = all.clone();
            let last = bad[i].signatures.len() - 1;
            bad[i].signatures[last].sig[7] ^= 1;
            assert!(bad[i].verify().is_err());
            let refs: Vec<&SignedMutation> = bad.iter().collect();
            assert!(!signatures_hold_together(&refs, rand::rngs::OsRng), "{i}");
        }
        let mut short = all.clone();
        short[0].signatures[0].sig.pop();
        let refs: Vec<&SignedMutation> = short.iter().collect();
        assert!(!signatures_hold_together(&refs, rand::rngs::OsRng));
    }

    #[test]
    fn invalid_records_fail_verification() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let mut m = put();
        m.op = Op::Put {
            name: Name::root(),
            records: vec![],
            ttl_s: 1,
        };
        let signed = SignedMutation::sign(&m, &key).unwrap();
        assert!(matches!(
            signed.verify(),
            Err(ProtoError::InvalidRecords { .. })
        ));
    }
}
