//! Carrying out delegations (DESIGN.md §8): the parent's leader seeds the child's members and
//! commits the hand-over; the child, once its parent refers to it, starts taking writes.
//!
//! 1. The parent commits `Op::Delegate` (an admin-signed mutation): the delegation is Frozen
//!    and writes under its prefix get `Moving`; reads are still served.
//! 2. [`drive`] on the parent's leader sends every child member the frozen records in chunks
//!    ([`SeedScope`], with the signed delegation as proof). Each member checks the proof, the
//!    sender and its own placement labels, then writes the child's state as a snapshot at the
//!    parent's delegation index ([`sm::seed`]) and starts the group; the first
//!    listed member calls the election.
//! 3. Once the child has a leader that applied its first entry, the parent's leader commits
//!    `DelegationActive`: the parent drops the moved records and answers with a referral.
//!    If that cannot happen within [`HAND_OVER_TIMEOUT`], it commits `DelegationAborted`.
//! 4. The child's leader, while inactive, asks its parent's members about its prefix; when one
//!    answers with a referral to it, it commits `Activate` and accepts writes.
//!
//! Every step is idempotent and re-driven by whoever leads after a leader change. At no
//! instant does a name resolve to nothing or to two different record sets: until step 3 the
//! parent answers and the child holds the same frozen records; from step 3 the parent refers
//! and the child answers; the child changes nothing before step 4.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use openraft::{CommittedLeaderId, LogId, Membership};
use proto::limits::SEED_CHUNK_BYTES_MAX;
use proto::msg::{
    AdminRequest, AdminResponse, Answer, ReadLevel, ResolveRequest, ResolveResponse, ScopeTarget,
    SeedScope, SeededNonce,
};
use proto::{
    codec, AnchorInfo, Delegation, DelegationState, Name, Op, RecordSet, ScopeDescriptor, ScopeId,
    WireError,
};
use resolver::net::Protocol;
use resolver::AnchorAddr;
use tokio::task::JoinHandle;

use crate::identity;
use crate::node::Replica;
use crate::raft::log_store::{self, LogStore};
use crate::raft::sm::{self, Seed};
use crate::raft::{NodeId, ScopeCommand};
use crate::scope::decide;
use crate::Anchor;

/// How long the parent's leader tries to seed a child before it aborts the delegation.
pub const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the parent's leader keeps trying to seed every member before it hands over with a
/// majority seeded (the rest are brought in empty by the child's leader, by snapshot).
pub const STRAGGLER_GRACE: Duration = Duration::from_secs(10);
/// How often a child's leader offers a member that never replicated a replica to join.
const JOIN_EVERY: Duration = Duration::from_secs(3);
/// Pause between attempts of a hand-over step.
const HAND_OVER_RETRY: Duration = Duration::from_millis(300);
/// How often the parent's leader asks the child's members whether it has a leader.
const CHILD_POLL: Duration = Duration::from_millis(150);
/// How often an inactive child's leader asks its parent whether it refers to it…
const PARENT_POLL: Duration = Duration::from_millis(250);
/// …and after this long (an aborted delegation, most likely)…
const PARENT_POLL_SLOW_AFTER: Duration = Duration::from_secs(600);
/// …how often it keeps asking.
const PARENT_POLL_SLOW: Duration = Duration::from_secs(10);
/// Elections the first member of a new child calls before leaving it to the timers.
const ELECT_TRIES: u32 = 20;
/// How long each of those waits for a leader.
const ELECT_RETRY: Duration = Duration::from_millis(150);
/// How often the driver looks for work.
const TICK: Duration = Duration::from_millis(200);
/// How long one request to a member may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of records one anchor stages for one incoming child scope.
const STAGED_BYTES_MAX: usize = 256 * 1024 * 1024;
/// Child scopes one anchor stages at once.
const STAGED_SCOPES_MAX: usize = 16;

/// What a driver job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    /// Seed a child and commit the hand-over (on the parent's leader).
    HandOver,
    /// Wait for the parent's referral and activate (on the child's leader).
    Activate,
}

/// Chunks of a child scope received so far.
#[derive(Debug, Default)]
pub struct Staging {
    next: u32,
    records: Vec<(Name, RecordSet)>,
    nonces: Vec<SeededNonce>,
    bytes: usize,
}

/// What one seed chunk carries.
#[derive(Clone, Debug, Default)]
struct Chunk {
    records: Vec<(Name, RecordSet)>,
    nonces: Vec<SeededNonce>,
}

/// Runs until `stop`: drives the delegations of every scope this anchor leads, and the
/// activation of every new child scope it leads.
pub(crate) async fn drive(anchor: Anchor, mut stop: tokio::sync::watch::Receiver<bool>) {
    // Keyed by what they do and the child scope: one anchor may lead both the parent (handing
    // over) and the child (waiting to activate). (A shared key once kept the hand-over from
    // ever starting while the child waited for it: found by a chaos campaign, seed 707.)
    let mut jobs: BTreeMap<(Job, ScopeId), JoinHandle<()>> = BTreeMap::new();
    let mut first_seen: BTreeMap<ScopeId, Instant> = BTreeMap::new();
    let mut joins: BTreeMap<(ScopeId, NodeId), Instant> = BTreeMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            break;
        }
        jobs.retain(|_, j| !j.is_finished());
        let me = anchor.node_id();
        let mut wanted = BTreeSet::new();
        for r in anchor.replicas() {
            if r.raft.metrics().borrow().current_leader != Some(me) {
                continue;
            }
            // Most scopes have nothing to drive: look before copying anything.
            let busy = r.state.with_view(|v| {
                v.parent.is_some()
                    || v.delegations
                        .values()
                        .any(|d| d.state == DelegationState::Frozen)
            });
            if busy != Some(true) {
                continue;
            }
            let view = r.state.view();
            for d in view.delegations.values() {
                if d.state != DelegationState::Frozen {
                    continue;
                }
                let child = d.referral.scope;
                wanted.insert(child);
                let started = *first_seen.entry(child).or_insert_with(Instant::now);
                if jobs.contains_key(&(Job::HandOver, child)) {
                    continue;
                }
                let Some(parent) = view.descriptor.clone() else {
                    continue;
                };
                let job = hand_over(anchor.clone(), r.clone(), parent, d.clone(), started);
                jobs.insert((Job::HandOver, child), tokio::spawn(job));
            }
            if let (false, Some(parent)) = (view.active, view.parent.clone()) {
                wanted.insert(r.id);
                if let std::collections::btree_map::Entry::Vacant(slot) =
                    jobs.entry((Job::Activate, r.id))
                {
                    slot.insert(tokio::spawn(activate_child(
                        anchor.clone(),
                        r.clone(),
                        parent,
                    )));
                }
            }
            if view.parent.is_some() {
                offer_joins(&anchor, &r, &mut joins);
            }
        }
        joins.retain(|_, at| at.elapsed() < JOIN_EVERY * 4);
        first_seen.retain(|id, _| wanted.contains(id));
    }
    for (_, j) in jobs {
        j.abort();
    }
}

/// A timer for a retry or poll loop: the first tick is immediate; a late tick does not make
/// the loop catch up.
fn every(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

fn leads(anchor: &Anchor, r: &Replica) -> bool {
    r.raft.metrics().borrow().current_leader == Some(anchor.node_id())
}

fn count(anchor: &Anchor, step: &str, outcome: &str) {
    anchor
        .metrics()
        .delegations
        .with_label_values(&[step, outcome])
        .inc();
}

/// Steps 2 and 3 for one Frozen delegation, while this anchor leads the parent.
async fn hand_over(
    anchor: Anchor,
    parent: Arc<Replica>,
    parent_desc: ScopeDescriptor,
    d: Delegation,
    started: Instant,
) {
    let child = d.referral.scope;
    let mut last_error = String::new();
    let mut seeded = BTreeSet::new();
    let mut retry = every(HAND_OVER_RETRY);
    loop {
        retry.tick().await;
        if !leads(&anchor, &parent) {
            return;
        }
        if started.elapsed() > HAND_OVER_TIMEOUT {
            let reason = format!(
                "the child could not be seeded in {} s: {last_error}",
                HAND_OVER_TIMEOUT.as_secs()
            );
            tracing::warn!(parent = %parent.id, %child, %reason, "aborting the delegation");
            let cmd = ScopeCommand::DelegationAborted { child, reason };
            let outcome = propose(&parent, cmd).await;
            count(
                &anchor,
                "abort",
                if outcome.is_ok() { "ok" } else { "error" },
            );
            return;
        }
        let majority_will_do = started.elapsed() > STRAGGLER_GRACE;
        match try_hand_over(
            &anchor,
            &parent,
            &parent_desc,
            &d,
            &mut seeded,
            majority_will_do,
        )
        .await
        {
            Ok(()) => {
                tracing::info!(parent = %parent.id, %child, prefix = %d.referral.prefix, "delegation active");
                count(&anchor, "activate", "ok");
                return;
            }
            Err(e) => {
                tracing::debug!(parent = %parent.id, %child, error = %e, "hand-over step failed; retrying");
                last_error = e;
            }
        }
    }
}

async fn try_hand_over(
    anchor: &Anchor,
    parent: &Replica,
    parent_desc: &ScopeDescriptor,
    d: &Delegation,
    seeded: &mut BTreeSet<String>,
    majority_will_do: bool,
) -> Result<(), String> {
    let child = d.referral.scope;
    let proof = parent
        .state
        .delegation_proof(&child)
        .map_err(|e| e.to_string())?
        .ok_or("the delegation's proof is missing from the parent's state")?;
    let records = parent
        .state
        .records_under(&d.referral.prefix)
        .map_err(|e| e.to_string())?;
    // The child must refuse a replay of any mutation the parent applied to a moved name
    // while it could still be valid. (Without this a client's retry, routed to the child,
    // applied again: found by a chaos campaign, seed 820.)
    let nonces = parent
        .state
        .nonces_under(&d.referral.prefix, crate::node::now_ms())
        .map_err(|e| e.to_string())?;
    let chunks = chunk(records, nonces);
    let todo: Vec<&AnchorInfo> = d
        .referral
        .members
        .iter()
        .filter(|m| !seeded.contains(&m.peer_id))
        .collect();
    let seeds = todo.iter().map(|m| async {
        let r = seed_member(
            anchor,
            m,
            parent_desc,
            d.index,
            &proof,
            child,
            chunks.clone(),
        )
        .await;
        (m.peer_id.clone(), r)
    });
    let mut failed = Vec::new();
    for (peer, result) in futures::future::join_all(seeds).await {
        match result {
            Ok(()) => {
                seeded.insert(peer);
            }
            Err(e) => failed.push(e),
        }
    }
    let members = d.referral.members.len();
    let enough = failed.is_empty() || (majority_will_do && seeded.len() > members / 2);
    if !enough {
        count(anchor, "seed", "error");
        return Err(format!("seeding failed: {}", failed.join("; ")));
    }
    count(
        anchor,
        "seed",
        if failed.is_empty() { "ok" } else { "majority" },
    );
    if !failed.is_empty() {
        tracing::warn!(%child, seeded = seeded.len(), members, "handing over with a majority seeded; the child's leader brings in the rest");
    }
    child_ready(anchor, &d.referral.members, child, d.index).await?;
    propose(parent, ScopeCommand::DelegationActive { child })
        .await
        .map_err(|e| format!("committing DelegationActive: {e}"))
}

fn chunk(records: Vec<(Name, RecordSet)>, nonces: Vec<SeededNonce>) -> Vec<Chunk> {
    let mut chunks = vec![Chunk::default()];
    let mut bytes = 0;
    let mut room = |size: usize, chunks: &mut Vec<Chunk>| {
        let last_empty = chunks
            .last()
            .is_none_or(|c| c.records.is_empty() && c.nonces.is_empty());
        if bytes + size > SEED_CHUNK_BYTES_MAX && !last_empty {
            chunks.push(Chunk::default());
            bytes = 0;
        }
        bytes += size;
    };
    for (name, set) in records {
        let size = codec::encode(&set).map_or(0, |b| b.len()) + name.to_string().len() + 16;
        room(size, &mut chunks);
        if let Some(c) = chunks.last_mut() {
            c.records.push((name, set));
        }
    }
    for n in nonces {
        room(64 + n.name.to_string().len(), &mut chunks);
        if let Some(c) = chunks.last_mut() {
            c.nonces.push(n);
        }
    }
    chunks
}

async fn admin_call(
    anchor: &Anchor,
    member: &AnchorInfo,
    req: &AdminRequest,
) -> Result<AdminResponse, String> {
    let Ok(AnchorAddr { peer, addrs }) = AnchorAddr::from_info(member) else {
        return Err(format!("bad member peer id {:?}", member.peer_id));
    };
    let bytes = codec::encode(req).map_err(|e| e.to_string())?;
    let reply = request(anchor, peer, addrs, Protocol::Admin, bytes)
        .await
        .map_err(|e| format!("{peer}: {e}"))?;
    codec::decode(&reply, proto::limits::CLIENT_FRAME_BYTES_MAX)
        .map_err(|e| format!("{peer}: bad answer: {e}"))
}

/// One request to an anchor; to this anchor itself (a parent member that is also a child
/// member), handled in place: libp2p does not dial its own peer id.
async fn request(
    anchor: &Anchor,
    peer: PeerId,
    addrs: Vec<libp2p::Multiaddr>,
    protocol: Protocol,
    bytes: Vec<u8>,
) -> Result<Vec<u8>, String> {
    if peer == anchor.peer_id() {
        return tokio::time::timeout(REQUEST_TIMEOUT, anchor.handle(peer, protocol, bytes))
            .await
            .map_err(|_| "no answer in time".to_string());
    }
    let call = anchor.net().request(peer, addrs, protocol, bytes);
    match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer in time".into()),
    }
}

async fn seed_member(
    anchor: &Anchor,
    member: &AnchorInfo,
    parent: &ScopeDescriptor,
    index: u64,
    proof: &proto::SignedMutation,
    child: ScopeId,
    chunks: Vec<Chunk>,
) -> Result<(), String> {
    let last = chunks.len().saturating_sub(1);
    for (i, c) in chunks.into_iter().enumerate() {
        let req = AdminRequest::SeedScope(SeedScope {
            parent: parent.clone(),
            index,
            proof: proof.clone(),
            child,
            chunk_no: i as u32,
            records: c.records,
            nonces: c.nonces,
            last: i == last,
            join_only: false,
        });
        match admin_call(anchor, member, &req).await? {
            AdminResponse::Ok => {}
            AdminResponse::Error(e) => return Err(format!("{}: {e}", member.peer_id)),
            other => return Err(format!("{}: unexpected {other:?}", member.peer_id)),
        }
    }
    Ok(())
}

/// Waits (bounded) until a child member reports a leader that has applied past `index`.
async fn child_ready(
    anchor: &Anchor,
    members: &[AnchorInfo],
    child: ScopeId,
    index: u64,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let req = AdminRequest::ScopeInfo {
        target: ScopeTarget::Id(child),
    };
    let mut poll = every(CHILD_POLL);
    loop {
        poll.tick().await;
        for m in members {
            if let Ok(AdminResponse::Scope(info)) = admin_call(anchor, m, &req).await {
                let s = &info.status;
                if s.leader.is_some() && s.last_applied.is_some_and(|a| a > index) {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            return Err("the child scope elected no leader in 10 s".into());
        }
    }
}

async fn propose(r: &Replica, cmd: ScopeCommand) -> Result<(), String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, r.raft.client_write(cmd)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("not committed in time".into()),
    }
}

/// On the leader of a delegated scope: a member that has never replicated anything may have
/// missed the seeding; offer it to join empty (it then catches up by snapshot). Harmless to a
/// member that hosts the scope already.
fn offer_joins(
    anchor: &Anchor,
    r: &Arc<Replica>,
    joins: &mut BTreeMap<(ScopeId, NodeId), Instant>,
) {
    let metrics = r.raft.metrics().borrow().clone();
    let Some(replication) = metrics.replication else {
        return;
    };
    let view = r.state.view();
    let (Some(parent), Some(origin), Some(descriptor)) =
        (view.parent, view.origin, view.descriptor)
    else {
        return;
    };
    let Ok(Some(proof)) = r.state.delegation_proof(&r.id) else {
        return;
    };
    let membership = metrics.membership_config.membership().clone();
    for (node, matched) in replication {
        if matched.is_some() || node == anchor.node_id() {
            continue;
        }
        if joins
            .get(&(r.id, node))
            .is_some_and(|at| at.elapsed() < JOIN_EVERY)
        {
            continue;
        }
        let Some(member) = membership.get_node(&node).cloned() else {
            continue;
        };
        joins.insert((r.id, node), Instant::now());
        let req = AdminRequest::SeedScope(SeedScope {
            parent: parent.clone(),
            index: origin,
            proof: proof.clone(),
            child: descriptor.id,
            chunk_no: 0,
            records: Vec::new(),
            nonces: Vec::new(),
            last: true,
            join_only: true,
        });
        let anchor = anchor.clone();
        tokio::spawn(async move {
            let outcome = admin_call(&anchor, &member, &req).await;
            let ok = matches!(outcome, Ok(AdminResponse::Ok));
            count(&anchor, "join", if ok { "ok" } else { "error" });
        });
    }
}

/// Step 4, while this anchor leads an inactive child: poll the parent until it refers here.
async fn activate_child(anchor: Anchor, child: Arc<Replica>, parent: ScopeDescriptor) {
    let started = Instant::now();
    let prefix = child.descriptor.prefix.clone();
    let req = ResolveRequest {
        name: prefix.clone(),
        level: ReadLevel::Replica,
        scope: parent.id,
    };
    let Ok(bytes) = codec::encode(&req) else {
        return;
    };
    let mut poll = every(PARENT_POLL);
    let mut slowed = false;
    loop {
        poll.tick().await;
        // An aborted delegation leaves an inactive child: ask less often as time goes by.
        if !slowed && started.elapsed() > PARENT_POLL_SLOW_AFTER {
            poll = every(PARENT_POLL_SLOW);
            poll.tick().await;
            slowed = true;
        }
        if !leads(&anchor, &child) || child.state.with_view(|v| v.active).unwrap_or(true) {
            return;
        }
        for m in &parent.members {
            let Ok(AnchorAddr { peer, addrs }) = AnchorAddr::from_info(m) else {
                continue;
            };
            let Ok(reply) = request(&anchor, peer, addrs, Protocol::Resolve, bytes.clone()).await
            else {
                continue;
            };
            let Ok(ResolveResponse::Signed(signed)) =
                codec::decode(&reply, proto::limits::CLIENT_FRAME_BYTES_MAX)
            else {
                continue;
            };
            let Ok(answer) = codec::decode::<Answer>(&signed.body, signed.body.len()) else {
                continue;
            };
            let refers_here =
                matches!(&answer, Answer::Referral { referral, .. } if referral.scope == child.id);
            if refers_here {
                let outcome = propose(&child, ScopeCommand::Activate).await;
                count(
                    &anchor,
                    "child_activate",
                    if outcome.is_ok() { "ok" } else { "error" },
                );
                if outcome.is_ok() {
                    tracing::info!(scope = %child.id, %prefix, "child scope active");
                    return;
                }
            }
            break;
        }
    }
}

impl Anchor {
    /// Receives one chunk of a child scope's seed (DESIGN.md §8 step 2); on the last chunk,
    /// builds the replica and starts its group. Idempotent.
    pub(crate) async fn seed_scope(&self, from: PeerId, s: SeedScope) -> Result<(), WireError> {
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
        let me = self.peer_id().to_base58();
        if !members.iter().any(|m| m.anchor.peer_id == me) {
            return Err(refused(format!(
                "this anchor ({me}) is not a member of {prefix}"
            )));
        }
        let policy = policy::Policy::from_toml(&policy_toml).map_err(|e| invalid(e.to_string()))?;
        if let Err(e) = policy::placement_allows(&policy, &self.config().labels) {
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
        if self.replica(&s.child).is_some() {
            return Ok(());
        }
        let anchors: Vec<AnchorInfo> = members.iter().map(|m| m.anchor.clone()).collect();
        let descriptor = ScopeDescriptor {
            id: s.child,
            prefix: prefix.clone(),
            epoch: 1,
            members: anchors,
        };
        if s.join_only {
            let _building = self.seeding().lock().await;
            if self.replica(&s.child).is_some() {
                return Ok(());
            }
            return self
                .join_child(&descriptor)
                .await
                .map_err(|e| WireError::Unavailable {
                    reason: format!("creating the replica failed: {e}"),
                });
        }
        let staged = {
            let Ok(mut seeds) = self.seeds().lock() else {
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
        let _building = self.seeding().lock().await;
        if self.replica(&s.child).is_some() {
            return Ok(());
        }
        self.build_child(
            &descriptor,
            &s.parent,
            &policy_toml,
            &staged,
            s.index,
            &s.proof,
        )
        .await
        .map_err(|e| WireError::Unavailable {
            reason: format!("building the child replica failed: {e}"),
        })?;
        Ok(())
    }

    /// Records the scope in the registry, makes everything written so far durable, and
    /// starts its group.
    async fn register_and_open(
        &self,
        descriptor: &ScopeDescriptor,
    ) -> Result<Arc<Replica>, crate::AnchorError> {
        self.registry()
            .insert(descriptor.id.0, codec::encode(descriptor)?)?;
        self.flusher()
            .flush()
            .await
            .map_err(|e| crate::AnchorError::Io {
                path: "db".into(),
                source: e,
            })?;
        self.open_replica(descriptor.clone()).await
    }

    /// An empty replica of a child scope that missed its seeding; the child's leader sends
    /// it a snapshot.
    async fn join_child(&self, descriptor: &ScopeDescriptor) -> Result<(), crate::AnchorError> {
        log_store::remove_scope(self.db(), &descriptor.id)?;
        sm::remove_scope(self.db(), &descriptor.id)?;
        self.register_and_open(descriptor).await?;
        tracing::info!(scope = %descriptor.id, prefix = %descriptor.prefix, "joined a child scope empty; catching up by snapshot");
        Ok(())
    }

    async fn build_child(
        &self,
        descriptor: &ScopeDescriptor,
        parent: &ScopeDescriptor,
        policy_toml: &str,
        staged: &Staging,
        index: u64,
        proof: &proto::SignedMutation,
    ) -> Result<(), crate::AnchorError> {
        let records = &staged.records;
        let mut nodes: BTreeMap<NodeId, AnchorInfo> = BTreeMap::new();
        for m in &descriptor.members {
            let id = identity::node_id_of_str(&m.peer_id).ok_or_else(|| {
                crate::AnchorError::Raft(format!("bad member peer id {:?}", m.peer_id))
            })?;
            nodes.insert(id, m.clone());
        }
        let voters: BTreeSet<NodeId> = nodes.keys().copied().collect();
        let log_id = LogId::new(CommittedLeaderId::new(0, 0), index);
        let seed = Seed {
            child: descriptor,
            parent,
            policy_toml,
            records,
            nonces: &staged.nonces,
            log_id,
            membership: Membership::new(vec![voters], nodes),
            proof,
        };
        log_store::remove_scope(self.db(), &descriptor.id)?;
        sm::seed(self.db(), &seed)?;
        LogStore::open(self.db(), descriptor.id, self.flusher().clone())?.seed_purged(log_id)?;
        let replica = self.register_and_open(descriptor).await?;
        tracing::info!(scope = %descriptor.id, prefix = %descriptor.prefix, records = records.len(), at = index, "child scope seeded");
        let first = descriptor.members.first().map(|m| m.peer_id.as_str());
        if first == Some(self.peer_id().to_base58().as_str()) {
            // The others are seeded at about the same time, maybe a moment later: call the
            // election again until one has a leader, rather than wait a whole election
            // timeout after a vote the others could not grant yet.
            tokio::spawn(async move {
                for _ in 0..ELECT_TRIES {
                    if replica.raft.metrics().borrow().current_leader.is_some() {
                        return;
                    }
                    let _ = replica.raft.trigger().elect().await;
                    let mut m = replica.raft.metrics();
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
}
