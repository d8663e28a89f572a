//! The mutate protocol: a signed mutation is verified, checked against the governing
//! scope's policy and state, and queued for the scope's proposer when this anchor leads it;
//! otherwise it is forwarded (once) to the leader.

use std::sync::Arc;
use std::time::Duration;

use proto::msg::{MutateRequest, MutateResponse};
use proto::WireError;
use resolver::net::{CallError, Protocol};
use resolver::AnchorAddr;

use super::Server;
use crate::raft::proposer::Proposal;
use crate::replica::Replica;
use crate::scope::decide;

/// How long a forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(6);

impl Server {
    pub(super) async fn handle_mutate(&self, bytes: &[u8]) -> MutateResponse {
        let req: MutateRequest = match self.decode(Protocol::Mutate, bytes) {
            Ok(r) => r,
            Err(e) => return MutateResponse::Error(e),
        };
        let resp = self.mutate(req).await;
        let outcome = match &resp {
            MutateResponse::Committed { .. } => "committed",
            MutateResponse::Error(e) => decide::refusal_label(e),
        };
        self.inner
            .metrics
            .mutations
            .with_label_values(&[outcome])
            .inc();
        resp
    }

    /// The replica that governs the names of `r` now: `r`, or, when `r` retired and its
    /// parent (hosted here) has taken it back in but `r` is not removed yet, that parent (so
    /// a write waits for the merge, not for the clean-up after it).
    fn past_merges(&self, mut r: Arc<Replica>) -> Arc<Replica> {
        for _ in 0..proto::limits::NAME_LABELS_MAX {
            match self.merged_parent(&r) {
                Some(parent) => r = parent,
                None => break,
            }
        }
        r
    }

    /// The parent hosted here that has taken the retired `r` back in, if any.
    fn merged_parent(&self, r: &Replica) -> Option<Arc<Replica>> {
        let into = r.state.with_view(|v| v.retired.map(|x| x.into)).flatten()?;
        let parent = self.inner.registry.get(&into)?;
        crate::delegation::merged_into(r, &parent).then_some(parent)
    }

    /// True when `r` retired and its parent, hosted here, has taken it back in.
    pub(super) fn merged_away(&self, r: &Replica) -> bool {
        self.merged_parent(r).is_some()
    }

    async fn mutate(&self, req: MutateRequest) -> MutateResponse {
        let m = match decide::verify(&req.mutation) {
            Ok(m) => m,
            Err(e) => return MutateResponse::Error(e),
        };
        let Some(replica) = self.inner.registry.governing(m.op.name()) else {
            return MutateResponse::Error(WireError::NoScope {
                name: m.op.name().clone(),
            });
        };
        let replica = self.past_merges(replica);
        // `scope tree`'s window counts a write where it arrived; the split accounting also
        // counts writes forwarded to this leader, so the leader's figures hold every write.
        replica.record_write(m.op.name(), self.inner.clock.unix_ms(), req.forwarded);
        // Names under an active delegation are the child's: say where it is, whoever leads.
        let delegated = replica
            .state
            .with_view(|v| {
                decide::delegation_over(&v.delegations, m.op.name())
                    .filter(|d| d.state.refers())
                    .map(|d| decide::refusal_for_delegated(d, m.op.name()))
            })
            .flatten();
        if let Some(e) = delegated {
            return MutateResponse::Error(e);
        }
        let leader = replica.metrics().borrow().current_leader;
        match leader {
            Some(l) if l == self.inner.registry.node_id() => {
                if replica.yielding(self.inner.clock.unix_ms()) {
                    return MutateResponse::Error(WireError::NotLeader {
                        scope: replica.id,
                        leader: None,
                    });
                }
                self.propose(&replica, &m, req).await
            }
            Some(_) => self.forward(&replica, req).await,
            None => MutateResponse::Error(WireError::Unavailable {
                reason: format!(
                    "scope {} has no leader right now; retry shortly",
                    replica.id
                ),
            }),
        }
    }

    async fn propose(
        &self,
        replica: &Replica,
        m: &proto::Mutation,
        req: MutateRequest,
    ) -> MutateResponse {
        // The leader's state may be behind what is committed (a new leader still applying,
        // or a deposed one that has not heard yet), so a refusal here must not report state:
        // a compare-and-set conflict is left for apply to decide in log order. (Found by the
        // chaos campaign, seed 22: a CAS answered `Conflict { current: 174 }` after the name
        // had been deleted at 184.) Refusals that report no state (bad signature, expiry,
        // policy, replay) are safe to return early: the mutation had no effect.
        match replica
            .state
            .decide(m, &req.mutation, self.inner.clock.unix_ms())
        {
            Ok(_) | Err(WireError::Conflict { .. }) => {}
            Err(e) => return MutateResponse::Error(e),
        }
        self.inner.verified.insert(&req.mutation);
        let (reply, rx) = tokio::sync::oneshot::channel();
        let proposal = Proposal {
            mutation: req.mutation.clone(),
            name: m.op.name().clone(),
            reply,
        };
        if !replica.queue_write(proposal).await {
            return MutateResponse::Error(WireError::Unavailable {
                reason: "too many writes queued for this scope; retry".into(),
            });
        }
        match rx.await {
            Ok(Ok(version)) => MutateResponse::Committed {
                scope: replica.id,
                version,
                leader: Some(self.inner.info.clone()),
            },
            Ok(Err(WireError::NotLeader { .. })) => self.forward(replica, req).await,
            Ok(Err(e)) => MutateResponse::Error(e),
            Err(_) => MutateResponse::Error(WireError::Unavailable {
                reason: "the scope is shutting down; the outcome is unknown".into(),
            }),
        }
    }

    async fn forward(&self, replica: &Replica, mut req: MutateRequest) -> MutateResponse {
        let leader = replica.leader_info();
        if req.forwarded {
            return MutateResponse::Error(WireError::NotLeader {
                scope: replica.id,
                leader,
            });
        }
        let Some(info) = leader else {
            return MutateResponse::Error(WireError::Unavailable {
                reason: format!("scope {} has no known leader; retry shortly", replica.id),
            });
        };
        let Ok(to) = AnchorAddr::from_info(&info) else {
            return MutateResponse::Error(WireError::NotLeader {
                scope: replica.id,
                leader: Some(info),
            });
        };
        req.forwarded = true;
        let answer = self
            .inner
            .net
            .call(&to, Protocol::Mutate, &req, FORWARD_TIMEOUT)
            .await;
        answer.unwrap_or_else(|e| {
            MutateResponse::Error(match e {
                CallError::Encode { reason } => WireError::Invalid {
                    reason: format!("cannot re-encode: {reason}"),
                },
                CallError::Timeout { .. } => WireError::Unavailable {
                    reason: "the leader did not answer in time; the outcome is unknown".into(),
                },
                CallError::Decode { reason, .. } => WireError::Unavailable {
                    reason: format!("leader answered badly: {reason}"),
                },
                e => WireError::Unavailable {
                    reason: format!("forwarding to the leader failed: {e}"),
                },
            })
        })
    }
}
