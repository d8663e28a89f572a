//! The pure decision for one mutation: signature, expiry, replay, policy, compare-and-set.
//!
//! `decide` is a function of (state as seen through [`ScopeRead`], the signed mutation, the
//! time carried by the log entry). Every member computes the same result at the same index.

use policy::{Decision, Policy};
use proto::limits::{DELEGATIONS_MAX, MUTATION_VALIDITY_MS_MAX};
use proto::msg::WireError;
use proto::{
    Delegation, DelegationState, Mutation, Name, Op, RecordSet, Referral, ScopeId, SignedMutation,
};

/// What a decision reads from the scope's state.
pub trait ScopeRead {
    /// The scope's prefix.
    fn prefix(&self) -> &Name;
    /// The scope's policy, if the genesis entry has been applied.
    fn policy(&self) -> Option<&Policy>;
    /// Names the scope holds now.
    fn names(&self) -> u64;
    /// The record set of `name`.
    fn get(&self, name: &Name) -> Option<RecordSet>;
    /// Whether this writer already used this nonce.
    fn nonce_seen(&self, writer: &[u8; 32], nonce: u64) -> bool;
    /// The scope's id.
    fn scope_id(&self) -> ScopeId;
    /// False while a new child scope waits for its parent's hand-over, and once a split-off
    /// scope has retired to merge back into its parent: writes get `Moving`.
    fn active(&self) -> bool;
    /// The delegations the scope holds (Aborted ones included), by first name.
    fn delegations(&self) -> &std::collections::BTreeMap<Name, Delegation>;
    /// True if `name` is the scope's: under its prefix and inside its range (a scope born
    /// from a range split governs a range of its prefix only).
    fn covers(&self, name: &Name) -> bool {
        name.is_under(self.prefix())
    }
    /// Why an operator's split of `at` (`Op::Split`) cannot be carried out now, if it
    /// cannot; the state machine's own view says.
    fn split_refusal(&self, at: &Name, by_range: bool) -> Option<String> {
        let _ = (at, by_range);
        Some("this state cannot split".into())
    }
    /// Why an operator's merge of the part split off at `part` (`Op::Merge`) cannot be
    /// carried out now, if it cannot; the state machine's own view says.
    fn merge_refusal(&self, part: &Name) -> Option<String> {
        let _ = part;
        Some("this state cannot merge".into())
    }
    /// Why an operator's member change (`Op::Members`) cannot start now, if it cannot; the
    /// state machine's own view says.
    fn members_refusal(&self, add: &[proto::MemberSpec], remove: &[String]) -> Option<String> {
        let _ = (add, remove);
        Some("this state cannot change its members".into())
    }
}

/// The live (not aborted) delegation that governs `name`: a delegated subtree whose prefix
/// is `name` or an ancestor of it (or, nearer, a range its child split off that this scope
/// learned, [`super::learn::refine`]), or a range split off this scope that holds `name`.
/// Delegations are keyed by their first name ([`proto::Referral::first`]).
pub fn delegation_over<'a>(
    delegations: &'a std::collections::BTreeMap<Name, Delegation>,
    name: &Name,
) -> Option<&'a Delegation> {
    // At most one live delegation covers a name: a new one may not contain or lie under
    // another live one, and a range is split off only with no live delegation inside it.
    // Learned ranges only refine the delegation they were learned under.
    let own = |d: &&Delegation| {
        d.state != DelegationState::Aborted && !matches!(d.state, DelegationState::Learned { .. })
    };
    let mut prefix = Some(name.clone());
    while let Some(p) = prefix {
        if let Some(d) = delegations.get(&p).filter(own) {
            if !d.referral.range.is_bounded() {
                return Some(super::learn::refine(delegations, d, name).unwrap_or(d));
            }
        }
        prefix = p.parent();
    }
    // The ranges of one prefix are disjoint: the one holding `name` is the first range met
    // going down from `name` in key order (subtree delegations in between are skipped).
    delegations
        .range(..=name.clone())
        .rev()
        .map(|(_, d)| d)
        .find(|d| d.referral.range.is_bounded() && own(d))
        .filter(|d| d.referral.covers(name))
}

/// Where a name governed by a delegation goes: `Moving` while frozen, `Delegated` once
/// active (and while the child merges back: the child answers until it retires).
pub fn refusal_for_delegated(d: &Delegation, name: &Name) -> WireError {
    match d.state {
        DelegationState::Active
        | DelegationState::Merging { .. }
        | DelegationState::Learned { .. } => WireError::Delegated {
            name: name.clone(),
            referral: Box::new(d.referral.clone()),
        },
        DelegationState::Frozen | DelegationState::Aborted => WireError::Moving {
            prefix: d.referral.prefix.clone(),
        },
    }
}

/// What an accepted mutation does.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Store this record set under the name.
    Put(Name, RecordSet),
    /// Remove the name (a no-op if absent).
    Delete(Name),
    /// Replace the policy.
    SetPolicy(Box<Policy>, String),
    /// Record a new delegation (state Frozen) and the signed mutation that made it (the proof
    /// the parent's leader shows the child's members when it seeds them).
    Delegate(Box<Delegation>, Box<SignedMutation>),
    /// An operator's split onto the scope's own members (`Op::Split`).
    Split {
        /// The subtree, or the cut.
        at: Name,
        /// Cut the range at `at`.
        by_range: bool,
    },
    /// An operator's merge of the part split off at `part` back into this scope
    /// (`Op::Merge`).
    Merge {
        /// The first name of the part.
        part: Name,
    },
    /// An operator's member change (`Op::Members`): it starts; the leader carries it out.
    Members {
        /// The anchors that join.
        add: Vec<proto::MemberSpec>,
        /// The peer ids of the anchors that leave.
        remove: Vec<String>,
    },
}

/// An accepted mutation: the effect, and the replay-protection entry to remember.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    /// The change.
    pub effect: Effect,
    /// Writer key, nonce and expiry to record against replays.
    pub writer: [u8; 32],
    /// The nonce.
    pub nonce: u64,
    /// Its expiry, ms.
    pub expires_at_ms: u64,
}

/// Label for metrics of a refusal.
pub fn refusal_label(e: &WireError) -> &'static str {
    match e {
        WireError::Invalid { .. } => "invalid",
        WireError::BadSignature { .. } => "bad_signature",
        WireError::Denied { .. } => "denied",
        WireError::Conflict { .. } => "conflict",
        WireError::Replayed { .. } => "replayed",
        WireError::Expired { .. } => "expired",
        WireError::NotLeader { .. } => "not_leader",
        WireError::NoScope { .. } => "no_scope",
        WireError::Unavailable { .. } => "unavailable",
        WireError::Moving { .. } => "moving",
        WireError::Delegated { .. } => "delegated",
        _ => "refused",
    }
}

/// Verifies the signatures and decodes the mutation (no state needed).
pub fn verify(signed: &SignedMutation) -> Result<Mutation, WireError> {
    signed.verify().map_err(|e| match e {
        proto::ProtoError::BadSignature { .. } | proto::ProtoError::BadKey { .. } => {
            WireError::BadSignature {
                reason: e.to_string(),
            }
        }
        other => WireError::Invalid {
            reason: other.to_string(),
        },
    })
}

/// Decides what `m` (verified from `signed` by [`verify`]) does to the scope at log index
/// `index`, at time `now_ms`.
pub fn decide(
    state: &impl ScopeRead,
    m: &Mutation,
    signed: &SignedMutation,
    now_ms: u64,
    index: u64,
) -> Result<Accepted, WireError> {
    check_expiry(m, now_ms)?;
    let writer = signed.writer();
    if state.nonce_seen(&writer, m.nonce) {
        return Err(WireError::Replayed { nonce: m.nonce });
    }
    let policy = state.policy().ok_or_else(|| WireError::Unavailable {
        reason: "the scope has no policy yet (its genesis entry is not applied)".into(),
    })?;
    let name = m.op.name();
    if !state.covers(name) {
        return Err(WireError::NoScope { name: name.clone() });
    }
    if !state.active() {
        return Err(WireError::Moving {
            prefix: state.prefix().clone(),
        });
    }
    if let Some(d) = delegation_over(state.delegations(), name) {
        return Err(refusal_for_delegated(d, name));
    }
    if let Op::Delegate { prefix, .. } = &m.op {
        check_new_delegation(state, prefix)?;
    }
    let current = state.get(name);
    let request = policy::Request::new(&m.op, state.prefix(), state.names(), current.is_some());
    if let Decision::Deny(reason) = policy::evaluate(policy, &request, &signed.signers(), now_ms) {
        return Err(WireError::Denied {
            reason: reason.to_string(),
        });
    }
    let refusal = match &m.op {
        Op::Split { at, by_range } => state.split_refusal(at, *by_range),
        Op::Merge { part, .. } => state.merge_refusal(part),
        Op::Members { add, remove, .. } => state.members_refusal(add, remove),
        _ => None,
    };
    if let Some(reason) = refusal {
        return Err(WireError::Refused { reason });
    }
    let effect = effect_of(
        m.op.clone(),
        current.as_ref(),
        writer,
        index,
        &state.scope_id(),
        signed,
    )?;
    Ok(Accepted {
        effect,
        writer,
        nonce: m.nonce,
        expires_at_ms: m.expires_at_ms,
    })
}

fn check_expiry(m: &Mutation, now_ms: u64) -> Result<(), WireError> {
    if m.expires_at_ms < now_ms {
        return Err(WireError::Expired {
            expires_at_ms: m.expires_at_ms,
            reason: format!(
                "it expired {} ms ago; sign it again",
                now_ms - m.expires_at_ms
            ),
        });
    }
    if m.expires_at_ms > now_ms.saturating_add(MUTATION_VALIDITY_MS_MAX) {
        return Err(WireError::Expired {
            expires_at_ms: m.expires_at_ms,
            reason: format!(
                "it expires more than {MUTATION_VALIDITY_MS_MAX} ms from now; check the writer's clock"
            ),
        });
    }
    Ok(())
}

/// A new delegation may not contain a live one, and the scope holds a bounded number.
fn check_new_delegation(state: &impl ScopeRead, prefix: &Name) -> Result<(), WireError> {
    let nested = state
        .delegations()
        .values()
        .find(|d| d.state != DelegationState::Aborted && d.referral.prefix.is_under(prefix));
    if let Some(d) = nested {
        return Err(WireError::Refused {
            reason: format!(
                "{prefix} contains the delegated scope {}; delegate below it or elsewhere",
                d.referral.prefix
            ),
        });
    }
    if state.delegations().len() >= DELEGATIONS_MAX {
        return Err(WireError::Refused {
            reason: format!("this scope already holds {DELEGATIONS_MAX} delegations"),
        });
    }
    Ok(())
}

fn effect_of(
    op: Op,
    current: Option<&RecordSet>,
    writer: [u8; 32],
    index: u64,
    scope: &ScopeId,
    signed: &SignedMutation,
) -> Result<Effect, WireError> {
    let set = |records, ttl_s| RecordSet {
        records,
        ttl_s,
        version: index,
        writer,
    };
    match op {
        Op::Put {
            name,
            records,
            ttl_s,
        } => Ok(Effect::Put(name, set(records, ttl_s))),
        Op::Delete { name } => Ok(Effect::Delete(name)),
        Op::Cas {
            name,
            expected_version,
            records,
            ttl_s,
        } => {
            let current_version = current.map_or(0, |c| c.version);
            if current_version != expected_version {
                return Err(WireError::Conflict {
                    current: current_version,
                });
            }
            Ok(Effect::Put(name, set(records, ttl_s)))
        }
        Op::SetPolicy { policy_toml, .. } => {
            let policy = Policy::from_toml(&policy_toml).map_err(|e| WireError::Invalid {
                reason: e.to_string(),
            })?;
            Ok(Effect::SetPolicy(Box::new(policy), policy_toml))
        }
        Op::Split { at, by_range } => Ok(Effect::Split { at, by_range }),
        Op::Merge { part, .. } => Ok(Effect::Merge { part }),
        Op::Members { add, remove, .. } => Ok(Effect::Members { add, remove }),
        Op::Delegate {
            prefix,
            members,
            policy_toml,
            referral_ttl_s,
        } => {
            let referral = Referral {
                scope: ScopeId::child(scope, &prefix, index),
                prefix,
                epoch: 1,
                members: members.iter().map(|m| m.anchor.clone()).collect(),
                ttl_s: referral_ttl_s,
                range: proto::KeyRange::all(),
            };
            Ok(Effect::Delegate(
                Box::new(Delegation {
                    referral,
                    members,
                    policy_toml,
                    index,
                    state: DelegationState::Frozen,
                }),
                Box::new(signed.clone()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::Record;
    use std::collections::{BTreeMap, BTreeSet};

    struct Mem {
        prefix: Name,
        policy: Option<Policy>,
        records: BTreeMap<Name, RecordSet>,
        nonces: BTreeSet<([u8; 32], u64)>,
        delegations: BTreeMap<Name, Delegation>,
        active: bool,
    }

    impl ScopeRead for Mem {
        fn prefix(&self) -> &Name {
            &self.prefix
        }
        fn policy(&self) -> Option<&Policy> {
            self.policy.as_ref()
        }
        fn names(&self) -> u64 {
            self.records.len() as u64
        }
        fn get(&self, name: &Name) -> Option<RecordSet> {
            self.records.get(name).cloned()
        }
        fn nonce_seen(&self, writer: &[u8; 32], nonce: u64) -> bool {
            self.nonces.contains(&(*writer, nonce))
        }
        fn scope_id(&self) -> ScopeId {
            ScopeId::root()
        }
        fn active(&self) -> bool {
            self.active
        }
        fn delegations(&self) -> &BTreeMap<Name, Delegation> {
            &self.delegations
        }
    }

    fn mem() -> Mem {
        Mem {
            prefix: Name::root(),
            policy: Some(Policy::development(None)),
            records: BTreeMap::new(),
            nonces: BTreeSet::new(),
            delegations: BTreeMap::new(),
            active: true,
        }
    }

    fn key() -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[9; 32])
    }

    fn decide(
        state: &Mem,
        signed: &SignedMutation,
        now_ms: u64,
        index: u64,
    ) -> Result<Accepted, WireError> {
        let m = verify(signed)?;
        super::decide(state, &m, signed, now_ms, index)
    }

    fn signed(op: Op, nonce: u64, expires_at_ms: u64) -> SignedMutation {
        SignedMutation::sign(
            &Mutation {
                op,
                nonce,
                expires_at_ms,
            },
            &key(),
        )
        .unwrap()
    }

    fn put(name: &str) -> Op {
        Op::Put {
            name: Name::parse(name).unwrap(),
            records: vec![Record::Text("x".into())],
            ttl_s: 60,
        }
    }

    #[test]
    fn put_is_accepted_with_version_and_writer() {
        let a = decide(&mem(), &signed(put("/a"), 1, 2_000), 1_000, 7).unwrap();
        match a.effect {
            Effect::Put(n, set) => {
                assert_eq!(n.to_string(), "/a");
                assert_eq!(set.version, 7);
                assert_eq!(set.writer, key().verifying_key().to_bytes());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(a.nonce, 1);
    }

    #[test]
    fn expired_and_far_future_are_refused() {
        let e = decide(&mem(), &signed(put("/a"), 1, 999), 1_000, 1).unwrap_err();
        assert!(matches!(e, WireError::Expired { .. }));
        let far = 1_000 + MUTATION_VALIDITY_MS_MAX + 1;
        let e = decide(&mem(), &signed(put("/a"), 1, far), 1_000, 1).unwrap_err();
        assert!(matches!(e, WireError::Expired { .. }));
    }

    #[test]
    fn replay_is_refused() {
        let mut s = mem();
        s.nonces.insert((key().verifying_key().to_bytes(), 5));
        let e = decide(&s, &signed(put("/a"), 5, 2_000), 1_000, 1).unwrap_err();
        assert_eq!(e, WireError::Replayed { nonce: 5 });
    }

    #[test]
    fn bad_signature_is_refused() {
        let mut m = signed(put("/a"), 1, 2_000);
        m.signatures[0].sig[3] ^= 0xff;
        assert!(matches!(
            decide(&mem(), &m, 1_000, 1),
            Err(WireError::BadSignature { .. })
        ));
    }

    #[test]
    fn no_policy_means_unavailable() {
        let mut s = mem();
        s.policy = None;
        assert!(matches!(
            decide(&s, &signed(put("/a"), 1, 2_000), 1_000, 1),
            Err(WireError::Unavailable { .. })
        ));
    }

    #[test]
    fn name_outside_the_scope_is_refused() {
        let mut s = mem();
        s.prefix = Name::parse("/eu").unwrap();
        assert!(matches!(
            decide(&s, &signed(put("/us/x"), 1, 2_000), 1_000, 1),
            Err(WireError::NoScope { .. })
        ));
    }

    #[test]
    fn cas_checks_the_version() {
        let mut s = mem();
        let cas = |expected| Op::Cas {
            name: Name::parse("/a").unwrap(),
            expected_version: expected,
            records: vec![Record::Text("y".into())],
            ttl_s: 5,
        };
        assert!(decide(&s, &signed(cas(0), 1, 2_000), 1_000, 3).is_ok());
        let set = RecordSet {
            records: vec![],
            ttl_s: 1,
            version: 3,
            writer: [0; 32],
        };
        s.records.insert(Name::parse("/a").unwrap(), set);
        assert_eq!(
            decide(&s, &signed(cas(0), 2, 2_000), 1_000, 4).unwrap_err(),
            WireError::Conflict { current: 3 }
        );
        assert!(decide(&s, &signed(cas(3), 3, 2_000), 1_000, 4).is_ok());
    }

    #[test]
    fn policy_denial_is_reported() {
        let mut s = mem();
        let toml = "[[writers]]\npattern = \"/only/**\"\nops = [\"put\"]\nkeys = [\"*\"]\n";
        s.policy = Some(Policy::from_toml(toml).unwrap());
        assert!(matches!(
            decide(&s, &signed(put("/a"), 1, 2_000), 1_000, 1),
            Err(WireError::Denied { .. })
        ));
        assert!(decide(&s, &signed(put("/only/a"), 1, 2_000), 1_000, 1).is_ok());
    }

    fn delegate_op(prefix: &str, members: usize) -> Op {
        let members = (0..members)
            .map(|i| proto::MemberSpec {
                anchor: proto::AnchorInfo {
                    peer_id: format!("peer{i}"),
                    addrs: vec![],
                },
                labels: BTreeMap::new(),
            })
            .collect();
        Op::Delegate {
            prefix: Name::parse(prefix).unwrap(),
            members,
            policy_toml: "[placement]\nreplicas = 1\n".into(),
            referral_ttl_s: 60,
        }
    }

    fn admin_mem() -> Mem {
        let mut s = mem();
        let admin = policy::PublicKey::from_bytes(&key().verifying_key().to_bytes()).unwrap();
        s.policy = Some(Policy::development(Some(admin)));
        s
    }

    #[test]
    fn delegate_records_a_frozen_delegation_with_a_derived_child_id() {
        let s = admin_mem();
        let a = decide(&s, &signed(delegate_op("/eu", 3), 1, 2_000), 1_000, 42).unwrap();
        let Effect::Delegate(d, _) = a.effect else {
            panic!("not a delegation: {:?}", a.effect)
        };
        assert_eq!(d.state, DelegationState::Frozen);
        assert_eq!(d.index, 42);
        assert_eq!(d.referral.members.len(), 3);
        let eu = Name::parse("/eu").unwrap();
        assert_eq!(d.referral.scope, ScopeId::child(&ScopeId::root(), &eu, 42));
        assert_ne!(d.referral.scope, ScopeId::child(&ScopeId::root(), &eu, 43));
    }

    #[test]
    fn delegate_needs_an_admin_signature() {
        // The development policy without admin keys is frozen: no delegation.
        let e = decide(&mem(), &signed(delegate_op("/eu", 1), 1, 2_000), 1_000, 4).unwrap_err();
        assert!(matches!(e, WireError::Denied { .. }), "{e}");
    }

    fn with_delegation(state: DelegationState) -> Mem {
        let mut s = admin_mem();
        let Effect::Delegate(mut d, _) =
            decide(&s, &signed(delegate_op("/eu", 1), 1, 2_000), 1_000, 9)
                .unwrap()
                .effect
        else {
            panic!("not a delegation")
        };
        d.state = state;
        s.delegations.insert(d.referral.first().clone(), *d);
        s
    }

    #[test]
    fn writes_under_a_frozen_delegation_are_moving_and_under_an_active_one_delegated() {
        let frozen = with_delegation(DelegationState::Frozen);
        let e = decide(&frozen, &signed(put("/eu/a/b"), 2, 2_000), 1_000, 10).unwrap_err();
        assert!(matches!(e, WireError::Moving { ref prefix } if prefix.to_string() == "/eu"));
        assert!(decide(&frozen, &signed(put("/us/a"), 2, 2_000), 1_000, 10).is_ok());

        let active = with_delegation(DelegationState::Active);
        let e = decide(&active, &signed(put("/eu"), 2, 2_000), 1_000, 10).unwrap_err();
        assert!(
            matches!(e, WireError::Delegated { ref referral, .. } if referral.prefix.to_string() == "/eu")
        );

        let aborted = with_delegation(DelegationState::Aborted);
        assert!(decide(&aborted, &signed(put("/eu/a"), 2, 2_000), 1_000, 10).is_ok());
    }

    #[test]
    fn a_delegation_may_not_contain_or_lie_under_a_live_one() {
        let s = with_delegation(DelegationState::Active);
        let e = decide(
            &s,
            &signed(delegate_op("/eu/payments", 1), 2, 2_000),
            1_000,
            10,
        )
        .unwrap_err();
        assert!(matches!(e, WireError::Delegated { .. }), "{e}");
        let mut root_child = with_delegation(DelegationState::Frozen);
        root_child.prefix = Name::root();
        let e = decide(
            &root_child,
            &signed(delegate_op("/", 1), 2, 2_000),
            1_000,
            10,
        );
        assert!(e.is_err());
        let s = with_delegation(DelegationState::Active);
        let mut outer = delegate_op("/eu", 1);
        if let Op::Delegate { prefix, .. } = &mut outer {
            *prefix = Name::parse("/eu").unwrap();
        }
        // Same prefix again: governed by the live delegation.
        assert!(decide(&s, &signed(outer, 3, 2_000), 1_000, 10).is_err());
    }

    #[test]
    fn an_inactive_child_refuses_writes_with_moving() {
        let mut s = mem();
        s.active = false;
        let e = decide(&s, &signed(put("/a"), 1, 2_000), 1_000, 1).unwrap_err();
        assert!(matches!(e, WireError::Moving { .. }));
    }
}
