//! The admin calls of a member change: hosting a replica of a scope this anchor joins
//! (`JoinScope`), the hint that it left one (`LeaveScope`), signing its word on a scope's
//! members (`SignMembers`), and, on a parent's leader, committing a child's new members
//! (`ChildMembers`). Every refusal is counted (`anchorage_refused_total{protocol="admin"}`).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use libp2p::PeerId;
use proto::msg::{AdminResponse, Answer, ChildMembers};
use proto::{ScopeDescriptor, ScopeId, WireError};
use resolver::net::Protocol;

use super::Server;
use crate::raft::ScopeCommand;
use crate::scope::members::check_child_members;

/// How long the parent's leader waits for `ChildMembers` to commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

impl Server {
    /// Refuses with `reason`, counted under `label`.
    fn refuse_admin(&self, label: &str, reason: String) -> AdminResponse {
        tracing::info!(%reason, "member change call refused");
        self.refuse(Protocol::Admin, label);
        AdminResponse::Error(WireError::Refused { reason })
    }

    /// `JoinScope`: hosts an empty replica of a scope this anchor joins. Only a member of the
    /// scope may ask, this anchor must be listed, and its labels must meet the placement.
    pub(super) async fn join_scope(
        &self,
        peer: PeerId,
        descriptor: ScopeDescriptor,
        labels_required: BTreeMap<String, String>,
    ) -> AdminResponse {
        let me = self.inner.peer_id.to_base58();
        let listed = |p: &str| descriptor.members.iter().any(|m| m.peer_id == p);
        if descriptor.members.len() > 2 * proto::limits::SCOPE_MEMBERS_MAX {
            return self.refuse_admin("join_too_many", "too many members".into());
        }
        if !listed(&me) {
            return self.refuse_admin(
                "join_not_listed",
                format!("this anchor ({me}) is not among the scope's members"),
            );
        }
        if peer != self.inner.peer_id && !listed(&peer.to_base58()) {
            return self.refuse_admin(
                "join_not_member",
                format!("{peer} is not a member of scope {}", descriptor.id),
            );
        }
        for (label, value) in &labels_required {
            if self.inner.labels.get(label) != Some(value) {
                return self.refuse_admin(
                    "join_placement",
                    format!("this anchor lacks the label {label}={value} the scope's placement requires"),
                );
            }
        }
        if let Some(old) = self.inner.registry.get(&descriptor.id) {
            match stale(&old, &me, &descriptor, &peer.to_base58()) {
                Stale::No => {
                    // Joined already (a retried call): the leader adds it as a learner next.
                    return AdminResponse::Ok;
                }
                Stale::IfRemoved => {
                    // A voter of an earlier membership that may never have learned it was
                    // removed: drop it only on a majority's word, as a removal check would.
                    // Boxed: the check calls other anchors through the same handler (or
                    // this one, in place), so its future would contain itself.
                    let check: BoxFuture<'_, Option<usize>> =
                        Box::pin(crate::delegation::removal_confirmed(self, &old));
                    if check.await.is_none() {
                        return AdminResponse::Error(WireError::Unavailable {
                            reason: "this anchor still holds a voting replica of the scope that \
                                     its members have not confirmed removed; retry"
                                .into(),
                        });
                    }
                }
                Stale::Yes => {}
            }
            // The leader does not count this anchor among the scope's members at all (it
            // asks only those), so the old state is of no use: start empty, accepting the
            // members this leader lists.
            tracing::info!(scope = %descriptor.id, "joining a scope again: dropping the replica left from an earlier membership");
            if let Err(e) = self.inner.registry.remove(&descriptor.id).await {
                return AdminResponse::Error(WireError::Unavailable {
                    reason: e.to_string(),
                });
            }
        }
        match self.inner.registry.host_empty(&descriptor).await {
            Ok(_) => {
                tracing::info!(scope = %descriptor.id, prefix = %descriptor.prefix, from = %peer, "joined a scope: empty replica hosted");
                AdminResponse::Ok
            }
            Err(e) => AdminResponse::Error(WireError::Unavailable {
                reason: e.to_string(),
            }),
        }
    }

    /// `LeaveScope`: a member's hint that this anchor left a scope; the replica asks the
    /// members it knows before it drops anything.
    pub(super) fn leave_scope(&self, peer: PeerId, scope: ScopeId) -> AdminResponse {
        let Some(r) = self.inner.registry.get(&scope) else {
            return AdminResponse::Ok;
        };
        if peer != self.inner.peer_id && !r.is_member(&peer) && !listed(&r.descriptor, &peer) {
            return self.refuse_admin(
                "leave_not_member",
                format!("{peer} is not a member of scope {scope}"),
            );
        }
        tokio::spawn(crate::delegation::check_removed(self.clone(), r));
        AdminResponse::Ok
    }

    /// `SignMembers`: this anchor's signed word on a scope's members, as its replica has them.
    pub(super) fn sign_members(&self, peer: PeerId, scope: ScopeId) -> AdminResponse {
        let Some(r) = self.inner.registry.get(&scope) else {
            return AdminResponse::Error(WireError::NoScope {
                name: proto::Name::root(),
            });
        };
        if peer != self.inner.peer_id && !r.is_member(&peer) {
            return self.refuse_admin(
                "sign_not_member",
                format!("{peer} is not a member of scope {scope}"),
            );
        }
        let Some(d) = r.state.with_view(|v| v.descriptor.clone()).flatten() else {
            return AdminResponse::Error(WireError::Unavailable {
                reason: "the scope has no descriptor yet".into(),
            });
        };
        let answer = Answer::Members {
            scope,
            name: d.range.start.clone().unwrap_or_else(|| d.prefix.clone()),
            epoch: d.epoch,
            members: d.members,
        };
        match self.sign(&answer) {
            Ok(signed) => AdminResponse::Signed(signed),
            Err(e) => AdminResponse::Error(e),
        }
    }

    /// `ChildMembers`, on the parent's leader: checks the proofs, then commits them.
    pub(super) async fn child_members(&self, req: ChildMembers) -> AdminResponse {
        let Some(replica) = self.inner.registry.get(&req.scope) else {
            return AdminResponse::Error(WireError::NoScope {
                name: proto::Name::root(),
            });
        };
        if !replica.led_by(self.inner.registry.node_id()) {
            return AdminResponse::Error(WireError::NotLeader {
                scope: req.scope,
                leader: replica.leader_info(),
            });
        }
        let checked = replica.state.with_view(|v| {
            let d = v
                .delegations
                .values()
                .find(|d| d.referral.scope == req.child);
            check_child_members(d, req.child, &req.proofs).map(|u| u.is_some())
        });
        match checked {
            Some(Ok(true)) => {}
            Some(Ok(false)) => return AdminResponse::Ok,
            Some(Err(r)) => return self.refuse_admin(r.label(), r.to_string()),
            None => return self.refuse_admin("no_state", "the scope's state is gone".into()),
        }
        let cmd = ScopeCommand::ChildMembers {
            child: req.child,
            proofs: req.proofs,
        };
        let unavailable = |reason: String| AdminResponse::Error(WireError::Unavailable { reason });
        match tokio::time::timeout(COMMIT_TIMEOUT, replica.client_write(cmd)).await {
            Err(_) => unavailable("not committed in time".into()),
            Ok(Err(e)) => unavailable(e.to_string()),
            Ok(Ok(w)) => match w.data.results.into_iter().next() {
                Some(Ok(_)) => AdminResponse::Ok,
                Some(Err(e)) => AdminResponse::Error(e),
                None => unavailable("no outcome".into()),
            },
        }
    }
}

impl Server {
    /// `Campaign`: the scope's leader hands its leadership to this anchor; elections start
    /// once the other members' leases ran out. Bounded: at most a few seconds of elections.
    pub(super) fn campaign(
        &self,
        peer: PeerId,
        scope: ScopeId,
        after_ms: u64,
        within_ms: u64,
    ) -> AdminResponse {
        let Some(r) = self.inner.registry.get(&scope) else {
            return AdminResponse::Error(WireError::NoScope {
                name: proto::Name::root(),
            });
        };
        let sender = crate::identity::node_id(&peer);
        if !r.led_by(sender) {
            return self.refuse_admin(
                "campaign_not_leader",
                format!("{peer} does not lead scope {scope} here"),
            );
        }
        let lease_max = 4 * r.raft_config().election_timeout_max;
        let (after_ms, within_ms) = (after_ms.min(lease_max), within_ms.min(4 * lease_max));
        let me = self.inner.registry.node_id();
        tokio::spawn(crate::delegation::campaign(
            r,
            me,
            Duration::from_millis(after_ms),
            Duration::from_millis(within_ms),
        ));
        AdminResponse::Ok
    }
}

fn listed(d: &ScopeDescriptor, peer: &PeerId) -> bool {
    let peer = peer.to_base58();
    d.members.iter().any(|m| m.peer_id == peer)
}

/// A boxed future (a call that may come back to this handler).
type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whether the replica an anchor hosts of a scope a member asks it to join is of use.
#[derive(Debug, PartialEq, Eq)]
enum Stale {
    /// It is the replica of this change (a retried call).
    No,
    /// It is of no use and was never counted by a leader, or no longer is: replace it.
    Yes,
    /// It voted in an earlier configuration: replace it once a majority of that
    /// configuration's voters confirm it was removed.
    IfRemoved,
}

/// Whether `r`, the replica this anchor (`me`) hosts of the scope a member asks it to join
/// as `requested`, is of use to that change:
/// - with no Raft configuration (it never acknowledged an entry or held a snapshot, so no
///   leader ever counted it): of use only if made for `requested` (same epoch and members;
///   one made for another membership, by a parent re-seeding the members it still lists,
///   would refuse the new members' messages);
/// - with a configuration that does not list this anchor: it left since, and cannot vote;
/// - with one that lists it and the asking `leader`: of use (it catches up from the leader);
/// - with one that lists it but not `leader`: to be replaced only on a majority's word that
///   it was removed (it would refuse the leader's messages).
fn stale(
    r: &crate::replica::Replica,
    me: &str,
    requested: &ScopeDescriptor,
    leader: &str,
) -> Stale {
    let m = r.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    if membership.nodes().next().is_none() {
        let peers = |d: &ScopeDescriptor| {
            d.members
                .iter()
                .map(|m| m.peer_id.clone())
                .collect::<std::collections::BTreeSet<_>>()
        };
        let same =
            r.descriptor.epoch == requested.epoch && peers(&r.descriptor) == peers(requested);
        return if same { Stale::No } else { Stale::Yes };
    }
    if !membership.nodes().any(|(_, n)| n.peer_id == me) {
        return Stale::Yes;
    }
    if membership.nodes().any(|(_, n)| n.peer_id == leader) {
        // It takes the asking leader's messages: once added, it catches up from it (the
        // leader overwrites whatever its log holds that the leader's does not).
        return Stale::No;
    }
    // The leader asking does not list this anchor (it asks only those), yet this replica's
    // configuration does, and not the leader: a voter of an earlier membership that never
    // learned it was removed (it would refuse the leader), or this leader is the stale one.
    Stale::IfRemoved
}
