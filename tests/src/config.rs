//! Anchor configuration: the Raft and storage [`Options`] of a cluster and the
//! `anchor.toml` written for each anchor (with its TOML escaping).

use crate::process::AnchorProc;

/// Load-summary interval of the harness's anchors, ms (summaries expire after 3).
pub const GOSSIP_INTERVAL_MS: u64 = 1_000;

/// Raft and storage settings written into every anchor's config.
#[derive(Clone, Debug)]
pub struct Options {
    /// `raft.heartbeat_ms`.
    pub heartbeat_ms: u64,
    /// `raft.election_min_ms`.
    pub election_min_ms: u64,
    /// `raft.election_max_ms`.
    pub election_max_ms: u64,
    /// `raft.snapshot_logs`.
    pub snapshot_logs: u64,
    /// `raft.logs_kept_after_snapshot`.
    pub logs_kept_after_snapshot: u64,
    /// `storage.cache_bytes`.
    pub cache_bytes: u64,
    /// `[placement]`: `None` turns rebalancing off (most tests place every scope
    /// themselves); `Some(every_ms)` turns it on, looking every that many ms, with
    /// `replace_after_s` from [`Options::replace_after_s`].
    pub rebalance_every_ms: Option<u64>,
    /// `placement.replace_after_s`.
    pub replace_after_s: u64,
    /// `raft.quiesce_after_ms`, `raft.liveness_ms`, `raft.dead_after_ms` (`None`: the
    /// anchor's defaults; `quiesce_after_ms = 0` turns quiescence off).
    pub quiesce: Option<Quiesce>,
}

/// Quiescence settings written into every anchor's config.
#[derive(Clone, Copy, Debug)]
pub struct Quiesce {
    /// `raft.quiesce_after_ms`.
    pub after_ms: u64,
    /// `raft.liveness_ms`.
    pub liveness_ms: u64,
    /// `raft.dead_after_ms`.
    pub dead_after_ms: u64,
    /// `raft.hibernate_after_ms` (0: sleeping groups keep running).
    pub hibernate_after_ms: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            heartbeat_ms: 50,
            election_min_ms: 300,
            election_max_ms: 600,
            snapshot_logs: 100_000,
            logs_kept_after_snapshot: 1_000,
            cache_bytes: 8 * 1024 * 1024,
            rebalance_every_ms: None,
            replace_after_s: 300,
            quiesce: None,
        }
    }
}

pub(crate) fn config_toml(a: &AnchorProc, o: &Options) -> String {
    // TOML basic strings: escape backslashes and quotes of the path.
    let data_dir = a
        .data_dir
        .display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!(
        "data_dir = \"{data_dir}\"\n\
         listen = \"/ip4/{ip}/tcp/{p2p}\"\n\
         http = \"{ip}:{http}\"\n\
         join = [{join}]\n\
         \n\
         [labels]\n\
         test_index = \"{index}\"\n\
         {labels}\
         \n\
         [raft]\n\
         heartbeat_ms = {hb}\n\
         election_min_ms = {emin}\n\
         election_max_ms = {emax}\n\
         snapshot_logs = {snap}\n\
         logs_kept_after_snapshot = {kept}\n\
         {quiesce}\
         \n\
         [storage]\n\
         cache_bytes = {cache}\n\
         \n\
         [gossip]\n\
         interval_ms = {gossip}\n\
         min_interval_ms = {gossip_min}\n\
         \n\
         [placement]\n\
         rebalance = {rebalance}\n\
         every_ms = {every}\n\
         replace_after_s = {replace}\n",
        ip = a.ip,
        p2p = a.p2p_port,
        http = a.http_port,
        index = a.index,
        labels = a
            .labels
            .iter()
            .map(|(k, v)| format!("{} = \"{}\"\n", toml_key(k), toml_escape(v)))
            .collect::<String>(),
        hb = o.heartbeat_ms,
        emin = o.election_min_ms,
        emax = o.election_max_ms,
        snap = o.snapshot_logs,
        kept = o.logs_kept_after_snapshot,
        cache = o.cache_bytes,
        join = a
            .join
            .iter()
            .map(|j| format!("\"{}\"", toml_escape(j)))
            .collect::<Vec<_>>()
            .join(", "),
        gossip = GOSSIP_INTERVAL_MS,
        gossip_min = GOSSIP_INTERVAL_MS / 4,
        rebalance = o.rebalance_every_ms.is_some(),
        every = o.rebalance_every_ms.unwrap_or(10_000),
        replace = o.replace_after_s,
        quiesce = o.quiesce.map_or(String::new(), |q| format!(
            "quiesce_after_ms = {}\nliveness_ms = {}\ndead_after_ms = {}\nhibernate_after_ms = {}\n",
            q.after_ms, q.liveness_ms, q.dead_after_ms, q.hibernate_after_ms
        )),
    )
}

pub(crate) fn toml_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub(crate) fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        k.to_string()
    } else {
        format!("\"{}\"", toml_escape(k))
    }
}
