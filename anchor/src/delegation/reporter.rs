//! Load reports, on every member: every [`REPORT_EVERY`] each replica this anchor hosts but
//! does not lead sends the reads it answered in the whole seconds since its last report to
//! the scope's leader (`RaftRpc::LoadReport`), so the leader's split accounting holds the
//! reads every member served, not only its own. A leader drops its own pending counts (it
//! counted them already). Reports are small (counts per second, no names) and lossy: a
//! report that fails is not sent again. Only the scopes on the anchor's busy list
//! ([`crate::scope::meter::BusyList`]) are looked at: an idle scope has nothing to report.

use std::time::Duration;

use proto::codec;
use proto::msg::{RaftRequest, RaftResponse, RaftRpc};
use resolver::net::Protocol;
use resolver::AnchorAddr;

use super::Host;

/// How often members report.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
/// How long one report may take.
const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs until `stop`: sends each hosted follower replica's read counts to its leader.
pub async fn report_loads<H: Host>(host: H, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = super::every(REPORT_EVERY);
    while super::next_tick(&mut tick, &mut stop).await {
        let now_ms = host.now_ms();
        // Only a scope that counted a read lately has any to report.
        for r in host.busy_replicas(now_ms / 1000) {
            let Some(report) = r.load.take_report(now_ms) else {
                continue;
            };
            if r.led_by(host.node_id()) {
                continue;
            }
            let Some(to) = r.leader_info().and_then(|l| AnchorAddr::from_info(&l).ok()) else {
                continue;
            };
            let Ok(payload) = codec::encode(&report) else {
                continue;
            };
            let req = RaftRequest {
                scope: r.id,
                rpc: RaftRpc::LoadReport,
                payload,
            };
            let host = host.clone();
            tokio::spawn(async move {
                let reply: Result<RaftResponse, _> =
                    host.call(&to, Protocol::Raft, &req, REPORT_TIMEOUT).await;
                let outcome = match reply {
                    Ok(RaftResponse::Ok(_)) => "ok",
                    _ => "error",
                };
                host.count("load_report", outcome);
            });
        }
    }
}
