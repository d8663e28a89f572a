//! Quiescence on one anchor: the loop that puts idle groups this anchor leads to sleep, and
//! the liveness pings that wake sleeping followers when their leader's anchor dies. The
//! decisions are the pure functions of [`crate::scope::quiesce`]; a replica's switches are
//! [`crate::raft::quiesce::Sleep`]; the members' side is `server/quiesce.rs`.
//!
//! Every `check` period (a quarter of `raft.quiesce_after_ms`, 100 ms to 1 s), for each
//! hosted replica:
//! - asleep as leader: wake if it lost leadership or its log moved (an entry proposed by
//!   code that does not go through the proposer), before its followers could miss it;
//! - awake and leading: if [`leader_verdict`] says sleep, send each live member a
//!   `RaftRpc::Quiesce` (coalesced with other scopes' to the same anchor) and sleep when
//!   every one of them answered that it sleeps.
//!
//! Every `raft.liveness_ms` it pings every anchor it shares a group with. An anchor silent
//! for `raft.dead_after_ms` is dead: the followers it led here wake and elect, one
//! [`crate::config::RaftSettings::election_min_ms`] apart by rank; an anchor that answers
//! again (or restarted) wakes the sleeping leaders of its groups here, to catch it up.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proto::codec;
use proto::msg::{QuiesceAnswer, QuiesceRequest, RaftRequest, RaftResponse, RaftRpc};
use proto::ScopeId;
use resolver::net::{CallError, NetError, NetHandle, Protocol};
use resolver::AnchorAddr;
use tokio::sync::Semaphore;

use crate::config::RaftSettings;
use crate::group::spawn_with_group;
use crate::metrics::Metrics;
use crate::raft::network::Coalescer;
use crate::raft::quiesce::{Cause, Role};
use crate::raft::NodeId;
use crate::registry::Registry;
use crate::replica::Replica;
use crate::scope::quiesce::{
    elect_delay_ms, leader_verdict, wake_batch_delay_ms, LeaderFacts, LeaderVerdict, Liveness,
    PeerEvent,
};

/// How libp2p's request-response says that it could not dial the peer (its
/// `OutboundFailure::DialFailure`, which reaches us as text).
const DIAL_FAILED: &str = "Failed to dial";
/// Quiesce rounds under way at once (each is one request per live member).
const ROUNDS_MAX: usize = 256;
/// Checks between two listings of the anchors this one shares groups with.
const PEERS_EVERY: u64 = 10;
/// Groups being stopped to hibernate at once (each pass starts at most this many: with
/// 10 000 sleeping replicas an anchor hibernates them all in under a minute).
const HIBERNATING_MAX: usize = 256;
/// How long a member may take to answer a quiesce request.
const QUIESCE_TTL: Duration = Duration::from_secs(2);

/// The anchor's quiescence loop and liveness record.
pub struct Quiescer {
    registry: Arc<Registry>,
    coalescer: Arc<Coalescer>,
    net: NetHandle,
    metrics: Metrics,
    me: NodeId,
    quiesce_after_ms: u64,
    liveness_ms: u64,
    elect_step_ms: u64,
    liveness: Mutex<Liveness<NodeId>>,
    /// Anchors sharing a group with this one, by node id (from the last check).
    peers: Mutex<BTreeMap<NodeId, AnchorAddr>>,
    epoch: Instant,
    rounds: Arc<Semaphore>,
    hibernate_after_ms: u64,
    /// Hibernations under way at once.
    hibernating: Arc<Semaphore>,
}

impl Quiescer {
    /// A quiescer over the hosted replicas with the `[raft]` settings.
    pub(crate) fn new(
        registry: Arc<Registry>,
        coalescer: Arc<Coalescer>,
        net: NetHandle,
        metrics: Metrics,
        raft: &RaftSettings,
    ) -> Arc<Quiescer> {
        Arc::new(Quiescer {
            me: registry.node_id(),
            registry,
            coalescer,
            net,
            metrics,
            quiesce_after_ms: raft.quiesce_after_ms,
            liveness_ms: raft.liveness_ms.max(1),
            elect_step_ms: raft.election_min_ms,
            liveness: Mutex::new(Liveness::new(raft.dead_after_ms)),
            peers: Mutex::new(BTreeMap::new()),
            epoch: Instant::now(),
            rounds: Arc::new(Semaphore::new(ROUNDS_MAX)),
            hibernate_after_ms: raft.hibernate_after_ms,
            hibernating: Arc::new(Semaphore::new(HIBERNATING_MAX)),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_dead(&self, node: NodeId) -> bool {
        self.liveness.lock().is_ok_and(|l| l.is_dead(&node))
    }

    /// Runs both loops until `stop`; returns at once when quiescence is off.
    pub(crate) async fn run(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        if self.quiesce_after_ms == 0 {
            return;
        }
        let check = Duration::from_millis((self.quiesce_after_ms / 4).clamp(100, 1_000));
        let mut check_tick = every(check);
        let mut pass = 0u64;
        let mut ping_tick = every(Duration::from_millis(self.liveness_ms));
        let pinging = Arc::new(tokio::sync::Mutex::new(()));
        loop {
            tokio::select! {
                _ = check_tick.tick() => {
                    self.check(pass);
                    pass += 1;
                }
                at = ping_tick.tick() => {
                    // One round of pings at a time; a slow round skips ticks.
                    if let Ok(guard) = pinging.clone().try_lock_owned() {
                        // A tick served late (this anchor starved of CPU) does not count
                        // timeouts against its peers: they may be as slow as we are.
                        let late = at.elapsed() > Duration::from_millis(self.liveness_ms);
                        let q = self.clone();
                        tokio::spawn(async move {
                            q.ping_all(!late).await;
                            drop(guard);
                        });
                    }
                }
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }

    /// One pass over the hosted replicas. It lists the anchors the awake ones share groups
    /// with (added to those listed before: a replica is awake before it sleeps), and every
    /// [`PEERS_EVERY`] passes those of all of them (anchors that left every group are
    /// dropped).
    fn check(self: &Arc<Self>, pass: u64) {
        let now = self.now_ms();
        let list_all = pass.is_multiple_of(PEERS_EVERY);
        let mut peers = BTreeMap::new();
        let (mut leaders_asleep, mut followers_asleep) = (0i64, 0i64);
        // Hibernated replicas are counted by the registry, and have nothing to check (their
        // frozen state never moves): most passes walk only the others.
        let replicas = if list_all {
            self.registry.all()
        } else {
            self.registry.awake()
        };
        for r in replicas.iter() {
            if list_all || !r.sleep.is_asleep() {
                self.add_peers(r, &mut peers);
            }
            if r.is_hibernated() {
                continue;
            }
            if r.sleep.is_asleep() {
                match self.check_asleep(r) {
                    Some(Role::Leader) => leaders_asleep += 1,
                    Some(Role::Follower) => followers_asleep += 1,
                    None => continue,
                }
                if self.hibernate_after_ms > 0
                    && !r.sleep.kept_awake()
                    && r.sleep
                        .asleep_for()
                        .is_some_and(|d| d.as_millis() >= u128::from(self.hibernate_after_ms))
                {
                    if let Ok(permit) = self.hibernating.clone().try_acquire_owned() {
                        let r = r.clone();
                        tokio::spawn(async move {
                            if r.hibernate().await {
                                tracing::debug!(scope = %r.id, "scope hibernates");
                            }
                            drop(permit);
                        });
                    }
                }
                continue;
            }
            // Read before the facts: anything that touches the group later stops the sleep.
            let activity = r.sleep.activity();
            let Some((last_log, mut facts)) = self.leader_facts(r) else {
                continue;
            };
            facts.idle_ms = r.sleep.idle_ms(last_log, now);
            if facts.idle_ms < self.quiesce_after_ms {
                continue;
            }
            let verdict = leader_verdict(&facts, self.quiesce_after_ms, |n| self.is_dead(n));
            if let LeaderVerdict::Sleep { tell } = verdict {
                if r.sleep.begin_round(now) {
                    tokio::spawn(self.clone().round(r.clone(), facts, tell, activity));
                }
            }
        }
        let h = self.registry.hibernated();
        let g = &self.metrics.scopes_asleep;
        g.with_label_values(&["leader"])
            .set(leaders_asleep + h.leaders());
        g.with_label_values(&["follower"])
            .set(followers_asleep + h.followers());
        self.metrics
            .scopes_hibernated
            .set(h.leaders() + h.followers());
        let Ok(mut known) = self.peers.lock() else {
            return;
        };
        if list_all {
            *known = peers;
        } else {
            known.extend(peers);
        }
        if let Ok(mut l) = self.liveness.lock() {
            if list_all {
                l.retain(|n| known.contains_key(n));
            }
            let dead = known.keys().filter(|n| l.is_dead(n)).count();
            self.metrics
                .peers_dead
                .set(i64::try_from(dead).unwrap_or(i64::MAX));
        }
    }

    /// Adds the other members of `r`'s group to `peers`.
    fn add_peers(&self, r: &Replica, peers: &mut BTreeMap<NodeId, AnchorAddr>) {
        let metrics = r.metrics();
        let m = metrics.borrow();
        for (n, info) in m.membership_config.membership().nodes() {
            if *n != self.me && !peers.contains_key(n) {
                if let Ok(a) = AnchorAddr::from_info(info) {
                    peers.insert(*n, a);
                }
            }
        }
    }

    /// A sleeping replica: a leader that lost leadership or whose log moved wakes; the
    /// role it (still) sleeps in.
    fn check_asleep(&self, r: &Replica) -> Option<Role> {
        let (role, slept_at) = r.sleep.slept()?;
        if role == Role::Follower {
            return Some(role);
        }
        let (leading, last_log) = {
            let metrics = r.metrics();
            let m = metrics.borrow();
            (m.current_leader == Some(self.me), m.last_log_index)
        };
        let cause = if !leading {
            Cause::NotLeader
        } else if last_log != slept_at {
            Cause::LogMoved
        } else {
            return Some(role);
        };
        // (A hibernated group's frozen metrics never differ from what it slept with.)
        if let Some(raft) = r.raft() {
            r.sleep.wake(&raft, cause);
        }
        None
    }

    /// What the leader knows of `r`'s group (its last log index apart), if this anchor leads
    /// it.
    fn leader_facts(&self, r: &Replica) -> Option<(Option<u64>, LeaderFacts)> {
        let metrics = r.metrics();
        let m = metrics.borrow();
        if m.current_leader != Some(self.me) || m.state != openraft::ServerState::Leader {
            return None;
        }
        let membership = m.membership_config.membership();
        let facts = LeaderFacts {
            me: self.me,
            term: m.current_term,
            leading: true,
            last_log: m
                .last_applied
                .filter(|a| Some(a.index) == m.last_log_index)
                .map(|a| (a.leader_id.term, a.index))
                .or(m.last_log_index.map(|i| (0, i))),
            applied: m.last_applied.map(|a| a.index),
            voters: membership.voter_ids().collect(),
            joint: membership.get_joint_config().len() > 1,
            matched: m
                .replication
                .as_ref()
                .map(|rep| rep.iter().map(|(n, l)| (*n, l.map(|l| l.index))).collect())
                .unwrap_or_default(),
            kept_awake: r.sleep.kept_awake(),
            idle_ms: 0,
        };
        Some((m.last_log_index, facts))
    }

    /// Asks every member in `tell` to sleep; sleeps when all of them do.
    async fn round(
        self: Arc<Self>,
        r: Arc<Replica>,
        facts: LeaderFacts,
        tell: Vec<NodeId>,
        activity: u64,
    ) {
        let Ok(_permit) = self.rounds.clone().acquire_owned().await else {
            return;
        };
        let req = QuiesceRequest {
            term: facts.term,
            leader: self.me,
            last_log: facts.last_log,
        };
        let outcome = match codec::encode(&req) {
            Ok(payload) => self.ask(&r, &tell, payload).await,
            Err(_) => "unanswered",
        };
        let index = facts.last_log.map(|(_, i)| i);
        let slept = outcome == "asleep"
            && r.metrics().borrow().last_log_index == index
            && r.try_sleep(Role::Leader, activity, index);
        let outcome = if outcome == "asleep" && !slept {
            "raced"
        } else {
            outcome
        };
        let retry_at = if slept {
            0
        } else {
            self.now_ms() + self.quiesce_after_ms / 2
        };
        r.sleep.end_round(retry_at);
        if slept {
            tracing::debug!(scope = %r.id, "scope asleep");
        }
        self.metrics
            .quiesce
            .with_label_values(&["leader", outcome])
            .inc();
    }

    /// Sends the quiesce request to each member of `tell`: "asleep" if all sleep now,
    /// "refused" if one declined, "unanswered" otherwise.
    async fn ask(&self, r: &Replica, tell: &[NodeId], payload: Vec<u8>) -> &'static str {
        let targets: Vec<Option<AnchorAddr>> = {
            let metrics = r.metrics();
            let m = metrics.borrow();
            let membership = m.membership_config.membership();
            tell.iter()
                .map(|n| {
                    membership
                        .get_node(n)
                        .and_then(|i| AnchorAddr::from_info(i).ok())
                })
                .collect()
        };
        let calls = targets.into_iter().map(|to| {
            let frame = RaftRequest {
                scope: r.id,
                rpc: RaftRpc::Quiesce,
                payload: payload.clone(),
            };
            async move {
                let to = to.ok_or_else(|| "no address".to_string())?;
                self.coalescer.call(to, frame, QUIESCE_TTL).await
            }
        });
        let answers = futures::future::join_all(calls).await;
        let mut outcome = "asleep";
        for a in answers {
            let answer = match a {
                Ok(RaftResponse::Ok(b)) => codec::decode::<QuiesceAnswer>(&b, 1024).ok(),
                _ => None,
            };
            match answer {
                Some(QuiesceAnswer::Asleep) => {}
                Some(QuiesceAnswer::Mismatch(_)) => outcome = "refused",
                None if outcome == "asleep" => outcome = "unanswered",
                None => {}
            }
        }
        outcome
    }

    /// Pings every anchor this one shares a group with, and acts on what changed; timeouts
    /// count only with `count_timeouts`.
    async fn ping_all(self: Arc<Self>, count_timeouts: bool) {
        let peers: Vec<(NodeId, AnchorAddr)> = self
            .peers
            .lock()
            .map(|p| p.iter().map(|(n, a)| (*n, a.clone())).collect())
            .unwrap_or_default();
        let ttl = Duration::from_millis(self.liveness_ms.max(200));
        let pings = peers.into_iter().map(|(node, to)| {
            let net = self.net.clone();
            async move {
                let req = RaftRequest {
                    scope: ScopeId::default(),
                    rpc: RaftRpc::Ping,
                    payload: Vec::new(),
                };
                let answer = match net
                    .call::<RaftRequest, RaftResponse>(&to, Protocol::Raft, &req, ttl)
                    .await
                {
                    Ok(RaftResponse::Ok(b)) => match codec::decode::<u64>(&b, 64) {
                        Ok(incarnation) => Ping::Answered(incarnation),
                        Err(_) => Ping::Unreachable,
                    },
                    // Only a failed dial says the anchor is gone (a killed process refuses
                    // connections at once). A loaded anchor's pings time out, or fail on a
                    // connection with too many streams: the long grace.
                    Err(CallError::Net(NetError::Failed { reason, .. }))
                        if reason.contains(DIAL_FAILED) =>
                    {
                        Ping::Unreachable
                    }
                    Err(CallError::Net(NetError::Stopped)) => Ping::Unreachable,
                    Ok(RaftResponse::Refused(_)) | Err(_) => Ping::TimedOut,
                };
                (node, answer)
            }
        });
        for (node, answer) in futures::future::join_all(pings).await {
            let now = self.now_ms();
            let event = match self.liveness.lock() {
                Ok(mut l) => match answer {
                    Ping::Answered(incarnation) => l.answered(&node, incarnation, now),
                    Ping::TimedOut if count_timeouts => l.timed_out(&node, now),
                    Ping::TimedOut => PeerEvent::None,
                    Ping::Unreachable => l.failed(&node, now),
                },
                Err(_) => PeerEvent::None,
            };
            match event {
                PeerEvent::Died => self.leader_died(node),
                PeerEvent::Back => self.peer_back(node),
                PeerEvent::None => {}
            }
        }
    }

    /// `node`'s anchor is dead: the sleeping followers it leads here wake and elect.
    fn leader_died(&self, node: NodeId) {
        tracing::info!(
            node,
            "anchor counts as dead; its sleeping followers here wake"
        );
        let mut woken = 0;
        for r in self.registry.all().iter() {
            if r.sleep.slept().map(|(role, _)| role) != Some(Role::Follower) {
                continue;
            }
            let voters: BTreeSet<NodeId> = {
                let metrics = r.metrics();
                let m = metrics.borrow();
                if m.current_leader != Some(node) {
                    continue;
                }
                m.membership_config.membership().voter_ids().collect()
            };
            let delay = elect_delay_ms(
                self.me,
                &voters,
                |n| n == node || self.is_dead(n),
                self.elect_step_ms,
            ) + wake_batch_delay_ms(woken);
            let delay = Duration::from_millis(delay);
            match r.raft() {
                Some(raft) => {
                    if r.sleep.wake_to_elect(&raft, delay) {
                        woken += 1;
                    }
                }
                None => {
                    // Reopened first; counted in the batches as if woken now.
                    woken += 1;
                    spawn_with_group(r, "leader_dead", move |r, raft| {
                        r.sleep.wake_to_elect(raft, delay);
                    });
                }
            }
        }
        tracing::info!(node, woken, "sleeping followers of a dead anchor woken");
    }

    /// `node`'s anchor answers again (or restarted): the sleeping leaders of its groups here
    /// wake to catch it up.
    fn peer_back(&self, node: NodeId) {
        let mut woken = 0;
        for r in self.registry.all().iter() {
            if r.sleep.slept().map(|(role, _)| role) != Some(Role::Leader) {
                continue;
            }
            let member = r
                .metrics()
                .borrow()
                .membership_config
                .membership()
                .get_node(&node)
                .is_some();
            if !member {
                continue;
            }
            match r.raft() {
                Some(raft) => {
                    if r.sleep.wake_leader(&raft, Cause::PeerBack) {
                        woken += 1;
                    }
                }
                None => {
                    woken += 1;
                    spawn_with_group(r, "peer_back", |r, raft| {
                        r.sleep.wake_leader(raft, Cause::PeerBack);
                    });
                }
            }
        }
        tracing::info!(
            node,
            woken,
            "anchor back; sleeping leaders of its groups woken"
        );
    }
}

/// What a liveness ping brought.
enum Ping {
    /// An answer, with the peer's incarnation.
    Answered(u64),
    /// No answer in time, or a failure on an established connection (a busy peer).
    TimedOut,
    /// The peer cannot be dialed.
    Unreachable,
}

/// A timer whose first tick is immediate and that does not catch up late ticks.
fn every(period: Duration) -> tokio::time::Interval {
    let mut t = tokio::time::interval(period);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}
