//! This anchor as the delegation code sees it ([`Host`]): its replicas and identity, the
//! delegation counters, and requests to other anchors, those to itself handled in place
//! (libp2p does not dial its own peer id).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use proto::{ScopeDescriptor, ScopeId};
use resolver::net::{self, CallError, Protocol};
use resolver::AnchorAddr;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Server;
use crate::delegation::Host;
use crate::raft::sm::Seed;
use crate::raft::NodeId;
use crate::replica::Replica;
use crate::AnchorError;

impl Host for Server {
    fn node_id(&self) -> NodeId {
        self.inner.registry.node_id()
    }

    fn peer_id(&self) -> PeerId {
        self.inner.peer_id
    }

    fn labels(&self) -> &BTreeMap<String, String> {
        &self.inner.labels
    }

    fn addrs(&self) -> Vec<String> {
        self.inner.info.addrs.clone()
    }

    fn anchors_heard(&self, now_ms: u64) -> Vec<crate::scope::place::AnchorLoad> {
        let Ok(book) = self.inner.peers.lock() else {
            return Vec::new();
        };
        book.live(now_ms)
            .map(|e| crate::scope::place::AnchorLoad {
                peer: e.summary.anchor.clone(),
                addrs: e.summary.addrs.clone(),
                labels: e.summary.labels.clone(),
                scopes: e.summary.scopes,
                leaderships: e.summary.leaderships,
            })
            .collect()
    }

    fn replicas(&self) -> crate::registry::Replicas {
        self.inner.registry.all()
    }

    fn awake_replicas(&self) -> crate::registry::Replicas {
        self.inner.registry.awake()
    }

    fn busy_replicas(&self, now_s: u64) -> Vec<Arc<Replica>> {
        self.inner.registry.busy(now_s)
    }

    fn replica(&self, id: &ScopeId) -> Option<Arc<Replica>> {
        self.inner.registry.get(id)
    }

    fn now_ms(&self) -> u64 {
        self.inner.clock.unix_ms()
    }

    fn count(&self, step: &str, outcome: &str) {
        self.inner
            .metrics
            .delegations
            .with_label_values(&[step, outcome])
            .inc();
    }

    fn count_split(&self, kind: &str, reason: &str, outcome: &str) {
        self.inner
            .metrics
            .splits
            .with_label_values(&[kind, reason, outcome])
            .inc();
    }

    fn count_learn(&self, outcome: &str) {
        self.inner
            .metrics
            .ranges_learned
            .with_label_values(&[outcome])
            .inc();
    }

    fn count_merge(&self, outcome: &str) {
        self.inner
            .metrics
            .merges
            .with_label_values(&[outcome])
            .inc();
    }

    fn remove_scope(&self, id: &ScopeId) -> impl Future<Output = Result<(), AnchorError>> + Send {
        self.inner.registry.remove(id)
    }

    fn call<Req, Resp>(
        &self,
        to: &AnchorAddr,
        protocol: Protocol,
        req: &Req,
        timeout: Duration,
    ) -> impl Future<Output = Result<Resp, CallError>> + Send
    where
        Req: Serialize + Sync,
        Resp: DeserializeOwned + Send,
    {
        let encoded = net::encode_request(protocol, req);
        let to = to.clone();
        async move {
            let bytes = encoded?;
            if to.peer != self.inner.peer_id {
                return self
                    .inner
                    .net
                    .call_encoded(&to, protocol, bytes, timeout)
                    .await;
            }
            let answer = tokio::time::timeout(timeout, self.handle(to.peer, protocol, bytes))
                .await
                .map_err(|_| CallError::Timeout {
                    peer: to.peer,
                    ms: timeout.as_millis() as u64,
                })?;
            proto::codec::decode(&answer, protocol.frame_bytes_max()).map_err(|e| {
                CallError::Decode {
                    peer: to.peer,
                    reason: e.to_string(),
                }
            })
        }
    }

    fn host_seeded(
        &self,
        seed: &Seed<'_>,
    ) -> impl Future<Output = Result<Arc<Replica>, AnchorError>> + Send {
        self.inner.registry.host_seeded(seed)
    }

    fn host_empty(
        &self,
        descriptor: &ScopeDescriptor,
    ) -> impl Future<Output = Result<Arc<Replica>, AnchorError>> + Send {
        self.inner.registry.host_empty(descriptor)
    }
}
