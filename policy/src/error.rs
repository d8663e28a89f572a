//! The one error type of the `policy` crate: a policy (TOML or built in code) that is not valid.

use thiserror::Error;

/// Everything that can be wrong with a policy. Each message says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The TOML text is longer than [`proto::limits::POLICY_TOML_BYTES_MAX`]; it was not parsed.
    #[error(
        "policy TOML is {bytes} bytes; at most {max} are allowed (shorten it: fewer rules or keys)"
    )]
    TooLarge {
        /// Its length in bytes.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The TOML does not parse or does not fit the policy schema (unknown key, wrong type,
    /// bad key hex, bad pattern, ...). `message` names the field and the problem.
    #[error("policy TOML, line {line}, column {column}: {message}")]
    Toml {
        /// 1-based line of the offending text; 0 when the parser gave no position.
        line: usize,
        /// 1-based byte column on that line; 0 when the parser gave no position.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A public key that is not 64 hex digits or not a usable ed25519 point.
    #[error("key {key:?}: {reason}")]
    BadKey {
        /// The key as written (shortened if long).
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The same key listed twice in one list.
    #[error("{field} lists key {key} more than once; list each key once")]
    DuplicateKey {
        /// The list, e.g. `admin.keys`.
        field: String,
        /// The key, hex.
        key: String,
    },
    /// A name pattern that does not parse.
    #[error(
        "pattern {pattern:?}: {reason}. Patterns are absolute: labels, `*` for exactly one \
         label, `**` as the last element for zero or more labels (e.g. \"/eu/**\", \"/eu/*/api\")"
    )]
    BadPattern {
        /// The pattern as written (shortened if long).
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A list of keys that must not be empty is empty.
    #[error("{field} is empty; {hint}")]
    NoKeys {
        /// The list, e.g. `writers[0].keys`.
        field: String,
        /// How to fix it.
        hint: &'static str,
    },
    /// A writer rule with an empty `ops` list.
    #[error("{field} is empty; list some of \"put\", \"delete\", \"cas\" or remove the rule")]
    NoOps {
        /// The list, e.g. `writers[0].ops`.
        field: String,
    },
    /// `admin.threshold = 0`.
    #[error("admin.threshold is 0; it must be at least 1 (how many admin keys must sign a policy change)")]
    ThresholdZero,
    /// `admin.threshold` larger than the number of admin keys.
    #[error("admin.threshold is {threshold} but admin.keys lists only {keys} keys; lower the threshold or add keys")]
    ThresholdAboveKeys {
        /// k.
        threshold: u32,
        /// n.
        keys: usize,
    },
    /// `admin.threshold` larger than the signatures one mutation may carry.
    #[error("admin.threshold is {threshold} but a mutation carries at most {max} signatures; lower the threshold")]
    ThresholdAboveSignatures {
        /// k.
        threshold: u32,
        /// [`proto::mutation::SIGNATURES_MAX`].
        max: usize,
    },
    /// Read keys listed while reads are anonymous (they would be ignored).
    #[error("reads.keys lists keys but reads.access is \"anonymous\"; set access = \"keyed\" or remove the keys")]
    ReadKeysIgnored,
    /// `limits.kinds` is empty, so nothing could ever be written.
    #[error("limits.kinds is empty, so no record could be written; list kinds (addr, text, service, alias, object, blob) or omit the key to allow all")]
    NoKinds,
    /// A number outside its allowed range.
    #[error("{field} is {value}; it must be between {min} and {max}")]
    OutOfRange {
        /// The field, e.g. `placement.replicas`.
        field: String,
        /// The value given.
        value: u64,
        /// Smallest allowed.
        min: u64,
        /// Largest allowed.
        max: u64,
    },
    /// A list or table longer than allowed.
    #[error("{field} has {count} entries; at most {max} are allowed")]
    TooMany {
        /// The list, e.g. `writers`.
        field: String,
        /// How many it has.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A `[merge]` minimum above half the matching `[split]` maximum: two scopes merged at
    /// the minimum would need to split again at once.
    #[error(
        "{field} is {value} but {split_field} is {split_value}; two scopes merged just under \
         {field} could hold twice it and split again at once: set {field} to at most half of \
         {split_field} ({half}), or omit it for a quarter",
        half = split_value / 2
    )]
    MergeAboveSplit {
        /// The merge field, e.g. `merge.names_min`.
        field: String,
        /// Its value.
        value: u64,
        /// The split field it is checked against, e.g. `split.names_max`.
        split_field: String,
        /// That field's value.
        split_value: u64,
    },
    /// A placement label key or value that breaks the label rules.
    #[error("placement label {text:?}: {reason}")]
    BadLabel {
        /// The key or value as written (shortened if long).
        text: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl PolicyError {
    /// Converts a TOML error into [`PolicyError::Toml`], locating it in `text`.
    pub(crate) fn from_toml(text: &str, err: &toml::de::Error) -> PolicyError {
        let (line, column) = err
            .span()
            .map(|span| line_col(text, span.start))
            .unwrap_or((0, 0));
        PolicyError::Toml {
            line,
            column,
            message: err.message().trim().to_string(),
        }
    }
}

/// 1-based line and byte column of `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |p| p + 1);
    (line, before.len() - line_start + 1)
}

/// Shortens user text for an error message.
pub(crate) fn shorten(s: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 80;
    if s.chars().count() <= SHOWN_CHARS_MAX {
        return s.to_string();
    }
    let mut out: String = s.chars().take(SHOWN_CHARS_MAX).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd\nef", 0), (1, 1));
        assert_eq!(line_col("ab\ncd\nef", 4), (2, 2));
        assert_eq!(line_col("ab\ncd\nef", 6), (3, 1));
        assert_eq!(line_col("ab", 99), (1, 3));
    }

    #[test]
    fn shortens_long_text() {
        assert_eq!(shorten("abc"), "abc");
        let long = "x".repeat(200);
        assert_eq!(shorten(&long).chars().count(), 81);
    }
}
