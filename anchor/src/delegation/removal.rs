//! Whether this anchor's replica of a scope is still wanted, and whether a peer it has not
//! heard of is a member, both settled by asking the voters the replica knows: a replica that
//! may have been removed drops itself once a strict majority of them report a newer
//! configuration without it ([`check_removed`]); a replica that refused a peer's Raft
//! message accepts the peer once a strict majority report a newer configuration listing it
//! ([`vouch_for`]). The verdicts on each answer are the pure functions of
//! [`crate::scope::members`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use proto::msg::{AdminRequest, AdminResponse, ScopeStatus, ScopeTarget};
use proto::AnchorInfo;
use resolver::net::Protocol;
use resolver::AnchorAddr;

use super::Host;
use crate::replica::Replica;
use crate::scope::members::{confirms_removal, report_shows_removed, report_vouches, ConfigPos};

/// How long one voter may take to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// What a replica knows of its own configuration.
struct Known {
    /// Where its configuration sits in the log.
    mine: Option<ConfigPos>,
    /// Whether it lists this anchor.
    listed: bool,
    /// Its voters (both halves of a joint configuration).
    voters: Vec<AnchorInfo>,
}

fn known(r: &Replica, me: &str) -> Known {
    r.with_metrics(|m| {
        let membership = m.membership_config.membership();
        Known {
            mine: m
                .membership_config
                .log_id()
                .map(|l| (l.leader_id.term, l.index)),
            listed: membership.nodes().any(|(_, n)| n.peer_id == me),
            voters: membership
                .get_joint_config()
                .iter()
                .flatten()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .filter_map(|id| membership.get_node(id).cloned())
                .collect(),
        }
    })
}

/// Asks each of `voters` for its status of `r`'s scope; how many answers `agrees` with.
async fn ask_voters<H: Host>(
    host: &H,
    r: &Replica,
    voters: impl Iterator<Item = &AnchorInfo>,
    agrees: impl Fn(&ScopeStatus) -> bool,
) -> usize {
    let mut confirmed = 0;
    for v in voters {
        let Ok(to) = AnchorAddr::from_info(v) else {
            continue;
        };
        let req = AdminRequest::ScopeInfo {
            target: ScopeTarget::Id(r.id),
        };
        if let Ok(AdminResponse::Scope(info)) = host
            .call::<_, AdminResponse>(&to, Protocol::Admin, &req, ASK_TIMEOUT)
            .await
        {
            if agrees(&info.status) {
                confirmed += 1;
            }
        }
    }
    confirmed
}

/// Where a member's reported configuration sits in the log.
fn config_pos(s: &ScopeStatus) -> Option<ConfigPos> {
    Some((s.membership_term?, s.membership_log?))
}

/// Asks the members this replica knows whether it was removed from its scope, and drops
/// it when a strict majority of them report a newer configuration without this anchor.
pub async fn check_removed<H: Host>(host: H, r: Arc<Replica>) {
    let Some(confirmed) = removal_confirmed(&host, &r).await else {
        return;
    };
    // The anchor may have joined the scope again meanwhile, with a new replica: drop only
    // this one (no await between the check and the removal taking it out of the map).
    if !host.replica(&r.id).is_some_and(|now| Arc::ptr_eq(&now, &r)) {
        return;
    }
    tracing::info!(scope = %r.id, confirmed, "this anchor left the scope: dropping its replica");
    match host.remove_scope(&r.id).await {
        Ok(()) => host.count("members", "replica_dropped"),
        Err(e) => tracing::warn!(scope = %r.id, error = %e, "dropping a replica this anchor left"),
    }
}

/// Asks the voters of `r`'s configuration about `peer`, which sent `r` a Raft message `r`
/// refused (not in its configuration): when a strict majority report a newer
/// configuration listing it, `r` accepts its messages from now on ([`Replica::vouch`]).
pub async fn vouch_for<H: Host>(host: H, r: Arc<Replica>, peer: libp2p::PeerId) {
    let me = host.peer_id().to_base58();
    let k = known(&r, &me);
    let candidate = peer.to_base58();
    let asked = k
        .voters
        .iter()
        .filter(|v| v.peer_id != me && v.peer_id != candidate);
    let confirmed = ask_voters(&host, &r, asked, |s| {
        report_vouches(&candidate, k.mine, config_pos(s), &s.members)
    })
    .await;
    if confirms_removal(confirmed, k.voters.len()) {
        tracing::info!(scope = %r.id, %peer, confirmed, "a member this replica had not heard of yet: accepting its messages");
        r.vouch(&peer);
        host.count("members", "vouched");
    }
}

/// Whether a strict majority of the members `r` knows (its configuration's voters, or the
/// members it was created with when it has none) report a newer configuration without
/// this anchor: `Some(how many said so)` if so.
pub async fn removal_confirmed<H: Host>(host: &H, r: &Replica) -> Option<usize> {
    let me = host.peer_id().to_base58();
    let mut k = known(r, &me);
    if k.voters.is_empty() {
        // No configuration yet (an empty replica of a change that was given up, never a
        // voter): the members it was created with, other than itself (one of them may be
        // an anchor that left since and answers nothing).
        k.voters = r
            .descriptor
            .members
            .iter()
            .filter(|m| m.peer_id != me)
            .cloned()
            .collect();
    }
    let asked = k.voters.iter().filter(|v| v.peer_id != me);
    let confirmed = ask_voters(host, r, asked, |s| {
        report_shows_removed(&me, k.mine, k.listed, config_pos(s), &s.members)
    })
    .await;
    confirms_removal(confirmed, k.voters.len()).then_some(confirmed)
}
