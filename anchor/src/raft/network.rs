//! openraft's network, over the anchor's libp2p swarm: every RPC is a
//! [`proto::msg::RaftRequest`] tagged with the scope id, sent on `/anchorage/raft/1`.
//!
//! `new_client` returns a handle holding only (scope, target peer, addresses): it never dials.
//! libp2p keeps one connection per peer, shared by every scope.

use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use proto::limits::RAFT_FRAME_BYTES_MAX;
use proto::msg::{RaftRequest, RaftResponse, RaftRpc};
use proto::{codec, AnchorInfo, ScopeId};
use resolver::net::{NetHandle, Protocol};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{NodeId, TypeConfig};

/// Creates per-target clients for one scope.
#[derive(Clone)]
pub struct NetworkFactory {
    /// The scope whose RPCs these clients carry.
    pub scope: ScopeId,
    /// The anchor's swarm.
    pub net: NetHandle,
}

/// A cheap handle for RPCs of one scope to one target.
pub struct ScopeClient {
    scope: ScopeId,
    target: NodeId,
    peer: Option<PeerId>,
    addrs: Vec<Multiaddr>,
    net: NetHandle,
}

/// Parses an anchor's peer id and addresses; bad ones are skipped (and the RPC then fails
/// as unreachable).
pub fn parse_anchor(node: &AnchorInfo) -> (Option<PeerId>, Vec<Multiaddr>) {
    let peer = node.peer_id.parse().ok();
    let addrs = node.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    (peer, addrs)
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = ScopeClient;

    async fn new_client(&mut self, target: NodeId, node: &AnchorInfo) -> ScopeClient {
        let (peer, addrs) = parse_anchor(node);
        ScopeClient {
            scope: self.scope,
            target,
            peer,
            addrs,
            net: self.net.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct RpcFailure(String);

impl ScopeClient {
    async fn call<Req, Resp, E>(
        &self,
        rpc: RaftRpc,
        req: &Req,
        ttl: Duration,
    ) -> Result<Resp, RPCError<NodeId, AnchorInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable = |m: String| RPCError::Unreachable(Unreachable::new(&RpcFailure(m)));
        let Some(peer) = self.peer else {
            return Err(unreachable(format!(
                "node {} has no valid peer id",
                self.target
            )));
        };
        let payload = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let frame = codec::encode(&RaftRequest {
            scope: self.scope,
            rpc,
            payload,
        })
        .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let fut = self
            .net
            .request(peer, self.addrs.clone(), Protocol::Raft, frame);
        let bytes = match tokio::time::timeout(ttl, fut).await {
            Err(_) => return Err(unreachable(format!("no answer from {peer} within {ttl:?}"))),
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Ok(Ok(b)) => b,
        };
        let resp: RaftResponse = codec::decode(&bytes, RAFT_FRAME_BYTES_MAX)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        match resp {
            RaftResponse::Ok(inner) => {
                let result: Result<Resp, RaftError<NodeId, E>> =
                    codec::decode(&inner, RAFT_FRAME_BYTES_MAX)
                        .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
                result.map_err(|e| {
                    RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e))
                })
            }
            RaftResponse::Refused(e) => Err(unreachable(format!("{peer} refused: {e}"))),
        }
    }
}

impl RaftNetwork<TypeConfig> for ScopeClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, AnchorInfo, RaftError<NodeId>>>
    {
        self.call(RaftRpc::Append, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, AnchorInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RaftRpc::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, AnchorInfo, RaftError<NodeId>>> {
        self.call(RaftRpc::Vote, &rpc, option.hard_ttl()).await
    }
}
