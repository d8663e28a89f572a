//! The anchor's inbound side: every request from the swarm is decoded here (the codec has
//! checked its size), dispatched to the handler of its protocol, answered, timed, and, when
//! refused, counted once by protocol and reason.
//!
//! One file per protocol: `raft` (a scope group's RPCs, alone or coalesced), `resolve`
//! (signed answers and referrals), `mutate` (propose here or forward to the leader),
//! `watch` (long polls of a prefix's changes), `admin` (status, scope creation and
//! information, child-scope seeds, snapshots; `learn` the ranges a delegated child split
//! off); `quiesce` a leader's request that a replica sleep, and liveness pings. `host` gives the delegation code what it
//! needs of this anchor.

mod admin;
mod host;
mod learn;
mod members;
mod mutate;
mod quiesce;
mod raft;
mod resolve;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use libp2p::identity::Keypair;
use libp2p::PeerId;
use proto::{codec, AnchorInfo, WireError};
use resolver::clock::SharedClock;
use resolver::net::{Inbound, NetHandle, Protocol};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::delegation::Receiver;
use crate::gossip::SharedBook;
use crate::metrics::Metrics;
use crate::registry::Registry;
use crate::scope::sig_cache::SigCache;

/// Inbound requests handled at once; more wait in the network's bounded queue.
const HANDLERS_MAX: usize = 1024;

/// What the handlers are built from.
pub(crate) struct Parts {
    /// The hosted replicas.
    pub registry: Arc<Registry>,
    /// Counters and latencies.
    pub metrics: Metrics,
    /// The swarm, to forward mutations to a scope's leader.
    pub net: NetHandle,
    /// The identity key answers are signed with.
    pub keypair: Keypair,
    /// This anchor's peer id and addresses.
    pub info: AnchorInfo,
    /// The placement labels of `anchor.toml`.
    pub labels: BTreeMap<String, String>,
    /// Signatures already checked.
    pub verified: Arc<SigCache>,
    /// Wall-clock time (mutation expiry, request meters).
    pub clock: SharedClock,
    /// The load summaries of the anchors this one hears from.
    pub peers: SharedBook,
}

/// The handlers of the five protocols. Cheap to clone.
#[derive(Clone)]
pub struct Server {
    inner: Arc<Shared>,
}

struct Shared {
    registry: Arc<Registry>,
    metrics: Metrics,
    net: NetHandle,
    keypair: Keypair,
    peer_id: PeerId,
    info: AnchorInfo,
    labels: BTreeMap<String, String>,
    verified: Arc<SigCache>,
    clock: SharedClock,
    peers: SharedBook,
    /// Child-scope seeds being received.
    receiver: Receiver,
    /// This anchor's incarnation (its start time, ms), the answer to liveness pings.
    incarnation: u64,
}

fn encode_or_empty<T: Serialize>(v: &T) -> Vec<u8> {
    codec::encode(v).unwrap_or_default()
}

impl Server {
    /// Handlers over `parts`.
    pub(crate) fn new(parts: Parts) -> Server {
        Server {
            inner: Arc::new(Shared {
                peer_id: parts.keypair.public().to_peer_id(),
                registry: parts.registry,
                metrics: parts.metrics,
                net: parts.net,
                keypair: parts.keypair,
                info: parts.info,
                labels: parts.labels,
                verified: parts.verified,
                incarnation: parts.clock.unix_ms(),
                clock: parts.clock,
                peers: parts.peers,
                receiver: Receiver::default(),
            }),
        }
    }

    /// The peer book: the load summaries of the anchors this one hears from (itself
    /// included), for placement decisions. Lock it briefly; never across an await.
    pub fn peer_book(&self) -> &SharedBook {
        &self.inner.peers
    }

    /// The wall clock the handlers use.
    pub(crate) fn clock(&self) -> &SharedClock {
        &self.inner.clock
    }

    /// Answers inbound requests until the swarm stops, at most [`HANDLERS_MAX`] at once.
    pub(crate) async fn serve(self, mut rx: tokio::sync::mpsc::Receiver<Inbound>) {
        let permits = Arc::new(Semaphore::new(HANDLERS_MAX));
        while let Some(inbound) = rx.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let server = self.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let protocol = inbound.protocol;
                let answer = server.handle(inbound.peer, protocol, inbound.bytes).await;
                let _ = inbound.reply.send(answer);
                server
                    .inner
                    .metrics
                    .request_seconds
                    .with_label_values(&[protocol.as_str()])
                    .observe(started.elapsed().as_secs_f64());
                drop(permit);
            });
        }
    }

    /// Counts one refused request.
    fn refuse(&self, protocol: Protocol, reason: &str) {
        self.inner
            .metrics
            .refused
            .with_label_values(&[protocol.as_str(), reason])
            .inc();
    }

    /// Decodes a request (or a payload inside one), counting a refusal when it does not.
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
}
