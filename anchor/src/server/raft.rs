//! The Raft protocol's inbound side: a scope group's RPC from a member (append, vote,
//! snapshot) handed to the group, or several groups' RPCs coalesced into one message by the
//! sender's network adapter, each handled as if it had come alone; and a member's load
//! report, added to this replica's split accounting. Any append, vote or snapshot wakes a
//! sleeping group; quiesce requests and liveness pings are answered in `quiesce.rs`.

use libp2p::PeerId;
use proto::limits::RAFT_FRAME_BYTES_MAX;
use proto::msg::{RaftRequest, RaftResponse, RaftRpc};
use proto::{codec, WireError};
use resolver::net::Protocol;

use openraft::raft::AppendEntriesRequest;

use super::Server;
use crate::delegation::Host;
use crate::raft::quiesce::Cause;
use crate::raft::TypeConfig;

/// How often a replica may ask its voters about a peer it refused (see `vouch_for`).
const VOUCH_EVERY_MS: u64 = 1_000;

impl Server {
    pub(super) async fn handle_raft(&self, peer: PeerId, bytes: &[u8]) -> RaftResponse {
        let req: RaftRequest = match self.decode(Protocol::Raft, bytes) {
            Ok(r) => r,
            Err(e) => return RaftResponse::Refused(e),
        };
        if req.rpc == RaftRpc::Coalesced {
            return self.handle_raft_coalesced(peer, &req.payload).await;
        }
        if req.rpc == RaftRpc::Ping {
            return self.answer_ping();
        }
        self.handle_raft_one(peer, req).await
    }

    /// Coalesced RPCs (heartbeats of many scopes): each is checked and handled as if it had
    /// come alone, concurrently, and the answers go back in order.
    async fn handle_raft_coalesced(&self, peer: PeerId, payload: &[u8]) -> RaftResponse {
        let requests: Vec<RaftRequest> = match self.decode(Protocol::Raft, payload) {
            Ok(r) => r,
            Err(e) => return RaftResponse::Refused(e),
        };
        let nested = requests.iter().any(|r| r.rpc == RaftRpc::Coalesced);
        if requests.len() > proto::limits::RAFT_COALESCED_RPCS_MAX || nested {
            self.refuse(Protocol::Raft, "malformed");
            return RaftResponse::Refused(WireError::Invalid {
                reason: format!(
                    "a batch carries at most {} RPCs, none of them a batch",
                    proto::limits::RAFT_COALESCED_RPCS_MAX
                ),
            });
        }
        let answers =
            futures::future::join_all(requests.into_iter().map(|r| self.handle_raft_one(peer, r)))
                .await;
        match codec::encode(&answers) {
            Ok(b) if b.len() <= RAFT_FRAME_BYTES_MAX => RaftResponse::Ok(b),
            Ok(b) => RaftResponse::Refused(WireError::Refused {
                reason: format!("batch response of {} bytes is too large", b.len()),
            }),
            Err(e) => RaftResponse::Refused(WireError::Refused {
                reason: e.to_string(),
            }),
        }
    }

    async fn handle_raft_one(&self, peer: PeerId, req: RaftRequest) -> RaftResponse {
        let Some(replica) = self.inner.registry.get(&req.scope) else {
            self.refuse(Protocol::Raft, "unknown_scope");
            return RaftResponse::Refused(WireError::Refused {
                reason: format!("scope {} is not hosted here", req.scope),
            });
        };
        if !replica.is_member(&peer) {
            // A member added while this replica was cut off is refused until a majority of
            // the voters it knows vouch for it; ask them (at most once a second).
            if replica.start_vouching(self.now_ms(), VOUCH_EVERY_MS) {
                tokio::spawn(crate::delegation::vouch_for(
                    self.clone(),
                    replica.clone(),
                    peer,
                ));
            }
            self.refuse(Protocol::Raft, "non_member");
            tracing::warn!(%peer, scope = %req.scope, "raft message from a non-member refused");
            return RaftResponse::Refused(WireError::Refused {
                reason: format!("{peer} is not a member of scope {}", req.scope),
            });
        }
        let payload = &req.payload;
        match req.rpc {
            RaftRpc::LoadReport => return self.absorb_report(&replica, payload),
            RaftRpc::Quiesce => return self.quiesce_member(&replica, peer, payload),
            RaftRpc::Ping => return self.answer_ping(),
            _ => {}
        }
        let raft = match replica.group().await {
            Ok(raft) => raft,
            Err(e) => {
                return RaftResponse::Refused(WireError::Unavailable {
                    reason: e.to_string(),
                })
            }
        };
        let raft = &raft;
        let mut heartbeat = false;
        let out = match req.rpc {
            RaftRpc::Append => {
                match self.decode::<AppendEntriesRequest<TypeConfig>>(Protocol::Raft, payload) {
                    Ok(r) => {
                        heartbeat = r.entries.is_empty();
                        codec::encode(&raft.append_entries(r).await)
                    }
                    Err(e) => return RaftResponse::Refused(e),
                }
            }
            RaftRpc::Vote => match self.decode(Protocol::Raft, payload) {
                Ok(r) => codec::encode(&raft.vote(r).await),
                Err(e) => return RaftResponse::Refused(e),
            },
            RaftRpc::Snapshot => match self.decode(Protocol::Raft, payload) {
                Ok(r) => codec::encode(&raft.install_snapshot(r).await),
                Err(e) => return RaftResponse::Refused(e),
            },
            // (Load reports, quiesce requests and pings were answered above.)
            RaftRpc::Coalesced | RaftRpc::LoadReport | RaftRpc::Quiesce | RaftRpc::Ping => {
                self.refuse(Protocol::Raft, "malformed");
                return RaftResponse::Refused(WireError::Invalid {
                    reason: "a batch may not be nested".into(),
                });
            }
        };
        // After the group handled it (so a follower's leader lease is fresh): a sleeping
        // group wakes on entries, a vote, a snapshot, or a heartbeat of another term.
        match req.rpc {
            RaftRpc::Vote => replica.sleep.wake(raft, Cause::Vote),
            RaftRpc::Snapshot => replica.sleep.wake(raft, Cause::Snapshot),
            _ => replica.sleep.on_append(raft, heartbeat),
        };
        match out {
            Ok(b) if b.len() <= RAFT_FRAME_BYTES_MAX => RaftResponse::Ok(b),
            Ok(b) => RaftResponse::Refused(WireError::Refused {
                reason: format!("response of {} bytes is too large", b.len()),
            }),
            Err(e) => RaftResponse::Refused(WireError::Refused {
                reason: e.to_string(),
            }),
        }
    }

    /// A member's per-second read counts (`RaftRpc::LoadReport`), checked and added to this
    /// replica's split accounting (meaningful on the leader, which decides splits).
    fn absorb_report(&self, replica: &crate::replica::Replica, payload: &[u8]) -> RaftResponse {
        let report: proto::load::FollowerReport = match self.decode(Protocol::Raft, payload) {
            Ok(r) => r,
            Err(e) => return RaftResponse::Refused(e),
        };
        if let Err(e) = report.validate() {
            self.refuse(Protocol::Raft, "malformed");
            return RaftResponse::Refused(WireError::Invalid {
                reason: e.to_string(),
            });
        }
        let late = replica.load.absorb(&report, self.inner.clock.unix_ms());
        let outcome = if late > 0 { "late" } else { "ok" };
        self.inner
            .metrics
            .load_reports
            .with_label_values(&[outcome])
            .inc();
        RaftResponse::Ok(Vec::new())
    }
}
