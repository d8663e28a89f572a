//! The admin protocol: this anchor's status, creating a scope, one scope in detail, a chunk
//! of a child scope's seed, and building snapshots.

use std::sync::Arc;

use libp2p::PeerId;
use proto::limits::STATUS_PEERS_BYTES_MAX;
use proto::msg::{AdminRequest, AdminResponse, AnchorStatus, PeerLoad, ScopeInfo, ScopeTarget};
use proto::{codec, Name, WireError};
use resolver::net::Protocol;

use super::Server;
use crate::replica::Replica;
use crate::scope::decide;

/// Bytes of delegations one ScopeInfo answer carries (the policy takes up to 64 KiB more).
const SCOPE_INFO_DELEGATION_BYTES_MAX: usize = 128 * 1024;

impl Server {
    pub(super) async fn handle_admin(&self, peer: PeerId, bytes: &[u8]) -> AdminResponse {
        let req: AdminRequest = match self.decode(Protocol::Admin, bytes) {
            Ok(r) => r,
            Err(e) => return AdminResponse::Error(e),
        };
        let registry = &self.inner.registry;
        match req {
            AdminRequest::Status => AdminResponse::Status(self.status()),
            AdminRequest::CreateScope {
                descriptor,
                policy_toml,
                bootstrap,
            } => match registry
                .create_scope(descriptor, policy_toml, bootstrap)
                .await
            {
                Ok(()) => AdminResponse::Ok,
                Err(e) => AdminResponse::Error(WireError::Refused {
                    reason: e.to_string(),
                }),
            },
            AdminRequest::ScopeInfo { target } => {
                self.scan_size(&target).await;
                match self.scope_info(&target) {
                    Ok(info) => AdminResponse::Scope(Box::new(info)),
                    Err(e) => AdminResponse::Error(e),
                }
            }
            AdminRequest::SeedScope(seed) => {
                match self.inner.receiver.seed_scope(self, peer, seed).await {
                    Ok(()) => AdminResponse::Ok,
                    Err(e) => {
                        self.refuse(Protocol::Admin, decide::refusal_label(&e));
                        AdminResponse::Error(e)
                    }
                }
            }
            AdminRequest::LearnRange(learn) => self.learn_range(learn).await,
            AdminRequest::JoinScope {
                descriptor,
                labels_required,
            } => self.join_scope(peer, descriptor, labels_required).await,
            AdminRequest::LeaveScope { scope } => self.leave_scope(peer, scope),
            AdminRequest::SignMembers { scope } => self.sign_members(peer, scope),
            AdminRequest::ChildMembers(req) => self.child_members(req).await,
            AdminRequest::Campaign {
                scope,
                after_ms,
                within_ms,
            } => self.campaign(peer, scope, after_ms, within_ms),
            AdminRequest::Snapshot => match registry.snapshot_all().await {
                Ok(()) => AdminResponse::Ok,
                Err(e) => AdminResponse::Error(WireError::Unavailable {
                    reason: e.to_string(),
                }),
            },
        }
    }

    /// The replica a target names, if hosted here.
    fn target_replica(&self, target: &ScopeTarget) -> Option<Arc<Replica>> {
        match target {
            ScopeTarget::Id(id) => self.inner.registry.get(id),
            ScopeTarget::Name(name) => self.inner.registry.governing(name),
        }
    }

    /// Makes the target replica's size scan fresh on a blocking thread (it reads up to
    /// [`crate::replica::SIZE_SCAN_NAMES_MAX`] records), so [`Server::scope_info`] finds it
    /// without reading them on an async worker.
    async fn scan_size(&self, target: &ScopeTarget) {
        let Some(r) = self.target_replica(target) else {
            return;
        };
        let now_ms = self.inner.clock.unix_ms();
        if r.fresh_size_scan(now_ms).is_none() {
            let _ = tokio::task::spawn_blocking(move || r.refresh_size_scan(now_ms)).await;
        }
    }

    /// One hosted scope in detail (with its split view; the size scan is made here when
    /// none is fresh).
    pub fn scope_info(&self, target: &ScopeTarget) -> Result<ScopeInfo, WireError> {
        let Some(r) = self.target_replica(target) else {
            let name = match target {
                ScopeTarget::Name(n) => n.clone(),
                ScopeTarget::Id(_) => Name::root(),
            };
            return Err(WireError::NoScope { name });
        };
        let view = r.state.view();
        let active = view.writable();
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
        let now_ms = self.inner.clock.unix_ms();
        Ok(ScopeInfo {
            status: r.status(),
            descriptor: view.descriptor.unwrap_or_else(|| r.descriptor.clone()),
            parent: view.parent,
            policy_toml: view.policy_toml,
            delegations,
            active,
            load: r.load.window(now_ms / 1000),
            split: r.split_view(now_ms).map(|mut v| {
                v.merges = crate::delegation::merge_lines(self, &r, now_ms);
                v
            }),
            member_change: view.member_change,
        })
    }

    /// This anchor's status, as `anchorage status` shows it.
    pub fn status(&self) -> AnchorStatus {
        let scopes = self
            .inner
            .registry
            .all()
            .iter()
            .map(|r| r.status())
            .collect();
        let (peers, peers_omitted) = self.peer_loads();
        AnchorStatus {
            peer_id: self.inner.peer_id.to_base58(),
            node_id: self.inner.registry.node_id(),
            addrs: self.inner.info.addrs.clone(),
            labels: self.inner.labels.clone(),
            scopes,
            peers,
            peers_omitted,
        }
    }

    /// The live summaries of the peer book, as many as fit [`STATUS_PEERS_BYTES_MAX`], and
    /// how many were left out.
    fn peer_loads(&self) -> (Vec<PeerLoad>, u32) {
        let now_ms = self.inner.clock.unix_ms();
        let Ok(book) = self.inner.peers.lock() else {
            return (Vec::new(), 0);
        };
        let mut out = Vec::new();
        let (mut bytes, mut omitted) = (0, 0u32);
        for e in book.live(now_ms) {
            bytes += codec::encode(&e.summary).map_or(0, |b| b.len());
            if bytes > STATUS_PEERS_BYTES_MAX {
                omitted += 1;
                continue;
            }
            out.push(PeerLoad {
                summary: e.summary.clone(),
                age_ms: e.age_ms(now_ms),
            });
        }
        (out, omitted)
    }
}
