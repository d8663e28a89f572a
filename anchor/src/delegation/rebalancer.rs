//! The rebalancer: every `placement.every_ms`, this anchor looks at the scopes it leads and
//! at what it believes about the other anchors (the live load summaries of its peer book),
//! asks the pure planner ([`crate::scope::place::plan`]) what to do, and does it: a member
//! change is proposed as the scope's own `ScopeCommand::Place` entry (checked by every
//! member at apply, then carried out by the mover), a leadership is handed over with
//! [`super::transfer_leadership`].
//!
//! Dead anchors: a member whose anchor sent no summary for `placement.replace_after_s`
//! (counted from when this anchor last heard it, or from when the rebalancer started) is
//! dead, but only while this anchor hears at least one other anchor: an anchor cut off
//! from the gossip would otherwise think everybody dead.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use proto::{DelegationState, ScopeId};
use tokio::task::JoinHandle;

use super::Host;
use crate::config::PlacementSettings;
use crate::raft::ScopeCommand;
use crate::replica::Replica;
use crate::scope::place::{plan, Action, AnchorLoad, Knobs, LedScope};

/// How long a `Place` entry may take to commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs until `stop`: rebalances the scopes this anchor leads.
pub async fn rebalance<H: Host>(
    host: H,
    settings: PlacementSettings,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if !settings.rebalance {
        return;
    }
    let started = host.now_ms();
    let mut last_heard: BTreeMap<String, u64> = BTreeMap::new();
    let mut transfer: Option<JoinHandle<()>> = None;
    let mut tick = super::every(Duration::from_millis(settings.every_ms.max(100)));
    while super::next_tick(&mut tick, &mut stop).await {
        let now = host.now_ms();
        let me = host.peer_id().to_base58();
        let heard: Vec<AnchorLoad> = host
            .anchors_heard(now)
            .into_iter()
            .filter(|a| a.peer != me)
            .collect();
        for a in &heard {
            last_heard.insert(a.peer.clone(), now);
        }
        let replicas = host.replicas();
        let led: Vec<Arc<Replica>> = replicas
            .iter()
            .filter(|r| r.led_by(host.node_id()))
            .cloned()
            .collect();
        let scopes: Vec<LedScope> = led.iter().filter_map(|r| led_scope(r, now)).collect();
        let replace_after = settings.replace_after_s.saturating_mul(1000);
        let dead: BTreeSet<String> = if heard.is_empty() {
            BTreeSet::new()
        } else {
            scopes
                .iter()
                .flat_map(|s| s.members.iter())
                .filter(|m| **m != me && !heard.iter().any(|a| &a.peer == *m))
                .filter(|m| {
                    let since = last_heard.get(*m).copied().unwrap_or(started);
                    now.saturating_sub(since) > replace_after
                })
                .cloned()
                .collect()
        };
        let mut anchors = with_changes_in_flight(heard, &led);
        anchors.push(AnchorLoad {
            peer: me.clone(),
            addrs: host.addrs(),
            labels: host.labels().clone(),
            scopes: replicas.len() as u32 - leaving_me(&led, &me),
            leaderships: led.len() as u32,
        });
        let in_flight = scopes.iter().filter(|s| s.busy).count();
        let knobs = Knobs {
            tolerance_pct: settings.tolerance_pct,
            actions_max: settings.changes_max.saturating_sub(in_flight),
        };
        if knobs.actions_max == 0 {
            continue;
        }
        let transferring = transfer.as_ref().is_some_and(|t| !t.is_finished());
        for action in plan(&me, &anchors, &dead, &scopes, knobs) {
            match action {
                Action::Transfer { scope, to } => {
                    if transferring {
                        continue;
                    }
                    let Some(r) = led.iter().find(|r| r.id == scope).cloned() else {
                        continue;
                    };
                    let Some(info) = anchors
                        .iter()
                        .find(|a| a.peer == to)
                        .map(|a| a.spec().anchor)
                    else {
                        continue;
                    };
                    let host = host.clone();
                    transfer = Some(tokio::spawn(async move {
                        super::transfer_leadership(&host, &r, &info).await;
                    }));
                }
                Action::Replace {
                    scope,
                    leaving,
                    joining,
                    why,
                } => {
                    let cmd = ScopeCommand::Place {
                        add: vec![joining],
                        remove: vec![leaving],
                        why: why.to_string(),
                        proposed_at_ms: now,
                    };
                    propose(&host, &led, scope, cmd, why).await;
                }
                Action::Add { scope, joining } => {
                    let cmd = ScopeCommand::Place {
                        add: vec![joining],
                        remove: vec![],
                        why: "short".into(),
                        proposed_at_ms: now,
                    };
                    propose(&host, &led, scope, cmd, "short").await;
                }
            }
        }
    }
    if let Some(t) = transfer {
        t.abort();
    }
}

/// The scope `r` (led here) as the planner sees it; `None` before its policy is applied.
fn led_scope(r: &Replica, now_ms: u64) -> Option<LedScope> {
    let (members, policy, busy) = r
        .state
        .with_view(|v| {
            let busy = v.member_change.is_some()
                || !v.writable()
                || v.delegations.values().any(|d| {
                    matches!(
                        d.state,
                        DelegationState::Frozen | DelegationState::Merging { .. }
                    )
                });
            Some((v.descriptor.clone()?.members, v.policy.clone()?, busy))
        })
        .flatten()?;
    // Until the members that left stop voting (the mover's last step), the scope is still
    // changing.
    let voters: std::collections::BTreeSet<u64> = r
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .get_joint_config()
        .iter()
        .flatten()
        .copied()
        .collect();
    let busy = busy || voters != crate::scope::members::node_ids(&members);
    let window = r.load.window(now_ms / 1000);
    Some(LedScope {
        id: r.id,
        members: members.into_iter().map(|m| m.peer_id).collect(),
        replicas: policy.placement.replicas,
        labels: policy.placement.labels,
        auto: policy.placement.auto,
        busy,
        load: window.reads + window.writes,
    })
}

/// The anchors heard of, each counted with the replicas the changes in flight in the scopes
/// led here will add to it (its summary does not show them yet).
fn with_changes_in_flight(mut heard: Vec<AnchorLoad>, led: &[Arc<Replica>]) -> Vec<AnchorLoad> {
    for r in led {
        let joining: Vec<String> = r
            .state
            .with_view(|v| {
                v.member_change
                    .as_ref()
                    .map(|c| c.added.iter().map(|a| a.anchor.peer_id.clone()).collect())
            })
            .flatten()
            .unwrap_or_default();
        for peer in joining {
            if let Some(a) = heard.iter_mut().find(|a| a.peer == peer) {
                a.scopes += 1;
            }
        }
    }
    heard
}

/// How many of the changes in flight in the scopes led here remove this anchor.
fn leaving_me(led: &[Arc<Replica>], me: &str) -> u32 {
    led.iter()
        .filter(|r| {
            r.state
                .with_view(|v| {
                    v.member_change
                        .as_ref()
                        .is_some_and(|c| c.removed.iter().any(|p| p == me))
                })
                .unwrap_or(false)
        })
        .count() as u32
}

async fn propose<H: Host>(
    host: &H,
    led: &[Arc<Replica>],
    scope: ScopeId,
    cmd: ScopeCommand,
    why: &str,
) {
    let Some(r) = led.iter().find(|r| r.id == scope) else {
        return;
    };
    let outcome = match tokio::time::timeout(COMMIT_TIMEOUT, r.client_write(cmd)).await {
        Ok(Ok(w)) => match w.data.results.into_iter().next() {
            Some(Ok(_)) => "started",
            Some(Err(e)) => {
                tracing::info!(scope = %scope, %why, refusal = %e, "placement change refused");
                "refused"
            }
            None => "error",
        },
        Ok(Err(e)) => {
            tracing::info!(scope = %scope, %why, error = %e, "placement change not committed");
            "error"
        }
        Err(_) => "error",
    };
    if outcome == "started" {
        tracing::info!(scope = %scope, %why, "placement change started");
    }
    host.count("placement", outcome);
}
