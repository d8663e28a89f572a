//! Forgetting learned ranges that went stale, on the leader of the scope that learned them:
//! every [`FORGET_EVERY`] it asks the members of each learned range's scope for the range's
//! first name; when none answers from that scope (it merged back and is gone), it walks the
//! name from the delegated scope on each of the delegation's members and, with a strict
//! majority answering it themselves (found or not found, from the delegated scope or another
//! learned range), commits `ScopeCommand::ForgetRange` with those answers as proof (checked
//! by every member at apply, [`crate::scope::forget::check_forget`]). Until then the walk
//! falls back through the delegated scope.

use std::sync::Arc;
use std::time::Duration;

use proto::msg::{Answer, SignedAnswer};
use proto::{Delegation, DelegationState, Name, ScopeId};

use super::learner::ask;
use super::Host;
use crate::raft::ScopeCommand;
use crate::replica::Replica;

/// How often the leader checks the ranges its scope learned.
pub const FORGET_EVERY: Duration = Duration::from_secs(5);
/// How long proposing the `ForgetRange` may take.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `stop`: drops the stale learned ranges of the scopes this anchor leads.
pub async fn forget_stale_ranges<H: Host>(host: H, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = super::every(FORGET_EVERY);
    let mut visits = super::Visits::new(FORGET_EVERY);
    while super::next_tick(&mut tick, &mut stop).await {
        visits.next_pass();
        for r in visits.list(&host).iter() {
            if !visits.wants(r) || !r.led_by(host.node_id()) {
                continue;
            }
            let learned: Vec<(Delegation, Vec<ScopeId>, Option<Delegation>)> = r
                .state
                .with_view(|v| {
                    v.delegations
                        .values()
                        .filter_map(|d| match d.state {
                            DelegationState::Learned { base } => {
                                let askable = v
                                    .delegations
                                    .values()
                                    .filter(|o| {
                                        o.referral.scope == base
                                            || o.state == DelegationState::Learned { base }
                                    })
                                    .map(|o| o.referral.scope)
                                    .filter(|s| *s != d.referral.scope)
                                    .collect();
                                let base_d = v
                                    .delegations
                                    .values()
                                    .find(|o| o.referral.scope == base)
                                    .cloned();
                                Some((d.clone(), askable, base_d))
                            }
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            for (d, askable, base) in learned {
                let Some(base) = base else { continue };
                forget_if_stale(&host, r, &d, &base, &askable).await;
            }
        }
    }
}

/// One learned range `d` of `r`: proposes forgetting it if its scope no longer answers for
/// its first name and a majority of `base`'s members answer it from `askable` scopes.
async fn forget_if_stale<H: Host>(
    host: &H,
    r: &Arc<Replica>,
    d: &Delegation,
    base: &Delegation,
    askable: &[ScopeId],
) {
    let first = d.referral.first().clone();
    let stale = d.referral.scope;
    if let Some((_, answer)) = ask(host, &d.referral.members, stale, &first).await {
        if answer.scope() == stale {
            return; // still there
        }
    }
    let mut proofs = Vec::new();
    for m in &base.referral.members {
        if let Some(p) = governing_answer(host, m, base.referral.scope, &first, askable).await {
            proofs.push(p);
        }
    }
    if proofs.len() * 2 <= base.referral.members.len() {
        tracing::debug!(scope = %r.id, %first, range_scope = %stale, vouched = proofs.len(), "a learned range looks stale; too few members answer its first name yet");
        return;
    }
    let cmd = ScopeCommand::ForgetRange {
        first: first.clone(),
        proofs,
    };
    match tokio::time::timeout(PROPOSE_TIMEOUT, r.client_write(cmd)).await {
        Ok(Ok(resp)) if matches!(resp.data.results.first(), Some(Ok(_))) => {
            tracing::info!(scope = %r.id, %first, range_scope = %stale, "forgot a learned range whose scope merged away");
            host.count_learn("forgotten");
        }
        Ok(Ok(resp)) => {
            tracing::debug!(scope = %r.id, %first, results = ?resp.data.results, "forgetting a learned range refused");
            host.count_learn("forget_refused");
        }
        Ok(Err(_)) | Err(_) => host.count_learn("forget_error"),
    }
}

/// The signed answer of member `m` that answers `first` itself, from one of `askable`
/// (followed from the delegated scope `base` through referrals to scopes among `askable`).
async fn governing_answer<H: Host>(
    host: &H,
    m: &proto::AnchorInfo,
    base: ScopeId,
    first: &Name,
    askable: &[ScopeId],
) -> Option<SignedAnswer> {
    let mut scope = base;
    for _ in 0..proto::limits::REFERRAL_HOPS_MAX {
        let (signed, answer) = ask(host, std::slice::from_ref(m), scope, first).await?;
        match answer {
            Answer::Found { scope: s, .. } | Answer::NotFound { scope: s, .. } => {
                return askable.contains(&s).then_some(signed);
            }
            Answer::Referral { referral, .. } if askable.contains(&referral.scope) => {
                scope = referral.scope;
            }
            Answer::Referral { .. } | Answer::Members { .. } => return None,
        }
    }
    None
}
