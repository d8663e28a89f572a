//! Requests the harness makes to single anchors: admin calls (status, scope info) over its
//! own client swarm, direct mutations, raw frames, resolver clients and `/metrics`.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use proto::msg::{
    AdminRequest, AdminResponse, AnchorStatus, Answer, MutateRequest, MutateResponse,
    ResolveRequest, ResolveResponse,
};
use proto::{Name, ReadLevel, ScopeId, SignedMutation};
use resolver::net::{NetHandle, Protocol};
use resolver::{AnchorAddr, Client, ClientConfig};

use super::{Cluster, STATUS_TIMEOUT};
use crate::http::{http_get, metric_value};

impl Cluster {
    /// Anchor `i` as the harness dials it: its peer id and its base address.
    fn anchor_addr(&self, i: usize) -> Result<AnchorAddr> {
        let a = &self.anchors[i];
        let peer = a.peer.ok_or_else(|| anyhow!("anchor {i} never started"))?;
        Ok(AnchorAddr {
            peer,
            addrs: vec![a.base_addr()],
        })
    }

    /// The status of anchor `i` over the admin protocol.
    pub async fn status(&self, i: usize) -> Result<AnchorStatus> {
        let to = self.anchor_addr(i)?;
        let answer = self
            .net
            .call(&to, Protocol::Admin, &AdminRequest::Status, STATUS_TIMEOUT)
            .await
            .map_err(|e| anyhow!("anchor {i}: status: {e}"))?;
        match answer {
            AdminResponse::Status(s) => Ok(s),
            other => bail!("anchor {i} answered status with {other:?}"),
        }
    }

    /// One admin call to anchor `i` over the harness's own client swarm.
    pub async fn admin(&self, i: usize, req: &AdminRequest) -> Result<AdminResponse> {
        let to = self.anchor_addr(i)?;
        self.net
            .call(&to, Protocol::Admin, req, STATUS_TIMEOUT)
            .await
            .map_err(|e| anyhow!("anchor {i}: {e}"))
    }

    /// Sends one signed mutation to anchor `i` directly (no routing, no retries).
    pub async fn mutate_at(&self, i: usize, mutation: SignedMutation) -> Result<MutateResponse> {
        let to = self.anchor_addr(i)?;
        let req = MutateRequest {
            mutation,
            forwarded: false,
        };
        self.net
            .call(&to, Protocol::Mutate, &req, Duration::from_secs(10))
            .await
            .map_err(|e| anyhow!("anchor {i}: mutation: {e}"))
    }

    /// Asks anchor `i` alone about `name` in scope `scope` at `level` (no walk, no
    /// retries, no other member): what that anchor's replica says. The answer's signature
    /// is not checked; the harness asked this anchor over its authenticated connection.
    pub async fn resolve_at(
        &self,
        i: usize,
        scope: ScopeId,
        name: &Name,
        level: ReadLevel,
    ) -> Result<Answer> {
        let to = self.anchor_addr(i)?;
        let req = ResolveRequest {
            name: name.clone(),
            level,
            scope,
        };
        let answer = self
            .net
            .call(&to, Protocol::Resolve, &req, STATUS_TIMEOUT)
            .await
            .map_err(|e| anyhow!("anchor {i}: resolve {name}: {e}"))?;
        match answer {
            ResolveResponse::Signed(signed) => {
                proto::codec::decode(&signed.body, proto::limits::CLIENT_FRAME_BYTES_MAX)
                    .map_err(|e| anyhow!("anchor {i}: resolve {name}: undecodable answer: {e}"))
            }
            ResolveResponse::Error(e) => bail!("anchor {i}: resolve {name} in {scope}: {e}"),
        }
    }

    /// Sends one raw frame to anchor `i` on `protocol` from `net` (a client swarm of the
    /// test's own) and returns the raw answer.
    pub async fn raw_request(
        &self,
        net: &NetHandle,
        i: usize,
        protocol: Protocol,
        bytes: Vec<u8>,
    ) -> Result<Vec<u8>, resolver::net::NetError> {
        let a = &self.anchors[i];
        let peer = a.peer.expect("anchor started");
        net.request(peer, vec![a.base_addr()], protocol, bytes)
            .await
    }

    /// A resolver client whose trust anchors are all anchors.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::connect(&self.addrs()?, ClientConfig::default()).await?)
    }

    /// A resolver client that knows only anchor `i` (so replica reads go to it alone).
    pub async fn client_of(&self, i: usize) -> Result<Client> {
        let cfg = ClientConfig {
            cache_entries_max: 0,
            ..ClientConfig::default()
        };
        Ok(Client::connect(&[self.anchors[i].addr()?], cfg).await?)
    }

    /// A resolver client whose trust anchors are the anchors `members` (the root's).
    pub async fn client_trusting(&self, members: &[usize], cfg: ClientConfig) -> Result<Client> {
        Ok(Client::connect(&self.addrs_of(members)?, cfg).await?)
    }

    /// The Prometheus text of anchor `i`.
    pub async fn metrics(&self, i: usize) -> Result<String> {
        http_get(self.anchors[i].http(), "/metrics").await
    }

    /// `metric_value` summed over every running anchor.
    pub async fn metric_sum(&mut self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        let mut sum = 0.0;
        for i in self.running() {
            sum += metric_value(&self.metrics(i).await?, name, labels);
        }
        Ok(sum)
    }
}
