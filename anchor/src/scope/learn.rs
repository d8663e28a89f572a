//! Learning a range a delegated child split off: the proof check, and the refinement of a
//! delegation by the ranges learned under it.
//!
//! A scope `/` delegates `/users` to the scope `L`; `L` splits `/users [/users/m, -)` off to
//! the scope `R` on its own members. `/` keeps referring every `/users/...` name to `L`, which
//! refers names from `/users/m` on to `R`: one extra hop for a cold resolver. To save it, `/`
//! learns the range: `L`'s leader collects the signed resolve answers of `L`'s members that
//! refer `/users/m` to `R` and hands them to `/`'s leader, which puts them in its log
//! (`ScopeCommand::LearnRange`); every member of `/` runs [`check_learned`] at apply against
//! its own delegation to `L`, and stores the range as a delegation in state
//! [`DelegationState::Learned`] keyed by the range's first name.
//!
//! No single anchor and no non-member can make a scope learn a range: [`check_learned`]
//! needs valid signatures of a strict majority of distinct members of the delegation the
//! range refines, each over an answer of `L` (or of a range already learned under it) that
//! refers the range's first name to exactly that referral. A range of `R` split off again is
//! learned the same way (the answers then come from `R`, already learned). Pure functions.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;

use libp2p::identity::PublicKey;
use proto::limits::{CLIENT_FRAME_BYTES_MAX, DELEGATIONS_MAX, SCOPE_MEMBERS_MAX};
use proto::msg::{Answer, SignedAnswer};
use proto::{Delegation, DelegationState, MemberSpec, Name, Referral, ScopeId};

/// At most this many ranges are learned under one delegation; past it a name in a further
/// range takes the extra hop through the ranges already learned.
pub const LEARNED_PER_DELEGATION_MAX: usize = 64;

/// Why a learned range is refused (each has a metric label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LearnRefusal {
    /// The referral is not a well-formed range of a prefix.
    NotARange(String),
    /// The scope holds no active delegation of the referral's prefix.
    NoDelegation(Name),
    /// The range is already stored, or another delegation holds its first name.
    Conflict(String),
    /// Too many ranges learned under the delegation, or delegations in the scope.
    TooMany,
    /// One proof is not a valid signed answer of a member vouching for this referral.
    BadProof(String),
    /// Fewer than a strict majority of the delegation's members vouched.
    Minority {
        /// Distinct members whose proofs are valid.
        vouched: usize,
        /// The delegation's members.
        members: usize,
    },
}

impl LearnRefusal {
    /// Label for `anchorage_ranges_learned_total{outcome}`.
    pub fn label(&self) -> &'static str {
        match self {
            LearnRefusal::NotARange(_) => "not_a_range",
            LearnRefusal::NoDelegation(_) => "no_delegation",
            LearnRefusal::Conflict(_) => "conflict",
            LearnRefusal::TooMany => "too_many",
            LearnRefusal::BadProof(_) => "bad_proof",
            LearnRefusal::Minority { .. } => "minority",
        }
    }
}

impl fmt::Display for LearnRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LearnRefusal::NotARange(why) => write!(f, "not a range referral: {why}"),
            LearnRefusal::NoDelegation(p) => write!(f, "no active delegation of {p} here"),
            LearnRefusal::Conflict(why) => f.write_str(why),
            LearnRefusal::TooMany => write!(
                f,
                "{LEARNED_PER_DELEGATION_MAX} ranges are learned under this delegation already"
            ),
            LearnRefusal::BadProof(why) => write!(f, "bad proof: {why}"),
            LearnRefusal::Minority { vouched, members } => write!(
                f,
                "{vouched} of the delegation's {members} members vouched; a majority must"
            ),
        }
    }
}

/// The live delegation whose child governs the subtree of `prefix` whole: the one a range
/// of `prefix` refines.
fn base_of<'a>(
    delegations: &'a BTreeMap<Name, Delegation>,
    prefix: &Name,
) -> Option<&'a Delegation> {
    delegations
        .get(prefix)
        .filter(|d| d.state == DelegationState::Active && !d.referral.range.is_bounded())
}

/// The ranges learned under the delegation to `base`, by first name.
pub(super) fn learned_under<'a>(
    delegations: &'a BTreeMap<Name, Delegation>,
    base: &'a ScopeId,
) -> impl Iterator<Item = &'a Delegation> + 'a {
    delegations
        .values()
        .filter(move |d| d.state == DelegationState::Learned { base: *base })
}

/// Checks a range to learn against the scope's `delegations` (the proof check every member
/// runs at apply, and the leader before proposing). On success, the delegation to store at
/// `referral.first()`, made at log `index`; `Ok(None)` when exactly this range is stored
/// already.
pub fn check_learned(
    delegations: &BTreeMap<Name, Delegation>,
    referral: &Referral,
    proofs: &[SignedAnswer],
    index: u64,
) -> Result<Option<Delegation>, LearnRefusal> {
    let prefix = &referral.prefix;
    let Some(first) = referral.range.start.as_ref() else {
        return Err(LearnRefusal::NotARange("it has no range start".into()));
    };
    if !referral.range.is_valid_for(prefix) {
        return Err(LearnRefusal::NotARange(format!(
            "the range {} is malformed for {prefix}",
            referral.range
        )));
    }
    if referral.members.is_empty() || referral.members.len() > SCOPE_MEMBERS_MAX {
        return Err(LearnRefusal::NotARange(format!(
            "{} members",
            referral.members.len()
        )));
    }
    let base =
        base_of(delegations, prefix).ok_or_else(|| LearnRefusal::NoDelegation(prefix.clone()))?;
    let base_id = base.referral.scope;
    if referral.scope == base_id {
        return Err(LearnRefusal::NotARange(
            "it names the delegated scope itself".into(),
        ));
    }
    match delegations.get(first) {
        Some(d) if d.state == (DelegationState::Learned { base: base_id }) => {
            if d.referral == *referral {
                return Ok(None);
            }
        }
        Some(d)
            if d.state != DelegationState::Aborted
                && !matches!(d.state, DelegationState::Learned { .. }) =>
        {
            return Err(LearnRefusal::Conflict(format!(
                "{first} is held by the delegation to {}",
                d.referral.scope
            )));
        }
        _ => {
            let learned = learned_under(delegations, &base_id).count();
            if learned >= LEARNED_PER_DELEGATION_MAX || delegations.len() >= DELEGATIONS_MAX {
                return Err(LearnRefusal::TooMany);
            }
        }
    }
    // Who may vouch: the members of the delegation; which scopes may say so: the delegated
    // scope and the ranges learned under it.
    let askable: Vec<ScopeId> = std::iter::once(base_id)
        .chain(learned_under(delegations, &base_id).map(|d| d.referral.scope))
        .collect();
    majority(base, proofs, |p| vouches(p, first, referral, &askable))?;
    Ok(Some(Delegation {
        referral: referral.clone(),
        members: referral
            .members
            .iter()
            .map(|a| MemberSpec {
                anchor: a.clone(),
                labels: BTreeMap::new(),
            })
            .collect(),
        policy_toml: String::new(),
        index,
        state: DelegationState::Learned { base: base_id },
    }))
}

/// The signer (base58 peer id) of `proof` if it is a valid signed answer of one of the
/// `askable` scopes referring `first` to exactly `referral`.
fn vouches(
    proof: &SignedAnswer,
    first: &Name,
    referral: &Referral,
    askable: &[ScopeId],
) -> Result<String, String> {
    let (signer, answer) = signed_answer(proof)?;
    match answer {
        Answer::Referral {
            scope,
            name,
            referral: said,
        } if askable.contains(&scope) && name == *first && said == *referral => Ok(signer),
        other => Err(format!(
            "{signer} answered {} about {} from scope {}, not this referral from the delegated scope",
            match other {
                Answer::Found { .. } => "found",
                Answer::NotFound { .. } => "not found",
                Answer::Referral { .. } => "another referral",
                Answer::Members { .. } => "its members",
            },
            other.name(),
            other.scope()
        )),
    }
}

/// Checks that `proofs` come from a strict majority of distinct members of the delegation
/// `base`, each accepted by `check` (which returns its signer).
pub(super) fn majority(
    base: &Delegation,
    proofs: &[SignedAnswer],
    check: impl Fn(&SignedAnswer) -> Result<String, String>,
) -> Result<(), LearnRefusal> {
    let members = &base.referral.members;
    if proofs.len() > members.len() {
        return Err(LearnRefusal::BadProof(format!(
            "{} proofs for {} members",
            proofs.len(),
            members.len()
        )));
    }
    let mut vouched: Vec<String> = Vec::new();
    for p in proofs {
        let signer = check(p).map_err(LearnRefusal::BadProof)?;
        if !members.iter().any(|m| m.peer_id == signer) {
            return Err(LearnRefusal::BadProof(format!(
                "{signer} is not a member of the delegation to {}",
                base.referral.scope
            )));
        }
        if !vouched.contains(&signer) {
            vouched.push(signer);
        }
    }
    if vouched.len() * 2 <= members.len() {
        return Err(LearnRefusal::Minority {
            vouched: vouched.len(),
            members: members.len(),
        });
    }
    Ok(())
}

/// The signer (base58 peer id) of `proof` and its answer, once the signature verifies.
pub(super) fn signed_answer(proof: &SignedAnswer) -> Result<(String, Answer), String> {
    let key = PublicKey::try_decode_protobuf(&proof.public_key)
        .map_err(|e| format!("its public key does not decode: {e}"))?;
    let signer = key.to_peer_id().to_base58();
    if !key.verify(&Answer::signing_bytes(&proof.body), &proof.signature) {
        return Err(format!("the signature of {signer} does not verify"));
    }
    let answer: Answer = proto::codec::decode(&proof.body, CLIENT_FRAME_BYTES_MAX)
        .map_err(|e| format!("the answer of {signer} does not decode: {e}"))?;
    Ok((signer, answer))
}

/// The range learned under `base` (a live subtree delegation of `prefix`) that holds `name`:
/// the one with the latest first name at or before `name` (ranges are only ever cut further,
/// so a later start is a nearer scope) whose range holds it.
pub fn refine<'a>(
    delegations: &'a BTreeMap<Name, Delegation>,
    base: &'a Delegation,
    name: &Name,
) -> Option<&'a Delegation> {
    let prefix = &base.referral.prefix;
    if !base.state.refers() || name == prefix {
        return None;
    }
    let learned = DelegationState::Learned {
        base: base.referral.scope,
    };
    delegations
        .range::<Name, _>((Bound::Excluded(prefix), Bound::Included(name)))
        .rev()
        .map(|(_, d)| d)
        .find(|d| d.state == learned && d.referral.prefix == *prefix && d.referral.covers(name))
}

#[cfg(test)]
#[path = "learn_tests.rs"]
pub(super) mod tests;
