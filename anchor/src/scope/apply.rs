//! The pure decision for one mutation: signature, expiry, replay, policy, compare-and-set.
//!
//! `decide` is a function of (state as seen through [`ScopeRead`], the signed mutation, the
//! time carried by the log entry). Every member computes the same result at the same index.

use policy::{Decision, Policy};
use proto::limits::MUTATION_VALIDITY_MS_MAX;
use proto::msg::WireError;
use proto::{Mutation, Name, Op, RecordSet, SignedMutation};

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
    if !name.is_under(state.prefix()) {
        return Err(WireError::NoScope { name: name.clone() });
    }
    let current = state.get(name);
    let request = policy::Request::new(&m.op, state.prefix(), state.names(), current.is_some());
    if let Decision::Deny(reason) = policy::evaluate(policy, &request, &signed.signers(), now_ms) {
        return Err(WireError::Denied {
            reason: reason.to_string(),
        });
    }
    let effect = effect_of(m.op.clone(), current.as_ref(), writer, index)?;
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

fn effect_of(
    op: Op,
    current: Option<&RecordSet>,
    writer: [u8; 32],
    index: u64,
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
        Op::Delegate { .. } => Err(WireError::Refused {
            reason: "delegation is not served yet".into(),
        }),
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
    }

    fn mem() -> Mem {
        Mem {
            prefix: Name::root(),
            policy: Some(Policy::development(None)),
            records: BTreeMap::new(),
            nonces: BTreeSet::new(),
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
}
