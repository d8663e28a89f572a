//! The policy model (`docs/design.md`, "Policy"), its TOML form and its validation.
//!
//! A complete policy in TOML (every section and key is optional except the keys of a
//! `[[writers]]` rule and of `[admin]`; omitted ones take the defaults shown):
//!
//! ```toml
//! [admin]                      # omit the section to freeze the policy (no one can change it)
//! keys = ["<64 hex digits>", "<64 hex digits>"]
//! threshold = 2                # k of the n keys above must sign a policy change
//!
//! [[writers]]                  # any number of rules; a write needs one that matches
//! pattern = "/eu/**"           # `*` = exactly one label, trailing `**` = zero or more
//! ops = ["put", "delete", "cas"]   # default: all three
//! keys = ["*"]                 # "*" alone = any key, else hex public keys
//!
//! [limits]
//! kinds = ["addr", "text", "service", "alias", "object", "blob"]   # default: all
//! ttl_s_max = 604800
//! record_bytes_max = 98304     # sum of the payload bytes of one record set
//! names_max = 100000           # default: no limit
//!
//! [reads]
//! access = "anonymous"         # or "keyed"
//! keys = []                    # readers admitted when access = "keyed"
//!
//! [split]                      # when a scope splits itself (see below)
//! auto = false                 # automatic splits allowed; false: the thresholds are shown only
//! names_max = 100000
//! bytes_max = 268435456
//! writes_per_s_max = 1000
//! reads_per_s_max = 20000
//! window_s = 60                # how long a load threshold must stay exceeded before a split
//! interval_s_min = 60          # least time between two splits of one scope
//!
//! [merge]                      # when two adjacent scopes merge back into one
//! auto = false                 # automatic merges allowed
//! names_min = 25000            # default: a quarter of split.names_max
//! bytes_min = 67108864         # default: a quarter of split.bytes_max
//! age_s_min = 3600             # least age of the split before its halves may merge
//!
//! [placement]
//! replicas = 3
//! labels = { jurisdiction = "eu" }
//! ```
//!
//! # Splits and merges
//!
//! `[split]` and `[merge]` are read by the scope's own decider (`anchor/src/scope/split.rs`),
//! which every member of the scope also runs at apply. The rules follow CockroachDB's
//! load-based splitter and merge queue and TiKV's region sizes:
//!
//! - A size limit (`names_max`, `bytes_max`) splits as soon as it is exceeded; a load limit
//!   (`reads_per_s_max`, `writes_per_s_max`) only once every second of the last `window_s`
//!   seconds exceeded it, so a burst does not split a scope.
//! - `interval_s_min` keeps two splits of one scope apart (CockroachDB: at most one load
//!   split a minute).
//! - Two adjacent scopes merge only when both hold fewer than `names_min` names and
//!   `bytes_min` bytes, their summed peak load over a full window stays under **half** the
//!   split limits, and the split is at least `age_s_min` old (TiKV waits an hour). The gap
//!   between the merge and split limits is what keeps a scope from flapping, so
//!   `names_min` and `bytes_min` may be at most half of `names_max` and `bytes_max`.
//! - `auto = false` (the default in both sections) keeps every existing scope's shape: the
//!   decider still reports what it would do, but nothing happens on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize, Serializer};

use proto::limits::{POLICY_TOML_BYTES_MAX, RECORD_SET_BYTES_MAX, SCOPE_MEMBERS_MAX, TTL_S_MAX};
use proto::mutation::SIGNATURES_MAX;
use proto::{Op, RecordKind};

use crate::error::{shorten, PolicyError};
use crate::key::{unique_keys, KeySet, PublicKey};
use crate::pattern::Pattern;

/// Rules in `[[writers]]`.
pub const WRITER_RULES_MAX: usize = 256;
/// Labels in `[placement.labels]`.
pub const PLACEMENT_LABELS_MAX: usize = 16;
/// Bytes in a placement label key or value.
pub const PLACEMENT_LABEL_BYTES_MAX: usize = 63;
/// Longest `split.window_s` (one day).
pub const SPLIT_WINDOW_S_MAX: u32 = 24 * 3600;
/// Largest `split.bytes_max` (1 TiB).
pub const SPLIT_BYTES_MAX: u64 = 1 << 40;
/// Longest `split.interval_s_min` (one week).
pub const SPLIT_INTERVAL_S_MAX: u32 = 7 * 24 * 3600;
/// Longest `merge.age_s_min` (thirty days).
pub const MERGE_AGE_S_MAX: u32 = 30 * 24 * 3600;

/// A scope's policy: who may write what, who may change the policy, record limits, reads,
/// split thresholds and placement. Build one with [`Policy::from_toml`] or
/// [`Policy::development`]; check one built in code with [`Policy::validate`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Who may change the policy; `None` freezes it.
    #[serde(default)]
    pub admin: Option<Admin>,
    /// Write rules; a write is allowed if any rule admits it. Empty: no one may write.
    #[serde(default)]
    pub writers: Vec<WriterRule>,
    /// Limits on record sets.
    #[serde(default)]
    pub limits: Limits,
    /// Who may read.
    #[serde(default)]
    pub reads: Reads,
    /// When the scope splits itself.
    #[serde(default)]
    pub split: Split,
    /// Where the scope's replicas may live.
    #[serde(default)]
    pub placement: Placement,
    /// When two adjacent scopes merge back into one.
    #[serde(default)]
    pub merge: Merge,
}

/// A write operation a rule can allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteOp {
    /// [`Op::Put`].
    Put,
    /// [`Op::Delete`].
    Delete,
    /// [`Op::Cas`].
    Cas,
}

impl WriteOp {
    /// Every write op.
    pub const ALL: [WriteOp; 3] = [WriteOp::Put, WriteOp::Delete, WriteOp::Cas];

    /// The write op of `op`, or `None` for the admin ops ([`Op::SetPolicy`], [`Op::Delegate`]).
    pub fn of(op: &Op) -> Option<WriteOp> {
        match op {
            Op::Put { .. } => Some(WriteOp::Put),
            Op::Delete { .. } => Some(WriteOp::Delete),
            Op::Cas { .. } => Some(WriteOp::Cas),
            Op::SetPolicy { .. }
            | Op::Delegate { .. }
            | Op::Split { .. }
            | Op::Merge { .. }
            | Op::Members { .. } => None,
        }
    }

    /// The lowercase name used in TOML.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteOp::Put => "put",
            WriteOp::Delete => "delete",
            WriteOp::Cas => "cas",
        }
    }

    fn all() -> BTreeSet<WriteOp> {
        WriteOp::ALL.into_iter().collect()
    }
}

impl fmt::Display for WriteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[writers]]` rule: keys that may do `ops` on names matching `pattern`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterRule {
    /// Names the rule covers.
    pub pattern: Pattern,
    /// Operations it allows (default: all).
    #[serde(default = "WriteOp::all")]
    pub ops: BTreeSet<WriteOp>,
    /// Keys it admits.
    pub keys: KeySet,
}

impl WriterRule {
    /// True if this rule lets `key` do `op` on `name`.
    pub fn admits(&self, key: &[u8; 32], op: WriteOp, name: &proto::Name) -> bool {
        self.ops.contains(&op) && self.keys.allows(key) && self.pattern.matches(name)
    }
}

/// `[admin]`: the keys that may change the policy and how many must sign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    /// The n admin keys.
    #[serde(deserialize_with = "unique_keys")]
    pub keys: BTreeSet<PublicKey>,
    /// k: distinct admin signatures a policy change needs.
    pub threshold: u32,
}

/// `[limits]`: what a record set may hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Record kinds allowed (default: all).
    pub kinds: BTreeSet<RecordKind>,
    /// Longest TTL, seconds (default: the protocol maximum).
    pub ttl_s_max: u32,
    /// Most payload bytes in one record set (default: the protocol maximum).
    pub record_bytes_max: u32,
    /// Most names the scope may hold (default: no limit).
    pub names_max: Option<u32>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            kinds: RecordKind::ALL.into_iter().collect(),
            ttl_s_max: TTL_S_MAX,
            record_bytes_max: RECORD_SET_BYTES_MAX as u32,
            names_max: None,
        }
    }
}

/// Whether reads need a key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadAccess {
    /// Anyone may read.
    #[default]
    Anonymous,
    /// Only the keys in [`Reads::keys`] may read.
    Keyed,
}

/// `[reads]`: who may read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Reads {
    /// Anonymous (default) or keyed.
    pub access: ReadAccess,
    /// The readers admitted when `access = "keyed"`.
    #[serde(deserialize_with = "unique_keys")]
    pub keys: BTreeSet<PublicKey>,
}

/// `[split]`: size thresholds, and load thresholds that, held for `window_s`, make the
/// scope split; whether it may split on its own, and how often.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Split {
    /// Automatic splits allowed (default false: the thresholds are reported only).
    pub auto: bool,
    /// Names.
    pub names_max: u32,
    /// Bytes of record sets.
    #[serde(serialize_with = "saturating_i64")]
    pub bytes_max: u64,
    /// Committed writes per second.
    pub writes_per_s_max: u32,
    /// Reads per second, summed over members.
    pub reads_per_s_max: u32,
    /// Seconds a load threshold must stay exceeded, every second of them, before a split
    /// (the hold). Size thresholds act at once.
    pub window_s: u32,
    /// Least seconds between two splits of one scope.
    pub interval_s_min: u32,
}

impl Default for Split {
    fn default() -> Self {
        Split {
            auto: false,
            names_max: 100_000,
            bytes_max: 256 * 1024 * 1024,
            writes_per_s_max: 1_000,
            reads_per_s_max: 20_000,
            window_s: 60,
            interval_s_min: 60,
        }
    }
}

/// `[merge]`: when two adjacent scopes (two ranges of one prefix, or a child and its
/// parent) merge back into one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Merge {
    /// Automatic merges allowed (default false).
    pub auto: bool,
    /// Each side must hold fewer names (default: a quarter of `split.names_max`, see
    /// [`Merge::names_min_for`]).
    pub names_min: Option<u32>,
    /// Each side must hold fewer bytes (default: a quarter of `split.bytes_max`, see
    /// [`Merge::bytes_min_for`]).
    #[serde(serialize_with = "saturating_i64_opt")]
    pub bytes_min: Option<u64>,
    /// Least seconds between a split and the merge of its halves.
    pub age_s_min: u32,
}

impl Default for Merge {
    fn default() -> Self {
        Merge {
            auto: false,
            names_min: None,
            bytes_min: None,
            age_s_min: 3600,
        }
    }
}

impl Merge {
    /// The names minimum in force: `names_min`, or a quarter of `split.names_max`.
    pub fn names_min_for(&self, split: &Split) -> u64 {
        self.names_min
            .map_or(u64::from(split.names_max) / 4, u64::from)
    }

    /// The bytes minimum in force: `bytes_min`, or a quarter of `split.bytes_max`.
    pub fn bytes_min_for(&self, split: &Split) -> u64 {
        self.bytes_min.unwrap_or(split.bytes_max / 4)
    }
}

/// `[placement]`: replica count and labels every hosting anchor must carry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Placement {
    /// Replicas (voting members) the scope wants.
    pub replicas: u32,
    /// Required anchor labels, e.g. `jurisdiction = "eu"`.
    pub labels: BTreeMap<String, String>,
    /// Whether the scope's leader may change its members by itself: replace a member on a
    /// dead anchor or one that no longer meets the labels, add one when there are fewer
    /// than `replicas`, and move replicas off anchors above the cluster's mean. With
    /// `false`, members change only by an admin-signed member change.
    pub auto: bool,
}

impl Default for Placement {
    fn default() -> Self {
        Placement {
            replicas: 3,
            labels: BTreeMap::new(),
            auto: true,
        }
    }
}

/// TOML integers are i64; values above that are all "effectively unlimited". Binary forms
/// (the codec) keep the exact u64, so a decoded policy re-encodes to an equal one.
fn saturating_i64<S: Serializer>(value: &u64, s: S) -> Result<S::Ok, S::Error> {
    if !s.is_human_readable() {
        return s.serialize_u64(*value);
    }
    s.serialize_i64(i64::try_from(*value).unwrap_or(i64::MAX))
}

/// [`saturating_i64`] for an optional value.
fn saturating_i64_opt<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        None => s.serialize_none(),
        Some(v) if !s.is_human_readable() => s.serialize_some(v),
        Some(v) => s.serialize_some(&i64::try_from(*v).unwrap_or(i64::MAX)),
    }
}

impl Policy {
    /// Parses and validates a policy from TOML. Refuses text over
    /// [`POLICY_TOML_BYTES_MAX`] before parsing it.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        if text.len() > POLICY_TOML_BYTES_MAX {
            return Err(PolicyError::TooLarge {
                bytes: text.len(),
                max: POLICY_TOML_BYTES_MAX,
            });
        }
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError::from_toml(text, &e))?;
        policy.validate()?;
        Ok(policy)
    }

    /// The TOML form; [`Policy::from_toml`] reads it back to an equal policy.
    pub fn to_toml(&self) -> String {
        // Every field is a string, an integer that fits i64 (u32, or u64 saturated), an
        // array, an optional table or a string-to-string table: all representable in TOML.
        toml::to_string(self).expect("a policy always has a TOML form")
    }

    /// A permissive policy for development: any key may put, delete and cas anywhere, all
    /// kinds and the protocol limits apply, reads are anonymous, default split and
    /// placement. With `admin = Some(key)` that key alone (1 of 1) may change the policy;
    /// with `None` the policy is frozen and can never be changed.
    pub fn development(admin: Option<PublicKey>) -> Policy {
        Policy {
            admin: admin.map(|key| Admin {
                keys: BTreeSet::from([key]),
                threshold: 1,
            }),
            writers: vec![WriterRule {
                pattern: Pattern::everything(),
                ops: WriteOp::all(),
                keys: KeySet::Any,
            }],
            ..Policy::default()
        }
    }

    /// Checks the rules that span fields (threshold vs keys, ranges, non-empty lists).
    /// [`Policy::from_toml`] calls it; call it for a policy built in code.
    pub fn validate(&self) -> Result<(), PolicyError> {
        self.validate_writers()?;
        if let Some(admin) = &self.admin {
            admin.validate()?;
        }
        self.limits.validate()?;
        self.reads.validate()?;
        self.split.validate()?;
        self.placement.validate()?;
        self.merge.validate(&self.split)
    }

    fn validate_writers(&self) -> Result<(), PolicyError> {
        at_most("writers", self.writers.len(), WRITER_RULES_MAX)?;
        for (i, rule) in self.writers.iter().enumerate() {
            if rule.ops.is_empty() {
                return Err(PolicyError::NoOps {
                    field: format!("writers[{i}].ops"),
                });
            }
            if matches!(&rule.keys, KeySet::Keys(k) if k.is_empty()) {
                return Err(PolicyError::NoKeys {
                    field: format!("writers[{i}].keys"),
                    hint: "list hex public keys, or [\"*\"] for any key, or remove the rule",
                });
            }
        }
        Ok(())
    }
}

impl Admin {
    fn validate(&self) -> Result<(), PolicyError> {
        if self.keys.is_empty() {
            return Err(PolicyError::NoKeys {
                field: "admin.keys".into(),
                hint: "list hex public keys, or remove the [admin] section to freeze the policy",
            });
        }
        if self.threshold == 0 {
            return Err(PolicyError::ThresholdZero);
        }
        if self.threshold as usize > self.keys.len() {
            return Err(PolicyError::ThresholdAboveKeys {
                threshold: self.threshold,
                keys: self.keys.len(),
            });
        }
        if self.threshold as usize > SIGNATURES_MAX {
            return Err(PolicyError::ThresholdAboveSignatures {
                threshold: self.threshold,
                max: SIGNATURES_MAX,
            });
        }
        Ok(())
    }
}

impl Limits {
    fn validate(&self) -> Result<(), PolicyError> {
        if self.kinds.is_empty() {
            return Err(PolicyError::NoKinds);
        }
        in_range(
            "limits.ttl_s_max",
            self.ttl_s_max.into(),
            0,
            TTL_S_MAX.into(),
        )?;
        let bytes_max = RECORD_SET_BYTES_MAX as u64;
        in_range(
            "limits.record_bytes_max",
            self.record_bytes_max.into(),
            1,
            bytes_max,
        )?;
        if let Some(names) = self.names_max {
            in_range("limits.names_max", names.into(), 1, u32::MAX.into())?;
        }
        Ok(())
    }
}

impl Reads {
    fn validate(&self) -> Result<(), PolicyError> {
        match self.access {
            ReadAccess::Anonymous if !self.keys.is_empty() => Err(PolicyError::ReadKeysIgnored),
            ReadAccess::Keyed if self.keys.is_empty() => Err(PolicyError::NoKeys {
                field: "reads.keys".into(),
                hint: "with access = \"keyed\" list the readers' hex public keys",
            }),
            _ => Ok(()),
        }
    }
}

impl Split {
    fn validate(&self) -> Result<(), PolicyError> {
        let max = u64::from(u32::MAX);
        in_range("split.names_max", self.names_max.into(), 1, max)?;
        in_range("split.bytes_max", self.bytes_max, 1, SPLIT_BYTES_MAX)?;
        in_range(
            "split.writes_per_s_max",
            self.writes_per_s_max.into(),
            1,
            max,
        )?;
        in_range("split.reads_per_s_max", self.reads_per_s_max.into(), 1, max)?;
        let window_max = SPLIT_WINDOW_S_MAX.into();
        in_range("split.window_s", self.window_s.into(), 1, window_max)?;
        let interval_max = SPLIT_INTERVAL_S_MAX.into();
        in_range(
            "split.interval_s_min",
            self.interval_s_min.into(),
            1,
            interval_max,
        )
    }
}

impl Merge {
    fn validate(&self, split: &Split) -> Result<(), PolicyError> {
        if let Some(names) = self.names_min {
            in_range("merge.names_min", names.into(), 1, u32::MAX.into())?;
            below_half(
                "merge.names_min",
                names.into(),
                "split.names_max",
                split.names_max.into(),
            )?;
        }
        if let Some(bytes) = self.bytes_min {
            in_range("merge.bytes_min", bytes, 1, SPLIT_BYTES_MAX)?;
            below_half("merge.bytes_min", bytes, "split.bytes_max", split.bytes_max)?;
        }
        let age_max = MERGE_AGE_S_MAX.into();
        in_range("merge.age_s_min", self.age_s_min.into(), 1, age_max)
    }
}

/// A merge minimum must be at most half the split maximum: two scopes merged at the
/// minimum then cannot need a split at once.
fn below_half(
    field: &str,
    value: u64,
    split_field: &str,
    split_value: u64,
) -> Result<(), PolicyError> {
    if value <= split_value / 2 {
        return Ok(());
    }
    Err(PolicyError::MergeAboveSplit {
        field: field.to_string(),
        value,
        split_field: split_field.to_string(),
        split_value,
    })
}

impl Placement {
    fn validate(&self) -> Result<(), PolicyError> {
        let members = SCOPE_MEMBERS_MAX as u64;
        in_range("placement.replicas", self.replicas.into(), 1, members)?;
        at_most("placement.labels", self.labels.len(), PLACEMENT_LABELS_MAX)?;
        self.labels
            .iter()
            .try_for_each(|(k, v)| check_label(k).and_then(|()| check_label(v)))
    }
}

/// A placement label key or value: 1–63 bytes of `[A-Za-z0-9_.-]`.
fn check_label(text: &str) -> Result<(), PolicyError> {
    let bad = |reason: String| {
        Err(PolicyError::BadLabel {
            text: shorten(text),
            reason,
        })
    };
    if text.is_empty() || text.len() > PLACEMENT_LABEL_BYTES_MAX {
        return bad(format!(
            "is {} bytes; label keys and values are 1 to {PLACEMENT_LABEL_BYTES_MAX} bytes",
            text.len()
        ));
    }
    match text
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some((at, c)) => bad(format!(
            "has {c:?} at byte {at}; labels allow only A-Z, a-z, 0-9, '_', '.' and '-'"
        )),
        None => Ok(()),
    }
}

fn in_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), PolicyError> {
    if (min..=max).contains(&value) {
        return Ok(());
    }
    Err(PolicyError::OutOfRange {
        field: field.to_string(),
        value,
        min,
        max,
    })
}

fn at_most(field: &str, count: usize, max: usize) -> Result<(), PolicyError> {
    if count <= max {
        return Ok(());
    }
    Err(PolicyError::TooMany {
        field: field.to_string(),
        count,
        max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::tests::key;

    fn hex_key(seed: u8) -> String {
        hex::encode(key(seed))
    }

    fn full_toml() -> String {
        format!(
            r#"
[admin]
keys = ["{a}", "{b}", "{c}"]
threshold = 2

[[writers]]
pattern = "/eu/**"
ops = ["put", "cas"]
keys = ["{a}"]

[[writers]]
pattern = "/eu/*/api"
keys = ["*"]

[limits]
kinds = ["addr", "service"]
ttl_s_max = 3600
record_bytes_max = 1024
names_max = 10

[reads]
access = "keyed"
keys = ["{b}"]

[split]
names_max = 5000
bytes_max = 1000000
writes_per_s_max = 50
reads_per_s_max = 500
window_s = 30

[placement]
replicas = 5
labels = {{ jurisdiction = "eu", tier = "gold" }}
"#,
            a = hex_key(1),
            b = hex_key(2),
            c = hex_key(3)
        )
    }

    /// Parses `text`, expecting failure.
    fn err(text: &str) -> PolicyError {
        Policy::from_toml(text).unwrap_err()
    }

    #[test]
    fn full_policy_parses() {
        let p = Policy::from_toml(&full_toml()).unwrap();
        let admin = p.admin.as_ref().unwrap();
        assert_eq!((admin.keys.len(), admin.threshold), (3, 2));
        assert_eq!(p.writers.len(), 2);
        assert_eq!(
            p.writers[0].ops,
            BTreeSet::from([WriteOp::Put, WriteOp::Cas])
        );
        assert_eq!(p.writers[1].ops, WriteOp::all());
        assert_eq!(p.writers[1].keys, KeySet::Any);
        assert_eq!(p.limits.names_max, Some(10));
        assert_eq!(p.reads.access, ReadAccess::Keyed);
        assert_eq!(p.split.window_s, 30);
        assert_eq!(p.placement.labels["jurisdiction"], "eu");
    }

    #[test]
    fn toml_round_trip() {
        for p in [
            Policy::from_toml(&full_toml()).unwrap(),
            Policy::default(),
            Policy::development(None),
            Policy::development(Some(PublicKey::from_bytes(&key(9)).unwrap())),
        ] {
            let text = p.to_toml();
            assert_eq!(Policy::from_toml(&text).unwrap(), p, "{text}");
        }
    }

    #[test]
    fn codec_round_trip() {
        let p = Policy::from_toml(&full_toml()).unwrap();
        let bytes = proto::codec::encode(&p).unwrap();
        let back: Policy = proto::codec::decode(&bytes, bytes.len()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn minimal_toml_takes_defaults() {
        let p = Policy::from_toml("").unwrap();
        assert_eq!(p, Policy::default());
        assert!(p.admin.is_none() && p.writers.is_empty());
        assert_eq!(p.limits.kinds.len(), RecordKind::ALL.len());
        assert_eq!(p.limits.ttl_s_max, TTL_S_MAX);
        assert_eq!(p.reads.access, ReadAccess::Anonymous);
        assert_eq!(p.placement.replicas, 3);
        let p = Policy::from_toml("[[writers]]\npattern = \"/**\"\nkeys = [\"*\"]\n").unwrap();
        assert_eq!(p.writers[0].ops, WriteOp::all());
    }

    #[test]
    fn development_policy() {
        let dev = Policy::development(None);
        dev.validate().unwrap();
        assert!(dev.admin.is_none());
        let admin = PublicKey::from_bytes(&key(1)).unwrap();
        let dev = Policy::development(Some(admin));
        dev.validate().unwrap();
        assert_eq!(dev.admin.unwrap().threshold, 1);
        assert!(dev.writers[0].admits(&key(5), WriteOp::Delete, &proto::Name::root()));
    }

    #[test]
    fn toml_errors_have_line_and_column() {
        let text = "[limits]\nttl_s_max = 10\nttl_max = 5\n";
        let PolicyError::Toml {
            line,
            column,
            message,
        } = err(text)
        else {
            panic!("expected a TOML error");
        };
        assert_eq!((line, column), (3, 1));
        assert!(message.contains("unknown field `ttl_max`"), "{message}");
        assert!(matches!(
            err("[limits\n"),
            PolicyError::Toml { line: 1, .. }
        ));
        let e = err("[limits]\nttl_s_max = \"long\"\n");
        assert!(matches!(e, PolicyError::Toml { line: 2, .. }), "{e}");
        let e = err("[limits]\nkinds = [\"mx\"]\n");
        assert!(e.to_string().contains("unknown variant `mx`"), "{e}");
        let e = err("[[writers]]\npattern = \"/**\"\nops = [\"set_policy\"]\nkeys = [\"*\"]\n");
        assert!(
            e.to_string().contains("unknown variant `set_policy`"),
            "{e}"
        );
        let e = err("[admin]\nkeys = []\n");
        assert!(e.to_string().contains("missing field `threshold`"), "{e}");
    }

    #[test]
    fn bad_values_inside_toml_are_located() {
        let e = err("[[writers]]\npattern = \"/eu/**/x\"\nkeys = [\"*\"]\n");
        assert!(matches!(e, PolicyError::Toml { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("`**`"), "{e}");
        let e = err("\n[[writers]]\npattern = \"/**\"\nkeys = [\"abcd\"]\n");
        assert!(matches!(e, PolicyError::Toml { line: 4, .. }), "{e}");
        assert!(e.to_string().contains("64 hex digits"), "{e}");
        let dup = format!(
            "[admin]\nkeys = [\"{0}\", \"{0}\"]\nthreshold = 1\n",
            hex_key(1)
        );
        assert!(err(&dup).to_string().contains("more than once"));
        let mixed = format!(
            "[[writers]]\npattern = \"/**\"\nkeys = [\"*\", \"{}\"]\n",
            hex_key(1)
        );
        assert!(err(&mixed).to_string().contains("only entry"));
    }

    #[test]
    fn too_large_is_refused_before_parsing() {
        let text = "#".repeat(POLICY_TOML_BYTES_MAX + 1);
        assert!(matches!(err(&text), PolicyError::TooLarge { .. }));
    }

    #[test]
    fn threshold_errors() {
        let admin = |keys: &[u8], k: u32| {
            let keys: Vec<String> = keys
                .iter()
                .map(|s| format!("\"{}\"", hex_key(*s)))
                .collect();
            format!("[admin]\nkeys = [{}]\nthreshold = {k}\n", keys.join(", "))
        };
        assert_eq!(err(&admin(&[1, 2], 0)), PolicyError::ThresholdZero);
        assert_eq!(
            err(&admin(&[1, 2], 3)),
            PolicyError::ThresholdAboveKeys {
                threshold: 3,
                keys: 2
            }
        );
        let many: Vec<u8> = (1..=20).collect();
        assert!(matches!(
            err(&admin(&many, 17)),
            PolicyError::ThresholdAboveSignatures { threshold: 17, .. }
        ));
        assert!(matches!(err(&admin(&[], 1)), PolicyError::NoKeys { .. }));
        Policy::from_toml(&admin(&many, 16)).unwrap();
    }

    #[test]
    fn cross_field_errors() {
        let cases: &[(&str, &str)] = &[
            (
                "[[writers]]\npattern = \"/**\"\nops = []\nkeys = [\"*\"]",
                "writers[0].ops",
            ),
            (
                "[[writers]]\npattern = \"/**\"\nkeys = []",
                "writers[0].keys",
            ),
            ("[reads]\naccess = \"keyed\"", "reads.keys"),
            ("[limits]\nkinds = []", "limits.kinds"),
            ("[limits]\nttl_s_max = 999999999", "limits.ttl_s_max"),
            ("[limits]\nrecord_bytes_max = 0", "limits.record_bytes_max"),
            ("[limits]\nnames_max = 0", "limits.names_max"),
            ("[split]\nwindow_s = 0", "split.window_s"),
            ("[split]\nbytes_max = 0", "split.bytes_max"),
            ("[placement]\nreplicas = 0", "placement.replicas"),
            ("[placement]\nreplicas = 10", "placement.replicas"),
        ];
        for (text, field) in cases {
            let e = err(text);
            assert!(e.to_string().contains(field), "{text}: {e}");
        }
        let anon = format!("[reads]\nkeys = [\"{}\"]", hex_key(1));
        assert_eq!(err(&anon), PolicyError::ReadKeysIgnored);
    }

    #[test]
    fn placement_label_errors() {
        let e = err("[placement.labels]\n\"bad key\" = \"eu\"");
        assert!(matches!(e, PolicyError::BadLabel { .. }), "{e}");
        let e = err("[placement.labels]\nzone = \"\"");
        assert!(e.to_string().contains("1 to 63 bytes"), "{e}");
        let labels: Vec<String> = (0..17).map(|i| format!("l{i} = \"v\"")).collect();
        let e = err(&format!("[placement.labels]\n{}", labels.join("\n")));
        assert!(matches!(e, PolicyError::TooMany { count: 17, .. }), "{e}");
    }

    #[test]
    fn too_many_writer_rules() {
        let mut p = Policy::development(None);
        p.writers = vec![p.writers[0].clone(); WRITER_RULES_MAX + 1];
        assert!(matches!(p.validate(), Err(PolicyError::TooMany { .. })));
    }

    /// Found by the `wire` fuzz target: the codec form saturated `split.bytes_max` to
    /// i64::MAX like the TOML form, so decode → encode → decode changed the policy.
    #[test]
    fn codec_keeps_u64_bytes_max() {
        let mut p = Policy::default();
        p.split.bytes_max = u64::MAX - 1;
        let bytes = proto::codec::encode(&p).unwrap();
        let back: Policy = proto::codec::decode(&bytes, bytes.len()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn extreme_values_still_serialize() {
        let mut p = Policy::default();
        p.split.bytes_max = u64::MAX;
        p.limits.names_max = Some(u32::MAX);
        let text = p.to_toml();
        assert!(text.contains(&i64::MAX.to_string()), "{text}");
    }

    /// The `[split]` form written before `auto`, `interval_s_min` and `[merge]` existed
    /// still parses, and changes nothing: automatic splits and merges stay off.
    #[test]
    fn split_and_merge_defaults_keep_old_policies_as_they_were() {
        let p = Policy::from_toml(&full_toml()).unwrap();
        assert!(!p.split.auto);
        assert_eq!(p.split.interval_s_min, 60);
        assert_eq!(p.merge, Merge::default());
        assert!(!p.merge.auto);
        assert_eq!(p.merge.age_s_min, 3600);
        assert_eq!(p.merge.names_min_for(&p.split), 1250);
        assert_eq!(p.merge.bytes_min_for(&p.split), 250_000);
        // A tiny split limit is still valid with the default merge minimum.
        let tiny = Policy::from_toml(
            "[split]
names_max = 1
",
        )
        .unwrap();
        assert_eq!(tiny.merge.names_min_for(&tiny.split), 0);
    }

    #[test]
    fn split_and_merge_keys_parse_and_round_trip() {
        let text = "[split]\nauto = true\nnames_max = 1000\nwindow_s = 10\ninterval_s_min = 30\n\n\
                    [merge]\nauto = true\nnames_min = 200\nbytes_min = 1000\nage_s_min = 600\n";
        let p = Policy::from_toml(text).unwrap();
        assert!(p.split.auto && p.merge.auto);
        assert_eq!((p.split.window_s, p.split.interval_s_min), (10, 30));
        assert_eq!(p.merge.names_min_for(&p.split), 200);
        assert_eq!(p.merge.bytes_min_for(&p.split), 1000);
        assert_eq!(p.merge.age_s_min, 600);
        let back = Policy::from_toml(&p.to_toml()).unwrap();
        assert_eq!(back, p);
        let bytes = proto::codec::encode(&p).unwrap();
        assert_eq!(
            proto::codec::decode::<Policy>(&bytes, bytes.len()).unwrap(),
            p
        );
    }

    #[test]
    fn split_and_merge_errors_name_the_field() {
        for (text, field) in [
            ("[split]\ninterval_s_min = 0", "split.interval_s_min"),
            ("[split]\ninterval_s_min = 99999999", "split.interval_s_min"),
            ("[merge]\nage_s_min = 0", "merge.age_s_min"),
            ("[merge]\nnames_min = 0", "merge.names_min"),
            ("[merge]\nbytes_min = 0", "merge.bytes_min"),
            ("[merge]\nsize_min = 5", "size_min"),
        ] {
            let e = err(text);
            assert!(e.to_string().contains(field), "{text}: {e}");
        }
        let e = err("[split]\nnames_max = 1000\n[merge]\nnames_min = 501\n");
        assert_eq!(
            e,
            PolicyError::MergeAboveSplit {
                field: "merge.names_min".into(),
                value: 501,
                split_field: "split.names_max".into(),
                split_value: 1000
            }
        );
        assert!(
            e.to_string()
                .contains("at most half of split.names_max (500)"),
            "{e}"
        );
        Policy::from_toml("[split]\nnames_max = 1000\n[merge]\nnames_min = 500\n").unwrap();
        let e = err("[split]\nbytes_max = 100\n[merge]\nbytes_min = 51\n");
        assert!(
            matches!(e, PolicyError::MergeAboveSplit { value: 51, .. }),
            "{e}"
        );
    }

    #[test]
    fn extreme_merge_bytes_still_serialize() {
        let mut p = Policy::default();
        p.merge.bytes_min = Some(u64::MAX);
        assert!(p.to_toml().contains(&i64::MAX.to_string()));
        let bytes = proto::codec::encode(&p).unwrap();
        assert_eq!(
            proto::codec::decode::<Policy>(&bytes, bytes.len()).unwrap(),
            p
        );
    }
}
