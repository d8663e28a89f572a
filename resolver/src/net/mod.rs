//! The libp2p layer shared by anchors and resolvers: one swarm, four request-response
//! protocols (raft, resolve, mutate, admin, watch), length-prefixed frames checked against
//! `proto::limits` before a byte is allocated.
//!
//! The swarm lives in one task that owns it ([`spawn`]); everyone else holds a cheap
//! [`NetHandle`] and talks to it through a command channel. Outbound requests are bounded by
//! a semaphore; inbound requests (on anchors) are handed out through a bounded channel and
//! answered through a oneshot, which the swarm task polls — it never awaits a channel.
//!
//! # Layout
//! - this file: the protocols, the configuration, inbound requests and the counters;
//! - `handle` — [`NetHandle`]: what everyone holds to send requests;
//! - `call` — [`NetHandle::call`]: the one typed request call and its [`CallError`];
//! - `frame` — [`FrameCodec`]: length-prefixed, size-checked frames;
//! - `gossip` — gossipsub on anchors: the load-summary topic, checked on receipt;
//! - `swarm` — [`spawn`]: the task that owns the swarm.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

use proto::limits::{CLIENT_FRAME_BYTES_MAX, RAFT_FRAME_BYTES_MAX};

mod call;
mod frame;
mod gossip;
mod handle;
mod swarm;

pub use call::{encode_request, CallError};
pub use frame::FrameCodec;
pub use gossip::{GossipConfig, GossipRefused, Received};
pub use handle::NetHandle;
pub use swarm::spawn;

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
    /// Nothing was published: no connected peer is subscribed to the topic (yet).
    #[error("no peer subscribed to the topic")]
    NoPeers,
    /// Gossipsub refused to publish.
    #[error("publish failed: {reason}")]
    Publish {
        /// What gossipsub said.
        reason: String,
    },
    /// This swarm was built without gossip.
    #[error("gossip is not enabled on this node")]
    NoGossip,
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
    /// Gossipsub (load summaries): anchors only; `None` for clients.
    pub gossip: Option<GossipConfig>,
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
            gossip: None,
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

/// Inbound frames the codec refused before decoding (oversize or truncated), per protocol
/// in the order raft, resolve, mutate, admin, watch.
#[derive(Debug, Default)]
pub struct RefusedFrames(pub [AtomicU64; 5]);

impl RefusedFrames {
    pub(crate) fn index(p: Protocol) -> usize {
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
