//! [`NetHandle`]: the cheap, cloneable handle everyone holds to the swarm task; it sends
//! requests (through the test fault injector when one is set) over a command channel.

use std::collections::HashSet;
use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use super::{Fate, FaultInjector, GossipRefused, NetError, Protocol, RefusedFrames};

/// What the handle asks of the swarm task.
pub(super) enum Command {
    Request {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        protocol: Protocol,
        bytes: Vec<u8>,
        done: oneshot::Sender<Result<Vec<u8>, NetError>>,
    },
    Shutdown,
    Publish {
        bytes: Vec<u8>,
        done: oneshot::Sender<Result<(), NetError>>,
    },
    Dial {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    },
}

/// A cheap, cloneable handle to the swarm task.
#[derive(Clone, Debug)]
pub struct NetHandle {
    pub(super) faults: Option<Arc<dyn FaultInjector>>,
    pub(super) refused: Arc<RefusedFrames>,
    pub(super) cmd: mpsc::UnboundedSender<Command>,
    pub(super) local: PeerId,
    pub(super) inflight: Arc<Semaphore>,
    pub(super) listen: watch::Receiver<Vec<Multiaddr>>,
    pub(super) connected: watch::Receiver<HashSet<PeerId>>,
    pub(super) gossip_refused: Arc<GossipRefused>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Request { peer, protocol, .. } => write!(f, "Request({peer}, {protocol:?})"),
            Command::Shutdown => f.write_str("Shutdown"),
            Command::Publish { bytes, .. } => write!(f, "Publish({} bytes)", bytes.len()),
            Command::Dial { peer, .. } => write!(f, "Dial({peer})"),
        }
    }
}

impl NetHandle {
    /// Frames refused by the codec, per protocol.
    pub fn refused_frames(&self) -> &RefusedFrames {
        &self.refused
    }

    /// Gossip messages refused on receipt, by reason.
    pub fn gossip_refused(&self) -> &GossipRefused {
        &self.gossip_refused
    }

    /// Publishes `bytes` on the load-summary topic (the swarm signs the message).
    /// [`NetError::NoPeers`] while no connected peer subscribes to it.
    pub async fn publish(&self, bytes: Vec<u8>) -> Result<(), NetError> {
        let (done, rx) = oneshot::channel();
        self.cmd
            .send(Command::Publish { bytes, done })
            .map_err(|_| NetError::Stopped)?;
        rx.await.map_err(|_| NetError::Stopped)?
    }

    /// Dials `peer` at `addrs` unless connected or dialing already; does not wait.
    pub fn dial(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let _ = self.cmd.send(Command::Dial { peer, addrs });
    }

    /// True while at least one connection to `peer` is open.
    pub fn is_connected(&self, peer: &PeerId) -> bool {
        self.connected.borrow().contains(peer)
    }

    /// Peers with at least one open connection.
    pub fn connected_peers(&self) -> Vec<PeerId> {
        self.connected.borrow().iter().copied().collect()
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
