//! Automatic splits, on the leader of each scope: every [`SPLIT_EVERY`] it asks the split
//! decider ([`crate::scope::split::decide`]) about every scope it leads whose policy has
//! `[split] auto = true`, and proposes the subtree or range split it calls for as a
//! `ScopeCommand::Split` entry carrying the evidence and its own clock. Never two splits of
//! one scope in flight: a scope with a Frozen delegation is left alone until it is handed
//! over, and one with a child merging back until the merge is done; a scope that retired
//! into its parent never splits.

use std::sync::Arc;
use std::time::Duration;

use proto::split::{Basis, SplitPlan};
use proto::DelegationState;

use super::Host;
use crate::raft::ScopeCommand;
use crate::replica::Replica;
use crate::scope::decide::delegation_over;
use crate::scope::load::LoadLimits;
use crate::scope::split::{decide, Decision};

/// How often the leader of a scope asks the decider.
pub const SPLIT_EVERY: Duration = Duration::from_secs(1);
/// How long a split entry may take to commit.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `stop`: proposes the splits the decider calls for in the scopes this anchor
/// leads.
pub async fn propose_splits<H: Host>(host: H, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = super::every(SPLIT_EVERY);
    let mut visits = super::Visits::new(SPLIT_EVERY);
    while super::next_tick(&mut tick, &mut stop).await {
        visits.next_pass();
        for r in visits.list(&host).iter() {
            if visits.wants(r) && r.led_by(host.node_id()) {
                consider(&host, r).await;
            }
        }
    }
}

/// Asks the decider about one scope this anchor leads and proposes what it calls for.
async fn consider<H: Host>(host: &H, r: &Arc<Replica>) {
    let ready = r
        .state
        .with_view(|v| {
            let in_flight = v.delegations.values().any(|d| {
                matches!(
                    d.state,
                    DelegationState::Frozen | DelegationState::Merging { .. }
                )
            });
            let policy = v.policy.as_ref().filter(|p| p.split.auto)?;
            (v.writable() && !in_flight).then(|| (policy.clone(), v.bounds(), v.last_split_ms))
        })
        .flatten();
    let Some((policy, bounds, last_split_ms)) = ready else {
        return;
    };
    let now = host.now_ms();
    let Some(load) = r.load.figures(now, LoadLimits::of(&policy.split)) else {
        return;
    };
    // The size scan reads records (reused for a few seconds): off the async workers.
    let scanned = r.clone();
    let Ok(Some(scan)) = tokio::task::spawn_blocking(move || scanned.size_scan(now)).await else {
        return;
    };
    let evidence = match decide(&load, &scan.figures, &policy, &bounds, now, last_split_ms) {
        Decision::Split(e) => e,
        Decision::Stay(_) => return,
    };
    let reason = match evidence.plan.basis() {
        Basis::Size => "size",
        Basis::Load => "load",
    };
    // A part already split off (or delegated) still counts in the scope's load for a
    // while: not again.
    let first = match &evidence.plan {
        SplitPlan::Subtree { label, .. } => bounds.prefix.child(label).ok(),
        SplitPlan::Range { at, .. } => proto::KeyRange::boundary(&bounds.prefix, at),
    };
    let taken = match first {
        Some(first) => r
            .state
            .with_view(|v| delegation_over(&v.delegations, &first).is_some())
            .unwrap_or(true),
        None => true,
    };
    if taken {
        return;
    }
    let kind = match evidence.plan {
        SplitPlan::Subtree { .. } => "subtree",
        SplitPlan::Range { .. } => "range",
    };
    tracing::info!(scope = %r.id, plan = %evidence.plan, trigger = %evidence.trigger, "proposing a split");
    let cmd = ScopeCommand::Split {
        evidence,
        proposed_at_ms: now,
    };
    let outcome = match tokio::time::timeout(PROPOSE_TIMEOUT, r.client_write(cmd)).await {
        Ok(Ok(resp)) => match resp.data.results.first() {
            Some(Ok(_)) => "split",
            _ => "refused",
        },
        Ok(Err(e)) => {
            tracing::debug!(scope = %r.id, error = %e, "split not committed");
            "error"
        }
        Err(_) => "error",
    };
    host.count_split(kind, reason, outcome);
}
