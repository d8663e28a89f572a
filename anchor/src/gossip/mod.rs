//! Anchors joining each other and gossiping load summaries (`docs/protocol.md`, "Load
//! summaries"; `docs/operations.md`, "Joining an anchor").
//!
//! One task per anchor (`run`) does the IO: it dials the `join` list (and anchors heard
//! of in summaries) while unconnected, with backoff ([`dial`]); every tick it measures this
//! anchor ([`sys`], the hosted replicas), builds its summary ([`summary::build`]) and
//! publishes it every `gossip.interval_ms`, or early on a large change
//! ([`summary::changed_much`]); it files received summaries (already checked by the
//! network layer) in the [`PeerBook`] and expires old ones. The decisions are pure and
//! tested beside them: [`book`], [`summary`], [`dial`].

pub mod book;
pub mod dial;
pub mod summary;
pub mod sys;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;
use proto::gossip::LoadSummary;
use resolver::clock::SharedClock;
use resolver::net::{NetError, NetHandle, Received};
use resolver::AnchorAddr;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

pub use book::{Insert, MeanLoad, PeerBook, PeerEntry};

use crate::config::GossipSettings;
use crate::metrics::Metrics;
use crate::registry::Registry;
use summary::{LocalFigures, Publisher, ScopeLoad, Thresholds};

/// The peer book as the anchor shares it between the gossip task, status and metrics.
pub type SharedBook = Arc<Mutex<PeerBook>>;

/// Received summaries waiting for the gossip task; more are dropped (and counted).
pub const INBOX_MAX: usize = 256;

/// What the gossip task is built from.
pub(crate) struct Parts {
    pub net: NetHandle,
    pub book: SharedBook,
    pub settings: GossipSettings,
    pub join: Vec<AnchorAddr>,
    pub registry: Arc<Registry>,
    pub peer_id: PeerId,
    pub labels: BTreeMap<String, String>,
    pub addrs: Vec<String>,
    pub data_dir: PathBuf,
    pub metrics: Metrics,
    pub clock: SharedClock,
}

struct State {
    seq: u64,
    last: Option<LoadSummary>,
    last_ms: u64,
    cpu: sys::CpuMeter,
    redial: dial::Redial,
}

/// Runs until `stop` turns true or the network stops.
pub(crate) async fn run(
    p: Parts,
    mut inbox: mpsc::Receiver<Received>,
    mut stop: watch::Receiver<bool>,
) {
    let span = tracing::info_span!("gossip", peer = %p.peer_id);
    async move {
        let tick_ms = p.settings.min_interval_ms.clamp(50, 1_000);
        let mut ticker = tokio::time::interval(Duration::from_millis(tick_ms));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let now = p.clock.unix_ms();
        let mut st = State {
            seq: now,
            last: None,
            last_ms: 0,
            cpu: sys::CpuMeter::default(),
            redial: dial::Redial::default(),
        };
        if let Some(c) = sys::cpu_seconds() {
            st.cpu.sample(now, c);
        }
        loop {
            tokio::select! {
                r = stop.changed() => if r.is_err() || *stop.borrow() { break },
                r = inbox.recv() => match r {
                    Some(r) => p.take(r),
                    None => break,
                },
                _ = ticker.tick() => p.tick(&mut st).await,
            }
        }
        tracing::debug!("gossip stopped");
    }
    .instrument(span)
    .await
}

impl Parts {
    fn count(&self, outcome: &str) {
        self.metrics
            .gossip_summaries
            .with_label_values(&[outcome])
            .inc();
    }

    fn take(&self, r: Received) {
        let now = self.clock.unix_ms();
        let anchor = r.summary.anchor.clone();
        let outcome = match self.book.lock() {
            Ok(mut b) => b.insert(r.summary, now),
            Err(_) => return,
        };
        tracing::trace!(%anchor, via = %r.via, outcome = outcome.label(), "summary received");
        self.count(outcome.label());
    }

    async fn tick(&self, st: &mut State) {
        let now = self.clock.unix_ms();
        self.dial(st, now);
        let mut s = summary::build(
            &Publisher {
                anchor: self.peer_id.to_base58(),
                interval_ms: self.settings.interval_ms,
                hot_scopes: self.settings.hot_scopes,
            },
            st.seq + 1,
            now,
            &self.figures(now),
        );
        let g = &self.settings;
        let since = now.saturating_sub(st.last_ms);
        let due = match &st.last {
            None => true,
            Some(_) if since >= g.interval_ms => true,
            Some(last) => {
                since >= g.min_interval_ms
                    && summary::changed_much(
                        last,
                        &s,
                        &Thresholds {
                            change_percent: g.change_percent,
                            change_scopes: g.change_scopes,
                            load_change_percent: g.load_change_percent,
                        },
                    )
            }
        };
        if due {
            s.cpu_millicores = sys::cpu_seconds().map_or(0, |c| st.cpu.sample(now, c));
            st.seq = s.seq;
            st.last_ms = if self.publish(&s).await {
                now
            } else {
                // Nobody subscribed yet (a starting or joining anchor): try again after
                // `min_interval_ms`, so the mesh hears of this anchor soon after it joins.
                now.saturating_sub(g.interval_ms)
                    .saturating_add(g.min_interval_ms)
            };
            if let Ok(mut b) = self.book.lock() {
                b.insert(s.clone(), now);
            }
            st.last = Some(s);
        }
        let gone = match self.book.lock() {
            Ok(mut b) => b.expire(now),
            Err(_) => Vec::new(),
        };
        for anchor in gone {
            tracing::info!(%anchor, "load summary expired");
            self.count("expired");
        }
    }

    /// Publishes `s`; false when no peer is subscribed yet.
    async fn publish(&self, s: &LoadSummary) -> bool {
        let bytes = match s.encode() {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "own summary does not encode");
                self.count("publish_error");
                return true;
            }
        };
        match self.net.publish(bytes).await {
            Ok(()) => self.count("published"),
            Err(NetError::NoPeers) => {
                self.count("no_peers");
                return false;
            }
            Err(e) => {
                tracing::debug!(error = %e, "publish failed");
                self.count("publish_error");
            }
        }
        true
    }

    /// Dials the join list, and anchors in the book, while they are unconnected.
    fn dial(&self, st: &mut State, now: u64) {
        for j in &self.join {
            let peer = j.peer.to_base58();
            match st.redial.due(&peer, self.net.is_connected(&j.peer), now) {
                None => continue,
                Some(1) => tracing::info!(%peer, addrs = ?j.addrs, "joining"),
                Some(n) if n % 5 == 0 => tracing::warn!(
                    %peer, addrs = ?j.addrs, attempts = n - 1,
                    next_s = st.redial.backoff_ms(&peer) / 1000,
                    "join address not reachable; still trying"
                ),
                Some(_) => {}
            }
            self.net.dial(j.peer, j.addrs.clone());
        }
        let me = self.peer_id.to_base58();
        let known: Vec<AnchorAddr> = match self.book.lock() {
            Ok(b) => b
                .live(now)
                .filter(|e| e.summary.anchor != me)
                .filter_map(|e| addr_of(&e.summary))
                .collect(),
            Err(_) => return,
        };
        // Dial anchors heard of until connected to `dial_peers_max` of them (gossipsub
        // relays the rest), so a large mesh does not churn connections.
        let connected = known
            .iter()
            .filter(|a| self.net.is_connected(&a.peer))
            .count();
        let mut budget = self.settings.dial_peers_max.saturating_sub(connected);
        for a in &known {
            if budget == 0 {
                break;
            }
            if st
                .redial
                .due(&a.peer.to_base58(), self.net.is_connected(&a.peer), now)
                .is_some()
            {
                budget -= 1;
                self.net.dial(a.peer, a.addrs.clone());
            }
        }
        let keep: HashSet<String> = known
            .iter()
            .map(|a| a.peer.to_base58())
            .chain(self.join.iter().map(|j| j.peer.to_base58()))
            .collect();
        st.redial.retain(|p| keep.contains(p));
    }

    /// This anchor's figures now. Loads come from the busy scopes only (an idle scope's is
    /// zero); leaderships from the replicas that do not hibernate and the count of those that
    /// hibernated as leaders, so 10 000 idle scopes are not walked every tick.
    fn figures(&self, now_ms: u64) -> LocalFigures {
        let me = self.registry.node_id();
        let window = proto::msg::Load::WINDOW_S.max(1);
        let awake_leaders = self
            .registry
            .awake()
            .iter()
            .filter(|r| !r.is_hibernated() && r.led_by(me))
            .count();
        let leaderships = awake_leaders as i64 + self.registry.hibernated().leaders().max(0);
        let busy = self
            .registry
            .busy(now_ms / 1000)
            .iter()
            .map(|r| {
                let l = r.load.window(now_ms / 1000);
                let (reads_per_s, writes_per_s) = (l.reads / window, l.writes / window);
                ScopeLoad {
                    id: r.id,
                    prefix: (reads_per_s + writes_per_s > 0).then(|| r.descriptor.prefix.clone()),
                    leader: r.led_by(me),
                    reads_per_s,
                    writes_per_s,
                }
            })
            .collect();
        let (disk_free_bytes, disk_total_bytes) = sys::disk_space(&self.data_dir);
        LocalFigures {
            cpu_millicores: 0,
            cores: sys::cores(),
            mem_bytes: sys::rss_bytes().unwrap_or(0),
            disk_free_bytes,
            disk_total_bytes,
            hosted: u32::try_from(self.registry.len()).unwrap_or(u32::MAX),
            leaderships: u32::try_from(leaderships).unwrap_or(u32::MAX),
            busy,
            labels: self.labels.clone(),
            addrs: self.addrs.clone(),
        }
    }
}

/// Where to dial the anchor a summary describes (its addresses that parse).
fn addr_of(s: &LoadSummary) -> Option<AnchorAddr> {
    let peer: PeerId = s.anchor.parse().ok()?;
    let addrs: Vec<_> = s.addrs.iter().filter_map(|a| a.parse().ok()).collect();
    (!addrs.is_empty()).then_some(AnchorAddr { peer, addrs })
}
