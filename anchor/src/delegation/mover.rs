//! Carrying out member changes, on each scope's leader, and dropping the replicas of scopes
//! this anchor left, on every anchor.
//!
//! The leader looks at its scopes every [`MOVE_EVERY`] and takes the next step the pure
//! [`next_step`] gives for what it sees (the committed change, the group's configuration
//! and replication progress): host and add learners, grow the voters, commit
//! `MembersChanged`, have the parent refer to the new members (`ChildMembers`), shrink the
//! voters, tell the members that left. Every step is idempotent and a new leader picks up
//! where the old one stopped; a leader that removes itself steps down once the smaller
//! configuration is committed and the next leader tells it to leave.
//!
//! A replica that may have been removed (its group has no leader, or its own configuration
//! does not list this anchor) asks the members it knows; it drops its replica only once a
//! strict majority of them report a newer configuration without it
//! ([`super::removal::check_removed`]). openraft never tells a removed node, so this is how a replica that
//! was down during its removal goes away too.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use proto::msg::{
    AdminRequest, AdminResponse, Answer, ChildMembers, ReadLevel, ResolveRequest, ResolveResponse,
    SignedAnswer,
};
use proto::{codec, AnchorInfo, MemberChange, ScopeDescriptor, ScopeId};
use resolver::net::Protocol;
use resolver::AnchorAddr;
use tokio::task::JoinHandle;

use super::removal::check_removed;
use super::Host;
use crate::identity::node_id_of_str;
use crate::raft::ScopeCommand;
use crate::replica::Replica;
use crate::scope::members::{next_step, GroupView, Step};

/// How often each leader looks at its scopes' members.
pub const MOVE_EVERY: Duration = Duration::from_secs(1);
/// How often a replica that may have been removed asks the members it knows, in rounds of
/// [`MOVE_EVERY`].
const REMOVAL_CHECK_ROUNDS: u64 = 5;
/// How long a replica with no configuration of its own (hosted for a change, not yet
/// added by the leader) is left alone before it asks whether it is still wanted.
const UNCONFIGURED_GRACE: Duration = Duration::from_secs(60);
/// Most steps one job takes in a row before the next look.
const STEPS_PER_JOB: usize = 8;
/// How long one request or one Raft call may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the members that leave keep voting while the parent cannot be told of the new
/// members; past it they leave anyway (resolvers then find the parent's old referral
/// partly stale until the parent learns, which it is retried for).
const REFERRER_WAIT: Duration = Duration::from_secs(60);

/// Runs until `stop`: drives the member changes of the scopes this anchor leads, and drops
/// the replicas of scopes it left.
pub async fn move_members<H: Host>(host: H, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut jobs: BTreeMap<ScopeId, JoinHandle<()>> = BTreeMap::new();
    // When each scope's leaders first waited for its parent to learn new members.
    let mut waiting: BTreeMap<ScopeId, Instant> = BTreeMap::new();
    // When this anchor first saw each replica with no configuration of its own.
    let mut unconfigured: BTreeMap<ScopeId, Instant> = BTreeMap::new();
    let mut tick = super::every(MOVE_EVERY);
    let mut round: u64 = 0;
    let mut visits = super::Visits::new(MOVE_EVERY);
    while super::next_tick(&mut tick, &mut stop).await {
        round += 1;
        visits.next_pass();
        jobs.retain(|_, j| !j.is_finished());
        let me = host.node_id();
        for r in visits.list(&host).iter() {
            // (A hibernated scope has no member change in flight; its removal check waits
            // for the rare visit.)
            if jobs.contains_key(&r.id) || !visits.wants(r) {
                continue;
            }
            if r.led_by(me) {
                if round.is_multiple_of(REMOVAL_CHECK_ROUNDS) && lost_quorum(r) {
                    // A leader removed while cut off is never told: the members no longer
                    // answer it, so it sees no higher term and would lead for ever.
                    jobs.insert(r.id, tokio::spawn(check_removed(host.clone(), r.clone())));
                    continue;
                }
                let (members, change) = r
                    .state
                    .with_view(|v| {
                        (
                            v.descriptor.as_ref().map(|d| d.members.clone()),
                            v.member_change.clone(),
                        )
                    })
                    .unwrap_or_default();
                let Some(members) = members else {
                    continue;
                };
                let step = next_step(&members, change.as_ref(), &group_view(r), host.now_ms());
                if matches!(step, Step::Idle | Step::Wait(_)) {
                    if step == Step::Idle {
                        waiting.remove(&r.id);
                    } else {
                        // A change in flight waits on learners catching up: the group
                        // must replicate to them, so it may not sleep.
                        r.wake().await;
                    }
                    continue;
                }
                let since = *waiting.entry(r.id).or_insert_with(Instant::now);
                let job = take_step(host.clone(), r.clone(), step, members, change, since);
                jobs.insert(r.id, tokio::spawn(job));
            } else if round.is_multiple_of(REMOVAL_CHECK_ROUNDS) && may_be_removed(r, me) {
                // A replica that has no configuration yet may be one a leader is adding
                // right now: give it time to be added before asking.
                let empty = r
                    .metrics()
                    .borrow()
                    .membership_config
                    .nodes()
                    .next()
                    .is_none();
                let first = *unconfigured.entry(r.id).or_insert_with(Instant::now);
                if empty && first.elapsed() < UNCONFIGURED_GRACE {
                    continue;
                }
                jobs.insert(r.id, tokio::spawn(check_removed(host.clone(), r.clone())));
            }
        }
        waiting.retain(|id, _| host.replica(id).is_some());
        unconfigured.retain(|id, _| {
            host.replica(id).is_some_and(|r| {
                r.metrics()
                    .borrow()
                    .membership_config
                    .nodes()
                    .next()
                    .is_none()
            })
        });
    }
    for j in jobs.into_values() {
        j.abort();
    }
}

/// What the leader sees of its group.
fn group_view(r: &Replica) -> GroupView {
    let m = r.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let committed = match (m.membership_config.log_id(), m.last_applied) {
        (None, _) => true,
        (Some(c), Some(a)) => c.index <= a.index,
        (Some(_), None) => false,
    };
    GroupView {
        voter_sets: membership.get_joint_config().clone(),
        nodes: membership.nodes().map(|(id, _)| *id).collect(),
        committed,
        last_log: m.last_log_index.unwrap_or(0),
        matched: m
            .replication
            .as_ref()
            .map(|rep| {
                rep.iter()
                    .map(|(id, l)| (*id, l.map_or(0, |l| l.index)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// True if `r`, led here and awake, has heard no quorum acknowledge it for four election
/// timeouts: it may have been removed from the scope while cut off.
fn lost_quorum(r: &Replica) -> bool {
    if r.sleep.is_asleep() {
        return false;
    }
    let limit = 4 * r.raft_config().election_timeout_max;
    r.with_metrics(|m| {
        let alone = m.membership_config.membership().voter_ids().count() <= 1;
        !alone && m.millis_since_quorum_ack.is_none_or(|ms| ms > limit)
    })
}

/// True if this replica's own configuration does not list this anchor, or its group knows
/// no leader: worth asking the members whether it was removed.
fn may_be_removed(r: &Replica, me: crate::raft::NodeId) -> bool {
    r.with_metrics(|m| {
        let listed = m
            .membership_config
            .membership()
            .nodes()
            .any(|(id, _)| *id == me);
        let empty = m.membership_config.membership().nodes().next().is_none();
        (!listed && !empty) || m.current_leader.is_none()
    })
}

/// Takes `step`, then the steps that follow at once (each needs the previous one applied),
/// at most [`STEPS_PER_JOB`], until one fails, waits or the scope is idle.
async fn take_step<H: Host>(
    host: H,
    r: Arc<Replica>,
    mut step: Step,
    mut members: Vec<AnchorInfo>,
    mut change: Option<MemberChange>,
    since: Instant,
) {
    // Asleep, the group would neither replicate to its learners nor heartbeat through a
    // configuration change.
    let _awake = r.keep_awake().await;
    for _ in 0..STEPS_PER_JOB {
        let outcome = match step {
            Step::Idle | Step::Wait(_) => return,
            Step::AddLearners(joining) => {
                add_learners(&host, &r, &members, change.as_ref(), &joining).await
            }
            Step::ChangeVoters(voters) => change_voters(&r, voters).await,
            Step::Finish => match &change {
                Some(c) => propose(&r, ScopeCommand::MembersChanged { index: c.index }).await,
                None => Ok("finish"),
            },
            Step::Abort(reason) => abort(&r, change.as_ref(), reason).await,
            Step::Shrink { voters, .. } => shrink(&host, &r, voters, since).await,
        };
        match outcome {
            Ok(label) => host.count("members", label),
            Err(e) => {
                tracing::info!(scope = %r.id, error = %e, "member change step not taken; retrying");
                host.count("members", "error");
                return;
            }
        }
        if !r.led_by(host.node_id()) {
            return;
        }
        let Some((m, c)) = r
            .state
            .with_view(|v| {
                Some((
                    v.descriptor.as_ref()?.members.clone(),
                    v.member_change.clone(),
                ))
            })
            .flatten()
        else {
            return;
        };
        (members, change) = (m, c);
        step = next_step(&members, change.as_ref(), &group_view(&r), host.now_ms());
    }
}

/// Has each joining anchor host an empty replica, then adds it as a learner.
async fn add_learners<H: Host>(
    host: &H,
    r: &Replica,
    members: &[AnchorInfo],
    change: Option<&MemberChange>,
    joining: &[AnchorInfo],
) -> Result<&'static str, String> {
    let Some(change) = change else {
        return Ok("nothing");
    };
    let (descriptor, labels_required) = r
        .state
        .with_view(|v| {
            let d = v.descriptor.clone()?;
            let labels = v
                .policy
                .as_ref()
                .map(|p| p.placement.labels.clone())
                .unwrap_or_default();
            Some((d, labels))
        })
        .flatten()
        .ok_or("the scope has no descriptor")?;
    // The joining replica accepts Raft messages from every member, old and new, until it
    // has a configuration of its own.
    let mut all = members.to_vec();
    all.extend(
        change
            .target
            .iter()
            .filter(|t| !members.iter().any(|m| m.peer_id == t.peer_id))
            .cloned(),
    );
    let descriptor = ScopeDescriptor {
        members: all,
        ..descriptor
    };
    for a in joining {
        let to = AnchorAddr::from_info(a).map_err(|e| e.to_string())?;
        let req = AdminRequest::JoinScope {
            descriptor: descriptor.clone(),
            labels_required: labels_required.clone(),
        };
        match host
            .call::<_, AdminResponse>(&to, Protocol::Admin, &req, STEP_TIMEOUT)
            .await
        {
            Ok(AdminResponse::Ok) => {}
            Ok(AdminResponse::Error(e)) => {
                return Err(format!("{} refused to join: {e}", a.peer_id))
            }
            Ok(_) => return Err(format!("{} answered JoinScope oddly", a.peer_id)),
            Err(e) => return Err(format!("{} unreachable: {e}", a.peer_id)),
        }
        let node = node_id_of_str(&a.peer_id).ok_or("bad peer id")?;
        let raft = r.group().await.map_err(|e| e.to_string())?;
        tokio::time::timeout(STEP_TIMEOUT, raft.add_learner(node, a.clone(), false))
            .await
            .map_err(|_| "adding the learner timed out".to_string())?
            .map_err(|e| e.to_string())?;
        tracing::info!(scope = %r.id, anchor = %a.peer_id, "learner added");
    }
    Ok("learner_added")
}

/// Changes the voters to exactly `voters` (openraft: joint, then uniform). Done as soon as
/// this replica has applied a uniform configuration with exactly those voters: a leader that
/// removes itself steps down at that point and openraft may never answer the call.
async fn change_voters(r: &Replica, voters: BTreeSet<u64>) -> Result<&'static str, String> {
    let raft = r.group().await.map_err(|e| e.to_string())?;
    let call = raft.change_membership(ChangeMembers::ReplaceAllVoters(voters.clone()), false);
    let mut metrics = raft.metrics();
    let applied = async {
        loop {
            let reached = {
                let m = metrics.borrow();
                let config = m.membership_config.membership().get_joint_config();
                let committed = match (m.membership_config.log_id(), m.last_applied) {
                    (Some(c), Some(a)) => c.index <= a.index,
                    _ => false,
                };
                // A leader that removed itself steps down once the configuration without
                // it is committed, possibly before it applies it.
                let stepped_down = m.state != openraft::ServerState::Leader;
                (committed || stepped_down) && config.len() == 1 && config[0] == voters
            };
            if reached || metrics.changed().await.is_err() {
                return;
            }
        }
    };
    let outcome = tokio::time::timeout(STEP_TIMEOUT, async {
        tokio::select! {
            answer = call => answer.map(|_| ()).map_err(|e| e.to_string()),
            () = applied => Ok(()),
        }
    })
    .await
    .map_err(|_| "the configuration change timed out".to_string())?;
    outcome?;
    tracing::info!(scope = %r.id, "voters changed");
    Ok("voters_changed")
}

/// Commits one entry in the scope's log.
async fn propose(r: &Replica, cmd: ScopeCommand) -> Result<&'static str, String> {
    let written = tokio::time::timeout(STEP_TIMEOUT, r.client_write(cmd))
        .await
        .map_err(|_| "not committed in time".to_string())?
        .map_err(|e| e.to_string())?;
    match written.data.results.into_iter().next() {
        Some(Ok(_)) => Ok("committed"),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("no outcome".into()),
    }
}

/// Removes the learners a change added, then commits `MembersAborted`.
async fn abort(
    r: &Replica,
    change: Option<&MemberChange>,
    reason: String,
) -> Result<&'static str, String> {
    let Some(change) = change else {
        return Ok("nothing");
    };
    let m = r.metrics().borrow().clone();
    let learners: BTreeSet<u64> = m.membership_config.membership().learner_ids().collect();
    let added: BTreeSet<u64> = change
        .added
        .iter()
        .filter_map(|s| node_id_of_str(&s.anchor.peer_id))
        .filter(|n| learners.contains(n))
        .collect();
    if !added.is_empty() {
        tokio::time::timeout(
            STEP_TIMEOUT,
            r.group()
                .await
                .map_err(|e| e.to_string())?
                .change_membership(ChangeMembers::RemoveNodes(added), false),
        )
        .await
        .map_err(|_| "removing the learners timed out".to_string())?
        .map_err(|e| e.to_string())?;
    }
    tracing::warn!(scope = %r.id, index = change.index, %reason, "member change given up");
    propose(
        r,
        ScopeCommand::MembersAborted {
            index: change.index,
            reason,
        },
    )
    .await
    .map(|_| "aborted")
}

/// Once the parent refers to the new members (or [`REFERRER_WAIT`] passed), takes the
/// members that left out of the voters and tells them to drop their replica.
async fn shrink<H: Host>(
    host: &H,
    r: &Replica,
    voters: BTreeSet<u64>,
    since: Instant,
) -> Result<&'static str, String> {
    let referred = tell_parent(host, r).await;
    if let Err(e) = &referred {
        if since.elapsed() < REFERRER_WAIT {
            return Err(format!(
                "the parent does not refer to the new members yet: {e}"
            ));
        }
        tracing::warn!(scope = %r.id, error = %e, "the parent still refers to the old members; the members that left leave anyway");
    }
    let m = r.metrics().borrow().clone();
    let leaving: Vec<AnchorInfo> = m
        .membership_config
        .membership()
        .nodes()
        .filter(|(id, _)| !voters.contains(id))
        .map(|(_, n)| n.clone())
        .collect();
    change_voters(r, voters).await?;
    for a in &leaving {
        if let Ok(to) = AnchorAddr::from_info(a) {
            let req = AdminRequest::LeaveScope { scope: r.id };
            let _ = host
                .call::<_, AdminResponse>(&to, Protocol::Admin, &req, STEP_TIMEOUT)
                .await;
        }
    }
    Ok("shrunk")
}

/// Has the parent refer to this scope's current members: done when it does already; else
/// sends it the signed word of this scope's members. `Ok` for the root (no parent).
async fn tell_parent<H: Host>(host: &H, r: &Replica) -> Result<(), String> {
    let Some((parent, descriptor)) = r
        .state
        .with_view(|v| Some((v.parent.clone()?, v.descriptor.clone()?)))
        .flatten()
    else {
        return Ok(());
    };
    let first = descriptor
        .range
        .start
        .clone()
        .unwrap_or_else(|| descriptor.prefix.clone());
    let Some(listed) = parent_referral(host, &parent, &first, r.id).await else {
        return Err("no member of the parent answered with a referral".into());
    };
    if listed.epoch >= descriptor.epoch {
        return Ok(());
    }
    // The members the parent lists vouch (they all still vote: the members that leave are
    // taken out of the voters only after this).
    let mut proofs: Vec<SignedAnswer> = Vec::new();
    for m in &listed.members {
        let Ok(to) = AnchorAddr::from_info(m) else {
            continue;
        };
        let req = AdminRequest::SignMembers { scope: r.id };
        if let Ok(AdminResponse::Signed(s)) = host
            .call::<_, AdminResponse>(&to, Protocol::Admin, &req, STEP_TIMEOUT)
            .await
        {
            proofs.push(s);
        }
    }
    let req = AdminRequest::ChildMembers(ChildMembers {
        scope: parent.id,
        child: r.id,
        proofs,
    });
    let mut errors: Vec<String> = Vec::new();
    for m in &parent.members {
        let Ok(to) = AnchorAddr::from_info(m) else {
            continue;
        };
        match host
            .call::<_, AdminResponse>(&to, Protocol::Admin, &req, STEP_TIMEOUT)
            .await
        {
            Ok(AdminResponse::Ok) => {
                tracing::info!(scope = %r.id, parent = %parent.id, epoch = descriptor.epoch, "the parent refers to the new members");
                return Ok(());
            }
            Ok(AdminResponse::Error(e)) => errors.push(format!("{}: {e}", m.peer_id)),
            Ok(_) => errors.push(format!("{}: an odd answer", m.peer_id)),
            Err(e) => errors.push(format!("{}: {e}", m.peer_id)),
        }
    }
    Err(errors.join("; "))
}

/// The referral to `child` one of the parent's members hands out for `first`.
async fn parent_referral<H: Host>(
    host: &H,
    parent: &ScopeDescriptor,
    first: &proto::Name,
    child: ScopeId,
) -> Option<proto::Referral> {
    let req = ResolveRequest {
        name: first.clone(),
        level: ReadLevel::Replica,
        scope: parent.id,
    };
    for m in &parent.members {
        let Ok(to) = AnchorAddr::from_info(m) else {
            continue;
        };
        let Ok(ResolveResponse::Signed(signed)) =
            host.call(&to, Protocol::Resolve, &req, STEP_TIMEOUT).await
        else {
            continue;
        };
        if let Ok(Answer::Referral { referral, .. }) =
            codec::decode::<Answer>(&signed.body, signed.body.len())
        {
            if referral.scope == child {
                return Some(referral);
            }
        }
    }
    None
}
