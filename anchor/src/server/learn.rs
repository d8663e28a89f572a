//! The holder's side of learning a range (`AdminRequest::LearnRange`): the leader of the
//! scope holding a delegation checks the signed answers a majority of the delegation's
//! members gave for a range their scope split off, and commits them as
//! `ScopeCommand::LearnRange`; every member checks them again at apply
//! (`crate::scope::learn`).

use std::time::Duration;

use proto::msg::{AdminResponse, LearnRange};
use proto::WireError;

use super::Server;
use crate::raft::ScopeCommand;
use crate::scope::learn::check_learned;

/// How long the leader waits for the entry to commit.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

impl Server {
    pub(super) async fn learn_range(&self, req: LearnRange) -> AdminResponse {
        let outcome = self.try_learn_range(req).await;
        let label = match &outcome {
            Ok(label) => label,
            Err((label, _)) => label,
        };
        self.inner
            .metrics
            .ranges_learned
            .with_label_values(&[*label])
            .inc();
        match outcome {
            Ok(_) => AdminResponse::Ok,
            Err((_, e)) => AdminResponse::Error(e),
        }
    }

    async fn try_learn_range(
        &self,
        req: LearnRange,
    ) -> Result<&'static str, (&'static str, WireError)> {
        let Some(replica) = self.inner.registry.get(&req.scope) else {
            let name = req.referral.prefix.clone();
            return Err(("no_scope", WireError::NoScope { name }));
        };
        if !replica.led_by(self.inner.registry.node_id()) {
            let e = WireError::NotLeader {
                scope: req.scope,
                leader: replica.leader_info(),
            };
            return Err(("not_leader", e));
        }
        // Checked before proposing, so that junk never reaches the log; checked again by
        // every member at apply, against its own state.
        let checked = replica
            .state
            .with_view(|v| check_learned(&v.delegations, &req.referral, &req.proofs, 0))
            .unwrap_or(Err(crate::scope::learn::LearnRefusal::NoDelegation(
                req.referral.prefix.clone(),
            )));
        let refused = |r: crate::scope::learn::LearnRefusal| {
            tracing::warn!(scope = %req.scope, range_scope = %req.referral.scope, refusal = %r, "range to learn refused");
            let reason = r.to_string();
            (r.label(), WireError::Refused { reason })
        };
        match checked {
            Ok(None) => return Ok("already"),
            Ok(Some(_)) => {}
            Err(r) => return Err(refused(r)),
        }
        let cmd = ScopeCommand::LearnRange {
            referral: req.referral.clone(),
            proofs: req.proofs,
        };
        let unavailable = |reason: String| ("error", WireError::Unavailable { reason });
        let written = tokio::time::timeout(COMMIT_TIMEOUT, replica.client_write(cmd))
            .await
            .map_err(|_| unavailable("not committed in time".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        match written.data.results.into_iter().next() {
            Some(Ok(_)) => Ok("learned"),
            Some(Err(e)) => Err(("refused", e)),
            None => Err(unavailable("no outcome".into())),
        }
    }
}
