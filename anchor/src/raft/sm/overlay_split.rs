//! Splits in the [`Overlay`]: a scope's own split entry (checked with `justify`), an
//! operator's admin-signed split, and what both do at apply: a Frozen delegation of a
//! subtree or of a range of the scope's prefix to the scope's own members.

use std::collections::BTreeMap;

use openraft::StorageError;
use proto::split::{SplitEvidence, SplitPlan};
use proto::{Delegation, DelegationState, KeyRange, MemberSpec, Name, Referral, ScopeId};

use super::{Overlay, SPLIT_REFERRAL_TTL_S};
use crate::raft::sm::keys::Meta;
use crate::raft::NodeId;
use crate::scope::decide::delegation_over;
use crate::scope::split::{justify, Held, ScopeBounds};

impl Overlay<'_> {
    /// A split entry at `index`: if [`justify`] holds at the carried `proposed_at_ms`, the
    /// child prefix (subtree split) or the range from the cut to the scope's end (range
    /// split) becomes a Frozen delegation to this scope's own members (no admin-signed proof
    /// is stored: that is how a split is told from an operator's delegation) and the split
    /// time is kept. `Ok(Err(why))` when the entry is a no-op.
    pub(in crate::raft::sm) fn apply_split(
        &mut self,
        evidence: &SplitEvidence,
        proposed_at_ms: u64,
        index: u64,
    ) -> Result<Result<ScopeId, String>, StorageError<NodeId>> {
        let Some(policy) = self.view.policy.as_ref() else {
            return Ok(Err("the scope has no policy yet".into()));
        };
        if self.view.retired.is_some() {
            return Ok(Err("the scope retired to merge into its parent".into()));
        }
        if !self.view.active {
            return Ok(Err("the scope is not active yet".into()));
        }
        let bounds = self.view.bounds();
        let held = Held {
            names: self.view.names,
            bytes: None,
        };
        let last = self.view.last_split_ms;
        if let Err(refusal) = justify(evidence, &bounds, held, policy, proposed_at_ms, last) {
            return Ok(Err(refusal.to_string()));
        }
        let (prefix, range) = match split_region(&evidence.plan, &bounds) {
            Ok(region) => region,
            Err(why) => return Ok(Err(why)),
        };
        self.split_off(prefix, range, index, proposed_at_ms)
    }

    /// The part an operator's split (`Op::Split`) of `at` moves out of this scope, or why it
    /// cannot: the same checks as at apply, for the leader's and apply's decision.
    pub(in crate::raft::sm) fn operator_split_region(
        &self,
        at: &Name,
        by_range: bool,
    ) -> Result<(Name, KeyRange), String> {
        if !self.view.active {
            return Err("the scope is not active yet".into());
        }
        if self.view.retired.is_some() {
            return Err("the scope retired to merge into its parent".into());
        }
        let bounds = self.view.bounds();
        let region = if by_range {
            let start = KeyRange::boundary(&bounds.prefix, at)
                .ok_or_else(|| format!("the cut {at} is not below the prefix {}", bounds.prefix))?;
            range_from(start, &bounds)?
        } else {
            if !bounds.contains(at) || at.depth() <= bounds.prefix.depth() {
                return Err(format!(
                    "{at} is not a subtree inside this scope's names ({} {})",
                    bounds.prefix,
                    KeyRange {
                        start: bounds.start.clone(),
                        end: bounds.end.clone()
                    }
                ));
            }
            (at.clone(), KeyRange::all())
        };
        self.check_region(&region.0, &region.1)?;
        Ok(region)
    }

    /// Why the part (`prefix`, `range`) cannot be split off now, if it cannot.
    fn check_region(&self, prefix: &Name, range: &KeyRange) -> Result<(), String> {
        if self.view.member_change.is_some() {
            return Err("a member change is in flight".into());
        }
        let first = range.start.clone().unwrap_or_else(|| prefix.clone());
        if let Some(d) = delegation_over(&self.view.delegations, &first) {
            return Err(format!(
                "{first} is already delegated ({} {})",
                d.referral.prefix, d.referral.range
            ));
        }
        let live = |d: &&Delegation| d.state != DelegationState::Aborted;
        let nested = self.view.delegations.values().filter(live).any(|d| {
            range.covers(prefix, d.referral.first())
                || matches!(
                    d.state,
                    DelegationState::Frozen | DelegationState::Merging { .. }
                )
        });
        if nested {
            return Err(format!(
                "{prefix} {range} holds a delegated scope, or another delegation is in flight"
            ));
        }
        if self.view.delegations.len() >= proto::limits::DELEGATIONS_MAX {
            return Err("the scope holds too many delegations".into());
        }
        Ok(())
    }

    /// Splits (`prefix`, `range`) off onto this scope's own members at `index`: a Frozen
    /// delegation with no proof, and `at_ms` kept as the scope's last split.
    /// `Ok(Err(why))` when it cannot be split off.
    pub(in crate::raft::sm) fn split_off(
        &mut self,
        prefix: Name,
        range: KeyRange,
        index: u64,
        at_ms: u64,
    ) -> Result<Result<ScopeId, String>, StorageError<NodeId>> {
        let (Some(policy_toml), Some(descriptor)) =
            (self.view.policy_toml.clone(), self.view.descriptor.clone())
        else {
            return Ok(Err("the scope has no policy yet".into()));
        };
        if let Err(why) = self.check_region(&prefix, &range) {
            return Ok(Err(why));
        }
        let first = range.start.clone().unwrap_or_else(|| prefix.clone());
        let child = ScopeId::child(&self.scope, &first, index);
        let d = Delegation {
            referral: Referral {
                scope: child,
                prefix,
                epoch: 1,
                members: descriptor.members.clone(),
                ttl_s: SPLIT_REFERRAL_TTL_S,
                range,
            },
            members: descriptor
                .members
                .iter()
                .map(|a| MemberSpec {
                    anchor: a.clone(),
                    labels: BTreeMap::new(),
                })
                .collect(),
            policy_toml,
            index,
            state: DelegationState::Frozen,
        };
        self.view.last_split_ms = Some(at_ms);
        self.put_meta(Meta::LastSplit, &at_ms)?;
        self.store_delegation(d)?;
        Ok(Ok(child))
    }
}

/// What a split plan moves out of a scope with `bounds`: a child label's subtree, or the
/// names from the plan's cut (brought up to the label right below the prefix, so no subtree
/// is cut) to the scope's end. `Err(why)` when the plan cannot be carried out here.
fn split_region(plan: &SplitPlan, bounds: &ScopeBounds) -> Result<(Name, KeyRange), String> {
    match plan {
        SplitPlan::Subtree { label, .. } => {
            let prefix = bounds
                .prefix
                .child(label)
                .map_err(|_| format!("{label:?} is not a valid label"))?;
            if !bounds.contains(&prefix) {
                return Err(format!("{prefix} lies outside the scope's range"));
            }
            Ok((prefix, KeyRange::all()))
        }
        SplitPlan::Range { at, .. } => {
            let start = KeyRange::boundary(&bounds.prefix, at)
                .ok_or_else(|| format!("the cut {at} is not below the prefix {}", bounds.prefix))?;
            range_from(start, bounds)
        }
    }
}

/// The range from `start` to the scope's end, when `start` is a cut inside the scope that
/// leaves something on its left.
fn range_from(start: Name, bounds: &ScopeBounds) -> Result<(Name, KeyRange), String> {
    if !bounds.contains(&start) || bounds.start.as_ref() == Some(&start) {
        return Err(format!(
            "the cut {start} lies outside the scope's names or at its first name"
        ));
    }
    let range = KeyRange {
        start: Some(start),
        end: bounds.end.clone(),
    };
    Ok((bounds.prefix.clone(), range))
}
