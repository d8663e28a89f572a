//! Names: absolute paths of labels, root first (`/eu/payments/api`).
//!
//! Parsing case-folds to lowercase and enforces the rules in `docs/design.md`, "Names"; every
//! error says which rule broke and where. Names order label by label, so a subtree is one
//! contiguous range, and [`Name::key`] gives a byte string with the same order for storage
//! keys.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::ProtoError;
use crate::limits::{LABEL_BYTES_MAX, NAME_BYTES_MAX, NAME_LABELS_MAX};

/// A validated, lowercase name. `Name::root()` is `/`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name {
    labels: Vec<String>,
}

impl Name {
    /// The root name `/`.
    pub fn root() -> Name {
        Name { labels: Vec::new() }
    }

    /// Parses and validates a name, folding ASCII uppercase to lowercase.
    pub fn parse(input: &str) -> Result<Name, ProtoError> {
        if input.is_empty() {
            return Err(ProtoError::EmptyName);
        }
        if !input.starts_with('/') {
            return Err(ProtoError::NotAbsolute {
                name: truncate(input),
            });
        }
        if input.len() > NAME_BYTES_MAX {
            return Err(ProtoError::NameTooLong {
                len: input.len(),
                max: NAME_BYTES_MAX,
            });
        }
        if input == "/" {
            return Ok(Name::root());
        }
        let raw: Vec<&str> = input[1..].split('/').collect();
        if raw.len() > NAME_LABELS_MAX {
            return Err(ProtoError::TooManyLabels {
                count: raw.len(),
                max: NAME_LABELS_MAX,
            });
        }
        let labels = raw
            .iter()
            .enumerate()
            .map(|(i, label)| parse_label(i + 1, label))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Name { labels })
    }

    /// Builds a name from labels, validating each.
    pub fn from_labels<S: AsRef<str>>(labels: &[S]) -> Result<Name, ProtoError> {
        if labels.len() > NAME_LABELS_MAX {
            return Err(ProtoError::TooManyLabels {
                count: labels.len(),
                max: NAME_LABELS_MAX,
            });
        }
        let labels = labels
            .iter()
            .enumerate()
            .map(|(i, l)| parse_label(i + 1, l.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let name = Name { labels };
        let len = name.text_len();
        if len > NAME_BYTES_MAX {
            return Err(ProtoError::NameTooLong {
                len,
                max: NAME_BYTES_MAX,
            });
        }
        Ok(name)
    }

    /// The labels, root first.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Number of labels (0 for the root).
    pub fn depth(&self) -> usize {
        self.labels.len()
    }

    /// True for `/`.
    pub fn is_root(&self) -> bool {
        self.labels.is_empty()
    }

    /// The parent name, or `None` for the root.
    pub fn parent(&self) -> Option<Name> {
        if self.is_root() {
            return None;
        }
        Some(Name {
            labels: self.labels[..self.labels.len() - 1].to_vec(),
        })
    }

    /// The child `self/label`, validated.
    pub fn child(&self, label: &str) -> Result<Name, ProtoError> {
        let mut labels = self.labels.clone();
        labels.push(label.to_string());
        Name::from_labels(&labels)
    }

    /// True if `self` equals `prefix` or lies below it.
    pub fn is_under(&self, prefix: &Name) -> bool {
        self.labels.len() >= prefix.labels.len()
            && self.labels[..prefix.labels.len()] == prefix.labels[..]
    }

    /// A byte key with the same order as names: each label followed by a 0 byte.
    /// Every name under a prefix has the prefix's key as a byte prefix.
    pub fn key(&self) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.text_len());
        for label in &self.labels {
            key.extend_from_slice(label.as_bytes());
            key.push(0);
        }
        key
    }

    /// Rebuilds a name from [`Name::key`] bytes, validating them.
    pub fn from_key(key: &[u8]) -> Result<Name, ProtoError> {
        if key.is_empty() {
            return Ok(Name::root());
        }
        let Some(body) = key.strip_suffix(&[0]) else {
            return Err(ProtoError::Malformed {
                reason: "name key does not end in 0".into(),
            });
        };
        let labels: Vec<String> = body
            .split(|b| *b == 0)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect();
        Name::from_labels(&labels)
    }

    /// The DNS form under `zone`: `/eu/payments/api` → `api.payments.eu.<zone>.`
    pub fn to_dns(&self, zone: &str) -> String {
        let zone = zone.trim_end_matches('.');
        let mut out = String::new();
        for label in self.labels.iter().rev() {
            out.push_str(label);
            out.push('.');
        }
        out.push_str(zone);
        out.push('.');
        out
    }

    /// Parses the DNS form `api.payments.eu.<zone>.` back to `/eu/payments/api`.
    pub fn from_dns(fqdn: &str, zone: &str) -> Result<Name, ProtoError> {
        let lower = fqdn.to_ascii_lowercase();
        let fq = lower.trim_end_matches('.');
        let zone_l = zone.to_ascii_lowercase();
        let zone_l = zone_l.trim_end_matches('.');
        let not_in_zone = || ProtoError::NotInZone {
            name: truncate(fqdn),
            zone: truncate(zone),
        };
        let head = if fq == zone_l {
            ""
        } else {
            fq.strip_suffix(zone_l)
                .and_then(|h| h.strip_suffix('.'))
                .ok_or_else(not_in_zone)?
        };
        if head.is_empty() {
            return Ok(Name::root());
        }
        let labels: Vec<&str> = head.split('.').rev().collect();
        Name::from_labels(&labels)
    }

    fn text_len(&self) -> usize {
        if self.labels.is_empty() {
            1
        } else {
            self.labels.iter().map(|l| l.len() + 1).sum()
        }
    }
}

fn parse_label(position: usize, label: &str) -> Result<String, ProtoError> {
    if label.is_empty() {
        return Err(ProtoError::EmptyLabel { label: position });
    }
    if label.len() > LABEL_BYTES_MAX {
        return Err(ProtoError::LabelTooLong {
            label: position,
            len: label.len(),
            max: LABEL_BYTES_MAX,
        });
    }
    let mut out = String::with_capacity(label.len());
    for (byte, ch) in label.char_indices() {
        let folded = ch.to_ascii_lowercase();
        if !(folded.is_ascii_lowercase()
            || folded.is_ascii_digit()
            || folded == '_'
            || folded == '-')
        {
            return Err(ProtoError::BadChar {
                label: position,
                text: truncate(label),
                ch,
                byte,
            });
        }
        out.push(folded);
    }
    Ok(out)
}

fn truncate(s: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 80;
    if s.chars().count() <= SHOWN_CHARS_MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(SHOWN_CHARS_MAX).collect();
        t.push('…');
        t
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.labels.is_empty() {
            return f.write_str("/");
        }
        for label in &self.labels {
            f.write_str("/")?;
            f.write_str(label)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({self})")
    }
}

impl std::str::FromStr for Name {
    type Err = ProtoError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::parse(s)
    }
}

impl TryFrom<String> for Name {
    type Error = ProtoError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Name::parse(&s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_folds_case() {
        let n = Name::parse("/EU/Payments/api").unwrap();
        assert_eq!(n.to_string(), "/eu/payments/api");
        assert_eq!(n.depth(), 3);
        assert_eq!(Name::parse("/").unwrap(), Name::root());
    }

    #[test]
    fn error_names_rule_and_position() {
        let err = Name::parse("/eu/Pay$").unwrap_err();
        assert_eq!(
            err.to_string(),
            "label 2 \"Pay$\" has '$' at byte 3; labels allow only a-z, 0-9, '_' and '-'"
        );
        assert_eq!(
            Name::parse("/eu//x").unwrap_err(),
            ProtoError::EmptyLabel { label: 2 }
        );
        assert_eq!(
            Name::parse("/eu/").unwrap_err(),
            ProtoError::EmptyLabel { label: 2 }
        );
        assert!(matches!(
            Name::parse("eu"),
            Err(ProtoError::NotAbsolute { .. })
        ));
        assert_eq!(Name::parse(""), Err(ProtoError::EmptyName));
        let long = format!("/{}", "a".repeat(64));
        assert_eq!(
            Name::parse(&long).unwrap_err(),
            ProtoError::LabelTooLong {
                label: 1,
                len: 64,
                max: 63
            }
        );
        let many = "/a".repeat(33);
        assert!(matches!(
            Name::parse(&many),
            Err(ProtoError::TooManyLabels { count: 33, .. })
        ));
        let big = format!("/{}", vec!["a".repeat(63); 5].join("/"));
        assert!(matches!(
            Name::parse(&big),
            Err(ProtoError::NameTooLong { .. })
        ));
        assert!(matches!(
            Name::parse("/é"),
            Err(ProtoError::BadChar {
                ch: 'é',
                byte: 0,
                ..
            })
        ));
    }

    #[test]
    fn subtree_is_contiguous() {
        let mut names: Vec<Name> = ["/eu0", "/eu/x", "/eu", "/e", "/eu/x/y", "/eu-a", "/f"]
            .iter()
            .map(|s| Name::parse(s).unwrap())
            .collect();
        names.sort();
        let shown: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            shown,
            ["/e", "/eu", "/eu/x", "/eu/x/y", "/eu-a", "/eu0", "/f"]
        );
    }

    #[test]
    fn dns_mapping() {
        let n = Name::parse("/eu/payments/api").unwrap();
        assert_eq!(
            n.to_dns("anchorage.test"),
            "api.payments.eu.anchorage.test."
        );
        assert_eq!(
            Name::from_dns("API.payments.eu.anchorage.test.", "anchorage.test.").unwrap(),
            n
        );
        assert_eq!(
            Name::from_dns("anchorage.test", "anchorage.test").unwrap(),
            Name::root()
        );
        assert!(Name::from_dns("x.example.com", "anchorage.test").is_err());
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9_-]{1,12}"
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(labels in proptest::collection::vec(label(), 0..10)) {
            let n = Name::from_labels(&labels).unwrap();
            let back = Name::parse(&n.to_string()).unwrap();
            prop_assert_eq!(&back, &n);
            prop_assert_eq!(Name::from_key(&n.key()).unwrap(), n);
        }

        #[test]
        fn key_order_matches_name_order(a in proptest::collection::vec(label(), 0..5),
                                        b in proptest::collection::vec(label(), 0..5)) {
            let (a, b) = (Name::from_labels(&a).unwrap(), Name::from_labels(&b).unwrap());
            prop_assert_eq!(a.cmp(&b), a.key().cmp(&b.key()));
            prop_assert_eq!(a.is_under(&b), a.key().starts_with(&b.key()));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,300}") {
            if let Ok(n) = Name::parse(&s) {
                prop_assert_eq!(Name::parse(&n.to_string()).unwrap(), n);
            }
        }
    }
}
