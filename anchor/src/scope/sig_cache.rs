//! Signatures this anchor already checked, so applying a mutation it verified on arrival
//! does not verify the same bytes again; the others of one Raft entry are checked as one
//! batch ([`SigCache::verify_all`]).
//!
//! Only the leader's handler inserts (it verified the mutation before proposing it); every
//! other replica, and the leader after a restart, verifies at apply as usual. Verification is
//! deterministic, so skipping a repeat cannot change an outcome. Bounded: the oldest entries
//! are forgotten first.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use proto::mutation::signatures_hold_together;
use proto::{Mutation, SignedMutation, WireError};

/// Digests remembered at most.
pub const VERIFIED_ENTRIES_MAX: usize = 65_536;

/// A bounded set of digests of mutations whose signatures verified.
#[derive(Debug, Default)]
pub struct SigCache {
    inner: Mutex<Digests>,
}

/// The set, and the order of insertion for eviction.
type Digests = (HashSet<[u8; 32]>, VecDeque<[u8; 32]>);

impl SigCache {
    /// Remembers that `signed` verified.
    pub fn insert(&self, signed: &SignedMutation) {
        let digest = signed.digest();
        if let Ok(mut g) = self.inner.lock() {
            let (set, order) = &mut *g;
            if set.insert(digest) {
                order.push_back(digest);
            }
            while order.len() > VERIFIED_ENTRIES_MAX {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    fn take(&self, digest: &[u8; 32]) -> bool {
        self.inner
            .lock()
            .map(|mut g| g.0.remove(digest))
            .unwrap_or(false)
    }

    /// Verifies `signed`, skipping the signature check if this process verified the same
    /// bytes before.
    pub fn verify(&self, signed: &SignedMutation) -> Result<Mutation, WireError> {
        if self.take(&signed.digest()) {
            return signed
                .decode_verified_earlier()
                .map_err(|e| WireError::Invalid {
                    reason: e.to_string(),
                });
        }
        super::decide::verify(signed)
    }

    /// Verifies every mutation of one entry, in order: those this process verified before
    /// are skipped, the rest are checked as one batch ([`proto::mutation::signatures_hold_together`])
    /// and, if the batch does not hold, one by one, so each gets its own answer. Under the
    /// ZIP-215 rules a batch holds exactly when each of its signatures does, so the answers
    /// are those of [`SigCache::verify`] on each.
    pub fn verify_all(&self, entry: &[SignedMutation]) -> Vec<Result<Mutation, WireError>> {
        let seen: Vec<bool> = entry.iter().map(|s| self.take(&s.digest())).collect();
        let fresh: Vec<&SignedMutation> = entry
            .iter()
            .zip(&seen)
            .filter(|(_, seen)| !**seen)
            .map(|(s, _)| s)
            .collect();
        let batch_holds = fresh.len() >= 2 && signatures_hold_together(&fresh, rand::rngs::OsRng);
        entry
            .iter()
            .zip(seen)
            .map(|(signed, seen)| {
                if seen || batch_holds {
                    signed
                        .decode_verified_earlier()
                        .map_err(|e| WireError::Invalid {
                            reason: e.to_string(),
                        })
                } else {
                    super::decide::verify(signed)
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::{Name, Op, Record};

    fn signed(nonce: u64) -> SignedMutation {
        let key = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let op = Op::Put {
            name: Name::parse("/a").unwrap(),
            records: vec![Record::Text("t".into())],
            ttl_s: 1,
        };
        SignedMutation::sign(
            &Mutation {
                op,
                nonce,
                expires_at_ms: 9,
            },
            &key,
        )
        .unwrap()
    }

    #[test]
    fn a_cached_entry_is_used_once_and_tampering_is_still_caught() {
        let cache = SigCache::default();
        let m = signed(1);
        cache.insert(&m);
        assert!(cache.take(&m.digest()));
        assert!(!cache.take(&m.digest()));
        cache.insert(&m);
        let mut forged = m.clone();
        forged.signatures[0].sig[0] ^= 1;
        assert!(matches!(
            cache.verify(&forged),
            Err(WireError::BadSignature { .. })
        ));
        assert!(cache.verify(&m).is_ok());
    }

    #[test]
    fn an_entry_is_checked_as_a_batch_and_one_bad_signature_is_named() {
        let cache = SigCache::default();
        let good: Vec<SignedMutation> = (1..=5).map(signed).collect();
        assert!(cache.verify_all(&good).iter().all(Result::is_ok));
        // One forged among them: the batch fails and each gets its own answer.
        let mut entry = good.clone();
        entry[2].signatures[0].sig[5] ^= 1;
        let out = cache.verify_all(&entry);
        for (i, r) in out.iter().enumerate() {
            if i == 2 {
                assert!(matches!(r, Err(WireError::BadSignature { .. })), "{r:?}");
            } else {
                assert!(r.is_ok(), "{i}: {r:?}");
            }
        }
        // Answers are those of one-by-one verification, cached or not.
        cache.insert(&entry[0]);
        let one_by_one: Vec<bool> = entry.iter().map(|m| cache.verify(m).is_ok()).collect();
        cache.insert(&entry[0]);
        let batched: Vec<bool> = cache.verify_all(&entry).iter().map(Result::is_ok).collect();
        assert_eq!(batched, one_by_one);
        // A malformed one (no signature) fails alone too.
        let mut bare = good.clone();
        bare[1].signatures.clear();
        let out = cache.verify_all(&bare);
        assert!(out[1].is_err() && out[0].is_ok() && out[4].is_ok());
    }
}
