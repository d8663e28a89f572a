//! The resolve protocol: a name's record set, its absence, or a referral to the child scope
//! it was delegated to, signed with this anchor's identity key; at the linearizable level
//! after a read-index round.

use std::sync::Arc;

use proto::msg::{Answer, ResolveRequest, ResolveResponse, SignedAnswer};
use proto::{codec, Name, ReadLevel, ScopeId, WireError};
use resolver::net::Protocol;

use super::Server;
use crate::replica::Replica;
use crate::scope::decide;

impl Server {
    pub(super) async fn handle_resolve(&self, bytes: &[u8]) -> ResolveResponse {
        let req: ResolveRequest = match self.decode(Protocol::Resolve, bytes) {
            Ok(r) => r,
            Err(e) => return ResolveResponse::Error(e),
        };
        let resp = self.resolve(&req).await;
        let outcome = match &resp {
            ResolveResponse::Signed(_) => "answer",
            ResolveResponse::Error(e) => decide::refusal_label(e),
        };
        self.inner
            .metrics
            .resolves
            .with_label_values(&[&req.level.to_string(), outcome])
            .inc();
        resp
    }

    /// The replica of `scope` that may answer about `name`: hosted here, governing the name,
    /// and holding state (a replica that joined empty has none until its snapshot arrives).
    pub(super) fn serving(&self, scope: &ScopeId, name: &Name) -> Result<Arc<Replica>, WireError> {
        let Some(replica) = self.inner.registry.get(scope) else {
            return Err(WireError::NoScope { name: name.clone() });
        };
        if !name.is_under(&replica.descriptor.prefix) {
            return Err(WireError::Invalid {
                reason: format!(
                    "{name} is not under the prefix {} of scope {}",
                    replica.descriptor.prefix, replica.id
                ),
            });
        }
        // Under the prefix but outside the range of a scope born from a range split: the
        // asker's referral is stale (no referral leads here for that name); it walks again.
        if !replica.descriptor.covers(name) {
            return Err(WireError::NoScope { name: name.clone() });
        }
        if replica
            .state
            .with_view(|v| v.policy.is_none())
            .unwrap_or(true)
        {
            return Err(WireError::Unavailable {
                reason: format!(
                    "this replica of scope {} has not caught up yet; ask another member",
                    replica.id
                ),
            });
        }
        Ok(replica)
    }

    async fn resolve(&self, req: &ResolveRequest) -> ResolveResponse {
        let replica = match self.serving(&req.scope, &req.name) {
            Ok(r) => r,
            Err(e) => return ResolveResponse::Error(e),
        };
        if self.merged_away(&replica) {
            // Taken back in by its parent here, not removed yet: as good as gone.
            return ResolveResponse::Error(WireError::NoScope {
                name: req.name.clone(),
            });
        }
        replica.record_read(&req.name, self.inner.clock.unix_ms());
        if req.level == ReadLevel::Linearizable {
            if replica.yielding(self.inner.clock.unix_ms()) {
                return ResolveResponse::Error(WireError::NotLeader {
                    scope: replica.id,
                    leader: None,
                });
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            if !replica.queue_read(tx).await {
                return ResolveResponse::Error(WireError::Unavailable {
                    reason: "too many linearizable reads queued; retry".into(),
                });
            }
            match rx.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return ResolveResponse::Error(e),
                Err(_) => {
                    return ResolveResponse::Error(WireError::Unavailable {
                        reason: "the scope is shutting down".into(),
                    })
                }
            }
        }
        // The record and the delegations are read from one state: a name whose records an
        // entry has just handed to a child is answered with the referral, never not-found.
        // A scope that retired into its parent has a final state, but once the parent has
        // taken it back in the parent may have changed a name since: a linearizable read
        // waits (`Moving`) until this replica is gone and the walk reaches the parent.
        let linearizable = req.level == ReadLevel::Linearizable;
        let looked = replica.state.lookup(&req.name, |view, set| {
            if linearizable && view.retired.is_some() {
                return Err(None);
            }
            match decide::delegation_over(&view.delegations, &req.name).filter(|d| d.state.refers())
            {
                Some(d) => Err(Some(Box::new(d.referral.clone()))),
                None => Ok(set),
            }
        });
        let answer = match looked {
            Ok(Err(None)) => {
                return ResolveResponse::Error(WireError::Moving {
                    prefix: replica.descriptor.prefix.clone(),
                })
            }
            Ok(Err(Some(referral))) => Answer::Referral {
                scope: replica.id,
                name: req.name.clone(),
                referral: *referral,
            },
            Ok(Ok(Some(set))) => Answer::Found {
                scope: replica.id,
                name: req.name.clone(),
                set,
            },
            Ok(Ok(None)) => Answer::NotFound {
                scope: replica.id,
                name: req.name.clone(),
            },
            Err(crate::AnchorError::ScopeRemoved(_)) => {
                return ResolveResponse::Error(WireError::NoScope {
                    name: req.name.clone(),
                })
            }
            Err(e) => {
                return ResolveResponse::Error(WireError::Unavailable {
                    reason: e.to_string(),
                })
            }
        };
        self.sign_answer(&answer)
    }

    /// Signs an answer with this anchor's identity key.
    fn sign_answer(&self, answer: &Answer) -> ResolveResponse {
        match self.sign(answer) {
            Ok(signed) => ResolveResponse::Signed(signed),
            Err(e) => ResolveResponse::Error(e),
        }
    }

    /// An answer signed with this anchor's identity key.
    pub(super) fn sign(&self, answer: &Answer) -> Result<SignedAnswer, WireError> {
        let body = codec::encode(answer).map_err(|e| WireError::Unavailable {
            reason: format!("cannot encode the answer: {e}"),
        })?;
        let signature = self
            .inner
            .keypair
            .sign(&Answer::signing_bytes(&body))
            .map_err(|e| WireError::Unavailable {
                reason: format!("cannot sign the answer: {e}"),
            })?;
        Ok(SignedAnswer {
            body,
            public_key: self.inner.keypair.public().encode_protobuf(),
            signature,
        })
    }
}
