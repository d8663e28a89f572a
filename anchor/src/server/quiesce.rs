//! The member's side of quiescence: a scope leader's request that this replica sleep with
//! it (`RaftRpc::Quiesce`), checked by the pure [`crate::scope::quiesce::follower_verdict`],
//! and the anchor-level liveness ping (`RaftRpc::Ping`) that sleeping followers elsewhere
//! rely on to learn that this anchor is alive.

use libp2p::PeerId;
use proto::codec;
use proto::msg::{QuiesceAnswer, QuiesceRequest, RaftResponse};
use proto::WireError;
use resolver::net::Protocol;

use super::Server;
use crate::identity;
use crate::raft::quiesce::Role;
use crate::replica::Replica;
use crate::scope::quiesce::{follower_verdict, FollowerFacts, QuiesceMsg};

impl Server {
    /// A leader's quiesce request for `replica`, from `peer` (already checked to be a
    /// member): this replica sleeps only if term, leader and last log id match its own.
    pub(super) fn quiesce_member(
        &self,
        replica: &Replica,
        peer: PeerId,
        payload: &[u8],
    ) -> RaftResponse {
        let count = |outcome: &str| {
            self.inner
                .metrics
                .quiesce
                .with_label_values(&["member", outcome])
                .inc();
        };
        let req: QuiesceRequest = match self.decode(Protocol::Raft, payload) {
            Ok(r) => r,
            Err(e) => {
                count("malformed");
                return RaftResponse::Refused(e);
            }
        };
        // Read before the facts: anything that touches the group after this stops the sleep.
        let activity = replica.sleep.activity();
        let facts = {
            let metrics = replica.metrics();
            let m = metrics.borrow();
            let last_log = m
                .last_applied
                .filter(|a| Some(a.index) == m.last_log_index)
                .map(|a| (a.leader_id.term, a.index))
                .or(m.last_log_index.map(|i| (0, i)));
            FollowerFacts {
                term: m.current_term,
                leader: m.current_leader,
                leading: m.current_leader == Some(self.inner.registry.node_id()),
                last_log,
                applied: m.last_applied.map(|a| a.index),
            }
        };
        let msg = QuiesceMsg {
            term: req.term,
            leader: req.leader,
            last_log: req.last_log,
        };
        let answer = match follower_verdict(&facts, &msg, identity::node_id(&peer)) {
            Ok(()) if replica.sleep.kept_awake() => QuiesceAnswer::Mismatch("kept_awake".into()),
            Ok(()) => {
                let index = facts.last_log.map(|(_, i)| i);
                if replica.try_sleep(Role::Follower, activity, index) {
                    QuiesceAnswer::Asleep
                } else {
                    QuiesceAnswer::Mismatch("raced".into())
                }
            }
            Err(m) => QuiesceAnswer::Mismatch(m.label().into()),
        };
        match &answer {
            QuiesceAnswer::Asleep => count("asleep"),
            QuiesceAnswer::Mismatch(why) => {
                tracing::debug!(scope = %replica.id, %peer, why, "quiesce request declined");
                count(why);
            }
        }
        match codec::encode(&answer) {
            Ok(b) => RaftResponse::Ok(b),
            Err(e) => RaftResponse::Refused(WireError::Refused {
                reason: e.to_string(),
            }),
        }
    }

    /// Answers a liveness ping with this anchor's incarnation.
    pub(super) fn answer_ping(&self) -> RaftResponse {
        match codec::encode(&self.inner.incarnation) {
            Ok(b) => RaftResponse::Ok(b),
            Err(e) => RaftResponse::Refused(WireError::Refused {
                reason: e.to_string(),
            }),
        }
    }
}
