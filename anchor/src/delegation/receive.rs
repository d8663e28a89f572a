//! The receiving side of a delegation, on each member of the new child scope: checking and
//! staging the chunks of a child's seed, then hosting the child (or, for a member that
//! missed its seeding, hosting it empty) and calling its first election.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use libp2p::PeerId;
use openraft::{CommittedLeaderId, LogId, Membership};
use proto::msg::{SeedScope, SeededNonce};
use proto::{codec, AnchorInfo, Name, Op, RecordSet, ScopeDescriptor, ScopeId, WireError};

use super::Host;
use crate::identity::raft_members;
use crate::raft::sm::Seed;
use crate::raft::NodeId;
use crate::scope::decide;
use crate::AnchorError;

/// Bytes of records one anchor stages for one incoming child scope.
const STAGED_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Child scopes one anchor stages at once.
const STAGED_SCOPES_MAX: usize = 16;
/// Elections the first member of a new child calls before leaving it to the timers.
const ELECT_TRIES: u32 = 20;
/// How long each of those waits for a leader.
const ELECT_RETRY: Duration = Duration::from_millis(150);

/// Chunks of a child scope received so far.
#[derive(Debug, Default)]
struct Staging {
    next: u32,
    records: Vec<(Name, RecordSet)>,
    nonces: Vec<SeededNonce>,
    bytes: usize,
}

/// The child-scope seeds this anchor is receiving.
#[derive(Debug, Default)]
pub struct Receiver {
    /// Seeds being received, by child id.
    seeds: Mutex<BTreeMap<ScopeId, Staging>>,
    /// Held while a child replica is built from its seed.
    building: tokio::sync::Mutex<()>,
}

impl Receiver {
    /// Receives one chunk of a child scope's seed (step 2 of a delegation) from `from`; on
    /// the last chunk, builds the replica and starts its group. Idempotent.
    pub async fn seed_scope<H: Host>(
        &self,
        host: &H,
        from: PeerId,
        s: SeedScope,
    ) -> Result<(), WireError> {
        let refused = |reason: String| WireError::Refused { reason };
        let invalid = |reason: String| WireError::Invalid { reason };
        let from = from.to_base58();
        let m = decide::verify(&s.proof)?;
        let Op::Delegate {
            prefix,
            members,
            policy_toml,
            ..
        } = m.op
        else {
            return Err(invalid("the proof is not a delegation".into()));
        };
        // A seed comes from the parent's anchors; an offer to join empty may also come from
        // the child's own leader.
        let parent_member = s.parent.members.iter().any(|m| m.peer_id == from);
        let child_member = members.iter().any(|m| m.anchor.peer_id == from);
        if !(parent_member || (s.join_only && child_member)) {
            return Err(refused(format!(
                "{from} is not a member of the parent scope {}; only its anchors seed a child",
                s.parent.id
            )));
        }
        if !prefix.is_under(&s.parent.prefix) || prefix == s.parent.prefix {
            return Err(invalid(format!(
                "{prefix} is not below the parent's prefix {}",
                s.parent.prefix
            )));
        }
        if ScopeId::child(&s.parent.id, &prefix, s.index) != s.child {
            return Err(invalid(
                "the child id does not match the delegation and its index".into(),
            ));
        }
        let me = host.peer_id().to_base58();
        if !members.iter().any(|m| m.anchor.peer_id == me) {
            return Err(refused(format!(
                "this anchor ({me}) is not a member of {prefix}"
            )));
        }
        let policy = policy::Policy::from_toml(&policy_toml).map_err(|e| invalid(e.to_string()))?;
        if let Err(e) = policy::placement_allows(&policy, host.labels()) {
            return Err(refused(format!(
                "this anchor cannot host {prefix}: {e} (set labels in anchor.toml)"
            )));
        }
        if let Some((bad, _)) = s.records.iter().find(|(n, _)| !n.is_under(&prefix)) {
            return Err(invalid(format!("seed record {bad} is not under {prefix}")));
        }
        if let Some(bad) = s.nonces.iter().find(|n| !n.name.is_under(&prefix)) {
            return Err(invalid(format!(
                "seed nonce for {} is not under {prefix}",
                bad.name
            )));
        }
        if host.replica(&s.child).is_some() {
            return Ok(());
        }
        let anchors: Vec<AnchorInfo> = members.iter().map(|m| m.anchor.clone()).collect();
        let descriptor = ScopeDescriptor {
            id: s.child,
            prefix: prefix.clone(),
            epoch: 1,
            members: anchors,
            range: proto::KeyRange::all(),
        };
        if s.join_only {
            let _building = self.building.lock().await;
            if host.replica(&s.child).is_some() {
                return Ok(());
            }
            return join_child(host, &descriptor)
                .await
                .map_err(|e| WireError::Unavailable {
                    reason: format!("creating the replica failed: {e}"),
                });
        }
        let staged = {
            let Ok(mut seeds) = self.seeds.lock() else {
                return Err(refused("seed staging is unavailable".into()));
            };
            if s.chunk_no == 0 {
                if !seeds.contains_key(&s.child) && seeds.len() >= STAGED_SCOPES_MAX {
                    return Err(WireError::Unavailable {
                        reason: "too many child scopes being seeded here; retry".into(),
                    });
                }
                seeds.insert(s.child, Staging::default());
            }
            let Some(staging) = seeds.get_mut(&s.child) else {
                return Err(refused(format!(
                    "chunk {} arrived before chunk 0; start again",
                    s.chunk_no
                )));
            };
            if staging.next != s.chunk_no {
                return Err(refused(format!(
                    "expected chunk {}, got {}; start again",
                    staging.next, s.chunk_no
                )));
            }
            let bytes: usize = s
                .records
                .iter()
                .map(|(n, r)| n.to_string().len() + codec::encode(r).map_or(0, |b| b.len()))
                .sum::<usize>()
                + s.nonces.len() * 64;
            if staging.bytes + bytes > STAGED_BYTES_MAX {
                seeds.remove(&s.child);
                return Err(refused(format!(
                    "the child's records exceed {STAGED_BYTES_MAX} bytes"
                )));
            }
            staging.bytes += bytes;
            staging.next += 1;
            staging.records.extend(s.records);
            staging.nonces.extend(s.nonces);
            if !s.last {
                return Ok(());
            }
            seeds.remove(&s.child).unwrap_or_default()
        };
        let _building = self.building.lock().await;
        if host.replica(&s.child).is_some() {
            return Ok(());
        }
        build_child(
            host,
            &descriptor,
            &s.parent,
            &policy_toml,
            (&staged.records, &staged.nonces),
            s.index,
            Born::Delegated(&s.proof),
        )
        .await
        .map_err(|e| WireError::Unavailable {
            reason: format!("building the child replica failed: {e}"),
        })?;
        Ok(())
    }
}

/// An empty replica of a child scope that missed its seeding; the child's leader sends it a
/// snapshot.
pub(super) async fn join_child<H: Host>(
    host: &H,
    descriptor: &ScopeDescriptor,
) -> Result<(), AnchorError> {
    host.host_empty(descriptor).await?;
    tracing::info!(scope = %descriptor.id, prefix = %descriptor.prefix, "joined a child scope empty; catching up by snapshot");
    Ok(())
}

/// How a child scope came to be.
pub(super) enum Born<'a> {
    /// By an operator's delegation, with its admin-signed proof.
    Delegated(&'a proto::SignedMutation),
    /// By its parent's own split, at this time of the parent's split entry.
    Split {
        /// The carried proposal time of the split entry, ms.
        at_ms: Option<u64>,
    },
}

/// Hosts the child from its seed (`moved`: its records and nonces); its first listed member
/// calls the election.
pub(super) async fn build_child<H: Host>(
    host: &H,
    descriptor: &ScopeDescriptor,
    parent: &ScopeDescriptor,
    policy_toml: &str,
    moved: (&[(Name, RecordSet)], &[SeededNonce]),
    index: u64,
    born: Born<'_>,
) -> Result<(), AnchorError> {
    let (proof, split_at_ms) = match born {
        Born::Delegated(proof) => (Some(proof), None),
        Born::Split { at_ms } => (None, at_ms),
    };
    let (records, nonces) = moved;
    let nodes = raft_members(&descriptor.members)?;
    let voters: BTreeSet<NodeId> = nodes.keys().copied().collect();
    let log_id = LogId::new(CommittedLeaderId::new(0, 0), index);
    let seed = Seed {
        child: descriptor,
        parent,
        policy_toml,
        records,
        nonces,
        log_id,
        membership: Membership::new(vec![voters], nodes),
        proof,
        split_at_ms,
    };
    let replica = host.host_seeded(&seed).await?;
    tracing::info!(scope = %descriptor.id, prefix = %descriptor.prefix, records = records.len(), at = index, "child scope seeded");
    let first = descriptor.members.first().map(|m| m.peer_id.as_str());
    if first == Some(host.peer_id().to_base58().as_str()) {
        // The others are seeded at about the same time, maybe a moment later: call the
        // election again until one has a leader, rather than wait a whole election
        // timeout after a vote the others could not grant yet.
        tokio::spawn(async move {
            for _ in 0..ELECT_TRIES {
                if replica.metrics().borrow().current_leader.is_some() {
                    return;
                }
                let Ok(raft) = replica.group().await else {
                    return;
                };
                let _ = raft.trigger().elect().await;
                let mut m = raft.metrics();
                let _ = tokio::time::timeout(ELECT_RETRY, async {
                    while m.changed().await.is_ok() {
                        if m.borrow().current_leader.is_some() {
                            return;
                        }
                    }
                })
                .await;
            }
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "receive_tests.rs"]
mod tests;
