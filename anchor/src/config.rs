//! `anchor.toml`: what an operator sets for one anchor, with defaults that work on a laptop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::AnchorError;

/// One anchor's configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorConfig {
    /// Where the identity and the database live.
    pub data_dir: PathBuf,
    /// libp2p listen multiaddr, e.g. `/ip4/0.0.0.0/tcp/7400`.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Address advertised to peers instead of the listen address (optional).
    #[serde(default)]
    pub advertise: Option<String>,
    /// HTTP address for `/metrics`, `/healthz`, `/readyz`.
    #[serde(default = "default_http")]
    pub http: SocketAddr,
    /// Labels used by placement policy (`jurisdiction = "eu"`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Raft timing.
    #[serde(default)]
    pub raft: RaftSettings,
    /// Storage sizing.
    #[serde(default)]
    pub storage: StorageSettings,
    /// Load accounting.
    #[serde(default)]
    pub load: LoadSettings,
    /// Anchors to join at start: `/ip4/<ip>/tcp/<port>/p2p/<peer id>` each; dialled at
    /// start and redialled with backoff while unconnected.
    #[serde(default)]
    pub join: Vec<String>,
    /// Load-summary gossip.
    #[serde(default)]
    pub gossip: GossipSettings,
    /// Placement decided by this anchor for the scopes it leads.
    #[serde(default)]
    pub placement: PlacementSettings,
}

/// Placement decided locally (`docs/operations.md`, "Rebalancing"): for the scopes it leads,
/// an anchor replaces members on dead anchors, moves members that no longer meet their
/// scope's labels, and, when it is above the cluster's mean by `tolerance_pct`, hands
/// leaderships and then its own replicas to anchors below the mean. Scopes whose policy
/// says `[placement] auto = false` are left alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementSettings {
    /// Whether this anchor rebalances at all.
    pub rebalance: bool,
    /// How often it looks, ms.
    pub every_ms: u64,
    /// How far above the mean (leaderships, replicas) it must be before it acts, percent.
    pub tolerance_pct: u32,
    /// Most member changes it has in flight at once.
    pub changes_max: usize,
    /// How long a member's anchor may be silent (no load summary) before its replicas are
    /// re-created elsewhere, seconds.
    pub replace_after_s: u64,
}

impl Default for PlacementSettings {
    fn default() -> Self {
        PlacementSettings {
            rebalance: true,
            every_ms: 10_000,
            tolerance_pct: 10,
            changes_max: 4,
            replace_after_s: 300,
        }
    }
}

/// Load summaries gossiped between anchors (`docs/operations.md`, "Gossip settings").
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipSettings {
    /// Publish a summary at least this often, ms.
    pub interval_ms: u64,
    /// Publish early, but not more often than this, ms, when the load changed a lot (see
    /// the three thresholds below).
    pub min_interval_ms: u64,
    /// Early publish when the number of hosted scopes or leaderships changed by more than
    /// this many percent ...
    pub change_percent: u64,
    /// ... or by more than this many scopes ...
    pub change_scopes: u64,
    /// ... or the request rate (reads + writes per second) changed by more than this many
    /// percent (and by at least 10 requests per second).
    pub load_change_percent: u64,
    /// A summary is dropped after this many of its sender's intervals without a newer one.
    pub expire_intervals: u32,
    /// Hottest scopes listed in a summary (at most 16).
    pub hot_scopes: usize,
    /// Anchors heard of in summaries are dialled until this anchor is connected to this
    /// many of them (the join list is always dialled).
    pub dial_peers_max: usize,
    /// Gossipsub heartbeat (mesh upkeep), ms.
    pub heartbeat_ms: u64,
}

impl Default for GossipSettings {
    fn default() -> Self {
        GossipSettings {
            interval_ms: 5_000,
            min_interval_ms: 1_000,
            change_percent: 5,
            change_scopes: 5,
            load_change_percent: 50,
            expire_intervals: 3,
            hot_scopes: 8,
            dial_peers_max: 16,
            heartbeat_ms: 1_000,
        }
    }
}

/// Load accounting of the hosted scopes (what the split and merge deciders read).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadSettings {
    /// The retained window of the peak load, seconds (at least 6): a merge needs a full
    /// window observed on both scopes, and their summed peak over it.
    pub peak_window_s: u64,
}

impl Default for LoadSettings {
    fn default() -> Self {
        LoadSettings {
            peak_window_s: crate::scope::load::PEAK_WINDOW_MS_DEFAULT / 1000,
        }
    }
}

/// Raft timing and log compaction.
///
/// The timer defaults are chosen for anchors hosting many mostly idle scopes (see
/// `docs/benchmarks.md`, "Idle cost of many scopes"): openraft 0.9 ticks every 1.5 ×
/// `heartbeat_ms` and an idle leader sends one heartbeat RPC per follower per tick, so 1 000
/// scopes on 3 anchors cost 2 000 RPCs per tick. With 500 ms (a tick every 750 ms) that is
/// ~2 700 RPCs/s for the cluster; with 100 ms it would be ~13 000/s, more than two cores
/// could serve (heartbeats then time out). A follower that has seen a leader starts an
/// election only after the leader lease (`election_max_ms`) plus a random election timeout
/// (`election_min_ms..election_max_ms`), checked on ticks: with 1.25–2.5 s a dead leader is
/// replaced after 3.75–5.75 s (measured: 335 groups in 5.4 s). Tests that kill leaders set
/// shorter timers in their own configs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Lower bound of the election timeout.
    pub election_min_ms: u64,
    /// Upper bound of the election timeout.
    pub election_max_ms: u64,
    /// Build a snapshot after this many log entries.
    pub snapshot_logs: u64,
    /// Entries kept in the log after a snapshot (for slow followers).
    pub logs_kept_after_snapshot: u64,
    /// How long a heartbeat (an AppendEntries without entries) may wait to share one
    /// message with the heartbeats of other scopes to the same anchor; 0 sends each alone.
    /// With many scopes per anchor this turns thousands of RPCs per tick into a few.
    pub coalesce_ms: u64,
    /// Quiescence: a scope whose leader saw no write, read or log change for this long, and
    /// whose live members all have its last entry, stops ticking and heartbeating until a
    /// write, a linearizable read or a vote wakes it (`docs/design.md`, "Quiescence"). 0
    /// turns quiescence off.
    pub quiesce_after_ms: u64,
    /// How often this anchor pings every anchor it shares a group with (node-level
    /// liveness, which sleeping followers rely on to learn that their leader died).
    pub liveness_ms: u64,
    /// An anchor that cannot be dialed for this long counts as dead: the sleeping
    /// followers it leads wake and elect, and the groups it lags in may sleep without it.
    /// One that is reachable but does not answer pings counts as dead after
    /// `scope::quiesce::SILENT_FACTOR` (20) times this.
    pub dead_after_ms: u64,
    /// Hibernation: a group asleep this long is stopped (its memory and timers freed) and
    /// reopened from disk by the first message, write or read that needs it. 0 keeps
    /// sleeping groups running.
    pub hibernate_after_ms: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        RaftSettings {
            heartbeat_ms: 500,
            election_min_ms: 1_250,
            election_max_ms: 2_500,
            snapshot_logs: 10_000,
            logs_kept_after_snapshot: 1_000,
            coalesce_ms: 5,
            quiesce_after_ms: 5_000,
            liveness_ms: 500,
            dead_after_ms: 1_500,
            hibernate_after_ms: 20_000,
        }
    }
}

/// sled sizing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// sled page cache, bytes (sled's default is 1 GiB; we keep anchors small).
    pub cache_bytes: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        StorageSettings {
            cache_bytes: 16 * 1024 * 1024,
        }
    }
}

fn default_listen() -> String {
    "/ip4/127.0.0.1/tcp/0".into()
}

fn default_http() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl AnchorConfig {
    /// A configuration with defaults under `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> AnchorConfig {
        AnchorConfig {
            data_dir: data_dir.into(),
            listen: default_listen(),
            advertise: None,
            http: default_http(),
            labels: BTreeMap::new(),
            raft: RaftSettings::default(),
            storage: StorageSettings::default(),
            load: LoadSettings::default(),
            join: Vec::new(),
            gossip: GossipSettings::default(),
            placement: PlacementSettings::default(),
        }
    }

    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<AnchorConfig, AnchorError> {
        let text = std::fs::read_to_string(path).map_err(|source| AnchorError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let cfg: AnchorConfig = toml::from_str(&text).map_err(|e| AnchorError::Config {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        cfg.validate().map_err(|e| AnchorError::Config {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Ok(cfg)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), Invalid> {
        self.listen
            .parse::<libp2p::Multiaddr>()
            .map_err(|e| Invalid::Listen {
                value: self.listen.clone(),
                reason: e.to_string(),
            })?;
        if let Some(a) = &self.advertise {
            a.parse::<libp2p::Multiaddr>()
                .map_err(|e| Invalid::Advertise {
                    value: a.clone(),
                    reason: e.to_string(),
                })?;
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_min_ms <= r.heartbeat_ms * 2 {
            return Err(Invalid::ElectionMin);
        }
        if r.election_max_ms <= r.election_min_ms {
            return Err(Invalid::ElectionMax);
        }
        if r.coalesce_ms * 4 > r.heartbeat_ms {
            return Err(Invalid::Coalesce);
        }
        if r.quiesce_after_ms > 0 && (r.liveness_ms == 0 || r.dead_after_ms < 2 * r.liveness_ms) {
            return Err(Invalid::Liveness);
        }
        if r.quiesce_after_ms > 0 && r.quiesce_after_ms < 2 * r.heartbeat_ms {
            return Err(Invalid::Quiesce);
        }
        if self.storage.cache_bytes < 1024 * 1024 {
            return Err(Invalid::Cache);
        }
        if self.load.peak_window_s < crate::scope::load::SUB_WINDOWS as u64 {
            return Err(Invalid::PeakWindow);
        }
        for j in &self.join {
            resolver::AnchorAddr::parse(j).map_err(|e| Invalid::Join {
                value: j.clone(),
                reason: e.to_string(),
            })?;
        }
        let g = &self.gossip;
        if g.interval_ms < 100
            || g.interval_ms > proto::limits::SUMMARY_INTERVAL_MS_MAX
            || g.min_interval_ms == 0
            || g.min_interval_ms > g.interval_ms
        {
            return Err(Invalid::GossipInterval);
        }
        if g.expire_intervals < 2 {
            return Err(Invalid::GossipExpire);
        }
        if g.hot_scopes > proto::limits::HOT_SCOPES_MAX {
            return Err(Invalid::GossipHot);
        }
        if g.heartbeat_ms < 50 {
            return Err(Invalid::GossipHeartbeat);
        }
        Ok(())
    }
}

/// A value in `anchor.toml` that parses but cannot work; the message says what to set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalid {
    /// `listen` is not a multiaddr.
    #[error("listen {value:?} is not a multiaddr: {reason}")]
    Listen {
        /// What was given.
        value: String,
        /// What the parser said.
        reason: String,
    },
    /// `advertise` is not a multiaddr.
    #[error("advertise {value:?}: {reason}")]
    Advertise {
        /// What was given.
        value: String,
        /// What the parser said.
        reason: String,
    },
    /// The election timeout leaves no room for heartbeats.
    #[error("raft.election_min_ms must be more than twice raft.heartbeat_ms")]
    ElectionMin,
    /// The election timeout's range is empty.
    #[error("raft.election_max_ms must exceed raft.election_min_ms")]
    ElectionMax,
    /// Coalescing would delay heartbeats too much.
    #[error("raft.coalesce_ms must be at most a quarter of raft.heartbeat_ms (0 turns it off)")]
    Coalesce,
    /// Liveness pings too rare for the grace given.
    #[error("raft.liveness_ms must be positive and raft.dead_after_ms at least twice it (with quiescence on)")]
    Liveness,
    /// Quiescence sooner than two heartbeats.
    #[error("raft.quiesce_after_ms must be 0 (off) or at least twice raft.heartbeat_ms")]
    Quiesce,
    /// The cache is too small to work.
    #[error("storage.cache_bytes must be at least 1 MiB")]
    Cache,
    /// The peak window is shorter than its sub-windows.
    #[error("load.peak_window_s must be at least 6")]
    PeakWindow,
    /// A `join` entry that is not an anchor address.
    #[error("join {value:?}: {reason}")]
    Join {
        /// What was given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// Gossip intervals that cannot work.
    #[error("gossip.interval_ms must be 100..=600000 and gossip.min_interval_ms 1..=interval_ms")]
    GossipInterval,
    /// Summaries would expire before the next one could arrive.
    #[error("gossip.expire_intervals must be at least 2")]
    GossipExpire,
    /// Too many hot scopes per summary.
    #[error("gossip.hot_scopes must be at most 16")]
    GossipHot,
    /// A heartbeat too short.
    #[error("gossip.heartbeat_ms must be at least 50")]
    GossipHeartbeat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg: AnchorConfig = toml::from_str("data_dir = \"/tmp/a\"").unwrap();
        assert!(cfg.validate().is_ok());
        assert_eq!(cfg.raft.heartbeat_ms, 500);
        assert_eq!(cfg.raft.election_min_ms, 1_250);
        assert_eq!(cfg.raft.quiesce_after_ms, 5_000);
    }

    #[test]
    fn quiescence_settings_are_checked() {
        let cfg: AnchorConfig =
            toml::from_str("data_dir = \"/x\"\n[raft]\nquiesce_after_ms = 0\nliveness_ms = 0")
                .unwrap();
        assert!(cfg.validate().is_ok(), "off: liveness unused");
        let cfg: AnchorConfig =
            toml::from_str("data_dir = \"/x\"\n[raft]\ndead_after_ms = 600").unwrap();
        assert_eq!(cfg.validate(), Err(Invalid::Liveness));
        let cfg: AnchorConfig =
            toml::from_str("data_dir = \"/x\"\n[raft]\nquiesce_after_ms = 600").unwrap();
        assert_eq!(cfg.validate(), Err(Invalid::Quiesce));
    }

    #[test]
    fn bad_values_are_explained() {
        let cfg: AnchorConfig = toml::from_str("data_dir = \"/x\"\nlisten = \"nope\"").unwrap();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("multiaddr"));
        assert!(toml::from_str::<AnchorConfig>("data_dir = \"/x\"\nbogus = 1").is_err());
    }

    #[test]
    fn join_and_gossip_settings() {
        let peer = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let text = format!(
            "data_dir = \"/x\"\njoin = [\"/ip4/10.0.0.1/tcp/7400/p2p/{peer}\"]\n\
             [gossip]\ninterval_ms = 2000\n"
        );
        let cfg: AnchorConfig = toml::from_str(&text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.gossip.interval_ms, 2_000);
        assert_eq!(cfg.gossip.expire_intervals, 3);
        let mut bad = cfg.clone();
        bad.join = vec!["/ip4/10.0.0.1/tcp/7400".into()];
        assert!(bad.validate().unwrap_err().to_string().contains("/p2p"));
        let mut bad = cfg.clone();
        bad.gossip.min_interval_ms = 3_000;
        assert_eq!(bad.validate().unwrap_err(), Invalid::GossipInterval);
        let mut bad = cfg;
        bad.gossip.hot_scopes = 17;
        assert_eq!(bad.validate().unwrap_err(), Invalid::GossipHot);
    }
}
