//! One anchor: its identity, database, swarm, hosted scope replicas, and the handlers of the
//! four protocols. Handlers decode a frame (size-checked by the codec), call into Raft or the
//! pure scope logic, and encode the answer; every refusal is counted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use libp2p::{Multiaddr, PeerId};
use proto::limits::{CLIENT_FRAME_BYTES_MAX, RAFT_FRAME_BYTES_MAX};
use proto::msg::{
    AdminRequest, AdminResponse, AnchorStatus, Answer, MutateRequest, MutateResponse, RaftRequest,
    RaftResponse, RaftRpc, ResolveRequest, ResolveResponse, ScopeInfo, ScopeStatus, ScopeTarget,
    SignedAnswer, WatchRequest, WatchResponse,
};
use proto::{codec, AnchorInfo, Name, ReadLevel, ScopeDescriptor, ScopeId, WireError};
use resolver::net::{self, Inbound, NetConfig, NetHandle, Protocol};
use resolver::AnchorAddr;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::batch::{self, Proposal, ReadWaiter};
use crate::config::AnchorConfig;
use crate::identity;
use crate::metrics::Metrics;
use crate::raft::log_store::{FlusherHandle, LogStore};
use crate::raft::network::NetworkFactory;
use crate::raft::sm::{ScopeReader, StateMachine};
use crate::raft::{NodeId, ScopeCommand, ScopeRaft};
use crate::scope::decide;
use crate::scope::rate::RateMeter;
use crate::scope::sig_cache::SigCache;
use crate::AnchorError;

/// Inbound requests handled at once; more wait in the network's bounded queue.
const HANDLERS_MAX: usize = 1024;
/// How long the genesis entry may wait for its commit.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes of delegations one ScopeInfo answer carries (the policy takes up to 64 KiB more).
const SCOPE_INFO_DELEGATION_BYTES_MAX: usize = 128 * 1024;
/// How long a forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(6);

/// One hosted scope replica.
pub struct Replica {
    /// Scope id.
    pub id: ScopeId,
    /// The scope as created.
    pub descriptor: ScopeDescriptor,
    /// Its Raft group handle.
    pub raft: ScopeRaft,
    /// Read access to its state machine.
    pub state: ScopeReader,
    /// Requests served for this scope here, over the last seconds.
    pub load: RateMeter,
    proposals: tokio::sync::mpsc::Sender<Proposal>,
    reads: tokio::sync::mpsc::Sender<ReadWaiter>,
}

/// Options of [`Anchor::start_with`] that only tests set.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Fault injection on this anchor's outbound requests.
    pub faults: Option<Arc<dyn resolver::net::FaultInjector>>,
}

/// A running anchor. Cheap to clone.
#[derive(Clone)]
pub struct Anchor {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: AnchorConfig,
    db: sled::Db,
    registry: sled::Tree,
    flusher: FlusherHandle,
    net: NetHandle,
    coalescer: Arc<crate::raft::network::Coalescer>,
    keypair: libp2p::identity::Keypair,
    peer_id: PeerId,
    node_id: NodeId,
    info: AnchorInfo,
    scopes: RwLock<BTreeMap<ScopeId, Arc<Replica>>>,
    metrics: Metrics,
    raft_config: Arc<openraft::Config>,
    http_addr: RwLock<Option<SocketAddr>>,
    codec_refused_seen: std::sync::Mutex<[u64; 5]>,
    verified: Arc<SigCache>,
    stop: tokio::sync::watch::Sender<bool>,
    /// Child-scope seeds being received, by child id.
    seeds: std::sync::Mutex<BTreeMap<ScopeId, crate::delegation::Staging>>,
    /// Held while a child replica is built from its seed.
    seeding: tokio::sync::Mutex<()>,
}

pub(crate) fn now_s() -> u64 {
    now_ms() / 1000
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn encode_or_empty<T: Serialize>(v: &T) -> Vec<u8> {
    codec::encode(v).unwrap_or_default()
}

impl Anchor {
    /// Opens the data dir, starts the swarm, reopens every hosted scope and starts serving.
    pub async fn start(cfg: AnchorConfig) -> Result<Anchor, AnchorError> {
        Anchor::start_with(cfg, StartOptions::default()).await
    }

    /// [`Anchor::start`] with test hooks.
    pub async fn start_with(cfg: AnchorConfig, opts: StartOptions) -> Result<Anchor, AnchorError> {
        let keypair = identity::load_or_create(&cfg.data_dir)?;
        let peer_id = keypair.public().to_peer_id();
        let db = sled::Config::new()
            .path(cfg.data_dir.join("db"))
            .cache_capacity(cfg.storage.cache_bytes)
            .open()?;
        let metrics = Metrics::new();
        let flusher = FlusherHandle::spawn(db.clone(), Some(metrics.flush_seconds.clone()));
        let listen: Multiaddr = cfg.listen.parse().map_err(|e| AnchorError::Config {
            path: "listen".into(),
            reason: format!("{e}"),
        })?;
        let (net, inbound) = net::spawn(NetConfig {
            keypair: keypair.clone(),
            listen: vec![listen],
            serve: true,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            frame_bytes_max_override: None,
            faults: opts.faults,
        })?;
        let addrs: Vec<String> = match &cfg.advertise {
            Some(a) => vec![a.clone()],
            None => net
                .listen_addrs()
                .await
                .iter()
                .map(|a| a.to_string())
                .collect(),
        };
        let info = AnchorInfo {
            peer_id: peer_id.to_base58(),
            addrs,
        };
        let raft_config = Arc::new(raft_config(&cfg)?);
        let coalesce = Duration::from_millis(cfg.raft.coalesce_ms);
        let registry = db.open_tree("scopes")?;
        let inner = Arc::new(Inner {
            node_id: identity::node_id(&peer_id),
            cfg,
            db,
            registry,
            flusher,
            coalescer: crate::raft::network::Coalescer::new(net.clone(), coalesce),
            net,
            keypair,
            peer_id,
            info,
            scopes: RwLock::new(BTreeMap::new()),
            metrics,
            raft_config,
            http_addr: RwLock::new(None),
            stop: tokio::sync::watch::channel(false).0,
            codec_refused_seen: std::sync::Mutex::new([0; 5]),
            verified: Arc::new(SigCache::default()),
            seeds: std::sync::Mutex::new(BTreeMap::new()),
            seeding: tokio::sync::Mutex::new(()),
        });
        let anchor = Anchor { inner };
        anchor.reopen_scopes().await?;
        if let Some(rx) = inbound {
            tokio::spawn(anchor.clone().serve(rx));
        }
        tokio::spawn(crate::delegation::drive(
            anchor.clone(),
            anchor.inner.stop.subscribe(),
        ));
        let http = crate::http::serve(
            anchor.clone(),
            anchor.inner.cfg.http,
            anchor.inner.stop.subscribe(),
        )
        .await?;
        if let Ok(mut h) = anchor.inner.http_addr.write() {
            *h = Some(http);
        }
        tracing::info!(peer = %anchor.inner.peer_id, addrs = ?anchor.inner.info.addrs, %http, "anchor started");
        Ok(anchor)
    }

    /// This anchor's peer id and addresses.
    pub fn info(&self) -> AnchorInfo {
        self.inner.info.clone()
    }

    /// A multiaddr with `/p2p/<peer id>` that clients can use as a trust anchor.
    pub fn dial_addr(&self) -> String {
        let a = self.inner.info.addrs.first().cloned().unwrap_or_default();
        format!("{a}/p2p/{}", self.inner.peer_id)
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.inner.http_addr.read().ok().and_then(|h| *h)
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Hosted replicas.
    pub fn replicas(&self) -> Vec<Arc<Replica>> {
        self.inner
            .scopes
            .read()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Stops every Raft group and the swarm, and flushes the database.
    pub async fn shutdown(&self) {
        for r in self.replicas() {
            let _ = r.raft.shutdown().await;
        }
        self.inner.net.shutdown();
        self.inner.stop.send_replace(true);
        if let Ok(mut s) = self.inner.scopes.write() {
            s.clear();
        }
        let _ = self.inner.db.flush_async().await;
    }

    async fn reopen_scopes(&self) -> Result<(), AnchorError> {
        for kv in self.inner.registry.iter() {
            let (_, v) = kv?;
            let descriptor: ScopeDescriptor = codec::decode(&v, CLIENT_FRAME_BYTES_MAX)?;
            self.open_replica(descriptor).await?;
        }
        Ok(())
    }

    pub(crate) fn db(&self) -> &sled::Db {
        &self.inner.db
    }

    pub(crate) fn flusher(&self) -> &FlusherHandle {
        &self.inner.flusher
    }

    pub(crate) fn net(&self) -> &NetHandle {
        &self.inner.net
    }

    pub(crate) fn config(&self) -> &AnchorConfig {
        &self.inner.cfg
    }

    pub(crate) fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    pub(crate) fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    pub(crate) fn registry(&self) -> &sled::Tree {
        &self.inner.registry
    }

    pub(crate) fn seeds(&self) -> &std::sync::Mutex<BTreeMap<ScopeId, crate::delegation::Staging>> {
        &self.inner.seeds
    }

    pub(crate) fn seeding(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.seeding
    }

    pub(crate) async fn open_replica(
        &self,
        descriptor: ScopeDescriptor,
    ) -> Result<Arc<Replica>, AnchorError> {
        let id = descriptor.id;
        let log = LogStore::open(&self.inner.db, id, self.inner.flusher.clone())?;
        let sm = StateMachine::open(
            &self.inner.db,
            id,
            descriptor.prefix.clone(),
            self.inner.verified.clone(),
        )?;
        let state = sm.reader();
        let network = NetworkFactory {
            scope: id,
            net: self.inner.net.clone(),
            coalescer: self.inner.coalescer.clone(),
        };
        let raft = openraft::Raft::new(
            self.inner.node_id,
            self.inner.raft_config.clone(),
            network,
            log,
            sm,
        )
        .await
        .map_err(|e| AnchorError::Raft(e.to_string()))?;
        let proposals = batch::spawn_proposer(raft.clone(), id);
        let reads = batch::spawn_read_batcher(raft.clone(), id);
        let replica = Arc::new(Replica {
            id,
            descriptor,
            raft,
            state,
            load: RateMeter::default(),
            proposals,
            reads,
        });
        if let Ok(mut s) = self.inner.scopes.write() {
            s.insert(id, replica.clone());
        }
        tracing::info!(scope = %id, prefix = %replica.descriptor.prefix, "scope replica opened");
        Ok(replica)
    }

    pub(crate) fn replica(&self, id: &ScopeId) -> Option<Arc<Replica>> {
        self.inner
            .scopes
            .read()
            .ok()
            .and_then(|s| s.get(id).cloned())
    }

    /// The hosted scope with the longest prefix that contains `name`.
    fn governing(&self, name: &Name) -> Option<Arc<Replica>> {
        self.replicas()
            .into_iter()
            .filter(|r| name.is_under(&r.descriptor.prefix))
            .max_by_key(|r| r.descriptor.prefix.depth())
    }

    async fn serve(self, mut rx: tokio::sync::mpsc::Receiver<Inbound>) {
        let permits = Arc::new(Semaphore::new(HANDLERS_MAX));
        while let Some(inbound) = rx.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let anchor = self.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let protocol = inbound.protocol;
                let answer = anchor.handle(inbound.peer, protocol, inbound.bytes).await;
                let _ = inbound.reply.send(answer);
                anchor
                    .inner
                    .metrics
                    .request_seconds
                    .with_label_values(&[protocol.as_str()])
                    .observe(started.elapsed().as_secs_f64());
                drop(permit);
            });
        }
    }

    fn refuse(&self, protocol: Protocol, reason: &str) {
        self.inner
            .metrics
            .refused
            .with_label_values(&[protocol.as_str(), reason])
            .inc();
    }

    fn decode<T: DeserializeOwned>(
        &self,
        protocol: Protocol,
        bytes: &[u8],
    ) -> Result<T, WireError> {
        codec::decode(bytes, protocol.frame_bytes_max()).map_err(|e| {
            let reason = match e {
                proto::ProtoError::FrameTooLarge { .. } => "oversize",
                _ => "malformed",
            };
            self.refuse(protocol, reason);
            WireError::Invalid {
                reason: e.to_string(),
            }
        })
    }

    /// Handles one inbound request and returns the encoded answer.
    pub async fn handle(&self, peer: PeerId, protocol: Protocol, bytes: Vec<u8>) -> Vec<u8> {
        match protocol {
            Protocol::Raft => encode_or_empty(&self.handle_raft(peer, &bytes).await),
            Protocol::Resolve => {
                let span = tracing::debug_span!("resolve", %peer);
                encode_or_empty(&self.handle_resolve(&bytes).instrument(span).await)
            }
            Protocol::Mutate => {
                let span = tracing::debug_span!("mutate", %peer);
                encode_or_empty(&self.handle_mutate(&bytes).instrument(span).await)
            }
            Protocol::Admin => {
                let span = tracing::info_span!("admin", %peer);
                encode_or_empty(&self.handle_admin(peer, &bytes).instrument(span).await)
            }
            Protocol::Watch => {
                let span = tracing::debug_span!("watch", %peer);
                encode_or_empty(&self.handle_watch(&bytes).instrument(span).await)
            }
        }
    }

    // ---- raft ----

    fn is_member(&self, replica: &Replica, peer: &PeerId) -> bool {
        let peer = peer.to_base58();
        let metrics = replica.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let mut nodes = membership.nodes().peekable();
        if nodes.peek().is_none() {
            return replica.descriptor.members.iter().any(|m| m.peer_id == peer);
        }
        let in_config = nodes.any(|(_, n)| n.peer_id == peer);
        in_config || replica.descriptor.members.iter().any(|m| m.peer_id == peer)
    }

    async fn handle_raft(&self, peer: PeerId, bytes: &[u8]) -> RaftResponse {
        let req: RaftRequest = match self.decode(Protocol::Raft, bytes) {
            Ok(r) => r,
            Err(e) => return RaftResponse::Refused(e),
        };
        if req.rpc == RaftRpc::Batch {
            return self.handle_raft_batch(peer, &req.payload).await;
        }
        self.handle_raft_one(peer, req).await
    }

    /// Coalesced RPCs (heartbeats of many scopes): each is checked and handled as if it had
    /// come alone, concurrently, and the answers go back in order.
    async fn handle_raft_batch(&self, peer: PeerId, payload: &[u8]) -> RaftResponse {
        let requests: Vec<RaftRequest> = match self.decode(Protocol::Raft, payload) {
            Ok(r) => r,
            Err(e) => return RaftResponse::Refused(e),
        };
        let nested = requests.iter().any(|r| r.rpc == RaftRpc::Batch);
        if requests.len() > proto::limits::RAFT_BATCH_RPCS_MAX || nested {
            self.refuse(Protocol::Raft, "malformed");
            return RaftResponse::Refused(WireError::Invalid {
                reason: format!(
                    "a batch carries at most {} RPCs, none of them a batch",
                    proto::limits::RAFT_BATCH_RPCS_MAX
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
        let Some(replica) = self.replica(&req.scope) else {
            self.refuse(Protocol::Raft, "unknown_scope");
            return RaftResponse::Refused(WireError::Refused {
                reason: format!("scope {} is not hosted here", req.scope),
            });
        };
        if !self.is_member(&replica, &peer) {
            self.refuse(Protocol::Raft, "non_member");
            tracing::warn!(%peer, scope = %req.scope, "raft message from a non-member refused");
            return RaftResponse::Refused(WireError::Refused {
                reason: format!("{peer} is not a member of scope {}", req.scope),
            });
        }
        let raft = &replica.raft;
        let payload = &req.payload;
        let out = match req.rpc {
            RaftRpc::Append => match self.decode(Protocol::Raft, payload) {
                Ok(r) => codec::encode(&raft.append_entries(r).await),
                Err(e) => return RaftResponse::Refused(e),
            },
            RaftRpc::Vote => match self.decode(Protocol::Raft, payload) {
                Ok(r) => codec::encode(&raft.vote(r).await),
                Err(e) => return RaftResponse::Refused(e),
            },
            RaftRpc::Snapshot => match self.decode(Protocol::Raft, payload) {
                Ok(r) => codec::encode(&raft.install_snapshot(r).await),
                Err(e) => return RaftResponse::Refused(e),
            },
            RaftRpc::Batch => {
                self.refuse(Protocol::Raft, "malformed");
                return RaftResponse::Refused(WireError::Invalid {
                    reason: "a batch may not be nested".into(),
                });
            }
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

    // ---- resolve ----

    fn leader_info(&self, replica: &Replica) -> Option<AnchorInfo> {
        let m = replica.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        m.membership_config.membership().get_node(&leader).cloned()
    }

    async fn handle_resolve(&self, bytes: &[u8]) -> ResolveResponse {
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
    fn serving(&self, scope: &ScopeId, name: &Name) -> Result<Arc<Replica>, WireError> {
        let Some(replica) = self.replica(scope) else {
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
        replica.load.read(now_s());
        if req.level == ReadLevel::Linearizable {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if replica.reads.try_send(tx).is_err() {
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
        let referral = replica
            .state
            .with_view(|v| {
                decide::delegation_over(&v.delegations, &req.name)
                    .filter(|d| d.state == proto::DelegationState::Active)
                    .map(|d| d.referral.clone())
            })
            .flatten();
        if let Some(referral) = referral {
            return self.sign_answer(&Answer::Referral {
                scope: replica.id,
                name: req.name.clone(),
                referral,
            });
        }
        let answer = match replica.state.get(&req.name) {
            Ok(Some(set)) => Answer::Found {
                scope: replica.id,
                name: req.name.clone(),
                set,
            },
            Ok(None) => Answer::NotFound {
                scope: replica.id,
                name: req.name.clone(),
            },
            Err(e) => {
                return ResolveResponse::Error(WireError::Unavailable {
                    reason: e.to_string(),
                })
            }
        };
        self.sign_answer(&answer)
    }

    // ---- watch ----

    async fn handle_watch(&self, bytes: &[u8]) -> WatchResponse {
        let req: WatchRequest = match self.decode(Protocol::Watch, bytes) {
            Ok(r) => r,
            Err(e) => return WatchResponse::Error(e),
        };
        let resp = self.watch(req).await;
        let outcome = match &resp {
            WatchResponse::Changes { events, .. } if events.is_empty() => "empty",
            WatchResponse::Changes { .. } => "changes",
            WatchResponse::Compacted { .. } => "compacted",
            WatchResponse::Referral(_) => "referral",
            WatchResponse::Error(e) => decide::refusal_label(e),
        };
        self.inner
            .metrics
            .watches
            .with_label_values(&[outcome])
            .inc();
        resp
    }

    /// Long poll: the changes under the prefix after `req.after`, waiting for some when there
    /// are none yet (see [`WatchRequest`]).
    async fn watch(&self, req: WatchRequest) -> WatchResponse {
        use proto::limits::{WATCH_EVENTS_MAX, WATCH_EVENT_BYTES_MAX, WATCH_WAIT_MS_MAX};
        let replica = match self.serving(&req.scope, &req.prefix) {
            Ok(r) => r,
            Err(e) => return WatchResponse::Error(e),
        };
        let mut metrics = replica.raft.metrics();
        let applied =
            |m: &openraft::RaftMetrics<NodeId, AnchorInfo>| m.last_applied.map_or(0, |l| l.index);
        let Some(mut after) = req.after else {
            let up_to = applied(&metrics.borrow());
            return WatchResponse::Changes {
                scope: replica.id,
                events: Vec::new(),
                up_to,
            };
        };
        let unavailable = |e: AnchorError| {
            WatchResponse::Error(WireError::Unavailable {
                reason: e.to_string(),
            })
        };
        let view = replica.state.view();
        if let Some(d) = decide::delegation_over(&view.delegations, &req.prefix)
            .filter(|d| d.state == proto::DelegationState::Active)
        {
            if after >= d.index {
                return WatchResponse::Referral(d.referral.clone());
            }
            // History before the move still comes from here.
            return match replica.state.changes(
                &req.prefix,
                after,
                d.index,
                WATCH_EVENTS_MAX,
                WATCH_EVENT_BYTES_MAX,
            ) {
                Ok((events, up_to)) => WatchResponse::Changes {
                    scope: replica.id,
                    events,
                    up_to,
                },
                Err(e) => unavailable(e),
            };
        }
        if after < view.watch_floor {
            return WatchResponse::Compacted {
                scope: replica.id,
                oldest: view.watch_floor,
                up_to: applied(&metrics.borrow()),
            };
        }
        let wait = Duration::from_millis(u64::from(req.wait_ms.min(WATCH_WAIT_MS_MAX)));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let up_to = applied(&metrics.borrow_and_update());
            if up_to > after {
                match replica.state.changes(
                    &req.prefix,
                    after,
                    up_to,
                    WATCH_EVENTS_MAX,
                    WATCH_EVENT_BYTES_MAX,
                ) {
                    Ok((events, covered)) if !events.is_empty() => {
                        return WatchResponse::Changes {
                            scope: replica.id,
                            events,
                            up_to: covered,
                        }
                    }
                    Ok((_, covered)) => after = covered,
                    Err(e) => return unavailable(e),
                }
            }
            match tokio::time::timeout_at(deadline, metrics.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => {
                    return WatchResponse::Changes {
                        scope: replica.id,
                        events: Vec::new(),
                        up_to: after,
                    }
                }
            }
        }
    }

    /// Signs an answer with this anchor's identity key.
    fn sign_answer(&self, answer: &Answer) -> ResolveResponse {
        let body = match codec::encode(answer) {
            Ok(b) => b,
            Err(e) => {
                return ResolveResponse::Error(WireError::Unavailable {
                    reason: format!("cannot encode the answer: {e}"),
                })
            }
        };
        match self.inner.keypair.sign(&Answer::signing_bytes(&body)) {
            Ok(signature) => ResolveResponse::Signed(SignedAnswer {
                body,
                public_key: self.inner.keypair.public().encode_protobuf(),
                signature,
            }),
            Err(e) => ResolveResponse::Error(WireError::Unavailable {
                reason: format!("cannot sign the answer: {e}"),
            }),
        }
    }

    // ---- mutate ----

    async fn handle_mutate(&self, bytes: &[u8]) -> MutateResponse {
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

    async fn mutate(&self, req: MutateRequest) -> MutateResponse {
        let m = match decide::verify(&req.mutation) {
            Ok(m) => m,
            Err(e) => return MutateResponse::Error(e),
        };
        let Some(replica) = self.governing(m.op.name()) else {
            return MutateResponse::Error(WireError::NoScope {
                name: m.op.name().clone(),
            });
        };
        if !req.forwarded {
            replica.load.write(now_s());
        }
        // Names under an active delegation are the child's: say where it is, whoever leads.
        let delegated = replica
            .state
            .with_view(|v| {
                decide::delegation_over(&v.delegations, m.op.name())
                    .filter(|d| d.state == proto::DelegationState::Active)
                    .map(|d| decide::refusal_for_delegated(d, m.op.name()))
            })
            .flatten();
        if let Some(e) = delegated {
            return MutateResponse::Error(e);
        }
        let leader = replica.raft.metrics().borrow().current_leader;
        match leader {
            Some(l) if l == self.inner.node_id => self.propose(&replica, &m, req).await,
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
        match replica.state.decide(m, &req.mutation, now_ms()) {
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
        if replica.proposals.try_send(proposal).is_err() {
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
        let leader = self.leader_info(replica);
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
        let Ok(AnchorAddr { peer, addrs }) = AnchorAddr::from_info(&info) else {
            return MutateResponse::Error(WireError::NotLeader {
                scope: replica.id,
                leader: Some(info),
            });
        };
        req.forwarded = true;
        let Ok(bytes) = codec::encode(&req) else {
            return MutateResponse::Error(WireError::Invalid {
                reason: "cannot re-encode".into(),
            });
        };
        let call = self.inner.net.request(peer, addrs, Protocol::Mutate, bytes);
        match tokio::time::timeout(FORWARD_TIMEOUT, call).await {
            Ok(Ok(b)) => codec::decode(&b, CLIENT_FRAME_BYTES_MAX).unwrap_or_else(|e| {
                MutateResponse::Error(WireError::Unavailable {
                    reason: format!("leader answered badly: {e}"),
                })
            }),
            Ok(Err(e)) => MutateResponse::Error(WireError::Unavailable {
                reason: format!("forwarding to the leader failed: {e}"),
            }),
            Err(_) => MutateResponse::Error(WireError::Unavailable {
                reason: "the leader did not answer in time; the outcome is unknown".into(),
            }),
        }
    }

    // ---- admin ----

    async fn handle_admin(&self, peer: PeerId, bytes: &[u8]) -> AdminResponse {
        let req: AdminRequest = match self.decode(Protocol::Admin, bytes) {
            Ok(r) => r,
            Err(e) => return AdminResponse::Error(e),
        };
        match req {
            AdminRequest::Status => AdminResponse::Status(self.status()),
            AdminRequest::CreateScope {
                descriptor,
                policy_toml,
                bootstrap,
            } => match self.create_scope(descriptor, policy_toml, bootstrap).await {
                Ok(()) => AdminResponse::Ok,
                Err(e) => AdminResponse::Error(WireError::Refused {
                    reason: e.to_string(),
                }),
            },
            AdminRequest::ScopeInfo { target } => match self.scope_info(&target) {
                Ok(info) => AdminResponse::Scope(Box::new(info)),
                Err(e) => AdminResponse::Error(e),
            },
            AdminRequest::SeedScope(seed) => match self.seed_scope(peer, seed).await {
                Ok(()) => AdminResponse::Ok,
                Err(e) => {
                    self.refuse(Protocol::Admin, decide::refusal_label(&e));
                    AdminResponse::Error(e)
                }
            },
            AdminRequest::Snapshot => match self.snapshot_all().await {
                Ok(()) => AdminResponse::Ok,
                Err(e) => AdminResponse::Error(WireError::Unavailable {
                    reason: e.to_string(),
                }),
            },
        }
    }

    /// One hosted scope in detail.
    pub fn scope_info(&self, target: &ScopeTarget) -> Result<ScopeInfo, WireError> {
        let replica = match target {
            ScopeTarget::Id(id) => self.replica(id),
            ScopeTarget::Name(name) => self.governing(name),
        };
        let Some(r) = replica else {
            let name = match target {
                ScopeTarget::Name(n) => n.clone(),
                ScopeTarget::Id(_) => Name::root(),
            };
            return Err(WireError::NoScope { name });
        };
        let view = r.state.view();
        // Delegations travel without their policy text (ask the child for it), and only as
        // many as fit one frame.
        let mut delegations = Vec::new();
        let mut bytes = 0;
        for mut d in view.delegations.into_values() {
            d.policy_toml.clear();
            bytes += codec::encode(&d).map_or(0, |b| b.len());
            if bytes > SCOPE_INFO_DELEGATION_BYTES_MAX {
                break;
            }
            delegations.push(d);
        }
        Ok(ScopeInfo {
            status: self.scope_status(&r),
            descriptor: view.descriptor.unwrap_or_else(|| r.descriptor.clone()),
            parent: view.parent,
            policy_toml: view.policy_toml,
            delegations,
            active: view.active,
            load: r.load.load(now_s()),
        })
    }

    /// This anchor's status, as `anchorage status` shows it.
    pub fn status(&self) -> AnchorStatus {
        let scopes = self
            .replicas()
            .iter()
            .map(|r| self.scope_status(r))
            .collect();
        AnchorStatus {
            peer_id: self.inner.peer_id.to_base58(),
            node_id: self.inner.node_id,
            addrs: self.inner.info.addrs.clone(),
            labels: self.inner.cfg.labels.clone(),
            scopes,
        }
    }

    fn scope_status(&self, r: &Replica) -> ScopeStatus {
        let m = r.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let leader = m
            .current_leader
            .and_then(|l| membership.get_node(&l))
            .map(|n| n.peer_id.clone());
        let members: Vec<String> = membership.nodes().map(|(_, n)| n.peer_id.clone()).collect();
        ScopeStatus {
            id: r.id,
            prefix: r.descriptor.prefix.clone(),
            role: format!("{:?}", m.state).to_lowercase(),
            term: m.current_term,
            leader,
            last_applied: m.last_applied.map(|l| l.index),
            last_log: m.last_log_index,
            snapshot: m.snapshot.map(|l| l.index),
            members: if members.is_empty() {
                r.descriptor
                    .members
                    .iter()
                    .map(|m| m.peer_id.clone())
                    .collect()
            } else {
                members
            },
            names: r.state.view().names,
        }
    }

    /// Updates the per-scope gauges (called before metrics are rendered).
    pub fn refresh_gauges(&self) {
        let g = &self.inner.metrics;
        if let Ok(mut seen) = self.inner.codec_refused_seen.lock() {
            let protocols = [
                Protocol::Raft,
                Protocol::Resolve,
                Protocol::Mutate,
                Protocol::Admin,
                Protocol::Watch,
            ];
            for (i, p) in protocols.into_iter().enumerate() {
                let now = self.inner.net.refused_frames().get(p);
                g.refused
                    .with_label_values(&[p.as_str(), "bad_frame"])
                    .inc_by(now.saturating_sub(seen[i]));
                seen[i] = now;
            }
        }
        for r in self.replicas() {
            let m = r.raft.metrics().borrow().clone();
            let id = r.id.to_hex();
            g.scope_term
                .with_label_values(&[&id])
                .set(m.current_term as i64);
            let leads = m.current_leader == Some(self.inner.node_id);
            g.scope_leader
                .with_label_values(&[&id])
                .set(i64::from(leads));
            g.scope_applied
                .with_label_values(&[&id])
                .set(m.last_applied.map_or(0, |l| l.index) as i64);
        }
    }

    /// True when every hosted scope knows its leader.
    pub fn ready(&self) -> bool {
        self.replicas()
            .iter()
            .all(|r| r.raft.metrics().borrow().current_leader.is_some())
    }

    /// Hosts a replica of a new scope; with `bootstrap`, initializes the group and commits
    /// its genesis entry.
    pub async fn create_scope(
        &self,
        descriptor: ScopeDescriptor,
        policy_toml: String,
        bootstrap: bool,
    ) -> Result<(), AnchorError> {
        policy::Policy::from_toml(&policy_toml)?;
        let me = self.inner.peer_id.to_base58();
        if !descriptor.members.iter().any(|m| m.peer_id == me) {
            return Err(AnchorError::Raft(format!(
                "this anchor ({me}) is not among the scope's members"
            )));
        }
        let members: BTreeMap<NodeId, AnchorInfo> = descriptor
            .members
            .iter()
            .map(|m| {
                identity::node_id_of_str(&m.peer_id)
                    .map(|id| (id, m.clone()))
                    .ok_or_else(|| AnchorError::Raft(format!("bad member peer id {:?}", m.peer_id)))
            })
            .collect::<Result<_, _>>()?;
        if members.len() != descriptor.members.len() || members.is_empty() {
            return Err(AnchorError::Raft(
                "scope members must be distinct and non-empty".into(),
            ));
        }
        let replica = match self.replica(&descriptor.id) {
            Some(r) if !bootstrap => return Err(AnchorError::AlreadyExists(r.id)),
            Some(r) => r,
            None => {
                let key = descriptor.id.0;
                let value = codec::encode(&descriptor)?;
                if self
                    .inner
                    .registry
                    .compare_and_swap(key, None as Option<&[u8]>, Some(value))?
                    .is_err()
                {
                    return Err(AnchorError::AlreadyExists(descriptor.id));
                }
                self.inner
                    .flusher
                    .flush()
                    .await
                    .map_err(|e| AnchorError::Io {
                        path: "db".into(),
                        source: e,
                    })?;
                self.open_replica(descriptor.clone()).await?
            }
        };
        if !bootstrap {
            return Ok(());
        }
        if replica
            .raft
            .is_initialized()
            .await
            .map_err(|e| AnchorError::Raft(e.to_string()))?
        {
            return Err(AnchorError::AlreadyExists(replica.id));
        }
        replica
            .raft
            .initialize(members)
            .await
            .map_err(|e| AnchorError::Raft(e.to_string()))?;
        let genesis = ScopeCommand::Genesis {
            descriptor,
            policy_toml,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout(WRITE_TIMEOUT, replica.raft.client_write(genesis.clone()))
                .await
            {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) if Instant::now() > deadline => {
                    return Err(AnchorError::Raft(e.to_string()))
                }
                Err(_) if Instant::now() > deadline => {
                    return Err(AnchorError::Raft(
                        "genesis entry not committed in 20 s".into(),
                    ))
                }
                _ => {
                    // Not leader yet (the election started by initialize is under way):
                    // wait for the next metrics change, bounded, then try again.
                    let mut metrics = replica.raft.metrics();
                    let _ =
                        tokio::time::timeout(Duration::from_millis(200), metrics.changed()).await;
                }
            }
        }
    }

    /// Builds a snapshot of every hosted scope and purges the log up to it.
    pub async fn snapshot_all(&self) -> Result<(), AnchorError> {
        for r in self.replicas() {
            let applied = r
                .raft
                .metrics()
                .borrow()
                .last_applied
                .map_or(0, |l| l.index);
            r.raft
                .trigger()
                .snapshot()
                .await
                .map_err(|e| AnchorError::Raft(e.to_string()))?;
            let waited = r
                .raft
                .wait(Some(Duration::from_secs(20)))
                .metrics(
                    |m| m.snapshot.is_some_and(|s| s.index >= applied),
                    "snapshot built",
                )
                .await
                .map_err(|e| AnchorError::Raft(e.to_string()))?;
            if let Some(s) = waited.snapshot {
                r.raft
                    .trigger()
                    .purge_log(s.index)
                    .await
                    .map_err(|e| AnchorError::Raft(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Peer ids of the members of every hosted scope (for diagnostics).
    pub fn known_peers(&self) -> BTreeSet<String> {
        self.replicas()
            .iter()
            .flat_map(|r| r.descriptor.members.iter().map(|m| m.peer_id.clone()))
            .collect()
    }
}

fn raft_config(cfg: &AnchorConfig) -> Result<openraft::Config, AnchorError> {
    let r = &cfg.raft;
    let c = openraft::Config {
        cluster_name: "anchorage".into(),
        heartbeat_interval: r.heartbeat_ms,
        election_timeout_min: r.election_min_ms,
        election_timeout_max: r.election_max_ms,
        install_snapshot_timeout: 5_000,
        max_payload_entries: proto::limits::RAFT_ENTRIES_PER_APPEND_MAX,
        snapshot_max_chunk_size: proto::limits::SNAPSHOT_CHUNK_BYTES_MAX as u64,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_logs),
        max_in_snapshot_log_to_keep: r.logs_kept_after_snapshot,
        ..Default::default()
    };
    c.validate().map_err(|e| AnchorError::Config {
        path: "raft".into(),
        reason: e.to_string(),
    })
}
