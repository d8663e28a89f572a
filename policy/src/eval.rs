//! Evaluation: may this signed request be applied, may this reader read, may this anchor
//! host the scope. Pure functions of their arguments.

use std::collections::{BTreeMap, BTreeSet};

use proto::limits::MUTATION_VALIDITY_MS_MAX;
use proto::{Name, Op, Record, RecordKind};
use thiserror::Error;

use crate::model::{Limits, Policy, ReadAccess, WriteOp};

/// What is being asked of a scope, with the scope state the decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The operation.
    pub op: &'a Op,
    /// The prefix of the scope asked (whose policy is evaluated).
    pub scope_prefix: &'a Name,
    /// Names the scope holds now.
    pub names_now: u64,
    /// Whether the addressed name exists now (ignored for policy changes).
    pub name_exists: bool,
    /// The mutation's expiry, ms since the Unix epoch; `None` skips the expiry checks (for
    /// example at apply, when the leader already checked it against its clock).
    pub expires_at_ms: Option<u64>,
}

impl<'a> Request<'a> {
    /// A request without an expiry check.
    pub fn new(op: &'a Op, scope_prefix: &'a Name, names_now: u64, name_exists: bool) -> Self {
        Request {
            op,
            scope_prefix,
            names_now,
            name_exists,
            expires_at_ms: None,
        }
    }

    /// The same request, checking `expires_at_ms` against the `now_ms` given to [`evaluate`].
    pub fn with_expiry(self, expires_at_ms: u64) -> Self {
        Request {
            expires_at_ms: Some(expires_at_ms),
            ..self
        }
    }
}

/// The outcome of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The request may be applied.
    Allow,
    /// The request must be refused, for this reason.
    Deny(DenyReason),
}

impl Decision {
    /// True for [`Decision::Allow`].
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }

    /// `Ok(())` for allow, `Err(reason)` for deny.
    pub fn into_result(self) -> Result<(), DenyReason> {
        match self {
            Decision::Allow => Ok(()),
            Decision::Deny(reason) => Err(reason),
        }
    }
}

/// Why a request was refused. The message tells the user what to change.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DenyReason {
    /// The mutation's expiry has passed.
    #[error("the mutation expired at {expires_at_ms} ms, it is now {now_ms} ms; sign it again with a later expiry")]
    Expired {
        /// Its expiry, ms since the epoch.
        expires_at_ms: u64,
        /// The time of the decision.
        now_ms: u64,
    },
    /// The mutation's expiry lies further ahead than the protocol allows.
    #[error("the mutation expires at {expires_at_ms} ms, more than {max_ms} ms after now ({now_ms} ms); sign it with an expiry at most {max_ms} ms ahead")]
    ExpiryTooFar {
        /// Its expiry, ms since the epoch.
        expires_at_ms: u64,
        /// The time of the decision.
        now_ms: u64,
        /// [`MUTATION_VALIDITY_MS_MAX`].
        max_ms: u64,
    },
    /// The name is outside the scope asked.
    #[error(
        "{name} is not under this scope's prefix {scope}; send it to the scope that governs it"
    )]
    NotUnderScope {
        /// The name written.
        name: Name,
        /// The scope's prefix.
        scope: Name,
    },
    /// No signer at all.
    #[error("the mutation carries no signature; sign it with a writer key")]
    NoSigner,
    /// No `[[writers]]` rule admits this key for this op on this name.
    #[error("key {} may not {op} {name}: no [[writers]] rule allows this key to {op} this name", hex::encode(.key))]
    NoRuleForKey {
        /// The writer's key (first signer).
        key: [u8; 32],
        /// The operation.
        op: WriteOp,
        /// The name.
        name: Name,
    },
    /// A record kind outside `[limits] kinds`.
    #[error("record kind {kind} is not allowed in this scope (policy [limits] kinds)")]
    KindNotAllowed {
        /// The first refused kind.
        kind: RecordKind,
    },
    /// TTL above `[limits] ttl_s_max`.
    #[error(
        "ttl {ttl_s}s is longer than the {max}s this scope allows (policy [limits] ttl_s_max)"
    )]
    TtlTooLong {
        /// The TTL asked for.
        ttl_s: u32,
        /// The limit.
        max: u32,
    },
    /// Record set payload above `[limits] record_bytes_max`.
    #[error("the record set holds {bytes} payload bytes; this scope allows at most {max} (policy [limits] record_bytes_max)")]
    RecordTooLarge {
        /// Sum of the records' payload bytes.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// Creating a name would exceed `[limits] names_max`.
    #[error("this scope already holds its maximum of {max} names (policy [limits] names_max); delete names or raise the limit")]
    TooManyNames {
        /// The limit.
        max: u64,
    },
    /// A policy change addressed to another prefix than the scope's.
    #[error("the policy change is for prefix {prefix} but this scope's prefix is {scope}")]
    WrongPolicyPrefix {
        /// The prefix in the mutation.
        prefix: Name,
        /// The scope's prefix.
        scope: Name,
    },
    /// The policy has no `[admin]` section, so it can never change.
    #[error("this scope's policy has no [admin] section, so it is frozen and cannot be changed")]
    PolicyFrozen,
    /// Fewer distinct admin signatures than the threshold.
    #[error("the policy change has {have} distinct admin signatures; it needs {need} (policy [admin] threshold)")]
    NotEnoughAdminSignatures {
        /// Distinct signers that are admin keys.
        have: usize,
        /// The threshold k.
        need: usize,
    },
    /// The new policy's TOML does not validate.
    #[error("the new policy is invalid: {reason}")]
    InvalidPolicy {
        /// The validation error.
        reason: String,
    },
    /// The anchor lacks a label the placement requires.
    #[error("the anchor has no label {label:?}; placement requires {label}={required}")]
    PlacementLabelMissing {
        /// The label key.
        label: String,
        /// The value required.
        required: String,
    },
    /// The anchor's label has another value than the placement requires.
    #[error("the anchor has label {label}={found}; placement requires {label}={required}")]
    PlacementLabelMismatch {
        /// The label key.
        label: String,
        /// The value required.
        required: String,
        /// The anchor's value.
        found: String,
    },
    /// A delegation's prefix is not strictly below the scope's prefix.
    #[error("cannot delegate {prefix}: it must lie strictly below this scope's prefix {scope}")]
    DelegateNotBelow {
        /// The prefix asked for.
        prefix: Name,
        /// The scope's prefix.
        scope: Name,
    },
    /// An operator's split names a place that is not strictly below the scope's prefix.
    #[error("cannot split at {at}: it must lie strictly below this scope's prefix {scope}")]
    SplitNotBelow {
        /// The name asked for.
        at: Name,
        /// The scope's prefix.
        scope: Name,
    },
    /// An operator's merge names a part that is not strictly below the scope's prefix.
    #[error("cannot merge {part} back: it must lie strictly below this scope's prefix {scope}")]
    MergeNotBelow {
        /// The part named.
        part: Name,
        /// The scope's prefix.
        scope: Name,
    },
    /// An anchor a member change adds does not satisfy the scope's placement.
    #[error("anchor {anchor} cannot join this scope: {reason}")]
    MemberPlacement {
        /// The anchor's peer id.
        anchor: String,
        /// The placement rule it breaks.
        reason: Box<DenyReason>,
    },
    /// A chosen member anchor does not satisfy the child policy's placement.
    #[error("anchor {anchor} cannot host the new scope: {reason}")]
    DelegateMemberPlacement {
        /// The anchor's peer id.
        anchor: String,
        /// Why (a placement deny reason).
        reason: Box<DenyReason>,
    },
    /// Fewer member anchors than the child policy's `[placement] replicas`.
    #[error("the delegation names {have} member anchors; the child policy's [placement] replicas asks for {need}")]
    DelegateTooFewMembers {
        /// Members named.
        have: usize,
        /// Replicas required.
        need: usize,
    },
}

impl DenyReason {
    /// A short snake_case label for a Prometheus counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DenyReason::Expired { .. } => "expired",
            DenyReason::ExpiryTooFar { .. } => "expiry_too_far",
            DenyReason::NotUnderScope { .. } => "not_under_scope",
            DenyReason::NoSigner => "no_signer",
            DenyReason::NoRuleForKey { .. } => "no_rule_for_key",
            DenyReason::KindNotAllowed { .. } => "kind_not_allowed",
            DenyReason::TtlTooLong { .. } => "ttl_too_long",
            DenyReason::RecordTooLarge { .. } => "record_too_large",
            DenyReason::TooManyNames { .. } => "too_many_names",
            DenyReason::WrongPolicyPrefix { .. } => "wrong_policy_prefix",
            DenyReason::PolicyFrozen => "policy_frozen",
            DenyReason::NotEnoughAdminSignatures { .. } => "not_enough_admin_signatures",
            DenyReason::InvalidPolicy { .. } => "invalid_policy",
            DenyReason::PlacementLabelMissing { .. } => "placement_label_missing",
            DenyReason::PlacementLabelMismatch { .. } => "placement_label_mismatch",
            DenyReason::DelegateNotBelow { .. } => "delegate_not_below",
            DenyReason::DelegateMemberPlacement { .. } => "delegate_member_placement",
            DenyReason::DelegateTooFewMembers { .. } => "delegate_too_few_members",
            DenyReason::SplitNotBelow { .. } => "split_not_below",
            DenyReason::MergeNotBelow { .. } => "merge_not_below",
            DenyReason::MemberPlacement { .. } => "member_placement",
        }
    }
}

/// Decides whether `req`, signed by `signers` (the writer first), may be applied under
/// `policy` at time `now_ms` (ms since the Unix epoch, used only when the request carries an
/// expiry). Pass the same `now_ms` on every replica (e.g. one stored in the log entry), never
/// a local clock read at apply, so all replicas decide alike.
///
/// - Writes: the name must lie under the scope prefix and a `[[writers]]` rule must admit
///   `signers[0]` for the op and name; puts and cas must keep `[limits]`, and `names_max`
///   counts only when the name does not exist yet. A delete of a missing name is allowed.
/// - Policy changes: the prefix must equal the scope prefix, at least `threshold` distinct
///   signers must be admin keys, and the new TOML must validate.
///
/// The scope's range and delegations are not checked here: the caller routes the name.
pub fn evaluate(policy: &Policy, req: &Request<'_>, signers: &[[u8; 32]], now_ms: u64) -> Decision {
    match check(policy, req, signers, now_ms) {
        Ok(()) => Decision::Allow,
        Err(reason) => Decision::Deny(reason),
    }
}

fn check(
    policy: &Policy,
    req: &Request<'_>,
    signers: &[[u8; 32]],
    now_ms: u64,
) -> Result<(), DenyReason> {
    if let Some(expires_at_ms) = req.expires_at_ms {
        check_expiry(expires_at_ms, now_ms)?;
    }
    match req.op {
        Op::Put {
            name,
            records,
            ttl_s,
        } => {
            check_writer(policy, req, signers, WriteOp::Put, name)?;
            check_records(&policy.limits, req, records, *ttl_s)
        }
        Op::Cas {
            name,
            records,
            ttl_s,
            ..
        } => {
            check_writer(policy, req, signers, WriteOp::Cas, name)?;
            check_records(&policy.limits, req, records, *ttl_s)
        }
        Op::Delete { name } => check_writer(policy, req, signers, WriteOp::Delete, name),
        Op::SetPolicy {
            prefix,
            policy_toml,
        } => check_set_policy(policy, req.scope_prefix, prefix, policy_toml, signers),
        Op::Delegate {
            prefix,
            members,
            policy_toml,
            ..
        } => check_delegate(
            policy,
            req.scope_prefix,
            prefix,
            members,
            policy_toml,
            signers,
        ),
        Op::Split { at, .. } => {
            if !at.is_under(req.scope_prefix) || at == req.scope_prefix {
                return Err(DenyReason::SplitNotBelow {
                    at: at.clone(),
                    scope: req.scope_prefix.clone(),
                });
            }
            check_admins(policy, signers)
        }
        Op::Merge { part, .. } => {
            if !part.is_under(req.scope_prefix) || part == req.scope_prefix {
                return Err(DenyReason::MergeNotBelow {
                    part: part.clone(),
                    scope: req.scope_prefix.clone(),
                });
            }
            check_admins(policy, signers)
        }
        Op::Members { add, .. } => {
            check_admins(policy, signers)?;
            for m in add {
                placement_allows(policy, &m.labels).map_err(|reason| {
                    DenyReason::MemberPlacement {
                        anchor: m.anchor.peer_id.clone(),
                        reason: Box::new(reason),
                    }
                })?;
            }
            Ok(())
        }
    }
}

fn check_expiry(expires_at_ms: u64, now_ms: u64) -> Result<(), DenyReason> {
    if now_ms > expires_at_ms {
        return Err(DenyReason::Expired {
            expires_at_ms,
            now_ms,
        });
    }
    if expires_at_ms - now_ms > MUTATION_VALIDITY_MS_MAX {
        return Err(DenyReason::ExpiryTooFar {
            expires_at_ms,
            now_ms,
            max_ms: MUTATION_VALIDITY_MS_MAX,
        });
    }
    Ok(())
}

fn check_writer(
    policy: &Policy,
    req: &Request<'_>,
    signers: &[[u8; 32]],
    op: WriteOp,
    name: &Name,
) -> Result<(), DenyReason> {
    if !name.is_under(req.scope_prefix) {
        return Err(DenyReason::NotUnderScope {
            name: name.clone(),
            scope: req.scope_prefix.clone(),
        });
    }
    let key = signers.first().ok_or(DenyReason::NoSigner)?;
    if policy.writers.iter().any(|rule| rule.admits(key, op, name)) {
        return Ok(());
    }
    Err(DenyReason::NoRuleForKey {
        key: *key,
        op,
        name: name.clone(),
    })
}

fn check_records(
    limits: &Limits,
    req: &Request<'_>,
    records: &[Record],
    ttl_s: u32,
) -> Result<(), DenyReason> {
    let refused = records
        .iter()
        .map(Record::kind)
        .find(|k| !limits.kinds.contains(k));
    if let Some(kind) = refused {
        return Err(DenyReason::KindNotAllowed { kind });
    }
    if ttl_s > limits.ttl_s_max {
        return Err(DenyReason::TtlTooLong {
            ttl_s,
            max: limits.ttl_s_max,
        });
    }
    let bytes: u64 = records.iter().map(|r| r.payload_bytes() as u64).sum();
    let max = u64::from(limits.record_bytes_max);
    if bytes > max {
        return Err(DenyReason::RecordTooLarge { bytes, max });
    }
    match limits.names_max.map(u64::from) {
        Some(max) if !req.name_exists && req.names_now >= max => {
            Err(DenyReason::TooManyNames { max })
        }
        _ => Ok(()),
    }
}

fn check_set_policy(
    policy: &Policy,
    scope: &Name,
    prefix: &Name,
    policy_toml: &str,
    signers: &[[u8; 32]],
) -> Result<(), DenyReason> {
    if prefix != scope {
        return Err(DenyReason::WrongPolicyPrefix {
            prefix: prefix.clone(),
            scope: scope.clone(),
        });
    }
    check_admins(policy, signers)?;
    Policy::from_toml(policy_toml)
        .map(|_| ())
        .map_err(|e| DenyReason::InvalidPolicy {
            reason: e.to_string(),
        })
}

/// A delegation: the prefix strictly below the scope's, k of n admins of the *parent's*
/// policy, a valid child policy, enough members, and every member's (signed) labels
/// satisfying the child policy's placement.
fn check_delegate(
    policy: &Policy,
    scope: &Name,
    prefix: &Name,
    members: &[proto::MemberSpec],
    policy_toml: &str,
    signers: &[[u8; 32]],
) -> Result<(), DenyReason> {
    if !prefix.is_under(scope) || prefix == scope {
        return Err(DenyReason::DelegateNotBelow {
            prefix: prefix.clone(),
            scope: scope.clone(),
        });
    }
    check_admins(policy, signers)?;
    let child = Policy::from_toml(policy_toml).map_err(|e| DenyReason::InvalidPolicy {
        reason: e.to_string(),
    })?;
    let need = child.placement.replicas as usize;
    if members.len() < need {
        return Err(DenyReason::DelegateTooFewMembers {
            have: members.len(),
            need,
        });
    }
    for m in members {
        placement_allows(&child, &m.labels).map_err(|reason| {
            DenyReason::DelegateMemberPlacement {
                anchor: m.anchor.peer_id.clone(),
                reason: Box::new(reason),
            }
        })?;
    }
    Ok(())
}

fn check_admins(policy: &Policy, signers: &[[u8; 32]]) -> Result<(), DenyReason> {
    let admin = policy.admin.as_ref().ok_or(DenyReason::PolicyFrozen)?;
    let have = signers
        .iter()
        .filter(|k| admin.keys.contains(*k))
        .collect::<BTreeSet<_>>()
        .len();
    let need = admin.threshold as usize;
    if have < need {
        return Err(DenyReason::NotEnoughAdminSignatures { have, need });
    }
    Ok(())
}

/// True if `reader` (`None` = anonymous) may read under `policy`.
pub fn may_read(policy: &Policy, reader: Option<&[u8; 32]>) -> bool {
    match policy.reads.access {
        ReadAccess::Anonymous => true,
        ReadAccess::Keyed => reader.is_some_and(|k| policy.reads.keys.contains(k)),
    }
}

/// `Ok(())` if an anchor with `anchor_labels` carries every label `[placement]` requires,
/// with the required value; otherwise the first label that is missing or different.
pub fn placement_allows(
    policy: &Policy,
    anchor_labels: &BTreeMap<String, String>,
) -> Result<(), DenyReason> {
    for (label, required) in &policy.placement.labels {
        match anchor_labels.get(label) {
            Some(found) if found == required => {}
            Some(found) => {
                return Err(DenyReason::PlacementLabelMismatch {
                    label: label.clone(),
                    required: required.clone(),
                    found: found.clone(),
                })
            }
            None => {
                return Err(DenyReason::PlacementLabelMissing {
                    label: label.clone(),
                    required: required.clone(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::tests::key;

    const WRITER: u8 = 1;
    const OTHER: u8 = 2;
    const ADMINS: [u8; 3] = [10, 11, 12];
    const NOW: u64 = 1_000_000;

    fn name(s: &str) -> Name {
        Name::parse(s).unwrap()
    }

    /// `/eu` scope: WRITER may put/delete/cas under /eu; anyone may put /eu/*/api;
    /// 2 of 3 admins; addr and text only; ttl ≤ 3600; ≤ 100 payload bytes; ≤ 10 names.
    fn policy() -> Policy {
        let admins: Vec<String> = ADMINS
            .iter()
            .map(|s| format!("\"{}\"", hex::encode(key(*s))))
            .collect();
        Policy::from_toml(&format!(
            r#"
[admin]
keys = [{admins}]
threshold = 2
[[writers]]
pattern = "/eu/**"
keys = ["{writer}"]
[[writers]]
pattern = "/eu/*/api"
ops = ["put"]
keys = ["*"]
[limits]
kinds = ["addr", "text"]
ttl_s_max = 3600
record_bytes_max = 100
names_max = 10
[reads]
access = "keyed"
keys = ["{writer}"]
[placement.labels]
jurisdiction = "eu"
"#,
            admins = admins.join(", "),
            writer = hex::encode(key(WRITER)),
        ))
        .unwrap()
    }

    fn put(n: &str, records: Vec<Record>, ttl_s: u32) -> Op {
        Op::Put {
            name: name(n),
            records,
            ttl_s,
        }
    }

    fn text_put(n: &str) -> Op {
        put(n, vec![Record::Text("hi".into())], 60)
    }

    /// Evaluates `op` in scope `/eu` holding `names_now` names, the target existing or not.
    fn decide_in(op: &Op, names_now: u64, exists: bool, signers: &[u8]) -> Decision {
        let scope = name("/eu");
        let req = Request::new(op, &scope, names_now, exists);
        let signers: Vec<[u8; 32]> = signers.iter().map(|s| key(*s)).collect();
        evaluate(&policy(), &req, &signers, NOW)
    }

    fn decide(op: &Op, signers: &[u8]) -> Decision {
        decide_in(op, 0, false, signers)
    }

    fn deny(op: &Op, signers: &[u8]) -> DenyReason {
        match decide(op, signers) {
            Decision::Deny(reason) => reason,
            Decision::Allow => panic!("{op:?} was allowed"),
        }
    }

    fn set_policy(prefix: &str, toml: &str) -> Op {
        Op::SetPolicy {
            prefix: name(prefix),
            policy_toml: toml.into(),
        }
    }

    #[test]
    fn allows_writes_a_rule_admits() {
        assert!(decide(&text_put("/eu/x"), &[WRITER]).is_allow());
        assert!(decide(&text_put("/eu"), &[WRITER]).is_allow());
        assert!(decide(&text_put("/eu/pay/api"), &[OTHER]).is_allow());
        let cas = Op::Cas {
            name: name("/eu/x"),
            expected_version: 0,
            records: vec![Record::Text("hi".into())],
            ttl_s: 3600,
        };
        assert_eq!(decide(&cas, &[WRITER]), Decision::Allow);
        // Only the first signer is the writer; co-signers do not matter.
        assert!(decide(&text_put("/eu/x"), &[WRITER, OTHER]).is_allow());
        assert_eq!(decide(&text_put("/eu/x"), &[WRITER]).into_result(), Ok(()));
    }

    #[test]
    fn delete_of_missing_name_is_allowed() {
        let del = Op::Delete {
            name: name("/eu/gone"),
        };
        assert!(decide_in(&del, 10, false, &[WRITER]).is_allow());
        assert!(decide_in(&del, 10, true, &[WRITER]).is_allow());
    }

    #[test]
    fn names_max_counts_only_new_names() {
        assert!(decide_in(&text_put("/eu/x"), 10, true, &[WRITER]).is_allow());
        assert!(decide_in(&text_put("/eu/x"), 9, false, &[WRITER]).is_allow());
        assert_eq!(
            decide_in(&text_put("/eu/x"), 10, false, &[WRITER]),
            Decision::Deny(DenyReason::TooManyNames { max: 10 })
        );
    }

    #[test]
    fn deny_expired_and_expiry_too_far() {
        let op = text_put("/eu/x");
        let scope = name("/eu");
        let at = |expires| {
            let req = Request::new(&op, &scope, 0, false).with_expiry(expires);
            evaluate(&policy(), &req, &[key(WRITER)], NOW)
        };
        assert!(at(NOW).is_allow());
        assert!(at(NOW + MUTATION_VALIDITY_MS_MAX).is_allow());
        assert_eq!(
            at(NOW - 1),
            Decision::Deny(DenyReason::Expired {
                expires_at_ms: NOW - 1,
                now_ms: NOW
            })
        );
        assert_eq!(
            at(NOW + MUTATION_VALIDITY_MS_MAX + 1),
            Decision::Deny(DenyReason::ExpiryTooFar {
                expires_at_ms: NOW + MUTATION_VALIDITY_MS_MAX + 1,
                now_ms: NOW,
                max_ms: MUTATION_VALIDITY_MS_MAX
            })
        );
    }

    #[test]
    fn deny_not_under_scope() {
        assert_eq!(
            deny(&text_put("/us/x"), &[WRITER]),
            DenyReason::NotUnderScope {
                name: name("/us/x"),
                scope: name("/eu")
            }
        );
        assert!(matches!(
            deny(&Op::Delete { name: name("/") }, &[WRITER]),
            DenyReason::NotUnderScope { .. }
        ));
    }

    #[test]
    fn deny_no_signer() {
        assert_eq!(deny(&text_put("/eu/x"), &[]), DenyReason::NoSigner);
    }

    #[test]
    fn deny_no_rule_for_key() {
        let expected = |op, n: &str| DenyReason::NoRuleForKey {
            key: key(OTHER),
            op,
            name: name(n),
        };
        // Unknown key on a name only WRITER covers.
        assert_eq!(
            deny(&text_put("/eu/x"), &[OTHER]),
            expected(WriteOp::Put, "/eu/x")
        );
        // The any-key rule allows only put.
        let del = Op::Delete {
            name: name("/eu/pay/api"),
        };
        assert_eq!(
            deny(&del, &[OTHER]),
            expected(WriteOp::Delete, "/eu/pay/api")
        );
        // Co-signing by the allowed key does not help: the writer is the first signer.
        assert!(matches!(
            deny(&text_put("/eu/x"), &[OTHER, WRITER]),
            DenyReason::NoRuleForKey { .. }
        ));
        let msg = expected(WriteOp::Put, "/eu/x").to_string();
        assert!(msg.contains(&hex::encode(key(OTHER))) && msg.contains("may not put /eu/x"));
    }

    #[test]
    fn deny_kind_not_allowed() {
        let op = put(
            "/eu/x",
            vec![Record::Text("a".into()), Record::Blob(vec![1])],
            60,
        );
        assert_eq!(
            deny(&op, &[WRITER]),
            DenyReason::KindNotAllowed {
                kind: RecordKind::Blob
            }
        );
    }

    #[test]
    fn deny_ttl_too_long() {
        let op = put("/eu/x", vec![Record::Text("a".into())], 3601);
        assert_eq!(
            deny(&op, &[WRITER]),
            DenyReason::TtlTooLong {
                ttl_s: 3601,
                max: 3600
            }
        );
    }

    #[test]
    fn deny_record_too_large() {
        let fits = put("/eu/x", vec![Record::Text("a".repeat(100))], 60);
        assert!(decide(&fits, &[WRITER]).is_allow());
        let op = put(
            "/eu/x",
            vec![Record::Text("a".repeat(60)), Record::Text("b".repeat(41))],
            60,
        );
        assert_eq!(
            deny(&op, &[WRITER]),
            DenyReason::RecordTooLarge {
                bytes: 101,
                max: 100
            }
        );
    }

    #[test]
    fn set_policy_allowed_with_k_admins() {
        let op = set_policy("/eu", "");
        assert!(decide(&op, &[ADMINS[0], ADMINS[2]]).is_allow());
        assert!(decide(&op, &[OTHER, ADMINS[1], ADMINS[0]]).is_allow());
    }

    #[test]
    fn an_operators_merge_needs_k_admins_and_a_part_below_the_scope() {
        let merge = |part: &str| Op::Merge {
            scope: name("/eu"),
            part: name(part),
        };
        assert!(decide(&merge("/eu/shop"), &[ADMINS[0], ADMINS[1]]).is_allow());
        assert_eq!(
            deny(&merge("/eu/shop"), &[ADMINS[0], WRITER]),
            DenyReason::NotEnoughAdminSignatures { have: 1, need: 2 }
        );
        assert_eq!(
            deny(&merge("/us/shop"), &ADMINS),
            DenyReason::MergeNotBelow {
                part: name("/us/shop"),
                scope: name("/eu")
            }
        );
    }

    #[test]
    fn a_member_change_needs_k_admins_and_new_members_that_meet_placement() {
        let spec = |peer: &str, jurisdiction: Option<&str>| proto::MemberSpec {
            anchor: proto::AnchorInfo {
                peer_id: peer.into(),
                addrs: vec![],
            },
            labels: jurisdiction
                .map(|j| BTreeMap::from([("jurisdiction".to_string(), j.to_string())]))
                .unwrap_or_default(),
        };
        let change = |add: Vec<proto::MemberSpec>| Op::Members {
            scope: name("/eu"),
            add,
            remove: vec!["old".into()],
        };
        let good = change(vec![spec("new", Some("eu"))]);
        assert!(decide(&good, &[ADMINS[0], ADMINS[1]]).is_allow());
        assert_eq!(
            deny(&good, &[ADMINS[0], WRITER]),
            DenyReason::NotEnoughAdminSignatures { have: 1, need: 2 }
        );
        assert_eq!(
            deny(&change(vec![spec("us", Some("us"))]), &ADMINS),
            DenyReason::MemberPlacement {
                anchor: "us".into(),
                reason: Box::new(DenyReason::PlacementLabelMismatch {
                    label: "jurisdiction".into(),
                    required: "eu".into(),
                    found: "us".into()
                })
            }
        );
        assert!(matches!(
            deny(&change(vec![spec("bare", None)]), &ADMINS),
            DenyReason::MemberPlacement { .. }
        ));
        // Removing only needs the admins.
        assert!(decide(&change(vec![]), &[ADMINS[1], ADMINS[2]]).is_allow());
    }

    #[test]
    fn an_operators_split_needs_k_admins_and_a_place_below_the_scope() {
        let split = |at: &str| Op::Split {
            at: name(at),
            by_range: false,
        };
        assert!(decide(&split("/eu/shop"), &[ADMINS[0], ADMINS[1]]).is_allow());
        assert_eq!(
            deny(&split("/eu/shop"), &[ADMINS[0], WRITER]),
            DenyReason::NotEnoughAdminSignatures { have: 1, need: 2 }
        );
        assert_eq!(
            deny(&split("/eu"), &ADMINS),
            DenyReason::SplitNotBelow {
                at: name("/eu"),
                scope: name("/eu")
            }
        );
    }

    #[test]
    fn deny_wrong_policy_prefix() {
        assert_eq!(
            deny(&set_policy("/eu/x", ""), &ADMINS),
            DenyReason::WrongPolicyPrefix {
                prefix: name("/eu/x"),
                scope: name("/eu")
            }
        );
    }

    #[test]
    fn deny_policy_frozen() {
        let frozen = Policy::development(None);
        let op = set_policy("/", "");
        let root = Name::root();
        let req = Request::new(&op, &root, 0, false);
        let signers = [key(ADMINS[0])];
        assert_eq!(
            evaluate(&frozen, &req, &signers, NOW),
            Decision::Deny(DenyReason::PolicyFrozen)
        );
    }

    #[test]
    fn deny_not_enough_admin_signatures() {
        let op = set_policy("/eu", "");
        let short = |signers: &[u8]| deny(&op, signers);
        let want = |have| DenyReason::NotEnoughAdminSignatures { have, need: 2 };
        assert_eq!(short(&[ADMINS[0]]), want(1));
        // The same admin twice counts once; non-admin signers count not at all.
        assert_eq!(short(&[ADMINS[0], ADMINS[0]]), want(1));
        assert_eq!(short(&[WRITER, OTHER]), want(0));
    }

    #[test]
    fn deny_invalid_policy() {
        let op = set_policy("/eu", "[admin]\nkeys = []\nthreshold = 0\n");
        let DenyReason::InvalidPolicy { reason } = deny(&op, &ADMINS[..2]) else {
            panic!("expected InvalidPolicy");
        };
        assert!(reason.contains("admin.keys is empty"), "{reason}");
    }

    #[test]
    fn may_read_keyed_and_anonymous() {
        let keyed = policy();
        assert!(may_read(&keyed, Some(&key(WRITER))));
        assert!(!may_read(&keyed, Some(&key(OTHER))));
        assert!(!may_read(&keyed, None));
        let open = Policy::default();
        assert!(may_read(&open, None));
        assert!(may_read(&open, Some(&key(OTHER))));
    }

    #[test]
    fn placement_labels() {
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let p = policy();
        assert_eq!(
            placement_allows(&p, &labels(&[("jurisdiction", "eu"), ("x", "y")])),
            Ok(())
        );
        assert_eq!(placement_allows(&Policy::default(), &labels(&[])), Ok(()));
        assert_eq!(
            placement_allows(&p, &labels(&[("zone", "a")])),
            Err(DenyReason::PlacementLabelMissing {
                label: "jurisdiction".into(),
                required: "eu".into()
            })
        );
        assert_eq!(
            placement_allows(&p, &labels(&[("jurisdiction", "us")])),
            Err(DenyReason::PlacementLabelMismatch {
                label: "jurisdiction".into(),
                required: "eu".into(),
                found: "us".into()
            })
        );
    }

    #[test]
    fn metric_labels_are_distinct_snake_case() {
        let reasons = [
            DenyReason::Expired {
                expires_at_ms: 0,
                now_ms: 1,
            },
            DenyReason::ExpiryTooFar {
                expires_at_ms: 0,
                now_ms: 0,
                max_ms: 0,
            },
            DenyReason::NotUnderScope {
                name: name("/a"),
                scope: name("/b"),
            },
            DenyReason::NoSigner,
            DenyReason::NoRuleForKey {
                key: [0; 32],
                op: WriteOp::Put,
                name: name("/a"),
            },
            DenyReason::KindNotAllowed {
                kind: RecordKind::Blob,
            },
            DenyReason::TtlTooLong { ttl_s: 2, max: 1 },
            DenyReason::RecordTooLarge { bytes: 2, max: 1 },
            DenyReason::TooManyNames { max: 1 },
            DenyReason::WrongPolicyPrefix {
                prefix: name("/a"),
                scope: name("/b"),
            },
            DenyReason::PolicyFrozen,
            DenyReason::NotEnoughAdminSignatures { have: 1, need: 2 },
            DenyReason::InvalidPolicy { reason: "x".into() },
            DenyReason::PlacementLabelMissing {
                label: "a".into(),
                required: "b".into(),
            },
            DenyReason::PlacementLabelMismatch {
                label: "a".into(),
                required: "b".into(),
                found: "c".into(),
            },
        ];
        let labels: BTreeSet<&str> = reasons.iter().map(DenyReason::metric_label).collect();
        assert_eq!(labels.len(), reasons.len());
        for (reason, label) in reasons
            .iter()
            .zip(reasons.iter().map(DenyReason::metric_label))
        {
            assert!(
                label.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{label}"
            );
            assert!(!reason.to_string().is_empty());
        }
    }

    fn delegate(prefix: &str, labels: &[&[(&str, &str)]], child: &str) -> Op {
        let members = labels
            .iter()
            .enumerate()
            .map(|(i, l)| proto::MemberSpec {
                anchor: proto::AnchorInfo {
                    peer_id: format!("peer{i}"),
                    addrs: vec![],
                },
                labels: l
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            })
            .collect();
        Op::Delegate {
            prefix: name(prefix),
            members,
            policy_toml: child.into(),
            referral_ttl_s: 600,
        }
    }

    const EU_CHILD: &str = "[placement]\nreplicas = 2\n[placement.labels]\njurisdiction = \"eu\"\n";
    const EU: &[(&str, &str)] = &[("jurisdiction", "eu")];

    #[test]
    fn delegate_allowed_with_k_admins_and_matching_labels() {
        let op = delegate("/eu/payments", &[EU, EU], EU_CHILD);
        assert_eq!(decide(&op, &[10, 12]), Decision::Allow);
    }

    #[test]
    fn delegate_denied_below_k_admins_or_outside_the_scope() {
        let op = delegate("/eu/payments", &[EU, EU], EU_CHILD);
        assert!(matches!(
            deny(&op, &[10, WRITER]),
            DenyReason::NotEnoughAdminSignatures { have: 1, need: 2 }
        ));
        for prefix in ["/eu", "/us/x"] {
            let op = delegate(prefix, &[EU, EU], EU_CHILD);
            assert!(matches!(
                deny(&op, &[10, 11]),
                DenyReason::DelegateNotBelow { .. }
            ));
        }
    }

    #[test]
    fn delegate_denied_when_a_member_lacks_a_placement_label() {
        let us: &[(&str, &str)] = &[("jurisdiction", "us")];
        let op = delegate("/eu/payments", &[EU, us], EU_CHILD);
        let reason = deny(&op, &[10, 11]);
        assert!(
            matches!(&reason, DenyReason::DelegateMemberPlacement { anchor, reason }
                if anchor == "peer1" && matches!(**reason, DenyReason::PlacementLabelMismatch { .. })),
            "{reason}"
        );
        let op = delegate("/eu/payments", &[EU, &[]], EU_CHILD);
        assert_eq!(
            deny(&op, &[10, 11]).metric_label(),
            "delegate_member_placement"
        );
    }

    #[test]
    fn delegate_denied_with_fewer_members_than_replicas_or_a_bad_child_policy() {
        let op = delegate("/eu/payments", &[EU], EU_CHILD);
        assert!(matches!(
            deny(&op, &[10, 11]),
            DenyReason::DelegateTooFewMembers { have: 1, need: 2 }
        ));
        let op = delegate("/eu/payments", &[EU, EU], "[placement]\nreplicas = 0\n");
        assert!(matches!(
            deny(&op, &[10, 11]),
            DenyReason::InvalidPolicy { .. }
        ));
    }
}
