//! openraft's network, over the anchor's libp2p swarm: every RPC is a
//! [`proto::msg::RaftRequest`] tagged with the scope id, sent on `/anchorage/raft/1`.
//!
//! `new_client` returns a handle holding only (scope, target peer, addresses): it never dials.
//! libp2p keeps one connection per peer, shared by every scope.
//!
//! Heartbeats (AppendEntries without entries) of every scope to one anchor are coalesced by
//! a [`Coalescer`]: the first waits up to `raft.coalesce_ms` for others, and they travel as
//! one [`RaftRpc::Coalesced`]. An anchor with a thousand idle scopes then sends a few messages
//! per tick to each peer instead of a thousand. Entries, votes and snapshots go alone, at
//! once, and so do the heartbeats of a scope while a client waits on it ([`Urgency`]): a
//! linearizable read's read-index round is a heartbeat round, and back-to-back rounds of a
//! busy scope looked "dense" to the coalescer, so each waited out its window.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use proto::limits::{RAFT_BATCH_BYTES_MAX, RAFT_COALESCED_RPCS_MAX, RAFT_FRAME_BYTES_MAX};
use proto::msg::{RaftRequest, RaftResponse, RaftRpc};
use proto::{codec, AnchorInfo, ScopeId, WireError};
use resolver::net::{encode_request, CallError, NetHandle, Protocol};
use resolver::AnchorAddr;
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
    /// Whether a client waits on this scope now (its heartbeats then skip the coalescer).
    pub urgency: Arc<Urgency>,
}

/// How many client requests (writes being committed, read-index rounds) of one scope are
/// in flight. While any is, the scope's heartbeats go at once instead of through the
/// [`Coalescer`]: a read waits on a heartbeat round, and a write's followers learn the
/// commit index from the next one.
#[derive(Debug, Default)]
pub struct Urgency(AtomicUsize);

impl Urgency {
    /// Marks a client request in flight until the guard drops.
    pub fn hold(&self) -> UrgentGuard<'_> {
        self.0.fetch_add(1, Ordering::AcqRel);
        UrgentGuard(self)
    }

    /// True while a client request is in flight.
    pub fn pressing(&self) -> bool {
        self.0.load(Ordering::Acquire) > 0
    }
}

/// One client request in flight ([`Urgency::hold`]).
pub struct UrgentGuard<'a>(&'a Urgency);

impl Drop for UrgentGuard<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A cheap handle for RPCs of one scope to one target.
pub struct ScopeClient {
    scope: ScopeId,
    target: NodeId,
    /// `None` when the target's peer id does not parse (every RPC then fails as unreachable).
    to: Option<AnchorAddr>,
    net: NetHandle,
    coalescer: Arc<Coalescer>,
    urgency: Arc<Urgency>,
}

/// Why a Raft RPC brought no answer. openraft sees every one of these as the target being
/// unreachable, and retries.
#[derive(Clone, Debug, thiserror::Error)]
enum RpcFailure {
    /// The target's peer id does not parse.
    #[error("node {target} has no valid peer id")]
    NoPeerId { target: NodeId },
    /// The exchange itself failed.
    #[error("{peer}: {source}")]
    Call { peer: PeerId, source: CallError },
    /// The target refused the frame (unknown scope, sender not a member, bad frame).
    #[error("{peer} refused: {error}")]
    Refused { peer: PeerId, error: WireError },
    /// The target refused a coalesced batch.
    #[error("{peer} refused the batch: {error}")]
    BatchRefused { peer: PeerId, error: WireError },
    /// The batch answer does not decode, or does not answer every RPC in it.
    #[error("{peer} answered the batch badly: {reason}")]
    BadBatchAnswer { peer: PeerId, reason: String },
    /// A batch of RPCs did not encode.
    #[error("the batch to {peer} cannot be encoded: {reason}")]
    BatchEncode { peer: PeerId, reason: String },
    /// Too many RPCs wait for this peer already.
    #[error("too many heartbeats queued for {peer}")]
    QueueFull { peer: PeerId },
    /// The batch task went away without answering.
    #[error("the batch to {peer} was dropped")]
    BatchDropped { peer: PeerId },
    /// No answer from the batch in time.
    #[error("no answer from {peer} within {ttl:?}")]
    Timeout { peer: PeerId, ttl: Duration },
    /// A thread panicked holding the coalescer's peer table.
    #[error("coalescer unavailable")]
    CoalescerPoisoned,
}

/// Heartbeats waiting per peer before new ones fail fast.
const COALESCE_QUEUE_MAX: usize = 8192;

/// One RPC waiting to share a batch.
struct Pending {
    frame: RaftRequest,
    bytes: usize,
    to: AnchorAddr,
    ttl: Duration,
    reply: oneshot::Sender<Result<RaftResponse, RpcFailure>>,
}

/// Coalesces small Raft RPCs to the same anchor into [`RaftRpc::Coalesced`] frames: one queue and
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

    /// One small Raft frame to `to` (a quiesce request of one scope), sharing a message with
    /// other scopes' frames to the same anchor when they are dense; its answer, or why none.
    pub(crate) async fn call(
        &self,
        to: AnchorAddr,
        frame: RaftRequest,
        ttl: Duration,
    ) -> Result<RaftResponse, String> {
        let out = if self.enabled() {
            self.send(to, frame, ttl).await
        } else {
            exchange(&self.net, &to, &frame, ttl).await
        };
        out.map_err(|e| e.to_string())
    }

    /// Queues `frame` for `to` and waits (at most `ttl`) for its own answer.
    async fn send(
        &self,
        to: AnchorAddr,
        frame: RaftRequest,
        ttl: Duration,
    ) -> Result<RaftResponse, RpcFailure> {
        let peer = to.peer;
        let tx = {
            let mut peers = self
                .peers
                .lock()
                .map_err(|_| RpcFailure::CoalescerPoisoned)?;
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
            to,
            ttl,
            reply,
        })
        .map_err(|_| RpcFailure::QueueFull { peer })?;
        match tokio::time::timeout(ttl, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(RpcFailure::BatchDropped { peer }),
            Err(_) => Err(RpcFailure::Timeout { peer, ttl }),
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
        while batch.len() < RAFT_COALESCED_RPCS_MAX && bytes < RAFT_BATCH_BYTES_MAX {
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
    let to = batch.first().map_or_else(
        || AnchorAddr {
            peer,
            addrs: Vec::new(),
        },
        |p| p.to.clone(),
    );
    if batch.len() == 1 {
        if let Some(p) = batch.pop() {
            let out = exchange(&net, &to, &p.frame, ttl).await;
            let _ = p.reply.send(out);
        }
        return;
    }
    let result = exchange_batch(&net, &to, &batch, ttl).await;
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

/// The RPCs of `batch` to `to` as one [`RaftRpc::Coalesced`] frame, and their answers in order.
async fn exchange_batch(
    net: &NetHandle,
    to: &AnchorAddr,
    batch: &[Pending],
    ttl: Duration,
) -> Result<Vec<RaftResponse>, RpcFailure> {
    let peer = to.peer;
    let frames: Vec<&RaftRequest> = batch.iter().map(|p| &p.frame).collect();
    let payload = codec::encode(&frames).map_err(|e| RpcFailure::BatchEncode {
        peer,
        reason: e.to_string(),
    })?;
    let outer = RaftRequest {
        scope: ScopeId::default(),
        rpc: RaftRpc::Coalesced,
        payload,
    };
    match exchange(net, to, &outer, ttl).await? {
        RaftResponse::Ok(inner) => {
            let rs =
                codec::decode::<Vec<RaftResponse>>(&inner, RAFT_FRAME_BYTES_MAX).map_err(|e| {
                    RpcFailure::BadBatchAnswer {
                        peer,
                        reason: e.to_string(),
                    }
                })?;
            if rs.len() == batch.len() {
                Ok(rs)
            } else {
                Err(RpcFailure::BadBatchAnswer {
                    peer,
                    reason: format!("it answered {} of {} coalesced RPCs", rs.len(), batch.len()),
                })
            }
        }
        RaftResponse::Refused(error) => Err(RpcFailure::BatchRefused { peer, error }),
    }
}

/// One Raft frame to `to` and its decoded answer.
async fn exchange(
    net: &NetHandle,
    to: &AnchorAddr,
    frame: &RaftRequest,
    ttl: Duration,
) -> Result<RaftResponse, RpcFailure> {
    let call = |source| RpcFailure::Call {
        peer: to.peer,
        source,
    };
    let bytes = encode_request(Protocol::Raft, frame).map_err(call)?;
    net.call_encoded(to, Protocol::Raft, bytes, ttl)
        .await
        .map_err(call)
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = ScopeClient;

    async fn new_client(&mut self, target: NodeId, node: &AnchorInfo) -> ScopeClient {
        ScopeClient {
            scope: self.scope,
            target,
            to: AnchorAddr::from_info(node).ok(),
            net: self.net.clone(),
            coalescer: self.coalescer.clone(),
            urgency: self.urgency.clone(),
        }
    }
}

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
        let unreachable = |e: RpcFailure| RPCError::Unreachable(Unreachable::new(&e));
        let Some(to) = &self.to else {
            return Err(unreachable(RpcFailure::NoPeerId {
                target: self.target,
            }));
        };
        let payload = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let frame = RaftRequest {
            scope: self.scope,
            rpc,
            payload,
        };
        let resp = if coalesce && self.coalescer.enabled() && !self.urgency.pressing() {
            self.coalescer.send(to.clone(), frame, ttl).await
        } else {
            exchange(&self.net, to, &frame, ttl).await
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
            RaftResponse::Refused(error) => Err(unreachable(RpcFailure::Refused {
                peer: to.peer,
                error,
            })),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urgency_lasts_while_any_request_is_in_flight() {
        let u = Urgency::default();
        assert!(!u.pressing());
        let write = u.hold();
        let read = u.hold();
        assert!(u.pressing());
        drop(write);
        assert!(u.pressing(), "the read is still in flight");
        drop(read);
        assert!(!u.pressing());
    }
}
