//! Name patterns for writer rules: absolute label paths with `*` (exactly one label) and a
//! trailing `**` (zero or more labels).
//!
//! | pattern       | matches                              | does not match     |
//! |---------------|--------------------------------------|--------------------|
//! | `/eu/**`      | `/eu`, `/eu/x`, `/eu/x/y`            | `/us`, `/eux`      |
//! | `/eu/*/api`   | `/eu/pay/api`                        | `/eu/api`, `/eu/a/b/api` |
//! | `/**`         | every name, `/` included             |                    |
//! | `/`           | `/` only                             | `/eu`              |

use std::fmt;

use serde::{Deserialize, Serialize};

use proto::Name;

use crate::error::{shorten, PolicyError};

/// A parsed name pattern. Literal labels follow the name rules of `proto` (case-folded).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Pattern {
    elems: Vec<Elem>,
    /// True when the pattern ends in `**`.
    rest: bool,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Elem {
    Label(String),
    One,
}

/// Stands in for a wildcard while the literal labels are checked by [`Name::parse`].
const PLACEHOLDER: &str = "x";

impl Pattern {
    /// Parses a pattern such as `/eu/**` or `/eu/*/api`.
    pub fn parse(text: &str) -> Result<Pattern, PolicyError> {
        let bad = |reason: String| PolicyError::BadPattern {
            pattern: shorten(text),
            reason,
        };
        if text.is_empty() || !text.starts_with('/') {
            return Err(bad("it must start with '/'".into()));
        }
        let parts: Vec<&str> = if text == "/" {
            Vec::new()
        } else {
            text[1..].split('/').collect()
        };
        if let Some(pos) = parts.iter().position(|p| *p == "**") {
            if pos + 1 != parts.len() {
                return Err(bad(format!(
                    "`**` is element {} but may only be the last element",
                    pos + 1
                )));
            }
        }
        let rest = parts.last() == Some(&"**");
        let literal = parts.len() - usize::from(rest);
        let elems = check_labels(&parts[..literal]).map_err(bad)?;
        Ok(Pattern { elems, rest })
    }

    /// `/**`: every name.
    pub fn everything() -> Pattern {
        Pattern {
            elems: Vec::new(),
            rest: true,
        }
    }

    /// True if `name` matches this pattern.
    pub fn matches(&self, name: &Name) -> bool {
        let labels = name.labels();
        let fits = if self.rest {
            labels.len() >= self.elems.len()
        } else {
            labels.len() == self.elems.len()
        };
        fits && self.elems.iter().zip(labels).all(|(e, l)| e.matches(l))
    }
}

impl Elem {
    fn matches(&self, label: &str) -> bool {
        match self {
            Elem::One => true,
            Elem::Label(l) => l == label,
        }
    }
}

/// Validates literal labels (wildcards replaced by a placeholder) with the name rules, so
/// errors carry the right label position.
fn check_labels(parts: &[&str]) -> Result<Vec<Elem>, String> {
    let stand_in: Vec<&str> = parts
        .iter()
        .map(|p| if *p == "*" { PLACEHOLDER } else { p })
        .collect();
    let text = format!("/{}", stand_in.join("/"));
    let name = Name::parse(&text).map_err(|e| e.to_string())?;
    let elems = parts
        .iter()
        .zip(name.labels())
        .map(|(p, l)| match *p {
            "*" => Elem::One,
            _ => Elem::Label(l.clone()),
        })
        .collect();
    Ok(elems)
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.elems.is_empty() && !self.rest {
            return f.write_str("/");
        }
        for elem in &self.elems {
            match elem {
                Elem::One => f.write_str("/*")?,
                Elem::Label(l) => write!(f, "/{l}")?,
            }
        }
        if self.rest {
            f.write_str("/**")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pattern({self})")
    }
}

impl std::str::FromStr for Pattern {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

impl TryFrom<String> for Pattern {
    type Error = PolicyError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Pattern::parse(&s)
    }
}

impl From<Pattern> for String {
    fn from(p: Pattern) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching_table() {
        let table: &[(&str, &str, bool)] = &[
            ("/**", "/", true),
            ("/**", "/eu/x/y", true),
            ("/", "/", true),
            ("/", "/eu", false),
            ("/eu/**", "/eu", true),
            ("/eu/**", "/eu/pay", true),
            ("/eu/**", "/eu/pay/api", true),
            ("/eu/**", "/eux", false),
            ("/eu/**", "/us/eu", false),
            ("/eu/**", "/", false),
            ("/eu", "/eu", true),
            ("/eu", "/eu/x", false),
            ("/eu/*", "/eu", false),
            ("/eu/*", "/eu/x", true),
            ("/eu/*", "/eu/x/y", false),
            ("/eu/*/api", "/eu/pay/api", true),
            ("/eu/*/api", "/eu/api", false),
            ("/eu/*/api", "/eu/a/b/api", false),
            ("/eu/*/api", "/eu/pay/web", false),
            ("/*/**", "/", false),
            ("/*/**", "/us", true),
            ("/*/*/**", "/eu/x/y/z", true),
            ("/EU/Pay", "/eu/pay", true),
        ];
        for (pattern, name, want) in table {
            let p = Pattern::parse(pattern).unwrap();
            let n = Name::parse(name).unwrap();
            assert_eq!(p.matches(&n), *want, "{pattern} vs {name}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in ["/", "/**", "/eu/**", "/eu/*/api", "/*", "/a/b/c"] {
            let p = Pattern::parse(text).unwrap();
            assert_eq!(p.to_string(), text);
            assert_eq!(Pattern::parse(&p.to_string()).unwrap(), p);
        }
        assert_eq!(Pattern::parse("/EU/**").unwrap().to_string(), "/eu/**");
    }

    #[test]
    fn bad_patterns_say_why() {
        let cases: &[(&str, &str)] = &[
            ("", "start with '/'"),
            ("eu/**", "start with '/'"),
            ("/eu/**/x", "`**` is element 2"),
            ("/**/**", "`**` is element 1"),
            ("/eu//x", "label 2 is empty"),
            ("/eu/", "label 2 is empty"),
            ("/eu/*/Pay$", "label 3 \"Pay$\" has '$'"),
            ("/eu/a*", "label 2 \"a*\" has '*'"),
            ("/***", "has '*'"),
        ];
        for (text, want) in cases {
            let err = Pattern::parse(text).unwrap_err();
            assert!(matches!(err, PolicyError::BadPattern { .. }), "{text}");
            assert!(err.to_string().contains(want), "{text}: {err}");
        }
        let long = format!("/{}/**", "a".repeat(64));
        assert!(Pattern::parse(&long).is_err());
    }
}
