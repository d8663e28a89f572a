//! Public keys in policy: [`PublicKey`] (a validated ed25519 key, hex in TOML) and
//! [`KeySet`] (a list of keys, or `*` for any key, as used by writer rules).

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{shorten, PolicyError};

/// An ed25519 public key that decodes to a valid, non-weak curve point.
///
/// Written in TOML as 64 hex digits. It borrows as `[u8; 32]`, so a
/// `BTreeSet<PublicKey>` can be searched with raw signer bytes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    /// Validates raw key bytes: they must be a valid ed25519 point of large order.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<PublicKey, PolicyError> {
        let bad = |reason: &str| PolicyError::BadKey {
            key: hex::encode(bytes),
            reason: reason.to_string(),
        };
        let key = ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map_err(|_| bad("not a valid ed25519 public key (not a curve point)"))?;
        if key.is_weak() {
            return Err(bad(
                "a weak (small-order) ed25519 key; signatures by it prove nothing",
            ));
        }
        Ok(PublicKey(*bytes))
    }

    /// Parses 64 hex digits (either case) and validates the key.
    pub fn from_hex(text: &str) -> Result<PublicKey, PolicyError> {
        let bad = |reason: &str| PolicyError::BadKey {
            key: shorten(text),
            reason: reason.to_string(),
        };
        if text == "*" {
            return Err(bad(
                "`*` (any key) is only allowed as the sole entry of a [[writers]] rule's keys",
            ));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| {
            bad("an ed25519 public key is written as exactly 64 hex digits (32 bytes)")
        })?;
        PublicKey::from_bytes(&bytes)
    }

    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl Borrow<[u8; 32]> for PublicKey {
    fn borrow(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl TryFrom<String> for PublicKey {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        PublicKey::from_hex(&s)
    }
}

impl From<PublicKey> for String {
    fn from(k: PublicKey) -> String {
        k.to_string()
    }
}

/// Which keys a writer rule admits: any key, or the listed ones.
///
/// TOML: `keys = ["*"]` or `keys = ["<hex>", ...]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub enum KeySet {
    /// Any key (`"*"`).
    Any,
    /// Only these keys.
    Keys(BTreeSet<PublicKey>),
}

impl KeySet {
    /// True if `key` is admitted.
    pub fn allows(&self, key: &[u8; 32]) -> bool {
        match self {
            KeySet::Any => true,
            KeySet::Keys(keys) => keys.contains(key),
        }
    }

    /// Parses a TOML key list; `field` names it in errors.
    fn parse(field: &str, list: &[String]) -> Result<KeySet, PolicyError> {
        if list.iter().any(|k| k == "*") {
            if list.len() == 1 {
                return Ok(KeySet::Any);
            }
            return Err(PolicyError::BadKey {
                key: "*".into(),
                reason: format!(
                    "in {field}, `*` (any key) must be the only entry; remove the other keys or the `*`"
                ),
            });
        }
        let keys = list
            .iter()
            .map(|k| PublicKey::from_hex(k))
            .collect::<Result<Vec<_>, _>>()?;
        unique(field, keys).map(KeySet::Keys)
    }
}

impl TryFrom<Vec<String>> for KeySet {
    type Error = PolicyError;
    fn try_from(list: Vec<String>) -> Result<Self, Self::Error> {
        KeySet::parse("keys", &list)
    }
}

impl From<KeySet> for Vec<String> {
    fn from(set: KeySet) -> Vec<String> {
        match set {
            KeySet::Any => vec!["*".to_string()],
            KeySet::Keys(keys) => keys.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Collects keys into a set, refusing duplicates.
pub(crate) fn unique(
    field: &str,
    keys: impl IntoIterator<Item = PublicKey>,
) -> Result<BTreeSet<PublicKey>, PolicyError> {
    let mut set = BTreeSet::new();
    for key in keys {
        if !set.insert(key) {
            return Err(PolicyError::DuplicateKey {
                field: field.to_string(),
                key: key.to_string(),
            });
        }
    }
    Ok(set)
}

/// Serde `deserialize_with` for a list of keys that must not repeat.
pub(crate) fn unique_keys<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeSet<PublicKey>, D::Error> {
    let list = Vec::<PublicKey>::deserialize(d)?;
    unique("keys", list).map_err(serde::de::Error::custom)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid public key derived from a seed byte.
    pub(crate) fn key(seed: u8) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes()
    }

    #[test]
    fn hex_round_trip_and_case() {
        let k = PublicKey::from_bytes(&key(1)).unwrap();
        let text = k.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(PublicKey::from_hex(&text.to_uppercase()).unwrap(), k);
    }

    #[test]
    fn bad_keys_say_why() {
        let short = PublicKey::from_hex("abcd").unwrap_err();
        assert!(short.to_string().contains("64 hex digits"), "{short}");
        let not_hex = PublicKey::from_hex(&"zz".repeat(32)).unwrap_err();
        assert!(matches!(not_hex, PolicyError::BadKey { .. }));
        let star = PublicKey::from_hex("*").unwrap_err();
        assert!(star.to_string().contains("[[writers]]"), "{star}");
        // The identity point is a valid encoding but a weak (small-order) key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = PublicKey::from_bytes(&identity).unwrap_err();
        assert!(weak.to_string().contains("weak"), "{weak}");
    }

    #[test]
    fn key_set_parsing() {
        let a = PublicKey::from_bytes(&key(1)).unwrap().to_string();
        let b = PublicKey::from_bytes(&key(2)).unwrap().to_string();
        assert_eq!(KeySet::parse("k", &["*".into()]).unwrap(), KeySet::Any);
        let set = KeySet::parse("k", &[a.clone(), b]).unwrap();
        assert!(set.allows(&key(1)) && set.allows(&key(2)) && !set.allows(&key(3)));
        assert!(KeySet::Any.allows(&key(3)));
        assert!(KeySet::parse("k", &["*".into(), a.clone()]).is_err());
        assert!(matches!(
            KeySet::parse("k", &[a.clone(), a]),
            Err(PolicyError::DuplicateKey { .. })
        ));
    }
}
