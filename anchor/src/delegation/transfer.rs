//! Handing a scope's leadership to another member. openraft 0.9 has no transfer call, and
//! its followers refuse to vote while their leader lease (`election_max_ms` from the last
//! message of their leader) runs, so the leader makes way: it stops heartbeats and takes
//! no writes and no linearizable reads (clients are told to go elsewhere), and the chosen
//! member starts elections once the leases have run out ([`campaign`]).
//!
//! The price is a write pause of about one election timeout, paid only by the scope whose
//! leadership moves (the rebalancer moves one at a time per anchor). If another member wins
//! the election, or nobody does in time, the old leader simply leads on or follows: every
//! outcome is a normal Raft election.

use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::msg::{AdminRequest, AdminResponse};
use proto::AnchorInfo;
use resolver::net::Protocol;
use resolver::AnchorAddr;

use super::Host;
use crate::identity::node_id_of_str;
use crate::raft::quiesce::Cause;
use crate::replica::Replica;

/// Extra wait past the leader lease before the target's first election.
const LEASE_MARGIN: Duration = Duration::from_millis(100);
/// How long the target keeps trying, in leases.
const TRY_LEASES: u32 = 4;
/// Pause between two elections of the target.
const ELECT_EVERY: Duration = Duration::from_millis(200);

/// Hands the leadership of `r` (led here) to `to`: true once `to` leads.
pub async fn transfer_leadership<H: Host>(host: &H, r: &Arc<Replica>, to: &AnchorInfo) -> bool {
    let Some(target) = node_id_of_str(&to.peer_id) else {
        return false;
    };
    let lease = Duration::from_millis(r.raft_config().election_timeout_max);
    let within = lease * TRY_LEASES;
    let Ok(addr) = AnchorAddr::from_info(to) else {
        return false;
    };
    let req = AdminRequest::Campaign {
        scope: r.id,
        after_ms: (lease + LEASE_MARGIN).as_millis() as u64,
        within_ms: within.as_millis() as u64,
    };
    match host
        .call::<_, AdminResponse>(&addr, Protocol::Admin, &req, lease)
        .await
    {
        Ok(AdminResponse::Ok) => {}
        other => {
            tracing::info!(scope = %r.id, to = %to.peer_id, answer = ?other.map(|_| ()), "the member would not campaign");
            return false;
        }
    }
    // The leader must not fall asleep while it yields: quiescence would switch heartbeats
    // back on (or off) under the hand-over.
    let _awake = r.keep_awake().await;
    let Ok(raft) = r.group().await else {
        return false;
    };
    let started = Instant::now();
    r.set_yield_until(host.now_ms() + (lease + within).as_millis() as u64);
    raft.runtime_config().heartbeat(false);
    let mut metrics = raft.metrics();
    let moved = loop {
        let leader = metrics.borrow().current_leader;
        if leader == Some(target) {
            break true;
        }
        if leader.is_some() && leader != Some(host.node_id()) {
            break false;
        }
        let left = (lease + within).saturating_sub(started.elapsed());
        if left.is_zero() {
            break false;
        }
        let _ = tokio::time::timeout(left, metrics.changed()).await;
    };
    raft.runtime_config().heartbeat(true);
    r.set_yield_until(0);
    tracing::info!(scope = %r.id, to = %to.peer_id, moved, ms = started.elapsed().as_millis() as u64, "leadership hand-over");
    host.count("leadership", if moved { "moved" } else { "not_moved" });
    moved
}

/// The target's side: after `after`, elections until this replica leads or `within` passed.
pub async fn campaign(r: Arc<Replica>, me: crate::raft::NodeId, after: Duration, within: Duration) {
    // A follower asleep would become a leader with its timers off: wake it first, and keep
    // it awake while it campaigns.
    let _awake = r.keep_awake().await;
    let Ok(raft) = r.group().await else {
        return;
    };
    r.sleep.wake(&raft, Cause::KeptAwake);
    tokio::time::sleep(after).await;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if r.led_by(me) {
            return;
        }
        if let Err(e) = raft.trigger().elect().await {
            tracing::info!(scope = %r.id, error = %e, "campaign stopped");
            return;
        }
        tokio::time::sleep(ELECT_EVERY).await;
    }
}
