//! Prometheus metrics of one anchor, in a registry of its own (several anchors may share a
//! process in `anchorage dev` and in tests).
//!
//! Per-scope series (`anchorage_scope_*{scope}`) are kept for at most [`SCOPE_SERIES_MAX`]
//! scopes, the busiest whose group runs: an anchor hosting 10 000 scopes would otherwise
//! export 80 000 series and hold them in memory. Counts over every hosted scope come as
//! `anchorage_scopes{role}` and `anchorage_scope_terms`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The most scopes exported with per-scope series at one scrape.
pub const SCOPE_SERIES_MAX: usize = 200;

/// Every metric an anchor exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Hosted scope replicas by role (leader, follower), hibernated ones included.
    pub scopes: IntGaugeVec,
    /// The sum of every hosted scope's current term (it rises with every election).
    pub scope_terms: prometheus::IntGauge,
    /// Current term per scope.
    pub scope_term: IntGaugeVec,
    /// 1 when this anchor leads the scope.
    pub scope_leader: IntGaugeVec,
    /// Last applied index per scope.
    pub scope_applied: IntGaugeVec,
    /// Reads/s per scope in the last settled second (requests this anchor served).
    pub scope_reads_per_s: IntGaugeVec,
    /// Writes/s per scope in the last settled second (requests this anchor received).
    pub scope_writes_per_s: IntGaugeVec,
    /// Highest reads/s per scope over the retained window.
    pub scope_reads_per_s_peak: IntGaugeVec,
    /// Highest writes/s per scope over the retained window.
    pub scope_writes_per_s_peak: IntGaugeVec,
    /// Names held per scope.
    pub scope_names: IntGaugeVec,
    /// Mutations by outcome (`committed`, or the refusal reason).
    pub mutations: IntCounterVec,
    /// Resolves by level and outcome.
    pub resolves: IntCounterVec,
    /// Inbound messages refused, by protocol and reason.
    pub refused: IntCounterVec,
    /// Watch long polls by outcome (`changes`, `empty`, `compacted`, `referral`, refusal).
    pub watches: IntCounterVec,
    /// Delegation steps driven by this anchor, by step and outcome.
    pub delegations: IntCounterVec,
    /// Splits this anchor proposed as a scope's leader, by kind, reason and outcome.
    pub splits: IntCounterVec,
    /// Load reports received from members, by outcome (ok, late: some seconds came too
    /// late to count).
    pub load_reports: IntCounterVec,
    /// Merge steps this anchor drove (as the parent's leader, or removing a merged child), by
    /// outcome.
    pub merges: IntCounterVec,
    /// Ranges split off below a delegation: learned here as the holder's leader (`learned`,
    /// `already`, or the refusal: `bad_proof`, `minority`, ...), or pushed to the holder as
    /// the splitting scope's leader (`pushed`, `push_error`).
    pub ranges_learned: IntCounterVec,
    /// Load summaries: this anchor's own (`published`, `no_peers`, `publish_error`) and
    /// received ones (`new`, `updated`, `stale`, `book_full`), and expiries (`expired`).
    /// Refused ones count in `refused_messages_total{protocol="gossip"}`.
    pub gossip_summaries: IntCounterVec,
    /// Per anchor in the peer book (this one included): its summary's figures.
    pub peers: PeerGauges,
    /// Hosted replicas whose group sleeps, by role (leader, follower).
    pub scopes_asleep: IntGaugeVec,
    /// Sleeping groups woken, by cause (write, read, vote, append, snapshot, leader_dead,
    /// peer_back, log_moved, not_leader, kept_awake).
    pub scope_wakes: IntCounterVec,
    /// Quiescence steps, by side (leader: a round; member: a request answered) and outcome.
    pub quiesce: IntCounterVec,
    /// Anchors sharing a group with this one that count as dead (no ping answer).
    pub peers_dead: prometheus::IntGauge,
    /// Hosted replicas whose group hibernates (stopped while asleep, reopened on demand).
    pub scopes_hibernated: prometheus::IntGauge,
    /// Groups hibernated and reopened, by event (hibernated, reopened).
    pub scope_hibernations: IntCounterVec,
    /// Group-commit flush latency.
    pub flush_seconds: prometheus::Histogram,
    /// Request handling latency by protocol.
    pub request_seconds: HistogramVec,
}

/// Gauges of the anchors in the peer book, labelled by `peer` (reset before each
/// rendering, so an expired anchor disappears).
#[derive(Clone)]
pub struct PeerGauges {
    /// Anchors with a live summary.
    pub live: prometheus::IntGauge,
    /// Seconds since its summary arrived.
    pub age_seconds: IntGaugeVec,
    /// CPU, thousandths of a core.
    pub cpu_millicores: IntGaugeVec,
    /// Resident memory.
    pub memory_bytes: IntGaugeVec,
    /// Free disk.
    pub disk_free_bytes: IntGaugeVec,
    /// Scopes hosted.
    pub scopes: IntGaugeVec,
    /// Scopes led.
    pub leaderships: IntGaugeVec,
    /// Reads per second.
    pub reads_per_s: IntGaugeVec,
    /// Writes per second.
    pub writes_per_s: IntGaugeVec,
}

impl PeerGauges {
    /// Every labelled gauge, for resetting.
    pub fn all(&self) -> [&IntGaugeVec; 8] {
        [
            &self.age_seconds,
            &self.cpu_millicores,
            &self.memory_bytes,
            &self.disk_free_bytes,
            &self.scopes,
            &self.leaderships,
            &self.reads_per_s,
            &self.writes_per_s,
        ]
    }
}

impl Metrics {
    /// Every per-scope gauge, for resetting.
    pub fn per_scope(&self) -> [&IntGaugeVec; 8] {
        [
            &self.scope_term,
            &self.scope_leader,
            &self.scope_applied,
            &self.scope_reads_per_s,
            &self.scope_writes_per_s,
            &self.scope_reads_per_s_peak,
            &self.scope_writes_per_s_peak,
            &self.scope_names,
        ]
    }

    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("anchorage".into()), None).unwrap_or_default();
        let gauge_by = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let gauge = |name: &str, help: &str| gauge_by(name, help, &["scope"]);
        let single = |name: &str, help: &str| {
            let g = prometheus::IntGauge::new(name, help).expect("static metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let scopes = gauge_by(
            "scopes",
            "Hosted scope replicas by role (leader, follower), hibernated ones included",
            &["role"],
        );
        let scope_terms = single(
            "scope_terms",
            "Sum of the current Raft terms of every hosted scope: it rises with every election",
        );
        let scope_term = gauge(
            "scope_term",
            &format!(
                "Current Raft term of each hosted scope (the busiest {SCOPE_SERIES_MAX} that do not hibernate)"
            ),
        );
        let scope_leader = gauge("scope_leader", "1 if this anchor leads the scope");
        let scope_applied = gauge(
            "scope_applied_index",
            "Last applied log index of each scope",
        );
        let scope_reads_per_s = gauge(
            "scope_reads_per_second",
            "Reads of each scope this anchor answered in the last settled second",
        );
        let scope_writes_per_s = gauge(
            "scope_writes_per_second",
            "Writes to each scope this anchor received in the last settled second",
        );
        let scope_reads_per_s_peak = gauge(
            "scope_reads_per_second_peak",
            "Highest reads/s of each scope on this anchor over the retained window (5 min)",
        );
        let scope_writes_per_s_peak = gauge(
            "scope_writes_per_second_peak",
            "Highest writes/s of each scope on this anchor over the retained window (5 min)",
        );
        let scope_names = gauge("scope_names", "Names held by each hosted scope");
        let mutations = counter("mutations_total", "Mutations by outcome", &["outcome"]);
        let resolves = counter(
            "resolves_total",
            "Resolves by read level and outcome",
            &["level", "outcome"],
        );
        let refused = counter(
            "refused_messages_total",
            "Inbound messages refused, by protocol and reason",
            &["protocol", "reason"],
        );
        let watches = counter("watches_total", "Watch long polls by outcome", &["outcome"]);
        let delegations = counter(
            "delegation_steps_total",
            "Delegation steps driven by this anchor (seed, activate, abort, child_activate), by outcome",
            &["step", "outcome"],
        );
        let splits = counter(
            "splits_total",
            "Splits proposed by this anchor as a scope's leader, by kind (subtree, range), reason (size, load) and outcome (split, refused at apply, error)",
            &["kind", "reason", "outcome"],
        );
        let load_reports = counter(
            "load_reports_total",
            "Members' read-count reports received for the split accounting, by outcome (ok, late)",
            &["outcome"],
        );
        let merges = counter(
            "merges_total",
            "Merge steps driven by this anchor, by outcome: proposed (Merge committed), refused (at apply), too_big (the child's state does not fit one entry), merged (MergeDone committed), aborted, removed (a merged child's replica deleted here), error",
            &["outcome"],
        );
        let ranges_learned = counter(
            "ranges_learned_total",
            "Ranges a delegated child split off: learned by the delegation's holder (learned, already) or refused (bad_proof, minority, not_a_range, no_delegation, conflict, too_many, not_leader, error), and pushed by the splitting scope's leader (pushed, push_error)",
            &["outcome"],
        );
        let gossip_summaries = counter(
            "gossip_summaries_total",
            "Load summaries: own (published, no_peers, publish_error), received (new, updated, stale, book_full), expired; refused ones are in refused_messages_total{protocol=\"gossip\"}",
            &["outcome"],
        );
        let peer_gauge = |name: &str, help: &str| gauge_by(name, help, &["peer"]);
        let live = single(
            "peers_live",
            "Anchors with a live load summary in this anchor's peer book (itself included)",
        );
        let peers = PeerGauges {
            live,
            age_seconds: peer_gauge(
                "peer_summary_age_seconds",
                "Seconds since each anchor's load summary arrived",
            ),
            cpu_millicores: peer_gauge(
                "peer_cpu_millicores",
                "Each anchor's CPU use, thousandths of a core",
            ),
            memory_bytes: peer_gauge("peer_memory_bytes", "Each anchor's resident memory"),
            disk_free_bytes: peer_gauge(
                "peer_disk_free_bytes",
                "Free bytes on each anchor's data file system",
            ),
            scopes: peer_gauge("peer_scopes", "Scope replicas each anchor hosts"),
            leaderships: peer_gauge("peer_leaderships", "Scopes each anchor leads"),
            reads_per_s: peer_gauge("peer_reads_per_second", "Reads/s each anchor served"),
            writes_per_s: peer_gauge("peer_writes_per_second", "Writes/s each anchor received"),
        };
        let scopes_asleep = gauge_by(
            "scopes_asleep",
            "Hosted replicas whose group sleeps (quiescence), by role",
            &["role"],
        );
        let scope_wakes = counter(
            "scope_wakes_total",
            "Sleeping groups woken here, by cause (write, read, vote, append, snapshot, leader_dead, peer_back, log_moved, not_leader, kept_awake)",
            &["cause"],
        );
        let quiesce = counter(
            "quiesce_total",
            "Quiescence steps: side=leader, a round by outcome (asleep, refused, unanswered); side=member, a request by outcome (asleep, or the mismatch: term, leader, log, not_applied, sender, kept_awake, malformed)",
            &["side", "outcome"],
        );
        let peers_dead = single(
            "peers_dead",
            "Anchors sharing a group with this one that have not answered liveness pings for raft.dead_after_ms",
        );
        let scopes_hibernated = single(
            "scopes_hibernated",
            "Hosted replicas whose group hibernates (stopped after raft.hibernate_after_ms asleep; reopened from disk by the first message, write or read)",
        );
        let scope_hibernations = counter(
            "scope_hibernations_total",
            "Groups stopped to hibernate and reopened, by event (hibernated, reopened)",
            &["event"],
        );
        let buckets = prometheus::exponential_buckets(0.000_05, 2.0, 16).expect("static buckets");
        let flush_seconds = prometheus::Histogram::with_opts(
            HistogramOpts::new("flush_seconds", "Group-commit fsync latency")
                .buckets(buckets.clone()),
        )
        .expect("static metric");
        registry
            .register(Box::new(flush_seconds.clone()))
            .expect("unique metric");
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("request_seconds", "Inbound request latency").buckets(buckets),
            &["protocol"],
        )
        .expect("static metric");
        registry
            .register(Box::new(request_seconds.clone()))
            .expect("unique metric");
        Metrics {
            registry,
            scopes,
            scope_terms,
            scope_term,
            scope_leader,
            scope_applied,
            scope_reads_per_s,
            scope_writes_per_s,
            scope_reads_per_s_peak,
            scope_writes_per_s_peak,
            scope_names,
            mutations,
            resolves,
            refused,
            watches,
            delegations,
            splits,
            load_reports,
            merges,
            ranges_learned,
            gossip_summaries,
            peers,
            scopes_asleep,
            scope_wakes,
            quiesce,
            peers_dead,
            scopes_hibernated,
            scope_hibernations,
            flush_seconds,
            request_seconds,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
