//! The task that owns the libp2p swarm: five request-response behaviours, gossipsub on
//! anchors, dialing, and the hand-off of inbound requests to the anchor through a bounded
//! channel; it never awaits a channel, it polls the answers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::gossipsub;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use proto::msg::{
    ADMIN_PROTOCOL, MUTATE_PROTOCOL, RAFT_PROTOCOL, RESOLVE_PROTOCOL, WATCH_PROTOCOL,
};

use super::gossip::{self, Received};
use super::handle::Command;
use super::{
    FrameCodec, GossipRefused, Inbound, NetConfig, NetError, NetHandle, Protocol, RefusedFrames,
    INBOUND_QUEUE_MAX, OUTBOUND_INFLIGHT_MAX, STREAMS_PER_CONNECTION_MAX,
};

type Rr = request_response::Behaviour<FrameCodec>;

#[derive(NetworkBehaviour)]
struct Behaviour {
    raft: Rr,
    resolve: Rr,
    mutate: Rr,
    admin: Rr,
    watch: Rr,
    gossip: Toggle<gossipsub::Behaviour>,
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
        gossip: Toggle::from(match &cfg.gossip {
            Some(g) => Some(gossip::behaviour(&cfg.keypair, g)?),
            None => None,
        }),
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
    let (connected_tx, connected_rx) = watch::channel(HashSet::new());
    let gossip_refused = Arc::new(GossipRefused::default());
    let local = *swarm.local_peer_id();
    let event_loop = EventLoop {
        swarm,
        cmd_rx,
        inbound_tx,
        listen_tx,
        connected_tx,
        gossip_inbox: cfg.gossip.as_ref().map(|g| g.inbox.clone()),
        gossip_refused: gossip_refused.clone(),
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
        connected: connected_rx,
        gossip_refused,
    };
    Ok((handle, inbound_rx))
}

type Reply = (Protocol, ResponseChannel<Vec<u8>>, Option<Vec<u8>>);

struct EventLoop {
    swarm: Swarm<Behaviour>,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    inbound_tx: Option<mpsc::Sender<Inbound>>,
    listen_tx: watch::Sender<Vec<Multiaddr>>,
    connected_tx: watch::Sender<HashSet<PeerId>>,
    gossip_inbox: Option<mpsc::Sender<Received>>,
    gossip_refused: Arc<GossipRefused>,
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
                    Some(Command::Publish { bytes, done }) => {
                        let r = match self.swarm.behaviour_mut().gossip.as_mut() {
                            Some(g) => gossip::publish(g, bytes),
                            None => Err(NetError::NoGossip),
                        };
                        let _ = done.send(r);
                    }
                    Some(Command::Dial { peer, addrs }) => {
                        let opts = DialOpts::peer_id(peer)
                            .addresses(addrs)
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        if let Err(e) = self.swarm.dial(opts) {
                            tracing::debug!(%peer, error = %e, "dial not started");
                        }
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
            SwarmEvent::Behaviour(BehaviourEvent::Gossip(ev)) => {
                let b = self.swarm.behaviour_mut();
                if let (Some(g), Some(inbox)) = (b.gossip.as_mut(), &self.gossip_inbox) {
                    gossip::on_event(g, ev, inbox, &self.gossip_refused);
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.connected_tx.send_if_modified(|c| c.insert(peer_id));
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected_tx.send_if_modified(|c| c.remove(&peer_id));
            }
            SwarmEvent::Behaviour(ev) => {
                let (protocol, ev) = match ev {
                    BehaviourEvent::Raft(e) => (Protocol::Raft, e),
                    BehaviourEvent::Resolve(e) => (Protocol::Resolve, e),
                    BehaviourEvent::Mutate(e) => (Protocol::Mutate, e),
                    BehaviourEvent::Admin(e) => (Protocol::Admin, e),
                    BehaviourEvent::Watch(e) => (Protocol::Watch, e),
                    BehaviourEvent::Gossip(_) => return,
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
