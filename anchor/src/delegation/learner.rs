//! Pushing a range split to the scope that holds the delegation, on the splitting scope's
//! leader: once a range split off a scope is Active (the range scope has a leader that
//! applied its first entry), the splitting scope's leader makes the holder of the delegation
//! of its prefix (its parent, or, for a range scope, the parent of the scope the ranges were
//! first split from) learn the range, so the holder refers names in it straight to the
//! range scope and a cold walk takes no extra hop.
//!
//! One job per range: it asks the holder's members whether the holder already refers the
//! range's first name to the range scope (then it is done); otherwise it asks every member
//! of its own scope for a signed answer for that name (each refers it to the range scope),
//! and with a majority of them sends `AdminRequest::LearnRange` to the holder's members
//! until its leader commits it (`crate::server`'s `learn`, checked by every holder member at
//! apply). Idempotent; retried with a growing pause (at most [`RETRY_MAX`]); a new leader
//! starts over with the check.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::msg::{
    AdminRequest, AdminResponse, Answer, LearnRange, ReadLevel, ResolveRequest, ResolveResponse,
    SignedAnswer,
};
use proto::{codec, AnchorInfo, DelegationState, Referral, ScopeDescriptor, ScopeId};
use resolver::net::Protocol;
use resolver::AnchorAddr;
use tokio::task::JoinHandle;

use super::Host;
use crate::replica::Replica;

/// How often the leader looks for ranges to push.
pub const LEARN_EVERY: Duration = Duration::from_secs(1);
/// The longest pause between two attempts for one range.
const RETRY_MAX: Duration = Duration::from_secs(30);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs until `stop`: pushes every Active range split off a scope this anchor leads to the
/// holder of the scope's delegation.
pub async fn push_ranges<H: Host>(host: H, mut stop: tokio::sync::watch::Receiver<bool>) {
    // Ranges the holder refers to already (as seen by this anchor while it led), and the
    // running jobs with the time the next attempt may start.
    let mut done: BTreeSet<ScopeId> = BTreeSet::new();
    let mut jobs: BTreeMap<ScopeId, (JoinHandle<bool>, u32)> = BTreeMap::new();
    let mut not_before: BTreeMap<ScopeId, (Instant, u32)> = BTreeMap::new();
    let mut tick = super::every(LEARN_EVERY);
    let mut visits = super::Visits::new(LEARN_EVERY);
    while super::next_tick(&mut tick, &mut stop).await {
        // Collect finished jobs.
        let finished: Vec<ScopeId> = jobs
            .iter()
            .filter(|(_, (j, _))| j.is_finished())
            .map(|(k, _)| *k)
            .collect();
        for k in finished {
            if let Some((j, attempts)) = jobs.remove(&k) {
                if j.await.unwrap_or(false) {
                    done.insert(k);
                    not_before.remove(&k);
                } else {
                    let pause = Duration::from_secs(1 << attempts.min(5)).min(RETRY_MAX);
                    not_before.insert(k, (Instant::now() + pause, attempts + 1));
                }
            }
        }
        let me = host.node_id();
        let mut wanted = BTreeSet::new();
        visits.next_pass();
        for r in visits.list(&host).iter() {
            if !visits.wants(r) || !r.led_by(me) {
                continue;
            }
            for (referral, holder) in ranges_to_push(&host, r) {
                let range_scope = referral.scope;
                wanted.insert(range_scope);
                if done.contains(&range_scope) || jobs.contains_key(&range_scope) {
                    continue;
                }
                let attempts = match not_before.get(&range_scope) {
                    Some((at, _)) if Instant::now() < *at => continue,
                    Some((_, n)) => *n,
                    None => 0,
                };
                let job = tokio::spawn(push_one(host.clone(), r.clone(), referral, holder));
                jobs.insert(range_scope, (job, attempts));
            }
        }
        if visits.full() {
            done.retain(|k| wanted.contains(k));
            not_before.retain(|k, _| wanted.contains(k));
        }
    }
    for (j, _) in jobs.into_values() {
        j.abort();
    }
}

/// The Active ranges split off `r` (of its own prefix), each with the descriptor of the scope
/// that holds the delegation of that prefix; none when `r` has no such holder (the root, or
/// a range scope whose ancestors are not hosted here).
fn ranges_to_push<H: Host>(host: &H, r: &Replica) -> Vec<(Referral, ScopeDescriptor)> {
    let ranges: Vec<Referral> = r
        .state
        .with_view(|v| {
            v.delegations
                .values()
                .filter(|d| d.state == DelegationState::Active)
                .filter(|d| {
                    d.referral.range.is_bounded() && d.referral.prefix == r.descriptor.prefix
                })
                .map(|d| d.referral.clone())
                .collect()
        })
        .unwrap_or_default();
    if ranges.is_empty() {
        return Vec::new();
    }
    let Some(holder) = holder_of(host, r) else {
        return Vec::new();
    };
    ranges.into_iter().map(|x| (x, holder.clone())).collect()
}

/// The scope holding the delegation of `r`'s prefix: `r`'s parent, or for a range scope the
/// parent of the scope its range was first split from (found through the replicas hosted
/// here: ranges are split onto the same members).
fn holder_of<H: Host>(host: &H, r: &Replica) -> Option<ScopeDescriptor> {
    let prefix = &r.descriptor.prefix;
    let mut parent = r.state.with_view(|v| v.parent.clone()).flatten()?;
    for _ in 0..proto::limits::REFERRAL_HOPS_MAX {
        if parent.prefix != *prefix {
            return Some(parent);
        }
        let up = host.replica(&parent.id)?;
        parent = up.state.with_view(|v| v.parent.clone()).flatten()?;
    }
    None
}

/// One attempt for one range: true once the holder refers its first name to it.
async fn push_one<H: Host>(
    host: H,
    r: Arc<Replica>,
    referral: Referral,
    holder: ScopeDescriptor,
) -> bool {
    let first = referral.first().clone();
    let refers =
        |a: &Answer| matches!(a, Answer::Referral { referral: x, .. } if x.scope == referral.scope);
    if let Some(answer) = ask(&host, &holder.members, holder.id, &first).await {
        if refers(&answer.1) {
            return true;
        }
    }
    let mut proofs: Vec<SignedAnswer> = Vec::new();
    let members = r.descriptor.members.clone();
    for m in &members {
        if let Some((signed, answer)) = ask(&host, std::slice::from_ref(m), r.id, &first).await {
            if matches!(&answer, Answer::Referral { referral: x, .. } if *x == referral) {
                proofs.push(signed);
            }
        }
    }
    if proofs.len() * 2 <= members.len() {
        tracing::debug!(scope = %r.id, range_scope = %referral.scope, vouched = proofs.len(), "too few members vouch for the range yet; retrying");
        host.count_learn("push_error");
        return false;
    }
    let req = AdminRequest::LearnRange(LearnRange {
        scope: holder.id,
        referral: referral.clone(),
        proofs,
    });
    for m in &holder.members {
        let Ok(to) = AnchorAddr::from_info(m) else {
            continue;
        };
        match host
            .call::<_, AdminResponse>(&to, Protocol::Admin, &req, REQUEST_TIMEOUT)
            .await
        {
            Ok(AdminResponse::Ok) => {
                tracing::info!(scope = %r.id, holder = %holder.id, range_scope = %referral.scope, range = %referral.range, "the delegation's holder learned the range");
                host.count_learn("pushed");
                return true;
            }
            Ok(AdminResponse::Error(e)) => {
                tracing::debug!(holder = %holder.id, member = %m.peer_id, error = %e, "range not learned here");
            }
            Ok(_) | Err(_) => {}
        }
    }
    host.count_learn("push_error");
    false
}

/// A signed answer for `name` from `scope`, from the first of `members` that gives one.
pub(super) async fn ask<H: Host>(
    host: &H,
    members: &[AnchorInfo],
    scope: ScopeId,
    name: &proto::Name,
) -> Option<(SignedAnswer, Answer)> {
    let req = ResolveRequest {
        name: name.clone(),
        level: ReadLevel::Replica,
        scope,
    };
    for m in members {
        let Ok(to) = AnchorAddr::from_info(m) else {
            continue;
        };
        let reply = host
            .call(&to, Protocol::Resolve, &req, REQUEST_TIMEOUT)
            .await;
        let Ok(ResolveResponse::Signed(signed)) = reply else {
            continue;
        };
        if let Ok(answer) = codec::decode::<Answer>(&signed.body, signed.body.len()) {
            return Some((signed, answer));
        }
    }
    None
}
