//! The libp2p layer shared by anchors and resolvers: one swarm, four request-response
//! protocols (raft, resolve, mutate, admin, watch), length-prefixed frames checked against
//! `proto::limits` before a byte is allocated.
//!
//! The swarm lives in one task that owns it ([`spawn`]); everyone else holds a cheap
//! [`NetHandle`] and talks to it through a command channel. Outbound requests are bounded by
//! a semaphore; inbound requests (on anchors) are handed out through a bounded channel and
//! answered through a oneshot, which the swarm task polls — it never awaits a channel.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use libp2p::identity::Keypair;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use crate::addr::AnchorAddr;

use proto::limits::{CLIENT_FRAME_BYTES_MAX, RAFT_FRAME_BYTES_MAX};
use proto::msg::{
    ADMIN_PROTOCOL, MUTATE_PROTOCOL, RAFT_PROTOCOL, RESOLVE_PROTOCOL, WATCH_PROTOCOL,
};

/// Outbound requests one handle set may have in flight at once.
pub const OUTBOUND_INFLIGHT_MAX: usize = 1024;
/// Inbound requests queued for the anchor before new ones are dropped.
pub const INBOUND_QUEUE_MAX: usize = 4096;
/// Concurrent yamux streams per connection (libp2p's default of 100 is too low for Raft).
pub const STREAMS_PER_CONNECTION_MAX: usize = 2048;

/// The four protocols an anchor speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `/anchorage/raft/1`
    Raft,
    /// `/anchorage/resolve/1`
    Resolve,
    /// `/anchorage/mutate/1`
    Mutate,
    /// `/anchorage/admin/1`
    Admin,
    /// `/anchorage/watch/1`
    Watch,
}

impl Protocol {
    /// The largest frame accepted on this protocol, either direction.
    pub fn frame_bytes_max(self) -> usize {
        match self {
            Protocol::Raft => RAFT_FRAME_BYTES_MAX,
            _ => CLIENT_FRAME_BYTES_MAX,
        }
    }

    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Raft => "raft",
            Protocol::Resolve => "resolve",
            Protocol::Mutate => "mutate",
            Protocol::Admin => "admin",
            Protocol::Watch => "watch",
        }
    }
}

/// Errors of the network layer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The swarm task has stopped.
    #[error("network stopped")]
    Stopped,
    /// The request could not be delivered or answered.
    #[error("request to {peer} failed: {reason}")]
    Failed {
        /// The peer.
        peer: PeerId,
        /// What libp2p said.
        reason: String,
    },
    /// The transport could not be built or could not listen.
    #[error("network setup failed: {0}")]
    Setup(String),
}

/// Why a typed call ([`NetHandle::call`]) failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The request could not be encoded, or is larger than the protocol allows.
    #[error("the request cannot be sent: {reason}")]
    Encode {
        /// Why.
        reason: String,
    },
    /// The network layer failed to deliver it or to bring an answer.
    #[error(transparent)]
    Net(#[from] NetError),
    /// No answer in time; the peer may have received the request.
    #[error("no answer within {ms} ms")]
    Timeout {
        /// The peer asked.
        peer: PeerId,
        /// How long we waited.
        ms: u64,
    },
    /// An answer came but does not decode as the expected type.
    #[error("{peer} answered badly: {reason}")]
    Decode {
        /// The peer that answered.
        peer: PeerId,
        /// What the decoder said.
        reason: String,
    },
}

impl CallError {
    /// Whether the peer may have received the request (so a mutation may have been applied).
    /// Only failures that certainly happened before anything was sent say no.
    pub fn maybe_delivered(&self) -> bool {
        match self {
            CallError::Encode { .. } => false,
            // libp2p's texts for "never dialed" and "never opened a stream"; any other text
            // counts as possibly delivered, which is the safe side.
            CallError::Net(NetError::Failed { reason, .. }) => {
                !(reason.starts_with("Failed to dial") || reason.contains("supports none"))
            }
            CallError::Net(NetError::Stopped | NetError::Setup(_)) => false,
            CallError::Timeout { .. } | CallError::Decode { .. } => true,
        }
    }
}

/// Encodes a request for `protocol`, refusing one larger than the protocol's frame limit.
pub fn encode_request<Req: Serialize>(protocol: Protocol, req: &Req) -> Result<Vec<u8>, CallError> {
    let bytes = proto::codec::encode(req).map_err(|e| CallError::Encode {
        reason: e.to_string(),
    })?;
    let max = protocol.frame_bytes_max();
    if bytes.len() > max {
        return Err(CallError::Encode {
            reason: format!(
                "the {} request is {} bytes; at most {max}",
                protocol.as_str(),
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}

/// Length-prefixed frames: a u32 big-endian length, then the bytes. Inbound requests that
/// announce more than the limit are refused before anything is allocated, and counted.
#[derive(Clone, Debug)]
pub struct FrameCodec {
    max: usize,
    protocol: Protocol,
    refused: Arc<RefusedFrames>,
}

impl FrameCodec {
    async fn read_frame<T: futures::AsyncRead + Unpin + Send>(
        &self,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        io.read_exact(&mut len).await?;
        let len = proto::codec::check_frame_len(u64::from(u32::from_be_bytes(len)), self.max)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut buf = vec![0u8; len];
        io.read_exact(&mut buf).await?;
        Ok(buf)
    }

    async fn write_frame<T: futures::AsyncWrite + Unpin + Send>(
        &self,
        io: &mut T,
        bytes: Vec<u8>,
    ) -> io::Result<()> {
        if bytes.len() > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("frame of {} bytes exceeds {}", bytes.len(), self.max),
            ));
        }
        io.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
        io.write_all(&bytes).await?;
        io.close().await
    }
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        let frame = self.read_frame(io).await;
        if let Err(e) = &frame {
            // libp2p does not report a failed request read as an event: count it here.
            if e.kind() == io::ErrorKind::InvalidData {
                self.refused.0[RefusedFrames::index(self.protocol)].fetch_add(1, Ordering::Relaxed);
                tracing::warn!(protocol = self.protocol.as_str(), %e, "inbound frame refused");
            }
        }
        frame
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        self.read_frame(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        self.write_frame(io, req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        self.write_frame(io, res).await
    }
}

type Rr = request_response::Behaviour<FrameCodec>;

#[derive(NetworkBehaviour)]
struct Behaviour {
    raft: Rr,
    resolve: Rr,
    mutate: Rr,
    admin: Rr,
    watch: Rr,
}

impl Behaviour {
    fn get(&mut self, p: Protocol) -> &mut Rr {
        match p {
            Protocol::Raft => &mut self.raft,
            Protocol::Resolve => &mut self.resolve,
            Protocol::Mutate => &mut self.mutate,
            Protocol::Admin => &mut self.admin,
            Protocol::Watch => &mut self.watch,
        }
    }
}

/// How to build the swarm.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// The node's identity.
    pub keypair: Keypair,
    /// Addresses to listen on (empty for a pure client).
    pub listen: Vec<Multiaddr>,
    /// Accept inbound requests (anchors) or only send (resolvers).
    pub serve: bool,
    /// How long an outbound request may take.
    pub request_timeout: Duration,
    /// How long an idle connection stays open.
    pub idle_timeout: Duration,
    /// Overrides every protocol's frame limit (tests use it to send oversize frames).
    pub frame_bytes_max_override: Option<usize>,
    /// Test-only fault injection on outbound requests (`None` in production).
    pub faults: Option<Arc<dyn FaultInjector>>,
}

/// What happens to one outbound request, decided by a [`FaultInjector`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Send it normally.
    Deliver,
    /// Lose the request: the sender sees a failure after this long, the receiver nothing.
    DropRequest(Duration),
    /// Deliver the request but lose the response: the receiver acts, the sender sees a
    /// failure.
    DropResponse,
    /// Send it after this long (reorders it against later requests).
    Delay(Duration),
}

/// Decides the fate of outbound requests; the fault-injection layer of the test harness
/// implements it (partitions, isolation, drops, delays, driven by a seed).
pub trait FaultInjector: Send + Sync + std::fmt::Debug {
    /// The fate of a request from `from` to `to` on `protocol`.
    fn fate(&self, from: PeerId, to: PeerId, protocol: Protocol) -> Fate;
}

impl NetConfig {
    /// A client configuration with a fresh identity.
    pub fn client() -> NetConfig {
        NetConfig {
            keypair: Keypair::generate_ed25519(),
            listen: Vec::new(),
            serve: false,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            frame_bytes_max_override: None,
            faults: None,
        }
    }
}

/// One inbound request, to be answered through `reply` (dropping it sends no answer).
#[derive(Debug)]
pub struct Inbound {
    /// The authenticated sender.
    pub peer: PeerId,
    /// The protocol it arrived on.
    pub protocol: Protocol,
    /// The frame (already checked against the protocol's size limit).
    pub bytes: Vec<u8>,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Vec<u8>>,
}

enum Command {
    Request {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        protocol: Protocol,
        bytes: Vec<u8>,
        done: oneshot::Sender<Result<Vec<u8>, NetError>>,
    },
    Shutdown,
}

/// Inbound frames the codec refused before decoding (oversize or truncated), per protocol
/// in the order raft, resolve, mutate, admin, watch.
#[derive(Debug, Default)]
pub struct RefusedFrames(pub [AtomicU64; 5]);

impl RefusedFrames {
    fn index(p: Protocol) -> usize {
        match p {
            Protocol::Raft => 0,
            Protocol::Resolve => 1,
            Protocol::Mutate => 2,
            Protocol::Admin => 3,
            Protocol::Watch => 4,
        }
    }

    /// How many frames of protocol `p` were refused so far.
    pub fn get(&self, p: Protocol) -> u64 {
        self.0[Self::index(p)].load(Ordering::Relaxed)
    }
}

/// A cheap, cloneable handle to the swarm task.
#[derive(Clone, Debug)]
pub struct NetHandle {
    faults: Option<Arc<dyn FaultInjector>>,
    refused: Arc<RefusedFrames>,
    cmd: mpsc::UnboundedSender<Command>,
    local: PeerId,
    inflight: Arc<Semaphore>,
    listen: watch::Receiver<Vec<Multiaddr>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Request { peer, protocol, .. } => write!(f, "Request({peer}, {protocol:?})"),
            Command::Shutdown => f.write_str("Shutdown"),
        }
    }
}

impl NetHandle {
    /// Frames refused by the codec, per protocol.
    pub fn refused_frames(&self) -> &RefusedFrames {
        &self.refused
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Sends one request and waits for its response. `addrs` are used when a connection must
    /// be dialed (they are re-supplied every time, since libp2p forgets an address after a
    /// failed dial).
    pub async fn request(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        protocol: Protocol,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        let fate = match &self.faults {
            Some(f) => f.fate(self.local, peer, protocol),
            None => Fate::Deliver,
        };
        let lost = |what: &str| NetError::Failed {
            peer,
            reason: format!("{what} (fault injection)"),
        };
        match fate {
            Fate::Deliver => self.send(peer, addrs, protocol, bytes).await,
            Fate::Delay(d) => {
                tokio::time::sleep(d).await;
                self.send(peer, addrs, protocol, bytes).await
            }
            Fate::DropRequest(after) => {
                tokio::time::sleep(after).await;
                Err(lost("request lost"))
            }
            Fate::DropResponse => {
                let _ = self.send(peer, addrs, protocol, bytes).await;
                Err(lost("response lost"))
            }
        }
    }

    async fn send(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        protocol: Protocol,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, NetError> {
        let _permit = self
            .inflight
            .acquire()
            .await
            .map_err(|_| NetError::Stopped)?;
        let (done, rx) = oneshot::channel();
        self.cmd
            .send(Command::Request {
                peer,
                addrs,
                protocol,
                bytes,
                done,
            })
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// The one typed request call: encodes `req`, checks it against the protocol's frame
    /// limit, sends it to `to`, waits at most `timeout` and decodes the answer (within the
    /// same limit). Every request an anchor, the resolver or the CLI makes goes through here
    /// or [`NetHandle::call_encoded`].
    pub async fn call<Req, Resp>(
        &self,
        to: &AnchorAddr,
        protocol: Protocol,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, CallError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let bytes = encode_request(protocol, req)?;
        self.call_encoded(to, protocol, bytes, timeout).await
    }

    /// [`NetHandle::call`] for a request encoded once and sent several times (retries);
    /// encode it with [`encode_request`].
    pub async fn call_encoded<Resp: DeserializeOwned>(
        &self,
        to: &AnchorAddr,
        protocol: Protocol,
        bytes: Vec<u8>,
        timeout: Duration,
    ) -> Result<Resp, CallError> {
        let request = self.request(to.peer, to.addrs.clone(), protocol, bytes);
        let answer = match tokio::time::timeout(timeout, request).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(CallError::Net(e)),
            Err(_) => {
                return Err(CallError::Timeout {
                    peer: to.peer,
                    ms: timeout.as_millis() as u64,
                })
            }
        };
        proto::codec::decode(&answer, protocol.frame_bytes_max()).map_err(|e| CallError::Decode {
            peer: to.peer,
            reason: e.to_string(),
        })
    }

    /// The addresses the swarm listens on, waiting until there is at least one when it was
    /// asked to listen.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let mut rx = self.listen.clone();
        let addrs = match rx.wait_for(|a| !a.is_empty()).await {
            Ok(a) => a.clone(),
            Err(_) => Vec::new(),
        };
        addrs
    }

    /// Stops the swarm task; pending requests fail with [`NetError::Stopped`].
    pub fn shutdown(&self) {
        let _ = self.cmd.send(Command::Shutdown);
    }
}

/// Builds the swarm and spawns its task. Returns the handle and, when `serve` is set, the
/// stream of inbound requests.
pub fn spawn(cfg: NetConfig) -> Result<(NetHandle, Option<mpsc::Receiver<Inbound>>), NetError> {
    let rr_config = request_response::Config::default()
        .with_request_timeout(cfg.request_timeout)
        .with_max_concurrent_streams(STREAMS_PER_CONNECTION_MAX);
    let refused = Arc::new(RefusedFrames::default());
    let rr = |name: &'static str, p: Protocol| {
        let support = if cfg.serve {
            ProtocolSupport::Full
        } else {
            ProtocolSupport::Outbound
        };
        Rr::with_codec(
            FrameCodec {
                max: cfg.frame_bytes_max_override.unwrap_or(p.frame_bytes_max()),
                protocol: p,
                refused: refused.clone(),
            },
            [(StreamProtocol::new(name), support)],
            rr_config.clone(),
        )
    };
    let behaviour = Behaviour {
        raft: rr(RAFT_PROTOCOL, Protocol::Raft),
        resolve: rr(RESOLVE_PROTOCOL, Protocol::Resolve),
        mutate: rr(MUTATE_PROTOCOL, Protocol::Mutate),
        admin: rr(ADMIN_PROTOCOL, Protocol::Admin),
        watch: rr(WATCH_PROTOCOL, Protocol::Watch),
    };
    let idle = cfg.idle_timeout;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(cfg.keypair.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| NetError::Setup(e.to_string()))?
        .with_behaviour(|_| behaviour)
        .map_err(|e| NetError::Setup(e.to_string()))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    for addr in &cfg.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Setup(format!("listen on {addr}: {e}")))?;
    }
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let (listen_tx, listen_rx) = watch::channel(Vec::new());
    let (inbound_tx, inbound_rx) = if cfg.serve {
        let (tx, rx) = mpsc::channel(INBOUND_QUEUE_MAX);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let local = *swarm.local_peer_id();
    let event_loop = EventLoop {
        swarm,
        cmd_rx,
        inbound_tx,
        listen_tx,
        pending: HashMap::new(),
        replies: FuturesUnordered::new(),
    };
    tokio::spawn(event_loop.run());
    let handle = NetHandle {
        faults: cfg.faults.clone(),
        refused,
        cmd: cmd_tx,
        local,
        inflight: Arc::new(Semaphore::new(OUTBOUND_INFLIGHT_MAX)),
        listen: listen_rx,
    };
    Ok((handle, inbound_rx))
}

type Reply = (Protocol, ResponseChannel<Vec<u8>>, Option<Vec<u8>>);

struct EventLoop {
    swarm: Swarm<Behaviour>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    inbound_tx: Option<mpsc::Sender<Inbound>>,
    listen_tx: watch::Sender<Vec<Multiaddr>>,
    pending: HashMap<(Protocol, OutboundRequestId), oneshot::Sender<Result<Vec<u8>, NetError>>>,
    replies: FuturesUnordered<BoxFuture<'static, Reply>>,
}

impl EventLoop {
    async fn run(mut self) {
        loop {
            tokio::select! {
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Command::Request { peer, addrs, protocol, bytes, done }) => {
                        let id = self.swarm.behaviour_mut().get(protocol)
                            .send_request_with_addresses(&peer, bytes, addrs);
                        self.pending.insert((protocol, id), done);
                    }
                    Some(Command::Shutdown) | None => break,
                },
                Some((protocol, channel, answer)) = self.replies.next(), if !self.replies.is_empty() => {
                    if let Some(bytes) = answer {
                        // Err means the requester gave up (timeout); nothing to do.
                        let _ = self.swarm.behaviour_mut().get(protocol).send_response(channel, bytes);
                    }
                }
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
            }
        }
        tracing::debug!("network task stopped");
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(ev) => {
                let (protocol, ev) = match ev {
                    BehaviourEvent::Raft(e) => (Protocol::Raft, e),
                    BehaviourEvent::Resolve(e) => (Protocol::Resolve, e),
                    BehaviourEvent::Mutate(e) => (Protocol::Mutate, e),
                    BehaviourEvent::Admin(e) => (Protocol::Admin, e),
                    BehaviourEvent::Watch(e) => (Protocol::Watch, e),
                };
                self.on_rr_event(protocol, ev);
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                self.listen_tx.send_modify(|a| a.push(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_tx.send_modify(|a| a.retain(|x| x != &address));
            }
            _ => {}
        }
    }

    fn on_rr_event(&mut self, protocol: Protocol, ev: request_response::Event<Vec<u8>, Vec<u8>>) {
        use request_response::{Event, Message};
        match ev {
            Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.on_inbound(peer, protocol, request, channel);
            }
            Event::Message {
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(done) = self.pending.remove(&(protocol, request_id)) {
                    let _ = done.send(Ok(response));
                }
            }
            Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(done) = self.pending.remove(&(protocol, request_id)) {
                    let _ = done.send(Err(NetError::Failed {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, protocol = protocol.as_str(), %error, "inbound request failed");
            }
            Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound(
        &mut self,
        peer: PeerId,
        protocol: Protocol,
        bytes: Vec<u8>,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let Some(tx) = &self.inbound_tx else { return };
        let (reply, rx) = oneshot::channel();
        match tx.try_send(Inbound {
            peer,
            protocol,
            bytes,
            reply,
        }) {
            Ok(()) => self
                .replies
                .push(rx.map(move |r| (protocol, channel, r.ok())).boxed()),
            Err(_) => {
                tracing::warn!(%peer, protocol = protocol.as_str(), "inbound queue full; request dropped")
            }
        }
    }
}
