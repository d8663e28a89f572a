//! Signatures this anchor already checked, so applying a mutation it verified on arrival
//! does not verify the same bytes again.
//!
//! Only the leader's handler inserts (it verified the mutation before proposing it); every
//! other replica, and the leader after a restart, verifies at apply as usual. Verification is
//! deterministic, so skipping a repeat cannot change an outcome. Bounded: the oldest entries
//! are forgotten first.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

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
}
