//! Forgetting a learned range whose scope no longer governs it (it merged back): the proof
//! check. Pure, like [`super::learn`].
//!
//! A scope that learned `/users [/users/m, -)` → `R` keeps referring names from `/users/m`
//! to `R` after `R` merged back into the range before it; a resolver then meets `NoScope`
//! at `R`'s members and walks again through the delegated scope (two requests more). The
//! holder's leader forgets the range once a strict majority of the delegation's members
//! each sign an answer, from the delegated scope or another range learned under it, that
//! answers the range's first name itself (found, or not found): the scope that gives such
//! an answer governs the name, so `R` no longer does. A replayed answer from before the
//! split only makes the holder forget a live range, which costs the same extra hop and
//! nothing else: the walk through the delegated scope is always right.

use std::collections::BTreeMap;

use proto::msg::{Answer, SignedAnswer};
use proto::{Delegation, DelegationState, Name, ScopeId};

use super::learn::{learned_under, majority, signed_answer, LearnRefusal};

/// Checks the proofs that the range learned at `first` is stale, against the scope's
/// `delegations` (the check every member runs at apply, and the leader before proposing).
/// `Ok(true)`: forget it; `Ok(false)`: nothing is learned at `first` (already forgotten).
pub fn check_forget(
    delegations: &BTreeMap<Name, Delegation>,
    first: &Name,
    proofs: &[SignedAnswer],
) -> Result<bool, LearnRefusal> {
    let Some(learned) = delegations.get(first) else {
        return Ok(false);
    };
    let DelegationState::Learned { base: base_id } = learned.state else {
        return Ok(false);
    };
    let stale = learned.referral.scope;
    let Some(base) = delegations
        .values()
        .find(|d| d.referral.scope == base_id && d.state == DelegationState::Active)
    else {
        // The delegation it refined is gone: the range no longer refines anything.
        return Ok(true);
    };
    let askable: Vec<ScopeId> = std::iter::once(base_id)
        .chain(learned_under(delegations, &base_id).map(|d| d.referral.scope))
        .filter(|s| *s != stale)
        .collect();
    majority(base, proofs, |p| {
        let (signer, answer) = signed_answer(p)?;
        let governs = match &answer {
            Answer::Found { scope, name, .. } | Answer::NotFound { scope, name } => {
                name == first && askable.contains(scope)
            }
            Answer::Referral { .. } | Answer::Members { .. } => false,
        };
        if governs {
            Ok(signer)
        } else {
            Err(format!(
                "{signer} did not answer {first} itself from the delegated scope or another learned range"
            ))
        }
    })?;
    Ok(true)
}

#[cfg(test)]
#[path = "forget_tests.rs"]
mod tests;
