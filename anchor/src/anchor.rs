//! One running anchor ([`Anchor`]): start-up (identity, database, swarm, hosted replicas,
//! inbound handlers, delegation driver, HTTP port), shutdown, and the calls the command line
//! and the tests make on it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use proto::msg::{AnchorStatus, ScopeInfo, ScopeTarget};
use proto::{AnchorInfo, ScopeDescriptor, WireError};
use resolver::clock::{self, SharedClock};
use resolver::net::{self, NetConfig, NetHandle, Protocol};

use crate::config::AnchorConfig;
use crate::gossip::{self, PeerBook, SharedBook};
use crate::identity;
use crate::metrics::Metrics;
use crate::quiescer::Quiescer;
use crate::raft::log_store::FlusherHandle;
use crate::raft::network::Coalescer;
use crate::registry::{Plumbing, Registry};
use crate::replica::Replica;
use crate::scope::sig_cache::SigCache;
use crate::server::{self, Server};
use crate::AnchorError;

/// Options of [`Anchor::start_with`] that tests set.
#[derive(Clone, Debug)]
pub struct StartOptions {
    /// Fault injection on this anchor's outbound requests.
    pub faults: Option<Arc<dyn resolver::net::FaultInjector>>,
    /// The wall clock (mutation expiry, proposal times, request meters).
    pub clock: SharedClock,
}

impl Default for StartOptions {
    fn default() -> StartOptions {
        StartOptions {
            faults: None,
            clock: clock::system(),
        }
    }
}

/// A running anchor. Cheap to clone.
#[derive(Clone)]
pub struct Anchor {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    net: NetHandle,
    peer_id: PeerId,
    info: AnchorInfo,
    registry: Arc<Registry>,
    server: Server,
    metrics: Metrics,
    http_addr: RwLock<Option<SocketAddr>>,
    /// Frames the codec refused, per protocol, as last copied into the metrics.
    codec_refused_seen: Mutex<[u64; 5]>,
    /// Gossip messages refused, per reason, as last copied into the metrics.
    gossip_refused_seen: Mutex<Vec<u64>>,
    /// The load summaries of the anchors this one hears from.
    peers: SharedBook,
    stop: tokio::sync::watch::Sender<bool>,
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
        let join = cfg
            .join
            .iter()
            .map(|j| {
                resolver::AnchorAddr::parse(j).map_err(|e| AnchorError::Config {
                    path: "join".into(),
                    reason: format!("{j}: {e}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (gossip_tx, gossip_rx) = tokio::sync::mpsc::channel(gossip::INBOX_MAX);
        let (net, inbound) = net::spawn(NetConfig {
            keypair: keypair.clone(),
            listen: vec![listen],
            serve: true,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            frame_bytes_max_override: None,
            faults: opts.faults,
            gossip: Some(resolver::net::GossipConfig {
                heartbeat: Duration::from_millis(cfg.gossip.heartbeat_ms),
                inbox: gossip_tx,
            }),
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
        let verified = Arc::new(SigCache::default());
        let peers: SharedBook = Arc::new(Mutex::new(PeerBook::new(
            cfg.gossip.expire_intervals,
            proto::limits::PEER_BOOK_MAX,
        )));
        let coalescer = Coalescer::new(net.clone(), coalesce);
        let registry = Arc::new(
            Registry::open(Plumbing {
                db: db.clone(),
                flusher,
                net: net.clone(),
                coalescer: coalescer.clone(),
                verified: verified.clone(),
                raft_config,
                node_id: identity::node_id(&peer_id),
                peer_id: peer_id.to_base58(),
                clock: opts.clock.clone(),
                load: crate::scope::load::LoadConfig {
                    peak_window_ms: cfg.load.peak_window_s.saturating_mul(1000),
                    ..Default::default()
                },
                wakes: metrics.scope_wakes.clone(),
                hibernations: metrics.scope_hibernations.clone(),
                hibernated: Arc::default(),
                busy: Arc::default(),
            })
            .await?,
        );
        let quiescer = Quiescer::new(
            registry.clone(),
            coalescer,
            net.clone(),
            metrics.clone(),
            &cfg.raft,
        );
        let server = Server::new(server::Parts {
            registry: registry.clone(),
            metrics: metrics.clone(),
            net: net.clone(),
            keypair,
            info: info.clone(),
            labels: cfg.labels.clone(),
            verified,
            clock: opts.clock.clone(),
            peers: peers.clone(),
        });
        let anchor = Anchor {
            inner: Arc::new(Inner {
                db,
                net,
                peer_id,
                info,
                registry,
                server,
                metrics,
                http_addr: RwLock::new(None),
                codec_refused_seen: Mutex::new([0; 5]),
                gossip_refused_seen: Mutex::new(Vec::new()),
                peers: peers.clone(),
                stop: tokio::sync::watch::channel(false).0,
            }),
        };
        if let Some(rx) = inbound {
            tokio::spawn(anchor.inner.server.clone().serve(rx));
        }
        tokio::spawn(quiescer.run(anchor.inner.stop.subscribe()));
        tokio::spawn(crate::delegation::drive(
            anchor.inner.server.clone(),
            anchor.inner.stop.subscribe(),
        ));
        tokio::spawn(crate::delegation::propose_splits(
            anchor.inner.server.clone(),
            anchor.inner.stop.subscribe(),
        ));
        tokio::spawn(crate::delegation::report_loads(
            anchor.inner.server.clone(),
            anchor.inner.stop.subscribe(),
        ));
        tokio::spawn(crate::delegation::merge_scopes(
            anchor.inner.server.clone(),
            anchor.inner.stop.subscribe(),
        ));
        tokio::spawn(crate::delegation::push_ranges(
            anchor.inner.server.clone(),
            anchor.inner.stop.subscribe(),
        ));
        tokio::spawn(crate::delegation::forget_stale_ranges(
            anchor.inner.server.clone(),
            anchor.inner.stop.subscribe(),
        ));
        tokio::spawn(crate::delegation::move_members(
            anchor.inner.server.clone(),
            anchor.inner.stop.subscribe(),
        ));
        tokio::spawn(crate::delegation::rebalance(
            anchor.inner.server.clone(),
            cfg.placement.clone(),
            anchor.inner.stop.subscribe(),
        ));
        tokio::spawn(gossip::run(
            gossip::Parts {
                net: anchor.inner.net.clone(),
                book: peers,
                settings: cfg.gossip.clone(),
                join,
                registry: anchor.inner.registry.clone(),
                peer_id,
                labels: cfg.labels.clone(),
                addrs: anchor.inner.info.addrs.clone(),
                data_dir: cfg.data_dir.clone(),
                metrics: anchor.inner.metrics.clone(),
                clock: opts.clock,
            },
            gossip_rx,
            anchor.inner.stop.subscribe(),
        ));
        let http =
            crate::http::serve(anchor.clone(), cfg.http, anchor.inner.stop.subscribe()).await?;
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

    /// The peer book: what this anchor believes about the load of every anchor it hears
    /// from (itself included). Lock it briefly; never across an await.
    pub fn peer_book(&self) -> &SharedBook {
        &self.inner.peers
    }

    /// Hosted replicas.
    pub fn replicas(&self) -> Vec<Arc<Replica>> {
        self.inner.registry.all().to_vec()
    }

    /// Stops every Raft group and the swarm, and flushes the database.
    pub async fn shutdown(&self) {
        self.inner.registry.stop_groups().await;
        self.inner.net.shutdown();
        self.inner.stop.send_replace(true);
        self.inner.registry.forget_all();
        let _ = self.inner.db.flush_async().await;
    }

    /// Handles one inbound request and returns the encoded answer.
    pub async fn handle(&self, peer: PeerId, protocol: Protocol, bytes: Vec<u8>) -> Vec<u8> {
        self.inner.server.handle(peer, protocol, bytes).await
    }

    /// One hosted scope in detail.
    pub fn scope_info(&self, target: &ScopeTarget) -> Result<ScopeInfo, WireError> {
        self.inner.server.scope_info(target)
    }

    /// This anchor's status, as `anchorage status` shows it.
    pub fn status(&self) -> AnchorStatus {
        self.inner.server.status()
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
        self.refresh_gossip_gauges();
        let me = self.inner.registry.node_id();
        let now_ms = self.inner.server.clock().unix_ms();
        let (mut leaders, mut followers, mut terms) = (0i64, 0i64, 0u64);
        let mut shown = Vec::new();
        for r in self.inner.registry.all().iter() {
            let (term, leads) = r.with_metrics(|m| (m.current_term, m.current_leader == Some(me)));
            terms = terms.saturating_add(term);
            if leads {
                leaders += 1;
            } else {
                followers += 1;
            }
            if !r.is_hibernated() {
                let l = r.load.window(now_ms / 1000);
                shown.push((l.reads.saturating_add(l.writes), leads, r.clone()));
            }
        }
        g.scopes.with_label_values(&["leader"]).set(leaders);
        g.scopes.with_label_values(&["follower"]).set(followers);
        g.scope_terms.set(i64::try_from(terms).unwrap_or(i64::MAX));
        // Per-scope series for the busiest scopes whose group runs, leaders first among
        // equals; the others' series are dropped.
        shown.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.id.cmp(&b.2.id)));
        shown.truncate(crate::metrics::SCOPE_SERIES_MAX);
        for gauge in g.per_scope() {
            gauge.reset();
        }
        for (_, leads, r) in shown {
            let m = r.metrics().borrow().clone();
            let id = r.id.to_hex();
            g.scope_term
                .with_label_values(&[&id])
                .set(m.current_term as i64);
            g.scope_leader
                .with_label_values(&[&id])
                .set(i64::from(leads));
            g.scope_applied
                .with_label_values(&[&id])
                .set(m.last_applied.map_or(0, |l| l.index) as i64);
            if let Some(f) = r.load.figures(now_ms, r.load_limits()) {
                let set = |gauge: &prometheus::IntGaugeVec, v: u64| {
                    gauge
                        .with_label_values(&[&id])
                        .set(i64::try_from(v).unwrap_or(i64::MAX));
                };
                set(&g.scope_reads_per_s, f.reads_per_s);
                set(&g.scope_writes_per_s, f.writes_per_s);
                set(&g.scope_reads_per_s_peak, f.reads_peak);
                set(&g.scope_writes_per_s_peak, f.writes_peak);
            }
            g.scope_names.with_label_values(&[&id]).set(
                i64::try_from(r.state.with_view(|v| v.names).unwrap_or(0)).unwrap_or(i64::MAX),
            );
        }
    }

    /// Copies the gossip refusals into the metrics and sets the peer gauges from the book.
    fn refresh_gossip_gauges(&self) {
        let g = &self.inner.metrics;
        if let Ok(mut seen) = self.inner.gossip_refused_seen.lock() {
            let counts = self.inner.net.gossip_refused().counts();
            seen.resize(counts.len(), 0);
            for (i, (reason, now)) in counts.into_iter().enumerate() {
                g.refused
                    .with_label_values(&["gossip", reason])
                    .inc_by(now.saturating_sub(seen[i]));
                seen[i] = now;
            }
        }
        let p = &g.peers;
        for gauge in p.all() {
            gauge.reset();
        }
        let now_ms = self.inner.server.clock().unix_ms();
        let Ok(book) = self.inner.peers.lock() else {
            return;
        };
        let mut live = 0;
        for e in book.live(now_ms) {
            live += 1;
            let s = &e.summary;
            let set = |gauge: &prometheus::IntGaugeVec, v: u64| {
                gauge
                    .with_label_values(&[&s.anchor])
                    .set(i64::try_from(v).unwrap_or(i64::MAX));
            };
            set(&p.age_seconds, e.age_ms(now_ms) / 1000);
            set(&p.cpu_millicores, u64::from(s.cpu_millicores));
            set(&p.memory_bytes, s.mem_bytes);
            set(&p.disk_free_bytes, s.disk_free_bytes);
            set(&p.scopes, u64::from(s.scopes));
            set(&p.leaderships, u64::from(s.leaderships));
            set(&p.reads_per_s, s.reads_per_s);
            set(&p.writes_per_s, s.writes_per_s);
        }
        p.live.set(live);
    }

    /// True when every hosted scope knows its leader.
    pub fn ready(&self) -> bool {
        self.replicas()
            .iter()
            .all(|r| r.metrics().borrow().current_leader.is_some())
    }

    /// Hosts a replica of a new scope; with `bootstrap`, initializes the group and commits
    /// its genesis entry.
    pub async fn create_scope(
        &self,
        descriptor: ScopeDescriptor,
        policy_toml: String,
        bootstrap: bool,
    ) -> Result<(), AnchorError> {
        self.inner
            .registry
            .create_scope(descriptor, policy_toml, bootstrap)
            .await
    }

    /// Builds a snapshot of every hosted scope and purges the log up to it.
    pub async fn snapshot_all(&self) -> Result<(), AnchorError> {
        self.inner.registry.snapshot_all().await
    }

    /// Peer ids of the members of every hosted scope (for diagnostics).
    pub fn known_peers(&self) -> BTreeSet<String> {
        self.replicas()
            .iter()
            .flat_map(|r| r.descriptor.members.iter().map(|m| m.peer_id.clone()))
            .collect()
    }
}

impl crate::http::Probe for Anchor {
    fn metrics_text(&self) -> String {
        self.refresh_gauges();
        self.metrics().render()
    }

    fn ready(&self) -> bool {
        Anchor::ready(self)
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

#[cfg(test)]
#[path = "anchor_tests.rs"]
mod tests;
