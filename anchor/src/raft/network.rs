//! openraft's network, over the anchor's libp2p swarm: every RPC is a
//! [`proto::msg::RaftRequest`] tagged with the scope id, sent on `/anchorage/raft/1`.
//!
//! `new_client` returns a handle holding only (scope, target peer, addresses): it never dials.
//! libp2p keeps one connection per peer, shared by every scope.
//!
//! Heartbeats (AppendEntries without entries) of every scope to one anchor are coalesced by
//! a [`Coalescer`]: the first waits up to `raft.coalesce_ms` for others, and they travel as
//! one [`RaftRpc::Batch`]. An anchor with a thousand idle scopes then sends a few messages
//! per tick to each peer instead of a thousand. Entries, votes and snapshots go alone, at
//! once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use proto::limits::{RAFT_BATCH_BYTES_MAX, RAFT_BATCH_RPCS_MAX, RAFT_FRAME_BYTES_MAX};
use proto::msg::{RaftRequest, RaftResponse, RaftRpc};
use proto::{codec, AnchorInfo, ScopeId};
use resolver::net::{NetHandle, Protocol};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use super::{NodeId, TypeConfig};

/// Creates per-target clients for one scope.
#[derive(Clone)]
pub struct NetworkFactory {
    /// The scope whose RPCs these clients carry.
    pub scope: ScopeId,
    /// The anchor's swarm.
    pub net: NetHandle,
    /// The anchor's heartbeat coalescer, shared by every scope.
    pub coalescer: Arc<Coalescer>,
}

/// A cheap handle for RPCs of one scope to one target.
pub struct ScopeClient {
    scope: ScopeId,
    target: NodeId,
    peer: Option<PeerId>,
    addrs: Vec<Multiaddr>,
    net: NetHandle,
    coalescer: Arc<Coalescer>,
}

/// Heartbeats waiting per peer before new ones fail fast.
const COALESCE_QUEUE_MAX: usize = 8192;

/// One RPC waiting to share a batch.
struct Pending {
    frame: RaftRequest,
    bytes: usize,
    addrs: Vec<Multiaddr>,
    ttl: Duration,
    reply: oneshot::Sender<Result<RaftResponse, String>>,
}

/// Coalesces small Raft RPCs to the same anchor into [`RaftRpc::Batch`] frames: one queue and
/// one task per peer. While RPCs to a peer arrive less than `linger` apart, a batch leaves
/// `linger` after its first RPC, or when full; otherwise an RPC leaves at once with whatever
/// is already queued.
pub struct Coalescer {
    net: NetHandle,
    linger: Duration,
    peers: Mutex<HashMap<PeerId, mpsc::Sender<Pending>>>,
}

impl Coalescer {
    /// A coalescer over `net`; `linger` zero sends every RPC alone.
    pub fn new(net: NetHandle, linger: Duration) -> Arc<Coalescer> {
        Arc::new(Coalescer {
            net,
            linger,
            peers: Mutex::new(HashMap::new()),
        })
    }

    fn enabled(&self) -> bool {
        !self.linger.is_zero()
    }

    /// Queues `frame` for `peer` and waits (at most `ttl`) for its own answer.
    async fn send(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        frame: RaftRequest,
        ttl: Duration,
    ) -> Result<RaftResponse, String> {
        let tx = {
            let mut peers = self
                .peers
                .lock()
                .map_err(|_| "coalescer unavailable".to_string())?;
            let tx = peers.entry(peer).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(COALESCE_QUEUE_MAX);
                tokio::spawn(peer_loop(self.net.clone(), peer, rx, self.linger));
                tx
            });
            if tx.is_closed() {
                let (ntx, rx) = mpsc::channel(COALESCE_QUEUE_MAX);
                tokio::spawn(peer_loop(self.net.clone(), peer, rx, self.linger));
                *tx = ntx;
            }
            tx.clone()
        };
        let (reply, rx) = oneshot::channel();
        let bytes = frame.payload.len() + 64;
        tx.try_send(Pending {
            frame,
            bytes,
            addrs,
            ttl,
            reply,
        })
        .map_err(|_| format!("too many heartbeats queued for {peer}"))?;
        match tokio::time::timeout(ttl, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(format!("the batch to {peer} was dropped")),
            Err(_) => Err(format!("no answer from {peer} within {ttl:?}")),
        }
    }
}

/// Gathers one peer's queued RPCs into batches and sends each batch on its own task.
async fn peer_loop(
    net: NetHandle,
    peer: PeerId,
    mut rx: mpsc::Receiver<Pending>,
    linger: Duration,
) {
    // Waiting only pays when RPCs to this peer are dense (many scopes ticking): a lone
    // heartbeat or read-index probe of a quiet anchor goes at once.
    let mut last_arrival: Option<tokio::time::Instant> = None;
    while let Some(first) = rx.recv().await {
        let now = tokio::time::Instant::now();
        let dense = last_arrival.is_some_and(|t| now.duration_since(t) < linger);
        last_arrival = Some(now);
        let deadline = if dense { now + linger } else { now };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < RAFT_BATCH_RPCS_MAX && bytes < RAFT_BATCH_BYTES_MAX {
            let next = if dense {
                tokio::time::timeout_at(deadline, rx.recv())
                    .await
                    .ok()
                    .flatten()
            } else {
                rx.try_recv().ok()
            };
            let Some(p) = next else { break };
            last_arrival = Some(tokio::time::Instant::now());
            bytes += p.bytes;
            batch.push(p);
        }
        tokio::spawn(send_batch(net.clone(), peer, batch));
    }
}

async fn send_batch(net: NetHandle, peer: PeerId, mut batch: Vec<Pending>) {
    let ttl = batch.iter().map(|p| p.ttl).min().unwrap_or_default();
    let addrs = batch.first().map(|p| p.addrs.clone()).unwrap_or_default();
    if batch.len() == 1 {
        if let Some(p) = batch.pop() {
            let out = exchange(&net, peer, addrs, &p.frame, ttl).await;
            let _ = p.reply.send(out);
        }
        return;
    }
    let frames: Vec<&RaftRequest> = batch.iter().map(|p| &p.frame).collect();
    let outer = codec::encode(&frames).and_then(|payload| {
        codec::encode(&RaftRequest {
            scope: ScopeId::default(),
            rpc: RaftRpc::Batch,
            payload,
        })
    });
    let result = match outer {
        Err(e) => Err(e.to_string()),
        Ok(frame) => match request(&net, peer, addrs, frame, ttl).await {
            Ok(RaftResponse::Ok(inner)) => {
                codec::decode::<Vec<RaftResponse>>(&inner, RAFT_FRAME_BYTES_MAX)
                    .map_err(|e| e.to_string())
                    .and_then(|rs| {
                        if rs.len() == batch.len() {
                            Ok(rs)
                        } else {
                            Err(format!(
                                "{peer} answered {} of {} coalesced RPCs",
                                rs.len(),
                                batch.len()
                            ))
                        }
                    })
            }
            Ok(RaftResponse::Refused(e)) => Err(format!("{peer} refused the batch: {e}")),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(responses) => {
            for (p, r) in batch.into_iter().zip(responses) {
                let _ = p.reply.send(Ok(r));
            }
        }
        Err(e) => {
            for p in batch {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}

/// One Raft frame to `peer` and its decoded answer.
async fn exchange(
    net: &NetHandle,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    frame: &RaftRequest,
    ttl: Duration,
) -> Result<RaftResponse, String> {
    let bytes = codec::encode(frame).map_err(|e| e.to_string())?;
    request(net, peer, addrs, bytes, ttl).await
}

async fn request(
    net: &NetHandle,
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    frame: Vec<u8>,
    ttl: Duration,
) -> Result<RaftResponse, String> {
    let fut = net.request(peer, addrs, Protocol::Raft, frame);
    let bytes = match tokio::time::timeout(ttl, fut).await {
        Err(_) => return Err(format!("no answer from {peer} within {ttl:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(b)) => b,
    };
    codec::decode(&bytes, RAFT_FRAME_BYTES_MAX).map_err(|e| e.to_string())
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
            coalescer: self.coalescer.clone(),
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
        coalesce: bool,
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
        let frame = RaftRequest {
            scope: self.scope,
            rpc,
            payload,
        };
        let resp = if coalesce && self.coalescer.enabled() {
            self.coalescer
                .send(peer, self.addrs.clone(), frame, ttl)
                .await
        } else {
            exchange(&self.net, peer, self.addrs.clone(), &frame, ttl).await
        };
        match resp.map_err(unreachable)? {
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
        let heartbeat = rpc.entries.is_empty();
        self.call(RaftRpc::Append, &rpc, option.hard_ttl(), heartbeat)
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, AnchorInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(RaftRpc::Snapshot, &rpc, option.hard_ttl(), false)
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, AnchorInfo, RaftError<NodeId>>> {
        self.call(RaftRpc::Vote, &rpc, option.hard_ttl(), false)
            .await
    }
}
