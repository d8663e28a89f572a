//! The driving side of delegations, on whichever anchor leads: seeding a Frozen delegation's
//! child and committing the hand-over (on the parent's leader), offering a member that missed
//! its seeding to join empty, and activating a new child once its parent refers to it (on the
//! child's leader). On every anchor it also starts hosting the scopes its parents split off
//! (`split.rs`); for those the parent's leader seeds nothing and only hands over.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::limits::SEED_CHUNK_BYTES_MAX;
use proto::msg::{
    AdminRequest, AdminResponse, Answer, ReadLevel, ResolveRequest, ResolveResponse, ScopeTarget,
    SeedScope, SeededNonce,
};
use proto::{
    codec, AnchorInfo, Delegation, DelegationState, Name, RecordSet, ScopeDescriptor, ScopeId,
    WireError,
};
use resolver::net::{CallError, Protocol};
use resolver::AnchorAddr;
use tokio::task::JoinHandle;

use super::Host;
use crate::raft::{NodeId, ScopeCommand};
use crate::replica::Replica;
use crate::AnchorError;

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
/// How often the driver looks for work.
const TICK: Duration = Duration::from_millis(200);
/// How long the parent's leader waits for the seeded child to elect a leader, per attempt.
const CHILD_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request to a member may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a driver job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    /// Seed a child and commit the hand-over (on the parent's leader).
    HandOver,
    /// Wait for the parent's referral and activate (on the child's leader).
    Activate,
}

/// Why one attempt at a hand-over step failed (the driver retries; the last one is the
/// reason an aborted delegation gives).
#[derive(Debug, thiserror::Error)]
enum StepError {
    /// The parent's state could not be read.
    #[error(transparent)]
    State(#[from] AnchorError),
    /// A child member's peer id does not parse.
    #[error("bad member peer id {peer_id:?}")]
    BadMember {
        /// What the delegation lists.
        peer_id: String,
    },
    /// A request to a member failed.
    #[error("{peer}: {source}")]
    Call {
        /// The member.
        peer: String,
        /// How.
        source: CallError,
    },
    /// A member refused a seed chunk.
    #[error("{peer}: {error}")]
    Refused {
        /// The member.
        peer: String,
        /// Why.
        error: WireError,
    },
    /// A member answered something else than asked for.
    #[error("{peer}: unexpected {answer}")]
    Unexpected {
        /// The member.
        peer: String,
        /// What it answered.
        answer: String,
    },
    /// Too few members were seeded.
    #[error("seeding failed: {}", join(.0))]
    Seeding(Vec<StepError>),
    /// No child member reported a leader that applied the seed.
    #[error("the child scope elected no leader in {secs} s")]
    ChildNoLeader {
        /// How long the parent's leader waited.
        secs: u64,
    },
    /// A command to the parent's log was not committed.
    #[error("committing {what}: {source}")]
    Commit {
        /// The command.
        what: &'static str,
        /// Why not.
        source: ProposeError,
    },
}

fn join(errors: &[StepError]) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a command to a scope's log was not committed.
#[derive(Debug, thiserror::Error)]
enum ProposeError {
    /// Raft refused or failed.
    #[error("{0}")]
    Raft(String),
    /// No commit in time; it may still commit.
    #[error("not committed in time")]
    Timeout,
}

/// What one seed chunk carries.
#[derive(Clone, Debug, Default)]
struct Chunk {
    records: Vec<(Name, RecordSet)>,
    nonces: Vec<SeededNonce>,
}

/// Runs until `stop`: drives the delegations of every scope this anchor leads, and the
/// activation of every new child scope it leads.
pub async fn drive<H: Host>(host: H, mut stop: tokio::sync::watch::Receiver<bool>) {
    // Keyed by what they do and the child scope: one anchor may lead both the parent (handing
    // over) and the child (waiting to activate). (A shared key once kept the hand-over from
    // ever starting while the child waited for it: found by a chaos campaign, seed 707.)
    let mut jobs: BTreeMap<(Job, ScopeId), JoinHandle<()>> = BTreeMap::new();
    // Split-off children being hosted here, on any member (`split.rs`).
    let mut hosting: BTreeMap<ScopeId, JoinHandle<()>> = BTreeMap::new();
    let mut first_seen: BTreeMap<ScopeId, Instant> = BTreeMap::new();
    let mut joins: BTreeMap<(ScopeId, NodeId), Instant> = BTreeMap::new();
    let mut tick = super::every(TICK);
    let mut visits = super::Visits::new(TICK);
    while super::next_tick(&mut tick, &mut stop).await {
        visits.next_pass();
        jobs.retain(|_, j| !j.is_finished());
        hosting.retain(|_, j| !j.is_finished());
        let me = host.node_id();
        let mut wanted = BTreeSet::new();
        for r in visits.list(&host).iter() {
            // (A hibernated scope is settled: no delegation in flight to drive.)
            if !visits.wants(r) {
                continue;
            }
            super::split::start_hosting(&host, r, &mut hosting);
            if !r.led_by(me) {
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
                let job = hand_over(host.clone(), r.clone(), parent, d.clone(), started);
                jobs.insert((Job::HandOver, child), tokio::spawn(job));
            }
            if let (false, Some(parent)) = (view.active, view.parent.clone()) {
                wanted.insert(r.id);
                if let std::collections::btree_map::Entry::Vacant(slot) =
                    jobs.entry((Job::Activate, r.id))
                {
                    slot.insert(tokio::spawn(activate_child(
                        host.clone(),
                        r.clone(),
                        parent,
                    )));
                }
            }
            if view.parent.is_some() {
                offer_joins(&host, r, &mut joins);
            }
        }
        joins.retain(|_, at| at.elapsed() < JOIN_EVERY * 4);
        if visits.full() {
            first_seen.retain(|id, _| wanted.contains(id));
        }
    }
    for j in jobs.into_values().chain(hosting.into_values()) {
        j.abort();
    }
}

fn leads<H: Host>(host: &H, r: &Replica) -> bool {
    r.led_by(host.node_id())
}

/// Steps 2 and 3 for one Frozen delegation, while this anchor leads the parent.
async fn hand_over<H: Host>(
    host: H,
    parent: Arc<Replica>,
    parent_desc: ScopeDescriptor,
    d: Delegation,
    started: Instant,
) {
    let child = d.referral.scope;
    let mut last_error: Option<StepError> = None;
    let mut seeded = BTreeSet::new();
    let mut retry = super::every(HAND_OVER_RETRY);
    loop {
        retry.tick().await;
        if !leads(&host, &parent) {
            return;
        }
        if started.elapsed() > HAND_OVER_TIMEOUT {
            let reason = format!(
                "the child could not be seeded in {} s: {}",
                HAND_OVER_TIMEOUT.as_secs(),
                last_error
                    .as_ref()
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            );
            tracing::warn!(parent = %parent.id, %child, %reason, "aborting the delegation");
            let cmd = ScopeCommand::DelegationAborted { child, reason };
            let outcome = propose(&parent, cmd).await;
            host.count("abort", if outcome.is_ok() { "ok" } else { "error" });
            return;
        }
        let majority_will_do = started.elapsed() > STRAGGLER_GRACE;
        match try_hand_over(
            &host,
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
                host.count("activate", "ok");
                return;
            }
            Err(e) => {
                tracing::debug!(parent = %parent.id, %child, error = %e, "hand-over step failed; retrying");
                last_error = Some(e);
            }
        }
    }
}

async fn try_hand_over<H: Host>(
    host: &H,
    parent: &Replica,
    parent_desc: &ScopeDescriptor,
    d: &Delegation,
    seeded: &mut BTreeSet<String>,
    majority_will_do: bool,
) -> Result<(), StepError> {
    let child = d.referral.scope;
    // A delegation without an admin-signed proof is the scope's own split: every member
    // builds the child from its own replica (`split.rs`); only the hand-over is left.
    let Some(proof) = parent.state.delegation_proof(&child)? else {
        child_ready(host, &d.referral.members, child, d.index).await?;
        return propose(parent, ScopeCommand::DelegationActive { child })
            .await
            .map_err(|source| StepError::Commit {
                what: "DelegationActive",
                source,
            });
    };
    let records = parent
        .state
        .records_in(&d.referral.prefix, &d.referral.range)?;
    // The child must refuse a replay of any mutation the parent applied to a moved name
    // while it could still be valid. (Without this a client's retry, routed to the child,
    // applied again: found by a chaos campaign, seed 820.)
    let nonces = parent
        .state
        .nonces_in(&d.referral.prefix, &d.referral.range, host.now_ms())?;
    let chunks = chunk(records, nonces);
    let todo: Vec<&AnchorInfo> = d
        .referral
        .members
        .iter()
        .filter(|m| !seeded.contains(&m.peer_id))
        .collect();
    let seeds = todo.iter().map(|m| async {
        let r = seed_member(host, m, parent_desc, d.index, &proof, child, chunks.clone()).await;
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
        host.count("seed", "error");
        return Err(StepError::Seeding(failed));
    }
    host.count("seed", if failed.is_empty() { "ok" } else { "majority" });
    if !failed.is_empty() {
        tracing::warn!(%child, seeded = seeded.len(), members, "handing over with a majority seeded; the child's leader brings in the rest");
    }
    child_ready(host, &d.referral.members, child, d.index).await?;
    propose(parent, ScopeCommand::DelegationActive { child })
        .await
        .map_err(|source| StepError::Commit {
            what: "DelegationActive",
            source,
        })
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

/// One admin request to a member (handled in place when the member is this anchor).
async fn admin_call<H: Host>(
    host: &H,
    member: &AnchorInfo,
    req: &AdminRequest,
) -> Result<AdminResponse, StepError> {
    let to = AnchorAddr::from_info(member).map_err(|_| StepError::BadMember {
        peer_id: member.peer_id.clone(),
    })?;
    host.call(&to, Protocol::Admin, req, REQUEST_TIMEOUT)
        .await
        .map_err(|source| StepError::Call {
            peer: member.peer_id.clone(),
            source,
        })
}

async fn seed_member<H: Host>(
    host: &H,
    member: &AnchorInfo,
    parent: &ScopeDescriptor,
    index: u64,
    proof: &proto::SignedMutation,
    child: ScopeId,
    chunks: Vec<Chunk>,
) -> Result<(), StepError> {
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
        match admin_call(host, member, &req).await? {
            AdminResponse::Ok => {}
            AdminResponse::Error(error) => {
                return Err(StepError::Refused {
                    peer: member.peer_id.clone(),
                    error,
                })
            }
            other => {
                return Err(StepError::Unexpected {
                    peer: member.peer_id.clone(),
                    answer: format!("{other:?}"),
                })
            }
        }
    }
    Ok(())
}

/// Waits (bounded) until a child member reports a leader that has applied past `index`.
async fn child_ready<H: Host>(
    host: &H,
    members: &[AnchorInfo],
    child: ScopeId,
    index: u64,
) -> Result<(), StepError> {
    let deadline = Instant::now() + CHILD_READY_TIMEOUT;
    let req = AdminRequest::ScopeInfo {
        target: ScopeTarget::Id(child),
    };
    let mut poll = super::every(CHILD_POLL);
    loop {
        poll.tick().await;
        for m in members {
            if let Ok(AdminResponse::Scope(info)) = admin_call(host, m, &req).await {
                let s = &info.status;
                if s.leader.is_some() && s.last_applied.is_some_and(|a| a > index) {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            return Err(StepError::ChildNoLeader {
                secs: CHILD_READY_TIMEOUT.as_secs(),
            });
        }
    }
}

async fn propose(r: &Replica, cmd: ScopeCommand) -> Result<(), ProposeError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, r.client_write(cmd)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ProposeError::Raft(e.to_string())),
        Err(_) => Err(ProposeError::Timeout),
    }
}

/// On the leader of a delegated scope: a member that has never replicated anything may have
/// missed the seeding; offer it to join empty (it then catches up by snapshot). Harmless to a
/// member that hosts the scope already.
fn offer_joins<H: Host>(
    host: &H,
    r: &Arc<Replica>,
    joins: &mut BTreeMap<(ScopeId, NodeId), Instant>,
) {
    let metrics = r.metrics().borrow().clone();
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
        if matched.is_some() || node == host.node_id() {
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
        let host = host.clone();
        tokio::spawn(async move {
            let outcome = admin_call(&host, &member, &req).await;
            let ok = matches!(outcome, Ok(AdminResponse::Ok));
            host.count("join", if ok { "ok" } else { "error" });
        });
    }
}

/// Step 4, while this anchor leads an inactive child: poll the parent until it refers here.
async fn activate_child<H: Host>(host: H, child: Arc<Replica>, parent: ScopeDescriptor) {
    let started = Instant::now();
    let prefix = child.descriptor.prefix.clone();
    // The first name the child governs: its prefix, or the start of its range.
    let first = child.descriptor.range.start.clone();
    let req = ResolveRequest {
        name: first.unwrap_or_else(|| prefix.clone()),
        level: ReadLevel::Replica,
        scope: parent.id,
    };
    let mut poll = super::every(PARENT_POLL);
    let mut slowed = false;
    loop {
        poll.tick().await;
        // An aborted delegation leaves an inactive child: ask less often as time goes by.
        if !slowed && started.elapsed() > PARENT_POLL_SLOW_AFTER {
            poll = super::every(PARENT_POLL_SLOW);
            poll.tick().await;
            slowed = true;
        }
        if !leads(&host, &child) || child.state.with_view(|v| v.active).unwrap_or(true) {
            return;
        }
        for m in &parent.members {
            let Ok(to) = AnchorAddr::from_info(m) else {
                continue;
            };
            let reply = host
                .call(&to, Protocol::Resolve, &req, REQUEST_TIMEOUT)
                .await;
            let Ok(ResolveResponse::Signed(signed)) = reply else {
                continue;
            };
            let Ok(answer) = codec::decode::<Answer>(&signed.body, signed.body.len()) else {
                continue;
            };
            let refers_here =
                matches!(&answer, Answer::Referral { referral, .. } if referral.scope == child.id);
            if refers_here {
                let outcome = propose(&child, ScopeCommand::Activate).await;
                host.count(
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
