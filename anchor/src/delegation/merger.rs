//! Merges, on the parent's leader: every [`MERGE_EVERY`] it asks the merge verdict
//! ([`crate::scope::merge_plan::merge_verdict`]) about each child the scope split off
//! (an Active delegation with no admin-signed proof, to the scope's own members, hosted
//! here too) when its policy has `[merge] auto = true`, and proposes `ScopeCommand::Merge`.
//! For a child whose delegation is `Merging` it then waits until the local child replica
//! has applied the child's `Retire` (`merge_child.rs` has the child's half), reads its final
//! state, pads the parent's log past the child's last index (so versions keep growing), and
//! commits `MergeDone`; or `MergeAborted` when that state does not fit one entry or the
//! child delegated part of itself meanwhile. Every step is idempotent and re-driven by
//! whoever leads next.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use proto::limits::RAFT_ENTRY_BYTES_MAX;
use proto::msg::{AdminRequest, AdminResponse, ScopeTarget};
use proto::split::MergeEvidence;
use proto::{codec, Delegation, DelegationState, ScopeId};
use resolver::net::Protocol;
use resolver::AnchorAddr;
use tokio::task::JoinHandle;

use super::Host;
use crate::raft::ScopeCommand;
use crate::replica::Replica;
use crate::scope::load::{LoadFigures, LoadLimits};
use crate::scope::merge_plan::{merge_verdict, Side};
use crate::scope::split::ScopeBounds;

/// How often the merger asks the verdict about the scopes this anchor leads.
pub const MERGE_EVERY: Duration = Duration::from_secs(1);
/// How often it drives merges in flight (retire, finish, remove merged children).
const TICK: Duration = Duration::from_millis(200);
/// How far past the child's last index the parent's log is padded before the merge is
/// proposed, so that few entries are left to pad while the child refuses writes.
const PAD_AHEAD: u64 = 64;
/// Largest encoded `MergeDone` entry (the bound every log entry keeps, with room for the
/// entry's own framing).
pub const MERGE_ENTRY_BYTES_MAX: usize = RAFT_ENTRY_BYTES_MAX - 1024;
/// What the child's state may take when the merge is decided: a quarter of the room is
/// left for writes the child takes before it retires.
const MERGE_DECIDE_BYTES_MAX: usize = MERGE_ENTRY_BYTES_MAX / 4 * 3;
/// How long one proposal may take to commit.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between attempts of finishing a merge.
const FINISH_RETRY: Duration = Duration::from_millis(200);
/// Empty entries proposed at once while padding the parent's log.
const PAD_BATCH: u64 = 256;
/// How long asking the child's leader for its load may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs until `stop`: decides and finishes merges in the scopes this anchor leads, retires
/// or resumes the children it leads, and removes merged children on every anchor.
pub async fn merge_scopes<H: Host>(host: H, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut finishing: BTreeMap<ScopeId, JoinHandle<()>> = BTreeMap::new();
    let mut deciding: BTreeMap<ScopeId, JoinHandle<()>> = BTreeMap::new();
    let mut tick = super::every(TICK);
    let mut visits = super::Visits::new(TICK);
    let mut last_decided = tokio::time::Instant::now();
    while super::next_tick(&mut tick, &mut stop).await {
        visits.next_pass();
        finishing.retain(|_, j| !j.is_finished());
        deciding.retain(|_, j| !j.is_finished());
        let decide_now = last_decided.elapsed() >= MERGE_EVERY;
        if decide_now {
            last_decided = tokio::time::Instant::now();
        }
        for r in visits.list(&host).iter() {
            if !visits.wants(r) {
                continue;
            }
            super::merge_child::remove_if_merged(&host, r).await;
            if !r.led_by(host.node_id()) {
                continue;
            }
            super::merge_child::retire_or_resume(&host, r).await;
            let merging: Vec<Delegation> = r
                .state
                .with_view(|v| {
                    v.delegations
                        .values()
                        .filter(|d| matches!(d.state, DelegationState::Merging { .. }))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if merging.is_empty() && decide_now && !deciding.contains_key(&r.id) {
                deciding.insert(r.id, tokio::spawn(consider(host.clone(), r.clone())));
            }
            for d in merging {
                let child = d.referral.scope;
                if let std::collections::btree_map::Entry::Vacant(slot) = finishing.entry(child) {
                    slot.insert(tokio::spawn(finish(host.clone(), r.clone(), d)));
                }
            }
        }
    }
    for j in finishing.into_values().chain(deciding.into_values()) {
        j.abort();
    }
}

/// How `scope show` names a part split off: its prefix, and its range when it is one.
fn part_text(d: &Delegation) -> String {
    if d.referral.range.is_bounded() {
        format!("{} {}", d.referral.prefix, d.referral.range)
    } else {
        d.referral.prefix.to_string()
    }
}

/// A child `parent` split off, hosted here, that may merge back.
pub struct Candidate {
    /// Its delegation in the parent.
    pub delegation: Delegation,
    /// The local replica of it.
    pub child: Arc<Replica>,
}

/// The children `parent` split off, each a candidate or the reason it is none (by prefix).
pub fn candidates<H: Host>(host: &H, parent: &Replica) -> Vec<Result<Candidate, String>> {
    let view = parent.state.view();
    let ours: Vec<String> = view
        .descriptor
        .as_ref()
        .map(|d| d.members.iter().map(|m| m.peer_id.clone()).collect())
        .unwrap_or_default();
    let own = view.bounds();
    let mut out = Vec::new();
    for d in view.delegations.values() {
        let prefix = &part_text(d);
        if let DelegationState::Merging { index } = d.state {
            out.push(Err(format!("{prefix}: merging back since v{index}")));
            continue;
        }
        if d.state != DelegationState::Active {
            continue;
        }
        // A range merges into the scope whose own names end where it starts; ranges
        // further right wait for the ones between to merge first.
        if d.referral.range.is_bounded() && d.referral.range.start != own.end {
            out.push(Err(format!(
                "{prefix}: stay: not next to this scope's own names (the range before it merges first)"
            )));
            continue;
        }
        let child = d.referral.scope;
        if !matches!(parent.state.delegation_proof(&child), Ok(None)) {
            continue; // an operator's delegation: it never merges back
        }
        let same = d.referral.members.len() == ours.len()
            && d.referral.members.iter().all(|m| ours.contains(&m.peer_id));
        if !same {
            out.push(Err(format!(
                "{prefix}: stay: its members are not this scope's"
            )));
            continue;
        }
        let Some(replica) = host.replica(&child) else {
            out.push(Err(format!(
                "{prefix}: stay: no replica of it on this anchor"
            )));
            continue;
        };
        let (writable, delegates) = replica
            .state
            .with_view(|v| {
                let delegates = v
                    .delegations
                    .values()
                    .any(|d| d.state != DelegationState::Aborted);
                (v.writable(), delegates)
            })
            .unwrap_or((false, false));
        if !writable {
            out.push(Err(format!("{prefix}: stay: it is not taking writes")));
        } else if delegates {
            out.push(Err(format!(
                "{prefix}: stay: it delegated part of itself, so it is more than records"
            )));
        } else {
            out.push(Ok(Candidate {
                delegation: d.clone(),
                child: replica,
            }));
        }
    }
    out
}

/// The merge verdict for `parent` and `c` at `now_ms`, with the child's peaks raised to
/// `remote` (its leader's figures, when another anchor leads it). Reads both scopes'
/// size scans (reused for a few seconds): call it off the async workers.
pub fn verdict(
    parent: &Replica,
    c: &Candidate,
    now_ms: u64,
    remote: Option<(u64, u64, bool)>,
) -> Result<Box<MergeEvidence>, String> {
    let stay = |why: String| format!("{}: stay: {why}", part_text(&c.delegation));
    let (policy, split_at) = parent
        .state
        .with_view(|v| v.policy.clone().map(|p| (p, v.last_split_ms.unwrap_or(0))))
        .flatten()
        .ok_or_else(|| stay("no policy yet".into()))?;
    let limits = LoadLimits::of(&policy.split);
    let figures = |r: &Replica| -> Result<(LoadFigures, _), String> {
        let load = r.load.figures(now_ms, limits).ok_or("no load figures")?;
        let scan = r.size_scan(now_ms).ok_or("no size scan")?;
        if !scan.complete {
            return Err(format!(
                "{} holds too many names to scan",
                r.descriptor.prefix
            ));
        }
        Ok((load, scan.figures))
    };
    let (pload, psize) = figures(parent).map_err(stay)?;
    let (mut cload, csize) = figures(&c.child).map_err(stay)?;
    if let Some((reads, writes, reliable)) = remote {
        cload.reads_peak = cload.reads_peak.max(reads);
        cload.writes_peak = cload.writes_peak.max(writes);
        cload.peak_reliable &= reliable;
    }
    let pb = parent.state.view().bounds();
    let range = &c.delegation.referral.range;
    let cb = ScopeBounds {
        prefix: c.delegation.referral.prefix.clone(),
        start: range.start.clone(),
        end: range.end.clone(),
    };
    let side = |bounds, load, size| Side { bounds, load, size };
    merge_verdict(
        side(&pb, &pload, &psize),
        side(&cb, &cload, &csize),
        &policy,
        now_ms,
        split_at,
    )
    .map_err(|hold| stay(hold.to_string()))
}

/// `scope show`'s merge lines for `parent` at `now_ms` (one per child it split off).
pub fn merge_lines<H: Host>(host: &H, parent: &Replica, now_ms: u64) -> Vec<String> {
    candidates(host, parent)
        .into_iter()
        .map(|c| match c {
            Err(line) => line,
            Ok(c) => match verdict(parent, &c, now_ms, None).and_then(|e| fits(&c, now_ms).map(|()| e)) {
                Err(line) => line,
                Ok(e) => format!(
                    "{}: merge due: {} names, {} bytes, peaks {}/s reads {}/s writes (summed {}/s, {}/s)",
                    part_text(&c.delegation),
                    e.right.names,
                    e.right.bytes,
                    e.right.load.reads_peak,
                    e.right.load.writes_peak,
                    e.left.load.reads_peak + e.right.load.reads_peak,
                    e.left.load.writes_peak + e.right.load.writes_peak,
                ),
            },
        })
        .collect()
}

/// The child's peaks on its leader, when another anchor leads it.
async fn leader_peaks<H: Host>(host: &H, child: &Replica) -> Option<(u64, u64, bool)> {
    let leader = child.leader_info()?;
    if leader.peer_id == host.peer_id().to_base58() {
        return None;
    }
    let to = AnchorAddr::from_info(&leader).ok()?;
    let req = AdminRequest::ScopeInfo {
        target: ScopeTarget::Id(child.id),
    };
    match host.call(&to, Protocol::Admin, &req, ASK_TIMEOUT).await {
        Ok(AdminResponse::Scope(info)) => {
            let v = info.split?;
            Some((v.reads_peak, v.writes_peak, v.peak_reliable))
        }
        _ => Some((0, 0, false)),
    }
}

/// Asks the verdict about every child `r` split off and proposes the first merge due,
/// after padding the parent's log past the child's last index.
async fn consider<H: Host>(host: H, r: Arc<Replica>) {
    let (host, r) = (&host, &r);
    let auto = r
        .state
        .with_view(|v| v.writable() && v.policy.as_ref().is_some_and(|p| p.merge.auto))
        .unwrap_or(false);
    if !auto {
        return;
    }
    for c in candidates(host, r).into_iter().flatten() {
        let remote = leader_peaks(host, &c.child).await;
        let now = host.now_ms();
        let (parent, child) = (r.clone(), c.child.clone());
        let d = c.delegation.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let c = Candidate {
                delegation: d,
                child,
            };
            let evidence = verdict(&parent, &c, now, remote).map_err(|why| (why, false))?;
            fits(&c, now).map_err(|why| (why, true))?;
            Ok(evidence)
        })
        .await;
        let evidence = match checked {
            Ok(Ok(e)) => e,
            Ok(Err((why, too_big))) => {
                if too_big {
                    tracing::debug!(scope = %r.id, %why, "no merge: too big for one entry");
                    host.count_merge("too_big");
                }
                continue;
            }
            Err(_) => continue,
        };
        let child = c.delegation.referral.scope;
        let child_last = c.child.metrics().borrow().last_log_index.unwrap_or(0);
        if let Err(e) = pad(host, r, child_last + PAD_AHEAD).await {
            tracing::debug!(scope = %r.id, %child, error = %e, "padding before a merge failed");
            host.count_merge("error");
            return;
        }
        tracing::info!(scope = %r.id, %child, prefix = %c.delegation.referral.prefix, "proposing a merge");
        let cmd = ScopeCommand::Merge {
            child,
            evidence: *evidence,
            proposed_at_ms: now,
        };
        let outcome = match propose(r, cmd).await {
            Ok(Ok(())) => "proposed",
            Ok(Err(_)) => "refused",
            Err(_) => "error",
        };
        host.count_merge(outcome);
        return;
    }
}

/// `Ok` when the child's current state, as one `MergeDone` entry, leaves room for what it
/// may take before it retires; else the `scope show` line saying why not. Reads the child's
/// records and nonces: call it off the async workers.
fn fits(c: &Candidate, now_ms: u64) -> Result<(), String> {
    let bytes = state_bytes(&c.child, &c.delegation, now_ms)?;
    if bytes > MERGE_DECIDE_BYTES_MAX {
        return Err(format!(
            "{}: stay: its state takes {bytes} bytes in one entry; a merge needs at most {MERGE_DECIDE_BYTES_MAX}",
            part_text(&c.delegation)
        ));
    }
    Ok(())
}

/// The encoded size of a `MergeDone` carrying the child's current state.
fn state_bytes(child: &Replica, d: &Delegation, now_ms: u64) -> Result<usize, String> {
    let (prefix, range) = (&d.referral.prefix, &d.referral.range);
    let err = |e: crate::AnchorError| format!("{prefix}: stay: reading its state: {e}");
    let cmd = ScopeCommand::MergeDone {
        child: d.referral.scope,
        retired_at: 0,
        records: child.state.records_in(prefix, range).map_err(err)?,
        nonces: child.state.nonces_in(prefix, range, now_ms).map_err(err)?,
    };
    codec::encode(&cmd)
        .map(|b| b.len())
        .map_err(|e| format!("{prefix}: stay: {e}"))
}

/// Proposes `cmd`: `Ok(Ok)` committed and applied, `Ok(Err(why))` committed as a no-op,
/// `Err` not committed (in time).
async fn propose(r: &Replica, cmd: ScopeCommand) -> Result<Result<(), String>, String> {
    match tokio::time::timeout(PROPOSE_TIMEOUT, r.client_write(cmd)).await {
        Ok(Ok(resp)) => Ok(match resp.data.results.first() {
            Some(Err(e)) => Err(e.to_string()),
            _ => Ok(()),
        }),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("not committed in time".into()),
    }
}

/// Steps 3 (or the abort) for one `Merging` delegation, while this anchor leads the parent.
async fn finish<H: Host>(host: H, parent: Arc<Replica>, d: Delegation) {
    let child = d.referral.scope;
    let mut retry = super::every(FINISH_RETRY);
    loop {
        retry.tick().await;
        let still = parent
            .state
            .with_view(|v| {
                v.delegations
                    .values()
                    .any(|o| o.referral.scope == child && o.state == d.state)
            })
            .unwrap_or(false);
        if !parent.led_by(host.node_id()) || !still {
            return;
        }
        // The local child replica, once it applied the child's Retire: its final state.
        let Some(replica) = host.replica(&child) else {
            continue;
        };
        let Ok(Ok(Some(state))) =
            tokio::task::spawn_blocking(move || replica.state.retired_state()).await
        else {
            continue;
        };
        if state.retired.into != parent.id {
            continue;
        }
        let abort = if state.delegates {
            Some("the child delegated part of itself before it retired".to_string())
        } else {
            None
        };
        let cmd = ScopeCommand::MergeDone {
            child,
            retired_at: state.applied,
            records: state.records,
            nonces: state.nonces,
        };
        let size = codec::encode(&cmd).map_or(usize::MAX, |b| b.len());
        let abort = abort.or_else(|| {
            (size > MERGE_ENTRY_BYTES_MAX).then(|| {
                format!("the child's final state takes {size} bytes; one entry holds at most {MERGE_ENTRY_BYTES_MAX}")
            })
        });
        if let Some(reason) = abort {
            tracing::warn!(scope = %parent.id, %child, %reason, "aborting the merge");
            let outcome = propose(&parent, ScopeCommand::MergeAborted { child, reason }).await;
            host.count_merge(if outcome.is_ok() { "aborted" } else { "error" });
            continue;
        }
        if let Err(e) = pad(&host, &parent, state.applied).await {
            tracing::debug!(scope = %parent.id, %child, error = %e, "padding the log; retrying");
            continue;
        }
        match propose(&parent, cmd).await {
            Ok(Ok(())) => {
                tracing::info!(scope = %parent.id, %child, prefix = %d.referral.prefix, "merged back");
                host.count_merge("merged");
                return;
            }
            Ok(Err(why)) => {
                tracing::info!(scope = %parent.id, %child, %why, "merge done refused; retrying")
            }
            Err(e) => {
                tracing::debug!(scope = %parent.id, %child, error = %e, "merge done not committed; retrying")
            }
        }
    }
}

/// Proposes empty batches until the parent's log reaches `index`, so the next entry lands
/// past it (a name's version never goes back when the child's records come in).
async fn pad<H: Host>(host: &H, parent: &Replica, index: u64) -> Result<(), String> {
    loop {
        let last = parent.metrics().borrow().last_log_index.unwrap_or(0);
        if last >= index {
            return Ok(());
        }
        let n = (index - last).min(PAD_BATCH);
        let now = host.now_ms();
        let writes = (0..n).map(|_| {
            propose(
                parent,
                ScopeCommand::Writes {
                    mutations: Vec::new(),
                    proposed_at_ms: now,
                },
            )
        });
        for r in futures::future::join_all(writes).await {
            let _applied = r?;
        }
    }
}
